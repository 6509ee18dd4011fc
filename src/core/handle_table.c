#include "core/handle_table.h"

#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include "platform/lock.h"

/*
 * A slot's word: generation << 32 | pins << 2 | BUSY | LIVE.
 *
 * LIVE: the entry is in the table (added, not removed). BUSY: in transit.
 * Pins: lookups in progress; while there are any the slot is not retired.
 * The generation changes when the slot is retired, so a value names one
 * occupant only. A slot is retired (back on the free list, the table's
 * reference dropped) exactly once per occupant, by whoever sees it neither
 * LIVE nor pinned any more: the remover, or the last unpinner.
 */
#define W_LIVE 1u
#define W_BUSY 2u
#define W_PIN 4u
#define W_PINS 0xfffffffcu /* the pin count's bits */

struct core_table_slot {
    _Atomic uint64_t word;
    _Atomic(void *) obj;        /* the occupant; stable while LIVE or pinned */
    _Atomic uint32_t next_free; /* slot + 1 below it on the free list, while there */
};

/*
 * The free list is a lock-free stack of slots: its top is tag << 32 | slot
 * + 1 (0: empty). Every push and pop changes the tag, so a pop that read a
 * slot's next_free before another thread popped that slot, used it and
 * pushed it back (ABA) fails its compare-and-swap instead of corrupting the
 * list.
 */
#define TOP_TAG ((uint64_t)1 << 32)
#define TOP_TAGS (~(uint64_t)0 << 32)

static uint32_t gen_of(uint64_t word)
{
    return (uint32_t)(word >> 32);
}

static uint64_t make_value(uint32_t index, uint32_t gen)
{
    return ((uint64_t)gen << 32) | ((uint64_t)index + 1);
}

static core_table_slot *slot_at(core_table *t, uint32_t index)
{
    return &t->chunks[index / CORE_TABLE_CHUNK_SLOTS][index % CORE_TABLE_CHUNK_SLOTS];
}

/*
 * The slot a value's index names, or NULL if no such slot was ever handed
 * out. Lock-free: a slot's chunk is published before num_slots counts it.
 */
static core_table_slot *slot_of(core_table *t, uint64_t value)
{
    uint64_t low = value & 0xffffffffu;
    if (low == 0 || low > atomic_load_explicit(&t->num_slots, memory_order_acquire))
        return NULL;
    return slot_at(t, (uint32_t)(low - 1));
}

/* Why word does not let value's occupant be used, or OK. */
static MojoResult usable(uint64_t word, uint64_t value)
{
    if (gen_of(word) != (uint32_t)(value >> 32) || !(word & W_LIVE))
        return MOJO_RESULT_INVALID_ARGUMENT;
    if (word & W_BUSY)
        return MOJO_RESULT_BUSY;
    return MOJO_RESULT_OK;
}

/*
 * Puts a slot that is neither LIVE nor pinned back on the free list under a
 * new generation, then drops the table's reference (it may free the object,
 * which may call back into the table).
 */
static void retire(core_table *t, core_table_slot *s, uint64_t value)
{
    void *obj = atomic_load_explicit(&s->obj, memory_order_relaxed);
    uint64_t word = atomic_load_explicit(&s->word, memory_order_relaxed);
    assert((word & (W_LIVE | W_PINS)) == 0);
    uint32_t gen = gen_of(word) == UINT32_MAX ? 1 : gen_of(word) + 1;
    atomic_store_explicit(&s->word, (uint64_t)gen << 32, memory_order_relaxed);
    atomic_store_explicit(&s->obj, NULL, memory_order_release); /* see core_table_peek */
    uint32_t index1 = (uint32_t)(value & 0xffffffffu);
    uint64_t top = atomic_load_explicit(&t->free_top, memory_order_relaxed);
    do {
        atomic_store_explicit(&s->next_free, (uint32_t)top, memory_order_relaxed);
    } while (!atomic_compare_exchange_weak_explicit(&t->free_top, &top,
                                                    ((top & TOP_TAGS) + TOP_TAG) | index1,
                                                    memory_order_release, memory_order_relaxed));
    if (t->release)
        t->release(obj);
}

