/*
 * snapshot — see snapshot.h.
 *
 * File format, version 1 (all integers little-endian; docs/SNAPSHOTS.md):
 *
 *   header   0   6  magic "GGSNAP"
 *            6   2  format version = 1       (magic and version: the same place in every
 *                                             version, checked before anything else)
 *            8   8  created, unix seconds
 *           16   4  site_id (FNV-1a of the site name)
 *           20   2  gateway_id of the gateway that wrote it
 *           22   2  site name length N (1..255)
 *           24   N  site name
 *         24+N   4  CRC32C of bytes [0, 24+N)
 *   records, one per item:
 *            0   4  payload length L (1..64 MiB)
 *            4   4  CRC32C of the payload
 *            8   L  payload: protobuf geogate.wan.v1.Mutation {key, value, hlc, flags,
 *                   expiry, tombstone, site_id, gateway_id}; hlc = site_id = 0 is version 0
 *                   (an item without a version header: raw flags, memcached's expiry)
 *   end record:
 *            0   4  0xFFFFFFFF
 *            4   4  CRC32C of the 16 bytes that follow
 *            8   8  number of records
 *           16   8  of which tombstones
 *   then nothing.
 *
 * Enumeration, per node, over one dedicated blocking connection:
 *
 *   lru_crawler metadump hash ──> key=<urlencoded> exp=<abs|-1> la=.. cas=.. ... \n  END
 *        (keys and expiries kept in memory, one node at a time)
 *   gets k1 .. k100 ──> VALUE k flags n cas \r\n data \r\n ... END      (batch after batch)
 *        decoded by the item reader of store/item.h (version-0 items keep their raw
 *        flags), expired ones skipped, each packed as a record into a 64 KiB buffer that
 *        goes to write()
 *
 * The dedicated connection keeps the crawler's long reply and the batched reads off the
 * workers' connections, so the request path only shares memcached's CPU with it.
 */
#include "gateway/transfer/snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "gateway/base/clock.h"
#include "gateway/protocol/proto_mc.h"
#include "gateway/routing/pool.h"
#include "gateway/store/item.h"
#include "proto/geogate_wan.pb-c.h"
#include "wan/crc32c.h"
#include "wan/le.h"
#include "wan/version.h"

#define SNAP_IO_TIMEOUT_MS 30000
#define SNAP_GETS_BATCH 100          /* keys per gets */
#define SNAP_FLUSH_BYTES (64u << 10) /* write() pieces */
#define SNAP_LINE_MAX (64u << 10)
#define SNAP_BUSY_WAIT_MS 10000 /* how long a busy crawler is retried */
#define SNAP_KEY_MAX 250

/* ---- format ---- */

int gw_snap_header_encode(const struct gw_snap_header *h, uint8_t *out)
{
    size_t n = strlen(h->site);

    if (n == 0 || n > GW_SNAP_SITE_MAX) {
        return -EINVAL;
    }
    memcpy(out, GW_SNAP_MAGIC, GW_SNAP_MAGIC_LEN);
    put16(out + 6, h->format);
    put64(out + 8, h->created);
    put32(out + 16, h->site_id);
    put16(out + 20, h->gateway_id);
    put16(out + 22, (uint16_t)n);
    memcpy(out + GW_SNAP_HEADER_FIXED, h->site, n);
    put32(out + GW_SNAP_HEADER_FIXED + n, wan_crc32c(0, out, GW_SNAP_HEADER_FIXED + n));
    return (int)(GW_SNAP_HEADER_FIXED + n + 4);
}

int gw_snap_header_decode(const uint8_t *buf, size_t len, struct gw_snap_header *out, size_t *hlen,
                          size_t *bad_offset)
{
    size_t n;

    memset(out, 0, sizeof(*out));
    *bad_offset = 0;
    if (len < GW_SNAP_MAGIC_LEN || memcmp(buf, GW_SNAP_MAGIC, GW_SNAP_MAGIC_LEN) != 0) {
        return len < GW_SNAP_MAGIC_LEN && memcmp(buf, GW_SNAP_MAGIC, len) == 0 ? -EMSGSIZE
                                                                               : -EPROTO;
    }
    *bad_offset = GW_SNAP_MAGIC_LEN;
    if (len < GW_SNAP_PREFIX_LEN) {
        return -EMSGSIZE;
    }
    out->format = get16(buf + 6);
    if (out->format != GW_SNAP_FORMAT) {
        return -EPROTONOSUPPORT;
    }
    *bad_offset = GW_SNAP_PREFIX_LEN;
    if (len < GW_SNAP_HEADER_FIXED) {
        return -EMSGSIZE;
    }
    n = get16(buf + 22);
    if (n == 0 || n > GW_SNAP_SITE_MAX) {
        *bad_offset = 22;
        return -EINVAL;
    }
    *bad_offset = GW_SNAP_HEADER_FIXED;
    if (len < GW_SNAP_HEADER_FIXED + n + 4) {
        return -EMSGSIZE;
    }
    if (get32(buf + GW_SNAP_HEADER_FIXED + n) != wan_crc32c(0, buf, GW_SNAP_HEADER_FIXED + n)) {
        *bad_offset = GW_SNAP_HEADER_FIXED + n;
        return -EBADMSG;
    }
    out->created = get64(buf + 8);
    out->site_id = get32(buf + 16);
    out->gateway_id = get16(buf + 20);
    memcpy(out->site, buf + GW_SNAP_HEADER_FIXED, n);
    out->site[n] = '\0';
    *hlen = GW_SNAP_HEADER_FIXED + n + 4;
    *bad_offset = 0;
    return 0;
}

