/*
 * ingest — see ingest.h.  The batches it hands to the workers finish on their threads and
 * report back under the shared block's lock; the shared block is freed by whoever drops
 * the last reference (normally the ingest's own thread, but a batch stranded on a stopping
 * worker may outlive it).
 */
#include "gateway/transfer/ingest.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

#include "gateway/store/apply.h"
#include "gateway/base/config.h"
#include "gateway/base/log.h"
#include "gateway/routing/pool.h"
#include "gateway/protocol/proto_mc.h"
#include "gateway/server.h"
#include "gateway/transfer/snapshot.h"
#include "gateway/loop/worker.h"

#define INGEST_INFLIGHT 8 /* batches in flight */
#define INGEST_ROUND 256  /* items per round of adds, or mutations per gw_apply_batch */

/* Pacing while clients are served (see "pacing"). */
#define INGEST_ROUND_SHARED 64      /* items per round while clients are served */
#define INGEST_NODE_ROUND_SHARED 64 /* adds per round, all to one node, while clients are served */
#define INGEST_CLIENTS_QUIET_MS 100 /* no client byte read for this long: full speed */
/* A pause in tenths of the round it follows (see "pacing"). */
#define INGEST_PAUSE_RAW_TENTHS 5        /* adds: half the round */
#define INGEST_PAUSE_VERSIONED_TENTHS 30 /* batches, on the workers: 3/4 of the time idle */
#define INGEST_PAUSE_MIN_NS 20000u       /* and within these */
#define INGEST_PAUSE_MAX_NS 2000000u

/* Room for one "add KEY FLAGS EXPIRY BYTES\r\n". */
#define RAW_HEAD_MAX (MC_KEY_MAX_LENGTH + 96)

#define INGEST_WAIT_SLICE_MS 200

struct ingest_shared {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int refs;          /* the ingest + each batch in flight */
    uint32_t inflight; /* batches handed to workers, not done yet */
    uint64_t applied, rejected;
    bool failed;
};

struct ingest_batch {
    struct ingest_shared *sh;
    struct gw_worker *w;
    Geogate__Wan__V1__ShipRequest *req;
};

/* A version-0 item waiting for its `add`. */
struct raw_item {
    uint32_t node;
    Geogate__Wan__V1__Mutation *m;
};

/* The ingest's own connection to one node. */
struct raw_node {
    struct gw_mc_sock sock; /* fd -1 until first used */
    uint32_t unanswered;    /* adds sent whose replies are not read yet */
    uint32_t last_round;    /* of which sent in the latest round */
    uint32_t pending;       /* items for it in raw[], not sent yet */
};

struct gw_ingest {
    struct gw_server *srv;
    struct gw_pool *pool;
    atomic_bool *cancel;
    struct ingest_shared *sh;
    Geogate__Wan__V1__ShipRequest *batch; /* being filled */
    uint32_t next_worker;
    struct raw_item raw[INGEST_ROUND];
    uint32_t nraw;
    struct raw_node *nodes; /* one per node of the pool */
    /* A round's command lines, and per add its line, its value and "\r\n" to send. */
    char heads[INGEST_ROUND][RAW_HEAD_MAX];
    struct iovec iov[INGEST_ROUND * 3];
    uint32_t round_max;          /* INGEST_ROUND, or INGEST_ROUND_SHARED while paced */
    uint64_t clients_bytes;      /* the workers' bytes_read at the last look */
    uint64_t clients_seen_ms;    /* when they last moved */
    uint64_t round_start_ns;     /* when the current round began (after the last pause) */
    struct gw_ingest_counts own; /* raw path and skips; the workers' part is in sh */
    char reason[256];
};

static void shared_put(struct ingest_shared *sh)
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

static bool cancelled(const struct gw_ingest *in)
{
    return in->cancel != NULL && atomic_load(in->cancel);
}

