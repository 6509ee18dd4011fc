/*
 * Dispatchers: the objects behind handles (message pipe endpoints, traps, and
 * in later layers data pipe ends, buffers, wrapped fds, invitations).
 *
 * Lifetime: a dispatcher is reference counted. The handle table holds one
 * reference; every operation in flight holds another, taken by the table
 * lookup. MojoClose removes the table entry and calls core_dispatcher_close;
 * the memory goes when the last operation drops its reference. So a close
 * racing an operation on another thread is never a use-after-free: the
 * operation either finishes first or sees the dispatcher closed.
 *
 * Signals and traps: a dispatcher with signals (ops->get_signals) keeps the
 * list of trap triggers watching it. Whenever its state may have changed it
 * calls core_dispatcher_notify, which evaluates every trigger under the
 * dispatcher lock; triggers that fire queue an event in the calling thread's
 * request context (see request_context.h), delivered after every lock is
 * released.
 *
 * Lock order: dispatcher lock, then a trap's lock, then ports locks. No
 * dispatcher lock is held while calling into the ports layer in a way that
 * can call back (send, close, merge), since a local peer's status change
 * would take the peer's dispatcher lock.
 */
#ifndef CMOJO_CORE_DISPATCHER_H_
#define CMOJO_CORE_DISPATCHER_H_

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "mojo/public/c/system/types.h"
#include "platform/lock.h"
#include "ports/common.h"

/* The values are also the handle types of the message envelope (message.h). */
typedef enum core_dispatcher_type {
    CORE_DISPATCHER_MESSAGE_PIPE = 1,
    CORE_DISPATCHER_TRAP = 2,
    CORE_DISPATCHER_PLATFORM_HANDLE = 3,
    CORE_DISPATCHER_INVITATION = 4,
    CORE_DISPATCHER_SHARED_BUFFER = 5,
    CORE_DISPATCHER_DATA_PIPE_PRODUCER = 6,
    CORE_DISPATCHER_DATA_PIPE_CONSUMER = 7,
} core_dispatcher_type;

typedef struct core_dispatcher core_dispatcher;
typedef struct core_trigger core_trigger;

typedef struct core_dispatcher_ops {
    /*
     * Type-specific part of closing, called once, with no lock held, after
     * the dispatcher was marked closed and its triggers cancelled.
     */
    void (*close)(core_dispatcher *d);
    /*
     * Current signals. NULL for dispatchers without signals (traps), which
     * cannot be watched or waited on. Called with the dispatcher lock held.
     */
    void (*get_signals)(core_dispatcher *d, struct MojoHandleSignalsState *out);
    /* Frees the memory once the last reference is gone. */
    void (*destroy)(core_dispatcher *d);
    /*
     * The port it owns changed status (a port whose user data is d): NULL
     * means just re-evaluate the triggers (core_dispatcher_notify). Called
     * with no lock held, inside a request context.
     */
    void (*port_status_changed)(core_dispatcher *d);

    /*
     * ---- Travelling inside messages, as an "object" (see message.h). ----
     * Every dispatcher that may be attached to a message but a message pipe
     * (whose port travels instead of the dispatcher) sets wire_serialize;
     * the others (traps, invitations) leave these NULL. What each type puts
     * on the wire besides its state (how many fds, whether it takes one of
     * the event's ports) is fixed per type: core_wire_type_find(), message.h.
     */

    /*
     * Vets an attach (called under the handle table lock): MOJO_RESULT_OK,
     * or BUSY while something forbids travelling (a two-phase data pipe
     * operation is open). NULL: always OK.
     */
    MojoResult (*check_transit)(core_dispatcher *d);
    /*
     * For types whose wire form takes a port (data pipe ends). transit_port
     * is called by the writer just before the send: the dispatcher lets go
     * of its port (clears the port's user data and its reference) and
     * gives its name, which the event carries. bind gives it a port again:
     * the one that arrived with it, when it becomes a handle, or its own
     * when the send failed. Nonzero from bind: the port is gone (the handle
     * then reports its peer closed).
     */
    void (*transit_port)(core_dispatcher *d, ports_name *out);
    int (*bind)(core_dispatcher *d, const ports_name *port);
    /*
     * Wire form, for a message bound for another process: the state's size
     * in bytes (at most CMOJO_MAX_OBJECT_STATE_SIZE), then the state written
     * to `state` and the type's fds given up to `fds`. After serialize the
     * dispatcher is closed without closing what it gave away.
     */
    uint32_t (*wire_state_size)(core_dispatcher *d);
    void (*wire_serialize)(core_dispatcher *d, uint8_t *state, int *fds);
} core_dispatcher_ops;

struct core_dispatcher {
    atomic_uint refs;
    core_dispatcher_type type;
    const core_dispatcher_ops *ops;
    plat_mutex lock;
    bool closed;            /* under lock */
    core_trigger *watchers; /* under lock: triggers watching this dispatcher */
    /*
     * watchers != NULL, readable without the lock: lets a state change that
     * nobody watches skip the lock. A trigger being added evaluates the
     * state itself after setting this, so no change is missed.
     */
    atomic_bool watched;
};

/* Sets up the base with one reference (the caller's). */
void core_dispatcher_init(core_dispatcher *d, core_dispatcher_type type,
                          const core_dispatcher_ops *ops);
void core_dispatcher_acquire(core_dispatcher *d);
void core_dispatcher_release(core_dispatcher *d); /* NULL is fine */

/*
 * Closes: marks closed, cancels every trigger watching it (CANCELLED events
 * are queued), then calls ops->close. Returns false if it was closed already.
 */
bool core_dispatcher_close(core_dispatcher *d);

/*
 * Cancels every trigger watching d without closing it: an object that
 * leaves its handle to travel in a message (its handle is gone, the object
 * lives on). No dispatcher lock may be held.
 */
void core_dispatcher_cancel_watchers(core_dispatcher *d);

/* Re-evaluates every trigger watching d. No dispatcher lock may be held. */
void core_dispatcher_notify(core_dispatcher *d);

/*
 * core_dispatcher_notify with signals the caller works out: fill(d, arg,
 * &state) runs under the dispatcher lock in place of ops->get_signals.
 */
typedef void (*core_signals_fill)(core_dispatcher *d, const void *arg,
                                  struct MojoHandleSignalsState *out);
void core_dispatcher_notify_with(core_dispatcher *d, core_signals_fill fill, const void *arg);

/*
 * Current signals (with the lock): MOJO_RESULT_OK, or INVALID_ARGUMENT if the
 * dispatcher has no signals or is closed.
 */
MojoResult core_dispatcher_query(core_dispatcher *d, struct MojoHandleSignalsState *out);

/* Adds / removes a watcher; used by traps. Return false if d is closed. */
bool core_dispatcher_add_watcher(core_dispatcher *d, core_trigger *t);
void core_dispatcher_remove_watcher(core_dispatcher *d, core_trigger *t);

/* Adapters for the handle table's callbacks. */
void core_dispatcher_acquire_obj(void *obj);
void core_dispatcher_release_obj(void *obj);

#endif /* CMOJO_CORE_DISPATCHER_H_ */
