/*
 * repl_int — the replication state shared by repl.c (the WAN thread: shipping, receiving,
 * set-up, stats) and repl_worker.c (the client workers: spooling writes, ack waits).
 * Not for other files: they use repl.h.
 */
#ifndef GEOGATE_REPL_INT_H
#define GEOGATE_REPL_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "gateway/base/config.h"
#include "gateway/base/log.h"
#include "gateway/replication/skew.h"
#include "wan/grpc_client.h"
#include "wan/grpc_server.h"
#include "wan/spool.h"

#include <errno.h>
#include <stdlib.h>

/* Room for `need` more bytes after `len` in a doubling buffer (first size `first`). */
static inline int repl_buf_room(uint8_t **buf, size_t *cap, size_t len, size_t need,
                                size_t first)
{
    if (*cap - len < need) {
        size_t c = *cap ? *cap : first;
        uint8_t *nb;
        while (c - len < need) {
            c *= 2;
        }
        nb = realloc(*buf, c);
        if (nb == NULL) {
            return -ENOMEM;
        }
        *buf = nb;
        *cap = c;
    }
    return 0;
}

struct tls_ctx;

#define REPL_INFLIGHT 64             /* batches in flight per peer */
#define REPL_COALESCE_MS 8           /* with batches in flight, a small batch waits this long
                                        for company (fewer WAN bytes per mutation) */
#define REPL_IDLE_COALESCE_MS 5      /* with nothing in flight, a batch of fewer than
                                        REPL_IDLE_BATCH waits this long for company (unless a
                                        write waits for its ack): the per-batch exchange costs
                                        ~89 WAN bytes, paid by ~3 mutations at 1000/s without */
#define REPL_IDLE_BATCH 64           /* and CPU at both ends (a wake-up, a TLS record, an ack):
                                        at 8 a fast peer took batches of ~24 at 6k sets/s and
                                        site a paid 1.23x the CPU per request of no `wan:`, at
                                        64 batches of ~49 and 1.15x (docs/BENCHMARKS.md) */
#define REPL_BATCH_MAX 512           /* mutations per batch */
#define REPL_BATCH_BYTES (512u << 10) /* bytes per batch */
#define REPL_TICK_MS 100
#define REPL_LAG_BUCKETS 24          /* 1 ms .. ~8 s, doubling */
#define REPL_CLOCK_EVERY_MS 1000     /* batches and acks carry our clock this often at most;
                                        a link idle this long carries a heartbeat */

struct repl_batch {
    uint64_t last_seq;
    uint64_t oldest_ms;
    uint32_t count;
};

