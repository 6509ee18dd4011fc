/*
 * plat_block_*: aligned blocks of the size asked for; the block a thread
 * freed last comes back for its next request of about that size (the point:
 * no heap trim and refault per received frame), and never for a request
 * that would waste most of it; blocks freed on other threads, and the block
 * a thread kept when it exits, go back to the heap (the ASan and LSan runs
 * of this test would report a leak or a double free), and key destructors
 * that run after that one can still use blocks.
 */
#include "cmojo_test.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "platform/block.h"

static void test_blocks_are_aligned_and_usable(void **state)
{
    (void)state;
    size_t sizes[] = {1, 16, 1000, 70000, PLAT_BLOCK_CACHE_MAX + 1, 3u << 20};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint8_t *p = plat_block_alloc(sizes[i]);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 16, 0);
        memset(p, (int)i, sizes[i]);
        assert_int_equal(p[sizes[i] - 1], (uint8_t)i);
        plat_block_free(p);
    }
    plat_block_free(NULL);
}

static void test_realloc_keeps_the_bytes(void **state)
{
    (void)state;
    uint8_t *p = plat_block_realloc(NULL, 100);
    assert_non_null(p);
    for (size_t i = 0; i < 100; i++)
        p[i] = (uint8_t)(i * 3);
    p = plat_block_realloc(p, 200000);
    assert_non_null(p);
    for (size_t i = 0; i < 100; i++)
        assert_int_equal(p[i], (uint8_t)(i * 3));
    p[199999] = 7;
    p = plat_block_realloc(p, 50);
    assert_non_null(p);
    for (size_t i = 0; i < 50; i++)
        assert_int_equal(p[i], (uint8_t)(i * 3));
    plat_block_free(p);
}

static void test_the_last_freed_block_comes_back(void **state)
{
    (void)state;
    void *a = plat_block_alloc(70000);
    void *b = plat_block_alloc(70000);
    assert_non_null(a);
    assert_non_null(b);
    plat_block_free(b);
    plat_block_free(a); /* kept; b, kept before it, goes back to the heap */
    void *c = plat_block_alloc(69000);
    assert_ptr_equal(c, a);
    /* Less than half of it: not worth the memory it would pin. */
    plat_block_free(c);
    void *d = plat_block_alloc(30000);
    assert_non_null(d);
    assert_ptr_not_equal(d, a); /* a is still kept: malloc cannot have it */
    void *e = plat_block_alloc(70000);
    assert_ptr_equal(e, a);
    plat_block_free(d);
    plat_block_free(e); /* kept; d goes */
    /* Larger than the kept block: a new one. */
    void *f = plat_block_alloc(80000);
    assert_non_null(f);
    assert_ptr_not_equal(f, e);
    void *g = plat_block_alloc(70000);
    assert_ptr_equal(g, e);
    plat_block_free(f);
    plat_block_free(g);
}

/* Frees the block it is given and one of its own, then exits with the latter kept. */
static void *free_and_exit(void *arg)
{
    plat_block_free(arg);
    void *own = plat_block_alloc(5000);
    if (!own)
        return (void *)1;
    plat_block_free(own);
    return NULL;
}

static void test_other_threads_free_and_exit_cleanly(void **state)
{
    (void)state;
    for (int i = 0; i < 8; i++) {
        void *p = plat_block_alloc(100000);
        assert_non_null(p);
        pthread_t t;
        void *rv = (void *)2;
        assert_int_equal(pthread_create(&t, NULL, free_and_exit, p), 0);
        assert_int_equal(pthread_join(t, &rv), 0);
        assert_null(rv);
    }
}

/*
 * A key destructor that runs after block.c's (a key made later: glibc runs
 * them in the order they were made) still frees and asks for blocks: the
 * block the thread kept was freed by then and must not come back, nor be
 * freed twice (ASan and glibc both catch either).
 */
static pthread_key_t late_key;

static void late_destructor(void *value)
{
    (void)value;
    void *p = plat_block_alloc(5000);
    if (p) {
        memset(p, 1, 5000);
        plat_block_free(p);
    }
}

static void *keep_a_block_and_exit(void *arg)
{
    (void)arg;
    void *p = plat_block_alloc(5000);
    if (!p)
        return (void *)1;
    plat_block_free(p); /* kept until the thread exits */
    pthread_setspecific(late_key, (void *)1);
    return NULL;
}

static void test_destructors_after_exit_are_safe(void **state)
{
    (void)state;
    plat_block_free(plat_block_alloc(10)); /* block.c's key exists before ours */
    assert_int_equal(pthread_key_create(&late_key, late_destructor), 0);
    for (int i = 0; i < 4; i++) {
        pthread_t t;
        void *rv = (void *)2;
        assert_int_equal(pthread_create(&t, NULL, keep_a_block_and_exit, NULL), 0);
        assert_int_equal(pthread_join(t, &rv), 0);
        assert_null(rv);
    }
    assert_int_equal(pthread_key_delete(late_key), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blocks_are_aligned_and_usable),
        cmocka_unit_test(test_realloc_keeps_the_bytes),
        cmocka_unit_test(test_the_last_freed_block_comes_back),
        cmocka_unit_test(test_other_threads_free_and_exit_cleanly),
        cmocka_unit_test(test_destructors_after_exit_are_safe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
