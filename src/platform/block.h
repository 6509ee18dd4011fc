/*
 * Large heap blocks that change hands between threads and layers: a
 * channel's receive buffer, which a message may keep as its own storage
 * (channel.h, on_frame) and free later, on whichever thread reads it.
 *
 * Why not plain malloc/free: a reader that frees a kept buffer of ~70 KiB
 * and has the next one allocated right after, round trip after round trip,
 * makes glibc give the top of the heap back to the kernel on every free
 * (the freed block merges into a top beyond the trim threshold) and take it
 * back on the next allocation, page faults included: one per round trip in
 * bench_ipc's MojoWait case, 2 us of 30. So each thread keeps the last
 * PLAT_BLOCK_KEPT blocks it freed (of PLAT_BLOCK_KEEP_MIN to
 * PLAT_BLOCK_CACHE_MAX bytes; the oldest goes back to the heap) and hands one
 * out again for its next request of about that size: at least half of the
 * block. Two, because a thread that answers messages frees two kinds in turn:
 * the receive buffer a message kept and the bytes of a message it sent. That
 * also spares the heap's lock, which glibc takes for blocks over 1 KiB. A
 * thread's blocks go back to the heap when the thread exits.
 *
 * Blocks are 16-byte aligned, as malloc's.
 *
 * Threads: any; a block may be freed on another thread than it was made on.
 */
#ifndef CMOJO_PLATFORM_BLOCK_H_
#define CMOJO_PLATFORM_BLOCK_H_

#include <stddef.h>

/* The blocks a thread keeps for reuse: how many, the smallest, the largest. */
#define PLAT_BLOCK_KEPT 2
#define PLAT_BLOCK_KEEP_MIN 1024u
#define PLAT_BLOCK_CACHE_MAX (320u * 1024u)

/* At least size bytes (size > 0), or NULL. */
void *plat_block_alloc(size_t size);

/* The usable size of a block: what was asked for, or more (a kept block reused). */
size_t plat_block_size(const void *p);

/* Grows or shrinks a block, keeping its first min(old, new) bytes; NULL on ENOMEM (p kept). */
void *plat_block_realloc(void *p, size_t size);

/* Frees a block from plat_block_alloc or plat_block_realloc; NULL is fine. */
void plat_block_free(void *p);

#endif /* CMOJO_PLATFORM_BLOCK_H_ */
