/*
 * Message objects and their entry points. See message.h for the model.
 */
#include "core/message.h"

#include <assert.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "cmojo_limits.h"
#include "cmojo_wire.h"
#include "core/core.h"
#include "core/data_pipe.h"
#include "core/platform_handle.h"
#include "core/shared_buffer.h"
#include "node/node.h"
#include "core/handle_table.h"
#include "core/message_pipe.h"
#include "core/request_context.h"
#include "platform/block.h"
#include "ports/ports.h"

static void payload_destroy(ports_payload *payload);
static int payload_will_be_routed_externally(ports_payload *payload);

/*
 * Only a message that still has a context when it is written needs to hear
 * that it leaves the process (its serializer runs then); the ports layer
 * sends every other message with one hold of the sender's port lock, which
 * it must let go of to call the hook. core_message_send_begin picks.
 */
static const ports_payload_ops message_ops = {
    .destroy = payload_destroy,
};
static const ports_payload_ops context_message_ops = {
    .destroy = payload_destroy,
    .will_be_routed_externally = payload_will_be_routed_externally,
};

static bool is_core_message(const ports_payload *payload)
{
    return payload->ops == &message_ops || payload->ops == &context_message_ops;
}

/*
 * Serial numbers tell a message from a later one at the same address. Each
 * thread takes them from a range of its own, claimed SERIAL_RANGE at a time
 * from the process-wide counter: unique all the same, and one atomic add
 * per range instead of one per message. 1024 makes that atomic rare even
 * for a thread that does nothing but send; 64 bits cannot run out, however
 * many ranges threads leave unfinished.
 */
#define SERIAL_RANGE 1024u
static atomic_uint_fast64_t next_serial_range;
static _Thread_local uint64_t tls_serial_next, tls_serial_end;

static uint64_t new_serial(void)
{
    if (tls_serial_next == tls_serial_end) {
        /* Starts at 1: serial 0 is never handed out. */
        tls_serial_next =
            atomic_fetch_add_explicit(&next_serial_range, SERIAL_RANGE, memory_order_relaxed) + 1;
        tls_serial_end = tls_serial_next + SERIAL_RANGE;
    }
    return tls_serial_next++;
}

static core_message *message_new(uint32_t max_size)
{
    /* The event is set up when the message is written (ports_user_message_init). */
    core_message *m = malloc(sizeof(*m));
    if (!m)
        return NULL;
    memset(m, 0, offsetof(core_message, event));
    m->serial = new_serial();
    m->base.ops = &message_ops;
    m->max_size = max_size;
    return m;
}

/*
 * Heap storage for a message's bytes: CORE_MESSAGE_HEADROOM bytes of room in
 * front of them and CORE_MESSAGE_TAILROOM behind (see message.h). The
 * pointer handed around is the bytes' start. A block (platform/block.h), so
 * that a thread that sends a large message after each one it receives
 * reuses the bytes of the last one.
 */
static uint8_t *heap_bytes_realloc(uint8_t *data, uint32_t capacity)
{
    uint8_t *base = data ? data - CORE_MESSAGE_HEADROOM : NULL;
    base =
        plat_block_realloc(base, CORE_MESSAGE_HEADROOM + (size_t)capacity + CORE_MESSAGE_TAILROOM);
    return base ? base + CORE_MESSAGE_HEADROOM : NULL;
}

static void heap_bytes_free(uint8_t *data)
{
    if (data)
        plat_block_free(data - CORE_MESSAGE_HEADROOM);
}

/* Frees the memory and runs the context destructor; attachments are gone. */
static void message_free(core_message *m)
{
    if (m->context && m->destructor)
        m->destructor(m->context);
    if (m->block)
        plat_block_free(m->block);
    else if (m->data != m->inline_data)
        heap_bytes_free(m->data);
    free(m->attachments);
    free(m);
}

/*
 * The message this thread is writing (see core_message_send_begin). Its
 * serial too: once delivered, the message may be read and freed by another
 * thread and a new one allocated at the same address, which this thread's
 * send may then destroy; that one is not ours to keep.
 */
static _Thread_local core_message *tls_sending;
static _Thread_local uint64_t tls_sending_serial;
static _Thread_local bool tls_sending_destroyed;

