/*
 * Data pipes: see data_pipe.h for the model, data_pipe_wire.h for what
 * crosses between the ends.
 */
#include "core/data_pipe.h"

#include <assert.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cmojo_limits.h"
#include "core/core.h"
#include "core/data_pipe_wire.h"
#include "core/message.h"
#include "core/request_context.h"
#include "mojo/public/c/system/data_pipe.h"
#include "mojo/public/c/system/functions.h"
#include "platform/lock.h"
#include "ports/ports.h"

typedef struct core_data_pipe {
    core_dispatcher base;
    bool producer; /* fixed at creation */
    /* Everything below is under base.lock. */
    dp_state st;
    int fd;        /* the ring's memfd (O_RDONLY for a consumer); -1 once given away */
    uint8_t *ring; /* st.capacity bytes, read-only for a consumer; NULL once unmapped */
    /*
     * bound: the end is a handle's (not travelling) and owns `port` if
     * has_port. port_users counts threads using the port with the lock
     * released (a send, a drain); letting go of the port waits for zero.
     */
    bool bound;
    bool has_port;
    ports_port_ref port;
    unsigned port_users;
    plat_cond port_idle;
    bool peer_closed; /* every count from the peer applied and the peer gone, or it lied */
    bool lied;        /* the peer sent a count that does not add up; we closed the port */
    bool new_data;    /* consumer: data arrived since the last read (NEW_DATA_READABLE) */
    bool two_phase;   /* a Begin*Data is open */
    uint32_t two_phase_size;
} core_data_pipe;

static ports_node *node(void)
{
    return core_node(core_get());
}

/* ---------------------------------------------------------- the control port */

/* Under the lock: starts using the port outside it. False when there is none to use. */
static bool port_use_begin(core_data_pipe *dp, ports_port_ref *out)
{
    if (!dp->bound || !dp->has_port || dp->peer_closed)
        return false;
    dp->port_users++;
    ports_port_ref_copy(out, &dp->port);
    return true;
}

static void port_use_end(core_data_pipe *dp, ports_port_ref *ref)
{
    ports_port_ref_release(ref);
    plat_mutex_lock(&dp->base.lock);
    if (--dp->port_users == 0)
        plat_cond_broadcast(&dp->port_idle);
    plat_mutex_unlock(&dp->base.lock);
}

/* Sends a count on a port taken with port_use_begin, then ends the use. */
static void send_count(core_data_pipe *dp, ports_port_ref *port, uint32_t command,
                       uint32_t num_bytes)
{
    uint8_t bytes[DP_CONTROL_SIZE];
    dp_control_build(bytes, command, num_bytes);
    core_message *m = core_message_new_bytes(bytes, sizeof(bytes));
    ports_event *ev = m ? ports_user_message_new(0, &m->base) : NULL;
    if (ev)
        (void)ports_node_send_user_message(node(), port, ev); /* fails only if the peer is gone */
    else
        core_message_destroy(m);
    port_use_end(dp, port);
}

/*
 * Applies every count waiting on the control port. A count that does not
 * add up (or any other message) means the peer lies: the port is closed,
 * so it sees us closed too, and we see it closed.
 */
static void drain(core_data_pipe *dp)
{
    ports_port_ref port;
    plat_mutex_lock(&dp->base.lock);
    bool use = port_use_begin(dp, &port);
    plat_mutex_unlock(&dp->base.lock);
    if (!use)
        return;
    const uint32_t expected = dp->producer ? DP_CONTROL_DATA_WAS_READ : DP_CONTROL_DATA_WAS_WRITTEN;
    bool lied = false;
    for (;;) {
        ports_event *ev = NULL;
        int rv = ports_node_get_message(node(), &port, &ev);
        if (rv == PORTS_ERROR_PORT_PEER_CLOSED) {
            plat_mutex_lock(&dp->base.lock);
            dp->peer_closed = true;
            plat_mutex_unlock(&dp->base.lock);
            break;
        }
        if (rv != PORTS_OK || !ev)
            break;
        core_message *m = core_message_from_event(ev);
        uint32_t command = 0, num_bytes = 0;
        bool good =
            m &&
            dp_control_parse(m->data, m->size, m->num_attachments, &command, &num_bytes) == 0 &&
            command == expected;
        core_message_destroy(m);
        plat_mutex_lock(&dp->base.lock);
        if (good)
            good = (dp->producer ? dp_producer_apply_read(&dp->st, num_bytes)
                                 : dp_consumer_apply_written(&dp->st, num_bytes)) == 0;
        if (good && !dp->producer)
            dp->new_data = true;
        if (!good)
            dp->lied = dp->peer_closed = true;
        plat_mutex_unlock(&dp->base.lock);
        if (!good) {
            lied = true;
            break;
        }
    }
    if (lied)
        ports_node_close_port(node(), &port);
    port_use_end(dp, &port);
}

