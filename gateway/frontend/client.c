/*
 * client — see client.h.
 *
 *   read ──> client_process: for each complete request in the input buffer
 *              ├─ swallow / data-block states finish a storage command first
 *              ├─ mc_frame_line + mc_parse (a copy of the line, tokenized in place; meta: as sent)
 *              └─ dispatch: error reply | local answer | forward via gw_route_key
 *   backend replies ──> req.c ──> client_req_ops.done ──> client_flush writes every
 *              finished request at the head of the queue, in order
 *
 * Back-pressure: what the gateway holds for one client is bounded whatever it sends.
 * Reading (and so parsing) stops while any of these holds, and resumes once all are
 * back below their low marks:
 *   - GW_CLIENT_MAX_INFLIGHT requests queued (low: half);
 *   - more than GW_CLIENT_OUT_HIGH bytes unsent to the client (low: GW_CLIENT_OUT_LOW);
 *   - GW_CLIENT_INFLIGHT_BYTES of requests in flight (low: half), counting a storage
 *     command's data block and, for a retrieval, the value size this client has been
 *     getting (reply_est; new clients start high, so a fresh connection that pipelines
 *     large gets has a handful in flight, and the estimate falls as small replies come);
 *   - for a client of large values: its socket has no room for the next one (the
 *     client is not reading; re-checked every tick).  Its replies then wait in the
 *     kernel, not here, as memcached's wait in memcached's socket.
 * Node connections are never paused for one client: everyone shares them.  Past
 * client_output_limit bytes unsent the client is disconnected (as Redis's
 * client-output-buffer-limit does).
 */
#include "gateway/frontend/client.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "gateway/base/clock.h"
#include "gateway/backend/backend.h"
#include "gateway/base/config.h"
#include "gateway/loop/conn.h"
#include "gateway/base/log.h"
#include "gateway/routing/pool.h"
#include "gateway/failover/failover.h"
#include "gateway/failover/remote.h"
#include "gateway/replication/repl.h"
#include "gateway/protocol/req.h"
#include "gateway/routing/route.h"
#include "gateway/server.h"
#include "gateway/frontend/meta_vers.h"
#include "gateway/frontend/vop.h"
#include "gateway/loop/worker.h"

#define GW_CLIENT_MAX_INFLIGHT 1024
#define GW_CLIENT_OUT_HIGH (1u << 20)
#define GW_CLIENT_OUT_LOW (256u << 10)
#define GW_CLIENT_INFLIGHT_BYTES (1u << 20)
#define GW_CLIENT_EST_INIT (256u << 10)   /* a new client: 4 retrievals in flight */
#define GW_CLIENT_BIG_VALUE (64u << 10)   /* from here on, ask the socket for room */
#define GW_CLIENT_KERNEL_QUEUE (1u << 20) /* of which this much at most */
#define GW_CLIENT_LIMIT_LOG_MS 10000
#define GW_TICK_GUESS_MS 50 /* the worker's tick */
#define GW_CLIENT_ROOM_BACKOFF_MAX_MS 250

static void client_process(struct gw_client *c);
static void client_close(struct gw_client *c);
static bool socket_has_room(const struct gw_client *c);

/* What req.c and the modules that answer requests (vop.c, remote.c) call back into a
 * client through: every request a client makes carries it (defined below). */
static const struct gw_req_ops client_req_ops;

/* ---- building lines for nodes ---- */

static bool out_reserve(struct gw_worker *w, size_t need)
{
    if (need <= w->out_cap) {
        return true;
    }
    size_t cap = w->out_cap ? w->out_cap : 512;
    while (cap < need) {
        cap *= 2;
    }
    char *p = realloc(w->out, cap);
    if (p == NULL) {
        return false;
    }
    w->out = p;
    w->out_cap = cap;
    return true;
}

static size_t put_str(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return n;
}

/* ---- replies the gateway writes itself ---- */

/* Answer with one line, in order: straight to the socket when nothing is queued
 * ahead of it, else as an already-finished request. */
static void reply_line(struct gw_client *c, const char *line)
{
    struct gw_req *r;

    if (TAILQ_EMPTY(&c->reqs)) {
        struct evbuffer *out = c->conn.out;
        size_t n = strlen(line);
        evbuffer_add(out, line, n);
        evbuffer_add(out, "\r\n", 2);
        gw_conn_want_flush(&c->conn);
        return;
    }
    r = gw_req_new(c->w, c, &client_req_ops, MC_CMD_NONE);
    if (r == NULL) {
        client_close(c);
        return;
    }
    TAILQ_INSERT_TAIL(&c->reqs, r, link);
    c->nreqs++;
    gw_req_finish_line(r, line);
}

/* Count `bytes` more against c's in-flight budget for r (one request never counts more
 * than the whole budget, so it can always go alone). */
static void client_charge(struct gw_client *c, struct gw_req *r, uint64_t bytes)
{
    uint64_t room = GW_CLIENT_INFLIGHT_BYTES -
                    (r->charge < GW_CLIENT_INFLIGHT_BYTES ? r->charge : GW_CLIENT_INFLIGHT_BYTES);

    if (bytes > room) {
        bytes = room;
    }
    r->charge += (uint32_t)bytes;
    c->inflight_bytes += bytes;
}

/* r leaves c's queue: give back its charge, and learn from its reply how large this
 * client's values are (up at once, down by halves). */
static void client_uncharge(struct gw_client *c, struct gw_req *r)
{
    c->inflight_bytes -= r->charge;
    r->charge = 0;
    if (mc_cmd_is_retrieval(r->cmd) && !r->failed) {
        uint32_t each = r->hits <= 1 ? r->reply_bytes : r->reply_bytes / r->hits;
        c->reply_est = each > c->reply_est ? each : c->reply_est - (c->reply_est - each) / 2;
    }
}

/* Queue a new request for c; NULL (and the connection closed) when out of memory. */
static struct gw_req *client_req(struct gw_client *c, enum mc_cmd cmd, bool noreply)
{
    struct gw_req *r = gw_req_new(c->w, c, &client_req_ops, cmd);

    if (r == NULL) {
        log_error("out of memory: closing a client");
        client_close(c);
        return NULL;
    }
    r->noreply = noreply;
    if (mc_cmd_is_retrieval(cmd)) {
        /* one key's worth (never above the budget); multi-key paths add the rest */
        r->charge = c->reply_est;
        c->inflight_bytes += c->reply_est;
    }
    TAILQ_INSERT_TAIL(&c->reqs, r, link);
    c->nreqs++;
    return r;
}

/* ---- writing out ---- */

