/*
 * Every limit cmojo enforces on a resource that a peer (another process, or a
 * misbehaving caller) controls. One header, so that a reviewer can see at a
 * glance how much a hostile peer can make us hold.
 */
#ifndef CMOJO_LIMITS_H_
#define CMOJO_LIMITS_H_

/*
 * Ports that one user message may carry. Mojo's own bindings rarely send more
 * than a handful; 1024 leaves room for bulk handle transfers while bounding
 * the work (name generation, proxy creation) a single message can trigger.
 */
#define CMOJO_MAX_PORTS_PER_MESSAGE 1024u

/*
 * User messages a port will hold whose sequence number is ahead of the next
 * one it can deliver. Control sequencing delivers a healthy route's messages
 * in order, so any gap is transient; a peer that opens more than this many
 * holes is flooding us and is cut off.
 */
#define CMOJO_MAX_OUT_OF_ORDER_MESSAGES 256u

/*
 * How far ahead of the next expected sequence number a user message may be.
 * Bounds the sequence space a peer can make us wait on.
 */
#define CMOJO_MAX_SEQUENCE_GAP 65536u

/*
 * Events a port will hold that arrived from a port which is not (yet) its
 * previous peer, waiting for the UpdatePreviousPeer that makes them valid.
 * While a proxy is being removed the new previous peer may legitimately send
 * a burst before the old one says goodbye, so this is generous; beyond it
 * the sender is flooding and is cut off.
 */
#define CMOJO_MAX_PENDING_EVENTS_PER_PORT 65536u

/*
 * Distinct senders whose early events one port will hold at once. A healthy
 * route has at most two or three (the current previous peer, the port that
 * replaces it, and a proxy being removed); more is a peer inventing names.
 */
#define CMOJO_MAX_PENDING_SENDERS_PER_PORT 16u

/*
 * Largest serialised ports event, payload included. Matches the channel's
 * frame limit (issue 4) so that nothing the ports layer accepts can be
 * impossible to send.
 */
#define CMOJO_MAX_EVENT_SIZE (64u * 1024u * 1024u)

#endif /* CMOJO_LIMITS_H_ */
