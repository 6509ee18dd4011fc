/*
 * Wrapped file descriptors in one process: MojoWrapPlatformHandle,
 * MojoUnwrapPlatformHandle, and sending them in messages (the object itself
 * travels; the fd number stays the same). The fixture fails any test that
 * leaks an fd, handle, message or port.
 */
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmojo_limits.h"
#include "cmojo_test.h"
#include "mojo/public/c/system/core.h"

static int make_fd(void)
{
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    close(p[1]);
    return p[0];
}

static bool fd_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

static MojoHandle wrap(int fd)
{
    struct MojoPlatformHandle ph = {sizeof(ph), MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR,
                                    (uint64_t)fd};
    MojoHandle h = MOJO_HANDLE_INVALID;
    assert_int_equal(MojoWrapPlatformHandle(&ph, NULL, &h), MOJO_RESULT_OK);
    assert_true(h != MOJO_HANDLE_INVALID);
    return h;
}

static int unwrap(MojoHandle h)
{
    struct MojoPlatformHandle ph = {sizeof(ph), 0, 0};
    assert_int_equal(MojoUnwrapPlatformHandle(h, NULL, &ph), MOJO_RESULT_OK);
    assert_int_equal(ph.type, MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR);
    return (int)ph.value;
}

static void wrap_then_unwrap_gives_the_same_fd(void **state)
{
    (void)state;
    int fd = make_fd();
    MojoHandle h = wrap(fd);
    assert_int_equal(unwrap(h), fd);
    assert_true(fd_open(fd));
    /* The handle is gone. */
    assert_int_equal(MojoClose(h), MOJO_RESULT_INVALID_ARGUMENT);
    close(fd);
}

static void closing_the_handle_closes_the_fd(void **state)
{
    (void)state;
    int fd = make_fd();
    MojoHandle h = wrap(fd);
    cmojo_test_close_ok(h);
    assert_false(fd_open(fd));
}

