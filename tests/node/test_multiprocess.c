/*
 * cmojo across real processes: the test process is the broker; children are
 * this binary re-run in a role (tests/common/mp.h), each connected by an
 * invitation over a socketpair it inherits.
 *
 * Pinned here: invitations with named pipes; messages both ways, in order,
 * exactly once; PEER_REMOTE; PEER_CLOSED only after everything a dead or
 * departed peer sent; pipes between two invitees (broker introductions) with
 * thousands of messages each way while a pipe end moves A -> broker -> B;
 * an end passed around a ring of four processes; wrapped fds over three hops
 * (same open file, close-on-exec); the 253-fd limit; kill -9 of a child
 * (error handler, PEER_CLOSED, survivors unaffected); MojoWait inside a trap
 * handler for a message from another process; messages up to 1 MiB
 * forwarded back as they arrived, byte for byte; a message over the limit
 * refused for another process, and one that must follow its peer there
 * cutting the connection -- the broker's to a child, a child's to its
 * broker, a child's to another the broker introduced -- with the pipes over
 * it closing on both sides; and after the traffic settles every process
 * holds exactly the ports of its open pipes.
 *
 * Every wait has a deadline; every child is reaped and its exit status
 * checked; children check their own handles, ports and fds before exiting.
 */
#include "cmojo_test.h"
#include "mp.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cmojo/wait.h"
#include "cmojo_limits.h"
#include "core/core.h"
#include "mojo/public/c/system/core.h"
#include "mojo/public/c/system/invitation.h"
#include "mojo/public/c/system/platform_handle.h"

#define OK MOJO_RESULT_OK
#define READABLE MOJO_HANDLE_SIGNAL_READABLE
#define PEER_CLOSED MOJO_HANDLE_SIGNAL_PEER_CLOSED
#define PEER_REMOTE MOJO_HANDLE_SIGNAL_PEER_REMOTE

#define IO_TIMEOUT_MS CMOJO_MP_IO_TIMEOUT_MS
#define CHILD_TIMEOUT_MS CMOJO_MP_CHILD_TIMEOUT_MS
#define SETTLE_MS CMOJO_MP_SETTLE_MS

#define CHECK CMOJO_MP_CHECK
#define CHECK_RESULT CMOJO_MP_CHECK_RESULT

enum {
    TAG_DATA = 1, /* seq: sequence number; value: sender id */
    TAG_HANDLES,  /* handles attached; value: a count the receiver needs */
    TAG_DONE,     /* the broker says: finish up */
    TAG_REPORT,   /* value: a number the sender measured */
    TAG_READY,    /* the sender got as far as it says in value */
};

/*
 * Sends DATA messages seq [first, first + count) on `out` while reading DATA
 * messages from `in` (which must arrive as seq in_first, in_first + 1, ...
 * from sender `in_sender`) until `in_count` have been read. Interleaved, so
 * both directions are in flight at once.
 */
static void exchange(MojoHandle out, uint32_t first, uint32_t count, uint64_t sender, MojoHandle in,
                     uint32_t in_first, uint32_t in_count, uint64_t in_sender)
{
    uint32_t sent = 0, got = 0;
    int64_t deadline = cmojo_mp_now_ms() + IO_TIMEOUT_MS;
    cmojo_mp_msg m;

    while (sent < count || got < in_count) {
        if (sent < count) {
            cmojo_mp_send(out, TAG_DATA, first + sent, sender, NULL, 0);
            sent++;
        }
        while (got < in_count) {
            MojoResult r = cmojo_mp_try_recv(in, &m, NULL, NULL);
            if (r == MOJO_RESULT_SHOULD_WAIT) {
                if (sent < count)
                    break;
                CHECK(cmojo_mp_now_ms() < deadline);
                MojoWait(in, READABLE, 100 * 1000, NULL);
                continue;
            }
            CHECK_RESULT(r, OK);
            CHECK_RESULT(m.tag, TAG_DATA);
            CHECK_RESULT(m.value, in_sender);
            CHECK_RESULT(m.seq, in_first + got);
            got++;
        }
    }
}

static const char *const ctl_name[] = {"ctl"};

/* ------------------------------------------------------------------------ */
/* One child, two named pipes.                                              */

#define PAIR_ROUNDS 200
#define PAIR_FINAL 50

static int role_pair(const int *fds, size_t n, const char *arg)
{
    static const char *const names[] = {"alpha", "beta"};
    MojoHandle p[2];

    (void)n;
    (void)arg;
    cmojo_mp_accept(fds[0], names, 2, p);
    cmojo_mp_expect_peer_remote(p[0]);
    cmojo_mp_expect_peer_remote(p[1]);
    /* alpha: the parent speaks first, we echo each message on beta, +1000. */
    for (uint32_t i = 0; i < PAIR_ROUNDS; i++) {
        cmojo_mp_msg m = cmojo_mp_recv_tag(p[0], TAG_DATA, NULL, NULL);
        CHECK_RESULT(m.seq, i);
        cmojo_mp_send(p[1], TAG_DATA, m.seq + 1000, 2, NULL, 0);
    }
    cmojo_mp_recv_tag(p[0], TAG_DONE, NULL, NULL);
    /* Exactly our two pipes: the invitation's own ports are gone. */
    CHECK(cmojo_mp_wait_counts("pair child", 2, 2, SETTLE_MS));
    /* Last words on both pipes, then exit without closing anything. */
    for (uint32_t i = 0; i < PAIR_FINAL; i++) {
        cmojo_mp_send(p[0], TAG_DATA, i, 2, NULL, 0);
        cmojo_mp_send(p[1], TAG_DATA, 5000 + i, 2, NULL, 0);
    }
    CHECK_RESULT(MojoShutdown(NULL), OK);
    CHECK(cmojo_mp_only_fds("pair child", NULL, 0));
    return 0;
}

static void test_one_child_two_named_pipes(void **state)
{
    static const char *const names[] = {"alpha", "beta"};
    MojoHandle p[2];
    cmojo_mp_child child;
    cmojo_mp_msg m;

    (void)state;
    cmojo_mp_invite("pair", NULL, names, 2, p, &child, 0);
    cmojo_mp_expect_peer_remote(p[0]);
    cmojo_mp_expect_peer_remote(p[1]);
    for (uint32_t i = 0; i < PAIR_ROUNDS; i++) {
        cmojo_mp_send(p[0], TAG_DATA, i, 1, NULL, 0);
        m = cmojo_mp_recv_tag(p[1], TAG_DATA, NULL, NULL);
        CHECK_RESULT(m.seq, i + 1000);
        CHECK_RESULT(m.value, 2);
    }
    assert_true(cmojo_mp_wait_counts("broker", 2, 2, SETTLE_MS));
    cmojo_mp_send(p[0], TAG_DONE, 0, 0, NULL, 0);

    /* The child is gone before we read its last words: they are still there. */
    assert_true(cmojo_mp_wait_exit(&child, CHILD_TIMEOUT_MS, 0));
    for (uint32_t i = 0; i < PAIR_FINAL; i++) {
        m = cmojo_mp_recv_tag(p[0], TAG_DATA, NULL, NULL);
        CHECK_RESULT(m.seq, i);
        m = cmojo_mp_recv_tag(p[1], TAG_DATA, NULL, NULL);
        CHECK_RESULT(m.seq, 5000 + i);
    }
    cmojo_mp_expect_peer_closed(p[0]);
    cmojo_mp_expect_peer_closed(p[1]);
    /* A pipe whose peer is gone is not remote any more... but is still ours. */
    assert_true(cmojo_mp_wait_counts("broker", 2, 2, SETTLE_MS));
    cmojo_mp_close_all(p, 2);
    assert_true(cmojo_mp_wait_disconnected(0, IO_TIMEOUT_MS));
}

/*
 * MojoWait inside a trap handler, for a message from another process: the
 * handler runs on this thread inside MojoWriteMessage, so whatever IO this
 * thread ran itself would queue the waiter's wake-up behind that very call.
 * The wait must end anyway (it hung once: no deadline, so a regression shows
 * as a test timeout).
 */
