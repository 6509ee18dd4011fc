/*
 * Data pipes against a hostile process. The hostile child joins through a
 * real invitation and uses cmojo, but its channel's sendmsg is replaced
 * (channel_sys_sendmsg, the channel's test hook) by a tamperer that rewrites
 * the raw frames on their way out: the counts in data pipe control
 * messages, the control message itself (size, command, an fd attached), the
 * serialised state of a data pipe end in a message envelope (every field,
 * and its size), and the ring fd that travels with it (swapped for a pipe,
 * a memfd of the wrong size, without seals, write-sealed, read-only for a
 * producer, writable for a consumer); and,
 * by swapping a consumer's record with a message pipe's in one envelope, it
 * gets the consumer's control port for itself and sends control messages
 * through the real API, with a message pipe, a data pipe end or an fd
 * attached. The ports protocol around the lie stays valid, so only the
 * data pipe code can catch it. Layouts are message.h's envelope and
 * data_pipe_wire.h's control message and state.
 *
 * Pinned, for each: the victim (this process) never reads or writes out of
 * bounds (the ASan build runs all of it) and
 *  - a count or control message that does not add up: the victim's end
 *    reports its peer closed, after exactly the bytes counted before the
 *    lie (or, for a lie that still fitted the ring, those too); the liar's
 *    end sees its peer closed; the connection stays up (no error report)
 *    and the hostile child's other pipe keeps working; whatever was
 *    attached to a control message is closed (a pipe's port, a data pipe
 *    end with its ring, an fd);
 *  - a serialised consumer whose state is odd but possible (a full ring
 *    whose next byte is the last element before the wrap): accepted, and
 *    read to exactly its claimed count, every span inside the ring;
 *  - a serialised end that lies: the message is refused and the sender cut
 *    off (DISCONNECTED, with the reason the data pipe check gives), every fd
 *    it sent is closed (fd count back to where it was; a pipe's write end
 *    in the child sees EPIPE);
 *  - a producer that scribbles over the whole shared ring (through a second
 *    mapping) while the victim reads: the victim reads exactly the number of
 *    bytes counted, every two-phase span inside the ring's own mapping (as
 *    /proc/self/maps has it), then PEER_CLOSED.
 * In every case a well-behaved child of the same parent keeps working.
 */
#include "cmojo_test.h"
#include "dp_stream.h"
#include "mp.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "channel/channel.h"
#include "channel/frame.h"
#include "cmojo/wait.h"
#include "cmojo_limits.h"
#include "cmojo_wire.h"
#include "core/data_pipe_wire.h"
#include "core/dispatcher.h"
#include "core/message.h"
#include "mojo/public/c/system/core.h"
#include "mojo/public/c/system/data_pipe.h"
#include "mojo/public/c/system/platform_handle.h"
#include "node/node_wire.h"
#include "ports/event.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

#define OK MOJO_RESULT_OK
#define READABLE MOJO_HANDLE_SIGNAL_READABLE
#define WRITABLE MOJO_HANDLE_SIGNAL_WRITABLE
#define PEER_CLOSED MOJO_HANDLE_SIGNAL_PEER_CLOSED
#define CHECK CMOJO_MP_CHECK
#define CHECK_RESULT CMOJO_MP_CHECK_RESULT
#define DEADLINE_US ((MojoDeadline)CMOJO_MP_IO_TIMEOUT_MS * 1000)

enum { TAG_PING = 1, TAG_HANDLES, TAG_READY, TAG_DONE };

#define PINGS 10
#define SEED 0x686f7374ull
/* Every data pipe here: 4-byte elements, 64 KiB. */
#define ES 4u
#define CAP 65536u
/* What the hostile child writes (or reads) honestly before it lies. */
#define LEGIT 1000u
#define SCRIBBLE_BYTES (16u << 20)

static const char *const ctl_name[] = {"ctl"};

/* ------------------------------------------------------------------------ */
/* Scenarios (shared by both sides: the child plays them, the parent knows  */
/* what to expect).                                                         */

typedef enum scenario_class {
    HONEST,          /* the tamperer is on but changes nothing */
    LIE_TO_CONSUMER, /* the child's producer, the parent's consumer */
    LIE_TO_PRODUCER, /* the parent's producer, the child's consumer */
    BAD_END,         /* the child sends an end whose wire form lies */
    SCRIBBLE,        /* the child's producer scribbles over the ring */
    HIJACK,          /* the child speaks on the consumer's control port itself */
    ODD_END,         /* the child sends a consumer whose state is strange but possible */
} scenario_class;

typedef enum tamper_kind {
    TAMPER_NONE,
    TAMPER_COUNT,        /* matching control messages: count := values[i] */
    TAMPER_CONTROL_SIZE, /* matching control message: its size := size */
    TAMPER_CONTROL_FD,   /* matching control message: a wrapped fd attached */
    TAMPER_CONTROL_CMD,  /* matching control message: command := values[0] */
    TAMPER_STATE_FIELD,  /* a message carrying an end: state u32 #field := values[0] */
    TAMPER_STATE_SIZE,   /* ... its state's size := size */
    TAMPER_RING_FD,      /* ... its ring fd swapped */
    TAMPER_SWAP_ENDS,    /* a message carrying {consumer, pipe}: the two trade ports */
} tamper_kind;

typedef enum fd_kind {
    FD_NONE,
    FD_PIPE,              /* the read end of a pipe */
    FD_MEMFD_HALF,        /* sealed memfd, CAP / 2 bytes */
    FD_MEMFD_DOUBLE,      /* sealed memfd, 2 * CAP bytes */
    FD_MEMFD_UNSEALED,    /* memfd of CAP bytes that may shrink */
    FD_MEMFD_WRITE_SEAL,  /* sealed against shrinking and writing */
    FD_MEMFD_FUTURE_SEAL, /* sealed against shrinking and future writes */
    FD_MEMFD_READ_ONLY,   /* sealed memfd reopened O_RDONLY */
    FD_MEMFD_WRITABLE,    /* sealed memfd of CAP bytes opened O_RDWR, as a producer's is */
} fd_kind;

/* HIJACK: what the child attaches to the control message it sends itself. */
typedef enum attach_kind {
    ATTACH_NONE,
    ATTACH_PIPE,      /* a message pipe end */
    ATTACH_DATA_PIPE, /* a data pipe consumer (a port, a ring fd, a mapping) */
    ATTACH_FD,        /* a wrapped pipe read end */
} attach_kind;

typedef struct scenario {
    const char *name;
    scenario_class cls;
    tamper_kind kind;
    unsigned num_values;
    uint32_t values[2];
    uint32_t field_or_size;
    fd_kind fd;
    bool producer_end; /* BAD_END: send the producer (else the consumer) */
    uint32_t readable; /* LIE_TO_CONSUMER: bytes the victim can read after the lie */
    const char *why;   /* BAD_END: part of the reason the parent must report */
    attach_kind attach;
} scenario;

#define WRAP_WRITTEN ((uint32_t)(0x100000000ull - LEGIT + 8))
#define WRAP_READ ((uint32_t)(0x100000000ull - (CAP - 8) + 4))

/* Counts and control messages to a consumer (the honest count, LEGIT, went first). */
#define TO_CONSUMER(n, k, nv, v0, v1, sz, fd_, readable_)                                          \
    {                                                                                              \
        .name = n, .cls = LIE_TO_CONSUMER, .kind = k, .num_values = nv, .values = {v0, v1},        \
        .field_or_size = sz, .fd = fd_, .readable = readable_                                      \
    }
