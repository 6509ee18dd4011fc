/*
 * cmojo public API: functions that belong to no particular kind of handle.
 *
 * Conventions shared by every function of the API:
 * - Options pointers may be NULL (defaults). A non-NULL options structure must
 *   have |struct_size| at least as large as the structure's first version and
 *   no unknown bit in |flags|; otherwise the call fails with
 *   MOJO_RESULT_INVALID_ARGUMENT and changes nothing.
 * - Outputs are written only on success, unless a function says otherwise.
 * - Every function may be called from any thread, including from inside a
 *   trap handler, and none blocks on another process.
 */
#ifndef MOJO_PUBLIC_C_SYSTEM_FUNCTIONS_H_
#define MOJO_PUBLIC_C_SYSTEM_FUNCTIONS_H_

#include "mojo/public/c/system/system_export.h"
#include "mojo/public/c/system/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Initializes cmojo in this process. Optional: the first API call that needs
 * the library initializes it. |options| may be NULL; its flags are Mojo's
 * (AS_BROKER, FORCE_DIRECT_SHARED_MEMORY_ALLOCATION, LOAD_ONLY) and the core
 * library path is ignored (cmojo is the core).
 *
 * Returns:
 *   MOJO_RESULT_OK                   initialized.
 *   MOJO_RESULT_FAILED_PRECONDITION  an earlier MojoInitialize() (without
 *                                    LOAD_ONLY) succeeded and no MojoShutdown()
 *                                    came since.
 *   MOJO_RESULT_ALREADY_EXISTS       LOAD_ONLY given twice.
 *   MOJO_RESULT_INVALID_ARGUMENT     malformed |options|.
 */
MOJO_SYSTEM_EXPORT MojoResult MojoInitialize(const struct MojoInitializeOptions *options);

/*
 * Shuts cmojo down: closes every handle still open (traps get their CANCELLED
 * events first), destroys every message object still alive, and frees the
 * node. Every handle value is invalid afterwards. cmojo (unlike Mojo) may be
 * initialized again after this, which is what test suites need.
 *
 * No other thread may be inside an API call while this runs.
 *
 * Returns:
 *   MOJO_RESULT_OK                   shut down.
 *   MOJO_RESULT_FAILED_PRECONDITION  MojoInitialize() was never called (or not
 *                                    since the last shutdown).
 *   MOJO_RESULT_INVALID_ARGUMENT     malformed |options|.
 */
MOJO_SYSTEM_EXPORT MojoResult MojoShutdown(const struct MojoShutdownOptions *options);

/*
 * Returns a monotonic time in microseconds, measured from an unspecified
 * point in the past (on Linux, CLOCK_MONOTONIC: boot time, not counting
 * suspend). Values from one boot of one machine may be compared and
 * subtracted; successive calls never go backwards. The result is always
 * positive.
 *
 * Ownership: takes and returns plain values only.
 * Threads: any thread, at any time, including before MojoInitialize() and
 * from inside trap handlers. Never blocks.
 */
MOJO_SYSTEM_EXPORT MojoTimeTicks MojoGetTimeTicksNow(void);

/*
 * Closes |handle|. Exactly one of several concurrent closes of one handle
 * succeeds. Operations racing the close on other threads either complete as
 * if they came first or fail cleanly (INVALID_ARGUMENT, or CANCELLED for a
 * trap trigger); none touches freed memory. Closing a pipe end makes its peer
 * PEER_CLOSED once the messages already sent have been read; closing a
 * watched handle or a trap delivers CANCELLED to each affected trigger.
 *
 * Returns:
 *   MOJO_RESULT_OK                success; |handle| is invalid from now on.
 *   MOJO_RESULT_INVALID_ARGUMENT  |handle| is not an open handle.
 *   MOJO_RESULT_BUSY              |handle| is attached to a message that has
 *                                 not been written yet (in transit).
 */
MOJO_SYSTEM_EXPORT MojoResult MojoClose(MojoHandle handle);

/*
 * Writes the current signals state of |handle| to |*signals_state|. Another
 * thread may change it at any moment, so the answer is a snapshot.
 *
 * Returns:
 *   MOJO_RESULT_OK                success.
 *   MOJO_RESULT_INVALID_ARGUMENT  |handle| is not an open handle, or
 *                                 |signals_state| is NULL.
 *   MOJO_RESULT_BUSY              |handle| is in transit.
 */
MOJO_SYSTEM_EXPORT MojoResult
MojoQueryHandleSignalsState(MojoHandle handle, struct MojoHandleSignalsState *signals_state);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MOJO_PUBLIC_C_SYSTEM_FUNCTIONS_H_ */
