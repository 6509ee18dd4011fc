/*
 * Fuzzes what a data pipe end that arrives from another process brings: its
 * serialised state (dp_state_read) and its ring fd (dp_ring_fd_check).
 *
 * State: an accepted state is valid (dp_state_valid), was exactly
 * DP_STATE_SIZE bytes and serialises back to the same bytes; a rejected one
 * says why and leaves *out alone.
 *
 * Ring: a real fd is made from the input -- a memfd of a given size with
 * given seals, a memfd that cannot be sealed, or not a memfd at all (a pipe),
 * the memfds opened read-write or reopened read-only -- and checked against
 * a capacity (the state's, when it parsed, else one from the input) for a
 * producer or a consumer. The check must agree with the rule: accepted
 * exactly when the fd is a memfd sealed against shrinking, is exactly
 * capacity bytes, and is opened O_RDWR and not sealed against writing for a
 * producer, O_RDONLY for a consumer. An accepted ring must then map as the
 * deserialiser maps it, and a consumer's must refuse a writable mapping.
 * Every fd is closed per input, and the count of open fds is checked.
 *
 * Input: byte 0 picks the fd kind and the seals, byte 1 the size rule and
 * the end, bytes 2-5 a size, bytes 6-9 a capacity, the rest is the state.
 */
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cmojo_limits.h"
#include "cmojo_wire.h"
#include "core/data_pipe_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

/* Rings larger than this are made sparse but not mapped (mapping is not what is fuzzed). */
#define MAX_MAPPED_RING (1u << 20)

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            abort();                                                                               \
    } while (0)

static int open_fd_count(void)
{
    /* Open descriptors among the first 256 (every one the fuzzer and we use is low). */
    int count = 0;
    for (int fd = 0; fd < 256; fd++)
        count += fcntl(fd, F_GETFD) >= 0;
    return count;
}

/* Returns true and the state when the bytes parse; checks the parser either way. */
static bool check_state(const uint8_t *buf, size_t len, dp_state *out)
{
    /* An exact-size copy, so a read past the state is an ASan report. */
    uint8_t *copy = malloc(len ? len : 1);
    CHECK(copy);
    if (len)
        memcpy(copy, buf, len);
    const dp_state sentinel = {0xa5a5a5a5u, 0x5a5a5a5au, 0x12345678u, 0x87654321u};
    dp_state s = sentinel;
    const char *why = NULL;
    int rv = dp_state_read(copy, len, &s, &why);
    CHECK(rv == 0 || rv == -1);
    if (rv != 0) {
        CHECK(why && *why);
        CHECK(memcmp(&s, &sentinel, sizeof(s)) == 0);
        free(copy);
        return false;
    }
    CHECK(len == DP_STATE_SIZE && dp_state_valid(&s));
    uint8_t again[DP_STATE_SIZE];
    dp_state_write(&s, again);
    CHECK(memcmp(again, copy, DP_STATE_SIZE) == 0);
    free(copy);
    *out = s;
    return true;
}

/*
 * The fd for byte `kind`: bits 0-1 what it is (0, 1: a sealable memfd; 2: a
 * memfd without MFD_ALLOW_SEALING; 3: a pipe), bits 2-6 the seals to add
 * (shrink, grow, write, future write, seal), bit 7 a memfd reopened
 * O_RDONLY. Sets *seals_out, *is_memfd and *access (O_ACCMODE bits) to
 * what is true of it. Returns -1 when the kernel refuses the combination.
 */
static int make_fd(uint8_t kind, uint32_t size, int *seals_out, bool *is_memfd, int *access)
{
    *seals_out = 0;
    *is_memfd = false;
    *access = O_RDONLY;
    if ((kind & 3) == 3) {
        int p[2];
        CHECK(pipe2(p, O_CLOEXEC) == 0);
        close(p[1]);
        return p[0];
    }
    bool sealable = (kind & 3) != 2;
    int fd = memfd_create("fuzz-ring", MFD_CLOEXEC | (sealable ? MFD_ALLOW_SEALING : 0));
    CHECK(fd >= 0);
    *is_memfd = true;
    if (ftruncate(fd, (off_t)size) != 0) {
        close(fd);
        return -1;
    }
    static const int seal_bits[] = {F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE, F_SEAL_FUTURE_WRITE,
                                    F_SEAL_SEAL};
    int seals = 0;
    for (int i = 0; i < 5; i++)
        if (kind & (4 << i))
            seals |= seal_bits[i];
    if (sealable && seals && fcntl(fd, F_ADD_SEALS, seals) != 0) {
        close(fd);
        return -1;
    }
    int got = fcntl(fd, F_GET_SEALS);
    CHECK(got >= 0);
    *seals_out = got;
    *access = O_RDWR;
    if (kind & 0x80) {
        char path[32];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        int ro = open(path, O_RDONLY | O_CLOEXEC);
        CHECK(ro >= 0);
        close(fd);
        fd = ro;
        *access = O_RDONLY;
    }
    return fd;
}

static void check_ring(uint8_t kind, uint8_t rule, uint32_t raw_size, uint32_t raw_capacity,
                       const dp_state *st)
{
    uint32_t capacity = st ? st->capacity : raw_capacity;
    /* Mostly the right size or one off, so acceptance is reached often. */
    uint32_t size;
    switch (rule & 3) {
    case 0:
        size = capacity;
        break;
    case 1:
        size = capacity + 1;
        break;
    case 2:
        size = capacity ? capacity - 1 : 0;
        break;
    default:
        size = raw_size % (2 * CMOJO_MAX_DATA_PIPE_CAPACITY);
        break;
    }
    bool producer = rule & 4;
    int seals;
    bool is_memfd;
    int access;
    int fd = make_fd(kind, size, &seals, &is_memfd, &access);
    if (fd < 0)
        return;
    bool legal = is_memfd && (seals & F_SEAL_SHRINK) &&
                 !(producer && (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE))) &&
                 size == capacity && access == (producer ? O_RDWR : O_RDONLY);
    const char *why = NULL;
    int rv = dp_ring_fd_check(fd, capacity, producer, &why);
    CHECK(rv == 0 || rv == -1);
    if (rv != 0) {
        CHECK(!legal && why && *why);
    } else {
        CHECK(legal);
        /* What the deserialiser does next must work on an accepted ring. */
        if (capacity && capacity <= MAX_MAPPED_RING) {
            void *p = mmap(NULL, capacity, producer ? PROT_READ | PROT_WRITE : PROT_READ,
                           MAP_SHARED, fd, 0);
            CHECK(p != MAP_FAILED);
            CHECK(((volatile uint8_t *)p)[0] == 0); /* a fresh memfd reads as zeros */
            if (producer)
                ((volatile uint8_t *)p)[capacity - 1] = 1;
            else
                CHECK(mprotect(p, capacity, PROT_READ | PROT_WRITE) != 0);
            CHECK(munmap(p, capacity) == 0);
            if (!producer)
                CHECK(mmap(NULL, capacity, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) ==
                      MAP_FAILED);
        }
    }
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 10)
        return 0;
    /* Counted per input: libFuzzer itself opens and closes files between inputs. */
    int baseline = open_fd_count();
    dp_state st;
    bool parsed = check_state(data + 10, size - 10, &st);
    check_ring(data[0], data[1], wire_load_u32(data + 2), wire_load_u32(data + 6),
               parsed ? &st : NULL);
    CHECK(open_fd_count() == baseline);
    return 0;
}
