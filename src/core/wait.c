/*
 * MojoWait / MojoWaitMany (include/cmojo/wait.h): blocking waits on
 * trap-less triggers (core/trap.h) that wake the waiting thread.
 */
#include "cmojo/wait.h"

#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/core.h"
#include "core/request_context.h"
#include "core/trap.h"
#include "mojo/public/c/system/functions.h"
#include "node/node.h"
#include "platform/io.h"
#include "platform/mem.h"
#include "platform/wakeup.h"

/*
 * Handles whose dispatchers and first-look states live on the stack; a wait
 * on more allocates (MojoWaitMany on a long list is rare).
 */
#define WAIT_STACK_HANDLES 16

typedef struct waiter waiter;

/* One per watched handle; its address is the trigger's context. */
typedef struct wait_slot {
    waiter *w;
    uint32_t index;
    core_trigger *t;
} wait_slot;

/* waiter.claim: which event the wait reports. */
enum { CLAIM_NONE = 0, CLAIM_WRITING = 1, CLAIM_DONE = 2 };

/*
 * Shared by the waiting thread and the triggers, whose wake-ups may still be
 * on their way (queued in another thread's request context, or in this
 * thread's when the wait runs inside a trap handler) after the wait
 * returned. So it is counted: one reference for the waiting thread, one per
 * trigger until the trigger is freed.
 *
 * No lock: the first trigger to fire claims the result (CLAIM_NONE ->
 * CLAIM_WRITING), writes index and result, and publishes them (CLAIM_DONE);
 * a closed handle sets `cancelled`. Either then sets the wake-up, whose
 * acquire on the waiting side makes what was written before visible.
 */
struct waiter {
    atomic_uint refs;
    plat_wakeup wakeup;
    plat_io *guest_of; /* the IO loop this thread polls while it waits, or NULL */
    atomic_uint claim;
    uint32_t index;        /* written by the claimer */
    MojoResult result;     /* written by the claimer */
    atomic_bool cancelled; /* a watched handle was closed */
    wait_slot slots[];
};

static void waiter_release(waiter *w)
{
    if (atomic_fetch_sub_explicit(&w->refs, 1, memory_order_acq_rel) == 1)
        free(w);
}

/* Under the watched dispatcher's lock: record, nothing more. */
static void on_claim(void *ctx, MojoResult result)
{
    wait_slot *slot = ctx;
    waiter *w = slot->w;
    if (result == MOJO_RESULT_CANCELLED) {
        atomic_store(&w->cancelled, true);
        return;
    }
    unsigned none = CLAIM_NONE;
    if (atomic_compare_exchange_strong(&w->claim, &none, CLAIM_WRITING)) {
        w->index = slot->index;
        w->result = result;
        atomic_store_explicit(&w->claim, CLAIM_DONE, memory_order_release);
    }
}

/*
 * With no lock held (woken while the firing thread still held one, the
 * waiter would run straight into it): wake the waiter.
 */
static void on_wake(void *ctx)
{
    waiter *w = ((wait_slot *)ctx)->w;
    plat_wakeup_set(&w->wakeup);
    if (w->guest_of)
        plat_io_guest_wake(w->guest_of);
}

static void on_done(void *ctx)
{
    waiter_release(((wait_slot *)ctx)->w);
}

static const core_wait_ops wait_ops = {on_claim, on_wake, on_done};

static void fill_states(const MojoHandle *handles, uint32_t n,
                        struct MojoHandleSignalsState *states)
{
    if (!states)
        return;
    for (uint32_t i = 0; i < n; i++)
        if (MojoQueryHandleSignalsState(handles[i], &states[i]) != MOJO_RESULT_OK)
            memset(&states[i], 0, sizeof(states[i]));
}

/* Absolute CLOCK_MONOTONIC time `deadline` microseconds from now. */
static struct timespec deadline_at(MojoDeadline deadline)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t sec = deadline / 1000000u;
    long nsec = (long)(deadline % 1000000u) * 1000;
    if (sec > (uint64_t)INT32_MAX) /* far enough to be never */
        sec = INT32_MAX;
    ts.tv_sec += (time_t)sec;
    ts.tv_nsec += nsec;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/*
 * Resolves every handle (a reference each, in d[], *resolved of them) and
 * answers without a trap when it can: an invalid handle (first in order),
 * or else a handle already satisfied or never satisfiable. SHOULD_WAIT
 * otherwise.
 */
