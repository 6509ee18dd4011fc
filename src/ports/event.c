/*
 * Ports events: construction, and the codec between events and their wire
 * form. ports_event_parse is the untrusted boundary of the ports layer: its
 * input comes straight from another process.
 *
 * Parsing rules, so that a reviewer can check them in one place:
 *  - every length is compared with the bytes really present before anything
 *    at that offset is read, as "remaining >= needed" after a subtraction that
 *    cannot wrap, with products done in 64 bits;
 *  - integers are assembled byte by byte (little-endian), never loaded through
 *    a cast pointer, so alignment and host byte order do not matter;
 *  - only canonical encodings are accepted (reserved bytes zero, booleans 0/1,
 *    fixed-size events exactly their size), so parse followed by serialize
 *    reproduces the input byte for byte — the fuzzer checks exactly that;
 *  - sequenced events carry a control sequence number; unsequenced ones carry
 *    none and name no sender; a user message has a sequence number and its
 *    ports are real, distinct names, none of them the port it is sent to;
 *  - nothing is allocated until the sizes it depends on have been validated.
 */
#include "ports/event.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "cmojo_limits.h"
#include "cmojo_wire.h"
#include "platform/mem.h"

#define NAME_WIRE_SIZE 16u
/* What one attached port costs on the wire: its descriptor plus its name. */
#define USER_PORT_WIRE_SIZE (PORTS_DESCRIPTOR_SIZE + NAME_WIRE_SIZE)

/* Header field offsets. */
#define OFF_TYPE 0u
#define OFF_RESERVED 4u
#define OFF_PORT_NAME 8u
#define OFF_FROM_PORT 24u
#define OFF_CONTROL_SEQ 40u

/* Descriptor field offsets. */
#define DESC_OFF_PEER_NODE 0u
#define DESC_OFF_PEER_PORT 16u
#define DESC_OFF_REFERRING_NODE 32u
#define DESC_OFF_REFERRING_PORT 48u
#define DESC_OFF_NEXT_SEND 64u
#define DESC_OFF_NEXT_RECEIVE 72u
#define DESC_OFF_LAST_RECEIVE 80u
#define DESC_OFF_PEER_CLOSED 88u
#define DESC_OFF_RESERVED 89u

/* Body size of each type; for a user message only its fixed part. */
static const uint32_t body_size[PORTS_EVENT_TYPE_COUNT] = {
    [PORTS_EVENT_USER_MESSAGE] = PORTS_USER_MESSAGE_FIXED_SIZE,
    [PORTS_EVENT_PORT_ACCEPTED] = 0,
    [PORTS_EVENT_OBSERVE_PROXY] = 4 * NAME_WIRE_SIZE,
    [PORTS_EVENT_OBSERVE_PROXY_ACK] = 8,
    [PORTS_EVENT_OBSERVE_CLOSURE] = 8,
    [PORTS_EVENT_MERGE_PORT] = NAME_WIRE_SIZE + PORTS_DESCRIPTOR_SIZE,
    [PORTS_EVENT_USER_MESSAGE_READ_ACK_REQUEST] = 8,
    [PORTS_EVENT_USER_MESSAGE_READ_ACK] = 8,
    [PORTS_EVENT_UPDATE_PREVIOUS_PEER] = 2 * NAME_WIRE_SIZE,
};

static const char *const type_names[PORTS_EVENT_TYPE_COUNT] = {
    [PORTS_EVENT_USER_MESSAGE] = "UserMessage",
    [PORTS_EVENT_PORT_ACCEPTED] = "PortAccepted",
    [PORTS_EVENT_OBSERVE_PROXY] = "ObserveProxy",
    [PORTS_EVENT_OBSERVE_PROXY_ACK] = "ObserveProxyAck",
    [PORTS_EVENT_OBSERVE_CLOSURE] = "ObserveClosure",
    [PORTS_EVENT_MERGE_PORT] = "MergePort",
    [PORTS_EVENT_USER_MESSAGE_READ_ACK_REQUEST] = "UserMessageReadAckRequest",
    [PORTS_EVENT_USER_MESSAGE_READ_ACK] = "UserMessageReadAck",
    [PORTS_EVENT_UPDATE_PREVIOUS_PEER] = "UpdatePreviousPeer",
};

