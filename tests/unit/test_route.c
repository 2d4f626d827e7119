/*
 * test_route — gateway/routing/route.c: the one routing step as a pure decision.  For
 * reads, writes and node-only routing: a site that does not replicate (LOCAL or DOWN
 * only), failed over, warming up, a key whose node is down with and without a serving
 * peer, a node back from down and still cold; then the wrappers that gather those facts
 * from a worker (a real pool built from a config, no thread, no socket).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/base/config.h"
#include "gateway/routing/pool.h"
#include "gateway/routing/route.h"
#include "gateway/server.h"

/* facts: op, replicating, site mode, its peer, best peer, node usable, node warming */
static struct gw_route decide(enum gw_route_op op, bool replicates, enum gw_site_mode mode,
                              int peer, int best, bool usable, bool warming)
{
    struct gw_route_facts f = {
        .op = op,
        .replicates = replicates,
        .site = {.mode = mode, .peer = peer, .best_peer = best},
        .node = 3,
        .node_usable = usable,
        .node_warming = warming,
    };
    struct gw_route r = gw_route_decide(&f);

    assert_int_equal(r.node, 3); /* the key's node, whatever the answer */
    return r;
}

#define ASSERT_ROUTE(r, k, p)                                                                      \
    do {                                                                                           \
        struct gw_route r_ = (r);                                                                  \
        assert_string_equal(gw_route_kind_name(r_.kind), gw_route_kind_name(k));                   \
        assert_int_equal(r_.peer, (p));                                                            \
    } while (0)

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(gw_route_kind_name(GW_ROUTE_LOCAL), "local");
    assert_string_equal(gw_route_kind_name(GW_ROUTE_PEER), "peer");
    assert_string_equal(gw_route_kind_name(GW_ROUTE_WARMUP), "warmup");
    assert_string_equal(gw_route_kind_name(GW_ROUTE_FAILED_OVER), "failed_over");
    assert_string_equal(gw_route_kind_name(GW_ROUTE_DOWN), "down");
    assert_string_equal(gw_route_kind_name(GW_ROUTE_KIND_MAX), "?");
}

/* Without replication nothing but the local node: failover state is ignored. */
static void test_single_site(void **state)
{
    (void)state;
    for (int op = 0; op < GW_ROUTE_OP_MAX; op++) {
        ASSERT_ROUTE(decide(op, false, GW_MODE_LOCAL, -1, -1, true, false), GW_ROUTE_LOCAL, -1);
        ASSERT_ROUTE(decide(op, false, GW_MODE_LOCAL, -1, -1, false, false), GW_ROUTE_DOWN, -1);
        ASSERT_ROUTE(decide(op, false, GW_MODE_FAILED_OVER, 1, 1, true, true), GW_ROUTE_LOCAL, -1);
        ASSERT_ROUTE(decide(op, false, GW_MODE_WARMUP, 1, 1, false, true), GW_ROUTE_DOWN, -1);
    }
}

static void test_read(void **state)
{
    (void)state;
    /* normal */
    ASSERT_ROUTE(decide(GW_ROUTE_READ, true, GW_MODE_LOCAL, -1, 0, true, false), GW_ROUTE_LOCAL,
                 -1);
    /* failed over: every read to the site's peer, whatever the node */
    ASSERT_ROUTE(decide(GW_ROUTE_READ, true, GW_MODE_FAILED_OVER, 1, 0, true, false),
                 GW_ROUTE_FAILED_OVER, 1);
    ASSERT_ROUTE(decide(GW_ROUTE_READ, true, GW_MODE_FAILED_OVER, 1, -1, false, false),
                 GW_ROUTE_FAILED_OVER, 1);
    /* site warming up: read through to its peer */
    ASSERT_ROUTE(decide(GW_ROUTE_READ, true, GW_MODE_WARMUP, 1, 0, true, false), GW_ROUTE_WARMUP,
                 1);
    /* a mode without a peer decides nothing */
    ASSERT_ROUTE(decide(GW_ROUTE_READ, true, GW_MODE_FAILED_OVER, -1, -1, true, false),
                 GW_ROUTE_LOCAL, -1);
    ASSERT_ROUTE(decide(GW_ROUTE_READ, true, GW_MODE_WARMUP, -1, -1, true, false), GW_ROUTE_LOCAL,
                 -1);
    /* node down: the best serving peer, else down */
    ASSERT_ROUTE(decide(GW_ROUTE_READ, true, GW_MODE_LOCAL, -1, 2, false, false), GW_ROUTE_PEER, 2);
    ASSERT_ROUTE(decide(GW_ROUTE_READ, true, GW_MODE_LOCAL, -1, -1, false, false), GW_ROUTE_DOWN,
                 -1);
    /* node back cold: warm-up through the best peer, or plain local without one */
    ASSERT_ROUTE(decide(GW_ROUTE_READ, true, GW_MODE_LOCAL, -1, 2, true, true), GW_ROUTE_WARMUP, 2);
    ASSERT_ROUTE(decide(GW_ROUTE_READ, true, GW_MODE_LOCAL, -1, -1, true, true), GW_ROUTE_LOCAL,
                 -1);
}

