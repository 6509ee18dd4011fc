/*
 * The ports event codec: round trips, the exact wire layout, and every way
 * the parser must refuse hostile bytes (without touching *out).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cmojo_limits.h"
#include "ports/common.h"
#include "ports/event.h"

/* ---- helpers ---- */

/* Every byte of a test name differs, so a swapped or truncated field shows. */
static ports_name name_for(uint32_t k)
{
    ports_name n = {0xa1a2a3a4a5000000ull | k, 0xb1b2b3b4b5000000ull | k};
    return n;
}

static void fill_descriptor(ports_port_descriptor *d, uint32_t k)
{
    d->peer_node = name_for(0x10000 + k);
    d->peer_port = name_for(0x20000 + k);
    d->referring_node = name_for(0x30000 + k);
    d->referring_port = name_for(0x40000 + k);
    d->next_sequence_num_to_send = 0x0101010101010101ull * (k % 200 + 1);
    d->next_sequence_num_to_receive = 0x1000000000000000ull + k;
    d->last_sequence_num_to_receive = 0xfedcba9876543210ull - k;
    d->peer_closed = (k % 2) == 1;
}

/* A user message carrying num_ports ports and a copy of payload. */
static ports_event *make_user(uint32_t num_ports, const void *payload, size_t payload_len)
{
    ports_payload *p = ports_payload_bytes_new(payload, payload_len);
    assert_non_null(p);
    ports_event *ev = ports_user_message_new(num_ports, p);
    assert_non_null(ev);
    ev->port_name = name_for(1);
    ev->from_port = name_for(2);
    ev->control_sequence_num = 0x8877665544332211ull;
    ev->u.user.sequence_num = 0x0123456789abcdefull;
    for (uint32_t i = 0; i < num_ports; i++) {
        ev->u.user.ports[i] = name_for(100 + i);
        fill_descriptor(&ev->u.user.descriptors[i], i);
    }
    return ev;
}

/* A valid event of the given type with non-trivial values in every field. */
static ports_event *make_event(ports_event_type type)
{
    if (type == PORTS_EVENT_USER_MESSAGE)
        return make_user(3, "hello", 5);
    ports_name port = name_for(1);
    ports_event *ev = ports_event_new(type, &port);
    assert_non_null(ev);
    if (ports_event_is_sequenced(ev)) {
        ev->from_port = name_for(2);
        ev->control_sequence_num = 0x8877665544332211ull;
    }
    switch (type) {
    case PORTS_EVENT_OBSERVE_PROXY:
        ev->u.observe_proxy.proxy_node = name_for(3);
        ev->u.observe_proxy.proxy_port = name_for(4);
        ev->u.observe_proxy.proxy_target_node = name_for(5);
        ev->u.observe_proxy.proxy_target_port = name_for(6);
        break;
    case PORTS_EVENT_OBSERVE_PROXY_ACK:
        ev->u.observe_proxy_ack.last_sequence_num = 0x1111222233334444ull;
        break;
    case PORTS_EVENT_OBSERVE_CLOSURE:
        ev->u.observe_closure.last_sequence_num = 0x5555666677778888ull;
        break;
    case PORTS_EVENT_MERGE_PORT:
        ev->u.merge_port.new_port_name = name_for(7);
        fill_descriptor(&ev->u.merge_port.descriptor, 1);
        break;
    case PORTS_EVENT_USER_MESSAGE_READ_ACK_REQUEST:
        ev->u.read_ack_request.sequence_num_to_acknowledge = 0x99990000aaaabbbbull;
        break;
    case PORTS_EVENT_USER_MESSAGE_READ_ACK:
        ev->u.read_ack.sequence_num_acknowledged = 0xccccddddeeeeffffull;
        break;
    case PORTS_EVENT_UPDATE_PREVIOUS_PEER:
        ev->u.update_previous_peer.new_node = name_for(8);
        ev->u.update_previous_peer.new_port = name_for(9);
        break;
    default:
        break;
    }
    return ev;
}

/* Serialises ev and appends its payload bytes, as the embedder would. */
static uint8_t *encode(const ports_event *ev, size_t *len_out)
{
    size_t size = ports_event_serialized_size(ev);
    size_t payload_len = 0;
    const ports_payload *p = NULL;
    if (ev->type == PORTS_EVENT_USER_MESSAGE && ev->u.user.payload != NULL) {
        p = ev->u.user.payload;
        assert_true(ports_payload_is_bytes(p));
        payload_len = p->size;
    }
    uint8_t *buf = malloc(size + payload_len + 1);
    assert_non_null(buf);
    ports_event_serialize(ev, buf);
    if (payload_len > 0)
        memcpy(buf + size, ports_payload_bytes_data(p), payload_len);
    *len_out = size + payload_len;
    return buf;
}

static uint8_t *encode_type(ports_event_type type, size_t *len_out)
{
    ports_event *ev = make_event(type);
    uint8_t *buf = encode(ev, len_out);
    ports_event_destroy(ev);
    return buf;
}

static void assert_name_eq(const ports_name *a, const ports_name *b)
{
    assert_int_equal(a->v1, b->v1);
    assert_int_equal(a->v2, b->v2);
}

static void assert_descriptor_eq(const ports_port_descriptor *a, const ports_port_descriptor *b)
{
    assert_name_eq(&a->peer_node, &b->peer_node);
    assert_name_eq(&a->peer_port, &b->peer_port);
    assert_name_eq(&a->referring_node, &b->referring_node);
    assert_name_eq(&a->referring_port, &b->referring_port);
    assert_int_equal(a->next_sequence_num_to_send, b->next_sequence_num_to_send);
    assert_int_equal(a->next_sequence_num_to_receive, b->next_sequence_num_to_receive);
    assert_int_equal(a->last_sequence_num_to_receive, b->last_sequence_num_to_receive);
    assert_int_equal(a->peer_closed, b->peer_closed);
}