typedef struct nested_wait {
    MojoHandle alpha, beta;
    MojoResult waited;
    uint64_t echoed;
    int calls;
} nested_wait;

static void nested_wait_handler(const struct MojoTrapEvent *event)
{
    nested_wait *nw = (nested_wait *)(uintptr_t)event->trigger_context;
    if (event->result != OK)
        return; /* the trap's removal */
    nw->calls++;
    cmojo_mp_send(nw->alpha, TAG_DATA, 0, 1, NULL, 0);
    nw->waited = MojoWait(nw->beta, READABLE, MOJO_DEADLINE_INDEFINITE, NULL);
    cmojo_mp_msg m;
    if (cmojo_mp_try_recv(nw->beta, &m, NULL, NULL) == OK)
        nw->echoed = m.seq;
}

static void test_wait_inside_trap_handler_for_another_process(void **state)
{
    static const char *const names[] = {"alpha", "beta"};
    MojoHandle p[2], local[2], trap;
    cmojo_mp_child child;

    (void)state;
    cmojo_mp_invite("pair", NULL, names, 2, p, &child, 0);
    nested_wait nw = {.alpha = p[0], .beta = p[1], .waited = MOJO_RESULT_UNKNOWN, .echoed = 0};
    assert_int_equal(MojoCreateMessagePipe(NULL, &local[0], &local[1]), OK);
    assert_int_equal(MojoCreateTrap(nested_wait_handler, NULL, &trap), OK);
    assert_int_equal(MojoAddTrigger(trap, local[1], READABLE,
                                    MOJO_TRIGGER_CONDITION_SIGNALS_SATISFIED, (uintptr_t)&nw, NULL),
                     OK);
    assert_int_equal(MojoArmTrap(trap, NULL, NULL, NULL), OK);
    /* The handler runs on this thread, inside this call: it asks and waits. */
    cmojo_mp_send(local[0], TAG_DATA, 0, 0, NULL, 0);
    assert_int_equal(nw.calls, 1);
    assert_int_equal(nw.waited, OK);
    assert_int_equal(nw.echoed, 1000);

    for (uint32_t i = 1; i < PAIR_ROUNDS; i++) {
        cmojo_mp_send(p[0], TAG_DATA, i, 1, NULL, 0);
        cmojo_mp_msg m = cmojo_mp_recv_tag(p[1], TAG_DATA, NULL, NULL);
        CHECK_RESULT(m.seq, i + 1000);
    }
    cmojo_mp_send(p[0], TAG_DONE, 0, 0, NULL, 0);
    assert_true(cmojo_mp_wait_exit(&child, CHILD_TIMEOUT_MS, 0));
    for (uint32_t i = 0; i < PAIR_FINAL; i++) {
        cmojo_mp_recv_tag(p[0], TAG_DATA, NULL, NULL);
        cmojo_mp_recv_tag(p[1], TAG_DATA, NULL, NULL);
    }
    assert_int_equal(MojoClose(trap), OK);
    cmojo_mp_close_all(local, 2);
    cmojo_mp_close_all(p, 2);
    assert_true(cmojo_mp_wait_disconnected(0, IO_TIMEOUT_MS));
}

/* ------------------------------------------------------------------------ */
/* Two children: a broker-made pipe between them, and an end moving A -> B. */

#define BULK 5000
#define MOVE_A_WRITES 2500
#define MOVE_A_READS_AT_LEAST 1000
#define ID_BROKER 10
#define ID_A 11
#define ID_B 12
#define ID_MOVER 13 /* whoever holds the moving end */

static int role_bulk_a(const int *fds, size_t n, const char *arg)
{
    MojoHandle ctl, h[2];
    uint32_t nh = 2;
    cmojo_mp_msg m;

    (void)n;
    (void)arg;
    cmojo_mp_accept(fds[0], ctl_name, 1, &ctl);
    cmojo_mp_recv_tag(ctl, TAG_HANDLES, h, &nh);
    CHECK_RESULT(nh, 2);
    MojoHandle x = h[0], mover = h[1];

    /* Our half of the moving end's traffic goes first, so it is in flight while it moves. */
    for (uint32_t i = 0; i < MOVE_A_WRITES; i++)
        cmojo_mp_send(mover, TAG_DATA, i, ID_MOVER, NULL, 0);
    exchange(x, 0, BULK, ID_A, x, 0, BULK, ID_B);

    /*
     * Read part of what the broker streams to the moving end, then pass it on
     * with the rest queued or still arriving.
     */
    for (uint32_t i = 0; i < MOVE_A_READS_AT_LEAST; i++) {
        m = cmojo_mp_recv_tag(mover, TAG_DATA, NULL, NULL);
        CHECK_RESULT(m.value, ID_BROKER);
        CHECK_RESULT(m.seq, i);
    }
    cmojo_mp_send(ctl, TAG_HANDLES, 0, MOVE_A_READS_AT_LEAST, &mover, 1);

    cmojo_mp_recv_tag(ctl, TAG_DONE, NULL, NULL);
    MojoHandle left[] = {ctl, x};
    return cmojo_mp_child_finish("bulk child A", left, 2);
}

static int role_bulk_b(const int *fds, size_t n, const char *arg)
{
    MojoHandle ctl, y, mover;
    uint32_t nh = 1;

    (void)n;
    (void)arg;
    cmojo_mp_accept(fds[0], ctl_name, 1, &ctl);
    cmojo_mp_recv_tag(ctl, TAG_HANDLES, &y, &nh);
    CHECK_RESULT(nh, 1);
    exchange(y, 0, BULK, ID_B, y, 0, BULK, ID_A);

    cmojo_mp_msg m = cmojo_mp_recv_tag(ctl, TAG_HANDLES, &mover, &nh);
    CHECK_RESULT(nh, 1);
    uint32_t a_read = (uint32_t)m.value;
    CHECK_RESULT(a_read, MOVE_A_READS_AT_LEAST);
    /* Carry on where A stopped, both ways. */
    exchange(mover, MOVE_A_WRITES, BULK - MOVE_A_WRITES, ID_MOVER, mover, a_read, BULK - a_read,
             ID_BROKER);
    CHECK(cmojo_mp_wait_counts("bulk child B", 3, 3, SETTLE_MS));
    cmojo_mp_send(ctl, TAG_READY, 0, 0, NULL, 0);

    cmojo_mp_recv_tag(ctl, TAG_DONE, NULL, NULL);
    MojoHandle left[] = {ctl, y, mover};
    return cmojo_mp_child_finish("bulk child B", left, 3);
}

static void test_two_children_bulk_and_moving_end(void **state)
{
    MojoHandle ctl_a, ctl_b, x, y, mover, fixed;
    cmojo_mp_child a, b;
    uint32_t nh = 1;

    (void)state;
    cmojo_mp_invite("bulk_a", NULL, ctl_name, 1, &ctl_a, &a, 0);
    cmojo_mp_invite("bulk_b", NULL, ctl_name, 1, &ctl_b, &b, 1);
    cmojo_test_make_pipe(&x, &y);
    cmojo_test_make_pipe(&mover, &fixed);
    MojoHandle to_a[] = {x, mover};
    cmojo_mp_send(ctl_a, TAG_HANDLES, 0, 0, to_a, 2);
    cmojo_mp_send(ctl_b, TAG_HANDLES, 0, 0, &y, 1);

    /* Stream to the moving end from before it leaves A until B has it. */
    exchange(fixed, 0, BULK, ID_BROKER, fixed, 0, 0, 0);
    cmojo_mp_msg m = cmojo_mp_recv_tag(ctl_a, TAG_HANDLES, &mover, &nh);
    CHECK_RESULT(nh, 1);
    cmojo_mp_send(ctl_b, TAG_HANDLES, 0, m.value, &mover, 1);
    /* A wrote 0..2499 on the moving end, B 2500..4999: one ordered stream. */
    for (uint32_t i = 0; i < BULK; i++) {
        m = cmojo_mp_recv_tag(fixed, TAG_DATA, NULL, NULL);
        CHECK_RESULT(m.value, ID_MOVER);
        CHECK_RESULT(m.seq, i);
    }
    cmojo_mp_recv_tag(ctl_b, TAG_READY, NULL, NULL);
    assert_true(cmojo_mp_wait_counts("broker", 3, 3, SETTLE_MS));

    cmojo_mp_send(ctl_a, TAG_DONE, 0, 0, NULL, 0);
    cmojo_mp_send(ctl_b, TAG_DONE, 0, 0, NULL, 0);
    assert_true(cmojo_mp_wait_exit(&a, CHILD_TIMEOUT_MS, 0));
    assert_true(cmojo_mp_wait_exit(&b, CHILD_TIMEOUT_MS, 0));
    cmojo_mp_expect_peer_closed(fixed);
    cmojo_mp_expect_peer_closed(ctl_a);
    cmojo_mp_expect_peer_closed(ctl_b);
    MojoHandle left[] = {ctl_a, ctl_b, fixed};
    cmojo_mp_close_all(left, 3);
}

