/*
 * Shared buffers in one process: MojoCreateSharedBuffer,
 * MojoDuplicateBufferHandle, MojoMapBuffer, MojoUnmapBuffer,
 * MojoGetBufferInfo, MojoWrap/UnwrapPlatformSharedMemoryRegion, buffers in
 * messages, and the checks a memfd must pass to become a buffer (the same
 * ones a buffer arriving from another process goes through).
 *
 * Pinned: every argument check and its result code (Mojo's); the memory is
 * shared by every mapping of every handle; Mojo's mode transitions
 * (WRITABLE -> READ_ONLY or UNSAFE, never back) and that READ_ONLY is
 * enforced by the kernel (F_SEAL_FUTURE_WRITE) for any descriptor to the
 * memfd; mappings outlive their handle; MojoUnmapBuffer accepts exactly the
 * addresses MojoMapBuffer returned. Each test ends with no handle, message,
 * port, mapping or fd left over.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmojo_limits.h"
#include "cmojo_test.h"
#include "core/shared_buffer.h"
#include "mojo/public/c/system/core.h"

#define OK MOJO_RESULT_OK
#define INVALID MOJO_RESULT_INVALID_ARGUMENT
#define RO MOJO_PLATFORM_SHARED_MEMORY_REGION_ACCESS_MODE_READ_ONLY
#define WRITABLE MOJO_PLATFORM_SHARED_MEMORY_REGION_ACCESS_MODE_WRITABLE
#define UNSAFE MOJO_PLATFORM_SHARED_MEMORY_REGION_ACCESS_MODE_UNSAFE

static long page_size(void)
{
    return sysconf(_SC_PAGESIZE);
}

static int setup(void **state)
{
    return cmojo_core_setup(state);
}

/* The core fixture's checks, and no mapping left. */
static int teardown(void **state)
{
    size_t maps = core_shared_buffer_debug_mapping_count();
    int rv = cmojo_core_teardown(state);
    if (maps != 0) {
        fprintf(stderr, "teardown: %zu buffer mappings left\n", maps);
        return -1;
    }
    return rv;
}

static MojoHandle create(uint64_t size)
{
    MojoHandle h = MOJO_HANDLE_INVALID;
    assert_int_equal(MojoCreateSharedBuffer(size, NULL, &h), OK);
    assert_true(h != MOJO_HANDLE_INVALID);
    return h;
}

static void *map(MojoHandle h, uint64_t offset, uint64_t size)
{
    void *p = NULL;
    assert_int_equal(MojoMapBuffer(h, offset, size, NULL, &p), OK);
    assert_non_null(p);
    return p;
}

static void unmap(void *p)
{
    assert_int_equal(MojoUnmapBuffer(p), OK);
}

static MojoHandle duplicate(MojoHandle h, MojoDuplicateBufferHandleFlags flags, MojoResult want)
{
    struct MojoDuplicateBufferHandleOptions o = {sizeof(o), flags};
    MojoHandle d = MOJO_HANDLE_INVALID;
    assert_int_equal(MojoDuplicateBufferHandle(h, &o, &d), want);
    if (want == OK)
        assert_true(d != MOJO_HANDLE_INVALID && d != h);
    else
        assert_int_equal(d, MOJO_HANDLE_INVALID);
    return d;
}

typedef struct region {
    int fd;
    uint32_t num;
    uint64_t size;
    struct MojoSharedBufferGuid guid;
    MojoPlatformSharedMemoryRegionAccessMode mode;
} region;

static region unwrap(MojoHandle h)
{
    struct MojoPlatformHandle ph[2] = {{sizeof(ph[0]), 0, 0}, {sizeof(ph[1]), 0, 0}};
    region r = {.num = 2};
    assert_int_equal(
        MojoUnwrapPlatformSharedMemoryRegion(h, NULL, ph, &r.num, &r.size, &r.guid, &r.mode), OK);
    assert_int_equal(r.num, 1);
    assert_int_equal(ph[0].type, MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR);
    r.fd = (int)ph[0].value;
    return r;
}

static MojoResult wrap(int fd, uint64_t size, const struct MojoSharedBufferGuid *guid,
                       uint32_t mode, MojoHandle *out)
{
    struct MojoPlatformHandle ph = {sizeof(ph), MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR,
                                    (uint64_t)fd};
    return MojoWrapPlatformSharedMemoryRegion(&ph, 1, size, guid, mode, NULL, out);
}

static MojoHandle wrap_ok(const region *r)
{
    MojoHandle h = MOJO_HANDLE_INVALID;
    assert_int_equal(wrap(r->fd, r->size, &r->guid, r->mode, &h), OK);
    return h;
}

static bool fd_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

/* A memfd of `size` bytes with `seals` added (F_SEAL_SEAL not implied). */
static int memfd(off_t size, int seals)
{
    int fd = memfd_create("test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, size), 0);
    if (seals)
        assert_int_equal(fcntl(fd, F_ADD_SEALS, seals), 0);
    return fd;
}

/* Whether the page-aligned mapping at p could ever be made writable. */
static bool can_become_writable(void *p, size_t len)
{
    return mprotect(p, len, PROT_READ | PROT_WRITE) == 0;
}

static void send_handles(MojoHandle pipe, const MojoHandle *handles, uint32_t n)
{
    MojoMessageHandle m;
    assert_int_equal(MojoCreateMessage(NULL, &m), OK);
    struct MojoAppendMessageDataOptions commit = {sizeof(commit),
                                                  MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE};
    assert_int_equal(MojoAppendMessageData(m, 8, handles, n, &commit, NULL, NULL), OK);
    assert_int_equal(MojoWriteMessage(pipe, m, NULL), OK);
}

static uint32_t receive_handles(MojoHandle pipe, MojoHandle *handles, uint32_t cap)
{
    MojoMessageHandle m;
    assert_int_equal(MojoReadMessage(pipe, NULL, &m), OK);
    void *buf;
    uint32_t len, n = cap;
    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &len, handles, &n), OK);
    assert_int_equal(MojoDestroyMessage(m), OK);
    return n;
}

static const struct MojoSharedBufferGuid guid1 = {0x1234, 0x5678};

