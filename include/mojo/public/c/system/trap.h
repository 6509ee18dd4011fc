/*
 * cmojo public API: traps, which call user code when handle signals change
 * (types, options and the handler signature).
 *
 * A trap holds triggers; each trigger watches some signals on one handle. An
 * armed trap that trips disarms itself and calls its handler once per
 * relevant trigger. In cmojo handlers always run with no internal lock held,
 * so a handler may call any API function, including on the handle that fired.
 *
 * Events raised while a thread is inside an API call are delivered when that
 * call returns (with MOJO_TRAP_EVENT_FLAG_WITHIN_API_CALL), never while any
 * internal lock is held. Events for one trigger are never delivered
 * concurrently, and a trigger's CANCELLED event is always its last.
 */
#ifndef MOJO_PUBLIC_C_SYSTEM_TRAP_H_
#define MOJO_PUBLIC_C_SYSTEM_TRAP_H_

#include <stdint.h>

#include "mojo/public/c/system/macros.h"
#include "mojo/public/c/system/system_export.h"
#include "mojo/public/c/system/types.h"

/* Flags reported to a handler in MojoTrapEvent.flags. */
typedef uint32_t MojoTrapEventFlags;

#define MOJO_TRAP_EVENT_FLAG_NONE ((MojoTrapEventFlags)0)
/*
 * The handler is running inside a Mojo API call made by this thread (e.g. a
 * write to a local pipe made the other end readable), so it re-enters user
 * code that is itself in the middle of a call.
 */
#define MOJO_TRAP_EVENT_FLAG_WITHIN_API_CALL ((MojoTrapEventFlags)1 << 0)

/* What a handler is told when a trigger fires. */
struct MOJO_ALIGNAS(8) MojoTrapEvent {
    /* sizeof(struct MojoTrapEvent) as cmojo knows it. */
    uint32_t struct_size;

    /* Bitwise OR of MOJO_TRAP_EVENT_FLAG_* values. */
    MojoTrapEventFlags flags;

    /* The |context| given to MojoAddTrigger() for the trigger that fired. */
    MOJO_POINTER_FIELD(uintptr_t, trigger_context);

    /*
     * Why it fired:
     *   MOJO_RESULT_OK                   the trigger's condition was met.
     *   MOJO_RESULT_FAILED_PRECONDITION  the condition can never be met again.
     *   MOJO_RESULT_CANCELLED            the trigger is gone (removed, its
     *                                    handle or its trap closed); always
     *                                    the trigger's last event, and
     *                                    delivered even to a disarmed trap.
     */
    MojoResult result;

    /* The watched handle's signals when the trap tripped. */
    struct MojoHandleSignalsState signals_state;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoTrapEvent) == 32, "MojoTrapEvent must be 32 bytes");

/*
 * When a trigger fires:
 *   SIGNALS_UNSATISFIED  when any watched signal goes from satisfied to not.
 *   SIGNALS_SATISFIED    when any watched signal goes from unsatisfied to
 *                        satisfied, or none of them can ever be satisfied.
 */
typedef uint32_t MojoTriggerCondition;

#define MOJO_TRIGGER_CONDITION_SIGNALS_UNSATISFIED ((MojoTriggerCondition)0)
#define MOJO_TRIGGER_CONDITION_SIGNALS_SATISFIED ((MojoTriggerCondition)1)

/* MojoCreateTrap() flags and options. */
typedef uint32_t MojoCreateTrapFlags;
#define MOJO_CREATE_TRAP_FLAG_NONE ((MojoCreateTrapFlags)0)

struct MOJO_ALIGNAS(8) MojoCreateTrapOptions {
    uint32_t struct_size; /* sizeof this structure as the caller knows it */
    MojoCreateTrapFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoCreateTrapOptions) == 8,
                   "MojoCreateTrapOptions must be 8 bytes");

/* MojoAddTrigger() flags and options. */
typedef uint32_t MojoAddTriggerFlags;
#define MOJO_ADD_TRIGGER_FLAG_NONE ((MojoAddTriggerFlags)0)

struct MOJO_ALIGNAS(8) MojoAddTriggerOptions {
    uint32_t struct_size;
    MojoAddTriggerFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoAddTriggerOptions) == 8,
                   "MojoAddTriggerOptions must be 8 bytes");

/* MojoRemoveTrigger() flags and options. */
typedef uint32_t MojoRemoveTriggerFlags;
#define MOJO_REMOVE_TRIGGER_FLAG_NONE ((MojoRemoveTriggerFlags)0)

