/*
 * Node messages: builders and the strict parser. Part of the untrusted
 * boundary: every input comes from another process. Sizes are exact, names
 * that identify nodes are valid, reserved fields are zero, and only an
 * INTRODUCE that succeeded may carry an fd.
 */
#include "node/node_wire.h"

#include <string.h>

#include "cmojo_limits.h"
#include "cmojo_wire.h"

_Static_assert(NODE_INVITE_FIXED_SIZE == 2 * NODE_NAME_WIRE_SIZE + 8, "INVITE layout");
_Static_assert(NODE_MERGE_PORT_FIXED_SIZE == NODE_NAME_WIRE_SIZE + 8, "MERGE_PORT layout");
_Static_assert(NODE_INTRODUCE_SIZE == NODE_NAME_WIRE_SIZE + 8, "INTRODUCE layout");
_Static_assert(NODE_BAD_MESSAGE_FIXED_SIZE == NODE_NAME_WIRE_SIZE + 8, "BAD_MESSAGE layout");

static int bad(const char **why, const char *reason)
{
    *why = reason;
    return -1;
}

/* A name that must identify something: nonzero. */
static bool load_valid_name(const uint8_t *p, ports_name *out)
{
    *out = wire_load_name(p);
    return ports_name_is_valid(out);
}

static bool zero_bytes(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* Validates the INVITE attachment list: n entries, each name 1..max bytes, padded with zeros. */
static bool attachments_ok(const uint8_t *p, size_t len, uint32_t n)
{
    size_t pos = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (len - pos < 8)
            return false;
        uint32_t name_len = wire_load_u32(p + pos);
        if (name_len == 0 || name_len > CMOJO_MAX_INVITATION_NAME || wire_load_u32(p + pos + 4))
            return false;
        pos += 8;
        size_t padded = (size_t)wire_align8(name_len);
        if (len - pos < padded || !zero_bytes(p + pos + name_len, padded - name_len))
            return false;
        pos += padded;
    }
    return pos == len;
}

int node_wire_parse(uint16_t type, const uint8_t *buf, size_t len, size_t num_fds,
                    node_wire_msg *out, const char **why)
{
    node_wire_msg m;
    memset(&m, 0, sizeof(m));
    m.type = (node_msg_type)type;
    size_t fds_allowed = 0;
    switch (type) {
    case NODE_MSG_INVITE:
        if (len < NODE_INVITE_FIXED_SIZE)
            return bad(why, "INVITE too short");
        if (!load_valid_name(buf, &m.name))
            return bad(why, "INVITE with no inviter name");
        m.broker = wire_load_name(buf + 16);
        m.flags = wire_load_u32(buf + 32);
        m.num_attachments = wire_load_u32(buf + 36);
        if (m.flags & ~NODE_INVITE_ISOLATED)
            return bad(why, "INVITE with unknown flags");
        if (!(m.flags & NODE_INVITE_ISOLATED) && !ports_name_is_valid(&m.broker))
            return bad(why, "INVITE with no broker name");
        if ((m.flags & NODE_INVITE_ISOLATED) && ports_name_is_valid(&m.broker))
            return bad(why, "isolated INVITE naming a broker");
        if (m.num_attachments > CMOJO_MAX_INVITATION_ATTACHMENTS)
            return bad(why, "INVITE with too many attachments");
        m.attachments = buf + NODE_INVITE_FIXED_SIZE;
        m.attachments_size = len - NODE_INVITE_FIXED_SIZE;
        if (!attachments_ok(m.attachments, m.attachments_size, m.num_attachments))
            return bad(why, "INVITE with a malformed attachment list");
        break;
    case NODE_MSG_ACCEPT:
    case NODE_MSG_REQUEST_INTRO:
    case NODE_MSG_NODE_LOST:
    case NODE_MSG_PEER_CUT:
        if (len != NODE_NAME_WIRE_SIZE)
            return bad(why, "node message of the wrong size");
        if (!load_valid_name(buf, &m.name))
            return bad(why, "node message naming no node");
        break;
    case NODE_MSG_MERGE_PORT:
        if (len < NODE_MERGE_PORT_FIXED_SIZE)
            return bad(why, "MERGE_PORT too short");
        if (!load_valid_name(buf, &m.name))
            return bad(why, "MERGE_PORT naming no port");
        m.text.len = wire_load_u32(buf + 16);
        if (wire_load_u32(buf + 20))
            return bad(why, "MERGE_PORT reserved field set");
        if (m.text.len == 0 || m.text.len > CMOJO_MAX_INVITATION_NAME ||
            len - NODE_MERGE_PORT_FIXED_SIZE != m.text.len)
            return bad(why, "MERGE_PORT name of the wrong size");
        m.text.bytes = buf + NODE_MERGE_PORT_FIXED_SIZE;
        break;
    case NODE_MSG_INTRODUCE:
        if (len != NODE_INTRODUCE_SIZE)
            return bad(why, "INTRODUCE of the wrong size");
        if (!load_valid_name(buf, &m.name))
            return bad(why, "INTRODUCE naming no node");
        m.ok = wire_load_u32(buf + 16);
        if (m.ok > 1 || wire_load_u32(buf + 20))
            return bad(why, "INTRODUCE with bad fields");
        fds_allowed = m.ok;
        if (num_fds != fds_allowed)
            return bad(why, "INTRODUCE with the wrong number of fds");
        break;
    case NODE_MSG_BAD_MESSAGE:
        if (len < NODE_BAD_MESSAGE_FIXED_SIZE)
            return bad(why, "BAD_MESSAGE too short");
        if (!load_valid_name(buf, &m.name))
            return bad(why, "BAD_MESSAGE naming no node");
        m.text.len = wire_load_u32(buf + 16);
        if (wire_load_u32(buf + 20) || m.text.len > CMOJO_MAX_ERROR_MESSAGE ||
            len - NODE_BAD_MESSAGE_FIXED_SIZE != m.text.len)
            return bad(why, "BAD_MESSAGE reason of the wrong size");
        m.text.bytes = buf + NODE_BAD_MESSAGE_FIXED_SIZE;
        break;
    default:
        return bad(why, "unknown node message type");
    }
    if (num_fds != fds_allowed)
        return bad(why, "node message carrying fds");
    *out = m;
    return 0;
}

