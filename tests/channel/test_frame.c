/*
 * channel_frame_parse / _write_header: every header rule and fd rule of
 * frame.h, partial input at every length, and the size arithmetic at the
 * limits.
 */
#include "cmojo_test.h"

#include <stdlib.h>
#include <string.h>

#include "channel/frame.h"
#include "cmojo_limits.h"

/* Builds a frame with an arbitrary (possibly invalid) header. Returns its wire size. */
static size_t forge(uint8_t *buf, uint32_t total, uint16_t header_size, uint16_t type,
                    uint16_t num_fds, uint16_t r0, uint16_t r1, uint16_t r2)
{
    uint8_t h[16] = {
        (uint8_t)total,
        (uint8_t)(total >> 8),
        (uint8_t)(total >> 16),
        (uint8_t)(total >> 24),
        (uint8_t)header_size,
        (uint8_t)(header_size >> 8),
        (uint8_t)type,
        (uint8_t)(type >> 8),
        (uint8_t)num_fds,
        (uint8_t)(num_fds >> 8),
        (uint8_t)r0,
        (uint8_t)(r0 >> 8),
        (uint8_t)r1,
        (uint8_t)(r1 >> 8),
        (uint8_t)r2,
        (uint8_t)(r2 >> 8),
    };
    memcpy(buf, h, sizeof(h));
    return ((size_t)total + 7) & ~(size_t)7;
}

/* A valid frame with `payload_size` bytes 0xA0, 0xA1, ... and zero padding. */
static size_t make_frame(uint8_t *buf, uint16_t type, size_t payload_size, size_t num_fds)
{
    channel_frame_write_header(buf, type, payload_size, num_fds);
    size_t wire = channel_frame_wire_size(payload_size);
    for (size_t i = 0; i < payload_size; i++)
        buf[16 + i] = (uint8_t)(0xA0 + i);
    memset(buf + 16 + payload_size, 0, wire - 16 - payload_size);
    return wire;
}

static const channel_frame untouched_frame = {.type = 0x5555,
                                              .payload = (const uint8_t *)1,
                                              .payload_size = 77,
                                              .num_fds = 77,
                                              .wire_size = 77};

/* Parses and checks that outputs not named by the result were left alone. */
static channel_frame_result parse(const uint8_t *buf, size_t len, size_t fds, channel_frame *f,
                                  size_t *need, const char **why)
{
    *f = untouched_frame;
    *need = 12345;
    *why = "untouched";
    channel_frame_result r = channel_frame_parse(buf, len, fds, f, need, why);
    if (r != CHANNEL_FRAME_OK) {
        assert_int_equal(f->type, untouched_frame.type);
        assert_ptr_equal(f->payload, untouched_frame.payload);
        assert_int_equal(f->payload_size, untouched_frame.payload_size);
        assert_int_equal(f->num_fds, untouched_frame.num_fds);
        assert_int_equal(f->wire_size, untouched_frame.wire_size);
    }
    if (r != CHANNEL_FRAME_NEED_MORE)
        assert_int_equal(*need, 12345);
    if (r != CHANNEL_FRAME_BAD)
        assert_string_equal(*why, "untouched");
    else
        assert_string_not_equal(*why, "untouched");
    return r;
}

static void expect_bad(const uint8_t *buf, size_t len, size_t fds, const char *why_part)
{
    channel_frame f;
    size_t need;
    const char *why;
    assert_int_equal(parse(buf, len, fds, &f, &need, &why), CHANNEL_FRAME_BAD);
    if (strstr(why, why_part) == NULL)
        fail_msg("why is \"%s\", expected it to mention \"%s\"", why, why_part);
}

static void test_header_is_little_endian_and_exact(void **state)
{
    (void)state;
    uint8_t buf[16];
    channel_frame_write_header(buf, 0x1234, 5, 3);
    const uint8_t expect[16] = {21, 0, 0, 0, 16, 0, 0x34, 0x12, 3, 0, 0, 0, 0, 0, 0, 0};
    assert_memory_equal(buf, expect, 16);

    channel_frame_write_header(buf, 0xffff, 0x01020304 - 16, CMOJO_MAX_FDS_PER_FRAME);
    const uint8_t expect2[16] = {4, 3, 2, 1, 16, 0, 0xff, 0xff, 253, 0, 0, 0, 0, 0, 0, 0};
    assert_memory_equal(buf, expect2, 16);
}

