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
#include "wan/version.h"

struct gw_repl;

/* Set up replication for srv (spool, TLS contexts; the WAN thread's part starts on
 * that thread).  Returns 0 or -1 (logged). */
int gw_repl_create(struct gw_server *srv, struct gw_worker *wan_worker);

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
 * (docs/REPLICATION.md, "Clock skew"); peers' offsets are in gw_failover_peers(). */
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

/* Any thread. */
void gw_repl_clock_status(struct gw_server *srv, struct gw_clock_status *out);

#endif
