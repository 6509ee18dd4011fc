/*
 * Shared buffers across real processes (children run through the harness in
 * tests/common/mp.h, each reaped and its exit status checked; every process
 * ends holding no handle, port, mapping or fd beyond what it started with).
 *
 * Pinned: a buffer sent to a child is the same memory both ways, and stays
 * so when the child sends its handle back (a new handle, same memfd); a
 * WRITABLE buffer a child receives can be made read-only by the child while
 * the parent's earlier writable mapping keeps working; and a READ_ONLY
 * duplicate sent to a child cannot be written by it by any means we know of
 * -- mmap PROT_WRITE, mprotect, write, pwrite, ftruncate, fallocate, madvise,
 * reopening /proc/self/fd/N read-write, /proc/self/mem, process_vm_writev,
 * re-wrapping its fd as writable -- while the parent's pre-existing writable
 * mapping still works and the child sees what the parent writes.
 */
#include "cmojo_test.h"
#include "mp.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/core.h"
#include "core/shared_buffer.h"
#include "mojo/public/c/system/core.h"

#define OK MOJO_RESULT_OK
#define CHECK CMOJO_MP_CHECK
#define CHECK_RESULT CMOJO_MP_CHECK_RESULT
#define RO_FLAG MOJO_DUPLICATE_BUFFER_HANDLE_FLAG_READ_ONLY

enum {
    TAG_BUFFER = 1, /* carries a buffer handle; value: its size */
    TAG_WROTE,      /* the sender wrote pattern `seq` into the buffer */
    TAG_ATTACKED,   /* the child tried every way to write and failed */
};

static const char *const ctl_name[] = {"ctl"};

static uint8_t pattern(size_t i, uint32_t seed)
{
    return (uint8_t)(i * 31u + seed * 101u + 7u);
}

static void fill(volatile uint8_t *p, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = pattern(i, seed);
}

static bool holds(const volatile uint8_t *p, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != pattern(i, seed))
            return false;
    return true;
}

static void *map_or_die(MojoHandle h, uint64_t size)
{
    void *p = NULL;
    CHECK_RESULT(MojoMapBuffer(h, 0, size, NULL, &p), OK);
    return p;
}

static MojoHandle dup_or_die(MojoHandle h, uint32_t flags)
{
    struct MojoDuplicateBufferHandleOptions o = {sizeof(o), flags};
    MojoHandle d = MOJO_HANDLE_INVALID;
    CHECK_RESULT(MojoDuplicateBufferHandle(h, &o, &d), OK);
    return d;
}

/* Unwraps h: its memfd (the caller's to close), mode and size. */
static int unwrap_fd(MojoHandle h, MojoPlatformSharedMemoryRegionAccessMode *mode, uint64_t *size)
{
    struct MojoPlatformHandle ph = {sizeof(ph), 0, 0};
    uint32_t n = 1;
    struct MojoSharedBufferGuid guid;
    CHECK_RESULT(MojoUnwrapPlatformSharedMemoryRegion(h, NULL, &ph, &n, size, &guid, mode), OK);
    CHECK_RESULT(n, 1);
    CHECK_RESULT(ph.type, MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR);
    return (int)ph.value;
}

static size_t round_to_pages(uint64_t n)
{
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    return (size_t)((n + page - 1) / page * page);
}

/* The child's connection reported nothing but its end (it exited). */
static bool only_the_disconnect(int log)
{
    cmojo_mp_log_state s = cmojo_mp_log(log);
    if (s.reports == s.disconnected && s.reports <= 1)
        return true;
    fprintf(stderr, "log %d: %d reports, %d disconnects, last \"%s\"\n", log, s.reports,
            s.disconnected, s.last);
    return false;
}

/* ------------------------------------------------------------------------ */
/* The same memory both ways.                                               */