/* Whether every back-pressure mark is back below its low side. */
static bool client_may_resume(const struct gw_client *c)
{
    return c->nreqs <= GW_CLIENT_MAX_INFLIGHT / 2 &&
           evbuffer_get_length(c->conn.out) <= GW_CLIENT_OUT_LOW &&
           c->inflight_bytes <= GW_CLIENT_INFLIGHT_BYTES / 2;
}

static void client_resume(struct gw_client *c)
{
    c->paused = false;
    if (!c->draining) {
        gw_conn_resume_read(&c->conn);
    }
    client_process(c);
}

/* A paused client's backlog changed: read it again if every mark is low, else make
 * sure the output's drain is what wakes it (requests finishing call here anyway).
 * Returns whether it resumed. */
static bool client_try_resume(struct gw_client *c)
{
    if (!c->paused) {
        return false;
    }
    if (c->wait_room) {
        if (!socket_has_room(c)) {
            return false; /* gw_client_tick looks again */
        }
        c->wait_room = false;
        c->w->nwait_room--;
    }
    if (client_may_resume(c)) {
        client_resume(c);
        return true;
    }
    if (evbuffer_get_length(c->conn.out) > GW_CLIENT_OUT_LOW) {
        gw_conn_notify_drain(&c->conn, GW_CLIENT_OUT_LOW);
    }
    return false;
}

/* The output drained (to 0 when quitting, to the low mark when paused). */
static void client_drain(struct gw_client *c);

static void client_drained(struct gw_conn *conn, void *arg)
{
    struct gw_client *c = arg;

    if (c->closing) {
        return;
    }
    if (c->quitting) {
        if (evbuffer_get_length(conn->out) == 0) {
            client_close(c);
        } else {
            gw_conn_notify_drain(conn, 0);
        }
        return;
    }
    client_try_resume(c);
}

static void client_close_after_write(struct gw_client *c)
{
    c->quitting = true;
    gw_conn_pause_read(&c->conn);
    if (evbuffer_get_length(c->conn.out) == 0) {
        client_close(c);
        return;
    }
    gw_conn_notify_drain(&c->conn, 0);
}

static void client_flush(struct gw_client *c)
{
    struct evbuffer *out = c->conn.out;
    struct gw_req *r;

    gw_conn_want_flush(&c->conn);
    while ((r = TAILQ_FIRST(&c->reqs)) != NULL && r->done) {
        bool quit = r->quit;
        TAILQ_REMOVE(&c->reqs, r, link);
        c->nreqs--;
        client_uncharge(c, r);
        if (r->meta_x != 0) {
            gw_meta_vers_reply(r);
        }
        if (r->reply != NULL) {
            evbuffer_add_buffer(out, r->reply);
        }
        gw_req_free(r);
        if (quit) {
            client_close_after_write(c);
            return;
        }
    }
    if ((!c->paused || !client_try_resume(c)) && (c->conn.eof || c->draining) &&
        TAILQ_EMPTY(&c->reqs)) {
        client_process(c); /* commands still in the input, then the close */
    }
}

/* client_req_ops.done: r (one of c's requests) has its full reply. */
static void client_req_done(struct gw_req *r)
{
    struct gw_client *c = r->client;

    if (c->closing) {
        return; /* the reaper frees finished requests */
    }
    client_flush(c);
}

/* ---- local answers ---- */

/* `stats [sub]`: client_stats.c answers it, in c's order. */
static void do_stats(struct gw_client *c, const struct mc_request *m)
{
    struct gw_req *r = client_req(c, MC_CMD_STATS, false);

    if (r != NULL) {
        gw_client_stats(r, m);
    }
}

/* An admin command every node of the pool answers (client_admin.c), in c's order. */
static void do_admin(struct gw_client *c, const struct mc_request *m)
{
    struct gw_req *r = client_req(c, m->cmd, m->noreply);

    if (r != NULL) {
        gw_client_admin(r, m);
    }
}

static void do_local(struct gw_client *c, const struct mc_request *m)
{
    struct gw_req *r;

    switch (m->cmd) {
    case MC_CMD_VERSION:
        reply_line(c, "VERSION " GW_MC_VERSION);
        break;
    case MC_CMD_VERBOSITY:
        /* memcached's verbosity changes its own logging; ours is set in the config. */
        if (!m->noreply) {
            reply_line(c, "OK");
        }
        break;
    case MC_CMD_STATS:
        do_stats(c, m);
        break;
    case MC_CMD_MN:
        reply_line(c, "MN");
        break;
    case MC_CMD_CACHE_MEMLIMIT:
    case MC_CMD_LRU_CRAWLER:
        do_admin(c, m);
        break;
    case MC_CMD_QUIT:
        c->quit_seen = true;
        gw_conn_pause_read(&c->conn);
        if (TAILQ_EMPTY(&c->reqs)) {
            client_close_after_write(c);
            break;
        }
        r = client_req(c, MC_CMD_QUIT, true);
        if (r != NULL) {
            r->quit = true;
            gw_req_finish(r);
        }
        break;
    default:
        reply_line(c, "ERROR");
        break;
    }
}

/* ---- forwarding ---- */

static const char *wire_name(enum mc_cmd cmd)
{
    return mc_cmd_name(cmd);
}

/* Where a routed write is carried out: -1 locally; else at that peer (the site is failed
 * over, so reads come from there and must see the write; or the key's node is down). */
static int write_peer(const struct gw_route *rt)
{
    return rt->kind == GW_ROUTE_FAILED_OVER || rt->kind == GW_ROUTE_PEER ? rt->peer : -1;
}

/* client_req_ops.retry_read: a get/gets whose node failed under it (req.c,
 * r->node_lost): ask a serving peer site instead and answer r from there.  false: no
 * peer, or not such a read; r fails. */
static bool client_retry_read(struct gw_req *r)
{
    struct mc_token stack[64];
    struct mc_token *keys = stack;
    uint32_t n = 0;
    int peer;

    if (r->client == NULL || (r->cmd != MC_CMD_GET && r->cmd != MC_CMD_GETS) ||
        (r->keybuf == NULL && r->nkey1 == 0) || (peer = gw_route_fallback_peer(r->w)) < 0 ||
        r->nkeys == 0) {
        return false;
    }
    if (r->nkeys > 64 && (keys = malloc(r->nkeys * sizeof(*keys))) == NULL) {
        return false;
    }
    if (r->keybuf == NULL) {
        keys[n].p = r->key1;
        keys[n++].len = r->nkey1;
    } else if (r->slots != NULL) {
        for (; n < r->nslots; n++) {
            keys[n].p = r->slots[n].key;
            keys[n].len = r->slots[n].nkey;
        }
    } else {
        for (char *p = r->keybuf; *p != '\0' && n < r->nkeys; n++) {
            char *sp = strchr(p, ' ');
            size_t kl = sp != NULL ? (size_t)(sp - p) : strlen(p);
            keys[n].p = p;
            keys[n].len = (uint32_t)kl;
            p += kl + (sp != NULL);
        }
    }
    log_debug("%s of %u keys: %s; asking peer %s", mc_cmd_name(r->cmd), n, r->error,
              r->w->srv->cfg->wan.peers[peer].site);
    gw_remote_retry(r, keys, n, peer);
    if (keys != stack) {
        free(keys);
    }
    return true;
}

