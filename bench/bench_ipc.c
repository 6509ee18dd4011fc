/*
 * bench_ipc: cmojo between two real processes against a raw socketpair
 * between the same two processes, measured in the same run and reported as
 * ratios.
 *
 * The parent forks and execs /proc/self/exe with the role argument "child",
 * handing it two inherited sockets: one end of the socketpair the invitation
 * travels on (after which it is cmojo's channel) and one end of a second,
 * plain socketpair for the baselines. The child serves every case in turn:
 * the parent sends it a command on the invitation's "boot" pipe (for cmojo
 * cases together with one end of a fresh message pipe), runs the timed loop,
 * and waits for the child's "done" on the boot pipe before the next case.
 * For a cmojo case the child first writes an 8-byte "ready" on the new pipe
 * and the parent reads it before its timed loop: moving the pipe end to the
 * child is setup, not part of the case. (Without it, streaming into an end
 * still on its way sometimes got the whole connection dropped as a "ports
 * protocol violation": a cmojo bug to fix in src/, which a benchmark of the
 * steady state should not trip over.) At the end the parent tells
 * the child to quit, reaps it and checks its exit status. Both sides install
 * a process error handler, so a dropped connection says why.
 *
 * Cases, for 8 B, 64 B, 512 B, 4 KB and 64 KB:
 *   round trip   the parent writes N bytes and waits for the same N bytes
 *                back; one op = one round trip. Baseline "socketpair": the
 *                parent write()s N bytes and read()s N back; the child
 *                read()s N fully and write()s them back (blocking sockets).
 *                - trap handler: the child's end has a trap on READABLE whose
 *                  handler reads every message, writes each back as a new
 *                  message and re-arms (cmojo runs it on the child's IO
 *                  thread, which received the message). The parent writes,
 *                  blocks in MojoWait(READABLE), reads.
 *                - MojoWait: a child thread loops MojoWait(READABLE), reads,
 *                  writes back. The parent does as above.
 *                - trap handlers: the child as for "trap handler"; the parent
 *                  is an event loop too: its trap handler (on the parent's IO
 *                  thread) reads each echo, checks it, writes the next
 *                  message and re-arms, and the main thread only waits for
 *                  the last round trip. Every reply comes from a trap
 *                  handler, as between two processes that both run event
 *                  loops; two thread wake-ups per round trip, as for the
 *                  socketpair.
 *                - trap handlers, reply forwarded: as "trap handlers", but
 *                  the child writes back the very message object it read
 *                  (MojoWriteMessage of the read handle) instead of building
 *                  a new one: like for like with the socketpair child, which
 *                  writes back the buffer it read into and copies nothing.
 *                  The other cmojo cases copy every reply into a new
 *                  message (MojoAppendMessageData, then a copy), as an
 *                  application that builds its answer does; the parent
 *                  builds every message it sends in all of them.
 *   stream       the parent writes M messages of N bytes as fast as it can;
 *                the child (a trap handler, as above) counts the bytes and
 *                when all have come sends an 8-byte ack, which ends the timed
 *                loop; one op = one message. Baseline: M write()s of N bytes
 *                on the plain socket, the child read()s (256 KB at a time)
 *                until it has them all and write()s the ack.
 * Every reply is checked (length, and a per-iteration tag in its first and
 * last byte, set the same way in the baselines); a benchmark that got a wrong
 * answer has measured nothing.
 *
 * Method, as in bench_core: the machine is shared and noisy, so each case
 * first runs twice untimed (warm-up; the second run also sets how many ops a
 * timed run does, so that one run takes about --target-ms), then all cases
 * run round-robin, R runs of each (odd runs go through the list backwards).
 * ns/op is the median run; the ratio is the median of the per-run ratios
 * subject/baseline, with the extremes beside it.
 *
 * CPUs: by default nothing is pinned (the scheduler's choice: the realistic
 * case, and on a small VM a noisy one). --one-cpu pins the parent, and with
 * it the child and every thread of both, to one CPU: every wake-up is then a
 * context switch on that CPU, which shows the CPU cost of each side.
 *
 * --single KIND SIZE COUNT runs one case once (after one untimed run of the
 * same size), with getppid() calls just before and after its timed loop as
 * markers, for bench/ipc_syscalls.sh to count system calls under strace
 * (per op and per thread: bench/ipc_syscalls.sh build/rel/bench/bench_ipc).
 *
 * Under valgrind (callgrind --trace-children=yes) /proc/self/exe is the
 * tool itself: set BENCH_CHILD_EXE to this binary's path for the child.
 *
 * Usage: bench_ipc [--quick] [--runs R] [--target-ms T] [--one-cpu]
 *        bench_ipc --single raw|trap|wait|traps|rawstream|stream|fwd SIZE COUNT
 */
#include <errno.h>
#include <inttypes.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bench_util.h"
#include "cmojo/wait.h"
#include "mojo/public/c/system/core.h"

