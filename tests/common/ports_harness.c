#include "ports_harness.h"

#include <stdlib.h>
#include <string.h>

#include <stdio.h>

#define PH_CHECK(x)                                                                                \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "%s:%d: harness check failed: %s\n", __FILE__, __LINE__, #x);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

struct ph_item {
    ph_item *next;
    ports_event *ev; /* same-node events travel as objects */
    uint8_t *bytes;  /* cross-node events travel as bytes */
    size_t len;
};

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static void random_bytes(void *ctx, void *buf, size_t len)
{
    ph_node *n = ctx;
    pthread_mutex_lock(&n->h->lock);
    uint8_t *p = buf;
    while (len) {
        uint64_t r = splitmix(&n->h->rng);
        size_t k = len < 8 ? len : 8;
        memcpy(p, &r, k);
        p += k;
        len -= k;
    }
    pthread_mutex_unlock(&n->h->lock);
}

static int index_of(ph_harness *h, const ports_name *name)
{
    for (int i = 0; i < h->n; i++)
        if (ports_name_eq(&h->nodes[i].name, name))
            return i;
    return -1;
}

static void enqueue(ph_harness *h, int from, int to, ports_event *ev)
{
    ph_item *it = calloc(1, sizeof(*it));
    if (!it)
        abort();
    if (from == to) {
        it->ev = ev;
    } else {
        size_t head = ports_event_serialized_size(ev);
        size_t extra = 0;
        if (ev->type == PORTS_EVENT_USER_MESSAGE && ev->u.user.payload)
            extra = ev->u.user.payload->size;
        it->len = head + extra;
        it->bytes = malloc(it->len ? it->len : 1);
        if (!it->bytes)
            abort();
        ports_event_serialize(ev, it->bytes);
        if (extra)
            memcpy(it->bytes + head, ports_payload_bytes_data(ev->u.user.payload), extra);
        ports_event_destroy(ev);
    }
    pthread_mutex_lock(&h->lock);
    if (h->tail[from][to])
        h->tail[from][to]->next = it;
    else
        h->head[from][to] = it;
    h->tail[from][to] = it;
    h->queued++;
    pthread_mutex_unlock(&h->lock);
}

static void forward_event(void *ctx, const ports_name *to, ports_event *ev)
{
    ph_node *n = ctx;
    int j = index_of(n->h, to);
    if (j < 0) {
        ports_event_destroy(ev); /* an unknown node: dropped, like a dead link */
        return;
    }
    enqueue(n->h, n->index, j, ev);
    if (n->h->on_forward)
        n->h->on_forward(n->h, n->index, j, n->h->on_forward_arg);
}

static void broadcast_event(void *ctx, ports_event *ev)
{
    ph_node *n = ctx;
    for (int j = 0; j < n->h->n; j++) {
        if (j == n->index || !n->h->nodes[j].node)
            continue;
        size_t len = ports_event_serialized_size(ev);
        uint8_t *buf = malloc(len);
        ports_event *copy = NULL;
        ports_event_serialize(ev, buf);
        if (ports_event_parse(buf, len, &copy) != PORTS_OK)
            abort();
        free(buf);
        enqueue(n->h, n->index, j, copy);
    }
    enqueue(n->h, n->index, n->index, ev);
}

static void port_status_changed(void *ctx, const ports_port_ref *port)
{
    (void)port;
    ph_node *n = ctx;
    pthread_mutex_lock(&n->h->lock);
    n->status_changes++;
    pthread_mutex_unlock(&n->h->lock);
}

void ph_init(ph_harness *h, int n)
{
    memset(h, 0, sizeof(*h));
    pthread_mutex_init(&h->lock, NULL);
    h->rng = 42;
    h->n = n;
    ports_delegate d = {0};
    d.forward_event = forward_event;
    d.broadcast_event = broadcast_event;
    d.port_status_changed = port_status_changed;
    d.random_bytes = random_bytes;
    for (int i = 0; i < n; i++) {
        ph_node *pn = &h->nodes[i];
        pn->h = h;
        pn->index = i;
        pn->name.v1 = 0x1000 + (uint64_t)i;
        pn->name.v2 = 0xabc;
        d.ctx = pn;
        if (ports_node_create(&pn->name, &d, &pn->node) != PORTS_OK)
            abort();
    }
}

static void free_item(ph_item *it)
{
    ports_event_destroy(it->ev);
    free(it->bytes);
    free(it);
}

void ph_drop_links(ph_harness *h, int node)
{
    for (int i = 0; i < h->n; i++) {
        for (int j = 0; j < h->n; j++) {
            if (i != node && j != node)
                continue;
            while (h->head[i][j]) {
                ph_item *it = h->head[i][j];
                h->head[i][j] = it->next;
                free_item(it);
                h->queued--;
            }
            h->tail[i][j] = NULL;
        }
    }
}

void ph_free(ph_harness *h)
{
    for (int i = 0; i < h->n; i++)
        ph_drop_links(h, i);
    for (int i = 0; i < h->n; i++)
        ports_node_destroy(h->nodes[i].node);
    pthread_mutex_destroy(&h->lock);
}

