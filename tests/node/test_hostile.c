/*
 * A hostile invitee: the parent sends it an invitation as usual, but the
 * child speaks raw bytes on the socket instead of using cmojo (garbage, lying
 * or truncated or oversized frame headers, fds beyond what frames claim,
 * an EVENT carrying a port it does not own, an EVENT before the handshake,
 * node messages of an unknown type or one only the broker may send).
 *
 * Pinned, for each: the parent survives and disconnects the child (the child
 * sees EOF; a child that half-closed sees it too); the error handler given to
 * MojoSendInvitation gets DISCONNECTED and a non-empty reason; the pipe
 * attached to the invitation becomes peer-closed; every fd the child sent is
 * closed by the parent (the child holds the write ends of those pipes and
 * sees EPIPE, and the parent's fd count returns to where it was); and a
 * well-behaved child of the same parent keeps working before, during and
 * after.
 */
#include "cmojo_test.h"
#include "mp.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "channel/frame.h"
#include "cmojo_limits.h"
#include "core/core.h"
#include "core/dispatcher.h"
#include "mojo/public/c/system/core.h"
#include "mojo/public/c/system/invitation.h"
#include "node/node_wire.h"
#include "ports/event.h"

#define OK MOJO_RESULT_OK
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
/* The hostile child's raw socket work.                                     */

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

/* A frame header as frame.h describes it; the values may be lies. */
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
        char buf[CMSG_SPACE(sizeof(int) * 16)];
        struct cmsghdr align;
    } control;
    const uint8_t *p = buf;

    CHECK(num_fds <= 16);
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

/* Reads exactly len bytes within the deadline; false on EOF, error or timeout. */
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

/* Waits for the parent to close the connection: reads (and drops) until EOF. */
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

/* Sends ACCEPT with a made-up node name, as a real invitee would first. */
static void send_accept(int s, const ports_name *me)
{
    uint8_t frame[CHANNEL_FRAME_HEADER_SIZE + NODE_NAME_WIRE_SIZE];

    frame_header(frame, sizeof(frame), NODE_MSG_ACCEPT, 0);
    put64(frame + CHANNEL_FRAME_HEADER_SIZE, me->v1);
    put64(frame + CHANNEL_FRAME_HEADER_SIZE + 8, me->v2);
    send_raw(s, frame, sizeof(frame), NULL, 0);
}

/*
 * A well-formed EVENT: a user message to a made-up port, carrying one port
 * whose descriptor says another node (not us) sent it, and one fd, with a
 * well-formed envelope for both. Only the ports layer can object.
 */
static void send_foreign_port_event(int s, const int *fds, size_t num_fds)
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
    size_t env_size = 8 + 2 * 8;
    size_t payload = ev_size + env_size;
    CHECK(CHANNEL_FRAME_HEADER_SIZE + payload + 8 <= sizeof(frame));
    frame_header(frame, (uint32_t)(CHANNEL_FRAME_HEADER_SIZE + payload), NODE_MSG_EVENT,
                 (uint16_t)num_fds);
    ports_event_serialize(ev, frame + CHANNEL_FRAME_HEADER_SIZE);
    ports_event_destroy(ev);
    uint8_t *env = frame + CHANNEL_FRAME_HEADER_SIZE + ev_size;
    put32(env, 0); /* num_bytes */
    put32(env + 4, 2);
    put32(env + 8, CORE_DISPATCHER_MESSAGE_PIPE);
    put32(env + 12, 0);
    put32(env + 16, CORE_DISPATCHER_PLATFORM_HANDLE);
    put32(env + 20, 0);
    size_t wire = (CHANNEL_FRAME_HEADER_SIZE + payload + 7u) & ~(size_t)7u;
    send_raw(s, frame, wire, fds, num_fds);
}

/*
 * Scenario `arg`; fds it sends are read ends of pipes whose write ends it
 * keeps, so it can tell when the parent has closed them (EPIPE).
 * Exit codes: 0 ok; 2 no INVITE; 3 the parent never disconnected us; 4 the
 * parent kept an fd we sent; 5 unknown scenario.
 */
