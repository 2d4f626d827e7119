/*
 * ring — ketama continuum and key hashes, computing exactly what twemproxy 0.5
 * (nutcracker) computes so both place every key on the same server.  Pure logic: it
 * does no I/O, knows nothing of server health, and a built ring is read-only, so any
 * worker thread may look keys up in it concurrently.
 *
 * How twemproxy builds the continuum (src/hashkit/nc_ketama.c), reproduced here:
 *
 *   for each server s (config order):
 *       pct    = (float)weight / (float)total_weight
 *       points = floorf((float)(pct * 160 / 4 * (float)nservers + 1e-10)) * 4
 *       for i in 0 .. points/4 - 1:
 *           d = md5("<name>-<i>", at most 272 bytes)   16 bytes
 *           add d[0..3], d[4..7], d[8..11], d[12..15] as little-endian uint32 points
 *   sort points by value (glibc's qsort is a stable merge sort here: on equal
 *   values the earlier server wins)
 *
 *   lookup(hash) = owner of the first point >= hash, or of point 0 past the end.
 */
#include "ring/ring.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ring/md5.h"

#define RING_POINTS_PER_SERVER 160 /* at weight share 1/n; twemproxy's constant */
#define RING_POINTS_PER_HASH 4     /* one md5 digest gives four 32-bit points */
#define RING_TWEMPROXY_HOSTLEN 273 /* nutcracker 0.5.0 formats "name-i" into char[273] */
#define RING_DEFAULT_PORT 11211    /* no ":port" in the name on this port (libmemcached) */

struct ring_point {
    uint32_t value;
    uint32_t server;
};

struct ring {
    enum ring_hash hash;
    uint32_t nservers;
    size_t npoints;
    uint32_t *values; /* sorted point values: what the binary search reads */
    uint32_t *owners; /* owners[i] = server index of values[i] */
    /* Where the search starts: first[b] is the first point >= b << (32 - bucket_bits),
     * and first[1 << bucket_bits] = npoints, so a lookup scans the few points of one
     * bucket instead of searching the whole continuum. */
    uint32_t *first;
    unsigned bucket_bits;
};

static const char *const ring_hash_names[RING_HASH_MAX] = {
    [RING_HASH_MD5] = "md5",
    [RING_HASH_FNV1A_64] = "fnv1a_64",
};

int ring_hash_from_name(const char *name, enum ring_hash *out)
{
    if (name == NULL) {
        return -1;
    }
    /* twemproxy compares hash names case-sensitively; so do we. */
    for (int h = 0; h < RING_HASH_MAX; h++) {
        if (strcmp(name, ring_hash_names[h]) == 0) {
            if (out != NULL) {
                *out = (enum ring_hash)h;
            }
            return 0;
        }
    }
    return -1;
}

const char *ring_hash_name(enum ring_hash hash)
{
    if ((unsigned)hash >= RING_HASH_MAX) {
        return "unknown";
    }
    return ring_hash_names[hash];
}

static inline uint32_t ring_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/*
 * twemproxy's hash_fnv1a_64 is not FNV-1a 64: it starts from the low 32 bits of the
 * 64-bit offset basis and multiplies by the low 32 bits of the 64-bit prime, all in
 * uint32_t.  Each byte is read through a plain `char`, which is signed on x86-64 (the
 * Debian build), so a byte >= 0x80 is sign-extended before the xor: 0xc3 becomes
 * 0xffffffc3.  We sign-extend explicitly so the result is the same on every platform.
 */
static uint32_t ring_hash_fnv1a_64(const char *key, size_t len)
{
    uint32_t hash = (uint32_t)UINT64_C(0xcbf29ce484222325);
    const uint32_t prime = (uint32_t)UINT64_C(0x100000001b3);

    for (size_t i = 0; i < len; i++) {
        hash ^= (uint32_t)(int32_t)(int8_t)(uint8_t)key[i];
        hash *= prime;
    }
    return hash;
}

uint32_t ring_hash_key(enum ring_hash hash, const char *key, size_t len)
{
    uint8_t digest[RING_MD5_DIGEST_LEN];

    switch (hash) {
    case RING_HASH_FNV1A_64:
        return ring_hash_fnv1a_64(key, len);
    case RING_HASH_MD5:
    default:
        ring_md5(key, len, digest);
        return ring_le32(digest);
    }
}

