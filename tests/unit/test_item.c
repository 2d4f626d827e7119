/*
 * test_item — gateway/store/item.c: reading `gets` replies (END, one item, many items,
 * versioned items, tombstones, plain memcached items, headers that do not check, a VALUE
 * without a cas, error lines, truncated and malformed replies) and writing an item back
 * (set/add/cas lines, small values inline, large ones after the line, tombstones, an
 * expiry already passed), read back with the same reader.  Pure logic over evbuffers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "gateway/store/item.h"

static struct wan_item_header header(uint64_t hlc, uint32_t flags, uint32_t expiry, bool tomb)
{
    struct wan_item_header h;

    memset(&h, 0, sizeof(h));
    h.version.hlc = hlc;
    h.version.site_id = 0x01020304u;
    h.version.gateway_id = 5;
    h.client_flags = flags;
    h.expiry = expiry;
    h.tombstone = tomb;
    return h;
}

/* Append "VALUE key MARKER n cas\r\n" + header + value + "\r\n" to b. */
static void add_versioned(struct evbuffer *b, const char *key, const struct wan_item_header *h,
                          const char *value, uint64_t cas)
{
    uint8_t raw[WAN_ITEM_HEADER_SIZE];
    size_t vlen = value != NULL ? strlen(value) : 0;

    wan_item_header_encode(h, raw);
    evbuffer_add_printf(b, "VALUE %s %u %zu %llu\r\n", key, WAN_ITEM_FLAGS_MARKER,
                        WAN_ITEM_HEADER_SIZE + vlen, (unsigned long long)cas);
    evbuffer_add(b, raw, sizeof(raw));
    evbuffer_add(b, value != NULL ? value : "", vlen);
    evbuffer_add(b, "\r\n", 2);
}

static void test_one_end(void **state)
{
    struct evbuffer *b = evbuffer_new();
    struct gw_item_view it;
    struct gw_cur cur;
    bool present = true;
    char err[64];

    (void)state;
    memset(&cur, 0, sizeof(cur));
    evbuffer_add_printf(b, "END\r\n");
    assert_int_equal(gw_gets_one(b, &it, &present, err, sizeof(err)), 0);
    assert_false(present);
    assert_int_equal(gw_cur_parse(b, &cur, err, sizeof(err)), 0);
    assert_false(cur.present);
    assert_false(cur.found);
    evbuffer_free(b);
}

static void test_one_versioned(void **state)
{
    struct evbuffer *b = evbuffer_new();
    struct wan_item_header h = header(123456789, 0xfeed, 1765000000u, false);
    struct gw_item_view it;
    struct gw_cur cur;
    bool present;
    char err[64];

    (void)state;
    memset(&cur, 0, sizeof(cur));
    add_versioned(b, "k1", &h, "hello", 77);
    evbuffer_add_printf(b, "END\r\n");
    assert_int_equal(gw_gets_one(b, &it, &present, err, sizeof(err)), 0);
    assert_true(present);
    assert_true(it.versioned);
    assert_true(it.found);
    assert_true(it.has_cas);
    assert_true(it.cas == 77);
    assert_int_equal(it.nkey, 2);
    assert_memory_equal(it.key, "k1", 2);
    assert_true(it.hdr.version.hlc == 123456789);
    assert_int_equal(it.hdr.client_flags, 0xfeed);
    assert_int_equal(it.len, 5);
    assert_memory_equal(it.val, "hello", 5);
    /* the owned copy */
    assert_int_equal(gw_cur_parse(b, &cur, err, sizeof(err)), 0);
    assert_true(cur.present && cur.found && cur.versioned);
    assert_true(cur.cas == 77);
    assert_int_equal(cur.len, 5);
    assert_memory_equal(cur.val, "hello", 5);
    assert_true(cur.val != it.val);
    gw_cur_release(&cur);
    assert_null(cur.val);
    evbuffer_free(b);
}

