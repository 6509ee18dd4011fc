/*
 * Hostile shared buffers: an invitee that speaks raw bytes on its socket
 * (as in test_hostile.c) sends an EVENT whose message envelope carries a
 * shared buffer that lies: an fd smaller than the size its state claims, an
 * fd that is no memfd, a memfd not sealed against shrinking (which the child
 * then truncates, so a mapping of it would fault with SIGBUS), a READ_ONLY
 * claim for memory anyone can write, and malformed states.
 *
 * Pinned, for each: the parent survives (no SIGBUS, no crash), refuses the
 * buffer before mapping it and disconnects the child; the error handler gets
 * DISCONNECTED and a reason naming the shared buffer; every fd the child sent
 * is closed (the parent's fd count returns to where it was, the child sees
 * EPIPE on its pipe and no memfd of its own left in the parent's fd table);
 * a well-behaved child of the same parent keeps working throughout. A
 * control case sends a valid buffer in the same event, which gets past the
 * buffer checks and is refused later, by the ports layer, for the port it
 * carries.
 */
#include "cmojo_test.h"
#include "mp.h"
#include "raw_peer.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "channel/frame.h"
#include "cmojo_wire.h"
#include "core/core.h"
#include "core/dispatcher.h"
#include "core/shared_buffer.h"
#include "mojo/public/c/system/core.h"
#include "node/node_wire.h"
#include "ports/event.h"

#define CHECK CMOJO_MP_CHECK
#define CHECK_RESULT CMOJO_MP_CHECK_RESULT

static const char *const ctl_name[] = {"ctl"};

/* ------------------------------------------------------------------------ */
/* The hostile child (raw socket work: raw_peer.h).                         */

/* Whether the parent holds an fd to a memfd named `name` (its fd table, via /proc). */
static bool parent_holds(const char *name)
{
    char dir_path[64], target[512];
    snprintf(dir_path, sizeof(dir_path), "/proc/%d/fd", (int)getppid());
    DIR *dir = opendir(dir_path);
    CHECK(dir != NULL);
    bool found = false;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        ssize_t n = readlinkat(dirfd(dir), e->d_name, target, sizeof(target) - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        if (strstr(target, name))
            found = true;
    }
    closedir(dir);
    return found;
}

static int memfd_named(const char *name, off_t size, int seals)
{
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, size) == 0);
    if (seals)
        CHECK(fcntl(fd, F_ADD_SEALS, seals) == 0);
    return fd;
}

/*
 * Scenario `arg`. Exit codes: 0 ok; 2 no INVITE; 3 the parent never
 * disconnected us; 4 the parent kept the fd we sent; 5 unknown scenario.
 */
static int role_hostile(const int *fds, size_t n, const char *arg)
{
    int s = fds[0];
    const ports_name me = {0x0123456789abcdefull, 0xfedcba9876543210ull};
    char name[64];
    uint8_t state[64];
    uint32_t state_size = CORE_SHARED_BUFFER_STATE_SIZE;
    core_shared_buffer_state st = {
        .num_bytes = 4096,
        .access_mode = MOJO_PLATFORM_SHARED_MEMORY_REGION_ACCESS_MODE_WRITABLE,
        .guid = {0x42, 0x43},
    };
    int fd = -1, pipe_write = -1;
    bool truncate_after = false;

    (void)n;
    signal(SIGPIPE, SIG_IGN);
    snprintf(name, sizeof(name), "cmojo-hostile-%d", (int)getpid());
    if (cmojo_raw_read_frame(s) != NODE_MSG_INVITE)
        return 2;

    if (strcmp(arg, "valid") == 0) {
        fd = memfd_named(name, 4096, F_SEAL_SHRINK | F_SEAL_GROW);
    } else if (strcmp(arg, "smaller") == 0) {
        fd = memfd_named(name, 4096, F_SEAL_SHRINK | F_SEAL_GROW);
        st.num_bytes = 1024 * 1024;
    } else if (strcmp(arg, "not_memfd") == 0) {
        int p[2];
        CHECK(pipe2(p, O_CLOEXEC) == 0);
        fd = p[0];
        pipe_write = p[1];
    } else if (strcmp(arg, "no_shrink_seal") == 0) {
        fd = memfd_named(name, 4096, F_SEAL_GROW);
        truncate_after = true; /* what a mapping of it would fault on */
    } else if (strcmp(arg, "read_only_unsealed") == 0) {
        fd = memfd_named(name, 4096, F_SEAL_SHRINK | F_SEAL_GROW);
        st.access_mode = MOJO_PLATFORM_SHARED_MEMORY_REGION_ACCESS_MODE_READ_ONLY;
    } else if (strcmp(arg, "garbage_state") == 0 || strcmp(arg, "bad_padding") == 0 ||
               strcmp(arg, "short_state") == 0 || strcmp(arg, "unknown_mode") == 0 ||
               strcmp(arg, "zero_size") == 0) {
        fd = memfd_named(name, 4096, F_SEAL_SHRINK | F_SEAL_GROW);
    } else {
        return 5;
    }
    core_shared_buffer_state_write(state, &st);
    if (strcmp(arg, "garbage_state") == 0) {
        memset(state, 0xa5, sizeof(state));
        wire_store_u32(state + 12, 0); /* so the size is what gets it refused */
    } else if (strcmp(arg, "zero_size") == 0) {
        wire_store_u64(state, 0);
    }
    if (strcmp(arg, "bad_padding") == 0)
        state[13] = 1;
    else if (strcmp(arg, "short_state") == 0)
        state_size = 24;
    else if (strcmp(arg, "unknown_mode") == 0)
        wire_store_u32(state + 8, 7);

    cmojo_raw_send_accept(s, &me);
    cmojo_raw_send_foreign_port_event(s, CORE_DISPATCHER_SHARED_BUFFER, state, state_size, &fd, 1);
    if (truncate_after)
        CHECK(ftruncate(fd, 0) == 0);
    CHECK(close(fd) == 0); /* the parent holds the only copy now */

    if (!cmojo_raw_wait_eof(s)) {
        fprintf(stderr, "hostile buffer child (%s): the parent never disconnected us\n", arg);
        return 3;
    }
    int64_t deadline = cmojo_mp_now_ms() + CMOJO_RAW_TIMEOUT_MS;
    if (pipe_write >= 0) {
        while (write(pipe_write, "x", 1) == 1) {
            if (cmojo_mp_now_ms() >= deadline)
                return 4;
            cmojo_mp_sleep_ms(2);
        }
        CHECK(errno == EPIPE);
        CHECK(close(pipe_write) == 0);
    } else {
        while (parent_holds(name)) {
            if (cmojo_mp_now_ms() >= deadline) {
                fprintf(stderr, "hostile buffer child (%s): the parent kept our memfd\n", arg);
                return 4;
            }
            cmojo_mp_sleep_ms(2);
        }
    }
    CHECK(close(s) == 0);
    CHECK(cmojo_mp_only_fds("hostile buffer child", NULL, 0));
    return 0;
}

