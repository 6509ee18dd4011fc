/*
 * The IO loop (see io.h).
 *
 * Guests. Threads blocked in epoll_wait on one epoll set are woken one at a
 * time, the one that came last first, and every fd here is edge-triggered,
 * so an event wakes exactly one of them. A guest enters epoll_wait after the
 * IO thread did, so it is the one woken: a message for a thread blocked in
 * MojoWait is read, dispatched and seen by that thread with one wake-up,
 * where handing it over from the IO thread costs a second (on one CPU, two
 * more context switches per message). Whoever is woken runs the batch under
 * run_lock, so callbacks stay serial whichever thread runs them. Both wake
 * orders are the kernel's for epoll (exclusive waiters, added at the head of
 * the queue); if they were not, a guest would still be correct, only slower.
 *
 * A guest is interrupted by a kick: guestfd, in the same set. If the IO
 * thread entered epoll_wait after the guest (it had work to do meanwhile),
 * it is woken by the kick instead; it then passes the kick on and stays out
 * of epoll_wait until the guest's round ends, so the kick cannot bounce back
 * to it. The guest word (io->guest) tells a kicker whether anyone is polling
 * and the IO thread when a round ended.
 *
 * Level triggering, by request. A callback that returns true is re-armed
 * (EPOLL_CTL_MOD puts a still-ready fd back on epoll's ready list).
 *
 * Watches live in slots that are never freed before plat_io_stop: an epoll
 * event names a slot and the generation it was registered with, and a slot
 * whose watch was removed (or replaced) since simply does not match. So an
 * event already taken out of epoll by another thread can never reach freed
 * memory, however the removal and the batch interleave.
 *
 * Removal: the REMOVED flag, set under the mutex, stops new callbacks (a
 * dispatch sets RUNNING only on a live, matching state, by compare-and-swap);
 * a remover outside the loop then waits on the condition variable until
 * RUNNING is clear, and the dispatcher broadcasts when the RUNNING it clears
 * came with REMOVED.
 */
#include "platform/io.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "platform/lock.h"
#include "platform/sys.h"

/*
 * Events taken from epoll per wake-up. Callbacks do bounded work, so this
 * bounds how long posted tasks (run after each batch) can wait.
 */
#define IO_MAX_EVENTS 64

/* Watch slots: chunks of IO_WATCH_CHUNK, allocated as needed. */
#define IO_WATCH_CHUNK 64u
#define IO_WATCH_CHUNKS 1024u
#define IO_MAX_WATCHES (IO_WATCH_CHUNK * IO_WATCH_CHUNKS)

/* Epoll keys of the two eventfds; a watch's is generation << 32 | slot. */
#define KEY_WAKE UINT64_MAX
#define KEY_GUEST (UINT64_MAX - 1)

/* plat_io_watch.state: the slot's generation << 32, and these. */
#define WATCH_RUNNING 1u
#define WATCH_REMOVED 2u
#define WATCH_GEN_MASK (~(uint64_t)0xffffffffu)

/* plat_io.guest: a state, a flag, and a round counter above them. */
#define GUEST_NONE 0u
#define GUEST_IDLE 1u    /* claimed, not waiting in epoll */
#define GUEST_POLLING 2u /* in epoll_wait, or about to be */
#define GUEST_RECENT 3u  /* unclaimed, but a guest polled lately and may be back */
#define GUEST_STATE 3u
#define GUEST_FORWARDER 4u /* the IO thread waits for the round to end */
#define GUEST_PARKED 8u    /* the IO thread sleeps until the word changes */
#define GUEST_FLAGS (GUEST_FORWARDER | GUEST_PARKED)
#define GUEST_ROUND 16u

/*
 * How long a guest may go without polling, while the IO thread keeps out of
 * epoll for it, before the IO thread takes the events back: the most an
 * event waits while the guest's thread is busy between two waits.
 */
#define IO_GUEST_QUIET_NS 200000L

struct plat_io_watch {
    plat_io *io;
    uint32_t index;
    /* Under io->mutex: */
    uint32_t next_free; /* index + 1 of the next free slot, while free */
    int fd;
    uint32_t events;
    /* Written by add; read by a dispatch that matched the state. */
    plat_io_callback cb;
    void *ctx;
    _Atomic uint64_t state;
};

typedef struct io_task {
    void (*fn)(void *arg);
    void *arg;
    struct io_task *next;
} io_task;

struct plat_io {
    int epfd;
    int wakefd;  /* eventfd: posted tasks and stop */
    int guestfd; /* eventfd: kicks a guest out of epoll_wait */
    pthread_t thread;

