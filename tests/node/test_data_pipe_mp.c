/*
 * Data pipes across real processes (tests/common/mp.h: children are this
 * binary re-run in a role, each joined by an invitation; every child reaped
 * and its exit status checked, fds checked on both sides).
 *
 * Pinned here:
 *  - 1 GiB from a child's producer to the parent's consumer (default
 *    options: 64 KiB ring), and 192 MiB the other way through a 12,000-byte
 *    ring of 12-byte elements (so the ring wraps every few calls, at every
 *    offset), both mixing one-shot and two-phase, all-or-none and partial
 *    calls of odd sizes: the 64-bit hash of what was read equals the hash of
 *    what was written, and so does the byte count. Sanitizer builds move
 *    1/8 of that; CMOJO_DP_STREAM_MIB=<n> sets the volume of every stream
 *    test (these two and the moves below) for any build (dp_stream.h).
 *  - A consumer read in part by the broker, then sent to a third process
 *    while its producer keeps writing, and a producer that moves to a third
 *    process in the middle of its stream: what the two holders read (or
 *    wrote) is, joined, exactly the stream (every byte checked at its
 *    position) and ends with PEER_CLOSED at exactly the right length.
 *  - kill -9 of a producer's process with a full ring: the consumer reads
 *    every byte counted before the kill, then FAILED_PRECONDITION and
 *    PEER_CLOSED; kill -9 in the middle of a stream: the consumer reads an
 *    exact prefix of the stream, then the same; kill -9 of a consumer's
 *    process: the producer sees PEER_CLOSED; kill -9 of a process a consumer
 *    was sent to, before it read the message: the producer, in a third
 *    process, sees PEER_CLOSED having written at most a ring beyond what
 *    was read. The broker and a third process keep streaming afterwards.
 *  - A consumer that bounces 24 times between the broker and a child while
 *    its producer streams: every byte read by either is checked at its
 *    position, the last holder reads to the exact end.
 *  - Producer and consumer, in two children, sent to each other at the same
 *    moment with unread bytes in the ring: the stream carries on with the
 *    roles swapped, every byte checked, to the exact end.
 *  - A producer's process that writes its last bytes and exits without
 *    closing anything (MojoShutdown): every byte arrives, then PEER_CLOSED.
 *  - A consumer's ring is read-only wherever the consumer is: in the
 *    creating process, and in each process it is forwarded to (broker ->
 *    child -> broker -> another child) its mapping is read-only and
 *    mprotect cannot make it writable; in each child the ring fd it
 *    received is O_RDONLY, and a writable shared mapping, write(2) and
 *    pwrite(2) of it all fail. The stream still arrives whole.
 */
#include "cmojo_test.h"
#include "dp_stream.h"
#include "mp.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cmojo/wait.h"
#include "mojo/public/c/system/core.h"
#include "mojo/public/c/system/data_pipe.h"

#define OK MOJO_RESULT_OK
#define READABLE MOJO_HANDLE_SIGNAL_READABLE
#define WRITABLE MOJO_HANDLE_SIGNAL_WRITABLE
#define PEER_CLOSED MOJO_HANDLE_SIGNAL_PEER_CLOSED

#define IO_TIMEOUT_MS CMOJO_MP_IO_TIMEOUT_MS
#define CHILD_TIMEOUT_MS CMOJO_MP_CHILD_TIMEOUT_MS
#define SETTLE_MS CMOJO_MP_SETTLE_MS
#define DEADLINE_US ((MojoDeadline)IO_TIMEOUT_MS * 1000)

#define CHECK CMOJO_MP_CHECK
#define CHECK_RESULT CMOJO_MP_CHECK_RESULT

#define GIB (1ull << 30)
#define MIB (1ull << 20)

enum {
    TAG_HANDLES = 1, /* handles attached; seq: element size; value: a position or length */
    TAG_REPORT,      /* seq: what; value: a hash, a length or a position */
    TAG_READY,       /* the sender got as far as value */
    TAG_DONE,        /* the broker says: finish up */
};

enum { REPORT_HASH = 1, REPORT_BYTES, REPORT_POSITION };

static const char *const ctl_name[] = {"ctl"};

static void make_data_pipe(uint32_t element_size, uint32_t capacity, MojoHandle *producer,
                           MojoHandle *consumer)
{
    struct MojoCreateDataPipeOptions o = {sizeof(o), MOJO_CREATE_DATA_PIPE_FLAG_NONE, element_size,
                                          capacity};
    CHECK_RESULT(MojoCreateDataPipe(&o, producer, consumer), OK);
}

/* Receives exactly one handle in a TAG_HANDLES message. */
static MojoHandle recv_handle(MojoHandle ctl, cmojo_mp_msg *out)
{
    MojoHandle h = MOJO_HANDLE_INVALID;
    uint32_t nh = 1;
    cmojo_mp_msg m = cmojo_mp_recv_tag(ctl, TAG_HANDLES, &h, &nh);
    CHECK_RESULT(nh, 1);
    if (out)
        *out = m;
    return h;
}

static uint64_t recv_report(MojoHandle ctl, uint32_t what)
{
    cmojo_mp_msg m = cmojo_mp_recv_tag(ctl, TAG_REPORT, NULL, NULL);
    CHECK_RESULT(m.seq, what);
    return m.value;
}

/* A producer whose consumer is gone. */
static void expect_producer_peer_closed(MojoHandle producer)
{
    struct MojoHandleSignalsState st;
    uint8_t byte = 0;
    uint32_t n = 1;
    void *span = NULL;

    CHECK_RESULT(MojoWait(producer, PEER_CLOSED, DEADLINE_US, &st), OK);
    CHECK(!(st.satisfiable_signals & WRITABLE));
    CHECK_RESULT(MojoWriteData(producer, &byte, &n, NULL), MOJO_RESULT_FAILED_PRECONDITION);
    n = 0;
    CHECK_RESULT(MojoBeginWriteData(producer, NULL, &span, &n), MOJO_RESULT_FAILED_PRECONDITION);
}

/* Waits until the consumer holds `bytes` readable bytes (the producer filled the ring). */
static void wait_readable_bytes(MojoHandle consumer, uint32_t bytes)
{
    int64_t deadline = cmojo_mp_now_ms() + IO_TIMEOUT_MS;
    uint32_t now;
    while ((now = dps_readable(consumer)) != bytes) {
        CHECK(now < bytes);
        CHECK(cmojo_mp_now_ms() < deadline);
        cmojo_mp_sleep_ms(1);
    }
}

/* ------------------------------------------------------------------------ */
/* 1 GiB each way.                                                          */

