/*
 * Channel frames: how bytes on a Unix stream socket are cut into messages.
 *
 * Wire form (little-endian):
 *
 *   u32 total_size    header + payload, in bytes (not counting padding)
 *   u16 header_size   CHANNEL_FRAME_HEADER_SIZE; larger values are refused
 *   u16 type          the owner's message type (opaque to the channel), != 0
 *   u16 num_fds       file descriptors that belong to this frame
 *   u16 reserved[3]   0
 *   payload           total_size - header_size bytes
 *   padding           zero bytes up to the next multiple of 8
 *
 * So every frame, and every payload, starts 8-byte aligned in the stream.
 * A frame's fds arrive (SCM_RIGHTS) with its bytes, never before the frame's
 * first byte and all of them by its last byte; they are taken from the
 * receiver's queue of received fds in order.
 *
 * Parsing is a pure function of (bytes, fds received and not yet claimed):
 * every length is checked against what is really there before it is used,
 * and a rejected input is an ordinary result (CHANNEL_FRAME_BAD), never
 * undefined behaviour.
 *
 * Threads: pure functions; no state.
 */
#ifndef CMOJO_CHANNEL_FRAME_H_
#define CMOJO_CHANNEL_FRAME_H_

#include <stddef.h>
#include <stdint.h>

#define CHANNEL_FRAME_HEADER_SIZE 16u
#define CHANNEL_FRAME_ALIGNMENT 8u

/* Largest payload one frame can carry (CMOJO_MAX_FRAME_SIZE - header). */
size_t channel_frame_max_payload(void);

/* Bytes a frame with a payload of `payload_size` occupies on the wire (padded). */
size_t channel_frame_wire_size(size_t payload_size);

/*
 * Writes the 16-byte header for a frame. The caller checked payload_size <=
 * channel_frame_max_payload(), num_fds <= CMOJO_MAX_FDS_PER_FRAME, type != 0.
 */
void channel_frame_write_header(uint8_t *out, uint16_t type, size_t payload_size, size_t num_fds);

typedef struct channel_frame {
    uint16_t type;
    const uint8_t *payload; /* points into the parsed buffer */
    size_t payload_size;
    size_t num_fds;
    size_t wire_size; /* bytes to consume, padding included */
} channel_frame;

typedef enum channel_frame_result {
    CHANNEL_FRAME_OK = 0,        /* *out is a complete, valid frame */
    CHANNEL_FRAME_NEED_MORE = 1, /* valid so far; *need is the bytes the frame needs */
    CHANNEL_FRAME_BAD = 2,       /* protocol violation; *why says which */
} channel_frame_result;

/*
 * Looks at the frame starting at buf[0] (len bytes available). fds_queued is
 * the number of received fds not claimed by earlier frames.
 *
 * OK: *out describes the frame (its num_fds <= fds_queued).
 * NEED_MORE: the frame is not complete; *need is its full wire size once the
 *   header is readable, CHANNEL_FRAME_HEADER_SIZE before. fds_queued beyond
 *   what this frame claims (once its header is readable) is BAD: fds arrive
 *   with their frame's bytes, never ahead of it.
 *   With len == 0 there is no frame: NEED_MORE if fds_queued is 0, else BAD
 *   (fds with no frame). With a partial header, up to CMOJO_MAX_FDS_PER_FRAME
 *   queued fds are allowed.
 * BAD: *why is a static string naming the violation (bad header size, size
 *   beyond the limit, too many fds, nonzero reserved or padding, type 0,
 *   a complete frame claiming more fds than arrived, fds with no frame).
 * Outputs are written only for the result that names them.
 */
channel_frame_result channel_frame_parse(const uint8_t *buf, size_t len, size_t fds_queued,
                                         channel_frame *out, size_t *need, const char **why);

#endif /* CMOJO_CHANNEL_FRAME_H_ */