static MojoResult check_now(const MojoHandle *handles, const MojoHandleSignals *signals, uint32_t n,
                            core_dispatcher **d, uint32_t *resolved, uint32_t *index)
{
    struct MojoHandleSignalsState st[WAIT_STACK_HANDLES];
    for (uint32_t i = 0; i < n; i++) {
        MojoResult rv = core_resolve(handles[i], 0, &d[i]);
        if (rv != MOJO_RESULT_OK) {
            *index = i;
            return rv;
        }
        *resolved = i + 1;
        for (uint32_t j = 0; j < i && rv == MOJO_RESULT_OK; j++)
            if (handles[j] == handles[i])
                rv = MOJO_RESULT_INVALID_ARGUMENT; /* listed twice */
        struct MojoHandleSignalsState now;
        if (rv == MOJO_RESULT_OK)
            rv = core_dispatcher_query(d[i], i < WAIT_STACK_HANDLES ? &st[i] : &now);
        if (rv != MOJO_RESULT_OK) {
            *index = i;
            return rv;
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        struct MojoHandleSignalsState now;
        const struct MojoHandleSignalsState *s = &now;
        if (i < WAIT_STACK_HANDLES)
            s = &st[i];
        else if (core_dispatcher_query(d[i], &now) != MOJO_RESULT_OK)
            continue; /* closed since: the trap will say so */
        if (s->satisfied_signals & signals[i]) {
            *index = i;
            return MOJO_RESULT_OK;
        }
        if (!(s->satisfiable_signals & signals[i])) {
            *index = i;
            return MOJO_RESULT_FAILED_PRECONDITION;
        }
    }
    return MOJO_RESULT_SHOULD_WAIT;
}

/* What the claim says, if anything: OK, FAILED_PRECONDITION, CANCELLED or SHOULD_WAIT. */
static MojoResult claimed(waiter *w, uint32_t *index)
{
    if (atomic_load_explicit(&w->claim, memory_order_acquire) == CLAIM_DONE) {
        *index = w->index;
        return w->result;
    }
    if (atomic_load(&w->cancelled))
        return MOJO_RESULT_CANCELLED; /* a watched handle was closed */
    return MOJO_RESULT_SHOULD_WAIT;
}

/*
 * Blocks until the wake-up is set (or, polling, until the wait is claimed:
 * its wake-up may still be on its way from another thread) or the deadline
 * passes. True unless the deadline passed first. With a guest role
 * the thread polls the process's IO meanwhile (platform/io.h), so a message
 * from another process is read here rather than handed over by the IO
 * thread. What the IO it runs triggers (its own wake-up, or other trap
 * handlers, flagged as within this call) is delivered after each batch,
 * with no lock held.
 */
static bool block(waiter *w, const struct timespec *until)
{
    if (!w->guest_of)
        return plat_wakeup_wait(&w->wakeup, until);
    bool in_time = true;
    uint32_t index;
    while (in_time && !plat_wakeup_is_set(&w->wakeup) &&
           claimed(w, &index) == MOJO_RESULT_SHOULD_WAIT) {
        core_rc_enter();
        in_time = plat_io_guest_poll(w->guest_of, &w->wakeup, until);
        core_rc_leave();
    }
    return plat_wakeup_is_set(&w->wakeup) || claimed(w, &index) != MOJO_RESULT_SHOULD_WAIT;
}

/* Waits on one trigger per handle; SHOULD_WAIT never comes out of here. */
static MojoResult wait_with_triggers(core_dispatcher **d, const MojoHandleSignals *signals,
                                     uint32_t num_handles, MojoDeadline deadline, uint32_t *index)
{
    waiter *w = plat_zalloc(sizeof(*w) + num_handles * sizeof(wait_slot));
    if (!w)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    atomic_init(&w->refs, 1);
    plat_wakeup_init(&w->wakeup);
    atomic_init(&w->claim, CLAIM_NONE);
    atomic_init(&w->cancelled, false);
    /*
     * Claimed before any trigger exists, so every wake-up knows whether to
     * kick this thread out of epoll_wait. Not inside another call (a trap
     * handler's wait, say): the wake-ups of the IO this thread would run are
     * queued on its own request context, delivered only when that call
     * unwinds -- after this wait.
     */
    core_state *core = core_get();
    plat_io *io = core && !core_rc_inside() ? node_io(core_node_controller(core)) : NULL;
    if (io && plat_io_guest_begin(io))
        w->guest_of = io;

    /*
     * A trigger added to a handle that is ready claims at once, on this
     * thread; its wake-up is queued in this thread's request context (and,
     * if this wait runs inside a trap handler, delivered only later), so the
     * claim is what tells: no need to block.
     */
    MojoResult rv = MOJO_RESULT_SHOULD_WAIT;
    uint32_t added = 0;
    core_rc_enter();
    for (uint32_t i = 0; i < num_handles && rv == MOJO_RESULT_SHOULD_WAIT; i++) {
        w->slots[i] = (wait_slot){w, i, NULL};
        core_trigger *t = core_wait_trigger_new(d[i], signals[i], &wait_ops, &w->slots[i]);
        if (!t) {
            rv = MOJO_RESULT_RESOURCE_EXHAUSTED;
            break;
        }
        atomic_fetch_add_explicit(&w->refs, 1, memory_order_relaxed); /* the trigger's */
        w->slots[i].t = t;
        added = i + 1;
        if (!core_dispatcher_add_watcher(d[i], t)) {
            /* Closed since the first look. */
            *index = i;
            rv = MOJO_RESULT_CANCELLED;
            break;
        }
        rv = claimed(w, index);
    }
    core_rc_leave();

    if (rv == MOJO_RESULT_SHOULD_WAIT) {
        struct timespec until;
        if (deadline != MOJO_DEADLINE_INDEFINITE)
            until = deadline_at(deadline);
        bool woken = block(w, deadline == MOJO_DEADLINE_INDEFINITE ? NULL : &until);
        rv = claimed(w, index);
        /*
         * Woken by a trigger that lost the claim to one that is still
         * writing it (between its two stores): the answer is on its way.
         */
        while (woken && rv == MOJO_RESULT_SHOULD_WAIT) {
            sched_yield();
            rv = claimed(w, index);
        }
        if (rv == MOJO_RESULT_SHOULD_WAIT)
            rv = MOJO_RESULT_DEADLINE_EXCEEDED;
    }

    if (w->guest_of)
        plat_io_guest_end(w->guest_of);
    for (uint32_t i = 0; i < added; i++) {
        core_dispatcher_remove_watcher(d[i], w->slots[i].t);
        core_trigger_release(w->slots[i].t);
    }
    waiter_release(w);
    return rv;
}

MojoResult MojoWaitMany(const MojoHandle *handles, const MojoHandleSignals *signals,
                        uint32_t num_handles, MojoDeadline deadline, uint32_t *result_index,
                        struct MojoHandleSignalsState *signals_states)
{
    if (num_handles && (!handles || !signals))
        return MOJO_RESULT_INVALID_ARGUMENT;
    if (result_index)
        *result_index = UINT32_MAX;
    if (!num_handles) {
        if (deadline == MOJO_DEADLINE_INDEFINITE)
            return MOJO_RESULT_INVALID_ARGUMENT;
        if (deadline) {
            struct timespec ts = deadline_at(deadline);
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
                ;
        }
        return MOJO_RESULT_DEADLINE_EXCEEDED;
    }

    core_dispatcher *stack_d[WAIT_STACK_HANDLES];
    core_dispatcher **d = stack_d;
    if (num_handles > WAIT_STACK_HANDLES) {
        d = malloc(num_handles * sizeof(*d));
        if (!d)
            return MOJO_RESULT_RESOURCE_EXHAUSTED;
    }
    uint32_t index = UINT32_MAX, resolved = 0;
    MojoResult rv = check_now(handles, signals, num_handles, d, &resolved, &index);
    if (rv == MOJO_RESULT_SHOULD_WAIT)
        rv = deadline == 0 ? MOJO_RESULT_DEADLINE_EXCEEDED
                           : wait_with_triggers(d, signals, num_handles, deadline, &index);
    for (uint32_t i = 0; i < resolved; i++)
        core_dispatcher_release(d[i]);
    if (d != stack_d)
        free(d);
    if (rv == MOJO_RESULT_CANCELLED) {
        /* Which handle was closed: the first one that no longer resolves. */
        struct MojoHandleSignalsState st;
        for (uint32_t i = 0; i < num_handles && index == UINT32_MAX; i++)
            if (MojoQueryHandleSignalsState(handles[i], &st) == MOJO_RESULT_INVALID_ARGUMENT)
                index = i;
    }
    if (result_index && rv != MOJO_RESULT_DEADLINE_EXCEEDED)
        *result_index = index;
    fill_states(handles, num_handles, signals_states);
    return rv;
}

MojoResult MojoWait(MojoHandle handle, MojoHandleSignals signals, MojoDeadline deadline,
                    struct MojoHandleSignalsState *signals_state)
{
    return MojoWaitMany(&handle, &signals, 1, deadline, NULL, signals_state);
}
