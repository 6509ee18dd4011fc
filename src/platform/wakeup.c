/*
 * The one-shot wake-up (wakeup.h) on a futex word:
 *   UNSET   not set, nobody asleep: set needs no system call;
 *   ASLEEP  not set, the waiter is (about to be) in FUTEX_WAIT: set wakes it;
 *   SET     final.
 * The waiter moves UNSET -> ASLEEP before sleeping, and the kernel sleeps
 * only while the word still says ASLEEP, so a set that lands in between is
 * never missed.
 */
#include "platform/wakeup.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { WAKEUP_UNSET = 0, WAKEUP_ASLEEP = 1, WAKEUP_SET = 2 };

void plat_wakeup_init(plat_wakeup *w)
{
    atomic_init(&w->state, WAKEUP_UNSET);
}

void plat_wakeup_set(plat_wakeup *w)
{
    if (atomic_exchange_explicit(&w->state, WAKEUP_SET, memory_order_acq_rel) == WAKEUP_ASLEEP)
        (void)syscall(SYS_futex, &w->state, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

bool plat_wakeup_is_set(plat_wakeup *w)
{
    return atomic_load_explicit(&w->state, memory_order_acquire) == WAKEUP_SET;
}

bool plat_wakeup_wait(plat_wakeup *w, const struct timespec *deadline)
{
    for (;;) {
        unsigned s = atomic_load_explicit(&w->state, memory_order_acquire);
        if (s == WAKEUP_SET)
            return true;
        if (s == WAKEUP_UNSET &&
            !atomic_compare_exchange_weak_explicit(&w->state, &s, WAKEUP_ASLEEP,
                                                   memory_order_acq_rel, memory_order_acquire))
            continue; /* set (or spurious failure) meanwhile: look again */
        /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline. */
        long rc = syscall(SYS_futex, &w->state, FUTEX_WAIT_BITSET_PRIVATE, WAKEUP_ASLEEP, deadline,
                          NULL, FUTEX_BITSET_MATCH_ANY);
        if (rc != 0 && errno == ETIMEDOUT)
            return plat_wakeup_is_set(w);
        /* Woken, the word changed before we slept (EAGAIN), or EINTR: look again. */
    }
}