static void assert_events_eq(const ports_event *a, const ports_event *b)
{
    assert_int_equal(a->type, b->type);
    assert_name_eq(&a->port_name, &b->port_name);
    assert_name_eq(&a->from_port, &b->from_port);
    assert_int_equal(a->control_sequence_num, b->control_sequence_num);
    switch (a->type) {
    case PORTS_EVENT_USER_MESSAGE:
        assert_int_equal(a->u.user.sequence_num, b->u.user.sequence_num);
        assert_int_equal(a->u.user.num_ports, b->u.user.num_ports);
        for (uint32_t i = 0; i < a->u.user.num_ports; i++) {
            assert_name_eq(&a->u.user.ports[i], &b->u.user.ports[i]);
            assert_descriptor_eq(&a->u.user.descriptors[i], &b->u.user.descriptors[i]);
        }
        break;
    case PORTS_EVENT_PORT_ACCEPTED:
        break;
    case PORTS_EVENT_OBSERVE_PROXY:
        assert_name_eq(&a->u.observe_proxy.proxy_node, &b->u.observe_proxy.proxy_node);
        assert_name_eq(&a->u.observe_proxy.proxy_port, &b->u.observe_proxy.proxy_port);
        assert_name_eq(&a->u.observe_proxy.proxy_target_node,
                       &b->u.observe_proxy.proxy_target_node);
        assert_name_eq(&a->u.observe_proxy.proxy_target_port,
                       &b->u.observe_proxy.proxy_target_port);
        break;
    case PORTS_EVENT_OBSERVE_PROXY_ACK:
        assert_int_equal(a->u.observe_proxy_ack.last_sequence_num,
                         b->u.observe_proxy_ack.last_sequence_num);
        break;
    case PORTS_EVENT_OBSERVE_CLOSURE:
        assert_int_equal(a->u.observe_closure.last_sequence_num,
                         b->u.observe_closure.last_sequence_num);
        break;
    case PORTS_EVENT_MERGE_PORT:
        assert_name_eq(&a->u.merge_port.new_port_name, &b->u.merge_port.new_port_name);
        assert_descriptor_eq(&a->u.merge_port.descriptor, &b->u.merge_port.descriptor);
        break;
    case PORTS_EVENT_USER_MESSAGE_READ_ACK_REQUEST:
        assert_int_equal(a->u.read_ack_request.sequence_num_to_acknowledge,
                         b->u.read_ack_request.sequence_num_to_acknowledge);
        break;
    case PORTS_EVENT_USER_MESSAGE_READ_ACK:
        assert_int_equal(a->u.read_ack.sequence_num_acknowledged,
                         b->u.read_ack.sequence_num_acknowledged);
        break;
    case PORTS_EVENT_UPDATE_PREVIOUS_PEER:
        assert_name_eq(&a->u.update_previous_peer.new_node, &b->u.update_previous_peer.new_node);
        assert_name_eq(&a->u.update_previous_peer.new_port, &b->u.update_previous_peer.new_port);
        break;
    }
}

/* Parses, expecting rejection, and checks *out was left alone. */
static void expect_malformed(const uint8_t *buf, size_t len)
{
    static ports_event sentinel_storage;
    ports_event *out = &sentinel_storage;
    assert_int_equal(ports_event_parse(buf, len, &out), PORTS_ERROR_MALFORMED);
    assert_ptr_equal(out, &sentinel_storage);
}

static ports_event *expect_ok(const uint8_t *buf, size_t len)
{
    ports_event *out = NULL;
    assert_int_equal(ports_event_parse(buf, len, &out), PORTS_OK);
    assert_non_null(out);
    return out;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static const size_t fixed_sizes[PORTS_EVENT_TYPE_COUNT] = {
    [PORTS_EVENT_USER_MESSAGE] = 64, /* with no ports */
    [PORTS_EVENT_PORT_ACCEPTED] = 48,         [PORTS_EVENT_OBSERVE_PROXY] = 112,
    [PORTS_EVENT_OBSERVE_PROXY_ACK] = 56,     [PORTS_EVENT_OBSERVE_CLOSURE] = 56,
    [PORTS_EVENT_MERGE_PORT] = 160,           [PORTS_EVENT_USER_MESSAGE_READ_ACK_REQUEST] = 56,
    [PORTS_EVENT_USER_MESSAGE_READ_ACK] = 56, [PORTS_EVENT_UPDATE_PREVIOUS_PEER] = 80,
};

/* ---- round trips ---- */

static void round_trip(const ports_event *ev)
{
    size_t len;
    uint8_t *buf = encode(ev, &len);
    ports_event *parsed = expect_ok(buf, len);
    assert_events_eq(ev, parsed);
    size_t len2;
    uint8_t *buf2 = encode(parsed, &len2);
    assert_int_equal(len, len2);
    assert_memory_equal(buf, buf2, len);
    free(buf2);
    ports_event_destroy(parsed);
    free(buf);
}

static void test_round_trip_every_type(void **state)
{
    (void)state;
    for (int t = 0; t < PORTS_EVENT_TYPE_COUNT; t++) {
        ports_event *ev = make_event((ports_event_type)t);
        round_trip(ev);
        ports_event_destroy(ev);
    }
}

static void test_round_trip_user_message_port_counts(void **state)
{
    (void)state;
    static const uint32_t counts[] = {0, 1, 2, 3, 17, CMOJO_MAX_PORTS_PER_MESSAGE};
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        ports_event *ev = make_user(counts[i], NULL, 0);
        round_trip(ev);
        ports_event_destroy(ev);
        ev = make_user(counts[i], "payload bytes", 13);
        round_trip(ev);
        ports_event_destroy(ev);
    }
}

static void test_round_trip_extreme_values(void **state)
{
    (void)state;
    ports_event *ev = make_user(1, NULL, 0);
    ev->port_name = (ports_name){UINT64_MAX, UINT64_MAX};
    ev->from_port = (ports_name){0, 1};
    ev->control_sequence_num = 0;
    ev->u.user.sequence_num = UINT64_MAX;
    ev->u.user.ports[0] = (ports_name){1, 0};
    memset(&ev->u.user.descriptors[0], 0, sizeof(ev->u.user.descriptors[0]));
    ev->u.user.descriptors[0].next_sequence_num_to_send = UINT64_MAX;
    round_trip(ev);
    ports_event_destroy(ev);
}