int ring_server_name(char *buf, size_t buflen, const char *host, uint16_t port,
                     const char *explicit_name)
{
    int n;

    if (buf == NULL || buflen == 0) {
        return -1;
    }
    if (explicit_name != NULL && explicit_name[0] != '\0') {
        n = snprintf(buf, buflen, "%s", explicit_name);
    } else if (host == NULL) {
        return -1;
    } else if (port == RING_DEFAULT_PORT) {
        n = snprintf(buf, buflen, "%s", host);
    } else {
        n = snprintf(buf, buflen, "%s:%u", host, (unsigned)port);
    }
    if (n < 0 || (size_t)n >= buflen) {
        return -1;
    }
    return 0;
}

/*
 * Points for one server, with twemproxy's exact float arithmetic: the product is
 * computed in float, widened to double to add 1e-10, narrowed back to float (which
 * usually drops the 1e-10 again), floored, and multiplied by 4 in float.  Keeping the
 * same types and order matters: 25 equal weights give 39.99999, so 156 points each,
 * not 160, and weights 8,5,3,3,6 give 252/160/92/92/188 where exact arithmetic gives
 * 256/160/96/96/192 (the float_weights and twentyfive_equal vectors pin this down).
 * The same machine code (mulss 160, mulss 0.25, cvtss2sd, addsd, cvtsd2ss) is what
 * Debian's nutcracker binary runs.
 */
static uint32_t ring_server_points(uint32_t weight, uint32_t total_weight, uint32_t nservers)
{
    float pct = (float)weight / (float)total_weight;

    return (uint32_t)((floorf((float)(pct * RING_POINTS_PER_SERVER / 4 * (float)nservers +
                                      0.0000000001))) *
                      4);
}

/*
 * The md5 input for point group i of a server, as Debian's nutcracker 0.5.0 builds it
 * (read from its machine code: the upstream sources in circulation show char[86] and
 * no check, which real nutcracker does not match): "name-i" is snprintf'd into a
 * char[273], and if it did not fit, only the first 272 bytes are hashed (with a log
 * line).  Returns the number of bytes of out to hash.
 */
static size_t ring_point_input(char out[RING_TWEMPROXY_HOSTLEN], const char *name, uint32_t i)
{
    int n = snprintf(out, RING_TWEMPROXY_HOSTLEN, "%s-%u", name, (unsigned)i);

    if (n < 0) {
        return 0; /* cannot happen for "%s-%u" */
    }
    if ((size_t)n >= RING_TWEMPROXY_HOSTLEN) {
        return RING_TWEMPROXY_HOSTLEN - 1;
    }
    return (size_t)n;
}

/* Order by value; on equal values the earlier server first (glibc's stable msort). */
static int ring_point_cmp(const void *a, const void *b)
{
    const struct ring_point *pa = a, *pb = b;

    if (pa->value != pb->value) {
        return pa->value < pb->value ? -1 : 1;
    }
    if (pa->server != pb->server) {
        return pa->server < pb->server ? -1 : 1;
    }
    return 0;
}

int ring_create(struct ring **out, const struct ring_server *servers, size_t nservers,
                enum ring_hash hash)
{
    struct ring *ring;
    struct ring_point *points;
    uint32_t total_weight = 0;
    size_t npoints = 0, k = 0;

    if (out == NULL || servers == NULL || nservers == 0 || nservers > UINT32_MAX / 2 ||
        (unsigned)hash >= RING_HASH_MAX) {
        return -1;
    }
    for (size_t s = 0; s < nservers; s++) {
        if (servers[s].name == NULL || servers[s].weight > UINT32_MAX - total_weight) {
            return -1;
        }
        total_weight += servers[s].weight;
    }
    if (total_weight == 0) {
        return -1;
    }
    for (size_t s = 0; s < nservers; s++) {
        npoints += ring_server_points(servers[s].weight, total_weight, (uint32_t)nservers);
    }
    if (npoints == 0) {
        return -1; /* unreachable: the heaviest server gets >= 156 points */
    }