    plat_mutex run_lock;     /* held while callbacks and tasks run */
    _Atomic uint32_t guest;  /* GUEST_* */
    _Atomic uint32_t polls;  /* epoll_waits guests returned from (only the guest writes) */
    _Atomic uint32_t unpark; /* set (and futex-woken) by plat_io_stop */

    plat_mutex mutex;
    plat_cond cond; /* a removed watch's callback finished running */
    io_task *tasks_head;
    io_task *tasks_tail;
    bool stopping;
    uint32_t num_slots; /* slots ever handed out */
    uint32_t free_head; /* index + 1 of the first free slot, 0 if none */
    size_t live_watches;
    /* Written under mutex, read by dispatch without it. */
    _Atomic(plat_io_watch *) chunks[IO_WATCH_CHUNKS];
};

/* The loop this thread is running, so plat_io_on_thread needs no shared state. */
static _Thread_local const plat_io *io_current;

static uint32_t to_epoll(uint32_t events)
{
    uint32_t ep = EPOLLET;
    if (events & PLAT_IO_READABLE)
        ep |= EPOLLIN | EPOLLRDHUP;
    if (events & PLAT_IO_WRITABLE)
        ep |= EPOLLOUT;
    return ep;
}

static uint32_t from_epoll(uint32_t ep)
{
    uint32_t events = 0;
    if (ep & EPOLLIN)
        events |= PLAT_IO_READABLE;
    if (ep & EPOLLOUT)
        events |= PLAT_IO_WRITABLE;
    if (ep & (EPOLLHUP | EPOLLRDHUP | EPOLLERR))
        events |= PLAT_IO_HANGUP;
    return events;
}

static void signal_eventfd(int fd)
{
    uint64_t one = 1;
    /* Edge-triggered: every write is an event, whatever the counter held. */
    while (write(fd, &one, sizeof(one)) < 0 && errno == EINTR) {
    }
}

static void drain_eventfd(int fd)
{
    uint64_t count;
    while (read(fd, &count, sizeof(count)) < 0 && errno == EINTR) {
    }
}

