/*
 * The ports protocol. See ports.h for the contract and DESIGN.md for the
 * picture; this comment covers what the code relies on.
 *
 * Route: every port has a peer (where its events go) and a previous peer
 * (the one port whose sequenced events it accepts). A route is a cycle of
 * peer pointers through zero or more proxies. When a port is sent to another
 * node it becomes a proxy pointing at a new port there, and tells its old
 * peer "your previous peer is now the new port" (UpdatePreviousPeer). The
 * proxy then asks around the cycle to be bypassed (ObserveProxy); the port
 * that points at it switches its peer, acknowledges with the last sequence
 * number it sent through the proxy, and the proxy erases itself once it has
 * forwarded that message, handing its own previous peer to its peer.
 *
 * Ordering: user messages carry a per-port sequence number and every event
 * that needs ordering (user messages included) carries the sender's control
 * sequence number. A port handles such events strictly one at a time, in
 * control order, and only from its current previous peer; events from
 * anyone else wait (bounded) until an UpdatePreviousPeer makes them valid.
 *
 * Locking: node->lock guards the port map and the peer map, and is taken
 * before any port lock, never after. Several port locks are taken in address
 * order. A port's peer fields change only with both the node lock and its
 * own lock held, so either lock alone is enough to read them. No lock is held
 * across a delegate call or a payload's ops.
 *
 * Memory: bookkeeping allocations in the middle of a protocol step (map
 * growth, small events) abort on failure; a half-applied step would break
 * exactly-once delivery, which is worse than stopping.
 */
#include "platform/lock.h"
#include "platform/mem.h"
#include "ports/ports.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "platform/random.h"
#include "ports/name_map.h"
#include "ports/port.h"

struct ports_node {
    ports_name name;
    ports_delegate delegate;
    plat_mutex lock;
    name_map ports;      /* port name -> ports_port* (holds one ref) */
    name_map peer_nodes; /* peer node -> name_map* (peer port -> peer_set*) */
    /*
     * Nodes we lost and proxies announced dead. Routes can learn of them
     * after the announcement (a descriptor, an UpdatePreviousPeer, a merge
     * naming them); such a route is broken the moment it is set up.
     */
    name_map lost_nodes; /* node name -> LOST_MARK */
    name_map dead_ports; /* port name -> ports_name* of its node */
    uint64_t hash_k0, hash_k1;
    bool destroying; /* ports_node_destroy: drop everything, tell no one */
};

static char lost_mark;
#define LOST_MARK ((void *)&lost_mark)

/* Local ports that share one peer. Almost always exactly one. */
typedef struct peer_set {
    size_t count, cap;
    struct {
        ports_name name;
        ports_port *port;
    } * items;
} peer_set;

/* An UpdatePreviousPeer to send once locks are dropped. */
typedef struct pending_update {
    ports_name receiver_node;
    ports_name receiver_port;
    ports_name from_port;
    uint64_t sequence_num;
    ports_name new_prev_node;
    ports_name new_prev_port;
} pending_update;

static _Noreturn void die_oom(void)
{
    fputs("cmojo: out of memory inside a ports protocol step\n", stderr);
    abort();
}

static void *xmalloc(size_t n)
{
    void *p = plat_zalloc(n);
    if (!p)
        die_oom();
    return p;
}

static ports_event *new_event(ports_event_type type, const ports_name *port_name,
                              const ports_name *from_port, uint64_t control_seq)
{
    ports_event *ev = ports_event_new(type, port_name);
    if (!ev)
        die_oom();
    ev->from_port = from_port ? *from_port : PORTS_INVALID_NAME;
    ev->control_sequence_num = control_seq;
    return ev;
}

static bool is_self(const ports_node *node, const ports_name *n)
{
    return ports_name_eq(&node->name, n);
}

/* ---------------------------------------------------------------- ports */

static ports_port *port_new(uint64_t next_seq_to_send, uint64_t next_seq_to_receive)
{
    ports_port *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    atomic_init(&p->refs, 1);
    plat_mutex_init(&p->lock);
    atomic_init(&p->nothing_to_read, false);
    p->state = PORT_UNINITIALIZED;
    p->next_control_sequence_num_to_send = PORTS_INITIAL_SEQUENCE_NUM;
    p->next_control_sequence_num_to_receive = PORTS_INITIAL_SEQUENCE_NUM;
    p->next_sequence_num_to_send = next_seq_to_send;
    p->last_sequence_num_to_receive = 0;
    p->last_sequence_num_acknowledged = next_seq_to_send - 1;
    mq_init(&p->mq, next_seq_to_receive);
    return p;
}

static void port_addref(ports_port *p)
{
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
}

static void destroy_event_list(ports_event *list)
{
    while (list) {
        ports_event *next = list->next_;
        ports_event_destroy(list);
        list = next;
    }
}

/* Moves every early event a port holds onto *list. Port lock held. */
static void take_pending_events(ports_port *p, ports_event **list)
{
    for (size_t i = 0; i < p->pending_senders; i++) {
        pending_queue *q = &p->pending[i];
        for (size_t k = 0; k < q->count; k++) {
            q->heap[k]->next_ = *list;
            *list = q->heap[k];
        }
        free(q->heap);
    }
    memset(p->pending, 0, sizeof(p->pending));
    p->pending_senders = 0;
    p->pending_total = 0;
}

/* Moves every event a port still holds onto *list. Port lock held. */
static void take_all_held_events(ports_port *p, ports_event **list)
{
    mq_take_all(&p->mq, list);
    take_pending_events(p, list);
    for (ports_event *ev = p->control_head, *next; ev; ev = next) {
        next = ev->next_;
        ev->next_ = *list;
        *list = ev;
    }
    p->control_head = p->control_tail = NULL;
    if (p->send_on_proxy_removal) {
        p->send_on_proxy_removal->next_ = *list;
        *list = p->send_on_proxy_removal;
        p->send_on_proxy_removal = NULL;
    }
}

static void port_release(ports_port *p)
{
    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
        return;
    ports_event *list = NULL;
    take_all_held_events(p, &list);
    destroy_event_list(list);
    plat_mutex_destroy(&p->lock);
    free(p);
}

void ports_port_ref_copy(ports_port_ref *dst, const ports_port_ref *src)
{
    if (src->port)
        port_addref(src->port);
    *dst = *src;
}

void ports_port_ref_release(ports_port_ref *ref)
{
    if (!ref)
        return;
    if (ref->port)
        port_release(ref->port);
    ref->port = NULL;
    ref->name = PORTS_INVALID_NAME;
}

/*
 * Every change to a port happens under its lock, so taking the lock ends the
 * lock-free "nothing to read" answer (see ports_port.nothing_to_read). A
 * relaxed store: the unlock that follows publishes it, so whoever learns of
 * this holder's change (a message queued, the peer closed) sees it too.
 */
static void lock_port(ports_port *p)
{
    plat_mutex_lock(&p->lock);
    atomic_store_explicit(&p->nothing_to_read, false, memory_order_relaxed);
}

/*
 * lock_port for a sender that only reads the port's route and state and
 * takes sequence numbers: nothing a read's answer depends on (the message
 * queue, the state, the peer's closure), so a "nothing to read" stands.
 */
static void lock_port_to_send(ports_port *p)
{
    plat_mutex_lock(&p->lock);
}

static void unlock_port(ports_port *p)
{
    plat_mutex_unlock(&p->lock);
}

static int cmp_port_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (ports_port *const *)a;
    uintptr_t y = (uintptr_t) * (ports_port *const *)b;
    return x < y ? -1 : x > y;
}

/* Locks distinct ports in address order; `ports` is sorted in place. */
static void lock_ports(ports_port **ports, size_t n)
{
    if (n > 1)
        qsort(ports, n, sizeof(*ports), cmp_port_ptr);
    for (size_t i = 0; i < n; i++)
        if (i == 0 || ports[i] != ports[i - 1])
            lock_port(ports[i]);
}

static void unlock_ports(ports_port **ports, size_t n)
{
    for (size_t i = n; i-- > 0;)
        if (i == 0 || ports[i] != ports[i - 1])
            unlock_port(ports[i]);
}

void ports_port_set_user_data(const ports_port_ref *ref, void *data)
{
    lock_port(ref->port);
    ref->port->user_data = data;
    unlock_port(ref->port);
}

void *ports_port_get_user_data(const ports_port_ref *ref)
{
    lock_port(ref->port);
    void *data = ref->port->user_data;
    unlock_port(ref->port);
    return data;
}

/* ----------------------------------------------------------------- names */

static void random_bytes(ports_node *node, void *buf, size_t len)
{
    if (node->delegate.random_bytes) {
        node->delegate.random_bytes(node->delegate.ctx, buf, len);
        return;
    }
    if (plat_random_bytes(buf, len) != 0) {
        fputs("cmojo: getrandom failed; refusing to make guessable names\n", stderr);
        abort();
    }
}

static ports_name generate_name(ports_node *node)
{
    ports_name n;
    do
        random_bytes(node, &n, sizeof(n));
    while (!ports_name_is_valid(&n));
    return n;
}

/* ------------------------------------------------------------- peer map */

/* Node lock held. */
static void peer_map_add(ports_node *node, const ports_name *peer_node, const ports_name *peer_port,
                         const ports_name *local_name, ports_port *local)
{
    if (!ports_name_is_valid(peer_port))
        return;
    name_map *by_port = name_map_get(&node->peer_nodes, peer_node);
    if (!by_port) {
        by_port = xmalloc(sizeof(*by_port));
        name_map_init(by_port, node->hash_k1, node->hash_k0);
        if (name_map_put(&node->peer_nodes, peer_node, by_port) < 0)
            die_oom();
    }
    peer_set *set = name_map_get(by_port, peer_port);
    if (!set) {
        set = xmalloc(sizeof(*set));
        if (name_map_put(by_port, peer_port, set) < 0)
            die_oom();
    }
    if (set->count == set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 2;
        void *items = realloc(set->items, cap * sizeof(*set->items));
        if (!items)
            die_oom();
        set->items = items;
        set->cap = cap;
    }
    set->items[set->count].name = *local_name;
    set->items[set->count].port = local;
    set->count++;
}

/* Node lock held. */
static void peer_map_remove(ports_node *node, const ports_name *peer_node,
                            const ports_name *peer_port, const ports_name *local_name)
{
    if (!ports_name_is_valid(peer_port))
        return;
    name_map *by_port = name_map_get(&node->peer_nodes, peer_node);
    if (!by_port)
        return;
    peer_set *set = name_map_get(by_port, peer_port);
    if (!set)
        return;
    for (size_t i = 0; i < set->count; i++) {
        if (ports_name_eq(&set->items[i].name, local_name)) {
            set->items[i] = set->items[--set->count];
            break;
        }
    }
    if (set->count == 0) {
        name_map_remove(by_port, peer_port);
        free(set->items);
        free(set);
        if (by_port->count == 0) {
            name_map_remove(&node->peer_nodes, peer_node);
            name_map_free(by_port);
            free(by_port);
        }
    }
}

/* Node lock and port lock held. */
static void update_port_peer_address(ports_node *node, const ports_name *local_name,
                                     ports_port *port, const ports_name *peer_node,
                                     const ports_name *peer_port)
{
    peer_map_remove(node, &port->peer_node, &port->peer_port, local_name);
    port->peer_node = *peer_node;
    port->peer_port = *peer_port;
    port->next_control_sequence_num_to_send = PORTS_INITIAL_SEQUENCE_NUM;
    peer_map_add(node, peer_node, peer_port, local_name, port);
}

/* -------------------------------------------------------------- port map */

static int add_port_with_name(ports_node *node, const ports_name *name, ports_port *port)
{
    plat_mutex_lock(&node->lock);
    int rc = name_map_put(&node->ports, name, port);
    if (rc == 0) {
        port_addref(port);
        peer_map_add(node, &port->peer_node, &port->peer_port, name, port);
    }
    plat_mutex_unlock(&node->lock);
    if (rc < 0)
        return PORTS_ERROR_NO_MEMORY;
    return rc == 0 ? PORTS_OK : PORTS_ERROR_PORT_EXISTS;
}

