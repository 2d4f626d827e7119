/*
 * test_version — wan/version.c: version order (ties by site, then gateway), site ids
 * (FNV-1a 32 vectors), the hybrid logical clock under an injected clock that jumps
 * backwards, the receive rule, the drift bound (a peer an hour ahead cannot drag it; a clock
 * stepped back past it restarts), saturation, several threads at once, and
 * the 32-byte item header: layout, round trip, and every corruption rejected.
 * Pure logic plus a few threads; no I/O.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "wan/crc32c.h"
#include "wan/version.h"

/* ---- versions ---------------------------------------------------------------------- */

static struct wan_version ver(uint64_t hlc, uint32_t site, uint16_t gw)
{
    struct wan_version v = {hlc, site, gw};
    return v;
}

static void test_version_order(void **state)
{
    struct wan_version a, b;

    (void)state;
    /* hlc decides first, whatever site and gateway say */
    a = ver(100, 9, 9);
    b = ver(101, 1, 1);
    assert_int_equal(wan_version_cmp(&a, &b), -1);
    assert_int_equal(wan_version_cmp(&b, &a), 1);
    /* tie on hlc: site id decides */
    a = ver(100, 1, 9);
    b = ver(100, 2, 0);
    assert_int_equal(wan_version_cmp(&a, &b), -1);
    assert_int_equal(wan_version_cmp(&b, &a), 1);
    /* tie on hlc and site: gateway id decides */
    a = ver(100, 2, 1);
    b = ver(100, 2, 2);
    assert_int_equal(wan_version_cmp(&a, &b), -1);
    assert_int_equal(wan_version_cmp(&b, &a), 1);
    /* equal */
    assert_int_equal(wan_version_cmp(&a, &a), 0);
    /* unsigned comparisons at the extremes */
    a = ver(UINT64_MAX, 0, 0);
    b = ver(0, UINT32_MAX, UINT16_MAX);
    assert_int_equal(wan_version_cmp(&a, &b), 1);
    a = ver(5, UINT32_MAX, 0);
    b = ver(5, 0x7fffffff, UINT16_MAX);
    assert_int_equal(wan_version_cmp(&a, &b), 1);
}

static void test_version_zero(void **state)
{
    struct wan_version z = ver(0, 0, 0), v;

    (void)state;
    assert_true(wan_version_is_zero(&z));
    v = ver(0, 0, 1);
    assert_false(wan_version_is_zero(&v));
    assert_int_equal(wan_version_cmp(&z, &v), -1);
    v = ver(1, 0, 0);
    assert_int_equal(wan_version_cmp(&z, &v), -1);
}

static void test_site_id(void **state)
{
    (void)state;
    /* FNV-1a 32 reference values */
    assert_int_equal(wan_site_id(""), 0x811c9dc5u);
    assert_int_equal(wan_site_id(NULL), 0x811c9dc5u);
    assert_int_equal(wan_site_id("a"), 0xe40c292cu);
    assert_int_equal(wan_site_id("foobar"), 0xbf9cf968u);
    assert_int_not_equal(wan_site_id("us-east"), wan_site_id("eu-west"));
    assert_int_equal(wan_site_id("us-east"), wan_site_id("us-east"));
}

/* ---- hybrid logical clock ---------------------------------------------------------- */

static uint64_t fake_clock(void *arg)
{
    return *(uint64_t *)arg;
}

static void test_hlc_send_rule(void **state)
{
    struct wan_hlc hlc;
    uint64_t now = 1000, prev, v;

    (void)state;
    wan_hlc_init(&hlc, fake_clock, &now, 0);
    assert_int_equal(wan_hlc_peek(&hlc), 0);
    v = wan_hlc_now(&hlc);
    assert_int_equal(v, UINT64_C(1000) << 16);
    assert_int_equal(wan_hlc_physical_ms(v), 1000);
    assert_int_equal(wan_hlc_logical(v), 0);
    /* same millisecond: the logical counter moves */
    v = wan_hlc_now(&hlc);
    assert_int_equal(v, (UINT64_C(1000) << 16) + 1);
    assert_int_equal(wan_hlc_logical(v), 1);
    /* physical time moves on: logical resets */
    now = 1001;
    v = wan_hlc_now(&hlc);
    assert_int_equal(v, UINT64_C(1001) << 16);
    assert_int_equal(wan_hlc_peek(&hlc), v);

    /* the clock steps back a whole second: still strictly increasing */
    prev = v;
    now = 1;
    for (int i = 0; i < 1000; i++) {
        v = wan_hlc_now(&hlc);
        assert_true(v > prev);
        assert_int_equal(v, prev + 1);
        prev = v;
    }
    assert_int_equal(wan_hlc_physical_ms(v), 1001);
    /* and when physical time overtakes, it takes over again */
    now = 5000;
    v = wan_hlc_now(&hlc);
    assert_int_equal(v, UINT64_C(5000) << 16);
}

