/*
 * The core: process-wide state behind the Mojo C API (the ports node, the
 * handle table, the message table) and the helpers every entry point uses.
 *
 * Threads: everything here may be called from any thread. core_get() creates
 * the state on first use (MojoInitialize is optional); MojoShutdown destroys
 * it and no other API call may run concurrently with that.
 */
#ifndef CMOJO_CORE_CORE_H_
#define CMOJO_CORE_CORE_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dispatcher.h"
#include "mojo/public/c/system/types.h"

typedef struct core_state core_state;
typedef struct ports_node ports_node;

/* The process state, created on first use. NULL only when out of memory. */
core_state *core_get(void);

/* The process's ports node (core_get() must have succeeded). */
ports_node *core_node(core_state *core);

/* The node controller that owns it (channels, invitations). */
typedef struct node_controller node_controller;
node_controller *core_node_controller(core_state *core);

/*
 * Handle table access for the entry points. core_resolve creates the core if
 * needed and looks the handle up with a reference the caller must drop
 * (core_dispatcher_release): INVALID_ARGUMENT if it is not open or, when type
 * is not 0, of another kind; BUSY while it is in transit. core_add_dispatcher
 * takes over the caller's reference on success only.
 */
typedef struct core_table core_table;
core_table *core_handles(core_state *core);
core_table *core_messages(core_state *core);
MojoResult core_resolve(MojoHandle handle, core_dispatcher_type type, core_dispatcher **out);
MojoResult core_add_dispatcher(core_state *core, core_dispatcher *d, MojoHandle *out);

/*
 * The cheaper lookup for the span of one call (handle_table.h, "pins"):
 * *out is valid, without a reference of its own, until core_unpin with the
 * same core and handle, which must follow exactly once; anything kept beyond
 * that takes a reference first. core is core_get()'s (NULL: nothing is open).
 * Results as core_resolve's.
 */
MojoResult core_pin(core_state *core, MojoHandle handle, core_dispatcher_type type,
                    core_dispatcher **out);
void core_unpin(core_state *core, MojoHandle handle);

/*
 * For the unwrap entry points: removes `handle`, which must be open and of
 * `type`, from the table for good. Only the thread whose remove wins gets
 * OK and the table's reference in *out; it takes out what it unwraps, then
 * closes and releases the dispatcher. Errors as core_resolve's.
 */
MojoResult core_take_handle(MojoHandle handle, core_dispatcher_type type, core_dispatcher **out);

/* Closes the receiving port `name` of this node, if it is still there. */
typedef struct ports_name ports_name;
void core_close_port_named(const ports_name *name);

/*
 * Introspection for tests and leak checks. Each is a snapshot, 0 when the
 * core has not been created.
 */
size_t core_debug_handle_count(void);  /* open handles, in transit included */
size_t core_debug_message_count(void); /* message objects not yet destroyed */
size_t core_debug_port_count(void);    /* ports in the node, proxies included */

/*
 * Validates an options pointer of the 8-byte {struct_size, flags} shape that
 * most API functions take: NULL is fine; otherwise struct_size must cover
 * the flags and no flag outside `known` may be set. The flags (0 for NULL)
 * go to *flags. Inline: every entry point calls it, nearly always with NULL.
 */
struct core_options_header {
    uint32_t struct_size;
    uint32_t flags;
};
static inline bool core_options_ok(const void *options, uint32_t known, uint32_t *flags)
{
    if (!options) {
        if (flags)
            *flags = 0;
        return true;
    }
    const struct core_options_header *h = options;
    if (h->struct_size < sizeof(*h) || (h->flags & ~known))
        return false;
    if (flags)
        *flags = h->flags;
    return true;
}

#endif /* CMOJO_CORE_CORE_H_ */