int ports_node_get_port(ports_node *node, const ports_name *name, ports_port_ref *out)
{
    plat_mutex_lock(&node->lock);
    ports_port *p = name_map_get(&node->ports, name);
    if (p)
        port_addref(p);
    plat_mutex_unlock(&node->lock);
    if (!p)
        return PORTS_ERROR_PORT_UNKNOWN;
    out->name = *name;
    out->port = p;
    return PORTS_OK;
}

static void close_carried_ports(ports_node *node, ports_event *list);

/*
 * Removes the port from the node. Messages it still holds are dropped and the
 * ports they carry closed, so nothing leaks.
 */
static void erase_port(ports_node *node, const ports_name *name)
{
    plat_mutex_lock(&node->lock);
    ports_port *p = name_map_remove(&node->ports, name);
    if (p)
        peer_map_remove(node, &p->peer_node, &p->peer_port, name);
    plat_mutex_unlock(&node->lock);
    if (!p)
        return;
    ports_event *list = NULL;
    lock_port(p);
    take_all_held_events(p, &list);
    unlock_port(p);
    close_carried_ports(node, list);
    port_release(p);
}

size_t ports_node_port_count(ports_node *node)
{
    plat_mutex_lock(&node->lock);
    size_t n = node->ports.count;
    plat_mutex_unlock(&node->lock);
    return n;
}

/* Snapshot of every port in the map, each with a ref. Caller frees. */
static ports_port_ref *snapshot_ports(ports_node *node, size_t *count)
{
    plat_mutex_lock(&node->lock);
    size_t n = node->ports.count;
    ports_port_ref *refs = xmalloc((n ? n : 1) * sizeof(*refs));
    size_t k = 0;
    for (size_t i = 0; i < node->ports.cap; i++) {
        name_map_slot *s = &node->ports.slots[i];
        if (!s->value)
            continue;
        refs[k].name = s->key;
        refs[k].port = s->value;
        port_addref(refs[k].port);
        k++;
    }
    plat_mutex_unlock(&node->lock);
    *count = k;
    return refs;
}

static void release_refs(ports_port_ref *refs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ports_port_ref_release(&refs[i]);
    free(refs);
}

/* ------------------------------------------------------------------ node */

int ports_node_create(const ports_name *name, const ports_delegate *delegate, ports_node **out)
{
    if (!name || !ports_name_is_valid(name) || !delegate || !out || !delegate->forward_event ||
        !delegate->broadcast_event || !delegate->port_status_changed ||
        !delegate->acquire_user_data != !delegate->port_status_seen)
        return PORTS_ERROR_INVALID_ARGUMENT;
    ports_node *node = calloc(1, sizeof(*node));
    if (!node)
        return PORTS_ERROR_NO_MEMORY;
    node->name = *name;
    node->delegate = *delegate;
    plat_mutex_init(&node->lock);
    uint64_t keys[2];
    random_bytes(node, keys, sizeof(keys));
    node->hash_k0 = keys[0];
    node->hash_k1 = keys[1];
    name_map_init(&node->ports, keys[0], keys[1]);
    name_map_init(&node->peer_nodes, keys[1] ^ keys[0], keys[0] + keys[1]);
    name_map_init(&node->lost_nodes, keys[0] + 1, keys[1] + 1);
    name_map_init(&node->dead_ports, keys[0] + 2, keys[1] + 2);
    *out = node;
    return PORTS_OK;
}

void ports_node_destroy(ports_node *node)
{
    if (!node)
        return;
    node->destroying = true;
    size_t n;
    ports_port_ref *refs = snapshot_ports(node, &n);
    for (size_t i = 0; i < n; i++)
        erase_port(node, &refs[i].name);
    release_refs(refs, n);
    name_map_free(&node->ports);
    name_map_free(&node->peer_nodes);
    name_map_free(&node->lost_nodes);
    for (size_t i = 0; i < node->dead_ports.cap; i++)
        free(node->dead_ports.slots[i].value);
    name_map_free(&node->dead_ports);
    plat_mutex_destroy(&node->lock);
    free(node);
}

const ports_name *ports_node_name(const ports_node *node)
{
    return &node->name;
}

bool ports_node_can_shutdown_cleanly(ports_node *node, bool allow_local_ports)
{
    size_t n;
    ports_port_ref *refs = snapshot_ports(node, &n);
    bool ok = true;
    if (!allow_local_ports) {
        ok = n == 0;
    } else {
        for (size_t i = 0; i < n && ok; i++) {
            ports_port *p = refs[i].port;
            lock_port(p);
            if (!is_self(node, &p->peer_node) && p->state != PORT_RECEIVING)
                ok = false;
            unlock_port(p);
        }
    }
    release_refs(refs, n);
    return ok;
}

/* ------------------------------------------------------- small helpers */

static void forward(ports_node *node, const ports_name *to, ports_event *ev)
{
    node->delegate.forward_event(node->delegate.ctx, to, ev);
}

static void status_changed(ports_node *node, const ports_port_ref *ref)
{
    node->delegate.port_status_changed(node->delegate.ctx, ref);
}

static void send_update(ports_node *node, const pending_update *u)
{
    ports_event *ev = new_event(PORTS_EVENT_UPDATE_PREVIOUS_PEER, &u->receiver_port, &u->from_port,
                                u->sequence_num);
    ev->u.update_previous_peer.new_node = u->new_prev_node;
    ev->u.update_previous_peer.new_port = u->new_prev_port;
    forward(node, &u->receiver_node, ev);
}

/* Port lock held. */
static bool can_accept_more_messages(const ports_port *p)
{
    if (p->state == PORT_CLOSED || p->end_reported)
        return false;
    if (p->peer_closed || p->remove_proxy_on_last_message) {
        if (p->peer_lost_unexpectedly)
            return mq_has_next(&p->mq);
        /*
         * <=, not ==: after merges a stream can be told its end late, when a
         * proxy has already passed that point; it is done all the same.
         */
        if (p->last_sequence_num_to_receive <= p->mq.next_seq - 1)
            return false;
    }
    return true;
}

/*
 * Closes every port carried by the user messages on the list and frees the
 * list. Used wherever messages are dropped unread, so their cargo is not
 * stranded.
 */
static void close_carried_ports(ports_node *node, ports_event *list)
{
    if (node->destroying) {
        /* Their ports are in the map and are being dropped with it. */
        destroy_event_list(list);
        return;
    }
    while (list) {
        ports_event *ev = list;
        list = ev->next_;
        if (ev->type == PORTS_EVENT_USER_MESSAGE) {
            for (uint32_t i = 0; i < ev->u.user.num_ports; i++) {
                ports_port_ref ref;
                if (ports_node_get_port(node, &ev->u.user.ports[i], &ref) == PORTS_OK) {
                    ports_node_close_port(node, &ref);
                    ports_port_ref_release(&ref);
                }
            }
        }
        ports_event_destroy(ev);
    }
}

/* Queues an event a buffering port must send when it starts proxying. */
static void control_queue_push(ports_port *p, ports_event *ev, const ports_name *to)
{
    ev->from_node_ = *to; /* reused as the destination while queued */
    ev->next_ = NULL;
    if (p->control_tail)
        p->control_tail->next_ = ev;
    else
        p->control_head = ev;
    p->control_tail = ev;
}

/* ------------------------------------------------ sequenced-event buffer */

/* Port lock held. */
static bool is_next_event(const ports_port *p, const ports_name *from, const ports_event *ev)
{
    return ports_name_eq(from, &p->prev_node) && ports_name_eq(&ev->from_port, &p->prev_port) &&
           ev->control_sequence_num == p->next_control_sequence_num_to_receive;
}

static void heap_swap(ports_event **h, size_t i, size_t j)
{
    ports_event *t = h[i];
    h[i] = h[j];
    h[j] = t;
}

static void heap_push(pending_queue *q, ports_event *ev)
{
    size_t i = q->count++;
    q->heap[i] = ev;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (q->heap[parent]->control_sequence_num <= q->heap[i]->control_sequence_num)
            break;
        heap_swap(q->heap, parent, i);
        i = parent;
    }
}

static ports_event *heap_pop(pending_queue *q)
{
    ports_event *top = q->heap[0];
    q->heap[0] = q->heap[--q->count];
    for (size_t i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < q->count && q->heap[l]->control_sequence_num < q->heap[m]->control_sequence_num)
            m = l;
        if (r < q->count && q->heap[r]->control_sequence_num < q->heap[m]->control_sequence_num)
            m = r;
        if (m == i)
            break;
        heap_swap(q->heap, i, m);
        i = m;
    }
    return top;
}

/*
 * Holds an event that is not next (wrong sender, or early: threads of the
 * sender may hand events to the transport in any order). Port lock held.
 * PORTS_ERROR_BAD_PEER if holding it would pass a limit or it can never
 * become valid.
 */
static int buffer_event(ports_port *p, const ports_name *from, ports_event *ev)
{
    if (ports_name_eq(from, &p->prev_node) && ports_name_eq(&ev->from_port, &p->prev_port) &&
        ev->control_sequence_num < p->next_control_sequence_num_to_receive)
        return PORTS_ERROR_BAD_PEER; /* replay of something already handled */
    if (p->pending_total >= CMOJO_MAX_PENDING_EVENTS_PER_PORT)
        return PORTS_ERROR_BAD_PEER;

    pending_queue *q = NULL;
    for (size_t i = 0; i < p->pending_senders; i++) {
        if (ports_name_eq(&p->pending[i].from_node, from) &&
            ports_name_eq(&p->pending[i].from_port, &ev->from_port)) {
            q = &p->pending[i];
            break;
        }
    }
    if (!q) {
        if (p->pending_senders == CMOJO_MAX_PENDING_SENDERS_PER_PORT)
            return PORTS_ERROR_BAD_PEER;
        q = &p->pending[p->pending_senders++];
        memset(q, 0, sizeof(*q));
        q->from_node = *from;
        q->from_port = ev->from_port;
    }
    if (q->count == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 4;
        ports_event **heap = realloc(q->heap, cap * sizeof(*heap));
        if (!heap)
            die_oom();
        q->heap = heap;
        q->cap = cap;
    }
    ev->from_node_ = *from;
    heap_push(q, ev);
    p->pending_total++;
    return PORTS_OK;
}

/*
 * Takes the held event that is next from the previous peer, if any. Held
 * events numbered below the next one are duplicates a correct sender never
 * makes; they are dropped onto *dropped.
 */
static ports_event *take_next_pending(ports_port *p, ports_event **dropped)
{
    for (size_t i = 0; i < p->pending_senders; i++) {
        pending_queue *q = &p->pending[i];
        if (!ports_name_eq(&q->from_node, &p->prev_node) ||
            !ports_name_eq(&q->from_port, &p->prev_port))
            continue;
        ports_event *ev = NULL;
        while (q->count &&
               q->heap[0]->control_sequence_num <= p->next_control_sequence_num_to_receive) {
            ports_event *top = heap_pop(q);
            p->pending_total--;
            if (!ev && top->control_sequence_num == p->next_control_sequence_num_to_receive) {
                ev = top;
            } else {
                top->next_ = *dropped;
                *dropped = top;
            }
        }
        if (q->count == 0) {
            free(q->heap);
            p->pending[i] = p->pending[--p->pending_senders];
        }
        if (ev)
            ev->next_ = NULL;
        return ev;
    }
    return NULL;
}

/* --------------------------------------------------- forward declarations */

static int accept_internal(ports_node *node, const ports_port_ref *ref, const ports_name *from,
                           ports_event *ev);
static int prepare_to_forward(ports_node *node, const ports_port_ref *ref,
                              port_state expected_state, bool ignore_closed_peer, ports_event *ev,
                              ports_name *target);
