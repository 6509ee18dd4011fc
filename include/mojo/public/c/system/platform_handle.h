/*
 * cmojo public API: wrapping OS handles (file descriptors, shared memory
 * regions) as Mojo handles (types and options).
 *
 * A wrapped handle can be sent over a message pipe like any Mojo handle; on
 * Linux the file descriptor travels with SCM_RIGHTS.
 *
 * Status: MojoWrapPlatformHandle and MojoUnwrapPlatformHandle are
 * implemented; the shared memory region functions are declared once they are.
 */
#ifndef MOJO_PUBLIC_C_SYSTEM_PLATFORM_HANDLE_H_
#define MOJO_PUBLIC_C_SYSTEM_PLATFORM_HANDLE_H_

#include <stdint.h>

#include "mojo/public/c/system/macros.h"
#include "mojo/public/c/system/system_export.h"
#include "mojo/public/c/system/types.h"

/*
 * What kind of OS object MojoPlatformHandle.value holds. cmojo runs on Linux
 * and accepts FILE_DESCRIPTOR only; the other values exist so that the
 * numbering matches Mojo's on every platform.
 */
typedef uint32_t MojoPlatformHandleType;

/* No object; |value| is ignored. */
#define MOJO_PLATFORM_HANDLE_TYPE_INVALID ((MojoPlatformHandleType)0)
/* A POSIX file descriptor. */
#define MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR ((MojoPlatformHandleType)1)
/* A Mach send right (macOS); the older name for MACH_SEND_RIGHT. */
#define MOJO_PLATFORM_HANDLE_TYPE_MACH_PORT ((MojoPlatformHandleType)2)
/* A Windows HANDLE. */
#define MOJO_PLATFORM_HANDLE_TYPE_WINDOWS_HANDLE ((MojoPlatformHandleType)3)
/* A Fuchsia zx_handle_t. */
#define MOJO_PLATFORM_HANDLE_TYPE_FUCHSIA_HANDLE ((MojoPlatformHandleType)4)
/* A Mach send right (macOS). */
#define MOJO_PLATFORM_HANDLE_TYPE_MACH_SEND_RIGHT MOJO_PLATFORM_HANDLE_TYPE_MACH_PORT
/* A Mach receive right (macOS). */
#define MOJO_PLATFORM_HANDLE_TYPE_MACH_RECEIVE_RIGHT ((MojoPlatformHandleType)5)

/* An OS handle passed into or out of Mojo. */
struct MOJO_ALIGNAS(8) MojoPlatformHandle {
    /* sizeof this structure as the caller knows it. */
    uint32_t struct_size;

    /* One of MOJO_PLATFORM_HANDLE_TYPE_*. */
    MojoPlatformHandleType type;

    /* The OS handle itself, e.g. the file descriptor number. */
    uint64_t value;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoPlatformHandle) == 16, "MojoPlatformHandle must be 16 bytes");

/* MojoWrapPlatformHandle() flags and options. */
typedef uint32_t MojoWrapPlatformHandleFlags;
#define MOJO_WRAP_PLATFORM_HANDLE_FLAG_NONE ((MojoWrapPlatformHandleFlags)0)

struct MOJO_ALIGNAS(8) MojoWrapPlatformHandleOptions {
    uint32_t struct_size;
    MojoWrapPlatformHandleFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoWrapPlatformHandleOptions) == 8,
                   "MojoWrapPlatformHandleOptions must be 8 bytes");

/* MojoUnwrapPlatformHandle() flags and options. */
typedef uint32_t MojoUnwrapPlatformHandleFlags;
#define MOJO_UNWRAP_PLATFORM_HANDLE_FLAG_NONE ((MojoUnwrapPlatformHandleFlags)0)

struct MOJO_ALIGNAS(8) MojoUnwrapPlatformHandleOptions {
    uint32_t struct_size;
    MojoUnwrapPlatformHandleFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoUnwrapPlatformHandleOptions) == 8,
                   "MojoUnwrapPlatformHandleOptions must be 8 bytes");

