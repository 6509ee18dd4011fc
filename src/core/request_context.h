/*
 * Request contexts: how trap events wait until no lock is held.
 *
 * Every API entry point brackets its work with core_rc_enter/core_rc_leave.
 * A trigger that fires while the thread is inside (at any depth) queues its
 * event on the thread's own queue; when the outermost call leaves, the queue
 * is delivered in order, each handler running with no internal lock held.
 * While a handler runs the thread counts as inside a call, so API calls the
 * handler makes queue their events behind it instead of re-entering it: a
 * handler is never re-entered on one thread.
 *
 * Threads: the queue is per thread (thread-local), so none of this locks.
 */
#ifndef CMOJO_CORE_REQUEST_CONTEXT_H_
#define CMOJO_CORE_REQUEST_CONTEXT_H_

#include <stdbool.h>

#include "mojo/public/c/system/types.h"

typedef struct core_trigger core_trigger;

void core_rc_enter(void);
void core_rc_leave(void);

/*
 * The same for work the IO thread does on behalf of another process (a
 * message arrived, a peer died): handlers it triggers run without
 * MOJO_TRAP_EVENT_FLAG_WITHIN_API_CALL, unless an API call of this thread
 * (a handler's, say) caused the event.
 */
void core_rc_enter_system(void);
void core_rc_leave_system(void);

/*
 * True inside an API call or a delivery on this thread: a trigger that fires
 * on this thread now is delivered only when the outermost call unwinds.
 */
bool core_rc_inside(void);

/* Queues an event for t (acquiring a reference to t). Must be inside. */
void core_rc_queue(core_trigger *t, MojoResult result, const struct MojoHandleSignalsState *state);

/*
 * For a trap handler: runs fn(arg) on this thread once the handler has
 * returned and the trigger's delivery lock is released. A handler that wakes
 * another thread does it this way, so the woken thread does not run straight
 * into a lock this thread still holds.
 */
void core_rc_after_delivery(void (*fn)(void *arg), void *arg);

/* Runs what core_rc_after_delivery queued (trap.c, after each delivery). */
void core_rc_run_after_delivery(void);

#endif /* CMOJO_CORE_REQUEST_CONTEXT_H_ */
