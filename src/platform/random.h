/*
 * Platform contract: cryptographically strong random bytes.
 *
 * Used for node and port names, which must be unguessable: a peer that could
 * predict a port name could inject events into routes it does not own.
 */
#ifndef CMOJO_PLATFORM_RANDOM_H_
#define CMOJO_PLATFORM_RANDOM_H_

#include <stddef.h>
#include <sys/types.h>

/*
 * Fills |buf| with |len| bytes from the kernel's CSPRNG (getrandom(2), no
 * flags).
 *
 * Returns 0 on success, or a negative errno value on failure (e.g. -ENOSYS on
 * a kernel without getrandom). Interrupted calls (EINTR) and short reads are
 * retried until all |len| bytes are filled, so success always means the whole
 * buffer. On failure |buf| may have been partly written and must not be used.
 *
 * |len| == 0 succeeds without a system call; |buf| may then be NULL.
 *
 * Blocks only during early boot, until the kernel's entropy pool is first
 * initialised; after that it never blocks.
 *
 * Threads: any thread, concurrently. Uses no file descriptors and no locks.
 */
int plat_random_bytes(void *buf, size_t len);

/*
 * The getrandom(2) entry point plat_random_bytes() calls. Tests replace it to
 * force EINTR, short reads and failures; nothing else may change it. Not
 * thread-safe to change while plat_random_bytes() may be running.
 */
extern ssize_t (*plat_random_getrandom)(void *buf, size_t len, unsigned int flags);

#endif /* CMOJO_PLATFORM_RANDOM_H_ */
