/*
 * Platform contract: the IO thread.
 *
 * One thread per process waits in epoll for every registered descriptor and
 * runs the watch's callback when it is ready. Level-triggered: a callback
 * that does a bounded amount of work and returns is called again on the next
 * wake-up while the descriptor stays ready, so one busy peer cannot starve
 * the others.
 *
 * Threads: every function may be called from any thread, including from
 * inside a callback on the IO thread, except plat_io_stop (not from the IO
 * thread). Callbacks and posted tasks run on the IO thread with no lock of
 * this module held.
 */
#ifndef CMOJO_PLATFORM_IO_H_
#define CMOJO_PLATFORM_IO_H_

#include <stdbool.h>
#include <stdint.h>

typedef struct plat_io plat_io;
typedef struct plat_io_watch plat_io_watch;

/* Readiness bits, in a watch's interest set and in what a callback is told. */
#define PLAT_IO_READABLE 1u
#define PLAT_IO_WRITABLE 2u
#define PLAT_IO_HANGUP 4u /* EPOLLHUP/EPOLLERR: always reported, never asked for */

typedef void (*plat_io_callback)(void *ctx, uint32_t events);

/* Starts the thread. 0, or a negative errno (nothing is left behind). */
int plat_io_start(plat_io **out);

/*
 * Stops and joins the thread, then frees it. Every watch must have been
 * removed; tasks posted but not yet run are run first. NULL is fine.
 */
void plat_io_stop(plat_io *io);

/* True on the IO thread itself. */
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
 * Stops watching and frees w. When it returns, w's callback is not running
 * and will not run again -- unless it is called from inside that very
 * callback, in which case the callback is simply not called again after it
 * returns. The fd may be closed afterwards.
 */
void plat_io_remove(plat_io_watch *w);

/*
 * Runs fn(arg) on the IO thread soon, in posting order. 0, or -ENOMEM.
 * Tasks posted before plat_io_stop are run before the thread exits.
 */
int plat_io_post(plat_io *io, void (*fn)(void *arg), void *arg);

#endif /* CMOJO_PLATFORM_IO_H_ */
