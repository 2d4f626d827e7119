/*
 * restore — see restore.h.  Runs on its own thread (admin_xfer.c).
 *
 *   body ──header ok?──> record by record (length, CRC, Mutation, key) ──> gw_ingest_take
 *        (ingest.h: expired skipped, versioned items newest-wins through the WAN thread,
 *        version-0 items with `add`)
 *   first bad record: stop reading; what was read before it is still applied, then reply
 */
#include "gateway/transfer/restore.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "gateway/base/config.h"
#include "gateway/transfer/ingest.h"
#include "gateway/base/log.h"
#include "gateway/routing/pool.h"
#include "gateway/protocol/proto_mc.h"
#include "gateway/server.h"
#include "proto/geogate_wan.pb-c.h"
#include "wan/crc32c.h"
#include "wan/le.h"


static const char *const restore_status_names[GW_RESTORE_STATUS_MAX] = {
    [GW_RESTORE_OK] = "ok",
    [GW_RESTORE_BAD_HEADER] = "bad_header",
    [GW_RESTORE_BAD_VERSION] = "unsupported_format_version",
    [GW_RESTORE_BAD_RECORD] = "bad_record",
    [GW_RESTORE_FAILED] = "apply_failed",
    [GW_RESTORE_CANCELLED] = "cancelled",
};

const char *gw_restore_status_name(enum gw_restore_status s)
{
    return s < GW_RESTORE_STATUS_MAX ? restore_status_names[s] : "?";
}

struct restore_run {
    struct gw_ingest *in;
    atomic_bool *cancel;
    struct gw_restore_result *res;
};

static bool run_cancelled(const struct restore_run *r)
{
    return r->cancel != NULL && atomic_load(r->cancel);
}

/* ---- reading the file ---- */

