/*
 * Message pipe endpoints and their entry points: MojoCreateMessagePipe,
 * MojoWriteMessage, MojoReadMessage, MojoFuseMessagePipes, MojoSetQuota,
 * MojoQueryQuota.
 */
#include "core/message_pipe.h"

#include <stdbool.h>
#include <stdlib.h>

#include "core/core.h"
#include "core/handle_table.h"
#include "core/message.h"
#include "core/request_context.h"
#include "mojo/public/c/system/message_pipe.h"
#include "mojo/public/c/system/quota.h"

#define NUM_QUOTA_TYPES 3

typedef struct core_pipe {
    core_dispatcher base;
    ports_port_ref port;
    /* Under base.lock. */
    bool transferred; /* the port left with a message or a fuse: do not close it */
    uint64_t quota[NUM_QUOTA_TYPES];
    /*
     * The version of the newest port status looked at under the lock. A
     * status taken before another but handed to the watchers after it may
     * be stale (it could say READABLE of a queue read meanwhile): it is
     * replaced by a fresh look instead.
     */
    uint64_t status_version;
} core_pipe;

static ports_node *node(void)
{
    return core_node(core_get());
}

/* The signals a port status means. Dispatcher lock held (for the quotas). */
static void signals_of(const core_pipe *p, const ports_port_status *st,
                       struct MojoHandleSignalsState *out)
{
    out->satisfied_signals = 0;
    out->satisfiable_signals = 0;
    if (st->has_messages)
        out->satisfied_signals |= MOJO_HANDLE_SIGNAL_READABLE;
    if (st->has_messages || st->receiving_messages)
        out->satisfiable_signals |= MOJO_HANDLE_SIGNAL_READABLE;
    if (!st->peer_closed) {
        out->satisfied_signals |= MOJO_HANDLE_SIGNAL_WRITABLE;
        out->satisfiable_signals |= MOJO_HANDLE_SIGNAL_WRITABLE | MOJO_HANDLE_SIGNAL_READABLE |
                                    MOJO_HANDLE_SIGNAL_PEER_REMOTE;
        if (st->peer_remote)
            out->satisfied_signals |= MOJO_HANDLE_SIGNAL_PEER_REMOTE;
    } else {
        out->satisfied_signals |= MOJO_HANDLE_SIGNAL_PEER_CLOSED;
    }
    if (st->queued_message_count > p->quota[MOJO_QUOTA_TYPE_RECEIVE_QUEUE_LENGTH] ||
        st->queued_num_bytes > p->quota[MOJO_QUOTA_TYPE_RECEIVE_QUEUE_MEMORY_SIZE] ||
        st->unacknowledged_message_count > p->quota[MOJO_QUOTA_TYPE_UNREAD_MESSAGE_COUNT])
        out->satisfied_signals |= MOJO_HANDLE_SIGNAL_QUOTA_EXCEEDED;
    out->satisfiable_signals |= MOJO_HANDLE_SIGNAL_PEER_CLOSED | MOJO_HANDLE_SIGNAL_QUOTA_EXCEEDED;
}

/* Dispatcher lock held: see status_version. */
static void pipe_get_signals(core_dispatcher *d, struct MojoHandleSignalsState *out)
{
    core_pipe *p = (core_pipe *)d;
    ports_port_status st;
    if (ports_node_get_status(node(), &p->port, &st) != PORTS_OK) {
        /* The port is gone: the endpoint is being closed. */
        out->satisfied_signals = 0;
        out->satisfiable_signals = 0;
        return;
    }
    if (st.version > p->status_version)
        p->status_version = st.version;
    signals_of(p, &st, out);
}

/* A status the caller took, or the current one if a newer one was seen. */
static void fill_taken(core_dispatcher *d, const void *arg, struct MojoHandleSignalsState *out)
{
    core_pipe *p = (core_pipe *)d;
    const ports_port_status *st = arg;
    if (st->version <= p->status_version) {
        pipe_get_signals(d, out);
        return;
    }
    p->status_version = st->version;
    signals_of(p, st, out);
}

/* core_dispatcher_notify with a status taken already (its version is not 0). */
static void pipe_notify_taken(core_pipe *p, const ports_port_status *st)
{
    core_dispatcher_notify_with(&p->base, fill_taken, st);
}

static void pipe_close(core_dispatcher *d)
{
    core_pipe *p = (core_pipe *)d;
    plat_mutex_lock(&d->lock);
    bool transferred = p->transferred;
    plat_mutex_unlock(&d->lock);
    if (!transferred) {
        ports_port_set_user_data(&p->port, NULL);
        ports_node_close_port(node(), &p->port);
    }
}