static void test_hlc_logical_carry(void **state)
{
    struct wan_hlc hlc;
    uint64_t now = 7, prev = 0, v = 0;

    (void)state;
    wan_hlc_init(&hlc, fake_clock, &now, 0);
    /* more events in one millisecond than the logical counter holds: carries into the
     * physical part, never repeats */
    for (int i = 0; i < 70000; i++) {
        v = wan_hlc_now(&hlc);
        assert_true(v > prev);
        prev = v;
    }
    assert_int_equal(v, (UINT64_C(7) << 16) + 69999);
    assert_int_equal(wan_hlc_physical_ms(v), 8);
}

static void test_hlc_receive_rule(void **state)
{
    struct wan_hlc hlc;
    uint64_t now = 1000, v, remote;

    (void)state;
    wan_hlc_init(&hlc, fake_clock, &now, 0);
    v = wan_hlc_now(&hlc);
    assert_int_equal(v, UINT64_C(1000) << 16);

    /* a remote version from a clock 5 s ahead: we move past it */
    remote = (UINT64_C(6000) << 16) + 17;
    assert_int_equal(wan_hlc_observe(&hlc, remote, &v), 0);
    assert_int_equal(v, remote + 1);
    /* every later local version is newer than what was applied */
    v = wan_hlc_now(&hlc);
    assert_true(v > remote);
    assert_int_equal(v, remote + 2);

    /* an older remote version: old + 1 */
    assert_int_equal(wan_hlc_observe(&hlc, UINT64_C(5) << 16, &v), 0);
    assert_int_equal(v, remote + 3);

    /* physical time beyond both: now << 16 */
    now = 9000;
    assert_int_equal(wan_hlc_observe(&hlc, remote, &v), 0);
    assert_int_equal(v, UINT64_C(9000) << 16);

    /* out may be NULL */
    assert_int_equal(wan_hlc_observe(&hlc, 0, NULL), 0);
    assert_int_equal(wan_hlc_peek(&hlc), (UINT64_C(9000) << 16) + 1);
}

static void test_hlc_drift_bound(void **state)
{
    struct wan_hlc hlc;
    uint64_t now = 10000, v, before;

    (void)state;
    wan_hlc_init(&hlc, fake_clock, &now, 1000);
    before = wan_hlc_now(&hlc);
    /* within the bound */
    assert_int_equal(wan_hlc_observe(&hlc, UINT64_C(10900) << 16, &v), 0);
    assert_int_equal(v, (UINT64_C(10900) << 16) + 1);
    /* beyond it: refused, the clock only takes a local step */
    before = wan_hlc_peek(&hlc);
    assert_int_equal(wan_hlc_observe(&hlc, UINT64_C(12001) << 16, &v), -ERANGE);
    assert_int_equal(v, before + 1);
    assert_true(wan_hlc_physical_ms(wan_hlc_peek(&hlc)) < 12001);
}

/* A peer an hour ahead ships versions from 10 s behind to an hour ahead of us: every one
 * past the bound is refused and counted, and the clock never runs more than the bound past
 * its own physical time (issue 13, point 2). */
