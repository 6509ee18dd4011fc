/*
 * The parts of a data pipe that other processes can lie about, as pure
 * functions: the control message on the control port, the counts it
 * carries, and the serialised state of an end that travels.
 *
 * The ring buffer itself is memory both ends map, so a hostile peer can
 * write anything there at any time; nothing in it is ever trusted. Each end
 * keeps its offset and count privately (dp_state) and changes them only by
 * its own operations and by counts from its peer that pass these checks.
 *
 * Control message (exactly 8 bytes, no handles):
 *   u32 command (DP_CONTROL_DATA_WAS_WRITTEN to the consumer,
 *                DP_CONTROL_DATA_WAS_READ to the producer), u32 num_bytes.
 *
 * Serialised end (DP_STATE_SIZE bytes, little-endian):
 *   u32 element_num_bytes, u32 capacity_num_bytes,
 *   u32 offset (the producer's write offset / the consumer's read offset),
 *   u32 count  (the producer's free bytes / the consumer's readable bytes).
 * An end travels only between operations: every count it owed its peer
 * has been sent on the control port before its state is taken.
 */
#ifndef CMOJO_CORE_DATA_PIPE_WIRE_H_
#define CMOJO_CORE_DATA_PIPE_WIRE_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DP_CONTROL_SIZE 8u
#define DP_CONTROL_DATA_WAS_WRITTEN 1u
#define DP_CONTROL_DATA_WAS_READ 2u

#define DP_STATE_SIZE 16u

/* One end's private bookkeeping. */
typedef struct dp_state {
    uint32_t element_size;
    uint32_t capacity;
    uint32_t offset; /* where the next write (producer) or read (consumer) starts */
    uint32_t count;  /* producer: bytes free; consumer: bytes readable */
} dp_state;

/* Builds a control message into out. */
void dp_control_build(uint8_t out[DP_CONTROL_SIZE], uint32_t command, uint32_t num_bytes);

/*
 * Parses a control message that arrived with num_handles handles. Returns 0
 * and the fields, or -1 (wrong size, handles attached, unknown command).
 */
int dp_control_parse(const uint8_t *buf, size_t len, uint32_t num_handles, uint32_t *command,
                     uint32_t *num_bytes);

/*
 * Applies a count from the peer, or returns -1 and leaves s alone when it is
 * impossible: zero, not a whole number of elements, or more than the ring
 * can account for (a producer told of more reads than bytes it wrote; a
 * consumer told of more writes than free room). -1 means the peer lies.
 */
int dp_producer_apply_read(dp_state *s, uint32_t num_bytes);
int dp_consumer_apply_written(dp_state *s, uint32_t num_bytes);

/* Whether a state is self-consistent. */
bool dp_state_valid(const dp_state *s);

/* Serialises s (DP_STATE_SIZE bytes). */
void dp_state_write(const dp_state *s, uint8_t *out);

/*
 * Parses and validates a serialised end. Returns 0, or -1 with *why set.
 * The caller still checks the ring fd against capacity.
 */
int dp_state_read(const uint8_t *buf, size_t len, dp_state *out, const char **why);

/*
 * Checks a ring fd that arrived with a state: a memfd (it has seals) that
 * cannot shrink, exactly capacity bytes long, and opened O_RDWR and not
 * sealed against writing for a producer, opened O_RDONLY for a consumer.
 * Returns 0, or -1 with *why set.
 */
int dp_ring_fd_check(int fd, uint32_t capacity, bool producer, const char **why);

#endif /* CMOJO_CORE_DATA_PIPE_WIRE_H_ */
