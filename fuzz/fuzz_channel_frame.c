/*
 * Fuzzes channel_frame_parse as a receiver drives it: the input is a stream
 * (first byte: how many received fds are queued; the rest: the bytes that
 * arrived), parsed frame after frame until it needs more or is refused.
 *
 * Rejection is a normal outcome; a crash, a sanitizer report or a broken
 * invariant (abort) is a bug: a frame must lie inside the bytes, claim no
 * more fds than are queued, re-encode to the same header, and every prefix
 * of it must ask for more rather than be accepted.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "channel/frame.h"
#include "cmojo_limits.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t fds = data[0];
    const uint8_t *buf = data + 1;
    size_t len = size - 1;
    size_t off = 0;

    for (;;) {
        channel_frame f;
        memset(&f, 0xAB, sizeof(f));
        size_t need = 0xABAB;
        const char *why = NULL;
        channel_frame_result r = channel_frame_parse(buf + off, len - off, fds, &f, &need, &why);

        if (r == CHANNEL_FRAME_BAD) {
            check(why != NULL && why[0] != '\0');
            check(need == 0xABAB);
            return 0;
        }
        check(why == NULL);
        if (r == CHANNEL_FRAME_NEED_MORE) {
            check(need > len - off);
            check(need >= CHANNEL_FRAME_HEADER_SIZE && need <= CMOJO_MAX_FRAME_SIZE);
            check(need % CHANNEL_FRAME_ALIGNMENT == 0);
            /* fds are never ahead of their frame by more than one frame's worth. */
            check(fds <= CMOJO_MAX_FDS_PER_FRAME);
            if (len - off == 0)
                check(fds == 0 && need == CHANNEL_FRAME_HEADER_SIZE);
            return 0;
        }
        check(r == CHANNEL_FRAME_OK);
        check(need == 0xABAB);
        const uint8_t *frame = buf + off;
        check(f.type != 0);
        check(f.wire_size >= CHANNEL_FRAME_HEADER_SIZE && f.wire_size <= len - off);
        check(f.wire_size % CHANNEL_FRAME_ALIGNMENT == 0);
        check(f.wire_size == channel_frame_wire_size(f.payload_size));
        check(f.payload == frame + CHANNEL_FRAME_HEADER_SIZE);
        check(f.payload_size <= channel_frame_max_payload());
        check(f.payload + f.payload_size <= frame + f.wire_size);
        check(f.num_fds <= fds && f.num_fds <= CMOJO_MAX_FDS_PER_FRAME);

        /* Only canonical frames are accepted: header and padding re-encode exactly. */
        uint8_t header[CHANNEL_FRAME_HEADER_SIZE];
        channel_frame_write_header(header, f.type, f.payload_size, f.num_fds);
        check(memcmp(header, frame, sizeof(header)) == 0);
        for (size_t i = CHANNEL_FRAME_HEADER_SIZE + f.payload_size; i < f.wire_size; i++)
            check(frame[i] == 0);

        /* The frame one byte short is incomplete, and says how much it needs. */
        channel_frame g;
        size_t need2 = 0;
        const char *why2 = NULL;
        channel_frame_result r2 =
            channel_frame_parse(frame, f.wire_size - 1, f.num_fds, &g, &need2, &why2);
        check(r2 == CHANNEL_FRAME_NEED_MORE);
        check(need2 == (f.wire_size - 1 < CHANNEL_FRAME_HEADER_SIZE ? CHANNEL_FRAME_HEADER_SIZE
                                                                    : f.wire_size));

        off += f.wire_size;
        fds -= f.num_fds;
    }
}
