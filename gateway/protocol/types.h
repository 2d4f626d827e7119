/*
 * protocol types — a request, its parts sent to nodes (frags) and the per-key slots of a
 * multi-node retrieval; types only, no functions, so any layer may include it.
 */
#ifndef GEOGATE_PROTOCOL_TYPES_H
#define GEOGATE_PROTOCOL_TYPES_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "gateway/protocol/proto_mc.h"

struct evbuffer;
struct gw_worker;

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
    /* A meta command: "mn" follows it to the node, and its reply is every line (and VA
     * data block) before that MN, passed on as it is (backend.c, be_meta_line). */
    bool meta;
    /* With cb: the reply is lines that begin with this ("STAT ", "key="), ended by the
     * first line that does not (END, or an error instead); each line may end in a bare
     * LF, as metadump's do.  NULL: the reply is one line. */
    const char *cb_body;
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

#define GW_META_X_ON 1    /* the text reply is put in meta words (meta_vers.c) */
#define GW_META_X_QUIET 2 /* q: HD is held back */
#define GW_META_X_VALUE 4 /* ma v: the new value as VA */
#define GW_META_X_VIVIFY 8 /* ma N on a miss: an add of J, whose digits follow meta_ret's NUL */

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
    uint8_t nkey1; /* a one-key get/gets of a replicating site: key1's length, kept for a
                    * retry at a peer (0: none) */
    uint32_t *slotidx;
    struct gw_req *next_free; /* in the worker's free list */
    uint8_t meta_x;  /* a meta command answered by its text twin: GW_META_X_* */
    char *meta_ret;  /* its return flags (" O.. k.. b"), owned; NULL: none */
    /* Last, and not cleared when a request is reused (gw_req_new): */
    char key1[MC_KEY_MAX_LENGTH]; /* a one-key get/gets: its key (frag.mkey) */
};

TAILQ_HEAD(gw_req_queue, gw_req);

#endif