static int forward_user_messages_from_proxy(ports_node *node, const ports_port_ref *ref);
static int queue_user_message(ports_port *p, ports_event *ev, bool *accepted, bool *has_next);
static int finish_user_message(ports_node *node, const ports_port_ref *ref, ports_event *ev, int rv,
                               bool accepted, bool has_next);
static void try_remove_proxy(ports_node *node, const ports_port_ref *ref);
static void status_locked(ports_node *node, ports_port *p, ports_port_status *out);
static void initiate_proxy_removal(ports_node *node, const ports_port_ref *ref);
static void destroy_all_ports_with_peer(ports_node *node, const ports_name *peer_node,
                                        const ports_name *peer_port);
static int accept_carried_ports(ports_node *node, const ports_name *from, ports_event *ev);
static void remember_dead_port(ports_node *node, const ports_name *port_node,
                               const ports_name *port);
static void reconcile_with_losses(ports_node *node, const ports_name *port_name);
static void end_routes_from_lost_node(ports_node *node, const ports_name *lost);
static int merge_ports_internal(ports_node *node, const ports_port_ref *a, const ports_port_ref *b,
                                bool allow_close_on_bad_state);

/*
 * The route is broken (a node died, or a peer misbehaved): nothing more will
 * arrive beyond what is already contiguous. Recording that as an ordinary
 * last sequence number keeps it true if the port moves on. Port lock held;
 * what it drops goes on *dropped, to be closed once unlocked. Returns true if
 * this changed the port.
 */
static bool mark_peer_lost(ports_port *p, ports_event **dropped)
{
    if (p->peer_closed && p->peer_lost_unexpectedly)
        return false;
    /* Messages behind a gap can never be delivered now: their cargo must go. */
    uint64_t contiguous_end = p->mq.next_seq + p->mq.ready_count - 1;
    mq_take_beyond(&p->mq, contiguous_end, dropped);
    if (!p->peer_closed || p->last_sequence_num_to_receive > contiguous_end)
        p->last_sequence_num_to_receive = contiguous_end;
    p->peer_closed = true;
    p->peer_lost_unexpectedly = true;
    return true;
}

/*
 * The sender broke the protocol in a way that touches this port: treat the
 * route as broken (peer closed, lost), so the user sees it end instead of
 * waiting forever, and let the caller report the node.
 */
static void cut_off(ports_node *node, const ports_port_ref *ref)
{
    if (!ref->port)
        return;
    ports_event *dropped = NULL;
    lock_port(ref->port);
    bool notify = mark_peer_lost(ref->port, &dropped) && ref->port->state == PORT_RECEIVING;
    unlock_port(ref->port);
    close_carried_ports(node, dropped);
    if (notify)
        status_changed(node, ref);
}

/*
 * Handles the port's sequenced events one at a time in control order. With
 * ev == NULL, only drains what is already held (after the previous peer
 * became known).
 */
static int dispatch(ports_node *node, const ports_port_ref *ref, const ports_name *from,
                    ports_event *ev)
{
    ports_port *p = ref->port;
    ports_name sender;
    lock_port(p);
    if (ev) {
        if (p->state == PORT_CLOSED) {
            /*
             * Closed after the caller looked it up: nothing will ever take
             * what is buffered here, so its cargo must be closed now.
             */
            unlock_port(p);
            ev->next_ = NULL;
            close_carried_ports(node, ev);
            return PORTS_ERROR_PORT_UNKNOWN;
        }
        if (p->prev_lost) {
            /*
             * Only the previous peer could make this event valid, and it is
             * gone: holding it would strand its cargo forever.
             */
            unlock_port(p);
            ev->next_ = NULL;
            close_carried_ports(node, ev);
            return PORTS_OK;
        }
        if (p->dispatching || !is_next_event(p, from, ev)) {
            int rv = buffer_event(p, from, ev);
            unlock_port(p);
            if (rv != PORTS_OK) {
                ev->next_ = NULL;
                close_carried_ports(node, ev);
                cut_off(node, ref);
            }
            return rv;
        }
        if (ev->type == PORTS_EVENT_USER_MESSAGE && p->state == PORT_RECEIVING &&
            p->pending_total == 0) {
            /*
             * The common case, in one hold of the lock: a message for a
             * receiving port with nothing held back behind it. Queueing it
             * and counting it received together leave nothing for the
             * loop below to take.
             */
            bool accepted, has_next;
            int rv = queue_user_message(p, ev, &accepted, &has_next);
            p->next_control_sequence_num_to_receive++;
            if (accepted && has_next && node->delegate.port_status_seen) {
                /* The reader's look, taken now rather than under the lock again. */
                void *data = p->user_data;
                if (data)
                    node->delegate.acquire_user_data(data);
                ports_port_status st;
                status_locked(node, p, &st);
                unlock_port(p);
                node->delegate.port_status_seen(node->delegate.ctx, ref, data, &st);
                return PORTS_OK;
            }
            unlock_port(p);
            return finish_user_message(node, ref, ev, rv, accepted, has_next);
        }
        sender = *from;
    } else {
        ports_event *dropped = NULL;
        if (!p->dispatching)
            ev = take_next_pending(p, &dropped);
        if (ev) {
            sender = ev->from_node_;
            p->dispatching = true;
        }
        unlock_port(p);
        bool had_dropped = dropped != NULL;
        close_carried_ports(node, dropped);
        if (!ev)
            return had_dropped ? PORTS_ERROR_BAD_PEER : PORTS_OK;
    }
    if (from) {
        p->dispatching = true;
        unlock_port(p);
    }

    int rv = accept_internal(node, ref, &sender, ev);
    for (;;) {
        ports_event *dropped = NULL;
        lock_port(p);
        p->next_control_sequence_num_to_receive++;
        ev = take_next_pending(p, &dropped);
        if (!ev)
            p->dispatching = false;
        unlock_port(p);
        if (dropped) {
            close_carried_ports(node, dropped);
            rv = PORTS_ERROR_BAD_PEER;
        }
        if (!ev)
            break;
        sender = ev->from_node_;
        int r = accept_internal(node, ref, &sender, ev);
        if (r == PORTS_ERROR_BAD_PEER)
            rv = r;
    }
    return rv;
}

int ports_node_accept_event(ports_node *node, const ports_name *from, ports_event *ev)
{
    if (!ev)
        return PORTS_ERROR_INVALID_ARGUMENT;
    if (!from || !ports_name_is_valid(from)) {
        ports_event_destroy(ev);
        return PORTS_ERROR_INVALID_ARGUMENT;
    }
    ports_port_ref ref = {PORTS_INVALID_NAME, NULL};
    ports_node_get_port(node, &ev->port_name, &ref);
    /*
     * Ports in a message from another node are recreated as soon as it
     * arrives, even if the message must wait for its turn or can never be
     * delivered (then they are closed, so their peers learn of it): held
     * cargo must always be something that can be closed.
     */
    if (ev->type == PORTS_EVENT_USER_MESSAGE && !is_self(node, from) && !ev->ports_accepted_) {
        int arv = accept_carried_ports(node, from, ev);
        if (arv != PORTS_OK) {
            cut_off(node, &ref);
            ports_port_ref_release(&ref);
            return arv;
        }
    }
    int rv;
    if (ref.port && ports_event_is_sequenced(ev))
        rv = dispatch(node, &ref, from, ev);
    else
        rv = accept_internal(node, &ref, from, ev);
    ports_port_ref_release(&ref);
    return rv;
}

/* ---------------------------------------------------------- port pairs */

int ports_node_create_uninitialized_port(ports_node *node, ports_port_ref *out)
{
    if (!node || !out)
        return PORTS_ERROR_INVALID_ARGUMENT;
    ports_port *p = port_new(PORTS_INITIAL_SEQUENCE_NUM, PORTS_INITIAL_SEQUENCE_NUM);
    if (!p)
        return PORTS_ERROR_NO_MEMORY;
    ports_name name;
    int rv;
    do {
        name = generate_name(node);
        rv = add_port_with_name(node, &name, p);
    } while (rv == PORTS_ERROR_PORT_EXISTS);
    if (rv != PORTS_OK) {
        port_release(p);
        return rv;
    }
    out->name = name;
    out->port = p; /* the creation reference becomes the caller's */
    return PORTS_OK;
}

int ports_node_initialize_port(ports_node *node, const ports_port_ref *ref,
                               const ports_name *peer_node, const ports_name *peer_port,
                               const ports_name *prev_node, const ports_name *prev_port)
{
    if (!ports_name_is_valid(peer_node) || !ports_name_is_valid(peer_port) ||
        !ports_name_is_valid(prev_node) || !ports_name_is_valid(prev_port))
        return PORTS_ERROR_INVALID_ARGUMENT;
    ports_port *p = ref->port;
    plat_mutex_lock(&node->lock);
    lock_port(p);
    if (p->state != PORT_UNINITIALIZED) {
        unlock_port(p);
        plat_mutex_unlock(&node->lock);
        return PORTS_ERROR_PORT_STATE_UNEXPECTED;
    }
    p->state = PORT_RECEIVING;
    update_port_peer_address(node, &ref->name, p, peer_node, peer_port);
    p->prev_node = *prev_node;
    p->prev_port = *prev_port;
    unlock_port(p);
    plat_mutex_unlock(&node->lock);

    status_changed(node, ref);
    /* Events may have arrived before we knew whom to accept them from. */
    return dispatch(node, ref, NULL, NULL);
}

int ports_node_create_port_pair(ports_node *node, ports_port_ref *a, ports_port_ref *b)
{
    if (!node || !a || !b)
        return PORTS_ERROR_INVALID_ARGUMENT;
    ports_port_ref x, y;
    int rv = ports_node_create_uninitialized_port(node, &x);
    if (rv != PORTS_OK)
        return rv;
    rv = ports_node_create_uninitialized_port(node, &y);
    if (rv != PORTS_OK) {
        ports_node_close_port(node, &x);
        ports_port_ref_release(&x);
        return rv;
    }
    ports_node_initialize_port(node, &x, &node->name, &y.name, &node->name, &y.name);
    ports_node_initialize_port(node, &y, &node->name, &x.name, &node->name, &x.name);
    *a = x;
    *b = y;
    return PORTS_OK;
}

/* ---------------------------------------------------------------- close */

int ports_node_close_port(ports_node *node, const ports_port_ref *ref)
{
    if (!node || !ref || !ref->port)
        return PORTS_ERROR_INVALID_ARGUMENT;
    ports_port *p = ref->port;
    ports_event *undelivered = NULL;
    ports_event *closure = NULL;
    ports_name peer_node;

    lock_port(p);
    switch (p->state) {
    case PORT_UNINITIALIZED:
        p->state = PORT_CLOSED;
        break;
    case PORT_RECEIVING:
        p->state = PORT_CLOSED;
        /*
         * The last sequence number we sent lets the peer read everything we
         * wrote before it reports the closure.
         */
        closure = new_event(PORTS_EVENT_OBSERVE_CLOSURE, &p->peer_port, &ref->name,
                            p->next_control_sequence_num_to_send++);
        closure->u.observe_closure.last_sequence_num = p->next_sequence_num_to_send - 1;
        peer_node = p->peer_node;
        take_all_held_events(p, &undelivered);
        break;
    default:
        unlock_port(p);
        return PORTS_ERROR_PORT_STATE_UNEXPECTED;
    }
    unlock_port(p);

    erase_port(node, &ref->name);
    if (closure)
        forward(node, &peer_node, closure);
    close_carried_ports(node, undelivered);
    return PORTS_OK;
}

/* --------------------------------------------------------------- status */

