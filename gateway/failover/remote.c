/*
 * remote — see remote.h.
 *
 * A peer's cas tokens: an item read from a peer carries no memcached cas of ours, so
 * `gets` answers with the item's version clock (its HLC) as the token.  A `cas` with it
 * fails (EXISTS) against a local item, exactly like any stale token; clients that use
 * gets/cas treat that as a lost race and read again.
 */
#include "gateway/failover/remote.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "gateway/base/clock.h"
#include "gateway/store/apply.h"
#include "gateway/store/item.h"
#include "gateway/backend/backend.h"
#include "gateway/base/config.h"
#include "gateway/failover/failover.h"
#include "gateway/base/log.h"
#include "gateway/routing/pool.h"
#include "gateway/replication/repl.h"
#include "gateway/protocol/req.h"
#include "gateway/server.h"
#include "gateway/loop/worker.h"
#include "proto/geogate_wan.pb-c.h"
#include "wan/grpc_client.h"
#include "wan/version.h"

#define REMOTE_READ_TIMEOUT_MS 1000

struct remote_job;
TAILQ_HEAD(remote_job_list, remote_job);

struct remote_link {
    struct gw_worker *w;
    int peer;
    struct wan_grpc_client *client;
    bool up;
    bool connecting;
    unsigned attempt;
    int64_t retry_at_ms;
    uint64_t rng;
    struct remote_job_list waiting; /* reads waiting for the link to come up */
};

struct gw_remote {
    struct remote_link *links;
    size_t n;
};

/* What the local pool said about one key during warm-up. */
struct warm_key {
    bool seen;
    bool found;
    bool tomb;
    uint32_t flags;
    uint64_t cas;
    const uint8_t *val; /* points into the job's capture of that node */
    size_t len;
};

struct remote_job {
    TAILQ_ENTRY(remote_job) link;
    struct gw_worker *w;
    struct gw_req *r;
    enum mc_cmd cmd;
    int peer;
    uint32_t nkeys;
    struct mc_token *keys;
    char *keybuf;
    /* warm-up */
    bool warm;
    struct warm_key *local;
    uint32_t *node_of;
    struct gw_frag *frags;
    struct evbuffer **caps;
    uint32_t nfrags;
    uint32_t pending;
    uint32_t *miss;
    uint32_t nmiss;
    bool local_failed; /* a local node failed under the warm-up's own read */
    const char *error;
    Geogate__Wan__V1__ReadResponse *resp;
    /* gw_remote_read_key: no client request, a callback */
    void (*key_done)(void *arg, const char *error, const Geogate__Wan__V1__ReadItem *item);
    void *key_arg;
};

static void link_connect(struct remote_link *l);
static void job_send(struct remote_link *l, struct remote_job *j);

/* ---- jobs ---- */

static void job_free(struct remote_job *j)
{
    for (uint32_t i = 0; i < j->nfrags; i++) {
        if (j->caps[i] != NULL) {
            evbuffer_free(j->caps[i]);
        }
    }
    if (j->resp != NULL) {
        geogate__wan__v1__read_response__free_unpacked(j->resp, NULL);
    }
    free(j->caps);
    free(j->frags);
    free(j->node_of);
    free(j->local);
    free(j->miss);
    free(j->keys);
    free(j->keybuf);
    free(j);
}

static struct remote_job *job_new(struct gw_worker *w, const struct mc_request *m, int peer,
                                  bool warm)
{
    struct remote_job *j = calloc(1, sizeof(*j));
    size_t bytes = 0;
    char *p;

    if (j == NULL) {
        return NULL;
    }
    for (uint32_t i = 0; i < m->nkeys; i++) {
        bytes += m->keys[i].len;
    }
    j->keys = calloc(m->nkeys, sizeof(*j->keys));
    j->keybuf = malloc(bytes + 1);
    if (j->keys == NULL || j->keybuf == NULL) {
        job_free(j);
        return NULL;
    }
    p = j->keybuf;
    for (uint32_t i = 0; i < m->nkeys; i++) {
        memcpy(p, m->keys[i].p, m->keys[i].len);
        j->keys[i].p = p;
        j->keys[i].len = m->keys[i].len;
        p += m->keys[i].len;
    }
    j->w = w;
    j->cmd = m->cmd;
    j->peer = peer;
    j->nkeys = m->nkeys;
    j->warm = warm;
    return j;
}

