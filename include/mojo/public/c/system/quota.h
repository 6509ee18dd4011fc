/*
 * cmojo public API: quotas on handles (types and options).
 *
 * A quota does not refuse anything; exceeding it raises
 * MOJO_HANDLE_SIGNAL_QUOTA_EXCEEDED on the handle, which a trap can watch.
 *
 * A quota is exceeded when the usage is strictly greater than the limit.
 * UNREAD_MESSAGE_COUNT is measured through read acknowledgements from the
 * peer, requested every (limit + 1) / 2 messages, so across processes its
 * usage is an upper bound that catches up as acknowledgements arrive.
 */
#ifndef MOJO_PUBLIC_C_SYSTEM_QUOTA_H_
#define MOJO_PUBLIC_C_SYSTEM_QUOTA_H_

#include <stdint.h>

#include "mojo/public/c/system/macros.h"
#include "mojo/public/c/system/system_export.h"
#include "mojo/public/c/system/types.h"

/* MojoSetQuota() flags and options. */
typedef uint32_t MojoSetQuotaFlags;
#define MOJO_SET_QUOTA_FLAG_NONE ((MojoSetQuotaFlags)0)

struct MOJO_ALIGNAS(8) MojoSetQuotaOptions {
    uint32_t struct_size; /* sizeof this structure as the caller knows it */
    MojoSetQuotaFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoSetQuotaOptions) == 8, "MojoSetQuotaOptions must be 8 bytes");

/* MojoQueryQuota() flags and options. */
typedef uint32_t MojoQueryQuotaFlags;
#define MOJO_QUERY_QUOTA_FLAG_NONE ((MojoQueryQuotaFlags)0)

struct MOJO_ALIGNAS(8) MojoQueryQuotaOptions {
    uint32_t struct_size;
    MojoQueryQuotaFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoQueryQuotaOptions) == 8,
                   "MojoQueryQuotaOptions must be 8 bytes");

/* The largest limit, and the default for every quota: effectively unlimited. */
#define MOJO_QUOTA_LIMIT_NONE ((uint64_t)0xffffffffffffffff)

/* Which resource a quota limits. All three apply to message pipe handles only. */
typedef uint32_t MojoQuotaType;

/* Number of unread messages queued at this endpoint. */
#define MOJO_QUOTA_TYPE_RECEIVE_QUEUE_LENGTH ((MojoQuotaType)0)

/* Total bytes of unread messages queued at this endpoint. */
#define MOJO_QUOTA_TYPE_RECEIVE_QUEUE_MEMORY_SIZE ((MojoQuotaType)1)

/* Number of messages this endpoint sent that its peer has not yet read. */
#define MOJO_QUOTA_TYPE_UNREAD_MESSAGE_COUNT ((MojoQuotaType)2)

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Sets the |type| quota of |handle| (a message pipe endpoint) to |limit|;
 * MOJO_QUOTA_LIMIT_NONE removes it. QUOTA_EXCEEDED is re-evaluated at once.
 *
 * Returns OK; INVALID_ARGUMENT (not a pipe handle, unknown |type|, malformed
 * |options|); BUSY (in transit).
 */
MOJO_SYSTEM_EXPORT MojoResult MojoSetQuota(MojoHandle handle, MojoQuotaType type, uint64_t limit,
                                           const struct MojoSetQuotaOptions *options);

/*
 * Writes the |type| quota's limit (MOJO_QUOTA_LIMIT_NONE if unset) to |*limit|
 * and its current usage to |*usage|; either pointer may be NULL.
 *
 * Returns OK; INVALID_ARGUMENT (not a pipe handle, unknown |type|, malformed
 * |options|); BUSY (in transit).
 */
MOJO_SYSTEM_EXPORT MojoResult MojoQueryQuota(MojoHandle handle, MojoQuotaType type,
                                             const struct MojoQueryQuotaOptions *options,
                                             uint64_t *limit, uint64_t *usage);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MOJO_PUBLIC_C_SYSTEM_QUOTA_H_ */