void gw_snap_record_head(const void *payload, uint32_t len, uint8_t out[GW_SNAP_RECORD_HEAD])
{
    put32(out, len);
    put32(out + 4, wan_crc32c(0, payload, len));
}

void gw_snap_end_record(uint64_t records, uint64_t tombstones,
                        uint8_t out[GW_SNAP_RECORD_HEAD + GW_SNAP_END_PAYLOAD])
{
    put64(out + 8, records);
    put64(out + 16, tombstones);
    put32(out, GW_SNAP_END_MARK);
    put32(out + 4, wan_crc32c(0, out + 8, GW_SNAP_END_PAYLOAD));
}

/* ---- blocking memcached connections ---- */

/* Wait for events on s->fd for at most the connection's timeout.  0, -ETIMEDOUT, -EIO. */
static int mc_sock_wait(struct gw_mc_sock *s, short events)
{
    int64_t deadline = gw_mono_ms() + s->timeout_ms;

    for (;;) {
        struct pollfd p = {.fd = s->fd, .events = events};
        int64_t left = deadline - gw_mono_ms();
        int rc;

        if (left <= 0) {
            return -ETIMEDOUT;
        }
        rc = poll(&p, 1, (int)left);
        if (rc == -1 && errno == EINTR) {
            continue;
        }
        if (rc == -1) {
            return -EIO;
        }
        return rc == 0 ? -ETIMEDOUT : 0;
    }
}

int gw_mc_sock_open(struct gw_mc_sock *s, struct gw_pool *pool, uint32_t node, uint32_t timeout_ms,
                    char *err, size_t errlen)
{
    const struct gw_node *n = &pool->nodes[node];
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    int one = 1;
    int rc;

    memset(s, 0, sizeof(*s));
    s->fd = -1;
    s->timeout_ms = timeout_ms != 0 ? timeout_ms : SNAP_IO_TIMEOUT_MS;
    snprintf(s->label, sizeof(s->label), "%s", n->label);
    s->cap = 256u << 10;
    s->buf = malloc(s->cap);
    if (s->buf == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    s->fd = socket(n->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd == -1) {
        snprintf(err, errlen, "node %s: socket: %s", n->label, strerror(errno));
        goto fail_socket;
    }
    /* A restore pipelines a batch of adds and waits for their replies: with Nagle on, the
     * first small write's segment waits for memcached's delayed ACK (40 ms) on every batch,
     * because memcached says nothing until the item's value arrives. */
    (void)setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(s->fd, (const struct sockaddr *)&n->addr, n->addrlen) == -1) {
        uint32_t keep = s->timeout_ms;
        if (errno != EINPROGRESS) {
            snprintf(err, errlen, "node %s: connect: %s", n->label, strerror(errno));
            goto fail_connect;
        }
        s->timeout_ms = pool->connect_timeout_ms != 0 ? pool->connect_timeout_ms : 2000;
        rc = mc_sock_wait(s, POLLOUT);
        s->timeout_ms = keep;
        if (rc != 0) {
            snprintf(err, errlen, "node %s: no connection within %u ms", n->label,
                     pool->connect_timeout_ms != 0 ? pool->connect_timeout_ms : 2000);
            goto fail_connect;
        }
        if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == -1 || soerr != 0) {
            snprintf(err, errlen, "node %s: connect: %s", n->label,
                     strerror(soerr != 0 ? soerr : errno));
            goto fail_connect;
        }
    }
    return 0;

fail_connect:
    close(s->fd);
    s->fd = -1;
fail_socket:
    free(s->buf);
    s->buf = NULL;
    return -EHOSTUNREACH;
}

void gw_mc_sock_close(struct gw_mc_sock *s)
{
    if (s->fd != -1) {
        close(s->fd);
        s->fd = -1;
    }
    free(s->buf);
    s->buf = NULL;
}

