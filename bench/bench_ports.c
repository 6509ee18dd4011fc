/*
 * bench_ports: throughput of the ports layer on its own (no threads, no
 * sockets), as ratios to baselines measured in the same run.
 *
 * The machine this runs on is shared and noisy, so absolute figures mean
 * little; every case is run round-robin with the others (run 1 of every case,
 * then run 2 of every case, ...) so a burst of noise spreads across all of
 * them, and the table reports the median run of each and its ratio to:
 *
 *   fifo   a ring-buffer push + pop of one pointer: the cost of handing an
 *          event from one place to another, and nothing else;
 *   base   malloc + memcpy of the payload, one mutex lock/unlock pair around
 *          an intrusive-list push + pop, free: the irreducible "allocate,
 *          lock, queue, free" of any message-passing layer.
 *
 * Cases:
 *   local    one node, a pair of ports: send a -> get b (and a round trip).
 *   remote   a route between node 0 and node K that has been built by moving
 *            an end 0 -> 1 -> ... -> K and has collapsed back to two ports;
 *            events cross nodes through an in-memory FIFO ("obj": the event
 *            object is passed as is) or as bytes ("wire": serialise + payload
 *            bytes on forward, parse on delivery, as a channel would).
 *   move     the end of a route is sent inside messages across K nodes and
 *            back again (alternately), each node forwarding it as soon as it
 *            can read it, then the FIFO is drained until the route is two
 *            ports again (checked by port counts). One op = one K-hop move.
 *            "+M msgs": M messages are sent into the route just as the move
 *            starts, so each is forwarded by every proxy on the way; the
 *            derived row "via proxies" is (t(move+M) - t(move)) / M, the cost
 *            of one message travelling a K-proxy chain.
 *
 * Each case sets up its nodes, times only its loop, then closes every port,
 * drains the FIFO, checks every node is empty and frees everything (so a
 * run under ASan or valgrind shows no leak). A warm-up pass runs first.
 * Port names come from a seeded generator, as in the tests, so a run is
 * replayable and the figures do not include a getrandom(2) per name.
 *
 * Usage: bench_ports [--quick] [--iterations N] [--runs R] [--hops K]
 *                    [--payload BYTES]
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "ports/ports.h"

#define BENCH_OK(call) BENCH_CHECK((call) == PORTS_OK)

/* Nodes in a chain: 0..K. Eight is ample for a chain benchmark and keeps arrays fixed. */
#define BENCH_MAX_NODES 8
#define BENCH_MAX_HOPS (BENCH_MAX_NODES - 1)
/* Payload a "small message" carries: a typical small Mojo control message. */
#define BENCH_DEFAULT_PAYLOAD 32u
/* Largest payload allowed on the command line; keeps the stack buffer bounded. */
#define BENCH_MAX_PAYLOAD 4096u
/* Messages sent into the route as a move starts ("+M msgs" cases). */
#define BENCH_IN_FLIGHT 64u
/*
 * Base iteration count (messages per run for the message cases). The default
 * (5 runs) takes ~8 s here, leaving room under 20 s on a slower or busier
 * machine; --quick does a fifth of the work per run and 3 runs (~1 s, a few
 * seconds under ASan) for CI smoke.
 */
#define BENCH_DEFAULT_ITERATIONS 300000u
#define BENCH_DEFAULT_RUNS 5u
#define BENCH_QUICK_DIVISOR 5u
#define BENCH_QUICK_RUNS 3u
/* A move is ~8 events per hop plus checks, so move cases do this many times fewer ops. */
#define BENCH_MOVE_DIVISOR 40u
/* The ring of the in-memory FIFO starts this big and doubles as needed. */
#define BENCH_FIFO_MIN_CAP 64u

typedef struct bench_config {
    uint64_t iterations;
    unsigned runs;
    int hops;
    size_t payload;
} bench_config;

/* ------------------------------------------------------------ payloads */

static uint8_t g_payload[BENCH_MAX_PAYLOAD];

static ports_event *new_message(size_t len, uint8_t tag)
{
    g_payload[0] = tag;
    ports_payload *p = ports_payload_bytes_new(g_payload, len);
    BENCH_CHECK(p != NULL);
    ports_event *ev = ports_user_message_new(0, p);
    BENCH_CHECK(ev != NULL);
    return ev;
}

