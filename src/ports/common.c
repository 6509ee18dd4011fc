/*
 * Printable names and result strings for the ports layer (logs only).
 */
#include "ports/common.h"

#include <inttypes.h>
#include <stdio.h>

const char *ports_name_str(const ports_name *n, char buf[PORTS_NAME_STRLEN])
{
    if (n == NULL) {
        snprintf(buf, PORTS_NAME_STRLEN, "(null)");
        return buf;
    }
    /* The high halves are random, so 32 bits of each tell names apart in a log. */
    snprintf(buf, PORTS_NAME_STRLEN, "%08" PRIx32 ".%08" PRIx32, (uint32_t)(n->v1 >> 32),
             (uint32_t)(n->v2 >> 32));
    return buf;
}

const char *ports_strerror(int result)
{
    switch (result) {
    case PORTS_OK:
        return "ok";
    case PORTS_ERROR_PORT_UNKNOWN:
        return "unknown port";
    case PORTS_ERROR_PORT_EXISTS:
        return "port already exists";
    case PORTS_ERROR_PORT_STATE_UNEXPECTED:
        return "port in unexpected state";
    case PORTS_ERROR_PORT_CANNOT_SEND_SELF:
        return "port cannot send itself";
    case PORTS_ERROR_PORT_PEER_CLOSED:
        return "peer closed";
    case PORTS_ERROR_PORT_CANNOT_SEND_PEER:
        return "port cannot send its peer";
    case PORTS_ERROR_NOT_IMPLEMENTED:
        return "not implemented";
    case PORTS_ERROR_NO_MEMORY:
        return "out of memory";
    case PORTS_ERROR_INVALID_ARGUMENT:
        return "invalid argument";
    case PORTS_ERROR_MALFORMED:
        return "malformed event";
    case PORTS_ERROR_BAD_PEER:
        return "peer broke the protocol";
    default:
        return "unknown error";
    }
}
