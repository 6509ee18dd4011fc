/*
 * The POSIX channel (see channel.h).
 *
 * Locking. One mutex (mu) guards the write queue, the socket's write side
 * and the channel's state flags. sendmsg runs under it (the socket is
 * non-blocking, so that is a bounded wait) which keeps frames whole and in
 * call order. The read side (receive buffer, received fds) belongs to the
 * watch's callback (the IO loop never runs two callbacks at once) and has no
 * lock; shutdown and failure free it only when no callback can be touching
 * it.
 *
 * Order: mu may be held while calling plat_io_add/modify/post (the IO module
 * never calls back into us holding its own lock); plat_io_remove, which
 * waits for a running callback, is never called with mu held.
 *
 * Callbacks. Every delegate call happens inside on_io (the watch callback)
 * or error_task (posted), both run by the IO loop (its thread, or a thread
 * in MojoWait polling as its guest). error_task counts itself in
 * in_callback; on_io is covered by its watch, whose removal waits for it,
 * and is counted only once the watch is removed from inside it
 * (take_watch_locked). channel_shutdown from outside the loop removes the
 * watch and then waits for in_callback to reach zero; from inside it never
 * waits (it may be inside one of those callbacks).
 */
#include "channel/channel.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "channel/frame.h"
#include "cmojo_limits.h"
#include "platform/block.h"
#include "platform/lock.h"
#include "platform/sys.h"

ssize_t (*channel_sys_sendmsg)(int fd, const struct msghdr *msg, int flags) = plat_sendmsg;
ssize_t (*channel_sys_recvmsg)(int fd, struct msghdr *msg, int flags) = plat_recvmsg;

/*
 * Receive buffer. It starts at RX_DEFAULT_CAPACITY; a frame that does not
 * fit grows it to the frame's size plus RX_SLACK, so the next frame of that
 * size arrives in one recvmsg that comes back short (a short read with no
 * fds is how the loop knows the socket is drained, without a recvmsg that
 * fails with EAGAIN: a Unix stream socket fills the buffer from every queued
 * segment, stopping early only after one that carried fds). Once empty it is kept, so a peer that
 * keeps sending large frames costs no allocation (and no page faults) per frame -- up to
 * RX_KEEP_MAX_CAPACITY, what one wake-up may read anyway: a buffer grown
 * beyond that for a rare huge frame goes back to the allocator, so an idle
 * channel never pins more than that.
 */
#define RX_DEFAULT_CAPACITY (64u * 1024u)
#define RX_SLACK (4u * 1024u)
#define RX_KEEP_MAX_CAPACITY (256u * 1024u + RX_SLACK)

/*
 * A frame that fills at least half of the receive buffer, and at least
 * RX_LEND_MIN bytes, is delivered with the buffer itself on offer
 * (on_frame's `block`): a receiver that keeps it saves copying the payload
 * out, and the channel reads on into a fresh buffer of the same capacity.
 * The half keeps what a kept frame pins to twice its size; below the
 * minimum, copying costs less than the allocation.
 */
#define RX_LEND_MIN (4u * 1024u)

/*
 * Small receive buffer. In the default buffer only frames of half its size
 * and more are lent, so a conversation of mid-sized frames (a request, then
 * its answer, each a few KiB) would copy every one out. A frame of half the
 * small capacity or more (up to RX_SMALL_FRAME_MAX) that arrives alone --
 * it starts the buffer and nothing follows it -- switches the channel to
 * buffers of RX_SMALL_CAPACITY, in which such frames fill half and are lent
 * like large ones. A read that fills the small buffer (more is coming than
 * it holds: a burst, or a frame bigger than it) switches back.
 */
#define RX_SMALL_CAPACITY (8u * 1024u)
#define RX_SMALL_FRAME_MAX (RX_SMALL_CAPACITY * 3u / 4u)

/*
 * Bytes one wake-up reads at most before returning to epoll, so that a
 * channel whose peer never stops writing cannot starve the others on the IO
 * thread. Every complete frame in what was read is delivered.
 */
#define RX_BUDGET_PER_WAKEUP (256u * 1024u)

/*
 * Received fds held at once: a frame's worth (the parser refuses more once
 * the frame's header is in) plus what one recvmsg can bring before the
 * parser looks again (the control buffer holds CMOJO_MAX_FDS_PER_SENDMSG).
 */
#define RX_MAX_FDS (CMOJO_MAX_FDS_PER_FRAME + CMOJO_MAX_FDS_PER_SENDMSG)

/*
 * iovecs in one sendmsg: the direct path sends header + caller's iovecs +
 * padding from the stack; beyond this many it copies the frame first.
 * Flushing the queue gathers up to this many queued frames per call.
 */
