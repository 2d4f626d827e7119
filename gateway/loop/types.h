/*
 * loop types — a worker thread and what its loop owns; types only.  It holds the lists of
 * the layers above (clients, backends, requests), as their types: no code of theirs.
 */
#ifndef GEOGATE_LOOP_TYPES_H
#define GEOGATE_LOOP_TYPES_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "gateway/backend/types.h"
#include "gateway/base/stats.h"
#include "gateway/frontend/types.h"
#include "gateway/loop/conn.h"
#include "gateway/protocol/proto_mc.h"
#include "gateway/protocol/types.h"

struct event;
struct event_base;
struct evbuffer;
struct gw_pool;
struct gw_server;
struct gw_worker_hooks;

struct gw_worker {
    int id;
    struct gw_server *srv;
    const struct gw_worker_hooks *hooks; /* what the layers above plug in (loop/hooks.h) */
    pthread_t thread;
    bool joined;
    struct event_base *base;
    int notify_fd[2];
    struct event *notify_ev;
    struct event *tick_ev;
    struct event *reap_ev;
    struct gw_pool *pool;
    struct gw_backend **backends; /* [node * pool->connections + slot] */
    uint32_t nbackends;
    uint32_t rr;
    struct gw_client_list clients;
    /* Held while a client joins or leaves `clients`, and by any thread that walks it from
     * outside (`stats conns`): the owning thread reads it without. */
    pthread_mutex_t clients_lock;
    struct gw_client_list dead;
    struct gw_backend_list retired;
    uint32_t nclients;
    uint32_t nwait_room; /* clients paused until their socket has room (client.c) */
    int64_t idle_check_ms;
    int64_t trim_ms;
    int64_t limit_log_ms;     /* output-limit disconnects: logged once per interval */
    uint32_t limit_log_quiet; /* ... and how many since the last line */
    struct gw_stats stats;
    struct mc_parser parser;
    char *scratch; /* a writable copy of the current request line */
    size_t scratch_cap;
    char *out; /* building lines for backends */
    size_t out_cap;
    bool draining;
    bool stop; /* set by another thread when notify_fd failed: leave the loop */
    bool exited; /* atomic: the loop is over, no message is read any more (gw_worker_call) */
    int64_t now_ms;
    struct gw_conn_list flushq; /* conns with output to write at the end of the iteration */
    struct gw_req_queue sync_wait; /* replies waiting for the spool's fsync (this pass) */
    struct gw_remote *remote;      /* links to peer sites for failover reads (remote.c) */
    struct gw_ack_list *ack_waits; /* writes waiting for a peer's ack (repl.c) */
    struct gw_req *req_free;       /* requests kept for reuse (req.c) */
    uint32_t nreq_free;
    struct vop *vop_free;          /* versioned operations kept for reuse (vop.c) */
    uint32_t nvop_free;
    char rbuf[16384];              /* reads land here first when a socket's input is empty */
    bool rbuf_busy;                /* an on_data callback is reading rbuf */
    bool repl_appended;            /* this pass spooled something */
    struct gw_spool_pending *spool_pending; /* records spooled at the end of the pass (repl.c) */
};

#endif