static void test_write(void **state)
{
    (void)state;
    ASSERT_ROUTE(decide(GW_ROUTE_WRITE, true, GW_MODE_LOCAL, -1, 0, true, false), GW_ROUTE_LOCAL,
                 -1);
    /* failed over: written at the peer the reads come from */
    ASSERT_ROUTE(decide(GW_ROUTE_WRITE, true, GW_MODE_FAILED_OVER, 1, 0, true, false),
                 GW_ROUTE_FAILED_OVER, 1);
    ASSERT_ROUTE(decide(GW_ROUTE_WRITE, true, GW_MODE_FAILED_OVER, 1, 0, false, false),
                 GW_ROUTE_FAILED_OVER, 1);
    /* ...but a node down with no serving peer refuses first */
    ASSERT_ROUTE(decide(GW_ROUTE_WRITE, true, GW_MODE_FAILED_OVER, 1, -1, false, false),
                 GW_ROUTE_DOWN, -1);
    /* warm-up is for reads: writes stay local */
    ASSERT_ROUTE(decide(GW_ROUTE_WRITE, true, GW_MODE_WARMUP, 1, 0, true, true), GW_ROUTE_LOCAL,
                 -1);
    /* node down */
    ASSERT_ROUTE(decide(GW_ROUTE_WRITE, true, GW_MODE_LOCAL, -1, 2, false, false), GW_ROUTE_PEER,
                 2);
    ASSERT_ROUTE(decide(GW_ROUTE_WRITE, true, GW_MODE_WARMUP, 1, 2, false, false), GW_ROUTE_PEER,
                 2);
    ASSERT_ROUTE(decide(GW_ROUTE_WRITE, true, GW_MODE_LOCAL, -1, -1, false, false), GW_ROUTE_DOWN,
                 -1);
}

static void test_node_only(void **state)
{
    (void)state;
    /* the site's mode and warm-up play no part */
    ASSERT_ROUTE(decide(GW_ROUTE_NODE, true, GW_MODE_FAILED_OVER, 1, 0, true, true), GW_ROUTE_LOCAL,
                 -1);
    ASSERT_ROUTE(decide(GW_ROUTE_NODE, true, GW_MODE_WARMUP, 1, 0, true, false), GW_ROUTE_LOCAL,
                 -1);
    ASSERT_ROUTE(decide(GW_ROUTE_NODE, true, GW_MODE_FAILED_OVER, 1, 2, false, false),
                 GW_ROUTE_PEER, 2);
    ASSERT_ROUTE(decide(GW_ROUTE_NODE, true, GW_MODE_FAILED_OVER, 1, -1, false, false),
                 GW_ROUTE_DOWN, -1);
    /* an op out of range routes as node-only */
    ASSERT_ROUTE(decide(GW_ROUTE_OP_MAX, true, GW_MODE_FAILED_OVER, 1, 0, true, true),
                 GW_ROUTE_LOCAL, -1);
}

/* gw_route_key/node/site/fallback_peer read the worker's pool and what failover
 * published (nothing yet: LOCAL, no peer). */
static void test_wrappers(void **state)
{
    static const char yaml[] = "site: us-east\n"
                               "listen: 127.0.0.1:11311\n"
                               "pool:\n"
                               "  servers:\n"
                               "    - 127.0.0.1:21211:1\n"
                               "    - 127.0.0.1:21212:1\n";
    struct gw_config *cfg = NULL;
    struct gw_pool *pool = NULL;
    struct gw_server srv;
    struct gw_worker w;
    struct gw_route r;
    char err[256];

    (void)state;
    assert_int_equal(gw_config_load_string(yaml, strlen(yaml), "t.yml", &cfg, err, sizeof(err)), 0);
    assert_int_equal(gw_pool_create(&pool, cfg, 1, err, sizeof(err)), 0);
    memset(&srv, 0, sizeof(srv));
    memset(&w, 0, sizeof(w));
    srv.cfg = cfg;
    gw_failover_init(&srv);
    w.srv = &srv;
    w.pool = pool;
    w.now_ms = 1000;

    r = gw_route_key(&w, "user:1", 6, GW_ROUTE_READ);
    ASSERT_ROUTE(r, GW_ROUTE_LOCAL, -1);
    assert_int_equal(r.node, gw_pool_route(pool, "user:1", 6));
    ASSERT_ROUTE(gw_route_site(&w), GW_ROUTE_LOCAL, -1);
    assert_int_equal(gw_route_fallback_peer(&w), -1);

    pool->nodes[r.node].state = GW_NODE_DOWN;
    ASSERT_ROUTE(gw_route_key(&w, "user:1", 6, GW_ROUTE_READ), GW_ROUTE_DOWN, -1);
    ASSERT_ROUTE(gw_route_node(&w, r.node, GW_ROUTE_WRITE), GW_ROUTE_DOWN, -1);

    /* replicating, nothing published yet: no peer to fall back to, no warm-up */
    srv.versioned = true;
    ASSERT_ROUTE(gw_route_node(&w, r.node, GW_ROUTE_NODE), GW_ROUTE_DOWN, -1);
    pool->nodes[r.node].state = GW_NODE_UP;
    pool->nodes[r.node].warm_until_ms = 5000;
    ASSERT_ROUTE(gw_route_node(&w, r.node, GW_ROUTE_READ), GW_ROUTE_LOCAL, -1);
    ASSERT_ROUTE(gw_route_site(&w), GW_ROUTE_LOCAL, -1);
    assert_int_equal(gw_route_fallback_peer(&w), -1);

    gw_pool_put(pool);
    gw_config_destroy(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),     cmocka_unit_test(test_single_site),
        cmocka_unit_test(test_read),      cmocka_unit_test(test_write),
        cmocka_unit_test(test_node_only), cmocka_unit_test(test_wrappers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