static bool with_cas(enum mc_cmd cmd)
{
    return cmd == MC_CMD_GETS || cmd == MC_CMD_GATS;
}

static void add_value(struct evbuffer *b, const struct mc_token *key, uint32_t flags,
                      const void *val, size_t len, bool cas, uint64_t token)
{
    evbuffer_add_printf(b, "VALUE %.*s %u %zu", (int)key->len, key->p, flags, len);
    if (cas) {
        evbuffer_add_printf(b, " %" PRIu64, token);
    }
    evbuffer_add(b, "\r\n", 2);
    evbuffer_add(b, val, len);
    evbuffer_add(b, "\r\n", 2);
}

/* The peer's item for key i, when it has a live one. */
static const Geogate__Wan__V1__Mutation *peer_item(const struct remote_job *j, uint32_t i)
{
    const Geogate__Wan__V1__ReadResponse *resp = j->resp;

    if (resp == NULL || i >= resp->n_items || resp->items[i] == NULL ||
        !resp->items[i]->found || resp->items[i]->item == NULL ||
        resp->items[i]->item->tombstone) {
        return NULL;
    }
    return resp->items[i]->item;
}

static void count(struct gw_worker *w, enum mc_cmd cmd, uint32_t nkeys, uint32_t hits)
{
    if (cmd == MC_CMD_GAT || cmd == MC_CMD_GATS) {
        STAT_ADD(&w->stats, cmd_touch, nkeys);
        STAT_ADD(&w->stats, touch_hits, hits);
        STAT_ADD(&w->stats, touch_misses, nkeys - hits);
    } else {
        STAT_ADD(&w->stats, cmd_get, nkeys);
        STAT_ADD(&w->stats, get_hits, hits);
        STAT_ADD(&w->stats, get_misses, nkeys - hits);
    }
}

static void fill_done(void *arg, uint64_t applied, uint64_t rejected, bool failed,
                      Geogate__Wan__V1__Mutation **newer, size_t n_newer)
{
    struct gw_worker *w = arg;

    (void)rejected;
    (void)failed;
    (void)newer;
    (void)n_newer;
    __atomic_add_fetch(&w->srv->fo.warm_filled, applied, __ATOMIC_RELAXED);
}

/* Warm-up: add what the peer had for our misses, newest wins (never over a newer local
 * item), with the original expiry and version. */
static void warm_fill(struct remote_job *j)
{
    struct gw_server *srv = j->w->srv;
    Geogate__Wan__V1__ShipRequest req = GEOGATE__WAN__V1__SHIP_REQUEST__INIT;
    Geogate__Wan__V1__Mutation *muts[256];
    size_t n = 0;

    for (uint32_t k = 0; k < j->nmiss && n < 256; k++) {
        const Geogate__Wan__V1__Mutation *m = peer_item(j, k);
        if (m != NULL) {
            muts[n++] = (Geogate__Wan__V1__Mutation *)m;
        }
    }
    if (n == 0) {
        return;
    }
    req.origin_site = srv->cfg->wan.peers[j->peer].site;
    req.n_mutations = n;
    req.mutations = muts;
    gw_apply_batch_of(j->w, &req, fill_done, j->w);
}