/* ------------------------------------------------------------------ create */

static void create_refuses_bad_arguments(void **state)
{
    (void)state;
    MojoHandle h = 77;
    assert_int_equal(MojoCreateSharedBuffer(100, NULL, NULL), INVALID);
    assert_int_equal(MojoCreateSharedBuffer(0, NULL, &h), INVALID);
    assert_int_equal(MojoCreateSharedBuffer(CMOJO_MAX_SHARED_BUFFER_SIZE + 1, NULL, &h),
                     MOJO_RESULT_RESOURCE_EXHAUSTED);
    assert_int_equal(MojoCreateSharedBuffer(UINT64_MAX, NULL, &h), MOJO_RESULT_RESOURCE_EXHAUSTED);
    struct MojoCreateSharedBufferOptions small = {4, 0};
    assert_int_equal(MojoCreateSharedBuffer(100, &small, &h), INVALID);
    struct MojoCreateSharedBufferOptions flags = {sizeof(flags), 1};
    assert_int_equal(MojoCreateSharedBuffer(100, &flags, &h), MOJO_RESULT_UNIMPLEMENTED);
    assert_int_equal(h, 77); /* untouched */
    /* A bigger struct from a newer caller is fine. */
    struct {
        struct MojoCreateSharedBufferOptions o;
        uint64_t more;
    } big = {{sizeof(big), 0}, 0};
    assert_int_equal(MojoCreateSharedBuffer(100, &big.o, &h), OK);
    cmojo_test_close_ok(h);
    /* The largest size is allowed (the memory is not touched). */
    assert_int_equal(MojoCreateSharedBuffer(CMOJO_MAX_SHARED_BUFFER_SIZE, NULL, &h), OK);
    cmojo_test_close_ok(h);
}

static void a_new_buffer_is_a_zeroed_memfd_sealed_against_resizing(void **state)
{
    (void)state;
    MojoHandle h = create(10000);
    struct MojoSharedBufferInfo info = {sizeof(info), 0};
    assert_int_equal(MojoGetBufferInfo(h, NULL, &info), OK);
    assert_int_equal(info.size, 10000);
    uint8_t *p = map(h, 0, 10000);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(p[i], 0);
    unmap(p);

    region r = unwrap(h);
    assert_int_equal(r.size, 10000);
    assert_int_equal(r.mode, WRITABLE);
    assert_true(r.guid.high || r.guid.low);
    int seals = fcntl(r.fd, F_GET_SEALS);
    assert_true(seals >= 0);
    assert_true(seals & F_SEAL_SHRINK);
    assert_true(seals & F_SEAL_GROW);
    assert_false(seals & (F_SEAL_SEAL | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE));
    assert_true(fcntl(r.fd, F_GETFD) & FD_CLOEXEC);
    struct stat st;
    assert_int_equal(fstat(r.fd, &st), 0);
    assert_int_equal(st.st_size, 10000);
    assert_int_equal(ftruncate(r.fd, 5000), -1);
    assert_int_equal(ftruncate(r.fd, 20000), -1);
    close(r.fd);

    /* Two buffers have different guids. */
    region a = unwrap(create(1)), b = unwrap(create(1));
    assert_false(a.guid.high == b.guid.high && a.guid.low == b.guid.low);
    close(a.fd);
    close(b.fd);
}

/* --------------------------------------------------------------- mapping */

static void two_mappings_share_the_memory(void **state)
{
    (void)state;
    long page = page_size();
    MojoHandle h = create((uint64_t)page * 3);
    uint8_t *whole = map(h, 0, (uint64_t)page * 3);
    uint8_t *part = map(h, (uint64_t)page + 10, 100);
    assert_true(whole != part);
    memset(whole, 0xab, (size_t)page * 3);
    assert_int_equal(part[0], 0xab);
    part[5] = 7;
    assert_int_equal(whole[page + 15], 7);
    /* A duplicate maps the same memory. */
    MojoHandle d = duplicate(h, 0, OK);
    uint8_t *other = map(d, (uint64_t)page * 2, (uint64_t)page);
    other[0] = 9;
    assert_int_equal(whole[page * 2], 9);
    unmap(other);
    unmap(part);
    unmap(whole);
    cmojo_test_close_ok(h);
    cmojo_test_close_ok(d);
}

static void map_checks_its_range_without_overflow(void **state)
{
    (void)state;
    long page = page_size();
    uint64_t size = (uint64_t)page * 2 + 100;
    MojoHandle h = create(size);
    void *p = (void *)0x1;
    assert_int_equal(MojoMapBuffer(h, 0, 0, NULL, &p), INVALID);
    assert_int_equal(MojoMapBuffer(h, 0, size + 1, NULL, &p), INVALID);
    assert_int_equal(MojoMapBuffer(h, size, 1, NULL, &p), INVALID);
    assert_int_equal(MojoMapBuffer(h, size + 1, 0, NULL, &p), INVALID);
    assert_int_equal(MojoMapBuffer(h, 1, size, NULL, &p), INVALID);
    assert_int_equal(MojoMapBuffer(h, UINT64_MAX, 2, NULL, &p), INVALID);
    assert_int_equal(MojoMapBuffer(h, 2, UINT64_MAX, NULL, &p), INVALID);
    assert_int_equal(MojoMapBuffer(h, UINT64_MAX, UINT64_MAX, NULL, &p), INVALID);
    assert_int_equal(MojoMapBuffer(h, size - 100, UINT64_MAX - size + 101, NULL, &p), INVALID);
    assert_ptr_equal(p, (void *)0x1); /* untouched */

    /* The last byte alone, at an offset that is not page-aligned. */
    uint8_t *whole = map(h, 0, size);
    whole[size - 1] = 0x5a;
    whole[page + 1] = 0x33;
    uint8_t *last = map(h, size - 1, 1);
    assert_int_equal(last[0], 0x5a);
    uint8_t *odd = map(h, (uint64_t)page + 1, (uint64_t)page);
    assert_int_equal(odd[0], 0x33);
    assert_int_equal(odd[page - 1 + 0], whole[2 * page]);
    unmap(odd);
    unmap(last);
    unmap(whole);
    cmojo_test_close_ok(h);
}

