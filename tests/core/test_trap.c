/*
 * Traps (mojo/public/c/system/trap.h): argument checks, arming and blocking
 * events, firing and disarming, CANCELLED as every trigger's last event,
 * handlers that call back into the API, and handlers racing across threads.
 *
 * Handlers never call cmocka's assert macros (a failed assert longjmps out of
 * the library in the middle of a call, or off another thread's stack): they
 * record what they saw and what their calls returned, and the test asserts on
 * the record once control is back.
 */
#include "cmojo_test.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/core.h"
#include "mojo/public/c/system/core.h"

#define OK MOJO_RESULT_OK
#define SATISFIED MOJO_TRIGGER_CONDITION_SIGNALS_SATISFIED
#define UNSATISFIED MOJO_TRIGGER_CONDITION_SIGNALS_UNSATISFIED
#define READABLE MOJO_HANDLE_SIGNAL_READABLE

/* A value no handle table hands out in these small tests. */
#define BOGUS_HANDLE ((MojoHandle)0x7ffffff1)

/* Room for every event any test here records, with margin. */
#define MAX_EVENTS 4096
/* Trigger contexts used in these tests are small integers below this. */
#define MAX_CONTEXTS 16

/* ------------------------------------------------------------------------ */
/* Event recording                                                           */
/* ------------------------------------------------------------------------ */

struct recorded {
    struct MojoTrapEvent event;
    int depth;         /* handler calls on this thread's stack, this one included */
    bool during_write; /* the test was inside write_in_main() at the time */
    bool on_main_thread;
};

static pthread_mutex_t rec_lock = PTHREAD_MUTEX_INITIALIZER;
static struct recorded recs[MAX_EVENTS];
static size_t num_recs;  /* under rec_lock */
static size_t lost_recs; /* under rec_lock */

static _Thread_local int handler_depth;
static atomic_int max_handler_depth;
/* Handler calls in progress per context (all threads), and the most seen. */
static atomic_int ctx_running[MAX_CONTEXTS];
static atomic_int ctx_max_running[MAX_CONTEXTS];
static atomic_bool in_write;
static pthread_t main_thread;

/* Per-test extra behaviour, run by record_handler after recording. */
static void (*on_event)(const struct MojoTrapEvent *event);

static void atomic_max(atomic_int *max, int value)
{
    int seen = atomic_load(max);

    while (value > seen && !atomic_compare_exchange_weak(max, &seen, value))
        ;
}

static void record_handler(const struct MojoTrapEvent *event)
{
    int depth = ++handler_depth;
    uintptr_t ctx = event->trigger_context;

    atomic_max(&max_handler_depth, depth);
    if (ctx < MAX_CONTEXTS)
        atomic_max(&ctx_max_running[ctx], atomic_fetch_add(&ctx_running[ctx], 1) + 1);

    pthread_mutex_lock(&rec_lock);
    if (num_recs < MAX_EVENTS) {
        struct recorded *r = &recs[num_recs++];
        r->event = *event;
        r->depth = depth;
        r->during_write = atomic_load(&in_write);
        r->on_main_thread = pthread_equal(pthread_self(), main_thread);
    } else {
        lost_recs++;
    }
    pthread_mutex_unlock(&rec_lock);

    if (on_event != NULL)
        on_event(event);

    if (ctx < MAX_CONTEXTS)
        atomic_fetch_sub(&ctx_running[ctx], 1);
    handler_depth--;
}

static void reset_events(void)
{
    pthread_mutex_lock(&rec_lock);
    memset(recs, 0, sizeof(recs));
    num_recs = 0;
    lost_recs = 0;
    pthread_mutex_unlock(&rec_lock);
}

static size_t event_count(void)
{
    pthread_mutex_lock(&rec_lock);
    size_t n = num_recs;
    pthread_mutex_unlock(&rec_lock);
    return n;
}

static struct recorded event_at(size_t i)
{
    struct recorded r;
    size_t n;

    memset(&r, 0, sizeof(r));
    pthread_mutex_lock(&rec_lock);
    n = num_recs;
    if (i < n)
        r = recs[i];
    pthread_mutex_unlock(&rec_lock);
    assert_true(i < n); /* after unlocking: a failed assert must not leave it held */
    return r;
}

static size_t event_count_for(uintptr_t ctx, MojoResult result)
{
    size_t n = 0;

    pthread_mutex_lock(&rec_lock);
    for (size_t i = 0; i < num_recs; i++)
        if (recs[i].event.trigger_context == ctx && recs[i].event.result == result)
            n++;
    pthread_mutex_unlock(&rec_lock);
    return n;
}

/* Index of the last event recorded for ctx, or SIZE_MAX. */
static size_t last_event_index_for(uintptr_t ctx)
{
    size_t last = SIZE_MAX;

    pthread_mutex_lock(&rec_lock);
    for (size_t i = 0; i < num_recs; i++)
        if (recs[i].event.trigger_context == ctx)
            last = i;
    pthread_mutex_unlock(&rec_lock);
    return last;
}

/* ------------------------------------------------------------------------ */
/* Fixtures and helpers                                                      */
/* ------------------------------------------------------------------------ */

static int setup(void **state)
{
    reset_events();
    handler_depth = 0;
    atomic_store(&max_handler_depth, 0);
    for (int i = 0; i < MAX_CONTEXTS; i++) {
        atomic_store(&ctx_running[i], 0);
        atomic_store(&ctx_max_running[i], 0);
    }
    atomic_store(&in_write, false);
    on_event = NULL;
    main_thread = pthread_self();
    return cmojo_core_setup(state);
}

/* Everything the test made is gone; shut down whatever the outcome. */
static int teardown(void **state)
{
    on_event = NULL;
    assert_int_equal(lost_recs, 0);
    return cmojo_core_teardown(state);
}

static void sleep_usec(long usec)
{
    struct timespec left = {.tv_sec = usec / 1000000, .tv_nsec = (usec % 1000000) * 1000};

    while (nanosleep(&left, &left) != 0)
        if (errno != EINTR)
            return;
}

/* Reads until the pipe has nothing; returns how many messages it read. */
static unsigned drain(MojoHandle pipe)
{
    unsigned n = 0;
    uint32_t v;

    while (cmojo_test_read_u32(pipe, &v) == OK)
        n++;
    return n;
}

static MojoHandle make_trap(void)
{
    MojoHandle trap = MOJO_HANDLE_INVALID;

    assert_int_equal(MojoCreateTrap(record_handler, NULL, &trap), OK);
    assert_int_not_equal(trap, MOJO_HANDLE_INVALID);
    return trap;
}

static void add_trigger(MojoHandle trap, MojoHandle handle, MojoHandleSignals signals,
                        MojoTriggerCondition condition, uintptr_t ctx)
{
    assert_int_equal(MojoAddTrigger(trap, handle, signals, condition, ctx, NULL), OK);
}

static void write_in_main(MojoHandle pipe, uint32_t value)
{
    atomic_store(&in_write, true);
    MojoResult r = cmojo_test_write_u32(pipe, value);
    atomic_store(&in_write, false);
    assert_int_equal(r, OK);
}

static MojoResult arm(MojoHandle trap)
{
    return MojoArmTrap(trap, NULL, NULL, NULL);
}

static bool is_readable(MojoHandle pipe)
{
    struct MojoHandleSignalsState st = {0, 0};

    assert_int_equal(MojoQueryHandleSignalsState(pipe, &st), OK);
    return (st.satisfied_signals & READABLE) != 0;
}

static void close_all(const MojoHandle *handles, size_t n)
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(MojoClose(handles[i]), OK);
}

static void fill_events(struct MojoTrapEvent *events, size_t n)
{
    memset(events, 0xAA, n * sizeof(*events));
    /* Mojo callers set struct_size on input; cmojo must accept that too. */
    for (size_t i = 0; i < n; i++)
        events[i].struct_size = sizeof(events[i]);
}

/* ------------------------------------------------------------------------ */
/* MojoCreateTrap                                                            */
/* ------------------------------------------------------------------------ */

