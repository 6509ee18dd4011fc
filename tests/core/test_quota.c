/*
 * Quotas on message pipe ends (MojoSetQuota, MojoQueryQuota) and the
 * MOJO_HANDLE_SIGNAL_QUOTA_EXCEEDED signal they raise, in one process.
 *
 * A quota is exceeded when usage > limit (strictly). RECEIVE_QUEUE_LENGTH and
 * RECEIVE_QUEUE_MEMORY_SIZE measure what waits unread at the end they are set
 * on; UNREAD_MESSAGE_COUNT is set on the writing end and counts messages its
 * peer has not acknowledged reading, with acknowledgements requested every
 * (limit + 1) / 2 messages (processed at once when the reader is local).
 *
 * Every test starts from a freshly initialized library and must end with no
 * handle and no message object left.
 */
#include "cmojo_test.h"

#include <stdio.h>
#include <string.h>

#include "cmojo/wait.h"
#include "core/core.h"
#include "mojo/public/c/system/core.h"

/* ------------------------------------------------------------------ fixtures */

/* ------------------------------------------------------------------ helpers */

#define SENTINEL_U64 UINT64_C(0x5a5a5a5a5a5a5a5a)

#define LENGTH MOJO_QUOTA_TYPE_RECEIVE_QUEUE_LENGTH
#define MEMORY MOJO_QUOTA_TYPE_RECEIVE_QUEUE_MEMORY_SIZE
#define UNREAD MOJO_QUOTA_TYPE_UNREAD_MESSAGE_COUNT

static const struct MojoAppendMessageDataOptions commit_opts = {
    sizeof(struct MojoAppendMessageDataOptions), MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE};

/* Writes a message of num_bytes bytes (and no handles) to h. */
static void write_bytes(MojoHandle h, uint32_t num_bytes)
{
    MojoMessageHandle m = MOJO_MESSAGE_HANDLE_INVALID;
    void *buf = NULL;

    assert_int_equal(MojoCreateMessage(NULL, &m), MOJO_RESULT_OK);
    assert_int_equal(MojoAppendMessageData(m, num_bytes, NULL, 0, &commit_opts, &buf, NULL),
                     MOJO_RESULT_OK);
    if (num_bytes)
        memset(buf, 0x33, num_bytes);
    assert_int_equal(MojoWriteMessage(h, m, NULL), MOJO_RESULT_OK);
}

static void write_n(MojoHandle h, int count)
{
    for (int i = 0; i < count; i++)
        write_bytes(h, 1);
}

/* Reads and destroys one message from h; returns its payload size. */
static uint32_t read_one(MojoHandle h)
{
    MojoMessageHandle m = MOJO_MESSAGE_HANDLE_INVALID;
    void *buf = NULL;
    uint32_t n = 0;

    assert_int_equal(MojoReadMessage(h, NULL, &m), MOJO_RESULT_OK);
    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    return n;
}

static void read_n(MojoHandle h, int count)
{
    for (int i = 0; i < count; i++)
        read_one(h);
}

static void set_quota(MojoHandle h, MojoQuotaType type, uint64_t limit)
{
    assert_int_equal(MojoSetQuota(h, type, limit, NULL), MOJO_RESULT_OK);
}

static uint64_t usage_of(MojoHandle h, MojoQuotaType type)
{
    uint64_t limit = SENTINEL_U64, usage = SENTINEL_U64;
    assert_int_equal(MojoQueryQuota(h, type, NULL, &limit, &usage), MOJO_RESULT_OK);
    assert_true(usage != SENTINEL_U64);
    return usage;
}

static uint64_t limit_of(MojoHandle h, MojoQuotaType type)
{
    uint64_t limit = SENTINEL_U64, usage = SENTINEL_U64;
    assert_int_equal(MojoQueryQuota(h, type, NULL, &limit, &usage), MOJO_RESULT_OK);
    return limit;
}

static struct MojoHandleSignalsState query(MojoHandle h)
{
    struct MojoHandleSignalsState s = {0, 0};
    assert_int_equal(MojoQueryHandleSignalsState(h, &s), MOJO_RESULT_OK);
    return s;
}

static void expect_exceeded(MojoHandle h)
{
    struct MojoHandleSignalsState s = query(h);
    assert_true(s.satisfied_signals & MOJO_HANDLE_SIGNAL_QUOTA_EXCEEDED);
    assert_true(s.satisfiable_signals & MOJO_HANDLE_SIGNAL_QUOTA_EXCEEDED);
}

