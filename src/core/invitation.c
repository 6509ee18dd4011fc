/*
 * Invitations: MojoCreateInvitation, MojoAttachMessagePipeToInvitation,
 * MojoExtractMessagePipeFromInvitation, MojoSendInvitation,
 * MojoAcceptInvitation, MojoSetDefaultProcessErrorHandler.
 *
 * An invitation created here holds, per attachment, the reserved port whose
 * peer is the pipe end given to the user; sending hands those ports to the
 * node controller, which merges each with the port the invitee extracts. An
 * accepted invitation is the node's node_invitation (see node.h).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cmojo_limits.h"
#include "core/core.h"
#include "core/handle_table.h"
#include "core/message_pipe.h"
#include "core/request_context.h"
#include "mojo/public/c/system/invitation.h"
#include "node/node.h"
#include "node/node_wire.h"

typedef struct attachment {
    uint8_t name[CMOJO_MAX_INVITATION_NAME];
    uint32_t len;
    ports_port_ref reserved;
} attachment;

typedef struct core_invitation {
    core_dispatcher base;
    /* Under base.lock. */
    node_invitation *accepted; /* NULL for one created here */
    attachment *att;
    uint32_t num_att;
    bool sent;
} core_invitation;

static void inv_close(core_dispatcher *d)
{
    core_invitation *inv = (core_invitation *)d;
    core_state *core = core_get();
    plat_mutex_lock(&d->lock);
    attachment *att = inv->att;
    /* Once sent, the reserved ports are the node's (their refs were released). */
    uint32_t n = inv->sent ? 0 : inv->num_att;
    node_invitation *accepted = inv->accepted;
    inv->att = NULL;
    inv->num_att = 0;
    inv->accepted = NULL;
    plat_mutex_unlock(&d->lock);
    for (uint32_t i = 0; i < n; i++) {
        ports_node_close_port(core_node(core), &att[i].reserved);
        ports_port_ref_release(&att[i].reserved);
    }
    free(att);
    if (accepted)
        node_invitation_close(core_node_controller(core), accepted);
}

static void inv_destroy(core_dispatcher *d)
{
    free(d);
}

static const core_dispatcher_ops inv_ops = {
    .close = inv_close,
    .destroy = inv_destroy,
};

static core_invitation *inv_new(void)
{
    core_invitation *inv = calloc(1, sizeof(*inv));
    if (inv)
        core_dispatcher_init(&inv->base, CORE_DISPATCHER_INVITATION, &inv_ops);
    return inv;
}

static MojoResult add_or_destroy(core_state *core, core_dispatcher *d, MojoHandle *out)
{
    MojoResult rv = core_add_dispatcher(core, d, out);
    if (rv != MOJO_RESULT_OK) {
        core_rc_enter();
        core_dispatcher_close(d);
        core_dispatcher_release(d);
        core_rc_leave();
    }
    return rv;
}

/* A pipe handle for a receiving port (the caller keeps its ref). */
static MojoResult pipe_handle(core_state *core, const ports_port_ref *port, MojoHandle *out)
{
    core_dispatcher *d = core_pipe_new(port);
    if (!d) {
        ports_node_close_port(core_node(core), port);
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    }
    return add_or_destroy(core, d, out);
}

static bool name_ok(const void *name, uint32_t len)
{
    return name && len > 0 && len <= CMOJO_MAX_INVITATION_NAME;
}

MojoResult MojoCreateInvitation(const struct MojoCreateInvitationOptions *options,
                                MojoHandle *invitation_handle)
{
    if (!invitation_handle || !core_options_ok(options, 0, NULL))
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_state *core = core_get();
    core_invitation *inv = core ? inv_new() : NULL;
    if (!inv)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    return add_or_destroy(core, &inv->base, invitation_handle);
}

