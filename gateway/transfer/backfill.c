/*
 * backfill — see backfill.h.
 *
 * Serving side, one call:
 *
 *   backfill_open (WAN thread) ──> walker thread: gw_enum_run ──item──> batch being filled
 *        │                                    ──batch end / 1 MiB──> queue (8 at most; the
 *        │                                       walker waits for room), pace to `rate`
 *        │                                    ──wake (event_active)──┐
 *        v                                                           v
 *   wake_cb (WAN thread): queue ──wan_grpc_server_backfill_send──> HTTP/2 as the window allows
 *        -ENOBUFS: wait for backfill_writable ──> wake_cb again
 *        walker done and queue empty ──> backfill_finish(OK, or UNAVAILABLE with the reason)
 *   backfill_closed (finished, caller reset, link lost) ──> cancel the walker; wake_cb frees
 *        the call once the walker has ended (it is joined there, on the WAN thread)
 *
 * Pulling side, one job: a thread with its own event_base and a WAN link of its own (no
 * Ship stream), so applying a batch may block it: the peer's window is given back only
 * after a batch is taken, which is the flow control.  Items go through gw_ingest
 * (newest wins, not shipped on).  A lost link or a failed call is retried with backoff
 * from the last cursor; a call that fails 20 times in a row without a new batch, or is
 * refused (permission, unimplemented, bad argument), ends the job.
 */
#include "gateway/transfer/backfill.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "gateway/base/clock.h"
#include "gateway/replication/catchup.h"
#include "gateway/base/config.h"
#include "gateway/transfer/ingest.h"
#include "gateway/base/json.h"
#include "gateway/base/log.h"
#include "gateway/routing/pool.h"
#include "gateway/replication/repl.h"
#include "gateway/server.h"
#include "gateway/transfer/snapshot.h"
#include "wan/grpc.h"
#include "wan/grpc_client.h"
#include "wan/grpc_server.h"
#include "wan/le.h"

#define BF_QUEUE 8                  /* batches a walker may have queued */
#define BF_BATCH_BYTES (1u << 20)   /* a batch is sent once it holds this much */
#define BF_BATCH_ITEMS 128          /* room for one gets batch (100 keys) */
#define BF_WAIT_SLICE_MS 100
#define BF_MAX_FAILURES 20          /* calls in a row without a new batch */
#define BF_TICK_MS 200
#define BF_MAX_MESSAGE (8u << 20)
#define BF_SAVE_MS 500              /* a catch-up records its cursor at most this often */

/* ---- the cursor ---- */

size_t gw_backfill_cursor_encode(uint32_t node, const char *label, const char *key, size_t nkey,
                                 uint8_t *out)
{
    size_t nlabel = strlen(label), n = 0;

    if (nlabel > 255) {
        nlabel = 255;
    }
    if (nkey > 250) {
        nkey = 250;
    }
    put32(out, node);
    n = 4;
    out[n++] = (uint8_t)nlabel;
    memcpy(out + n, label, nlabel);
    n += nlabel;
    out[n++] = (uint8_t)nkey;
    memcpy(out + n, key, nkey);
    return n + nkey;
}

