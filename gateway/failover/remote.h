/*
 * remote — reads served by a peer site: whole-site failover (every read from the peer),
 * per-key fallback (a key whose local node is down), and warm-up (a local miss is read
 * from the peer, answered, and added locally with its original expiry and version).
 * Each worker keeps its own gRPC link to every peer for these reads (WAN traffic for
 * replication stays on the WAN thread).  Worker loop only.
 *
 *   client get ──route──> remote_read: Read RPC (all keys) ──> VALUE lines, END
 *   client get ──warm-up──> local gets (per node) ──> misses ──Read RPC──> answer,
 *                           and fill: newest-wins add of what the peer had (apply.c)
 */
#ifndef GEOGATE_REMOTE_H
#define GEOGATE_REMOTE_H

#include "gateway/types.h"
#include "proto/geogate_wan.pb-c.h"

/* Open this worker's links to every peer (on the worker's thread; via gw_worker_call). */
int gw_remote_start(void *worker);
void gw_remote_stop(struct gw_worker *w);

/* Redial links that are down (worker tick). */
void gw_remote_tick(struct gw_worker *w, int64_t now_ms);

/* Answer r, retrieval m (get/gets/gat/gats: gat/gats do not touch at a peer), from peer
 * `peer` (index into cfg->wan.peers).  r is its owner's request, already queued in order
 * (the owner's callbacks in r->ops take the reply); an error finishes r with its line. */
void gw_remote_retrieval(struct gw_req *r, const struct mc_request *m, int peer);

/* Read one key from `peer` for a read-modify-write that falls back to it (vop.c):
 * done runs once with the peer's item (NULL: absent) or an error line. */
void gw_remote_read_key(struct gw_worker *w, int peer, const char *key, uint32_t nkey,
                        void (*done)(void *arg, const char *error,
                                     const Geogate__Wan__V1__ReadItem *item),
                        void *arg);

/* Answer r, a get/gets whose local node failed (its partial reply is discarded), from
 * `peer` instead: keys are what it asked for, in the client's order. */
void gw_remote_retry(struct gw_req *r, const struct mc_token *keys, uint32_t nkeys, int peer);

/* Warm-up read of r (as gw_remote_retrieval): local first, misses from `peer`, filled
 * locally. */
void gw_remote_warm_retrieval(struct gw_req *r, const struct mc_request *m, int peer);

#endif
