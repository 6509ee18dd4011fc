/*
 * Shared buffers: MojoCreateSharedBuffer, MojoDuplicateBufferHandle,
 * MojoMapBuffer, MojoUnmapBuffer, MojoGetBufferInfo,
 * MojoWrapPlatformSharedMemoryRegion, MojoUnwrapPlatformSharedMemoryRegion.
 * See shared_buffer.h for the model; the wire form and the checks of
 * received memfds are in shared_buffer_wire.c.
 *
 * Locks: a dispatcher's lock (its fd and region pointer), then its region's
 * lock (the mode), then the mapping table's lock. A mapping is made with the
 * first two held, so the fd cannot be closed under mmap and a mode change
 * cannot slip between reading the mode and mapping with it.
 */
#include "core/shared_buffer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmojo_limits.h"
#include "core/core.h"
#include "core/handle_table.h"
#include "core/request_context.h"
#include "mojo/public/c/system/buffer.h"
#include "platform/lock.h"
#include "platform/random.h"

#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif

#define MODE_READ_ONLY MOJO_PLATFORM_SHARED_MEMORY_REGION_ACCESS_MODE_READ_ONLY
#define MODE_WRITABLE MOJO_PLATFORM_SHARED_MEMORY_REGION_ACCESS_MODE_WRITABLE
#define MODE_UNSAFE MOJO_PLATFORM_SHARED_MEMORY_REGION_ACCESS_MODE_UNSAFE

/* The memory, shared by every handle duplicated from one another here. */
typedef struct sb_region {
    atomic_uint refs;
    plat_mutex lock;
    uint32_t mode; /* under lock */
    uint64_t size;
    struct MojoSharedBufferGuid guid;
} sb_region;

typedef struct core_shared_buffer {
    core_dispatcher base;
    int fd;            /* under base.lock; -1 once given away */
    sb_region *region; /* under base.lock; NULL once closed */
} core_shared_buffer;

static void region_release(sb_region *r)
{
    if (!r || atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) != 1)
        return;
    plat_mutex_destroy(&r->lock);
    free(r);
}

/* ------------------------------------------------------------ mappings */

/*
 * Every live MojoMapBuffer mapping, by the address handed out (a chained
 * hash table), so MojoUnmapBuffer accepts exactly those addresses.
 */
typedef struct sb_mapping {
    void *address; /* what the caller got */
    void *base;    /* what mmap returned (address rounded down to a page) */
    size_t length;
    struct sb_mapping *next;
} sb_mapping;

static plat_mutex g_map_lock = PLAT_MUTEX_INITIALIZER;
static sb_mapping **g_buckets; /* under g_map_lock */
static size_t g_num_buckets;   /* under g_map_lock; a power of two or 0 */
static size_t g_num_mappings;  /* under g_map_lock */

static size_t bucket_of(const void *address, size_t num_buckets)
{
    uint64_t h = (uint64_t)(uintptr_t)address * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 32) & (num_buckets - 1);
}

/* Doubles the table (g_map_lock held). Returns false on ENOMEM. */
static bool grow_buckets(void)
{
    size_t n = g_num_buckets ? g_num_buckets * 2 : 64;
    sb_mapping **b = calloc(n, sizeof(*b));
    if (!b)
        return false;
    for (size_t i = 0; i < g_num_buckets; i++) {
        while (g_buckets[i]) {
            sb_mapping *m = g_buckets[i];
            g_buckets[i] = m->next;
            size_t k = bucket_of(m->address, n);
            m->next = b[k];
            b[k] = m;
        }
    }
    free(g_buckets);
    g_buckets = b;
    g_num_buckets = n;
    return true;
}

static MojoResult mapping_add(sb_mapping *m)
{
    MojoResult rv = MOJO_RESULT_OK;
    plat_mutex_lock(&g_map_lock);
    if (g_num_mappings >= CMOJO_MAX_BUFFER_MAPPINGS ||
        (g_num_mappings >= g_num_buckets && !grow_buckets())) {
        rv = MOJO_RESULT_RESOURCE_EXHAUSTED;
    } else {
        size_t k = bucket_of(m->address, g_num_buckets);
        m->next = g_buckets[k];
        g_buckets[k] = m;
        g_num_mappings++;
    }
    plat_mutex_unlock(&g_map_lock);
    return rv;
}

