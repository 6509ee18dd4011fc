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
 * Attachments, in the order the user appended them, are one of:
 *  - appended: the handle stays in the handle table, busy, with its
 *    dispatcher referenced here, until the message is written (the entry is
 *    removed) or destroyed (the handle is closed);
 *  - an object in flight or received (a wrapped fd, a shared buffer, a data
 *    pipe end): the dispatcher, referenced here, in no table;
 *  - a pipe: the name of its port. While the message travels the ports layer
 *    carries the ports (ev->u.user.ports, in order), and the name is filled
 *    in when the message is read: then it is a receiving port on this node.
 * An object whose type owns a port (a data pipe end and its control port)
 * is both: the dispatcher travels here, detached from its port, and its
 * port travels in the event like a pipe's; `port` names it once read, and
 * the dispatcher binds to it when it becomes a handle.
 * MojoGetMessageData turns attachments into handles.
 *
 * Envelope (what a message is on the wire, the payload of its ports event):
 *   u32 num_bytes, u32 num_handles,
 *   num_handles x { u32 type (core_dispatcher_type), u32 state_size },
 *   each handle's state in order, each padded with zeros to 8 bytes,
 *   num_bytes bytes.
 * Each type takes a fixed number of the frame's fds and maybe the event's
 * next port (core_wire_type); the counts must match exactly, and every
 * state is validated by its type's deserializer against the fds it came
 * with before anything is mapped or trusted.
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
    core_dispatcher *dispatcher; /* appended or object; NULL for a pipe's port */
    MojoHandle handle;           /* its (busy) handle while appended; 0 for an object */
    ports_name port;             /* a pipe's or an object's port, once read */
} core_attachment;

/*
 * What one attachable type puts on the wire besides its state. A type not
 * listed (core_wire_type_find returns NULL) cannot arrive from elsewhere.
 */
typedef struct core_wire_type {
    core_dispatcher_type type;
    uint32_t num_fds; /* fds it takes from the frame, in order */
    bool has_port;    /* takes the event's next port */
    /*
     * Rebuilds an object from its state and fds (NULL for message pipes,
     * which are ports only). Validates both before trusting either (sizes,
     * seals, offsets); on success the fds are the object's and are set to
     * -1 in fds; on failure it returns NULL, *why says what was wrong, and
     * the fds are left to the caller.
     */
    core_dispatcher *(*deserialize)(const uint8_t *state, size_t size, int *fds, const char **why);
} core_wire_type;

const core_wire_type *core_wire_type_find(uint32_t type);

#define CORE_ENVELOPE_HEADER_SIZE 8u
#define CORE_ENVELOPE_HANDLE_SIZE 8u

/* Payload bytes a message holds without a separate allocation. */
#define CORE_MESSAGE_INLINE_BYTES 64u

/*
 * Bytes beyond the inline ones live on the heap with this much room in
 * front of them and behind them: a message that leaves the process gets its
 * frame header, ports event and envelope written in front of its bytes (and
 * the frame's padding behind), and goes to the socket in one piece from
 * where it is (core_message_wire_serialize_in_place). The front room holds
 * the frame of a message without attachments (16 + 64 + 8 bytes).
 */
#define CORE_MESSAGE_HEADROOM 128u
#define CORE_MESSAGE_TAILROOM 8u

typedef struct core_message {
    ports_payload base; /* first: what the ports layer carries */
    uint64_t value;     /* name in the message table; 0 while not in it */
    uint64_t serial;    /* unique per message ever created in this process */
    uint32_t max_size;  /* payload limit */

    uintptr_t context;
    MojoMessageContextSerializer serializer;
    MojoMessageContextDestructor destructor;

    bool has_data;  /* bytes (possibly zero) attached: "serialized" */
    bool committed; /* size final; may be written */
    /* inline_data, a heap block, inside `block`, or NULL while capacity is 0 */
    uint8_t *data;
    uint32_t size, capacity;
    /* A received frame's buffer (platform/block.h), kept instead of copying its bytes out. */
    void *block;
    /* Small payloads (most messages, every data pipe count) need no allocation of their own. */
    _Alignas(8) uint8_t inline_data[CORE_MESSAGE_INLINE_BYTES];

    core_attachment *attachments;
    uint32_t num_attachments, cap_attachments;
    uint32_t num_fds; /* attachments that are fd-carrying objects */
    bool handles_extracted;
    ports_name from_node; /* the process it came from; zero if this one */
    /*
     * The ports event a message without ports travels in, so that a write
     * allocates nothing (ports_user_message_init). Live only from the write
     * until the event is destroyed: by the reader, which takes the message
     * out of it, or with the message.
     */
    ports_event event;
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

/* The node layer's codec for the envelope (node.h, node_delegate). */
int core_message_wire_measure(ports_payload *payload, size_t *num_bytes, size_t *num_fds);
void core_message_wire_serialize(ports_payload *payload, uint8_t *buf, int *fds);
/* The same without copying the message bytes (node_delegate.payload_serialize_head). */
void core_message_wire_serialize_head(ports_payload *payload, uint8_t *buf, int *fds,
                                      const void **data, size_t *data_len);
/*
 * node_delegate.payload_serialize_in_place: for a message without
 * attachments whose bytes have room for it (heap bytes, or a kept frame's),
 * writes the envelope's head in front of the bytes and returns where
 * `before` more bytes of room start; `after` bytes behind the bytes are
 * free to write as well. NULL when there is no such room.
 */
uint8_t *core_message_wire_serialize_in_place(ports_payload *payload, size_t before, size_t after,
                                              size_t *envelope_len);
int core_message_wire_parse(const ports_name *from, const uint8_t *buf, size_t len,
                            uint32_t num_ports, int *fds, size_t num_fds, void **block,
                            ports_payload **out, const char **why);
/* The message's own event (node_delegate.payload_event); payload from core_message_wire_parse. */
ports_event *core_message_wire_event(ports_payload *payload);

/*
 * Runs the context serializer now (a write to a pipe whose peer is in
 * another process). Nonzero if the message cannot be serialized.
 */
int core_message_serialize_for_transit(core_message *m);

/*
 * pipe_write's bracket around the send: while it is open, the ports layer
 * destroying m on this thread (a refused send) leaves m and its objects to
 * the writer. core_message_send_end says whether that happened. Begin also
 * fixes, from whether m has a context now, whether the ports layer tells m
 * it leaves the process.
 */
void core_message_send_begin(core_message *m);
bool core_message_send_end(void);

/*
 * A message of `size` bytes and no handles, committed: what data pipes send
 * on their control ports. NULL on ENOMEM.
 */
core_message *core_message_new_bytes(const void *data, uint32_t size);

/* Frees m without touching its attachments (the writer dealt with them). */
void core_message_free_shell(core_message *m);

/*
 * Whether the message can be written: NOT_FOUND with neither data nor
 * context, FAILED_PRECONDITION if uncommitted or its handles were taken out.
 */
MojoResult core_message_check_writable(const core_message *m);

/*
 * Whether m may go to another process: its payload is within
 * CMOJO_MAX_MESSAGE_NUM_BYTES (UNLIMITED_SIZE lifts that limit for this
 * process only; another process refuses more, and more may not fit a frame).
 */
bool core_message_may_leave_process(const core_message *m);

#endif /* CMOJO_CORE_MESSAGE_H_ */