/* A retrieval a peer site answers (remote.c), queued on c in order like any other;
 * warm: a warm-up read, local first and the misses from the peer. */
static void remote_read(struct gw_client *c, const struct mc_request *m, int peer, bool warm)
{
    struct gw_req *r = client_req(c, m->cmd, false);

    if (r == NULL) {
        return; /* the client is closed */
    }
    if (warm) {
        gw_remote_warm_retrieval(r, m, peer);
    } else {
        gw_remote_retrieval(r, m, peer);
    }
}

/* Fail a request at once because its node is down. */
static void fail_now(struct gw_client *c, enum mc_cmd cmd, bool noreply, const char *error)
{
    struct gw_req *r;

    STAT_INCR(&c->w->stats, server_errors);
    if (mc_cmd_is_retrieval(cmd)) {
        STAT_INCR(&c->w->stats, get_errors);
    }
    if (noreply) {
        return;
    }
    if (TAILQ_EMPTY(&c->reqs)) {
        reply_line(c, error);
        return;
    }
    r = client_req(c, cmd, false);
    if (r != NULL) {
        gw_req_finish_line(r, error);
    }
}

/* "get k1 k2\r\n" (or "gat exptime k1 k2\r\n") for the keys at idx[0..n). */
static size_t build_retrieval(struct gw_worker *w, const struct mc_request *m,
                              const struct mc_token *keys, const uint32_t *idx, uint32_t n)
{
    size_t need = 32;
    size_t len = 0;
    const char *name = wire_name(m->cmd);

    for (uint32_t i = 0; i < n; i++) {
        need += keys[idx ? idx[i] : i].len + 1;
    }
    if (!out_reserve(w, need)) {
        return 0;
    }
    len += put_str(w->out + len, name, strlen(name));
    if (m->cmd == MC_CMD_GAT || m->cmd == MC_CMD_GATS) {
        w->out[len++] = ' ';
        len += mc_put_i64(w->out + len, m->exptime);
    }
    for (uint32_t i = 0; i < n; i++) {
        const struct mc_token *k = &keys[idx ? idx[i] : i];
        w->out[len++] = ' ';
        len += put_str(w->out + len, k->p, k->len);
    }
    w->out[len++] = '\r';
    w->out[len++] = '\n';
    return len;
}

static void forward_retrieval_multi(struct gw_client *c, const struct mc_request *m,
                                    uint32_t *nodes);

/* A one-key get or gets: it may leave merged with its neighbours (gw_backend_send_get). */
static void forward_get_one(struct gw_client *c, const struct mc_request *m, uint32_t node)
{
    struct gw_worker *w = c->w;
    uint32_t nkey = m->keys[0].len;
    struct gw_req *r = client_req(c, m->cmd, false);

    if (r == NULL) {
        return;
    }
    r->nkeys = 1;
    r->pending = 1;
    memcpy(r->key1, m->keys[0].p, nkey);
    if (gw_server_replicates(w->srv)) {
        r->nkey1 = (uint8_t)nkey; /* a retry at a peer, should the node fail under it */
    }
    gw_backend_send_get(gw_worker_backend(w, node), &r->frag, m->cmd, r->key1, nkey);
}

static void forward_retrieval(struct gw_client *c, const struct mc_request *m)
{
    struct gw_worker *w = c->w;
    struct gw_route rt;
    uint32_t stack_nodes[64];
    uint32_t *nodes = stack_nodes;
    bool single = true;
    struct gw_req *r;
    size_t len;

    if (m->nkeys == 0) {
        reply_line(c, "END"); /* "gat 10" with no keys: memcached says END */
        return;
    }
    /* A site that reads from a peer (failed over, warming up) does so for every key. */
    rt = gw_route_site(w);
    if (rt.kind == GW_ROUTE_FAILED_OVER) {
        remote_read(c, m, rt.peer, false);
        return;
    }
    if (rt.kind == GW_ROUTE_WARMUP) {
        remote_read(c, m, rt.peer, true);
        return;
    }
    if (gw_server_replicates(w->srv) && (m->cmd == MC_CMD_GAT || m->cmd == MC_CMD_GATS)) {
        gw_client_versioned_gat(c, m);
        return;
    }
    if (m->nkeys > 64) {
        nodes = malloc(m->nkeys * sizeof(*nodes));
        if (nodes == NULL) {
            reply_line(c, "SERVER_ERROR out of memory");
            return;
        }
    }
    for (uint32_t i = 0; i < m->nkeys; i++) {
        rt = gw_route_key(w, m->keys[i].p, m->keys[i].len, GW_ROUTE_READ);
        switch (rt.kind) {
        case GW_ROUTE_LOCAL:
            break;
        case GW_ROUTE_DOWN:
            fail_now(c, m->cmd, false, w->pool->nodes[rt.node].err_down);
            goto out;
        case GW_ROUTE_WARMUP: /* the node came back cold (or the site began warming up) */
            remote_read(c, m, rt.peer, true);
            goto out;
        default: /* a key's node is down (or the site failed over meanwhile) */
            remote_read(c, m, rt.peer, false);
            goto out;
        }
        nodes[i] = rt.node;
        if (nodes[i] != nodes[0]) {
            single = false;
        }
    }
    if (!single) {
        forward_retrieval_multi(c, m, nodes);
        goto out;
    }
    if (m->nkeys == 1 && (m->cmd == MC_CMD_GET || m->cmd == MC_CMD_GETS)) {
        forward_get_one(c, m, nodes[0]);
        goto out;
    }
    len = build_retrieval(w, m, m->keys, NULL, m->nkeys);
    if (len == 0 || (r = client_req(c, m->cmd, false)) == NULL) {
        goto out;
    }
    client_charge(c, r, (uint64_t)c->reply_est * (m->nkeys - 1));
    r->nkeys = m->nkeys;
    r->pending = 1;
    if (gw_server_replicates(w->srv) && (m->cmd == MC_CMD_GET || m->cmd == MC_CMD_GETS)) {
        /* kept for a retry at a peer should the node fail under this read */
        size_t skip = strlen(wire_name(m->cmd)) + 1;
        r->keybuf = malloc(len - skip - 1);
        if (r->keybuf != NULL) {
            memcpy(r->keybuf, w->out + skip, len - skip - 2);
            r->keybuf[len - skip - 2] = '\0';
        }
    }
    gw_backend_send(gw_worker_backend(w, nodes[0]), &r->frag, w->out, len, NULL, 0);
out:
    if (nodes != stack_nodes) {
        free(nodes);
    }
}