static void map_refuses_bad_arguments(void **state)
{
    (void)state;
    MojoHandle h = create(100);
    void *p = (void *)0x1;
    assert_int_equal(MojoMapBuffer(h, 0, 100, NULL, NULL), INVALID);
    struct MojoMapBufferOptions small = {4, 0};
    assert_int_equal(MojoMapBuffer(h, 0, 100, &small, &p), INVALID);
    struct MojoMapBufferOptions flags = {sizeof(flags), 1};
    assert_int_equal(MojoMapBuffer(h, 0, 100, &flags, &p), MOJO_RESULT_UNIMPLEMENTED);
    assert_int_equal(MojoMapBuffer(MOJO_HANDLE_INVALID, 0, 100, NULL, &p), INVALID);
    assert_int_equal(MojoMapBuffer(0x123456789, 0, 100, NULL, &p), INVALID);
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    assert_int_equal(MojoMapBuffer(a, 0, 100, NULL, &p), INVALID); /* wrong type */
    assert_ptr_equal(p, (void *)0x1);
    struct MojoMapBufferOptions ok = {sizeof(ok), 0};
    assert_int_equal(MojoMapBuffer(h, 0, 100, &ok, &p), OK);
    unmap(p);
    cmojo_test_close_ok(h);
    assert_int_equal(MojoMapBuffer(h, 0, 100, NULL, &p), INVALID); /* closed */
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void a_mapping_outlives_its_handle(void **state)
{
    (void)state;
    MojoHandle h = create(4096);
    MojoHandle d = duplicate(h, MOJO_DUPLICATE_BUFFER_HANDLE_FLAG_READ_ONLY, OK);
    uint8_t *w = map(h, 0, 4096); /* read-only by now: the region converted */
    uint8_t *r = map(d, 0, 4096);
    cmojo_test_close_ok(h);
    cmojo_test_close_ok(d);
    assert_int_equal(w[100], 0);
    assert_int_equal(r[4095], 0);
    unmap(w);
    unmap(r);

    MojoHandle h2 = create(8192);
    uint8_t *p = map(h2, 4096, 4096);
    cmojo_test_close_ok(h2);
    memset(p, 0x42, 4096); /* still writable, still there */
    assert_int_equal(p[4095], 0x42);
    unmap(p);
}

static void unmap_takes_only_what_map_returned(void **state)
{
    (void)state;
    MojoHandle h = create(8192);
    uint8_t *p = map(h, 0, 8192);
    uint8_t *q = map(h, 1, 8191); /* interior pointer of its own mapping */
    int local;
    void *heap = malloc(16);
    void *foreign = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(foreign != MAP_FAILED);
    assert_int_equal(MojoUnmapBuffer(NULL), INVALID);
    assert_int_equal(MojoUnmapBuffer(&local), INVALID);
    assert_int_equal(MojoUnmapBuffer(heap), INVALID);
    assert_int_equal(MojoUnmapBuffer(foreign), INVALID);
    assert_int_equal(MojoUnmapBuffer(p + 1), INVALID);
    assert_int_equal(MojoUnmapBuffer(q - 1), INVALID); /* its page start: not what we gave */
    /* The foreign mapping is untouched. */
    memset(foreign, 1, 4096);
    munmap(foreign, 4096);
    free(heap);
    assert_int_equal(core_shared_buffer_debug_mapping_count(), 2);
    unmap(q);
    unmap(p);
    assert_int_equal(MojoUnmapBuffer(p), INVALID); /* twice */
    assert_int_equal(MojoUnmapBuffer(q), INVALID);
    cmojo_test_close_ok(h);
}

static void many_mappings_are_tracked(void **state)
{
    (void)state;
    enum { N = 300 };
    MojoHandle h = create(N);
    uint8_t *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = map(h, (uint64_t)i, 1);
        *p[i] = (uint8_t)i;
    }
    assert_int_equal(core_shared_buffer_debug_mapping_count(), N);
    for (int i = 0; i < N; i += 2)
        unmap(p[i]);
    for (int i = 1; i < N; i += 2) {
        assert_int_equal(*p[i], (uint8_t)i);
        unmap(p[i]);
    }
    cmojo_test_close_ok(h);
}

/* ---------------------------------------------------------------- info */

static void get_buffer_info_refuses_bad_arguments(void **state)
{
    (void)state;
    MojoHandle h = create(123);
    struct MojoSharedBufferInfo info = {sizeof(info), 99};
    assert_int_equal(MojoGetBufferInfo(h, NULL, NULL), INVALID);
    struct MojoSharedBufferInfo small = {8, 99};
    assert_int_equal(MojoGetBufferInfo(h, NULL, &small), INVALID);
    struct MojoGetBufferInfoOptions opts_small = {4, 0};
    assert_int_equal(MojoGetBufferInfo(h, &opts_small, &info), INVALID);
    struct MojoGetBufferInfoOptions flags = {sizeof(flags), 1};
    assert_int_equal(MojoGetBufferInfo(h, &flags, &info), MOJO_RESULT_UNIMPLEMENTED);
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    assert_int_equal(MojoGetBufferInfo(a, NULL, &info), INVALID);
    assert_int_equal(MojoGetBufferInfo(MOJO_HANDLE_INVALID, NULL, &info), INVALID);
    assert_int_equal(info.size, 99); /* untouched */
    struct {
        struct MojoSharedBufferInfo i;
        uint64_t more;
    } big = {{sizeof(big), 0}, 0};
    assert_int_equal(MojoGetBufferInfo(h, NULL, &big.i), OK);
    assert_int_equal(big.i.size, 123);
    assert_int_equal(big.i.struct_size, sizeof(struct MojoSharedBufferInfo));
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
    cmojo_test_close_ok(h);
}

/* ------------------------------------------------------- duplicate, modes */

