/*
 * The ports protocol, one behaviour per test, driven by hand through
 * ports_harness so each test controls exactly which events move when.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cmojo_limits.h"
#include "ports/ports.h"
#include "ports_harness.h"

static ports_node *N(ph_harness *h, int i)
{
    return h->nodes[i].node;
}

static void expect_read(ph_harness *h, int node, const ports_port_ref *port, const char *text)
{
    char buf[256];
    assert_true(ph_read(h, node, port, buf, sizeof(buf), NULL, NULL));
    assert_string_equal(buf, text);
}

static void expect_nothing(ph_harness *h, int node, const ports_port_ref *port)
{
    ports_event *ev = (ports_event *)1;
    assert_int_equal(ports_node_get_message(N(h, node), port, &ev), PORTS_OK);
    assert_null(ev);
}

static void expect_peer_closed(ph_harness *h, int node, const ports_port_ref *port)
{
    ports_event *ev = NULL;
    assert_int_equal(ports_node_get_message(N(h, node), port, &ev), PORTS_ERROR_PORT_PEER_CLOSED);
    assert_null(ev);
}

static void close_and_release(ph_harness *h, int node, ports_port_ref *port)
{
    assert_int_equal(ports_node_close_port(N(h, node), port), PORTS_OK);
    ports_port_ref_release(port);
}

static size_t total_ports(ph_harness *h)
{
    size_t k = 0;
    for (int i = 0; i < h->n; i++)
        k += ports_node_port_count(N(h, i));
    return k;
}

static void test_local_pipe_delivers_in_order(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 1);
    ports_port_ref a, b;
    assert_int_equal(ports_node_create_port_pair(N(&h, 0), &a, &b), PORTS_OK);
    ph_write(&h, 0, &a, "one", NULL, 0);
    ph_write(&h, 0, &a, "two", NULL, 0);
    ph_write(&h, 0, &b, "back", NULL, 0);
    ph_deliver_all(&h);

    ports_port_status st;
    assert_int_equal(ports_node_get_status(N(&h, 0), &b, &st), PORTS_OK);
    assert_true(st.has_messages);
    assert_int_equal(st.queued_message_count, 2);
    assert_int_equal(st.queued_num_bytes, 6);
    assert_false(st.peer_remote);

    expect_read(&h, 0, &b, "one");
    expect_read(&h, 0, &b, "two");
    expect_nothing(&h, 0, &b);
    expect_read(&h, 0, &a, "back");
    close_and_release(&h, 0, &a);
    close_and_release(&h, 0, &b);
    ph_deliver_all(&h);
    assert_int_equal(total_ports(&h), 0);
    ph_free(&h);
}

static void test_close_reports_peer_closed_after_last_message(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 2);
    ports_port_ref a, b;
    ph_connect(&h, 0, 1, &a, &b);
    ph_write(&h, 0, &a, "last words", NULL, 0);
    close_and_release(&h, 0, &a);
    ph_deliver_all(&h);

    ports_port_status st;
    assert_int_equal(ports_node_get_status(N(&h, 1), &b, &st), PORTS_OK);
    assert_true(st.peer_closed);
    assert_true(st.has_messages);
    expect_read(&h, 1, &b, "last words");
    expect_peer_closed(&h, 1, &b);
    /* Writing to a closed peer fails, and the cargo stays the sender's. */
    ports_port_ref c, d;
    assert_int_equal(ports_node_create_port_pair(N(&h, 1), &c, &d), PORTS_OK);
    ports_event *ev = ph_message("late", 1);
    ev->u.user.ports[0] = c.name;
    assert_int_equal(ports_node_send_user_message(N(&h, 1), &b, ev), PORTS_ERROR_PORT_PEER_CLOSED);
    assert_int_equal(ports_node_get_status(N(&h, 1), &c, &st), PORTS_OK);
    assert_false(st.peer_closed);
    close_and_release(&h, 1, &c);
    close_and_release(&h, 1, &d);
    close_and_release(&h, 1, &b);
    ph_deliver_all(&h);
    assert_int_equal(total_ports(&h), 0);
    ph_free(&h);
}

/*
 * A read that finds nothing lets the next read answer without the port lock,
 * until anything locks the port: a message arriving, or the closure, must be
 * seen by the very next read, locally and from another node.
 */
static void test_empty_read_answer_ends_with_any_change(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 2);
    ports_port_ref a, b, c, d;
    ph_connect(&h, 0, 1, &a, &b);
    assert_int_equal(ports_node_create_port_pair(N(&h, 1), &c, &d), PORTS_OK);

    expect_nothing(&h, 1, &b);
    expect_nothing(&h, 1, &b); /* the lock-free answer */
    ph_write(&h, 0, &a, "remote", NULL, 0);
    ph_deliver_all(&h);
    expect_read(&h, 1, &b, "remote");

    expect_nothing(&h, 1, &d);
    ph_write(&h, 1, &d, "reply", NULL, 0); /* sending from d leaves its answer */
    expect_nothing(&h, 1, &d);
    ph_write(&h, 1, &c, "local", NULL, 0);
    expect_read(&h, 1, &d, "local");
    expect_read(&h, 1, &c, "reply");
    expect_nothing(&h, 1, &d);
    close_and_release(&h, 1, &c);
    ph_deliver_all(&h);
    expect_peer_closed(&h, 1, &d);

    expect_nothing(&h, 1, &b);
    close_and_release(&h, 0, &a);
    ph_deliver_all(&h);
    expect_peer_closed(&h, 1, &b);

    close_and_release(&h, 1, &b);
    close_and_release(&h, 1, &d);
    ph_deliver_all(&h);
    assert_int_equal(total_ports(&h), 0);
    ph_free(&h);
}

/* A delegate that records port_status_seen (one node; events to itself go straight back in). */
typedef struct seen_log {
    ports_node *node;
    int acquired, seen, changed;
    void *data;
    ports_port_status status;
} seen_log;

static seen_log *g_seen;

static void seen_forward(void *ctx, const ports_name *to, ports_event *ev)
{
    seen_log *log = ctx;
    ports_node_accept_event(log->node, to, ev);
}

static void seen_broadcast(void *ctx, ports_event *ev)
{
    (void)ctx;
    ports_event_destroy(ev);
}

static void seen_changed(void *ctx, const ports_port_ref *port)
{
    (void)port;
    ((seen_log *)ctx)->changed++;
}