static void dp_port_status_changed(core_dispatcher *d)
{
    drain((core_data_pipe *)d);
    core_dispatcher_notify(d);
}

/* ------------------------------------------------------------- dispatcher */

static void dp_get_signals(core_dispatcher *d, struct MojoHandleSignalsState *out)
{
    core_data_pipe *dp = (core_data_pipe *)d;
    MojoHandleSignals satisfied = 0, satisfiable = 0;
    if (dp->bound) {
        ports_port_status ps;
        bool remote = !dp->peer_closed && dp->has_port &&
                      ports_node_get_status(node(), &dp->port, &ps) == PORTS_OK && ps.peer_remote;
        if (dp->producer) {
            if (!dp->peer_closed) {
                if (dp->st.count && !dp->two_phase)
                    satisfied |= MOJO_HANDLE_SIGNAL_WRITABLE;
                satisfiable |= MOJO_HANDLE_SIGNAL_WRITABLE;
            }
        } else {
            if (dp->st.count && !dp->two_phase) {
                satisfied |= MOJO_HANDLE_SIGNAL_READABLE;
                if (dp->new_data)
                    satisfied |= MOJO_HANDLE_SIGNAL_NEW_DATA_READABLE;
            }
            if (dp->st.count || !dp->peer_closed)
                satisfiable |= MOJO_HANDLE_SIGNAL_READABLE | MOJO_HANDLE_SIGNAL_NEW_DATA_READABLE;
        }
        if (dp->peer_closed) {
            satisfied |= MOJO_HANDLE_SIGNAL_PEER_CLOSED;
        } else {
            satisfiable |= MOJO_HANDLE_SIGNAL_PEER_REMOTE;
            if (remote)
                satisfied |= MOJO_HANDLE_SIGNAL_PEER_REMOTE;
        }
        satisfiable |= MOJO_HANDLE_SIGNAL_PEER_CLOSED;
    }
    out->satisfied_signals = satisfied;
    out->satisfiable_signals = satisfiable;
}

/* Under the lock: gives up the ring (unmaps it) and hands back its fd. */
static int take_ring(core_data_pipe *dp)
{
    if (dp->ring)
        munmap(dp->ring, dp->st.capacity);
    dp->ring = NULL;
    int fd = dp->fd;
    dp->fd = -1;
    return fd;
}

static void dp_close(core_dispatcher *d)
{
    core_data_pipe *dp = (core_data_pipe *)d;
    plat_mutex_lock(&d->lock);
    dp->bound = false;
    dp->two_phase = false;
    bool has_port = dp->has_port;
    ports_port_ref port = dp->port;
    dp->has_port = false;
    int fd = take_ring(dp);
    plat_mutex_unlock(&d->lock);
    if (has_port) {
        ports_port_set_user_data(&port, NULL);
        ports_node_close_port(node(), &port); /* already closed if the peer lied: harmless */
        ports_port_ref_release(&port);
    }
    if (fd >= 0)
        close(fd);
}

static void dp_destroy(core_dispatcher *d)
{
    core_data_pipe *dp = (core_data_pipe *)d;
    plat_cond_destroy(&dp->port_idle);
    free(dp);
}

static MojoResult dp_check_transit(core_dispatcher *d)
{
    plat_mutex_lock(&d->lock);
    MojoResult rv = ((core_data_pipe *)d)->two_phase ? MOJO_RESULT_BUSY : MOJO_RESULT_OK;
    plat_mutex_unlock(&d->lock);
    return rv;
}

