/*
 * worker — see worker.h.  Messages from other threads arrive as fixed-size records
 * on a pipe (atomic writes below PIPE_BUF), so the loop needs no locks:
 *
 *   main thread ──GW_MSG_CONN fd──────> adopt a client
 *               ──GW_MSG_RELOAD pool──> swap pools, keep connections to nodes that stay
 *               ──GW_MSG_DRAIN────────> finish in-flight requests, close clients, exit
 */
#include "gateway/loop/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "gateway/backend/backend.h"
#include "gateway/frontend/client.h"
#include "gateway/loop/conn.h"
#include "gateway/base/log.h"
#include "gateway/routing/pool.h"
#include "gateway/failover/remote.h"
#include "gateway/replication/repl.h"
#include "gateway/protocol/req.h"
#include "gateway/server.h"

#define GW_TICK_MS 50
#define GW_TRIM_MS 2000
#define GW_CALL_CHECK_MS 100 /* gw_worker_call looks this often whether the worker stopped */

struct gw_call {
    int (*fn)(void *arg);
    void *arg;
    int rc;
    sem_t done;
};

/* The connections a worker needs for pool: the ones in old to a node that stays are
 * reused (taken out of old), the rest are created.  On failure old is untouched and
 * NULL is returned. */
static struct gw_backend **backends_for(struct gw_worker *w, struct gw_pool *pool,
                                        struct gw_backend **old, uint32_t nold)
{
    uint32_t n = pool->nnodes * pool->connections;
    struct gw_backend **bes = calloc(n, sizeof(*bes));
    int32_t *from = calloc(n, sizeof(*from));

    if (bes == NULL || from == NULL) {
        goto fail;
    }
    for (uint32_t i = 0; i < pool->nnodes; i++) {
        for (uint32_t s = 0; s < pool->connections; s++) {
            uint32_t k = i * pool->connections + s;
            from[k] = -1;
            for (uint32_t j = 0; j < nold; j++) {
                if (old[j] != NULL && old[j]->slot == s &&
                    strcmp(old[j]->node->label, pool->nodes[i].label) == 0) {
                    from[k] = (int32_t)j;
                    break;
                }
            }
            if (from[k] < 0) {
                bes[k] = gw_backend_create(w, pool, &pool->nodes[i], s);
                if (bes[k] == NULL) {
                    goto fail;
                }
            }
        }
    }
    for (uint32_t k = 0; k < n; k++) {
        if (from[k] >= 0) {
            bes[k] = old[from[k]];
            old[from[k]] = NULL;
            bes[k]->pool = pool;
            bes[k]->node = &pool->nodes[k / pool->connections];
        }
    }
    free(from);
    return bes;
fail:
    for (uint32_t k = 0; bes != NULL && k < n; k++) {
        if (from != NULL && from[k] < 0 && bes[k] != NULL) {
            gw_backend_destroy(bes[k]);
        }
    }
    free(from);
    free(bes);
    return NULL;
}

static void worker_reload(struct gw_worker *w, struct gw_pool *pool)
{
    struct gw_backend **bes = backends_for(w, pool, w->backends, w->nbackends);

    if (bes == NULL) {
        log_error("worker %d: out of memory applying a reload; keeping the old pool", w->id);
        gw_pool_put(pool);
        return;
    }
    /* Connections to nodes that left the pool finish their requests, then close.
     * They keep a reference to the old pool until then. */
    for (uint32_t j = 0; j < w->nbackends; j++) {
        struct gw_backend *be = w->backends[j];
        if (be == NULL) {
            continue;
        }
        if (be->npending == 0) {
            gw_backend_destroy(be);
        } else {
            be->retiring = true;
            gw_pool_get(be->pool);
            TAILQ_INSERT_TAIL(&w->retired, be, retire_link);
        }
    }
    free(w->backends);
    w->backends = bes;
    w->nbackends = pool->nnodes * pool->connections;
    gw_pool_put(w->pool);
    w->pool = pool;
    log_debug("worker %d: now on pool generation %llu", w->id,
              (unsigned long long)pool->generation);
}

static void worker_drain(struct gw_worker *w)
{
    struct gw_client *c, *next;

    w->draining = true;
    for (c = TAILQ_FIRST(&w->clients); c != NULL; c = next) {
        next = TAILQ_NEXT(c, link);
        gw_client_drain(c);
    }
    if (w->nclients == 0) {
        event_base_loopexit(w->base, NULL);
    }
}

