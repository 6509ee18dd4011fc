/*
 * The IO thread: one epoll loop per process (see io.h).
 *
 * Synchronisation. One mutex guards the task queue and the graveyard, and
 * pairs with the condition variable. A watch's RUNNING and REMOVED flags are
 * one atomic word, so dispatching an event takes no lock: the thread sets
 * RUNNING only if REMOVED is not set (one compare-and-swap), and clears it
 * after the callback; plat_io_remove from another thread sets REMOVED under
 * the mutex and, while RUNNING is set, waits on the condition variable,
 * which the thread broadcasts (under the mutex) when the RUNNING it clears
 * came with REMOVED. Whichever of the two atomic updates comes first, the
 * other side sees it, so no wake-up is lost. Called on the IO thread itself
 * there is nothing to wait for: either the caller is that callback (which is
 * simply not called again) or the callback cannot be running.
 *
 * Memory. A removed watch may still sit in the batch of events the thread
 * got from epoll_wait, so it is never freed by plat_io_remove: it goes to a
 * graveyard that the thread empties after the batch, before it waits again.
 * Every watch in the graveyard was deleted from epoll before that point, so
 * no later batch can name it.
 */
#include "platform/io.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "platform/lock.h"
#include "platform/sys.h"

/*
 * Events taken from epoll per wake-up. Callbacks do bounded work, so this
 * bounds how long posted tasks (run between batches) can wait.
 */
#define IO_MAX_EVENTS 64

/* plat_io_watch.state */
#define WATCH_RUNNING 1u
#define WATCH_REMOVED 2u

struct plat_io_watch {
    plat_io *io;
    int fd;
    plat_io_callback cb;
    void *ctx;
    atomic_uint state; /* WATCH_RUNNING | WATCH_REMOVED */
    plat_io_watch *next_dead;
};

typedef struct io_task {
    void (*fn)(void *arg);
    void *arg;
    struct io_task *next;
} io_task;

struct plat_io {
    int epfd;
    int wakefd; /* eventfd: posted tasks and stop */
    pthread_t thread;

    plat_mutex mutex;
    plat_cond cond; /* a callback finished running */
    io_task *tasks_head;
    io_task *tasks_tail;
    /* Pushed under mutex; atomic so that an empty one is seen without it. */
    _Atomic(plat_io_watch *) graveyard;
    size_t live_watches;
    bool stopping;
};

/* The loop this thread runs, so plat_io_on_thread needs no shared state. */
static _Thread_local const plat_io *io_current;

static uint32_t to_epoll(uint32_t events)
{
    uint32_t ep = 0;
    if (events & PLAT_IO_READABLE)
        ep |= EPOLLIN;
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
    if (ep & (EPOLLHUP | EPOLLERR))
        events |= PLAT_IO_HANGUP;
    return events;
}

static void wake(plat_io *io)
{
    uint64_t one = 1;
    /* EAGAIN means the counter is already nonzero: the thread wakes anyway. */
    while (write(io->wakefd, &one, sizeof(one)) < 0 && errno == EINTR) {
    }
}

static void drain_wakefd(plat_io *io)
{
    uint64_t count;
    while (read(io->wakefd, &count, sizeof(count)) < 0 && errno == EINTR) {
    }
}

/*
 * Runs the tasks queued now, oldest first; tasks they post wait for the next
 * turn (their post woke the loop), so a task that keeps re-posting itself
 * cannot starve the watches. True when the thread should exit: stopping,
 * with nothing left to run.
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

static void bury_dead(plat_io *io)
{
    if (atomic_load_explicit(&io->graveyard, memory_order_relaxed) == NULL)
        return; /* only this thread empties it: nothing to bury */
    plat_mutex_lock(&io->mutex);
    plat_io_watch *dead = atomic_exchange(&io->graveyard, NULL);
    plat_mutex_unlock(&io->mutex);

    while (dead != NULL) {
        plat_io_watch *next = dead->next_dead;
        free(dead);
        dead = next;
    }
}

static void dispatch(plat_io *io, plat_io_watch *w, uint32_t ep)
{
    unsigned s = atomic_load(&w->state);
    do {
        if (s & WATCH_REMOVED)
            return;
    } while (!atomic_compare_exchange_weak(&w->state, &s, s | WATCH_RUNNING));

    w->cb(w->ctx, from_epoll(ep));

    if (atomic_fetch_and(&w->state, ~WATCH_RUNNING) & WATCH_REMOVED) {
        /* A remover may be waiting for this callback to end. */
        plat_mutex_lock(&io->mutex);
        plat_cond_broadcast(&io->cond);
        plat_mutex_unlock(&io->mutex);
    }
}

