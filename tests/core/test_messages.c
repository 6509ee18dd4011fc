/*
 * Message objects through the public C API: MojoCreateMessage,
 * MojoAppendMessageData, MojoGetMessageData, contexts and serialization,
 * MojoReserveMessageCapacity, MojoNotifyBadMessage, handles in transit, the
 * options conventions, and MojoInitialize / MojoShutdown.
 *
 * Every test in the main group starts from a freshly initialized library and
 * must end with no handle and no message object left (the fixture checks
 * core_debug_handle_count() and core_debug_message_count(), then shuts down
 * and checks that no fd leaked).
 */
#include "cmojo_test.h"

#include <stdio.h>
#include <string.h>

#include "cmojo/wait.h"
#include "cmojo_limits.h"
#include "core/core.h"
#include "mojo/public/c/system/core.h"

/* ------------------------------------------------------------------ fixtures */

/* What the context callbacks saw; reset before every test. */
#define LOG_MAX 16
static struct {
    int serialize_calls;
    int destroy_calls;
    uintptr_t serialized_context;
    uintptr_t destroyed_context;
    uintptr_t context_seen_inside_serializer; /* MojoGetMessageContext in the serializer */
    MojoResult append_result;                 /* the serializer's MojoAppendMessageData */
    char order[LOG_MAX];                      /* 'S' serializer, 'D' destructor */
    int n;
} cb;

static void reset_callback_log(void)
{
    memset(&cb, 0, sizeof(cb));
    cb.append_result = (MojoResult)-1;
    cb.context_seen_inside_serializer = (uintptr_t)-1;
}

static int setup(void **state)
{
    reset_callback_log();
    return cmojo_core_setup(state);
}

/* ------------------------------------------------------------------ helpers */

static const struct MojoAppendMessageDataOptions commit_opts = {
    sizeof(struct MojoAppendMessageDataOptions), MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE};

static const struct MojoGetMessageDataOptions ignore_handles_opts = {
    sizeof(struct MojoGetMessageDataOptions), MOJO_GET_MESSAGE_DATA_FLAG_IGNORE_HANDLES};

/* A value no real output has, to see that a failed call left outputs alone. */
#define SENTINEL_PTR ((void *)(uintptr_t)0x5a5a5a5a)
#define SENTINEL_U32 0xdeadbeefu
#define SENTINEL_HANDLE ((MojoHandle)0x7a7a7a7a)

/* Readable memory that is not a message: a made-up message handle. */
static _Alignas(64) unsigned char junk[4096];

static struct MojoHandleSignalsState query(MojoHandle h)
{
    struct MojoHandleSignalsState s = {0, 0};
    assert_int_equal(MojoQueryHandleSignalsState(h, &s), MOJO_RESULT_OK);
    return s;
}

static void expect_peer_closed(MojoHandle h)
{
    struct MojoHandleSignalsState s = query(h);
    assert_true(s.satisfied_signals & MOJO_HANDLE_SIGNAL_PEER_CLOSED);
}

static void expect_peer_open(MojoHandle h)
{
    struct MojoHandleSignalsState s = query(h);
    assert_false(s.satisfied_signals & MOJO_HANDLE_SIGNAL_PEER_CLOSED);
    assert_true(s.satisfied_signals & MOJO_HANDLE_SIGNAL_WRITABLE);
}

/* h is an open, usable pipe end whose peer is |peer|: a message gets across. */
static void expect_pipe_works(MojoHandle h, MojoHandle peer)
{
    cmojo_test_write_text(h, "ping", NULL, 0);
    cmojo_test_expect_text(peer, "ping", NULL, 0);
}

/* Context callbacks. */

static void log_event(char what)
{
    if (cb.n < LOG_MAX)
        cb.order[cb.n++] = what;
}

static void destructor(uintptr_t context)
{
    cb.destroy_calls++;
    cb.destroyed_context = context;
    log_event('D');
}

static void note_serializer_entry(MojoMessageHandle message, uintptr_t context)
{
    uintptr_t seen = (uintptr_t)-1;

    cb.serialize_calls++;
    cb.serialized_context = context;
    log_event('S');
    if (MojoGetMessageContext(message, NULL, &seen) == MOJO_RESULT_OK)
        cb.context_seen_inside_serializer = seen;
}

/* Serializes to the 5 bytes "hello", committed. */
static void serialize_hello(MojoMessageHandle message, uintptr_t context)
{
    void *buf = NULL;
    uint32_t cap = 0;

    note_serializer_entry(message, context);
    cb.append_result = MojoAppendMessageData(message, 5, NULL, 0, &commit_opts, &buf, &cap);
    if (cb.append_result == MOJO_RESULT_OK)
        memcpy(buf, "hello", 5);
}

/* The context points at a MojoHandle; serializes to "h!" plus that handle. */
static void serialize_with_handle(MojoMessageHandle message, uintptr_t context)
{
    const MojoHandle *h = (const MojoHandle *)context;
    void *buf = NULL;

    note_serializer_entry(message, context);
    cb.append_result = MojoAppendMessageData(message, 2, h, 1, &commit_opts, &buf, NULL);
    if (cb.append_result == MOJO_RESULT_OK)
        memcpy(buf, "h!", 2);
}

/* Like serialize_with_handle but never commits the size. */
static void serialize_uncommitted(MojoMessageHandle message, uintptr_t context)
{
    const MojoHandle *h = (const MojoHandle *)context;
    void *buf = NULL;

    note_serializer_entry(message, context);
    cb.append_result = MojoAppendMessageData(message, 2, h, 1, NULL, &buf, NULL);
}

static MojoMessageHandle new_context_message(uintptr_t context, MojoMessageContextSerializer s,
                                             MojoMessageContextDestructor d)
{
    MojoMessageHandle m = cmojo_test_new_message();
    assert_int_equal(MojoSetMessageContext(m, context, s, d, NULL), MOJO_RESULT_OK);
    return m;
}

/* ------------------------------------------------------ library lifecycle */
/* These run without the fixture: each starts and ends uninitialized. */

static void test_initialize_twice_fails_precondition(void **state)
{
    (void)state;
    assert_int_equal(MojoInitialize(NULL), MOJO_RESULT_OK);
    assert_int_equal(MojoInitialize(NULL), MOJO_RESULT_FAILED_PRECONDITION);
    assert_int_equal(MojoShutdown(NULL), MOJO_RESULT_OK);
}

static void test_shutdown_without_initialize_fails_precondition(void **state)
{
    (void)state;
    assert_int_equal(MojoShutdown(NULL), MOJO_RESULT_FAILED_PRECONDITION);
    assert_int_equal(MojoInitialize(NULL), MOJO_RESULT_OK);
    assert_int_equal(MojoShutdown(NULL), MOJO_RESULT_OK);
    assert_int_equal(MojoShutdown(NULL), MOJO_RESULT_FAILED_PRECONDITION);
}

static void test_initialize_again_after_shutdown_succeeds(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++) {
        MojoHandle a, b;
        assert_int_equal(MojoInitialize(NULL), MOJO_RESULT_OK);
        cmojo_test_make_pipe(&a, &b);
        expect_pipe_works(a, b);
        cmojo_test_close_ok(a);
        cmojo_test_close_ok(b);
        assert_int_equal(MojoShutdown(NULL), MOJO_RESULT_OK);
    }
}

static void test_initialize_rejects_malformed_options_and_stays_uninitialized(void **state)
{
    (void)state;
    struct MojoInitializeOptions opts;

    memset(&opts, 0, sizeof(opts));
    opts.struct_size = 4; /* does not even cover the flags */
    assert_int_equal(MojoInitialize(&opts), MOJO_RESULT_INVALID_ARGUMENT);
    opts.struct_size = 0;
    assert_int_equal(MojoInitialize(&opts), MOJO_RESULT_INVALID_ARGUMENT);
    opts.struct_size = sizeof(opts);
    opts.flags = (MojoInitializeFlags)1 << 31;
    assert_int_equal(MojoInitialize(&opts), MOJO_RESULT_INVALID_ARGUMENT);
    /* None of those initialized anything. */
    assert_int_equal(MojoShutdown(NULL), MOJO_RESULT_FAILED_PRECONDITION);
    assert_int_equal(MojoInitialize(NULL), MOJO_RESULT_OK);
    assert_int_equal(MojoShutdown(NULL), MOJO_RESULT_OK);
}

