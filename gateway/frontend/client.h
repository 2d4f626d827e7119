/*
 * client — one memcached client connection on a worker: reads and frames requests,
 * answers what the gateway answers itself, sends the rest through the routing step
 * to backends, and writes replies strictly in request order.  Worker loop only.
 */
#ifndef GEOGATE_CLIENT_H
#define GEOGATE_CLIENT_H

#include "gateway/types.h"

/* Adopt an accepted socket.  Closes fd on failure. */
void gw_client_accept(struct gw_worker *w, int fd);

/* A multi-step command is in flight: parse nothing more until it is released.  (The
 * modules below the frontend reach them through a request's ops.) */
void gw_client_barrier_hold(struct gw_client *c);
void gw_client_barrier_release(struct gw_client *c);

/* For client_cmds.c, which answers requests asynchronously: queue a new request on c, in
 * order (NULL and c closed when out of memory), or answer one error line now. */
struct gw_req *gw_client_new_req(struct gw_client *c, enum mc_cmd cmd);
void gw_client_reply_error(struct gw_client *c, const char *line);

/* Meta commands (client_cmds.c): m, a mg/ms/md/ma/me to forward, whose line as the client
 * sent it is line[0..len); an ms's data block is in (in, or at flat when in is NULL); an
 * ms refused as too large drops the old item as memcached does. */
void gw_client_meta(struct gw_client *c, const struct mc_request *m, const char *line, size_t len);
void gw_client_meta_store(struct gw_client *c, struct evbuffer *in, const char *flat);
void gw_client_meta_drop(struct gw_client *c, const struct mc_request *m);

/* gat/gats on a replicating gateway (client_cmds.c): m is answered in c's order. */
void gw_client_versioned_gat(struct gw_client *c, const struct mc_request *m);

/*
 * `stats [sub]` (client_stats.c) answers r, a request of its client's: the gateway's own
 * (none, settings, conns, nodes, peers, reset), the sum over the pool's nodes (slabs,
 * items, sizes: gw_client_admin), or memcached's answer to the rest (README.md,
 * "Admin commands").
 */
void gw_client_stats(struct gw_req *r, const struct mc_request *m);

/*
 * Answer r by asking every node of the pool (client_admin.c): m is `stats slabs|items|
 * sizes` (combined), `lru_crawler metadump` (concatenated) or `cache_memlimit` (OK when
 * every node says OK).  A node that is down: its SERVER_ERROR.
 */
void gw_client_admin(struct gw_req *r, const struct mc_request *m);

/* Worker drain hook: every client stops taking requests (client_drain). */
void gw_client_drain_all(struct gw_worker *w);

/* Worker stop hook, once its loop is over: close every client now, whatever it is still
 * owed, and free it. */
void gw_client_close_all(struct gw_worker *w);

/* Every tick: resume clients whose socket has room again, close idle ones
 * (idle_timeout). */
void gw_client_tick(struct gw_worker *w, int64_t now);

/* Free clients closed during this loop iteration (never inside their callbacks). */
void gw_client_reap(struct gw_worker *w);

#endif
