/*
 * bench_core: the in-process Mojo C API (src/core) against baselines
 * measured in the same run, reported as ratios.
 *
 * The machine this runs on is shared and noisy, so absolute figures mean
 * little. Every measurement runs round-robin with all the others (run 1 of
 * each, then run 2 of each, ...; odd runs go through the list backwards so
 * no measurement always follows the same one), after a warm-up pass. A row
 * of the table compares a subject with its baseline: ns/op are medians over
 * the runs, and the ratio is the median of the per-run ratios subject/base
 * (the two of a pair ran in the same round, seconds apart, so a slow spell
 * of the machine moves both), with the smallest and largest beside it.
 *
 * Rows:
 *   write+read   one message on a pipe, one thread: MojoCreateMessage +
 *                MojoAppendMessageData(COMMIT_SIZE) + memcpy + MojoWriteMessage,
 *                then MojoReadMessage + MojoGetMessageData + MojoDestroyMessage,
 *                for 10 B .. 10 KB. Baseline "alloc+lock+queue": malloc +
 *                memcpy, a push and a pop through a mutex-protected list (one
 *                lock/unlock each, as a writer and a reader would take it),
 *                free, of the same bytes: the irreducible "allocate, lock,
 *                queue, free".
 *   ping-pong    8-byte messages bounced between two threads, one op = one
 *                round trip. Baselines: two threads waking each other through
 *                two eventfds (write + blocking read), and through two futex
 *                words (the cheapest cross-thread wake-up Linux has).
 *                - MojoWait: each thread loops MojoWait(READABLE)/read/write.
 *                - trap->owner: each end has a trap watching READABLE; the
 *                  handler wakes the thread that owns the end (a futex), which
 *                  reads, re-arms and replies: how an event loop uses traps.
 *                Each is run with both threads pinned to one CPU (every
 *                wake-up is a context switch: mostly CPU work, steady), pinned
 *                to two CPUs (every wake-up crosses CPUs: on a VM that is an
 *                interrupt through the hypervisor, tens of microseconds) and
 *                unpinned (the scheduler's choice, which can change mid-run).
 *                - trap inline: each end has a trap watching READABLE whose
 *                  handler reads, re-arms and writes the reply itself. cmojo
 *                  runs a handler on the thread whose call changed the state,
 *                  i.e. the writer, so this never changes thread: the whole
 *                  exchange runs inside the first write, on one thread
 *                  (BENCH_TRAP_BURST round trips per kick). It is compared
 *                  with eventfd as asked, and with a one-thread baseline.
 *   create+close MojoCreateMessagePipe + 2 MojoClose. Baselines: socketpair +
 *                2 close (what the kernel charges for the primitive a pipe
 *                stands in for), and 2 calloc/free + one lock/unlock (the
 *                user-space floor: two endpoint objects registered in a locked
 *                table).
 *   query        MojoQueryHandleSignalsState on random handles out of 10,000
 *                open ones (5,000 pipes) vs the same with 10 open: the ratio
 *                shows whether a lookup gets dearer as the table fills. Both
 *                also against "lock+index": an uncontended mutex lock, a
 *                load from a 24-byte-slot array of the same size with a
 *                generation check, unlock.
 *
 * System calls: before the timed runs, the write+read (and its baseline),
 * trap-inline, create+close and query loops run again in a thread under a
 * seccomp filter that reports each system call of that thread to the main
 * thread (SECCOMP_RET_USER_NOTIF, answered with "continue", so the calls still
 * run); calls between marker calls are counted, and "sys/op" in the table is
 * that count per op. Each loop first runs once uncounted with the same op
 * count, so the heap has grown to what the loop needs. --syscall-check runs
 * the write+read, baseline and trap-inline loops alone between getppid()
 * markers, for bench/syscall_check.sh to count under strace.
 *
 * Every API result is checked (a benchmark that got an error has measured
 * nothing), and every case ends with no handle and no message left.
 *
 * Usage: bench_core [--quick] [--iterations N] [--runs R] [--syscall-check]
 */
#include <errno.h>
#include <inttypes.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/futex.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "bench_util.h"
#include "cmojo/wait.h"
#include "core/core.h"
#include "mojo/public/c/system/core.h"

/*
 * Base op count per run. Each measurement does this times its scale (ping-pong
 * round trips cost microseconds, a query tens of nanoseconds). The default, 5
 * runs, takes ~10 s on the 2-core dev box; --quick does a tenth of the
 * work and 3 runs for CI smoke (~0.7 s; ~1.6 s under ASan).
 */
#define BENCH_DEFAULT_ITERATIONS 100000u
#define BENCH_DEFAULT_RUNS 5u
#define BENCH_QUICK_DIVISOR 10u
#define BENCH_QUICK_RUNS 3u
/* Largest payload measured (10 KB); sizes the static source buffer. */
#define BENCH_MAX_PAYLOAD 10240u
/* Ping-pong message size: a small control message. */
#define BENCH_PING_BYTES 8u
/* Handles open in the large-table query case (5,000 pipes), and the small one. */
#define BENCH_MANY_HANDLES 10000u
#define BENCH_FEW_HANDLES 10u
/*
 * Round trips the inline trap ping-pong runs per kick. Everything in a kick
 * happens inside one MojoWriteMessage call, whose queue of pending trap
 * events grows by two entries per round trip until the call returns; a
 * bounded burst keeps that queue (and the bench's memory) small.
 */
#define BENCH_TRAP_BURST 1000u
/* Ops per case in the seccomp system-call count (each syscall costs a round trip). */
#define BENCH_SYSCALL_OPS 2000u
/* The stated goal for ping-pong, as a ratio to the eventfd baseline. */
#define BENCH_PING_PONG_GOAL 1.5

/*
 * Beyond this ratio between the largest and the smallest per-run ratio, a
 * ping-pong row measured where the scheduler placed the threads (see the
 * note printed with the goals) and gets no verdict.
 */
#define BENCH_PLACEMENT_SPREAD 4.0
/* Size of each endpoint object the create+close floor allocates (~ a pipe dispatcher). */
#define BENCH_ENDPOINT_BYTES 128u

typedef struct bench_config {
    uint64_t iterations;
    unsigned runs;
} bench_config;

static uint8_t g_payload[BENCH_MAX_PAYLOAD];

static const struct MojoAppendMessageDataOptions g_commit = {
    sizeof(struct MojoAppendMessageDataOptions), MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE};

/* Every case must leave the core as it found it. */
static void check_core_empty(void)
{
    BENCH_CHECK(core_debug_handle_count() == 0);
    BENCH_CHECK(core_debug_message_count() == 0);
}

/* xorshift64: the same cheap random index in a subject and its baseline. */
static uint32_t pick(uint64_t *s, uint32_t n)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return (uint32_t)(((x >> 32) * (uint64_t)n) >> 32);
}

/* ------------------------------------------------------ futex semaphore */

/*
 * A binary semaphore on one futex word. post always issues FUTEX_WAKE (as an
 * eventfd write always is a system call), so the futex baseline is the plain
 * wake-up cost, not a spin.
 */
static void fsem_post(atomic_uint *s)
{
    atomic_store_explicit(s, 1, memory_order_release);
    BENCH_CHECK(syscall(SYS_futex, s, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0) >= 0);
}

