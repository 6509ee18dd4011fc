/*
 * Data pipes in one process (mojo/public/c/system/data_pipe.h): creation
 * options, one-shot and two-phase reads and writes with every flag and error
 * case, wrap-around, element sizes above one, signals and traps on both
 * ends, ends travelling in messages mid-stream, and two threads streaming
 * while racing closes. The fixture fails any test that leaves a handle,
 * message, port or fd.
 */
#include "cmojo_test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cmojo/wait.h"
#include "cmojo_limits.h"
#include "mojo/public/c/system/core.h"

#define OK MOJO_RESULT_OK
#define INVALID MOJO_RESULT_INVALID_ARGUMENT

static struct MojoCreateDataPipeOptions opts(uint32_t element, uint32_t capacity)
{
    struct MojoCreateDataPipeOptions o = {sizeof(o), MOJO_CREATE_DATA_PIPE_FLAG_NONE, element,
                                          capacity};
    return o;
}

static void make_dp(uint32_t element, uint32_t capacity, MojoHandle *p, MojoHandle *c)
{
    struct MojoCreateDataPipeOptions o = opts(element, capacity);
    assert_int_equal(MojoCreateDataPipe(&o, p, c), OK);
    assert_true(*p != MOJO_HANDLE_INVALID && *c != MOJO_HANDLE_INVALID && *p != *c);
}

static MojoResult write_flags(MojoHandle p, const void *data, uint32_t *n, uint32_t flags)
{
    struct MojoWriteDataOptions o = {sizeof(o), flags};
    return MojoWriteData(p, data, n, &o);
}

static MojoResult read_flags(MojoHandle c, void *data, uint32_t *n, uint32_t flags)
{
    struct MojoReadDataOptions o = {sizeof(o), flags};
    return MojoReadData(c, &o, data, n);
}

/* Writes exactly n bytes (asserting the pipe takes them all). */
static void write_all(MojoHandle p, const void *data, uint32_t n)
{
    uint32_t k = n;
    assert_int_equal(write_flags(p, data, &k, MOJO_WRITE_DATA_FLAG_ALL_OR_NONE), OK);
    assert_int_equal(k, n);
}

static void read_exact(MojoHandle c, void *data, uint32_t n)
{
    uint32_t k = n;
    assert_int_equal(read_flags(c, data, &k, MOJO_READ_DATA_FLAG_ALL_OR_NONE), OK);
    assert_int_equal(k, n);
}

static uint32_t readable(MojoHandle c)
{
    uint32_t n = 0;
    assert_int_equal(read_flags(c, NULL, &n, MOJO_READ_DATA_FLAG_QUERY), OK);
    return n;
}

static struct MojoHandleSignalsState query(MojoHandle h)
{
    struct MojoHandleSignalsState s;
    assert_int_equal(MojoQueryHandleSignalsState(h, &s), OK);
    return s;
}

static bool satisfied(MojoHandle h, MojoHandleSignals signals)
{
    return (query(h).satisfied_signals & signals) == signals;
}

/* Sends h through a fresh message pipe and returns what arrives. */
static MojoHandle send_through_pipe(MojoHandle h)
{
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoMessageHandle m;
    assert_int_equal(MojoCreateMessage(NULL, &m), OK);
    struct MojoAppendMessageDataOptions commit = {sizeof(commit),
                                                  MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE};
    assert_int_equal(MojoAppendMessageData(m, 0, &h, 1, &commit, NULL, NULL), OK);
    assert_int_equal(MojoWriteMessage(a, m, NULL), OK);
    assert_int_equal(MojoReadMessage(b, NULL, &m), OK);
    MojoHandle out = MOJO_HANDLE_INVALID;
    uint32_t n = 1;
    assert_int_equal(MojoGetMessageData(m, NULL, NULL, NULL, &out, &n), OK);
    assert_int_equal(n, 1);
    assert_int_equal(MojoDestroyMessage(m), OK);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
    return out;
}

/* ------------------------------------------------------------- creation */

static void create_with_defaults(void **state)
{
    (void)state;
    MojoHandle p, c;
    assert_int_equal(MojoCreateDataPipe(NULL, &p, &c), OK);
    /* One-byte elements, 64 KiB. */
    static uint8_t big[CMOJO_DEFAULT_DATA_PIPE_CAPACITY + 16];
    uint32_t n = sizeof(big);
    assert_int_equal(MojoWriteData(p, big, &n, NULL), OK);
    assert_int_equal(n, CMOJO_DEFAULT_DATA_PIPE_CAPACITY);
    n = 1;
    assert_int_equal(MojoWriteData(p, big, &n, NULL), MOJO_RESULT_SHOULD_WAIT);
    assert_int_equal(readable(c), CMOJO_DEFAULT_DATA_PIPE_CAPACITY);
    cmojo_test_close_ok(p);
    cmojo_test_close_ok(c);
}

static void default_capacity_is_whole_elements(void **state)
{
    (void)state;
    MojoHandle p, c;
    make_dp(3, 0, &p, &c); /* 65536 is not a multiple of 3: 65535 */
    static uint8_t big[CMOJO_DEFAULT_DATA_PIPE_CAPACITY];
    uint32_t n = sizeof(big) - 1;
    assert_int_equal(write_flags(p, big, &n, 0), OK);
    assert_int_equal(n, 65535);
    cmojo_test_close_ok(p);
    cmojo_test_close_ok(c);

    make_dp(100000, 0, &p, &c); /* an element above the default: one element */
    uint8_t *elem = calloc(1, 200000);
    n = 200000;
    assert_int_equal(write_flags(p, elem, &n, 0), OK);
    assert_int_equal(n, 100000);
    free(elem);
    cmojo_test_close_ok(p);
    cmojo_test_close_ok(c);
}

