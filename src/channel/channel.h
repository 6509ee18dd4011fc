/*
 * The POSIX channel: frames (frame.h) over a connected Unix stream socket,
 * with file descriptors passed as SCM_RIGHTS.
 *
 * Receiving runs on the IO thread (platform/io.h): each wake-up reads a
 * bounded amount, cuts it into frames and hands each to the owner with its
 * fds. Received fds are close-on-exec (MSG_CMSG_CLOEXEC). MSG_CTRUNC, a frame
 * claiming more fds than arrived, fds with no frame, any malformed header,
 * EOF in the middle of a frame: every fd received and not yet handed over is
 * closed and the channel fails.
 *
 * Sending: channel_write goes straight to the socket from the calling thread
 * when nothing is queued; a partial write or EAGAIN queues the rest (with
 * its unsent fds) and the IO thread finishes it on EPOLLOUT -- no busy
 * waiting. One write lock keeps frames whole and in call order across
 * threads. EINTR is retried. A frame with more than CMOJO_MAX_FDS_PER_SENDMSG
 * fds is spread over several sendmsg calls, each with at least one byte of
 * the frame.
 *
 * Failure: EOF, a read error, or a protocol error fails the channel once.
 * A write error stops only the write side (queue dropped, later writes get
 * -EPIPE): what the peer sent before it went away is still read, and the
 * EOF that follows fails the channel. The owner's on_error then runs, once, on the IO thread; after
 * that no on_frame comes and writes return -EPIPE.
 *
 * Ownership: the channel owns the socket from channel_create on (also when
 * it fails) and closes it in channel_shutdown. fds given to channel_write
 * are the channel's on success and on failure alike: closed once sent (the
 * receiver has its own copies), or when the channel fails or shuts down.
 *
 * Lifetime: reference counted. The creator holds one reference; a started
 * channel's IO watch holds another, which keeps the channel alive through
 * each callback, even one that drops every other reference (a shutdown from
 * inside a callback lets go of it when that callback returns). channel_shutdown stops all
 * activity: when it returns no callback of this channel is running or will
 * run (called from inside one of its own callbacks, none runs after the
 * current one). Memory goes with the last channel_release.
 *
 * Threads: every function may be called from any thread.
 */
#ifndef CMOJO_CHANNEL_CHANNEL_H_
#define CMOJO_CHANNEL_CHANNEL_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h> /* struct msghdr, for the syscall hooks */
#include <sys/types.h>
#include <sys/uio.h>

#include "platform/io.h"

typedef struct channel channel;

typedef struct channel_delegate {
    void *ctx;
    /*
     * A complete, well-formed frame. payload is valid during the call only,
     * unless the callee keeps it: when `block` is not NULL, the payload lies
     * inside the block *block (platform/block.h; at an offset from its
     * 16-byte aligned start that is a multiple of 8), and the callee may
     * take that block by setting *block to NULL; it is then the callee's, to
     * plat_block_free once done with the payload. Large frames are offered
     * so (see channel.c).
     * The num_fds fds are the callee's (it must keep or close every one).
     * On the IO thread, no channel lock held; may call channel_shutdown.
     */
    void (*on_frame)(void *ctx, uint16_t type, const uint8_t *payload, size_t payload_size,
                     int *fds, size_t num_fds, void **block);
    /*
     * The channel failed (once). why is a static string ("peer closed the
     * connection", "frame claims more fds than arrived", ...); protocol is
     * nonzero when the peer broke the framing rules (as opposed to EOF or an
     * OS error). On the IO thread, no channel lock held.
     */
    void (*on_error)(void *ctx, int protocol, const char *why);
} channel_delegate;

/*
 * Makes a channel on connected socket `fd` (made non-blocking here). The
 * delegate is copied; nothing is read until channel_start. On failure the fd
 * is closed. 0 or a negative errno.
 */
int channel_create(int fd, plat_io *io, const channel_delegate *delegate, channel **out);

/* Starts receiving (registers with the IO thread). 0 or a negative errno. */
int channel_start(channel *c);

/*
 * Sends one frame whose payload is the concatenation of iov[0..iovcnt), with
 * num_fds fds (<= CMOJO_MAX_FDS_PER_FRAME). Takes the fds (see Ownership).
 * 0; -EMSGSIZE if the payload or the fd count is beyond the limits (fds
 * closed, channel unharmed); -EPIPE if the channel failed or was shut down;
 * -ENOMEM. Never blocks on the peer.
 */
int channel_write(channel *c, uint16_t type, const struct iovec *iov, int iovcnt, int *fds,
                  size_t num_fds);

/*
 * channel_write for a frame the caller laid out in one buffer, which then
 * leaves in one piece (see plat_sendmsg). frame points at
 * CHANNEL_WRITE_FRAME_ROOM bytes of room for the header, then the payload
 * (payload_size bytes), then CHANNEL_WRITE_FRAME_TAIL_ROOM bytes of room for
 * the padding; the channel fills in both. No fds. Results as channel_write;
 * the caller's buffer is not needed after the call.
 */
#define CHANNEL_WRITE_FRAME_ROOM 16u
#define CHANNEL_WRITE_FRAME_TAIL_ROOM 7u
int channel_write_frame(channel *c, uint16_t type, uint8_t *frame, size_t payload_size);

/*
 * Stops the channel for good: unregisters it, closes the socket, closes
 * queued fds, and drops queued bytes. Idempotent. on_error is not called for
 * a shutdown.
 */
void channel_shutdown(channel *c);

/*
 * True when nothing waits in the write queue (or the channel is down):
 * what MojoShutdown waits for, so that messages already written leave.
 */
bool channel_write_idle(channel *c);

void channel_acquire(channel *c);
void channel_release(channel *c); /* NULL is fine */

/* True on the IO loop that runs c's callbacks (its thread, or a guest of it). */
bool channel_on_its_loop(const channel *c);

/*
 * Test hooks: the syscalls the channel makes, replaceable so tests can force
 * EINTR, EAGAIN, short writes and failures. Not to be changed while a
 * channel is active on another thread.
 */
extern ssize_t (*channel_sys_sendmsg)(int fd, const struct msghdr *msg, int flags);
extern ssize_t (*channel_sys_recvmsg)(int fd, struct msghdr *msg, int flags);

#endif /* CMOJO_CHANNEL_CHANNEL_H_ */
