#include <stdio.h>

#include "cmojo_test.h"
#include "core/core.h"
#include "mojo/public/c/system/functions.h"
#include "mojo/public/c/system/message_pipe.h"

int cmojo_core_setup(void **state)
{
    if (cmojo_test_fd_setup(state) != 0)
        return -1;
    MojoResult rv = MojoInitialize(NULL);
    if (rv != MOJO_RESULT_OK) {
        fprintf(stderr, "setup: MojoInitialize(NULL) = %u\n", (unsigned)rv);
        return -1;
    }
    return 0;
}

int cmojo_core_teardown(void **state)
{
    int failed = 0;
    size_t handles = core_debug_handle_count();
    size_t messages = core_debug_message_count();
    size_t ports = core_debug_port_count();

    if (handles != 0) {
        fprintf(stderr, "teardown: %zu handles still open\n", handles);
        failed = 1;
    }
    if (messages != 0) {
        fprintf(stderr, "teardown: %zu message objects still alive\n", messages);
        failed = 1;
    }
    if (ports != 0) {
        fprintf(stderr, "teardown: %zu ports left in the node\n", ports);
        failed = 1;
    }
    MojoResult rv = MojoShutdown(NULL);
    if (rv != MOJO_RESULT_OK) {
        fprintf(stderr, "teardown: MojoShutdown(NULL) = %u\n", (unsigned)rv);
        failed = 1;
    }
    if (cmojo_test_fd_teardown(state) != 0)
        failed = 1;
    return failed ? -1 : 0;
}

void cmojo_test_make_pipe(MojoHandle *a, MojoHandle *b)
{
    *a = *b = MOJO_HANDLE_INVALID;
    assert_int_equal(MojoCreateMessagePipe(NULL, a, b), MOJO_RESULT_OK);
    assert_true(*a != MOJO_HANDLE_INVALID);
    assert_true(*b != MOJO_HANDLE_INVALID);
    assert_true(*a != *b);
}

void cmojo_test_close_ok(MojoHandle h)
{
    assert_int_equal(MojoClose(h), MOJO_RESULT_OK);
}
