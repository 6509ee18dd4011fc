/*
 * bench_data_pipe: data pipe throughput between two real processes against
 * a raw socketpair stream between the same two processes and against
 * memcpy in one process, all measured in the same run and reported as
 * ratios.
 *
 * The parent forks and execs /proc/self/exe with the role argument "child",
 * handing it two inherited sockets, as bench_ipc does: one end of the
 * socketpair the invitation travels on (after which it is cmojo's channel,
 * carrying the "boot" pipe) and one end of a plain socketpair for the
 * baseline. The parent is always the producer and the child the consumer.
 * For each chunk size the parent makes one data pipe of 4 (--capacity-x) x
 * the chunk but at least 256 KiB (256 KB, 256 KB, 4 MB: room for a few
 * chunks in flight, so neither side waits for the other's every chunk, and
 * never less than the ~200 KB a socketpair buffers) and hands the consumer to
 * the child with the first command for that size; the same pipe serves
 * every run of that size, so the timed runs see a warm ring, as the socket
 * and the memcpy buffers are warm. Per case the parent sends a command on
 * the boot pipe, waits for the child's "ready" (untimed), then the timed
 * loop moves --mb MiB (default 256) in chunks and ends when the child's
 * acknowledgement (bytes and checksum) has come back.
 *
 * Waiting: the producer blocks in MojoWait(WRITABLE) when the pipe is full;
 * the consumer blocks in MojoWait(READABLE) when it is empty, or with
 * --trap-reader reads from a trap handler on its IO thread (an event loop:
 * drain, re-arm), as bench_ipc's stream consumer does.
 *
 * Cases, for chunks of 4 KB, 64 KB and 1 MB:
 *   socketpair  the parent write()s each chunk in full (blocking stream
 *               socket, default buffer sizes); the child read()s each chunk
 *               in full into its buffer, checksums it, and at the end
 *               writes its ack on the same socket.
 *   memcpy      in the parent alone: each chunk is memcpy'd into a buffer of
 *               the pipe's capacity (at the next offset, wrapping, as into
 *               the ring) and then checksummed there: the least work any
 *               transfer must do, on one CPU. No second process.
 *   one-shot    MojoWriteData of the chunk (what does not fit is retried
 *               after MojoWait(WRITABLE)); the child MojoReadData's up to a
 *               chunk into its buffer (MojoWait(READABLE) when empty) and
 *               checksums it; the ack comes on the boot pipe.
 *   two-phase   MojoBeginWriteData, memcpy of as much of the chunk as the
 *               span takes, MojoEndWriteData, until the chunk is in; the
 *               child MojoBeginReadData's, checksums the whole readable span
 *               in place (possibly several chunks), MojoEndReadData's.
 *   shm ring    not a baseline but a bound: the same depth of ring in a
 *               memfd both processes map, with the two running totals in
 *               the shared page and a futex to sleep on, moved as two-phase
 *               moves it. It is what a shared-memory pipe would reach if it
 *               could trust its peer with its counters (a data pipe cannot),
 *               so it says how much of the gap to the socketpair goal any
 *               data pipe design could close on this machine.
 * Every variant touches every byte on the consuming side (the checksum, a
 * sum of 64-bit words), and every chunk is tagged with its index in its
 * first word, so a lost, repeated or stale chunk changes the checksum; the
 * parent checks the child's bytes and checksum against its own, and a
 * mismatch is a failure: a benchmark that got a wrong answer has measured
 * nothing.
 *
 * Method, as in bench_ipc: the machine is shared and noisy, so each case
 * first runs twice untimed (warm-up), then all cases run round-robin, R runs
 * of each (odd runs go through the list backwards). GB/s (10^9 bytes per
 * second) is the median run's; a ratio is the median of the per-run ratios
 * subject rate / baseline rate, with the extremes beside it. Every case of
 * one chunk size moves the same bytes, so a per-run ratio is the baseline's
 * time over the subject's.
 *
 * Goals (issue 5): a data pipe at least 3x the socketpair for chunks of
 * 64 KB and up (both ways of doing I/O), and two-phase transfer of large
 * chunks (64 KB and up) at least half of memcpy's rate.
 *
 * --single KIND SIZE runs one case once (after one untimed run), with
 * getppid() calls just before and after its timed loop as markers, for
 * strace or perf.
 *
 * --capacity-x K makes every pipe (and the memcpy buffer) K chunks deep (at
 * least 256 KiB).
 *
 * CPUs: by default nothing is pinned (the scheduler's choice). --cpus one
 * pins every thread of both processes to one CPU (every wake-up a context
 * switch there: the CPU cost of each side); --cpus split puts each process,
 * with its IO thread, on a CPU of its own (every wake-up of the other side
 * crosses CPUs, which on a small VM can cost tens of microseconds, for the
 * socketpair as much as for the pipe).
 *
 * Usage: bench_data_pipe [--quick] [--runs R] [--mb M] [--capacity-x K] [--trap-reader]
 *                        [--cpus any|one|split]
 *        bench_data_pipe [--mb M] [--capacity-x K] [--trap-reader] [--cpus any|one|split]
 *                        --single socketpair|memcpy|oneshot|twophase|shmring SIZE
 */
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/futex.h>

#include "bench_util.h"
#include "cmojo/wait.h"
#include "mojo/public/c/system/core.h"

/* Runs per measurement (at most BENCH_MAX_RUNS). */
#define DP_DEFAULT_RUNS 5u
#define DP_QUICK_RUNS 3u
/*
 * Bytes one run of a case moves. 256 MiB takes 20-150 ms at the rates seen
 * on the dev VM (memcpy ~15 GB/s, socketpair ~2-4 GB/s), long enough that
 * the untimed-looking parts of a run (the ack, a scheduler hiccup) are lost
 * in it: 12 cases x 7 runs stay around 10 s. --quick: a few seconds.
 */