static void test_round_trip_dead_proxy_broadcast(void **state)
{
    (void)state;
    ports_event *ev = ports_event_new(PORTS_EVENT_OBSERVE_PROXY, NULL);
    assert_non_null(ev);
    assert_false(ports_event_is_sequenced(ev));
    ev->u.observe_proxy.proxy_node = name_for(3);
    ev->u.observe_proxy.proxy_port = name_for(4);
    round_trip(ev);
    ports_event_destroy(ev);
}

static void test_serialized_sizes(void **state)
{
    (void)state;
    for (int t = 0; t < PORTS_EVENT_TYPE_COUNT; t++) {
        ports_event *ev =
            t == PORTS_EVENT_USER_MESSAGE ? make_user(0, NULL, 0) : make_event((ports_event_type)t);
        assert_int_equal(ports_event_serialized_size(ev), fixed_sizes[t]);
        ports_event_destroy(ev);
    }
    /* Payload bytes are not part of the serialised size. */
    ports_event *ev = make_user(3, "0123456789", 10);
    assert_int_equal(ports_event_serialized_size(ev), 64 + 3 * (96 + 16));
    ports_event_destroy(ev);
}

static void test_payload_bytes_preserved(void **state)
{
    (void)state;
    uint8_t payload[1000];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)(i * 7 + 3);
    ports_event *ev = make_user(2, payload, sizeof(payload));
    size_t len;
    uint8_t *buf = encode(ev, &len);
    ports_event *parsed = expect_ok(buf, len);
    const ports_payload *p = parsed->u.user.payload;
    assert_non_null(p);
    assert_true(ports_payload_is_bytes(p));
    assert_int_equal(p->size, sizeof(payload));
    assert_memory_equal(ports_payload_bytes_data(p), payload, sizeof(payload));
    ports_event_destroy(parsed);
    ports_event_destroy(ev);
    free(buf);
}

static void test_empty_payload_parses_to_empty_bytes_payload(void **state)
{
    (void)state;
    ports_event *ev = make_user(1, NULL, 0);
    size_t len;
    uint8_t *buf = encode(ev, &len);
    ports_event *parsed = expect_ok(buf, len);
    assert_true(ports_payload_is_bytes(parsed->u.user.payload));
    assert_int_equal(parsed->u.user.payload->size, 0);
    ports_event_destroy(parsed);
    ports_event_destroy(ev);
    free(buf);
}

/* Loads must not assume alignment: parse from every offset within a word. */
static void test_parse_unaligned_input(void **state)
{
    (void)state;
    ports_event *ev = make_user(3, "abc", 3);
    size_t len;
    uint8_t *buf = encode(ev, &len);
    uint8_t *shifted = malloc(len + 8);
    assert_non_null(shifted);
    for (size_t off = 1; off < 8; off++) {
        memcpy(shifted + off, buf, len);
        ports_event *parsed = expect_ok(shifted + off, len);
        assert_events_eq(ev, parsed);
        ports_event_destroy(parsed);
    }
    free(shifted);
    ports_event_destroy(ev);
    free(buf);
}

/* ---- wire layout ---- */

static void test_header_byte_layout(void **state)
{
    (void)state;
    ports_event *ev = ports_event_new(PORTS_EVENT_USER_MESSAGE_READ_ACK, NULL);
    assert_non_null(ev);
    ev->port_name = (ports_name){0x0102030405060708ull, 0x1112131415161718ull};
    ev->from_port = (ports_name){0x2122232425262728ull, 0x3132333435363738ull};
    ev->control_sequence_num = 0x4142434445464748ull;
    ev->u.read_ack.sequence_num_acknowledged = 0x5152535455565758ull;
    uint8_t buf[56];
    memset(buf, 0xee, sizeof(buf));
    assert_int_equal(ports_event_serialized_size(ev), sizeof(buf));
    ports_event_serialize(ev, buf);

    static const uint8_t expected[56] = {
        0x07, 0x00, 0x00, 0x00,                         /* type */
        0x00, 0x00, 0x00, 0x00,                         /* reserved */
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, /* port_name.v1 */
        0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11, /* port_name.v2 */
        0x28, 0x27, 0x26, 0x25, 0x24, 0x23, 0x22, 0x21, /* from_port.v1 */
        0x38, 0x37, 0x36, 0x35, 0x34, 0x33, 0x32, 0x31, /* from_port.v2 */
        0x48, 0x47, 0x46, 0x45, 0x44, 0x43, 0x42, 0x41, /* control_sequence_num */
        0x58, 0x57, 0x56, 0x55, 0x54, 0x53, 0x52, 0x51, /* sequence_num_acknowledged */
    };
    assert_memory_equal(buf, expected, sizeof(expected));
    ports_event_destroy(ev);
}

static void test_type_codes_on_wire(void **state)
{
    (void)state;
    for (uint32_t t = 0; t < PORTS_EVENT_TYPE_COUNT; t++) {
        size_t len;
        uint8_t *buf = encode_type((ports_event_type)t, &len);
        assert_int_equal(buf[0], t);
        assert_int_equal(buf[1] | buf[2] | buf[3], 0);
        free(buf);
    }
}

