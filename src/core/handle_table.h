/*
 * A thread-safe table that turns integers handed to API users into objects.
 *
 * Values are never pointers: a value is (generation << 32 | slot + 1), so 0 is
 * never valid, a made-up value is refused, and a stale value (its object
 * closed, the slot reused) does not alias the new occupant. Both the handle
 * table (dispatchers) and the message table use this.
 *
 * An entry can be "busy" (a handle attached to a message that is not written
 * yet): lookups and removals of a busy entry fail with MOJO_RESULT_BUSY until
 * the transit completes (the entry is removed) or is cancelled.
 *
 * References (tables made with acquire/release callbacks, i.e. dispatchers):
 * the table owns one reference to each object it holds. Lookups never lock:
 * an entry is "pinned" by one compare-and-swap on its slot, and while any pin
 * is held the slot is not reused and the table's reference is not dropped, so
 * the object cannot be freed under the pinner even if another thread removes
 * the entry at once. A pin is the cheapest way to use an object for the span
 * of one call (core_table_pin/unpin: two atomic operations); to keep the
 * object longer, take a reference while it is pinned. Removing an entry
 * hands the caller a reference; the table's own is dropped by whoever lets go
 * of the slot last, the remover or the last pinner.
 *
 * Tables without callbacks (messages) are not referenced: their objects have
 * one owner, who looks them up with core_table_peek (no atomic write at all)
 * and is the only one to remove them. A made-up or stale value is still
 * refused cleanly.
 *
 * Free slots are kept on a lock-free stack; only a table that has none
 * free and grows takes the table lock.
 *
 * Threads: every function may be called from any thread.
 */
#ifndef CMOJO_CORE_HANDLE_TABLE_H_
#define CMOJO_CORE_HANDLE_TABLE_H_

#include <stddef.h>
#include <stdint.h>

#include "mojo/public/c/system/types.h"
#include "platform/lock.h"

typedef struct core_table_slot core_table_slot;

#define CORE_TABLE_CHUNK_SLOTS 4096u

typedef struct core_table {
    plat_mutex lock;          /* growing the table by a slot */
    core_table_slot **chunks; /* max_slots / CORE_TABLE_CHUNK_SLOTS pointers */
    uint32_t max_slots;
    _Atomic uint32_t num_slots; /* slots ever handed out; their chunks exist (release store) */
    _Atomic uint64_t free_top;  /* the free list (handle_table.c) */
    void (*acquire)(void *obj); /* both NULL: an unreferenced table */
    void (*release)(void *obj);
} core_table;

/*
 * max_slots is rounded up to a whole chunk. acquire and release are both set
 * (a referenced table) or both NULL. Returns 0 or -1 (ENOMEM).
 */
int core_table_init(core_table *t, uint32_t max_slots, void (*acquire)(void *obj),
                    void (*release)(void *obj));

/* Frees the table's memory; the objects still in it are not touched. */
void core_table_destroy(core_table *t);

/*
 * Adds obj (taking over the caller's reference). MOJO_RESULT_RESOURCE_EXHAUSTED
 * when full or out of memory.
 */
MojoResult core_table_add(core_table *t, void *obj, uint64_t *value);

/*
 * Referenced tables: looks value up and pins its slot; *obj stays valid
 * until core_table_unpin(t, value), which must follow exactly once.
 * INVALID_ARGUMENT, BUSY.
 */
MojoResult core_table_pin(core_table *t, uint64_t value, void **obj);
void core_table_unpin(core_table *t, uint64_t value);

/*
 * Unreferenced tables: the object value names, or INVALID_ARGUMENT/BUSY.
 * Nothing is written: the caller, as the object's owner, keeps it alive.
 */
MojoResult core_table_peek(core_table *t, uint64_t value, void **obj);

/* Removes value, handing its reference to *obj. INVALID_ARGUMENT, BUSY. */
MojoResult core_table_remove(core_table *t, uint64_t value, void **obj);

/*
 * Marks every value busy and acquires a reference to each object (objs[i]),
 * all or nothing. In order, each value is marked and its object vetted by
 * check(obj) (may be NULL; it runs with the entry pinned, no lock held); the
 * first failure decides the result: INVALID_ARGUMENT for a value that is not
 * live, BUSY for one already busy (or listed twice), or check's nonzero
 * MojoResult. Then the entries marked so far are unmarked; another thread
 * may have found one of them BUSY meanwhile, as it may while a transit that
 * succeeds is under way.
 */
MojoResult core_table_begin_transit(core_table *t, const uint64_t *values, uint32_t n,
                                    MojoResult (*check)(void *obj), void **objs);

/*
 * Ends a transit that succeeded: the entries are removed and the table's
 * references are dropped (the caller keeps the references begin_transit gave
 * it).
 */
void core_table_complete_transit(core_table *t, const uint64_t *values, uint32_t n);

/* Ends a transit that failed: the entries are usable again. */
void core_table_cancel_transit(core_table *t, const uint64_t *values, uint32_t n);

/* The entries in the table now (not those removed and still pinned). For tests. */
size_t core_table_count(core_table *t);

/*
 * Removes one entry, busy or not (shutdown), handing its reference to *obj.
 * Returns 0 when the table is empty.
 */
int core_table_take_any(core_table *t, uint64_t *value, void **obj);

#endif /* CMOJO_CORE_HANDLE_TABLE_H_ */
