/*
 * cmojo public API: shared buffers (types and options).
 *
 * A shared buffer is memory that every holder of one of its handles can map,
 * in this process or any process the handle is sent to.
 *
 * Status: the types below are final (Mojo's names, values and layouts). The
 * functions (MojoCreateSharedBuffer, MojoDuplicateBufferHandle, MojoMapBuffer,
 * MojoUnmapBuffer, MojoGetBufferInfo) are declared here once implemented.
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

#endif /* MOJO_PUBLIC_C_SYSTEM_BUFFER_H_ */