static void seen_acquire(void *data)
{
    assert_ptr_equal(data, &g_seen->data); /* the user data this test set */
    g_seen->acquired++;
}

static void seen_status(void *ctx, const ports_port_ref *port, void *data,
                        const ports_port_status *status)
{
    (void)port;
    seen_log *log = ctx;
    log->seen++;
    log->data = data;
    log->status = *status;
}

/*
 * A message queued for a reader hands the delegate the port's user data
 * (acquired) and its status from the same hold of the lock: no second look.
 */
static void test_status_seen_carries_user_data_and_status(void **state)
{
    (void)state;
    seen_log log = {0};
    g_seen = &log;
    ports_delegate d = {.ctx = &log,
                        .forward_event = seen_forward,
                        .broadcast_event = seen_broadcast,
                        .port_status_changed = seen_changed,
                        .acquire_user_data = seen_acquire};
    ports_name name = {0x77, 0x88};
    /* Both or neither. */
    assert_int_equal(ports_node_create(&name, &d, &log.node), PORTS_ERROR_INVALID_ARGUMENT);
    d.port_status_seen = seen_status;
    assert_int_equal(ports_node_create(&name, &d, &log.node), PORTS_OK);

    ports_port_ref a, b;
    assert_int_equal(ports_node_create_port_pair(log.node, &a, &b), PORTS_OK);
    assert_int_equal(ports_node_send_user_message(log.node, &a, ph_message("bare", 0)), PORTS_OK);
    assert_int_equal(log.seen, 1);
    assert_null(log.data);
    assert_int_equal(log.acquired, 0);

    ports_port_set_user_data(&b, &log.data);
    assert_int_equal(ports_node_send_user_message(log.node, &a, ph_message("two", 0)), PORTS_OK);
    assert_int_equal(log.seen, 2);
    assert_int_equal(log.acquired, 1);
    assert_ptr_equal(log.data, &log.data);
    assert_true(log.status.has_messages);
    assert_true(log.status.receiving_messages);
    assert_false(log.status.peer_closed);
    assert_int_equal(log.status.queued_message_count, 2);
    assert_int_equal(log.status.queued_num_bytes, strlen("bare") + strlen("two"));
    uint64_t version = log.status.version;
    assert_true(version != 0);

    /* A read's status is newer than the one the arrival handed over. */
    ports_event *ev = NULL;
    ports_port_status after;
    assert_int_equal(ports_node_get_message_status(log.node, &b, &ev, &after), PORTS_OK);
    assert_non_null(ev);
    ports_event_destroy(ev);
    assert_true(after.version > version);
    assert_int_equal(after.queued_message_count, 1);

    ports_port_set_user_data(&b, NULL);
    assert_int_equal(ports_node_close_port(log.node, &a), PORTS_OK);
    assert_int_equal(ports_node_close_port(log.node, &b), PORTS_OK);
    ports_port_ref_release(&a);
    ports_port_ref_release(&b);
    assert_int_equal(ports_node_port_count(log.node), 0);
    ports_node_destroy(log.node);
    g_seen = NULL;
}

/*
 * The core of the protocol: an end sent to another node leaves a proxy that
 * forwards, then removes itself, so the route is two ports again.
 */
static void test_sent_port_proxy_collapses(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 3);
    ports_port_ref x0, x1; /* transport pipe node0 <-> node1 */
    ph_connect(&h, 0, 1, &x0, &x1);
    ports_port_ref a, b; /* the pipe whose end b moves to node1 */
    assert_int_equal(ports_node_create_port_pair(N(&h, 0), &a, &b), PORTS_OK);

    ph_write(&h, 0, &a, "queued before the move", NULL, 0);
    ph_write(&h, 0, &x0, "here is b", &b.name, 1);
    ph_write(&h, 0, &a, "in flight during the move", NULL, 0);
    ph_deliver_all(&h);

    char buf[64];
    ports_name moved;
    uint32_t nmoved = 0;
    assert_true(ph_read(&h, 1, &x1, buf, sizeof(buf), &moved, &nmoved));
    assert_int_equal(nmoved, 1);
    ports_port_ref b1;
    assert_int_equal(ports_node_get_port(N(&h, 1), &moved, &b1), PORTS_OK);
    ph_deliver_all(&h);

    expect_read(&h, 1, &b1, "queued before the move");
    expect_read(&h, 1, &b1, "in flight during the move");
    ph_write(&h, 0, &a, "after", NULL, 0);
    ph_write(&h, 1, &b1, "reply", NULL, 0);
    ph_deliver_all(&h);
    expect_read(&h, 1, &b1, "after");
    expect_read(&h, 0, &a, "reply");

    /* Proxy gone: node0 holds a, x0 and nothing else. */
    assert_int_equal(ports_node_port_count(N(&h, 0)), 2);
    assert_int_equal(ports_node_port_count(N(&h, 1)), 2);
    ports_port_status st;
    assert_int_equal(ports_node_get_status(N(&h, 0), &a, &st), PORTS_OK);
    assert_true(st.peer_remote);

    ports_port_ref_release(&b);
    close_and_release(&h, 0, &a);
    close_and_release(&h, 1, &b1);
    close_and_release(&h, 0, &x0);
    close_and_release(&h, 1, &x1);
    ph_deliver_all(&h);
    assert_int_equal(total_ports(&h), 0);
    assert_int_equal(h.bad_peer_results, 0);
    ph_free(&h);
}

/* Builds an event in memory addressed to `port`, as if from from_port@from. */
static ports_event *event_to(ports_event_type type, const ports_port_ref *port,
                             const ports_name *from_port, uint64_t control_seq)
{
    ports_event *ev = ports_event_new(type, &port->name);
    assert_non_null(ev);
    ev->from_port = from_port ? *from_port : PORTS_INVALID_NAME;
    ev->control_sequence_num = control_seq;
    return ev;
}

static ports_event *user_message_to(const ports_port_ref *port, const ports_name *from_port,
                                    uint64_t control_seq, uint64_t seq)
{
    ports_event *ev = ph_message("forged", 0);
    ev->port_name = port->name;
    ev->from_port = *from_port;
    ev->control_sequence_num = control_seq;
    ev->u.user.sequence_num = seq;
    return ev;
}