/* ---- pacing ----
 *
 * A restore (or backfill) into an idle site runs at full speed: rounds of INGEST_ROUND,
 * one behind the other.  memcached then takes a round of adds whole before a client's get
 * on the same node, and the nodes and this thread keep both cores busy, so a client's p99
 * rose 10x and more on the 2-core bench.  While any client worker read a byte within
 * INGEST_CLIENTS_QUIET_MS, the restore gives way:
 *   - adds go in rounds of INGEST_NODE_ROUND_SHARED to one node at a time (raw_flush_node),
 *     each followed by a pause of half the round: one node works on the restore while the
 *     others, and a core, are free for the clients.  Only memcached works on adds, and a
 *     single-site restore runs on a thread the kernel schedules on idle cores only
 *     (admin_xfer.c), so this thread's decoding costs the clients nothing;
 *   - versioned batches are applied by the client workers themselves, so they are
 *     INGEST_ROUND_SHARED mutations, one in flight, each followed by three times its time.
 * A pause in proportion to the round adapts to the machine's speed (docs/BENCHMARKS.md,
 * "Restore", has the sweeps).
 */

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool clients_active(struct gw_ingest *in, uint64_t now)
{
    uint64_t bytes = 0;

    for (int i = 0; in->srv->workers != NULL && i < in->srv->nworkers; i++) {
        bytes += __atomic_load_n(&in->srv->workers[i].stats.bytes_read, __ATOMIC_RELAXED);
    }
    if (bytes != in->clients_bytes) {
        in->clients_bytes = bytes;
        in->clients_seen_ms = now / 1000000u;
    }
    return now / 1000000u - in->clients_seen_ms < INGEST_CLIENTS_QUIET_MS;
}

/* After a round: choose the next round's size and pause if clients are served. */
static void ingest_pace(struct gw_ingest *in, uint64_t tenths)
{
    uint64_t now = now_ns();
    uint64_t took = now - in->round_start_ns;

    if (!clients_active(in, now)) {
        in->round_max = INGEST_ROUND;
        in->round_start_ns = now;
        return;
    }
    in->round_max = INGEST_ROUND_SHARED;
    in->own.paced_rounds++;
    took = took * tenths / 10;
    struct timespec ts = {0, (long)(took < INGEST_PAUSE_MIN_NS   ? INGEST_PAUSE_MIN_NS
                                    : took > INGEST_PAUSE_MAX_NS ? INGEST_PAUSE_MAX_NS
                                                                 : took)};
    nanosleep(&ts, NULL);
    in->round_start_ns = now_ns();
}

/* ---- versioned items: batches through the workers ---- */

/* Worker thread: the batch is applied (or failed). */
static void batch_done(void *arg, uint64_t applied, uint64_t rejected, bool failed,
                       Geogate__Wan__V1__Mutation **newer, size_t n_newer)
{
    struct ingest_batch *b = arg;
    struct ingest_shared *sh = b->sh;

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
static int batch_start(void *arg)
{
    struct ingest_batch *b = arg;

    /* collect_newer: items held in a newer version come back to done (and are dropped)
     * instead of being spooled for every peer: an ingest must not re-ship the site. */
    gw_apply_batch(b->w, b->req, true, batch_done, b);
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
    req->mutations = malloc(INGEST_ROUND * sizeof(*req->mutations));
    if (req->origin_site == NULL || req->mutations == NULL) {
        geogate__wan__v1__ship_request__free_unpacked(req, NULL);
        return NULL;
    }
    return req;
}

/* Wait until at most limit batches are in flight, or cancel.  Returns false when
 * cancelled with batches still out. */
static bool wait_inflight(struct gw_ingest *in, uint32_t limit)
{
    struct ingest_shared *sh = in->sh;
    bool ok = true;

    pthread_mutex_lock(&sh->lock);
    while (sh->inflight > limit) {
        struct timespec ts;
        if (cancelled(in)) {
            ok = false;
            break;
        }
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += INGEST_WAIT_SLICE_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&sh->cond, &sh->lock, &ts);
    }
    pthread_mutex_unlock(&sh->lock);
    return ok;
}