/* Port lock held, the port receiving. */
static void status_locked(ports_node *node, ports_port *p, ports_port_status *out)
{
    /* Exactly what get_message would hand out: nothing past the stream's end. */
    out->receiving_messages = can_accept_more_messages(p);
    out->has_messages = out->receiving_messages && mq_has_next(&p->mq);
    out->peer_closed = p->peer_closed;
    out->peer_remote = !is_self(node, &p->peer_node);
    out->queued_message_count = mq_count(&p->mq);
    out->queued_num_bytes = p->mq.queued_bytes;
    out->unacknowledged_message_count =
        p->next_sequence_num_to_send - p->last_sequence_num_acknowledged - 1;
    out->version = ++p->status_version;
}

int ports_node_get_status(ports_node *node, const ports_port_ref *ref, ports_port_status *out)
{
    if (!node || !ref || !ref->port || !out)
        return PORTS_ERROR_INVALID_ARGUMENT;
    ports_port *p = ref->port;
    lock_port(p);
    if (p->state != PORT_RECEIVING) {
        unlock_port(p);
        return PORTS_ERROR_PORT_STATE_UNEXPECTED;
    }
    status_locked(node, p, out);
    unlock_port(p);
    return PORTS_OK;
}

void *ports_node_acquire_user_data_status(ports_node *node, const ports_port_ref *ref,
                                          void (*acquire)(void *data), ports_port_status *status)
{
    lock_port(ref->port);
    void *data = ref->port->user_data;
    if (data)
        acquire(data);
    if (ref->port->state == PORT_RECEIVING)
        status_locked(node, ref->port, status);
    else
        status->version = 0;
    unlock_port(ref->port);
    return data;
}

/* ------------------------------------------------------------- messages */

int ports_node_get_message(ports_node *node, const ports_port_ref *ref, ports_event **out)
{
    return ports_node_get_message_status(node, ref, out, NULL);
}

int ports_node_get_message_status(ports_node *node, const ports_port_ref *ref, ports_event **out,
                                  ports_port_status *after)
{
    if (!node || !ref || !ref->port || !out)
        return PORTS_ERROR_INVALID_ARGUMENT;
    *out = NULL;
    ports_port *p = ref->port;
    /* A reader that drains until empty ends each drain on this: no lock then. */
    if (atomic_load_explicit(&p->nothing_to_read, memory_order_acquire))
        return PORTS_OK;
    ports_event *ack = NULL;
    ports_name peer_node;

    lock_port(p);
    if (p->state != PORT_RECEIVING) {
        unlock_port(p);
        return PORTS_ERROR_PORT_STATE_UNEXPECTED;
    }
    /* Everything the peer sent is readable before its closure is reported. */
    if (!can_accept_more_messages(p)) {
        /*
         * Final: nothing may become readable afterwards (a merge far away or
         * a late event must not revive the pipe), and if the port moves on,
         * its descriptor carries this end.
         */
        ports_event *beyond = NULL;
        if (!p->end_reported) {
            p->end_reported = true;
            p->last_sequence_num_to_receive = p->mq.next_seq - 1;
            mq_take_beyond(&p->mq, p->last_sequence_num_to_receive, &beyond);
        }
        unlock_port(p);
        close_carried_ports(node, beyond);
        return PORTS_ERROR_PORT_PEER_CLOSED;
    }
    ports_event *msg = mq_take_next(&p->mq);
    if (msg && msg->u.user.sequence_num == p->sequence_num_to_acknowledge) {
        ack = new_event(PORTS_EVENT_USER_MESSAGE_READ_ACK, &p->peer_port, &ref->name,
                        p->next_control_sequence_num_to_send++);
        ack->u.read_ack.sequence_num_acknowledged = p->sequence_num_to_acknowledge;
        peer_node = p->peer_node;
    }
    if (after && msg)
        status_locked(node, p, after);
    /* Also when this read took the last message: the next one finds nothing. */
    if (!mq_has_next(&p->mq) && can_accept_more_messages(p))
        atomic_store_explicit(&p->nothing_to_read, true, memory_order_relaxed);
    unlock_port(p);

    if (ack)
        forward(node, &peer_node, ack);
    *out = msg;
    return PORTS_OK;
}

int ports_node_send_user_message(ports_node *node, const ports_port_ref *ref, ports_event *ev)
{
    if (!ev)
        return PORTS_ERROR_INVALID_ARGUMENT;
    if (!node || !ref || !ref->port || ev->type != PORTS_EVENT_USER_MESSAGE) {
        ports_event_destroy(ev);
        return PORTS_ERROR_INVALID_ARGUMENT;
    }
    int rv = PORTS_OK;
    for (uint32_t i = 0; i < ev->u.user.num_ports; i++)
        if (ports_name_eq(&ev->u.user.ports[i], &ref->name))
            rv = PORTS_ERROR_PORT_CANNOT_SEND_SELF;

    ports_name target;
    ev->u.user.sequence_num = 0; /* a user send always takes a fresh number */
    if (rv == PORTS_OK)
        rv = prepare_to_forward(node, ref, PORT_RECEIVING, false, ev, &target);
    if (rv != PORTS_OK) {
        /*
         * Refused: every carried port is left as it was, still owned by the
         * caller (which may give the handles back to its user).
         */
        ports_event_destroy(ev);
        return rv;
    }
    /*
     * Past this point the message is committed: whatever happens to it is a
     * routing outcome, not something the sender can act on.
     */
    if (!is_self(node, &target))
        forward(node, &target, ev);
    else
        ports_node_accept_event(node, &node->name, ev);
    return PORTS_OK;
}

/* ------------------------------------------------------------- proxying */

/*
 * Turns a receiving port that is being sent to `to_node` into a buffering
 * proxy, fills the descriptor the destination needs to recreate it under a
 * fresh name (written to *name), and prepares the UpdatePreviousPeer its old
 * peer must receive. Node lock and port lock held.
 */
static void convert_to_proxy(ports_node *node, ports_port *p, ports_name *name,
                             const ports_name *to_node, ports_port_descriptor *desc,
                             pending_update *update)
{
    ports_name local_name = *name;
    ports_name new_name = generate_name(node);

    update->receiver_node = p->peer_node;
    update->receiver_port = p->peer_port;
    update->from_port = local_name;
    update->sequence_num = p->next_control_sequence_num_to_send++;
    update->new_prev_node = *to_node;
    update->new_prev_port = new_name;

    /* Hold messages until the new port exists, then forward them. */
    p->state = PORT_BUFFERING;
    if (p->peer_closed)
        p->remove_proxy_on_last_message = true;

    memset(desc, 0, sizeof(*desc));
    desc->peer_node = p->peer_node;
    desc->peer_port = p->peer_port;
    desc->referring_node = node->name;
    desc->referring_port = local_name;
    desc->next_sequence_num_to_send = p->next_sequence_num_to_send;
    desc->next_sequence_num_to_receive = p->mq.next_seq;
    desc->last_sequence_num_to_receive = p->last_sequence_num_to_receive;
    desc->peer_closed = p->peer_closed;

    update_port_peer_address(node, &local_name, p, to_node, &new_name);
    *name = new_name;
}

/*
 * Recreates a port another node sent us. `from` must be the node that made
 * the descriptor; anything else is a forgery.
 */
static int accept_port(ports_node *node, const ports_name *from, const ports_name *name,
                       const ports_port_descriptor *desc)
{
    if (!ports_name_eq(&desc->referring_node, from) || !ports_name_is_valid(&desc->peer_node) ||
        !ports_name_is_valid(&desc->peer_port) || !ports_name_is_valid(&desc->referring_port) ||
        desc->next_sequence_num_to_send == 0 || desc->next_sequence_num_to_receive == 0 ||
        desc->next_sequence_num_to_send == PORTS_INVALID_SEQUENCE_NUM ||
        desc->next_sequence_num_to_receive == PORTS_INVALID_SEQUENCE_NUM)
        return PORTS_ERROR_BAD_PEER;
    ports_port *p = port_new(desc->next_sequence_num_to_send, desc->next_sequence_num_to_receive);
    if (!p)
        return PORTS_ERROR_NO_MEMORY;
    p->state = PORT_RECEIVING;
    p->peer_node = desc->peer_node;
    p->peer_port = desc->peer_port;
    p->prev_node = desc->referring_node;
    p->prev_port = desc->referring_port;
    p->last_sequence_num_to_receive = desc->last_sequence_num_to_receive;
    p->peer_closed = desc->peer_closed;
    int rv = add_port_with_name(node, name, p);
    port_release(p);
    if (rv != PORTS_OK)
        return rv == PORTS_ERROR_PORT_EXISTS ? PORTS_ERROR_BAD_PEER : rv;

    /* Tell the referring port it may start forwarding to us. */
    forward(node, &desc->referring_node,
            new_event(PORTS_EVENT_PORT_ACCEPTED, &desc->referring_port, NULL,
                      PORTS_INVALID_SEQUENCE_NUM));
    reconcile_with_losses(node, name);
    return PORTS_OK;
}

/* Recreates every port a remote user message carries; consumes ev on failure. */
static int accept_carried_ports(ports_node *node, const ports_name *from, ports_event *ev)
{
    for (uint32_t i = 0; i < ev->u.user.num_ports; i++) {
        int rv = accept_port(node, from, &ev->u.user.ports[i], &ev->u.user.descriptors[i]);
        if (rv != PORTS_OK) {
            ev->u.user.num_ports = i; /* close only the ones we made */
            ev->next_ = NULL;
            close_carried_ports(node, ev);
            return rv;
        }
    }
    ev->ports_accepted_ = true;
    return PORTS_OK;
}

