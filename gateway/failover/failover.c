/*
 * failover — see failover.h.  The I/O around the pure machine of fo_state.c: it gathers
 * the inputs, runs a step under one mutex, then logs, publishes the outcome for the
 * routing step as one atomic word and resets the warm-up counters when told to.  Warm-up
 * counters are bumped by workers with relaxed atomics (remote.c).
 */
#include "gateway/failover/failover.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway/base/clock.h"
#include "gateway/base/config.h"
#include "gateway/base/log.h"
#include "gateway/routing/pool.h"
#include "gateway/replication/repl.h"
#include "gateway/server.h"

#define FO_MAX_PEERS 16

static pthread_mutex_t fo_lock = PTHREAD_MUTEX_INITIALIZER;

/* The WAN thread reads its own worker's pool (the main thread's may be swapped by a
 * reload meanwhile); other callers run on the main thread. */
static struct gw_pool *fo_pool(struct gw_server *srv)
{
    if (srv->nthreads > srv->nworkers &&
        pthread_equal(pthread_self(), srv->workers[srv->nworkers].thread)) {
        return srv->workers[srv->nworkers].pool;
    }
    return srv->pool;
}

static void local_health(struct gw_server *srv, uint32_t *nodes, uint32_t *up)
{
    struct gw_pool *pool = fo_pool(srv);

    *nodes = pool->nnodes;
    *up = 0;
    for (uint32_t i = 0; i < pool->nnodes; i++) {
        *up += gw_node_usable(&pool->nodes[i]);
    }
}

static struct gw_fo_config fo_config(const struct gw_config *cfg)
{
    struct gw_fo_config c = {
        .local_healthy_fraction = cfg->failover.local_healthy_fraction,
        .hold_down_ms = (int64_t)cfg->failover.hold_down_ms,
        .warmup_max_time_ms = (int64_t)cfg->failover.warmup_max_time_ms,
        .warmup_hit_ratio = cfg->failover.warmup_hit_ratio,
    };
    return c;
}

/* Everything a step looks at, measured now; peers has room for FO_MAX_PEERS. */
static void fo_inputs(struct gw_server *srv, struct gw_fo_inputs *in, struct gw_fo_peer *peers)
{
    struct gw_peer_status ps[FO_MAX_PEERS];
    struct gw_failover_state *fo = &srv->fo;
    size_t n = gw_failover_peers(srv, ps, FO_MAX_PEERS);

    memset(in, 0, sizeof(*in));
    in->now_ms = gw_mono_ms();
    local_health(srv, &in->nodes, &in->nodes_up);
    for (size_t i = 0; i < n; i++) {
        peers[i].link_up = ps[i].link_up;
        peers[i].serving = ps[i].serving;
        peers[i].priority = ps[i].priority;
        peers[i].rtt_ms = ps[i].rtt_ms;
    }
    in->peers = peers;
    in->npeers = n;
    in->warm_hits = __atomic_load_n(&fo->warm_hits, __ATOMIC_RELAXED);
    in->warm_misses = __atomic_load_n(&fo->warm_misses, __ATOMIC_RELAXED);
    in->warm_peer_hits = __atomic_load_n(&fo->warm_peer_hits, __ATOMIC_RELAXED);
}

/* The word the routing step reads: mode, and the peers + 1 (0: none). */
static uint64_t view_pack(const struct gw_fo_state *st)
{
    return (uint64_t)(st->mode & 0xff) | (uint64_t)(uint16_t)(st->peer + 1) << 8 |
           (uint64_t)(uint16_t)(st->best_peer + 1) << 24;
}

struct gw_failover_view gw_failover_view(const struct gw_server *srv)
{
    uint64_t v = __atomic_load_n(&srv->fo.route, __ATOMIC_ACQUIRE);
    struct gw_failover_view out = {
        .mode = (enum gw_site_mode)(v & 0xff),
        .peer = (int)((v >> 8) & 0xffff) - 1,
        .best_peer = (int)((v >> 24) & 0xffff) - 1,
    };
    return out;
}

