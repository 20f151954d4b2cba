/*
 * Unit tests for the worker's admission at "connect" (worker/hd_admit.c)
 * over real shm limit tables: per-user limits are per tenant, and a tenant
 * limit of 0 never refuses, even when the tenant table is full. And the
 * handshakes under way that a draining worker waits for
 * (hd_admit_pending()).
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hd_admit.h"
#include "hd_limits.h"
#include "hd_worker_int.h"

static hd_conf_t conf;

static void
setup(void)
{
    memset(&conf, 0, sizeof(conf));
    hd_w.conf = &conf;
    ck_assert_int_eq(hd_limits_create(&hd_w.limits), 0);
    hd_w.lease = hd_lease_create(1u << 17);
    ck_assert_ptr_nonnull(hd_w.lease);
}

static void
teardown(void)
{
    hd_lease_reclaim(hd_w.limits, hd_w.lease);
    hd_limits_destroy(hd_w.limits);
    hd_w.limits = NULL;
    hd_w.lease = NULL;
}

/* "alice" of tenant A must not use up "alice" of tenant B (issue 16 #4) */
START_TEST(test_user_limit_is_per_tenant)
{
    const char *what = NULL;

    conf.conns_per_user = 1;
    ck_assert_int_eq(hd_admit_connect(10, "alice", "A", &what), 0);
    ck_assert_int_eq(hd_admit_connect(11, "alice", "B", &what), 0);
    ck_assert_int_eq(hd_admit_connect(12, "alice", NULL, &what), 0);
    /* the same user of the same tenant is still limited */
    ck_assert_int_eq(hd_admit_connect(13, "alice", "A", &what), -EDQUOT);
    ck_assert_str_eq(what, "connections per user");
    what = NULL;
    ck_assert_int_eq(hd_admit_connect(14, "alice", NULL, &what), -EDQUOT);
    ck_assert_str_eq(what, "connections per user");
    /* a tenant whose name ends like another's sub starts does not collide:
     * ("ab", "c") and ("a", "bc") are different users */
    ck_assert_int_eq(hd_admit_connect(15, "c", "ab", &what), 0);
    ck_assert_int_eq(hd_admit_connect(16, "bc", "a", &what), 0);
    /* released with the fd: the slot is free again */
    hd_limits_release_fd(hd_w.limits, hd_w.lease, 10);
    ck_assert_int_eq(hd_admit_connect(17, "alice", "A", &what), 0);
}
END_TEST

/* limits.connections_per_tenant 0 = unlimited, even with the table full
 * (issue 16 #5) */
START_TEST(test_tenant_unlimited_when_table_full)
{
    const char *what = NULL;
    char        name[32];
    int         fd, rc = 0;

    conf.conns_per_tenant = 0;
    for (fd = 100; fd < 100 + (int) HD_LIMITS_TENANT_ENTRIES; fd++) {
        snprintf(name, sizeof(name), "t%d", fd);
        rc = hd_limits_acquire(hd_w.limits, hd_w.lease, fd, HD_LIM_TENANT, name,
                               strlen(name), 0);
        if (rc == -ENOSPC)
            break;
        ck_assert_int_eq(rc, 0);
    }
    ck_assert_int_eq(rc, -ENOSPC);
    /* name: a tenant whose both buckets are full (nothing is released, so
     * it stays so): admitted, just not counted */
    ck_assert_int_eq(hd_admit_connect(fd, "u", name, &what), 0);
    ck_assert(!hd_limits_holds(hd_w.lease, fd, HD_LIM_TENANT));
    ck_assert_int_eq(hd_admit_connect(fd + 1, NULL, name, &what), 0);

    /* with a limit, a full table still refuses (fail closed) */
    conf.conns_per_tenant = 5;
    ck_assert_int_eq(hd_admit_connect(fd + 2, NULL, name, &what), -ENOSPC);
    ck_assert_str_eq(what, "connections per tenant");
    /* and the user count taken before the refusal was given back */
    conf.conns_per_user = 1;
    ck_assert_int_eq(hd_admit_connect(fd + 3, "bob", name, &what), -ENOSPC);
    ck_assert(!hd_limits_holds(hd_w.lease, fd + 3, HD_LIM_USER));
}
END_TEST

/* A connection adopted by lws is a handshake under way until it upgrades,
 * makes an HTTP request or goes; an fd reused by a later accept is judged
 * by its own stamp (issue 20: a draining worker must not exit with one). */
START_TEST(test_pending_handshakes)
{
    struct lws *w5 = (struct lws *) (uintptr_t) 0x5000;
    struct lws *w6 = (struct lws *) (uintptr_t) 0x6000;
    struct lws *w8 = (struct lws *) (uintptr_t) 0x8000;
    struct lws *w8b = (struct lws *) (uintptr_t) 0x8800;

    hd_w.loop = ev_loop_new(EVFLAG_AUTO);
    hd_w.accept_ns_cap = 64;
    hd_w.accept_ns = calloc(64, sizeof(uint64_t));
    ck_assert_int_eq(hd_admit_init(64), 0);
    ck_assert(!hd_admit_pending());

    hd_w.accept_ns[5] = 1000; /* hd_worker_adopt() stamps the accept */
    hd_admit_adopted(w5, 5);
    ck_assert(hd_admit_pending());
    hd_admit_request(5); /* an HTTP request: nhttp counts it from now */
    ck_assert(!hd_admit_pending());

    hd_w.accept_ns[6] = 2000;
    hd_admit_adopted(w6, 6);
    ck_assert(hd_admit_pending());
    hd_w.accept_ns[6] = 0; /* upgraded (hd_ws.c): nconns counts it */
    ck_assert(!hd_admit_pending());

    /* fd 8 done, then accepted again but not adopted yet: not pending
     * by the old entry; adopted: pending */
    hd_w.accept_ns[8] = 3000;
    hd_admit_adopted(w8, 8);
    hd_w.accept_ns[8] = 0;
    hd_w.accept_ns[8] = 4000;
    ck_assert(!hd_admit_pending());
    hd_admit_adopted(w8b, 8);
    ck_assert(hd_admit_pending());
    hd_w.accept_ns[8] = 0;
    ck_assert(!hd_admit_pending());

    hd_admit_shutdown();
    ev_loop_destroy(hd_w.loop);
    hd_w.loop = NULL;
    free(hd_w.accept_ns);
    hd_w.accept_ns = NULL;
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("admit");
    TCase *tc = tcase_create("connect");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_user_limit_is_per_tenant);
    tcase_add_test(tc, test_tenant_unlimited_when_table_full);
    suite_add_tcase(s, tc);
    tc = tcase_create("pending");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_pending_handshakes);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
