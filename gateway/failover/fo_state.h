/*
 * fo_state — the site-mode state machine of failover as pure functions: from the current
 * state, what was measured (local pool health, the peers' health, warm-up lookups), the
 * time and an operator's command, the next state and what the caller must do about it.
 * No I/O, no clock, no locks, no globals: failover.c gathers the inputs, calls these
 * under its lock and carries out the result (log, publish to the request path, reset the
 * warm-up counters).  Types only besides the pure functions, so server.h can embed the
 * state without pulling failover's I/O in.
 *
 *   LOCAL / WARMUP ──local pool below local_healthy_fraction, a peer serving──> FAILED_OVER
 *   WARMUP ──one-second window with hit ratio >= warmup.hit_ratio, or max_time──> LOCAL
 *   FAILED_OVER ──healthy for hold_down (not forced), or operator failback──> WARMUP
 *   FAILED_OVER ──its peer unavailable, another serving──> FAILED_OVER (the other)
 *   any ──operator / drill force──> FAILED_OVER (forced: only failback ends it)
 */
#ifndef GEOGATE_FO_STATE_H
#define GEOGATE_FO_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum gw_site_mode {
    GW_MODE_LOCAL = 0,   /* reads from the local pool (per-key fallback for down nodes) */
    GW_MODE_FAILED_OVER, /* every read from the chosen peer site */
    GW_MODE_WARMUP,      /* local reads; misses filled from the peer */
    GW_MODE_MAX
};

const char *gw_site_mode_name(enum gw_site_mode mode);

#define GW_FO_WINDOW_MS 1000        /* warm-up is judged over windows this long */
#define GW_FO_WARMUP_MIN_LOOKUPS 50 /* a window with fewer lookups does not decide */

/* The failover: section of the config. */
struct gw_fo_config {
    double local_healthy_fraction;
    int64_t hold_down_ms;
    int64_t warmup_max_time_ms;
    double warmup_hit_ratio;
};

/* One peer site as the WAN thread last saw it. */
struct gw_fo_peer {
    bool link_up;
    bool serving;
    int priority;    /* lower first */
    uint32_t rtt_ms; /* then lower round trip first */
};

/* Running totals of warm-up lookups, and the window they were last judged at. */
struct gw_fo_window {
    int64_t start_ms;
    uint64_t hits, misses, peer_hits;
};

/* What one tick or command sees. */
struct gw_fo_inputs {
    int64_t now_ms;                 /* monotonic */
    uint32_t nodes, nodes_up;       /* the local pool */
    const struct gw_fo_peer *peers; /* in the order of cfg->wan.peers */
    size_t npeers;
    /* the site's warm-up lookups since WARMUP was entered (running totals) */
    uint64_t warm_hits, warm_misses, warm_peer_hits;
};

/* The machine's state (owned by failover.c, under its lock). */
struct gw_fo_state {
    enum gw_site_mode mode;
    int peer;      /* reads' peer (index into the peers) in FAILED_OVER / WARMUP, else -1 */
    int best_peer; /* the best serving peer at the last tick (per-key fallback), -1 none */
    bool forced;   /* by an operator or a drill: hold_down does not end it */
    int64_t healthy_since_ms; /* 0: not healthy, or the pool changed since */
    uint32_t last_nodes_up;
    int64_t warmup_started_ms;
    struct gw_fo_window win;
    double last_ratio; /* warm-up hit ratio of the last window that decided */
};

enum gw_fo_command {
    GW_FO_TICK = 0, /* every 100 ms on the WAN thread */
    GW_FO_FORCE,    /* operator / drill: every read to a peer now */
    GW_FO_BACK,     /* operator / drill: fail back (through warm-up) */
    GW_FO_COMMAND_MAX
};

/* What the caller does after a step. */
struct gw_fo_result {
    int rc;        /* 0, or for FORCE -EHOSTUNREACH, for BACK -EALREADY / -EAGAIN */
    bool switched; /* mode or peer changed: log, publish, count a switch */
    enum gw_site_mode from_mode;
    const char *why;     /* for the log line of a switch */
    bool warmup_entered; /* the warm-up counters start again from zero */
};

/* The verdict on one warm-up window. */
enum gw_fo_window_verdict {
    GW_FO_WINDOW_OPEN = 0, /* the window is not over yet */
    GW_FO_WINDOW_FEW,      /* over, with too few lookups to decide */
    GW_FO_WINDOW_COLD,     /* over, hit ratio below warmup.hit_ratio */
    GW_FO_WINDOW_WARM,     /* over, warm enough */
    GW_FO_WINDOW_VERDICT_MAX
};

struct gw_fo_window_result {
    enum gw_fo_window_verdict verdict;
    uint64_t local_hits, misses, peer_hits; /* in the window that closed */
    double ratio; /* local hits / (local hits + found only at the peer); 1 when neither */
};

/* A fresh state: LOCAL, no peer. */
void gw_fo_state_init(struct gw_fo_state *st);

/* The local pool is healthy enough to serve the site. */
bool gw_fo_local_healthy(const struct gw_fo_config *cfg, uint32_t nodes, uint32_t nodes_up);

/* The best serving peer (link up and serving; lowest priority, then lowest RTT), limited
 * to `want` when it is >= 0.  Returns its index, or -1. */
int gw_fo_best_peer(const struct gw_fo_peer *peers, size_t npeers, int want);

/* Close win at now when a window has passed, given the running totals; the window then
 * starts again from them. */
struct gw_fo_window_result gw_fo_window_close(struct gw_fo_window *win, int64_t now_ms,
                                              uint64_t hits, uint64_t misses, uint64_t peer_hits,
                                              double hit_ratio);

/* One step of the machine.  want_peer: FORCE's site (index), -1 for the best one. */
struct gw_fo_result gw_fo_step(struct gw_fo_state *st, const struct gw_fo_config *cfg,
                               const struct gw_fo_inputs *in, enum gw_fo_command cmd,
                               int want_peer);

/* A node back from down warms alone, until warm_until_ms (0: not warming). */
enum gw_fo_node_warm {
    GW_FO_NODE_COLD = 0, /* still warming (or not warming at all: nothing to do) */
    GW_FO_NODE_MAX_TIME, /* warmup.max_time passed: warm-up over */
    GW_FO_NODE_WARM,     /* its window reached warmup.hit_ratio: warm-up over */
    GW_FO_NODE_WARM_MAX
};

enum gw_fo_node_warm gw_fo_node_warm_step(int64_t warm_until_ms, struct gw_fo_window *win,
                                          int64_t now_ms, uint64_t hits, uint64_t misses,
                                          uint64_t peer_hits, double hit_ratio,
                                          struct gw_fo_window_result *out);

#endif