static void pipe_destroy(core_dispatcher *d)
{
    core_pipe *p = (core_pipe *)d;
    ports_port_ref_release(&p->port);
    free(p);
}

static const core_dispatcher_ops pipe_ops = {
    .close = pipe_close,
    .get_signals = pipe_get_signals,
    .destroy = pipe_destroy,
};

core_dispatcher *core_pipe_new(const ports_port_ref *port)
{
    core_pipe *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    core_dispatcher_init(&p->base, CORE_DISPATCHER_MESSAGE_PIPE, &pipe_ops);
    ports_port_ref_copy(&p->port, port);
    for (int i = 0; i < NUM_QUOTA_TYPES; i++)
        p->quota[i] = MOJO_QUOTA_LIMIT_NONE;
    ports_port_set_user_data(&p->port, p);
    return &p->base;
}

void core_pipe_port_status_changed(const ports_port_ref *ref)
{
    ports_port_status st;
    void *d = ports_node_acquire_user_data_status(node(), ref, core_dispatcher_acquire_obj, &st);
    core_pipe_port_status_seen(d, &st);
}

void core_pipe_port_status_seen(void *data, const ports_port_status *st)
{
    core_dispatcher *d = data;
    if (!d)
        return;
    core_rc_enter();
    if (d->ops->port_status_changed)
        d->ops->port_status_changed(d);
    else if (d->type == CORE_DISPATCHER_MESSAGE_PIPE && st->version != 0)
        pipe_notify_taken((core_pipe *)d, st);
    else
        core_dispatcher_notify(d);
    core_dispatcher_release(d);
    core_rc_leave();
}

/*
 * The endpoint's port left in a message (or was fused): the dispatcher
 * closes without closing the port.
 */
static void close_for_transfer(core_pipe *p)
{
    plat_mutex_lock(&p->base.lock);
    p->transferred = true;
    plat_mutex_unlock(&p->base.lock);
    core_dispatcher_close(&p->base);
}

/* Resolves a pipe handle; INVALID_ARGUMENT for other kinds of handle. */
static MojoResult get_pipe(MojoHandle handle, core_pipe **out)
{
    core_dispatcher *d;
    MojoResult rv = core_resolve(handle, CORE_DISPATCHER_MESSAGE_PIPE, &d);
    if (rv == MOJO_RESULT_OK)
        *out = (core_pipe *)d;
    return rv;
}

static MojoResult from_ports(int rv)
{
    switch (rv) {
    case PORTS_OK:
        return MOJO_RESULT_OK;
    case PORTS_ERROR_PORT_PEER_CLOSED:
        return MOJO_RESULT_FAILED_PRECONDITION;
    case PORTS_ERROR_NO_MEMORY:
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    default:
        /* The endpoint closed or moved meanwhile, or it carries itself/its peer. */
        return MOJO_RESULT_INVALID_ARGUMENT;
    }
}

/* ------------------------------------------------------------ create */

MojoResult MojoCreateMessagePipe(const struct MojoCreateMessagePipeOptions *options,
                                 MojoHandle *message_pipe_handle0, MojoHandle *message_pipe_handle1)
{
    if (!message_pipe_handle0 || !message_pipe_handle1 || !core_options_ok(options, 0, NULL))
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_state *core = core_get();
    if (!core)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    ports_port_ref a, b;
    if (ports_node_create_port_pair(core_node(core), &a, &b) != PORTS_OK)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    core_dispatcher *da = core_pipe_new(&a), *db = core_pipe_new(&b);
    ports_port_ref_release(&a);
    ports_port_ref_release(&b);
    MojoHandle ha = MOJO_HANDLE_INVALID, hb;
    MojoResult rv = MOJO_RESULT_RESOURCE_EXHAUSTED;
    if (da && db && core_add_dispatcher(core, da, &ha) == MOJO_RESULT_OK) {
        if (core_add_dispatcher(core, db, &hb) == MOJO_RESULT_OK)
            rv = MOJO_RESULT_OK;
        else
            core_table_remove(core_handles(core), ha, (void **)&da);
    }
    if (rv != MOJO_RESULT_OK) {
        core_rc_enter();
        if (da) {
            core_dispatcher_close(da);
            core_dispatcher_release(da);
        }
        if (db) {
            core_dispatcher_close(db);
            core_dispatcher_release(db);
        }
        core_rc_leave();
        return rv;
    }
    *message_pipe_handle0 = ha;
    *message_pipe_handle1 = hb;
    return MOJO_RESULT_OK;
}

/* ------------------------------------------------------------- write */

/*
 * A write that failed before reaching the pipe: the user's handles are
 * usable again; what the message had received goes down with it.
 */
