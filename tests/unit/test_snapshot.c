/*
 * test_snapshot — the snapshot file format (gateway/transfer/snapshot.c) and the restore's reading
 * of it (gateway/transfer/restore.c): header round trip and layout, the format version refused
 * before anything else is looked at, every damaged header rejected with its offset, and
 * files whose first record is bad, truncated or missing its end record stopped at the
 * right offset with nothing applied.  No memcached and no workers: the files here never
 * reach a record that would be applied.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "gateway/routing/pool.h"
#include "gateway/transfer/restore.h"
#include "gateway/server.h"
#include "gateway/transfer/snapshot.h"
#include "proto/geogate_wan.pb-c.h"
#include "wan/crc32c.h"

static struct gw_snap_header sample_header(void)
{
    struct gw_snap_header h;

    memset(&h, 0, sizeof(h));
    h.format = GW_SNAP_FORMAT;
    h.created = 1700000000;
    h.site_id = 0x11223344;
    h.gateway_id = 7;
    strcpy(h.site, "us-east");
    return h;
}

static void test_header_layout(void **state)
{
    struct gw_snap_header h = sample_header(), d;
    uint8_t buf[GW_SNAP_HEADER_MAX];
    size_t hlen = 0, bad = 99;
    int n;

    (void)state;
    n = gw_snap_header_encode(&h, buf);
    assert_int_equal(n, 24 + 7 + 4);
    assert_memory_equal(buf, "GGSNAP\x01\x00", 8);
    assert_int_equal(buf[8], 0x00); /* 1700000000 = 0x6553F100, little-endian */
    assert_int_equal(buf[9], 0xF1);
    assert_int_equal(buf[16], 0x44);
    assert_int_equal(buf[20], 7);
    assert_int_equal(buf[22], 7);
    assert_memory_equal(buf + 24, "us-east", 7);
    assert_int_equal(gw_snap_header_decode(buf, (size_t)n, &d, &hlen, &bad), 0);
    assert_int_equal(hlen, (size_t)n);
    assert_int_equal(bad, 0);
    assert_int_equal(d.created, h.created);
    assert_int_equal(d.site_id, h.site_id);
    assert_int_equal(d.gateway_id, 7);
    assert_string_equal(d.site, "us-east");
}

static void test_header_rejects(void **state)
{
    struct gw_snap_header h = sample_header(), d;
    uint8_t buf[GW_SNAP_HEADER_MAX], bad_buf[GW_SNAP_HEADER_MAX];
    size_t hlen, bad;
    int n;

    (void)state;
    n = gw_snap_header_encode(&h, buf);
    /* every truncation of a good header: the data ends inside it */
    for (int cut = 0; cut < n; cut++) {
        assert_int_equal(gw_snap_header_decode(buf, (size_t)cut, &d, &hlen, &bad), -EMSGSIZE);
    }
    /* not ours */
    memcpy(bad_buf, buf, (size_t)n);
    bad_buf[0] = 'X';
    assert_int_equal(gw_snap_header_decode(bad_buf, (size_t)n, &d, &hlen, &bad), -EPROTO);
    /* another format version: refused even when the rest would not parse as version 1 */
    memset(bad_buf, 0xEE, sizeof(bad_buf));
    memcpy(bad_buf, "GGSNAP\x02\x00", 8);
    assert_int_equal(gw_snap_header_decode(bad_buf, 8, &d, &hlen, &bad), -EPROTONOSUPPORT);
    assert_int_equal(d.format, 2);
    assert_int_equal(bad, 6);
    /* every flipped bit after the version is caught by the CRC (or the length check) */
    for (int i = 8; i < n; i++) {
        for (int bit = 0; bit < 8; bit++) {
            int rc;
            memcpy(bad_buf, buf, (size_t)n);
            bad_buf[i] ^= (uint8_t)(1u << bit);
            rc = gw_snap_header_decode(bad_buf, (size_t)n, &d, &hlen, &bad);
            assert_true(rc == -EBADMSG || rc == -EMSGSIZE || rc == -EINVAL);
        }
    }
    /* empty or overlong site names are not encoded */
    h.site[0] = '\0';
    assert_int_equal(gw_snap_header_encode(&h, buf), -EINVAL);
}

static void test_records(void **state)
{
    uint8_t head[GW_SNAP_RECORD_HEAD], end[GW_SNAP_RECORD_HEAD + GW_SNAP_END_PAYLOAD];

    (void)state;
    gw_snap_record_head("abc", 3, head);
    assert_memory_equal(head, "\x03\x00\x00\x00", 4);
    assert_int_equal(head[4] | head[5] << 8 | head[6] << 16 | (uint32_t)head[7] << 24,
                     wan_crc32c(0, "abc", 3));
    gw_snap_end_record(5, 2, end);
    assert_memory_equal(end, "\xff\xff\xff\xff", 4);
    assert_int_equal(end[8], 5);
    assert_int_equal(end[16], 2);
    assert_int_equal(end[4] | end[5] << 8 | end[6] << 16 | (uint32_t)end[7] << 24,
                     wan_crc32c(0, end + 8, 16));
}

/* ---- restore's reading, on files that never apply anything ---- */

struct fixture {
    struct gw_server srv;
    struct gw_pool pool;
};

static int restore_file(const uint8_t *data, size_t len, struct gw_restore_result *res)
{
    static struct fixture fx; /* no workers and no nodes: nothing may be applied */
    struct evbuffer *b = evbuffer_new();

    memset(&fx, 0, sizeof(fx));
    fx.srv.nworkers = 1;
    fx.srv.versioned = true;
    evbuffer_add(b, data, len);
    return gw_restore_run(&fx.srv, &fx.pool, b, NULL, res);
}

