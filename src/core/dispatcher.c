#include "core/dispatcher.h"

#include <stddef.h>

#include "core/trap.h"
#include "platform/lock.h"

void core_dispatcher_init(core_dispatcher *d, core_dispatcher_type type,
                          const core_dispatcher_ops *ops)
{
    atomic_init(&d->refs, 1);
    d->type = type;
    d->ops = ops;
    plat_mutex_init(&d->lock);
    d->closed = false;
    d->watchers = NULL;
    atomic_init(&d->watched, false);
}

void core_dispatcher_acquire(core_dispatcher *d)
{
    atomic_fetch_add_explicit(&d->refs, 1, memory_order_relaxed);
}

void core_dispatcher_release(core_dispatcher *d)
{
    if (!d || atomic_fetch_sub_explicit(&d->refs, 1, memory_order_acq_rel) != 1)
        return;
    plat_mutex_destroy(&d->lock);
    d->ops->destroy(d);
}

void core_dispatcher_acquire_obj(void *obj)
{
    core_dispatcher_acquire(obj);
}

void core_dispatcher_release_obj(void *obj)
{
    core_dispatcher_release(obj);
}

/* Cancels the triggers of a list taken off a dispatcher (no lock held). */
static void cancel_list(core_trigger *watchers)
{
    while (watchers) {
        core_trigger *t = watchers;
        watchers = t->next_watcher;
        t->next_watcher = NULL;
        core_trigger_cancel_for_closed_handle(t);
        core_trigger_release(t); /* the watcher list's reference */
    }
}

bool core_dispatcher_close(core_dispatcher *d)
{
    plat_mutex_lock(&d->lock);
    if (d->closed) {
        plat_mutex_unlock(&d->lock);
        return false;
    }
    d->closed = true;
    core_trigger *watchers = d->watchers;
    d->watchers = NULL;
    atomic_store(&d->watched, false);
    plat_mutex_unlock(&d->lock);

    cancel_list(watchers);
    d->ops->close(d);
    return true;
}

void core_dispatcher_cancel_watchers(core_dispatcher *d)
{
    plat_mutex_lock(&d->lock);
    core_trigger *watchers = d->watchers;
    d->watchers = NULL;
    atomic_store(&d->watched, false);
    plat_mutex_unlock(&d->lock);
    cancel_list(watchers);
}

static void fill_from_ops(core_dispatcher *d, const void *arg, struct MojoHandleSignalsState *out)
{
    (void)arg;
    d->ops->get_signals(d, out);
}

void core_dispatcher_notify(core_dispatcher *d)
{
    core_dispatcher_notify_with(d, fill_from_ops, NULL);
}

void core_dispatcher_notify_with(core_dispatcher *d, core_signals_fill fill, const void *arg)
{
    if (!atomic_load(&d->watched))
        return;
    plat_mutex_lock(&d->lock);
    if (!d->closed && d->watchers) {
        struct MojoHandleSignalsState state;
        fill(d, arg, &state);
        for (core_trigger *t = d->watchers; t; t = t->next_watcher)
            core_trigger_notify(t, &state);
    }
    plat_mutex_unlock(&d->lock);
}

MojoResult core_dispatcher_query(core_dispatcher *d, struct MojoHandleSignalsState *out)
{
    if (!d->ops->get_signals)
        return MOJO_RESULT_INVALID_ARGUMENT;
    MojoResult rv = MOJO_RESULT_OK;
    plat_mutex_lock(&d->lock);
    if (d->closed)
        rv = MOJO_RESULT_INVALID_ARGUMENT;
    else
        d->ops->get_signals(d, out);
    plat_mutex_unlock(&d->lock);
    return rv;
}

bool core_dispatcher_add_watcher(core_dispatcher *d, core_trigger *t)
{
    plat_mutex_lock(&d->lock);
    /*
     * Whoever removes t marks it removed before taking this lock to unlink
     * it, so checking here means a removed trigger is never linked again.
     */
    bool ok = !d->closed && !atomic_load(&t->removed);
    if (ok) {
        core_trigger_acquire(t);
        t->next_watcher = d->watchers;
        d->watchers = t;
        atomic_store(&d->watched, true);
        struct MojoHandleSignalsState state;
        d->ops->get_signals(d, &state);
        core_trigger_notify(t, &state);
    }
    plat_mutex_unlock(&d->lock);
    return ok;
}

void core_dispatcher_remove_watcher(core_dispatcher *d, core_trigger *t)
{
    bool found = false;
    plat_mutex_lock(&d->lock);
    for (core_trigger **p = &d->watchers; *p; p = &(*p)->next_watcher) {
        if (*p == t) {
            *p = t->next_watcher;
            t->next_watcher = NULL;
            found = true;
            break;
        }
    }
    atomic_store(&d->watched, d->watchers != NULL);
    plat_mutex_unlock(&d->lock);
    if (found)
        core_trigger_release(t);
}
