/*
 * test_ring — unit tests for ring/: placement against vectors recorded from a real
 * nutcracker (ring_vectors.h, made by tests/tools/gen_ring_vectors.py), continuum
 * shape (point counts, order, wrap-around), hashes (RFC 1321 md5 suite, twemproxy's
 * fnv1a_64 quirk) and argument errors.  Pure logic, single thread, no I/O.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ring/md5.h"
#include "ring/ring.h"
#include "ring_vectors.h"

static struct ring *make_ring(const uint32_t *weights, size_t n, enum ring_hash hash)
{
    struct ring_server servers[64];
    static char names[64][32];
    struct ring *ring = NULL;

    assert_true(n <= 64);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(
            ring_server_name(names[i], sizeof(names[i]), "10.0.0.1", (uint16_t)(21211 + i), NULL),
            0);
        servers[i].name = names[i];
        servers[i].weight = weights[i];
    }
    assert_int_equal(ring_create(&ring, servers, n, hash), 0);
    assert_non_null(ring);
    return ring;
}

/* Every key of every recorded case lands on the node nutcracker put it on. */
static void test_nutcracker_vectors(void **state)
{
    (void)state;
    size_t total = 0, bad = 0;

    for (size_t c = 0; c < RING_VECTOR_NCASES; c++) {
        const struct ring_vector_case *vc = &ring_vector_cases[c];
        struct ring_server servers[32];
        char names[32][300];
        enum ring_hash hash;
        struct ring *ring = NULL;

        assert_true(vc->nservers <= 32);
        assert_int_equal(ring_hash_from_name(vc->hash, &hash), 0);
        for (size_t s = 0; s < vc->nservers; s++) {
            assert_int_equal(ring_server_name(names[s], sizeof(names[s]), vc->servers[s].host,
                                              vc->servers[s].port, vc->servers[s].name),
                             0);
            servers[s].name = names[s];
            servers[s].weight = vc->servers[s].weight;
        }
        assert_int_equal(ring_create(&ring, servers, vc->nservers, hash), 0);

        for (size_t k = 0; k < RING_VECTOR_NKEYS; k++) {
            const struct ring_vector_key *key = &ring_vector_keys[k];
            uint32_t got = ring_lookup(ring, key->key, key->len);

            total++;
            if (got != vc->owner[k]) {
                if (bad++ < 10) {
                    print_error("case %s/%s key #%zu: ring says %u, nutcracker used %u\n",
                                vc->label, vc->hash, k, got, vc->owner[k]);
                }
            }
        }
        ring_destroy(ring);
    }
    print_message("%zu nutcracker vectors in %zu cases, %zu mismatches\n", total,
                  (size_t)RING_VECTOR_NCASES, bad);
    assert_true(total >= 1000);
    assert_int_equal(bad, 0);
}

/* Point counts follow twemproxy's float arithmetic, not exact arithmetic. */
static void test_point_counts(void **state)
{
    (void)state;
    static const struct {
        uint32_t weights[32];
        size_t n;
        size_t npoints;
        uint32_t first_server_points;
    } cases[] = {
        {{1}, 1, 160, 160},
        {{1, 1}, 2, 320, 160},
        {{1, 3}, 2, 320, 80},
        {{1, 2, 5}, 3, 480, 60},
        {{3, 7, 11, 13, 100}, 5, 792, 16},
        /* exact arithmetic would give 256 + 160 + 96 + 96 + 192 */
        {{8, 5, 3, 3, 6}, 5, 252 + 160 + 92 + 92 + 188, 252},
        /* 1/25 * 40 * 25 = 39.99999 in float: 156 points each, not 160 */
        {{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
         25,
         25 * 156,
         156},
        {{0, 1}, 2, 320, 0},
    };

    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        struct ring *ring = make_ring(cases[c].weights, cases[c].n, RING_HASH_MD5);
        uint32_t first = 0;

        assert_int_equal(ring_npoints(ring), cases[c].npoints);
        for (size_t i = 0; i < ring_npoints(ring); i++) {
            uint32_t server;
            assert_int_equal(ring_point_at(ring, i, NULL, &server), 0);
            assert_true(server < cases[c].n);
            first += server == 0;
        }
        assert_int_equal(first, cases[c].first_server_points);
        ring_destroy(ring);
    }
}

