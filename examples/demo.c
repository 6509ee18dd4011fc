/*
 * cmojo demo: what a program does with message pipes and traps, using only
 * the public headers and the installed library.
 *
 *   1. a pipe: write a message at one end, read it at the other;
 *   2. handles travel: a pipe end sent inside a message keeps working;
 *   3. traps: a handler runs when a pipe becomes readable;
 *   4. two threads ping-pong, each blocked in MojoWait (cmojo's blocking-wait
 *      extension) until the other's message arrives;
 *   5. a quota: QUOTA_EXCEEDED when too many messages wait unread;
 *   6. closing: the peer reads what was sent, then sees PEER_CLOSED, and
 *      the trap watching it gets its final CANCELLED event.
 *
 * Every step checks its results; the exit status is 0 only if all hold.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmojo/wait.h"
#include "mojo/public/c/system/core.h"

static int g_failures;

static void check(int ok, const char *what, ...)
{
    if (ok)
        return;
    va_list ap;
    va_start(ap, what);
    fprintf(stderr, "demo: FAILED: ");
    vfprintf(stderr, what, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    g_failures++;
}

/* Writes len bytes plus the given handles (which the message then owns). */
static MojoResult write_message(MojoHandle pipe, const void *bytes, uint32_t len,
                                const MojoHandle *handles, uint32_t num_handles)
{
    static const struct MojoAppendMessageDataOptions commit = {
        sizeof(commit), MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE};
    MojoMessageHandle m;
    void *buf;
    MojoResult rv = MojoCreateMessage(NULL, &m);
    if (rv != MOJO_RESULT_OK)
        return rv;
    rv = MojoAppendMessageData(m, len, handles, num_handles, &commit, &buf, NULL);
    if (rv != MOJO_RESULT_OK) {
        MojoDestroyMessage(m);
        return rv;
    }
    memcpy(buf, bytes, len);
    return MojoWriteMessage(pipe, m, NULL);
}

/* Reads one message into text (NUL-terminated) and up to one handle. */
static MojoResult read_message(MojoHandle pipe, char *text, size_t cap, MojoHandle *handle)
{
    MojoMessageHandle m;
    MojoResult rv = MojoReadMessage(pipe, NULL, &m);
    if (rv != MOJO_RESULT_OK)
        return rv;
    void *buf;
    uint32_t len, num_handles = handle ? 1 : 0;
    rv = MojoGetMessageData(m, NULL, &buf, &len, handle, &num_handles);
    if (rv == MOJO_RESULT_OK) {
        size_t n = len < cap - 1 ? len : cap - 1;
        memcpy(text, buf, n);
        text[n] = '\0';
        if (handle && num_handles == 0)
            *handle = MOJO_HANDLE_INVALID;
    }
    MojoDestroyMessage(m);
    return rv;
}

static void scene_pipe(void)
{
    printf("\n1. A message pipe\n");
    MojoHandle a, b;
    check(MojoCreateMessagePipe(NULL, &a, &b) == MOJO_RESULT_OK, "create pipe");
    check(write_message(a, "hello, pipe", 11, NULL, 0) == MOJO_RESULT_OK, "write");
    struct MojoHandleSignalsState st;
    MojoQueryHandleSignalsState(b, &st);
    printf("   wrote \"hello, pipe\" at end a; end b is now %sreadable\n",
           (st.satisfied_signals & MOJO_HANDLE_SIGNAL_READABLE) ? "" : "NOT ");
    char text[64];
    check(read_message(b, text, sizeof(text), NULL) == MOJO_RESULT_OK, "read");
    printf("   read at end b: \"%s\"\n", text);
    check(strcmp(text, "hello, pipe") == 0, "message bytes");
    MojoMessageHandle none;
    check(MojoReadMessage(b, NULL, &none) == MOJO_RESULT_SHOULD_WAIT, "empty read");
    printf("   reading again: MOJO_RESULT_SHOULD_WAIT (nothing queued)\n");
    MojoClose(a);
    MojoClose(b);
}