int gw_mc_sock_send(struct gw_mc_sock *s, const void *data, size_t len)
{
    const char *p = data;

    while (len > 0) {
        ssize_t w = send(s->fd, p, len, MSG_NOSIGNAL);
        if (w == -1 && (errno == EAGAIN || errno == EINTR)) {
            int rc = mc_sock_wait(s, POLLOUT);
            if (rc != 0) {
                return rc;
            }
            continue;
        }
        if (w == -1) {
            return -EIO;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int gw_mc_sock_sendv(struct gw_mc_sock *s, struct iovec *iov, size_t n)
{
    while (n > 0) {
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = n < IOV_MAX ? n : IOV_MAX};
        ssize_t w = sendmsg(s->fd, &msg, MSG_NOSIGNAL);
        size_t left;

        if (w == -1 && (errno == EAGAIN || errno == EINTR)) {
            int rc = mc_sock_wait(s, POLLOUT);
            if (rc != 0) {
                return rc;
            }
            continue;
        }
        if (w == -1) {
            return -EIO;
        }
        left = (size_t)w;
        while (n > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return 0;
}

/* Make room for at least want unread bytes and read more.  0 or a negative errno. */
static int mc_sock_fill(struct gw_mc_sock *s, size_t want)
{
    ssize_t r;

    if (s->start > 0 && (s->start == s->end || s->cap - s->end < want)) {
        memmove(s->buf, s->buf + s->start, s->end - s->start);
        s->end -= s->start;
        s->start = 0;
    }
    if (s->cap - s->end < want || s->cap == s->end) {
        size_t cap = s->cap;
        char *nb;
        while (cap - s->end < want || cap == s->end) {
            cap *= 2;
        }
        nb = realloc(s->buf, cap);
        if (nb == NULL) {
            return -ENOMEM;
        }
        s->buf = nb;
        s->cap = cap;
    }
    for (;;) {
        r = recv(s->fd, s->buf + s->end, s->cap - s->end, 0);
        if (r == -1 && (errno == EAGAIN || errno == EINTR)) {
            int rc = mc_sock_wait(s, POLLIN);
            if (rc != 0) {
                return rc;
            }
            continue;
        }
        if (r <= 0) {
            return -EIO;
        }
        s->end += (size_t)r;
        return 0;
    }
}

int gw_mc_sock_line(struct gw_mc_sock *s, char **line, size_t *len)
{
    size_t scanned = 0;

    for (;;) {
        char *nl = memchr(s->buf + s->start + scanned, '\n', s->end - s->start - scanned);
        if (nl != NULL) {
            size_t n = (size_t)(nl - (s->buf + s->start));
            *line = s->buf + s->start;
            *len = n > 0 && (*line)[n - 1] == '\r' ? n - 1 : n;
            (*line)[*len] = '\0';
            s->start += n + 1;
            return 0;
        }
        scanned = s->end - s->start;
        if (scanned > SNAP_LINE_MAX) {
            return -EPROTO;
        }
        int rc = mc_sock_fill(s, 4096);
        if (rc != 0) {
            return rc;
        }
    }
}

static int mc_sock_read(struct gw_mc_sock *s, size_t n, uint8_t **data)
{
    while (s->end - s->start < n) {
        int rc = mc_sock_fill(s, n - (s->end - s->start));
        if (rc != 0) {
            return rc;
        }
    }
    *data = (uint8_t *)s->buf + s->start;
    s->start += n;
    return 0;
}

/* ---- enumeration ---- */

/* The keys metadump listed on one node: NUL-separated in an arena, with their expiries. */
struct snap_keys {
    char *arena;
    size_t used, cap;
    uint32_t *off; /* key i starts at arena + off[i] */
    uint8_t *len;  /* its length (keys are at most 250 bytes) */
    int64_t *exp;  /* metadump's exp: absolute unix seconds, -1 never */
    size_t n, max;
};

static void snap_keys_free(struct snap_keys *k)
{
    free(k->arena);
    free(k->off);
    free(k->len);
    free(k->exp);
    memset(k, 0, sizeof(*k));
}

static int snap_keys_add(struct snap_keys *k, const char *key, size_t n, int64_t exp)
{
    if (k->n == k->max) {
        size_t max = k->max ? k->max * 2 : 4096;
        uint32_t *off = realloc(k->off, max * sizeof(*off));
        uint8_t *len = off ? realloc(k->len, max * sizeof(*len)) : NULL;
        int64_t *e = len ? realloc(k->exp, max * sizeof(*e)) : NULL;
        if (off != NULL) {
            k->off = off;
        }
        if (len != NULL) {
            k->len = len;
        }
        if (e == NULL) {
            return -ENOMEM;
        }
        k->exp = e;
        k->max = max;
    }
    if (k->cap - k->used < n + 1) {
        size_t cap = k->cap ? k->cap : (1u << 20);
        char *a;
        while (cap - k->used < n + 1) {
            cap *= 2;
        }
        if (cap > UINT32_MAX) {
            return -ENOMEM;
        }
        a = realloc(k->arena, cap);
        if (a == NULL) {
            return -ENOMEM;
        }
        k->arena = a;
        k->cap = cap;
    }
    memcpy(k->arena + k->used, key, n);
    k->arena[k->used + n] = '\0';
    k->off[k->n] = (uint32_t)k->used;
    k->len[k->n] = (uint8_t)n;
    k->exp[k->n] = exp;
    k->used += n + 1;
    k->n++;
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* URL-decode src[0..n) into out (at least n bytes).  Returns the decoded length, or -1 for
 * a malformed escape. */
static int url_decode(const char *src, size_t n, char *out)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        if (src[i] == '%') {
            int hi, lo;
            if (i + 2 >= n) {
                return -1;
            }
            hi = hexval(src[i + 1]);
            lo = hexval(src[i + 2]);
            if (hi < 0 || lo < 0) {
                return -1;
            }
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            out[o++] = src[i];
        }
    }
    return (int)o;
}

/* A key the ASCII protocol can ask for: 1..250 bytes, no space or control character. */
static bool snap_key_ok(const char *k, size_t n)
{
    if (n == 0 || n > SNAP_KEY_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)k[i];
        if (c <= ' ' || c == 0x7f) {
            return false;
        }
    }
    return true;
}

/* The value of "name=" among a metadump line's fields, or NULL. */
static const char *md_field(const char *line, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    const char *p = line;

    while (p != NULL && *p != '\0') {
        if (strncmp(p, name, nl) == 0 && p[nl] == '=') {
            const char *v = p + nl + 1;
            *vlen = strcspn(v, " ");
            return v;
        }
        p = strchr(p, ' ');
        if (p != NULL) {
            p++;
        }
    }
    return NULL;
}

struct snap_run {
    const struct gw_snapshot_source *src;
    gw_snapshot_write_fn write;
    void *arg;
    atomic_bool *cancel;
    struct gw_snapshot_stats *st;
    char *err;
    size_t errlen;
    uint8_t *out; /* records not yet handed to write() */
    size_t olen, ocap;
    uint32_t now;
    const struct gw_enum_options *opt; /* gw_enum_run: items go to opt->item, not a file */
    uint32_t node;                     /* the node being walked */
};

static int snap_flush(struct snap_run *r)
{
    int rc;

    if (r->olen == 0) {
        return 0;
    }
    rc = r->write(r->arg, r->out, r->olen);
    if (rc != 0) {
        snprintf(r->err, r->errlen, "the reader stopped taking the snapshot (%s)", strerror(-rc));
        return rc;
    }
    r->st->bytes += r->olen;
    r->olen = 0;
    return 0;
}

/* Room for n more bytes in the output buffer (flushing first when it is full enough). */
static int snap_reserve(struct snap_run *r, size_t n)
{
    if (r->olen > 0 && r->olen + n > SNAP_FLUSH_BYTES) {
        int rc = snap_flush(r);
        if (rc != 0) {
            return rc;
        }
    }
    if (r->ocap - r->olen < n) {
        size_t cap = r->ocap ? r->ocap : SNAP_FLUSH_BYTES * 2;
        uint8_t *nb;
        while (cap - r->olen < n) {
            cap *= 2;
        }
        nb = realloc(r->out, cap);
        if (nb == NULL) {
            snprintf(r->err, r->errlen, "out of memory");
            return -ENOMEM;
        }
        r->out = nb;
        r->ocap = cap;
    }
    return 0;
}

static bool snap_cancelled(const struct snap_run *r)
{
    return r->cancel != NULL && atomic_load(r->cancel);
}

/* One VALUE block of a gets reply, decoded: filter, write its record.  md_exp: the
 * expiry metadump listed for it. */
static int snap_item(struct snap_run *r, const struct gw_item_view *it, int64_t md_exp)
{
    Geogate__Wan__V1__Mutation m = GEOGATE__WAN__V1__MUTATION__INIT;
    const char *key = it->key;
    size_t nkey = it->nkey;
    size_t plen;
    int rc;

    m.flags = it->hdr.client_flags;
    if (it->versioned) {
        m.hlc = it->hdr.version.hlc;
        m.site_id = it->hdr.version.site_id;
        m.gateway_id = it->hdr.version.gateway_id;
        m.expiry = it->hdr.expiry;
        m.tombstone = it->hdr.tombstone;
    } else {
        /* Version 0: served unchanged, so it is restored unchanged. */
        m.expiry = md_exp > 0 && md_exp <= UINT32_MAX ? (uint32_t)md_exp : 0;
    }
    if (m.expiry != 0 && m.expiry <= r->now) {
        r->st->skipped_expired++;
        return 0;
    }
    m.key.data = (uint8_t *)key;
    m.key.len = nkey;
    if (!m.tombstone) {
        m.value.data = (uint8_t *)it->val;
        m.value.len = it->len;
    }
    if (r->opt != NULL) {
        rc = r->opt->item(r->opt->arg, r->node, &m);
        if (rc != 0) {
            return rc;
        }
        goto counted;
    }
    plen = geogate__wan__v1__mutation__get_packed_size(&m);
    if (plen > GW_SNAP_RECORD_MAX) {
        snprintf(r->err, r->errlen, "item %.*s is larger than a record may be", (int)nkey, key);
        return -EMSGSIZE;
    }
    rc = snap_reserve(r, GW_SNAP_RECORD_HEAD + plen);
    if (rc != 0) {
        return rc;
    }
    geogate__wan__v1__mutation__pack(&m, r->out + r->olen + GW_SNAP_RECORD_HEAD);
    gw_snap_record_head(r->out + r->olen + GW_SNAP_RECORD_HEAD, (uint32_t)plen, r->out + r->olen);
    r->olen += GW_SNAP_RECORD_HEAD + plen;
counted:
    r->st->records++;
    if (m.tombstone) {
        r->st->tombstones++;
    }
    if (m.hlc != 0 || m.site_id != 0) {
        r->st->versioned++;
    }
    return 0;
}

static int snap_io_error(struct snap_run *r, struct gw_mc_sock *s, int rc, const char *doing)
{
    if (rc == -ETIMEDOUT) {
        snprintf(r->err, r->errlen, "node %s: no answer to %s within %u ms", s->label, doing,
                 s->timeout_ms);
    } else if (rc == -ENOMEM) {
        snprintf(r->err, r->errlen, "out of memory");
    } else if (rc == -EPROTO) {
        snprintf(r->err, r->errlen, "node %s: overlong line in the answer to %s", s->label, doing);
    } else {
        snprintf(r->err, r->errlen, "node %s: connection lost during %s", s->label, doing);
        rc = -EHOSTUNREACH;
    }
    return rc;
}

/* Collect every key metadump lists on s's node into keys. */
static int snap_metadump(struct snap_run *r, struct gw_mc_sock *s, struct snap_keys *keys)
{
    /* "hash" walks the hash table, where every item is exactly once; "all" walks the LRUs,
     * and misses items the LRU maintainer moves between segments meanwhile (seen: 2 of
     * 100,000 just-written items).  An older memcached that knows only "all" gets "all". */
    static const char *const cmds[] = {"lru_crawler metadump hash\r\n",
                                       "lru_crawler metadump all\r\n"};
    int64_t busy_until = gw_mono_ms() + SNAP_BUSY_WAIT_MS;
    int busy_sleep_ms = 20;
    size_t which = 0;
    char dec[SNAP_KEY_MAX * 3 + 1];

    for (;;) {
        char *line;
        size_t len;
        int rc = gw_mc_sock_send(s, cmds[which], strlen(cmds[which]));
        if (rc == 0) {
            rc = gw_mc_sock_line(s, &line, &len);
        }
        if (rc != 0) {
            return snap_io_error(r, s, rc, "lru_crawler metadump");
        }
        if (strncmp(line, "BUSY", 4) == 0) {
            struct timespec ts = {0, busy_sleep_ms * 1000000L};
            if (gw_mono_ms() > busy_until) {
                snprintf(r->err, r->errlen, "node %s: LRU crawler busy for %d s: %s", s->label,
                         SNAP_BUSY_WAIT_MS / 1000, line);
                return -EBUSY;
            }
            nanosleep(&ts, NULL);
            busy_sleep_ms = busy_sleep_ms < 500 ? busy_sleep_ms * 2 : 500;
            continue;
        }
        if ((strncmp(line, "CLIENT_ERROR", 12) == 0 || strcmp(line, "ERROR") == 0) &&
            which + 1 < sizeof(cmds) / sizeof(cmds[0])) {
            which++; /* an older memcached */
            continue;
        }
        for (;;) {
            const char *k, *e;
            size_t kl, el;
            int dl;
            if (strcmp(line, "END") == 0) {
                return 0;
            }
            k = md_field(line, "key", &kl);
            if (strncmp(line, "key=", 4) != 0 || k == NULL) {
                snprintf(r->err, r->errlen, "node %s: unexpected metadump line: %.100s", s->label,
                         line);
                return -EPROTO;
            }
            e = md_field(line, "exp", &el);
            r->st->listed++;
            dl = kl <= SNAP_KEY_MAX * 3 ? url_decode(k, kl, dec) : -1;
            if (dl < 0 || !snap_key_ok(dec, (size_t)dl)) {
                r->st->unreadable++;
            } else if (r->opt != NULL && r->opt->prefix_len > 0 &&
                       ((size_t)dl < r->opt->prefix_len ||
                        memcmp(dec, r->opt->prefix, r->opt->prefix_len) != 0)) {
                /* not asked for */
            } else if (snap_keys_add(keys, dec, (size_t)dl,
                                     e != NULL ? strtoll(e, NULL, 10) : -1) != 0) {
                snprintf(r->err, r->errlen, "out of memory for the key list");
                return -ENOMEM;
            }
            rc = gw_mc_sock_line(s, &line, &len);
            if (rc != 0) {
                return snap_io_error(r, s, rc, "lru_crawler metadump");
            }
        }
    }
}

/* Ask for keys [first, first + n) with one gets. */
static int snap_gets_send(struct snap_run *r, struct gw_mc_sock *s, const struct snap_keys *keys,
                          size_t first, size_t n)
{
    char cmd[6 + SNAP_GETS_BATCH * (SNAP_KEY_MAX + 1) + 2];
    size_t clen = 0, end = first + n;
    int rc;

    memcpy(cmd, "gets", 4);
    clen = 4;
    for (size_t i = first; i < end; i++) {
        cmd[clen++] = ' ';
        memcpy(cmd + clen, keys->arena + keys->off[i], keys->len[i]);
        clen += keys->len[i];
    }
    cmd[clen++] = '\r';
    cmd[clen++] = '\n';
    rc = gw_mc_sock_send(s, cmd, clen);
    return rc != 0 ? snap_io_error(r, s, rc, "gets") : 0;
}

/* Read the answer to the gets of keys [first, first + n) and write a record for each live
 * item in it. */
static int snap_gets_read(struct snap_run *r, struct gw_mc_sock *s, const struct snap_keys *keys,
                          size_t first, size_t n)
{
    size_t cursor = first, end = first + n;
    int rc;

    for (;;) {
        char *line;
        size_t len, nkey, bytes;
        uint8_t *data;
        char key[SNAP_KEY_MAX + 1];
        struct mc_reply mr;
        struct gw_item_view it;

        rc = gw_mc_sock_line(s, &line, &len);
        if (rc != 0) {
            return snap_io_error(r, s, rc, "gets");
        }
        if (strcmp(line, "END") == 0) {
            r->st->vanished += end - cursor;
            return 0;
        }
        mc_reply_parse(line, len, &mr);
        if (mr.kind != MC_REPLY_VALUE) {
            const char *word = line + strspn(line, " ");
            size_t wlen = strcspn(word, " ");

            snprintf(r->err, r->errlen, "node %s: unexpected answer to gets: %.*s", s->label,
                     (int)(wlen < 100 ? wlen : 100), word);
            return -EPROTO;
        }
        nkey = mr.nkey;
        if (nkey > SNAP_KEY_MAX) {
            snprintf(r->err, r->errlen, "node %s: overlong key in a gets answer", s->label);
            return -EPROTO;
        }
        memcpy(key, mr.key, nkey);
        key[nkey] = '\0';
        mr.key = key; /* the line goes with the next read */
        bytes = mr.bytes;
        /* Replies come in the order asked; keys skipped over have gone since metadump. */
        while (cursor < end &&
               (keys->len[cursor] != nkey || memcmp(keys->arena + keys->off[cursor], key, nkey))) {
            r->st->vanished++;
            cursor++;
        }
        if (cursor == end) {
            snprintf(r->err, r->errlen, "node %s: gets answered key %.64s that was not asked",
                     s->label, key);
            return -EPROTO;
        }
        rc = mc_sock_read(s, bytes + 2, &data);
        if (rc != 0) {
            return snap_io_error(r, s, rc, "gets");
        }
        if (data[bytes] != '\r' || data[bytes + 1] != '\n') {
            snprintf(r->err, r->errlen, "node %s: value of %.64s not followed by CRLF", s->label,
                     key);
            return -EPROTO;
        }
        gw_item_view_decode(&it, &mr, data, bytes);
        rc = snap_item(r, &it, keys->exp[cursor]);
        if (rc != 0) {
            return rc;
        }
        cursor++;
    }
}

static size_t snap_batch_len(const struct snap_keys *keys, size_t first)
{
    return keys->n - first < SNAP_GETS_BATCH ? keys->n - first : SNAP_GETS_BATCH;
}

int gw_enum_key_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);

    if (c != 0) {
        return c;
    }
    return alen < blen ? -1 : alen > blen ? 1 : 0;
}

