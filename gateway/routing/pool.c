/*
 * pool — see pool.h.  Health is a tiny state machine shared by all workers:
 *
 *    UP --failure_limit consecutive failures--> DOWN --retry_timeout--> PROBING
 *     ^                                                                  |
 *     '----------------- `version` answered ----------------------------'
 *                         (probe failed: back to DOWN for another retry_timeout)
 *
 * Down nodes stay on the ring: their keys do not move to other nodes.
 */
#include "gateway/routing/pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <netdb.h>

#include "gateway/base/log.h"

static const char *const node_state_names[GW_NODE_STATE_MAX] = {
    [GW_NODE_UP] = "up",
    [GW_NODE_DOWN] = "down",
    [GW_NODE_PROBING] = "probing",
};

const char *gw_node_state_name(int state)
{
    return state >= 0 && state < GW_NODE_STATE_MAX ? node_state_names[state] : "?";
}

static int resolve(struct gw_node *node, char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    char port[8];
    int rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof(port), "%u", node->port);
    rc = getaddrinfo(node->host, port, &hints, &res);
    if (rc != 0 || res == NULL) {
        snprintf(err, errlen, "cannot resolve node %s: %s", node->label, gai_strerror(rc));
        return -1;
    }
    memcpy(&node->addr, res->ai_addr, res->ai_addrlen);
    node->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

int gw_pool_create(struct gw_pool **out, const struct gw_config *cfg, uint64_t generation,
                   char *err, size_t errlen)
{
    struct gw_pool *pool;
    struct ring_server *rs;
    uint32_t n = (uint32_t)cfg->pool.nservers;

    pool = calloc(1, sizeof(*pool));
    if (pool == NULL) {
        goto fail_pool;
    }
    pool->nodes = calloc(n, sizeof(*pool->nodes));
    rs = calloc(n, sizeof(*rs));
    if (pool->nodes == NULL || rs == NULL) {
        goto fail_nodes;
    }
    for (uint32_t i = 0; i < n; i++) {
        const struct gw_server_conf *sc = &cfg->pool.servers[i];
        pool->nodes[i].index = i;
        pool->nodes[i].label = strdup(sc->label);
        pool->nodes[i].host = strdup(sc->addr.host);
        pool->nodes[i].port = sc->addr.port;
        if (asprintf(&pool->nodes[i].err_down, "SERVER_ERROR node %s is down", sc->label) < 0) {
            pool->nodes[i].err_down = NULL;
        }
        if (asprintf(&pool->nodes[i].err_io, "SERVER_ERROR node %s did not answer", sc->label) <
            0) {
            pool->nodes[i].err_io = NULL;
        }
        if (pool->nodes[i].label == NULL || pool->nodes[i].host == NULL ||
            pool->nodes[i].err_down == NULL || pool->nodes[i].err_io == NULL) {
            snprintf(err, errlen, "out of memory");
            goto fail_ring;
        }
        if (resolve(&pool->nodes[i], err, errlen) != 0) {
            goto fail_ring;
        }
        rs[i].name = sc->ring_name;
        rs[i].weight = sc->weight;
    }
    pool->nnodes = n;
    pool->hash = cfg->pool.hash;
    if (ring_create(&pool->ring, rs, n, cfg->pool.hash) != 0) {
        snprintf(err, errlen, "cannot build the ketama ring");
        goto fail_ring;
    }
    free(rs);
    pool->refs = 1;
    pool->generation = generation;
    pool->timeout_ms = cfg->pool.timeout_ms;
    pool->connect_timeout_ms = cfg->pool.connect_timeout_ms;
    pool->failure_limit = cfg->pool.failure_limit ? cfg->pool.failure_limit : 1;
    pool->retry_timeout_ms = cfg->pool.retry_timeout_ms;
    pool->connections = cfg->pool.connections ? cfg->pool.connections : 1;
    pool->warmup_max_ms = cfg->failover.warmup_max_time_ms;
    *out = pool;
    return 0;

fail_ring:
    for (uint32_t i = 0; i < n; i++) {
        free(pool->nodes[i].label);
        free(pool->nodes[i].host);
        free(pool->nodes[i].err_down);
        free(pool->nodes[i].err_io);
    }
fail_nodes:
    free(rs);
    free(pool->nodes);
    free(pool);
fail_pool:
    return -1;
}

void gw_pool_get(struct gw_pool *pool)
{
    __atomic_add_fetch(&pool->refs, 1, __ATOMIC_ACQ_REL);
}

