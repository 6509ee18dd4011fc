/*
 * Replays saved fuzz inputs through a libFuzzer target without libFuzzer, so
 * every build (gcc, ASan, TSan) runs each corpus as an ordinary test.
 *
 * Usage: replay_<name> PATH...
 *   PATH is an input file or a directory of input files (not recursive; names
 *   starting with '.' are skipped, so a .gitkeep does not count as an input).
 *
 * Exit status: 0 when every input ran; 1 when a PATH is missing or unreadable,
 * or a directory holds no inputs (an empty corpus tests nothing, so it is an
 * error). A target that crashes takes the process down with it, as under
 * libFuzzer; the last "replay:" line on stderr names the input.
 *
 * Each input is copied into a heap block of exactly its size, so sanitizers
 * catch a target reading one byte past the end.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional in a target, as with libFuzzer; weak so that it may be absent. */
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Reads all of |path| into a fresh exact-size heap block. Returns 0 or -1. */
static int read_input(const char *path, uint8_t **out, size_t *out_size)
{
    struct stat st;
    uint8_t *data = NULL;
    size_t size, got = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return -1;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 0)
        goto fail;
    size = (size_t)st.st_size;
    /*
     * An empty input still gets a real (zero-size) block, as under libFuzzer:
     * a target may hand the pointer to memcpy() and friends, where NULL is
     * undefined behaviour even for zero bytes.
     */
    data = malloc(size);
    if (data == NULL && size == 0)
        data = malloc(1);
    if (data == NULL)
        goto fail;
    while (got < size) {
        ssize_t n = read(fd, data + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            goto fail;
        if (n == 0)
            break; /* file shrank while we read it; replay what is there */
        got += (size_t)n;
    }
    close(fd);
    *out = data;
    *out_size = got;
    return 0;

fail:
    free(data);
    close(fd);
    return -1;
}

static int run_file(const char *path)
{
    uint8_t *data;
    size_t size;

    if (read_input(path, &data, &size) != 0) {
        fprintf(stderr, "replay: cannot read %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(stderr, "replay: %s (%zu bytes)\n", path, size);
    LLVMFuzzerTestOneInput(data, size);
    free(data);
    return 0;
}

static int skip_hidden(const struct dirent *entry)
{
    return entry->d_name[0] != '.';
}

/* Runs every regular file in |dir| in name order. Returns inputs run, or -1. */
static long run_dir(const char *dir)
{
    struct dirent **entries;
    long ran = 0;
    int n = scandir(dir, &entries, skip_hidden, alphasort);

    if (n < 0) {
        fprintf(stderr, "replay: cannot list %s: %s\n", dir, strerror(errno));
        return -1;
    }
    for (int i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        int len = snprintf(path, sizeof(path), "%s/%s", dir, entries[i]->d_name);

        if (len < 0 || (size_t)len >= sizeof(path)) {
            fprintf(stderr, "replay: path too long in %s\n", dir);
            ran = -1;
        } else if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            if (run_file(path) != 0)
                ran = -1;
            else if (ran >= 0)
                ran++;
        }
        free(entries[i]);
    }
    free(entries);
    return ran;
}

int main(int argc, char **argv)
{
    long total = 0;
    int failed = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: %s PATH...  (input files or directories of inputs)\n", argv[0]);
        return 1;
    }
    if (LLVMFuzzerInitialize != NULL)
        LLVMFuzzerInitialize(&argc, &argv);

    for (int i = 1; i < argc; i++) {
        struct stat st;

        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            failed = 1;
        } else if (S_ISDIR(st.st_mode)) {
            long ran = run_dir(argv[i]);
            if (ran <= 0) {
                if (ran == 0)
                    fprintf(stderr, "replay: %s holds no inputs\n", argv[i]);
                failed = 1;
            } else {
                total += ran;
            }
        } else if (run_file(argv[i]) != 0) {
            failed = 1;
        } else {
            total++;
        }
    }
    printf("replay: ran %ld input%s from %d path%s%s\n", total, total == 1 ? "" : "s", argc - 1,
           argc == 2 ? "" : "s", failed ? " (with errors)" : "");
    return failed ? 1 : 0;
}