static int snap_key_order(const void *x, const void *y, void *arg)
{
    const struct snap_keys *k = arg;
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;

    return gw_enum_key_cmp(k->arena + k->off[a], k->len[a], k->arena + k->off[b], k->len[b]);
}

/* Put the keys in gw_enum_key_cmp order (the arena stays; the index arrays are permuted). */
static int snap_keys_sort(struct snap_keys *k)
{
    uint32_t *order, *off;
    uint8_t *len;
    int64_t *exp;

    if (k->n < 2) {
        return 0;
    }
    order = malloc(k->n * sizeof(*order));
    off = malloc(k->n * sizeof(*off));
    len = malloc(k->n * sizeof(*len));
    exp = malloc(k->n * sizeof(*exp));
    if (order == NULL || off == NULL || len == NULL || exp == NULL) {
        free(order);
        free(off);
        free(len);
        free(exp);
        return -ENOMEM;
    }
    for (size_t i = 0; i < k->n; i++) {
        order[i] = (uint32_t)i;
    }
    qsort_r(order, k->n, sizeof(*order), snap_key_order, k);
    for (size_t i = 0; i < k->n; i++) {
        off[i] = k->off[order[i]];
        len[i] = k->len[order[i]];
        exp[i] = k->exp[order[i]];
    }
    free(order);
    free(k->off);
    free(k->len);
    free(k->exp);
    k->off = off;
    k->len = len;
    k->exp = exp;
    k->max = k->n;
    return 0;
}