/* ... to a producer (LEGIT read honestly first; then the parent writes 8 bytes per lie). */
#define TO_PRODUCER(n, k, nv, v0, v1, sz, fd_)                                                     \
    {                                                                                              \
        .name = n, .cls = LIE_TO_PRODUCER, .kind = k, .num_values = nv, .values = {v0, v1},        \
        .field_or_size = sz, .fd = fd_                                                             \
    }
/* A serialised end (the producer's if prod) with state u32 #field := v. */
#define STATE_FIELD(n, field, v, prod)                                                             \
    {                                                                                              \
        .name = n, .cls = BAD_END, .kind = TAMPER_STATE_FIELD, .values = {v},                      \
        .field_or_size = field, .producer_end = prod, .why = "does not add up"                     \
    }
#define STATE_SIZE(n, size, prod)                                                                  \
    {                                                                                              \
        .name = n, .cls = BAD_END, .kind = TAMPER_STATE_SIZE, .field_or_size = size,               \
        .producer_end = prod, .why = "wrong size"                                                  \
    }
#define RING(n, fd_, prod, why_)                                                                   \
    {                                                                                              \
        .name = n, .cls = BAD_END, .kind = TAMPER_RING_FD, .fd = fd_, .producer_end = prod,        \
        .why = why_                                                                                \
    }
#define HIJACKED(n, what)                                                                          \
    {                                                                                              \
        .name = n, .cls = HIJACK, .kind = TAMPER_SWAP_ENDS, .readable = LEGIT, .attach = what      \
    }

/* State fields: 0 element size, 1 capacity, 2 offset, 3 count (free bytes for a producer). */
enum { F_ELEMENT, F_CAPACITY, F_OFFSET, F_COUNT };

static const scenario scenarios[] = {
    {.name = "honest", .cls = HONEST, .readable = LEGIT},
    TO_CONSUMER("written_zero", TAMPER_COUNT, 1, 0, 0, 0, FD_NONE, LEGIT),
    TO_CONSUMER("written_partial_element", TAMPER_COUNT, 1, 6, 0, 0, FD_NONE, LEGIT),
    TO_CONSUMER("written_beyond_capacity", TAMPER_COUNT, 1, CAP - LEGIT + 4, 0, 0, FD_NONE, LEGIT),
    TO_CONSUMER("written_wrapping_u32", TAMPER_COUNT, 1, WRAP_WRITTEN, 0, 0, FD_NONE, LEGIT),
    TO_CONSUMER("written_u32_max", TAMPER_COUNT, 1, 0xfffffffcu, 0, 0, FD_NONE, LEGIT),
    /* Each fits on its own; together they claim more than the ring holds. */
    TO_CONSUMER("written_cumulative", TAMPER_COUNT, 2, CAP / 2, CAP / 2, 0, FD_NONE,
                LEGIT + CAP / 2),
    TO_CONSUMER("control_empty", TAMPER_CONTROL_SIZE, 1, 0, 0, 0, FD_NONE, LEGIT),
    TO_CONSUMER("control_short", TAMPER_CONTROL_SIZE, 1, 0, 0, 4, FD_NONE, LEGIT),
    TO_CONSUMER("control_long", TAMPER_CONTROL_SIZE, 1, 0, 0, 12, FD_NONE, LEGIT),
    TO_CONSUMER("control_with_fd", TAMPER_CONTROL_FD, 1, 0, 0, 0, FD_PIPE, LEGIT),
    TO_CONSUMER("control_read_to_consumer", TAMPER_CONTROL_CMD, 1, DP_CONTROL_DATA_WAS_READ, 0, 0,
                FD_NONE, LEGIT),
    TO_CONSUMER("control_unknown_command", TAMPER_CONTROL_CMD, 1, 77, 0, 0, FD_NONE, LEGIT),
    TO_PRODUCER("read_zero", TAMPER_COUNT, 1, 0, 0, 0, FD_NONE),
    TO_PRODUCER("read_partial_element", TAMPER_COUNT, 1, 6, 0, 0, FD_NONE),
    TO_PRODUCER("read_more_than_written", TAMPER_COUNT, 1, 12, 0, 0, FD_NONE),
    TO_PRODUCER("read_wrapping_u32", TAMPER_COUNT, 1, WRAP_READ, 0, 0, FD_NONE),
    TO_PRODUCER("read_cumulative", TAMPER_COUNT, 2, 12, 12, 0, FD_NONE),
    TO_PRODUCER("read_control_with_fd", TAMPER_CONTROL_FD, 1, 0, 0, 0, FD_PIPE),
    TO_PRODUCER("read_control_long", TAMPER_CONTROL_SIZE, 1, 0, 0, 16, FD_NONE),
    TO_PRODUCER("written_to_producer", TAMPER_CONTROL_CMD, 1, DP_CONTROL_DATA_WAS_WRITTEN, 0, 0,
                FD_NONE),
    /* Possible, so accepted: a full ring whose next byte is the last element before the wrap. */
    {.name = "state_full_ring_about_to_wrap",
     .cls = ODD_END,
     .kind = TAMPER_STATE_FIELD,
     .num_values = 2,
     .values = {CAP - ES, CAP},
     .field_or_size = F_OFFSET,
     .readable = CAP},
    STATE_FIELD("state_element_size_zero", F_ELEMENT, 0, false),
    STATE_FIELD("state_capacity_zero", F_CAPACITY, 0, false),
    STATE_FIELD("state_capacity_partial_element", F_CAPACITY, CAP - 2, false),
    STATE_FIELD("state_capacity_beyond_limit", F_CAPACITY, 512u << 20, true),
    STATE_FIELD("state_offset_at_capacity", F_OFFSET, CAP, false),
    STATE_FIELD("state_offset_beyond_capacity", F_OFFSET, 0xfffffff0u, true),
    STATE_FIELD("state_offset_partial_element", F_OFFSET, 2, false),
    STATE_FIELD("state_count_beyond_capacity", F_COUNT, CAP + 4, false),
    STATE_FIELD("state_free_beyond_capacity", F_COUNT, CAP + 4, true),
    STATE_FIELD("state_count_partial_element", F_COUNT, 6, false),
    STATE_SIZE("state_size_zero", 0, false),
    STATE_SIZE("state_size_short", 12, false),
    STATE_SIZE("state_size_long", 24, true),
    RING("ring_smaller_than_capacity", FD_MEMFD_HALF, false, "ring of the wrong size"),
    RING("ring_larger_than_capacity", FD_MEMFD_DOUBLE, true, "ring of the wrong size"),
    RING("ring_not_a_memfd", FD_PIPE, false, "not a memfd"),
    RING("ring_can_shrink", FD_MEMFD_UNSEALED, false, "can shrink"),
    RING("ring_write_sealed_for_producer", FD_MEMFD_WRITE_SEAL, true, "cannot write"),
    RING("ring_future_write_sealed_for_producer", FD_MEMFD_FUTURE_SEAL, true, "cannot write"),
    RING("ring_read_only_for_producer", FD_MEMFD_READ_ONLY, true, "producer cannot write"),
    /* Everything right but the access: a consumer must not be able to write the ring. */
    RING("ring_writable_for_consumer", FD_MEMFD_WRITABLE, false, "consumer could write"),
    {.name = "scribbler", .cls = SCRIBBLE},
    /* The control port hijacked: the child's own messages, through the real API. */
    HIJACKED("hijacked_control_port_honest", ATTACH_NONE),
    HIJACKED("hijacked_control_with_pipe", ATTACH_PIPE),
    HIJACKED("hijacked_control_with_data_pipe", ATTACH_DATA_PIPE),
    HIJACKED("hijacked_control_with_fd", ATTACH_FD),
};