/* Checks a received message is the one expected, then frees it. */
static void consume_message(ports_event *ev, size_t len, uint8_t tag)
{
    BENCH_CHECK(ev != NULL && ev->type == PORTS_EVENT_USER_MESSAGE);
    const ports_payload *p = ev->u.user.payload;
    BENCH_CHECK(p != NULL && p->size == len);
    BENCH_CHECK(len == 0 || ports_payload_bytes_data(p)[0] == tag);
    ports_event_destroy(ev);
}

/* ------------------------------------------------------------ baselines */

typedef struct ring {
    void **slots;
    size_t cap;        /* power of two */
    size_t head, tail; /* free-running */
} ring;

static uint64_t case_fifo(const bench_config *cfg, uint64_t iters, uint64_t *events)
{
    (void)cfg;
    void *slots[BENCH_FIFO_MIN_CAP];
    ring r = {slots, BENCH_FIFO_MIN_CAP, 0, 0};
    uintptr_t sum = 0;
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < iters; i++) {
        r.slots[r.tail++ & (r.cap - 1)] = (void *)(uintptr_t)(i + 1);
        BENCH_ESCAPE(&r);
        sum += (uintptr_t)r.slots[r.head++ & (r.cap - 1)];
        BENCH_ESCAPE(&r);
    }
    uint64_t t = bench_now_ns() - t0;
    BENCH_CHECK(r.head == r.tail);
    BENCH_CHECK(iters == 0 || sum != 0);
    *events = 0;
    return t;
}

typedef struct base_msg {
    struct base_msg *next;
    size_t len;
    uint8_t data[];
} base_msg;

static uint64_t case_alloc_lock(const bench_config *cfg, uint64_t iters, uint64_t *events)
{
    pthread_mutex_t lock;
    BENCH_CHECK(pthread_mutex_init(&lock, NULL) == 0);
    base_msg *head = NULL, **tail = &head;
    uint64_t sum = 0;
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < iters; i++) {
        base_msg *m = malloc(sizeof(*m) + cfg->payload);
        BENCH_CHECK(m != NULL);
        m->next = NULL;
        m->len = cfg->payload;
        memcpy(m->data, g_payload, cfg->payload);
        pthread_mutex_lock(&lock);
        *tail = m;
        tail = &m->next;
        base_msg *got = head;
        head = got->next;
        if (!head)
            tail = &head;
        pthread_mutex_unlock(&lock);
        BENCH_ESCAPE(got);
        sum += got->len;
        free(got);
    }
    uint64_t t = bench_now_ns() - t0;
    BENCH_CHECK(head == NULL && sum == iters * cfg->payload);
    pthread_mutex_destroy(&lock);
    *events = 0;
    return t;
}

/* ----------------------------------------------------------- names */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static uint64_t g_rng = 42;

/* Not thread safe, and need not be: the benchmark has one thread. */
static void seeded_random(void *ctx, void *buf, size_t len)
{
    (void)ctx;
    uint8_t *p = buf;
    while (len) {
        uint64_t r = splitmix(&g_rng);
        size_t k = len < sizeof(r) ? len : sizeof(r);
        memcpy(p, &r, k);
        p += k;
        len -= k;
    }
}

/* -------------------------------------------------- a network of nodes */

/*
 * Every event a node forwards goes into one FIFO for the whole network.
 * One FIFO keeps each link in order (which the ports protocol needs of a
 * channel) and interleaves links the way a busy process would.
 */
typedef struct net_item {
    ports_event *ev; /* "obj" mode, and events a node sends itself */
    uint8_t *bytes;  /* "wire" mode: the event serialised, payload appended */
    size_t len;
    int from, to;
} net_item;

typedef struct bench_net bench_net;

typedef struct bench_node {
    ports_node *node;
    ports_name name;
    bench_net *net;
    int index;
} bench_node;

struct bench_net {
    int n;
    bool wire;
    bench_node nodes[BENCH_MAX_NODES];
    net_item *items;
    size_t cap;        /* power of two */
    size_t head, tail; /* free-running */
    uint64_t delivered;
    uint64_t status_changes;
    /* Transport pipe i joins node i (left[i]) and node i+1 (right[i]). */
    ports_port_ref left[BENCH_MAX_HOPS], right[BENCH_MAX_HOPS];
};

/* Node names encode their index, so routing an event is arithmetic. */
#define NET_NAME_BASE UINT64_C(0x6e0de000)
#define NET_NAME_TAG UINT64_C(0xbe7c)

