/*
 * req — a client request from parse to reply: allocation, the per-node frags,
 * collecting backend replies (moved, not copied), putting multi-node retrievals
 * back into the client's key order, error replies, and the stats each reply
 * implies.  Runs on the owning worker's loop.  It does not parse client input
 * (client.c) or talk to sockets (backend.c).
 */
#ifndef GEOGATE_REQ_H
#define GEOGATE_REQ_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/types.h"

/* A new request of c (NULL: nobody waits for its reply) whose owner's callbacks are ops
 * (borrowed: a static table).  NULL when out of memory. */
struct gw_req *gw_req_new(struct gw_worker *w, struct gw_client *c, const struct gw_req_ops *ops,
                          enum mc_cmd cmd);
void gw_req_free(struct gw_req *r);

/* Free the worker's requests kept for reuse (at shutdown). */
void gw_req_pool_release(struct gw_worker *w);

/* The request's reply buffer, created on first use.  NULL if out of memory. */
struct evbuffer *gw_req_reply(struct gw_req *r);

/* Finish a request whose reply is complete: hand it to its owner (ops->done), or free
 * it when the client is gone. */
void gw_req_finish(struct gw_req *r);

/* Finish r right away with one reply line (no CRLF), unless noreply. */
void gw_req_finish_line(struct gw_req *r, const char *line);

/* The client socket the data block of frag's current VALUE streams to (its output is
 * where gw_req_value_dst sent it), or NULL when it goes anywhere else. */
struct gw_conn *gw_req_stream_conn(struct gw_frag *frag);

/* A VALUE reply for frag, of `bytes` data bytes (counted for the client's back-pressure):
 * where its header line and data block go (NULL: drop). */
struct evbuffer *gw_req_value_dst(struct gw_frag *frag, const char *key, uint32_t nkey,
                                  uint32_t bytes);

/* Where the next piece of a meta command's reply goes (bytes: a VA data block's size,
 * counted for the client's back-pressure), NULL: drop it. */
struct evbuffer *gw_req_meta_dst(struct gw_frag *frag, uint32_t bytes);

/* A meta command's reply ended (its MN came). */
void gw_req_frag_meta_end(struct gw_frag *frag);

/* The terminal reply line of frag (END, STORED, 42, an error...): takes `consumed`
 * bytes (line + CRLF) out of in and completes the frag. */
void gw_req_frag_line(struct gw_frag *frag, struct evbuffer *in, const char *line, size_t len,
                      size_t consumed);

/* A retrieval frag's reply ended with an END that was not its own (a merged one-key
 * get): as gw_req_frag_line with END, the END written here. */
void gw_req_frag_end(struct gw_frag *frag);

/* frag will get no reply: the node failed or is down. */
void gw_req_frag_fail(struct gw_frag *frag, const char *error);

/* Forget r's failure and any partial reply, to answer it another way (a retry). */
void gw_req_clear_failure(struct gw_req *r);

/* frag will get no reply because its node failed under it (timeout, lost connection):
 * a read may still be answered by a peer site (its owner's ops->retry_read). */
void gw_req_frag_lost(struct gw_frag *frag, const char *error);

#endif