static void duplicate_refuses_bad_arguments(void **state)
{
    (void)state;
    MojoHandle h = create(10), d = 55;
    assert_int_equal(MojoDuplicateBufferHandle(h, NULL, NULL), INVALID);
    struct MojoDuplicateBufferHandleOptions small = {4, 0};
    assert_int_equal(MojoDuplicateBufferHandle(h, &small, &d), INVALID);
    struct MojoDuplicateBufferHandleOptions flags = {sizeof(flags), 2};
    assert_int_equal(MojoDuplicateBufferHandle(h, &flags, &d), MOJO_RESULT_UNIMPLEMENTED);
    assert_int_equal(MojoDuplicateBufferHandle(MOJO_HANDLE_INVALID, NULL, &d), INVALID);
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    assert_int_equal(MojoDuplicateBufferHandle(a, NULL, &d), INVALID);
    assert_int_equal(d, 55);
    /* None of that changed the mode: a read-only duplicate still works. */
    MojoHandle r = duplicate(h, MOJO_DUPLICATE_BUFFER_HANDLE_FLAG_READ_ONLY, OK);
    cmojo_test_close_ok(r);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
    cmojo_test_close_ok(h);
}

static void a_read_only_duplicate_makes_every_handle_read_only(void **state)
{
    (void)state;
    long page = page_size();
    MojoHandle h = create((uint64_t)page);
    uint8_t *w = map(h, 0, (uint64_t)page); /* writable, made before */
    MojoHandle r = duplicate(h, MOJO_DUPLICATE_BUFFER_HANDLE_FLAG_READ_ONLY, OK);
    /* The old mapping still writes, and both handles see it. */
    w[0] = 1;
    uint8_t *via_r = map(r, 0, (uint64_t)page);
    uint8_t *via_h = map(h, 0, (uint64_t)page);
    assert_int_equal(via_r[0], 1);
    assert_int_equal(via_h[0], 1);
    assert_false(can_become_writable(via_r, (size_t)page));
    assert_false(can_become_writable(via_h, (size_t)page));
    assert_true(can_become_writable(w, (size_t)page));
    /* Read-only for good: no writable duplicate from either handle. */
    duplicate(h, 0, MOJO_RESULT_FAILED_PRECONDITION);
    duplicate(r, 0, MOJO_RESULT_FAILED_PRECONDITION);
    MojoHandle r2 = duplicate(r, MOJO_DUPLICATE_BUFFER_HANDLE_FLAG_READ_ONLY, OK);
    MojoHandle r3 = duplicate(h, MOJO_DUPLICATE_BUFFER_HANDLE_FLAG_READ_ONLY, OK);
    region rr = unwrap(r2);
    assert_int_equal(rr.mode, RO);
    assert_true(fcntl(rr.fd, F_GET_SEALS) & F_SEAL_FUTURE_WRITE);
    close(rr.fd);
    unmap(via_h);
    unmap(via_r);
    unmap(w);
    cmojo_test_close_ok(r3);
    cmojo_test_close_ok(r);
    cmojo_test_close_ok(h);
}

static void a_writable_duplicate_makes_the_buffer_unsafe(void **state)
{
    (void)state;
    MojoHandle h = create(4096);
    MojoHandle d = duplicate(h, 0, OK);
    duplicate(h, MOJO_DUPLICATE_BUFFER_HANDLE_FLAG_READ_ONLY, MOJO_RESULT_FAILED_PRECONDITION);
    duplicate(d, MOJO_DUPLICATE_BUFFER_HANDLE_FLAG_READ_ONLY, MOJO_RESULT_FAILED_PRECONDITION);
    MojoHandle d2 = duplicate(d, 0, OK); /* more writable ones are fine */
    uint8_t *a = map(h, 0, 4096), *b = map(d2, 0, 4096);
    a[7] = 7;
    assert_int_equal(b[7], 7);
    assert_true(can_become_writable(b, 4096));
    unmap(a);
    unmap(b);
    region r = unwrap(d2);
    assert_int_equal(r.mode, UNSAFE);
    assert_false(fcntl(r.fd, F_GET_SEALS) & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE));
    close(r.fd);
    cmojo_test_close_ok(h);
    cmojo_test_close_ok(d);
}

static void a_lone_writable_handle_stays_writable(void **state)
{
    (void)state;
    /* Sending it or unwrapping it does not change its mode. */
    region r = unwrap(create(64));
    assert_int_equal(r.mode, WRITABLE);
    MojoHandle h = wrap_ok(&r);
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    send_handles(a, &h, 1);
    MojoHandle got;
    assert_int_equal(receive_handles(b, &got, 1), 1);
    region again = unwrap(got);
    assert_int_equal(again.mode, WRITABLE);
    assert_int_equal(again.fd, r.fd); /* in this process the object itself travels */
    assert_true(again.guid.high == r.guid.high && again.guid.low == r.guid.low);
    close(again.fd);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

/*
 * READ_ONLY is the kernel's doing: a descriptor of the memfd cannot write it
 * whatever it tries.
 */
static void read_only_holds_for_any_descriptor(void **state)
{
    (void)state;
    long page = page_size();
    MojoHandle h = create((uint64_t)page * 2);
    uint8_t *w = map(h, 0, (uint64_t)page * 2);
    memcpy(w, "before", 7);
    MojoHandle r = duplicate(h, MOJO_DUPLICATE_BUFFER_HANDLE_FLAG_READ_ONLY, OK);
    region rr = unwrap(r);
    int fd = rr.fd;

    assert_int_equal(write(fd, "x", 1), -1);
    assert_int_equal(errno, EPERM);
    assert_int_equal(pwrite(fd, "x", 1, 0), -1);
    assert_int_equal(errno, EPERM);
    assert_true(mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED);
    assert_int_equal(errno, EPERM);
    void *ro = mmap(NULL, (size_t)page, PROT_READ, MAP_SHARED, fd, 0);
    assert_true(ro != MAP_FAILED);
    assert_int_equal(mprotect(ro, (size_t)page, PROT_READ | PROT_WRITE), -1);
    assert_int_equal(madvise(ro, (size_t)page, MADV_REMOVE), -1);
    munmap(ro, (size_t)page);
    assert_int_equal(ftruncate(fd, 0), -1);
    assert_int_equal(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, page), -1);
    assert_true(fcntl(fd, F_GET_SEALS) & F_SEAL_FUTURE_WRITE); /* seals never come off */
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    int again = open(path, O_RDWR | O_CLOEXEC);
    assert_true(again >= 0);
    assert_int_equal(write(again, "x", 1), -1);
    assert_int_equal(errno, EPERM);
    assert_true(mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_SHARED, again, 0) ==
                MAP_FAILED);
    close(again);
    /* The writable mapping made before the duplicate still works. */
    memcpy(w, "after", 6);
    char check[8];
    assert_int_equal(pread(fd, check, 6, 0), 6);
    assert_string_equal(check, "after");
    close(fd);
    unmap(w);
    cmojo_test_close_ok(h);
}