static bool peer_closed(ph_harness *h, int node, const ports_port_ref *port)
{
    ports_port_status st;
    assert_int_equal(ports_node_get_status(N(h, node), port, &st), PORTS_OK);
    return st.peer_closed;
}

static void test_event_from_non_previous_peer_is_held_not_applied(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 3);
    ports_port_ref a, b;
    ph_connect(&h, 0, 1, &a, &b);
    /* A closure notice from a port that is not b's previous peer. */
    ports_name stranger = {0x5117, 0x5117};
    ports_event *ev = event_to(PORTS_EVENT_OBSERVE_CLOSURE, &b, &stranger, 1);
    assert_int_equal(ph_inject(&h, 2, 1, ev), PORTS_OK);
    assert_false(peer_closed(&h, 1, &b));
    /* The real peer still gets through, in order. */
    ph_write(&h, 0, &a, "genuine", NULL, 0);
    ph_deliver_all(&h);
    expect_read(&h, 1, &b, "genuine");
    assert_false(peer_closed(&h, 1, &b));
    ports_port_ref_release(&a);
    ports_port_ref_release(&b);
    ph_free(&h);
}

static void test_replayed_control_sequence_is_bad_peer(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 2);
    ports_port_ref a, b;
    ph_connect(&h, 0, 1, &a, &b);
    ph_write(&h, 0, &a, "m1", NULL, 0); /* control 1, sequence 1 */
    ph_deliver_all(&h);
    /* Same control number again, from the genuine previous peer. */
    assert_int_equal(ph_inject(&h, 0, 1, user_message_to(&b, &a.name, 1, 2)), PORTS_ERROR_BAD_PEER);
    /* The route is cut: the reader sees the end instead of waiting forever. */
    assert_true(peer_closed(&h, 1, &b));
    expect_read(&h, 1, &b, "m1");
    expect_peer_closed(&h, 1, &b);
    ports_port_ref_release(&a);
    ports_port_ref_release(&b);
    ph_free(&h);
}

static void test_stale_user_sequence_is_bad_peer(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 2);
    ports_port_ref a, b;
    ph_connect(&h, 0, 1, &a, &b);
    ph_write(&h, 0, &a, "m1", NULL, 0);
    ph_deliver_all(&h);
    /* Next control number, but a user sequence number already delivered. */
    assert_int_equal(ph_inject(&h, 0, 1, user_message_to(&b, &a.name, 2, 1)), PORTS_ERROR_BAD_PEER);
    assert_true(peer_closed(&h, 1, &b));
    ports_port_ref_release(&a);
    ports_port_ref_release(&b);
    ph_free(&h);
}

static void test_out_of_order_flood_is_bounded(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 2);
    ports_port_ref a, b;
    ph_connect(&h, 0, 1, &a, &b);
    /* Sequence 1 never comes; 2, 3, ... pile up until the limit. */
    uint64_t ctl = 1;
    for (uint64_t i = 0; i < CMOJO_MAX_OUT_OF_ORDER_MESSAGES; i++)
        assert_int_equal(ph_inject(&h, 0, 1, user_message_to(&b, &a.name, ctl++, 2 + i)), PORTS_OK);
    ports_port_status st;
    assert_int_equal(ports_node_get_status(N(&h, 1), &b, &st), PORTS_OK);
    assert_int_equal(st.queued_message_count, CMOJO_MAX_OUT_OF_ORDER_MESSAGES);
    assert_false(st.has_messages);
    assert_int_equal(
        ph_inject(&h, 0, 1,
                  user_message_to(&b, &a.name, ctl++, 2 + CMOJO_MAX_OUT_OF_ORDER_MESSAGES)),
        PORTS_ERROR_BAD_PEER);
    assert_true(peer_closed(&h, 1, &b));
    expect_peer_closed(&h, 1, &b);
    ports_port_ref_release(&a);
    ports_port_ref_release(&b);
    ph_free(&h);
}

static void test_sequence_gap_beyond_limit_is_bad_peer(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 2);
    ports_port_ref a, b;
    ph_connect(&h, 0, 1, &a, &b);
    assert_int_equal(
        ph_inject(&h, 0, 1, user_message_to(&b, &a.name, 1, 2 + CMOJO_MAX_SEQUENCE_GAP)),
        PORTS_ERROR_BAD_PEER);
    ports_port_ref_release(&a);
    ports_port_ref_release(&b);
    ph_free(&h);
}

static void fill_descriptor(ph_harness *h, ports_port_descriptor *d, int referring_node)
{
    memset(d, 0, sizeof(*d));
    d->peer_node = h->nodes[0].name;
    d->peer_port = (ports_name){0x77, 0x77};
    d->referring_node = h->nodes[referring_node].name;
    d->referring_port = (ports_name){0x88, 0x88};
    d->next_sequence_num_to_send = 1;
    d->next_sequence_num_to_receive = 1;
}

static void test_descriptor_naming_receiving_port_is_rejected(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 2);
    ports_port_ref a, b;
    ph_connect(&h, 0, 1, &a, &b);
    ports_event *ev = user_message_to(&b, &a.name, 1, 1);
    ports_event *with_port = ph_message("cargo", 1);
    with_port->port_name = ev->port_name;
    with_port->from_port = ev->from_port;
    with_port->control_sequence_num = 1;
    with_port->u.user.sequence_num = 1;
    ports_event_destroy(ev);
    with_port->u.user.ports[0] = b.name; /* the receiving port itself */
    fill_descriptor(&h, &with_port->u.user.descriptors[0], 0);
    /* On the wire this never parses. */
    assert_int_equal(ph_inject(&h, 0, 1, with_port), PORTS_ERROR_MALFORMED);
    assert_int_equal(ports_node_port_count(N(&h, 1)), 1);
    assert_false(peer_closed(&h, 1, &b));
    ports_port_ref_release(&a);
    ports_port_ref_release(&b);
    ph_free(&h);
}