static void test_one_tombstone_and_plain(void **state)
{
    struct evbuffer *b = evbuffer_new();
    struct wan_item_header h = header(42, 3, 0, true);
    struct gw_cur cur;
    char err[64];

    (void)state;
    memset(&cur, 0, sizeof(cur));
    add_versioned(b, "k", &h, NULL, 9);
    evbuffer_add_printf(b, "END\r\n");
    assert_int_equal(gw_cur_parse(b, &cur, err, sizeof(err)), 0);
    assert_true(cur.present);
    assert_false(cur.found); /* a tombstone is an absence */
    assert_true(cur.versioned);
    assert_true(cur.hdr.tombstone);
    assert_true(cur.hdr.version.hlc == 42);
    assert_null(cur.val);

    /* a plain memcached item: version 0, its own flags */
    evbuffer_drain(b, evbuffer_get_length(b));
    evbuffer_add_printf(b, "VALUE k 31 3 8\r\nabc\r\nEND\r\n");
    assert_int_equal(gw_cur_parse(b, &cur, err, sizeof(err)), 0);
    assert_true(cur.present && cur.found);
    assert_false(cur.versioned);
    assert_int_equal(cur.hdr.client_flags, 31);
    assert_true(cur.hdr.version.hlc == 0);
    assert_int_equal(cur.len, 3);
    assert_memory_equal(cur.val, "abc", 3);
    gw_cur_release(&cur);
    evbuffer_free(b);
}

static void test_bad_header_is_version_0(void **state)
{
    struct evbuffer *b = evbuffer_new();
    struct wan_item_header h = header(42, 3, 0, false);
    uint8_t raw[WAN_ITEM_HEADER_SIZE];
    struct gw_item_view it;
    bool present;
    char err[64];

    (void)state;
    wan_item_header_encode(&h, raw);
    raw[10] ^= 1; /* the CRC no longer checks */
    evbuffer_add_printf(b, "VALUE k %u %d 1\r\n", WAN_ITEM_FLAGS_MARKER, WAN_ITEM_HEADER_SIZE + 1);
    evbuffer_add(b, raw, sizeof(raw));
    evbuffer_add(b, "z\r\nEND\r\n", 8);
    assert_int_equal(gw_gets_one(b, &it, &present, err, sizeof(err)), 0);
    assert_true(present && it.found);
    assert_false(it.versioned);
    assert_int_equal(it.hdr.client_flags, WAN_ITEM_FLAGS_MARKER);
    assert_int_equal(it.len, WAN_ITEM_HEADER_SIZE + 1); /* served whole, as it is */
    evbuffer_free(b);
}

static void test_one_errors(void **state)
{
    struct evbuffer *b = evbuffer_new();
    struct gw_item_view it;
    bool present;
    char err[64];
    static const char *const unexpected[] = {
        "VALUE k 0 3\r\nabc\r\nEND\r\n", /* no cas */
        "VALUE k 0 10 1\r\nabc\r\n",     /* shorter than it says */
        "VALUE k\r\n",                   /* malformed */
        "STORED\r\n",                    /* not a gets reply */
        "END",                           /* no CRLF */
        "",
        "ERROR\r\n",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(unexpected) / sizeof(unexpected[0]); i++) {
        evbuffer_drain(b, evbuffer_get_length(b));
        evbuffer_add(b, unexpected[i], strlen(unexpected[i]));
        assert_int_equal(gw_gets_one(b, &it, &present, err, sizeof(err)), -1);
        assert_string_equal(err, "SERVER_ERROR unexpected reply from node");
    }
    /* the node's own errors are answered as they are (cut to fit) */
    evbuffer_drain(b, evbuffer_get_length(b));
    evbuffer_add_printf(b, "SERVER_ERROR out of memory storing object\r\n");
    assert_int_equal(gw_gets_one(b, &it, &present, err, sizeof(err)), -1);
    assert_string_equal(err, "SERVER_ERROR out of memory storing object");
    evbuffer_drain(b, evbuffer_get_length(b));
    evbuffer_add_printf(b, "CLIENT_ERROR bad command line format\r\n");
    assert_int_equal(gw_gets_one(b, &it, &present, err, 20), -1);
    assert_string_equal(err, "CLIENT_ERROR bad co");
    evbuffer_free(b);
}