/* Keys on several nodes: one frag per node, sent together; slots put the replies
 * back in the client's order. */
static void forward_retrieval_multi(struct gw_client *c, const struct mc_request *m,
                                    uint32_t *nodes)
{
    struct gw_worker *w = c->w;
    uint32_t nn = w->pool->nnodes;
    uint32_t *count = calloc(nn, sizeof(*count));
    uint32_t *start = calloc(nn, sizeof(*start));
    struct mc_token *keys = NULL;
    struct gw_req *r = NULL;
    size_t keybytes = 0;
    char *kp;
    uint32_t nfrags = 0;

    if (count == NULL || start == NULL) {
        goto oom;
    }
    for (uint32_t i = 0; i < m->nkeys; i++) {
        if (count[nodes[i]]++ == 0) {
            nfrags++;
        }
        keybytes += m->keys[i].len;
    }
    r = client_req(c, m->cmd, false);
    if (r == NULL) {
        goto out;
    }
    client_charge(c, r, (uint64_t)c->reply_est * (m->nkeys - 1));
    r->nkeys = m->nkeys;
    r->slots = calloc(m->nkeys, sizeof(*r->slots));
    r->slotidx = malloc(m->nkeys * sizeof(*r->slotidx));
    r->keybuf = malloc(keybytes + 1);
    r->frags = calloc(nfrags, sizeof(*r->frags));
    keys = malloc(m->nkeys * sizeof(*keys));
    if (r->slots == NULL || r->slotidx == NULL || r->keybuf == NULL || r->frags == NULL ||
        keys == NULL) {
        goto oom_req;
    }
    r->nslots = m->nkeys;
    r->nfrags = nfrags;
    /* slotidx holds, node after node, the slots each node answers, in key order. */
    for (uint32_t n = 0, pos = 0; n < nn; n++) {
        start[n] = pos;
        pos += count[n];
        count[n] = 0;
    }
    kp = r->keybuf;
    for (uint32_t i = 0; i < m->nkeys; i++) {
        struct gw_keyslot *s = &r->slots[i];
        memcpy(kp, m->keys[i].p, m->keys[i].len);
        s->key = kp;
        s->nkey = m->keys[i].len;
        s->node = nodes[i];
        keys[i].p = kp;
        keys[i].len = m->keys[i].len;
        kp += m->keys[i].len;
        s->pos = count[nodes[i]];
        r->slotidx[start[nodes[i]] + count[nodes[i]]++] = i;
    }
    r->pending = nfrags;
    for (uint32_t n = 0, f = 0; n < nn; n++) {
        struct gw_frag *frag;
        size_t len;
        if (count[n] == 0) {
            continue;
        }
        frag = &r->frags[f++];
        frag->req = r;
        frag->slots = &r->slotidx[start[n]];
        frag->nslots = count[n];
        for (uint32_t k = 0; k < count[n]; k++) {
            r->slots[frag->slots[k]].frag = f - 1;
        }
        len = build_retrieval(w, m, keys, frag->slots, frag->nslots);
        if (len == 0) {
            gw_req_frag_fail(frag, "SERVER_ERROR out of memory");
            continue;
        }
        gw_backend_send(gw_worker_backend(w, n), frag, w->out, len, NULL, 0);
    }
    goto out;

oom_req:
    r->pending = 0;
    r->failed = false;
    gw_req_finish_line(r, "SERVER_ERROR out of memory");
    goto out;
oom:
    reply_line(c, "SERVER_ERROR out of memory");
out:
    free(keys);
    free(count);
    free(start);
}

/* Remember a storage command until its data block is in. */
static void begin_store(struct gw_client *c, const struct mc_request *m)
{
    struct gw_store_pending *st = c->store;
    struct gw_route rt = gw_route_key(c->w, m->key, m->nkey, GW_ROUTE_WRITE);
    const char *name = wire_name(m->cmd);
    size_t len = 0;

    if (rt.kind == GW_ROUTE_DOWN) {
        /* The value still has to be read past before the next command. */
        fail_now(c, m->cmd, m->noreply, c->w->pool->nodes[rt.node].err_down);
        c->in_state = GW_IN_SWALLOW;
        c->swallow_left = (uint32_t)m->vlen + 2;
        return;
    }
    if (st == NULL) {
        st = c->store = calloc(1, sizeof(*st));
        if (st == NULL) {
            client_close(c);
            return;
        }
    }
    st->cmd = m->cmd;
    st->noreply = m->noreply;
    st->node = rt.node;
    st->remote = write_peer(&rt);
    st->vlen = (uint32_t)m->vlen + 2;
    st->flags = m->flags;
    st->exptime = m->exptime;
    st->cas_unique = m->cas_unique;
    st->nkey = (uint16_t)m->nkey;
    memcpy(st->key, m->key, m->nkey);
    len = mc_put_storage_line(st->hdr, name, strlen(name), m->key, m->nkey, m->flags, m->exptime,
                              (uint64_t)m->vlen, m->cmd == MC_CMD_CAS, m->cas_unique);
    st->hdrlen = (uint16_t)len;
    c->in_state = GW_IN_DATA;
}

/*
 * The data block of the pending storage command has arrived whole: check its end and
 * send it on.  It is the first vlen bytes of in or, when in is NULL, at flat (the read
 * buffer; never for a versioned gateway, whose gw_vop_store takes an evbuffer).
 */