MojoResult MojoAttachMessagePipeToInvitation(
    MojoHandle invitation_handle, const void *name, uint32_t name_num_bytes,
    const struct MojoAttachMessagePipeToInvitationOptions *options, MojoHandle *message_pipe_handle)
{
    if (!message_pipe_handle || !name_ok(name, name_num_bytes) ||
        !core_options_ok(options, 0, NULL))
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_dispatcher *d;
    MojoResult rv = core_resolve(invitation_handle, CORE_DISPATCHER_INVITATION, &d);
    if (rv != MOJO_RESULT_OK)
        return rv;
    core_invitation *inv = (core_invitation *)d;
    core_state *core = core_get();
    ports_port_ref user = {0}, reserved = {0};
    plat_mutex_lock(&d->lock);
    if (inv->accepted || d->closed) {
        rv = inv->accepted ? MOJO_RESULT_FAILED_PRECONDITION : MOJO_RESULT_INVALID_ARGUMENT;
    } else if (inv->num_att == CMOJO_MAX_INVITATION_ATTACHMENTS) {
        rv = MOJO_RESULT_RESOURCE_EXHAUSTED;
    } else {
        for (uint32_t i = 0; i < inv->num_att; i++)
            if (inv->att[i].len == name_num_bytes &&
                memcmp(inv->att[i].name, name, name_num_bytes) == 0)
                rv = MOJO_RESULT_ALREADY_EXISTS;
    }
    if (rv == MOJO_RESULT_OK) {
        attachment *grown = realloc(inv->att, (inv->num_att + 1) * sizeof(*grown));
        if (!grown || ports_node_create_port_pair(core_node(core), &user, &reserved) != PORTS_OK) {
            if (grown)
                inv->att = grown;
            rv = MOJO_RESULT_RESOURCE_EXHAUSTED;
        } else {
            inv->att = grown;
            attachment *a = &inv->att[inv->num_att++];
            memcpy(a->name, name, name_num_bytes);
            a->len = name_num_bytes;
            a->reserved = reserved;
        }
    }
    plat_mutex_unlock(&d->lock);
    if (rv == MOJO_RESULT_OK) {
        core_rc_enter();
        rv = pipe_handle(core, &user, message_pipe_handle);
        core_rc_leave();
        ports_port_ref_release(&user);
    }
    core_dispatcher_release(d);
    return rv;
}

MojoResult MojoExtractMessagePipeFromInvitation(
    MojoHandle invitation_handle, const void *name, uint32_t name_num_bytes,
    const struct MojoExtractMessagePipeFromInvitationOptions *options,
    MojoHandle *message_pipe_handle)
{
    if (!message_pipe_handle || !name_ok(name, name_num_bytes) ||
        !core_options_ok(options, 0, NULL))
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_dispatcher *d;
    MojoResult rv = core_resolve(invitation_handle, CORE_DISPATCHER_INVITATION, &d);
    if (rv != MOJO_RESULT_OK)
        return rv;
    core_invitation *inv = (core_invitation *)d;
    core_state *core = core_get();
    ports_port_ref port = {0};
    plat_mutex_lock(&d->lock);
    node_invitation *accepted = inv->accepted;
    if (d->closed) {
        rv = MOJO_RESULT_INVALID_ARGUMENT;
    } else if (!accepted) {
        /* Created here: the reserved end comes back and is no longer sent. */
        rv = MOJO_RESULT_NOT_FOUND;
        for (uint32_t i = 0; i < inv->num_att; i++) {
            if (inv->att[i].len == name_num_bytes &&
                memcmp(inv->att[i].name, name, name_num_bytes) == 0) {
                port = inv->att[i].reserved;
                inv->att[i] = inv->att[--inv->num_att];
                rv = MOJO_RESULT_OK;
                break;
            }
        }
    } else if (node_invitation_extract(core_node_controller(core), accepted, name, name_num_bytes,
                                       &port) != 0) {
        rv = MOJO_RESULT_RESOURCE_EXHAUSTED;
    }
    plat_mutex_unlock(&d->lock);
    if (rv == MOJO_RESULT_OK) {
        core_rc_enter();
        rv = pipe_handle(core, &port, message_pipe_handle);
        core_rc_leave();
        ports_port_ref_release(&port);
    }
    core_dispatcher_release(d);
    return rv;
}

