/*
 * Data pipe producer and consumer dispatchers (MojoCreateDataPipe and the
 * read/write entry points).
 *
 * A data pipe is a ring buffer in a sealed memfd that both ends map (the
 * consumer through its own O_RDONLY open of the memfd, which is also what it
 * sends when it travels, so no process it reaches can write the ring), plus
 * a pair of ports, the control pipe, on which the producer sends
 * DATA_WAS_WRITTEN and the consumer DATA_WAS_READ counts (data_pipe_wire.h). Each end keeps its
 * offset and count in private memory and changes them only through its own operations and validated
 * counts; a count that does not add up closes the control port, so both ends see their peer closed.
 *
 * Travelling: an end attached to a message lets go of its control port,
 * which the event carries like a pipe's (message.h); in this process the
 * dispatcher object rides along in the message, and to another process its
 * state and ring fd go on the wire. Either way it binds to the port that
 * arrived when it becomes a handle again and applies every count queued
 * there meanwhile. Counts are only ever sent with the port in use
 * (port_users), and an end lets go of the port only when no thread uses it,
 * so no count is lost or applied to a state already on its way.
 *
 * Lock order: the dispatcher lock, then ports locks. Sends and reads on the
 * control port happen with no dispatcher lock held.
 */
#ifndef CMOJO_CORE_DATA_PIPE_H_
#define CMOJO_CORE_DATA_PIPE_H_

#include <stddef.h>
#include <stdint.h>

#include "core/dispatcher.h"

/* The wire types' deserializers (core_wire_type): state and one ring fd. */
core_dispatcher *core_data_pipe_producer_deserialize(const uint8_t *state, size_t size, int *fds,
                                                     const char **why);
core_dispatcher *core_data_pipe_consumer_deserialize(const uint8_t *state, size_t size, int *fds,
                                                     const char **why);

#endif /* CMOJO_CORE_DATA_PIPE_H_ */