static int net_index_of(const bench_net *net, const ports_name *name)
{
    if (name->v2 != NET_NAME_TAG || name->v1 < NET_NAME_BASE ||
        name->v1 - NET_NAME_BASE >= (uint64_t)net->n)
        return -1;
    return (int)(name->v1 - NET_NAME_BASE);
}

static void net_push(bench_net *net, const net_item *it)
{
    if (net->tail - net->head == net->cap) {
        size_t cap = net->cap ? net->cap * 2 : BENCH_FIFO_MIN_CAP;
        net_item *items = malloc(cap * sizeof(*items));
        BENCH_CHECK(items != NULL);
        for (size_t i = 0; i < net->tail - net->head; i++)
            items[i] = net->items[(net->head + i) & (net->cap - 1)];
        free(net->items);
        net->tail -= net->head;
        net->head = 0;
        net->items = items;
        net->cap = cap;
    }
    net->items[net->tail++ & (net->cap - 1)] = *it;
}

static void net_enqueue(bench_net *net, int from, int to, ports_event *ev)
{
    net_item it = {NULL, NULL, 0, from, to};
    if (!net->wire || from == to) {
        it.ev = ev;
    } else {
        size_t head = ports_event_serialized_size(ev);
        size_t extra = 0;
        if (ev->type == PORTS_EVENT_USER_MESSAGE && ev->u.user.payload) {
            BENCH_CHECK(ports_payload_is_bytes(ev->u.user.payload));
            extra = ev->u.user.payload->size;
        }
        it.len = head + extra;
        it.bytes = malloc(it.len);
        BENCH_CHECK(it.bytes != NULL);
        ports_event_serialize(ev, it.bytes);
        if (extra)
            memcpy(it.bytes + head, ports_payload_bytes_data(ev->u.user.payload), extra);
        ports_event_destroy(ev);
    }
    net_push(net, &it);
}

static void net_forward(void *ctx, const ports_name *to, ports_event *ev)
{
    bench_node *bn = ctx;
    int j = net_index_of(bn->net, to);
    BENCH_CHECK(j >= 0);
    net_enqueue(bn->net, bn->index, j, ev);
}

/* Dead-proxy notices: every other node gets a copy, this node the original. */
static void net_broadcast(void *ctx, ports_event *ev)
{
    bench_node *bn = ctx;
    bench_net *net = bn->net;
    BENCH_CHECK(ev->type != PORTS_EVENT_USER_MESSAGE);
    for (int j = 0; j < net->n; j++) {
        if (j == bn->index)
            continue;
        size_t len = ports_event_serialized_size(ev);
        uint8_t *buf = malloc(len);
        BENCH_CHECK(buf != NULL);
        ports_event *copy = NULL;
        ports_event_serialize(ev, buf);
        BENCH_OK(ports_event_parse(buf, len, &copy));
        free(buf);
        net_enqueue(net, bn->index, j, copy);
    }
    net_enqueue(net, bn->index, bn->index, ev);
}

static void net_status(void *ctx, const ports_port_ref *port)
{
    (void)port;
    bench_node *bn = ctx;
    bn->net->status_changes++;
}

/* Delivers the oldest queued event. False when the FIFO is empty. */
static bool net_deliver_one(bench_net *net)
{
    if (net->head == net->tail)
        return false;
    /* A copy, not a pointer: accepting the event may push to (and regrow) the FIFO. */
    net_item it = net->items[net->head++ & (net->cap - 1)];
    ports_event *ev = it.ev;
    if (!ev) {
        BENCH_OK(ports_event_parse(it.bytes, it.len, &ev));
        free(it.bytes);
    }
    BENCH_OK(ports_node_accept_event(net->nodes[it.to].node, &net->nodes[it.from].name, ev));
    net->delivered++;
    return true;
}

static void net_drain(bench_net *net)
{
    while (net_deliver_one(net))
        ;
}

/* A pipe whose ends are on two different nodes, as an invitation would make it. */
static void net_connect(bench_net *net, int i, int j, ports_port_ref *on_i, ports_port_ref *on_j)
{
    ports_node *ni = net->nodes[i].node, *nj = net->nodes[j].node;
    BENCH_OK(ports_node_create_uninitialized_port(ni, on_i));
    BENCH_OK(ports_node_create_uninitialized_port(nj, on_j));
    BENCH_OK(ports_node_initialize_port(ni, on_i, &net->nodes[j].name, &on_j->name,
                                        &net->nodes[j].name, &on_j->name));
    BENCH_OK(ports_node_initialize_port(nj, on_j, &net->nodes[i].name, &on_i->name,
                                        &net->nodes[i].name, &on_i->name));
}