void core_message_send_begin(core_message *m)
{
    /* Nothing can give it a context while it travels. */
    m->base.ops = m->context ? &context_message_ops : &message_ops;
    tls_sending = m;
    tls_sending_serial = m->serial;
    tls_sending_destroyed = false;
}

bool core_message_send_end(void)
{
    tls_sending = NULL;
    return tls_sending_destroyed;
}

void core_message_free_shell(core_message *m)
{
    message_free(m);
}

/* Closes an object attachment, and the port that arrived with it, if any. */
static void close_object(core_attachment *a)
{
    core_dispatcher_close(a->dispatcher);
    core_dispatcher_release(a->dispatcher);
    a->dispatcher = NULL;
    if (ports_name_is_valid(&a->port)) {
        core_close_port_named(&a->port);
        a->port = PORTS_INVALID_NAME;
    }
}

/*
 * Whether an attachment of a message in flight takes one of the event's
 * ports: a pipe's (no dispatcher), or an object's that owns one.
 */
static bool takes_port(const core_attachment *a)
{
    return !a->dispatcher || a->dispatcher->ops->bind;
}

/* ------------------------------------------------------------ wire types */

static const core_wire_type wire_types[] = {
    {CORE_DISPATCHER_MESSAGE_PIPE, 0, true, NULL},
    {CORE_DISPATCHER_PLATFORM_HANDLE, 1, false, core_platform_handle_deserialize},
    {CORE_DISPATCHER_SHARED_BUFFER, 1, false, core_shared_buffer_deserialize},
    {CORE_DISPATCHER_DATA_PIPE_PRODUCER, 1, true, core_data_pipe_producer_deserialize},
    {CORE_DISPATCHER_DATA_PIPE_CONSUMER, 1, true, core_data_pipe_consumer_deserialize},
};

const core_wire_type *core_wire_type_find(uint32_t type)
{
    for (size_t i = 0; i < sizeof(wire_types) / sizeof(wire_types[0]); i++)
        if (wire_types[i].type == type)
            return &wire_types[i];
    return NULL;
}

/* fds an attachable dispatcher takes on the wire. */
static uint32_t wire_fds_of(const core_dispatcher *d)
{
    const core_wire_type *t = core_wire_type_find(d->type);
    return t ? t->num_fds : 0;
}

static void payload_destroy(ports_payload *payload)
{
    core_message *m = (core_message *)payload;
    if (m == tls_sending && m->serial == tls_sending_serial) {
        /* Refused or dropped inside the writer's send: the writer decides. */
        tls_sending_destroyed = true;
        return;
    }
    /*
     * Dropped in flight: the ports layer closes the pipes' ports; the
     * objects are ours to close.
     */
    core_rc_enter();
    for (uint32_t i = 0; i < m->num_attachments; i++)
        if (m->attachments[i].dispatcher)
            close_object(&m->attachments[i]);
    core_rc_leave();
    message_free(m);
}

