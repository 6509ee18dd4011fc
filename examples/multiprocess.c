/*
 * cmojo's multi-process demo: a broker and two children that find each other
 * through pipes passed in messages, then exchange messages, a file
 * descriptor and a 4 MiB stream through a data pipe. Public headers and the
 * shared library only.
 *
 *   broker                      child A                   child B
 *   invites A and B, one pipe "boot" each (socketpair, inherited fd)
 *   makes a pipe (x, y),
 *   sends x to A, y to B  --->  receives x               receives y
 *                               writes "hello" + an fd -> (introduced by the broker)
 *                                                         reads it, reads the file
 *                               <- "thanks, read: ..."     through the fd, replies
 *                               makes a data pipe,
 *                               sends its consumer ---->  streams 4 MiB out of it
 *                               writes 4 MiB, closes      until the producer is gone
 *                               <- "got N bytes, sum S"   (A checks the sum)
 *   both report on "boot"; the broker reaps them and checks their exit status.
 *
 * Run: scripts/demo.sh (or build/plain/examples/multiprocess).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cmojo/wait.h"
#include "mojo/public/c/system/core.h"

#define DEADLINE_US (20 * 1000 * 1000) /* every wait gives up after 20 s */
#define STREAM_BYTES (4u << 20)        /* what A streams to B through a data pipe */

/* The byte at position i of A's stream, and a checksum both sides compute. */
static uint8_t stream_byte(uint32_t i)
{
    return (uint8_t)((i * 2654435761u) >> 24);
}

static uint64_t sum_step(uint64_t sum, uint8_t byte)
{
    return (sum ^ byte) * 1099511628211ull; /* FNV-1a */
}

static const char *g_who = "broker";

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: FAILED: ", g_who);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("[%-7s] ", g_who);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
}

/* Writes a text message carrying the given handles (which it then owns). */
static void send_text(MojoHandle pipe, const char *text, MojoHandle *handles, uint32_t n)
{
    static const struct MojoAppendMessageDataOptions commit = {
        sizeof(commit), MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE};
    MojoMessageHandle m;
    void *buf = NULL;
    uint32_t len = (uint32_t)strlen(text);
    if (MojoCreateMessage(NULL, &m) != MOJO_RESULT_OK ||
        MojoAppendMessageData(m, len, handles, n, &commit, &buf, NULL) != MOJO_RESULT_OK)
        die("building a message");
    memcpy(buf, text, len);
    MojoResult rv = MojoWriteMessage(pipe, m, NULL);
    if (rv != MOJO_RESULT_OK)
        die("MojoWriteMessage: %d", rv);
}

/* Waits for a message; returns its text and up to one handle. */
static void recv_text(MojoHandle pipe, char *text, size_t cap, MojoHandle *handle)
{
    struct MojoHandleSignalsState state;
    MojoResult rv =
        MojoWait(pipe, MOJO_HANDLE_SIGNAL_READABLE, MojoGetTimeTicksNow() + DEADLINE_US, &state);
    if (rv != MOJO_RESULT_OK)
        die("waiting for a message: %d", rv);
    MojoMessageHandle m;
    if (MojoReadMessage(pipe, NULL, &m) != MOJO_RESULT_OK)
        die("MojoReadMessage");
    void *buf;
    uint32_t len, n = 1;
    MojoHandle h = MOJO_HANDLE_INVALID;
    if (MojoGetMessageData(m, NULL, &buf, &len, &h, &n) != MOJO_RESULT_OK)
        die("MojoGetMessageData");
    if (len >= cap)
        len = (uint32_t)cap - 1;
    memcpy(text, buf, len);
    text[len] = 0;
    MojoDestroyMessage(m);
    if (handle)
        *handle = n ? h : MOJO_HANDLE_INVALID;
    else if (n)
        MojoClose(h);
}

static MojoHandle accept_boot_pipe(int fd)
{
    struct MojoPlatformHandle ph = {sizeof(ph), MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR,
                                    (uint64_t)fd};
    struct MojoInvitationTransportEndpoint ep = {sizeof(ep), MOJO_INVITATION_TRANSPORT_TYPE_CHANNEL,
                                                 1, &ph};
    MojoHandle inv, boot;
    if (MojoAcceptInvitation(&ep, NULL, &inv) != MOJO_RESULT_OK)
        die("MojoAcceptInvitation");
    if (MojoExtractMessagePipeFromInvitation(inv, "boot", 4, NULL, &boot) != MOJO_RESULT_OK)
        die("MojoExtractMessagePipeFromInvitation");
    MojoClose(inv);
    return boot;
}

