/*
 * test_grpc_frame — unit tests for wan/grpc_frame (the gRPC 5-byte length prefix):
 * messages cut at every possible chunk boundary and at random ones, zero-length
 * messages, the size limit (exactly at it and one over), the compressed flag and other
 * flag bytes, truncated streams, sticky errors, and the encoder round-tripping real
 * protobuf messages.  Also the small helpers of wan/grpc.c: status names, grpc-message
 * percent-encoding, grpc-timeout values and the reconnect backoff.  Pure logic, one
 * thread, no I/O.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/geogate_wan.pb-c.h"
#include "wan/grpc.h"
#include "wan/grpc_frame.h"

/* A stream of three messages: 3 bytes, 0 bytes, 300 bytes. */
static size_t make_stream(uint8_t *out)
{
    size_t n = 0;

    wan_grpc_frame_prefix(out + n, 3);
    n += 5;
    memcpy(out + n, "abc", 3);
    n += 3;
    wan_grpc_frame_prefix(out + n, 0);
    n += 5;
    wan_grpc_frame_prefix(out + n, 300);
    n += 5;
    for (int i = 0; i < 300; i++) {
        out[n++] = (uint8_t)i;
    }
    return n;
}

struct collected {
    size_t count;
    size_t lens[8];
    uint8_t data[8][300];
};

/* Feed buf[0..len) in chunks ending at the offsets in cuts; collect messages. */
static int feed_chunks(struct wan_grpc_deframer *d, const uint8_t *buf, size_t len,
                       const size_t *cuts, size_t ncuts, struct collected *got)
{
    size_t start = 0;

    for (size_t c = 0; c <= ncuts; c++) {
        size_t end = c < ncuts ? cuts[c] : len;
        size_t pos = start;

        while (pos < end) {
            const uint8_t *msg = NULL;
            size_t used = 0, msg_len = 0;
            int rc = wan_grpc_deframer_feed(d, buf + pos, end - pos, &used, &msg, &msg_len);

            if (rc < 0) {
                return rc;
            }
            assert_true(used <= end - pos);
            pos += used;
            if (rc == WAN_GRPC_FRAME_MESSAGE) {
                assert_non_null(msg);
                assert_true(got->count < 8);
                got->lens[got->count] = msg_len;
                memcpy(got->data[got->count], msg, msg_len);
                got->count++;
            } else {
                assert_int_equal(rc, WAN_GRPC_FRAME_MORE);
                assert_int_equal(pos, end);
            }
        }
        start = end;
    }
    return 0;
}

static void check_three(const struct collected *got)
{
    assert_int_equal(got->count, 3);
    assert_int_equal(got->lens[0], 3);
    assert_memory_equal(got->data[0], "abc", 3);
    assert_int_equal(got->lens[1], 0);
    assert_int_equal(got->lens[2], 300);
    for (int i = 0; i < 300; i++) {
        assert_int_equal(got->data[2][i], (uint8_t)i);
    }
}

/* Every single cut point, and every pair of cut points. */
static void test_every_boundary(void **state)
{
    uint8_t buf[400];
    size_t len = make_stream(buf);

    (void)state;
    for (size_t a = 0; a <= len; a++) {
        for (size_t b = a; b <= len; b += (a < 20 ? 1 : 7)) {
            struct wan_grpc_deframer d;
            struct collected got = {0};
            size_t cuts[2] = {a, b};

            wan_grpc_deframer_init(&d, 1000);
            assert_int_equal(feed_chunks(&d, buf, len, cuts, 2, &got), 0);
            check_three(&got);
            assert_int_equal(wan_grpc_deframer_finish(&d), 0);
            assert_int_equal(wan_grpc_deframer_pending(&d), 0);
            wan_grpc_deframer_free(&d);
        }
    }
}

/* One byte at a time, and random chunkings. */
static void test_random_chunks(void **state)
{
    uint8_t buf[400];
    size_t len = make_stream(buf);
    uint64_t rng = 12345;

    (void)state;
    for (int round = 0; round < 500; round++) {
        struct wan_grpc_deframer d;
        struct collected got = {0};
        size_t cuts[64], ncuts = 0, at = 0;

        while (ncuts < 64) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            at += round == 0 ? 1 : rng % 40;
            if (at >= len) {
                break;
            }
            cuts[ncuts++] = at;
        }
        wan_grpc_deframer_init(&d, 1000);
        assert_int_equal(feed_chunks(&d, buf, len, cuts, ncuts, &got), 0);
        check_three(&got);
        wan_grpc_deframer_free(&d);
    }
}