/* ------------------------------------------------------------------------ */
/* A ring of four processes: broker -> C1 -> C2 -> C3 -> broker.            */

/*
 * Ring member i (1..3): gets its links from the broker on ctl (C1: to C2;
 * C2: from C1 and to C3; C3: from C2), then waits for the travelling item on
 * its "from" link (C1: ctl) and passes it on (C3: back on ctl).
 * arg "end": the item is a pipe end; read one message from it (seq == i),
 * write one (seq == 10 + i), pass it on.
 * arg "fd": the item is a wrapped memfd; the last hop (C3) unwraps it and
 * checks it is close-on-exec and the same open file, reports st_dev/st_ino.
 */
static int ring_member(int index, const int *fds, const char *arg)
{
    MojoHandle ctl, links[2] = {MOJO_HANDLE_INVALID, MOJO_HANDLE_INVALID};
    uint32_t nh = 2;
    char who[32];
    bool fd_mode = strcmp(arg, "fd") == 0;

    snprintf(who, sizeof(who), "ring child %d", index);
    cmojo_mp_accept(fds[0], ctl_name, 1, &ctl);
    cmojo_mp_recv_tag(ctl, TAG_HANDLES, links, &nh);
    CHECK_RESULT(nh, index == 2 ? 2u : 1u);
    MojoHandle from = index == 1 ? ctl : links[0];
    MojoHandle to = index == 1 ? links[0] : index == 2 ? links[1] : ctl;

    MojoHandle item;
    nh = 1;
    cmojo_mp_msg m = cmojo_mp_recv_tag(from, TAG_HANDLES, &item, &nh);
    CHECK_RESULT(nh, 1);
    CHECK_RESULT(m.seq, (uint32_t)index);
    if (!fd_mode) {
        m = cmojo_mp_recv_tag(item, TAG_DATA, NULL, NULL);
        CHECK_RESULT(m.seq, (uint32_t)index);
        cmojo_mp_send(item, TAG_DATA, 10 + (uint32_t)index, (uint64_t)index, NULL, 0);
        cmojo_mp_send(to, TAG_HANDLES, (uint32_t)index + 1, 0, &item, 1);
    } else if (index < 3) {
        cmojo_mp_send(to, TAG_HANDLES, (uint32_t)index + 1, 0, &item, 1);
    } else {
        struct MojoPlatformHandle ph = {sizeof(ph), 0, 0};
        struct stat st;
        char buf[8] = {0};

        CHECK_RESULT(MojoUnwrapPlatformHandle(item, NULL, &ph), OK);
        CHECK_RESULT(ph.type, MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR);
        int fd = (int)ph.value;
        CHECK(fcntl(fd, F_GETFD) == FD_CLOEXEC);
        CHECK(fstat(fd, &st) == 0);
        /* The broker wrote "hello"; we append through our fd and move the offset. */
        CHECK(pread(fd, buf, 5, 0) == 5);
        CHECK(memcmp(buf, "hello", 5) == 0);
        CHECK(pwrite(fd, "world", 5, 5) == 5);
        CHECK(lseek(fd, 3, SEEK_SET) == 3);
        CHECK(close(fd) == 0);
        cmojo_mp_send(to, TAG_REPORT, 0, (uint64_t)st.st_dev, NULL, 0);
        cmojo_mp_send(to, TAG_REPORT, 1, (uint64_t)st.st_ino, NULL, 0);
    }
    /* Once the item has moved on, only our links and ctl remain here. */
    size_t nlinks = index == 2 ? 2 : 1;
    CHECK(cmojo_mp_wait_counts(who, 1 + nlinks, 1 + nlinks, SETTLE_MS));
    cmojo_mp_send(ctl, TAG_READY, 0, (uint64_t)index, NULL, 0);

    cmojo_mp_recv_tag(ctl, TAG_DONE, NULL, NULL);
    MojoHandle left[] = {ctl, links[0], links[1]};
    return cmojo_mp_child_finish(who, left, 1 + nlinks);
}

static int role_ring1(const int *fds, size_t n, const char *arg)
{
    (void)n;
    return ring_member(1, fds, arg);
}

static int role_ring2(const int *fds, size_t n, const char *arg)
{
    (void)n;
    return ring_member(2, fds, arg);
}

static int role_ring3(const int *fds, size_t n, const char *arg)
{
    (void)n;
    return ring_member(3, fds, arg);
}

typedef struct ring {
    cmojo_mp_child child[3];
    MojoHandle ctl[3];
} ring;

static void ring_start(ring *r, const char *mode)
{
    static const char *const roles[] = {"ring1", "ring2", "ring3"};
    MojoHandle l12a, l12b, l23a, l23b;

    for (int i = 0; i < 3; i++)
        cmojo_mp_invite(roles[i], mode, ctl_name, 1, &r->ctl[i], &r->child[i], i);
    cmojo_test_make_pipe(&l12a, &l12b);
    cmojo_test_make_pipe(&l23a, &l23b);
    cmojo_mp_send(r->ctl[0], TAG_HANDLES, 0, 0, &l12a, 1);
    MojoHandle to2[] = {l12b, l23a};
    cmojo_mp_send(r->ctl[1], TAG_HANDLES, 0, 0, to2, 2);
    cmojo_mp_send(r->ctl[2], TAG_HANDLES, 0, 0, &l23b, 1);
}

static void ring_finish(ring *r)
{
    for (int i = 0; i < 3; i++) {
        cmojo_mp_msg m = cmojo_mp_recv_tag(r->ctl[i], TAG_READY, NULL, NULL);
        CHECK_RESULT(m.value, (uint64_t)i + 1);
    }
    for (int i = 0; i < 3; i++)
        cmojo_mp_send(r->ctl[i], TAG_DONE, 0, 0, NULL, 0);
    for (int i = 0; i < 3; i++)
        assert_true(cmojo_mp_wait_exit(&r->child[i], CHILD_TIMEOUT_MS, 0));
    for (int i = 0; i < 3; i++)
        cmojo_mp_expect_peer_closed(r->ctl[i]);
    cmojo_mp_close_all(r->ctl, 3);
}