/* The continuum is sorted; lookup is "first point >= hash", wrapping past the end. */
static void test_lookup_boundaries_and_wraparound(void **state)
{
    (void)state;
    static const uint32_t weights[] = {1, 2, 3};
    struct ring *ring = make_ring(weights, 3, RING_HASH_MD5);
    size_t n = ring_npoints(ring);
    uint32_t first_value, first_owner, last_value, v;

    assert_int_equal(ring_point_at(ring, 0, &first_value, &first_owner), 0);
    assert_int_equal(ring_point_at(ring, n - 1, &last_value, NULL), 0);
    assert_int_equal(ring_point_at(ring, n, &v, NULL), -1);

    for (size_t i = 0; i < n; i++) {
        uint32_t value, owner, prev = 0;
        size_t first_equal = i;

        assert_int_equal(ring_point_at(ring, i, &value, &owner), 0);
        if (i > 0) {
            assert_int_equal(ring_point_at(ring, i - 1, &prev, NULL), 0);
            assert_true(prev <= value);
        }
        /* on ties the first of the run wins (twemproxy's lower bound) */
        while (first_equal > 0) {
            uint32_t pv;
            ring_point_at(ring, first_equal - 1, &pv, NULL);
            if (pv != value) {
                break;
            }
            first_equal--;
        }
        uint32_t expect;
        ring_point_at(ring, first_equal, NULL, &expect);
        assert_int_equal(ring_lookup_hash(ring, value), expect);
        /* a hash just above the previous point belongs to this point */
        if (i > 0 && prev != value) {
            assert_int_equal(ring_lookup_hash(ring, prev + 1), expect);
        }
    }

    /* below the first point and above the last both go to the first point */
    assert_int_equal(ring_lookup_hash(ring, 0), first_owner);
    assert_true(first_value > 0 && last_value < UINT32_MAX); /* true for this ring */
    assert_int_equal(ring_lookup_hash(ring, first_value), first_owner);
    assert_int_equal(ring_lookup_hash(ring, last_value + 1), first_owner);
    assert_int_equal(ring_lookup_hash(ring, UINT32_MAX), first_owner);

    /* an empty key hashes to 0 in twemproxy */
    assert_int_equal(ring_lookup(ring, "", 0), first_owner);
    ring_destroy(ring);
}

/* The owner a plain lower bound over the points gives (the reference for the lookup). */
static uint32_t reference_owner(const struct ring *ring, uint32_t hash)
{
    size_t n = ring_npoints(ring);
    uint32_t value, owner;

    for (size_t i = 0; i < n; i++) {
        ring_point_at(ring, i, &value, &owner);
        if (value >= hash) {
            return owner;
        }
    }
    ring_point_at(ring, 0, NULL, &owner);
    return owner;
}

/* The lookup agrees with a plain lower bound for rings of many sizes, at random hashes
 * and at every power-of-two boundary its start table could be cut at. */
static void test_lookup_matches_lower_bound(void **state)
{
    (void)state;
    static const size_t sizes[] = {2, 3, 7, 40};
    uint32_t weights[64];
    uint64_t x = 0x9e3779b97f4a7c15ull;

    for (size_t i = 0; i < 64; i++) {
        weights[i] = 1 + (uint32_t)(i % 3);
    }
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        for (int h = 0; h < RING_HASH_MAX; h++) {
            struct ring *ring = make_ring(weights, sizes[s], (enum ring_hash)h);
            for (int i = 0; i < 20000; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                uint32_t hash = (uint32_t)x;
                assert_int_equal(ring_lookup_hash(ring, hash), reference_owner(ring, hash));
            }
            for (unsigned bits = 1; bits <= 16; bits++) {
                for (uint64_t b = 0; b < ((uint64_t)1 << bits); b += 1 + (b >> 4)) {
                    uint32_t at = (uint32_t)(b << (32 - bits));
                    assert_int_equal(ring_lookup_hash(ring, at), reference_owner(ring, at));
                    assert_int_equal(ring_lookup_hash(ring, at - 1), reference_owner(ring, at - 1));
                    assert_int_equal(ring_lookup_hash(ring, at + 1), reference_owner(ring, at + 1));
                }
            }
            ring_destroy(ring);
        }
    }
}

static void test_single_server(void **state)
{
    (void)state;
    static const uint32_t weights[] = {7};
    struct ring *ring = make_ring(weights, 1, RING_HASH_FNV1A_64);
    char key[32];

    assert_int_equal(ring_npoints(ring), 160);
    for (int i = 0; i < 1000; i++) {
        int len = snprintf(key, sizeof(key), "k%d", i);
        assert_int_equal(ring_lookup(ring, key, (size_t)len), 0);
        assert_int_equal(ring_lookup_hash(ring, (uint32_t)i * 4294967u), 0);
    }
    assert_int_equal(ring_lookup(ring, "", 0), 0);
    ring_destroy(ring);
}