static const scenario *find_scenario(const char *name)
{
    for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++)
        if (strcmp(scenarios[i].name, name) == 0)
            return &scenarios[i];
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* The tamperer: the hostile child's sendmsg.                               */

static struct {
    pthread_mutex_t mu;
    tamper_kind kind;
    uint32_t command;    /* control kinds: which control messages match */
    unsigned skip;       /* control kinds: matching messages to let through first */
    unsigned seen;       /* matching messages so far */
    unsigned done;       /* messages changed so far */
    unsigned num_values; /* how many to change (at least 1) */
    uint32_t values[2];
    uint32_t field_or_size;
    int fd; /* what TAMPER_CONTROL_FD attaches / TAMPER_RING_FD swaps in */
} plan = {.mu = PTHREAD_MUTEX_INITIALIZER, .fd = -1};

static atomic_uint tampered;

/* The output of one sendmsg: bytes and fds, built frame by frame. */
typedef struct outbuf {
    uint8_t *bytes;
    size_t len, cap;
    int fds[CMOJO_MAX_FDS_PER_FRAME];
    size_t num_fds;
} outbuf;

static void out_bytes(outbuf *o, const void *p, size_t n)
{
    if (o->len + n > o->cap) {
        o->cap = (o->len + n) * 2;
        o->bytes = realloc(o->bytes, o->cap);
        CHECK(o->bytes != NULL);
    }
    memcpy(o->bytes + o->len, p, n);
    o->len += n;
}

static void out_fds(outbuf *o, const int *fds, size_t n)
{
    CHECK(o->num_fds + n <= CMOJO_MAX_FDS_PER_FRAME);
    memcpy(o->fds + o->num_fds, fds, n * sizeof(int));
    o->num_fds += n;
}

/* Appends an EVENT frame: the ports event's bytes up to the envelope, then `env`. */
static void out_event(outbuf *o, const uint8_t *event, size_t env_off, const uint8_t *env,
                      size_t env_len, const int *fds, size_t num_fds)
{
    uint8_t hdr[CHANNEL_FRAME_HEADER_SIZE] = {0};
    static const uint8_t zeros[8];
    size_t total = CHANNEL_FRAME_HEADER_SIZE + env_off + env_len;

    wire_store_u32(hdr, (uint32_t)total);
    wire_store_u16(hdr + 4, CHANNEL_FRAME_HEADER_SIZE);
    wire_store_u16(hdr + 6, NODE_MSG_EVENT);
    wire_store_u16(hdr + 8, (uint16_t)num_fds);
    out_bytes(o, hdr, sizeof(hdr));
    out_bytes(o, event, env_off);
    out_bytes(o, env, env_len);
    out_bytes(o, zeros, wire_align8(total) - total);
    out_fds(o, fds, num_fds);
}

/*
 * One EVENT frame (payload = a ports event; a user message's envelope
 * follows its fixed part and ports). Under plan.mu. Appends the frame to o,
 * changed if it is what the plan is after.
 */
static void tamper_event(outbuf *o, const uint8_t *frame, size_t total, const int *fds,
                         size_t num_fds)
{
    const uint8_t *ev = frame + CHANNEL_FRAME_HEADER_SIZE;
    size_t len = total - CHANNEL_FRAME_HEADER_SIZE;
    size_t fixed = PORTS_EVENT_HEADER_SIZE + PORTS_USER_MESSAGE_FIXED_SIZE;

    if (len < fixed || wire_load_u32(ev) != PORTS_EVENT_USER_MESSAGE)
        goto verbatim;
    uint32_t num_ports = wire_load_u32(ev + PORTS_EVENT_HEADER_SIZE + 8);
    size_t env_off = fixed + (size_t)num_ports * (PORTS_DESCRIPTOR_SIZE + 16);
    if (num_ports > 64 || env_off + CORE_ENVELOPE_HEADER_SIZE > len)
        goto verbatim;
    const uint8_t *env = ev + env_off;
    size_t env_len = len - env_off;
    uint32_t num_bytes = wire_load_u32(env), num_handles = wire_load_u32(env + 4);
    if (num_handles > 16 || num_bytes > env_len)
        goto verbatim;
    const uint8_t *records = env + CORE_ENVELOPE_HEADER_SIZE;
    const uint8_t *bytes = env + env_len - num_bytes;
    uint8_t copy[512];

    switch (plan.kind) {
    case TAMPER_COUNT:
    case TAMPER_CONTROL_SIZE:
    case TAMPER_CONTROL_FD:
    case TAMPER_CONTROL_CMD: {
        if (num_handles != 0 || num_bytes != DP_CONTROL_SIZE ||
            wire_load_u32(bytes) != plan.command ||
            env_len != CORE_ENVELOPE_HEADER_SIZE + DP_CONTROL_SIZE)
            goto verbatim;
        if (plan.seen++ < plan.skip || plan.done >= plan.num_values)
            goto verbatim;
        uint32_t value = plan.values[plan.done++];
        memset(copy, 0, sizeof(copy));
        wire_store_u32(copy, DP_CONTROL_SIZE);
        wire_store_u32(copy + 4, 0);
        memcpy(copy + 8, bytes, DP_CONTROL_SIZE);
        if (plan.kind == TAMPER_COUNT) {
            wire_store_u32(copy + 12, value);
            out_event(o, ev, env_off, copy, 16, fds, num_fds);
        } else if (plan.kind == TAMPER_CONTROL_CMD) {
            wire_store_u32(copy + 8, value);
            out_event(o, ev, env_off, copy, 16, fds, num_fds);
        } else if (plan.kind == TAMPER_CONTROL_SIZE) {
            /* Cut or zero-extended to the new size. */
            wire_store_u32(copy, plan.field_or_size);
            out_event(o, ev, env_off, copy, 8 + plan.field_or_size, fds, num_fds);
        } else {
            /* One wrapped fd: {type, state size 0}, then the 8 bytes. */
            wire_store_u32(copy + 4, 1);
            wire_store_u32(copy + 8, CORE_DISPATCHER_PLATFORM_HANDLE);
            wire_store_u32(copy + 12, 0);
            memcpy(copy + 16, bytes, DP_CONTROL_SIZE);
            out_event(o, ev, env_off, copy, 24, &plan.fd, 1);
        }
        atomic_fetch_add(&tampered, 1);
        return;
    }
    case TAMPER_STATE_FIELD:
    case TAMPER_STATE_SIZE:
    case TAMPER_RING_FD: {
        /* The first message carrying a data pipe end, as its only handle. */
        if (num_handles != 1 || plan.done > 0)
            goto verbatim;
        uint32_t type = wire_load_u32(records), state_size = wire_load_u32(records + 4);
        if ((type != CORE_DISPATCHER_DATA_PIPE_PRODUCER &&
             type != CORE_DISPATCHER_DATA_PIPE_CONSUMER) ||
            state_size != DP_STATE_SIZE || num_fds != 1 ||
            env_len != 16 + DP_STATE_SIZE + num_bytes || num_bytes > 64)
            goto verbatim;
        plan.done++;
        const uint8_t *state = records + 8;
        memset(copy, 0, sizeof(copy));
        memcpy(copy, env, env_len);
        size_t new_len = env_len;
        int new_fd = fds[0];
        if (plan.kind == TAMPER_STATE_FIELD) {
            /* values[i] into field + i: one field, or two neighbours at once. */
            for (unsigned i = 0; i < plan.num_values; i++)
                wire_store_u32(copy + 16 + 4 * (plan.field_or_size + i), plan.values[i]);
        } else if (plan.kind == TAMPER_RING_FD) {
            new_fd = plan.fd;
        } else {
            /* New size; the state cut or zero-extended, padded to 8; then the bytes. */
            uint32_t size = plan.field_or_size;
            wire_store_u32(copy + 12, size);
            memset(copy + 16, 0, sizeof(copy) - 16);
            memcpy(copy + 16, state, size < DP_STATE_SIZE ? size : DP_STATE_SIZE);
            memcpy(copy + 16 + wire_align8(size), bytes, num_bytes);
            new_len = 16 + wire_align8(size) + num_bytes;
        }
        out_event(o, ev, env_off, copy, new_len, &new_fd, 1);
        atomic_fetch_add(&tampered, 1);
        return;
    }
    case TAMPER_SWAP_ENDS: {
        /*
         * {consumer (state), pipe (none)} -> {pipe, consumer}: the ports
         * are handed out in record order, so the consumer binds to the
         * pipe's port (whose peer we keep) and the pipe gets the consumer's
         * control port. The one state and the one fd stay where they are.
         */
        if (num_handles != 2 || plan.done > 0 ||
            wire_load_u32(records) != CORE_DISPATCHER_DATA_PIPE_CONSUMER ||
            wire_load_u32(records + 4) != DP_STATE_SIZE ||
            wire_load_u32(records + 8) != CORE_DISPATCHER_MESSAGE_PIPE ||
            wire_load_u32(records + 12) != 0 || env_len > sizeof(copy))
            goto verbatim;
        plan.done++;
        memcpy(copy, env, env_len);
        memcpy(copy + 8, records + 8, 8);
        memcpy(copy + 16, records, 8);
        out_event(o, ev, env_off, copy, env_len, fds, num_fds);
        atomic_fetch_add(&tampered, 1);
        return;
    }
    case TAMPER_NONE:
        break;
    }
verbatim:
    out_bytes(o, frame, wire_align8(total));
    out_fds(o, fds, num_fds);
}

