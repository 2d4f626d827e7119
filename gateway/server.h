/*
 * server — the process: the loaded config, the listener on the main thread, the
 * worker threads, signals (SIGTERM drains, SIGHUP reloads the pool), connection
 * limits.  The main thread owns it; workers read the fields marked shared.
 */
#ifndef GEOGATE_SERVER_H
#define GEOGATE_SERVER_H

#include <stdint.h>
#include <time.h>

#include "gateway/failover/fo_state.h"
#include "gateway/types.h"
#include "wan/version.h"

/* Failover state (gateway/failover/failover.c).  The request path reads only `route`,
 * through the routing step (gateway/routing/route.c); fields marked atomic are counted by
 * every worker. */
struct gw_failover_state {
    struct gw_fo_state sm; /* the site-mode machine, under failover.c's lock */
    uint64_t route;        /* atomic: mode, peer and best peer as one word (gw_failover_view) */
    int64_t since_ms;      /* unix ms the mode was entered */
    uint64_t switches;
    uint64_t warm_hits, warm_misses, warm_filled; /* atomic */
    uint64_t warm_peer_hits;                      /* atomic: local misses the peer had */
    uint64_t peer_reads, peer_read_errors;        /* atomic */
    uint64_t reads_retried; /* atomic: reads a local node failed, asked again at a peer */
};

struct gw_apply_shipper;

#define GW_VERSION "0.1.0"
/* What `version` answers: the memcached protocol level we speak, and who we are.
 * Clients that parse the number (libmemcached) read 1.6.18. */
#define GW_MC_VERSION "1.6.18-geogate-" GW_VERSION

struct gw_server {
    struct gw_config *cfg; /* shared, read-only; replaced only on reload */
    struct gw_worker *workers; /* nworkers client workers, then the WAN thread if any */
    int nworkers;              /* the ones that take clients */
    int nthreads;              /* all of them */
    struct gw_repl *repl;      /* NULL unless replicating to peers */
    struct gw_backfill *backfill; /* backfill.c's state */
    struct event_base *base;
    struct evconnlistener *listener;
    int listen_fd; /* atomic: the listener's socket, for `stats conns`; -1 when none */
    struct event *sig_term, *sig_int, *sig_hup;
    time_t started;
    int64_t curr_connections; /* shared, atomic */
    uint32_t max_connections; /* shared */
    uint32_t max_request_bytes;
    uint32_t max_value_bytes;
    uint32_t idle_timeout_ms;
    uint64_t client_output_limit;
    uint64_t generation;
    struct gw_pool *pool; /* current pool (main thread's reference) */
    int next_worker;
    int exit_code;
    bool draining;
    /* replication: items carry versions (docs/REPLICATION.md) when a wan: section exists */
    bool versioned;
    struct wan_hlc hlc; /* shared by every thread */
    const struct gw_apply_shipper *apply_ship; /* shared, read-only: set before the workers */
    uint32_t site_id;
    uint32_t tombstone_ttl_s;
    struct gw_failover_state fo;
    int lb_draining; /* atomic: admin drain, /health says 503 */
};

/* This site replicates: a wan: section is configured, so items carry versions, writes
 * ship to peers and reads may be served by them.  The one test of it; srv->repl is the
 * replication engine itself, which exists from a little later in start-up. */
static inline bool gw_server_replicates(const struct gw_server *srv)
{
    return srv->versioned;
}

/* Run the gateway until drained.  Returns the process exit code. */
int gw_server_run(struct gw_config *cfg);

#endif