/* Takes a slot off the free list: its index + 1, or 0 if the list is empty. */
static uint32_t pop_free(core_table *t)
{
    uint64_t top = atomic_load_explicit(&t->free_top, memory_order_acquire);
    uint64_t next;
    do {
        uint32_t index1 = (uint32_t)top;
        if (index1 == 0)
            return 0;
        uint32_t below =
            atomic_load_explicit(&slot_at(t, index1 - 1)->next_free, memory_order_relaxed);
        next = ((top & TOP_TAGS) + TOP_TAG) | below;
    } while (!atomic_compare_exchange_weak_explicit(&t->free_top, &top, next, memory_order_acquire,
                                                    memory_order_acquire));
    return (uint32_t)top;
}

/*
 * Pins value's slot if its word passes check (usable, or for shutdown any
 * live word), with extra bits set in the same step. OK, or why not.
 */
static MojoResult pin_slot(core_table_slot *s, uint64_t value, bool ignore_busy, uint64_t extra)
{
    uint64_t word = atomic_load_explicit(&s->word, memory_order_relaxed);
    do {
        MojoResult rv = usable(ignore_busy ? word & ~(uint64_t)W_BUSY : word, value);
        if (rv != MOJO_RESULT_OK)
            return rv;
        if ((word & W_PINS) == W_PINS)
            return MOJO_RESULT_RESOURCE_EXHAUSTED; /* 2^30 lookups at once: cannot happen */
    } while (!atomic_compare_exchange_weak_explicit(&s->word, &word, (word + W_PIN) | extra,
                                                    memory_order_acquire, memory_order_relaxed));
    return MOJO_RESULT_OK;
}

static void unpin_slot(core_table *t, core_table_slot *s, uint64_t value)
{
    uint64_t was = atomic_fetch_sub_explicit(&s->word, W_PIN, memory_order_acq_rel);
    assert(was & W_PINS);
    if ((was & (W_PINS | W_LIVE)) == W_PIN)
        retire(t, s, value); /* the last pin of a removed entry */
}

/*
 * Clears LIVE (and BUSY) on value's slot if its word passes the checks;
 * retires the slot at once if nobody has it pinned. OK, or why not. *obj
 * (if asked for) is the occupant as of the change.
 */
static MojoResult unpublish(core_table *t, core_table_slot *s, uint64_t value, bool want_busy,
                            bool ignore_busy, void **obj)
{
    uint64_t word = atomic_load_explicit(&s->word, memory_order_relaxed);
    uint64_t next;
    do {
        if (gen_of(word) != (uint32_t)(value >> 32) || !(word & W_LIVE))
            return MOJO_RESULT_INVALID_ARGUMENT;
        if (!ignore_busy && !!(word & W_BUSY) != want_busy)
            return want_busy ? MOJO_RESULT_INVALID_ARGUMENT : MOJO_RESULT_BUSY;
        next = word & ~(uint64_t)(W_LIVE | W_BUSY);
    } while (!atomic_compare_exchange_weak_explicit(&s->word, &word, next, memory_order_acq_rel,
                                                    memory_order_relaxed));
    if (obj)
        *obj = atomic_load_explicit(&s->obj, memory_order_relaxed);
    if ((next & W_PINS) == 0)
        retire(t, s, value);
    return MOJO_RESULT_OK;
}