static void create_rejects_bad_options(void **state)
{
    (void)state;
    MojoHandle p = 77, c = 78;
    struct MojoCreateDataPipeOptions o = opts(1, 16);
    assert_int_equal(MojoCreateDataPipe(&o, NULL, &c), INVALID);
    assert_int_equal(MojoCreateDataPipe(&o, &p, NULL), INVALID);
    o.struct_size = 8; /* must cover the whole structure */
    assert_int_equal(MojoCreateDataPipe(&o, &p, &c), INVALID);
    o = opts(0, 16);
    assert_int_equal(MojoCreateDataPipe(&o, &p, &c), INVALID);
    o = opts(4, 10); /* not whole elements */
    assert_int_equal(MojoCreateDataPipe(&o, &p, &c), INVALID);
    o = opts(8, 4); /* smaller than one element */
    assert_int_equal(MojoCreateDataPipe(&o, &p, &c), INVALID);
    o = opts(1, CMOJO_MAX_DATA_PIPE_CAPACITY + 1);
    assert_int_equal(MojoCreateDataPipe(&o, &p, &c), MOJO_RESULT_RESOURCE_EXHAUSTED);
    o = opts(1, 16);
    o.flags = 1u << 7;
    assert_int_equal(MojoCreateDataPipe(&o, &p, &c), MOJO_RESULT_UNIMPLEMENTED);
    /* Outputs untouched on failure. */
    assert_int_equal(p, 77);
    assert_int_equal(c, 78);
    /* A larger struct_size (a newer caller) is fine. */
    struct {
        struct MojoCreateDataPipeOptions o;
        uint64_t future;
    } bigger = {opts(2, 8), 0};
    bigger.o.struct_size = sizeof(bigger);
    assert_int_equal(MojoCreateDataPipe(&bigger.o, &p, &c), OK);
    cmojo_test_close_ok(p);
    cmojo_test_close_ok(c);
}

/* --------------------------------------------------------- one-shot I/O */

static void write_then_read(void **state)
{
    (void)state;
    MojoHandle p, c;
    make_dp(1, 64, &p, &c);
    write_all(p, "hello, pipe", 11);
    assert_int_equal(readable(c), 11);
    char buf[32] = {0};
    uint32_t n = sizeof(buf);
    assert_int_equal(MojoReadData(c, NULL, buf, &n), OK);
    assert_int_equal(n, 11);
    assert_memory_equal(buf, "hello, pipe", 11);
    n = sizeof(buf);
    assert_int_equal(MojoReadData(c, NULL, buf, &n), MOJO_RESULT_SHOULD_WAIT);
    cmojo_test_close_ok(p);
    cmojo_test_close_ok(c);
}

/* Many laps of a small ring with 4-byte elements: order and content survive the wrap. */
static void wrap_around_with_elements(void **state)
{
    (void)state;
    MojoHandle p, c;
    make_dp(4, 40, &p, &c);
    uint32_t next_w = 0, next_r = 0;
    for (int round = 0; round < 500; round++) {
        uint32_t vals[7];
        uint32_t count = 1 + (uint32_t)(round % 7);
        for (uint32_t i = 0; i < count; i++)
            vals[i] = next_w + i;
        uint32_t n = count * 4;
        MojoResult rv = MojoWriteData(p, vals, &n, NULL);
        if (rv == OK) {
            assert_int_equal(n % 4, 0);
            next_w += n / 4;
        } else {
            assert_int_equal(rv, MOJO_RESULT_SHOULD_WAIT);
        }
        uint32_t got[5];
        n = (uint32_t)sizeof(got) - (uint32_t)(round % 3) * 4;
        rv = MojoReadData(c, NULL, got, &n);
        if (rv == OK) {
            for (uint32_t i = 0; i < n / 4; i++)
                assert_int_equal(got[i], next_r++);
        } else {
            assert_int_equal(rv, MOJO_RESULT_SHOULD_WAIT);
        }
    }
    assert_true(next_w > 1000); /* it really went round many times */
    while (next_r < next_w) {
        uint32_t v, n = 4;
        assert_int_equal(MojoReadData(c, NULL, &v, &n), OK);
        assert_int_equal(v, next_r++);
    }
    cmojo_test_close_ok(p);
    cmojo_test_close_ok(c);
}

