/*
 * test_failover — gateway/failover/fo_state.c: the site-mode state machine as pure
 * functions.  Every transition (pool below its healthy fraction, hold_down, warm-up by
 * hit ratio and by max_time, a failed-over peer going away, operator force and
 * failback), the peer choice (serving, priority, RTT), the warm-up windows, and the
 * per-node warm-up.  Pure logic: no server, no clock.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/failover/fo_state.h"

static const struct gw_fo_config cfg = {
    .local_healthy_fraction = 0.5,
    .hold_down_ms = 5000,
    .warmup_max_time_ms = 600000,
    .warmup_hit_ratio = 0.9,
};

/* Two peers: 0 (priority 1, 30 ms) and 1 (priority 2, 5 ms); both up and serving. */
struct world {
    struct gw_fo_state st;
    struct gw_fo_peer peers[2];
    struct gw_fo_inputs in;
};

static void world_init(struct world *w)
{
    memset(w, 0, sizeof(*w));
    gw_fo_state_init(&w->st);
    w->peers[0] =
        (struct gw_fo_peer){.link_up = true, .serving = true, .priority = 1, .rtt_ms = 30};
    w->peers[1] = (struct gw_fo_peer){.link_up = true, .serving = true, .priority = 2, .rtt_ms = 5};
    w->in.now_ms = 100000;
    w->in.nodes = 4;
    w->in.nodes_up = 4;
    w->in.peers = w->peers;
    w->in.npeers = 2;
}

static struct gw_fo_result tick_at(struct world *w, int64_t now)
{
    w->in.now_ms = now;
    return gw_fo_step(&w->st, &cfg, &w->in, GW_FO_TICK, -1);
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(gw_site_mode_name(GW_MODE_LOCAL), "local");
    assert_string_equal(gw_site_mode_name(GW_MODE_FAILED_OVER), "failed_over");
    assert_string_equal(gw_site_mode_name(GW_MODE_WARMUP), "warmup");
    assert_string_equal(gw_site_mode_name(GW_MODE_MAX), "?");
}

static void test_init(void **state)
{
    struct gw_fo_state st;

    (void)state;
    memset(&st, 0x5a, sizeof(st));
    gw_fo_state_init(&st);
    assert_int_equal(st.mode, GW_MODE_LOCAL);
    assert_int_equal(st.peer, -1);
    assert_int_equal(st.best_peer, -1);
    assert_false(st.forced);
    assert_int_equal(st.healthy_since_ms, 0);
}

static void test_local_healthy(void **state)
{
    (void)state;
    assert_false(gw_fo_local_healthy(&cfg, 0, 0)); /* no nodes */
    assert_true(gw_fo_local_healthy(&cfg, 4, 4));
    assert_true(gw_fo_local_healthy(&cfg, 4, 2)); /* exactly the fraction */
    assert_false(gw_fo_local_healthy(&cfg, 4, 1));
    {
        struct gw_fo_config zero = cfg;
        zero.local_healthy_fraction = 0;
        assert_false(gw_fo_local_healthy(&zero, 4, 0)); /* at least one node, whatever */
        assert_true(gw_fo_local_healthy(&zero, 4, 1));
    }
}

static void test_best_peer(void **state)
{
    struct gw_fo_peer p[3] = {
        {.link_up = true, .serving = true, .priority = 2, .rtt_ms = 1},
        {.link_up = true, .serving = true, .priority = 1, .rtt_ms = 50},
        {.link_up = true, .serving = true, .priority = 1, .rtt_ms = 10},
    };

    (void)state;
    assert_int_equal(gw_fo_best_peer(p, 0, -1), -1);
    assert_int_equal(gw_fo_best_peer(p, 3, -1), 2); /* priority first, then RTT */
    assert_int_equal(gw_fo_best_peer(p, 3, 0), 0);  /* limited to the wanted one */
    assert_int_equal(gw_fo_best_peer(p, 2, -1), 1);
    p[1].rtt_ms = 10; /* a tie keeps the first */
    assert_int_equal(gw_fo_best_peer(p, 3, -1), 1);
    p[1].rtt_ms = 50;
    p[2].serving = false;
    assert_int_equal(gw_fo_best_peer(p, 3, -1), 1);
    assert_int_equal(gw_fo_best_peer(p, 3, 2), -1);
    p[1].link_up = false;
    assert_int_equal(gw_fo_best_peer(p, 3, -1), 0);
    p[0].link_up = false;
    assert_int_equal(gw_fo_best_peer(p, 3, -1), -1);
    assert_int_equal(gw_fo_best_peer(p, 3, 7), -1); /* not a peer */
}

