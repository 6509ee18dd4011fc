/*
 * Message objects and their entry points. See message.h for the model.
 */
#include "core/message.h"

#include <stdlib.h>
#include <string.h>

#include "cmojo_limits.h"
#include "core/core.h"
#include "core/handle_table.h"
#include "core/message_pipe.h"
#include "core/request_context.h"
#include "ports/ports.h"

static void payload_destroy(ports_payload *payload);
static int payload_will_be_routed_externally(ports_payload *payload);

static const ports_payload_ops message_ops = {
    .destroy = payload_destroy,
    .will_be_routed_externally = payload_will_be_routed_externally,
};

static core_message *message_new(uint32_t max_size)
{
    core_message *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->base.ops = &message_ops;
    m->max_size = max_size;
    return m;
}

/* Frees the memory and runs the context destructor; attachments are gone. */
static void message_free(core_message *m)
{
    if (m->context && m->destructor)
        m->destructor(m->context);
    free(m->data);
    free(m->attachments);
    free(m);
}

static void payload_destroy(ports_payload *payload)
{
    core_message *m = (core_message *)payload;
    /* A message in flight carries its handles as event ports, not here. */
    message_free(m);
}

/* Closes what the attachments own: appended handles and received ports. */
static void close_attachments(core_state *core, core_attachment *att, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        if (att[i].dispatcher) {
            uint64_t value = att[i].handle;
            core_table_complete_transit(core_handles(core), &value, 1, core_dispatcher_release_obj);
            core_dispatcher_close(att[i].dispatcher);
            core_dispatcher_release(att[i].dispatcher);
        } else {
            core_close_port_named(&att[i].port);
        }
    }
}

void core_message_destroy(core_message *m)
{
    if (!m)
        return;
    if (m->num_attachments && !m->handles_extracted)
        close_attachments(core_get(), m->attachments, m->num_attachments);
    message_free(m);
}

MojoResult core_message_take(uint64_t value, core_message **out)
{
    core_state *core = core_get();
    if (!core)
        return MOJO_RESULT_INVALID_ARGUMENT;
    void *obj;
    MojoResult rv = core_table_remove(core_messages(core), value, &obj);
    if (rv != MOJO_RESULT_OK)
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_message *m = obj;
    m->value = 0;
    *out = m;
    return MOJO_RESULT_OK;
}

MojoResult core_message_publish(core_message *m, MojoMessageHandle *out)
{
    core_state *core = core_get();
    if (!core)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    uint64_t value;
    MojoResult rv = core_table_add(core_messages(core), m, &value);
    if (rv == MOJO_RESULT_OK) {
        m->value = value;
        *out = (MojoMessageHandle)value;
    }
    return rv;
}

/* Looks a live message up (no reference: messages are single-threaded). */
static core_message *lookup(MojoMessageHandle handle)
{
    core_state *core = core_get();
    void *obj;
    if (!core || core_table_get(core_messages(core), handle, &obj) != MOJO_RESULT_OK)
        return NULL;
    return obj;
}

static bool reserve(core_message *m, uint32_t capacity)
{
    if (capacity <= m->capacity)
        return true;
    uint32_t grown = m->capacity > m->max_size / 2 ? m->max_size : m->capacity * 2;
    if (grown < capacity)
        grown = capacity;
    if (grown < 64)
        grown = 64 < m->max_size ? 64 : capacity;
    uint8_t *data = realloc(m->data, grown);
    if (!data)
        return false;
    m->data = data;
    m->capacity = grown;
    return true;
}

core_message *core_message_from_event(ports_event *ev)
{
    ports_payload *payload = ev->u.user.payload;
    ev->u.user.payload = NULL;
    core_message *m;
    if (payload && payload->ops == &message_ops) {
        m = (core_message *)payload;
    } else {
        /* Bytes from another node (or no payload at all). */
        m = message_new(CMOJO_MAX_MESSAGE_NUM_BYTES);
        size_t len = payload ? payload->size : 0;
        if (m && len && (len > m->max_size || !reserve(m, (uint32_t)len))) {
            message_free(m);
            m = NULL;
        }
        if (m) {
            if (len)
                memcpy(m->data, ports_payload_bytes_data(payload), len);
            m->size = (uint32_t)len;
            m->has_data = true;
            m->committed = true;
        }
        ports_payload_destroy(payload);
    }
    uint32_t n = ev->u.user.num_ports;
    if (m && n) {
        m->attachments = calloc(n, sizeof(*m->attachments));
        if (!m->attachments) {
            message_free(m);
            m = NULL;
        }
    }
    if (!m) {
        for (uint32_t i = 0; i < n; i++)
            core_close_port_named(&ev->u.user.ports[i]);
        ports_event_destroy(ev);
        return NULL;
    }
    for (uint32_t i = 0; i < n; i++)
        m->attachments[i].port = ev->u.user.ports[i];
    m->num_attachments = m->cap_attachments = n;
    m->handles_extracted = false;
    ports_event_destroy(ev);
    return m;
}