static void scene_handles_travel(void)
{
    printf("\n2. Handles travel inside messages\n");
    MojoHandle a, b, c, d;
    check(MojoCreateMessagePipe(NULL, &a, &b) == MOJO_RESULT_OK, "create pipe a-b");
    check(MojoCreateMessagePipe(NULL, &c, &d) == MOJO_RESULT_OK, "create pipe c-d");
    check(write_message(c, "sent before d moved", 19, NULL, 0) == MOJO_RESULT_OK, "write c");
    check(write_message(a, "here is d", 9, &d, 1) == MOJO_RESULT_OK, "send d");
    MojoClose(d);
    printf("   sent end d inside a message on a-b; d's old handle is gone (%s)\n",
           MojoClose(d) == MOJO_RESULT_INVALID_ARGUMENT ? "MojoClose says INVALID_ARGUMENT"
                                                        : "unexpectedly still open");
    char text[64];
    MojoHandle d2 = MOJO_HANDLE_INVALID;
    check(read_message(b, text, sizeof(text), &d2) == MOJO_RESULT_OK && d2, "receive d");
    printf("   end b received \"%s\" and a new handle for the same end\n", text);
    check(write_message(c, "sent after d moved", 18, NULL, 0) == MOJO_RESULT_OK, "write c");
    for (int i = 0; i < 2; i++) {
        check(read_message(d2, text, sizeof(text), NULL) == MOJO_RESULT_OK, "read d2");
        printf("   at its new home d reads: \"%s\"\n", text);
    }
    MojoClose(a);
    MojoClose(b);
    MojoClose(c);
    MojoClose(d2);
}

/* ---- 3: a trap whose handler reads whatever arrives and re-arms. */

static MojoHandle g_reader_pipe, g_reader_trap;
static int g_trap_reads;

static void reading_handler(const struct MojoTrapEvent *event)
{
    if (event->result == MOJO_RESULT_CANCELLED) {
        printf("   handler: CANCELLED (the trigger is gone; always its last event)\n");
        return;
    }
    char text[64];
    while (read_message(g_reader_pipe, text, sizeof(text), NULL) == MOJO_RESULT_OK) {
        printf("   handler%s: read \"%s\"\n",
               (event->flags & MOJO_TRAP_EVENT_FLAG_WITHIN_API_CALL) ? " (inside the writer's call)"
                                                                     : "",
               text);
        g_trap_reads++;
    }
    /* Disarmed by firing; arm again for the next message. */
    MojoArmTrap(g_reader_trap, NULL, NULL, NULL);
}

static void scene_trap(void)
{
    printf("\n3. A trap calls a handler when the pipe becomes readable\n");
    MojoHandle a;
    check(MojoCreateMessagePipe(NULL, &a, &g_reader_pipe) == MOJO_RESULT_OK, "create pipe");
    check(MojoCreateTrap(reading_handler, NULL, &g_reader_trap) == MOJO_RESULT_OK, "trap");
    check(MojoAddTrigger(g_reader_trap, g_reader_pipe, MOJO_HANDLE_SIGNAL_READABLE,
                         MOJO_TRIGGER_CONDITION_SIGNALS_SATISFIED, 1, NULL) == MOJO_RESULT_OK,
          "add trigger");
    check(MojoArmTrap(g_reader_trap, NULL, NULL, NULL) == MOJO_RESULT_OK, "arm");
    const char *words[] = {"one", "two", "three"};
    for (int i = 0; i < 3; i++) {
        printf("   writing \"%s\"\n", words[i]);
        check(write_message(a, words[i], (uint32_t)strlen(words[i]), NULL, 0) == MOJO_RESULT_OK,
              "write");
    }
    check(g_trap_reads == 3, "handler read 3 messages (read %d)", g_trap_reads);
    printf("   closing the trap:\n");
    MojoClose(g_reader_trap);
    MojoClose(a);
    MojoClose(g_reader_pipe);
}

/* ---- 4: ping-pong between two threads, each blocked in MojoWait. */

#define ROUND_TRIPS 20000

static int wait_and_read(MojoHandle pipe, char *text, size_t cap)
{
    return MojoWait(pipe, MOJO_HANDLE_SIGNAL_READABLE, MOJO_DEADLINE_INDEFINITE, NULL) ==
               MOJO_RESULT_OK &&
           read_message(pipe, text, cap, NULL) == MOJO_RESULT_OK;
}

static void *pong_thread(void *arg)
{
    MojoHandle pipe = *(MojoHandle *)arg;
    char text[16];
    for (int i = 0; i < ROUND_TRIPS; i++)
        if (!wait_and_read(pipe, text, sizeof(text)) ||
            write_message(pipe, "pong", 4, NULL, 0) != MOJO_RESULT_OK)
            return (void *)1;
    return NULL;
}

