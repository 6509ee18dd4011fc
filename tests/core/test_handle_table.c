/*
 * core_table: values name one occupant (made-up, stale and reused values are
 * refused), busy entries and transits, the unreferenced (message) table's
 * peek, and the lock-free lookups: a pin keeps its object and its slot
 * until it is let go, whoever removes the entry meanwhile, and the table's
 * reference is dropped exactly once, by the last one out. The stress test
 * races pins, lookups and transits against removals and re-adds; its ASan
 * and TSan runs are the ones that would see a use after free or a race.
 */
#include "cmojo_test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "core/handle_table.h"

/* A referenced object: freed when its count drops to zero. */
typedef struct obj {
    atomic_int refs;
    int id;
    _Atomic uint64_t value; /* the value it was added under (the stress tests) */
} obj;

static atomic_int g_made, g_freed;

static obj *obj_new(int id)
{
    obj *o = malloc(sizeof(*o));
    assert_non_null(o);
    atomic_init(&o->refs, 1);
    o->id = id;
    atomic_init(&o->value, 0);
    atomic_fetch_add(&g_made, 1);
    return o;
}

static void obj_acquire(void *p)
{
    atomic_fetch_add(&((obj *)p)->refs, 1);
}

static void obj_release(void *p)
{
    obj *o = p;
    int was = atomic_fetch_sub(&o->refs, 1);
    if (was <= 0)
        abort(); /* released once too often (helper threads cannot use cmocka's asserts) */
    if (was == 1) {
        free(o);
        atomic_fetch_add(&g_freed, 1);
    }
}

/* A lookup that keeps the object: a reference taken while it is pinned. */
static MojoResult lookup_ref(core_table *t, uint64_t value, void **got)
{
    MojoResult rv = core_table_pin(t, value, got);
    if (rv == MOJO_RESULT_OK) {
        obj_acquire(*got);
        core_table_unpin(t, value);
    }
    return rv;
}

/* Adds o and checks it took old's slot under a new generation; its value. */
static uint64_t add_into_freed_slot(core_table *t, obj *o, uint64_t old)
{
    uint64_t v;
    assert_int_equal(core_table_add(t, o, &v), MOJO_RESULT_OK);
    assert_int_equal(v & 0xffffffffu, old & 0xffffffffu);
    assert_int_not_equal(v, old);
    return v;
}

static int refs_of(obj *o)
{
    return atomic_load(&o->refs);
}

static int setup(void **state)
{
    core_table *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    assert_int_equal(core_table_init(t, 4 * CORE_TABLE_CHUNK_SLOTS, obj_acquire, obj_release), 0);
    atomic_store(&g_made, 0);
    atomic_store(&g_freed, 0);
    *state = t;
    return 0;
}

/* Every object the test made has been freed once, and the table is empty. */
static int teardown(void **state)
{
    core_table *t = *state;
    assert_int_equal(core_table_count(t), 0);
    assert_int_equal(atomic_load(&g_freed), atomic_load(&g_made));
    core_table_destroy(t);
    free(t);
    return 0;
}

