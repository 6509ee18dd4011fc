/*
 * cmojo public API: data pipes (types and options).
 *
 * A data pipe moves an unframed byte stream one way, from a producer handle to
 * a consumer handle, in whole elements of a fixed size, through a bounded
 * buffer shared by both ends.
 *
 * The producer and consumer may each be sent to other processes, also while
 * data is in the pipe; nothing written is lost or duplicated on the way.
 * Each end trusts only counts its peer sends that add up (a multiple of the
 * element size, never more than the pipe can hold); an end whose peer sends
 * one that does not sees its peer closed, and so does the peer.
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

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Creates a data pipe. |options| may be NULL: one-byte elements and the
 * default capacity (64 KiB). Otherwise struct_size must cover the whole
 * structure; element_num_bytes must be nonzero; capacity_num_bytes must be
 * 0 (the default, rounded down to whole elements, at least one) or a
 * multiple of element_num_bytes.
 * On OK the two handles are set; on failure they are untouched.
 * Returns OK; INVALID_ARGUMENT (malformed options, element size 0, a
 * capacity that is not a whole number of elements, NULL handle pointers);
 * RESOURCE_EXHAUSTED (capacity above 256 MiB, out of memory, fds or
 * handles); UNIMPLEMENTED (an unknown flag).
 */
MOJO_SYSTEM_EXPORT MojoResult MojoCreateDataPipe(const struct MojoCreateDataPipeOptions *options,
                                                 MojoHandle *data_pipe_producer_handle,
                                                 MojoHandle *data_pipe_consumer_handle);

/*
 * Copies up to |*num_bytes| bytes (a multiple of the element size) from
 * |elements| into the pipe and sets |*num_bytes| to how many were written.
 * With MOJO_WRITE_DATA_FLAG_ALL_OR_NONE, all of them or none.
 * Returns OK (writing 0 bytes is OK and does nothing); INVALID_ARGUMENT (not
 * a producer handle, malformed options or flags, NULL |num_bytes|, NULL
 * |elements| with bytes to write, a partial element); FAILED_PRECONDITION
 * (the consumer is closed); OUT_OF_RANGE (ALL_OR_NONE and not enough room);
 * BUSY (a two-phase write is open, or the handle is in transit);
 * SHOULD_WAIT (the pipe is full).
 */
MOJO_SYSTEM_EXPORT MojoResult MojoWriteData(MojoHandle data_pipe_producer_handle,
                                            const void *elements, uint32_t *num_bytes,
                                            const struct MojoWriteDataOptions *options);

/*
 * Begins a two-phase write: |*buffer| points at |*buffer_num_bytes| bytes
 * of the ring the caller may fill (one contiguous span; the rest of the free
 * room follows after the wrap). |*buffer_num_bytes| is an input too: a hint
 * of how much the caller has, or with MOJO_BEGIN_WRITE_DATA_FLAG_ALL_OR_NONE
 * the least it needs. Until MojoEndWriteData the producer is not WRITABLE
 * and every other write gets BUSY.
 * Returns OK; INVALID_ARGUMENT (not a producer, malformed options, NULL
 * pointers); FAILED_PRECONDITION (the consumer is closed); OUT_OF_RANGE
 * (ALL_OR_NONE and the span is smaller than the hint); BUSY (a two-phase
 * write is open already); SHOULD_WAIT (no room).
 */
MOJO_SYSTEM_EXPORT MojoResult MojoBeginWriteData(MojoHandle data_pipe_producer_handle,
                                                 const struct MojoBeginWriteDataOptions *options,
                                                 void **buffer, uint32_t *buffer_num_bytes);

/*
 * Ends the two-phase write, committing the first |num_bytes_written| bytes
 * of the span (a multiple of the element size, at most the span). The
 * two-phase write ends even when this fails; then nothing is committed.
 * Returns OK; INVALID_ARGUMENT (not a producer, malformed options, too many
 * bytes, a partial element); FAILED_PRECONDITION (no two-phase write open).
 */
MOJO_SYSTEM_EXPORT MojoResult MojoEndWriteData(MojoHandle data_pipe_producer_handle,
                                               uint32_t num_bytes_written,
                                               const struct MojoEndWriteDataOptions *options);

/*
 * Reads from the pipe. Without flags: copies up to |*num_bytes| bytes (a
 * multiple of the element size) to |elements|, removes them, and sets
 * |*num_bytes| to how many. ALL_OR_NONE: exactly |*num_bytes| or nothing.
 * DISCARD: removes without copying (|elements| unused). PEEK: copies
 * without removing. QUERY: only sets |*num_bytes| to the bytes readable
 * (ALL_OR_NONE ignored). DISCARD, PEEK and QUERY exclude each other.
 * Every read clears NEW_DATA_READABLE.
 * Returns OK; INVALID_ARGUMENT (not a consumer, malformed options, an
 * unknown flag or a forbidden combination, NULL |num_bytes|, NULL
 * |elements| when copying, a partial element); FAILED_PRECONDITION (the
 * producer is closed and the data asked for will never come); OUT_OF_RANGE
 * (ALL_OR_NONE and not that much readable yet); BUSY (a two-phase read is
 * open, or the handle is in transit); SHOULD_WAIT (nothing readable yet).
 */
MOJO_SYSTEM_EXPORT MojoResult MojoReadData(MojoHandle data_pipe_consumer_handle,
                                           const struct MojoReadDataOptions *options,
                                           void *elements, uint32_t *num_bytes);

/*
 * Begins a two-phase read: |*buffer| points at |*buffer_num_bytes| readable
 * bytes (one contiguous span). Until MojoEndReadData the consumer is not
 * READABLE and every other read gets BUSY. The span is shared memory the
 * producer's process can also write: treat its contents as untrusted.
 * Returns OK; INVALID_ARGUMENT (not a consumer, malformed options, NULL
 * pointers); FAILED_PRECONDITION (empty and the producer is closed); BUSY
 * (a two-phase read is open already); SHOULD_WAIT (nothing readable yet).
 */
MOJO_SYSTEM_EXPORT MojoResult MojoBeginReadData(MojoHandle data_pipe_consumer_handle,
                                                const struct MojoBeginReadDataOptions *options,
                                                const void **buffer, uint32_t *buffer_num_bytes);

/*
 * Ends the two-phase read, removing the first |num_bytes_read| bytes of the
 * span (a multiple of the element size, at most the span). The two-phase
 * read ends even when this fails; then nothing is removed.
 * Returns OK; INVALID_ARGUMENT (not a consumer, malformed options, too many
 * bytes, a partial element); FAILED_PRECONDITION (no two-phase read open).
 */
MOJO_SYSTEM_EXPORT MojoResult MojoEndReadData(MojoHandle data_pipe_consumer_handle,
                                              uint32_t num_bytes_read,
                                              const struct MojoEndReadDataOptions *options);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MOJO_PUBLIC_C_SYSTEM_DATA_PIPE_H_ */
