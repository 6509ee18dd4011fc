/*
 * Random bytes from getrandom(2). No fallback to /dev/urandom: every kernel
 * cmojo supports has getrandom, and reading a device file would cost an fd and
 * fail inside sandboxes that hide /dev.
 */
#include "platform/random.h"

#include <assert.h>
#include <errno.h>
#include <sys/random.h>

ssize_t (*plat_random_getrandom)(void *buf, size_t len, unsigned int flags) = getrandom;

int plat_random_bytes(void *buf, size_t len)
{
    unsigned char *out = buf;
    size_t filled = 0;

    assert(buf != NULL || len == 0);

    while (filled < len) {
        size_t want = len - filled;
        ssize_t got = plat_random_getrandom(out + filled, want, 0);

        if (got < 0) {
            if (errno == EINTR)
                continue;
            /* A failing call that forgot errno must still read as a failure. */
            return errno > 0 ? -errno : -EIO;
        }
        /*
         * Zero bytes would make this loop spin forever, and more than asked
         * would mean the kernel (or a test hook) wrote past the buffer; treat
         * both as I/O errors rather than trusting the count.
         */
        if (got == 0 || (size_t)got > want)
            return -EIO;
        filled += (size_t)got;
    }
    return 0;
}