/* ---------------------------------------------------------- wrap / unwrap */

static void wrap_and_unwrap_round_trip(void **state)
{
    (void)state;
    MojoHandle h = create(5000);
    uint8_t *p = map(h, 0, 5000);
    p[4999] = 0x77;
    region r = unwrap(h);
    assert_int_equal(MojoClose(h), INVALID); /* the handle is gone */
    MojoHandle h2 = wrap_ok(&r);
    struct MojoSharedBufferInfo info = {sizeof(info), 0};
    assert_int_equal(MojoGetBufferInfo(h2, NULL, &info), OK);
    assert_int_equal(info.size, 5000);
    uint8_t *q = map(h2, 4999, 1);
    assert_int_equal(q[0], 0x77);
    region r2 = unwrap(h2);
    assert_int_equal(r2.fd, r.fd);
    assert_int_equal(r2.size, 5000);
    assert_true(r2.guid.high == r.guid.high && r2.guid.low == r.guid.low);
    assert_int_equal(r2.mode, WRITABLE);
    /* Wrapping a smaller size than the memfd is fine: that is the buffer's size. */
    MojoHandle h3;
    assert_int_equal(wrap(r.fd, 100, &r.guid, UNSAFE, &h3), OK);
    assert_int_equal(MojoGetBufferInfo(h3, NULL, &info), OK);
    assert_int_equal(info.size, 100);
    cmojo_test_close_ok(h3); /* closes the fd */
    assert_false(fd_open(r.fd));
    unmap(p);
    unmap(q);
}

static void wrap_takes_mojos_two_descriptor_writable_form(void **state)
{
    (void)state;
    int fd = memfd(4096, F_SEAL_SHRINK);
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    int ro = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(ro >= 0);
    struct MojoPlatformHandle ph[2] = {
        {sizeof(ph[0]), MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR, (uint64_t)fd},
        {sizeof(ph[1]), MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR, (uint64_t)ro},
    };
    MojoHandle h;
    /* Only for WRITABLE. */
    assert_int_equal(MojoWrapPlatformSharedMemoryRegion(ph, 2, 4096, &guid1, UNSAFE, NULL, &h),
                     INVALID);
    /* The same descriptor twice, or another file, is refused. */
    struct MojoPlatformHandle twice[2] = {ph[0], ph[0]};
    assert_int_equal(MojoWrapPlatformSharedMemoryRegion(twice, 2, 4096, &guid1, WRITABLE, NULL, &h),
                     INVALID);
    int other = memfd(4096, F_SEAL_SHRINK);
    struct MojoPlatformHandle mixed[2] = {ph[0], ph[1]};
    mixed[1].value = (uint64_t)other;
    assert_int_equal(MojoWrapPlatformSharedMemoryRegion(mixed, 2, 4096, &guid1, WRITABLE, NULL, &h),
                     INVALID);
    close(other);
    assert_true(fd_open(fd) && fd_open(ro));
    assert_int_equal(MojoWrapPlatformSharedMemoryRegion(ph, 2, 4096, &guid1, WRITABLE, NULL, &h),
                     OK);
    assert_false(fd_open(ro)); /* kept one, closed the other */
    region r = unwrap(h);
    assert_int_equal(r.fd, fd);
    close(fd);
}