int gw_backfill_cursor_decode(const uint8_t *buf, size_t len, uint32_t *node, const char **label,
                              size_t *nlabel, const char **key, size_t *nkey)
{
    size_t n = 0;

    if (len < 6) {
        return -EINVAL;
    }
    *node = get32(buf);
    n = 4;
    *nlabel = buf[n++];
    if (len < n + *nlabel + 1) {
        return -EINVAL;
    }
    *label = (const char *)buf + n;
    n += *nlabel;
    *nkey = buf[n++];
    if (*nkey == 0 || *nkey > 250 || len != n + *nkey) {
        return -EINVAL;
    }
    *key = (const char *)buf + n;
    return 0;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

static void batch_free(Geogate__Wan__V1__BackfillBatch *b)
{
    if (b != NULL) {
        geogate__wan__v1__backfill_batch__free_unpacked(b, NULL);
    }
}

/* ======================================================================================
 * serving
 * ====================================================================================== */

struct bf_serve {
    struct gw_server *srv;
    struct gw_pool *pool;
    struct wan_grpc_backfill_call *call; /* NULL once closed */
    struct event *wake;
    char peer[64];
    /* request */
    char prefix[251];
    size_t prefix_len;
    uint32_t rate;
    uint32_t start_node;
    char after[251];
    size_t after_len;
    bool resumed;
    /* walker thread */
    pthread_t thread;
    bool thread_started;
    atomic_bool cancel;
    Geogate__Wan__V1__BackfillBatch *cur; /* walker only */
    size_t cur_bytes;
    uint8_t cursor[GW_BACKFILL_CURSOR_MAX]; /* walker only: the last batch end */
    size_t cursor_len;
    const struct gw_snapshot_stats *stats; /* the walk's, while it runs */
    uint64_t sent_items; /* walker: items queued, for pacing */
    int64_t started_ms;
    /* shared, under lock */
    pthread_mutex_t lock;
    pthread_cond_t room;
    Geogate__Wan__V1__BackfillBatch *q[BF_QUEUE];
    size_t qhead, qlen;
    bool walker_done;
    int walker_rc;
    char err[256];
    bool finished; /* WAN thread: trailers asked for */
    struct bf_serve *next; /* in gw_backfill's list of calls served, under its lock */
};

/* Totals of the serving side, for /status and /metrics. */
struct bf_serve_totals {
    uint64_t calls;
    uint64_t running; /* atomic counter */
    uint64_t items;
    uint64_t bytes;
};

struct gw_backfill {
    pthread_mutex_t lock;
    struct bf_job *job; /* running or last */
    struct bf_serve_totals served;
    struct bf_serve *serves; /* calls served, until freed (serve_stop_all) */
};

static void serve_free(struct bf_serve *s)
{
    struct gw_backfill *bf = s->srv->backfill;

    pthread_mutex_lock(&bf->lock);
    for (struct bf_serve **pp = &bf->serves; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    pthread_mutex_unlock(&bf->lock);
    if (s->thread_started) {
        pthread_join(s->thread, NULL);
    }
    for (size_t i = 0; i < s->qlen; i++) {
        batch_free(s->q[(s->qhead + i) % BF_QUEUE]);
    }
    batch_free(s->cur);
    if (s->wake != NULL) {
        event_free(s->wake);
    }
    gw_pool_put(s->pool);
    pthread_cond_destroy(&s->room);
    pthread_mutex_destroy(&s->lock);
    __atomic_sub_fetch(&s->srv->backfill->served.running, 1, __ATOMIC_RELAXED);
    free(s);
}

/* Walker: hand a filled batch to the WAN thread, waiting for room.  0 or -ECANCELED. */
static int serve_push(struct bf_serve *s)
{
    Geogate__Wan__V1__BackfillBatch *b = s->cur;

    s->cur = NULL;
    s->cur_bytes = 0;
    if (b == NULL) {
        return 0;
    }
    if (s->cursor_len > 0) {
        b->cursor.data = malloc(s->cursor_len);
        if (b->cursor.data == NULL) {
            batch_free(b);
            return -ENOMEM;
        }
        memcpy(b->cursor.data, s->cursor, s->cursor_len);
        b->cursor.len = s->cursor_len;
    }
    b->peer_items = s->stats->node_items;
    b->listed = s->stats->listed;
    pthread_mutex_lock(&s->lock);
    while (s->qlen == BF_QUEUE && !atomic_load(&s->cancel)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += BF_WAIT_SLICE_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->room, &s->lock, &ts);
    }
    if (atomic_load(&s->cancel)) {
        pthread_mutex_unlock(&s->lock);
        batch_free(b);
        return -ECANCELED;
    }
    s->q[(s->qhead + s->qlen) % BF_QUEUE] = b;
    s->qlen++;
    pthread_mutex_unlock(&s->lock);
    event_active(s->wake, EV_READ, 0);
    return 0;
}

static Geogate__Wan__V1__BackfillBatch *serve_batch_new(void)
{
    Geogate__Wan__V1__BackfillBatch *b = malloc(sizeof(*b));

    if (b == NULL) {
        return NULL;
    }
    geogate__wan__v1__backfill_batch__init(b);
    b->items = calloc(BF_BATCH_ITEMS, sizeof(*b->items));
    if (b->items == NULL) {
        free(b);
        return NULL;
    }
    return b;
}

/* Walker: one live item (borrowed) into the batch being filled. */
static int serve_item(void *arg, uint32_t node, const Geogate__Wan__V1__Mutation *m)
{
    struct bf_serve *s = arg;
    Geogate__Wan__V1__Mutation *c;
    size_t size = m->key.len + m->value.len + 32;
    int rc;

    (void)node;
    if (s->cur != NULL &&
        (s->cur->n_items == BF_BATCH_ITEMS || s->cur_bytes + size > BF_BATCH_BYTES)) {
        /* Sent with the previous cursor: a resume from it sends these again (harmless). */
        rc = serve_push(s);
        if (rc != 0) {
            return rc;
        }
    }
    if (s->cur == NULL && (s->cur = serve_batch_new()) == NULL) {
        return -ENOMEM;
    }
    c = malloc(sizeof(*c));
    if (c == NULL) {
        return -ENOMEM;
    }
    *c = *m;
    c->key.data = malloc(m->key.len);
    c->value.data = m->value.len > 0 ? malloc(m->value.len) : NULL;
    if (c->key.data == NULL || (m->value.len > 0 && c->value.data == NULL)) {
        free(c->key.data);
        free(c->value.data);
        free(c);
        return -ENOMEM;
    }
    memcpy(c->key.data, m->key.data, m->key.len);
    if (m->value.len > 0) {
        memcpy(c->value.data, m->value.data, m->value.len);
    }
    if (c->site_id == 0 && c->hlc != 0) {
        c->site_id = s->srv->site_id; /* "always set" on the wire */
    }
    s->cur->items[s->cur->n_items++] = c;
    s->cur_bytes += size;
    return 0;
}

/* Walker: every key up to last_key of node is done. */
static int serve_batch(void *arg, uint32_t node, const char *last_key, size_t last_len)
{
    struct bf_serve *s = arg;
    int rc;

    s->cursor_len = gw_backfill_cursor_encode(node, s->pool->nodes[node].label, last_key,
                                              last_len, s->cursor);
    if (s->cur == NULL && (s->cur = serve_batch_new()) == NULL) {
        return -ENOMEM;
    }
    s->sent_items += s->cur->n_items;
    rc = serve_push(s);
    if (rc != 0) {
        return rc;
    }
    if (s->rate > 0) {
        /* Pace: the items so far may not have taken less than items / rate seconds. */
        int64_t due = s->started_ms + (int64_t)(s->sent_items * 1000 / s->rate);
        for (int64_t now = gw_mono_ms(); now < due && !atomic_load(&s->cancel); now = gw_mono_ms()) {
            sleep_ms(due - now < BF_WAIT_SLICE_MS ? due - now : BF_WAIT_SLICE_MS);
        }
    }
    return atomic_load(&s->cancel) ? -ECANCELED : 0;
}

static void *serve_thread(void *arg)
{
    struct bf_serve *s = arg;
    struct gw_snapshot_source src;
    struct gw_snapshot_stats st;
    struct gw_enum_options opt;
    char err[256];
    int rc;

    memset(&src, 0, sizeof(src));
    src.pool = s->pool;
    src.site = s->srv->cfg->site;
    src.site_id = s->srv->site_id;
    src.gateway_id = (uint16_t)s->srv->cfg->gateway_id;
    memset(&opt, 0, sizeof(opt));
    opt.prefix = s->prefix;
    opt.prefix_len = s->prefix_len;
    opt.start_node = s->start_node;
    opt.after = s->resumed ? s->after : NULL;
    opt.after_len = s->after_len;
    opt.item = serve_item;
    opt.batch = serve_batch;
    opt.arg = s;
    s->started_ms = gw_mono_ms();
    s->stats = &st;
    rc = gw_enum_run(&src, &opt, &s->cancel, &st, err, sizeof(err));
    if (rc == 0) {
        rc = serve_push(s); /* a last partial batch (items after the last batch end: none) */
    }
    if (rc != 0 && rc != -ECANCELED) {
        log_warn("backfill for %s: stopped after %" PRIu64 " items: %s", s->peer, st.records,
                 err[0] != '\0' ? err : strerror(-rc));
    } else if (rc == 0) {
        log_info("backfill for %s: walked the pool: %" PRIu64 " items (%" PRIu64
                 " tombstones) sent, %" PRIu64 " keys listed",
                 s->peer, st.records, st.tombstones, st.listed);
    }
    __atomic_add_fetch(&s->srv->backfill->served.items, st.records, __ATOMIC_RELAXED);
    pthread_mutex_lock(&s->lock);
    s->walker_done = true;
    s->walker_rc = rc;
    snprintf(s->err, sizeof(s->err), "%s", err[0] != '\0' ? err : strerror(-rc));
    pthread_mutex_unlock(&s->lock);
    event_active(s->wake, EV_READ, 0);
    return NULL;
}

/* WAN thread: move queued batches into the call; finish; free once closed and walked. */
static void serve_wake_cb(evutil_socket_t fd, short what, void *arg)
{
    struct bf_serve *s = arg;
    bool done;

    (void)fd;
    (void)what;
    pthread_mutex_lock(&s->lock);
    while (s->call != NULL && s->qlen > 0) {
        Geogate__Wan__V1__BackfillBatch *b = s->q[s->qhead];
        int rc = wan_grpc_server_backfill_send(s->call, b);
        if (rc == -ENOBUFS) {
            break; /* backfill_writable brings us back */
        }
        if (rc != 0) {
            atomic_store(&s->cancel, true);
            if (!s->finished) {
                s->finished = true;
                wan_grpc_server_backfill_finish(s->call, WAN_GRPC_INTERNAL,
                                                "a backfill batch could not be sent");
            }
            break;
        }
        __atomic_add_fetch(&s->srv->backfill->served.bytes,
                           geogate__wan__v1__backfill_batch__get_packed_size(b), __ATOMIC_RELAXED);
        batch_free(b);
        s->qhead = (s->qhead + 1) % BF_QUEUE;
        s->qlen--;
        pthread_cond_broadcast(&s->room);
    }
    if (s->call != NULL && s->walker_done && s->qlen == 0 && !s->finished) {
        s->finished = true;
        if (s->walker_rc == 0) {
            wan_grpc_server_backfill_finish(s->call, WAN_GRPC_OK, NULL);
        } else {
            wan_grpc_server_backfill_finish(s->call, WAN_GRPC_UNAVAILABLE, s->err);
        }
    }
    done = s->call == NULL && s->walker_done;
    pthread_mutex_unlock(&s->lock);
    if (done) {
        serve_free(s);
    }
}

static int serve_open(struct gw_server *srv, struct event_base *base, struct gw_pool *pool,
                           struct wan_grpc_backfill_call *call, const char *peer_site,
                           Geogate__Wan__V1__BackfillRequest *req, void **call_arg)
{
    struct bf_serve *s;
    int status = WAN_GRPC_OK;

    *call_arg = NULL;
    if (srv->draining) {
        geogate__wan__v1__backfill_request__free_unpacked(req, NULL);
        return WAN_GRPC_UNAVAILABLE;
    }
    if (req->prefix.len > 250) {
        geogate__wan__v1__backfill_request__free_unpacked(req, NULL);
        return WAN_GRPC_INVALID_ARGUMENT;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        geogate__wan__v1__backfill_request__free_unpacked(req, NULL);
        return WAN_GRPC_RESOURCE_EXHAUSTED;
    }
    s->srv = srv;
    s->call = call;
    snprintf(s->peer, sizeof(s->peer), "%s", peer_site);
    if (req->prefix.len > 0) {
        memcpy(s->prefix, req->prefix.data, req->prefix.len);
    }
    s->prefix_len = req->prefix.len;
    s->rate = req->rate;
    if (req->resume.len > 0) {
        uint32_t node;
        const char *label, *key;
        size_t nlabel, nkey;
        if (gw_backfill_cursor_decode(req->resume.data, req->resume.len, &node, &label, &nlabel,
                                      &key, &nkey) != 0) {
            status = WAN_GRPC_INVALID_ARGUMENT;
        } else if (node >= pool->nnodes || strlen(pool->nodes[node].label) != nlabel ||
                   memcmp(pool->nodes[node].label, label, nlabel) != 0) {
            /* The pool changed since: the positions mean nothing now; walk it all. */
            log_warn("backfill for %s: resume point names node %u %.*s, not in this pool; "
                     "starting over",
                     peer_site, node, (int)nlabel, label);
        } else {
            s->start_node = node;
            memcpy(s->after, key, nkey);
            s->after_len = nkey;
            s->resumed = true;
        }
    }
    geogate__wan__v1__backfill_request__free_unpacked(req, NULL);
    if (status != WAN_GRPC_OK) {
        free(s);
        return status;
    }
    atomic_init(&s->cancel, false);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->room, NULL);
    s->wake = event_new(base, -1, 0, serve_wake_cb, s);
    s->pool = pool;
    gw_pool_get(pool);
    __atomic_add_fetch(&srv->backfill->served.running, 1, __ATOMIC_RELAXED);
    if (s->wake == NULL || pthread_create(&s->thread, NULL, serve_thread, s) != 0) {
        s->thread_started = false;
        serve_free(s);
        return WAN_GRPC_RESOURCE_EXHAUSTED;
    }
    s->thread_started = true;
    pthread_mutex_lock(&srv->backfill->lock);
    s->next = srv->backfill->serves;
    srv->backfill->serves = s;
    pthread_mutex_unlock(&srv->backfill->lock);
    __atomic_add_fetch(&srv->backfill->served.calls, 1, __ATOMIC_RELAXED);
    log_info("backfill for %s: started%s%s%s, rate %s%u items/s", peer_site,
             s->resumed ? " (resumed)" : "", s->prefix_len ? ", prefix " : "",
             s->prefix_len ? s->prefix : "", s->rate ? "" : "unlimited ", s->rate);
    *call_arg = s;
    return 0;
}