static void finish_store(struct gw_client *c, struct evbuffer *in, const char *flat)
{
    struct gw_store_pending *st = c->store;
    struct evbuffer_ptr pos;
    char last2[2] = {0, 0};
    bool down = false;
    struct gw_req *r;

    c->in_state = GW_IN_LINE;
    if (st->cmd == MC_CMD_MS) {
        gw_client_meta_store(c, in, flat);
        return;
    }
    if (in != NULL) {
        evbuffer_ptr_set(in, &pos, st->vlen - 2, EVBUFFER_PTR_SET);
        evbuffer_copyout_from(in, &pos, last2, 2);
    } else {
        memcpy(last2, flat + st->vlen - 2, 2);
    }
    if (!mc_data_block_ok(last2)) {
        if (in != NULL) {
            evbuffer_drain(in, st->vlen);
        }
        STAT_INCR(&c->w->stats, client_errors);
        if (!st->noreply) {
            reply_line(c, "CLIENT_ERROR bad data chunk");
        }
        return;
    }
    STAT_INCR(&c->w->stats, cmd_set);
    if (st->remote < 0) {
        /* the node may have gone down while the value was arriving */
        struct gw_route rt = gw_route_node(c->w, st->node, GW_ROUTE_NODE);
        st->remote = write_peer(&rt);
        down = rt.kind == GW_ROUTE_DOWN;
    }
    if (down) {
        if (in != NULL) {
            evbuffer_drain(in, st->vlen);
        }
        fail_now(c, st->cmd, st->noreply, c->w->pool->nodes[st->node].err_down);
        return;
    }
    r = client_req(c, st->cmd, st->noreply);
    if (r == NULL) {
        return; /* the client is closed */
    }
    client_charge(c, r, st->vlen); /* its data block is on its way to the node */
    if (gw_server_replicates(c->w->srv)) {
        gw_vop_store(c->w, r, st, st->key, st->nkey, st->flags, st->exptime, st->cas_unique, in,
                     st->remote);
        return;
    }
    r->pending = 1;
    if (in != NULL) {
        gw_backend_send(gw_worker_backend(c->w, st->node), &r->frag, st->hdr, st->hdrlen, in,
                        st->vlen);
    } else {
        gw_backend_send_bytes(gw_worker_backend(c->w, st->node), &r->frag, st->hdr, st->hdrlen,
                              flat, st->vlen);
    }
}

/* delete / incr / decr / touch: one key, one line. */
static void forward_keyed(struct gw_client *c, const struct mc_request *m)
{
    struct gw_worker *w = c->w;
    struct gw_route rt = gw_route_key(w, m->key, m->nkey, GW_ROUTE_WRITE);
    const char *name = wire_name(m->cmd);
    struct gw_req *r;
    size_t len = 0;

    if (rt.kind == GW_ROUTE_DOWN) {
        fail_now(c, m->cmd, m->noreply, w->pool->nodes[rt.node].err_down);
        return;
    }
    if (gw_server_replicates(w->srv)) {
        r = client_req(c, m->cmd, m->noreply);
        if (r != NULL) {
            gw_vop_keyed(w, r, rt.node, m, write_peer(&rt));
        }
        return;
    }
    if (!out_reserve(w, 64 + m->nkey)) {
        reply_line(c, "SERVER_ERROR out of memory");
        return;
    }
    len += put_str(w->out + len, name, strlen(name));
    w->out[len++] = ' ';
    len += put_str(w->out + len, m->key, m->nkey);
    if (m->cmd == MC_CMD_INCR || m->cmd == MC_CMD_DECR) {
        w->out[len++] = ' ';
        len += mc_put_u64(w->out + len, m->delta);
    } else if (m->cmd == MC_CMD_TOUCH) {
        w->out[len++] = ' ';
        len += mc_put_i64(w->out + len, m->exptime);
    }
    w->out[len++] = '\r';
    w->out[len++] = '\n';
    r = client_req(c, m->cmd, m->noreply);
    if (r == NULL) {
        return;
    }
    r->pending = 1;
    gw_backend_send(gw_worker_backend(w, rt.node), &r->frag, w->out, len, NULL, 0);
}

/* flush_all goes to every node of the pool. */
static void forward_flush(struct gw_client *c, const struct mc_request *m)
{
    struct gw_worker *w = c->w;
    uint32_t nn = w->pool->nnodes;
    char line[48];
    size_t len = 0;
    struct gw_req *r;

    STAT_INCR(&w->stats, cmd_flush);
    for (uint32_t i = 0; i < nn; i++) {
        if (!gw_node_usable(&w->pool->nodes[i])) {
            fail_now(c, m->cmd, m->noreply, w->pool->nodes[i].err_down);
            return;
        }
    }
    len += put_str(line, "flush_all", 9);
    if (m->has_delay) {
        line[len++] = ' ';
        len += mc_put_i64(line + len, m->exptime);
    }
    line[len++] = '\r';
    line[len++] = '\n';
    r = client_req(c, m->cmd, m->noreply);
    if (r == NULL) {
        return;
    }
    r->frags = calloc(nn, sizeof(*r->frags));
    if (r->frags == NULL) {
        gw_req_finish_line(r, "SERVER_ERROR out of memory");
        return;
    }
    r->nfrags = nn;
    r->pending = nn;
    r->flush_delay = m->has_delay ? m->exptime : 0;
    for (uint32_t i = 0; i < nn; i++) {
        r->frags[i].req = r;
        gw_backend_send(gw_worker_backend(w, i), &r->frags[i], line, len, NULL, 0);
    }
}

/* memcached drops the old value when a set is refused as too large; so do we. */
static void drop_too_large(struct gw_client *c, const struct mc_request *m)
{
    struct gw_worker *w = c->w;
    struct gw_route rt = gw_route_key(w, m->key, m->nkey, GW_ROUTE_NODE);
    struct gw_req *r;
    size_t len = 0;

    STAT_INCR(&w->stats, store_too_large);
    if (m->cmd != MC_CMD_SET || rt.kind != GW_ROUTE_LOCAL || !out_reserve(w, 16 + m->nkey)) {
        return;
    }
    r = gw_req_new(w, NULL, &client_req_ops, MC_CMD_DELETE); /* nobody waits for this one */
    if (r == NULL) {
        return;
    }
    r->noreply = true;
    r->pending = 1;
    len += put_str(w->out, "delete ", 7);
    len += put_str(w->out + len, m->key, m->nkey);
    w->out[len++] = '\r';
    w->out[len++] = '\n';
    gw_backend_send(gw_worker_backend(w, rt.node), &r->frag, w->out, len, NULL, 0);
}