/* The decoder stops right after a message: the rest is the caller's to feed. */
static void test_stops_after_message(void **state)
{
    uint8_t buf[400];
    size_t len = make_stream(buf), used = 0, msg_len = 0;
    const uint8_t *msg = NULL;
    struct wan_grpc_deframer d;

    (void)state;
    wan_grpc_deframer_init(&d, 0);
    assert_int_equal(d.max_len, WAN_GRPC_MAX_MESSAGE_DEFAULT);
    assert_int_equal(wan_grpc_deframer_feed(&d, buf, len, &used, &msg, &msg_len),
                     WAN_GRPC_FRAME_MESSAGE);
    assert_int_equal(used, 8);
    assert_int_equal(msg_len, 3);
    assert_int_equal(wan_grpc_deframer_feed(&d, buf + 8, len - 8, &used, &msg, &msg_len),
                     WAN_GRPC_FRAME_MESSAGE);
    assert_int_equal(used, 5);
    assert_int_equal(msg_len, 0);
    assert_non_null(msg);
    /* Feeding nothing is fine and changes nothing. */
    assert_int_equal(wan_grpc_deframer_feed(&d, buf, 0, &used, &msg, &msg_len),
                     WAN_GRPC_FRAME_MORE);
    assert_int_equal(used, 0);
    assert_int_equal(wan_grpc_deframer_finish(&d), 0);
    wan_grpc_deframer_free(&d);
}

static void test_limit(void **state)
{
    uint8_t buf[16];
    size_t used = 0, msg_len = 0;
    const uint8_t *msg = NULL;
    struct wan_grpc_deframer d;

    (void)state;
    /* Exactly at the limit is fine. */
    wan_grpc_deframer_init(&d, 4);
    wan_grpc_frame_prefix(buf, 4);
    memcpy(buf + 5, "wxyz", 4);
    assert_int_equal(wan_grpc_deframer_feed(&d, buf, 9, &used, &msg, &msg_len),
                     WAN_GRPC_FRAME_MESSAGE);
    assert_int_equal(msg_len, 4);
    /* One over is refused as soon as the prefix is complete, before any payload. */
    wan_grpc_frame_prefix(buf, 5);
    assert_int_equal(wan_grpc_deframer_feed(&d, buf, 4, &used, &msg, &msg_len),
                     WAN_GRPC_FRAME_MORE);
    assert_int_equal(wan_grpc_deframer_feed(&d, buf + 4, 12, &used, &msg, &msg_len),
                     -WAN_GRPC_FRAME_ETOOBIG);
    assert_int_equal(used, 1);
    /* Sticky. */
    assert_int_equal(wan_grpc_deframer_feed(&d, buf, 5, &used, &msg, &msg_len),
                     -WAN_GRPC_FRAME_ETOOBIG);
    assert_int_equal(used, 0);
    assert_int_equal(wan_grpc_deframer_finish(&d), -WAN_GRPC_FRAME_ETOOBIG);
    wan_grpc_deframer_free(&d);

    /* A prefix claiming 4 GiB - 1 with the default limit. */
    wan_grpc_deframer_init(&d, 0);
    memcpy(buf, "\x00\xff\xff\xff\xff", 5);
    assert_int_equal(wan_grpc_deframer_feed(&d, buf, 5, &used, &msg, &msg_len),
                     -WAN_GRPC_FRAME_ETOOBIG);
    wan_grpc_deframer_free(&d);
}

/* A claimed size costs memory only as the bytes arrive. */
static void test_no_allocation_before_data(void **state)
{
    uint8_t buf[5];
    size_t used = 0, msg_len = 0;
    const uint8_t *msg = NULL;
    struct wan_grpc_deframer d;

    (void)state;
    wan_grpc_deframer_init(&d, 0);
    wan_grpc_frame_prefix(buf, WAN_GRPC_MAX_MESSAGE_DEFAULT);
    assert_int_equal(wan_grpc_deframer_feed(&d, buf, 5, &used, &msg, &msg_len),
                     WAN_GRPC_FRAME_MORE);
    assert_int_equal(d.cap, 0);
    assert_int_equal(wan_grpc_deframer_feed(&d, (const uint8_t *)"x", 1, &used, &msg, &msg_len),
                     WAN_GRPC_FRAME_MORE);
    assert_true(d.cap <= 256);
    assert_int_equal(wan_grpc_deframer_pending(&d), 6);
    wan_grpc_deframer_free(&d);
}