static int bad_record(struct gw_restore_result *res, uint64_t off, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int bad_record(struct gw_restore_result *res, uint64_t off, const char *fmt, ...)
{
    va_list ap;

    res->status = GW_RESTORE_BAD_RECORD;
    res->bad_offset = off;
    va_start(ap, fmt);
    vsnprintf(res->reason, sizeof(res->reason), fmt, ap);
    va_end(ap);
    return -EBADMSG;
}

static bool key_ok(const ProtobufCBinaryData *k)
{
    if (k->len == 0 || k->len > MC_KEY_MAX_LENGTH) {
        return false;
    }
    for (size_t i = 0; i < k->len; i++) {
        if (k->data[i] <= ' ' || k->data[i] == 0x7f) {
            return false;
        }
    }
    return true;
}

/* The end record at off (its head already seen); body holds what follows it. */
static int read_end(struct restore_run *r, struct evbuffer *body, uint64_t off)
{
    struct gw_restore_result *res = r->res;
    size_t left = evbuffer_get_length(body);
    const uint8_t *p;
    uint64_t count;

    if (left < GW_SNAP_RECORD_HEAD + GW_SNAP_END_PAYLOAD) {
        return bad_record(res, off, "truncated: the end record is cut after %zu of %d bytes", left,
                          GW_SNAP_RECORD_HEAD + GW_SNAP_END_PAYLOAD);
    }
    p = evbuffer_pullup(body, GW_SNAP_RECORD_HEAD + GW_SNAP_END_PAYLOAD);
    if (get32(p + 4) != wan_crc32c(0, p + GW_SNAP_RECORD_HEAD, GW_SNAP_END_PAYLOAD)) {
        return bad_record(res, off, "end record: CRC32C mismatch");
    }
    count = get64(p + GW_SNAP_RECORD_HEAD);
    if (count != res->records) {
        return bad_record(res, off,
                          "end record counts %" PRIu64 " records but the file holds %" PRIu64,
                          count, res->records);
    }
    if (left > GW_SNAP_RECORD_HEAD + GW_SNAP_END_PAYLOAD) {
        return bad_record(res, off + GW_SNAP_RECORD_HEAD + GW_SNAP_END_PAYLOAD,
                          "%zu bytes after the end record",
                          left - GW_SNAP_RECORD_HEAD - GW_SNAP_END_PAYLOAD);
    }
    evbuffer_drain(body, left);
    return 0;
}

/* Read records until the end record or the first bad one.  Returns 0 at a good end,
 * -EBADMSG (res says where and why), or an apply error (-ENOMEM, -EIO, -ECANCELED). */
static int read_records(struct restore_run *r, struct evbuffer *body, uint64_t off)
{
    struct gw_restore_result *res = r->res;

    for (;;) {
        size_t left = evbuffer_get_length(body);
        uint8_t head[GW_SNAP_RECORD_HEAD];
        Geogate__Wan__V1__Mutation *m;
        const uint8_t *p;
        uint32_t len, crc;
        int rc;

        if (run_cancelled(r)) {
            return -ECANCELED;
        }
        if (left == 0) {
            return bad_record(res, off, "truncated: the file ends without the end record");
        }
        if (left < GW_SNAP_RECORD_HEAD) {
            return bad_record(res, off, "truncated: the file ends %zu bytes into a record head",
                              left);
        }
        evbuffer_copyout(body, head, sizeof(head));
        len = get32(head);
        if (len == GW_SNAP_END_MARK) {
            return read_end(r, body, off);
        }
        if (len == 0 || len > GW_SNAP_RECORD_MAX) {
            return bad_record(res, off, "record length %" PRIu32 " out of range (1..%u)", len,
                              GW_SNAP_RECORD_MAX);
        }
        if (left - GW_SNAP_RECORD_HEAD < len) {
            return bad_record(res, off,
                              "truncated: a record of %" PRIu32 " bytes, only %zu in the file", len,
                              left - GW_SNAP_RECORD_HEAD);
        }
        p = evbuffer_pullup(body, (ev_ssize_t)(GW_SNAP_RECORD_HEAD + len));
        if (p == NULL) {
            snprintf(res->reason, sizeof(res->reason), "out of memory");
            return -ENOMEM;
        }
        crc = wan_crc32c(0, p + GW_SNAP_RECORD_HEAD, len);
        if (crc != get32(head + 4)) {
            return bad_record(res, off,
                              "CRC32C mismatch (record says %08" PRIx32 ", payload gives %08" PRIx32
                              ")",
                              get32(head + 4), crc);
        }
        m = geogate__wan__v1__mutation__unpack(NULL, len, p + GW_SNAP_RECORD_HEAD);
        if (m == NULL) {
            return bad_record(res, off, "payload is not a Mutation");
        }
        if (!key_ok(&m->key) || m->flush) {
            geogate__wan__v1__mutation__free_unpacked(m, NULL);
            return bad_record(res, off, "not an item (empty or invalid key, or a flush)");
        }
        evbuffer_drain(body, GW_SNAP_RECORD_HEAD + len);
        off += GW_SNAP_RECORD_HEAD + len;
        res->records++;
        rc = gw_ingest_take(r->in, m, (uint32_t)time(NULL));
        if (rc != 0) {
            snprintf(res->reason, sizeof(res->reason), "%s", gw_ingest_reason(r->in));
            return rc;
        }
    }
}

static int read_header(struct gw_restore_result *res, struct evbuffer *body, uint64_t *off)
{
    size_t avail = evbuffer_get_length(body);
    size_t n = avail < GW_SNAP_HEADER_MAX ? avail : GW_SNAP_HEADER_MAX;
    const uint8_t *p = n > 0 ? evbuffer_pullup(body, (ev_ssize_t)n) : (const uint8_t *)"";
    size_t hlen = 0, bad = 0;
    int rc = gw_snap_header_decode(p, n, &res->header, &hlen, &bad);

    res->bad_offset = bad;
    switch (rc) {
    case 0:
        evbuffer_drain(body, hlen);
        *off = hlen;
        return 0;
    case -EPROTONOSUPPORT:
        res->status = GW_RESTORE_BAD_VERSION;
        snprintf(res->reason, sizeof(res->reason),
                 "snapshot format version %u is not supported (this gateway reads version %d); "
                 "nothing applied",
                 res->header.format, GW_SNAP_FORMAT);
        return -EPROTONOSUPPORT;
    case -EPROTO:
        snprintf(res->reason, sizeof(res->reason),
                 "not a geogate snapshot (no GGSNAP magic); nothing applied");
        break;
    case -EMSGSIZE:
        snprintf(res->reason, sizeof(res->reason),
                 "truncated: the file ends inside the header (%zu bytes); nothing applied", avail);
        break;
    case -EBADMSG:
        snprintf(res->reason, sizeof(res->reason), "header CRC32C mismatch; nothing applied");
        break;
    default:
        snprintf(res->reason, sizeof(res->reason), "malformed header; nothing applied");
        break;
    }
    res->status = GW_RESTORE_BAD_HEADER;
    return -EPROTO;
}

int gw_restore_run(struct gw_server *srv, struct gw_pool *pool, struct evbuffer *body,
                   atomic_bool *cancel, struct gw_restore_result *res)
{
    struct restore_run r;
    struct gw_ingest_counts counts;
    uint64_t off = 0;
    int rc, rc2;

    memset(res, 0, sizeof(*res));
    memset(&r, 0, sizeof(r));
    res->bytes = evbuffer_get_length(body);
    r.cancel = cancel;
    r.res = res;
    rc = read_header(res, body, &off);
    if (rc != 0) {
        evbuffer_free(body);
        return rc;
    }
    if (gw_ingest_create(srv, pool, cancel, &r.in) != 0) {
        evbuffer_free(body);
        res->status = GW_RESTORE_FAILED;
        snprintf(res->reason, sizeof(res->reason), "out of memory");
        return -EIO;
    }
    rc = read_records(&r, body, off);
    evbuffer_free(body);
    /* Everything read before a bad record is still applied. */
    rc2 = rc == -ECANCELED ? 0 : gw_ingest_flush(r.in, NULL);
    if (rc2 != 0 && (rc == 0 || rc == -EBADMSG)) {
        snprintf(res->reason, sizeof(res->reason), "%s", gw_ingest_reason(r.in));
    }
    gw_ingest_counts(r.in, &counts);
    res->applied = counts.applied;
    res->rejected_older = counts.rejected_older;
    res->skipped_expired = counts.skipped_expired;
    res->skipped_tombstones = counts.skipped_tombstones;
    res->paced_rounds = counts.paced_rounds;
    gw_ingest_destroy(r.in);

    if (rc == 0 || rc == -EBADMSG) {
        rc = rc2 != 0 ? rc2 : rc; /* a failed apply outranks a bad record */
    }
    switch (rc) {
    case 0:
        res->status = GW_RESTORE_OK;
        break;
    case -EBADMSG:
        break; /* status and reason set where it was found */
    case -ECANCELED:
        res->status = GW_RESTORE_CANCELLED;
        snprintf(res->reason, sizeof(res->reason), "the gateway is stopping");
        break;
    default:
        res->status = GW_RESTORE_FAILED;
        if (res->reason[0] == '\0') {
            snprintf(res->reason, sizeof(res->reason), "%s", strerror(-rc));
        }
        rc = -EIO;
        break;
    }
    return rc;
}