/* Sends all of o on the (non-blocking) socket, its fds with the first bytes. */
static ssize_t send_all(int s, const outbuf *o)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * CMOJO_MAX_FDS_PER_FRAME)];
        struct cmsghdr align;
    } control;
    size_t off = 0;
    bool fds_pending = o->num_fds > 0;

    while (off < o->len) {
        struct iovec iov = {o->bytes + off, o->len - off};
        struct msghdr mh = {0};
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        if (fds_pending) {
            memset(&control, 0, sizeof(control));
            mh.msg_control = control.buf;
            mh.msg_controllen = CMSG_SPACE(sizeof(int) * o->num_fds);
            struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int) * o->num_fds);
            memcpy(CMSG_DATA(c), o->fds, sizeof(int) * o->num_fds);
        }
        ssize_t r = sendmsg(s, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r > 0) {
            off += (size_t)r;
            fds_pending = false;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = {s, POLLOUT, 0};
            (void)poll(&pfd, 1, 100);
        } else {
            return -1;
        }
    }
    return (ssize_t)o->len;
}

/*
 * The channel's sendmsg in the hostile child. Every call starts at a frame
 * boundary (the channel sends whole frames, and this always takes all it is
 * given, so there are never leftovers); each frame is passed on, changed if
 * the plan says so, and all of it is sent before returning, so the channel
 * sees one complete write of what it asked for.
 */
static ssize_t tamper_sendmsg(int s, const struct msghdr *msg, int flags)
{
    size_t len = 0;
    int in_fds[CMOJO_MAX_FDS_PER_FRAME];
    size_t num_in = 0;
    outbuf o = {0};

    (void)flags;
    for (size_t i = 0; i < msg->msg_iovlen; i++)
        len += msg->msg_iov[i].iov_len;
    uint8_t *in = malloc(len);
    CHECK(in != NULL);
    for (size_t i = 0, off = 0; i < msg->msg_iovlen; off += msg->msg_iov[i].iov_len, i++)
        memcpy(in + off, msg->msg_iov[i].iov_base, msg->msg_iov[i].iov_len);
    for (struct cmsghdr *c = CMSG_FIRSTHDR((struct msghdr *)msg); c != NULL;
         c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        CHECK(num_in + n <= CMOJO_MAX_FDS_PER_FRAME);
        memcpy(in_fds + num_in, CMSG_DATA(c), n * sizeof(int));
        num_in += n;
    }

    size_t pos = 0, fd_pos = 0;
    pthread_mutex_lock(&plan.mu);
    while (pos < len) {
        const uint8_t *f = in + pos;
        size_t left = len - pos;
        uint32_t total = left >= CHANNEL_FRAME_HEADER_SIZE ? wire_load_u32(f) : 0;
        size_t nfds = left >= CHANNEL_FRAME_HEADER_SIZE ? wire_load_u16(f + 8) : 0;
        if (left < CHANNEL_FRAME_HEADER_SIZE || wire_load_u16(f + 4) != CHANNEL_FRAME_HEADER_SIZE ||
            total < CHANNEL_FRAME_HEADER_SIZE || wire_align8(total) > left ||
            nfds > num_in - fd_pos) {
            /* Not a whole frame: the channel never does this here. Pass it on. */
            out_bytes(&o, f, left);
            out_fds(&o, in_fds + fd_pos, num_in - fd_pos);
            fd_pos = num_in;
            break;
        }
        if (wire_load_u16(f + 6) == NODE_MSG_EVENT && plan.kind != TAMPER_NONE)
            tamper_event(&o, f, total, in_fds + fd_pos, nfds);
        else {
            out_bytes(&o, f, wire_align8(total));
            out_fds(&o, in_fds + fd_pos, nfds);
        }
        pos += wire_align8(total);
        fd_pos += nfds;
    }
    out_fds(&o, in_fds + fd_pos, num_in - fd_pos);
    pthread_mutex_unlock(&plan.mu);

    ssize_t r = send_all(s, &o);
    int saved = errno;
    free(o.bytes);
    free(in);
    errno = saved;
    return r < 0 ? -1 : (ssize_t)len;
}

/* ------------------------------------------------------------------------ */
/* The hostile child.                                                       */

/* A substitute fd of the kind asked for; *keep gets a pipe's write end (else -1). */
static int make_fd(fd_kind kind, int *keep)
{
    int fd = -1;
    *keep = -1;
    if (kind == FD_PIPE) {
        int p[2];
        CHECK(pipe2(p, O_CLOEXEC) == 0);
        *keep = p[1];
        return p[0];
    }
    unsigned flags = MFD_CLOEXEC | (kind == FD_MEMFD_UNSEALED ? 0 : MFD_ALLOW_SEALING);
    fd = memfd_create("hostile-ring", flags);
    CHECK(fd >= 0);
    off_t size = kind == FD_MEMFD_HALF ? CAP / 2 : kind == FD_MEMFD_DOUBLE ? 2 * CAP : CAP;
    CHECK(ftruncate(fd, size) == 0);
    if (kind == FD_MEMFD_UNSEALED)
        return fd;
    int seals = F_SEAL_SHRINK;
    if (kind == FD_MEMFD_WRITE_SEAL)
        seals |= F_SEAL_WRITE;
    if (kind == FD_MEMFD_FUTURE_SEAL)
        seals |= F_SEAL_FUTURE_WRITE;
    CHECK(fcntl(fd, F_ADD_SEALS, seals) == 0);
    if (kind == FD_MEMFD_READ_ONLY) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        int ro = open(path, O_RDONLY | O_CLOEXEC);
        CHECK(ro >= 0);
        CHECK(close(fd) == 0);
        fd = ro;
    }
    return fd;
}

