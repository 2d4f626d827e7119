/*
 * failover — where this site's reads are served from, and when that changes.
 *
 *   LOCAL ──local healthy fraction < failover.local_healthy_fraction, or an operator /
 *     │     drill says so (gw_failover_force)──> FAILED_OVER(peer): every read goes to the
 *     │                                          chosen peer site (priority, then RTT)
 *     │  <──warm-up done (hit ratio >= warmup.hit_ratio or warmup.max_time)── WARMUP(peer)
 *     │                                                                      ^
 *   FAILED_OVER ──local pool healthy for failover.hold_down (auto) or failback (forced)┘
 *
 *   WARMUP: reads are local; a local miss is read from the peer, answered, and added
 *   locally with its original absolute expiry and version (never over a newer item).
 *
 * The decisions are the pure state machine of fo_state.h; this file gathers its inputs
 * (pool health, the peers' health as repl.c measures it, warm-up counters), runs it from
 * gw_failover_tick() (WAN thread, registered on replication's tick by server.c) and the
 * operator calls below (admin thread), and publishes the outcome as one word that the
 * routing step (route.c) reads; nothing else on the request path reads failover state.
 * It does not talk to peers itself.
 */
#ifndef GEOGATE_FAILOVER_H
#define GEOGATE_FAILOVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/failover/fo_state.h"
#include "gateway/replication/repl.h"

struct gw_server;

struct gw_failover_status {
    enum gw_site_mode mode;
    char peer[64];        /* reads' peer in FAILED_OVER / WARMUP, "" otherwise */
    bool forced;          /* by an operator or a drill */
    bool draining;
    double local_healthy_fraction; /* usable nodes / nodes */
    uint32_t nodes, nodes_up;
    int64_t since_ms;     /* unix ms the mode was entered */
    uint64_t switches;    /* mode changes since start */
    /* warm-up */
    uint64_t warmup_local_hits, warmup_local_misses, warmup_filled;
    double warmup_hit_ratio;
    /* failover reads */
    uint64_t peer_reads, peer_read_errors;
    uint64_t reads_retried;
};

/* Set up srv->fo: LOCAL, no peer; before any thread starts. */
void gw_failover_init(struct gw_server *srv);

/* Where the site reads from, as last published: one consistent snapshot.  Read by the
 * routing step only (any thread, lock-free). */
struct gw_failover_view {
    enum gw_site_mode mode;
    int peer;      /* index into cfg->wan.peers in FAILED_OVER / WARMUP, -1 otherwise */
    int best_peer; /* the best serving peer now (per-key fallback), -1 none */
};

struct gw_failover_view gw_failover_view(const struct gw_server *srv);

/* A snapshot (any thread). */
void gw_failover_status(struct gw_server *srv, struct gw_failover_status *out);

/* The peers as the WAN thread last saw them; returns how many were written (any thread). */
size_t gw_failover_peers(struct gw_server *srv, struct gw_peer_status *out, size_t max);

/* Operator/drill: send every read to `site` now (NULL: the best healthy peer).
 * Returns 0, -ENOENT (not a configured peer; err says so), -EHOSTUNREACH (that peer is
 * not reachable or not serving) or -ENOTSUP (no peers configured).  Any thread. */
int gw_failover_force(struct gw_server *srv, const char *site, char *err, size_t errlen);

/* Operator/drill: come back (through warm-up) from a forced failover.  Returns 0,
 * -EALREADY (not failed over), -EAGAIN (the local pool is not healthy yet).  Any thread. */
int gw_failover_back(struct gw_server *srv, char *err, size_t errlen);

/* Decide transitions; every replication tick (100 ms) on the WAN thread. */
void gw_failover_tick(struct gw_server *srv);

#endif
