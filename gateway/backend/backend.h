/*
 * backend — one worker's connection to one memcached node: connect, queue frags,
 * write them batched (everything queued in one loop iteration leaves in one write),
 * parse replies in order and hand each to its frag, detect timeouts and failures,
 * probe down nodes.  Runs on its worker's event loop only.  It does not decide
 * routing and does not build client replies (req.c does).
 */
#ifndef GEOGATE_BACKEND_H
#define GEOGATE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/types.h"

/* Create an unconnected backend (it connects on first use).  Returns NULL if out
 * of memory. */
struct gw_backend *gw_backend_create(struct gw_worker *w, struct gw_pool *pool,
                                     struct gw_node *node, uint32_t slot);

/* Fail whatever is pending with the node's error, close, free. */
void gw_backend_destroy(struct gw_backend *be);

/*
 * Queue frag and send line (copied) followed by ndata bytes moved out of data
 * (data may be NULL).  The reply will come back through req.c.  Never fails
 * synchronously: connection problems surface as the frag failing later.
 */
void gw_backend_send(struct gw_backend *be, struct gw_frag *frag, const char *line, size_t len,
                     struct evbuffer *data, size_t ndata);

/* gw_backend_send with the ndata bytes copied from memory at data. */
void gw_backend_send_bytes(struct gw_backend *be, struct gw_frag *frag, const char *line,
                           size_t len, const void *data, size_t ndata);

/*
 * Queue frag, a one-key get or gets (cmd) of key, which frag->req owns until the frag
 * is answered.  One-key reads queued back to back in one loop iteration leave as one
 * multi-key command: memcached answers that with one write instead of one per key.
 */
void gw_backend_send_get(struct gw_backend *be, struct gw_frag *frag, enum mc_cmd cmd,
                         const char *key, uint32_t nkey);

/* buf (a client's output, about to be freed) is no longer where a data block being
 * read may go: the rest of it is dropped. */
void gw_backend_forget_dst(struct gw_worker *w, const struct evbuffer *buf);

/* Timeouts and retirement; called by the worker's tick. */
void gw_backend_tick(struct gw_backend *be, int64_t now_ms);

/* Health tracking without client traffic: an idle connection to an up node sends
 * `version` every interval; failures count like any other (failure_limit). */
void gw_backend_ping(struct gw_backend *be, int64_t now_ms, uint32_t interval_ms);

/* Send a `version` probe for this backend's (down) node. */
void gw_backend_probe(struct gw_backend *be);

#endif