/* Nodes 0..hops, each joined to the next by a transport pipe. */
static void net_init(bench_net *net, int hops, bool wire)
{
    memset(net, 0, sizeof(*net));
    net->n = hops + 1;
    net->wire = wire;
    for (int i = 0; i < net->n; i++) {
        bench_node *bn = &net->nodes[i];
        bn->net = net;
        bn->index = i;
        bn->name.v1 = NET_NAME_BASE + (uint64_t)i;
        bn->name.v2 = NET_NAME_TAG;
        ports_delegate d = {
            .ctx = bn,
            .forward_event = net_forward,
            .broadcast_event = net_broadcast,
            .port_status_changed = net_status,
            .random_bytes = seeded_random,
        };
        BENCH_OK(ports_node_create(&bn->name, &d, &bn->node));
    }
    for (int i = 0; i < hops; i++)
        net_connect(net, i, i + 1, &net->left[i], &net->right[i]);
}

/* net_init, then a port pair a, b on node 0: what every case starts from. */
static void net_open_pair(bench_net *net, int hops, bool wire, ports_port_ref *a, ports_port_ref *b)
{
    net_init(net, hops, wire);
    BENCH_OK(ports_node_create_port_pair(net->nodes[0].node, a, b));
}

/* Closes every transport, drains, checks that no port is left, frees everything. */
static void net_free(bench_net *net)
{
    for (int i = 0; i + 1 < net->n; i++) {
        BENCH_OK(ports_node_close_port(net->nodes[i].node, &net->left[i]));
        BENCH_OK(ports_node_close_port(net->nodes[i + 1].node, &net->right[i]));
        ports_port_ref_release(&net->left[i]);
        ports_port_ref_release(&net->right[i]);
    }
    net_drain(net);
    for (int i = 0; i < net->n; i++) {
        BENCH_CHECK(ports_node_port_count(net->nodes[i].node) == 0);
        ports_node_destroy(net->nodes[i].node);
    }
    free(net->items);
}

/* Transport ports each node holds: one per neighbour. */
static size_t transports_on(const bench_net *net, int i)
{
    return (size_t)(i > 0) + (size_t)(i + 1 < net->n);
}

/* The transport port node `src` sends on to reach its neighbour `dst`, and the one `dst` reads. */
static const ports_port_ref *hop_send_port(const bench_net *net, int src, int dst)
{
    return dst > src ? &net->left[src] : &net->right[dst];
}

static const ports_port_ref *hop_recv_port(const bench_net *net, int src, int dst)
{
    return dst > src ? &net->right[src] : &net->left[dst];
}

static void send_port_over(bench_net *net, int src, int dst, const ports_name *carried)
{
    ports_payload *p = ports_payload_bytes_new("port", 4);
    BENCH_CHECK(p != NULL);
    ports_event *ev = ports_user_message_new(1, p);
    BENCH_CHECK(ev != NULL);
    ev->u.user.ports[0] = *carried;
    BENCH_OK(ports_node_send_user_message(net->nodes[src].node, hop_send_port(net, src, dst), ev));
}

/*
 * Moves `end` (a receiving port on node `from`) to node `to`, one hop at a
 * time: each node sends it on as soon as it can read it from its transport,
 * while the proxies left behind are still collapsing. `in_flight` messages
 * are sent from `peer` (on node `peer_node`) as the move starts. Returns with
 * *end the port on `to`, the FIFO empty and the route two ports again.
 */
