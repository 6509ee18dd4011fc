/*
 * The node controller. See node.h for roles and trust; this file is the
 * glue between the ports node, the channels and the embedder.
 *
 * Locking: one node lock guards the peer tables, the pending introductions,
 * the invitations' attachment lists and the roles. It is never held while
 * calling into the ports node or the delegate, or while running a user
 * callback. channel_write may be called with it held: it never blocks and
 * never calls back.
 *
 * Peers: every peer is on n->all from the moment its channel exists; it is
 * in n->peers (by name) once its name is known and it may be talked to. A
 * peer is dropped once (drop_peer), from any thread.
 */
#include "node/node.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "channel/channel.h"
#include "cmojo_limits.h"
#include "cmojo_wire.h"
#include "node/node_wire.h"
#include "platform/io.h"
#include "platform/lock.h"
#include "platform/random.h"
#include "ports/name_map.h"

/* One attachment name and the port behind it. */
typedef struct named_port {
    uint8_t name[CMOJO_MAX_INVITATION_NAME];
    uint32_t len;
    ports_port_ref port;
} named_port;

typedef enum peer_state {
    PEER_AWAIT_ACCEPT, /* we sent INVITE */
    PEER_AWAIT_INVITE, /* we accepted an invitation */
    PEER_CONNECTED,
    PEER_GONE,
} peer_state;

typedef struct peer peer;
struct peer {
    atomic_uint refs;
    node_controller *n;
    channel *ch;
    peer *next_all;
    /* Under n->lock. */
    peer_state state; /* set with set_state_locked */
    ports_name name;  /* never changes once the peer is connected */
    bool we_invited;  /* its errors go to fn */
    bool isolated;
    /*
     * Introduced by the broker. Its channel closing is not enough to fail
     * the ports routed to it: events it sent through the broker may still
     * be on their way. The broker's NODE_LOST comes after those (same
     * channel, in order), so both must be seen first. The word comes when
     * the node is gone, and also when it cut us off while it lives: it
     * tells the broker so (PEER_CUT, see drop_peer), and the broker tells us.
     */
    bool introduced;
    bool broker_says_lost;
    bool hung_up; /* its channel ended under us (EOF, read error): not our decision */
    /*
     * The broker introduced this node again after saying it was lost, while
     * this channel was still draining: the new channel's socket, connected
     * once this peer is dropped (see introduced()). -1 if none.
     */
    int reintro_fd;
    node_error_fn fn;
    uintptr_t ctx;
    named_port *attachments; /* we invited it: ports waiting for its MERGE_PORT */
    uint32_t num_attachments;
    node_invitation *inv; /* it invited us */
    uint8_t *conn_name;
    size_t conn_name_len;

    /* A copy of state, for a frame's first look without n->lock. */
    _Atomic(peer_state) live_state;

    /* IO loop only. */
    bool in_frame;     /* channel_frame_cb is running for it */
    bool release_owed; /* drop_peer left it the all-list's reference (see there) */
};

struct node_invitation {
    atomic_uint refs;
    bool isolated;
    /* Under the node lock. */
    bool invite_received;
    bool closed;
    named_port *early; /* extracted before INVITE: the port to merge (S) */
    uint32_t num_early, cap_early;
    named_port *offered; /* offered, not extracted yet: the user's end (B) */
    uint32_t num_offered;
};

/* A frame waiting for an introduction. */
typedef struct pending_frame {
    struct pending_frame *next;
    uint8_t *bytes;
    size_t len;
    int *fds;
    size_t num_fds;
} pending_frame;

typedef struct pending_intro {
    pending_frame *head, *tail;
    size_t count;
    /*
     * Not asked for: a channel to that node hung up and the broker's word
     * is due (see drop_peer). Frames for it wait here until NODE_LOST drops
     * them and fails their ports.
     */
    bool awaiting_lost;
} pending_intro;

struct node_controller {
    node_delegate d;
    ports_node *ports;
    plat_mutex lock;
    /* Written under lock; read without it by node_io. */
    _Atomic(plat_io *) io;
    name_map peers; /* name -> peer, connected ones */
    peer *all;
    name_map pending; /* name -> pending_intro */
    bool is_broker;
    peer *broker;
    node_default_error_fn default_error;
    bool shutting_down;

    /* A send buffer kept for the next event (see send_buf_get). */
    _Atomic(uint8_t *) spare;
};

static void forward_event(void *ctx, const ports_name *to, ports_event *ev);
static void broadcast_event(void *ctx, ports_event *ev);
static void port_status_changed(void *ctx, const ports_port_ref *ref);

/* ------------------------------------------------------------ helpers */

