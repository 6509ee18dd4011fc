/*
 * The ports layer under real concurrency: several threads send, read, close
 * and move ports on the same nodes while two pump threads deliver events in
 * whatever order they race to. Correctness here is the same as everywhere
 * (exactly once, in order, nothing left behind); the TSan build checks the
 * locking that makes it so.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ports/ports.h"
#include "ports_harness.h"

enum { WRITERS = 3, PER_WRITER = 1500, PUMPS = 2 };

typedef struct world {
    ph_harness h;
    atomic_bool stop;
    ports_port_ref a, b;
    atomic_int writers_done;
} world;

static void *pump(void *arg)
{
    world *w = arg;
    while (!atomic_load(&w->stop)) {
        bool moved = false;
        for (int i = 0; i < w->h.n; i++)
            for (int j = 0; j < w->h.n; j++)
                moved |= ph_deliver_one(&w->h, i, j);
        if (!moved)
            sched_yield();
    }
    return NULL;
}

typedef struct writer_arg {
    world *w;
    int id;
} writer_arg;

static void *writer(void *arg)
{
    writer_arg *wa = arg;
    char text[32];
    for (int i = 0; i < PER_WRITER; i++) {
        snprintf(text, sizeof(text), "%d:%d", wa->id, i);
        ph_write(&wa->w->h, 0, &wa->w->a, text, NULL, 0);
    }
    atomic_fetch_add(&wa->w->writers_done, 1);
    return NULL;
}

static void start_pumps(world *w, pthread_t *pumps)
{
    atomic_store(&w->stop, false);
    for (int i = 0; i < PUMPS; i++)
        assert_int_equal(pthread_create(&pumps[i], NULL, pump, w), 0);
}

static void stop_pumps(world *w, pthread_t *pumps)
{
    atomic_store(&w->stop, true);
    for (int i = 0; i < PUMPS; i++)
        pthread_join(pumps[i], NULL);
    ph_deliver_all(&w->h);
}

/* Concurrent writers on one port, a concurrent reader on its remote peer. */
static void test_concurrent_writers_keep_per_writer_order(void **state)
{
    (void)state;
    world *w = calloc(1, sizeof(*w));
    ph_init(&w->h, 2);
    ph_connect(&w->h, 0, 1, &w->a, &w->b);
    pthread_t pumps[PUMPS], writers[WRITERS];
    writer_arg args[WRITERS];
    start_pumps(w, pumps);
    for (int i = 0; i < WRITERS; i++) {
        args[i] = (writer_arg){w, i};
        assert_int_equal(pthread_create(&writers[i], NULL, writer, &args[i]), 0);
    }
    int next[WRITERS] = {0};
    int total = 0;
    while (total < WRITERS * PER_WRITER) {
        char buf[32];
        if (!ph_read(&w->h, 1, &w->b, buf, sizeof(buf), NULL, NULL)) {
            /* Nothing yet; a cut-off route would mean waiting forever. */
            assert_int_equal(w->h.bad_peer_results, 0);
            sched_yield();
            continue;
        }
        int id, seq;
        assert_int_equal(sscanf(buf, "%d:%d", &id, &seq), 2);
        assert_true(id >= 0 && id < WRITERS);
        assert_int_equal(seq, next[id]); /* each writer's messages in its order */
        next[id]++;
        total++;
    }
    for (int i = 0; i < WRITERS; i++)
        pthread_join(writers[i], NULL);
    stop_pumps(w, pumps);
    assert_int_equal(w->h.bad_peer_results, 0);
    assert_int_equal(ports_node_close_port(w->h.nodes[0].node, &w->a), PORTS_OK);
    assert_int_equal(ports_node_close_port(w->h.nodes[1].node, &w->b), PORTS_OK);
    ph_deliver_all(&w->h);
    assert_int_equal(ports_node_port_count(w->h.nodes[0].node), 0);
    assert_int_equal(ports_node_port_count(w->h.nodes[1].node), 0);
    ports_port_ref_release(&w->a);
    ports_port_ref_release(&w->b);
    ph_free(&w->h);
    free(w);
}

/* Threads that race close against send, read and transfer on shared ports. */
typedef struct race {
    world *w;
    ports_port_ref pipes[2][2]; /* [pipe][end]: pipe 0 spans nodes 0-1, pipe 1 is on 0 */
    atomic_int reads;
    atomic_int sent; /* sends that returned PORTS_OK */
} race;

static void *race_sender(void *arg)
{
    race *r = arg;
    for (int i = 0; i < 200; i++) {
        ports_event *ev = ph_message("x", 0);
        int rv = ports_node_send_user_message(r->w->h.nodes[0].node, &r->pipes[0][0], ev);
        /* Either it went, or the close won the race: never anything else. */
        assert_true(rv == PORTS_OK || rv == PORTS_ERROR_PORT_STATE_UNEXPECTED ||
                    rv == PORTS_ERROR_PORT_PEER_CLOSED);
        if (rv == PORTS_OK)
            atomic_fetch_add(&r->sent, 1);
    }
    return NULL;
}