#define STREAM_SEED_A 0x5eed0001ull
#define STREAM_SEED_B 0x5eed0002ull
#define SMALL_RING_ELEMENT 12u
#define SMALL_RING_CAPACITY (SMALL_RING_ELEMENT * 1000u)
/* A 12,000-byte ring costs a round trip of counts every few calls: ~100 MB/s here. */
#define SMALL_RING_VOLUME (192 * MIB)

/*
 * arg "<bytes>": makes a data pipe with the default options, sends the
 * consumer to the parent and writes `bytes` of stream A, then reports the
 * hash of what it wrote.
 */
static int role_stream_producer(const int *fds, size_t n, const char *arg)
{
    MojoHandle ctl, producer, consumer;
    dps_hash hash;

    (void)n;
    uint64_t bytes = strtoull(arg, NULL, 10);
    cmojo_mp_accept(fds[0], ctl_name, 1, &ctl);
    CHECK_RESULT(MojoCreateDataPipe(NULL, &producer, &consumer), OK);
    cmojo_mp_send(ctl, TAG_HANDLES, 1, bytes, &consumer, 1);
    dps_hash_init(&hash);
    dps_opts o = {.seed = STREAM_SEED_A,
                  .element_size = 1,
                  .max_chunk = 96 * 1024 + 1,
                  .rng = 0xa11ce,
                  .hash = &hash};
    dps_produce(producer, &o, 0, bytes);
    CHECK_RESULT(MojoClose(producer), OK);
    cmojo_mp_send(ctl, TAG_REPORT, REPORT_HASH, dps_hash_final(&hash), NULL, 0);
    cmojo_mp_recv_tag(ctl, TAG_DONE, NULL, NULL);
    return cmojo_mp_child_finish("stream producer", &ctl, 1);
}

/*
 * Reads stream B from the consumer the parent sends (seq: element size)
 * until the producer is gone; reports the hash and the byte count.
 */
static int role_stream_consumer(const int *fds, size_t n, const char *arg)
{
    MojoHandle ctl;
    cmojo_mp_msg m;
    dps_hash hash;

    (void)n;
    (void)arg;
    cmojo_mp_accept(fds[0], ctl_name, 1, &ctl);
    MojoHandle consumer = recv_handle(ctl, &m);
    dps_hash_init(&hash);
    dps_opts o = {.seed = STREAM_SEED_B,
                  .element_size = m.seq,
                  .max_chunk = m.seq * 2000,
                  .rng = 0xb0b,
                  .hash = &hash};
    uint64_t got = dps_consume(consumer, &o, 0, UINT64_MAX);
    dps_expect_drained_and_closed(consumer);
    CHECK_RESULT(MojoClose(consumer), OK);
    cmojo_mp_send(ctl, TAG_REPORT, REPORT_HASH, dps_hash_final(&hash), NULL, 0);
    cmojo_mp_send(ctl, TAG_REPORT, REPORT_BYTES, got, NULL, 0);
    cmojo_mp_recv_tag(ctl, TAG_DONE, NULL, NULL);
    return cmojo_mp_child_finish("stream consumer", &ctl, 1);
}

static void finish_child(MojoHandle ctl, cmojo_mp_child *child)
{
    cmojo_mp_send(ctl, TAG_DONE, 0, 0, NULL, 0);
    assert_true(cmojo_mp_wait_exit(child, CHILD_TIMEOUT_MS, 0));
    cmojo_mp_expect_peer_closed(ctl);
    assert_int_equal(MojoClose(ctl), OK);
}

static void test_stream_1gib_child_to_parent(void **state)
{
    MojoHandle ctl;
    cmojo_mp_child child;
    cmojo_mp_msg m;
    dps_hash hash;
    char arg[32];

    (void)state;
    uint64_t bytes = dps_volume(GIB, 1);
    snprintf(arg, sizeof(arg), "%llu", (unsigned long long)bytes);
    int64_t start = cmojo_mp_now_ms();
    cmojo_mp_invite("stream_producer", arg, ctl_name, 1, &ctl, &child, 0);
    MojoHandle consumer = recv_handle(ctl, &m);
    CHECK_RESULT(m.value, bytes);
    dps_hash_init(&hash);
    dps_opts o = {.seed = STREAM_SEED_A,
                  .element_size = 1,
                  .max_chunk = 80 * 1024 + 3,
                  .rng = 0xc0ffee,
                  .hash = &hash};
    uint64_t got = dps_consume(consumer, &o, 0, UINT64_MAX);
    int64_t ms = cmojo_mp_now_ms() - start;
    assert_int_equal(got, bytes);
    dps_expect_drained_and_closed(consumer);
    assert_int_equal(recv_report(ctl, REPORT_HASH), dps_hash_final(&hash));
    fprintf(stderr, "child -> parent: %llu MiB in %lld ms (64 KiB ring)\n",
            (unsigned long long)(bytes / MIB), (long long)ms);
    assert_int_equal(MojoClose(consumer), OK);
    finish_child(ctl, &child);
}

static void test_stream_parent_to_child_small_ring_12_byte_elements(void **state)
{
    MojoHandle ctl, producer, consumer;
    cmojo_mp_child child;
    dps_hash hash;

    (void)state;
    uint64_t bytes = dps_volume(SMALL_RING_VOLUME, SMALL_RING_ELEMENT);
    int64_t start = cmojo_mp_now_ms();
    cmojo_mp_invite("stream_consumer", NULL, ctl_name, 1, &ctl, &child, 0);
    make_data_pipe(SMALL_RING_ELEMENT, SMALL_RING_CAPACITY, &producer, &consumer);
    cmojo_mp_send(ctl, TAG_HANDLES, SMALL_RING_ELEMENT, 0, &consumer, 1);
    dps_hash_init(&hash);
    dps_opts o = {.seed = STREAM_SEED_B,
                  .element_size = SMALL_RING_ELEMENT,
                  .max_chunk = SMALL_RING_ELEMENT * 1500,
                  .rng = 0xfeed,
                  .hash = &hash};
    dps_produce(producer, &o, 0, bytes);
    assert_int_equal(MojoClose(producer), OK);
    assert_int_equal(recv_report(ctl, REPORT_HASH), dps_hash_final(&hash));
    assert_int_equal(recv_report(ctl, REPORT_BYTES), bytes);
    int64_t ms = cmojo_mp_now_ms() - start;
    fprintf(stderr, "parent -> child: %llu MiB in %lld ms (12,000-byte ring, 12-byte elements)\n",
            (unsigned long long)(bytes / MIB), (long long)ms);
    finish_child(ctl, &child);
}