static void give_back(core_state *core, core_message *m)
{
    uint32_t kept = 0;
    for (uint32_t i = 0; i < m->num_attachments; i++) {
        core_attachment *a = &m->attachments[i];
        if (a->dispatcher && a->handle) {
            uint64_t value = a->handle;
            core_table_cancel_transit(core_handles(core), &value, 1);
            core_dispatcher_release(a->dispatcher);
        } else {
            m->attachments[kept++] = *a;
        }
    }
    m->num_attachments = kept;
    core_message_destroy(m);
}

/*
 * The write itself. Consumes m. On failure the handles the user appended are
 * usable again; what the message had received is closed with it.
 *
 * While the message travels, the event carries the pipes' ports and the
 * message keeps the objects (wrapped fds, buffers, data pipe ends) in their
 * places; an object that owns a port sends it in the event too (message.h).
 */
static MojoResult pipe_write(core_state *core, core_pipe *p, core_message *m)
{
    if (m->context || !core_message_may_leave_process(m)) {
        ports_port_status st;
        bool remote =
            ports_node_get_status(core_node(core), &p->port, &st) == PORTS_OK && st.peer_remote;
        /* Bound for another process: serialize now, while handles can still be attached. */
        if (remote && m->context && core_message_serialize_for_transit(m) != 0) {
            give_back(core, m);
            return MOJO_RESULT_INVALID_ARGUMENT;
        }
        if (remote && !core_message_may_leave_process(m)) {
            give_back(core, m);
            return MOJO_RESULT_RESOURCE_EXHAUSTED;
        }
    }
    uint32_t n = m->num_attachments;
    uint64_t stack[16];
    bool stack_objects[16];
    uint64_t *values = n <= 16 ? stack : malloc(n * sizeof(*values));
    /*
     * Which attachments travel as objects. Once sent, an object may already
     * be serialized and freed by another thread: decide everything before.
     */
    bool *object = n <= 16 ? stack_objects : malloc(n * sizeof(*object));
    core_attachment *travel = n ? calloc(n, sizeof(*travel)) : NULL;
    if (!values || !object || (n && !travel)) {
        if (values != stack)
            free(values);
        if (object != stack_objects)
            free(object);
        free(travel);
        give_back(core, m);
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    }
    core_attachment *att = m->attachments;
    uint32_t nvalues = 0, nports = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (att[i].dispatcher && att[i].handle)
            values[nvalues++] = att[i].handle;
        object[i] = att[i].dispatcher && att[i].dispatcher->type != CORE_DISPATCHER_MESSAGE_PIPE;
        if (object[i])
            travel[i].dispatcher = att[i].dispatcher; /* the message's reference */
        if (!object[i] || att[i].dispatcher->ops->bind)
            nports++;
    }
    m->attachments = travel;
    m->num_attachments = m->cap_attachments = n;
    m->base.size = m->size;

    core_message_send_begin(m);
    ports_event *ev = nports ? ports_user_message_new(nports, &m->base)
                             : ports_user_message_init(&m->event, &m->base);
    MojoResult rv = MOJO_RESULT_RESOURCE_EXHAUSTED;
    if (ev) {
        uint32_t k = 0;
        for (uint32_t i = 0; i < n; i++) {
            if (!att[i].dispatcher) {
                ev->u.user.ports[k++] = att[i].port;
            } else if (att[i].dispatcher->type == CORE_DISPATCHER_MESSAGE_PIPE) {
                core_pipe *carried = (core_pipe *)att[i].dispatcher;
                /*
                 * Its status changes are nobody's business while it travels;
                 * a failed send gives the endpoint its port back below.
                 */
                ports_port_set_user_data(&carried->port, NULL);
                ev->u.user.ports[k++] = carried->port.name;
            } else if (att[i].dispatcher->ops->bind) {
                /*
                 * An object with a port: appended, it lets go of the port
                 * (named in att[i].port should the send fail); received and
                 * forwarded unread, the port is the message's already.
                 */
                if (att[i].handle)
                    att[i].dispatcher->ops->transit_port(att[i].dispatcher, &att[i].port);
                ev->u.user.ports[k++] = att[i].port;
            }
        }
        rv = from_ports(ports_node_send_user_message(core_node(core), &p->port, ev));
    }
    bool dropped = core_message_send_end();

    if (rv == MOJO_RESULT_OK) {
        core_table_complete_transit(core_handles(core), values, nvalues);
        for (uint32_t i = 0; i < n; i++) {
            core_dispatcher *d = att[i].dispatcher;
            if (d && !object[i]) {
                close_for_transfer((core_pipe *)d);
                core_dispatcher_release(d);
            }
        }
        if (dropped) {
            /* Sent into a port that was gone: the objects go with it. */
            for (uint32_t i = 0; i < n; i++) {
                if (travel[i].dispatcher) {
                    core_dispatcher_close(travel[i].dispatcher);
                    core_dispatcher_release(travel[i].dispatcher);
                }
            }
            core_message_free_shell(m);
        }
    } else {
        if (!dropped)
            abort(); /* the ports layer consumes a refused message */
        for (uint32_t i = 0; i < n; i++) {
            core_dispatcher *d = att[i].dispatcher;
            if (d && !object[i] && att[i].handle) {
                core_pipe *carried = (core_pipe *)d;
                ports_port_set_user_data(&carried->port, carried);
                core_dispatcher_notify(&carried->base);
            } else if (d && att[i].handle && d->ops->bind) {
                (void)d->ops->bind(d, &att[i].port); /* its own port back */
            }
        }
        core_table_cancel_transit(core_handles(core), values, nvalues);
        for (uint32_t i = 0; i < n; i++) {
            core_dispatcher *d = att[i].dispatcher;
            if (d && att[i].handle) {
                core_dispatcher_release(d);
            } else if (d) {
                bool owns_port = d->ops->bind;
                core_dispatcher_close(d); /* received, never a handle here */
                core_dispatcher_release(d);
                if (owns_port)
                    core_close_port_named(&att[i].port);
            } else {
                core_close_port_named(&att[i].port); /* it went down with the message */
            }
        }
        core_message_free_shell(m);
    }
    if (values != stack)
        free(values);
    if (object != stack_objects)
        free(object);
    free(att);
    return rv;
}