static void test_descriptor_naming_existing_port_is_bad_peer(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 2);
    ports_port_ref a, b, c, d;
    ph_connect(&h, 0, 1, &a, &b);
    assert_int_equal(ports_node_create_port_pair(N(&h, 1), &c, &d), PORTS_OK);
    ports_event *ev = ph_message("hijack", 1);
    ev->port_name = b.name;
    ev->from_port = a.name;
    ev->control_sequence_num = 1;
    ev->u.user.sequence_num = 1;
    ev->u.user.ports[0] = c.name; /* would overwrite a live port */
    fill_descriptor(&h, &ev->u.user.descriptors[0], 0);
    assert_int_equal(ports_node_accept_event(N(&h, 1), &h.nodes[0].name, ev), PORTS_ERROR_BAD_PEER);
    /* c is untouched and still talks to d. */
    ph_write(&h, 1, &c, "still mine", NULL, 0);
    ph_deliver_all(&h);
    expect_read(&h, 1, &d, "still mine");
    ports_port_ref_release(&a);
    ports_port_ref_release(&b);
    ports_port_ref_release(&c);
    ports_port_ref_release(&d);
    ph_free(&h);
}

static void test_descriptor_from_forged_referrer_is_bad_peer(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 3);
    ports_port_ref a, b;
    ph_connect(&h, 0, 1, &a, &b);
    ports_event *ev = ph_message("forged cargo", 1);
    ev->port_name = b.name;
    ev->from_port = a.name;
    ev->control_sequence_num = 1;
    ev->u.user.sequence_num = 1;
    ev->u.user.ports[0] = (ports_name){0x99, 0x99};
    fill_descriptor(&h, &ev->u.user.descriptors[0], 2); /* claims node 2 sent it */
    assert_int_equal(ph_inject(&h, 0, 1, ev), PORTS_ERROR_BAD_PEER);
    assert_int_equal(ports_node_port_count(N(&h, 1)), 1);
    ports_port_ref_release(&a);
    ports_port_ref_release(&b);
    ph_free(&h);
}

static void test_port_accepted_only_from_destination(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 3);
    ports_port_ref x0, x1, a, b;
    ph_connect(&h, 0, 1, &x0, &x1);
    assert_int_equal(ports_node_create_port_pair(N(&h, 0), &a, &b), PORTS_OK);
    ph_write(&h, 0, &x0, "carrying b", &b.name, 1); /* b buffers, waiting for node 1 */
    assert_int_equal(
        ph_inject(&h, 2, 0,
                  event_to(PORTS_EVENT_PORT_ACCEPTED, &b, NULL, PORTS_INVALID_SEQUENCE_NUM)),
        PORTS_ERROR_BAD_PEER);
    /* The genuine acceptance still completes the move. */
    ph_deliver_all(&h);
    char buf[32];
    ports_name moved;
    assert_true(ph_read(&h, 1, &x1, buf, sizeof(buf), &moved, NULL));
    ports_port_ref b1;
    assert_int_equal(ports_node_get_port(N(&h, 1), &moved, &b1), PORTS_OK);
    ph_write(&h, 0, &a, "hello b", NULL, 0);
    ph_deliver_all(&h);
    expect_read(&h, 1, &b1, "hello b");
    assert_int_equal(ports_node_port_count(N(&h, 0)), 2);
    ports_port_ref_release(&x0);
    ports_port_ref_release(&x1);
    ports_port_ref_release(&a);
    ports_port_ref_release(&b);
    ports_port_ref_release(&b1);
    ph_free(&h);
}

static void test_dead_proxy_notice_only_from_its_node(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 3);
    ports_port_ref a, b;
    ph_connect(&h, 0, 1, &a, &b);
    /* Node 2 claims that b (on node 1) died: it may not speak for node 1. */
    ports_event *ev = ports_event_new(PORTS_EVENT_OBSERVE_PROXY, &PORTS_INVALID_NAME);
    ev->u.observe_proxy.proxy_node = h.nodes[1].name;
    ev->u.observe_proxy.proxy_port = b.name;
    assert_int_equal(ph_inject(&h, 2, 0, ev), PORTS_ERROR_BAD_PEER);
    assert_false(peer_closed(&h, 0, &a));
    /* The same notice from node 1 itself is honoured. */
    ev = ports_event_new(PORTS_EVENT_OBSERVE_PROXY, &PORTS_INVALID_NAME);
    ev->u.observe_proxy.proxy_node = h.nodes[1].name;
    ev->u.observe_proxy.proxy_port = b.name;
    assert_int_equal(ph_inject(&h, 1, 0, ev), PORTS_OK);
    assert_true(peer_closed(&h, 0, &a));
    ports_port_ref_release(&a);
    ports_port_ref_release(&b);
    ph_free(&h);
}

static void test_read_ack_for_unsent_message_is_bad_peer(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 2);
    ports_port_ref a, b;
    ph_connect(&h, 0, 1, &a, &b);
    ports_event *ev = event_to(PORTS_EVENT_USER_MESSAGE_READ_ACK, &a, &b.name, 1);
    ev->u.read_ack.sequence_num_acknowledged = 5;
    assert_int_equal(ph_inject(&h, 1, 0, ev), PORTS_ERROR_BAD_PEER);
    ports_port_ref_release(&a);
    ports_port_ref_release(&b);
    ph_free(&h);
}

static void test_read_acks_track_unread_messages(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 2);
    ports_port_ref a, b;
    ph_connect(&h, 0, 1, &a, &b);
    assert_int_equal(ports_node_set_ack_request_interval(N(&h, 0), &a, 1), PORTS_OK);
    for (int i = 0; i < 3; i++)
        ph_write(&h, 0, &a, "m", NULL, 0);
    ph_deliver_all(&h);
    ports_port_status st;
    assert_int_equal(ports_node_get_status(N(&h, 0), &a, &st), PORTS_OK);
    assert_int_equal(st.unacknowledged_message_count, 3);
    expect_read(&h, 1, &b, "m");
    ph_deliver_all(&h);
    assert_int_equal(ports_node_get_status(N(&h, 0), &a, &st), PORTS_OK);
    assert_int_equal(st.unacknowledged_message_count, 2);
    expect_read(&h, 1, &b, "m");
    expect_read(&h, 1, &b, "m");
    ph_deliver_all(&h);
    assert_int_equal(ports_node_get_status(N(&h, 0), &a, &st), PORTS_OK);
    assert_int_equal(st.unacknowledged_message_count, 0);
    ports_port_ref_release(&a);
    ports_port_ref_release(&b);
    ph_free(&h);
}

