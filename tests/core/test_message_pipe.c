/*
 * Message pipes through the public C API in one process: create, write,
 * read, close, handles carried in messages, MojoFuseMessagePipes, and the
 * signals MojoQueryHandleSignalsState reports.
 *
 * Every test starts from a freshly initialized library and must end with no
 * handle and no message object left (the fixture checks
 * core_debug_handle_count() and core_debug_message_count(), then shuts down
 * and checks that no fd leaked).
 */
#include "cmojo_test.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmojo/wait.h"
#include "core/core.h"
#include "mojo/public/c/system/core.h"

/* ------------------------------------------------------------------ fixtures */

/* ------------------------------------------------------------------ helpers */

#define SENTINEL_HANDLE ((MojoHandle)0x7a7a7a7a)
#define SENTINEL_MESSAGE ((MojoMessageHandle)0x5a5a5a5a)
#define SENTINEL_U32 0xdeadbeefu

#define ALL_PIPE_SIGNALS                                                                           \
    (MOJO_HANDLE_SIGNAL_READABLE | MOJO_HANDLE_SIGNAL_WRITABLE | MOJO_HANDLE_SIGNAL_PEER_CLOSED |  \
     MOJO_HANDLE_SIGNAL_PEER_REMOTE | MOJO_HANDLE_SIGNAL_QUOTA_EXCEEDED)

static const struct MojoAppendMessageDataOptions commit_opts = {
    sizeof(struct MojoAppendMessageDataOptions), MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE};

static void expect_nothing_to_read(MojoHandle h)
{
    MojoMessageHandle m = SENTINEL_MESSAGE;
    assert_int_equal(MojoReadMessage(h, NULL, &m), MOJO_RESULT_SHOULD_WAIT);
    assert_true(m == SENTINEL_MESSAGE);
}

static void expect_read_peer_closed(MojoHandle h)
{
    MojoMessageHandle m = SENTINEL_MESSAGE;
    assert_int_equal(MojoReadMessage(h, NULL, &m), MOJO_RESULT_FAILED_PRECONDITION);
    assert_true(m == SENTINEL_MESSAGE);
}

static struct MojoHandleSignalsState query(MojoHandle h)
{
    struct MojoHandleSignalsState s = {SENTINEL_U32, SENTINEL_U32};
    assert_int_equal(MojoQueryHandleSignalsState(h, &s), MOJO_RESULT_OK);
    return s;
}

static void expect_signals(MojoHandle h, MojoHandleSignals satisfied, MojoHandleSignals satisfiable)
{
    struct MojoHandleSignalsState s = query(h);
    assert_int_equal(s.satisfied_signals, satisfied);
    assert_int_equal(s.satisfiable_signals, satisfiable);
}

static void expect_peer_closed(MojoHandle h)
{
    assert_true(query(h).satisfied_signals & MOJO_HANDLE_SIGNAL_PEER_CLOSED);
}

/* h is an open pipe end whose peer is |peer|: messages cross both ways. */
static void expect_connected(MojoHandle h, MojoHandle peer)
{
    cmojo_test_write_text(h, "ping", NULL, 0);
    cmojo_test_expect_text(peer, "ping", NULL, 0);
    cmojo_test_write_text(peer, "pong", NULL, 0);
    cmojo_test_expect_text(h, "pong", NULL, 0);
}

/* The message handle was consumed: it names nothing any more. */
static void expect_consumed(MojoMessageHandle m)
{
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_INVALID_ARGUMENT);
}

static void trap_handler(const struct MojoTrapEvent *event)
{
    (void)event;
}

static MojoHandle new_trap(void)
{
    MojoHandle trap = MOJO_HANDLE_INVALID;
    assert_int_equal(MojoCreateTrap(trap_handler, NULL, &trap), MOJO_RESULT_OK);
    assert_true(trap != MOJO_HANDLE_INVALID);
    return trap;
}

/* ----------------------------------------------------------------- creation */