int core_table_init(core_table *t, uint32_t max_slots, void (*acquire)(void *obj),
                    void (*release)(void *obj))
{
    assert(!acquire == !release);
    uint32_t chunks = (max_slots + CORE_TABLE_CHUNK_SLOTS - 1) / CORE_TABLE_CHUNK_SLOTS;
    t->chunks = calloc(chunks ? chunks : 1, sizeof(*t->chunks));
    if (!t->chunks)
        return -1;
    plat_mutex_init(&t->lock);
    t->max_slots = chunks * CORE_TABLE_CHUNK_SLOTS;
    atomic_init(&t->num_slots, 0);
    atomic_init(&t->free_top, 0);
    t->acquire = acquire;
    t->release = release;
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

/*
 * A slot never used before, for an add that found the free list empty: the
 * table grows by one, under the lock. Its index + 1, or 0 if the table is
 * full (and no slot was freed meanwhile) or out of memory.
 */
static uint32_t grow(core_table *t)
{
    plat_mutex_lock(&t->lock);
    uint32_t num = atomic_load_explicit(&t->num_slots, memory_order_relaxed);
    if (num == t->max_slots) {
        plat_mutex_unlock(&t->lock);
        return pop_free(t);
    }
    core_table_slot **chunk = &t->chunks[num / CORE_TABLE_CHUNK_SLOTS];
    if (!*chunk) {
        *chunk = calloc(CORE_TABLE_CHUNK_SLOTS, sizeof(**chunk));
        if (!*chunk) {
            plat_mutex_unlock(&t->lock);
            return 0;
        }
        for (uint32_t i = 0; i < CORE_TABLE_CHUNK_SLOTS; i++)
            atomic_init(&(*chunk)[i].word, (uint64_t)1 << 32);
    }
    atomic_store_explicit(&t->num_slots, num + 1, memory_order_release);
    plat_mutex_unlock(&t->lock);
    return num + 1;
}

MojoResult core_table_add(core_table *t, void *obj, uint64_t *value)
{
    uint32_t index1 = pop_free(t);
    if (index1 == 0 && (index1 = grow(t)) == 0)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    core_table_slot *s = slot_at(t, index1 - 1);
    uint32_t gen = gen_of(atomic_load_explicit(&s->word, memory_order_relaxed));
    atomic_store_explicit(&s->obj, obj, memory_order_release); /* see core_table_peek */
    /* Publishes obj to lock-free lookups. */
    atomic_store_explicit(&s->word, ((uint64_t)gen << 32) | W_LIVE, memory_order_release);
    *value = make_value(index1 - 1, gen);
    return MOJO_RESULT_OK;
}

MojoResult core_table_pin(core_table *t, uint64_t value, void **obj)
{
    assert(t->acquire);
    core_table_slot *s = slot_of(t, value);
    if (!s)
        return MOJO_RESULT_INVALID_ARGUMENT;
    MojoResult rv = pin_slot(s, value, false, 0);
    if (rv == MOJO_RESULT_OK)
        *obj = atomic_load_explicit(&s->obj, memory_order_relaxed);
    return rv;
}

void core_table_unpin(core_table *t, uint64_t value)
{
    core_table_slot *s = slot_of(t, value);
    assert(s);
    unpin_slot(t, s, value);
}

MojoResult core_table_peek(core_table *t, uint64_t value, void **obj)
{
    assert(!t->acquire);
    core_table_slot *s = slot_of(t, value);
    if (!s)
        return MOJO_RESULT_INVALID_ARGUMENT;
    uint64_t word = atomic_load_explicit(&s->word, memory_order_acquire);
    MojoResult rv = usable(word, value);
    if (rv != MOJO_RESULT_OK)
        return rv;
    /*
     * Nothing stops another thread from retiring the slot and reusing it
     * between the two loads (a stale value used while its message is being
     * destroyed), so check the word again, as a seqlock reader does: obj is
     * stored (release) after every change of the word that goes with it, so
     * an obj that is not the occupant's shows as a changed word.
     */
    void *o = atomic_load_explicit(&s->obj, memory_order_acquire);
    if (atomic_load_explicit(&s->word, memory_order_relaxed) != word)
        return MOJO_RESULT_INVALID_ARGUMENT;
    *obj = o;
    return MOJO_RESULT_OK;
}

/* Removes value's entry, busy or not as asked, handing the caller a reference. */
static MojoResult remove_entry(core_table *t, uint64_t value, bool ignore_busy, void **obj)
{
    core_table_slot *s = slot_of(t, value);
    if (!s)
        return MOJO_RESULT_INVALID_ARGUMENT;
    if (!t->acquire) {
        /* Nobody pins: the entry's one owner is removing it. */
        return unpublish(t, s, value, false, ignore_busy, obj);
    }
    /*
     * The table's reference is dropped by whoever lets go of the slot last,
     * which may be another thread the moment LIVE is cleared; so the caller's
     * reference is taken first, under a pin of our own.
     */
    MojoResult rv = pin_slot(s, value, ignore_busy, 0);
    if (rv != MOJO_RESULT_OK)
        return rv;
    void *o = atomic_load_explicit(&s->obj, memory_order_relaxed);
    t->acquire(o);
    rv = unpublish(t, s, value, false, ignore_busy, NULL);
    unpin_slot(t, s, value);
    if (rv != MOJO_RESULT_OK) {
        t->release(o); /* another remover won, or the entry went into transit */
        return rv;
    }
    *obj = o;
    return MOJO_RESULT_OK;
}

MojoResult core_table_remove(core_table *t, uint64_t value, void **obj)
{
    return remove_entry(t, value, false, obj);
}

/* Clears BUSY on value's slot if it is still that occupant's and busy. */
static void cancel_one(core_table *t, uint64_t value)
{
    core_table_slot *s = slot_of(t, value);
    if (!s)
        return;
    uint64_t word = atomic_load_explicit(&s->word, memory_order_relaxed);
    do {
        if (gen_of(word) != (uint32_t)(value >> 32) ||
            (word & (W_LIVE | W_BUSY)) != (W_LIVE | W_BUSY))
            return;
    } while (!atomic_compare_exchange_weak_explicit(&s->word, &word, word & ~(uint64_t)W_BUSY,
                                                    memory_order_release, memory_order_relaxed));
}

MojoResult core_table_begin_transit(core_table *t, const uint64_t *values, uint32_t n,
                                    MojoResult (*check)(void *obj), void **objs)
{
    assert(t->acquire);
    MojoResult rv = MOJO_RESULT_OK;
    uint32_t marked = 0;
    /*
     * In order, each entry is marked busy and pinned in one step (no one
     * else can take it now) and then vetted; the first failure decides.
     */
    for (; marked < n; marked++) {
        core_table_slot *s = slot_of(t, values[marked]);
        rv = s ? pin_slot(s, values[marked], false, W_BUSY) : MOJO_RESULT_INVALID_ARGUMENT;
        if (rv != MOJO_RESULT_OK)
            break;
        objs[marked] = atomic_load_explicit(&s->obj, memory_order_relaxed);
        if (check && (rv = check(objs[marked])) != MOJO_RESULT_OK) {
            marked++; /* this one is marked too: undone below */
            break;
        }
    }
    for (uint32_t i = 0; i < marked; i++) {
        if (rv == MOJO_RESULT_OK)
            t->acquire(objs[i]);
        else
            cancel_one(t, values[i]);
        core_table_unpin(t, values[i]);
    }
    return rv;
}

void core_table_complete_transit(core_table *t, const uint64_t *values, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        core_table_slot *s = slot_of(t, values[i]);
        if (s)
            (void)unpublish(t, s, values[i], true, false,
                            NULL); /* gone meanwhile (shutdown): nothing */
    }
}

void core_table_cancel_transit(core_table *t, const uint64_t *values, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        cancel_one(t, values[i]);
}

size_t core_table_count(core_table *t)
{
    size_t n = 0;
    uint32_t num = atomic_load_explicit(&t->num_slots, memory_order_acquire);
    for (uint32_t i = 0; i < num; i++)
        n += atomic_load_explicit(&slot_at(t, i)->word, memory_order_relaxed) & W_LIVE;
    return n;
}

int core_table_take_any(core_table *t, uint64_t *value, void **obj)
{
    for (;;) {
        uint64_t found = 0;
        uint32_t num = atomic_load_explicit(&t->num_slots, memory_order_acquire);
        for (uint32_t i = 0; i < num && !found; i++) {
            uint64_t word = atomic_load_explicit(&slot_at(t, i)->word, memory_order_acquire);
            if (word & W_LIVE)
                found = make_value(i, gen_of(word));
        }
        if (!found)
            return 0;
        if (remove_entry(t, found, true, obj) == MOJO_RESULT_OK) {
            *value = found;
            return 1;
        }
        /* Removed by someone else meanwhile: look again. */
    }
}