static void serve_writable(void *call_arg)
{
    serve_wake_cb(-1, 0, call_arg);
}

static void serve_stop_all(struct gw_server *srv)
{
    struct gw_backfill *bf = srv->backfill;
    struct bf_serve *s;

    if (bf == NULL) {
        return;
    }
    for (;;) {
        pthread_mutex_lock(&bf->lock);
        s = bf->serves;
        pthread_mutex_unlock(&bf->lock);
        if (s == NULL) {
            break;
        }
        /* Its wake-up will never run now: stop the walker here; serve_free joins it. */
        pthread_mutex_lock(&s->lock);
        s->call = NULL;
        atomic_store(&s->cancel, true);
        pthread_cond_broadcast(&s->room);
        pthread_mutex_unlock(&s->lock);
        serve_free(s);
    }
}

static void serve_closed(void *call_arg, int grpc_status, const char *why)
{
    struct bf_serve *s = call_arg;

    if (grpc_status != WAN_GRPC_OK) {
        log_info("backfill for %s: call ended (%s)", s->peer, why != NULL ? why : "");
    }
    pthread_mutex_lock(&s->lock);
    s->call = NULL;
    atomic_store(&s->cancel, true);
    pthread_cond_broadcast(&s->room);
    pthread_mutex_unlock(&s->lock);
    event_active(s->wake, EV_READ, 0);
}

