/*
 * Hostile shared buffers: an invitee that speaks raw bytes on its socket
 * (as in test_hostile.c) sends an EVENT whose message envelope carries a
 * shared buffer that lies: an fd smaller than the size its state claims, an
 * fd that is no memfd, a memfd not sealed against shrinking (which the child
 * then truncates, so a mapping of it would fault with SIGBUS), a READ_ONLY
 * claim for memory anyone can write, and malformed states.
 *
 * Pinned, for each: the parent survives (no SIGBUS, no crash), refuses the
 * buffer before mapping it and disconnects the child; the error handler gets
 * DISCONNECTED and a reason naming the shared buffer; every fd the child sent
 * is closed (the parent's fd count returns to where it was, the child sees
 * EPIPE on its pipe and no memfd of its own left in the parent's fd table);
 * a well-behaved child of the same parent keeps working throughout. A
 * control case sends a valid buffer in the same event, which gets past the
 * buffer checks and is refused later, by the ports layer, for the port it
 * carries.
 */
#include "cmojo_test.h"
#include "mp.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "channel/frame.h"
#include "core/core.h"
#include "core/dispatcher.h"
#include "core/shared_buffer.h"
#include "mojo/public/c/system/core.h"
#include "node/node_wire.h"
#include "ports/event.h"

#define CHECK CMOJO_MP_CHECK
#define CHECK_RESULT CMOJO_MP_CHECK_RESULT

#define RAW_TIMEOUT_MS 30000
#define PINGS 20

enum { TAG_PING = 1, TAG_DONE };

static const char *const ctl_name[] = {"ctl"};

/* ------------------------------------------------------------------------ */
/* The well-behaved child: echoes pings until told to stop.                */

static int role_good(const int *fds, size_t n, const char *arg)
{
    MojoHandle ctl;

    (void)n;
    (void)arg;
    cmojo_mp_accept(fds[0], ctl_name, 1, &ctl);
    for (;;) {
        cmojo_mp_msg m = cmojo_mp_recv(ctl, NULL, NULL);
        if (m.tag == TAG_DONE)
            break;
        CHECK_RESULT(m.tag, TAG_PING);
        cmojo_mp_send(ctl, TAG_PING, m.seq + 1, m.value, NULL, 0);
    }
    return cmojo_mp_child_finish("good child", &ctl, 1);
}

static void ping(MojoHandle ctl, uint64_t round)
{
    for (uint32_t i = 0; i < PINGS; i++) {
        cmojo_mp_send(ctl, TAG_PING, i, round, NULL, 0);
        cmojo_mp_msg m = cmojo_mp_recv_tag(ctl, TAG_PING, NULL, NULL);
        CHECK_RESULT(m.seq, i + 1);
        CHECK_RESULT(m.value, round);
    }
}

/* ------------------------------------------------------------------------ */
/* Raw socket work (the frame layout of channel/frame.h).                   */

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)v);
    put16(p + 2, (uint16_t)(v >> 16));
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void frame_header(uint8_t *out, uint32_t total_size, uint16_t type, uint16_t num_fds)
{
    memset(out, 0, CHANNEL_FRAME_HEADER_SIZE);
    put32(out, total_size);
    put16(out + 4, CHANNEL_FRAME_HEADER_SIZE);
    put16(out + 6, type);
    put16(out + 8, num_fds);
}

/* Sends all of buf[0..len) with fds (if any) on the first sendmsg. */
static void send_raw(int s, const void *buf, size_t len, const int *fds, size_t num_fds)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * 4)];
        struct cmsghdr align;
    } control;
    const uint8_t *p = buf;

    CHECK(num_fds <= 4);
    while (len > 0) {
        struct iovec iov = {(void *)p, len};
        struct msghdr mh = {0};
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        if (num_fds > 0) {
            memset(&control, 0, sizeof(control));
            mh.msg_control = control.buf;
            mh.msg_controllen = CMSG_SPACE(sizeof(int) * num_fds);
            struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int) * num_fds);
            memcpy(CMSG_DATA(c), fds, sizeof(int) * num_fds);
        }
        ssize_t r = sendmsg(s, &mh, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR)
            continue;
        CHECK(r > 0);
        p += r;
        len -= (size_t)r;
        num_fds = 0;
    }
}

