/*
 * cmojo public API: message pipes and message objects (types and options).
 *
 * A message pipe is a pair of endpoints; a message written to one is read, in
 * order and exactly once, from the other, wherever the endpoints have moved.
 * A message carries bytes plus attached handles, which move with it.
 *
 * A message object (MojoMessageHandle) is built with MojoCreateMessage plus
 * either MojoAppendMessageData (bytes and handles) or MojoSetMessageContext (a
 * user object with a serializer, sent by pointer while it stays in this
 * process). Message objects are not thread-safe: one thread at a time may use
 * a given message. A stale or made-up message handle is refused with
 * MOJO_RESULT_INVALID_ARGUMENT, never dereferenced.
 *
 * Handles attached to a message are "in transit": every operation on them
 * returns MOJO_RESULT_BUSY until the message is written (they are gone) or
 * the write fails (they are usable again). A message destroyed unwritten
 * closes the handles it owns.
 */
#ifndef MOJO_PUBLIC_C_SYSTEM_MESSAGE_PIPE_H_
#define MOJO_PUBLIC_C_SYSTEM_MESSAGE_PIPE_H_

#include <stdint.h>

#include "mojo/public/c/system/macros.h"
#include "mojo/public/c/system/system_export.h"
#include "mojo/public/c/system/types.h"

/*
 * MojoMessageHandle: names a message object. Distinct from MojoHandle: message
 * objects are not in the handle table and are not thread-safe; a message must
 * be used by one thread at a time.
 */
typedef uintptr_t MojoMessageHandle;
#define MOJO_MESSAGE_HANDLE_INVALID ((MojoMessageHandle)0)

MOJO_STATIC_ASSERT(MOJO_ALIGNOF(int64_t) <= 8, "int64_t alignment must not exceed 8");

/* MojoCreateMessagePipe() flags and options. */
typedef uint32_t MojoCreateMessagePipeFlags;
#define MOJO_CREATE_MESSAGE_PIPE_FLAG_NONE ((uint32_t)0)

struct MOJO_ALIGNAS(8) MojoCreateMessagePipeOptions {
    uint32_t struct_size; /* sizeof this structure as the caller knows it */
    MojoCreateMessagePipeFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoCreateMessagePipeOptions) == 8,
                   "MojoCreateMessagePipeOptions must be 8 bytes");

/* MojoWriteMessage() flags and options. */
typedef uint32_t MojoWriteMessageFlags;
#define MOJO_WRITE_MESSAGE_FLAG_NONE ((uint32_t)0)

struct MOJO_ALIGNAS(8) MojoWriteMessageOptions {
    uint32_t struct_size;
    MojoWriteMessageFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoWriteMessageOptions) == 8,
                   "MojoWriteMessageOptions must be 8 bytes");

/* MojoReadMessage() flags and options. */
typedef uint32_t MojoReadMessageFlags;
#define MOJO_READ_MESSAGE_FLAG_NONE ((uint32_t)0)

struct MOJO_ALIGNAS(8) MojoReadMessageOptions {
    uint32_t struct_size;
    MojoReadMessageFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoReadMessageOptions) == 8,
                   "MojoReadMessageOptions must be 8 bytes");

/* MojoFuseMessagePipes() flags and options. */
typedef uint32_t MojoFuseMessagePipesFlags;
#define MOJO_FUSE_MESSAGE_PIPES_FLAG_NONE ((uint32_t)0)

struct MOJO_ALIGNAS(8) MojoFuseMessagePipesOptions {
    uint32_t struct_size;
    MojoFuseMessagePipesFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoFuseMessagePipesOptions) == 8,
                   "MojoFuseMessagePipesOptions must be 8 bytes");

/* MojoCreateMessage() flags and options. */
typedef uint32_t MojoCreateMessageFlags;
#define MOJO_CREATE_MESSAGE_FLAG_NONE ((uint32_t)0)
/* Exempt this message from the global maximum message size. */
#define MOJO_CREATE_MESSAGE_FLAG_UNLIMITED_SIZE ((uint32_t)1)

struct MOJO_ALIGNAS(8) MojoCreateMessageOptions {
    uint32_t struct_size;
    MojoCreateMessageFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoCreateMessageOptions) == 8,
                   "MojoCreateMessageOptions must be 8 bytes");

/* MojoSerializeMessage() flags and options. */
typedef uint32_t MojoSerializeMessageFlags;
#define MOJO_SERIALIZE_MESSAGE_FLAG_NONE ((uint32_t)0)

struct MOJO_ALIGNAS(8) MojoSerializeMessageOptions {
    uint32_t struct_size;
    MojoSerializeMessageFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoSerializeMessageOptions) == 8,
                   "MojoSerializeMessageOptions must be 8 bytes");

