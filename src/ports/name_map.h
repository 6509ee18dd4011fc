/*
 * A hash map from 128-bit names to pointers: the node's port map and the two
 * levels of its peer map. Open addressing with linear probing and
 * backward-shift deletion (no tombstones), keyed with a per-map secret so a
 * peer that chooses names cannot aim them at one bucket.
 *
 * Not thread-safe: the node lock guards every map.
 */
#ifndef CMOJO_PORTS_NAME_MAP_H_
#define CMOJO_PORTS_NAME_MAP_H_

#include <stddef.h>
#include <stdint.h>

#include "ports/common.h"

typedef struct name_map_slot {
    ports_name key;
    void *value; /* NULL marks an empty slot */
} name_map_slot;

typedef struct name_map {
    name_map_slot *slots;
    size_t cap; /* 0 or a power of two */
    size_t count;
    uint64_t k0, k1;
} name_map;

void name_map_init(name_map *m, uint64_t k0, uint64_t k1);
void name_map_free(name_map *m); /* values are the caller's */

void *name_map_get(const name_map *m, const ports_name *key);

/* Inserts; value must not be NULL. -1 on ENOMEM, 1 if key exists (no change). */
int name_map_put(name_map *m, const ports_name *key, void *value);

/* Removes and returns the value, or NULL if absent. */
void *name_map_remove(name_map *m, const ports_name *key);

/*
 * Iteration: for (size_t i = 0; i < m->cap; i++) if (m->slots[i].value) ...
 * The map must not change during it.
 */

#endif /* CMOJO_PORTS_NAME_MAP_H_ */