/* ======================================================================================
 * pulling
 * ====================================================================================== */

enum bf_state { BF_NONE = 0, BF_RUNNING, BF_DONE, BF_FAILED, BF_CANCELLED };

static const char *const bf_state_names[] = {"none", "running", "done", "failed", "cancelled"};

struct bf_job {
    struct gw_server *srv;
    struct gw_backfill *bf;
    char from[64];
    char prefix[251];
    size_t prefix_len;
    uint32_t rate;
    bool automatic;
    char why[128];
    const struct gw_peer_conf *peer;
    pthread_t thread;
    atomic_bool cancel;
    /* job thread only */
    struct event_base *base;
    struct event *tick;
    struct wan_grpc_client *client;
    struct wan_grpc_client_backfill *call;
    struct gw_ingest *in;
    struct gw_pool *pool;
    uint8_t cursor[GW_BACKFILL_CURSOR_MAX];
    size_t cursor_len;
    size_t addr;
    unsigned attempt;
    unsigned failures; /* calls in a row without a batch */
    bool got_batch;    /* in the current call */
    int64_t retry_at_ms;
    bool link_up;
    uint64_t rng;
    /* a catch-up: where its progress is recorded (NULL for an operator's backfill) */
    struct gw_catchup *catchup;
    uint64_t catchup_gen;
    int64_t saved_ms;
    /* progress, under bf->lock */
    enum bf_state state;
    uint64_t items, tombstones, bytes, batches, peer_items, resumes;
    uint64_t items_before, restarts; /* a catch-up resumed after a restart: what it had */
    struct gw_ingest_counts counts;
    int64_t started_ms, ended_ms;
    time_t started_unix;
    char error[256];
};

static struct gw_backfill *bf_of(struct gw_server *srv)
{
    return srv->backfill;
}