MojoResult MojoWriteMessage(MojoHandle message_pipe_handle, MojoMessageHandle message,
                            const struct MojoWriteMessageOptions *options)
{
    core_message *m;
    MojoResult rv = core_message_take(message, &m);
    if (rv != MOJO_RESULT_OK)
        return rv;
    core_state *core = core_get();
    core_dispatcher *d = NULL;
    core_rc_enter();
    if (!core_options_ok(options, 0, NULL))
        rv = MOJO_RESULT_INVALID_ARGUMENT;
    else
        rv = core_pin(core, message_pipe_handle, CORE_DISPATCHER_MESSAGE_PIPE, &d);
    if (rv == MOJO_RESULT_BUSY) {
        /* Busy because this very message carries it: the caller's mistake. */
        for (uint32_t i = 0; i < m->num_attachments; i++)
            if (m->attachments[i].dispatcher && m->attachments[i].handle == message_pipe_handle)
                rv = MOJO_RESULT_INVALID_ARGUMENT;
    }
    if (rv == MOJO_RESULT_OK)
        rv = core_message_check_writable(m);
    if (rv == MOJO_RESULT_OK)
        rv = pipe_write(core, (core_pipe *)d, m);
    else
        give_back(core, m);
    if (d)
        core_unpin(core, message_pipe_handle);
    core_rc_leave();
    return rv;
}

/* -------------------------------------------------------------- read */

MojoResult MojoReadMessage(MojoHandle message_pipe_handle,
                           const struct MojoReadMessageOptions *options, MojoMessageHandle *message)
{
    if (!message || !core_options_ok(options, 0, NULL))
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_state *core = core_get();
    core_dispatcher *d;
    MojoResult rv = core_pin(core, message_pipe_handle, CORE_DISPATCHER_MESSAGE_PIPE, &d);
    if (rv != MOJO_RESULT_OK)
        return rv;
    core_pipe *p = (core_pipe *)d;
    core_rc_enter();
    ports_event *ev = NULL;
    ports_port_status after;
    rv = from_ports(ports_node_get_message_status(core_node(core), &p->port, &ev, &after));
    if (rv == MOJO_RESULT_OK && !ev)
        rv = MOJO_RESULT_SHOULD_WAIT;
    if (rv == MOJO_RESULT_OK) {
        core_message *m = core_message_from_event(ev);
        if (!m)
            rv = MOJO_RESULT_RESOURCE_EXHAUSTED;
        else if ((rv = core_message_publish(m, message)) != MOJO_RESULT_OK)
            core_message_destroy(m);
        /* READABLE (or a quota) may have cleared. */
        pipe_notify_taken(p, &after);
    }
    core_unpin(core, message_pipe_handle);
    core_rc_leave();
    return rv;
}

/* -------------------------------------------------------------- fuse */

