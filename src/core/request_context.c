#include "core/request_context.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/trap.h"

typedef struct rc_event {
    core_trigger *trigger;
    MojoResult result;
    struct MojoHandleSignalsState state;
    bool within_api_call;
} rc_event;

/*
 * Most calls queue nothing or one event; a few inline slots avoid the heap.
 * A larger queue is allocated on demand and freed once delivered, so a
 * thread that exits holds nothing.
 */
#define RC_INLINE_EVENTS 8

typedef struct rc_state {
    unsigned depth;
    bool system;        /* the outermost entry was the IO thread's, not an API call */
    unsigned api_depth; /* API calls in progress on this thread */
    rc_event *events;
    size_t head, count, cap;
    rc_event inline_events[RC_INLINE_EVENTS];
} rc_state;

static _Thread_local rc_state rc;

/* Actions for after the current delivery; a handler rarely queues more than one. */
#define RC_AFTER_DELIVERY 4
static _Thread_local struct {
    void (*fn)(void *arg);
    void *arg;
} rc_after[RC_AFTER_DELIVERY];
static _Thread_local unsigned rc_num_after;

void core_rc_after_delivery(void (*fn)(void *arg), void *arg)
{
    if (rc_num_after == RC_AFTER_DELIVERY) {
        fn(arg); /* full: rather early than never */
        return;
    }
    rc_after[rc_num_after].fn = fn;
    rc_after[rc_num_after].arg = arg;
    rc_num_after++;
}

void core_rc_run_after_delivery(void)
{
    for (unsigned i = 0; i < rc_num_after; i++)
        rc_after[i].fn(rc_after[i].arg);
    rc_num_after = 0;
}

void core_rc_enter(void)
{
    rc.depth++;
    rc.api_depth++;
}

void core_rc_enter_system(void)
{
    if (rc.depth++ == 0)
        rc.system = true;
}

bool core_rc_inside(void)
{
    return rc.depth > 0;
}

void core_rc_queue(core_trigger *t, MojoResult result, const struct MojoHandleSignalsState *state)
{
    assert(rc.depth > 0);
    if (!rc.events) {
        rc.events = rc.inline_events;
        rc.cap = RC_INLINE_EVENTS;
    }
    if (rc.count == rc.cap && rc.head > 0) {
        /*
         * Reuse the slots already delivered: a chain of handlers that keeps
         * itself going inside one call must not grow the queue forever.
         */
        memmove(rc.events, rc.events + rc.head, (rc.count - rc.head) * sizeof(*rc.events));
        rc.count -= rc.head;
        rc.head = 0;
    }
    if (rc.count == rc.cap) {
        size_t cap = rc.cap * 2;
        rc_event *grown = malloc(cap * sizeof(*grown));
        if (!grown)
            abort(); /* an event dropped would break "CANCELLED is always last" */
        memcpy(grown, rc.events, rc.count * sizeof(*grown));
        if (rc.events != rc.inline_events)
            free(rc.events);
        rc.events = grown;
        rc.cap = cap;
    }
    core_trigger_acquire(t);
    rc.events[rc.count++] = (rc_event){t, result, *state, !rc.system || rc.api_depth > 0};
}

static void leave(void)
{
    assert(rc.depth > 0);
    if (rc.depth > 1) {
        rc.depth--;
        return;
    }
    /*
     * Outermost: deliver. depth stays 1 while handlers run, so what they
     * queue lands behind the current event and is delivered by this loop.
     */
    while (rc.head < rc.count) {
        rc_event ev = rc.events[rc.head++];
        core_trigger_deliver(ev.trigger, ev.result, &ev.state, ev.within_api_call);
        core_trigger_release(ev.trigger);
    }
    if (rc.events != rc.inline_events)
        free(rc.events);
    rc.events = NULL;
    rc.head = rc.count = rc.cap = 0;
    rc.depth = 0;
    rc.system = false;
}

void core_rc_leave(void)
{
    assert(rc.api_depth > 0);
    rc.api_depth--;
    leave();
}

void core_rc_leave_system(void)
{
    leave();
}