static void job_end(struct bf_job *j, enum bf_state state, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void job_end(struct bf_job *j, enum bf_state state, const char *fmt, ...)
{
    va_list ap;
    char msg[256] = "";

    if (fmt != NULL) {
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
    }
    /* Done, or cancelled by an operator: nothing is owed any more.  Cancelled because the
     * gateway stops, or failed: the entry stays, and a restart or repl.c's retry resumes
     * it.  Before the state changes: repl.c reads "not running" first, then the entry. */
    if (j->catchup != NULL && j->state == BF_RUNNING &&
        (state == BF_DONE || (state == BF_CANCELLED && !j->srv->draining))) {
        gw_catchup_done(j->catchup, j->from, j->catchup_gen);
    }
    pthread_mutex_lock(&j->bf->lock);
    if (j->state == BF_RUNNING) {
        j->state = state;
        j->ended_ms = gw_mono_ms();
        snprintf(j->error, sizeof(j->error), "%s", msg);
    }
    pthread_mutex_unlock(&j->bf->lock);
    event_base_loopexit(j->base, NULL);
}

static void job_call(struct bf_job *j);

/* A catch-up records its cursor once every item up to it is in the local pool (so the
 * items in flight to the WAN thread are waited for first): a restart resumes from there.
 * Returns 0 or the ingest's error. */
static int job_save(struct bf_job *j)
{
    uint64_t items;
    int rc = gw_ingest_flush(j->in, NULL);

    if (rc != 0) {
        return rc;
    }
    pthread_mutex_lock(&j->bf->lock);
    items = j->items;
    pthread_mutex_unlock(&j->bf->lock);
    gw_catchup_progress(j->catchup, j->from, j->catchup_gen, j->cursor, j->cursor_len, items);
    j->saved_ms = gw_mono_ms();
    return 0;
}

static void job_batch(void *arg, const Geogate__Wan__V1__BackfillBatch *b)
{
    struct bf_job *j = arg;
    uint32_t now = (uint32_t)time(NULL);
    uint64_t bytes = 0, tombs = 0;

    for (size_t i = 0; i < b->n_items; i++) {
        const Geogate__Wan__V1__Mutation *m = b->items[i];
        int rc;
        if (m->key.len == 0 || m->key.len > 250 || m->flush) {
            continue; /* not an item */
        }
        rc = gw_ingest_take_copy(j->in, m, now);
        if (rc != 0) {
            if (j->call != NULL) {
                wan_grpc_client_backfill_cancel(j->call);
            }
            /* cancelled, the items' way may close first (a stopping WAN thread): -EIO */
            job_end(j, rc == -ECANCELED || atomic_load(&j->cancel) ? BF_CANCELLED : BF_FAILED,
                    "applying items: %s", gw_ingest_reason(j->in));
            return;
        }
        bytes += m->key.len + m->value.len;
        tombs += m->tombstone ? 1 : 0;
    }
    if (b->cursor.len > 0 && b->cursor.len <= sizeof(j->cursor)) {
        memcpy(j->cursor, b->cursor.data, b->cursor.len);
        j->cursor_len = b->cursor.len;
    }
    j->got_batch = true;
    j->failures = 0;
    pthread_mutex_lock(&j->bf->lock);
    j->items += b->n_items;
    j->tombstones += tombs;
    j->bytes += bytes;
    j->batches++;
    if (b->peer_items > 0 && j->peer_items == 0) {
        j->peer_items = b->peer_items;
    }
    gw_ingest_counts(j->in, &j->counts);
    pthread_mutex_unlock(&j->bf->lock);
    if (j->catchup != NULL && j->cursor_len > 0 && gw_mono_ms() - j->saved_ms >= BF_SAVE_MS) {
        int rc = job_save(j);
        if (rc != 0) {
            if (j->call != NULL) {
                wan_grpc_client_backfill_cancel(j->call);
            }
            job_end(j, rc == -ECANCELED || atomic_load(&j->cancel) ? BF_CANCELLED : BF_FAILED,
                    "applying items: %s", gw_ingest_reason(j->in));
        }
    }
}

static bool retryable(int status)
{
    return status != WAN_GRPC_PERMISSION_DENIED && status != WAN_GRPC_UNIMPLEMENTED &&
           status != WAN_GRPC_INVALID_ARGUMENT && status != WAN_GRPC_UNAUTHENTICATED;
}

static void job_done(void *arg, int status, const char *message)
{
    struct bf_job *j = arg;
    int rc;

    j->call = NULL;
    if (atomic_load(&j->cancel)) {
        job_end(j, BF_CANCELLED, "cancelled");
        return;
    }
    if (status == WAN_GRPC_OK) {
        struct gw_ingest_counts c;
        rc = gw_ingest_flush(j->in, &c);
        pthread_mutex_lock(&j->bf->lock);
        j->counts = c;
        pthread_mutex_unlock(&j->bf->lock);
        if (rc != 0) {
            job_end(j, BF_FAILED, "applying items: %s", gw_ingest_reason(j->in));
        } else {
            job_end(j, BF_DONE, NULL);
        }
        return;
    }
    if (!retryable(status)) {
        job_end(j, BF_FAILED, "%s refused the backfill: %s (grpc-status %d)", j->from,
                message != NULL ? message : "", status);
        return;
    }
    if (!j->got_batch) {
        j->failures++;
    }
    if (j->failures >= BF_MAX_FAILURES) {
        job_end(j, BF_FAILED, "%u attempts in a row brought nothing; last: %s", j->failures,
                message != NULL ? message : "");
        return;
    }
    log_info("backfill from %s: call ended (%s); resuming from the last batch", j->from,
             message != NULL ? message : "");
    pthread_mutex_lock(&j->bf->lock);
    j->resumes++;
    snprintf(j->error, sizeof(j->error), "last interruption: %s", message != NULL ? message : "");
    pthread_mutex_unlock(&j->bf->lock);
    j->retry_at_ms = gw_mono_ms() + wan_grpc_backoff_ms(j->attempt++, 200, 5000, &j->rng);
}

static void job_call(struct bf_job *j)
{
    Geogate__Wan__V1__BackfillRequest req = GEOGATE__WAN__V1__BACKFILL_REQUEST__INIT;
    int rc;

    req.prefix.data = (uint8_t *)j->prefix;
    req.prefix.len = j->prefix_len;
    req.rate = j->rate;
    req.resume.data = j->cursor;
    req.resume.len = j->cursor_len;
    j->got_batch = false;
    rc = wan_grpc_client_backfill(j->client, &req, job_batch, job_done, j, &j->call);
    if (rc != 0) {
        j->call = NULL;
        j->failures++;
        j->retry_at_ms = gw_mono_ms() + wan_grpc_backoff_ms(j->attempt++, 200, 5000, &j->rng);
    }
}

static void job_up(void *arg, const char *peer_site)
{
    struct bf_job *j = arg;

    (void)peer_site;
    j->link_up = true;
    j->attempt = 0;
    if (j->call == NULL && j->retry_at_ms == 0) {
        job_call(j);
    }
}

static void job_down(void *arg, int status, const char *reason)
{
    struct bf_job *j = arg;

    (void)status;
    j->link_up = false;
    if (j->state != BF_RUNNING) {
        return;
    }
    log_info("backfill from %s: link down (%s)", j->from, reason != NULL ? reason : "");
    if (j->call == NULL && j->retry_at_ms == 0) {
        j->failures++;
        if (j->failures >= BF_MAX_FAILURES) {
            job_end(j, BF_FAILED, "cannot reach %s: %s", j->from, reason != NULL ? reason : "");
            return;
        }
    }
    j->addr = (j->addr + 1) % j->peer->naddresses;
    if (j->retry_at_ms == 0) {
        j->retry_at_ms = gw_mono_ms() + wan_grpc_backoff_ms(j->attempt++, 200, 5000, &j->rng);
    }
}

static void job_log(void *arg, enum wan_grpc_log_level level, const char *line)
{
    struct bf_job *j = arg;

    if (level == WAN_GRPC_LOG_ERROR || level == WAN_GRPC_LOG_WARN) {
        log_warn("backfill from %s: %s", j->from, line);
    }
}

static int job_connect(struct bf_job *j)
{
    static const struct wan_grpc_client_callbacks cbs = {
        .up = job_up,
        .down = job_down,
    };
    struct wan_grpc_client_config cc;
    const struct gw_addr *a = &j->peer->addresses[j->addr];
    char addr[300];
    int rc;

    if (j->client != NULL) {
        wan_grpc_client_destroy(j->client);
        j->client = NULL;
    }
    if (strchr(a->host, ':') != NULL) {
        snprintf(addr, sizeof(addr), "[%s]:%u", a->host, a->port);
    } else {
        snprintf(addr, sizeof(addr), "%s:%u", a->host, a->port);
    }
    memset(&cc, 0, sizeof(cc));
    cc.tls = gw_repl_client_tls(j->srv);
    cc.peer_site = j->from;
    cc.address = addr;
    cc.max_message = BF_MAX_MESSAGE;
    cc.no_ship = 1;
    cc.log = job_log;
    cc.log_arg = j;
    rc = wan_grpc_client_create(&j->client, j->base, &cc, &cbs, j);
    if (rc == 0) {
        rc = wan_grpc_client_connect(j->client);
    }
    return rc;
}

static void job_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct bf_job *j = arg;

    (void)fd;
    (void)what;
    if (atomic_load(&j->cancel)) {
        if (j->call != NULL) {
            wan_grpc_client_backfill_cancel(j->call);
        } else {
            job_end(j, BF_CANCELLED, "cancelled");
        }
        return;
    }
    if (j->retry_at_ms == 0 || gw_mono_ms() < j->retry_at_ms) {
        return;
    }
    j->retry_at_ms = 0;
    if (j->link_up && j->client != NULL && wan_grpc_client_is_up(j->client)) {
        job_call(j);
    } else if (job_connect(j) != 0) {
        j->failures++;
        j->retry_at_ms = gw_mono_ms() + wan_grpc_backoff_ms(j->attempt++, 200, 5000, &j->rng);
    }
}