/* Runs per measurement (at most BENCH_MAX_RUNS). */
#define IPC_DEFAULT_RUNS 5u
#define IPC_QUICK_RUNS 3u
/*
 * Wall time one timed run of a case aims at. 35 cases x 5 runs x 250 ms is
 * ~44 s, plus warm-ups: well inside the 2-minute budget; --quick is a smoke
 * run of a few seconds.
 */
#define IPC_DEFAULT_TARGET_MS 250u
#define IPC_QUICK_TARGET_MS 30u
/* Largest message measured (64 KB); sizes the static payload buffers. */
#define IPC_MAX_PAYLOAD 65536u
/* Ops in a warm-up run (which also calibrates the op count of timed runs). */
#define IPC_WARMUP_ROUND_TRIPS 200u
#define IPC_WARMUP_MESSAGES 2000u
/* Bounds on a timed run's op count, whatever the calibration says. */
#define IPC_MIN_OPS 20u
#define IPC_MAX_ROUND_TRIPS 1000000u
/*
 * A stream of cmojo messages has no flow control: what the socket does not
 * take waits in the sender's write queue (and in the receiver's message
 * queue). These caps keep one run's backlog to 64 MiB and 100,000 live
 * messages, well inside cmojo's limits (CMOJO_MAX_MESSAGES is 2^20).
 */
#define IPC_MAX_STREAM_MESSAGES 100000u
#define IPC_MAX_STREAM_BYTES (64u * 1024u * 1024u)
/* The baseline stream reader's buffer: a few messages of the largest size. */
#define IPC_STREAM_READ_BUF (256u * 1024u)
/* Every blocking wait gives up after this long (a hung peer is a failure). */
#define IPC_DEADLINE_US (30u * 1000u * 1000u)
/* The goals, as ratios to the raw socketpair round trip. */
#define IPC_TRAP_GOAL 1.5
#define IPC_WAIT_GOAL 2.5

static const uint32_t g_sizes[] = {8, 64, 512, 4096, 65536};
#define NUM_SIZES (sizeof(g_sizes) / sizeof(g_sizes[0]))

typedef enum ipc_kind {
    K_RAW_RTT,     /* socketpair round trip */
    K_TRAP_RTT,    /* cmojo round trip, child replies from a trap handler */
    K_WAIT_RTT,    /* cmojo round trip, child thread in MojoWait */
    K_TRAPS_RTT,   /* cmojo round trip, trap handlers on both sides */
    K_RAW_STREAM,  /* socketpair one-way stream + ack */
    K_MOJO_STREAM, /* cmojo one-way stream + ack, child counts in a trap handler */
    K_FWD_RTT,     /* as K_TRAPS_RTT, the child writes back the message it read */
    K_NUM,
    K_QUIT = K_NUM /* command only: the child exits */
} ipc_kind;

static const char *const g_kind_names[K_NUM] = {"raw",       "trap",   "wait", "traps",
                                                "rawstream", "stream", "fwd"};

/* The cases that run over a cmojo pipe (the others over the plain socketpair). */
static bool is_mojo(ipc_kind kind)
{
    return kind == K_TRAP_RTT || kind == K_WAIT_RTT || kind == K_TRAPS_RTT ||
           kind == K_MOJO_STREAM || kind == K_FWD_RTT;
}

/* What the parent sends on the boot pipe before each case. */
typedef struct ipc_cmd {
    uint32_t kind;  /* ipc_kind */
    uint32_t size;  /* bytes per message */
    uint64_t count; /* round trips (raw) or messages (streams); cmojo round trips run to close */
} ipc_cmd;

static const struct MojoAppendMessageDataOptions g_commit = {
    sizeof(struct MojoAppendMessageDataOptions), MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE};

static uint8_t g_payload[IPC_MAX_PAYLOAD];
static uint8_t g_readbuf[IPC_STREAM_READ_BUF];

static void describe_case(const ipc_cmd *cmd)
{
    bench_set_case(cmd->kind < K_NUM ? g_kind_names[cmd->kind] : "?", cmd->size, cmd->count);
}

/* ---------------------------------------------------------- cmojo messages */

/* Writes len bytes from src as one message. */
static void write_msg(MojoHandle pipe, const void *src, uint32_t len)
{
    MojoMessageHandle m;
    void *buf = NULL;
    uint32_t cap = 0;
    BENCH_MOJO(MojoCreateMessage(NULL, &m));
    BENCH_MOJO(MojoAppendMessageData(m, len, NULL, 0, &g_commit, &buf, &cap));
    BENCH_CHECK(buf != NULL && cap >= len);
    memcpy(buf, src, len);
    BENCH_MOJO(MojoWriteMessage(pipe, m, NULL));
}

/* Blocks until pipe is readable (a closed peer or a timeout is a failure). */
static void wait_readable(MojoHandle pipe)
{
    BENCH_MOJO(MojoWait(pipe, MOJO_HANDLE_SIGNAL_READABLE, IPC_DEADLINE_US, NULL));
}