static void dp_transit_port(core_dispatcher *d, ports_name *out)
{
    core_data_pipe *dp = (core_data_pipe *)d;
    plat_mutex_lock(&d->lock);
    dp->bound = false;     /* no new use of the port from here */
    dp->two_phase = false; /* begun after the attach: abandoned, nothing committed */
    while (dp->port_users)
        plat_cond_wait(&dp->port_idle, &d->lock);
    bool has_port = dp->has_port, lied = dp->lied;
    ports_port_ref port = dp->port;
    dp->has_port = false;
    dp->lied = false;
    plat_mutex_unlock(&d->lock);

    /* Its handle is going away: so do the triggers on it. */
    core_dispatcher_cancel_watchers(d);
    *out = PORTS_INVALID_NAME;
    if (has_port) {
        ports_port_set_user_data(&port, NULL);
        if (!lied)
            *out = port.name;
        ports_port_ref_release(&port);
    }
    if (!ports_name_is_valid(out)) {
        /* A closed control port cannot travel: send one whose peer is closed. */
        ports_port_ref a, b;
        if (ports_node_create_port_pair(node(), &a, &b) == PORTS_OK) {
            ports_node_close_port(node(), &b);
            *out = a.name;
            ports_port_ref_release(&a);
            ports_port_ref_release(&b);
        }
    }
}

static int dp_bind(core_dispatcher *d, const ports_name *name)
{
    core_data_pipe *dp = (core_data_pipe *)d;
    ports_port_ref port;
    bool found = ports_node_get_port(node(), name, &port) == PORTS_OK;
    plat_mutex_lock(&d->lock);
    dp->bound = true;
    dp->has_port = found;
    if (found)
        dp->port = port;
    else
        dp->peer_closed = true;
    plat_mutex_unlock(&d->lock);
    if (!found)
        return -1;
    ports_port_set_user_data(&port, dp);
    drain(dp); /* the counts that waited while it travelled */
    core_dispatcher_notify(d);
    return 0;
}

static uint32_t dp_wire_state_size(core_dispatcher *d)
{
    (void)d;
    return DP_STATE_SIZE;
}

/*
 * A consumer's fd is read-only from the start (MojoCreateDataPipe reopens
 * the memfd for it; one that arrives must be, dp_ring_fd_check), so what it
 * sends on is too, however many processes it passes through. Serialising
 * cannot fail, so the reopen is not done here.
 */
static void dp_wire_serialize(core_dispatcher *d, uint8_t *state, int *fds)
{
    core_data_pipe *dp = (core_data_pipe *)d;
    plat_mutex_lock(&d->lock);
    dp_state_write(&dp->st, state);
    fds[0] = take_ring(dp);
    plat_mutex_unlock(&d->lock);
    assert(dp->producer || fds[0] < 0 || (fcntl(fds[0], F_GETFL) & O_ACCMODE) == O_RDONLY);
}

static const core_dispatcher_ops dp_ops = {
    .close = dp_close,
    .get_signals = dp_get_signals,
    .destroy = dp_destroy,
    .port_status_changed = dp_port_status_changed,
    .check_transit = dp_check_transit,
    .transit_port = dp_transit_port,
    .bind = dp_bind,
    .wire_state_size = dp_wire_state_size,
    .wire_serialize = dp_wire_serialize,
};

/* A new end (unbound, no port) owning fd and its mapping. NULL on ENOMEM. */
static core_data_pipe *dp_new(bool producer, const dp_state *st, int fd, uint8_t *ring)
{
    core_data_pipe *dp = calloc(1, sizeof(*dp));
    if (!dp)
        return NULL;
    core_dispatcher_init(&dp->base,
                         producer ? CORE_DISPATCHER_DATA_PIPE_PRODUCER
                                  : CORE_DISPATCHER_DATA_PIPE_CONSUMER,
                         &dp_ops);
    plat_cond_init(&dp->port_idle);
    dp->producer = producer;
    dp->st = *st;
    dp->fd = fd;
    dp->ring = ring;
    return dp;
}