static void test_merge_local_ports_joins_far_ends(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 1);
    ports_port_ref a, b, c, d;
    assert_int_equal(ports_node_create_port_pair(N(&h, 0), &a, &b), PORTS_OK);
    assert_int_equal(ports_node_create_port_pair(N(&h, 0), &c, &d), PORTS_OK);
    ph_write(&h, 0, &a, "queued at b", NULL, 0);
    ph_write(&h, 0, &d, "queued at c", NULL, 0);
    ph_deliver_all(&h);
    assert_int_equal(ports_node_merge_local_ports(N(&h, 0), &b, &c), PORTS_OK);
    ph_deliver_all(&h);
    expect_read(&h, 0, &d, "queued at b");
    expect_read(&h, 0, &a, "queued at c");
    ph_write(&h, 0, &a, "a to d", NULL, 0);
    ph_deliver_all(&h);
    expect_read(&h, 0, &d, "a to d");
    assert_int_equal(ports_node_port_count(N(&h, 0)), 2);
    ports_port_ref_release(&b);
    ports_port_ref_release(&c);
    close_and_release(&h, 0, &a);
    ph_deliver_all(&h);
    expect_peer_closed(&h, 0, &d);
    close_and_release(&h, 0, &d);
    assert_int_equal(ports_node_port_count(N(&h, 0)), 0);
    ph_free(&h);
}

static void test_merge_of_port_that_sent_is_refused(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 1);
    ports_port_ref a, b, c, d;
    assert_int_equal(ports_node_create_port_pair(N(&h, 0), &a, &b), PORTS_OK);
    assert_int_equal(ports_node_create_port_pair(N(&h, 0), &c, &d), PORTS_OK);
    ph_write(&h, 0, &b, "b has spoken", NULL, 0);
    assert_int_equal(ports_node_merge_local_ports(N(&h, 0), &b, &c),
                     PORTS_ERROR_PORT_STATE_UNEXPECTED);
    /* Like Mojo's fuse, a failed merge closes both: their peers see it. */
    ph_deliver_all(&h);
    expect_read(&h, 0, &a, "b has spoken");
    expect_peer_closed(&h, 0, &a);
    expect_peer_closed(&h, 0, &d);
    ports_port_ref_release(&b);
    ports_port_ref_release(&c);
    close_and_release(&h, 0, &a);
    close_and_release(&h, 0, &d);
    assert_int_equal(ports_node_port_count(N(&h, 0)), 0);
    ph_free(&h);
}

static void test_remote_merge_needs_permission(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 2);
    ports_port_ref a, b, c, d;
    assert_int_equal(ports_node_create_port_pair(N(&h, 0), &a, &b), PORTS_OK);
    assert_int_equal(ports_node_create_port_pair(N(&h, 1), &c, &d), PORTS_OK);

    /* Not allowed: node 1 refuses and reports node 0; a's pipe ends. */
    assert_int_equal(ports_node_merge_ports(N(&h, 0), &b, &h.nodes[1].name, &c.name), PORTS_OK);
    ph_deliver_all(&h);
    assert_int_equal(h.bad_peer_results, 1);
    expect_peer_closed(&h, 0, &a);
    close_and_release(&h, 0, &a);
    ports_port_ref_release(&b);
    ph_deliver_all(&h);
    assert_int_equal(ports_node_port_count(N(&h, 0)), 0);

    /* Allowed: a fresh pipe on node 0 merges with c; its far end meets d. */
    ports_port_ref e, f;
    assert_int_equal(ports_node_create_port_pair(N(&h, 0), &e, &f), PORTS_OK);
    assert_int_equal(ports_node_allow_merge(N(&h, 1), &c), PORTS_OK);
    assert_int_equal(ports_node_merge_ports(N(&h, 0), &f, &h.nodes[1].name, &c.name), PORTS_OK);
    ph_deliver_all(&h);
    ph_write(&h, 0, &e, "e to d", NULL, 0);
    ph_write(&h, 1, &d, "d to e", NULL, 0);
    ph_deliver_all(&h);
    expect_read(&h, 1, &d, "e to d");
    expect_read(&h, 0, &e, "d to e");
    /* Both merged ports are gone: each route is two ports. */
    assert_int_equal(ports_node_port_count(N(&h, 0)), 1);
    assert_int_equal(ports_node_port_count(N(&h, 1)), 1);
    ports_port_ref_release(&c);
    ports_port_ref_release(&f);
    close_and_release(&h, 0, &e);
    close_and_release(&h, 1, &d);
    ph_deliver_all(&h);
    assert_int_equal(total_ports(&h), 0);
    ph_free(&h);
}

/* Drains one link from inside a node's next forward, as another thread could. */
typedef struct drain_during_forward {
    int trigger; /* the node whose next forward drains the link; -1 once done */
    int from, to;
} drain_during_forward;

static void drain_link_on_forward(ph_harness *h, int from, int to, void *arg)
{
    (void)to;
    drain_during_forward *d = arg;
    if (from != d->trigger)
        return;
    d->trigger = -1;
    while (ph_deliver_one(h, d->from, d->to)) {
    }
}

/*
 * A port that knows its stream ends after one message it has not received
 * yet (its peer closed, and the message is still on the way through a proxy)
 * is merged. The message arrives while the merge is still sending the new
 * proxy's first events -- over channels, on the IO thread. The proxy may go
 * once it has passed the message on, but not before the ObserveClosure the
 * merge owes its new peer is numbered: were it to hand over its previous peer
 * first, the new peer would listen to a port long gone and never take the
 * closure, so neither it nor the proxy beyond it would learn that the pipe
 * ended.
 */
