/*
 * The POSIX channel over real socketpairs and a real IO thread: order across
 * writer threads, fd passing (same open file, close-on-exec, spread over
 * sendmsg calls), limits, forced EINTR/EAGAIN/short transfers, every way a
 * peer can break the framing (raw sendmsg from the test), EOF, shutdown from
 * other threads and from inside callbacks, fairness between channels. Every
 * test fails if it leaks an fd.
 */
#include "cmojo_test.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "channel/channel.h"
#include "channel/frame.h"
#include "cmojo_limits.h"
#include "platform/block.h"
#include "platform/io.h"
#include "platform/sys.h"

#define WAIT_SECONDS 30

static plat_io *io;
static int fd_baseline;

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int setup(void **state)
{
    channel_sys_sendmsg = plat_sendmsg;
    channel_sys_recvmsg = plat_recvmsg;
    if (cmojo_test_fd_setup(state) != 0)
        return -1;
    fd_baseline = cmojo_test_count_open_fds();
    return plat_io_start(&io);
}

static int teardown(void **state)
{
    plat_io_stop(io);
    io = NULL;
    channel_sys_sendmsg = plat_sendmsg;
    channel_sys_recvmsg = plat_recvmsg;
    return cmojo_test_fd_teardown(state);
}

static void make_socketpair(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
}

/* A socketpair whose first end can hold `sndbuf` bytes unread, so that writers run ahead. */
static void make_roomy_socketpair(int sv[2], int sndbuf)
{
    make_socketpair(sv);
    assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
}

/* ---- the receiving side: records what a channel delivers ---- */

#define SINK_MAX_FDS 1024
#define MAX_WRITERS 8

typedef struct sink {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    size_t frames;
    size_t bytes;
    uint16_t last_type;
    uint8_t first_payload[64];
    size_t first_payload_size;
    int errors;
    int protocol;
    const char *why;
    bool error_on_io_thread;
    bool frame_after_error;
    bool frame_off_io_thread;
    /* Per writer thread: next expected sequence number; mismatches counted. */
    uint32_t next_seq[MAX_WRITERS];
    bool check_order;
    int order_bad;
    /* Received fds kept here (else closed at once). */
    bool keep_fds;
    int fds[SINK_MAX_FDS];
    size_t nfds;
    size_t fds_received;
    /* Frames whose buffer was on offer; kept (payload, size, block) when keep_blocks. */
    size_t offered;
    bool keep_blocks;
    bool free_blocks; /* take every block on offer and free it at once */
    /* Frame i must be pattern_sizes[i] bytes of kept_byte(i, .); mismatches in order_bad. */
    const size_t *pattern_sizes;
    size_t pattern_count;
    size_t nkept;
    struct {
        const uint8_t *payload;
        size_t size;
        void *block;
    } kept[16];
    /* Behaviour on a frame. */
    channel *self;
    size_t shutdown_at; /* shut self down when this many frames arrived (0: never) */
    bool release_in_callback;
    int sleep_every; /* sleep 1 ms every this many frames */
    /* Frame number gate_at (1-based; 0: none) waits inside on_frame until gate_open. */
    size_t gate_at;
    bool gate_reached, gate_open;
    atomic_int in_frame;
} sink;

static void sink_init(sink *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cond, NULL);
}

static void sink_destroy(sink *s)
{
    for (size_t i = 0; i < s->nfds; i++)
        close(s->fds[i]);
    for (size_t i = 0; i < s->nkept; i++)
        plat_block_free(s->kept[i].block);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
}

/* Payload of a test frame: u32 writer, u32 seq, then bytes derived from both. */
static size_t fill_payload(uint8_t *buf, uint32_t writer, uint32_t seq, size_t len)
{
    assert_true(len >= 8);
    memcpy(buf, &writer, 4);
    memcpy(buf + 4, &seq, 4);
    for (size_t i = 8; i < len; i++)
        buf[i] = (uint8_t)(writer * 131u + seq * 31u + i);
    return len;
}

static size_t payload_len_for(uint32_t seq)
{
    return 8 + (seq * 37u) % 300u;
}

/* Byte j of frame i, in the tests of frames whose buffer is on offer. */
static uint8_t kept_byte(size_t frame, size_t j)
{
    return (uint8_t)(j * 13 + frame * 101 + (j >> 8));
}

static void sink_on_frame(void *ctx, uint16_t type, const uint8_t *payload, size_t size, int *fds,
                          size_t num_fds, void **block)
{
    sink *s = ctx;
    atomic_fetch_add(&s->in_frame, 1);
    pthread_mutex_lock(&s->mu);
    if (s->pattern_sizes) {
        size_t i = s->frames;
        bool ok = i < s->pattern_count && size == s->pattern_sizes[i];
        for (size_t j = 0; ok && j < size; j++)
            ok = payload[j] == kept_byte(i, j);
        if (!ok)
            s->order_bad++;
    }
    if (s->errors > 0)
        s->frame_after_error = true;
    if (!plat_io_on_thread(io))
        s->frame_off_io_thread = true;
    if (s->frames == 0) {
        s->first_payload_size = size;
        memcpy(s->first_payload, payload, size < 64 ? size : 64);
    }
    s->frames++;
    s->bytes += size;
    s->last_type = type;
    if (s->check_order) {
        uint32_t writer, seq;
        bool ok = size >= 8;
        if (ok) {
            memcpy(&writer, payload, 4);
            memcpy(&seq, payload + 4, 4);
            ok = writer < MAX_WRITERS && seq == s->next_seq[writer] &&
                 size == payload_len_for(seq) && type == (uint16_t)(1 + seq % 1000);
        }
        for (size_t i = 8; ok && i < size; i++)
            ok = payload[i] == (uint8_t)(writer * 131u + seq * 31u + i);
        if (ok)
            s->next_seq[writer]++;
        else
            s->order_bad++;
    }
    s->fds_received += num_fds;
    for (size_t i = 0; i < num_fds; i++) {
        if (s->keep_fds && s->nfds < SINK_MAX_FDS)
            s->fds[s->nfds++] = fds[i];
        else
            close(fds[i]);
    }
    /* Last: a block freed here takes the payload with it. */
    if (block) {
        s->offered++;
        if (s->free_blocks) {
            plat_block_free(*block);
            *block = NULL;
        } else if (s->keep_blocks && s->nkept < 16) {
            s->kept[s->nkept].payload = payload;
            s->kept[s->nkept].size = size;
            s->kept[s->nkept].block = *block;
            s->nkept++;
            *block = NULL;
        }
    }
    size_t frames = s->frames;
    pthread_cond_broadcast(&s->cond);
    if (s->gate_at != 0 && frames == s->gate_at) {
        s->gate_reached = true;
        pthread_cond_broadcast(&s->cond);
        while (!s->gate_open)
            pthread_cond_wait(&s->cond, &s->mu);
    }
    pthread_mutex_unlock(&s->mu);

    if (s->sleep_every > 0 && frames % (size_t)s->sleep_every == 0)
        sleep_ms(1);
    if (s->shutdown_at != 0 && frames == s->shutdown_at) {
        channel_shutdown(s->self);
        /* A write from inside the callback after shutdown is refused cleanly. */
        uint8_t b = 1;
        struct iovec v = {&b, 1};
        if (channel_write(s->self, 1, &v, 1, NULL, 0) != -EPIPE)
            s->order_bad = 1000;
        if (s->release_in_callback)
            channel_release(s->self);
    }
    atomic_fetch_sub(&s->in_frame, 1);
}

