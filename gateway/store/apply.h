/*
 * apply — applying what peer sites ship, newest version wins, through the WAN thread's
 * own connections to the local pool; and answering their remote reads.  WAN loop only.
 *
 *   per mutation:  gets ──> local version >= incoming? rejected (and when the local
 *                           item is strictly newer it travels back to every peer)
 *                       └─> else cas over what is there (add when nothing is), and on a
 *                           lost race gets again
 *
 * A batch's mutations are applied concurrently (pipelined per node); the same key twice
 * in one batch keeps only its newest version.  The batch is done when every mutation is.
 */
#ifndef GEOGATE_APPLY_H
#define GEOGATE_APPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/store/item.h"
#include "gateway/types.h"
#include "proto/geogate_wan.pb-c.h"
#include "wan/version.h"

struct wan_grpc_read_call;

/*
 * How apply hands over what it wants every peer to receive, since the shipper sits above
 * it (replication): a newer local item travelling back (when the batch does not collect
 * them), a re-stamped item and a re-stamped flush.  Registered once, before the workers
 * start, as srv->apply_ship (server.c wires it; NULL: nothing ships).  Called on the
 * applying worker's thread.
 */
struct gw_apply_shipper {
    /* Spool an item held here for every peer (replication.rules apply); it borrows it. */
    void (*item)(struct gw_worker *w, const struct gw_item *it);
    /* Spool a flush_all, delay seconds from now (0: now), with a fresh version. */
    void (*flush)(struct gw_worker *w, int32_t delay);
};

/*
 * A batch is done.  failed: some mutation could not be applied (a local node failed), so
 * the batch must not be acked.  newer/n_newer: items held here in a strictly newer
 * version than ones the batch carried, for the sender (borrowed during the call).
 */
typedef void (*gw_apply_done_fn)(void *arg, uint64_t applied, uint64_t rejected, bool failed,
                                 Geogate__Wan__V1__Mutation **newer, size_t n_newer);

/* Apply req (takes ownership; freed when done) on worker w; done runs once, later.
 * With collect_newer, newer local items go back through done (to the sender);
 * without, they go to srv->apply_ship for every peer.  An item whose version is more than
 * replication.max_clock_skew ahead of our clock is not applied (counted as rejected, and
 * by the HLC's `refused`): our clock could not pass it (docs/REPLICATION.md, "Clock skew"). */
void gw_apply_batch(struct gw_worker *w, Geogate__Wan__V1__ShipRequest *req,
                    bool collect_newer, gw_apply_done_fn done, void *arg);

/* gw_apply_batch (without collecting newer items) of a request the caller keeps: it is
 * copied whole (packed and unpacked by protobuf-c), so the apply owns what it frees.
 * Out of memory: nothing is applied and done is not called. */
void gw_apply_batch_of(struct gw_worker *w, const Geogate__Wan__V1__ShipRequest *req,
                       gw_apply_done_fn done, void *arg);

/* As gw_apply_batch with collect_newer, for a batch of a peer's Ship stream: an item
 * beyond the clock bound fails the batch instead (done says failed: it must not be acked,
 * so it stays in the sender's spool).  The caller refuses such batches before they get
 * here; this only covers a clock that stepped back in between. */
void gw_apply_ship(struct gw_worker *w, Geogate__Wan__V1__ShipRequest *req, gw_apply_done_fn done,
                   void *arg);

/* Re-stamp our own items that our clock stamped more than max_clock_skew ahead of what it
 * reads now (it was wrong then, or is now; peers refuse them either way): for each
 * mutation of req (takes ownership) whose key still holds exactly that version locally,
 * write the same item with a fresh version and hand it to srv->apply_ship for every
 * peer (gw_apply_restamp_decide says which).  done gets applied = re-stamped, rejected =
 * found replaced by a later write, failed = a local node failed (try again later).  A flush
 * in req goes to srv->apply_ship again, with a fresh version. */
void gw_apply_restamp(struct gw_worker *w, Geogate__Wan__V1__ShipRequest *req,
                      gw_apply_done_fn done, void *arg);

/* Write one item of our own into the local pool, newest-wins (never over a newer local
 * item); fire and forget.  For writes carried out at a peer while its node is up. */
void gw_apply_local_item(struct gw_worker *w, const char *key, uint32_t nkey,
                         const struct wan_item_header *hdr, const uint8_t *value, size_t vlen);

/* Answer a remote Read (takes ownership of req) with the items as held locally. */
void gw_apply_read(struct gw_worker *w, Geogate__Wan__V1__ReadRequest *req,
                   struct wan_grpc_read_call *call);

#endif