/* The one fd of a CHANNEL endpoint, or a result code. */
static MojoResult endpoint_fd(const struct MojoInvitationTransportEndpoint *ep, int *fd)
{
    if (!ep || ep->struct_size < sizeof(*ep))
        return MOJO_RESULT_INVALID_ARGUMENT;
    if (ep->type != MOJO_INVITATION_TRANSPORT_TYPE_CHANNEL)
        return MOJO_RESULT_UNIMPLEMENTED;
    if (ep->num_platform_handles != 1 || !ep->platform_handles)
        return MOJO_RESULT_INVALID_ARGUMENT;
    const struct MojoPlatformHandle *h = &ep->platform_handles[0];
    if (h->struct_size < sizeof(*h) || h->type != MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR ||
        h->value > (uint64_t)INT32_MAX)
        return MOJO_RESULT_INVALID_ARGUMENT;
    *fd = (int)h->value;
    return MOJO_RESULT_OK;
}

static MojoResult from_errno(int rv)
{
    switch (rv) {
    case 0:
        return MOJO_RESULT_OK;
    case -EINVAL:
        return MOJO_RESULT_INVALID_ARGUMENT;
    case -EPERM:
        return MOJO_RESULT_FAILED_PRECONDITION;
    case -ENOMEM:
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    default:
        return MOJO_RESULT_ABORTED;
    }
}

/* The user's handler, given the node's report. */
typedef struct error_target {
    MojoProcessErrorHandler fn;
    uintptr_t ctx;
} error_target;

static void report_error(uintptr_t ctx, const char *reason, size_t len, bool disconnected)
{
    error_target *t = (error_target *)ctx;
    struct MojoProcessErrorDetails details = {
        .struct_size = sizeof(details),
        .error_message_length = (uint32_t)len,
        .error_message = reason,
        .flags = disconnected ? MOJO_PROCESS_ERROR_FLAG_DISCONNECTED : MOJO_PROCESS_ERROR_FLAG_NONE,
    };
    t->fn(t->ctx, &details);
    /* DISCONNECTED is the last report for this process. */
    if (disconnected)
        free(t);
}

MojoResult MojoSendInvitation(MojoHandle invitation_handle,
                              const struct MojoPlatformProcessHandle *process_handle,
                              const struct MojoInvitationTransportEndpoint *transport_endpoint,
                              MojoProcessErrorHandler error_handler,
                              uintptr_t error_handler_context,
                              const struct MojoSendInvitationOptions *options)
{
    uint32_t flags;
    if (!core_options_ok(options,
                         MOJO_SEND_INVITATION_FLAG_ISOLATED |
                             MOJO_SEND_INVITATION_FLAG_UNTRUSTED_PROCESS,
                         &flags))
        return MOJO_RESULT_INVALID_ARGUMENT;
    if (process_handle && process_handle->struct_size < sizeof(*process_handle))
        return MOJO_RESULT_INVALID_ARGUMENT;
    bool isolated = flags & MOJO_SEND_INVITATION_FLAG_ISOLATED;
    const char *conn_name = NULL;
    size_t conn_name_len = 0;
    if (isolated && options->struct_size >= sizeof(*options)) {
        conn_name = options->isolated_connection_name;
        conn_name_len = options->isolated_connection_name_length;
        if (conn_name_len && !conn_name)
            return MOJO_RESULT_INVALID_ARGUMENT;
    }
    int fd;
    MojoResult rv = endpoint_fd(transport_endpoint, &fd);
    if (rv != MOJO_RESULT_OK)
        return rv;
    core_dispatcher *d;
    rv = core_resolve(invitation_handle, CORE_DISPATCHER_INVITATION, &d);
    if (rv != MOJO_RESULT_OK)
        return rv;
    core_invitation *inv = (core_invitation *)d;
    core_state *core = core_get();
    error_target *target = NULL;
    if (error_handler && !(target = malloc(sizeof(*target)))) {
        core_dispatcher_release(d);
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    }
    if (target)
        *target = (error_target){error_handler, error_handler_context};

    plat_mutex_lock(&d->lock);
    if (inv->accepted || inv->sent || d->closed)
        rv = MOJO_RESULT_INVALID_ARGUMENT;
    else if (inv->num_att == 0)
        rv = MOJO_RESULT_FAILED_PRECONDITION;
    if (rv == MOJO_RESULT_OK) {
        node_wire_name names[CMOJO_MAX_INVITATION_ATTACHMENTS];
        ports_port_ref ports[CMOJO_MAX_INVITATION_ATTACHMENTS];
        for (uint32_t i = 0; i < inv->num_att; i++) {
            names[i] = (node_wire_name){inv->att[i].name, inv->att[i].len};
            ports[i] = inv->att[i].reserved;
        }
        rv = from_errno(node_send_invitation(core_node_controller(core), fd, isolated, names, ports,
                                             inv->num_att, target ? report_error : NULL,
                                             (uintptr_t)target, conn_name, conn_name_len));
        if (rv == MOJO_RESULT_OK) {
            /* The node holds its own references to the reserved ports. */
            for (uint32_t i = 0; i < inv->num_att; i++)
                ports_port_ref_release(&inv->att[i].reserved);
            inv->sent = true;
        }
    }
    plat_mutex_unlock(&d->lock);
    core_dispatcher_release(d);
    if (rv != MOJO_RESULT_OK) {
        free(target);
        return rv;
    }
    /* Sent: the handle is closed. */
    void *obj;
    if (core_table_remove(core_handles(core), invitation_handle, &obj) == MOJO_RESULT_OK) {
        core_rc_enter();
        core_dispatcher_close(obj);
        core_dispatcher_release(obj);
        core_rc_leave();
    }
    return MOJO_RESULT_OK;
}