static void sink_on_error(void *ctx, int protocol, const char *why)
{
    sink *s = ctx;
    pthread_mutex_lock(&s->mu);
    s->errors++;
    s->protocol = protocol;
    s->why = why;
    s->error_on_io_thread = plat_io_on_thread(io);
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

static const channel_delegate *sink_delegate(sink *s)
{
    static _Thread_local channel_delegate d;
    d.ctx = s;
    d.on_frame = sink_on_frame;
    d.on_error = sink_on_error;
    return &d;
}

/* Waits until `frames` frames (or an error, if want_error) arrived. False on timeout. */
static bool sink_wait(sink *s, size_t frames, bool want_error)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += WAIT_SECONDS;
    pthread_mutex_lock(&s->mu);
    while (want_error ? s->errors == 0 : s->frames < frames) {
        if (pthread_cond_timedwait(&s->cond, &s->mu, &deadline) == ETIMEDOUT)
            break;
    }
    bool ok = want_error ? s->errors > 0 : s->frames >= frames;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

static size_t sink_frames(sink *s)
{
    pthread_mutex_lock(&s->mu);
    size_t n = s->frames;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static int sink_errors(sink *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->errors;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static void flush_io(void)
{
    /* Two turns of the IO loop: whatever was ready has been handled. */
    for (int i = 0; i < 3; i++)
        sleep_ms(5);
}

static channel *open_channel(int fd, sink *s)
{
    channel *c = NULL;
    assert_int_equal(channel_create(fd, io, sink_delegate(s), &c), 0);
    assert_non_null(c);
    s->self = c;
    return c;
}

static void close_channel(channel *c)
{
    channel_shutdown(c);
    channel_release(c);
}

static int write_bytes(channel *c, uint16_t type, const void *data, size_t len, int *fds,
                       size_t nfds)
{
    struct iovec v = {(void *)data, len};
    return channel_write(c, type, &v, len > 0 ? 1 : 0, fds, nfds);
}

/* The same frame through channel_write_frame: laid out in one buffer with room around it. */
static int write_frame_bytes(channel *c, uint16_t type, const void *data, size_t len)
{
    uint8_t *frame = malloc(CHANNEL_WRITE_FRAME_ROOM + len + CHANNEL_WRITE_FRAME_TAIL_ROOM);
    assert_non_null(frame);
    /* Garbage where the header and padding go: the channel must write both. */
    memset(frame, 0xa5, CHANNEL_WRITE_FRAME_ROOM + len + CHANNEL_WRITE_FRAME_TAIL_ROOM);
    memcpy(frame + CHANNEL_WRITE_FRAME_ROOM, data, len);
    int rc = channel_write_frame(c, type, frame, len);
    free(frame);
    return rc;
}

/* ---- raw peer: sends whatever bytes and fds it likes ---- */

static void raw_send(int fd, const void *data, size_t len, const int *fds, size_t nfds)
{
    struct iovec v = {(void *)data, len};
    struct msghdr msg;
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * 300)];
    } control;
    memset(&msg, 0, sizeof(msg));
    memset(&control, 0, sizeof(control));
    msg.msg_iov = &v;
    msg.msg_iovlen = 1;
    if (nfds > 0) {
        assert_true(nfds <= 300);
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
        memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
    }
    assert_int_equal(sendmsg(fd, &msg, MSG_NOSIGNAL), (ssize_t)len);
}

static size_t raw_header(uint8_t *h, uint32_t total, uint16_t header_size, uint16_t type,
                         uint16_t num_fds)
{
    memset(h, 0, 16);
    memcpy(h, &total, 4);
    memcpy(h + 4, &header_size, 2);
    memcpy(h + 6, &type, 2);
    memcpy(h + 8, &num_fds, 2);
    return 16;
}

/* n fresh fds (eventfds) for sending; the caller gives them away. */
static void make_fds(int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        fds[i] = eventfd(0, EFD_CLOEXEC);
        assert_true(fds[i] >= 0);
    }
}

/* ---- tests ---- */

typedef struct writer_arg {
    channel *c;
    uint32_t writer;
    uint32_t count;
    int failures;
} writer_arg;

static void *writer_main(void *arg)
{
    writer_arg *w = arg;
    uint8_t buf[512];
    for (uint32_t seq = 0; seq < w->count; seq++) {
        size_t len = fill_payload(buf, w->writer, seq, payload_len_for(seq));
        /* Two pieces, to exercise gathering; every third frame in one buffer instead. */
        struct iovec v[2] = {{buf, 3}, {buf + 3, len - 3}};
        uint16_t type = (uint16_t)(1 + seq % 1000);
        int rc = seq % 3 == 2 ? write_frame_bytes(w->c, type, buf, len)
                              : channel_write(w->c, type, v, 2, NULL, 0);
        if (rc != 0)
            w->failures++;
    }
    return NULL;
}

static void run_writers(channel *c, int nwriters, uint32_t count)
{
    pthread_t t[MAX_WRITERS];
    writer_arg args[MAX_WRITERS];
    for (int i = 0; i < nwriters; i++) {
        args[i] = (writer_arg){.c = c, .writer = (uint32_t)i, .count = count};
        assert_int_equal(pthread_create(&t[i], NULL, writer_main, &args[i]), 0);
    }
    for (int i = 0; i < nwriters; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(args[i].failures, 0);
    }
}

static void test_round_trip_in_order_from_several_threads(void **state)
{
    (void)state;
    int sv[2];
    make_socketpair(sv);
    /* A small send buffer, so writers hit EAGAIN and the queue for real. */
    int small = 4096;
    assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
    sink sa, sb;
    sink_init(&sa);
    sink_init(&sb);
    sb.check_order = true;
    sb.sleep_every = 500; /* a slow reader now and then */
    channel *a = open_channel(sv[0], &sa);
    channel *b = open_channel(sv[1], &sb);
    assert_int_equal(channel_start(a), 0);
    assert_int_equal(channel_start(b), 0);

    const int writers = 4;
    const uint32_t per_writer = 3000;
    run_writers(a, writers, per_writer);
    assert_true(sink_wait(&sb, (size_t)writers * per_writer, false));
    flush_io();
    assert_int_equal(sink_frames(&sb), (size_t)writers * per_writer);
    assert_int_equal(sb.order_bad, 0);
    for (int i = 0; i < writers; i++)
        assert_int_equal(sb.next_seq[i], per_writer);
    assert_false(sb.frame_off_io_thread);
    assert_int_equal(sa.errors + sb.errors, 0);
    assert_int_equal(sa.frames, 0);

    close_channel(a);
    close_channel(b);
    sink_destroy(&sa);
    sink_destroy(&sb);
}

static void test_write_before_start_is_delivered(void **state)
{
    (void)state;
    int sv[2];
    make_socketpair(sv);
    sink sa, sb;
    sink_init(&sa);
    sink_init(&sb);
    channel *a = open_channel(sv[0], &sa);
    channel *b = open_channel(sv[1], &sb);
    assert_int_equal(write_bytes(a, 5, "early", 5, NULL, 0), 0);
    assert_int_equal(channel_start(b), 0);
    assert_true(sink_wait(&sb, 1, false));
    assert_int_equal(sb.last_type, 5);
    assert_int_equal(sb.first_payload_size, 5);
    assert_memory_equal(sb.first_payload, "early", 5);
    /* Zero-length payload, and an iovec list with empty pieces. */
    struct iovec v[3] = {{NULL, 0}, {"ab", 2}, {NULL, 0}};
    assert_int_equal(channel_write(a, 6, v, 3, NULL, 0), 0);
    assert_int_equal(channel_write(a, 7, NULL, 0, NULL, 0), 0);
    assert_true(sink_wait(&sb, 3, false));
    assert_int_equal(sb.bytes, 7);
    assert_int_equal(sb.last_type, 7);
    assert_int_equal(channel_start(b), -EINVAL); /* started already */
    close_channel(a);
    channel_shutdown(b);
    channel_shutdown(b); /* idempotent */
    assert_int_equal(channel_start(b), -EPIPE);
    assert_int_equal(write_bytes(b, 1, "x", 1, NULL, 0), -EPIPE);
    channel_release(b);
    channel_release(NULL);
    sink_destroy(&sa);
    sink_destroy(&sb);
}

