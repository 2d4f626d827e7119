/*
 * restore — see restore.h.  Runs on its own thread (admin_xfer.c); the batches it hands
 * to the workers finish on their threads and report back under the job's lock.
 *
 *   body ──header ok?──> record by record (length, CRC, Mutation, key):
 *            │   expired ─────────────> skipped_expired
 *            │   versioned ───────────> ship batch (256) ──gw_worker_call──> WAN thread
 *            │                          (client workers when there is none):
 *            │                          gw_apply_batch (newest wins) ──done──> counts
 *            │                          (up to 8 batches in flight)
 *            └── version 0 / no wan ──> raw batch ──own connection──> `add` per node
 *   first bad record: stop reading; what was read before it is still applied, then reply
 */
#include "gateway/restore.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "gateway/apply.h"
#include "gateway/config.h"
#include "gateway/log.h"
#include "gateway/pool.h"
#include "gateway/proto_mc.h"
#include "gateway/server.h"
#include "gateway/worker.h"
#include "proto/geogate_wan.pb-c.h"
#include "wan/crc32c.h"

#define RESTORE_BATCH 256     /* mutations per gw_apply_batch */
#define RESTORE_INFLIGHT 8    /* batches in flight */
#define RESTORE_RAW_BATCH 256 /* version-0 items per round of adds */
#define RESTORE_WAIT_SLICE_MS 200

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

/* What the workers' done callbacks share with the restore thread.  Freed by whoever
 * drops the last reference: normally the restore thread, but a batch stranded on a
 * stopping worker may outlive it. */
struct restore_shared {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int refs;          /* the restore thread + each batch in flight */
    uint32_t inflight; /* batches handed to workers, not done yet */
    uint64_t applied, rejected;
    bool failed;
};

struct restore_batch {
    struct restore_shared *sh;
    struct gw_worker *w;
    Geogate__Wan__V1__ShipRequest *req;
};

/* A version-0 record waiting for its `add`. */
struct raw_item {
    uint32_t node;
    Geogate__Wan__V1__Mutation *m;
};

struct restore_run {
    struct gw_server *srv;
    struct gw_pool *pool;
    atomic_bool *cancel;
    struct gw_restore_result *res;
    struct restore_shared *sh;
    Geogate__Wan__V1__ShipRequest *batch; /* being filled */
    uint32_t next_worker;
    uint32_t max_inflight;
    struct raw_item raw[RESTORE_RAW_BATCH];
    uint32_t nraw;
    struct gw_mc_sock *socks; /* one per node, opened on first use (fd -1 until then) */
    bool failed;              /* the raw path failed (reason in res) */
};

static void shared_put(struct restore_shared *sh)
{
    bool last;

    pthread_mutex_lock(&sh->lock);
    last = --sh->refs == 0;
    pthread_mutex_unlock(&sh->lock);
    if (last) {
        pthread_cond_destroy(&sh->cond);
        pthread_mutex_destroy(&sh->lock);
        free(sh);
    }
}

static bool run_cancelled(const struct restore_run *r)
{
    return r->cancel != NULL && atomic_load(r->cancel);
}

/* ---- versioned records: batches through the workers ---- */

/* Worker thread: the batch is applied (or failed). */
static void restore_batch_done(void *arg, uint64_t applied, uint64_t rejected, bool failed,
                               Geogate__Wan__V1__Mutation **newer, size_t n_newer)
{
    struct restore_batch *b = arg;
    struct restore_shared *sh = b->sh;

    (void)newer; /* the site holds something newer: it stays, nothing to carry anywhere */
    (void)n_newer;
    pthread_mutex_lock(&sh->lock);
    sh->applied += applied;
    sh->rejected += rejected;
    sh->failed = sh->failed || failed;
    sh->inflight--;
    pthread_cond_broadcast(&sh->cond);
    pthread_mutex_unlock(&sh->lock);
    free(b);
    shared_put(sh);
}

/* Worker thread, through gw_worker_call. */
static int restore_batch_start(void *arg)
{
    struct restore_batch *b = arg;

    /* collect_newer: items held in a newer version come back to done (and are dropped)
     * instead of being spooled for every peer: a restore must not re-ship the site. */
    gw_apply_batch(b->w, b->req, true, restore_batch_done, b);
    return 0;
}

static Geogate__Wan__V1__ShipRequest *batch_new(const struct gw_server *srv)
{
    Geogate__Wan__V1__ShipRequest *req = malloc(sizeof(*req));

    if (req == NULL) {
        return NULL;
    }
    geogate__wan__v1__ship_request__init(req);
    req->gateway_id = srv->cfg->gateway_id;
    req->origin_site = strdup(srv->cfg->site);
    req->mutations = malloc(RESTORE_BATCH * sizeof(*req->mutations));
    if (req->origin_site == NULL || req->mutations == NULL) {
        geogate__wan__v1__ship_request__free_unpacked(req, NULL);
        return NULL;
    }
    return req;
}

/* Wait until fewer than limit batches are in flight, or cancel.  Returns false when
 * cancelled with batches still out. */