static bool read_exact(int s, void *buf, size_t len, int64_t deadline)
{
    uint8_t *p = buf;

    while (len > 0) {
        struct pollfd pfd = {s, POLLIN, 0};
        int64_t left = deadline - cmojo_mp_now_ms();
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            return false;
        ssize_t r = read(s, p, len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        p += r;
        len -= (size_t)r;
    }
    return true;
}

/* Reads one whole frame (the parent's INVITE), returns its type. */
static uint16_t read_frame(int s)
{
    uint8_t hdr[CHANNEL_FRAME_HEADER_SIZE];
    static uint8_t body[64 * 1024];
    int64_t deadline = cmojo_mp_now_ms() + RAW_TIMEOUT_MS;

    CHECK(read_exact(s, hdr, sizeof(hdr), deadline));
    uint32_t total = get32(hdr);
    CHECK(total >= CHANNEL_FRAME_HEADER_SIZE && total < sizeof(body));
    size_t rest = ((total + 7u) & ~7u) - CHANNEL_FRAME_HEADER_SIZE;
    CHECK(read_exact(s, body, rest, deadline));
    return (uint16_t)(hdr[6] | hdr[7] << 8);
}

/* Reads (and drops) until the parent closes the connection. */
static bool wait_eof(int s)
{
    int64_t deadline = cmojo_mp_now_ms() + RAW_TIMEOUT_MS;
    char buf[4096];

    for (;;) {
        struct pollfd pfd = {s, POLLIN, 0};
        int64_t left = deadline - cmojo_mp_now_ms();
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            return false;
        ssize_t r = read(s, buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0 || (r < 0 && errno == ECONNRESET))
            return true;
        if (r < 0)
            return false;
    }
}

static void send_accept(int s, const ports_name *me)
{
    uint8_t frame[CHANNEL_FRAME_HEADER_SIZE + NODE_NAME_WIRE_SIZE];

    frame_header(frame, sizeof(frame), NODE_MSG_ACCEPT, 0);
    put64(frame + CHANNEL_FRAME_HEADER_SIZE, me->v1);
    put64(frame + CHANNEL_FRAME_HEADER_SIZE + 8, me->v2);
    send_raw(s, frame, sizeof(frame), NULL, 0);
}

/*
 * An EVENT: a user message to a made-up port carrying a pipe whose port
 * descriptor says another node sent it (the ports layer refuses that) and a
 * shared buffer with `state` (state_size bytes) and `fd`. The envelope is
 * checked, buffer included, before the ports layer sees the event.
 */
static void send_buffer_event(int s, const uint8_t *state, uint32_t state_size, int fd)
{
    static uint8_t frame[4096];
    const ports_name other = {0x1111111111111111ull, 0x2222222222222222ull};

    ports_event *ev = ports_user_message_new(1, NULL);
    CHECK(ev != NULL);
    ev->port_name = (ports_name){0x3333, 0x4444};
    ev->from_port = (ports_name){0x5555, 0x6666};
    ev->control_sequence_num = 1;
    ev->u.user.sequence_num = 1;
    ev->u.user.ports[0] = (ports_name){0x7777, 0x8888};
    ev->u.user.descriptors[0] = (ports_port_descriptor){
        .peer_node = {0x9999, 0xaaaa},
        .peer_port = {0xbbbb, 0xcccc},
        .referring_node = other,
        .referring_port = {0xdddd, 0xeeee},
        .next_sequence_num_to_send = 1,
        .next_sequence_num_to_receive = 1,
        .last_sequence_num_to_receive = PORTS_INVALID_SEQUENCE_NUM,
    };
    size_t ev_size = ports_event_serialized_size(ev);
    size_t padded_state = (state_size + 7u) & ~7u;
    size_t env_size = 8 + 2 * 8 + padded_state;
    size_t payload = ev_size + env_size;
    CHECK(CHANNEL_FRAME_HEADER_SIZE + payload + 8 <= sizeof(frame));
    memset(frame, 0, sizeof(frame));
    frame_header(frame, (uint32_t)(CHANNEL_FRAME_HEADER_SIZE + payload), NODE_MSG_EVENT, 1);
    ports_event_serialize(ev, frame + CHANNEL_FRAME_HEADER_SIZE);
    ports_event_destroy(ev);
    uint8_t *env = frame + CHANNEL_FRAME_HEADER_SIZE + ev_size;
    put32(env, 0); /* num_bytes */
    put32(env + 4, 2);
    put32(env + 8, CORE_DISPATCHER_MESSAGE_PIPE);
    put32(env + 12, 0);
    put32(env + 16, CORE_DISPATCHER_SHARED_BUFFER);
    put32(env + 20, state_size);
    memcpy(env + 24, state, state_size);
    size_t wire = (CHANNEL_FRAME_HEADER_SIZE + payload + 7u) & ~(size_t)7u;
    send_raw(s, frame, wire, &fd, 1);
}

/* Whether the parent holds an fd to a memfd named `name` (its fd table, via /proc). */
static bool parent_holds(const char *name)
{
    char dir_path[64], target[512];
    snprintf(dir_path, sizeof(dir_path), "/proc/%d/fd", (int)getppid());
    DIR *dir = opendir(dir_path);
    CHECK(dir != NULL);
    bool found = false;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        ssize_t n = readlinkat(dirfd(dir), e->d_name, target, sizeof(target) - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        if (strstr(target, name))
            found = true;
    }
    closedir(dir);
    return found;
}

static int memfd_named(const char *name, off_t size, int seals)
{
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, size) == 0);
    if (seals)
        CHECK(fcntl(fd, F_ADD_SEALS, seals) == 0);
    return fd;
}