static void fsem_wait(atomic_uint *s)
{
    while (atomic_exchange_explicit(s, 0, memory_order_acquire) == 0) {
        long rv = syscall(SYS_futex, s, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
        BENCH_CHECK(rv == 0 || errno == EAGAIN || errno == EINTR);
    }
}

/* ----------------------------------------------------------- messages */

static void write_bytes(MojoHandle h, const void *src, size_t len)
{
    MojoMessageHandle m;
    void *buf = NULL;
    uint32_t cap = 0;
    BENCH_MOJO(MojoCreateMessage(NULL, &m));
    BENCH_MOJO(MojoAppendMessageData(m, (uint32_t)len, NULL, 0, &g_commit, &buf, &cap));
    BENCH_CHECK(buf != NULL && cap >= len);
    memcpy(buf, src, len);
    BENCH_MOJO(MojoWriteMessage(h, m, NULL));
}

/* Reads one message that must be there and be len bytes; copies it to dst. */
static void read_bytes(MojoHandle h, void *dst, size_t len)
{
    MojoMessageHandle m;
    void *data = NULL;
    uint32_t n = 0, nh = 0;
    BENCH_MOJO(MojoReadMessage(h, NULL, &m));
    BENCH_MOJO(MojoGetMessageData(m, NULL, &data, &n, NULL, &nh));
    BENCH_CHECK(n == len && nh == 0);
    memcpy(dst, data, len);
    BENCH_MOJO(MojoDestroyMessage(m));
}

/* One op of the write+read case: the message is checked, not copied out. */
static void write_read_once(MojoHandle a, MojoHandle b, size_t len, uint8_t tag)
{
    MojoMessageHandle m;
    void *buf = NULL;
    uint32_t cap = 0;
    BENCH_MOJO(MojoCreateMessage(NULL, &m));
    BENCH_MOJO(MojoAppendMessageData(m, (uint32_t)len, NULL, 0, &g_commit, &buf, &cap));
    BENCH_CHECK(buf != NULL && cap >= len);
    memcpy(buf, g_payload, len);
    ((uint8_t *)buf)[0] = tag;
    BENCH_MOJO(MojoWriteMessage(a, m, NULL));

    MojoMessageHandle r;
    void *data = NULL;
    uint32_t n = 0, nh = 0;
    BENCH_MOJO(MojoReadMessage(b, NULL, &r));
    BENCH_MOJO(MojoGetMessageData(r, NULL, &data, &n, NULL, &nh));
    BENCH_CHECK(n == len && nh == 0 && ((const uint8_t *)data)[0] == tag);
    BENCH_MOJO(MojoDestroyMessage(r));
}

static void write_read_loop(MojoHandle a, MojoHandle b, size_t len, uint64_t iters)
{
    for (uint64_t i = 0; i < iters; i++)
        write_read_once(a, b, len, (uint8_t)i);
}

/* ------------------------------------------------ 1. write+read, baseline */

typedef struct base_msg {
    struct base_msg *next;
    size_t len;
    uint8_t data[];
} base_msg;

typedef struct base_queue {
    pthread_mutex_t lock;
    base_msg *head, **tail;
} base_queue;

static void base_send_recv(base_queue *q, size_t len, uint8_t tag)
{
    base_msg *m = malloc(sizeof(*m) + len);
    BENCH_CHECK(m != NULL);
    m->next = NULL;
    m->len = len;
    memcpy(m->data, g_payload, len);
    m->data[0] = tag;
    pthread_mutex_lock(&q->lock);
    *q->tail = m;
    q->tail = &m->next;
    pthread_mutex_unlock(&q->lock);

    pthread_mutex_lock(&q->lock);
    base_msg *got = q->head;
    q->head = got->next;
    if (!q->head)
        q->tail = &q->head;
    pthread_mutex_unlock(&q->lock);
    BENCH_ESCAPE(got);
    BENCH_CHECK(got->len == len && got->data[0] == tag);
    free(got);
}

static void base_queue_init(base_queue *q)
{
    BENCH_CHECK(pthread_mutex_init(&q->lock, NULL) == 0);
    q->head = NULL;
    q->tail = &q->head;
}

static void base_queue_destroy(base_queue *q)
{
    BENCH_CHECK(q->head == NULL);
    pthread_mutex_destroy(&q->lock);
}

static void alloc_lock_loop(base_queue *q, size_t len, unsigned msgs_per_op, uint64_t iters)
{
    for (uint64_t i = 0; i < iters; i++)
        for (unsigned k = 0; k < msgs_per_op; k++)
            base_send_recv(q, len, (uint8_t)(i + k));
}

static uint64_t run_alloc_lock(uint64_t iters, size_t len, unsigned msgs_per_op)
{
    base_queue q;
    base_queue_init(&q);
    uint64_t t0 = bench_now_ns();
    alloc_lock_loop(&q, len, msgs_per_op, iters);
    uint64_t t = bench_now_ns() - t0;
    base_queue_destroy(&q);
    return t;
}

static uint64_t case_alloc_lock(uint64_t iters, size_t len)
{
    return run_alloc_lock(iters, len, 1);
}

/* A round trip of the one-thread trap ping-pong is two messages. */
static uint64_t case_alloc_lock_rtt(uint64_t iters, size_t len)
{
    return run_alloc_lock(iters, len, 2);
}

static uint64_t case_write_read(uint64_t iters, size_t len)
{
    MojoHandle a, b;
    BENCH_MOJO(MojoCreateMessagePipe(NULL, &a, &b));
    uint64_t t0 = bench_now_ns();
    write_read_loop(a, b, len, iters);
    uint64_t t = bench_now_ns() - t0;
    BENCH_MOJO(MojoClose(a));
    BENCH_MOJO(MojoClose(b));
    return t;
}

/* ----------------------------------------------------------- 2. ping-pong */

/* One end of a ping-pong: side 0 is the timing (main) thread, side 1 the peer. */
typedef struct pp_side {
    struct pp_ctx *ctx;
    int index;
    MojoHandle end, trap;
    atomic_uint sem;   /* trap->owner: the handler posts, the owner waits */
    bool pending;      /* trap->owner: arming found the end readable already */
    uint64_t received; /* trap inline: messages read by this side's handler */
} pp_side;

typedef struct pp_ctx {
    uint64_t iters;
    atomic_uint started;
    pp_side side[2];
    /* eventfd baseline: efd[0] wakes the peer, efd[1] wakes main. */
    int efd[2];
    /* futex baseline: sem[0] wakes the peer, sem[1] main; slot[i] is the message. */
    atomic_uint sem[2];
    uint64_t slot[2];
    /* trap inline */
    uint64_t target;        /* round trips to complete before the kick returns */
    pthread_t kicker;       /* the thread that wrote the first message */
    atomic_uint foreign;    /* handler calls seen on another thread */
    atomic_uint not_inside; /* handler calls without FLAG_WITHIN_API_CALL */
    int peer_cpu;           /* the CPU the peer thread is pinned to, -1 none */
} pp_ctx;

/*
 * Where the two threads of a ping-pong run. On one CPU each wake-up is a
 * context switch and the figure is mostly CPU work; on two CPUs it is a
 * cross-CPU wake-up of an idle CPU (very dear on a VM, where it is an
 * inter-processor interrupt through the hypervisor); unpinned, the scheduler
 * picks, and the figure wanders between the two.
 */
enum { PP_SAME, PP_SPLIT, PP_FREE };

static cpu_set_t g_startup_cpus; /* the process's affinity at startup */
static int g_cpu[2] = {-1, -1};  /* the first two CPUs it may run on */

static void find_cpus(void)
{
    BENCH_CHECK(sched_getaffinity(0, sizeof(g_startup_cpus), &g_startup_cpus) == 0);
    int found = 0;
    for (int c = 0; c < CPU_SETSIZE && found < 2; c++)
        if (CPU_ISSET(c, &g_startup_cpus))
            g_cpu[found++] = c;
}

/* A ping-pong of iters round trips, nothing set up yet. */
static void pp_init(pp_ctx *ctx, uint64_t iters)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->iters = iters;
}