static void expect_same_file(int a, int b)
{
    struct stat sa, sb;
    assert_int_equal(fstat(a, &sa), 0);
    assert_int_equal(fstat(b, &sb), 0);
    assert_int_equal(sa.st_ino, sb.st_ino);
    assert_int_equal(sa.st_dev, sb.st_dev);
}

static void expect_cloexec(int fd)
{
    int flags = fcntl(fd, F_GETFD);
    assert_true(flags >= 0);
    assert_true(flags & FD_CLOEXEC);
}

static void test_fds_are_passed(void **state)
{
    (void)state;
    int sv[2], p[2], other[2];
    make_socketpair(sv);
    assert_int_equal(pipe(p), 0); /* no O_CLOEXEC: the receiver's copy must have it */
    make_socketpair(other);
    int ev = eventfd(0, 0);
    assert_true(ev >= 0);
    sink sa, sb;
    sink_init(&sa);
    sink_init(&sb);
    sb.keep_fds = true;
    channel *a = open_channel(sv[0], &sa);
    channel *b = open_channel(sv[1], &sb);
    assert_int_equal(channel_start(b), 0);
    int base = cmojo_test_count_open_fds();

    /* Sent copies: the originals stay ours to compare with. */
    int send[3] = {dup(p[0]), dup(other[0]), dup(ev)};
    assert_true(send[0] >= 0 && send[1] >= 0 && send[2] >= 0);
    assert_int_equal(write_bytes(a, 9, "fds!", 4, send, 3), 0);
    assert_true(sink_wait(&sb, 1, false));
    assert_int_equal(sb.nfds, 3);
    /* The sender's copies were closed, the receiver holds three new ones. */
    assert_int_equal(cmojo_test_count_open_fds(), base + 3);
    expect_same_file(sb.fds[0], p[0]);
    expect_same_file(sb.fds[1], other[0]);
    expect_same_file(sb.fds[2], ev);
    for (int i = 0; i < 3; i++)
        expect_cloexec(sb.fds[i]);
    /* And it works: bytes written to the pipe come out of the received end. */
    assert_int_equal(write(p[1], "z", 1), 1);
    char c = 0;
    assert_int_equal(read(sb.fds[0], &c, 1), 1);
    assert_int_equal(c, 'z');

    close_channel(a);
    close_channel(b);
    sink_destroy(&sb);
    sink_destroy(&sa);
    close(p[0]);
    close(p[1]);
    close(other[0]);
    close(other[1]);
    close(ev);
}

/* sendmsg wrapper that records how fds were spread. */
static atomic_int fd_sends;
static int fd_send_counts[8];
static size_t fd_send_bytes[8];

static ssize_t counting_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    ssize_t n = sendmsg(fd, msg, flags);
    if (n > 0 && msg->msg_controllen > 0) {
        struct cmsghdr *cm = CMSG_FIRSTHDR(msg);
        int k = atomic_fetch_add(&fd_sends, 1);
        if (k < 8) {
            fd_send_counts[k] = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            fd_send_bytes[k] = (size_t)n;
        }
    }
    return n;
}

static void test_253_fds_spread_over_two_sendmsg(void **state)
{
    (void)state;
    int sv[2], p[2];
    make_socketpair(sv);
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    sink sa, sb;
    sink_init(&sa);
    sink_init(&sb);
    sb.keep_fds = true;
    channel *a = open_channel(sv[0], &sa);
    channel *b = open_channel(sv[1], &sb);
    assert_int_equal(channel_start(b), 0);
    atomic_store(&fd_sends, 0);
    channel_sys_sendmsg = counting_sendmsg;
    int base = cmojo_test_count_open_fds();

    int fds[CMOJO_MAX_FDS_PER_FRAME];
    for (size_t i = 0; i < CMOJO_MAX_FDS_PER_FRAME; i++) {
        fds[i] = dup(p[1]);
        assert_true(fds[i] >= 0);
    }
    char payload[40] = "two-hundred-fifty-three";
    assert_int_equal(write_bytes(a, 2, payload, sizeof(payload), fds, CMOJO_MAX_FDS_PER_FRAME), 0);
    assert_true(sink_wait(&sb, 1, false));
    assert_int_equal(sb.nfds, CMOJO_MAX_FDS_PER_FRAME);
    assert_int_equal(sb.first_payload_size, sizeof(payload));
    assert_memory_equal(sb.first_payload, payload, sizeof(payload));
    for (size_t i = 0; i < sb.nfds; i++)
        expect_same_file(sb.fds[i], p[1]);
    /* Two sendmsg calls carried fds: 128 with the frame's first byte, then the rest. */
    assert_int_equal(atomic_load(&fd_sends), 2);
    assert_int_equal(fd_send_counts[0], CMOJO_MAX_FDS_PER_SENDMSG);
    assert_int_equal(fd_send_counts[1], CMOJO_MAX_FDS_PER_FRAME - CMOJO_MAX_FDS_PER_SENDMSG);
    assert_true(fd_send_bytes[0] >= 1 && fd_send_bytes[1] >= 1);
    assert_int_equal(fd_send_bytes[0] + fd_send_bytes[1], channel_frame_wire_size(40));
    /* Sent fds were closed on our side; the receiver holds its own copies. */
    assert_int_equal(cmojo_test_count_open_fds(), base + (int)CMOJO_MAX_FDS_PER_FRAME);

    close_channel(a);
    close_channel(b);
    sink_destroy(&sb);
    sink_destroy(&sa);
    close(p[0]);
    close(p[1]);
}

static void test_over_the_limits_is_refused_and_fds_closed(void **state)
{
    (void)state;
    int sv[2];
    make_socketpair(sv);
    sink sa, sb;
    sink_init(&sa);
    sink_init(&sb);
    channel *a = open_channel(sv[0], &sa);
    channel *b = open_channel(sv[1], &sb);
    assert_int_equal(channel_start(a), 0);
    assert_int_equal(channel_start(b), 0);
    int base = cmojo_test_count_open_fds();

    int fds[CMOJO_MAX_FDS_PER_FRAME + 1];
    make_fds(fds, CMOJO_MAX_FDS_PER_FRAME + 1);
    assert_int_equal(write_bytes(a, 1, "x", 1, fds, CMOJO_MAX_FDS_PER_FRAME + 1), -EMSGSIZE);
    assert_int_equal(cmojo_test_count_open_fds(), base);

    /* Payload one byte over, in two pieces whose sum is over (never read). */
    static uint8_t small[8];
    make_fds(fds, 2);
    struct iovec v[2] = {{small, channel_frame_max_payload()}, {small, 1}};
    assert_int_equal(channel_write(a, 1, v, 2, fds, 2), -EMSGSIZE);
    assert_int_equal(cmojo_test_count_open_fds(), base);
    /* Pieces whose sum wraps round size_t are refused too. */
    struct iovec w[2] = {{small, SIZE_MAX}, {small, 2}};
    assert_int_equal(channel_write(a, 1, w, 2, NULL, 0), -EMSGSIZE);
    /* channel_write_frame refuses a payload over the limit before it touches the buffer. */
    uint8_t guard[CHANNEL_WRITE_FRAME_ROOM + CHANNEL_WRITE_FRAME_TAIL_ROOM];
    memset(guard, 0x5a, sizeof(guard));
    assert_int_equal(channel_write_frame(a, 1, guard, channel_frame_max_payload() + 1), -EMSGSIZE);
    for (size_t i = 0; i < sizeof(guard); i++)
        assert_int_equal(guard[i], 0x5a);

    /* The channel is unharmed. */
    assert_int_equal(write_bytes(a, 3, "ok", 2, NULL, 0), 0);
    assert_true(sink_wait(&sb, 1, false));
    assert_int_equal(sb.last_type, 3);
    assert_int_equal(sa.errors + sb.errors, 0);

    close_channel(a);
    close_channel(b);
    sink_destroy(&sb);
    sink_destroy(&sa);
}