static void test_end_travels_a_ring_of_four_processes(void **state)
{
    ring r;
    MojoHandle traveller, home;
    uint32_t nh = 1;

    (void)state;
    ring_start(&r, "end");
    cmojo_test_make_pipe(&traveller, &home);
    /* One message for each member to read as the end passes through. */
    for (uint32_t i = 1; i <= 3; i++)
        cmojo_mp_send(home, TAG_DATA, i, ID_BROKER, NULL, 0);
    cmojo_mp_send(r.ctl[0], TAG_HANDLES, 1, 0, &traveller, 1);
    cmojo_mp_msg m = cmojo_mp_recv_tag(r.ctl[2], TAG_HANDLES, &traveller, &nh);
    CHECK_RESULT(nh, 1);
    CHECK_RESULT(m.seq, 4);
    /* Each member's message arrived at home, in ring order. */
    for (uint32_t i = 1; i <= 3; i++) {
        m = cmojo_mp_recv_tag(home, TAG_DATA, NULL, NULL);
        CHECK_RESULT(m.seq, 10 + i);
        CHECK_RESULT(m.value, i);
    }
    /* Back home and still a working pipe, now local at both ends. */
    cmojo_mp_send(home, TAG_DATA, 77, ID_BROKER, NULL, 0);
    m = cmojo_mp_recv_tag(traveller, TAG_DATA, NULL, NULL);
    CHECK_RESULT(m.seq, 77);
    cmojo_mp_send(traveller, TAG_DATA, 78, ID_BROKER, NULL, 0);
    m = cmojo_mp_recv_tag(home, TAG_DATA, NULL, NULL);
    CHECK_RESULT(m.seq, 78);
    /* ctl x3 + both ends of the traveller: every proxy on the ring is gone. */
    assert_true(cmojo_mp_wait_counts("broker", 5, 5, SETTLE_MS));
    /*
     * The peer becomes local once the last proxy on the ring (in another
     * process) has removed itself, which the broker's own count does not
     * show: poll for it.
     */
    struct MojoHandleSignalsState st;
    for (int waited = 0;; waited += 10) {
        assert_int_equal(MojoQueryHandleSignalsState(home, &st), OK);
        if (!(st.satisfied_signals & PEER_REMOTE) || waited >= SETTLE_MS)
            break;
        cmojo_mp_sleep_ms(10);
    }
    assert_false(st.satisfied_signals & PEER_REMOTE);
    ring_finish(&r);
    cmojo_mp_close_all((MojoHandle[]){traveller, home}, 2);
}

static void test_wrapped_fd_travels_three_hops(void **state)
{
    ring r;
    MojoHandle wrapped;
    struct stat st;

    (void)state;
    int fd = memfd_create("cmojo-mp-test", MFD_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "hello", 5), 5);
    assert_int_equal(fstat(fd, &st), 0);
    int keep = fcntl(fd, F_DUPFD_CLOEXEC, 0); /* shares the open file (and its offset) */
    assert_true(keep >= 0);
    struct MojoPlatformHandle ph = {sizeof(ph), MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR,
                                    (uint64_t)fd};
    assert_int_equal(MojoWrapPlatformHandle(&ph, NULL, &wrapped), OK);

    ring_start(&r, "fd");
    cmojo_mp_send(r.ctl[0], TAG_HANDLES, 1, 0, &wrapped, 1);
    cmojo_mp_msg m = cmojo_mp_recv_tag(r.ctl[2], TAG_REPORT, NULL, NULL);
    CHECK_RESULT(m.seq, 0);
    CHECK_RESULT(m.value, (uint64_t)st.st_dev);
    m = cmojo_mp_recv_tag(r.ctl[2], TAG_REPORT, NULL, NULL);
    CHECK_RESULT(m.seq, 1);
    CHECK_RESULT(m.value, (uint64_t)st.st_ino);
    /* Same open file: C3's write is visible here and it moved our shared offset. */
    char buf[16] = {0};
    assert_int_equal(pread(keep, buf, sizeof(buf), 0), 10);
    assert_string_equal(buf, "helloworld");
    assert_int_equal(lseek(keep, 0, SEEK_CUR), 3);
    close(keep);
    assert_true(cmojo_mp_wait_counts("broker", 3, 3, SETTLE_MS));
    ring_finish(&r);
}

/* ------------------------------------------------------------------------ */
/* The most fds one message may carry.                                      */

#define MAX_FDS 253

static int role_many_fds(const int *fds, size_t n, const char *arg)
{
    MojoHandle ctl, h[MAX_FDS];
    uint32_t nh = MAX_FDS;

    (void)n;
    (void)arg;
    cmojo_mp_accept(fds[0], ctl_name, 1, &ctl);
    cmojo_mp_msg m = cmojo_mp_recv_tag(ctl, TAG_HANDLES, h, &nh);
    CHECK_RESULT(nh, MAX_FDS);
    CHECK_RESULT(m.value, MAX_FDS);
    for (uint32_t i = 0; i < MAX_FDS; i++) {
        struct MojoPlatformHandle ph = {sizeof(ph), 0, 0};
        uint64_t value = 0;

        CHECK_RESULT(MojoUnwrapPlatformHandle(h[i], NULL, &ph), OK);
        int fd = (int)ph.value;
        CHECK(fcntl(fd, F_GETFD) == FD_CLOEXEC);
        /* Each is an eventfd holding its index + 1: order and identity kept. */
        CHECK(read(fd, &value, sizeof(value)) == (ssize_t)sizeof(value));
        CHECK_RESULT(value, (uint64_t)i + 1);
        CHECK(close(fd) == 0);
    }
    cmojo_mp_send(ctl, TAG_REPORT, 0, MAX_FDS, NULL, 0);
    cmojo_mp_recv_tag(ctl, TAG_DONE, NULL, NULL);
    return cmojo_mp_child_finish("many-fds child", &ctl, 1);
}

static void wrap_eventfds(MojoHandle *out, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        int fd = eventfd(i + 1, EFD_CLOEXEC);
        assert_true(fd >= 0);
        struct MojoPlatformHandle ph = {sizeof(ph), MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR,
                                        (uint64_t)fd};
        assert_int_equal(MojoWrapPlatformHandle(&ph, NULL, &out[i]), OK);
    }
}

static void test_253_fds_in_one_message_and_no_more(void **state)
{
    MojoHandle ctl, h[MAX_FDS + 1];
    cmojo_mp_child child;
    MojoMessageHandle m = MOJO_MESSAGE_HANDLE_INVALID;
    struct MojoAppendMessageDataOptions commit = {sizeof(commit),
                                                  MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE};

    (void)state;
    /* 254 in one append: refused, and the handles stay ours. */
    wrap_eventfds(h, MAX_FDS + 1);
    assert_int_equal(MojoCreateMessage(NULL, &m), OK);
    assert_int_equal(MojoAppendMessageData(m, 16, h, MAX_FDS + 1, &commit, NULL, NULL),
                     MOJO_RESULT_RESOURCE_EXHAUSTED);
    /* 253, then one more in a second append: the second is refused. */
    assert_int_equal(MojoAppendMessageData(m, 16, h, MAX_FDS, NULL, NULL, NULL), OK);
    assert_int_equal(MojoAppendMessageData(m, 0, &h[MAX_FDS], 1, &commit, NULL, NULL),
                     MOJO_RESULT_RESOURCE_EXHAUSTED);
    assert_int_equal(MojoClose(h[MAX_FDS]), OK); /* not attached: still ours */
    assert_int_equal(MojoDestroyMessage(m), OK); /* closes the 253 it holds */
    assert_true(cmojo_mp_wait_counts("broker", 0, 0, SETTLE_MS));

    cmojo_mp_invite("many_fds", NULL, ctl_name, 1, &ctl, &child, 0);
    wrap_eventfds(h, MAX_FDS);
    cmojo_mp_send(ctl, TAG_HANDLES, 0, MAX_FDS, h, MAX_FDS);
    cmojo_mp_msg r = cmojo_mp_recv_tag(ctl, TAG_REPORT, NULL, NULL);
    CHECK_RESULT(r.value, MAX_FDS);
    cmojo_mp_send(ctl, TAG_DONE, 0, 0, NULL, 0);
    assert_true(cmojo_mp_wait_exit(&child, CHILD_TIMEOUT_MS, 0));
    cmojo_mp_expect_peer_closed(ctl);
    assert_int_equal(MojoClose(ctl), OK);
}

/* ------------------------------------------------------------------------ */
/* kill -9 of a child.                                                      */

#define VICTIM_MESSAGES 20
#define SURVIVOR_MESSAGES 1000

/* Sends its last words on ctl, says so on "sync", then waits to be killed. */
static int role_victim(const int *fds, size_t n, const char *arg)
{
    static const char *const names[] = {"ctl", "sync"};
    MojoHandle p[2], x;
    uint32_t nh = 1;

    (void)n;
    (void)arg;
    cmojo_mp_accept(fds[0], names, 2, p);
    cmojo_mp_recv_tag(p[0], TAG_HANDLES, &x, &nh);
    cmojo_mp_send(x, TAG_DATA, 0, ID_A, NULL, 0);
    for (uint32_t i = 0; i < VICTIM_MESSAGES; i++)
        cmojo_mp_send(p[0], TAG_DATA, i, ID_A, NULL, 0);
    cmojo_mp_send(p[1], TAG_READY, 0, 0, NULL, 0);
    for (int i = 0; i < 1200; i++)
        cmojo_mp_sleep_ms(100);
    return 1; /* should have been killed long ago */
}

