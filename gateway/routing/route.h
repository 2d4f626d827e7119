/*
 * route — the one routing step every keyed request passes through: where the key's
 * command is carried out.
 *
 *                      ┌─ site failed over ───────────────> FAILED_OVER(peer)
 *   key ─> local node ─┼─ site warming up (reads) ────────> WARMUP(peer)
 *          (ketama)    ├─ node down, a peer serving ──────> PEER(best peer)
 *                      ├─ node down, no peer ─────────────> DOWN
 *                      ├─ node back cold (reads) ─────────> WARMUP(best peer)
 *                      └─ otherwise ──────────────────────> LOCAL
 *
 * The decision is a pure function of what failover publishes (gw_failover_view), the
 * node's health and whether the site replicates (gw_route_decide); the client side acts
 * on the answer and never reads failover state itself.  It neither sends nor answers
 * anything.  Worker loop only (any thread for gw_route_decide).
 */
#ifndef GEOGATE_ROUTE_H
#define GEOGATE_ROUTE_H

#include <stdbool.h>
#include <stdint.h>

#include "gateway/failover/failover.h"
#include "gateway/types.h"

enum gw_route_kind {
    GW_ROUTE_LOCAL = 0,   /* local node `node` */
    GW_ROUTE_PEER,        /* node `node` is down: peer site `peer` serves the key */
    GW_ROUTE_WARMUP,      /* read locally, misses from peer site `peer`, filled back */
    GW_ROUTE_FAILED_OVER, /* the site is failed over: peer site `peer` serves it */
    GW_ROUTE_DOWN,        /* node `node` is down and no peer site can serve the key */
    GW_ROUTE_KIND_MAX
};

/* What the request does with the key: the answers differ. */
enum gw_route_op {
    GW_ROUTE_READ = 0, /* get/gets/gat: every answer possible */
    GW_ROUTE_WRITE,    /* storage, delete, incr/decr, touch: no warm-up; a failed-over
                        * site writes at its peer so that its reads see the write */
    GW_ROUTE_NODE,     /* only the key's node itself: LOCAL, else PEER or DOWN (a touch
                        * on behalf of gat, a write whose node went down meanwhile) */
    GW_ROUTE_OP_MAX
};

struct gw_route {
    enum gw_route_kind kind;
    uint32_t node; /* the key's local node, whatever the kind */
    int peer;      /* index into cfg->wan.peers for PEER, WARMUP, FAILED_OVER; else -1 */
};

/* Everything a decision looks at. */
struct gw_route_facts {
    enum gw_route_op op;
    bool replicates;              /* gw_server_replicates() */
    struct gw_failover_view site; /* as failover last published it */
    uint32_t node;
    bool node_usable;
    bool node_warming; /* back from down and still cold */
};

/* The decision itself (pure; tests/unit/test_route.c). */
struct gw_route gw_route_decide(const struct gw_route_facts *f);

/* Route key for op on worker w (its pool, now). */
struct gw_route gw_route_key(struct gw_worker *w, const char *key, uint32_t nkey,
                             enum gw_route_op op);

/* Route a key whose node is known already (a request that outlived a decision). */
struct gw_route gw_route_node(struct gw_worker *w, uint32_t node, enum gw_route_op op);

/* For a whole retrieval, before its keys: FAILED_OVER(peer) or WARMUP(peer) when the
 * site reads from a peer, else LOCAL (route each key; node and peer are then unset). */
struct gw_route gw_route_site(struct gw_worker *w);

/* The peer site a read that failed on its local node is asked again, or -1. */
int gw_route_fallback_peer(struct gw_worker *w);

const char *gw_route_kind_name(enum gw_route_kind kind);

#endif
