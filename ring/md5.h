/*
 * ring/md5 — MD5 message digest (RFC 1321), written from the RFC for the ring: the
 * ketama continuum and twemproxy's "md5" key hash are both defined on it.  Not for
 * security (MD5 is broken for that) and it does no I/O; pure functions, callable from
 * any thread (each caller owns its context).
 */
#ifndef GEOGATE_RING_MD5_H
#define GEOGATE_RING_MD5_H

#include <stddef.h>
#include <stdint.h>

#define RING_MD5_DIGEST_LEN 16

/* Streaming state: the caller owns it (usually on the stack). */
struct ring_md5 {
    uint32_t state[4]; /* A, B, C, D */
    uint64_t nbytes;   /* message length so far */
    uint8_t block[64]; /* partial input block */
    size_t nblock;     /* bytes used in block */
};

void ring_md5_init(struct ring_md5 *ctx);
void ring_md5_update(struct ring_md5 *ctx, const void *data, size_t len);
/* Writes the 16-byte digest; ctx must be initialised again before reuse. */
void ring_md5_final(struct ring_md5 *ctx, uint8_t digest[RING_MD5_DIGEST_LEN]);

/* One-shot digest of data. */
void ring_md5(const void *data, size_t len, uint8_t digest[RING_MD5_DIGEST_LEN]);

#endif