/* ------------------------------------------------------------------------ */
/* Ends that move to a third process mid-stream.                            */

#define MOVE_SEED 0x6d6f7665ull
#define MOVE_CAPACITY 32768u
#define MOVE_EXTRA_READ 777u

static uint64_t move_total(void)
{
    return dps_volume(48 * MIB, 4);
}

/* Where the first holder stops: a third of the way, at an odd place (whole elements). */
static uint64_t move_first_part(uint32_t element_size)
{
    uint64_t first = move_total() / 3 + 12345;
    return first - first % element_size;
}

/*
 * "move_writer": writes the stream [0, value) to the producer it is sent
 * (seq: element size), closes it and reports where it stopped.
 */
static int role_move_writer(const int *fds, size_t n, const char *arg)
{
    MojoHandle ctl;
    cmojo_mp_msg m;

    (void)n;
    (void)arg;
    cmojo_mp_accept(fds[0], ctl_name, 1, &ctl);
    MojoHandle producer = recv_handle(ctl, &m);
    dps_opts o = {.seed = MOVE_SEED, .element_size = m.seq, .max_chunk = 20000, .rng = 0x1};
    dps_produce(producer, &o, 0, m.value);
    CHECK_RESULT(MojoClose(producer), OK);
    cmojo_mp_send(ctl, TAG_REPORT, REPORT_POSITION, m.value, NULL, 0);
    cmojo_mp_recv_tag(ctl, TAG_DONE, NULL, NULL);
    return cmojo_mp_child_finish("move writer", &ctl, 1);
}

/*
 * "move_reader": reads the consumer it is sent (value: the stream position the
 * first byte it reads must have) until the producer is gone, checking every
 * byte; reports the position it reached.
 */
static int role_move_reader(const int *fds, size_t n, const char *arg)
{
    MojoHandle ctl;
    cmojo_mp_msg m;

    (void)n;
    (void)arg;
    cmojo_mp_accept(fds[0], ctl_name, 1, &ctl);
    MojoHandle consumer = recv_handle(ctl, &m);
    dps_opts o = {
        .seed = MOVE_SEED, .element_size = m.seq, .max_chunk = 9000, .rng = 0x2, .verify = true};
    uint64_t end = dps_consume(consumer, &o, m.value, UINT64_MAX);
    dps_expect_drained_and_closed(consumer);
    CHECK_RESULT(MojoClose(consumer), OK);
    cmojo_mp_send(ctl, TAG_REPORT, REPORT_POSITION, end, NULL, 0);
    cmojo_mp_recv_tag(ctl, TAG_DONE, NULL, NULL);
    return cmojo_mp_child_finish("move reader", &ctl, 1);
}

static void test_consumer_moves_to_a_third_process_mid_stream(void **state)
{
    MojoHandle ctl_a, ctl_b, producer, consumer;
    cmojo_mp_child a, b;

    (void)state;
    uint64_t total = move_total();
    cmojo_mp_invite("move_writer", NULL, ctl_name, 1, &ctl_a, &a, 0);
    cmojo_mp_invite("move_reader", NULL, ctl_name, 1, &ctl_b, &b, 1);
    make_data_pipe(1, MOVE_CAPACITY, &producer, &consumer);
    cmojo_mp_send(ctl_a, TAG_HANDLES, 1, total, &producer, 1);

    /* Read the first part here, checking every byte. */
    dps_opts o = {
        .seed = MOVE_SEED, .element_size = 1, .max_chunk = 7001, .rng = 3, .verify = true};
    uint64_t first = move_first_part(1);
    uint64_t pos = dps_consume(consumer, &o, 0, first);
    assert_int_equal(pos, first);
    /*
     * Let A fill the ring, then free a little of it and send the consumer
     * at once: it leaves with a full ring, and A's count for the bytes it
     * writes into the room just freed chases it to B.
     */
    wait_readable_bytes(consumer, MOVE_CAPACITY);
    pos = dps_consume(consumer, &o, pos, pos + MOVE_EXTRA_READ);
    assert_int_equal(pos, first + MOVE_EXTRA_READ);
    cmojo_mp_send(ctl_b, TAG_HANDLES, 1, pos, &consumer, 1);

    assert_int_equal(recv_report(ctl_a, REPORT_POSITION), total);
    /* B read from exactly where we stopped to exactly the end. */
    assert_int_equal(recv_report(ctl_b, REPORT_POSITION), total);
    assert_true(cmojo_mp_wait_counts("broker", 2, 2, SETTLE_MS));
    finish_child(ctl_a, &a);
    finish_child(ctl_b, &b);
}

/*
 * "pmove_a": gets the producer and one end of a pipe to B; writes the
 * stream [0, value) (seq: element size), then sends the producer on to B
 * with where it stopped.
 */
static int role_pmove_a(const int *fds, size_t n, const char *arg)
{
    MojoHandle ctl, h[2];
    uint32_t nh = 2;

    (void)n;
    (void)arg;
    cmojo_mp_accept(fds[0], ctl_name, 1, &ctl);
    cmojo_mp_msg m = cmojo_mp_recv_tag(ctl, TAG_HANDLES, h, &nh);
    CHECK_RESULT(nh, 2);
    MojoHandle producer = h[0], to_b = h[1];
    dps_opts o = {.seed = MOVE_SEED, .element_size = m.seq, .max_chunk = 4 * 3001, .rng = 4};
    dps_produce(producer, &o, 0, m.value);
    /* The consumer is reading all the while: its counts are on their way here. */
    cmojo_mp_send(to_b, TAG_HANDLES, m.seq, m.value, &producer, 1);
    cmojo_mp_send(ctl, TAG_READY, 0, m.value, NULL, 0);
    cmojo_mp_recv_tag(ctl, TAG_DONE, NULL, NULL);
    MojoHandle left[] = {ctl, to_b};
    return cmojo_mp_child_finish("producer mover A", left, 2);
}

/* "pmove_b": gets the producer from A and writes the rest of the stream (ctl's value: the end). */
static int role_pmove_b(const int *fds, size_t n, const char *arg)
{
    MojoHandle ctl;
    cmojo_mp_msg m;

    (void)n;
    (void)arg;
    cmojo_mp_accept(fds[0], ctl_name, 1, &ctl);
    MojoHandle from_a = recv_handle(ctl, &m);
    uint64_t total = m.value;
    MojoHandle producer = recv_handle(from_a, &m);
    dps_opts o = {.seed = MOVE_SEED, .element_size = m.seq, .max_chunk = 4 * 1999, .rng = 5};
    dps_produce(producer, &o, m.value, total);
    CHECK_RESULT(MojoClose(producer), OK);
    cmojo_mp_send(ctl, TAG_REPORT, REPORT_POSITION, total, NULL, 0);
    cmojo_mp_recv_tag(ctl, TAG_DONE, NULL, NULL);
    MojoHandle left[] = {ctl, from_a};
    return cmojo_mp_child_finish("producer mover B", left, 2);
}