/* A 128-bit identifier of the memory region behind a shared buffer. */
struct MOJO_ALIGNAS(8) MojoSharedBufferGuid {
    uint64_t high;
    uint64_t low;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoSharedBufferGuid) == 16,
                   "MojoSharedBufferGuid must be 16 bytes");

/*
 * How a wrapped shared memory region may be mapped. Informational only: it
 * tells Mojo what the caller has already arranged so that unwrapping gives
 * back the same mode; it does not itself restrict access.
 */
typedef uint32_t MojoPlatformSharedMemoryRegionAccessMode;

/* Mappable read-only through this handle (one writable mapping may exist). */
#define MOJO_PLATFORM_SHARED_MEMORY_REGION_ACCESS_MODE_READ_ONLY                                   \
    ((MojoPlatformSharedMemoryRegionAccessMode)0)
/* The only handle to the region, mappable read-write. */
#define MOJO_PLATFORM_SHARED_MEMORY_REGION_ACCESS_MODE_WRITABLE                                    \
    ((MojoPlatformSharedMemoryRegionAccessMode)1)
/* Any number of read-write handles may exist. */
#define MOJO_PLATFORM_SHARED_MEMORY_REGION_ACCESS_MODE_UNSAFE                                      \
    ((MojoPlatformSharedMemoryRegionAccessMode)2)

/* MojoWrapPlatformSharedMemoryRegion() flags and options. */
typedef uint32_t MojoWrapPlatformSharedMemoryRegionFlags;
#define MOJO_WRAP_PLATFORM_SHARED_BUFFER_HANDLE_FLAG_NONE                                          \
    ((MojoWrapPlatformSharedMemoryRegionFlags)0)

struct MOJO_ALIGNAS(8) MojoWrapPlatformSharedMemoryRegionOptions {
    uint32_t struct_size;
    MojoWrapPlatformSharedMemoryRegionFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoWrapPlatformSharedMemoryRegionOptions) == 8,
                   "MojoWrapPlatformSharedMemoryRegionOptions must be 8 bytes");

/* MojoUnwrapPlatformSharedMemoryRegion() flags and options. */
typedef uint32_t MojoUnwrapPlatformSharedMemoryRegionFlags;
#define MOJO_UNWRAP_PLATFORM_SHARED_BUFFER_HANDLE_FLAG_NONE                                        \
    ((MojoUnwrapPlatformSharedMemoryRegionFlags)0)

struct MOJO_ALIGNAS(8) MojoUnwrapPlatformSharedMemoryRegionOptions {
    uint32_t struct_size;
    MojoUnwrapPlatformSharedMemoryRegionFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoUnwrapPlatformSharedMemoryRegionOptions) == 8,
                   "MojoUnwrapPlatformSharedMemoryRegionOptions must be 8 bytes");

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Wraps a file descriptor (MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR, value
 * >= 0) as a Mojo handle. On OK the descriptor is cmojo's: it is closed with
 * the handle, or travels when the handle is sent in a message (the receiver
 * gets an equivalent descriptor, close-on-exec); on failure it stays the
 * caller's.
 * Returns OK; INVALID_ARGUMENT (NULL or malformed |platform_handle| or
 * |options|, another handle type, a negative or closed descriptor, NULL
 * |mojo_handle|); RESOURCE_EXHAUSTED.
 */
MOJO_SYSTEM_EXPORT MojoResult MojoWrapPlatformHandle(
    const struct MojoPlatformHandle *platform_handle,
    const struct MojoWrapPlatformHandleOptions *options, MojoHandle *mojo_handle);

/*
 * Unwraps: closes |mojo_handle| and gives its descriptor back in
 * |*platform_handle| (whose struct_size the caller sets), now the caller's.
 * Returns OK; INVALID_ARGUMENT (not a wrapped platform handle, NULL or
 * malformed |platform_handle| or |options|); BUSY (in transit).
 */
MOJO_SYSTEM_EXPORT MojoResult MojoUnwrapPlatformHandle(
    MojoHandle mojo_handle, const struct MojoUnwrapPlatformHandleOptions *options,
    struct MojoPlatformHandle *platform_handle);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MOJO_PUBLIC_C_SYSTEM_PLATFORM_HANDLE_H_ */
