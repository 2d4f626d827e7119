/*
 * repl — the gateway's side of replication.
 *
 *   worker: local write succeeds ──> gw_repl_ship: rule (copy/invalidate/none) ──> Mutation
 *           ──> spool append ──(end of the loop pass)──> fsync if `always`, then the
 *           client's reply is released ──> kick the WAN thread
 *   WAN thread: per peer, a gRPC client link; a cursor over the spool from the peer's
 *           acked seq; batches in flight; acks trim the spool; reconnect with jittered
 *           backoff
 *   WAN thread: the gRPC server; incoming Ship batches are applied newest-wins through
 *           the WAN thread's own connections to the local pool (apply.c), then acked
 *
 * The WAN thread is a worker without clients (srv->workers[nworkers]).  Workers only
 * append to the spool (which locks) and set an event; nothing else is shared.
 */
#ifndef GEOGATE_REPL_H
#define GEOGATE_REPL_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/store/item.h" /* struct gw_item */
#include "gateway/types.h"
#include "proto/geogate_wan.pb-c.h"
#include "wan/version.h"

struct gw_repl;

struct event_base;
struct gw_catchup;
struct gw_catchup_entry;
struct gw_pool;
struct wan_grpc_backfill_call;

/* A catch-up backfill replication wants started from a peer (borrowed strings). */
struct gw_repl_catch_up {
    struct gw_pool *pool;                  /* the WAN thread's current pool */
    const char *from;                      /* the peer site owing us items */
    const char *why;                       /* for the log and /status */
    struct gw_catchup *catchup;            /* record progress here; NULL: not resumable */
    const struct gw_catchup_entry *resume; /* where a cut-short catch-up got to, or NULL */
};

/*
 * What the layers above replication plug into it (server.c fills this in): replication
 * runs the WAN thread's tick and serves the WAN listener, but the failover decision and
 * backfills belong to failover/ and transfer/, which it does not call by name.  Every
 * pointer may be NULL (nothing to do, nothing running, Backfill calls refused).
 */
struct gw_repl_hooks {
    /* End of every replication tick (REPL_TICK_MS), on the WAN thread. */
    void (*tick)(struct gw_server *srv);
    /* Catch-up backfills: whether a backfill job runs now, and start one.  start returns 0,
     * -EBUSY (another job runs: asked again later) or another negative code with err set. */
    bool (*backfill_running)(struct gw_server *srv);
    int (*backfill_start)(struct gw_server *srv, const struct gw_repl_catch_up *req, char *err,
                          size_t errlen);
    /* A peer's Backfill call on our WAN listener (WAN thread): open returns 0 with
     * *call_arg set or a gRPC status to refuse with (it takes req); stop_all runs once the
     * listener is gone. */
    int (*serve_open)(struct gw_server *srv, struct event_base *base, struct gw_pool *pool,
                      struct wan_grpc_backfill_call *call, const char *peer_site,
                      Geogate__Wan__V1__BackfillRequest *req, void **call_arg);
    void (*serve_writable)(void *call_arg);
    void (*serve_closed)(void *call_arg, int grpc_status, const char *why);
    void (*serve_stop_all)(struct gw_server *srv);
};

/* Set up replication for srv (spool, TLS contexts; the WAN thread's part starts on
 * that thread).  hooks is borrowed for the life of replication.  Returns 0 or -1
 * (logged). */
int gw_repl_create(struct gw_server *srv, struct gw_worker *wan_worker,
                   const struct gw_repl_hooks *hooks);

/* Close the WAN server and the peer links; after every thread has stopped and before
 * their event bases are freed.  Idempotent. */
void gw_repl_stop_links(struct gw_server *srv);

/* Free the rest (spool, TLS contexts); after gw_repl_stop_links. */
void gw_repl_destroy(struct gw_server *srv);

/* A local write succeeded: spool its result for every peer (per replication.rules).
 * Returns true when the item was spooled (the client's reply then waits for the end of
 * the loop pass, see gw_repl_hold). */
bool gw_repl_ship(struct gw_worker *w, const struct gw_item *it);

