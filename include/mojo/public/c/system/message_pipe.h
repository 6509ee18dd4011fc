/*
 * cmojo public API: message pipes and message objects (types and options).
 *
 * A message pipe is a pair of endpoints; a message written to one is read, in
 * order and exactly once, from the other, wherever the endpoints have moved.
 * A message carries bytes plus attached handles, which move with it.
 *
 * Status: the types below are final (Mojo's names, values and layouts). The
 * functions (MojoCreateMessagePipe, MojoWriteMessage, MojoReadMessage, ...)
 * are declared here once cmojo implements them.
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

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MOJO_PUBLIC_C_SYSTEM_MESSAGE_PIPE_H_ */