/* gw_enum_run: sort the node's keys and find where a resumed run starts. */
static int snap_enum_prepare(struct snap_run *r, struct snap_keys *keys, size_t *start)
{
    const struct gw_enum_options *o = r->opt;
    size_t lo = 0, hi;

    if (snap_keys_sort(keys) != 0) {
        snprintf(r->err, r->errlen, "out of memory for the key list");
        return -ENOMEM;
    }
    hi = keys->n;
    if (o->after != NULL && r->node == o->start_node) {
        /* first key sorting after o->after */
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (gw_enum_key_cmp(keys->arena + keys->off[mid], keys->len[mid], o->after,
                                o->after_len) <= 0) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
    }
    r->st->skipped_resumed += lo;
    *start = lo;
    return 0;
}

static int snap_node(struct snap_run *r, struct gw_mc_sock *s)
{
    struct snap_keys keys;
    size_t start = 0;
    int rc;

    memset(&keys, 0, sizeof(keys));
    rc = snap_metadump(r, s, &keys);
    if (rc == 0 && r->opt != NULL) {
        rc = snap_enum_prepare(r, &keys, &start);
    }
    /* Two gets in flight: the node works on the next batch while we encode this one.
     * Requests are at most 25 KiB, so the socket buffers always hold the next one and
     * neither side can block the other. */
    if (rc == 0 && start < keys.n) {
        rc = snap_gets_send(r, s, &keys, start, snap_batch_len(&keys, start));
    }
    for (size_t i = start; rc == 0 && i < keys.n; i += SNAP_GETS_BATCH) {
        size_t next = i + SNAP_GETS_BATCH;
        if (snap_cancelled(r)) {
            snprintf(r->err, r->errlen, "cancelled");
            rc = -ECANCELED;
            break;
        }
        if (next < keys.n) {
            rc = snap_gets_send(r, s, &keys, next, snap_batch_len(&keys, next));
        }
        r->now = (uint32_t)time(NULL);
        if (rc == 0) {
            rc = snap_gets_read(r, s, &keys, i, snap_batch_len(&keys, i));
        }
        if (rc == 0 && r->opt != NULL && r->opt->batch != NULL) {
            size_t last = i + snap_batch_len(&keys, i) - 1;
            rc = r->opt->batch(r->opt->arg, r->node, keys.arena + keys.off[last], keys.len[last]);
        }
    }
    snap_keys_free(&keys);
    return rc;
}

