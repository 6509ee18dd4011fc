/*
 * Wrapped platform handles (MojoWrapPlatformHandle): a dispatcher that owns
 * one file descriptor, closes it when closed, and can travel in messages
 * (in-process as the object itself, to another process as the fd).
 */
#ifndef CMOJO_CORE_PLATFORM_HANDLE_H_
#define CMOJO_CORE_PLATFORM_HANDLE_H_

#include <stddef.h>
#include <stdint.h>

#include "core/dispatcher.h"

/* A dispatcher owning fd (one reference, the caller's). NULL on ENOMEM (fd untouched). */
core_dispatcher *core_platform_handle_new(int fd);

/* The wire type's deserializer (core_wire_type): no state, one fd. */
core_dispatcher *core_platform_handle_deserialize(const uint8_t *state, size_t size, int *fds,
                                                  const char **why);

#endif /* CMOJO_CORE_PLATFORM_HANDLE_H_ */