/* Reads the echo that must be there: len bytes tagged with tag at both ends. */
static void read_echo(MojoHandle pipe, uint32_t len, uint8_t tag)
{
    MojoMessageHandle m;
    void *data = NULL;
    uint32_t n = 0, nh = 0;
    BENCH_MOJO(MojoReadMessage(pipe, NULL, &m));
    BENCH_MOJO(MojoGetMessageData(m, NULL, &data, &n, NULL, &nh));
    const uint8_t *p = data;
    BENCH_CHECK(n == len && nh == 0 && p[0] == tag && p[len - 1] == tag);
    BENCH_MOJO(MojoDestroyMessage(m));
}

/* Reads one 8-byte message that must be there. */
static uint64_t read_u64(MojoHandle pipe)
{
    MojoMessageHandle m;
    void *data = NULL;
    uint32_t n = 0, nh = 0;
    uint64_t v;
    BENCH_MOJO(MojoReadMessage(pipe, NULL, &m));
    BENCH_MOJO(MojoGetMessageData(m, NULL, &data, &n, NULL, &nh));
    BENCH_CHECK(n == sizeof(v) && nh == 0);
    memcpy(&v, data, sizeof(v));
    BENCH_MOJO(MojoDestroyMessage(m));
    return v;
}

/* ------------------------------------------------------------------ child */

/* One cmojo case in the child: the end it serves and what it has seen. */
typedef struct child_case {
    MojoHandle pipe;
    MojoHandle trap;
    bool echo;         /* round trip: write each message back; else count (stream) */
    bool forward;      /* echo: the message read itself, not a copy */
    uint64_t expected; /* stream: bytes to count before acking */
    uint64_t bytes;    /* bytes received */
    sem_t finished;    /* posted once the parent's end is closed */
} child_case;

/* Echoes one message (forwarded, or as a new message as an application would) or counts it. */
static void child_consume(child_case *c, MojoMessageHandle m)
{
    void *data = NULL;
    uint32_t n = 0, nh = 0;
    BENCH_MOJO(MojoGetMessageData(m, NULL, &data, &n, NULL, &nh));
    BENCH_CHECK(nh == 0 && n > 0);
    c->bytes += n;
    if (c->forward) {
        BENCH_MOJO(MojoWriteMessage(c->pipe, m, NULL));
        return;
    }
    if (c->echo) {
        write_msg(c->pipe, data, n);
    } else {
        BENCH_CHECK(c->bytes <= c->expected);
        if (c->bytes == c->expected)
            write_msg(c->pipe, &c->bytes, sizeof(c->bytes));
    }
    BENCH_MOJO(MojoDestroyMessage(m));
}

/*
 * Reads everything there is, then re-arms; if arming finds more already
 * there, goes round again. Posts `finished` (and does not re-arm) once the
 * parent has closed its end and everything has been read.
 */
static void child_drain_and_arm(child_case *c)
{
    for (;;) {
        for (;;) {
            MojoMessageHandle m;
            MojoResult rv = MojoReadMessage(c->pipe, NULL, &m);
            if (rv == MOJO_RESULT_SHOULD_WAIT)
                break;
            if (rv == MOJO_RESULT_FAILED_PRECONDITION) {
                BENCH_CHECK(sem_post(&c->finished) == 0);
                return;
            }
            BENCH_MOJO(rv);
            child_consume(c, m);
        }
        struct MojoTrapEvent ev = {.struct_size = sizeof(ev)};
        uint32_t nev = 1;
        MojoResult rv = MojoArmTrap(c->trap, NULL, &nev, &ev);
        if (rv == MOJO_RESULT_OK)
            return;
        BENCH_CHECK(rv == MOJO_RESULT_FAILED_PRECONDITION && nev == 1);
        if (ev.result == MOJO_RESULT_FAILED_PRECONDITION) {
            BENCH_CHECK(sem_post(&c->finished) == 0);
            return;
        }
        BENCH_MOJO(ev.result);
    }
}

/* Runs on the child's IO thread, the one that received the message. */
static void child_trap_handler(const struct MojoTrapEvent *event)
{
    if (event->result == MOJO_RESULT_CANCELLED)
        return; /* the trap was closed; the case may be gone already */
    child_case *c = (child_case *)event->trigger_context;
    if (event->result == MOJO_RESULT_FAILED_PRECONDITION) {
        BENCH_CHECK(sem_post(&c->finished) == 0);
        return;
    }
    BENCH_MOJO(event->result);
    child_drain_and_arm(c);
}