/* Keys split roughly by weight; a zero-weight server gets none. */
static void test_weights(void **state)
{
    (void)state;
    static const uint32_t weights[] = {1, 3, 0};
    struct ring *ring = make_ring(weights, 3, RING_HASH_MD5);
    size_t count[3] = {0};
    char key[32];

    for (int i = 0; i < 40000; i++) {
        int len = snprintf(key, sizeof(key), "user:%d", i);
        uint32_t s = ring_lookup(ring, key, (size_t)len);
        assert_true(s < 3);
        count[s]++;
    }
    assert_int_equal(count[2], 0);
    assert_in_range(count[0], 40000 * 15 / 100, 40000 * 35 / 100);
    assert_in_range(count[1], 40000 * 65 / 100, 40000 * 85 / 100);
    ring_destroy(ring);
}

static void test_hash_names(void **state)
{
    (void)state;
    enum ring_hash h = RING_HASH_MAX;

    assert_int_equal(ring_hash_from_name("md5", &h), 0);
    assert_int_equal(h, RING_HASH_MD5);
    assert_int_equal(ring_hash_from_name("fnv1a_64", &h), 0);
    assert_int_equal(h, RING_HASH_FNV1A_64);
    assert_string_equal(ring_hash_name(RING_HASH_MD5), "md5");
    assert_string_equal(ring_hash_name(RING_HASH_FNV1A_64), "fnv1a_64");
    assert_string_equal(ring_hash_name(RING_HASH_MAX), "unknown");

    static const char *const bad[] = {"",        "MD5",   "md5 ",  " md5",   "fnv1a_32",
                                      "fnv1_64", "fnv1a", "crc32", "murmur", "md"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        h = RING_HASH_MD5;
        assert_int_equal(ring_hash_from_name(bad[i], &h), -1);
        assert_int_equal(h, RING_HASH_MD5); /* untouched on error */
    }
    assert_int_equal(ring_hash_from_name(NULL, &h), -1);
}

static void test_server_names(void **state)
{
    (void)state;
    char buf[64];

    assert_int_equal(ring_server_name(buf, sizeof(buf), "127.0.0.1", 21211, NULL), 0);
    assert_string_equal(buf, "127.0.0.1:21211");
    assert_int_equal(ring_server_name(buf, sizeof(buf), "127.0.0.1", 11211, NULL), 0);
    assert_string_equal(buf, "127.0.0.1");
    assert_int_equal(ring_server_name(buf, sizeof(buf), "cache-1.example", 11212, NULL), 0);
    assert_string_equal(buf, "cache-1.example:11212");
    assert_int_equal(ring_server_name(buf, sizeof(buf), "127.0.0.1", 21211, "nodeA"), 0);
    assert_string_equal(buf, "nodeA");
    assert_int_equal(ring_server_name(buf, sizeof(buf), "127.0.0.1", 11211, "nodeB"), 0);
    assert_string_equal(buf, "nodeB");
    assert_int_equal(ring_server_name(buf, sizeof(buf), "127.0.0.1", 21211, ""), 0);
    assert_string_equal(buf, "127.0.0.1:21211");

    /* exactly fits, one too small, nothing */
    assert_int_equal(ring_server_name(buf, 16, "127.0.0.1", 21211, NULL), 0);
    assert_int_equal(ring_server_name(buf, 15, "127.0.0.1", 21211, NULL), -1);
    assert_int_equal(ring_server_name(buf, 6, "h", 1, "nodeA"), 0);
    assert_int_equal(ring_server_name(buf, 5, "h", 1, "nodeA"), -1);
    assert_int_equal(ring_server_name(buf, 0, "h", 1, NULL), -1);
    assert_int_equal(ring_server_name(NULL, 10, "h", 1, NULL), -1);
    assert_int_equal(ring_server_name(buf, sizeof(buf), NULL, 1, NULL), -1);
}

