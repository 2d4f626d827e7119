/*
 * failover — see failover.h.  The mode and the chosen peer are atomics the request path
 * reads; only gw_failover_tick (WAN thread) and the operator calls change them, under
 * one mutex.  Warm-up counters are bumped by workers with relaxed atomics and read in
 * one-second windows by the tick.
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
#define FO_WARMUP_MIN_LOOKUPS 50 /* a window with fewer lookups does not decide */

static const char *const mode_names[GW_MODE_MAX] = {
    [GW_MODE_LOCAL] = "local",
    [GW_MODE_FAILED_OVER] = "failed_over",
    [GW_MODE_WARMUP] = "warmup",
};

const char *gw_site_mode_name(enum gw_site_mode mode)
{
    return mode < GW_MODE_MAX ? mode_names[mode] : "?";
}

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

static bool local_healthy(struct gw_server *srv)
{
    uint32_t n, up;

    local_health(srv, &n, &up);
    return n > 0 && (double)up / (double)n >= srv->cfg->failover.local_healthy_fraction &&
           up > 0;
}

/* The best serving peer: lowest priority, then lowest RTT.  -1 if none. */
static int best_peer(struct gw_server *srv, const char *want)
{
    struct gw_peer_status ps[FO_MAX_PEERS];
    size_t n = gw_failover_peers(srv, ps, FO_MAX_PEERS);
    int best = -1;

    for (size_t i = 0; i < n; i++) {
        if (want != NULL && strcmp(ps[i].site, want) != 0) {
            continue;
        }
        if (!ps[i].link_up || !ps[i].serving) {
            continue;
        }
        if (best < 0 || ps[i].priority < ps[best].priority ||
            (ps[i].priority == ps[best].priority && ps[i].rtt_ms < ps[best].rtt_ms)) {
            best = (int)i;
        }
    }
    return best;
}

/* Under fo_lock. */
static void set_mode(struct gw_server *srv, enum gw_site_mode mode, int peer, const char *why)
{
    struct gw_failover_state *fo = &srv->fo;
    const char *site = peer >= 0 ? srv->cfg->wan.peers[peer].site : "";

    if (fo->mode == (int)mode && fo->peer == peer) {
        return;
    }
    log_warn("site mode %s -> %s%s%s: %s", gw_site_mode_name(fo->mode), gw_site_mode_name(mode),
             peer >= 0 ? " via " : "", site, why);
    __atomic_store_n(&fo->peer, peer, __ATOMIC_RELEASE);
    __atomic_store_n(&fo->mode, (int)mode, __ATOMIC_RELEASE);
    fo->since_ms = gw_wall_ms();
    fo->switches++;
    if (mode == GW_MODE_WARMUP) {
        fo->warmup_started_ms = gw_mono_ms();
        __atomic_store_n(&fo->warm_hits, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&fo->warm_misses, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&fo->warm_peer_hits, 0, __ATOMIC_RELAXED);
        fo->win_hits = fo->win_misses = fo->win_peer_hits = 0;
        fo->win_start_ms = gw_mono_ms();
        fo->last_ratio = 0;
    }
    if (mode == GW_MODE_LOCAL) {
        fo->forced = false;
    }
}

