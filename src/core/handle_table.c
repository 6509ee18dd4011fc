#include "core/handle_table.h"

#include <stdbool.h>
#include <stdlib.h>
#include "platform/lock.h"

struct core_table_slot {
    void *obj;          /* NULL when free */
    uint32_t gen;       /* bumped every time the slot is freed; never 0 */
    uint32_t busy;      /* in transit */
    uint32_t next_free; /* slot + 1, while free */
};

static uint64_t make_value(uint32_t index, uint32_t gen)
{
    return ((uint64_t)gen << 32) | ((uint64_t)index + 1);
}

static core_table_slot *slot_at(core_table *t, uint32_t index)
{
    return &t->chunks[index / CORE_TABLE_CHUNK_SLOTS][index % CORE_TABLE_CHUNK_SLOTS];
}

/*
 * The slot a value names if it is live, else NULL. Lock held. Inline: it is
 * most of what a lookup does, and every API call makes one or two.
 */
static inline core_table_slot *lookup(core_table *t, uint64_t value)
{
    uint64_t low = value & 0xffffffffu;
    uint32_t gen = (uint32_t)(value >> 32);
    if (low == 0 || low > t->num_slots)
        return NULL;
    core_table_slot *s = slot_at(t, (uint32_t)(low - 1));
    return s->obj && s->gen == gen ? s : NULL;
}

static void free_slot(core_table *t, uint64_t value, core_table_slot *s)
{
    s->obj = NULL;
    s->busy = 0;
    s->gen = s->gen == UINT32_MAX ? 1 : s->gen + 1;
    s->next_free = t->free_head;
    t->free_head = (uint32_t)(value & 0xffffffffu);
    t->live--;
}

int core_table_init(core_table *t, uint32_t max_slots, void (*acquire)(void *obj))
{
    uint32_t chunks = (max_slots + CORE_TABLE_CHUNK_SLOTS - 1) / CORE_TABLE_CHUNK_SLOTS;
    t->chunks = calloc(chunks ? chunks : 1, sizeof(*t->chunks));
    if (!t->chunks)
        return -1;
    plat_mutex_init(&t->lock);
    t->max_slots = chunks * CORE_TABLE_CHUNK_SLOTS;
    t->num_slots = 0;
    t->free_head = 0;
    t->live = 0;
    t->acquire = acquire;
    return 0;
}

void core_table_destroy(core_table *t)
{
    if (!t->chunks)
        return;
    for (uint32_t i = 0; i < t->max_slots / CORE_TABLE_CHUNK_SLOTS; i++)
        free(t->chunks[i]);
    free(t->chunks);
    t->chunks = NULL;
    plat_mutex_destroy(&t->lock);
}

MojoResult core_table_add(core_table *t, void *obj, uint64_t *value)
{
    plat_mutex_lock(&t->lock);
    uint32_t index;
    if (t->free_head) {
        index = t->free_head - 1;
        t->free_head = slot_at(t, index)->next_free;
    } else {
        if (t->num_slots == t->max_slots) {
            plat_mutex_unlock(&t->lock);
            return MOJO_RESULT_RESOURCE_EXHAUSTED;
        }
        index = t->num_slots;
        core_table_slot **chunk = &t->chunks[index / CORE_TABLE_CHUNK_SLOTS];
        if (!*chunk) {
            *chunk = calloc(CORE_TABLE_CHUNK_SLOTS, sizeof(**chunk));
            if (!*chunk) {
                plat_mutex_unlock(&t->lock);
                return MOJO_RESULT_RESOURCE_EXHAUSTED;
            }
            for (uint32_t i = 0; i < CORE_TABLE_CHUNK_SLOTS; i++)
                (*chunk)[i].gen = 1;
        }
        t->num_slots++;
    }
    core_table_slot *s = slot_at(t, index);
    s->obj = obj;
    s->busy = 0;
    t->live++;
    *value = make_value(index, s->gen);
    plat_mutex_unlock(&t->lock);
    return MOJO_RESULT_OK;
}

