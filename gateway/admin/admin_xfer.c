/*
 * admin_xfer — see admin_xfer.h.
 *
 *   GET /snapshot
 *     producer thread                          main thread (evhttp)
 *     gw_snapshot_run ──write()──> queue ──wake──> pump: up to 256 KiB of the queue as one
 *       (waits while the queue       (lock)        chunk ──written──> wake ──> next chunk
 *        holds 4 MiB or more)   <──signal──         (one chunk on the wire at a time)
 *     done ──wake──> pump: queue empty: join, end the reply (or close it on an error)
 *     client gone (closecb) ──> cancel: the producer stops at its next write or batch
 *
 *   POST /restore
 *     main: body moved (not copied) to the job ──> restore thread: gw_restore_run
 *       ──wake──> main: join, JSON reply
 *
 * Threads touch a job only under its lock (queue, done, rc, err) or through atomics
 * (cancel); the wake event is created and freed on the main thread, and a thread
 * activates it only while the main thread has not orphaned the job (gw_admin_xfer_destroy
 * giving up on a stuck thread).
 */
#include "gateway/admin/admin_xfer.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h> /* before event2/keyvalq_struct.h, which defines TAILQ_* without it */
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "gateway/base/clock.h"
#include "gateway/base/config.h"
#include "gateway/base/json.h"
#include "gateway/base/log.h"
#include "gateway/routing/pool.h"
#include "gateway/transfer/restore.h"
#include "gateway/server.h"
#include "gateway/transfer/snapshot.h"

#define XFER_QUEUE_HIGH (4u << 20) /* the producer waits above this */
#define XFER_QUEUE_LOW (1u << 20)  /* and is woken below this */
#define XFER_CHUNK (256u << 10)    /* bytes per HTTP chunk */
#define XFER_JOIN_WAIT_MS 3000     /* how long destroy waits for a thread */
#define XFER_RESTORE_NICE 10       /* the restore thread's nice value (see restore_lower_priority) */

enum xfer_kind { XFER_SNAPSHOT = 0, XFER_RESTORE, XFER_KIND_MAX };

static const char *const xfer_kind_names[XFER_KIND_MAX] = {
    [XFER_SNAPSHOT] = "snapshot",
    [XFER_RESTORE] = "restore",
};

/* One transfer.  Owned by the main thread; its thread holds a reference until it ends. */
struct xfer_job {
    enum xfer_kind kind;
    struct gw_admin_xfer *x;
    struct gw_server *srv;
    struct evhttp_request *req; /* main: NULL once the client is gone */
    bool req_orphaned;          /* main: evhttp gave req up to us (connection failed) */
    struct event *wake;         /* main thread's; activated by the thread */
    pthread_t thread;
    bool thread_started;
    struct gw_pool *pool; /* a reference for the whole transfer */
    atomic_bool cancel;
    int64_t started_ms;

    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t room;  /* snapshot: the queue went under XFER_QUEUE_LOW */
    int refs;             /* main + thread */
    bool orphaned;        /* main gave up on the thread: do not touch wake */
    bool done;            /* the thread finished its work */
    int rc;
    char err[256];
    struct evbuffer *queue; /* snapshot: produced, not yet handed to evhttp */
    struct gw_snapshot_stats sstats;

    /* snapshot, main thread only */
    bool reply_started;
    bool writing; /* a chunk is on its way; the next waits for its callback */
    uint64_t sent;

    /* restore */
    struct evbuffer *body; /* the thread's once started */
    struct gw_restore_result res;
};

struct gw_admin_xfer {
    struct gw_server *srv;
    struct xfer_job *job[XFER_KIND_MAX]; /* the running one of each kind */
};

/* Drop one reference (any thread); the last frees the job's memory.  The main thread's
 * resources (event, request, pool) are released before the main reference is dropped. */
static void job_put(struct xfer_job *j)
{
    bool last;

    pthread_mutex_lock(&j->lock);
    last = --j->refs == 0;
    pthread_mutex_unlock(&j->lock);
    if (!last) {
        return;
    }
    if (j->queue != NULL) {
        evbuffer_free(j->queue);
    }
    if (j->body != NULL) {
        evbuffer_free(j->body);
    }
    gw_pool_put(j->pool); /* here, not on the main thread: an orphaned thread still uses it */
    pthread_cond_destroy(&j->room);
    pthread_mutex_destroy(&j->lock);
    free(j);
}