static void test_initialize_accepts_full_size_options(void **state)
{
    (void)state;
    struct MojoInitializeOptions opts;

    memset(&opts, 0, sizeof(opts));
    opts.struct_size = sizeof(opts);
    opts.flags = MOJO_INITIALIZE_FLAG_NONE;
    assert_int_equal(MojoInitialize(&opts), MOJO_RESULT_OK);
    assert_int_equal(MojoShutdown(NULL), MOJO_RESULT_OK);
}

static void test_shutdown_rejects_malformed_options_and_stays_initialized(void **state)
{
    (void)state;
    struct MojoShutdownOptions opts = {4, 0};

    assert_int_equal(MojoInitialize(NULL), MOJO_RESULT_OK);
    assert_int_equal(MojoShutdown(&opts), MOJO_RESULT_INVALID_ARGUMENT);
    opts.struct_size = sizeof(opts);
    opts.flags = 0x80u;
    assert_int_equal(MojoShutdown(&opts), MOJO_RESULT_INVALID_ARGUMENT);
    /* Still initialized: */
    assert_int_equal(MojoInitialize(NULL), MOJO_RESULT_FAILED_PRECONDITION);
    opts.flags = MOJO_SHUTDOWN_FLAG_NONE;
    assert_int_equal(MojoShutdown(&opts), MOJO_RESULT_OK);
}

/* Shutdown closes what is open and destroys what is alive, running destructors. */
static void test_shutdown_destroys_live_messages_and_runs_their_destructors(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;

    reset_callback_log();
    assert_int_equal(MojoInitialize(NULL), MOJO_RESULT_OK);
    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    MojoMessageHandle ctx = new_context_message(77, serialize_hello, destructor);
    MojoMessageHandle with_handle = cmojo_test_new_data_message("x", 1, &c, 1);
    cmojo_test_write_text(a, "unread", NULL, 0);
    (void)ctx;
    (void)with_handle;
    assert_int_equal(MojoShutdown(NULL), MOJO_RESULT_OK);
    assert_int_equal(cb.destroy_calls, 1);
    assert_int_equal(cb.destroyed_context, 77);
    assert_int_equal(cb.serialize_calls, 0);
    assert_int_equal(core_debug_handle_count(), 0);
    assert_int_equal(core_debug_message_count(), 0);
}

/* ---------------------------------------------------------- MojoCreateMessage */

static void test_create_message_gives_distinct_valid_handles(void **state)
{
    (void)state;
    MojoMessageHandle m1 = cmojo_test_new_message();
    MojoMessageHandle m2 = cmojo_test_new_message();

    assert_true(m1 != m2);
    assert_int_equal(core_debug_message_count(), 2);
    assert_int_equal(MojoDestroyMessage(m1), MOJO_RESULT_OK);
    assert_int_equal(MojoDestroyMessage(m2), MOJO_RESULT_OK);
    assert_int_equal(core_debug_message_count(), 0);
}

static void test_create_message_null_out_is_invalid_argument(void **state)
{
    (void)state;
    assert_int_equal(MojoCreateMessage(NULL, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(core_debug_message_count(), 0);
}

static void test_create_message_rejects_malformed_options_leaving_output(void **state)
{
    (void)state;
    MojoMessageHandle m = (MojoMessageHandle)SENTINEL_PTR;
    struct MojoCreateMessageOptions opts = {4, 0};

    assert_int_equal(MojoCreateMessage(&opts, &m), MOJO_RESULT_INVALID_ARGUMENT);
    assert_true(m == (MojoMessageHandle)SENTINEL_PTR);
    opts.struct_size = sizeof(opts);
    opts.flags = 2; /* UNLIMITED_SIZE is 1; 2 is unknown */
    assert_int_equal(MojoCreateMessage(&opts, &m), MOJO_RESULT_INVALID_ARGUMENT);
    assert_true(m == (MojoMessageHandle)SENTINEL_PTR);
    opts.flags = 0x80000000u;
    assert_int_equal(MojoCreateMessage(&opts, &m), MOJO_RESULT_INVALID_ARGUMENT);
    assert_true(m == (MojoMessageHandle)SENTINEL_PTR);
    assert_int_equal(core_debug_message_count(), 0);
}

static void test_create_message_accepts_known_flags_and_larger_struct(void **state)
{
    (void)state;
    /* A later version of the struct, bigger than the one cmojo knows. */
    struct {
        struct MojoCreateMessageOptions known;
        uint64_t future_field;
    } bigger = {{sizeof(bigger), MOJO_CREATE_MESSAGE_FLAG_UNLIMITED_SIZE}, 0};
    struct MojoCreateMessageOptions opts = {sizeof(opts), MOJO_CREATE_MESSAGE_FLAG_UNLIMITED_SIZE};
    MojoMessageHandle m1 = MOJO_MESSAGE_HANDLE_INVALID, m2 = MOJO_MESSAGE_HANDLE_INVALID;

    assert_int_equal(MojoCreateMessage(&opts, &m1), MOJO_RESULT_OK);
    assert_int_equal(MojoCreateMessage(&bigger.known, &m2), MOJO_RESULT_OK);
    assert_true(m1 != MOJO_MESSAGE_HANDLE_INVALID && m2 != MOJO_MESSAGE_HANDLE_INVALID);
    assert_int_equal(MojoDestroyMessage(m1), MOJO_RESULT_OK);
    assert_int_equal(MojoDestroyMessage(m2), MOJO_RESULT_OK);
}

/* UNLIMITED_SIZE lifts the payload limit for a pipe within this process. */
static void test_unlimited_message_over_the_limit_travels_in_process(void **state)
{
    (void)state;
    const struct MojoCreateMessageOptions opts = {sizeof(opts),
                                                  MOJO_CREATE_MESSAGE_FLAG_UNLIMITED_SIZE};
    const uint32_t size = CMOJO_MAX_MESSAGE_NUM_BYTES + 8u;
    MojoHandle a, b;
    MojoMessageHandle m;
    void *buf;

    cmojo_test_make_pipe(&a, &b);
    assert_int_equal(MojoCreateMessage(&opts, &m), MOJO_RESULT_OK);
    assert_int_equal(MojoAppendMessageData(m, size, NULL, 0, &commit_opts, &buf, NULL),
                     MOJO_RESULT_OK);
    memset(buf, 0x3c, size);
    assert_int_equal(MojoWriteMessage(a, m, NULL), MOJO_RESULT_OK);
    assert_int_equal(MojoReadMessage(b, NULL, &m), MOJO_RESULT_OK);
    uint32_t n = 0;
    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(n, size);
    assert_int_equal(((unsigned char *)buf)[size - 1], 0x3c);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_destroy_message_twice_is_invalid_argument(void **state)
{
    (void)state;
    MojoMessageHandle m = cmojo_test_new_message();

    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_INVALID_ARGUMENT);
}

/* ------------------------------------------------------ MojoAppendMessageData */

static void test_append_then_commit_gives_payload_back(void **state)
{
    (void)state;
    MojoMessageHandle m = cmojo_test_new_data_message("abcdef", 6, NULL, 0);
    void *buf = NULL;
    uint32_t n = 0, nh = 0;

    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, NULL, &nh), MOJO_RESULT_OK);
    assert_int_equal(n, 6);
    assert_int_equal(nh, 0);
    assert_memory_equal(buf, "abcdef", 6);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
}

