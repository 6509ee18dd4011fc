/*
 * The node layer's messages: what one process's node controller says to
 * another's, each in one channel frame whose type is a node_msg_type.
 *
 * Layouts (little-endian, every field at a fixed offset; 16-byte names):
 *
 *   INVITE          inviter -> invitee, first frame on an invitation channel
 *                   name inviter, name broker (zero when isolated),
 *                   u32 flags (NODE_INVITE_ISOLATED), u32 num_attachments,
 *                   then per attachment: u32 name_len, u32 reserved(0),
 *                   name bytes padded with zeros to a multiple of 8
 *   ACCEPT          invitee -> inviter, in answer to INVITE
 *                   name invitee
 *   MERGE_PORT      invitee -> inviter: merge my port with your attachment
 *                   name port, u32 name_len, u32 reserved(0), name bytes
 *                   (the attachment's name, exactly name_len bytes)
 *   EVENT           a ports event (ports/event.h wire form). For a user
 *                   message the event's payload is the core's message
 *                   envelope (core/message_wire.h); the frame's fds belong to
 *                   that envelope. Other events carry no fds.
 *   REQUEST_INTRO   client -> broker: name of the node I need a channel to
 *   INTRODUCE       broker -> client: name, u32 ok (0 or 1), u32 reserved;
 *                   with ok, exactly one fd: my end of a new socketpair
 *   BROADCAST       name origin, then a ports event (only the dead-proxy
 *                   ObserveProxy form). A client sends it to the broker with
 *                   origin = itself; the broker relays it to every other
 *                   node, which accepts it as coming from origin
 *   NODE_LOST       broker -> client: name of a node that is gone, or that
 *                   cut its connection to this client (see PEER_CUT)
 *   BAD_MESSAGE     client -> broker: name of the node a bad message came
 *                   from, u32 length, u32 reserved, reason bytes
 *   PEER_CUT        client -> broker: name of a node the broker introduced
 *                   us to whose connection we cut while it lived; the broker
 *                   answers nothing, and tells that node NODE_LOST(us)
 *
 * Every parser checks exact sizes: a frame of the wrong size, a zero or
 * reserved name where one is not allowed, a nonzero reserved field, fds on a
 * message that takes none: the sender is disconnected.
 *
 * Threads: pure functions.
 */
#ifndef CMOJO_NODE_NODE_WIRE_H_
#define CMOJO_NODE_NODE_WIRE_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ports/common.h"

typedef enum node_msg_type {
    NODE_MSG_INVITE = 1,
    NODE_MSG_ACCEPT = 2,
    NODE_MSG_MERGE_PORT = 3,
    NODE_MSG_EVENT = 4,
    NODE_MSG_REQUEST_INTRO = 5,
    NODE_MSG_INTRODUCE = 6,
    NODE_MSG_BROADCAST = 7,
    NODE_MSG_NODE_LOST = 8,
    NODE_MSG_BAD_MESSAGE = 9,
    NODE_MSG_PEER_CUT = 10,
} node_msg_type;

#define NODE_INVITE_ISOLATED 1u

#define NODE_NAME_WIRE_SIZE 16u
#define NODE_INVITE_FIXED_SIZE 40u
#define NODE_MERGE_PORT_FIXED_SIZE 24u
#define NODE_INTRODUCE_SIZE 24u
#define NODE_BAD_MESSAGE_FIXED_SIZE 24u

/* One attachment name inside a parsed INVITE (points into the frame). */
typedef struct node_wire_name {
    const uint8_t *bytes;
    uint32_t len;
} node_wire_name;

/* A parsed node message (anything but EVENT/BROADCAST, whose body is a ports event). */
typedef struct node_wire_msg {
    node_msg_type type;
    ports_name name;            /* INVITE: inviter; ACCEPT: invitee; MERGE_PORT: port;
                                   REQUEST_INTRO, INTRODUCE, NODE_LOST, BAD_MESSAGE,
                                   PEER_CUT: the node */
    ports_name broker;          /* INVITE */
    uint32_t flags;             /* INVITE */
    uint32_t ok;                /* INTRODUCE */
    node_wire_name text;        /* MERGE_PORT: attachment name; BAD_MESSAGE: reason */
    uint32_t num_attachments;   /* INVITE */
    const uint8_t *attachments; /* INVITE: the raw list, walk with node_wire_next_name */
    size_t attachments_size;
} node_wire_msg;

/*
 * Parses a frame of a type other than EVENT and BROADCAST. num_fds is the
 * number of fds that came with it (only an INTRODUCE with ok takes one).
 * 0 on success; -1 if malformed (*why says why).
 */
int node_wire_parse(uint16_t type, const uint8_t *buf, size_t len, size_t num_fds,
                    node_wire_msg *out, const char **why);

/*
 * Steps through an INVITE's attachment list (validated by node_wire_parse):
 * *pos starts at 0; returns false at the end.
 */
bool node_wire_next_name(const node_wire_msg *msg, size_t *pos, node_wire_name *out);

/* Builders: write into buf (at least the returned size); return the size. */
size_t node_wire_invite_size(const node_wire_name *names, uint32_t n);
size_t node_wire_write_invite(uint8_t *buf, const ports_name *inviter, const ports_name *broker,
                              uint32_t flags, const node_wire_name *names, uint32_t n);
/* ACCEPT, REQUEST_INTRO, NODE_LOST, PEER_CUT */
size_t node_wire_write_name(uint8_t *buf, const ports_name *name);
size_t node_wire_write_merge_port(uint8_t *buf, const ports_name *port, const void *name,
                                  uint32_t name_len);
size_t node_wire_write_introduce(uint8_t *buf, const ports_name *name, bool ok);
size_t node_wire_write_bad_message(uint8_t *buf, const ports_name *name, const char *reason,
                                   uint32_t len);

#endif /* CMOJO_NODE_NODE_WIRE_H_ */