/* MojoAppendMessageData() flags and options. */
typedef uint32_t MojoAppendMessageDataFlags;
#define MOJO_APPEND_MESSAGE_DATA_FLAG_NONE ((uint32_t)0)
/*
 * The payload size and handle count after this append are final; the message
 * may then be written to a pipe.
 */
#define MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE ((MojoAppendMessageDataFlags)1)

struct MOJO_ALIGNAS(8) MojoAppendMessageDataOptions {
    uint32_t struct_size;
    MojoAppendMessageDataFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoAppendMessageDataOptions) == 8,
                   "MojoAppendMessageDataOptions must be 8 bytes");

/* MojoGetMessageData() flags and options. */
typedef uint32_t MojoGetMessageDataFlags;
#define MOJO_GET_MESSAGE_DATA_FLAG_NONE ((uint32_t)0)
/* Return the payload only; attached handles stay owned by the message. */
#define MOJO_GET_MESSAGE_DATA_FLAG_IGNORE_HANDLES ((uint32_t)1)

struct MOJO_ALIGNAS(8) MojoGetMessageDataOptions {
    uint32_t struct_size;
    MojoGetMessageDataFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoGetMessageDataOptions) == 8,
                   "MojoGetMessageDataOptions must be 8 bytes");

/* MojoSetMessageContext() flags and options. */
typedef uint32_t MojoSetMessageContextFlags;
#define MOJO_SET_MESSAGE_CONTEXT_FLAG_NONE ((uint32_t)0)

struct MOJO_ALIGNAS(8) MojoSetMessageContextOptions {
    uint32_t struct_size;
    MojoSetMessageContextFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoSetMessageContextOptions) == 8,
                   "MojoSetMessageContextOptions must be 8 bytes");

/* MojoGetMessageContext() flags and options. */
typedef uint32_t MojoGetMessageContextFlags;
#define MOJO_GET_MESSAGE_CONTEXT_FLAG_NONE ((uint32_t)0)

struct MOJO_ALIGNAS(8) MojoGetMessageContextOptions {
    uint32_t struct_size;
    MojoGetMessageContextFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoGetMessageContextOptions) == 8,
                   "MojoGetMessageContextOptions must be 8 bytes");

/* MojoNotifyBadMessage() flags and options. */
typedef uint32_t MojoNotifyBadMessageFlags;
#define MOJO_NOTIFY_BAD_MESSAGE_FLAG_NONE ((uint32_t)0)

struct MOJO_ALIGNAS(8) MojoNotifyBadMessageOptions {
    uint32_t struct_size;
    MojoNotifyBadMessageFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoNotifyBadMessageOptions) == 8,
                   "MojoNotifyBadMessageOptions must be 8 bytes");

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Turns the user context attached to |message| (with MojoSetMessageContext)
 * into serialized bytes and handles, by calling MojoAppendMessageData() on
 * |message|. Called at most once per message, when it must leave the process.
 * The context is detached before the call and its destructor runs after it.
 */
typedef void (*MojoMessageContextSerializer)(MojoMessageHandle message, uintptr_t context);

/*
 * Releases a user context once the message no longer needs it: after
 * serialization, or when the message is destroyed unserialized.
 */
typedef void (*MojoMessageContextDestructor)(uintptr_t context);

/*
 * Creates a message pipe; its two endpoints go to |*message_pipe_handle0| and
 * |*message_pipe_handle1|.
 *
 * Returns OK; INVALID_ARGUMENT (malformed |options|, a NULL out pointer);
 * RESOURCE_EXHAUSTED (out of memory or handle table slots).
 */
MOJO_SYSTEM_EXPORT MojoResult
MojoCreateMessagePipe(const struct MojoCreateMessagePipeOptions *options,
                      MojoHandle *message_pipe_handle0, MojoHandle *message_pipe_handle1);

/*
 * Writes |message| to the pipe endpoint |message_pipe_handle|. The message is
 * consumed whatever the result (except when |message| itself is not a valid
 * message). On success its attached handles are gone from this process's
 * table; on failure they are usable again.
 *
 * Returns:
 *   MOJO_RESULT_OK                   queued for the peer.
 *   MOJO_RESULT_INVALID_ARGUMENT     not a pipe handle, not a message, the
 *                                    message carries this endpoint or its
 *                                    peer, or malformed |options|.
 *   MOJO_RESULT_FAILED_PRECONDITION  the peer is known to be closed (closure
 *                                    across processes is not synchronous, so
 *                                    OK does not promise delivery), or the
 *                                    message's size was never committed.
 *   MOJO_RESULT_NOT_FOUND            the message has neither data nor context.
 *   MOJO_RESULT_BUSY                 the endpoint is in transit in another
 *                                    message (in this one: INVALID_ARGUMENT).
 *   MOJO_RESULT_RESOURCE_EXHAUSTED   the peer is in another process and the
 *                                    payload is over CMOJO_MAX_MESSAGE_NUM_BYTES
 *                                    (MOJO_CREATE_MESSAGE_FLAG_UNLIMITED_SIZE
 *                                    lifts the limit within a process only).
 *
 * Such a message written while its peer was here cannot follow that peer to
 * another process later: this process then cuts its connection to that one
 * rather than send it. The pipes routed over that connection see PEER_CLOSED
 * in both processes (in the other one after what reached it before the cut;
 * when the broker introduced the two, once the broker has passed the cut on),
 * and the two processes treat each other as lost from then on.
 */