static void test_append_grows_payload_keeping_earlier_bytes(void **state)
{
    (void)state;
    MojoMessageHandle m = cmojo_test_new_message();
    unsigned char *buf = NULL;
    uint32_t cap = 0;
    uint32_t total = 0;
    const uint32_t steps[] = {10, 1, 100, 1000, 7, 65536, 3};

    for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
        void *out = NULL;
        assert_int_equal(MojoAppendMessageData(m, steps[s], NULL, 0, NULL, &out, &cap),
                         MOJO_RESULT_OK);
        buf = out;
        assert_non_null(buf);
        assert_true(cap >= total + steps[s]);
        /* Everything written so far is still there, wherever the buffer went. */
        for (uint32_t i = 0; i < total; i++)
            assert_int_equal(buf[i], (unsigned char)(i * 7 + 3));
        for (uint32_t i = total; i < total + steps[s]; i++)
            buf[i] = (unsigned char)(i * 7 + 3);
        total += steps[s];
    }
    void *out = NULL;
    assert_int_equal(MojoAppendMessageData(m, 0, NULL, 0, &commit_opts, &out, NULL),
                     MOJO_RESULT_OK);
    uint32_t n = 0;
    assert_int_equal(MojoGetMessageData(m, NULL, &out, &n, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(n, total);
    buf = out;
    for (uint32_t i = 0; i < total; i++)
        assert_int_equal(buf[i], (unsigned char)(i * 7 + 3));
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
}

static void test_append_with_null_buffer_outputs_is_ok(void **state)
{
    (void)state;
    MojoMessageHandle m = cmojo_test_new_message();
    void *buf = NULL;
    uint32_t n = 0;

    assert_int_equal(MojoAppendMessageData(m, 3, NULL, 0, NULL, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(MojoAppendMessageData(m, 0, NULL, 0, &commit_opts, NULL, NULL),
                     MOJO_RESULT_OK);
    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(n, 3);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
}

static void test_append_after_commit_fails_precondition(void **state)
{
    (void)state;
    MojoMessageHandle m = cmojo_test_new_data_message("ab", 2, NULL, 0);
    MojoHandle a, b;
    void *buf = SENTINEL_PTR;

    cmojo_test_make_pipe(&a, &b);
    assert_int_equal(MojoAppendMessageData(m, 1, NULL, 0, NULL, &buf, NULL),
                     MOJO_RESULT_FAILED_PRECONDITION);
    assert_ptr_equal(buf, SENTINEL_PTR);
    assert_int_equal(MojoAppendMessageData(m, 0, NULL, 0, &commit_opts, &buf, NULL),
                     MOJO_RESULT_FAILED_PRECONDITION);
    /* A handle offered to a committed message is not taken. */
    assert_int_equal(MojoAppendMessageData(m, 0, &a, 1, NULL, NULL, NULL),
                     MOJO_RESULT_FAILED_PRECONDITION);
    expect_pipe_works(a, b);
    uint32_t n = 0;
    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(n, 2);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_append_to_context_message_fails_precondition(void **state)
{
    (void)state;
    MojoMessageHandle m = new_context_message(1234, serialize_hello, destructor);
    void *buf = SENTINEL_PTR;

    assert_int_equal(MojoAppendMessageData(m, 4, NULL, 0, NULL, &buf, NULL),
                     MOJO_RESULT_FAILED_PRECONDITION);
    assert_ptr_equal(buf, SENTINEL_PTR);
    uintptr_t ctx = 0;
    assert_int_equal(MojoGetMessageContext(m, NULL, &ctx), MOJO_RESULT_OK);
    assert_int_equal(ctx, 1234);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    assert_int_equal(cb.destroy_calls, 1);
    assert_int_equal(cb.serialize_calls, 0);
}

static void test_append_beyond_payload_limit_is_resource_exhausted(void **state)
{
    (void)state;
    MojoMessageHandle m = cmojo_test_new_message();
    void *buf = SENTINEL_PTR;
    uint32_t cap = SENTINEL_U32;

    assert_int_equal(MojoAppendMessageData(m, 4, NULL, 0, NULL, &buf, NULL), MOJO_RESULT_OK);
    memcpy(buf, "keep", 4);
    buf = SENTINEL_PTR;
    assert_int_equal(MojoAppendMessageData(m, UINT32_MAX, NULL, 0, NULL, &buf, &cap),
                     MOJO_RESULT_RESOURCE_EXHAUSTED);
    assert_ptr_equal(buf, SENTINEL_PTR);
    assert_int_equal(cap, SENTINEL_U32);
    /* The failed append changed nothing. */
    assert_int_equal(MojoAppendMessageData(m, 0, NULL, 0, &commit_opts, NULL, NULL),
                     MOJO_RESULT_OK);
    uint32_t n = 0;
    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(n, 4);
    assert_memory_equal(buf, "keep", 4);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
}

/* Two appends that each fit in a uint32_t but whose sum does not. */
static void test_append_total_overflowing_uint32_is_resource_exhausted(void **state)
{
    (void)state;
    MojoMessageHandle m = cmojo_test_new_message();

    assert_int_equal(MojoAppendMessageData(m, 16, NULL, 0, NULL, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(MojoAppendMessageData(m, UINT32_MAX - 8, NULL, 0, NULL, NULL, NULL),
                     MOJO_RESULT_RESOURCE_EXHAUSTED);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
}

static void test_append_null_handles_with_count_is_invalid_argument(void **state)
{
    (void)state;
    MojoMessageHandle m = cmojo_test_new_message();
    void *buf = SENTINEL_PTR;

    assert_int_equal(MojoAppendMessageData(m, 4, NULL, 1, NULL, &buf, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_ptr_equal(buf, SENTINEL_PTR);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
}

static void test_append_invalid_handle_attaches_nothing(void **state)
{
    (void)state;
    MojoHandle a, b, closed_a, closed_b;
    MojoMessageHandle m = cmojo_test_new_message();

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&closed_a, &closed_b);
    cmojo_test_close_ok(closed_a);

    MojoHandle bogus[] = {a, (MojoHandle)0x12345678};
    assert_int_equal(MojoAppendMessageData(m, 0, bogus, 2, NULL, NULL, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    MojoHandle invalid[] = {a, MOJO_HANDLE_INVALID};
    assert_int_equal(MojoAppendMessageData(m, 0, invalid, 2, NULL, NULL, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    MojoHandle stale[] = {a, closed_a};
    assert_int_equal(MojoAppendMessageData(m, 0, stale, 2, NULL, NULL, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);

    /* a was listed in every call but never taken: */
    expect_pipe_works(a, b);
    assert_int_equal(MojoAppendMessageData(m, 1, NULL, 0, &commit_opts, NULL, NULL),
                     MOJO_RESULT_OK);
    MojoHandle got[4] = {0};
    uint32_t nh = 4, n = 0;
    void *buf = NULL;
    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, got, &nh), MOJO_RESULT_OK);
    assert_int_equal(nh, 0);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    expect_pipe_works(b, a);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
    cmojo_test_close_ok(closed_b);
}

static void test_append_same_handle_twice_is_busy_and_attaches_nothing(void **state)
{
    (void)state;
    MojoHandle a, b;
    MojoMessageHandle m = cmojo_test_new_message();

    cmojo_test_make_pipe(&a, &b);
    MojoHandle twice[] = {a, a};
    assert_int_equal(MojoAppendMessageData(m, 0, twice, 2, NULL, NULL, NULL), MOJO_RESULT_BUSY);
    expect_pipe_works(a, b); /* not left in transit */
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    expect_pipe_works(a, b); /* and not owned by the destroyed message */
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_append_handle_already_in_another_message_is_busy(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;
    MojoMessageHandle m1 = cmojo_test_new_message();
    MojoMessageHandle m2 = cmojo_test_new_message();

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    assert_int_equal(MojoAppendMessageData(m1, 0, &a, 1, NULL, NULL, NULL), MOJO_RESULT_OK);
    MojoHandle both[] = {c, a};
    assert_int_equal(MojoAppendMessageData(m2, 0, both, 2, NULL, NULL, NULL), MOJO_RESULT_BUSY);
    /* c is not in transit: m2 took nothing. */
    expect_pipe_works(c, d);
    assert_int_equal(MojoDestroyMessage(m2), MOJO_RESULT_OK);
    expect_pipe_works(c, d);
    assert_int_equal(MojoDestroyMessage(m1), MOJO_RESULT_OK); /* closes a */
    expect_peer_closed(b);
    cmojo_test_close_ok(b);
    cmojo_test_close_ok(c);
    cmojo_test_close_ok(d);
}

static void test_append_handles_across_calls_keeps_their_order(void **state)
{
    (void)state;
    MojoHandle p[6];
    MojoMessageHandle m = cmojo_test_new_message();

    for (int i = 0; i < 3; i++)
        cmojo_test_make_pipe(&p[2 * i], &p[2 * i + 1]);
    /* Attach the first ends in two calls: p0, then p2 and p4. */
    assert_int_equal(MojoAppendMessageData(m, 1, &p[0], 1, NULL, NULL, NULL), MOJO_RESULT_OK);
    MojoHandle rest[] = {p[2], p[4]};
    assert_int_equal(MojoAppendMessageData(m, 1, rest, 2, &commit_opts, NULL, NULL),
                     MOJO_RESULT_OK);
    MojoHandle got[3] = {0};
    uint32_t nh = 3, n = 0;
    void *buf = NULL;
    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, got, &nh), MOJO_RESULT_OK);
    assert_int_equal(nh, 3);
    assert_int_equal(n, 2);
    for (int i = 0; i < 3; i++)
        expect_pipe_works(got[i], p[2 * i + 1]);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    for (int i = 0; i < 3; i++) {
        cmojo_test_close_ok(got[i]);
        cmojo_test_close_ok(p[2 * i + 1]);
    }
}

static void test_append_rejects_malformed_options_taking_nothing(void **state)
{
    (void)state;
    MojoHandle a, b;
    MojoMessageHandle m = cmojo_test_new_message();
    struct MojoAppendMessageDataOptions small = {4, MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE};
    struct MojoAppendMessageDataOptions unknown = {sizeof(unknown), 2};
    void *buf = SENTINEL_PTR;
    uint32_t cap = SENTINEL_U32;

    cmojo_test_make_pipe(&a, &b);
    assert_int_equal(MojoAppendMessageData(m, 4, &a, 1, &small, &buf, &cap),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoAppendMessageData(m, 4, &a, 1, &unknown, &buf, &cap),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_ptr_equal(buf, SENTINEL_PTR);
    assert_int_equal(cap, SENTINEL_U32);
    expect_pipe_works(a, b);
    /* Not committed by the malformed COMMIT_SIZE either. */
    assert_int_equal(MojoAppendMessageData(m, 1, NULL, 0, &commit_opts, NULL, NULL),
                     MOJO_RESULT_OK);
    uint32_t n = 0;
    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(n, 1);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

/* ------------------------------------------------------- handles in transit */

static void test_attached_handle_is_busy_for_close_query_write_and_read(void **state)
{
    (void)state;
    MojoHandle a, b;
    MojoMessageHandle m = cmojo_test_new_message();
    struct MojoHandleSignalsState s = {SENTINEL_U32, SENTINEL_U32};

    cmojo_test_make_pipe(&a, &b);
    assert_int_equal(MojoAppendMessageData(m, 0, &a, 1, NULL, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(MojoClose(a), MOJO_RESULT_BUSY);
    assert_int_equal(MojoQueryHandleSignalsState(a, &s), MOJO_RESULT_BUSY);
    assert_int_equal(s.satisfied_signals, SENTINEL_U32);
    MojoMessageHandle read = (MojoMessageHandle)SENTINEL_PTR;
    assert_int_equal(MojoReadMessage(a, NULL, &read), MOJO_RESULT_BUSY);
    assert_true(read == (MojoMessageHandle)SENTINEL_PTR);
    /* A write to a busy handle still consumes the (valid) message. */
    MojoMessageHandle w = cmojo_test_new_data_message("x", 1, NULL, 0);
    assert_int_equal(MojoWriteMessage(a, w, NULL), MOJO_RESULT_BUSY);
    assert_int_equal(MojoDestroyMessage(w), MOJO_RESULT_INVALID_ARGUMENT);
    /* Nothing reached b. */
    assert_int_equal(MojoReadMessage(b, NULL, &read), MOJO_RESULT_SHOULD_WAIT);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    cmojo_test_close_ok(b);
}

static void test_destroying_unwritten_message_closes_attached_handles(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;
    MojoMessageHandle m = cmojo_test_new_message();

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    MojoHandle both[] = {a, d};
    assert_int_equal(MojoAppendMessageData(m, 8, both, 2, NULL, NULL, NULL), MOJO_RESULT_OK);
    expect_peer_open(b);
    expect_peer_open(c);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    expect_peer_closed(b);
    expect_peer_closed(c);
    /* The attached handle values are gone. */
    assert_int_equal(MojoClose(a), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoClose(d), MOJO_RESULT_INVALID_ARGUMENT);
    cmojo_test_close_ok(b);
    cmojo_test_close_ok(c);
}

static void test_destroying_committed_unwritten_message_closes_attached_handles(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    MojoMessageHandle m = cmojo_test_new_data_message("abc", 3, &a, 1);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    expect_peer_closed(b);
    assert_int_equal(MojoClose(a), MOJO_RESULT_INVALID_ARGUMENT);
    cmojo_test_close_ok(b);
}

/* ------------------------------------------------------- MojoGetMessageData */

static void test_get_data_of_uncommitted_message_fails_precondition(void **state)
{
    (void)state;
    MojoMessageHandle m = cmojo_test_new_message();
    void *buf = SENTINEL_PTR;
    uint32_t n = SENTINEL_U32;

    assert_int_equal(MojoAppendMessageData(m, 4, NULL, 0, NULL, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, NULL, NULL),
                     MOJO_RESULT_FAILED_PRECONDITION);
    assert_ptr_equal(buf, SENTINEL_PTR);
    assert_int_equal(n, SENTINEL_U32);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
}

static void test_get_data_of_fresh_message_fails_precondition(void **state)
{
    (void)state;
    MojoMessageHandle m = cmojo_test_new_message();
    void *buf = SENTINEL_PTR;
    uint32_t n = SENTINEL_U32;

    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, NULL, NULL),
                     MOJO_RESULT_FAILED_PRECONDITION);
    assert_ptr_equal(buf, SENTINEL_PTR);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
}

static void test_get_data_of_context_message_fails_precondition(void **state)
{
    (void)state;
    MojoMessageHandle m = new_context_message(5, serialize_hello, destructor);
    void *buf = SENTINEL_PTR;
    uint32_t n = SENTINEL_U32;

    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, NULL, NULL),
                     MOJO_RESULT_FAILED_PRECONDITION);
    assert_ptr_equal(buf, SENTINEL_PTR);
    assert_int_equal(n, SENTINEL_U32);
    assert_int_equal(cb.serialize_calls, 0); /* it does not serialize behind our back */
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
}

static void test_get_data_needs_buffer_for_nonempty_payload(void **state)
{
    (void)state;
    MojoMessageHandle m = cmojo_test_new_data_message("12345", 5, NULL, 0);
    void *buf = SENTINEL_PTR;
    uint32_t n = SENTINEL_U32;

    assert_int_equal(MojoGetMessageData(m, NULL, NULL, &n, NULL, NULL),
                     MOJO_RESULT_RESOURCE_EXHAUSTED);
    assert_int_equal(n, 5); /* the needed size is reported */
    assert_int_equal(MojoGetMessageData(m, NULL, &buf, NULL, NULL, NULL),
                     MOJO_RESULT_RESOURCE_EXHAUSTED);
    /* Both given: fine. */
    n = 0;
    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(n, 5);
    assert_memory_equal(buf, "12345", 5);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
}

static void test_get_data_of_empty_payload_gives_null_and_zero(void **state)
{
    (void)state;
    MojoMessageHandle m = cmojo_test_new_data_message(NULL, 0, NULL, 0);
    void *buf = SENTINEL_PTR;
    uint32_t n = SENTINEL_U32;

    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, NULL, NULL), MOJO_RESULT_OK);
    assert_null(buf);
    assert_int_equal(n, 0);
    /* An empty payload needs no buffer pointers at all. */
    assert_int_equal(MojoGetMessageData(m, NULL, NULL, NULL, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
}

static void test_get_data_with_small_handle_array_reports_needed_counts(void **state)
{
    (void)state;
    MojoHandle a, b, c, d;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&c, &d);
    MojoHandle both[] = {a, c};
    MojoMessageHandle m = cmojo_test_new_data_message("xyz", 3, both, 2);
    MojoHandle got[2] = {SENTINEL_HANDLE, SENTINEL_HANDLE};
    uint32_t nh = 1, n = 0;
    void *buf = NULL;

    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, got, &nh),
                     MOJO_RESULT_RESOURCE_EXHAUSTED);
    assert_int_equal(nh, 2);
    assert_int_equal(n, 3);
    assert_int_equal(got[0], SENTINEL_HANDLE); /* nothing handed out */

    /* num_handles NULL while handles are attached. */
    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, NULL, NULL),
                     MOJO_RESULT_RESOURCE_EXHAUSTED);
    /* Zero capacity with a NULL array: too small, not malformed. */
    nh = 0;
    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, NULL, &nh),
                     MOJO_RESULT_RESOURCE_EXHAUSTED);
    assert_int_equal(nh, 2);

    /* The handles are still in the message: a big enough array gets them. */
    nh = 2;
    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, got, &nh), MOJO_RESULT_OK);
    assert_int_equal(nh, 2);
    assert_memory_equal(buf, "xyz", 3);
    expect_pipe_works(got[0], b);
    expect_pipe_works(got[1], d);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    /* Extracted handles belong to us now: destroying the message left them open. */
    expect_pipe_works(got[0], b);
    cmojo_test_close_ok(got[0]);
    cmojo_test_close_ok(got[1]);
    cmojo_test_close_ok(b);
    cmojo_test_close_ok(d);
}

