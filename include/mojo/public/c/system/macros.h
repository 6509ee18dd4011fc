/*
 * cmojo public API: portability macros used by the other Mojo C headers.
 *
 * Part of cmojo's implementation of the Mojo C system API. Only compile-time
 * helpers live here; nothing in this header has a run-time cost.
 */
#ifndef MOJO_PUBLIC_C_SYSTEM_MACROS_H_
#define MOJO_PUBLIC_C_SYSTEM_MACROS_H_

#include <stddef.h>
#include <stdint.h>

/*
 * MOJO_STATIC_ASSERT(expr, msg): fails the build when |expr| is false. Used to
 * pin the size of every structure that crosses the API so that an accidental
 * layout change is a compile error rather than an ABI break.
 */
#if defined(__cplusplus)
#define MOJO_STATIC_ASSERT(expr, msg) static_assert(expr, msg)
#else
#define MOJO_STATIC_ASSERT(expr, msg) _Static_assert(expr, msg)
#endif

/* MOJO_ALIGNOF(type): the alignment requirement of |type|, in bytes. */
#if defined(__cplusplus)
#define MOJO_ALIGNOF(type) alignof(type)
#else
#define MOJO_ALIGNOF(type) _Alignof(type)
#endif

/*
 * MOJO_ALIGNAS(n): placed between `struct` and the tag, raises the alignment of
 * the structure to |n| bytes (an integer literal). C11's _Alignas cannot be
 * applied to a structure declaration, hence the compiler attribute.
 */
#if defined(__cplusplus)
#define MOJO_ALIGNAS(alignment) alignas(alignment)
#elif defined(__GNUC__) || defined(__clang__)
#define MOJO_ALIGNAS(alignment) __attribute__((aligned(alignment)))
#else
#error "cmojo: MOJO_ALIGNAS() is not defined for this compiler"
#endif

/*
 * MOJO_POINTER_FIELD(type, name): declares a pointer member that occupies eight
 * bytes whatever the pointer width, so structures keep one layout on 32-bit and
 * 64-bit targets. On 32-bit targets an unnamed 32-bit bit-field pads the
 * member; on 64-bit targets the zero-width bit-field adds nothing.
 */
/* clang-format off */
#define MOJO_POINTER_FIELD(type, name) \
    type name;                         \
    uint32_t : (sizeof(void *) == 4 ? 32 : 0)
/* clang-format on */

#endif /* MOJO_PUBLIC_C_SYSTEM_MACROS_H_ */