static void net_move(bench_net *net, ports_port_ref *end, int from, int to,
                     const ports_port_ref *peer, int peer_node, uint32_t in_flight, size_t payload)
{
    int step = to > from ? 1 : -1;
    int cur = from;
    ports_name carried = end->name;
    ports_port_ref_release(end);
    send_port_over(net, cur, cur + step, &carried);
    for (uint32_t m = 0; m < in_flight; m++)
        BENCH_OK(ports_node_send_user_message(net->nodes[peer_node].node, peer,
                                              new_message(payload, (uint8_t)m)));

    while (cur != to) {
        int next = cur + step;
        BENCH_CHECK(net_deliver_one(net)); /* an empty FIFO here would be a lost port */
        ports_event *ev = NULL;
        BENCH_OK(ports_node_get_message(net->nodes[next].node, hop_recv_port(net, cur, next), &ev));
        if (!ev)
            continue;
        BENCH_CHECK(ev->u.user.num_ports == 1);
        carried = ev->u.user.ports[0];
        ports_event_destroy(ev);
        cur = next;
        if (cur != to)
            send_port_over(net, cur, cur + step, &carried);
    }
    BENCH_OK(ports_node_get_port(net->nodes[to].node, &carried, end));
    net_drain(net);

    /* Collapsed: every proxy gone, only the two ends and the transports left. */
    for (int i = 0; i < net->n; i++) {
        size_t want = transports_on(net, i) + (size_t)(i == to) + (size_t)(i == peer_node);
        BENCH_CHECK(ports_node_port_count(net->nodes[i].node) == want);
    }
    for (uint32_t m = 0; m < in_flight; m++) {
        ports_event *ev = NULL;
        BENCH_OK(ports_node_get_message(net->nodes[to].node, end, &ev));
        consume_message(ev, payload, (uint8_t)m);
    }
}

/* Closes the route's two ends and releases them. */
static void net_close_pair(bench_net *net, ports_port_ref *a, int a_node, ports_port_ref *b,
                           int b_node)
{
    BENCH_OK(ports_node_close_port(net->nodes[a_node].node, a));
    BENCH_OK(ports_node_close_port(net->nodes[b_node].node, b));
    ports_port_ref_release(a);
    ports_port_ref_release(b);
    net_drain(net);
}

/*
 * One node and a pair of its ports. The node still gets a delegate that
 * forwards into the FIFO: closing a port sends ObserveClosure to its peer
 * through the delegate even when the peer is on the same node.
 */
static uint64_t run_local(const bench_config *cfg, uint64_t iters, bool round_trip,
                          uint64_t *events)
{
    bench_net net;
    ports_port_ref a, b;
    net_open_pair(&net, 0, false, &a, &b);
    ports_node *node = net.nodes[0].node;

    uint64_t status0 = net.status_changes, delivered0 = net.delivered;
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < iters; i++) {
        ports_event *ev = NULL;
        BENCH_OK(ports_node_send_user_message(node, &a, new_message(cfg->payload, (uint8_t)i)));
        BENCH_OK(ports_node_get_message(node, &b, &ev));
        consume_message(ev, cfg->payload, (uint8_t)i);
        if (round_trip) {
            ev = NULL;
            BENCH_OK(
                ports_node_send_user_message(node, &b, new_message(cfg->payload, (uint8_t)~i)));
            BENCH_OK(ports_node_get_message(node, &a, &ev));
            consume_message(ev, cfg->payload, (uint8_t)~i);
        }
    }
    uint64_t t = bench_now_ns() - t0;
    /* A local send delivers in place: nothing may have gone through the FIFO. */
    BENCH_CHECK(net.head == net.tail);
    BENCH_CHECK(net.status_changes - status0 >= iters);
    *events = net.delivered - delivered0;

    net_close_pair(&net, &a, 0, &b, 0);
    net_free(&net);
    return t;
}

static uint64_t case_local_send(const bench_config *cfg, uint64_t iters, uint64_t *events)
{
    return run_local(cfg, iters, false, events);
}

static uint64_t case_local_rtt(const bench_config *cfg, uint64_t iters, uint64_t *events)
{
    return run_local(cfg, iters, true, events);
}

