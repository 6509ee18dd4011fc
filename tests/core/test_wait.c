/*
 * cmojo's blocking waits (include/cmojo/wait.h): MojoWait and MojoWaitMany.
 * Immediate results, blocking until another thread acts, deadlines, every
 * error with its result_index, and waiting from inside a trap handler.
 *
 * Timing: only lower bounds are asserted (a wait cannot end before the event
 * it waits for); a loaded machine may make anything take longer.
 */
#include "cmojo_test.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "cmojo/wait.h"
#include "core/core.h"
#include "mojo/public/c/system/core.h"

#define OK MOJO_RESULT_OK
#define READABLE MOJO_HANDLE_SIGNAL_READABLE
#define WRITABLE MOJO_HANDLE_SIGNAL_WRITABLE
#define PEER_CLOSED MOJO_HANDLE_SIGNAL_PEER_CLOSED

/* A value no handle table hands out in these small tests. */
#define BOGUS_HANDLE ((MojoHandle)0x7ffffff1)
/* What a helper thread sleeps before acting on a handle another thread waits on. */
#define ACT_AFTER_USEC 20000
/*
 * A finite deadline for waits that should end sooner for another reason, so
 * a broken wait fails the test instead of hanging it until CTest's timeout.
 */
#define SAFETY_DEADLINE_USEC ((MojoDeadline)10 * 1000 * 1000)

static void sleep_usec(long usec)
{
    struct timespec left = {.tv_sec = usec / 1000000, .tv_nsec = (usec % 1000000) * 1000};

    while (nanosleep(&left, &left) != 0)
        if (errno != EINTR)
            return;
}

static void close_all(const MojoHandle *handles, size_t n)
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(MojoClose(handles[i]), OK);
}

static const struct MojoHandleSignalsState poisoned_state = {0xdeadbeef, 0xdeadbeef};

/* ------------------------------------------------------------------------ */
/* Helper threads: act on a handle while the main thread waits               */
/* ------------------------------------------------------------------------ */

enum action { ACT_WRITE, ACT_CLOSE };

struct actor {
    pthread_t thread;
    MojoHandle handle;
    enum action action;
    pid_t wait_for_tid; /* if not 0: act only once this thread is blocked */
    atomic_bool started_acting;
    MojoResult result;
};

static pid_t current_tid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

/* Whether thread tid of this process is asleep (state S in its stat line). */
static bool thread_is_asleep(pid_t tid)
{
    char path[64];
    char line[512];
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
    f = fopen(path, "r");
    if (f == NULL)
        return false;
    n = fread(line, 1, sizeof(line) - 1, f);
    fclose(f);
    line[n] = '\0';
    /* "pid (comm) S ...": comm may hold spaces and parentheses, so find the last ')'. */
    const char *end = strrchr(line, ')');
    return end != NULL && end[1] == ' ' && end[2] == 'S';
}

static void *actor_main(void *arg)
{
    struct actor *act = arg;

    sleep_usec(ACT_AFTER_USEC);
    if (act->wait_for_tid != 0) {
        /*
         * Close only once the waiter is blocked (then a little longer), so
         * the close lands during the wait, not before it began.
         */
        for (int i = 0; i < 10000 && !thread_is_asleep(act->wait_for_tid); i++)
            sleep_usec(1000);
        sleep_usec(ACT_AFTER_USEC);
    }
    atomic_store(&act->started_acting, true);
    if (act->action == ACT_WRITE)
        act->result = cmojo_test_write_u32(act->handle, 42);
    else
        act->result = MojoClose(act->handle);
    return NULL;
}

static void start_actor(struct actor *act, MojoHandle handle, enum action action, bool wait_for_me)
{
    act->handle = handle;
    act->action = action;
    act->wait_for_tid = wait_for_me ? current_tid() : 0;
    atomic_store(&act->started_acting, false);
    act->result = MOJO_RESULT_UNKNOWN;
    assert_int_equal(pthread_create(&act->thread, NULL, actor_main, act), 0);
}

