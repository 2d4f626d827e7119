/*
 * pool — the site's memcached nodes as every worker thread shares them: the ketama
 * ring and each node's health (consecutive failures, down until when, probing).
 * Built by the main thread from a config, read by workers, refcounted so a reload
 * can swap in a new pool while old requests finish on the old one.  Health fields
 * are atomics: any worker may report a failure or a recovery.  No sockets here;
 * each worker owns its own connections (backend.c).
 */
#ifndef GEOGATE_POOL_H
#define GEOGATE_POOL_H

#include <stdbool.h>
#include <sys/socket.h>
#include <stdint.h>

#include "gateway/base/config.h"
#include "ring/ring.h"

enum gw_node_state {
    GW_NODE_UP = 0,  /* serving */
    GW_NODE_DOWN,    /* failure_limit consecutive failures: answered with errors */
    GW_NODE_PROBING, /* retry_timeout passed: one worker checks it with `version` */
    GW_NODE_STATE_MAX
};

struct gw_node {
    uint32_t index;
    char *label; /* host:port */
    char *host;
    uint16_t port;
    struct sockaddr_storage addr; /* resolved when the pool is built */
    socklen_t addrlen;
    char *err_down; /* "SERVER_ERROR node host:port is down" */
    char *err_io;   /* "SERVER_ERROR node host:port did not answer" */
    /* health, shared by all workers */
    int state;            /* enum gw_node_state, atomic */
    uint32_t failures;    /* consecutive, atomic */
    int64_t down_until_ms; /* atomic */
    uint64_t down_events; /* times marked down, atomic */
    int64_t last_change_ms;
    /* After coming back from down, the node is cold: until warm_until_ms (atomic) a
     * replicating gateway reads its keys through warm-up (local miss -> peer, filled). */
    int64_t warm_until_ms;
    uint64_t warm_hits, warm_misses; /* atomic, per-key lookups while warming */
    uint64_t warm_peer_hits;         /* atomic: local misses the peer had */
    uint64_t win_hits, win_misses, win_peer_hits; /* the failover tick's last window */
    int64_t win_start_ms;
};

struct gw_pool {
    int refs; /* atomic */
    uint64_t generation;
    struct ring *ring;
    enum ring_hash hash;
    struct gw_node *nodes;
    uint32_t nnodes;
    uint32_t timeout_ms;
    uint32_t connect_timeout_ms;
    uint32_t failure_limit;
    uint32_t retry_timeout_ms;
    uint32_t connections;
    uint32_t warmup_max_ms; /* failover.warmup.max_time */
};

/* Build a pool from cfg (resolves every node's address).  Returns 0 and *out with one
 * reference, or -1 with a reason in err. */
int gw_pool_create(struct gw_pool **out, const struct gw_config *cfg, uint64_t generation,
                   char *err, size_t errlen);
void gw_pool_get(struct gw_pool *pool);
void gw_pool_put(struct gw_pool *pool);

/* Copy health of nodes with the same label from old into pool (reload). */
void gw_pool_inherit_health(struct gw_pool *pool, const struct gw_pool *old);

static inline uint32_t gw_pool_route(const struct gw_pool *pool, const char *key, uint32_t nkey)
{
    return ring_lookup(pool->ring, key, nkey);
}

/* Health transitions; now_ms is a monotonic millisecond clock. */
void gw_node_success(struct gw_node *node);
/* Returns true when this failure marked the node down. */
bool gw_node_failure(struct gw_pool *pool, struct gw_node *node, int64_t now_ms);
/* May a request be sent to node now?  DOWN and PROBING nodes refuse. */
bool gw_node_usable(const struct gw_node *node);
/* True when the caller won the right to probe this down node now. */
bool gw_node_claim_probe(struct gw_node *node, int64_t now_ms);
void gw_node_probe_done(struct gw_pool *pool, struct gw_node *node, bool ok, int64_t now_ms);

const char *gw_node_state_name(int state);

#endif
