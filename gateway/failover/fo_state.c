/*
 * fo_state — see fo_state.h.  Pure: every input comes in as an argument, every effect
 * goes out in the result; tests/unit/test_failover.c walks each branch.
 */
#include "gateway/failover/fo_state.h"

#include <errno.h>
#include <string.h>

static const char *const mode_names[GW_MODE_MAX] = {
    [GW_MODE_LOCAL] = "local",
    [GW_MODE_FAILED_OVER] = "failed_over",
    [GW_MODE_WARMUP] = "warmup",
};

const char *gw_site_mode_name(enum gw_site_mode mode)
{
    return mode < GW_MODE_MAX ? mode_names[mode] : "?";
}

void gw_fo_state_init(struct gw_fo_state *st)
{
    memset(st, 0, sizeof(*st));
    st->mode = GW_MODE_LOCAL;
    st->peer = -1;
    st->best_peer = -1;
}

bool gw_fo_local_healthy(const struct gw_fo_config *cfg, uint32_t nodes, uint32_t nodes_up)
{
    return nodes > 0 && (double)nodes_up / (double)nodes >= cfg->local_healthy_fraction &&
           nodes_up > 0;
}

int gw_fo_best_peer(const struct gw_fo_peer *peers, size_t npeers, int want)
{
    int best = -1;

    for (size_t i = 0; i < npeers; i++) {
        if (want >= 0 && (size_t)want != i) {
            continue;
        }
        if (!peers[i].link_up || !peers[i].serving) {
            continue;
        }
        if (best < 0 || peers[i].priority < peers[best].priority ||
            (peers[i].priority == peers[best].priority && peers[i].rtt_ms < peers[best].rtt_ms)) {
            best = (int)i;
        }
    }
    return best;
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

struct gw_fo_window_result gw_fo_window_close(struct gw_fo_window *win, int64_t now_ms,
                                              uint64_t hits, uint64_t misses, uint64_t peer_hits,
                                              double hit_ratio)
{
    struct gw_fo_window_result r = {.verdict = GW_FO_WINDOW_OPEN};

    if (now_ms - win->start_ms < GW_FO_WINDOW_MS) {
        return r;
    }
    r.local_hits = hits - win->hits;
    r.misses = misses - win->misses;
    r.peer_hits = peer_hits - win->peer_hits;
    win->hits = hits;
    win->misses = misses;
    win->peer_hits = peer_hits;
    win->start_ms = now_ms;
    if (r.local_hits + r.misses < GW_FO_WARMUP_MIN_LOOKUPS) {
        r.verdict = GW_FO_WINDOW_FEW;
        return r;
    }
    r.ratio = r.local_hits + r.peer_hits
                  ? (double)r.local_hits / (double)(r.local_hits + r.peer_hits)
                  : 1.0;
    r.verdict =
        warm_enough(r.local_hits, r.peer_hits, hit_ratio) ? GW_FO_WINDOW_WARM : GW_FO_WINDOW_COLD;
    return r;
}

/* Move to (mode, peer) unless already there; entering WARMUP starts its counting over. */
static void set_mode(struct gw_fo_state *st, struct gw_fo_result *res, int64_t now_ms,
                     enum gw_site_mode mode, int peer, const char *why)
{
    if (st->mode == mode && st->peer == peer) {
        return;
    }
    res->switched = true;
    res->why = why;
    st->mode = mode;
    st->peer = peer;
    if (mode == GW_MODE_WARMUP) {
        res->warmup_entered = true;
        st->warmup_started_ms = now_ms;
        memset(&st->win, 0, sizeof(st->win));
        st->win.start_ms = now_ms;
        st->last_ratio = 0;
    }
    if (mode == GW_MODE_LOCAL) {
        st->forced = false;
    }
}

/* The pool's health over time: hold_down counts from the last change of the pool, so a
 * node that comes back while another is still returning restarts the wait (no flapping
 * on a pool that is still settling). */
static bool track_health(struct gw_fo_state *st, const struct gw_fo_config *cfg,
                         const struct gw_fo_inputs *in)
{
    bool healthy = gw_fo_local_healthy(cfg, in->nodes, in->nodes_up);

    if (in->nodes_up != st->last_nodes_up) {
        st->last_nodes_up = in->nodes_up;
        st->healthy_since_ms = 0;
    }
    if (!healthy) {
        st->healthy_since_ms = 0;
    } else if (st->healthy_since_ms == 0) {
        st->healthy_since_ms = in->now_ms;
    }
    return healthy;
}

static void tick_warmup(struct gw_fo_state *st, const struct gw_fo_config *cfg,
                        const struct gw_fo_inputs *in, struct gw_fo_result *res)
{
    struct gw_fo_window_result w;

    /* One-second windows of local hits and misses decide the end of warm-up. */
    w = gw_fo_window_close(&st->win, in->now_ms, in->warm_hits, in->warm_misses, in->warm_peer_hits,
                           cfg->warmup_hit_ratio);
    if (w.verdict == GW_FO_WINDOW_COLD || w.verdict == GW_FO_WINDOW_WARM) {
        st->last_ratio = w.ratio;
    }
    if (w.verdict == GW_FO_WINDOW_WARM) {
        set_mode(st, res, in->now_ms, GW_MODE_LOCAL, -1, "warm-up reached its hit ratio");
        return;
    }
    if (in->now_ms - st->warmup_started_ms >= cfg->warmup_max_time_ms) {
        set_mode(st, res, in->now_ms, GW_MODE_LOCAL, -1, "warm-up reached its max_time");
    }
}

static void tick(struct gw_fo_state *st, const struct gw_fo_config *cfg,
                 const struct gw_fo_inputs *in, struct gw_fo_result *res)
{
    bool healthy;
    int p;

    st->best_peer = gw_fo_best_peer(in->peers, in->npeers, -1);
    healthy = track_health(st, cfg, in);
    switch (st->mode) {
    case GW_MODE_LOCAL:
    case GW_MODE_WARMUP:
        if (!healthy) {
            if (st->best_peer >= 0) {
                set_mode(st, res, in->now_ms, GW_MODE_FAILED_OVER, st->best_peer,
                         "local pool below its healthy fraction");
            }
            break;
        }
        if (st->mode == GW_MODE_WARMUP) {
            tick_warmup(st, cfg, in, res);
        }
        break;
    case GW_MODE_FAILED_OVER:
        p = st->peer;
        if (!st->forced && healthy && in->now_ms - st->healthy_since_ms >= cfg->hold_down_ms) {
            set_mode(st, res, in->now_ms, GW_MODE_WARMUP, p, "local pool healthy for hold_down");
            break;
        }
        /* The peer we read from went away: pick another if there is one. */
        if (p < 0 || gw_fo_best_peer(in->peers, in->npeers, p) < 0) {
            if (st->best_peer >= 0 && st->best_peer != p) {
                set_mode(st, res, in->now_ms, GW_MODE_FAILED_OVER, st->best_peer,
                         "the peer we read from is unavailable");
            }
        }
        break;
    default:
        break;
    }
}

struct gw_fo_result gw_fo_step(struct gw_fo_state *st, const struct gw_fo_config *cfg,
                               const struct gw_fo_inputs *in, enum gw_fo_command cmd, int want_peer)
{
    struct gw_fo_result res = {.rc = 0, .from_mode = st->mode};
    int p;

    switch (cmd) {
    case GW_FO_TICK:
        tick(st, cfg, in, &res);
        break;
    case GW_FO_FORCE:
        p = gw_fo_best_peer(in->peers, in->npeers, want_peer);
        if (p < 0) {
            res.rc = -EHOSTUNREACH;
            break;
        }
        set_mode(st, &res, in->now_ms, GW_MODE_FAILED_OVER, p, "operator");
        st->forced = true;
        break;
    case GW_FO_BACK:
        if (st->mode != GW_MODE_FAILED_OVER) {
            res.rc = -EALREADY;
        } else if (!gw_fo_local_healthy(cfg, in->nodes, in->nodes_up)) {
            res.rc = -EAGAIN;
        } else {
            set_mode(st, &res, in->now_ms, GW_MODE_WARMUP, st->peer, "operator failback");
            st->forced = false;
        }
        break;
    default:
        break;
    }
    return res;
}

enum gw_fo_node_warm gw_fo_node_warm_step(int64_t warm_until_ms, struct gw_fo_window *win,
                                          int64_t now_ms, uint64_t hits, uint64_t misses,
                                          uint64_t peer_hits, double hit_ratio,
                                          struct gw_fo_window_result *out)
{
    struct gw_fo_window_result w = {.verdict = GW_FO_WINDOW_OPEN};
    enum gw_fo_node_warm v = GW_FO_NODE_COLD;

    if (warm_until_ms != 0 && warm_until_ms <= now_ms) {
        v = GW_FO_NODE_MAX_TIME;
    } else if (warm_until_ms != 0) {
        w = gw_fo_window_close(win, now_ms, hits, misses, peer_hits, hit_ratio);
        if (w.verdict == GW_FO_WINDOW_WARM) {
            v = GW_FO_NODE_WARM;
        }
    }
    if (out != NULL) {
        *out = w;
    }
    return v;
}
