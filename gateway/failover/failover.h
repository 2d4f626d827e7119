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
 * State is a few atomics any thread reads on the request path; transitions are decided
 * by gw_failover_tick() on one thread (the WAN thread) and by the operator calls below
 * (admin thread).  It does not talk to peers itself (repl.c measures their health).
 */
#ifndef GEOGATE_FAILOVER_H
#define GEOGATE_FAILOVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_server;

enum gw_site_mode {
    GW_MODE_LOCAL = 0,   /* reads from the local pool (per-key fallback for down nodes) */
    GW_MODE_FAILED_OVER, /* every read from the chosen peer site */
    GW_MODE_WARMUP,      /* local reads; misses filled from the peer */
    GW_MODE_MAX
};

const char *gw_site_mode_name(enum gw_site_mode mode);

/* What a peer site looks like from here (measured by the WAN thread). */
struct gw_peer_status {
    char site[64];
    bool link_up;       /* our Ship link to it is up */
    bool serving;       /* its last Health/Check said SERVING (its own pool is healthy) */
    int priority;       /* from the config: lower first */
    uint32_t rtt_ms;    /* last Health/Check round trip */
    uint64_t acked_seq;
    uint64_t spool_records; /* ours, not yet acked by it: data at risk if we die now */
    uint64_t spool_bytes;
    uint64_t oldest_unacked_age_ms;
    uint64_t lag_p50_ms, lag_p99_ms;
    uint64_t shipped, acked, dropped, reconnects;
    uint64_t lost_from_peer; /* records the peer said its spool lost for us */
    /* its clock (docs/REPLICATION.md, "Clock skew") */
    bool clock_measured;     /* an offset was measured since start */
    int64_t clock_offset_ms; /* its clock minus ours, from its last batch or ack */
    uint64_t clock_age_ms;   /* how long ago */
    uint64_t skew_refused;   /* its batches refused: versions beyond max_clock_skew */
};

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

/* Decide transitions; called every 100 ms on the WAN thread. */
void gw_failover_tick(struct gw_server *srv);

#endif