static int prepare_to_forward(ports_node *node, const ports_port_ref *ref,
                              port_state expected_state, bool ignore_closed_peer, ports_event *ev,
                              ports_name *target)
{
    ports_port *p = ref->port;
    uint32_t n = ev->u.user.num_ports;
    ports_port **attached = NULL, **lock_set = NULL;
    pending_update *updates = NULL;
    bool remote = false;
    int rv = PORTS_OK;

    if (n) {
        attached = xmalloc(n * sizeof(*attached));
        updates = xmalloc(n * sizeof(*updates));
    }
    /*
     * Most messages carry no port: lock just the sender, without the heap.
     * The node lock (taken before port locks) is needed only to find the
     * attached ports; the sender's peer fields can be read under its own lock.
     */
    ports_port *lock_one[1];
    lock_set = n ? xmalloc((n + 1) * sizeof(*lock_set)) : lock_one;
    const bool node_locked = n > 0;

    /* The payload's hook runs embedder code, so it is called with no lock held. */
    const bool hook = ev->u.user.payload && ev->u.user.payload->ops->will_be_routed_externally;

    for (;;) {
        lock_port_to_send(p);
        ports_name target_node = p->peer_node;
        /*
         * A message without ports keeps this lock, nothing else is needed,
         * unless it leaves the node and its payload must hear of it first.
         */
        if (node_locked || (hook && !is_self(node, &target_node))) {
            unlock_port(p);

            if (hook && !is_self(node, &target_node) &&
                ev->u.user.payload->ops->will_be_routed_externally(ev->u.user.payload) != 0) {
                rv = PORTS_ERROR_PORT_STATE_UNEXPECTED;
                goto out;
            }

            if (node_locked)
                plat_mutex_lock(&node->lock);
            for (uint32_t i = 0; i < n; i++) {
                attached[i] = name_map_get(&node->ports, &ev->u.user.ports[i]);
                if (!attached[i]) {
                    plat_mutex_unlock(&node->lock);
                    rv = PORTS_ERROR_PORT_UNKNOWN;
                    goto out;
                }
                lock_set[i] = attached[i];
            }
            lock_set[n] = p;
            lock_ports(lock_set, n + 1);
        } else {
            lock_set[0] = p;
        }

        if (!ports_name_eq(&p->peer_node, &target_node)) {
            if (is_self(node, &target_node)) {
                /* Now remote: the payload must hear about it first. */
                unlock_ports(lock_set, n + 1);
                if (node_locked)
                    plat_mutex_unlock(&node->lock);
                continue;
            }
            target_node = p->peer_node;
        }
        remote = !is_self(node, &target_node);

        if (p->state != expected_state)
            rv = PORTS_ERROR_PORT_STATE_UNEXPECTED;
        else if (p->peer_closed && !ignore_closed_peer)
            rv = PORTS_ERROR_PORT_PEER_CLOSED;
        for (uint32_t i = 0; rv == PORTS_OK && i <= n; i++)
            if (i > 0 && lock_set[i] == lock_set[i - 1])
                rv = PORTS_ERROR_PORT_STATE_UNEXPECTED; /* a port attached twice */
        for (uint32_t i = 0; rv == PORTS_OK && i < n; i++) {
            if (attached[i]->state != PORT_RECEIVING)
                rv = PORTS_ERROR_PORT_STATE_UNEXPECTED;
            else if (ports_name_eq(&ev->u.user.ports[i], &p->peer_port))
                rv = PORTS_ERROR_PORT_CANNOT_SEND_PEER;
        }
        if (rv != PORTS_OK) {
            unlock_ports(lock_set, n + 1);
            if (node_locked)
                plat_mutex_unlock(&node->lock);
            goto out;
        }

        /* A proxy forwards with the number the message already has. */
        if (ev->u.user.sequence_num == 0)
            ev->u.user.sequence_num = p->next_sequence_num_to_send++;

        /*
         * Ports only become proxies when the message leaves the node; a hop
         * within the node moves the message, not the ports.
         */
        if (remote)
            for (uint32_t i = 0; i < n; i++)
                convert_to_proxy(node, attached[i], &ev->u.user.ports[i], &target_node,
                                 &ev->u.user.descriptors[i], &updates[i]);

        ev->port_name = p->peer_port;
        ev->from_port = ref->name;
        ev->control_sequence_num = p->next_control_sequence_num_to_send++;
        ev->ports_accepted_ = false; /* the next node recreates them */
        *target = target_node;
        unlock_ports(lock_set, n + 1);
        if (node_locked)
            plat_mutex_unlock(&node->lock);
        break;
    }

    if (remote) {
        for (uint32_t i = 0; i < n; i++)
            send_update(node, &updates[i]);
        /* A port left behind on this node now has a remote peer. */
        for (uint32_t i = 0; i < n; i++) {
            const ports_port_descriptor *d = &ev->u.user.descriptors[i];
            ports_port_ref local_peer;
            if (is_self(node, &d->peer_node) &&
                ports_node_get_port(node, &d->peer_port, &local_peer) == PORTS_OK) {
                status_changed(node, &local_peer);
                ports_port_ref_release(&local_peer);
            }
        }
    }
out:
    free(attached);
    free(updates);
    if (lock_set != lock_one)
        free(lock_set);
    return rv;
}

static int forward_user_messages_from_proxy(ports_node *node, const ports_port_ref *ref)
{
    ports_port *p = ref->port;
    for (;;) {
        lock_port(p);
        ports_event *msg = mq_take_next(&p->mq);
        if (msg)
            p->forwarding++; /* keeps try_remove_proxy away until it is sequenced */
        unlock_port(p);
        if (!msg)
            return PORTS_OK;

        ports_name target;
        int rv = prepare_to_forward(node, ref, PORT_PROXYING, true, msg, &target);
        lock_port(p);
        p->forwarding--;
        unlock_port(p);
        if (rv != PORTS_OK) {
            msg->next_ = NULL;
            close_carried_ports(node, msg);
            return rv;
        }
        forward(node, &target, msg);
    }
}

static void maybe_forward_ack_request(ports_node *node, const ports_port_ref *ref)
{
    ports_port *p = ref->port;
    ports_event *ev = NULL;
    ports_name to;
    lock_port(p);
    if (p->state == PORT_PROXYING && p->sequence_num_to_acknowledge) {
        ev = new_event(PORTS_EVENT_USER_MESSAGE_READ_ACK_REQUEST, &p->peer_port, &ref->name,
                       p->next_control_sequence_num_to_send++);
        ev->u.read_ack_request.sequence_num_to_acknowledge = p->sequence_num_to_acknowledge;
        p->sequence_num_to_acknowledge = 0;
        to = p->peer_node;
    }
    unlock_port(p);
    if (ev)
        forward(node, &to, ev);
}

static int begin_proxying(ports_node *node, const ports_port_ref *ref)
{
    ports_port *p = ref->port;
    lock_port(p);
    if (p->state != PORT_BUFFERING) {
        unlock_port(p);
        return PORTS_ERROR_BAD_PEER;
    }
    p->state = PORT_PROXYING;
    ports_event *queued = p->control_head;
    p->control_head = p->control_tail = NULL;
    unlock_port(p);

    while (queued) {
        ports_event *ev = queued;
        queued = ev->next_;
        ev->next_ = NULL;
        ports_name to = ev->from_node_;
        forward(node, &to, ev);
    }

    int rv = forward_user_messages_from_proxy(node, ref);
    if (rv != PORTS_OK)
        return rv;
    maybe_forward_ack_request(node, ref);

    lock_port(p);
    bool proxying = p->state == PORT_PROXYING;
    bool remove_now = p->remove_proxy_on_last_message;
    unlock_port(p);
    if (!proxying)
        return PORTS_OK;
    if (remove_now)
        try_remove_proxy(node, ref);
    else
        initiate_proxy_removal(node, ref);
    return PORTS_OK;
}

/* Asks the route to bypass this proxy; see the comment at the top. */
static void initiate_proxy_removal(ports_node *node, const ports_port_ref *ref)
{
    ports_port *p = ref->port;
    lock_port(p);
    if (p->state != PORT_PROXYING) {
        unlock_port(p);
        return;
    }
    ports_name to = p->peer_node;
    ports_event *ev = new_event(PORTS_EVENT_OBSERVE_PROXY, &p->peer_port, &ref->name,
                                p->next_control_sequence_num_to_send++);
    ev->u.observe_proxy.proxy_node = node->name;
    ev->u.observe_proxy.proxy_port = ref->name;
    ev->u.observe_proxy.proxy_target_node = p->peer_node;
    ev->u.observe_proxy.proxy_target_port = p->peer_port;
    unlock_port(p);
    forward(node, &to, ev);
}

static void try_remove_proxy(ports_node *node, const ports_port_ref *ref)
{
    ports_port *p = ref->port;
    ports_event *removal = NULL;
    ports_name removal_to;
    pending_update update;

    lock_port(p);
    /*
     * Wait for the ack, for every expected message, for any forwarder, and
     * for a merge that has yet to number the events it owes our peer.
     */
    if (p->state != PORT_PROXYING || !p->remove_proxy_on_last_message || p->forwarding ||
        p->merging || can_accept_more_messages(p)) {
        unlock_port(p);
        return;
    }
    /* Closed, so a racing caller cannot remove it (and announce it) twice. */
    p->state = PORT_CLOSED;
    if (p->send_on_proxy_removal) {
        removal = p->send_on_proxy_removal;
        removal_to = p->send_on_proxy_removal_node;
        p->send_on_proxy_removal = NULL;
        removal->control_sequence_num = p->next_control_sequence_num_to_send++;
    }
    /* Our peer accepts from our previous peer from now on. */
    update.receiver_node = p->peer_node;
    update.receiver_port = p->peer_port;
    update.from_port = ref->name;
    update.sequence_num = p->next_control_sequence_num_to_send++;
    update.new_prev_node = p->prev_node;
    update.new_prev_port = p->prev_port;
    unlock_port(p);

    send_update(node, &update);
    erase_port(node, &ref->name);
    if (removal)
        forward(node, &removal_to, removal);
}

/* ------------------------------------------------------------- handlers */

/*
 * Port lock held: queues a user message, unless it lies past a known end
 * (it could never be read) or the port takes no more. *accepted says
 * whether the queue took it; *has_next whether it made a message ready.
 */
static int queue_user_message(ports_port *p, ports_event *ev, bool *accepted, bool *has_next)
{
    *accepted = false;
    *has_next = false;
    bool past_end = p->peer_closed && ev->u.user.sequence_num > p->last_sequence_num_to_receive;
    if (past_end || !can_accept_more_messages(p))
        return PORTS_OK;
    int rv = mq_accept(&p->mq, ev, has_next);
    *accepted = rv == PORTS_OK;
    return rv;
}

/* After queue_user_message, with no lock held: its consequences. */
static int finish_user_message(ports_node *node, const ports_port_ref *ref, ports_event *ev, int rv,
                               bool accepted, bool has_next)
{
    if (!accepted) {
        ev->next_ = NULL;
        close_carried_ports(node, ev);
        if (rv == PORTS_ERROR_BAD_PEER)
            cut_off(node, ref);
        return rv;
    }
    if (has_next)
        status_changed(node, ref);
    return PORTS_OK;
}

static int on_user_message(ports_node *node, const ports_port_ref *ref, ports_event *ev)
{
    /* Carried ports from another node were recreated on arrival. */
    bool accepted = false, has_next = false, should_forward = false;
    int rv = PORTS_OK;
    if (ref->port) {
        ports_port *p = ref->port;
        lock_port(p);
        rv = queue_user_message(p, ev, &accepted, &has_next);
        if (accepted && p->state == PORT_BUFFERING) {
            has_next = false;
        } else if (accepted && p->state == PORT_PROXYING) {
            has_next = false;
            should_forward = true;
        }
        unlock_port(p);
    }

    if (should_forward) {
        int frv = forward_user_messages_from_proxy(node, ref);
        if (frv != PORTS_OK)
            return frv;
        try_remove_proxy(node, ref);
    }
    return finish_user_message(node, ref, ev, rv, accepted, has_next);
}

static int on_port_accepted(ports_node *node, const ports_port_ref *ref, const ports_name *from,
                            ports_event *ev)
{
    ports_event_destroy(ev);
    if (!ref->port)
        return PORTS_ERROR_PORT_UNKNOWN;
    /* Only the node we sent the port to can accept it. */
    lock_port(ref->port);
    bool ok = ref->port->state == PORT_BUFFERING && ports_name_eq(from, &ref->port->peer_node);
    unlock_port(ref->port);
    if (!ok)
        return PORTS_ERROR_BAD_PEER;
    return begin_proxying(node, ref);
}

static void maybe_resend_ack(ports_node *node, const ports_port_ref *ref)
{
    ports_port *p = ref->port;
    ports_event *ev = NULL;
    ports_name to;
    lock_port(p);
    uint64_t last_read = p->mq.next_seq - 1;
    if (p->state == PORT_RECEIVING && p->sequence_num_to_acknowledge && last_read) {
        ev = new_event(PORTS_EVENT_USER_MESSAGE_READ_ACK, &p->peer_port, &ref->name,
                       p->next_control_sequence_num_to_send++);
        ev->u.read_ack.sequence_num_acknowledged = last_read;
        to = p->peer_node;
    }
    unlock_port(p);
    if (ev)
        forward(node, &to, ev);
}

static void maybe_resend_ack_request(ports_node *node, const ports_port_ref *ref)
{
    ports_port *p = ref->port;
    ports_event *ev = NULL;
    ports_name to;
    lock_port(p);
    if (p->state == PORT_RECEIVING && p->sequence_num_acknowledge_interval) {
        ev = new_event(PORTS_EVENT_USER_MESSAGE_READ_ACK_REQUEST, &p->peer_port, &ref->name,
                       p->next_control_sequence_num_to_send++);
        ev->u.read_ack_request.sequence_num_to_acknowledge =
            p->last_sequence_num_acknowledged + p->sequence_num_acknowledge_interval;
        to = p->peer_node;
    }
    unlock_port(p);
    if (ev)
        forward(node, &to, ev);
}