static void test_user_message_byte_layout(void **state)
{
    (void)state;
    ports_event *ev = make_user(2, "\x01\x02\x03", 3);
    size_t len;
    uint8_t *buf = encode(ev, &len);
    assert_int_equal(len, 64 + 2 * 96 + 2 * 16 + 3);

    /* Body: sequence_num, num_ports, reserved. */
    assert_int_equal(get_u64(buf + 48), 0x0123456789abcdefull);
    assert_int_equal(buf[48], 0xef);
    assert_int_equal(buf[56], 2);
    assert_int_equal(buf[57] | buf[58] | buf[59], 0);
    assert_int_equal(buf[60] | buf[61] | buf[62] | buf[63], 0);

    /* Both descriptors first, then both names, then the payload. */
    for (uint32_t i = 0; i < 2; i++) {
        const uint8_t *d = buf + 64 + i * 96;
        const ports_port_descriptor *want = &ev->u.user.descriptors[i];
        assert_int_equal(get_u64(d + 0), want->peer_node.v1);
        assert_int_equal(get_u64(d + 8), want->peer_node.v2);
        assert_int_equal(get_u64(d + 16), want->peer_port.v1);
        assert_int_equal(get_u64(d + 24), want->peer_port.v2);
        assert_int_equal(get_u64(d + 32), want->referring_node.v1);
        assert_int_equal(get_u64(d + 40), want->referring_node.v2);
        assert_int_equal(get_u64(d + 48), want->referring_port.v1);
        assert_int_equal(get_u64(d + 56), want->referring_port.v2);
        assert_int_equal(get_u64(d + 64), want->next_sequence_num_to_send);
        assert_int_equal(get_u64(d + 72), want->next_sequence_num_to_receive);
        assert_int_equal(get_u64(d + 80), want->last_sequence_num_to_receive);
        assert_int_equal(d[88], i % 2); /* peer_closed: fill_descriptor sets odd ones */
        for (int r = 89; r < 96; r++)
            assert_int_equal(d[r], 0);
        const uint8_t *n = buf + 64 + 2 * 96 + i * 16;
        assert_int_equal(get_u64(n), ev->u.user.ports[i].v1);
        assert_int_equal(get_u64(n + 8), ev->u.user.ports[i].v2);
    }
    assert_memory_equal(buf + 64 + 2 * 112, "\x01\x02\x03", 3);
    ports_event_destroy(ev);
    free(buf);
}

static void test_body_layouts(void **state)
{
    (void)state;
    size_t len;
    uint8_t *buf = encode_type(PORTS_EVENT_OBSERVE_PROXY, &len);
    assert_int_equal(get_u64(buf + 48), name_for(3).v1);
    assert_int_equal(get_u64(buf + 56), name_for(3).v2);
    assert_int_equal(get_u64(buf + 64), name_for(4).v1);
    assert_int_equal(get_u64(buf + 80), name_for(5).v1);
    assert_int_equal(get_u64(buf + 96), name_for(6).v1);
    assert_int_equal(get_u64(buf + 104), name_for(6).v2);
    free(buf);

    buf = encode_type(PORTS_EVENT_MERGE_PORT, &len);
    ports_port_descriptor d;
    fill_descriptor(&d, 1);
    assert_int_equal(get_u64(buf + 48), name_for(7).v1);
    assert_int_equal(get_u64(buf + 64), d.peer_node.v1);
    assert_int_equal(get_u64(buf + 64 + 64), d.next_sequence_num_to_send);
    assert_int_equal(buf[64 + 88], 1);
    free(buf);

    buf = encode_type(PORTS_EVENT_UPDATE_PREVIOUS_PEER, &len);
    assert_int_equal(get_u64(buf + 48), name_for(8).v1);
    assert_int_equal(get_u64(buf + 72), name_for(9).v2);
    free(buf);

    buf = encode_type(PORTS_EVENT_OBSERVE_CLOSURE, &len);
    assert_int_equal(get_u64(buf + 48), 0x5555666677778888ull);
    free(buf);

    /* Unsequenced events carry no sender and the invalid control sequence. */
    buf = encode_type(PORTS_EVENT_PORT_ACCEPTED, &len);
    for (int i = 24; i < 40; i++)
        assert_int_equal(buf[i], 0);
    for (int i = 40; i < 48; i++)
        assert_int_equal(buf[i], 0xff);
    free(buf);
}

/* ---- rejections ---- */

static void test_reject_every_truncation_of_user_message(void **state)
{
    (void)state;
    ports_event *ev = make_user(2, NULL, 0);
    size_t len;
    uint8_t *full = encode(ev, &len);
    assert_int_equal(len, 64 + 2 * 112);
    for (size_t l = 0; l < len; l++) {
        /* A copy of exactly l bytes, so ASan sees any read past the end. */
        uint8_t *cut = malloc(l ? l : 1);
        assert_non_null(cut);
        memcpy(cut, full, l);
        expect_malformed(cut, l);
        free(cut);
    }
    ports_event *parsed = expect_ok(full, len);
    ports_event_destroy(parsed);
    ports_event_destroy(ev);
    free(full);
}

static void test_reject_truncation_and_trailing_bytes_of_fixed_events(void **state)
{
    (void)state;
    for (int t = 1; t < PORTS_EVENT_TYPE_COUNT; t++) {
        size_t len;
        uint8_t *full = encode_type((ports_event_type)t, &len);
        assert_int_equal(len, fixed_sizes[t]);
        for (size_t l = 0; l < len; l++) {
            uint8_t *cut = malloc(l ? l : 1);
            assert_non_null(cut);
            memcpy(cut, full, l);
            expect_malformed(cut, l);
            free(cut);
        }
        /* Non-user events are exactly header + body: any extra byte is refused. */
        for (size_t extra = 1; extra <= 17; extra += 8) {
            uint8_t *longer = calloc(1, len + extra);
            assert_non_null(longer);
            memcpy(longer, full, len);
            expect_malformed(longer, len + extra);
            free(longer);
        }
        free(full);
    }
}

static void test_reject_unknown_type(void **state)
{
    (void)state;
    static const uint32_t bad[] = {
        PORTS_EVENT_TYPE_COUNT, 10, 0x100, 0x10000, 0x1000000, 0x80000001u, UINT32_MAX};
    /* Over every valid event, so that only the type is wrong (whatever its size). */
    for (int t = 0; t < PORTS_EVENT_TYPE_COUNT; t++) {
        size_t len;
        uint8_t *buf = encode_type((ports_event_type)t, &len);
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            put_u32(buf, bad[i]);
            expect_malformed(buf, len);
        }
        free(buf);
    }
}