/*
 * Survivor (arg "b" or "c"): holds a pipe end whose peer is in the victim
 * and one to the other survivor; once the victim is dead it sees the first
 * peer-closed (after the one message sent) and talks to the other survivor.
 */
static int role_survivor(const int *fds, size_t n, const char *arg)
{
    MojoHandle ctl, h[2];
    uint32_t nh = 2;
    bool is_b = strcmp(arg, "b") == 0;

    (void)n;
    cmojo_mp_accept(fds[0], ctl_name, 1, &ctl);
    cmojo_mp_recv_tag(ctl, TAG_HANDLES, h, &nh);
    CHECK_RESULT(nh, is_b ? 2u : 1u);
    MojoHandle peer = h[0];
    /*
     * b says READY only once the victim's message has arrived: until then it
     * may still sit in the victim, waiting for the broker to introduce it to
     * b, and a kill would rightly lose it (the test failed so under load,
     * when the victim died before reading the introduction).
     */
    cmojo_mp_msg first = {0};
    if (is_b)
        first = cmojo_mp_recv_tag(h[1], TAG_DATA, NULL, NULL);
    cmojo_mp_send(ctl, TAG_READY, 0, 0, NULL, 0);
    if (is_b) {
        CHECK_RESULT(first.value, ID_A);
        cmojo_mp_expect_peer_closed(h[1]);
        CHECK_RESULT(MojoClose(h[1]), OK);
    }
    cmojo_mp_recv_tag(ctl, TAG_READY, NULL, NULL); /* the victim is dead */
    uint64_t me = is_b ? ID_B : ID_A + 10, other = is_b ? ID_A + 10 : ID_B;
    exchange(peer, 0, SURVIVOR_MESSAGES, me, peer, 0, SURVIVOR_MESSAGES, other);
    cmojo_mp_send(ctl, TAG_REPORT, 0, SURVIVOR_MESSAGES, NULL, 0);
    cmojo_mp_recv_tag(ctl, TAG_DONE, NULL, NULL);
    MojoHandle left[] = {ctl, peer};
    return cmojo_mp_child_finish(is_b ? "survivor b" : "survivor c", left, 2);
}

static void test_kill_9_child(void **state)
{
    static const char *const victim_names[] = {"ctl", "sync"};
    MojoHandle victim[2], ctl_b, ctl_c, x, y, u, v;
    cmojo_mp_child cv, cb, cc;
    int status = 0;

    (void)state;
    cmojo_mp_invite("victim", NULL, victim_names, 2, victim, &cv, 0);
    cmojo_mp_invite("survivor", "b", ctl_name, 1, &ctl_b, &cb, 1);
    cmojo_mp_invite("survivor", "c", ctl_name, 1, &ctl_c, &cc, 2);
    cmojo_test_make_pipe(&x, &y); /* victim <-> b */
    cmojo_test_make_pipe(&u, &v); /* b <-> c */
    cmojo_mp_send(victim[0], TAG_HANDLES, 0, 0, &x, 1);
    MojoHandle to_b[] = {u, y};
    cmojo_mp_send(ctl_b, TAG_HANDLES, 0, 0, to_b, 2);
    cmojo_mp_send(ctl_c, TAG_HANDLES, 0, 0, &v, 1);
    cmojo_mp_recv_tag(ctl_b, TAG_READY, NULL, NULL);
    cmojo_mp_recv_tag(ctl_c, TAG_READY, NULL, NULL);

    /* The victim's messages on ctl came before its READY on sync (one channel). */
    cmojo_mp_recv_tag(victim[1], TAG_READY, NULL, NULL);
    assert_int_equal(cmojo_mp_kill(&cv, SIGKILL), 0);
    assert_int_equal(cmojo_mp_wait(&cv, CHILD_TIMEOUT_MS, &status), 0);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    for (uint32_t i = 0; i < VICTIM_MESSAGES; i++) {
        cmojo_mp_msg m = cmojo_mp_recv_tag(victim[0], TAG_DATA, NULL, NULL);
        CHECK_RESULT(m.seq, i);
    }
    cmojo_mp_expect_peer_closed(victim[0]);
    cmojo_mp_expect_peer_closed(victim[1]);
    assert_true(cmojo_mp_wait_disconnected(0, IO_TIMEOUT_MS));
    cmojo_mp_log_state victim_log = cmojo_mp_log(0);
    assert_int_equal(victim_log.empty_messages, 0);
    fprintf(stderr, "kill -9: error handler said \"%s\"\n", victim_log.last);

    /* The survivors and the broker carry on. */
    cmojo_mp_send(ctl_b, TAG_READY, 0, 0, NULL, 0);
    cmojo_mp_send(ctl_c, TAG_READY, 0, 0, NULL, 0);
    cmojo_mp_msg m = cmojo_mp_recv_tag(ctl_b, TAG_REPORT, NULL, NULL);
    CHECK_RESULT(m.value, SURVIVOR_MESSAGES);
    m = cmojo_mp_recv_tag(ctl_c, TAG_REPORT, NULL, NULL);
    CHECK_RESULT(m.value, SURVIVOR_MESSAGES);
    for (int i = 1; i <= 2; i++) {
        assert_int_equal(cmojo_mp_log(i).reports, 0);
    }
    cmojo_mp_close_all(victim, 2);
    assert_true(cmojo_mp_wait_counts("broker", 2, 2, SETTLE_MS));
    cmojo_mp_send(ctl_b, TAG_DONE, 0, 0, NULL, 0);
    cmojo_mp_send(ctl_c, TAG_DONE, 0, 0, NULL, 0);
    assert_true(cmojo_mp_wait_exit(&cb, CHILD_TIMEOUT_MS, 0));
    assert_true(cmojo_mp_wait_exit(&cc, CHILD_TIMEOUT_MS, 0));
    cmojo_mp_expect_peer_closed(ctl_b);
    cmojo_mp_expect_peer_closed(ctl_c);
    cmojo_mp_close_all((MojoHandle[]){ctl_b, ctl_c}, 2);
}

/* ------------------------------------------------------------------------ */
/* Large messages: kept in the buffer they arrived in, and forwarded from it. */

/* Sizes around the channel's buffer and its offer threshold; the last (16) is a stop. */
static const uint32_t big_sizes[] = {40000, 70000, 100, 1u << 20, 20000, 65536, 300000, 16};
#define BIG_COUNT (sizeof(big_sizes) / sizeof(big_sizes[0]))

static uint8_t big_byte(size_t i, size_t j)
{
    return (uint8_t)(j * 7 + i * 59 + (j >> 9));
}

/* Reads one message (waiting for it) and returns it with its bytes. */
static MojoMessageHandle read_big(MojoHandle pipe, const uint8_t **data, uint32_t *size)
{
    MojoMessageHandle m;
    void *buf = NULL;
    uint32_t nh = 0;
    CHECK_RESULT(MojoWait(pipe, READABLE, (MojoDeadline)IO_TIMEOUT_MS * 1000, NULL), OK);
    CHECK_RESULT(MojoReadMessage(pipe, NULL, &m), OK);
    CHECK_RESULT(MojoGetMessageData(m, NULL, &buf, size, NULL, &nh), OK);
    CHECK_RESULT(nh, 0);
    CHECK_RESULT((uintptr_t)buf % 8, 0);
    *data = buf;
    return m;
}

/* Sizes of the one-at-a-time phase: around half of the channel's small receive buffer. */
static const uint32_t mid_sizes[] = {4096, 4100, 5000, 6000, 4096, 3000, 6100, 4500, 4096};
#define MID_COUNT (sizeof(mid_sizes) / sizeof(mid_sizes[0]))