    points = calloc(npoints, sizeof(*points));
    if (points == NULL) {
        goto fail_points;
    }
    for (size_t s = 0; s < nservers; s++) {
        uint32_t groups = ring_server_points(servers[s].weight, total_weight, (uint32_t)nservers) /
                          RING_POINTS_PER_HASH;

        for (uint32_t i = 0; i < groups; i++) {
            char input[RING_TWEMPROXY_HOSTLEN];
            uint8_t digest[RING_MD5_DIGEST_LEN];
            size_t len = ring_point_input(input, servers[s].name, i);

            ring_md5(input, len, digest);
            for (int x = 0; x < RING_POINTS_PER_HASH; x++) {
                points[k].value = ring_le32(digest + 4 * x);
                points[k].server = (uint32_t)s;
                k++;
            }
        }
    }
    qsort(points, npoints, sizeof(*points), ring_point_cmp);

    ring = malloc(sizeof(*ring));
    if (ring == NULL) {
        goto fail_ring;
    }
    ring->values = malloc(npoints * sizeof(*ring->values));
    if (ring->values == NULL) {
        goto fail_values;
    }
    ring->owners = malloc(npoints * sizeof(*ring->owners));
    if (ring->owners == NULL) {
        goto fail_owners;
    }
    /* about two buckets per point, at most 64k of them */
    ring->bucket_bits = 1;
    while (ring->bucket_bits < 16 && ((size_t)1 << ring->bucket_bits) < 2 * npoints) {
        ring->bucket_bits++;
    }
    ring->first = malloc((((size_t)1 << ring->bucket_bits) + 1) * sizeof(*ring->first));
    if (ring->first == NULL) {
        goto fail_first;
    }
    for (size_t i = 0; i < npoints; i++) {
        ring->values[i] = points[i].value;
        ring->owners[i] = points[i].server;
    }
    {
        size_t nb = (size_t)1 << ring->bucket_bits;
        size_t i = 0;
        for (size_t b = 0; b < nb; b++) {
            uint64_t start = (uint64_t)b << (32 - ring->bucket_bits);
            while (i < npoints && ring->values[i] < start) {
                i++;
            }
            ring->first[b] = (uint32_t)i;
        }
        ring->first[nb] = (uint32_t)npoints;
    }
    ring->hash = hash;
    ring->nservers = (uint32_t)nservers;
    ring->npoints = npoints;
    free(points);
    *out = ring;
    return 0;

fail_first:
    free(ring->owners);
fail_owners:
    free(ring->values);
fail_values:
    free(ring);
fail_ring:
    free(points);
fail_points:
    return -1;
}

void ring_destroy(struct ring *ring)
{
    if (ring == NULL) {
        return;
    }
    free(ring->first);
    free(ring->owners);
    free(ring->values);
    free(ring);
}

uint32_t ring_lookup_hash(const struct ring *ring, uint32_t hash)
{
    uint32_t b = hash >> (32 - ring->bucket_bits);
    uint32_t i = ring->first[b];
    uint32_t end = ring->first[b + 1];

    /* First value >= hash (twemproxy: middle->value < hash); it lies in this bucket or
     * is the first point of a later one, which is where i stops. */
    while (i < end && ring->values[i] < hash) {
        i++;
    }
    if (i == ring->npoints) {
        i = 0; /* past the last point: wrap to the first */
    }
    return ring->owners[i];
}

uint32_t ring_lookup(const struct ring *ring, const char *key, size_t len)
{
    /* twemproxy skips hashing for one server, and uses hash 0 for an empty key. */
    if (ring->nservers == 1) {
        return 0;
    }
    if (len == 0) {
        return ring_lookup_hash(ring, 0);
    }
    return ring_lookup_hash(ring, ring_hash_key(ring->hash, key, len));
}

size_t ring_npoints(const struct ring *ring)
{
    return ring->npoints;
}

int ring_point_at(const struct ring *ring, size_t i, uint32_t *value, uint32_t *server)
{
    if (ring == NULL || i >= ring->npoints) {
        return -1;
    }
    if (value != NULL) {
        *value = ring->values[i];
    }
    if (server != NULL) {
        *server = ring->owners[i];
    }
    return 0;
}
