/*
 * backend_worker — a worker's connections to the pool's nodes over the worker's life:
 * made when it starts, matched to the new pool on a reload (connections to nodes that stay
 * are kept), timed out, kept alive and probed on its tick, closed when it stops.  These
 * are worker hooks (loop/hooks.h) that server.c registers; they run on the worker's thread
 * (the start hook on the thread that starts it, before its loop runs).  One connection's
 * own work (batching, replies, failures) is backend.c's.
 */
#ifndef GEOGATE_BACKEND_WORKER_H
#define GEOGATE_BACKEND_WORKER_H

#include <stdint.h>

#include "gateway/types.h"

/* Start hook: take a reference to the server's current pool and make w's connections
 * for it.  Returns 0 or -ENOMEM (w holds nothing then). */
int gw_backend_worker_start(struct gw_worker *w);

/* Reload hook: move w onto pool (takes its reference), keeping the connections to nodes
 * that stay; those to nodes that left finish their requests, then close.  Out of memory,
 * w keeps its pool and drops the new one. */
void gw_backend_worker_reload(struct gw_worker *w, struct gw_pool *pool);

/*
 * A connection of its own to the pool's node `node`, for one long command whose reply
 * must not hold up everyone's shared connection (lru_crawler metadump: memcached also
 * reads nothing more on a connection until the dump is over).  Queue internal requests
 * on it right away; the worker's tick closes and frees it once none is pending.  NULL
 * when out of memory.
 */
struct gw_backend *gw_backend_oneshot(struct gw_worker *w, uint32_t node);

/* Tick hooks, in this order in the tick (see server.c): timeouts of every connection and
 * closing retired ones that finished; a keep-alive on the WAN thread's connections; a
 * probe of each down node this worker claims. */
void gw_backend_worker_tick(struct gw_worker *w, int64_t now_ms);
void gw_backend_worker_ping(struct gw_worker *w, int64_t now_ms);
void gw_backend_worker_probe(struct gw_worker *w, int64_t now_ms);

/* Stop hook: close every connection (each fails what it still has pending). */
void gw_backend_worker_close(struct gw_worker *w);

/* Stop hook, after what may still read w->pool: free the connection table and drop the
 * pool reference.  Also the undo of gw_backend_worker_start (closes what is still open). */
void gw_backend_worker_release(struct gw_worker *w);

#endif
