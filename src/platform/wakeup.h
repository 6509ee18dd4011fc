/*
 * Platform contract: a one-shot wake-up.
 *
 * One thread waits until another sets it -- the cheapest hand-off Linux has
 * (a futex word): setting it costs one atomic exchange, plus one system call
 * only when the waiter is really asleep; waiting on one already set costs no
 * system call at all. Unlike a mutex and condition variable, the woken thread
 * does not come back to a lock the setter still holds or flagged as
 * contended.
 *
 * Threads: plat_wakeup_set from any thread, any number of times (the first
 * counts). plat_wakeup_wait from one thread at a time. The memory must stay
 * valid until plat_wakeup_set has returned, even if the waiter has already
 * seen it set (the setter may still be waking it).
 */
#ifndef CMOJO_PLATFORM_WAKEUP_H_
#define CMOJO_PLATFORM_WAKEUP_H_

#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

typedef struct plat_wakeup {
    atomic_uint state; /* the futex word; see wakeup.c */
} plat_wakeup;

void plat_wakeup_init(plat_wakeup *w);

/* Sets it and wakes the waiter, if any. */
void plat_wakeup_set(plat_wakeup *w);

/* Whether it was set; an acquire, like a wait that returned true. */
bool plat_wakeup_is_set(plat_wakeup *w);

/*
 * Waits until it is set, or until the absolute CLOCK_MONOTONIC time
 * *deadline (NULL: no limit). True once set (everything the setter wrote
 * before setting it is visible), false if the deadline passed first.
 */
bool plat_wakeup_wait(plat_wakeup *w, const struct timespec *deadline);

#endif /* CMOJO_PLATFORM_WAKEUP_H_ */
