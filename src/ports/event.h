/*
 * Ports events: the nine messages ports exchange, their in-memory form, and
 * their wire form.
 *
 * Wire form (all integers little-endian, every field at a fixed offset):
 *
 *   header, 48 bytes
 *     u32  type                  one of ports_event_type
 *     u32  reserved              must be 0
 *     u64  port_name[2]          the port the event is addressed to
 *     u64  from_port[2]          the sending port (0 for events that are not
 *                                sequenced, see ports_event_is_sequenced)
 *     u64  control_sequence_num  PORTS_INVALID_SEQUENCE_NUM when unsequenced
 *   body, by type
 *     USER_MESSAGE       u64 sequence_num, u32 num_ports, u32 reserved(0),
 *                        num_ports x descriptor (96 bytes),
 *                        num_ports x port name (16 bytes),
 *                        then the payload: every remaining byte
 *     PORT_ACCEPTED      (empty)
 *     OBSERVE_PROXY      proxy_node, proxy_port, proxy_target_node,
 *                        proxy_target_port (4 x 16 bytes)
 *     OBSERVE_PROXY_ACK  u64 last_sequence_num
 *     OBSERVE_CLOSURE    u64 last_sequence_num
 *     MERGE_PORT         new_port_name (16), descriptor (96)
 *     READ_ACK_REQUEST   u64 sequence_num_to_acknowledge
 *     READ_ACK           u64 sequence_num_acknowledged
 *     UPDATE_PREV_PEER   new_node (16), new_port (16)
 *   descriptor, 96 bytes
 *     peer_node, peer_port, referring_node, referring_port (4 x 16),
 *     u64 next_sequence_num_to_send, u64 next_sequence_num_to_receive,
 *     u64 last_sequence_num_to_receive, u8 peer_closed (0 or 1),
 *     u8 reserved[7] (0)
 *
 * Parsing is a pure function of the bytes: it checks every length and count
 * against what is really there before using it, and a rejected input is an
 * ordinary outcome (PORTS_ERROR_MALFORMED), never undefined behaviour.
 *
 * Threads: everything here is pure; an event is owned by one thread at a time.
 */
#ifndef CMOJO_PORTS_EVENT_H_
#define CMOJO_PORTS_EVENT_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ports/common.h"

typedef enum ports_event_type {
    PORTS_EVENT_USER_MESSAGE = 0,
    PORTS_EVENT_PORT_ACCEPTED = 1,
    PORTS_EVENT_OBSERVE_PROXY = 2,
    PORTS_EVENT_OBSERVE_PROXY_ACK = 3,
    PORTS_EVENT_OBSERVE_CLOSURE = 4,
    PORTS_EVENT_MERGE_PORT = 5,
    PORTS_EVENT_USER_MESSAGE_READ_ACK_REQUEST = 6,
    PORTS_EVENT_USER_MESSAGE_READ_ACK = 7,
    PORTS_EVENT_UPDATE_PREVIOUS_PEER = 8,
} ports_event_type;

#define PORTS_EVENT_TYPE_COUNT 9

/* Sequence numbers start at 1; 0 means "not yet assigned" on a user message. */
#define PORTS_INITIAL_SEQUENCE_NUM ((uint64_t)1)
#define PORTS_INVALID_SEQUENCE_NUM UINT64_MAX

#define PORTS_EVENT_HEADER_SIZE 48u
#define PORTS_DESCRIPTOR_SIZE 96u
#define PORTS_USER_MESSAGE_FIXED_SIZE 16u

/* Everything a node needs to recreate a port that another node sent it. */
typedef struct ports_port_descriptor {
    ports_name peer_node;
    ports_name peer_port;
    ports_name referring_node;
    ports_name referring_port;
    uint64_t next_sequence_num_to_send;
    uint64_t next_sequence_num_to_receive;
    uint64_t last_sequence_num_to_receive;
    bool peer_closed;
} ports_port_descriptor;

/*
 * The body of a user message, opaque to the ports layer. The embedder (core,
 * or a test) embeds this struct first in its own message type. The ports layer
 * only ever calls ops->destroy (exactly once, with no lock held) and, before
 * the message first leaves the node, ops->will_be_routed_externally.
 */
typedef struct ports_payload ports_payload;
typedef struct ports_payload_ops {
    void (*destroy)(ports_payload *payload);
    /* Optional. Called with no lock held; nonzero refuses the send. */
    int (*will_be_routed_externally)(ports_payload *payload);
} ports_payload_ops;

struct ports_payload {
    const ports_payload_ops *ops;
    size_t size; /* bytes counted against the receiving port's queue */
};