#define TX_MAX_IOV 16
_Static_assert(CHANNEL_WRITE_FRAME_ROOM == CHANNEL_FRAME_HEADER_SIZE, "room for the header");
_Static_assert(CHANNEL_WRITE_FRAME_TAIL_ROOM == CHANNEL_FRAME_ALIGNMENT - 1, "room for padding");
#define TX_DIRECT_MAX_USER_IOV (TX_MAX_IOV - 2)

/* Control buffer for up to CMOJO_MAX_FDS_PER_SENDMSG fds, aligned for cmsghdr. */
typedef union fd_control {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * CMOJO_MAX_FDS_PER_SENDMSG)];
} fd_control;

/* One queued frame (or the unsent rest of one). fds and bytes follow it in the allocation. */
typedef struct tx_entry {
    struct tx_entry *next;
    uint8_t *data;
    size_t len;
    size_t off; /* bytes already sent */
    int *fds;
    size_t num_fds;
    size_t fds_sent; /* sent fds are closed at once */
} tx_entry;

struct channel {
    atomic_size_t refs;
    plat_io *io;
    channel_delegate delegate;
    int fd; /* fixed from create; closed by shutdown (fd_closed) */

    plat_mutex mu;
    plat_cond cond; /* in_callback dropped to 0, or shutdown finished */
    /* Under mu: */
    plat_io_watch *watch; /* the watch holds one reference */
    tx_entry *tx_head;
    tx_entry *tx_tail;
    bool started;
    bool want_write; /* EPOLLOUT is in the watch's interest set */
    bool failed;
    bool write_broken; /* see mark_write_broken_locked */
    bool error_delivered;
    bool shut;
    bool shut_done;
    bool fd_closed;
    int error_protocol;
    const char *error_why;
    atomic_uint in_callback; /* changed under mu; see take_watch_locked */

    /* failed || shut, readable without mu by the receive loop. */
    atomic_bool stopped;

    /* IO thread only (or with no callback possible, under mu). */
    bool in_io_cb;
    bool watch_ref_owed; /* see take_watch_locked */
    uint8_t *rx;
    size_t rx_cap;
    bool rx_small;   /* buffers of RX_SMALL_CAPACITY (see there) */
    size_t rx_start; /* first unconsumed byte */
    size_t rx_end;   /* one past the last received byte */
    size_t rx_need;  /* wire size of the frame being received, once known */
    int rx_fds[RX_MAX_FDS];
    size_t rx_nfds;
};

static void close_fds(const int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
}

static void tx_free(tx_entry *e)
{
    close_fds(e->fds + e->fds_sent, e->num_fds - e->fds_sent);
    free(e);
}

static void tx_drop_all_locked(channel *c)
{
    tx_entry *e = c->tx_head;
    c->tx_head = NULL;
    c->tx_tail = NULL;
    while (e != NULL) {
        tx_entry *next = e->next;
        tx_free(e);
        e = next;
    }
}

/* Copies bytes [skip, total) of vec[] and the fds into a new queue entry. */
static tx_entry *tx_new(const struct iovec *vec, int cnt, size_t skip, size_t total, const int *fds,
                        size_t num_fds)
{
    size_t len = total - skip;
    tx_entry *e = malloc(sizeof(*e) + num_fds * sizeof(int) + len);
    if (e == NULL)
        return NULL;
    e->next = NULL;
    e->fds = (int *)(void *)(e + 1);
    e->data = (uint8_t *)(e->fds + num_fds);
    e->len = len;
    e->off = 0;
    e->num_fds = num_fds;
    e->fds_sent = 0;
    if (num_fds > 0)
        memcpy(e->fds, fds, num_fds * sizeof(int));

    size_t pos = 0;
    for (int i = 0; i < cnt; i++) {
        const uint8_t *base = vec[i].iov_base;
        size_t n = vec[i].iov_len;
        if (skip >= n) {
            skip -= n;
            continue;
        }
        memcpy(e->data + pos, base + skip, n - skip);
        pos += n - skip;
        skip = 0;
    }
    assert(pos == len);
    return e;
}

static void tx_append_locked(channel *c, tx_entry *e)
{
    if (c->tx_tail != NULL)
        c->tx_tail->next = e;
    else
        c->tx_head = e;
    c->tx_tail = e;
}

/*
 * One sendmsg, EINTR retried. Bytes sent (>= 1: with fds, they went along),
 * -EAGAIN when nothing could be sent, or another negative errno.
 */