static sb_mapping *mapping_remove(const void *address)
{
    sb_mapping *found = NULL;
    plat_mutex_lock(&g_map_lock);
    if (g_num_buckets) {
        for (sb_mapping **p = &g_buckets[bucket_of(address, g_num_buckets)]; *p; p = &(*p)->next) {
            if ((*p)->address == address) {
                found = *p;
                *p = found->next;
                g_num_mappings--;
                break;
            }
        }
    }
    plat_mutex_unlock(&g_map_lock);
    return found;
}

size_t core_shared_buffer_debug_mapping_count(void)
{
    plat_mutex_lock(&g_map_lock);
    size_t n = g_num_mappings;
    plat_mutex_unlock(&g_map_lock);
    return n;
}

/* ---------------------------------------------------------- dispatcher */

static void sb_close(core_dispatcher *d)
{
    core_shared_buffer *sb = (core_shared_buffer *)d;
    plat_mutex_lock(&d->lock);
    int fd = sb->fd;
    sb_region *r = sb->region;
    sb->fd = -1;
    sb->region = NULL;
    plat_mutex_unlock(&d->lock);
    if (fd >= 0)
        close(fd);
    region_release(r);
}

static void sb_destroy(core_dispatcher *d)
{
    free(d);
}

/* Snapshot of the region's fields (d->lock held, region present). */
static core_shared_buffer_state region_state(sb_region *r)
{
    plat_mutex_lock(&r->lock);
    core_shared_buffer_state st = {.num_bytes = r->size, .access_mode = r->mode, .guid = r->guid};
    plat_mutex_unlock(&r->lock);
    return st;
}

static uint32_t sb_wire_state_size(core_dispatcher *d)
{
    (void)d;
    return CORE_SHARED_BUFFER_STATE_SIZE;
}

/*
 * The mode written is stable: READ_ONLY and UNSAFE never change, and a
 * WRITABLE region has exactly one handle, this one, busy in the message.
 */
static void sb_wire_serialize(core_dispatcher *d, uint8_t *state, int *fds)
{
    core_shared_buffer *sb = (core_shared_buffer *)d;
    plat_mutex_lock(&d->lock);
    core_shared_buffer_state st = region_state(sb->region);
    fds[0] = sb->fd;
    sb->fd = -1;
    plat_mutex_unlock(&d->lock);
    core_shared_buffer_state_write(state, &st);
}

/*
 * No signals (get_signals NULL): traps and MojoQueryHandleSignalsState
 * refuse a buffer handle with INVALID_ARGUMENT.
 */
static const core_dispatcher_ops sb_ops = {
    .close = sb_close,
    .destroy = sb_destroy,
    .wire_state_size = sb_wire_state_size,
    .wire_serialize = sb_wire_serialize,
};

static core_shared_buffer *sb_alloc(int fd, sb_region *region)
{
    core_shared_buffer *sb = calloc(1, sizeof(*sb));
    if (!sb)
        return NULL;
    core_dispatcher_init(&sb->base, CORE_DISPATCHER_SHARED_BUFFER, &sb_ops);
    sb->fd = fd;
    sb->region = region;
    return sb;
}

core_dispatcher *core_shared_buffer_new(int fd, const core_shared_buffer_state *st)
{
    sb_region *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    atomic_init(&r->refs, 1);
    plat_mutex_init(&r->lock);
    r->mode = st->access_mode;
    r->size = st->num_bytes;
    r->guid = st->guid;
    core_shared_buffer *sb = sb_alloc(fd, r);
    if (!sb) {
        region_release(r);
        return NULL;
    }
    return &sb->base;
}