/* Pins the calling (timing) thread and chooses the peer's CPU. */
static void pp_place(pp_ctx *ctx, size_t placement)
{
    ctx->peer_cpu = -1;
    if (placement == PP_SAME || placement == PP_SPLIT) {
        BENCH_CHECK(g_cpu[0] >= 0);
        bench_pin_to_cpu(g_cpu[0]);
        ctx->peer_cpu = placement == PP_SAME ? g_cpu[0] : g_cpu[1];
        BENCH_CHECK(ctx->peer_cpu >= 0);
    }
}

static void pp_unplace(void)
{
    BENCH_CHECK(pthread_setaffinity_np(pthread_self(), sizeof(g_startup_cpus), &g_startup_cpus) ==
                0);
}

typedef void *(*pp_peer_fn)(void *arg);

static void pp_start_peer(pp_ctx *ctx, pp_peer_fn fn, pthread_t *thread)
{
    pthread_attr_t attr;
    BENCH_CHECK(pthread_attr_init(&attr) == 0);
    if (ctx->peer_cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(ctx->peer_cpu, &set);
        BENCH_CHECK(pthread_attr_setaffinity_np(&attr, sizeof(set), &set) == 0);
    }
    atomic_store(&ctx->started, 0);
    BENCH_CHECK(pthread_create(thread, &attr, fn, ctx) == 0);
    pthread_attr_destroy(&attr);
    fsem_wait(&ctx->started);
}

static void write_u64(MojoHandle h, uint64_t v)
{
    write_bytes(h, &v, sizeof(v));
}

static uint64_t read_u64(MojoHandle h)
{
    uint64_t v;
    read_bytes(h, &v, sizeof(v));
    return v;
}

_Static_assert(BENCH_PING_BYTES == sizeof(uint64_t), "ping-pong messages are one uint64_t");

/* eventfd: a write of 8 bytes wakes the reader, which gets those 8 bytes. */
static void *eventfd_peer(void *arg)
{
    pp_ctx *ctx = arg;
    fsem_post(&ctx->started);
    for (uint64_t i = 0; i < ctx->iters; i++) {
        uint64_t v;
        BENCH_CHECK(read(ctx->efd[0], &v, sizeof(v)) == (ssize_t)sizeof(v));
        BENCH_CHECK(write(ctx->efd[1], &v, sizeof(v)) == (ssize_t)sizeof(v));
    }
    return NULL;
}

static uint64_t case_pp_eventfd(uint64_t iters, size_t placement)
{
    pp_ctx ctx;
    pp_init(&ctx, iters);
    pp_place(&ctx, placement);
    ctx.efd[0] = eventfd(0, EFD_CLOEXEC);
    ctx.efd[1] = eventfd(0, EFD_CLOEXEC);
    BENCH_CHECK(ctx.efd[0] >= 0 && ctx.efd[1] >= 0);
    pthread_t peer;
    pp_start_peer(&ctx, eventfd_peer, &peer);
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < iters; i++) {
        uint64_t v = i + 1, got = 0;
        BENCH_CHECK(write(ctx.efd[0], &v, sizeof(v)) == (ssize_t)sizeof(v));
        BENCH_CHECK(read(ctx.efd[1], &got, sizeof(got)) == (ssize_t)sizeof(got));
        BENCH_CHECK(got == v);
    }
    uint64_t t = bench_now_ns() - t0;
    BENCH_CHECK(pthread_join(peer, NULL) == 0);
    close(ctx.efd[0]);
    close(ctx.efd[1]);
    pp_unplace();
    return t;
}

static void *futex_peer(void *arg)
{
    pp_ctx *ctx = arg;
    fsem_post(&ctx->started);
    for (uint64_t i = 0; i < ctx->iters; i++) {
        fsem_wait(&ctx->sem[0]);
        ctx->slot[1] = ctx->slot[0];
        fsem_post(&ctx->sem[1]);
    }
    return NULL;
}

static uint64_t case_pp_futex(uint64_t iters, size_t placement)
{
    pp_ctx ctx;
    pp_init(&ctx, iters);
    pp_place(&ctx, placement);
    pthread_t peer;
    pp_start_peer(&ctx, futex_peer, &peer);
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < iters; i++) {
        ctx.slot[0] = i + 1;
        fsem_post(&ctx.sem[0]);
        fsem_wait(&ctx.sem[1]);
        BENCH_CHECK(ctx.slot[1] == i + 1);
    }
    uint64_t t = bench_now_ns() - t0;
    BENCH_CHECK(pthread_join(peer, NULL) == 0);
    pp_unplace();
    return t;
}

static void pp_open(pp_ctx *ctx, uint64_t iters)
{
    pp_init(ctx, iters);
    BENCH_MOJO(MojoCreateMessagePipe(NULL, &ctx->side[0].end, &ctx->side[1].end));
    for (int i = 0; i < 2; i++) {
        ctx->side[i].ctx = ctx;
        ctx->side[i].index = i;
    }
}

static void pp_close(pp_ctx *ctx)
{
    /* Traps first: an armed trap would see its peer close (FAILED_PRECONDITION). */
    for (int i = 0; i < 2; i++)
        if (ctx->side[i].trap != MOJO_HANDLE_INVALID)
            BENCH_MOJO(MojoClose(ctx->side[i].trap));
    for (int i = 0; i < 2; i++)
        BENCH_MOJO(MojoClose(ctx->side[i].end));
    check_core_empty();
}

/* After the timed loop of a ping-pong on a pipe: joins the peer, closes, unpins. */
static void pp_finish(pp_ctx *ctx, pthread_t peer)
{
    BENCH_CHECK(pthread_join(peer, NULL) == 0);
    pp_close(ctx);
    pp_unplace();
}

/* Each end watched by its own trap; context is the side. */
static void pp_add_traps(pp_ctx *ctx, MojoTrapEventHandler handler)
{
    for (int i = 0; i < 2; i++) {
        pp_side *s = &ctx->side[i];
        BENCH_MOJO(MojoCreateTrap(handler, NULL, &s->trap));
        BENCH_MOJO(MojoAddTrigger(s->trap, s->end, MOJO_HANDLE_SIGNAL_READABLE,
                                  MOJO_TRIGGER_CONDITION_SIGNALS_SATISFIED, (uintptr_t)s, NULL));
        BENCH_MOJO(MojoArmTrap(s->trap, NULL, NULL, NULL));
    }
}

/* The side a trap event is for, or NULL when it only says the trap was closed. */
static pp_side *pp_event_side(const struct MojoTrapEvent *event)
{
    if (event->result == MOJO_RESULT_CANCELLED)
        return NULL;
    BENCH_CHECK(event->result == MOJO_RESULT_OK);
    return (pp_side *)event->trigger_context;
}

/* MojoWait: each thread blocks in MojoWait until its end is readable. */
static void *wait_peer(void *arg)
{
    pp_ctx *ctx = arg;
    MojoHandle end = ctx->side[1].end;
    fsem_post(&ctx->started);
    for (uint64_t i = 0; i < ctx->iters; i++) {
        BENCH_MOJO(MojoWait(end, MOJO_HANDLE_SIGNAL_READABLE, MOJO_DEADLINE_INDEFINITE, NULL));
        write_u64(end, read_u64(end));
    }
    return NULL;
}

