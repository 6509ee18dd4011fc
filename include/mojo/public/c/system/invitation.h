/*
 * cmojo public API: invitations, which connect a new process to this
 * process's IPC graph (types, options and callback signatures).
 *
 * An invitation carries named message pipe endpoints over an OS transport (on
 * Linux, one end of a Unix socket pair); the invited process extracts them by
 * name and from then on both processes talk through Mojo.
 *
 * The first process to send a (non-isolated) invitation becomes the broker
 * of its process graph: the processes it invites can then reach each other,
 * the broker introducing them on demand. An ISOLATED invitation connects just
 * two processes. A process that was itself invited may send only ISOLATED
 * invitations (FAILED_PRECONDITION otherwise).
 *
 * Transport: MOJO_INVITATION_TRANSPORT_TYPE_CHANNEL with exactly one
 * MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR, one end of a connected
 * SOCK_STREAM socketpair(AF_UNIX); the other end goes to the other process
 * (typically inherited across fork/exec, as a launcher does).
 */
#ifndef MOJO_PUBLIC_C_SYSTEM_INVITATION_H_
#define MOJO_PUBLIC_C_SYSTEM_INVITATION_H_

#include <stdint.h>

#include "mojo/public/c/system/macros.h"
#include "mojo/public/c/system/platform_handle.h"
#include "mojo/public/c/system/system_export.h"
#include "mojo/public/c/system/types.h"

/* Flags in MojoProcessErrorDetails. */
typedef uint32_t MojoProcessErrorFlags;

#define MOJO_PROCESS_ERROR_FLAG_NONE ((MojoProcessErrorFlags)0)
/*
 * The connection to the process is gone: no more error reports will come for
 * it, and every pipe routed through it is (or is about to be) peer-closed.
 */
#define MOJO_PROCESS_ERROR_FLAG_DISCONNECTED ((MojoProcessErrorFlags)1)

/* Why the connection to another process failed; given to error handlers. */
struct MOJO_ALIGNAS(8) MojoProcessErrorDetails {
    /* sizeof this structure as cmojo knows it. */
    uint32_t struct_size;

    /* Length in bytes of |error_message|. */
    uint32_t error_message_length;

    /* Human-readable reason, for logs; not NUL-terminated necessarily. */
    MOJO_POINTER_FIELD(const char *, error_message);

    /* Bitwise OR of MOJO_PROCESS_ERROR_FLAG_* values. */
    MojoProcessErrorFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoProcessErrorDetails) == 24,
                   "MojoProcessErrorDetails must be 24 bytes");

/* Identifies the invited process; on Linux |value| is its pid. */
struct MOJO_ALIGNAS(8) MojoPlatformProcessHandle {
    uint32_t struct_size;
    uint64_t value;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoPlatformProcessHandle) == 16,
                   "MojoPlatformProcessHandle must be 16 bytes");

/* The kind of OS transport an invitation travels over. */
typedef uint32_t MojoInvitationTransportType;

/* A connected channel; on Linux one end of a Unix stream socket pair. */
#define MOJO_INVITATION_TRANSPORT_TYPE_CHANNEL ((MojoInvitationTransportType)0)
/*
 * A listening endpoint (a bound, listening Unix socket) that must first
 * accept a connection; the other side connects and uses a CHANNEL endpoint.
 */
#define MOJO_INVITATION_TRANSPORT_TYPE_CHANNEL_SERVER ((MojoInvitationTransportType)1)
/*
 * Like CHANNEL, but the invited side never blocks while accepting: it makes
 * its own synchronisation channel instead of waiting for one.
 */
#define MOJO_INVITATION_TRANSPORT_TYPE_CHANNEL_ASYNC ((MojoInvitationTransportType)2)

/* The transport an invitation is sent or accepted on. */
struct MOJO_ALIGNAS(8) MojoInvitationTransportEndpoint {
    /* sizeof this structure as the caller knows it. */
    uint32_t struct_size;

    /* One of MOJO_INVITATION_TRANSPORT_TYPE_*. */
    MojoInvitationTransportType type;

    /* Number of entries in |platform_handles|. */
    uint32_t num_platform_handles;

    /* The OS objects behind the endpoint; on Linux one socket descriptor. */
    MOJO_POINTER_FIELD(const struct MojoPlatformHandle *, platform_handles);
};
MOJO_STATIC_ASSERT(sizeof(struct MojoInvitationTransportEndpoint) == 24,
                   "MojoInvitationTransportEndpoint must be 24 bytes");

/* MojoCreateInvitation() flags and options. */
typedef uint32_t MojoCreateInvitationFlags;
#define MOJO_CREATE_INVITATION_FLAG_NONE ((MojoCreateInvitationFlags)0)

struct MOJO_ALIGNAS(8) MojoCreateInvitationOptions {
    uint32_t struct_size;
    MojoCreateInvitationFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoCreateInvitationOptions) == 8,
                   "MojoCreateInvitationOptions must be 8 bytes");

