/*
 * ingest — take items (protobuf Mutations) from a restore or a backfill and write them
 * into the site's pool with the same newest-wins rule as replication:
 *
 *   item ──expired──────────────> skipped_expired
 *        ──versioned────────────> batch of 256 ──gw_worker_call──> WAN thread (the client
 *        │                        workers when there is none): gw_apply_batch, newest wins,
 *        │                        up to 8 batches in flight; counts come back under a lock
 *        └──version 0 / no wan──> `add` over a connection of its own per node (anything
 *                                 present beats an item without a version)
 *
 * Items written this way are not shipped to peer sites: a restore or a backfill refills
 * this site, and what it brings is already at the site it came from.
 *
 * Blocking: one thread of its own uses an ingest (never a worker: it waits for them, nor
 * the main loop).
 */
#ifndef GEOGATE_INGEST_H
#define GEOGATE_INGEST_H

#include <stdatomic.h>
#include <stdint.h>

#include "proto/geogate_wan.pb-c.h"

struct gw_ingest;
struct gw_pool;
struct gw_server;

struct gw_ingest_counts {
    uint64_t applied;            /* written into the pool */
    uint64_t rejected_older;     /* the site already held the same or a newer version */
    uint64_t skipped_expired;    /* expiry already passed */
    uint64_t skipped_tombstones; /* tombstones, on a gateway without versions */
    uint64_t paced_rounds;       /* rounds of adds followed by a pause for clients */
};

/* pool is borrowed (the caller holds a reference until destroy); cancel may be NULL.
 * Returns 0 or -ENOMEM. */
int gw_ingest_create(struct gw_server *srv, struct gw_pool *pool, atomic_bool *cancel,
                     struct gw_ingest **out);

/* Take one item: m is an unpacked Mutation the ingest now owns (freed with
 * geogate__wan__v1__mutation__free_unpacked).  May wait for batches in flight.  Returns 0,
 * -ENOMEM, -EIO (a node did not take items; reason() says which) or -ECANCELED. */
int gw_ingest_take(struct gw_ingest *in, Geogate__Wan__V1__Mutation *m, uint32_t now);

/* As gw_ingest_take, for a borrowed item (copied first). */
int gw_ingest_take_copy(struct gw_ingest *in, const Geogate__Wan__V1__Mutation *m, uint32_t now);

/* Send what is still collected and wait until every batch is done.  Returns 0, -EIO,
 * -ENOMEM or -ECANCELED; counts (may be NULL) are the totals so far either way. */
int gw_ingest_flush(struct gw_ingest *in, struct gw_ingest_counts *counts);

/* The totals so far (batches in flight not included yet). */
void gw_ingest_counts(struct gw_ingest *in, struct gw_ingest_counts *counts);

/* Why the last call failed ("" if it did not). */
const char *gw_ingest_reason(const struct gw_ingest *in);

/* Drop what is collected and not sent, wait for batches in flight (unless cancelled), free. */
void gw_ingest_destroy(struct gw_ingest *in);

#endif