/* ---- forced EINTR / EAGAIN / short transfers through the hooks ---- */

static atomic_uint flaky_send_calls;
static atomic_uint flaky_recv_calls;

/* Passes at most `limit` bytes of msg's iovecs to the real call. */
static size_t clip_iov(const struct msghdr *msg, struct iovec *out, size_t limit, size_t *cnt)
{
    size_t total = 0;
    *cnt = 0;
    for (size_t i = 0; i < msg->msg_iovlen && total < limit && *cnt < 64; i++) {
        size_t take = msg->msg_iov[i].iov_len;
        if (take > limit - total)
            take = limit - total;
        if (take == 0)
            continue;
        out[*cnt].iov_base = msg->msg_iov[i].iov_base;
        out[*cnt].iov_len = take;
        (*cnt)++;
        total += take;
    }
    return total;
}

static ssize_t flaky_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    unsigned k = atomic_fetch_add(&flaky_send_calls, 1);
    switch (k % 5) {
    case 0:
        errno = EINTR;
        return -1;
    case 1:
        errno = EAGAIN;
        return -1;
    case 2: {
        struct msghdr m = *msg;
        struct iovec v[64];
        size_t cnt;
        clip_iov(msg, v, 1 + k % 11, &cnt);
        m.msg_iov = v;
        m.msg_iovlen = cnt;
        return plat_sendmsg(fd, &m, flags);
    }
    default:
        return plat_sendmsg(fd, msg, flags);
    }
}

/*
 * The receive side only gets interrupted: a Unix stream socket returns less
 * than asked only once drained or after a segment that carried fds (which
 * the fds sent below produce), and the channel relies on exactly that, so a
 * hook that cut reads short at random would fake a socket Linux never gives.
 */
static ssize_t flaky_recvmsg(int fd, struct msghdr *msg, int flags)
{
    unsigned k = atomic_fetch_add(&flaky_recv_calls, 1);
    if (k % 3 == 0) {
        errno = EINTR;
        return -1;
    }
    return plat_recvmsg(fd, msg, flags);
}

static void test_eintr_eagain_and_short_transfers_keep_order(void **state)
{
    (void)state;
    int sv[2];
    make_socketpair(sv);
    sink sa, sb;
    sink_init(&sa);
    sink_init(&sb);
    sb.check_order = true;
    channel *a = open_channel(sv[0], &sa);
    channel *b = open_channel(sv[1], &sb);
    atomic_store(&flaky_send_calls, 0);
    atomic_store(&flaky_recv_calls, 0);
    channel_sys_sendmsg = flaky_sendmsg;
    channel_sys_recvmsg = flaky_recvmsg;
    assert_int_equal(channel_start(a), 0);
    assert_int_equal(channel_start(b), 0);

    const uint32_t count = 600;
    size_t fds_sent = 0;
    uint8_t buf[512];
    for (uint32_t seq = 0; seq < count; seq++) {
        size_t len = fill_payload(buf, 0, seq, payload_len_for(seq));
        int fds[CMOJO_MAX_FDS_PER_FRAME];
        size_t nfds = seq % 7 == 0 ? 1 + seq % 3 : 0;
        if (seq % 100 == 50)
            nfds = 200; /* spread over two sendmsg, each possibly short or refused */
        make_fds(fds, nfds);
        fds_sent += nfds;
        uint16_t type = (uint16_t)(1 + seq % 1000);
        if (nfds == 0 && seq % 2 == 0)
            assert_int_equal(write_frame_bytes(a, type, buf, len), 0);
        else
            assert_int_equal(write_bytes(a, type, buf, len, fds, nfds), 0);
    }
    assert_true(sink_wait(&sb, count, false));
    assert_int_equal(sb.order_bad, 0);
    assert_int_equal(sb.next_seq[0], count);
    assert_int_equal(sb.fds_received, fds_sent);
    assert_int_equal(sa.errors + sb.errors, 0);
    /* The hooks really were in the way, many times over. */
    assert_true(atomic_load(&flaky_send_calls) > 100);
    assert_true(atomic_load(&flaky_recv_calls) > 100);

    close_channel(a);
    close_channel(b);
    sink_destroy(&sb);
    sink_destroy(&sa);
}

/*
 * A frame sent as one buffer goes out as sendto (platform/sys.h); to a
 * closed peer it must still fail with EPIPE, not raise SIGPIPE (which by
 * default would kill this test), and the channel refuses later writes.
 */
static void test_one_buffer_to_a_closed_peer_is_epipe_not_sigpipe(void **state)
{
    (void)state;
    int sv[2];
    make_socketpair(sv);
    struct sigaction dfl = {.sa_handler = SIG_DFL}, old;
    assert_int_equal(sigaction(SIGPIPE, &dfl, &old), 0);

    close(sv[1]);
    uint8_t byte = 7;
    struct iovec v = {&byte, 1};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
    errno = 0;
    assert_int_equal(plat_sendmsg(sv[0], &m, MSG_NOSIGNAL | MSG_DONTWAIT), -1);
    assert_int_equal(errno, EPIPE);

    sink sa;
    sink_init(&sa);
    channel *a = open_channel(sv[0], &sa);
    assert_int_equal(channel_start(a), 0);
    int rc = write_frame_bytes(a, 1, "x", 1);
    /* The first write may be refused already, or be the one that breaks the write side. */
    assert_true(rc == 0 || rc == -EPIPE);
    assert_int_equal(write_frame_bytes(a, 1, "x", 1), -EPIPE);
    assert_int_equal(write_bytes(a, 1, "x", 1, NULL, 0), -EPIPE);
    close_channel(a);
    sink_destroy(&sa);
    assert_int_equal(sigaction(SIGPIPE, &old, NULL), 0);
}

/* A write error seen by a writer thread is reported once, on the IO thread. */
static ssize_t broken_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    (void)fd;
    (void)msg;
    (void)flags;
    errno = ECONNRESET;
    return -1;
}

/*
 * A write error stops the write side only: what the peer sent before it went
 * away is still delivered, and the EOF after it fails the channel, once, on
 * the IO thread.
 */