/* curr_items of s's node, from `stats`. */
static int snap_curr_items(struct snap_run *r, struct gw_mc_sock *s, uint64_t *items)
{
    int rc = gw_mc_sock_send(s, "stats\r\n", 7);

    *items = 0;
    while (rc == 0) {
        char *line;
        size_t len;
        rc = gw_mc_sock_line(s, &line, &len);
        if (rc != 0) {
            break;
        }
        if (strcmp(line, "END") == 0) {
            return 0;
        }
        if (strncmp(line, "STAT curr_items ", 16) == 0) {
            *items = strtoull(line + 16, NULL, 10);
        } else if (strncmp(line, "STAT ", 5) != 0) {
            snprintf(r->err, r->errlen, "node %s: unexpected answer to stats: %.100s", s->label,
                     line);
            return -EPROTO;
        }
    }
    return snap_io_error(r, s, rc, "stats");
}

/* The start of every walk: r set up and one connection per node opened (with
 * count_items, each node's curr_items summed into stats->node_items).  Returns 0 with
 * *out (close it with snap_end), or an error with nothing left open. */
static int snap_begin(struct snap_run *r, const struct gw_snapshot_source *src,
                      atomic_bool *cancel, struct gw_snapshot_stats *stats, char *err,
                      size_t errlen, bool count_items, struct gw_mc_sock **out)
{
    struct gw_pool *pool = src->pool;
    struct gw_mc_sock *socks;
    int rc = 0;

    memset(stats, 0, sizeof(*stats));
    memset(r, 0, sizeof(*r));
    r->src = src;
    r->cancel = cancel;
    r->st = stats;
    r->err = err;
    r->errlen = errlen;
    err[0] = '\0';
    *out = NULL;
    socks = calloc(pool->nnodes ? pool->nnodes : 1, sizeof(*socks));
    if (socks == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < pool->nnodes; i++) {
        uint64_t items = 0;
        rc = gw_mc_sock_open(&socks[i], pool, i, src->io_timeout_ms, err, errlen);
        if (rc == 0 && count_items) {
            rc = snap_curr_items(r, &socks[i], &items);
        }
        if (rc != 0) {
            for (uint32_t j = 0; j <= i; j++) {
                gw_mc_sock_close(&socks[j]);
            }
            free(socks);
            return rc;
        }
        stats->node_items += items;
    }
    *out = socks;
    return 0;
}

