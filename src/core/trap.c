/*
 * Traps: MojoCreateTrap, MojoAddTrigger, MojoRemoveTrigger, MojoArmTrap.
 * The model is in trap.h; delivery timing in request_context.h.
 */
#include "core/trap.h"

#include <stdlib.h>
#include <string.h>

#include "cmojo_limits.h"
#include "core/core.h"
#include "core/request_context.h"
#include "platform/lock.h"
#include "platform/mem.h"

#define TRAP_INLINE_TRIGGERS 2

struct core_trap {
    core_dispatcher base; /* base.lock is the trap lock */
    MojoTrapEventHandler handler;
    /* Under base.lock. */
    bool armed;
    core_trigger **triggers; /* in order of addition; inline_triggers or the heap */
    uint32_t num_triggers, cap_triggers;
    /* Most traps watch one or two handles: no allocation for those. */
    core_trigger *inline_triggers[TRAP_INLINE_TRIGGERS];
    uint32_t next_blocking; /* where the next failed arm starts reporting */
};

/* ----------------------------------------------------------- triggers */

void core_trigger_acquire(core_trigger *t)
{
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
}

void core_trigger_release(core_trigger *t)
{
    if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    core_dispatcher_release(t->watched);
    if (t->trap) {
        core_dispatcher_release(&t->trap->base);
        plat_mutex_destroy(&t->delivery_lock);
    } else {
        t->wait_ops->done(t->wait_ctx);
    }
    free(t);
}

/* What the trigger would report now: OK, FAILED_PRECONDITION or SHOULD_WAIT. */
static MojoResult evaluate(const core_trigger *t, const struct MojoHandleSignalsState *s)
{
    if (t->condition == MOJO_TRIGGER_CONDITION_SIGNALS_SATISFIED) {
        if (s->satisfied_signals & t->signals)
            return MOJO_RESULT_OK;
        if (!(s->satisfiable_signals & t->signals))
            return MOJO_RESULT_FAILED_PRECONDITION;
        return MOJO_RESULT_SHOULD_WAIT;
    }
    /* SIGNALS_UNSATISFIED: fires when any watched signal is not satisfied. */
    if ((s->satisfied_signals & t->signals) != t->signals)
        return MOJO_RESULT_OK;
    return MOJO_RESULT_SHOULD_WAIT;
}

void core_trigger_notify(core_trigger *t, const struct MojoHandleSignalsState *state)
{
    core_trap *trap = t->trap;
    if (!trap) {
        /* A wait's: the dispatcher lock (held) guards it; it fires once. */
        if (!t->wait_fired) {
            MojoResult ready = evaluate(t, state);
            if (ready != MOJO_RESULT_SHOULD_WAIT) {
                t->wait_fired = true;
                t->wait_ops->claim(t->wait_ctx, ready);
                core_rc_queue(t, ready, state); /* the wake-up, once no lock is held */
            }
        }
        return;
    }
    plat_mutex_lock(&trap->base.lock);
    if (!atomic_load(&t->removed)) {
        t->last_state = *state;
        t->ready = evaluate(t, state);
        if (trap->armed && t->ready != MOJO_RESULT_SHOULD_WAIT) {
            trap->armed = false;
            core_rc_queue(t, t->ready, state);
        }
    }
    plat_mutex_unlock(&trap->base.lock);
}

/* Unlinks t from its trap. Trap lock held. */
static void unlink_from_trap(core_trap *trap, core_trigger *t)
{
    for (uint32_t i = 0; i < trap->num_triggers; i++) {
        if (trap->triggers[i] == t) {
            memmove(&trap->triggers[i], &trap->triggers[i + 1],
                    (trap->num_triggers - i - 1) * sizeof(*trap->triggers));
            trap->num_triggers--;
            return;
        }
    }
}

static void queue_cancelled(core_trigger *t)
{
    struct MojoHandleSignalsState none = {0, 0};
    core_rc_queue(t, MOJO_RESULT_CANCELLED, &none);
}