static void join_actor(struct actor *act)
{
    assert_int_equal(pthread_join(act->thread, NULL), 0);
    assert_int_equal(act->result, OK);
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */
/* ------------------------------------------------------------------------ */

static void test_wait_returns_ok_at_once_when_already_satisfied(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    struct MojoHandleSignalsState st = poisoned_state;
    uint32_t v = 0;

    assert_int_equal(cmojo_test_write_u32(a, 7), OK);
    assert_int_equal(MojoWait(b, READABLE, MOJO_DEADLINE_INDEFINITE, &st), OK);
    assert_int_equal(st.satisfied_signals & (READABLE | WRITABLE | PEER_CLOSED),
                     READABLE | WRITABLE);
    assert_true(st.satisfiable_signals & READABLE);
    assert_true(st.satisfiable_signals & PEER_CLOSED);

    /* Zero deadline and NULL state are fine when already satisfied. */
    assert_int_equal(MojoWait(b, WRITABLE, 0, NULL), OK);

    MojoHandle handles[1] = {b};
    MojoHandleSignals signals[1] = {READABLE};
    uint32_t index = 77;
    st = poisoned_state;
    assert_int_equal(MojoWaitMany(handles, signals, 1, 0, &index, &st), OK);
    assert_int_equal(index, 0);
    assert_true(st.satisfied_signals & READABLE);

    /* Waiting consumed nothing. */
    assert_int_equal(cmojo_test_read_u32(b, &v), OK);
    assert_int_equal(v, 7);
    close_all((MojoHandle[]){a, b}, 2);
}

static void test_wait_blocks_until_another_thread_writes(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    struct actor act;
    struct MojoHandleSignalsState st = poisoned_state;
    MojoTimeTicks start = MojoGetTimeTicksNow();

    start_actor(&act, a, ACT_WRITE, false);
    assert_int_equal(MojoWait(b, READABLE, MOJO_DEADLINE_INDEFINITE, &st), OK);
    MojoTimeTicks elapsed = MojoGetTimeTicksNow() - start;

    assert_true(atomic_load(&act.started_acting));
    assert_true(elapsed >= ACT_AFTER_USEC);
    assert_true(st.satisfied_signals & READABLE);
    join_actor(&act);
    uint32_t v = 0;
    assert_int_equal(cmojo_test_read_u32(b, &v), OK);
    assert_int_equal(v, 42);
    close_all((MojoHandle[]){a, b}, 2);
}

static void test_wait_many_reports_the_index_of_the_handle_that_became_ready(void **state)
{
    (void)state;
    MojoHandle w[3], r[3];
    MojoHandleSignals signals[3] = {READABLE, READABLE, READABLE};
    struct MojoHandleSignalsState st[3];
    uint32_t index = 77;
    struct actor act;

    for (int i = 0; i < 3; i++)
        cmojo_test_make_pipe(&w[i], &r[i]);
    memset(st, 0xff, sizeof(st)); /* an entry left unwritten would look READABLE */
    start_actor(&act, w[2], ACT_WRITE, false);
    assert_int_equal(MojoWaitMany(r, signals, 3, SAFETY_DEADLINE_USEC, &index, st), OK);
    assert_int_equal(index, 2);
    assert_true(st[2].satisfied_signals & READABLE);
    assert_false(st[0].satisfied_signals & READABLE);
    assert_false(st[1].satisfied_signals & READABLE);
    join_actor(&act);
    for (int i = 0; i < 3; i++)
        close_all((MojoHandle[]){w[i], r[i]}, 2);
}

static void test_wait_many_reports_the_index_of_the_ready_handle(void **state)
{
    (void)state;
    MojoHandle w[3], r[3];
    MojoHandleSignals signals[3] = {READABLE, READABLE, READABLE};
    struct MojoHandleSignalsState st[3];
    uint32_t index = 77;

    for (int i = 0; i < 3; i++)
        cmojo_test_make_pipe(&w[i], &r[i]);
    assert_int_equal(cmojo_test_write_u32(w[1], 1), OK);
    memset(st, 0xff, sizeof(st));
    assert_int_equal(MojoWaitMany(r, signals, 3, MOJO_DEADLINE_INDEFINITE, &index, st), OK);
    assert_int_equal(index, 1);
    assert_true(st[1].satisfied_signals & READABLE);
    /* Entries for other handles hold their state or zero, never READABLE. */
    assert_false(st[0].satisfied_signals & READABLE);
    assert_false(st[2].satisfied_signals & READABLE);

    /* Different signals per handle: WRITABLE on r[0] holds at once. */
    signals[0] = WRITABLE;
    index = 77;
    assert_int_equal(MojoWaitMany(r, signals, 3, 0, &index, NULL), OK);
    assert_true(index == 0 || index == 1); /* both hold; either may be reported */
    for (int i = 0; i < 3; i++)
        close_all((MojoHandle[]){w[i], r[i]}, 2);
}

/* More handles than a wait keeps on its stack: the same answers. */
#define MANY_HANDLES 40

static void test_wait_many_on_a_long_list_reports_the_right_index(void **state)
{
    (void)state;
    MojoHandle w[MANY_HANDLES], r[MANY_HANDLES];
    MojoHandleSignals signals[MANY_HANDLES];
    struct MojoHandleSignalsState st[MANY_HANDLES];
    uint32_t index = 77;
    struct actor act;

    for (int i = 0; i < MANY_HANDLES; i++) {
        cmojo_test_make_pipe(&w[i], &r[i]);
        signals[i] = READABLE;
    }
    /* Blocks, then the handle near the end becomes ready. */
    start_actor(&act, w[MANY_HANDLES - 3], ACT_WRITE, false);
    assert_int_equal(MojoWaitMany(r, signals, MANY_HANDLES, SAFETY_DEADLINE_USEC, &index, st), OK);
    assert_int_equal(index, MANY_HANDLES - 3);
    assert_true(st[MANY_HANDLES - 3].satisfied_signals & READABLE);
    join_actor(&act);
    /* Already ready at once, beyond the stack part of the list. */
    index = 77;
    assert_int_equal(MojoWaitMany(r, signals, MANY_HANDLES, 0, &index, NULL), OK);
    assert_int_equal(index, MANY_HANDLES - 3);
    /* An invalid handle late in the list is found before any ready one. */
    MojoHandle saved = r[MANY_HANDLES - 1];
    r[MANY_HANDLES - 1] = BOGUS_HANDLE;
    index = 77;
    assert_int_equal(MojoWaitMany(r, signals, MANY_HANDLES, 0, &index, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(index, MANY_HANDLES - 1);
    r[MANY_HANDLES - 1] = saved;
    for (int i = 0; i < MANY_HANDLES; i++)
        close_all((MojoHandle[]){w[i], r[i]}, 2);
}

static void test_wait_fails_precondition_when_the_signal_can_never_be_satisfied(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    struct MojoHandleSignalsState st = poisoned_state;

    assert_int_equal(MojoClose(a), OK);
    assert_int_equal(MojoWait(b, READABLE, MOJO_DEADLINE_INDEFINITE, &st),
                     MOJO_RESULT_FAILED_PRECONDITION);
    assert_true(st.satisfied_signals & PEER_CLOSED);
    assert_false(st.satisfiable_signals & READABLE);
    /* Watching PEER_CLOSED as well: that one holds. */
    assert_int_equal(MojoWait(b, READABLE | PEER_CLOSED, 0, NULL), OK);
    assert_int_equal(MojoClose(b), OK);
}

static void test_wait_is_ok_while_messages_sent_before_the_close_remain(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    uint32_t v;

    assert_int_equal(cmojo_test_write_u32(a, 1), OK);
    assert_int_equal(MojoClose(a), OK);
    assert_int_equal(MojoWait(b, READABLE, 0, NULL), OK);
    assert_int_equal(cmojo_test_read_u32(b, &v), OK);
    assert_int_equal(MojoWait(b, READABLE, 0, NULL), MOJO_RESULT_FAILED_PRECONDITION);
    assert_int_equal(MojoClose(b), OK);
}

static void test_wait_fails_precondition_when_the_peer_closes_during_the_wait(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    struct actor act;
    struct MojoHandleSignalsState st = poisoned_state;

    start_actor(&act, a, ACT_CLOSE, false);
    assert_int_equal(MojoWait(b, READABLE, SAFETY_DEADLINE_USEC, &st),
                     MOJO_RESULT_FAILED_PRECONDITION);
    assert_true(atomic_load(&act.started_acting));
    assert_true(st.satisfied_signals & PEER_CLOSED);
    assert_false(st.satisfiable_signals & READABLE);
    join_actor(&act);
    assert_int_equal(MojoClose(b), OK);
}

static void test_wait_many_reports_the_index_of_an_unsatisfiable_handle(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;
    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    MojoHandle handles[2] = {b, d};
    MojoHandleSignals signals[2] = {READABLE, READABLE};
    uint32_t index = 77;

    assert_int_equal(MojoClose(c), OK);
    assert_int_equal(MojoWaitMany(handles, signals, 2, SAFETY_DEADLINE_USEC, &index, NULL),
                     MOJO_RESULT_FAILED_PRECONDITION);
    assert_int_equal(index, 1);
    close_all((MojoHandle[]){a, b, d}, 3);
}

static void test_wait_with_a_zero_deadline_on_an_unsatisfied_handle_exceeds_it(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    struct MojoHandleSignalsState st = poisoned_state;

    assert_int_equal(MojoWait(b, READABLE, 0, &st), MOJO_RESULT_DEADLINE_EXCEEDED);
    /* The state when the wait ended. */
    assert_true(st.satisfied_signals & WRITABLE);
    assert_false(st.satisfied_signals & READABLE);
    assert_true(st.satisfiable_signals & READABLE);

    MojoHandle handles[2] = {a, b};
    MojoHandleSignals signals[2] = {READABLE, READABLE};
    uint32_t index = 77;
    assert_int_equal(MojoWaitMany(handles, signals, 2, 0, &index, NULL),
                     MOJO_RESULT_DEADLINE_EXCEEDED);
    assert_int_equal(index, UINT32_MAX);
    close_all((MojoHandle[]){a, b}, 2);
}

static void test_wait_with_a_short_deadline_returns_once_it_has_passed(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    const MojoDeadline deadline = 10000;
    MojoTimeTicks start = MojoGetTimeTicksNow();

    assert_int_equal(MojoWait(b, READABLE, deadline, NULL), MOJO_RESULT_DEADLINE_EXCEEDED);
    assert_true(MojoGetTimeTicksNow() - start >= (MojoTimeTicks)deadline);

    MojoHandle handles[2] = {a, b};
    MojoHandleSignals signals[2] = {READABLE, READABLE};
    uint32_t index = 77;
    start = MojoGetTimeTicksNow();
    assert_int_equal(MojoWaitMany(handles, signals, 2, deadline, &index, NULL),
                     MOJO_RESULT_DEADLINE_EXCEEDED);
    assert_true(MojoGetTimeTicksNow() - start >= (MojoTimeTicks)deadline);
    assert_int_equal(index, UINT32_MAX);
    close_all((MojoHandle[]){a, b}, 2);
}

static void test_wait_on_an_invalid_handle_is_invalid_argument_at_its_index(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;
    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    MojoHandle stale, unused;
    cmojo_test_make_pipe(&stale, &unused);
    close_all((MojoHandle[]){stale, unused}, 2);

    assert_int_equal(MojoWait(MOJO_HANDLE_INVALID, READABLE, 0, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoWait(stale, READABLE, SAFETY_DEADLINE_USEC, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoWait(BOGUS_HANDLE, READABLE, SAFETY_DEADLINE_USEC, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);

    MojoHandle handles[3] = {b, BOGUS_HANDLE, d};
    MojoHandleSignals signals[3] = {READABLE, READABLE, READABLE};
    uint32_t index = 77;
    assert_int_equal(MojoWaitMany(handles, signals, 3, SAFETY_DEADLINE_USEC, &index, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(index, 1);
    handles[1] = d;
    handles[2] = stale;
    index = 77;
    assert_int_equal(MojoWaitMany(handles, signals, 3, 0, &index, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(index, 2);
    close_all((MojoHandle[]){a, b, c, d}, 4);
}

static void trap_handler_unused(const struct MojoTrapEvent *event)
{
    (void)event;
}

static void test_wait_on_a_trap_is_invalid_argument(void **state)
{
    (void)state;
    MojoHandle trap = MOJO_HANDLE_INVALID;
    uint32_t index = 77;

    assert_int_equal(MojoCreateTrap(trap_handler_unused, NULL, &trap), OK);
    assert_int_equal(MojoWait(trap, READABLE, SAFETY_DEADLINE_USEC, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    MojoHandleSignals signals = READABLE;
    assert_int_equal(MojoWaitMany(&trap, &signals, 1, SAFETY_DEADLINE_USEC, &index, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(index, 0);
    assert_int_equal(MojoClose(trap), OK);
}

static void test_wait_many_rejects_null_arrays_and_an_endless_empty_wait(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoHandleSignals signals = READABLE;

    assert_int_equal(MojoWaitMany(NULL, &signals, 1, 0, NULL, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoWaitMany(&b, NULL, 1, 0, NULL, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    /* No handles and no deadline would never return. */
    assert_int_equal(MojoWaitMany(NULL, NULL, 0, MOJO_DEADLINE_INDEFINITE, NULL, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    close_all((MojoHandle[]){a, b}, 2);
}

static void test_wait_many_with_no_handles_and_a_deadline_exceeds_it(void **state)
{
    (void)state;
    uint32_t index = 77;

    assert_int_equal(MojoWaitMany(NULL, NULL, 0, 0, &index, NULL), MOJO_RESULT_DEADLINE_EXCEEDED);
    assert_int_equal(index, UINT32_MAX);
    index = 77;
    assert_int_equal(MojoWaitMany(NULL, NULL, 0, 1000, &index, NULL),
                     MOJO_RESULT_DEADLINE_EXCEEDED);
    assert_int_equal(index, UINT32_MAX);
}

static void test_wait_is_cancelled_when_another_thread_closes_the_handle(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    struct actor act;

    start_actor(&act, b, ACT_CLOSE, true);
    assert_int_equal(MojoWait(b, READABLE, SAFETY_DEADLINE_USEC, NULL), MOJO_RESULT_CANCELLED);
    assert_true(atomic_load(&act.started_acting));
    join_actor(&act); /* the close itself succeeded */
    assert_int_equal(MojoClose(b), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoClose(a), OK);
}

static void test_wait_many_is_cancelled_at_the_index_of_the_closed_handle(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;
    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    MojoHandle handles[2] = {b, d};
    MojoHandleSignals signals[2] = {READABLE, READABLE};
    uint32_t index = 77;
    struct actor act;

    start_actor(&act, d, ACT_CLOSE, true);
    assert_int_equal(MojoWaitMany(handles, signals, 2, SAFETY_DEADLINE_USEC, &index, NULL),
                     MOJO_RESULT_CANCELLED);
    assert_int_equal(index, 1);
    join_actor(&act);
    close_all((MojoHandle[]){a, b, c}, 3);
}

static void test_wait_on_a_handle_in_transit_is_busy(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;
    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    MojoMessageHandle msg = MOJO_MESSAGE_HANDLE_INVALID;

    assert_int_equal(MojoCreateMessage(NULL, &msg), OK);
    assert_int_equal(MojoAppendMessageData(msg, 0, &b, 1, NULL, NULL, NULL), OK);
    assert_int_equal(MojoWait(b, READABLE, SAFETY_DEADLINE_USEC, NULL), MOJO_RESULT_BUSY);

    MojoHandle handles[2] = {d, b};
    MojoHandleSignals signals[2] = {READABLE, READABLE};
    uint32_t index = 77;
    assert_int_equal(MojoWaitMany(handles, signals, 2, SAFETY_DEADLINE_USEC, &index, NULL),
                     MOJO_RESULT_BUSY);
    assert_int_equal(index, 1);

    assert_int_equal(MojoDestroyMessage(msg), OK); /* closes b */
    close_all((MojoHandle[]){a, c, d}, 3);
}

static void test_wait_leaves_no_handles_behind(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    struct actor act;
    size_t before = core_debug_handle_count();

    assert_int_equal(MojoWait(b, READABLE, 0, NULL), MOJO_RESULT_DEADLINE_EXCEEDED);
    assert_int_equal(MojoWait(b, READABLE, 1000, NULL), MOJO_RESULT_DEADLINE_EXCEEDED);
    assert_int_equal(MojoWait(b, WRITABLE, 0, NULL), OK);
    start_actor(&act, a, ACT_WRITE, false);
    assert_int_equal(MojoWait(b, READABLE, SAFETY_DEADLINE_USEC, NULL), OK);
    join_actor(&act);
    assert_int_equal(core_debug_handle_count(), before);

    uint32_t v;
    assert_int_equal(cmojo_test_read_u32(b, &v), OK);
    close_all((MojoHandle[]){a, b}, 2);
}

/* Waits made by a trap handler, and what they returned. */
static MojoHandle in_handler_ready, in_handler_idle;
static MojoResult in_handler_ready_result, in_handler_idle_result;
static struct MojoHandleSignalsState in_handler_state;
static int in_handler_calls;

static void wait_in_handler(const struct MojoTrapEvent *event)
{
    if (event->result != OK)
        return;
    in_handler_calls++;
    in_handler_ready_result =
        MojoWait(in_handler_ready, READABLE, SAFETY_DEADLINE_USEC, &in_handler_state);
    in_handler_idle_result = MojoWait(in_handler_idle, READABLE, 1000, NULL);
}

static void test_wait_works_inside_a_trap_handler(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;
    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    MojoHandle trap = MOJO_HANDLE_INVALID;

    in_handler_ready = b; /* the handle that fired: readable */
    in_handler_idle = d;
    in_handler_ready_result = in_handler_idle_result = MOJO_RESULT_UNKNOWN;
    in_handler_state = poisoned_state;
    in_handler_calls = 0;

    assert_int_equal(MojoCreateTrap(wait_in_handler, NULL, &trap), OK);
    assert_int_equal(
        MojoAddTrigger(trap, b, READABLE, MOJO_TRIGGER_CONDITION_SIGNALS_SATISFIED, 1, NULL), OK);
    assert_int_equal(MojoArmTrap(trap, NULL, NULL, NULL), OK);
    assert_int_equal(cmojo_test_write_u32(a, 1), OK);

    assert_int_equal(in_handler_calls, 1);
    assert_int_equal(in_handler_ready_result, OK);
    assert_true(in_handler_state.satisfied_signals & READABLE);
    assert_int_equal(in_handler_idle_result, MOJO_RESULT_DEADLINE_EXCEEDED);
    close_all((MojoHandle[]){trap, a, b, c, d}, 5);
}

static struct actor in_handler_actor;

static void wait_for_other_thread_in_handler(const struct MojoTrapEvent *event)
{
    if (event->result != OK)
        return;
    in_handler_calls++;
    start_actor(&in_handler_actor, in_handler_idle, ACT_WRITE, false);
    in_handler_ready_result = MojoWait(in_handler_ready, READABLE, SAFETY_DEADLINE_USEC, NULL);
}

static void test_wait_inside_a_trap_handler_can_block_for_another_thread(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;
    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    MojoHandle trap = MOJO_HANDLE_INVALID;

    in_handler_idle = c;  /* the helper writes to c ... */
    in_handler_ready = d; /* ... while the handler waits for d */
    in_handler_ready_result = MOJO_RESULT_UNKNOWN;
    in_handler_calls = 0;

    assert_int_equal(MojoCreateTrap(wait_for_other_thread_in_handler, NULL, &trap), OK);
    assert_int_equal(
        MojoAddTrigger(trap, b, READABLE, MOJO_TRIGGER_CONDITION_SIGNALS_SATISFIED, 1, NULL), OK);
    assert_int_equal(MojoArmTrap(trap, NULL, NULL, NULL), OK);
    assert_int_equal(cmojo_test_write_u32(a, 1), OK);

    assert_int_equal(in_handler_calls, 1);
    join_actor(&in_handler_actor);
    assert_int_equal(in_handler_ready_result, OK);
    uint32_t v;
    assert_int_equal(cmojo_test_read_u32(d, &v), OK);
    assert_int_equal(v, 42);
    close_all((MojoHandle[]){trap, a, b, c, d}, 5);
}

/*
 * Several handles become ready at once, from several threads, many times
 * over: the first trigger claims the answer, the others only wake the
 * waiter, which may run before the claimer has finished writing it. The
 * wait must still return OK for a ready handle, never DEADLINE_EXCEEDED
 * while the deadline is far away.
 */
#define RACE_WRITERS 3
#define RACE_ROUNDS 3000

struct race {
    MojoHandle w[RACE_WRITERS];
    atomic_int round;
    atomic_int wrote;
};

struct race_writer {
    pthread_t thread;
    struct race *race;
    int index;
};

static void *race_writer_main(void *arg)
{
    struct race_writer *rw = arg;
    struct race *race = rw->race;
    for (int round = 1; round <= RACE_ROUNDS; round++) {
        while (atomic_load(&race->round) < round)
            sched_yield();
        assert_int_equal(cmojo_test_write_u32(race->w[rw->index], (uint32_t)round), OK);
        atomic_fetch_add(&race->wrote, 1);
    }
    return NULL;
}

static void test_wait_many_on_handles_ready_at_once_from_several_threads(void **state)
{
    (void)state;
    struct race race = {0};
    MojoHandle r[RACE_WRITERS];
    MojoHandleSignals signals[RACE_WRITERS];
    struct race_writer writers[RACE_WRITERS];
    for (int i = 0; i < RACE_WRITERS; i++) {
        cmojo_test_make_pipe(&race.w[i], &r[i]);
        signals[i] = READABLE;
        writers[i] = (struct race_writer){.race = &race, .index = i};
        assert_int_equal(pthread_create(&writers[i].thread, NULL, race_writer_main, &writers[i]),
                         0);
    }
    int early = 0;
    for (int round = 1; round <= RACE_ROUNDS; round++) {
        uint32_t index = 77;
        atomic_store(&race.round, round);
        MojoResult rv = MojoWaitMany(r, signals, RACE_WRITERS, SAFETY_DEADLINE_USEC, &index, NULL);
        if (rv != OK)
            early++;
        while (atomic_load(&race.wrote) < round * RACE_WRITERS)
            sched_yield();
        for (int i = 0; i < RACE_WRITERS; i++) {
            uint32_t v;
            assert_int_equal(cmojo_test_read_u32(r[i], &v), OK);
            assert_int_equal(v, (uint32_t)round);
        }
    }
    for (int i = 0; i < RACE_WRITERS; i++)
        assert_int_equal(pthread_join(writers[i].thread, NULL), 0);
    assert_int_equal(early, 0);
    for (int i = 0; i < RACE_WRITERS; i++)
        close_all((MojoHandle[]){race.w[i], r[i]}, 2);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, cmojo_core_setup, cmojo_core_teardown)
    const struct CMUnitTest tests[] = {
        T(test_wait_returns_ok_at_once_when_already_satisfied),
        T(test_wait_blocks_until_another_thread_writes),
        T(test_wait_many_reports_the_index_of_the_handle_that_became_ready),
        T(test_wait_many_reports_the_index_of_the_ready_handle),
        T(test_wait_many_on_a_long_list_reports_the_right_index),
        T(test_wait_fails_precondition_when_the_signal_can_never_be_satisfied),
        T(test_wait_is_ok_while_messages_sent_before_the_close_remain),
        T(test_wait_fails_precondition_when_the_peer_closes_during_the_wait),
        T(test_wait_many_reports_the_index_of_an_unsatisfiable_handle),
        T(test_wait_with_a_zero_deadline_on_an_unsatisfied_handle_exceeds_it),
        T(test_wait_with_a_short_deadline_returns_once_it_has_passed),
        T(test_wait_on_an_invalid_handle_is_invalid_argument_at_its_index),
        T(test_wait_on_a_trap_is_invalid_argument),
        T(test_wait_many_rejects_null_arrays_and_an_endless_empty_wait),
        T(test_wait_many_with_no_handles_and_a_deadline_exceeds_it),
        T(test_wait_is_cancelled_when_another_thread_closes_the_handle),
        T(test_wait_many_is_cancelled_at_the_index_of_the_closed_handle),
        T(test_wait_on_a_handle_in_transit_is_busy),
        T(test_wait_leaves_no_handles_behind),
        T(test_wait_works_inside_a_trap_handler),
        T(test_wait_inside_a_trap_handler_can_block_for_another_thread),
        T(test_wait_many_on_handles_ready_at_once_from_several_threads),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