static ssize_t send_some(int fd, const struct iovec *vec, int cnt, size_t total, const int *fds,
                         size_t num_fds)
{
    struct msghdr msg;
    fd_control control;

    assert(num_fds <= CMOJO_MAX_FDS_PER_SENDMSG);
    assert(total > 0);
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = (struct iovec *)vec;
    msg.msg_iovlen = (size_t)cnt;
    if (num_fds > 0) {
        memset(&control, 0, sizeof(control));
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(num_fds * sizeof(int));
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(num_fds * sizeof(int));
        memcpy(CMSG_DATA(cmsg), fds, num_fds * sizeof(int));
    }
    for (;;) {
        ssize_t n = channel_sys_sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            /* More than asked would be a broken hook; do not trust it. */
            return (size_t)n <= total ? n : -EIO;
        }
        if (n == 0)
            return -EAGAIN; /* a stream socket sends nothing only when it is full */
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return -EAGAIN;
        return errno > 0 ? -errno : -EIO;
    }
}

/* Adds or drops EPOLLOUT. 0 or a negative errno. */
static int set_want_write_locked(channel *c, bool want)
{
    if (c->watch == NULL || c->want_write == want)
        return 0;
    int rc = plat_io_modify(c->watch, PLAT_IO_READABLE | (want ? PLAT_IO_WRITABLE : 0u));
    if (rc == 0)
        c->want_write = want;
    return rc;
}

/*
 * Sends queued frames until the queue is empty or the socket is full (then
 * EPOLLOUT finishes the job). A frame with more fds than one sendmsg may
 * carry goes out as one byte per full batch of fds, then the rest of the
 * frame with the last batch: every batch travels with bytes of its own
 * frame. 0 or a negative errno (the channel must fail).
 */
static int flush_locked(channel *c)
{
    while (c->tx_head != NULL) {
        struct iovec vec[TX_MAX_IOV];
        int cnt = 0;
        size_t total = 0;
        tx_entry *e = c->tx_head;
        const int *fds = NULL;
        size_t nfds = 0;

        if (e->fds_sent < e->num_fds) {
            nfds = e->num_fds - e->fds_sent;
            if (nfds > CMOJO_MAX_FDS_PER_SENDMSG)
                nfds = CMOJO_MAX_FDS_PER_SENDMSG;
            fds = e->fds + e->fds_sent;
            bool last_batch = e->fds_sent + nfds == e->num_fds;
            total = last_batch ? e->len - e->off : 1;
            /* Enough bytes are left for every later batch (frames are >= 16 bytes). */
            assert(e->len - e->off >= (e->num_fds - e->fds_sent + CMOJO_MAX_FDS_PER_SENDMSG - 1) /
                                          CMOJO_MAX_FDS_PER_SENDMSG);
            vec[cnt].iov_base = e->data + e->off;
            vec[cnt].iov_len = total;
            cnt++;
        } else {
            /* Gather frames without fds; one with fds starts its own sendmsg. */
            for (tx_entry *g = e; g != NULL && cnt < TX_MAX_IOV; g = g->next) {
                if (g != e && g->num_fds > 0)
                    break;
                vec[cnt].iov_base = g->data + g->off;
                vec[cnt].iov_len = g->len - g->off;
                total += g->len - g->off;
                cnt++;
            }
        }

        ssize_t n = send_some(c->fd, vec, cnt, total, fds, nfds);
        if (n == -EAGAIN)
            return set_want_write_locked(c, true);
        if (n < 0)
            return (int)n;
        if (nfds > 0) {
            close_fds(fds, nfds);
            e->fds_sent += nfds;
        }
        size_t sent = (size_t)n;
        while (sent > 0) {
            tx_entry *h = c->tx_head;
            size_t take = h->len - h->off;
            if (take > sent)
                take = sent;
            h->off += take;
            sent -= take;
            if (h->off == h->len) {
                assert(h->fds_sent == h->num_fds);
                c->tx_head = h->next;
                if (c->tx_head == NULL)
                    c->tx_tail = NULL;
                free(h);
            }
        }
    }
    return set_want_write_locked(c, false);
}

/* Records the first failure. False if the channel had failed or was shut down already. */
static bool mark_failed_locked(channel *c, int protocol, const char *why)
{
    if (c->failed || c->shut)
        return false;
    c->failed = true;
    c->error_protocol = protocol;
    c->error_why = why;
    atomic_store(&c->stopped, true);
    tx_drop_all_locked(c);
    return true;
}

/*
 * A write failed (EPIPE, ECONNRESET, ...): the peer is gone or going, but
 * what it sent before may still wait in our receive buffer, and it must be
 * read -- a pipe's last messages before its peer's process exits are in
 * there. So only the write side stops: the queue is dropped (closing its
 * fds), later writes get -EPIPE, and the channel fails when the read side
 * reaches EOF (or an error), which a closed peer socket always gives.
 */
