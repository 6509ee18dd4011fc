/*
 * Close racing everything: threads share a handful of pipe ends and a trap
 * and, at random, close them, write to them (attaching the other shared
 * handles), read them, query them, watch them and arm the trap, all at once.
 * Ends that travel in messages are put back in their slot by the reader, so
 * handles keep moving between threads and pipes all round.
 * The checks: nothing crashes or trips ASan/TSan; each handle is closed
 * successfully at most once; every call returns one of the results its
 * contract allows; each trigger gets exactly one CANCELLED, and no event
 * after it; when the dust settles no handle, message or port is left.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmojo_test.h"
#include "core/core.h"
#include "mojo/public/c/system/core.h"

#define NUM_THREADS 4
#define NUM_PIPES 3
#define NUM_SHARED (2 * NUM_PIPES)
#define OPS_PER_THREAD 300
#define MAX_CONTEXTS (NUM_THREADS * OPS_PER_THREAD + 1)

#ifndef ROUNDS
#define ROUNDS 1000
#endif

/* Handle values that some MojoClose succeeded on (values are never reused). */
#define CLOSED_SET_SIZE 65536

typedef struct round_state {
    /* A slot's end travels in messages and is put back by whoever reads it. */
    _Atomic(MojoHandle) shared[NUM_SHARED];
    _Atomic(MojoHandle) closed[CLOSED_SET_SIZE];
    atomic_int closes_won[NUM_SHARED]; /* test_exactly_one_close_wins */
    MojoHandle trap;
    atomic_int trap_closes_won;
    atomic_uint next_context;
    /* Per trigger context: added, events, cancelled, events after cancel. */
    atomic_int added[MAX_CONTEXTS];
    atomic_int cancelled[MAX_CONTEXTS];
    atomic_int after_cancel[MAX_CONTEXTS];
    atomic_int writes_ok, carried_ok, reads_ok, events_ok; /* the race did happen */
    atomic_int bad_result; /* first unexpected result, with its op */
    atomic_int bad_op;
} round_state;

static round_state g_round;
static pthread_barrier_t g_start; /* all racers begin together */

