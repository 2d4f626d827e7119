/*
 * client_gat — gat/gats on a replicating gateway: each key touched by read-modify-write
 * (vop.c) so the new expiry reaches the version header and ships, and the reply built
 * from the items as read, in the client's key order.  Worker loop only; the client's
 * framing, ordering and back-pressure stay in client.c.
 */
#include "gateway/frontend/client.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "gateway/routing/pool.h"
#include "gateway/failover/remote.h"
#include "gateway/protocol/req.h"
#include "gateway/routing/route.h"
#include "gateway/server.h"
#include "gateway/frontend/vop.h"

/*
 * gat/gats on a replicating gateway: the new expiry must reach the version header and
 * ship, so each key is touched by read-modify-write (vop.c), which also hands back the
 * item as it was read; the reply is built from those, in the client's key order.  Later
 * commands of the client wait (barrier), as for every multi-step command.
 */
struct gat_job {
    struct gw_client *c;
    struct gw_req *r;
    bool with_cas;
    uint32_t pending;
    uint32_t nkeys;
    struct mc_token *keys;
    char *keybuf;
    struct gw_touch_result *res;
};

static void gat_touched(void *arg)
{
    struct gat_job *j = arg;
    struct gw_client *c = j->c;
    struct gw_req *r = j->r;
    struct evbuffer *b;
    const char *error = NULL;

    if (--j->pending > 0) {
        return;
    }
    for (uint32_t i = 0; i < j->nkeys; i++) {
        if (j->res[i].failed) {
            error = j->res[i].error;
            break;
        }
    }
    r->pending = 0;
    r->nkeys = j->nkeys;
    if (error != NULL) {
        STAT_INCR(&c->w->stats, server_errors);
        gw_req_finish_line(r, error);
    } else if ((b = gw_req_reply(r)) != NULL) {
        for (uint32_t i = 0; i < j->nkeys; i++) {
            struct gw_touch_result *t = &j->res[i];
            if (!t->found) {
                continue;
            }
            r->hits++;
            evbuffer_add_printf(b, "VALUE %.*s %u %zu", (int)j->keys[i].len, j->keys[i].p,
                                t->flags, t->len);
            if (j->with_cas) {
                evbuffer_add_printf(b, " %" PRIu64, t->cas);
            }
            evbuffer_add(b, "\r\n", 2);
            evbuffer_add(b, t->val, t->len);
            evbuffer_add(b, "\r\n", 2);
        }
        evbuffer_add(b, "END\r\n", 5);
        STAT_ADD(&c->w->stats, touch_hits, r->hits);
        STAT_ADD(&c->w->stats, touch_misses, j->nkeys - r->hits);
        gw_req_finish(r);
    } else {
        gw_req_finish_line(r, "SERVER_ERROR out of memory");
    }
    for (uint32_t i = 0; i < j->nkeys; i++) {
        free(j->res[i].val);
    }
    free(j->res);
    free(j->keys);
    free(j->keybuf);
    free(j);
    gw_client_barrier_release(c);
}

void gw_client_versioned_gat(struct gw_client *c, const struct mc_request *m)
{
    struct gat_job *j;
    size_t bytes = 0;
    char *p;

    for (uint32_t i = 0; i < m->nkeys; i++) {
        struct gw_route rt = gw_route_key(c->w, m->keys[i].p, m->keys[i].len, GW_ROUTE_NODE);
        if (rt.kind == GW_ROUTE_PEER) {
            /* a key's node is down: the peer serves the whole request, as a get */
            struct gw_req *r = gw_client_new_req(c, m->cmd);
            if (r != NULL) {
                gw_remote_retrieval(r, m, rt.peer);
            }
            return;
        }
    }
    j = calloc(1, sizeof(*j));

    for (uint32_t i = 0; i < m->nkeys; i++) {
        bytes += m->keys[i].len;
    }
    if (j == NULL || (j->keys = calloc(m->nkeys, sizeof(*j->keys))) == NULL ||
        (j->res = calloc(m->nkeys, sizeof(*j->res))) == NULL ||
        (j->keybuf = malloc(bytes + 1)) == NULL) {
        if (j != NULL) {
            free(j->keys);
            free(j->res);
        }
        free(j);
        gw_client_reply_error(c, "SERVER_ERROR out of memory");
        return;
    }
    j->r = gw_client_new_req(c, m->cmd);
    if (j->r == NULL) {
        free(j->keys);
        free(j->res);
        free(j->keybuf);
        free(j);
        return;
    }
    j->r->pending = 1;
    j->c = c;
    j->with_cas = m->cmd == MC_CMD_GATS;
    j->nkeys = m->nkeys;
    p = j->keybuf;
    for (uint32_t i = 0; i < m->nkeys; i++) {
        memcpy(p, m->keys[i].p, m->keys[i].len);
        j->keys[i].p = p;
        j->keys[i].len = m->keys[i].len;
        p += m->keys[i].len;
    }
    gw_client_barrier_hold(c);
    j->pending = m->nkeys + 1;
    STAT_ADD(&c->w->stats, cmd_touch, m->nkeys);
    for (uint32_t i = 0; i < m->nkeys; i++) {
        struct gw_route rt = gw_route_key(c->w, j->keys[i].p, j->keys[i].len, GW_ROUTE_NODE);
        if (rt.kind != GW_ROUTE_LOCAL) {
            j->res[i].failed = true;
            snprintf(j->res[i].error, sizeof(j->res[i].error), "%s",
                     c->w->pool->nodes[rt.node].err_down);
            j->pending--;
            continue;
        }
        gw_vop_touch(c->w, rt.node, j->keys[i].p, j->keys[i].len, m->exptime, j->with_cas,
                     &j->res[i], gat_touched, j);
    }
    gat_touched(j);
}