/* Hand the current batch to the WAN thread (or the next worker). */
static int batch_submit(struct gw_ingest *in)
{
    struct gw_server *srv = in->srv;
    Geogate__Wan__V1__ShipRequest *req = in->batch;
    struct ingest_batch *b;

    if (req == NULL || req->n_mutations == 0) {
        return 0;
    }
    in->batch = NULL;
    /* Paced: the batch before is applied before this one goes, then the pause. */
    if (!wait_inflight(in, in->round_max == INGEST_ROUND_SHARED ? 0 : INGEST_INFLIGHT - 1)) {
        geogate__wan__v1__ship_request__free_unpacked(req, NULL);
        snprintf(in->reason, sizeof(in->reason), "cancelled");
        return -ECANCELED;
    }
    ingest_pace(in, INGEST_PAUSE_VERSIONED_TENTHS);
    b = calloc(1, sizeof(*b));
    if (b == NULL) {
        geogate__wan__v1__ship_request__free_unpacked(req, NULL);
        snprintf(in->reason, sizeof(in->reason), "out of memory");
        return -ENOMEM;
    }
    b->sh = in->sh;
    if (srv->nthreads > srv->nworkers) {
        /* The WAN thread, which applies what peers ship: batches of thousands of gets and
         * cas on the client workers' connections would queue clients behind them (p99 of
         * gets during a restore: 12.6 ms there, 1.9 ms here). */
        b->w = &srv->workers[srv->nworkers];
    } else {
        b->w = &srv->workers[in->next_worker++ % (uint32_t)srv->nworkers];
    }
    b->req = req;
    pthread_mutex_lock(&in->sh->lock);
    in->sh->inflight++;
    in->sh->refs++;
    pthread_mutex_unlock(&in->sh->lock);
    if (gw_worker_call(b->w, batch_start, b) != 0) {
        /* Never reached the worker: take it back. */
        pthread_mutex_lock(&in->sh->lock);
        in->sh->inflight--;
        in->sh->refs--;
        pthread_mutex_unlock(&in->sh->lock);
        geogate__wan__v1__ship_request__free_unpacked(req, NULL);
        free(b);
        snprintf(in->reason, sizeof(in->reason), "the gateway's WAN thread is stopping");
        return -EIO;
    }
    return 0;
}

/* ---- version-0 items: `add` over the ingest's own connections ----
 *
 *   take ──> raw[] (256) ──raw_flush──> per node: every add of the round in one sendmsg
 *                                       (heads formatted, values pointed at, not copied)
 *            then read the replies of the round before, so memcached applies one round
 *            while this thread reads and decodes the next; at most two rounds unanswered
 *            per node, which keeps the replies far below a socket buffer (no deadlock
 *            between our writes and memcached's).
 */

static void raw_clear(struct gw_ingest *in)
{
    for (uint32_t i = 0; i < in->nraw; i++) {
        geogate__wan__v1__mutation__free_unpacked(in->raw[i].m, NULL);
    }
    in->nraw = 0;
    for (uint32_t node = 0; node < in->pool->nnodes; node++) {
        in->nodes[node].pending = 0;
    }
}

/* Forget node's items (sent, or its connection failed); the others keep their order. */
static void raw_clear_node(struct gw_ingest *in, uint32_t node)
{
    uint32_t kept = 0;

    for (uint32_t i = 0; i < in->nraw; i++) {
        if (in->raw[i].node == node) {
            geogate__wan__v1__mutation__free_unpacked(in->raw[i].m, NULL);
        } else {
            in->raw[kept++] = in->raw[i];
        }
    }
    in->nraw = kept;
    in->nodes[node].pending = 0;
}

/* A node stopped answering or took the connection down: say so, forget what it owed. */
static int raw_node_failed(struct gw_ingest *in, uint32_t node, int rc)
{
    struct raw_node *rn = &in->nodes[node];

    snprintf(in->reason, sizeof(in->reason), "node %s: %s while writing items", rn->sock.label,
             rc == -ETIMEDOUT ? "no answer" : "connection lost");
    gw_mc_sock_close(&rn->sock);
    rn->sock.fd = -1;
    rn->unanswered = 0;
    rn->last_round = 0;
    return -EIO;
}

/* Send every pending add for node in one go.  Returns 0 or -EIO (reason set). */
static int raw_send_node(struct gw_ingest *in, uint32_t node)
{
    static const char crlf[2] = "\r\n";
    struct raw_node *rn = &in->nodes[node];
    size_t niov = 0;
    uint32_t count = 0;
    bool any = false;
    int rc;

    for (uint32_t i = 0; i < in->nraw && !any; i++) {
        any = in->raw[i].node == node;
    }
    if (!any) {
        rn->last_round = 0;
        return 0; /* nothing for it: no connection opened just to read old replies */
    }
    if (rn->sock.fd == -1) {
        char err[200];
        if (gw_mc_sock_open(&rn->sock, in->pool, node, 0, err, sizeof(err)) != 0) {
            snprintf(in->reason, sizeof(in->reason), "%s", err);
            return -EIO;
        }
    }
    for (uint32_t i = 0; i < in->nraw; i++) {
        const Geogate__Wan__V1__Mutation *m = in->raw[i].m;
        char *head = in->heads[count];
        int n;
        if (in->raw[i].node != node) {
            continue;
        }
        n = snprintf(head, RAW_HEAD_MAX, "add %.*s %" PRIu32 " %" PRIu32 " %zu\r\n",
                     (int)m->key.len, (const char *)m->key.data, m->flags, m->expiry, m->value.len);
        in->iov[niov++] = (struct iovec){.iov_base = head, .iov_len = (size_t)n};
        if (m->value.len > 0) {
            in->iov[niov++] = (struct iovec){.iov_base = m->value.data, .iov_len = m->value.len};
        }
        in->iov[niov++] = (struct iovec){.iov_base = (void *)crlf, .iov_len = sizeof(crlf)};
        count++;
    }
    rc = gw_mc_sock_sendv(&rn->sock, in->iov, niov);
    if (rc != 0) {
        return raw_node_failed(in, node, rc);
    }
    rn->unanswered += count;
    rn->last_round = count;
    return 0;
}

