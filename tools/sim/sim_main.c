/*
 * sim: run ports simulator scenarios from the command line.
 *
 *   sim --scenarios N [--seed S] [--nodes K] [--trace] [--demo]
 *       [--actions MIN[:MAX]] [--no-kill] [--no-merge] [--no-acks] [--quiet]
 *       [--kills K] [--policy uniform|sticky|starve] [--channels] [--lossy-kills]
 *
 * Scenario i runs with seed S + i. Every failure prints its seed, step and
 * the last trace lines; `sim --seed S --trace` replays it exactly. With
 * --channels events cross real sockets and an IO thread (see sim.h); then a
 * seed no longer replays a scenario exactly. The last
 * line is always "<passed> passed, <failed> failed"; the exit status is 0
 * only when nothing failed. With SIM_DEBUG_SENDS=1 in the environment the
 * trace also shows every event as it is sent (outside the trace hash); with
 * SIM_DEBUG_DUMP=1 every live node's ports are dumped ahead of a failure report.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ports/event.h"
#include "sim.h"

static void usage(FILE *f)
{
    fputs("usage: sim [--scenarios N] [--seed S] [--nodes K] [--trace] [--demo]\n"
          "           [--actions MIN[:MAX]] [--no-kill] [--no-merge] [--no-acks] [--quiet]\n"
          "           [--kills K] [--policy uniform|sticky|starve] [--channels]\n"
          "           [--lossy-kills]\n"
          "  --scenarios N  scenarios to run (default 1); scenario i uses seed S+i\n"
          "  --seed S       first seed (default: from the clock, printed)\n"
          "  --nodes K      nodes per scenario (default: random 4..6)\n"
          "  --trace        print every action and delivered event\n"
          "  --demo         run the narrated showcase scenario and exit\n"
          "  --actions A:B  user actions per scenario (default 200:600)\n"
          "  --no-kill      never kill a node\n"
          "  --kills K      kill exactly K nodes per scenario (at most nodes - 2)\n"
          "  --no-merge     never merge pipes\n"
          "  --no-acks      never ask for read acknowledgements\n"
          "  --policy P     how links are picked (default: chosen by the seed)\n"
          "  --channels     send events over socketpairs and channels, delivered by an\n"
          "                 IO thread while actions run (not deterministic)\n"
          "  --lossy-kills  with --channels: a killed node's unsent frames die with it\n"
          "  --quiet        print failures only as one line each\n",
          f);
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end)
        return -1;
    *out = v;
    return 0;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    sim_options opt;
    sim_options_init(&opt);
    uint64_t scenarios = 1, seed = 0, v;
    bool have_seed = false, demo = false;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *arg = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--scenarios") && arg && !parse_u64(arg, &scenarios)) {
            i++;
        } else if (!strcmp(a, "--seed") && arg && !parse_u64(arg, &seed)) {
            have_seed = true;
            i++;
        } else if (!strcmp(a, "--nodes") && arg && !parse_u64(arg, &v) && v >= 2 &&
                   v <= SIM_MAX_NODES) {
            opt.nodes = (int)v;
            i++;
        } else if (!strcmp(a, "--actions") && arg) {
            unsigned lo, hi;
            int k = sscanf(arg, "%u:%u", &lo, &hi);
            if (k < 1 || lo == 0 || lo > 1000000) {
                usage(stderr);
                return 2;
            }
            opt.min_actions = (int)lo;
            opt.max_actions = k == 2 && hi >= lo && hi <= 1000000 ? (int)hi : (int)lo;
            i++;
        } else if (!strcmp(a, "--trace")) {
            opt.trace = true;
        } else if (!strcmp(a, "--demo")) {
            demo = true;
        } else if (!strcmp(a, "--no-kill")) {
            opt.max_kills = 0;
        } else if (!strcmp(a, "--kills") && arg && !parse_u64(arg, &v) && v < SIM_MAX_NODES) {
            opt.max_kills = (int)v;
            i++;
        } else if (!strcmp(a, "--no-merge")) {
            opt.no_merges = true;
        } else if (!strcmp(a, "--no-acks")) {
            opt.no_acks = true;
        } else if (!strcmp(a, "--policy") && arg) {
            if (!strcmp(arg, "uniform"))
                opt.policy = SIM_POLICY_UNIFORM;
            else if (!strcmp(arg, "sticky"))
                opt.policy = SIM_POLICY_STICKY;
            else if (!strcmp(arg, "starve"))
                opt.policy = SIM_POLICY_STARVE;
            else {
                usage(stderr);
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--channels")) {
            opt.transport = SIM_TRANSPORT_CHANNELS;
        } else if (!strcmp(a, "--lossy-kills")) {
            opt.lossy_kills = true;
        } else if (!strcmp(a, "--quiet")) {
            opt.quiet = true;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }

    if (demo) {
        int rc = sim_run_demo(stdout);
        printf("%d passed, %d failed\n", rc == 0, rc != 0);
        return rc == 0 ? 0 : 1;
    }

    if (!have_seed) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec;
        seed %= 1000000000u;
    }
    printf("sim: %" PRIu64 " scenario(s), seeds %" PRIu64 "..%" PRIu64 "\n", scenarios, seed,
           seed + (scenarios ? scenarios - 1 : 0));
    fflush(stdout);

    sim_result total, r;
    memset(&total, 0, sizeof(total));
    uint64_t passed = 0, failed = 0;
    double t0 = now_seconds();
    for (uint64_t i = 0; i < scenarios; i++) {
        uint64_t sd = seed + i;
        if (sim_run_scenario(sd, &opt, &r) == 0) {
            passed++;
        } else {
            failed++;
            if (opt.quiet)
                printf("FAIL seed=%" PRIu64 " step=%" PRIu64 ": %s\n", sd, r.failed_step,
                       r.failure);
            fflush(stdout);
        }
        sim_result_accumulate(&total, &r);
        if (scenarios == 1 && opt.transport == SIM_TRANSPORT_IN_MEMORY)
            printf("trace hash %016" PRIx64 "\n", r.trace_hash);
    }
    double dt = now_seconds() - t0;

    printf("totals: %" PRIu64 " steps, %" PRIu64 " actions, %" PRIu64 " events delivered (%" PRIu64
           " bytes on the wire)\n",
           total.steps, total.actions, total.events_delivered, total.bytes_on_wire);
    printf("        %" PRIu64 " pipes, %" PRIu64 " messages sent, %" PRIu64 " read, %" PRIu64
           " pipe ends carried (max %" PRIu64 " hops)\n",
           total.pipes, total.messages_sent, total.messages_read, total.transfers, total.max_hops);
    printf("        %" PRIu64 " proxies made, %" PRIu64 " seen collapsed; %" PRIu64
           " merges, %" PRIu64 " kills, %" PRIu64 " closes, %" PRIu64 " PEER_CLOSED seen\n",
           total.proxies_created, total.proxies_collapsed, total.merges, total.kills, total.closes,
           total.peer_closed_seen);
    printf("        %" PRIu64 " ends lost to kills, %" PRIu64 " pipes broken on one side, %" PRIu64
           " benign accept errors, %" PRIu64 " events sent by destroyed nodes\n",
           total.lost_ends, total.half_broken, total.accept_errors, total.dead_node_events);
    if (opt.transport == SIM_TRANSPORT_CHANNELS)
        printf("        channels: %" PRIu64 " frames (%" PRIu64 " bytes) written, %" PRIu64
               " (%" PRIu64 " bytes) read, %" PRIu64 " (%" PRIu64 " bytes) lost to kills;\n"
               "        %" PRIu64 " events on the IO thread, %" PRIu64 " during an action; %" PRIu64
               " self events; at most %" PRIu64 " in flight\n",
               total.channel_frames_sent, total.channel_bytes_sent, total.channel_frames_received,
               total.channel_bytes_received, total.channel_frames_lost, total.channel_bytes_lost,
               total.io_thread_events, total.overlapped_events, total.self_events,
               total.max_in_flight);
    printf("        events:");
    for (int t = 0; t < PORTS_EVENT_TYPE_COUNT; t++)
        printf(" %s=%" PRIu64, ports_event_type_name((ports_event_type)t), total.events_by_type[t]);
    printf("\n");
    printf("        %.2f s, %.0f scenarios/s\n", dt, dt > 0 ? (double)scenarios / dt : 0.0);
    printf("%" PRIu64 " passed, %" PRIu64 " failed\n", passed, failed);
    return failed ? 1 : 0;
}
