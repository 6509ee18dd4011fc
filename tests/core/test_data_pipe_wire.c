/*
 * The data pipe's defences against its peer (src/core/data_pipe_wire.h):
 * control messages, counts, serialised ends and ring fds, each lie rejected
 * and each rejection leaving the state as it was.
 */
#include "cmojo_test.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cmojo_limits.h"
#include "cmojo_wire.h"
#include "core/data_pipe_wire.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

static void control_messages(void **state)
{
    (void)state;
    uint8_t buf[DP_CONTROL_SIZE + 1];
    uint32_t cmd = 0, n = 0;
    dp_control_build(buf, DP_CONTROL_DATA_WAS_WRITTEN, 4096);
    assert_int_equal(dp_control_parse(buf, DP_CONTROL_SIZE, 0, &cmd, &n), 0);
    assert_int_equal(cmd, DP_CONTROL_DATA_WAS_WRITTEN);
    assert_int_equal(n, 4096);
    dp_control_build(buf, DP_CONTROL_DATA_WAS_READ, 1);
    assert_int_equal(dp_control_parse(buf, DP_CONTROL_SIZE, 0, &cmd, &n), 0);
    assert_int_equal(cmd, DP_CONTROL_DATA_WAS_READ);

    cmd = n = 99;
    assert_int_equal(dp_control_parse(buf, DP_CONTROL_SIZE - 1, 0, &cmd, &n), -1);
    assert_int_equal(dp_control_parse(buf, DP_CONTROL_SIZE + 1, 0, &cmd, &n), -1);
    assert_int_equal(dp_control_parse(buf, DP_CONTROL_SIZE, 1, &cmd, &n), -1); /* handles */
    dp_control_build(buf, 0, 1);
    assert_int_equal(dp_control_parse(buf, DP_CONTROL_SIZE, 0, &cmd, &n), -1);
    dp_control_build(buf, 3, 1);
    assert_int_equal(dp_control_parse(buf, DP_CONTROL_SIZE, 0, &cmd, &n), -1);
    assert_int_equal(cmd, 99); /* untouched on rejection */
    assert_int_equal(n, 99);
}

static void consumer_counts(void **state)
{
    (void)state;
    dp_state s = {.element_size = 4, .capacity = 64, .offset = 8, .count = 16};
    dp_state before = s;
    assert_int_equal(dp_consumer_apply_written(&s, 0), -1);
    assert_int_equal(dp_consumer_apply_written(&s, 6), -1);  /* not whole elements */
    assert_int_equal(dp_consumer_apply_written(&s, 52), -1); /* 16 + 52 > 64 */
    assert_int_equal(dp_consumer_apply_written(&s, UINT32_MAX - 3), -1);
    assert_int_equal(dp_consumer_apply_written(&s, 0xfffffff0u), -1); /* wraps u32 */
    assert_memory_equal(&s, &before, sizeof(s));
    assert_int_equal(dp_consumer_apply_written(&s, 48), 0); /* exactly full */
    assert_int_equal(s.count, 64);
    assert_int_equal(s.offset, 8); /* offsets are the end's own business */
    assert_int_equal(dp_consumer_apply_written(&s, 4), -1);
    assert_int_equal(s.count, 64);
}

static void producer_counts(void **state)
{
    (void)state;
    /* 40 of 64 bytes free: at most 24 can have been read. */
    dp_state s = {.element_size = 8, .capacity = 64, .offset = 24, .count = 40};
    dp_state before = s;
    assert_int_equal(dp_producer_apply_read(&s, 0), -1);
    assert_int_equal(dp_producer_apply_read(&s, 12), -1);
    assert_int_equal(dp_producer_apply_read(&s, 32), -1);
    assert_int_equal(dp_producer_apply_read(&s, 0xfffffff8u), -1);
    assert_memory_equal(&s, &before, sizeof(s));
    assert_int_equal(dp_producer_apply_read(&s, 16), 0);
    assert_int_equal(dp_producer_apply_read(&s, 8), 0);
    assert_int_equal(s.count, 64);
    assert_int_equal(dp_producer_apply_read(&s, 8), -1); /* nothing left to have read */
}