static int role_share(const int *fds, size_t n, const char *arg)
{
    MojoHandle ctl, h;
    uint32_t nh = 1;

    (void)n;
    (void)arg;
    cmojo_mp_accept(fds[0], ctl_name, 1, &ctl);

    /* An UNSAFE buffer: we see the parent's bytes, it sees ours. */
    cmojo_mp_msg m = cmojo_mp_recv_tag(ctl, TAG_BUFFER, &h, &nh);
    CHECK_RESULT(nh, 1);
    uint64_t size = m.value;
    struct MojoSharedBufferInfo info = {sizeof(info), 0};
    CHECK_RESULT(MojoGetBufferInfo(h, NULL, &info), OK);
    CHECK_RESULT(info.size, size);
    uint8_t *p = map_or_die(h, size);
    CHECK(holds(p, size, 1));
    fill(p, size, 2);
    cmojo_mp_send(ctl, TAG_WROTE, 2, 0, NULL, 0);
    m = cmojo_mp_recv_tag(ctl, TAG_WROTE, NULL, NULL);
    CHECK(holds(p, size, m.seq));
    /* Our handle goes back; our mapping stays. */
    cmojo_mp_send(ctl, TAG_BUFFER, 0, size, &h, 1);
    m = cmojo_mp_recv_tag(ctl, TAG_WROTE, NULL, NULL);
    CHECK(holds(p, size, m.seq));
    CHECK_RESULT(MojoUnmapBuffer(p), OK);

    /* A WRITABLE buffer, the only handle: we make it read-only. */
    nh = 1;
    m = cmojo_mp_recv_tag(ctl, TAG_BUFFER, &h, &nh);
    CHECK_RESULT(nh, 1);
    size = m.value;
    MojoHandle r = dup_or_die(h, RO_FLAG);
    struct MojoDuplicateBufferHandleOptions writable = {sizeof(writable), 0};
    MojoHandle no = MOJO_HANDLE_INVALID;
    CHECK_RESULT(MojoDuplicateBufferHandle(h, &writable, &no), MOJO_RESULT_FAILED_PRECONDITION);
    p = map_or_die(r, size);
    CHECK(mprotect(p, round_to_pages(size), PROT_READ | PROT_WRITE) != 0);
    CHECK(holds(p, size, 0));
    cmojo_mp_send(ctl, TAG_WROTE, 0, 0, NULL, 0);
    m = cmojo_mp_recv_tag(ctl, TAG_WROTE, NULL, NULL);
    CHECK(holds(p, size, m.seq)); /* the parent's old writable mapping still writes */
    CHECK_RESULT(MojoUnmapBuffer(p), OK);
    CHECK_RESULT(MojoClose(r), OK);
    CHECK_RESULT(MojoClose(h), OK);
    CHECK_RESULT(core_shared_buffer_debug_mapping_count(), 0);
    return cmojo_mp_child_finish("share child", &ctl, 1);
}

static void test_a_buffer_is_the_same_memory_in_both_processes(void **state)
{
    MojoHandle ctl, back;
    cmojo_mp_child child;
    uint32_t nh = 1;

    (void)state;
    cmojo_mp_reset_logs();
    cmojo_mp_invite("share", NULL, ctl_name, 1, &ctl, &child, 0);
    const uint64_t size = 3 * 4096 + 5;
    MojoHandle h;
    assert_int_equal(MojoCreateSharedBuffer(size, NULL, &h), OK);
    uint8_t *p = map_or_die(h, size);
    fill(p, size, 1);
    MojoHandle d = dup_or_die(h, 0);
    cmojo_mp_send(ctl, TAG_BUFFER, 0, size, &d, 1);
    cmojo_mp_recv_tag(ctl, TAG_WROTE, NULL, NULL);
    assert_true(holds(p, size, 2));
    fill(p, size, 3);
    cmojo_mp_send(ctl, TAG_WROTE, 3, 0, NULL, 0);

    /* The child's handle comes back: a new handle to the same memfd. */
    cmojo_mp_recv_tag(ctl, TAG_BUFFER, &back, &nh);
    assert_int_equal(nh, 1);
    uint8_t *q = map_or_die(back, size);
    assert_true(holds(q, size, 3));
    fill(q, size, 4);
    assert_true(holds(p, size, 4));
    cmojo_mp_send(ctl, TAG_WROTE, 4, 0, NULL, 0);
    MojoPlatformSharedMemoryRegionAccessMode mode_a, mode_b;
    uint64_t size_a, size_b;
    int fa = unwrap_fd(h, &mode_a, &size_a), fb = unwrap_fd(back, &mode_b, &size_b);
    struct stat sa, sb;
    assert_int_equal(fstat(fa, &sa), 0);
    assert_int_equal(fstat(fb, &sb), 0);
    assert_true(sa.st_ino == sb.st_ino && sa.st_dev == sb.st_dev);
    assert_int_equal(mode_a, MOJO_PLATFORM_SHARED_MEMORY_REGION_ACCESS_MODE_UNSAFE);
    assert_int_equal(mode_b, MOJO_PLATFORM_SHARED_MEMORY_REGION_ACCESS_MODE_UNSAFE);
    assert_int_equal(size_a, size);
    assert_int_equal(size_b, size);
    close(fa);
    close(fb);

    /* A WRITABLE buffer moves to the child, which makes it read-only. */
    MojoHandle w;
    assert_int_equal(MojoCreateSharedBuffer(size, NULL, &w), OK);
    uint8_t *pw = map_or_die(w, size);
    fill(pw, size, 0);
    cmojo_mp_send(ctl, TAG_BUFFER, 0, size, &w, 1);
    cmojo_mp_recv_tag(ctl, TAG_WROTE, NULL, NULL);
    fill(pw, size, 5);
    cmojo_mp_send(ctl, TAG_WROTE, 5, 0, NULL, 0);

    assert_true(cmojo_mp_wait_exit(&child, CMOJO_MP_CHILD_TIMEOUT_MS, 0));
    cmojo_mp_expect_peer_closed(ctl);
    assert_int_equal(MojoClose(ctl), OK);
    assert_int_equal(MojoUnmapBuffer(pw), OK);
    assert_int_equal(MojoUnmapBuffer(q), OK);
    assert_int_equal(MojoUnmapBuffer(p), OK);
    assert_int_equal(core_shared_buffer_debug_mapping_count(), 0);
    assert_true(only_the_disconnect(0));
}