static void test_next_many(void **state)
{
    struct evbuffer *b = evbuffer_new();
    struct wan_item_header h1 = header(1, 1, 0, false), h3 = header(3, 3, 0, true);
    struct gw_gets_reader rd;
    struct gw_item_view it;
    const char *line;
    size_t n;

    (void)state;
    add_versioned(b, "a", &h1, "one", 11);
    evbuffer_add_printf(b, "VALUE b 2 3 22\r\ntwo\r\n");
    add_versioned(b, "c", &h3, NULL, 33);
    evbuffer_add_printf(b, "END\r\n");
    gw_gets_reader_init(&rd, b);
    assert_int_equal(gw_gets_next(&rd, &it), GW_GETS_ITEM);
    assert_memory_equal(it.key, "a", 1);
    assert_true(it.versioned && it.found && it.cas == 11);
    assert_memory_equal(it.val, "one", 3);
    assert_int_equal(gw_gets_next(&rd, &it), GW_GETS_ITEM);
    assert_memory_equal(it.key, "b", 1);
    assert_false(it.versioned);
    assert_true(it.found && it.cas == 22 && it.hdr.client_flags == 2);
    assert_int_equal(gw_gets_next(&rd, &it), GW_GETS_ITEM);
    assert_memory_equal(it.key, "c", 1);
    assert_true(it.versioned);
    assert_false(it.found);
    assert_null(it.val);
    assert_int_equal(it.len, 0);
    assert_int_equal(gw_gets_next(&rd, &it), GW_GETS_END);
    /* past the end there is nothing to read */
    assert_int_equal(gw_gets_next(&rd, &it), GW_GETS_ERROR);

    /* an error in the middle stops the reader there */
    evbuffer_drain(b, evbuffer_get_length(b));
    evbuffer_add_printf(b, "VALUE b 2 3 22\r\ntwo\r\nSERVER_ERROR busy\r\n");
    gw_gets_reader_init(&rd, b);
    assert_int_equal(gw_gets_next(&rd, &it), GW_GETS_ITEM);
    assert_int_equal(gw_gets_next(&rd, &it), GW_GETS_ERROR);
    line = gw_gets_reader_line(&rd, &n);
    assert_int_equal(n, 17);
    assert_memory_equal(line, "SERVER_ERROR busy", 17);
    assert_int_equal(gw_gets_next(&rd, &it), GW_GETS_ERROR);
    for (int i = 0; i < GW_GETS_NEXT_MAX; i++) {
        assert_non_null(gw_gets_next_names[i]);
    }
    evbuffer_free(b);
}

/* Write it with cmd, check the line, and read the item back as a gets would show it. */
static void write_read(enum gw_item_cmd cmd, uint64_t cas, const struct gw_item *it,
                       const char *want_line, bool want_inline)
{
    char line[GW_ITEM_LINE_MAX];
    struct evbuffer *data = NULL, *reply = evbuffer_new();
    struct gw_item_view v;
    bool present;
    char err[64];
    size_t n = gw_item_write(line, cmd, cas, it, 86400, &data);
    size_t head = strlen(want_line);
    size_t vlen = it->hdr->tombstone ? 0 : it->vlen;

    assert_true(n >= head);
    assert_memory_equal(line, want_line, head);
    if (want_inline) {
        assert_null(data);
        assert_int_equal(n, head + WAN_ITEM_HEADER_SIZE + vlen + 2);
    } else {
        assert_non_null(data);
        assert_int_equal(n, head);
        assert_int_equal(evbuffer_get_length(data), WAN_ITEM_HEADER_SIZE + vlen + 2);
    }
    /* what memcached would hand back for it */
    evbuffer_add_printf(reply, "VALUE %.*s %u %zu 5\r\n", (int)it->nkey, it->key,
                        WAN_ITEM_FLAGS_MARKER, WAN_ITEM_HEADER_SIZE + vlen);
    if (want_inline) {
        evbuffer_add(reply, line + head, n - head);
    } else {
        evbuffer_add_buffer(reply, data);
        evbuffer_free(data);
    }
    evbuffer_add_printf(reply, "END\r\n");
    assert_int_equal(gw_gets_one(reply, &v, &present, err, sizeof(err)), 0);
    assert_true(present && v.versioned);
    assert_int_equal(wan_version_cmp(&v.hdr.version, &it->hdr->version), 0);
    assert_int_equal(v.hdr.client_flags, it->hdr->client_flags);
    assert_int_equal(v.hdr.expiry, it->hdr->expiry);
    assert_int_equal(v.hdr.tombstone, it->hdr->tombstone);
    assert_int_equal(v.len, vlen);
    if (vlen > 0) {
        assert_memory_equal(v.val, it->value, vlen);
    }
    evbuffer_free(reply);
}