/* Serves pipe from a trap handler until the parent closes it; bytes seen. */
static uint64_t child_serve_trap(MojoHandle pipe, bool echo, bool forward, uint64_t expected)
{
    child_case c = {.pipe = pipe, .echo = echo, .forward = forward, .expected = expected};
    BENCH_CHECK(sem_init(&c.finished, 0, 0) == 0);
    BENCH_MOJO(MojoCreateTrap(child_trap_handler, NULL, &c.trap));
    BENCH_MOJO(MojoAddTrigger(c.trap, pipe, MOJO_HANDLE_SIGNAL_READABLE,
                              MOJO_TRIGGER_CONDITION_SIGNALS_SATISFIED, (uintptr_t)&c, NULL));
    /* The parent starts writing at once, so there may be messages already. */
    child_drain_and_arm(&c);
    while (sem_wait(&c.finished) != 0)
        BENCH_CHECK(errno == EINTR);
    /* Closing the trap delivers CANCELLED, which touches nothing. */
    BENCH_MOJO(MojoClose(c.trap));
    BENCH_MOJO(MojoClose(pipe));
    BENCH_CHECK(sem_destroy(&c.finished) == 0);
    return c.bytes;
}

/* Serves pipe from this thread, blocked in MojoWait, until the parent closes it. */
static uint64_t child_serve_wait(MojoHandle pipe)
{
    child_case c = {.pipe = pipe, .echo = true};
    bool open = true;
    while (open) {
        MojoResult rv = MojoWait(pipe, MOJO_HANDLE_SIGNAL_READABLE, IPC_DEADLINE_US, NULL);
        if (rv == MOJO_RESULT_FAILED_PRECONDITION)
            break;
        BENCH_MOJO(rv);
        for (;;) {
            MojoMessageHandle m;
            rv = MojoReadMessage(pipe, NULL, &m);
            if (rv == MOJO_RESULT_SHOULD_WAIT)
                break;
            if (rv == MOJO_RESULT_FAILED_PRECONDITION) {
                open = false; /* the parent is done and everything has been read */
                break;
            }
            BENCH_MOJO(rv);
            child_consume(&c, m);
        }
    }
    BENCH_MOJO(MojoClose(pipe));
    return c.bytes;
}

static uint64_t child_raw_rtt(int fd, uint32_t size, uint64_t count)
{
    for (uint64_t i = 0; i < count; i++) {
        bench_read_full(fd, g_readbuf, size);
        bench_write_full(fd, g_readbuf, size);
    }
    return count * size;
}

static uint64_t child_raw_stream(int fd, uint64_t total)
{
    uint64_t got = 0;
    while (got < total) {
        uint64_t want = total - got;
        ssize_t n =
            read(fd, g_readbuf, want < sizeof(g_readbuf) ? (size_t)want : sizeof(g_readbuf));
        if (n < 0 && errno == EINTR)
            continue;
        BENCH_CHECK(n > 0);
        got += (uint64_t)n;
    }
    bench_write_full(fd, &got, sizeof(got));
    return got;
}

static int child_main(int boot_fd, int raw_fd)
{
    MojoHandle boot = bench_accept_parent(boot_fd);

    for (;;) {
        wait_readable(boot);
        MojoMessageHandle m;
        void *data = NULL;
        uint32_t n = 0, nh = 1;
        MojoHandle pipe = MOJO_HANDLE_INVALID;
        ipc_cmd cmd;
        BENCH_MOJO(MojoReadMessage(boot, NULL, &m));
        BENCH_MOJO(MojoGetMessageData(m, NULL, &data, &n, &pipe, &nh));
        BENCH_CHECK(n == sizeof(cmd));
        memcpy(&cmd, data, sizeof(cmd));
        BENCH_MOJO(MojoDestroyMessage(m));
        if (cmd.kind == K_QUIT)
            break;
        describe_case(&cmd);
        BENCH_CHECK(cmd.kind < K_NUM && cmd.size > 0 && cmd.size <= IPC_MAX_PAYLOAD);
        bool mojo = is_mojo((ipc_kind)cmd.kind);
        BENCH_CHECK(nh == (mojo ? 1u : 0u));
        uint64_t done = 0;
        if (mojo) {
            /* The parent starts its timed loop once the route to this end is up. */
            uint64_t ready = 0;
            write_msg(pipe, &ready, sizeof(ready));
        }
        switch ((ipc_kind)cmd.kind) {
        case K_RAW_RTT:
            done = child_raw_rtt(raw_fd, cmd.size, cmd.count);
            break;
        case K_TRAP_RTT:
        case K_TRAPS_RTT:
        case K_FWD_RTT:
            done = child_serve_trap(pipe, true, cmd.kind == K_FWD_RTT, 0);
            break;
        case K_WAIT_RTT:
            done = child_serve_wait(pipe);
            break;
        case K_RAW_STREAM:
            done = child_raw_stream(raw_fd, cmd.count * cmd.size);
            break;
        case K_MOJO_STREAM:
            done = child_serve_trap(pipe, false, false, cmd.count * cmd.size);
            break;
        default:
            BENCH_CHECK(false);
        }
        write_msg(boot, &done, sizeof(done));
    }
    BENCH_MOJO(MojoClose(boot));
    close(raw_fd);
    BENCH_MOJO(MojoShutdown(NULL));
    return 0;
}