static int role_hostile(const int *fds, size_t n, const char *arg)
{
    int s = fds[0];
    int read_ends[4], write_ends[4];
    size_t num_sent = 0;
    uint8_t buf[256];
    const ports_name me = {0x0123456789abcdefull, 0xfedcba9876543210ull};

    (void)n;
    signal(SIGPIPE, SIG_IGN);
    if (read_frame(s) != NODE_MSG_INVITE)
        return 2;
    memset(buf, 0, sizeof(buf));

    if (strcmp(arg, "garbage") == 0) {
        /* A plausible size, so the rest of the header is looked at too. */
        memset(buf, 0xa5, 64);
        put32(buf, 64);
        send_raw(s, buf, 64, NULL, 0);
    } else if (strcmp(arg, "event_before_handshake") == 0) {
        frame_header(buf, CHANNEL_FRAME_HEADER_SIZE + PORTS_EVENT_HEADER_SIZE, NODE_MSG_EVENT, 0);
        send_raw(s, buf, CHANNEL_FRAME_HEADER_SIZE + PORTS_EVENT_HEADER_SIZE, NULL, 0);
    } else if (strcmp(arg, "lying_size_then_eof") == 0) {
        frame_header(buf, CHANNEL_FRAME_HEADER_SIZE + 4096, NODE_MSG_ACCEPT, 0);
        send_raw(s, buf, CHANNEL_FRAME_HEADER_SIZE + 100, NULL, 0);
        CHECK(shutdown(s, SHUT_WR) == 0);
    } else if (strcmp(arg, "truncated_header_then_eof") == 0) {
        frame_header(buf, CHANNEL_FRAME_HEADER_SIZE + NODE_NAME_WIRE_SIZE, NODE_MSG_ACCEPT, 0);
        send_raw(s, buf, 10, NULL, 0);
        CHECK(shutdown(s, SHUT_WR) == 0);
    } else if (strcmp(arg, "oversized") == 0) {
        /* The header alone must be enough to refuse it: the body never comes. */
        frame_header(buf, CMOJO_MAX_FRAME_SIZE + 8, NODE_MSG_EVENT, 0);
        send_raw(s, buf, 64, NULL, 0);
    } else if (strcmp(arg, "too_many_fds") == 0) {
        num_sent = 4;
        frame_header(buf, CHANNEL_FRAME_HEADER_SIZE + NODE_NAME_WIRE_SIZE, NODE_MSG_ACCEPT,
                     CMOJO_MAX_FDS_PER_FRAME + 1);
    } else if (strcmp(arg, "fds_without_frame") == 0) {
        /* A complete ACCEPT that claims no fds, with fds riding on its bytes. */
        num_sent = 2;
        frame_header(buf, CHANNEL_FRAME_HEADER_SIZE + NODE_NAME_WIRE_SIZE, NODE_MSG_ACCEPT, 0);
        put64(buf + CHANNEL_FRAME_HEADER_SIZE, me.v1);
        put64(buf + CHANNEL_FRAME_HEADER_SIZE + 8, me.v2);
    } else if (strcmp(arg, "event_foreign_port") == 0) {
        num_sent = 1;
    } else if (strcmp(arg, "unknown_type") == 0) {
        send_accept(s, &me);
        frame_header(buf, CHANNEL_FRAME_HEADER_SIZE + 8, 200, 0);
        send_raw(s, buf, CHANNEL_FRAME_HEADER_SIZE + 8, NULL, 0);
    } else if (strcmp(arg, "introduce_from_client") == 0) {
        /* Only the broker introduces; this one even hands over a socket. */
        num_sent = 1;
    } else {
        return 5;
    }

    for (size_t i = 0; i < num_sent; i++) {
        int p[2];
        CHECK(pipe2(p, O_CLOEXEC) == 0);
        read_ends[i] = p[0];
        write_ends[i] = p[1];
    }
    if (strcmp(arg, "too_many_fds") == 0 || strcmp(arg, "fds_without_frame") == 0) {
        send_raw(s, buf, CHANNEL_FRAME_HEADER_SIZE + NODE_NAME_WIRE_SIZE, read_ends, num_sent);
    } else if (strcmp(arg, "event_foreign_port") == 0) {
        send_accept(s, &me);
        send_foreign_port_event(s, read_ends, num_sent);
    } else if (strcmp(arg, "introduce_from_client") == 0) {
        send_accept(s, &me);
        frame_header(buf, CHANNEL_FRAME_HEADER_SIZE + NODE_INTRODUCE_SIZE, NODE_MSG_INTRODUCE, 1);
        put64(buf + CHANNEL_FRAME_HEADER_SIZE, 0x42);
        put64(buf + CHANNEL_FRAME_HEADER_SIZE + 8, 0x43);
        put32(buf + CHANNEL_FRAME_HEADER_SIZE + 16, 1); /* ok */
        send_raw(s, buf, CHANNEL_FRAME_HEADER_SIZE + NODE_INTRODUCE_SIZE, read_ends, 1);
    }
    /* The parent holds the only read ends now. */
    for (size_t i = 0; i < num_sent; i++)
        CHECK(close(read_ends[i]) == 0);

    if (!wait_eof(s)) {
        fprintf(stderr, "hostile child (%s): the parent never closed the connection\n", arg);
        return 3;
    }
    for (size_t i = 0; i < num_sent; i++) {
        int64_t deadline = cmojo_mp_now_ms() + RAW_TIMEOUT_MS;
        while (write(write_ends[i], "x", 1) == 1) {
            if (cmojo_mp_now_ms() >= deadline) {
                fprintf(stderr, "hostile child (%s): the parent kept fd %zu we sent\n", arg, i);
                return 4;
            }
            cmojo_mp_sleep_ms(2);
        }
        CHECK(errno == EPIPE);
        CHECK(close(write_ends[i]) == 0);
    }
    CHECK(close(s) == 0);
    CHECK(cmojo_mp_only_fds("hostile child", NULL, 0));
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

static void run_hostile(const char *scenario)
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
    fprintf(stderr, "hostile %s: %d report(s), last: \"%s\"\n", scenario, log.reports, log.last);
    assert_int_equal(log.empty_messages, 0);
    assert_true(strlen(log.last) > 0);

    assert_true(cmojo_mp_wait_exit(&bad, CMOJO_MP_CHILD_TIMEOUT_MS, 0));
    cmojo_mp_expect_peer_closed(attached);
    assert_int_equal(MojoClose(attached), OK);
    /* The channel and everything the child sent are closed. */
    assert_true(wait_fd_count(fds_before, CMOJO_MP_SETTLE_MS));
    assert_true(cmojo_mp_wait_counts("parent", 1, 1, CMOJO_MP_SETTLE_MS));

    ping(good_ctl, 4);
    assert_int_equal(cmojo_mp_log(0).reports, 0);
    cmojo_mp_send(good_ctl, TAG_DONE, 0, 0, NULL, 0);
    assert_true(cmojo_mp_wait_exit(&good, CMOJO_MP_CHILD_TIMEOUT_MS, 0));
    cmojo_mp_expect_peer_closed(good_ctl);
    assert_int_equal(MojoClose(good_ctl), OK);
}