/* The wire size arithmetic below relies on these; the header spells them out. */
_Static_assert(PORTS_EVENT_HEADER_SIZE == OFF_CONTROL_SEQ + 8, "header layout");
_Static_assert(PORTS_DESCRIPTOR_SIZE == DESC_OFF_RESERVED + 7, "descriptor layout");
/* The inline arrays of a user message follow the event struct without padding. */
_Static_assert(sizeof(ports_event) % _Alignof(ports_port_descriptor) == 0, "inline arrays");
_Static_assert(sizeof(ports_port_descriptor) % _Alignof(ports_name) == 0, "inline arrays");
/*
 * The most ports a message may carry must fit in one event, and no size below
 * the event limit can overflow size_t when offsets are added to it.
 */
_Static_assert(CMOJO_MAX_EVENT_SIZE / USER_PORT_WIRE_SIZE > CMOJO_MAX_PORTS_PER_MESSAGE,
               "a message with the most ports fits the event limit");
_Static_assert((uint64_t)CMOJO_MAX_EVENT_SIZE <= (uint64_t)SIZE_MAX / 2, "event limit fits size_t");

/* ---- payloads ---- */

typedef struct bytes_payload {
    ports_payload base; /* first, so the two pointers convert */
    uint8_t data[];
} bytes_payload;

static void bytes_payload_destroy(ports_payload *payload);

static const ports_payload_ops bytes_payload_ops = {
    .destroy = bytes_payload_destroy,
    .will_be_routed_externally = NULL,
};

/*
 * Every empty bytes payload is this one object, never freed. Each user
 * message from another process parses to one (the node layer hands the
 * parser the event without its envelope), and it needs no memory of its
 * own: nothing writes to a payload once it is made.
 */
static bytes_payload empty_payload = {.base = {.ops = &bytes_payload_ops, .size = 0}};

static void bytes_payload_destroy(ports_payload *payload)
{
    if (payload != &empty_payload.base)
        free(payload);
}

ports_payload *ports_payload_bytes_new(const void *data, size_t len)
{
    if (len == 0)
        return &empty_payload.base;
    if (len > SIZE_MAX - sizeof(bytes_payload))
        return NULL;
    bytes_payload *bp = malloc(sizeof(*bp) + len);
    if (bp == NULL)
        return NULL;
    bp->base.ops = &bytes_payload_ops;
    bp->base.size = len;
    memcpy(bp->data, data, len);
    return (ports_payload *)bp;
}

bool ports_payload_is_bytes(const ports_payload *payload)
{
    return payload != NULL && payload->ops == &bytes_payload_ops;
}

const uint8_t *ports_payload_bytes_data(const ports_payload *payload)
{
    if (!ports_payload_is_bytes(payload))
        return NULL;
    return ((const bytes_payload *)payload)->data;
}

void ports_payload_destroy(ports_payload *payload)
{
    if (payload != NULL)
        payload->ops->destroy(payload);
}

/* ---- events ---- */

ports_event *ports_event_new(ports_event_type type, const ports_name *port_name)
{
    if ((unsigned)type >= PORTS_EVENT_TYPE_COUNT)
        return NULL;
    ports_event *ev = plat_zalloc(sizeof(*ev));
    if (ev == NULL)
        return NULL;
    ev->type = type;
    if (port_name != NULL)
        ev->port_name = *port_name;
    ev->control_sequence_num = PORTS_INVALID_SEQUENCE_NUM;
    return ev;
}

ports_event *ports_user_message_new(uint32_t num_ports, ports_payload *payload)
{
    if (num_ports > CMOJO_MAX_PORTS_PER_MESSAGE) {
        ports_payload_destroy(payload);
        return NULL;
    }
    /* Bounded by the limit above: cannot overflow. */
    size_t arrays = (size_t)num_ports * (sizeof(ports_port_descriptor) + sizeof(ports_name));
    ports_event *ev = plat_zalloc(sizeof(*ev) + arrays);
    if (ev == NULL) {
        ports_payload_destroy(payload);
        return NULL;
    }
    ev->type = PORTS_EVENT_USER_MESSAGE;
    ev->control_sequence_num = PORTS_INVALID_SEQUENCE_NUM;
    ev->u.user.num_ports = num_ports;
    ev->u.user.payload = payload;
    if (num_ports > 0) {
        ev->u.user.descriptors = (ports_port_descriptor *)(ev + 1);
        ev->u.user.ports = (ports_name *)(ev->u.user.descriptors + num_ports);
    }
    return ev;
}