static void mark_write_broken_locked(channel *c)
{
    if (c->write_broken || c->failed || c->shut)
        return;
    c->write_broken = true;
    tx_drop_all_locked(c);
    set_want_write_locked(c, false);
}

static void rx_discard_locked(channel *c)
{
    close_fds(c->rx_fds, c->rx_nfds);
    c->rx_nfds = 0;
    plat_block_free(c->rx);
    c->rx = NULL;
    c->rx_cap = 0;
    c->rx_start = 0;
    c->rx_end = 0;
}

/*
 * Takes the watch out of c for removal; mu held, on_loop if the caller runs
 * on the IO loop. While the watch is registered it covers on_io: a removal
 * from another thread waits for the callback, so on_io neither counts itself
 * in in_callback nor holds a reference of its own. A removal from inside
 * on_io (a delegate shutting the channel down, or deliver_error) cannot wait
 * for it, so it counts the rest of that on_io in in_callback and leaves the
 * drop of the watch's reference, which keeps c alive there, to on_io's end.
 * True in that case.
 */
static bool take_watch_locked(channel *c, bool on_loop, plat_io_watch **w)
{
    *w = c->watch;
    c->watch = NULL;
    if (*w == NULL || !on_loop || !c->in_io_cb)
        return false;
    atomic_fetch_add(&c->in_callback, 1);
    c->watch_ref_owed = true;
    return true;
}

/* Removes a watch taken by take_watch_locked (mu not held), dropping its reference unless owed. */
static void remove_watch(channel *c, plat_io_watch *w, bool owed)
{
    if (w == NULL)
        return;
    plat_io_remove(w);
    if (!owed)
        channel_release(c); /* the caller holds another */
}

/*
 * On the IO thread, inside on_io or error_task: delivers a recorded failure
 * once, after unregistering, unless the channel was shut down.
 */
static void deliver_error(channel *c)
{
    /*
     * Not stopped: nothing to deliver (a failure marked after this look was
     * also posted, or the next wake-up sees it), and no lock to take.
     */
    if (!atomic_load(&c->stopped))
        return;
    plat_mutex_lock(&c->mu);
    if (c->shut || !c->failed || c->error_delivered) {
        plat_mutex_unlock(&c->mu);
        return;
    }
    c->error_delivered = true;
    plat_io_watch *w;
    bool owed = take_watch_locked(c, true, &w);
    int protocol = c->error_protocol;
    const char *why = c->error_why;
    /* Whoever called us is done with the receive buffer. */
    rx_discard_locked(c);
    plat_mutex_unlock(&c->mu);

    remove_watch(c, w, owed);
    c->delegate.on_error(c->delegate.ctx, protocol, why);
}

/*
 * The end of a callback counted in in_callback: error_task, or an on_io whose
 * watch was removed from inside it (take_watch_locked). Both are rare, so
 * this simply locks.
 */
static void callback_exit(channel *c)
{
    plat_mutex_lock(&c->mu);
    if (c->shut || c->failed)
        rx_discard_locked(c);
    unsigned was = atomic_fetch_sub(&c->in_callback, 1);
    assert(was > 0);
    if (was == 1)
        plat_cond_broadcast(&c->cond);
    plat_mutex_unlock(&c->mu);
}

static void error_task(void *arg)
{
    channel *c = arg;
    plat_mutex_lock(&c->mu);
    atomic_fetch_add(&c->in_callback, 1);
    plat_mutex_unlock(&c->mu);
    deliver_error(c);
    callback_exit(c);
    channel_release(c);
}

/*
 * A failure seen outside the IO thread's callbacks: on_error must run on the
 * IO thread, and not from inside the caller's channel_write. Before
 * channel_start, channel_start posts it.
 */
static void post_error_locked(channel *c)
{
    if (!c->started)
        return;
    channel_acquire(c);
    if (plat_io_post(c->io, error_task, c) != 0) {
        /* The next wake-up of the watch (if any) delivers it instead. */
        channel_release(c); /* not the last: the caller holds one */
    }
}

static void fail_on_io(channel *c, int protocol, const char *why)
{
    plat_mutex_lock(&c->mu);
    mark_failed_locked(c, protocol, why);
    plat_mutex_unlock(&c->mu);
}

/*
 * Room for at least one more byte, in a buffer of at least the capacity the
 * mode wants (a small buffer in the default mode grows at once). False when
 * out of memory.
 */
