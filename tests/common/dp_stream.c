/* Data pipe streams for the multi-process tests; see dp_stream.h. */
#include "dp_stream.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmojo/wait.h"
#include "mojo/public/c/system/core.h"
#include "mojo/public/c/system/data_pipe.h"
#include "mp.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DPS_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define DPS_SANITIZED 1
#endif
#endif

#define DEADLINE_US ((MojoDeadline)CMOJO_MP_IO_TIMEOUT_MS * 1000)

/* ------------------------------------------------------------- the stream */

/* Word i of a stream: splitmix64 of the index, so every word names its place. */
static inline uint64_t stream_word(uint64_t seed, uint64_t i)
{
    uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint8_t stream_byte(uint64_t seed, uint64_t pos)
{
    return (uint8_t)(stream_word(seed, pos >> 3) >> (8 * (pos & 7)));
}

/* v as its little-endian bytes' host value (the stream's bytes are little-endian words). */
static inline uint64_t le64(uint64_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return __builtin_bswap64(v);
#else
    return v;
#endif
}

void dps_fill(uint64_t seed, uint64_t pos, void *out, size_t n)
{
    uint8_t *p = out;

    while (n > 0 && (pos & 7) != 0) {
        *p++ = stream_byte(seed, pos++);
        n--;
    }
    for (; n >= 8; n -= 8, p += 8, pos += 8) {
        uint64_t v = le64(stream_word(seed, pos >> 3));
        memcpy(p, &v, 8);
    }
    while (n > 0) {
        *p++ = stream_byte(seed, pos++);
        n--;
    }
}

size_t dps_mismatch(uint64_t seed, uint64_t pos, const void *buf, size_t n)
{
    const uint8_t *b = buf;
    uint8_t want[4096];
    size_t done = 0;

    while (done < n) {
        size_t k = n - done < sizeof(want) ? n - done : sizeof(want);
        dps_fill(seed, pos + done, want, k);
        if (memcmp(want, b + done, k) != 0) {
            for (size_t i = 0; i < k; i++)
                if (want[i] != b[done + i])
                    return done + i;
        }
        done += k;
    }
    return n;
}

/* --------------------------------------------------------------- the hash */

static inline uint64_t rotl64(uint64_t x, int r)
{
    return x << r | x >> (64 - r);
}

/*
 * One word into a lane (xxHash64's round): a bijection of the word for any
 * lane value, so every byte and its order count.
 */
static inline uint64_t hash_word(uint64_t h, uint64_t w)
{
    h += w * 0xc2b2ae3d27d4eb4full;
    return rotl64(h, 31) * 0x9e3779b185ebca87ull;
}

static inline uint64_t load_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return le64(v);
}

/* Four independent lanes over 32-byte blocks, so the multiplies overlap. */
static inline void hash_block(uint64_t *lane, const uint8_t *p)
{
    for (int i = 0; i < 4; i++)
        lane[i] = hash_word(lane[i], load_le64(p + 8 * i));
}

void dps_hash_init(dps_hash *s)
{
    memset(s, 0, sizeof(*s));
    for (int i = 0; i < 4; i++)
        s->lane[i] = 0x243f6a8885a308d3ull * (uint64_t)(2 * i + 1);
}

void dps_hash_update(dps_hash *s, const void *data, size_t n)
{
    const uint8_t *p = data;

    s->len += n;
    if (s->tail_len > 0) {
        size_t k = sizeof(s->tail) - s->tail_len;
        if (k > n)
            k = n;
        memcpy(s->tail + s->tail_len, p, k);
        s->tail_len += (unsigned)k;
        p += k;
        n -= k;
        if (s->tail_len < sizeof(s->tail))
            return;
        hash_block(s->lane, s->tail);
        s->tail_len = 0;
    }
    for (; n >= 32; n -= 32, p += 32)
        hash_block(s->lane, p);
    memcpy(s->tail, p, n);
    s->tail_len = (unsigned)n;
}

uint64_t dps_hash_final(const dps_hash *s)
{
    uint8_t last[32] = {0};
    memcpy(last, s->tail, s->tail_len);
    uint64_t lane[4];
    memcpy(lane, s->lane, sizeof(lane));
    hash_block(lane, last);
    uint64_t h = s->len;
    for (int i = 0; i < 4; i++)
        h = hash_word(h, lane[i]);
    h = (h ^ (h >> 33)) * 0xff51afd7ed558ccdull;
    h = (h ^ (h >> 33)) * 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 33);
}

/* ------------------------------------------------------------ transfers */

static uint64_t next_rand(uint64_t *state)
{
    *state += 0x9e3779b97f4a7c15ull;
    return stream_word(0, *state);
}

/*
 * A size to ask for: a quarter of the time a few elements, else anything up
 * to max_chunk; never beyond `left` (a multiple of the element size).
 */
