/*
 * backend types — one worker's connection to one memcached node; types only.
 */
#ifndef GEOGATE_BACKEND_TYPES_H
#define GEOGATE_BACKEND_TYPES_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "gateway/loop/conn.h"
#include "gateway/protocol/types.h"

struct evbuffer;
struct gw_worker;

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

TAILQ_HEAD(gw_backend_list, gw_backend);

#endif