MojoResult MojoFuseMessagePipes(MojoHandle handle0, MojoHandle handle1,
                                const struct MojoFuseMessagePipesOptions *options)
{
    if (!core_options_ok(options, 0, NULL))
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_state *core = core_get();
    if (!core)
        return MOJO_RESULT_INVALID_ARGUMENT;
    /* Both handles are closed whatever happens (Mojo's rule). */
    void *obj0 = NULL, *obj1 = NULL;
    MojoResult rv0 = core_table_remove(core_handles(core), handle0, &obj0);
    MojoResult rv1 = core_table_remove(core_handles(core), handle1, &obj1);
    core_dispatcher *d0 = rv0 == MOJO_RESULT_OK ? obj0 : NULL;
    core_dispatcher *d1 = rv1 == MOJO_RESULT_OK ? obj1 : NULL;
    MojoResult rv = rv0 != MOJO_RESULT_OK ? rv0 : rv1;
    if (rv == MOJO_RESULT_OK &&
        (d0->type != CORE_DISPATCHER_MESSAGE_PIPE || d1->type != CORE_DISPATCHER_MESSAGE_PIPE))
        rv = MOJO_RESULT_INVALID_ARGUMENT;

    core_rc_enter();
    if (rv == MOJO_RESULT_OK) {
        core_pipe *p0 = (core_pipe *)d0, *p1 = (core_pipe *)d1;
        ports_port_set_user_data(&p0->port, NULL);
        ports_port_set_user_data(&p1->port, NULL);
        close_for_transfer(p0);
        close_for_transfer(p1);
        /* On failure the ports layer closes both ports itself. */
        if (ports_node_merge_local_ports(core_node(core), &p0->port, &p1->port) != PORTS_OK)
            rv = MOJO_RESULT_FAILED_PRECONDITION;
    } else {
        if (d0)
            core_dispatcher_close(d0);
        if (d1)
            core_dispatcher_close(d1);
    }
    core_dispatcher_release(d0);
    core_dispatcher_release(d1);
    core_rc_leave();
    return rv;
}

/* ------------------------------------------------------------ quotas */

MojoResult MojoSetQuota(MojoHandle handle, MojoQuotaType type, uint64_t limit,
                        const struct MojoSetQuotaOptions *options)
{
    if (!core_options_ok(options, 0, NULL) || type >= NUM_QUOTA_TYPES)
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_pipe *p;
    MojoResult rv = get_pipe(handle, &p);
    if (rv != MOJO_RESULT_OK)
        return rv;
    core_state *core = core_get();
    core_rc_enter();
    plat_mutex_lock(&p->base.lock);
    p->quota[type] = limit;
    plat_mutex_unlock(&p->base.lock);
    if (type == MOJO_QUOTA_TYPE_UNREAD_MESSAGE_COUNT) {
        /*
         * Ask for an acknowledgement every half limit: the peer's reads then
         * come back in time for a writer that stays under the limit.
         */
        uint64_t interval = limit == MOJO_QUOTA_LIMIT_NONE ? 0 : limit / 2 + (limit & 1);
        if (limit != MOJO_QUOTA_LIMIT_NONE && interval == 0)
            interval = 1;
        ports_node_set_ack_request_interval(core_node(core), &p->port, interval);
    }
    core_dispatcher_notify(&p->base);
    core_dispatcher_release(&p->base);
    core_rc_leave();
    return MOJO_RESULT_OK;
}

MojoResult MojoQueryQuota(MojoHandle handle, MojoQuotaType type,
                          const struct MojoQueryQuotaOptions *options, uint64_t *limit,
                          uint64_t *usage)
{
    if (!core_options_ok(options, 0, NULL) || type >= NUM_QUOTA_TYPES)
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_pipe *p;
    MojoResult rv = get_pipe(handle, &p);
    if (rv != MOJO_RESULT_OK)
        return rv;
    core_state *core = core_get();
    ports_port_status st;
    if (ports_node_get_status(core_node(core), &p->port, &st) != PORTS_OK) {
        rv = MOJO_RESULT_INVALID_ARGUMENT; /* closed meanwhile */
    } else {
        plat_mutex_lock(&p->base.lock);
        uint64_t l = p->quota[type];
        plat_mutex_unlock(&p->base.lock);
        uint64_t u = type == MOJO_QUOTA_TYPE_RECEIVE_QUEUE_LENGTH ? st.queued_message_count
                     : type == MOJO_QUOTA_TYPE_RECEIVE_QUEUE_MEMORY_SIZE
                         ? st.queued_num_bytes
                         : st.unacknowledged_message_count;
        if (limit)
            *limit = l;
        if (usage)
            *usage = u;
    }
    core_dispatcher_release(&p->base);
    return rv;
}
