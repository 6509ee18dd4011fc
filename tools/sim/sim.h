/*
 * A deterministic multi-node simulator for the ports layer (and, over
 * channels, a nondeterministic one for ports, channels and the IO thread).
 *
 * A scenario builds N ports nodes in one process and connects every ordered
 * pair of them (including a node to itself) with a FIFO link. Events that
 * cross nodes are serialised to bytes and parsed again on delivery, exactly
 * as a channel would; events a node sends to itself travel as pointers. The
 * scenario's seed chooses everything: which link delivers next, which user
 * action runs (create pipes, write messages that carry other pipe ends, read,
 * close, merge pipes, ask for read acks, kill a node) and, through one
 * derived stream per node, every node and port name. Because nothing else is
 * random, a seed replays a scenario exactly. (Names have their own streams so
 * that a ports layer drawing more or fewer names does not change the actions
 * a seed makes.)
 *
 * A model of every pipe runs alongside. Each direction of each pipe is a
 * stream of numbered messages; the sim checks every read against it
 * (exactly once, in order), checks PEER_CLOSED against who really closed,
 * and at quiescence checks that every route has collapsed back to two ports,
 * that no pipe is left hanging, and that after closing everything no port,
 * message or payload is left.
 *
 * Transports. SIM_TRANSPORT_IN_MEMORY (the default) is what is described
 * above: links are FIFOs inside the sim and a seeded scheduler decides which
 * one delivers next. SIM_TRANSPORT_CHANNELS runs the same scenarios (same
 * generator, same model, same checks) over the production channel code:
 * every pair of nodes is joined by a Unix socketpair with a channel
 * (src/channel) at each end, read by a real IO thread (src/platform/io.h).
 * An event for another node is written as one frame by the thread whose
 * ports call produced it, crosses the kernel, is cut out of the byte stream
 * by the channel, parsed and accepted on the IO thread -- while the
 * scenario's actions go on calling the same ports nodes from the calling
 * thread. An event a node sends to itself is posted to the IO thread as a
 * task. A scheduler "deliver" step becomes "let the IO thread work" (a
 * 1 ns sleep, a longer one, now and then a full settle). The seed's policy still
 * shapes the run: sticky and starve scenarios now and then stall the IO
 * thread for tens to hundreds of steps, so frames pile up in the sockets,
 * and starve scenarios also shrink the sockets' send buffers to the minimum,
 * so writers meet EAGAIN and partial writes and the channels' write queues
 * and EPOLLOUT flushing carry the traffic. Every quiescence check waits until
 * no event is in flight anywhere -- no frame unread, no task unrun, no
 * connection loss unreported -- and fails the scenario after
 * settle_timeout_ms rather than hang.
 *
 * Kills over channels run on the IO thread while the scenario's thread
 * waits (so nothing else calls into the dying node): the node stops, the
 * frames it had queued but not yet written reach the kernel, then its
 * sockets close and the node is destroyed. Its peers read what it wrote,
 * then EOF, and only then learn that it is lost -- as from a dead process,
 * and as the in-memory transport promises ("what a node sent before it died
 * is still on the wire"). With lossy_kills the queued frames die with the
 * node instead, as in a crash mid-write; that is more than the model was
 * built for, and it finds a known limitation of the ports layer: when the
 * lost frame was the message carrying a port, the port's peer has already
 * been told that messages will now come from the port's new incarnation,
 * which never comes to exist; if that peer is itself a proxy by then, it
 * waits for it forever and is left behind (both pipe ends still see
 * PEER_CLOSED). About one scenario in a few thousand with a kill hits it.
 *
 * Because the OS decides how the two threads interleave, a seed does NOT
 * replay a channel scenario: it fixes the scenario's random choices only as
 * far as they do not depend on timing, which is not far. Failures still
 * print the seed (and "--channels"), and rerunning it a few times (with
 * --trace, SIM_DEBUG_DUMP=1) usually reproduces a bug; the in-memory
 * transport remains the one that replays exactly.
 *
 * Threads: an in-memory scenario runs entirely on the calling thread; a
 * channel scenario adds one IO thread of its own, started and joined inside
 * sim_run_scenario. Different threads may run different scenarios at once
 * (no shared state).
 */
#ifndef CMOJO_TOOLS_SIM_H_
#define CMOJO_TOOLS_SIM_H_

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Deliberate checker faults, to prove the checker can fail. */
typedef enum sim_fault {
    SIM_FAULT_NONE = 0,
    /* Feed the first message read to the checker twice. */
    SIM_FAULT_DUPLICATE_READ,
    /* Hide the first message read from the checker (looks lost). */
    SIM_FAULT_DROP_READ,
    /* Swap the first two messages read on one end before checking. */
    SIM_FAULT_REORDER_READ,
} sim_fault;

/* How the scheduler picks the next link to deliver from. */
typedef enum sim_policy {
    SIM_POLICY_BY_SEED = -1, /* half uniform, a quarter each of the others */
    SIM_POLICY_UNIFORM = 0,  /* any non-empty link */
    SIM_POLICY_STICKY,       /* bursts from one link */
    SIM_POLICY_STARVE,       /* one link held back for a while at a time */
} sim_policy;