/* ----------------------------------------------------------------- parent */

static uint64_t loop_raw_rtt(int fd, uint32_t size, uint64_t count)
{
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < count; i++) {
        uint8_t tag = (uint8_t)i;
        g_payload[0] = g_payload[size - 1] = tag;
        bench_write_full(fd, g_payload, size);
        bench_read_full(fd, g_readbuf, size);
        BENCH_CHECK(g_readbuf[0] == tag && g_readbuf[size - 1] == tag);
    }
    return bench_now_ns() - t0;
}

static uint64_t loop_mojo_rtt(MojoHandle pipe, uint32_t size, uint64_t count)
{
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < count; i++) {
        uint8_t tag = (uint8_t)i;
        g_payload[0] = g_payload[size - 1] = tag;
        write_msg(pipe, g_payload, size);
        wait_readable(pipe);
        read_echo(pipe, size, tag);
    }
    return bench_now_ns() - t0;
}

/* The parent's event loop for "trap handlers": the round trips so far and how many to make. */
typedef struct parent_loop {
    MojoHandle pipe;
    MojoHandle trap;
    uint32_t size;
    uint64_t count, done;
    sem_t finished; /* posted when the last echo has come back */
} parent_loop;

static void parent_send_next(parent_loop *l)
{
    uint8_t tag = (uint8_t)l->done;
    g_payload[0] = g_payload[l->size - 1] = tag;
    write_msg(l->pipe, g_payload, l->size);
}

/* Takes every echo there is, sends the next ping for each, re-arms; posts when done. */
static void parent_drain_and_arm(parent_loop *l)
{
    for (;;) {
        MojoMessageHandle m;
        MojoResult rv;
        while ((rv = MojoReadMessage(l->pipe, NULL, &m)) == MOJO_RESULT_OK) {
            void *data = NULL;
            uint32_t n = 0, nh = 0;
            BENCH_MOJO(MojoGetMessageData(m, NULL, &data, &n, NULL, &nh));
            const uint8_t *p = data;
            uint8_t tag = (uint8_t)l->done;
            BENCH_CHECK(n == l->size && nh == 0 && p[0] == tag && p[n - 1] == tag);
            BENCH_MOJO(MojoDestroyMessage(m));
            if (++l->done == l->count) {
                BENCH_CHECK(sem_post(&l->finished) == 0);
                return;
            }
            parent_send_next(l);
        }
        BENCH_CHECK(rv == MOJO_RESULT_SHOULD_WAIT);
        struct MojoTrapEvent ev = {.struct_size = sizeof(ev)};
        uint32_t nev = 1;
        rv = MojoArmTrap(l->trap, NULL, &nev, &ev);
        if (rv == MOJO_RESULT_OK)
            return;
        BENCH_CHECK(rv == MOJO_RESULT_FAILED_PRECONDITION && nev == 1);
        BENCH_MOJO(ev.result); /* the child never closes first */
    }
}

static void parent_trap_handler(const struct MojoTrapEvent *event)
{
    if (event->result == MOJO_RESULT_CANCELLED)
        return; /* the trap was closed after the last round trip */
    BENCH_MOJO(event->result);
    parent_drain_and_arm((parent_loop *)event->trigger_context);
}

static uint64_t loop_trap_rtt(MojoHandle pipe, uint32_t size, uint64_t count)
{
    parent_loop l = {.pipe = pipe, .size = size, .count = count};
    BENCH_CHECK(sem_init(&l.finished, 0, 0) == 0);
    BENCH_MOJO(MojoCreateTrap(parent_trap_handler, NULL, &l.trap));
    BENCH_MOJO(MojoAddTrigger(l.trap, pipe, MOJO_HANDLE_SIGNAL_READABLE,
                              MOJO_TRIGGER_CONDITION_SIGNALS_SATISFIED, (uintptr_t)&l, NULL));
    BENCH_MOJO(MojoArmTrap(l.trap, NULL, NULL, NULL));
    uint64_t t0 = bench_now_ns();
    parent_send_next(&l);
    while (sem_wait(&l.finished) != 0)
        BENCH_CHECK(errno == EINTR);
    uint64_t t = bench_now_ns() - t0;
    BENCH_MOJO(MojoClose(l.trap));
    BENCH_CHECK(sem_destroy(&l.finished) == 0);
    return t;
}

static uint64_t loop_raw_stream(int fd, uint32_t size, uint64_t count)
{
    uint64_t t0 = bench_now_ns(), ack = 0;
    for (uint64_t i = 0; i < count; i++)
        bench_write_full(fd, g_payload, size);
    bench_read_full(fd, &ack, sizeof(ack));
    uint64_t t = bench_now_ns() - t0;
    BENCH_CHECK(ack == count * size);
    return t;
}