static void test_producer_moves_to_a_third_process_mid_stream(void **state)
{
    MojoHandle ctl_a, ctl_b, producer, consumer, x, y;
    cmojo_mp_child a, b;
    const uint32_t es = 4;

    (void)state;
    uint64_t total = move_total();
    uint64_t first = move_first_part(es);
    cmojo_mp_invite("pmove_a", NULL, ctl_name, 1, &ctl_a, &a, 0);
    cmojo_mp_invite("pmove_b", NULL, ctl_name, 1, &ctl_b, &b, 1);
    /* 10,000 bytes: the ring's offset is nowhere special when the producer moves. */
    make_data_pipe(es, 10000, &producer, &consumer);
    cmojo_test_make_pipe(&x, &y);
    cmojo_mp_send(ctl_b, TAG_HANDLES, 0, total, &y, 1);
    MojoHandle to_a[] = {producer, x};
    cmojo_mp_send(ctl_a, TAG_HANDLES, es, first, to_a, 2);

    /* One reader, checking every byte, from the first to the last. */
    dps_opts o = {
        .seed = MOVE_SEED, .element_size = es, .max_chunk = 4 * 2503, .rng = 6, .verify = true};
    assert_int_equal(dps_consume(consumer, &o, 0, UINT64_MAX), total);
    dps_expect_drained_and_closed(consumer);
    assert_int_equal(cmojo_mp_recv_tag(ctl_a, TAG_READY, NULL, NULL).value, first);
    assert_int_equal(recv_report(ctl_b, REPORT_POSITION), total);
    assert_int_equal(MojoClose(consumer), OK);
    assert_true(cmojo_mp_wait_counts("broker", 2, 2, SETTLE_MS));
    finish_child(ctl_a, &a);
    finish_child(ctl_b, &b);
}

/*
 * "bouncer": gets the consumer again and again (value: the stream position
 * it is at; seq: bytes to read before sending it back, 0: read to the end,
 * report the position and stop).
 */
static int role_bouncer(const int *fds, size_t n, const char *arg)
{
    MojoHandle ctl;
    cmojo_mp_msg m;

    (void)n;
    (void)arg;
    cmojo_mp_accept(fds[0], ctl_name, 1, &ctl);
    for (uint64_t rng = 100;; rng++) {
        MojoHandle consumer = recv_handle(ctl, &m);
        dps_opts o = {
            .seed = MOVE_SEED, .element_size = 1, .max_chunk = 3001, .rng = rng, .verify = true};
        if (m.seq == 0) {
            uint64_t end = dps_consume(consumer, &o, m.value, UINT64_MAX);
            dps_expect_drained_and_closed(consumer);
            CHECK_RESULT(MojoClose(consumer), OK);
            cmojo_mp_send(ctl, TAG_REPORT, REPORT_POSITION, end, NULL, 0);
            break;
        }
        uint64_t pos = dps_consume(consumer, &o, m.value, m.value + m.seq);
        CHECK_RESULT(pos, m.value + m.seq);
        cmojo_mp_send(ctl, TAG_HANDLES, 1, pos, &consumer, 1);
    }
    cmojo_mp_recv_tag(ctl, TAG_DONE, NULL, NULL);
    return cmojo_mp_child_finish("bouncer", &ctl, 1);
}

#define BOUNCES 24

static void test_consumer_bounces_between_processes_mid_stream(void **state)
{
    MojoHandle ctl_a, ctl_b, producer, consumer;
    cmojo_mp_child a, b;
    cmojo_mp_msg m;

    (void)state;
    uint64_t total = dps_volume(24 * MIB, 1);
    uint64_t share = total / (2 * BOUNCES + 2);
    cmojo_mp_invite("move_writer", NULL, ctl_name, 1, &ctl_a, &a, 0);
    cmojo_mp_invite("bouncer", NULL, ctl_name, 1, &ctl_b, &b, 1);
    make_data_pipe(1, 16384, &producer, &consumer);
    cmojo_mp_send(ctl_a, TAG_HANDLES, 1, total, &producer, 1);

    /* Here, there, here, there...: each holder reads an odd share, checking every byte. */
    uint64_t pos = 0;
    for (uint32_t i = 0; i < BOUNCES; i++) {
        dps_opts o = {
            .seed = MOVE_SEED, .element_size = 1, .max_chunk = 2999, .rng = i, .verify = true};
        uint64_t want = share + 7 * i + 1;
        assert_int_equal(dps_consume(consumer, &o, pos, pos + want), pos + want);
        pos += want;
        uint32_t theirs = (uint32_t)(share - 5 * i);
        cmojo_mp_send(ctl_b, TAG_HANDLES, theirs, pos, &consumer, 1);
        consumer = recv_handle(ctl_b, &m);
        assert_int_equal(m.value, pos + theirs);
        pos = m.value;
    }
    cmojo_mp_send(ctl_b, TAG_HANDLES, 0, pos, &consumer, 1);
    assert_int_equal(recv_report(ctl_a, REPORT_POSITION), total);
    assert_int_equal(recv_report(ctl_b, REPORT_POSITION), total);
    assert_true(cmojo_mp_wait_counts("broker", 2, 2, SETTLE_MS));
    finish_child(ctl_a, &a);
    finish_child(ctl_b, &b);
}

/*
 * "swapper" (arg "a" or "b"): A gets the producer, B the consumer, each
 * with one end of a pipe to the other (ctl value: the stream's length; seq:
 * where A stops writing). A writes [0, stop) while B reads [0, stop -
 * SWAP_BEHIND); then each sends its end to the other at once, with where it
 * stopped, and the roles turn: B writes on from A's position, A reads on
 * from B's, to the end.
 */
#define SWAP_CAPACITY 32768u
#define SWAP_BEHIND 20000u

