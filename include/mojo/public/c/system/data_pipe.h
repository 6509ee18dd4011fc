/*
 * cmojo public API: data pipes (types and options).
 *
 * A data pipe moves an unframed byte stream one way, from a producer handle to
 * a consumer handle, in whole elements of a fixed size, through a bounded
 * buffer shared by both ends.
 *
 * Status: the types below are final (Mojo's names, values and layouts). The
 * functions (MojoCreateDataPipe, MojoWriteData, MojoReadData and the two-phase
 * Begin/End variants) are declared here once implemented.
 */
#ifndef MOJO_PUBLIC_C_SYSTEM_DATA_PIPE_H_
#define MOJO_PUBLIC_C_SYSTEM_DATA_PIPE_H_

#include <stdint.h>

#include "mojo/public/c/system/macros.h"
#include "mojo/public/c/system/system_export.h"
#include "mojo/public/c/system/types.h"

/* MojoCreateDataPipe() flags and options. */
typedef uint32_t MojoCreateDataPipeFlags;
#define MOJO_CREATE_DATA_PIPE_FLAG_NONE ((uint32_t)0)

struct MOJO_ALIGNAS(8) MojoCreateDataPipeOptions {
    /* sizeof this structure as the caller knows it. */
    uint32_t struct_size;

    /* Bitwise OR of MOJO_CREATE_DATA_PIPE_FLAG_* values. */
    MojoCreateDataPipeFlags flags;

    /* Size of one element; every read, write and capacity is a multiple. */
    uint32_t element_num_bytes;

    /*
     * Bytes the pipe can hold (a multiple of |element_num_bytes|). Zero asks
     * for an implementation-chosen capacity of at least one element.
     */
    uint32_t capacity_num_bytes;
};
MOJO_STATIC_ASSERT(MOJO_ALIGNOF(int64_t) <= 8, "int64_t alignment must not exceed 8");
MOJO_STATIC_ASSERT(sizeof(struct MojoCreateDataPipeOptions) == 16,
                   "MojoCreateDataPipeOptions must be 16 bytes");

/* MojoWriteData() flags and options. */
typedef uint32_t MojoWriteDataFlags;
#define MOJO_WRITE_DATA_FLAG_NONE ((uint32_t)0)
/* Write everything or nothing: fail rather than do a partial write. */
#define MOJO_WRITE_DATA_FLAG_ALL_OR_NONE ((uint32_t)1 << 0)

struct MOJO_ALIGNAS(8) MojoWriteDataOptions {
    uint32_t struct_size;
    MojoWriteDataFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoWriteDataOptions) == 8,
                   "MojoWriteDataOptions must be 8 bytes");

/* MojoBeginWriteData() flags and options. */
typedef uint32_t MojoBeginWriteDataFlags;
#define MOJO_BEGIN_WRITE_DATA_FLAG_NONE ((uint32_t)0)
/* The caller's size hint is a minimum: fail if that much space is not free. */
#define MOJO_BEGIN_WRITE_DATA_FLAG_ALL_OR_NONE ((uint32_t)1 << 0)

struct MOJO_ALIGNAS(8) MojoBeginWriteDataOptions {
    uint32_t struct_size;
    MojoBeginWriteDataFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoBeginWriteDataOptions) == 8,
                   "MojoBeginWriteDataOptions must be 8 bytes");

/* MojoEndWriteData() flags and options. */
typedef uint32_t MojoEndWriteDataFlags;
#define MOJO_END_WRITE_DATA_FLAG_NONE ((uint32_t)0)

struct MOJO_ALIGNAS(8) MojoEndWriteDataOptions {
    uint32_t struct_size;
    MojoEndWriteDataFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoEndWriteDataOptions) == 8,
                   "MojoEndWriteDataOptions must be 8 bytes");

/* MojoReadData() flags and options. */
typedef uint32_t MojoReadDataFlags;
#define MOJO_READ_DATA_FLAG_NONE ((uint32_t)0)
/* Read (or discard) exactly the requested amount or nothing. */
#define MOJO_READ_DATA_FLAG_ALL_OR_NONE ((uint32_t)1 << 0)
/* Drop the data instead of copying it out. Not with PEEK or QUERY. */
#define MOJO_READ_DATA_FLAG_DISCARD ((uint32_t)1 << 1)
/* Only report how many bytes are readable. Not with DISCARD or PEEK. */
#define MOJO_READ_DATA_FLAG_QUERY ((uint32_t)1 << 2)
/* Copy the data out but leave it in the pipe. Not with DISCARD or QUERY. */
#define MOJO_READ_DATA_FLAG_PEEK ((uint32_t)1 << 3)

struct MOJO_ALIGNAS(8) MojoReadDataOptions {
    uint32_t struct_size;
    MojoReadDataFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoReadDataOptions) == 8, "MojoReadDataOptions must be 8 bytes");

/* MojoBeginReadData() flags and options. */
typedef uint32_t MojoBeginReadDataFlags;
#define MOJO_BEGIN_READ_DATA_FLAG_NONE ((uint32_t)0)

struct MOJO_ALIGNAS(8) MojoBeginReadDataOptions {
    uint32_t struct_size;
    MojoBeginReadDataFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoBeginReadDataOptions) == 8,
                   "MojoBeginReadDataOptions must be 8 bytes");

/* MojoEndReadData() flags and options. */
typedef uint32_t MojoEndReadDataFlags;
#define MOJO_END_READ_DATA_FLAG_NONE ((uint32_t)0)

struct MOJO_ALIGNAS(8) MojoEndReadDataOptions {
    uint32_t struct_size;
    MojoEndReadDataFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoEndReadDataOptions) == 8,
                   "MojoEndReadDataOptions must be 8 bytes");

#endif /* MOJO_PUBLIC_C_SYSTEM_DATA_PIPE_H_ */