/* Thread side: wake the main thread unless it has given up on us. */
static void job_wake(struct xfer_job *j)
{
    pthread_mutex_lock(&j->lock);
    if (!j->orphaned) {
        event_active(j->wake, EV_READ, 0);
    }
    pthread_mutex_unlock(&j->lock);
}

static void xfer_closecb(struct evhttp_connection *evcon, void *arg);

/* Main thread: take the request back from the job before its final reply, so no close
 * callback can reach the job any more.  Returns NULL when the client has gone. */
static struct evhttp_request *job_take_req(struct xfer_job *j)
{
    struct evhttp_request *req = j->req;

    if (req == NULL || j->req_orphaned) {
        return NULL;
    }
    evhttp_connection_set_closecb(evhttp_request_get_connection(req), NULL, NULL);
    j->req = NULL;
    return req;
}

/* Main thread: the transfer is over; release what the main thread holds. */
static void job_finish(struct xfer_job *j)
{
    if (j->thread_started) {
        pthread_join(j->thread, NULL);
        j->thread_started = false;
    }
    if (j->req != NULL && !j->req_orphaned) {
        struct evhttp_connection *evcon = evhttp_request_get_connection(j->req);
        if (evcon != NULL) {
            evhttp_connection_set_closecb(evcon, NULL, NULL);
        }
    }
    if (j->req != NULL && j->req_orphaned) {
        evhttp_request_free(j->req); /* evhttp left it to us when the connection failed */
    }
    j->req = NULL;
    if (j->x->job[j->kind] == j) {
        j->x->job[j->kind] = NULL;
    }
    event_free(j->wake);
    j->wake = NULL;
    job_put(j);
}

static void xfer_wake_cb(evutil_socket_t fd, short what, void *arg);

static struct xfer_job *job_new(struct gw_admin_xfer *x, enum xfer_kind kind,
                                struct evhttp_request *req)
{
    struct xfer_job *j = calloc(1, sizeof(*j));

    if (j == NULL) {
        return NULL;
    }
    j->kind = kind;
    j->x = x;
    j->srv = x->srv;
    j->req = req;
    j->refs = 1;
    j->started_ms = gw_mono_ms();
    atomic_init(&j->cancel, false);
    pthread_mutex_init(&j->lock, NULL);
    pthread_cond_init(&j->room, NULL);
    j->wake = event_new(x->srv->base, -1, 0, xfer_wake_cb, j);
    if (j->wake == NULL) {
        pthread_cond_destroy(&j->room);
        pthread_mutex_destroy(&j->lock);
        free(j);
        return NULL;
    }
    j->pool = x->srv->pool;
    gw_pool_get(j->pool);
    return j;
}

/* The client went away (evhttp is freeing the connection; inside its callbacks). */
static void xfer_closecb(struct evhttp_connection *evcon, void *arg)
{
    struct xfer_job *j = arg;

    (void)evcon;
    if (j->req != NULL && evhttp_request_get_connection(j->req) == NULL) {
        j->req_orphaned = true; /* detached from the connection: ours to free */
    } else {
        j->req = NULL; /* evhttp frees it with the connection */
    }
    if (j->kind == XFER_SNAPSHOT) {
        /* Nobody to stream to.  A restore goes on: the file is all here already. */
        atomic_store(&j->cancel, true);
        pthread_mutex_lock(&j->lock);
        pthread_cond_broadcast(&j->room);
        pthread_mutex_unlock(&j->lock);
    }
    event_active(j->wake, EV_READ, 0); /* finish outside evhttp's callback chain */
}

static void xfer_reply(struct evhttp_request *req, int code, const char *ctype,
                       struct evbuffer *body)
{
    static const struct {
        int code;
        const char *phrase;
    } phrases[] = {{200, "OK"},
                   {400, "Bad Request"},
                   {409, "Conflict"},
                   {413, "Payload Too Large"},
                   {422, "Unprocessable Entity"},
                   {500, "Internal Server Error"},
                   {503, "Service Unavailable"}};
    const char *phrase = "Error";
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);

    for (size_t i = 0; i < sizeof(phrases) / sizeof(phrases[0]); i++) {
        if (phrases[i].code == code) {
            phrase = phrases[i].phrase;
        }
    }
    evhttp_add_header(h, "Content-Type", ctype);
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_send_reply(req, code, phrase, body);
}

