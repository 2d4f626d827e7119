/*
 * test_apply — gateway/store/apply_decide.c: the newest-wins rules of applying what peers
 * ship (incoming newer / older / equal, tombstones, items expired at their origin,
 * unversioned and absent local items, ties broken by site and gateway) and of re-stamping
 * our own items (absent, the same version, replaced since the clock restarted, older than
 * the restart, written by a plain client).  Pure logic.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/store/apply_decide.h"

#define HLC(ms, logical) (((uint64_t)(ms) << 16) | (logical))

static struct wan_version ver(uint64_t hlc, uint32_t site, uint16_t gw)
{
    struct wan_version v = {hlc, site, gw};
    return v;
}

/* A local item a gets found: versioned with v, or (versioned false) a plain one. */
static struct gw_item_view local_item(bool versioned, struct wan_version v, bool tombstone)
{
    struct gw_item_view it;

    memset(&it, 0, sizeof(it));
    it.key = "k";
    it.nkey = 1;
    it.has_cas = true;
    it.cas = 99;
    it.versioned = versioned;
    it.found = !(versioned && tombstone);
    if (versioned) {
        it.hdr.version = v;
        it.hdr.tombstone = tombstone;
    }
    if (it.found) {
        it.val = (const uint8_t *)"v";
        it.len = 1;
    }
    return it;
}

static void test_decide_absent(void **state)
{
    struct wan_version in = ver(HLC(1000, 0), 7, 1);

    (void)state;
    assert_int_equal(gw_apply_decide(&in, NULL), GW_APPLY_WRITE);
    /* even version 0 goes into nothing */
    in = ver(0, 0, 0);
    assert_int_equal(gw_apply_decide(&in, NULL), GW_APPLY_WRITE);
}

static void test_decide_newer_older_equal(void **state)
{
    struct wan_version in = ver(HLC(2000, 0), 7, 1);
    struct gw_item_view older = local_item(true, ver(HLC(1000, 5), 9, 9), false);
    struct gw_item_view newer = local_item(true, ver(HLC(3000, 0), 1, 1), false);
    struct gw_item_view same = local_item(true, in, false);

    (void)state;
    assert_int_equal(gw_apply_decide(&in, &older), GW_APPLY_WRITE);
    assert_int_equal(gw_apply_decide(&in, &newer), GW_APPLY_SEND_BACK);
    assert_int_equal(gw_apply_decide(&in, &same), GW_APPLY_KEEP);
}

static void test_decide_ties(void **state)
{
    struct wan_version in = ver(HLC(2000, 3), 7, 1);
    struct gw_item_view lower_site = local_item(true, ver(HLC(2000, 3), 6, 9), false);
    struct gw_item_view higher_site = local_item(true, ver(HLC(2000, 3), 8, 0), false);
    struct gw_item_view lower_gw = local_item(true, ver(HLC(2000, 3), 7, 0), false);
    struct gw_item_view higher_gw = local_item(true, ver(HLC(2000, 3), 7, 2), false);
    struct gw_item_view higher_logical = local_item(true, ver(HLC(2000, 4), 0, 0), false);

    (void)state;
    assert_int_equal(gw_apply_decide(&in, &lower_site), GW_APPLY_WRITE);
    assert_int_equal(gw_apply_decide(&in, &higher_site), GW_APPLY_SEND_BACK);
    assert_int_equal(gw_apply_decide(&in, &lower_gw), GW_APPLY_WRITE);
    assert_int_equal(gw_apply_decide(&in, &higher_gw), GW_APPLY_SEND_BACK);
    assert_int_equal(gw_apply_decide(&in, &higher_logical), GW_APPLY_SEND_BACK);
}

static void test_decide_tombstones(void **state)
{
    struct wan_version in = ver(HLC(2000, 0), 7, 1);
    struct gw_item_view old_tomb = local_item(true, ver(HLC(1000, 0), 7, 1), true);
    struct gw_item_view new_tomb = local_item(true, ver(HLC(3000, 0), 7, 1), true);

    (void)state;
    /* a tombstone is a version like any other: an older one is written over, a newer one
     * wins and travels back (as a tombstone) */
    assert_int_equal(gw_apply_decide(&in, &old_tomb), GW_APPLY_WRITE);
    assert_int_equal(gw_apply_decide(&in, &new_tomb), GW_APPLY_SEND_BACK);
}