static bool rx_make_room(channel *c)
{
    size_t want = c->rx_small ? RX_SMALL_CAPACITY : RX_DEFAULT_CAPACITY;
    bool below = c->rx_cap < want;
    if (c->rx_end < c->rx_cap && !below)
        return true;
    size_t pending = c->rx_end - c->rx_start;
    if (c->rx_start > 0) {
        memmove(c->rx, c->rx + c->rx_start, pending);
        c->rx_start = 0;
        c->rx_end = pending;
        if (pending < c->rx_cap && !below)
            return true;
    }
    size_t cap;
    if (below) {
        cap = want;
    } else {
        /*
         * Full of one incomplete frame: grow towards its size plus the
         * slack, never beyond, doubling so that a peer that announces a huge
         * frame gets memory only as fast as it sends the bytes.
         */
        assert(c->rx_need > pending && c->rx_need <= CMOJO_MAX_FRAME_SIZE);
        cap = c->rx_cap * 2;
        if (cap > c->rx_need + RX_SLACK)
            cap = c->rx_need + RX_SLACK;
    }
    uint8_t *rx;
    if (pending == 0) {
        /* Nothing to keep: a block this thread kept may serve (first, then ours is kept). */
        rx = plat_block_alloc(cap);
        if (rx != NULL)
            plat_block_free(c->rx);
    } else {
        rx = plat_block_realloc(c->rx, cap);
    }
    if (rx == NULL)
        return false;
    c->rx = rx;
    c->rx_cap = plat_block_size(rx);
    return true;
}

/*
 * For a frame about to be delivered: a buffer to replace the receive buffer
 * with if the receiver keeps the frame's (RX_LEND_MIN), or NULL if it is not
 * on offer. What follows a frame on offer is no longer than the frame:
 * moving that to the new buffer costs at most what copying the frame would,
 * so no byte is moved more often than once. The new buffer has the old
 * one's capacity, so that the next frame of the size arrives in one read as
 * well, unless that is beyond what an idle channel keeps
 * (RX_KEEP_MAX_CAPACITY): then it holds what followed the frame. rx_cap is
 * always a buffer's real capacity (plat_block_size), so the half is a half
 * of what the frame would pin.
 */
static uint8_t *rx_spare_for(channel *c, const channel_frame *f)
{
    size_t rest = c->rx_end - c->rx_start - f->wire_size;
    if (f->wire_size < RX_LEND_MIN || f->wire_size < c->rx_cap / 2 || rest > f->wire_size)
        return NULL;
    size_t cap = c->rx_cap;
    if (cap > RX_KEEP_MAX_CAPACITY)
        cap = rest > RX_DEFAULT_CAPACITY ? rest : RX_DEFAULT_CAPACITY;
    return plat_block_alloc(cap);
}

/* Cuts what has arrived into frames and delivers them. False once the channel stopped. */
static bool rx_deliver(channel *c)
{
    for (;;) {
        channel_frame f;
        size_t need;
        const char *why;
        channel_frame_result r = channel_frame_parse(c->rx + c->rx_start, c->rx_end - c->rx_start,
                                                     c->rx_nfds, &f, &need, &why);
        if (r == CHANNEL_FRAME_BAD) {
            fail_on_io(c, 1, why);
            return false;
        }
        if (r == CHANNEL_FRAME_NEED_MORE) {
            c->rx_need = need;
            if (c->rx_start == c->rx_end) {
                c->rx_start = 0;
                c->rx_end = 0;
                /* Too big to keep idle, or the big buffer of a channel gone small. */
                if (c->rx_cap > RX_KEEP_MAX_CAPACITY ||
                    (c->rx_small && c->rx_cap >= 2 * RX_SMALL_CAPACITY)) {
                    plat_block_free(c->rx);
                    c->rx = NULL;
                    c->rx_cap = 0;
                }
            }
            return true;
        }
        if (atomic_load(&c->stopped))
            return false;

        int fds[CMOJO_MAX_FDS_PER_FRAME];
        memcpy(fds, c->rx_fds, f.num_fds * sizeof(int));
        c->rx_nfds -= f.num_fds;
        memmove(c->rx_fds, c->rx_fds + f.num_fds, c->rx_nfds * sizeof(int));

        /*
         * What followed the frame moves to the spare before the call: a
         * receiver that keeps the buffer may free it before it returns (a
         * message dropped on arrival, or read and destroyed at once).
         */
        size_t rest = c->rx_end - c->rx_start - f.wire_size;
        if (c->rx_start == 0 && rest == 0 && f.wire_size >= RX_SMALL_CAPACITY / 2 &&
            f.wire_size <= RX_SMALL_FRAME_MAX)
            c->rx_small = true; /* alone in the buffer: see RX_SMALL_CAPACITY */
        uint8_t *spare = rx_spare_for(c, &f);
        if (spare)
            memcpy(spare, c->rx + c->rx_start + f.wire_size, rest);
        void *block = c->rx;
        c->delegate.on_frame(c->delegate.ctx, f.type, f.payload, f.payload_size,
                             f.num_fds > 0 ? fds : NULL, f.num_fds, spare ? &block : NULL);
        if (spare && block == NULL) {
            /* Kept: the spare is the buffer now; the old one is not ours to touch. */
            c->rx = spare;
            c->rx_cap = plat_block_size(spare);
            c->rx_start = 0;
            c->rx_end = rest;
        } else {
            plat_block_free(spare);
            c->rx_start += f.wire_size;
        }
        if (atomic_load(&c->stopped))
            return false;
    }
}