#define DP_DEFAULT_MB 256u
#define DP_QUICK_MB 16u
#define DP_MAX_MB 16384u
/* Pipe capacity (and the memcpy baseline's buffer) in chunks, by default and at most. */
#define DP_DEFAULT_CAPACITY_X 4u
#define DP_MAX_CAPACITY_X 64u
/*
 * ... but never less than this: a socketpair buffers about 200 KB before its
 * writer blocks (net.core.wmem_default is 208 KB), and a pipe that buffers
 * less than the stream it is compared with measures wake-ups, not transfer.
 */
#define DP_MIN_CAPACITY (256u * 1024u)
/* Largest chunk measured; sizes the static buffers. */
#define DP_MAX_CHUNK (1024u * 1024u)
/* Every blocking wait gives up after this long (a hung peer is a failure). */
#define DP_DEADLINE_US (60u * 1000u * 1000u)
/* The goals. */
#define DP_SOCKETPAIR_GOAL 3.0
#define DP_MEMCPY_GOAL 0.5
#define DP_GOAL_MIN_CHUNK (64u * 1024u)

static const uint32_t g_sizes[] = {4096, 65536, 1024 * 1024};
#define NUM_SIZES (sizeof(g_sizes) / sizeof(g_sizes[0]))

typedef enum dp_kind {
    K_SOCKETPAIR,
    K_MEMCPY,
    K_ONESHOT,
    K_TWOPHASE,
    K_SHMRING,
    K_NUM,
    K_QUIT = K_NUM /* command only: the child exits */
} dp_kind;

static const char *const g_kind_names[K_NUM] = {"socketpair", "memcpy", "oneshot", "twophase",
                                                "shmring"};

/* What the parent sends on the boot pipe before each case. */
typedef struct dp_cmd {
    uint32_t kind;     /* dp_kind */
    uint32_t size;     /* bytes per chunk */
    uint32_t slot;     /* which data pipe and shm ring (one of each per chunk size) */
    uint32_t capacity; /* the shm ring's */
    uint64_t count;    /* chunks */
} dp_cmd;

/* The consumer's answer: what it received. */
typedef struct dp_ack {
    uint64_t bytes;
    uint64_t sum;
} dp_ack;

/* The consumer reads in a trap handler (else in a thread blocked in MojoWait). */
static bool g_trap_reader;

/* Where the threads run: the scheduler's choice, all on one CPU, or one CPU per process. */
typedef enum dp_cpus { CPUS_ANY, CPUS_ONE, CPUS_SPLIT } dp_cpus;
static dp_cpus g_cpus = CPUS_ANY;
/* The CPU the child pins itself to (-1: none), as its command line says. */
static int g_child_cpu = -1;

/* The parent's chunk (re-tagged per chunk) and the child's read buffer. */
static uint64_t g_chunk[DP_MAX_CHUNK / 8];
static uint64_t g_readbuf[DP_MAX_CHUNK / 8];
/* The memcpy baseline's stand-in for the ring (capacity bytes), and its size in chunks. */
static uint8_t *g_ring;
static unsigned g_capacity_x = DP_DEFAULT_CAPACITY_X;

/* A pipe's capacity (and the memcpy buffer's size) for chunks of size bytes. */
static uint32_t capacity_of(uint32_t size)
{
    uint32_t c = g_capacity_x * size;
    return c < DP_MIN_CAPACITY ? DP_MIN_CAPACITY : c;
}

static void describe_case(const dp_cmd *cmd)
{
    bench_set_case(cmd->kind < K_NUM ? g_kind_names[cmd->kind] : "?", cmd->size, cmd->count);
}

/* ------------------------------------------------------------ the data */

/* Chunk i's first word: distinct per chunk, so a lost or repeated chunk shows. */
static uint64_t tag_of(uint64_t i)
{
    return (i + 1) * UINT64_C(0x9e3779b97f4a7c15);
}

/*
 * The sum of len / 8 little 64-bit words at p (len a multiple of 8). Four
 * accumulators so the loads, not one chain of adds, set the pace.
 */
static uint64_t checksum(const void *p, size_t len)
{
    const uint8_t *b = p;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    BENCH_CHECK(len % 8 == 0);
    for (; i + 32 <= len; i += 32) {
        uint64_t w[4];
        memcpy(w, b + i, sizeof(w));
        s0 += w[0];
        s1 += w[1];
        s2 += w[2];
        s3 += w[3];
    }
    for (; i < len; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, sizeof(w));
        s0 += w;
    }
    return s0 + s1 + s2 + s3;
}

/* What the consumer's checksum must come to for count chunks of size bytes. */
static uint64_t expected_sum(uint32_t size, uint64_t count)
{
    uint64_t rest = checksum(g_chunk + 1, size - 8), sum = count * rest;
    for (uint64_t i = 0; i < count; i++)
        sum += tag_of(i);
    return sum;
}

/* ---------------------------------------------------------- cmojo messages */

/* Blocks until handle has signal (a closed peer or a timeout is a failure). */
static void wait_for(MojoHandle handle, MojoHandleSignals signal)
{
    BENCH_MOJO(MojoWait(handle, signal, DP_DEADLINE_US, NULL));
}

/*
 * Waits for and reads one message of exactly len bytes into dst; returns the
 * handle it carried (at most one), or MOJO_HANDLE_INVALID.
 */
