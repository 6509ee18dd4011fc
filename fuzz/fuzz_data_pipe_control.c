/*
 * Fuzzes what a data pipe end accepts from its peer on the control port:
 * control messages (dp_control_parse) and the counts they carry, applied to
 * an end's private state (dp_producer_apply_read, dp_consumer_apply_written).
 *
 * Every step is checked against an independent statement of the rule:
 *  - a parse succeeds exactly for 8 bytes, no handles and a known command,
 *    rebuilds to the same bytes, and leaves its outputs alone when it fails;
 *  - a count is accepted exactly when it is nonzero, a whole number of
 *    elements and at most what the ring can account for (capacity - count);
 *    an accepted one raises count by exactly that much and touches nothing
 *    else, a rejected one leaves the state byte for byte as it was;
 *  - every state stays dp_state_valid.
 * Besides hostile counts, an honest pipe is simulated (writes, reads and
 * their counts in flight, delivered in order): every honest count must be
 * accepted, and at quiescence the two ends must agree on the ring.
 * Any violation aborts.
 *
 * Input: bytes 0-15 and 16-31 are a producer's and a consumer's state
 * (dp_state wire layout; an invalid one is folded into a valid one), then
 * records, each an op byte and its operands (see run_record).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cmojo_limits.h"
#include "cmojo_wire.h"
#include "core/data_pipe_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Counts an honest end may have in flight before the oldest must be delivered. */
#define MAX_IN_FLIGHT 64u

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            abort();                                                                               \
    } while (0)

typedef struct input {
    const uint8_t *p;
    size_t left;
} input;

static uint8_t take_u8(input *in)
{
    if (!in->left)
        return 0;
    in->left--;
    return *in->p++;
}

static uint32_t take_u32(input *in)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)take_u8(in) << (8 * i);
    return v;
}

/* The state in 16 input bytes, or a valid one folded from them. */
static dp_state take_state(input *in)
{
    dp_state s = {take_u32(in), take_u32(in), take_u32(in), take_u32(in)};
    if (dp_state_valid(&s))
        return s;
    dp_state f;
    f.element_size = 1 + s.element_size % 64;
    uint32_t elements = CMOJO_MAX_DATA_PIPE_CAPACITY / f.element_size;
    /* Small rings are where wrap-around and "full" are reached. */
    if (s.capacity & 0x80000000u)
        elements = 1 + s.capacity % elements;
    else
        elements = 1 + s.capacity % 256;
    f.capacity = elements * f.element_size;
    f.offset = s.offset % elements * f.element_size;
    f.count = s.count % (elements + 1) * f.element_size;
    CHECK(dp_state_valid(&f));
    return f;
}

/* Applies a peer's count to s and checks the outcome against the rule. */
static int apply_checked(dp_state *s, bool producer, uint32_t n)
{
    dp_state before = *s;
    bool legal = n != 0 && n % s->element_size == 0 && (uint64_t)s->count + n <= s->capacity;
    int rv = producer ? dp_producer_apply_read(s, n) : dp_consumer_apply_written(s, n);
    CHECK(rv == 0 || rv == -1);
    if (rv != 0) {
        CHECK(!legal);
        CHECK(memcmp(&before, s, sizeof(*s)) == 0);
        return -1;
    }
    CHECK(legal);
    CHECK(s->element_size == before.element_size && s->capacity == before.capacity &&
          s->offset == before.offset && s->count == before.count + n);
    CHECK(dp_state_valid(s));
    return 0;
}

/* The end's own operation (a write or a read of up to n bytes), as data_pipe.c does it. */
static uint32_t local_op(dp_state *s, uint32_t n)
{
    if (n > s->count)
        n = s->count;
    n -= n % s->element_size;
    s->offset = (uint32_t)(((uint64_t)s->offset + n) % s->capacity);
    s->count -= n;
    CHECK(dp_state_valid(s));
    return n;
}

/* Parses a control message and checks the parser against the rule. */
static int parse_checked(const uint8_t *buf, size_t len, uint32_t handles, uint32_t *command,
                         uint32_t *num_bytes)
{
    uint32_t c = 0xdeadbeefu, n = 0xfeedfaceu;
    int rv = dp_control_parse(buf, len, handles, &c, &n);
    bool legal = len == DP_CONTROL_SIZE && handles == 0 &&
                 (wire_load_u32(buf) == DP_CONTROL_DATA_WAS_WRITTEN ||
                  wire_load_u32(buf) == DP_CONTROL_DATA_WAS_READ);
    CHECK(rv == 0 || rv == -1);
    if (rv != 0) {
        CHECK(!legal && c == 0xdeadbeefu && n == 0xfeedfaceu);
        return -1;
    }
    CHECK(legal);
    uint8_t again[DP_CONTROL_SIZE];
    dp_control_build(again, c, n);
    CHECK(memcmp(again, buf, DP_CONTROL_SIZE) == 0);
    *command = c;
    *num_bytes = n;
    return 0;
}

