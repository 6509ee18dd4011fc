/*
 * Data pipe streams for the multi-process tests (tests/node/test_data_pipe_*.c):
 * a byte stream whose every byte is a function of its position, a 64-bit
 * hash that does not depend on how the stream was cut into pieces, and the
 * two ends of a transfer that mix every way of moving bytes through a data
 * pipe (one-shot and two-phase, all-or-none or not, odd sizes).
 *
 * Position-addressed bytes make "exactly the stream" checkable anywhere:
 * whoever reads bytes [pos, pos + n) can compare them with what must be
 * there, so a byte lost, duplicated or reordered shows up at its position,
 * whichever process read it.
 *
 * Failures go through CMOJO_MP_CHECK (a cmocka failure in the test process,
 * _exit in a child). Every wait has the harness's deadline.
 */
#ifndef CMOJO_TEST_DP_STREAM_H_
#define CMOJO_TEST_DP_STREAM_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mojo/public/c/system/types.h"

/* Bytes [pos, pos + n) of stream `seed` into out. */
void dps_fill(uint64_t seed, uint64_t pos, void *out, size_t n);

/* Index of the first byte of buf[0..n) that differs from the stream at pos, or n. */
size_t dps_mismatch(uint64_t seed, uint64_t pos, const void *buf, size_t n);

/* A 64-bit hash of a byte sequence, fed in pieces of any size. */
typedef struct dps_hash {
    uint64_t lane[4];
    uint64_t len;
    uint8_t tail[32];
    unsigned tail_len;
} dps_hash;

void dps_hash_init(dps_hash *s);
void dps_hash_update(dps_hash *s, const void *data, size_t n);
uint64_t dps_hash_final(const dps_hash *s);

/* How one end moves its bytes. */
typedef struct dps_opts {
    uint64_t seed;         /* the stream */
    uint32_t element_size; /* the pipe's; every size used is a multiple */
    uint32_t max_chunk;    /* largest size asked for in one call (a multiple of element_size) */
    uint64_t rng;          /* picks operations and sizes; any value */
    dps_hash *hash;        /* if set, every byte moved is hashed in order */
    bool verify;           /* consumer: compare every byte read with the stream */
} dps_opts;

/*
 * Writes bytes [from, to) of the stream to `producer`, waiting while the
 * pipe is full. Fails if the consumer goes away first.
 */
void dps_produce(MojoHandle producer, dps_opts *o, uint64_t from, uint64_t to);

/*
 * Reads from `consumer` the stream positions starting at `from`, until
 * position `limit` or until the producer is gone and nothing is left
 * (FAILED_PRECONDITION). Returns the position reached.
 */
uint64_t dps_consume(MojoHandle consumer, dps_opts *o, uint64_t from, uint64_t limit);

/*
 * The volume a stream test moves: `full` bytes, or fewer in sanitizer
 * builds (which run the same code several times slower): 1/8 of it. The
 * environment variable CMOJO_DP_STREAM_MIB, when set, overrides both (in
 * MiB). Rounded down to a multiple of element_size.
 */
uint64_t dps_volume(uint64_t full, uint32_t element_size);

/* Bytes readable now (a QUERY read). */
uint32_t dps_readable(MojoHandle consumer);

/*
 * A consumer whose producer is gone and whose every byte was read: PEER_CLOSED,
 * neither READABLE nor able to become so, and both kinds of read say
 * FAILED_PRECONDITION.
 */
void dps_expect_drained_and_closed(MojoHandle consumer);

/*
 * The mapping that holds p, which must be a data pipe ring's (its memfd is
 * named cmojo-data-pipe), as /proc/self/maps has it: its bounds and its
 * permissions ("r--s" and the like).
 */
void dps_ring_mapping(const void *p, uintptr_t *lo, uintptr_t *hi, char perms[5]);

/* The fds of data pipe rings this process holds, into fds[0..cap); returns how many. */
size_t dps_ring_fds(int *fds, size_t cap);

#endif /* CMOJO_TEST_DP_STREAM_H_ */
