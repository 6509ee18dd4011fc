#include "platform/lock.h"

void plat_mutex_init(pthread_mutex_t *mutex)
{
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
    /*
     * A copy of the static initializer: what pthread_mutex_init with an
     * adaptive attribute produces, without building and destroying the
     * attribute for every object that embeds a lock.
     */
    static const pthread_mutex_t adaptive = PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP;
    *mutex = adaptive;
#else
    pthread_mutex_init(mutex, NULL);
#endif
}