static void test_merge_racing_last_message_still_closes_the_pipe(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 2);
    ports_port_ref q, r, s, t, u, v;
    /* q has r's only message, unread, and knows r closed after it. */
    assert_int_equal(ports_node_create_port_pair(N(&h, 0), &q, &r), PORTS_OK);
    ph_write(&h, 0, &r, "last words", NULL, 0);
    close_and_release(&h, 0, &r);
    ph_deliver_all(&h);
    ph_connect(&h, 1, 0, &s, &t);
    assert_int_equal(ports_node_create_port_pair(N(&h, 0), &u, &v), PORTS_OK);

    /*
     * q merges with s: the closure reaches t first (the merged port on node
     * 1 knows the end from q's descriptor) and the message, which q holds
     * until the port there exists, only afterwards.
     */
    assert_int_equal(ports_node_allow_merge(N(&h, 1), &s), PORTS_OK);
    assert_int_equal(ports_node_merge_ports(N(&h, 0), &q, &h.nodes[1].name, &s.name), PORTS_OK);
    while (ph_deliver_one(&h, 0, 1)) {
    }
    while (ph_deliver_one(&h, 1, 0)) {
    }
    assert_true(peer_closed(&h, 0, &t));
    expect_nothing(&h, 0, &t);
    while (ph_deliver_one(&h, 0, 1)) {
    }
    assert_true(ph_pending(&h, 1, 0) > 0); /* the message, on its way to t */

    /* t merges with u; the message lands at t in the middle of it. */
    drain_during_forward drain = {0, 1, 0};
    h.on_forward = drain_link_on_forward;
    h.on_forward_arg = &drain;
    assert_int_equal(ports_node_merge_local_ports(N(&h, 0), &t, &u), PORTS_OK);
    assert_int_equal(drain.trigger, -1);
    h.on_forward = NULL;
    ph_deliver_all(&h);

    /* v, now r's peer, reads the message and then the end. */
    expect_read(&h, 0, &v, "last words");
    expect_peer_closed(&h, 0, &v);
    /* Every proxy on the way is gone: v is all that is left. */
    assert_int_equal(ports_node_port_count(N(&h, 0)), 1);
    assert_int_equal(ports_node_port_count(N(&h, 1)), 0);
    ports_port_ref_release(&q);
    ports_port_ref_release(&s);
    ports_port_ref_release(&t);
    ports_port_ref_release(&u);
    close_and_release(&h, 0, &v);
    ph_deliver_all(&h);
    assert_int_equal(total_ports(&h), 0);
    ph_free(&h);
}

/*
 * A payload whose will_be_routed_externally -- embedder code, run with no
 * lock held as a message is about to leave its node -- tells that node it
 * lost another: what the IO thread can do at that very moment.
 */
typedef struct losing_payload {
    ports_payload base;
    ph_harness *h;
    int node, lost;
    bool told;
} losing_payload;

static int lose_node_on_route_out(ports_payload *payload)
{
    losing_payload *lp = (losing_payload *)payload;
    if (!lp->told) {
        lp->told = true;
        ports_node_lost_connection_to_node(lp->h->nodes[lp->node].node,
                                           &lp->h->nodes[lp->lost].name);
    }
    return 0;
}

static void losing_payload_destroy(ports_payload *payload)
{
    free(payload);
}

static const ports_payload_ops losing_payload_ops = {losing_payload_destroy,
                                                     lose_node_on_route_out};

/*
 * A merge hands one port the peer of the other, on a node that has just
 * died. The loss notice lands while the merge is forwarding what the port
 * held, so the new proxy is cut off and erased under it. The merge must
 * stand rather than put back a port that is no longer there: the merged
 * pipe just ends.
 */
static void test_merge_cut_off_by_a_loss_meanwhile_stands(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 2);
    ports_port_ref x, far, y, w;
    ph_connect(&h, 0, 1, &x, &far);
    assert_int_equal(ports_node_create_port_pair(N(&h, 0), &y, &w), PORTS_OK);
    losing_payload *lp = calloc(1, sizeof(*lp));
    assert_non_null(lp);
    lp->base.ops = &losing_payload_ops;
    lp->h = &h;
    lp->node = 0;
    lp->lost = 1;
    ports_event *ev = ports_user_message_new(0, &lp->base);
    assert_non_null(ev);
    assert_int_equal(ports_node_send_user_message(N(&h, 0), &w, ev), PORTS_OK);
    ph_deliver_all(&h);
    ph_drop_links(&h, 1); /* node 1 dies; node 0 has not heard yet */

    /* y's message, now bound for far's dead node, brings the notice. */
    assert_int_equal(ports_node_merge_local_ports(N(&h, 0), &x, &y), PORTS_OK);
    ph_drop_links(&h, 1);
    ph_deliver_all(&h);

    /* w's peer is now far's route, which died: w sees the end. */
    expect_peer_closed(&h, 0, &w);
    assert_int_equal(ports_node_port_count(N(&h, 0)), 1);
    ports_port_ref_release(&x);
    ports_port_ref_release(&y);
    ports_port_ref_release(&far);
    close_and_release(&h, 0, &w);
    ph_drop_links(&h, 1);
    ph_deliver_all(&h);
    assert_int_equal(ports_node_port_count(N(&h, 0)), 0);
    ph_free(&h);
}

static void test_lost_node_closes_routes_but_keeps_what_arrived(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 2);
    ports_port_ref a, b;
    ph_connect(&h, 0, 1, &a, &b);
    ph_write(&h, 1, &b, "arrived before the crash", NULL, 0);
    ph_deliver_all(&h);
    ph_write(&h, 1, &b, "lost in the crash", NULL, 0);
    ph_drop_links(&h, 1);
    assert_int_equal(ports_node_lost_connection_to_node(N(&h, 0), &h.nodes[1].name), PORTS_OK);
    assert_true(peer_closed(&h, 0, &a));
    expect_read(&h, 0, &a, "arrived before the crash");
    expect_peer_closed(&h, 0, &a);
    close_and_release(&h, 0, &a);
    assert_int_equal(ports_node_port_count(N(&h, 0)), 0);
    ports_port_ref_release(&b);
    ph_free(&h);
}

/*
 * An end travels 0 -> 1 -> 2 and node 1 dies while it is still a proxy: the
 * route through it is broken, so both surviving ends must see peer-closed.
 */
