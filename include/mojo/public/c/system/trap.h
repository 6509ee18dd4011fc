/*
 * cmojo public API: traps, which call user code when handle signals change
 * (types, options and the handler signature).
 *
 * A trap holds triggers; each trigger watches some signals on one handle. An
 * armed trap that trips disarms itself and calls its handler once per
 * relevant trigger. In cmojo handlers always run with no internal lock held,
 * so a handler may call any API function, including on the handle that fired.
 *
 * Status: the types below are final (Mojo's names, values and layouts).
 * MojoCreateTrap(), MojoAddTrigger(), MojoRemoveTrigger() and MojoArmTrap()
 * are declared here once implemented.
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
 * overlap, and a handler is never re-entered for the same trap.
 */
typedef void (*MojoTrapEventHandler)(const struct MojoTrapEvent *event);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MOJO_PUBLIC_C_SYSTEM_TRAP_H_ */
