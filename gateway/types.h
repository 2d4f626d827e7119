/*
 * types — the structures of the request path, types only (no functions), so the
 * modules that pass them around (client, backend, route, worker) can include them
 * without including each other.
 *
 *   client socket ──read──> client.c: frame + parse ──> route.c: which node(s)?
 *                                                          │
 *            ┌─────────────────────────────────────────────┘
 *            v
 *   backend.c: frag queued on the worker's connection to that node; all frags of
 *   one loop iteration leave in one write ──> memcached
 *            │
 *   backend.c: replies parsed in order, matched to the head frag, moved (not
 *   copied) into the request's reply buffer
 *            v
 *   client.c: requests answered strictly in the client's order (a finished request
 *   waits for the ones before it), then written to the client socket
 */
#ifndef GEOGATE_TYPES_H
#define GEOGATE_TYPES_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "gateway/loop/conn.h"
#include "gateway/protocol/proto_mc.h"
#include "gateway/base/stats.h"

struct event;
struct event_base;
struct evbuffer;
struct bufferevent;
struct evconnlistener;
struct gw_pool;
struct gw_node;
struct gw_config;
struct gw_server;
struct gw_worker_hooks;

/* One key of a retrieval spread over several nodes: its reply, kept until all nodes
 * answered so replies go out in the client's key order. */
struct gw_keyslot {
    const char *key;
    uint32_t nkey;
    uint32_t node;
    uint32_t frag; /* index in req->frags of the frag that asks for it */
    uint32_t pos;  /* its index in that frag's slots */
    struct evbuffer *value; /* this key's VALUE block(s); NULL while a miss */
};

struct gw_frag;

/* An internal request's reply is complete (reply holds it, VALUE blocks and final line
 * included), or it failed (reply NULL, error set).  Runs on the worker's loop. */
typedef void (*gw_frag_cb)(struct gw_frag *frag, struct evbuffer *reply, const char *error);

/* The part of a request sent to one backend connection. */
struct gw_frag {
    struct gw_req *req; /* NULL for a health probe or an internal request */
    gw_frag_cb cb;      /* internal request (read-modify-write, apply): reply goes to cb */
    void *cb_arg;
    struct evbuffer *capture; /* with cb: where the reply is collected */
    bool cb_values;           /* with cb: the reply may hold VALUE blocks */
    struct gw_backend *be;
    TAILQ_ENTRY(gw_frag) link;
    uint32_t *slots; /* multi-node retrieval: indexes into req->slots, in sent order */
    uint32_t nslots;
    uint32_t cursor; /* next slot a VALUE reply can belong to */
    uint32_t done_upto; /* slots before this one have their whole answer */
    /* A one-key get/gets sent inside a multi-key get with its neighbours in the
     * queue (backend.c, gw_backend_send_get): its key tells its VALUE apart. */
    bool merged;
    bool group_last; /* the last key of that multi-key get */
    uint8_t nmkey;
    const char *mkey;
};

TAILQ_HEAD(gw_frag_queue, gw_frag);

struct gw_req;
struct gw_client;

/*
 * What a request's owner (the client connection that made it) does at the points where
 * the code answering the request would otherwise have to call up into it: the request
 * carries a pointer to one static table of these, set when it is made (gw_req_new), so
 * nothing below the frontend calls the frontend.  All are required; worker loop only.
 */
struct gw_req_ops {
    /* r's reply is complete (r->done); r->client is set.  May free r. */
    void (*done)(struct gw_req *r);
    /* Part of r's reply already went to r->client when r failed: an error line now would
     * read as data, so the owner hangs up once what is written so far is out. */
    void (*abort)(struct gw_req *r);
    /* r, a read whose node failed under it (r->node_lost, nothing streamed), may be
     * answered another way (a peer site): true when the owner took it over, false to
     * answer r with its error. */
    bool (*retry_read)(struct gw_req *r);
    /* Every node said OK to r, a flush_all (r->client may be NULL by now). */
    void (*flushed)(struct gw_req *r);
    /* A multi-step command (r->barrier) of c began: c reads no further command until
     * as many barrier_release.  barrier_release may run after r is freed, hence c. */
    void (*barrier_hold)(struct gw_client *c);
    void (*barrier_release)(struct gw_client *c);
};

struct gw_req {
    TAILQ_ENTRY(gw_req) link;  /* in the client's queue, in arrival order */
    TAILQ_ENTRY(gw_req) sync_link; /* in the worker's sync_wait, while held for fsync */
    struct gw_client *client;  /* NULL once the client has gone (orphaned) */
    const struct gw_req_ops *ops; /* its owner's callbacks; kept when orphaned */
    struct gw_worker *w;
    enum mc_cmd cmd;
    bool noreply;
    bool done;
    bool quit;        /* close the client once this one is written */
    bool failed;
    bool streamed;    /* reply bytes went straight to the client's output */
    bool node_lost;   /* failed because a node failed under it, not by a node's reply */
    bool barrier;     /* the client's later commands wait for this one */
    uint32_t pending; /* frags not yet answered */
    uint32_t nkeys;   /* retrievals: keys asked */
    uint32_t hits;    /* retrievals: VALUE replies seen */
    uint32_t reply_bytes; /* retrievals: the data bytes of those VALUE replies */
    uint32_t charge;  /* bytes counted against the client's in-flight budget for it */
    int32_t flush_delay; /* flush_all: its delay argument (0 = none) */
    const char *error; /* first failure's reply line (no CRLF), when failed */
    bool error_owned;  /* error was allocated for this request */
    struct evbuffer *reply;
    struct gw_frag frag;   /* the only frag of a single-node request */
    struct gw_frag *frags; /* several nodes: one frag per node */
    uint32_t nfrags;
    struct gw_keyslot *slots;
    uint32_t nslots;
    uint32_t emitted; /* slots whose answer has gone on, in the client's key order */
    char *keybuf; /* owns the key bytes slots point to; a one-node read of a replicating
                   * site without slots: its keys, space-separated (a retry at a peer) */
    uint32_t *slotidx;
    struct gw_req *next_free; /* in the worker's free list */
    /* Last, and not cleared when a request is reused (gw_req_new): */
    char key1[MC_KEY_MAX_LENGTH]; /* a one-key get/gets: its key (frag.mkey) */
};

