/*
 * cmojo public API: the whole Mojo C system API in one include.
 *
 * Include this (or the individual headers) as
 *   #include "mojo/public/c/system/core.h"
 * with the install prefix's include/ directory on the include path
 * (`pkg-config --cflags cmojo`).
 */
#ifndef MOJO_PUBLIC_C_SYSTEM_CORE_H_
#define MOJO_PUBLIC_C_SYSTEM_CORE_H_

#include "mojo/public/c/system/buffer.h"
#include "mojo/public/c/system/data_pipe.h"
#include "mojo/public/c/system/functions.h"
#include "mojo/public/c/system/invitation.h"
#include "mojo/public/c/system/macros.h"
#include "mojo/public/c/system/message_pipe.h"
#include "mojo/public/c/system/platform_handle.h"
#include "mojo/public/c/system/quota.h"
#include "mojo/public/c/system/system_export.h"
#include "mojo/public/c/system/trap.h"
#include "mojo/public/c/system/types.h"

#endif /* MOJO_PUBLIC_C_SYSTEM_CORE_H_ */
