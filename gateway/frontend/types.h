/*
 * frontend types — a client connection and the storage command it is reading; types only.
 */
#ifndef GEOGATE_FRONTEND_TYPES_H
#define GEOGATE_FRONTEND_TYPES_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "gateway/loop/conn.h"
#include "gateway/protocol/types.h"

struct gw_worker;

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
    uint64_t client_version; /* meta ms E<token>: the version to write with; 0: the clock's */
    char *meta_line;         /* ms: the line as the client sent it, with "\r\n" (client_meta.c) */
    uint32_t meta_len, meta_cap;
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
    bool quitting;   /* close as soon as the output is written */
    bool quit_seen;  /* `quit` read: parse nothing more */
    bool paused;     /* reading stopped for back-pressure */
    bool in_process; /* re-entrancy guard for client_process */
    bool again;
    bool draining;
    struct gw_store_pending *store;
    uint32_t barrier; /* commands in flight that later ones must wait for */
    /* Back-pressure (client.c): what the requests in flight may bring back or carry,
     * and the size of a value this client usually gets. */
    uint64_t inflight_bytes;
    uint32_t reply_est;
    bool wait_room;           /* paused until its socket can take the next value */
    uint32_t room_backoff_ms; /* ... looked at again then (gw_client_tick) */
    int64_t room_check_ms;
    int64_t last_active_ms; /* last read (idle_timeout) */
};

TAILQ_HEAD(gw_client_list, gw_client);

#endif
