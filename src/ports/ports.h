/*
 * The ports routing layer: a node per process holding named ports, and the
 * protocol that keeps every pair of ports exactly-once and in order while
 * either end moves from node to node.
 *
 * A message pipe is a pair of ports whose peers point at each other. Sending a
 * port to another node turns the local port into a proxy that forwards to a
 * new port on the destination; the proxy then removes itself (ObserveProxy /
 * ObserveProxyAck / UpdatePreviousPeer), so every route shrinks back to two
 * ports. User messages carry per-port sequence numbers; every other event (and
 * user messages too) travels on the sender's control sequence and is accepted
 * only from the receiving port's current previous peer.
 *
 * The layer has no threads, sockets or clocks. It talks to the world only
 * through a ports_delegate, whose callbacks (all but random_bytes) are made
 * with no ports lock held, so they may call back into the node.
 *
 * Threads: every function may be called from any thread at any time, including
 * concurrently on the same port. Locks: one node lock (the port map and the
 * peer map), one lock per port; several port locks are taken in address
 * order; the node lock is never taken while a port lock is held.
 *
 * Ownership: functions that take a ports_event * take ownership of it, on
 * success and on failure alike.
 */
#ifndef CMOJO_PORTS_PORTS_H_
#define CMOJO_PORTS_PORTS_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ports/common.h"
#include "ports/event.h"

typedef struct ports_node ports_node;
typedef struct ports_port ports_port;

/*
 * A counted reference to a port. Obtained from ports_node_create_port_pair,
 * ports_node_get_port, ...; released with ports_port_ref_release. A ref keeps
 * the port's memory alive, not the port open: operations on a ref whose port
 * has been closed or erased fail with PORTS_ERROR_PORT_STATE_UNEXPECTED.
 */
typedef struct ports_port_ref {
    ports_name name;
    ports_port *port;
} ports_port_ref;

void ports_port_ref_copy(ports_port_ref *dst, const ports_port_ref *src);
void ports_port_ref_release(ports_port_ref *ref); /* zeroes *ref; NULL port ok */

typedef struct ports_port_status {
    bool has_messages;       /* a message can be read now */
    bool receiving_messages; /* more messages may still arrive */
    bool peer_closed;
    bool peer_remote; /* peer lives on another node */
    size_t queued_message_count;
    uint64_t queued_num_bytes;
    uint64_t unacknowledged_message_count;
    /*
     * Snapshots of one port are numbered in the order they were taken
     * (under the port's lock, from 1): of two, the larger is the newer. An
     * embedder that gets them from several threads keeps the newest.
     */
    uint64_t version;
} ports_port_status;

typedef struct ports_delegate {
    void *ctx;
    /* Deliver event to node `to` (which may be this node). Owns event. */
    void (*forward_event)(void *ctx, const ports_name *to, ports_event *event);
    /* Deliver event to every node this node knows (dead-proxy notices). */
    void (*broadcast_event)(void *ctx, ports_event *event);
    /* Something observable about this receiving port may have changed. */
    void (*port_status_changed)(void *ctx, const ports_port_ref *port);
    /*
     * Optional, both or neither: port_status_changed with its look already
     * taken. Where the node can (a message queued for a reader), it takes
     * the port's user data (acquire_user_data called on it, if not NULL)
     * and its status in the same hold of the port lock as the change, and
     * passes both to port_status_seen, which owns the reference acquired.
     */
    void (*acquire_user_data)(void *data);
    void (*port_status_seen)(void *ctx, const ports_port_ref *port, void *data,
                             const ports_port_status *status);
    /*
     * Optional: fill buf with random bytes for port names. NULL means
     * getrandom(2). Tests pass a seeded generator to make runs replayable.
     * The one callback made with ports locks held: it must not call back
     * into the node.
     */
    void (*random_bytes)(void *ctx, void *buf, size_t len);
} ports_delegate;

/* Creates a node named *name. The delegate is copied. */
int ports_node_create(const ports_name *name, const ports_delegate *delegate, ports_node **out);

/*
 * Frees the node and every port still in it, without sending any event (use
 * ports_node_close_port first for an orderly end). Payloads of queued
 * messages are destroyed. No other call may be in progress on the node.
 */
void ports_node_destroy(ports_node *node);

const ports_name *ports_node_name(const ports_node *node);

/* Ports (in any state) currently in the node's map. */
size_t ports_node_port_count(ports_node *node);

/*
 * True when no port could still need to talk to another node: every port
 * left is a receiving port (if allow_local_ports) or there are none at all.
 */
bool ports_node_can_shutdown_cleanly(ports_node *node, bool allow_local_ports);

/* A connected pair of receiving ports on this node. */
int ports_node_create_port_pair(ports_node *node, ports_port_ref *a, ports_port_ref *b);