static void test_get_data_with_count_but_null_array_is_invalid_argument(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    MojoMessageHandle m = cmojo_test_new_data_message("q", 1, &a, 1);
    uint32_t nh = 1, n = SENTINEL_U32;
    void *buf = SENTINEL_PTR;

    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, NULL, &nh),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_ptr_equal(buf, SENTINEL_PTR);
    /* Still attached: destroying the message closes a. */
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    expect_peer_closed(b);
    cmojo_test_close_ok(b);
}

static void test_get_data_ignore_handles_leaves_them_attached(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    MojoMessageHandle m = cmojo_test_new_data_message("pay", 3, &a, 1);
    MojoHandle got[1] = {SENTINEL_HANDLE};
    uint32_t nh = 0, n = 0;
    void *buf = NULL;

    /* handles/num_handles are ignored, even when they are "too small". */
    assert_int_equal(MojoGetMessageData(m, &ignore_handles_opts, &buf, &n, got, &nh),
                     MOJO_RESULT_OK);
    assert_int_equal(n, 3);
    assert_memory_equal(buf, "pay", 3);
    assert_int_equal(got[0], SENTINEL_HANDLE);
    assert_int_equal(MojoGetMessageData(m, &ignore_handles_opts, &buf, &n, NULL, NULL),
                     MOJO_RESULT_OK);
    /* Still there for a normal extraction. */
    nh = 1;
    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, got, &nh), MOJO_RESULT_OK);
    assert_int_equal(nh, 1);
    expect_pipe_works(got[0], b);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    cmojo_test_close_ok(got[0]);
    cmojo_test_close_ok(b);
}