static void scene_ping_pong(void)
{
    printf("\n4. Two threads ping-pong, each blocked in MojoWait between messages\n");
    MojoHandle ping, pong;
    check(MojoCreateMessagePipe(NULL, &ping, &pong) == MOJO_RESULT_OK, "create pipe");
    pthread_t t;
    pthread_create(&t, NULL, pong_thread, &pong);
    MojoTimeTicks start = MojoGetTimeTicksNow();
    int ok = 0;
    for (int i = 0; i < ROUND_TRIPS; i++) {
        char text[16];
        if (write_message(ping, "ping", 4, NULL, 0) != MOJO_RESULT_OK ||
            !wait_and_read(ping, text, sizeof(text)) || strcmp(text, "pong") != 0)
            break;
        ok++;
    }
    MojoTimeTicks elapsed = MojoGetTimeTicksNow() - start;
    void *failed;
    pthread_join(t, &failed);
    check(ok == ROUND_TRIPS && !failed, "%d round trips", ok);
    printf("   %d round trips in %.1f ms: %.1f us each, two thread wake-ups per trip\n", ok,
           (double)elapsed / 1000.0, ok ? (double)elapsed / ok : 0.0);
    printf("   (a trap handler runs on the thread whose call changed the state, as in 3)\n");
    MojoClose(ping);
    MojoClose(pong);
}

static void scene_quota(void)
{
    printf("\n5. A quota raises QUOTA_EXCEEDED instead of refusing messages\n");
    MojoHandle a, b;
    check(MojoCreateMessagePipe(NULL, &a, &b) == MOJO_RESULT_OK, "create pipe");
    check(MojoSetQuota(b, MOJO_QUOTA_TYPE_RECEIVE_QUEUE_LENGTH, 2, NULL) == MOJO_RESULT_OK,
          "set quota");
    for (int i = 1; i <= 3; i++) {
        write_message(a, "x", 1, NULL, 0);
        struct MojoHandleSignalsState st;
        MojoQueryHandleSignalsState(b, &st);
        uint64_t limit, usage;
        MojoQueryQuota(b, MOJO_QUOTA_TYPE_RECEIVE_QUEUE_LENGTH, NULL, &limit, &usage);
        int exceeded = (st.satisfied_signals & MOJO_HANDLE_SIGNAL_QUOTA_EXCEEDED) != 0;
        printf("   %d queued (limit %llu): QUOTA_EXCEEDED %s\n", (int)usage,
               (unsigned long long)limit, exceeded ? "raised" : "clear");
        check(exceeded == (i > 2), "quota signal after %d messages", i);
    }
    MojoClose(a);
    MojoClose(b);
}

static void scene_close(void)
{
    printf("\n6. Closing one end\n");
    MojoHandle a, b, trap;
    check(MojoCreateMessagePipe(NULL, &a, &b) == MOJO_RESULT_OK, "create pipe");
    write_message(a, "last words", 10, NULL, 0);
    MojoClose(a);
    struct MojoHandleSignalsState st;
    MojoQueryHandleSignalsState(b, &st);
    printf("   a wrote \"last words\" and closed; b: readable %s, peer closed %s\n",
           (st.satisfied_signals & MOJO_HANDLE_SIGNAL_READABLE) ? "yes" : "no",
           (st.satisfied_signals & MOJO_HANDLE_SIGNAL_PEER_CLOSED) ? "yes" : "no");
    char text[64];
    check(read_message(b, text, sizeof(text), NULL) == MOJO_RESULT_OK, "read last words");
    printf("   b reads \"%s\"; reading again: %s\n", text,
           read_message(b, text, sizeof(text), NULL) == MOJO_RESULT_FAILED_PRECONDITION
               ? "MOJO_RESULT_FAILED_PRECONDITION (nothing more will come)"
               : "unexpected");
    check(MojoCreateTrap(reading_handler, NULL, &trap) == MOJO_RESULT_OK, "trap");
    g_reader_pipe = b;
    g_reader_trap = trap;
    MojoAddTrigger(trap, b, MOJO_HANDLE_SIGNAL_READABLE, MOJO_TRIGGER_CONDITION_SIGNALS_SATISFIED,
                   7, NULL);
    uint32_t n = 1;
    struct MojoTrapEvent why;
    check(MojoArmTrap(trap, NULL, &n, &why) == MOJO_RESULT_FAILED_PRECONDITION && n == 1 &&
              why.result == MOJO_RESULT_FAILED_PRECONDITION,
          "arming on a dead pipe");
    printf("   arming a trap for READABLE on b fails: its condition can never be met\n");
    printf("   closing b:\n");
    MojoClose(b);
    MojoClose(trap);
}

int main(void)
{
    if (MojoInitialize(NULL) != MOJO_RESULT_OK) {
        fprintf(stderr, "demo: MojoInitialize failed\n");
        return 1;
    }
    printf("cmojo demo: message pipes and traps in one process");
    scene_pipe();
    scene_handles_travel();
    scene_trap();
    scene_ping_pong();
    scene_quota();
    scene_close();
    check(MojoShutdown(NULL) == MOJO_RESULT_OK, "shutdown");
    printf("\n%s\n", g_failures ? "demo: some steps FAILED (see above)" : "demo: all steps ok");
    return g_failures ? 1 : 0;
}
