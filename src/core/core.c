/*
 * Process-wide state and the entry points that belong to no handle type:
 * MojoInitialize, MojoShutdown, MojoClose, MojoQueryHandleSignalsState.
 */
#include "core/core.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "cmojo_limits.h"
#include "core/dispatcher.h"
#include "core/handle_table.h"
#include "core/message.h"
#include "core/message_pipe.h"
#include "core/request_context.h"
#include "mojo/public/c/system/functions.h"
#include "node/node.h"
#include "ports/ports.h"

struct core_state {
    node_controller *nc;
    ports_node *node; /* node_ports(nc) */
    core_table handles;
    core_table messages;
};

static _Atomic(core_state *) g_core;
static plat_mutex g_init_lock = PLAT_MUTEX_INITIALIZER;
/* Under g_init_lock: what MojoInitialize/MojoShutdown report. */
static bool g_initialized;
static bool g_load_only;

/* ------------------------------------------------------ node delegate */

static void port_status_changed(const ports_port_ref *ref)
{
    core_pipe_port_status_changed(ref);
}

static void port_status_seen(const ports_port_ref *ref, void *data, const ports_port_status *status)
{
    (void)ref;
    core_pipe_port_status_seen(data, status);
}

/* ------------------------------------------------------------- state */

static core_state *create_state(void)
{
    core_state *core = calloc(1, sizeof(*core));
    if (!core)
        return NULL;
    node_delegate delegate = {
        .port_status_changed = port_status_changed,
        .acquire_user_data = core_dispatcher_acquire_obj,
        .port_status_seen = port_status_seen,
        .payload_measure = core_message_wire_measure,
        .payload_serialize = core_message_wire_serialize,
        .payload_serialize_head = core_message_wire_serialize_head,
        .payload_serialize_in_place = core_message_wire_serialize_in_place,
        .payload_parse = core_message_wire_parse,
        .payload_event = core_message_wire_event,
        .enter = core_rc_enter_system,
        .leave = core_rc_leave_system,
    };
    if (core_table_init(&core->handles, CMOJO_MAX_HANDLES, core_dispatcher_acquire_obj,
                        core_dispatcher_release_obj) != 0)
        goto fail;
    if (core_table_init(&core->messages, CMOJO_MAX_MESSAGES, NULL, NULL) != 0)
        goto fail;
    if (node_create(&delegate, &core->nc) != 0)
        goto fail;
    core->node = node_ports(core->nc);
    return core;
fail:
    core_table_destroy(&core->handles);
    core_table_destroy(&core->messages);
    free(core);
    return NULL;
}

core_state *core_get(void)
{
    core_state *core = atomic_load_explicit(&g_core, memory_order_acquire);
    if (core)
        return core;
    plat_mutex_lock(&g_init_lock);
    core = atomic_load_explicit(&g_core, memory_order_relaxed);
    if (!core) {
        core = create_state();
        atomic_store_explicit(&g_core, core, memory_order_release);
    }
    plat_mutex_unlock(&g_init_lock);
    return core;
}

ports_node *core_node(core_state *core)
{
    return core->node;
}

node_controller *core_node_controller(core_state *core)
{
    return core->nc;
}

core_table *core_handles(core_state *core)
{
    return &core->handles;
}

core_table *core_messages(core_state *core)
{
    return &core->messages;
}

MojoResult core_resolve(MojoHandle handle, core_dispatcher_type type, core_dispatcher **out)
{
    core_state *core = core_get();
    core_dispatcher *d;
    MojoResult rv = core_pin(core, handle, type, &d);
    if (rv != MOJO_RESULT_OK)
        return rv;
    core_dispatcher_acquire(d); /* the caller's, for as long as it likes */
    core_unpin(core, handle);
    *out = d;
    return MOJO_RESULT_OK;
}

MojoResult core_pin(core_state *core, MojoHandle handle, core_dispatcher_type type,
                    core_dispatcher **out)
{
    if (!core)
        return MOJO_RESULT_INVALID_ARGUMENT; /* nothing can be open */
    void *obj;
    MojoResult rv = core_table_pin(&core->handles, handle, &obj);
    if (rv != MOJO_RESULT_OK)
        return rv;
    core_dispatcher *d = obj;
    if (type && d->type != type) {
        core_table_unpin(&core->handles, handle);
        return MOJO_RESULT_INVALID_ARGUMENT;
    }
    *out = d;
    return MOJO_RESULT_OK;
}

void core_unpin(core_state *core, MojoHandle handle)
{
    core_table_unpin(&core->handles, handle);
}

MojoResult core_take_handle(MojoHandle handle, core_dispatcher_type type, core_dispatcher **out)
{
    core_dispatcher *d;
    MojoResult rv = core_resolve(handle, type, &d);
    if (rv != MOJO_RESULT_OK)
        return rv;
    core_dispatcher_release(d);
    void *obj;
    rv = core_table_remove(&core_get()->handles, handle, &obj);
    if (rv != MOJO_RESULT_OK)
        return rv;
    *out = obj;
    return MOJO_RESULT_OK;
}

