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

/* r (one of c's requests) has its full reply. */
void gw_client_req_done(struct gw_client *c, struct gw_req *r);

/* Close c once what is already in its output is written; used when a reply broke
 * off half-way and the stream can no longer be trusted. */
void gw_client_abort(struct gw_client *c);

/* A multi-step command is in flight: parse nothing more until it is released. */
void gw_client_barrier_hold(struct gw_client *c);
void gw_client_barrier_release(struct gw_client *c);

/* For modules that answer requests asynchronously (remote.c): queue a new request on
 * c, in order (NULL and c closed when out of memory), or answer one error line now. */
struct gw_req *gw_client_new_req(struct gw_client *c, enum mc_cmd cmd);
void gw_client_reply_error(struct gw_client *c, const char *line);

/* A get/gets whose node failed under it (req.c, r->node_lost): ask a serving peer site
 * instead and answer r from there.  false: no peer, or not such a read; r fails. */
bool gw_client_retry_read(struct gw_req *r);

/* gat/gats on a replicating gateway (client_gat.c): m is answered in c's order. */
void gw_client_versioned_gat(struct gw_client *c, const struct mc_request *m);

/* `stats` (client_stats.c): the general counters, each node's health, `stats reset`. */
void gw_client_stats_general(struct gw_worker *w, struct evbuffer *b);
void gw_client_stats_nodes(struct gw_worker *w, struct evbuffer *b);
void gw_client_stats_reset(struct gw_server *srv);

/* Stop taking new requests; close once what is in flight is answered. */
void gw_client_drain(struct gw_client *c);

/* Every tick: resume clients whose socket has room again, close idle ones
 * (idle_timeout). */
void gw_client_tick(struct gw_worker *w, int64_t now);

/* Free clients closed during this loop iteration (never inside their callbacks). */
void gw_client_reap(struct gw_worker *w);

#endif
