/* Shared test helpers; see cmojo_test.h. */
#include "cmojo_test.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmojo_test_count_open_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *entry;
    int count = 0;

    if (dir == NULL)
        return errno > 0 ? -errno : -EIO;
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.')
            continue;
        count++;
    }
    closedir(dir);
    /* The directory stream held one descriptor while it was being read. */
    return count - 1;
}

static int fd_baseline = -1;

int cmojo_test_fd_setup(void **state)
{
    (void)state;
    fd_baseline = cmojo_test_count_open_fds();
    if (fd_baseline < 0) {
        fprintf(stderr, "cmojo_test_fd_setup: cannot count fds: %s\n", strerror(-fd_baseline));
        return -1;
    }
    return 0;
}

int cmojo_test_fd_teardown(void **state)
{
    int now = cmojo_test_count_open_fds();

    (void)state;
    if (now != fd_baseline) {
        fprintf(stderr, "fd leak: %d fds open before the test, %d after\n", fd_baseline, now);
        return -1;
    }
    return 0;
}

uint64_t cmojo_test_env_u64(const char *name, uint64_t fallback)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return fallback;
    char *end;
    unsigned long long x = strtoull(v, &end, 0);
    return *end ? fallback : (uint64_t)x;
}