/*
 * A payload that is just bytes: what the parser produces. NULL on ENOMEM.
 * Empty payloads are all one shared object (destroying it does nothing), so
 * they cost no memory and cannot fail.
 */
ports_payload *ports_payload_bytes_new(const void *data, size_t len);
bool ports_payload_is_bytes(const ports_payload *payload);
const uint8_t *ports_payload_bytes_data(const ports_payload *payload);
void ports_payload_destroy(ports_payload *payload); /* NULL is fine */

typedef struct ports_event ports_event;
struct ports_event {
    ports_event_type type;
    ports_name port_name;
    ports_name from_port;
    uint64_t control_sequence_num;
    union {
        struct {
            uint64_t sequence_num;
            uint32_t num_ports;
            ports_name *ports;                  /* num_ports, inline */
            ports_port_descriptor *descriptors; /* num_ports, inline */
            ports_payload *payload;             /* owned; may be NULL */
        } user;
        struct {
            ports_name proxy_node;
            ports_name proxy_port;
            ports_name proxy_target_node;
            ports_name proxy_target_port;
        } observe_proxy;
        struct {
            uint64_t last_sequence_num;
        } observe_proxy_ack;
        struct {
            uint64_t last_sequence_num;
        } observe_closure;
        struct {
            ports_name new_port_name;
            ports_port_descriptor descriptor;
        } merge_port;
        struct {
            uint64_t sequence_num_to_acknowledge;
        } read_ack_request;
        struct {
            uint64_t sequence_num_acknowledged;
        } read_ack;
        struct {
            ports_name new_node;
            ports_name new_port;
        } update_previous_peer;
    } u;
    /* Private to the ports layer: queue linkage while a port holds the event. */
    ports_event *next_;
    ports_name from_node_;
    bool ports_accepted_; /* carried ports already recreated on this node */
    bool in_payload_;     /* made by ports_user_message_init: the memory is not ours */
};

/*
 * Allocates an event of the given type with every field zeroed and the
 * control sequence number invalid. NULL on ENOMEM.
 */
ports_event *ports_event_new(ports_event_type type, const ports_name *port_name);

/*
 * Allocates a user message that will carry num_ports ports (names filled in by
 * the caller in ev->u.user.ports) and takes ownership of payload (also on
 * failure, when the payload is destroyed). NULL on ENOMEM or when num_ports
 * exceeds CMOJO_MAX_PORTS_PER_MESSAGE.
 */
ports_event *ports_user_message_new(uint32_t num_ports, ports_payload *payload);

/*
 * A user message that carries no ports, made in memory the caller provides
 * (typically inside the payload itself, saving an allocation per message):
 * storage must stay valid until the event is destroyed, and destroying the
 * event destroys its payload but frees nothing else. Once destroyed, storage
 * may hold a new event.
 */
ports_event *ports_user_message_init(ports_event *storage, ports_payload *payload);

/*
 * Frees the event and its payload. NULL is fine. An event made by
 * ports_user_message_init is not touched once its payload is destroyed.
 */
void ports_event_destroy(ports_event *ev);

/*
 * True when the event travels on its sender's control sequence and must come
 * from the receiving port's previous peer (everything except PortAccepted,
 * MergePort and the dead-proxy ObserveProxy broadcast).
 */
bool ports_event_is_sequenced(const ports_event *ev);

/* Wire size of the event excluding any user payload. */
size_t ports_event_serialized_size(const ports_event *ev);

/*
 * Writes the event (without payload bytes) into buf, which has at least
 * ports_event_serialized_size(ev) bytes. The embedder appends the payload.
 */
void ports_event_serialize(const ports_event *ev, uint8_t *buf);

/*
 * Parses one event from len bytes. On success *out is a new event (for a user
 * message the bytes after the port names become a bytes payload) and the
 * result is PORTS_OK; otherwise *out is untouched and the result is
 * PORTS_ERROR_MALFORMED (or PORTS_ERROR_NO_MEMORY).
 */
int ports_event_parse(const void *buf, size_t len, ports_event **out);

/*
 * ports_event_parse, except that a user message carrying no ports is
 * written to *storage (and *out points there) instead of to a new event. As
 * for ports_user_message_init's, destroying that event frees nothing but its
 * payload: the caller moves it where it is to live (inside its payload,
 * say) before handing it on.
 */
int ports_event_parse_into(const void *buf, size_t len, ports_event *storage, ports_event **out);

const char *ports_event_type_name(ports_event_type type);

#endif /* CMOJO_PORTS_EVENT_H_ */