static MojoHandle read_msg(MojoHandle pipe, void *dst, uint32_t len)
{
    MojoMessageHandle m;
    void *data = NULL;
    uint32_t n = 0, nh = 1;
    MojoHandle h = MOJO_HANDLE_INVALID;
    wait_for(pipe, MOJO_HANDLE_SIGNAL_READABLE);
    BENCH_MOJO(MojoReadMessage(pipe, NULL, &m));
    BENCH_MOJO(MojoGetMessageData(m, NULL, &data, &n, &h, &nh));
    BENCH_CHECK(n == len && nh <= 1);
    memcpy(dst, data, len);
    BENCH_MOJO(MojoDestroyMessage(m));
    return nh ? h : MOJO_HANDLE_INVALID;
}

/* ------------------------------------------------------------ the shm ring */

/*
 * The bound on what any shared-memory pipe can do here: a single-producer,
 * single-consumer ring in a memfd both processes map, with the two running
 * totals in the shared page itself and a futex for each side to sleep on
 * when it must. No validation, no messages, no IO thread, no system call
 * while neither side waits: what a data pipe would cost if its peer could be
 * trusted with its counters (it cannot; see DESIGN.md). Spans are contiguous,
 * as in two-phase I/O, and the consumer checksums in place.
 *
 * Each side publishes its total (seq_cst) and then bumps its sequence word;
 * a side about to sleep raises its flag, looks at the other's total again
 * and sleeps on the other's sequence word only if it has not moved, so a
 * wake-up cannot be lost (the Dekker pair: my flag then your total, your
 * total then my flag).
 */
typedef struct shm_ring {
    _Alignas(64) _Atomic uint64_t written; /* bytes the producer has published */
    _Atomic uint32_t wseq; /* bumped after each publish; the consumer sleeps on it */
    _Atomic uint32_t consumer_sleeping;
    _Alignas(64) _Atomic uint64_t read; /* bytes the consumer has released */
    _Atomic uint32_t rseq;
    _Atomic uint32_t producer_sleeping;
} shm_ring;

/* The ring's bytes start one page in. */
#define SHM_RING_HEADER 4096u

static void futex_wait(_Atomic uint32_t *word, uint32_t value)
{
    struct timespec deadline = {DP_DEADLINE_US / 1000000u, 0};
    long rv = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, value, &deadline, NULL, 0);
    BENCH_CHECK(rv == 0 || errno == EAGAIN || errno == EINTR);
}

static void futex_wake(_Atomic uint32_t *word)
{
    BENCH_CHECK(syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, 1, NULL, NULL, 0) >= 0);
}

/* Publishes n more bytes (mine: written or read) and wakes the other side if it sleeps. */
static void shm_publish(_Atomic uint64_t *mine, _Atomic uint32_t *seq, _Atomic uint32_t *sleeping,
                        uint64_t n)
{
    atomic_fetch_add(mine, n);
    atomic_fetch_add(seq, 1);
    if (atomic_load(sleeping))
        futex_wake(seq);
}

/* Sleeps until *theirs moves from seen (their total, their sequence word, my flag). */
static void shm_sleep(_Atomic uint64_t *theirs, uint64_t seen, _Atomic uint32_t *seq,
                      _Atomic uint32_t *sleeping)
{
    uint32_t s = atomic_load(seq);
    atomic_store(sleeping, 1);
    if (atomic_load(theirs) == seen)
        futex_wait(seq, s);
    atomic_store(sleeping, 0);
}