static void test_hlc_bound_never_dragged(void **state)
{
    struct wan_hlc hlc;
    struct wan_hlc_stats st;
    uint64_t now = 1700000000000u, v;
    uint64_t refused = 0;

    (void)state;
    wan_hlc_init(&hlc, fake_clock, &now, 1000);
    for (uint64_t d = 0; d <= 3610000; d += 250) {
        uint64_t remote = (now - 10000 + d) << 16 | (d & 0xffff);
        int rc = wan_hlc_observe(&hlc, remote, &v);
        if (d > 11000) {
            /* remote is more than 1000 ms ahead of now */
            assert_int_equal(rc, -ERANGE);
            refused++;
        } else {
            assert_int_equal(rc, 0);
        }
        assert_true(wan_hlc_physical_ms(wan_hlc_peek(&hlc)) <= now + 1000);
        assert_true(wan_hlc_physical_ms(wan_hlc_now(&hlc)) <= now + 1000);
        now += (d % 1000 == 0); /* physical time creeps on */
    }
    wan_hlc_stats(&hlc, &st);
    assert_int_equal(st.refused, refused);
    assert_true(st.max_lead_ms <= 1000);
    assert_true(st.max_lead_ms >= 999); /* the last accepted one was right at the bound */
    assert_int_equal(st.resets, 0);
    assert_int_equal(st.now_ms, now);
    assert_int_equal(st.last, wan_hlc_peek(&hlc));
}

static void test_hlc_beyond_bound(void **state)
{
    struct wan_hlc hlc;
    uint64_t now = 50000;

    (void)state;
    assert_int_equal(wan_hlc_ahead_ms(UINT64_C(50000) << 16, now), 0);
    assert_int_equal(wan_hlc_ahead_ms((UINT64_C(50000) << 16) | 0xffff, now), 0);
    assert_int_equal(wan_hlc_ahead_ms(UINT64_C(49000) << 16, now), 0);
    assert_int_equal(wan_hlc_ahead_ms(UINT64_C(51500) << 16, now), 1500);

    wan_hlc_init(&hlc, fake_clock, &now, 0); /* no bound: nothing is beyond it */
    assert_false(wan_hlc_beyond_bound(&hlc, UINT64_MAX, now));
    wan_hlc_init(&hlc, fake_clock, &now, 1000);
    assert_false(wan_hlc_beyond_bound(&hlc, 0, now));
    assert_false(wan_hlc_beyond_bound(&hlc, UINT64_C(51000) << 16 | 0xffff, now));
    assert_true(wan_hlc_beyond_bound(&hlc, UINT64_C(51001) << 16, now));
    assert_true(wan_hlc_beyond_bound(&hlc, UINT64_MAX, now));
    assert_int_equal(wan_hlc_clock_now_ms(&hlc), 50000);
    /* asking does not count a refusal or move the clock */
    assert_int_equal(atomic_load(&hlc.refused), 0);
    assert_int_equal(wan_hlc_peek(&hlc), 0);
}

/* A gateway that ran an hour ahead and whose clock is corrected without a restart: with a
 * bound, the clock restarts from physical time instead of stamping an hour ahead for the
 * next hour; a step back within the bound keeps the clock monotonic as before. */
static void test_hlc_step_back_past_bound(void **state)
{
    struct wan_hlc hlc;
    struct wan_hlc_stats st;
    uint64_t now = 3600000 + 100000, v, prev;

    (void)state;
    wan_hlc_init(&hlc, fake_clock, &now, 1000);
    prev = wan_hlc_now(&hlc);
    assert_int_equal(wan_hlc_physical_ms(prev), 3700000);

    /* within the bound: monotonic, the logical counter carries */
    now = 3700000 - 900;
    v = wan_hlc_now(&hlc);
    assert_int_equal(v, prev + 1);
    wan_hlc_stats(&hlc, &st);
    assert_int_equal(st.resets, 0);
    assert_true(st.max_lead_ms >= 900);

    /* an hour back: the clock restarts at physical time, counted */
    now = 100000;
    v = wan_hlc_now(&hlc);
    assert_int_equal(v, UINT64_C(100000) << 16);
    wan_hlc_stats(&hlc, &st);
    assert_int_equal(st.resets, 1);
    /* then monotonic again */
    prev = v;
    v = wan_hlc_now(&hlc);
    assert_int_equal(v, prev + 1);
    /* the receive rule after the step: within the bound as usual */
    assert_int_equal(wan_hlc_observe(&hlc, UINT64_C(100500) << 16, &v), 0);
    assert_int_equal(v, (UINT64_C(100500) << 16) + 1);
    wan_hlc_stats(&hlc, &st);
    assert_int_equal(st.resets, 1);

    /* no bound: the old behaviour, never a reset */
    now = 3700000;
    wan_hlc_init(&hlc, fake_clock, &now, 0);
    prev = wan_hlc_now(&hlc);
    now = 100000;
    assert_int_equal(wan_hlc_now(&hlc), prev + 1);
    wan_hlc_stats(&hlc, &st);
    assert_int_equal(st.resets, 0);
}

