/*
 * plat_block_*: aligned blocks of the size asked for; the two blocks a
 * thread freed last come back for its next requests of about their sizes
 * (the point: no heap trim and refault per received frame, no heap lock per
 * large message), and never for a request that would waste most of one;
 * small blocks are not kept; kept blocks are poisoned for ASan; blocks
 * freed on other threads, and the blocks a thread kept when it exits, go
 * back to the heap (the ASan and LSan runs of this test would report a leak
 * or a double free), and key destructors that run after that one can still
 * use blocks.
 */
#include "cmojo_test.h"

#include <pthread.h>
#include <stdbool.h>
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

/*
 * Whether p is a kept block handed out again: those keep their own size,
 * which is not what was asked for here; a new block has the size asked for.
 */
static bool reused(void *p, size_t asked)
{
    return plat_block_size(p) != asked;
}

static void test_the_last_freed_blocks_come_back(void **state)
{
    (void)state;
    void *a = plat_block_alloc(70000);
    void *b = plat_block_alloc(5000);
    void *c = plat_block_alloc(70000);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    plat_block_free(c);
    plat_block_free(b);
    plat_block_free(a); /* kept with b; c, the oldest, goes back to the heap */
    /* Each request gets the kept block that fits it. */
    void *d = plat_block_alloc(4500);
    assert_true(reused(d, 4500));
    assert_ptr_equal(d, b);
    void *e = plat_block_alloc(69000);
    assert_true(reused(e, 69000));
    assert_ptr_equal(e, a);
    /* Less than half of a kept block: not worth the memory it would pin. */
    plat_block_free(e);
    void *f = plat_block_alloc(30000);
    assert_false(reused(f, 30000));
    /* Larger than the kept block: a new one. */
    void *g = plat_block_alloc(80000);
    assert_false(reused(g, 80000));
    void *h = plat_block_alloc(69000);
    assert_true(reused(h, 69000));
    assert_ptr_equal(h, a);
    plat_block_free(d);
    plat_block_free(f);
    plat_block_free(g);
    plat_block_free(h);
}

static void test_small_blocks_are_not_kept(void **state)
{
    (void)state;
    /* Two large blocks kept, then a small one freed. */
    void *a = plat_block_alloc(70000);
    void *b = plat_block_alloc(71000);
    _Static_assert(100 < PLAT_BLOCK_KEEP_MIN, "100 bytes is a small block");
    void *small = plat_block_alloc(100);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(small);
    plat_block_free(a);
    plat_block_free(b);
    plat_block_free(small); /* straight back to the heap: both large ones stay kept */
    void *c = plat_block_alloc(69000);
    void *d = plat_block_alloc(69000);
    assert_true(reused(c, 69000));
    assert_true(reused(d, 69000));
    plat_block_free(c);
    plat_block_free(d);
}

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif

#ifdef TEST_ASAN
#include <sanitizer/asan_interface.h>
#endif

/* Under ASan a kept block is poisoned, so a use after free of it is still caught. */
static void test_kept_blocks_are_poisoned(void **state)
{
    (void)state;
#ifdef TEST_ASAN
    uint8_t *a = plat_block_alloc(8000);
    assert_non_null(a);
    assert_false(__asan_address_is_poisoned(a + 4000));
    plat_block_free(a);
    assert_true(__asan_address_is_poisoned(a));
    assert_true(__asan_address_is_poisoned(a + 7999));
    uint8_t *b = plat_block_alloc(8000);
    assert_ptr_equal(b, a);
    assert_false(__asan_address_is_poisoned(b + 7999));
    plat_block_free(b);
#else
    skip();
#endif
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
        cmocka_unit_test(test_the_last_freed_blocks_come_back),
        cmocka_unit_test(test_small_blocks_are_not_kept),
        cmocka_unit_test(test_kept_blocks_are_poisoned),
        cmocka_unit_test(test_other_threads_free_and_exit_cleanly),
        cmocka_unit_test(test_destructors_after_exit_are_safe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
