/*
 * The ports protocol, one behaviour per test, driven by hand through
 * ports_harness so each test controls exactly which events move when.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
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
    /* Writing to a closed peer fails, and the cargo is closed with it. */
    ports_event *ev = ph_message("late", 0);
    assert_int_equal(ports_node_send_user_message(N(&h, 1), &b, ev),
                     PORTS_ERROR_PORT_PEER_CLOSED);
    close_and_release(&h, 1, &b);
    ph_deliver_all(&h);
    assert_int_equal(total_ports(&h), 0);
    ph_free(&h);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_local_pipe_delivers_in_order),
        cmocka_unit_test(test_close_reports_peer_closed_after_last_message),
        cmocka_unit_test(test_sent_port_proxy_collapses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