/*
 * Once the tampered message is known to have arrived: drops our copy of
 * what plan.fd stands for and, for a pipe, waits until the parent has closed
 * its copy of the read end too (EPIPE on write).
 */
static void expect_read_end_closed(int write_end)
{
    if (plan.fd >= 0)
        CHECK(close(plan.fd) == 0);
    plan.fd = -1;
    if (write_end < 0)
        return;
    int64_t deadline = cmojo_mp_now_ms() + CMOJO_MP_IO_TIMEOUT_MS;
    while (write(write_end, "x", 1) == 1) {
        if (cmojo_mp_now_ms() >= deadline) {
            fprintf(stderr, "hostile child: the parent kept the fd we sent\n");
            CHECK(false);
        }
        cmojo_mp_sleep_ms(2);
    }
    CHECK(errno == EPIPE);
}

static void write_all(MojoHandle producer, uint64_t pos, uint32_t n)
{
    uint8_t buf[LEGIT];
    CHECK(n <= sizeof(buf));
    dps_fill(SEED, pos, buf, n);
    struct MojoWriteDataOptions all = {sizeof(all), MOJO_WRITE_DATA_FLAG_ALL_OR_NONE};
    uint32_t len = n;
    CHECK_RESULT(MojoWriteData(producer, buf, &len, &all), OK);
    CHECK_RESULT(len, n);
}

/* Waits until n bytes are readable: one honest count brings all of them at once. */
static void wait_readable(MojoHandle consumer, uint32_t n)
{
    struct MojoReadDataOptions q = {sizeof(q), MOJO_READ_DATA_FLAG_QUERY};
    int64_t deadline = cmojo_mp_now_ms() + CMOJO_MP_IO_TIMEOUT_MS;
    uint32_t have = 0;

    for (;;) {
        CHECK_RESULT(MojoReadData(consumer, &q, NULL, &have), OK);
        if (have >= n)
            break;
        CHECK(cmojo_mp_now_ms() < deadline);
        struct MojoHandleSignalsState st;
        CHECK_RESULT(MojoWait(consumer, MOJO_HANDLE_SIGNAL_NEW_DATA_READABLE, DEADLINE_US, &st),
                     OK);
    }
    CHECK_RESULT(have, n);
}

/* Reads n bytes at stream position pos (all there) in one call: one count. */
static void read_now(MojoHandle consumer, uint64_t pos, uint32_t n)
{
    uint8_t buf[LEGIT];
    struct MojoReadDataOptions all = {sizeof(all), MOJO_READ_DATA_FLAG_ALL_OR_NONE};
    uint32_t len = n;

    CHECK(n <= sizeof(buf));
    CHECK_RESULT(MojoReadData(consumer, &all, buf, &len), OK);
    CHECK(dps_mismatch(SEED, pos, buf, n) == n);
}

/* A data pipe ring this process holds (the producer's, O_RDWR), mapped writable a second time. */
static uint8_t *map_ring_again(void)
{
    int fds[4];
    size_t n = dps_ring_fds(fds, 4);
    for (size_t i = 0; i < n; i++) {
        void *p = mmap(NULL, CAP, PROT_READ | PROT_WRITE, MAP_SHARED, fds[i], 0);
        if (p != MAP_FAILED)
            return p;
    }
    CHECK(false);
    return NULL;
}

static atomic_bool scribbling;

static void *scribble(void *arg)
{
    uint8_t *ring = arg;
    uint64_t x = 0x12345;
    while (atomic_load(&scribbling)) {
        for (size_t i = 0; i < CAP; i += 8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            memcpy(ring + i, &x, 8);
        }
    }
    return NULL;
}

/* Sends {command, num_bytes} on `port` with handles attached: a control message we wrote. */
static void send_control(MojoHandle port, uint32_t command, uint32_t num_bytes, MojoHandle *handles,
                         uint32_t num_handles)
{
    struct MojoAppendMessageDataOptions commit = {sizeof(commit),
                                                  MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE};
    MojoMessageHandle m = MOJO_MESSAGE_HANDLE_INVALID;
    void *buf = NULL;

    CHECK_RESULT(MojoCreateMessage(NULL, &m), OK);
    CHECK_RESULT(
        MojoAppendMessageData(m, DP_CONTROL_SIZE, handles, num_handles, &commit, &buf, NULL), OK);
    dp_control_build(buf, command, num_bytes);
    CHECK_RESULT(MojoWriteMessage(port, m, NULL), OK);
}

/*
 * HIJACK: sends {consumer, a} with the two swapped on the wire, so the
 * parent's consumer listens to b (ours) and its real producer talks to a
 * plain pipe in the parent. One honest count through b, then (unless
 * ATTACH_NONE) a count with a handle attached, which is a lie whatever the
 * count: the handle must be closed over there.
 */
static void hijack(MojoHandle ctl, const scenario *sc)
{
    MojoHandle producer, consumer, a, b, x = MOJO_HANDLE_INVALID, y = MOJO_HANDLE_INVALID;
    struct MojoCreateDataPipeOptions opts = {sizeof(opts), 0, ES, CAP};
    struct MojoHandleSignalsState st;
    int keep = -1;

    CHECK_RESULT(MojoCreateDataPipe(&opts, &producer, &consumer), OK);
    CHECK_RESULT(MojoCreateMessagePipe(NULL, &a, &b), OK);
    MojoHandle both[2] = {consumer, a};
    cmojo_mp_send(ctl, TAG_HANDLES, 0, 0, both, 2);
    /* The real count goes to the parent's plain pipe; ours to its consumer. */
    write_all(producer, 0, LEGIT);
    send_control(b, DP_CONTROL_DATA_WAS_WRITTEN, LEGIT, NULL, 0);
    switch (sc->attach) {
    case ATTACH_NONE:
        CHECK_RESULT(MojoClose(b), OK); /* the consumer sees its "producer" close */
        b = MOJO_HANDLE_INVALID;
        break;
    case ATTACH_PIPE:
        CHECK_RESULT(MojoCreateMessagePipe(NULL, &x, &y), OK);
        send_control(b, DP_CONTROL_DATA_WAS_WRITTEN, 8, &x, 1);
        break;
    case ATTACH_DATA_PIPE:
        CHECK_RESULT(MojoCreateDataPipe(&opts, &y, &x), OK);
        send_control(b, DP_CONTROL_DATA_WAS_WRITTEN, 8, &x, 1);
        break;
    case ATTACH_FD: {
        int p[2];
        CHECK(pipe2(p, O_CLOEXEC) == 0);
        keep = p[1];
        struct MojoPlatformHandle ph = {sizeof(ph), MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR,
                                        (uint64_t)p[0]};
        CHECK_RESULT(MojoWrapPlatformHandle(&ph, NULL, &x), OK);
        send_control(b, DP_CONTROL_DATA_WAS_WRITTEN, 8, &x, 1);
        break;
    }
    }
    if (b != MOJO_HANDLE_INVALID) {
        /* It called us a liar and closed its control port... */
        CHECK_RESULT(MojoWait(b, PEER_CLOSED, DEADLINE_US, &st), OK);
        CHECK_RESULT(MojoClose(b), OK);
    }
    /* ...and closed what we attached: the pipe's port, the data pipe end, the fd. */
    if (y != MOJO_HANDLE_INVALID) {
        CHECK_RESULT(MojoWait(y, PEER_CLOSED, DEADLINE_US, &st), OK);
        CHECK_RESULT(MojoClose(y), OK);
    }
    if (keep >= 0) {
        expect_read_end_closed(keep);
        CHECK(close(keep) == 0);
    }
    /* The parent closes the plain pipe our producer's count went to. */
    CHECK_RESULT(MojoWait(producer, PEER_CLOSED, DEADLINE_US, &st), OK);
    CHECK_RESULT(MojoClose(producer), OK);
    CHECK_RESULT(atomic_load(&tampered), 1);
    cmojo_mp_send(ctl, TAG_READY, 0, 0, NULL, 0);
    cmojo_mp_echo_pings(ctl, TAG_PING, TAG_DONE);
}

