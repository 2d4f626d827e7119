/*
 * restore — apply a snapshot file (gateway/transfer/snapshot.h) to the site's memcached pool with
 * the same newest-wins rule as replication: versioned records through gw_apply_batch on
 * the WAN thread (which applies what peers ship; the client workers when the gateway has
 * no peers), version-0 records (and every record on a gateway that does not
 * replicate, whose items carry no header) with a plain `add` over a connection of its own,
 * so they come back exactly as they were and never over anything present.
 *
 * The header is checked before anything is applied; records are then read in order and
 * applied in batches until the end record or the first bad record: nothing after a bad
 * record is applied, everything before it is.  Records whose expiry has passed are
 * skipped.  Applied items are not shipped to peer sites (a restore refills this site).
 *
 * Blocking: runs on the caller's thread, which must not be a worker (it waits for them)
 * nor the main loop (admin_xfer.c gives it a thread of its own).
 */
#ifndef GEOGATE_RESTORE_H
#define GEOGATE_RESTORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "gateway/transfer/snapshot.h"

struct evbuffer;
struct gw_pool;
struct gw_server;

enum gw_restore_status {
    GW_RESTORE_OK = 0,
    GW_RESTORE_BAD_HEADER,  /* not a snapshot, or its header is damaged: nothing applied */
    GW_RESTORE_BAD_VERSION, /* a format version this build does not read: nothing applied */
    GW_RESTORE_BAD_RECORD,  /* stopped at the first bad record (bad_offset) */
    GW_RESTORE_FAILED,      /* a local node failed to take items: stopped */
    GW_RESTORE_CANCELLED,   /* the gateway is stopping */
    GW_RESTORE_STATUS_MAX
};

/* "ok", "bad_header", ... for logs and JSON. */
const char *gw_restore_status_name(enum gw_restore_status s);

struct gw_restore_result {
    enum gw_restore_status status;
    struct gw_snap_header header; /* as far as it was read */
    uint64_t records;             /* good records read (before a bad one) */
    uint64_t applied;             /* written into the pool */
    uint64_t skipped_expired;     /* expiry already passed */
    uint64_t rejected_older;      /* the site already held the same or a newer version */
    uint64_t skipped_tombstones;  /* tombstones, on a gateway without versions */
    uint64_t paced_rounds;        /* rounds of adds paused for clients (ingest.c) */
    uint64_t bad_offset;          /* with BAD_*: byte offset of the first bad record */
    uint64_t bytes;               /* file size */
    char reason[256];             /* why it stopped, when not OK */
};

/*
 * Apply the snapshot in body (takes ownership; drained and freed) to pool (borrowed; the
 * caller holds a reference) through srv's WAN thread or client workers.  cancel may be NULL.  Fills
 * *res always (res->status says what happened, in more detail than the return code).
 * Returns 0, or
 *   -EPROTO           BAD_HEADER: not a snapshot, or a damaged header; nothing applied
 *   -EPROTONOSUPPORT  BAD_VERSION: another format version; nothing applied
 *   -EBADMSG          BAD_RECORD: a truncated or corrupt record at res->bad_offset
 *   -EIO              FAILED: a local node did not take items (res->reason)
 *   -ECANCELED        CANCELLED: *cancel was set
 */
int gw_restore_run(struct gw_server *srv, struct gw_pool *pool, struct evbuffer *body,
                   atomic_bool *cancel, struct gw_restore_result *res);

#endif