/* MojoAttachMessagePipeToInvitation() flags and options. */
typedef uint32_t MojoAttachMessagePipeToInvitationFlags;
#define MOJO_ATTACH_MESSAGE_PIPE_TO_INVITATION_FLAG_NONE ((MojoAttachMessagePipeToInvitationFlags)0)

struct MOJO_ALIGNAS(8) MojoAttachMessagePipeToInvitationOptions {
    uint32_t struct_size;
    MojoAttachMessagePipeToInvitationFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoAttachMessagePipeToInvitationOptions) == 8,
                   "MojoAttachMessagePipeToInvitationOptions must be 8 bytes");

/* MojoExtractMessagePipeFromInvitation() flags and options. */
typedef uint32_t MojoExtractMessagePipeFromInvitationFlags;
#define MOJO_EXTRACT_MESSAGE_PIPE_FROM_INVITATION_FLAG_NONE                                        \
    ((MojoExtractMessagePipeFromInvitationFlags)0)

struct MOJO_ALIGNAS(8) MojoExtractMessagePipeFromInvitationOptions {
    uint32_t struct_size;
    MojoExtractMessagePipeFromInvitationFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoExtractMessagePipeFromInvitationOptions) == 8,
                   "MojoExtractMessagePipeFromInvitationOptions must be 8 bytes");

/* MojoSendInvitation() flags and options. */
typedef uint32_t MojoSendInvitationFlags;
#define MOJO_SEND_INVITATION_FLAG_NONE ((MojoSendInvitationFlags)0)
/*
 * Connect only the sender and the receiver, not their process graphs. The
 * receiver must accept with MOJO_ACCEPT_INVITATION_FLAG_ISOLATED, and the
 * invitation carries exactly one pipe, named by four zero bytes.
 */
#define MOJO_SEND_INVITATION_FLAG_ISOLATED ((MojoSendInvitationFlags)1)
/* The receiving process is not trusted; limits what may be sent to it. */
#define MOJO_SEND_INVITATION_FLAG_UNTRUSTED_PROCESS ((MojoSendInvitationFlags)2)

struct MOJO_ALIGNAS(8) MojoSendInvitationOptions {
    /* sizeof this structure as the caller knows it. */
    uint32_t struct_size;

    /* Bitwise OR of MOJO_SEND_INVITATION_FLAG_* values. */
    MojoSendInvitationFlags flags;

    /*
     * With MOJO_SEND_INVITATION_FLAG_ISOLATED: an optional name for the
     * connection. A non-empty name allows at most one live isolated
     * connection under that name at a time.
     */
    MOJO_POINTER_FIELD(const char *, isolated_connection_name);
    uint32_t isolated_connection_name_length;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoSendInvitationOptions) == 24,
                   "MojoSendInvitationOptions must be 24 bytes");

/* MojoAcceptInvitation() flags and options. */
typedef uint32_t MojoAcceptInvitationFlags;
#define MOJO_ACCEPT_INVITATION_FLAG_NONE ((MojoAcceptInvitationFlags)0)
/* Accept an invitation sent with MOJO_SEND_INVITATION_FLAG_ISOLATED. */
#define MOJO_ACCEPT_INVITATION_FLAG_ISOLATED ((MojoAcceptInvitationFlags)1)
/*
 * Never close the transport endpoint (it closes when the process exits), so
 * the peer can treat a broken connection as "this process died".
 */
#define MOJO_ACCEPT_INVITATION_FLAG_LEAK_TRANSPORT_ENDPOINT ((MojoAcceptInvitationFlags)2)

struct MOJO_ALIGNAS(8) MojoAcceptInvitationOptions {
    uint32_t struct_size;
    MojoAcceptInvitationFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoAcceptInvitationOptions) == 8,
                   "MojoAcceptInvitationOptions must be 8 bytes");

/* MojoSetDefaultProcessErrorHandler() flags and options. */
typedef uint32_t MojoSetDefaultProcessErrorHandlerFlags;
#define MOJO_SET_DEFAULT_PROCESS_ERROR_HANDLER_FLAG_NONE ((MojoSetDefaultProcessErrorHandlerFlags)0)

struct MOJO_ALIGNAS(8) MojoSetDefaultProcessErrorHandlerOptions {
    uint32_t struct_size;
    MojoSetDefaultProcessErrorHandlerFlags flags;
};
MOJO_STATIC_ASSERT(sizeof(struct MojoSetDefaultProcessErrorHandlerOptions) == 8,
                   "MojoSetDefaultProcessErrorHandlerOptions must be 8 bytes");

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Told when the connection to a process this process invited fails (e.g. it
 * sent a malformed message and was disconnected). |context| is the value given
 * to MojoSendInvitation(); |details| is valid only during the call. Runs with
 * no cmojo lock held, on any thread.
 */
typedef void (*MojoProcessErrorHandler)(uintptr_t context,
                                        const struct MojoProcessErrorDetails *details);

/*
 * Like MojoProcessErrorHandler, for processes this process did not invite;
 * installed with MojoSetDefaultProcessErrorHandler().
 */
typedef void (*MojoDefaultProcessErrorHandler)(const struct MojoProcessErrorDetails *details);