static void dispatch(struct gw_client *c, const struct mc_request *m)
{
    switch (m->action) {
    case MC_ACT_ERROR_SWALLOW:
        c->in_state = GW_IN_SWALLOW;
        c->swallow_left = m->swallow;
        if (m->cmd == MC_CMD_MS) {
            gw_client_meta_drop(c, m);
        } else if (m->key != NULL) {
            drop_too_large(c, m);
        }
        /* fall through */
    case MC_ACT_ERROR:
        STAT_INCR(&c->w->stats, client_errors);
        if (!m->noreply) {
            reply_line(c, m->error);
        }
        return;
    case MC_ACT_LOCAL:
        do_local(c, m);
        return;
    case MC_ACT_CLOSE:
        STAT_INCR(&c->w->stats, client_errors);
        log_debug("closing a client: it sent an HTTP request line");
        client_close(c);
        return;
    case MC_ACT_FORWARD:
        break;
    default:
        reply_line(c, "ERROR");
        return;
    }
    if (mc_cmd_is_retrieval(m->cmd)) {
        forward_retrieval(c, m);
    } else if (mc_cmd_is_storage(m->cmd)) {
        begin_store(c, m);
    } else if (m->cmd == MC_CMD_FLUSH_ALL) {
        forward_flush(c, m);
    } else {
        forward_keyed(c, m);
    }
}

/* ---- reading ---- */

static bool scratch_reserve(struct gw_worker *w, size_t need)
{
    if (need <= w->scratch_cap) {
        return true;
    }
    size_t cap = w->scratch_cap ? w->scratch_cap : 1024;
    while (cap < need) {
        cap *= 2;
    }
    char *p = realloc(w->scratch, cap);
    if (p == NULL) {
        return false;
    }
    w->scratch = p;
    w->scratch_cap = cap;
    return true;
}

/*
 * Whether c's socket can take its next large value as well as everything in flight,
 * within its send buffer and within GW_CLIENT_KERNEL_QUEUE (a thousand clients that do
 * not read would otherwise park 4 MiB each in the kernel and push every socket of the
 * machine into TCP memory pressure).  An idle socket with nothing in flight always
 * can, so a value goes even when it is larger than the send buffer so far.
 */
static bool socket_has_room(const struct gw_client *c)
{
    int queued = 0;
    int sndbuf = 0;
    socklen_t len = sizeof(sndbuf);

    if (ioctl(c->conn.fd, SIOCOUTQ, &queued) == -1 ||
        getsockopt(c->conn.fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) == -1) {
        return true; /* the socket failed: let the next write say so */
    }
    if (queued <= 0 && c->inflight_bytes == 0) {
        return true;
    }
    sndbuf /= 2; /* the kernel counts its bookkeeping in it too: about half is data */
    if (sndbuf > (int)GW_CLIENT_KERNEL_QUEUE) {
        sndbuf = (int)GW_CLIENT_KERNEL_QUEUE;
    }
    return sndbuf > queued && (uint64_t)(sndbuf - queued) >= c->inflight_bytes + c->reply_est;
}

enum client_backlog { BACKLOG_NONE = 0, BACKLOG_QUEUED, BACKLOG_ROOM, BACKLOG_MAX };

/* Why c must not be read now, if it must not. */
static enum client_backlog client_backlog(const struct gw_client *c)
{
    if (c->nreqs >= GW_CLIENT_MAX_INFLIGHT ||
        (c->nreqs > 0 && c->inflight_bytes >= GW_CLIENT_INFLIGHT_BYTES) ||
        evbuffer_get_length(c->conn.out) > GW_CLIENT_OUT_HIGH) {
        return BACKLOG_QUEUED;
    }
    if (c->reply_est >= GW_CLIENT_BIG_VALUE && !socket_has_room(c)) {
        return BACKLOG_ROOM;
    }
    return BACKLOG_NONE;
}

static bool backlogged(const struct gw_client *c)
{
    return client_backlog(c) != BACKLOG_NONE;
}

static void pause_reading(struct gw_client *c)
{
    if (!c->paused) {
        STAT_INCR(&c->w->stats, read_pauses);
    }
    c->paused = true;
    gw_conn_pause_read(&c->conn);
    if (!c->wait_room && client_backlog(c) == BACKLOG_ROOM) {
        c->wait_room = true; /* no event says when the client reads: gw_client_tick looks */
        c->w->nwait_room++;
        c->room_backoff_ms = 0;
        c->room_check_ms = 0;
    }
    /* Paused for unsent output: resume once the socket has taken it down to the low mark.
     * Paused for requests in flight: client_flush resumes as they finish.  (Asking for a
     * drain notice when the output is already small would resume at once and spin.) */
    if (evbuffer_get_length(c->conn.out) > GW_CLIENT_OUT_LOW) {
        gw_conn_notify_drain(&c->conn, GW_CLIENT_OUT_LOW);
    }
}

/* A command line, without its "\n", is in the worker's scratch: parse and dispatch it. */
static void client_line(struct gw_client *c, size_t raw)
{
    struct gw_worker *w = c->w;
    struct mc_request m;
    size_t len = raw;
    bool meta;

    if (len > 1 && w->scratch[len - 1] == '\r') {
        len--;
    }
    /* A meta command goes on as it came: keep it before mc_parse cuts it into tokens. */
    meta = len >= 2 && w->scratch[0] == 'm' && out_reserve(w, len);
    if (meta) {
        memcpy(w->out, w->scratch, len);
    }
    if (mc_parse(&w->parser, w->scratch, len, w->srv->max_value_bytes, &m) != 0) {
        reply_line(c, "SERVER_ERROR out of memory");
        return;
    }
    if (meta && m.action == MC_ACT_FORWARD && mc_cmd_is_meta(m.cmd)) {
        gw_client_meta(c, &m, w->out, len);
        return;
    }
    dispatch(c, &m);
}