/* Everything is in: answer the client. */
static void job_finish(struct remote_job *j)
{
    struct gw_req *r = j->r;
    struct gw_worker *w = j->w;
    struct evbuffer *b;
    uint32_t hits = 0;

    if (j->key_done != NULL) {
        const Geogate__Wan__V1__ReadItem *item = NULL;
        if (j->error == NULL && j->resp != NULL && j->resp->n_items > 0) {
            item = j->resp->items[0];
        }
        j->key_done(j->key_arg, j->error, item);
        job_free(j);
        return;
    }

    r->pending = 0;
    if (j->error != NULL && j->warm && j->miss != NULL && !j->local_failed) {
        /* Warm-up asked the peer only for the local misses: when the peer cannot answer,
         * the local answer stands (hits, and misses as misses), as it would without
         * warm-up, instead of failing the whole read. */
        log_debug("warm-up read from peer %s failed (%s): answered locally",
                  w->srv->cfg->wan.peers[j->peer].site, j->error);
        j->error = NULL;
    }
    if (j->error != NULL) {
        STAT_INCR(&w->stats, server_errors);
        STAT_INCR(&w->stats, get_errors);
        gw_req_finish_line(r, j->error);
        job_free(j);
        return;
    }
    b = gw_req_reply(r);
    if (b == NULL) {
        gw_req_finish_line(r, "SERVER_ERROR out of memory");
        job_free(j);
        return;
    }
    if (!j->warm) {
        for (uint32_t i = 0; i < j->nkeys; i++) {
            const Geogate__Wan__V1__Mutation *m = peer_item(j, i);
            if (m != NULL) {
                add_value(b, &j->keys[i], m->flags, m->value.data, m->value.len,
                          with_cas(j->cmd), m->hlc);
                hits++;
            }
        }
    } else {
        uint32_t k = 0;
        for (uint32_t i = 0; i < j->nkeys; i++) {
            struct warm_key *lk = &j->local[i];
            if (lk->found) {
                add_value(b, &j->keys[i], lk->flags, lk->val, lk->len, with_cas(j->cmd),
                          lk->cas);
                hits++;
                continue;
            }
            if (lk->tomb) {
                continue; /* deleted here: authoritative, not fetched */
            }
            if (k < j->nmiss && j->miss[k] == i) {
                const Geogate__Wan__V1__Mutation *m = peer_item(j, k);
                if (m != NULL) {
                    __atomic_add_fetch(&w->srv->fo.warm_peer_hits, 1, __ATOMIC_RELAXED);
                    __atomic_add_fetch(&w->pool->nodes[j->node_of[i]].warm_peer_hits, 1,
                                       __ATOMIC_RELAXED);
                    add_value(b, &j->keys[i], m->flags, m->value.data, m->value.len,
                              with_cas(j->cmd), m->hlc);
                    hits++;
                }
                k++;
            }
        }
        warm_fill(j);
    }
    evbuffer_add(b, "END\r\n", 5);
    r->nkeys = j->nkeys;
    r->hits = hits;
    count(w, j->cmd, j->nkeys, hits);
    gw_req_finish(r);
    job_free(j);
}

/* ---- the Read RPC ---- */

static void read_done(void *arg, int status, const char *message,
                      Geogate__Wan__V1__ReadResponse *resp)
{
    struct remote_job *j = arg;
    struct gw_server *srv = j->w->srv;

    __atomic_add_fetch(&srv->fo.peer_reads, 1, __ATOMIC_RELAXED);
    if (status != WAN_GRPC_OK || resp == NULL) {
        __atomic_add_fetch(&srv->fo.peer_read_errors, 1, __ATOMIC_RELAXED);
        log_debug("read from peer %s failed: %s", srv->cfg->wan.peers[j->peer].site,
                  message ? message : "?");
        j->error = "SERVER_ERROR peer site unavailable";
        if (resp != NULL) {
            geogate__wan__v1__read_response__free_unpacked(resp, NULL);
        }
    } else {
        j->resp = resp;
    }
    job_finish(j);
}

