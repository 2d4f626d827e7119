/*
 * worker — one thread, one event loop: it holds its client connections, its
 * connections to every node and its counters, and runs a tick; what happens to them
 * (adopting a client, timing out requests, probing down nodes, the spool at the end of
 * a pass) is done by the hooks the layers above register (hooks.h).  Other threads talk
 * to it only through its notify pipe.
 */
#ifndef GEOGATE_WORKER_H
#define GEOGATE_WORKER_H

#include "gateway/loop/hooks.h"
#include "gateway/types.h"

enum gw_msg_type {
    GW_MSG_CONN = 0,
    GW_MSG_RELOAD,
    GW_MSG_DRAIN,
    GW_MSG_STOP,
    GW_MSG_CALL, /* run fn(arg) on the worker's thread */
    GW_MSG_TYPE_MAX
};

struct gw_call;

struct gw_msg {
    int type;
    int fd;               /* GW_MSG_CONN: takes ownership */
    struct gw_pool *pool; /* GW_MSG_RELOAD: takes one reference */
    struct gw_call *call; /* GW_MSG_CALL */
};

/* Run fn(arg) on w's thread and wait for it; returns what fn returned, or -EIO when the
 * message could not be sent or w left its loop without running fn (fn never runs then).
 * Never from w's own thread. */
int gw_worker_call(struct gw_worker *w, int (*fn)(void *arg), void *arg);

/* Set up w (event base, pipe), run the start hooks and start its thread; hooks (borrowed,
 * read-only from now on) must outlive w.  Returns 0, or -1 with every start hook that ran
 * undone. */
int gw_worker_start(struct gw_worker *w, struct gw_server *srv, int id,
                    const struct gw_worker_hooks *hooks);

/* From any thread.  Returns 0 or -1 (pipe full or closed). */
int gw_worker_send(struct gw_worker *w, const struct gw_msg *msg);

/* Join the thread, run the stop hooks, free everything it owned. */
void gw_worker_join(struct gw_worker *w);

/* The connection to use for node (round-robin over pool->connections). */
struct gw_backend *gw_worker_backend(struct gw_worker *w, uint32_t node);

#endif
