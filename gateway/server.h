/*
 * server — the process: the loaded config, the listener on the main thread, the
 * worker threads, signals (SIGTERM drains, SIGHUP reloads the pool), connection
 * limits.  The main thread owns it; workers read the fields marked shared.
 */
#ifndef GEOGATE_SERVER_H
#define GEOGATE_SERVER_H

#include <stdint.h>
#include <time.h>

#include "gateway/types.h"
#include "wan/version.h"

/* Failover state (gateway/failover/failover.c); fields marked atomic are read on the request
 * path by every worker. */
struct gw_failover_state {
    int mode; /* atomic: enum gw_site_mode */
    int peer; /* atomic: index into cfg->wan.peers, -1 none */
    bool forced;
    int64_t since_ms;
    int64_t healthy_since_ms;
    uint32_t last_nodes_up;
    int64_t warmup_started_ms;
    int64_t win_start_ms;
    uint64_t win_hits, win_misses, win_peer_hits;
    double last_ratio;
    uint64_t switches;
    uint64_t warm_hits, warm_misses, warm_filled; /* atomic */
    uint64_t warm_peer_hits;                      /* atomic: local misses the peer had */
    uint64_t peer_reads, peer_read_errors;        /* atomic */
    uint64_t reads_retried; /* atomic: reads a local node failed, asked again at a peer */
    int best_peer; /* atomic: the best serving peer now (per-key fallback), -1 none */
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

/* Run the gateway until drained.  Returns the process exit code. */
int gw_server_run(struct gw_config *cfg);

#endif