/* Writes message i: `size` bytes of big_byte(i, .). */
static void write_big(MojoHandle p, size_t i, uint32_t size)
{
    MojoMessageHandle m;
    void *buf;
    uint32_t cap;
    assert_int_equal(MojoCreateMessage(NULL, &m), OK);
    /*
     * Room beyond the payload, filled with junk: it must not travel, nor
     * show in the frame's padding (the receiver refuses nonzero padding).
     */
    assert_int_equal(MojoReserveMessageCapacity(m, size + 64, &cap), OK);
    assert_int_equal(MojoAppendMessageData(m, size, NULL, 0, NULL, &buf, &cap), OK);
    assert_true(cap >= size + 64);
    memset(buf, 0xa5, cap);
    for (size_t j = 0; j < size; j++)
        ((uint8_t *)buf)[j] = big_byte(i, j);
    assert_int_equal(MojoAppendMessageData(m, 0, NULL, 0,
                                           &(struct MojoAppendMessageDataOptions){
                                               sizeof(struct MojoAppendMessageDataOptions),
                                               MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE},
                                           NULL, NULL),
                     OK);
    assert_int_equal(MojoWriteMessage(p, m, NULL), OK);
}

/* Reads the next message and checks that it is message i, `size` bytes, byte for byte. */
static void expect_big(MojoHandle p, size_t i, uint32_t size)
{
    const uint8_t *data;
    uint32_t got;
    MojoMessageHandle m = read_big(p, &data, &got);
    assert_int_equal(got, size);
    for (size_t j = 0; j < size; j++)
        if (data[j] != big_byte(i, j))
            fail_msg("message %zu (%u bytes): byte %zu differs", i, size, j);
    assert_int_equal(MojoDestroyMessage(m), OK);
}

/* The child sends back every message it reads, as it is, until a 16-byte one. */
static int role_forwarder(const int *fds, size_t n, const char *arg)
{
    static const char *const names[] = {"big"};
    MojoHandle p;
    (void)n;
    (void)arg;
    cmojo_mp_accept(fds[0], names, 1, &p);
    for (;;) {
        const uint8_t *data;
        uint32_t size;
        MojoMessageHandle m = read_big(p, &data, &size);
        /* A received message's size is final: nothing may be appended. */
        CHECK_RESULT(MojoAppendMessageData(m, 8, NULL, 0, NULL, NULL, NULL),
                     MOJO_RESULT_FAILED_PRECONDITION);
        if (size == 16) {
            CHECK_RESULT(MojoDestroyMessage(m), OK);
            break;
        }
        CHECK_RESULT(MojoWriteMessage(p, m, NULL), OK);
    }
    return cmojo_mp_child_finish("forwarder", &p, 1);
}

/*
 * Messages of 16 B to 1 MiB go to a child that writes each message object
 * it read straight back; they return byte for byte, 8-byte aligned, in
 * order: first mid-sized ones one at a time, then all at once. The large ones cross each way
 * without their bytes being copied out of the receive buffer (the child forwards from that buffer);
 * ASan would see a buffer freed twice or read after it was reused.
 */
static void test_large_messages_arrive_and_forward_intact(void **state)
{
    static const char *const names[] = {"big"};
    MojoHandle p;
    cmojo_mp_child child;
    (void)state;
    cmojo_mp_invite("forwarder", NULL, names, 1, &p, &child, 0);
    /*
     * First one at a time, each back before the next: mid-sized messages
     * that arrive alone are kept in small receive buffers on both sides.
     */
    for (size_t k = 0; k < MID_COUNT; k++) {
        write_big(p, 100 + k, mid_sizes[k]);
        expect_big(p, 100 + k, mid_sizes[k]);
    }
    /* Then all written before any is read, so several share the child's reads. */
    for (size_t i = 0; i < BIG_COUNT; i++)
        write_big(p, i, big_sizes[i]);
    for (size_t i = 0; i + 1 < BIG_COUNT; i++) /* the last is the child's stop */
        expect_big(p, i, big_sizes[i]);
    assert_true(cmojo_mp_wait_exit(&child, CHILD_TIMEOUT_MS, 0));
    cmojo_mp_expect_peer_closed(p);
    cmojo_mp_close_all(&p, 1);
    assert_true(cmojo_mp_wait_disconnected(0, IO_TIMEOUT_MS));
}

/*
 * An UNLIMITED_SIZE message just over the limit every message may carry to
 * another process. (For the parent and child roles alike.)
 */
static MojoMessageHandle over_the_limit(const MojoHandle *handles, uint32_t num_handles)
{
    const struct MojoCreateMessageOptions unlimited = {sizeof(unlimited),
                                                       MOJO_CREATE_MESSAGE_FLAG_UNLIMITED_SIZE};
    const struct MojoAppendMessageDataOptions commit = {sizeof(commit),
                                                        MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE};
    MojoMessageHandle m;
    void *buf;
    CHECK_RESULT(MojoCreateMessage(&unlimited, &m), OK);
    CHECK_RESULT(MojoAppendMessageData(m, CMOJO_MAX_MESSAGE_NUM_BYTES + 8u, handles, num_handles,
                                       &commit, &buf, NULL),
                 OK);
    memset(buf, 0x5a, CMOJO_MAX_MESSAGE_NUM_BYTES + 8u);
    return m;
}

/*
 * A message larger than CMOJO_MAX_MESSAGE_NUM_BYTES (UNLIMITED_SIZE) cannot
 * go to another process: MojoWriteMessage says so, the handles it carried are
 * the caller's again, and the pipe goes on working. (Such a message stays
 * deliverable in this process; test_messages shows that.)
 */
static void test_message_over_the_limit_is_refused_for_another_process(void **state)
{
    static const char *const names[] = {"big"};
    MojoHandle p, a, b;
    cmojo_mp_child child;
    (void)state;
    cmojo_mp_invite("forwarder", NULL, names, 1, &p, &child, 0);
    cmojo_mp_expect_peer_remote(p);

    assert_int_equal(MojoCreateMessagePipe(NULL, &a, &b), OK);
    MojoMessageHandle m = over_the_limit(&b, 1);
    assert_int_equal(MojoWriteMessage(p, m, NULL), MOJO_RESULT_RESOURCE_EXHAUSTED);
    /* The carried end is usable again, its pipe whole. */
    cmojo_test_write_text(a, "ok", NULL, 0);
    cmojo_test_expect_text(b, "ok", NULL, 0);

    write_big(p, 1, 4100);
    expect_big(p, 1, 4100);
    write_big(p, 2, 16); /* the forwarder's stop */
    assert_true(cmojo_mp_wait_exit(&child, CHILD_TIMEOUT_MS, 0));
    cmojo_mp_expect_peer_closed(p);
    MojoHandle all[] = {p, a, b};
    cmojo_mp_close_all(all, 3);
    assert_true(cmojo_mp_wait_disconnected(0, IO_TIMEOUT_MS));
    assert_int_equal(cmojo_mp_log(0).reports, 1); /* the disconnection, nothing else */
}

static char until_cut_error[128];

static void until_cut_on_error(const struct MojoProcessErrorDetails *details)
{
    snprintf(until_cut_error, sizeof(until_cut_error), "%.*s", (int)details->error_message_length,
             details->error_message != NULL ? details->error_message : "");
}

/*
 * The child holds its pipe until the parent cuts the connection, which it
 * must see as the parent going away, not as malformed input from it.
 */
static int role_until_cut(const int *fds, size_t n, const char *arg)
{
    static const char *const names[] = {"big"};
    MojoHandle p;
    struct MojoHandleSignalsState st;
    (void)n;
    (void)arg;
    cmojo_mp_accept(fds[0], names, 1, &p);
    CHECK_RESULT(MojoSetDefaultProcessErrorHandler(NULL, NULL), OK);
    CHECK_RESULT(MojoSetDefaultProcessErrorHandler(until_cut_on_error, NULL), OK);
    CHECK_RESULT(MojoWait(p, PEER_CLOSED, (MojoDeadline)IO_TIMEOUT_MS * 1000, &st), OK);
    /* Whatever arrived before the cut goes, with the ends it carried. */
    MojoMessageHandle m;
    while (MojoReadMessage(p, NULL, &m) == OK)
        CHECK_RESULT(MojoDestroyMessage(m), OK);
    int rc = cmojo_mp_child_finish("until_cut", &p, 1);
    /* After MojoShutdown: any report has been made. Only malformed input is reported. */
    if (rc == 0 && until_cut_error[0] != '\0') {
        fprintf(stderr, "until_cut: the parent was blamed: \"%s\"\n", until_cut_error);
        rc = 2;
    }
    return rc;
}