/* Read node's replies until at most keep adds are unanswered.  Returns 0 or -EIO. */
static int raw_read_node(struct gw_ingest *in, uint32_t node, uint32_t keep)
{
    struct raw_node *rn = &in->nodes[node];

    while (rn->unanswered > keep) {
        char *reply;
        size_t len;
        int rc = gw_mc_sock_line(&rn->sock, &reply, &len);
        if (rc != 0) {
            return raw_node_failed(in, node, rc);
        }
        rn->unanswered--;
        if (strcmp(reply, "STORED") == 0) {
            in->own.applied++;
        } else if (strcmp(reply, "NOT_STORED") == 0) {
            in->own.rejected_older++; /* something is there: anything beats version 0 */
        } else {
            log_warn("node %s refused an item: %.100s", rn->sock.label, reply);
            in->own.rejected_older++;
        }
    }
    return 0;
}

/* Send what is collected, then read the replies of the round before (final: of every
 * round).  After a failure the other nodes' replies are still read, so the counts hold
 * everything that was applied.  Returns 0 or -EIO (reason set). */
static int raw_flush(struct gw_ingest *in, bool final)
{
    int rc = 0;

    for (uint32_t node = 0; node < in->pool->nnodes && rc == 0; node++) {
        rc = raw_send_node(in, node);
    }
    raw_clear(in); /* what was sent is in the kernel's buffers now */
    for (uint32_t node = 0; node < in->pool->nnodes; node++) {
        struct raw_node *rn = &in->nodes[node];
        int rc2;
        if (rn->sock.fd == -1) {
            continue;
        }
        rc2 = raw_read_node(in, node, final || rc != 0 ? 0 : rn->last_round);
        rc = rc != 0 ? rc : rc2;
    }
    if (!final && rc == 0) {
        ingest_pace(in, INGEST_PAUSE_RAW_TENTHS);
    }
    return rc;
}

/* Paced: send node's adds alone, read its round before, pause.  One node at a time works on
 * the restore, so the other nodes, and a core, are free for the clients.  Returns 0 or -EIO. */
static int raw_flush_node(struct gw_ingest *in, uint32_t node)
{
    int rc = raw_send_node(in, node);

    raw_clear_node(in, node);
    if (rc == 0) {
        rc = raw_read_node(in, node, in->nodes[node].last_round);
    }
    if (rc == 0) {
        ingest_pace(in, INGEST_PAUSE_RAW_TENTHS);
    }
    return rc;
}

/* ---- the API ---- */

int gw_ingest_create(struct gw_server *srv, struct gw_pool *pool, atomic_bool *cancel,
                     struct gw_ingest **out)
{
    struct gw_ingest *in = calloc(1, sizeof(*in));

    *out = NULL;
    if (in == NULL) {
        return -ENOMEM;
    }
    in->srv = srv;
    in->pool = pool;
    in->cancel = cancel;
    in->sh = calloc(1, sizeof(*in->sh));
    in->nodes = calloc(pool->nnodes ? pool->nnodes : 1, sizeof(*in->nodes));
    if (in->sh == NULL || in->nodes == NULL) {
        free(in->sh);
        free(in->nodes);
        free(in);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < pool->nnodes; i++) {
        in->nodes[i].sock.fd = -1;
    }
    in->round_start_ns = now_ns();
    in->round_max = clients_active(in, in->round_start_ns) ? INGEST_ROUND_SHARED : INGEST_ROUND;
    pthread_mutex_init(&in->sh->lock, NULL);
    pthread_cond_init(&in->sh->cond, NULL);
    in->sh->refs = 1;
    *out = in;
    return 0;
}

