/*
 * Shared buffers (MojoCreateSharedBuffer and friends): memory behind a
 * handle that every holder, in this process or another, can map.
 *
 * Model. A region is the memory: one sealed memfd, its size, its 128-bit
 * guid and its access mode. Every handle is a dispatcher that owns its own
 * descriptor for the memfd (so sending one never needs a dup that could
 * fail) and a reference to a region object that all handles duplicated from
 * one another in this process share, so a mode change made through one
 * handle applies to all of them. A handle that arrives from elsewhere gets a
 * region object of its own.
 *
 * Modes (Mojo's): a new buffer is WRITABLE (one handle, mappable read-write).
 * A read-only duplicate turns it READ_ONLY for good: the memfd gets
 * F_SEAL_FUTURE_WRITE, after which nobody holding any descriptor to it, in
 * any process, can write it or map it writable (mappings made before keep
 * working). A writable duplicate turns it UNSAFE for good (any number of
 * writable handles), after which a read-only duplicate is impossible.
 *
 * Invariants every region holds, whether created here, wrapped or received:
 * the memfd is sealed against shrinking (a mapping can never fault with
 * SIGBUS), is at least `size` bytes, and READ_ONLY regions carry a write
 * seal. A WRITABLE region can still take the read-only seal (no F_SEAL_SEAL)
 * and no region that claims to be writable is sealed against writing.
 *
 * Threads: every function here may be called from any thread.
 */
#ifndef CMOJO_CORE_SHARED_BUFFER_H_
#define CMOJO_CORE_SHARED_BUFFER_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dispatcher.h"
#include "mojo/public/c/system/platform_handle.h"

/*
 * Wire form of a shared buffer in a message envelope: this state plus one fd
 * (the memfd). Little-endian, fixed layout:
 *   u64 num_bytes, u32 access_mode, u32 reserved (0), u64 guid_high,
 *   u64 guid_low.
 */
#define CORE_SHARED_BUFFER_STATE_SIZE 32u

typedef struct core_shared_buffer_state {
    uint64_t num_bytes;
    uint32_t access_mode; /* MOJO_PLATFORM_SHARED_MEMORY_REGION_ACCESS_MODE_* */
    struct MojoSharedBufferGuid guid;
} core_shared_buffer_state;

/*
 * Checks the fields of a state (wire or MojoWrapPlatformSharedMemoryRegion):
 * num_bytes in [1, CMOJO_MAX_SHARED_BUFFER_SIZE], a known mode, a nonzero
 * guid. 0, or -1 and *why says what was wrong.
 */
int core_shared_buffer_state_check(const core_shared_buffer_state *st, const char **why);

/*
 * Parses a state without trusting any of it: the exact size, zero reserved
 * bits, then core_shared_buffer_state_check. 0 and *out filled in, or -1 and
 * *why. Pure: no fds, no allocation.
 */
int core_shared_buffer_state_parse(const uint8_t *state, size_t size, core_shared_buffer_state *out,
                                   const char **why);

/* Writes the CORE_SHARED_BUFFER_STATE_SIZE bytes of a state. */
void core_shared_buffer_state_write(uint8_t *out, const core_shared_buffer_state *st);

/*
 * Checks that fd can back a region of num_bytes in access_mode (the
 * invariants above), in an order a sender that still holds the fd cannot
 * race: seals first (a memfd: F_GET_SEALS works; SHRINK set, so the size
 * can only grow from here on; the write seal as the mode needs), then the
 * size, then the descriptor's access mode. 0, or -1 and *why.
 */
int core_shared_buffer_check_fd(int fd, uint64_t num_bytes, uint32_t access_mode, const char **why);

/*
 * A dispatcher owning fd (already checked) for a new region object with st's
 * size, mode and guid; one reference, the caller's. NULL on ENOMEM (fd
 * untouched).
 */
core_dispatcher *core_shared_buffer_new(int fd, const core_shared_buffer_state *st);

/*
 * The wire type's deserializer (core_wire_type): parses and checks the state
 * and its one fd before anything is mapped; on success the fd belongs to the
 * new dispatcher (fds[0] set to -1).
 */
core_dispatcher *core_shared_buffer_deserialize(const uint8_t *state, size_t size, int *fds,
                                                const char **why);

/*
 * Maps [offset, offset + num_bytes) of the buffer d (a shared buffer
 * dispatcher) the way MojoMapBuffer does and records the mapping:
 * MOJO_RESULT_OK and *address, INVALID_ARGUMENT (range), RESOURCE_EXHAUSTED.
 * For tests and fuzzers that hold a dispatcher without a handle.
 */
MojoResult core_shared_buffer_map(core_dispatcher *d, uint64_t offset, uint64_t num_bytes,
                                  void **address);

/* Mappings made by MojoMapBuffer and not yet unmapped (tests, leak checks). */
size_t core_shared_buffer_debug_mapping_count(void);

#endif /* CMOJO_CORE_SHARED_BUFFER_H_ */
