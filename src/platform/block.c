#include "platform/block.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

/* In front of every block: its usable size. 16 bytes keep malloc's alignment. */
typedef struct block_header {
    size_t size;
    size_t unused;
} block_header;

_Static_assert(sizeof(block_header) == 16, "the header keeps 16-byte alignment");

/*
 * The blocks this thread freed last and kept, the latest first; NULL where
 * there is none. A kept block is poisoned for ASan: a use after free of one
 * is reported as with any freed memory.
 */
static _Thread_local block_header *tls_kept[PLAT_BLOCK_KEPT];

/* Whether this thread's key value is set, so that its destructor will run. */
static _Thread_local bool tls_registered;

static pthread_key_t kept_key;
static pthread_once_t kept_key_once = PTHREAD_ONCE_INIT;
static int kept_key_made; /* set once by make_kept_key */

static void *user_of(block_header *h)
{
    return h + 1;
}

static block_header *header_of(void *p)
{
    return (block_header *)p - 1;
}

#if defined(__SANITIZE_ADDRESS__)
#define BLOCK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BLOCK_ASAN 1
#endif
#endif

#ifdef BLOCK_ASAN
#include <sanitizer/asan_interface.h>
static void poison(block_header *h)
{
    ASAN_POISON_MEMORY_REGION(user_of(h), h->size);
}
static void unpoison(block_header *h)
{
    ASAN_UNPOISON_MEMORY_REGION(user_of(h), h->size);
}
#else
static void poison(block_header *h)
{
    (void)h;
}
static void unpoison(block_header *h)
{
    (void)h;
}
#endif

static void free_block(block_header *h)
{
    if (h) {
        unpoison(h);
        free(h);
    }
}

/*
 * At thread exit (the key's destructor): the kept blocks go back to the heap
 * and are no longer kept. A destructor of another key that runs after this
 * one may still free blocks: keeping one sets the key again, so glibc runs
 * this once more.
 */
static void free_kept(void *unused)
{
    (void)unused;
    tls_registered = false;
    for (int i = 0; i < PLAT_BLOCK_KEPT; i++) {
        free_block(tls_kept[i]);
        tls_kept[i] = NULL;
    }
}

static void make_kept_key(void)
{
    kept_key_made = pthread_key_create(&kept_key, free_kept) == 0;
}

void *plat_block_alloc(size_t size)
{
    /* A kept block if one fits without wasting more than half of itself. */
    for (int i = 0; i < PLAT_BLOCK_KEPT; i++) {
        block_header *h = tls_kept[i];
        if (h && h->size >= size && h->size / 2 <= size) {
            for (; i + 1 < PLAT_BLOCK_KEPT; i++)
                tls_kept[i] = tls_kept[i + 1];
            tls_kept[PLAT_BLOCK_KEPT - 1] = NULL;
            unpoison(h);
            return user_of(h);
        }
    }
    if (size > SIZE_MAX - sizeof(block_header))
        return NULL;
    block_header *h = malloc(sizeof(block_header) + size);
    if (!h)
        return NULL;
    h->size = size;
    return user_of(h);
}

size_t plat_block_size(const void *p)
{
    return ((const block_header *)p - 1)->size;
}

void *plat_block_realloc(void *p, size_t size)
{
    if (!p)
        return plat_block_alloc(size);
    if (size > SIZE_MAX - sizeof(block_header))
        return NULL;
    block_header *h = realloc(header_of(p), sizeof(block_header) + size);
    if (!h)
        return NULL;
    h->size = size;
    return user_of(h);
}

void plat_block_free(void *p)
{
    if (!p)
        return;
    block_header *h = header_of(p);
    if (h->size < PLAT_BLOCK_KEEP_MIN || h->size > PLAT_BLOCK_CACHE_MAX) {
        free(h);
        return;
    }
    if (!tls_registered) {
        pthread_once(&kept_key_once, make_kept_key);
        /* Without the key the blocks could not be freed at thread exit: not kept. */
        if (!kept_key_made || pthread_setspecific(kept_key, &tls_kept) != 0) {
            free(h);
            return;
        }
        tls_registered = true;
    }
    /* The latest is the likeliest to be asked for again; the oldest goes. */
    free_block(tls_kept[PLAT_BLOCK_KEPT - 1]);
    for (int i = PLAT_BLOCK_KEPT - 1; i > 0; i--)
        tls_kept[i] = tls_kept[i - 1];
    poison(h);
    tls_kept[0] = h;
}
