/*
 * cmojo public API: functions that belong to no particular kind of handle.
 *
 * Status: only MojoGetTimeTicksNow() is implemented so far. The rest of Mojo's
 * general functions (MojoInitialize, MojoShutdown, MojoClose,
 * MojoQueryHandleSignalsState) are declared here when cmojo implements them.
 */
#ifndef MOJO_PUBLIC_C_SYSTEM_FUNCTIONS_H_
#define MOJO_PUBLIC_C_SYSTEM_FUNCTIONS_H_

#include "mojo/public/c/system/system_export.h"
#include "mojo/public/c/system/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Returns a monotonic time in microseconds, measured from an unspecified
 * point in the past (on Linux, CLOCK_MONOTONIC: boot time, not counting
 * suspend). Values from one boot of one machine may be compared and
 * subtracted; successive calls never go backwards. The result is always
 * positive.
 *
 * Ownership: takes and returns plain values only.
 * Threads: any thread, at any time, including before MojoInitialize() and
 * from inside trap handlers. Never blocks.
 */
MOJO_SYSTEM_EXPORT MojoTimeTicks MojoGetTimeTicksNow(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MOJO_PUBLIC_C_SYSTEM_FUNCTIONS_H_ */