static void test_create_errors(void **state)
{
    (void)state;
    struct ring *ring = NULL;
    struct ring_server ok[] = {{"a:1", 1}, {"b:2", 1}};
    struct ring_server zero[] = {{"a:1", 0}, {"b:2", 0}};
    struct ring_server null_name[] = {{"a:1", 1}, {NULL, 1}};
    struct ring_server overflow[] = {{"a:1", UINT32_MAX}, {"b:2", 1}};

    assert_int_equal(ring_create(&ring, ok, 0, RING_HASH_MD5), -1);
    assert_int_equal(ring_create(&ring, NULL, 2, RING_HASH_MD5), -1);
    assert_int_equal(ring_create(NULL, ok, 2, RING_HASH_MD5), -1);
    assert_int_equal(ring_create(&ring, ok, 2, RING_HASH_MAX), -1);
    assert_int_equal(ring_create(&ring, zero, 2, RING_HASH_MD5), -1);
    assert_int_equal(ring_create(&ring, null_name, 2, RING_HASH_MD5), -1);
    assert_int_equal(ring_create(&ring, overflow, 2, RING_HASH_MD5), -1);
    assert_null(ring);
    ring_destroy(NULL);
}

static void md5_hex(const void *data, size_t len, char out[33])
{
    uint8_t d[RING_MD5_DIGEST_LEN];

    ring_md5(data, len, d);
    for (int i = 0; i < RING_MD5_DIGEST_LEN; i++) {
        sprintf(out + 2 * i, "%02x", d[i]);
    }
}

/* RFC 1321 appendix A.5, plus streaming in odd-sized pieces across block edges. */
static void test_md5_rfc1321(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        const char *hex;
    } suite[] = {
        {"", "d41d8cd98f00b204e9800998ecf8427e"},
        {"a", "0cc175b9c0f1b6a831c399e269772661"},
        {"abc", "900150983cd24fb0d6963f7d28e17f72"},
        {"message digest", "f96b697d7cb7938d525a2f31aaf161d0"},
        {"abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"},
        {"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
         "d174ab98d277d9f5a5611c2c9f419d9f"},
        {"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
         "57edf4a22be3c955ac49da2e2107b67a"},
    };
    char hex[33];

    for (size_t i = 0; i < sizeof(suite) / sizeof(suite[0]); i++) {
        md5_hex(suite[i].in, strlen(suite[i].in), hex);
        assert_string_equal(hex, suite[i].hex);
    }

    /* 1,000 bytes fed as 1, 2, 3, ... byte pieces equal the one-shot digest */
    static uint8_t buf[1000];
    uint8_t one[RING_MD5_DIGEST_LEN], pieces[RING_MD5_DIGEST_LEN];
    struct ring_md5 ctx;
    size_t off = 0, step = 1;

    for (size_t i = 0; i < sizeof(buf); i++) {
        buf[i] = (uint8_t)(i * 31 + 7);
    }
    ring_md5(buf, sizeof(buf), one);
    ring_md5_init(&ctx);
    while (off < sizeof(buf)) {
        size_t take = step < sizeof(buf) - off ? step : sizeof(buf) - off;
        ring_md5_update(&ctx, buf + off, take);
        off += take;
        step++;
    }
    ring_md5_final(&ctx, pieces);
    assert_memory_equal(one, pieces, RING_MD5_DIGEST_LEN);

    /* every short length, where ring_md5 builds its single block directly, equals
     * the digest fed a byte at a time through the context */
    for (size_t len = 0; len <= 130; len++) {
        ring_md5(buf, len, one);
        ring_md5_init(&ctx);
        for (size_t i = 0; i < len; i++) {
            ring_md5_update(&ctx, buf + i, 1);
        }
        ring_md5_final(&ctx, pieces);
        assert_memory_equal(one, pieces, RING_MD5_DIGEST_LEN);
    }

    /* lengths around the 55/56/64-byte padding edges */
    static const char *const edges[] = {
        /* md5 of 55, 56, 63, 64, 65 'a's */
        "ef1772b6dff9a122358552954ad0df65", "3b0c8ac703f828b04c6c197006d17218",
        "b06521f39153d618550606be297466d5", "014842d480b571495a4a0363793f7367",
        "c743a45e0d2e6a95cb859adae0248435",
    };
    static const size_t edge_len[] = {55, 56, 63, 64, 65};
    char as[65];
    memset(as, 'a', sizeof(as));
    for (size_t i = 0; i < 5; i++) {
        md5_hex(as, edge_len[i], hex);
        assert_string_equal(hex, edges[i]);
    }
}

/* md5 key hash: first four digest bytes, little-endian.  fnv1a_64: twemproxy's 32-bit
 * fold, with bytes >= 0x80 sign-extended as x86-64's signed char does. */