/* Child A: gets one end of a pipe to B, sends B a greeting and a file. */
static int child_a(int fd)
{
    g_who = "child A";
    MojoHandle boot = accept_boot_pipe(fd);
    char text[256];
    MojoHandle to_b;
    recv_text(boot, text, sizeof(text), &to_b);
    say("got \"%s\" and a pipe end from the broker", text);

    /* A file only this process wrote; B will read it through the fd. */
    int file = memfd_create("cmojo-demo", MFD_CLOEXEC);
    const char *secret = "the contents of a file opened by child A";
    if (file < 0 || write(file, secret, strlen(secret)) != (ssize_t)strlen(secret))
        die("memfd");
    struct MojoPlatformHandle ph = {sizeof(ph), MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR,
                                    (uint64_t)file};
    MojoHandle wrapped;
    if (MojoWrapPlatformHandle(&ph, NULL, &wrapped) != MOJO_RESULT_OK)
        die("MojoWrapPlatformHandle");
    send_text(to_b, "hello B, here is a file", &wrapped, 1);
    say("sent \"hello B, here is a file\" and fd %d to B", file);

    recv_text(to_b, text, sizeof(text), NULL);
    say("B answered: \"%s\"", text);

    /* A data pipe: its consumer goes to B, and A fills it in place (two-phase writes). */
    MojoHandle producer, consumer;
    if (MojoCreateDataPipe(NULL, &producer, &consumer) != MOJO_RESULT_OK)
        die("MojoCreateDataPipe");
    send_text(to_b, "and here is a data pipe", &consumer, 1);
    uint64_t sum = 14695981039346656037ull;
    uint32_t sent = 0;
    while (sent < STREAM_BYTES) {
        void *span;
        uint32_t n = STREAM_BYTES - sent;
        MojoResult rv = MojoBeginWriteData(producer, NULL, &span, &n);
        if (rv == MOJO_RESULT_SHOULD_WAIT) {
            if (MojoWait(producer, MOJO_HANDLE_SIGNAL_WRITABLE, DEADLINE_US, NULL) !=
                MOJO_RESULT_OK)
                die("waiting for room in the data pipe");
            continue;
        }
        if (rv != MOJO_RESULT_OK)
            die("MojoBeginWriteData: %d", rv);
        if (n > STREAM_BYTES - sent)
            n = STREAM_BYTES - sent;
        for (uint32_t i = 0; i < n; i++) {
            uint8_t b = stream_byte(sent + i);
            ((uint8_t *)span)[i] = b;
            sum = sum_step(sum, b);
        }
        if (MojoEndWriteData(producer, n, NULL) != MOJO_RESULT_OK)
            die("MojoEndWriteData");
        sent += n;
    }
    MojoClose(producer);
    say("streamed %u bytes through a data pipe (sum %016llx)", sent, (unsigned long long)sum);
    recv_text(to_b, text, sizeof(text), NULL);
    char expect[128];
    snprintf(expect, sizeof(expect), "got %u bytes, sum %016llx", sent, (unsigned long long)sum);
    if (strcmp(text, expect) != 0)
        die("B's account of the stream differs: \"%s\"", text);
    say("B answered: \"%s\": every byte arrived", text);
    send_text(boot, "A: done", NULL, 0);
    MojoClose(to_b);
    MojoClose(boot);
    MojoShutdown(NULL);
    return 0;
}