void core_trigger_cancel_for_closed_handle(core_trigger *t)
{
    core_trap *trap = t->trap;
    if (!trap) {
        /* A wait's: the dispatcher took it off its list and drops that reference. */
        if (!atomic_exchange(&t->removed, true)) {
            t->wait_ops->claim(t->wait_ctx, MOJO_RESULT_CANCELLED);
            queue_cancelled(t);
        }
        return;
    }
    bool mine = false;
    plat_mutex_lock(&trap->base.lock);
    if (!atomic_load(&t->removed)) {
        atomic_store(&t->removed, true);
        unlink_from_trap(trap, t);
        mine = true;
    }
    plat_mutex_unlock(&trap->base.lock);
    if (mine) {
        queue_cancelled(t);
        core_trigger_release(t); /* the trap list's reference */
    }
}

void core_trigger_deliver(core_trigger *t, MojoResult result,
                          const struct MojoHandleSignalsState *state, bool within_api_call)
{
    if (!t->trap) {
        /* A wait's: what fired was claimed already; this is the wake-up. */
        t->wait_ops->wake(t->wait_ctx);
        return;
    }
    plat_mutex_lock(&t->delivery_lock);
    bool deliver =
        !t->cancel_delivered && (result == MOJO_RESULT_CANCELLED || !atomic_load(&t->removed));
    if (deliver) {
        if (result == MOJO_RESULT_CANCELLED)
            t->cancel_delivered = true;
        struct MojoTrapEvent event = {
            .struct_size = sizeof(event),
            .flags = within_api_call ? MOJO_TRAP_EVENT_FLAG_WITHIN_API_CALL : 0,
            .trigger_context = t->context,
            .result = result,
            .signals_state = *state,
        };
        t->trap->handler(&event);
    }
    plat_mutex_unlock(&t->delivery_lock);
    core_rc_run_after_delivery();
}

core_trigger *core_wait_trigger_new(core_dispatcher *watched, MojoHandleSignals signals,
                                    const core_wait_ops *ops, void *ctx)
{
    core_trigger *t = plat_zalloc(sizeof(*t));
    if (!t)
        return NULL;
    atomic_init(&t->refs, 1);
    core_dispatcher_acquire(watched);
    t->watched = watched;
    t->signals = signals;
    t->condition = MOJO_TRIGGER_CONDITION_SIGNALS_SATISFIED;
    t->ready = MOJO_RESULT_SHOULD_WAIT;
    atomic_init(&t->removed, false);
    t->wait_ops = ops;
    t->wait_ctx = ctx;
    return t;
}

/* --------------------------------------------------------------- trap */

static void trap_close(core_dispatcher *d)
{
    core_trap *trap = (core_trap *)d;
    plat_mutex_lock(&trap->base.lock);
    /* Moved out (the inline array is reused below, once the lock is dropped). */
    core_trigger *inline_copy[TRAP_INLINE_TRIGGERS];
    core_trigger **triggers = trap->triggers;
    uint32_t n = trap->num_triggers;
    if (triggers == trap->inline_triggers) {
        memcpy(inline_copy, triggers, n * sizeof(*triggers));
        triggers = inline_copy;
    }
    trap->triggers = trap->inline_triggers;
    trap->num_triggers = 0;
    trap->cap_triggers = TRAP_INLINE_TRIGGERS;
    trap->armed = false;
    for (uint32_t i = 0; i < n; i++)
        atomic_store(&triggers[i]->removed, true);
    plat_mutex_unlock(&trap->base.lock);

    for (uint32_t i = 0; i < n; i++) {
        core_dispatcher_remove_watcher(triggers[i]->watched, triggers[i]);
        queue_cancelled(triggers[i]);
        core_trigger_release(triggers[i]);
    }
    if (triggers != inline_copy)
        free(triggers);
}

static void trap_destroy(core_dispatcher *d)
{
    core_trap *trap = (core_trap *)d;
    if (trap->triggers != trap->inline_triggers)
        free(trap->triggers);
    free(trap);
}

static const core_dispatcher_ops trap_ops = {
    .close = trap_close,
    .get_signals = NULL,
    .destroy = trap_destroy,
};

/* Resolves a trap handle; INVALID_ARGUMENT for any other kind of handle. */
static MojoResult get_trap(MojoHandle handle, core_trap **out)
{
    core_dispatcher *d;
    MojoResult rv = core_resolve(handle, CORE_DISPATCHER_TRAP, &d);
    if (rv == MOJO_RESULT_OK)
        *out = (core_trap *)d;
    return rv;
}

