/*
 * backfill — bring this site up to date from a peer site's current contents, when
 * replication alone cannot (a new site, or a peer whose spool lost records meant for us).
 *
 *   pulling site (a job thread of its own)          peer site (WAN listener)
 *   ────────────────────────────────────────        ──────────────────────────────────────
 *   link (TLS 1.3, no Ship stream) ──Backfill(prefix, rate, resume)──> serve: a thread walks
 *                                                    the pool (gw_enum_run: metadump, sorted
 *                                                    keys per node, batched gets), paced to
 *                                                    `rate` items/s, 8 batches queued at most
 *   batch ──gw_ingest (newest wins)──> pool <──────  BackfillBatch{items, cursor} as the
 *     cursor kept                                    caller's HTTP/2 window allows
 *   link lost ── backoff ──> reconnect ──Backfill(resume = last cursor)──> skips what was sent
 *   grpc-status OK ──> flush ──> done (summary in /backfill, /status, /metrics, log)
 *
 * A cursor is (node index, node name, last key of the node's sorted key list): a resumed
 * walk starts after it.  Keys written after the walk passed them arrive by replication.
 * One job runs at a time per gateway; the serving side takes any number of calls.
 */
#ifndef GEOGATE_BACKFILL_H
#define GEOGATE_BACKFILL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/geogate_wan.pb-c.h"

struct event_base;
struct evbuffer;
struct gw_pool;
struct gw_server;
struct wan_grpc_backfill_call;

/* ---- pulling from a peer ---- */

struct gw_catchup;
struct gw_catchup_entry;

struct gw_backfill_params {
    struct gw_pool *pool; /* the caller thread's current pool (a reference is taken) */
    const char *from;   /* peer site name (configured under wan.peers) */
    const char *prefix; /* NULL or "": every key */
    int64_t rate;       /* items/s the peer may send; 0 no limit; < 0 replication.backfill_rate */
    bool automatic;     /* started by the gateway itself (catch-up), not an operator */
    const char *why;    /* for the log and /status */
    /* A catch-up (automatic) only, else NULL: where the job records how far it got
     * (borrowed; outlives every job), and the entry it starts from (copied: its cursor,
     * items so far, generation).  The job clears the entry when it is done, or cancelled
     * other than by the gateway stopping. */
    struct gw_catchup *catchup;
    const struct gw_catchup_entry *resume;
};

/* Set up the backfill state of srv (before the workers start): 0 or -ENOMEM.  shutdown
 * cancels and joins a running job (while the workers still run: it waits for them); free
 * releases the state once every thread has stopped (after gw_backfill_serve_stop_all). */
int gw_backfill_init(struct gw_server *srv);
void gw_backfill_shutdown(struct gw_server *srv);
void gw_backfill_free(struct gw_server *srv);

/* Start a job.  Any thread.  Returns 0, or with err filled:
 *   -ENOTCONN  no replication configured;  -ENOENT  not a configured peer site;
 *   -EBUSY     a job is running;  -EINVAL  bad prefix;  -ENOMEM */
int gw_backfill_start(struct gw_server *srv, const struct gw_backfill_params *p, char *err,
                      size_t errlen);

/* Cancel the running job.  Returns 0 or -ENOENT (none running). */
int gw_backfill_cancel(struct gw_server *srv);

/* The running or last job as a JSON object ({"state":"none"} before the first). */
void gw_backfill_json(struct gw_server *srv, struct evbuffer *out);

/* Prometheus lines (HELP/TYPE included). */
void gw_backfill_metrics(struct gw_server *srv, struct evbuffer *out);

struct gw_repl_hooks;

/* Fill in the backfill part of replication's hooks (repl.h): serving peers' Backfill
 * calls, and catch-ups started at replication's request (automatic, at
 * replication.backfill_rate).  The other members are left as they are. */
void gw_backfill_repl_hooks(struct gw_repl_hooks *hooks);

/* ---- the cursor (exposed for unit tests) ---- */

#define GW_BACKFILL_CURSOR_MAX (4 + 1 + 255 + 1 + 250)

/* Encode (node, node label, last key) into out (GW_BACKFILL_CURSOR_MAX bytes); returns the
 * length. */
size_t gw_backfill_cursor_encode(uint32_t node, const char *label, const char *key, size_t nkey,
                                 uint8_t *out);
/* Decode; returns 0 or -EINVAL.  label and key point into buf. */
int gw_backfill_cursor_decode(const uint8_t *buf, size_t len, uint32_t *node, const char **label,
                              size_t *nlabel, const char **key, size_t *nkey);

#endif
