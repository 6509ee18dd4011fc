/*
 * The untrusted boundary of shared buffers: the state a message envelope
 * carries for one, and the checks its memfd must pass before this process
 * maps a byte of it. Everything a peer (or a MojoWrapPlatformSharedMemoryRegion
 * caller) hands us goes through here; the parser is fuzzed
 * (fuzz/fuzz_shared_buffer_state.c).
 */
#include "core/shared_buffer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmojo_limits.h"
#include "cmojo_wire.h"

int core_shared_buffer_state_check(const core_shared_buffer_state *st, const char **why)
{
    if (st->num_bytes == 0) {
        *why = "shared buffer of 0 bytes";
        return -1;
    }
    if (st->num_bytes > CMOJO_MAX_SHARED_BUFFER_SIZE) {
        *why = "shared buffer larger than CMOJO_MAX_SHARED_BUFFER_SIZE";
        return -1;
    }
    if (st->access_mode != MOJO_PLATFORM_SHARED_MEMORY_REGION_ACCESS_MODE_READ_ONLY &&
        st->access_mode != MOJO_PLATFORM_SHARED_MEMORY_REGION_ACCESS_MODE_WRITABLE &&
        st->access_mode != MOJO_PLATFORM_SHARED_MEMORY_REGION_ACCESS_MODE_UNSAFE) {
        *why = "shared buffer with an unknown access mode";
        return -1;
    }
    if (st->guid.high == 0 && st->guid.low == 0) {
        *why = "shared buffer with a zero guid";
        return -1;
    }
    return 0;
}

int core_shared_buffer_state_parse(const uint8_t *state, size_t size, core_shared_buffer_state *out,
                                   const char **why)
{
    if (size != CORE_SHARED_BUFFER_STATE_SIZE) {
        *why = "shared buffer state of the wrong size";
        return -1;
    }
    if (wire_load_u32(state + 12) != 0) {
        *why = "shared buffer state with nonzero reserved bits";
        return -1;
    }
    core_shared_buffer_state st = {
        .num_bytes = wire_load_u64(state),
        .access_mode = wire_load_u32(state + 8),
        .guid = {.high = wire_load_u64(state + 16), .low = wire_load_u64(state + 24)},
    };
    if (core_shared_buffer_state_check(&st, why) != 0)
        return -1;
    *out = st;
    return 0;
}

void core_shared_buffer_state_write(uint8_t *out, const core_shared_buffer_state *st)
{
    wire_store_u64(out, st->num_bytes);
    wire_store_u32(out + 8, st->access_mode);
    wire_store_u32(out + 12, 0);
    wire_store_u64(out + 16, st->guid.high);
    wire_store_u64(out + 24, st->guid.low);
}

#define WRITE_SEALS (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)

int core_shared_buffer_check_fd(int fd, uint64_t num_bytes, uint32_t access_mode, const char **why)
{
    /*
     * Seals first: whoever else holds this memfd can still change its size
     * until SHRINK is set, so a size read before the seals were seen proves
     * nothing. Seals are never removed, so once seen they hold.
     */
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0) {
        *why = "shared buffer fd is not a sealable memfd";
        return -1;
    }
    if (!(seals & F_SEAL_SHRINK)) {
        *why = "shared buffer memfd not sealed against shrinking";
        return -1;
    }
    bool read_only = access_mode == MOJO_PLATFORM_SHARED_MEMORY_REGION_ACCESS_MODE_READ_ONLY;
    if (read_only && !(seals & WRITE_SEALS)) {
        *why = "read-only shared buffer memfd not sealed against writing";
        return -1;
    }
    if (!read_only && (seals & WRITE_SEALS)) {
        *why = "writable shared buffer memfd sealed against writing";
        return -1;
    }
    if (access_mode == MOJO_PLATFORM_SHARED_MEMORY_REGION_ACCESS_MODE_WRITABLE &&
        (seals & F_SEAL_SEAL)) {
        /* It could never become read-only, as a WRITABLE buffer must be able to. */
        *why = "writable shared buffer memfd sealed against further seals";
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        *why = "shared buffer fd is not a regular file";
        return -1;
    }
    if (st.st_size < 0 || (uint64_t)st.st_size < num_bytes) {
        *why = "shared buffer memfd smaller than its claimed size";
        return -1;
    }
    /* Huge pages would refuse our page-aligned mappings of a part. */
    long page = sysconf(_SC_PAGESIZE);
    if (page > 0 && st.st_blksize != page) {
        *why = "shared buffer memfd with pages of another size";
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0) {
        *why = "shared buffer fd is not open";
        return -1;
    }
    int acc = fl & O_ACCMODE;
    if (acc == O_WRONLY || (!read_only && acc != O_RDWR)) {
        *why = "shared buffer fd not opened for the access its mode needs";
        return -1;
    }
    return 0;
}

core_dispatcher *core_shared_buffer_deserialize(const uint8_t *state, size_t size, int *fds,
                                                const char **why)
{
    core_shared_buffer_state st;
    if (core_shared_buffer_state_parse(state, size, &st, why) != 0)
        return NULL;
    if (core_shared_buffer_check_fd(fds[0], st.num_bytes, st.access_mode, why) != 0)
        return NULL;
    core_dispatcher *d = core_shared_buffer_new(fds[0], &st);
    if (!d) {
        *why = "out of memory for a shared buffer";
        return NULL;
    }
    fds[0] = -1;
    return d;
}