static void wrap_refuses_bad_arguments_and_leaves_the_fd_alone(void **state)
{
    (void)state;
    int fd = memfd(4096, F_SEAL_SHRINK | F_SEAL_GROW);
    struct MojoPlatformHandle ph = {sizeof(ph), MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR,
                                    (uint64_t)fd};
    MojoHandle h = 66;
    const struct MojoSharedBufferGuid zero = {0, 0};
    assert_int_equal(MojoWrapPlatformSharedMemoryRegion(NULL, 1, 4096, &guid1, UNSAFE, NULL, &h),
                     INVALID);
    assert_int_equal(MojoWrapPlatformSharedMemoryRegion(&ph, 0, 4096, &guid1, UNSAFE, NULL, &h),
                     INVALID);
    assert_int_equal(MojoWrapPlatformSharedMemoryRegion(&ph, 1, 4096, NULL, UNSAFE, NULL, &h),
                     INVALID);
    assert_int_equal(MojoWrapPlatformSharedMemoryRegion(&ph, 1, 4096, &guid1, UNSAFE, NULL, NULL),
                     INVALID);
    assert_int_equal(MojoWrapPlatformSharedMemoryRegion(&ph, 1, 4096, &zero, UNSAFE, NULL, &h),
                     INVALID);
    assert_int_equal(MojoWrapPlatformSharedMemoryRegion(&ph, 1, 4096, &guid1, 3, NULL, &h),
                     INVALID);
    assert_int_equal(MojoWrapPlatformSharedMemoryRegion(&ph, 1, 0, &guid1, UNSAFE, NULL, &h),
                     INVALID);
    assert_int_equal(MojoWrapPlatformSharedMemoryRegion(&ph, 1, CMOJO_MAX_SHARED_BUFFER_SIZE + 1,
                                                        &guid1, UNSAFE, NULL, &h),
                     INVALID);
    assert_int_equal(MojoWrapPlatformSharedMemoryRegion(&ph, 1, 4097, &guid1, UNSAFE, NULL, &h),
                     INVALID); /* bigger than the memfd */
    struct MojoWrapPlatformSharedMemoryRegionOptions opts = {sizeof(opts), 1};
    assert_int_equal(MojoWrapPlatformSharedMemoryRegion(&ph, 1, 4096, &guid1, UNSAFE, &opts, &h),
                     INVALID);
    struct MojoPlatformHandle bad = ph;
    bad.struct_size = 8;
    assert_int_equal(MojoWrapPlatformSharedMemoryRegion(&bad, 1, 4096, &guid1, UNSAFE, NULL, &h),
                     INVALID);
    bad = ph;
    bad.type = MOJO_PLATFORM_HANDLE_TYPE_WINDOWS_HANDLE;
    assert_int_equal(MojoWrapPlatformSharedMemoryRegion(&bad, 1, 4096, &guid1, UNSAFE, NULL, &h),
                     INVALID);
    bad = ph;
    bad.value = (uint64_t)-1;
    assert_int_equal(MojoWrapPlatformSharedMemoryRegion(&bad, 1, 4096, &guid1, UNSAFE, NULL, &h),
                     INVALID);
    bad.value = 1000000; /* not open */
    assert_int_equal(MojoWrapPlatformSharedMemoryRegion(&bad, 1, 4096, &guid1, UNSAFE, NULL, &h),
                     INVALID);
    struct MojoPlatformHandle three[3] = {ph, ph, ph};
    assert_int_equal(MojoWrapPlatformSharedMemoryRegion(three, 3, 4096, &guid1, WRITABLE, NULL, &h),
                     INVALID);
    /* READ_ONLY needs a write seal this memfd does not have. */
    assert_int_equal(MojoWrapPlatformSharedMemoryRegion(&ph, 1, 4096, &guid1, RO, NULL, &h),
                     INVALID);
    assert_int_equal(h, 66);
    assert_true(fd_open(fd));
    /* The same memfd is fine as UNSAFE. */
    assert_int_equal(MojoWrapPlatformSharedMemoryRegion(&ph, 1, 4096, &guid1, UNSAFE, NULL, &h),
                     OK);
    cmojo_test_close_ok(h);
    assert_false(fd_open(fd));

    /* Unwrap's own checks leave the handle open. */
    h = create(10);
    struct MojoPlatformHandle out = {sizeof(out), 0, 0};
    uint32_t n = 1;
    uint64_t size;
    struct MojoSharedBufferGuid g;
    MojoPlatformSharedMemoryRegionAccessMode mode;
    assert_int_equal(MojoUnwrapPlatformSharedMemoryRegion(h, NULL, NULL, &n, &size, &g, &mode),
                     INVALID);
    assert_int_equal(MojoUnwrapPlatformSharedMemoryRegion(h, NULL, &out, NULL, &size, &g, &mode),
                     INVALID);
    assert_int_equal(MojoUnwrapPlatformSharedMemoryRegion(h, NULL, &out, &n, NULL, &g, &mode),
                     INVALID);
    assert_int_equal(MojoUnwrapPlatformSharedMemoryRegion(h, NULL, &out, &n, &size, NULL, &mode),
                     INVALID);
    assert_int_equal(MojoUnwrapPlatformSharedMemoryRegion(h, NULL, &out, &n, &size, &g, NULL),
                     INVALID);
    n = 0;
    assert_int_equal(MojoUnwrapPlatformSharedMemoryRegion(h, NULL, &out, &n, &size, &g, &mode),
                     INVALID);
    n = 1;
    out.struct_size = 8;
    assert_int_equal(MojoUnwrapPlatformSharedMemoryRegion(h, NULL, &out, &n, &size, &g, &mode),
                     INVALID);
    out.struct_size = sizeof(out);
    struct MojoUnwrapPlatformSharedMemoryRegionOptions uopts = {sizeof(uopts), 1};
    assert_int_equal(MojoUnwrapPlatformSharedMemoryRegion(h, &uopts, &out, &n, &size, &g, &mode),
                     INVALID);
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    assert_int_equal(MojoUnwrapPlatformSharedMemoryRegion(a, NULL, &out, &n, &size, &g, &mode),
                     INVALID);
    assert_int_equal(MojoUnwrapPlatformSharedMemoryRegion(0, NULL, &out, &n, &size, &g, &mode),
                     INVALID);
    cmojo_test_close_ok(a); /* still open after all that */
    cmojo_test_close_ok(b);
    cmojo_test_close_ok(h);
}

/*
 * Memfds that must not become buffers: the same checks as for one arriving
 * from another process (core_shared_buffer_check_fd), seen through wrap.
 */
static void wrap_refuses_memory_that_breaks_the_invariants(void **state)
{
    (void)state;
    MojoHandle h = 66;
    struct bad_region {
        const char *what;
        int fd;
        uint64_t size;
        uint32_t mode;
    } cases[8];
    int n = 0;
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    close(p[1]);
    cases[n++] = (struct bad_region){"a pipe", p[0], 1, UNSAFE};
    char tmpl[] = "/tmp/cmojo-sb-XXXXXX";
    int file = mkstemp(tmpl);
    assert_true(file >= 0);
    unlink(tmpl);
    assert_int_equal(ftruncate(file, 4096), 0);
    cases[n++] = (struct bad_region){"a regular file", file, 4096, UNSAFE};
    cases[n++] = (struct bad_region){"no SHRINK seal", memfd(4096, F_SEAL_GROW), 4096, UNSAFE};
    cases[n++] = (struct bad_region){"not sealable", memfd(4096, 0), 4096, UNSAFE};
    fcntl(cases[n - 1].fd, F_ADD_SEALS, F_SEAL_SEAL);
    cases[n++] = (struct bad_region){"too small", memfd(4095, F_SEAL_SHRINK), 4096, UNSAFE};
    cases[n++] =
        (struct bad_region){"writable but write-sealed",
                            memfd(4096, F_SEAL_SHRINK | F_SEAL_FUTURE_WRITE), 4096, WRITABLE};
    cases[n++] = (struct bad_region){"writable but sealed shut",
                                     memfd(4096, F_SEAL_SHRINK | F_SEAL_SEAL), 4096, WRITABLE};
    int rw = memfd(4096, F_SEAL_SHRINK);
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", rw);
    int rdonly = open(path, O_RDONLY | O_CLOEXEC);
    close(rw);
    cases[n++] = (struct bad_region){"writable on a read-only fd", rdonly, 4096, UNSAFE};
    for (int i = 0; i < n; i++) {
        fprintf(stderr, "case: %s\n", cases[i].what);
        assert_int_equal(wrap(cases[i].fd, cases[i].size, &guid1, cases[i].mode, &h), INVALID);
        assert_true(fd_open(cases[i].fd));
        const char *why = NULL;
        assert_int_equal(
            core_shared_buffer_check_fd(cases[i].fd, cases[i].size, cases[i].mode, &why), -1);
        assert_non_null(why);
        fprintf(stderr, "  refused: %s\n", why);
        close(cases[i].fd);
    }
    assert_int_equal(h, 66);

    /* A sealed memfd is fine as READ_ONLY, F_SEAL_WRITE as much as FUTURE_WRITE. */
    int sealed = memfd(4096, F_SEAL_SHRINK | F_SEAL_WRITE);
    assert_int_equal(wrap(sealed, 4096, &guid1, RO, &h), OK);
    uint8_t *m = map(h, 0, 4096);
    assert_false(can_become_writable(m, 4096));
    unmap(m);
    duplicate(h, 0, MOJO_RESULT_FAILED_PRECONDITION);
    cmojo_test_close_ok(h);
}