ports_event *ports_user_message_init(ports_event *storage, ports_payload *payload)
{
    memset(storage, 0, sizeof(*storage));
    storage->type = PORTS_EVENT_USER_MESSAGE;
    storage->control_sequence_num = PORTS_INVALID_SEQUENCE_NUM;
    storage->u.user.payload = payload;
    storage->in_payload_ = true;
    return storage;
}

void ports_event_destroy(ports_event *ev)
{
    if (ev == NULL)
        return;
    /* Read first: destroying the payload may free the memory of an event inside it. */
    bool ours = !ev->in_payload_;
    if (ev->type == PORTS_EVENT_USER_MESSAGE)
        ports_payload_destroy(ev->u.user.payload);
    if (ours)
        free(ev);
}

static bool type_is_sequenced(uint32_t type, const ports_name *port_name)
{
    switch (type) {
    case PORTS_EVENT_PORT_ACCEPTED:
    case PORTS_EVENT_MERGE_PORT:
        return false;
    case PORTS_EVENT_OBSERVE_PROXY:
        /* Addressed to no port: the broadcast a dying proxy sends to every node. */
        return ports_name_is_valid(port_name);
    default:
        return true;
    }
}

bool ports_event_is_sequenced(const ports_event *ev)
{
    return type_is_sequenced(ev->type, &ev->port_name);
}

const char *ports_event_type_name(ports_event_type type)
{
    if ((unsigned)type >= PORTS_EVENT_TYPE_COUNT)
        return "Unknown";
    return type_names[type];
}

/* ---- serialisation ---- */

size_t ports_event_serialized_size(const ports_event *ev)
{
    assert((unsigned)ev->type < PORTS_EVENT_TYPE_COUNT);
    size_t size = PORTS_EVENT_HEADER_SIZE + body_size[ev->type];
    if (ev->type == PORTS_EVENT_USER_MESSAGE) {
        assert(ev->u.user.num_ports <= CMOJO_MAX_PORTS_PER_MESSAGE);
        size += (size_t)ev->u.user.num_ports * USER_PORT_WIRE_SIZE;
    }
    return size;
}

static void store_descriptor(uint8_t *p, const ports_port_descriptor *d)
{
    wire_store_name(p + DESC_OFF_PEER_NODE, &d->peer_node);
    wire_store_name(p + DESC_OFF_PEER_PORT, &d->peer_port);
    wire_store_name(p + DESC_OFF_REFERRING_NODE, &d->referring_node);
    wire_store_name(p + DESC_OFF_REFERRING_PORT, &d->referring_port);
    wire_store_u64(p + DESC_OFF_NEXT_SEND, d->next_sequence_num_to_send);
    wire_store_u64(p + DESC_OFF_NEXT_RECEIVE, d->next_sequence_num_to_receive);
    wire_store_u64(p + DESC_OFF_LAST_RECEIVE, d->last_sequence_num_to_receive);
    p[DESC_OFF_PEER_CLOSED] = d->peer_closed ? 1 : 0;
    memset(p + DESC_OFF_RESERVED, 0, PORTS_DESCRIPTOR_SIZE - DESC_OFF_RESERVED);
}

