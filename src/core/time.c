/*
 * MojoGetTimeTicksNow(): the API's clock.
 *
 * CLOCK_MONOTONIC rather than CLOCK_REALTIME because callers use the value for
 * deadlines and intervals, which must not jump when the wall clock is set.
 */
#include <stdlib.h>
#include <time.h>

#include "mojo/public/c/system/functions.h"

#define CMOJO_USEC_PER_SEC INT64_C(1000000)
#define CMOJO_NSEC_PER_USEC 1000

MojoTimeTicks MojoGetTimeTicksNow(void)
{
    struct timespec now;

    /*
     * Linux cannot fail this call for CLOCK_MONOTONIC with a valid pointer; if
     * it ever did, returning a made-up time would silently break every
     * deadline, so stop instead.
     */
    if (clock_gettime(CLOCK_MONOTONIC, &now) != 0)
        abort();

    return (MojoTimeTicks)now.tv_sec * CMOJO_USEC_PER_SEC +
           (MojoTimeTicks)(now.tv_nsec / CMOJO_NSEC_PER_USEC);
}