static void test_write_error_stops_writes_but_reads_drain_to_eof(void **state)
{
    (void)state;
    int sv[2];
    make_socketpair(sv);
    sink sa;
    sink_init(&sa);
    channel *a = open_channel(sv[0], &sa);
    assert_int_equal(channel_start(a), 0);
    int base = cmojo_test_count_open_fds();
    channel_sys_sendmsg = broken_sendmsg;
    int fds[2];
    make_fds(fds, 2);
    assert_int_equal(write_bytes(a, 1, "x", 1, fds, 2), -EPIPE);
    assert_int_equal(cmojo_test_count_open_fds(), base);
    channel_sys_sendmsg = sendmsg;
    /* Writes stay refused, fds closed. */
    make_fds(fds, 1);
    assert_int_equal(write_bytes(a, 1, "y", 1, fds, 1), -EPIPE);
    assert_int_equal(cmojo_test_count_open_fds(), base);
    assert_true(channel_write_idle(a));
    /* The peer's last frame still arrives; its close then fails the channel. */
    uint8_t frame[CHANNEL_FRAME_HEADER_SIZE + 8] = {0};
    channel_frame_write_header(frame, 7, 8, 0);
    memcpy(frame + CHANNEL_FRAME_HEADER_SIZE, "lastword", 8);
    raw_send(sv[1], frame, sizeof(frame), NULL, 0);
    close(sv[1]);
    assert_true(sink_wait(&sa, 1, true));
    flush_io();
    assert_int_equal(sink_frames(&sa), 1);
    assert_int_equal(sink_errors(&sa), 1);
    assert_int_equal(sa.protocol, 0);
    assert_true(sa.error_on_io_thread);
    close_channel(a);
    sink_destroy(&sa);
}

/* ---- a peer that breaks the rules ---- */

typedef enum bad_peer {
    BAD_GARBAGE,
    BAD_LYING_FD_COUNT,
    BAD_TRUNCATED_THEN_EOF,
    BAD_OVERSIZED,
    BAD_TOO_MANY_FDS_IN_HEADER,
    BAD_TOO_MANY_FDS_IN_ONE_SENDMSG,
    BAD_FDS_WITH_NO_FRAME,
    BAD_FDS_AHEAD_OF_FRAME,
    BAD_PADDING,
    BAD_COUNT
} bad_peer;

static void close_fds_after_send(const int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
}

static void run_bad_peer(bad_peer kind)
{
    int sv[2];
    make_socketpair(sv);
    sink sb;
    sink_init(&sb);
    channel *b = open_channel(sv[1], &sb);
    assert_int_equal(channel_start(b), 0);
    int base = cmojo_test_count_open_fds();

    /* One good frame first: it must still arrive. */
    uint8_t good[24];
    raw_header(good, 20, 16, 4, 0);
    memcpy(good + 16, "good", 4);
    memset(good + 20, 0, 4);
    raw_send(sv[0], good, sizeof(good), NULL, 0);

    uint8_t buf[64];
    int fds[256];
    size_t nfds = 0;
    switch (kind) {
    case BAD_GARBAGE:
        raw_send(sv[0], "this is not a frame header at all", 33, NULL, 0);
        break;
    case BAD_LYING_FD_COUNT:
        raw_header(buf, 16, 16, 1, 3);
        nfds = 2;
        make_fds(fds, nfds);
        raw_send(sv[0], buf, 16, fds, nfds);
        break;
    case BAD_TRUNCATED_THEN_EOF:
        raw_header(buf, 100, 16, 1, 1);
        nfds = 1;
        make_fds(fds, nfds);
        raw_send(sv[0], buf, 40, fds, nfds);
        shutdown(sv[0], SHUT_WR);
        break;
    case BAD_OVERSIZED:
        raw_header(buf, CMOJO_MAX_FRAME_SIZE + 8, 16, 1, 0);
        raw_send(sv[0], buf, 16, NULL, 0);
        break;
    case BAD_TOO_MANY_FDS_IN_HEADER:
        raw_header(buf, 16, 16, 1, CMOJO_MAX_FDS_PER_FRAME + 1);
        raw_send(sv[0], buf, 16, NULL, 0);
        break;
    case BAD_TOO_MANY_FDS_IN_ONE_SENDMSG:
        /* Valid header, but 200 fds in one sendmsg: more than the receiver's control buffer. */
        raw_header(buf, 16, 16, 1, 200);
        nfds = 200;
        make_fds(fds, nfds);
        raw_send(sv[0], buf, 16, fds, nfds);
        break;
    case BAD_FDS_WITH_NO_FRAME:
        raw_header(buf, 16, 16, 1, 0);
        nfds = 2;
        make_fds(fds, nfds);
        raw_send(sv[0], buf, 16, fds, nfds);
        break;
    case BAD_FDS_AHEAD_OF_FRAME:
        raw_header(buf, 40, 16, 1, 1);
        nfds = 3;
        make_fds(fds, nfds);
        raw_send(sv[0], buf, 20, fds, nfds);
        break;
    case BAD_PADDING:
        raw_header(buf, 17, 16, 1, 0);
        memcpy(buf + 16, "x\0\0\0\0\0\0\x01", 8);
        raw_send(sv[0], buf, 24, NULL, 0);
        break;
    default:
        fail();
    }
    /* Our copies are gone: the kernel or the channel owns them now. */
    close_fds_after_send(fds, nfds);

    assert_true(sink_wait(&sb, 0, true));
    flush_io();
    /* Whatever it sends now is not looked at. */
    if (kind != BAD_TRUNCATED_THEN_EOF)
        raw_send(sv[0], good, sizeof(good), NULL, 0);
    flush_io();
    assert_int_equal(sink_errors(&sb), 1);
    if (sb.protocol == 0)
        fail_msg("kind %d: protocol 0 (%s)", (int)kind, sb.why);
    assert_non_null(sb.why);
    size_t frames = sink_frames(&sb);
    if (kind == BAD_FDS_WITH_NO_FRAME) {
        assert_int_equal(frames, 2); /* the frame was fine; the fds after it were not */
    } else if (kind == BAD_TOO_MANY_FDS_IN_ONE_SENDMSG) {
        /* MSG_CTRUNC fails the whole read, which may have held the good frame too. */
        assert_true(frames <= 1);
    } else {
        assert_int_equal(frames, 1);
    }
    if (frames > 0) {
        assert_int_equal(sb.first_payload_size, 4);
        assert_memory_equal(sb.first_payload, "good", 4);
    }
    assert_false(sb.frame_after_error);
    assert_true(sb.error_on_io_thread);
    /* Every fd that arrived was closed: only our two sockets remain. */
    assert_int_equal(cmojo_test_count_open_fds(), base);
    assert_int_equal(write_bytes(b, 1, "x", 1, NULL, 0), -EPIPE);

    close_channel(b);
    close(sv[0]);
    sink_destroy(&sb);
}

static void test_bad_peer_garbage(void **state)
{
    (void)state;
    run_bad_peer(BAD_GARBAGE);
}

static void test_bad_peer_lying_fd_count(void **state)
{
    (void)state;
    run_bad_peer(BAD_LYING_FD_COUNT);
}

static void test_bad_peer_truncated_frame_then_eof(void **state)
{
    (void)state;
    run_bad_peer(BAD_TRUNCATED_THEN_EOF);
}

static void test_bad_peer_oversized_frame(void **state)
{
    (void)state;
    run_bad_peer(BAD_OVERSIZED);
}

static void test_bad_peer_too_many_fds_in_header(void **state)
{
    (void)state;
    run_bad_peer(BAD_TOO_MANY_FDS_IN_HEADER);
}

static void test_bad_peer_too_many_fds_in_one_sendmsg(void **state)
{
    (void)state;
    run_bad_peer(BAD_TOO_MANY_FDS_IN_ONE_SENDMSG);
}

static void test_bad_peer_fds_with_no_frame(void **state)
{
    (void)state;
    run_bad_peer(BAD_FDS_WITH_NO_FRAME);
}

static void test_bad_peer_fds_ahead_of_frame(void **state)
{
    (void)state;
    run_bad_peer(BAD_FDS_AHEAD_OF_FRAME);
}

static void test_bad_peer_nonzero_padding(void **state)
{
    (void)state;
    run_bad_peer(BAD_PADDING);
}