void ports_event_serialize(const ports_event *ev, uint8_t *buf)
{
    assert((unsigned)ev->type < PORTS_EVENT_TYPE_COUNT);
    wire_store_u32(buf + OFF_TYPE, (uint32_t)ev->type);
    wire_store_u32(buf + OFF_RESERVED, 0);
    wire_store_name(buf + OFF_PORT_NAME, &ev->port_name);
    wire_store_name(buf + OFF_FROM_PORT, &ev->from_port);
    wire_store_u64(buf + OFF_CONTROL_SEQ, ev->control_sequence_num);

    uint8_t *b = buf + PORTS_EVENT_HEADER_SIZE;
    switch (ev->type) {
    case PORTS_EVENT_USER_MESSAGE: {
        uint32_t n = ev->u.user.num_ports;
        assert(n <= CMOJO_MAX_PORTS_PER_MESSAGE);
        wire_store_u64(b, ev->u.user.sequence_num);
        wire_store_u32(b + 8, n);
        wire_store_u32(b + 12, 0);
        uint8_t *descs = b + PORTS_USER_MESSAGE_FIXED_SIZE;
        uint8_t *names = descs + (size_t)n * PORTS_DESCRIPTOR_SIZE;
        for (uint32_t i = 0; i < n; i++) {
            store_descriptor(descs + (size_t)i * PORTS_DESCRIPTOR_SIZE, &ev->u.user.descriptors[i]);
            wire_store_name(names + (size_t)i * NAME_WIRE_SIZE, &ev->u.user.ports[i]);
        }
        break;
    }
    case PORTS_EVENT_PORT_ACCEPTED:
        break;
    case PORTS_EVENT_OBSERVE_PROXY:
        wire_store_name(b, &ev->u.observe_proxy.proxy_node);
        wire_store_name(b + 16, &ev->u.observe_proxy.proxy_port);
        wire_store_name(b + 32, &ev->u.observe_proxy.proxy_target_node);
        wire_store_name(b + 48, &ev->u.observe_proxy.proxy_target_port);
        break;
    case PORTS_EVENT_OBSERVE_PROXY_ACK:
        wire_store_u64(b, ev->u.observe_proxy_ack.last_sequence_num);
        break;
    case PORTS_EVENT_OBSERVE_CLOSURE:
        wire_store_u64(b, ev->u.observe_closure.last_sequence_num);
        break;
    case PORTS_EVENT_MERGE_PORT:
        wire_store_name(b, &ev->u.merge_port.new_port_name);
        store_descriptor(b + NAME_WIRE_SIZE, &ev->u.merge_port.descriptor);
        break;
    case PORTS_EVENT_USER_MESSAGE_READ_ACK_REQUEST:
        wire_store_u64(b, ev->u.read_ack_request.sequence_num_to_acknowledge);
        break;
    case PORTS_EVENT_USER_MESSAGE_READ_ACK:
        wire_store_u64(b, ev->u.read_ack.sequence_num_acknowledged);
        break;
    case PORTS_EVENT_UPDATE_PREVIOUS_PEER:
        wire_store_name(b, &ev->u.update_previous_peer.new_node);
        wire_store_name(b + 16, &ev->u.update_previous_peer.new_port);
        break;
    }
}

/* ---- parsing ---- */

/* The caller has checked that PORTS_DESCRIPTOR_SIZE bytes are present at p. */
static bool descriptor_is_canonical(const uint8_t *p)
{
    if (p[DESC_OFF_PEER_CLOSED] > 1)
        return false;
    for (unsigned i = DESC_OFF_RESERVED; i < PORTS_DESCRIPTOR_SIZE; i++) {
        if (p[i] != 0)
            return false;
    }
    return true;
}

static void load_descriptor(const uint8_t *p, ports_port_descriptor *d)
{
    d->peer_node = wire_load_name(p + DESC_OFF_PEER_NODE);
    d->peer_port = wire_load_name(p + DESC_OFF_PEER_PORT);
    d->referring_node = wire_load_name(p + DESC_OFF_REFERRING_NODE);
    d->referring_port = wire_load_name(p + DESC_OFF_REFERRING_PORT);
    d->next_sequence_num_to_send = wire_load_u64(p + DESC_OFF_NEXT_SEND);
    d->next_sequence_num_to_receive = wire_load_u64(p + DESC_OFF_NEXT_RECEIVE);
    d->last_sequence_num_to_receive = wire_load_u64(p + DESC_OFF_LAST_RECEIVE);
    d->peer_closed = p[DESC_OFF_PEER_CLOSED] != 0;
}

static int name_qsort_cmp(const void *a, const void *b)
{
    return ports_name_cmp(a, b);
}

/*
 * A message that carries the same port twice would make the receiving node
 * create two ports under one name. Sorting a copy keeps the check O(n log n)
 * and leaves the event's order, which is the wire order, alone.
 */