static void test_window(void **state)
{
    struct gw_fo_window win = {.start_ms = 1000};
    struct gw_fo_window_result r;

    (void)state;
    r = gw_fo_window_close(&win, 1999, 100, 0, 0, 0.9);
    assert_int_equal(r.verdict, GW_FO_WINDOW_OPEN);
    assert_int_equal(win.start_ms, 1000); /* untouched */

    r = gw_fo_window_close(&win, 2000, 30, 19, 0, 0.9); /* 49 lookups: too few */
    assert_int_equal(r.verdict, GW_FO_WINDOW_FEW);
    assert_int_equal(win.start_ms, 2000);
    assert_int_equal(win.hits, 30);
    assert_int_equal(win.misses, 19);

    r = gw_fo_window_close(&win, 3000, 30 + 80, 19 + 20, 20, 0.9); /* 80 / 100 */
    assert_int_equal(r.verdict, GW_FO_WINDOW_COLD);
    assert_int_equal(r.local_hits, 80);
    assert_int_equal(r.misses, 20);
    assert_int_equal(r.peer_hits, 20);
    assert_true(r.ratio > 0.79 && r.ratio < 0.81);

    r = gw_fo_window_close(&win, 4000, 110 + 95, 39 + 5, 20 + 5, 0.9); /* 95 / 100 */
    assert_int_equal(r.verdict, GW_FO_WINDOW_WARM);

    /* misses the peer did not have either: nothing to fetch, so warm */
    r = gw_fo_window_close(&win, 5000, 205, 44 + 60, 25, 0.9);
    assert_int_equal(r.verdict, GW_FO_WINDOW_WARM);
    assert_true(r.ratio == 1.0);
}

static void test_stays_local(void **state)
{
    struct world w;
    struct gw_fo_result r;

    (void)state;
    world_init(&w);
    r = tick_at(&w, 100000);
    assert_false(r.switched);
    assert_int_equal(r.rc, 0);
    assert_int_equal(w.st.mode, GW_MODE_LOCAL);
    assert_int_equal(w.st.best_peer, 0);
    assert_int_equal(w.st.healthy_since_ms, 100000);
    r = tick_at(&w, 100100);
    assert_int_equal(w.st.healthy_since_ms, 100000); /* kept while healthy */
}

static void test_fails_over(void **state)
{
    struct world w;
    struct gw_fo_result r;

    (void)state;
    world_init(&w);
    tick_at(&w, 100000);
    w.in.nodes_up = 1;
    r = tick_at(&w, 100100);
    assert_true(r.switched);
    assert_int_equal(r.from_mode, GW_MODE_LOCAL);
    assert_string_equal(r.why, "local pool below its healthy fraction");
    assert_false(r.warmup_entered);
    assert_int_equal(w.st.mode, GW_MODE_FAILED_OVER);
    assert_int_equal(w.st.peer, 0);
    assert_false(w.st.forced);
    assert_int_equal(w.st.healthy_since_ms, 0);
    /* already failed over to the same peer: nothing changes */
    r = tick_at(&w, 100200);
    assert_false(r.switched);
}

static void test_no_peer_to_fail_over_to(void **state)
{
    struct world w;
    struct gw_fo_result r;

    (void)state;
    world_init(&w);
    w.peers[0].serving = false;
    w.peers[1].link_up = false;
    w.in.nodes_up = 0;
    r = tick_at(&w, 100000);
    assert_false(r.switched);
    assert_int_equal(w.st.mode, GW_MODE_LOCAL);
    assert_int_equal(w.st.best_peer, -1);
}

/* Failed over at t0, the pool back whole at t1: WARMUP once hold_down has passed. */
static void fail_over_and_recover(struct world *w, int64_t t0, int64_t t1)
{
    w->in.nodes_up = 0;
    tick_at(w, t0);
    assert_int_equal(w->st.mode, GW_MODE_FAILED_OVER);
    w->in.nodes_up = 4;
    tick_at(w, t1);
}