static int role_swapper(const int *fds, size_t n, const char *arg)
{
    MojoHandle ctl, h[2];
    uint32_t nh = 2;
    bool is_a = strcmp(arg, "a") == 0;

    (void)n;
    cmojo_mp_accept(fds[0], ctl_name, 1, &ctl);
    cmojo_mp_msg m = cmojo_mp_recv_tag(ctl, TAG_HANDLES, h, &nh);
    CHECK_RESULT(nh, 2);
    MojoHandle end = h[0], other = h[1];
    uint64_t total = m.value, stop = m.seq;
    dps_opts o = {.seed = MOVE_SEED, .element_size = 1, .max_chunk = 5003, .rng = is_a ? 20 : 21};
    uint64_t mine = is_a ? stop : stop - SWAP_BEHIND;
    if (is_a) {
        dps_produce(end, &o, 0, mine);
    } else {
        o.verify = true;
        CHECK_RESULT(dps_consume(end, &o, 0, mine), mine);
    }
    /* Both ends in flight at once, the ring holding what lies between. */
    cmojo_mp_send(other, TAG_HANDLES, 1, mine, &end, 1);
    MojoHandle theirs = recv_handle(other, &m);
    uint64_t reached;
    if (is_a) {
        o.verify = true;
        reached = dps_consume(theirs, &o, m.value, UINT64_MAX);
        dps_expect_drained_and_closed(theirs);
    } else {
        o.verify = false;
        dps_produce(theirs, &o, m.value, total);
        reached = total;
    }
    CHECK_RESULT(MojoClose(theirs), OK);
    cmojo_mp_send(ctl, TAG_REPORT, REPORT_POSITION, reached, NULL, 0);
    cmojo_mp_recv_tag(ctl, TAG_DONE, NULL, NULL);
    MojoHandle left[] = {ctl, other};
    return cmojo_mp_child_finish(is_a ? "swapper A" : "swapper B", left, 2);
}

static void test_producer_and_consumer_swap_processes_at_once(void **state)
{
    MojoHandle ctl_a, ctl_b, producer, consumer, x, y;
    cmojo_mp_child a, b;

    (void)state;
    uint64_t total = dps_volume(16 * MIB, 1);
    uint64_t stop = total / 2 + 101;
    cmojo_mp_invite("swapper", "a", ctl_name, 1, &ctl_a, &a, 0);
    cmojo_mp_invite("swapper", "b", ctl_name, 1, &ctl_b, &b, 1);
    make_data_pipe(1, SWAP_CAPACITY, &producer, &consumer);
    cmojo_test_make_pipe(&x, &y);
    MojoHandle to_a[] = {producer, x}, to_b[] = {consumer, y};
    cmojo_mp_send(ctl_a, TAG_HANDLES, (uint32_t)stop, total, to_a, 2);
    cmojo_mp_send(ctl_b, TAG_HANDLES, (uint32_t)stop, total, to_b, 2);
    /* A read everything from where B stopped; B wrote everything from where A stopped. */
    assert_int_equal(recv_report(ctl_a, REPORT_POSITION), total);
    assert_int_equal(recv_report(ctl_b, REPORT_POSITION), total);
    assert_true(cmojo_mp_wait_counts("broker", 2, 2, SETTLE_MS));
    finish_child(ctl_a, &a);
    finish_child(ctl_b, &b);
}

/* ------------------------------------------------------------------------ */
/* kill -9.                                                                 */

#define KILL_SEED 0x6b696c6cull
#define KILL_CAPACITY 100000u
#define KILL_CHUNK 999u

/*
 * "victim": gets an end (seq: element size) and
 *   arg "fill":   writes stream chunks of 999 bytes until the ring is full
 *                 (one count per chunk), reports how much, waits to be killed;
 *   arg "stream": writes the stream without end;
 *   arg "read":   reads value bytes of the stream, reports, waits to be killed.
 */
static int role_victim(const int *fds, size_t n, const char *arg)
{
    MojoHandle ctl;
    cmojo_mp_msg m;

    (void)n;
    cmojo_mp_accept(fds[0], ctl_name, 1, &ctl);
    MojoHandle end = recv_handle(ctl, &m);
    if (strcmp(arg, "fill") == 0) {
        uint8_t chunk[KILL_CHUNK];
        uint64_t pos = 0;
        for (;;) {
            uint32_t len = KILL_CHUNK;
            dps_fill(KILL_SEED, pos, chunk, len);
            MojoResult r = MojoWriteData(end, chunk, &len, NULL);
            if (r == MOJO_RESULT_SHOULD_WAIT)
                break;
            CHECK_RESULT(r, OK);
            pos += len;
        }
        cmojo_mp_send(ctl, TAG_READY, 0, pos, NULL, 0);
    } else if (strcmp(arg, "stream") == 0) {
        dps_opts o = {.seed = KILL_SEED, .element_size = m.seq, .max_chunk = 5000, .rng = 7};
        dps_produce(end, &o, 0, UINT64_MAX - UINT64_MAX % m.seq);
        return 1; /* never ends */
    } else if (strcmp(arg, "read") == 0) {
        dps_opts o = {
            .seed = KILL_SEED, .element_size = m.seq, .max_chunk = 5000, .rng = 8, .verify = true};
        CHECK_RESULT(dps_consume(end, &o, 0, m.value), m.value);
        cmojo_mp_send(ctl, TAG_READY, 0, m.value, NULL, 0);
    } else {
        return 2;
    }
    for (int i = 0; i < 1200; i++)
        cmojo_mp_sleep_ms(100);
    return 3; /* should have been killed long ago */
}

/* Writes the stream until the consumer is gone; returns how far it got. */
static uint64_t produce_until_closed(MojoHandle producer)
{
    uint8_t buf[3000];
    uint64_t pos = 0;

    for (;;) {
        uint32_t len = sizeof(buf);
        dps_fill(KILL_SEED, pos, buf, len);
        MojoResult r = MojoWriteData(producer, buf, &len, NULL);
        if (r == OK) {
            pos += len;
            continue;
        }
        if (r == MOJO_RESULT_FAILED_PRECONDITION)
            return pos;
        CHECK_RESULT(r, MOJO_RESULT_SHOULD_WAIT);
        struct MojoHandleSignalsState st;
        r = MojoWait(producer, WRITABLE, DEADLINE_US, &st);
        if (r == MOJO_RESULT_FAILED_PRECONDITION)
            return pos;
        CHECK_RESULT(r, OK);
    }
}

/*
 * "until_closed": writes the stream to the producer it gets until the
 * consumer is gone, then reports how far it got.
 */
