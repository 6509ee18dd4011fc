/*
 * A scripted broker: the test process invites a cmojo child as its broker
 * would, then speaks raw node messages to it (raw_peer.h), in orders that a
 * real broker produces only when frames on different sockets race. The
 * child's side of each introduction is a socketpair end the test holds, so
 * it can see the child keep a channel, close it, or read from it.
 *
 * Pinned here: a node the broker said is lost (NODE_LOST) and then
 * introduced again, before the old channel to it ended, gets the new
 * channel once the old one has ended -- it is neither refused nor used
 * early; while a second introduction of a node that is not lost is refused
 * (both sides asked at once: the first channel stays); and a client that
 * cuts a channel the broker made tells the broker (PEER_CUT naming that
 * node), but not when the channel merely hung up.
 */
#include "cmojo_test.h"
#include "mp.h"
#include "raw_peer.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "channel/frame.h"
#include "cmojo_wire.h"
#include "node/node_wire.h"

#define CHECK CMOJO_MP_CHECK
#define CHECK_RESULT CMOJO_MP_CHECK_RESULT

/*
 * The child: accepts the invitation on fds[0] (nothing attached), then
 * holds on until fds[1] (a pipe from the test) reaches end of file, and
 * exits as every child does: nothing left, nothing leaked.
 */
static int role_scripted_client(const int *fds, size_t n, const char *arg)
{
    char c;

    (void)n;
    (void)arg;
    cmojo_mp_accept(fds[0], NULL, 0, NULL);
    while (read(fds[1], &c, 1) != 0)
        CHECK(errno == EINTR);
    CHECK(close(fds[1]) == 0);
    return cmojo_mp_child_finish("scripted client", NULL, 0);
}

/* ------------------------------------------------------------------------ */
/* The test's side: a raw broker.                                            */

static const ports_name broker_name = {0xb0b0b0b0b0b0b0b0ull, 1};

static void send_node_msg(int s, node_msg_type type, const uint8_t *payload, size_t len,
                          const int *fds, size_t num_fds)
{
    uint8_t frame[CHANNEL_FRAME_HEADER_SIZE + 64];

    assert_true(len <= 64 && len % CHANNEL_FRAME_ALIGNMENT == 0);
    cmojo_raw_frame_header(frame, (uint32_t)(CHANNEL_FRAME_HEADER_SIZE + len), (uint16_t)type,
                           (uint16_t)num_fds);
    memcpy(frame + CHANNEL_FRAME_HEADER_SIZE, payload, len);
    cmojo_raw_send(s, frame, CHANNEL_FRAME_HEADER_SIZE + len, fds, num_fds);
}

/* INTRODUCE(name) with one end of a new socketpair; returns the end the test keeps. */
static int introduce(int s, const ports_name *name)
{
    int sv[2];
    uint8_t msg[NODE_INTRODUCE_SIZE];

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    send_node_msg(s, NODE_MSG_INTRODUCE, msg, node_wire_write_introduce(msg, name, true), &sv[1],
                  1);
    assert_int_equal(close(sv[1]), 0);
    return sv[0];
}

static void node_lost(int s, const ports_name *name)
{
    uint8_t msg[NODE_NAME_WIRE_SIZE];
    send_node_msg(s, NODE_MSG_NODE_LOST, msg, node_wire_write_name(msg, name), NULL, 0);
}

/* A frame of a type no node sends: whoever reads it cuts us off. */
static void send_garbage(int s)
{
    uint8_t frame[CHANNEL_FRAME_HEADER_SIZE + 8] = {0};
    cmojo_raw_frame_header(frame, sizeof(frame), 200, 0);
    cmojo_raw_send(s, frame, sizeof(frame), NULL, 0);
}

/* The next frame from the child must be PEER_CUT naming `name`. */
static void expect_peer_cut(int s, const ports_name *name)
{
    uint8_t payload[64];
    size_t len;
    uint16_t type = cmojo_raw_read_frame_payload(s, payload, sizeof(payload), &len);
    assert_int_equal(type, NODE_MSG_PEER_CUT);
    assert_int_equal(len, NODE_NAME_WIRE_SIZE);
    ports_name got = wire_load_name(payload);
    assert_true(ports_name_eq(&got, name));
}