static void test_eof_is_not_a_protocol_error(void **state)
{
    (void)state;
    int sv[2];
    make_socketpair(sv);
    sink sa, sb;
    sink_init(&sa);
    sink_init(&sb);
    channel *a = open_channel(sv[0], &sa);
    channel *b = open_channel(sv[1], &sb);
    assert_int_equal(channel_start(a), 0);
    assert_int_equal(channel_start(b), 0);
    assert_int_equal(write_bytes(a, 2, "bye", 3, NULL, 0), 0);
    close_channel(a); /* closes the socket: b sees the frame, then EOF */
    assert_true(sink_wait(&sb, 0, true));
    flush_io();
    assert_int_equal(sink_errors(&sb), 1);
    assert_int_equal(sb.protocol, 0);
    assert_int_equal(sb.frames, 1);
    assert_true(sb.error_on_io_thread);
    assert_int_equal(sa.errors, 0); /* shutdown is not an error */
    close_channel(b);
    sink_destroy(&sa);
    sink_destroy(&sb);
}

/* ---- shutdown ---- */

typedef struct flood_arg {
    channel *c;
    atomic_int stop;
    size_t sent;
} flood_arg;

static void *flood_main(void *arg)
{
    flood_arg *f = arg;
    uint8_t buf[256];
    memset(buf, 0x5a, sizeof(buf));
    while (!atomic_load(&f->stop)) {
        int fds[1];
        make_fds(fds, 1);
        int rc = write_bytes(f->c, 1, buf, sizeof(buf), fds, 1);
        if (rc == -EPIPE)
            break;
        if (rc != 0)
            abort();
        f->sent++;
        if (f->sent % 64 == 0)
            sleep_ms(1); /* keep the socket from filling up for good */
    }
    return NULL;
}

static void test_shutdown_from_another_thread_while_frames_arrive(void **state)
{
    (void)state;
    for (int round = 0; round < 5; round++) {
        int sv[2];
        make_socketpair(sv);
        sink sa, sb;
        sink_init(&sa);
        sink_init(&sb);
        sb.sleep_every = 7; /* often inside on_frame when shutdown comes */
        channel *a = open_channel(sv[0], &sa);
        channel *b = open_channel(sv[1], &sb);
        assert_int_equal(channel_start(a), 0);
        assert_int_equal(channel_start(b), 0);
        flood_arg f = {.c = a};
        atomic_init(&f.stop, 0);
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, flood_main, &f), 0);
        assert_true(sink_wait(&sb, 50 + (size_t)round * 20, false));

        channel_shutdown(b);
        /* No callback is running now, and none comes later. */
        assert_int_equal(atomic_load(&sb.in_frame), 0);
        size_t frames = sink_frames(&sb);
        flush_io();
        assert_int_equal(sink_frames(&sb), frames);
        assert_int_equal(sink_errors(&sb), 0);

        /* The writer sees its peer gone: -EPIPE, and a's on_error (EOF or EPIPE). */
        assert_true(sink_wait(&sa, 0, true));
        assert_int_equal(sa.protocol, 0);
        atomic_store(&f.stop, 1);
        pthread_join(t, NULL);
        close_channel(a);
        channel_release(b);
        sink_destroy(&sa);
        sink_destroy(&sb);
    }
}

static void test_shutdown_from_inside_on_frame(void **state)
{
    (void)state;
    for (int release = 0; release < 2; release++) {
        int sv[2];
        make_socketpair(sv);
        sink sa, sb;
        sink_init(&sa);
        sink_init(&sb);
        sb.shutdown_at = 3;
        sb.release_in_callback = release;
        channel *a = open_channel(sv[0], &sa);
        channel *b = open_channel(sv[1], &sb);
        assert_int_equal(channel_start(a), 0);
        /* Ten frames, all in the socket before b reads any, each with an fd. */
        for (int i = 0; i < 10; i++) {
            int fds[1];
            make_fds(fds, 1);
            assert_int_equal(write_bytes(a, 1, "0123456789", 10, fds, 1), 0);
        }
        assert_int_equal(channel_start(b), 0);
        assert_true(sink_wait(&sb, 3, false));
        assert_true(sink_wait(&sa, 0, true)); /* a sees b's socket closed */
        flush_io();
        assert_int_equal(sink_frames(&sb), 3);
        assert_int_equal(sink_errors(&sb), 0);
        assert_int_equal(sb.order_bad, 0); /* the write inside the callback got -EPIPE */
        if (!release) {
            channel_shutdown(b); /* idempotent */
            channel_release(b);
        }
        close_channel(a);
        sink_destroy(&sa);
        sink_destroy(&sb);
    }
}

static void *shutdown_main(void *arg)
{
    channel_shutdown(arg);
    return NULL;
}

/* Shutdown from several threads at once: each returns with no callback running. */
static void test_concurrent_shutdowns(void **state)
{
    (void)state;
    int sv[2];
    make_socketpair(sv);
    sink sa, sb;
    sink_init(&sa);
    sink_init(&sb);
    sb.sleep_every = 3;
    channel *a = open_channel(sv[0], &sa);
    channel *b = open_channel(sv[1], &sb);
    assert_int_equal(channel_start(a), 0);
    assert_int_equal(channel_start(b), 0);
    flood_arg f = {.c = a};
    atomic_init(&f.stop, 0);
    pthread_t flood, t[3];
    assert_int_equal(pthread_create(&flood, NULL, flood_main, &f), 0);
    assert_true(sink_wait(&sb, 20, false));
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&t[i], NULL, shutdown_main, b), 0);
    channel_shutdown(b);
    assert_int_equal(atomic_load(&sb.in_frame), 0);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    atomic_store(&f.stop, 1);
    pthread_join(flood, NULL);
    close_channel(a);
    channel_release(b);
    sink_destroy(&sa);
    sink_destroy(&sb);
}

/* ---- fairness and size ---- */

typedef struct raw_flood {
    int fd;
    atomic_int stop;
} raw_flood;

static void *raw_flood_main(void *arg)
{
    raw_flood *f = arg;
    static uint8_t frame[64 * 1024];
    size_t payload = sizeof(frame) - 16;
    raw_header(frame, (uint32_t)(payload + 16), 16, 1, 0);
    while (!atomic_load(&f->stop)) {
        /* Blocking writes: the socket is full whenever the reader pauses. */
        size_t off = 0;
        while (off < sizeof(frame) && !atomic_load(&f->stop)) {
            ssize_t n = send(f->fd, frame + off, sizeof(frame) - off, MSG_NOSIGNAL);
            if (n <= 0)
                return NULL;
            off += (size_t)n;
        }
    }
    return NULL;
}