/* ------------------------------------------------------- the wire state */

static void state_parse_accepts_exactly_the_layout(void **state)
{
    (void)state;
    core_shared_buffer_state st = {4096, UNSAFE, {0x0102030405060708ull, 0x1112131415161718ull}};
    uint8_t buf[CORE_SHARED_BUFFER_STATE_SIZE];
    core_shared_buffer_state_write(buf, &st);
    static const uint8_t expect[CORE_SHARED_BUFFER_STATE_SIZE] = {
        0x00, 0x10, 0, 0, 0, 0, 0, 0, 2,    0,    0,    0,    0,    0,    0,    0,
        8,    7,    6, 5, 4, 3, 2, 1, 0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11,
    };
    assert_memory_equal(buf, expect, sizeof(buf));
    core_shared_buffer_state out;
    const char *why = NULL;
    assert_int_equal(core_shared_buffer_state_parse(buf, sizeof(buf), &out, &why), 0);
    assert_int_equal(out.num_bytes, 4096);
    assert_int_equal(out.access_mode, UNSAFE);
    assert_true(out.guid.high == st.guid.high && out.guid.low == st.guid.low);

    struct {
        const char *what;
        size_t at;
        uint8_t value;
        size_t size;
    } bad[] = {
        {"short", 0, 0, sizeof(buf) - 1},
        {"long", 0, 0, sizeof(buf) + 1},
        {"empty", 0, 0, 0},
        {"reserved bits", 12, 1, sizeof(buf)},
        {"reserved high byte", 15, 0x80, sizeof(buf)},
        {"unknown mode", 8, 3, sizeof(buf)},
        {"mode high bits", 11, 1, sizeof(buf)},
        {"size over the limit", 4, 1, sizeof(buf)}, /* 4 GiB + 4096 */
    };
    uint8_t big[CORE_SHARED_BUFFER_STATE_SIZE + 1];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memcpy(big, buf, sizeof(buf));
        big[sizeof(buf)] = 0;
        big[bad[i].at] = bad[i].value;
        why = NULL;
        assert_int_equal(core_shared_buffer_state_parse(big, bad[i].size, &out, &why), -1);
        assert_non_null(why);
    }
    core_shared_buffer_state zero_size = st, zero_guid = st;
    zero_size.num_bytes = 0;
    zero_guid.guid = (struct MojoSharedBufferGuid){0, 0};
    core_shared_buffer_state_write(buf, &zero_size);
    assert_int_equal(core_shared_buffer_state_parse(buf, sizeof(buf), &out, &why), -1);
    core_shared_buffer_state_write(buf, &zero_guid);
    assert_int_equal(core_shared_buffer_state_parse(buf, sizeof(buf), &out, &why), -1);
}

static void deserialize_checks_the_fd_and_owns_it_only_on_success(void **state)
{
    (void)state;
    uint8_t buf[CORE_SHARED_BUFFER_STATE_SIZE];
    core_shared_buffer_state st = {8192, RO, guid1};
    core_shared_buffer_state_write(buf, &st);
    const char *why = NULL;
    /* A READ_ONLY claim without the seal: refused, fd left to the caller. */
    int fds[1] = {memfd(8192, F_SEAL_SHRINK)};
    int fd = fds[0];
    assert_null(core_shared_buffer_deserialize(buf, sizeof(buf), fds, &why));
    assert_non_null(why);
    assert_int_equal(fds[0], fd);
    assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE), 0);
    core_dispatcher *d = core_shared_buffer_deserialize(buf, sizeof(buf), fds, &why);
    assert_non_null(d);
    assert_int_equal(fds[0], -1);
    void *p;
    assert_int_equal(core_shared_buffer_map(d, 8191, 1, &p), OK);
    assert_int_equal(*(volatile uint8_t *)p, 0);
    assert_int_equal(core_shared_buffer_map(d, 8191, 2, &p), INVALID);
    core_dispatcher_close(d);
    core_dispatcher_release(d);
    assert_false(fd_open(fd));
    unmap(p);
}

/* ---------------------------------------------------------- in messages */

