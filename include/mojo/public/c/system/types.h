/*
 * cmojo public API: types, result codes and signals shared by every part of
 * the Mojo C system API.
 *
 * Names and numeric values are Mojo's, so code written against Mojo's C API
 * compiles against cmojo unchanged. Option structures start with
 * |struct_size|, which the caller sets to sizeof the structure it was compiled
 * with; that is how a structure can grow fields without breaking old callers.
 */
#ifndef MOJO_PUBLIC_C_SYSTEM_TYPES_H_
#define MOJO_PUBLIC_C_SYSTEM_TYPES_H_

#include <stdint.h>

#include "mojo/public/c/system/macros.h"

/*
 * MojoTimeTicks: a point in time or a duration, in microseconds. What a value
 * is measured from depends on where it came from (see MojoGetTimeTicksNow).
 */
typedef int64_t MojoTimeTicks;

/*
 * MojoDeadline: a timeout in microseconds, kept for source compatibility with
 * older Mojo callers. MOJO_DEADLINE_INDEFINITE means "never time out".
 */
typedef uint64_t MojoDeadline;
#define MOJO_DEADLINE_INDEFINITE ((MojoDeadline)-1)

/*
 * MojoHandle: names a Mojo object (pipe endpoint, data pipe end, shared buffer,
 * wrapped platform handle, trap, invitation) owned by the calling process.
 * Handles are opaque integers; zero is never a valid handle.
 */
typedef uintptr_t MojoHandle;
#define MOJO_HANDLE_INVALID ((MojoHandle)0)

/*
 * MojoResult: outcome of an API call. Zero is the only success value; treat any
 * other value, including one not listed here, as a failure.
 *
 *   OK                  success.
 *   CANCELLED           the operation was cancelled, usually by the caller
 *                       (e.g. a trap trigger removed or its handle closed).
 *   UNKNOWN             failed for a reason with no better code.
 *   INVALID_ARGUMENT    an argument is wrong whatever the state of the system
 *                       (bad handle value, malformed options, null out pointer).
 *   DEADLINE_EXCEEDED   a deadline passed before the operation finished.
 *   NOT_FOUND           the thing asked for does not exist.
 *   ALREADY_EXISTS      the thing to be created exists already.
 *   PERMISSION_DENIED   the caller may not do this (use RESOURCE_EXHAUSTED
 *                       when a limit, not a permission, is the reason).
 *   RESOURCE_EXHAUSTED  a limit or quota was reached.
 *   FAILED_PRECONDITION the system is not in a state that allows this; the
 *                       caller must change something first (e.g. peer closed).
 *   ABORTED             the system gave up, e.g. because of a concurrent
 *                       operation; retrying at a higher level may work.
 *   OUT_OF_RANGE        beyond the valid range now, though it may become valid
 *                       as state changes (a narrower FAILED_PRECONDITION).
 *   UNIMPLEMENTED       not implemented, supported or enabled.
 *   INTERNAL            an internal invariant is broken; a bug in cmojo.
 *   UNAVAILABLE         temporarily unavailable; retry, perhaps after a pause.
 *   DATA_LOSS           data was lost or corrupted beyond recovery.
 *   BUSY                a resource involved is in use in a way that blocks the
 *                       operation (e.g. a handle in transit in a message, or a
 *                       two-phase read/write in progress).
 *   SHOULD_WAIT         cannot complete yet (e.g. nothing to read); wait for a
 *                       signal with a trap and try again.
 */
typedef uint32_t MojoResult;

#define MOJO_RESULT_OK ((MojoResult)0)
#define MOJO_RESULT_CANCELLED ((MojoResult)1)
#define MOJO_RESULT_UNKNOWN ((MojoResult)2)
#define MOJO_RESULT_INVALID_ARGUMENT ((MojoResult)3)
#define MOJO_RESULT_DEADLINE_EXCEEDED ((MojoResult)4)
#define MOJO_RESULT_NOT_FOUND ((MojoResult)5)
#define MOJO_RESULT_ALREADY_EXISTS ((MojoResult)6)
#define MOJO_RESULT_PERMISSION_DENIED ((MojoResult)7)
#define MOJO_RESULT_RESOURCE_EXHAUSTED ((MojoResult)8)
#define MOJO_RESULT_FAILED_PRECONDITION ((MojoResult)9)
#define MOJO_RESULT_ABORTED ((MojoResult)10)
#define MOJO_RESULT_OUT_OF_RANGE ((MojoResult)11)
#define MOJO_RESULT_UNIMPLEMENTED ((MojoResult)12)
#define MOJO_RESULT_INTERNAL ((MojoResult)13)
#define MOJO_RESULT_UNAVAILABLE ((MojoResult)14)
#define MOJO_RESULT_DATA_LOSS ((MojoResult)15)
#define MOJO_RESULT_BUSY ((MojoResult)16)
#define MOJO_RESULT_SHOULD_WAIT ((MojoResult)17)

/* Flags for MojoInitialize(), carried in MojoInitializeOptions.flags. */
typedef uint32_t MojoInitializeFlags;

/* Default initialization. */
#define MOJO_INITIALIZE_FLAG_NONE ((MojoInitializeFlags)0)

/*
 * This process is the broker of its process graph: the first member, the one
 * every other process is (directly or indirectly) invited by. A graph has
 * exactly one broker, and a broker cannot accept an invitation.
 */