static void test_flags(void **state)
{
    uint8_t buf[8];
    size_t used = 0, msg_len = 0;
    const uint8_t *msg = NULL;
    struct wan_grpc_deframer d;

    (void)state;
    wan_grpc_deframer_init(&d, 100);
    wan_grpc_frame_prefix(buf, 3);
    buf[0] = 1; /* compressed */
    assert_int_equal(wan_grpc_deframer_feed(&d, buf, 8, &used, &msg, &msg_len),
                     -WAN_GRPC_FRAME_ECOMPRESSED);
    assert_int_equal(used, 5);
    wan_grpc_deframer_free(&d);

    for (int flag = 2; flag < 256; flag += 31) {
        wan_grpc_deframer_init(&d, 100);
        buf[0] = (uint8_t)flag;
        assert_int_equal(wan_grpc_deframer_feed(&d, buf, 8, &used, &msg, &msg_len),
                         -WAN_GRPC_FRAME_EFLAG);
        wan_grpc_deframer_free(&d);
    }
    assert_string_equal(wan_grpc_frame_strerror(-WAN_GRPC_FRAME_ECOMPRESSED),
                        "compressed message (only identity encoding is accepted)");
    assert_string_equal(wan_grpc_frame_strerror(-99), "?");
}

static void test_truncated(void **state)
{
    uint8_t buf[400];
    size_t len = make_stream(buf);

    (void)state;
    /* Ending anywhere but on a message boundary is truncation. */
    for (size_t end = 0; end <= len; end++) {
        struct wan_grpc_deframer d;
        struct collected got = {0};
        int at_boundary = end == 0 || end == 8 || end == 13 || end == len;

        wan_grpc_deframer_init(&d, 1000);
        assert_int_equal(feed_chunks(&d, buf, end, NULL, 0, &got), 0);
        if (at_boundary) {
            assert_int_equal(wan_grpc_deframer_finish(&d), 0);
        } else {
            assert_int_equal(wan_grpc_deframer_finish(&d), -WAN_GRPC_FRAME_ETRUNCATED);
            assert_true(wan_grpc_deframer_pending(&d) > 0);
        }
        wan_grpc_deframer_free(&d);
    }
}

/* The encoder's output decodes back to the same protobuf. */
static void test_encode_roundtrip(void **state)
{
    Geogate__Wan__V1__Mutation m[3], *mp[3];
    Geogate__Wan__V1__ShipRequest req = GEOGATE__WAN__V1__SHIP_REQUEST__INIT;
    Geogate__Wan__V1__ShipRequest *back;
    struct wan_grpc_deframer d;
    const uint8_t *msg = NULL;
    size_t size, used = 0, msg_len = 0;
    uint8_t *buf;

    (void)state;
    for (int i = 0; i < 3; i++) {
        geogate__wan__v1__mutation__init(&m[i]);
        m[i].key.data = (uint8_t *)"key";
        m[i].key.len = 3;
        m[i].value.data = (uint8_t *)"value";
        m[i].value.len = (size_t)i + 1;
        m[i].hlc = 1000u + (unsigned)i;
        mp[i] = &m[i];
    }
    req.origin_site = "eu-west";
    req.gateway_id = 7;
    req.first_seq = 41;
    req.n_mutations = 3;
    req.mutations = mp;
    size = wan_grpc_frame_size(&req.base);
    buf = malloc(size);
    assert_non_null(buf);
    assert_int_equal(wan_grpc_frame_write(&req.base, buf), size);
    assert_int_equal(buf[0], 0);
    assert_int_equal((size_t)buf[1] << 24 | (size_t)buf[2] << 16 | (size_t)buf[3] << 8 | buf[4],
                     size - 5);
    wan_grpc_deframer_init(&d, 0);
    assert_int_equal(wan_grpc_deframer_feed(&d, buf, size, &used, &msg, &msg_len),
                     WAN_GRPC_FRAME_MESSAGE);
    back = geogate__wan__v1__ship_request__unpack(NULL, msg_len, msg);
    assert_non_null(back);
    assert_string_equal(back->origin_site, "eu-west");
    assert_int_equal(back->first_seq, 41);
    assert_int_equal(back->n_mutations, 3);
    assert_int_equal(back->mutations[2]->value.len, 3);
    assert_int_equal(back->mutations[1]->hlc, 1001);
    geogate__wan__v1__ship_request__free_unpacked(back, NULL);
    wan_grpc_deframer_free(&d);
    free(buf);
}