/*
 * Reads and delivers until the socket is drained (after a hang-up: until the
 * end of file) or the budget is spent. True if it may not be drained (the
 * watch then calls again while it is ready).
 */
static bool rx_read(channel *c, bool hangup)
{
    size_t budget = RX_BUDGET_PER_WAKEUP;

    while (budget > 0) {
        if (!rx_make_room(c)) {
            fail_on_io(c, 0, "out of memory for the receive buffer");
            return false;
        }
        size_t room = c->rx_cap - c->rx_end;
        if (room > budget)
            room = budget;

        struct iovec vec = {.iov_base = c->rx + c->rx_end, .iov_len = room};
        fd_control control;
        struct msghdr msg;
        memset(&msg, 0, sizeof(msg));
        msg.msg_iov = &vec;
        msg.msg_iovlen = 1;
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof(control.buf);

        ssize_t n;
        do {
            n = channel_sys_recvmsg(c->fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return false;
            fail_on_io(c, 0, "read from the socket failed");
            return false;
        }

        /* Every fd that arrived is ours to close from here on, whatever follows. */
        bool fd_overflow = false, got_fds = false;
        for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg); cmsg != NULL;
             cmsg = CMSG_NXTHDR(&msg, cmsg)) {
            if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS)
                continue;
            if (cmsg->cmsg_len < CMSG_LEN(0))
                continue;
            size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            const unsigned char *data = CMSG_DATA(cmsg);
            got_fds = got_fds || count > 0;
            for (size_t i = 0; i < count; i++) {
                int fd;
                memcpy(&fd, data + i * sizeof(int), sizeof(int));
                if (c->rx_nfds < RX_MAX_FDS) {
                    c->rx_fds[c->rx_nfds++] = fd;
                } else {
                    close(fd);
                    fd_overflow = true;
                }
            }
        }
        if (msg.msg_flags & MSG_CTRUNC) {
            fail_on_io(c, 1, "more fds arrived than the control buffer holds");
            return false;
        }
        if (fd_overflow) {
            fail_on_io(c, 1, "too many fds queued");
            return false;
        }
        if ((size_t)n > room) {
            fail_on_io(c, 0, "read returned more than asked");
            return false;
        }
        if (n == 0) {
            if (c->rx_end > c->rx_start || c->rx_nfds > 0)
                fail_on_io(c, 1, "peer closed the connection in the middle of a frame");
            else
                fail_on_io(c, 0, "peer closed the connection");
            return false;
        }
        if (c->rx_small && c->rx_start == 0 && c->rx_end + (size_t)n == c->rx_cap)
            c->rx_small = false; /* filled: more is coming than a small buffer holds */
        c->rx_end += (size_t)n;
        budget -= (size_t)n;
        if (!rx_deliver(c))
            return false;
        /* Short: drained, unless the read stopped after a segment with fds. */
        if ((size_t)n < room && !hangup)
            return got_fds;
    }
    return true;
}

static bool on_io(void *ctx, uint32_t events)
{
    channel *c = ctx;
    bool more = false;

    /*
     * The watch covers this callback (see take_watch_locked): no reference or
     * count of our own unless it is removed from inside. Only reading to do,
     * on a running channel, takes no lock either: a shutdown racing this
     * removes the watch, which waits for this callback to return (and the
     * receive loop stops at `stopped`).
     */
    bool failed = false;
    if ((events & PLAT_IO_WRITABLE) || atomic_load(&c->stopped)) {
        plat_mutex_lock(&c->mu);
        if (c->shut) {
            plat_mutex_unlock(&c->mu);
            return false;
        }
        if (!c->failed && !c->write_broken && (events & PLAT_IO_WRITABLE)) {
            if (flush_locked(c) < 0)
                mark_write_broken_locked(c);
        }
        failed = c->failed;
        plat_mutex_unlock(&c->mu);
    }

    c->in_io_cb = true;
    if (!failed && (events & (PLAT_IO_READABLE | PLAT_IO_HANGUP)))
        more = rx_read(c, (events & PLAT_IO_HANGUP) != 0);
    deliver_error(c);
    c->in_io_cb = false;

    if (c->watch_ref_owed) {
        callback_exit(c);
        channel_release(c); /* the watch's, and the last use of c */
    }
    return more;
}