static void a_buffer_travels_through_a_pipe_and_stays_the_same_memory(void **state)
{
    (void)state;
    MojoHandle h = create(4096), a, b;
    uint8_t *mine = map(h, 0, 4096);
    cmojo_test_make_pipe(&a, &b);
    MojoHandle r = duplicate(h, MOJO_DUPLICATE_BUFFER_HANDLE_FLAG_READ_ONLY, OK);
    MojoHandle both[2] = {h, r};
    send_handles(a, both, 2);
    assert_int_equal(MojoClose(h), INVALID); /* sent: gone */
    void *p;
    assert_int_equal(MojoMapBuffer(r, 0, 1, NULL, &p), INVALID);
    MojoHandle got[2];
    assert_int_equal(receive_handles(b, got, 2), 2);
    uint8_t *theirs = map(got[0], 0, 4096);
    uint8_t *theirs_ro = map(got[1], 0, 4096);
    mine[10] = 10;
    assert_int_equal(theirs[10], 10);
    assert_int_equal(theirs_ro[10], 10);
    assert_false(can_become_writable(theirs, 4096)); /* the region is read-only now */
    assert_false(can_become_writable(theirs_ro, 4096));
    struct MojoSharedBufferInfo info = {sizeof(info), 0};
    assert_int_equal(MojoGetBufferInfo(got[1], NULL, &info), OK);
    assert_int_equal(info.size, 4096);
    /* Still one region: its mode is shared by the handles that travelled. */
    duplicate(got[0], 0, MOJO_RESULT_FAILED_PRECONDITION);
    unmap(theirs);
    unmap(theirs_ro);
    unmap(mine);
    cmojo_test_close_ok(got[0]);
    cmojo_test_close_ok(got[1]);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void a_buffer_in_transit_is_busy_and_an_unread_one_is_closed(void **state)
{
    (void)state;
    MojoHandle h = create(64);
    MojoMessageHandle m;
    assert_int_equal(MojoCreateMessage(NULL, &m), OK);
    assert_int_equal(MojoAppendMessageData(m, 0, &h, 1, NULL, NULL, NULL), OK);
    void *p;
    struct MojoSharedBufferInfo info = {sizeof(info), 0};
    MojoHandle d;
    assert_int_equal(MojoMapBuffer(h, 0, 1, NULL, &p), MOJO_RESULT_BUSY);
    assert_int_equal(MojoGetBufferInfo(h, NULL, &info), MOJO_RESULT_BUSY);
    assert_int_equal(MojoDuplicateBufferHandle(h, NULL, &d), MOJO_RESULT_BUSY);
    struct MojoPlatformHandle ph = {sizeof(ph), 0, 0};
    uint32_t n = 1;
    uint64_t size;
    struct MojoSharedBufferGuid g;
    MojoPlatformSharedMemoryRegionAccessMode mode;
    assert_int_equal(MojoUnwrapPlatformSharedMemoryRegion(h, NULL, &ph, &n, &size, &g, &mode),
                     MOJO_RESULT_BUSY);
    assert_int_equal(MojoClose(h), MOJO_RESULT_BUSY);
    assert_int_equal(MojoDestroyMessage(m), OK); /* closes it */
    assert_int_equal(MojoClose(h), INVALID);

    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    h = create(64);
    send_handles(a, &h, 1);
    cmojo_test_close_ok(b); /* the message dies unread, with the buffer */
    cmojo_test_close_ok(a);
}

static void trap_handler(const struct MojoTrapEvent *event)
{
    (void)event;
}

static void traps_and_queries_refuse_a_buffer(void **state)
{
    (void)state;
    MojoHandle h = create(16), trap;
    struct MojoHandleSignalsState s;
    assert_int_equal(MojoQueryHandleSignalsState(h, &s), INVALID);
    assert_int_equal(MojoCreateTrap(trap_handler, NULL, &trap), OK);
    assert_int_equal(MojoAddTrigger(trap, h, MOJO_HANDLE_SIGNAL_READABLE,
                                    MOJO_TRIGGER_CONDITION_SIGNALS_SATISFIED, 0, NULL),
                     INVALID);
    cmojo_test_close_ok(trap);
    cmojo_test_close_ok(h);
}

/* ------------------------------------------------------------- threads */

#define RACE_THREADS 4
#define RACE_ROUNDS 300

typedef struct race {
    MojoHandle h;
    _Atomic int writable_after; /* mappings that came back writable after the switch */
    _Atomic int switched;
} race;

static void *race_mapper(void *arg)
{
    race *r = arg;
    for (int i = 0; i < RACE_ROUNDS; i++) {
        bool after = r->switched;
        void *p;
        if (MojoMapBuffer(r->h, 0, 4096, NULL, &p) != OK)
            return (void *)1;
        if (after && can_become_writable(p, 4096))
            r->writable_after++;
        if (MojoUnmapBuffer(p) != OK)
            return (void *)1;
    }
    return NULL;
}

static void mapping_races_a_read_only_switch(void **state)
{
    (void)state;
    race r = {.h = create(4096)};
    pthread_t t[RACE_THREADS];
    for (int i = 0; i < RACE_THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, race_mapper, &r), 0);
    usleep(1000);
    MojoHandle ro = duplicate(r.h, MOJO_DUPLICATE_BUFFER_HANDLE_FLAG_READ_ONLY, OK);
    r.switched = 1;
    for (int i = 0; i < RACE_THREADS; i++) {
        void *rv;
        assert_int_equal(pthread_join(t[i], &rv), 0);
        assert_null(rv);
    }
    assert_int_equal(r.writable_after, 0);
    cmojo_test_close_ok(ro);
    cmojo_test_close_ok(r.h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(create_refuses_bad_arguments),
        T(a_new_buffer_is_a_zeroed_memfd_sealed_against_resizing),
        T(two_mappings_share_the_memory),
        T(map_checks_its_range_without_overflow),
        T(map_refuses_bad_arguments),
        T(a_mapping_outlives_its_handle),
        T(unmap_takes_only_what_map_returned),
        T(many_mappings_are_tracked),
        T(get_buffer_info_refuses_bad_arguments),
        T(duplicate_refuses_bad_arguments),
        T(a_read_only_duplicate_makes_every_handle_read_only),
        T(a_writable_duplicate_makes_the_buffer_unsafe),
        T(a_lone_writable_handle_stays_writable),
        T(read_only_holds_for_any_descriptor),
        T(wrap_and_unwrap_round_trip),
        T(wrap_takes_mojos_two_descriptor_writable_form),
        T(wrap_refuses_bad_arguments_and_leaves_the_fd_alone),
        T(wrap_refuses_memory_that_breaks_the_invariants),
        T(state_parse_accepts_exactly_the_layout),
        T(deserialize_checks_the_fd_and_owns_it_only_on_success),
        T(a_buffer_travels_through_a_pipe_and_stays_the_same_memory),
        T(a_buffer_in_transit_is_busy_and_an_unread_one_is_closed),
        T(traps_and_queries_refuse_a_buffer),
        T(mapping_races_a_read_only_switch),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
