/*
 * test_skew — gateway/replication/skew.c: how far a batch's versions run ahead, peer clock offsets,
 * the hlc of a packed Mutation read without unpacking it (against protobuf-c's own
 * packing, and every truncation and malformed input), the status message that names a
 * skew, and the once-per-interval log gate.  Pure logic.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/base/log.h"
#include "gateway/replication/skew.h"
#include "proto/geogate_wan.pb-c.h"

#define HLC(ms, logical) (((uint64_t)(ms) << 16) | (logical))

static size_t pack(const Geogate__Wan__V1__Mutation *m, uint8_t *buf, size_t cap)
{
    size_t len = geogate__wan__v1__mutation__get_packed_size(m);

    assert_true(len <= cap);
    assert_int_equal(geogate__wan__v1__mutation__pack(m, buf), len);
    return len;
}

static void test_mutation_hlc(void **state)
{
    Geogate__Wan__V1__Mutation m = GEOGATE__WAN__V1__MUTATION__INIT;
    uint8_t value[300], buf[512];
    uint64_t hlc = 1;
    size_t len;

    (void)state;
    memset(value, 'v', sizeof(value));
    m.key.data = (uint8_t *)"user:42";
    m.key.len = 7;
    m.value.data = value;
    m.value.len = sizeof(value); /* a two-byte length varint before the hlc */
    m.hlc = HLC(1765000000000u, 7);
    m.flags = 0xffffffffu;
    m.expiry = 1765003600u;
    m.site_id = 0x9e3779b9u;
    m.gateway_id = 3;
    len = pack(&m, buf, sizeof(buf));
    assert_int_equal(gw_skew_mutation_hlc(buf, len, &hlc, NULL), 0);
    assert_true(hlc == m.hlc);
    {
        uint32_t site = 0;
        assert_int_equal(gw_skew_mutation_hlc(buf, len, &hlc, &site), 0);
        assert_true(site == m.site_id);
        /* a write made at the batch's origin leaves the site out: 0 */
        m.site_id = 0;
        m.gateway_id = 0;
        len = pack(&m, buf, sizeof(buf));
        site = 7;
        assert_int_equal(gw_skew_mutation_hlc(buf, len, &hlc, &site), 0);
        assert_true(site == 0 && hlc == m.hlc);
    }

    /* a tombstone: no value */
    m.value.len = 0;
    m.tombstone = true;
    len = pack(&m, buf, sizeof(buf));
    assert_int_equal(gw_skew_mutation_hlc(buf, len, &hlc, NULL), 0);
    assert_true(hlc == m.hlc);

    /* a flush: no key either */
    {
        Geogate__Wan__V1__Mutation f = GEOGATE__WAN__V1__MUTATION__INIT;
        f.flush = true;
        f.hlc = HLC(5, 0);
        f.expiry = 100;
        len = pack(&f, buf, sizeof(buf));
        assert_int_equal(gw_skew_mutation_hlc(buf, len, &hlc, NULL), 0);
        assert_true(hlc == f.hlc);
    }

    /* no hlc at all (version 0): 0 */
    m.hlc = 0;
    len = pack(&m, buf, sizeof(buf));
    hlc = 99;
    assert_int_equal(gw_skew_mutation_hlc(buf, len, &hlc, NULL), 0);
    assert_true(hlc == 0);
    assert_int_equal(gw_skew_mutation_hlc(buf, 0, &hlc, NULL), 0);
    assert_true(hlc == 0);
}

/* Every prefix of a packed Mutation: well-formed or -EBADMSG, never a read past len (ASan
 * runs this too), and a cut inside the hlc itself is always an error. */