static void *io_main(void *arg)
{
    plat_io *io = arg;
    struct epoll_event events[IO_MAX_EVENTS];

    io_current = io;
    for (;;) {
        int n = plat_epoll_wait(io->epfd, events, IO_MAX_EVENTS, -1);
        if (n < 0) {
            /* Only EINTR is possible with valid arguments. */
            assert(errno == EINTR);
            continue;
        }
        bool woken = false;
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == NULL)
                woken = true;
            else
                dispatch(io, events[i].data.ptr, events[i].events);
        }
        bury_dead(io);
        if (woken) {
            drain_wakefd(io);
            if (run_tasks(io))
                break;
        }
    }
    /* A watch removed by the last task is still waiting to be freed. */
    bury_dead(io);
    return NULL;
}

int plat_io_start(plat_io **out)
{
    assert(out != NULL);
    plat_io *io = calloc(1, sizeof(*io));
    if (io == NULL)
        return -ENOMEM;
    io->epfd = -1;
    io->wakefd = -1;

    int rc;
    io->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (io->epfd < 0)
        goto fail_errno;
    io->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (io->wakefd < 0)
        goto fail_errno;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(io->epfd, EPOLL_CTL_ADD, io->wakefd, &ev) < 0)
        goto fail_errno;

    plat_mutex_init(&io->mutex);
    plat_cond_init(&io->cond);
    rc = pthread_create(&io->thread, NULL, io_main, io);
    if (rc != 0) {
        plat_cond_destroy(&io->cond);
        plat_mutex_destroy(&io->mutex);
        goto fail;
    }
    *out = io;
    return 0;

fail_errno:
    rc = errno;
fail:
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
    assert(!plat_io_on_thread(io));

    plat_mutex_lock(&io->mutex);
    assert(io->live_watches == 0);
    io->stopping = true;
    plat_mutex_unlock(&io->mutex);
    wake(io);
    pthread_join(io->thread, NULL);

    /* The thread ran every task queued before it saw `stopping` with none left. */
    assert(io->tasks_head == NULL);
    assert(io->graveyard == NULL);
    close(io->wakefd);
    close(io->epfd);
    plat_cond_destroy(&io->cond);
    plat_mutex_destroy(&io->mutex);
    free(io);
}

bool plat_io_on_thread(const plat_io *io)
{
    return io != NULL && io_current == io;
}

int plat_io_add(plat_io *io, int fd, uint32_t events, plat_io_callback cb, void *ctx,
                plat_io_watch **out)
{
    assert(io != NULL && cb != NULL && out != NULL);
    if (fd < 0)
        return -EBADF;
    plat_io_watch *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -ENOMEM;
    w->io = io;
    w->fd = fd;
    w->cb = cb;
    w->ctx = ctx;
    atomic_init(&w->state, 0);

    struct epoll_event ev = {.events = to_epoll(events), .data.ptr = w};
    plat_mutex_lock(&io->mutex);
    /*
     * *out is written before the fd is registered, and released (with
     * everything the caller set up before this add) to the thread's first
     * dispatch, which acquires the state: a callback that runs at once
     * already sees its watch, e.g. to remove itself.
     */
    plat_io_watch *old = *out;
    *out = w;
    atomic_store_explicit(&w->state, 0, memory_order_release);
    if (epoll_ctl(io->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        int err = errno;
        *out = old;
        plat_mutex_unlock(&io->mutex);
        free(w);
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
    struct epoll_event ev = {.events = to_epoll(events), .data.ptr = w};
    int rc = 0;

    plat_mutex_lock(&io->mutex);
    assert(!(atomic_load(&w->state) & WATCH_REMOVED));
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
    bool on_thread = plat_io_on_thread(io);

    plat_mutex_lock(&io->mutex);
    unsigned was = atomic_fetch_or(&w->state, WATCH_REMOVED);
    assert(!(was & WATCH_REMOVED));
    (void)was;
    /*
     * Fails only if the caller already closed the fd (EBADF), which also
     * dropped it from the epoll set; either way it is gone.
     */
    (void)epoll_ctl(io->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    io->live_watches--;
    if (!on_thread) {
        while (atomic_load(&w->state) & WATCH_RUNNING)
            plat_cond_wait(&io->cond, &io->mutex);
    }
    w->next_dead = atomic_load(&io->graveyard);
    atomic_store(&io->graveyard, w);
    plat_mutex_unlock(&io->mutex);
}

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
    /* A non-empty queue already has a wake-up on its way (or is being run). */
    if (was_empty)
        wake(io);
    return 0;
}