static void test_lost_proxy_node_closes_both_ends(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 3);
    ports_port_ref x0, x1, y1, y2, a, b;
    ph_connect(&h, 0, 1, &x0, &x1);
    ph_connect(&h, 1, 2, &y1, &y2);
    assert_int_equal(ports_node_create_port_pair(N(&h, 0), &a, &b), PORTS_OK);
    ph_write(&h, 0, &x0, "b to node 1", &b.name, 1);
    ph_deliver_all(&h);
    char buf[32];
    ports_name on1, on2;
    assert_true(ph_read(&h, 1, &x1, buf, sizeof(buf), &on1, NULL));
    ph_write(&h, 1, &y1, "b to node 2", &on1, 1);
    /* Deliver only node 1's own events, then node 1 crashes. */
    while (ph_deliver_one(&h, 1, 2) || ph_deliver_one(&h, 1, 0))
        ;
    ph_drop_links(&h, 1);
    assert_true(ph_read(&h, 2, &y2, buf, sizeof(buf), &on2, NULL));
    ports_port_ref b2;
    assert_int_equal(ports_node_get_port(N(&h, 2), &on2, &b2), PORTS_OK);
    ports_node_lost_connection_to_node(N(&h, 0), &h.nodes[1].name);
    ports_node_lost_connection_to_node(N(&h, 2), &h.nodes[1].name);
    for (size_t moved = 1; moved;) {
        moved = 0;
        for (int i = 0; i < 3; i += 2)
            for (int j = 0; j < 3; j += 2)
                while (ph_deliver_one(&h, i, j))
                    moved++;
    }
    expect_peer_closed(&h, 0, &a);
    expect_peer_closed(&h, 2, &b2);
    close_and_release(&h, 0, &a);
    close_and_release(&h, 2, &b2);
    close_and_release(&h, 2, &y2);
    close_and_release(&h, 0, &x0);
    for (size_t moved = 1; moved;) {
        moved = 0;
        for (int i = 0; i < 3; i += 2)
            for (int j = 0; j < 3; j += 2)
                while (ph_deliver_one(&h, i, j))
                    moved++;
    }
    assert_int_equal(ports_node_port_count(N(&h, 0)), 0);
    assert_int_equal(ports_node_port_count(N(&h, 2)), 0);
    ports_port_ref_release(&x1);
    ports_port_ref_release(&y1);
    ports_port_ref_release(&b);
    ph_free(&h);
}

/*
 * A port whose writer's node died holds messages that arrived before the
 * death; the node is told about the loss, then the port is moved, then it is
 * told again (a node controller repeats the notice whenever something is
 * still addressed to the dead node). The repeat must not cut the route short
 * of what the moving port holds: the moved end still reads every message
 * that arrived, then PEER_CLOSED. (Found by the simulator over channels: the
 * buffering proxy closed the route at what it had handed out and dropped the
 * rest, while the moved end had been promised all of it and waited forever.)
 */
static void test_repeated_loss_notice_keeps_what_a_moving_port_holds(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 4);
    ports_port_ref a, b, x1, x2, y0, y3;
    ph_connect(&h, 0, 1, &a, &b);   /* a reads on node 0, b writes on node 1 */
    ph_connect(&h, 1, 2, &x1, &x2); /* carries b to node 2, which will die */
    ph_connect(&h, 0, 3, &y0, &y3); /* carries a to node 3 */
    ph_write(&h, 1, &b, "m1", NULL, 0);
    ph_write(&h, 1, &b, "m2", NULL, 0);
    ph_write(&h, 1, &x1, "b", &b.name, 1);
    ph_deliver_all(&h);
    char buf[32];
    ports_name moved;
    assert_true(ph_read(&h, 2, &x2, buf, sizeof(buf), &moved, NULL));
    ports_port_ref b2;
    assert_int_equal(ports_node_get_port(N(&h, 2), &moved, &b2), PORTS_OK);
    ph_deliver_all(&h); /* the proxy on node 1 goes; a now hears from b2 on node 2 */
    close_and_release(&h, 2, &b2);
    ph_deliver_all(&h); /* a knows its stream ends after m2 */

    ph_drop_links(&h, 2);
    assert_int_equal(ports_node_lost_connection_to_node(N(&h, 0), &h.nodes[2].name), PORTS_OK);
    expect_read(&h, 0, &a, "m1");
    ph_write(&h, 0, &y0, "a", &a.name, 1);
    assert_int_equal(ports_node_lost_connection_to_node(N(&h, 0), &h.nodes[2].name), PORTS_OK);
    ph_deliver_all(&h);

    assert_true(ph_read(&h, 3, &y3, buf, sizeof(buf), &moved, NULL));
    ports_port_ref a3;
    assert_int_equal(ports_node_get_port(N(&h, 3), &moved, &a3), PORTS_OK);
    ph_deliver_all(&h);
    expect_read(&h, 3, &a3, "m2");
    expect_peer_closed(&h, 3, &a3);

    close_and_release(&h, 3, &a3);
    close_and_release(&h, 0, &y0);
    close_and_release(&h, 3, &y3);
    close_and_release(&h, 1, &x1);
    ph_deliver_all(&h);
    /* No proxy is left behind for a stream that ended. */
    assert_int_equal(ports_node_port_count(N(&h, 0)), 0);
    assert_int_equal(ports_node_port_count(N(&h, 3)), 0);
    assert_int_equal(h.bad_peer_results, 0);
    ports_port_ref_release(&a);
    ports_port_ref_release(&b);
    ports_port_ref_release(&x2);
    ph_free(&h);
}

static void test_uninitialized_port_holds_early_events(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 2);
    ports_port_ref u0, u1;
    assert_int_equal(ports_node_create_uninitialized_port(N(&h, 0), &u0), PORTS_OK);
    assert_int_equal(ports_node_create_uninitialized_port(N(&h, 1), &u1), PORTS_OK);
    assert_int_equal(ports_node_initialize_port(N(&h, 1), &u1, &h.nodes[0].name, &u0.name,
                                                &h.nodes[0].name, &u0.name),
                     PORTS_OK);
    ph_write(&h, 1, &u1, "early", NULL, 0);
    ph_deliver_all(&h);
    assert_int_equal(ports_node_initialize_port(N(&h, 0), &u0, &h.nodes[1].name, &u1.name,
                                                &h.nodes[1].name, &u1.name),
                     PORTS_OK);
    expect_read(&h, 0, &u0, "early");
    ports_port_ref_release(&u0);
    ports_port_ref_release(&u1);
    ph_free(&h);
}

static void test_closing_port_closes_ports_in_unread_messages(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 1);
    ports_port_ref a, b, c, d;
    assert_int_equal(ports_node_create_port_pair(N(&h, 0), &a, &b), PORTS_OK);
    assert_int_equal(ports_node_create_port_pair(N(&h, 0), &c, &d), PORTS_OK);
    ph_write(&h, 0, &a, "carrying d", &d.name, 1);
    close_and_release(&h, 0, &b); /* never read */
    ph_deliver_all(&h);
    expect_peer_closed(&h, 0, &c);
    close_and_release(&h, 0, &a);
    close_and_release(&h, 0, &c);
    ph_deliver_all(&h);
    ports_port_ref_release(&d);
    assert_int_equal(ports_node_port_count(N(&h, 0)), 0);
    ph_free(&h);
}