static void test_key_hashes(void **state)
{
    (void)state;
    /* md5("hello") = 5d41402a bc4b2a76 b9719d91 1017c592 */
    assert_int_equal(ring_hash_key(RING_HASH_MD5, "hello", 5), 0x2a40415du);
    /* md5("") = d41d8cd9...: twemproxy never hashes an empty key, but the function is md5 */
    assert_int_equal(ring_hash_key(RING_HASH_MD5, "", 0), 0xd98c1dd4u);

    /* fnv1a_64 as twemproxy: basis 0x84222325, prime 0x1b3, 32-bit arithmetic */
    assert_int_equal(ring_hash_key(RING_HASH_FNV1A_64, "", 0), 0x84222325u);
    assert_int_equal(ring_hash_key(RING_HASH_FNV1A_64, "a", 1), (0x84222325u ^ 0x61u) * 0x1b3u);
    /* a high byte is xored in as 0xffffffc3, not 0xc3 */
    assert_int_equal(ring_hash_key(RING_HASH_FNV1A_64, "\xc3", 1),
                     (0x84222325u ^ 0xffffffc3u) * 0x1b3u);
    assert_int_not_equal(ring_hash_key(RING_HASH_FNV1A_64, "\xc3", 1),
                         (0x84222325u ^ 0xc3u) * 0x1b3u);
    assert_int_equal(ring_hash_key(RING_HASH_FNV1A_64, "h\xc3\xa9llo", 6), 3574771936u);
}

static size_t count_distinct_points(const struct ring *ring)
{
    size_t distinct = 0;
    uint32_t prev = 0;

    for (size_t i = 0; i < ring_npoints(ring); i++) {
        uint32_t v;
        assert_int_equal(ring_point_at(ring, i, &v, NULL), 0);
        distinct += i == 0 || v != prev;
        prev = v;
    }
    return distinct;
}

/* Debian's nutcracker 0.5.0 formats "name-i" into char[273] and hashes at most 272
 * bytes of it (upstream sources with char[86] do not match the real binary; the
 * long_names and huge_names vectors pin this down).  A 270-byte name makes "name-10"
 * 273 bytes, hashed as "name-1": groups 10..19 repeat group 1, 20..29 group 2, 30..39
 * group 3, so only 10 distinct digests remain. */
static void test_long_names(void **state)
{
    (void)state;
    char name[300];
    struct ring_server server[1];
    struct ring *ring = NULL;
    uint8_t d[RING_MD5_DIGEST_LEN];
    size_t found = 0;

    /* 83 bytes: "name-39" is 86 bytes, hashed whole: 160 distinct points */
    memset(name, 'x', sizeof(name));
    name[83] = '\0';
    server[0].name = name;
    server[0].weight = 1;
    assert_int_equal(ring_create(&ring, server, 1, RING_HASH_MD5), 0);
    assert_int_equal(ring_npoints(ring), 160);
    assert_int_equal(count_distinct_points(ring), 160);
    ring_destroy(ring);

    /* 270 bytes */
    name[83] = 'x';
    name[270] = '\0';
    ring = NULL;
    assert_int_equal(ring_create(&ring, server, 1, RING_HASH_MD5), 0);
    assert_int_equal(ring_npoints(ring), 160);
    assert_int_equal(count_distinct_points(ring), 4 * 10);

    /* md5("name-1"): its first point is there 11 times (group 1 and groups 10..19) */
    char input[300];
    memcpy(input, name, 270);
    memcpy(input + 270, "-1", 2);
    ring_md5(input, 272, d);
    uint32_t want =
        (uint32_t)d[0] | (uint32_t)d[1] << 8 | (uint32_t)d[2] << 16 | (uint32_t)d[3] << 24;
    for (size_t i = 0; i < ring_npoints(ring); i++) {
        uint32_t v;
        ring_point_at(ring, i, &v, NULL);
        found += v == want;
    }
    assert_int_equal(found, 11);
    ring_destroy(ring);

    /* 299 bytes: every "name-i" is cut to the name's first 272 bytes: one digest */
    name[270] = 'x';
    name[299] = '\0';
    ring = NULL;
    assert_int_equal(ring_create(&ring, server, 1, RING_HASH_MD5), 0);
    assert_int_equal(count_distinct_points(ring), 4);
    ring_destroy(ring);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nutcracker_vectors),
        cmocka_unit_test(test_point_counts),
        cmocka_unit_test(test_lookup_boundaries_and_wraparound),
        cmocka_unit_test(test_lookup_matches_lower_bound),
        cmocka_unit_test(test_single_server),
        cmocka_unit_test(test_weights),
        cmocka_unit_test(test_hash_names),
        cmocka_unit_test(test_server_names),
        cmocka_unit_test(test_create_errors),
        cmocka_unit_test(test_md5_rfc1321),
        cmocka_unit_test(test_key_hashes),
        cmocka_unit_test(test_long_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