struct MOJO_ALIGNAS(8) MojoRemoveTriggerOptions {
    uint32_t struct_size;
    MojoRemoveTriggerFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoRemoveTriggerOptions) == 8,
                   "MojoRemoveTriggerOptions must be 8 bytes");

/* MojoArmTrap() flags and options. */
typedef uint32_t MojoArmTrapFlags;
#define MOJO_ARM_TRAP_FLAG_NONE ((MojoArmTrapFlags)0)

struct MOJO_ALIGNAS(8) MojoArmTrapOptions {
    uint32_t struct_size;
    MojoArmTrapFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoArmTrapOptions) == 8, "MojoArmTrapOptions must be 8 bytes");

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A trap's handler. |event| is valid only for the duration of the call. May be
 * called on any thread, including the IO thread; calls for one trigger never
 * overlap, and a handler is never re-entered on one thread: events that
 * arise while it runs are delivered after it returns.
 */
typedef void (*MojoTrapEventHandler)(const struct MojoTrapEvent *event);

/*
 * Creates a disarmed trap with no triggers that reports to |handler|.
 *
 * Returns OK; INVALID_ARGUMENT (NULL |handler| or |trap_handle|, malformed
 * |options|); RESOURCE_EXHAUSTED.
 */
MOJO_SYSTEM_EXPORT MojoResult MojoCreateTrap(MojoTrapEventHandler handler,
                                             const struct MojoCreateTrapOptions *options,
                                             MojoHandle *trap_handle);

/*
 * Adds a trigger watching |signals| on |handle| for |condition|, identified by
 * |context| (unique on this trap). If the trap is armed and the new
 * trigger's condition already holds, the trap fires for it (and disarms) as
 * if the handle's state had just changed.
 *
 * Returns:
 *   MOJO_RESULT_OK                success.
 *   MOJO_RESULT_INVALID_ARGUMENT  |trap_handle| is not a trap; |handle| is
 *                                 not an open handle that has signals (a
 *                                 trap cannot watch a trap); |condition| is
 *                                 not a MOJO_TRIGGER_CONDITION_* value;
 *                                 malformed |options|.
 *   MOJO_RESULT_ALREADY_EXISTS    the trap already has a trigger with
 *                                 |context|, or one watching |handle|.
 *   MOJO_RESULT_BUSY              |handle| or the trap is in transit.
 */
MOJO_SYSTEM_EXPORT MojoResult MojoAddTrigger(MojoHandle trap_handle, MojoHandle handle,
                                             MojoHandleSignals signals,
                                             MojoTriggerCondition condition, uintptr_t context,
                                             const struct MojoAddTriggerOptions *options);

/*
 * Removes the trigger |context|. Its handler then runs one last time for it,
 * with MOJO_RESULT_CANCELLED (after this call returns to its caller if this is
 * itself called from a handler). If another thread is running the handler for
 * this trigger, the CANCELLED event waits for that call to return.
 *
 * Returns OK; INVALID_ARGUMENT (not a trap, malformed |options|); NOT_FOUND
 * (no trigger |context|).
 */
MOJO_SYSTEM_EXPORT MojoResult MojoRemoveTrigger(MojoHandle trap_handle, uintptr_t context,
                                                const struct MojoRemoveTriggerOptions *options);

/*
 * Arms the trap: the next time one of its triggers' conditions becomes true,
 * the trap disarms and its handler runs for that trigger.
 *
 * Returns:
 *   MOJO_RESULT_OK                   armed.
 *   MOJO_RESULT_NOT_FOUND            the trap has no triggers.
 *   MOJO_RESULT_FAILED_PRECONDITION  not armed, because some triggers would
 *                                    fire at once. If |num_blocking_events|
 *                                    is not NULL, up to |*num_blocking_events|
 *                                    of them are written to |blocking_events|
 *                                    and their number to
 *                                    |*num_blocking_events|. Successive calls
 *                                    start from a different trigger, so with
 *                                    a small array no ready trigger starves.
 *   MOJO_RESULT_INVALID_ARGUMENT     not a trap; |*num_blocking_events| > 0
 *                                    with NULL |blocking_events|; malformed
 *                                    |options|.
 */
MOJO_SYSTEM_EXPORT MojoResult MojoArmTrap(MojoHandle trap_handle,
                                          const struct MojoArmTrapOptions *options,
                                          uint32_t *num_blocking_events,
                                          struct MojoTrapEvent *blocking_events);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MOJO_PUBLIC_C_SYSTEM_TRAP_H_ */