/*
 * Written while its peer was in this process, a message over the limit is
 * accepted; when that peer then moves to another process, the message cannot
 * follow it (the other process would take it for an attack). The ports
 * behind it cannot skip it, so the connection is cut (both processes see
 * their pipes close, and the child blames nobody) rather than the message
 * being dropped and the pipe stalling without a word.
 */
static void test_message_over_the_limit_that_must_follow_its_peer_cuts_the_connection(void **state)
{
    static const char *const names[] = {"big"};
    MojoHandle p, a, b;
    cmojo_mp_child child;
    (void)state;
    cmojo_mp_invite("until_cut", NULL, names, 1, &p, &child, 0);
    cmojo_mp_expect_peer_remote(p);

    assert_int_equal(MojoCreateMessagePipe(NULL, &a, &b), OK);
    assert_int_equal(MojoWriteMessage(a, over_the_limit(NULL, 0), NULL), OK);
    assert_int_equal(MojoWriteMessage(p, cmojo_test_new_data_message("b", 1, &b, 1), NULL), OK);

    cmojo_mp_expect_peer_closed(p);
    cmojo_mp_expect_peer_closed(a);
    assert_true(cmojo_mp_wait_exit(&child, CHILD_TIMEOUT_MS, 0));
    MojoHandle all[] = {p, a};
    cmojo_mp_close_all(all, 2);
    assert_true(cmojo_mp_wait_disconnected(0, IO_TIMEOUT_MS));
}

/* ------------------------------------------------------------------------ */
/* The same cut between two clients, on the connection the broker made.     */

#define CUT_MESSAGES 20
/*
 * How long the far side of a cut may take to see its pipes close: far more
 * than it needs, and shorter than the parent waits for it, so that a
 * regression fails in the far side, saying so, instead of at a timeout.
 */
#define CUT_PEER_CLOSED_MS SETTLE_MS

/*
 * A: gets a pipe end x whose peer is in B, talks to B until the broker's
 * proxies are gone (so A and B talk over a channel of their own), then
 * writes CUT_MESSAGES messages on x and sends B an end whose peer has a
 * message queued for it that cannot follow it: that cuts A's connection to B.
 */
static int role_cutter(const int *fds, size_t n, const char *arg)
{
    MojoHandle ctl, x, c, d;
    uint32_t nh = 1;

    (void)n;
    (void)arg;
    cmojo_mp_accept(fds[0], ctl_name, 1, &ctl);
    cmojo_mp_recv_tag(ctl, TAG_HANDLES, &x, &nh);
    CHECK_RESULT(nh, 1);
    cmojo_mp_send(x, TAG_DATA, 0, ID_A, NULL, 0);
    cmojo_mp_msg m = cmojo_mp_recv_tag(x, TAG_DATA, NULL, NULL);
    CHECK_RESULT(m.value, ID_B);
    cmojo_mp_send(ctl, TAG_READY, 0, 0, NULL, 0);
    cmojo_mp_recv_tag(ctl, TAG_READY, NULL, NULL); /* the route is direct now */

    for (uint32_t i = 1; i <= CUT_MESSAGES; i++)
        cmojo_mp_send(x, TAG_DATA, i, ID_A, NULL, 0);
    CHECK_RESULT(MojoCreateMessagePipe(NULL, &c, &d), OK);
    CHECK_RESULT(MojoWriteMessage(c, over_the_limit(NULL, 0), NULL), OK);
    cmojo_mp_send(x, TAG_HANDLES, CUT_MESSAGES + 1, ID_A, &d, 1);
    /* Our side of the cut: the pipes through it end at once. */
    cmojo_mp_expect_peer_closed(x);
    cmojo_mp_expect_peer_closed(c);
    cmojo_mp_send(ctl, TAG_READY, 1, 0, NULL, 0);

    cmojo_mp_echo_pings(ctl, TAG_DATA, TAG_DONE);
    /*
     * Closing x sends B its closure: the broker introduces us to B anew (B
     * may not have read the end of the old channel yet).
     */
    MojoHandle left[] = {ctl, x, c};
    return cmojo_mp_child_finish("cutter", left, 3);
}

/*
 * B: holds y (x's peer) and gets the end A sent; reads what A sent before
 * the cut, then both pipes routed to A must close within CUT_PEER_CLOSED_MS
 * (exit code 3 if not), with nothing beyond: the message that could not
 * follow never comes. B blames nobody and keeps talking to the broker.
 */
static int role_cut_victim(const int *fds, size_t n, const char *arg)
{
    MojoHandle ctl, y, far;
    uint32_t nh = 1;

    (void)n;
    (void)arg;
    cmojo_mp_accept(fds[0], ctl_name, 1, &ctl);
    CHECK_RESULT(MojoSetDefaultProcessErrorHandler(NULL, NULL), OK);
    CHECK_RESULT(MojoSetDefaultProcessErrorHandler(until_cut_on_error, NULL), OK);
    cmojo_mp_recv_tag(ctl, TAG_HANDLES, &y, &nh);
    CHECK_RESULT(nh, 1);
    cmojo_mp_msg m = cmojo_mp_recv_tag(y, TAG_DATA, NULL, NULL);
    CHECK_RESULT(m.value, ID_A);
    cmojo_mp_send(y, TAG_DATA, 0, ID_B, NULL, 0);
    cmojo_mp_send(ctl, TAG_READY, 0, 0, NULL, 0);

    for (uint32_t i = 1; i <= CUT_MESSAGES; i++) {
        m = cmojo_mp_recv_tag(y, TAG_DATA, NULL, NULL);
        CHECK_RESULT(m.seq, i);
        CHECK_RESULT(m.value, ID_A);
    }
    m = cmojo_mp_recv_tag(y, TAG_HANDLES, &far, &nh);
    CHECK_RESULT(nh, 1);
    CHECK_RESULT(m.seq, CUT_MESSAGES + 1);

    const MojoHandle routed[] = {y, far};
    for (size_t i = 0; i < 2; i++) {
        MojoResult r =
            MojoWait(routed[i], PEER_CLOSED, (MojoDeadline)CUT_PEER_CLOSED_MS * 1000, NULL);
        if (r != OK) {
            fprintf(stderr,
                    "cut victim: the %s pipe to the cutter did not see PEER_CLOSED within %d ms "
                    "(MojoWait: %u)\n",
                    i == 0 ? "first" : "second", CUT_PEER_CLOSED_MS, (unsigned)r);
            return 3;
        }
        cmojo_mp_expect_peer_closed(routed[i]); /* and nothing left to read */
    }
    cmojo_mp_send(ctl, TAG_READY, 1, 0, NULL, 0);

    cmojo_mp_echo_pings(ctl, TAG_DATA, TAG_DONE);
    MojoHandle left[] = {ctl, y, far};
    int rc = cmojo_mp_child_finish("cut victim", left, 3);
    if (rc == 0 && until_cut_error[0] != '\0') {
        fprintf(stderr, "cut victim: the cutter was blamed: \"%s\"\n", until_cut_error);
        rc = 2;
    }
    return rc;
}

/* Reads the child's READY number `step` on ctl; if its pipe closes instead, says how it ended. */
static void expect_ready(MojoHandle ctl, cmojo_mp_child *child, uint32_t step)
{
    MojoResult r = MojoWait(ctl, READABLE, (MojoDeadline)IO_TIMEOUT_MS * 1000, NULL);
    if (r != OK) {
        assert_true(cmojo_mp_wait_exit(child, CHILD_TIMEOUT_MS, 0));
        fail_msg("%s: no READY %u (MojoWait: %u)", child->role, step, (unsigned)r);
    }
    cmojo_mp_msg m = cmojo_mp_recv_tag(ctl, TAG_READY, NULL, NULL);
    CHECK_RESULT(m.seq, step);
}