static bool wait_inflight(struct restore_run *r, uint32_t limit)
{
    struct restore_shared *sh = r->sh;
    bool ok = true;

    pthread_mutex_lock(&sh->lock);
    while (sh->inflight > limit) {
        struct timespec ts;
        if (run_cancelled(r)) {
            ok = false;
            break;
        }
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += RESTORE_WAIT_SLICE_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&sh->cond, &sh->lock, &ts);
    }
    pthread_mutex_unlock(&sh->lock);
    return ok;
}

/* Hand the current batch to the next worker.  Returns 0, -ENOMEM, -EIO or -ECANCELED. */
static int batch_submit(struct restore_run *r)
{
    struct gw_server *srv = r->srv;
    Geogate__Wan__V1__ShipRequest *req = r->batch;
    struct restore_batch *b;
    int rc;

    if (req == NULL || req->n_mutations == 0) {
        return 0;
    }
    r->batch = NULL;
    if (!wait_inflight(r, r->max_inflight - 1)) {
        geogate__wan__v1__ship_request__free_unpacked(req, NULL);
        return -ECANCELED;
    }
    b = calloc(1, sizeof(*b));
    if (b == NULL) {
        geogate__wan__v1__ship_request__free_unpacked(req, NULL);
        return -ENOMEM;
    }
    b->sh = r->sh;
    if (srv->nthreads > srv->nworkers) {
        /* The WAN thread, which applies what peers ship: batches of thousands of gets and
         * cas on the client workers' connections would queue clients behind them (p99 of
         * gets during a restore: 12.6 ms there, 1.9 ms here). */
        b->w = &srv->workers[srv->nworkers];
    } else {
        b->w = &srv->workers[r->next_worker++ % (uint32_t)srv->nworkers];
    }
    b->req = req;
    pthread_mutex_lock(&r->sh->lock);
    r->sh->inflight++;
    r->sh->refs++;
    pthread_mutex_unlock(&r->sh->lock);
    rc = gw_worker_call(b->w, restore_batch_start, b);
    if (rc != 0) {
        /* Never reached the worker: take it back. */
        pthread_mutex_lock(&r->sh->lock);
        r->sh->inflight--;
        r->sh->refs--;
        pthread_mutex_unlock(&r->sh->lock);
        geogate__wan__v1__ship_request__free_unpacked(req, NULL);
        free(b);
        return -EIO;
    }
    return 0;
}

/* ---- version-0 records: `add` over the restore's own connections ---- */

static void raw_clear(struct restore_run *r)
{
    for (uint32_t i = 0; i < r->nraw; i++) {
        geogate__wan__v1__mutation__free_unpacked(r->raw[i].m, NULL);
    }
    r->nraw = 0;
}

/* Send every pending add for node and read the replies.  Returns 0 or -EIO (reason set). */
static int raw_flush_node(struct restore_run *r, uint32_t node)
{
    struct gw_mc_sock *s = &r->socks[node];
    char line[MC_KEY_MAX_LENGTH + 96];
    uint32_t sent = 0;
    int rc = 0;

    if (s->fd == -1) {
        char err[200];
        if (gw_mc_sock_open(s, r->pool, node, 0, err, sizeof(err)) != 0) {
            snprintf(r->res->reason, sizeof(r->res->reason), "%s", err);
            return -EIO;
        }
    }
    for (uint32_t i = 0; i < r->nraw && rc == 0; i++) {
        const Geogate__Wan__V1__Mutation *m = r->raw[i].m;
        int n;
        if (r->raw[i].node != node) {
            continue;
        }
        n = snprintf(line, sizeof(line), "add %.*s %" PRIu32 " %" PRIu32 " %zu\r\n",
                     (int)m->key.len, (const char *)m->key.data, m->flags, m->expiry, m->value.len);
        rc = gw_mc_sock_send(s, line, (size_t)n);
        if (rc == 0 && m->value.len > 0) {
            rc = gw_mc_sock_send(s, m->value.data, m->value.len);
        }
        if (rc == 0) {
            rc = gw_mc_sock_send(s, "\r\n", 2);
        }
        sent++;
    }
    for (uint32_t i = 0; i < sent && rc == 0; i++) {
        char *reply;
        size_t len;
        rc = gw_mc_sock_line(s, &reply, &len);
        if (rc != 0) {
            break;
        }
        if (strcmp(reply, "STORED") == 0) {
            r->res->applied++;
        } else if (strcmp(reply, "NOT_STORED") == 0) {
            r->res->rejected_older++; /* something is there: anything beats version 0 */
        } else {
            log_warn("restore: node %s refused an item: %.100s", s->label, reply);
            r->res->rejected_older++;
        }
    }
    if (rc != 0) {
        snprintf(r->res->reason, sizeof(r->res->reason), "node %s: %s while restoring items",
                 s->label, rc == -ETIMEDOUT ? "no answer" : "connection lost");
        gw_mc_sock_close(s);
        s->fd = -1;
        return -EIO;
    }
    return 0;
}

