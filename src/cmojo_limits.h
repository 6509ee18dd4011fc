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
 * one it can deliver. Across processes a route can legitimately run two
 * ways at once while a proxy is being removed (a sender's newer messages go
 * straight to the receiver while older ones still pass through the proxy),
 * so thousands of messages may overtake a slow one: the multi-process tests
 * saw more than 256 with 5,000 messages in flight. Beyond this many the
 * sender is flooding us and is cut off. Each costs one queued message.
 */
#define CMOJO_MAX_OUT_OF_ORDER_MESSAGES 65536u

/*
 * How far ahead of the next expected sequence number a user message may be.
 * Bounds the sequence space a peer can make us wait on; at least the
 * out-of-order bound.
 */
#define CMOJO_MAX_SEQUENCE_GAP (1u << 20)

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

/*
 * Open handles per process. The table grows in chunks up to this; one slot is
 * 24 bytes, so a full table is 24 MiB. Mojo's own limit is of the same order
 * (it is the OS file limit that usually bites first).
 */
#define CMOJO_MAX_HANDLES (1u << 20)

/*
 * Message objects alive at once (created or read, not yet written or
 * destroyed). Same reasoning and cost as CMOJO_MAX_HANDLES.
 */
#define CMOJO_MAX_MESSAGES (1u << 20)

/*
 * Payload bytes one message may carry unless it was created with
 * MOJO_CREATE_MESSAGE_FLAG_UNLIMITED_SIZE. One MiB below the largest event,
 * so that the event header, port descriptors and serialised handles of a
 * maximal message still fit in one frame.
 */
#define CMOJO_MAX_MESSAGE_NUM_BYTES (CMOJO_MAX_EVENT_SIZE - 1024u * 1024u)

/* Handles one message may carry: each may need a port, so the same bound. */
#define CMOJO_MAX_MESSAGE_HANDLES CMOJO_MAX_PORTS_PER_MESSAGE

/*
 * Triggers one trap may hold. MojoArmTrap scans them all, so this bounds the
 * cost of one call; a program watching more handles uses several traps.
 */
#define CMOJO_MAX_TRIGGERS_PER_TRAP 65536u

/*
 * Largest frame on a channel, header included. A ports event of
 * CMOJO_MAX_EVENT_SIZE plus the node layer's own header must fit, so the
 * frame limit is the event limit plus a little room; the receive buffer
 * never grows beyond it, which bounds what a peer can make us allocate.
 */
#define CMOJO_MAX_FRAME_SIZE (CMOJO_MAX_EVENT_SIZE + 4096u)

/*
 * File descriptors one frame (so one message) may carry. The kernel's
 * SCM_MAX_FD is 253 per sendmsg; keeping one frame's fds within one kernel
 * limit bounds the fds a peer can make us hold while a frame is incomplete.
 */
#define CMOJO_MAX_FDS_PER_FRAME 253u

/*
 * File descriptors the channel passes to one sendmsg. Below the kernel's 253
 * so that the receive side's control buffer stays small (128 x 4 bytes) and a
 * frame with more fds is spread over several sendmsg calls, each carrying at
 * least one byte of its frame (so all of a frame's fds have arrived by the
 * time its last byte has).
 */
#define CMOJO_MAX_FDS_PER_SENDMSG 128u

/*
 * Events a node keeps for a peer it has asked the broker to introduce, and
 * how many such peers may be pending at once. A route to a new node carries
 * a burst of messages before the introduction comes back; beyond these
 * bounds the ports waiting are failed (peer closed) rather than buffered
 * without limit for a peer that may not exist.
 */
#define CMOJO_MAX_PENDING_EVENTS_PER_PEER 65536u
#define CMOJO_MAX_PENDING_INTRODUCTIONS 1024u

/* Bytes in one invitation attachment name (Mojo's are short strings or ids). */
#define CMOJO_MAX_INVITATION_NAME 256u

/* Pipes one invitation may carry; each costs a port and a merge round trip. */
#define CMOJO_MAX_INVITATION_ATTACHMENTS 64u

/* Bytes of a reason string in a bad-message report from another node. */
#define CMOJO_MAX_ERROR_MESSAGE 1024u

/* Peer processes (channels) one node keeps at once. */
#define CMOJO_MAX_PEERS 4096u

/*
 * Bytes of serialised state one attached object (a shared buffer, a data
 * pipe end) puts in a message envelope. Each type's state is a fixed,
 * small layout; this bounds what a parser accepts before it looks closer.
 */
#define CMOJO_MAX_OBJECT_STATE_SIZE 256u

/*
 * Largest shared buffer, and the largest data pipe ring. Both are memfds
 * every holder maps whole; a data pipe's ring is mapped by both ends.
 */
#define CMOJO_MAX_SHARED_BUFFER_SIZE (1ull << 30)
#define CMOJO_MAX_DATA_PIPE_CAPACITY (256u * 1024u * 1024u)

/*
 * Live MojoMapBuffer mappings per process. Each is an entry in a table that
 * MojoUnmapBuffer searches; the kernel's own limit (vm.max_map_count, 65,530
 * by default) usually bites first. Mojo's default table limit is 1,000,000.
 */
#define CMOJO_MAX_BUFFER_MAPPINGS (1u << 20)

/*
 * Capacity of a data pipe created with capacity_num_bytes 0 (Mojo's
 * default), rounded down to a whole number of elements, at least one.
 */
#define CMOJO_DEFAULT_DATA_PIPE_CAPACITY (64u * 1024u)

#endif /* CMOJO_LIMITS_H_ */