int gw_ingest_take(struct gw_ingest *in, Geogate__Wan__V1__Mutation *m, uint32_t now)
{
    bool versioned = m->hlc != 0 || m->site_id != 0;

    in->reason[0] = '\0';
    if (m->expiry != 0 && m->expiry <= now) {
        in->own.skipped_expired++;
        geogate__wan__v1__mutation__free_unpacked(m, NULL);
        return 0;
    }
    if (versioned && gw_server_replicates(in->srv)) {
        if (in->batch == NULL && (in->batch = batch_new(in->srv)) == NULL) {
            geogate__wan__v1__mutation__free_unpacked(m, NULL);
            snprintf(in->reason, sizeof(in->reason), "out of memory");
            return -ENOMEM;
        }
        in->batch->mutations[in->batch->n_mutations++] = m;
        return in->batch->n_mutations >= in->round_max ? batch_submit(in) : 0;
    }
    if (m->tombstone) {
        /* No versions here: an absence is what the pool already has. */
        in->own.skipped_tombstones++;
        geogate__wan__v1__mutation__free_unpacked(m, NULL);
        return 0;
    }
    uint32_t node = gw_pool_route(in->pool, (const char *)m->key.data, (uint32_t)m->key.len);
    in->raw[in->nraw].node = node;
    in->raw[in->nraw].m = m;
    in->nraw++;
    in->nodes[node].pending++;
    if (in->round_max == INGEST_ROUND_SHARED &&
        in->nodes[node].pending >= INGEST_NODE_ROUND_SHARED) {
        return raw_flush_node(in, node);
    }
    return in->nraw >= INGEST_ROUND ? raw_flush(in, false) : 0;
}

static void *memdup(const void *p, size_t n)
{
    void *q = malloc(n);

    if (q != NULL) {
        memcpy(q, p, n);
    }
    return q;
}

int gw_ingest_take_copy(struct gw_ingest *in, const Geogate__Wan__V1__Mutation *m, uint32_t now)
{
    Geogate__Wan__V1__Mutation *c = malloc(sizeof(*c));

    if (c == NULL) {
        goto nomem;
    }
    *c = *m;
    c->key.data = NULL;
    c->value.data = NULL;
    c->value.len = 0;
    c->key.data = m->key.len > 0 ? memdup(m->key.data, m->key.len) : NULL;
    if (m->key.len > 0 && c->key.data == NULL) {
        free(c);
        goto nomem;
    }
    if (m->value.len > 0) {
        c->value.data = memdup(m->value.data, m->value.len);
        if (c->value.data == NULL) {
            geogate__wan__v1__mutation__free_unpacked(c, NULL);
            goto nomem;
        }
        c->value.len = m->value.len;
    }
    return gw_ingest_take(in, c, now);

nomem:
    snprintf(in->reason, sizeof(in->reason), "out of memory");
    return -ENOMEM;
}

void gw_ingest_counts(struct gw_ingest *in, struct gw_ingest_counts *counts)
{
    *counts = in->own;
    pthread_mutex_lock(&in->sh->lock);
    counts->applied += in->sh->applied;
    counts->rejected_older += in->sh->rejected;
    pthread_mutex_unlock(&in->sh->lock);
}

int gw_ingest_flush(struct gw_ingest *in, struct gw_ingest_counts *counts)
{
    int rc = cancelled(in) ? -ECANCELED : batch_submit(in);
    bool failed;

    if (rc == 0) {
        rc = raw_flush(in, true);
    }
    if (!wait_inflight(in, 0) && rc == 0) {
        rc = -ECANCELED;
        snprintf(in->reason, sizeof(in->reason), "cancelled");
    }
    pthread_mutex_lock(&in->sh->lock);
    failed = in->sh->failed;
    in->sh->failed = false;
    pthread_mutex_unlock(&in->sh->lock);
    if (failed && rc == 0) {
        rc = -EIO;
        snprintf(in->reason, sizeof(in->reason),
                 "a local memcached node failed to take items (see the gateway's log)");
    }
    if (counts != NULL) {
        gw_ingest_counts(in, counts);
    }
    return rc;
}

const char *gw_ingest_reason(const struct gw_ingest *in)
{
    return in->reason;
}

void gw_ingest_destroy(struct gw_ingest *in)
{
    if (in == NULL) {
        return;
    }
    if (in->batch != NULL) {
        geogate__wan__v1__ship_request__free_unpacked(in->batch, NULL);
    }
    raw_clear(in);
    wait_inflight(in, 0);
    for (uint32_t i = 0; i < in->pool->nnodes; i++) {
        gw_mc_sock_close(&in->nodes[i].sock);
    }
    free(in->nodes);
    shared_put(in->sh);
    free(in);
}