static void test_values_name_one_occupant(void **state)
{
    core_table *t = *state;
    obj *a = obj_new(1);
    uint64_t va;
    assert_int_equal(core_table_add(t, a, &va), MOJO_RESULT_OK);
    assert_int_not_equal(va, 0);
    assert_int_equal(core_table_count(t), 1);

    void *got;
    assert_int_equal(lookup_ref(t, va, &got), MOJO_RESULT_OK);
    assert_ptr_equal(got, a);
    assert_int_equal(refs_of(a), 2);
    obj_release(a);

    /* Made up: no slot, slot 0, a slot never handed out, the wrong generation. */
    assert_int_equal(lookup_ref(t, 0, &got), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(lookup_ref(t, va & 0xffffffff00000000u, &got), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(lookup_ref(t, va + 1, &got), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(lookup_ref(t, va + ((uint64_t)1 << 32), &got), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(core_table_pin(t, va + ((uint64_t)1 << 32), &got),
                     MOJO_RESULT_INVALID_ARGUMENT);

    /* Removal hands the table's reference over; a second removal fails. */
    assert_int_equal(core_table_remove(t, va, &got), MOJO_RESULT_OK);
    assert_ptr_equal(got, a);
    assert_int_equal(refs_of(a), 1);
    assert_int_equal(core_table_remove(t, va, &got), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(core_table_count(t), 0);

    /* The slot comes back under a new generation: the old value stays dead. */
    obj *b = obj_new(2);
    uint64_t vb = add_into_freed_slot(t, b, va);
    assert_int_equal(lookup_ref(t, va, &got), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(core_table_remove(t, vb, &got), MOJO_RESULT_OK);
    obj_release(a);
    obj_release(b);
}

static void test_a_pin_outlives_the_removal(void **state)
{
    core_table *t = *state;
    obj *a = obj_new(1);
    uint64_t va;
    assert_int_equal(core_table_add(t, a, &va), MOJO_RESULT_OK);
    void *pinned, *got;
    assert_int_equal(core_table_pin(t, va, &pinned), MOJO_RESULT_OK);
    assert_ptr_equal(pinned, a);
    assert_int_equal(refs_of(a), 1);                               /* a pin takes no reference */
    assert_int_equal(core_table_pin(t, va, &got), MOJO_RESULT_OK); /* pins stack */

    /* Removed while pinned: the remover has a reference, so has the table still. */
    assert_int_equal(core_table_remove(t, va, &got), MOJO_RESULT_OK);
    assert_ptr_equal(got, a);
    assert_int_equal(refs_of(a), 2);
    assert_int_equal(lookup_ref(t, va, &got), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(core_table_pin(t, va, &got), MOJO_RESULT_INVALID_ARGUMENT);
    obj_release(a); /* the remover is done with it */
    assert_int_equal(refs_of(a), 1);
    assert_int_equal(((obj *)pinned)->id, 1); /* still there for the pinners */

    /* The pinned slot is not reused. */
    obj *b = obj_new(2);
    uint64_t vb;
    assert_int_equal(core_table_add(t, b, &vb), MOJO_RESULT_OK);
    assert_int_not_equal(vb & 0xffffffffu, va & 0xffffffffu);

    assert_int_equal(core_table_count(t), 1); /* b: a removed entry counts no more */
    core_table_unpin(t, va);
    assert_int_equal(atomic_load(&g_freed), 0);
    core_table_unpin(t, va); /* the last one out drops the table's reference */
    assert_int_equal(atomic_load(&g_freed), 1);
    assert_int_equal(core_table_count(t), 1);

    /* Now the slot is free again, under a new generation. */
    obj *c = obj_new(3);
    uint64_t vc = add_into_freed_slot(t, c, va);
    assert_int_equal(core_table_remove(t, vb, &got), MOJO_RESULT_OK);
    obj_release(got);
    assert_int_equal(core_table_remove(t, vc, &got), MOJO_RESULT_OK);
    obj_release(got);
}

/*
 * Every push and pop of the free list changes its tag: what keeps a pop that
 * was overtaken (its slot taken, used and given back meanwhile) from
 * succeeding. No test can force that interleaving, so check the tag itself.
 */
static void test_the_free_list_tags_every_change(void **state)
{
    core_table *t = *state;
    obj *a = obj_new(1);
    uint64_t va, vb;
    void *got;
    assert_int_equal(core_table_add(t, a, &va), MOJO_RESULT_OK); /* grows: no pop */
    uint64_t tag0 = atomic_load(&t->free_top) >> 32;
    assert_int_equal(core_table_remove(t, va, &got), MOJO_RESULT_OK); /* a push */
    assert_int_equal(atomic_load(&t->free_top) >> 32, tag0 + 1);
    assert_int_equal(core_table_add(t, a, &vb), MOJO_RESULT_OK); /* a pop, same slot */
    assert_int_equal(atomic_load(&t->free_top) >> 32, tag0 + 2);
    assert_int_equal(vb & 0xffffffffu, va & 0xffffffffu);
    assert_int_equal(core_table_remove(t, vb, &got), MOJO_RESULT_OK);
    obj_release(got);
}

static MojoResult refuse_id_7(void *o)
{
    return ((obj *)o)->id == 7 ? MOJO_RESULT_FAILED_PRECONDITION : MOJO_RESULT_OK;
}

static void test_transits_are_all_or_nothing(void **state)
{
    core_table *t = *state;
    obj *o[3] = {obj_new(1), obj_new(2), obj_new(7)};
    uint64_t v[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(core_table_add(t, o[i], &v[i]), MOJO_RESULT_OK);
    void *objs[4], *got;

    /* A dead value, a value listed twice, a refused object: nothing is marked. */
    uint64_t dead[2] = {v[0], v[1] + ((uint64_t)1 << 32)};
    assert_int_equal(core_table_begin_transit(t, dead, 2, NULL, objs),
                     MOJO_RESULT_INVALID_ARGUMENT);
    uint64_t twice[3] = {v[0], v[1], v[0]};
    assert_int_equal(core_table_begin_transit(t, twice, 3, NULL, objs), MOJO_RESULT_BUSY);
    assert_int_equal(core_table_begin_transit(t, v, 3, refuse_id_7, objs),
                     MOJO_RESULT_FAILED_PRECONDITION);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(lookup_ref(t, v[i], &got), MOJO_RESULT_OK);
        obj_release(got);
        assert_int_equal(refs_of(o[i]), 1);
    }

    /* Busy: no lookup, pin or removal; cancelled: usable again. */
    assert_int_equal(core_table_begin_transit(t, v, 2, refuse_id_7, objs), MOJO_RESULT_OK);
    assert_ptr_equal(objs[0], o[0]);
    assert_ptr_equal(objs[1], o[1]);
    assert_int_equal(refs_of(o[0]), 2);
    assert_int_equal(lookup_ref(t, v[0], &got), MOJO_RESULT_BUSY);
    assert_int_equal(core_table_pin(t, v[1], &got), MOJO_RESULT_BUSY);
    assert_int_equal(core_table_remove(t, v[0], &got), MOJO_RESULT_BUSY);
    core_table_cancel_transit(t, v, 2);
    assert_int_equal(core_table_pin(t, v[1], &got), MOJO_RESULT_OK);
    core_table_unpin(t, v[1]);
    obj_release(o[0]);
    obj_release(o[1]);

    /* Completed: the entries are gone, the transit's references remain. */
    assert_int_equal(core_table_begin_transit(t, v, 2, NULL, objs), MOJO_RESULT_OK);
    core_table_complete_transit(t, v, 2);
    assert_int_equal(core_table_count(t), 1);
    assert_int_equal(refs_of(o[0]), 1);
    assert_int_equal(lookup_ref(t, v[0], &got), MOJO_RESULT_INVALID_ARGUMENT);
    obj_release(o[0]);
    obj_release(o[1]);

    /* Shutdown takes busy entries too. */
    assert_int_equal(core_table_begin_transit(t, &v[2], 1, NULL, objs), MOJO_RESULT_OK);
    uint64_t value;
    assert_int_equal(core_table_take_any(t, &value, &got), 1);
    assert_int_equal(value, v[2]);
    assert_int_equal(core_table_take_any(t, &value, &got), 0);
    core_table_complete_transit(t, &v[2], 1); /* gone meanwhile: nothing happens */
    core_table_cancel_transit(t, &v[2], 1);
    assert_int_equal(refs_of(o[2]), 2);
    obj_release(o[2]);
    obj_release(o[2]);
}

static void test_the_message_table_takes_no_references(void **state)
{
    (void)state;
    core_table m;
    assert_int_equal(core_table_init(&m, 10, NULL, NULL), 0);
    int a = 1, b = 2;
    uint64_t va, vb;
    assert_int_equal(core_table_add(&m, &a, &va), MOJO_RESULT_OK);
    assert_int_equal(core_table_add(&m, &b, &vb), MOJO_RESULT_OK);
    void *got;
    assert_int_equal(core_table_peek(&m, va, &got), MOJO_RESULT_OK);
    assert_ptr_equal(got, &a);
    assert_int_equal(core_table_peek(&m, vb + ((uint64_t)1 << 32), &got),
                     MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(core_table_peek(&m, 0, &got), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(core_table_remove(&m, va, &got), MOJO_RESULT_OK);
    assert_ptr_equal(got, &a);
    assert_int_equal(core_table_peek(&m, va, &got), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(core_table_remove(&m, va, &got), MOJO_RESULT_INVALID_ARGUMENT);
    assert_int_equal(core_table_count(&m), 1);
    uint64_t value;
    assert_int_equal(core_table_take_any(&m, &value, &got), 1);
    assert_int_equal(value, vb);
    assert_int_equal(core_table_count(&m), 0);
    core_table_destroy(&m);
}

/* ------------------------------------------------------------- stress */

#define STRESS_SLOTS 4
#define STRESS_USERS 2
#define STRESS_REMOVERS 2
#define STRESS_ROUNDS 20000

typedef struct stress {
    core_table *t;
    _Atomic uint64_t values[STRESS_SLOTS]; /* what each shared slot holds now */
    atomic_int stop;
    atomic_long uses;
    atomic_long removed, added;
    atomic_long wrong; /* lookups that found another value's object */
} stress;

/*
 * Adds a new object under slot i's value. The object records its value
 * before anyone can look it up, so a lookup can tell it got the right one.
 */
static void stress_add(stress *s, int i, int id)
{
    obj *o = obj_new(id);
    uint64_t v;
    if (core_table_add(s->t, o, &v) != MOJO_RESULT_OK)
        abort();
    atomic_store(&o->value, v);
    atomic_store(&s->values[i], v);
    atomic_fetch_add(&s->added, 1);
}

/* Reads the object (ASan fails the test here if it was freed) and checks it is v's. */
static void use(stress *s, void *got, uint64_t v)
{
    if (atomic_load(&((obj *)got)->value) != v)
        atomic_fetch_add(&s->wrong, 1);
    atomic_fetch_add(&s->uses, 1);
}

/* Pins, lookups and one-entry transits of whatever values are current. */
static void *stress_user(void *arg)
{
    stress *s = arg;
    unsigned r = (unsigned)(uintptr_t)&r;
    while (!atomic_load(&s->stop)) {
        r = r * 1103515245u + 12345u;
        uint64_t v = atomic_load(&s->values[(r >> 8) % STRESS_SLOTS]);
        void *got;
        switch ((r >> 16) % 4) {
        case 0:
            if (core_table_pin(s->t, v, &got) == MOJO_RESULT_OK) {
                use(s, got, v);
                core_table_unpin(s->t, v);
            }
            break;
        case 1:
            if (lookup_ref(s->t, v, &got) == MOJO_RESULT_OK) {
                use(s, got, v);
                obj_release(got);
            }
            break;
        case 2:
            /* Pinned across a removal by another thread, and removed while pinned. */
            if (core_table_pin(s->t, v, &got) == MOJO_RESULT_OK) {
                void *removed;
                if (core_table_remove(s->t, v, &removed) == MOJO_RESULT_OK) {
                    if (removed != got)
                        atomic_fetch_add(&s->wrong, 1);
                    atomic_fetch_add(&s->removed, 1);
                    obj_release(removed);
                }
                use(s, got, v);
                core_table_unpin(s->t, v);
            }
            break;
        default:
            if (core_table_begin_transit(s->t, &v, 1, NULL, &got) == MOJO_RESULT_OK) {
                use(s, got, v);
                core_table_cancel_transit(s->t, &v, 1);
                obj_release(got);
            }
            break;
        }
    }
    return NULL;
}

/* Removes and replaces the shared entries; two of these race for each removal. */
static void *stress_remover(void *arg)
{
    stress *s = arg;
    for (int round = 0; round < STRESS_ROUNDS; round++) {
        int i = round % STRESS_SLOTS;
        uint64_t v = atomic_load(&s->values[i]);
        void *got;
        if (core_table_remove(s->t, v, &got) == MOJO_RESULT_OK) {
            atomic_fetch_add(&s->removed, 1);
            use(s, got, v);
            obj_release(got);
        }
        /* Whoever sees the slot's value dead puts a new one there. */
        MojoResult rv = lookup_ref(s->t, atomic_load(&s->values[i]), &got);
        if (rv == MOJO_RESULT_OK)
            obj_release(got);
        else if (rv == MOJO_RESULT_INVALID_ARGUMENT &&
                 atomic_compare_exchange_strong(&s->values[i], &v, 0))
            stress_add(s, i, round);
    }
    return NULL;
}

static void test_lookups_race_removals(void **state)
{
    stress s = {.t = *state};
    for (int i = 0; i < STRESS_SLOTS; i++)
        stress_add(&s, i, i);
    pthread_t users[STRESS_USERS], removers[STRESS_REMOVERS];
    for (int i = 0; i < STRESS_USERS; i++)
        assert_int_equal(pthread_create(&users[i], NULL, stress_user, &s), 0);
    for (int i = 0; i < STRESS_REMOVERS; i++)
        assert_int_equal(pthread_create(&removers[i], NULL, stress_remover, &s), 0);
    for (int i = 0; i < STRESS_REMOVERS; i++)
        assert_int_equal(pthread_join(removers[i], NULL), 0);
    atomic_store(&s.stop, 1);
    for (int i = 0; i < STRESS_USERS; i++)
        assert_int_equal(pthread_join(users[i], NULL), 0);

    assert_int_equal(atomic_load(&s.wrong), 0);
    assert_true(atomic_load(&s.uses) > 0);
    assert_true(atomic_load(&s.removed) > STRESS_ROUNDS / 2);
    /* Every entry was removed once (one winner each) or is still there. */
    size_t left = core_table_count(s.t);
    assert_int_equal(atomic_load(&s.added) - atomic_load(&s.removed), (long)left);
    uint64_t value;
    void *got;
    while (core_table_take_any(s.t, &value, &got))
        obj_release(got);
    /* teardown: every object freed exactly once, nothing left. */
}

/*
 * Threads fill the table past its first chunk and empty it again, round
 * after round, all at once: the free list and the growth are shared. Every
 * entry must be found as its own object (two adds given the same slot and
 * generation would find each other's).
 */
#define FILL_THREADS 3
#define FILL_ENTRIES ((int)CORE_TABLE_CHUNK_SLOTS + 400) /* each thread alone fills a chunk */
#define FILL_ROUNDS 5

typedef struct filler {
    core_table *t;
    int id;
    atomic_long *wrong;
} filler;

static void *fill_and_empty(void *arg)
{
    filler *f = arg;
    static _Thread_local uint64_t values[FILL_ENTRIES];
    static _Thread_local obj *objs[FILL_ENTRIES];
    for (int round = 0; round < FILL_ROUNDS; round++) {
        for (int i = 0; i < FILL_ENTRIES; i++) {
            objs[i] = obj_new(f->id);
            if (core_table_add(f->t, objs[i], &values[i]) != MOJO_RESULT_OK)
                abort();
        }
        for (int i = 0; i < FILL_ENTRIES; i++) {
            void *got;
            if (core_table_pin(f->t, values[i], &got) != MOJO_RESULT_OK || got != objs[i])
                atomic_fetch_add(f->wrong, 1);
            else
                core_table_unpin(f->t, values[i]);
        }
        for (int i = 0; i < FILL_ENTRIES; i++) {
            void *got;
            if (core_table_remove(f->t, values[i], &got) != MOJO_RESULT_OK || got != objs[i])
                atomic_fetch_add(f->wrong, 1);
            else
                obj_release(got); /* obj_new's, which the table had */
        }
    }
    return NULL;
}

static void test_threads_fill_and_empty_the_table(void **state)
{
    core_table *t = *state;
    atomic_long wrong = 0;
    filler f[FILL_THREADS];
    pthread_t th[FILL_THREADS];
    for (int i = 0; i < FILL_THREADS; i++) {
        f[i] = (filler){.t = t, .id = i, .wrong = &wrong};
        assert_int_equal(pthread_create(&th[i], NULL, fill_and_empty, &f[i]), 0);
    }
    for (int i = 0; i < FILL_THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(atomic_load(&wrong), 0);
    assert_true(atomic_load(&t->num_slots) >= (uint32_t)FILL_ENTRIES); /* past the first chunk */
    assert_true(atomic_load(&t->num_slots) <= FILL_THREADS * FILL_ENTRIES);
}

/*
 * The message table: one thread destroys and makes entries in one slot
 * while others look up current and stale values. A lookup finds the
 * object of the value it asked for or nothing, never the next occupant's.
 * (Objects are never freed here, so a late look at one is safe.)
 */
#define PEEK_ROUNDS 100000

typedef struct peek_stress {
    core_table t;
    obj *pool; /* PEEK_ROUNDS objects, one per entry ever made */
    _Atomic uint64_t current, stale;
    atomic_int stop;
    atomic_long found, wrong;
} peek_stress;

static void *peeker(void *arg)
{
    peek_stress *p = arg;
    unsigned r = 0;
    while (!atomic_load(&p->stop)) {
        uint64_t v = atomic_load(++r % 2 ? &p->current : &p->stale);
        void *got;
        if (core_table_peek(&p->t, v, &got) == MOJO_RESULT_OK) {
            if (got == NULL || atomic_load(&((obj *)got)->value) != v)
                atomic_fetch_add(&p->wrong, 1);
            atomic_fetch_add(&p->found, 1);
        }
    }
    return NULL;
}

static void test_message_lookups_never_alias(void **state)
{
    (void)state;
    peek_stress p = {0};
    assert_int_equal(core_table_init(&p.t, 10, NULL, NULL), 0);
    p.pool = calloc(PEEK_ROUNDS, sizeof(*p.pool));
    assert_non_null(p.pool);
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, peeker, &p), 0);
    for (int round = 0; round < PEEK_ROUNDS; round++) {
        uint64_t v;
        obj *o = &p.pool[round];
        assert_int_equal(core_table_add(&p.t, o, &v), MOJO_RESULT_OK);
        atomic_store(&o->value, v);
        atomic_store(&p.current, v);
        void *got;
        assert_int_equal(core_table_remove(&p.t, v, &got), MOJO_RESULT_OK);
        assert_ptr_equal(got, o);
        atomic_store(&p.stale, v);
    }
    atomic_store(&p.stop, 1);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(atomic_load(&p.wrong), 0);
    assert_int_equal(core_table_count(&p.t), 0);
    core_table_destroy(&p.t);
    free(p.pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_values_name_one_occupant, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_pin_outlives_the_removal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_the_free_list_tags_every_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transits_are_all_or_nothing, setup, teardown),
        cmocka_unit_test(test_the_message_table_takes_no_references),
        cmocka_unit_test_setup_teardown(test_lookups_race_removals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads_fill_and_empty_the_table, setup, teardown),
        cmocka_unit_test(test_message_lookups_never_alias),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