/*
 * Scenario `arg`. Exit codes: 0 ok; 2 no INVITE; 3 the parent never
 * disconnected us; 4 the parent kept the fd we sent; 5 unknown scenario.
 */
static int role_hostile(const int *fds, size_t n, const char *arg)
{
    int s = fds[0];
    const ports_name me = {0x0123456789abcdefull, 0xfedcba9876543210ull};
    char name[64];
    uint8_t state[64];
    uint32_t state_size = CORE_SHARED_BUFFER_STATE_SIZE;
    core_shared_buffer_state st = {
        .num_bytes = 4096,
        .access_mode = MOJO_PLATFORM_SHARED_MEMORY_REGION_ACCESS_MODE_WRITABLE,
        .guid = {0x42, 0x43},
    };
    int fd = -1, pipe_write = -1;
    bool truncate_after = false;

    (void)n;
    signal(SIGPIPE, SIG_IGN);
    snprintf(name, sizeof(name), "cmojo-hostile-%d", (int)getpid());
    if (read_frame(s) != NODE_MSG_INVITE)
        return 2;

    if (strcmp(arg, "valid") == 0) {
        fd = memfd_named(name, 4096, F_SEAL_SHRINK | F_SEAL_GROW);
    } else if (strcmp(arg, "smaller") == 0) {
        fd = memfd_named(name, 4096, F_SEAL_SHRINK | F_SEAL_GROW);
        st.num_bytes = 1024 * 1024;
    } else if (strcmp(arg, "not_memfd") == 0) {
        int p[2];
        CHECK(pipe2(p, O_CLOEXEC) == 0);
        fd = p[0];
        pipe_write = p[1];
    } else if (strcmp(arg, "no_shrink_seal") == 0) {
        fd = memfd_named(name, 4096, F_SEAL_GROW);
        truncate_after = true; /* what a mapping of it would fault on */
    } else if (strcmp(arg, "read_only_unsealed") == 0) {
        fd = memfd_named(name, 4096, F_SEAL_SHRINK | F_SEAL_GROW);
        st.access_mode = MOJO_PLATFORM_SHARED_MEMORY_REGION_ACCESS_MODE_READ_ONLY;
    } else if (strcmp(arg, "garbage_state") == 0 || strcmp(arg, "bad_padding") == 0 ||
               strcmp(arg, "short_state") == 0 || strcmp(arg, "unknown_mode") == 0 ||
               strcmp(arg, "zero_size") == 0) {
        fd = memfd_named(name, 4096, F_SEAL_SHRINK | F_SEAL_GROW);
    } else {
        return 5;
    }
    core_shared_buffer_state_write(state, &st);
    if (strcmp(arg, "garbage_state") == 0) {
        memset(state, 0xa5, sizeof(state));
        put32(state + 12, 0); /* so the size is what gets it refused */
    } else if (strcmp(arg, "zero_size") == 0) {
        put64(state, 0);
    }
    if (strcmp(arg, "bad_padding") == 0)
        state[13] = 1;
    else if (strcmp(arg, "short_state") == 0)
        state_size = 24;
    else if (strcmp(arg, "unknown_mode") == 0)
        put32(state + 8, 7);

    send_accept(s, &me);
    send_buffer_event(s, state, state_size, fd);
    if (truncate_after)
        CHECK(ftruncate(fd, 0) == 0);
    CHECK(close(fd) == 0); /* the parent holds the only copy now */

    if (!wait_eof(s)) {
        fprintf(stderr, "hostile buffer child (%s): the parent never disconnected us\n", arg);
        return 3;
    }
    int64_t deadline = cmojo_mp_now_ms() + RAW_TIMEOUT_MS;
    if (pipe_write >= 0) {
        while (write(pipe_write, "x", 1) == 1) {
            if (cmojo_mp_now_ms() >= deadline)
                return 4;
            cmojo_mp_sleep_ms(2);
        }
        CHECK(errno == EPIPE);
        CHECK(close(pipe_write) == 0);
    } else {
        while (parent_holds(name)) {
            if (cmojo_mp_now_ms() >= deadline) {
                fprintf(stderr, "hostile buffer child (%s): the parent kept our memfd\n", arg);
                return 4;
            }
            cmojo_mp_sleep_ms(2);
        }
    }
    CHECK(close(s) == 0);
    CHECK(cmojo_mp_only_fds("hostile buffer child", NULL, 0));
    return 0;
}