static void test_reject_nonzero_header_reserved(void **state)
{
    (void)state;
    for (int t = 0; t < PORTS_EVENT_TYPE_COUNT; t++) {
        size_t len;
        uint8_t *buf = encode_type((ports_event_type)t, &len);
        for (int b = 4; b < 8; b++) {
            buf[b] = 0x01;
            expect_malformed(buf, len);
            buf[b] = 0x80;
            expect_malformed(buf, len);
            buf[b] = 0;
        }
        ports_event_destroy(expect_ok(buf, len));
        free(buf);
    }
}

static void test_reject_nonzero_user_reserved(void **state)
{
    (void)state;
    ports_event *ev = make_user(1, "x", 1);
    size_t len;
    uint8_t *buf = encode(ev, &len);
    for (int b = 60; b < 64; b++) {
        buf[b] = 1;
        expect_malformed(buf, len);
        buf[b] = 0;
    }
    ports_event_destroy(expect_ok(buf, len));
    ports_event_destroy(ev);
    free(buf);
}

static void test_reject_nonzero_descriptor_padding(void **state)
{
    (void)state;
    ports_event *ev = make_user(2, NULL, 0);
    size_t len;
    uint8_t *buf = encode(ev, &len);
    for (size_t i = 0; i < 2; i++) {
        for (size_t b = 89; b < 96; b++) {
            uint8_t *p = buf + 64 + i * 96 + b;
            *p = 0x40;
            expect_malformed(buf, len);
            *p = 0;
        }
    }
    ports_event_destroy(expect_ok(buf, len));
    ports_event_destroy(ev);
    free(buf);

    buf = encode_type(PORTS_EVENT_MERGE_PORT, &len);
    for (size_t b = 89; b < 96; b++) {
        buf[64 + b] = 0xff;
        expect_malformed(buf, len);
        buf[64 + b] = 0;
    }
    ports_event_destroy(expect_ok(buf, len));
    free(buf);
}

static void test_reject_peer_closed_not_boolean(void **state)
{
    (void)state;
    ports_event *ev = make_user(2, NULL, 0);
    size_t len;
    uint8_t *buf = encode(ev, &len);
    for (size_t i = 0; i < 2; i++) {
        uint8_t *p = buf + 64 + i * 96 + 88;
        uint8_t orig = *p;
        static const uint8_t bad[] = {2, 3, 0x80, 0xff};
        for (size_t k = 0; k < sizeof(bad); k++) {
            *p = bad[k];
            expect_malformed(buf, len);
        }
        /* 0 and 1 are both fine. */
        *p = (uint8_t)!orig;
        ports_event_destroy(expect_ok(buf, len));
        *p = orig;
    }
    ports_event_destroy(ev);
    free(buf);

    buf = encode_type(PORTS_EVENT_MERGE_PORT, &len);
    buf[64 + 88] = 2;
    expect_malformed(buf, len);
    free(buf);
}

static void test_reject_too_many_ports(void **state)
{
    (void)state;
    /* A message that really carries limit + 1 well-formed ports. */
    uint32_t n = CMOJO_MAX_PORTS_PER_MESSAGE + 1;
    size_t len = 64 + (size_t)n * 112;
    uint8_t *buf = calloc(1, len);
    assert_non_null(buf);
    ports_event *hdr = make_user(0, NULL, 0);
    ports_event_serialize(hdr, buf);
    ports_event_destroy(hdr);
    put_u32(buf + 56, n);
    for (uint32_t i = 0; i < n; i++) {
        ports_name nm = name_for(1000 + i);
        put_u64(buf + 64 + (size_t)n * 96 + (size_t)i * 16, nm.v1);
        put_u64(buf + 64 + (size_t)n * 96 + (size_t)i * 16 + 8, nm.v2);
    }
    expect_malformed(buf, len);

    /* The same bytes read as exactly the limit (the extra 112 become payload) parse. */
    put_u32(buf + 56, CMOJO_MAX_PORTS_PER_MESSAGE);
    /* Move the names down so they follow limit descriptors. */
    memmove(buf + 64 + (size_t)CMOJO_MAX_PORTS_PER_MESSAGE * 96, buf + 64 + (size_t)n * 96,
            (size_t)CMOJO_MAX_PORTS_PER_MESSAGE * 16);
    ports_event *ev = expect_ok(buf, len);
    assert_int_equal(ev->u.user.num_ports, CMOJO_MAX_PORTS_PER_MESSAGE);
    assert_int_equal(ev->u.user.payload->size, 112);
    ports_event_destroy(ev);
    free(buf);
}

static void test_reject_port_count_overflow_on_short_buffer(void **state)
{
    (void)state;
    /*
     * Counts whose byte size wraps in 32 bits (0x2492493 * 112 == 2^32 + 80)
     * or is huge: each must be refused without reading past the buffer.
     */
    static const uint32_t counts[] = {
        UINT32_MAX, 0x80000000u, 0x2492493u, 0x10000000u, CMOJO_MAX_PORTS_PER_MESSAGE + 1, 3};
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        ports_event *ev = make_user(0, NULL, 0);
        size_t len = 64 + 80;
        uint8_t *buf = calloc(1, len);
        assert_non_null(buf);
        ports_event_serialize(ev, buf);
        ports_event_destroy(ev);
        put_u32(buf + 56, counts[i]);
        expect_malformed(buf, len);
        expect_malformed(buf, 64);
        free(buf);
    }
}

static void test_reject_oversized_event(void **state)
{
    (void)state;
    size_t len = (size_t)CMOJO_MAX_EVENT_SIZE + 1;
    uint8_t *buf = calloc(1, len); /* pages stay untouched unless something reads them */
    assert_non_null(buf);
    ports_event *ev = make_user(0, NULL, 0);
    ports_event_serialize(ev, buf);
    ports_event_destroy(ev);
    expect_malformed(buf, len);
    expect_malformed(buf, SIZE_MAX);

    /* Exactly at the limit is fine, and all of the rest is payload. */
    ports_event *parsed = expect_ok(buf, len - 1);
    assert_int_equal(parsed->u.user.payload->size, CMOJO_MAX_EVENT_SIZE - 64);
    ports_event_destroy(parsed);
    free(buf);
}