static void *job_thread(void *arg)
{
    struct bf_job *j = arg;
    struct timeval tick = {0, BF_TICK_MS * 1000};
    int rc;

    rc = gw_ingest_create(j->srv, j->pool, &j->cancel, &j->in);
    j->base = rc == 0 ? event_base_new() : NULL;
    if (j->base == NULL) {
        pthread_mutex_lock(&j->bf->lock);
        j->state = BF_FAILED;
        j->ended_ms = gw_mono_ms();
        snprintf(j->error, sizeof(j->error), "out of memory");
        pthread_mutex_unlock(&j->bf->lock);
        goto out;
    }
    j->tick = event_new(j->base, -1, EV_PERSIST, job_tick_cb, j);
    event_add(j->tick, &tick);
    if (job_connect(j) != 0) {
        j->retry_at_ms = gw_mono_ms() + 1000;
    }
    event_base_dispatch(j->base);
    if (j->client != NULL) {
        wan_grpc_client_destroy(j->client); /* a call still open ends in job_done */
        j->client = NULL;
    }
    event_free(j->tick);
    event_base_free(j->base);
    j->base = NULL;

out:
    pthread_mutex_lock(&j->bf->lock);
    if (j->in != NULL) {
        gw_ingest_counts(j->in, &j->counts);
    }
    pthread_mutex_unlock(&j->bf->lock);
    gw_ingest_destroy(j->in);
    j->in = NULL;
    gw_pool_put(j->pool);
    j->pool = NULL;
    {
        double secs = (double)(j->ended_ms - j->started_ms) / 1000.0;
        const char *state = bf_state_names[j->state];
        if (j->state == BF_DONE) {
            log_info("backfill from %s: done: %" PRIu64 " items (%" PRIu64 " bytes) in %.1f s, "
                     "%" PRIu64 " applied, %" PRIu64 " already as new or newer, %" PRIu64
                     " expired, %" PRIu64 " resumes",
                     j->from, j->items, j->bytes, secs, j->counts.applied,
                     j->counts.rejected_older, j->counts.skipped_expired, j->resumes);
        } else {
            log_warn("backfill from %s: %s after %" PRIu64 " items: %s", j->from, state, j->items,
                     j->error);
        }
    }
    return NULL;
}

int gw_backfill_init(struct gw_server *srv)
{
    struct gw_backfill *bf = calloc(1, sizeof(*bf));

    if (bf == NULL) {
        return -ENOMEM;
    }
    pthread_mutex_init(&bf->lock, NULL);
    srv->backfill = bf;
    return 0;
}

static void job_reap(struct bf_job *j)
{
    pthread_join(j->thread, NULL);
    free(j);
}

void gw_backfill_shutdown(struct gw_server *srv)
{
    struct gw_backfill *bf = bf_of(srv);
    struct bf_job *j;

    if (bf == NULL) {
        return;
    }
    pthread_mutex_lock(&bf->lock);
    j = bf->job;
    bf->job = NULL;
    pthread_mutex_unlock(&bf->lock);
    if (j != NULL) {
        atomic_store(&j->cancel, true);
        job_reap(j);
    }
}

