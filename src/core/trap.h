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

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/dispatcher.h"
#include "mojo/public/c/system/trap.h"

typedef struct core_trap core_trap;

struct core_trigger {
    atomic_uint refs;
    core_trap *trap;          /* referenced */
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

    pthread_mutex_t delivery_lock; /* held while the handler runs */
    bool cancel_delivered;         /* under delivery_lock */
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
 * The same traps without a handle, for MojoWait (wait.c), which needs a trap
 * only for the length of one call: no handle table entry to add and remove,
 * no lookups. core_trap_new returns the caller's one reference (NULL when
 * out of memory); core_trap_close closes the trap and drops it, delivering
 * the triggers' CANCELLED events as MojoClose would. core_trap_add_trigger
 * and core_trap_arm are MojoAddTrigger and MojoArmTrap with the handles
 * already resolved (watched stays the caller's; the trigger takes its own
 * reference) and the arguments already checked. Any thread.
 */
core_trap *core_trap_new(MojoTrapEventHandler handler);
void core_trap_close(core_trap *trap);
MojoResult core_trap_add_trigger(core_trap *trap, core_dispatcher *watched,
                                 MojoHandleSignals signals, MojoTriggerCondition condition,
                                 uintptr_t context);
MojoResult core_trap_arm(core_trap *trap, uint32_t *num_blocking_events,
                         struct MojoTrapEvent *blocking_events);

#endif /* CMOJO_CORE_TRAP_H_ */