static void test_create_trap_rejects_null_handler_or_null_out(void **state)
{
    (void)state;
    MojoHandle trap = BOGUS_HANDLE;

    assert_int_equal(MojoCreateTrap(NULL, NULL, &trap), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(trap, BOGUS_HANDLE); /* outputs untouched on failure */
    assert_int_equal(MojoCreateTrap(record_handler, NULL, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(core_debug_handle_count(), 0);
}

static void test_create_trap_rejects_malformed_options(void **state)
{
    (void)state;
    const struct MojoCreateTrapOptions bad[] = {
        {0, 0}, {4, 0}, {7, 0}, {8, 1}, {8, 0x80000000u},
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        MojoHandle trap = BOGUS_HANDLE;
        assert_int_equal(MojoCreateTrap(record_handler, &bad[i], &trap),
                         MOJO_RESULT_INVALID_ARGUMENT);
        assert_int_equal(trap, BOGUS_HANDLE);
    }
    assert_int_equal(core_debug_handle_count(), 0);

    /* Well-formed: the exact size, and a larger (newer caller's) struct. */
    struct {
        struct MojoCreateTrapOptions opts;
        uint64_t newer_field;
    } larger = {{sizeof(larger), 0}, 0};
    const struct MojoCreateTrapOptions exact = {sizeof(exact), MOJO_CREATE_TRAP_FLAG_NONE};
    MojoHandle t1 = MOJO_HANDLE_INVALID, t2 = MOJO_HANDLE_INVALID;

    assert_int_equal(MojoCreateTrap(record_handler, &exact, &t1), OK);
    assert_int_equal(MojoCreateTrap(record_handler, &larger.opts, &t2), OK);
    assert_int_not_equal(t1, t2);
    assert_int_equal(core_debug_handle_count(), 2);
    assert_int_equal(MojoClose(t1), OK);
    assert_int_equal(MojoClose(t2), OK);
    assert_int_equal(event_count(), 0); /* no triggers, nothing to cancel */
}

static void test_new_trap_is_disarmed(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoHandle trap = make_trap();

    add_trigger(trap, b, READABLE, SATISFIED, 1);
    write_in_main(a, 7);
    assert_int_equal(event_count(), 0);
    /* Still disarmed, and now blocked by the readable pipe. */
    assert_int_equal(arm(trap), MOJO_RESULT_FAILED_PRECONDITION);
    assert_int_equal(event_count(), 0);

    assert_int_equal(MojoClose(trap), OK);
    assert_int_equal(event_count(), 1);
    assert_int_equal(event_at(0).event.result, MOJO_RESULT_CANCELLED);
    close_all((MojoHandle[]){a, b}, 2);
}

/* ------------------------------------------------------------------------ */
/* MojoAddTrigger                                                            */
/* ------------------------------------------------------------------------ */

static void test_add_trigger_rejects_a_trap_handle_that_is_not_a_trap(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoHandle closed = make_trap();
    assert_int_equal(MojoClose(closed), OK);

    assert_int_equal(MojoAddTrigger(a, b, READABLE, SATISFIED, 1, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoAddTrigger(MOJO_HANDLE_INVALID, b, READABLE, SATISFIED, 1, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoAddTrigger(closed, b, READABLE, SATISFIED, 1, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoAddTrigger(BOGUS_HANDLE, b, READABLE, SATISFIED, 1, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    close_all((MojoHandle[]){a, b}, 2);
    assert_int_equal(event_count(), 0);
}

static void test_add_trigger_rejects_an_invalid_watched_handle(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoHandle trap = make_trap();
    assert_int_equal(MojoClose(a), OK); /* a's value is now stale */

    assert_int_equal(MojoAddTrigger(trap, MOJO_HANDLE_INVALID, READABLE, SATISFIED, 1, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoAddTrigger(trap, a, READABLE, SATISFIED, 1, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoAddTrigger(trap, BOGUS_HANDLE, READABLE, SATISFIED, 1, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(arm(trap), MOJO_RESULT_NOT_FOUND); /* nothing was added */
    close_all((MojoHandle[]){trap, b}, 2);
    assert_int_equal(event_count(), 0);
}

static void test_add_trigger_rejects_watching_a_trap(void **state)
{
    (void)state;
    MojoHandle trap = make_trap();
    MojoHandle other = make_trap();

    assert_int_equal(MojoAddTrigger(trap, trap, READABLE, SATISFIED, 1, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoAddTrigger(trap, other, READABLE, SATISFIED, 2, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(arm(trap), MOJO_RESULT_NOT_FOUND);
    close_all((MojoHandle[]){trap, other}, 2);
    assert_int_equal(event_count(), 0);
}

static void test_add_trigger_rejects_an_unknown_condition(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoHandle trap = make_trap();

    assert_int_equal(MojoAddTrigger(trap, b, READABLE, 2, 1, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoAddTrigger(trap, b, READABLE, UINT32_MAX, 1, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(arm(trap), MOJO_RESULT_NOT_FOUND);
    /* Both real conditions are accepted. */
    add_trigger(trap, a, READABLE, SATISFIED, 1);
    add_trigger(trap, b, READABLE, UNSATISFIED, 2);
    assert_int_equal(MojoClose(trap), OK);
    assert_int_equal(event_count(), 2);
    close_all((MojoHandle[]){a, b}, 2);
}

static void test_add_trigger_rejects_malformed_options(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoHandle trap = make_trap();
    const struct MojoAddTriggerOptions bad[] = {{0, 0}, {4, 0}, {8, 1}, {8, 0x80000000u}};
    const struct MojoAddTriggerOptions good = {sizeof(good), MOJO_ADD_TRIGGER_FLAG_NONE};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(MojoAddTrigger(trap, b, READABLE, SATISFIED, 1, &bad[i]),
                         MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(arm(trap), MOJO_RESULT_NOT_FOUND);
    assert_int_equal(MojoAddTrigger(trap, b, READABLE, SATISFIED, 1, &good), OK);
    close_all((MojoHandle[]){trap, a, b}, 3);
}

static void test_add_trigger_rejects_a_duplicate_context(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;
    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    MojoHandle trap = make_trap();

    add_trigger(trap, b, READABLE, SATISFIED, 1);
    assert_int_equal(MojoAddTrigger(trap, d, READABLE, SATISFIED, 1, NULL),
                     MOJO_RESULT_ALREADY_EXISTS);

    /* The refused trigger watches nothing; the first one is intact. */
    assert_int_equal(arm(trap), OK);
    write_in_main(c, 1);
    assert_int_equal(event_count(), 0);
    write_in_main(a, 2);
    assert_int_equal(event_count(), 1);
    assert_int_equal(event_at(0).event.trigger_context, 1);
    assert_int_equal(event_at(0).event.result, OK);
    close_all((MojoHandle[]){trap, a, b, c, d}, 5);
}

static void test_add_trigger_rejects_a_second_trigger_on_the_same_handle(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoHandle trap = make_trap();
    MojoHandle other = make_trap();

    add_trigger(trap, b, READABLE, SATISFIED, 1);
    assert_int_equal(MojoAddTrigger(trap, b, MOJO_HANDLE_SIGNAL_PEER_CLOSED, SATISFIED, 2, NULL),
                     MOJO_RESULT_ALREADY_EXISTS);
    assert_int_equal(MojoRemoveTrigger(trap, 2, NULL), MOJO_RESULT_NOT_FOUND);
    /* Another trap may watch the same handle. */
    add_trigger(other, b, READABLE, SATISFIED, 2);
    close_all((MojoHandle[]){trap, other, a, b}, 4);
    assert_int_equal(event_count(), 2);
    assert_int_equal(event_count_for(1, MOJO_RESULT_CANCELLED), 1);
    assert_int_equal(event_count_for(2, MOJO_RESULT_CANCELLED), 1);
}

static void test_add_trigger_on_a_handle_in_transit_is_busy(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoHandle trap = make_trap();
    MojoMessageHandle msg = MOJO_MESSAGE_HANDLE_INVALID;

    assert_int_equal(MojoCreateMessage(NULL, &msg), OK);
    assert_int_equal(MojoAppendMessageData(msg, 0, &b, 1, NULL, NULL, NULL), OK);
    assert_int_equal(MojoAddTrigger(trap, b, READABLE, SATISFIED, 1, NULL), MOJO_RESULT_BUSY);
    assert_int_equal(arm(trap), MOJO_RESULT_NOT_FOUND);

    assert_int_equal(MojoDestroyMessage(msg), OK); /* closes b */
    close_all((MojoHandle[]){trap, a}, 2);
    assert_int_equal(event_count(), 0);
}

static void test_add_trigger_to_an_armed_trap_fires_at_once_if_its_condition_holds(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;
    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    MojoHandle trap = make_trap();

    add_trigger(trap, b, READABLE, SATISFIED, 1);
    assert_int_equal(arm(trap), OK);
    write_in_main(c, 5); /* d is readable, not watched yet */
    assert_int_equal(event_count(), 0);

    add_trigger(trap, d, READABLE, SATISFIED, 2);
    assert_int_equal(event_count(), 1);
    struct recorded r = event_at(0);
    assert_int_equal(r.event.trigger_context, 2);
    assert_int_equal(r.event.result, OK);
    assert_true(r.event.flags & MOJO_TRAP_EVENT_FLAG_WITHIN_API_CALL);
    assert_true(r.event.signals_state.satisfied_signals & READABLE);

    /* That disarmed the trap. */
    write_in_main(a, 6);
    assert_int_equal(event_count(), 1);
    close_all((MojoHandle[]){trap, a, b, c, d}, 5);
}

static void test_add_trigger_to_an_armed_trap_reports_a_condition_that_can_never_hold(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;
    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    MojoHandle trap = make_trap();

    add_trigger(trap, d, READABLE, SATISFIED, 1);
    assert_int_equal(arm(trap), OK);
    assert_int_equal(MojoClose(a), OK); /* b can never be readable */
    assert_int_equal(event_count(), 0);

    add_trigger(trap, b, READABLE, SATISFIED, 2);
    assert_int_equal(event_count(), 1);
    struct recorded r = event_at(0);
    assert_int_equal(r.event.trigger_context, 2);
    assert_int_equal(r.event.result, MOJO_RESULT_FAILED_PRECONDITION);
    assert_true(r.event.signals_state.satisfied_signals & MOJO_HANDLE_SIGNAL_PEER_CLOSED);
    assert_false(r.event.signals_state.satisfiable_signals & READABLE);
    close_all((MojoHandle[]){trap, b, c, d}, 4);
}

/* ------------------------------------------------------------------------ */
/* MojoArmTrap                                                               */
/* ------------------------------------------------------------------------ */

static void test_arm_trap_without_triggers_is_not_found(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoHandle trap = make_trap();

    assert_int_equal(arm(trap), MOJO_RESULT_NOT_FOUND);
    add_trigger(trap, b, READABLE, SATISFIED, 1);
    assert_int_equal(MojoRemoveTrigger(trap, 1, NULL), OK);
    assert_int_equal(arm(trap), MOJO_RESULT_NOT_FOUND);
    close_all((MojoHandle[]){trap, a, b}, 3);
    assert_int_equal(event_count(), 1); /* the removal's CANCELLED */
}

static void test_arm_trap_rejects_a_non_trap_and_malformed_options(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoHandle trap = make_trap();
    MojoHandle closed = make_trap();
    assert_int_equal(MojoClose(closed), OK);
    const struct MojoArmTrapOptions bad[] = {{0, 0}, {4, 0}, {8, 1}, {8, 0x80000000u}};
    const struct MojoArmTrapOptions good = {sizeof(good), MOJO_ARM_TRAP_FLAG_NONE};

    assert_int_equal(arm(a), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(arm(MOJO_HANDLE_INVALID), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(arm(closed), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(arm(BOGUS_HANDLE), MOJO_RESULT_INVALID_ARGUMENT);

    add_trigger(trap, b, READABLE, SATISFIED, 1);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(MojoArmTrap(trap, &bad[i], NULL, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    /* None of those armed it. */
    write_in_main(a, 1);
    assert_int_equal(event_count(), 0);
    assert_int_equal(drain(b), 1);
    assert_int_equal(MojoArmTrap(trap, &good, NULL, NULL), OK);
    write_in_main(a, 2);
    assert_int_equal(event_count(), 1);
    close_all((MojoHandle[]){trap, a, b}, 3);
}

static void test_arm_trap_reports_blocking_events_and_stays_disarmed(void **state)
{
    (void)state;
    MojoHandle a, b, c, d, e, f;
    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    cmojo_test_make_pipe(&e, &f);
    MojoHandle trap = make_trap();

    write_in_main(a, 1);                /* b: ready, condition met */
    assert_int_equal(MojoClose(c), OK); /* d: ready, condition can never be met */
    add_trigger(trap, b, READABLE, SATISFIED, 1);
    add_trigger(trap, d, READABLE, SATISFIED, 2);
    add_trigger(trap, f, READABLE, SATISFIED, 3); /* f: not ready */

    struct MojoTrapEvent events[4];
    uint32_t num = 4;
    fill_events(events, 4);
    assert_int_equal(MojoArmTrap(trap, NULL, &num, events), MOJO_RESULT_FAILED_PRECONDITION);
    assert_int_equal(num, 2);

    bool seen[4] = {false, false, false, false};
    for (uint32_t i = 0; i < num; i++) {
        const struct MojoTrapEvent *ev = &events[i];
        assert_int_equal(ev->struct_size, sizeof(struct MojoTrapEvent));
        assert_true(ev->trigger_context == 1 || ev->trigger_context == 2);
        assert_false(seen[ev->trigger_context]);
        seen[ev->trigger_context] = true;
        if (ev->trigger_context == 1) {
            assert_int_equal(ev->result, OK);
            assert_true(ev->signals_state.satisfied_signals & READABLE);
        } else {
            assert_int_equal(ev->result, MOJO_RESULT_FAILED_PRECONDITION);
            assert_true(ev->signals_state.satisfied_signals & MOJO_HANDLE_SIGNAL_PEER_CLOSED);
            assert_false(ev->signals_state.satisfiable_signals & READABLE);
        }
    }
    /* Entries past the count are left alone. */
    for (size_t i = 2; i < 4; i++)
        assert_int_equal(events[i].trigger_context, (uintptr_t)0xAAAAAAAAAAAAAAAAull);
    /* Blocking events are returned, not delivered to the handler. */
    assert_int_equal(event_count(), 0);

    /* The trap did not arm: f becoming readable does not fire it. */
    write_in_main(e, 2);
    assert_int_equal(event_count(), 0);
    assert_int_equal(MojoClose(trap), OK);
    assert_int_equal(event_count(), 3);
    close_all((MojoHandle[]){a, b, d, e, f}, 5);
}

static void test_arm_trap_with_a_null_count_only_reports_the_failure(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoHandle trap = make_trap();

    write_in_main(a, 1);
    add_trigger(trap, b, READABLE, SATISFIED, 1);
    assert_int_equal(MojoArmTrap(trap, NULL, NULL, NULL), MOJO_RESULT_FAILED_PRECONDITION);
    assert_int_equal(event_count(), 0);

    /* Not armed: once b is empty, a new message does not fire. */
    assert_int_equal(drain(b), 1);
    write_in_main(a, 2);
    assert_int_equal(event_count(), 0);
    close_all((MojoHandle[]){trap, a, b}, 3);
}

static void test_arm_trap_with_a_zero_count_and_no_array_reports_no_events(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoHandle trap = make_trap();
    uint32_t num = 0;

    write_in_main(a, 1);
    add_trigger(trap, b, READABLE, SATISFIED, 1);
    assert_int_equal(MojoArmTrap(trap, NULL, &num, NULL), MOJO_RESULT_FAILED_PRECONDITION);
    assert_int_equal(num, 0);
    assert_int_equal(event_count(), 0);
    close_all((MojoHandle[]){trap, a, b}, 3);
}

static void test_arm_trap_rejects_a_count_without_an_array(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;
    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    MojoHandle ready = make_trap();
    MojoHandle idle = make_trap();
    uint32_t num = 1;

    write_in_main(a, 1);
    add_trigger(ready, b, READABLE, SATISFIED, 1);
    add_trigger(idle, d, READABLE, SATISFIED, 2);

    assert_int_equal(MojoArmTrap(ready, NULL, &num, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(num, 1);
    assert_int_equal(MojoArmTrap(idle, NULL, &num, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(num, 1);
    /* The refused call did not arm `idle`. */
    write_in_main(c, 2);
    assert_int_equal(event_count(), 0);
    close_all((MojoHandle[]){ready, idle, a, b, c, d}, 6);
}

static void test_arm_trap_rotates_blocking_events_round_robin(void **state)
{
    (void)state;
    MojoHandle w[3], r[3];
    MojoHandle trap = make_trap();
    bool seen[4] = {false, false, false, false};

    for (uintptr_t i = 0; i < 3; i++) {
        cmojo_test_make_pipe(&w[i], &r[i]);
        write_in_main(w[i], (uint32_t)i);
        add_trigger(trap, r[i], READABLE, SATISFIED, i + 1);
    }
    for (int call = 0; call < 3; call++) {
        struct MojoTrapEvent ev;
        uint32_t num = 1;
        fill_events(&ev, 1);
        assert_int_equal(MojoArmTrap(trap, NULL, &num, &ev), MOJO_RESULT_FAILED_PRECONDITION);
        assert_int_equal(num, 1);
        assert_int_equal(ev.result, OK);
        assert_true(ev.trigger_context >= 1 && ev.trigger_context <= 3);
        assert_false(seen[ev.trigger_context]); /* a different trigger each time */
        seen[ev.trigger_context] = true;
    }
    assert_int_equal(event_count(), 0);
    assert_int_equal(MojoClose(trap), OK);
    for (int i = 0; i < 3; i++)
        close_all((MojoHandle[]){w[i], r[i]}, 2);
}

/* ------------------------------------------------------------------------ */
/* Firing                                                                    */
/* ------------------------------------------------------------------------ */

static void test_armed_trap_fires_once_inside_the_write_on_the_writers_thread(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoHandle trap = make_trap();

    add_trigger(trap, b, READABLE, SATISFIED, 3);
    assert_int_equal(arm(trap), OK);
    assert_int_equal(event_count(), 0);
    write_in_main(a, 1);

    assert_int_equal(event_count(), 1);
    struct recorded r = event_at(0);
    assert_int_equal(r.event.struct_size, sizeof(struct MojoTrapEvent));
    assert_int_equal(r.event.trigger_context, 3);
    assert_int_equal(r.event.result, OK);
    assert_true(r.event.flags & MOJO_TRAP_EVENT_FLAG_WITHIN_API_CALL);
    assert_true(r.event.signals_state.satisfied_signals & READABLE);
    assert_true(r.event.signals_state.satisfiable_signals & READABLE);
    assert_true(r.during_write);
    assert_true(r.on_main_thread);
    assert_int_equal(r.depth, 1);
    close_all((MojoHandle[]){trap, a, b}, 3);
}

static void test_trap_disarms_on_firing_until_rearmed(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoHandle trap = make_trap();

    add_trigger(trap, b, READABLE, SATISFIED, 1);
    assert_int_equal(arm(trap), OK);
    write_in_main(a, 1);
    assert_int_equal(event_count(), 1);
    write_in_main(a, 2);
    assert_int_equal(event_count(), 1); /* disarmed */

    struct MojoTrapEvent ev;
    uint32_t num = 1;
    fill_events(&ev, 1);
    assert_int_equal(MojoArmTrap(trap, NULL, &num, &ev), MOJO_RESULT_FAILED_PRECONDITION);
    assert_int_equal(num, 1);
    assert_int_equal(ev.trigger_context, 1);
    assert_int_equal(ev.result, OK);

    assert_int_equal(drain(b), 2);
    assert_int_equal(arm(trap), OK);
    assert_int_equal(event_count(), 1);
    write_in_main(a, 3);
    assert_int_equal(event_count(), 2);
    assert_int_equal(event_at(1).event.trigger_context, 1);
    assert_int_equal(event_at(1).event.result, OK);
    close_all((MojoHandle[]){trap, a, b}, 3);
}

static void test_closing_the_peer_fires_failed_precondition_for_readable(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoHandle trap = make_trap();

    add_trigger(trap, b, READABLE, SATISFIED, 1);
    assert_int_equal(arm(trap), OK);
    assert_int_equal(MojoClose(a), OK);

    assert_int_equal(event_count(), 1);
    struct recorded r = event_at(0);
    assert_int_equal(r.event.trigger_context, 1);
    assert_int_equal(r.event.result, MOJO_RESULT_FAILED_PRECONDITION);
    assert_true(r.event.signals_state.satisfied_signals & MOJO_HANDLE_SIGNAL_PEER_CLOSED);
    assert_false(r.event.signals_state.satisfiable_signals & READABLE);
    close_all((MojoHandle[]){trap, b}, 2);
}

static void test_unsatisfied_condition_fires_when_the_last_message_is_read(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoHandle trap = make_trap();
    uint32_t v;

    write_in_main(a, 1);
    write_in_main(a, 2);
    add_trigger(trap, b, READABLE, UNSATISFIED, 1);
    assert_int_equal(arm(trap), OK); /* READABLE holds: not ready */

    assert_int_equal(cmojo_test_read_u32(b, &v), OK);
    assert_int_equal(event_count(), 0); /* still readable */
    assert_int_equal(cmojo_test_read_u32(b, &v), OK);
    assert_int_equal(event_count(), 1);
    struct recorded r = event_at(0);
    assert_int_equal(r.event.trigger_context, 1);
    assert_int_equal(r.event.result, OK);
    assert_true(r.event.flags & MOJO_TRAP_EVENT_FLAG_WITHIN_API_CALL);
    assert_false(r.event.signals_state.satisfied_signals & READABLE);

    /* READABLE is still unsatisfied, so the trigger blocks arming. */
    assert_int_equal(arm(trap), MOJO_RESULT_FAILED_PRECONDITION);
    close_all((MojoHandle[]){trap, a, b}, 3);
}

static void test_peer_closed_trigger_fires_ok_when_the_peer_closes(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoHandle trap = make_trap();

    add_trigger(trap, b, MOJO_HANDLE_SIGNAL_PEER_CLOSED, SATISFIED, 1);
    assert_int_equal(arm(trap), OK);
    write_in_main(a, 1); /* READABLE is not watched */
    assert_int_equal(event_count(), 0);
    assert_int_equal(MojoClose(a), OK);

    assert_int_equal(event_count(), 1);
    struct recorded r = event_at(0);
    assert_int_equal(r.event.trigger_context, 1);
    assert_int_equal(r.event.result, OK);
    assert_true(r.event.signals_state.satisfied_signals & MOJO_HANDLE_SIGNAL_PEER_CLOSED);
    close_all((MojoHandle[]){trap, b}, 2);
}

/* ------------------------------------------------------------------------ */
/* CANCELLED                                                                 */
/* ------------------------------------------------------------------------ */

static void test_remove_trigger_delivers_one_cancelled_event_even_when_disarmed(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoHandle trap = make_trap();

    add_trigger(trap, b, READABLE, SATISFIED, 4);
    assert_int_equal(MojoRemoveTrigger(trap, 4, NULL), OK);
    assert_int_equal(event_count(), 1); /* delivered before the call returned */
    struct recorded r = event_at(0);
    assert_int_equal(r.event.trigger_context, 4);
    assert_int_equal(r.event.result, MOJO_RESULT_CANCELLED);
    assert_int_equal(r.event.struct_size, sizeof(struct MojoTrapEvent));

    /* Nothing more for that trigger, whatever happens to its handle. */
    assert_int_equal(MojoRemoveTrigger(trap, 4, NULL), MOJO_RESULT_NOT_FOUND);
    assert_int_equal(arm(trap), MOJO_RESULT_NOT_FOUND);
    write_in_main(a, 1);
    assert_int_equal(MojoClose(a), OK);
    assert_int_equal(MojoClose(b), OK);
    assert_int_equal(MojoClose(trap), OK);
    assert_int_equal(event_count(), 1);
}

static void test_remove_trigger_rejects_unknown_context_non_trap_and_bad_options(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoHandle trap = make_trap();
    const struct MojoRemoveTriggerOptions bad[] = {{0, 0}, {4, 0}, {8, 1}};
    const struct MojoRemoveTriggerOptions good = {sizeof(good), MOJO_REMOVE_TRIGGER_FLAG_NONE};

    add_trigger(trap, b, READABLE, SATISFIED, 1);
    assert_int_equal(MojoRemoveTrigger(trap, 2, NULL), MOJO_RESULT_NOT_FOUND);
    assert_int_equal(MojoRemoveTrigger(a, 1, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoRemoveTrigger(MOJO_HANDLE_INVALID, 1, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoRemoveTrigger(BOGUS_HANDLE, 1, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(MojoRemoveTrigger(trap, 1, &bad[i]), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(event_count(), 0); /* none of those removed it */

    assert_int_equal(MojoRemoveTrigger(trap, 1, &good), OK);
    assert_int_equal(event_count(), 1);
    close_all((MojoHandle[]){trap, a, b}, 3);
}

static void test_closing_a_watched_handle_cancels_only_its_trigger(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;
    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    MojoHandle trap = make_trap();

    add_trigger(trap, b, READABLE, SATISFIED, 1);
    add_trigger(trap, d, READABLE, SATISFIED, 2);
    assert_int_equal(arm(trap), OK);
    assert_int_equal(MojoClose(b), OK);

    assert_int_equal(event_count(), 1); /* CANCELLED only, no FAILED_PRECONDITION */
    assert_int_equal(event_at(0).event.trigger_context, 1);
    assert_int_equal(event_at(0).event.result, MOJO_RESULT_CANCELLED);
    assert_int_equal(MojoRemoveTrigger(trap, 1, NULL), MOJO_RESULT_NOT_FOUND);

    /* The other trigger still works. */
    assert_int_equal(arm(trap), OK);
    write_in_main(c, 1);
    assert_int_equal(event_count(), 2);
    assert_int_equal(event_at(1).event.trigger_context, 2);
    assert_int_equal(event_at(1).event.result, OK);

    assert_int_equal(MojoClose(a), OK);
    assert_int_equal(last_event_index_for(1), 0); /* CANCELLED was the last for 1 */
    close_all((MojoHandle[]){trap, c, d}, 3);
}

static void test_closing_the_trap_cancels_every_trigger(void **state)
{
    (void)state;
    MojoHandle w[3], r[3];
    MojoHandle trap = make_trap();

    for (uintptr_t i = 0; i < 3; i++) {
        cmojo_test_make_pipe(&w[i], &r[i]);
        add_trigger(trap, r[i], READABLE, SATISFIED, i + 1);
    }
    assert_int_equal(arm(trap), OK);
    assert_int_equal(MojoClose(trap), OK);
    assert_int_equal(event_count(), 3);
    for (uintptr_t ctx = 1; ctx <= 3; ctx++)
        assert_int_equal(event_count_for(ctx, MOJO_RESULT_CANCELLED), 1);

    /* Nothing after CANCELLED. */
    for (int i = 0; i < 3; i++) {
        write_in_main(w[i], 1);
        close_all((MojoHandle[]){w[i], r[i]}, 2);
    }
    assert_int_equal(event_count(), 3);
}

static void test_cancelled_follows_failed_precondition_and_is_last(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoHandle trap = make_trap();

    add_trigger(trap, b, READABLE, SATISFIED, 1);
    assert_int_equal(arm(trap), OK);
    assert_int_equal(MojoClose(a), OK);
    assert_int_equal(MojoClose(b), OK);
    assert_int_equal(event_count(), 2);
    assert_int_equal(event_at(0).event.result, MOJO_RESULT_FAILED_PRECONDITION);
    assert_int_equal(event_at(1).event.result, MOJO_RESULT_CANCELLED);
    assert_int_equal(MojoClose(trap), OK);
    assert_int_equal(event_count(), 2);
}

/* ------------------------------------------------------------------------ */
/* Handlers that call the API                                                */
/* ------------------------------------------------------------------------ */

/* What the current test's on_event works on, and what its calls returned. */
static MojoHandle h_trap, h_pipe, h_other_writer;
static uintptr_t h_ctx;
static MojoResult h_result, h_result2;
static size_t h_events_after_call;
static uint32_t h_value;
static atomic_int h_calls;

static void reset_handler_state(void)
{
    h_trap = h_pipe = h_other_writer = MOJO_HANDLE_INVALID;
    h_ctx = 0;
    h_result = h_result2 = MOJO_RESULT_UNKNOWN;
    h_events_after_call = SIZE_MAX;
    h_value = 0;
    atomic_store(&h_calls, 0);
}

static void read_in_handler(const struct MojoTrapEvent *ev)
{
    if (ev->result != OK)
        return;
    atomic_fetch_add(&h_calls, 1);
    h_result = cmojo_test_read_u32(h_pipe, &h_value);
}

static void test_handler_may_read_the_message_that_fired_it(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoHandle trap = make_trap();
    reset_handler_state();
    h_pipe = b;
    on_event = read_in_handler;

    add_trigger(trap, b, READABLE, SATISFIED, 1);
    assert_int_equal(arm(trap), OK);
    write_in_main(a, 0xC0FFEE);
    assert_int_equal(atomic_load(&h_calls), 1);
    assert_int_equal(h_result, OK);
    assert_int_equal(h_value, 0xC0FFEE);
    assert_false(is_readable(b));
    close_all((MojoHandle[]){trap, a, b}, 3);
}

static void drain_and_rearm(const struct MojoTrapEvent *ev)
{
    if (ev->result != OK)
        return;
    atomic_fetch_add(&h_calls, 1);
    drain(h_pipe);
    MojoResult r = MojoArmTrap(h_trap, NULL, NULL, NULL);
    if (r != OK)
        h_result = r; /* remembers any failure */
}

static void test_handler_may_rearm_its_trap(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoHandle trap = make_trap();
    reset_handler_state();
    h_trap = trap;
    h_pipe = b;
    h_result = OK;
    on_event = drain_and_rearm;

    add_trigger(trap, b, READABLE, SATISFIED, 1);
    assert_int_equal(arm(trap), OK);
    for (uint32_t i = 0; i < 3; i++) {
        write_in_main(a, i);
        assert_int_equal(atomic_load(&h_calls), i + 1);
    }
    assert_int_equal(h_result, OK);
    assert_int_equal(atomic_load(&max_handler_depth), 1);
    close_all((MojoHandle[]){trap, a, b}, 3);
    assert_int_equal(event_count(), 4); /* 3 x OK, then CANCELLED */
}

static void close_watched_in_handler(const struct MojoTrapEvent *ev)
{
    if (ev->result != OK)
        return;
    h_result = MojoClose(h_pipe);
    h_events_after_call = event_count();
}

static void test_handler_may_close_the_handle_that_fired(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoHandle trap = make_trap();
    reset_handler_state();
    h_pipe = b;
    on_event = close_watched_in_handler;

    add_trigger(trap, b, READABLE, SATISFIED, 1);
    assert_int_equal(arm(trap), OK);
    write_in_main(a, 1);

    assert_int_equal(h_result, OK);
    assert_int_equal(h_events_after_call, 1); /* CANCELLED was not delivered nested */
    assert_int_equal(event_count(), 2);       /* ... but before the write returned */
    assert_int_equal(event_at(0).event.result, OK);
    assert_int_equal(event_at(1).event.trigger_context, 1);
    assert_int_equal(event_at(1).event.result, MOJO_RESULT_CANCELLED);
    assert_int_equal(event_at(1).depth, 1);
    assert_int_equal(atomic_load(&max_handler_depth), 1);
    close_all((MojoHandle[]){trap, a}, 2);
    assert_int_equal(event_count(), 2);
}

static void close_trap_in_handler(const struct MojoTrapEvent *ev)
{
    if (ev->result != OK)
        return;
    h_result = MojoClose(h_trap);
    h_events_after_call = event_count();
}

static void test_handler_may_close_its_own_trap(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;
    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    MojoHandle trap = make_trap();
    reset_handler_state();
    h_trap = trap;
    on_event = close_trap_in_handler;

    add_trigger(trap, b, READABLE, SATISFIED, 1);
    add_trigger(trap, d, READABLE, SATISFIED, 2);
    assert_int_equal(arm(trap), OK);
    write_in_main(a, 1);

    assert_int_equal(h_result, OK);
    assert_int_equal(h_events_after_call, 1);
    assert_int_equal(event_count(), 3);
    assert_int_equal(event_at(0).event.trigger_context, 1);
    assert_int_equal(event_at(0).event.result, OK);
    assert_int_equal(event_count_for(1, MOJO_RESULT_CANCELLED), 1);
    assert_int_equal(event_count_for(2, MOJO_RESULT_CANCELLED), 1);
    assert_int_equal(atomic_load(&max_handler_depth), 1);
    assert_int_equal(MojoClose(trap), MOJO_RESULT_INVALID_ARGUMENT); /* already closed */
    close_all((MojoHandle[]){a, b, c, d}, 4);
    assert_int_equal(event_count(), 3);
}

static void remove_own_trigger_in_handler(const struct MojoTrapEvent *ev)
{
    if (ev->result != OK)
        return;
    h_result = MojoRemoveTrigger(h_trap, ev->trigger_context, NULL);
    h_events_after_call = event_count();
}

static void test_handler_may_remove_its_own_trigger(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoHandle trap = make_trap();
    reset_handler_state();
    h_trap = trap;
    on_event = remove_own_trigger_in_handler;

    add_trigger(trap, b, READABLE, SATISFIED, 5);
    assert_int_equal(arm(trap), OK);
    write_in_main(a, 1);

    assert_int_equal(h_result, OK);
    assert_int_equal(h_events_after_call, 1);
    assert_int_equal(event_count(), 2);
    assert_int_equal(event_at(1).event.trigger_context, 5);
    assert_int_equal(event_at(1).event.result, MOJO_RESULT_CANCELLED);
    assert_int_equal(atomic_load(&max_handler_depth), 1);
    assert_int_equal(arm(trap), MOJO_RESULT_NOT_FOUND);
    close_all((MojoHandle[]){trap, a, b}, 3);
    assert_int_equal(event_count(), 2);
}

/* On the first OK event: remove the trigger of the other trap. */
static MojoHandle other_traps[3]; /* indexed by context 1, 2 */

static void remove_the_other_trigger(const struct MojoTrapEvent *ev)
{
    if (ev->result != OK || h_result != MOJO_RESULT_UNKNOWN)
        return;
    uintptr_t other = ev->trigger_context == 1 ? 2 : 1;
    h_ctx = other;
    h_result = MojoRemoveTrigger(other_traps[other], other, NULL);
}

static void test_a_removed_trigger_gets_no_event_that_was_already_queued(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    reset_handler_state();
    other_traps[1] = make_trap();
    other_traps[2] = make_trap();
    on_event = remove_the_other_trigger;

    /* Two traps watch b: one write trips both, queueing both events. */
    add_trigger(other_traps[1], b, READABLE, SATISFIED, 1);
    add_trigger(other_traps[2], b, READABLE, SATISFIED, 2);
    assert_int_equal(arm(other_traps[1]), OK);
    assert_int_equal(arm(other_traps[2]), OK);
    write_in_main(a, 1);

    uintptr_t removed = h_ctx, first = removed == 1 ? 2 : 1;
    assert_int_equal(h_result, OK);
    assert_int_equal(event_count(), 2);
    assert_int_equal(event_at(0).event.trigger_context, first);
    assert_int_equal(event_at(0).event.result, OK);
    /* After MojoRemoveTrigger, only CANCELLED: not the OK already queued. */
    assert_int_equal(event_at(1).event.trigger_context, removed);
    assert_int_equal(event_at(1).event.result, MOJO_RESULT_CANCELLED);
    close_all((MojoHandle[]){other_traps[1], other_traps[2], a, b}, 4);
    assert_int_equal(event_count(), 3);
}

/* On trigger 1: empty h_pipe, re-arm, then make trigger 2 (same trap) ready. */
static void rearm_and_write_other_pipe(const struct MojoTrapEvent *ev)
{
    if (ev->result != OK || ev->trigger_context != 1)
        return;
    drain(h_pipe);
    h_result = MojoArmTrap(h_trap, NULL, NULL, NULL);
    h_result2 = cmojo_test_write_u32(h_other_writer, 2);
    h_events_after_call = event_count();
}

static void test_event_raised_inside_a_handler_waits_until_it_returns(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;
    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    MojoHandle trap = make_trap();
    reset_handler_state();
    h_trap = trap;
    h_pipe = b;
    h_other_writer = c;
    on_event = rearm_and_write_other_pipe;

    add_trigger(trap, b, READABLE, SATISFIED, 1);
    add_trigger(trap, d, READABLE, SATISFIED, 2);
    assert_int_equal(arm(trap), OK);
    write_in_main(a, 1);

    assert_int_equal(h_result, OK);
    assert_int_equal(h_result2, OK);
    assert_int_equal(h_events_after_call, 1); /* trigger 2 did not run inside trigger 1 */
    assert_int_equal(event_count(), 2);       /* it ran after, before the write returned */
    assert_int_equal(event_at(1).event.trigger_context, 2);
    assert_int_equal(event_at(1).event.result, OK);
    assert_int_equal(event_at(1).depth, 1);
    assert_int_equal(atomic_load(&max_handler_depth), 1);
    close_all((MojoHandle[]){trap, a, b, c, d}, 5);
}

/* ------------------------------------------------------------------------ */
/* Threads                                                                   */
/* ------------------------------------------------------------------------ */

#define OVERLAP_WRITERS 2
#define OVERLAP_MESSAGES_PER_WRITER 300

static atomic_uint overlap_reads;
static atomic_int overlap_errors;
static MojoHandle overlap_writer;

static void drain_rearm_and_linger(const struct MojoTrapEvent *ev)
{
    if (ev->result != OK) {
        if (ev->result != MOJO_RESULT_CANCELLED)
            atomic_fetch_add(&overlap_errors, 1);
        return;
    }
    for (;;) {
        atomic_fetch_add(&overlap_reads, drain(h_pipe));
        MojoResult r = MojoArmTrap(h_trap, NULL, NULL, NULL);
        if (r == OK)
            break;
        if (r != MOJO_RESULT_FAILED_PRECONDITION) {
            atomic_fetch_add(&overlap_errors, 1);
            break;
        }
    }
    /* Armed now: another writer's message may trip the trap while we linger. */
    sleep_usec(100);
}

static void *overlap_writer_thread(void *arg)
{
    (void)arg;
    for (uint32_t i = 0; i < OVERLAP_MESSAGES_PER_WRITER; i++)
        if (cmojo_test_write_u32(overlap_writer, i) != OK)
            atomic_fetch_add(&overlap_errors, 1);
    return NULL;
}

static void test_handler_calls_for_one_trigger_never_overlap_across_threads(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoHandle trap = make_trap();
    pthread_t threads[OVERLAP_WRITERS];
    reset_handler_state();
    h_trap = trap;
    h_pipe = b;
    overlap_writer = a;
    atomic_store(&overlap_reads, 0);
    atomic_store(&overlap_errors, 0);
    on_event = drain_rearm_and_linger;

    add_trigger(trap, b, READABLE, SATISFIED, 1);
    assert_int_equal(arm(trap), OK);
    for (int i = 0; i < OVERLAP_WRITERS; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, overlap_writer_thread, NULL), 0);
    for (int i = 0; i < OVERLAP_WRITERS; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);

    assert_int_equal(atomic_load(&overlap_errors), 0);
    assert_int_equal(atomic_load(&ctx_max_running[1]), 1);
    assert_true(event_count() >= 1);
    /* Every message was read by a handler: none was left without an event. */
    assert_int_equal(atomic_load(&overlap_reads), OVERLAP_WRITERS * OVERLAP_MESSAGES_PER_WRITER);
    assert_false(is_readable(b));
    close_all((MojoHandle[]){trap, a, b}, 3);
    assert_int_equal(last_event_index_for(1), event_count() - 1);
    assert_int_equal(event_at(event_count() - 1).event.result, MOJO_RESULT_CANCELLED);
}

/*
 * A handler runs long on a helper thread while the main thread removes its
 * trigger: the CANCELLED event must wait for that call to return.
 */
static atomic_bool slow_entered, slow_finished;
static atomic_bool cancel_saw_finished;

static void slow_handler(const struct MojoTrapEvent *ev)
{
    if (ev->result == MOJO_RESULT_CANCELLED) {
        atomic_store(&cancel_saw_finished, atomic_load(&slow_finished));
        return;
    }
    atomic_store(&slow_entered, true);
    sleep_usec(50000);
    atomic_store(&slow_finished, true);
}

static void *write_once_thread(void *arg)
{
    MojoHandle *pipe = arg;

    if (cmojo_test_write_u32(*pipe, 1) != OK)
        return (void *)1;
    return NULL;
}

static void test_cancelled_waits_for_a_handler_running_on_another_thread(void **state)
{
    (void)state;
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoHandle trap = make_trap();
    pthread_t writer;
    void *writer_failed = (void *)1;
    atomic_store(&slow_entered, false);
    atomic_store(&slow_finished, false);
    atomic_store(&cancel_saw_finished, false);
    on_event = slow_handler;

    add_trigger(trap, b, READABLE, SATISFIED, 1);
    assert_int_equal(arm(trap), OK);
    assert_int_equal(pthread_create(&writer, NULL, write_once_thread, &a), 0);
    for (int i = 0; i < 10000 && !atomic_load(&slow_entered); i++)
        sleep_usec(1000);
    assert_true(atomic_load(&slow_entered));
    assert_int_equal(MojoRemoveTrigger(trap, 1, NULL), OK);
    assert_int_equal(pthread_join(writer, &writer_failed), 0);
    assert_null(writer_failed);

    assert_int_equal(event_count(), 2);
    assert_int_equal(event_at(0).event.result, OK);
    assert_false(event_at(0).on_main_thread);
    assert_int_equal(event_at(1).event.result, MOJO_RESULT_CANCELLED);
    assert_true(atomic_load(&cancel_saw_finished));
    assert_int_equal(atomic_load(&ctx_max_running[1]), 1);
    close_all((MojoHandle[]){trap, a, b}, 3);
}

/*
 * A writer keeps a re-arming trigger busy on its thread while the main thread
 * removes the trigger: exactly one CANCELLED, and nothing after it.
 */
#define RACE_ROUNDS 30
#define RACE_MESSAGES 200

/* Drains and re-arms until armed; remembers any result but OK and NOT_FOUND. */
static void drain_and_rearm_until_armed(const struct MojoTrapEvent *ev)
{
    MojoResult r;

    if (ev->result != OK)
        return;
    do {
        drain(h_pipe);
        r = MojoArmTrap(h_trap, NULL, NULL, NULL);
    } while (r == MOJO_RESULT_FAILED_PRECONDITION);
    /* NOT_FOUND: the trigger was removed meanwhile, the trap has none left. */
    if (r != OK && r != MOJO_RESULT_NOT_FOUND)
        h_result = r;
}

static void *write_many_thread(void *arg)
{
    MojoHandle *pipe = arg;

    for (uint32_t i = 0; i < RACE_MESSAGES; i++)
        if (cmojo_test_write_u32(*pipe, i) != OK)
            return (void *)1;
    return NULL;
}

static void test_cancelled_stays_last_when_removal_races_events(void **state)
{
    (void)state;
    for (int round = 0; round < RACE_ROUNDS; round++) {
        MojoHandle a, b;
        cmojo_test_make_pipe(&a, &b);
        MojoHandle trap = make_trap();
        pthread_t writer;
        void *writer_failed = (void *)1;
        reset_events(); /* up to RACE_MESSAGES events a round */
        reset_handler_state();
        h_trap = trap;
        h_pipe = b;
        h_result = OK;
        on_event = drain_and_rearm_until_armed;

        add_trigger(trap, b, READABLE, SATISFIED, 1);
        assert_int_equal(arm(trap), OK);
        assert_int_equal(pthread_create(&writer, NULL, write_many_thread, &a), 0);
        sleep_usec(200 * (round % 5));
        assert_int_equal(MojoRemoveTrigger(trap, 1, NULL), OK);
        assert_int_equal(pthread_join(writer, &writer_failed), 0);
        assert_null(writer_failed);

        assert_int_equal(event_count_for(1, MOJO_RESULT_CANCELLED), 1);
        size_t last = last_event_index_for(1);
        assert_int_equal(last, event_count() - 1);
        assert_int_equal(event_at(last).event.result, MOJO_RESULT_CANCELLED);
        assert_int_equal(h_result, OK);
        close_all((MojoHandle[]){trap, a, b}, 3);
        assert_int_equal(last_event_index_for(1), last);
    }
    assert_int_equal(atomic_load(&ctx_max_running[1]), 1);
}

/*
 * Many events queued by one call, and more queued by handlers while those
 * are delivered: each trigger still gets exactly one CANCELLED.
 */
#define MANY_TRIGGERS 20

static MojoHandle second_trap;

static void close_second_trap_once(const struct MojoTrapEvent *ev)
{
    if (ev->result == MOJO_RESULT_CANCELLED && second_trap != MOJO_HANDLE_INVALID) {
        MojoHandle t = second_trap;
        second_trap = MOJO_HANDLE_INVALID;
        h_result = MojoClose(t);
    }
}

static void test_closing_traps_with_many_triggers_cancels_each_once(void **state)
{
    (void)state;
    MojoHandle w[MANY_TRIGGERS], r[MANY_TRIGGERS];
    MojoHandle first = make_trap();
    reset_handler_state();
    second_trap = make_trap();
    on_event = close_second_trap_once;

    for (uintptr_t i = 0; i < MANY_TRIGGERS; i++) {
        cmojo_test_make_pipe(&w[i], &r[i]);
        add_trigger(first, r[i], READABLE, SATISFIED, 100 + i);
        add_trigger(second_trap, r[i], READABLE, SATISFIED, 200 + i);
    }
    assert_int_equal(MojoClose(first), OK);

    assert_int_equal(h_result, OK);
    assert_int_equal(event_count(), 2 * MANY_TRIGGERS);
    for (uintptr_t i = 0; i < MANY_TRIGGERS; i++) {
        assert_int_equal(event_count_for(100 + i, MOJO_RESULT_CANCELLED), 1);
        assert_int_equal(event_count_for(200 + i, MOJO_RESULT_CANCELLED), 1);
    }
    assert_int_equal(atomic_load(&max_handler_depth), 1);
    for (int i = 0; i < MANY_TRIGGERS; i++)
        close_all((MojoHandle[]){w[i], r[i]}, 2);
    assert_int_equal(event_count(), 2 * MANY_TRIGGERS);
}

/*
 * Ping-pong across two threads. Each side's trap handler (which runs on the
 * other side's thread, inside its write) reads the message, re-arms, and
 * hands the value to its side's thread, which checks it and replies.
 */
#define PING_PONG_ROUND_TRIPS 10000
#define MAILBOX_TIMEOUT_SEC 30

struct mailbox {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool full;
    uint32_t value;
};

static struct mailbox boxes[2];
static MojoHandle pp_end[2];
static MojoHandle pp_trap[2];
static atomic_int pp_errors;
static atomic_uint pp_events;

static void mailbox_init(struct mailbox *box)
{
    pthread_mutex_init(&box->lock, NULL);
    pthread_cond_init(&box->cond, NULL);
    box->full = false;
    box->value = 0;
}

static void mailbox_destroy(struct mailbox *box)
{
    pthread_cond_destroy(&box->cond);
    pthread_mutex_destroy(&box->lock);
}

static void mailbox_put(struct mailbox *box, uint32_t value)
{
    pthread_mutex_lock(&box->lock);
    if (box->full)
        atomic_fetch_add(&pp_errors, 1); /* ping-pong: one message in flight */
    box->full = true;
    box->value = value;
    pthread_cond_signal(&box->cond);
    pthread_mutex_unlock(&box->lock);
}

static bool mailbox_take(struct mailbox *box, uint32_t *value)
{
    struct timespec deadline;
    bool ok = true;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += MAILBOX_TIMEOUT_SEC;
    pthread_mutex_lock(&box->lock);
    while (!box->full && ok)
        ok = pthread_cond_timedwait(&box->cond, &box->lock, &deadline) != ETIMEDOUT;
    if (box->full) {
        *value = box->value;
        box->full = false;
        ok = true;
    }
    pthread_mutex_unlock(&box->lock);
    return ok;
}

static void ping_pong_handler(const struct MojoTrapEvent *ev)
{
    size_t side = ev->trigger_context - 1;
    uint32_t value;

    if (ev->result == MOJO_RESULT_CANCELLED)
        return;
    atomic_fetch_add(&pp_events, 1);
    if (ev->result != OK || side > 1) {
        atomic_fetch_add(&pp_errors, 1);
        return;
    }
    if (cmojo_test_read_u32(pp_end[side], &value) != OK) {
        atomic_fetch_add(&pp_errors, 1);
        return;
    }
    /* Before the hand-off: the reply cannot arrive until the thread has it. */
    if (MojoArmTrap(pp_trap[side], NULL, NULL, NULL) != OK)
        atomic_fetch_add(&pp_errors, 1);
    mailbox_put(&boxes[side], value);
}

static void *ping_thread(void *arg)
{
    (void)arg;
    for (uint32_t i = 0; i < PING_PONG_ROUND_TRIPS; i++) {
        uint32_t reply;
        if (cmojo_test_write_u32(pp_end[0], i) != OK || !mailbox_take(&boxes[0], &reply)) {
            atomic_fetch_add(&pp_errors, 1);
            break;
        }
        if (reply != i)
            atomic_fetch_add(&pp_errors, 1);
    }
    return NULL;
}

static void *pong_thread(void *arg)
{
    (void)arg;
    for (uint32_t i = 0; i < PING_PONG_ROUND_TRIPS; i++) {
        uint32_t ping;
        if (!mailbox_take(&boxes[1], &ping)) {
            atomic_fetch_add(&pp_errors, 1);
            break;
        }
        if (ping != i)
            atomic_fetch_add(&pp_errors, 1);
        if (cmojo_test_write_u32(pp_end[1], ping) != OK) {
            atomic_fetch_add(&pp_errors, 1);
            break;
        }
    }
    return NULL;
}

static void test_ping_pong_between_two_threads_through_traps(void **state)
{
    (void)state;
    pthread_t ping, pong;

    cmojo_test_make_pipe(&pp_end[0], &pp_end[1]);
    atomic_store(&pp_errors, 0);
    atomic_store(&pp_events, 0);
    for (int side = 0; side < 2; side++) {
        mailbox_init(&boxes[side]);
        assert_int_equal(MojoCreateTrap(ping_pong_handler, NULL, &pp_trap[side]), OK);
        add_trigger(pp_trap[side], pp_end[side], READABLE, SATISFIED, (uintptr_t)side + 1);
        assert_int_equal(arm(pp_trap[side]), OK);
    }
    assert_int_equal(pthread_create(&pong, NULL, pong_thread, NULL), 0);
    assert_int_equal(pthread_create(&ping, NULL, ping_thread, NULL), 0);
    assert_int_equal(pthread_join(ping, NULL), 0);
    assert_int_equal(pthread_join(pong, NULL), 0);

    assert_int_equal(atomic_load(&pp_errors), 0);
    assert_int_equal(atomic_load(&pp_events), 2 * PING_PONG_ROUND_TRIPS);
    close_all((MojoHandle[]){pp_trap[0], pp_trap[1], pp_end[0], pp_end[1]}, 4);
    for (int side = 0; side < 2; side++)
        mailbox_destroy(&boxes[side]);
}

/*
 * The same on one thread with handlers that reply directly: every event is
 * raised inside a handler, so each must wait for the running one to return.
 */
#define DIRECT_ROUND_TRIPS 200

static MojoHandle dr_end[2], dr_trap[2];
static uint32_t dr_round_trips;
static atomic_int dr_errors;

static void reply_directly(const struct MojoTrapEvent *ev)
{
    size_t side = ev->trigger_context - 1;
    uint32_t value;

    if (ev->result == MOJO_RESULT_CANCELLED)
        return;
    if (ev->result != OK || side > 1 || cmojo_test_read_u32(dr_end[side], &value) != OK) {
        atomic_fetch_add(&dr_errors, 1);
        return;
    }
    if (side == 1) { /* pong: echo */
        if (MojoArmTrap(dr_trap[1], NULL, NULL, NULL) != OK ||
            cmojo_test_write_u32(dr_end[1], value) != OK)
            atomic_fetch_add(&dr_errors, 1);
        return;
    }
    if (value != dr_round_trips) /* ping: the echo of the latest ping */
        atomic_fetch_add(&dr_errors, 1);
    dr_round_trips++;
    if (dr_round_trips == DIRECT_ROUND_TRIPS)
        return;
    if (MojoArmTrap(dr_trap[0], NULL, NULL, NULL) != OK ||
        cmojo_test_write_u32(dr_end[0], dr_round_trips) != OK)
        atomic_fetch_add(&dr_errors, 1);
}

static void test_handlers_replying_directly_never_reenter_their_trigger(void **state)
{
    (void)state;
    MojoHandle trap0 = make_trap(), trap1 = make_trap();

    cmojo_test_make_pipe(&dr_end[0], &dr_end[1]);
    dr_trap[0] = trap0;
    dr_trap[1] = trap1;
    dr_round_trips = 0;
    atomic_store(&dr_errors, 0);
    on_event = reply_directly;
    for (int side = 0; side < 2; side++) {
        add_trigger(dr_trap[side], dr_end[side], READABLE, SATISFIED, (uintptr_t)side + 1);
        assert_int_equal(arm(dr_trap[side]), OK);
    }
    write_in_main(dr_end[0], 0);

    /* Local events are all delivered on this thread before the write returns. */
    assert_int_equal(atomic_load(&dr_errors), 0);
    assert_int_equal(dr_round_trips, DIRECT_ROUND_TRIPS);
    assert_int_equal(atomic_load(&ctx_max_running[1]), 1);
    assert_int_equal(atomic_load(&ctx_max_running[2]), 1);
    close_all((MojoHandle[]){trap0, trap1, dr_end[0], dr_end[1]}, 4);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_create_trap_rejects_null_handler_or_null_out),
        T(test_create_trap_rejects_malformed_options),
        T(test_new_trap_is_disarmed),
        T(test_add_trigger_rejects_a_trap_handle_that_is_not_a_trap),
        T(test_add_trigger_rejects_an_invalid_watched_handle),
        T(test_add_trigger_rejects_watching_a_trap),
        T(test_add_trigger_rejects_an_unknown_condition),
        T(test_add_trigger_rejects_malformed_options),
        T(test_add_trigger_rejects_a_duplicate_context),
        T(test_add_trigger_rejects_a_second_trigger_on_the_same_handle),
        T(test_add_trigger_on_a_handle_in_transit_is_busy),
        T(test_add_trigger_to_an_armed_trap_fires_at_once_if_its_condition_holds),
        T(test_add_trigger_to_an_armed_trap_reports_a_condition_that_can_never_hold),
        T(test_arm_trap_without_triggers_is_not_found),
        T(test_arm_trap_rejects_a_non_trap_and_malformed_options),
        T(test_arm_trap_reports_blocking_events_and_stays_disarmed),
        T(test_arm_trap_with_a_null_count_only_reports_the_failure),
        T(test_arm_trap_with_a_zero_count_and_no_array_reports_no_events),
        T(test_arm_trap_rejects_a_count_without_an_array),
        T(test_arm_trap_rotates_blocking_events_round_robin),
        T(test_armed_trap_fires_once_inside_the_write_on_the_writers_thread),
        T(test_trap_disarms_on_firing_until_rearmed),
        T(test_closing_the_peer_fires_failed_precondition_for_readable),
        T(test_unsatisfied_condition_fires_when_the_last_message_is_read),
        T(test_peer_closed_trigger_fires_ok_when_the_peer_closes),
        T(test_remove_trigger_delivers_one_cancelled_event_even_when_disarmed),
        T(test_remove_trigger_rejects_unknown_context_non_trap_and_bad_options),
        T(test_closing_a_watched_handle_cancels_only_its_trigger),
        T(test_closing_the_trap_cancels_every_trigger),
        T(test_cancelled_follows_failed_precondition_and_is_last),
        T(test_handler_may_read_the_message_that_fired_it),
        T(test_handler_may_rearm_its_trap),
        T(test_handler_may_close_the_handle_that_fired),
        T(test_handler_may_close_its_own_trap),
        T(test_handler_may_remove_its_own_trigger),
        T(test_a_removed_trigger_gets_no_event_that_was_already_queued),
        T(test_event_raised_inside_a_handler_waits_until_it_returns),
        T(test_handler_calls_for_one_trigger_never_overlap_across_threads),
        T(test_cancelled_waits_for_a_handler_running_on_another_thread),
        T(test_cancelled_stays_last_when_removal_races_events),
        T(test_closing_traps_with_many_triggers_cancels_each_once),
        T(test_ping_pong_between_two_threads_through_traps),
        T(test_handlers_replying_directly_never_reenter_their_trigger),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
