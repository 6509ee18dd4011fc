/*
 * The multi-node simulator as a test: thousands of seeded scenarios of 4 to 6
 * ports nodes (pipes created, written, read, moved between nodes inside
 * messages while messages are in flight, merged, closed, nodes killed), each
 * checked against a model of every pipe. Plus proofs that the simulator is
 * deterministic and that its checker does catch broken delivery.
 *
 * Links tools/sim (cmojo_sim). SIM_TEST_SCENARIOS in the environment
 * overrides the scenario count (e.g. 20000 for a soak run); the first seed is
 * SIM_TEST_SEED (default 1). A failure prints the seed, the last trace lines
 * and the command that replays it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmojo_test.h"
#include "sim.h"

/*
 * 2000 scenarios take a few seconds in a plain build and stay well inside
 * the CTest timeout under TSan; the sanitizers do not change the count.
 */
#define DEFAULT_SCENARIOS 2000u

/* Invariants 1-4 of DESIGN.md hold in every scenario. */
static void test_random_scenarios_hold_every_invariant(void **state)
{
    (void)state;
    uint64_t n = cmojo_test_env_u64("SIM_TEST_SCENARIOS", DEFAULT_SCENARIOS);
    uint64_t seed = cmojo_test_env_u64("SIM_TEST_SEED", 1);
    sim_options opt;
    sim_options_init(&opt);
    sim_result total;
    uint64_t failed = sim_run_scenarios(seed, n, &opt, &total);
    printf("%llu scenarios: %llu messages, %llu ends carried, %llu merges, %llu kills, "
           "%llu events delivered\n",
           (unsigned long long)n, (unsigned long long)total.messages_sent,
           (unsigned long long)total.transfers, (unsigned long long)total.merges,
           (unsigned long long)total.kills, (unsigned long long)total.events_delivered);
    printf("%llu passed, %llu failed\n", (unsigned long long)(n - failed),
           (unsigned long long)failed);
    assert_int_equal(failed, 0);
    /* The scenarios really exercise what they claim to. */
    if (n >= 100) {
        assert_true(total.transfers > n);
        assert_true(total.merges > 0);
        assert_true(total.kills > 0);
        assert_true(total.proxies_collapsed > 0);
        assert_true(total.max_hops >= 3);
    }
}

/* Without kills nothing is lost, so the model is exact; also with more nodes. */
static void test_scenarios_without_kills_on_eight_nodes(void **state)
{
    (void)state;
    sim_options opt;
    sim_options_init(&opt);
    opt.nodes = 8;
    opt.max_kills = 0;
    sim_result total;
    uint64_t n = cmojo_test_env_u64("SIM_TEST_SCENARIOS", DEFAULT_SCENARIOS) / 8 + 1;
    assert_int_equal(sim_run_scenarios(100000, n, &opt, &total), 0);
    assert_int_equal(total.kills, 0);
    assert_int_equal(total.lost_ends, 0);
}

/* A seed replays exactly: same trace, same counts. */
static void test_same_seed_gives_same_trace(void **state)
{
    (void)state;
    sim_options opt;
    sim_options_init(&opt);
    opt.quiet = true;
    for (uint64_t seed = 7; seed < 10; seed++) {
        sim_result a, b;
        int ra = sim_run_scenario(seed, &opt, &a);
        int rb = sim_run_scenario(seed, &opt, &b);
        assert_int_equal(ra, rb);
        assert_true(a.trace_hash == b.trace_hash);
        assert_true(a.events_delivered == b.events_delivered);
        assert_true(a.messages_read == b.messages_read);
        assert_true(a.steps == b.steps);
        assert_true(a.events_delivered > 0);
    }
    sim_result x, y;
    sim_run_scenario(11, &opt, &x);
    sim_run_scenario(12, &opt, &y);
    assert_true(x.trace_hash != y.trace_hash);
}

/* Runs scenarios with a checker fault until one fails; returns its reason. */
static void expect_fault_caught(sim_fault fault, const char *const *reasons)
{
    sim_options opt;
    sim_options_init(&opt);
    opt.quiet = true;
    opt.fault = fault;
    opt.max_kills = 0; /* with no kill the model is exact */
    sim_result r;
    for (uint64_t seed = 1; seed <= 20; seed++) {
        if (sim_run_scenario(seed, &opt, &r) == 0)
            continue; /* the fault never fired (no read of the right kind) */
        bool matched = false;
        for (const char *const *p = reasons; *p; p++)
            matched = matched || strstr(r.failure, *p) != NULL;
        if (!matched)
            printf("unexpected failure reason: %s\n", r.failure);
        assert_true(matched);
        assert_true(r.failed_step > 0);
        return;
    }
    fail_msg("the checker never noticed the injected fault");
}

/* The checker is able to fail: a message delivered twice is flagged. */
static void test_checker_flags_a_duplicated_message(void **state)
{
    (void)state;
    const char *const reasons[] = {"duplicate", NULL};
    expect_fault_caught(SIM_FAULT_DUPLICATE_READ, reasons);
}

/* ...a message that never reaches the checker is flagged (gap, or missing at the end). */
static void test_checker_flags_a_lost_message(void **state)
{
    (void)state;
    const char *const reasons[] = {"gap", "of the", "read 0 of", NULL};
    expect_fault_caught(SIM_FAULT_DROP_READ, reasons);
}

/* ...and two messages read out of order are flagged. */
static void test_checker_flags_a_reordered_message(void **state)
{
    (void)state;
    const char *const reasons[] = {"reorder", NULL};
    expect_fault_caught(SIM_FAULT_REORDER_READ, reasons);
}

/* The narrated showcase runs and its own checks hold. */
static void test_demo_runs_clean(void **state)
{
    (void)state;
    FILE *out = tmpfile();
    assert_non_null(out);
    assert_int_equal(sim_run_demo(out), 0);
    long len = ftell(out);
    fclose(out);
    assert_true(len > 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checker_flags_a_duplicated_message),
        cmocka_unit_test(test_checker_flags_a_lost_message),
        cmocka_unit_test(test_checker_flags_a_reordered_message),
        cmocka_unit_test(test_same_seed_gives_same_trace),
        cmocka_unit_test(test_demo_runs_clean),
        cmocka_unit_test(test_random_scenarios_hold_every_invariant),
        cmocka_unit_test(test_scenarios_without_kills_on_eight_nodes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
