/*
 * route — the one routing step every keyed request passes through.  Today it has
 * one answer: the local pool's node for the key (or "that node is down").  Site
 * failover, per-key fallback to a peer and warm-up extend this step and nothing
 * else in the protocol code.  Worker loop only; pure lookup, no I/O.
 */
#ifndef GEOGATE_ROUTE_H
#define GEOGATE_ROUTE_H

#include <stdint.h>

#include "gateway/types.h"

enum gw_route_kind {
    GW_ROUTE_LOCAL = 0, /* send to local node `node` */
    GW_ROUTE_DOWN,      /* the key's node is down and nothing else can serve it */
    GW_ROUTE_KIND_MAX
};

struct gw_route {
    enum gw_route_kind kind;
    uint32_t node;
};

struct gw_route gw_route_key(struct gw_worker *w, const char *key, uint32_t nkey);

const char *gw_route_kind_name(enum gw_route_kind kind);

#endif