static void notify_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_worker *w = arg;
    struct gw_msg msgs[64];
    ssize_t n;

    (void)what;
    n = read(fd, msgs, sizeof(msgs));
    if (n <= 0) {
        return;
    }
    for (size_t i = 0; i < (size_t)n / sizeof(msgs[0]); i++) {
        switch (msgs[i].type) {
        case GW_MSG_CONN:
            gw_client_accept(w, msgs[i].fd);
            break;
        case GW_MSG_RELOAD:
            worker_reload(w, msgs[i].pool);
            break;
        case GW_MSG_DRAIN:
            worker_drain(w);
            break;
        case GW_MSG_STOP:
            event_base_loopbreak(w->base);
            break;
        case GW_MSG_CALL:
            msgs[i].call->rc = msgs[i].call->fn(msgs[i].call->arg);
            sem_post(&msgs[i].call->done);
            break;
        default:
            break;
        }
    }
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_worker *w = arg;
    int64_t now = gw_now_ms();
    struct gw_backend *be, *next;

    (void)fd;
    (void)what;
    w->now_ms = now;
    for (uint32_t i = 0; i < w->nbackends; i++) {
        gw_backend_tick(w->backends[i], now);
    }
    for (be = TAILQ_FIRST(&w->retired); be != NULL; be = next) {
        next = TAILQ_NEXT(be, retire_link);
        gw_backend_tick(be, now);
        if (be->npending == 0) {
            struct gw_pool *old = be->pool;
            TAILQ_REMOVE(&w->retired, be, retire_link);
            gw_backend_destroy(be);
            gw_pool_put(old);
        }
    }
    gw_remote_tick(w, now);
    gw_client_tick(w, now);
    if (w->id == 0 && now - w->trim_ms >= GW_TRIM_MS) {
        /* Give freed memory back to the system: after a burst of large values, malloc
         * keeps the free pages in its arenas (between live blocks, where its own
         * trimming at the top of the heap does not reach). */
        w->trim_ms = now;
        malloc_trim(0);
    }
    /* The WAN thread watches the local nodes even when no client uses them (failed
     * over, idle), so a node that dies or returns is noticed. */
    if (w->srv->repl != NULL && w->id == w->srv->nworkers) {
        for (uint32_t i = 0; i < w->nbackends; i++) {
            gw_backend_ping(w->backends[i], now, 500);
        }
    }
    gw_repl_worker_tick(w, now);
    /* Whichever worker claims a down node first probes it. */
    for (uint32_t i = 0; i < w->pool->nnodes; i++) {
        if (gw_node_claim_probe(&w->pool->nodes[i], now)) {
            gw_backend_probe(w->backends[i * w->pool->connections]);
        }
    }
    if (w->draining && w->nclients == 0) {
        event_base_loopexit(w->base, NULL);
    }
}

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_worker *w = arg;

    (void)fd;
    (void)what;
    gw_client_reap(w);
    if (w->draining && w->nclients == 0) {
        event_base_loopexit(w->base, NULL);
    }
}

struct gw_backend *gw_worker_backend(struct gw_worker *w, uint32_t node)
{
    uint32_t conns = w->pool->connections;

    if (conns == 1) {
        return w->backends[node];
    }
    return w->backends[node * conns + (w->rr++ % conns)];
}

/* One pass of the loop runs every ready callback; then everything they queued for
 * any socket is written, one writev per socket.  That is where requests from many
 * clients to one node get batched into one write. */
static void *worker_main(void *arg)
{
    struct gw_worker *w = arg;

    while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
        if (event_base_loop(w->base, EVLOOP_ONCE) != 0) {
            break;
        }
        gw_repl_pass_end(w);
        gw_conn_flush_all(w);
        if (event_base_got_exit(w->base) || event_base_got_break(w->base)) {
            break;
        }
    }
    gw_repl_pass_end(w);
    gw_conn_flush_all(w);
    __atomic_store_n(&w->exited, true, __ATOMIC_RELEASE);
    return NULL;
}

int gw_worker_call(struct gw_worker *w, int (*fn)(void *arg), void *arg)
{
    struct gw_call call;
    struct gw_msg msg = {.type = GW_MSG_CALL, .call = &call};
    int rc;

    call.fn = fn;
    call.arg = arg;
    call.rc = -EIO;
    sem_init(&call.done, 0, 0);
    if (gw_worker_send(w, &msg) != 0) {
        sem_destroy(&call.done);
        return -EIO;
    }
    for (;;) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += GW_CALL_CHECK_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        if (sem_timedwait(&call.done, &ts) == 0) {
            break;
        }
        /* A worker that has stopped (a drain) reads no more messages: waiting on would
         * hang the caller, and the shutdown that joins it.  Whatever it ran before it
         * stopped has posted already; the message left in the pipe is never read. */
        if (errno == ETIMEDOUT && __atomic_load_n(&w->exited, __ATOMIC_ACQUIRE) &&
            sem_trywait(&call.done) != 0) {
            sem_destroy(&call.done);
            return -EIO;
        }
    }
    rc = call.rc;
    sem_destroy(&call.done);
    return rc;
}