static uint64_t case_pp_wait(uint64_t iters, size_t placement)
{
    pp_ctx ctx;
    pp_open(&ctx, iters);
    pp_place(&ctx, placement);
    MojoHandle end = ctx.side[0].end;
    pthread_t peer;
    pp_start_peer(&ctx, wait_peer, &peer);
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < iters; i++) {
        write_u64(end, i + 1);
        BENCH_MOJO(MojoWait(end, MOJO_HANDLE_SIGNAL_READABLE, MOJO_DEADLINE_INDEFINITE, NULL));
        BENCH_CHECK(read_u64(end) == i + 1);
    }
    uint64_t t = bench_now_ns() - t0;
    pp_finish(&ctx, peer);
    return t;
}

/* trap->owner: the handler (running on the writer's thread) wakes the owner. */
static void owner_handler(const struct MojoTrapEvent *event)
{
    pp_side *s = pp_event_side(event);
    if (s)
        fsem_post(&s->sem);
}

static void owner_wait(pp_side *s)
{
    if (s->pending)
        s->pending = false;
    else
        fsem_wait(&s->sem);
}

/* Re-arms after reading; if a message slipped in meanwhile, do not wait for it. */
static void owner_rearm(pp_side *s)
{
    MojoResult rv = MojoArmTrap(s->trap, NULL, NULL, NULL);
    BENCH_CHECK(rv == MOJO_RESULT_OK || rv == MOJO_RESULT_FAILED_PRECONDITION);
    s->pending = rv == MOJO_RESULT_FAILED_PRECONDITION;
}

static void *owner_peer(void *arg)
{
    pp_ctx *ctx = arg;
    pp_side *s = &ctx->side[1];
    fsem_post(&ctx->started);
    for (uint64_t i = 0; i < ctx->iters; i++) {
        owner_wait(s);
        uint64_t v = read_u64(s->end);
        owner_rearm(s);
        write_u64(s->end, v);
    }
    return NULL;
}

static uint64_t case_pp_trap_owner(uint64_t iters, size_t placement)
{
    pp_ctx ctx;
    pp_open(&ctx, iters);
    pp_place(&ctx, placement);
    pp_add_traps(&ctx, owner_handler);
    pp_side *s = &ctx.side[0];
    pthread_t peer;
    pp_start_peer(&ctx, owner_peer, &peer);
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < iters; i++) {
        write_u64(s->end, i + 1);
        owner_wait(s);
        BENCH_CHECK(read_u64(s->end) == i + 1);
        owner_rearm(s);
    }
    uint64_t t = bench_now_ns() - t0;
    pp_finish(&ctx, peer);
    return t;
}

/*
 * trap inline: side 1's handler echoes, side 0's handler counts a round trip
 * and sends the next ping until the kick's target is reached.
 */
static void inline_handler(const struct MojoTrapEvent *event)
{
    pp_side *s = pp_event_side(event);
    if (!s)
        return;
    pp_ctx *ctx = s->ctx;
    if (!pthread_equal(pthread_self(), ctx->kicker))
        atomic_fetch_add(&ctx->foreign, 1);
    if (!(event->flags & MOJO_TRAP_EVENT_FLAG_WITHIN_API_CALL))
        atomic_fetch_add(&ctx->not_inside, 1);
    uint64_t v = read_u64(s->end);
    s->received++;
    BENCH_MOJO(MojoArmTrap(s->trap, NULL, NULL, NULL));
    if (s->index == 1) {
        write_u64(s->end, v);
    } else {
        BENCH_CHECK(v == s->received);
        if (s->received < ctx->target)
            write_u64(s->end, s->received + 1);
    }
}

static void inline_round_trips(pp_ctx *ctx, uint64_t iters)
{
    ctx->kicker = pthread_self();
    for (uint64_t done = 0; done < iters;) {
        uint64_t burst = iters - done < BENCH_TRAP_BURST ? iters - done : BENCH_TRAP_BURST;
        ctx->target = done + burst;
        write_u64(ctx->side[0].end, done + 1);
        /* The whole burst ran inside that write. */
        BENCH_CHECK(ctx->side[0].received == ctx->target);
        done = ctx->target;
    }
}

static uint64_t case_pp_trap_inline(uint64_t iters, size_t unused)
{
    (void)unused;
    pp_ctx ctx;
    pp_open(&ctx, iters);
    pp_add_traps(&ctx, inline_handler);
    uint64_t t0 = bench_now_ns();
    inline_round_trips(&ctx, iters);
    uint64_t t = bench_now_ns() - t0;
    BENCH_CHECK(atomic_load(&ctx.foreign) == 0);
    BENCH_CHECK(atomic_load(&ctx.not_inside) == 0);
    pp_close(&ctx);
    return t;
}

/* -------------------------------------------------------- 3. create+close */

static uint64_t case_create_close(uint64_t iters, size_t unused)
{
    (void)unused;
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < iters; i++) {
        MojoHandle a, b;
        BENCH_MOJO(MojoCreateMessagePipe(NULL, &a, &b));
        BENCH_MOJO(MojoClose(a));
        BENCH_MOJO(MojoClose(b));
    }
    return bench_now_ns() - t0;
}

static uint64_t case_socketpair(uint64_t iters, size_t unused)
{
    (void)unused;
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < iters; i++) {
        int sv[2];
        BENCH_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        BENCH_CHECK(close(sv[0]) == 0 && close(sv[1]) == 0);
    }
    return bench_now_ns() - t0;
}

static uint64_t case_two_allocs(uint64_t iters, size_t unused)
{
    (void)unused;
    pthread_mutex_t lock;
    BENCH_CHECK(pthread_mutex_init(&lock, NULL) == 0);
    void *table[2] = {NULL, NULL};
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < iters; i++) {
        void *a = calloc(1, BENCH_ENDPOINT_BYTES), *b = calloc(1, BENCH_ENDPOINT_BYTES);
        BENCH_CHECK(a != NULL && b != NULL);
        pthread_mutex_lock(&lock);
        table[0] = a;
        table[1] = b;
        BENCH_ESCAPE(table);
        table[0] = table[1] = NULL;
        pthread_mutex_unlock(&lock);
        free(a);
        free(b);
    }
    uint64_t t = bench_now_ns() - t0;
    pthread_mutex_destroy(&lock);
    return t;
}

/* --------------------------------------------------------------- 4. query */

typedef struct handle_set {
    MojoHandle *h;
    uint32_t n;
} handle_set;

static void open_handles(handle_set *hs, uint32_t n)
{
    BENCH_CHECK(n % 2 == 0);
    hs->h = malloc(n * sizeof(*hs->h));
    BENCH_CHECK(hs->h != NULL);
    hs->n = n;
    for (uint32_t i = 0; i < n; i += 2)
        BENCH_MOJO(MojoCreateMessagePipe(NULL, &hs->h[i], &hs->h[i + 1]));
}

static void close_handles(handle_set *hs)
{
    for (uint32_t i = 0; i < hs->n; i++)
        BENCH_MOJO(MojoClose(hs->h[i]));
    free(hs->h);
    hs->h = NULL;
}

static void query_loop(const handle_set *hs, uint64_t iters, uint64_t seed)
{
    uint64_t rng = seed | 1, sum = 0;
    for (uint64_t i = 0; i < iters; i++) {
        struct MojoHandleSignalsState st;
        BENCH_MOJO(MojoQueryHandleSignalsState(hs->h[pick(&rng, hs->n)], &st));
        sum += st.satisfied_signals;
    }
    /* Every end of an idle pipe with a live peer is writable and nothing else. */
    BENCH_CHECK(sum == iters * MOJO_HANDLE_SIGNAL_WRITABLE);
}

static uint64_t case_query(uint64_t iters, size_t live)
{
    handle_set hs;
    open_handles(&hs, (uint32_t)live);
    uint64_t t0 = bench_now_ns();
    query_loop(&hs, iters, iters);
    uint64_t t = bench_now_ns() - t0;
    close_handles(&hs);
    return t;
}

