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

/* A new pipe (both ends valid and distinct) / a close that must succeed. */
void cmojo_test_make_pipe(MojoHandle *a, MojoHandle *b);
void cmojo_test_close_ok(MojoHandle handle);

#endif /* CMOJO_TEST_H_ */
