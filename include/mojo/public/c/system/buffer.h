/*
 * cmojo public API: shared buffers (types and options).
 *
 * A shared buffer is memory that every holder of one of its handles can map,
 * in this process or any process the handle is sent to.
 *
 * On Linux a buffer is a memfd sealed against resizing. Its access mode is
 * Mojo's (see MojoDuplicateBufferHandle): a read-only duplicate seals the
 * memfd against writing (F_SEAL_FUTURE_WRITE), so read-only holds for every
 * process that has the buffer, whatever it does with its descriptor.
 *
 * Options: a |struct_size| too small to hold the flags is INVALID_ARGUMENT;
 * a flag this version does not know is UNIMPLEMENTED (Mojo's codes).
 *
 * Threads: every function may be called from any thread.
 */
#ifndef MOJO_PUBLIC_C_SYSTEM_BUFFER_H_
#define MOJO_PUBLIC_C_SYSTEM_BUFFER_H_

#include <stdint.h>

#include "mojo/public/c/system/macros.h"
#include "mojo/public/c/system/system_export.h"
#include "mojo/public/c/system/types.h"

/* MojoCreateSharedBuffer() flags and options. */
typedef uint32_t MojoCreateSharedBufferFlags;
#define MOJO_CREATE_SHARED_BUFFER_FLAG_NONE ((uint32_t)0)

struct MOJO_ALIGNAS(8) MojoCreateSharedBufferOptions {
    uint32_t struct_size; /* sizeof this structure as the caller knows it */
    MojoCreateSharedBufferFlags flags;
};
MOJO_STATIC_ASSERT(MOJO_ALIGNOF(int64_t) <= 8, "int64_t alignment must not exceed 8");
MOJO_STATIC_ASSERT(sizeof(struct MojoCreateSharedBufferOptions) == 8,
                   "MojoCreateSharedBufferOptions must be 8 bytes");

/* MojoGetBufferInfo() flags and options. */
typedef uint32_t MojoGetBufferInfoFlags;
#define MOJO_GET_BUFFER_INFO_FLAG_NONE ((uint32_t)0)

struct MOJO_ALIGNAS(8) MojoGetBufferInfoOptions {
    uint32_t struct_size;
    MojoGetBufferInfoFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoGetBufferInfoOptions) == 8,
                   "MojoGetBufferInfoOptions must be 8 bytes");

/* Filled in by MojoGetBufferInfo(); the caller sets |struct_size| first. */
struct MOJO_ALIGNAS(8) MojoSharedBufferInfo {
    uint32_t struct_size;

    /* Size of the whole buffer in bytes. */
    uint64_t size;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoSharedBufferInfo) == 16,
                   "MojoSharedBufferInfo must be 16 bytes");

/* MojoDuplicateBufferHandle() flags and options. */
typedef uint32_t MojoDuplicateBufferHandleFlags;
/*
 * A writable duplicate. Once a buffer has been duplicated writable, no handle
 * to it can later be duplicated read-only (a read-only promise could not be
 * kept).
 */
#define MOJO_DUPLICATE_BUFFER_HANDLE_FLAG_NONE ((uint32_t)0)
/*
 * A duplicate that can only be mapped read-only. Once this succeeds, every
 * later duplicate of the buffer must be read-only as well.
 */
#define MOJO_DUPLICATE_BUFFER_HANDLE_FLAG_READ_ONLY ((uint32_t)1 << 0)

/* Mojo gives this structure (and the next) no MOJO_ALIGNAS(8); neither do we. */
struct MojoDuplicateBufferHandleOptions {
    uint32_t struct_size;
    MojoDuplicateBufferHandleFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoDuplicateBufferHandleOptions) == 8,
                   "MojoDuplicateBufferHandleOptions must be 8 bytes");

/* MojoMapBuffer() flags and options. */
typedef uint32_t MojoMapBufferFlags;
#define MOJO_MAP_BUFFER_FLAG_NONE ((uint32_t)0)