static int peer_index(struct gw_server *srv, const char *site)
{
    for (size_t i = 0; i < srv->cfg->wan.npeers; i++) {
        if (strcmp(srv->cfg->wan.peers[i].site, site) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* Map a gw_failover_peers() index (same order as the config) to a peer index. */
static int chosen_peer(struct gw_server *srv, const char *want)
{
    struct gw_peer_status ps[FO_MAX_PEERS];
    size_t n = gw_failover_peers(srv, ps, FO_MAX_PEERS);
    int b = best_peer(srv, want);

    if (b < 0 || (size_t)b >= n) {
        return -1;
    }
    return peer_index(srv, ps[b].site);
}

/*
 * Warm enough: of the lookups that found something (locally or, after a local miss, at
 * the peer), at least `ratio` were local hits.  Measured against what the peer could
 * add, not against 100%: a cache whose normal hit ratio is 65% is warm at 65%.
 */
static bool warm_enough(uint64_t local_hits, uint64_t peer_hits, double ratio)
{
    if (local_hits + peer_hits == 0) {
        return true; /* nothing to fetch from the peer either */
    }
    return (double)local_hits / (double)(local_hits + peer_hits) >= ratio;
}

/* Nodes that came back cold are warmed one by one: each until its own hit ratio over a
 * one-second window reaches warmup.hit_ratio (or warmup.max_time passes). */
static void node_warmup_tick(struct gw_server *srv, int64_t now)
{
    struct gw_pool *pool = fo_pool(srv);

    for (uint32_t i = 0; i < pool->nnodes; i++) {
        struct gw_node *nd = &pool->nodes[i];
        int64_t until = __atomic_load_n(&nd->warm_until_ms, __ATOMIC_ACQUIRE);
        uint64_t h, m, ph, dh, dm, dph;

        if (until == 0) {
            continue;
        }
        if (until <= now) {
            __atomic_store_n(&nd->warm_until_ms, 0, __ATOMIC_RELEASE);
            log_info("node %s: warm-up over (max_time)", nd->label);
            continue;
        }
        if (now - nd->win_start_ms < 1000) {
            continue;
        }
        h = __atomic_load_n(&nd->warm_hits, __ATOMIC_RELAXED);
        m = __atomic_load_n(&nd->warm_misses, __ATOMIC_RELAXED);
        ph = __atomic_load_n(&nd->warm_peer_hits, __ATOMIC_RELAXED);
        dh = h - nd->win_hits;
        dm = m - nd->win_misses;
        dph = ph - nd->win_peer_hits;
        nd->win_hits = h;
        nd->win_misses = m;
        nd->win_peer_hits = ph;
        nd->win_start_ms = now;
        if (dh + dm >= FO_WARMUP_MIN_LOOKUPS &&
            warm_enough(dh, dph, srv->cfg->failover.warmup_hit_ratio)) {
            __atomic_store_n(&nd->warm_until_ms, 0, __ATOMIC_RELEASE);
            log_info("node %s: warm-up done (local hits %llu, found only at the peer %llu)",
                     nd->label, (unsigned long long)dh, (unsigned long long)dph);
        }
    }
}

void gw_failover_tick(struct gw_server *srv)
{
    struct gw_failover_state *fo = &srv->fo;
    const struct gw_config *cfg = srv->cfg;
    int64_t now = gw_mono_ms();
    bool healthy;
    int p;

    if (cfg->wan.npeers == 0) {
        return;
    }
    pthread_mutex_lock(&fo_lock);
    __atomic_store_n(&fo->best_peer, chosen_peer(srv, NULL), __ATOMIC_RELEASE);
    healthy = local_healthy(srv);
    {
        /* hold_down counts from the last change of the pool: a node that comes back
         * while another is still returning restarts the wait (no flapping on a pool
         * that is still settling). */
        uint32_t n, up;
        local_health(srv, &n, &up);
        if (up != fo->last_nodes_up) {
            fo->last_nodes_up = up;
            fo->healthy_since_ms = 0;
        }
    }
    if (healthy) {
        if (fo->healthy_since_ms == 0) {
            fo->healthy_since_ms = now;
        }
    } else {
        fo->healthy_since_ms = 0;
    }
    node_warmup_tick(srv, now);
    switch (fo->mode) {
    case GW_MODE_LOCAL:
    case GW_MODE_WARMUP:
        if (!healthy) {
            p = chosen_peer(srv, NULL);
            if (p >= 0) {
                set_mode(srv, GW_MODE_FAILED_OVER, p, "local pool below its healthy fraction");
            }
            break;
        }
        if (fo->mode == GW_MODE_WARMUP) {
            /* One-second windows of local hits and misses decide the end of warm-up. */
            uint64_t h = __atomic_load_n(&fo->warm_hits, __ATOMIC_RELAXED);
            uint64_t m = __atomic_load_n(&fo->warm_misses, __ATOMIC_RELAXED);
            uint64_t ph = __atomic_load_n(&fo->warm_peer_hits, __ATOMIC_RELAXED);
            if (now - fo->win_start_ms >= 1000) {
                uint64_t dh = h - fo->win_hits, dm = m - fo->win_misses;
                uint64_t dph = ph - fo->win_peer_hits;
                if (dh + dm >= FO_WARMUP_MIN_LOOKUPS) {
                    fo->last_ratio = dh + dph ? (double)dh / (double)(dh + dph) : 1.0;
                    if (warm_enough(dh, dph, cfg->failover.warmup_hit_ratio)) {
                        set_mode(srv, GW_MODE_LOCAL, -1, "warm-up reached its hit ratio");
                        break;
                    }
                }
                fo->win_hits = h;
                fo->win_misses = m;
                fo->win_peer_hits = ph;
                fo->win_start_ms = now;
            }
            if (now - fo->warmup_started_ms >= (int64_t)cfg->failover.warmup_max_time_ms) {
                set_mode(srv, GW_MODE_LOCAL, -1, "warm-up reached its max_time");
            }
        }
        break;
    case GW_MODE_FAILED_OVER:
        p = __atomic_load_n(&fo->peer, __ATOMIC_ACQUIRE);
        if (!fo->forced && healthy &&
            now - fo->healthy_since_ms >= (int64_t)cfg->failover.hold_down_ms) {
            set_mode(srv, GW_MODE_WARMUP, p, "local pool healthy for hold_down");
            break;
        }
        /* The peer we read from went away: pick another if there is one. */
        if (best_peer(srv, cfg->wan.peers[p].site) < 0) {
            int q = chosen_peer(srv, NULL);
            if (q >= 0 && q != p) {
                set_mode(srv, GW_MODE_FAILED_OVER, q, "the peer we read from is unavailable");
            }
        }
        break;
    default:
        break;
    }
    pthread_mutex_unlock(&fo_lock);
}

int gw_failover_force(struct gw_server *srv, const char *site, char *err, size_t errlen)
{
    int p;

    if (srv->cfg->wan.npeers == 0) {
        snprintf(err, errlen, "this gateway has no peer sites");
        return -ENOTSUP;
    }
    if (site != NULL && peer_index(srv, site) < 0) {
        snprintf(err, errlen, "unknown site '%s': not a configured peer", site);
        return -ENOENT;
    }
    pthread_mutex_lock(&fo_lock);
    p = chosen_peer(srv, site);
    if (p < 0) {
        pthread_mutex_unlock(&fo_lock);
        snprintf(err, errlen, "%s%s is not reachable or not serving", site ? "site " : "",
                 site ? site : "no peer site");
        return -EHOSTUNREACH;
    }
    set_mode(srv, GW_MODE_FAILED_OVER, p, "operator");
    srv->fo.forced = true;
    pthread_mutex_unlock(&fo_lock);
    snprintf(err, errlen, "reads now served by %s", srv->cfg->wan.peers[p].site);
    return 0;
}

int gw_failover_back(struct gw_server *srv, char *err, size_t errlen)
{
    struct gw_failover_state *fo = &srv->fo;
    int rc = 0;

    pthread_mutex_lock(&fo_lock);
    if (fo->mode != GW_MODE_FAILED_OVER) {
        snprintf(err, errlen, "not failed over (mode %s)", gw_site_mode_name(fo->mode));
        rc = -EALREADY;
    } else if (!local_healthy(srv)) {
        snprintf(err, errlen, "the local pool is not healthy yet");
        rc = -EAGAIN;
    } else {
        set_mode(srv, GW_MODE_WARMUP, fo->peer, "operator failback");
        fo->forced = false;
        snprintf(err, errlen, "failing back: warming up from %s",
                 srv->cfg->wan.peers[fo->peer].site);
    }
    pthread_mutex_unlock(&fo_lock);
    return rc;
}

void gw_failover_status(struct gw_server *srv, struct gw_failover_status *out)
{
    struct gw_failover_state *fo = &srv->fo;
    int peer;
    uint64_t h, m;

    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&fo_lock);
    out->mode = (enum gw_site_mode)fo->mode;
    peer = fo->peer;
    if (peer >= 0 && (size_t)peer < srv->cfg->wan.npeers) {
        snprintf(out->peer, sizeof(out->peer), "%s", srv->cfg->wan.peers[peer].site);
    }
    out->forced = fo->forced;
    out->since_ms = fo->since_ms;
    out->switches = fo->switches;
    out->warmup_hit_ratio = fo->last_ratio;
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
