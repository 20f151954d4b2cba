/*
 * Unit tests for worker/hd_lwsalloc.c, lws' allocator: a handshake's
 * header table ("ah struct", "ah data") comes from a pool outside the
 * heap and goes back to it; everything else, and whatever does not fit
 * the pool, is the heap's as with lws' own allocator; an idle pool gives
 * its pages back.
 */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hd_lwsalloc.h"

static void
teardown(void)
{
    ck_assert_uint_eq(hd_lwsalloc_in_use(), 0);
    hd_lwsalloc_shutdown();
}

START_TEST(header_tables_come_from_the_pool_and_go_back)
{
    char *s = hd_lwsalloc_realloc(NULL, 976, "ah struct");
    char *d = hd_lwsalloc_realloc(NULL, 4096, "ah data");
    char *w = hd_lwsalloc_realloc(NULL, 952, "new server wsi");

    ck_assert_ptr_nonnull(s);
    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_nonnull(w);
    ck_assert_uint_eq(hd_lwsalloc_in_use(), 2); /* the wsi is the heap's */
    memset(s, 0xab, 976);                       /* whole slots are usable */
    memset(d, 0xcd, 4096);
    ck_assert_ptr_null(hd_lwsalloc_realloc(s, 0, "lws_free"));
    ck_assert_ptr_null(hd_lwsalloc_realloc(d, 0, "lws_free"));
    ck_assert_uint_eq(hd_lwsalloc_in_use(), 0);
    /* the next handshake reuses the same slots (LIFO) */
    ck_assert_ptr_eq(hd_lwsalloc_realloc(NULL, 900, "ah struct"), s);
    ck_assert_ptr_eq(hd_lwsalloc_realloc(NULL, 4096, "ah data"), d);
    hd_lwsalloc_realloc(s, 0, "lws_free");
    hd_lwsalloc_realloc(d, 0, "lws_free");
    /* heap blocks grow and are freed as lws' own allocator would */
    w = hd_lwsalloc_realloc(w, 5000, "grow");
    ck_assert_ptr_nonnull(w);
    memset(w, 1, 5000);
    ck_assert_ptr_null(hd_lwsalloc_realloc(w, 0, "lws_free"));
}
END_TEST

START_TEST(what_does_not_fit_goes_to_the_heap)
{
    void *big = hd_lwsalloc_realloc(NULL, 8192, "ah data"); /* > slot */
    void *slots[HD_LWSALLOC_SLOTS], *extra;

    ck_assert_ptr_nonnull(big);
    ck_assert_uint_eq(hd_lwsalloc_in_use(), 0);
    memset(big, 2, 8192);
    hd_lwsalloc_realloc(big, 0, "lws_free");
    for (int i = 0; i < HD_LWSALLOC_SLOTS; i++) {
        slots[i] = hd_lwsalloc_realloc(NULL, 4096, "ah data");
        ck_assert_ptr_nonnull(slots[i]);
    }
    ck_assert_uint_eq(hd_lwsalloc_in_use(), HD_LWSALLOC_SLOTS);
    /* a storm past the pool: the heap takes the rest */
    extra = hd_lwsalloc_realloc(NULL, 4096, "ah data");
    ck_assert_ptr_nonnull(extra);
    ck_assert_uint_eq(hd_lwsalloc_in_use(), HD_LWSALLOC_SLOTS);
    memset(extra, 3, 4096);
    hd_lwsalloc_realloc(extra, 0, "lws_free");
    for (int i = 0; i < HD_LWSALLOC_SLOTS; i++)
        hd_lwsalloc_realloc(slots[i], 0, "lws_free");
}
END_TEST

START_TEST(a_pooled_block_resized_moves_to_the_heap)
{
    char *s = hd_lwsalloc_realloc(NULL, 100, "ah struct"), *r;

    memcpy(s, "header table", 13);
    r = hd_lwsalloc_realloc(s, 2000, "grow");
    ck_assert_ptr_nonnull(r);
    ck_assert_str_eq(r, "header table");
    ck_assert_uint_eq(hd_lwsalloc_in_use(), 0);
    free(r);
}
END_TEST

START_TEST(an_idle_pool_gives_its_pages_back)
{
    char *a = hd_lwsalloc_realloc(NULL, 4096, "ah data");
    char *b = hd_lwsalloc_realloc(NULL, 4096, "ah data");

    memset(a, 7, 4096);
    memset(b, 7, 4096);
    hd_lwsalloc_realloc(a, 0, "lws_free");
    hd_lwsalloc_trim(); /* b is in use: nothing is dropped */
    ck_assert_int_eq(b[100], 7);
    hd_lwsalloc_realloc(b, 0, "lws_free");
    hd_lwsalloc_trim();
    /* the pages are gone (zero again) and handed out from the start */
    b = hd_lwsalloc_realloc(NULL, 4096, "ah data");
    ck_assert_ptr_eq(b, a);
    ck_assert_int_eq(b[100], 0);
    hd_lwsalloc_realloc(b, 0, "lws_free");
}
END_TEST

static Suite *
lwsalloc_suite(void)
{
    Suite *s = suite_create("lwsalloc");
    TCase *tc = tcase_create("pool");

    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, header_tables_come_from_the_pool_and_go_back);
    tcase_add_test(tc, what_does_not_fit_goes_to_the_heap);
    tcase_add_test(tc, a_pooled_block_resized_moves_to_the_heap);
    tcase_add_test(tc, an_idle_pool_gives_its_pages_back);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(lwsalloc_suite());
    int      failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