static int check_names_distinct(const ports_name *names, uint32_t n)
{
    if (n < 2)
        return PORTS_OK;
    ports_name *sorted = malloc((size_t)n * sizeof(*sorted));
    if (sorted == NULL)
        return PORTS_ERROR_NO_MEMORY;
    memcpy(sorted, names, (size_t)n * sizeof(*sorted));
    qsort(sorted, n, sizeof(*sorted), name_qsort_cmp);
    int rc = PORTS_OK;
    for (uint32_t i = 1; i < n; i++) {
        if (ports_name_eq(&sorted[i - 1], &sorted[i])) {
            rc = PORTS_ERROR_MALFORMED;
            break;
        }
    }
    free(sorted);
    return rc;
}

typedef struct parsed_header {
    uint32_t type;
    ports_name port_name;
    ports_name from_port;
    uint64_t control_sequence_num;
} parsed_header;

static void apply_header(ports_event *ev, const parsed_header *h)
{
    ev->port_name = h->port_name;
    ev->from_port = h->from_port;
    ev->control_sequence_num = h->control_sequence_num;
}

static int parse_user_message(const parsed_header *h, const uint8_t *body, size_t body_len,
                              ports_event *storage, ports_event **out)
{
    if (body_len < PORTS_USER_MESSAGE_FIXED_SIZE)
        return PORTS_ERROR_MALFORMED;
    uint64_t sequence_num = wire_load_u64(body);
    uint32_t num_ports = wire_load_u32(body + 8);
    if (wire_load_u32(body + 12) != 0)
        return PORTS_ERROR_MALFORMED;
    /* 0 means "not yet assigned": a message on the wire always has one. */
    if (sequence_num == 0)
        return PORTS_ERROR_MALFORMED;
    if (num_ports > CMOJO_MAX_PORTS_PER_MESSAGE)
        return PORTS_ERROR_MALFORMED;

    size_t remaining = body_len - PORTS_USER_MESSAGE_FIXED_SIZE;
    /* 64-bit product: no overflow even before the limit check above. */
    uint64_t ports_len = (uint64_t)num_ports * USER_PORT_WIRE_SIZE;
    if ((uint64_t)remaining < ports_len)
        return PORTS_ERROR_MALFORMED;

    const uint8_t *descs = body + PORTS_USER_MESSAGE_FIXED_SIZE;
    const uint8_t *names = descs + (size_t)num_ports * PORTS_DESCRIPTOR_SIZE;
    const uint8_t *payload_bytes = descs + (size_t)ports_len;
    size_t payload_len = remaining - (size_t)ports_len;

    /* Everything checkable without memory, before allocating any. */
    for (uint32_t i = 0; i < num_ports; i++) {
        if (!descriptor_is_canonical(descs + (size_t)i * PORTS_DESCRIPTOR_SIZE))
            return PORTS_ERROR_MALFORMED;
        /* A carried port has a real name and is not the port it is sent to. */
        ports_name name = wire_load_name(names + (size_t)i * NAME_WIRE_SIZE);
        if (!ports_name_is_valid(&name) || ports_name_eq(&name, &h->port_name))
            return PORTS_ERROR_MALFORMED;
    }

    ports_event *ev = storage && num_ports == 0 ? ports_user_message_init(storage, NULL)
                                                : ports_user_message_new(num_ports, NULL);
    if (ev == NULL)
        return PORTS_ERROR_NO_MEMORY;
    apply_header(ev, h);
    ev->u.user.sequence_num = sequence_num;
    for (uint32_t i = 0; i < num_ports; i++) {
        load_descriptor(descs + (size_t)i * PORTS_DESCRIPTOR_SIZE, &ev->u.user.descriptors[i]);
        ev->u.user.ports[i] = wire_load_name(names + (size_t)i * NAME_WIRE_SIZE);
    }
    int rc = check_names_distinct(ev->u.user.ports, num_ports);
    if (rc != PORTS_OK)
        goto fail;
    /* Last, so that a rejected message never costs a copy of its payload. */
    ev->u.user.payload = ports_payload_bytes_new(payload_bytes, payload_len);
    if (ev->u.user.payload == NULL) {
        rc = PORTS_ERROR_NO_MEMORY;
        goto fail;
    }
    *out = ev;
    return PORTS_OK;

fail:
    ports_event_destroy(ev);
    return rc;
}

int ports_event_parse(const void *buf, size_t len, ports_event **out)
{
    return ports_event_parse_into(buf, len, NULL, out);
}