/* Steady state on the collapsed route a@0 <-> b@K: one message (or round trip) per op. */
static uint64_t run_remote(const bench_config *cfg, uint64_t iters, bool wire, bool round_trip,
                           uint64_t *events)
{
    bench_net net;
    ports_port_ref a, b;
    net_open_pair(&net, cfg->hops, wire, &a, &b);
    int k = cfg->hops;
    net_move(&net, &b, 0, k, &a, 0, 0, cfg->payload);
    ports_port_status st;
    BENCH_OK(ports_node_get_status(net.nodes[0].node, &a, &st));
    BENCH_CHECK(st.peer_remote);

    ports_node *n0 = net.nodes[0].node, *nk = net.nodes[k].node;
    uint64_t delivered0 = net.delivered;
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < iters; i++) {
        ports_event *ev = NULL;
        BENCH_OK(ports_node_send_user_message(n0, &a, new_message(cfg->payload, (uint8_t)i)));
        net_drain(&net);
        BENCH_OK(ports_node_get_message(nk, &b, &ev));
        consume_message(ev, cfg->payload, (uint8_t)i);
        if (round_trip) {
            ev = NULL;
            BENCH_OK(ports_node_send_user_message(nk, &b, new_message(cfg->payload, (uint8_t)~i)));
            net_drain(&net);
            BENCH_OK(ports_node_get_message(n0, &a, &ev));
            consume_message(ev, cfg->payload, (uint8_t)~i);
        }
    }
    uint64_t t = bench_now_ns() - t0;
    *events = net.delivered - delivered0;

    net_close_pair(&net, &a, 0, &b, k);
    net_free(&net);
    return t;
}

static uint64_t case_remote_obj(const bench_config *cfg, uint64_t iters, uint64_t *events)
{
    return run_remote(cfg, iters, false, false, events);
}

static uint64_t case_remote_obj_rtt(const bench_config *cfg, uint64_t iters, uint64_t *events)
{
    return run_remote(cfg, iters, false, true, events);
}

static uint64_t case_remote_wire(const bench_config *cfg, uint64_t iters, uint64_t *events)
{
    return run_remote(cfg, iters, true, false, events);
}

static uint64_t case_remote_wire_rtt(const bench_config *cfg, uint64_t iters, uint64_t *events)
{
    return run_remote(cfg, iters, true, true, events);
}

/* One op: move b from one end of the chain to the other (alternately), to collapse. */
static uint64_t run_moves(const bench_config *cfg, uint64_t iters, bool wire, uint32_t in_flight,
                          uint64_t *events)
{
    bench_net net;
    ports_port_ref a, b;
    net_open_pair(&net, cfg->hops, wire, &a, &b);
    int k = cfg->hops;
    int b_node = 0;

    uint64_t delivered0 = net.delivered;
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < iters; i++) {
        int to = b_node == 0 ? k : 0;
        net_move(&net, &b, b_node, to, &a, 0, in_flight, cfg->payload);
        b_node = to;
    }
    uint64_t t = bench_now_ns() - t0;
    *events = net.delivered - delivered0;

    /* Still a working pipe after all that moving. */
    ports_event *ev = NULL;
    BENCH_OK(ports_node_send_user_message(net.nodes[0].node, &a, new_message(cfg->payload, 7)));
    net_drain(&net);
    BENCH_OK(ports_node_get_message(net.nodes[b_node].node, &b, &ev));
    consume_message(ev, cfg->payload, 7);

    net_close_pair(&net, &a, 0, &b, b_node);
    net_free(&net);
    return t;
}

static uint64_t case_move_obj(const bench_config *cfg, uint64_t iters, uint64_t *events)
{
    return run_moves(cfg, iters, false, 0, events);
}

static uint64_t case_move_wire(const bench_config *cfg, uint64_t iters, uint64_t *events)
{
    return run_moves(cfg, iters, true, 0, events);
}

static uint64_t case_move_msgs_obj(const bench_config *cfg, uint64_t iters, uint64_t *events)
{
    return run_moves(cfg, iters, false, BENCH_IN_FLIGHT, events);
}

static uint64_t case_move_msgs_wire(const bench_config *cfg, uint64_t iters, uint64_t *events)
{
    return run_moves(cfg, iters, true, BENCH_IN_FLIGHT, events);
}

/* ------------------------------------------------------------- driver */

typedef uint64_t (*case_fn)(const bench_config *cfg, uint64_t iters, uint64_t *events);

typedef struct bench_case {
    const char *name;             /* "%d" becomes the hop count */
    case_fn run;                  /* NULL: a derived row, see derive_* */
    uint64_t divisor;             /* ops per run = iterations / divisor */
    bool has_events;              /* events go through the FIFO; report ev/op */
    int derive_from, derive_base; /* derived: (from - base) / BENCH_IN_FLIGHT */
    /* filled in by the runs */
    uint64_t iters;
    uint64_t samples[BENCH_MAX_RUNS];
    uint64_t events;
    double ns_median, ns_best, ev_per_op;
} bench_case;

enum { CASE_FIFO, CASE_BASE };