MOJO_SYSTEM_EXPORT MojoResult MojoWriteMessage(MojoHandle message_pipe_handle,
                                               MojoMessageHandle message,
                                               const struct MojoWriteMessageOptions *options);

/*
 * Takes the next message from |message_pipe_handle| into |*message|, which
 * the caller then owns (MojoDestroyMessage).
 *
 * Returns:
 *   MOJO_RESULT_OK                   a message was read.
 *   MOJO_RESULT_SHOULD_WAIT          none yet; wait for READABLE.
 *   MOJO_RESULT_FAILED_PRECONDITION  the peer closed and everything it sent
 *                                    has been read.
 *   MOJO_RESULT_INVALID_ARGUMENT     not a pipe handle, NULL |message|, or
 *                                    malformed |options|.
 *   MOJO_RESULT_BUSY                 the endpoint is in transit.
 */
MOJO_SYSTEM_EXPORT MojoResult MojoReadMessage(MojoHandle message_pipe_handle,
                                              const struct MojoReadMessageOptions *options,
                                              MojoMessageHandle *message);

/*
 * Given pipes A<->B and C<->D, fusing B and C leaves A<->D: messages unread at
 * B go on to D, those unread at C go on to A. Neither end may have been
 * written to. B and C are closed whatever the result (each of them that was
 * an open handle not in transit), as in Mojo.
 *
 * Returns OK; INVALID_ARGUMENT (either is not an open pipe handle, they are
 * the same handle, malformed |options|); FAILED_PRECONDITION (the ends could
 * not be fused, e.g. one was written to, or they are the two ends of one
 * pipe); BUSY (one is in transit).
 */
MOJO_SYSTEM_EXPORT MojoResult MojoFuseMessagePipes(
    MojoHandle handle0, MojoHandle handle1, const struct MojoFuseMessagePipesOptions *options);

/*
 * Creates an empty message object in |*message|. It can be written once it
 * has a context or committed data.
 *
 * Returns OK; INVALID_ARGUMENT (NULL |message|, malformed |options|);
 * RESOURCE_EXHAUSTED.
 */
MOJO_SYSTEM_EXPORT MojoResult MojoCreateMessage(const struct MojoCreateMessageOptions *options,
                                                MojoMessageHandle *message);

/*
 * Destroys a message created or read by this process and not written since.
 * Its context's destructor runs; handles it owns are closed.
 *
 * Returns OK; INVALID_ARGUMENT (not a live message).
 */
MOJO_SYSTEM_EXPORT MojoResult MojoDestroyMessage(MojoMessageHandle message);

/*
 * Serializes a message that carries a context, now: the serializer runs
 * (appending data and handles), then the destructor.
 *
 * Returns OK; FAILED_PRECONDITION (already serialized: it has data);
 * NOT_FOUND (no serializer, or neither context nor data); INVALID_ARGUMENT
 * (not a message, malformed |options|); BUSY / ABORTED (the serializer
 * attached a busy handle or left the message uncommitted: handles it attached
 * are closed and the message is empty).
 */
MOJO_SYSTEM_EXPORT MojoResult
MojoSerializeMessage(MojoMessageHandle message, const struct MojoSerializeMessageOptions *options);

/*
 * Preallocates |payload_buffer_size| bytes of payload storage for a new message
 * (no data or context yet). The capacity reached goes to |*buffer_size| if
 * that is not NULL.
 *
 * Returns OK; INVALID_ARGUMENT (not a message); FAILED_PRECONDITION (has a
 * context or data already); RESOURCE_EXHAUSTED (beyond the payload limit).
 */
MOJO_SYSTEM_EXPORT MojoResult MojoReserveMessageCapacity(MojoMessageHandle message,
                                                         uint32_t payload_buffer_size,
                                                         uint32_t *buffer_size);

