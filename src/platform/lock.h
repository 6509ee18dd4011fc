/*
 * Mutexes and condition variables for cmojo's short critical sections.
 *
 * Every lock in cmojo guards a few dozen instructions, and a message round
 * trip takes about forty of them, so the uncontended path is what counts:
 * here it is one compare-and-swap to lock and one exchange to unlock, both
 * inlined (a pthread mutex costs about half as much again, in function calls
 * and type dispatch). Contended, a locker spins briefly -- the holder is about
 * to let go -- then sleeps on the futex word.
 *
 * The word: 0 unlocked; 1 locked, nobody asleep; 2 locked, maybe someone
 * asleep (the unlocker must wake one). A locker that gives up spinning takes
 * the lock as 2 from then on, even after it was woken, so a wake-up is never
 * lost, at the price of one wake system call too many now and then.
 *
 * The condition variable is broadcast-only (every user wakes all waiters and
 * re-checks its predicate): a sequence word that broadcast bumps, and that a
 * waiter sleeps on after unlocking.
 *
 * Under ThreadSanitizer the lock tells TSan what it is, so data races through
 * it and lock-order inversions are still reported as with pthread mutexes.
 */
#ifndef CMOJO_PLATFORM_LOCK_H_
#define CMOJO_PLATFORM_LOCK_H_

#include <assert.h>
#include <stdatomic.h>

#if defined(__SANITIZE_THREAD__)
#define PLAT_LOCK_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PLAT_LOCK_TSAN 1
#endif
#endif

#ifdef PLAT_LOCK_TSAN
#include <sanitizer/tsan_interface.h>
#endif

typedef struct plat_mutex {
    atomic_uint state;
} plat_mutex;

typedef struct plat_cond {
    atomic_uint seq;
} plat_cond;

/* For a mutex with static storage. */
#define PLAT_MUTEX_INITIALIZER                                                                     \
    {                                                                                              \
        0                                                                                          \
    }

/* The contended paths, out of line. */
void plat_mutex_lock_slow(plat_mutex *m);
void plat_mutex_wake(plat_mutex *m);

static inline void plat_mutex_init(plat_mutex *m)
{
    atomic_init(&m->state, 0);
#ifdef PLAT_LOCK_TSAN
    __tsan_mutex_create(m, 0);
#endif
}

static inline void plat_mutex_destroy(plat_mutex *m)
{
    assert(atomic_load_explicit(&m->state, memory_order_relaxed) == 0); /* not held */
#ifdef PLAT_LOCK_TSAN
    __tsan_mutex_destroy(m, 0);
#else
    (void)m;
#endif
}

static inline void plat_mutex_lock(plat_mutex *m)
{
#ifdef PLAT_LOCK_TSAN
    __tsan_mutex_pre_lock(m, 0);
#endif
    unsigned expected = 0;
    if (!atomic_compare_exchange_strong_explicit(&m->state, &expected, 1, memory_order_acquire,
                                                 memory_order_relaxed))
        plat_mutex_lock_slow(m);
#ifdef PLAT_LOCK_TSAN
    __tsan_mutex_post_lock(m, 0, 0);
#endif
}

static inline void plat_mutex_unlock(plat_mutex *m)
{
#ifdef PLAT_LOCK_TSAN
    __tsan_mutex_pre_unlock(m, 0);
#endif
    if (atomic_exchange_explicit(&m->state, 0, memory_order_release) != 1)
        plat_mutex_wake(m);
#ifdef PLAT_LOCK_TSAN
    __tsan_mutex_post_unlock(m, 0);
#endif
}

static inline void plat_cond_init(plat_cond *c)
{
    atomic_init(&c->seq, 0);
}

static inline void plat_cond_destroy(plat_cond *c)
{
    (void)c;
}

/*
 * Unlocks m, sleeps until a broadcast (or spuriously), locks m again. The
 * caller re-checks its predicate in a loop, as with pthread_cond_wait.
 */
void plat_cond_wait(plat_cond *c, plat_mutex *m);

/*
 * Wakes every thread in plat_cond_wait on c. As with pthreads, the waiters'
 * predicate must have been changed under their mutex; the broadcast itself
 * may come after unlocking.
 */
void plat_cond_broadcast(plat_cond *c);

#endif /* CMOJO_PLATFORM_LOCK_H_ */
