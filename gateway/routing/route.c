/*
 * route — see route.h.
 */
#include "gateway/routing/route.h"

#include "gateway/routing/pool.h"

static const char *const route_kind_names[GW_ROUTE_KIND_MAX] = {
    [GW_ROUTE_LOCAL] = "local",
    [GW_ROUTE_DOWN] = "down",
};

const char *gw_route_kind_name(enum gw_route_kind kind)
{
    return kind < GW_ROUTE_KIND_MAX ? route_kind_names[kind] : "?";
}

struct gw_route gw_route_key(struct gw_worker *w, const char *key, uint32_t nkey)
{
    struct gw_route r;

    r.node = gw_pool_route(w->pool, key, nkey);
    r.kind = gw_node_usable(&w->pool->nodes[r.node]) ? GW_ROUTE_LOCAL : GW_ROUTE_DOWN;
    return r;
}
