/*
 * The ports simulator's scenarios over real channels (tools/sim, transport
 * SIM_TRANSPORT_CHANNELS): every event between nodes is a frame written to a
 * Unix socketpair by src/channel, read and parsed by the channel on a real IO
 * thread and accepted there, while the scenario's actions keep calling the
 * same ports nodes from this thread. The same generator, model and checks as
 * test_sim: every message read exactly once and in order, PEER_CLOSED only
 * after the last message sent, routes collapsed to two ports, nothing left
 * once everything is closed -- here with two threads inside the ports layer
 * and node kills that close sockets.
 *
 * The channel syscalls are wrapped (channel_sys_sendmsg/recvmsg) to count
 * what really crossed the kernel, so the tests can prove that events did.
 *
 * SIM_CHANNELS_SCENARIOS in the environment overrides the main scenario
 * count; SIM_CHANNELS_SEED the first seed (default 1). Interleavings come
 * from the OS, so a failing seed may need a few reruns to reproduce (the
 * report says how).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "channel/channel.h"
#include "cmojo_test.h"
#include "sim.h"

/*
 * The whole test (this many default scenarios, an eighth as many each
 * without kills and with two kills) takes 9-12 s in a plain build, 19-25 s
 * with ASan and 36-66 s with TSan on two cores (alone, or beside the rest of
 * the suite under ctest -j2): well inside CTest's timeout. The IO thread is
 * woken for every event and a quarter of the scenarios stall it on purpose,
 * so this is slower per scenario than test_sim.
 */
#define DEFAULT_SCENARIOS 1200u

/* What crossed the kernel, counted by the syscall wrappers below. */
static _Atomic uint64_t sys_sent_bytes, sys_recv_bytes, sys_sendmsg_calls, sys_eagain;

static ssize_t counting_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    ssize_t n = sendmsg(fd, msg, flags);
    if (n > 0) {
        atomic_fetch_add(&sys_sent_bytes, (uint64_t)n);
        atomic_fetch_add(&sys_sendmsg_calls, 1);
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        atomic_fetch_add(&sys_eagain, 1);
    }
    return n;
}

static ssize_t counting_recvmsg(int fd, struct msghdr *msg, int flags)
{
    ssize_t n = recvmsg(fd, msg, flags);
    if (n > 0)
        atomic_fetch_add(&sys_recv_bytes, (uint64_t)n);
    return n;
}

static void reset_sys_counts(void)
{
    atomic_store(&sys_sent_bytes, 0);
    atomic_store(&sys_recv_bytes, 0);
    atomic_store(&sys_sendmsg_calls, 0);
    atomic_store(&sys_eagain, 0);
}

static void channel_options(sim_options *opt)
{
    sim_options_init(opt);
    opt->transport = SIM_TRANSPORT_CHANNELS;
}

static void print_totals(const char *what, uint64_t n, uint64_t failed, const sim_result *t)
{
    printf("%s: %llu scenarios, %llu failed; %llu messages, %llu ends carried, %llu merges, "
           "%llu kills\n",
           what, (unsigned long long)n, (unsigned long long)failed,
           (unsigned long long)t->messages_sent, (unsigned long long)t->transfers,
           (unsigned long long)t->merges, (unsigned long long)t->kills);
    printf("  frames: %llu written, %llu read, %llu lost to kills (%llu / %llu / %llu bytes); "
           "%llu events on the IO thread, %llu during an action, at most %llu in flight\n",
           (unsigned long long)t->channel_frames_sent,
           (unsigned long long)t->channel_frames_received,
           (unsigned long long)t->channel_frames_lost, (unsigned long long)t->channel_bytes_sent,
           (unsigned long long)t->channel_bytes_received, (unsigned long long)t->channel_bytes_lost,
           (unsigned long long)t->io_thread_events, (unsigned long long)t->overlapped_events,
           (unsigned long long)t->max_in_flight);
    printf("  kernel: %llu bytes sent in %llu sendmsg calls (%llu EAGAIN), %llu bytes received\n",
           (unsigned long long)atomic_load(&sys_sent_bytes),
           (unsigned long long)atomic_load(&sys_sendmsg_calls),
           (unsigned long long)atomic_load(&sys_eagain),
           (unsigned long long)atomic_load(&sys_recv_bytes));
}

/*
 * Every frame written is read and parsed, or lost with a killed node --
 * exactly, in frames and in bytes -- and what was parsed really came through
 * recvmsg, after going through sendmsg.
 */
static void assert_frames_accounted(const sim_result *t)
{
    assert_true(t->channel_frames_sent > 0);
    assert_true(t->channel_frames_sent == t->channel_frames_received + t->channel_frames_lost);
    assert_true(t->channel_bytes_sent == t->channel_bytes_received + t->channel_bytes_lost);
    assert_true(atomic_load(&sys_recv_bytes) >= t->channel_bytes_received);
    assert_true(atomic_load(&sys_sent_bytes) >= atomic_load(&sys_recv_bytes));
    /* Every event the nodes accepted was accepted on the IO thread. */
    assert_true(t->io_thread_events == t->events_delivered);
    assert_true(t->events_delivered == t->channel_frames_received + t->self_events);
}