/* Maps a ring of capacity bytes (after its header) from fd. */
static shm_ring *shm_map(int fd, uint32_t capacity)
{
    void *p = mmap(NULL, SHM_RING_HEADER + capacity, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    BENCH_CHECK(p != MAP_FAILED);
    return p;
}

static uint8_t *shm_bytes(shm_ring *r)
{
    return (uint8_t *)r + SHM_RING_HEADER;
}

/* Producer: count tagged chunks of size into the ring. */
static void loop_shmring(shm_ring *r, uint32_t capacity, uint32_t size, uint64_t count)
{
    const uint8_t *chunk = (const uint8_t *)g_chunk;
    uint64_t written = atomic_load(&r->written);
    for (uint64_t i = 0; i < count; i++) {
        g_chunk[0] = tag_of(i);
        for (uint32_t off = 0; off < size;) {
            uint64_t read = atomic_load(&r->read);
            uint64_t room = capacity - (written - read);
            if (room == 0) {
                shm_sleep(&r->read, read, &r->rseq, &r->producer_sleeping);
                continue;
            }
            uint32_t at = (uint32_t)(written % capacity);
            uint64_t n = size - off;
            if (n > room)
                n = room;
            if (n > capacity - at)
                n = capacity - at;
            memcpy(shm_bytes(r) + at, chunk + off, n);
            shm_publish(&r->written, &r->wseq, &r->consumer_sleeping, n);
            written += n;
            off += (uint32_t)n;
        }
    }
}

/* Consumer: checksums total bytes in place, span by span. */
static dp_ack child_shmring(shm_ring *r, uint32_t capacity, uint64_t total)
{
    dp_ack ack = {0, 0};
    uint64_t read = atomic_load(&r->read);
    while (ack.bytes < total) {
        uint64_t written = atomic_load(&r->written);
        if (written == read) {
            shm_sleep(&r->written, written, &r->wseq, &r->consumer_sleeping);
            continue;
        }
        uint32_t at = (uint32_t)(read % capacity);
        uint64_t n = written - read;
        if (n > total - ack.bytes)
            n = total - ack.bytes;
        if (n > capacity - at)
            n = capacity - at;
        ack.sum += checksum(shm_bytes(r) + at, n);
        ack.bytes += n;
        shm_publish(&r->read, &r->rseq, &r->producer_sleeping, n);
        read += n;
    }
    return ack;
}

/* ------------------------------------------------------------------ child */

static dp_ack child_socketpair(int fd, uint32_t size, uint64_t count)
{
    dp_ack ack = {0, 0};
    for (uint64_t i = 0; i < count; i++) {
        bench_read_full(fd, g_readbuf, size);
        ack.sum += checksum(g_readbuf, size);
        ack.bytes += size;
    }
    return ack;
}

/* One consumer case in the child: the end it reads and what it has seen. */
typedef struct dp_reader {
    MojoHandle consumer;
    MojoHandle trap; /* trap-driven only */
    bool two_phase;
    uint32_t size;  /* one-shot: at most this many bytes a read (the chunk) */
    uint64_t total; /* bytes to read before acknowledging */
    dp_ack ack;
    sem_t finished; /* trap-driven: posted once total bytes have been read */
} dp_reader;

/*
 * Reads (one-shot: up to a chunk at a time into the buffer; two-phase: the
 * readable span, in place) and checksums until total bytes or the pipe is
 * empty. Returns true when all total bytes have come.
 */
static bool reader_drain(dp_reader *r)
{
    while (r->ack.bytes < r->total) {
        uint64_t left = r->total - r->ack.bytes;
        uint32_t n = 0;
        MojoResult rv;
        if (r->two_phase) {
            const void *buf = NULL;
            rv = MojoBeginReadData(r->consumer, NULL, &buf, &n);
            if (rv == MOJO_RESULT_SHOULD_WAIT)
                return false;
            BENCH_MOJO(rv);
            if (left < n)
                n = (uint32_t)left;
            r->ack.sum += checksum(buf, n);
            BENCH_MOJO(MojoEndReadData(r->consumer, n, NULL));
        } else {
            n = left < r->size ? (uint32_t)left : r->size;
            rv = MojoReadData(r->consumer, NULL, g_readbuf, &n);
            if (rv == MOJO_RESULT_SHOULD_WAIT)
                return false;
            BENCH_MOJO(rv);
            r->ack.sum += checksum(g_readbuf, n);
        }
        r->ack.bytes += n;
    }
    return true;
}

/* The reader in this thread, blocked in MojoWait(READABLE) whenever the pipe is empty. */
static void reader_run_wait(dp_reader *r)
{
    while (!reader_drain(r))
        wait_for(r->consumer, MOJO_HANDLE_SIGNAL_READABLE);
}

/* Drains, then re-arms; if arming finds data already there, goes round again. */
static void reader_drain_and_arm(dp_reader *r)
{
    while (!reader_drain(r)) {
        struct MojoTrapEvent ev = {.struct_size = sizeof(ev)};
        uint32_t nev = 1;
        MojoResult rv = MojoArmTrap(r->trap, NULL, &nev, &ev);
        if (rv == MOJO_RESULT_OK)
            return;
        BENCH_CHECK(rv == MOJO_RESULT_FAILED_PRECONDITION && nev == 1);
        BENCH_MOJO(ev.result); /* the producer never closes first */
    }
    BENCH_CHECK(sem_post(&r->finished) == 0);
}

/* Runs on the child's IO thread, the one that received the producer's count. */
static void reader_trap_handler(const struct MojoTrapEvent *event)
{
    if (event->result == MOJO_RESULT_CANCELLED)
        return; /* the trap was closed; the case may be gone already */
    BENCH_MOJO(event->result);
    reader_drain_and_arm((dp_reader *)event->trigger_context);
}

/* The reader in a trap handler (an event loop), this thread waiting for the end. */
static void reader_run_trap(dp_reader *r)
{
    BENCH_CHECK(sem_init(&r->finished, 0, 0) == 0);
    BENCH_MOJO(MojoCreateTrap(reader_trap_handler, NULL, &r->trap));
    BENCH_MOJO(MojoAddTrigger(r->trap, r->consumer, MOJO_HANDLE_SIGNAL_READABLE,
                              MOJO_TRIGGER_CONDITION_SIGNALS_SATISFIED, (uintptr_t)r, NULL));
    reader_drain_and_arm(r);
    while (sem_wait(&r->finished) != 0)
        BENCH_CHECK(errno == EINTR);
    /* Closing the trap delivers CANCELLED, which touches nothing. */
    BENCH_MOJO(MojoClose(r->trap));
    BENCH_CHECK(sem_destroy(&r->finished) == 0);
}

static int child_main(int boot_fd, int raw_fd)
{
    MojoHandle boot = bench_accept_parent(boot_fd);

    MojoHandle consumers[NUM_SIZES];
    shm_ring *rings[NUM_SIZES] = {NULL};
    uint32_t ring_capacity[NUM_SIZES] = {0};
    for (size_t i = 0; i < NUM_SIZES; i++)
        consumers[i] = MOJO_HANDLE_INVALID;
    for (;;) {
        dp_cmd cmd;
        MojoHandle h = read_msg(boot, &cmd, sizeof(cmd));
        if (cmd.kind == K_QUIT)
            break;
        describe_case(&cmd);
        BENCH_CHECK(cmd.kind < K_NUM && cmd.kind != K_MEMCPY && cmd.size >= 8 &&
                    cmd.size % 8 == 0 && cmd.size <= DP_MAX_CHUNK && cmd.slot < NUM_SIZES);
        if (h != MOJO_HANDLE_INVALID && cmd.kind == K_SHMRING) {
            struct MojoPlatformHandle ring_fd = {.struct_size = sizeof(ring_fd)};
            BENCH_CHECK(rings[cmd.slot] == NULL);
            BENCH_MOJO(MojoUnwrapPlatformHandle(h, NULL, &ring_fd));
            rings[cmd.slot] = shm_map((int)ring_fd.value, cmd.capacity);
            ring_capacity[cmd.slot] = cmd.capacity;
            close((int)ring_fd.value);
        } else if (h != MOJO_HANDLE_INVALID) {
            BENCH_CHECK(consumers[cmd.slot] == MOJO_HANDLE_INVALID);
            consumers[cmd.slot] = h;
        }
        /* The parent starts its timed loop once this end is ready to read. */
        uint64_t ready = 0;
        bench_write_msg(boot, &ready, sizeof(ready), MOJO_HANDLE_INVALID);
        uint64_t total = cmd.count * cmd.size;
        dp_ack ack;
        switch ((dp_kind)cmd.kind) {
        case K_SOCKETPAIR:
            ack = child_socketpair(raw_fd, cmd.size, cmd.count);
            bench_write_full(raw_fd, &ack, sizeof(ack));
            break;
        case K_SHMRING:
            BENCH_CHECK(rings[cmd.slot] != NULL);
            ack = child_shmring(rings[cmd.slot], ring_capacity[cmd.slot], total);
            bench_write_msg(boot, &ack, sizeof(ack), MOJO_HANDLE_INVALID);
            break;
        case K_ONESHOT:
        case K_TWOPHASE: {
            BENCH_CHECK(consumers[cmd.slot] != MOJO_HANDLE_INVALID);
            dp_reader r = {.consumer = consumers[cmd.slot],
                           .two_phase = cmd.kind == K_TWOPHASE,
                           .size = cmd.size,
                           .total = total};
            if (g_trap_reader)
                reader_run_trap(&r);
            else
                reader_run_wait(&r);
            bench_write_msg(boot, &r.ack, sizeof(r.ack), MOJO_HANDLE_INVALID);
            break;
        }
        default:
            BENCH_CHECK(false);
        }
    }
    for (size_t i = 0; i < NUM_SIZES; i++) {
        if (consumers[i] != MOJO_HANDLE_INVALID)
            BENCH_MOJO(MojoClose(consumers[i]));
        if (rings[i])
            BENCH_CHECK(munmap(rings[i], SHM_RING_HEADER + ring_capacity[i]) == 0);
    }
    BENCH_MOJO(MojoClose(boot));
    close(raw_fd);
    BENCH_MOJO(MojoShutdown(NULL));
    return 0;
}

/* ----------------------------------------------------------------- parent */

typedef struct dp_child {
    bench_child proc;
    MojoHandle producers[NUM_SIZES];
    bool consumer_sent[NUM_SIZES];
    MojoHandle consumers[NUM_SIZES]; /* until sent */
    shm_ring *rings[NUM_SIZES];
    int ring_fds[NUM_SIZES]; /* until sent */
} dp_child;

/* Starts this program as the child (see bench_spawn_child) and makes the pipes and rings. */
static void spawn_child(dp_child *ch)
{
    /* The child's command line: how it reads, and the CPU it pins itself to. */
    char cpu[16];
    snprintf(cpu, sizeof(cpu), "%d", g_child_cpu);
    const char *const extra[] = {g_trap_reader ? "trap" : "wait", cpu, NULL};
    bench_spawn_child(&ch->proc, extra);

    /* One pipe per chunk size, capacity_of() deep; consumers go with the first case. */
    for (size_t i = 0; i < NUM_SIZES; i++) {
        struct MojoCreateDataPipeOptions opts = {sizeof(opts), MOJO_CREATE_DATA_PIPE_FLAG_NONE, 1,
                                                 capacity_of(g_sizes[i])};
        BENCH_MOJO(MojoCreateDataPipe(&opts, &ch->producers[i], &ch->consumers[i]));
        ch->consumer_sent[i] = false;
        ch->ring_fds[i] = memfd_create("bench_shm_ring", MFD_CLOEXEC);
        BENCH_CHECK(ch->ring_fds[i] >= 0 &&
                    ftruncate(ch->ring_fds[i], SHM_RING_HEADER + capacity_of(g_sizes[i])) == 0);
        ch->rings[i] = shm_map(ch->ring_fds[i], capacity_of(g_sizes[i]));
    }
}

/* Tells the child to quit, reaps it, frees the pipes and rings; false if it did not exit with 0. */
static bool stop_child(dp_child *ch)
{
    dp_cmd quit = {.kind = K_QUIT};
    bool ok = bench_stop_child(&ch->proc, &quit, sizeof(quit));
    for (size_t i = 0; i < NUM_SIZES; i++) {
        BENCH_MOJO(MojoClose(ch->producers[i]));
        if (!ch->consumer_sent[i])
            BENCH_MOJO(MojoClose(ch->consumers[i]));
        if (ch->ring_fds[i] >= 0)
            close(ch->ring_fds[i]);
        BENCH_CHECK(munmap(ch->rings[i], SHM_RING_HEADER + capacity_of(g_sizes[i])) == 0);
    }
    return ok;
}

static void loop_socketpair(int fd, uint32_t size, uint64_t count)
{
    for (uint64_t i = 0; i < count; i++) {
        g_chunk[0] = tag_of(i);
        bench_write_full(fd, g_chunk, size);
    }
}

/* The baseline in one process: copy each chunk into the "ring", then checksum it there. */
static dp_ack loop_memcpy(uint32_t size, uint64_t count)
{
    dp_ack ack = {0, 0};
    uint8_t *ring = g_ring;
    size_t capacity = capacity_of(size), offset = 0;
    for (uint64_t i = 0; i < count; i++) {
        g_chunk[0] = tag_of(i);
        memcpy(ring + offset, g_chunk, size);
        ack.sum += checksum(ring + offset, size);
        ack.bytes += size;
        offset = (offset + size) % capacity;
    }
    return ack;
}

static void loop_oneshot(MojoHandle producer, uint32_t size, uint64_t count)
{
    const uint8_t *chunk = (const uint8_t *)g_chunk;
    for (uint64_t i = 0; i < count; i++) {
        g_chunk[0] = tag_of(i);
        for (uint32_t off = 0; off < size;) {
            uint32_t n = size - off;
            MojoResult rv = MojoWriteData(producer, chunk + off, &n, NULL);
            if (rv == MOJO_RESULT_SHOULD_WAIT) {
                wait_for(producer, MOJO_HANDLE_SIGNAL_WRITABLE);
                continue;
            }
            BENCH_MOJO(rv);
            off += n;
        }
    }
}

static void loop_twophase(MojoHandle producer, uint32_t size, uint64_t count)
{
    const uint8_t *chunk = (const uint8_t *)g_chunk;
    for (uint64_t i = 0; i < count; i++) {
        g_chunk[0] = tag_of(i);
        for (uint32_t off = 0; off < size;) {
            void *buf = NULL;
            uint32_t span = 0;
            MojoResult rv = MojoBeginWriteData(producer, NULL, &buf, &span);
            if (rv == MOJO_RESULT_SHOULD_WAIT) {
                wait_for(producer, MOJO_HANDLE_SIGNAL_WRITABLE);
                continue;
            }
            BENCH_MOJO(rv);
            uint32_t n = size - off < span ? size - off : span;
            memcpy(buf, chunk + off, n);
            BENCH_MOJO(MojoEndWriteData(producer, n, NULL));
            off += n;
        }
    }
}

/* Runs one case of count chunks; the timed loop's ns. */
static uint64_t run_case(dp_child *ch, dp_kind kind, size_t slot, uint64_t count)
{
    uint32_t size = g_sizes[slot];
    dp_cmd cmd = {.kind = (uint32_t)kind,
                  .size = size,
                  .slot = (uint32_t)slot,
                  .capacity = capacity_of(size),
                  .count = count};
    describe_case(&cmd);
    uint64_t want = expected_sum(size, count), t;
    dp_ack ack;
    if (kind == K_MEMCPY) {
        bench_marker();
        uint64_t t0 = bench_now_ns();
        ack = loop_memcpy(size, count);
        t = bench_now_ns() - t0;
        bench_marker();
    } else {
        MojoHandle attach = MOJO_HANDLE_INVALID;
        if (kind == K_SHMRING && ch->ring_fds[slot] >= 0) {
            struct MojoPlatformHandle ring_fd = {sizeof(ring_fd),
                                                 MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR,
                                                 (uint64_t)ch->ring_fds[slot]};
            BENCH_MOJO(MojoWrapPlatformHandle(&ring_fd, NULL, &attach));
            ch->ring_fds[slot] = -1;
        } else if ((kind == K_ONESHOT || kind == K_TWOPHASE) && !ch->consumer_sent[slot]) {
            attach = ch->consumers[slot];
            ch->consumer_sent[slot] = true;
        }
        bench_write_msg(ch->proc.boot, &cmd, sizeof(cmd), attach);
        uint64_t ready;
        BENCH_CHECK(read_msg(ch->proc.boot, &ready, sizeof(ready)) == MOJO_HANDLE_INVALID);
        bench_marker();
        uint64_t t0 = bench_now_ns();
        switch (kind) {
        case K_SOCKETPAIR:
            loop_socketpair(ch->proc.raw_fd, size, count);
            bench_read_full(ch->proc.raw_fd, &ack, sizeof(ack));
            break;
        case K_ONESHOT:
            loop_oneshot(ch->producers[slot], size, count);
            BENCH_CHECK(read_msg(ch->proc.boot, &ack, sizeof(ack)) == MOJO_HANDLE_INVALID);
            break;
        case K_TWOPHASE:
            loop_twophase(ch->producers[slot], size, count);
            BENCH_CHECK(read_msg(ch->proc.boot, &ack, sizeof(ack)) == MOJO_HANDLE_INVALID);
            break;
        case K_SHMRING:
            loop_shmring(ch->rings[slot], capacity_of(size), size, count);
            BENCH_CHECK(read_msg(ch->proc.boot, &ack, sizeof(ack)) == MOJO_HANDLE_INVALID);
            break;
        default:
            BENCH_CHECK(false);
        }
        t = bench_now_ns() - t0;
        bench_marker();
    }
    BENCH_CHECK(ack.bytes == count * size && ack.sum == want);
    return t;
}

/* ------------------------------------------------------------ measurements */

typedef struct measurement {
    dp_kind kind;
    size_t slot;
    uint64_t samples[BENCH_MAX_RUNS]; /* ns per run */
    double ns_median;                 /* per run */
} measurement;

#define NUM_MEASUREMENTS (K_NUM * NUM_SIZES)

static measurement g_m[NUM_MEASUREMENTS];

static measurement *find_m(dp_kind kind, size_t slot)
{
    for (size_t i = 0; i < NUM_MEASUREMENTS; i++)
        if (g_m[i].kind == kind && g_m[i].slot == slot)
            return &g_m[i];
    BENCH_CHECK(false);
    return NULL;
}

/*
 * Median of the per-run ratios subject rate / baseline rate (the same bytes
 * each, so baseline time / subject time), and their extremes.
 */
static double ratio_of(const measurement *s, const measurement *b, unsigned runs, double *lo,
                       double *hi)
{
    double r[BENCH_MAX_RUNS];
    for (unsigned i = 0; i < runs; i++)
        r[i] = (double)b->samples[i] / (double)s->samples[i];
    return bench_median_ratio(r, runs, lo, hi);
}

static uint64_t chunks_per_run(uint32_t size, uint64_t mb)
{
    return mb * 1024 * 1024 / size;
}

/* GB/s (10^9 bytes per second) of a run of `ns` moving count chunks of size. */
static double gbps(uint32_t size, uint64_t count, double ns)
{
    return (double)size * (double)count / ns;
}

static void print_report(unsigned runs, uint64_t mb, double total_s)
{
    static const char *const cpus[] = {"unpinned", "every thread on one CPU",
                                       "each process (and its IO thread) on its own CPU"};
    printf("bench_data_pipe: producer (parent) and consumer (child) processes, %s;\n"
           "%" PRIu64 " MiB per run, %u runs per case, round-robin; pipe capacity %ux the chunk,\n"
           "at least %u KiB;\n"
           "waiting: producer in MojoWait, consumer %s;\n"
           "GB/s = median run; ratio = median over runs of subject rate / baseline rate\n"
           "(min..max: the extreme per-run ratios)\n\n",
           cpus[g_cpus], mb, runs, g_capacity_x, DP_MIN_CAPACITY / 1024,
           g_trap_reader ? "in a trap handler" : "in MojoWait");
    printf("| chunk | pipe | data pipe | GB/s | socketpair GB/s | x socketpair | min..max | "
           "memcpy GB/s | x memcpy | min..max | goal |\n");
    printf("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
    bool sp_met = true, mc_met = true;
    for (size_t k = 0; k < NUM_SIZES; k++) {
        char sz[16], cap[16];
        uint32_t size = g_sizes[k];
        uint64_t count = chunks_per_run(size, mb);
        bench_size_label(size, sz, sizeof(sz));
        bench_size_label(capacity_of(size), cap, sizeof(cap));
        const measurement *sp = find_m(K_SOCKETPAIR, k), *mc = find_m(K_MEMCPY, k);
        static const struct {
            dp_kind kind;
            const char *what;
        } rows[] = {{K_ONESHOT, "one-shot"},
                    {K_TWOPHASE, "two-phase"},
                    {K_SHMRING, "shm ring (reference)"}};
        for (size_t j = 0; j < sizeof(rows) / sizeof(rows[0]); j++) {
            const measurement *s = find_m(rows[j].kind, k);
            double sp_lo, sp_hi, mc_lo, mc_hi;
            double sp_ratio = ratio_of(s, sp, runs, &sp_lo, &sp_hi);
            double mc_ratio = ratio_of(s, mc, runs, &mc_lo, &mc_hi);
            char goal[64] = "-";
            if (size >= DP_GOAL_MIN_CHUNK && rows[j].kind != K_SHMRING) {
                bool met_sp = sp_ratio >= DP_SOCKETPAIR_GOAL;
                sp_met = sp_met && met_sp;
                if (rows[j].kind == K_TWOPHASE) {
                    bool met_mc = mc_ratio >= DP_MEMCPY_GOAL;
                    mc_met = mc_met && met_mc;
                    snprintf(goal, sizeof(goal), ">= %.0fx sp %s; >= %.1fx memcpy %s",
                             DP_SOCKETPAIR_GOAL, met_sp ? "met" : "NOT met", DP_MEMCPY_GOAL,
                             met_mc ? "met" : "NOT met");
                } else {
                    snprintf(goal, sizeof(goal), ">= %.0fx sp %s", DP_SOCKETPAIR_GOAL,
                             met_sp ? "met" : "NOT met");
                }
            }
            printf("| %s | %s | %s | %.2f | %.2f | **%.2f** | %.2f..%.2f | %.2f | **%.2f** | "
                   "%.2f..%.2f | %s |\n",
                   sz, cap, rows[j].what, gbps(size, count, s->ns_median),
                   gbps(size, count, sp->ns_median), sp_ratio, sp_lo, sp_hi,
                   gbps(size, count, mc->ns_median), mc_ratio, mc_lo, mc_hi, goal);
        }
    }
    printf("\ngoals (chunks of %u KB and up): data pipe >= %.0fx socketpair: %s; "
           "two-phase >= %.1fx memcpy: %s\n",
           DP_GOAL_MIN_CHUNK / 1024, DP_SOCKETPAIR_GOAL, sp_met ? "met" : "NOT met", DP_MEMCPY_GOAL,
           mc_met ? "met" : "NOT met");
    printf("total %.1f s\n", total_s);
}

static void run_all(dp_child *ch, unsigned runs, uint64_t mb)
{
    size_t i = 0;
    for (size_t k = 0; k < NUM_SIZES; k++)
        for (int kind = 0; kind < K_NUM; kind++)
            g_m[i++] = (measurement){.kind = (dp_kind)kind, .slot = k};
    /* Warm-up: twice each, untimed (faults in rings and buffers, wakes the CPUs up). */
    for (int w = 0; w < 2; w++)
        for (i = 0; i < NUM_MEASUREMENTS; i++)
            (void)run_case(ch, g_m[i].kind, g_m[i].slot, chunks_per_run(g_sizes[g_m[i].slot], mb));
    /* Round-robin, alternately forwards and backwards, so noise lands on every case alike. */
    for (unsigned r = 0; r < runs; r++) {
        for (size_t k = 0; k < NUM_MEASUREMENTS; k++) {
            measurement *m = &g_m[r % 2 ? NUM_MEASUREMENTS - 1 - k : k];
            m->samples[r] = run_case(ch, m->kind, m->slot, chunks_per_run(g_sizes[m->slot], mb));
        }
    }
    for (i = 0; i < NUM_MEASUREMENTS; i++) {
        measurement *m = &g_m[i];
        m->ns_median = (double)bench_median_u64(m->samples, runs, NULL);
    }
}

static void usage(FILE *f, const char *argv0)
{
    fprintf(f,
            "usage: %s [--quick] [--runs R] [--mb M] [--capacity-x K] [--trap-reader]\n"
            "          [--cpus any|one|split]\n"
            "       %s [--mb M] [--capacity-x K] [--trap-reader] [--cpus any|one|split]\n"
            "           --single socketpair|memcpy|oneshot|twophase|shmring SIZE\n"
            "  --quick         smoke run: %u runs of %u MiB per case\n"
            "  --runs R        timed runs per case, median reported (default %u, max %u)\n"
            "  --mb M          MiB one run of a case moves (default %u)\n"
            "  --capacity-x K  pipe capacity (and memcpy buffer) in chunks, at least 256 KiB\n"
            "                  (default %u, max %u)\n"
            "  --trap-reader   the child reads in a trap handler on its IO thread (an event\n"
            "                  loop) instead of a thread blocked in MojoWait\n"
            "  --cpus any|one|split  unpinned (default), every thread of both processes on\n"
            "                  one CPU, or each process with its IO thread on a CPU of its own\n"
            "  --single ...    one run of one case (SIZE: 4096, 65536 or 1048576 bytes a chunk)\n"
            "                  between getppid() markers, for strace or perf\n",
            argv0, argv0, DP_QUICK_RUNS, DP_QUICK_MB, DP_DEFAULT_RUNS, BENCH_MAX_RUNS,
            DP_DEFAULT_MB, DP_DEFAULT_CAPACITY_X, DP_MAX_CAPACITY_X);
}

/* --single KIND SIZE, when given. */
static const char *g_single;
static uint64_t g_single_size;

/* Takes --cpus and its value, and --single and its two. */
static int other_option(int argc, char **argv, int i)
{
    const char *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(argv[i], "--cpus") && val &&
        (!strcmp(val, "any") || !strcmp(val, "one") || !strcmp(val, "split"))) {
        g_cpus = !strcmp(val, "one") ? CPUS_ONE : !strcmp(val, "split") ? CPUS_SPLIT : CPUS_ANY;
        return 2;
    }
    if (!strcmp(argv[i], "--single") && i + 2 < argc &&
        bench_parse_u64(argv[i + 2], 1, DP_MAX_CHUNK, &g_single_size)) {
        g_single = argv[i + 1];
        return 3;
    }
    return 0;
}

/* --single: one case, run once untimed, then once between markers. */
static int single_main(dp_child *ch, const char *kind_name, uint64_t size, uint64_t mb)
{
    int kind = 0;
    size_t slot = 0;
    while (kind < K_NUM && strcmp(g_kind_names[kind], kind_name) != 0)
        kind++;
    while (slot < NUM_SIZES && g_sizes[slot] != size)
        slot++;
    if (kind == K_NUM || slot == NUM_SIZES) {
        fprintf(stderr, "bench_data_pipe: bad --single case '%s' %" PRIu64 "\n", kind_name, size);
        return 2;
    }
    uint64_t count = chunks_per_run((uint32_t)size, mb);
    (void)run_case(ch, (dp_kind)kind, slot, count);
    bench_markers = true;
    uint64_t t = run_case(ch, (dp_kind)kind, slot, count);
    bench_markers = false;
    printf("parent pid: %d\nchild pid: %d\ncase: %s %" PRIu64 " B x %" PRIu64 "\nGB/s: %.2f\n",
           (int)getpid(), (int)ch->proc.pid, kind_name, size, count,
           gbps((uint32_t)size, count, (double)t));
    return 0;
}

int main(int argc, char **argv)
{
    bench_name = "bench_data_pipe";
    int boot_fd, raw_fd;
    if (bench_is_child(argc, argv, 2, &boot_fd, &raw_fd)) {
        g_trap_reader = !strcmp(argv[4], "trap");
        /* Before MojoInitialize, so that its IO thread inherits the mask. */
        uint64_t cpu;
        if (bench_parse_u64(argv[5], 0, CPU_SETSIZE - 1, &cpu))
            bench_pin_to_cpu((int)cpu);
        /* MojoShutdown (at the end of child_main) lets the last messages leave. */
        BENCH_MOJO(MojoInitialize(NULL));
        return child_main(boot_fd, raw_fd);
    }
    bench_role = "parent";

    uint64_t runs = DP_DEFAULT_RUNS, mb = DP_DEFAULT_MB, capacity_x = DP_DEFAULT_CAPACITY_X;
    bool quick = false, runs_given = false, mb_given = false;
    const bench_option opts[] = {
        {"--quick", &quick, NULL, 0, 0},
        {"--runs", &runs_given, &runs, 1, BENCH_MAX_RUNS},
        {"--mb", &mb_given, &mb, 1, DP_MAX_MB},
        {"--trap-reader", &g_trap_reader, NULL, 0, 0},
        {"--capacity-x", NULL, &capacity_x, 1, DP_MAX_CAPACITY_X},
        {NULL, NULL, NULL, 0, 0},
    };
    int rc = bench_parse_args(argc, argv, opts, other_option, usage);
    if (rc >= 0)
        return rc;
    g_capacity_x = (unsigned)capacity_x;
    if (quick) {
        if (!runs_given)
            runs = DP_QUICK_RUNS;
        if (!mb_given)
            mb = DP_QUICK_MB;
    }
    bench_fill_pattern(g_chunk, sizeof(g_chunk));
    g_ring = aligned_alloc(64, capacity_of(DP_MAX_CHUNK));
    BENCH_CHECK(g_ring != NULL);

    /* Before MojoInitialize, so that its IO thread (and the child) inherit the mask. */
    if (g_cpus != CPUS_ANY) {
        g_child_cpu = bench_allowed_cpu(g_cpus == CPUS_SPLIT ? 1 : 0);
        bench_pin_to_cpu(bench_allowed_cpu(0));
    }
    BENCH_MOJO(MojoInitialize(NULL));
    dp_child ch;
    spawn_child(&ch);

    rc = 0;
    if (g_single) {
        rc = single_main(&ch, g_single, g_single_size, mb);
    } else {
        uint64_t start = bench_now_ns();
        run_all(&ch, (unsigned)runs, mb);
        print_report((unsigned)runs, mb, (double)(bench_now_ns() - start) / 1e9);
    }
    if (!stop_child(&ch))
        rc = 1;
    BENCH_MOJO(MojoShutdown(NULL));
    free(g_ring);
    return rc;
}