static void test_good_frames_parse(void **state)
{
    (void)state;
    uint8_t buf[64];
    channel_frame f;
    size_t need;
    const char *why;

    for (size_t payload = 0; payload <= 24; payload++) {
        size_t wire = make_frame(buf, 7, payload, 0);
        assert_int_equal(wire % 8, 0);
        assert_true(wire >= 16 + payload && wire < 16 + payload + 8);
        assert_int_equal(parse(buf, wire, 0, &f, &need, &why), CHANNEL_FRAME_OK);
        assert_int_equal(f.type, 7);
        assert_ptr_equal(f.payload, buf + 16);
        assert_int_equal(f.payload_size, payload);
        assert_int_equal(f.num_fds, 0);
        assert_int_equal(f.wire_size, wire);
        for (size_t i = 0; i < payload; i++)
            assert_int_equal(f.payload[i], (uint8_t)(0xA0 + i));
    }
}

/* More bytes after the frame (the next one) do not change what is parsed. */
static void test_frame_followed_by_more_bytes(void **state)
{
    (void)state;
    uint8_t buf[64];
    channel_frame f;
    size_t need;
    const char *why;
    size_t w1 = make_frame(buf, 1, 3, 1);
    size_t w2 = make_frame(buf + w1, 2, 8, 2);

    assert_int_equal(parse(buf, w1 + w2, 3, &f, &need, &why), CHANNEL_FRAME_OK);
    assert_int_equal(f.type, 1);
    assert_int_equal(f.num_fds, 1);
    assert_int_equal(f.wire_size, w1);
    /* Fds beyond this frame's may belong to the next frame, whose bytes are here. */
    assert_int_equal(parse(buf + w1, w2, 2, &f, &need, &why), CHANNEL_FRAME_OK);
    assert_int_equal(f.type, 2);
    assert_int_equal(f.num_fds, 2);
    assert_int_equal(f.payload_size, 8);
    assert_int_equal(f.wire_size, w2);
}

static void test_empty_input(void **state)
{
    (void)state;
    channel_frame f;
    size_t need;
    const char *why;
    assert_int_equal(parse(NULL, 0, 0, &f, &need, &why), CHANNEL_FRAME_NEED_MORE);
    assert_int_equal(need, CHANNEL_FRAME_HEADER_SIZE);
    expect_bad(NULL, 0, 1, "no frame");
    expect_bad(NULL, 0, CMOJO_MAX_FDS_PER_FRAME, "no frame");
}

static void test_every_partial_length_needs_more(void **state)
{
    (void)state;
    uint8_t buf[64];
    channel_frame f;
    size_t need;
    const char *why;
    size_t wire = make_frame(buf, 9, 21, 2); /* 37 bytes + 3 of padding */
    assert_int_equal(wire, 40);

    for (size_t len = 1; len < wire; len++) {
        size_t fds = len < 16 ? CMOJO_MAX_FDS_PER_FRAME : 2;
        assert_int_equal(parse(buf, len, fds, &f, &need, &why), CHANNEL_FRAME_NEED_MORE);
        assert_int_equal(need, len < 16 ? 16 : wire);
        /* Fewer fds than claimed are fine while the frame is incomplete. */
        assert_int_equal(parse(buf, len, 0, &f, &need, &why), CHANNEL_FRAME_NEED_MORE);
    }
    assert_int_equal(parse(buf, wire, 2, &f, &need, &why), CHANNEL_FRAME_OK);
}

static void test_total_size_limits(void **state)
{
    (void)state;
    uint8_t buf[32] = {0};
    channel_frame f;
    size_t need;
    const char *why;

    for (uint32_t total = 0; total < 16; total++) {
        forge(buf, total, 16, 1, 0, 0, 0, 0);
        expect_bad(buf, 16, 0, "smaller than its header");
        expect_bad(buf, 4, 0, "smaller than its header"); /* refused as soon as it is read */
    }
    forge(buf, CMOJO_MAX_FRAME_SIZE + 1, 16, 1, 0, 0, 0, 0);
    expect_bad(buf, 16, 0, "beyond the limit");
    expect_bad(buf, 4, 0, "beyond the limit");
    forge(buf, UINT32_MAX, 16, 1, 0, 0, 0, 0);
    expect_bad(buf, 16, 0, "beyond the limit");

    /* The largest legal size: needs everything, no padding. */
    forge(buf, CMOJO_MAX_FRAME_SIZE, 16, 1, 0, 0, 0, 0);
    assert_int_equal(parse(buf, 16, 0, &f, &need, &why), CHANNEL_FRAME_NEED_MORE);
    assert_int_equal(need, CMOJO_MAX_FRAME_SIZE);
    /* One below: 7 bytes of padding. */
    forge(buf, CMOJO_MAX_FRAME_SIZE - 7, 16, 1, 0, 0, 0, 0);
    assert_int_equal(parse(buf, 16, 0, &f, &need, &why), CHANNEL_FRAME_NEED_MORE);
    assert_int_equal(need, CMOJO_MAX_FRAME_SIZE);

    /* Header-only frame. */
    forge(buf, 16, 16, 1, 0, 0, 0, 0);
    assert_int_equal(parse(buf, 16, 0, &f, &need, &why), CHANNEL_FRAME_OK);
    assert_int_equal(f.payload_size, 0);
    assert_int_equal(f.wire_size, 16);
}