static void snap_end(struct snap_run *r, struct gw_mc_sock *socks)
{
    for (uint32_t i = 0; socks != NULL && i < r->src->pool->nnodes; i++) {
        gw_mc_sock_close(&socks[i]);
    }
    free(socks);
    free(r->out);
}

int gw_snapshot_run(const struct gw_snapshot_source *src, gw_snapshot_write_fn write, void *arg,
                    atomic_bool *cancel, struct gw_snapshot_stats *stats, char *err, size_t errlen)
{
    struct gw_pool *pool = src->pool;
    struct gw_snap_header h;
    struct gw_mc_sock *socks;
    struct snap_run r;
    uint8_t end[GW_SNAP_RECORD_HEAD + GW_SNAP_END_PAYLOAD];
    int rc = snap_begin(&r, src, cancel, stats, err, errlen, false, &socks);

    if (rc != 0) {
        return rc;
    }
    r.write = write;
    r.arg = arg;
    memset(&h, 0, sizeof(h));
    h.format = GW_SNAP_FORMAT;
    h.created = (uint64_t)time(NULL);
    h.site_id = src->site_id;
    h.gateway_id = src->gateway_id;
    snprintf(h.site, sizeof(h.site), "%s", src->site);
    rc = snap_reserve(&r, GW_SNAP_HEADER_MAX);
    if (rc != 0) {
        goto done;
    }
    rc = gw_snap_header_encode(&h, r.out);
    if (rc < 0) {
        snprintf(err, errlen, "site name '%.64s' does not fit a snapshot header", src->site);
        goto done;
    }
    /* The header waits in the buffer for the first records: a first node whose crawler is
     * busy then fails the run before any byte is written (a clean refusal, not a cut). */
    r.olen = (size_t)rc;
    rc = 0;
    for (uint32_t i = 0; rc == 0 && i < pool->nnodes; i++) {
        rc = snap_node(&r, &socks[i]);
    }
    if (rc == 0) {
        gw_snap_end_record(stats->records, stats->tombstones, end);
        rc = snap_reserve(&r, sizeof(end));
    }
    if (rc == 0) {
        memcpy(r.out + r.olen, end, sizeof(end));
        r.olen += sizeof(end);
        rc = snap_flush(&r);
    }

done:
    snap_end(&r, socks);
    return rc;
}

int gw_enum_run(const struct gw_snapshot_source *src, const struct gw_enum_options *opt,
                atomic_bool *cancel, struct gw_snapshot_stats *stats, char *err, size_t errlen)
{
    struct gw_mc_sock *socks;
    struct snap_run r;
    int rc = snap_begin(&r, src, cancel, stats, err, errlen, true, &socks);

    if (rc != 0) {
        return rc;
    }
    r.opt = opt;
    for (uint32_t i = opt->start_node; rc == 0 && i < src->pool->nnodes; i++) {
        r.node = i;
        rc = snap_node(&r, &socks[i]);
    }
    snap_end(&r, socks);
    return rc;
}