static void futex_wait(_Atomic uint32_t *word, uint32_t val)
{
    (void)syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *word)
{
    (void)syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static uint64_t watch_key(const plat_io_watch *w, uint64_t gen)
{
    return gen | w->index;
}

/* The slot an event names, or NULL if it never existed. */
static plat_io_watch *slot_at(plat_io *io, uint64_t key)
{
    uint32_t index = (uint32_t)key;
    if (index >= IO_MAX_WATCHES)
        return NULL;
    plat_io_watch *chunk =
        atomic_load_explicit(&io->chunks[index / IO_WATCH_CHUNK], memory_order_acquire);
    return chunk ? &chunk[index % IO_WATCH_CHUNK] : NULL;
}

/* ------------------------------------------------------------ the loop */

/*
 * Runs the tasks queued now, oldest first; tasks they post wait for the next
 * turn (their post signalled the loop again), so a task that keeps
 * re-posting itself cannot starve the watches. True when the IO thread
 * should exit: stopping, with nothing left to run.
 */
static bool run_tasks(plat_io *io)
{
    plat_mutex_lock(&io->mutex);
    io_task *t = io->tasks_head;
    io->tasks_head = NULL;
    io->tasks_tail = NULL;
    plat_mutex_unlock(&io->mutex);

    while (t != NULL) {
        io_task *next = t->next;
        t->fn(t->arg);
        free(t);
        t = next;
    }

    plat_mutex_lock(&io->mutex);
    bool exit = io->stopping && io->tasks_head == NULL;
    plat_mutex_unlock(&io->mutex);
    return exit;
}

/* Puts a still-ready fd back on epoll's ready list, unless the watch is gone. */
static void rearm(plat_io *io, plat_io_watch *w, uint64_t gen)
{
    plat_mutex_lock(&io->mutex);
    if (atomic_load_explicit(&w->state, memory_order_relaxed) == gen) {
        struct epoll_event ev = {.events = to_epoll(w->events), .data.u64 = watch_key(w, gen)};
        /* Cannot fail for a registered fd its owner has not closed. */
        (void)epoll_ctl(io->epfd, EPOLL_CTL_MOD, w->fd, &ev);
    }
    plat_mutex_unlock(&io->mutex);
}

static void dispatch(plat_io *io, uint64_t key, uint32_t ep)
{
    plat_io_watch *w = slot_at(io, key);
    if (w == NULL)
        return;
    uint64_t gen = key & WATCH_GEN_MASK;
    uint64_t s = gen;
    /* Fails if the watch was removed, or the slot holds a newer one. */
    if (!atomic_compare_exchange_strong_explicit(&w->state, &s, gen | WATCH_RUNNING,
                                                 memory_order_acquire, memory_order_relaxed))
        return;

    bool again = w->cb(w->ctx, from_epoll(ep));

    /*
     * The callback may have removed its own watch (the slot may even hold a
     * new one by now), or another thread may be removing it and waiting.
     */
    s = gen | WATCH_RUNNING;
    if (atomic_compare_exchange_strong(&w->state, &s, gen)) {
        if (again)
            rearm(io, w, gen);
        return;
    }
    if (s == (gen | WATCH_RUNNING | WATCH_REMOVED) &&
        atomic_compare_exchange_strong(&w->state, &s, gen | WATCH_REMOVED)) {
        plat_mutex_lock(&io->mutex);
        plat_cond_broadcast(&io->cond);
        plat_mutex_unlock(&io->mutex);
    }
}

/* What running a batch saw. */
#define BATCH_EXIT 1u   /* the IO thread should exit */
#define BATCH_KICKED 2u /* a guest's kick was in it */

static unsigned run_batch(plat_io *io, const struct epoll_event *events, int n)
{
    unsigned seen = 0;
    bool woken = false;

    plat_mutex_lock(&io->run_lock);
    const plat_io *outer = io_current;
    io_current = io;
    for (int i = 0; i < n; i++) {
        uint64_t key = events[i].data.u64;
        if (key == KEY_WAKE)
            woken = true;
        else if (key == KEY_GUEST)
            seen |= BATCH_KICKED;
        else
            dispatch(io, key, events[i].events);
    }
    if (woken) {
        /* Drained before the queue is taken: a post after this signals again. */
        drain_eventfd(io->wakefd);
        if (run_tasks(io))
            seen |= BATCH_EXIT;
    }
    io_current = outer;
    plat_mutex_unlock(&io->run_lock);
    return seen;
}

/*
 * Moves the guest word to `state`, starting a new round, and wakes the IO
 * thread if it was waiting for the old round to end. Returns the new word.
 */
static uint32_t guest_set(plat_io *io, uint32_t state)
{
    uint32_t g = atomic_load(&io->guest);
    uint32_t next;
    do {
        next = ((g & ~(GUEST_STATE | GUEST_FLAGS)) + GUEST_ROUND) | state;
    } while (!atomic_compare_exchange_weak(&io->guest, &g, next));
    if (g & GUEST_FLAGS)
        futex_wake_all(&io->guest);
    return next;
}

/*
 * On the IO thread: it took a kick meant for a polling guest. Passes it on
 * (this thread is out of epoll_wait, so the guest is the one woken) and
 * waits for that round of the guest's to end before polling again.
 */
static void forward_kick(plat_io *io)
{
    uint32_t g = atomic_load(&io->guest);
    if ((g & GUEST_STATE) != GUEST_POLLING)
        return; /* nobody polls: whoever was kicked is awake and looks at its wake-up */
    uint32_t round = g & ~GUEST_FLAGS;
    signal_eventfd(io->guestfd);
    while ((g & ~GUEST_FLAGS) == round) {
        if (!(g & GUEST_FORWARDER) &&
            !atomic_compare_exchange_weak(&io->guest, &g, g | GUEST_FORWARDER))
            continue;
        futex_wait(&io->guest, g | GUEST_FORWARDER);
        g = atomic_load(&io->guest);
    }
}

static void futex_wait_ns(_Atomic uint32_t *word, uint32_t val, long ns)
{
    struct timespec rel = {.tv_sec = 0, .tv_nsec = ns};
    (void)syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, val, &rel, NULL, 0);
}

/*
 * On the IO thread, while a guest is at work: stays out of epoll_wait, so
 * that an event arriving between two of the guest's waits (it is replying,
 * say) waits on epoll's ready list for the guest to come back instead of
 * waking this thread -- on one CPU that would be two more context switches
 * per message. It keeps out while guests keep polling; while one polls with
 * nothing to do it sleeps until the guest word changes; once no guest polled
 * for IO_GUEST_QUIET_NS (gone, or busy in a long handler) it returns to
 * polling, and does not park again for that guest until its word changes.
 * *let_go is the guest word it last gave up on.
 */