static void xfer_text(struct evhttp_request *req, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void xfer_text(struct evhttp_request *req, int code, const char *fmt, ...)
{
    struct evbuffer *b = evbuffer_new();
    va_list ap;

    if (b == NULL) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    va_start(ap, fmt);
    evbuffer_add_vprintf(b, fmt, ap);
    va_end(ap);
    evbuffer_add(b, "\n", 1);
    xfer_reply(req, code, "text/plain; charset=utf-8", b);
    evbuffer_free(b);
}

/* ---- GET /snapshot ---- */

/* Producer thread: hand a piece to the main thread, waiting while the queue is full. */
static int snapshot_write(void *arg, const void *data, size_t len)
{
    struct xfer_job *j = arg;

    pthread_mutex_lock(&j->lock);
    while (evbuffer_get_length(j->queue) >= XFER_QUEUE_HIGH && !atomic_load(&j->cancel)) {
        pthread_cond_wait(&j->room, &j->lock);
    }
    if (atomic_load(&j->cancel)) {
        pthread_mutex_unlock(&j->lock);
        return -ECANCELED;
    }
    if (evbuffer_add(j->queue, data, len) != 0) {
        pthread_mutex_unlock(&j->lock);
        return -ENOMEM;
    }
    if (!j->orphaned) {
        event_active(j->wake, EV_READ, 0);
    }
    pthread_mutex_unlock(&j->lock);
    return 0;
}

static void *snapshot_thread(void *arg)
{
    struct xfer_job *j = arg;
    const struct gw_config *cfg = j->srv->cfg;
    struct gw_snapshot_source src = {
        .pool = j->pool,
        .site = cfg->site,
        .site_id = j->srv->site_id,
        .gateway_id = (uint16_t)cfg->gateway_id,
    };
    struct gw_snapshot_stats st;
    char err[256];
    int rc = gw_snapshot_run(&src, snapshot_write, j, &j->cancel, &st, err, sizeof(err));

    pthread_mutex_lock(&j->lock);
    j->done = true;
    j->rc = rc;
    j->sstats = st;
    snprintf(j->err, sizeof(j->err), "%s", err);
    pthread_mutex_unlock(&j->lock);
    job_wake(j);
    job_put(j);
    return NULL;
}

static void snapshot_written(struct evhttp_connection *evcon, void *arg)
{
    struct xfer_job *j = arg;

    (void)evcon;
    j->writing = false;
    event_active(j->wake, EV_READ, 0); /* the next chunk, outside evhttp's callbacks */
}

static void snapshot_log_end(struct xfer_job *j, const char *how)
{
    const struct gw_snapshot_stats *st = &j->sstats;
    double secs = (double)(gw_mono_ms() - j->started_ms) / 1000.0;

    log_info("snapshot %s: %" PRIu64 " records (%" PRIu64 " tombstones, %" PRIu64
             " version 0), %" PRIu64 " bytes in %.2f s (%.0f items/s); of %" PRIu64
             " keys listed, %" PRIu64 " expired, %" PRIu64 " gone before read, %" PRIu64
             " unreadable",
             how, st->records, st->tombstones, st->records - st->versioned, st->bytes, secs,
             secs > 0 ? (double)st->records / secs : 0.0, st->listed, st->skipped_expired,
             st->vanished, st->unreadable);
}

/* Main thread: move what the producer made to the client, or end the reply. */
static void snapshot_pump(struct xfer_job *j)
{
    struct evhttp_request *req;
    struct evbuffer *chunk;
    bool done;
    int rc;

    if (j->req == NULL || j->req_orphaned) {
        /* Client gone: wait for the producer to notice, then clean up. */
        pthread_mutex_lock(&j->lock);
        done = j->done;
        pthread_mutex_unlock(&j->lock);
        if (done) {
            log_warn("snapshot: the client went away after %" PRIu64 " bytes; stopped", j->sent);
            job_finish(j);
        }
        return;
    }
    if (j->writing) {
        return;
    }
    chunk = evbuffer_new();
    if (chunk == NULL) {
        return; /* the next wake-up retries */
    }
    pthread_mutex_lock(&j->lock);
    evbuffer_remove_buffer(j->queue, chunk, XFER_CHUNK);
    if (evbuffer_get_length(j->queue) < XFER_QUEUE_LOW) {
        pthread_cond_broadcast(&j->room);
    }
    done = j->done && evbuffer_get_length(j->queue) == 0 && evbuffer_get_length(chunk) == 0;
    rc = j->rc;
    pthread_mutex_unlock(&j->lock);

    if (evbuffer_get_length(chunk) > 0) {
        if (!j->reply_started) {
            struct evkeyvalq *h = evhttp_request_get_output_headers(j->req);
            evhttp_add_header(h, "Content-Type", "application/octet-stream");
            evhttp_add_header(h, "Cache-Control", "no-store");
            evhttp_add_header(h, "Content-Disposition", "attachment; filename=\"geogate.snap\"");
            evhttp_send_reply_start(j->req, 200, "OK");
            j->reply_started = true;
        }
        j->sent += evbuffer_get_length(chunk);
        j->writing = true;
        evhttp_send_reply_chunk_with_cb(j->req, chunk, snapshot_written, j);
        evbuffer_free(chunk);
        return;
    }
    evbuffer_free(chunk);
    if (!done) {
        return;
    }
    req = job_take_req(j);
    if (rc == 0) {
        snapshot_log_end(j, "done");
        evhttp_send_reply_end(req);
    } else if (!j->reply_started) {
        log_warn("snapshot refused: %s", j->err);
        xfer_text(req, rc == -EBUSY ? 409 : 503, "snapshot failed: %s", j->err);
    } else {
        /* 200 is out: closing without the end record is how the reader learns. */
        log_error("snapshot failed after %" PRIu64 " bytes: %s; closing the connection", j->sent,
                  j->err);
        snapshot_log_end(j, "aborted");
        evhttp_connection_free(evhttp_request_get_connection(req));
    }
    job_finish(j);
}

void gw_admin_xfer_snapshot(struct gw_admin_xfer *x, struct evhttp_request *req)
{
    struct xfer_job *j;

    if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
        xfer_reply(req, 200, "application/octet-stream", NULL);
        return;
    }
    if (x->job[XFER_SNAPSHOT] != NULL) {
        xfer_text(req, 409, "a snapshot is already being taken; try again when it is done");
        return;
    }
    j = job_new(x, XFER_SNAPSHOT, req);
    if (j == NULL || (j->queue = evbuffer_new()) == NULL) {
        if (j != NULL) {
            j->req = NULL;
            job_finish(j);
        }
        xfer_text(req, 500, "out of memory");
        return;
    }
    j->refs++; /* the producer's */
    if (pthread_create(&j->thread, NULL, snapshot_thread, j) != 0) {
        j->refs--;
        j->req = NULL;
        job_finish(j);
        xfer_text(req, 500, "cannot start the snapshot thread");
        return;
    }
    j->thread_started = true;
    x->job[XFER_SNAPSHOT] = j;
    evhttp_connection_set_closecb(evhttp_request_get_connection(req), xfer_closecb, j);
    log_info("snapshot started (%u nodes)", j->pool->nnodes);
}