int channel_create(int fd, plat_io *io, const channel_delegate *delegate, channel **out)
{
    assert(io != NULL && delegate != NULL && out != NULL);
    assert(delegate->on_frame != NULL && delegate->on_error != NULL);

    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        int err = errno;
        if (fd >= 0)
            close(fd);
        return -err;
    }
    channel *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        return -ENOMEM;
    }
    atomic_init(&c->refs, 1);
    atomic_init(&c->stopped, false);
    atomic_init(&c->in_callback, 0);
    c->io = io;
    c->delegate = *delegate;
    c->fd = fd;
    plat_mutex_init(&c->mu);
    plat_cond_init(&c->cond);
    *out = c;
    return 0;
}

int channel_start(channel *c)
{
    assert(c != NULL);
    int rc = 0;

    plat_mutex_lock(&c->mu);
    if (c->shut) {
        rc = -EPIPE;
    } else if (c->started) {
        rc = -EINVAL;
    } else if (c->failed) {
        /* A write failed before start; report it now that the owner listens. */
        c->started = true;
        post_error_locked(c);
    } else {
        bool want = c->tx_head != NULL;
        channel_acquire(c); /* the watch's */
        rc = plat_io_add(c->io, c->fd, PLAT_IO_READABLE | (want ? PLAT_IO_WRITABLE : 0u), on_io, c,
                         &c->watch);
        if (rc == 0) {
            c->started = true;
            c->want_write = want;
        } else {
            c->watch = NULL;
            atomic_fetch_sub(&c->refs, 1); /* not the last: the caller holds one */
        }
    }
    plat_mutex_unlock(&c->mu);
    return rc;
}

/*
 * Sends (or queues) one frame laid out as parts[0..nparts), wire bytes in
 * all; takes the fds. The shared end of channel_write and
 * channel_write_frame.
 */
static int write_parts(channel *c, const struct iovec *parts, int nparts, size_t wire, int *fds,
                       size_t num_fds)
{
    int rc = 0;
    size_t sent = 0;
    bool fds_gone = false;
    bool tried = false;
    tx_entry *e;
    plat_mutex_lock(&c->mu);
    if (c->shut || c->failed || c->write_broken) {
        rc = -EPIPE;
        goto out_close_fds;
    }

    if (c->tx_head == NULL && nparts <= TX_MAX_IOV && num_fds <= CMOJO_MAX_FDS_PER_SENDMSG) {
        tried = true;
        ssize_t n = send_some(c->fd, parts, nparts, wire, fds, num_fds);
        if (n < 0 && n != -EAGAIN) {
            mark_write_broken_locked(c);
            rc = -EPIPE;
            goto out_close_fds;
        }
        if (n > 0) {
            sent = (size_t)n;
            fds_gone = true;
            close_fds(fds, num_fds);
        }
        if (sent == wire)
            goto out;
    }

    /* Queue what is left; if it is alone in the queue, start sending it now. */
    e = tx_new(parts, nparts, sent, wire, fds, fds_gone ? 0 : num_fds);
    if (e == NULL) {
        if (sent > 0) {
            /* Half a frame is on the wire: the stream cannot be resumed. */
            if (mark_failed_locked(c, 0, "out of memory for the write queue"))
                post_error_locked(c);
        }
        rc = -ENOMEM;
        goto out_close_fds;
    }
    fds_gone = true; /* the entry has them */
    bool was_empty = c->tx_head == NULL;
    tx_append_locked(c, e);
    if (was_empty) {
        /* Just refused (or took part of it): wait for EPOLLOUT rather than retry now. */
        int frc = tried ? set_want_write_locked(c, true) : flush_locked(c);
        if (frc < 0) {
            mark_write_broken_locked(c);
            /* The frame may be partly sent; either way the caller learns it did not go. */
            rc = -EPIPE;
        }
    }
    goto out;

out_close_fds:
    if (!fds_gone)
        close_fds(fds, num_fds);
out:
    plat_mutex_unlock(&c->mu);
    return rc;
}