static void test_reject_invalid_attached_names(void **state)
{
    (void)state;
    ports_event *ev = make_user(3, NULL, 0);
    size_t len;
    uint8_t *good = encode(ev, &len);
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    size_t names = 64 + 3 * 96;

    for (size_t i = 0; i < 3; i++) {
        /* The invalid (zero) name. */
        memcpy(buf, good, len);
        memset(buf + names + i * 16, 0, 16);
        expect_malformed(buf, len);
        /* Half-zero names are valid names. */
        memset(buf + names + i * 16, 0, 8);
        memcpy(buf + names + i * 16 + 8, good + names + i * 16 + 8, 8);
        ports_event_destroy(expect_ok(buf, len));
        /* The port the message is addressed to. */
        memcpy(buf, good, len);
        memcpy(buf + names + i * 16, good + 8, 16);
        expect_malformed(buf, len);
    }
    /* The same name twice, adjacent and apart, and differing only in v2. */
    for (size_t a = 0; a < 3; a++) {
        for (size_t b = 0; b < 3; b++) {
            if (a == b)
                continue;
            memcpy(buf, good, len);
            memcpy(buf + names + b * 16, buf + names + a * 16, 16);
            expect_malformed(buf, len);
            buf[names + b * 16 + 8] ^= 1;
            ports_event_destroy(expect_ok(buf, len));
        }
    }
    free(buf);
    free(good);
    ports_event_destroy(ev);
}

static void test_reject_duplicate_among_many_ports(void **state)
{
    (void)state;
    /* First and last alike, at the smallest and largest counts too. */
    static const uint32_t counts[] = {2, 5, 64, CMOJO_MAX_PORTS_PER_MESSAGE};
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        ports_event *ev = make_user(counts[i], NULL, 0);
        ev->u.user.ports[counts[i] - 1] = ev->u.user.ports[0];
        size_t len;
        uint8_t *buf = encode(ev, &len);
        expect_malformed(buf, len);
        free(buf);
        ports_event_destroy(ev);
    }
}

static void test_reject_bad_control_sequence(void **state)
{
    (void)state;
    for (int t = 0; t < PORTS_EVENT_TYPE_COUNT; t++) {
        size_t len;
        uint8_t *buf = encode_type((ports_event_type)t, &len);
        ports_event *ev = expect_ok(buf, len);
        bool sequenced = ports_event_is_sequenced(ev);
        ports_event_destroy(ev);
        if (sequenced) {
            put_u64(buf + 40, PORTS_INVALID_SEQUENCE_NUM);
            expect_malformed(buf, len);
            put_u64(buf + 40, 0);
            ports_event_destroy(expect_ok(buf, len));
            /* Nor may a sequenced event leave its sender unnamed (bytes 24-39). */
            uint8_t saved[16];
            memcpy(saved, buf + 24, 16);
            memset(buf + 24, 0, 16);
            expect_malformed(buf, len);
            memcpy(buf + 24, saved, 16);
            ports_event_destroy(expect_ok(buf, len));
        } else {
            put_u64(buf + 40, 0);
            expect_malformed(buf, len);
            put_u64(buf + 40, 1);
            expect_malformed(buf, len);
            put_u64(buf + 40, PORTS_INVALID_SEQUENCE_NUM - 1);
            expect_malformed(buf, len);
            /* Nor may an unsequenced event name a sender. */
            put_u64(buf + 40, PORTS_INVALID_SEQUENCE_NUM);
            buf[39] = 1;
            expect_malformed(buf, len);
            buf[39] = 0;
            ports_event_destroy(expect_ok(buf, len));
        }
        free(buf);
    }
}

static void test_reject_dead_proxy_broadcast_with_sequence(void **state)
{
    (void)state;
    ports_event *ev = ports_event_new(PORTS_EVENT_OBSERVE_PROXY, NULL);
    size_t len;
    uint8_t *buf = encode(ev, &len);
    ports_event_destroy(expect_ok(buf, len));
    put_u64(buf + 40, 5);
    expect_malformed(buf, len);
    /* Giving it a port name makes it an ordinary, sequenced ObserveProxy. */
    buf[8] = 1;
    buf[24] = 2;
    ports_event_destroy(expect_ok(buf, len));
    put_u64(buf + 40, PORTS_INVALID_SEQUENCE_NUM);
    expect_malformed(buf, len);
    free(buf);
    ports_event_destroy(ev);
}

static void test_reject_user_message_sequence_zero(void **state)
{
    (void)state;
    ports_event *ev = make_user(1, "p", 1);
    size_t len;
    uint8_t *buf = encode(ev, &len);
    put_u64(buf + 48, 0);
    expect_malformed(buf, len);
    put_u64(buf + 48, PORTS_INITIAL_SEQUENCE_NUM);
    ports_event *parsed = expect_ok(buf, len);
    assert_int_equal(parsed->u.user.sequence_num, PORTS_INITIAL_SEQUENCE_NUM);
    ports_event_destroy(parsed);
    ports_event_destroy(ev);
    free(buf);
}

/* ---- construction and ownership ---- */

typedef struct counting_payload {
    ports_payload base;
    int *destroyed;
} counting_payload;

static void counting_destroy(ports_payload *p)
{
    counting_payload *cp = (counting_payload *)p;
    (*cp->destroyed)++;
    free(cp);
}

static const ports_payload_ops counting_ops = {.destroy = counting_destroy};

static ports_payload *counting_payload_new(int *destroyed)
{
    counting_payload *cp = calloc(1, sizeof(*cp));
    assert_non_null(cp);
    cp->base.ops = &counting_ops;
    cp->base.size = 42;
    cp->destroyed = destroyed;
    return &cp->base;
}