static void test_max_size_frame_parses(void **state)
{
    (void)state;
    size_t max_payload = channel_frame_max_payload();
    size_t wire = channel_frame_wire_size(max_payload);
    assert_int_equal(wire, CMOJO_MAX_FRAME_SIZE);
    uint8_t *buf = calloc(1, wire);
    assert_non_null(buf);
    channel_frame_write_header(buf, 3, max_payload, CMOJO_MAX_FDS_PER_FRAME);
    channel_frame f;
    size_t need;
    const char *why;
    assert_int_equal(parse(buf, wire, CMOJO_MAX_FDS_PER_FRAME, &f, &need, &why), CHANNEL_FRAME_OK);
    assert_int_equal(f.payload_size, max_payload);
    assert_int_equal(f.num_fds, CMOJO_MAX_FDS_PER_FRAME);
    assert_int_equal(parse(buf, wire - 1, CMOJO_MAX_FDS_PER_FRAME, &f, &need, &why),
                     CHANNEL_FRAME_NEED_MORE);
    assert_int_equal(need, wire);
    free(buf);
}

static void test_size_arithmetic(void **state)
{
    (void)state;
    assert_int_equal(channel_frame_max_payload(), CMOJO_MAX_FRAME_SIZE - 16);
    assert_int_equal(channel_frame_wire_size(0), 16);
    assert_int_equal(channel_frame_wire_size(1), 24);
    assert_int_equal(channel_frame_wire_size(8), 24);
    assert_int_equal(channel_frame_wire_size(9), 32);
    assert_int_equal(channel_frame_wire_size(channel_frame_max_payload()), CMOJO_MAX_FRAME_SIZE);
    assert_int_equal(channel_frame_wire_size(channel_frame_max_payload() - 1),
                     CMOJO_MAX_FRAME_SIZE);
    assert_int_equal(channel_frame_wire_size(channel_frame_max_payload() - 8),
                     CMOJO_MAX_FRAME_SIZE - 8);
    /* Sizes no frame can have never wrap round to something small. */
    assert_int_equal(channel_frame_wire_size(SIZE_MAX), SIZE_MAX);
    assert_int_equal(channel_frame_wire_size(SIZE_MAX - 16), SIZE_MAX);
    assert_true(channel_frame_wire_size(SIZE_MAX - 40) >= SIZE_MAX - 40);
    assert_int_equal(channel_frame_wire_size((size_t)UINT32_MAX), (size_t)UINT32_MAX + 1 + 16);
}

static void test_bad_header_size(void **state)
{
    (void)state;
    uint8_t buf[64] = {0};
    const uint16_t sizes[] = {0, 8, 15, 17, 24, 32, 0xffff};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t wire = forge(buf, 40, sizes[i], 1, 0, 0, 0, 0);
        expect_bad(buf, wire, 0, "header size");
        expect_bad(buf, 6, 0, "header size");
    }
}

static void test_type_zero(void **state)
{
    (void)state;
    uint8_t buf[16];
    forge(buf, 16, 16, 0, 0, 0, 0, 0);
    expect_bad(buf, 16, 0, "type 0");
    expect_bad(buf, 8, 0, "type 0");
    channel_frame f;
    size_t need;
    const char *why;
    /* Before the type's second byte has arrived it may still be nonzero. */
    assert_int_equal(parse(buf, 7, 0, &f, &need, &why), CHANNEL_FRAME_NEED_MORE);
}

static void test_too_many_fds_in_header(void **state)
{
    (void)state;
    uint8_t buf[16];
    forge(buf, 16, 16, 1, CMOJO_MAX_FDS_PER_FRAME + 1, 0, 0, 0);
    expect_bad(buf, 16, CMOJO_MAX_FDS_PER_FRAME + 1, "too many fds");
    expect_bad(buf, 10, 0, "too many fds");
    forge(buf, 16, 16, 1, 0xffff, 0, 0, 0);
    expect_bad(buf, 16, 0, "too many fds");

    channel_frame f;
    size_t need;
    const char *why;
    forge(buf, 16, 16, 1, CMOJO_MAX_FDS_PER_FRAME, 0, 0, 0);
    assert_int_equal(parse(buf, 16, CMOJO_MAX_FDS_PER_FRAME, &f, &need, &why), CHANNEL_FRAME_OK);
    assert_int_equal(f.num_fds, CMOJO_MAX_FDS_PER_FRAME);
}

