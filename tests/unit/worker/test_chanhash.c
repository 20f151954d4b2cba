/*
 * The worker's channel table hashes client-chosen names with a keyed hash
 * (issue 16 item 3): names that collide under an unkeyed hash (FNV-1a, the
 * table's hash before) spread over the buckets, and the same name hashes
 * differently in another worker process.
 */
#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hd_chan.h"
#include "hd_hash.h"

#define N   2048 /* channels; the table's buckets: 2048 */
#define CAP 2048

static uint64_t
fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char) s[i];
        h *= 1099511628211ull;
    }
    return h;
}

START_TEST(flood_names_spread)
{
    static char names[N][32];
    static bool seen[CAP];
    unsigned    distinct = 0, got = 0;

    /* what an attacker precomputes: N names all in bucket 0 */
    for (unsigned long i = 0; got < N; i++) {
        int n = snprintf(names[got], sizeof(names[got]), "flood:%lu", i);
        if ((fnv1a(names[got], (size_t) n) & (CAP - 1)) == 0)
            got++;
    }
    for (unsigned i = 0; i < N; i++) {
        hd_chan_t *ch = hd_chan_get(names[i], strlen(names[i]), 0, NULL);
        ck_assert_ptr_nonnull(ch);
        ck_assert_ptr_eq(hd_chan_find(names[i], strlen(names[i])), ch);
        if (!seen[ch->hash & (CAP - 1)]) {
            seen[ch->hash & (CAP - 1)] = true;
            distinct++;
        }
    }
    ck_assert_uint_eq(hd_chan_count(), N);
    /* a uniform hash fills about 1 - 1/e of the buckets (1295 of 2048);
     * the unkeyed one filled exactly 1 */
    ck_assert_uint_gt(distinct, 1100);
}
END_TEST

START_TEST(key_differs_per_process)
{
    const char name[] = "chat:lobby";
    int        p[2];
    uint64_t   mine = hd_chan_get(name, sizeof(name) - 1, 0, NULL)->hash;
    uint64_t   theirs = 0;
    int        st;

    ck_assert_int_eq(pipe(p), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        hd_hash_reseed(); /* what hd_worker_main() does after the fork */
        uint64_t h = hd_chan_get(name, sizeof(name) - 1, 0, NULL)->hash;
        _exit(write(p[1], &h, sizeof(h)) == sizeof(h) ? 0 : 1);
    }
    ck_assert_int_eq(read(p[0], &theirs, sizeof(theirs)), sizeof(theirs));
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_uint_ne(theirs, mine);
    close(p[0]);
    close(p[1]);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("chanhash");
    TCase *tc = tcase_create("chanhash");
    tcase_add_test(tc, flood_names_spread);
    tcase_add_test(tc, key_differs_per_process);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