/* A header followed by extra (may be NULL).  Returns the length in out. */
static size_t build(uint8_t *out, const void *extra, size_t elen)
{
    struct gw_snap_header h = sample_header();
    int n = gw_snap_header_encode(&h, out);

    if (elen > 0) {
        memcpy(out + n, extra, elen);
    }
    return (size_t)n + elen;
}

static void test_restore_header_errors(void **state)
{
    struct gw_restore_result res;
    uint8_t buf[512];
    size_t n;

    (void)state;
    assert_int_equal(restore_file((const uint8_t *)"hello world, not a snapshot", 27, &res),
                     -EPROTO);
    assert_int_equal(res.status, GW_RESTORE_BAD_HEADER);
    n = build(buf, NULL, 0);
    buf[6] = 2;
    assert_int_equal(restore_file(buf, n, &res), -EPROTONOSUPPORT);
    assert_int_equal(res.status, GW_RESTORE_BAD_VERSION);
    assert_int_equal(res.header.format, 2);
    assert_int_equal(res.applied, 0);
    assert_non_null(strstr(res.reason, "format version 2"));
    assert_int_equal(restore_file(buf, 5, &res), -EPROTO); /* "GGSNA": cut in the magic */
    assert_int_equal(res.status, GW_RESTORE_BAD_HEADER);
}

static void test_restore_record_errors(void **state)
{
    struct gw_restore_result res;
    uint8_t buf[512], rec[64], end[GW_SNAP_RECORD_HEAD + GW_SNAP_END_PAYLOAD];
    size_t hlen = build(buf, NULL, 0), n;
    Geogate__Wan__V1__Mutation m = GEOGATE__WAN__V1__MUTATION__INIT;
    size_t plen;

    (void)state;
    /* an empty snapshot: header and end record, nothing else */
    gw_snap_end_record(0, 0, end);
    n = build(buf, end, sizeof(end));
    assert_int_equal(restore_file(buf, n, &res), 0);
    assert_int_equal(res.status, GW_RESTORE_OK);
    assert_int_equal(res.records, 0);
    assert_string_equal(res.header.site, "us-east");

    /* the end record missing */
    assert_int_equal(restore_file(buf, hlen, &res), -EBADMSG);
    assert_int_equal(res.bad_offset, hlen);
    assert_non_null(strstr(res.reason, "without the end record"));
    /* cut inside the end record */
    assert_int_equal(restore_file(buf, n - 1, &res), -EBADMSG);
    assert_int_equal(res.bad_offset, hlen);
    /* the end record counts a record the file does not hold */
    gw_snap_end_record(1, 0, end);
    n = build(buf, end, sizeof(end));
    assert_int_equal(restore_file(buf, n, &res), -EBADMSG);
    assert_non_null(strstr(res.reason, "counts 1 records"));
    /* bytes after the end record */
    gw_snap_end_record(0, 0, end);
    n = build(buf, end, sizeof(end));
    buf[n++] = 0;
    assert_int_equal(restore_file(buf, n, &res), -EBADMSG);
    assert_int_equal(res.bad_offset, n - 1);

    /* a record whose CRC does not match: bad at its offset, nothing read */
    m.key.data = (uint8_t *)"k1";
    m.key.len = 2;
    m.hlc = 1;
    m.site_id = 5;
    plen = geogate__wan__v1__mutation__pack(&m, rec + GW_SNAP_RECORD_HEAD);
    gw_snap_record_head(rec + GW_SNAP_RECORD_HEAD, (uint32_t)plen, rec);
    rec[GW_SNAP_RECORD_HEAD] ^= 1;
    n = build(buf, rec, GW_SNAP_RECORD_HEAD + plen);
    assert_int_equal(restore_file(buf, n, &res), -EBADMSG);
    assert_int_equal(res.bad_offset, hlen);
    assert_int_equal(res.records, 0);
    assert_non_null(strstr(res.reason, "CRC32C mismatch"));
    /* the same record cut short */
    rec[GW_SNAP_RECORD_HEAD] ^= 1;
    n = build(buf, rec, GW_SNAP_RECORD_HEAD + plen - 1);
    assert_int_equal(restore_file(buf, n, &res), -EBADMSG);
    assert_non_null(strstr(res.reason, "truncated"));
    /* a head cut short */
    n = build(buf, rec, 5);
    assert_int_equal(restore_file(buf, n, &res), -EBADMSG);
    assert_int_equal(res.bad_offset, hlen);
    /* an impossible length */
    memcpy(rec, "\x00\x00\x00\x00", 4);
    n = build(buf, rec, GW_SNAP_RECORD_HEAD + plen);
    assert_int_equal(restore_file(buf, n, &res), -EBADMSG);
    assert_non_null(strstr(res.reason, "out of range"));
    /* a good CRC over something that is not an item (no key) */
    m.key.len = 0;
    plen = geogate__wan__v1__mutation__pack(&m, rec + GW_SNAP_RECORD_HEAD);
    gw_snap_record_head(rec + GW_SNAP_RECORD_HEAD, (uint32_t)plen, rec);
    n = build(buf, rec, GW_SNAP_RECORD_HEAD + plen);
    assert_int_equal(restore_file(buf, n, &res), -EBADMSG);
    assert_non_null(strstr(res.reason, "not an item"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_layout),
        cmocka_unit_test(test_header_rejects),
        cmocka_unit_test(test_records),
        cmocka_unit_test(test_restore_header_errors),
        cmocka_unit_test(test_restore_record_errors),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