MojoResult core_message_check_writable(const core_message *m)
{
    if (!m->has_data && !m->context)
        return MOJO_RESULT_NOT_FOUND;
    if (m->has_data && !m->committed)
        return MOJO_RESULT_FAILED_PRECONDITION;
    if (m->handles_extracted && m->num_attachments)
        return MOJO_RESULT_FAILED_PRECONDITION; /* its handles were taken out */
    return MOJO_RESULT_OK;
}

/*
 * Runs the serializer of a context message (which appends through the public
 * API, so the message must be in the table as `handle`), then the destructor.
 * The result is a committed message with data.
 */
static void serialize_context(core_message *m, MojoMessageHandle handle)
{
    uintptr_t context = m->context;
    MojoMessageContextSerializer serializer = m->serializer;
    MojoMessageContextDestructor destructor = m->destructor;
    m->context = 0;
    m->serializer = NULL;
    m->destructor = NULL;
    serializer(handle, context);
    if (destructor)
        destructor(context);
}

static int payload_will_be_routed_externally(ports_payload *payload)
{
    core_message *m = (core_message *)payload;
    if (!m->context)
        return 0;
    if (!m->serializer)
        return -1; /* Mojo's rule: a context without serializer cannot leave */
    MojoMessageHandle handle;
    if (core_message_publish(m, &handle) != MOJO_RESULT_OK)
        return -1;
    core_rc_enter();
    serialize_context(m, handle);
    core_rc_leave();
    core_message *same;
    if (core_message_take(handle, &same) != MOJO_RESULT_OK || same != m)
        abort(); /* the serializer destroyed the message it was serializing */
    m->has_data = true;
    m->committed = true;
    m->base.size = m->size;
    return 0;
}

/* --------------------------------------------------------- entry points */

MojoResult MojoCreateMessage(const struct MojoCreateMessageOptions *options,
                             MojoMessageHandle *message)
{
    uint32_t flags;
    if (!message || !core_options_ok(options, MOJO_CREATE_MESSAGE_FLAG_UNLIMITED_SIZE, &flags))
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_message *m = message_new((flags & MOJO_CREATE_MESSAGE_FLAG_UNLIMITED_SIZE)
                                      ? UINT32_MAX
                                      : CMOJO_MAX_MESSAGE_NUM_BYTES);
    if (!m)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    MojoResult rv = core_message_publish(m, message);
    if (rv != MOJO_RESULT_OK)
        message_free(m);
    return rv;
}

MojoResult MojoDestroyMessage(MojoMessageHandle message)
{
    core_message *m;
    MojoResult rv = core_message_take(message, &m);
    if (rv != MOJO_RESULT_OK)
        return rv;
    core_rc_enter();
    core_message_destroy(m);
    core_rc_leave();
    return MOJO_RESULT_OK;
}

MojoResult MojoSerializeMessage(MojoMessageHandle message,
                                const struct MojoSerializeMessageOptions *options)
{
    if (!core_options_ok(options, 0, NULL))
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_message *m = lookup(message);
    if (!m)
        return MOJO_RESULT_INVALID_ARGUMENT;
    if (m->has_data)
        return MOJO_RESULT_FAILED_PRECONDITION;
    if (!m->context || !m->serializer)
        return MOJO_RESULT_NOT_FOUND;
    core_rc_enter();
    serialize_context(m, message);
    core_rc_leave();
    /* The serializer may (wrongly) have destroyed the message. */
    if (lookup(message) != m)
        return MOJO_RESULT_ABORTED;
    if (m->has_data && !m->committed) {
        /* Half a serialization is no message: drop what it attached. */
        core_rc_enter();
        close_attachments(core_get(), m->attachments, m->num_attachments);
        core_rc_leave();
        m->num_attachments = 0;
        m->size = 0;
        m->has_data = false;
        return MOJO_RESULT_ABORTED;
    }
    m->has_data = true;
    m->committed = true;
    return MOJO_RESULT_OK;
}

