/*
 * cmojo extension (not part of Mojo's C API): blocking waits.
 *
 * Mojo's C API offers only traps, which suit an event loop. A plain C program
 * (a test, a tool, a worker thread) often just wants to block until a handle
 * is readable. These two functions do that, built on traps; they revive the
 * names and semantics of the MojoWait/MojoWaitMany calls that older Mojo
 * releases had.
 *
 *   #include "cmojo/wait.h"
 */
#ifndef CMOJO_WAIT_H_
#define CMOJO_WAIT_H_

#include <stdint.h>

#include "mojo/public/c/system/system_export.h"
#include "mojo/public/c/system/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Blocks until one of |num_handles| handles satisfies any of its signals
 * (|signals[i]| for |handles[i]|), or can never satisfy them, or |deadline|
 * microseconds pass (MOJO_DEADLINE_INDEFINITE: no limit; 0: just check).
 *
 * |result_index| (may be NULL) receives the index of the handle the result is
 * about, or UINT32_MAX when the result concerns no particular handle
 * (DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED). |signals_states| (may be NULL)
 * has room for |num_handles| entries and receives each handle's state when
 * the wait ended (zeroed for a handle that is not open or is in transit).
 *
 * Returns:
 *   MOJO_RESULT_OK                   handles[*result_index] satisfies one of
 *                                    its signals.
 *   MOJO_RESULT_FAILED_PRECONDITION  handles[*result_index] can never satisfy
 *                                    any of its signals.
 *   MOJO_RESULT_INVALID_ARGUMENT     handles[*result_index] is not an open
 *                                    handle with signals or repeats an earlier
 *                                    entry, or |handles| or |signals| is NULL
 *                                    with |num_handles| > 0.
 *   MOJO_RESULT_BUSY                 handles[*result_index] is in transit.
 *   MOJO_RESULT_CANCELLED            handles[*result_index] was closed by
 *                                    another thread during the wait.
 *   MOJO_RESULT_DEADLINE_EXCEEDED    the deadline passed (at once for a zero
 *                                    deadline; with zero handles, a finite
 *                                    deadline is simply slept through).
 *   MOJO_RESULT_RESOURCE_EXHAUSTED   out of memory.
 *
 * Threads: any thread, including inside a trap handler (the wait does not
 * need this thread to deliver anything). Waiting with no handles and no
 * deadline would never return, so it fails with INVALID_ARGUMENT.
 *
 * In a process connected to others, one waiting thread at a time reads the
 * process's channels itself while it waits, so a message from another
 * process reaches it without a hand-off from the IO thread. Trap handlers
 * that this IO triggers (for any handle) may then run on the waiting thread,
 * before the wait returns, with MOJO_TRAP_EVENT_FLAG_WITHIN_API_CALL set, as
 * for a handler run inside any other API call. Between two such waits other
 * messages may wait up to about 0.2 ms for the thread to come back before
 * the IO thread takes them.
 */
MOJO_SYSTEM_EXPORT MojoResult MojoWaitMany(const MojoHandle *handles,
                                           const MojoHandleSignals *signals, uint32_t num_handles,
                                           MojoDeadline deadline, uint32_t *result_index,
                                           struct MojoHandleSignalsState *signals_states);

/* MojoWaitMany() on one handle. |signals_state| may be NULL. */
MOJO_SYSTEM_EXPORT MojoResult MojoWait(MojoHandle handle, MojoHandleSignals signals,
                                       MojoDeadline deadline,
                                       struct MojoHandleSignalsState *signals_state);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* CMOJO_WAIT_H_ */
