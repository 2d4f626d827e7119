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

#include <stdint.h>

#include "gateway/types.h"
#include "proto/geogate_wan.pb-c.h"

struct wan_grpc_read_call;

typedef void (*gw_apply_done_fn)(void *arg, uint64_t applied, uint64_t rejected);

/* Apply req (takes ownership; freed when done) on worker w; done runs once, later. */
void gw_apply_batch(struct gw_worker *w, Geogate__Wan__V1__ShipRequest *req,
                    gw_apply_done_fn done, void *arg);

/* Answer a remote Read (takes ownership of req) with the items as held locally. */
void gw_apply_read(struct gw_worker *w, Geogate__Wan__V1__ReadRequest *req,
                   struct wan_grpc_read_call *call);

#endif
