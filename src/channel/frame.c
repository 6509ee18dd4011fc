/*
 * Channel frame headers (see frame.h). This is the untrusted boundary for
 * bytes from another process: every field is decoded explicitly from
 * little-endian bytes and checked against what has really arrived before
 * anything is derived from it.
 */
#include "channel/frame.h"

#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "cmojo_limits.h"
#include "cmojo_wire.h"

/* Field offsets in the header. */
#define OFF_TOTAL_SIZE 0u
#define OFF_HEADER_SIZE 4u
#define OFF_TYPE 6u
#define OFF_NUM_FDS 8u
#define OFF_RESERVED 10u
#define NUM_RESERVED 3u

_Static_assert(CHANNEL_FRAME_ALIGNMENT == 8, "padding uses wire_align8");
_Static_assert(CMOJO_MAX_FRAME_SIZE % CHANNEL_FRAME_ALIGNMENT == 0,
               "the largest frame must need no padding, so its wire size is the limit too");
_Static_assert(CMOJO_MAX_FRAME_SIZE <= UINT32_MAX, "total_size is a u32");
_Static_assert(CMOJO_MAX_FDS_PER_FRAME <= UINT16_MAX, "num_fds is a u16");

size_t channel_frame_max_payload(void)
{
    return CMOJO_MAX_FRAME_SIZE - CHANNEL_FRAME_HEADER_SIZE;
}

size_t channel_frame_wire_size(size_t payload_size)
{
    /* Beyond any frame's size: say so without wrapping round to a small number. */
    if (payload_size > SIZE_MAX - CHANNEL_FRAME_HEADER_SIZE - (CHANNEL_FRAME_ALIGNMENT - 1))
        return SIZE_MAX;
    return (size_t)wire_align8((uint64_t)payload_size + CHANNEL_FRAME_HEADER_SIZE);
}

void channel_frame_write_header(uint8_t *out, uint16_t type, size_t payload_size, size_t num_fds)
{
    assert(out != NULL);
    assert(type != 0);
    assert(payload_size <= channel_frame_max_payload());
    assert(num_fds <= CMOJO_MAX_FDS_PER_FRAME);

    wire_store_u32(out + OFF_TOTAL_SIZE, (uint32_t)(payload_size + CHANNEL_FRAME_HEADER_SIZE));
    wire_store_u16(out + OFF_HEADER_SIZE, (uint16_t)CHANNEL_FRAME_HEADER_SIZE);
    wire_store_u16(out + OFF_TYPE, type);
    wire_store_u16(out + OFF_NUM_FDS, (uint16_t)num_fds);
    memset(out + OFF_RESERVED, 0, NUM_RESERVED * sizeof(uint16_t));
}

/*
 * Checks the header fields whose bytes are all in buf[0..len), so a bad
 * field is refused as soon as it has arrived, not when the whole frame has.
 * NULL when every present field is valid.
 */
static const char *check_header_prefix(const uint8_t *buf, size_t len)
{
    if (len >= OFF_TOTAL_SIZE + 4) {
        uint32_t total = wire_load_u32(buf + OFF_TOTAL_SIZE);
        if (total < CHANNEL_FRAME_HEADER_SIZE)
            return "frame size smaller than its header";
        if (total > CMOJO_MAX_FRAME_SIZE)
            return "frame size beyond the limit";
    }
    if (len >= OFF_HEADER_SIZE + 2 &&
        wire_load_u16(buf + OFF_HEADER_SIZE) != CHANNEL_FRAME_HEADER_SIZE)
        return "bad frame header size";
    if (len >= OFF_TYPE + 2 && wire_load_u16(buf + OFF_TYPE) == 0)
        return "frame type 0";
    if (len >= OFF_NUM_FDS + 2 && wire_load_u16(buf + OFF_NUM_FDS) > CMOJO_MAX_FDS_PER_FRAME)
        return "frame claims too many fds";
    for (size_t i = 0; i < NUM_RESERVED; i++) {
        size_t off = OFF_RESERVED + 2 * i;
        if (len >= off + 2 && wire_load_u16(buf + off) != 0)
            return "nonzero reserved field in frame header";
    }
    return NULL;
}

channel_frame_result channel_frame_parse(const uint8_t *buf, size_t len, size_t fds_queued,
                                         channel_frame *out, size_t *need, const char **why)
{
    assert(buf != NULL || len == 0);
    assert(out != NULL && need != NULL && why != NULL);

    if (len == 0) {
        if (fds_queued != 0) {
            *why = "fds arrived with no frame";
            return CHANNEL_FRAME_BAD;
        }
        *need = CHANNEL_FRAME_HEADER_SIZE;
        return CHANNEL_FRAME_NEED_MORE;
    }

    const char *bad = check_header_prefix(buf, len);
    if (bad != NULL) {
        *why = bad;
        return CHANNEL_FRAME_BAD;
    }
    if (len < CHANNEL_FRAME_HEADER_SIZE) {
        if (fds_queued > CMOJO_MAX_FDS_PER_FRAME) {
            *why = "fds arrived ahead of their frame";
            return CHANNEL_FRAME_BAD;
        }
        *need = CHANNEL_FRAME_HEADER_SIZE;
        return CHANNEL_FRAME_NEED_MORE;
    }

    /* The whole header is here and valid: total_size is within the limit. */
    size_t total = wire_load_u32(buf + OFF_TOTAL_SIZE);
    size_t num_fds = wire_load_u16(buf + OFF_NUM_FDS);
    size_t wire = (size_t)wire_align8(total);

    /* Padding that has arrived must be zero, complete frame or not. */
    if (len > total) {
        size_t end = len < wire ? len : wire;
        for (size_t i = total; i < end; i++) {
            if (buf[i] != 0) {
                *why = "nonzero frame padding";
                return CHANNEL_FRAME_BAD;
            }
        }
    }

    if (len < wire) {
        if (fds_queued > num_fds) {
            *why = "fds arrived ahead of their frame";
            return CHANNEL_FRAME_BAD;
        }
        *need = wire;
        return CHANNEL_FRAME_NEED_MORE;
    }
    if (num_fds > fds_queued) {
        *why = "frame claims more fds than arrived";
        return CHANNEL_FRAME_BAD;
    }

    out->type = wire_load_u16(buf + OFF_TYPE);
    out->payload = buf + CHANNEL_FRAME_HEADER_SIZE;
    out->payload_size = total - CHANNEL_FRAME_HEADER_SIZE;
    out->num_fds = num_fds;
    out->wire_size = wire;
    return CHANNEL_FRAME_OK;
}