/* Closes what the attachments own: appended handles, objects and received ports. */
static void close_attachments(core_state *core, core_attachment *att, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        if (att[i].dispatcher && att[i].handle) {
            uint64_t value = att[i].handle;
            core_table_complete_transit(core_handles(core), &value, 1);
            close_object(&att[i]);
        } else if (att[i].dispatcher) {
            close_object(&att[i]);
        } else if (ports_name_is_valid(&att[i].port)) {
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
    if (!core || core_table_peek(core_messages(core), handle, &obj) != MOJO_RESULT_OK)
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
    if (grown < CORE_MESSAGE_INLINE_BYTES)
        grown = CORE_MESSAGE_INLINE_BYTES < m->max_size ? CORE_MESSAGE_INLINE_BYTES : capacity;
    if (grown <= CORE_MESSAGE_INLINE_BYTES && (!m->data || m->data == m->inline_data)) {
        m->data = m->inline_data;
        m->capacity = grown;
        return true;
    }
    uint8_t *data;
    if (m->data == m->inline_data || m->block) {
        /* Leaving the inline bytes or a kept frame: what is there comes along. */
        data = heap_bytes_realloc(NULL, grown);
        if (!data)
            return false;
        memcpy(data, m->data, m->capacity);
        plat_block_free(m->block);
        m->block = NULL;
    } else {
        data = heap_bytes_realloc(m->data, grown);
    }
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
    uint32_t n = ev->u.user.num_ports;
    /*
     * Every payload is a core message: written here, or parsed from another
     * process by core_message_wire_parse.
     */
    core_message *m = NULL;
    if (payload && is_core_message(payload))
        m = (core_message *)payload;
    else
        ports_payload_destroy(payload);
    /* The ports the event carried fill their places, in order. */
    uint32_t k = 0;
    for (uint32_t i = 0; m && i < m->num_attachments; i++)
        if (takes_port(&m->attachments[i]) && k < n)
            m->attachments[i].port = ev->u.user.ports[k++];
    if (!m || k != n) {
        for (uint32_t i = m ? k : 0; i < n; i++)
            core_close_port_named(&ev->u.user.ports[i]);
        /* The event first: it may live inside m. */
        ports_event_destroy(ev);
        core_message_destroy(m);
        return NULL;
    }
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
    return core_message_serialize_for_transit((core_message *)payload);
}

int core_message_serialize_for_transit(core_message *m)
{
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
    core_dispatcher *d = obj;
    if (d->type == CORE_DISPATCHER_MESSAGE_PIPE)
        return MOJO_RESULT_OK;
    if (!d->ops->wire_serialize)
        return MOJO_RESULT_INVALID_ARGUMENT;
    return d->ops->check_transit ? d->ops->check_transit(d) : MOJO_RESULT_OK;
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
        uint32_t fds = 0;
        for (uint32_t i = 0; rv == MOJO_RESULT_OK && i < num_handles; i++)
            fds += wire_fds_of(ds[i]);
        if (rv == MOJO_RESULT_OK && (uint64_t)m->num_fds + fds > CMOJO_MAX_FDS_PER_FRAME) {
            /* More fds than one frame (one sendmsg) can carry to another process. */
            core_table_cancel_transit(core_handles(core_get()), vs, num_handles);
            for (uint32_t i = 0; i < num_handles; i++)
                core_dispatcher_release(ds[i]);
            rv = MOJO_RESULT_RESOURCE_EXHAUSTED;
        }
        if (rv == MOJO_RESULT_OK) {
            m->num_fds += fds;
            for (uint32_t i = 0; i < num_handles; i++)
                m->attachments[m->num_attachments++] =
                    (core_attachment){.dispatcher = ds[i], .handle = handles[i]};
        }
        if (ds != stack)
            free(ds);
        if (vs != values)
            free(vs);
        if (rv != MOJO_RESULT_OK)
            return rv;
    }
    /*
     * The new bytes are not zeroed: the caller writes them, as Mojo's
     * contract has it (Chromium zeroes only its headers too). Zeroing here
     * wrote every byte of a message twice; at 64 KB that was a tenth of a
     * cross-process round trip. Only the bytes asked for are ever sent, and
     * frame padding is zeros (channel.c), so what leaves the process is what
     * the caller appended.
     */
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
    if (a->dispatcher && a->handle) {
        /* Appended in this process and never sent: just usable again. */
        uint64_t value = a->handle;
        core_table_cancel_transit(core_handles(core), &value, 1);
        core_dispatcher_release(a->dispatcher);
        a->dispatcher = NULL;
        *out = a->handle;
        return MOJO_RESULT_OK;
    }
    if (a->dispatcher) {
        /* An object that travelled: it takes up its port, its reference goes to the table. */
        if (a->dispatcher->ops->bind && ports_name_is_valid(&a->port)) {
            (void)a->dispatcher->ops->bind(a->dispatcher, &a->port); /* failed: peer closed */
            a->port = PORTS_INVALID_NAME;
        }
        MojoResult rv = core_add_dispatcher(core, a->dispatcher, out);
        if (rv != MOJO_RESULT_OK)
            close_object(a);
        a->dispatcher = NULL;
        return rv;
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
    core_message *m = lookup(message);
    if (!m)
        return MOJO_RESULT_INVALID_ARGUMENT;
    /* A message that came from this process has no sender to blame. */
    if (ports_name_is_valid(&m->from_node))
        node_report_bad_message(core_node_controller(core_get()), &m->from_node, error,
                                error ? error_num_bytes : 0);
    return MOJO_RESULT_OK;
}

/* ------------------------------------------------------------ envelope */

/* Bytes the envelope takes in front of the payload. */
static size_t envelope_head_size(const core_message *m)
{
    size_t n = CORE_ENVELOPE_HEADER_SIZE + (size_t)m->num_attachments * CORE_ENVELOPE_HANDLE_SIZE;
    for (uint32_t i = 0; i < m->num_attachments; i++) {
        core_dispatcher *d = m->attachments[i].dispatcher;
        if (d)
            n += wire_align8(d->ops->wire_state_size(d));
    }
    return n;
}

bool core_message_may_leave_process(const core_message *m)
{
    return m->size <= CMOJO_MAX_MESSAGE_NUM_BYTES;
}

int core_message_wire_measure(ports_payload *payload, size_t *num_bytes, size_t *num_fds)
{
    core_message *m = (core_message *)payload;
    if (!is_core_message(payload) || !m->has_data || !m->committed)
        return -1;
    if (!core_message_may_leave_process(m))
        return -1;
    *num_bytes = envelope_head_size(m) + m->size;
    size_t fds = 0;
    for (uint32_t i = 0; i < m->num_attachments; i++)
        if (m->attachments[i].dispatcher)
            fds += wire_fds_of(m->attachments[i].dispatcher);
    *num_fds = fds;
    return 0;
}

/* Writes the envelope up to the message bytes; where they go. */
static uint8_t *wire_serialize_head(core_message *m, uint8_t *buf, int *fds)
{
    wire_store_u32(buf, m->size);
    wire_store_u32(buf + 4, m->num_attachments);
    uint8_t *handles = buf + CORE_ENVELOPE_HEADER_SIZE;
    uint8_t *state = handles + (size_t)m->num_attachments * CORE_ENVELOPE_HANDLE_SIZE;
    size_t k = 0;
    core_rc_enter();
    for (uint32_t i = 0; i < m->num_attachments; i++, handles += CORE_ENVELOPE_HANDLE_SIZE) {
        core_attachment *a = &m->attachments[i];
        uint32_t type = CORE_DISPATCHER_MESSAGE_PIPE, size = 0;
        if (a->dispatcher) {
            core_dispatcher *d = a->dispatcher;
            type = d->type;
            size = d->ops->wire_state_size(d);
            d->ops->wire_serialize(d, state, fds + k);
            memset(state + size, 0, wire_align8(size) - size);
            state += wire_align8(size);
            k += wire_fds_of(d);
            close_object(a);
        }
        wire_store_u32(handles, type);
        wire_store_u32(handles + 4, size);
    }
    core_rc_leave();
    return state;
}

void core_message_wire_serialize(ports_payload *payload, uint8_t *buf, int *fds)
{
    core_message *m = (core_message *)payload;
    uint8_t *data = wire_serialize_head(m, buf, fds);
    if (m->size)
        memcpy(data, m->data, m->size);
}

void core_message_wire_serialize_head(ports_payload *payload, uint8_t *buf, int *fds,
                                      const void **data, size_t *data_len)
{
    core_message *m = (core_message *)payload;
    (void)wire_serialize_head(m, buf, fds);
    *data = m->data;
    *data_len = m->size;
}

uint8_t *core_message_wire_serialize_in_place(ports_payload *payload, size_t before, size_t after,
                                              size_t *envelope_len)
{
    core_message *m = (core_message *)payload;
    if (!is_core_message(payload) || m->num_attachments || !m->data || m->data == m->inline_data)
        return NULL;
    size_t room_before, room_after;
    if (m->block) {
        room_before = (size_t)(m->data - (uint8_t *)m->block);
        room_after = plat_block_size(m->block) - room_before - m->size;
    } else {
        room_before = CORE_MESSAGE_HEADROOM;
        room_after = (size_t)(m->capacity - m->size) + CORE_MESSAGE_TAILROOM;
    }
    if (room_before < before + CORE_ENVELOPE_HEADER_SIZE || room_after < after)
        return NULL;
    uint8_t *envelope = m->data - CORE_ENVELOPE_HEADER_SIZE;
    wire_store_u32(envelope, m->size);
    wire_store_u32(envelope + 4, 0);
    *envelope_len = CORE_ENVELOPE_HEADER_SIZE + m->size;
    return envelope - before;
}

ports_event *core_message_wire_event(ports_payload *payload)
{
    assert(is_core_message(payload));
    return &((core_message *)payload)->event;
}

int core_message_wire_parse(const ports_name *from, const uint8_t *buf, size_t len,
                            uint32_t num_ports, int *fds, size_t num_fds, void **block,
                            ports_payload **out, const char **why)
{
    core_message *m = NULL;
    *why = "malformed message envelope";
    if (len < CORE_ENVELOPE_HEADER_SIZE)
        goto fail;
    uint32_t size = wire_load_u32(buf), n = wire_load_u32(buf + 4);
    if (n > CMOJO_MAX_MESSAGE_HANDLES || size > CMOJO_MAX_MESSAGE_NUM_BYTES ||
        len - CORE_ENVELOPE_HEADER_SIZE < (uint64_t)n * CORE_ENVELOPE_HANDLE_SIZE + size)
        goto fail;
    /* First pass: every type known, every state bounded, the counts exact. */
    const uint8_t *handles = buf + CORE_ENVELOPE_HEADER_SIZE;
    uint64_t states = 0, ports = 0, objects_fds = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t type = wire_load_u32(handles + (size_t)i * CORE_ENVELOPE_HANDLE_SIZE);
        uint32_t state = wire_load_u32(handles + (size_t)i * CORE_ENVELOPE_HANDLE_SIZE + 4);
        const core_wire_type *t = core_wire_type_find(type);
        if (!t || state > CMOJO_MAX_OBJECT_STATE_SIZE || (!t->deserialize && state))
            goto fail;
        states += wire_align8(state);
        ports += t->has_port;
        objects_fds += t->num_fds;
    }
    if (len - CORE_ENVELOPE_HEADER_SIZE != (uint64_t)n * CORE_ENVELOPE_HANDLE_SIZE + states + size)
        goto fail;
    if (ports != num_ports || objects_fds != num_fds) {
        *why = "message envelope does not match its ports and fds";
        goto fail;
    }
    /*
     * Bytes that make up nearly all of a block on offer (7/8 of the
     * envelope; the channel offers a block at most twice its frame) stay
     * where they arrived, if a user may read them there (8-byte aligned, as
     * any message's): a kept message pins at most ~2.3x its bytes.
     */
    const uint8_t *bytes = buf + (len - size);
    bool keep = block && len - size <= len / 8 && ((uintptr_t)bytes & 7u) == 0;
    m = message_new(CMOJO_MAX_MESSAGE_NUM_BYTES);
    if (!m || (size && !keep && !reserve(m, size)) ||
        (n && !(m->attachments = calloc(n, sizeof(*m->attachments))))) {
        *why = "out of memory for a message";
        goto fail;
    }
    m->cap_attachments = n;
    const uint8_t *state = handles + (size_t)n * CORE_ENVELOPE_HANDLE_SIZE;
    size_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t type = wire_load_u32(handles + (size_t)i * CORE_ENVELOPE_HANDLE_SIZE);
        uint32_t state_size = wire_load_u32(handles + (size_t)i * CORE_ENVELOPE_HANDLE_SIZE + 4);
        const core_wire_type *t = core_wire_type_find(type);
        core_attachment *a = &m->attachments[m->num_attachments];
        if (t->deserialize) {
            a->dispatcher = t->deserialize(state, state_size, fds + k, why);
            if (!a->dispatcher)
                goto fail;
            k += t->num_fds;
            m->num_fds += t->num_fds;
        }
        state += wire_align8(state_size);
        m->num_attachments++;
    }
    assert(state == bytes);
    if (keep) {
        m->block = *block;
        *block = NULL;
        m->data = (uint8_t *)bytes;
        m->capacity = size;
    } else if (size) {
        memcpy(m->data, bytes, size);
    }
    m->size = size;
    m->has_data = true;
    m->committed = true;
    m->base.size = size;
    m->from_node = *from;
    *out = &m->base;
    return 0;
fail:
    for (size_t i = 0; i < num_fds; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    if (m) {
        core_rc_enter();
        for (uint32_t i = 0; i < m->num_attachments; i++)
            if (m->attachments[i].dispatcher)
                close_object(&m->attachments[i]);
        core_rc_leave();
        message_free(m);
    }
    return -1;
}

core_message *core_message_new_bytes(const void *data, uint32_t size)
{
    core_message *m = message_new(CMOJO_MAX_MESSAGE_NUM_BYTES);
    if (!m)
        return NULL;
    if (size && !reserve(m, size)) {
        message_free(m);
        return NULL;
    }
    if (size)
        memcpy(m->data, data, size);
    m->size = size;
    m->base.size = size;
    m->has_data = true;
    m->committed = true;
    return m;
}
