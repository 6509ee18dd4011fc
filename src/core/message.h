/*
 * Message objects (MojoCreateMessage, MojoAppendMessageData, ...).
 *
 * A message is either a user context (a pointer plus serializer and
 * destructor, never serialized while it stays in this process) or bytes plus
 * attached handles. It travels through the ports layer as the payload of a
 * user message event: core_message embeds ports_payload first, so the event
 * carries the object itself between two ends in this process, and only a
 * message routed to another node is turned into bytes
 * (ops->will_be_routed_externally).
 *
 * Attachments: a handle appended by the user stays in the handle table,
 * busy, with its dispatcher referenced here, until the message is written
 * (the entry is removed) or destroyed (the handle is closed). A message read
 * from a pipe carries its handles as the names of receiving ports on this
 * node; MojoGetMessageData turns them into handles.
 *
 * Threads: a message is used by one thread at a time (Mojo's rule); the
 * message table that names them is thread-safe.
 */
#ifndef CMOJO_CORE_MESSAGE_H_
#define CMOJO_CORE_MESSAGE_H_

#include <stdbool.h>
#include <stdint.h>

#include "core/dispatcher.h"
#include "mojo/public/c/system/message_pipe.h"
#include "ports/event.h"

typedef struct core_attachment {
    core_dispatcher *dispatcher; /* appended here, in transit; NULL once received */
    MojoHandle handle;           /* its (busy) handle while appended */
    ports_name port;             /* received: a receiving port on this node */
} core_attachment;

typedef struct core_message {
    ports_payload base; /* first: what the ports layer carries */
    uint64_t value;     /* name in the message table; 0 while not in it */
    uint32_t max_size;  /* payload limit */

    uintptr_t context;
    MojoMessageContextSerializer serializer;
    MojoMessageContextDestructor destructor;

    bool has_data;  /* bytes (possibly zero) attached: "serialized" */
    bool committed; /* size final; may be written */
    uint8_t *data;
    uint32_t size, capacity;

    core_attachment *attachments;
    uint32_t num_attachments, cap_attachments;
    bool handles_extracted;
} core_message;

/*
 * Destroys a message that is in no table: closes the handles it owns, runs
 * the context destructor, frees it. NULL is fine.
 */
void core_message_destroy(core_message *m);

/*
 * Takes message `value` out of the table for writing. INVALID_ARGUMENT if it
 * is not a live message.
 */
MojoResult core_message_take(uint64_t value, core_message **out);

/* Puts a message (read from a pipe) in the table; its handle goes to *out. */
MojoResult core_message_publish(core_message *m, MojoMessageHandle *out);

/*
 * Wraps a payload that arrived in an event (ownership passes here) as a
 * message whose attachments are the event's carried ports. NULL on ENOMEM
 * (the payload is destroyed, the ports are closed).
 */
core_message *core_message_from_event(ports_event *ev);

/*
 * Whether the message can be written: NOT_FOUND with neither data nor
 * context, FAILED_PRECONDITION if uncommitted or its handles were taken out.
 */
MojoResult core_message_check_writable(const core_message *m);

#endif /* CMOJO_CORE_MESSAGE_H_ */