#define MOJO_INITIALIZE_FLAG_AS_BROKER ((MojoInitializeFlags)1)

/*
 * A non-broker process that may create shared memory itself instead of asking
 * the broker for it.
 */
#define MOJO_INITIALIZE_FLAG_FORCE_DIRECT_SHARED_MEMORY_ALLOCATION ((MojoInitializeFlags)2)

/*
 * Do only the first, thread-free half of initialization (e.g. before a fork()
 * or a sandbox is entered); a later MojoInitialize() without this flag
 * finishes the job and starts the IO thread.
 */
#define MOJO_INITIALIZE_FLAG_LOAD_ONLY ((MojoInitializeFlags)4)

/* Options for MojoInitialize(). */
struct MOJO_ALIGNAS(8) MojoInitializeOptions {
    /* sizeof(struct MojoInitializeOptions) as the caller knows it. */
    uint32_t struct_size;

    /* Bitwise OR of MOJO_INITIALIZE_FLAG_* values. */
    MojoInitializeFlags flags;

    /*
     * Path (UTF-8, |mojo_core_path_length| bytes, not necessarily
     * NUL-terminated) of a Mojo core library to load. Part of Mojo's ABI;
     * cmojo is the core itself, so it has nothing to load and ignores these.
     */
    MOJO_POINTER_FIELD(const char *, mojo_core_path);
    uint32_t mojo_core_path_length;

    /* The process's main() arguments, for POSIX embedders that want them. */
    int32_t argc;
    MOJO_POINTER_FIELD(const char *const *, argv);
};
MOJO_STATIC_ASSERT(sizeof(struct MojoInitializeOptions) == 32,
                   "MojoInitializeOptions must be 32 bytes");

/* Flags for MojoShutdown(), carried in MojoShutdownOptions.flags. */
typedef uint32_t MojoShutdownFlags;

/* Default shutdown. */
#define MOJO_SHUTDOWN_FLAG_NONE ((MojoShutdownFlags)0)

/* Options for MojoShutdown(). */
struct MOJO_ALIGNAS(8) MojoShutdownOptions {
    /* sizeof(struct MojoShutdownOptions) as the caller knows it. */
    uint32_t struct_size;

    /* Bitwise OR of MOJO_SHUTDOWN_FLAG_* values. */
    MojoShutdownFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoShutdownOptions) == 8, "MojoShutdownOptions must be 8 bytes");

/*
 * MojoHandleSignals: a bit set of conditions on a handle that a trap can watch.
 *
 *   NONE               empty set; a trigger watching nothing can never fire.
 *   READABLE           a message (or data) can be read now.
 *   WRITABLE           a message (or data) can be written now.
 *   PEER_CLOSED        the other end has been closed (or its process is gone).
 *   NEW_DATA_READABLE  data pipe consumer only: READABLE holds and data arrived
 *                      since the last MojoReadData()/MojoBeginReadData().
 *   PEER_REMOTE        the other end lives in another process, as far as this
 *                      process last heard; it may briefly lag reality.
 *   QUOTA_EXCEEDED     a quota set with MojoSetQuota() is currently exceeded.
 */
typedef uint32_t MojoHandleSignals;

#define MOJO_HANDLE_SIGNAL_NONE ((MojoHandleSignals)0)
#define MOJO_HANDLE_SIGNAL_READABLE ((MojoHandleSignals)1 << 0)
#define MOJO_HANDLE_SIGNAL_WRITABLE ((MojoHandleSignals)1 << 1)
#define MOJO_HANDLE_SIGNAL_PEER_CLOSED ((MojoHandleSignals)1 << 2)
#define MOJO_HANDLE_SIGNAL_NEW_DATA_READABLE ((MojoHandleSignals)1 << 3)
#define MOJO_HANDLE_SIGNAL_PEER_REMOTE ((MojoHandleSignals)1 << 4)
#define MOJO_HANDLE_SIGNAL_QUOTA_EXCEEDED ((MojoHandleSignals)1 << 5)

/*
 * MojoHandleSignalsState: a snapshot of a handle's signals.
 *   satisfied_signals    signals that held when the snapshot was taken.
 *   satisfiable_signals  signals that could still come to hold; a watched
 *                        signal missing here will never be satisfied again.
 * Not versioned (no struct_size) and only 4-byte aligned: it will never grow.
 */
MOJO_STATIC_ASSERT(MOJO_ALIGNOF(int32_t) == 4, "int32_t must be 4-byte aligned");
struct MOJO_ALIGNAS(4) MojoHandleSignalsState {
    MojoHandleSignals satisfied_signals;
    MojoHandleSignals satisfiable_signals;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoHandleSignalsState) == 8,
                   "MojoHandleSignalsState must be 8 bytes");

/*
 * Older spellings of the trigger conditions in trap.h, kept so that code
 * written against earlier Mojo releases still compiles.
 */
#define MOJO_WATCH_CONDITION_SATISFIED MOJO_TRIGGER_CONDITION_SIGNALS_SATISFIED
#define MOJO_WATCH_CONDITION_NOT_SATISFIED MOJO_TRIGGER_CONDITION_SIGNALS_UNSATISFIED

#endif /* MOJO_PUBLIC_C_SYSTEM_TYPES_H_ */