/* Shaped like a handle-table slot: object, generation, busy, free link. */
typedef struct base_slot {
    void *obj;
    uint32_t gen, busy, next_free;
} base_slot;

static uint64_t case_lock_index(uint64_t iters, size_t live)
{
    base_slot *slots = calloc(live, sizeof(*slots));
    uint64_t *values = malloc(live * sizeof(*values));
    BENCH_CHECK(slots != NULL && values != NULL);
    for (size_t i = 0; i < live; i++) {
        slots[i].obj = &slots[i];
        slots[i].gen = (uint32_t)i + 1;
        values[i] = ((uint64_t)slots[i].gen << 32) | (uint64_t)i;
    }
    pthread_mutex_t lock;
    BENCH_CHECK(pthread_mutex_init(&lock, NULL) == 0);
    uint64_t rng = iters | 1, sum = 0;
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < iters; i++) {
        uint64_t v = values[pick(&rng, (uint32_t)live)];
        pthread_mutex_lock(&lock);
        const base_slot *s = &slots[(uint32_t)v];
        if (s->obj && s->gen == (uint32_t)(v >> 32) && !s->busy)
            sum++;
        pthread_mutex_unlock(&lock);
    }
    uint64_t t = bench_now_ns() - t0;
    BENCH_CHECK(sum == iters);
    pthread_mutex_destroy(&lock);
    free(values);
    free(slots);
    return t;
}

/* --------------------------------------------------- system call counting */

/* The loops whose system calls are counted, each a fixed number of ops. */
typedef enum sc_kind {
    SC_KIND_WRITE_READ,
    SC_KIND_ALLOC_LOCK,
    SC_KIND_TRAP_INLINE,
    SC_KIND_CREATE,
    SC_KIND_QUERY,
} sc_kind;

typedef struct sc_window {
    const char *label;
    sc_kind kind;
    size_t arg;
    bool strace; /* also run by --syscall-check */
} sc_window;

enum {
    SC_WR_10,
    SC_WR_100,
    SC_WR_1K,
    SC_WR_10K,
    SC_BASE_10,
    SC_BASE_100,
    SC_BASE_1K,
    SC_BASE_10K,
    SC_TRAP_INLINE,
    SC_CREATE,
    SC_QUERY,
    SC_NUM,
    SC_NONE = -1
};

static const sc_window g_windows[SC_NUM] = {
    [SC_WR_10] = {"write+read 10 B", SC_KIND_WRITE_READ, 10, true},
    [SC_WR_100] = {"write+read 100 B", SC_KIND_WRITE_READ, 100, true},
    [SC_WR_1K] = {"write+read 1 KB", SC_KIND_WRITE_READ, 1024, true},
    [SC_WR_10K] = {"write+read 10 KB", SC_KIND_WRITE_READ, 10240, true},
    [SC_BASE_10] = {"alloc+lock+queue 10 B", SC_KIND_ALLOC_LOCK, 10, true},
    [SC_BASE_100] = {"alloc+lock+queue 100 B", SC_KIND_ALLOC_LOCK, 100, true},
    [SC_BASE_1K] = {"alloc+lock+queue 1 KB", SC_KIND_ALLOC_LOCK, 1024, true},
    [SC_BASE_10K] = {"alloc+lock+queue 10 KB", SC_KIND_ALLOC_LOCK, 10240, true},
    [SC_TRAP_INLINE] = {"trap inline ping-pong", SC_KIND_TRAP_INLINE, 0, true},
    [SC_CREATE] = {"create+close pipe", SC_KIND_CREATE, 0, false},
    [SC_QUERY] = {"query, 10 live handles", SC_KIND_QUERY, BENCH_FEW_HANDLES, false},
};

/* getppid(MARK + 2 * window) opens a counted window, getppid(MARK + 2 * window + 1) closes it. */
#define SC_MARK UINT64_C(0x6d6f6a6f00)

static void sc_marker(int c, bool end, bool marked)
{
    if (marked)
        syscall(SYS_getppid, (unsigned long)(SC_MARK + 2u * (unsigned)c + (end ? 1u : 0u)));
}

/* One window: set-up and tear-down stay outside the markers. */
static void sc_window_run(int c, uint64_t ops, bool marked)
{
    const sc_window *w = &g_windows[c];
    switch (w->kind) {
    case SC_KIND_WRITE_READ: {
        MojoHandle a, b;
        BENCH_MOJO(MojoCreateMessagePipe(NULL, &a, &b));
        sc_marker(c, false, marked);
        write_read_loop(a, b, w->arg, ops);
        sc_marker(c, true, marked);
        BENCH_MOJO(MojoClose(a));
        BENCH_MOJO(MojoClose(b));
        break;
    }
    case SC_KIND_ALLOC_LOCK: {
        base_queue q;
        base_queue_init(&q);
        sc_marker(c, false, marked);
        alloc_lock_loop(&q, w->arg, 1, ops);
        sc_marker(c, true, marked);
        base_queue_destroy(&q);
        break;
    }
    case SC_KIND_TRAP_INLINE: {
        pp_ctx ctx;
        pp_open(&ctx, ops);
        pp_add_traps(&ctx, inline_handler);
        sc_marker(c, false, marked);
        inline_round_trips(&ctx, ops);
        sc_marker(c, true, marked);
        pp_close(&ctx);
        break;
    }
    case SC_KIND_CREATE:
        sc_marker(c, false, marked);
        case_create_close(ops, 0);
        sc_marker(c, true, marked);
        break;
    case SC_KIND_QUERY: {
        handle_set hs;
        open_handles(&hs, (uint32_t)w->arg);
        sc_marker(c, false, marked);
        query_loop(&hs, ops, 7);
        sc_marker(c, true, marked);
        close_handles(&hs);
        break;
    }
    }
}

/*
 * Each window runs twice, unmarked then marked, with the same op count: the
 * first run takes the heap to the size the loop needs, so the allocator's
 * own growth (brk, mprotect) is not charged to the second.
 */
static void sc_run_windows(uint64_t ops, bool strace_only)
{
    for (int c = 0; c < SC_NUM; c++) {
        if (strace_only && !g_windows[c].strace)
            continue;
        sc_window_run(c, ops, false);
        sc_window_run(c, ops, true);
    }
}

#if defined(__x86_64__)
#define BENCH_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define BENCH_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

/* Distinct system calls remembered per window, for the report. */
#define SC_MAX_DISTINCT 4

typedef struct sc_state {
    uint64_t ops;
    atomic_int fd;        /* listener: -1 not yet, -2 failed (see err) */
    int err;              /* errno of the failed install */
    atomic_bool finished; /* the counted thread is past its last window */
    uint64_t count[SC_NUM];
    long nr[SC_NUM][SC_MAX_DISTINCT]; /* which calls, in order of first appearance */
    uint64_t nr_count[SC_NUM][SC_MAX_DISTINCT];
} sc_state;

