/*
 * MojoWait / MojoWaitMany (include/cmojo/wait.h): blocking waits built on a
 * private trap whose handler wakes the waiting thread.
 */
#include "cmojo/wait.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/request_context.h"
#include "mojo/public/c/system/functions.h"
#include "mojo/public/c/system/trap.h"
#include "platform/lock.h"

typedef struct waiter waiter;

/* One per watched handle; its address is the trigger context. */
typedef struct wait_slot {
    waiter *w;
    uint32_t index;
} wait_slot;

/*
 * Shared by the waiting thread and the trap handler, which may run on another
 * thread and, when the wait itself runs inside a trap handler, after the wait
 * returned (the trap's CANCELLED events are then deferred). So it is counted:
 * one reference for the waiting thread, one per trigger until its CANCELLED,
 * one per wake-up in flight.
 */
struct waiter {
    atomic_uint refs;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* Under lock. */
    bool fired;
    uint32_t index;
    MojoResult result;
    bool cancelled; /* a watched handle was closed */
    wait_slot slots[];
};

static void waiter_release(waiter *w)
{
    if (atomic_fetch_sub_explicit(&w->refs, 1, memory_order_acq_rel) != 1)
        return;
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

static void wake(void *arg)
{
    waiter *w = arg;
    pthread_cond_broadcast(&w->cond);
    waiter_release(w);
}

static void on_event(const struct MojoTrapEvent *event)
{
    wait_slot *slot = (wait_slot *)event->trigger_context;
    waiter *w = slot->w;
    pthread_mutex_lock(&w->lock);
    if (event->result == MOJO_RESULT_CANCELLED) {
        w->cancelled = true;
    } else if (!w->fired) {
        w->fired = true;
        w->index = slot->index;
        w->result = event->result;
    }
    pthread_mutex_unlock(&w->lock);
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
 * Answers without a trap when it can: an invalid handle (first in order), or
 * else a handle already satisfied or never satisfiable. SHOULD_WAIT otherwise.
 */
static MojoResult check_now(const MojoHandle *handles, const MojoHandleSignals *signals, uint32_t n,
                            uint32_t *index)
{
    struct MojoHandleSignalsState st;
    for (uint32_t i = 0; i < n; i++) {
        MojoResult rv = MojoQueryHandleSignalsState(handles[i], &st);
        for (uint32_t j = 0; j < i && rv == MOJO_RESULT_OK; j++)
            if (handles[j] == handles[i])
                rv = MOJO_RESULT_INVALID_ARGUMENT; /* listed twice */
        if (rv != MOJO_RESULT_OK) {
            *index = i;
            return rv;
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        if (MojoQueryHandleSignalsState(handles[i], &st) != MOJO_RESULT_OK)
            continue; /* closed since: the trap will say so */
        if (st.satisfied_signals & signals[i]) {
            *index = i;
            return MOJO_RESULT_OK;
        }
        if (!(st.satisfiable_signals & signals[i])) {
            *index = i;
            return MOJO_RESULT_FAILED_PRECONDITION;
        }
    }
    return MOJO_RESULT_SHOULD_WAIT;
}

/* Waits on a trap; SHOULD_WAIT never comes out of here. */
static MojoResult wait_with_trap(const MojoHandle *handles, const MojoHandleSignals *signals,
                                 uint32_t num_handles, MojoDeadline deadline, uint32_t *index)
{
    waiter *w = calloc(1, sizeof(*w) + num_handles * sizeof(wait_slot));
    if (!w)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    atomic_init(&w->refs, 1);
    plat_mutex_init(&w->lock);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &attr);
    pthread_condattr_destroy(&attr);

    MojoHandle trap = MOJO_HANDLE_INVALID;
    MojoResult rv = MojoCreateTrap(on_event, NULL, &trap);
    if (rv != MOJO_RESULT_OK)
        goto out;
    for (uint32_t i = 0; i < num_handles; i++) {
        w->slots[i] = (wait_slot){w, i};
        atomic_fetch_add_explicit(&w->refs, 1, memory_order_relaxed);
        rv = MojoAddTrigger(trap, handles[i], signals[i], MOJO_TRIGGER_CONDITION_SIGNALS_SATISFIED,
                            (uintptr_t)&w->slots[i], NULL);
        if (rv != MOJO_RESULT_OK) {
            waiter_release(w); /* no trigger, no CANCELLED to come */
            *index = i;
            if (rv == MOJO_RESULT_ALREADY_EXISTS)
                rv = MOJO_RESULT_INVALID_ARGUMENT; /* a handle listed twice */
            goto out;
        }
    }

    struct MojoTrapEvent ready;
    uint32_t num_ready = 1;
    rv = MojoArmTrap(trap, NULL, &num_ready, &ready);
    if (rv == MOJO_RESULT_FAILED_PRECONDITION) {
        /* Became ready after the first look: no need to block. */
        *index = ((wait_slot *)ready.trigger_context)->index;
        rv = ready.result;
        goto out;
    }
    if (rv != MOJO_RESULT_OK)
        goto out;

    struct timespec until = deadline_at(deadline);
    pthread_mutex_lock(&w->lock);
    while (!w->fired && !w->cancelled) {
        if (deadline == MOJO_DEADLINE_INDEFINITE) {
            pthread_cond_wait(&w->cond, &w->lock);
        } else if (pthread_cond_timedwait(&w->cond, &w->lock, &until) == ETIMEDOUT) {
            break;
        }
    }
    if (w->fired) {
        *index = w->index;
        rv = w->result;
    } else if (w->cancelled) {
        rv = MOJO_RESULT_CANCELLED; /* a watched handle was closed */
    } else {
        rv = MOJO_RESULT_DEADLINE_EXCEEDED;
    }
    pthread_mutex_unlock(&w->lock);

out:
    if (trap != MOJO_HANDLE_INVALID)
        MojoClose(trap);
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

    uint32_t index = UINT32_MAX;
    MojoResult rv = check_now(handles, signals, num_handles, &index);
    if (rv == MOJO_RESULT_SHOULD_WAIT)
        rv = deadline == 0 ? MOJO_RESULT_DEADLINE_EXCEEDED
                           : wait_with_trap(handles, signals, num_handles, deadline, &index);
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