int ports_event_parse_into(const void *buf, size_t len, ports_event *storage, ports_event **out)
{
    const uint8_t *p = buf;
    if (len < PORTS_EVENT_HEADER_SIZE || len > CMOJO_MAX_EVENT_SIZE)
        return PORTS_ERROR_MALFORMED;

    parsed_header h;
    h.type = wire_load_u32(p + OFF_TYPE);
    if (h.type >= PORTS_EVENT_TYPE_COUNT)
        return PORTS_ERROR_MALFORMED;
    if (wire_load_u32(p + OFF_RESERVED) != 0)
        return PORTS_ERROR_MALFORMED;
    h.port_name = wire_load_name(p + OFF_PORT_NAME);
    h.from_port = wire_load_name(p + OFF_FROM_PORT);
    h.control_sequence_num = wire_load_u64(p + OFF_CONTROL_SEQ);

    /*
     * A sequenced event must name its sending port and carry a real control
     * sequence number; one that is not sequenced has neither, as the sender
     * writes it.
     */
    if (type_is_sequenced(h.type, &h.port_name)) {
        if (h.control_sequence_num == PORTS_INVALID_SEQUENCE_NUM ||
            !ports_name_is_valid(&h.from_port))
            return PORTS_ERROR_MALFORMED;
    } else {
        if (h.control_sequence_num != PORTS_INVALID_SEQUENCE_NUM ||
            ports_name_is_valid(&h.from_port))
            return PORTS_ERROR_MALFORMED;
    }

    const uint8_t *b = p + PORTS_EVENT_HEADER_SIZE;
    size_t body_len = len - PORTS_EVENT_HEADER_SIZE;
    if (h.type == PORTS_EVENT_USER_MESSAGE)
        return parse_user_message(&h, b, body_len, storage, out);

    /* Fixed-size events: trailing bytes would be silently dropped, so refuse them. */
    if (body_len != body_size[h.type])
        return PORTS_ERROR_MALFORMED;
    if (h.type == PORTS_EVENT_MERGE_PORT && !descriptor_is_canonical(b + NAME_WIRE_SIZE))
        return PORTS_ERROR_MALFORMED;

    ports_event *ev = ports_event_new((ports_event_type)h.type, NULL);
    if (ev == NULL)
        return PORTS_ERROR_NO_MEMORY;
    apply_header(ev, &h);
    switch (ev->type) {
    case PORTS_EVENT_PORT_ACCEPTED:
        break;
    case PORTS_EVENT_OBSERVE_PROXY:
        ev->u.observe_proxy.proxy_node = wire_load_name(b);
        ev->u.observe_proxy.proxy_port = wire_load_name(b + 16);
        ev->u.observe_proxy.proxy_target_node = wire_load_name(b + 32);
        ev->u.observe_proxy.proxy_target_port = wire_load_name(b + 48);
        break;
    case PORTS_EVENT_OBSERVE_PROXY_ACK:
        ev->u.observe_proxy_ack.last_sequence_num = wire_load_u64(b);
        break;
    case PORTS_EVENT_OBSERVE_CLOSURE:
        ev->u.observe_closure.last_sequence_num = wire_load_u64(b);
        break;
    case PORTS_EVENT_MERGE_PORT:
        ev->u.merge_port.new_port_name = wire_load_name(b);
        load_descriptor(b + NAME_WIRE_SIZE, &ev->u.merge_port.descriptor);
        break;
    case PORTS_EVENT_USER_MESSAGE_READ_ACK_REQUEST:
        ev->u.read_ack_request.sequence_num_to_acknowledge = wire_load_u64(b);
        break;
    case PORTS_EVENT_USER_MESSAGE_READ_ACK:
        ev->u.read_ack.sequence_num_acknowledged = wire_load_u64(b);
        break;
    case PORTS_EVENT_UPDATE_PREVIOUS_PEER:
        ev->u.update_previous_peer.new_node = wire_load_name(b);
        ev->u.update_previous_peer.new_port = wire_load_name(b + 16);
        break;
    case PORTS_EVENT_USER_MESSAGE:
        assert(0 && "handled above");
        break;
    }
    *out = ev;
    return PORTS_OK;
}