void gw_backfill_free(struct gw_server *srv)
{
    struct gw_backfill *bf = bf_of(srv);

    if (bf == NULL) {
        return;
    }
    gw_backfill_shutdown(srv);
    pthread_mutex_destroy(&bf->lock);
    free(bf);
    srv->backfill = NULL;
}

/* A catch-up replication asks for (repl.c decides when): an automatic job at the
 * configured rate. */
static int backfill_catch_up(struct gw_server *srv, const struct gw_repl_catch_up *req, char *err,
                             size_t errlen)
{
    struct gw_backfill_params bp;

    memset(&bp, 0, sizeof(bp));
    bp.pool = req->pool;
    bp.from = req->from;
    bp.rate = -1;
    bp.automatic = true;
    bp.why = req->why;
    bp.catchup = req->catchup;
    bp.resume = req->resume;
    return gw_backfill_start(srv, &bp, err, errlen);
}

static bool backfill_running(struct gw_server *srv);

void gw_backfill_repl_hooks(struct gw_repl_hooks *hooks)
{
    hooks->backfill_running = backfill_running;
    hooks->backfill_start = backfill_catch_up;
    hooks->serve_open = serve_open;
    hooks->serve_writable = serve_writable;
    hooks->serve_closed = serve_closed;
    hooks->serve_stop_all = serve_stop_all;
}