static void park(plat_io *io, uint32_t *let_go)
{
    uint32_t polls = atomic_load(&io->polls);
    for (;;) {
        uint32_t g = atomic_load(&io->guest);
        if ((g & GUEST_STATE) == GUEST_NONE || (g & ~GUEST_FLAGS) == *let_go ||
            atomic_load(&io->unpark))
            return;
        futex_wait_ns(&io->unpark, 0, IO_GUEST_QUIET_NS);
        uint32_t now = atomic_load(&io->polls);
        if (now != polls) {
            polls = now; /* it polled meanwhile: events reach it */
            continue;
        }
        g = atomic_load(&io->guest);
        if ((g & GUEST_STATE) == GUEST_POLLING) {
            /* In epoll_wait with nothing to do: sleep until that changes. */
            if (!(g & GUEST_PARKED) &&
                !atomic_compare_exchange_strong(&io->guest, &g, g | GUEST_PARKED))
                continue;
            futex_wait(&io->guest, g | GUEST_PARKED);
            polls = atomic_load(&io->polls);
            continue;
        }
        if ((g & GUEST_STATE) == GUEST_RECENT)
            (void)atomic_compare_exchange_strong(&io->guest, &g,
                                                 (g & ~(GUEST_STATE | GUEST_FLAGS)) + GUEST_ROUND);
        *let_go = g & ~GUEST_FLAGS;
        return;
    }
}

static void *io_main(void *arg)
{
    plat_io *io = arg;
    struct epoll_event events[IO_MAX_EVENTS];

    uint32_t let_go = UINT32_MAX;
    io_current = io;
    for (;;) {
        int n = plat_epoll_wait(io->epfd, events, IO_MAX_EVENTS, -1);
        if (n <= 0) {
            /* Only EINTR is possible with valid arguments. */
            assert(errno == EINTR);
            continue;
        }
        unsigned seen = run_batch(io, events, n);
        if (seen & BATCH_EXIT)
            break;
        if (seen & BATCH_KICKED)
            forward_kick(io);
        park(io, &let_go);
    }
    return NULL;
}

/* ----------------------------------------------------------- lifetime */

int plat_io_start(plat_io **out)
{
    assert(out != NULL);
    plat_io *io = calloc(1, sizeof(*io));
    if (io == NULL)
        return -ENOMEM;
    io->epfd = -1;
    io->wakefd = -1;
    io->guestfd = -1;

    int rc;
    io->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (io->epfd < 0)
        goto fail_errno;
    io->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (io->wakefd < 0)
        goto fail_errno;
    io->guestfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (io->guestfd < 0)
        goto fail_errno;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u64 = KEY_WAKE};
    if (epoll_ctl(io->epfd, EPOLL_CTL_ADD, io->wakefd, &ev) < 0)
        goto fail_errno;
    ev.data.u64 = KEY_GUEST;
    if (epoll_ctl(io->epfd, EPOLL_CTL_ADD, io->guestfd, &ev) < 0)
        goto fail_errno;

    plat_mutex_init(&io->run_lock);
    plat_mutex_init(&io->mutex);
    plat_cond_init(&io->cond);
    atomic_init(&io->guest, GUEST_NONE);
    rc = pthread_create(&io->thread, NULL, io_main, io);
    if (rc != 0) {
        plat_cond_destroy(&io->cond);
        plat_mutex_destroy(&io->mutex);
        plat_mutex_destroy(&io->run_lock);
        goto fail;
    }
    *out = io;
    return 0;

fail_errno:
    rc = errno;
fail:
    if (io->guestfd >= 0)
        close(io->guestfd);
    if (io->wakefd >= 0)
        close(io->wakefd);
    if (io->epfd >= 0)
        close(io->epfd);
    free(io);
    return -rc;
}

void plat_io_stop(plat_io *io)
{
    if (io == NULL)
        return;
    assert(io_current != io);
    uint32_t g = atomic_load(&io->guest);
    assert((g & GUEST_STATE) == GUEST_NONE || (g & GUEST_STATE) == GUEST_RECENT);
    (void)g;

    plat_mutex_lock(&io->mutex);
    assert(io->live_watches == 0);
    io->stopping = true;
    plat_mutex_unlock(&io->mutex);
    atomic_store(&io->unpark, 1);
    futex_wake_all(&io->unpark);
    futex_wake_all(&io->guest);
    signal_eventfd(io->wakefd);
    pthread_join(io->thread, NULL);

    /* The thread ran every task queued before it saw `stopping` with none left. */
    assert(io->tasks_head == NULL);
    for (uint32_t i = 0; i < IO_WATCH_CHUNKS; i++)
        free(atomic_load(&io->chunks[i]));
    close(io->guestfd);
    close(io->wakefd);
    close(io->epfd);
    plat_cond_destroy(&io->cond);
    plat_mutex_destroy(&io->mutex);
    plat_mutex_destroy(&io->run_lock);
    free(io);
}

