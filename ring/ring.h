/*
 * ring — ketama consistent hashing over a pool of servers, placing keys exactly as
 * twemproxy (nutcracker) does, so a site can move from twemproxy to geogate without
 * a miss storm.  Pure logic: no I/O, no threads; a built ring is read-only and may be
 * shared by every worker thread.  It does not know whether a server is up: down
 * servers stay on the ring (keys never move), failover is the router's job.
 */
#ifndef GEOGATE_RING_H
#define GEOGATE_RING_H

#include <stddef.h>
#include <stdint.h>

enum ring_hash {
    RING_HASH_MD5 = 0,  /* first four bytes of md5(key), little-endian */
    RING_HASH_FNV1A_64, /* twemproxy's fnv1a_64: 64-bit constants folded to 32 bits */
    RING_HASH_MAX
};

/* One server as the ring sees it.  name is what the continuum hashes: the explicit
 * node name, else "host:port", else "host" when the port is 11211 (twemproxy's rule;
 * ring_server_name() builds it). */
struct ring_server {
    const char *name;
    uint32_t weight;
};

struct ring;

/* Parse "md5" / "fnv1a_64".  Returns 0, or -1 for an unknown name. */
int ring_hash_from_name(const char *name, enum ring_hash *out);
const char *ring_hash_name(enum ring_hash hash);

/* Hash a key with the given function, as twemproxy computes it. */
uint32_t ring_hash_key(enum ring_hash hash, const char *key, size_t len);

/* Write the continuum name twemproxy would use for a server into buf (NUL-terminated).
 * explicit_name may be NULL.  Returns 0, or -1 if buf is too small. */
int ring_server_name(char *buf, size_t buflen, const char *host, uint16_t port,
                     const char *explicit_name);

/* Build a continuum.  Copies what it needs from servers (the caller keeps ownership).
 * Returns 0 and sets *out, or -1 (no servers, zero total weight, weights summing past
 * UINT32_MAX, a NULL name, an unknown hash, or out of memory).  A server of weight 0
 * gets no points.  Like nutcracker 0.5.0, only the first 272 bytes of "name-i" are
 * hashed. */
int ring_create(struct ring **out, const struct ring_server *servers, size_t nservers,
                enum ring_hash hash);
void ring_destroy(struct ring *ring);

/* Index (into the servers given to ring_create) of the server that owns key.  As in
 * twemproxy, an empty key looks up hash 0.  No allocation; safe from any thread. */
uint32_t ring_lookup(const struct ring *ring, const char *key, size_t len);

/* Index of the server owning a precomputed key hash. */
uint32_t ring_lookup_hash(const struct ring *ring, uint32_t hash);

size_t ring_npoints(const struct ring *ring);

/* Point i of the sorted continuum (for tests, debugging and status pages): its value
 * and owning server index; either pointer may be NULL.  Returns 0, or -1 if i is out of
 * range. */
int ring_point_at(const struct ring *ring, size_t i, uint32_t *value, uint32_t *server);

#endif
