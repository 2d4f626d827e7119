/*
 * hooks — the points of a worker's life where the layers above the loop plug in, so the
 * worker and its connections call nobody above them (the way memcached's worker threads
 * take subsystems by registration, and Redis's beforeSleep orders a loop pass).
 *
 *   gw_worker_start ──> start hooks (caller's thread, before the loop runs)
 *   GW_MSG_CONN fd ───> accept          GW_MSG_RELOAD pool ──> reload
 *   every tick ───────> tick hooks      GW_MSG_DRAIN ────────> drain hooks
 *   each loop pass ───> pass_end hooks, then every queued socket is written
 *   a socket written in the middle of a pass ──> before_write hooks first
 *   clients closed ───> reap hooks      gw_worker_join ──────> stop hooks
 *
 * One table, filled by the wiring (server.c) before the first worker starts and
 * read-only after, so workers read it without locks.  Hooks of one point run in the
 * order they were added: that order is the contract (the spool is appended and synced
 * before any reply leaves; connections go before the state they point into).  The table
 * is a few fixed arrays: running a point costs one indirect call per hook, nothing more.
 * It does not decide anything about clients, nodes or replication itself.
 */
#ifndef GEOGATE_HOOKS_H
#define GEOGATE_HOOKS_H

#include <stdint.h>

struct gw_worker;
struct gw_pool;

/* The points whose hooks take only the worker. */
enum gw_hook {
    GW_HOOK_PASS_END = 0, /* a loop pass ran its callbacks; its output is not written yet */
    GW_HOOK_BEFORE_WRITE, /* a socket is about to be written before the pass ends */
    GW_HOOK_DRAIN,        /* the worker starts draining (GW_MSG_DRAIN) */
    GW_HOOK_REAP,         /* something was closed in this pass: free it (w->reap_ev) */
    GW_HOOK_STOP,         /* the loop is over (gw_worker_join): free what the hook owns */
    GW_HOOK_MAX
};

/* Hooks per point: today's wiring needs at most six (the tick). */
#define GW_HOOKS_PER_POINT 10

typedef void (*gw_hook_fn)(struct gw_worker *w);
/* Returns 0, or a negative error code having undone its own part. */
typedef int (*gw_hook_start_fn)(struct gw_worker *w);
typedef void (*gw_hook_tick_fn)(struct gw_worker *w, int64_t now_ms);
/* Takes ownership of fd (closes it on failure). */
typedef void (*gw_hook_accept_fn)(struct gw_worker *w, int fd);
/* Takes the pool reference the message carried. */
typedef void (*gw_hook_reload_fn)(struct gw_worker *w, struct gw_pool *pool);

struct gw_worker_hooks {
    gw_hook_fn on[GW_HOOK_MAX][GW_HOOKS_PER_POINT];
    uint8_t non[GW_HOOK_MAX];
    gw_hook_tick_fn tick[GW_HOOKS_PER_POINT];
    uint8_t ntick;
    gw_hook_start_fn start[GW_HOOKS_PER_POINT];
    gw_hook_fn undo[GW_HOOKS_PER_POINT]; /* undo[i] reverses start[i] when a later step fails */
    uint8_t nstart;
    gw_hook_accept_fn accept; /* one owner for a client socket */
    gw_hook_reload_fn reload; /* one owner for a new pool */
};

/* Add fn at point (after the ones already there).  Returns 0, or -ENOSPC when the point
 * holds GW_HOOKS_PER_POINT already. */
int gw_hooks_add(struct gw_worker_hooks *h, enum gw_hook point, gw_hook_fn fn);

/* Run fn(w, now_ms) on every tick, after the tick hooks already added.  Returns 0 or
 * -ENOSPC. */
int gw_hooks_add_tick(struct gw_worker_hooks *h, gw_hook_tick_fn fn);

/* Run start(w) when a worker starts, after the ones already added; undo(w) (may be NULL)
 * reverses it when a later start hook or the thread fails.  What start set up is freed
 * by a stop hook once the worker ran.  Returns 0 or -ENOSPC. */
int gw_hooks_add_start(struct gw_worker_hooks *h, gw_hook_start_fn start, gw_hook_fn undo);

/* Who adopts the client sockets and the reloaded pools (the last one set wins). */
void gw_hooks_set_accept(struct gw_worker_hooks *h, gw_hook_accept_fn fn);
void gw_hooks_set_reload(struct gw_worker_hooks *h, gw_hook_reload_fn fn);

/* Run point's hooks for w, in order (inline: the pass end runs on every loop pass). */
static inline void gw_hooks_run(const struct gw_worker_hooks *h, enum gw_hook point,
                                struct gw_worker *w)
{
    for (uint8_t i = 0; i < h->non[point]; i++) {
        h->on[point][i](w);
    }
}

#endif