static void *sc_thread(void *arg)
{
    sc_state *st = arg;
    /* This thread's malloc arena and the table chunks, before anything is counted. */
    for (int c = 0; c < SC_NUM; c++)
        sc_window_run(c, st->ops, false);
#ifdef BENCH_AUDIT_ARCH
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, BENCH_AUDIT_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        /* Exiting must work even once nobody answers notifications any more. */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_exit, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_exit_group, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
    };
    struct sock_fprog prog = {(unsigned short)(sizeof(filter) / sizeof(filter[0])), filter};
    /* Only this thread is filtered (no TSYNC), and no_new_privs is per thread too. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        st->err = errno;
        atomic_store(&st->fd, -2);
        return NULL;
    }
    long fd =
        syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
    if (fd < 0) {
        st->err = errno;
        atomic_store(&st->fd, -2);
        return NULL;
    }
    atomic_store(&st->fd, (int)fd);
    sc_run_windows(st->ops, false);
    atomic_store(&st->finished, true);
#else
    st->err = ENOSYS;
    atomic_store(&st->fd, -2);
#endif
    return NULL;
}

static void sc_record(sc_state *st, int window, long nr)
{
    st->count[window]++;
    for (int k = 0; k < SC_MAX_DISTINCT; k++) {
        if (st->nr_count[window][k] == 0)
            st->nr[window][k] = nr;
        if (st->nr[window][k] == nr) {
            st->nr_count[window][k]++;
            return;
        }
    }
}

/* Answers the counted thread's system calls, counting those inside a window. */
static void sc_supervise(sc_state *st, int fd)
{
    struct seccomp_notif_sizes sizes;
    BENCH_CHECK(syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes) == 0);
    struct seccomp_notif *req = calloc(1, sizes.seccomp_notif);
    struct seccomp_notif_resp *resp = calloc(1, sizes.seccomp_notif_resp);
    BENCH_CHECK(req != NULL && resp != NULL);
    int window = SC_NONE;
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        int n = poll(&p, 1, 1000);
        if (n < 0 && errno == EINTR)
            continue;
        BENCH_CHECK(n >= 0);
        if (n == 0) {
            if (atomic_load(&st->finished))
                break; /* a kernel that does not report POLLHUP: stop on a quiet fd */
            continue;
        }
        if (!(p.revents & POLLIN)) {
            if (p.revents & (POLLHUP | POLLERR))
                break; /* the filtered thread is gone */
            continue;
        }
        memset(req, 0, sizes.seccomp_notif);
        if (ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, req) != 0) {
            BENCH_CHECK(errno == EINTR || errno == ENOENT);
            continue;
        }
        uint64_t arg0 = req->data.args[0];
        if (req->data.nr == SYS_getppid && arg0 >= SC_MARK && arg0 < SC_MARK + 2u * SC_NUM)
            window = (arg0 - SC_MARK) % 2 ? SC_NONE : (int)((arg0 - SC_MARK) / 2);
        else if (window != SC_NONE)
            sc_record(st, window, req->data.nr);
        memset(resp, 0, sizes.seccomp_notif_resp);
        resp->id = req->id;
        resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        if (ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, resp) != 0)
            BENCH_CHECK(errno == ENOENT); /* the thread was interrupted meanwhile */
    }
    free(req);
    free(resp);
}

/* Counts the system calls of every window. False (with *err) if seccomp is unavailable. */
static bool count_syscalls(sc_state *st, uint64_t ops, int *err)
{
    memset(st, 0, sizeof(*st));
    st->ops = ops;
    atomic_init(&st->fd, -1);
    pthread_t t;
    BENCH_CHECK(pthread_create(&t, NULL, sc_thread, st) == 0);
    int fd;
    while ((fd = atomic_load(&st->fd)) == -1)
        sched_yield();
    if (fd >= 0) {
        sc_supervise(st, fd);
        close(fd);
    }
    BENCH_CHECK(pthread_join(t, NULL) == 0);
    check_core_empty();
    *err = st->err;
    return fd >= 0;
}

static const char *sc_name(long nr)
{
    switch (nr) {
    case SYS_brk:
        return "brk";
    case SYS_mmap:
        return "mmap";
    case SYS_munmap:
        return "munmap";
    case SYS_mprotect:
        return "mprotect";
    case SYS_madvise:
        return "madvise";
    case SYS_futex:
        return "futex";
    case SYS_getrandom:
        return "getrandom";
    default:
        return NULL;
    }
}

/* "3 (mprotect 2, brk 1)" */
static void sc_describe(char *out, size_t len, const sc_state *st, int c)
{
    int n = snprintf(out, len, "%" PRIu64, st->count[c]);
    for (int k = 0; k < SC_MAX_DISTINCT && st->nr_count[c][k] && n > 0 && (size_t)n < len; k++) {
        const char *name = sc_name(st->nr[c][k]);
        char num[24];
        if (!name) {
            snprintf(num, sizeof(num), "#%ld", st->nr[c][k]);
            name = num;
        }
        n += snprintf(out + n, len - (size_t)n, "%s%s %" PRIu64, k ? ", " : " (", name,
                      st->nr_count[c][k]);
    }
    if (st->count[c] && n > 0 && (size_t)n < len)
        snprintf(out + n, len - (size_t)n, ")");
}

/* --syscall-check: the windows alone, on the main thread, for strace to count. */
static int syscall_check_mode(uint64_t ops)
{
    sc_run_windows(ops, true);
    check_core_empty();
    for (int c = 0; c < SC_NUM; c++)
        if (g_windows[c].strace)
            printf("window: %s\n", g_windows[c].label);
    printf("ops per window: %" PRIu64 "\n", ops);
    return 0;
}

/* ------------------------------------------------------------- driver */

typedef uint64_t (*measure_fn)(uint64_t iters, size_t arg);

typedef struct measurement {
    const char *name;
    measure_fn run;
    size_t arg;
    double scale; /* ops per run = iterations * scale */
    /* filled in by the runs */
    bool skip; /* cannot run here (a placement needing two CPUs) */
    uint64_t iters;
    uint64_t samples[BENCH_MAX_RUNS];
    double ns_median;
} measurement;

enum {
    M_BASE_10,
    M_WR_10,
    M_BASE_100,
    M_WR_100,
    M_BASE_1K,
    M_WR_1K,
    M_BASE_10K,
    M_WR_10K,
    M_EVENTFD_SAME,
    M_FUTEX_SAME,
    M_WAIT_SAME,
    M_OWNER_SAME,
    M_EVENTFD_SPLIT,
    M_FUTEX_SPLIT,
    M_WAIT_SPLIT,
    M_OWNER_SPLIT,
    M_EVENTFD_FREE,
    M_FUTEX_FREE,
    M_WAIT_FREE,
    M_OWNER_FREE,
    M_BASE_RTT,
    M_TRAP_INLINE,
    M_SOCKETPAIR,
    M_TWO_ALLOCS,
    M_CREATE_CLOSE,
    M_LOCK_INDEX,
    M_QUERY_FEW,
    M_QUERY_MANY,
    M_NUM
};

/*
 * Ping-pong round trips cost microseconds on one CPU and tens of
 * microseconds across CPUs on a VM: a tenth and a fiftieth of the ops of a
 * message case.
 */
#define PP_SCALE_SAME 0.1
#define PP_SCALE_CROSS 0.02

#define M(name, fn, arg, scale)                                                                    \
    {                                                                                              \
        name, fn, arg, scale, false, 0, {0}, 0                                                     \
    }