/* Child B: gets the other end, reads A's greeting and the file, answers. */
static int child_b(int fd)
{
    g_who = "child B";
    MojoHandle boot = accept_boot_pipe(fd);
    char text[256];
    MojoHandle to_a;
    recv_text(boot, text, sizeof(text), &to_a);
    say("got \"%s\" and a pipe end from the broker", text);

    MojoHandle wrapped;
    recv_text(to_a, text, sizeof(text), &wrapped);
    if (wrapped == MOJO_HANDLE_INVALID)
        die("A's message carried no handle");
    struct MojoPlatformHandle ph = {sizeof(ph), 0, 0};
    if (MojoUnwrapPlatformHandle(wrapped, NULL, &ph) != MOJO_RESULT_OK)
        die("MojoUnwrapPlatformHandle");
    int file = (int)ph.value;
    char content[128] = {0};
    ssize_t got = pread(file, content, sizeof(content) - 1, 0);
    close(file);
    if (got <= 0)
        die("reading the file A sent");
    say("A says \"%s\"; its file holds \"%s\"", text, content);

    char reply[256];
    snprintf(reply, sizeof(reply), "thanks, read %zd bytes", got);
    send_text(to_a, reply, NULL, 0);

    /* A's data pipe: read until the producer is gone and everything it wrote is read. */
    MojoHandle consumer;
    recv_text(to_a, text, sizeof(text), &consumer);
    if (consumer == MOJO_HANDLE_INVALID)
        die("A's message carried no data pipe");
    say("A says \"%s\"", text);
    uint64_t sum = 14695981039346656037ull;
    uint32_t total = 0;
    for (;;) {
        uint8_t chunk[16384];
        uint32_t n = sizeof(chunk);
        MojoResult rv = MojoReadData(consumer, NULL, chunk, &n);
        if (rv == MOJO_RESULT_FAILED_PRECONDITION)
            break; /* the producer closed and nothing is left */
        if (rv == MOJO_RESULT_SHOULD_WAIT) {
            rv = MojoWait(consumer, MOJO_HANDLE_SIGNAL_READABLE, DEADLINE_US, NULL);
            if (rv != MOJO_RESULT_OK && rv != MOJO_RESULT_FAILED_PRECONDITION)
                die("waiting for data: %d", rv);
            continue;
        }
        if (rv != MOJO_RESULT_OK)
            die("MojoReadData: %d", rv);
        for (uint32_t i = 0; i < n; i++)
            sum = sum_step(sum, chunk[i]);
        total += n;
    }
    MojoClose(consumer);
    snprintf(reply, sizeof(reply), "got %u bytes, sum %016llx", total, (unsigned long long)sum);
    say("read the stream to its end: %s", reply);
    send_text(to_a, reply, NULL, 0);
    send_text(boot, "B: done", NULL, 0);
    MojoClose(to_a);
    MojoClose(boot);
    MojoShutdown(NULL);
    return 0;
}

/* Starts this program as a child with one end of a socketpair; invites it. */
static pid_t spawn_and_invite(const char *self, const char *role, MojoHandle *boot)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        die("socketpair");
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        int fd = fcntl(sv[1], F_DUPFD, 3); /* without CLOEXEC: survives exec */
        char arg[16];
        snprintf(arg, sizeof(arg), "%d", fd);
        execl(self, self, role, arg, (char *)NULL);
        _exit(127);
    }
    close(sv[1]);
    MojoHandle inv;
    if (MojoCreateInvitation(NULL, &inv) != MOJO_RESULT_OK ||
        MojoAttachMessagePipeToInvitation(inv, "boot", 4, NULL, boot) != MOJO_RESULT_OK)
        die("creating the invitation");
    struct MojoPlatformHandle ph = {sizeof(ph), MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR,
                                    (uint64_t)sv[0]};
    struct MojoInvitationTransportEndpoint ep = {sizeof(ep), MOJO_INVITATION_TRANSPORT_TYPE_CHANNEL,
                                                 1, &ph};
    struct MojoPlatformProcessHandle proc = {sizeof(proc), (uint64_t)pid};
    if (MojoSendInvitation(inv, &proc, &ep, NULL, 0, NULL) != MOJO_RESULT_OK)
        die("MojoSendInvitation");
    say("invited %s (pid %d)", role, (int)pid);
    return pid;
}

int main(int argc, char **argv)
{
    /* MojoShutdown (at the end of each role) then lets queued messages leave. */
    if (MojoInitialize(NULL) != MOJO_RESULT_OK)
        die("MojoInitialize");
    if (argc == 3 && strcmp(argv[1], "A") == 0)
        return child_a(atoi(argv[2]));
    if (argc == 3 && strcmp(argv[1], "B") == 0)
        return child_b(atoi(argv[2]));

    MojoHandle boot_a, boot_b, x, y;
    pid_t a = spawn_and_invite("/proc/self/exe", "A", &boot_a);
    pid_t b = spawn_and_invite("/proc/self/exe", "B", &boot_b);
    if (MojoCreateMessagePipe(NULL, &x, &y) != MOJO_RESULT_OK)
        die("MojoCreateMessagePipe");
    send_text(boot_a, "talk to B on this", &x, 1);
    send_text(boot_b, "talk to A on this", &y, 1);
    say("sent one end of a new pipe to each child");

    char text[64];
    recv_text(boot_a, text, sizeof(text), NULL);
    say("A reports \"%s\"", text);
    recv_text(boot_b, text, sizeof(text), NULL);
    say("B reports \"%s\"", text);

    int failures = 0;
    for (int i = 0; i < 2; i++) {
        int status;
        pid_t pid = i == 0 ? a : b;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "broker: child %c failed (status 0x%x)\n", 'A' + i, status);
            failures++;
        }
    }
    MojoClose(boot_a);
    MojoClose(boot_b);
    MojoShutdown(NULL);
    if (failures)
        return 1;
    say("both children exited cleanly: demo ok");
    return 0;
}