/* ------------------------------------------------------------------------ */
/* A read-only buffer in a child that wants to write it.                    */

/* Every way we know to write the memory through fd or the mapping p. */
static void attack(int fd, uint8_t *p, size_t len)
{
    long page = sysconf(_SC_PAGESIZE);
    char path[64];

    CHECK(write(fd, "x", 1) < 0 && errno == EPERM);
    CHECK(pwrite(fd, "x", 1, 0) < 0 && errno == EPERM);
    CHECK(pwrite(fd, "x", 1, (off_t)len - 1) < 0 && errno == EPERM);
    CHECK(mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED);
    CHECK(mmap(NULL, len, PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED);
    CHECK(mprotect(p, len, PROT_READ | PROT_WRITE) != 0);
    CHECK(mprotect(p, len, PROT_WRITE) != 0);
    void *ro = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    CHECK(ro != MAP_FAILED);
    CHECK(mprotect(ro, len, PROT_READ | PROT_WRITE) != 0);
    CHECK(madvise(ro, len, MADV_REMOVE) != 0);
    CHECK(munmap(ro, len) == 0);
    CHECK(ftruncate(fd, 0) != 0);
    CHECK(ftruncate(fd, (off_t)len * 2) != 0);
    CHECK(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, page) != 0);
    CHECK(fallocate(fd, FALLOC_FL_ZERO_RANGE, 0, page) != 0);
    /* Seals are for good. */
    CHECK(fcntl(fd, F_GET_SEALS) & F_SEAL_FUTURE_WRITE);

    /* A fresh open file description, read-write. */
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    int again = open(path, O_RDWR | O_CLOEXEC);
    CHECK(again >= 0);
    CHECK(write(again, "x", 1) < 0 && errno == EPERM);
    CHECK(pwrite(again, "x", 1, 1) < 0 && errno == EPERM);
    CHECK(mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, again, 0) == MAP_FAILED);
    CHECK(close(again) == 0);

    /* The kernel's debugger paths: /proc/self/mem (FOLL_FORCE) and process_vm_writev. */
    int mem = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
    if (mem >= 0) {
        CHECK(pwrite(mem, "x", 1, (off_t)(uintptr_t)p) != 1);
        CHECK(close(mem) == 0);
    }
    char x = 'x';
    struct iovec local = {&x, 1}, remote = {p, 1};
    CHECK(process_vm_writev(getpid(), &local, 1, &remote, 1, 0) != 1);

    /* A private copy may be written, but that is ours alone. */
    uint8_t *priv = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    CHECK(priv != MAP_FAILED);
    memset(priv, 0xee, len);
    CHECK(munmap(priv, len) == 0);

    /* Wrapping it again as writable is refused. */
    struct MojoSharedBufferGuid guid = {1, 2};
    struct MojoPlatformHandle ph = {sizeof(ph), MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR,
                                    (uint64_t)fd};
    MojoHandle h;
    CHECK_RESULT(
        MojoWrapPlatformSharedMemoryRegion(
            &ph, 1, len, &guid, MOJO_PLATFORM_SHARED_MEMORY_REGION_ACCESS_MODE_UNSAFE, NULL, &h),
        MOJO_RESULT_INVALID_ARGUMENT);
    CHECK_RESULT(
        MojoWrapPlatformSharedMemoryRegion(
            &ph, 1, len, &guid, MOJO_PLATFORM_SHARED_MEMORY_REGION_ACCESS_MODE_WRITABLE, NULL, &h),
        MOJO_RESULT_INVALID_ARGUMENT);
}

