/*
 * route — see route.h.  gw_route_decide holds every rule; the rest gathers its facts.
 */
#include "gateway/routing/route.h"

#include "gateway/failover/failover.h"
#include "gateway/routing/pool.h"
#include "gateway/server.h"

static const char *const route_kind_names[GW_ROUTE_KIND_MAX] = {
    [GW_ROUTE_LOCAL] = "local",   [GW_ROUTE_PEER] = "peer",
    [GW_ROUTE_WARMUP] = "warmup", [GW_ROUTE_FAILED_OVER] = "failed_over",
    [GW_ROUTE_DOWN] = "down",
};

const char *gw_route_kind_name(enum gw_route_kind kind)
{
    return kind < GW_ROUTE_KIND_MAX ? route_kind_names[kind] : "?";
}

static struct gw_route route_to(enum gw_route_kind kind, uint32_t node, int peer)
{
    struct gw_route r = {.kind = kind, .node = node, .peer = peer};
    return r;
}

struct gw_route gw_route_decide(const struct gw_route_facts *f)
{
    /* A key whose node is down falls back to the best serving peer, when replicating. */
    int fallback = f->replicates ? f->site.best_peer : -1;
    bool failed_over = f->replicates && f->site.mode == GW_MODE_FAILED_OVER && f->site.peer >= 0;

    switch (f->op) {
    case GW_ROUTE_READ:
        if (failed_over) {
            return route_to(GW_ROUTE_FAILED_OVER, f->node, f->site.peer);
        }
        if (f->replicates && f->site.mode == GW_MODE_WARMUP && f->site.peer >= 0) {
            return route_to(GW_ROUTE_WARMUP, f->node, f->site.peer);
        }
        if (!f->node_usable) {
            return fallback >= 0 ? route_to(GW_ROUTE_PEER, f->node, fallback)
                                 : route_to(GW_ROUTE_DOWN, f->node, -1);
        }
        if (f->replicates && f->node_warming && fallback >= 0) {
            /* the node came back cold: its misses are read from the peer and filled */
            return route_to(GW_ROUTE_WARMUP, f->node, fallback);
        }
        return route_to(GW_ROUTE_LOCAL, f->node, -1);
    case GW_ROUTE_WRITE:
        /* Nowhere to write before anything else: a failed-over site still refuses a
         * write whose node is down while no peer serves. */
        if (!f->node_usable && fallback < 0) {
            return route_to(GW_ROUTE_DOWN, f->node, -1);
        }
        if (failed_over) {
            return route_to(GW_ROUTE_FAILED_OVER, f->node, f->site.peer);
        }
        if (!f->node_usable) {
            return route_to(GW_ROUTE_PEER, f->node, fallback);
        }
        return route_to(GW_ROUTE_LOCAL, f->node, -1);
    case GW_ROUTE_NODE:
    default:
        if (f->node_usable) {
            return route_to(GW_ROUTE_LOCAL, f->node, -1);
        }
        return fallback >= 0 ? route_to(GW_ROUTE_PEER, f->node, fallback)
                             : route_to(GW_ROUTE_DOWN, f->node, -1);
    }
}

/* The facts about the site for w: what failover published, when replicating. */
static void site_facts(struct gw_worker *w, struct gw_route_facts *f)
{
    f->replicates = gw_server_replicates(w->srv);
    if (f->replicates) {
        f->site = gw_failover_view(w->srv);
    } else {
        f->site.mode = GW_MODE_LOCAL;
        f->site.peer = f->site.best_peer = -1;
    }
}

struct gw_route gw_route_node(struct gw_worker *w, uint32_t node, enum gw_route_op op)
{
    struct gw_node *nd = &w->pool->nodes[node];
    struct gw_route_facts f;

    if (!gw_server_replicates(w->srv)) {
        /* What gw_route_decide answers without sites, on every request of a lone site:
         * without gathering the facts that cannot matter. */
        return route_to(gw_node_usable(nd) ? GW_ROUTE_LOCAL : GW_ROUTE_DOWN, node, -1);
    }
    f = (struct gw_route_facts){.op = op, .node = node, .node_usable = gw_node_usable(nd)};
    site_facts(w, &f);
    if (f.replicates) {
        f.node_warming = __atomic_load_n(&nd->warm_until_ms, __ATOMIC_ACQUIRE) > w->now_ms;
    }
    return gw_route_decide(&f);
}

struct gw_route gw_route_key(struct gw_worker *w, const char *key, uint32_t nkey,
                             enum gw_route_op op)
{
    return gw_route_node(w, gw_pool_route(w->pool, key, nkey), op);
}

struct gw_route gw_route_site(struct gw_worker *w)
{
    /* A read of a healthy, warm node: only the site's mode can send it elsewhere. */
    struct gw_route_facts f = {.op = GW_ROUTE_READ, .node_usable = true};
    struct gw_route r;

    if (!gw_server_replicates(w->srv)) {
        return route_to(GW_ROUTE_LOCAL, 0, -1);
    }
    site_facts(w, &f);
    r = gw_route_decide(&f);
    return r.kind == GW_ROUTE_FAILED_OVER || r.kind == GW_ROUTE_WARMUP
               ? r
               : route_to(GW_ROUTE_LOCAL, 0, -1);
}

int gw_route_fallback_peer(struct gw_worker *w)
{
    /* Where the key of a node that is down goes. */
    struct gw_route_facts f = {.op = GW_ROUTE_NODE, .node_usable = false};

    site_facts(w, &f);
    return gw_route_decide(&f).peer;
}