MojoResult MojoAcceptInvitation(const struct MojoInvitationTransportEndpoint *transport_endpoint,
                                const struct MojoAcceptInvitationOptions *options,
                                MojoHandle *invitation_handle)
{
    uint32_t flags;
    if (!invitation_handle ||
        !core_options_ok(options,
                         MOJO_ACCEPT_INVITATION_FLAG_ISOLATED |
                             MOJO_ACCEPT_INVITATION_FLAG_LEAK_TRANSPORT_ENDPOINT,
                         &flags))
        return MOJO_RESULT_INVALID_ARGUMENT;
    int fd;
    MojoResult rv = endpoint_fd(transport_endpoint, &fd);
    if (rv != MOJO_RESULT_OK)
        return rv;
    core_state *core = core_get();
    core_invitation *inv = core ? inv_new() : NULL;
    if (!inv)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    node_invitation *accepted;
    rv = from_errno(node_accept_invitation(
        core_node_controller(core), fd, flags & MOJO_ACCEPT_INVITATION_FLAG_ISOLATED, &accepted));
    if (rv != MOJO_RESULT_OK) {
        core_dispatcher_release(&inv->base);
        return rv;
    }
    inv->accepted = accepted;
    return add_or_destroy(core, &inv->base, invitation_handle);
}

/* The default handler, adapted to the node's callback. */
static _Atomic(MojoDefaultProcessErrorHandler) g_default_handler;

static void report_default(const char *reason, size_t len, bool disconnected)
{
    MojoDefaultProcessErrorHandler fn = atomic_load(&g_default_handler);
    if (!fn)
        return;
    struct MojoProcessErrorDetails details = {
        .struct_size = sizeof(details),
        .error_message_length = (uint32_t)len,
        .error_message = reason,
        .flags = disconnected ? MOJO_PROCESS_ERROR_FLAG_DISCONNECTED : MOJO_PROCESS_ERROR_FLAG_NONE,
    };
    fn(&details);
}

MojoResult
MojoSetDefaultProcessErrorHandler(MojoDefaultProcessErrorHandler handler,
                                  const struct MojoSetDefaultProcessErrorHandlerOptions *options)
{
    if (!core_options_ok(options, 0, NULL))
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_state *core = core_get();
    if (!core)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    MojoDefaultProcessErrorHandler expected = NULL;
    if (handler && !atomic_compare_exchange_strong(&g_default_handler, &expected, handler))
        return MOJO_RESULT_ALREADY_EXISTS;
    if (!handler)
        atomic_store(&g_default_handler, NULL);
    node_set_default_error_handler(core_node_controller(core), handler ? report_default : NULL);
    return MOJO_RESULT_OK;
}