static void test_write(void **state)
{
    struct wan_item_header h = header(77, 12, 1765000000u, false);
    struct gw_item it = {
        .key = "key:1", .nkey = 5, .hdr = &h, .value = (const uint8_t *)"abc", .vlen = 3};
    char want[128];
    uint8_t *big = malloc(GW_ITEM_INLINE_VALUE + 1);

    (void)state;
    snprintf(want, sizeof(want), "set key:1 %u 1765000000 35\r\n", WAN_ITEM_FLAGS_MARKER);
    write_read(GW_ITEM_SET, 0, &it, want, true);
    snprintf(want, sizeof(want), "add key:1 %u 1765000000 35\r\n", WAN_ITEM_FLAGS_MARKER);
    write_read(GW_ITEM_ADD, 99, &it, want, true); /* no cas on an add */
    snprintf(want, sizeof(want), "cas key:1 %u 1765000000 35 99\r\n", WAN_ITEM_FLAGS_MARKER);
    write_read(GW_ITEM_CAS, 99, &it, want, true);

    /* never expires; already expired (memcached: a negative exptime) */
    h.expiry = 0;
    snprintf(want, sizeof(want), "set key:1 %u 0 35\r\n", WAN_ITEM_FLAGS_MARKER);
    write_read(GW_ITEM_SET, 0, &it, want, true);
    h.expiry = 1;
    snprintf(want, sizeof(want), "set key:1 %u -1 35\r\n", WAN_ITEM_FLAGS_MARKER);
    write_read(GW_ITEM_SET, 0, &it, want, true);

    /* a tombstone: no value whatever the item holds, the tombstone lifetime */
    h.tombstone = true;
    h.expiry = 1765000000u;
    snprintf(want, sizeof(want), "set key:1 %u 86400 32\r\n", WAN_ITEM_FLAGS_MARKER);
    write_read(GW_ITEM_SET, 0, &it, want, true);
    h.tombstone = false;

    /* the largest inline value, and the smallest that goes after the line */
    assert_non_null(big);
    memset(big, 'b', GW_ITEM_INLINE_VALUE + 1);
    it.value = big;
    it.vlen = GW_ITEM_INLINE_VALUE;
    snprintf(want, sizeof(want), "cas key:1 %u 1765000000 %d 7\r\n", WAN_ITEM_FLAGS_MARKER,
             WAN_ITEM_HEADER_SIZE + GW_ITEM_INLINE_VALUE);
    write_read(GW_ITEM_CAS, 7, &it, want, true);
    it.vlen = GW_ITEM_INLINE_VALUE + 1;
    snprintf(want, sizeof(want), "cas key:1 %u 1765000000 %d 7\r\n", WAN_ITEM_FLAGS_MARKER,
             WAN_ITEM_HEADER_SIZE + GW_ITEM_INLINE_VALUE + 1);
    write_read(GW_ITEM_CAS, 7, &it, want, false);
    free(big);
    for (int i = 0; i < GW_ITEM_CMD_MAX; i++) {
        assert_non_null(gw_item_cmd_names[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_end),
        cmocka_unit_test(test_one_versioned),
        cmocka_unit_test(test_one_tombstone_and_plain),
        cmocka_unit_test(test_bad_header_is_version_0),
        cmocka_unit_test(test_one_errors),
        cmocka_unit_test(test_next_many),
        cmocka_unit_test(test_write),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
