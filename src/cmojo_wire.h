/*
 * Little-endian field access for every wire format in cmojo (ports events,
 * channel frames, node messages, message envelopes). Integers are assembled
 * byte by byte, never loaded through a cast pointer, so neither alignment
 * nor host byte order matters to a parser.
 */
#ifndef CMOJO_WIRE_H_
#define CMOJO_WIRE_H_

#include <stdint.h>

#include "ports/common.h"

static inline uint16_t wire_load_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t wire_load_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t wire_load_u64(const uint8_t *p)
{
    return (uint64_t)wire_load_u32(p) | (uint64_t)wire_load_u32(p + 4) << 32;
}

static inline void wire_store_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void wire_store_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline void wire_store_u64(uint8_t *p, uint64_t v)
{
    wire_store_u32(p, (uint32_t)v);
    wire_store_u32(p + 4, (uint32_t)(v >> 32));
}

static inline ports_name wire_load_name(const uint8_t *p)
{
    ports_name n = {wire_load_u64(p), wire_load_u64(p + 8)};
    return n;
}

static inline void wire_store_name(uint8_t *p, const ports_name *n)
{
    wire_store_u64(p, n->v1);
    wire_store_u64(p + 8, n->v2);
}

/* n rounded up to a multiple of 8 (n far below SIZE_MAX in every caller). */
static inline uint64_t wire_align8(uint64_t n)
{
    return (n + 7u) & ~(uint64_t)7u;
}

#endif /* CMOJO_WIRE_H_ */