static void test_garbage(void **state)
{
    (void)state;
    run_hostile("garbage");
}

static void test_lying_size_then_eof(void **state)
{
    (void)state;
    run_hostile("lying_size_then_eof");
}

static void test_truncated_header_then_eof(void **state)
{
    (void)state;
    run_hostile("truncated_header_then_eof");
}

static void test_oversized_frame(void **state)
{
    (void)state;
    run_hostile("oversized");
}

static void test_too_many_fds(void **state)
{
    (void)state;
    run_hostile("too_many_fds");
}

static void test_fds_without_frame(void **state)
{
    (void)state;
    run_hostile("fds_without_frame");
}

static void test_event_carrying_a_port_it_does_not_own(void **state)
{
    (void)state;
    run_hostile("event_foreign_port");
}

static void test_unknown_message_type(void **state)
{
    (void)state;
    run_hostile("unknown_type");
}

static void test_event_before_the_handshake(void **state)
{
    (void)state;
    run_hostile("event_before_handshake");
}

static void test_introduce_from_a_client(void **state)
{
    (void)state;
    run_hostile("introduce_from_client");
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
        HOSTILE_TEST(test_garbage),
        HOSTILE_TEST(test_lying_size_then_eof),
        HOSTILE_TEST(test_truncated_header_then_eof),
        HOSTILE_TEST(test_oversized_frame),
        HOSTILE_TEST(test_too_many_fds),
        HOSTILE_TEST(test_fds_without_frame),
        HOSTILE_TEST(test_event_carrying_a_port_it_does_not_own),
        HOSTILE_TEST(test_unknown_message_type),
        HOSTILE_TEST(test_event_before_the_handshake),
        HOSTILE_TEST(test_introduce_from_a_client),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