static void client_process_once(struct gw_client *c)
{
    struct gw_worker *w = c->w;
    struct gw_server *srv = w->srv;
    struct evbuffer *in = c->conn.in;

    for (;;) {
        size_t avail;
        struct evbuffer_ptr eol;
        size_t raw;

        if (c->closing || c->quitting || c->quit_seen) {
            return;
        }
        avail = evbuffer_get_length(in);
        if (c->in_state == GW_IN_SWALLOW) {
            size_t n = avail < c->swallow_left ? avail : c->swallow_left;
            evbuffer_drain(in, n);
            c->swallow_left -= (uint32_t)n;
            if (c->swallow_left > 0) {
                return;
            }
            c->in_state = GW_IN_LINE;
            continue;
        }
        if (c->in_state == GW_IN_DATA) {
            if (avail < c->store->vlen) {
                return;
            }
            finish_store(c, in, NULL);
            continue;
        }
        if (c->barrier > 0) {
            return; /* resumed by gw_client_barrier_release */
        }
        if (c->draining) {
            /* nothing more is read from the socket; what was read is still answered
             * (client_finish_at_eof closes once it is) */
            gw_conn_pause_read(&c->conn);
        }
        if (avail == 0) {
            return;
        }
        if (backlogged(c)) {
            pause_reading(c);
            return;
        }
        eol = evbuffer_search(in, "\n", 1, NULL);
        if (eol.pos < 0) {
            char head[128];
            ev_ssize_t n = evbuffer_copyout(in, head, sizeof(head));
            enum mc_frame f =
                mc_frame_no_eol(head, n > 0 ? (size_t)n : 0, avail, srv->max_request_bytes);
            if (f == MC_FRAME_CLOSE) {
                log_debug("closing a client: %zu bytes without a newline", avail);
                client_close(c);
            } else if (f == MC_FRAME_TOO_LONG) {
                STAT_INCR(&w->stats, client_errors);
                reply_line(c, "SERVER_ERROR request line too long");
                client_close_after_write(c);
            }
            return;
        }
        raw = (size_t)eol.pos;
        if (!scratch_reserve(w, raw + 1)) {
            reply_line(c, "SERVER_ERROR out of memory");
            client_close_after_write(c);
            return;
        }
        evbuffer_copyout(in, w->scratch, raw);
        evbuffer_drain(in, raw + 1);
        client_line(c, raw);
    }
}

/* Whether the next command line may be read now (the checks client_process_once
 * makes before it looks for one). */
static bool client_takes_lines(const struct gw_client *c)
{
    return !c->closing && !c->quitting && !c->quit_seen && c->in_state == GW_IN_LINE &&
           c->barrier == 0 && !c->draining && !backlogged(c);
}

/*
 * conn on_data: the command lines of a read that found the input buffer empty, parsed
 * straight from the read buffer.  It stops at a storage command's data block, at a
 * line cut short, or wherever client_process_once would stop; the rest goes through
 * the input buffer and client_process as before.
 */
static size_t client_take(struct gw_conn *conn, void *arg, const char *p, size_t n)
{
    struct gw_client *c = arg;
    size_t used = 0;

    (void)conn;
    if (c->in_process) {
        return 0;
    }
    c->in_process = true;
    while (used < n) {
        const char *eol;
        size_t raw;

        if (c->in_state == GW_IN_DATA && !gw_server_replicates(c->w->srv) && !c->closing &&
            !c->quitting && !c->quit_seen) {
            /* a storage command's data block, whole in this read: straight on */
            if (n - used < c->store->vlen) {
                break;
            }
            used += c->store->vlen;
            finish_store(c, NULL, p + used - c->store->vlen);
            continue;
        }
        if (!client_takes_lines(c)) {
            break;
        }
        eol = memchr(p + used, '\n', n - used);
        if (eol == NULL) {
            break;
        }
        raw = (size_t)(eol - (p + used));
        if (!scratch_reserve(c->w, raw + 1)) {
            break; /* client_process_once answers it */
        }
        memcpy(c->w->scratch, p + used, raw);
        used += raw + 1;
        client_line(c, raw);
    }
    c->in_process = false;
    return used;
}

/* After the client's EOF, or while draining: once every command it sent (and the
 * gateway read) is answered and what is left in the input is no whole command, close
 * after the last reply is written.  memcached likewise drops a command cut short by the
 * close. */
static void client_finish_at_eof(struct gw_client *c)
{
    if ((c->conn.eof || (c->draining && c->in_state == GW_IN_LINE)) && !c->closing &&
        !c->quitting && !c->paused && c->barrier == 0 && TAILQ_EMPTY(&c->reqs)) {
        client_close_after_write(c);
    }
}

static void client_process(struct gw_client *c)
{
    if (c->in_process) {
        c->again = true;
        return;
    }
    c->in_process = true;
    do {
        c->again = false;
        client_process_once(c);
    } while (c->again && !c->closing);
    c->in_process = false;
    client_finish_at_eof(c);
}

static void client_read(struct gw_conn *conn, void *arg)
{
    struct gw_client *c = arg;

    (void)conn;
    /* atomic: `stats conns` on another worker reads it */
    __atomic_store_n(&c->last_active_ms, c->w->now_ms, __ATOMIC_RELAXED);
    client_process(c);
}

/* A client that does not read its replies passed client_output_limit: it is
 * disconnected, and the log says so once per interval with a count. */
static void client_limit_kick(struct gw_client *c)
{
    struct gw_worker *w = c->w;

    STAT_INCR(&w->stats, output_limit_kicks);
    if (w->now_ms - w->limit_log_ms < GW_CLIENT_LIMIT_LOG_MS) {
        w->limit_log_quiet++;
        return;
    }
    log_warn("disconnected a client with more than %llu bytes of unsent replies "
             "(client_output_limit; %u more since the last such line)",
             (unsigned long long)w->srv->client_output_limit, w->limit_log_quiet);
    w->limit_log_ms = w->now_ms;
    w->limit_log_quiet = 0;
}

/*
 * The client shut down its write side (or closed): what it sent before is still
 * answered, in order, as memcached answers it, and the connection closes once the
 * last reply is written.  A failed socket (reset, error) closes at once.
 */
static void client_error(struct gw_conn *conn, void *arg, bool eof)
{
    struct gw_client *c = arg;

    (void)conn;
    if (!eof) {
        if (c->conn.over_limit) {
            client_limit_kick(c);
        }
        client_close(c);
        return;
    }
    client_process(c);
}

/* ---- life cycle ---- */

void gw_client_accept(struct gw_worker *w, int fd)
{
    struct gw_client *c = calloc(1, sizeof(*c));

    if (c == NULL || gw_conn_open(&c->conn, w, fd, client_read, client_error, c) != 0) {
        free(c);
        close(fd);
        __atomic_sub_fetch(&w->srv->curr_connections, 1, __ATOMIC_RELAXED);
        return;
    }
    c->conn.on_drain = client_drained;
    c->conn.on_data = client_take;
    c->conn.bytes_in = &w->stats.bytes_read;
    c->conn.bytes_out = &w->stats.bytes_written;
    c->conn.out_limit = (size_t)w->srv->client_output_limit;
    c->w = w;
    c->reply_est = GW_CLIENT_EST_INIT;
    __atomic_store_n(&c->last_active_ms, gw_mono_ms(), __ATOMIC_RELAXED);
    TAILQ_INIT(&c->reqs);
    pthread_mutex_lock(&w->clients_lock);
    TAILQ_INSERT_TAIL(&w->clients, c, link);
    pthread_mutex_unlock(&w->clients_lock);
    w->nclients++;
    STAT_INCR(&w->stats, total_connections);
    if (w->draining) {
        client_drain(c);
    }
}