size_t ph_pending(ph_harness *h, int from, int to)
{
    size_t k = 0;
    pthread_mutex_lock(&h->lock);
    for (ph_item *it = h->head[from][to]; it; it = it->next)
        k++;
    pthread_mutex_unlock(&h->lock);
    return k;
}

static void note_result(ph_harness *h, int rv)
{
    if (rv == PORTS_OK)
        return;
    pthread_mutex_lock(&h->lock);
    h->last_error = rv;
    if (rv == PORTS_ERROR_BAD_PEER || rv == PORTS_ERROR_MALFORMED)
        h->bad_peer_results++;
    pthread_mutex_unlock(&h->lock);
}

bool ph_deliver_one(ph_harness *h, int from, int to)
{
    pthread_mutex_lock(&h->lock);
    ph_item *it = h->head[from][to];
    if (it) {
        h->head[from][to] = it->next;
        if (!it->next)
            h->tail[from][to] = NULL;
        h->queued--;
    }
    pthread_mutex_unlock(&h->lock);
    if (!it)
        return false;
    ports_event *ev = it->ev;
    it->ev = NULL;
    if (!ev && ports_event_parse(it->bytes, it->len, &ev) != PORTS_OK) {
        note_result(h, PORTS_ERROR_MALFORMED);
        free_item(it);
        return true;
    }
    free_item(it);
    note_result(h, ports_node_accept_event(h->nodes[to].node, &h->nodes[from].name, ev));
    return true;
}

size_t ph_deliver_all(ph_harness *h)
{
    size_t moved = 0;
    for (bool any = true; any;) {
        any = false;
        for (int i = 0; i < h->n; i++)
            for (int j = 0; j < h->n; j++)
                while (ph_deliver_one(h, i, j)) {
                    moved++;
                    any = true;
                }
    }
    return moved;
}

int ph_inject(ph_harness *h, int from, int to, ports_event *ev)
{
    if (from != to) {
        size_t head = ports_event_serialized_size(ev);
        size_t extra = ev->type == PORTS_EVENT_USER_MESSAGE && ev->u.user.payload
                           ? ev->u.user.payload->size
                           : 0;
        uint8_t *buf = malloc(head + extra + 1);
        ports_event_serialize(ev, buf);
        if (extra)
            memcpy(buf + head, ports_payload_bytes_data(ev->u.user.payload), extra);
        ports_event_destroy(ev);
        ev = NULL;
        int rv = ports_event_parse(buf, head + extra, &ev);
        free(buf);
        if (rv != PORTS_OK)
            return rv;
    }
    return ports_node_accept_event(h->nodes[to].node, &h->nodes[from].name, ev);
}

void ph_connect(ph_harness *h, int i, int j, ports_port_ref *on_i, ports_port_ref *on_j)
{
    if (i == j) {
        PH_CHECK(ports_node_create_port_pair(h->nodes[i].node, on_i, on_j) == PORTS_OK);
        return;
    }
    PH_CHECK(ports_node_create_uninitialized_port(h->nodes[i].node, on_i) == PORTS_OK);
    PH_CHECK(ports_node_create_uninitialized_port(h->nodes[j].node, on_j) == PORTS_OK);
    PH_CHECK(ports_node_initialize_port(h->nodes[i].node, on_i, &h->nodes[j].name, &on_j->name,
                                        &h->nodes[j].name, &on_j->name) == PORTS_OK);
    PH_CHECK(ports_node_initialize_port(h->nodes[j].node, on_j, &h->nodes[i].name, &on_i->name,
                                        &h->nodes[i].name, &on_i->name) == PORTS_OK);
}

ports_event *ph_message(const char *text, uint32_t num_ports)
{
    ports_payload *p = ports_payload_bytes_new(text, strlen(text));
    PH_CHECK(p != NULL);
    ports_event *ev = ports_user_message_new(num_ports, p);
    PH_CHECK(ev != NULL);
    return ev;
}

void ph_write(ph_harness *h, int node, const ports_port_ref *port, const char *text,
              const ports_name *carried, uint32_t num_carried)
{
    ports_event *ev = ph_message(text, num_carried);
    for (uint32_t i = 0; i < num_carried; i++)
        ev->u.user.ports[i] = carried[i];
    int rv = ports_node_send_user_message(h->nodes[node].node, port, ev);
    PH_CHECK(rv == PORTS_OK);
}

bool ph_read(ph_harness *h, int node, const ports_port_ref *port, char *buf, size_t buflen,
             ports_name *carried, uint32_t *num_carried)
{
    ports_event *ev = NULL;
    int rv = ports_node_get_message(h->nodes[node].node, port, &ev);
    if (rv != PORTS_OK || !ev)
        return false;
    size_t len = ev->u.user.payload ? ev->u.user.payload->size : 0;
    PH_CHECK(len < buflen);
    if (len)
        memcpy(buf, ports_payload_bytes_data(ev->u.user.payload), len);
    buf[len] = '\0';
    if (num_carried)
        *num_carried = ev->u.user.num_ports;
    for (uint32_t i = 0; carried && i < ev->u.user.num_ports; i++)
        carried[i] = ev->u.user.ports[i];
    ports_event_destroy(ev);
    return true;
}
