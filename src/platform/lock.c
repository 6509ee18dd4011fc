/* The contended halves of lock.h's mutex and its condition variable. */
#include "platform/lock.h"

#include <limits.h>
#include <linux/futex.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <unistd.h>

/*
 * How many times a contended locker looks at the word before sleeping. A
 * holder on another CPU lets go within a few hundred nanoseconds; a holder
 * that was preempted does not, and then sleeping is right.
 */
enum { PLAT_MUTEX_SPINS = 100 };

enum { UNLOCKED = 0, LOCKED = 1, CONTENDED = 2 };

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

static void futex_wait(atomic_uint *word, unsigned expected)
{
    /* EAGAIN (the word changed), EINTR or a wake-up: the caller looks again. */
    (void)syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake(atomic_uint *word, int count)
{
    (void)syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
}

void plat_mutex_lock_slow(plat_mutex *m)
{
    for (int i = 0; i < PLAT_MUTEX_SPINS; i++) {
        cpu_relax();
        unsigned expected = UNLOCKED;
        if (atomic_load_explicit(&m->state, memory_order_relaxed) == UNLOCKED &&
            atomic_compare_exchange_weak_explicit(&m->state, &expected, LOCKED,
                                                  memory_order_acquire, memory_order_relaxed))
            return;
    }
    /*
     * From here on the lock is taken as CONTENDED: this thread cannot know
     * whether others sleep beside it, so its own unlock must wake one.
     */
    while (atomic_exchange_explicit(&m->state, CONTENDED, memory_order_acquire) != UNLOCKED)
        futex_wait(&m->state, CONTENDED);
}

void plat_mutex_wake(plat_mutex *m)
{
    futex_wake(&m->state, 1);
}

void plat_cond_wait(plat_cond *c, plat_mutex *m)
{
    /*
     * Read the sequence before unlocking: a broadcast after that point
     * changes it, so the futex wait below returns at once instead of
     * sleeping through it.
     */
    unsigned seq = atomic_load_explicit(&c->seq, memory_order_relaxed);
    plat_mutex_unlock(m);
    futex_wait(&c->seq, seq);
    plat_mutex_lock(m);
}

void plat_cond_broadcast(plat_cond *c)
{
    atomic_fetch_add_explicit(&c->seq, 1, memory_order_release);
    futex_wake(&c->seq, INT_MAX);
}