static void test_user_message_new_rejects_too_many_ports(void **state)
{
    (void)state;
    int destroyed = 0;
    assert_null(
        ports_user_message_new(CMOJO_MAX_PORTS_PER_MESSAGE + 1, counting_payload_new(&destroyed)));
    assert_int_equal(destroyed, 1);
    assert_null(ports_user_message_new(UINT32_MAX, counting_payload_new(&destroyed)));
    assert_int_equal(destroyed, 2);
    assert_null(ports_user_message_new(UINT32_MAX, NULL));
}

static void test_user_message_new_layout_and_ownership(void **state)
{
    (void)state;
    int destroyed = 0;
    ports_payload *p = counting_payload_new(&destroyed);
    ports_event *ev = ports_user_message_new(CMOJO_MAX_PORTS_PER_MESSAGE, p);
    assert_non_null(ev);
    assert_int_equal(ev->type, PORTS_EVENT_USER_MESSAGE);
    assert_int_equal(ev->control_sequence_num, PORTS_INVALID_SEQUENCE_NUM);
    assert_int_equal(ev->u.user.sequence_num, 0);
    assert_int_equal(ev->u.user.num_ports, CMOJO_MAX_PORTS_PER_MESSAGE);
    assert_ptr_equal(ev->u.user.payload, p);
    assert_false(ports_payload_is_bytes(p));
    assert_null(ports_payload_bytes_data(p));
    /* Both arrays are inline, zeroed, writable to the end, and do not overlap. */
    const uint8_t *d = (const uint8_t *)ev->u.user.descriptors;
    const uint8_t *n = (const uint8_t *)ev->u.user.ports;
    assert_true(d > (const uint8_t *)ev);
    assert_true(n >= d + CMOJO_MAX_PORTS_PER_MESSAGE * sizeof(ports_port_descriptor));
    for (uint32_t i = 0; i < CMOJO_MAX_PORTS_PER_MESSAGE; i++) {
        assert_false(ports_name_is_valid(&ev->u.user.ports[i]));
        assert_false(ev->u.user.descriptors[i].peer_closed);
        assert_int_equal(ev->u.user.descriptors[i].next_sequence_num_to_send, 0);
        ev->u.user.ports[i] = name_for(i + 1);
        fill_descriptor(&ev->u.user.descriptors[i], i);
    }
    assert_int_equal(destroyed, 0);
    ports_event_destroy(ev);
    assert_int_equal(destroyed, 1);

    ev = ports_user_message_new(0, NULL);
    assert_non_null(ev);
    assert_null(ev->u.user.ports);
    assert_null(ev->u.user.descriptors);
    assert_null(ev->u.user.payload);
    ports_event_destroy(ev);
    ports_event_destroy(NULL);
    ports_payload_destroy(NULL);
}

/* A payload that carries its own event, as core messages do. */
typedef struct carrier_payload {
    ports_payload base;
    int *destroyed;
    ports_event event;
} carrier_payload;

static void carrier_destroy(ports_payload *p)
{
    carrier_payload *cp = (carrier_payload *)p;
    (*cp->destroyed)++;
    free(cp);
}

static const ports_payload_ops carrier_ops = {.destroy = carrier_destroy};

/*
 * An event made inside its payload: destroying it destroys the payload,
 * which frees the event's memory, and nothing touches the event after that
 * (ASan would see a bad free or a use after free); with the payload taken
 * out first, destroying the event leaves the memory alone, and it can hold
 * the next event.
 */
static void test_user_message_init_lives_in_its_payload(void **state)
{
    (void)state;
    int destroyed = 0;
    carrier_payload *cp = calloc(1, sizeof(*cp));
    assert_non_null(cp);
    cp->base.ops = &carrier_ops;
    cp->destroyed = &destroyed;
    memset(&cp->event, 0xa5, sizeof(cp->event)); /* whatever the memory held before */
    ports_event *ev = ports_user_message_init(&cp->event, &cp->base);
    assert_ptr_equal(ev, &cp->event);
    assert_int_equal(ev->type, PORTS_EVENT_USER_MESSAGE);
    assert_int_equal(ev->control_sequence_num, PORTS_INVALID_SEQUENCE_NUM);
    assert_int_equal(ev->u.user.sequence_num, 0);
    assert_int_equal(ev->u.user.num_ports, 0);
    assert_null(ev->u.user.ports);
    assert_null(ev->u.user.descriptors);
    assert_ptr_equal(ev->u.user.payload, &cp->base);

    ev->u.user.payload = NULL; /* what a reader does: the message outlives its event */
    ports_event_destroy(ev);
    assert_int_equal(destroyed, 0);

    ev = ports_user_message_init(&cp->event, &cp->base);
    ports_event_destroy(ev);
    assert_int_equal(destroyed, 1);
}

static void test_event_new_defaults(void **state)
{
    (void)state;
    ports_name pn = name_for(5);
    for (int t = 0; t < PORTS_EVENT_TYPE_COUNT; t++) {
        ports_event *ev = ports_event_new((ports_event_type)t, &pn);
        assert_non_null(ev);
        assert_int_equal(ev->type, t);
        assert_name_eq(&ev->port_name, &pn);
        assert_false(ports_name_is_valid(&ev->from_port));
        assert_int_equal(ev->control_sequence_num, PORTS_INVALID_SEQUENCE_NUM);
        ports_event_destroy(ev);
    }
    assert_null(ports_event_new((ports_event_type)PORTS_EVENT_TYPE_COUNT, &pn));
}

static void test_is_sequenced(void **state)
{
    (void)state;
    ports_name pn = name_for(1);
    for (int t = 0; t < PORTS_EVENT_TYPE_COUNT; t++) {
        ports_event *ev = ports_event_new((ports_event_type)t, &pn);
        bool want = t != PORTS_EVENT_PORT_ACCEPTED && t != PORTS_EVENT_MERGE_PORT;
        assert_int_equal(ports_event_is_sequenced(ev), want);
        ports_event_destroy(ev);
    }
    ports_event *ev = ports_event_new(PORTS_EVENT_OBSERVE_PROXY, NULL);
    assert_false(ports_event_is_sequenced(ev));
    ports_event_destroy(ev);
}

