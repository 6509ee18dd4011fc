/* The per-port queue of user messages, ordered by sequence number. */
#include <stdlib.h>
#include <string.h>

#include "ports/port.h"

static size_t payload_size(const ports_event *ev)
{
    return ev->u.user.payload ? ev->u.user.payload->size : 0;
}

void mq_init(message_queue *q, uint64_t next_seq)
{
    memset(q, 0, sizeof(*q));
    q->next_seq = next_seq;
}

static void ready_push(message_queue *q, ports_event *ev)
{
    ev->next_ = NULL;
    if (q->ready_tail)
        q->ready_tail->next_ = ev;
    else
        q->ready_head = ev;
    q->ready_tail = ev;
    q->ready_count++;
}

int mq_accept(message_queue *q, ports_event *ev, bool *has_next)
{
    uint64_t seq = ev->u.user.sequence_num;
    uint64_t expected = q->next_seq + q->ready_count;

    if (seq < expected)
        return PORTS_ERROR_BAD_PEER; /* stale or duplicate */
    if (seq - expected > CMOJO_MAX_SEQUENCE_GAP)
        return PORTS_ERROR_BAD_PEER;

    if (seq == expected) {
        ready_push(q, ev);
        q->queued_bytes += payload_size(ev);
        /* The new message may close a gap: pull the run that follows it. */
        size_t taken = 0;
        while (taken < q->ooo_count &&
               q->ooo[taken]->u.user.sequence_num == q->next_seq + q->ready_count) {
            ready_push(q, q->ooo[taken]);
            taken++;
        }
        if (taken) {
            memmove(q->ooo, q->ooo + taken, (q->ooo_count - taken) * sizeof(*q->ooo));
            q->ooo_count -= taken;
        }
    } else {
        if (q->ooo_count >= CMOJO_MAX_OUT_OF_ORDER_MESSAGES)
            return PORTS_ERROR_BAD_PEER;
        size_t lo = 0, hi = q->ooo_count;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (q->ooo[mid]->u.user.sequence_num < seq)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < q->ooo_count && q->ooo[lo]->u.user.sequence_num == seq)
            return PORTS_ERROR_BAD_PEER; /* duplicate */
        if (q->ooo_count == q->ooo_cap) {
            size_t cap = q->ooo_cap ? q->ooo_cap * 2 : 8;
            ports_event **grown = realloc(q->ooo, cap * sizeof(*grown));
            if (!grown)
                return PORTS_ERROR_NO_MEMORY;
            q->ooo = grown;
            q->ooo_cap = cap;
        }
        memmove(q->ooo + lo + 1, q->ooo + lo, (q->ooo_count - lo) * sizeof(*q->ooo));
        q->ooo[lo] = ev;
        q->ooo_count++;
        q->queued_bytes += payload_size(ev);
    }
    *has_next = q->ready_count > 0;
    return PORTS_OK;
}

bool mq_has_next(const message_queue *q)
{
    return q->ready_count > 0;
}

ports_event *mq_take_next(message_queue *q)
{
    ports_event *ev = q->ready_head;
    if (!ev)
        return NULL;
    q->ready_head = ev->next_;
    if (!q->ready_head)
        q->ready_tail = NULL;
    q->ready_count--;
    q->next_seq++;
    q->queued_bytes -= payload_size(ev);
    ev->next_ = NULL;
    return ev;
}

void mq_take_all(message_queue *q, ports_event **list)
{
    for (ports_event *ev = q->ready_head, *next; ev; ev = next) {
        next = ev->next_;
        ev->next_ = *list;
        *list = ev;
    }
    for (size_t i = 0; i < q->ooo_count; i++) {
        q->ooo[i]->next_ = *list;
        *list = q->ooo[i];
    }
    free(q->ooo);
    uint64_t next_seq = q->next_seq;
    mq_init(q, next_seq);
}

size_t mq_count(const message_queue *q)
{
    return q->ready_count + q->ooo_count;
}

void mq_take_beyond(message_queue *q, uint64_t last, ports_event **list)
{
    /* Waiting messages are sorted: those past `last` are a suffix. */
    while (q->ooo_count && q->ooo[q->ooo_count - 1]->u.user.sequence_num > last) {
        ports_event *ev = q->ooo[--q->ooo_count];
        q->queued_bytes -= payload_size(ev);
        ev->next_ = *list;
        *list = ev;
    }
}