bool plat_io_on_thread(const plat_io *io)
{
    return io != NULL && io_current == io;
}

/* ------------------------------------------------------------ watches */

/* A free slot (its state: a fresh generation, REMOVED), or NULL. Under mutex. */
static plat_io_watch *take_slot_locked(plat_io *io)
{
    if (io->free_head != 0) {
        plat_io_watch *w = slot_at(io, io->free_head - 1);
        io->free_head = w->next_free;
        return w;
    }
    if (io->num_slots == IO_MAX_WATCHES)
        return NULL;
    uint32_t index = io->num_slots;
    _Atomic(plat_io_watch *) *chunkp = &io->chunks[index / IO_WATCH_CHUNK];
    plat_io_watch *chunk = atomic_load_explicit(chunkp, memory_order_relaxed);
    if (chunk == NULL) {
        chunk = calloc(IO_WATCH_CHUNK, sizeof(*chunk));
        if (chunk == NULL)
            return NULL;
        for (uint32_t i = 0; i < IO_WATCH_CHUNK; i++) {
            chunk[i].io = io;
            chunk[i].index = index + i;
            atomic_init(&chunk[i].state, ((uint64_t)1 << 32) | WATCH_REMOVED);
        }
        atomic_store_explicit(chunkp, chunk, memory_order_release);
    }
    io->num_slots++;
    return &chunk[index % IO_WATCH_CHUNK];
}

/* Retires w's generation and frees its slot. Under mutex. */
static void free_slot_locked(plat_io *io, plat_io_watch *w)
{
    uint64_t gen = atomic_load_explicit(&w->state, memory_order_relaxed) & WATCH_GEN_MASK;
    gen += (uint64_t)1 << 32;
    if (gen == 0)
        gen = (uint64_t)1 << 32;
    atomic_store_explicit(&w->state, gen | WATCH_REMOVED, memory_order_relaxed);
    w->next_free = io->free_head;
    io->free_head = w->index + 1;
}