bool node_wire_next_name(const node_wire_msg *msg, size_t *pos, node_wire_name *out)
{
    if (*pos >= msg->attachments_size)
        return false;
    const uint8_t *p = msg->attachments + *pos;
    out->len = wire_load_u32(p);
    out->bytes = p + 8;
    *pos += 8 + (size_t)wire_align8(out->len);
    return true;
}

size_t node_wire_invite_size(const node_wire_name *names, uint32_t n)
{
    size_t size = NODE_INVITE_FIXED_SIZE;
    for (uint32_t i = 0; i < n; i++)
        size += 8 + (size_t)wire_align8(names[i].len);
    return size;
}

size_t node_wire_write_invite(uint8_t *buf, const ports_name *inviter, const ports_name *broker,
                              uint32_t flags, const node_wire_name *names, uint32_t n)
{
    wire_store_name(buf, inviter);
    wire_store_name(buf + 16, broker);
    wire_store_u32(buf + 32, flags);
    wire_store_u32(buf + 36, n);
    size_t pos = NODE_INVITE_FIXED_SIZE;
    for (uint32_t i = 0; i < n; i++) {
        size_t padded = (size_t)wire_align8(names[i].len);
        wire_store_u32(buf + pos, names[i].len);
        wire_store_u32(buf + pos + 4, 0);
        memcpy(buf + pos + 8, names[i].bytes, names[i].len);
        memset(buf + pos + 8 + names[i].len, 0, padded - names[i].len);
        pos += 8 + padded;
    }
    return pos;
}

size_t node_wire_write_name(uint8_t *buf, const ports_name *name)
{
    wire_store_name(buf, name);
    return NODE_NAME_WIRE_SIZE;
}

size_t node_wire_write_merge_port(uint8_t *buf, const ports_name *port, const void *name,
                                  uint32_t name_len)
{
    wire_store_name(buf, port);
    wire_store_u32(buf + 16, name_len);
    wire_store_u32(buf + 20, 0);
    memcpy(buf + NODE_MERGE_PORT_FIXED_SIZE, name, name_len);
    return NODE_MERGE_PORT_FIXED_SIZE + name_len;
}

size_t node_wire_write_introduce(uint8_t *buf, const ports_name *name, bool ok)
{
    wire_store_name(buf, name);
    wire_store_u32(buf + 16, ok ? 1 : 0);
    wire_store_u32(buf + 20, 0);
    return NODE_INTRODUCE_SIZE;
}

size_t node_wire_write_bad_message(uint8_t *buf, const ports_name *name, const char *reason,
                                   uint32_t len)
{
    wire_store_name(buf, name);
    wire_store_u32(buf + 16, len);
    wire_store_u32(buf + 20, 0);
    if (len)
        memcpy(buf + NODE_BAD_MESSAGE_FIXED_SIZE, reason, len);
    return NODE_BAD_MESSAGE_FIXED_SIZE + len;
}