static void test_hold_down(void **state)
{
    struct world w;
    struct gw_fo_result r;

    (void)state;
    world_init(&w);
    fail_over_and_recover(&w, 100000, 101000);
    assert_int_equal(w.st.mode, GW_MODE_FAILED_OVER);
    assert_int_equal(w.st.healthy_since_ms, 101000);
    r = tick_at(&w, 105999);
    assert_false(r.switched);
    w.in.warm_hits = 7; /* counters from before: the caller zeroes them */
    r = tick_at(&w, 106000);
    assert_true(r.switched);
    assert_int_equal(r.from_mode, GW_MODE_FAILED_OVER);
    assert_string_equal(r.why, "local pool healthy for hold_down");
    assert_true(r.warmup_entered);
    assert_int_equal(w.st.mode, GW_MODE_WARMUP);
    assert_int_equal(w.st.peer, 0);
    assert_int_equal(w.st.warmup_started_ms, 106000);
    assert_int_equal(w.st.win.start_ms, 106000);
    assert_int_equal(w.st.win.hits, 0);
    assert_true(w.st.last_ratio == 0);
}

static void test_hold_down_restarts_when_pool_changes(void **state)
{
    struct world w;

    (void)state;
    world_init(&w);
    w.in.nodes = 4;
    w.in.nodes_up = 0;
    tick_at(&w, 100000);
    w.in.nodes_up = 2; /* healthy (0.5) but still settling */
    tick_at(&w, 101000);
    assert_int_equal(w.st.healthy_since_ms, 101000);
    w.in.nodes_up = 3; /* another node back: the wait starts over */
    tick_at(&w, 104000);
    assert_int_equal(w.st.healthy_since_ms, 104000);
    tick_at(&w, 108999);
    assert_int_equal(w.st.mode, GW_MODE_FAILED_OVER);
    tick_at(&w, 109000);
    assert_int_equal(w.st.mode, GW_MODE_WARMUP);
}

static void test_unhealthy_again_resets_hold_down(void **state)
{
    struct world w;

    (void)state;
    world_init(&w);
    fail_over_and_recover(&w, 100000, 101000);
    w.in.nodes_up = 1;
    tick_at(&w, 102000);
    assert_int_equal(w.st.healthy_since_ms, 0);
    assert_int_equal(w.st.mode, GW_MODE_FAILED_OVER);
}

static void enter_warmup(struct world *w)
{
    fail_over_and_recover(w, 100000, 101000);
    tick_at(w, 106000);
    assert_int_equal(w->st.mode, GW_MODE_WARMUP);
    w->in.warm_hits = w->in.warm_misses = w->in.warm_peer_hits = 0;
}

static void test_warmup_by_hit_ratio(void **state)
{
    struct world w;
    struct gw_fo_result r;

    (void)state;
    world_init(&w);
    enter_warmup(&w);
    /* window not over */
    w.in.warm_hits = 1000;
    r = tick_at(&w, 106999);
    assert_false(r.switched);
    /* too few lookups */
    w.in.warm_hits = 10;
    w.in.warm_misses = 10;
    r = tick_at(&w, 107000);
    assert_false(r.switched);
    assert_true(w.st.last_ratio == 0);
    /* cold: 60 local hits, 40 found only at the peer */
    w.in.warm_hits = 10 + 60;
    w.in.warm_misses = 10 + 40;
    w.in.warm_peer_hits = 40;
    r = tick_at(&w, 108000);
    assert_false(r.switched);
    assert_true(w.st.last_ratio > 0.59 && w.st.last_ratio < 0.61);
    assert_int_equal(w.st.mode, GW_MODE_WARMUP);
    /* warm: 95 / 100 */
    w.in.warm_hits += 95;
    w.in.warm_misses += 5;
    w.in.warm_peer_hits += 5;
    r = tick_at(&w, 109000);
    assert_true(r.switched);
    assert_int_equal(r.from_mode, GW_MODE_WARMUP);
    assert_string_equal(r.why, "warm-up reached its hit ratio");
    assert_int_equal(w.st.mode, GW_MODE_LOCAL);
    assert_int_equal(w.st.peer, -1);
    assert_true(w.st.last_ratio > 0.94);
}

static void test_warmup_by_max_time(void **state)
{
    struct world w;
    struct gw_fo_result r;

    (void)state;
    world_init(&w);
    enter_warmup(&w);
    r = tick_at(&w, 106000 + 600000 - 1);
    assert_false(r.switched);
    r = tick_at(&w, 106000 + 600000);
    assert_true(r.switched);
    assert_string_equal(r.why, "warm-up reached its max_time");
    assert_int_equal(w.st.mode, GW_MODE_LOCAL);
}