int plat_io_add(plat_io *io, int fd, uint32_t events, plat_io_callback cb, void *ctx,
                plat_io_watch **out)
{
    assert(io != NULL && cb != NULL && out != NULL);
    if (fd < 0)
        return -EBADF;

    plat_mutex_lock(&io->mutex);
    plat_io_watch *w = take_slot_locked(io);
    if (w == NULL) {
        plat_mutex_unlock(&io->mutex);
        return -ENOMEM;
    }
    w->fd = fd;
    w->events = events;
    w->cb = cb;
    w->ctx = ctx;
    /*
     * *out is written before the fd is registered, and released (with
     * everything the caller set up before this add) to the first dispatch,
     * which acquires the state: a callback that runs at once already sees
     * its watch, e.g. to remove itself.
     */
    plat_io_watch *old = *out;
    *out = w;
    uint64_t gen = atomic_load_explicit(&w->state, memory_order_relaxed) & WATCH_GEN_MASK;
    atomic_store_explicit(&w->state, gen, memory_order_release);
    struct epoll_event ev = {.events = to_epoll(events), .data.u64 = watch_key(w, gen)};
    if (epoll_ctl(io->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        int err = errno;
        *out = old;
        free_slot_locked(io, w);
        plat_mutex_unlock(&io->mutex);
        return -err;
    }
    io->live_watches++;
    plat_mutex_unlock(&io->mutex);
    return 0;
}

int plat_io_modify(plat_io_watch *w, uint32_t events)
{
    assert(w != NULL);
    plat_io *io = w->io;
    int rc = 0;

    plat_mutex_lock(&io->mutex);
    uint64_t s = atomic_load_explicit(&w->state, memory_order_relaxed);
    assert(!(s & WATCH_REMOVED));
    w->events = events;
    struct epoll_event ev = {.events = to_epoll(events),
                             .data.u64 = watch_key(w, s & WATCH_GEN_MASK)};
    if (epoll_ctl(io->epfd, EPOLL_CTL_MOD, w->fd, &ev) < 0)
        rc = -errno;
    plat_mutex_unlock(&io->mutex);
    return rc;
}

void plat_io_remove(plat_io_watch *w)
{
    if (w == NULL)
        return;
    plat_io *io = w->io;
    bool in_loop = plat_io_on_thread(io);

    plat_mutex_lock(&io->mutex);
    uint64_t was = atomic_fetch_or(&w->state, WATCH_REMOVED);
    assert(!(was & WATCH_REMOVED));
    (void)was;
    /*
     * Fails only if the caller already closed the fd (EBADF), which also
     * dropped it from the epoll set; either way it is gone.
     */
    (void)epoll_ctl(io->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    io->live_watches--;
    /* Inside the loop the running callback, if any, is the caller: never wait there. */
    if (!in_loop) {
        while (atomic_load(&w->state) & WATCH_RUNNING)
            plat_cond_wait(&io->cond, &io->mutex);
    }
    free_slot_locked(io, w);
    plat_mutex_unlock(&io->mutex);
}

/* -------------------------------------------------------------- tasks */

int plat_io_post(plat_io *io, void (*fn)(void *arg), void *arg)
{
    assert(io != NULL && fn != NULL);
    io_task *t = malloc(sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    t->fn = fn;
    t->arg = arg;
    t->next = NULL;

    plat_mutex_lock(&io->mutex);
    bool was_empty = io->tasks_head == NULL;
    if (io->tasks_tail != NULL)
        io->tasks_tail->next = t;
    else
        io->tasks_head = t;
    io->tasks_tail = t;
    plat_mutex_unlock(&io->mutex);
    /* A non-empty queue already has a signal on its way (or is being run). */
    if (was_empty)
        signal_eventfd(io->wakefd);
    return 0;
}

/* ------------------------------------------------------------- guests */

bool plat_io_guest_begin(plat_io *io)
{
    assert(io != NULL);
    if (io_current == io)
        return false; /* the IO thread, or a guest's callback: the loop is busy here */
    uint32_t g = atomic_load(&io->guest);
    uint32_t state;
    do {
        state = g & GUEST_STATE;
        if (state != GUEST_NONE && state != GUEST_RECENT)
            return false;
    } while (!atomic_compare_exchange_weak(&io->guest, &g,
                                           ((g & ~GUEST_STATE) + GUEST_ROUND) | GUEST_IDLE));
    return true;
}

void plat_io_guest_end(plat_io *io)
{
    guest_set(io, GUEST_RECENT);
}

void plat_io_guest_wake(plat_io *io)
{
    /* Pairs with the fence in plat_io_guest_poll: one of the two sides sees the other. */
    atomic_thread_fence(memory_order_seq_cst);
    if ((atomic_load_explicit(&io->guest, memory_order_relaxed) & GUEST_STATE) == GUEST_POLLING)
        signal_eventfd(io->guestfd);
}

/* Time from now until *deadline into *rel; false once it has passed. */
static bool time_until(const struct timespec *deadline, struct timespec *rel)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t ns =
        (int64_t)(deadline->tv_sec - now.tv_sec) * 1000000000 + (deadline->tv_nsec - now.tv_nsec);
    if (ns <= 0)
        return false;
    rel->tv_sec = (time_t)(ns / 1000000000);
    rel->tv_nsec = (long)(ns % 1000000000);
    return true;
}

bool plat_io_guest_poll(plat_io *io, plat_wakeup *wake, const struct timespec *deadline)
{
    struct timespec rel;
    if (deadline != NULL && !time_until(deadline, &rel))
        return false;

    guest_set(io, GUEST_POLLING);
    /* Whoever set `wake` before this sees POLLING, or this sees `wake` set. */
    atomic_thread_fence(memory_order_seq_cst);
    if (plat_wakeup_is_set(wake)) {
        guest_set(io, GUEST_IDLE);
        return true;
    }
    struct epoll_event events[IO_MAX_EVENTS];
    int n = plat_epoll_wait_until(io->epfd, events, IO_MAX_EVENTS, deadline ? &rel : NULL);
    atomic_store_explicit(&io->polls, atomic_load_explicit(&io->polls, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    guest_set(io, GUEST_IDLE);
    if (n <= 0)
        return n < 0 || deadline == NULL; /* EINTR: look again; 0: the deadline */

    unsigned seen = run_batch(io, events, n);
    if (seen & BATCH_KICKED)
        drain_eventfd(io->guestfd);
    if (seen & BATCH_EXIT)
        signal_eventfd(io->wakefd); /* the stop is the IO thread's to see */
    return true;
}
