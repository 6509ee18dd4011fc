/*
 * Fuzzes ports_event_parse and ports_event_parse_into, the bytes another
 * node sends us.
 *
 * Rejection is a normal outcome (and must leave *out alone); a crash,
 * sanitizer report or leak is a bug. The parser accepts only canonical
 * encodings, so every accepted input must serialise back to itself byte for
 * byte (header and ports by ports_event_serialize, then the payload bytes):
 * anything else means parse and serialize disagree about the wire format.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ports/event.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An accepted event must serialise back to the input; then it is destroyed. */
static void check_and_destroy(ports_event *ev, const uint8_t *data, size_t size)
{
    size_t head = ports_event_serialized_size(ev);
    size_t payload_len = 0;
    const uint8_t *payload = NULL;
    if (ev->type == PORTS_EVENT_USER_MESSAGE) {
        /* The parser always hands back the remaining bytes as a bytes payload. */
        if (!ports_payload_is_bytes(ev->u.user.payload))
            abort();
        payload_len = ev->u.user.payload->size;
        payload = ports_payload_bytes_data(ev->u.user.payload);
    }
    if (head > size || payload_len != size - head)
        abort();

    uint8_t *out = malloc(size);
    if (out == NULL)
        abort();
    ports_event_serialize(ev, out);
    if (payload_len > 0)
        memcpy(out + head, payload, payload_len);
    if (memcmp(out, data, size) != 0)
        abort();
    free(out);

    /* Exercise the read-only helpers on whatever parsed. */
    (void)ports_event_is_sequenced(ev);
    (void)ports_event_type_name(ev->type);
    char name[PORTS_NAME_STRLEN];
    (void)ports_name_str(&ev->port_name, name);

    ports_event_destroy(ev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ports_event sentinel;
    ports_event *ev = &sentinel;
    int rc = ports_event_parse(data, size, &ev);

    /*
     * The same bytes parsed into caller storage: the same answer, and the
     * storage used exactly for a user message without ports.
     */
    ports_event storage, *in = &sentinel;
    int rc_into = ports_event_parse_into(data, size, &storage, &in);
    if (rc_into != rc && rc != PORTS_ERROR_NO_MEMORY && rc_into != PORTS_ERROR_NO_MEMORY)
        abort();

    if (rc != PORTS_OK) {
        if (rc != PORTS_ERROR_MALFORMED && rc != PORTS_ERROR_NO_MEMORY)
            abort();
        if (ev != &sentinel)
            abort(); /* a failed parse wrote *out */
    } else {
        check_and_destroy(ev, data, size);
    }
    if (rc_into != PORTS_OK) {
        if (in != &sentinel)
            abort();
        return 0;
    }
    bool stored = in->type == PORTS_EVENT_USER_MESSAGE && in->u.user.num_ports == 0;
    if ((in == &storage) != stored)
        abort();
    check_and_destroy(in, data, size);
    return 0;
}
