/*
 * The node controller: this process's ports node plus one channel per peer
 * process, and everything that happens between processes -- invitations,
 * the broker's introductions, relaying broadcasts, and cutting off a peer
 * that breaks the rules or goes away.
 *
 * Roles. A process that sends a (non-isolated) invitation first is the
 * broker; every process it invites is its client, and reaches the other
 * clients through introductions: a client that must send an event to a node
 * it has no channel to queues the event (bounded) and asks the broker, which
 * answers with one end of a fresh socketpair (and gives the other end to
 * the other node), or with "unknown" -- then the waiting ports are failed.
 * An isolated invitation connects two processes directly, with no broker.
 *
 * Trust. Every frame from a peer is validated before use (node_wire.h,
 * ports/event.h, and the embedder's payload codec). A peer that sends
 * anything malformed, or breaks the ports protocol, is disconnected: its
 * fds are closed, every port routed through it becomes peer-closed, and the
 * error handler of the invitation that connected it is told why. A peer's
 * name is the one it gave when it connected (or the one the broker gave when
 * introducing it); only the broker may introduce or announce lost nodes. A
 * client that cuts off a peer the broker introduced (as above, or over an
 * event it cannot send) tells the broker, which announces the client lost
 * to that peer alone: the only routes a client can end that way are the
 * ones to itself.
 *
 * Threads: every function may be called from any thread. Frames are handled
 * on the IO thread; the delegate's callbacks run with no node lock held.
 */
#ifndef CMOJO_NODE_NODE_H_
#define CMOJO_NODE_NODE_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ports/ports.h"

typedef struct node_controller node_controller;
typedef struct node_invitation node_invitation;

/* How the embedder (core) takes part. */
typedef struct node_delegate {
    /*
     * ports_delegate.port_status_changed, acquire_user_data and
     * port_status_seen, passed through (the last two optional, together).
     */
    void (*port_status_changed)(const ports_port_ref *ref);
    void (*acquire_user_data)(void *data);
    void (*port_status_seen)(const ports_port_ref *ref, void *data,
                             const ports_port_status *status);
    /*
     * The envelope of a user message that leaves this process: its size and
     * fd count. Nonzero refuses (the message is dropped, its route closed).
     */
    int (*payload_measure)(ports_payload *payload, size_t *num_bytes, size_t *num_fds);
    /*
     * Writes the envelope (payload_measure's num_bytes) and moves its fds
     * into fds (num_fds of them, now the caller's). The payload is destroyed
     * by the caller afterwards.
     */
    void (*payload_serialize)(ports_payload *payload, uint8_t *buf, int *fds);
    /*
     * Optional; payload_serialize without copying the message bytes that
     * end the envelope: writes the envelope but its last *data_len bytes,
     * which it points *data at instead (valid until the payload is
     * destroyed), so that they go to the socket from where they are.
     */
    void (*payload_serialize_head)(ports_payload *payload, uint8_t *buf, int *fds,
                                   const void **data, size_t *data_len);
    /*
     * Optional; for a payload without fds that has room around itself:
     * writes the envelope (*envelope_len bytes) into the payload's own
     * memory and returns a pointer to `before` bytes of room that precede
     * it, with `after` bytes of room behind it, all the node's to write
     * until the payload is destroyed. NULL when it has no such room (then
     * payload_serialize and the like are used).
     */
    uint8_t *(*payload_serialize_in_place)(ports_payload *payload, size_t before, size_t after,
                                           size_t *envelope_len);
    /*
     * Parses an envelope that arrived from node `from` with an event that
     * carries num_ports ports. On success *out is a payload owning the fds;
     * on failure every fd is closed, *why says why, and the sender is cut
     * off. 0 or -1. When block is not NULL, buf lies inside the block
     * *block (platform/block.h), which the payload may keep instead of
     * copying from buf (it takes it by setting *block to NULL, on success
     * only, and frees it with plat_block_free).
     */
    int (*payload_parse)(const ports_name *from, const uint8_t *buf, size_t len, uint32_t num_ports,
                         int *fds, size_t num_fds, void **block, ports_payload **out,
                         const char **why);
    /*
     * Room inside a payload from payload_parse for the event that carries
     * it, when that event has no ports: it then needs no memory of its own.
     */
    ports_event *(*payload_event)(ports_payload *payload);
    /* Bracket IO-thread work that may change handle signals (request context). */
    void (*enter)(void);
    void (*leave)(void);
} node_delegate;

/*
 * Told about a connection to another process: a reason (not NUL-terminated)
 * and whether the connection is gone. Runs with no lock held, on any thread.
 */
typedef void (*node_error_fn)(uintptr_t ctx, const char *reason, size_t len, bool disconnected);

/* Creates the node (and its ports node). The IO thread starts on first use. */
int node_create(const node_delegate *delegate, node_controller **out);

/*
 * Stops every channel and the IO thread, then destroys the ports node. No
 * other call may be in progress or follow.
 */
void node_destroy(node_controller *n);

ports_node *node_ports(node_controller *n);

/*
 * The IO loop, or NULL before the first channel (and after destroy). Once
 * set it stays until node_destroy, which no other call may overlap.
 */
struct plat_io *node_io(node_controller *n);

/*
 * Sends an invitation on connected stream socket fd. names[i] names the
 * attachment whose reserved port is ports[i] (its peer is the caller's
 * local end); the node takes the refs and merges each port with the one the
 * invitee extracts. fn/ctx (fn may be NULL) hear about this peer. With
 * conn_name (isolated only, may be NULL) an older isolated connection of
 * the same name is cut off. On success fd is the node's; on failure it and
 * the ports stay the caller's.
 * 0; -EINVAL (not a connected stream socket); -EPERM (a non-isolated
 * invitation from a process that was invited itself); -ENOMEM or another
 * negative errno.
 */
typedef struct node_wire_name node_wire_name;
int node_send_invitation(node_controller *n, int fd, bool isolated, const node_wire_name *names,
                         const ports_port_ref *ports, uint32_t count, node_error_fn fn,
                         uintptr_t ctx, const void *conn_name, size_t conn_name_len);

/*
 * Accepts an invitation on fd; *out is a reference released with
 * node_invitation_close. On success fd is the node's. 0; -EINVAL; -EPERM (a
 * non-isolated invitation while this process has a broker or is one);
 * -ENOMEM.
 */
int node_accept_invitation(node_controller *n, int fd, bool isolated, node_invitation **out);

/*
 * A receiving port for attachment `name` of an accepted invitation (a ref
 * the caller releases). If the inviter has no such attachment the port
 * becomes peer-closed. 0 or -ENOMEM.
 */
int node_invitation_extract(node_controller *n, node_invitation *inv, const void *name,
                            uint32_t len, ports_port_ref *out);

/* Closes the attachments not extracted and drops the reference. */
void node_invitation_close(node_controller *n, node_invitation *inv);

/*
 * A message that came from node `from` was bad: tell the error handler of
 * the process that invited it (here, or through the broker).
 */
void node_report_bad_message(node_controller *n, const ports_name *from, const char *reason,
                             size_t len);

/* Handler for errors on connections this process did not invite (NULL removes). */
typedef void (*node_default_error_fn)(const char *reason, size_t len, bool disconnected);
void node_set_default_error_handler(node_controller *n, node_default_error_fn fn);

/* Introspection for tests: peers with a live channel. */
size_t node_debug_peer_count(node_controller *n);

#endif /* CMOJO_NODE_NODE_H_ */