MojoResult MojoReserveMessageCapacity(MojoMessageHandle message, uint32_t payload_buffer_size,
                                      uint32_t *buffer_size)
{
    core_message *m = lookup(message);
    if (!m)
        return MOJO_RESULT_INVALID_ARGUMENT;
    if (m->context || m->has_data)
        return MOJO_RESULT_FAILED_PRECONDITION;
    if (payload_buffer_size > m->max_size)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    if (!reserve(m, payload_buffer_size))
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    if (buffer_size)
        *buffer_size = m->capacity;
    return MOJO_RESULT_OK;
}

/* Which dispatchers may travel inside a message (checked under the table lock). */
static MojoResult check_transferable(void *obj)
{
    const core_dispatcher *d = obj;
    return d->type == CORE_DISPATCHER_MESSAGE_PIPE ? MOJO_RESULT_OK : MOJO_RESULT_INVALID_ARGUMENT;
}

MojoResult MojoAppendMessageData(MojoMessageHandle message, uint32_t additional_payload_size,
                                 const MojoHandle *handles, uint32_t num_handles,
                                 const struct MojoAppendMessageDataOptions *options, void **buffer,
                                 uint32_t *buffer_size)
{
    uint32_t flags;
    if (!core_options_ok(options, MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE, &flags) ||
        (num_handles && !handles))
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_message *m = lookup(message);
    if (!m)
        return MOJO_RESULT_INVALID_ARGUMENT;
    if (m->context || m->committed)
        return MOJO_RESULT_FAILED_PRECONDITION;
    if ((uint64_t)m->size + additional_payload_size > m->max_size ||
        (uint64_t)m->num_attachments + num_handles > CMOJO_MAX_MESSAGE_HANDLES)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;

    uint32_t new_size = m->size + additional_payload_size;
    if (!reserve(m, new_size))
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    uint32_t need = m->num_attachments + num_handles;
    if (need > m->cap_attachments) {
        uint32_t cap = m->cap_attachments ? m->cap_attachments * 2 : 4;
        if (cap < need)
            cap = need;
        core_attachment *grown = realloc(m->attachments, cap * sizeof(*grown));
        if (!grown)
            return MOJO_RESULT_RESOURCE_EXHAUSTED;
        m->attachments = grown;
        m->cap_attachments = cap;
    }
    if (num_handles) {
        core_dispatcher *stack[16];
        core_dispatcher **ds = num_handles <= 16 ? stack : malloc(num_handles * sizeof(*ds));
        if (!ds)
            return MOJO_RESULT_RESOURCE_EXHAUSTED;
        uint64_t values[16];
        uint64_t *vs = num_handles <= 16 ? values : malloc(num_handles * sizeof(*vs));
        if (!vs) {
            if (ds != stack)
                free(ds);
            return MOJO_RESULT_RESOURCE_EXHAUSTED;
        }
        for (uint32_t i = 0; i < num_handles; i++)
            vs[i] = handles[i];
        MojoResult rv = core_table_begin_transit(core_handles(core_get()), vs, num_handles,
                                                 check_transferable, (void **)ds);
        if (rv == MOJO_RESULT_OK)
            for (uint32_t i = 0; i < num_handles; i++)
                m->attachments[m->num_attachments++] =
                    (core_attachment){.dispatcher = ds[i], .handle = handles[i]};
        if (ds != stack)
            free(ds);
        if (vs != values)
            free(vs);
        if (rv != MOJO_RESULT_OK)
            return rv;
    }
    if (additional_payload_size)
        memset(m->data + m->size, 0, additional_payload_size);
    m->size = new_size;
    m->has_data = true;
    if (flags & MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE)
        m->committed = true;
    if (buffer)
        *buffer = m->data;
    if (buffer_size)
        *buffer_size = m->capacity;
    return MOJO_RESULT_OK;
}