/* An honest pipe: both ends' states and the counts on their way. */
typedef struct honest_pipe {
    dp_state p, c;
    uint32_t written[MAX_IN_FLIGHT], read[MAX_IN_FLIGHT]; /* FIFOs of counts in flight */
    unsigned nwritten, nread;
} honest_pipe;

/* Delivers the oldest count in flight to the other end, through the wire format. */
static void deliver(honest_pipe *h, bool to_consumer)
{
    uint32_t *q = to_consumer ? h->written : h->read;
    unsigned *n = to_consumer ? &h->nwritten : &h->nread;
    if (!*n)
        return;
    uint8_t msg[DP_CONTROL_SIZE];
    dp_control_build(msg, to_consumer ? DP_CONTROL_DATA_WAS_WRITTEN : DP_CONTROL_DATA_WAS_READ,
                     q[0]);
    uint32_t command, num_bytes;
    CHECK(parse_checked(msg, sizeof(msg), 0, &command, &num_bytes) == 0);
    CHECK(num_bytes == q[0]);
    /* An honest peer's count is never refused. */
    CHECK(apply_checked(to_consumer ? &h->c : &h->p, !to_consumer, num_bytes) == 0);
    memmove(q, q + 1, (*n - 1) * sizeof(*q));
    (*n)--;
}

/* Both ends and the counts in flight account for the whole ring. */
static void check_honest(const honest_pipe *h)
{
    uint64_t in_flight = 0;
    for (unsigned i = 0; i < h->nwritten; i++)
        in_flight += h->written[i];
    for (unsigned i = 0; i < h->nread; i++)
        in_flight += h->read[i];
    CHECK((uint64_t)h->p.count + h->c.count + in_flight == h->p.capacity);
    if (!h->nwritten && !h->nread)
        CHECK(h->p.offset == (uint32_t)(((uint64_t)h->c.offset + h->c.count) % h->c.capacity));
}

static void honest_step(honest_pipe *h, uint8_t op, input *in)
{
    switch (op & 3) {
    case 0: /* the producer writes */
        if (h->nwritten == MAX_IN_FLIGHT)
            deliver(h, true);
        {
            uint32_t n = local_op(&h->p, take_u32(in) % (h->p.capacity + 1));
            if (n)
                h->written[h->nwritten++] = n;
        }
        break;
    case 1: /* the consumer reads */
        if (h->nread == MAX_IN_FLIGHT)
            deliver(h, false);
        {
            uint32_t n = local_op(&h->c, take_u32(in) % (h->c.capacity + 1));
            if (n)
                h->read[h->nread++] = n;
        }
        break;
    case 2:
        deliver(h, true);
        break;
    default:
        deliver(h, false);
        break;
    }
    check_honest(h);
}

/*
 * One record. Op byte o, by o & 3:
 *   0  control message: a byte L (length L & 15, handles (L >> 4) & 3), then
 *      that many bytes; if it parses, its count goes to the end it is for
 *   1  a raw count (4 bytes) for the producer (o & 4) or the consumer
 *   2  the producer (o & 4) or the consumer does its own op of up to a
 *      4-byte amount
 *   3  a step of the honest pipe, (o >> 2) & 3: write, read, deliver a
 *      written count, deliver a read count (amounts: 4 bytes)
 */
static void run_record(uint8_t o, input *in, dp_state *p, dp_state *c, honest_pipe *h)
{
    switch (o & 3) {
    case 0: {
        uint8_t l = take_u8(in);
        size_t len = l & 15;
        if (len > in->left)
            len = in->left;
        /* An exact-size copy, so reading past the message is an ASan report. */
        uint8_t *buf = malloc(len ? len : 1);
        CHECK(buf);
        memcpy(buf, in->p, len);
        in->p += len;
        in->left -= len;
        uint32_t command, num_bytes;
        if (parse_checked(buf, len, (l >> 4) & 3, &command, &num_bytes) == 0) {
            if (command == DP_CONTROL_DATA_WAS_READ)
                (void)apply_checked(p, true, num_bytes);
            else
                (void)apply_checked(c, false, num_bytes);
        }
        free(buf);
        break;
    }
    case 1:
        (void)apply_checked(o & 4 ? p : c, o & 4, take_u32(in));
        break;
    case 2:
        (void)local_op(o & 4 ? p : c, take_u32(in));
        break;
    default:
        honest_step(h, (uint8_t)(o >> 2), in);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    input in = {data, size};
    dp_state p = take_state(&in), c = take_state(&in);
    honest_pipe h = {.p = {c.element_size, c.capacity, 0, c.capacity},
                     .c = {c.element_size, c.capacity, 0, 0}};
    while (in.left)
        run_record(take_u8(&in), &in, &p, &c, &h);
    /* Quiescence: every count delivered, and the ends agree. */
    while (h.nwritten || h.nread) {
        deliver(&h, true);
        deliver(&h, false);
    }
    check_honest(&h);
    return 0;
}