static int role_hostile(const int *fds, size_t n, const char *arg)
{
    MojoHandle ctl, producer, consumer;
    int keep = -1;

    (void)n;
    const scenario *sc = find_scenario(arg);
    if (sc == NULL)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    /* Before any channel exists (the hook may not change under a live one). */
    channel_sys_sendmsg = tamper_sendmsg;
    plan.kind = sc->kind;
    plan.num_values = sc->num_values ? sc->num_values : 1;
    memcpy(plan.values, sc->values, sizeof(plan.values));
    plan.field_or_size = sc->field_or_size;
    plan.skip = 1; /* the honest count goes through */
    plan.command =
        sc->cls == LIE_TO_PRODUCER ? DP_CONTROL_DATA_WAS_READ : DP_CONTROL_DATA_WAS_WRITTEN;
    if (sc->fd != FD_NONE)
        plan.fd = make_fd(sc->fd, &keep);

    cmojo_mp_accept(fds[0], ctl_name, 1, &ctl);
    struct MojoCreateDataPipeOptions opts = {sizeof(opts), 0, ES, CAP};

    switch (sc->cls) {
    case HONEST:
        CHECK_RESULT(MojoCreateDataPipe(&opts, &producer, &consumer), OK);
        cmojo_mp_send(ctl, TAG_HANDLES, 0, 0, &consumer, 1);
        write_all(producer, 0, LEGIT);
        CHECK_RESULT(MojoClose(producer), OK);
        cmojo_mp_echo_pings(ctl, TAG_PING, TAG_DONE);
        break;
    case LIE_TO_CONSUMER: {
        CHECK_RESULT(MojoCreateDataPipe(&opts, &producer, &consumer), OK);
        cmojo_mp_send(ctl, TAG_HANDLES, 0, 0, &consumer, 1);
        /*
         * The plan skips the first count by the order the counts reach
         * sendmsg. While the consumer's old port here still proxies, the
         * honest count can sit in it and leave after later ones sent
         * straight to the parent: wait until only ctl's port and the
         * producer's are left, so the counts go out in the order written.
         */
        CHECK(cmojo_mp_wait_counts("hostile child", 2, 2, CMOJO_MP_SETTLE_MS));
        write_all(producer, 0, LEGIT);
        for (unsigned i = 0; i < plan.num_values; i++)
            write_all(producer, LEGIT + 8 * i, 8);
        struct MojoHandleSignalsState st;
        CHECK_RESULT(MojoWait(producer, PEER_CLOSED, DEADLINE_US, &st), OK);
        CHECK_RESULT(atomic_load(&tampered), plan.num_values);
        expect_read_end_closed(keep);
        cmojo_mp_send(ctl, TAG_READY, 0, 0, NULL, 0);
        cmojo_mp_echo_pings(ctl, TAG_PING, TAG_DONE);
        CHECK_RESULT(MojoClose(producer), OK);
        break;
    }
    case LIE_TO_PRODUCER: {
        uint32_t nh = 1;
        cmojo_mp_recv_tag(ctl, TAG_HANDLES, &consumer, &nh);
        CHECK_RESULT(nh, 1);
        wait_readable(consumer, LEGIT);
        read_now(consumer, 0, LEGIT);
        cmojo_mp_send(ctl, TAG_READY, 0, 0, NULL, 0);
        /* The parent writes 8 bytes per lie at once; each 8-byte read sends one count. */
        wait_readable(consumer, 8 * plan.num_values);
        for (unsigned i = 0; i < plan.num_values; i++)
            read_now(consumer, LEGIT + 8 * i, 8);
        struct MojoHandleSignalsState st;
        CHECK_RESULT(MojoWait(consumer, PEER_CLOSED, DEADLINE_US, &st), OK);
        CHECK_RESULT(atomic_load(&tampered), plan.num_values);
        expect_read_end_closed(keep);
        cmojo_mp_send(ctl, TAG_READY, 1, 0, NULL, 0);
        cmojo_mp_echo_pings(ctl, TAG_PING, TAG_DONE);
        CHECK_RESULT(MojoClose(consumer), OK);
        break;
    }
    case BAD_END: {
        CHECK_RESULT(MojoCreateDataPipe(&opts, &producer, &consumer), OK);
        write_all(producer, 0, LEGIT); /* a count and an offset worth lying about */
        MojoHandle sent = sc->producer_end ? producer : consumer;
        MojoHandle kept = sc->producer_end ? consumer : producer;
        cmojo_mp_send(ctl, TAG_HANDLES, 0, 0, &sent, 1);
        /* The parent cuts us off: ctl and the end we kept see their peers gone. */
        cmojo_mp_expect_peer_closed(ctl);
        struct MojoHandleSignalsState st;
        CHECK_RESULT(MojoWait(kept, PEER_CLOSED, DEADLINE_US, &st), OK);
        CHECK_RESULT(atomic_load(&tampered), 1);
        expect_read_end_closed(keep);
        CHECK_RESULT(MojoClose(kept), OK);
        CHECK_RESULT(MojoClose(ctl), OK);
        if (plan.fd >= 0)
            CHECK(close(plan.fd) == 0);
        if (keep >= 0)
            CHECK(close(keep) == 0);
        return cmojo_mp_child_finish("hostile child", NULL, 0);
    }
    case HIJACK:
        hijack(ctl, sc);
        break;
    case ODD_END:
        CHECK_RESULT(MojoCreateDataPipe(&opts, &producer, &consumer), OK);
        write_all(producer, 0, LEGIT);
        cmojo_mp_send(ctl, TAG_HANDLES, 0, 0, &consumer, 1);
        CHECK_RESULT(MojoClose(producer), OK);
        cmojo_mp_echo_pings(ctl, TAG_PING, TAG_DONE);
        CHECK_RESULT(atomic_load(&tampered), 1);
        break;
    case SCRIBBLE: {
        pthread_t t;
        CHECK_RESULT(MojoCreateDataPipe(&opts, &producer, &consumer), OK);
        uint8_t *ring = map_ring_again();
        cmojo_mp_send(ctl, TAG_HANDLES, 0, SCRIBBLE_BYTES, &consumer, 1);
        atomic_store(&scribbling, true);
        CHECK(pthread_create(&t, NULL, scribble, ring) == 0);
        dps_opts o = {.seed = SEED, .element_size = ES, .max_chunk = 4 * 4001, .rng = 1};
        dps_produce(producer, &o, 0, SCRIBBLE_BYTES);
        atomic_store(&scribbling, false);
        CHECK(pthread_join(t, NULL) == 0);
        CHECK(munmap(ring, CAP) == 0);
        CHECK_RESULT(MojoClose(producer), OK);
        cmojo_mp_echo_pings(ctl, TAG_PING, TAG_DONE);
        break;
    }
    }
    if (plan.fd >= 0)
        CHECK(close(plan.fd) == 0);
    if (keep >= 0)
        CHECK(close(keep) == 0);
    return cmojo_mp_child_finish("hostile child", &ctl, 1);
}

