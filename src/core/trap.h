/*
 * Traps and their triggers (MojoCreateTrap, MojoAddTrigger, ...).
 *
 * A trigger links one trap to one watched dispatcher. It sits in two lists:
 * the trap's (under the trap lock) and the dispatcher's watchers (under the
 * dispatcher lock). Whoever first marks it removed (MojoRemoveTrigger, the
 * trap closing, or the watched handle closing) takes it out of both and
 * queues its one CANCELLED event.
 *
 * Delivery: each trigger has a delivery lock held while its handler runs, so
 * events for one trigger never overlap across threads; an event other than
 * CANCELLED that is delivered after the trigger was removed is dropped, so
 * CANCELLED is always the last.
 */
#ifndef CMOJO_CORE_TRAP_H_
#define CMOJO_CORE_TRAP_H_

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/dispatcher.h"
#include "mojo/public/c/system/trap.h"

typedef struct core_trap core_trap;
typedef struct core_wait_ops core_wait_ops;

struct core_trigger {
    atomic_uint refs;
    core_trap *trap;          /* referenced; NULL for a wait's trigger */
    core_dispatcher *watched; /* referenced */
    uintptr_t context;
    MojoHandleSignals signals;
    MojoTriggerCondition condition;

    /* Under the trap lock. */
    struct MojoHandleSignalsState last_state;
    MojoResult ready; /* MOJO_RESULT_SHOULD_WAIT while the condition does not hold */

    /* Set (under the trap lock) by whoever removes the trigger; read anywhere. */
    atomic_bool removed;

    /* Under the watched dispatcher's lock. */
    core_trigger *next_watcher;

    plat_mutex delivery_lock; /* held while the handler runs */
    bool cancel_delivered;    /* under delivery_lock */

    /* A wait's trigger (see core_wait_trigger_new). */
    const core_wait_ops *wait_ops;
    void *wait_ctx;
    bool wait_fired; /* under the watched dispatcher's lock */
};

void core_trigger_acquire(core_trigger *t);
void core_trigger_release(core_trigger *t);

/* The watched dispatcher's state changed. Its lock is held. */
void core_trigger_notify(core_trigger *t, const struct MojoHandleSignalsState *state);

/*
 * The watched dispatcher closed (its lock is not held; it has already taken
 * t out of its watcher list): remove t from its trap and queue CANCELLED.
 */
void core_trigger_cancel_for_closed_handle(core_trigger *t);

/* Runs the handler for one queued event (request_context.c). */
void core_trigger_deliver(core_trigger *t, MojoResult result,
                          const struct MojoHandleSignalsState *state, bool within_api_call);

/*
 * A trigger with no trap, for a blocking wait (wait.c): no trap object, no
 * trap or delivery lock, no CANCELLED event when the wait takes it away.
 * Link it with core_dispatcher_add_watcher and unlink it with
 * core_dispatcher_remove_watcher; the caller holds the one reference
 * returned (NULL when out of memory), the trigger one on `watched`.
 *
 * The first time the watched signals are satisfied, or can never be (or the
 * handle is closed: MOJO_RESULT_CANCELLED), ops->claim runs, at once, under
 * the dispatcher's lock -- it must only record the result -- and ops->wake
 * follows on the same thread once no lock is held (the request context's
 * delivery). ops->done runs when the trigger is freed: nothing of the
 * trigger runs after it.
 */
struct core_wait_ops {
    void (*claim)(void *ctx, MojoResult result);
    void (*wake)(void *ctx);
    void (*done)(void *ctx);
};
core_trigger *core_wait_trigger_new(core_dispatcher *watched, MojoHandleSignals signals,
                                    const core_wait_ops *ops, void *ctx);

#endif /* CMOJO_CORE_TRAP_H_ */