int gw_worker_start(struct gw_worker *w, struct gw_server *srv, int id, struct gw_pool *pool)
{
    struct timeval tick = {0, GW_TICK_MS * 1000};

    w->id = id;
    w->srv = srv;
    TAILQ_INIT(&w->clients);
    TAILQ_INIT(&w->dead);
    TAILQ_INIT(&w->retired);
    TAILQ_INIT(&w->flushq);
    TAILQ_INIT(&w->sync_wait);
    w->now_ms = gw_now_ms(); /* the tick keeps it; clients may come before the first one */
    {
        struct event_config *ec = event_config_new();
        if (ec != NULL) {
            if (id >= srv->nworkers) {
                /* The WAN thread: its batches wait on millisecond timers (coalescing)
                 * with no other wake-up to cut them short, and epoll's own timeout
                 * rounds up a whole ms.  Client workers wake it (event_active) from
                 * their threads, so its base keeps its lock. */
                event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
            } else {
                /* A client worker's base is touched by its own thread only (others
                 * reach it through notify_fd), so it needs no lock. */
                event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
            }
            w->base = event_base_new_with_config(ec);
            event_config_free(ec);
        }
    }
    if (w->base == NULL) {
        goto fail_base;
    }
    if (pipe2(w->notify_fd, O_CLOEXEC) == -1) {
        goto fail_pipe;
    }
    w->notify_ev = event_new(w->base, w->notify_fd[0], EV_READ | EV_PERSIST, notify_cb, w);
    w->tick_ev = event_new(w->base, -1, EV_PERSIST, tick_cb, w);
    w->reap_ev = event_new(w->base, -1, 0, reap_cb, w);
    if (w->notify_ev == NULL || w->tick_ev == NULL || w->reap_ev == NULL) {
        goto fail_events;
    }
    gw_pool_get(pool);
    w->pool = pool;
    w->backends = backends_for(w, pool, NULL, 0);
    if (w->backends == NULL) {
        goto fail_backends;
    }
    w->nbackends = pool->nnodes * pool->connections;
    event_add(w->notify_ev, NULL);
    event_add(w->tick_ev, &tick);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        goto fail_thread;
    }
    return 0;

fail_thread:
    for (uint32_t i = 0; i < w->nbackends; i++) {
        gw_backend_destroy(w->backends[i]);
    }
    free(w->backends);
fail_backends:
    gw_pool_put(pool);
fail_events:
    if (w->notify_ev) {
        event_free(w->notify_ev);
    }
    if (w->tick_ev) {
        event_free(w->tick_ev);
    }
    if (w->reap_ev) {
        event_free(w->reap_ev);
    }
    close(w->notify_fd[0]);
    close(w->notify_fd[1]);
fail_pipe:
    event_base_free(w->base);
fail_base:
    return -1;
}

int gw_worker_send(struct gw_worker *w, const struct gw_msg *msg)
{
    ssize_t n;

    do {
        n = write(w->notify_fd[1], msg, sizeof(*msg));
    } while (n == -1 && errno == EINTR);
    return n == (ssize_t)sizeof(*msg) ? 0 : -1;
}

void gw_worker_join(struct gw_worker *w)
{
    struct gw_client *c;
    struct gw_backend *be;

    if (!w->joined) {
        pthread_join(w->thread, NULL);
        w->joined = true;
    }
    gw_repl_worker_stop(w);
    /* Anything still open after the drain deadline is closed now. */
    while ((c = TAILQ_FIRST(&w->clients)) != NULL) {
        gw_client_drain(c);
        if (TAILQ_FIRST(&w->clients) == c) {
            /* still busy: force it */
            c->quitting = true;
            TAILQ_REMOVE(&w->clients, c, link);
            TAILQ_INSERT_TAIL(&w->dead, c, link);
            c->closing = true;
        }
    }
    gw_client_reap(w);
    for (uint32_t i = 0; i < w->nbackends; i++) {
        gw_backend_destroy(w->backends[i]);
    }
    while ((be = TAILQ_FIRST(&w->retired)) != NULL) {
        struct gw_pool *old = be->pool;
        TAILQ_REMOVE(&w->retired, be, retire_link);
        gw_backend_destroy(be);
        gw_pool_put(old);
    }
    gw_client_reap(w); /* requests orphaned by the failures above */
    gw_remote_stop(w);
    gw_req_pool_release(w);
    free(w->backends);
    gw_pool_put(w->pool);
    event_free(w->notify_ev);
    event_free(w->tick_ev);
    event_free(w->reap_ev);
    close(w->notify_fd[0]);
    close(w->notify_fd[1]);
    mc_parser_release(&w->parser);
    free(w->scratch);
    free(w->out);
    event_base_free(w->base);
}
