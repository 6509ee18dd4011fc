/*
 * Platform contract: the IO loop.
 *
 * One epoll set per process, waited on by the IO thread and, now and then,
 * by one guest: a thread that is about to block until something happens
 * (MojoWait) and does the IO itself meanwhile, so that a message for it is
 * read on its own thread instead of costing a second wake-up (see io.c).
 * Whoever is polling runs the callbacks, one at a time: callbacks never run
 * concurrently with each other or with posted tasks.
 *
 * Edge-triggered, with a say for the callback: a callback that did a bounded
 * amount of work and stopped before the fd was drained returns true, and is
 * called again (after the other ready watches had their turn) while the fd
 * stays ready, as with level triggering; one that drained what it was told
 * of returns false and is called again when the fd becomes ready anew. So
 * one busy peer cannot starve the others.
 *
 * Threads: every function may be called from any thread, including from
 * inside a callback, except plat_io_stop (not from inside the loop).
 * Callbacks and posted tasks run with no lock of this module held except the
 * one that keeps them apart; plat_io_on_thread is true inside them.
 */
#ifndef CMOJO_PLATFORM_IO_H_
#define CMOJO_PLATFORM_IO_H_

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "platform/wakeup.h"

typedef struct plat_io plat_io;
typedef struct plat_io_watch plat_io_watch;

/* Readiness bits, in a watch's interest set and in what a callback is told. */
#define PLAT_IO_READABLE 1u
#define PLAT_IO_WRITABLE 2u
/*
 * The peer hung up or shut down its writing side (EPOLLHUP, EPOLLRDHUP), or
 * an error (EPOLLERR): always reported, never asked for. A reader told of it
 * reads on to the end of file, since no later edge will say that more is
 * there.
 */
#define PLAT_IO_HANGUP 4u

/* Returns true to be called again while the fd stays ready (see above). */
typedef bool (*plat_io_callback)(void *ctx, uint32_t events);

/* Starts the thread. 0, or a negative errno (nothing is left behind). */
int plat_io_start(plat_io **out);

/*
 * Stops and joins the thread, then frees it. Every watch must have been
 * removed and no guest may be polling; tasks posted but not yet run are run
 * first. NULL is fine.
 */
void plat_io_stop(plat_io *io);

/* True on the IO thread, and on a guest while it runs callbacks and tasks. */
bool plat_io_on_thread(const plat_io *io);

/*
 * Watches fd for `events` (PLAT_IO_READABLE | PLAT_IO_WRITABLE). The fd stays
 * the caller's: it is not closed by this module. 0 or a negative errno.
 */
int plat_io_add(plat_io *io, int fd, uint32_t events, plat_io_callback cb, void *ctx,
                plat_io_watch **out);

/* Replaces the interest set. 0 or a negative errno. */
int plat_io_modify(plat_io_watch *w, uint32_t events);

/*
 * Stops watching. When it returns, w's callback is not running and will not
 * run again -- unless it is called from inside the loop (a callback or a
 * task), where the only callback that can be running is the caller itself,
 * which is simply not called again after it returns. The fd may be closed
 * afterwards; w must not be used again.
 */
void plat_io_remove(plat_io_watch *w);

/*
 * Runs fn(arg) inside the loop soon, in posting order. 0, or -ENOMEM.
 * Tasks posted before plat_io_stop are run before the thread exits.
 */
int plat_io_post(plat_io *io, void (*fn)(void *arg), void *arg);

/*
 * Guests. A thread that would otherwise sleep until `wake` is set may claim
 * the guest role (one thread at a time; never from inside the loop) and poll
 * instead:
 *
 *     if (plat_io_guest_begin(io)) {
 *         while (!plat_wakeup_is_set(&wake) && plat_io_guest_poll(io, &wake, deadline))
 *             ;
 *         plat_io_guest_end(io);
 *     }
 *
 * Whoever sets `wake` then calls plat_io_guest_wake(io), which interrupts
 * the guest's wait. plat_io_guest_poll returns after one batch of IO was
 * run, a wake-up, or the deadline (then false); the callbacks it runs are
 * the loop's, on the guest's thread.
 */
bool plat_io_guest_begin(plat_io *io);
bool plat_io_guest_poll(plat_io *io, plat_wakeup *wake, const struct timespec *deadline);
void plat_io_guest_wake(plat_io *io);
void plat_io_guest_end(plat_io *io);

#endif /* CMOJO_PLATFORM_IO_H_ */
