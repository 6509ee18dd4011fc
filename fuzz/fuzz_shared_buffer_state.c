/*
 * Fuzzes what a shared buffer arriving from another process goes through
 * before it is mapped: the state in the message envelope
 * (core_shared_buffer_state_parse) and the fd that came with it
 * (core_shared_buffer_check_fd), together as the wire type's deserializer.
 *
 * Input: byte 0 picks the fd -- bits 0-4 the seals added to it (SHRINK,
 * GROW, WRITE, FUTURE_WRITE, SEAL), bits 5-6 its kind (a memfd; a memfd
 * created without sealing; a pipe; a memfd reopened read-only); bytes 1-2
 * the memfd's size (little-endian, 0..65535); the rest is the state.
 *
 * Checked for every input: a rejection says why and leaves the fd to the
 * caller; a parsed state writes back to the same bytes; an accepted buffer
 * can be mapped whole and read at both ends without a fault, written unless
 * it is READ_ONLY, and a READ_ONLY mapping can never be made writable; no fd
 * is kept or lost (counted per input).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/shared_buffer.h"
#include "mojo/public/c/system/buffer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int open_fd_count(void)
{
    /* Open descriptors among the first 256 (every one the fuzzer and we use is low). */
    int count = 0;
    for (int fd = 0; fd < 256; fd++)
        count += fcntl(fd, F_GETFD) >= 0;
    return count;
}

static const int seal_bits[] = {F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE, F_SEAL_FUTURE_WRITE,
                                F_SEAL_SEAL};

/* The fd the input describes, or -1 if the kernel refused to build it. */
static int make_fd(uint8_t how, off_t size)
{
    int kind = (how >> 5) & 3;
    int seals = 0;
    for (size_t i = 0; i < sizeof(seal_bits) / sizeof(seal_bits[0]); i++)
        if (how & (1u << i))
            seals |= seal_bits[i];
    if (kind == 2) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) != 0)
            abort();
        close(p[1]);
        return p[0];
    }
    int fd = memfd_create("fuzz", MFD_CLOEXEC | (kind == 1 ? 0 : MFD_ALLOW_SEALING));
    if (fd < 0 || ftruncate(fd, size) != 0)
        abort();
    if (seals)
        (void)fcntl(fd, F_ADD_SEALS, seals); /* fails quietly without ALLOW_SEALING */
    if (kind == 3) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        int ro = open(path, O_RDONLY | O_CLOEXEC);
        close(fd);
        if (ro < 0)
            abort();
        fd = ro;
    }
    return fd;
}

static void check_buffer(core_dispatcher *d, const core_shared_buffer_state *st)
{
    void *p;
    if (core_shared_buffer_map(d, 0, st->num_bytes, &p) != MOJO_RESULT_OK)
        abort(); /* every accepted buffer must be mappable whole */
    volatile uint8_t *b = p;
    uint8_t first = b[0], last = b[st->num_bytes - 1];
    if (st->access_mode == MOJO_PLATFORM_SHARED_MEMORY_REGION_ACCESS_MODE_READ_ONLY) {
        long page = sysconf(_SC_PAGESIZE);
        size_t len = (size_t)((st->num_bytes + (uint64_t)page - 1) / (uint64_t)page * page);
        if (mprotect(p, len, PROT_READ | PROT_WRITE) == 0)
            abort(); /* read-only must be for good */
    } else {
        b[0] = (uint8_t)(first + 1);
        b[st->num_bytes - 1] = (uint8_t)(last + 1);
    }
    if (MojoUnmapBuffer(p) != MOJO_RESULT_OK)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    int baseline = open_fd_count();
    const uint8_t *state = data + 3;
    size_t state_size = size - 3;

    /* The pure parser: a rejection says why, an acceptance round-trips. */
    core_shared_buffer_state st;
    const char *why = NULL;
    int parsed = core_shared_buffer_state_parse(state, state_size, &st, &why);
    if (parsed != 0 && !why)
        abort();
    if (parsed == 0) {
        uint8_t back[CORE_SHARED_BUFFER_STATE_SIZE];
        core_shared_buffer_state_write(back, &st);
        if (state_size != sizeof(back) || memcmp(back, state, sizeof(back)) != 0)
            abort();
    }

    /* The whole deserializer, with a real fd of the chosen kind. */
    int fd = make_fd(data[0], (off_t)(data[1] | data[2] << 8));
    int fds[1] = {fd};
    why = NULL;
    core_dispatcher *d = core_shared_buffer_deserialize(state, state_size, fds, &why);
    if (!d) {
        if (!why || fds[0] != fd || fcntl(fd, F_GETFD) < 0)
            abort(); /* rejected: says why, the fd still the caller's */
        close(fd);
    } else {
        if (parsed != 0 || fds[0] != -1)
            abort(); /* accepted what the parser refused, or left the fd to us */
        check_buffer(d, &st);
        core_dispatcher_close(d);
        core_dispatcher_release(d);
    }
    if (open_fd_count() != baseline || core_shared_buffer_debug_mapping_count() != 0)
        abort(); /* an fd or a mapping was kept or lost */
    return 0;
}