/* A flush_all succeeded locally: ship it when replication.flush is on.  delay is the
 * client's argument (0: now). */
void gw_repl_ship_flush(struct gw_worker *w, int32_t delay);

/* Spool an item and tell its sequence number (0 when not spooled: a `none` rule, no
 * peers, or a spool error). */
uint64_t gw_repl_ship_seq(struct gw_worker *w, const struct gw_item *it);

/* Call done(arg, true) on w's thread once peer (index into cfg->wan.peers) has acked
 * seq, or done(arg, false) after timeout_ms.  Checked on every worker tick. */
void gw_repl_wait_ack(struct gw_worker *w, int peer, uint64_t seq, uint32_t timeout_ms,
                      void (*done)(void *arg, bool ok), void *arg);
void gw_repl_worker_tick(struct gw_worker *w, int64_t now_ms);
/* Worker shutdown: every waiter gets done(arg, false). */
void gw_repl_worker_stop(struct gw_worker *w);

/* Hold r's (already written) reply until the spool is durable: released at the end of
 * this loop pass.  Returns false when nothing needs holding (fsync is not `always`). */
bool gw_repl_hold(struct gw_worker *w, struct gw_req *r);

/* End of a worker's loop pass: fsync (when `always`), release held replies, wake the
 * WAN thread.  Cheap when nothing was spooled. */
void gw_repl_pass_end(struct gw_worker *w);

/* Append the records this worker spooled so far in the pass (gw_repl_pass_end does; a
 * socket flushed mid-pass must first, so no reply leaves before its record is written). */
void gw_repl_spool_flush(struct gw_worker *w);

/* The WAN thread applied or rejected a remote item: when the local one is newer, it
 * travels back to every peer.  (apply.c) */
void gw_repl_ship_local(struct gw_worker *w, const struct gw_item *it);

/* The client-side TLS context for links to peers (NULL without peers). */
struct tls_ctx *gw_repl_client_tls(struct gw_server *srv);

/* `stats peers` lines. */
void gw_repl_stats(struct gw_server *srv, struct evbuffer *out);

/* The spool's disk-fault state for /status (a JSON object: degraded while a fault is in
 * force) and /metrics.  Any thread. */
void gw_repl_spool_json(struct gw_server *srv, struct evbuffer *out);
void gw_repl_spool_metrics(struct gw_server *srv, struct evbuffer *out);

/* This gateway's hybrid clock against its wall clock, and what the bound on clock skew did
 * (docs/REPLICATION.md, "Clock skew"); peers' offsets are in gw_repl_peer_status(). */
struct gw_clock_status {
    uint64_t max_skew_ms;        /* replication.max_clock_skew; 0 = no bound */
    uint64_t wall_ms;            /* the physical clock now */
    uint64_t hlc_ms;             /* the HLC's physical part now (last value handed out) */
    int64_t hlc_lead_ms;         /* hlc_ms - wall_ms: <= 0 unless a version ran ahead */
    uint64_t hlc_max_lead_ms;    /* the furthest it ran ahead since start */
    uint64_t refused_versions;   /* peer versions beyond the bound, not applied (not Ship) */
    uint64_t resets;             /* restarts after our clock stepped back past the bound */
    uint64_t restamped;          /* our writes stamped ahead, re-stamped before shipping */
    uint64_t restamp_superseded; /* such writes found replaced by a later one */
};

/* What a peer site looks like from here (measured by the WAN thread). */
struct gw_peer_status {
    char site[64];
    bool link_up;    /* our Ship link to it is up */
    bool serving;    /* its last Health/Check said SERVING (its own pool is healthy) */
    int priority;    /* from the config: lower first */
    uint32_t rtt_ms; /* last Health/Check round trip */
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

/* The peers as the WAN thread last measured them, in the order of cfg->wan.peers; returns
 * how many were written (0 when not replicating).  Any thread. */
size_t gw_repl_peer_status(struct gw_server *srv, struct gw_peer_status *out, size_t max);

/* Any thread. */
void gw_repl_clock_status(struct gw_server *srv, struct gw_clock_status *out);

#endif