static void test_hlc_saturation(void **state)
{
    struct wan_hlc hlc;
    uint64_t now = UINT64_MAX, v;

    (void)state;
    /* a clock beyond 48 bits is clamped, never shifted out */
    wan_hlc_init(&hlc, fake_clock, &now, 0);
    v = wan_hlc_now(&hlc);
    assert_int_equal(v, WAN_HLC_PHYSICAL_MAX << 16);

    now = 1;
    wan_hlc_init(&hlc, fake_clock, &now, 0);
    assert_int_equal(wan_hlc_observe(&hlc, UINT64_MAX, &v), 0);
    assert_int_equal(v, UINT64_MAX);
    assert_int_equal(wan_hlc_now(&hlc), UINT64_MAX);
    assert_int_equal(wan_hlc_observe(&hlc, UINT64_MAX - 5, &v), 0);
    assert_int_equal(v, UINT64_MAX);
}

static void test_hlc_real_clock(void **state)
{
    struct wan_hlc hlc;
    uint64_t v;

    (void)state;
    wan_hlc_init(&hlc, NULL, NULL, 0);
    v = wan_hlc_now(&hlc);
    /* after 2023-01-01 and before 2100 */
    assert_true(wan_hlc_physical_ms(v) > UINT64_C(1672531200000));
    assert_true(wan_hlc_physical_ms(v) < UINT64_C(4102444800000));
}

#define HLC_THREADS 4
#define HLC_PER_THREAD 100000

struct hlc_thread {
    struct wan_hlc *hlc;
    uint64_t *out;
};

