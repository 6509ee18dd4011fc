/*
 * Data pipe control messages, counts and serialised ends. See data_pipe_wire.h.
 */
#include "core/data_pipe_wire.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "cmojo_limits.h"
#include "cmojo_wire.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010 /* Linux 5.1; older headers lack it */
#endif

void dp_control_build(uint8_t out[DP_CONTROL_SIZE], uint32_t command, uint32_t num_bytes)
{
    wire_store_u32(out, command);
    wire_store_u32(out + 4, num_bytes);
}

int dp_control_parse(const uint8_t *buf, size_t len, uint32_t num_handles, uint32_t *command,
                     uint32_t *num_bytes)
{
    if (len != DP_CONTROL_SIZE || num_handles != 0)
        return -1;
    uint32_t c = wire_load_u32(buf);
    if (c != DP_CONTROL_DATA_WAS_WRITTEN && c != DP_CONTROL_DATA_WAS_READ)
        return -1;
    *command = c;
    *num_bytes = wire_load_u32(buf + 4);
    return 0;
}

int dp_producer_apply_read(dp_state *s, uint32_t num_bytes)
{
    /* Only bytes written (not free) can have been read. */
    if (num_bytes == 0 || num_bytes % s->element_size || num_bytes > s->capacity - s->count)
        return -1;
    s->count += num_bytes;
    return 0;
}

int dp_consumer_apply_written(dp_state *s, uint32_t num_bytes)
{
    if (num_bytes == 0 || num_bytes % s->element_size || num_bytes > s->capacity - s->count)
        return -1;
    s->count += num_bytes;
    return 0;
}

bool dp_state_valid(const dp_state *s)
{
    if (s->element_size == 0 || s->capacity == 0 || s->capacity > CMOJO_MAX_DATA_PIPE_CAPACITY ||
        s->capacity % s->element_size)
        return false;
    if (s->offset >= s->capacity || s->offset % s->element_size)
        return false;
    return s->count <= s->capacity && s->count % s->element_size == 0;
}

void dp_state_write(const dp_state *s, uint8_t *out)
{
    wire_store_u32(out, s->element_size);
    wire_store_u32(out + 4, s->capacity);
    wire_store_u32(out + 8, s->offset);
    wire_store_u32(out + 12, s->count);
}

int dp_state_read(const uint8_t *buf, size_t len, dp_state *out, const char **why)
{
    if (len != DP_STATE_SIZE) {
        *why = "data pipe state of the wrong size";
        return -1;
    }
    dp_state s = {
        .element_size = wire_load_u32(buf),
        .capacity = wire_load_u32(buf + 4),
        .offset = wire_load_u32(buf + 8),
        .count = wire_load_u32(buf + 12),
    };
    if (!dp_state_valid(&s)) {
        *why = "data pipe state that does not add up";
        return -1;
    }
    *out = s;
    return 0;
}

int dp_ring_fd_check(int fd, uint32_t capacity, bool producer, const char **why)
{
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0) {
        *why = "data pipe ring that is not a memfd";
        return -1;
    }
    if (!(seals & F_SEAL_SHRINK)) {
        *why = "data pipe ring that can shrink";
        return -1;
    }
    if (producer && (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE))) {
        *why = "data pipe ring the producer cannot write";
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size != (off_t)capacity) {
        *why = "data pipe ring of the wrong size";
        return -1;
    }
    /*
     * The access mode belongs to the open file description, not the memfd:
     * a consumer's is O_RDONLY, so that whoever holds it (this process or
     * one it forwards the consumer to) can neither write(2) the ring nor
     * map it writable. A consumer that arrives with more is refused rather
     * than trusted to map read-only: it would forward the writable fd on.
     */
    int fl = fcntl(fd, F_GETFL);
    int acc = fl < 0 ? -1 : fl & O_ACCMODE;
    if (producer && acc != O_RDWR) {
        *why = "data pipe ring the producer cannot write";
        return -1;
    }
    if (!producer && acc != O_RDONLY) {
        *why = "data pipe ring the consumer could write";
        return -1;
    }
    return 0;
}