/* ------------------------------------------------------------------------ */
/* The victim: this process.                                                */

static MojoHandle recv_end(MojoHandle ctl, cmojo_mp_msg *m)
{
    MojoHandle h = MOJO_HANDLE_INVALID;
    uint32_t nh = 1;
    *m = cmojo_mp_recv_tag(ctl, TAG_HANDLES, &h, &nh);
    CHECK_RESULT(nh, 1);
    return h;
}

/* The consumer's side of a lie: exactly `readable` bytes, the honest ones first, then closed. */
static void victim_consumer(MojoHandle consumer, uint32_t readable)
{
    struct MojoHandleSignalsState st;
    static uint8_t buf[CAP];

    assert_int_equal(MojoWait(consumer, PEER_CLOSED, DEADLINE_US, &st), OK);
    assert_int_equal(dps_readable(consumer), readable);
    uint32_t len = readable;
    assert_int_equal(MojoReadData(consumer, NULL, buf, &len), OK);
    assert_int_equal(len, readable);
    assert_int_equal(dps_mismatch(SEED, 0, buf, LEGIT), LEGIT);
    dps_expect_drained_and_closed(consumer);
}

/*
 * Reads a scribbled stream to its end, one-shot and two-phase in turn;
 * every two-phase span must lie inside the ring's own mapping. Returns the
 * bytes read.
 */
static uint64_t read_scribbled(MojoHandle consumer)
{
    static uint8_t buf[4 * 1001];
    uintptr_t lo = 0, hi = 0;
    uint64_t total = 0;

    for (unsigned i = 0;; i++) {
        MojoResult r;
        if (i % 2) {
            uint32_t n = sizeof(buf);
            r = MojoReadData(consumer, NULL, buf, &n);
            if (r == OK)
                total += n;
        } else {
            const void *span = NULL;
            uint32_t n = 0;
            r = MojoBeginReadData(consumer, NULL, &span, &n);
            if (r == OK) {
                if (lo == 0) {
                    char perms[5];
                    dps_ring_mapping(span, &lo, &hi, perms);
                    assert_int_equal(hi - lo, CAP);
                }
                assert_true((uintptr_t)span >= lo && n <= hi - (uintptr_t)span);
                assert_true(n > 0 && n % ES == 0);
                assert_int_equal(MojoEndReadData(consumer, n, NULL), OK);
                total += n;
            }
        }
        if (r == OK)
            continue;
        if (r == MOJO_RESULT_FAILED_PRECONDITION)
            return total;
        assert_int_equal(r, MOJO_RESULT_SHOULD_WAIT);
        struct MojoHandleSignalsState st;
        r = MojoWait(consumer, READABLE, DEADLINE_US, &st);
        assert_true(r == OK || r == MOJO_RESULT_FAILED_PRECONDITION);
    }
}

static void write_stream(MojoHandle producer, uint64_t pos, uint32_t n)
{
    uint8_t buf[LEGIT];
    struct MojoWriteDataOptions all = {sizeof(all), MOJO_WRITE_DATA_FLAG_ALL_OR_NONE};
    uint32_t len = n;
    dps_fill(SEED, pos, buf, n);
    assert_int_equal(MojoWriteData(producer, buf, &len, &all), OK);
    assert_int_equal(len, n);
}

static void run(const char *name)
{
    MojoHandle ctl, end = MOJO_HANDLE_INVALID;
    cmojo_mp_witness good;
    cmojo_mp_child bad;
    cmojo_mp_msg m;
    const scenario *sc = find_scenario(name);

    assert_non_null(sc);
    cmojo_mp_reset_logs();
    cmojo_mp_witness_start(&good, 0);
    int fds_before = cmojo_test_count_open_fds();

    cmojo_mp_invite("hostile", name, ctl_name, 1, &ctl, &bad, 1);
    switch (sc->cls) {
    case HONEST: {
        end = recv_end(ctl, &m);
        dps_opts o = {.seed = SEED, .element_size = ES, .max_chunk = 400, .rng = 1, .verify = true};
        assert_int_equal(dps_consume(end, &o, 0, UINT64_MAX), LEGIT);
        dps_expect_drained_and_closed(end);
        break;
    }
    case LIE_TO_CONSUMER:
        end = recv_end(ctl, &m);
        victim_consumer(end, sc->readable);
        cmojo_mp_recv_tag(ctl, TAG_READY, NULL, NULL); /* the liar saw us close */
        break;
    case LIE_TO_PRODUCER: {
        MojoHandle consumer;
        struct MojoCreateDataPipeOptions opts = {sizeof(opts), 0, ES, CAP};
        assert_int_equal(MojoCreateDataPipe(&opts, &end, &consumer), OK);
        cmojo_mp_send(ctl, TAG_HANDLES, 0, 0, &consumer, 1);
        write_stream(end, 0, LEGIT);
        cmojo_mp_recv_tag(ctl, TAG_READY, NULL, NULL); /* it read them: the honest count */
        write_stream(end, LEGIT, 8 * (sc->num_values ? sc->num_values : 1));
        struct MojoHandleSignalsState st;
        assert_int_equal(MojoWait(end, PEER_CLOSED, DEADLINE_US, &st), OK);
        assert_false(st.satisfiable_signals & WRITABLE);
        uint8_t byte[ES] = {0};
        uint32_t len = ES;
        void *span = NULL;
        assert_int_equal(MojoWriteData(end, byte, &len, NULL), MOJO_RESULT_FAILED_PRECONDITION);
        len = 0;
        assert_int_equal(MojoBeginWriteData(end, NULL, &span, &len),
                         MOJO_RESULT_FAILED_PRECONDITION);
        cmojo_mp_recv_tag(ctl, TAG_READY, NULL, NULL); /* the liar saw us close */
        break;
    }
    case BAD_END: {
        assert_true(cmojo_mp_wait_disconnected(1, CMOJO_MP_IO_TIMEOUT_MS));
        cmojo_mp_log_state log = cmojo_mp_log(1);
        fprintf(stderr, "%s: cut off: \"%s\"\n", name, log.last);
        assert_int_equal(log.empty_messages, 0);
        assert_non_null(strstr(log.last, sc->why));
        break;
    }
    case HIJACK: {
        MojoHandle h[2];
        uint32_t nh = 2;
        MojoMessageHandle msg;
        void *bytes = NULL;
        uint32_t len = 0;
        cmojo_mp_recv_tag(ctl, TAG_HANDLES, h, &nh);
        assert_int_equal(nh, 2);
        /* h[0] is a plain pipe now: the real producer's count arrived there, as on the wire. */
        struct MojoHandleSignalsState st;
        assert_int_equal(MojoWait(h[0], READABLE, DEADLINE_US, &st), OK);
        assert_int_equal(MojoReadMessage(h[0], NULL, &msg), OK);
        assert_int_equal(MojoGetMessageData(msg, NULL, &bytes, &len, NULL, NULL), OK);
        uint8_t want[DP_CONTROL_SIZE];
        dp_control_build(want, DP_CONTROL_DATA_WAS_WRITTEN, LEGIT);
        assert_int_equal(len, DP_CONTROL_SIZE);
        assert_memory_equal(bytes, want, DP_CONTROL_SIZE);
        assert_int_equal(MojoDestroyMessage(msg), OK);
        assert_int_equal(MojoClose(h[0]), OK);
        /* h[1], the consumer, believed the honest count we did not send, and nothing after. */
        end = h[1];
        victim_consumer(end, sc->readable);
        cmojo_mp_recv_tag(ctl, TAG_READY, NULL, NULL);
        break;
    }
    case ODD_END:
        /* All of the ring it claims, wrapping at once, in bounds; then closed. */
        end = recv_end(ctl, &m);
        assert_int_equal(read_scribbled(end), sc->readable);
        dps_expect_drained_and_closed(end);
        break;
    case SCRIBBLE: {
        end = recv_end(ctl, &m);
        assert_int_equal(m.value, SCRIBBLE_BYTES);
        /* Whatever the bytes say, exactly as many as were counted, in bounds, then closed. */
        assert_int_equal(read_scribbled(end), SCRIBBLE_BYTES);
        dps_expect_drained_and_closed(end);
        break;
    }
    }
    cmojo_mp_witness_ping(&good, 2);

    if (sc->cls == BAD_END) {
        assert_true(cmojo_mp_wait_exit(&bad, CMOJO_MP_CHILD_TIMEOUT_MS, 0));
        cmojo_mp_expect_peer_closed(ctl);
    } else {
        /* Still connected: the hostile child's pipe works, nobody reported an error. */
        cmojo_mp_ping(ctl, TAG_PING, 3, PINGS);
        assert_int_equal(cmojo_mp_log(1).reports, 0);
        assert_int_equal(MojoClose(end), OK);
        cmojo_mp_send(ctl, TAG_DONE, 0, 0, NULL, 0);
        assert_true(cmojo_mp_wait_exit(&bad, CMOJO_MP_CHILD_TIMEOUT_MS, 0));
        cmojo_mp_expect_peer_closed(ctl);
    }
    assert_int_equal(MojoClose(ctl), OK);
    /* The channel, the ring and every fd the child sent are closed. */
    assert_true(cmojo_mp_wait_fd_count(fds_before, CMOJO_MP_SETTLE_MS));
    assert_true(cmojo_mp_wait_counts("parent", 1, 1, CMOJO_MP_SETTLE_MS));

    cmojo_mp_witness_finish(&good, 4);
}