/* Whether the child has closed its end of the socket that `s` is the other end of. */
static bool closed_by_child(int s)
{
    struct pollfd pfd = {s, POLLIN, 0};
    char c;
    assert_true(poll(&pfd, 1, 0) >= 0);
    if (!(pfd.revents & (POLLIN | POLLHUP)))
        return false;
    return recv(s, &c, 1, MSG_DONTWAIT | MSG_PEEK) == 0;
}

/*
 * Introduces a throw-away node and makes the child cut it (a frame of an
 * unknown type): its PEER_CUT on the broker channel shows that the child
 * has handled every frame sent to it before.
 */
static void sync_with_child(int s, uint64_t tag)
{
    const ports_name probe = {0x9909909909909900ull, tag};
    int t = introduce(s, &probe);
    send_garbage(t);
    expect_peer_cut(s, &probe);
    assert_true(cmojo_raw_wait_eof(t));
    assert_int_equal(close(t), 0);
}

static void test_reintroduction_after_node_lost_waits_for_the_old_channel(void **state)
{
    const ports_name x = {0x5858585858585858ull, 2};
    int sv[2], ctl[2];
    cmojo_mp_child child;
    uint8_t buf[64];
    size_t len;

    (void)state;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(pipe2(ctl, O_CLOEXEC), 0);
    int give[2] = {sv[1], ctl[0]};
    assert_int_equal(cmojo_mp_spawn("scripted_client", give, 2, NULL, &child), 0);
    assert_int_equal(close(sv[1]), 0);
    assert_int_equal(close(ctl[0]), 0);
    int s = sv[0];

    uint8_t invite[NODE_INVITE_FIXED_SIZE];
    send_node_msg(s, NODE_MSG_INVITE, invite,
                  node_wire_write_invite(invite, &broker_name, &broker_name, 0, NULL, 0), NULL, 0);
    assert_int_equal(cmojo_raw_read_frame_payload(s, buf, sizeof(buf), &len), NODE_MSG_ACCEPT);

    /* X, and X again as if both had asked: the first channel stays, the second is closed. */
    int old = introduce(s, &x);
    int twice = introduce(s, &x);
    sync_with_child(s, 1);
    assert_false(closed_by_child(old));
    assert_true(closed_by_child(twice));
    assert_int_equal(close(twice), 0);

    /*
     * X is lost (it cut the child off), and is introduced again, before the
     * old channel has ended: the child keeps the new one for later.
     */
    node_lost(s, &x);
    int fresh = introduce(s, &x);
    sync_with_child(s, 2);
    assert_false(closed_by_child(old));
    assert_false(closed_by_child(fresh));

    /*
     * The old channel hangs up (no PEER_CUT for that: it was not the
     * child's doing); then the child reads the new one, and cuts it for the
     * garbage on it: the PEER_CUT names X.
     */
    assert_int_equal(close(old), 0);
    send_garbage(fresh);
    expect_peer_cut(s, &x);
    assert_true(cmojo_raw_wait_eof(fresh));
    assert_int_equal(close(fresh), 0);

    /* Nothing more from the child: it closes the broker channel as it exits. */
    assert_int_equal(close(ctl[1]), 0);
    assert_true(cmojo_mp_wait_exit(&child, CMOJO_MP_CHILD_TIMEOUT_MS, 0));
    ssize_t r;
    do {
        r = read(s, buf, sizeof(buf));
    } while (r < 0 && errno == EINTR);
    assert_int_equal(r, 0);
    assert_int_equal(close(s), 0);
}

static const cmojo_mp_role roles[] = {
    {"scripted_client", role_scripted_client},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    cmojo_mp_child_dispatch(argc, argv, roles);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_reintroduction_after_node_lost_waits_for_the_old_channel, cmojo_mp_setup,
            cmojo_mp_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