/* ------------------------------------------------------------------------ */

/* Runs `scenario`; the error handler's reason must contain `reason`. */
static void run_hostile(const char *scenario, const char *reason)
{
    MojoHandle attached;
    cmojo_mp_witness good;
    cmojo_mp_child bad;

    cmojo_mp_reset_logs();
    cmojo_mp_witness_start(&good, 0);
    int fds_before = cmojo_test_count_open_fds();

    cmojo_mp_invite("hostile", scenario, ctl_name, 1, &attached, &bad, 1);
    cmojo_mp_witness_ping(&good, 2);
    assert_true(cmojo_mp_wait_disconnected(1, CMOJO_MP_IO_TIMEOUT_MS));
    cmojo_mp_witness_ping(&good, 3);
    cmojo_mp_log_state log = cmojo_mp_log(1);
    fprintf(stderr, "hostile buffer %s: %d report(s), last: \"%s\"\n", scenario, log.reports,
            log.last);
    assert_int_equal(log.empty_messages, 0);
    assert_non_null(strstr(log.last, reason));

    assert_true(cmojo_mp_wait_exit(&bad, CMOJO_MP_CHILD_TIMEOUT_MS, 0));
    cmojo_mp_expect_peer_closed(attached);
    assert_int_equal(MojoClose(attached), MOJO_RESULT_OK);
    assert_true(cmojo_mp_wait_fd_count(fds_before, CMOJO_MP_SETTLE_MS));
    assert_true(cmojo_mp_wait_counts("parent", 1, 1, CMOJO_MP_SETTLE_MS));
    assert_int_equal(core_shared_buffer_debug_mapping_count(), 0);

    cmojo_mp_witness_finish(&good, 4);
}

static void test_a_valid_buffer_passes_the_checks(void **state)
{
    (void)state;
    run_hostile("valid", "ports protocol violation");
}

static void test_an_fd_smaller_than_claimed(void **state)
{
    (void)state;
    run_hostile("smaller", "shared buffer memfd smaller than its claimed size");
}

static void test_an_fd_that_is_not_a_memfd(void **state)
{
    (void)state;
    run_hostile("not_memfd", "shared buffer fd is not a sealable memfd");
}

static void test_a_memfd_that_can_shrink(void **state)
{
    (void)state;
    run_hostile("no_shrink_seal", "shared buffer memfd not sealed against shrinking");
}

static void test_a_read_only_claim_without_the_seal(void **state)
{
    (void)state;
    run_hostile("read_only_unsealed", "read-only shared buffer memfd not sealed against writing");
}

static void test_a_garbage_state(void **state)
{
    (void)state;
    run_hostile("garbage_state", "shared buffer larger than CMOJO_MAX_SHARED_BUFFER_SIZE");
}

static void test_nonzero_padding(void **state)
{
    (void)state;
    run_hostile("bad_padding", "shared buffer state with nonzero reserved bits");
}

static void test_a_short_state(void **state)
{
    (void)state;
    run_hostile("short_state", "shared buffer state of the wrong size");
}

static void test_a_zero_size(void **state)
{
    (void)state;
    run_hostile("zero_size", "shared buffer of 0 bytes");
}

static void test_an_unknown_mode(void **state)
{
    (void)state;
    run_hostile("unknown_mode", "shared buffer with an unknown access mode");
}

static const cmojo_mp_role roles[] = {
    {CMOJO_MP_WITNESS_ROLE, cmojo_mp_role_witness},
    {"hostile", role_hostile},
    {NULL, NULL},
};

#define HOSTILE_TEST(fn)                                                                           \
    cmocka_unit_test_setup_teardown(fn, cmojo_mp_core_setup, cmojo_mp_core_teardown)

int main(int argc, char **argv)
{
    cmojo_mp_child_dispatch(argc, argv, roles);

    const struct CMUnitTest tests[] = {
        HOSTILE_TEST(test_a_valid_buffer_passes_the_checks),
        HOSTILE_TEST(test_an_fd_smaller_than_claimed),
        HOSTILE_TEST(test_an_fd_that_is_not_a_memfd),
        HOSTILE_TEST(test_a_memfd_that_can_shrink),
        HOSTILE_TEST(test_a_read_only_claim_without_the_seal),
        HOSTILE_TEST(test_a_garbage_state),
        HOSTILE_TEST(test_nonzero_padding),
        HOSTILE_TEST(test_a_short_state),
        HOSTILE_TEST(test_a_zero_size),
        HOSTILE_TEST(test_an_unknown_mode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