static void close_fds(int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

static void set_state_locked(peer *p, peer_state state)
{
    p->state = state;
    atomic_store_explicit(&p->live_state, state, memory_order_release);
}

static void peer_acquire(peer *p)
{
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
}

static void invitation_free(node_controller *n, node_invitation *inv);

static void peer_release(peer *p)
{
    if (!p || atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (p->reintro_fd >= 0)
        close(p->reintro_fd);
    channel_release(p->ch);
    free(p->attachments);
    free(p->conn_name);
    free(p);
}

static void invitation_release(node_controller *n, node_invitation *inv)
{
    if (inv && atomic_fetch_sub_explicit(&inv->refs, 1, memory_order_acq_rel) == 1)
        invitation_free(n, inv);
}

static void invitation_free(node_controller *n, node_invitation *inv)
{
    for (uint32_t i = 0; i < inv->num_early; i++) {
        ports_node_close_port(n->ports, &inv->early[i].port);
        ports_port_ref_release(&inv->early[i].port);
    }
    for (uint32_t i = 0; i < inv->num_offered; i++) {
        ports_node_close_port(n->ports, &inv->offered[i].port);
        ports_port_ref_release(&inv->offered[i].port);
    }
    free(inv->early);
    free(inv->offered);
    free(inv);
}

static const ports_name *self_name(node_controller *n)
{
    return ports_node_name(n->ports);
}

/* Writes a node message built in buf; fds are taken. Under n->lock or not. */
static int send_msg(peer *p, node_msg_type type, const uint8_t *buf, size_t len, int *fds,
                    size_t num_fds)
{
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    return channel_write(p->ch, (uint16_t)type, &iov, 1, fds, num_fds);
}

plat_io *node_io(node_controller *n)
{
    return atomic_load_explicit(&n->io, memory_order_acquire);
}

/* Runs fn(arg) in the IO loop (see platform/io.h), or here if there is none. */
static void run_on_io(node_controller *n, void (*fn)(void *), void *arg)
{
    plat_io *io = node_io(n);
    if (!io || plat_io_post(io, fn, arg) != 0)
        fn(arg);
}

typedef struct lost_task {
    node_controller *n;
    ports_name name;
} lost_task;

static void lost_task_run(void *arg)
{
    lost_task *t = arg;
    t->n->d.enter();
    ports_node_lost_connection_to_node(t->n->ports, &t->name);
    t->n->d.leave();
    free(t);
}

typedef struct drop_task {
    peer *p;
    const char *why;
} drop_task;

static void drop_peer(peer *p, const char *why, bool protocol);
/* Connects a peer the broker introduced (fd is ours) and sends what waited. */
static void introduced(node_controller *n, const ports_name *name, int fd);

static void drop_task_run(void *arg)
{
    drop_task *t = arg;
    node_controller *n = t->p->n;
    n->d.enter();
    drop_peer(t->p, t->why, false);
    n->d.leave();
    peer_release(t->p);
    free(t);
}

/*
 * Cuts the connection to p, later, on the IO thread: a frame for it could
 * not be written (too large), and the ports behind it cannot skip the event
 * it carried, so they fail rather than wait for it forever -- at both ends:
 * drop_peer sees to the far one.
 */
static void schedule_drop(peer *p, const char *why)
{
    drop_task *t = malloc(sizeof(*t));
    if (!t)
        abort(); /* see README: allocation failure inside a protocol step */
    peer_acquire(p);
    *t = (drop_task){.p = p, .why = why};
    run_on_io(p->n, drop_task_run, t);
}

/* Fails every port routed through `name`, later, on the IO thread. */
static void schedule_lost(node_controller *n, const ports_name *name)
{
    lost_task *t = malloc(sizeof(*t));
    if (!t)
        abort(); /* see README: allocation failure inside a protocol step */
    t->n = n;
    t->name = *name;
    run_on_io(n, lost_task_run, t);
}

static void pending_free(pending_intro *pi)
{
    pending_frame *f = pi->head;
    while (f) {
        pending_frame *next = f->next;
        close_fds(f->fds, f->num_fds);
        free(f->fds);
        free(f->bytes);
        free(f);
        f = next;
    }
    free(pi);
}

/* ------------------------------------------------------- dropping peers */

/* Everything drop_peer must do once the lock is released. */
typedef struct drop_work {
    peer **lost_to; /* broker: clients to tell NODE_LOST */
    size_t num_lost_to;
    pending_intro **failed; /* introductions that can no longer happen */
    ports_name *failed_names;
    size_t num_failed;
} drop_work;

static void fail_all_pending_locked(node_controller *n, drop_work *w)
{
    size_t count = n->pending.count;
    if (!count)
        return;
    w->failed = calloc(count, sizeof(*w->failed));
    w->failed_names = calloc(count, sizeof(*w->failed_names));
    if (!w->failed || !w->failed_names)
        abort();
    for (size_t i = 0; i < n->pending.cap; i++) {
        if (n->pending.slots[i].value) {
            w->failed_names[w->num_failed] = n->pending.slots[i].key;
            w->failed[w->num_failed++] = n->pending.slots[i].value;
        }
    }
    for (size_t i = 0; i < w->num_failed; i++)
        name_map_remove(&n->pending, &w->failed_names[i]);
}

/* Under n->lock, with a broker: tells it we cut `name` off (see drop_peer). */
static void send_peer_cut_locked(node_controller *n, const ports_name *name)
{
    uint8_t msg[NODE_NAME_WIRE_SIZE];
    node_wire_write_name(msg, name);
    send_msg(n->broker, NODE_MSG_PEER_CUT, msg, sizeof(msg), NULL, 0);
}

/*
 * Cuts p off (once): its channel stops, ports routed through it fail, the
 * broker tells the other clients, and the right error handler hears why.
 */
static void drop_peer(peer *p, const char *why, bool protocol)
{
    node_controller *n = p->n;
    drop_work w = {0};
    plat_mutex_lock(&n->lock);
    if (p->state == PEER_GONE) {
        plat_mutex_unlock(&n->lock);
        return;
    }
    bool had_name = p->state == PEER_CONNECTED;
    set_state_locked(p, PEER_GONE);
    /* Introduced, and the broker (still ours) has not said it is lost yet. */
    bool word_due =
        had_name && p->introduced && !p->broker_says_lost && n->broker && !n->shutting_down;
    /* Only a channel that hung up waits for the broker's word (struct peer). */
    bool await_broker = word_due && p->hung_up;
    bool fail_ports = had_name && !await_broker;
    if (word_due && !p->hung_up) {
        /*
         * We end it (a frame we could not send, a protocol violation) while
         * that node lives, as far as we know: it sees only the hang-up, and
         * would wait for the broker's word forever. So the broker hears it
         * from us, and tells it. Sent under the lock that removes the peer
         * from n->peers below: a request for a new introduction to it, which
         * can only follow that, follows this on the broker's channel too, so
         * the broker's NODE_LOST reaches the other node before the
         * introduction does (see introduced()).
         */
        send_peer_cut_locked(n, &p->name);
    }
    for (peer **pp = &n->all; *pp; pp = &(*pp)->next_all) {
        if (*pp == p) {
            *pp = p->next_all;
            break;
        }
    }
    bool in_map = had_name && name_map_get(&n->peers, &p->name) == p;
    if (in_map)
        name_map_remove(&n->peers, &p->name);
    if (await_broker && in_map && !name_map_get(&n->pending, &p->name) &&
        n->pending.count < CMOJO_MAX_PENDING_INTRODUCTIONS) {
        /*
         * Until the broker's word comes, do not ask it for this node again:
         * it might answer before it reads that node's PEER_CUT, and the
         * NODE_LOST that follows would land on the new channel, leaving the
         * routes of this one hanging. What we send the node meanwhile waits
         * (bounded, as for an introduction); NODE_LOST drops it and fails
         * its ports, as it does the ones routed here. (With the pending
         * table full, we go without, and may ask again.)
         */
        pending_intro *pi = calloc(1, sizeof(*pi));
        if (!pi || name_map_put(&n->pending, &p->name, pi) != 0)
            abort();
        pi->awaiting_lost = true;
    }
    int reintro_fd = p->reintro_fd;
    p->reintro_fd = -1;
    if (n->broker == p) {
        n->broker = NULL;
        fail_all_pending_locked(n, &w);
    }
    if (had_name && n->is_broker && !p->isolated && !n->shutting_down && n->peers.count) {
        w.lost_to = calloc(n->peers.count, sizeof(*w.lost_to));
        if (!w.lost_to)
            abort();
        for (size_t i = 0; i < n->peers.cap; i++) {
            peer *q = n->peers.slots[i].value;
            if (q && !q->isolated) {
                peer_acquire(q);
                w.lost_to[w.num_lost_to++] = q;
            }
        }
    }
    named_port *attachments = p->attachments;
    uint32_t num_attachments = p->num_attachments;
    p->attachments = NULL;
    p->num_attachments = 0;
    node_invitation *inv = p->inv;
    p->inv = NULL;
    bool we_invited = p->we_invited;
    node_error_fn fn = p->fn;
    uintptr_t ctx = p->ctx;
    node_default_error_fn default_error = n->default_error;
    plat_mutex_unlock(&n->lock);

    channel_shutdown(p->ch);
    n->d.enter();
    for (uint32_t i = 0; i < num_attachments; i++) {
        ports_node_close_port(n->ports, &attachments[i].port);
        ports_port_ref_release(&attachments[i].port);
    }
    free(attachments);
    if (inv) {
        /* Pipes extracted before the invitation came will never connect. */
        plat_mutex_lock(&n->lock);
        named_port *early = inv->early;
        uint32_t num_early = inv->num_early;
        inv->early = NULL;
        inv->num_early = inv->cap_early = 0;
        plat_mutex_unlock(&n->lock);
        for (uint32_t i = 0; i < num_early; i++) {
            ports_node_close_port(n->ports, &early[i].port);
            ports_port_ref_release(&early[i].port);
        }
        free(early);
        invitation_release(n, inv);
    }
    if (fail_ports)
        ports_node_lost_connection_to_node(n->ports, &p->name);
    for (size_t i = 0; i < w.num_failed; i++) {
        pending_free(w.failed[i]);
        ports_node_lost_connection_to_node(n->ports, &w.failed_names[i]);
    }
    n->d.leave();
    free(w.failed);
    free(w.failed_names);

    uint8_t buf[NODE_NAME_WIRE_SIZE];
    node_wire_write_name(buf, &p->name);
    for (size_t i = 0; i < w.num_lost_to; i++) {
        send_msg(w.lost_to[i], NODE_MSG_NODE_LOST, buf, sizeof(buf), NULL, 0);
        peer_release(w.lost_to[i]);
    }
    free(w.lost_to);

    if (we_invited && fn)
        fn(ctx, why, strlen(why), true);
    else if (protocol && default_error)
        default_error(why, strlen(why), true);
    /* The old channel's routes have failed: the new one starts clean. */
    if (reintro_fd >= 0)
        introduced(n, &p->name, reintro_fd);
    if (in_map)
        peer_release(p); /* the name map's reference */
    /*
     * The all-list's. A frame callback of p's takes no reference of its own:
     * a drop from another thread waits for it (channel_shutdown above), and
     * one from inside it leaves this last drop to its end. That holds because
     * this, which runs once per peer (PEER_GONE), is the only place that shuts
     * a peer's channel down or drops these two references.
     */
    if (channel_on_its_loop(p->ch) && p->in_frame)
        p->release_owed = true;
    else
        peer_release(p);
}

/* ------------------------------------------------------ serialising events */

/*
 * Send buffers. An event is serialised into a buffer that lives only until
 * channel_write returns (the channel copies what it cannot send at once).
 * Allocating and freeing one per event is cheap for small events; for large
 * ones the allocator hands the memory back to the kernel and faults it in
 * again for the next, a cost that grows with the size. So the node keeps the
 * last buffer it used (one, whatever the number of sending threads: taking
 * and returning it are single atomic exchanges) for the next event that
 * fits. While it is kept, its first bytes hold its capacity. Buffers up to
 * NODE_SPARE_MAX are kept; larger ones go back to the allocator.
 */
#define NODE_SPARE_MAX (256u * 1024u + 4096u)
#define NODE_SEND_BUF_MIN 256u

static uint8_t *send_buf_get(node_controller *n, size_t len, size_t *cap)
{
    uint8_t *buf = atomic_exchange_explicit(&n->spare, NULL, memory_order_acquire);
    if (buf) {
        size_t have;
        memcpy(&have, buf, sizeof(have));
        if (have >= len) {
            *cap = have;
            return buf;
        }
        free(buf);
    }
    /* Rounded up, so sizes that vary a little reuse one buffer. */
    size_t want = len < NODE_SEND_BUF_MIN ? NODE_SEND_BUF_MIN : (len + 4095u) & ~(size_t)4095u;
    if (want < len)
        abort(); /* wrapped: beyond any event the ports layer makes */
    buf = malloc(want);
    if (!buf)
        abort();
    *cap = want;
    return buf;
}

/* Keeps buf (capacity cap) as the spare, or frees it. NULL is fine. */
static void send_buf_put(node_controller *n, uint8_t *buf, size_t cap)
{
    if (!buf)
        return;
    if (cap > NODE_SPARE_MAX) {
        free(buf);
        return;
    }
    memcpy(buf, &cap, sizeof(cap));
    /* acq_rel: the buffer it displaces may have been written by another thread. */
    free(atomic_exchange_explicit(&n->spare, buf, memory_order_acq_rel));
}

/*
 * Messages up to this many bytes are copied into the send buffer behind
 * their event, so that the frame leaves in one piece (channel_write_frame:
 * one sendto, which costs the kernel less than a sendmsg of several
 * pieces). Larger ones leave from where they are: in one piece too when the
 * message has room around its bytes for the frame
 * (payload_serialize_in_place), else as an iovec. (Copying them would cost
 * more than the call saves.)
 */
#define NODE_GATHER_MAX (2u * 1024u)

/*
 * An event laid out for its channel. The frame's payload starts
 * CHANNEL_WRITE_FRAME_ROOM bytes after `frame`: `len` bytes there, then
 * `tail_len` bytes at `tail` (which live as long as the event). `frame` is
 * `buf` (a send buffer of capacity `cap`, with room behind for the whole
 * frame and its padding), or lies inside the payload (buf NULL, tail_len 0).
 */
typedef struct out_frame {
    uint8_t *buf;
    size_t cap;
    uint8_t *frame;
    size_t len;
    const void *tail;
    size_t tail_len;
    int *fds;
    size_t num_fds;
} out_frame;

/*
 * The frame for an event: the ports event, then (user messages) the
 * payload's envelope; its fds go to o->fds. ev stays the caller's. False
 * if the payload refuses to leave.
 */
static bool serialize_event(node_controller *n, ports_event *ev, out_frame *o)
{
    size_t head = ports_event_serialized_size(ev);
    size_t body = 0, nfds = 0;
    ports_payload *payload = ev->type == PORTS_EVENT_USER_MESSAGE ? ev->u.user.payload : NULL;
    if (payload && n->d.payload_measure(payload, &body, &nfds) != 0)
        return false;
    *o = (out_frame){.num_fds = nfds};
    if (payload && !nfds && body > NODE_GATHER_MAX && n->d.payload_serialize_in_place) {
        size_t envelope_len;
        uint8_t *frame = n->d.payload_serialize_in_place(
            payload, CHANNEL_WRITE_FRAME_ROOM + head, CHANNEL_WRITE_FRAME_TAIL_ROOM, &envelope_len);
        if (frame) {
            if (envelope_len != body)
                abort(); /* a codec that contradicts its own measure */
            ports_event_serialize(ev, frame + CHANNEL_WRITE_FRAME_ROOM);
            o->frame = frame;
            o->len = head + body;
            return true;
        }
    }
    o->buf = send_buf_get(n, CHANNEL_WRITE_FRAME_ROOM + head + body + CHANNEL_WRITE_FRAME_TAIL_ROOM,
                          &o->cap);
    o->frame = o->buf;
    uint8_t *out = o->buf + CHANNEL_WRITE_FRAME_ROOM;
    o->fds = nfds ? malloc(nfds * sizeof(*o->fds)) : NULL;
    if (nfds && !o->fds)
        abort();
    ports_event_serialize(ev, out);
    if (payload && n->d.payload_serialize_head && (body > NODE_GATHER_MAX || nfds)) {
        n->d.payload_serialize_head(payload, out + head, o->fds, &o->tail, &o->tail_len);
        if (o->tail_len > body)
            abort(); /* a codec that contradicts its own measure */
    } else if (payload) {
        n->d.payload_serialize(payload, out + head, o->fds);
    }
    o->len = head + body - o->tail_len;
    return true;
}

/* ------------------------------------------------------- ports delegate */

static void forward_event(void *ctx, const ports_name *to, ports_event *ev)
{
    node_controller *n = ctx;
    if (ports_name_eq(to, self_name(n))) {
        ports_node_accept_event(n->ports, to, ev);
        return;
    }
    out_frame o;
    if (!serialize_event(n, ev, &o)) {
        ports_event_destroy(ev);
        /* The ports behind the event cannot skip it: they fail, loudly, at both ends. */
        plat_mutex_lock(&n->lock);
        peer *p = name_map_get(&n->peers, to);
        if (p)
            peer_acquire(p);
        plat_mutex_unlock(&n->lock);
        if (p)
            schedule_drop(p, "an event that cannot leave this process");
        else
            schedule_lost(n, to);
        peer_release(p);
        return;
    }

    plat_mutex_lock(&n->lock);
    peer *p = name_map_get(&n->peers, to);
    if (p) {
        peer_acquire(p);
        plat_mutex_unlock(&n->lock);
        int rc;
        if (!o.tail_len && !o.num_fds) {
            rc = channel_write_frame(p->ch, NODE_MSG_EVENT, o.frame, o.len);
        } else {
            /* The message bytes go from where they are (the channel copies what waits). */
            struct iovec iov[2] = {{o.frame + CHANNEL_WRITE_FRAME_ROOM, o.len},
                                   {(void *)o.tail, o.tail_len}};
            rc = channel_write(p->ch, NODE_MSG_EVENT, iov, o.tail_len ? 2 : 1, o.fds, o.num_fds);
        }
        if (rc == -EMSGSIZE)
            schedule_drop(p, "an event too large for one frame");
        ports_event_destroy(ev);
        send_buf_put(n, o.buf, o.cap);
        free(o.fds);
        peer_release(p);
        return;
    }
    /* Whatever happens next, the frame is whole at the start of a buffer of ours. */
    size_t len = o.len + o.tail_len;
    uint8_t *buf = o.buf;
    if (!buf) {
        buf = malloc(len);
        if (!buf)
            abort();
        o.cap = len;
    }
    memmove(buf, o.frame + CHANNEL_WRITE_FRAME_ROOM, o.len);
    if (o.tail_len)
        memcpy(buf + o.len, o.tail, o.tail_len);
    ports_event_destroy(ev);
    int *fds = o.fds;
    size_t num_fds = o.num_fds;
    if (n->broker && !n->shutting_down) {
        /* Ask the broker; hold the frame until it answers. */
        pending_intro *pi = name_map_get(&n->pending, to);
        bool ask = false;
        if (!pi && n->pending.count < CMOJO_MAX_PENDING_INTRODUCTIONS) {
            pi = calloc(1, sizeof(*pi));
            if (!pi || name_map_put(&n->pending, to, pi) != 0)
                abort();
            ask = true;
        }
        pending_frame *f = NULL;
        if (pi && pi->count < CMOJO_MAX_PENDING_EVENTS_PER_PEER) {
            f = malloc(sizeof(*f));
            if (!f)
                abort();
            *f = (pending_frame){.bytes = buf, .len = len, .fds = fds, .num_fds = num_fds};
            if (pi->tail)
                pi->tail->next = f;
            else
                pi->head = f;
            pi->tail = f;
            pi->count++;
        }
        if (ask) {
            uint8_t req[NODE_NAME_WIRE_SIZE];
            node_wire_write_name(req, to);
            send_msg(n->broker, NODE_MSG_REQUEST_INTRO, req, sizeof(req), NULL, 0);
        }
        plat_mutex_unlock(&n->lock);
        if (f)
            return;
        /* Beyond the bounds: fail the ports rather than buffer without limit. */
    } else {
        plat_mutex_unlock(&n->lock);
    }
    close_fds(fds, num_fds);
    free(fds);
    send_buf_put(n, buf, o.cap);
    schedule_lost(n, to);
}

static void broadcast_event(void *ctx, ports_event *ev)
{
    node_controller *n = ctx;
    /* BROADCAST = origin name + event; the same bytes go to every peer. */
    size_t ev_size = ports_event_serialized_size(ev);
    uint8_t *buf = malloc(NODE_NAME_WIRE_SIZE + ev_size);
    if (!buf)
        abort();
    node_wire_write_name(buf, self_name(n));
    ports_event_serialize(ev, buf + NODE_NAME_WIRE_SIZE);

    plat_mutex_lock(&n->lock);
    for (peer *p = n->all; p; p = p->next_all) {
        if (p->state != PEER_CONNECTED)
            continue;
        /* A client tells only its broker (which relays) and isolated peers. */
        if (!n->is_broker && !p->isolated && p != n->broker)
            continue;
        send_msg(p, NODE_MSG_BROADCAST, buf, NODE_NAME_WIRE_SIZE + ev_size, NULL, 0);
    }
    plat_mutex_unlock(&n->lock);
    free(buf);
    ports_node_accept_event(n->ports, self_name(n), ev);
}

static void port_status_changed(void *ctx, const ports_port_ref *ref)
{
    node_controller *n = ctx;
    n->d.port_status_changed(ref);
}

static void port_status_seen(void *ctx, const ports_port_ref *ref, void *data,
                             const ports_port_status *status)
{
    node_controller *n = ctx;
    n->d.port_status_seen(ref, data, status);
}

/* ----------------------------------------------------------- frames in */

/*
 * Bytes of a user message's ports event (ports/event.h: header, fixed part,
 * then per carried port a descriptor and a name), the envelope being the
 * rest; 0 when buf is no user message or is too short for what its port
 * count implies. Read from untrusted bytes: only a hint for on_event, which
 * then hands the parser exactly this prefix and checks what it made of it.
 */
#define USER_EVENT_PORT_WIRE_SIZE (PORTS_DESCRIPTOR_SIZE + NODE_NAME_WIRE_SIZE)
static size_t user_event_size(const uint8_t *buf, size_t len)
{
    size_t fixed = PORTS_EVENT_HEADER_SIZE + PORTS_USER_MESSAGE_FIXED_SIZE;
    if (len < fixed || wire_load_u32(buf) != PORTS_EVENT_USER_MESSAGE)
        return 0;
    uint32_t num_ports = wire_load_u32(buf + PORTS_EVENT_HEADER_SIZE + 8);
    if (num_ports > CMOJO_MAX_PORTS_PER_MESSAGE)
        return 0;
    uint64_t size = fixed + (uint64_t)num_ports * USER_EVENT_PORT_WIRE_SIZE;
    return size <= len ? (size_t)size : 0;
}

static void on_event(peer *p, const uint8_t *buf, size_t len, int *fds, size_t num_fds,
                     const ports_name *from, void **block)
{
    node_controller *n = p->n;
    ports_event storage, *ev;
    /*
     * A user message's envelope goes straight from the receive buffer to
     * the embedder's parser: the ports parser sees only the event in front
     * of it, so the payload is copied at most once (into the message; not
     * at all when the parser keeps the channel's block), not twice. An
     * event without ports is parsed here and then moved into the payload.
     */
    size_t event_len = user_event_size(buf, len);
    if (ports_event_parse_into(buf, event_len ? event_len : len, &storage, &ev) != PORTS_OK) {
        close_fds(fds, num_fds);
        drop_peer(p, "malformed ports event", true);
        return;
    }
    if (ev->type == PORTS_EVENT_USER_MESSAGE) {
        ports_payload *payload;
        const char *why = "bad message envelope";
        /* The parser took event_len bytes as the whole event, payload aside. */
        assert(event_len != 0 && ports_event_serialized_size(ev) == event_len);
        if (n->d.payload_parse(from, buf + event_len, len - event_len, ev->u.user.num_ports, fds,
                               num_fds, block, &payload, &why) != 0) {
            ports_event_destroy(ev);
            drop_peer(p, why, true);
            return;
        }
        ports_payload_destroy(ev->u.user.payload); /* the empty bytes payload of the prefix */
        ev->u.user.payload = payload;
        if (ev == &storage) {
            ev = n->d.payload_event(payload);
            *ev = storage;
        }
    } else if (num_fds) {
        close_fds(fds, num_fds);
        ports_event_destroy(ev);
        drop_peer(p, "fds on an event that carries none", true);
        return;
    }
    n->d.enter();
    int rv = ports_node_accept_event(n->ports, from, ev);
    n->d.leave();
    if (rv == PORTS_ERROR_BAD_PEER)
        drop_peer(p, "ports protocol violation", true);
}

static void on_broadcast(peer *p, const uint8_t *buf, size_t len, int *fds, size_t num_fds)
{
    node_controller *n = p->n;
    if (num_fds || len < NODE_NAME_WIRE_SIZE) {
        close_fds(fds, num_fds);
        drop_peer(p, "malformed BROADCAST", true);
        return;
    }
    ports_name origin = wire_load_name(buf);
    plat_mutex_lock(&n->lock);
    bool relay = n->is_broker && !p->isolated;
    bool trusted = p == n->broker; /* the broker speaks for others */
    plat_mutex_unlock(&n->lock);
    if (!trusted && !ports_name_eq(&origin, &p->name)) {
        drop_peer(p, "BROADCAST on behalf of another node", true);
        return;
    }
    ports_event *ev;
    if (ports_event_parse(buf + NODE_NAME_WIRE_SIZE, len - NODE_NAME_WIRE_SIZE, &ev) != PORTS_OK ||
        ev->type != PORTS_EVENT_OBSERVE_PROXY || ports_name_is_valid(&ev->port_name)) {
        if (ev)
            ports_event_destroy(ev);
        drop_peer(p, "BROADCAST of something other than a dead proxy", true);
        return;
    }
    if (relay) {
        plat_mutex_lock(&n->lock);
        for (peer *q = n->all; q; q = q->next_all)
            if (q != p && q->state == PEER_CONNECTED && !q->isolated)
                send_msg(q, NODE_MSG_BROADCAST, buf, len, NULL, 0);
        plat_mutex_unlock(&n->lock);
    }
    n->d.enter();
    int rv = ports_node_accept_event(n->ports, &origin, ev);
    n->d.leave();
    if (rv == PORTS_ERROR_BAD_PEER)
        drop_peer(p, "ports protocol violation in a broadcast", true);
}

static void on_invite(peer *p, const node_wire_msg *m)
{
    node_controller *n = p->n;
    bool isolated = m->flags & NODE_INVITE_ISOLATED;
    const char *why = NULL;
    named_port *offered = calloc(m->num_attachments ? m->num_attachments : 1, sizeof(*offered));
    ports_port_ref *to_close = calloc(m->num_attachments + 1, sizeof(*to_close));
    if (!offered || !to_close)
        abort();
    /*
     * All under the lock, so that an extraction on another thread sees the
     * invitation either before (and adds to the early list, matched here)
     * or after (and finds its pipe offered). Ports calls made here never
     * call back into the node; closing waits until the lock is released.
     */
    plat_mutex_lock(&n->lock);
    if (isolated != p->isolated)
        why = "INVITE isolation does not match the acceptance";
    else if (ports_name_eq(&m->name, self_name(n)) || name_map_get(&n->peers, &m->name))
        why = "INVITE from a node name already in use";
    else if (!isolated && !ports_name_eq(&m->broker, &m->name))
        why = "INVITE from a process that is not its graph's broker";
    else if (!isolated && (n->broker || n->is_broker))
        why = "second broker";
    if (why) {
        plat_mutex_unlock(&n->lock);
        free(offered);
        free(to_close);
        drop_peer(p, why, true);
        return;
    }
    p->name = m->name;
    set_state_locked(p, PEER_CONNECTED);
    if (name_map_put(&n->peers, &p->name, p) != 0)
        abort();
    peer_acquire(p);
    if (!isolated)
        n->broker = p;
    node_invitation *inv = p->inv;
    uint8_t acc[NODE_NAME_WIRE_SIZE];
    node_wire_write_name(acc, self_name(n));
    send_msg(p, NODE_MSG_ACCEPT, acc, sizeof(acc), NULL, 0);

    /* Match what was extracted early with what is offered. */
    uint32_t num_offered = 0, num_close = 0;
    size_t pos = 0;
    node_wire_name name;
    uint8_t msg[NODE_MERGE_PORT_FIXED_SIZE + CMOJO_MAX_INVITATION_NAME];
    while (node_wire_next_name(m, &pos, &name)) {
        ports_port_ref merge = {0};
        for (uint32_t i = 0; i < inv->num_early; i++) {
            if (inv->early[i].port.port && inv->early[i].len == name.len &&
                memcmp(inv->early[i].name, name.bytes, name.len) == 0) {
                merge = inv->early[i].port;
                inv->early[i].port = (ports_port_ref){0};
                break;
            }
        }
        if (!merge.port) {
            ports_port_ref b;
            if (ports_node_create_port_pair(n->ports, &b, &merge) != PORTS_OK)
                abort();
            if (inv->closed) {
                to_close[num_close++] = b;
            } else {
                named_port *o = &offered[num_offered++];
                memcpy(o->name, name.bytes, name.len);
                o->len = name.len;
                o->port = b;
            }
        }
        ports_node_allow_merge(n->ports, &merge);
        size_t len = node_wire_write_merge_port(msg, &merge.name, name.bytes, name.len);
        send_msg(p, NODE_MSG_MERGE_PORT, msg, len, NULL, 0);
        ports_port_ref_release(&merge);
    }
    named_port *early = inv->early;
    uint32_t num_early = inv->num_early;
    inv->early = NULL;
    inv->num_early = inv->cap_early = 0;
    inv->offered = offered;
    inv->num_offered = num_offered;
    inv->invite_received = true;
    plat_mutex_unlock(&n->lock);

    /* Extracted, but the inviter has no such pipe (or it was closed): broken. */
    n->d.enter();
    for (uint32_t i = 0; i < num_early; i++) {
        if (early[i].port.port) {
            ports_node_close_port(n->ports, &early[i].port);
            ports_port_ref_release(&early[i].port);
        }
    }
    for (uint32_t i = 0; i < num_close; i++) {
        ports_node_close_port(n->ports, &to_close[i]);
        ports_port_ref_release(&to_close[i]);
    }
    n->d.leave();
    free(early);
    free(to_close);
}

static void on_accept(peer *p, const node_wire_msg *m)
{
    node_controller *n = p->n;
    plat_mutex_lock(&n->lock);
    if (ports_name_eq(&m->name, self_name(n)) || name_map_get(&n->peers, &m->name)) {
        plat_mutex_unlock(&n->lock);
        drop_peer(p, "ACCEPT with a node name already in use", true);
        return;
    }
    p->name = m->name;
    set_state_locked(p, PEER_CONNECTED);
    if (name_map_put(&n->peers, &p->name, p) != 0)
        abort();
    peer_acquire(p);
    plat_mutex_unlock(&n->lock);
}

static void on_merge_port(peer *p, const node_wire_msg *m)
{
    node_controller *n = p->n;
    ports_port_ref reserved = {0};
    plat_mutex_lock(&n->lock);
    for (uint32_t i = 0; i < p->num_attachments; i++) {
        named_port *a = &p->attachments[i];
        if (a->len == m->text.len && memcmp(a->name, m->text.bytes, a->len) == 0) {
            reserved = a->port;
            p->attachments[i] = p->attachments[--p->num_attachments];
            break;
        }
    }
    plat_mutex_unlock(&n->lock);
    if (!reserved.port) {
        drop_peer(p, "MERGE_PORT for an attachment that was not offered", true);
        return;
    }
    n->d.enter();
    if (ports_node_merge_ports(n->ports, &reserved, &p->name, &m->name) != PORTS_OK)
        ports_node_close_port(n->ports, &reserved);
    n->d.leave();
    ports_port_ref_release(&reserved);
}

static void on_request_intro(peer *p, const node_wire_msg *m)
{
    node_controller *n = p->n;
    uint8_t msg[NODE_INTRODUCE_SIZE];
    plat_mutex_lock(&n->lock);
    if (!n->is_broker || p->isolated || ports_name_eq(&m->name, &p->name) ||
        ports_name_eq(&m->name, self_name(n))) {
        plat_mutex_unlock(&n->lock);
        drop_peer(p, "REQUEST_INTRO that no broker could answer", true);
        return;
    }
    peer *q = name_map_get(&n->peers, &m->name);
    int sv[2];
    if (q && !q->isolated && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0) {
        node_wire_write_introduce(msg, &p->name, true);
        send_msg(q, NODE_MSG_INTRODUCE, msg, sizeof(msg), &sv[1], 1);
        node_wire_write_introduce(msg, &m->name, true);
        send_msg(p, NODE_MSG_INTRODUCE, msg, sizeof(msg), &sv[0], 1);
    } else {
        node_wire_write_introduce(msg, &m->name, false);
        send_msg(p, NODE_MSG_INTRODUCE, msg, sizeof(msg), NULL, 0);
    }
    plat_mutex_unlock(&n->lock);
}

static void on_introduce(peer *p, const node_wire_msg *m, int *fds, size_t num_fds)
{
    node_controller *n = p->n;
    plat_mutex_lock(&n->lock);
    bool from_broker = p == n->broker;
    plat_mutex_unlock(&n->lock);
    if (!from_broker || ports_name_eq(&m->name, self_name(n))) {
        close_fds(fds, num_fds);
        drop_peer(p, "INTRODUCE from a node that is not the broker", true);
        return;
    }
    if (m->ok) {
        introduced(n, &m->name, fds[0]);
        return;
    }
    plat_mutex_lock(&n->lock);
    pending_intro *pi = name_map_remove(&n->pending, &m->name);
    plat_mutex_unlock(&n->lock);
    if (pi)
        pending_free(pi);
    n->d.enter();
    ports_node_lost_connection_to_node(n->ports, &m->name);
    n->d.leave();
}

static void on_node_lost(peer *p, const node_wire_msg *m)
{
    node_controller *n = p->n;
    plat_mutex_lock(&n->lock);
    bool from_broker = p == n->broker;
    peer *q = from_broker ? name_map_get(&n->peers, &m->name) : NULL;
    if (q)
        q->broker_says_lost = true; /* fail its ports once its own channel has drained */
    pending_intro *pi = from_broker ? name_map_remove(&n->pending, &m->name) : NULL;
    plat_mutex_unlock(&n->lock);
    if (!from_broker) {
        drop_peer(p, "NODE_LOST from a node that is not the broker", true);
        return;
    }
    if (pi)
        pending_free(pi);
    if (!q) {
        n->d.enter();
        ports_node_lost_connection_to_node(n->ports, &m->name);
        n->d.leave();
    }
}

/*
 * A client cut its connection to another, which it says is alive (see
 * drop_peer): tell that one the client is lost to it, so that it fails its
 * routes to the client once their channel has drained. The lost name is the
 * sender's, as its channel knows it, never one from the message: a client
 * can only make another node give up the routes to the client itself, which
 * it could do anyway by closing its ends, or by sending that node one
 * malformed frame. A name no longer connected (it went meanwhile) is
 * nothing to tell.
 */
static void on_peer_cut(peer *p, const node_wire_msg *m)
{
    node_controller *n = p->n;
    const char *why = NULL;
    plat_mutex_lock(&n->lock);
    if (!n->is_broker || p->isolated)
        why = "PEER_CUT sent to a node that is not the broker";
    else if (ports_name_eq(&m->name, &p->name) || ports_name_eq(&m->name, self_name(n)))
        why = "PEER_CUT naming its sender or the broker";
    peer *q = why ? NULL : name_map_get(&n->peers, &m->name);
    if (q && !q->isolated) { /* an isolated peer is never introduced, nor told of losses */
        uint8_t msg[NODE_NAME_WIRE_SIZE];
        node_wire_write_name(msg, &p->name);
        send_msg(q, NODE_MSG_NODE_LOST, msg, sizeof(msg), NULL, 0);
    }
    plat_mutex_unlock(&n->lock);
    if (why)
        drop_peer(p, why, true);
}

static void on_bad_message(peer *p, const node_wire_msg *m)
{
    node_controller *n = p->n;
    plat_mutex_lock(&n->lock);
    bool ok = n->is_broker && !p->isolated;
    peer *q = ok ? name_map_get(&n->peers, &m->name) : NULL;
    node_error_fn fn = q && q->we_invited ? q->fn : NULL;
    uintptr_t ctx = q ? q->ctx : 0;
    plat_mutex_unlock(&n->lock);
    if (!ok) {
        drop_peer(p, "BAD_MESSAGE sent to a node that is not the broker", true);
        return;
    }
    if (fn)
        fn(ctx, (const char *)m->text.bytes, m->text.len, false);
}

static void channel_frame_cb(void *ctx, uint16_t type, const uint8_t *payload, size_t len, int *fds,
                             size_t num_fds, void **block)
{
    peer *p = ctx;
    node_controller *n = p->n;
    p->in_frame = true; /* dropping it inside must not free it under us (see drop_peer) */
    peer_state state = atomic_load_explicit(&p->live_state, memory_order_acquire);
    ports_name from;
    if (state == PEER_CONNECTED) {
        /*
         * A connected peer's name is fixed; it was written before the state
         * said so, and before the channel started. A drop racing this frame
         * is no different from one that comes just after the look.
         */
        from = p->name;
    } else {
        plat_mutex_lock(&n->lock);
        state = p->state;
        from = p->name;
        plat_mutex_unlock(&n->lock);
    }

    if (state == PEER_CONNECTED && type == NODE_MSG_EVENT) {
        on_event(p, payload, len, fds, num_fds, &from, block);
        goto out;
    }
    if (state == PEER_CONNECTED && type == NODE_MSG_BROADCAST) {
        on_broadcast(p, payload, len, fds, num_fds);
        goto out;
    }
    node_wire_msg m;
    const char *why;
    if (type == NODE_MSG_EVENT || type == NODE_MSG_BROADCAST) {
        why = "event before the handshake";
    } else if (node_wire_parse(type, payload, len, num_fds, &m, &why) == 0) {
        why = "node message out of place";
        switch (state) {
        case PEER_AWAIT_ACCEPT:
            if (type == NODE_MSG_ACCEPT) {
                on_accept(p, &m);
                goto out;
            }
            break;
        case PEER_AWAIT_INVITE:
            if (type == NODE_MSG_INVITE) {
                on_invite(p, &m);
                goto out;
            }
            break;
        case PEER_CONNECTED:
            switch (type) {
            case NODE_MSG_MERGE_PORT:
                if (!p->we_invited)
                    break;
                on_merge_port(p, &m);
                goto out;
            case NODE_MSG_REQUEST_INTRO:
                on_request_intro(p, &m);
                goto out;
            case NODE_MSG_INTRODUCE:
                on_introduce(p, &m, fds, num_fds);
                goto out;
            case NODE_MSG_NODE_LOST:
                on_node_lost(p, &m);
                goto out;
            case NODE_MSG_BAD_MESSAGE:
                on_bad_message(p, &m);
                goto out;
            case NODE_MSG_PEER_CUT:
                on_peer_cut(p, &m);
                goto out;
            default:
                break;
            }
            break;
        case PEER_GONE:
            close_fds(fds, num_fds);
            goto out;
        }
    }
    close_fds(fds, num_fds);
    drop_peer(p, why, true);
out:
    p->in_frame = false;
    if (p->release_owed)
        peer_release(p); /* the last use of p */
}

static void channel_error_cb(void *ctx, int protocol, const char *why)
{
    peer *p = ctx;
    node_controller *n = p->n;
    peer_acquire(p);
    if (!protocol) {
        plat_mutex_lock(&n->lock);
        p->hung_up = true;
        plat_mutex_unlock(&n->lock);
    }
    drop_peer(p, why, protocol != 0);
    peer_release(p);
}

/* ---------------------------------------------------------- peers */

static int ensure_io_locked(node_controller *n)
{
    if (atomic_load_explicit(&n->io, memory_order_relaxed))
        return 0;
    plat_io *io;
    int rc = plat_io_start(&io);
    if (rc == 0)
        atomic_store_explicit(&n->io, io, memory_order_release);
    return rc;
}

/*
 * A new peer on socket fd (the node's from here, also on failure), on the
 * all-list and started. Under n->lock; *out has the tables' reference.
 */
static int add_peer_locked(node_controller *n, int fd, peer_state state, peer **out)
{
    if (n->shutting_down) {
        close(fd);
        return -ESHUTDOWN;
    }
    int rv = ensure_io_locked(n);
    if (rv != 0) {
        close(fd);
        return rv;
    }
    peer *p = calloc(1, sizeof(*p));
    if (!p) {
        close(fd);
        return -ENOMEM;
    }
    atomic_init(&p->refs, 1);
    p->n = n;
    p->reintro_fd = -1;
    set_state_locked(p, state);
    channel_delegate d = {.ctx = p, .on_frame = channel_frame_cb, .on_error = channel_error_cb};
    rv = channel_create(fd, atomic_load_explicit(&n->io, memory_order_relaxed), &d, &p->ch);
    if (rv != 0) {
        free(p);
        return rv;
    }
    p->next_all = n->all;
    n->all = p;
    *out = p;
    return 0;
}

static void introduced(node_controller *n, const ports_name *name, int fd)
{
    plat_mutex_lock(&n->lock);
    peer *old = name_map_get(&n->peers, name);
    if (old && old->broker_says_lost && old->reintro_fd < 0) {
        /*
         * The broker said that node is lost to us (it cut us off), then
         * introduced it again (it needs us anew), before this old channel
         * drained. Its failure, by node name, must come before anything
         * travels on the new one: drop_peer connects it then.
         */
        old->reintro_fd = fd;
        plat_mutex_unlock(&n->lock);
        return;
    }
    if (old) {
        /* Both sides asked at once; the first channel stays. */
        plat_mutex_unlock(&n->lock);
        close(fd);
        return;
    }
    peer *p;
    if (add_peer_locked(n, fd, PEER_CONNECTED, &p) != 0) {
        pending_intro *pi = name_map_remove(&n->pending, name);
        /* The other node has its end, and will see it hang up (see drop_peer). */
        if (n->broker && !n->shutting_down)
            send_peer_cut_locked(n, name);
        plat_mutex_unlock(&n->lock);
        if (pi)
            pending_free(pi);
        schedule_lost(n, name);
        return;
    }
    p->name = *name;
    p->introduced = true;
    if (name_map_put(&n->peers, name, p) != 0)
        abort();
    peer_acquire(p);
    pending_intro *pi = name_map_remove(&n->pending, name);
    /* What waited goes first, before any event sent after this unlock. */
    bool too_large = false;
    for (pending_frame *f = pi ? pi->head : NULL; f; f = f->next) {
        struct iovec iov = {.iov_base = f->bytes, .iov_len = f->len};
        if (channel_write(p->ch, NODE_MSG_EVENT, &iov, 1, f->fds, f->num_fds) == -EMSGSIZE)
            too_large = true;
        f->num_fds = 0;
    }
    int rv = channel_start(p->ch);
    peer_acquire(p); /* ours, for what follows the unlock */
    plat_mutex_unlock(&n->lock);
    if (pi)
        pending_free(pi);
    if (rv != 0)
        drop_peer(p, "could not start the channel", false);
    else if (too_large)
        schedule_drop(p, "an event too large for one frame");
    peer_release(p);
}

/* ------------------------------------------------------------- public */

int node_create(const node_delegate *delegate, node_controller **out)
{
    node_controller *n = calloc(1, sizeof(*n));
    if (!n)
        return -ENOMEM;
    n->d = *delegate;
    plat_mutex_init(&n->lock);
    atomic_init(&n->spare, NULL);
    uint64_t keys[4];
    ports_name name;
    if (plat_random_bytes(keys, sizeof(keys)) != 0 || plat_random_bytes(&name, sizeof(name)) != 0)
        goto fail;
    if (!ports_name_is_valid(&name))
        name.v2 = 1;
    name_map_init(&n->peers, keys[0], keys[1]);
    name_map_init(&n->pending, keys[2], keys[3]);
    ports_delegate pd = {
        .ctx = n,
        .forward_event = forward_event,
        .broadcast_event = broadcast_event,
        .port_status_changed = port_status_changed,
        .acquire_user_data = n->d.acquire_user_data,
        .port_status_seen = n->d.port_status_seen ? port_status_seen : NULL,
    };
    if (ports_node_create(&name, &pd, &n->ports) != PORTS_OK)
        goto fail;
    *out = n;
    return 0;
fail:
    plat_mutex_destroy(&n->lock);
    free(n);
    return -ENOMEM;
}

ports_node *node_ports(node_controller *n)
{
    return n->ports;
}

/*
 * Before shutting down: ports still being removed (proxies, closed ports
 * waiting for their last acks), events waiting for an introduction, and
 * frames in channel write queues are what the user already sent. Give them
 * a bounded time to leave (the IO thread keeps working meanwhile).
 */
#define NODE_FLUSH_TIMEOUT_MS 5000

static bool flushed(node_controller *n)
{
    /* Proxies and closing ports still owe other nodes events. */
    if (!ports_node_can_shutdown_cleanly(n->ports, false))
        return false;
    plat_mutex_lock(&n->lock);
    bool done = true;
    /* Introductions to come; not a NODE_LOST awaited, which is the broker's to send. */
    for (size_t i = 0; done && i < n->pending.cap; i++) {
        pending_intro *pi = n->pending.slots[i].value;
        done = !pi || pi->awaiting_lost;
    }
    for (peer *p = n->all; done && p; p = p->next_all)
        if (p->state == PEER_CONNECTED && !channel_write_idle(p->ch))
            done = false;
    plat_mutex_unlock(&n->lock);
    return done;
}

void node_destroy(node_controller *n)
{
    if (!n)
        return;
    for (int ms = 0; ms < NODE_FLUSH_TIMEOUT_MS && !flushed(n); ms++)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    plat_mutex_lock(&n->lock);
    n->shutting_down = true;
    plat_mutex_unlock(&n->lock);
    for (;;) {
        plat_mutex_lock(&n->lock);
        peer *p = n->all;
        if (p)
            peer_acquire(p);
        plat_mutex_unlock(&n->lock);
        if (!p)
            break;
        drop_peer(p, "shutting down", false);
        peer_release(p);
    }
    plat_mutex_lock(&n->lock);
    plat_io *io = atomic_exchange_explicit(&n->io, NULL, memory_order_relaxed);
    plat_mutex_unlock(&n->lock);
    plat_io_stop(io); /* runs what was posted */
    for (size_t i = 0; i < n->pending.cap; i++)
        if (n->pending.slots[i].value)
            pending_free(n->pending.slots[i].value);
    name_map_free(&n->pending);
    name_map_free(&n->peers);
    ports_node_destroy(n->ports);
    free(atomic_load(&n->spare));
    plat_mutex_destroy(&n->lock);
    free(n);
}

/* The socket must be a connected stream socket; dup it so failure leaves it alone. */
static int take_socket(int fd)
{
    int type;
    socklen_t len = sizeof(type);
    if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM)
        return -EINVAL;
    int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    return dup < 0 ? -errno : dup;
}

int node_send_invitation(node_controller *n, int fd, bool isolated, const node_wire_name *names,
                         const ports_port_ref *ports, uint32_t count, node_error_fn fn,
                         uintptr_t ctx, const void *conn_name, size_t conn_name_len)
{
    int sock = take_socket(fd);
    if (sock < 0)
        return sock;
    size_t len = node_wire_invite_size(names, count);
    uint8_t *msg = malloc(len);
    named_port *att = calloc(count ? count : 1, sizeof(*att));
    uint8_t *cname = conn_name_len ? malloc(conn_name_len) : NULL;
    if (!msg || !att || (conn_name_len && !cname)) {
        free(msg);
        free(att);
        free(cname);
        close(sock);
        return -ENOMEM;
    }
    if (cname)
        memcpy(cname, conn_name, conn_name_len);

    peer *old = NULL;
    plat_mutex_lock(&n->lock);
    if (!isolated && n->broker) {
        plat_mutex_unlock(&n->lock);
        free(msg);
        free(att);
        free(cname);
        close(sock);
        return -EPERM;
    }
    peer *p;
    int rv = add_peer_locked(n, sock, PEER_AWAIT_ACCEPT, &p);
    if (rv != 0) {
        plat_mutex_unlock(&n->lock);
        free(msg);
        free(att);
        free(cname);
        return rv;
    }
    if (!isolated)
        n->is_broker = true;
    p->we_invited = true;
    p->isolated = isolated;
    p->fn = fn;
    p->ctx = ctx;
    p->conn_name = cname;
    p->conn_name_len = conn_name_len;
    if (cname) {
        for (peer *q = n->all; q; q = q->next_all) {
            if (q != p && q->isolated && q->conn_name_len == conn_name_len &&
                memcmp(q->conn_name, cname, conn_name_len) == 0) {
                old = q;
                peer_acquire(old);
                break;
            }
        }
    }
    for (uint32_t i = 0; i < count; i++) {
        memcpy(att[i].name, names[i].bytes, names[i].len);
        att[i].len = names[i].len;
        ports_port_ref_copy(&att[i].port, &ports[i]);
    }
    p->attachments = att;
    p->num_attachments = count;
    node_wire_write_invite(msg, self_name(n), isolated ? &PORTS_INVALID_NAME : self_name(n),
                           isolated ? NODE_INVITE_ISOLATED : 0, names, count);
    send_msg(p, NODE_MSG_INVITE, msg, len, NULL, 0);
    rv = channel_start(p->ch);
    plat_mutex_unlock(&n->lock);
    free(msg);
    if (rv != 0)
        drop_peer(p, "could not start the channel", false);
    if (old) {
        drop_peer(old, "replaced by a new isolated connection of the same name", false);
        peer_release(old);
    }
    close(fd);
    return 0;
}

int node_accept_invitation(node_controller *n, int fd, bool isolated, node_invitation **out)
{
    int sock = take_socket(fd);
    if (sock < 0)
        return sock;
    node_invitation *inv = calloc(1, sizeof(*inv));
    if (!inv) {
        close(sock);
        return -ENOMEM;
    }
    atomic_init(&inv->refs, 2); /* the caller's and the peer's */
    inv->isolated = isolated;
    plat_mutex_lock(&n->lock);
    if (!isolated && (n->broker || n->is_broker)) {
        plat_mutex_unlock(&n->lock);
        free(inv);
        close(sock);
        return -EPERM;
    }
    for (peer *q = n->all; !isolated && q; q = q->next_all) {
        if (q->inv && !q->isolated) { /* a non-isolated acceptance is pending */
            plat_mutex_unlock(&n->lock);
            free(inv);
            close(sock);
            return -EPERM;
        }
    }
    peer *p;
    int rv = add_peer_locked(n, sock, PEER_AWAIT_INVITE, &p);
    if (rv != 0) {
        plat_mutex_unlock(&n->lock);
        free(inv);
        return rv;
    }
    p->isolated = isolated;
    p->inv = inv;
    rv = channel_start(p->ch);
    plat_mutex_unlock(&n->lock);
    if (rv != 0)
        drop_peer(p, "could not start the channel", false);
    close(fd);
    *out = inv;
    return 0;
}

int node_invitation_extract(node_controller *n, node_invitation *inv, const void *name,
                            uint32_t len, ports_port_ref *out)
{
    plat_mutex_lock(&n->lock);
    if (inv->invite_received) {
        for (uint32_t i = 0; i < inv->num_offered; i++) {
            if (inv->offered[i].len == len && memcmp(inv->offered[i].name, name, len) == 0) {
                *out = inv->offered[i].port;
                inv->offered[i] = inv->offered[--inv->num_offered];
                plat_mutex_unlock(&n->lock);
                return 0;
            }
        }
    }
    bool early = !inv->invite_received && !inv->closed;
    if (early && inv->num_early == inv->cap_early) {
        uint32_t cap = inv->cap_early ? inv->cap_early * 2 : 4;
        named_port *grown = realloc(inv->early, cap * sizeof(*grown));
        if (!grown) {
            plat_mutex_unlock(&n->lock);
            return -ENOMEM;
        }
        inv->early = grown;
        inv->cap_early = cap;
    }
    ports_port_ref a, b;
    if (ports_node_create_port_pair(n->ports, &a, &b) != PORTS_OK) {
        plat_mutex_unlock(&n->lock);
        return -ENOMEM;
    }
    if (early) {
        named_port *e = &inv->early[inv->num_early++];
        memcpy(e->name, name, len);
        e->len = len;
        e->port = b;
        plat_mutex_unlock(&n->lock);
    } else {
        /* No such attachment (or it was taken already): a broken pipe. */
        plat_mutex_unlock(&n->lock);
        ports_node_close_port(n->ports, &b);
        ports_port_ref_release(&b);
    }
    *out = a;
    return 0;
}

void node_invitation_close(node_controller *n, node_invitation *inv)
{
    plat_mutex_lock(&n->lock);
    inv->closed = true;
    named_port *offered = inv->offered;
    uint32_t num = inv->num_offered;
    inv->offered = NULL;
    inv->num_offered = 0;
    plat_mutex_unlock(&n->lock);
    for (uint32_t i = 0; i < num; i++) {
        ports_node_close_port(n->ports, &offered[i].port);
        ports_port_ref_release(&offered[i].port);
    }
    free(offered);
    invitation_release(n, inv);
}

void node_report_bad_message(node_controller *n, const ports_name *from, const char *reason,
                             size_t len)
{
    if (len > CMOJO_MAX_ERROR_MESSAGE)
        len = CMOJO_MAX_ERROR_MESSAGE;
    plat_mutex_lock(&n->lock);
    peer *q = name_map_get(&n->peers, from);
    node_error_fn fn = q && q->we_invited ? q->fn : NULL;
    uintptr_t ctx = q ? q->ctx : 0;
    peer *broker = !fn && n->broker ? n->broker : NULL;
    if (broker) {
        uint8_t *msg = malloc(NODE_BAD_MESSAGE_FIXED_SIZE + len);
        if (msg) {
            size_t size = node_wire_write_bad_message(msg, from, reason, (uint32_t)len);
            send_msg(broker, NODE_MSG_BAD_MESSAGE, msg, size, NULL, 0);
            free(msg);
        }
    }
    plat_mutex_unlock(&n->lock);
    if (fn)
        fn(ctx, reason, len, false);
}

void node_set_default_error_handler(node_controller *n, node_default_error_fn fn)
{
    plat_mutex_lock(&n->lock);
    n->default_error = fn;
    plat_mutex_unlock(&n->lock);
}

size_t node_debug_peer_count(node_controller *n)
{
    plat_mutex_lock(&n->lock);
    size_t count = n->peers.count;
    plat_mutex_unlock(&n->lock);
    return count;
}