void gw_failover_init(struct gw_server *srv)
{
    gw_fo_state_init(&srv->fo.sm);
    __atomic_store_n(&srv->fo.route, view_pack(&srv->fo.sm), __ATOMIC_RELEASE);
}

/* Carry out a step's result; under fo_lock. */
static void fo_apply(struct gw_server *srv, const struct gw_fo_result *res)
{
    struct gw_failover_state *fo = &srv->fo;
    int peer = fo->sm.peer;

    if (res->switched) {
        log_warn("site mode %s -> %s%s%s: %s", gw_site_mode_name(res->from_mode),
                 gw_site_mode_name(fo->sm.mode), peer >= 0 ? " via " : "",
                 peer >= 0 ? srv->cfg->wan.peers[peer].site : "", res->why);
        fo->since_ms = gw_wall_ms();
        fo->switches++;
    }
    if (res->warmup_entered) {
        __atomic_store_n(&fo->warm_hits, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&fo->warm_misses, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&fo->warm_peer_hits, 0, __ATOMIC_RELAXED);
    }
    __atomic_store_n(&fo->route, view_pack(&fo->sm), __ATOMIC_RELEASE);
}

size_t gw_failover_peers(struct gw_server *srv, struct gw_peer_status *out, size_t max)
{
    return gw_repl_peer_status(srv, out, max);
}

/* Nodes that came back cold are warmed one by one: each until its own hit ratio over a
 * one-second window reaches warmup.hit_ratio (or warmup.max_time passes). */
static void node_warmup_tick(struct gw_server *srv, int64_t now)
{
    struct gw_pool *pool = fo_pool(srv);

    for (uint32_t i = 0; i < pool->nnodes; i++) {
        struct gw_node *nd = &pool->nodes[i];
        int64_t until = __atomic_load_n(&nd->warm_until_ms, __ATOMIC_ACQUIRE);
        struct gw_fo_window win = {
            .start_ms = nd->win_start_ms,
            .hits = nd->win_hits,
            .misses = nd->win_misses,
            .peer_hits = nd->win_peer_hits,
        };
        struct gw_fo_window_result w;
        enum gw_fo_node_warm v;

        if (until == 0) {
            continue;
        }
        v = gw_fo_node_warm_step(until, &win, now,
                                 __atomic_load_n(&nd->warm_hits, __ATOMIC_RELAXED),
                                 __atomic_load_n(&nd->warm_misses, __ATOMIC_RELAXED),
                                 __atomic_load_n(&nd->warm_peer_hits, __ATOMIC_RELAXED),
                                 srv->cfg->failover.warmup_hit_ratio, &w);
        nd->win_start_ms = win.start_ms;
        nd->win_hits = win.hits;
        nd->win_misses = win.misses;
        nd->win_peer_hits = win.peer_hits;
        if (v == GW_FO_NODE_MAX_TIME) {
            __atomic_store_n(&nd->warm_until_ms, 0, __ATOMIC_RELEASE);
            log_info("node %s: warm-up over (max_time)", nd->label);
        } else if (v == GW_FO_NODE_WARM) {
            __atomic_store_n(&nd->warm_until_ms, 0, __ATOMIC_RELEASE);
            log_info("node %s: warm-up done (local hits %llu, found only at the peer %llu)",
                     nd->label, (unsigned long long)w.local_hits, (unsigned long long)w.peer_hits);
        }
    }
}

void gw_failover_tick(struct gw_server *srv)
{
    const struct gw_config *cfg = srv->cfg;
    struct gw_fo_config fc = fo_config(cfg);
    struct gw_fo_peer peers[FO_MAX_PEERS];
    struct gw_fo_inputs in;
    struct gw_fo_result res;

    if (cfg->wan.npeers == 0) {
        return;
    }
    pthread_mutex_lock(&fo_lock);
    fo_inputs(srv, &in, peers);
    node_warmup_tick(srv, in.now_ms);
    res = gw_fo_step(&srv->fo.sm, &fc, &in, GW_FO_TICK, -1);
    fo_apply(srv, &res);
    pthread_mutex_unlock(&fo_lock);
}