/* ---- POST /restore ---- */

/* A restore applies as fast as a core and memcached let it, which on a busy machine is CPU
 * the client workers need.  On a single-site gateway every item goes to memcached over the
 * restore's own connections, so its thread is SCHED_IDLE: it takes idle cores whole and a
 * client worker that wakes takes its core at once (under a sustained full load it waits for
 * room).  On a replicating site versioned items are applied by the workers, which wait on a
 * lock this thread takes, so it runs at nice 10 instead: lower priority, but never so low that
 * a worker waits on a lock held by a thread that cannot run.  Linux applies both to the one
 * thread they are set on. */
static void restore_lower_priority(const struct gw_server *srv)
{
    if (!gw_server_replicates(srv)) {
        struct sched_param sp = {.sched_priority = 0};
        int rc = pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
        if (rc == 0) {
            return;
        }
        log_debug("restore: cannot make the thread SCHED_IDLE: %s", strerror(rc));
    }
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), XFER_RESTORE_NICE) == -1) {
        log_debug("restore: cannot lower the thread's priority: %s", strerror(errno));
    }
}

static void *restore_thread(void *arg)
{
    struct xfer_job *j = arg;
    struct evbuffer *body = j->body;
    struct gw_restore_result res;
    int rc;

    pthread_setname_np(pthread_self(), "restore"); /* for top -H, and the tests */
    restore_lower_priority(j->srv);
    j->body = NULL; /* gw_restore_run owns it now */
    rc = gw_restore_run(j->srv, j->pool, body, &j->cancel, &res);
    pthread_mutex_lock(&j->lock);
    j->done = true;
    j->rc = rc;
    j->res = res;
    pthread_mutex_unlock(&j->lock);
    job_wake(j);
    job_put(j);
    return NULL;
}

