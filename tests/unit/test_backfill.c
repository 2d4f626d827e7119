/*
 * test_backfill — the pure parts of a backfill: the resume cursor (gateway/transfer/backfill.c) and
 * the key order a resumable walk depends on (gw_enum_key_cmp, gateway/transfer/snapshot.c).  The walk,
 * the RPC and the apply are covered by tests/integration/test_backfill.py with real
 * memcached and real gateways.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/transfer/backfill.h"
#include "gateway/transfer/snapshot.h"

static void test_cursor_round_trip(void **state)
{
    uint8_t buf[GW_BACKFILL_CURSOR_MAX];
    uint32_t node;
    const char *label, *key;
    size_t nlabel, nkey, n;

    (void)state;
    n = gw_backfill_cursor_encode(70000, "127.0.0.1:11211", "user:42", 7, buf);
    assert_int_equal(n, 4 + 1 + 15 + 1 + 7);
    assert_int_equal(gw_backfill_cursor_decode(buf, n, &node, &label, &nlabel, &key, &nkey), 0);
    assert_int_equal(node, 70000);
    assert_int_equal(nlabel, 15);
    assert_memory_equal(label, "127.0.0.1:11211", 15);
    assert_int_equal(nkey, 7);
    assert_memory_equal(key, "user:42", 7);
}

static void test_cursor_longest(void **state)
{
    uint8_t buf[GW_BACKFILL_CURSOR_MAX];
    char label[256], key[251];
    uint32_t node;
    const char *l, *k;
    size_t nl, nk, n;

    (void)state;
    memset(label, 'h', 255);
    label[255] = '\0';
    memset(key, 'k', 250);
    n = gw_backfill_cursor_encode(UINT32_MAX, label, key, 250, buf);
    assert_int_equal(n, GW_BACKFILL_CURSOR_MAX);
    assert_int_equal(gw_backfill_cursor_decode(buf, n, &node, &l, &nl, &k, &nk), 0);
    assert_int_equal(node, UINT32_MAX);
    assert_int_equal(nl, 255);
    assert_int_equal(nk, 250);
}

static void test_cursor_damaged(void **state)
{
    uint8_t buf[GW_BACKFILL_CURSOR_MAX];
    uint32_t node;
    const char *label, *key;
    size_t nlabel, nkey, n;

    (void)state;
    n = gw_backfill_cursor_encode(1, "a:1", "key", 3, buf);
    /* every shorter prefix is refused */
    for (size_t cut = 0; cut < n; cut++) {
        assert_int_equal(gw_backfill_cursor_decode(buf, cut, &node, &label, &nlabel, &key, &nkey),
                         -EINVAL);
    }
    /* trailing bytes */
    buf[n] = 'x';
    assert_int_equal(gw_backfill_cursor_decode(buf, n + 1, &node, &label, &nlabel, &key, &nkey),
                     -EINVAL);
    /* a label length running past the end */
    buf[4] = 200;
    assert_int_equal(gw_backfill_cursor_decode(buf, n, &node, &label, &nlabel, &key, &nkey),
                     -EINVAL);
    /* an empty key */
    n = gw_backfill_cursor_encode(1, "a:1", "", 0, buf);
    assert_int_equal(gw_backfill_cursor_decode(buf, n, &node, &label, &nlabel, &key, &nkey),
                     -EINVAL);
}

static int cmp(const char *a, const char *b)
{
    int c = gw_enum_key_cmp(a, strlen(a), b, strlen(b));
    return c < 0 ? -1 : c > 0 ? 1 : 0;
}

static void test_key_order(void **state)
{
    (void)state;
    assert_int_equal(cmp("a", "a"), 0);
    assert_int_equal(cmp("a", "b"), -1);
    assert_int_equal(cmp("b", "a"), 1);
    /* a prefix sorts first */
    assert_int_equal(cmp("user", "user:1"), -1);
    assert_int_equal(cmp("user:1", "user"), 1);
    /* bytes compare unsigned */
    assert_int_equal(cmp("\x7e", "\x80"), -1);
    assert_int_equal(cmp("key10", "key9"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cursor_round_trip),
        cmocka_unit_test(test_cursor_longest),
        cmocka_unit_test(test_cursor_damaged),
        cmocka_unit_test(test_key_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