/*
 * Creates an invitation to which pipes can be attached before it is sent.
 * Returns OK; INVALID_ARGUMENT (NULL |invitation_handle|, malformed
 * |options|); RESOURCE_EXHAUSTED.
 */
MOJO_SYSTEM_EXPORT MojoResult MojoCreateInvitation(
    const struct MojoCreateInvitationOptions *options, MojoHandle *invitation_handle);

/*
 * Creates a pipe, attaches one end to the invitation under |name| (1 to 256
 * bytes, at most 64 attachments per invitation) and returns the other end in
 * |*message_pipe_handle|. Messages written to it before the invitation is
 * accepted wait in this process.
 * Returns OK; INVALID_ARGUMENT (not an invitation, NULL or oversized |name|,
 * NULL |message_pipe_handle|, malformed |options|); ALREADY_EXISTS (|name| is
 * attached already); RESOURCE_EXHAUSTED (too many attachments, or no memory);
 * FAILED_PRECONDITION (an accepted invitation).
 */
MOJO_SYSTEM_EXPORT MojoResult MojoAttachMessagePipeToInvitation(
    MojoHandle invitation_handle, const void *name, uint32_t name_num_bytes,
    const struct MojoAttachMessagePipeToInvitationOptions *options,
    MojoHandle *message_pipe_handle);

/*
 * Takes the pipe attached under |name| out of an invitation. On an accepted
 * invitation this succeeds at once: whether the inviter attached such a pipe
 * is learnt later, and if it did not, the pipe becomes peer-closed. On an
 * invitation created here (not sent), NOT_FOUND if no pipe has that name;
 * the pipe returned is then no longer sent with it.
 * Returns OK; INVALID_ARGUMENT (not an invitation, bad |name|, NULL
 * |message_pipe_handle|, malformed |options|); NOT_FOUND; RESOURCE_EXHAUSTED.
 */
MOJO_SYSTEM_EXPORT MojoResult MojoExtractMessagePipeFromInvitation(
    MojoHandle invitation_handle, const void *name, uint32_t name_num_bytes,
    const struct MojoExtractMessagePipeFromInvitationOptions *options,
    MojoHandle *message_pipe_handle);

/*
 * Sends the invitation over |transport_endpoint| (see the top of this file).
 * |process_handle| may be NULL. |error_handler| (may be NULL) is told, on any
 * thread with no cmojo lock held, when the invited process sends something
 * malformed, when a message from it is reported with MojoNotifyBadMessage
 * (by any process of the graph), and once, last, with
 * MOJO_PROCESS_ERROR_FLAG_DISCONNECTED when the connection is gone.
 * On OK the invitation handle is closed and the socket is cmojo's (the
 * caller's descriptor is closed); on any failure both stay the caller's.
 * Returns OK; INVALID_ARGUMENT (not an invitation created here, NULL or
 * malformed |transport_endpoint| or |options|, a descriptor that is not a
 * stream socket); FAILED_PRECONDITION (no pipe attached, or a non-isolated
 * invitation from a process that was itself invited); UNIMPLEMENTED (a
 * transport type other than CHANNEL); ABORTED (the channel could not be set
 * up); RESOURCE_EXHAUSTED.
 */
MOJO_SYSTEM_EXPORT MojoResult MojoSendInvitation(
    MojoHandle invitation_handle, const struct MojoPlatformProcessHandle *process_handle,
    const struct MojoInvitationTransportEndpoint *transport_endpoint,
    MojoProcessErrorHandler error_handler, uintptr_t error_handler_context,
    const struct MojoSendInvitationOptions *options);

/*
 * Accepts an invitation arriving on |transport_endpoint| and returns a handle
 * from which its pipes are extracted. Does not wait for the inviter: pipes
 * extracted now start working once its invitation arrives. Closing the handle
 * closes the pipes not extracted. On OK the socket is cmojo's (the caller's
 * descriptor is closed).
 * Returns OK; INVALID_ARGUMENT (NULL or malformed arguments, not a stream
 * socket); FAILED_PRECONDITION (a non-isolated invitation was accepted, or
 * one sent, already); UNIMPLEMENTED (transport type); ABORTED;
 * RESOURCE_EXHAUSTED.
 */
MOJO_SYSTEM_EXPORT MojoResult MojoAcceptInvitation(
    const struct MojoInvitationTransportEndpoint *transport_endpoint,
    const struct MojoAcceptInvitationOptions *options, MojoHandle *invitation_handle);

/*
 * Installs (or, with NULL, removes) the handler told about malformed input
 * on connections to processes this process did not invite (its inviter, or
 * a process the broker introduced). Returns OK; INVALID_ARGUMENT (malformed
 * |options|); ALREADY_EXISTS (a handler is installed and |handler| is not
 * NULL).
 */
MOJO_SYSTEM_EXPORT MojoResult
MojoSetDefaultProcessErrorHandler(MojoDefaultProcessErrorHandler handler,
                                  const struct MojoSetDefaultProcessErrorHandlerOptions *options);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MOJO_PUBLIC_C_SYSTEM_INVITATION_H_ */