static int role_until_closed(const int *fds, size_t n, const char *arg)
{
    MojoHandle ctl;

    (void)n;
    (void)arg;
    cmojo_mp_accept(fds[0], ctl_name, 1, &ctl);
    MojoHandle producer = recv_handle(ctl, NULL);
    uint64_t pos = produce_until_closed(producer);
    expect_producer_peer_closed(producer);
    CHECK_RESULT(MojoClose(producer), OK);
    cmojo_mp_send(ctl, TAG_REPORT, REPORT_POSITION, pos, NULL, 0);
    cmojo_mp_recv_tag(ctl, TAG_DONE, NULL, NULL);
    return cmojo_mp_child_finish("writer until closed", &ctl, 1);
}

/* "sleeper": joins, never reads, waits to be killed. */
static int role_sleeper(const int *fds, size_t n, const char *arg)
{
    MojoHandle ctl;

    (void)n;
    (void)arg;
    cmojo_mp_accept(fds[0], ctl_name, 1, &ctl);
    cmojo_mp_send(ctl, TAG_READY, 0, 0, NULL, 0);
    for (int i = 0; i < 1200; i++)
        cmojo_mp_sleep_ms(100);
    return 3;
}

/*
 * "leaver": writes value bytes of the stream to the producer it gets, then
 * shuts down and exits without closing anything: MojoShutdown closes the
 * producer after its last counts have left.
 */
static int role_leaver(const int *fds, size_t n, const char *arg)
{
    MojoHandle ctl;
    cmojo_mp_msg m;

    (void)n;
    (void)arg;
    cmojo_mp_accept(fds[0], ctl_name, 1, &ctl);
    MojoHandle producer = recv_handle(ctl, &m);
    dps_opts o = {.seed = KILL_SEED, .element_size = m.seq, .max_chunk = 6000, .rng = 15};
    dps_produce(producer, &o, 0, m.value);
    CHECK_RESULT(MojoShutdown(NULL), OK);
    CHECK(cmojo_mp_only_fds("leaver", NULL, 0));
    return 0;
}

/* "helper": writes value bytes of the stream to the producer it gets, then closes it. */
static int role_helper(const int *fds, size_t n, const char *arg)
{
    MojoHandle ctl;
    cmojo_mp_msg m;

    (void)n;
    (void)arg;
    cmojo_mp_accept(fds[0], ctl_name, 1, &ctl);
    MojoHandle producer = recv_handle(ctl, &m);
    dps_opts o = {.seed = KILL_SEED, .element_size = m.seq, .max_chunk = 7777, .rng = 9};
    dps_produce(producer, &o, 0, m.value);
    CHECK_RESULT(MojoClose(producer), OK);
    cmojo_mp_recv_tag(ctl, TAG_DONE, NULL, NULL);
    return cmojo_mp_child_finish("helper", &ctl, 1);
}