/* Turns attachment i into a handle in the table. */
static MojoResult extract_one(core_state *core, core_attachment *a, MojoHandle *out)
{
    if (a->dispatcher) {
        /* Appended in this process and never sent: just usable again. */
        uint64_t value = a->handle;
        core_table_cancel_transit(core_handles(core), &value, 1);
        core_dispatcher_release(a->dispatcher);
        a->dispatcher = NULL;
        *out = a->handle;
        return MOJO_RESULT_OK;
    }
    ports_port_ref ref;
    if (ports_node_get_port(core_node(core), &a->port, &ref) != PORTS_OK)
        return MOJO_RESULT_ABORTED;
    core_dispatcher *d = core_pipe_new(&ref);
    MojoResult rv = MOJO_RESULT_RESOURCE_EXHAUSTED;
    if (d) {
        rv = core_add_dispatcher(core, d, out);
        if (rv != MOJO_RESULT_OK) {
            core_dispatcher_close(d);
            core_dispatcher_release(d);
        }
    } else {
        ports_node_close_port(core_node(core), &ref);
    }
    ports_port_ref_release(&ref);
    return rv;
}

MojoResult MojoGetMessageData(MojoMessageHandle message,
                              const struct MojoGetMessageDataOptions *options, void **buffer,
                              uint32_t *num_bytes, MojoHandle *handles, uint32_t *num_handles)
{
    uint32_t flags;
    if (!core_options_ok(options, MOJO_GET_MESSAGE_DATA_FLAG_IGNORE_HANDLES, &flags))
        return MOJO_RESULT_INVALID_ARGUMENT;
    bool ignore_handles = flags & MOJO_GET_MESSAGE_DATA_FLAG_IGNORE_HANDLES;
    if (!ignore_handles && num_handles && *num_handles && !handles)
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_message *m = lookup(message);
    if (!m)
        return MOJO_RESULT_INVALID_ARGUMENT;
    if (!m->has_data || !m->committed)
        return MOJO_RESULT_FAILED_PRECONDITION;

    if (num_bytes)
        *num_bytes = m->size;
    if (m->size) {
        if (!num_bytes || !buffer)
            return MOJO_RESULT_RESOURCE_EXHAUSTED;
        *buffer = m->data;
    } else if (buffer) {
        *buffer = NULL;
    }
    if (ignore_handles)
        return MOJO_RESULT_OK;

    uint32_t room = num_handles ? *num_handles : 0;
    if (num_handles)
        *num_handles = m->num_attachments;
    if (m->num_attachments > room)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    if (!m->num_attachments)
        return MOJO_RESULT_OK;
    if (m->handles_extracted)
        return MOJO_RESULT_NOT_FOUND;

    core_state *core = core_get();
    MojoResult rv = MOJO_RESULT_OK;
    core_rc_enter();
    for (uint32_t i = 0; i < m->num_attachments; i++) {
        MojoResult one = extract_one(core, &m->attachments[i], &handles[i]);
        if (one != MOJO_RESULT_OK) {
            handles[i] = MOJO_HANDLE_INVALID;
            rv = MOJO_RESULT_ABORTED;
        }
    }
    core_rc_leave();
    m->handles_extracted = true;
    return rv;
}

MojoResult MojoSetMessageContext(MojoMessageHandle message, uintptr_t context,
                                 MojoMessageContextSerializer serializer,
                                 MojoMessageContextDestructor destructor,
                                 const struct MojoSetMessageContextOptions *options)
{
    if (!core_options_ok(options, 0, NULL) || (!context && (serializer || destructor)))
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_message *m = lookup(message);
    if (!m)
        return MOJO_RESULT_INVALID_ARGUMENT;
    if (m->has_data)
        return MOJO_RESULT_FAILED_PRECONDITION;
    if (context && m->context)
        return MOJO_RESULT_ALREADY_EXISTS;
    m->context = context;
    m->serializer = serializer;
    m->destructor = destructor;
    return MOJO_RESULT_OK;
}

MojoResult MojoGetMessageContext(MojoMessageHandle message,
                                 const struct MojoGetMessageContextOptions *options,
                                 uintptr_t *context)
{
    if (!context || !core_options_ok(options, 0, NULL))
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_message *m = lookup(message);
    if (!m)
        return MOJO_RESULT_INVALID_ARGUMENT;
    *context = m->context;
    return MOJO_RESULT_OK;
}

MojoResult MojoNotifyBadMessage(MojoMessageHandle message, const char *error,
                                uint32_t error_num_bytes,
                                const struct MojoNotifyBadMessageOptions *options)
{
    if (!core_options_ok(options, 0, NULL) || (!error && error_num_bytes))
        return MOJO_RESULT_INVALID_ARGUMENT;
    if (!lookup(message))
        return MOJO_RESULT_INVALID_ARGUMENT;
    /*
     * A message that came from this process has no sender to blame; the
     * report to another process's error handler arrives with the channel
     * layer (issue 4).
     */
    return MOJO_RESULT_OK;
}