static void test_send_rejects_self_and_peer(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 1);
    ports_port_ref a, b, c, d;
    assert_int_equal(ports_node_create_port_pair(N(&h, 0), &a, &b), PORTS_OK);
    assert_int_equal(ports_node_create_port_pair(N(&h, 0), &c, &d), PORTS_OK);
    ports_event *ev = ph_message("self", 1);
    ev->u.user.ports[0] = a.name;
    assert_int_equal(ports_node_send_user_message(N(&h, 0), &a, ev),
                     PORTS_ERROR_PORT_CANNOT_SEND_SELF);
    ev = ph_message("peer", 1);
    ev->u.user.ports[0] = b.name;
    assert_int_equal(ports_node_send_user_message(N(&h, 0), &a, ev),
                     PORTS_ERROR_PORT_CANNOT_SEND_PEER);
    ev = ph_message("twice", 2);
    ev->u.user.ports[0] = c.name;
    ev->u.user.ports[1] = c.name;
    assert_int_equal(ports_node_send_user_message(N(&h, 0), &a, ev),
                     PORTS_ERROR_PORT_STATE_UNEXPECTED);
    /* The sender survives every refusal. */
    ph_write(&h, 0, &a, "still works", NULL, 0);
    ph_deliver_all(&h);
    expect_read(&h, 0, &b, "still works");
    ports_port_ref_release(&a);
    ports_port_ref_release(&b);
    ports_port_ref_release(&c);
    ports_port_ref_release(&d);
    ph_free(&h);
}

static void test_peer_closed_is_final(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 2);
    ports_port_ref a, b;
    ph_connect(&h, 0, 1, &a, &b);
    ports_name a_name = a.name; /* the genuine sender, forged below */
    close_and_release(&h, 0, &a);
    ph_deliver_all(&h);
    expect_peer_closed(&h, 1, &b);
    /*
     * Neither a later closure promising more nor a message that then turns up
     * (both forged here, in the genuine sender's sequence) revives the pipe.
     */
    ports_event *more = event_to(PORTS_EVENT_OBSERVE_CLOSURE, &b, &a_name, 2);
    more->u.observe_closure.last_sequence_num = 1;
    assert_int_equal(ph_inject(&h, 0, 1, more), PORTS_OK);
    ports_event *late = user_message_to(&b, &a_name, 3, 1);
    assert_int_equal(ph_inject(&h, 0, 1, late), PORTS_OK);
    expect_peer_closed(&h, 1, &b);
    ports_port_status st;
    assert_int_equal(ports_node_get_status(N(&h, 1), &b, &st), PORTS_OK);
    assert_false(st.has_messages);
    assert_true(st.peer_closed);
    close_and_release(&h, 1, &b);
    assert_int_equal(ports_node_port_count(N(&h, 1)), 0);
    ph_free(&h);
}

static void test_destroy_tells_no_one(void **state)
{
    (void)state;
    ph_harness h;
    ph_init(&h, 2);
    ports_port_ref a, b, c, d, e, f;
    ph_connect(&h, 0, 1, &a, &b);
    assert_int_equal(ports_node_create_port_pair(N(&h, 0), &c, &d), PORTS_OK);
    assert_int_equal(ports_node_create_port_pair(N(&h, 0), &e, &f), PORTS_OK);
    ph_write(&h, 0, &c, "carrying f, never read", &f.name, 1);
    ph_deliver_all(&h);
    size_t queued = h.queued;
    ports_port_ref_release(&a);
    ports_port_ref_release(&c);
    ports_port_ref_release(&d);
    ports_port_ref_release(&e);
    ports_port_ref_release(&f);
    /* Teardown frees every port, queued message and carried port silently. */
    ports_node_destroy(N(&h, 0));
    h.nodes[0].node = NULL;
    assert_int_equal(h.queued, queued);
    assert_false(peer_closed(&h, 1, &b));
    ports_port_ref_release(&b);
    ph_free(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_local_pipe_delivers_in_order),
        cmocka_unit_test(test_close_reports_peer_closed_after_last_message),
        cmocka_unit_test(test_empty_read_answer_ends_with_any_change),
        cmocka_unit_test(test_status_seen_carries_user_data_and_status),
        cmocka_unit_test(test_sent_port_proxy_collapses),
        cmocka_unit_test(test_event_from_non_previous_peer_is_held_not_applied),
        cmocka_unit_test(test_replayed_control_sequence_is_bad_peer),
        cmocka_unit_test(test_stale_user_sequence_is_bad_peer),
        cmocka_unit_test(test_out_of_order_flood_is_bounded),
        cmocka_unit_test(test_sequence_gap_beyond_limit_is_bad_peer),
        cmocka_unit_test(test_descriptor_naming_receiving_port_is_rejected),
        cmocka_unit_test(test_descriptor_naming_existing_port_is_bad_peer),
        cmocka_unit_test(test_descriptor_from_forged_referrer_is_bad_peer),
        cmocka_unit_test(test_port_accepted_only_from_destination),
        cmocka_unit_test(test_dead_proxy_notice_only_from_its_node),
        cmocka_unit_test(test_read_ack_for_unsent_message_is_bad_peer),
        cmocka_unit_test(test_read_acks_track_unread_messages),
        cmocka_unit_test(test_merge_local_ports_joins_far_ends),
        cmocka_unit_test(test_merge_of_port_that_sent_is_refused),
        cmocka_unit_test(test_remote_merge_needs_permission),
        cmocka_unit_test(test_merge_racing_last_message_still_closes_the_pipe),
        cmocka_unit_test(test_merge_cut_off_by_a_loss_meanwhile_stands),
        cmocka_unit_test(test_lost_node_closes_routes_but_keeps_what_arrived),
        cmocka_unit_test(test_lost_proxy_node_closes_both_ends),
        cmocka_unit_test(test_repeated_loss_notice_keeps_what_a_moving_port_holds),
        cmocka_unit_test(test_uninitialized_port_holds_early_events),
        cmocka_unit_test(test_closing_port_closes_ports_in_unread_messages),
        cmocka_unit_test(test_send_rejects_self_and_peer),
        cmocka_unit_test(test_peer_closed_is_final),
        cmocka_unit_test(test_destroy_tells_no_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