static void job_send(struct remote_link *l, struct remote_job *j)
{
    Geogate__Wan__V1__ReadRequest req = GEOGATE__WAN__V1__READ_REQUEST__INIT;
    ProtobufCBinaryData stack[64];
    ProtobufCBinaryData *keys = stack;
    uint32_t n = j->warm ? j->nmiss : j->nkeys;
    int rc;

    if (n > 64) {
        keys = malloc(n * sizeof(*keys));
        if (keys == NULL) {
            j->error = "SERVER_ERROR out of memory";
            job_finish(j);
            return;
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        const struct mc_token *t = &j->keys[j->warm ? j->miss[i] : i];
        keys[i].data = (uint8_t *)t->p;
        keys[i].len = t->len;
    }
    req.n_keys = n;
    req.keys = keys;
    rc = wan_grpc_client_read(l->client, &req, REMOTE_READ_TIMEOUT_MS, read_done, j);
    if (keys != stack) {
        free(keys);
    }
    if (rc != 0) {
        __atomic_add_fetch(&j->w->srv->fo.peer_read_errors, 1, __ATOMIC_RELAXED);
        j->error = "SERVER_ERROR peer site unavailable";
        job_finish(j);
    }
}

static struct remote_link *link_of(struct gw_worker *w, int peer)
{
    struct gw_remote *rm = w->remote;

    if (rm == NULL || peer < 0 || (size_t)peer >= rm->n) {
        return NULL;
    }
    return &rm->links[peer];
}

static void job_start_read(struct remote_job *j)
{
    struct remote_link *l = link_of(j->w, j->peer);

    if (l == NULL) {
        j->error = "SERVER_ERROR no peer site to read from";
        job_finish(j);
        return;
    }
    if (l->up) {
        job_send(l, j);
        return;
    }
    TAILQ_INSERT_TAIL(&l->waiting, j, link);
    if (!l->connecting) {
        link_connect(l);
    }
}

/* ---- links ---- */

static void link_up(void *arg, const char *site)
{
    struct remote_link *l = arg;
    struct remote_job *j;

    (void)site;
    l->up = true;
    l->connecting = false;
    l->attempt = 0;
    while ((j = TAILQ_FIRST(&l->waiting)) != NULL) {
        TAILQ_REMOVE(&l->waiting, j, link);
        job_send(l, j);
    }
}

static void link_down(void *arg, int status, const char *reason)
{
    struct remote_link *l = arg;
    struct remote_job *j;

    (void)status;
    log_debug("worker %d: read link to %s down: %s", l->w->id,
              l->w->srv->cfg->wan.peers[l->peer].site, reason);
    l->up = false;
    l->connecting = false;
    l->retry_at_ms = gw_mono_ms() + wan_grpc_backoff_ms(l->attempt++, 100, 3000, &l->rng);
    while ((j = TAILQ_FIRST(&l->waiting)) != NULL) {
        TAILQ_REMOVE(&l->waiting, j, link);
        j->error = "SERVER_ERROR peer site unavailable";
        job_finish(j);
    }
}

static void link_ack(void *arg, const Geogate__Wan__V1__ShipAck *ack)
{
    (void)arg;
    (void)ack;
}

static void link_connect(struct remote_link *l)
{
    static const struct wan_grpc_client_callbacks cbs = {
        .up = link_up,
        .down = link_down,
        .ship_ack = link_ack,
    };
    struct gw_server *srv = l->w->srv;
    const struct gw_peer_conf *pc = &srv->cfg->wan.peers[l->peer];
    struct wan_grpc_client_config cc;
    char addr[300];
    const struct gw_addr *a = &pc->addresses[l->attempt % pc->naddresses];

    if (l->client != NULL) {
        wan_grpc_client_destroy(l->client);
        l->client = NULL;
    }
    snprintf(addr, sizeof(addr), strchr(a->host, ':') ? "[%s]:%u" : "%s:%u", a->host, a->port);
    memset(&cc, 0, sizeof(cc));
    cc.tls = gw_repl_client_tls(srv);
    cc.peer_site = pc->site;
    cc.address = addr;
    cc.connect_timeout_ms = 2000;
    cc.ping_ms = 2000;
    if (cc.tls == NULL || wan_grpc_client_create(&l->client, l->w->base, &cc, &cbs, l) != 0 ||
        wan_grpc_client_connect(l->client) != 0) {
        link_down(l, WAN_GRPC_UNAVAILABLE, "cannot start a connection");
        return;
    }
    l->connecting = true;
}

int gw_remote_start(void *arg)
{
    struct gw_worker *w = arg;
    struct gw_server *srv = w->srv;
    struct gw_remote *rm;

    if (!gw_server_replicates(srv) || srv->cfg->wan.npeers == 0) {
        return 0;
    }
    rm = calloc(1, sizeof(*rm));
    if (rm == NULL || (rm->links = calloc(srv->cfg->wan.npeers, sizeof(*rm->links))) == NULL) {
        free(rm);
        return -ENOMEM;
    }
    rm->n = srv->cfg->wan.npeers;
    for (size_t i = 0; i < rm->n; i++) {
        rm->links[i].w = w;
        rm->links[i].peer = (int)i;
        rm->links[i].rng = (uint64_t)gw_mono_ms() * 2654435761u + i + (uint64_t)w->id;
        TAILQ_INIT(&rm->links[i].waiting);
    }
    w->remote = rm;
    for (size_t i = 0; i < rm->n; i++) {
        link_connect(&rm->links[i]);
    }
    return 0;
}

void gw_remote_tick(struct gw_worker *w, int64_t now)
{
    struct gw_remote *rm = w->remote;

    if (rm == NULL) {
        return;
    }
    for (size_t i = 0; i < rm->n; i++) {
        struct remote_link *l = &rm->links[i];
        if (!l->up && !l->connecting && now >= l->retry_at_ms) {
            link_connect(l);
        }
    }
}

void gw_remote_stop(struct gw_worker *w)
{
    struct gw_remote *rm = w->remote;

    if (rm == NULL) {
        return;
    }
    for (size_t i = 0; i < rm->n; i++) {
        if (rm->links[i].client != NULL) {
            wan_grpc_client_destroy(rm->links[i].client);
        }
    }
    free(rm->links);
    free(rm);
    w->remote = NULL;
}

/* ---- entry points ---- */

void gw_remote_retrieval(struct gw_req *r, const struct mc_request *m, int peer)
{
    struct remote_job *j = job_new(r->w, m, peer, false);

    if (j == NULL) {
        gw_req_finish_line(r, "SERVER_ERROR out of memory");
        return;
    }
    j->r = r;
    j->r->pending = 1; /* a closing client orphans it */
    job_start_read(j);
}

void gw_remote_retry(struct gw_req *r, const struct mc_token *keys, uint32_t nkeys, int peer)
{
    struct mc_request m = {.cmd = r->cmd, .keys = (struct mc_token *)keys, .nkeys = nkeys};
    struct remote_job *j = job_new(r->w, &m, peer, false);

    gw_req_clear_failure(r);
    if (j == NULL) {
        gw_req_finish_line(r, "SERVER_ERROR out of memory");
        return;
    }
    __atomic_add_fetch(&r->w->srv->fo.reads_retried, 1, __ATOMIC_RELAXED);
    j->r = r;
    r->pending = 1; /* a closing client orphans it */
    job_start_read(j);
}

void gw_remote_read_key(struct gw_worker *w, int peer, const char *key, uint32_t nkey,
                        void (*done)(void *arg, const char *error,
                                     const Geogate__Wan__V1__ReadItem *item),
                        void *arg)
{
    struct remote_job *j = calloc(1, sizeof(*j));

    if (j == NULL || (j->keys = calloc(1, sizeof(*j->keys))) == NULL ||
        (j->keybuf = malloc(nkey + 1)) == NULL) {
        if (j != NULL) {
            free(j->keys);
        }
        free(j);
        done(arg, "SERVER_ERROR out of memory", NULL);
        return;
    }
    memcpy(j->keybuf, key, nkey);
    j->keys[0].p = j->keybuf;
    j->keys[0].len = nkey;
    j->nkeys = 1;
    j->w = w;
    j->peer = peer;
    j->cmd = MC_CMD_GETS;
    j->key_done = done;
    j->key_arg = arg;
    job_start_read(j);
}

/* Warm-up, step 2: the local gets are in; misses go to the peer. */
static void warm_local_done(struct remote_job *j)
{
    if (j->error != NULL) {
        job_finish(j);
        return;
    }
    j->miss = malloc(j->nkeys * sizeof(*j->miss));
    if (j->miss == NULL) {
        j->error = "SERVER_ERROR out of memory";
        job_finish(j);
        return;
    }
    for (uint32_t i = 0; i < j->nkeys; i++) {
        struct gw_node *nd = &j->w->pool->nodes[j->node_of[i]];
        if (j->local[i].found) {
            __atomic_add_fetch(&j->w->srv->fo.warm_hits, 1, __ATOMIC_RELAXED);
            __atomic_add_fetch(&nd->warm_hits, 1, __ATOMIC_RELAXED);
        } else if (!j->local[i].tomb) {
            __atomic_add_fetch(&j->w->srv->fo.warm_misses, 1, __ATOMIC_RELAXED);
            __atomic_add_fetch(&nd->warm_misses, 1, __ATOMIC_RELAXED);
            j->miss[j->nmiss++] = i;
        }
    }
    if (j->nmiss == 0) {
        job_finish(j);
        return;
    }
    job_start_read(j);
}

/* Parse one node's `gets` capture: VALUE blocks (with version headers) then END. */
static void warm_parse(struct remote_job *j, uint32_t f, struct evbuffer *cap)
{
    struct gw_gets_reader rd;
    struct gw_item_view it;
    enum gw_gets_next next;

    gw_gets_reader_init(&rd, cap);
    while ((next = gw_gets_next(&rd, &it)) == GW_GETS_ITEM) {
        uint32_t i;

        for (i = 0; i < j->nkeys; i++) {
            if (j->node_of[i] == f && !j->local[i].seen && j->keys[i].len == it.nkey &&
                memcmp(j->keys[i].p, it.key, it.nkey) == 0) {
                break;
            }
        }
        if (i < j->nkeys) {
            struct warm_key *lk = &j->local[i];
            lk->seen = true;
            lk->cas = it.cas;
            lk->tomb = !it.found;
            lk->found = it.found;
            lk->flags = it.hdr.client_flags;
            lk->val = it.val;
            lk->len = it.len;
        }
    }
    if (next == GW_GETS_ERROR) {
        j->error = "SERVER_ERROR unexpected reply from node";
    }
}

static void warm_cb(struct gw_frag *frag, struct evbuffer *reply, const char *error)
{
    struct remote_job *j = frag->cb_arg;
    uint32_t f = (uint32_t)(frag - j->frags);

    if (error != NULL) {
        /* the node failed under the read: its keys count as misses, the peer answers */
        log_debug("warm-up read: %s; asking peer %s", error,
                  j->w->srv->cfg->wan.peers[j->peer].site);
        j->local_failed = true;
        __atomic_add_fetch(&j->w->srv->fo.reads_retried, 1, __ATOMIC_RELAXED);
    } else {
        warm_parse(j, f, reply);
    }
    if (--j->pending == 0) {
        warm_local_done(j);
    }
}

void gw_remote_warm_retrieval(struct gw_req *r, const struct mc_request *m, int peer)
{
    struct gw_worker *w = r->w;
    struct remote_job *j = job_new(w, m, peer, true);
    uint32_t nn = w->pool->nnodes;

    if (j == NULL) {
        gw_req_finish_line(r, "SERVER_ERROR out of memory");
        return;
    }
    j->local = calloc(m->nkeys, sizeof(*j->local));
    j->node_of = calloc(m->nkeys, sizeof(*j->node_of));
    j->frags = calloc(nn, sizeof(*j->frags));
    j->caps = calloc(nn, sizeof(*j->caps));
    j->r = r;
    if (j->local == NULL || j->node_of == NULL || j->frags == NULL || j->caps == NULL) {
        gw_req_finish_line(r, "SERVER_ERROR out of memory");
        job_free(j);
        return;
    }
    j->nfrags = nn;
    j->r->pending = 1;
    j->pending = 1;
    for (uint32_t i = 0; i < j->nkeys; i++) {
        j->node_of[i] = gw_pool_route(w->pool, j->keys[i].p, j->keys[i].len);
    }
    for (uint32_t n = 0; n < nn; n++) {
        struct evbuffer *line;
        bool any = false;

        for (uint32_t i = 0; i < j->nkeys && !any; i++) {
            any = j->node_of[i] == n;
        }
        if (!any) {
            continue;
        }
        if (!gw_node_usable(&w->pool->nodes[n])) {
            /* its keys are simply misses here: the peer answers them */
            continue;
        }
        j->caps[n] = evbuffer_new();
        line = evbuffer_new();
        if (j->caps[n] == NULL || line == NULL) {
            if (line != NULL) {
                evbuffer_free(line);
            }
            j->error = "SERVER_ERROR out of memory";
            break;
        }
        evbuffer_add(line, "gets", 4);
        for (uint32_t i = 0; i < j->nkeys; i++) {
            if (j->node_of[i] == n) {
                evbuffer_add(line, " ", 1);
                evbuffer_add(line, j->keys[i].p, j->keys[i].len);
            }
        }
        evbuffer_add(line, "\r\n", 2);
        j->frags[n].cb = warm_cb;
        j->frags[n].cb_arg = j;
        j->frags[n].capture = j->caps[n];
        j->frags[n].cb_values = true;
        j->pending++;
        {
            size_t len = evbuffer_get_length(line);
            const char *data = (const char *)evbuffer_pullup(line, (ssize_t)len);
            gw_backend_send(gw_worker_backend(w, n), &j->frags[n], data, len, NULL, 0);
        }
        evbuffer_free(line);
    }
    if (--j->pending == 0) {
        warm_local_done(j);
    }
}