static void *hlc_worker(void *arg)
{
    struct hlc_thread *t = arg;

    for (int i = 0; i < HLC_PER_THREAD; i++) {
        t->out[i] = (i % 10 == 0) ? (wan_hlc_observe(t->hlc, t->out[i > 0 ? i - 1 : 0], NULL),
                                     wan_hlc_now(t->hlc))
                                  : wan_hlc_now(t->hlc);
    }
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_hlc_threads(void **state)
{
    struct wan_hlc hlc;
    pthread_t tid[HLC_THREADS];
    struct hlc_thread t[HLC_THREADS];
    uint64_t *all = calloc(HLC_THREADS * HLC_PER_THREAD, sizeof(uint64_t));

    (void)state;
    assert_non_null(all);
    wan_hlc_init(&hlc, NULL, NULL, 0);
    for (int i = 0; i < HLC_THREADS; i++) {
        t[i].hlc = &hlc;
        t[i].out = all + (size_t)i * HLC_PER_THREAD;
        assert_int_equal(pthread_create(&tid[i], NULL, hlc_worker, &t[i]), 0);
    }
    for (int i = 0; i < HLC_THREADS; i++) {
        pthread_join(tid[i], NULL);
        /* each thread sees its own values strictly increasing */
        for (int j = 1; j < HLC_PER_THREAD; j++) {
            assert_true(t[i].out[j] > t[i].out[j - 1]);
        }
    }
    /* and no value is handed out twice across threads */
    qsort(all, HLC_THREADS * HLC_PER_THREAD, sizeof(uint64_t), cmp_u64);
    for (size_t j = 1; j < HLC_THREADS * HLC_PER_THREAD; j++) {
        assert_true(all[j] != all[j - 1]);
    }
    free(all);
}

/* ---- item header ------------------------------------------------------------------- */

static struct wan_item_header sample_header(void)
{
    struct wan_item_header h;

    memset(&h, 0, sizeof(h));
    h.version = ver(0x0123456789abcdefu, 0xdeadbeefu, 0xbeef);
    h.client_flags = 0xa1b2c3d4u;
    h.expiry = 1900000000u; /* 0x713fb300 */
    h.tombstone = false;
    return h;
}

static void test_header_layout(void **state)
{
    struct wan_item_header h = sample_header();
    uint8_t b[WAN_ITEM_HEADER_SIZE];
    const uint8_t want[28] = {0x47, 0x47, 0x01, 0x00, 0xd4, 0xc3, 0xb2, 0xa1, 0xef, 0xcd,
                              0xab, 0x89, 0x67, 0x45, 0x23, 0x01, 0xef, 0xbe, 0xad, 0xde,
                              0xef, 0xbe, 0x00, 0x00, 0x00, 0xb3, 0x3f, 0x71};
    uint32_t crc;

    (void)state;
    assert_int_equal(WAN_ITEM_FLAGS_MARKER, 0x67670001u);
    assert_int_equal(WAN_ITEM_HEADER_SIZE, 32);
    wan_item_header_encode(&h, b);
    assert_memory_equal(b, want, sizeof(want));
    crc = wan_crc32c(0, b, 28);
    assert_int_equal(b[28], crc & 0xff);
    assert_int_equal(b[29], (crc >> 8) & 0xff);
    assert_int_equal(b[30], (crc >> 16) & 0xff);
    assert_int_equal(b[31], crc >> 24);

    h.tombstone = true;
    wan_item_header_encode(&h, b);
    assert_int_equal(b[3], WAN_ITEM_BIT_TOMBSTONE);
}

static void assert_header_equal(const struct wan_item_header *a, const struct wan_item_header *b)
{
    assert_int_equal(wan_version_cmp(&a->version, &b->version), 0);
    assert_int_equal(a->client_flags, b->client_flags);
    assert_int_equal(a->expiry, b->expiry);
    assert_int_equal(a->tombstone, b->tombstone);
}

static void test_header_round_trip(void **state)
{
    const struct wan_item_header cases[] = {
        {ver(0, 0, 0), 0, 0, false},
        {ver(1, 1, 1), 1, 1, true},
        {ver(UINT64_MAX, UINT32_MAX, UINT16_MAX), UINT32_MAX, UINT32_MAX, false},
        {ver(UINT64_MAX, UINT32_MAX, UINT16_MAX), UINT32_MAX, UINT32_MAX, true},
        sample_header(),
    };
    uint8_t b[WAN_ITEM_HEADER_SIZE + 8];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct wan_item_header out;
        memset(&out, 0x5a, sizeof(out));
        wan_item_header_encode(&cases[i], b);
        assert_int_equal(wan_item_header_decode(b, WAN_ITEM_HEADER_SIZE, &out), 0);
        assert_header_equal(&cases[i], &out);
        /* a longer buffer (header + value) decodes the same */
        assert_int_equal(wan_item_header_decode(b, sizeof(b), &out), 0);
        assert_header_equal(&cases[i], &out);
    }
}

static void test_header_every_bit_flip(void **state)
{
    struct wan_item_header h = sample_header(), out, untouched;
    uint8_t good[WAN_ITEM_HEADER_SIZE], b[WAN_ITEM_HEADER_SIZE];

    (void)state;
    wan_item_header_encode(&h, good);
    memset(&untouched, 0x33, sizeof(untouched));
    for (int byte = 0; byte < WAN_ITEM_HEADER_SIZE; byte++) {
        for (int bit = 0; bit < 8; bit++) {
            int rc, want;
            memcpy(b, good, sizeof(b));
            b[byte] ^= (uint8_t)(1u << bit);
            out = untouched;
            rc = wan_item_header_decode(b, sizeof(b), &out);
            want = byte < 2 ? -EPROTO : byte == 2 ? -EPROTONOSUPPORT : -EBADMSG;
            assert_int_equal(rc, want);
            /* nothing written on error */
            assert_memory_equal(&out, &untouched, sizeof(out));
        }
    }
}

static void test_header_bad_lengths(void **state)
{
    struct wan_item_header h = sample_header(), out;
    uint8_t b[WAN_ITEM_HEADER_SIZE];

    (void)state;
    wan_item_header_encode(&h, b);
    for (size_t len = 0; len < WAN_ITEM_HEADER_SIZE; len++) {
        assert_int_equal(wan_item_header_decode(b, len, &out), -EMSGSIZE);
    }
    assert_int_equal(wan_item_header_decode(NULL, 32, &out), -EMSGSIZE);
}