MojoResult core_shared_buffer_map(core_dispatcher *d, uint64_t offset, uint64_t num_bytes,
                                  void **address)
{
    core_shared_buffer *sb = (core_shared_buffer *)d;
    sb_mapping *m = calloc(1, sizeof(*m));
    if (!m)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    MojoResult rv = MOJO_RESULT_INVALID_ARGUMENT;
    plat_mutex_lock(&d->lock);
    sb_region *r = sb->region;
    if (!r || sb->fd < 0)
        goto out; /* closed under us */
    /* Subtract, then compare: offset + num_bytes could wrap. */
    if (num_bytes == 0 || offset > r->size || num_bytes > r->size - offset)
        goto out;
    uint64_t delta = offset % page;
    m->length = (size_t)(delta + num_bytes);
    plat_mutex_lock(&r->lock);
    int prot = r->mode == MODE_READ_ONLY ? PROT_READ : PROT_READ | PROT_WRITE;
    void *base = mmap(NULL, m->length, prot, MAP_SHARED, sb->fd, (off_t)(offset - delta));
    plat_mutex_unlock(&r->lock);
    if (base == MAP_FAILED) {
        rv = MOJO_RESULT_RESOURCE_EXHAUSTED;
        goto out;
    }
    m->base = base;
    m->address = (uint8_t *)base + delta;
    rv = mapping_add(m);
    if (rv != MOJO_RESULT_OK)
        munmap(base, m->length);
out:
    plat_mutex_unlock(&d->lock);
    if (rv != MOJO_RESULT_OK) {
        free(m);
        return rv;
    }
    *address = m->address;
    return MOJO_RESULT_OK;
}

/* ---------------------------------------------------------- entry points */

/*
 * Mojo's rule for the options of the buffer functions: a struct_size too
 * small to hold the flags is INVALID_ARGUMENT, an unknown flag UNIMPLEMENTED.
 */
static MojoResult buffer_options(const void *options, uint32_t known, uint32_t *flags)
{
    *flags = 0;
    if (!options)
        return MOJO_RESULT_OK;
    const struct core_options_header *h = options;
    if (h->struct_size < sizeof(*h))
        return MOJO_RESULT_INVALID_ARGUMENT;
    if (h->flags & ~known)
        return MOJO_RESULT_UNIMPLEMENTED;
    *flags = h->flags;
    return MOJO_RESULT_OK;
}

