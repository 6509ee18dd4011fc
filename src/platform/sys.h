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

#include <errno.h>
#include <limits.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/*
 * sendmsg; issued as sendto when the message is one buffer with no control
 * data and no address, which for a connected socket has the same result
 * while the kernel copies in no msghdr and no iovec (measurably cheaper per
 * call).
 */
static inline ssize_t plat_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    if (msg->msg_iovlen == 1 && msg->msg_controllen == 0 && msg->msg_namelen == 0)
        return (ssize_t)syscall(SYS_sendto, fd, msg->msg_iov[0].iov_base, msg->msg_iov[0].iov_len,
                                flags, NULL, 0);
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

/*
 * epoll_wait for at most *rel (NULL: no limit), to the nanosecond where the
 * kernel has epoll_pwait2 (5.11), else rounded up to a millisecond.
 */
static inline int plat_epoll_wait_until(int epfd, struct epoll_event *events, int max,
                                        const struct timespec *rel)
{
    if (rel == NULL)
        return plat_epoll_wait(epfd, events, max, -1);
#ifdef SYS_epoll_pwait2
    int n = (int)syscall(SYS_epoll_pwait2, epfd, events, max, rel, NULL, 0);
    if (n >= 0 || errno != ENOSYS)
        return n;
#endif
    long long ms = (long long)rel->tv_sec * 1000 + (rel->tv_nsec + 999999) / 1000000;
    return plat_epoll_wait(epfd, events, max, ms > INT_MAX ? INT_MAX : (int)ms);
}

#endif /* CMOJO_PLATFORM_SYS_H_ */