static void client_close(struct gw_client *c)
{
    struct gw_worker *w = c->w;

    if (c->closing) {
        return;
    }
    c->closing = true;
    if (c->wait_room) {
        c->wait_room = false;
        w->nwait_room--;
    }
    gw_conn_pause_read(&c->conn);
    pthread_mutex_lock(&w->clients_lock);
    TAILQ_REMOVE(&w->clients, c, link);
    pthread_mutex_unlock(&w->clients_lock);
    TAILQ_INSERT_TAIL(&w->dead, c, link);
    event_active(w->reap_ev, EV_TIMEOUT, 0);
}

struct gw_req *gw_client_new_req(struct gw_client *c, enum mc_cmd cmd)
{
    return client_req(c, cmd, false);
}

void gw_client_reply_error(struct gw_client *c, const char *line)
{
    reply_line(c, line);
}

void gw_client_barrier_hold(struct gw_client *c)
{
    c->barrier++;
}

void gw_client_barrier_release(struct gw_client *c)
{
    if (c->barrier > 0 && --c->barrier == 0 && !c->closing) {
        client_process(c);
    }
}

/* client_req_ops.abort: close r's client once what is already in its output is written;
 * a reply broke off half-way and the stream can no longer be trusted. */
static void client_abort(struct gw_req *r)
{
    struct gw_client *c = r->client;

    if (!c->closing) {
        log_warn("closing a client: a backend failed in the middle of its reply");
        client_close_after_write(c);
    }
}

/* client_req_ops.flushed: a flush_all every node took; a replicating gateway ships it
 * (whether or not its client is still there). */
static void client_flushed(struct gw_req *r)
{
    if (gw_server_replicates(r->w->srv)) {
        gw_repl_ship_flush(r->w, r->flush_delay);
    }
}

static const struct gw_req_ops client_req_ops = {
    .done = client_req_done,
    .abort = client_abort,
    .retry_read = client_retry_read,
    .flushed = client_flushed,
    .barrier_hold = gw_client_barrier_hold,
    .barrier_release = gw_client_barrier_release,
};

static void client_drain(struct gw_client *c)
{
    if (c->closing) {
        return;
    }
    c->draining = true;
    /* what it sent and the gateway read is answered; a data block on its way is read to
     * its end (client_process_once stops reading at the next line) */
    if (!c->in_process) {
        client_process(c);
    }
}

void gw_client_reap(struct gw_worker *w)
{
    struct gw_client *c;
    struct gw_req *r;

    while ((c = TAILQ_FIRST(&w->dead)) != NULL) {
        TAILQ_REMOVE(&w->dead, c, link);
        while ((r = TAILQ_FIRST(&c->reqs)) != NULL) {
            TAILQ_REMOVE(&c->reqs, r, link);
            if (r->done || r->pending == 0) {
                gw_req_free(r);
            } else {
                r->client = NULL; /* the backend reply frees it */
            }
        }
        if (c->conn.out != NULL) {
            gw_backend_forget_dst(w, c->conn.out); /* a value streaming to it when it went */
        }
        gw_conn_close(&c->conn);
        free(c->store != NULL ? c->store->meta_line : NULL);
        free(c->store);
        free(c);
        w->nclients--;
        __atomic_sub_fetch(&w->srv->curr_connections, 1, __ATOMIC_RELAXED);
    }
}

void gw_client_drain_all(struct gw_worker *w)
{
    struct gw_client *c, *next;

    for (c = TAILQ_FIRST(&w->clients); c != NULL; c = next) {
        next = TAILQ_NEXT(c, link);
        client_drain(c);
    }
}

void gw_client_close_all(struct gw_worker *w)
{
    struct gw_client *c;

    /* Anything still open after the drain deadline is closed now. */
    while ((c = TAILQ_FIRST(&w->clients)) != NULL) {
        client_drain(c);
        if (TAILQ_FIRST(&w->clients) == c) {
            /* still busy: force it */
            c->quitting = true;
            pthread_mutex_lock(&w->clients_lock);
            TAILQ_REMOVE(&w->clients, c, link);
            pthread_mutex_unlock(&w->clients_lock);
            TAILQ_INSERT_TAIL(&w->dead, c, link);
            c->closing = true;
        }
    }
    gw_client_reap(w);
}

/*
 * A client waiting for room in its socket: look again, less often the longer it waits
 * (a thousand clients that never read cost a few syscalls each per check).  No event
 * reports a reset while reading is paused, and a reset socket keeps the length of its
 * queue, so the socket's error is asked for too.
 */
static void client_room_tick(struct gw_client *c, int64_t now)
{
    int err = 0;
    socklen_t len = sizeof(err);

    if (now < c->room_check_ms) {
        return;
    }
    if (client_try_resume(c) || !c->wait_room) {
        c->room_backoff_ms = 0;
        return;
    }
    if (getsockopt(c->conn.fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1 || err != 0) {
        log_debug("closing a client that went away while paused: %s", strerror(err));
        client_close(c);
        return;
    }
    c->room_backoff_ms = c->room_backoff_ms == 0 ? GW_TICK_GUESS_MS : c->room_backoff_ms * 2;
    if (c->room_backoff_ms > GW_CLIENT_ROOM_BACKOFF_MAX_MS) {
        c->room_backoff_ms = GW_CLIENT_ROOM_BACKOFF_MAX_MS;
    }
    c->room_check_ms = now + c->room_backoff_ms;
}

void gw_client_tick(struct gw_worker *w, int64_t now)
{
    uint32_t idle = w->srv->idle_timeout_ms;
    bool check_idle = idle > 0 && now - w->idle_check_ms >= 1000;
    struct gw_client *c, *next;

    if (w->nwait_room == 0 && !check_idle) {
        return;
    }
    if (check_idle) {
        w->idle_check_ms = now;
    }
    for (c = TAILQ_FIRST(&w->clients); c != NULL; c = next) {
        next = TAILQ_NEXT(c, link);
        if (c->wait_room) {
            client_room_tick(c, now);
            continue;
        }
        /* memcached's idle_timeout: no command for that long and nothing owed to it */
        if (check_idle && !c->closing && TAILQ_EMPTY(&c->reqs) &&
            evbuffer_get_length(c->conn.out) == 0 && now - c->last_active_ms > (int64_t)idle) {
            STAT_INCR(&w->stats, idle_kicks);
            log_debug("closing a client idle for %lld ms (idle_timeout)",
                      (long long)(now - c->last_active_ms));
            client_close(c);
        }
    }
}
