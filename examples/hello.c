/*
 * Smallest cmojo program: reads the Mojo clock through the installed library,
 * using nothing but the public headers.
 *
 *   cc hello.c $(pkg-config --cflags --libs cmojo) -o hello && ./hello
 *
 * Exits 0 if the clock is positive, never goes backwards and advances across a
 * short sleep; 1 otherwise. The install test builds and runs it this way.
 */
/* nanosleep() is POSIX, not ISO C. */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <time.h>

#include "mojo/public/c/system/core.h"

int main(void)
{
    const struct timespec ten_ms = {.tv_sec = 0, .tv_nsec = 10 * 1000 * 1000};
    MojoTimeTicks first = MojoGetTimeTicksNow();
    MojoTimeTicks prev = first;

    if (first <= 0) {
        fprintf(stderr, "hello: MojoGetTimeTicksNow() returned %lld, want > 0\n", (long long)first);
        return 1;
    }
    for (int i = 0; i < 1000; i++) {
        MojoTimeTicks now = MojoGetTimeTicksNow();
        if (now < prev) {
            fprintf(stderr, "hello: clock went backwards: %lld then %lld\n", (long long)prev,
                    (long long)now);
            return 1;
        }
        prev = now;
    }
    nanosleep(&ten_ms, NULL);
    MojoTimeTicks last = MojoGetTimeTicksNow();
    if (last <= first) {
        fprintf(stderr, "hello: clock did not advance across a sleep\n");
        return 1;
    }
    printf("hello from cmojo: MojoGetTimeTicksNow() = %lld us (+%lld us across a 10 ms sleep)\n",
           (long long)last, (long long)(last - prev));
    return 0;
}