static void on_trap_event(const struct MojoTrapEvent *event)
{
    uintptr_t ctx = event->trigger_context;
    if (ctx == 0 || ctx >= MAX_CONTEXTS)
        return;
    if (atomic_load(&g_round.cancelled[ctx]))
        atomic_fetch_add(&g_round.after_cancel[ctx], 1);
    if (event->result == MOJO_RESULT_CANCELLED)
        atomic_fetch_add(&g_round.cancelled[ctx], 1);
    else
        atomic_fetch_add(&g_round.events_ok, 1);
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Records the first result outside the allowed set (a bit set of results). */
static void expect_one_of(int op, MojoResult rv, uint32_t allowed)
{
    if (rv < 32 && (allowed & (1u << rv)))
        return;
    int none = 0;
    if (atomic_compare_exchange_strong(&g_round.bad_op, &none, op))
        atomic_store(&g_round.bad_result, (int)rv);
}

#define R(x) (1u << MOJO_RESULT_##x)

/* Notes that a close of h succeeded; fails the test if one did already. */
static void record_close(MojoHandle h)
{
    for (size_t k = (size_t)(h * 0x9e3779b97f4a7c15ull) % CLOSED_SET_SIZE;;
         k = (k + 1) % CLOSED_SET_SIZE) {
        MojoHandle empty = 0;
        if (atomic_compare_exchange_strong(&g_round.closed[k], &empty, h))
            return;
        if (empty == h)
            fail_msg("handle %#llx closed successfully twice", (unsigned long long)h);
    }
}

/* Writes 8 bytes ("race" + the slot of the attached end, or -1). */
static void write_one(MojoHandle pipe, MojoHandle attach, int32_t slot)
{
    MojoMessageHandle m;
    assert_int_equal(MojoCreateMessage(NULL, &m), MOJO_RESULT_OK);
    void *buf;
    MojoResult rv =
        MojoAppendMessageData(m, 8, attach ? &attach : NULL, attach ? 1 : 0, NULL, &buf, NULL);
    expect_one_of(1, rv, R(OK) | R(INVALID_ARGUMENT) | R(BUSY));
    bool attached = attach && rv == MOJO_RESULT_OK;
    if (rv != MOJO_RESULT_OK) /* the handle was closed, moved or busy: send none */
        rv = MojoAppendMessageData(m, 8, NULL, 0, NULL, &buf, NULL);
    assert_int_equal(rv, MOJO_RESULT_OK);
    if (!attached)
        slot = -1;
    memcpy(buf, "race", 4);
    memcpy((char *)buf + 4, &slot, 4);
    static const struct MojoAppendMessageDataOptions commit = {
        sizeof(commit), MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE};
    assert_int_equal(MojoAppendMessageData(m, 0, NULL, 0, &commit, NULL, NULL), MOJO_RESULT_OK);
    rv = MojoWriteMessage(pipe, m, NULL);
    expect_one_of(2, rv, R(OK) | R(INVALID_ARGUMENT) | R(FAILED_PRECONDITION) | R(BUSY));
    if (rv == MOJO_RESULT_OK) {
        atomic_fetch_add(&g_round.writes_ok, 1);
        if (attached)
            atomic_fetch_add(&g_round.carried_ok, 1);
    }
}

static void read_one(MojoHandle pipe)
{
    MojoMessageHandle m;
    MojoResult rv = MojoReadMessage(pipe, NULL, &m);
    expect_one_of(3, rv,
                  R(OK) | R(INVALID_ARGUMENT) | R(FAILED_PRECONDITION) | R(SHOULD_WAIT) | R(BUSY));
    if (rv != MOJO_RESULT_OK)
        return;
    void *buf;
    uint32_t n, nh = 4;
    MojoHandle hs[4];
    rv = MojoGetMessageData(m, NULL, &buf, &n, hs, &nh);
    assert_int_equal(rv, MOJO_RESULT_OK);
    assert_int_equal(n, 8);
    assert_memory_equal(buf, "race", 4);
    int32_t slot;
    memcpy(&slot, (char *)buf + 4, 4);
    assert_int_equal(nh, slot >= 0 ? 1 : 0);
    if (nh)
        atomic_store(&g_round.shared[slot], hs[0]); /* the end goes home */
    atomic_fetch_add(&g_round.reads_ok, 1);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
}

/* One random operation on shared handle i; r (0..255) picks it, closes rarely. */
static void random_op(uint64_t *seed, int i, unsigned r)
{
    MojoHandle h = atomic_load(&g_round.shared[i]);
    if (r == 0) {
        MojoResult rv = MojoClose(h);
        expect_one_of(4, rv, R(OK) | R(INVALID_ARGUMENT) | R(BUSY));
        if (rv == MOJO_RESULT_OK)
            record_close(h);
    } else if (r <= 90) {
        /*
         * Only ends of later pipes travel through earlier ones. An end queued
         * inside a pipe whose own end is queued inside it would be a cycle no
         * close can reach (Mojo leaks those too).
         */
        int j = (int)(splitmix(seed) % (NUM_SHARED + 1));
        if (j < NUM_SHARED && j / 2 > i / 2)
            write_one(h, atomic_load(&g_round.shared[j]), j);
        else
            write_one(h, 0, -1);
    } else if (r <= 160) {
        read_one(h);
    } else if (r <= 190) {
        struct MojoHandleSignalsState st;
        expect_one_of(5, MojoQueryHandleSignalsState(h, &st),
                      R(OK) | R(INVALID_ARGUMENT) | R(BUSY));
    } else if (r <= 220) {
        uintptr_t ctx = atomic_fetch_add(&g_round.next_context, 1);
        MojoResult rv = MojoAddTrigger(g_round.trap, h, MOJO_HANDLE_SIGNAL_READABLE,
                                       MOJO_TRIGGER_CONDITION_SIGNALS_SATISFIED, ctx, NULL);
        expect_one_of(6, rv, R(OK) | R(INVALID_ARGUMENT) | R(ALREADY_EXISTS) | R(BUSY));
        if (rv == MOJO_RESULT_OK)
            atomic_store(&g_round.added[ctx], 1);
    } else if (r <= 240) {
        uint32_t n = 2;
        struct MojoTrapEvent events[2];
        expect_one_of(7, MojoArmTrap(g_round.trap, NULL, &n, events),
                      R(OK) | R(NOT_FOUND) | R(FAILED_PRECONDITION) | R(INVALID_ARGUMENT));
    } else {
        uintptr_t ctx = 1 + splitmix(seed) % atomic_load(&g_round.next_context);
        expect_one_of(8, MojoRemoveTrigger(g_round.trap, ctx, NULL),
                      R(OK) | R(NOT_FOUND) | R(INVALID_ARGUMENT));
        if (splitmix(seed) % 64 == 0 && MojoClose(g_round.trap) == MOJO_RESULT_OK)
            atomic_fetch_add(&g_round.trap_closes_won, 1);
    }
}

static void *racer(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg;
    pthread_barrier_wait(&g_start);
    for (int op = 0; op < OPS_PER_THREAD; op++) {
        int i = (int)(splitmix(&seed) % NUM_SHARED);
        random_op(&seed, i, (unsigned)(splitmix(&seed) % 256));
    }
    return NULL;
}

static void run_round(uint64_t seed)
{
    memset(&g_round, 0, sizeof(g_round));
    atomic_store(&g_round.next_context, 1);
    for (int p = 0; p < NUM_PIPES; p++) {
        MojoHandle a, b;
        assert_int_equal(MojoCreateMessagePipe(NULL, &a, &b), MOJO_RESULT_OK);
        atomic_store(&g_round.shared[2 * p], a);
        atomic_store(&g_round.shared[2 * p + 1], b);
    }
    assert_int_equal(MojoCreateTrap(on_trap_event, NULL, &g_round.trap), MOJO_RESULT_OK);

    pthread_t threads[NUM_THREADS];
    pthread_barrier_init(&g_start, NULL, NUM_THREADS);
    for (uintptr_t t = 0; t < NUM_THREADS; t++)
        assert_int_equal(pthread_create(&threads[t], NULL, racer, (void *)(seed * 16 + t + 1)), 0);
    for (int t = 0; t < NUM_THREADS; t++)
        assert_int_equal(pthread_join(threads[t], NULL), 0);
    pthread_barrier_destroy(&g_start);

    if (atomic_load(&g_round.bad_op))
        fail_msg("op %d returned unexpected result %d", atomic_load(&g_round.bad_op),
                 atomic_load(&g_round.bad_result));

    /* Settle: close what is left; a handle sent away is gone already. */
    for (int i = 0; i < NUM_SHARED; i++) {
        MojoHandle h = atomic_load(&g_round.shared[i]);
        MojoResult rv = MojoClose(h);
        assert_true(rv == MOJO_RESULT_OK || rv == MOJO_RESULT_INVALID_ARGUMENT);
        if (rv == MOJO_RESULT_OK)
            record_close(h);
    }
    if (MojoClose(g_round.trap) == MOJO_RESULT_OK)
        atomic_fetch_add(&g_round.trap_closes_won, 1);
    assert_int_equal(atomic_load(&g_round.trap_closes_won), 1);

    /* Pipes that carried ends may still hold messages: nothing may be left. */
    assert_int_equal(core_debug_handle_count(), 0);
    assert_int_equal(core_debug_message_count(), 0);
    assert_int_equal(core_debug_port_count(), 0);

    for (unsigned ctx = 1; ctx < atomic_load(&g_round.next_context); ctx++) {
        if (!atomic_load(&g_round.added[ctx]))
            continue;
        if (atomic_load(&g_round.cancelled[ctx]) != 1)
            fail_msg("trigger %u: %d CANCELLED events", ctx, atomic_load(&g_round.cancelled[ctx]));
        assert_int_equal(atomic_load(&g_round.after_cancel[ctx]), 0);
    }
}

static void test_close_races_every_operation(void **state)
{
    (void)state;
    int writes = 0, carried = 0, reads = 0, events = 0;
    for (uint64_t round = 0; round < ROUNDS; round++) {
        run_round(round + 1);
        writes += atomic_load(&g_round.writes_ok);
        carried += atomic_load(&g_round.carried_ok);
        reads += atomic_load(&g_round.reads_ok);
        events += atomic_load(&g_round.events_ok);
    }
    /* The operations really overlapped with live handles, not only dead ones. */
    print_message("%d writes (%d carrying a handle), %d reads, %d trap events\n", writes, carried,
                  reads, events);
    assert_true(writes > ROUNDS * 10);
    assert_true(carried > ROUNDS);
    assert_true(reads > ROUNDS * 5);
    assert_true(events > ROUNDS / 4);
}

/* Two threads close the same handles at once: exactly one wins each. */
static void *closer(void *arg)
{
    MojoHandle *hs = arg;
    for (int i = 0; i < 64; i++)
        if (MojoClose(hs[i]) == MOJO_RESULT_OK)
            atomic_fetch_add(&g_round.closes_won[0], 1);
    return NULL;
}

static void test_exactly_one_close_wins(void **state)
{
    (void)state;
    for (int round = 0; round < 50; round++) {
        MojoHandle hs[64];
        for (int i = 0; i < 64; i += 2)
            assert_int_equal(MojoCreateMessagePipe(NULL, &hs[i], &hs[i + 1]), MOJO_RESULT_OK);
        atomic_store(&g_round.closes_won[0], 0);
        pthread_t a, b;
        assert_int_equal(pthread_create(&a, NULL, closer, hs), 0);
        assert_int_equal(pthread_create(&b, NULL, closer, hs), 0);
        pthread_join(a, NULL);
        pthread_join(b, NULL);
        assert_int_equal(atomic_load(&g_round.closes_won[0]), 64);
        assert_int_equal(core_debug_handle_count(), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_close_races_every_operation, cmojo_core_setup,
                                        cmojo_core_teardown),
        cmocka_unit_test_setup_teardown(test_exactly_one_close_wins, cmojo_core_setup,
                                        cmojo_core_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