int gw_failover_force(struct gw_server *srv, const char *site, char *err, size_t errlen)
{
    struct gw_fo_config fc = fo_config(srv->cfg);
    struct gw_fo_peer peers[FO_MAX_PEERS];
    struct gw_fo_inputs in;
    struct gw_fo_result res;
    int want = -1;

    if (srv->cfg->wan.npeers == 0) {
        snprintf(err, errlen, "this gateway has no peer sites");
        return -ENOTSUP;
    }
    if (site != NULL && (want = gw_config_peer_index(srv->cfg, site)) < 0) {
        snprintf(err, errlen, "unknown site '%s': not a configured peer", site);
        return -ENOENT;
    }
    pthread_mutex_lock(&fo_lock);
    fo_inputs(srv, &in, peers);
    res = gw_fo_step(&srv->fo.sm, &fc, &in, GW_FO_FORCE, want);
    if (res.rc != 0) {
        pthread_mutex_unlock(&fo_lock);
        snprintf(err, errlen, "%s%s is not reachable or not serving", site ? "site " : "",
                 site ? site : "no peer site");
        return res.rc;
    }
    fo_apply(srv, &res);
    snprintf(err, errlen, "reads now served by %s", srv->cfg->wan.peers[srv->fo.sm.peer].site);
    pthread_mutex_unlock(&fo_lock);
    return 0;
}

int gw_failover_back(struct gw_server *srv, char *err, size_t errlen)
{
    struct gw_fo_config fc = fo_config(srv->cfg);
    struct gw_fo_peer peers[FO_MAX_PEERS];
    struct gw_fo_inputs in;
    struct gw_fo_result res;
    enum gw_site_mode mode;

    pthread_mutex_lock(&fo_lock);
    mode = srv->fo.sm.mode;
    fo_inputs(srv, &in, peers);
    res = gw_fo_step(&srv->fo.sm, &fc, &in, GW_FO_BACK, -1);
    if (res.rc == -EALREADY) {
        snprintf(err, errlen, "not failed over (mode %s)", gw_site_mode_name(mode));
    } else if (res.rc == -EAGAIN) {
        snprintf(err, errlen, "the local pool is not healthy yet");
    } else {
        fo_apply(srv, &res);
        snprintf(err, errlen, "failing back: warming up from %s",
                 srv->cfg->wan.peers[srv->fo.sm.peer].site);
    }
    pthread_mutex_unlock(&fo_lock);
    return res.rc;
}

void gw_failover_status(struct gw_server *srv, struct gw_failover_status *out)
{
    struct gw_failover_state *fo = &srv->fo;
    int peer;
    uint64_t h, m;

    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&fo_lock);
    out->mode = fo->sm.mode;
    peer = fo->sm.peer;
    if (peer >= 0 && (size_t)peer < srv->cfg->wan.npeers) {
        snprintf(out->peer, sizeof(out->peer), "%s", srv->cfg->wan.peers[peer].site);
    }
    out->forced = fo->sm.forced;
    out->since_ms = fo->since_ms;
    out->switches = fo->switches;
    out->warmup_hit_ratio = fo->sm.last_ratio;
    pthread_mutex_unlock(&fo_lock);
    out->draining = srv->draining || __atomic_load_n(&srv->lb_draining, __ATOMIC_RELAXED);
    local_health(srv, &out->nodes, &out->nodes_up);
    out->local_healthy_fraction = out->nodes ? (double)out->nodes_up / out->nodes : 0;
    h = __atomic_load_n(&fo->warm_hits, __ATOMIC_RELAXED);
    m = __atomic_load_n(&fo->warm_misses, __ATOMIC_RELAXED);
    out->warmup_local_hits = h;
    out->warmup_local_misses = m;
    out->warmup_filled = __atomic_load_n(&fo->warm_filled, __ATOMIC_RELAXED);
    out->peer_reads = __atomic_load_n(&fo->peer_reads, __ATOMIC_RELAXED);
    out->peer_read_errors = __atomic_load_n(&fo->peer_read_errors, __ATOMIC_RELAXED);
    out->reads_retried = __atomic_load_n(&fo->reads_retried, __ATOMIC_RELAXED);
}
