/*
 * System calls the IO paths make once per message, issued directly.
 *
 * glibc's sendmsg, recvmsg and epoll_wait are cancellation points: in a
 * process with threads each one switches the calling thread to
 * asynchronous cancellation around the call and back after it (atomic
 * updates of the thread's cancellation word, twice per call). cmojo needs
 * neither the cost nor the semantics: a thread cancelled inside a send
 * would leave the channel's write lock held for good. These make the same
 * calls without that wrapping, with the same results (-1 and errno on
 * failure).
 */
#ifndef CMOJO_PLATFORM_SYS_H_
#define CMOJO_PLATFORM_SYS_H_

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

static inline ssize_t plat_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    return (ssize_t)syscall(SYS_sendmsg, fd, msg, flags);
}

static inline ssize_t plat_recvmsg(int fd, struct msghdr *msg, int flags)
{
    return (ssize_t)syscall(SYS_recvmsg, fd, msg, flags);
}

/* epoll_wait with no signal mask change, as epoll_pwait with a NULL mask. */
static inline int plat_epoll_wait(int epfd, struct epoll_event *events, int max, int timeout_ms)
{
    return (int)syscall(SYS_epoll_pwait, epfd, events, max, timeout_ms, NULL, 0);
}

#endif /* CMOJO_PLATFORM_SYS_H_ */