/*
 * A cuts its connection to B, which the broker (this process) introduced,
 * the way the test above makes the parent cut the connection to its child.
 * On its own, B would take the closing for A dying, and wait for the broker
 * to confirm that -- forever, as A lives. A tells the broker, and the
 * broker tells B: B's pipes routed to A see PEER_CLOSED after what A sent
 * before the cut, nobody is blamed, and both still talk to the broker.
 * Afterwards A closes its dead end of x, whose closure makes the broker
 * introduce A and B again, while the old connection may still be draining
 * on B's side.
 */
static void test_cut_of_a_broker_introduced_connection_closes_both_sides(void **state)
{
    MojoHandle ctl_a, ctl_b, x, y;
    cmojo_mp_child a, b;

    (void)state;
    cmojo_mp_invite("cutter", NULL, ctl_name, 1, &ctl_a, &a, 0);
    cmojo_mp_invite("cut_victim", NULL, ctl_name, 1, &ctl_b, &b, 1);
    cmojo_test_make_pipe(&x, &y);
    cmojo_mp_send(ctl_a, TAG_HANDLES, 0, 0, &x, 1);
    cmojo_mp_send(ctl_b, TAG_HANDLES, 0, 0, &y, 1);
    expect_ready(ctl_a, &a, 0);
    expect_ready(ctl_b, &b, 0);
    /* Our proxies for x and y are gone: A and B talk over their own channel. */
    assert_true(cmojo_mp_wait_counts("broker", 2, 2, SETTLE_MS));
    cmojo_mp_send(ctl_a, TAG_READY, 0, 0, NULL, 0);

    expect_ready(ctl_a, &a, 1);
    expect_ready(ctl_b, &b, 1);
    /* Neither connection to us was in question. */
    assert_int_equal(cmojo_mp_log(0).reports, 0);
    assert_int_equal(cmojo_mp_log(1).reports, 0);
    cmojo_mp_ping(ctl_a, TAG_DATA, 1, 10);
    cmojo_mp_ping(ctl_b, TAG_DATA, 2, 10);

    cmojo_mp_send(ctl_a, TAG_DONE, 0, 0, NULL, 0);
    cmojo_mp_send(ctl_b, TAG_DONE, 0, 0, NULL, 0);
    assert_true(cmojo_mp_wait_exit(&a, CHILD_TIMEOUT_MS, 0));
    assert_true(cmojo_mp_wait_exit(&b, CHILD_TIMEOUT_MS, 0));
    cmojo_mp_expect_peer_closed(ctl_a);
    cmojo_mp_expect_peer_closed(ctl_b);
    MojoHandle left[] = {ctl_a, ctl_b};
    cmojo_mp_close_all(left, 2);
    assert_true(cmojo_mp_wait_disconnected(0, IO_TIMEOUT_MS));
    assert_true(cmojo_mp_wait_disconnected(1, IO_TIMEOUT_MS));
}

/*
 * The child makes the cut, to its broker: it sends the parent an end whose
 * peer holds a message that cannot follow it. Its pipes to the parent end at
 * once; the parent's end when the channel closes, as for any invitee that
 * goes away.
 */
static int role_cuts_its_broker(const int *fds, size_t n, const char *arg)
{
    MojoHandle ctl, c, d;

    (void)n;
    (void)arg;
    cmojo_mp_accept(fds[0], ctl_name, 1, &ctl);
    cmojo_mp_expect_peer_remote(ctl);
    CHECK_RESULT(MojoSetDefaultProcessErrorHandler(NULL, NULL), OK);
    CHECK_RESULT(MojoSetDefaultProcessErrorHandler(until_cut_on_error, NULL), OK);
    CHECK_RESULT(MojoCreateMessagePipe(NULL, &c, &d), OK);
    CHECK_RESULT(MojoWriteMessage(c, over_the_limit(NULL, 0), NULL), OK);
    cmojo_mp_send(ctl, TAG_HANDLES, 0, 0, &d, 1);
    cmojo_mp_expect_peer_closed(ctl);
    cmojo_mp_expect_peer_closed(c);
    MojoHandle left[] = {ctl, c};
    int rc = cmojo_mp_child_finish("cuts its broker", left, 2);
    if (rc == 0 && until_cut_error[0] != '\0') {
        fprintf(stderr, "cuts its broker: the broker was blamed: \"%s\"\n", until_cut_error);
        rc = 2;
    }
    return rc;
}

/* A client's cut of its broker: the pipes between them end on both sides. */
static void
test_client_that_cuts_its_broker_sees_its_pipes_close_and_so_does_the_broker(void **state)
{
    MojoHandle ctl, far;
    cmojo_mp_child child;
    uint32_t nh = 1;

    (void)state;
    cmojo_mp_invite("cuts_its_broker", NULL, ctl_name, 1, &ctl, &child, 0);
    /* The end it sends arrives before the cut: the cut is over the message that follows it. */
    cmojo_mp_recv_tag(ctl, TAG_HANDLES, &far, &nh);
    CHECK_RESULT(nh, 1);
    cmojo_mp_expect_peer_closed(far);
    cmojo_mp_expect_peer_closed(ctl);
    assert_true(cmojo_mp_wait_exit(&child, CHILD_TIMEOUT_MS, 0));
    assert_true(cmojo_mp_wait_disconnected(0, IO_TIMEOUT_MS));
    MojoHandle left[] = {ctl, far};
    cmojo_mp_close_all(left, 2);
}

/* ------------------------------------------------------------------------ */

static int setup(void **state)
{
    cmojo_mp_reset_logs();
    return cmojo_mp_core_setup(state);
}

static const cmojo_mp_role roles[] = {
    {"pair", role_pair},
    {"bulk_a", role_bulk_a},
    {"bulk_b", role_bulk_b},
    {"ring1", role_ring1},
    {"ring2", role_ring2},
    {"ring3", role_ring3},
    {"many_fds", role_many_fds},
    {"victim", role_victim},
    {"survivor", role_survivor},
    {"forwarder", role_forwarder},
    {"until_cut", role_until_cut},
    {"cutter", role_cutter},
    {"cut_victim", role_cut_victim},
    {"cuts_its_broker", role_cuts_its_broker},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    cmojo_mp_child_dispatch(argc, argv, roles);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_one_child_two_named_pipes, setup,
                                        cmojo_mp_core_teardown),
        cmocka_unit_test_setup_teardown(test_wait_inside_trap_handler_for_another_process, setup,
                                        cmojo_mp_core_teardown),
        cmocka_unit_test_setup_teardown(test_two_children_bulk_and_moving_end, setup,
                                        cmojo_mp_core_teardown),
        cmocka_unit_test_setup_teardown(test_end_travels_a_ring_of_four_processes, setup,
                                        cmojo_mp_core_teardown),
        cmocka_unit_test_setup_teardown(test_wrapped_fd_travels_three_hops, setup,
                                        cmojo_mp_core_teardown),
        cmocka_unit_test_setup_teardown(test_253_fds_in_one_message_and_no_more, setup,
                                        cmojo_mp_core_teardown),
        cmocka_unit_test_setup_teardown(test_kill_9_child, setup, cmojo_mp_core_teardown),
        cmocka_unit_test_setup_teardown(test_large_messages_arrive_and_forward_intact, setup,
                                        cmojo_mp_core_teardown),
        cmocka_unit_test_setup_teardown(test_message_over_the_limit_is_refused_for_another_process,
                                        setup, cmojo_mp_core_teardown),
        cmocka_unit_test_setup_teardown(
            test_message_over_the_limit_that_must_follow_its_peer_cuts_the_connection, setup,
            cmojo_mp_core_teardown),
        cmocka_unit_test_setup_teardown(
            test_cut_of_a_broker_introduced_connection_closes_both_sides, setup,
            cmojo_mp_core_teardown),
        cmocka_unit_test_setup_teardown(
            test_client_that_cuts_its_broker_sees_its_pipes_close_and_so_does_the_broker, setup,
            cmojo_mp_core_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
