/*
 * A hand-driven set of ports nodes for unit tests: events wait in one FIFO
 * per ordered node pair until the test delivers them, so a test can stop the
 * world between any two events, inspect it, or inject an event of its own.
 * Events between different nodes go through serialise + parse, as on a wire.
 */
#ifndef CMOJO_TESTS_PORTS_HARNESS_H_
#define CMOJO_TESTS_PORTS_HARNESS_H_

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "ports/ports.h"

#define PH_MAX_NODES 8

typedef struct ph_item ph_item;

typedef struct ph_node {
    ports_node *node;
    ports_name name;
    size_t status_changes; /* port_status_changed calls seen */
    struct ph_harness *h;
    int index;
} ph_node;

typedef struct ph_harness {
    int n;
    ph_node nodes[PH_MAX_NODES];
    ph_item *head[PH_MAX_NODES][PH_MAX_NODES], *tail[PH_MAX_NODES][PH_MAX_NODES];
    size_t queued;
    int last_error; /* most recent non-OK accept result */
    size_t bad_peer_results;
    pthread_mutex_t lock; /* queues may be fed from several threads */
    uint64_t rng;
    /*
     * Optional: called after a node hands the harness an event (queued on
     * from->to), with no harness or ports lock held, on the thread that is
     * inside the node. Delivering events from here plays what another
     * thread could do at that moment of the node's operation.
     */
    void (*on_forward)(struct ph_harness *h, int from, int to, void *arg);
    void *on_forward_arg;
} ph_harness;

void ph_init(ph_harness *h, int n);
/* Destroys every node (ports left are freed, not closed) and queued event. */
void ph_free(ph_harness *h);

/* Delivers the head of from->to. Returns false if that link is empty. */
bool ph_deliver_one(ph_harness *h, int from, int to);
/* Delivers until every link is empty; returns how many events moved. */
size_t ph_deliver_all(ph_harness *h);
/* Events waiting on from->to. */
size_t ph_pending(ph_harness *h, int from, int to);
/* Drops everything queued to or from `node` (a crash). */
void ph_drop_links(ph_harness *h, int node);

/* Makes a pipe whose two ends live on nodes i and j (any i, j). */
void ph_connect(ph_harness *h, int i, int j, ports_port_ref *on_i, ports_port_ref *on_j);

/* Payload helpers: a bytes payload holding text. */
ports_event *ph_message(const char *text, uint32_t num_ports);
/* Sends text (plus ports) from port; asserts PORTS_OK. */
void ph_write(ph_harness *h, int node, const ports_port_ref *port, const char *text,
              const ports_name *carried, uint32_t num_carried);
/*
 * Reads one message; returns its text in buf (NUL-terminated) or false when
 * none is ready. Carried port names, if any, are stored in carried[].
 */
bool ph_read(ph_harness *h, int node, const ports_port_ref *port, char *buf, size_t buflen,
             ports_name *carried, uint32_t *num_carried);

/* Feeds an event to node `to` as if node `from` had sent it (wire round trip). */
int ph_inject(ph_harness *h, int from, int to, ports_event *ev);

#endif /* CMOJO_TESTS_PORTS_HARNESS_H_ */
