/*
 * A raw peer for the hostile multi-process tests (tests/node/test_hostile.c,
 * test_shared_buffer_hostile.c): a child that got an invitation but speaks
 * bytes on its socket instead of using cmojo, so it can send what cmojo
 * never would. The layouts are channel/frame.h's frame header, node_wire.h's
 * ACCEPT and the event and envelope formats of ports/event.h and
 * core/message.h.
 *
 * For child roles: a failed send ends the child through CMOJO_MP_CHECK;
 * every wait has a deadline of CMOJO_RAW_TIMEOUT_MS.
 */
#ifndef CMOJO_TEST_RAW_PEER_H_
#define CMOJO_TEST_RAW_PEER_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ports/ports.h"

#define CMOJO_RAW_TIMEOUT_MS 30000
/* Most fds one cmojo_raw_send passes (a test may want more than a frame may carry). */
#define CMOJO_RAW_MAX_FDS 16

/* A frame header (CHANNEL_FRAME_HEADER_SIZE bytes) with these values, which may be lies. */
void cmojo_raw_frame_header(uint8_t *out, uint32_t total_size, uint16_t type, uint16_t num_fds);

/* Sends all of buf[0..len), with fds[0..num_fds) (if any) on the first sendmsg. */
void cmojo_raw_send(int s, const void *buf, size_t len, const int *fds, size_t num_fds);

/* Reads one whole frame (the parent's INVITE) and returns its type; fails on anything else. */
uint16_t cmojo_raw_read_frame(int s);

/*
 * Reads one whole frame that carries no fds: its payload (at most cap bytes,
 * with its padding) into payload, its unpadded length into *len; returns its
 * type. Fails (CMOJO_MP_CHECK) on a timeout, EOF or anything larger.
 */
uint16_t cmojo_raw_read_frame_payload(int s, uint8_t *payload, size_t cap, size_t *len);

/* Reads (and drops) until the other side closes the connection: false on timeout or error. */
bool cmojo_raw_wait_eof(int s);

/* Sends ACCEPT with the node name `me`, as a real invitee would first. */
void cmojo_raw_send_accept(int s, const ports_name *me);

/*
 * Sends an EVENT: a user message to a made-up port carrying two handles: a
 * message pipe whose port descriptor says another node (not us) sent it, so
 * the ports layer refuses the event; and an object of dispatcher `type` with
 * `state` (state_size bytes) and fds[0..num_fds). The envelope is well formed
 * around them, so whatever checks the object's state and fds comes first.
 */
void cmojo_raw_send_foreign_port_event(int s, uint32_t type, const void *state, uint32_t state_size,
                                       const int *fds, size_t num_fds);

#endif /* CMOJO_TEST_RAW_PEER_H_ */