struct gw_peer {
    struct gw_repl *repl;
    char *site;
    const struct gw_peer_conf *conf;
    struct wan_grpc_client *client;
    size_t addr;
    bool up;
    bool connecting;
    unsigned attempt;
    int64_t retry_at_ms;
    struct wan_spool_cursor *cursor;
    uint64_t acked;
    struct repl_batch batches[REPL_INFLIGHT];
    uint32_t inflight;
    /* counters, read by `stats peers` from other threads */
    uint64_t shipped;
    uint64_t acked_mutations;
    uint64_t reconnects;
    uint64_t newer_received; /* items the peer sent back because it held newer ones */
    uint64_t lag[REPL_LAG_BUCKETS];
    uint64_t lag_count;
    int64_t up_since_ms;
    char last_error[160];
    /* Fires when a held-back small batch is due: a timerfd of its own, armed only while a
     * batch is held, since a precise timer on the WAN thread's base would reprogram one on
     * every pass of its loop (epoll's own timeout rounds up a whole ms). */
    struct event *coalesce_ev;
    int coalesce_fd;
    bool coalesce_armed;
    /* health, from Health/Check every second while the link is up */
    bool serving;
    bool health_inflight;
    uint32_t rtt_ms;
    int64_t health_sent_ms;
    int64_t health_due_ms;
    /* records the spool lost for this peer (sent in ShipRequest.lost until acked) */
    uint64_t lost;       /* refreshed from the spool's peer stats once a second */
    uint64_t lost_seen;  /* what the peer's acks say it has taken note of */
    int64_t lost_due_ms;
    int64_t lost_sent_ms; /* last batch that carried only the loss (peer_announce_lost) */
    /* what this peer told us its spool lost for us (WAN thread; read by status) */
    uint64_t in_lost;      /* the last ShipRequest.lost acted on */
    uint64_t in_spool_id;
    uint64_t in_lost_total; /* summed over gaps */
    int64_t catchup_retry_ms; /* an owed catch-up is not (re)started before (catchup.h) */
    uint8_t *bbuf; /* the serialized ShipRequest being built (WAN thread) */
    size_t blen, bcap;
    /* its clock (docs/REPLICATION.md, "Clock skew"); WAN thread writes, others read */
    int64_t clock_offset_ms;          /* its clock minus ours, from the last batch or ack it sent */
    int64_t clock_measured_ms;        /* when (our unix ms); 0: not yet */
    uint64_t skew_refused;            /* its batches refused: versions beyond max_clock_skew */
    uint64_t skew_ahead_ms;           /* how far ahead the last refused one was */
    struct gw_log_gate skew_log;     /* its refused batches, logged once per interval */
    struct gw_log_gate skew_out_log; /* ours it refused, logged once per interval */
    struct gw_log_gate offset_log;   /* its clock off by more than the bound */
    int64_t last_send_ms;             /* our last batch or heartbeat to it */
    int64_t clock_sent_ms;            /* the last time one of them carried our clock */
};

struct gw_inbound {
    struct gw_repl *repl;
    struct gw_peer *peer; /* the configured peer it comes from (NULL: none) */
    struct wan_grpc_ship_stream *st;
    char site[64];
    bool busy;
    bool ending;
    bool closed;
    uint64_t last_seq;
    uint64_t applied;
    uint64_t rejected;
    uint64_t lost_seen; /* echoed in acks */
    int64_t clock_sent_ms; /* the last ack that carried our clock */
};

struct gw_repl {
    struct gw_server *srv;
    const struct gw_repl_hooks *hooks; /* failover and backfill, plugged in by server.c */
    struct gw_worker *w; /* the WAN thread */
    struct wan_spool *spool;
    enum gw_fsync_mode fsync;
    struct tls_ctx *tls_srv;
    struct tls_ctx *tls_cli;
    struct wan_grpc_server *server;
    struct gw_peer *peers;
    size_t npeers;
    struct event *kick_ev;
    struct event *tick_ev;
    int kicked; /* 1: workers do not wake the WAN thread (already woken, or not needed) */
    uint64_t rng;
    /* inbound totals (WAN thread writes, others read) */
    uint64_t in_batches;
    uint64_t in_applied;
    uint64_t in_rejected;
    uint64_t spool_errors;
    int ack_waiters; /* writes waiting for a peer's ack, all workers (atomic) */
    /* re-stamping our records stamped ahead of our clock (WAN thread; counters atomic) */
    /* Our records up to restamp_seq with versions above restamp_above were stamped by a
     * clock since put right (the process before this one, or this one before its clock
     * stepped back): re-stamped before they ship (record_ahead in repl.c). */
    uint64_t restamp_seq, restamp_above, restamp_resets;
    bool restamp_window_set;
    uint64_t restamp_done;    /* every such record up to this seq is re-stamped or replaced */
    uint64_t restamp_pending; /* the last seq of the run being re-stamped */
    bool restamp_running;
    int64_t restamp_retry_ms; /* after a failed run: not before this */
    uint64_t restamped, restamp_superseded;
    struct gw_log_gate restamp_log;
    uint64_t hlc_resets_seen, hlc_refused_seen; /* logged up to these */
    struct gw_log_gate refused_log;
    struct gw_catchup *catchup; /* catch-ups owed, on disk (WAN thread and backfill jobs) */
};

#endif