static int on_observe_proxy(ports_node *node, const ports_port_ref *ref, const ports_name *from,
                            ports_event *ev)
{
    if (!ports_name_is_valid(&ev->port_name)) {
        /*
         * A node announcing that one of its proxies died with its peer node.
         * It may only speak for its own proxies.
         */
        ports_name proxy_node = ev->u.observe_proxy.proxy_node;
        ports_name proxy_port = ev->u.observe_proxy.proxy_port;
        bool ok = ports_name_eq(&proxy_node, from) && ports_name_is_valid(&proxy_port) &&
                  !ports_name_is_valid(&ev->u.observe_proxy.proxy_target_node) &&
                  !ports_name_is_valid(&ev->u.observe_proxy.proxy_target_port);
        ports_event_destroy(ev);
        if (!ok)
            return PORTS_ERROR_BAD_PEER;
        remember_dead_port(node, &proxy_node, &proxy_port);
        destroy_all_ports_with_peer(node, &proxy_node, &proxy_port);
        return PORTS_OK;
    }
    if (!ref->port) {
        /* Closed meanwhile; its ObserveClosure tells the proxy what it needs. */
        ports_event_destroy(ev);
        return PORTS_OK;
    }

    ports_port *p = ref->port;
    ports_event *to_send = NULL;
    ports_name to;
    bool peer_changed = false;

    plat_mutex_lock(&node->lock);
    lock_port(p);
    if (ports_name_eq(&p->peer_node, &ev->u.observe_proxy.proxy_node) &&
        ports_name_eq(&p->peer_port, &ev->u.observe_proxy.proxy_port)) {
        if (p->state == PORT_RECEIVING) {
            /* Bypass the proxy and tell it the last message it must forward. */
            uint64_t seq = p->next_control_sequence_num_to_send++;
            update_port_peer_address(node, &ref->name, p, &ev->u.observe_proxy.proxy_target_node,
                                     &ev->u.observe_proxy.proxy_target_port);
            to_send = new_event(PORTS_EVENT_OBSERVE_PROXY_ACK, &ev->u.observe_proxy.proxy_port,
                                &ref->name, seq);
            to_send->u.observe_proxy_ack.last_sequence_num = p->next_sequence_num_to_send - 1;
            to = ev->u.observe_proxy.proxy_node;
            peer_changed = true;
        } else {
            /*
             * We are a proxy too and cannot say which message will be the
             * last: once we are gone, ask the other proxy to try again.
             */
            ports_event *retry =
                new_event(PORTS_EVENT_OBSERVE_PROXY_ACK, &ev->u.observe_proxy.proxy_port,
                          &ref->name, PORTS_INVALID_SEQUENCE_NUM);
            retry->u.observe_proxy_ack.last_sequence_num = PORTS_INVALID_SEQUENCE_NUM;
            if (p->send_on_proxy_removal)
                ports_event_destroy(p->send_on_proxy_removal);
            p->send_on_proxy_removal = retry;
            p->send_on_proxy_removal_node = ev->u.observe_proxy.proxy_node;
        }
    } else {
        /* Pass it along the cycle until it reaches the port that refers to the proxy. */
        to = p->peer_node;
        ev->port_name = p->peer_port;
        ev->from_port = ref->name;
        ev->control_sequence_num = p->next_control_sequence_num_to_send++;
        if (p->state == PORT_BUFFERING)
            control_queue_push(p, ev, &to);
        else
            to_send = ev;
        ev = NULL;
    }
    unlock_port(p);
    plat_mutex_unlock(&node->lock);

    ports_event_destroy(ev);
    if (to_send)
        forward(node, &to, to_send);
    if (peer_changed) {
        /* The bypassed proxy may not have passed these on before it went. */
        maybe_resend_ack(node, ref);
        maybe_resend_ack_request(node, ref);
        status_changed(node, ref);
        reconcile_with_losses(node, &ref->name);
    }
    return PORTS_OK;
}

static int on_observe_proxy_ack(ports_node *node, const ports_port_ref *ref, ports_event *ev)
{
    uint64_t last = ev->u.observe_proxy_ack.last_sequence_num;
    ports_event_destroy(ev);
    if (!ref->port)
        return PORTS_ERROR_PORT_UNKNOWN;
    bool remove_now;
    lock_port(ref->port);
    if (ref->port->state != PORT_PROXYING) {
        /* Removed meanwhile (closing); nothing left to do. */
        unlock_port(ref->port);
        return PORTS_ERROR_PORT_STATE_UNEXPECTED;
    }
    /* An invalid number means "try again": the acknowledger was a proxy. */
    remove_now = last != PORTS_INVALID_SEQUENCE_NUM;
    if (remove_now) {
        ref->port->remove_proxy_on_last_message = true;
        ref->port->last_sequence_num_to_receive = last;
    }
    unlock_port(ref->port);
    if (remove_now)
        try_remove_proxy(node, ref);
    else
        initiate_proxy_removal(node, ref);
    return PORTS_OK;
}

static int on_observe_closure(ports_node *node, const ports_port_ref *ref, ports_event *ev)
{
    if (!ref->port) {
        ports_event_destroy(ev);
        return PORTS_OK;
    }
    ports_port *p = ref->port;
    bool notify = false, try_remove = false;
    ports_name to;

    lock_port(p);
    /*
     * A port that already knows where its stream ends (a closure seen, or a
     * route cut by a loss) has dropped whatever came after that point: a
     * later closure can only lower it, never promise more, here or
     * downstream.
     */
    uint64_t last = ev->u.observe_closure.last_sequence_num;
    uint64_t accepted_end = p->mq.next_seq + p->mq.ready_count - 1;
    if (p->peer_closed && p->last_sequence_num_to_receive < last)
        last = p->last_sequence_num_to_receive > accepted_end ? p->last_sequence_num_to_receive
                                                              : accepted_end;
    ev->u.observe_closure.last_sequence_num = last;
    p->peer_closed = true;
    p->last_sequence_num_to_receive = last;
    ports_event *beyond = NULL;
    mq_take_beyond(&p->mq, last, &beyond);
    /*
     * Always pass it on, even past the receiving port: dead-end proxies
     * beyond it learn they can go.
     */
    if (p->state == PORT_RECEIVING) {
        notify = true;
        ev->u.observe_closure.last_sequence_num = p->next_sequence_num_to_send - 1;
        /* Everything we sent counts as read by the closed side. */
        p->last_sequence_num_acknowledged = p->next_sequence_num_to_send - 1;
    } else {
        p->remove_proxy_on_last_message = true;
        try_remove = p->state == PORT_PROXYING;
    }
    to = p->peer_node;
    ev->port_name = p->peer_port;
    ev->from_port = ref->name;
    ev->control_sequence_num = p->next_control_sequence_num_to_send++;
    if (p->state == PORT_BUFFERING) {
        control_queue_push(p, ev, &to);
        ev = NULL;
    }
    unlock_port(p);
    close_carried_ports(node, beyond);

    if (try_remove)
        try_remove_proxy(node, ref);
    if (ev)
        forward(node, &to, ev);
    if (notify)
        status_changed(node, ref);
    return PORTS_OK;
}

static int on_merge_port(ports_node *node, const ports_port_ref *ref, const ports_name *from,
                         ports_event *ev)
{
    ports_name new_name = ev->u.merge_port.new_port_name;
    ports_port_descriptor desc = ev->u.merge_port.descriptor;
    ports_event_destroy(ev);

    /* Accept first, so the other cycle's receiving port is never stranded. */
    int rv = accept_port(node, from, &new_name, &desc);
    if (rv != PORTS_OK)
        return rv;
    ports_port_ref new_ref;
    if (ports_node_get_port(node, &new_name, &new_ref) != PORTS_OK)
        return PORTS_ERROR_PORT_UNKNOWN;

    bool allowed = false;
    if (ref->port) {
        lock_port(ref->port);
        allowed = ref->port->pending_merge_peer;
        ref->port->pending_merge_peer = false;
        unlock_port(ref->port);
    }
    if (!allowed) {
        ports_node_close_port(node, &new_ref);
        ports_port_ref_release(&new_ref);
        return ref->port ? PORTS_ERROR_BAD_PEER : PORTS_ERROR_PORT_UNKNOWN;
    }
    rv = merge_ports_internal(node, ref, &new_ref, false);
    ports_port_ref_release(&new_ref);
    return rv;
}

static int on_read_ack_request(ports_node *node, const ports_port_ref *ref, ports_event *ev)
{
    if (!ref->port) {
        ports_event_destroy(ev);
        return PORTS_ERROR_PORT_UNKNOWN;
    }
    ports_port *p = ref->port;
    ports_event *to_send = NULL;
    ports_name to;
    uint64_t want = ev->u.read_ack_request.sequence_num_to_acknowledge;

    lock_port(p);
    to = p->peer_node;
    if (p->state == PORT_PROXYING || p->state == PORT_BUFFERING) {
        /* Not ours to answer: the port that reads lives past us. */
        ev->port_name = p->peer_port;
        ev->from_port = ref->name;
        ev->control_sequence_num = p->next_control_sequence_num_to_send++;
        if (p->state == PORT_BUFFERING)
            control_queue_push(p, ev, &to);
        else
            to_send = ev;
        ev = NULL;
    } else {
        uint64_t current = p->mq.next_seq - 1;
        if (current >= want) {
            /* Already read that far: acknowledge right away. */
            to_send = new_event(PORTS_EVENT_USER_MESSAGE_READ_ACK, &p->peer_port, &ref->name,
                                p->next_control_sequence_num_to_send++);
            to_send->u.read_ack.sequence_num_acknowledged = current;
            if (current > p->sequence_num_to_acknowledge)
                p->sequence_num_to_acknowledge = current;
        } else {
            /* Requests may cross: keep the earliest outstanding one. */
            bool queued = p->sequence_num_to_acknowledge > current;
            if (!queued || p->sequence_num_to_acknowledge > want)
                p->sequence_num_to_acknowledge = want;
        }
    }
    unlock_port(p);
    ports_event_destroy(ev);
    if (to_send)
        forward(node, &to, to_send);
    return PORTS_OK;
}

static int on_read_ack(ports_node *node, const ports_port_ref *ref, ports_event *ev)
{
    uint64_t acked = ev->u.read_ack.sequence_num_acknowledged;
    ports_event_destroy(ev);
    if (!ref->port)
        return PORTS_ERROR_PORT_UNKNOWN;
    ports_port *p = ref->port;
    ports_event *request = NULL;
    ports_name to;

    lock_port(p);
    if (p->state != PORT_RECEIVING) {
        /* Reached a proxy; the receiving port asks again when its peer changes. */
        unlock_port(p);
        return PORTS_OK;
    }
    if (acked >= p->next_sequence_num_to_send) {
        unlock_port(p);
        return PORTS_ERROR_BAD_PEER; /* acknowledges a message never sent */
    }
    if (acked <= p->last_sequence_num_acknowledged) {
        unlock_port(p);
        return PORTS_OK; /* late or duplicate */
    }
    p->last_sequence_num_acknowledged = acked;
    if (p->sequence_num_acknowledge_interval && !p->peer_closed) {
        request = new_event(PORTS_EVENT_USER_MESSAGE_READ_ACK_REQUEST, &p->peer_port, &ref->name,
                            p->next_control_sequence_num_to_send++);
        request->u.read_ack_request.sequence_num_to_acknowledge =
            acked + p->sequence_num_acknowledge_interval;
        to = p->peer_node;
    }
    unlock_port(p);
    if (request)
        forward(node, &to, request);
    status_changed(node, ref);
    return PORTS_OK;
}

static int on_update_previous_peer(ports_node *node, const ports_port_ref *ref, ports_event *ev)
{
    ports_name new_node = ev->u.update_previous_peer.new_node;
    ports_name new_port = ev->u.update_previous_peer.new_port;
    ports_event_destroy(ev);
    if (!ref->port)
        return PORTS_ERROR_PORT_UNKNOWN;
    if (!ports_name_is_valid(&new_node) || !ports_name_is_valid(&new_port))
        return PORTS_ERROR_BAD_PEER;
    lock_port(ref->port);
    ref->port->prev_node = new_node;
    ref->port->prev_port = new_port;
    /* dispatch() increments once this event is done, landing on the first. */
    ref->port->next_control_sequence_num_to_receive = PORTS_INITIAL_SEQUENCE_NUM - 1;
    unlock_port(ref->port);
    reconcile_with_losses(node, &ref->name);
    return PORTS_OK;
}