/* ------------------------------------------------------------------------ */

static bool wait_fd_count(int expected, int timeout_ms)
{
    int64_t deadline = cmojo_mp_now_ms() + timeout_ms;
    int now;

    while ((now = cmojo_test_count_open_fds()) != expected) {
        if (cmojo_mp_now_ms() >= deadline) {
            fprintf(stderr, "parent holds %d fds, expected %d\n", now, expected);
            return false;
        }
        cmojo_mp_sleep_ms(2);
    }
    return true;
}

/* Runs `scenario`; the error handler's reason must contain `reason`. */
static void run_hostile(const char *scenario, const char *reason)
{
    MojoHandle good_ctl, attached;
    cmojo_mp_child good, bad;

    cmojo_mp_reset_logs();
    cmojo_mp_invite("good", NULL, ctl_name, 1, &good_ctl, &good, 0);
    ping(good_ctl, 1);
    int fds_before = cmojo_test_count_open_fds();

    cmojo_mp_invite("hostile", scenario, ctl_name, 1, &attached, &bad, 1);
    ping(good_ctl, 2);
    assert_true(cmojo_mp_wait_disconnected(1, CMOJO_MP_IO_TIMEOUT_MS));
    ping(good_ctl, 3);
    cmojo_mp_log_state log = cmojo_mp_log(1);
    fprintf(stderr, "hostile buffer %s: %d report(s), last: \"%s\"\n", scenario, log.reports,
            log.last);
    assert_int_equal(log.empty_messages, 0);
    assert_non_null(strstr(log.last, reason));

    assert_true(cmojo_mp_wait_exit(&bad, CMOJO_MP_CHILD_TIMEOUT_MS, 0));
    cmojo_mp_expect_peer_closed(attached);
    assert_int_equal(MojoClose(attached), MOJO_RESULT_OK);
    assert_true(wait_fd_count(fds_before, CMOJO_MP_SETTLE_MS));
    assert_true(cmojo_mp_wait_counts("parent", 1, 1, CMOJO_MP_SETTLE_MS));
    assert_int_equal(core_shared_buffer_debug_mapping_count(), 0);

    ping(good_ctl, 4);
    assert_int_equal(cmojo_mp_log(0).reports, 0);
    cmojo_mp_send(good_ctl, TAG_DONE, 0, 0, NULL, 0);
    assert_true(cmojo_mp_wait_exit(&good, CMOJO_MP_CHILD_TIMEOUT_MS, 0));
    cmojo_mp_expect_peer_closed(good_ctl);
    assert_int_equal(MojoClose(good_ctl), MOJO_RESULT_OK);
}