static bench_case g_cases[] = {
    {"baseline: fifo push+pop (pointer)", case_fifo, 1, false, 0, 0, 0, {0}, 0, 0, 0, 0},
    {"baseline: malloc+copy+lock+queue+free", case_alloc_lock, 1, false, 0, 0, 0, {0}, 0, 0, 0, 0},
    {"local: send a, get b (1 node)", case_local_send, 1, false, 0, 0, 0, {0}, 0, 0, 0, 0},
    {"local: round trip a->b->a", case_local_rtt, 2, false, 0, 0, 0, {0}, 0, 0, 0, 0},
    {"remote obj: send 0->%d, get", case_remote_obj, 1, true, 0, 0, 0, {0}, 0, 0, 0, 0},
    {"remote obj: round trip 0->%d->0", case_remote_obj_rtt, 2, true, 0, 0, 0, {0}, 0, 0, 0, 0},
    {"remote wire: send 0->%d, get", case_remote_wire, 1, true, 0, 0, 0, {0}, 0, 0, 0, 0},
    {"remote wire: round trip 0->%d->0", case_remote_wire_rtt, 2, true, 0, 0, 0, {0}, 0, 0, 0, 0},
    {"move obj: end across %d hops+collapse",
     case_move_obj,
     BENCH_MOVE_DIVISOR,
     true,
     0,
     0,
     0,
     {0},
     0,
     0,
     0,
     0},
    {"move wire: end across %d hops+collapse",
     case_move_wire,
     BENCH_MOVE_DIVISOR,
     true,
     0,
     0,
     0,
     {0},
     0,
     0,
     0,
     0},
    {"move obj: %d hops + 64 msgs in flight",
     case_move_msgs_obj,
     BENCH_MOVE_DIVISOR,
     true,
     0,
     0,
     0,
     {0},
     0,
     0,
     0,
     0},
    {"move wire: %d hops + 64 msgs in flight",
     case_move_msgs_wire,
     BENCH_MOVE_DIVISOR,
     true,
     0,
     0,
     0,
     {0},
     0,
     0,
     0,
     0},
    {"  => obj: 1 msg via %d-proxy chain", NULL, 0, true, 10, 8, 0, {0}, 0, 0, 0, 0},
    {"  => wire: 1 msg via %d-proxy chain", NULL, 0, true, 11, 9, 0, {0}, 0, 0, 0, 0},
};

#define NUM_CASES (sizeof(g_cases) / sizeof(g_cases[0]))

_Static_assert(BENCH_IN_FLIGHT == 64, "case names say 64 msgs");

static void usage(FILE *f, const char *argv0)
{
    fprintf(f,
            "usage: %s [--quick] [--iterations N] [--runs R] [--hops K] [--payload BYTES]\n"
            "  --quick         short smoke run for CI (iterations/%u, %u runs)\n"
            "  --iterations N  messages per run of a message case (default %u;\n"
            "                  move cases do N/%u moves)\n"
            "  --runs R        runs per case, median reported (default %u, max %u)\n"
            "  --hops K        nodes in the chain minus one (default 3, 1..%d)\n"
            "  --payload B     bytes per message (default %u, max %u)\n",
            argv0, BENCH_QUICK_DIVISOR, BENCH_QUICK_RUNS, BENCH_DEFAULT_ITERATIONS,
            BENCH_MOVE_DIVISOR, BENCH_DEFAULT_RUNS, BENCH_MAX_RUNS, BENCH_MAX_HOPS,
            BENCH_DEFAULT_PAYLOAD, BENCH_MAX_PAYLOAD);
}

