/*
 * A hostile invitee: the parent sends it an invitation as usual, but the
 * child speaks raw bytes on the socket instead of using cmojo (garbage, lying
 * or truncated or oversized frame headers, fds beyond what frames claim,
 * an EVENT carrying a port it does not own, an EVENT before the handshake,
 * node messages of an unknown type or one only the broker may send, a
 * PEER_CUT naming itself).
 *
 * Pinned, for each: the parent survives and disconnects the child (the child
 * sees EOF; a child that half-closed sees it too); the error handler given to
 * MojoSendInvitation gets DISCONNECTED and a non-empty reason; the pipe
 * attached to the invitation becomes peer-closed; every fd the child sent is
 * closed by the parent (the child holds the write ends of those pipes and
 * sees EPIPE, and the parent's fd count returns to where it was); and a
 * well-behaved child of the same parent keeps working before, during and
 * after. A PEER_CUT naming a node the parent does not know is no offence
 * (that node may just have gone): the child is cut off for what it sends
 * next.
 */
#include "cmojo_test.h"
#include "mp.h"
#include "raw_peer.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "channel/frame.h"
#include "cmojo_limits.h"
#include "cmojo_wire.h"
#include "core/core.h"
#include "core/dispatcher.h"
#include "mojo/public/c/system/core.h"
#include "mojo/public/c/system/invitation.h"
#include "node/node_wire.h"
#include "ports/event.h"

#define OK MOJO_RESULT_OK
#define CHECK CMOJO_MP_CHECK
#define CHECK_RESULT CMOJO_MP_CHECK_RESULT

static const char *const ctl_name[] = {"ctl"};