static int role_read_only(const int *fds, size_t n, const char *arg)
{
    MojoHandle ctl, r;
    uint32_t nh = 1;

    (void)n;
    (void)arg;
    cmojo_mp_accept(fds[0], ctl_name, 1, &ctl);
    cmojo_mp_msg m = cmojo_mp_recv_tag(ctl, TAG_BUFFER, &r, &nh);
    CHECK_RESULT(nh, 1);
    size_t size = (size_t)m.value;
    uint8_t *p = map_or_die(r, size);
    CHECK(holds(p, size, 7));

    /* Through Mojo: no writable duplicate. */
    struct MojoDuplicateBufferHandleOptions writable = {sizeof(writable), 0};
    MojoHandle no = MOJO_HANDLE_INVALID;
    CHECK_RESULT(MojoDuplicateBufferHandle(r, &writable, &no), MOJO_RESULT_FAILED_PRECONDITION);
    /* Through the memfd itself. */
    MojoPlatformSharedMemoryRegionAccessMode mode;
    uint64_t got_size;
    int fd = unwrap_fd(dup_or_die(r, RO_FLAG), &mode, &got_size);
    CHECK_RESULT(mode, MOJO_PLATFORM_SHARED_MEMORY_REGION_ACCESS_MODE_READ_ONLY);
    CHECK_RESULT(got_size, size);
    attack(fd, p, size);
    CHECK(holds(p, size, 7));
    cmojo_mp_send(ctl, TAG_ATTACKED, 0, 0, NULL, 0);

    /* The parent still writes, and we see it, mapped and through the fd. */
    m = cmojo_mp_recv_tag(ctl, TAG_WROTE, NULL, NULL);
    CHECK(holds(p, size, m.seq));
    uint8_t last;
    CHECK(pread(fd, &last, 1, (off_t)size - 1) == 1);
    CHECK_RESULT(last, pattern(size - 1, m.seq));
    CHECK(close(fd) == 0);
    CHECK_RESULT(MojoUnmapBuffer(p), OK);
    CHECK_RESULT(MojoClose(r), OK);
    return cmojo_mp_child_finish("read-only child", &ctl, 1);
}

static void test_a_read_only_buffer_cannot_be_written_by_the_child(void **state)
{
    MojoHandle ctl, h;
    cmojo_mp_child child;

    (void)state;
    cmojo_mp_reset_logs();
    cmojo_mp_invite("read_only", NULL, ctl_name, 1, &ctl, &child, 0);
    const uint64_t size = 2 * 4096;
    assert_int_equal(MojoCreateSharedBuffer(size, NULL, &h), OK);
    uint8_t *w = map_or_die(h, size); /* writable: made before the read-only duplicate */
    fill(w, size, 7);
    MojoHandle r = dup_or_die(h, RO_FLAG);
    cmojo_mp_send(ctl, TAG_BUFFER, 0, size, &r, 1);
    cmojo_mp_recv_tag(ctl, TAG_ATTACKED, NULL, NULL);
    assert_true(holds(w, size, 7)); /* nothing the child did reached us */
    fill(w, size, 8);
    cmojo_mp_send(ctl, TAG_WROTE, 8, 0, NULL, 0);
    assert_true(cmojo_mp_wait_exit(&child, CMOJO_MP_CHILD_TIMEOUT_MS, 0));
    cmojo_mp_expect_peer_closed(ctl);
    assert_int_equal(MojoClose(ctl), OK);
    assert_true(holds(w, size, 8));
    assert_int_equal(MojoUnmapBuffer(w), OK);
    assert_int_equal(MojoClose(h), OK);
    assert_true(only_the_disconnect(0));
}

static const cmojo_mp_role roles[] = {
    {"share", role_share},
    {"read_only", role_read_only},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    cmojo_mp_child_dispatch(argc, argv, roles);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_buffer_is_the_same_memory_in_both_processes,
                                        cmojo_mp_core_setup, cmojo_mp_core_teardown),
        cmocka_unit_test_setup_teardown(test_a_read_only_buffer_cannot_be_written_by_the_child,
                                        cmojo_mp_core_setup, cmojo_mp_core_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