MojoResult core_table_get(core_table *t, uint64_t value, void **obj)
{
    MojoResult rv = MOJO_RESULT_OK;
    plat_mutex_lock(&t->lock);
    core_table_slot *s = lookup(t, value);
    if (!s) {
        rv = MOJO_RESULT_INVALID_ARGUMENT;
    } else if (s->busy) {
        rv = MOJO_RESULT_BUSY;
    } else {
        if (t->acquire)
            t->acquire(s->obj);
        *obj = s->obj;
    }
    plat_mutex_unlock(&t->lock);
    return rv;
}

MojoResult core_table_remove(core_table *t, uint64_t value, void **obj)
{
    MojoResult rv = MOJO_RESULT_OK;
    plat_mutex_lock(&t->lock);
    core_table_slot *s = lookup(t, value);
    if (!s) {
        rv = MOJO_RESULT_INVALID_ARGUMENT;
    } else if (s->busy) {
        rv = MOJO_RESULT_BUSY;
    } else {
        *obj = s->obj;
        free_slot(t, value, s);
    }
    plat_mutex_unlock(&t->lock);
    return rv;
}

MojoResult core_table_begin_transit(core_table *t, const uint64_t *values, uint32_t n,
                                    MojoResult (*check)(void *obj), void **objs)
{
    MojoResult rv = MOJO_RESULT_OK;
    uint32_t marked = 0;
    plat_mutex_lock(&t->lock);
    for (; marked < n; marked++) {
        core_table_slot *s = lookup(t, values[marked]);
        if (!s) {
            rv = MOJO_RESULT_INVALID_ARGUMENT;
            break;
        }
        if (s->busy) {
            rv = MOJO_RESULT_BUSY;
            break;
        }
        if (check && (rv = check(s->obj)) != MOJO_RESULT_OK)
            break;
        s->busy = 1;
    }
    if (rv != MOJO_RESULT_OK) {
        for (uint32_t i = 0; i < marked; i++)
            lookup(t, values[i])->busy = 0;
    } else {
        for (uint32_t i = 0; i < n; i++) {
            objs[i] = lookup(t, values[i])->obj;
            if (t->acquire)
                t->acquire(objs[i]);
        }
    }
    plat_mutex_unlock(&t->lock);
    return rv;
}

void core_table_complete_transit(core_table *t, const uint64_t *values, uint32_t n,
                                 void (*release)(void *obj))
{
    /*
     * Releasing may free an object, which must never happen under the table
     * lock; so work in batches small enough for the stack.
     */
    for (uint32_t done = 0; done < n;) {
        void *dropped[16];
        uint32_t ndropped = 0;
        plat_mutex_lock(&t->lock);
        for (; done < n && ndropped < 16; done++) {
            core_table_slot *s = lookup(t, values[done]);
            if (s) {
                dropped[ndropped++] = s->obj;
                free_slot(t, values[done], s);
            }
        }
        plat_mutex_unlock(&t->lock);
        for (uint32_t i = 0; i < ndropped; i++)
            release(dropped[i]);
    }
}

void core_table_cancel_transit(core_table *t, const uint64_t *values, uint32_t n)
{
    plat_mutex_lock(&t->lock);
    for (uint32_t i = 0; i < n; i++) {
        core_table_slot *s = lookup(t, values[i]);
        if (s)
            s->busy = 0;
    }
    plat_mutex_unlock(&t->lock);
}

size_t core_table_count(core_table *t)
{
    plat_mutex_lock(&t->lock);
    size_t n = t->live;
    plat_mutex_unlock(&t->lock);
    return n;
}

int core_table_take_any(core_table *t, uint64_t *value, void **obj)
{
    int found = 0;
    plat_mutex_lock(&t->lock);
    for (uint32_t i = 0; i < t->num_slots && !found; i++) {
        core_table_slot *s = slot_at(t, i);
        if (s->obj) {
            *value = make_value(i, s->gen);
            *obj = s->obj;
            free_slot(t, *value, s);
            found = 1;
        }
    }
    plat_mutex_unlock(&t->lock);
    return found;
}
