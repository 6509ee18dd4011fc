/*
 * cmojo public API: wrapping OS handles (file descriptors, shared memory
 * regions) as Mojo handles (types and options).
 *
 * A wrapped handle can be sent over a message pipe like any Mojo handle; on
 * Linux the file descriptor travels with SCM_RIGHTS.
 *
 * Shared memory regions: on Linux a region is one memfd in every access
 * mode (Mojo's Linux WRITABLE form of two fds is accepted when wrapping).
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
 * How a wrapped shared memory region may be mapped. It does not itself
 * restrict access: the caller must have arranged it already, and cmojo
 * checks that it has (MojoWrapPlatformSharedMemoryRegion).
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

/*
 * Wraps a shared memory region as a shared buffer handle, usable like one
 * from MojoCreateSharedBuffer. |platform_handles| holds one file descriptor
 * (MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR) for a memfd of at least
 * |num_bytes| bytes; for WRITABLE, two are also accepted (Mojo's Linux form:
 * a read-write and a read-only descriptor of the same memfd). |guid| is
 * nonzero. The memfd must already be what |access_mode| says:
 *  - every mode: sealed against shrinking (F_SEAL_SHRINK);
 *  - READ_ONLY: sealed against writing (F_SEAL_FUTURE_WRITE or F_SEAL_WRITE);
 *  - WRITABLE, UNSAFE: not sealed against writing, the descriptor opened
 *    read-write; WRITABLE also without F_SEAL_SEAL (it must be able to
 *    become read-only).
 * On OK the descriptors are cmojo's (a second one is closed at once); on
 * failure they stay the caller's. |options| may be NULL.
 * Returns OK; INVALID_ARGUMENT (NULL or malformed arguments, another handle
 * type or count, a closed descriptor, |num_bytes| 0 or above 1 GiB, a zero
 * |guid|, an unknown |access_mode|, a descriptor that is not such a memfd);
 * RESOURCE_EXHAUSTED.
 */
MOJO_SYSTEM_EXPORT MojoResult MojoWrapPlatformSharedMemoryRegion(
    const struct MojoPlatformHandle *platform_handles, uint32_t num_platform_handles,
    uint64_t num_bytes, const struct MojoSharedBufferGuid *guid,
    MojoPlatformSharedMemoryRegionAccessMode access_mode,
    const struct MojoWrapPlatformSharedMemoryRegionOptions *options, MojoHandle *mojo_handle);

/*
 * Unwraps: closes the shared buffer handle |mojo_handle| and gives back its
 * region: one descriptor in platform_handles[0] (now the caller's; in every
 * mode, WRITABLE included), *num_platform_handles set to 1, the size, guid
 * and current access mode. On input *num_platform_handles is the capacity of
 * |platform_handles| (at least 1) and platform_handles[0].struct_size is set.
 * Mappings of the buffer stay valid. Unlike Mojo, a call that fails leaves
 * the handle open.
 * Returns OK; INVALID_ARGUMENT (not a shared buffer handle, NULL or
 * malformed arguments, no room for a descriptor); BUSY (in transit).
 */
MOJO_SYSTEM_EXPORT MojoResult MojoUnwrapPlatformSharedMemoryRegion(
    MojoHandle mojo_handle, const struct MojoUnwrapPlatformSharedMemoryRegionOptions *options,
    struct MojoPlatformHandle *platform_handles, uint32_t *num_platform_handles,
    uint64_t *num_bytes, struct MojoSharedBufferGuid *guid,
    MojoPlatformSharedMemoryRegionAccessMode *access_mode);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MOJO_PUBLIC_C_SYSTEM_PLATFORM_HANDLE_H_ */