static uint64_t loop_mojo_stream(MojoHandle pipe, uint32_t size, uint64_t count)
{
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < count; i++)
        write_msg(pipe, g_payload, size);
    wait_readable(pipe);
    uint64_t ack = read_u64(pipe);
    uint64_t t = bench_now_ns() - t0;
    BENCH_CHECK(ack == count * size);
    return t;
}

/* Runs one case of count ops with the child; the timed loop's ns. */
static uint64_t run_case(bench_child *ch, ipc_kind kind, uint32_t size, uint64_t count)
{
    ipc_cmd cmd = {.kind = (uint32_t)kind, .size = size, .count = count};
    describe_case(&cmd);
    bool mojo = is_mojo(kind);
    MojoHandle mine = MOJO_HANDLE_INVALID, theirs = MOJO_HANDLE_INVALID;
    if (mojo)
        BENCH_MOJO(MojoCreateMessagePipe(NULL, &mine, &theirs));
    bench_write_msg(ch->boot, &cmd, sizeof(cmd), theirs);
    if (mojo) {
        /* Untimed: the pipe end's journey to the child is setup, not the case. */
        wait_readable(mine);
        BENCH_CHECK(read_u64(mine) == 0);
    }

    uint64_t t = 0;
    bench_marker();
    switch (kind) {
    case K_RAW_RTT:
        t = loop_raw_rtt(ch->raw_fd, size, count);
        break;
    case K_TRAP_RTT:
    case K_WAIT_RTT:
        t = loop_mojo_rtt(mine, size, count);
        break;
    case K_TRAPS_RTT:
    case K_FWD_RTT:
        t = loop_trap_rtt(mine, size, count);
        break;
    case K_RAW_STREAM:
        t = loop_raw_stream(ch->raw_fd, size, count);
        break;
    case K_MOJO_STREAM:
        t = loop_mojo_stream(mine, size, count);
        break;
    default:
        BENCH_CHECK(false);
    }
    bench_marker();
    if (mojo)
        BENCH_MOJO(MojoClose(mine));
    wait_readable(ch->boot);
    BENCH_CHECK(read_u64(ch->boot) == count * size);
    return t;
}

/* ------------------------------------------------------------ measurements */

typedef struct measurement {
    ipc_kind kind;
    uint32_t size;
    uint64_t ops; /* per timed run, set by the warm-up */
    uint64_t samples[BENCH_MAX_RUNS];
    double ns_median; /* per op */
} measurement;

#define NUM_MEASUREMENTS (K_NUM * NUM_SIZES)

static measurement g_m[NUM_MEASUREMENTS];

static measurement *find_m(ipc_kind kind, uint32_t size)
{
    for (size_t i = 0; i < NUM_MEASUREMENTS; i++)
        if (g_m[i].kind == kind && g_m[i].size == size)
            return &g_m[i];
    BENCH_CHECK(false);
    return NULL;
}

static bool is_stream(ipc_kind kind)
{
    return kind == K_RAW_STREAM || kind == K_MOJO_STREAM;
}

/* The most messages one stream run may send, by the backlog caps. */
static uint64_t stream_cap(uint32_t size)
{
    uint64_t by_bytes = IPC_MAX_STREAM_BYTES / size;
    return by_bytes < IPC_MAX_STREAM_MESSAGES ? by_bytes : IPC_MAX_STREAM_MESSAGES;
}

/* Two untimed runs; the second sets the op count that takes about target_ns. */
static void warm_up(bench_child *ch, measurement *m, uint64_t target_ns)
{
    uint64_t cap = is_stream(m->kind) ? stream_cap(m->size) : IPC_MAX_ROUND_TRIPS;
    uint64_t n = is_stream(m->kind) ? IPC_WARMUP_MESSAGES : IPC_WARMUP_ROUND_TRIPS;
    if (n > cap)
        n = cap;
    (void)run_case(ch, m->kind, m->size, n);
    uint64_t t = run_case(ch, m->kind, m->size, n);
    double per_op = (double)(t ? t : 1) / (double)n;
    double want = (double)target_ns / per_op;
    m->ops = want < IPC_MIN_OPS ? IPC_MIN_OPS : want > (double)cap ? cap : (uint64_t)want;
}

/* Median of the per-run ratios subject/baseline (per op), and their extremes. */
static double ratio_of(const measurement *s, const measurement *b, unsigned runs, double *lo,
                       double *hi)
{
    double r[BENCH_MAX_RUNS];
    for (unsigned i = 0; i < runs; i++)
        r[i] = ((double)s->samples[i] / (double)s->ops) / ((double)b->samples[i] / (double)b->ops);
    return bench_median_ratio(r, runs, lo, hi);
}