static int raw_flush(struct restore_run *r)
{
    int rc = 0;

    for (uint32_t node = 0; node < r->pool->nnodes && rc == 0; node++) {
        for (uint32_t i = 0; i < r->nraw; i++) {
            if (r->raw[i].node == node) {
                rc = raw_flush_node(r, node);
                break;
            }
        }
    }
    raw_clear(r);
    return rc;
}

/* ---- reading the file ---- */

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

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
    if (le32(p + 4) != wan_crc32c(0, p + GW_SNAP_RECORD_HEAD, GW_SNAP_END_PAYLOAD)) {
        return bad_record(res, off, "end record: CRC32C mismatch");
    }
    count = le64(p + GW_SNAP_RECORD_HEAD);
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

/* Route one good record: skipped, a versioned batch, or a raw add. */
static int take_record(struct restore_run *r, Geogate__Wan__V1__Mutation *m, uint32_t now)
{
    struct gw_restore_result *res = r->res;
    bool versioned = m->hlc != 0 || m->site_id != 0;

    if (m->expiry != 0 && m->expiry <= now) {
        res->skipped_expired++;
        geogate__wan__v1__mutation__free_unpacked(m, NULL);
        return 0;
    }
    if (versioned && r->srv->versioned) {
        if (r->batch == NULL && (r->batch = batch_new(r->srv)) == NULL) {
            geogate__wan__v1__mutation__free_unpacked(m, NULL);
            snprintf(res->reason, sizeof(res->reason), "out of memory");
            return -ENOMEM;
        }
        r->batch->mutations[r->batch->n_mutations++] = m;
        return r->batch->n_mutations == RESTORE_BATCH ? batch_submit(r) : 0;
    }
    if (m->tombstone) {
        /* No versions here: an absence is what the pool already has. */
        res->skipped_tombstones++;
        geogate__wan__v1__mutation__free_unpacked(m, NULL);
        return 0;
    }
    r->raw[r->nraw].node = gw_pool_route(r->pool, (const char *)m->key.data, (uint32_t)m->key.len);
    r->raw[r->nraw].m = m;
    r->nraw++;
    return r->nraw == RESTORE_RAW_BATCH ? raw_flush(r) : 0;
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
        len = le32(head);
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
        if (crc != le32(head + 4)) {
            return bad_record(res, off,
                              "CRC32C mismatch (record says %08" PRIx32 ", payload gives %08" PRIx32
                              ")",
                              le32(head + 4), crc);
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
        rc = take_record(r, m, (uint32_t)time(NULL));
        if (rc != 0) {
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
    uint64_t off = 0;
    int rc, rc2;

    memset(res, 0, sizeof(*res));
    memset(&r, 0, sizeof(r));
    res->bytes = evbuffer_get_length(body);
    r.srv = srv;
    r.pool = pool;
    r.cancel = cancel;
    r.res = res;
    r.max_inflight = RESTORE_INFLIGHT;
    rc = read_header(res, body, &off);
    if (rc != 0) {
        evbuffer_free(body);
        return rc;
    }
    r.sh = calloc(1, sizeof(*r.sh));
    r.socks = calloc(pool->nnodes ? pool->nnodes : 1, sizeof(*r.socks));
    if (r.sh == NULL || r.socks == NULL) {
        free(r.sh);
        free(r.socks);
        evbuffer_free(body);
        res->status = GW_RESTORE_FAILED;
        snprintf(res->reason, sizeof(res->reason), "out of memory");
        return -EIO;
    }
    for (uint32_t i = 0; i < pool->nnodes; i++) {
        r.socks[i].fd = -1;
    }
    pthread_mutex_init(&r.sh->lock, NULL);
    pthread_cond_init(&r.sh->cond, NULL);
    r.sh->refs = 1;

    rc = read_records(&r, body, off);
    evbuffer_free(body);
    /* Everything read before a bad record is still applied. */
    rc2 = rc == -ECANCELED ? 0 : batch_submit(&r);
    if (r.batch != NULL) {
        geogate__wan__v1__ship_request__free_unpacked(r.batch, NULL);
    }
    if (rc2 == 0 && rc != -ECANCELED && r.nraw > 0) {
        rc2 = raw_flush(&r);
    }
    raw_clear(&r);
    if (!wait_inflight(&r, 0) && rc2 == 0) {
        rc2 = -ECANCELED;
    }
    for (uint32_t i = 0; i < pool->nnodes; i++) {
        gw_mc_sock_close(&r.socks[i]);
    }
    free(r.socks);
    pthread_mutex_lock(&r.sh->lock);
    res->applied += r.sh->applied;
    res->rejected_older += r.sh->rejected;
    if (r.sh->failed && rc2 == 0) {
        rc2 = -EIO;
        snprintf(res->reason, sizeof(res->reason),
                 "a local memcached node failed to take items (see the gateway's log)");
    }
    pthread_mutex_unlock(&r.sh->lock);
    shared_put(r.sh);

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