static void test_warmup_fails_over_again(void **state)
{
    struct world w;
    struct gw_fo_result r;

    (void)state;
    world_init(&w);
    enter_warmup(&w);
    w.in.nodes_up = 0;
    r = tick_at(&w, 107000);
    assert_true(r.switched);
    assert_int_equal(r.from_mode, GW_MODE_WARMUP);
    assert_int_equal(w.st.mode, GW_MODE_FAILED_OVER);
    /* unhealthy with no peer: stays as it is */
    world_init(&w);
    enter_warmup(&w);
    w.peers[0].serving = w.peers[1].serving = false;
    w.in.nodes_up = 0;
    r = tick_at(&w, 107000);
    assert_false(r.switched);
    assert_int_equal(w.st.mode, GW_MODE_WARMUP);
}

static void test_peer_goes_away(void **state)
{
    struct world w;
    struct gw_fo_result r;

    (void)state;
    world_init(&w);
    w.in.nodes_up = 0;
    tick_at(&w, 100000);
    assert_int_equal(w.st.peer, 0);
    w.peers[0].link_up = false;
    r = tick_at(&w, 100100);
    assert_true(r.switched);
    assert_int_equal(r.from_mode, GW_MODE_FAILED_OVER);
    assert_string_equal(r.why, "the peer we read from is unavailable");
    assert_int_equal(w.st.mode, GW_MODE_FAILED_OVER);
    assert_int_equal(w.st.peer, 1);
    /* and the other too: stay where we are, nothing better */
    w.peers[1].serving = false;
    r = tick_at(&w, 100200);
    assert_false(r.switched);
    assert_int_equal(w.st.peer, 1);
    assert_int_equal(w.st.best_peer, -1);
}

/* States the API never makes: the machine still does something sane with them. */
static void test_odd_states(void **state)
{
    struct world w;
    struct gw_fo_result r;

    (void)state;
    world_init(&w);
    w.in.nodes_up = 0;
    w.st.mode = GW_MODE_FAILED_OVER; /* without a peer: take the best one */
    w.st.peer = -1;
    r = tick_at(&w, 100000);
    assert_true(r.switched);
    assert_int_equal(w.st.peer, 0);
    w.st.mode = GW_MODE_MAX; /* not a mode: left alone */
    r = tick_at(&w, 100100);
    assert_false(r.switched);
    assert_int_equal(w.st.mode, GW_MODE_MAX);
}

static void test_force(void **state)
{
    struct world w;
    struct gw_fo_result r;

    (void)state;
    world_init(&w);
    r = gw_fo_step(&w.st, &cfg, &w.in, GW_FO_FORCE, 1);
    assert_int_equal(r.rc, 0);
    assert_true(r.switched);
    assert_string_equal(r.why, "operator");
    assert_int_equal(w.st.mode, GW_MODE_FAILED_OVER);
    assert_int_equal(w.st.peer, 1);
    assert_true(w.st.forced);
    /* forced: a healthy pool does not end it, however long */
    tick_at(&w, 100000);
    tick_at(&w, 200000);
    assert_int_equal(w.st.mode, GW_MODE_FAILED_OVER);
    /* forcing again to the same peer: no switch, still forced */
    r = gw_fo_step(&w.st, &cfg, &w.in, GW_FO_FORCE, 1);
    assert_int_equal(r.rc, 0);
    assert_false(r.switched);
    assert_true(w.st.forced);
    /* to the best one */
    r = gw_fo_step(&w.st, &cfg, &w.in, GW_FO_FORCE, -1);
    assert_true(r.switched);
    assert_int_equal(w.st.peer, 0);
}

static void test_force_unreachable(void **state)
{
    struct world w;
    struct gw_fo_result r;

    (void)state;
    world_init(&w);
    w.peers[1].serving = false;
    r = gw_fo_step(&w.st, &cfg, &w.in, GW_FO_FORCE, 1);
    assert_int_equal(r.rc, -EHOSTUNREACH);
    assert_false(r.switched);
    assert_int_equal(w.st.mode, GW_MODE_LOCAL);
    assert_false(w.st.forced);
    w.peers[0].link_up = false;
    r = gw_fo_step(&w.st, &cfg, &w.in, GW_FO_FORCE, -1);
    assert_int_equal(r.rc, -EHOSTUNREACH);
}