/*
 * Two-step creation for ports whose peer is not known yet (invitations): the
 * port exists but accepts nothing until initialised.
 */
int ports_node_create_uninitialized_port(ports_node *node, ports_port_ref *out);
int ports_node_initialize_port(ports_node *node, const ports_port_ref *port,
                               const ports_name *peer_node, const ports_name *peer_port,
                               const ports_name *prev_node, const ports_name *prev_port);

/* Looks up a port by name. PORTS_ERROR_PORT_UNKNOWN if absent. */
int ports_node_get_port(ports_node *node, const ports_name *name, ports_port_ref *out);

/* Embedder data attached to a port (not owned, not freed by the layer). */
void ports_port_set_user_data(const ports_port_ref *port, void *data);
void *ports_port_get_user_data(const ports_port_ref *port);
/*
 * Reads the embedder data and, if it is not NULL, calls acquire(data) before
 * the port lock is released. An embedder that clears the data
 * (set_user_data(NULL)) before dropping its own reference can then use the
 * object until it releases the reference acquire took, even if another
 * thread is tearing it down. In the same look, *status is what
 * ports_node_get_status would give if the port is receiving; else its
 * version is 0.
 */
void *ports_node_acquire_user_data_status(ports_node *node, const ports_port_ref *port,
                                          void (*acquire)(void *data), ports_port_status *status);

/*
 * Closes a receiving port: the peer will see peer-closed after the last
 * message this port sent. Ports carried by unread messages are closed too.
 */
int ports_node_close_port(ports_node *node, const ports_port_ref *port);

int ports_node_get_status(ports_node *node, const ports_port_ref *port, ports_port_status *out);

/*
 * Takes the next in-order user message, or sets *out to NULL when none is
 * ready. PORTS_ERROR_PORT_PEER_CLOSED once the peer has closed and every
 * message it sent has been read (or, if the route was cut, every message that
 * still can be); that answer is final. Ports carried by the message are now
 * receiving ports on this node, named in (*out)->u.user.ports.
 */
int ports_node_get_message(ports_node *node, const ports_port_ref *port, ports_event **out);

/*
 * ports_node_get_message, and when it returns PORTS_OK the port's status
 * after the take, from the same look (*after; NULL: not wanted).
 */
int ports_node_get_message_status(ports_node *node, const ports_port_ref *port, ports_event **out,
                                  ports_port_status *after);

/*
 * Sends a user message (ev->u.user.ports names local receiving ports to
 * transfer). Consumes ev (and its payload), whatever the result. On any error
 * (PORTS_ERROR_PORT_PEER_CLOSED, the sending port itself or its peer
 * attached, a port attached twice or not receiving, a sender that is not
 * receiving) every carried port is left as it was, still the caller's.
 */
int ports_node_send_user_message(ports_node *node, const ports_port_ref *port, ports_event *ev);

/*
 * Asks the peer to acknowledge reads every `interval` messages (0 stops):
 * the basis of the unread-message-count quota.
 */
int ports_node_set_ack_request_interval(ports_node *node, const ports_port_ref *port,
                                        uint64_t interval);

/*
 * Marks a receiving port as one that a MergePort event from another node may
 * merge with. Without this, a remote MergePort naming the port is refused.
 */
int ports_node_allow_merge(ports_node *node, const ports_port_ref *port);

/*
 * Merges this node's receiving port with port `dest_port` on `dest_node` (which
 * must have been allowed to merge): their two peers become each other's peer.
 * Neither port may have sent a message.
 */
int ports_node_merge_ports(ports_node *node, const ports_port_ref *port,
                           const ports_name *dest_node, const ports_name *dest_port);

/* Same, for two receiving ports of this node (MojoFuseMessagePipes). */
int ports_node_merge_local_ports(ports_node *node, const ports_port_ref *a,
                                 const ports_port_ref *b);

/*
 * Delivers an event that arrived from node `from` (which may be this node).
 * Consumes ev. PORTS_ERROR_BAD_PEER means the sender broke the protocol: the
 * event was dropped, affected ports were closed, and the embedder should
 * disconnect that node. Other errors are benign (e.g. the port is gone).
 */
int ports_node_accept_event(ports_node *node, const ports_name *from, ports_event *ev);

/*
 * The connection to `lost` is gone: every port whose route runs through it
 * becomes peer-closed (still readable up to what arrived), and proxies that
 * pointed at it announce their death with a broadcast so other nodes clean
 * up too.
 */
int ports_node_lost_connection_to_node(ports_node *node, const ports_name *lost);

/* Debugging aid: one line per port (state, peer, previous peer, counters). */
void ports_node_dump(ports_node *node, FILE *out);

#endif /* CMOJO_PORTS_PORTS_H_ */