static void write_errors(void **state)
{
    (void)state;
    MojoHandle p, c, a, b;
    make_dp(2, 8, &p, &c);
    cmojo_test_make_pipe(&a, &b);
    uint8_t data[16] = {0};
    uint32_t n = 3;
    assert_int_equal(MojoWriteData(p, data, &n, NULL), INVALID); /* half an element */
    assert_int_equal(n, 3);
    assert_int_equal(MojoWriteData(p, data, NULL, NULL), INVALID);
    n = 2;
    assert_int_equal(MojoWriteData(p, NULL, &n, NULL), INVALID);
    assert_int_equal(write_flags(p, data, &n, 1u << 5), INVALID); /* unknown flag */
    struct MojoWriteDataOptions short_opts = {4, 0};
    assert_int_equal(MojoWriteData(p, data, &n, &short_opts), INVALID);
    assert_int_equal(MojoWriteData(c, data, &n, NULL), INVALID); /* a consumer */
    assert_int_equal(MojoWriteData(a, data, &n, NULL), INVALID); /* a message pipe */
    assert_int_equal(MojoWriteData(0x7ffffff1, data, &n, NULL), INVALID);
    n = 0;
    assert_int_equal(MojoWriteData(p, NULL, &n, NULL), OK); /* nothing to do */
    n = 10;
    assert_int_equal(write_flags(p, data, &n, MOJO_WRITE_DATA_FLAG_ALL_OR_NONE),
                     MOJO_RESULT_OUT_OF_RANGE);
    assert_int_equal(readable(c), 0); /* all or none: none */
    n = 10;
    assert_int_equal(MojoWriteData(p, data, &n, NULL), OK);
    assert_int_equal(n, 8); /* as much as fits */
    n = 2;
    assert_int_equal(MojoWriteData(p, data, &n, NULL), MOJO_RESULT_SHOULD_WAIT);
    cmojo_test_close_ok(c);
    n = 2;
    assert_int_equal(MojoWriteData(p, data, &n, NULL), MOJO_RESULT_FAILED_PRECONDITION);
    cmojo_test_close_ok(p);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void read_flag_rules(void **state)
{
    (void)state;
    MojoHandle p, c;
    make_dp(1, 32, &p, &c);
    write_all(p, "abcdefgh", 8);
    char buf[16];
    uint32_t n = 4;
    const uint32_t D = MOJO_READ_DATA_FLAG_DISCARD, Q = MOJO_READ_DATA_FLAG_QUERY,
                   P = MOJO_READ_DATA_FLAG_PEEK, A = MOJO_READ_DATA_FLAG_ALL_OR_NONE;
    assert_int_equal(read_flags(c, buf, &n, D | P), INVALID);
    assert_int_equal(read_flags(c, buf, &n, D | Q), INVALID);
    assert_int_equal(read_flags(c, buf, &n, Q | P), INVALID);
    assert_int_equal(read_flags(c, buf, &n, 1u << 9), INVALID);
    assert_int_equal(read_flags(c, NULL, &n, 0), INVALID); /* nowhere to copy */
    assert_int_equal(read_flags(c, NULL, &n, P), INVALID);
    assert_int_equal(MojoReadData(c, NULL, buf, NULL), INVALID);
    assert_int_equal(MojoReadData(p, NULL, buf, &n), INVALID); /* a producer */
    assert_int_equal(n, 4);
    assert_int_equal(readable(c), 8); /* none of that consumed anything */

    /* QUERY ignores ALL_OR_NONE and the input count. */
    n = 1000;
    assert_int_equal(read_flags(c, NULL, &n, Q | A), OK);
    assert_int_equal(n, 8);
    /* PEEK copies and leaves. */
    n = 3;
    assert_int_equal(read_flags(c, buf, &n, P), OK);
    assert_memory_equal(buf, "abc", 3);
    assert_int_equal(readable(c), 8);
    n = 9;
    assert_int_equal(read_flags(c, buf, &n, P | A), MOJO_RESULT_OUT_OF_RANGE);
    /* DISCARD drops without a buffer. */
    n = 2;
    assert_int_equal(read_flags(c, NULL, &n, D), OK);
    assert_int_equal(n, 2);
    n = 7;
    assert_int_equal(read_flags(c, NULL, &n, D | A), MOJO_RESULT_OUT_OF_RANGE);
    read_exact(c, buf, 6);
    assert_memory_equal(buf, "cdefgh", 6);
    n = 1;
    assert_int_equal(read_flags(c, NULL, &n, D), MOJO_RESULT_SHOULD_WAIT);
    cmojo_test_close_ok(p);
    cmojo_test_close_ok(c);
}

static void read_errors_with_elements(void **state)
{
    (void)state;
    MojoHandle p, c;
    make_dp(4, 16, &p, &c);
    write_all(p, "0123456789ab", 12);
    char buf[16];
    uint32_t n = 6;
    assert_int_equal(MojoReadData(c, NULL, buf, &n), INVALID); /* 1.5 elements */
    n = 6;
    assert_int_equal(read_flags(c, NULL, &n, MOJO_READ_DATA_FLAG_DISCARD), INVALID);
    n = 0;
    assert_int_equal(MojoReadData(c, NULL, buf, &n), MOJO_RESULT_SHOULD_WAIT); /* nothing asked */
    n = 16;
    assert_int_equal(MojoReadData(c, NULL, buf, &n), OK);
    assert_int_equal(n, 12);
    cmojo_test_close_ok(p);
    cmojo_test_close_ok(c);
}

/* What was written before the producer closed is all read; then FAILED_PRECONDITION. */
static void consumer_drains_after_producer_closes(void **state)
{
    (void)state;
    MojoHandle p, c;
    make_dp(1, 16, &p, &c);
    write_all(p, "tail", 4);
    cmojo_test_close_ok(p);
    assert_true(satisfied(c, MOJO_HANDLE_SIGNAL_PEER_CLOSED | MOJO_HANDLE_SIGNAL_READABLE));
    char buf[8];
    uint32_t n = 8;
    assert_int_equal(read_flags(c, buf, &n, MOJO_READ_DATA_FLAG_ALL_OR_NONE),
                     MOJO_RESULT_FAILED_PRECONDITION); /* 8 will never come */
    n = 2;
    assert_int_equal(MojoReadData(c, NULL, buf, &n), OK);
    n = 8;
    assert_int_equal(MojoReadData(c, NULL, buf, &n), OK);
    assert_int_equal(n, 2);
    assert_memory_equal(buf, "il", 2);
    n = 1;
    assert_int_equal(MojoReadData(c, NULL, buf, &n), MOJO_RESULT_FAILED_PRECONDITION);
    const void *span;
    assert_int_equal(MojoBeginReadData(c, NULL, &span, &n), MOJO_RESULT_FAILED_PRECONDITION);
    n = 5;
    assert_int_equal(read_flags(c, NULL, &n, MOJO_READ_DATA_FLAG_QUERY), OK);
    assert_int_equal(n, 0);
    struct MojoHandleSignalsState s = query(c);
    assert_int_equal(s.satisfied_signals, MOJO_HANDLE_SIGNAL_PEER_CLOSED);
    assert_int_equal(s.satisfiable_signals, MOJO_HANDLE_SIGNAL_PEER_CLOSED);
    cmojo_test_close_ok(c);
}

/* -------------------------------------------------------------- two-phase */

static void two_phase_write(void **state)
{
    (void)state;
    MojoHandle p, c;
    make_dp(2, 10, &p, &c);
    write_all(p, "xxxxxx", 6);
    char buf[16];
    read_exact(c, buf, 6); /* the write offset is now 6: 4 bytes to the end */
    void *span;
    uint32_t n = 0;
    assert_int_equal(MojoBeginWriteData(p, NULL, &span, &n), OK);
    assert_int_equal(n, 4); /* contiguous, though 10 are free */
    assert_false(satisfied(p, MOJO_HANDLE_SIGNAL_WRITABLE));
    /* Everything else is BUSY while it is open. */
    uint32_t k = 2;
    assert_int_equal(MojoWriteData(p, "zz", &k, NULL), MOJO_RESULT_BUSY);
    void *span2;
    uint32_t n2 = 0;
    assert_int_equal(MojoBeginWriteData(p, NULL, &span2, &n2), MOJO_RESULT_BUSY);
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    MojoMessageHandle m;
    assert_int_equal(MojoCreateMessage(NULL, &m), OK);
    assert_int_equal(MojoAppendMessageData(m, 0, &p, 1, NULL, NULL, NULL), MOJO_RESULT_BUSY);
    assert_int_equal(MojoDestroyMessage(m), OK);
    memcpy(span, "wxyz", 4);
    assert_int_equal(MojoEndWriteData(p, 4, NULL), OK);
    assert_true(satisfied(p, MOJO_HANDLE_SIGNAL_WRITABLE));
    assert_int_equal(MojoEndWriteData(p, 0, NULL), MOJO_RESULT_FAILED_PRECONDITION);
    /* After the wrap: the span starts at 0. */
    assert_int_equal(MojoBeginWriteData(p, NULL, &span, &n), OK);
    assert_int_equal(n, 6);
    memcpy(span, "AB", 2);
    assert_int_equal(MojoEndWriteData(p, 2, NULL), OK);
    read_exact(c, buf, 6);
    assert_memory_equal(buf, "wxyzAB", 6);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
    cmojo_test_close_ok(p);
    cmojo_test_close_ok(c);
}

static void two_phase_write_errors_end_the_operation(void **state)
{
    (void)state;
    MojoHandle p, c;
    make_dp(2, 8, &p, &c);
    void *span;
    uint32_t n = 0;
    assert_int_equal(MojoBeginWriteData(p, NULL, NULL, &n), INVALID);
    assert_int_equal(MojoBeginWriteData(p, NULL, &span, NULL), INVALID);
    struct MojoBeginWriteDataOptions bad = {sizeof(bad), 1u << 4};
    assert_int_equal(MojoBeginWriteData(p, &bad, &span, &n), INVALID);
    assert_int_equal(MojoBeginWriteData(c, NULL, &span, &n), INVALID);
    /* ALL_OR_NONE makes the hint a minimum. */
    struct MojoBeginWriteDataOptions aon = {sizeof(aon), MOJO_BEGIN_WRITE_DATA_FLAG_ALL_OR_NONE};
    n = 10;
    assert_int_equal(MojoBeginWriteData(p, &aon, &span, &n), MOJO_RESULT_OUT_OF_RANGE);
    n = 8;
    assert_int_equal(MojoBeginWriteData(p, &aon, &span, &n), OK);
    assert_int_equal(n, 8);
    /* Too much: INVALID, and the operation is over; nothing committed. */
    assert_int_equal(MojoEndWriteData(p, 10, NULL), INVALID);
    assert_int_equal(MojoEndWriteData(p, 0, NULL), MOJO_RESULT_FAILED_PRECONDITION);
    assert_int_equal(readable(c), 0);
    n = 0;
    assert_int_equal(MojoBeginWriteData(p, NULL, &span, &n), OK);
    assert_int_equal(MojoEndWriteData(p, 3, NULL), INVALID); /* half an element */
    assert_int_equal(readable(c), 0);
    /* Full: SHOULD_WAIT; consumer gone: FAILED_PRECONDITION. */
    write_all(p, "12345678", 8);
    assert_int_equal(MojoBeginWriteData(p, NULL, &span, &n), MOJO_RESULT_SHOULD_WAIT);
    cmojo_test_close_ok(c);
    assert_int_equal(MojoBeginWriteData(p, NULL, &span, &n), MOJO_RESULT_FAILED_PRECONDITION);
    cmojo_test_close_ok(p);
}

static void two_phase_read(void **state)
{
    (void)state;
    MojoHandle p, c;
    make_dp(1, 8, &p, &c);
    write_all(p, "abcdef", 6);
    char buf[8];
    read_exact(c, buf, 5);
    write_all(p, "ghijk", 5); /* 6 readable: f g h at offsets 5..7, then i j k at 0..2 */
    const void *span;
    uint32_t n;
    assert_int_equal(MojoBeginReadData(c, NULL, &span, &n), OK);
    assert_int_equal(n, 3);
    assert_memory_equal(span, "fgh", 3);
    assert_false(satisfied(c, MOJO_HANDLE_SIGNAL_READABLE));
    uint32_t k = 1;
    assert_int_equal(MojoReadData(c, NULL, buf, &k), MOJO_RESULT_BUSY);
    assert_int_equal(read_flags(c, NULL, &k, MOJO_READ_DATA_FLAG_QUERY), MOJO_RESULT_BUSY);
    const void *span2;
    assert_int_equal(MojoBeginReadData(c, NULL, &span2, &k), MOJO_RESULT_BUSY);
    assert_int_equal(MojoEndReadData(c, 4, NULL), INVALID); /* beyond the span: ended */
    assert_int_equal(MojoEndReadData(c, 0, NULL), MOJO_RESULT_FAILED_PRECONDITION);
    assert_int_equal(readable(c), 6); /* nothing removed */
    assert_int_equal(MojoBeginReadData(c, NULL, &span, &n), OK);
    assert_int_equal(MojoEndReadData(c, 3, NULL), OK);
    assert_int_equal(MojoBeginReadData(c, NULL, &span, &n), OK);
    assert_int_equal(n, 3);
    assert_memory_equal(span, "ijk", 3);
    assert_int_equal(MojoEndReadData(c, 1, NULL), OK);
    read_exact(c, buf, 2);
    assert_memory_equal(buf, "jk", 2);
    assert_int_equal(MojoBeginReadData(c, NULL, &span, &n), MOJO_RESULT_SHOULD_WAIT);
    assert_int_equal(MojoBeginReadData(c, NULL, NULL, &n), INVALID);
    assert_int_equal(MojoBeginReadData(p, NULL, &span, &n), INVALID);
    assert_int_equal(MojoEndReadData(p, 0, NULL), INVALID);
    cmojo_test_close_ok(p);
    cmojo_test_close_ok(c);
}

static void two_phase_read_element_checks(void **state)
{
    (void)state;
    MojoHandle p, c;
    make_dp(4, 16, &p, &c);
    write_all(p, "AAAABBBB", 8);
    const void *span;
    uint32_t n;
    assert_int_equal(MojoBeginReadData(c, NULL, &span, &n), OK);
    assert_int_equal(n, 8);
    assert_int_equal(MojoEndReadData(c, 2, NULL), INVALID);
    assert_int_equal(readable(c), 8);
    cmojo_test_close_ok(c); /* closing with nothing open */
    uint32_t k = 4;
    assert_int_equal(MojoWriteData(p, "CCCC", &k, NULL), MOJO_RESULT_FAILED_PRECONDITION);
    cmojo_test_close_ok(p);
}

/* ---------------------------------------------------------------- signals */

static void signals_follow_the_data(void **state)
{
    (void)state;
    MojoHandle p, c;
    make_dp(1, 4, &p, &c);
    struct MojoHandleSignalsState s = query(p);
    assert_int_equal(s.satisfied_signals, MOJO_HANDLE_SIGNAL_WRITABLE);
    assert_int_equal(s.satisfiable_signals, MOJO_HANDLE_SIGNAL_WRITABLE |
                                                MOJO_HANDLE_SIGNAL_PEER_CLOSED |
                                                MOJO_HANDLE_SIGNAL_PEER_REMOTE);
    s = query(c);
    assert_int_equal(s.satisfied_signals, 0);
    assert_int_equal(s.satisfiable_signals,
                     MOJO_HANDLE_SIGNAL_READABLE | MOJO_HANDLE_SIGNAL_NEW_DATA_READABLE |
                         MOJO_HANDLE_SIGNAL_PEER_CLOSED | MOJO_HANDLE_SIGNAL_PEER_REMOTE);

    write_all(p, "ab", 2);
    assert_true(satisfied(c, MOJO_HANDLE_SIGNAL_READABLE | MOJO_HANDLE_SIGNAL_NEW_DATA_READABLE));
    /* Any read clears NEW_DATA_READABLE; READABLE stays while data is left. */
    uint32_t n = 0;
    assert_int_equal(read_flags(c, NULL, &n, MOJO_READ_DATA_FLAG_QUERY), OK);
    assert_true(satisfied(c, MOJO_HANDLE_SIGNAL_READABLE));
    assert_false(satisfied(c, MOJO_HANDLE_SIGNAL_NEW_DATA_READABLE));
    write_all(p, "cd", 2);
    assert_true(satisfied(c, MOJO_HANDLE_SIGNAL_NEW_DATA_READABLE));
    assert_false(satisfied(p, MOJO_HANDLE_SIGNAL_WRITABLE)); /* full */
    char buf[4];
    read_exact(c, buf, 1);
    assert_true(satisfied(p, MOJO_HANDLE_SIGNAL_WRITABLE));
    assert_false(satisfied(c, MOJO_HANDLE_SIGNAL_NEW_DATA_READABLE));
    read_exact(c, buf, 3);
    assert_false(satisfied(c, MOJO_HANDLE_SIGNAL_READABLE));

    cmojo_test_close_ok(c);
    s = query(p);
    assert_int_equal(s.satisfied_signals, MOJO_HANDLE_SIGNAL_PEER_CLOSED);
    assert_int_equal(s.satisfiable_signals, MOJO_HANDLE_SIGNAL_PEER_CLOSED);
    cmojo_test_close_ok(p);
}

/* ------------------------------------------------------------------ traps */

struct trap_log {
    atomic_int fired[4];
    atomic_int cancelled[4];
};

static void trap_handler(const struct MojoTrapEvent *e)
{
    struct trap_log *log = (struct trap_log *)(uintptr_t)e->trigger_context;
    int which = (int)((uintptr_t)e->trigger_context & 3u);
    (void)which;
    if (e->result == MOJO_RESULT_CANCELLED)
        atomic_fetch_add(&log->cancelled[0], 1);
    else if (e->result == OK)
        atomic_fetch_add(&log->fired[0], 1);
}

static void traps_on_both_ends(void **state)
{
    (void)state;
    MojoHandle p, c, trap;
    make_dp(1, 4, &p, &c);
    static struct trap_log readable_log, writable_log;
    memset(&readable_log, 0, sizeof(readable_log));
    memset(&writable_log, 0, sizeof(writable_log));
    assert_int_equal(MojoCreateTrap(trap_handler, NULL, &trap), OK);
    assert_int_equal(MojoAddTrigger(trap, c, MOJO_HANDLE_SIGNAL_READABLE,
                                    MOJO_TRIGGER_CONDITION_SIGNALS_SATISFIED,
                                    (uintptr_t)&readable_log, NULL),
                     OK);
    assert_int_equal(MojoArmTrap(trap, NULL, NULL, NULL), OK);
    write_all(p, "abcd", 4);
    assert_int_equal(atomic_load(&readable_log.fired[0]), 1);

    /* WRITABLE on a full producer fires once the consumer reads. */
    assert_int_equal(MojoAddTrigger(trap, p, MOJO_HANDLE_SIGNAL_WRITABLE,
                                    MOJO_TRIGGER_CONDITION_SIGNALS_SATISFIED,
                                    (uintptr_t)&writable_log, NULL),
                     OK);
    uint32_t num_events = 2;
    struct MojoTrapEvent events[2];
    memset(events, 0, sizeof(events));
    events[0].struct_size = events[1].struct_size = sizeof(events[0]);
    /* The consumer is readable already: arming reports it instead. */
    assert_int_equal(MojoArmTrap(trap, NULL, &num_events, events), MOJO_RESULT_FAILED_PRECONDITION);
    assert_int_equal(MojoRemoveTrigger(trap, (uintptr_t)&readable_log, NULL), OK);
    assert_int_equal(atomic_load(&readable_log.cancelled[0]), 1);
    assert_int_equal(MojoArmTrap(trap, NULL, NULL, NULL), OK);
    char buf[2];
    read_exact(c, buf, 2);
    assert_int_equal(atomic_load(&writable_log.fired[0]), 1);
    /* Closing the watched handle cancels its trigger. */
    cmojo_test_close_ok(p);
    assert_int_equal(atomic_load(&writable_log.cancelled[0]), 1);
    cmojo_test_close_ok(trap);
    cmojo_test_close_ok(c);
}

/* A trigger on an end that is sent away is cancelled (its handle is gone). */
static void sending_an_end_cancels_its_triggers(void **state)
{
    (void)state;
    MojoHandle p, c, trap;
    make_dp(1, 8, &p, &c);
    static struct trap_log log;
    memset(&log, 0, sizeof(log));
    assert_int_equal(MojoCreateTrap(trap_handler, NULL, &trap), OK);
    assert_int_equal(MojoAddTrigger(trap, c, MOJO_HANDLE_SIGNAL_READABLE,
                                    MOJO_TRIGGER_CONDITION_SIGNALS_SATISFIED, (uintptr_t)&log,
                                    NULL),
                     OK);
    MojoHandle c2 = send_through_pipe(c);
    assert_int_equal(atomic_load(&log.cancelled[0]), 1);
    assert_int_equal(MojoArmTrap(trap, NULL, NULL, NULL), MOJO_RESULT_NOT_FOUND);
    write_all(p, "x", 1);
    assert_int_equal(atomic_load(&log.fired[0]), 0);
    assert_int_equal(readable(c2), 1);
    cmojo_test_close_ok(trap);
    cmojo_test_close_ok(p);
    cmojo_test_close_ok(c2);
}

/* ---------------------------------------------------------------- transit */

/* The consumer travels mid-stream, with data before, during and after. */
static void consumer_moves_mid_stream(void **state)
{
    (void)state;
    MojoHandle p, c;
    make_dp(1, 16, &p, &c);
    write_all(p, "0123", 4);
    char buf[16];
    read_exact(c, buf, 2);
    MojoHandle c2 = send_through_pipe(c);
    assert_int_equal(MojoClose(c), INVALID); /* the old handle is gone */
    write_all(p, "4567", 4);
    MojoHandle c3 = send_through_pipe(c2);
    write_all(p, "89", 2);
    uint32_t n = sizeof(buf);
    assert_int_equal(MojoReadData(c3, NULL, buf, &n), OK);
    assert_int_equal(n, 8);
    assert_memory_equal(buf, "23456789", 8);
    /* The producer saw every read: the whole capacity is free again. */
    write_all(p, "ABCDEFGHIJKLMNOP", 16);
    cmojo_test_close_ok(p);
    read_exact(c3, buf, 16);
    assert_memory_equal(buf, "ABCDEFGHIJKLMNOP", 16);
    assert_true(satisfied(c3, MOJO_HANDLE_SIGNAL_PEER_CLOSED));
    cmojo_test_close_ok(c3);
}

static void producer_moves_mid_stream(void **state)
{
    (void)state;
    MojoHandle p, c;
    make_dp(2, 8, &p, &c);
    write_all(p, "aabb", 4);
    MojoHandle p2 = send_through_pipe(p);
    char buf[8];
    read_exact(c, buf, 4); /* this count reaches the producer at its new place */
    write_all(p2, "ccddeeff", 8);
    uint32_t n = 2;
    assert_int_equal(MojoWriteData(p2, "gg", &n, NULL), MOJO_RESULT_SHOULD_WAIT);
    read_exact(c, buf, 8);
    assert_memory_equal(buf, "ccddeeff", 8);
    cmojo_test_close_ok(c);
    assert_true(satisfied(p2, MOJO_HANDLE_SIGNAL_PEER_CLOSED));
    cmojo_test_close_ok(p2);
}

/* Both ends in one message, then used on the other side. */
static void both_ends_travel_together(void **state)
{
    (void)state;
    MojoHandle p, c, a, b;
    make_dp(1, 8, &p, &c);
    write_all(p, "hi", 2);
    cmojo_test_make_pipe(&a, &b);
    MojoMessageHandle m;
    assert_int_equal(MojoCreateMessage(NULL, &m), OK);
    MojoHandle hs[2] = {c, p};
    struct MojoAppendMessageDataOptions commit = {sizeof(commit),
                                                  MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE};
    assert_int_equal(MojoAppendMessageData(m, 0, hs, 2, &commit, NULL, NULL), OK);
    assert_int_equal(MojoWriteMessage(a, m, NULL), OK);
    assert_int_equal(MojoReadMessage(b, NULL, &m), OK);
    uint32_t nh = 2;
    assert_int_equal(MojoGetMessageData(m, NULL, NULL, NULL, hs, &nh), OK);
    assert_int_equal(MojoDestroyMessage(m), OK);
    write_all(hs[1], "!", 1);
    char buf[4];
    read_exact(hs[0], buf, 3);
    assert_memory_equal(buf, "hi!", 3);
    cmojo_test_close_ok(hs[0]);
    cmojo_test_close_ok(hs[1]);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

/* A message carrying an end is destroyed unread: the other end sees PEER_CLOSED, nothing leaks. */
static void end_lost_in_an_unread_message(void **state)
{
    (void)state;
    MojoHandle p, c, a, b;
    make_dp(1, 8, &p, &c);
    write_all(p, "data", 4);
    cmojo_test_make_pipe(&a, &b);
    MojoMessageHandle m;
    assert_int_equal(MojoCreateMessage(NULL, &m), OK);
    struct MojoAppendMessageDataOptions commit = {sizeof(commit),
                                                  MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE};
    assert_int_equal(MojoAppendMessageData(m, 0, &c, 1, &commit, NULL, NULL), OK);
    assert_int_equal(MojoWriteMessage(a, m, NULL), OK);
    assert_false(satisfied(p, MOJO_HANDLE_SIGNAL_PEER_CLOSED));
    cmojo_test_close_ok(b); /* the message dies unread with its port */
    assert_true(satisfied(p, MOJO_HANDLE_SIGNAL_PEER_CLOSED));
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(p);
}

/* A message destroyed before it is written closes the end it carries. */
static void destroyed_message_closes_the_end(void **state)
{
    (void)state;
    MojoHandle p, c;
    make_dp(1, 8, &p, &c);
    MojoMessageHandle m;
    assert_int_equal(MojoCreateMessage(NULL, &m), OK);
    assert_int_equal(MojoAppendMessageData(m, 0, &c, 1, NULL, NULL, NULL), OK);
    uint32_t n = 1;
    char x;
    assert_int_equal(MojoReadData(c, NULL, &x, &n), MOJO_RESULT_BUSY); /* attached */
    /* Destroying the message closes what it owns. */
    assert_int_equal(MojoDestroyMessage(m), OK);
    assert_true(satisfied(p, MOJO_HANDLE_SIGNAL_PEER_CLOSED));
    assert_int_equal(MojoClose(c), INVALID);
    cmojo_test_close_ok(p);
}

/* ---------------------------------------------------------------- threads */

#define STREAM_BYTES (8u << 20)

struct stream {
    MojoHandle p, c;
    bool two_phase;
    uint64_t sum_written, sum_read;
    uint32_t bytes_read;
};

static uint8_t pattern(uint32_t i)
{
    return (uint8_t)(i * 2654435761u >> 24);
}

static void *producer_thread(void *arg)
{
    struct stream *s = arg;
    uint8_t chunk[3000];
    uint32_t sent = 0, seed = 1;
    while (sent < STREAM_BYTES) {
        seed = seed * 1103515245u + 12345u;
        uint32_t want = 1 + (seed >> 16) % sizeof(chunk);
        if (want > STREAM_BYTES - sent)
            want = STREAM_BYTES - sent;
        MojoResult rv;
        if (s->two_phase && (seed & 0x100)) {
            void *span;
            uint32_t n = want;
            rv = MojoBeginWriteData(s->p, NULL, &span, &n);
            if (rv == OK) {
                if (n > want)
                    n = want;
                for (uint32_t i = 0; i < n; i++)
                    ((uint8_t *)span)[i] = pattern(sent + i);
                rv = MojoEndWriteData(s->p, n, NULL);
                if (rv == OK)
                    sent += n;
            }
        } else {
            for (uint32_t i = 0; i < want; i++)
                chunk[i] = pattern(sent + i);
            uint32_t n = want;
            rv = MojoWriteData(s->p, chunk, &n, NULL);
            if (rv == OK)
                sent += n;
        }
        if (rv == MOJO_RESULT_SHOULD_WAIT)
            rv = MojoWait(s->p, MOJO_HANDLE_SIGNAL_WRITABLE, MOJO_DEADLINE_INDEFINITE, NULL);
        if (rv != OK)
            return (void *)(uintptr_t)1;
    }
    s->sum_written = STREAM_BYTES;
    return NULL;
}

static void *consumer_thread(void *arg)
{
    struct stream *s = arg;
    uint8_t chunk[4096];
    uint32_t got = 0, seed = 7;
    bool bad = false;
    while (got < STREAM_BYTES) {
        seed = seed * 1103515245u + 12345u;
        MojoResult rv;
        if (s->two_phase && (seed & 0x100)) {
            const void *span;
            uint32_t n;
            rv = MojoBeginReadData(s->c, NULL, &span, &n);
            if (rv == OK) {
                uint32_t take = 1 + (seed >> 16) % n;
                for (uint32_t i = 0; i < take; i++)
                    bad |= ((const uint8_t *)span)[i] != pattern(got + i);
                rv = MojoEndReadData(s->c, take, NULL);
                got += take;
            }
        } else {
            uint32_t n = 1 + (seed >> 16) % sizeof(chunk);
            rv = MojoReadData(s->c, NULL, chunk, &n);
            if (rv == OK) {
                for (uint32_t i = 0; i < n; i++)
                    bad |= chunk[i] != pattern(got + i);
                got += n;
            }
        }
        if (rv == MOJO_RESULT_SHOULD_WAIT)
            rv = MojoWait(s->c, MOJO_HANDLE_SIGNAL_READABLE, MOJO_DEADLINE_INDEFINITE, NULL);
        if (rv != OK || bad)
            break;
    }
    s->bytes_read = got;
    s->sum_read = bad ? 0 : got;
    return NULL;
}

static void stream_between_threads(bool two_phase, uint32_t capacity)
{
    struct stream s = {.two_phase = two_phase};
    make_dp(1, capacity, &s.p, &s.c);
    pthread_t tp, tc;
    assert_int_equal(pthread_create(&tc, NULL, consumer_thread, &s), 0);
    assert_int_equal(pthread_create(&tp, NULL, producer_thread, &s), 0);
    void *prv;
    pthread_join(tp, &prv);
    pthread_join(tc, NULL);
    assert_null(prv);
    assert_int_equal(s.bytes_read, STREAM_BYTES);
    assert_int_equal(s.sum_read, STREAM_BYTES); /* every byte matched the pattern */
    cmojo_test_close_ok(s.p);
    cmojo_test_close_ok(s.c);
}

static void threads_stream_one_shot(void **state)
{
    (void)state;
    stream_between_threads(false, 4096);
}

static void threads_stream_two_phase(void **state)
{
    (void)state;
    stream_between_threads(true, 10007);
}

/* Closing one end while the other thread is busy on its own end: no crash, clean errors. */
struct racer {
    MojoHandle h;
    atomic_bool stop;
    atomic_int bad_results;
};

static void *write_until_closed(void *arg)
{
    struct racer *r = arg;
    uint8_t buf[512] = {0};
    while (!atomic_load(&r->stop)) {
        uint32_t n = sizeof(buf);
        MojoResult rv = MojoWriteData(r->h, buf, &n, NULL);
        if (rv == INVALID || rv == MOJO_RESULT_FAILED_PRECONDITION)
            break;
        if (rv != OK && rv != MOJO_RESULT_SHOULD_WAIT && rv != MOJO_RESULT_BUSY)
            atomic_fetch_add(&r->bad_results, 1);
    }
    return NULL;
}

static void close_races_writes(void **state)
{
    (void)state;
    for (int round = 0; round < 200; round++) {
        MojoHandle p, c;
        make_dp(1, 1024, &p, &c);
        struct racer r = {.h = p};
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, write_until_closed, &r), 0);
        uint8_t buf[256];
        uint32_t n = sizeof(buf);
        (void)MojoReadData(c, NULL, buf, &n);
        if (round & 1)
            cmojo_test_close_ok(c);
        else
            cmojo_test_close_ok(p);
        atomic_store(&r.stop, true);
        pthread_join(t, NULL);
        assert_int_equal(atomic_load(&r.bad_results), 0);
        if (round & 1)
            cmojo_test_close_ok(p);
        else
            cmojo_test_close_ok(c);
    }
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, cmojo_core_setup, cmojo_core_teardown)
    const struct CMUnitTest tests[] = {
        T(create_with_defaults),
        T(default_capacity_is_whole_elements),
        T(create_rejects_bad_options),
        T(write_then_read),
        T(wrap_around_with_elements),
        T(write_errors),
        T(read_flag_rules),
        T(read_errors_with_elements),
        T(consumer_drains_after_producer_closes),
        T(two_phase_write),
        T(two_phase_write_errors_end_the_operation),
        T(two_phase_read),
        T(two_phase_read_element_checks),
        T(signals_follow_the_data),
        T(traps_on_both_ends),
        T(sending_an_end_cancels_its_triggers),
        T(consumer_moves_mid_stream),
        T(producer_moves_mid_stream),
        T(both_ends_travel_together),
        T(end_lost_in_an_unread_message),
        T(destroyed_message_closes_the_end),
        T(threads_stream_one_shot),
        T(threads_stream_two_phase),
        T(close_races_writes),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