static uint32_t pick_size(dps_opts *o, uint64_t left)
{
    uint64_t r = next_rand(&o->rng);
    uint32_t max_elements = o->max_chunk / o->element_size;
    uint64_t elements = (r & 3) == 0 ? 1 + (r >> 8) % 7 : 1 + (r >> 8) % max_elements;
    uint64_t n = elements * o->element_size;
    return (uint32_t)(n < left ? n : left);
}

static void check_opts(const dps_opts *o)
{
    CMOJO_MP_CHECK(o->element_size > 0);
    CMOJO_MP_CHECK(o->max_chunk >= o->element_size && o->max_chunk % o->element_size == 0);
}

void dps_produce(MojoHandle producer, dps_opts *o, uint64_t from, uint64_t to)
{
    const uint32_t es = o->element_size;

    check_opts(o);
    CMOJO_MP_CHECK(from <= to && (to - from) % es == 0);
    uint8_t *tmp = malloc(o->max_chunk);
    CMOJO_MP_CHECK(tmp != NULL);
    uint64_t pos = from;
    while (pos < to) {
        uint32_t want = pick_size(o, to - pos);
        uint64_t op = next_rand(&o->rng) % 3;
        uint32_t n = 0;
        MojoResult r;
        if (op == 2) {
            /* Two-phase: the bytes go straight into the ring. */
            void *buf = NULL;
            uint32_t span = 0;
            r = MojoBeginWriteData(producer, NULL, &buf, &span);
            if (r == MOJO_RESULT_OK) {
                CMOJO_MP_CHECK(buf != NULL && span > 0 && span % es == 0);
                n = span < want ? span : want;
                dps_fill(o->seed, pos, buf, n);
                if (o->hash)
                    dps_hash_update(o->hash, buf, n);
                CMOJO_MP_CHECK_RESULT(MojoEndWriteData(producer, n, NULL), MOJO_RESULT_OK);
            }
        } else {
            struct MojoWriteDataOptions wo = {sizeof(wo),
                                              op == 1 ? MOJO_WRITE_DATA_FLAG_ALL_OR_NONE : 0};
            dps_fill(o->seed, pos, tmp, want);
            n = want;
            r = MojoWriteData(producer, tmp, &n, &wo);
            if (r == MOJO_RESULT_OUT_OF_RANGE) {
                /* Not room for all of it: take what fits. */
                CMOJO_MP_CHECK(op == 1);
                wo.flags = 0;
                n = want;
                r = MojoWriteData(producer, tmp, &n, &wo);
            } else if (r == MOJO_RESULT_OK && op == 1) {
                CMOJO_MP_CHECK_RESULT(n, want);
            }
            if (r == MOJO_RESULT_OK) {
                CMOJO_MP_CHECK(n > 0 && n <= want && n % es == 0);
                if (o->hash)
                    dps_hash_update(o->hash, tmp, n);
            }
        }
        if (r == MOJO_RESULT_OK) {
            pos += n;
            continue;
        }
        CMOJO_MP_CHECK_RESULT(r, MOJO_RESULT_SHOULD_WAIT);
        struct MojoHandleSignalsState st;
        CMOJO_MP_CHECK_RESULT(MojoWait(producer, MOJO_HANDLE_SIGNAL_WRITABLE, DEADLINE_US, &st),
                              MOJO_RESULT_OK);
    }
    free(tmp);
}

static void took(dps_opts *o, uint64_t pos, const void *buf, uint32_t n)
{
    if (o->verify) {
        size_t at = dps_mismatch(o->seed, pos, buf, n);
        if (at != n) {
            fprintf(stderr, "data pipe stream: byte at position %llu is wrong\n",
                    (unsigned long long)(pos + at));
            CMOJO_MP_CHECK(at == n);
        }
    }
    if (o->hash)
        dps_hash_update(o->hash, buf, n);
}