static void bad_arguments_are_refused_and_leave_the_fd_alone(void **state)
{
    (void)state;
    int fd = make_fd();
    MojoHandle h = 12345;
    struct MojoPlatformHandle ph = {sizeof(ph), MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR,
                                    (uint64_t)fd};
    assert_int_equal(MojoWrapPlatformHandle(NULL, NULL, &h), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoWrapPlatformHandle(&ph, NULL, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    struct MojoPlatformHandle small = ph;
    small.struct_size = 4;
    assert_int_equal(MojoWrapPlatformHandle(&small, NULL, &h), MOJO_RESULT_INVALID_ARGUMENT);
    struct MojoPlatformHandle other = ph;
    other.type = MOJO_PLATFORM_HANDLE_TYPE_WINDOWS_HANDLE;
    assert_int_equal(MojoWrapPlatformHandle(&other, NULL, &h), MOJO_RESULT_INVALID_ARGUMENT);
    struct MojoPlatformHandle negative = ph;
    negative.value = (uint64_t)-1;
    assert_int_equal(MojoWrapPlatformHandle(&negative, NULL, &h), MOJO_RESULT_INVALID_ARGUMENT);
    struct MojoWrapPlatformHandleOptions opts = {sizeof(opts), 1};
    assert_int_equal(MojoWrapPlatformHandle(&ph, &opts, &h), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(h, 12345); /* untouched */
    assert_true(fd_open(fd));
    close(fd);
    /* A closed descriptor is refused. */
    assert_int_equal(MojoWrapPlatformHandle(&ph, NULL, &h), MOJO_RESULT_INVALID_ARGUMENT);

    /* Unwrapping something that is not a wrapped fd. */
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    struct MojoPlatformHandle out = {sizeof(out), 0, 0};
    assert_int_equal(MojoUnwrapPlatformHandle(a, NULL, &out), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoUnwrapPlatformHandle(a, NULL, NULL), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(MojoUnwrapPlatformHandle(0, NULL, &out), MOJO_RESULT_INVALID_ARGUMENT);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static MojoResult write_with(MojoHandle pipe, const MojoHandle *handles, uint32_t n)
{
    MojoMessageHandle m;
    assert_int_equal(MojoCreateMessage(NULL, &m), MOJO_RESULT_OK);
    struct MojoAppendMessageDataOptions commit = {sizeof(commit),
                                                  MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE};
    MojoResult rv = MojoAppendMessageData(m, 4, handles, n, &commit, NULL, NULL);
    if (rv != MOJO_RESULT_OK) {
        MojoDestroyMessage(m);
        return rv;
    }
    return MojoWriteMessage(pipe, m, NULL);
}

static void a_wrapped_fd_travels_through_a_pipe(void **state)
{
    (void)state;
    int fd = make_fd();
    struct stat before;
    assert_int_equal(fstat(fd, &before), 0);
    MojoHandle a, b, h = wrap(fd);
    cmojo_test_make_pipe(&a, &b);
    assert_int_equal(write_with(a, &h, 1), MOJO_RESULT_OK);
    /* The sender's handle is gone; the fd is not. */
    assert_int_equal(MojoClose(h), MOJO_RESULT_INVALID_ARGUMENT);
    assert_true(fd_open(fd));

    MojoMessageHandle m;
    assert_int_equal(MojoReadMessage(b, NULL, &m), MOJO_RESULT_OK);
    MojoHandle got[2];
    uint32_t n = 2;
    void *buf;
    uint32_t len;
    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &len, got, &n), MOJO_RESULT_OK);
    assert_int_equal(n, 1);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    int back = unwrap(got[0]);
    struct stat after;
    assert_int_equal(fstat(back, &after), 0);
    assert_true(before.st_ino == after.st_ino && before.st_dev == after.st_dev);
    close(back);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void an_unread_message_closes_its_fd_with_the_pipe(void **state)
{
    (void)state;
    int fd = make_fd();
    MojoHandle a, b, h = wrap(fd);
    cmojo_test_make_pipe(&a, &b);
    assert_int_equal(write_with(a, &h, 1), MOJO_RESULT_OK);
    cmojo_test_close_ok(b); /* the message dies unread */
    cmojo_test_close_ok(a);
    assert_false(fd_open(fd));
}

static void a_read_message_destroyed_closes_its_fd(void **state)
{
    (void)state;
    int fd = make_fd();
    MojoHandle a, b, h = wrap(fd);
    cmojo_test_make_pipe(&a, &b);
    assert_int_equal(write_with(a, &h, 1), MOJO_RESULT_OK);
    MojoMessageHandle m;
    assert_int_equal(MojoReadMessage(b, NULL, &m), MOJO_RESULT_OK);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    assert_false(fd_open(fd));
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

static void a_failed_write_gives_the_handle_back(void **state)
{
    (void)state;
    int fd = make_fd();
    MojoHandle a, b, h = wrap(fd);
    cmojo_test_make_pipe(&a, &b);
    cmojo_test_close_ok(b);
    assert_int_equal(write_with(a, &h, 1), MOJO_RESULT_FAILED_PRECONDITION);
    assert_int_equal(unwrap(h), fd); /* usable again, same fd */
    close(fd);
    cmojo_test_close_ok(a);
}

static void a_handle_in_transit_is_busy(void **state)
{
    (void)state;
    int fd = make_fd();
    MojoHandle h = wrap(fd);
    MojoMessageHandle m;
    assert_int_equal(MojoCreateMessage(NULL, &m), MOJO_RESULT_OK);
    assert_int_equal(MojoAppendMessageData(m, 0, &h, 1, NULL, NULL, NULL), MOJO_RESULT_OK);
    struct MojoPlatformHandle out = {sizeof(out), 0, 0};
    assert_int_equal(MojoUnwrapPlatformHandle(h, NULL, &out), MOJO_RESULT_BUSY);
    assert_int_equal(MojoClose(h), MOJO_RESULT_BUSY);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK); /* closes it */
    assert_false(fd_open(fd));
}

static void at_most_253_fds_per_message(void **state)
{
    (void)state;
    enum { N = CMOJO_MAX_FDS_PER_FRAME + 1 };
    MojoHandle hs[N];
    int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = make_fd();
        hs[i] = wrap(fds[i]);
    }
    MojoHandle a, b;
    cmojo_test_make_pipe(&a, &b);
    /* 254 at once: refused, every handle still usable. */
    assert_int_equal(write_with(a, hs, N), MOJO_RESULT_RESOURCE_EXHAUSTED);
    /* 253 plus 1 appended later: the second append is refused. */
    MojoMessageHandle m;
    assert_int_equal(MojoCreateMessage(NULL, &m), MOJO_RESULT_OK);
    assert_int_equal(MojoAppendMessageData(m, 0, hs, N - 1, NULL, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(MojoAppendMessageData(m, 0, hs + N - 1, 1, NULL, NULL, NULL),
                     MOJO_RESULT_RESOURCE_EXHAUSTED);
    struct MojoAppendMessageDataOptions commit = {sizeof(commit),
                                                  MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE};
    assert_int_equal(MojoAppendMessageData(m, 0, NULL, 0, &commit, NULL, NULL), MOJO_RESULT_OK);
    assert_int_equal(MojoWriteMessage(a, m, NULL), MOJO_RESULT_OK);
    assert_int_equal(MojoReadMessage(b, NULL, &m), MOJO_RESULT_OK);
    uint32_t n = 0;
    assert_int_equal(MojoGetMessageData(m, NULL, NULL, NULL, NULL, &n),
                     MOJO_RESULT_RESOURCE_EXHAUSTED);
    assert_int_equal(n, N - 1);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
    for (int i = 0; i < N - 1; i++)
        assert_false(fd_open(fds[i]));
    cmojo_test_close_ok(hs[N - 1]);
    cmojo_test_close_ok(a);
    cmojo_test_close_ok(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, cmojo_core_setup, cmojo_core_teardown)
        T(wrap_then_unwrap_gives_the_same_fd),
        T(closing_the_handle_closes_the_fd),
        T(bad_arguments_are_refused_and_leave_the_fd_alone),
        T(a_wrapped_fd_travels_through_a_pipe),
        T(an_unread_message_closes_its_fd_with_the_pipe),
        T(a_read_message_destroyed_closes_its_fd),
        T(a_failed_write_gives_the_handle_back),
        T(a_handle_in_transit_is_busy),
        T(at_most_253_fds_per_message),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