static void kill_and_reap(cmojo_mp_child *child)
{
    int status = 0;
    assert_int_equal(cmojo_mp_kill(child, SIGKILL), 0);
    assert_int_equal(cmojo_mp_wait(child, CHILD_TIMEOUT_MS, &status), 0);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

/* After a kill: the broker streams 4 MiB from the helper child through a new data pipe. */
static void helper_still_streams(MojoHandle ctl_h)
{
    MojoHandle producer, consumer;
    const uint64_t bytes = 4 * MIB;

    make_data_pipe(1, 0, &producer, &consumer);
    cmojo_mp_send(ctl_h, TAG_HANDLES, 1, bytes, &producer, 1);
    dps_opts o = {
        .seed = KILL_SEED, .element_size = 1, .max_chunk = 3333, .rng = 10, .verify = true};
    assert_int_equal(dps_consume(consumer, &o, 0, UINT64_MAX), bytes);
    dps_expect_drained_and_closed(consumer);
    assert_int_equal(MojoClose(consumer), OK);
}

static void test_kill_9_producer_with_a_full_ring(void **state)
{
    MojoHandle ctl_v, ctl_h, producer, consumer;
    cmojo_mp_child victim, helper;
    struct MojoHandleSignalsState st;

    (void)state;
    cmojo_mp_invite("victim", "fill", ctl_name, 1, &ctl_v, &victim, 0);
    cmojo_mp_invite("helper", NULL, ctl_name, 1, &ctl_h, &helper, 1);
    make_data_pipe(1, KILL_CAPACITY, &producer, &consumer);
    cmojo_mp_send(ctl_v, TAG_HANDLES, 1, 0, &producer, 1);
    /* Its counts left before its READY (one channel, in order): all 100,000 bytes. */
    assert_int_equal(cmojo_mp_recv_tag(ctl_v, TAG_READY, NULL, NULL).value, KILL_CAPACITY);
    kill_and_reap(&victim);

    assert_int_equal(MojoWait(consumer, PEER_CLOSED, DEADLINE_US, &st), OK);
    assert_true(st.satisfied_signals & READABLE); /* closed, but the bytes are still here */
    assert_int_equal(dps_readable(consumer), KILL_CAPACITY);
    dps_opts o = {
        .seed = KILL_SEED, .element_size = 1, .max_chunk = 4099, .rng = 11, .verify = true};
    assert_int_equal(dps_consume(consumer, &o, 0, UINT64_MAX), KILL_CAPACITY);
    dps_expect_drained_and_closed(consumer);
    assert_int_equal(MojoClose(consumer), OK);
    assert_true(cmojo_mp_wait_disconnected(0, IO_TIMEOUT_MS));
    assert_int_equal(cmojo_mp_log(0).empty_messages, 0);

    helper_still_streams(ctl_h);
    assert_int_equal(cmojo_mp_log(1).reports, 0);
    cmojo_mp_expect_peer_closed(ctl_v);
    assert_int_equal(MojoClose(ctl_v), OK);
    finish_child(ctl_h, &helper);
}

static void test_kill_9_producer_mid_stream(void **state)
{
    MojoHandle ctl_v, ctl_h, producer, consumer;
    cmojo_mp_child victim, helper;
    const uint32_t es = 8;

    (void)state;
    cmojo_mp_invite("victim", "stream", ctl_name, 1, &ctl_v, &victim, 0);
    cmojo_mp_invite("helper", NULL, ctl_name, 1, &ctl_h, &helper, 1);
    make_data_pipe(es, es * 4096, &producer, &consumer);
    cmojo_mp_send(ctl_v, TAG_HANDLES, es, 0, &producer, 1);
    dps_opts o = {
        .seed = KILL_SEED, .element_size = es, .max_chunk = es * 511, .rng = 12, .verify = true};
    uint64_t pos = dps_consume(consumer, &o, 0, 2 * MIB);
    assert_int_equal(pos, 2 * MIB);
    /* Killed while it writes (and while we still read). */
    kill_and_reap(&victim);
    uint64_t end = dps_consume(consumer, &o, pos, UINT64_MAX);
    dps_expect_drained_and_closed(consumer);
    fprintf(stderr, "kill -9 mid-stream: read an exact prefix of %llu bytes\n",
            (unsigned long long)end);
    assert_true(end >= pos && end % es == 0);
    assert_int_equal(MojoClose(consumer), OK);
    assert_true(cmojo_mp_wait_disconnected(0, IO_TIMEOUT_MS));

    helper_still_streams(ctl_h);
    assert_int_equal(cmojo_mp_log(1).reports, 0);
    cmojo_mp_expect_peer_closed(ctl_v);
    assert_int_equal(MojoClose(ctl_v), OK);
    finish_child(ctl_h, &helper);
}

static void test_kill_9_consumer(void **state)
{
    MojoHandle ctl_v, ctl_h, producer, consumer;
    cmojo_mp_child victim, helper;
    const uint64_t first = 300000;

    (void)state;
    cmojo_mp_invite("victim", "read", ctl_name, 1, &ctl_v, &victim, 0);
    cmojo_mp_invite("helper", NULL, ctl_name, 1, &ctl_h, &helper, 1);
    make_data_pipe(1, 65536, &producer, &consumer);
    cmojo_mp_send(ctl_v, TAG_HANDLES, 1, first, &consumer, 1);
    dps_opts o = {.seed = KILL_SEED, .element_size = 1, .max_chunk = 5000, .rng = 13};
    dps_produce(producer, &o, 0, first + 1000); /* 1,000 bytes it will never read */
    assert_int_equal(cmojo_mp_recv_tag(ctl_v, TAG_READY, NULL, NULL).value, first);
    kill_and_reap(&victim);
    expect_producer_peer_closed(producer);
    assert_int_equal(MojoClose(producer), OK);
    assert_true(cmojo_mp_wait_disconnected(0, IO_TIMEOUT_MS));

    helper_still_streams(ctl_h);
    cmojo_mp_expect_peer_closed(ctl_v);
    assert_int_equal(MojoClose(ctl_v), OK);
    finish_child(ctl_h, &helper);
}

static void test_producer_process_exits_without_closing(void **state)
{
    MojoHandle ctl, producer, consumer;
    cmojo_mp_child child;
    const uint64_t bytes = 1 * MIB + 4;

    (void)state;
    cmojo_mp_invite("leaver", NULL, ctl_name, 1, &ctl, &child, 0);
    make_data_pipe(4, 65536, &producer, &consumer);
    cmojo_mp_send(ctl, TAG_HANDLES, 4, bytes, &producer, 1);
    /* Read most of it while it writes, the rest once it is gone. */
    dps_opts o = {
        .seed = KILL_SEED, .element_size = 4, .max_chunk = 4 * 999, .rng = 16, .verify = true};
    uint64_t pos = dps_consume(consumer, &o, 0, bytes - 65536);
    assert_int_equal(pos, bytes - 65536);
    assert_true(cmojo_mp_wait_exit(&child, CHILD_TIMEOUT_MS, 0));
    assert_int_equal(dps_consume(consumer, &o, pos, UINT64_MAX), bytes);
    dps_expect_drained_and_closed(consumer);
    assert_int_equal(MojoClose(consumer), OK);
    cmojo_mp_expect_peer_closed(ctl);
    assert_int_equal(MojoClose(ctl), OK);
}

/*
 * The consumer is sent to a process that is killed before it reads the
 * message: the consumer's control port dies with it, and the producer, in a
 * third process, sees PEER_CLOSED (through the route the port had taken).
 */
static void test_kill_9_process_holding_a_consumer_in_transit(void **state)
{
    MojoHandle ctl_w, ctl_s, ctl_h, producer, consumer;
    cmojo_mp_child writer, sleeper, helper;

    (void)state;
    cmojo_mp_invite("until_closed", NULL, ctl_name, 1, &ctl_w, &writer, 0);
    cmojo_mp_invite("sleeper", NULL, ctl_name, 1, &ctl_s, &sleeper, 1);
    cmojo_mp_invite("helper", NULL, ctl_name, 1, &ctl_h, &helper, 2);
    cmojo_mp_recv_tag(ctl_s, TAG_READY, NULL, NULL);
    make_data_pipe(1, 8192, &producer, &consumer);
    cmojo_mp_send(ctl_w, TAG_HANDLES, 1, 0, &producer, 1);
    dps_opts o = {
        .seed = KILL_SEED, .element_size = 1, .max_chunk = 1000, .rng = 14, .verify = true};
    assert_int_equal(dps_consume(consumer, &o, 0, 100000), 100000);
    cmojo_mp_send(ctl_s, TAG_HANDLES, 1, 100000, &consumer, 1);
    kill_and_reap(&sleeper);
    uint64_t reached = recv_report(ctl_w, REPORT_POSITION);
    /* What it wrote: what we read, and at most a ring's worth more. */
    assert_true(reached >= 100000 && reached <= 100000 + 8192);
    assert_true(cmojo_mp_wait_disconnected(1, IO_TIMEOUT_MS));
    cmojo_mp_expect_peer_closed(ctl_s);
    assert_int_equal(MojoClose(ctl_s), OK);

    helper_still_streams(ctl_h);
    assert_int_equal(cmojo_mp_log(0).reports, 0);
    assert_int_equal(cmojo_mp_log(2).reports, 0);
    finish_child(ctl_w, &writer);
    finish_child(ctl_h, &helper);
}

/* ------------------------------------------------------------------------ */
/* A consumer's ring is read-only in every process it reaches.              */

#define RO_SEED 0x726f6e6cull
#define RO_CAPACITY 16384u
#define RO_SHARE 4000u

/*
 * The ring mapping of `consumer` (which must have bytes readable), found
 * through a two-phase read's span: it is a shared, read-only mapping of the
 * data pipe's memfd, and mprotect cannot make it writable.
 */
static void check_ring_mapping_read_only(MojoHandle consumer)
{
    const void *span = NULL;
    uint32_t n = 0;
    char perms[5];
    uintptr_t lo, hi;

    CHECK_RESULT(MojoBeginReadData(consumer, NULL, &span, &n), OK);
    dps_ring_mapping(span, &lo, &hi, perms);
    CHECK(strcmp(perms, "r--s") == 0);
    errno = 0;
    CHECK(mprotect((void *)lo, hi - lo, PROT_READ | PROT_WRITE) != 0);
    CHECK_RESULT(errno, EACCES);
    CHECK_RESULT(MojoEndReadData(consumer, 0, NULL), OK);
}

/*
 * In a process whose only data pipe end is a consumer: the one ring fd it
 * holds is open read-only, and neither a writable shared mapping nor
 * write(2) nor pwrite(2) gets through it.
 */
static void check_only_ring_fd_read_only(void)
{
    int fds[4];

    CHECK_RESULT(dps_ring_fds(fds, 4), 1);
    CHECK_RESULT(fcntl(fds[0], F_GETFL) & O_ACCMODE, O_RDONLY);
    errno = 0;
    CHECK(mmap(NULL, RO_CAPACITY, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0) == MAP_FAILED);
    CHECK_RESULT(errno, EACCES);
    errno = 0;
    CHECK(write(fds[0], "x", 1) == -1);
    CHECK_RESULT(errno, EBADF);
    errno = 0;
    CHECK(pwrite(fds[0], "x", 1, 0) == -1);
    CHECK_RESULT(errno, EBADF);
}

/*
 * "ro_consumer": gets the consumer (value: the stream position; seq: bytes
 * to read, 0: to the end), checks that it cannot write the ring, reads its
 * share checking every byte, and sends the consumer back (or, at the end,
 * reports the position it reached).
 */
static int role_ro_consumer(const int *fds, size_t n, const char *arg)
{
    MojoHandle ctl;
    cmojo_mp_msg m;

    (void)n;
    (void)arg;
    cmojo_mp_accept(fds[0], ctl_name, 1, &ctl);
    MojoHandle consumer = recv_handle(ctl, &m);
    /* Everything was written before it was sent: the state it arrived with says so. */
    check_ring_mapping_read_only(consumer);
    check_only_ring_fd_read_only();
    dps_opts o = {
        .seed = RO_SEED, .element_size = 1, .max_chunk = 1500, .rng = 0x7, .verify = true};
    if (m.seq == 0) {
        uint64_t end = dps_consume(consumer, &o, m.value, UINT64_MAX);
        dps_expect_drained_and_closed(consumer);
        CHECK_RESULT(MojoClose(consumer), OK);
        cmojo_mp_send(ctl, TAG_REPORT, REPORT_POSITION, end, NULL, 0);
    } else {
        uint64_t pos = dps_consume(consumer, &o, m.value, m.value + m.seq);
        CHECK_RESULT(pos, m.value + m.seq);
        cmojo_mp_send(ctl, TAG_HANDLES, 1, pos, &consumer, 1);
    }
    cmojo_mp_recv_tag(ctl, TAG_DONE, NULL, NULL);
    return cmojo_mp_child_finish("read-only consumer", &ctl, 1);
}

static void test_consumer_ring_is_read_only_in_every_process(void **state)
{
    MojoHandle ctl_a, ctl_b, producer, consumer;
    cmojo_mp_child a, b;
    cmojo_mp_msg m;

    (void)state;
    cmojo_mp_invite("ro_consumer", NULL, ctl_name, 1, &ctl_a, &a, 0);
    cmojo_mp_invite("ro_consumer", NULL, ctl_name, 1, &ctl_b, &b, 1);
    make_data_pipe(1, RO_CAPACITY, &producer, &consumer);
    dps_opts w = {.seed = RO_SEED, .element_size = 1, .max_chunk = 4096, .rng = 0x5};
    dps_produce(producer, &w, 0, 3 * RO_SHARE);
    wait_readable_bytes(consumer, 3 * RO_SHARE);

    /* Here, where it was made: the mapping (this process also holds the producer's fd). */
    check_ring_mapping_read_only(consumer);
    dps_opts r = {.seed = RO_SEED, .element_size = 1, .max_chunk = 999, .rng = 0x6, .verify = true};
    assert_int_equal(dps_consume(consumer, &r, 0, RO_SHARE), RO_SHARE);

    /* To A, which reads a share and sends it back: a consumer that arrived travels on. */
    cmojo_mp_send(ctl_a, TAG_HANDLES, RO_SHARE, RO_SHARE, &consumer, 1);
    consumer = recv_handle(ctl_a, &m);
    assert_int_equal(m.value, 2 * RO_SHARE);
    check_ring_mapping_read_only(consumer);

    /* Then to B, which reads to the end. */
    cmojo_mp_send(ctl_b, TAG_HANDLES, 0, m.value, &consumer, 1);
    assert_int_equal(MojoClose(producer), OK);
    assert_int_equal(recv_report(ctl_b, REPORT_POSITION), 3 * RO_SHARE);
    assert_true(cmojo_mp_wait_counts("broker", 2, 2, SETTLE_MS));
    finish_child(ctl_a, &a);
    finish_child(ctl_b, &b);
}

/* ------------------------------------------------------------------------ */

static int setup(void **state)
{
    cmojo_mp_reset_logs();
    return cmojo_mp_core_setup(state);
}

static const cmojo_mp_role roles[] = {
    {"stream_producer", role_stream_producer},
    {"stream_consumer", role_stream_consumer},
    {"move_writer", role_move_writer},
    {"move_reader", role_move_reader},
    {"pmove_a", role_pmove_a},
    {"pmove_b", role_pmove_b},
    {"victim", role_victim},
    {"helper", role_helper},
    {"bouncer", role_bouncer},
    {"until_closed", role_until_closed},
    {"sleeper", role_sleeper},
    {"leaver", role_leaver},
    {"swapper", role_swapper},
    {"ro_consumer", role_ro_consumer},
    {NULL, NULL},
};

#define DP_TEST(fn) cmocka_unit_test_setup_teardown(fn, setup, cmojo_mp_core_teardown)

int main(int argc, char **argv)
{
    cmojo_mp_child_dispatch(argc, argv, roles);

    const struct CMUnitTest tests[] = {
        DP_TEST(test_stream_1gib_child_to_parent),
        DP_TEST(test_stream_parent_to_child_small_ring_12_byte_elements),
        DP_TEST(test_consumer_moves_to_a_third_process_mid_stream),
        DP_TEST(test_producer_moves_to_a_third_process_mid_stream),
        DP_TEST(test_consumer_bounces_between_processes_mid_stream),
        DP_TEST(test_producer_and_consumer_swap_processes_at_once),
        DP_TEST(test_kill_9_producer_with_a_full_ring),
        DP_TEST(test_kill_9_producer_mid_stream),
        DP_TEST(test_kill_9_consumer),
        DP_TEST(test_kill_9_process_holding_a_consumer_in_transit),
        DP_TEST(test_producer_process_exits_without_closing),
        DP_TEST(test_consumer_ring_is_read_only_in_every_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