static void test_get_data_second_handle_extraction_is_not_found(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    MojoMessageHandle m = cmojo_test_new_data_message("once", 4, &a, 1);
    MojoHandle got[1] = {0};
    uint32_t nh = 1, n = 0;
    void *buf = NULL;

    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, got, &nh), MOJO_RESULT_OK);
    MojoHandle again[1] = {SENTINEL_HANDLE};
    nh = 1;
    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, again, &nh), MOJO_RESULT_NOT_FOUND);
    assert_int_equal(again[0], SENTINEL_HANDLE);
    /* The payload is still readable with IGNORE_HANDLES. */
    n = 0;
    assert_int_equal(MojoGetMessageData(m, &ignore_handles_opts, &buf, &n, NULL, NULL),
                     MOJO_RESULT_OK);
    assert_int_equal(n, 4);
    assert_memory_equal(buf, "once", 4);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    expect_pipe_works(got[0], b);
    cmojo_test_close_ok(got[0]);
    cmojo_test_close_ok(b);
}

static void test_get_data_of_handleless_message_can_repeat(void **state)
{
    (void)state;
    MojoMessageHandle m = cmojo_test_new_data_message("again", 5, NULL, 0);

    for (int i = 0; i < 3; i++) {
        void *buf = NULL;
        uint32_t n = 0, nh = 0;
        MojoHandle none[1];
        assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, none, &nh), MOJO_RESULT_OK);
        assert_int_equal(n, 5);
        assert_int_equal(nh, 0);
        assert_memory_equal(buf, "again", 5);
    }
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
}