/* DESIGN.md's invariants hold in every default scenario (4-6 nodes, kills, merges). */
static void test_channel_scenarios_hold_every_invariant(void **state)
{
    (void)state;
    uint64_t n = cmojo_test_env_u64("SIM_CHANNELS_SCENARIOS", DEFAULT_SCENARIOS);
    uint64_t seed = cmojo_test_env_u64("SIM_CHANNELS_SEED", 1);
    sim_options opt;
    channel_options(&opt);
    sim_result total;
    reset_sys_counts();
    uint64_t failed = sim_run_scenarios(seed, n, &opt, &total);
    print_totals("default", n, failed, &total);
    assert_int_equal(failed, 0);
    assert_frames_accounted(&total);
    if (n >= 100) {
        /* The scenarios exercise what they claim to... */
        assert_true(total.transfers > n);
        assert_true(total.merges > 0);
        assert_true(total.kills > 0);
        assert_true(total.proxies_collapsed > 0);
        assert_true(total.max_hops >= 3);
        /* ...with deliveries on the IO thread while this thread was inside an action, */
        assert_true(total.overlapped_events > 0);
        /* and, in the scenarios with minimal socket buffers, full sockets (write queues). */
        assert_true(atomic_load(&sys_eagain) > 0);
    }
}

/*
 * Without kills nothing may be lost: every byte a channel wrote crossed the
 * kernel and was read back, and every frame was parsed -- on 6 nodes.
 */
static void test_channel_scenarios_without_kills_lose_nothing(void **state)
{
    (void)state;
    sim_options opt;
    channel_options(&opt);
    opt.nodes = 6;
    opt.max_kills = 0;
    uint64_t n = cmojo_test_env_u64("SIM_CHANNELS_SCENARIOS", DEFAULT_SCENARIOS) / 8 + 1;
    sim_result total;
    reset_sys_counts();
    uint64_t failed = sim_run_scenarios(100000, n, &opt, &total);
    print_totals("no kills", n, failed, &total);
    assert_int_equal(failed, 0);
    assert_frames_accounted(&total);
    assert_int_equal(total.kills, 0);
    assert_int_equal(total.lost_ends, 0);
    assert_true(total.channel_frames_lost == 0 && total.channel_bytes_lost == 0);
    assert_true(total.channel_frames_received == total.channel_frames_sent);
    assert_true(atomic_load(&sys_sent_bytes) == total.channel_bytes_sent);
    assert_true(atomic_load(&sys_recv_bytes) == total.channel_bytes_sent);
}

/*
 * Two of six nodes die in every scenario while events to and from them are
 * in flight: their sockets close, the survivors read what they wrote, see
 * EOF, and every pipe through them ends cleanly (peer closed, nothing left).
 */
static void test_channel_scenarios_with_two_kills_each(void **state)
{
    (void)state;
    sim_options opt;
    channel_options(&opt);
    opt.nodes = 6;
    opt.max_kills = 2;
    uint64_t n = cmojo_test_env_u64("SIM_CHANNELS_SCENARIOS", DEFAULT_SCENARIOS) / 8 + 1;
    sim_result total;
    reset_sys_counts();
    uint64_t failed = sim_run_scenarios(200000, n, &opt, &total);
    print_totals("two kills", n, failed, &total);
    assert_int_equal(failed, 0);
    assert_frames_accounted(&total);
    assert_int_equal(total.kills, 2 * n);
    assert_true(total.lost_ends > 0);
    assert_true(total.peer_closed_seen > 0);
}

/* Runs channel scenarios with a checker fault until one fails; returns its reason. */
static void expect_fault_caught(sim_fault fault, const char *reason)
{
    sim_options opt;
    channel_options(&opt);
    opt.quiet = true;
    opt.fault = fault;
    opt.max_kills = 0; /* with no kill the model is exact */
    sim_result r;
    for (uint64_t seed = 1; seed <= 20; seed++) {
        if (sim_run_scenario(seed, &opt, &r) == 0)
            continue; /* the fault never fired (no read of the right kind) */
        if (!strstr(r.failure, reason))
            printf("unexpected failure reason: %s\n", r.failure);
        assert_non_null(strstr(r.failure, reason));
        assert_true(r.failed_step > 0);
        return;
    }
    fail_msg("the checker never noticed the injected fault");
}

/* The checker still bites over channels: a duplicate and a reorder are flagged. */
static void test_checker_flags_faults_over_channels(void **state)
{
    (void)state;
    expect_fault_caught(SIM_FAULT_DUPLICATE_READ, "duplicate");
    expect_fault_caught(SIM_FAULT_REORDER_READ, "reorder");
}

int main(void)
{
    /* Installed before any channel exists, as channel.h asks. */
    channel_sys_sendmsg = counting_sendmsg;
    channel_sys_recvmsg = counting_recvmsg;
    /* Each test also fails if it leaves a socket (or any fd) open. */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_checker_flags_faults_over_channels,
                                        cmojo_test_fd_setup, cmojo_test_fd_teardown),
        cmocka_unit_test_setup_teardown(test_channel_scenarios_without_kills_lose_nothing,
                                        cmojo_test_fd_setup, cmojo_test_fd_teardown),
        cmocka_unit_test_setup_teardown(test_channel_scenarios_with_two_kills_each,
                                        cmojo_test_fd_setup, cmojo_test_fd_teardown),
        cmocka_unit_test_setup_teardown(test_channel_scenarios_hold_every_invariant,
                                        cmojo_test_fd_setup, cmojo_test_fd_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