/* A memfd of num_bytes sealed against resizing, or -1. */
static int create_memfd(uint64_t num_bytes)
{
    /* NOEXEC_SEAL (Linux 6.3+) only keeps the kernel from warning; older ones refuse it. */
    int fd = memfd_create("cmojo-shared-buffer", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL);
    if (fd < 0 && errno == EINVAL)
        fd = memfd_create("cmojo-shared-buffer", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -1;
    /* No F_SEAL_SEAL: a read-only duplicate adds F_SEAL_FUTURE_WRITE later. */
    if (ftruncate(fd, (off_t)num_bytes) != 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Adds d (one reference, the caller's) to the handle table or closes it. */
static MojoResult add_or_close(core_state *core, core_dispatcher *d, MojoHandle *out)
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

MojoResult MojoCreateSharedBuffer(uint64_t num_bytes,
                                  const struct MojoCreateSharedBufferOptions *options,
                                  MojoHandle *shared_buffer_handle)
{
    uint32_t flags;
    MojoResult rv = buffer_options(options, 0, &flags);
    if (rv != MOJO_RESULT_OK)
        return rv;
    if (!shared_buffer_handle || num_bytes == 0)
        return MOJO_RESULT_INVALID_ARGUMENT;
    if (num_bytes > CMOJO_MAX_SHARED_BUFFER_SIZE)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    core_state *core = core_get();
    if (!core)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    core_shared_buffer_state st = {.num_bytes = num_bytes, .access_mode = MODE_WRITABLE};
    do {
        if (plat_random_bytes(&st.guid, sizeof(st.guid)) != 0)
            return MOJO_RESULT_RESOURCE_EXHAUSTED;
    } while (st.guid.high == 0 && st.guid.low == 0);
    int fd = create_memfd(num_bytes);
    if (fd < 0)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    core_dispatcher *d = core_shared_buffer_new(fd, &st);
    if (!d) {
        close(fd);
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    }
    return add_or_close(core, d, shared_buffer_handle);
}

/*
 * Mojo's mode transitions for a duplicate (r->lock held, fd one of the
 * region's descriptors, opened read-write when the region is WRITABLE).
 */
static MojoResult region_duplicate_as(sb_region *r, int fd, bool read_only)
{
    if (read_only) {
        if (r->mode == MODE_UNSAFE)
            return MOJO_RESULT_FAILED_PRECONDITION;
        if (r->mode == MODE_WRITABLE) {
            /*
             * The seal is what makes read-only true for every holder of the
             * memfd in every process; writable mappings made before it keep
             * working, as Mojo's do.
             */
            if (fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE) != 0)
                return MOJO_RESULT_FAILED_PRECONDITION;
            r->mode = MODE_READ_ONLY;
        }
    } else {
        if (r->mode == MODE_READ_ONLY)
            return MOJO_RESULT_FAILED_PRECONDITION;
        r->mode = MODE_UNSAFE;
    }
    return MOJO_RESULT_OK;
}

MojoResult MojoDuplicateBufferHandle(MojoHandle buffer_handle,
                                     const struct MojoDuplicateBufferHandleOptions *options,
                                     MojoHandle *new_buffer_handle)
{
    uint32_t flags;
    MojoResult rv = buffer_options(options, MOJO_DUPLICATE_BUFFER_HANDLE_FLAG_READ_ONLY, &flags);
    if (rv != MOJO_RESULT_OK)
        return rv;
    if (!new_buffer_handle)
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_dispatcher *d;
    rv = core_resolve(buffer_handle, CORE_DISPATCHER_SHARED_BUFFER, &d);
    if (rv != MOJO_RESULT_OK)
        return rv;
    core_shared_buffer *sb = (core_shared_buffer *)d;
    core_shared_buffer *copy = sb_alloc(-1, NULL);
    if (!copy) {
        core_dispatcher_release(d);
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    }
    plat_mutex_lock(&d->lock);
    if (!sb->region || sb->fd < 0) {
        rv = MOJO_RESULT_INVALID_ARGUMENT; /* closed under us */
    } else if ((copy->fd = fcntl(sb->fd, F_DUPFD_CLOEXEC, 0)) < 0) {
        rv = MOJO_RESULT_RESOURCE_EXHAUSTED;
    } else {
        plat_mutex_lock(&sb->region->lock);
        rv = region_duplicate_as(sb->region, sb->fd,
                                 flags & MOJO_DUPLICATE_BUFFER_HANDLE_FLAG_READ_ONLY);
        plat_mutex_unlock(&sb->region->lock);
        if (rv == MOJO_RESULT_OK) {
            atomic_fetch_add_explicit(&sb->region->refs, 1, memory_order_relaxed);
            copy->region = sb->region;
        }
    }
    plat_mutex_unlock(&d->lock);
    core_dispatcher_release(d);
    if (rv != MOJO_RESULT_OK) {
        if (copy->fd >= 0)
            close(copy->fd);
        copy->fd = -1;
        core_dispatcher_release(&copy->base);
        return rv;
    }
    return add_or_close(core_get(), &copy->base, new_buffer_handle);
}

MojoResult MojoMapBuffer(MojoHandle buffer_handle, uint64_t offset, uint64_t num_bytes,
                         const struct MojoMapBufferOptions *options, void **buffer)
{
    uint32_t flags;
    MojoResult rv = buffer_options(options, 0, &flags);
    if (rv != MOJO_RESULT_OK)
        return rv;
    if (!buffer)
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_dispatcher *d;
    rv = core_resolve(buffer_handle, CORE_DISPATCHER_SHARED_BUFFER, &d);
    if (rv != MOJO_RESULT_OK)
        return rv;
    rv = core_shared_buffer_map(d, offset, num_bytes, buffer);
    core_dispatcher_release(d);
    return rv;
}

MojoResult MojoUnmapBuffer(void *buffer)
{
    sb_mapping *m = buffer ? mapping_remove(buffer) : NULL;
    if (!m)
        return MOJO_RESULT_INVALID_ARGUMENT;
    munmap(m->base, m->length);
    free(m);
    return MOJO_RESULT_OK;
}

MojoResult MojoGetBufferInfo(MojoHandle buffer_handle,
                             const struct MojoGetBufferInfoOptions *options,
                             struct MojoSharedBufferInfo *info)
{
    uint32_t flags;
    MojoResult rv = buffer_options(options, 0, &flags);
    if (rv != MOJO_RESULT_OK)
        return rv;
    if (!info || info->struct_size < sizeof(*info))
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_dispatcher *d;
    rv = core_resolve(buffer_handle, CORE_DISPATCHER_SHARED_BUFFER, &d);
    if (rv != MOJO_RESULT_OK)
        return rv;
    core_shared_buffer *sb = (core_shared_buffer *)d;
    plat_mutex_lock(&d->lock);
    if (sb->region) {
        info->struct_size = sizeof(*info);
        info->size = sb->region->size;
    } else {
        rv = MOJO_RESULT_INVALID_ARGUMENT; /* closed under us */
    }
    plat_mutex_unlock(&d->lock);
    core_dispatcher_release(d);
    return rv;
}

/* The open fd a MojoPlatformHandle names, or -1. */
static int platform_fd(const struct MojoPlatformHandle *ph)
{
    if (ph->struct_size < sizeof(*ph) || ph->type != MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR ||
        ph->value > (uint64_t)INT32_MAX)
        return -1;
    int fd = (int)ph->value;
    return fcntl(fd, F_GETFD) >= 0 ? fd : -1;
}

static bool same_file(int a, int b)
{
    struct stat sa, sb;
    return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

MojoResult MojoWrapPlatformSharedMemoryRegion(
    const struct MojoPlatformHandle *platform_handles, uint32_t num_platform_handles,
    uint64_t num_bytes, const struct MojoSharedBufferGuid *guid,
    MojoPlatformSharedMemoryRegionAccessMode access_mode,
    const struct MojoWrapPlatformSharedMemoryRegionOptions *options, MojoHandle *mojo_handle)
{
    if (!core_options_ok(options, 0, NULL) || !platform_handles || !guid || !mojo_handle)
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_shared_buffer_state st = {
        .num_bytes = num_bytes, .access_mode = access_mode, .guid = *guid};
    const char *why;
    if (core_shared_buffer_state_check(&st, &why) != 0)
        return MOJO_RESULT_INVALID_ARGUMENT;
    /* One fd in every mode; Mojo's Linux form of WRITABLE (rw fd, ro fd) is taken too. */
    if (num_platform_handles != 1 && !(num_platform_handles == 2 && access_mode == MODE_WRITABLE))
        return MOJO_RESULT_INVALID_ARGUMENT;
    int fd = platform_fd(&platform_handles[0]);
    if (fd < 0)
        return MOJO_RESULT_INVALID_ARGUMENT;
    int extra = -1;
    if (num_platform_handles == 2) {
        extra = platform_fd(&platform_handles[1]);
        if (extra < 0 || extra == fd || !same_file(fd, extra))
            return MOJO_RESULT_INVALID_ARGUMENT;
    }
    if (core_shared_buffer_check_fd(fd, num_bytes, access_mode, &why) != 0)
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_state *core = core_get();
    if (!core)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    core_dispatcher *d = core_shared_buffer_new(fd, &st);
    if (!d)
        return MOJO_RESULT_RESOURCE_EXHAUSTED;
    MojoResult rv = core_add_dispatcher(core, d, mojo_handle);
    if (rv != MOJO_RESULT_OK) {
        ((core_shared_buffer *)d)->fd = -1; /* still the caller's */
        core_dispatcher_close(d);
        core_dispatcher_release(d);
        return rv;
    }
    if (extra >= 0)
        close(extra); /* the same memory; one fd per region is all we keep */
    return MOJO_RESULT_OK;
}

MojoResult MojoUnwrapPlatformSharedMemoryRegion(
    MojoHandle mojo_handle, const struct MojoUnwrapPlatformSharedMemoryRegionOptions *options,
    struct MojoPlatformHandle *platform_handles, uint32_t *num_platform_handles,
    uint64_t *num_bytes, struct MojoSharedBufferGuid *guid,
    MojoPlatformSharedMemoryRegionAccessMode *access_mode)
{
    if (!core_options_ok(options, 0, NULL) || !platform_handles || !num_platform_handles ||
        *num_platform_handles < 1 || platform_handles[0].struct_size < sizeof(*platform_handles) ||
        !num_bytes || !guid || !access_mode)
        return MOJO_RESULT_INVALID_ARGUMENT;
    core_dispatcher *d;
    MojoResult rv = core_take_handle(mojo_handle, CORE_DISPATCHER_SHARED_BUFFER, &d);
    if (rv != MOJO_RESULT_OK)
        return rv;
    core_shared_buffer *sb = (core_shared_buffer *)d;
    plat_mutex_lock(&d->lock);
    core_shared_buffer_state st = region_state(sb->region);
    int fd = sb->fd;
    sb->fd = -1;
    plat_mutex_unlock(&d->lock);
    core_rc_enter();
    core_dispatcher_close(d);
    core_dispatcher_release(d);
    core_rc_leave();
    platform_handles[0].type = MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR;
    platform_handles[0].value = (uint64_t)fd;
    *num_platform_handles = 1;
    *num_bytes = st.num_bytes;
    *guid = st.guid;
    *access_mode = st.access_mode;
    return MOJO_RESULT_OK;
}