void core_close_port_named(const ports_name *name)
{
    ports_node *node = core_get()->node;
    ports_port_ref ref;
    if (ports_node_get_port(node, name, &ref) == PORTS_OK) {
        ports_node_close_port(node, &ref);
        ports_port_ref_release(&ref);
    }
}

MojoResult core_add_dispatcher(core_state *core, core_dispatcher *d, MojoHandle *out)
{
    uint64_t value;
    MojoResult rv = core_table_add(&core->handles, d, &value);
    if (rv == MOJO_RESULT_OK)
        *out = (MojoHandle)value;
    return rv;
}

size_t core_debug_handle_count(void)
{
    core_state *core = atomic_load_explicit(&g_core, memory_order_acquire);
    return core ? core_table_count(&core->handles) : 0;
}

size_t core_debug_message_count(void)
{
    core_state *core = atomic_load_explicit(&g_core, memory_order_acquire);
    return core ? core_table_count(&core->messages) : 0;
}

size_t core_debug_port_count(void)
{
    core_state *core = atomic_load_explicit(&g_core, memory_order_acquire);
    return core ? ports_node_port_count(core->node) : 0;
}

/* ------------------------------------------------------- entry points */

#define KNOWN_INITIALIZE_FLAGS                                                                     \
    (MOJO_INITIALIZE_FLAG_AS_BROKER | MOJO_INITIALIZE_FLAG_FORCE_DIRECT_SHARED_MEMORY_ALLOCATION | \
     MOJO_INITIALIZE_FLAG_LOAD_ONLY)

MojoResult MojoInitialize(const struct MojoInitializeOptions *options)
{
    uint32_t flags;
    if (!core_options_ok(options, KNOWN_INITIALIZE_FLAGS, &flags))
        return MOJO_RESULT_INVALID_ARGUMENT;
    MojoResult rv = MOJO_RESULT_OK;
    plat_mutex_lock(&g_init_lock);
    if (g_initialized) {
        rv = MOJO_RESULT_FAILED_PRECONDITION;
    } else if (flags & MOJO_INITIALIZE_FLAG_LOAD_ONLY) {
        rv = g_load_only ? MOJO_RESULT_ALREADY_EXISTS : MOJO_RESULT_OK;
        g_load_only = true;
    } else {
        g_initialized = true;
    }
    plat_mutex_unlock(&g_init_lock);
    /* Create the state now so that the first real call does not pay for it. */
    if (rv == MOJO_RESULT_OK && !core_get())
        rv = MOJO_RESULT_RESOURCE_EXHAUSTED;
    return rv;
}

static void close_everything(core_state *core)
{
    /*
     * Handlers run by the CANCELLED events may create handles or messages
     * again; go round until both tables stay empty.
     */
    for (;;) {
        bool any = false;
        uint64_t value;
        void *obj;
        core_rc_enter();
        while (core_table_take_any(&core->messages, &value, &obj)) {
            core_message_destroy(obj);
            any = true;
        }
        while (core_table_take_any(&core->handles, &value, &obj)) {
            core_dispatcher_close(obj);
            core_dispatcher_release(obj);
            any = true;
        }
        core_rc_leave();
        if (!any)
            break;
    }
}

MojoResult MojoShutdown(const struct MojoShutdownOptions *options)
{
    if (!core_options_ok(options, 0, NULL))
        return MOJO_RESULT_INVALID_ARGUMENT;
    plat_mutex_lock(&g_init_lock);
    if (!g_initialized) {
        plat_mutex_unlock(&g_init_lock);
        return MOJO_RESULT_FAILED_PRECONDITION;
    }
    g_initialized = false;
    g_load_only = false;
    core_state *core = atomic_load_explicit(&g_core, memory_order_relaxed);
    plat_mutex_unlock(&g_init_lock);
    if (!core)
        return MOJO_RESULT_OK;

    close_everything(core);
    atomic_store_explicit(&g_core, NULL, memory_order_release);
    node_destroy(core->nc);
    core_table_destroy(&core->handles);
    core_table_destroy(&core->messages);
    free(core);
    return MOJO_RESULT_OK;
}

MojoResult MojoClose(MojoHandle handle)
{
    core_state *core = core_get();
    if (!core)
        return MOJO_RESULT_INVALID_ARGUMENT; /* nothing can be open */
    void *obj;
    MojoResult rv = core_table_remove(&core->handles, handle, &obj);
    if (rv != MOJO_RESULT_OK)
        return rv;
    core_rc_enter();
    core_dispatcher_close(obj);
    core_dispatcher_release(obj);
    core_rc_leave();
    return MOJO_RESULT_OK;
}

MojoResult MojoQueryHandleSignalsState(MojoHandle handle,
                                       struct MojoHandleSignalsState *signals_state)
{
    if (!signals_state)
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_dispatcher *d;
    MojoResult rv = core_resolve(handle, 0, &d);
    if (rv != MOJO_RESULT_OK)
        return rv;
    struct MojoHandleSignalsState state;
    rv = core_dispatcher_query(d, &state);
    core_dispatcher_release(d);
    if (rv == MOJO_RESULT_OK)
        *signals_state = state;
    return rv;
}