static void print_report(unsigned runs, bool one_cpu, double total_s)
{
    printf("bench_ipc: parent and child processes (%s); %u runs per case, round-robin;\n"
           "ns/op = median run; ratio = median over runs of subject/baseline per op\n"
           "(min..max: the extreme per-run ratios)\n\n",
           one_cpu ? "all threads pinned to one CPU" : "unpinned", runs);
    printf("| case | baseline | ns/op | base ns/op | ratio | min..max | goal |\n");
    printf("| --- | --- | ---: | ---: | ---: | ---: | --- |\n");
    bool trap_met = true, traps_met = true, fwd_met = true, wait_met = true;
    for (size_t k = 0; k < NUM_SIZES; k++) {
        char sz[16];
        bench_size_label(g_sizes[k], sz, sizeof(sz));
        const measurement *b = find_m(K_RAW_RTT, g_sizes[k]);
        static const struct {
            ipc_kind kind;
            const char *what;
            double goal;
        } rtt[] = {{K_TRAP_RTT, "trap handler (parent in MojoWait)", IPC_TRAP_GOAL},
                   {K_TRAPS_RTT, "trap handlers on both ends", IPC_TRAP_GOAL},
                   {K_FWD_RTT, "trap handlers, reply forwarded", IPC_TRAP_GOAL},
                   {K_WAIT_RTT, "MojoWait thread", IPC_WAIT_GOAL}};
        for (size_t j = 0; j < sizeof(rtt) / sizeof(rtt[0]); j++) {
            const measurement *s = find_m(rtt[j].kind, g_sizes[k]);
            double lo, hi, ratio = ratio_of(s, b, runs, &lo, &hi);
            bool met = ratio <= rtt[j].goal;
            if (rtt[j].kind == K_TRAPS_RTT)
                traps_met = traps_met && met;
            else if (rtt[j].kind == K_FWD_RTT)
                fwd_met = fwd_met && met;
            else if (rtt[j].kind == K_TRAP_RTT)
                trap_met = trap_met && met;
            else
                wait_met = wait_met && met;
            printf("| round trip %s, %s | socketpair | %.0f | %.0f | **%.2f** | %.2f..%.2f | "
                   "<= %.1fx %s |\n",
                   sz, rtt[j].what, s->ns_median, b->ns_median, ratio, lo, hi, rtt[j].goal,
                   met ? "met" : "NOT met");
        }
    }
    printf(
        "\n| stream | baseline | ns/msg | base ns/msg | MB/s | base MB/s | ratio | min..max |\n");
    printf("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (size_t k = 0; k < NUM_SIZES; k++) {
        char sz[16];
        bench_size_label(g_sizes[k], sz, sizeof(sz));
        const measurement *s = find_m(K_MOJO_STREAM, g_sizes[k]);
        const measurement *b = find_m(K_RAW_STREAM, g_sizes[k]);
        double lo, hi, ratio = ratio_of(s, b, runs, &lo, &hi);
        /* bytes per ns * 1000 = MB/s (10^6 bytes). */
        printf("| %s x %" PRIu64 " msgs, trap handler counts | socketpair, x %" PRIu64
               " | %.0f | %.0f | %.0f | %.0f | %.2f | %.2f..%.2f |\n",
               sz, s->ops, b->ops, s->ns_median, b->ns_median,
               (double)g_sizes[k] / s->ns_median * 1000.0,
               (double)g_sizes[k] / b->ns_median * 1000.0, ratio, lo, hi);
    }
    printf("\ngoals (round trip, every size): trap handler <= %.1fx socketpair: "
           "parent in MojoWait %s, trap handlers on both ends %s, reply forwarded %s; "
           "MojoWait <= %.1fx: %s\n",
           IPC_TRAP_GOAL, trap_met ? "met" : "NOT met", traps_met ? "met" : "NOT met",
           fwd_met ? "met" : "NOT met", IPC_WAIT_GOAL, wait_met ? "met" : "NOT met");
    printf("total %.1f s\n", total_s);
}

static void run_all(bench_child *ch, unsigned runs, uint64_t target_ns)
{
    size_t i = 0;
    for (size_t k = 0; k < NUM_SIZES; k++)
        for (int kind = 0; kind < K_NUM; kind++)
            g_m[i++] = (measurement){.kind = (ipc_kind)kind, .size = g_sizes[k]};
    for (i = 0; i < NUM_MEASUREMENTS; i++)
        warm_up(ch, &g_m[i], target_ns);
    /* Round-robin, alternately forwards and backwards, so noise lands on every case alike. */
    for (unsigned r = 0; r < runs; r++) {
        for (size_t k = 0; k < NUM_MEASUREMENTS; k++) {
            measurement *m = &g_m[r % 2 ? NUM_MEASUREMENTS - 1 - k : k];
            m->samples[r] = run_case(ch, m->kind, m->size, m->ops);
        }
    }
    for (i = 0; i < NUM_MEASUREMENTS; i++) {
        measurement *m = &g_m[i];
        m->ns_median = (double)bench_median_u64(m->samples, runs, NULL) / (double)m->ops;
    }
}