static void test_create_pipe_gives_two_connected_ends(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    assert_int_equal(core_debug_handle_count(), 2);
    expect_connected(a, b);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_create_pipe_null_out_pointer_is_invalid_argument(void **state)
{
    (void)state;
    MojoHandle h = SENTINEL_HANDLE;

    assert_int_equal(MojoCreateMessagePipe(NULL, NULL, &h), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(h, SENTINEL_HANDLE);
    assert_int_equal(MojoCreateMessagePipe(NULL, &h, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(h, SENTINEL_HANDLE);
    assert_int_equal(MojoCreateMessagePipe(NULL, NULL, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(core_debug_handle_count(), 0);
}

static void test_create_pipe_rejects_malformed_options_leaving_outputs(void **state)
{
    (void)state;
    MojoHandle a = SENTINEL_HANDLE, b = SENTINEL_HANDLE;
    struct MojoCreateMessagePipeOptions small = {4, 0};
    struct MojoCreateMessagePipeOptions unknown = {sizeof(unknown), 1};

    assert_int_equal(MojoCreateMessagePipe(&small, &a, &b), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoCreateMessagePipe(&unknown, &a, &b), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(a, SENTINEL_HANDLE);
    assert_int_equal(b, SENTINEL_HANDLE);
    assert_int_equal(core_debug_handle_count(), 0);

    struct MojoCreateMessagePipeOptions good = {sizeof(good), MOJO_CREATE_MESSAGE_PIPE_FLAG_NONE};
    assert_int_equal(MojoCreateMessagePipe(&good, &a, &b), MOJO_RESULT_OK);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_close_twice_or_made_up_handle_is_invalid_argument(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_close_ok(a);
    assert_int_equal(MojoClose(a), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoClose(MOJO_HANDLE_INVALID), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoClose((MojoHandle)0x7fffff01), MOJO_RESULT_INVALID_ARGUMENT);
    cmojo_test_close_ok(b);
}

/* ----------------------------------------------------------- write and read */

static void test_write_then_read_round_trips_bytes(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_write_text(a, "hello, pipe", NULL, 0);
    cmojo_test_expect_text(b, "hello, pipe", NULL, 0);
    expect_nothing_to_read(b);
    expect_nothing_to_read(a); /* nothing echoed to the writer */
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_each_direction_is_independent(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_write_text(a, "a1", NULL, 0);
    cmojo_test_write_text(b, "b1", NULL, 0);
    cmojo_test_write_text(a, "a2", NULL, 0);
    cmojo_test_expect_text(a, "b1", NULL, 0);
    cmojo_test_expect_text(b, "a1", NULL, 0);
    cmojo_test_expect_text(b, "a2", NULL, 0);
    expect_nothing_to_read(a);
    expect_nothing_to_read(b);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_read_empty_pipe_should_wait(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    expect_nothing_to_read(a);
    expect_nothing_to_read(b);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_read_with_bad_arguments_is_invalid_argument(void **state)
{
    (void)state;
    MojoHandle a, b;
    MojoMessageHandle m = SENTINEL_MESSAGE;
    struct MojoReadMessageOptions small = {4, 0};
    struct MojoReadMessageOptions unknown = {sizeof(unknown), 4};

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_write_text(a, "still here", NULL, 0);
    assert_int_equal(MojoReadMessage(b, NULL, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoReadMessage(MOJO_HANDLE_INVALID, NULL, &m), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoReadMessage((MojoHandle)0x7fffff01, NULL, &m),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoReadMessage(b, &small, &m), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoReadMessage(b, &unknown, &m), MOJO_RESULT_INVALID_ARGUMENT);
    assert_true(m == SENTINEL_MESSAGE);
    /* None of those took the message. */
    cmojo_test_expect_text(b, "still here", NULL, 0);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
    assert_int_equal(MojoReadMessage(b, NULL, &m), MOJO_RESULT_INVALID_ARGUMENT);
}

static void test_read_on_trap_handle_is_invalid_argument(void **state)
{
    (void)state;
    MojoHandle trap = new_trap();
    MojoMessageHandle m = SENTINEL_MESSAGE;

    assert_int_equal(MojoReadMessage(trap, NULL, &m), MOJO_RESULT_INVALID_ARGUMENT);
    assert_true(m == SENTINEL_MESSAGE);
    cmojo_test_close_ok(trap);
}

static void test_read_after_peer_closed_and_drained_fails_precondition(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_close_ok(a);
    expect_read_peer_closed(b);
    expect_read_peer_closed(b); /* and stays so */
    cmojo_test_close_ok(b);
}

static void test_messages_written_before_peer_close_are_read_first(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_write_text(a, "one", NULL, 0);
    cmojo_test_write_text(a, "two", NULL, 0);
    cmojo_test_write_text(a, "", NULL, 0);
    cmojo_test_close_ok(a);
    cmojo_test_expect_text(b, "one", NULL, 0);
    cmojo_test_expect_text(b, "two", NULL, 0);
    cmojo_test_expect_text(b, "", NULL, 0);
    expect_read_peer_closed(b);
    cmojo_test_close_ok(b);
}

static void test_write_to_closed_peer_fails_precondition_and_consumes_message(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_close_ok(b);
    MojoMessageHandle m = cmojo_test_new_data_message("lost", 4, NULL, 0);
    assert_int_equal(MojoWriteMessage(a, m, NULL), MOJO_RESULT_FAILED_PRECONDITION);
    expect_consumed(m);
    assert_int_equal(core_debug_message_count(), 0);
    cmojo_test_close_ok(a);
}

static void test_write_uncommitted_message_fails_precondition_and_consumes_it(void **state)
{
    (void)state;
    MojoHandle a, b;
    MojoMessageHandle m = cmojo_test_new_message();

    cmojo_test_make_pipe(&a, &b);
    assert_int_equal(MojoAppendMessageData(m, 4, NULL, 0, NULL, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(MojoWriteMessage(a, m, NULL), MOJO_RESULT_FAILED_PRECONDITION);
    expect_consumed(m);
    expect_nothing_to_read(b);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_write_empty_message_is_not_found_and_consumes_it(void **state)
{
    (void)state;
    MojoHandle a, b;
    MojoMessageHandle m = cmojo_test_new_message();

    cmojo_test_make_pipe(&a, &b);
    assert_int_equal(MojoWriteMessage(a, m, NULL), MOJO_RESULT_NOT_FOUND);
    expect_consumed(m);
    expect_nothing_to_read(b);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_write_on_trap_handle_is_invalid_argument_and_consumes_message(void **state)
{
    (void)state;
    MojoHandle trap = new_trap();
    MojoMessageHandle m = cmojo_test_new_data_message("x", 1, NULL, 0);

    assert_int_equal(MojoWriteMessage(trap, m, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    expect_consumed(m);
    cmojo_test_close_ok(trap);
}

static void test_write_on_invalid_handle_is_invalid_argument_and_consumes_message(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_close_ok(b);
    MojoMessageHandle m1 = cmojo_test_new_data_message("x", 1, NULL, 0);
    assert_int_equal(MojoWriteMessage(MOJO_HANDLE_INVALID, m1, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    expect_consumed(m1);
    MojoMessageHandle m2 = cmojo_test_new_data_message("y", 1, NULL, 0);
    assert_int_equal(MojoWriteMessage(b, m2, NULL), MOJO_RESULT_INVALID_ARGUMENT); /* closed */
    expect_consumed(m2);
    cmojo_test_close_ok(a);
}

static void test_write_invalid_message_handle_is_invalid_argument(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    assert_int_equal(MojoWriteMessage(a, MOJO_MESSAGE_HANDLE_INVALID, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoWriteMessage(a, (MojoMessageHandle)98765, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    expect_nothing_to_read(b);
    expect_connected(a, b);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_write_rejects_malformed_options_and_consumes_message(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;
    struct MojoWriteMessageOptions small = {4, 0};
    struct MojoWriteMessageOptions unknown = {sizeof(unknown), 1};

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    MojoMessageHandle m1 = cmojo_test_new_data_message("x", 1, &c, 1);
    assert_int_equal(MojoWriteMessage(a, m1, &small), MOJO_RESULT_INVALID_ARGUMENT);
    expect_consumed(m1);
    expect_connected(c, d); /* a failed write hands attached handles back */
    MojoMessageHandle m2 = cmojo_test_new_data_message("y", 1, NULL, 0);
    assert_int_equal(MojoWriteMessage(a, m2, &unknown), MOJO_RESULT_INVALID_ARGUMENT);
    expect_consumed(m2);
    expect_nothing_to_read(b);
    struct MojoWriteMessageOptions good = {sizeof(good), MOJO_WRITE_MESSAGE_FLAG_NONE};
    MojoMessageHandle m3 = cmojo_test_new_data_message("z", 1, NULL, 0);
    assert_int_equal(MojoWriteMessage(a, m3, &good), MOJO_RESULT_OK);
    cmojo_test_expect_text(b, "z", NULL, 0);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
    cmojo_test_close_ok(c);
    cmojo_test_close_ok(d);
}

static void test_write_carrying_own_end_is_invalid_argument_and_releases_it(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    MojoMessageHandle m = cmojo_test_new_data_message("self", 4, &a, 1);
    assert_int_equal(MojoWriteMessage(a, m, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    expect_consumed(m);
    expect_nothing_to_read(b);
    expect_connected(a, b);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_write_carrying_peer_is_invalid_argument_and_releases_it(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    MojoHandle both[] = {c, b};
    MojoMessageHandle m = cmojo_test_new_data_message("peer", 4, both, 2);
    assert_int_equal(MojoWriteMessage(a, m, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    expect_consumed(m);
    expect_nothing_to_read(b);
    expect_connected(a, b);
    expect_connected(c, d);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
    cmojo_test_close_ok(c);
    cmojo_test_close_ok(d);
}

static void test_failed_write_makes_attached_handles_usable_again(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    cmojo_test_close_ok(b);
    MojoMessageHandle m = cmojo_test_new_data_message("cargo", 5, &c, 1);
    assert_int_equal(MojoClose(c), MOJO_RESULT_BUSY);
    assert_int_equal(MojoWriteMessage(a, m, NULL), MOJO_RESULT_FAILED_PRECONDITION);
    expect_consumed(m);
    expect_connected(c, d);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(c);
    cmojo_test_close_ok(d);
}

static void test_empty_payload_message_arrives_with_null_buffer(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    MojoMessageHandle m = cmojo_test_new_data_message(NULL, 0, NULL, 0);
    assert_int_equal(MojoWriteMessage(a, m, NULL), MOJO_RESULT_OK);
    MojoMessageHandle r = MOJO_MESSAGE_HANDLE_INVALID;
    assert_int_equal(MojoReadMessage(b, NULL, &r), MOJO_RESULT_OK);
    void *buf = (void *)&r;
    uint32_t n = SENTINEL_U32;
    assert_int_equal(MojoGetMessageData(r, NULL, &buf, &n, NULL, NULL), MOJO_RESULT_OK);
    assert_null(buf);
    assert_int_equal(n, 0);
    assert_int_equal(MojoDestroyMessage(r), MOJO_RESULT_OK);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static unsigned char pattern_byte(uint32_t message, uint32_t offset)
{
    return (unsigned char)(message * 31u + offset * 7u + (offset >> 8));
}

/* Sizes 0..64, then powers of two and their neighbours up to 64 KiB. */
static uint32_t fill_sizes(uint32_t *sizes, uint32_t cap)
{
    uint32_t k = 0;

    for (uint32_t s = 0; s <= 64 && k < cap; s++)
        sizes[k++] = s;
    for (uint32_t p = 128; p <= 65536 && k + 3 <= cap; p *= 2) {
        sizes[k++] = p - 1;
        sizes[k++] = p;
        if (p < 65536)
            sizes[k++] = p + 1;
    }
    return k;
}

static void write_pattern(MojoHandle h, uint32_t index, uint32_t size)
{
    MojoMessageHandle m = cmojo_test_new_message();
    void *buf = NULL;

    assert_int_equal(MojoAppendMessageData(m, size, NULL, 0, &commit_opts, &buf, NULL),
                     MOJO_RESULT_OK);
    for (uint32_t i = 0; i < size; i++)
        ((unsigned char *)buf)[i] = pattern_byte(index, i);
    assert_int_equal(MojoWriteMessage(h, m, NULL), MOJO_RESULT_OK);
}

static void expect_pattern(MojoHandle h, uint32_t index, uint32_t size)
{
    MojoMessageHandle m = MOJO_MESSAGE_HANDLE_INVALID;
    void *buf = NULL;
    uint32_t n = 0;

    assert_int_equal(MojoReadMessage(h, NULL, &m), MOJO_RESULT_OK);
    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(n, size);
    const unsigned char *bytes = buf;
    for (uint32_t i = 0; i < size; i++) {
        if (bytes[i] != pattern_byte(index, i))
            fail_msg("message %u (size %u): byte %u is %u, expected %u", index, size, i,
                     (unsigned)bytes[i], (unsigned)pattern_byte(index, i));
    }
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
}

static void test_messages_of_many_sizes_arrive_in_order_intact(void **state)
{
    (void)state;
    MojoHandle a, b;
    uint32_t sizes[128];
    uint32_t count = fill_sizes(sizes, 128);

    assert_true(count > 90);
    cmojo_test_make_pipe(&a, &b);
    /* All queued at once, then read. */
    for (uint32_t i = 0; i < count; i++)
        write_pattern(a, i, sizes[i]);
    for (uint32_t i = 0; i < count; i++)
        expect_pattern(b, i, sizes[i]);
    expect_nothing_to_read(b);
    /* Interleaved, the other way, largest first. */
    for (uint32_t i = 0; i < count; i++) {
        write_pattern(b, 1000 + i, sizes[count - 1 - i]);
        if (i % 3 == 2) {
            expect_pattern(a, 1000 + i - 2, sizes[count - 1 - (i - 2)]);
            expect_pattern(a, 1000 + i - 1, sizes[count - 1 - (i - 1)]);
            expect_pattern(a, 1000 + i, sizes[count - 1 - i]);
        }
    }
    for (uint32_t i = count - count % 3; i < count; i++)
        expect_pattern(a, 1000 + i, sizes[count - 1 - i]);
    expect_nothing_to_read(a);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

/* ------------------------------------------------------ handles in messages */

static void test_sent_pipe_end_works_at_the_receiver(void **state)
{
    (void)state;
    MojoHandle a, b, c, d, got;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    cmojo_test_write_text(a, "take c", &c, 1);
    cmojo_test_expect_text(b, "take c", &got, 1);
    expect_connected(got, d);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
    cmojo_test_close_ok(got);
    cmojo_test_close_ok(d);
}

static void test_sent_handle_value_is_gone_from_the_sender(void **state)
{
    (void)state;
    MojoHandle a, b, c, d, got;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    cmojo_test_write_text(a, "c", &c, 1);
    /* Before anything new is allocated, c's value names nothing. */
    assert_int_equal(MojoClose(c), MOJO_RESULT_INVALID_ARGUMENT);
    struct MojoHandleSignalsState s = {SENTINEL_U32, SENTINEL_U32};
    assert_int_equal(MojoQueryHandleSignalsState(c, &s), MOJO_RESULT_INVALID_ARGUMENT);
    cmojo_test_expect_text(b, "c", &got, 1);
    cmojo_test_close_ok(got);
    expect_peer_closed(d);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
    cmojo_test_close_ok(d);
}

static void test_messages_with_handles_keep_their_order(void **state)
{
    (void)state;
    enum { N = 8 };
    MojoHandle a, b, near[N], far[N];
    char text[16];

    cmojo_test_make_pipe(&a, &b);
    for (int i = 0; i < N; i++) {
        cmojo_test_make_pipe(&near[i], &far[i]);
        snprintf(text, sizeof(text), "msg %d", i);
        if (i % 2)
            cmojo_test_write_text(a, text, NULL, 0);
        else
            cmojo_test_write_text(a, text, &near[i], 1);
    }
    for (int i = 0; i < N; i++) {
        snprintf(text, sizeof(text), "msg %d", i);
        if (i % 2) {
            cmojo_test_expect_text(b, text, NULL, 0);
            cmojo_test_close_ok(near[i]);
        } else {
            MojoHandle got;
            cmojo_test_expect_text(b, text, &got, 1);
            /* got is the end paired with far[i], not some other one. */
            snprintf(text, sizeof(text), "via %d", i);
            cmojo_test_write_text(got, text, NULL, 0);
            cmojo_test_expect_text(far[i], text, NULL, 0);
            cmojo_test_close_ok(got);
        }
        cmojo_test_close_ok(far[i]);
    }
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

/*
 * x<->y; x travels over three pipes and back home over a fourth, writing
 * from every stop; y's messages written before each move follow x.
 */
static void test_pipe_end_travels_through_several_pipes_and_back(void **state)
{
    (void)state;
    enum { HOPS = 4 };
    MojoHandle x, y, in[HOPS], out[HOPS];
    char text[16];

    cmojo_test_make_pipe(&x, &y);
    for (int i = 0; i < HOPS; i++)
        cmojo_test_make_pipe(&in[i], &out[i]);

    MojoHandle cur = x;
    for (int hop = 0; hop < HOPS; hop++) {
        snprintf(text, sizeof(text), "x@%d", hop);
        cmojo_test_write_text(cur, text, NULL, 0);
        snprintf(text, sizeof(text), "y->%d", hop);
        cmojo_test_write_text(y, text, NULL, 0); /* queued at cur, which is about to move */
        cmojo_test_write_text(in[hop], "carry", &cur, 1);
        cmojo_test_expect_text(out[hop], "carry", &cur, 1);
    }
    cmojo_test_write_text(cur, "x home", NULL, 0);

    for (int hop = 0; hop < HOPS; hop++) {
        snprintf(text, sizeof(text), "x@%d", hop);
        cmojo_test_expect_text(y, text, NULL, 0);
    }
    cmojo_test_expect_text(y, "x home", NULL, 0);
    expect_nothing_to_read(y);
    for (int hop = 0; hop < HOPS; hop++) {
        snprintf(text, sizeof(text), "y->%d", hop);
        cmojo_test_expect_text(cur, text, NULL, 0);
    }
    expect_nothing_to_read(cur);
    expect_connected(cur, y);
    cmojo_test_close_ok(cur);
    expect_read_peer_closed(y);
    cmojo_test_close_ok(y);
    for (int i = 0; i < HOPS; i++) {
        cmojo_test_close_ok(in[i]);
        cmojo_test_close_ok(out[i]);
    }
}

static void test_messages_queued_on_an_end_arrive_at_its_new_home(void **state)
{
    (void)state;
    MojoHandle a, b, x, y, got;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&x, &y);
    cmojo_test_write_text(y, "first", NULL, 0);
    cmojo_test_write_text(y, "second", NULL, 0);
    cmojo_test_write_text(a, "x", &x, 1);
    cmojo_test_write_text(y, "after the move", NULL, 0);
    cmojo_test_expect_text(b, "x", &got, 1);
    cmojo_test_write_text(y, "after the read", NULL, 0);
    cmojo_test_expect_text(got, "first", NULL, 0);
    cmojo_test_expect_text(got, "second", NULL, 0);
    cmojo_test_expect_text(got, "after the move", NULL, 0);
    cmojo_test_expect_text(got, "after the read", NULL, 0);
    expect_nothing_to_read(got);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
    cmojo_test_close_ok(got);
    cmojo_test_close_ok(y);
}

static void test_both_ends_of_a_pipe_travel_in_one_message(void **state)
{
    (void)state;
    MojoHandle a, b, x, y, got[2];

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&x, &y);
    cmojo_test_write_text(x, "queued at y", NULL, 0);
    MojoHandle both[] = {x, y};
    cmojo_test_write_text(a, "pair", both, 2);
    cmojo_test_expect_text(b, "pair", got, 2);
    cmojo_test_expect_text(got[1], "queued at y", NULL, 0);
    expect_connected(got[0], got[1]);
    cmojo_test_close_ok(got[0]);
    expect_peer_closed(got[1]);
    cmojo_test_close_ok(got[1]);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_destroying_read_message_closes_unextracted_handles(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    cmojo_test_write_text(a, "c inside", &c, 1);
    MojoMessageHandle r = MOJO_MESSAGE_HANDLE_INVALID;
    assert_int_equal(MojoReadMessage(b, NULL, &r), MOJO_RESULT_OK);
    assert_false(query(d).satisfied_signals & MOJO_HANDLE_SIGNAL_PEER_CLOSED);
    assert_int_equal(MojoDestroyMessage(r), MOJO_RESULT_OK);
    expect_peer_closed(d);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
    cmojo_test_close_ok(d);
}

static void test_closing_a_receiver_closes_handles_queued_for_it(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    cmojo_test_write_text(a, "never read", &c, 1);
    cmojo_test_close_ok(b);
    expect_peer_closed(d);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(d);
}

/* ------------------------------------------------------- MojoFuseMessagePipes */

static void test_fuse_joins_the_outer_ends(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    assert_int_equal(MojoFuseMessagePipes(b, c, NULL), MOJO_RESULT_OK);
    expect_connected(a, d);
    cmojo_test_close_ok(a);
    expect_read_peer_closed(d);
    cmojo_test_close_ok(d);
}

static void test_fuse_forwards_queued_messages_both_ways(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    cmojo_test_write_text(a, "a1", NULL, 0); /* unread at b: goes on to d */
    cmojo_test_write_text(a, "a2", NULL, 0);
    cmojo_test_write_text(d, "d1", NULL, 0); /* unread at c: goes on to a */
    cmojo_test_write_text(d, "d2", NULL, 0);
    assert_int_equal(MojoFuseMessagePipes(b, c, NULL), MOJO_RESULT_OK);
    cmojo_test_write_text(a, "a3", NULL, 0);
    cmojo_test_write_text(d, "d3", NULL, 0);
    cmojo_test_expect_text(d, "a1", NULL, 0);
    cmojo_test_expect_text(d, "a2", NULL, 0);
    cmojo_test_expect_text(d, "a3", NULL, 0);
    cmojo_test_expect_text(a, "d1", NULL, 0);
    cmojo_test_expect_text(a, "d2", NULL, 0);
    cmojo_test_expect_text(a, "d3", NULL, 0);
    expect_nothing_to_read(a);
    expect_nothing_to_read(d);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(d);
}

static void test_fused_handles_are_invalid_afterwards(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;
    struct MojoHandleSignalsState s;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    assert_int_equal(MojoFuseMessagePipes(b, c, NULL), MOJO_RESULT_OK);
    assert_int_equal(MojoQueryHandleSignalsState(b, &s), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoClose(b), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoClose(c), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(core_debug_handle_count(), 2);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(d);
}

static void test_fuse_written_end_fails_precondition_and_closes_both(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    cmojo_test_write_text(b, "b wrote", NULL, 0);
    assert_int_equal(MojoFuseMessagePipes(b, c, NULL), MOJO_RESULT_FAILED_PRECONDITION);
    assert_int_equal(MojoClose(b), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoClose(c), MOJO_RESULT_INVALID_ARGUMENT);
    cmojo_test_expect_text(a, "b wrote", NULL, 0);
    expect_read_peer_closed(a);
    expect_peer_closed(d);
    expect_read_peer_closed(d);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(d);
}

static void test_fuse_second_end_written_fails_precondition_too(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    cmojo_test_write_text(c, "c wrote", NULL, 0);
    assert_int_equal(MojoFuseMessagePipes(b, c, NULL), MOJO_RESULT_FAILED_PRECONDITION);
    assert_int_equal(MojoClose(b), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoClose(c), MOJO_RESULT_INVALID_ARGUMENT);
    expect_peer_closed(a);
    cmojo_test_expect_text(d, "c wrote", NULL, 0);
    expect_read_peer_closed(d);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(d);
}

/* Mojo: "Handles B and C are ALWAYS closed", even when the fuse is refused. */
static void test_fuse_with_non_pipe_handle_is_invalid_argument_and_closes_both(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;
    MojoHandle trap1 = new_trap();
    MojoHandle trap2 = new_trap();

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    assert_int_equal(MojoFuseMessagePipes(b, trap1, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoClose(b), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoClose(trap1), MOJO_RESULT_INVALID_ARGUMENT);
    expect_read_peer_closed(a);
    assert_int_equal(MojoFuseMessagePipes(trap2, c, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoClose(trap2), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoClose(c), MOJO_RESULT_INVALID_ARGUMENT);
    expect_read_peer_closed(d);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(d);
}

static void test_fuse_with_invalid_handle_is_invalid_argument_and_closes_the_other(void **state)
{
    (void)state;
    MojoHandle a, b, c, d, e, f;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    cmojo_test_make_pipe(&e, &f);
    cmojo_test_close_ok(f);
    assert_int_equal(MojoFuseMessagePipes(b, MOJO_HANDLE_INVALID, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoClose(b), MOJO_RESULT_INVALID_ARGUMENT);
    expect_read_peer_closed(a);
    assert_int_equal(MojoFuseMessagePipes((MojoHandle)0x7fffff01, c, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoClose(c), MOJO_RESULT_INVALID_ARGUMENT);
    expect_read_peer_closed(d);
    assert_int_equal(MojoFuseMessagePipes(e, f, NULL), MOJO_RESULT_INVALID_ARGUMENT); /* f closed */
    assert_int_equal(MojoClose(e), MOJO_RESULT_INVALID_ARGUMENT);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(d);
}

static void test_fuse_same_handle_twice_is_invalid_argument(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    assert_int_equal(MojoFuseMessagePipes(b, b, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    /* Whether b survived is not pinned; either way both go now. */
    (void)MojoClose(b);
    cmojo_test_close_ok(a);
}

static void test_fuse_in_transit_handle_is_busy(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    MojoMessageHandle m = cmojo_test_new_message();
    assert_int_equal(MojoAppendMessageData(m, 0, &b, 1, NULL, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(MojoFuseMessagePipes(b, c, NULL), MOJO_RESULT_BUSY);
    assert_int_equal(MojoClose(b), MOJO_RESULT_BUSY); /* still owned by m */
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    expect_peer_closed(a);
    (void)MojoClose(c);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(d);
}

static void test_fuse_rejects_malformed_options(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;
    struct MojoFuseMessagePipesOptions small = {4, 0};
    struct MojoFuseMessagePipesOptions unknown = {sizeof(unknown), 1};

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    assert_int_equal(MojoFuseMessagePipes(b, c, &small), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoFuseMessagePipes(b, c, &unknown), MOJO_RESULT_INVALID_ARGUMENT);
    /* Malformed options change nothing: the fuse can still happen. */
    struct MojoFuseMessagePipesOptions good = {sizeof(good), MOJO_FUSE_MESSAGE_PIPES_FLAG_NONE};
    assert_int_equal(MojoFuseMessagePipes(b, c, &good), MOJO_RESULT_OK);
    expect_connected(a, d);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(d);
}

static void test_fuse_of_pipe_whose_far_end_closed_gives_peer_closed(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    cmojo_test_write_text(a, "last words", NULL, 0);
    cmojo_test_close_ok(a);
    MojoResult rv = MojoFuseMessagePipes(b, c, NULL);
    assert_true(rv == MOJO_RESULT_OK || rv == MOJO_RESULT_FAILED_PRECONDITION);
    if (rv == MOJO_RESULT_OK)
        cmojo_test_expect_text(d, "last words", NULL, 0);
    expect_read_peer_closed(d);
    cmojo_test_close_ok(d);
}

/* ------------------------------------------------------------------ signals */

static void test_fresh_end_is_writable_only(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    expect_signals(a, MOJO_HANDLE_SIGNAL_WRITABLE, ALL_PIPE_SIGNALS);
    expect_signals(b, MOJO_HANDLE_SIGNAL_WRITABLE, ALL_PIPE_SIGNALS);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_write_makes_peer_readable_not_writer(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_write_text(a, "r", NULL, 0);
    expect_signals(b, MOJO_HANDLE_SIGNAL_READABLE | MOJO_HANDLE_SIGNAL_WRITABLE, ALL_PIPE_SIGNALS);
    expect_signals(a, MOJO_HANDLE_SIGNAL_WRITABLE, ALL_PIPE_SIGNALS);
    cmojo_test_write_text(a, "r2", NULL, 0);
    cmojo_test_expect_text(b, "r", NULL, 0);
    expect_signals(b, MOJO_HANDLE_SIGNAL_READABLE | MOJO_HANDLE_SIGNAL_WRITABLE, ALL_PIPE_SIGNALS);
    cmojo_test_expect_text(b, "r2", NULL, 0);
    expect_signals(b, MOJO_HANDLE_SIGNAL_WRITABLE, ALL_PIPE_SIGNALS);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_peer_closed_with_messages_left_is_readable_and_peer_closed(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_write_text(a, "left", NULL, 0);
    cmojo_test_close_ok(a);
    expect_signals(b, MOJO_HANDLE_SIGNAL_READABLE | MOJO_HANDLE_SIGNAL_PEER_CLOSED,
                   MOJO_HANDLE_SIGNAL_READABLE | MOJO_HANDLE_SIGNAL_PEER_CLOSED |
                       MOJO_HANDLE_SIGNAL_QUOTA_EXCEEDED);
    cmojo_test_expect_text(b, "left", NULL, 0);
    expect_signals(b, MOJO_HANDLE_SIGNAL_PEER_CLOSED,
                   MOJO_HANDLE_SIGNAL_PEER_CLOSED | MOJO_HANDLE_SIGNAL_QUOTA_EXCEEDED);
    cmojo_test_close_ok(b);
}

static void test_peer_closed_without_messages_is_peer_closed_only(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_close_ok(b);
    expect_signals(a, MOJO_HANDLE_SIGNAL_PEER_CLOSED,
                   MOJO_HANDLE_SIGNAL_PEER_CLOSED | MOJO_HANDLE_SIGNAL_QUOTA_EXCEEDED);
    cmojo_test_close_ok(a);
}

static void test_moved_end_keeps_peer_local_and_signals_intact(void **state)
{
    (void)state;
    MojoHandle a, b, x, y, got;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&x, &y);
    cmojo_test_write_text(a, "x", &x, 1);
    cmojo_test_expect_text(b, "x", &got, 1);
    /* Still one process: PEER_REMOTE is satisfiable but never satisfied. */
    expect_signals(got, MOJO_HANDLE_SIGNAL_WRITABLE, ALL_PIPE_SIGNALS);
    expect_signals(y, MOJO_HANDLE_SIGNAL_WRITABLE, ALL_PIPE_SIGNALS);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
    cmojo_test_close_ok(got);
    cmojo_test_close_ok(y);
}

static void test_query_with_bad_handle_or_null_state_is_invalid_argument(void **state)
{
    (void)state;
    MojoHandle a, b;
    struct MojoHandleSignalsState s = {SENTINEL_U32, SENTINEL_U32};

    cmojo_test_make_pipe(&a, &b);
    assert_int_equal(MojoQueryHandleSignalsState(a, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoQueryHandleSignalsState(MOJO_HANDLE_INVALID, &s),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoQueryHandleSignalsState((MojoHandle)0x7fffff01, &s),
                     MOJO_RESULT_INVALID_ARGUMENT);
    cmojo_test_close_ok(b);
    assert_int_equal(MojoQueryHandleSignalsState(b, &s), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(s.satisfied_signals, SENTINEL_U32);
    assert_int_equal(s.satisfiable_signals, SENTINEL_U32);
    cmojo_test_close_ok(a);
}

/* ------------------------------------------------------------------ threads */

enum { THREAD_MESSAGES = 2000 };

struct producer_args {
    MojoHandle end;
    int failures;
};

/* No cmocka asserts off the main thread: failures are counted instead. */
static void *producer(void *arg)
{
    struct producer_args *p = arg;

    for (uint32_t i = 0; i < THREAD_MESSAGES; i++) {
        MojoMessageHandle m = MOJO_MESSAGE_HANDLE_INVALID;
        void *buf = NULL;
        if (MojoCreateMessage(NULL, &m) != MOJO_RESULT_OK ||
            MojoAppendMessageData(m, sizeof(i), NULL, 0, &commit_opts, &buf, NULL) !=
                MOJO_RESULT_OK) {
            p->failures++;
            continue;
        }
        memcpy(buf, &i, sizeof(i));
        if (MojoWriteMessage(p->end, m, NULL) != MOJO_RESULT_OK)
            p->failures++;
    }
    if (MojoClose(p->end) != MOJO_RESULT_OK)
        p->failures++;
    return NULL;
}

static void test_messages_cross_threads_in_order(void **state)
{
    (void)state;
    MojoHandle a, b;
    pthread_t thread;
    struct producer_args args;
    uint32_t expected = 0;

    cmojo_test_make_pipe(&a, &b);
    args.end = a;
    args.failures = 0;
    assert_int_equal(pthread_create(&thread, NULL, producer, &args), 0);
    for (;;) {
        struct MojoHandleSignalsState s;
        MojoResult rv = MojoWait(b, MOJO_HANDLE_SIGNAL_READABLE, MOJO_DEADLINE_INDEFINITE, &s);
        if (rv == MOJO_RESULT_FAILED_PRECONDITION)
            break;
        assert_int_equal(rv, MOJO_RESULT_OK);
        assert_true(s.satisfied_signals & MOJO_HANDLE_SIGNAL_READABLE);
        MojoMessageHandle m;
        while (MojoReadMessage(b, NULL, &m) == MOJO_RESULT_OK) {
            void *buf = NULL;
            uint32_t n = 0, got;
            assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, NULL, NULL), MOJO_RESULT_OK);
            assert_int_equal(n, sizeof(got));
            memcpy(&got, buf, sizeof(got));
            assert_int_equal(got, expected);
            expected++;
            assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
        }
    }
    assert_int_equal(pthread_join(thread, NULL), 0);
    assert_int_equal(args.failures, 0);
    assert_int_equal(expected, THREAD_MESSAGES);
    expect_read_peer_closed(b);
    cmojo_test_close_ok(b);
}

/*
 * One reader draining while a writer keeps writing: every wake-up of its
 * MojoWait(READABLE) must find a message to read. The writer's thread hands
 * the pipe's status to the watchers a little after taking it; by then the
 * reader may have read that message and started a new wait. Were the late
 * status applied, the wait would report READABLE of an empty queue.
 */
enum { LATE_STATUS_MESSAGES = 300000 };

static void *late_status_writer(void *arg)
{
    struct producer_args *p = arg;
    for (uint32_t i = 0; i < LATE_STATUS_MESSAGES; i++) {
        MojoMessageHandle m = MOJO_MESSAGE_HANDLE_INVALID;
        if (MojoCreateMessage(NULL, &m) != MOJO_RESULT_OK ||
            MojoAppendMessageData(m, 0, NULL, 0, &commit_opts, NULL, NULL) != MOJO_RESULT_OK ||
            MojoWriteMessage(p->end, m, NULL) != MOJO_RESULT_OK)
            p->failures++;
    }
    if (MojoClose(p->end) != MOJO_RESULT_OK)
        p->failures++;
    return NULL;
}

static void test_wait_never_wakes_for_a_message_already_read(void **state)
{
    (void)state;
    MojoHandle a, b;
    pthread_t thread;
    struct producer_args args = {0, 0};
    uint32_t read = 0, empty_wakeups = 0;

    cmojo_test_make_pipe(&a, &b);
    args.end = a;
    assert_int_equal(pthread_create(&thread, NULL, late_status_writer, &args), 0);
    for (;;) {
        MojoResult rv = MojoWait(b, MOJO_HANDLE_SIGNAL_READABLE, MOJO_DEADLINE_INDEFINITE, NULL);
        if (rv == MOJO_RESULT_FAILED_PRECONDITION)
            break;
        assert_int_equal(rv, MOJO_RESULT_OK);
        MojoMessageHandle m;
        uint32_t got = 0;
        while (MojoReadMessage(b, NULL, &m) == MOJO_RESULT_OK) {
            assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
            got++;
        }
        if (got == 0)
            empty_wakeups++;
        read += got;
    }
    assert_int_equal(pthread_join(thread, NULL), 0);
    assert_int_equal(args.failures, 0);
    assert_int_equal(empty_wakeups, 0);
    assert_int_equal(read, LATE_STATUS_MESSAGES);
    cmojo_test_close_ok(b);
}

static void test_wait_for_readable_on_drained_closed_pipe_fails_precondition(void **state)
{
    (void)state;
    MojoHandle a, b;
    struct MojoHandleSignalsState s = {0, 0};

    cmojo_test_make_pipe(&a, &b);
    assert_int_equal(MojoWait(b, MOJO_HANDLE_SIGNAL_READABLE, 0, NULL),
                     MOJO_RESULT_DEADLINE_EXCEEDED);
    cmojo_test_write_text(a, "x", NULL, 0);
    assert_int_equal(MojoWait(b, MOJO_HANDLE_SIGNAL_READABLE, 0, NULL), MOJO_RESULT_OK);
    cmojo_test_close_ok(a);
    assert_int_equal(MojoWait(b, MOJO_HANDLE_SIGNAL_READABLE, MOJO_DEADLINE_INDEFINITE, &s),
                     MOJO_RESULT_OK);
    cmojo_test_expect_text(b, "x", NULL, 0);
    assert_int_equal(MojoWait(b, MOJO_HANDLE_SIGNAL_READABLE, MOJO_DEADLINE_INDEFINITE, &s),
                     MOJO_RESULT_FAILED_PRECONDITION);
    assert_int_equal(s.satisfied_signals, MOJO_HANDLE_SIGNAL_PEER_CLOSED);
    cmojo_test_close_ok(b);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, cmojo_core_setup, cmojo_core_teardown)
    const struct CMUnitTest tests[] = {
        T(test_create_pipe_gives_two_connected_ends),
        T(test_create_pipe_null_out_pointer_is_invalid_argument),
        T(test_create_pipe_rejects_malformed_options_leaving_outputs),
        T(test_close_twice_or_made_up_handle_is_invalid_argument),
        T(test_write_then_read_round_trips_bytes),
        T(test_each_direction_is_independent),
        T(test_read_empty_pipe_should_wait),
        T(test_read_with_bad_arguments_is_invalid_argument),
        T(test_read_on_trap_handle_is_invalid_argument),
        T(test_read_after_peer_closed_and_drained_fails_precondition),
        T(test_messages_written_before_peer_close_are_read_first),
        T(test_write_to_closed_peer_fails_precondition_and_consumes_message),
        T(test_write_uncommitted_message_fails_precondition_and_consumes_it),
        T(test_write_empty_message_is_not_found_and_consumes_it),
        T(test_write_on_trap_handle_is_invalid_argument_and_consumes_message),
        T(test_write_on_invalid_handle_is_invalid_argument_and_consumes_message),
        T(test_write_invalid_message_handle_is_invalid_argument),
        T(test_write_rejects_malformed_options_and_consumes_message),
        T(test_write_carrying_own_end_is_invalid_argument_and_releases_it),
        T(test_write_carrying_peer_is_invalid_argument_and_releases_it),
        T(test_failed_write_makes_attached_handles_usable_again),
        T(test_empty_payload_message_arrives_with_null_buffer),
        T(test_messages_of_many_sizes_arrive_in_order_intact),
        T(test_sent_pipe_end_works_at_the_receiver),
        T(test_sent_handle_value_is_gone_from_the_sender),
        T(test_messages_with_handles_keep_their_order),
        T(test_pipe_end_travels_through_several_pipes_and_back),
        T(test_messages_queued_on_an_end_arrive_at_its_new_home),
        T(test_both_ends_of_a_pipe_travel_in_one_message),
        T(test_destroying_read_message_closes_unextracted_handles),
        T(test_closing_a_receiver_closes_handles_queued_for_it),
        T(test_fuse_joins_the_outer_ends),
        T(test_fuse_forwards_queued_messages_both_ways),
        T(test_fused_handles_are_invalid_afterwards),
        T(test_fuse_written_end_fails_precondition_and_closes_both),
        T(test_fuse_second_end_written_fails_precondition_too),
        T(test_fuse_with_non_pipe_handle_is_invalid_argument_and_closes_both),
        T(test_fuse_with_invalid_handle_is_invalid_argument_and_closes_the_other),
        T(test_fuse_same_handle_twice_is_invalid_argument),
        T(test_fuse_in_transit_handle_is_busy),
        T(test_fuse_rejects_malformed_options),
        T(test_fuse_of_pipe_whose_far_end_closed_gives_peer_closed),
        T(test_fresh_end_is_writable_only),
        T(test_write_makes_peer_readable_not_writer),
        T(test_peer_closed_with_messages_left_is_readable_and_peer_closed),
        T(test_peer_closed_without_messages_is_peer_closed_only),
        T(test_moved_end_keeps_peer_local_and_signals_intact),
        T(test_query_with_bad_handle_or_null_state_is_invalid_argument),
        T(test_messages_cross_threads_in_order),
        T(test_wait_never_wakes_for_a_message_already_read),
        T(test_wait_for_readable_on_drained_closed_pipe_fails_precondition),
    };
#undef T
    return cmocka_run_group_tests_name("message_pipe", tests, NULL, NULL);
}