static uint8_t *map_ring(int fd, uint32_t capacity, bool producer)
{
    void *p =
        mmap(NULL, capacity, producer ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? NULL : p;
}

static core_dispatcher *deserialize(bool producer, const uint8_t *state, size_t size, int *fds,
                                    const char **why)
{
    dp_state st;
    if (dp_state_read(state, size, &st, why) != 0 ||
        dp_ring_fd_check(fds[0], st.capacity, producer, why) != 0)
        return NULL;
    uint8_t *ring = map_ring(fds[0], st.capacity, producer);
    if (!ring) {
        *why = "data pipe ring that cannot be mapped";
        return NULL;
    }
    core_data_pipe *dp = dp_new(producer, &st, fds[0], ring);
    if (!dp) {
        munmap(ring, st.capacity);
        *why = "out of memory for a data pipe";
        return NULL;
    }
    fds[0] = -1;
    return &dp->base;
}

core_dispatcher *core_data_pipe_producer_deserialize(const uint8_t *state, size_t size, int *fds,
                                                     const char **why)
{
    return deserialize(true, state, size, fds, why);
}

core_dispatcher *core_data_pipe_consumer_deserialize(const uint8_t *state, size_t size, int *fds,
                                                     const char **why)
{
    return deserialize(false, state, size, fds, why);
}

/* ----------------------------------------------------------------- create */

/* A sealed memfd of `capacity` bytes, or -1. */
static int ring_fd_new(uint32_t capacity)
{
    int fd = memfd_create("cmojo-data-pipe", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -1;
    if (ftruncate(fd, capacity) != 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/*
 * The consumer's own open of the ring, read-only: a new open file
 * description (a dup would share the producer's O_RDWR one), so neither
 * this consumer nor any process it is sent to can write(2) the ring, map it
 * writable or mprotect its mapping writable. -1 when it cannot be had
 * (no /proc, out of fds).
 */
static int ring_fd_read_only(int fd)
{
    char path[32];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    return open(path, O_RDONLY | O_CLOEXEC);
}

/* Mojo's option rules; the capacity default is filled in. */
static MojoResult check_create_options(const struct MojoCreateDataPipeOptions *options,
                                       dp_state *st)
{
    st->element_size = 1;
    st->capacity = 0;
    if (options) {
        if (options->struct_size < sizeof(*options))
            return MOJO_RESULT_INVALID_ARGUMENT;
        if (options->flags & ~MOJO_CREATE_DATA_PIPE_FLAG_NONE)
            return MOJO_RESULT_UNIMPLEMENTED;
        st->element_size = options->element_num_bytes;
        st->capacity = options->capacity_num_bytes;
    }
    if (st->element_size == 0)
        return MOJO_RESULT_INVALID_ARGUMENT;
    if (st->capacity == 0) {
        uint32_t c = CMOJO_DEFAULT_DATA_PIPE_CAPACITY;
        c -= c % st->element_size;
        st->capacity = c ? c : st->element_size;
    }
    if (st->capacity % st->element_size)
        return MOJO_RESULT_INVALID_ARGUMENT;
    if (st->capacity > CMOJO_MAX_DATA_PIPE_CAPACITY)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    return MOJO_RESULT_OK;
}

MojoResult MojoCreateDataPipe(const struct MojoCreateDataPipeOptions *options,
                              MojoHandle *data_pipe_producer_handle,
                              MojoHandle *data_pipe_consumer_handle)
{
    if (!data_pipe_producer_handle || !data_pipe_consumer_handle)
        return MOJO_RESULT_INVALID_ARGUMENT;
    dp_state st;
    MojoResult rv = check_create_options(options, &st);
    if (rv != MOJO_RESULT_OK)
        return rv;
    core_state *core = core_get();
    if (!core)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;

    int pfd = ring_fd_new(st.capacity);
    int cfd = pfd >= 0 ? ring_fd_read_only(pfd) : -1;
    uint8_t *pring = cfd >= 0 ? map_ring(pfd, st.capacity, true) : NULL;
    uint8_t *cring = pring ? map_ring(cfd, st.capacity, false) : NULL;
    dp_state pst = {st.element_size, st.capacity, 0, st.capacity};
    dp_state cst = {st.element_size, st.capacity, 0, 0};
    core_data_pipe *p = cring ? dp_new(true, &pst, pfd, pring) : NULL;
    core_data_pipe *c = p ? dp_new(false, &cst, cfd, cring) : NULL;
    ports_port_ref a, b;
    if (!c || ports_node_create_port_pair(core_node(core), &a, &b) != PORTS_OK) {
        if (p) {
            p->fd = -1;
            p->ring = NULL;
            core_dispatcher_release(&p->base);
        }
        if (c) {
            c->fd = -1;
            c->ring = NULL;
            core_dispatcher_release(&c->base);
        }
        if (cring)
            munmap(cring, st.capacity);
        if (pring)
            munmap(pring, st.capacity);
        if (cfd >= 0)
            close(cfd);
        if (pfd >= 0)
            close(pfd);
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    }
    p->bound = c->bound = true;
    p->has_port = c->has_port = true;
    p->port = a;
    c->port = b;
    ports_port_set_user_data(&a, p);
    ports_port_set_user_data(&b, c);

    core_rc_enter();
    MojoHandle hp = MOJO_HANDLE_INVALID, hc = MOJO_HANDLE_INVALID;
    rv = core_add_dispatcher(core, &p->base, &hp);
    if (rv != MOJO_RESULT_OK) {
        core_dispatcher_close(&p->base);
        core_dispatcher_release(&p->base);
    }
    if (rv == MOJO_RESULT_OK) {
        rv = core_add_dispatcher(core, &c->base, &hc);
        if (rv != MOJO_RESULT_OK)
            MojoClose(hp);
    }
    if (rv != MOJO_RESULT_OK) {
        core_dispatcher_close(&c->base);
        core_dispatcher_release(&c->base);
    }
    core_rc_leave();
    if (rv != MOJO_RESULT_OK)
        return rv;
    *data_pipe_producer_handle = hp;
    *data_pipe_consumer_handle = hc;
    return MOJO_RESULT_OK;
}

/* ----------------------------------------------------------- operations */

static MojoResult get_end(MojoHandle handle, bool producer, core_data_pipe **out)
{
    core_dispatcher *d;
    MojoResult rv = core_resolve(
        handle, producer ? CORE_DISPATCHER_DATA_PIPE_PRODUCER : CORE_DISPATCHER_DATA_PIPE_CONSUMER,
        &d);
    if (rv == MOJO_RESULT_OK)
        *out = (core_data_pipe *)d;
    return rv;
}

/* Under the lock: whether operations may run (not closed, not travelling). */
static MojoResult usable(core_data_pipe *dp)
{
    if (dp->base.closed)
        return MOJO_RESULT_INVALID_ARGUMENT;
    return dp->bound ? MOJO_RESULT_OK : MOJO_RESULT_BUSY;
}

/*
 * The start of every operation on an end: resolves the handle, enters a
 * request context and takes the lock. *out is NULL if the handle did not
 * resolve (then nothing is held and the lookup's result comes back);
 * otherwise the caller unlocks and ends with finish(), and the result is
 * usable()'s.
 */
static MojoResult op_begin(MojoHandle handle, bool producer, core_data_pipe **out)
{
    *out = NULL;
    core_data_pipe *dp;
    MojoResult rv = get_end(handle, producer, &dp);
    if (rv != MOJO_RESULT_OK)
        return rv;
    core_rc_enter();
    plat_mutex_lock(&dp->base.lock);
    *out = dp;
    return usable(dp);
}

/* Ring copies, with the wrap. Under the lock. */
static void ring_put(core_data_pipe *dp, const uint8_t *src, uint32_t n)
{
    uint32_t first = dp->st.capacity - dp->st.offset;
    if (first > n)
        first = n;
    memcpy(dp->ring + dp->st.offset, src, first);
    memcpy(dp->ring, src + first, n - first);
}

static void ring_get(const core_data_pipe *dp, uint8_t *dst, uint32_t n)
{
    uint32_t first = dp->st.capacity - dp->st.offset;
    if (first > n)
        first = n;
    memcpy(dst, dp->ring + dp->st.offset, first);
    memcpy(dst + first, dp->ring, n - first);
}

/* Under the lock: moves the offset past n bytes. */
static void advance(core_data_pipe *dp, uint32_t n)
{
    dp->st.offset = (uint32_t)(((uint64_t)dp->st.offset + n) % dp->st.capacity);
}

/*
 * The end of every operation: sends the count it owes (taken with the port
 * under the same lock hold as the state change), then re-evaluates triggers.
 */
static MojoResult finish(core_data_pipe *dp, MojoResult rv, bool send, ports_port_ref *port,
                         uint32_t num_bytes)
{
    if (send)
        send_count(dp, port, dp->producer ? DP_CONTROL_DATA_WAS_WRITTEN : DP_CONTROL_DATA_WAS_READ,
                   num_bytes);
    core_dispatcher_notify(&dp->base);
    core_dispatcher_release(&dp->base);
    core_rc_leave();
    return rv;
}

MojoResult MojoWriteData(MojoHandle data_pipe_producer_handle, const void *elements,
                         uint32_t *num_bytes, const struct MojoWriteDataOptions *options)
{
    uint32_t flags;
    if (!num_bytes || !core_options_ok(options, MOJO_WRITE_DATA_FLAG_ALL_OR_NONE, &flags) ||
        (*num_bytes && !elements))
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_data_pipe *dp;
    MojoResult rv = op_begin(data_pipe_producer_handle, true, &dp);
    if (!dp)
        return rv;
    ports_port_ref port;
    bool send = false;
    uint32_t n = 0;
    if (rv != MOJO_RESULT_OK)
        ;
    else if (dp->two_phase)
        rv = MOJO_RESULT_BUSY;
    else if (dp->peer_closed)
        rv = MOJO_RESULT_FAILED_PRECONDITION;
    else if (*num_bytes % dp->st.element_size)
        rv = MOJO_RESULT_INVALID_ARGUMENT;
    else if (*num_bytes == 0)
        ; /* nothing to do */
    else if ((flags & MOJO_WRITE_DATA_FLAG_ALL_OR_NONE) && *num_bytes > dp->st.count)
        rv = MOJO_RESULT_OUT_OF_RANGE;
    else if (dp->st.count == 0)
        rv = MOJO_RESULT_SHOULD_WAIT;
    else {
        n = *num_bytes < dp->st.count ? *num_bytes : dp->st.count;
        ring_put(dp, elements, n);
        advance(dp, n);
        dp->st.count -= n;
        *num_bytes = n;
        send = port_use_begin(dp, &port);
    }
    plat_mutex_unlock(&dp->base.lock);
    return finish(dp, rv, send, &port, n);
}

/*
 * Begins a two-phase operation on either end: the span is the contiguous
 * part of the free room (producer) or of the readable bytes (consumer).
 */
static MojoResult begin_two_phase(MojoHandle handle, bool producer, uint32_t flags, void **buffer,
                                  uint32_t *buffer_num_bytes)
{
    core_data_pipe *dp;
    MojoResult rv = op_begin(handle, producer, &dp);
    if (!dp)
        return rv;
    uint32_t span = dp->st.capacity - dp->st.offset;
    if (span > dp->st.count)
        span = dp->st.count;
    if (rv != MOJO_RESULT_OK)
        ;
    else if (dp->two_phase)
        rv = MOJO_RESULT_BUSY;
    else if (producer && dp->peer_closed)
        rv = MOJO_RESULT_FAILED_PRECONDITION;
    else if ((dp->new_data = false), span == 0)
        rv = dp->peer_closed ? MOJO_RESULT_FAILED_PRECONDITION : MOJO_RESULT_SHOULD_WAIT;
    else if ((flags & MOJO_BEGIN_WRITE_DATA_FLAG_ALL_OR_NONE) && *buffer_num_bytes > span)
        rv = MOJO_RESULT_OUT_OF_RANGE;
    else {
        dp->two_phase = true;
        dp->two_phase_size = span;
        *buffer = dp->ring + dp->st.offset;
        *buffer_num_bytes = span;
    }
    plat_mutex_unlock(&dp->base.lock);
    return finish(dp, rv, false, NULL, 0);
}

/*
 * Ends a two-phase operation on either end, committing (producer) or
 * removing (consumer) the first num_bytes of the span. The operation ends
 * even when the size is wrong; then nothing changes.
 */
static MojoResult end_two_phase(MojoHandle handle, bool producer, uint32_t num_bytes)
{
    core_data_pipe *dp;
    MojoResult rv = op_begin(handle, producer, &dp);
    if (!dp)
        return rv;
    ports_port_ref port;
    bool send = false;
    if (rv != MOJO_RESULT_OK)
        ;
    else if (!dp->two_phase)
        rv = MOJO_RESULT_FAILED_PRECONDITION;
    else if (num_bytes > dp->two_phase_size || num_bytes % dp->st.element_size)
        rv = MOJO_RESULT_INVALID_ARGUMENT;
    else if (num_bytes) {
        advance(dp, num_bytes);
        dp->st.count -= num_bytes;
        send = port_use_begin(dp, &port);
    }
    if (rv != MOJO_RESULT_FAILED_PRECONDITION)
        dp->two_phase = false;
    plat_mutex_unlock(&dp->base.lock);
    return finish(dp, rv, send, &port, num_bytes);
}

MojoResult MojoBeginWriteData(MojoHandle data_pipe_producer_handle,
                              const struct MojoBeginWriteDataOptions *options, void **buffer,
                              uint32_t *buffer_num_bytes)
{
    uint32_t flags;
    if (!buffer || !buffer_num_bytes ||
        !core_options_ok(options, MOJO_BEGIN_WRITE_DATA_FLAG_ALL_OR_NONE, &flags))
        return MOJO_RESULT_INVALID_ARGUMENT;
    return begin_two_phase(data_pipe_producer_handle, true, flags, buffer, buffer_num_bytes);
}

MojoResult MojoEndWriteData(MojoHandle data_pipe_producer_handle, uint32_t num_bytes_written,
                            const struct MojoEndWriteDataOptions *options)
{
    if (!core_options_ok(options, 0, NULL))
        return MOJO_RESULT_INVALID_ARGUMENT;
    return end_two_phase(data_pipe_producer_handle, true, num_bytes_written);
}

#define READ_FLAGS                                                                                 \
    (MOJO_READ_DATA_FLAG_ALL_OR_NONE | MOJO_READ_DATA_FLAG_DISCARD | MOJO_READ_DATA_FLAG_QUERY |   \
     MOJO_READ_DATA_FLAG_PEEK)

MojoResult MojoReadData(MojoHandle data_pipe_consumer_handle,
                        const struct MojoReadDataOptions *options, void *elements,
                        uint32_t *num_bytes)
{
    uint32_t flags;
    if (!num_bytes || !core_options_ok(options, READ_FLAGS, &flags))
        return MOJO_RESULT_INVALID_ARGUMENT;
    bool discard = flags & MOJO_READ_DATA_FLAG_DISCARD, query = flags & MOJO_READ_DATA_FLAG_QUERY,
         peek = flags & MOJO_READ_DATA_FLAG_PEEK;
    if (discard + query + peek > 1 || (!discard && !query && *num_bytes && !elements))
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_data_pipe *dp;
    MojoResult rv = op_begin(data_pipe_consumer_handle, false, &dp);
    if (!dp)
        return rv;
    ports_port_ref port;
    bool send = false;
    uint32_t n = 0;
    if (rv != MOJO_RESULT_OK)
        ;
    else if (dp->two_phase)
        rv = MOJO_RESULT_BUSY;
    else if ((dp->new_data = false), query)
        *num_bytes = dp->st.count;
    else if (*num_bytes % dp->st.element_size)
        rv = MOJO_RESULT_INVALID_ARGUMENT;
    else if ((flags & MOJO_READ_DATA_FLAG_ALL_OR_NONE) && *num_bytes > dp->st.count)
        rv = dp->peer_closed ? MOJO_RESULT_FAILED_PRECONDITION : MOJO_RESULT_OUT_OF_RANGE;
    else if ((n = *num_bytes < dp->st.count ? *num_bytes : dp->st.count) == 0)
        rv = dp->peer_closed ? MOJO_RESULT_FAILED_PRECONDITION : MOJO_RESULT_SHOULD_WAIT;
    else {
        if (!discard)
            ring_get(dp, elements, n);
        if (!peek) {
            advance(dp, n);
            dp->st.count -= n;
            send = port_use_begin(dp, &port);
        }
        *num_bytes = n;
    }
    plat_mutex_unlock(&dp->base.lock);
    return finish(dp, rv, send, &port, n);
}

MojoResult MojoBeginReadData(MojoHandle data_pipe_consumer_handle,
                             const struct MojoBeginReadDataOptions *options, const void **buffer,
                             uint32_t *buffer_num_bytes)
{
    if (!buffer || !buffer_num_bytes || !core_options_ok(options, 0, NULL))
        return MOJO_RESULT_INVALID_ARGUMENT;
    void *span = NULL;
    MojoResult rv = begin_two_phase(data_pipe_consumer_handle, false, 0, &span, buffer_num_bytes);
    if (rv == MOJO_RESULT_OK)
        *buffer = span;
    return rv;
}

MojoResult MojoEndReadData(MojoHandle data_pipe_consumer_handle, uint32_t num_bytes_read,
                           const struct MojoEndReadDataOptions *options)
{
    if (!core_options_ok(options, 0, NULL))
        return MOJO_RESULT_INVALID_ARGUMENT;
    return end_two_phase(data_pipe_consumer_handle, false, num_bytes_read);
}