static int accept_internal(ports_node *node, const ports_port_ref *ref, const ports_name *from,
                           ports_event *ev)
{
    switch (ev->type) {
    case PORTS_EVENT_USER_MESSAGE:
        return on_user_message(node, ref, ev);
    case PORTS_EVENT_PORT_ACCEPTED:
        return on_port_accepted(node, ref, from, ev);
    case PORTS_EVENT_OBSERVE_PROXY:
        return on_observe_proxy(node, ref, from, ev);
    case PORTS_EVENT_OBSERVE_PROXY_ACK:
        return on_observe_proxy_ack(node, ref, ev);
    case PORTS_EVENT_OBSERVE_CLOSURE:
        return on_observe_closure(node, ref, ev);
    case PORTS_EVENT_MERGE_PORT:
        return on_merge_port(node, ref, from, ev);
    case PORTS_EVENT_USER_MESSAGE_READ_ACK_REQUEST:
        return on_read_ack_request(node, ref, ev);
    case PORTS_EVENT_USER_MESSAGE_READ_ACK:
        return on_read_ack(node, ref, ev);
    case PORTS_EVENT_UPDATE_PREVIOUS_PEER:
        return on_update_previous_peer(node, ref, ev);
    }
    ports_event_destroy(ev);
    return PORTS_ERROR_MALFORMED;
}

/* ---------------------------------------------------------- node loss */

typedef struct ref_vec {
    ports_port_ref *items;
    size_t count, cap;
} ref_vec;

static void ref_vec_push(ref_vec *v, const ports_name *name, ports_port *p)
{
    if (v->count == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 8;
        v->items = realloc(v->items, v->cap * sizeof(*v->items));
        if (!v->items)
            die_oom();
    }
    port_addref(p);
    v->items[v->count].name = *name;
    v->items[v->count].port = p;
    v->count++;
}

/* Node lock held. */
static void mark_set_dead(peer_set *set, ref_vec *notify, ref_vec *dead, ports_event **undelivered)
{
    for (size_t i = 0; i < set->count; i++) {
        ports_port *p = set->items[i].port;
        lock_port(p);
        if (p->state != PORT_CLOSED) {
            /* A broken route: unlike a closure, messages in flight are lost. */
            if (mark_peer_lost(p, undelivered) && p->state == PORT_RECEIVING)
                ref_vec_push(notify, &set->items[i].name, p);
            /*
             * A proxy with no live peer cannot be removed the normal way:
             * it will announce its own death instead.
             */
            if (p->state != PORT_RECEIVING && p->state != PORT_UNINITIALIZED) {
                p->state = PORT_CLOSED;
                ref_vec_push(dead, &set->items[i].name, p);
                take_all_held_events(p, undelivered);
            }
        }
        unlock_port(p);
    }
}

/*
 * Every local port whose peer is peer_port@peer_node (or any port on
 * peer_node, when peer_port is invalid) loses its route.
 */
static void destroy_all_ports_with_peer(ports_node *node, const ports_name *peer_node,
                                        const ports_name *peer_port)
{
    ref_vec notify = {0}, dead = {0};
    ports_event *undelivered = NULL;

    plat_mutex_lock(&node->lock);
    name_map *by_port = name_map_get(&node->peer_nodes, peer_node);
    if (by_port) {
        if (ports_name_is_valid(peer_port)) {
            peer_set *set = name_map_get(by_port, peer_port);
            if (set)
                mark_set_dead(set, &notify, &dead, &undelivered);
        } else {
            for (size_t i = 0; i < by_port->cap; i++)
                if (by_port->slots[i].value)
                    mark_set_dead(by_port->slots[i].value, &notify, &dead, &undelivered);
        }
    }
    plat_mutex_unlock(&node->lock);

    for (size_t i = 0; i < dead.count; i++)
        erase_port(node, &dead.items[i].name);
    for (size_t i = 0; i < notify.count; i++)
        status_changed(node, &notify.items[i]);
    for (size_t i = 0; i < dead.count; i++) {
        remember_dead_port(node, &node->name, &dead.items[i].name);
        ports_event *ev = new_event(PORTS_EVENT_OBSERVE_PROXY, &PORTS_INVALID_NAME, NULL,
                                    PORTS_INVALID_SEQUENCE_NUM);
        ev->u.observe_proxy.proxy_node = node->name;
        ev->u.observe_proxy.proxy_port = dead.items[i].name;
        node->delegate.broadcast_event(node->delegate.ctx, ev);
        /* The port pointing at the dead proxy may live here too. */
        destroy_all_ports_with_peer(node, &node->name, &dead.items[i].name);
    }
    close_carried_ports(node, undelivered);
    for (size_t i = 0; i < notify.count; i++)
        ports_port_ref_release(&notify.items[i]);
    for (size_t i = 0; i < dead.count; i++)
        ports_port_ref_release(&dead.items[i]);
    free(notify.items);
    free(dead.items);
}

/*
 * A port whose previous peer was on the lost node was still waiting for that
 * node to hand over (a proxy there never finished removing itself), so its
 * route is broken even though its peer is alive. End the route in both
 * directions: the port stops expecting anything, and its peer hears an
 * ObserveClosure carrying the last message that did get through.
 */
static void end_routes_from_lost_node(ports_node *node, const ports_name *lost)
{
    size_t n;
    ports_port_ref *refs = snapshot_ports(node, &n);
    for (size_t i = 0; i < n; i++) {
        ports_port *p = refs[i].port;
        ports_event *closure = NULL, *undelivered = NULL;
        bool notify = false, try_remove = false;
        ports_name to;

        lock_port(p);
        /*
         * Ports whose peer was there too were cut by the peer rule already;
         * a receiving one still has to stop holding events for its prev.
         */
        bool receiving = p->state == PORT_RECEIVING;
        bool proxy = p->state == PORT_BUFFERING || p->state == PORT_PROXYING;
        if (!ports_name_eq(&p->prev_node, lost) || (!receiving && !proxy) ||
            (proxy && ports_name_eq(&p->peer_node, lost))) {
            unlock_port(p);
            continue;
        }
        to = p->peer_node;
        if (p->state == PORT_RECEIVING) {
            p->prev_lost = true;
            if (mark_peer_lost(p, &undelivered)) {
                notify = true;
                closure = new_event(PORTS_EVENT_OBSERVE_CLOSURE, &p->peer_port, &refs[i].name,
                                    p->next_control_sequence_num_to_send++);
                closure->u.observe_closure.last_sequence_num = p->next_sequence_num_to_send - 1;
            }
            /* Early events from others can no longer become valid. */
            take_pending_events(p, &undelivered);
        } else {
            /*
             * A proxy upstream of nothing: nothing more can reach it, but
             * what it holds arrived before the loss and still goes on (a
             * buffering proxy cannot hand it over before its successor
             * exists; another thread may be forwarding one right now). So the
             * stream ends after the last message it holds. The successor
             * hears that in order -- buffering, the closure waits in the
             * control queue for PortAccepted, as the successor may not exist
             * yet -- and the proxy removes itself once past that message,
             * handing our dead previous peer on as the successor's (which
             * then sees the loss itself and stops holding events only we
             * could have released). A port cut while it was receiving and
             * moved since told its successor all this in its descriptor: a
             * repeated loss notice must not cut it again.
             */
            if (!p->prev_lost) {
                p->prev_lost = true;
                mark_peer_lost(p, &undelivered);
                closure = new_event(PORTS_EVENT_OBSERVE_CLOSURE, &p->peer_port, &refs[i].name,
                                    p->next_control_sequence_num_to_send++);
                closure->u.observe_closure.last_sequence_num = p->last_sequence_num_to_receive;
                if (p->state == PORT_BUFFERING) {
                    control_queue_push(p, closure, &to);
                    closure = NULL;
                }
            }
            p->remove_proxy_on_last_message = true;
            try_remove = p->state == PORT_PROXYING;
        }
        unlock_port(p);

        if (closure)
            forward(node, &to, closure);
        if (try_remove)
            try_remove_proxy(node, &refs[i]);
        if (notify)
            status_changed(node, &refs[i]);
        close_carried_ports(node, undelivered);
    }
    release_refs(refs, n);
}

int ports_node_lost_connection_to_node(ports_node *node, const ports_name *lost)
{
    if (!node || !lost || !ports_name_is_valid(lost) || is_self(node, lost))
        return PORTS_ERROR_INVALID_ARGUMENT;
    plat_mutex_lock(&node->lock);
    if (name_map_put(&node->lost_nodes, lost, LOST_MARK) < 0)
        die_oom();
    plat_mutex_unlock(&node->lock);
    destroy_all_ports_with_peer(node, lost, &PORTS_INVALID_NAME);
    end_routes_from_lost_node(node, lost);
    return PORTS_OK;
}

/*
 * Bounded: a dead proxy is remembered only so routes that learn of it late
 * still break. Past the bound such a route is left to the lost-node check
 * (its node is usually lost too) or to its user closing it.
 */
#define DEAD_PORT_MEMORY 65536u

static void remember_dead_port(ports_node *node, const ports_name *port_node,
                               const ports_name *port)
{
    plat_mutex_lock(&node->lock);
    if (node->dead_ports.count < DEAD_PORT_MEMORY && !name_map_get(&node->dead_ports, port)) {
        ports_name *owner = xmalloc(sizeof(*owner));
        *owner = *port_node;
        if (name_map_put(&node->dead_ports, port, owner) < 0)
            die_oom();
    }
    plat_mutex_unlock(&node->lock);
}

/*
 * Called after a port's peer or previous peer was set from something a
 * message told us: if that names a node we lost or a proxy announced dead,
 * the route is broken already, so break it now rather than wait forever.
 */
static void reconcile_with_losses(ports_node *node, const ports_name *port_name)
{
    ports_port_ref ref;
    if (ports_node_get_port(node, port_name, &ref) != PORTS_OK)
        return;
    lock_port(ref.port);
    ports_name peer_node = ref.port->peer_node, peer_port = ref.port->peer_port;
    ports_name prev_node = ref.port->prev_node;
    unlock_port(ref.port);
    ports_port_ref_release(&ref);

    plat_mutex_lock(&node->lock);
    bool peer_lost = name_map_get(&node->lost_nodes, &peer_node) != NULL;
    bool prev_lost = name_map_get(&node->lost_nodes, &prev_node) != NULL;
    ports_name *dead_owner = name_map_get(&node->dead_ports, &peer_port);
    bool peer_dead = dead_owner && ports_name_eq(dead_owner, &peer_node);
    plat_mutex_unlock(&node->lock);

    if (peer_lost)
        destroy_all_ports_with_peer(node, &peer_node, &PORTS_INVALID_NAME);
    else if (peer_dead)
        destroy_all_ports_with_peer(node, &peer_node, &peer_port);
    if (prev_lost)
        end_routes_from_lost_node(node, &prev_node);
}

/* ---------------------------------------------------------------- acks */

int ports_node_set_ack_request_interval(ports_node *node, const ports_port_ref *ref,
                                        uint64_t interval)
{
    if (!node || !ref || !ref->port)
        return PORTS_ERROR_INVALID_ARGUMENT;
    ports_port *p = ref->port;
    lock_port(p);
    if (p->state != PORT_RECEIVING) {
        unlock_port(p);
        return PORTS_ERROR_PORT_STATE_UNEXPECTED;
    }
    p->sequence_num_acknowledge_interval = interval;
    if (!interval) {
        unlock_port(p);
        return PORTS_OK;
    }
    ports_name to = p->peer_node;
    ports_event *ev = new_event(PORTS_EVENT_USER_MESSAGE_READ_ACK_REQUEST, &p->peer_port,
                                &ref->name, p->next_control_sequence_num_to_send++);
    ev->u.read_ack_request.sequence_num_to_acknowledge =
        p->last_sequence_num_acknowledged + interval;
    unlock_port(p);
    forward(node, &to, ev);
    return PORTS_OK;
}

