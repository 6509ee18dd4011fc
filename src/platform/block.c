#include "platform/block.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

/* In front of every block: its usable size. 16 bytes keep malloc's alignment. */
typedef struct block_header {
    size_t size;
    size_t unused;
} block_header;

_Static_assert(sizeof(block_header) == 16, "the header keeps 16-byte alignment");

/* The block this thread freed last and kept, or NULL. */
static _Thread_local block_header *tls_kept;

static pthread_key_t kept_key;
static pthread_once_t kept_key_once = PTHREAD_ONCE_INIT;
static int kept_key_made; /* set once by make_kept_key */

/*
 * At thread exit (the key's destructor): the kept block goes back to the
 * heap, and is no longer kept: a destructor of another key that runs after
 * this one may still free or ask for blocks.
 */
static void free_kept(void *block)
{
    if (tls_kept == block)
        tls_kept = NULL;
    free(block);
}

static void make_kept_key(void)
{
    kept_key_made = pthread_key_create(&kept_key, free_kept) == 0;
}

static void *user_of(block_header *h)
{
    return h + 1;
}

static block_header *header_of(void *p)
{
    return (block_header *)p - 1;
}

void *plat_block_alloc(size_t size)
{
    block_header *h = tls_kept;
    /* The kept block if it fits without wasting more than half of itself. */
    if (h && h->size >= size && h->size / 2 <= size) {
        tls_kept = NULL;
        pthread_setspecific(kept_key, NULL);
        return user_of(h);
    }
    if (size > SIZE_MAX - sizeof(block_header))
        return NULL;
    h = malloc(sizeof(block_header) + size);
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
    if (h->size > PLAT_BLOCK_CACHE_MAX) {
        free(h);
        return;
    }
    pthread_once(&kept_key_once, make_kept_key);
    /* Without the key the block could not be freed at thread exit: not kept. */
    if (!kept_key_made || pthread_setspecific(kept_key, h) != 0) {
        free(h);
        return;
    }
    /* The latest is the likeliest to be asked for again; the one before goes. */
    free(tls_kept);
    tls_kept = h;
}
