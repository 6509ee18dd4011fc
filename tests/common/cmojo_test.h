/*
 * Helpers shared by cmojo's cmocka tests (linked into every test binary).
 *
 * Including this header also includes cmocka.h with the headers it needs in
 * front of it, so a test file needs no other include to use cmocka.
 */
#ifndef CMOJO_TEST_H_
#define CMOJO_TEST_H_

/* cmocka.h relies on these being included first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "mojo/public/c/system/message_pipe.h"
#include "mojo/public/c/system/types.h"

/*
 * Number of file descriptors open in this process (entries of /proc/self/fd,
 * not counting the one used to read it), or a negative errno value if it
 * cannot be read.
 */
int cmojo_test_count_open_fds(void);

/*
 * cmocka per-test fixtures that fail a test which leaks file descriptors:
 *
 *   cmocka_unit_test_setup_teardown(test_x, cmojo_test_fd_setup,
 *                                   cmojo_test_fd_teardown)
 *
 * setup records the open-fd count; teardown fails (and prints the count) if
 * it differs after the test. Tests run one at a time, so one saved count is
 * enough. |state| is not used.
 */
int cmojo_test_fd_setup(void **state);
int cmojo_test_fd_teardown(void **state);

/*
 * Fixtures for tests of the C API: setup records the fd count and calls
 * MojoInitialize; teardown fails the test if a handle, message object or
 * port is left or an fd leaked, then calls MojoShutdown.
 */
int cmojo_core_setup(void **state);
int cmojo_core_teardown(void **state);

/* The environment variable `name` as a number (any base), or fallback if unset or not one. */
uint64_t cmojo_test_env_u64(const char *name, uint64_t fallback);

/* A new pipe (both ends valid and distinct) / a close that must succeed. */
void cmojo_test_make_pipe(MojoHandle *a, MojoHandle *b);
void cmojo_test_close_ok(MojoHandle handle);

/*
 * Messages (messages.c). These assert (cmocka): a new message; a committed
 * one holding bytes[0..num_bytes) and handles[0..num_handles); writing one
 * holding `text` (no NUL) and handles; reading one that must hold exactly
 * `text` and num_handles handles (stored in handles[]).
 */
MojoMessageHandle cmojo_test_new_message(void);
MojoMessageHandle cmojo_test_new_data_message(const void *bytes, uint32_t num_bytes,
                                              const MojoHandle *handles, uint32_t num_handles);
void cmojo_test_write_text(MojoHandle pipe, const char *text, const MojoHandle *handles,
                           uint32_t num_handles);
void cmojo_test_expect_text(MojoHandle pipe, const char *text, MojoHandle *handles,
                            uint32_t num_handles);

/*
 * Thread-safe and assert-free, for trap handlers and helper threads: write
 * one handle-less message of `size` bytes; read one of at most `capacity`
 * bytes into out (RESOURCE_EXHAUSTED if larger; its length to *size); the
 * same for exactly one uint32_t (DATA_LOSS if the message is not that).
 */
MojoResult cmojo_test_write_bytes(MojoHandle pipe, const void *data, uint32_t size);
MojoResult cmojo_test_write_u32(MojoHandle pipe, uint32_t value);
MojoResult cmojo_test_read_bytes(MojoHandle pipe, void *out, uint32_t capacity, uint32_t *size);
MojoResult cmojo_test_read_u32(MojoHandle pipe, uint32_t *value);

#endif /* CMOJO_TEST_H_ */