static void test_busy_channel_does_not_starve_another(void **state)
{
    (void)state;
    int busy[2], quiet[2];
    make_socketpair(busy);
    make_socketpair(quiet);
    int big = 1 << 20;
    setsockopt(busy[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    sink sbusy, sq, sqa;
    sink_init(&sbusy);
    sink_init(&sq);
    sink_init(&sqa);
    /* The busy channel's reader is slower than the flood (1 ms per 64 KiB frame),
     * so its socket never drains: only the per-wake-up budget lets the quiet
     * channel's pings through. */
    sbusy.sleep_every = 1;
    channel *cb = open_channel(busy[1], &sbusy);
    channel *qa = open_channel(quiet[0], &sqa);
    channel *qb = open_channel(quiet[1], &sq);
    assert_int_equal(channel_start(cb), 0);
    assert_int_equal(channel_start(qb), 0);
    raw_flood f = {.fd = busy[0]};
    atomic_init(&f.stop, 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, raw_flood_main, &f), 0);
    assert_true(sink_wait(&sbusy, 100, false)); /* the flood is flowing */

    /* Ping until the flood has demonstrably kept flowing alongside: at least 20
     * pings and 100 more flood frames. Counting a fixed number of pings alone let
     * a descheduled flood thread (loaded CI machine) deliver nothing meanwhile. */
    size_t flood_start = sink_frames(&sbusy);
    size_t flooded = flood_start;
    size_t pings = 0;
    double worst = 0;
    double deadline = now_seconds() + 20.0;
    while ((pings < 20 || flooded - flood_start < 100) && now_seconds() < deadline) {
        double start = now_seconds();
        assert_int_equal(write_bytes(qa, 1, "ping", 4, NULL, 0), 0);
        pings++;
        assert_true(sink_wait(&sq, pings, false));
        double took = now_seconds() - start;
        if (took > worst)
            worst = took;
        flooded = sink_frames(&sbusy);
    }
    atomic_store(&f.stop, 1);
    close_channel(cb); /* unblocks the flood thread's send */
    pthread_join(t, NULL);
    int errors = sbusy.errors;
    /* Cleaned up first: a failed check below must not leave channels for teardown. */
    close_channel(qa);
    close_channel(qb);
    close(busy[0]);
    sink_destroy(&sbusy);
    sink_destroy(&sq);
    sink_destroy(&sqa);

    /* The flood kept going while the pings got through quickly. */
    if (flooded - flood_start < 100)
        fail_msg("only %zu frames of the flood arrived during %zu pings", flooded - flood_start,
                 pings);
    if (worst > 2.0)
        fail_msg("a ping took %.3f s behind the busy channel", worst);
    assert_int_equal(errors, 0);
}

static void test_large_frames_round_trip(void **state)
{
    (void)state;
    int sv[2];
    make_socketpair(sv);
    sink sa, sb;
    sink_init(&sa);
    sink_init(&sb);
    channel *a = open_channel(sv[0], &sa);
    channel *b = open_channel(sv[1], &sb);
    assert_int_equal(channel_start(a), 0);
    assert_int_equal(channel_start(b), 0);
    size_t sizes[] = {3 * 1024 * 1024 + 5, 100, 70000, 1};
    size_t total = 0;
    for (size_t i = 0; i < 4; i++) {
        uint8_t *buf = malloc(sizes[i]);
        assert_non_null(buf);
        for (size_t j = 0; j < sizes[i]; j++)
            buf[j] = (uint8_t)(j * 7 + i);
        assert_int_equal(write_bytes(a, (uint16_t)(i + 1), buf, sizes[i], NULL, 0), 0);
        total += sizes[i];
        free(buf);
    }
    assert_true(sink_wait(&sb, 4, false));
    assert_int_equal(sb.bytes, total);
    assert_int_equal(sb.last_type, 4);
    assert_int_equal(sb.first_payload_size, sizes[0]);
    for (size_t j = 0; j < 64; j++)
        assert_int_equal(sb.first_payload[j], (uint8_t)(j * 7));
    assert_int_equal(sa.errors + sb.errors, 0);
    close_channel(a);
    close_channel(b);
    sink_destroy(&sa);
    sink_destroy(&sb);
}

/* Counts recvmsg calls and the ones that found nothing (EAGAIN). */
static atomic_int counted_recv_calls;
static atomic_int counted_recv_empty;

static ssize_t counting_recvmsg(int fd, struct msghdr *msg, int flags)
{
    ssize_t n = recvmsg(fd, msg, flags);
    atomic_fetch_add(&counted_recv_calls, 1);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        atomic_fetch_add(&counted_recv_empty, 1);
    return n;
}

/*
 * Frames larger than the initial receive buffer, one at a time: once the
 * buffer has grown for the first, it keeps that size, so every later frame
 * is read without a recvmsg that comes back empty (a short read ends the
 * loop) and no frame takes more reads than the pieces it arrived in.
 */
static void test_large_frames_keep_the_grown_buffer(void **state)
{
    (void)state;
    int sv[2];
    make_roomy_socketpair(sv, 1 << 20);
    sink sa, sb;
    sink_init(&sa);
    sink_init(&sb);
    channel *a = open_channel(sv[0], &sa);
    channel *b = open_channel(sv[1], &sb);
    channel_sys_recvmsg = counting_recvmsg;
    assert_int_equal(channel_start(a), 0);
    assert_int_equal(channel_start(b), 0);

    const size_t size = 100 * 1024; /* beyond the 64 KiB the buffer starts with */
    const size_t rounds = 50;
    uint8_t *buf = malloc(size);
    assert_non_null(buf);
    memset(buf, 0x5a, size);
    assert_int_equal(write_bytes(a, 1, buf, size, NULL, 0), 0);
    assert_true(sink_wait(&sb, 1, false));
    flush_io();
    atomic_store(&counted_recv_calls, 0);
    atomic_store(&counted_recv_empty, 0);
    for (size_t i = 0; i < rounds; i++) {
        assert_int_equal(write_bytes(a, 1, buf, size, NULL, 0), 0);
        assert_true(sink_wait(&sb, 2 + i, false));
    }
    free(buf);
    assert_int_equal(atomic_load(&counted_recv_empty), 0);
    /* One read per frame, more only when a frame was read while still arriving. */
    assert_true(atomic_load(&counted_recv_calls) >= (int)rounds);
    assert_int_equal(sb.bytes, (rounds + 1) * size);
    assert_int_equal(sa.errors + sb.errors, 0);
    close_channel(a);
    close_channel(b);
    sink_destroy(&sa);
    sink_destroy(&sb);
}

/* Frame i of test_large_frames_can_be_kept: its size. */
static const size_t kept_sizes[] = {40000, 30000, 20000, 70000, 100, 50000, 600000, 20000, 16};

/* Writes sizes[0..n) as frames of kept_byte(i, .) on c; the total. */
static size_t write_pattern(channel *c, const size_t *sizes, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t *buf = malloc(sizes[i]);
        assert_non_null(buf);
        for (size_t j = 0; j < sizes[i]; j++)
            buf[j] = kept_byte(i, j);
        assert_int_equal(write_bytes(c, (uint16_t)(i + 1), buf, sizes[i], NULL, 0), 0);
        total += sizes[i];
        free(buf);
    }
    return total;
}

/*
 * Writes sizes[0..n) (write_pattern) into a channel whose receiver, with
 * sink sb (set up by the caller), starts only once all are written, so that
 * several arrive in one read; waits for them all, checks that every byte
 * arrived and nothing failed, and closes both channels. sb stays the
 * caller's to check and destroy.
 */
static void deliver_pattern(sink *sb, const size_t *sizes, size_t n)
{
    int sv[2];
    make_roomy_socketpair(sv, 4 << 20);
    sink sa;
    sink_init(&sa);
    channel *a = open_channel(sv[0], &sa);
    channel *b = open_channel(sv[1], sb);
    assert_int_equal(channel_start(a), 0);
    size_t total = write_pattern(a, sizes, n);
    assert_int_equal(channel_start(b), 0);
    assert_true(sink_wait(sb, n, false));
    flush_io();
    assert_int_equal(sb->bytes, total);
    assert_int_equal(sa.errors + sb->errors, 0);
    close_channel(a);
    close_channel(b);
    sink_destroy(&sa);
}

/*
 * Large frames are offered with their buffer; a receiver that keeps them
 * reads them after later frames arrived (nothing overwrote them: the
 * channel read on into another buffer), and the frames that came in the
 * same reads behind a kept one arrive whole.
 */