int gw_backfill_start(struct gw_server *srv, const struct gw_backfill_params *p, char *err,
                      size_t errlen)
{
    struct gw_backfill *bf = bf_of(srv);
    const struct gw_config *cfg = srv->cfg;
    const struct gw_peer_conf *peer = NULL;
    int pi = gw_config_peer_index(cfg, p->from);
    struct bf_job *j, *old = NULL;
    size_t plen = p->prefix != NULL ? strlen(p->prefix) : 0;

    if (!gw_server_replicates(srv) || bf == NULL) {
        snprintf(err, errlen, "this gateway does not replicate (no wan peers): nothing to "
                              "backfill from");
        return -ENOTCONN;
    }
    if (pi >= 0) {
        peer = &cfg->wan.peers[pi];
    }
    if (peer == NULL || peer->naddresses == 0) {
        snprintf(err, errlen, "unknown site '%.64s': not a configured peer", p->from);
        return -ENOENT;
    }
    if (plen > 250) {
        snprintf(err, errlen, "prefix longer than 250 bytes");
        return -EINVAL;
    }
    for (size_t i = 0; i < plen; i++) {
        if ((unsigned char)p->prefix[i] <= ' ' || p->prefix[i] == 0x7f) {
            snprintf(err, errlen, "prefix holds a space or control character");
            return -EINVAL;
        }
    }
    j = calloc(1, sizeof(*j));
    if (j == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    j->srv = srv;
    j->bf = bf;
    j->peer = peer;
    snprintf(j->from, sizeof(j->from), "%s", p->from);
    memcpy(j->prefix, p->prefix != NULL ? p->prefix : "", plen);
    j->prefix_len = plen;
    j->rate = p->rate < 0 ? cfg->replication.backfill_rate
                          : (uint32_t)(p->rate > UINT32_MAX ? UINT32_MAX : p->rate);
    j->automatic = p->automatic;
    snprintf(j->why, sizeof(j->why), "%s", p->why != NULL ? p->why : "");
    if (p->catchup != NULL && p->resume != NULL) {
        j->catchup = p->catchup;
        j->catchup_gen = p->resume->gen;
        memcpy(j->cursor, p->resume->cursor, p->resume->cursor_len);
        j->cursor_len = p->resume->cursor_len;
        j->items = j->items_before = p->resume->items;
        j->restarts = p->resume->restarts;
        j->saved_ms = gw_mono_ms();
    }
    j->rng = (uint64_t)gw_mono_ms() * 0x9e3779b97f4a7c15ull;
    atomic_init(&j->cancel, false);
    j->state = BF_RUNNING;
    j->started_ms = gw_mono_ms();
    j->started_unix = time(NULL);

    pthread_mutex_lock(&bf->lock);
    if (bf->job != NULL && bf->job->state == BF_RUNNING) {
        pthread_mutex_unlock(&bf->lock);
        snprintf(err, errlen, "a backfill from %s is already running", bf->job->from);
        free(j);
        return -EBUSY;
    }
    old = bf->job;
    j->pool = p->pool;
    gw_pool_get(j->pool);
    if (pthread_create(&j->thread, NULL, job_thread, j) != 0) {
        pthread_mutex_unlock(&bf->lock);
        gw_pool_put(j->pool);
        free(j);
        snprintf(err, errlen, "cannot start a thread");
        return -ENOMEM;
    }
    bf->job = j;
    pthread_mutex_unlock(&bf->lock);
    if (old != NULL) {
        job_reap(old); /* ended: its thread is finishing or gone */
    }
    log_info("backfill from %s: started (%s%s%s%s), rate %s%u items/s%s", j->from,
             j->automatic ? "automatic" : "operator", j->why[0] ? ": " : "", j->why,
             plen ? ", prefix given" : "", j->rate ? "" : "unlimited ", j->rate,
             j->cursor_len > 0 ? ", resuming from its last cursor" : "");
    return 0;
}

int gw_backfill_cancel(struct gw_server *srv)
{
    struct gw_backfill *bf = bf_of(srv);
    int rc = -ENOENT;

    if (bf == NULL) {
        return rc;
    }
    pthread_mutex_lock(&bf->lock);
    if (bf->job != NULL && bf->job->state == BF_RUNNING) {
        atomic_store(&bf->job->cancel, true);
        rc = 0;
    }
    pthread_mutex_unlock(&bf->lock);
    return rc;
}

static bool backfill_running(struct gw_server *srv)
{
    struct gw_backfill *bf = bf_of(srv);
    bool running = false;

    if (bf != NULL) {
        pthread_mutex_lock(&bf->lock);
        running = bf->job != NULL && bf->job->state == BF_RUNNING;
        pthread_mutex_unlock(&bf->lock);
    }
    return running;
}

void gw_backfill_json(struct gw_server *srv, struct evbuffer *out)
{
    struct gw_backfill *bf = bf_of(srv);
    struct bf_job *j;
    int64_t now = gw_mono_ms(), elapsed;
    double rate = 0, pct = -1, eta = -1;

    if (bf == NULL) {
        evbuffer_add_printf(out, "{\"state\":\"none\"}");
        return;
    }
    pthread_mutex_lock(&bf->lock);
    j = bf->job;
    if (j == NULL) {
        evbuffer_add_printf(out, "{\"state\":\"none\",\"served_calls\":%" PRIu64
                                 ",\"served_items\":%" PRIu64 "}",
                            __atomic_load_n(&bf->served.calls, __ATOMIC_RELAXED),
                            __atomic_load_n(&bf->served.items, __ATOMIC_RELAXED));
        pthread_mutex_unlock(&bf->lock);
        return;
    }
    elapsed = (j->state == BF_RUNNING ? now : j->ended_ms) - j->started_ms;
    if (elapsed > 0) {
        rate = (double)(j->items - j->items_before) * 1000.0 / (double)elapsed;
    }
    if (j->peer_items > 0) {
        pct = 100.0 * (double)j->items / (double)j->peer_items;
        if (pct > 100.0) {
            pct = 100.0;
        }
        if (j->state == BF_RUNNING && rate > 0 && j->items < j->peer_items) {
            eta = (double)(j->peer_items - j->items) / rate;
        }
    }
    if (j->state == BF_DONE) {
        pct = 100.0;
        eta = 0;
    }
    evbuffer_add_printf(out, "{\"state\":\"%s\",\"from\":", bf_state_names[j->state]);
    gw_json_str(out, j->from);
    evbuffer_add_printf(out, ",\"prefix\":");
    gw_json_str(out, j->prefix);
    evbuffer_add_printf(out, ",\"automatic\":%s,\"why\":", j->automatic ? "true" : "false");
    gw_json_str(out, j->why);
    evbuffer_add_printf(
        out,
        ",\"rate_limit\":%u,\"started\":%lld,\"elapsed_ms\":%" PRId64 ",\"items\":%" PRIu64
        ",\"tombstones\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"batches\":%" PRIu64
        ",\"peer_items\":%" PRIu64 ",\"percent\":%.1f,\"items_per_s\":%.0f,\"eta_s\":%.1f"
        ",\"resumes\":%" PRIu64 ",\"restarts\":%" PRIu64 ",\"items_before_restart\":%" PRIu64
        ",\"applied\":%" PRIu64 ",\"rejected_older\":%" PRIu64
        ",\"skipped_expired\":%" PRIu64 ",\"error\":",
        j->rate, (long long)j->started_unix, elapsed, j->items, j->tombstones, j->bytes,
        j->batches, j->peer_items, pct, rate, eta, j->resumes, j->restarts, j->items_before,
        j->counts.applied, j->counts.rejected_older, j->counts.skipped_expired);
    gw_json_str(out, j->error);
    evbuffer_add_printf(out, ",\"served_calls\":%" PRIu64 ",\"served_items\":%" PRIu64 "}",
                        __atomic_load_n(&bf->served.calls, __ATOMIC_RELAXED),
                        __atomic_load_n(&bf->served.items, __ATOMIC_RELAXED));
    pthread_mutex_unlock(&bf->lock);
}

void gw_backfill_metrics(struct gw_server *srv, struct evbuffer *out)
{
    struct gw_backfill *bf = bf_of(srv);
    uint64_t items = 0, resumes = 0;
    int running = 0;
    const char *from = "";
    char peer[64] = "";

    if (bf == NULL) {
        return;
    }
    pthread_mutex_lock(&bf->lock);
    if (bf->job != NULL) {
        running = bf->job->state == BF_RUNNING;
        items = bf->job->items;
        resumes = bf->job->resumes;
        snprintf(peer, sizeof(peer), "%s", bf->job->from);
    }
    pthread_mutex_unlock(&bf->lock);
    from = peer;
    evbuffer_add_printf(out,
                        "# HELP geogate_backfill_running 1 while this gateway pulls a backfill.\n"
                        "# TYPE geogate_backfill_running gauge\n"
                        "geogate_backfill_running %d\n",
                        running);
    if (from[0] != '\0') {
        evbuffer_add_printf(out,
                            "# HELP geogate_backfill_items Items received by the current or "
                            "last backfill.\n"
                            "# TYPE geogate_backfill_items gauge\n"
                            "geogate_backfill_items{peer=\"%s\"} %" PRIu64 "\n"
                            "# HELP geogate_backfill_resumes Times the current or last backfill "
                            "went on after an interruption.\n"
                            "# TYPE geogate_backfill_resumes gauge\n"
                            "geogate_backfill_resumes{peer=\"%s\"} %" PRIu64 "\n",
                            from, items, from, resumes);
    }
    evbuffer_add_printf(out,
                        "# HELP geogate_backfill_served_calls_total Backfill calls served to "
                        "peer sites.\n"
                        "# TYPE geogate_backfill_served_calls_total counter\n"
                        "geogate_backfill_served_calls_total %" PRIu64 "\n"
                        "# HELP geogate_backfill_served_items_total Items sent to peer sites "
                        "by backfills.\n"
                        "# TYPE geogate_backfill_served_items_total counter\n"
                        "geogate_backfill_served_items_total %" PRIu64 "\n",
                        __atomic_load_n(&bf->served.calls, __ATOMIC_RELAXED),
                        __atomic_load_n(&bf->served.items, __ATOMIC_RELAXED));
}