static void expect_not_exceeded(MojoHandle h)
{
    struct MojoHandleSignalsState s = query(h);
    assert_false(s.satisfied_signals & MOJO_HANDLE_SIGNAL_QUOTA_EXCEEDED);
    assert_true(s.satisfiable_signals & MOJO_HANDLE_SIGNAL_QUOTA_EXCEEDED);
}

static void trap_handler(const struct MojoTrapEvent *event)
{
    (void)event;
}

/* ------------------------------------------------------- set and query */

static void test_every_quota_defaults_to_no_limit_and_zero_usage(void **state)
{
    (void)state;
    MojoHandle a, b;
    const MojoQuotaType types[] = {LENGTH, MEMORY, UNREAD};

    cmojo_test_make_pipe(&a, &b);
    for (size_t i = 0; i < 3; i++) {
        uint64_t limit = 0, usage = SENTINEL_U64;
        assert_int_equal(MojoQueryQuota(a, types[i], NULL, &limit, &usage), MOJO_RESULT_OK);
        assert_true(limit == MOJO_QUOTA_LIMIT_NONE);
        assert_true(usage == 0);
    }
    expect_not_exceeded(a);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_set_limit_is_reported_by_query(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    set_quota(a, LENGTH, 7);
    set_quota(a, MEMORY, 4096);
    set_quota(a, UNREAD, 100);
    assert_true(limit_of(a, LENGTH) == 7);
    assert_true(limit_of(a, MEMORY) == 4096);
    assert_true(limit_of(a, UNREAD) == 100);
    /* Per end: the peer's quotas are untouched. */
    assert_true(limit_of(b, LENGTH) == MOJO_QUOTA_LIMIT_NONE);
    assert_true(limit_of(b, MEMORY) == MOJO_QUOTA_LIMIT_NONE);
    assert_true(limit_of(b, UNREAD) == MOJO_QUOTA_LIMIT_NONE);
    /* Setting again replaces; NONE removes. */
    set_quota(a, LENGTH, 9);
    assert_true(limit_of(a, LENGTH) == 9);
    set_quota(a, LENGTH, MOJO_QUOTA_LIMIT_NONE);
    assert_true(limit_of(a, LENGTH) == MOJO_QUOTA_LIMIT_NONE);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_query_accepts_null_outputs(void **state)
{
    (void)state;
    MojoHandle a, b;
    uint64_t v = SENTINEL_U64;

    cmojo_test_make_pipe(&a, &b);
    set_quota(b, LENGTH, 3);
    write_n(a, 2);
    assert_int_equal(MojoQueryQuota(b, LENGTH, NULL, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(MojoQueryQuota(b, LENGTH, NULL, &v, NULL), MOJO_RESULT_OK);
    assert_true(v == 3);
    v = SENTINEL_U64;
    assert_int_equal(MojoQueryQuota(b, LENGTH, NULL, NULL, &v), MOJO_RESULT_OK);
    assert_true(v == 2);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

/* -------------------------------------------------- RECEIVE_QUEUE_LENGTH */

static void test_receive_queue_length_usage_counts_queued_messages(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    assert_true(usage_of(b, LENGTH) == 0);
    write_n(a, 3);
    assert_true(usage_of(b, LENGTH) == 3);
    assert_true(usage_of(a, LENGTH) == 0); /* the writer's queue is empty */
    read_one(b);
    assert_true(usage_of(b, LENGTH) == 2);
    read_n(b, 2);
    assert_true(usage_of(b, LENGTH) == 0);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_receive_queue_length_exceeded_only_above_limit(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    set_quota(b, LENGTH, 2);
    expect_not_exceeded(b);
    write_n(a, 1);
    expect_not_exceeded(b);
    write_n(a, 1); /* usage == limit: not exceeded */
    expect_not_exceeded(b);
    write_n(a, 1); /* usage 3 > 2 */
    expect_exceeded(b);
    expect_not_exceeded(a); /* only the end the quota is set on */
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_reading_below_queue_length_limit_clears_the_signal(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    set_quota(b, LENGTH, 2);
    write_n(a, 4);
    expect_exceeded(b);
    read_one(b); /* 3 left */
    expect_exceeded(b);
    read_one(b); /* 2 left */
    expect_not_exceeded(b);
    write_n(a, 1);
    expect_exceeded(b);
    read_n(b, 3);
    expect_not_exceeded(b);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_zero_length_limit_is_exceeded_by_one_message(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    set_quota(b, LENGTH, 0);
    expect_not_exceeded(b); /* 0 > 0 is false */
    write_n(a, 1);
    expect_exceeded(b);
    read_one(b);
    expect_not_exceeded(b);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_limit_below_current_usage_raises_the_signal_at_once(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    write_n(a, 5);
    expect_not_exceeded(b);
    set_quota(b, LENGTH, 5);
    expect_not_exceeded(b);
    set_quota(b, LENGTH, 4);
    expect_exceeded(b);
    assert_true(usage_of(b, LENGTH) == 5);
    /* Raising the limit clears it again. */
    set_quota(b, LENGTH, 10);
    expect_not_exceeded(b);
    read_n(b, 5);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_limit_none_clears_the_signal(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    set_quota(b, LENGTH, 1);
    write_n(a, 3);
    expect_exceeded(b);
    set_quota(b, LENGTH, MOJO_QUOTA_LIMIT_NONE);
    expect_not_exceeded(b);
    write_n(a, 50);
    expect_not_exceeded(b);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

/* A quota only signals; it never refuses a message. */
static void test_exceeded_quota_refuses_nothing(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    set_quota(b, LENGTH, 0);
    set_quota(b, MEMORY, 0);
    set_quota(a, UNREAD, 0);
    write_n(a, 10);
    expect_exceeded(b);
    expect_exceeded(a);
    assert_true(usage_of(b, LENGTH) == 10);
    read_n(b, 10);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_quota_signal_is_seen_by_mojo_wait(void **state)
{
    (void)state;
    MojoHandle a, b;
    struct MojoHandleSignalsState s = {0, 0};

    cmojo_test_make_pipe(&a, &b);
    set_quota(b, LENGTH, 1);
    write_n(a, 1);
    assert_int_equal(MojoWait(b, MOJO_HANDLE_SIGNAL_QUOTA_EXCEEDED, 0, NULL),
                     MOJO_RESULT_DEADLINE_EXCEEDED);
    write_n(a, 1);
    assert_int_equal(MojoWait(b, MOJO_HANDLE_SIGNAL_QUOTA_EXCEEDED, 0, &s), MOJO_RESULT_OK);
    assert_true(s.satisfied_signals & MOJO_HANDLE_SIGNAL_QUOTA_EXCEEDED);
    read_n(b, 2);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_exceeded_quota_stays_after_peer_closes(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    set_quota(b, LENGTH, 1);
    write_n(a, 2);
    cmojo_test_close_ok(a);
    struct MojoHandleSignalsState s = query(b);
    assert_int_equal(s.satisfied_signals, MOJO_HANDLE_SIGNAL_READABLE |
                                              MOJO_HANDLE_SIGNAL_PEER_CLOSED |
                                              MOJO_HANDLE_SIGNAL_QUOTA_EXCEEDED);
    read_one(b);
    expect_not_exceeded(b);
    cmojo_test_close_ok(b);
}

/* --------------------------------------------- RECEIVE_QUEUE_MEMORY_SIZE */

static void test_receive_queue_memory_usage_counts_payload_bytes(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    write_bytes(a, 3);
    write_bytes(a, 7);
    write_bytes(a, 0);
    assert_true(usage_of(b, MEMORY) == 10);
    assert_int_equal(read_one(b), 3);
    assert_true(usage_of(b, MEMORY) == 7);
    read_n(b, 2);
    assert_true(usage_of(b, MEMORY) == 0);
    write_bytes(a, 65536);
    assert_true(usage_of(b, MEMORY) == 65536);
    read_one(b);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_receive_queue_memory_exceeded_only_above_limit(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    set_quota(b, MEMORY, 10);
    write_bytes(a, 4);
    write_bytes(a, 6); /* exactly 10 */
    expect_not_exceeded(b);
    write_bytes(a, 1); /* 11 > 10 */
    expect_exceeded(b);
    read_one(b); /* 7 left */
    expect_not_exceeded(b);
    read_n(b, 2);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_one_large_message_exceeds_memory_limit(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    set_quota(b, MEMORY, 1024);
    set_quota(b, LENGTH, 1);
    write_bytes(a, 1025);
    expect_exceeded(b); /* by memory: one message does not exceed the length quota */
    set_quota(b, MEMORY, 1025);
    expect_not_exceeded(b);
    read_one(b);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

/* ------------------------------------------------- UNREAD_MESSAGE_COUNT */

static void test_unread_count_exceeded_on_writer_above_limit(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    set_quota(a, UNREAD, 3);
    write_n(a, 3);
    expect_not_exceeded(a);
    assert_true(usage_of(a, UNREAD) == 3);
    write_n(a, 1);
    expect_exceeded(a);
    assert_true(usage_of(a, UNREAD) == 4);
    expect_not_exceeded(b); /* the reader has no quota */
    read_n(b, 4);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

/* Limit 3: acks are requested every (3 + 1) / 2 = 2 messages. */
static void test_unread_count_drops_as_the_reader_reads(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    set_quota(a, UNREAD, 3);
    write_n(a, 4);
    expect_exceeded(a);
    uint64_t before = usage_of(a, UNREAD);
    assert_true(before == 4);

    read_one(b); /* message 1: no ack requested for it */
    assert_true(usage_of(a, UNREAD) == 4);
    expect_exceeded(a);
    read_one(b); /* message 2 is acknowledged at once */
    assert_true(usage_of(a, UNREAD) == 2);
    expect_not_exceeded(a);
    read_n(b, 2); /* message 4 acknowledged too */
    assert_true(usage_of(a, UNREAD) == 0);
    expect_not_exceeded(a);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_unread_count_keeps_working_over_many_rounds(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    set_quota(a, UNREAD, 5); /* acks every 3 */
    for (int round = 0; round < 20; round++) {
        write_n(a, 6);
        expect_exceeded(a);
        read_n(b, 6);
        assert_true(usage_of(a, UNREAD) == 0);
        expect_not_exceeded(a);
    }
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_unread_count_set_after_peer_read_everything_is_zero(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    write_n(a, 5);
    read_n(b, 5);
    set_quota(a, UNREAD, 3);
    assert_true(usage_of(a, UNREAD) == 0);
    expect_not_exceeded(a);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_unread_count_limit_none_clears_the_signal(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    set_quota(a, UNREAD, 1);
    write_n(a, 3);
    expect_exceeded(a);
    set_quota(a, UNREAD, MOJO_QUOTA_LIMIT_NONE);
    expect_not_exceeded(a);
    assert_true(limit_of(a, UNREAD) == MOJO_QUOTA_LIMIT_NONE);
    read_n(b, 3);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_unread_count_is_not_raised_by_received_messages(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    set_quota(b, UNREAD, 1);
    write_n(a, 5); /* b receives, sends nothing */
    expect_not_exceeded(b);
    assert_true(usage_of(b, UNREAD) == 0);
    read_n(b, 5);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

/* ---------------------------------------------------------------- refusals */

static void test_unknown_quota_type_is_invalid_argument(void **state)
{
    (void)state;
    MojoHandle a, b;
    uint64_t limit = SENTINEL_U64, usage = SENTINEL_U64;

    cmojo_test_make_pipe(&a, &b);
    assert_int_equal(MojoSetQuota(a, 3, 10, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoSetQuota(a, 0xffffffffu, 10, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoQueryQuota(a, 3, NULL, &limit, &usage), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoQueryQuota(a, 0xffffffffu, NULL, &limit, &usage),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_true(limit == SENTINEL_U64);
    assert_true(usage == SENTINEL_U64);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_quota_on_non_pipe_handle_is_invalid_argument(void **state)
{
    (void)state;
    MojoHandle trap = MOJO_HANDLE_INVALID;
    uint64_t limit = SENTINEL_U64, usage = SENTINEL_U64;

    assert_int_equal(MojoCreateTrap(trap_handler, NULL, &trap), MOJO_RESULT_OK);
    assert_int_equal(MojoSetQuota(trap, LENGTH, 1, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoQueryQuota(trap, LENGTH, NULL, &limit, &usage),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_true(limit == SENTINEL_U64);
    assert_true(usage == SENTINEL_U64);
    cmojo_test_close_ok(trap);
}

static void test_quota_on_invalid_handle_is_invalid_argument(void **state)
{
    (void)state;
    MojoHandle a, b;
    uint64_t limit = SENTINEL_U64, usage = SENTINEL_U64;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_close_ok(b);
    assert_int_equal(MojoSetQuota(MOJO_HANDLE_INVALID, LENGTH, 1, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoSetQuota(b, LENGTH, 1, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoSetQuota((MojoHandle)0x7fffff01, UNREAD, 1, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoQueryQuota(MOJO_HANDLE_INVALID, LENGTH, NULL, &limit, &usage),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoQueryQuota(b, MEMORY, NULL, &limit, &usage), MOJO_RESULT_INVALID_ARGUMENT);
    assert_true(limit == SENTINEL_U64);
    assert_true(usage == SENTINEL_U64);
    cmojo_test_close_ok(a);
}

static void test_quota_on_in_transit_handle_is_busy(void **state)
{
    (void)state;
    MojoHandle a, b;
    MojoMessageHandle m = MOJO_MESSAGE_HANDLE_INVALID;
    uint64_t limit = SENTINEL_U64, usage = SENTINEL_U64;

    cmojo_test_make_pipe(&a, &b);
    assert_int_equal(MojoCreateMessage(NULL, &m), MOJO_RESULT_OK);
    assert_int_equal(MojoAppendMessageData(m, 0, &a, 1, NULL, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(MojoSetQuota(a, LENGTH, 1, NULL), MOJO_RESULT_BUSY);
    assert_int_equal(MojoQueryQuota(a, LENGTH, NULL, &limit, &usage), MOJO_RESULT_BUSY);
    assert_true(limit == SENTINEL_U64);
    assert_true(usage == SENTINEL_U64);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    cmojo_test_close_ok(b);
}

static void test_quota_functions_reject_malformed_options(void **state)
{
    (void)state;
    MojoHandle a, b;
    struct MojoSetQuotaOptions set_small = {4, 0};
    struct MojoSetQuotaOptions set_unknown = {sizeof(set_unknown), 1};
    struct MojoQueryQuotaOptions query_small = {0, 0};
    struct MojoQueryQuotaOptions query_unknown = {sizeof(query_unknown), 0x40};
    uint64_t limit = SENTINEL_U64, usage = SENTINEL_U64;

    cmojo_test_make_pipe(&a, &b);
    assert_int_equal(MojoSetQuota(a, LENGTH, 1, &set_small), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoSetQuota(a, LENGTH, 1, &set_unknown), MOJO_RESULT_INVALID_ARGUMENT);
    assert_true(limit_of(a, LENGTH) == MOJO_QUOTA_LIMIT_NONE); /* nothing was set */
    assert_int_equal(MojoQueryQuota(a, LENGTH, &query_small, &limit, &usage),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoQueryQuota(a, LENGTH, &query_unknown, &limit, &usage),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_true(limit == SENTINEL_U64);
    assert_true(usage == SENTINEL_U64);

    struct MojoSetQuotaOptions set_good = {sizeof(set_good), MOJO_SET_QUOTA_FLAG_NONE};
    struct MojoQueryQuotaOptions query_good = {sizeof(query_good), MOJO_QUERY_QUOTA_FLAG_NONE};
    assert_int_equal(MojoSetQuota(a, LENGTH, 6, &set_good), MOJO_RESULT_OK);
    assert_int_equal(MojoQueryQuota(a, LENGTH, &query_good, &limit, &usage), MOJO_RESULT_OK);
    assert_true(limit == 6);
    assert_true(usage == 0);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, cmojo_core_setup, cmojo_core_teardown)
    const struct CMUnitTest tests[] = {
        T(test_every_quota_defaults_to_no_limit_and_zero_usage),
        T(test_set_limit_is_reported_by_query),
        T(test_query_accepts_null_outputs),
        T(test_receive_queue_length_usage_counts_queued_messages),
        T(test_receive_queue_length_exceeded_only_above_limit),
        T(test_reading_below_queue_length_limit_clears_the_signal),
        T(test_zero_length_limit_is_exceeded_by_one_message),
        T(test_limit_below_current_usage_raises_the_signal_at_once),
        T(test_limit_none_clears_the_signal),
        T(test_exceeded_quota_refuses_nothing),
        T(test_quota_signal_is_seen_by_mojo_wait),
        T(test_exceeded_quota_stays_after_peer_closes),
        T(test_receive_queue_memory_usage_counts_payload_bytes),
        T(test_receive_queue_memory_exceeded_only_above_limit),
        T(test_one_large_message_exceeds_memory_limit),
        T(test_unread_count_exceeded_on_writer_above_limit),
        T(test_unread_count_drops_as_the_reader_reads),
        T(test_unread_count_keeps_working_over_many_rounds),
        T(test_unread_count_set_after_peer_read_everything_is_zero),
        T(test_unread_count_limit_none_clears_the_signal),
        T(test_unread_count_is_not_raised_by_received_messages),
        T(test_unknown_quota_type_is_invalid_argument),
        T(test_quota_on_non_pipe_handle_is_invalid_argument),
        T(test_quota_on_invalid_handle_is_invalid_argument),
        T(test_quota_on_in_transit_handle_is_busy),
        T(test_quota_functions_reject_malformed_options),
    };
#undef T
    return cmocka_run_group_tests_name("quota", tests, NULL, NULL);
}