static void restore_json(const struct gw_restore_result *res, double secs, struct evbuffer *b)
{
    evbuffer_add_printf(b, "{\"status\": ");
    gw_json_str(b, gw_restore_status_name(res->status));
    evbuffer_add_printf(b,
                        ", \"records\": %" PRIu64 ", \"applied\": %" PRIu64
                        ", \"skipped_expired\": %" PRIu64 ", \"rejected_older\": %" PRIu64
                        ", \"skipped_tombstones\": %" PRIu64 ", \"paced_rounds\": %" PRIu64
                        ", \"bytes\": %" PRIu64 ", \"seconds\": %.3f, \"items_per_s\": %.0f",
                        res->records, res->applied, res->skipped_expired, res->rejected_older,
                        res->skipped_tombstones, res->paced_rounds, res->bytes, secs,
                        secs > 0 ? (double)res->records / secs : 0.0);
    if (res->header.format != 0) {
        evbuffer_add_printf(b, ", \"format_version\": %u", res->header.format);
    }
    if (res->header.site[0] != '\0') {
        evbuffer_add_printf(b, ", \"site\": ");
        gw_json_str(b, res->header.site);
        evbuffer_add_printf(b, ", \"created\": %" PRIu64, res->header.created);
    }
    if (res->status != GW_RESTORE_OK) {
        if (res->status <= GW_RESTORE_BAD_RECORD) {
            evbuffer_add_printf(b, ", \"bad_offset\": %" PRIu64, res->bad_offset);
        }
        evbuffer_add_printf(b, ", \"reason\": ");
        gw_json_str(b, res->reason);
    }
    evbuffer_add_printf(b, "}\n");
}

static void restore_done(struct xfer_job *j)
{
    static const int codes[GW_RESTORE_STATUS_MAX] = {
        [GW_RESTORE_OK] = 200,          [GW_RESTORE_BAD_HEADER] = 400,
        [GW_RESTORE_BAD_VERSION] = 400, [GW_RESTORE_BAD_RECORD] = 422,
        [GW_RESTORE_FAILED] = 503,      [GW_RESTORE_CANCELLED] = 503,
    };
    const struct gw_restore_result *res = &j->res;
    double secs = (double)(gw_mono_ms() - j->started_ms) / 1000.0;
    struct evhttp_request *req;
    struct evbuffer *b;
    bool done;

    pthread_mutex_lock(&j->lock);
    done = j->done;
    pthread_mutex_unlock(&j->lock);
    if (!done) {
        return; /* a close callback's wake-up: the restore goes on regardless */
    }
    if (res->status == GW_RESTORE_OK) {
        log_info("restore of %s's snapshot (%" PRIu64 " bytes): %" PRIu64 " records, %" PRIu64
                 " applied, %" PRIu64 " expired, %" PRIu64 " older than held, in %.2f s "
                 "(%.0f items/s)",
                 res->header.site, res->bytes, res->records, res->applied, res->skipped_expired,
                 res->rejected_older, secs, secs > 0 ? (double)res->records / secs : 0.0);
    } else {
        log_warn("restore stopped (%s) at offset %" PRIu64 ": %s; %" PRIu64
                 " records read, %" PRIu64 " applied",
                 gw_restore_status_name(res->status), res->bad_offset, res->reason, res->records,
                 res->applied);
    }
    req = job_take_req(j);
    if (req != NULL) {
        b = evbuffer_new();
        if (b == NULL) {
            evhttp_send_error(req, 500, "out of memory");
        } else {
            restore_json(res, secs, b);
            xfer_reply(req, codes[res->status], "application/json", b);
            evbuffer_free(b);
        }
    }
    job_finish(j);
}

