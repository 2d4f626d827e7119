/*
 * ring/md5 — MD5 (RFC 1321) for the ketama continuum and the md5 key hash.  Written
 * from the RFC's description: four rounds of sixteen steps over 512-bit blocks,
 * little-endian words, length-padded final block.  No I/O, no global state.
 */
#include "ring/md5.h"

#include <string.h>

/* T[i] = floor(2^32 * |sin(i + 1)|), RFC 1321 section 3.4. */
static const uint32_t md5_sine[64] = {
    0xd76aa478u, 0xe8c7b756u, 0x242070dbu, 0xc1bdceeeu, 0xf57c0fafu, 0x4787c62au, 0xa8304613u,
    0xfd469501u, 0x698098d8u, 0x8b44f7afu, 0xffff5bb1u, 0x895cd7beu, 0x6b901122u, 0xfd987193u,
    0xa679438eu, 0x49b40821u, 0xf61e2562u, 0xc040b340u, 0x265e5a51u, 0xe9b6c7aau, 0xd62f105du,
    0x02441453u, 0xd8a1e681u, 0xe7d3fbc8u, 0x21e1cde6u, 0xc33707d6u, 0xf4d50d87u, 0x455a14edu,
    0xa9e3e905u, 0xfcefa3f8u, 0x676f02d9u, 0x8d2a4c8au, 0xfffa3942u, 0x8771f681u, 0x6d9d6122u,
    0xfde5380cu, 0xa4beea44u, 0x4bdecfa9u, 0xf6bb4b60u, 0xbebfbc70u, 0x289b7ec6u, 0xeaa127fau,
    0xd4ef3085u, 0x04881d05u, 0xd9d4d039u, 0xe6db99e5u, 0x1fa27cf8u, 0xc4ac5665u, 0xf4292244u,
    0x432aff97u, 0xab9423a7u, 0xfc93a039u, 0x655b59c3u, 0x8f0ccc92u, 0xffeff47du, 0x85845dd1u,
    0x6fa87e4fu, 0xfe2ce6e0u, 0xa3014314u, 0x4e0811a1u, 0xf7537e82u, 0xbd3af235u, 0x2ad7d2bbu,
    0xeb86d391u,
};

/* Left-rotation amounts, four per round (each round repeats its four). */
static const uint8_t md5_shift[4][4] = {
    {7, 12, 17, 22},
    {5, 9, 14, 20},
    {4, 11, 16, 23},
    {6, 10, 15, 21},
};

static inline uint32_t md5_rotl(uint32_t x, unsigned n)
{
    return (x << n) | (x >> (32 - n));
}

static inline uint32_t md5_load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void md5_store_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* One step: a = b + ((a + f(b,c,d) + T[i] + x[k]) <<< s), then rotate the roles of a..d
 * (the new a is the old d).  f is evaluated before any of b, c, d change. */
#define MD5_STEP(f, i, k, s)                                                                       \
    do {                                                                                           \
        uint32_t sum_ = a + (f) + md5_sine[i] + x[k];                                              \
        a = d;                                                                                     \
        d = c;                                                                                     \
        c = b;                                                                                     \
        b = b + md5_rotl(sum_, s);                                                                 \
    } while (0)

/* Fold one 64-byte block into the state (RFC 1321 section 3.4).  One loop per round, so
 * each has a fixed auxiliary function, fully unrolled: every key lookup hashes with md5,
 * and unrolled it is about twice as fast. */
static void md5_block(uint32_t state[4], const uint8_t block[64])
{
    uint32_t x[16];
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];

    for (int i = 0; i < 16; i++) {
        x[i] = md5_load_le32(block + 4 * i);
    }
    /* F(b,c,d) = bc | ~b d, words in order */
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) {
        MD5_STEP((b & c) | (~b & d), i, i, md5_shift[0][i % 4]);
    }
    /* G(b,c,d) = bd | c ~d, words 1, 6, 11, ... */