static void test_mutation_hlc_truncated(void **state)
{
    Geogate__Wan__V1__Mutation m = GEOGATE__WAN__V1__MUTATION__INIT;
    uint8_t buf[256];
    uint64_t hlc;
    size_t len, hlc_at;

    (void)state;
    m.key.data = (uint8_t *)"k";
    m.key.len = 1;
    m.value.data = (uint8_t *)"value";
    m.value.len = 5;
    m.hlc = HLC(1765000000000u, 1);
    m.flags = 300;
    len = pack(&m, buf, sizeof(buf));
    /* key (1 + 1 + 1), value (1 + 1 + 5), then the hlc's tag and 8 bytes */
    hlc_at = 3 + 7;
    assert_int_equal(buf[hlc_at], (3 << 3) | 1);
    for (size_t n = 0; n < len; n++) {
        uint8_t *copy = malloc(n ? n : 1);
        int rc;
        assert_non_null(copy);
        memcpy(copy, buf, n);
        rc = gw_skew_mutation_hlc(copy, n, &hlc, NULL);
        assert_true(rc == 0 || rc == -EBADMSG);
        if (n > hlc_at + 1 && n < hlc_at + 9) {
            assert_int_equal(rc, -EBADMSG);
        }
        if (rc == 0 && n >= hlc_at + 9) {
            assert_true(hlc == m.hlc);
        }
        free(copy);
    }
}

static void test_mutation_hlc_malformed(void **state)
{
    static const uint8_t group_start[] = {0x0b}; /* field 1, wire type 3 */
    static const uint8_t group_end[] = {0x0c};   /* wire type 4 */
    static const uint8_t wire6[] = {0x0e, 0};
    static const uint8_t wire7[] = {0x0f, 0};
    static const uint8_t long_len[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 'k'};
    static const uint8_t endless_varint[] = {0x08, 0x80, 0x80, 0x80, 0x80, 0x80,
                                             0x80, 0x80, 0x80, 0x80, 0x80, 0x01};
    static const uint8_t cut_tag[] = {0x80};
    static const uint8_t cut_fixed32[] = {0x0d, 1, 2, 3};
    static const uint8_t unknown_fixed64[] = {(15 << 3) | 1, 1, 2, 3, 4, 5, 6, 7, 8};
    uint64_t hlc;

    (void)state;
    assert_int_equal(gw_skew_mutation_hlc(group_start, sizeof(group_start), &hlc, NULL), -EBADMSG);
    assert_int_equal(gw_skew_mutation_hlc(group_end, sizeof(group_end), &hlc, NULL), -EBADMSG);
    assert_int_equal(gw_skew_mutation_hlc(wire6, sizeof(wire6), &hlc, NULL), -EBADMSG);
    assert_int_equal(gw_skew_mutation_hlc(wire7, sizeof(wire7), &hlc, NULL), -EBADMSG);
    assert_int_equal(gw_skew_mutation_hlc(long_len, sizeof(long_len), &hlc, NULL), -EBADMSG);
    assert_int_equal(gw_skew_mutation_hlc(endless_varint, sizeof(endless_varint), &hlc, NULL), -EBADMSG);
    assert_int_equal(gw_skew_mutation_hlc(cut_tag, sizeof(cut_tag), &hlc, NULL), -EBADMSG);
    assert_int_equal(gw_skew_mutation_hlc(cut_fixed32, sizeof(cut_fixed32), &hlc, NULL), -EBADMSG);
    /* a fixed64 of another field (a newer sender's) is skipped, not taken for the hlc */
    hlc = 5;
    assert_int_equal(gw_skew_mutation_hlc(unknown_fixed64, sizeof(unknown_fixed64), &hlc, NULL), 0);
    assert_true(hlc == 0);
}