static void test_failback(void **state)
{
    struct world w;
    struct gw_fo_result r;

    (void)state;
    world_init(&w);
    r = gw_fo_step(&w.st, &cfg, &w.in, GW_FO_BACK, -1);
    assert_int_equal(r.rc, -EALREADY);
    assert_false(r.switched);

    gw_fo_step(&w.st, &cfg, &w.in, GW_FO_FORCE, 0);
    w.in.nodes_up = 1;
    r = gw_fo_step(&w.st, &cfg, &w.in, GW_FO_BACK, -1);
    assert_int_equal(r.rc, -EAGAIN);
    assert_int_equal(w.st.mode, GW_MODE_FAILED_OVER);
    assert_true(w.st.forced);

    w.in.nodes_up = 4;
    w.in.now_ms = 123000;
    r = gw_fo_step(&w.st, &cfg, &w.in, GW_FO_BACK, -1);
    assert_int_equal(r.rc, 0);
    assert_true(r.switched);
    assert_true(r.warmup_entered);
    assert_string_equal(r.why, "operator failback");
    assert_int_equal(w.st.mode, GW_MODE_WARMUP);
    assert_int_equal(w.st.peer, 0);
    assert_false(w.st.forced);
    assert_int_equal(w.st.warmup_started_ms, 123000);

    r = gw_fo_step(&w.st, &cfg, &w.in, GW_FO_COMMAND_MAX, -1); /* unknown: nothing */
    assert_int_equal(r.rc, 0);
    assert_false(r.switched);
}

static void test_local_clears_forced(void **state)
{
    struct world w;

    (void)state;
    world_init(&w);
    enter_warmup(&w);
    w.st.forced = true; /* cannot happen through the API, but LOCAL always clears it */
    tick_at(&w, 106000 + 600000);
    assert_int_equal(w.st.mode, GW_MODE_LOCAL);
    assert_false(w.st.forced);
}

static void test_node_warm(void **state)
{
    struct gw_fo_window win = {0};
    struct gw_fo_window_result out;

    (void)state;
    /* not warming */
    assert_int_equal(gw_fo_node_warm_step(0, &win, 5000, 1, 1, 1, 0.9, &out), GW_FO_NODE_COLD);
    assert_int_equal(out.verdict, GW_FO_WINDOW_OPEN);
    /* max_time passed */
    assert_int_equal(gw_fo_node_warm_step(5000, &win, 5000, 1, 1, 1, 0.9, NULL),
                     GW_FO_NODE_MAX_TIME);
    /* first window (from start 0) closes at once: too few */
    assert_int_equal(gw_fo_node_warm_step(90000, &win, 5000, 10, 10, 0, 0.9, &out),
                     GW_FO_NODE_COLD);
    assert_int_equal(out.verdict, GW_FO_WINDOW_FEW);
    assert_int_equal(win.start_ms, 5000);
    /* window open */
    assert_int_equal(gw_fo_node_warm_step(90000, &win, 5500, 500, 10, 0, 0.9, &out),
                     GW_FO_NODE_COLD);
    assert_int_equal(out.verdict, GW_FO_WINDOW_OPEN);
    /* cold */
    assert_int_equal(gw_fo_node_warm_step(90000, &win, 6000, 10 + 50, 10 + 50, 50, 0.9, &out),
                     GW_FO_NODE_COLD);
    assert_int_equal(out.verdict, GW_FO_WINDOW_COLD);
    /* warm */
    assert_int_equal(gw_fo_node_warm_step(90000, &win, 7000, 60 + 99, 60 + 1, 50 + 1, 0.9, &out),
                     GW_FO_NODE_WARM);
    assert_int_equal(out.local_hits, 99);
    assert_int_equal(out.peer_hits, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_local_healthy),
        cmocka_unit_test(test_best_peer),
        cmocka_unit_test(test_window),
        cmocka_unit_test(test_stays_local),
        cmocka_unit_test(test_fails_over),
        cmocka_unit_test(test_no_peer_to_fail_over_to),
        cmocka_unit_test(test_hold_down),
        cmocka_unit_test(test_hold_down_restarts_when_pool_changes),
        cmocka_unit_test(test_unhealthy_again_resets_hold_down),
        cmocka_unit_test(test_warmup_by_hit_ratio),
        cmocka_unit_test(test_warmup_by_max_time),
        cmocka_unit_test(test_warmup_fails_over_again),
        cmocka_unit_test(test_peer_goes_away),
        cmocka_unit_test(test_odd_states),
        cmocka_unit_test(test_force),
        cmocka_unit_test(test_force_unreachable),
        cmocka_unit_test(test_failback),
        cmocka_unit_test(test_local_clears_forced),
        cmocka_unit_test(test_node_warm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