#define SCENARIO_TEST(sname)                                                                       \
    static void test_##sname(void **state)                                                         \
    {                                                                                              \
        (void)state;                                                                               \
        run(#sname);                                                                               \
    }

SCENARIO_TEST(honest)
SCENARIO_TEST(written_zero)
SCENARIO_TEST(written_partial_element)
SCENARIO_TEST(written_beyond_capacity)
SCENARIO_TEST(written_wrapping_u32)
SCENARIO_TEST(written_u32_max)
SCENARIO_TEST(written_cumulative)
SCENARIO_TEST(control_empty)
SCENARIO_TEST(control_short)
SCENARIO_TEST(control_long)
SCENARIO_TEST(control_with_fd)
SCENARIO_TEST(control_read_to_consumer)
SCENARIO_TEST(control_unknown_command)
SCENARIO_TEST(read_zero)
SCENARIO_TEST(read_partial_element)
SCENARIO_TEST(read_more_than_written)
SCENARIO_TEST(read_wrapping_u32)
SCENARIO_TEST(read_cumulative)
SCENARIO_TEST(read_control_with_fd)
SCENARIO_TEST(read_control_long)
SCENARIO_TEST(written_to_producer)
SCENARIO_TEST(state_full_ring_about_to_wrap)
SCENARIO_TEST(state_element_size_zero)
SCENARIO_TEST(state_capacity_zero)
SCENARIO_TEST(state_capacity_partial_element)
SCENARIO_TEST(state_capacity_beyond_limit)
SCENARIO_TEST(state_offset_at_capacity)
SCENARIO_TEST(state_offset_beyond_capacity)
SCENARIO_TEST(state_offset_partial_element)
SCENARIO_TEST(state_count_beyond_capacity)
SCENARIO_TEST(state_free_beyond_capacity)
SCENARIO_TEST(state_count_partial_element)
SCENARIO_TEST(state_size_zero)
SCENARIO_TEST(state_size_short)
SCENARIO_TEST(state_size_long)
SCENARIO_TEST(ring_smaller_than_capacity)
SCENARIO_TEST(ring_larger_than_capacity)
SCENARIO_TEST(ring_not_a_memfd)
SCENARIO_TEST(ring_can_shrink)
SCENARIO_TEST(ring_write_sealed_for_producer)
SCENARIO_TEST(ring_future_write_sealed_for_producer)
SCENARIO_TEST(ring_read_only_for_producer)
SCENARIO_TEST(ring_writable_for_consumer)
SCENARIO_TEST(scribbler)
SCENARIO_TEST(hijacked_control_port_honest)
SCENARIO_TEST(hijacked_control_with_pipe)
SCENARIO_TEST(hijacked_control_with_data_pipe)
SCENARIO_TEST(hijacked_control_with_fd)

static const cmojo_mp_role roles[] = {
    {CMOJO_MP_WITNESS_ROLE, cmojo_mp_role_witness},
    {"hostile", role_hostile},
    {NULL, NULL},
};

#define T(sname)                                                                                   \
    cmocka_unit_test_setup_teardown(test_##sname, cmojo_mp_core_setup, cmojo_mp_core_teardown)

int main(int argc, char **argv)
{
    cmojo_mp_child_dispatch(argc, argv, roles);

    const struct CMUnitTest tests[] = {
        T(honest),
        T(written_zero),
        T(written_partial_element),
        T(written_beyond_capacity),
        T(written_wrapping_u32),
        T(written_u32_max),
        T(written_cumulative),
        T(control_empty),
        T(control_short),
        T(control_long),
        T(control_with_fd),
        T(control_read_to_consumer),
        T(control_unknown_command),
        T(read_zero),
        T(read_partial_element),
        T(read_more_than_written),
        T(read_wrapping_u32),
        T(read_cumulative),
        T(read_control_with_fd),
        T(read_control_long),
        T(written_to_producer),
        T(state_full_ring_about_to_wrap),
        T(state_element_size_zero),
        T(state_capacity_zero),
        T(state_capacity_partial_element),
        T(state_capacity_beyond_limit),
        T(state_offset_at_capacity),
        T(state_offset_beyond_capacity),
        T(state_offset_partial_element),
        T(state_count_beyond_capacity),
        T(state_free_beyond_capacity),
        T(state_count_partial_element),
        T(state_size_zero),
        T(state_size_short),
        T(state_size_long),
        T(ring_smaller_than_capacity),
        T(ring_larger_than_capacity),
        T(ring_not_a_memfd),
        T(ring_can_shrink),
        T(ring_write_sealed_for_producer),
        T(ring_future_write_sealed_for_producer),
        T(ring_read_only_for_producer),
        T(ring_writable_for_consumer),
        T(scribbler),
        T(hijacked_control_port_honest),
        T(hijacked_control_with_pipe),
        T(hijacked_control_with_data_pipe),
        T(hijacked_control_with_fd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
