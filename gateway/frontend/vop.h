/*
 * vop — versioned operations: how a replicating gateway (one with a `wan:` section)
 * carries out client writes so that every item in memcached holds its version in the
 * 32-byte header of docs/REPLICATION.md, and what it ships afterwards.  set/add/cas are
 * written blind with a fresh version; replace/append/prepend/incr/decr/touch are
 * read-modify-write (gets, compute, cas; retried on a lost race); delete writes a
 * tombstone.  Replies are exactly memcached's.  Worker loop only.  It does not parse
 * client input (client.c) or ship anything over the WAN itself (repl.c).
 */
#ifndef GEOGATE_VOP_H
#define GEOGATE_VOP_H

#include "gateway/store/item.h"
#include "gateway/types.h"
#include "wan/version.h"

/* A storage command whose data block (vlen bytes incl. CRLF, already checked) is at
 * the front of in.  Consumes it.  The reply goes into r (already queued on c). */
void gw_vop_store(struct gw_worker *w, struct gw_req *r, const struct gw_store_pending *st,
                  const char *key, uint32_t nkey, uint32_t flags, int32_t exptime,
                  uint64_t cas_unique, struct evbuffer *in, int remote_peer);

/* delete / incr / decr / touch on a versioned gateway.
 *
 * remote_peer >= 0 (the key's local node is down): the command is carried out against
 * that peer site instead: read there (Read RPC), decided here, and the new item spooled
 * and shipped as usual; the client's reply waits until that peer has acked it, so the
 * client reads its own write back from the peer.  A cas token is then the peer item's
 * version clock, as `gets` served by a peer reports it. */
void gw_vop_keyed(struct gw_worker *w, struct gw_req *r, uint32_t node, const struct mc_request *m,
                  int remote_peer);

/* Meta `md <key> I [T<ttl>]` (stale-while-revalidate): the live item is marked stale by
 * memcached itself (its value kept) and a stale mark ships with a fresh version, which
 * every peer applies to its copy when that copy is older (apply.c).  Answers DELETED, or
 * NOT_FOUND when there is no live item (then nothing ships). */
void gw_vop_invalidate(struct gw_worker *w, struct gw_req *r, uint32_t node, const char *key,
                       uint32_t nkey, bool has_ttl, int32_t ttl);

/* What a gat/gats returns for one key: the item as it was when touched (memcached's
 * gat returns the item and then applies the new expiry), with the cas it has after the
 * touch when want_cas. */
struct gw_touch_result {
    bool found;
    uint32_t flags;
    uint8_t *val; /* owned by the result: free() it */
    size_t len;
    uint64_t cas;
    bool failed; /* the node failed: the whole gat answers error */
    char error[160];
};

/* Touch one key as part of a gat/gats: new expiry, new version, shipped; then done(arg)
 * with res filled in. */
void gw_vop_touch(struct gw_worker *w, uint32_t node, const char *key, uint32_t nkey,
                  int32_t exptime, bool want_cas, struct gw_touch_result *res,
                  void (*done)(void *arg), void *arg);

/* Free the versioned operations the worker kept for reuse (its stop, after every client
 * and node connection is closed, so none is in use). */
void gw_vop_pool_release(struct gw_worker *w);

#endif