static core_trap *trap_new(MojoTrapEventHandler handler)
{
    core_trap *trap = calloc(1, sizeof(*trap));
    if (!trap)
        return NULL;
    core_dispatcher_init(&trap->base, CORE_DISPATCHER_TRAP, &trap_ops);
    trap->handler = handler;
    trap->triggers = trap->inline_triggers;
    trap->cap_triggers = TRAP_INLINE_TRIGGERS;
    return trap;
}

MojoResult MojoCreateTrap(MojoTrapEventHandler handler, const struct MojoCreateTrapOptions *options,
                          MojoHandle *trap_handle)
{
    if (!handler || !trap_handle || !core_options_ok(options, 0, NULL))
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_state *core = core_get();
    core_trap *trap = core ? trap_new(handler) : NULL;
    if (!trap)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    MojoResult rv = core_add_dispatcher(core, &trap->base, trap_handle);
    if (rv != MOJO_RESULT_OK)
        core_dispatcher_release(&trap->base);
    return rv;
}

static MojoResult trap_add_trigger(core_trap *trap, core_dispatcher *watched,
                                   MojoHandleSignals signals, MojoTriggerCondition condition,
                                   uintptr_t context)
{
    if (!watched->ops->get_signals)
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_trigger *t = plat_zalloc(sizeof(*t));
    if (!t)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    /* References: one for the trap's list, one the caller drops below. */
    atomic_init(&t->refs, 2);
    t->trap = trap;
    t->watched = watched;
    t->context = context;
    t->signals = signals;
    t->condition = condition;
    t->ready = MOJO_RESULT_SHOULD_WAIT;
    atomic_init(&t->removed, false);
    plat_mutex_init(&t->delivery_lock);

    MojoResult rv = MOJO_RESULT_OK;
    core_rc_enter();
    plat_mutex_lock(&trap->base.lock);
    if (trap->base.closed) {
        rv = MOJO_RESULT_INVALID_ARGUMENT;
    } else if (trap->num_triggers >= CMOJO_MAX_TRIGGERS_PER_TRAP) {
        rv = MOJO_RESULT_RESOURCE_EXHAUSTED;
    } else {
        for (uint32_t i = 0; i < trap->num_triggers && rv == MOJO_RESULT_OK; i++)
            if (trap->triggers[i]->context == context || trap->triggers[i]->watched == watched)
                rv = MOJO_RESULT_ALREADY_EXISTS;
        if (rv == MOJO_RESULT_OK && trap->num_triggers == trap->cap_triggers) {
            uint32_t cap = trap->cap_triggers * 2;
            bool was_inline = trap->triggers == trap->inline_triggers;
            core_trigger **grown =
                realloc(was_inline ? NULL : trap->triggers, cap * sizeof(*grown));
            if (grown && was_inline)
                memcpy(grown, trap->inline_triggers, sizeof(trap->inline_triggers));
            if (grown) {
                trap->triggers = grown;
                trap->cap_triggers = cap;
            } else {
                rv = MOJO_RESULT_RESOURCE_EXHAUSTED;
            }
        }
        if (rv == MOJO_RESULT_OK)
            trap->triggers[trap->num_triggers++] = t;
    }
    plat_mutex_unlock(&trap->base.lock);

    if (rv == MOJO_RESULT_OK) {
        /* The trigger holds its own references from here on. */
        core_dispatcher_acquire(&trap->base);
        core_dispatcher_acquire(watched);
        if (!core_dispatcher_add_watcher(watched, t)) {
            /* The handle closed meanwhile: the trigger ends at once. */
            core_trigger_cancel_for_closed_handle(t);
        }
        core_trigger_release(t);
    } else {
        plat_mutex_destroy(&t->delivery_lock);
        free(t);
    }
    core_rc_leave();
    return rv;
}

