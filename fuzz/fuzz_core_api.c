/*
 * Drives the Mojo C API with whatever the input says: which call, on which
 * handle (a live one, a closed one, a made-up value), with which sizes,
 * flags, conditions and option structs. The API must answer every call with
 * a result code: no crash, no sanitizer report, no leak after MojoShutdown.
 *
 * Input: a sequence of 4-byte instructions {op, a, b, c}; handle operands
 * index a pool of values that holds live handles, handles closed since and
 * garbage, so stale and forged values are exercised as much as real ones.
 */
#include <stdint.h>
#include <string.h>

#include "cmojo/wait.h"
#include "mojo/public/c/system/core.h"

#define POOL 16

typedef struct fuzz_state {
    MojoHandle handles[POOL];
    MojoMessageHandle messages[POOL];
} fuzz_state;

static void on_event(const struct MojoTrapEvent *event)
{
    (void)event;
}

static MojoHandle pick(const fuzz_state *s, uint8_t x)
{
    if (x < 0xf0)
        return s->handles[x % POOL];
    return (MojoHandle)((uint64_t)x << 32 | (x & 7)); /* forged */
}

static MojoMessageHandle pick_message(const fuzz_state *s, uint8_t x)
{
    if (x < 0xf0)
        return s->messages[x % POOL];
    return (MojoMessageHandle)x * 0x100000001ull;
}

typedef struct fuzz_options {
    uint32_t struct_size;
    uint32_t flags;
} fuzz_options;

/* Options of the usual 8-byte shape; c picks a valid, short or flagged one. */
static const void *options(uint8_t c, fuzz_options *o)
{
    switch (c & 3) {
    case 0:
        return NULL;
    case 1:
        o->struct_size = 8;
        o->flags = (c >> 2) & 1;
        return o;
    case 2:
        o->struct_size = 4;
        o->flags = 0;
        return o;
    default:
        o->struct_size = 8;
        o->flags = 0x80000000u >> (c >> 3);
        return o;
    }
}

static void put_handle(fuzz_state *s, uint8_t slot, MojoHandle h)
{
    s->handles[slot % POOL] = h;
}

static void step(fuzz_state *s, uint8_t op, uint8_t a, uint8_t b, uint8_t c)
{
    fuzz_options o;
    MojoHandle h0, h1;
    switch (op % 18) {
    case 0:
        if (MojoCreateMessagePipe(options(c, &o), &h0, &h1) == MOJO_RESULT_OK) {
            put_handle(s, a, h0);
            put_handle(s, b, h1);
        }
        break;
    case 1:
        MojoClose(pick(s, a));
        break;
    case 2: {
        MojoMessageHandle m;
        if (MojoCreateMessage(options(c, &o), &m) == MOJO_RESULT_OK) {
            MojoDestroyMessage(s->messages[a % POOL]);
            s->messages[a % POOL] = m;
        }
        break;
    }
    case 3: {
        MojoHandle hs[2] = {pick(s, b), pick(s, c)};
        void *buf = NULL;
        uint32_t size = 0;
        if (MojoAppendMessageData(pick_message(s, a), (uint32_t)(c & 0x3f) << ((c >> 6) * 8),
                                  (c & 0x10) ? hs : NULL, (b >> 6) % 3, options(c >> 2, &o), &buf,
                                  &size) == MOJO_RESULT_OK &&
            size)
            memset(buf, c, size);
        break;
    }
    case 4:
        MojoWriteMessage(pick(s, b), pick_message(s, a), options(c, &o));
        break;
    case 5: {
        MojoMessageHandle m;
        if (MojoReadMessage(pick(s, a), options(c, &o), &m) == MOJO_RESULT_OK) {
            MojoDestroyMessage(s->messages[b % POOL]);
            s->messages[b % POOL] = m;
        }
        break;
    }
    case 6: {
        void *buf;
        uint32_t n, nh = c % 4;
        MojoHandle hs[4];
        if (MojoGetMessageData(pick_message(s, a), options(b, &o), &buf, (c & 0x40) ? NULL : &n,
                               (c & 0x80) ? NULL : hs, (c & 0x20) ? NULL : &nh) == MOJO_RESULT_OK &&
            !(c & 0x80) && !(c & 0x20))
            for (uint32_t i = 0; i < nh && i < 4; i++)
                put_handle(s, (uint8_t)(b + i), hs[i]);
        break;
    }
    case 7:
        MojoDestroyMessage(pick_message(s, a));
        break;
    case 8:
        MojoSetMessageContext(pick_message(s, a), c & 1 ? (uintptr_t)b : 0, NULL, NULL,
                              options(c >> 1, &o));
        break;
    case 9:
        MojoSerializeMessage(pick_message(s, a), options(c, &o));
        break;
    case 10:
        MojoFuseMessagePipes(pick(s, a), pick(s, b), options(c, &o));
        break;
    case 11:
        if (MojoCreateTrap(c & 1 ? on_event : NULL, options(c >> 1, &o), &h0) == MOJO_RESULT_OK)
            put_handle(s, a, h0);
        break;
    case 12:
        MojoAddTrigger(pick(s, a), pick(s, b), c & 0x3f, c >> 6, c & 7, options(c >> 3, &o));
        break;
    case 13:
        MojoRemoveTrigger(pick(s, a), b & 7, options(c, &o));
        break;
    case 14: {
        uint32_t n = c % 3;
        struct MojoTrapEvent events[2];
        MojoArmTrap(pick(s, a), options(b, &o), (c & 4) ? NULL : &n, (c & 8) ? NULL : events);
        break;
    }
    case 15:
        MojoSetQuota(pick(s, a), b % 4, c == 0xff ? MOJO_QUOTA_LIMIT_NONE : c % 4,
                     options(c >> 2, &o));
        break;
    case 16: {
        uint64_t limit, usage;
        struct MojoHandleSignalsState st;
        MojoQueryQuota(pick(s, a), b % 4, options(c, &o), &limit, &usage);
        MojoQueryHandleSignalsState(pick(s, b), (c & 1) ? NULL : &st);
        break;
    }
    default:
        /* A zero deadline never blocks, whatever the handles. */
        MojoWait(pick(s, a), (MojoHandleSignals)b, 0, NULL);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_state s;
    memset(&s, 0, sizeof(s));
    if (MojoInitialize(NULL) != MOJO_RESULT_OK)
        __builtin_trap();
    for (size_t i = 0; i + 4 <= size; i += 4)
        step(&s, data[i], data[i + 1], data[i + 2], data[i + 3]);
    /* Everything still open (handles, messages) goes with the shutdown. */
    if (MojoShutdown(NULL) != MOJO_RESULT_OK)
        __builtin_trap();
    return 0;
}
