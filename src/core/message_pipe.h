/*
 * Message pipe endpoints: the dispatcher that owns one port of the node.
 *
 * Signals come from the port's status (ports_node_get_status) plus the
 * endpoint's quotas. The port's user data points at the dispatcher so that
 * the ports layer's status callbacks find it; it is cleared before the
 * dispatcher lets go of the port (close, transfer, fuse).
 */
#ifndef CMOJO_CORE_MESSAGE_PIPE_H_
#define CMOJO_CORE_MESSAGE_PIPE_H_

#include "core/dispatcher.h"
#include "ports/ports.h"

/* The ports layer's port_status_changed callback. */
void core_pipe_port_status_changed(const ports_port_ref *ref);
/*
 * Its port_status_seen: data is the port's user data (a dispatcher, whose
 * reference this drops) or NULL, and *status the port's status as the change
 * left it.
 */
void core_pipe_port_status_seen(void *data, const ports_port_status *status);

/*
 * A new endpoint for a receiving port of this node (one reference, the
 * caller's). NULL on ENOMEM.
 */
core_dispatcher *core_pipe_new(const ports_port_ref *port);

#endif /* CMOJO_CORE_MESSAGE_PIPE_H_ */