int channel_write(channel *c, uint16_t type, const struct iovec *iov, int iovcnt, int *fds,
                  size_t num_fds)
{
    assert(c != NULL && type != 0);
    assert(iovcnt >= 0 && (iovcnt == 0 || iov != NULL));
    assert(num_fds == 0 || fds != NULL);

    size_t payload = 0;
    bool too_big = num_fds > CMOJO_MAX_FDS_PER_FRAME;
    for (int i = 0; i < iovcnt && !too_big; i++) {
        if (iov[i].iov_len > channel_frame_max_payload() - payload)
            too_big = true;
        else
            payload += iov[i].iov_len;
    }
    if (too_big) {
        close_fds(fds, num_fds);
        return -EMSGSIZE;
    }

    static const uint8_t zeros[CHANNEL_FRAME_ALIGNMENT];
    uint8_t header[CHANNEL_FRAME_HEADER_SIZE];
    channel_frame_write_header(header, type, payload, num_fds);
    size_t wire = channel_frame_wire_size(payload);
    size_t pad = wire - CHANNEL_FRAME_HEADER_SIZE - payload;

    /* header, payload pieces, padding: on the stack when they fit, else one copy. */
    struct iovec vec[TX_MAX_IOV];
    const struct iovec *parts = vec;
    int nparts = 0;
    struct iovec *heap = NULL;
    if (iovcnt > TX_DIRECT_MAX_USER_IOV) {
        heap = malloc(((size_t)iovcnt + 2) * sizeof(*heap));
        if (heap == NULL) {
            close_fds(fds, num_fds);
            return -ENOMEM;
        }
        parts = heap;
    }
    struct iovec *fill = heap != NULL ? heap : vec;
    fill[nparts].iov_base = header;
    fill[nparts].iov_len = sizeof(header);
    nparts++;
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len > 0)
            fill[nparts++] = iov[i];
    }
    if (pad > 0) {
        fill[nparts].iov_base = (void *)zeros;
        fill[nparts].iov_len = pad;
        nparts++;
    }

    int rc = write_parts(c, parts, nparts, wire, fds, num_fds);
    free(heap);
    return rc;
}

int channel_write_frame(channel *c, uint16_t type, uint8_t *frame, size_t payload_size)
{
    assert(c != NULL && type != 0 && frame != NULL);
    if (payload_size > channel_frame_max_payload())
        return -EMSGSIZE;
    channel_frame_write_header(frame, type, payload_size, 0);
    size_t wire = channel_frame_wire_size(payload_size);
    size_t used = CHANNEL_FRAME_HEADER_SIZE + payload_size;
    memset(frame + used, 0, wire - used);
    struct iovec whole = {.iov_base = frame, .iov_len = wire};
    return write_parts(c, &whole, 1, wire, NULL, 0);
}

void channel_shutdown(channel *c)
{
    if (c == NULL)
        return;
    bool on_io = plat_io_on_thread(c->io);

    plat_mutex_lock(&c->mu);
    if (c->shut) {
        /* Someone else is shutting down: from another thread, wait until it is done. */
        while (!on_io && (!c->shut_done || c->in_callback > 0))
            plat_cond_wait(&c->cond, &c->mu);
        plat_mutex_unlock(&c->mu);
        return;
    }
    c->shut = true;
    atomic_store(&c->stopped, true);
    plat_io_watch *w;
    bool owed = take_watch_locked(c, on_io, &w);
    tx_drop_all_locked(c);
    plat_mutex_unlock(&c->mu);
    remove_watch(c, w, owed);

    plat_mutex_lock(&c->mu);
    /* On the IO thread we may be inside a callback ourselves: never wait there. */
    while (!on_io && c->in_callback > 0)
        plat_cond_wait(&c->cond, &c->mu);
    close(c->fd);
    c->fd_closed = true;
    /* A receive loop that called us is still using its buffer; it frees it on return. */
    if (!on_io || !c->in_io_cb)
        rx_discard_locked(c);
    c->shut_done = true;
    plat_cond_broadcast(&c->cond);
    plat_mutex_unlock(&c->mu);
}

bool channel_on_its_loop(const channel *c)
{
    return plat_io_on_thread(c->io);
}

void channel_acquire(channel *c)
{
    assert(c != NULL);
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

void channel_release(channel *c)
{
    if (c == NULL)
        return;
    size_t old = atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel);
    assert(old > 0);
    if (old != 1)
        return;
    /* Last reference: no watch (it holds one), no callback, no other user. */
    assert(c->watch == NULL);
    tx_drop_all_locked(c);
    rx_discard_locked(c);
    if (!c->fd_closed)
        close(c->fd);
    plat_cond_destroy(&c->cond);
    plat_mutex_destroy(&c->mu);
    free(c);
}

bool channel_write_idle(channel *c)
{
    plat_mutex_lock(&c->mu);
    bool idle = c->tx_head == NULL || c->failed || c->shut || c->write_broken;
    plat_mutex_unlock(&c->mu);
    return idle;
}