static void test_large_frames_can_be_kept(void **state)
{
    (void)state;
    const size_t nframes = sizeof(kept_sizes) / sizeof(kept_sizes[0]);
    sink sb;
    sink_init(&sb);
    sb.keep_blocks = true;
    sb.pattern_sizes = kept_sizes;
    sb.pattern_count = nframes;
    deliver_pattern(&sb, kept_sizes, nframes);

    assert_int_equal(sb.order_bad, 0);
    /* 40000 (in the first 64 KiB read, with 24 KiB behind it), 70000, 50000, 600000. */
    assert_true(sb.offered >= 4);
    assert_int_equal(sb.nkept, sb.offered);
    for (size_t k = 0; k < sb.nkept; k++) {
        const uint8_t *p = sb.kept[k].payload;
        size_t size = sb.kept[k].size;
        assert_true(size >= 16 * 1024);
        assert_true(p > (const uint8_t *)sb.kept[k].block);
        assert_int_equal((uintptr_t)p % 8, 0);
        bool intact = false;
        for (size_t i = 0; i < nframes && !intact; i++) {
            intact = kept_sizes[i] == size;
            for (size_t j = 0; intact && j < size; j++)
                intact = p[j] == kept_byte(i, j);
        }
        if (!intact)
            fail_msg("kept frame %zu (%zu bytes) was overwritten", k, size);
    }
    sink_destroy(&sb);
}

/* Writes frame i of kept_byte(i, .) of `size` bytes on c. */
static void write_pattern_frame(channel *c, size_t i, size_t size)
{
    uint8_t *buf = malloc(size);
    assert_non_null(buf);
    for (size_t j = 0; j < size; j++)
        buf[j] = kept_byte(i, j);
    assert_int_equal(write_bytes(c, 1, buf, size, NULL, 0), 0);
    free(buf);
}

/* Writes frame i alone (once frame i-1 was delivered), waits for it; whether it was on offer. */
static bool alone_offered(channel *a, sink *sb, size_t i, size_t size)
{
    pthread_mutex_lock(&sb->mu);
    size_t before = sb->offered;
    pthread_mutex_unlock(&sb->mu);
    write_pattern_frame(a, i, size);
    assert_true(sink_wait(sb, i + 1, false));
    pthread_mutex_lock(&sb->mu);
    bool offered = sb->offered > before;
    pthread_mutex_unlock(&sb->mu);
    return offered;
}

/*
 * Mid-sized frames (RX_SMALL_CAPACITY in channel.c): one that arrives alone
 * is copied out of the default buffer, and switches the channel to small
 * buffers, in which the next ones are on offer. A burst that fills the small
 * buffer switches back (the next mid-sized frame alone is copied again), and
 * so does a frame too big for it (it fills the small buffer). Every frame arrives whole, in order.
 */
#define MID 5000u
#define BURST 200u
static void test_mid_frames_alone_are_lent_in_small_buffers(void **state)
{
    (void)state;
    enum { N = 2 + BURST + 2 + 1 + 2 };
    static size_t sizes[N];
    size_t k = 0;
    sizes[k++] = MID;
    sizes[k++] = MID;
    for (size_t i = 0; i < BURST; i++)
        sizes[k++] = 600;
    sizes[k++] = MID;
    sizes[k++] = MID;
    sizes[k++] = 20000;
    sizes[k++] = MID;
    sizes[k++] = MID;
    assert_int_equal(k, N);

    int sv[2];
    make_roomy_socketpair(sv, 1 << 20);
    sink sa, sb;
    sink_init(&sa);
    sink_init(&sb);
    sb.free_blocks = true;
    sb.pattern_sizes = sizes;
    sb.pattern_count = N;
    sb.gate_at = 3; /* the burst's first frame holds the reader while the rest is written */
    channel *a = open_channel(sv[0], &sa);
    channel *b = open_channel(sv[1], &sb);
    assert_int_equal(channel_start(a), 0);
    assert_int_equal(channel_start(b), 0);

    assert_false(alone_offered(a, &sb, 0, MID)); /* the default buffer: copied */
    assert_true(alone_offered(a, &sb, 1, MID));  /* a small buffer: on offer */

    write_pattern_frame(a, 2, 600);
    pthread_mutex_lock(&sb.mu);
    while (!sb.gate_reached)
        pthread_cond_wait(&sb.cond, &sb.mu);
    pthread_mutex_unlock(&sb.mu);
    for (size_t i = 3; i < 2 + BURST; i++)
        write_pattern_frame(a, i, 600);
    pthread_mutex_lock(&sb.mu);
    sb.gate_open = true;
    pthread_cond_broadcast(&sb.cond);
    pthread_mutex_unlock(&sb.mu);
    assert_true(sink_wait(&sb, 2 + BURST, false));

    size_t i = 2 + BURST;
    assert_false(alone_offered(a, &sb, i, MID)); /* the burst switched back */
    assert_true(alone_offered(a, &sb, i + 1, MID));
    /* Too big for the small buffer, which it fills: back to the default, where it is copied. */
    assert_false(alone_offered(a, &sb, i + 2, 20000));
    assert_false(alone_offered(a, &sb, i + 3, MID));
    assert_true(alone_offered(a, &sb, i + 4, MID));

    flush_io();
    assert_int_equal(sink_frames(&sb), N);
    assert_int_equal(sb.order_bad, 0);
    assert_int_equal(sa.errors + sb.errors, 0);
    close_channel(a);
    close_channel(b);
    sink_destroy(&sa);
    sink_destroy(&sb);
}

/*
 * A receiver may free a buffer it took before on_frame returns (a message
 * dropped on arrival, or read and destroyed at once): the frames that came
 * behind it in the same read still arrive whole. A buffer beyond the
 * per-thread cache goes straight back to the heap, so reading it after the
 * call would fault or be reported by ASan.
 */
static void test_kept_buffer_freed_inside_on_frame(void **state)
{
    (void)state;
    static const size_t sizes[] = {400000, 64, 300000, 24, 90000, 8, 16};
    const size_t n = sizeof(sizes) / sizeof(sizes[0]);
    sink sb;
    sink_init(&sb);
    sb.free_blocks = true;
    sb.pattern_sizes = sizes;
    sb.pattern_count = n;
    deliver_pattern(&sb, sizes, n);
    assert_int_equal(sb.order_bad, 0);
    assert_true(sb.offered >= 2);
    sink_destroy(&sb);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_round_trip_in_order_from_several_threads),
        T(test_write_before_start_is_delivered),
        T(test_fds_are_passed),
        T(test_253_fds_spread_over_two_sendmsg),
        T(test_over_the_limits_is_refused_and_fds_closed),
        T(test_eintr_eagain_and_short_transfers_keep_order),
        T(test_one_buffer_to_a_closed_peer_is_epipe_not_sigpipe),
        T(test_write_error_stops_writes_but_reads_drain_to_eof),
        T(test_bad_peer_garbage),
        T(test_bad_peer_lying_fd_count),
        T(test_bad_peer_truncated_frame_then_eof),
        T(test_bad_peer_oversized_frame),
        T(test_bad_peer_too_many_fds_in_header),
        T(test_bad_peer_too_many_fds_in_one_sendmsg),
        T(test_bad_peer_fds_with_no_frame),
        T(test_bad_peer_fds_ahead_of_frame),
        T(test_bad_peer_nonzero_padding),
        T(test_eof_is_not_a_protocol_error),
        T(test_shutdown_from_another_thread_while_frames_arrive),
        T(test_shutdown_from_inside_on_frame),
        T(test_large_frames_can_be_kept),
        T(test_kept_buffer_freed_inside_on_frame),
        T(test_mid_frames_alone_are_lent_in_small_buffers),
        T(test_concurrent_shutdowns),
        T(test_busy_channel_does_not_starve_another),
        T(test_large_frames_round_trip),
        T(test_large_frames_keep_the_grown_buffer),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