void gw_admin_xfer_restore(struct gw_admin_xfer *x, struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    struct xfer_job *j;
    size_t bytes;

    if (x->job[XFER_RESTORE] != NULL) {
        xfer_text(req, 409, "a restore is already running; try again when it is done");
        return;
    }
    if (evbuffer_get_length(in) == 0) {
        xfer_text(req, 400, "POST /restore takes the snapshot file as its body (none sent)");
        return;
    }
    j = job_new(x, XFER_RESTORE, req);
    if (j == NULL || (j->body = evbuffer_new()) == NULL) {
        if (j != NULL) {
            j->req = NULL;
            job_finish(j);
        }
        xfer_text(req, 500, "out of memory");
        return;
    }
    bytes = evbuffer_get_length(in);
    evbuffer_add_buffer(j->body, in); /* moves the chain, no copy */
    j->refs++;
    if (pthread_create(&j->thread, NULL, restore_thread, j) != 0) {
        j->refs--;
        j->req = NULL;
        job_finish(j);
        xfer_text(req, 500, "cannot start the restore thread");
        return;
    }
    j->thread_started = true;
    x->job[XFER_RESTORE] = j;
    evhttp_connection_set_closecb(evhttp_request_get_connection(req), xfer_closecb, j);
    log_info("restore started: %zu bytes", bytes);
}

static void xfer_wake_cb(evutil_socket_t fd, short what, void *arg)
{
    struct xfer_job *j = arg;

    (void)fd;
    (void)what;
    if (j->kind == XFER_SNAPSHOT) {
        snapshot_pump(j);
    } else {
        restore_done(j);
    }
}

/* ---- set-up and tear-down ---- */

int gw_admin_xfer_create(struct gw_server *srv, struct gw_admin_xfer **out)
{
    struct gw_admin_xfer *x = calloc(1, sizeof(*x));

    if (x == NULL) {
        return -ENOMEM;
    }
    x->srv = srv;
    *out = x;
    return 0;
}

/* Wait up to XFER_JOIN_WAIT_MS for j's thread.  True when it was joined. */
static bool job_join_bounded(struct xfer_job *j)
{
    int64_t deadline = gw_mono_ms() + XFER_JOIN_WAIT_MS;

    while (gw_mono_ms() < deadline) {
        if (pthread_tryjoin_np(j->thread, NULL) == 0) {
            j->thread_started = false;
            return true;
        }
        pthread_mutex_lock(&j->lock);
        pthread_cond_broadcast(&j->room);
        pthread_mutex_unlock(&j->lock);
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return false;
}

void gw_admin_xfer_destroy(struct gw_admin_xfer *x)
{
    if (x == NULL) {
        return;
    }
    for (int k = 0; k < XFER_KIND_MAX; k++) {
        struct xfer_job *j = x->job[k];
        if (j == NULL) {
            continue;
        }
        atomic_store(&j->cancel, true);
        if (j->thread_started && !job_join_bounded(j)) {
            log_warn("%s thread did not stop in %d ms; left to the process exit",
                     xfer_kind_names[k], XFER_JOIN_WAIT_MS);
            pthread_mutex_lock(&j->lock);
            j->orphaned = true;
            pthread_mutex_unlock(&j->lock);
            pthread_detach(j->thread);
            j->thread_started = false;
        } else {
            log_warn("%s stopped: the gateway is stopping", xfer_kind_names[k]);
        }
        /* The request stays with its connection: evhttp_free closes and frees both. */
        if (j->req_orphaned) {
            evhttp_request_free(j->req);
        } else if (j->req != NULL) {
            evhttp_connection_set_closecb(evhttp_request_get_connection(j->req), NULL, NULL);
        }
        j->req = NULL;
        j->req_orphaned = false;
        job_finish(j);
    }
    free(x);
}