static void test_nonzero_reserved(void **state)
{
    (void)state;
    uint8_t buf[16];
    const uint16_t vals[] = {1, 0x100, 0x8000};
    for (int field = 0; field < 3; field++) {
        for (size_t v = 0; v < 3; v++) {
            forge(buf, 16, 16, 1, 0, field == 0 ? vals[v] : 0, field == 1 ? vals[v] : 0,
                  field == 2 ? vals[v] : 0);
            expect_bad(buf, 16, 0, "reserved");
            expect_bad(buf, 12 + 2 * (size_t)field, 0, "reserved");
        }
    }
}

static void test_nonzero_padding(void **state)
{
    (void)state;
    uint8_t buf[32];
    channel_frame f;
    size_t need;
    const char *why;
    for (size_t pos = 0; pos < 7; pos++) {
        size_t wire = make_frame(buf, 1, 1, 0); /* 17 bytes + 7 of padding */
        assert_int_equal(wire, 24);
        buf[17 + pos] = 0x80;
        expect_bad(buf, wire, 0, "padding");
        /* Refused as soon as the bad byte is in, before the frame is complete. */
        expect_bad(buf, 18 + pos, 0, "padding");
        assert_int_equal(parse(buf, 17 + pos, 0, &f, &need, &why), CHANNEL_FRAME_NEED_MORE);
    }
}

static void test_fds_ahead_of_frame(void **state)
{
    (void)state;
    uint8_t buf[32];
    channel_frame f;
    size_t need;
    const char *why;
    size_t wire = make_frame(buf, 1, 4, 2);

    /* With a partial header: up to one frame's worth is allowed. */
    assert_int_equal(parse(buf, 3, CMOJO_MAX_FDS_PER_FRAME, &f, &need, &why),
                     CHANNEL_FRAME_NEED_MORE);
    expect_bad(buf, 3, CMOJO_MAX_FDS_PER_FRAME + 1, "ahead");
    expect_bad(buf, 15, CMOJO_MAX_FDS_PER_FRAME + 1, "ahead");
    /* Header readable: no more than this frame claims. */
    assert_int_equal(parse(buf, 16, 2, &f, &need, &why), CHANNEL_FRAME_NEED_MORE);
    expect_bad(buf, 16, 3, "ahead");
    expect_bad(buf, wire - 1, 3, "ahead");
    /* Complete: the surplus may be the next frame's. */
    assert_int_equal(parse(buf, wire, 3, &f, &need, &why), CHANNEL_FRAME_OK);
    assert_int_equal(f.num_fds, 2);
}

static void test_frame_claims_more_fds_than_arrived(void **state)
{
    (void)state;
    uint8_t buf[32];
    size_t wire = make_frame(buf, 1, 4, 5);
    expect_bad(buf, wire, 4, "more fds than arrived");
    expect_bad(buf, wire, 0, "more fds than arrived");
}

/* A receiver's loop over a stream of frames takes every fd exactly once. */
static void test_stream_of_frames(void **state)
{
    (void)state;
    uint8_t buf[512];
    size_t len = 0;
    size_t fds_total = 0;
    for (size_t i = 0; i < 10; i++) {
        len += make_frame(buf + len, (uint16_t)(i + 1), i * 5, i % 3);
        fds_total += i % 3;
    }
    size_t off = 0, fds = fds_total, frames = 0;
    for (;;) {
        channel_frame f;
        size_t need;
        const char *why;
        channel_frame_result r = parse(buf + off, len - off, fds, &f, &need, &why);
        if (r == CHANNEL_FRAME_NEED_MORE)
            break;
        assert_int_equal(r, CHANNEL_FRAME_OK);
        assert_int_equal(f.type, frames + 1);
        assert_int_equal(f.payload_size, frames * 5);
        assert_int_equal(f.num_fds, frames % 3);
        off += f.wire_size;
        fds -= f.num_fds;
        frames++;
    }
    assert_int_equal(frames, 10);
    assert_int_equal(off, len);
    assert_int_equal(fds, 0);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, cmojo_test_fd_setup, cmojo_test_fd_teardown)
    const struct CMUnitTest tests[] = {
        T(test_header_is_little_endian_and_exact),
        T(test_good_frames_parse),
        T(test_frame_followed_by_more_bytes),
        T(test_empty_input),
        T(test_every_partial_length_needs_more),
        T(test_total_size_limits),
        T(test_max_size_frame_parses),
        T(test_size_arithmetic),
        T(test_bad_header_size),
        T(test_type_zero),
        T(test_too_many_fds_in_header),
        T(test_nonzero_reserved),
        T(test_nonzero_padding),
        T(test_fds_ahead_of_frame),
        T(test_frame_claims_more_fds_than_arrived),
        T(test_stream_of_frames),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