/* --------------------------------------------------------------- merge */

int ports_node_allow_merge(ports_node *node, const ports_port_ref *ref)
{
    if (!node || !ref || !ref->port)
        return PORTS_ERROR_INVALID_ARGUMENT;
    lock_port(ref->port);
    int rv = PORTS_ERROR_PORT_STATE_UNEXPECTED;
    if (ref->port->state == PORT_RECEIVING) {
        ref->port->pending_merge_peer = true;
        rv = PORTS_OK;
    }
    unlock_port(ref->port);
    return rv;
}

/* Port lock held. A port can be merged only before any message moved. */
static bool mergeable(const ports_port *p)
{
    return p->state == PORT_RECEIVING &&
           p->next_sequence_num_to_send == PORTS_INITIAL_SEQUENCE_NUM &&
           p->mq.next_seq == PORTS_INITIAL_SEQUENCE_NUM;
}

int ports_node_merge_ports(ports_node *node, const ports_port_ref *ref, const ports_name *dest_node,
                           const ports_name *dest_port)
{
    if (!node || !ref || !ref->port || !dest_node || !dest_port ||
        !ports_name_is_valid(dest_node) || !ports_name_is_valid(dest_port))
        return PORTS_ERROR_INVALID_ARGUMENT;
    if (is_self(node, dest_node)) {
        ports_port_ref other;
        if (ports_node_get_port(node, dest_port, &other) != PORTS_OK)
            return PORTS_ERROR_PORT_UNKNOWN;
        int rv = ports_node_merge_local_ports(node, ref, &other);
        ports_port_ref_release(&other);
        return rv;
    }

    ports_port *p = ref->port;
    ports_name new_name = ref->name;
    ports_port_descriptor desc;
    pending_update update;

    plat_mutex_lock(&node->lock);
    lock_port(p);
    if (!mergeable(p)) {
        unlock_port(p);
        plat_mutex_unlock(&node->lock);
        return PORTS_ERROR_PORT_STATE_UNEXPECTED;
    }
    /* The port travels to dest_node and is merged into its cycle there. */
    convert_to_proxy(node, p, &new_name, dest_node, &desc, &update);
    unlock_port(p);
    plat_mutex_unlock(&node->lock);

    send_update(node, &update);
    ports_port_ref local_peer;
    if (is_self(node, &desc.peer_node) &&
        ports_node_get_port(node, &desc.peer_port, &local_peer) == PORTS_OK) {
        status_changed(node, &local_peer);
        ports_port_ref_release(&local_peer);
    }
    ports_event *ev =
        new_event(PORTS_EVENT_MERGE_PORT, dest_port, NULL, PORTS_INVALID_SEQUENCE_NUM);
    ev->u.merge_port.new_port_name = new_name;
    ev->u.merge_port.descriptor = desc;
    forward(node, dest_node, ev);
    return PORTS_OK;
}

int ports_node_merge_local_ports(ports_node *node, const ports_port_ref *a, const ports_port_ref *b)
{
    if (!node || !a || !b || !a->port || !b->port || a->port == b->port)
        return PORTS_ERROR_INVALID_ARGUMENT;
    return merge_ports_internal(node, a, b, true);
}

/* Node lock and both port locks held. */
static void swap_port_peers(ports_node *node, const ports_port_ref *a, const ports_port_ref *b)
{
    ports_port *x = a->port, *y = b->port;
    peer_map_remove(node, &x->peer_node, &x->peer_port, &a->name);
    peer_map_remove(node, &y->peer_node, &y->peer_port, &b->name);
    ports_name node_tmp = x->peer_node, port_tmp = x->peer_port;
    x->peer_node = y->peer_node;
    x->peer_port = y->peer_port;
    y->peer_node = node_tmp;
    y->peer_port = port_tmp;
    peer_map_add(node, &x->peer_node, &x->peer_port, &a->name, x);
    peer_map_add(node, &y->peer_node, &y->peer_port, &b->name, y);
}

/*
 * A merge whose forwarding failed puts both ports back as they were, as
 * receiving ports with their old peers, so the caller can close them -- but
 * only if both are still the proxies it made. One that a loss cut off
 * meanwhile is already closed and out of the maps, and its death announced:
 * there is nothing to put back, so the merge must stand. Returns true if it
 * undid the merge.
 */
static bool undo_merge(ports_node *node, const ports_port_ref *a, const ports_port_ref *b,
                       const uint64_t saved_seq[2])
{
    const ports_port_ref *refs[2] = {a, b};
    ports_port *lock_set[2] = {a->port, b->port};
    plat_mutex_lock(&node->lock);
    lock_ports(lock_set, 2);
    bool undo = a->port->state == PORT_PROXYING && b->port->state == PORT_PROXYING;
    if (undo) {
        swap_port_peers(node, a, b);
        for (int i = 0; i < 2; i++) {
            ports_port *p = refs[i]->port;
            p->remove_proxy_on_last_message = false;
            p->merging = false;
            p->state = PORT_RECEIVING;
            p->next_control_sequence_num_to_send = saved_seq[i];
        }
    }
    unlock_ports(lock_set, 2);
    plat_mutex_unlock(&node->lock);
    return undo;
}

static int merge_ports_internal(ports_node *node, const ports_port_ref *a, const ports_port_ref *b,
                                bool allow_close_on_bad_state)
{
    const ports_port_ref *refs[2] = {a, b};
    ports_port *lock_set[2] = {a->port, b->port};
    pending_update updates[2];
    uint64_t saved_seq[2];

    plat_mutex_lock(&node->lock);
    lock_ports(lock_set, 2);
    ports_port *x = a->port, *y = b->port;
    bool ok = mergeable(x) && mergeable(y) &&
              !(is_self(node, &x->peer_node) && ports_name_eq(&x->peer_port, &b->name)) &&
              !(is_self(node, &y->peer_node) && ports_name_eq(&y->peer_port, &a->name));
    if (!ok) {
        /* Close only ports that were sane, so a proxy is never cut abruptly. */
        bool close_x = x->state == PORT_RECEIVING || allow_close_on_bad_state;
        bool close_y = y->state == PORT_RECEIVING || allow_close_on_bad_state;
        unlock_ports(lock_set, 2);
        plat_mutex_unlock(&node->lock);
        if (close_x)
            ports_node_close_port(node, a);
        if (close_y)
            ports_node_close_port(node, b);
        return PORTS_ERROR_PORT_STATE_UNEXPECTED;
    }
    for (int i = 0; i < 2; i++) {
        ports_port *p = refs[i]->port;
        const ports_port_ref *other = refs[1 - i];
        updates[i].receiver_node = p->peer_node;
        updates[i].receiver_port = p->peer_port;
        updates[i].from_port = refs[i]->name;
        updates[i].sequence_num = p->next_control_sequence_num_to_send++;
        updates[i].new_prev_node = node->name;
        updates[i].new_prev_port = other->name;
    }
    /* Each takes the other's peer and becomes a proxy to it. */
    swap_port_peers(node, a, b);
    for (int i = 0; i < 2; i++) {
        ports_port *p = refs[i]->port;
        p->state = PORT_PROXYING;
        /*
         * From here on another thread may hand this proxy its last message.
         * Were it to remove itself then, its UpdatePreviousPeer would be
         * numbered before the ObserveClosure sent below, and the new peer,
         * already listening to our previous peer, would never take the
         * closure. So removal waits for the merge to finish.
         */
        p->merging = true;
        saved_seq[i] = p->next_control_sequence_num_to_send;
        p->next_control_sequence_num_to_send = PORTS_INITIAL_SEQUENCE_NUM;
        if (p->peer_closed)
            p->remove_proxy_on_last_message = true;
    }
    unlock_ports(lock_set, 2);
    plat_mutex_unlock(&node->lock);

    int rv = forward_user_messages_from_proxy(node, a);
    if (rv == PORTS_OK)
        rv = forward_user_messages_from_proxy(node, b);
    if (rv != PORTS_OK && !undo_merge(node, a, b, saved_seq)) {
        /*
         * Not a refusal: a loss cut one of them off meanwhile (its new peer
         * was on a lost node, and telling that node anything brought the
         * notice again). The merge stands, with that route broken; what
         * the other holds still goes on.
         */
        forward_user_messages_from_proxy(node, a);
        forward_user_messages_from_proxy(node, b);
        rv = PORTS_OK;
    }
    if (rv != PORTS_OK) {
        ports_node_close_port(node, a);
        ports_node_close_port(node, b);
        return PORTS_ERROR_PORT_STATE_UNEXPECTED;
    }

    for (int i = 0; i < 2; i++)
        send_update(node, &updates[i]);
    for (int i = 0; i < 2; i++)
        reconcile_with_losses(node, &refs[i]->name);
    for (int i = 0; i < 2; i++) {
        ports_port *p = refs[i]->port;
        ports_event *closure = NULL;
        ports_name to;
        lock_port(p);
        bool remove_now = p->remove_proxy_on_last_message;
        if (p->state == PORT_PROXYING && (remove_now || p->peer_closed)) {
            /* One cycle had already ended: tell the other. */
            to = p->peer_node;
            closure = new_event(PORTS_EVENT_OBSERVE_CLOSURE, &p->peer_port, &refs[i]->name,
                                p->next_control_sequence_num_to_send++);
            closure->u.observe_closure.last_sequence_num = p->last_sequence_num_to_receive;
        }
        /*
         * Anyone who asks for removal from now on removes the proxy itself;
         * anyone who asked before is seen in remove_now.
         */
        p->merging = false;
        unlock_port(p);
        if (remove_now)
            try_remove_proxy(node, refs[i]);
        else
            initiate_proxy_removal(node, refs[i]);
        if (closure)
            forward(node, &to, closure);
    }
    return PORTS_OK;
}

/* ---------------------------------------------------------------- debug */

static const char *state_name(port_state st)
{
    switch (st) {
    case PORT_UNINITIALIZED:
        return "uninitialized";
    case PORT_RECEIVING:
        return "receiving";
    case PORT_BUFFERING:
        return "buffering";
    case PORT_PROXYING:
        return "proxying";
    case PORT_CLOSED:
        return "closed";
    }
    return "?";
}

void ports_node_dump(ports_node *node, FILE *out)
{
    size_t n;
    ports_port_ref *refs = snapshot_ports(node, &n);
    char a[PORTS_NAME_STRLEN], b[PORTS_NAME_STRLEN], c[PORTS_NAME_STRLEN], d[PORTS_NAME_STRLEN],
        e[PORTS_NAME_STRLEN];
    for (size_t i = 0; i < n; i++) {
        ports_port *p = refs[i].port;
        lock_port(p);
        fprintf(out,
                "  %s %s peer=%s@%s prev=%s@%s send=%llu recv_next=%llu last_recv=%llu "
                "queued=%zu pending=%zu closed=%d lost=%d remove_on_last=%d fwd=%u\n",
                ports_name_str(&refs[i].name, a), state_name(p->state),
                ports_name_str(&p->peer_port, b), ports_name_str(&p->peer_node, c),
                ports_name_str(&p->prev_port, d), ports_name_str(&p->prev_node, e),
                (unsigned long long)p->next_sequence_num_to_send,
                (unsigned long long)p->mq.next_seq,
                (unsigned long long)p->last_sequence_num_to_receive, mq_count(&p->mq),
                p->pending_total, p->peer_closed, p->peer_lost_unexpectedly,
                p->remove_proxy_on_last_message, p->forwarding);
        unlock_port(p);
    }
    release_refs(refs, n);
}
