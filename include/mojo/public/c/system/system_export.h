/*
 * cmojo public API: the MOJO_SYSTEM_EXPORT symbol-visibility marker.
 *
 * cmojo compiles everything with hidden visibility; only declarations carrying
 * MOJO_SYSTEM_EXPORT become part of the shared library's ABI. The library's own
 * build defines MOJO_SYSTEM_IMPLEMENTATION; users of the headers do not, and
 * for them the marker expands to nothing.
 */
#ifndef MOJO_PUBLIC_C_SYSTEM_SYSTEM_EXPORT_H_
#define MOJO_PUBLIC_C_SYSTEM_SYSTEM_EXPORT_H_

#if defined(MOJO_SYSTEM_IMPLEMENTATION) && (defined(__GNUC__) || defined(__clang__))
#define MOJO_SYSTEM_EXPORT __attribute__((visibility("default")))
#else
#define MOJO_SYSTEM_EXPORT
#endif

#endif /* MOJO_PUBLIC_C_SYSTEM_SYSTEM_EXPORT_H_ */