void gw_pool_put(struct gw_pool *pool)
{
    if (pool == NULL || __atomic_sub_fetch(&pool->refs, 1, __ATOMIC_ACQ_REL) != 0) {
        return;
    }
    for (uint32_t i = 0; i < pool->nnodes; i++) {
        free(pool->nodes[i].label);
        free(pool->nodes[i].host);
        free(pool->nodes[i].err_down);
        free(pool->nodes[i].err_io);
    }
    ring_destroy(pool->ring);
    free(pool->nodes);
    free(pool);
}

void gw_pool_inherit_health(struct gw_pool *pool, const struct gw_pool *old)
{
    for (uint32_t i = 0; i < pool->nnodes; i++) {
        for (uint32_t j = 0; j < old->nnodes; j++) {
            const struct gw_node *o = &old->nodes[j];
            if (strcmp(o->label, pool->nodes[i].label) == 0) {
                int st = __atomic_load_n(&o->state, __ATOMIC_RELAXED);
                pool->nodes[i].state = st == GW_NODE_PROBING ? GW_NODE_DOWN : st;
                pool->nodes[i].failures = __atomic_load_n(&o->failures, __ATOMIC_RELAXED);
                pool->nodes[i].down_until_ms =
                    __atomic_load_n(&o->down_until_ms, __ATOMIC_RELAXED);
                pool->nodes[i].down_events = __atomic_load_n(&o->down_events, __ATOMIC_RELAXED);
                break;
            }
        }
    }
}

void gw_node_success(struct gw_node *node)
{
    /* Only write when needed so the hot path does not bounce the cache line. */
    if (__atomic_load_n(&node->failures, __ATOMIC_RELAXED) != 0) {
        __atomic_store_n(&node->failures, 0, __ATOMIC_RELAXED);
    }
}

bool gw_node_failure(struct gw_pool *pool, struct gw_node *node, int64_t now_ms)
{
    uint32_t f = __atomic_add_fetch(&node->failures, 1, __ATOMIC_ACQ_REL);
    int expected = GW_NODE_UP;

    if (f < pool->failure_limit) {
        return false;
    }
    __atomic_store_n(&node->down_until_ms, now_ms + pool->retry_timeout_ms, __ATOMIC_RELEASE);
    if (__atomic_compare_exchange_n(&node->state, &expected, GW_NODE_DOWN, false,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        __atomic_add_fetch(&node->down_events, 1, __ATOMIC_RELAXED);
        node->last_change_ms = now_ms;
        log_warn("node %s marked down after %u consecutive failures; retry in %u ms",
                 node->label, f, pool->retry_timeout_ms);
        return true;
    }
    return false;
}

bool gw_node_usable(const struct gw_node *node)
{
    return __atomic_load_n(&node->state, __ATOMIC_ACQUIRE) == GW_NODE_UP;
}

bool gw_node_claim_probe(struct gw_node *node, int64_t now_ms)
{
    int expected = GW_NODE_DOWN;

    if (__atomic_load_n(&node->state, __ATOMIC_ACQUIRE) != GW_NODE_DOWN ||
        now_ms < __atomic_load_n(&node->down_until_ms, __ATOMIC_ACQUIRE)) {
        return false;
    }
    return __atomic_compare_exchange_n(&node->state, &expected, GW_NODE_PROBING, false,
                                       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

void gw_node_probe_done(struct gw_pool *pool, struct gw_node *node, bool ok, int64_t now_ms)
{
    if (ok) {
        /* It comes back empty, as far as we know: warm it (used only when replicating;
         * the failover tick ends it by hit ratio or warmup.max_time). */
        __atomic_store_n(&node->warm_until_ms, now_ms + pool->warmup_max_ms, __ATOMIC_RELEASE);
        __atomic_store_n(&node->failures, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&node->down_until_ms, 0, __ATOMIC_RELAXED);
        node->last_change_ms = now_ms;
        __atomic_store_n(&node->state, GW_NODE_UP, __ATOMIC_RELEASE);
        log_info("node %s is back up", node->label);
    } else {
        __atomic_store_n(&node->down_until_ms, now_ms + pool->retry_timeout_ms,
                         __ATOMIC_RELEASE);
        __atomic_store_n(&node->state, GW_NODE_DOWN, __ATOMIC_RELEASE);
        log_debug("probe of node %s failed; retry in %u ms", node->label,
                  pool->retry_timeout_ms);
    }
}