static void usage(FILE *f, const char *argv0)
{
    fprintf(f,
            "usage: %s [--quick] [--runs R] [--target-ms T] [--one-cpu]\n"
            "       %s [--one-cpu] --single raw|trap|wait|traps|rawstream|stream|fwd SIZE COUNT\n"
            "  --quick        smoke run: %u runs of ~%u ms per case\n"
            "  --runs R       timed runs per case, median reported (default %u, max %u)\n"
            "  --target-ms T  wall time one timed run of a case aims at (default %u)\n"
            "  --one-cpu      pin both processes and all their threads to one CPU\n"
            "  --single ...   one run of one case (COUNT round trips or messages of SIZE\n"
            "                 bytes) between getppid() markers; for bench/ipc_syscalls.sh\n",
            argv0, argv0, IPC_QUICK_RUNS, IPC_QUICK_TARGET_MS, IPC_DEFAULT_RUNS, BENCH_MAX_RUNS,
            IPC_DEFAULT_TARGET_MS);
}

/* --single KIND SIZE COUNT, when given. */
static struct {
    const char *kind;
    uint64_t size, count;
} g_single;

/* Takes --single and its three values. */
static int single_option(int argc, char **argv, int i)
{
    if (strcmp(argv[i], "--single") != 0 || i + 3 >= argc ||
        !bench_parse_u64(argv[i + 2], 1, IPC_MAX_PAYLOAD, &g_single.size) ||
        !bench_parse_u64(argv[i + 3], 1, UINT64_C(1) << 32, &g_single.count))
        return 0;
    g_single.kind = argv[i + 1];
    return 4;
}

/* --single: one case, run once untimed, then once between markers. */
static int single_main(bench_child *ch, const char *kind_name, uint64_t size, uint64_t count)
{
    int kind = 0;
    while (kind < K_NUM && strcmp(g_kind_names[kind], kind_name) != 0)
        kind++;
    if (kind == K_NUM || (is_stream((ipc_kind)kind) && count > stream_cap((uint32_t)size))) {
        fprintf(stderr, "bench_ipc: bad --single case '%s' %" PRIu64 " %" PRIu64 "\n", kind_name,
                size, count);
        return 2;
    }
    (void)run_case(ch, (ipc_kind)kind, (uint32_t)size, count);
    bench_markers = true;
    uint64_t t = run_case(ch, (ipc_kind)kind, (uint32_t)size, count);
    bench_markers = false;
    printf("parent pid: %d\nchild pid: %d\ncase: %s %" PRIu64 " B x %" PRIu64 "\nns/op: %.0f\n",
           (int)getpid(), (int)ch->pid, kind_name, size, count, (double)t / (double)count);
    return 0;
}

int main(int argc, char **argv)
{
    bench_name = "bench_ipc";
    int boot_fd, raw_fd;
    if (bench_is_child(argc, argv, 0, &boot_fd, &raw_fd)) {
        /* MojoShutdown (at the end of child_main) lets the last messages leave. */
        BENCH_MOJO(MojoInitialize(NULL));
        return child_main(boot_fd, raw_fd);
    }
    bench_role = "parent";

    uint64_t runs = IPC_DEFAULT_RUNS, target_ms = IPC_DEFAULT_TARGET_MS;
    bool quick = false, runs_given = false, target_given = false, one_cpu = false;
    const bench_option opts[] = {
        {"--quick", &quick, NULL, 0, 0},
        {"--one-cpu", &one_cpu, NULL, 0, 0},
        {"--runs", &runs_given, &runs, 1, BENCH_MAX_RUNS},
        {"--target-ms", &target_given, &target_ms, 1, 60000},
        {NULL, NULL, NULL, 0, 0},
    };
    int rc = bench_parse_args(argc, argv, opts, single_option, usage);
    if (rc >= 0)
        return rc;
    if (quick) {
        if (!runs_given)
            runs = IPC_QUICK_RUNS;
        if (!target_given)
            target_ms = IPC_QUICK_TARGET_MS;
    }
    bench_fill_pattern(g_payload, sizeof(g_payload));

    /* Before MojoInitialize, so that its IO thread (and the child) inherit the mask. */
    if (one_cpu)
        bench_pin_to_cpu(bench_allowed_cpu(0));
    BENCH_MOJO(MojoInitialize(NULL));
    bench_child ch;
    bench_spawn_child(&ch, NULL);

    rc = 0;
    if (g_single.kind) {
        rc = single_main(&ch, g_single.kind, g_single.size, g_single.count);
    } else {
        uint64_t start = bench_now_ns();
        run_all(&ch, (unsigned)runs, target_ms * UINT64_C(1000000));
        print_report((unsigned)runs, one_cpu, (double)(bench_now_ns() - start) / 1e9);
    }
    ipc_cmd quit = {.kind = K_QUIT};
    if (!bench_stop_child(&ch, &quit, sizeof(quit)))
        rc = 1;
    BENCH_MOJO(MojoShutdown(NULL));
    return rc;
}