/* Fields that a valid CRC cannot excuse: unknown bits, reserved bytes, other formats. */
static void test_header_bad_fields_with_good_crc(void **state)
{
    struct wan_item_header h = sample_header(), out;
    uint8_t b[WAN_ITEM_HEADER_SIZE];
    uint32_t crc;

    (void)state;
    for (int c = 0; c < 5; c++) {
        wan_item_header_encode(&h, b);
        switch (c) {
        case 0:
            b[3] = 0x02; /* unknown bit */
            break;
        case 1:
            b[3] = 0x81;
            break;
        case 2:
            b[22] = 1; /* reserved */
            break;
        case 3:
            b[23] = 0x80;
            break;
        case 4:
            b[2] = 2; /* format 2 */
            break;
        }
        crc = wan_crc32c(0, b, 28);
        b[28] = (uint8_t)crc;
        b[29] = (uint8_t)(crc >> 8);
        b[30] = (uint8_t)(crc >> 16);
        b[31] = (uint8_t)(crc >> 24);
        assert_int_equal(wan_item_header_decode(b, sizeof(b), &out),
                         c == 4 ? -EPROTONOSUPPORT : -EINVAL);
    }
    /* a value that merely starts with something else */
    memcpy(b, "VALUE foo 0 3\r\nbar\r\nEND\r\n.......", 32);
    assert_int_equal(wan_item_header_decode(b, sizeof(b), &out), -EPROTO);
}

static void test_item_decode(void **state)
{
    struct wan_item_header h = sample_header(), out;
    uint8_t item[WAN_ITEM_HEADER_SIZE + 5];
    const uint8_t *value = NULL;
    size_t value_len = 99;

    (void)state;
    wan_item_header_encode(&h, item);
    memcpy(item + WAN_ITEM_HEADER_SIZE, "hello", 5);
    assert_int_equal(
        wan_item_decode(WAN_ITEM_FLAGS_MARKER, item, sizeof(item), &out, &value, &value_len), 0);
    assert_header_equal(&h, &out);
    assert_int_equal(value_len, 5);
    assert_memory_equal(value, "hello", 5);

    /* not our marker: a plain item, version 0 */
    assert_int_equal(wan_item_decode(0, item, sizeof(item), &out, &value, &value_len), -ENOENT);
    assert_int_equal(
        wan_item_decode(WAN_ITEM_FLAGS_MARKER + 1, item, sizeof(item), &out, &value, &value_len),
        -ENOENT);
    /* the marker but too short */
    assert_int_equal(wan_item_decode(WAN_ITEM_FLAGS_MARKER, "hi", 2, &out, &value, &value_len),
                     -EMSGSIZE);

    /* a tombstone is exactly the header */
    h.tombstone = true;
    wan_item_header_encode(&h, item);
    assert_int_equal(wan_item_decode(WAN_ITEM_FLAGS_MARKER, item, WAN_ITEM_HEADER_SIZE, &out,
                                     &value, &value_len),
                     0);
    assert_true(out.tombstone);
    assert_int_equal(value_len, 0);
    assert_int_equal(
        wan_item_decode(WAN_ITEM_FLAGS_MARKER, item, sizeof(item), &out, &value, &value_len),
        -EBADMSG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version_order),
        cmocka_unit_test(test_version_zero),
        cmocka_unit_test(test_site_id),
        cmocka_unit_test(test_hlc_send_rule),
        cmocka_unit_test(test_hlc_logical_carry),
        cmocka_unit_test(test_hlc_receive_rule),
        cmocka_unit_test(test_hlc_drift_bound),
        cmocka_unit_test(test_hlc_bound_never_dragged),
        cmocka_unit_test(test_hlc_beyond_bound),
        cmocka_unit_test(test_hlc_step_back_past_bound),
        cmocka_unit_test(test_hlc_saturation),
        cmocka_unit_test(test_hlc_real_clock),
        cmocka_unit_test(test_hlc_threads),
        cmocka_unit_test(test_header_layout),
        cmocka_unit_test(test_header_round_trip),
        cmocka_unit_test(test_header_every_bit_flip),
        cmocka_unit_test(test_header_bad_lengths),
        cmocka_unit_test(test_header_bad_fields_with_good_crc),
        cmocka_unit_test(test_item_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