static void serialised_states(void **state)
{
    (void)state;
    dp_state s = {.element_size = 3, .capacity = 300, .offset = 297, .count = 150};
    uint8_t buf[DP_STATE_SIZE + 8];
    dp_state_write(&s, buf);
    dp_state out;
    const char *why = NULL;
    assert_int_equal(dp_state_read(buf, DP_STATE_SIZE, &out, &why), 0);
    assert_memory_equal(&out, &s, sizeof(s));
    assert_int_equal(dp_state_read(buf, DP_STATE_SIZE - 1, &out, &why), -1);
    assert_non_null(why);
    assert_int_equal(dp_state_read(buf, DP_STATE_SIZE + 8, &out, &why), -1);

    static const dp_state lies[] = {
        {0, 300, 0, 0},                               /* element size 0 */
        {3, 0, 0, 0},                                 /* no capacity */
        {3, 301, 0, 0},                               /* not whole elements */
        {3, 300, 300, 0},                             /* offset at the end */
        {3, 300, 301, 0},                             /* offset beyond */
        {3, 300, 1, 0},                               /* offset inside an element */
        {3, 300, 0, 303},                             /* more than the ring holds */
        {3, 300, 0, 2},                               /* a partial element */
        {1, CMOJO_MAX_DATA_PIPE_CAPACITY + 1u, 0, 0}, /* too big */
        {4, 8, UINT32_MAX - 3, 0},                    /* huge offset */
        {UINT32_MAX, UINT32_MAX, 0, UINT32_MAX},      /* everything huge */
    };
    for (size_t i = 0; i < sizeof(lies) / sizeof(lies[0]); i++) {
        dp_state_write(&lies[i], buf);
        why = NULL;
        out = s;
        assert_int_equal(dp_state_read(buf, DP_STATE_SIZE, &out, &why), -1);
        assert_non_null(why);
        assert_memory_equal(&out, &s, sizeof(s));
        assert_false(dp_state_valid(&lies[i]));
    }
}

static int memfd(size_t size, unsigned seals)
{
    int fd = memfd_create("test-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)size), 0);
    if (seals)
        assert_int_equal(fcntl(fd, F_ADD_SEALS, seals), 0);
    return fd;
}

/* fd opened anew through /proc with `flags`; fd itself is closed. */
static int reopen(int fd, int flags)
{
    char path[32];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    int again = open(path, flags | O_CLOEXEC);
    assert_true(again >= 0);
    close(fd);
    return again;
}

static void ring_fds(void **state)
{
    (void)state;
    const char *why;
    int good = memfd(4096, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    assert_int_equal(dp_ring_fd_check(good, 4096, true, &why), 0);
    assert_int_equal(dp_ring_fd_check(good, 4095, true, &why), -1); /* size must match */
    assert_int_equal(dp_ring_fd_check(good, 8192, true, &why), -1);
    /* A consumer's ring must be read-only: this one would let it write. */
    why = NULL;
    assert_int_equal(dp_ring_fd_check(good, 4096, false, &why), -1);
    assert_non_null(strstr(why, "consumer could write"));
    int good_ro = reopen(good, O_RDONLY);
    assert_int_equal(dp_ring_fd_check(good_ro, 4096, false, &why), 0);
    assert_int_equal(dp_ring_fd_check(good_ro, 4095, false, &why), -1);
    assert_int_equal(dp_ring_fd_check(good_ro, 8192, false, &why), -1);
    /* ... and a producer's writable. */
    assert_int_equal(dp_ring_fd_check(good_ro, 4096, true, &why), -1);
    assert_non_null(strstr(why, "producer cannot write"));
    int wo = reopen(good_ro, O_WRONLY);
    assert_int_equal(dp_ring_fd_check(wo, 4096, false, &why), -1);
    assert_int_equal(dp_ring_fd_check(wo, 4096, true, &why), -1);
    close(wo);

    int shrinkable = memfd(4096, F_SEAL_GROW);
    assert_int_equal(dp_ring_fd_check(shrinkable, 4096, false, &why), -1);
    close(shrinkable);

    int unsealable = memfd(4096, 0);
    assert_int_equal(dp_ring_fd_check(unsealable, 4096, false, &why), -1);
    close(unsealable);

    /* Write-sealed: fine to read from, useless to a producer. */
    int sealed = memfd(4096, F_SEAL_SHRINK | F_SEAL_FUTURE_WRITE);
    assert_int_equal(dp_ring_fd_check(sealed, 4096, true, &why), -1);
    sealed = reopen(sealed, O_RDONLY);
    assert_int_equal(dp_ring_fd_check(sealed, 4096, false, &why), 0);
    close(sealed);

    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    assert_int_equal(dp_ring_fd_check(p[0], 4096, false, &why), -1); /* not a memfd */
    assert_non_null(why);
    close(p[0]);
    close(p[1]);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, cmojo_test_fd_setup, cmojo_test_fd_teardown)
    const struct CMUnitTest tests[] = {
        T(control_messages),  T(consumer_counts), T(producer_counts),
        T(serialised_states), T(ring_fds),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
