/*
 * Names and result codes shared by every part of the ports layer.
 */
#ifndef CMOJO_PORTS_COMMON_H_
#define CMOJO_PORTS_COMMON_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A 128-bit node or port name. Names are random (getrandom), so knowing one is
 * the capability to address it; the all-zero name is "invalid".
 */
typedef struct ports_name {
    uint64_t v1;
    uint64_t v2;
} ports_name;

#define PORTS_INVALID_NAME ((ports_name){0, 0})

static inline bool ports_name_eq(const ports_name *a, const ports_name *b)
{
    return a->v1 == b->v1 && a->v2 == b->v2;
}

static inline bool ports_name_is_valid(const ports_name *n)
{
    return n->v1 != 0 || n->v2 != 0;
}

/* Total order on names (used to sort, never for security). */
static inline int ports_name_cmp(const ports_name *a, const ports_name *b)
{
    if (a->v1 != b->v1)
        return a->v1 < b->v1 ? -1 : 1;
    if (a->v2 != b->v2)
        return a->v2 < b->v2 ? -1 : 1;
    return 0;
}

/* Writes a short printable form ("1a2b3c4d.5e6f7a8b") for logs; buf >= 34. */
#define PORTS_NAME_STRLEN 34
const char *ports_name_str(const ports_name *n, char buf[PORTS_NAME_STRLEN]);

/* Result codes: 0 is success, every error is negative. */
enum {
    PORTS_OK = 0,
    PORTS_ERROR_PORT_UNKNOWN = -10,
    PORTS_ERROR_PORT_EXISTS = -11,
    PORTS_ERROR_PORT_STATE_UNEXPECTED = -12,
    PORTS_ERROR_PORT_CANNOT_SEND_SELF = -13,
    PORTS_ERROR_PORT_PEER_CLOSED = -14,
    PORTS_ERROR_PORT_CANNOT_SEND_PEER = -15,
    PORTS_ERROR_NOT_IMPLEMENTED = -100,
    PORTS_ERROR_NO_MEMORY = -101,
    PORTS_ERROR_INVALID_ARGUMENT = -102,
    /* The bytes of an event do not parse. The sending node is hostile. */
    PORTS_ERROR_MALFORMED = -200,
    /*
     * The event parsed but breaks the protocol in a way no correct peer can
     * (a stale or duplicate sequence number, a flood beyond a limit, a port
     * descriptor naming an existing port). The event was dropped and the
     * affected port closed; the embedder should disconnect the sending node.
     */
    PORTS_ERROR_BAD_PEER = -201,
};

/* A static string describing a result code. */
const char *ports_strerror(int result);

#endif /* CMOJO_PORTS_COMMON_H_ */