static void test_decide_unversioned(void **state)
{
    struct wan_version in = ver(HLC(1, 0), 7, 1);
    struct wan_version zero = ver(0, 0, 0);
    struct gw_item_view plain = local_item(false, zero, false);

    (void)state;
    /* a plain memcached item is version 0: every real version beats it */
    assert_int_equal(gw_apply_decide(&in, &plain), GW_APPLY_WRITE);
    /* version 0 against it: equal, kept, and never sent back */
    assert_int_equal(gw_apply_decide(&zero, &plain), GW_APPLY_KEEP);
    /* a plain item whose bytes happen to hold a version does not count as one */
    plain.hdr.version = ver(HLC(9000, 0), 1, 1);
    assert_int_equal(gw_apply_decide(&in, &plain), GW_APPLY_WRITE);
}

static void test_restamp(void **state)
{
    uint64_t restart = HLC(5000, 0);
    struct wan_version old = ver(HLC(9000, 0), 7, 1); /* stamped ahead of our clock */
    struct gw_item_view same = local_item(true, old, false);
    struct gw_item_view later = local_item(true, ver(HLC(6000, 0), 7, 1), false);
    struct gw_item_view before = local_item(true, ver(HLC(4000, 0), 3, 1), false);
    struct gw_item_view at_restart = local_item(true, ver(restart, 3, 1), false);
    struct gw_item_view later_tomb = local_item(true, ver(HLC(6000, 0), 3, 1), true);
    struct gw_item_view plain = local_item(false, ver(0, 0, 0), false);

    (void)state;
    assert_int_equal(gw_apply_restamp_decide(&old, NULL, restart), GW_APPLY_WRITE);
    assert_int_equal(gw_apply_restamp_decide(&old, &same, restart), GW_APPLY_WRITE);
    assert_int_equal(gw_apply_restamp_decide(&old, &later, restart), GW_APPLY_KEEP);
    assert_int_equal(gw_apply_restamp_decide(&old, &later_tomb, restart), GW_APPLY_KEEP);
    assert_int_equal(gw_apply_restamp_decide(&old, &before, restart), GW_APPLY_WRITE);
    assert_int_equal(gw_apply_restamp_decide(&old, &at_restart, restart), GW_APPLY_WRITE);
    assert_int_equal(gw_apply_restamp_decide(&old, &plain, restart), GW_APPLY_KEEP);
}

static void test_incoming(void **state)
{
    Geogate__Wan__V1__Mutation m = GEOGATE__WAN__V1__MUTATION__INIT;
    struct wan_item_header nh;
    uint32_t now = 1765000000u;

    (void)state;
    m.hlc = HLC(1000, 2);
    m.site_id = 11;
    m.gateway_id = 4;
    m.flags = 0xdeadbeefu;
    m.expiry = now + 60;
    gw_apply_incoming(&m, 5, 6, now, &nh);
    assert_true(nh.version.hlc == m.hlc);
    assert_int_equal(nh.version.site_id, 11);
    assert_int_equal(nh.version.gateway_id, 4);
    assert_int_equal(nh.client_flags, 0xdeadbeefu);
    assert_int_equal(nh.expiry, now + 60);
    assert_false(nh.tombstone);

    /* site 0: written at the batch's origin */
    m.site_id = 0;
    gw_apply_incoming(&m, 5, 6, now, &nh);
    assert_int_equal(nh.version.site_id, 5);
    assert_int_equal(nh.version.gateway_id, 6);

    /* expired at its origin: a tombstone here; exactly now counts as expired */
    m.expiry = now;
    gw_apply_incoming(&m, 5, 6, now, &nh);
    assert_true(nh.tombstone);
    assert_int_equal(nh.expiry, now);
    m.expiry = 1;
    gw_apply_incoming(&m, 5, 6, now, &nh);
    assert_true(nh.tombstone);

    /* no expiry never expires */
    m.expiry = 0;
    gw_apply_incoming(&m, 5, 6, now, &nh);
    assert_false(nh.tombstone);

    /* a tombstone stays one */
    m.tombstone = true;
    m.expiry = now + 60;
    gw_apply_incoming(&m, 5, 6, now, &nh);
    assert_true(nh.tombstone);
}

static void test_names(void **state)
{
    (void)state;
    for (int i = 0; i < GW_APPLY_VERDICT_MAX; i++) {
        assert_non_null(gw_apply_verdict_names[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decide_absent),      cmocka_unit_test(test_decide_newer_older_equal),
        cmocka_unit_test(test_decide_ties),        cmocka_unit_test(test_decide_tombstones),
        cmocka_unit_test(test_decide_unversioned), cmocka_unit_test(test_restamp),
        cmocka_unit_test(test_incoming),           cmocka_unit_test(test_names),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