MojoResult MojoAddTrigger(MojoHandle trap_handle, MojoHandle handle, MojoHandleSignals signals,
                          MojoTriggerCondition condition, uintptr_t context,
                          const struct MojoAddTriggerOptions *options)
{
    if (!core_options_ok(options, 0, NULL) ||
        (condition != MOJO_TRIGGER_CONDITION_SIGNALS_SATISFIED &&
         condition != MOJO_TRIGGER_CONDITION_SIGNALS_UNSATISFIED))
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_trap *trap;
    MojoResult rv = get_trap(trap_handle, &trap);
    if (rv != MOJO_RESULT_OK)
        return rv;
    core_dispatcher *watched;
    rv = core_resolve(handle, 0, &watched);
    if (rv != MOJO_RESULT_OK) {
        core_dispatcher_release(&trap->base);
        return rv;
    }
    rv = trap_add_trigger(trap, watched, signals, condition, context);
    core_dispatcher_release(watched);
    core_dispatcher_release(&trap->base);
    return rv;
}

MojoResult MojoRemoveTrigger(MojoHandle trap_handle, uintptr_t context,
                             const struct MojoRemoveTriggerOptions *options)
{
    if (!core_options_ok(options, 0, NULL))
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_trap *trap;
    MojoResult rv = get_trap(trap_handle, &trap);
    if (rv != MOJO_RESULT_OK)
        return rv;
    core_trigger *t = NULL;
    plat_mutex_lock(&trap->base.lock);
    for (uint32_t i = 0; i < trap->num_triggers; i++) {
        if (trap->triggers[i]->context == context) {
            t = trap->triggers[i];
            atomic_store(&t->removed, true);
            unlink_from_trap(trap, t);
            break;
        }
    }
    plat_mutex_unlock(&trap->base.lock);
    if (t) {
        core_rc_enter();
        core_dispatcher_remove_watcher(t->watched, t);
        queue_cancelled(t);
        core_trigger_release(t); /* the trap list's reference */
        core_rc_leave();
    }
    core_dispatcher_release(&trap->base);
    return t ? MOJO_RESULT_OK : MOJO_RESULT_NOT_FOUND;
}

static MojoResult trap_arm(core_trap *trap, uint32_t *num_blocking_events,
                           struct MojoTrapEvent *blocking_events)
{
    MojoResult rv = MOJO_RESULT_OK;
    plat_mutex_lock(&trap->base.lock);
    uint32_t n = trap->num_triggers;
    if (trap->base.closed) {
        rv = MOJO_RESULT_INVALID_ARGUMENT;
    } else if (n == 0) {
        rv = MOJO_RESULT_NOT_FOUND;
    } else {
        /*
         * Report ready triggers starting where the last failed arm stopped,
         * so a caller with a small array sees every ready trigger in turn.
         */
        uint32_t room = num_blocking_events ? *num_blocking_events : 0;
        uint32_t start = trap->next_blocking % n, reported = 0;
        bool any_ready = false;
        for (uint32_t k = 0; k < n; k++) {
            uint32_t i = (start + k) % n;
            core_trigger *t = trap->triggers[i];
            if (t->ready == MOJO_RESULT_SHOULD_WAIT)
                continue;
            any_ready = true;
            if (reported == room)
                break;
            blocking_events[reported++] = (struct MojoTrapEvent){
                .struct_size = sizeof(struct MojoTrapEvent),
                .flags = MOJO_TRAP_EVENT_FLAG_NONE,
                .trigger_context = t->context,
                .result = t->ready,
                .signals_state = t->last_state,
            };
            trap->next_blocking = i + 1;
        }
        if (any_ready) {
            rv = MOJO_RESULT_FAILED_PRECONDITION;
            if (num_blocking_events)
                *num_blocking_events = reported;
            if (reported == 0)
                trap->next_blocking = start + 1;
        } else {
            trap->armed = true;
        }
    }
    plat_mutex_unlock(&trap->base.lock);
    return rv;
}

MojoResult MojoArmTrap(MojoHandle trap_handle, const struct MojoArmTrapOptions *options,
                       uint32_t *num_blocking_events, struct MojoTrapEvent *blocking_events)
{
    if (!core_options_ok(options, 0, NULL) ||
        (num_blocking_events && *num_blocking_events && !blocking_events))
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_state *core = core_get();
    core_dispatcher *d;
    MojoResult rv = core_pin(core, trap_handle, CORE_DISPATCHER_TRAP, &d);
    if (rv != MOJO_RESULT_OK)
        return rv;
    rv = trap_arm((core_trap *)d, num_blocking_events, blocking_events);
    core_unpin(core, trap_handle);
    return rv;
}