/* How events travel between nodes (see the top of this file). */
typedef enum sim_transport {
    SIM_TRANSPORT_IN_MEMORY = 0, /* deterministic FIFO links, seeded scheduler */
    SIM_TRANSPORT_CHANNELS,      /* socketpairs, channels, a real IO thread */
} sim_transport;

typedef struct sim_options {
    int nodes;       /* 0: random in 4..6; otherwise 2..SIM_MAX_NODES */
    int min_actions; /* 0: 200 */
    int max_actions; /* 0: 600 */
    int max_kills;   /* -1: random 0..2 per scenario; else exactly this many
                        (at most nodes - 2) */
    bool no_merges;
    bool no_acks; /* never call ports_node_set_ack_request_interval */
    sim_policy policy;
    bool trace;      /* print every trace line as it happens */
    FILE *trace_out; /* where trace and failure reports go; NULL: stdout */
    bool quiet;      /* do not print the failure report */
    sim_fault fault;
    sim_transport transport;
    int settle_timeout_ms; /* CHANNELS: how long a settle may take; 0: 30000 */
    /*
     * CHANNELS: a killed node's frames still in its channels' write queues
     * die with it (a crash mid-write), instead of reaching its peers first.
     * Known to strand proxies now and then: see "Kills over channels" above.
     */
    bool lossy_kills;
} sim_options;

#define SIM_MAX_NODES 16

/* Initialises *opt to the defaults described above. */
void sim_options_init(sim_options *opt);

typedef struct sim_result {
    uint64_t seed;
    int nodes;
    uint64_t steps;            /* scheduler steps (actions + deliveries) */
    uint64_t actions;          /* user actions */
    uint64_t events_delivered; /* events handed to ports_node_accept_event */
    uint64_t events_by_type[9];
    uint64_t bytes_on_wire; /* serialised bytes delivered */
    uint64_t pipes;         /* pipes created */
    uint64_t messages_sent;
    uint64_t messages_read;
    uint64_t transfers;       /* pipe ends carried inside messages */
    uint64_t proxies_created; /* ports that became proxies (transfers, merges) */
    uint64_t proxies_collapsed;
    uint64_t merges;
    uint64_t kills;
    uint64_t closes;
    uint64_t peer_closed_seen; /* reads that returned PEER_CLOSED */
    uint64_t lost_ends;        /* pipe ends lost to a node kill */
    uint64_t half_broken;      /* pipes a kill broke on one side only */
    uint64_t max_hops;         /* most transfers any one pipe end made */
    uint64_t accept_errors;    /* benign accept_event errors (port gone) */
    uint64_t dead_node_events; /* events a node sent while being destroyed */
    /*
     * CHANNELS only. Frames and wire bytes (header and padding included)
     * written to channels, cut out of the byte stream by a channel and parsed,
     * and lost with a killed node (written to it and never read, or still in
     * its write queue). sent == received + lost, exactly.
     */
    uint64_t channel_frames_sent;
    uint64_t channel_frames_received;
    uint64_t channel_frames_lost;
    uint64_t channel_bytes_sent;
    uint64_t channel_bytes_received;
    uint64_t channel_bytes_lost;
    uint64_t self_events;       /* events a node sent itself, accepted in IO tasks */
    uint64_t io_thread_events;  /* events accepted on the IO thread */
    uint64_t overlapped_events; /* ...while the scenario's thread was inside an action */
    uint64_t max_in_flight;     /* most events in flight at once (a maximum) */
    uint64_t trace_hash;        /* FNV-1a of every trace line */
    uint64_t failed_step;       /* step of the first failure, 0 if none */
    char failure[512];          /* first failure, empty if none */
} sim_result;

/*
 * Runs one scenario. Returns 0 when every invariant held, -1 otherwise (the
 * reason is in out->failure and, unless opt->quiet, a report with the last
 * trace lines and the replay command has been printed). opt may be NULL for
 * defaults; out may be NULL.
 */
int sim_run_scenario(uint64_t seed, const sim_options *opt, sim_result *out);

/*
 * Runs the narrated showcase scenario (4 nodes, about twenty scripted
 * actions) and writes the story to out. Returns 0 when every check held.
 */
int sim_run_demo(FILE *out);

/*
 * Adds r into the running totals in *sum (counts are summed, max_hops and
 * max_in_flight are maxima; seed, trace_hash and failure are left alone).
 */
void sim_result_accumulate(sim_result *sum, const sim_result *r);

/*
 * Runs the n scenarios seed, seed + 1, ... with opt, summing their results
 * into *total (zeroed first). The first three failures get full reports
 * (unless opt->quiet); later ones one line each on stdout. Returns how many
 * failed.
 */
uint64_t sim_run_scenarios(uint64_t seed, uint64_t n, const sim_options *opt, sim_result *total);

#endif /* CMOJO_TOOLS_SIM_H_ */