static void test_get_data_rejects_malformed_options(void **state)
{
    (void)state;
    MojoMessageHandle m = cmojo_test_new_data_message("z", 1, NULL, 0);
    struct MojoGetMessageDataOptions small = {4, 0};
    struct MojoGetMessageDataOptions unknown = {sizeof(unknown), 0x10};
    void *buf = SENTINEL_PTR;
    uint32_t n = SENTINEL_U32;

    assert_int_equal(MojoGetMessageData(m, &small, &buf, &n, NULL, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoGetMessageData(m, &unknown, &buf, &n, NULL, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_ptr_equal(buf, SENTINEL_PTR);
    assert_int_equal(n, SENTINEL_U32);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
}

/* ------------------------------------------------------------ message context */

static void test_context_round_trips_through_get(void **state)
{
    (void)state;
    MojoMessageHandle m = cmojo_test_new_message();
    uintptr_t ctx = SENTINEL_U32;

    assert_int_equal(MojoGetMessageContext(m, NULL, &ctx), MOJO_RESULT_OK);
    assert_int_equal(ctx, 0); /* none yet */
    assert_int_equal(MojoSetMessageContext(m, 0xabcdef, serialize_hello, destructor, NULL),
                     MOJO_RESULT_OK);
    assert_int_equal(MojoGetMessageContext(m, NULL, &ctx), MOJO_RESULT_OK);
    assert_int_equal(ctx, 0xabcdef);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
}

static void test_destroying_context_message_runs_destructor_once(void **state)
{
    (void)state;
    MojoMessageHandle m = new_context_message(42, serialize_hello, destructor);

    assert_int_equal(cb.destroy_calls, 0);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    assert_int_equal(cb.destroy_calls, 1);
    assert_int_equal(cb.destroyed_context, 42);
    assert_int_equal(cb.serialize_calls, 0);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(cb.destroy_calls, 1);
}

static void test_context_with_null_destructor_is_fine(void **state)
{
    (void)state;
    MojoMessageHandle m = new_context_message(9, NULL, NULL);
    uintptr_t ctx = 0;

    assert_int_equal(MojoGetMessageContext(m, NULL, &ctx), MOJO_RESULT_OK);
    assert_int_equal(ctx, 9);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
}

static void test_set_context_twice_is_already_exists(void **state)
{
    (void)state;
    MojoMessageHandle m = new_context_message(1, serialize_hello, destructor);
    uintptr_t ctx = 0;

    assert_int_equal(MojoSetMessageContext(m, 2, serialize_hello, destructor, NULL),
                     MOJO_RESULT_ALREADY_EXISTS);
    assert_int_equal(MojoGetMessageContext(m, NULL, &ctx), MOJO_RESULT_OK);
    assert_int_equal(ctx, 1);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    assert_int_equal(cb.destroy_calls, 1);
    assert_int_equal(cb.destroyed_context, 1);
}

static void test_set_context_on_message_with_data_fails_precondition(void **state)
{
    (void)state;
    MojoMessageHandle uncommitted = cmojo_test_new_message();
    MojoMessageHandle committed = cmojo_test_new_data_message("d", 1, NULL, 0);
    uintptr_t ctx = SENTINEL_U32;

    assert_int_equal(MojoAppendMessageData(uncommitted, 1, NULL, 0, NULL, NULL, NULL),
                     MOJO_RESULT_OK);
    assert_int_equal(MojoSetMessageContext(uncommitted, 3, NULL, destructor, NULL),
                     MOJO_RESULT_FAILED_PRECONDITION);
    assert_int_equal(MojoSetMessageContext(committed, 3, NULL, destructor, NULL),
                     MOJO_RESULT_FAILED_PRECONDITION);
    assert_int_equal(MojoGetMessageContext(committed, NULL, &ctx), MOJO_RESULT_OK);
    assert_int_equal(ctx, 0);
    assert_int_equal(MojoDestroyMessage(uncommitted), MOJO_RESULT_OK);
    assert_int_equal(MojoDestroyMessage(committed), MOJO_RESULT_OK);
    assert_int_equal(cb.destroy_calls, 0);
}

static void test_zero_context_with_callbacks_is_invalid_argument(void **state)
{
    (void)state;
    MojoMessageHandle m = cmojo_test_new_message();

    assert_int_equal(MojoSetMessageContext(m, 0, serialize_hello, NULL, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoSetMessageContext(m, 0, NULL, destructor, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    assert_int_equal(cb.destroy_calls, 0);
}

static void test_zero_context_clears_without_running_destructor(void **state)
{
    (void)state;
    MojoMessageHandle m = new_context_message(55, serialize_hello, destructor);
    uintptr_t ctx = SENTINEL_U32;

    assert_int_equal(MojoSetMessageContext(m, 0, NULL, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(cb.destroy_calls, 0);
    assert_int_equal(MojoGetMessageContext(m, NULL, &ctx), MOJO_RESULT_OK);
    assert_int_equal(ctx, 0);
    /* Cleared, the message takes data (or a new context) again. */
    assert_int_equal(MojoAppendMessageData(m, 2, NULL, 0, &commit_opts, NULL, NULL),
                     MOJO_RESULT_OK);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    assert_int_equal(cb.destroy_calls, 0);
    assert_int_equal(cb.serialize_calls, 0);
}

static void test_zero_context_on_fresh_message_is_ok(void **state)
{
    (void)state;
    MojoMessageHandle m = cmojo_test_new_message();

    assert_int_equal(MojoSetMessageContext(m, 0, NULL, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(MojoSetMessageContext(m, 8, NULL, destructor, NULL), MOJO_RESULT_OK);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    assert_int_equal(cb.destroy_calls, 1);
    assert_int_equal(cb.destroyed_context, 8);
}

static void test_get_context_null_out_is_invalid_argument(void **state)
{
    (void)state;
    MojoMessageHandle m = new_context_message(3, NULL, NULL);

    assert_int_equal(MojoGetMessageContext(m, NULL, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
}

static void test_context_functions_reject_malformed_options(void **state)
{
    (void)state;
    MojoMessageHandle m = cmojo_test_new_message();
    struct MojoSetMessageContextOptions set_small = {4, 0};
    struct MojoSetMessageContextOptions set_unknown = {sizeof(set_unknown), 1};
    struct MojoGetMessageContextOptions get_small = {0, 0};
    struct MojoGetMessageContextOptions get_unknown = {sizeof(get_unknown), 0x100};
    uintptr_t ctx = SENTINEL_U32;

    assert_int_equal(MojoSetMessageContext(m, 7, NULL, destructor, &set_small),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoSetMessageContext(m, 7, NULL, destructor, &set_unknown),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoSetMessageContext(m, 6, NULL, destructor, NULL), MOJO_RESULT_OK);
    assert_int_equal(MojoGetMessageContext(m, &get_small, &ctx), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoGetMessageContext(m, &get_unknown, &ctx), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(ctx, SENTINEL_U32);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    assert_int_equal(cb.destroy_calls, 1);
    assert_int_equal(cb.destroyed_context, 6); /* the malformed calls set nothing */
}

/* ------------------------------------------------------- MojoSerializeMessage */

static void test_serialize_runs_serializer_once_then_destructor(void **state)
{
    (void)state;
    MojoMessageHandle m = new_context_message(0x51, serialize_hello, destructor);

    assert_int_equal(MojoSerializeMessage(m, NULL), MOJO_RESULT_OK);
    assert_int_equal(cb.serialize_calls, 1);
    assert_int_equal(cb.destroy_calls, 1);
    assert_int_equal(cb.serialized_context, 0x51);
    assert_int_equal(cb.destroyed_context, 0x51);
    assert_int_equal(cb.n, 2);
    assert_memory_equal(cb.order, "SD", 2);
    assert_int_equal(cb.append_result, MOJO_RESULT_OK);
    /* The context is detached before the serializer runs. */
    assert_int_equal(cb.context_seen_inside_serializer, 0);

    void *buf = NULL;
    uint32_t n = 0;
    uintptr_t ctx = SENTINEL_U32;
    assert_int_equal(MojoGetMessageContext(m, NULL, &ctx), MOJO_RESULT_OK);
    assert_int_equal(ctx, 0);
    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(n, 5);
    assert_memory_equal(buf, "hello", 5);

    assert_int_equal(MojoSerializeMessage(m, NULL), MOJO_RESULT_FAILED_PRECONDITION);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    assert_int_equal(cb.serialize_calls, 1);
    assert_int_equal(cb.destroy_calls, 1);
}

static void test_serialize_without_serializer_is_not_found(void **state)
{
    (void)state;
    MojoMessageHandle m = new_context_message(0x99, NULL, destructor);
    uintptr_t ctx = 0;

    assert_int_equal(MojoSerializeMessage(m, NULL), MOJO_RESULT_NOT_FOUND);
    assert_int_equal(cb.destroy_calls, 0);
    assert_int_equal(MojoGetMessageContext(m, NULL, &ctx), MOJO_RESULT_OK);
    assert_int_equal(ctx, 0x99);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    assert_int_equal(cb.destroy_calls, 1);
}

static void test_serialize_empty_message_is_not_found(void **state)
{
    (void)state;
    MojoMessageHandle m = cmojo_test_new_message();

    assert_int_equal(MojoSerializeMessage(m, NULL), MOJO_RESULT_NOT_FOUND);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
}

static void test_serialize_data_message_fails_precondition(void **state)
{
    (void)state;
    MojoMessageHandle m = cmojo_test_new_data_message("already", 7, NULL, 0);

    assert_int_equal(MojoSerializeMessage(m, NULL), MOJO_RESULT_FAILED_PRECONDITION);
    void *buf = NULL;
    uint32_t n = 0;
    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(n, 7);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
}

static void test_serializer_may_attach_handles(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    MojoMessageHandle m = new_context_message((uintptr_t)&a, serialize_with_handle, destructor);
    assert_int_equal(MojoSerializeMessage(m, NULL), MOJO_RESULT_OK);
    assert_int_equal(cb.append_result, MOJO_RESULT_OK);
    assert_int_equal(MojoClose(a), MOJO_RESULT_BUSY); /* now owned by the message */

    MojoHandle got[1] = {0};
    uint32_t nh = 1, n = 0;
    void *buf = NULL;
    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, got, &nh), MOJO_RESULT_OK);
    assert_int_equal(n, 2);
    assert_memory_equal(buf, "h!", 2);
    assert_int_equal(nh, 1);
    expect_pipe_works(got[0], b);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    assert_int_equal(cb.destroy_calls, 1);
    cmojo_test_close_ok(got[0]);
    cmojo_test_close_ok(b);
}

/*
 * cmojo's header: a serializer that leaves the message uncommitted makes
 * MojoSerializeMessage fail with ABORTED; the handles it attached are closed
 * and the message is left empty.
 */
static void test_serializer_leaving_size_uncommitted_is_aborted(void **state)
{
    (void)state;
    MojoHandle a, b, x, y;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_make_pipe(&x, &y);
    MojoMessageHandle m = new_context_message((uintptr_t)&a, serialize_uncommitted, destructor);
    assert_int_equal(MojoSerializeMessage(m, NULL), MOJO_RESULT_ABORTED);
    assert_int_equal(cb.serialize_calls, 1);
    assert_int_equal(cb.destroy_calls, 1);
    assert_int_equal(cb.append_result, MOJO_RESULT_OK);
    expect_peer_closed(b); /* a was closed */
    /* Empty: nothing to write. */
    assert_int_equal(MojoWriteMessage(x, m, NULL), MOJO_RESULT_NOT_FOUND);
    cmojo_test_close_ok(b);
    cmojo_test_close_ok(x);
    cmojo_test_close_ok(y);
}

static void test_serialize_rejects_malformed_options(void **state)
{
    (void)state;
    MojoMessageHandle m = new_context_message(4, serialize_hello, destructor);
    struct MojoSerializeMessageOptions small = {4, 0};
    struct MojoSerializeMessageOptions unknown = {sizeof(unknown), 1};

    assert_int_equal(MojoSerializeMessage(m, &small), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoSerializeMessage(m, &unknown), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(cb.serialize_calls, 0);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    assert_int_equal(cb.destroy_calls, 1);
}

/* A context message that stays in the process travels by pointer. */
static void test_context_message_written_and_read_locally_is_never_serialized(void **state)
{
    (void)state;
    MojoHandle a, b;
    int object = 0;

    cmojo_test_make_pipe(&a, &b);
    MojoMessageHandle m = new_context_message((uintptr_t)&object, serialize_hello, destructor);
    assert_int_equal(MojoWriteMessage(a, m, NULL), MOJO_RESULT_OK);
    assert_int_equal(cb.serialize_calls, 0);
    assert_int_equal(cb.destroy_calls, 0);

    MojoMessageHandle r = MOJO_MESSAGE_HANDLE_INVALID;
    assert_int_equal(MojoReadMessage(b, NULL, &r), MOJO_RESULT_OK);
    uintptr_t ctx = 0;
    assert_int_equal(MojoGetMessageContext(r, NULL, &ctx), MOJO_RESULT_OK);
    assert_int_equal(ctx, (uintptr_t)&object);
    assert_int_equal(cb.serialize_calls, 0);
    assert_int_equal(MojoDestroyMessage(r), MOJO_RESULT_OK);
    assert_int_equal(cb.serialize_calls, 0);
    assert_int_equal(cb.destroy_calls, 1);
    assert_int_equal(cb.destroyed_context, (uintptr_t)&object);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

/* The reader may still ask for bytes: it serializes the message itself. */
static void test_read_context_message_can_be_serialized_by_reader(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    MojoMessageHandle m = new_context_message(0x77, serialize_hello, destructor);
    assert_int_equal(MojoWriteMessage(a, m, NULL), MOJO_RESULT_OK);
    MojoMessageHandle r = MOJO_MESSAGE_HANDLE_INVALID;
    assert_int_equal(MojoReadMessage(b, NULL, &r), MOJO_RESULT_OK);
    void *buf = NULL;
    uint32_t n = 0;
    assert_int_equal(MojoGetMessageData(r, NULL, &buf, &n, NULL, NULL),
                     MOJO_RESULT_FAILED_PRECONDITION);
    assert_int_equal(MojoSerializeMessage(r, NULL), MOJO_RESULT_OK);
    assert_int_equal(cb.serialize_calls, 1);
    assert_int_equal(cb.destroy_calls, 1);
    assert_int_equal(MojoGetMessageData(r, NULL, &buf, &n, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(n, 5);
    assert_memory_equal(buf, "hello", 5);
    assert_int_equal(MojoDestroyMessage(r), MOJO_RESULT_OK);
    assert_int_equal(cb.destroy_calls, 1);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

/* ------------------------------------------------- MojoReserveMessageCapacity */

static void test_reserve_on_fresh_message_gives_at_least_requested(void **state)
{
    (void)state;
    MojoMessageHandle m = cmojo_test_new_message();
    uint32_t cap = 0;

    assert_int_equal(MojoReserveMessageCapacity(m, 5000, &cap), MOJO_RESULT_OK);
    assert_true(cap >= 5000);
    /* Data may follow and fits. */
    void *buf = NULL;
    uint32_t cap2 = 0;
    assert_int_equal(MojoAppendMessageData(m, 4000, NULL, 0, &commit_opts, &buf, &cap2),
                     MOJO_RESULT_OK);
    assert_true(cap2 >= 4000);
    uint32_t n = 0;
    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(n, 4000); /* reserved, not part of the payload */
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
}

static void test_reserve_with_null_out_is_ok(void **state)
{
    (void)state;
    MojoMessageHandle m = cmojo_test_new_message();

    assert_int_equal(MojoReserveMessageCapacity(m, 64, NULL), MOJO_RESULT_OK);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
}

static void test_reserve_after_data_or_context_fails_precondition(void **state)
{
    (void)state;
    MojoMessageHandle with_data = cmojo_test_new_message();
    MojoMessageHandle with_context = new_context_message(2, NULL, destructor);
    uint32_t cap = SENTINEL_U32;

    assert_int_equal(MojoAppendMessageData(with_data, 8, NULL, 0, NULL, NULL, NULL),
                     MOJO_RESULT_OK);
    assert_int_equal(MojoReserveMessageCapacity(with_data, 100, &cap),
                     MOJO_RESULT_FAILED_PRECONDITION);
    assert_int_equal(MojoReserveMessageCapacity(with_context, 100, &cap),
                     MOJO_RESULT_FAILED_PRECONDITION);
    assert_int_equal(cap, SENTINEL_U32);
    assert_int_equal(MojoDestroyMessage(with_data), MOJO_RESULT_OK);
    assert_int_equal(MojoDestroyMessage(with_context), MOJO_RESULT_OK);
    assert_int_equal(cb.destroy_calls, 1);
}

static void test_reserve_beyond_payload_limit_is_resource_exhausted(void **state)
{
    (void)state;
    MojoMessageHandle m = cmojo_test_new_message();
    uint32_t cap = SENTINEL_U32;

    assert_int_equal(MojoReserveMessageCapacity(m, UINT32_MAX, &cap),
                     MOJO_RESULT_RESOURCE_EXHAUSTED);
    assert_int_equal(cap, SENTINEL_U32);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
}

/* ------------------------------------------------------- MojoNotifyBadMessage */

static void test_notify_bad_message_on_local_message_is_ok_and_keeps_it(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    cmojo_test_write_text(a, "bad", NULL, 0);
    MojoMessageHandle r = MOJO_MESSAGE_HANDLE_INVALID;
    assert_int_equal(MojoReadMessage(b, NULL, &r), MOJO_RESULT_OK);
    assert_int_equal(MojoNotifyBadMessage(r, "no good", 7, NULL), MOJO_RESULT_OK);
    /* An unterminated error string is fine. */
    assert_int_equal(MojoNotifyBadMessage(r, "xyz", 2, NULL), MOJO_RESULT_OK);
    assert_int_equal(MojoNotifyBadMessage(r, NULL, 0, NULL), MOJO_RESULT_OK);
    /* Still a valid message. */
    void *buf = NULL;
    uint32_t n = 0;
    assert_int_equal(MojoGetMessageData(r, NULL, &buf, &n, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(n, 3);
    assert_int_equal(MojoDestroyMessage(r), MOJO_RESULT_OK);
    /* A local report does not break the pipe. */
    expect_pipe_works(a, b);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_notify_bad_message_rejects_null_error_with_length(void **state)
{
    (void)state;
    MojoMessageHandle m = cmojo_test_new_data_message("m", 1, NULL, 0);
    struct MojoNotifyBadMessageOptions small = {4, 0};
    struct MojoNotifyBadMessageOptions unknown = {sizeof(unknown), 1};

    assert_int_equal(MojoNotifyBadMessage(m, NULL, 5, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoNotifyBadMessage(m, "e", 1, &small), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoNotifyBadMessage(m, "e", 1, &unknown), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
}

/* ------------------------------------------------ invalid message handles */

/* Every message function refuses a message handle that names no live message. */
static void expect_message_handle_refused(MojoMessageHandle bad, MojoHandle pipe_end)
{
    void *buf = SENTINEL_PTR;
    uint32_t n = SENTINEL_U32, nh = 0;
    uintptr_t ctx = SENTINEL_U32;

    assert_int_equal(MojoDestroyMessage(bad), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoAppendMessageData(bad, 4, NULL, 0, NULL, &buf, &n),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoAppendMessageData(bad, 0, NULL, 0, &commit_opts, &buf, &n),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoGetMessageData(bad, NULL, &buf, &n, NULL, &nh),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoGetMessageData(bad, &ignore_handles_opts, &buf, &n, NULL, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoSetMessageContext(bad, 1, serialize_hello, destructor, NULL),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoSetMessageContext(bad, 0, NULL, NULL, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoGetMessageContext(bad, NULL, &ctx), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoSerializeMessage(bad, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoReserveMessageCapacity(bad, 16, &n), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoNotifyBadMessage(bad, "e", 1, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoWriteMessage(pipe_end, bad, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    assert_ptr_equal(buf, SENTINEL_PTR);
    assert_int_equal(n, SENTINEL_U32);
    assert_int_equal(ctx, SENTINEL_U32);
    assert_int_equal(cb.destroy_calls, 0);
    assert_int_equal(cb.serialize_calls, 0);
}

static void test_zero_message_handle_is_refused_everywhere(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    expect_message_handle_refused(MOJO_MESSAGE_HANDLE_INVALID, a);
    MojoMessageHandle r = MOJO_MESSAGE_HANDLE_INVALID;
    assert_int_equal(MojoReadMessage(b, NULL, &r), MOJO_RESULT_SHOULD_WAIT);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_made_up_message_handles_are_refused_without_crashing(void **state)
{
    (void)state;
    MojoHandle a, b;

    memset(junk, 0xa5, sizeof(junk));
    cmojo_test_make_pipe(&a, &b);
    expect_message_handle_refused((MojoMessageHandle)12345, a);
    expect_message_handle_refused((MojoMessageHandle)1, a);
    expect_message_handle_refused((MojoMessageHandle)UINTPTR_MAX, a);
    expect_message_handle_refused((MojoMessageHandle)junk, a);
    expect_message_handle_refused((MojoMessageHandle)(junk + 64), a);
    /* A pipe handle value is not a message handle. */
    expect_message_handle_refused((MojoMessageHandle)a, a);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_destroyed_message_handle_is_refused_everywhere(void **state)
{
    (void)state;
    MojoHandle a, b;
    MojoMessageHandle data = cmojo_test_new_data_message("gone", 4, NULL, 0);
    MojoMessageHandle ctx = new_context_message(3, serialize_hello, NULL);

    cmojo_test_make_pipe(&a, &b);
    assert_int_equal(MojoDestroyMessage(data), MOJO_RESULT_OK);
    assert_int_equal(MojoDestroyMessage(ctx), MOJO_RESULT_OK);
    expect_message_handle_refused(data, a);
    expect_message_handle_refused(ctx, a);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void test_written_message_handle_is_refused_everywhere(void **state)
{
    (void)state;
    MojoHandle a, b;

    cmojo_test_make_pipe(&a, &b);
    MojoMessageHandle m = cmojo_test_new_data_message("sent", 4, NULL, 0);
    assert_int_equal(MojoWriteMessage(a, m, NULL), MOJO_RESULT_OK);
    expect_message_handle_refused(m, a);
    /* Only the one message was written. */
    cmojo_test_expect_text(b, "sent", NULL, 0);
    MojoMessageHandle r = MOJO_MESSAGE_HANDLE_INVALID;
    assert_int_equal(MojoReadMessage(b, NULL, &r), MOJO_RESULT_SHOULD_WAIT);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

int main(void)
{
    const struct CMUnitTest lifecycle[] = {
        cmocka_unit_test(test_initialize_twice_fails_precondition),
        cmocka_unit_test(test_shutdown_without_initialize_fails_precondition),
        cmocka_unit_test(test_initialize_again_after_shutdown_succeeds),
        cmocka_unit_test(test_initialize_rejects_malformed_options_and_stays_uninitialized),
        cmocka_unit_test(test_initialize_accepts_full_size_options),
        cmocka_unit_test(test_shutdown_rejects_malformed_options_and_stays_initialized),
        cmocka_unit_test(test_shutdown_destroys_live_messages_and_runs_their_destructors),
    };
#define T(name) cmocka_unit_test_setup_teardown(name, setup, cmojo_core_teardown)
    const struct CMUnitTest tests[] = {
        T(test_create_message_gives_distinct_valid_handles),
        T(test_create_message_null_out_is_invalid_argument),
        T(test_create_message_rejects_malformed_options_leaving_output),
        T(test_create_message_accepts_known_flags_and_larger_struct),
        T(test_unlimited_message_over_the_limit_travels_in_process),
        T(test_destroy_message_twice_is_invalid_argument),
        T(test_append_then_commit_gives_payload_back),
        T(test_append_grows_payload_keeping_earlier_bytes),
        T(test_append_with_null_buffer_outputs_is_ok),
        T(test_append_after_commit_fails_precondition),
        T(test_append_to_context_message_fails_precondition),
        T(test_append_beyond_payload_limit_is_resource_exhausted),
        T(test_append_total_overflowing_uint32_is_resource_exhausted),
        T(test_append_null_handles_with_count_is_invalid_argument),
        T(test_append_invalid_handle_attaches_nothing),
        T(test_append_same_handle_twice_is_busy_and_attaches_nothing),
        T(test_append_handle_already_in_another_message_is_busy),
        T(test_append_handles_across_calls_keeps_their_order),
        T(test_append_rejects_malformed_options_taking_nothing),
        T(test_attached_handle_is_busy_for_close_query_write_and_read),
        T(test_destroying_unwritten_message_closes_attached_handles),
        T(test_destroying_committed_unwritten_message_closes_attached_handles),
        T(test_get_data_of_uncommitted_message_fails_precondition),
        T(test_get_data_of_fresh_message_fails_precondition),
        T(test_get_data_of_context_message_fails_precondition),
        T(test_get_data_needs_buffer_for_nonempty_payload),
        T(test_get_data_of_empty_payload_gives_null_and_zero),
        T(test_get_data_with_small_handle_array_reports_needed_counts),
        T(test_get_data_with_count_but_null_array_is_invalid_argument),
        T(test_get_data_ignore_handles_leaves_them_attached),
        T(test_get_data_second_handle_extraction_is_not_found),
        T(test_get_data_of_handleless_message_can_repeat),
        T(test_get_data_rejects_malformed_options),
        T(test_context_round_trips_through_get),
        T(test_destroying_context_message_runs_destructor_once),
        T(test_context_with_null_destructor_is_fine),
        T(test_set_context_twice_is_already_exists),
        T(test_set_context_on_message_with_data_fails_precondition),
        T(test_zero_context_with_callbacks_is_invalid_argument),
        T(test_zero_context_clears_without_running_destructor),
        T(test_zero_context_on_fresh_message_is_ok),
        T(test_get_context_null_out_is_invalid_argument),
        T(test_context_functions_reject_malformed_options),
        T(test_serialize_runs_serializer_once_then_destructor),
        T(test_serialize_without_serializer_is_not_found),
        T(test_serialize_empty_message_is_not_found),
        T(test_serialize_data_message_fails_precondition),
        T(test_serializer_may_attach_handles),
        T(test_serializer_leaving_size_uncommitted_is_aborted),
        T(test_serialize_rejects_malformed_options),
        T(test_context_message_written_and_read_locally_is_never_serialized),
        T(test_read_context_message_can_be_serialized_by_reader),
        T(test_reserve_on_fresh_message_gives_at_least_requested),
        T(test_reserve_with_null_out_is_ok),
        T(test_reserve_after_data_or_context_fails_precondition),
        T(test_reserve_beyond_payload_limit_is_resource_exhausted),
        T(test_notify_bad_message_on_local_message_is_ok_and_keeps_it),
        T(test_notify_bad_message_rejects_null_error_with_length),
        T(test_zero_message_handle_is_refused_everywhere),
        T(test_made_up_message_handles_are_refused_without_crashing),
        T(test_destroyed_message_handle_is_refused_everywhere),
        T(test_written_message_handle_is_refused_everywhere),
    };
#undef T
    int failed = cmocka_run_group_tests_name("lifecycle", lifecycle, NULL, NULL);
    failed += cmocka_run_group_tests_name("messages", tests, NULL, NULL);
    return failed;
}