static measurement g_m[M_NUM] = {
    [M_BASE_10] = M("alloc+lock+queue 10 B", case_alloc_lock, 10, 1.0),
    [M_WR_10] = M("write+read 10 B", case_write_read, 10, 1.0),
    [M_BASE_100] = M("alloc+lock+queue 100 B", case_alloc_lock, 100, 1.0),
    [M_WR_100] = M("write+read 100 B", case_write_read, 100, 1.0),
    [M_BASE_1K] = M("alloc+lock+queue 1 KB", case_alloc_lock, 1024, 1.0),
    [M_WR_1K] = M("write+read 1 KB", case_write_read, 1024, 1.0),
    [M_BASE_10K] = M("alloc+lock+queue 10 KB", case_alloc_lock, 10240, 1.0),
    [M_WR_10K] = M("write+read 10 KB", case_write_read, 10240, 1.0),
    [M_EVENTFD_SAME] = M("eventfd, 1 CPU", case_pp_eventfd, PP_SAME, PP_SCALE_SAME),
    [M_FUTEX_SAME] = M("futex, 1 CPU", case_pp_futex, PP_SAME, PP_SCALE_SAME),
    [M_WAIT_SAME] = M("MojoWait, 1 CPU", case_pp_wait, PP_SAME, PP_SCALE_SAME),
    [M_OWNER_SAME] = M("trap->owner, 1 CPU", case_pp_trap_owner, PP_SAME, PP_SCALE_SAME),
    [M_EVENTFD_SPLIT] = M("eventfd, 2 CPUs", case_pp_eventfd, PP_SPLIT, PP_SCALE_CROSS),
    [M_FUTEX_SPLIT] = M("futex, 2 CPUs", case_pp_futex, PP_SPLIT, PP_SCALE_CROSS),
    [M_WAIT_SPLIT] = M("MojoWait, 2 CPUs", case_pp_wait, PP_SPLIT, PP_SCALE_CROSS),
    [M_OWNER_SPLIT] = M("trap->owner, 2 CPUs", case_pp_trap_owner, PP_SPLIT, PP_SCALE_CROSS),
    [M_EVENTFD_FREE] = M("eventfd, unpinned", case_pp_eventfd, PP_FREE, PP_SCALE_CROSS),
    [M_FUTEX_FREE] = M("futex, unpinned", case_pp_futex, PP_FREE, PP_SCALE_CROSS),
    [M_WAIT_FREE] = M("MojoWait, unpinned", case_pp_wait, PP_FREE, PP_SCALE_CROSS),
    [M_OWNER_FREE] = M("trap->owner, unpinned", case_pp_trap_owner, PP_FREE, PP_SCALE_CROSS),
    [M_BASE_RTT] = M("2x alloc+lock+queue 8 B", case_alloc_lock_rtt, 8, 1.0),
    [M_TRAP_INLINE] = M("trap inline", case_pp_trap_inline, 0, 1.0),
    [M_SOCKETPAIR] = M("socketpair+2 close", case_socketpair, 0, 0.5),
    [M_TWO_ALLOCS] = M("2 calloc/free+lock", case_two_allocs, 0, 0.5),
    [M_CREATE_CLOSE] = M("create+close pipe", case_create_close, 0, 0.5),
    [M_LOCK_INDEX] = M("lock+index, 10,000", case_lock_index, BENCH_MANY_HANDLES, 2.0),
    [M_QUERY_FEW] = M("query, 10 handles", case_query, BENCH_FEW_HANDLES, 2.0),
    [M_QUERY_MANY] = M("query, 10,000 handles", case_query, BENCH_MANY_HANDLES, 2.0),
};

typedef struct row {
    const char *label;
    int subject, baseline;
    int syscalls; /* SC_* window whose count this row shows, or SC_NONE */
    bool goal;    /* a ping-pong row the 1.5x goal applies to */
} row;

static const row g_rows[] = {
    {"write+read 10 B", M_WR_10, M_BASE_10, SC_WR_10, false},
    {"write+read 100 B", M_WR_100, M_BASE_100, SC_WR_100, false},
    {"write+read 1 KB", M_WR_1K, M_BASE_1K, SC_WR_1K, false},
    {"write+read 10 KB", M_WR_10K, M_BASE_10K, SC_WR_10K, false},
    {"ping-pong 8 B, MojoWait, 1 CPU", M_WAIT_SAME, M_EVENTFD_SAME, SC_NONE, true},
    {"ping-pong 8 B, trap->owner, 1 CPU", M_OWNER_SAME, M_EVENTFD_SAME, SC_NONE, true},
    {"ping-pong 8 B, futex (reference), 1 CPU", M_FUTEX_SAME, M_EVENTFD_SAME, SC_NONE, false},
    {"ping-pong 8 B, MojoWait, 2 CPUs", M_WAIT_SPLIT, M_EVENTFD_SPLIT, SC_NONE, true},
    {"ping-pong 8 B, trap->owner, 2 CPUs", M_OWNER_SPLIT, M_EVENTFD_SPLIT, SC_NONE, true},
    {"ping-pong 8 B, futex (reference), 2 CPUs", M_FUTEX_SPLIT, M_EVENTFD_SPLIT, SC_NONE, false},
    {"ping-pong 8 B, MojoWait, unpinned", M_WAIT_FREE, M_EVENTFD_FREE, SC_NONE, true},
    {"ping-pong 8 B, trap->owner, unpinned", M_OWNER_FREE, M_EVENTFD_FREE, SC_NONE, true},
    {"ping-pong 8 B, futex (reference), unpin.", M_FUTEX_FREE, M_EVENTFD_FREE, SC_NONE, false},
    {"ping-pong 8 B, trap inline, 1 thread (*)", M_TRAP_INLINE, M_EVENTFD_SAME, SC_TRAP_INLINE,
     false},
    {"ping-pong 8 B, trap inline, 1 thread (*)", M_TRAP_INLINE, M_BASE_RTT, SC_NONE, false},
    {"create+close pipe", M_CREATE_CLOSE, M_SOCKETPAIR, SC_CREATE, false},
    {"create+close pipe", M_CREATE_CLOSE, M_TWO_ALLOCS, SC_NONE, false},
    {"query, 10,000 live handles", M_QUERY_MANY, M_QUERY_FEW, SC_NONE, false},
    {"query, 10,000 live handles", M_QUERY_MANY, M_LOCK_INDEX, SC_NONE, false},
    {"query, 10 live handles", M_QUERY_FEW, M_LOCK_INDEX, SC_QUERY, false},
};

#define NUM_ROWS (sizeof(g_rows) / sizeof(g_rows[0]))

static void run_one(measurement *m, uint64_t iters, uint64_t *sample)
{
    uint64_t t = m->run(iters, m->arg);
    check_core_empty();
    if (sample)
        *sample = t;
}

static void usage(FILE *f, const char *argv0)
{
    fprintf(f,
            "usage: %s [--quick] [--iterations N] [--runs R] [--syscall-check]\n"
            "  --quick          short smoke run for CI (iterations/%u, %u runs)\n"
            "  --iterations N   ops per run of a message case (default %u; ping-pong\n"
            "                   does N/10 round trips on one CPU and N/50 across CPUs,\n"
            "                   create+close N/2, query 2N)\n"
            "  --runs R         runs per measurement, median reported (default %u, max %u)\n"
            "  --syscall-check  only run the write+read (and baseline, and trap inline)\n"
            "                   loops between getppid() markers, %u ops each (or N);\n"
            "                   for bench/syscall_check.sh, under strace\n",
            argv0, BENCH_QUICK_DIVISOR, BENCH_QUICK_RUNS, BENCH_DEFAULT_ITERATIONS,
            BENCH_DEFAULT_RUNS, BENCH_MAX_RUNS, BENCH_SYSCALL_OPS);
}

static void print_syscalls(char *out, size_t len, const sc_state *sc, bool have, int window)
{
    if (window == SC_NONE)
        snprintf(out, len, "-");
    else if (!have)
        snprintf(out, len, "n/a");
    else if (sc->count[window] == 0)
        snprintf(out, len, "0");
    else
        snprintf(out, len, "%.3f", (double)sc->count[window] / (double)sc->ops);
}