TAILQ_HEAD(gw_req_queue, gw_req);

enum gw_be_state { GW_BE_IDLE = 0, GW_BE_CONNECTING, GW_BE_CONNECTED, GW_BE_STATE_MAX };

/* One connection from a worker to one memcached node. */
struct gw_backend {
    struct gw_worker *w;
    struct gw_pool *pool;
    struct gw_node *node;
    uint32_t slot; /* which of pool->connections to this node */
    struct gw_conn conn;
    bool open;         /* conn holds a socket */
    uint64_t conn_gen; /* bumped whenever the connection is torn down */
    int state; /* enum gw_be_state */
    struct gw_frag_queue pending;
    uint32_t npending;
    uint32_t nunsent; /* of those, queued here but not yet handed to the kernel */
    int64_t connect_started_ms;
    int64_t last_progress_ms;
    /* The multi-key get being built from one-key gets (gw_backend_send_get); it
     * joins the output when anything else is queued or the output is written. */
    char *gline;
    uint32_t glen;
    uint32_t gkeys;
    enum mc_cmd gcmd;
    struct gw_frag *gfirst; /* its first and last frags in pending */
    struct gw_frag *glast;
    uint64_t gkeybits; /* one bit per key in it (be_key_bit): most repeats fail this */
    /* reply parser */
    struct gw_frag *value_frag; /* the merged frag the data block being moved ends */
    bool await_end; /* a multi-key get's frags are all answered; its END is next */
    bool in_data;        /* inside a VALUE data block */
    uint32_t data_left;  /* bytes of it still to move */
    struct evbuffer *dst; /* where the data block goes (NULL: dropped) */
    struct gw_conn *dst_conn; /* the client socket dst is the output of, when it is one */
    bool retiring;       /* removed by a reload: close once pending is empty */
    bool probing;
    struct gw_frag probe;
    struct gw_frag ping;        /* keep-alive `version` to an idle node (health tracking) */
    struct evbuffer *ping_cap;
    bool ping_inflight;
    int64_t ping_due_ms;
    TAILQ_ENTRY(gw_backend) retire_link;
};

enum gw_in_state { GW_IN_LINE = 0, GW_IN_DATA, GW_IN_SWALLOW, GW_IN_STATE_MAX };

/* A storage command whose data block has not fully arrived yet. */
struct gw_store_pending {
    enum mc_cmd cmd;
    bool noreply;
    uint32_t node;
    uint32_t vlen; /* data block bytes incl. the trailing CRLF */
    uint16_t hdrlen;
    char hdr[8 + MC_KEY_MAX_LENGTH + 64]; /* the line to send the node */
    /* the parsed command, for a versioned gateway that rewrites it */
    uint32_t flags;
    int32_t exptime;
    uint64_t cas_unique;
    uint16_t nkey;
    char key[MC_KEY_MAX_LENGTH + 1];
    int remote; /* the key's node is down: peer site to carry the write out at, or -1 */
};

struct gw_client {
    struct gw_worker *w;
    struct gw_conn conn;
    TAILQ_ENTRY(gw_client) link;
    struct gw_req_queue reqs;
    uint32_t nreqs;
    int in_state; /* enum gw_in_state */
    uint32_t swallow_left;
    bool closing;
    bool quitting;      /* close as soon as the output is written */
    bool quit_seen;     /* `quit` read: parse nothing more */
    bool paused;        /* reading stopped for back-pressure */
    bool in_process;    /* re-entrancy guard for client_process */
    bool again;
    bool draining;
    struct gw_store_pending *store;
    uint32_t barrier; /* commands in flight that later ones must wait for */
    /* Back-pressure (client.c): what the requests in flight may bring back or carry,
     * and the size of a value this client usually gets. */
    uint64_t inflight_bytes;
    uint32_t reply_est;
    bool wait_room;         /* paused until its socket can take the next value */
    uint32_t room_backoff_ms; /* ... looked at again then (gw_client_tick) */
    int64_t room_check_ms;
    int64_t last_active_ms; /* last read (idle_timeout) */
};

TAILQ_HEAD(gw_client_list, gw_client);
TAILQ_HEAD(gw_backend_list, gw_backend);

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
    char rbuf[16384];              /* reads land here first when a socket's input is empty */
    bool rbuf_busy;                /* an on_data callback is reading rbuf */
    bool repl_appended;            /* this pass spooled something */
    struct gw_spool_pending *spool_pending; /* records spooled at the end of the pass (repl.c) */
};

#endif
