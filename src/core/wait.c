/*
 * MojoWait / MojoWaitMany (include/cmojo/wait.h): blocking waits built on a
 * private trap whose handler wakes the waiting thread.
 */
#include "cmojo/wait.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/core.h"
#include "core/request_context.h"
#include "core/trap.h"
#include "mojo/public/c/system/functions.h"
#include "mojo/public/c/system/trap.h"
#include "platform/wakeup.h"

/*
 * Handles whose dispatchers and first-look states live on the stack; a wait
 * on more allocates (MojoWaitMany on a long list is rare).
 */
#define WAIT_STACK_HANDLES 16

typedef struct waiter waiter;

/* One per watched handle; its address is the trigger context. */
typedef struct wait_slot {
    waiter *w;
    uint32_t index;
} wait_slot;

/* waiter.claim: which event the wait reports. */
enum { CLAIM_NONE = 0, CLAIM_WRITING = 1, CLAIM_DONE = 2 };

/*
 * Shared by the waiting thread and the trap handler, which may run on another
 * thread and, when the wait itself runs inside a trap handler, after the wait
 * returned (the trap's CANCELLED events are then deferred). So it is counted:
 * one reference for the waiting thread, one per trigger until its CANCELLED,
 * one per wake-up in flight.
 *
 * No lock: the first non-CANCELLED event claims the result (CLAIM_NONE ->
 * CLAIM_WRITING), writes index and result, and publishes them
 * (CLAIM_DONE); a CANCELLED sets `cancelled`. Either then sets the wake-up,
 * whose acquire on the waiting side makes what was written before visible.
 */
struct waiter {
    atomic_uint refs;
    plat_wakeup wakeup;
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

static void wake(void *arg)
{
    waiter *w = arg;
    plat_wakeup_set(&w->wakeup);
    waiter_release(w);
}

static void on_event(const struct MojoTrapEvent *event)
{
    wait_slot *slot = (wait_slot *)event->trigger_context;
    waiter *w = slot->w;
    if (event->result == MOJO_RESULT_CANCELLED) {
        atomic_store(&w->cancelled, true);
    } else {
        unsigned none = CLAIM_NONE;
        if (atomic_compare_exchange_strong(&w->claim, &none, CLAIM_WRITING)) {
            w->index = slot->index;
            w->result = event->result;
            atomic_store_explicit(&w->claim, CLAIM_DONE, memory_order_release);
        }
    }
    /*
     * Wake the waiter only after this delivery has let go of its locks: woken
     * at once, it would close the trap and block on the lock this thread
     * still holds, costing two extra context switches per wait.
     */
    atomic_fetch_add_explicit(&w->refs, 1, memory_order_relaxed);
    core_rc_after_delivery(wake, w);
    if (event->result == MOJO_RESULT_CANCELLED)
        waiter_release(w); /* the trigger's reference: this was its last event */
}

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

/* Waits on a trap with no handle; SHOULD_WAIT never comes out of here. */
static MojoResult wait_with_trap(core_dispatcher **d, const MojoHandleSignals *signals,
                                 uint32_t num_handles, MojoDeadline deadline, uint32_t *index)
{
    waiter *w = calloc(1, sizeof(*w) + num_handles * sizeof(wait_slot));
    if (!w)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    atomic_init(&w->refs, 1);
    plat_wakeup_init(&w->wakeup);
    atomic_init(&w->claim, CLAIM_NONE);
    atomic_init(&w->cancelled, false);

    MojoResult rv;
    core_trap *trap = core_trap_new(on_event);
    if (!trap) {
        rv = MOJO_RESULT_RESOURCE_EXHAUSTED;
        goto out;
    }
    for (uint32_t i = 0; i < num_handles; i++) {
        w->slots[i] = (wait_slot){w, i};
        atomic_fetch_add_explicit(&w->refs, 1, memory_order_relaxed);
        rv = core_trap_add_trigger(trap, d[i], signals[i], MOJO_TRIGGER_CONDITION_SIGNALS_SATISFIED,
                                   (uintptr_t)&w->slots[i]);
        if (rv != MOJO_RESULT_OK) {
            waiter_release(w); /* no trigger, no CANCELLED to come */
            *index = i;
            goto out;
        }
    }

    struct MojoTrapEvent ready;
    uint32_t num_ready = 1;
    rv = core_trap_arm(trap, &num_ready, &ready);
    if (rv == MOJO_RESULT_FAILED_PRECONDITION) {
        /* Became ready after the first look: no need to block. */
        *index = ((wait_slot *)ready.trigger_context)->index;
        rv = ready.result;
        goto out;
    }
    if (rv == MOJO_RESULT_NOT_FOUND) {
        /* Every trigger is gone already: each watched handle was closed. */
        rv = MOJO_RESULT_CANCELLED;
        goto out;
    }
    if (rv != MOJO_RESULT_OK)
        goto out;

    struct timespec until;
    if (deadline != MOJO_DEADLINE_INDEFINITE)
        until = deadline_at(deadline);
    plat_wakeup_wait(&w->wakeup, deadline == MOJO_DEADLINE_INDEFINITE ? NULL : &until);
    if (atomic_load_explicit(&w->claim, memory_order_acquire) == CLAIM_DONE) {
        *index = w->index;
        rv = w->result;
    } else if (atomic_load(&w->cancelled)) {
        rv = MOJO_RESULT_CANCELLED; /* a watched handle was closed */
    } else {
        rv = MOJO_RESULT_DEADLINE_EXCEEDED;
    }

out:
    if (trap)
        core_trap_close(trap);
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
                           : wait_with_trap(d, signals, num_handles, deadline, &index);
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