/* Closes the ports a read message carried (so nothing is stranded). */
static void close_carried(ports_node *node, ports_event *ev)
{
    for (uint32_t i = 0; i < ev->u.user.num_ports; i++) {
        ports_port_ref moved;
        if (ports_node_get_port(node, &ev->u.user.ports[i], &moved) == PORTS_OK) {
            ports_node_close_port(node, &moved);
            ports_port_ref_release(&moved);
        }
    }
    ports_event_destroy(ev);
}

static void *race_reader(void *arg)
{
    race *r = arg;
    for (int i = 0; i < 400; i++) {
        ports_event *ev = NULL;
        int rv = ports_node_get_message(r->w->h.nodes[1].node, &r->pipes[0][1], &ev);
        assert_true(rv == PORTS_OK || rv == PORTS_ERROR_PORT_STATE_UNEXPECTED ||
                    rv == PORTS_ERROR_PORT_PEER_CLOSED);
        if (ev) {
            atomic_fetch_add(&r->reads, 1);
            close_carried(r->w->h.nodes[1].node, ev);
        }
    }
    return NULL;
}

static void *race_closer(void *arg)
{
    race *r = arg;
    sched_yield();
    int rv = ports_node_close_port(r->w->h.nodes[0].node, &r->pipes[0][0]);
    assert_true(rv == PORTS_OK || rv == PORTS_ERROR_PORT_STATE_UNEXPECTED);
    return NULL;
}

static void *race_mover(void *arg)
{
    race *r = arg;
    /* Moves pipe 1's end to node 1 inside a message on pipe 0. */
    ports_event *ev = ph_message("carrying", 1);
    ev->u.user.ports[0] = r->pipes[1][1].name;
    int rv = ports_node_send_user_message(r->w->h.nodes[0].node, &r->pipes[0][0], ev);
    assert_true(rv == PORTS_OK || rv == PORTS_ERROR_PORT_STATE_UNEXPECTED ||
                rv == PORTS_ERROR_PORT_PEER_CLOSED);
    if (rv == PORTS_OK)
        atomic_fetch_add(&r->sent, 1);
    return NULL;
}

static void test_close_races_send_read_and_move(void **state)
{
    (void)state;
    for (int round = 0; round < 30; round++) {
        world *w = calloc(1, sizeof(*w));
        ph_init(&w->h, 2);
        race r = {.w = w};
        ph_connect(&w->h, 0, 1, &r.pipes[0][0], &r.pipes[0][1]);
        ph_connect(&w->h, 0, 0, &r.pipes[1][0], &r.pipes[1][1]);
        pthread_t pumps[PUMPS], t[4];
        start_pumps(w, pumps);
        assert_int_equal(pthread_create(&t[0], NULL, race_sender, &r), 0);
        assert_int_equal(pthread_create(&t[1], NULL, race_reader, &r), 0);
        assert_int_equal(pthread_create(&t[2], NULL, race_mover, &r), 0);
        assert_int_equal(pthread_create(&t[3], NULL, race_closer, &r), 0);
        for (int i = 0; i < 4; i++)
            pthread_join(t[i], NULL);
        stop_pumps(w, pumps);
        assert_int_equal(w->h.bad_peer_results, 0);

        /*
         * Drain what is left: every message whose send succeeded (the close
         * lost that race) arrived exactly once, and then the reader sees the
         * close.
         */
        ports_event *ev;
        int drained = 0;
        while (ports_node_get_message(w->h.nodes[1].node, &r.pipes[0][1], &ev) == PORTS_OK && ev) {
            close_carried(w->h.nodes[1].node, ev);
            drained++;
        }
        assert_int_equal(atomic_load(&r.reads) + drained, atomic_load(&r.sent));
        assert_int_equal(ports_node_get_message(w->h.nodes[1].node, &r.pipes[0][1], &ev),
                         PORTS_ERROR_PORT_PEER_CLOSED);
        for (int p = 0; p < 2; p++)
            for (int e = 0; e < 2; e++) {
                int node = p == 0 && e == 1 ? 1 : 0;
                ports_node_close_port(w->h.nodes[node].node, &r.pipes[p][e]);
                ports_port_ref_release(&r.pipes[p][e]);
            }
        ph_deliver_all(&w->h);
        assert_int_equal(ports_node_port_count(w->h.nodes[0].node), 0);
        assert_int_equal(ports_node_port_count(w->h.nodes[1].node), 0);
        ph_free(&w->h);
        free(w);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_writers_keep_per_writer_order),
        cmocka_unit_test(test_close_races_send_read_and_move),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
