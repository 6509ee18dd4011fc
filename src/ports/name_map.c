#include "ports/name_map.h"

#include <stdlib.h>
#include <string.h>

/* Keep the table at most half full: probes stay short, deletion stays cheap. */
#define NAME_MAP_MIN_CAP 16u

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= UINT64_C(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x *= UINT64_C(0xc4ceb9fe1a85ec53);
    x ^= x >> 33;
    return x;
}

static size_t slot_of(const name_map *m, const ports_name *key)
{
    uint64_t h = mix64(key->v1 ^ m->k0) ^ mix64(key->v2 + m->k1);
    return (size_t)(h & (m->cap - 1));
}

void name_map_init(name_map *m, uint64_t k0, uint64_t k1)
{
    memset(m, 0, sizeof(*m));
    m->k0 = k0;
    m->k1 = k1;
}

void name_map_free(name_map *m)
{
    free(m->slots);
    m->slots = NULL;
    m->cap = 0;
    m->count = 0;
}

void *name_map_get(const name_map *m, const ports_name *key)
{
    if (m->count == 0)
        return NULL;
    for (size_t i = slot_of(m, key);; i = (i + 1) & (m->cap - 1)) {
        const name_map_slot *s = &m->slots[i];
        if (!s->value)
            return NULL;
        if (ports_name_eq(&s->key, key))
            return s->value;
    }
}

static int grow(name_map *m)
{
    size_t new_cap = m->cap ? m->cap * 2 : NAME_MAP_MIN_CAP;
    name_map_slot *slots = calloc(new_cap, sizeof(*slots));
    if (!slots)
        return -1;
    name_map_slot *old = m->slots;
    size_t old_cap = m->cap;
    m->slots = slots;
    m->cap = new_cap;
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i].value)
            continue;
        size_t j = slot_of(m, &old[i].key);
        while (m->slots[j].value)
            j = (j + 1) & (m->cap - 1);
        m->slots[j] = old[i];
    }
    free(old);
    return 0;
}

int name_map_put(name_map *m, const ports_name *key, void *value)
{
    if ((m->count + 1) * 2 > m->cap && grow(m) != 0)
        return -1;
    size_t i = slot_of(m, key);
    for (;; i = (i + 1) & (m->cap - 1)) {
        name_map_slot *s = &m->slots[i];
        if (!s->value)
            break;
        if (ports_name_eq(&s->key, key))
            return 1;
    }
    m->slots[i].key = *key;
    m->slots[i].value = value;
    m->count++;
    return 0;
}

void *name_map_remove(name_map *m, const ports_name *key)
{
    if (m->count == 0)
        return NULL;
    size_t mask = m->cap - 1;
    size_t i = slot_of(m, key);
    for (;; i = (i + 1) & mask) {
        if (!m->slots[i].value)
            return NULL;
        if (ports_name_eq(&m->slots[i].key, key))
            break;
    }
    void *value = m->slots[i].value;
    /*
     * Backward-shift: pull later members of the probe run into the hole when
     * their home slot does not lie cyclically in (hole, j].
     */
    size_t hole = i;
    for (size_t j = (i + 1) & mask; m->slots[j].value; j = (j + 1) & mask) {
        size_t home = slot_of(m, &m->slots[j].key);
        size_t dist_home = (j - home) & mask;
        size_t dist_hole = (j - hole) & mask;
        if (dist_home >= dist_hole) {
            m->slots[hole] = m->slots[j];
            hole = j;
        }
    }
    m->slots[hole].value = NULL;
    m->count--;
    return value;
}
