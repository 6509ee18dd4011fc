/*
 * Zeroed allocation for objects made and freed once per message or wait.
 *
 * glibc's calloc never takes a block from the per-thread cache (tcache)
 * that malloc and free share: free puts the block there, the next calloc
 * of the same size passes it by and goes to the arena (a lock and the bins)
 * instead, and once the cache is full every free goes there too. malloc
 * plus memset stays on the cached path; for the few hundred bytes these
 * objects take, the memset is what calloc would have done anyway.
 */
#ifndef CMOJO_PLATFORM_MEM_H_
#define CMOJO_PLATFORM_MEM_H_

#include <stdlib.h>
#include <string.h>

/* size bytes, zeroed, or NULL. */
static inline void *plat_zalloc(size_t size)
{
    void *p = malloc(size);
    /*
     * gcc turns malloc followed by a zeroing memset back into calloc; the
     * empty asm hides where p came from, so the two stay apart.
     */
    __asm__("" : "+r"(p));
    if (p)
        memset(p, 0, size);
    return p;
}

#endif /* CMOJO_PLATFORM_MEM_H_ */
