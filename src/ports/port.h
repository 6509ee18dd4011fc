/*
 * A port's private state, shared by node.c and message_queue.c. Nothing
 * outside src/ports includes this.
 */
#ifndef CMOJO_PORTS_PORT_H_
#define CMOJO_PORTS_PORT_H_

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cmojo_limits.h"
#include "ports/common.h"
#include "platform/lock.h"
#include "ports/event.h"

typedef enum port_state {
    PORT_UNINITIALIZED,
    PORT_RECEIVING,
    PORT_BUFFERING, /* sent to another node, waiting for PortAccepted */
    PORT_PROXYING,  /* forwarding to its peer until the route is stable */
    PORT_CLOSED,
} port_state;

/*
 * User messages in sequence order. `ready` holds the contiguous run starting
 * at next_seq (what a reader or a forwarding proxy can take now); `ooo` holds
 * later messages, sorted, waiting for a gap to fill. Both are bounded.
 */
typedef struct message_queue {
    uint64_t next_seq; /* sequence number of the next message to take */
    ports_event *ready_head, *ready_tail;
    size_t ready_count;
    ports_event **ooo;
    size_t ooo_count, ooo_cap;
    uint64_t queued_bytes;
} message_queue;

void mq_init(message_queue *q, uint64_t next_seq);
/* PORTS_OK, or PORTS_ERROR_BAD_PEER (stale, duplicate, too far, flood). */
int mq_accept(message_queue *q, ports_event *ev, bool *has_next);
bool mq_has_next(const message_queue *q);
ports_event *mq_take_next(message_queue *q); /* NULL if none ready */
/* Moves waiting messages numbered past `last` onto *list. */
void mq_take_beyond(message_queue *q, uint64_t last, ports_event **list);
/* Moves every held message onto *list (linked by next_). */
void mq_take_all(message_queue *q, ports_event **list);
size_t mq_count(const message_queue *q);

/* Early events from one sender: a min-heap on control sequence number. */
typedef struct pending_queue {
    ports_name from_node;
    ports_name from_port;
    ports_event **heap;
    size_t count, cap;
} pending_queue;

struct ports_port {
    atomic_int refs;
    plat_mutex lock;

    port_state state;
    ports_name peer_node, peer_port;
    ports_name prev_node, prev_port;

    uint64_t next_control_sequence_num_to_send;
    uint64_t next_control_sequence_num_to_receive;

    uint64_t next_sequence_num_to_send;
    uint64_t last_sequence_num_to_receive;
    uint64_t last_sequence_num_acknowledged;
    uint64_t sequence_num_acknowledge_interval;
    uint64_t sequence_num_to_acknowledge;

    bool peer_closed;
    bool peer_lost_unexpectedly;
    bool remove_proxy_on_last_message;
    bool pending_merge_peer;
    bool dispatching;    /* one thread is handling this port's sequenced events */
    bool prev_lost;      /* the previous peer died: no sequenced event can come */
    bool end_reported;   /* get_message said PEER_CLOSED: that answer is final */
    bool merging;        /* a merge is still sending this new proxy's first events */
    unsigned forwarding; /* messages taken by a proxy but not yet sequenced */

    message_queue mq;

    pending_queue pending[CMOJO_MAX_PENDING_SENDERS_PER_PORT];
    size_t pending_senders;
    size_t pending_total;

    /* Events a buffering port must send once it begins proxying. */
    ports_event *control_head, *control_tail;

    /* An ObserveProxyAck owed to a proxy, sent when this proxy goes away. */
    ports_event *send_on_proxy_removal;
    ports_name send_on_proxy_removal_node;

    void *user_data;
    uint64_t status_version; /* the last status snapshot's (ports_port_status) */
    /*
     * Set by a read that found nothing to take, cleared by whoever locks the
     * port next (lock_port): while it holds, a read may answer "nothing"
     * without the lock, since nothing that could change that answer has run.
     */
    atomic_bool nothing_to_read;
};

#endif /* CMOJO_PORTS_PORT_H_ */