/* The median per-run ratio of a row, and its extremes. */
static double row_ratio(const row *rw, unsigned runs, double *lo, double *hi)
{
    const measurement *s = &g_m[rw->subject], *b = &g_m[rw->baseline];
    double ratios[BENCH_MAX_RUNS];
    for (unsigned r = 0; r < runs; r++)
        ratios[r] =
            ((double)s->samples[r] / (double)s->iters) / ((double)b->samples[r] / (double)b->iters);
    return bench_median_ratio(ratios, runs, lo, hi);
}

static void print_report(const bench_config *cfg, const sc_state *sc, bool have_sc, int sc_err)
{
    printf("bench_core: %u runs per measurement; ns/op = median run; ratio = median over runs\n"
           "of subject/baseline (min..max: the extreme per-run ratios); sys/op = system calls\n"
           "per op of the subject, counted by seccomp ",
           cfg->runs);
    if (have_sc)
        printf("(%" PRIu64 " ops per case, in a filtered thread)\n\n", sc->ops);
    else
        printf("(not available here: %s)\n\n", strerror(sc_err));
    printf("%-41s %-24s %10s %10s %7s %13s %7s\n", "case", "baseline", "ns/op", "base ns/op",
           "ratio", "min..max", "sys/op");
    for (size_t k = 0; k < NUM_ROWS; k++) {
        const row *rw = &g_rows[k];
        const measurement *s = &g_m[rw->subject], *b = &g_m[rw->baseline];
        if (s->skip || b->skip) {
            printf("%-41s %-24s %10s %10s %7s %13s %7s\n", rw->label, b->name, "n/a", "n/a", "n/a",
                   "(one CPU)", "-");
            continue;
        }
        double lo, hi, ratio = row_ratio(rw, cfg->runs, &lo, &hi);
        char range[32], sys[16];
        snprintf(range, sizeof(range), "%.2f..%.2f", lo, hi);
        print_syscalls(sys, sizeof(sys), sc, have_sc, rw->syscalls);
        printf("%-41s %-24s %10.1f %10.1f %7.2f %13s %7s\n", rw->label, b->name, s->ns_median,
               b->ns_median, ratio, range, sys);
    }
    printf("\n(*) cmojo runs a trap handler on the thread whose call made the end readable (the\n"
           "    writer), so handlers that reply never hand over to the other thread: each burst\n"
           "    of %u round trips runs inside one MojoWriteMessage, on one thread.\n",
           BENCH_TRAP_BURST);

    printf("\nzero-syscall claim, write+read 10 B..10 KB: ");
    if (!have_sc) {
        printf("not checked (seccomp: %s); run bench/syscall_check.sh\n", strerror(sc_err));
    } else {
        uint64_t n = 0;
        for (int c = SC_WR_10; c <= SC_WR_10K; c++)
            n += sc->count[c];
        printf("%s, %" PRIu64 " system calls in %" PRIu64 " ops\n", n == 0 ? "holds" : "FAILS", n,
               4 * sc->ops);
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
        printf("  (a sanitizer build: its allocator maps memory as it goes; see the baselines)\n");
#endif
        for (int c = 0; c < SC_NUM; c++) {
            char what[128];
            sc_describe(what, sizeof(what), sc, c);
            printf("  %-28s %s\n", g_windows[c].label, what);
        }
    }
    printf("ping-pong goal, at most %.1fx the eventfd baseline:\n", BENCH_PING_PONG_GOAL);
    for (size_t k = 0; k < NUM_ROWS; k++) {
        const row *rw = &g_rows[k];
        if (!rw->goal || g_m[rw->subject].skip || g_m[rw->baseline].skip)
            continue;
        double lo, hi, ratio = row_ratio(rw, cfg->runs, &lo, &hi);
        const char *verdict = ratio <= BENCH_PING_PONG_GOAL ? "met" : "NOT met";
        if (lo > 0 && hi / lo > BENCH_PLACEMENT_SPREAD)
            verdict = "no verdict: per-run ratios spread over the placements";
        printf("  %-24s %5.2fx  %s\n", g_m[rw->subject].name, ratio, verdict);
    }
    printf("  (unpinned, each run lands where the scheduler puts the two threads: the same CPU\n"
           "   costs about as much as the 1 CPU row, two CPUs as the 2 CPUs row, and subject and\n"
           "   baseline land independently, so a spread of more than %.0fx between the extreme\n"
           "   per-run ratios measures placement, not cmojo; the pinned rows measure cmojo)\n",
           BENCH_PLACEMENT_SPREAD);
}

int main(int argc, char **argv)
{
    bench_name = "bench_core";
    bench_config cfg = {BENCH_DEFAULT_ITERATIONS, BENCH_DEFAULT_RUNS};
    uint64_t runs = BENCH_DEFAULT_RUNS;
    bool quick = false, iters_given = false, runs_given = false, check_mode = false;
    const bench_option opts[] = {
        {"--quick", &quick, NULL, 0, 0},
        {"--syscall-check", &check_mode, NULL, 0, 0},
        {"--iterations", &iters_given, &cfg.iterations, 1, UINT64_C(1) << 40},
        {"--runs", &runs_given, &runs, 1, BENCH_MAX_RUNS},
        {NULL, NULL, NULL, 0, 0},
    };
    int rc = bench_parse_args(argc, argv, opts, NULL, usage);
    if (rc >= 0)
        return rc;
    cfg.runs = (unsigned)runs;
    if (quick) {
        if (!iters_given)
            cfg.iterations /= BENCH_QUICK_DIVISOR;
        if (!runs_given)
            cfg.runs = BENCH_QUICK_RUNS;
    }
    bench_fill_pattern(g_payload, sizeof(g_payload));
    BENCH_MOJO(MojoInitialize(NULL));

    if (check_mode) {
        rc = syscall_check_mode(iters_given ? cfg.iterations : BENCH_SYSCALL_OPS);
        BENCH_MOJO(MojoShutdown(NULL));
        return rc;
    }

    find_cpus();
    for (int i = 0; i < M_NUM; i++) {
        measurement *m = &g_m[i];
        m->iters = (uint64_t)((double)cfg.iterations * m->scale);
        if (m->iters == 0)
            m->iters = 1;
        bool two_threads = m->run == case_pp_eventfd || m->run == case_pp_futex ||
                           m->run == case_pp_wait || m->run == case_pp_trap_owner;
        m->skip = two_threads && m->arg == PP_SPLIT && g_cpu[1] < 0;
    }

    uint64_t start = bench_now_ns();
    sc_state sc;
    int sc_err = 0;
    bool have_sc = count_syscalls(&sc, quick ? BENCH_SYSCALL_OPS / 4 : BENCH_SYSCALL_OPS, &sc_err);

    /* Warm-up: caches, the allocator's free lists, page faults. Not recorded. */
    for (int i = 0; i < M_NUM; i++)
        if (!g_m[i].skip)
            run_one(&g_m[i], g_m[i].iters / 10 + 1, NULL);
    /* Round-robin, alternately forwards and backwards, so noise lands on every case alike. */
    for (unsigned r = 0; r < cfg.runs; r++) {
        for (int k = 0; k < M_NUM; k++) {
            int i = r % 2 ? M_NUM - 1 - k : k;
            if (!g_m[i].skip)
                run_one(&g_m[i], g_m[i].iters, &g_m[i].samples[r]);
        }
    }
    double total_s = (double)(bench_now_ns() - start) / 1e9;

    for (int i = 0; i < M_NUM; i++) {
        measurement *m = &g_m[i];
        if (m->skip)
            continue;
        m->ns_median = (double)bench_median_u64(m->samples, cfg.runs, NULL) / (double)m->iters;
    }
    print_report(&cfg, &sc, have_sc, sc_err);
    printf("\ntotal %.2f s\n", total_s);
    BENCH_MOJO(MojoShutdown(NULL));
    return 0;
}
