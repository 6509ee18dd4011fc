/*
 * MojoWait / MojoWaitMany (include/cmojo/wait.h): blocking waits built on a
 * private trap whose handler wakes the waiting thread.
 */
#include "platform/lock.h"
#include "cmojo/wait.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mojo/public/c/system/functions.h"
#include "mojo/public/c/system/trap.h"

typedef struct waiter waiter;

/* One per watched handle; its address is the trigger context. */
typedef struct wait_slot {
    waiter *w;
    uint32_t index;
} wait_slot;

/*
 * Shared by the waiting thread and the trap handler. Heap-allocated because
 * the trap's CANCELLED events may be delivered after the wait returns (when
 * the wait runs inside a trap handler, events it causes are deferred until
 * that handler returns); whoever finishes last frees it.
 */
struct waiter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool fired;
    uint32_t index;
    MojoResult result;
    struct MojoHandleSignalsState state;
    uint32_t triggers;  /* added to the trap */
    uint32_t cancelled; /* CANCELLED events seen */
    bool abandoned;     /* the waiting thread is done with it */
    wait_slot slots[];
};

static void waiter_free(waiter *w)
{
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

static void on_event(const struct MojoTrapEvent *event)
{
    wait_slot *slot = (wait_slot *)event->trigger_context;
    waiter *w = slot->w;
    pthread_mutex_lock(&w->lock);
    if (event->result == MOJO_RESULT_CANCELLED) {
        /*
         * The waiter may free w as soon as it sees this (it can be the last
         * event of all), so wake it before letting go of the lock.
         */
        w->cancelled++;
        bool last = w->abandoned && w->cancelled == w->triggers;
        pthread_cond_broadcast(&w->cond);
        pthread_mutex_unlock(&w->lock);
        if (last)
            waiter_free(w);
        return;
    }
    if (!w->fired) {
        w->fired = true;
        w->index = slot->index;
        w->result = event->result;
        w->state = event->signals_state;
    }
    pthread_mutex_unlock(&w->lock);
    /*
     * After unlocking, so the woken thread does not run straight into the
     * lock. w stays alive: it is freed only after this trigger's CANCELLED,
     * which cannot be delivered while this handler runs.
     */
    pthread_cond_broadcast(&w->cond);
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
    if (sec > (uint64_t)(INT32_MAX)) /* far enough to be never */
        sec = INT32_MAX;
    ts.tv_sec += (time_t)sec;
    ts.tv_nsec += nsec;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
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

    waiter *w = calloc(1, sizeof(*w) + num_handles * sizeof(wait_slot));
    if (!w)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    plat_mutex_init(&w->lock);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &attr);
    pthread_condattr_destroy(&attr);

    MojoHandle trap = MOJO_HANDLE_INVALID;
    uint32_t index = UINT32_MAX;
    MojoResult rv = MojoCreateTrap(on_event, NULL, &trap);
    if (rv != MOJO_RESULT_OK)
        goto out;
    for (uint32_t i = 0; i < num_handles; i++) {
        w->slots[i] = (wait_slot){w, i};
        rv = MojoAddTrigger(trap, handles[i], signals[i], MOJO_TRIGGER_CONDITION_SIGNALS_SATISFIED,
                            (uintptr_t)&w->slots[i], NULL);
        if (rv != MOJO_RESULT_OK) {
            index = i;
            if (rv == MOJO_RESULT_ALREADY_EXISTS)
                rv = MOJO_RESULT_INVALID_ARGUMENT; /* a handle listed twice */
            goto out;
        }
        pthread_mutex_lock(&w->lock);
        w->triggers++;
        pthread_mutex_unlock(&w->lock);
    }

    struct MojoTrapEvent ready;
    uint32_t num_ready = 1;
    rv = MojoArmTrap(trap, NULL, &num_ready, &ready);
    if (rv == MOJO_RESULT_FAILED_PRECONDITION) {
        /* Already satisfied (or unsatisfiable): no need to block. */
        index = ((wait_slot *)ready.trigger_context)->index;
        rv = ready.result;
        goto out;
    }
    if (rv != MOJO_RESULT_OK)
        goto out;

    struct timespec until = deadline_at(deadline);
    pthread_mutex_lock(&w->lock);
    while (!w->fired && w->cancelled == 0) {
        if (deadline == MOJO_DEADLINE_INDEFINITE) {
            pthread_cond_wait(&w->cond, &w->lock);
        } else if (pthread_cond_timedwait(&w->cond, &w->lock, &until) == ETIMEDOUT) {
            break;
        }
    }
    if (w->fired) {
        index = w->index;
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
    pthread_mutex_lock(&w->lock);
    w->abandoned = true;
    bool last = w->cancelled == w->triggers;
    pthread_mutex_unlock(&w->lock);
    if (last)
        waiter_free(w);
    return rv;
}

MojoResult MojoWait(MojoHandle handle, MojoHandleSignals signals, MojoDeadline deadline,
                    struct MojoHandleSignalsState *signals_state)
{
    return MojoWaitMany(&handle, &signals, 1, deadline, NULL, signals_state);
}