/*
 * Grows the payload of |message| by |additional_payload_size| bytes and
 * attaches |num_handles| handles, which become in transit. On success
 * |*buffer| (if not NULL) points at the whole payload and |*buffer_size| (if
 * not NULL) gives its capacity; earlier bytes are kept but may have moved.
 * The new bytes are not initialised, as in Mojo: the caller writes all of
 * them, or whatever the memory held before goes with the message. Only
 * the payload's size is ever sent, never the rest of the capacity. The
 * buffer stays writable until the message is written or destroyed. With
 * MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE the size is final and the message
 * may be written; no more data or handles may be appended after that.
 *
 * Ownership of the handles passes to the message only on MOJO_RESULT_OK.
 *
 * Returns:
 *   MOJO_RESULT_OK                   success.
 *   MOJO_RESULT_INVALID_ARGUMENT     not a message; |handles| NULL with
 *                                    |num_handles| > 0; a handle that is not
 *                                    open; malformed |options|.
 *   MOJO_RESULT_RESOURCE_EXHAUSTED   the payload or handle count would exceed
 *                                    the limits (CMOJO_MAX_MESSAGE_* in the
 *                                    README).
 *   MOJO_RESULT_FAILED_PRECONDITION  the message has a context, or its size
 *                                    was already committed.
 *   MOJO_RESULT_BUSY                 a handle is already in transit (also
 *                                    when one handle is listed twice).
 */
MOJO_SYSTEM_EXPORT MojoResult MojoAppendMessageData(
    MojoMessageHandle message, uint32_t additional_payload_size, const MojoHandle *handles,
    uint32_t num_handles, const struct MojoAppendMessageDataOptions *options, void **buffer,
    uint32_t *buffer_size);

/*
 * Gives access to a serialized message's payload (|*buffer|, |*num_bytes|;
 * valid while the message lives) and moves its handles into the handle table,
 * writing them to |handles|. |*num_handles| is the capacity of |handles| on
 * input and the number of attached handles on output.
 *
 * With MOJO_GET_MESSAGE_DATA_FLAG_IGNORE_HANDLES, only the payload is
 * returned and |handles|/|num_handles| are ignored.
 *
 * Returns:
 *   MOJO_RESULT_OK                   success; handles now belong to the caller.
 *   MOJO_RESULT_RESOURCE_EXHAUSTED   |handles| is too small (or NULL) for the
 *                                    attached handles, or |buffer|/|num_bytes|
 *                                    is NULL for a non-empty payload. The
 *                                    needed counts are written to |*num_bytes|
 *                                    and |*num_handles| (where not NULL).
 *   MOJO_RESULT_NOT_FOUND            the handles were already taken.
 *   MOJO_RESULT_FAILED_PRECONDITION  not serialized (a context message; see
 *                                    MojoSerializeMessage) or not committed.
 *   MOJO_RESULT_INVALID_ARGUMENT     not a message; |*num_handles| > 0 with
 *                                    NULL |handles|; malformed |options|.
 */
MOJO_SYSTEM_EXPORT MojoResult MojoGetMessageData(MojoMessageHandle message,
                                                 const struct MojoGetMessageDataOptions *options,
                                                 void **buffer, uint32_t *num_bytes,
                                                 MojoHandle *handles, uint32_t *num_handles);

/*
 * Attaches user |context| to a message that has no data. While the message
 * stays in this process it travels by pointer and is never serialized; when
 * it must leave the process (or on MojoSerializeMessage) |serializer| runs
 * once. |destructor| runs when the context is released. A zero |context|
 * removes the context without running the destructor (then |serializer| and
 * |destructor| must be NULL).
 *
 * Returns OK; INVALID_ARGUMENT (not a message, zero context with non-NULL
 * callbacks, malformed |options|); ALREADY_EXISTS (a context is set);
 * FAILED_PRECONDITION (the message has data).
 */
MOJO_SYSTEM_EXPORT MojoResult MojoSetMessageContext(
    MojoMessageHandle message, uintptr_t context, MojoMessageContextSerializer serializer,
    MojoMessageContextDestructor destructor, const struct MojoSetMessageContextOptions *options);

/*
 * Writes the message's context (zero if none) to |*context|.
 *
 * Returns OK; INVALID_ARGUMENT (not a message, NULL |context|, malformed
 * |options|).
 */
MOJO_SYSTEM_EXPORT MojoResult
MojoGetMessageContext(MojoMessageHandle message, const struct MojoGetMessageContextOptions *options,
                      uintptr_t *context);

/*
 * Reports that |message| (read from a pipe) is malformed by the caller's
 * standards. For a message from another process, that process's error
 * handler in the inviting process is told, with |error| (|error_num_bytes|
 * bytes, need not be NUL-terminated). For a local message it is logged.
 * The message stays valid and must still be destroyed.
 *
 * Returns OK; INVALID_ARGUMENT (not a message, NULL |error| with a non-zero
 * length, malformed |options|).
 */
MOJO_SYSTEM_EXPORT MojoResult
MojoNotifyBadMessage(MojoMessageHandle message, const char *error, uint32_t error_num_bytes,
                     const struct MojoNotifyBadMessageOptions *options);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MOJO_PUBLIC_C_SYSTEM_MESSAGE_PIPE_H_ */