int main(int argc, char **argv)
{
    bench_name = "bench_ports";
    bench_config cfg = {BENCH_DEFAULT_ITERATIONS, BENCH_DEFAULT_RUNS, 3, BENCH_DEFAULT_PAYLOAD};
    uint64_t runs = cfg.runs, hops = (uint64_t)cfg.hops, payload = cfg.payload;
    bool quick = false, iters_given = false, runs_given = false;
    const bench_option opts[] = {
        {"--quick", &quick, NULL, 0, 0},
        {"--iterations", &iters_given, &cfg.iterations, 1, UINT64_C(1) << 40},
        {"--runs", &runs_given, &runs, 1, BENCH_MAX_RUNS},
        {"--hops", NULL, &hops, 1, BENCH_MAX_HOPS},
        {"--payload", NULL, &payload, 1, BENCH_MAX_PAYLOAD},
        {NULL, NULL, NULL, 0, 0},
    };
    int rc = bench_parse_args(argc, argv, opts, NULL, usage);
    if (rc >= 0)
        return rc;
    cfg.runs = (unsigned)runs;
    cfg.hops = (int)hops;
    cfg.payload = (size_t)payload;
    if (quick) {
        if (!iters_given)
            cfg.iterations /= BENCH_QUICK_DIVISOR;
        if (!runs_given)
            cfg.runs = BENCH_QUICK_RUNS;
    }
    bench_fill_pattern(g_payload, sizeof(g_payload));

    for (size_t c = 0; c < NUM_CASES; c++) {
        bench_case *bc = &g_cases[c];
        if (!bc->run)
            continue;
        bc->iters = cfg.iterations / bc->divisor;
        if (bc->iters == 0)
            bc->iters = 1;
    }

    uint64_t start = bench_now_ns();
    /* Warm-up: caches, the allocator's free lists, page faults. Not recorded. */
    for (size_t c = 0; c < NUM_CASES; c++) {
        uint64_t ev;
        if (g_cases[c].run)
            g_cases[c].run(&cfg, g_cases[c].iters / 10 + 1, &ev);
    }
    /* Round-robin, so noise lands on every case alike. */
    for (unsigned r = 0; r < cfg.runs; r++) {
        for (size_t c = 0; c < NUM_CASES; c++) {
            bench_case *bc = &g_cases[c];
            uint64_t ev = 0;
            if (!bc->run)
                continue;
            bc->samples[r] = bc->run(&cfg, bc->iters, &ev);
            bc->events += ev;
        }
    }
    double total_s = (double)(bench_now_ns() - start) / 1e9;

    for (size_t c = 0; c < NUM_CASES; c++) {
        bench_case *bc = &g_cases[c];
        if (!bc->run)
            continue;
        uint64_t best;
        bc->ns_median = (double)bench_median_u64(bc->samples, cfg.runs, &best) / (double)bc->iters;
        bc->ns_best = (double)best / (double)bc->iters;
        bc->ev_per_op = (double)bc->events / ((double)bc->iters * cfg.runs);
    }
    for (size_t c = 0; c < NUM_CASES; c++) {
        bench_case *bc = &g_cases[c];
        if (bc->run)
            continue;
        const bench_case *m = &g_cases[bc->derive_from], *z = &g_cases[bc->derive_base];
        bc->iters = m->iters * BENCH_IN_FLIGHT;
        bc->ns_median = (m->ns_median - z->ns_median) / BENCH_IN_FLIGHT;
        bc->ns_best = (m->ns_best - z->ns_best) / BENCH_IN_FLIGHT;
        bc->ev_per_op = (m->ev_per_op - z->ev_per_op) / BENCH_IN_FLIGHT;
    }

    double fifo = g_cases[CASE_FIFO].ns_median, base = g_cases[CASE_BASE].ns_median;
    printf("bench_ports: payload %zu B, %d hops (%d nodes), %u runs per case, median run shown\n",
           cfg.payload, cfg.hops, cfg.hops + 1, cfg.runs);
    printf("x base = ns/op / 'malloc+copy+lock+queue+free'; x fifo = ns/op / 'fifo push+pop';\n"
           "ev/op = events delivered through the inter-node FIFO per op\n\n");
    printf("%-42s %10s %10s %10s %12s %9s %9s %7s\n", "case", "iters", "ns/op", "best", "ops/s",
           "x base", "x fifo", "ev/op");
    for (size_t c = 0; c < NUM_CASES; c++) {
        const bench_case *bc = &g_cases[c];
        char name[64];
        if (strstr(bc->name, "%d"))
            snprintf(name, sizeof(name), bc->name, cfg.hops);
        else
            snprintf(name, sizeof(name), "%s", bc->name);
        double ops = bc->ns_median > 0 ? 1e9 / bc->ns_median : 0;
        char ev[16] = "-";
        if (bc->has_events)
            snprintf(ev, sizeof(ev), "%.1f", bc->ev_per_op);
        printf("%-42s %10" PRIu64 " %10.1f %10.1f %12.0f %9.2f %9.1f %7s\n", name, bc->iters,
               bc->ns_median, bc->ns_best, ops, bc->ns_median / base, bc->ns_median / fifo, ev);
    }
    printf("\ntotal %.2f s\n", total_s);
    return 0;
}