/* ------------------------------------------------------------------------ */
/* The hostile child's raw socket work (raw_peer.h).                        */

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
    if (cmojo_raw_read_frame(s) != NODE_MSG_INVITE)
        return 2;
    memset(buf, 0, sizeof(buf));

    if (strcmp(arg, "garbage") == 0) {
        /* A plausible size, so the rest of the header is looked at too. */
        memset(buf, 0xa5, 64);
        wire_store_u32(buf, 64);
        cmojo_raw_send(s, buf, 64, NULL, 0);
    } else if (strcmp(arg, "event_before_handshake") == 0) {
        cmojo_raw_frame_header(buf, CHANNEL_FRAME_HEADER_SIZE + PORTS_EVENT_HEADER_SIZE,
                               NODE_MSG_EVENT, 0);
        cmojo_raw_send(s, buf, CHANNEL_FRAME_HEADER_SIZE + PORTS_EVENT_HEADER_SIZE, NULL, 0);
    } else if (strcmp(arg, "lying_size_then_eof") == 0) {
        cmojo_raw_frame_header(buf, CHANNEL_FRAME_HEADER_SIZE + 4096, NODE_MSG_ACCEPT, 0);
        cmojo_raw_send(s, buf, CHANNEL_FRAME_HEADER_SIZE + 100, NULL, 0);
        CHECK(shutdown(s, SHUT_WR) == 0);
    } else if (strcmp(arg, "truncated_header_then_eof") == 0) {
        cmojo_raw_frame_header(buf, CHANNEL_FRAME_HEADER_SIZE + NODE_NAME_WIRE_SIZE,
                               NODE_MSG_ACCEPT, 0);
        cmojo_raw_send(s, buf, 10, NULL, 0);
        CHECK(shutdown(s, SHUT_WR) == 0);
    } else if (strcmp(arg, "oversized") == 0) {
        /* The header alone must be enough to refuse it: the body never comes. */
        cmojo_raw_frame_header(buf, CMOJO_MAX_FRAME_SIZE + 8, NODE_MSG_EVENT, 0);
        cmojo_raw_send(s, buf, 64, NULL, 0);
    } else if (strcmp(arg, "too_many_fds") == 0) {
        num_sent = 4;
        cmojo_raw_frame_header(buf, CHANNEL_FRAME_HEADER_SIZE + NODE_NAME_WIRE_SIZE,
                               NODE_MSG_ACCEPT, CMOJO_MAX_FDS_PER_FRAME + 1);
    } else if (strcmp(arg, "fds_without_frame") == 0) {
        /* A complete ACCEPT that claims no fds, with fds riding on its bytes. */
        num_sent = 2;
        cmojo_raw_frame_header(buf, CHANNEL_FRAME_HEADER_SIZE + NODE_NAME_WIRE_SIZE,
                               NODE_MSG_ACCEPT, 0);
        wire_store_u64(buf + CHANNEL_FRAME_HEADER_SIZE, me.v1);
        wire_store_u64(buf + CHANNEL_FRAME_HEADER_SIZE + 8, me.v2);
    } else if (strcmp(arg, "event_foreign_port") == 0) {
        num_sent = 1;
    } else if (strcmp(arg, "unknown_type") == 0) {
        cmojo_raw_send_accept(s, &me);
        cmojo_raw_frame_header(buf, CHANNEL_FRAME_HEADER_SIZE + 8, 200, 0);
        cmojo_raw_send(s, buf, CHANNEL_FRAME_HEADER_SIZE + 8, NULL, 0);
    } else if (strcmp(arg, "introduce_from_client") == 0) {
        /* Only the broker introduces; this one even hands over a socket. */
        num_sent = 1;
    } else if (strcmp(arg, "peer_cut_naming_itself") == 0 ||
               strcmp(arg, "peer_cut_of_a_stranger") == 0) {
        const ports_name stranger = {0x5757575757575757ull, 0x5858585858585858ull};
        bool itself = strcmp(arg, "peer_cut_naming_itself") == 0;
        cmojo_raw_send_accept(s, &me);
        cmojo_raw_frame_header(buf, CHANNEL_FRAME_HEADER_SIZE + NODE_NAME_WIRE_SIZE,
                               NODE_MSG_PEER_CUT, 0);
        node_wire_write_name(buf + CHANNEL_FRAME_HEADER_SIZE, itself ? &me : &stranger);
        cmojo_raw_send(s, buf, CHANNEL_FRAME_HEADER_SIZE + NODE_NAME_WIRE_SIZE, NULL, 0);
        if (!itself) {
            cmojo_raw_frame_header(buf, CHANNEL_FRAME_HEADER_SIZE + 8, 200, 0);
            cmojo_raw_send(s, buf, CHANNEL_FRAME_HEADER_SIZE + 8, NULL, 0);
        }
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
        cmojo_raw_send(s, buf, CHANNEL_FRAME_HEADER_SIZE + NODE_NAME_WIRE_SIZE, read_ends,
                       num_sent);
    } else if (strcmp(arg, "event_foreign_port") == 0) {
        cmojo_raw_send_accept(s, &me);
        cmojo_raw_send_foreign_port_event(s, CORE_DISPATCHER_PLATFORM_HANDLE, NULL, 0, read_ends,
                                          num_sent);
    } else if (strcmp(arg, "introduce_from_client") == 0) {
        cmojo_raw_send_accept(s, &me);
        cmojo_raw_frame_header(buf, CHANNEL_FRAME_HEADER_SIZE + NODE_INTRODUCE_SIZE,
                               NODE_MSG_INTRODUCE, 1);
        wire_store_u64(buf + CHANNEL_FRAME_HEADER_SIZE, 0x42);
        wire_store_u64(buf + CHANNEL_FRAME_HEADER_SIZE + 8, 0x43);
        wire_store_u32(buf + CHANNEL_FRAME_HEADER_SIZE + 16, 1); /* ok */
        cmojo_raw_send(s, buf, CHANNEL_FRAME_HEADER_SIZE + NODE_INTRODUCE_SIZE, read_ends, 1);
    }
    /* The parent holds the only read ends now. */
    for (size_t i = 0; i < num_sent; i++)
        CHECK(close(read_ends[i]) == 0);

    if (!cmojo_raw_wait_eof(s)) {
        fprintf(stderr, "hostile child (%s): the parent never closed the connection\n", arg);
        return 3;
    }
    for (size_t i = 0; i < num_sent; i++) {
        int64_t deadline = cmojo_mp_now_ms() + CMOJO_RAW_TIMEOUT_MS;
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

/* reason: what the error handler must be told last (NULL: anything not empty). */
static void run_hostile_saying(const char *scenario, const char *reason)
{
    MojoHandle attached;
    cmojo_mp_witness good;
    cmojo_mp_child bad;

    cmojo_mp_reset_logs();
    cmojo_mp_witness_start(&good, 0);
    int fds_before = cmojo_test_count_open_fds();

    cmojo_mp_invite("hostile", scenario, ctl_name, 1, &attached, &bad, 1);
    cmojo_mp_witness_ping(&good, 2);
    assert_true(cmojo_mp_wait_disconnected(1, CMOJO_MP_IO_TIMEOUT_MS));
    cmojo_mp_witness_ping(&good, 3);
    cmojo_mp_log_state log = cmojo_mp_log(1);
    fprintf(stderr, "hostile %s: %d report(s), last: \"%s\"\n", scenario, log.reports, log.last);
    assert_int_equal(log.empty_messages, 0);
    assert_true(strlen(log.last) > 0);
    if (reason)
        assert_string_equal(log.last, reason);

    assert_true(cmojo_mp_wait_exit(&bad, CMOJO_MP_CHILD_TIMEOUT_MS, 0));
    cmojo_mp_expect_peer_closed(attached);
    assert_int_equal(MojoClose(attached), OK);
    /* The channel and everything the child sent are closed. */
    assert_true(cmojo_mp_wait_fd_count(fds_before, CMOJO_MP_SETTLE_MS));
    assert_true(cmojo_mp_wait_counts("parent", 1, 1, CMOJO_MP_SETTLE_MS));

    cmojo_mp_witness_finish(&good, 4);
}

static void run_hostile(const char *scenario)
{
    run_hostile_saying(scenario, NULL);
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

static void test_peer_cut_naming_itself(void **state)
{
    (void)state;
    run_hostile_saying("peer_cut_naming_itself", "PEER_CUT naming its sender or the broker");
}

static void test_peer_cut_of_a_stranger_is_ignored(void **state)
{
    (void)state;
    run_hostile_saying("peer_cut_of_a_stranger", "unknown node message type");
}

static const cmojo_mp_role roles[] = {
    {CMOJO_MP_WITNESS_ROLE, cmojo_mp_role_witness},
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
        HOSTILE_TEST(test_peer_cut_naming_itself),
        HOSTILE_TEST(test_peer_cut_of_a_stranger_is_ignored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
