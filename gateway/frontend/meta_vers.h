/*
 * meta_vers — the meta commands on a replicating gateway: mg read through the version
 * header, ms/md/ma carried out by their text twins (vop.c) so they get versions and ship,
 * and the twin's reply put in meta words.  Worker loop only.
 */
#ifndef GEOGATE_META_VERS_H
#define GEOGATE_META_VERS_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/types.h"

/* mg / me / md / ma whose line (as the client sent it, no CRLF) is line[0..len), routed to
 * node (or, for a write, carried out at remote_peer >= 0).  r (queued, pending) is
 * answered. */
void gw_meta_vers_keyed(struct gw_worker *w, struct gw_req *r, const char *line, size_t len,
                        enum mc_cmd cmd, uint32_t node, int remote_peer);

/* An ms whose line is st->meta_line and whose data block (st->vlen bytes) is at the
 * front of in: consumed, and r answered. */
void gw_meta_vers_store(struct gw_worker *w, struct gw_req *r, struct gw_store_pending *st,
                        struct evbuffer *in);

/* r (r->meta_x set) has its text twin's reply: rewrite it in meta words. */
void gw_meta_vers_reply(struct gw_req *r);

#endif