static void test_batch_ahead(void **state)
{
    Geogate__Wan__V1__ShipRequest req = GEOGATE__WAN__V1__SHIP_REQUEST__INIT;
    Geogate__Wan__V1__Mutation a = GEOGATE__WAN__V1__MUTATION__INIT;
    Geogate__Wan__V1__Mutation b = GEOGATE__WAN__V1__MUTATION__INIT;
    Geogate__Wan__V1__Mutation c = GEOGATE__WAN__V1__MUTATION__INIT;
    Geogate__Wan__V1__Mutation *ms[3] = {&a, &b, &c};
    uint64_t now = 1765000000000u;

    (void)state;
    assert_int_equal(gw_skew_batch_ahead_ms(&req, now), 0); /* empty: a heartbeat */
    a.hlc = HLC(now - 5000, 0);
    b.hlc = HLC(now + 3600000, 12); /* an hour ahead, in the middle of the batch */
    c.hlc = HLC(now, 0xffff);
    req.mutations = ms;
    req.n_mutations = 3;
    assert_int_equal(gw_skew_batch_ahead_ms(&req, now), 3600000);
    b.hlc = HLC(now + 999, 0);
    assert_int_equal(gw_skew_batch_ahead_ms(&req, now), 999);
    b.hlc = 0;
    assert_int_equal(gw_skew_batch_ahead_ms(&req, now), 0); /* only the present and past */
}

static void test_offset(void **state)
{
    (void)state;
    assert_int_equal(gw_skew_offset_ms(1000, 1000, 0), 0);
    /* the message took half the round trip: a peer in step looks in step */
    assert_int_equal(gw_skew_offset_ms(1000, 1040, 80), 0);
    /* an hour ahead, 20 ms away */
    assert_int_equal(gw_skew_offset_ms(3600000 + 1000, 1010, 20), 3600000);
    /* behind */
    assert_int_equal(gw_skew_offset_ms(1000, 3601000, 0), -3600000);
    assert_int_equal(gw_skew_offset_ms(0, 1765000000000u, 0), -(int64_t)1765000000000u);
}

static void test_describe(void **state)
{
    char buf[200];

    (void)state;
    gw_skew_describe(buf, sizeof(buf), "us-east", 3600105, 1000, true, 3600101);
    assert_string_equal(buf, "clock skew: versions 3600.105 s ahead of us-east's clock "
                             "(replication.max_clock_skew 1000 ms), your clock +3600.101 s off; "
                             "batch left in your spool");
    gw_skew_describe(buf, sizeof(buf), "eu-west", 1500, 1000, false, 0);
    assert_string_equal(buf, "clock skew: versions 1.500 s ahead of eu-west's clock "
                             "(replication.max_clock_skew 1000 ms); batch left in your spool");
    gw_skew_describe(buf, sizeof(buf), "a", 2001, 1000, true, -7);
    assert_non_null(strstr(buf, ", your clock -0.007 s off;"));
    gw_skew_describe(buf, sizeof(buf), "a", 2001, 1000, true, INT64_MIN);
    assert_non_null(strstr(buf, ", your clock -"));
    /* cut, never overrun, always terminated */
    memset(buf, 'x', sizeof(buf));
    gw_skew_describe(buf, 16, "us-east", 3600105, 1000, true, 3600101);
    assert_int_equal(strlen(buf), 15);
    assert_int_equal(buf[16], 'x');
    gw_skew_describe(buf, 0, "us-east", 1, 1, false, 0); /* nothing written */
}

static void test_gate(void **state)
{
    struct gw_log_gate g = {0, 0};
    uint64_t held = 99;

    (void)state;
    assert_true(gw_log_gate_pass(&g, 1000, 10000, &held));
    assert_int_equal(held, 0);
    for (int i = 0; i < 500; i++) {
        assert_false(gw_log_gate_pass(&g, 1000 + i * 10, 10000, &held));
    }
    assert_false(gw_log_gate_pass(&g, 10999, 10000, NULL));
    assert_true(gw_log_gate_pass(&g, 11000, 10000, &held));
    assert_int_equal(held, 501);
    assert_true(gw_log_gate_pass(&g, 30000, 10000, &held));
    assert_int_equal(held, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mutation_hlc),
        cmocka_unit_test(test_mutation_hlc_truncated),
        cmocka_unit_test(test_mutation_hlc_malformed),
        cmocka_unit_test(test_batch_ahead),
        cmocka_unit_test(test_offset),
        cmocka_unit_test(test_describe),
        cmocka_unit_test(test_gate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