uint64_t dps_consume(MojoHandle consumer, dps_opts *o, uint64_t from, uint64_t limit)
{
    const uint32_t es = o->element_size;

    check_opts(o);
    uint8_t *tmp = malloc(o->max_chunk);
    CMOJO_MP_CHECK(tmp != NULL);
    uint64_t pos = from;
    while (pos < limit) {
        uint64_t left = limit - pos;
        left -= left % es; /* limit may be UINT64_MAX: "until the end" */
        CMOJO_MP_CHECK(left > 0);
        uint32_t want = pick_size(o, left);
        uint64_t op = next_rand(&o->rng) % 4;
        uint32_t n = 0;
        MojoResult r;
        if (op >= 2) {
            /* Two-phase: read in place from the ring. */
            const void *buf = NULL;
            uint32_t span = 0;
            r = MojoBeginReadData(consumer, NULL, &buf, &span);
            if (r == MOJO_RESULT_OK) {
                CMOJO_MP_CHECK(buf != NULL && span > 0 && span % es == 0);
                n = span < want ? span : want;
                took(o, pos, buf, n);
                CMOJO_MP_CHECK_RESULT(MojoEndReadData(consumer, n, NULL), MOJO_RESULT_OK);
            }
        } else {
            struct MojoReadDataOptions ro = {sizeof(ro),
                                             op == 1 ? MOJO_READ_DATA_FLAG_ALL_OR_NONE : 0};
            n = want;
            r = MojoReadData(consumer, &ro, tmp, &n);
            if (op == 1 &&
                (r == MOJO_RESULT_OUT_OF_RANGE || r == MOJO_RESULT_FAILED_PRECONDITION)) {
                /* Fewer bytes there than asked for (and maybe no more coming): take those. */
                ro.flags = 0;
                n = want;
                r = MojoReadData(consumer, &ro, tmp, &n);
            } else if (r == MOJO_RESULT_OK && op == 1) {
                CMOJO_MP_CHECK_RESULT(n, want);
            }
            if (r == MOJO_RESULT_OK) {
                CMOJO_MP_CHECK(n > 0 && n <= want && n % es == 0);
                took(o, pos, tmp, n);
            }
        }
        if (r == MOJO_RESULT_OK) {
            pos += n;
            continue;
        }
        if (r == MOJO_RESULT_FAILED_PRECONDITION)
            break; /* the producer is gone and everything it wrote was read */
        CMOJO_MP_CHECK_RESULT(r, MOJO_RESULT_SHOULD_WAIT);
        struct MojoHandleSignalsState st;
        MojoResult w = MojoWait(consumer, MOJO_HANDLE_SIGNAL_READABLE, DEADLINE_US, &st);
        CMOJO_MP_CHECK(w == MOJO_RESULT_OK || w == MOJO_RESULT_FAILED_PRECONDITION);
    }
    free(tmp);
    return pos;
}

uint64_t dps_volume(uint64_t full, uint32_t element_size)
{
    uint64_t bytes = full;
#ifdef DPS_SANITIZED
    bytes = full / 8;
#endif
    const char *env = getenv("CMOJO_DP_STREAM_MIB");
    if (env != NULL && *env != '\0')
        bytes = strtoull(env, NULL, 10) << 20;
    return bytes - bytes % element_size;
}

/* ------------------------------------------------------- ends and rings */

uint32_t dps_readable(MojoHandle consumer)
{
    struct MojoReadDataOptions q = {sizeof(q), MOJO_READ_DATA_FLAG_QUERY};
    uint32_t n = 0;
    CMOJO_MP_CHECK_RESULT(MojoReadData(consumer, &q, NULL, &n), MOJO_RESULT_OK);
    return n;
}

void dps_expect_drained_and_closed(MojoHandle consumer)
{
    struct MojoHandleSignalsState st;
    uint8_t buf[48]; /* a whole number of 1-, 4-, 8- and 12-byte elements */
    uint32_t n = sizeof(buf);
    const void *span = NULL;

    CMOJO_MP_CHECK_RESULT(MojoReadData(consumer, NULL, buf, &n), MOJO_RESULT_FAILED_PRECONDITION);
    n = 0;
    CMOJO_MP_CHECK_RESULT(MojoBeginReadData(consumer, NULL, &span, &n),
                          MOJO_RESULT_FAILED_PRECONDITION);
    CMOJO_MP_CHECK_RESULT(MojoQueryHandleSignalsState(consumer, &st), MOJO_RESULT_OK);
    CMOJO_MP_CHECK(st.satisfied_signals & MOJO_HANDLE_SIGNAL_PEER_CLOSED);
    CMOJO_MP_CHECK(!(st.satisfied_signals & MOJO_HANDLE_SIGNAL_READABLE));
    CMOJO_MP_CHECK(!(st.satisfiable_signals & MOJO_HANDLE_SIGNAL_READABLE));
}

#define RING_NAME "/memfd:cmojo-data-pipe"

void dps_ring_mapping(const void *p, uintptr_t *lo, uintptr_t *hi, char perms[5])
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    bool found = false;

    CMOJO_MP_CHECK(f != NULL);
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        unsigned long a, b;
        char pm[5];
        if (sscanf(line, "%lx-%lx %4s", &a, &b, pm) != 3 || (uintptr_t)p < a || (uintptr_t)p >= b)
            continue;
        CMOJO_MP_CHECK(strstr(line, RING_NAME) != NULL);
        *lo = a;
        *hi = b;
        memcpy(perms, pm, sizeof(pm));
        found = true;
    }
    fclose(f);
    CMOJO_MP_CHECK(found);
}

size_t dps_ring_fds(int *fds, size_t cap)
{
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *e;
    size_t n = 0;

    CMOJO_MP_CHECK(dir != NULL);
    while ((e = readdir(dir)) != NULL) {
        char path[300], target[256];
        snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(path, target, sizeof(target) - 1);
        if (len <= 0)
            continue;
        target[len] = '\0';
        if (strncmp(target, RING_NAME, strlen(RING_NAME)) != 0)
            continue;
        if (n < cap)
            fds[n] = atoi(e->d_name);
        n++;
    }
    closedir(dir);
    CMOJO_MP_CHECK(n <= cap);
    return n;
}