static void test_bytes_payload(void **state)
{
    (void)state;
    ports_payload *p = ports_payload_bytes_new(NULL, 0);
    assert_non_null(p);
    assert_true(ports_payload_is_bytes(p));
    assert_int_equal(p->size, 0);
    assert_non_null(ports_payload_bytes_data(p));
    ports_payload_destroy(p);

    p = ports_payload_bytes_new("abcdef", 6);
    assert_int_equal(p->size, 6);
    assert_memory_equal(ports_payload_bytes_data(p), "abcdef", 6);
    ports_payload_destroy(p);

    assert_null(ports_payload_bytes_new("x", SIZE_MAX));
    assert_false(ports_payload_is_bytes(NULL));
    assert_null(ports_payload_bytes_data(NULL));
}

/* What every message from another process parses to costs no allocation. */
static void test_empty_bytes_payloads_are_one_shared_object(void **state)
{
    (void)state;
    ports_payload *a = ports_payload_bytes_new(NULL, 0);
    ports_payload *b = ports_payload_bytes_new("unused", 0);
    assert_ptr_equal(a, b);
    ports_payload_destroy(a);
    /* Destroying it left it intact for every other holder. */
    assert_true(ports_payload_is_bytes(b));
    assert_int_equal(b->size, 0);
    ports_payload_destroy(b);
}

static void test_type_names(void **state)
{
    (void)state;
    for (int t = 0; t < PORTS_EVENT_TYPE_COUNT; t++) {
        const char *s = ports_event_type_name((ports_event_type)t);
        assert_non_null(s);
        assert_string_not_equal(s, "Unknown");
        for (int u = 0; u < t; u++)
            assert_string_not_equal(s, ports_event_type_name((ports_event_type)u));
    }
    assert_string_equal(ports_event_type_name(PORTS_EVENT_MERGE_PORT), "MergePort");
    assert_string_equal(ports_event_type_name((ports_event_type)PORTS_EVENT_TYPE_COUNT), "Unknown");
}

static void test_name_str_and_strerror(void **state)
{
    (void)state;
    char buf[PORTS_NAME_STRLEN];
    memset(buf, 'x', sizeof(buf));
    ports_name n = {0x1a2b3c4d00000000ull, 0x5e6f7a8bffffffffull};
    assert_ptr_equal(ports_name_str(&n, buf), buf);
    assert_string_equal(buf, "1a2b3c4d.5e6f7a8b");
    ports_name max = {UINT64_MAX, UINT64_MAX};
    ports_name_str(&max, buf);
    assert_true(strlen(buf) < PORTS_NAME_STRLEN);
    ports_name_str(&PORTS_INVALID_NAME, buf);
    assert_string_equal(buf, "00000000.00000000");

    static const int codes[] = {PORTS_OK,
                                PORTS_ERROR_PORT_UNKNOWN,
                                PORTS_ERROR_PORT_EXISTS,
                                PORTS_ERROR_PORT_STATE_UNEXPECTED,
                                PORTS_ERROR_PORT_CANNOT_SEND_SELF,
                                PORTS_ERROR_PORT_PEER_CLOSED,
                                PORTS_ERROR_PORT_CANNOT_SEND_PEER,
                                PORTS_ERROR_NOT_IMPLEMENTED,
                                PORTS_ERROR_NO_MEMORY,
                                PORTS_ERROR_INVALID_ARGUMENT,
                                PORTS_ERROR_MALFORMED,
                                PORTS_ERROR_BAD_PEER};
    const char *unknown = ports_strerror(12345);
    assert_non_null(unknown);
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        const char *s = ports_strerror(codes[i]);
        assert_non_null(s);
        assert_string_not_equal(s, unknown);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(s, ports_strerror(codes[j]));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_every_type),
        cmocka_unit_test(test_round_trip_user_message_port_counts),
        cmocka_unit_test(test_round_trip_extreme_values),
        cmocka_unit_test(test_round_trip_dead_proxy_broadcast),
        cmocka_unit_test(test_serialized_sizes),
        cmocka_unit_test(test_payload_bytes_preserved),
        cmocka_unit_test(test_empty_payload_parses_to_empty_bytes_payload),
        cmocka_unit_test(test_parse_unaligned_input),
        cmocka_unit_test(test_header_byte_layout),
        cmocka_unit_test(test_type_codes_on_wire),
        cmocka_unit_test(test_user_message_byte_layout),
        cmocka_unit_test(test_body_layouts),
        cmocka_unit_test(test_reject_every_truncation_of_user_message),
        cmocka_unit_test(test_reject_truncation_and_trailing_bytes_of_fixed_events),
        cmocka_unit_test(test_reject_unknown_type),
        cmocka_unit_test(test_reject_nonzero_header_reserved),
        cmocka_unit_test(test_reject_nonzero_user_reserved),
        cmocka_unit_test(test_reject_nonzero_descriptor_padding),
        cmocka_unit_test(test_reject_peer_closed_not_boolean),
        cmocka_unit_test(test_reject_too_many_ports),
        cmocka_unit_test(test_reject_port_count_overflow_on_short_buffer),
        cmocka_unit_test(test_reject_oversized_event),
        cmocka_unit_test(test_reject_invalid_attached_names),
        cmocka_unit_test(test_reject_duplicate_among_many_ports),
        cmocka_unit_test(test_reject_bad_control_sequence),
        cmocka_unit_test(test_reject_dead_proxy_broadcast_with_sequence),
        cmocka_unit_test(test_reject_user_message_sequence_zero),
        cmocka_unit_test(test_user_message_new_rejects_too_many_ports),
        cmocka_unit_test(test_user_message_new_layout_and_ownership),
        cmocka_unit_test(test_user_message_init_lives_in_its_payload),
        cmocka_unit_test(test_event_new_defaults),
        cmocka_unit_test(test_is_sequenced),
        cmocka_unit_test(test_bytes_payload),
        cmocka_unit_test(test_empty_bytes_payloads_are_one_shared_object),
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_name_str_and_strerror),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
