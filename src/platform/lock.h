/*
 * Mutexes for cmojo's short critical sections.
 *
 * Every lock in cmojo guards a few dozen instructions. When two threads meet
 * on one (the two ends of a ping-pong, say), sleeping in the kernel costs two
 * context switches while the holder is about to let go; an adaptive mutex
 * spins briefly first. On libcs without the adaptive kind this is a plain
 * mutex.
 */
#ifndef CMOJO_PLATFORM_LOCK_H_
#define CMOJO_PLATFORM_LOCK_H_

#include <pthread.h>

void plat_mutex_init(pthread_mutex_t *mutex);

#endif /* CMOJO_PLATFORM_LOCK_H_ */