static void test_a_valid_buffer_passes_the_checks(void **state)
{
    (void)state;
    run_hostile("valid", "ports protocol violation");
}

static void test_an_fd_smaller_than_claimed(void **state)
{
    (void)state;
    run_hostile("smaller", "shared buffer memfd smaller than its claimed size");
}

static void test_an_fd_that_is_not_a_memfd(void **state)
{
    (void)state;
    run_hostile("not_memfd", "shared buffer fd is not a sealable memfd");
}

static void test_a_memfd_that_can_shrink(void **state)
{
    (void)state;
    run_hostile("no_shrink_seal", "shared buffer memfd not sealed against shrinking");
}

static void test_a_read_only_claim_without_the_seal(void **state)
{
    (void)state;
    run_hostile("read_only_unsealed", "read-only shared buffer memfd not sealed against writing");
}

static void test_a_garbage_state(void **state)
{
    (void)state;
    run_hostile("garbage_state", "shared buffer larger than CMOJO_MAX_SHARED_BUFFER_SIZE");
}

static void test_nonzero_padding(void **state)
{
    (void)state;
    run_hostile("bad_padding", "shared buffer state with nonzero reserved bits");
}

static void test_a_short_state(void **state)
{
    (void)state;
    run_hostile("short_state", "shared buffer state of the wrong size");
}

static void test_a_zero_size(void **state)
{
    (void)state;
    run_hostile("zero_size", "shared buffer of 0 bytes");
}

static void test_an_unknown_mode(void **state)
{
    (void)state;
    run_hostile("unknown_mode", "shared buffer with an unknown access mode");
}

static const cmojo_mp_role roles[] = {
    {"good", role_good},
    {"hostile", role_hostile},
    {NULL, NULL},
};

#define HOSTILE_TEST(fn)                                                                           \
    cmocka_unit_test_setup_teardown(fn, cmojo_mp_core_setup, cmojo_mp_core_teardown)

int main(int argc, char **argv)
{
    cmojo_mp_child_dispatch(argc, argv, roles);

    const struct CMUnitTest tests[] = {
        HOSTILE_TEST(test_a_valid_buffer_passes_the_checks),
        HOSTILE_TEST(test_an_fd_smaller_than_claimed),
        HOSTILE_TEST(test_an_fd_that_is_not_a_memfd),
        HOSTILE_TEST(test_a_memfd_that_can_shrink),
        HOSTILE_TEST(test_a_read_only_claim_without_the_seal),
        HOSTILE_TEST(test_a_garbage_state),
        HOSTILE_TEST(test_nonzero_padding),
        HOSTILE_TEST(test_a_short_state),
        HOSTILE_TEST(test_a_zero_size),
        HOSTILE_TEST(test_an_unknown_mode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