struct MojoMapBufferOptions {
    uint32_t struct_size;
    MojoMapBufferFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoMapBufferOptions) == 8,
                   "MojoMapBufferOptions must be 8 bytes");

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Creates a shared buffer of |num_bytes| bytes (zero-filled), WRITABLE, and
 * puts a handle to it in |*shared_buffer_handle| (untouched on failure).
 * |options| may be NULL. Access the memory with MojoMapBuffer.
 * Returns OK; INVALID_ARGUMENT (|num_bytes| 0, NULL |shared_buffer_handle|,
 * malformed |options|); RESOURCE_EXHAUSTED (|num_bytes| above cmojo's limit
 * of 1 GiB, no memory, no descriptors, a full handle table); UNIMPLEMENTED
 * (an unknown flag).
 */
MOJO_SYSTEM_EXPORT MojoResult
MojoCreateSharedBuffer(uint64_t num_bytes, const struct MojoCreateSharedBufferOptions *options,
                       MojoHandle *shared_buffer_handle);

/*
 * Makes another handle to the buffer behind |buffer_handle| and puts it in
 * |*new_buffer_handle|; the buffer stays allocated while any handle or
 * mapping of it exists, in any process. The duplicate changes the buffer's
 * mode, for every handle to it in this process:
 *  - READ_ONLY: a WRITABLE buffer becomes READ_ONLY for good; from then on
 *    every handle to it maps read-only, here and wherever one is sent
 *    (mappings made before keep their access). Fails on an UNSAFE buffer.
 *  - no flags: a WRITABLE buffer becomes UNSAFE (several writable handles);
 *    fails on a READ_ONLY buffer.
 * Returns OK; INVALID_ARGUMENT (not a shared buffer handle, NULL
 * |new_buffer_handle|, malformed |options|); FAILED_PRECONDITION (the mode
 * forbids the duplicate, as above); BUSY (|buffer_handle| is attached to a
 * message); RESOURCE_EXHAUSTED; UNIMPLEMENTED (an unknown flag).
 */
MOJO_SYSTEM_EXPORT MojoResult MojoDuplicateBufferHandle(
    MojoHandle buffer_handle, const struct MojoDuplicateBufferHandleOptions *options,
    MojoHandle *new_buffer_handle);

/*
 * Maps |num_bytes| bytes of the buffer from |offset| (any offset: cmojo maps
 * the pages around the range) and puts the address of byte |offset| in
 * |*buffer| (untouched on failure). The memory is readable, and writable
 * unless the buffer is READ_ONLY. The mapping stays valid after the handle
 * is closed, until MojoUnmapBuffer(*buffer); a handle may be mapped any
 * number of times.
 * Returns OK; INVALID_ARGUMENT (not a shared buffer handle, |num_bytes| 0,
 * the range not inside the buffer, NULL |buffer|, malformed |options|);
 * BUSY (attached to a message); RESOURCE_EXHAUSTED (mmap failed, or too
 * many mappings); UNIMPLEMENTED (an unknown flag).
 */
MOJO_SYSTEM_EXPORT MojoResult MojoMapBuffer(MojoHandle buffer_handle, uint64_t offset,
                                            uint64_t num_bytes,
                                            const struct MojoMapBufferOptions *options,
                                            void **buffer);

/*
 * Unmaps the whole mapping that MojoMapBuffer returned as |buffer| (exactly
 * that address, not one inside it). Any thread may unmap any mapping, once.
 * Returns OK; INVALID_ARGUMENT (not an address MojoMapBuffer returned, or
 * unmapped already).
 */
MOJO_SYSTEM_EXPORT MojoResult MojoUnmapBuffer(void *buffer);

/*
 * Fills in |*info| (the caller sets info->struct_size first): the buffer's
 * size in bytes. Sets info->struct_size to the size cmojo knows.
 * Returns OK; INVALID_ARGUMENT (not a shared buffer handle, NULL or too
 * small |info|, malformed |options|); BUSY (attached to a message);
 * UNIMPLEMENTED (an unknown flag).
 */
MOJO_SYSTEM_EXPORT MojoResult MojoGetBufferInfo(MojoHandle buffer_handle,
                                                const struct MojoGetBufferInfoOptions *options,
                                                struct MojoSharedBufferInfo *info);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MOJO_PUBLIC_C_SYSTEM_BUFFER_H_ */