#pragma GCC unroll 16
    for (int i = 16; i < 32; i++) {
        MD5_STEP((b & d) | (c & ~d), i, (5 * i + 1) % 16, md5_shift[1][i % 4]);
    }
    /* H(b,c,d) = b ^ c ^ d, words 5, 8, 11, ... */
#pragma GCC unroll 16
    for (int i = 32; i < 48; i++) {
        MD5_STEP(b ^ c ^ d, i, (3 * i + 5) % 16, md5_shift[2][i % 4]);
    }
    /* I(b,c,d) = c ^ (b | ~d), words 0, 7, 14, ... */
#pragma GCC unroll 16
    for (int i = 48; i < 64; i++) {
        MD5_STEP(c ^ (b | ~d), i, (7 * i) % 16, md5_shift[3][i % 4]);
    }

    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
}

void ring_md5_init(struct ring_md5 *ctx)
{
    /* RFC 1321 section 3.3: words A..D as little-endian 01234567 89abcdef fedcba98 76543210 */
    ctx->state[0] = 0x67452301u;
    ctx->state[1] = 0xefcdab89u;
    ctx->state[2] = 0x98badcfeu;
    ctx->state[3] = 0x10325476u;
    ctx->nbytes = 0;
    ctx->nblock = 0;
}

void ring_md5_update(struct ring_md5 *ctx, const void *data, size_t len)
{
    const uint8_t *p = data;

    ctx->nbytes += len;

    if (ctx->nblock > 0) {
        size_t take = 64 - ctx->nblock;
        if (take > len) {
            take = len;
        }
        memcpy(ctx->block + ctx->nblock, p, take);
        ctx->nblock += take;
        p += take;
        len -= take;
        if (ctx->nblock < 64) {
            return;
        }
        md5_block(ctx->state, ctx->block);
        ctx->nblock = 0;
    }

    while (len >= 64) {
        md5_block(ctx->state, p);
        p += 64;
        len -= 64;
    }

    memcpy(ctx->block, p, len);
    ctx->nblock = len;
}

void ring_md5_final(struct ring_md5 *ctx, uint8_t digest[RING_MD5_DIGEST_LEN])
{
    uint64_t nbits = ctx->nbytes * 8;

    /* Pad with 0x80 then zeros to 56 mod 64, then the bit length, little-endian. */
    ctx->block[ctx->nblock++] = 0x80;
    if (ctx->nblock > 56) {
        memset(ctx->block + ctx->nblock, 0, 64 - ctx->nblock);
        md5_block(ctx->state, ctx->block);
        ctx->nblock = 0;
    }
    memset(ctx->block + ctx->nblock, 0, 56 - ctx->nblock);
    md5_store_le32(ctx->block + 56, (uint32_t)nbits);
    md5_store_le32(ctx->block + 60, (uint32_t)(nbits >> 32));
    md5_block(ctx->state, ctx->block);

    for (int i = 0; i < 4; i++) {
        md5_store_le32(digest + 4 * i, ctx->state[i]);
    }
}

void ring_md5(const void *data, size_t len, uint8_t digest[RING_MD5_DIGEST_LEN])
{
    struct ring_md5 ctx;

    if (len < 56) {
        /* A key (nearly every one) fits with its padding in a single block: build
         * that block at once, without the context's buffering. */
        uint8_t block[64];

        ring_md5_init(&ctx);
        memcpy(block, data, len);
        block[len] = 0x80;
        memset(block + len + 1, 0, 55 - len);
        md5_store_le32(block + 56, (uint32_t)(len * 8));
        md5_store_le32(block + 60, 0);
        md5_block(ctx.state, block);
        for (int i = 0; i < 4; i++) {
            md5_store_le32(digest + 4 * i, ctx.state[i]);
        }
        return;
    }
    ring_md5_init(&ctx);
    ring_md5_update(&ctx, data, len);
    ring_md5_final(&ctx, digest);
}
