/*
 * Wrapped file descriptors: MojoWrapPlatformHandle, MojoUnwrapPlatformHandle.
 */
#include "core/platform_handle.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/core.h"
#include "core/handle_table.h"
#include "core/request_context.h"
#include "mojo/public/c/system/platform_handle.h"

typedef struct core_platform_handle {
    core_dispatcher base;
    int fd; /* under base.lock; -1 once given away */
} core_platform_handle;

/* Takes the fd out (for the wire, or unwrapping). */
static int ph_take_fd(core_dispatcher *d)
{
    core_platform_handle *ph = (core_platform_handle *)d;
    plat_mutex_lock(&d->lock);
    int fd = ph->fd;
    ph->fd = -1;
    plat_mutex_unlock(&d->lock);
    return fd;
}

static void ph_close(core_dispatcher *d)
{
    int fd = ph_take_fd(d);
    if (fd >= 0)
        close(fd);
}

static void ph_destroy(core_dispatcher *d)
{
    free(d);
}

/* A wrapped fd travels as the fd alone: no state. */
static uint32_t ph_wire_state_size(core_dispatcher *d)
{
    (void)d;
    return 0;
}

static void ph_wire_serialize(core_dispatcher *d, uint8_t *state, int *fds)
{
    (void)state;
    fds[0] = ph_take_fd(d);
}

static const core_dispatcher_ops ph_ops = {
    .close = ph_close,
    .destroy = ph_destroy,
    .wire_state_size = ph_wire_state_size,
    .wire_serialize = ph_wire_serialize,
};

core_dispatcher *core_platform_handle_deserialize(const uint8_t *state, size_t size, int *fds,
                                                  const char **why)
{
    (void)state;
    if (size != 0) {
        *why = "a wrapped fd with state";
        return NULL;
    }
    core_dispatcher *d = core_platform_handle_new(fds[0]);
    if (!d) {
        *why = "out of memory for a wrapped fd";
        return NULL;
    }
    fds[0] = -1;
    return d;
}

core_dispatcher *core_platform_handle_new(int fd)
{
    core_platform_handle *ph = calloc(1, sizeof(*ph));
    if (!ph)
        return NULL;
    core_dispatcher_init(&ph->base, CORE_DISPATCHER_PLATFORM_HANDLE, &ph_ops);
    ph->fd = fd;
    return &ph->base;
}

MojoResult MojoWrapPlatformHandle(const struct MojoPlatformHandle *platform_handle,
                                  const struct MojoWrapPlatformHandleOptions *options,
                                  MojoHandle *mojo_handle)
{
    if (!platform_handle || !mojo_handle || !core_options_ok(options, 0, NULL) ||
        platform_handle->struct_size < sizeof(*platform_handle) ||
        platform_handle->type != MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR ||
        platform_handle->value > (uint64_t)INT32_MAX)
        return MOJO_RESULT_INVALID_ARGUMENT;
    int fd = (int)platform_handle->value;
    if (fcntl(fd, F_GETFD) < 0)
        return MOJO_RESULT_INVALID_ARGUMENT; /* not an open descriptor */
    core_state *core = core_get();
    if (!core)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    core_dispatcher *d = core_platform_handle_new(fd);
    if (!d)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    MojoResult rv = core_add_dispatcher(core, d, mojo_handle);
    if (rv != MOJO_RESULT_OK) {
        ((core_platform_handle *)d)->fd = -1; /* still the caller's */
        core_dispatcher_release(d);
    }
    return rv;
}

MojoResult MojoUnwrapPlatformHandle(MojoHandle mojo_handle,
                                    const struct MojoUnwrapPlatformHandleOptions *options,
                                    struct MojoPlatformHandle *platform_handle)
{
    if (!platform_handle || !core_options_ok(options, 0, NULL) ||
        platform_handle->struct_size < sizeof(*platform_handle))
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_dispatcher *d;
    MojoResult rv = core_take_handle(mojo_handle, CORE_DISPATCHER_PLATFORM_HANDLE, &d);
    if (rv != MOJO_RESULT_OK)
        return rv;
    int fd = ph_take_fd(d); /* before the close, which would close it */
    core_rc_enter();
    core_dispatcher_close(d);
    core_dispatcher_release(d);
    core_rc_leave();
    platform_handle->type = MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR;
    platform_handle->value = (uint64_t)fd;
    return MOJO_RESULT_OK;
}