static void test_status_names(void **state)
{
    (void)state;
    assert_string_equal(wan_grpc_status_name(WAN_GRPC_OK), "OK");
    assert_string_equal(wan_grpc_status_name(WAN_GRPC_UNIMPLEMENTED), "UNIMPLEMENTED");
    assert_string_equal(wan_grpc_status_name(WAN_GRPC_UNAUTHENTICATED), "UNAUTHENTICATED");
    assert_string_equal(wan_grpc_status_name(-1), "?");
    assert_string_equal(wan_grpc_status_name(WAN_GRPC_STATUS_MAX), "?");
    for (int i = 0; i < WAN_GRPC_STATUS_MAX; i++) {
        assert_non_null(wan_grpc_status_name(i));
        assert_string_not_equal(wan_grpc_status_name(i), "?");
    }
    assert_string_equal(wan_grpc_log_level_name(WAN_GRPC_LOG_WARN), "warn");
}

static void test_message_escaping(void **state)
{
    char enc[64], dec[64];

    (void)state;
    assert_int_equal(wan_grpc_message_encode("plain text", enc, sizeof(enc)), 10);
    assert_string_equal(enc, "plain text");
    wan_grpc_message_encode("100% sure\n\xc3\xa9", enc, sizeof(enc));
    assert_string_equal(enc, "100%25 sure%0A%C3%A9");
    wan_grpc_message_decode(enc, strlen(enc), dec, sizeof(dec));
    assert_string_equal(dec, "100% sure\n\xc3\xa9");
    /* Never cuts an escape in half. */
    wan_grpc_message_encode("ab\n", enc, 5);
    assert_string_equal(enc, "ab");
    /* Bad escapes stay as they are; %00 ends the string. */
    wan_grpc_message_decode("%zz%4", 5, dec, sizeof(dec));
    assert_string_equal(dec, "%zz%4");
    wan_grpc_message_decode("ab%00cd", 7, dec, sizeof(dec));
    assert_string_equal(dec, "ab");
    wan_grpc_message_decode("abcdef", 6, dec, 4);
    assert_string_equal(dec, "abc");
}

static void test_timeout_format(void **state)
{
    char out[10];

    (void)state;
    assert_string_equal(wan_grpc_timeout_format(250, out), "250m");
    assert_string_equal(wan_grpc_timeout_format(0, out), "0m");
    assert_string_equal(wan_grpc_timeout_format(99999999, out), "99999999m");
    assert_string_equal(wan_grpc_timeout_format(100000000, out), "100000S");
    assert_string_equal(wan_grpc_timeout_format(UINT32_MAX, out), "4294967S");
}

static void test_backoff(void **state)
{
    uint64_t rng = 42;
    uint32_t seen_min = UINT32_MAX, seen_max = 0;

    (void)state;
    /* Attempt n waits within [ceiling/2, ceiling], ceiling = base * 2^n capped at max. */
    for (unsigned attempt = 0; attempt < 40; attempt++) {
        uint64_t ceiling = 100;

        for (unsigned i = 0; i < attempt && ceiling < 30000; i++) {
            ceiling *= 2;
        }
        if (ceiling > 30000) {
            ceiling = 30000;
        }
        for (int k = 0; k < 200; k++) {
            uint32_t d = wan_grpc_backoff_ms(attempt, 100, 30000, &rng);

            assert_true(d >= ceiling / 2);
            assert_true(d <= ceiling);
            if (attempt == 39) {
                seen_min = d < seen_min ? d : seen_min;
                seen_max = d > seen_max ? d : seen_max;
            }
        }
    }
    /* Jitter actually spreads. */
    assert_true(seen_max - seen_min > 5000);
    /* Degenerate arguments. */
    assert_true(wan_grpc_backoff_ms(0, 0, 0, &rng) >= 1);
    assert_true(wan_grpc_backoff_ms(5, 1000, 10, &rng) <= 1000);
    assert_true(wan_grpc_backoff_ms(1000000, 1, UINT32_MAX, NULL) >= 1);
    rng = 0;
    assert_true(wan_grpc_backoff_ms(3, 10, 1000, &rng) <= 80);
    assert_true(rng != 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_boundary),
        cmocka_unit_test(test_random_chunks),
        cmocka_unit_test(test_stops_after_message),
        cmocka_unit_test(test_limit),
        cmocka_unit_test(test_no_allocation_before_data),
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_encode_roundtrip),
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_message_escaping),
        cmocka_unit_test(test_timeout_format),
        cmocka_unit_test(test_backoff),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
