/*
 * backend_worker — see backend_worker.h.
 *
 *   start ──> one connection per node and slot of the server's pool
 *   reload ─> same node and slot: kept (now of the new pool); gone: retired, closed
 *             once its requests are answered; new: created
 *   tick ───> timeouts, retired ones closed, WAN-thread keep-alive, probes
 *   stop ───> close all, then free the table and the pool reference
 */
#include "gateway/backend/backend_worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/backend/backend.h"
#include "gateway/base/log.h"
#include "gateway/routing/pool.h"
#include "gateway/server.h"

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

int gw_backend_worker_start(struct gw_worker *w)
{
    struct gw_pool *pool = w->srv->pool;

    gw_pool_get(pool);
    w->pool = pool;
    w->backends = backends_for(w, pool, NULL, 0);
    if (w->backends == NULL) {
        gw_pool_put(pool);
        return -ENOMEM;
    }
    w->nbackends = pool->nnodes * pool->connections;
    return 0;
}

void gw_backend_worker_reload(struct gw_worker *w, struct gw_pool *pool)
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

struct gw_backend *gw_backend_oneshot(struct gw_worker *w, uint32_t node)
{
    struct gw_backend *be;

    be = gw_backend_create(w, w->pool, &w->pool->nodes[node], UINT32_MAX);
    if (be == NULL) {
        return NULL;
    }
    /* The retired list is where connections that finish their requests and close live:
     * its tick watches their timeouts and frees them, a reload leaves them alone. */
    be->retiring = true;
    gw_pool_get(be->pool);
    TAILQ_INSERT_TAIL(&w->retired, be, retire_link);
    return be;
}

void gw_backend_worker_tick(struct gw_worker *w, int64_t now)
{
    struct gw_backend *be, *next;

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
}

void gw_backend_worker_ping(struct gw_worker *w, int64_t now)
{
    /* The WAN thread watches the local nodes even when no client uses them (failed
     * over, idle), so a node that dies or returns is noticed. */
    if (w->srv->repl != NULL && w->id == w->srv->nworkers) {
        for (uint32_t i = 0; i < w->nbackends; i++) {
            gw_backend_ping(w->backends[i], now, 500);
        }
    }
}

void gw_backend_worker_probe(struct gw_worker *w, int64_t now)
{
    /* Whichever worker claims a down node first probes it. */
    for (uint32_t i = 0; i < w->pool->nnodes; i++) {
        if (gw_node_claim_probe(&w->pool->nodes[i], now)) {
            gw_backend_probe(w->backends[i * w->pool->connections]);
        }
    }
}

void gw_backend_worker_close(struct gw_worker *w)
{
    struct gw_backend *be;

    /* Each entry goes as its connection does: the stop hooks after this one (a reap of
     * the clients its failures closed) look through the table. */
    for (uint32_t i = 0; i < w->nbackends; i++) {
        gw_backend_destroy(w->backends[i]);
        w->backends[i] = NULL;
    }
    while ((be = TAILQ_FIRST(&w->retired)) != NULL) {
        struct gw_pool *old = be->pool;
        TAILQ_REMOVE(&w->retired, be, retire_link);
        gw_backend_destroy(be);
        gw_pool_put(old);
    }
}

void gw_backend_worker_release(struct gw_worker *w)
{
    gw_backend_worker_close(w);
    free(w->backends);
    w->backends = NULL;
    w->nbackends = 0;
    gw_pool_put(w->pool); /* w->pool itself stays: the server's reference outlives it */
}
