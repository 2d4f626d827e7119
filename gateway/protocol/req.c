/*
 * req — see req.h.  A request is answered when its last frag is: single-node
 * replies are moved straight into the reply buffer; multi-node retrievals park each
 * key's VALUE block in its slot and are stitched together in the client's order at
 * the end.  Any frag failing turns the whole reply into that one error line.
 */
#include "gateway/protocol/req.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "gateway/loop/conn.h"
#include "gateway/base/log.h"

/* Requests kept for reuse per worker.  None under AddressSanitizer: a pool would hide a
 * use after free or a double free from it. */
/* Output a streaming reply may pile up in one loop pass before it is written. */
#define GW_REQ_STREAM_FLUSH (64u << 10)

#if defined(__SANITIZE_ADDRESS__)
#define GW_REQ_FREE_MAX 0
#else
#define GW_REQ_FREE_MAX 1024
#endif

struct gw_req *gw_req_new(struct gw_worker *w, struct gw_client *c, const struct gw_req_ops *ops,
                          enum mc_cmd cmd)
{
    struct gw_req *r = w->req_free;

    if (r != NULL) {
        w->req_free = r->next_free;
        w->nreq_free--;
        memset(r, 0, offsetof(struct gw_req, key1));
    } else {
        r = calloc(1, sizeof(*r));
        if (r == NULL) {
            return NULL;
        }
    }
    r->w = w;
    r->client = c;
    r->ops = ops;
    r->cmd = cmd;
    r->frag.req = r;
    return r;
}

void gw_req_free(struct gw_req *r)
{
    if (r == NULL) {
        return;
    }
    if (r->reply != NULL) {
        evbuffer_free(r->reply);
    }
    free(r->meta_ret);
    for (uint32_t i = 0; i < r->nslots; i++) {
        if (r->slots[i].value != NULL) {
            evbuffer_free(r->slots[i].value);
        }
    }
    free(r->slots);
    free(r->slotidx);
    free(r->keybuf);
    free(r->frags);
    if (r->failed && r->error != NULL && r->error_owned) {
        free((char *)r->error);
    }
    if ((uint64_t)r->w->nreq_free + 1 <= (uint64_t)GW_REQ_FREE_MAX) {
        struct gw_worker *w = r->w;
        r->next_free = w->req_free;
        w->req_free = r;
        w->nreq_free++;
        return;
    }
    free(r);
}

void gw_req_pool_release(struct gw_worker *w)
{
    while (w->req_free != NULL) {
        struct gw_req *r = w->req_free;
        w->req_free = r->next_free;
        free(r);
    }
    w->nreq_free = 0;
}

struct evbuffer *gw_req_reply(struct gw_req *r)
{
    if (r->reply == NULL) {
        r->reply = evbuffer_new();
    }
    return r->reply;
}

void gw_req_finish(struct gw_req *r)
{
    r->done = true;
    if (r->client != NULL) {
        r->ops->done(r);
    } else {
        gw_req_free(r);
    }
}

void gw_req_finish_line(struct gw_req *r, const char *line)
{
    if (!r->noreply) {
        struct evbuffer *b = gw_req_reply(r);
        if (b != NULL) {
            evbuffer_add(b, line, strlen(line));
            evbuffer_add(b, "\r\n", 2);
        }
    }
    gw_req_finish(r);
}

/*
 * Where a single-node reply goes.  When the request is at the head of its client's
 * queue, nothing is ahead of it: bytes go straight to the client's output buffer
 * (a large value streams through as it arrives, and no reply buffer is needed).
 * Otherwise they wait in the request's own reply buffer.
 */
static struct evbuffer *req_sink(struct gw_req *r)
{
    struct gw_client *c = r->client;

    if (c != NULL && !c->closing && TAILQ_FIRST(&c->reqs) == r) {
        if (r->reply != NULL && evbuffer_get_length(r->reply) > 0) {
            evbuffer_add_buffer(c->conn.out, r->reply);
        }
        r->streamed = true;
        if (r->reply_bytes >= GW_REQ_STREAM_FLUSH &&
            evbuffer_get_length(c->conn.out) >= GW_REQ_STREAM_FLUSH) {
            /* A large value on its way: hand what came so far to the kernel now rather
             * than at the end of the pass, in which a fast node can send many more. */
            gw_conn_write_now(&c->conn);
        }
        gw_conn_want_flush(&c->conn);
        return c->conn.out;
    }
    return gw_req_reply(r);
}

/*
 * A multi-node retrieval's answers go on in the client's key order as soon as they are
 * whole, so a multi-get of large values is never gathered whole.  A slot is whole once
 * its frag has moved past it: a VALUE for a later key of the same frag has begun, or
 * the frag's END came.  They collect in the request's reply until that passes
 * GW_REQ_STREAM_FLUSH and the request is at the head of its client's queue; then they
 * stream to the client (after which a node failing can only close the connection, as
 * for any value that streamed).
 */
static void req_emit(struct gw_req *r)
{
    struct evbuffer *sink = NULL;

    if (r->failed) {
        return;
    }
    while (r->emitted < r->nslots) {
        struct gw_keyslot *s = &r->slots[r->emitted];
        if (s->pos >= r->frags[s->frag].done_upto) {
            break;
        }
        if (s->value != NULL) {
            if (sink == NULL) {
                size_t held = r->reply != NULL ? evbuffer_get_length(r->reply) : 0;
                sink = r->streamed || held + evbuffer_get_length(s->value) >= GW_REQ_STREAM_FLUSH
                           ? req_sink(r)
                           : gw_req_reply(r);
                if (sink == NULL) {
                    return;
                }
            }
            evbuffer_add_buffer(sink, s->value);
            evbuffer_free(s->value);
            s->value = NULL;
        }
        r->emitted++;
    }
}

struct gw_conn *gw_req_stream_conn(struct gw_frag *frag)
{
    struct gw_req *r = frag->req;

    if (r == NULL || r->slots != NULL || !r->streamed || r->client == NULL || r->client->closing) {
        return NULL;
    }
    return &r->client->conn;
}

static void frag_slots_done(struct gw_frag *frag)
{
    if (frag->req->slots != NULL) {
        frag->done_upto = frag->nslots;
        req_emit(frag->req);
    }
}

struct evbuffer *gw_req_value_dst(struct gw_frag *frag, const char *key, uint32_t nkey,
                                  uint32_t bytes)
{
    struct gw_req *r = frag->req;

    r->hits++;
    r->reply_bytes += bytes;
    if (r->slots == NULL) {
        return r->failed || r->client == NULL ? NULL : req_sink(r);
    }
    for (uint32_t i = frag->cursor; i < frag->nslots; i++) {
        struct gw_keyslot *s = &r->slots[frag->slots[i]];
        if (s->nkey == nkey && memcmp(s->key, key, nkey) == 0) {
            frag->done_upto = i; /* the ones before it are answered whole */
            req_emit(r);
            frag->cursor = i + 1;
            if (s->value == NULL) {
                s->value = evbuffer_new();
            }
            return s->value;
        }
    }
    log_warn("node sent a VALUE for a key it was not asked for; dropped");
    return NULL;
}

static void set_failed(struct gw_req *r, const char *error, bool owned)
{
    if (r->failed) {
        if (owned) {
            free((char *)error);
        }
        return;
    }
    r->failed = true;
    r->error = error;
    r->error_owned = owned;
}

void gw_req_clear_failure(struct gw_req *r)
{
    if (r->failed && r->error_owned) {
        free((char *)r->error);
    }
    r->failed = false;
    r->node_lost = false;
    r->error = NULL;
    r->error_owned = false;
    if (r->reply != NULL) {
        evbuffer_drain(r->reply, evbuffer_get_length(r->reply));
    }
}

static void count_retrieval(struct gw_req *r)
{
    struct gw_stats *st = &r->w->stats;
    uint32_t misses = r->nkeys > r->hits ? r->nkeys - r->hits : 0;

    if (r->cmd == MC_CMD_GAT || r->cmd == MC_CMD_GATS) {
        STAT_ADD(st, cmd_touch, r->nkeys);
        STAT_ADD(st, touch_hits, r->hits);
        STAT_ADD(st, touch_misses, misses);
    } else {
        STAT_ADD(st, cmd_get, r->nkeys);
        STAT_ADD(st, get_hits, r->hits);
        STAT_ADD(st, get_misses, misses);
    }
}

/* Every frag has answered: build the final reply. */
static void req_complete(struct gw_req *r)
{
    struct evbuffer *b;

    if (r->failed) {
        if (r->node_lost && !r->streamed && r->ops->retry_read(r)) {
            return; /* a peer site answers it instead */
        }
        if (mc_cmd_is_retrieval(r->cmd)) {
            STAT_INCR(&r->w->stats, get_errors);
        }
        STAT_INCR(&r->w->stats, server_errors);
        if (r->reply != NULL) {
            evbuffer_drain(r->reply, evbuffer_get_length(r->reply));
        }
        if (r->streamed && r->client != NULL) {
            /* Part of a value already went to the client: an error line now would
             * read as data.  The only honest answer left is to hang up. */
            r->ops->abort(r);
            gw_req_finish(r);
            return;
        }
        gw_req_finish_line(r, r->error);
        return;
    }
    if (mc_cmd_is_retrieval(r->cmd)) {
        count_retrieval(r);
        if (r->slots != NULL) {
            req_emit(r); /* every frag is done: whatever is left */
            b = r->streamed ? req_sink(r) : gw_req_reply(r);
            if (b != NULL) {
                evbuffer_add(b, "END\r\n", 5);
            }
        }
        gw_req_finish(r);
        return;
    }
    if (r->cmd == MC_CMD_FLUSH_ALL) {
        r->ops->flushed(r);
        gw_req_finish_line(r, "OK");
        return;
    }
    gw_req_finish(r);
}

static void frag_complete(struct gw_frag *frag)
{
    struct gw_req *r = frag->req;

    if (--r->pending == 0) {
        req_complete(r);
    }
}

static bool line_is(const char *line, size_t len, const char *word)
{
    size_t n = strlen(word);
    return len == n && memcmp(line, word, n) == 0;
}

static bool line_is_error(const char *line, size_t len)
{
    return (len >= 5 && memcmp(line, "ERROR", 5) == 0) ||
           (len >= 12 && memcmp(line, "CLIENT_ERROR", 12) == 0) ||
           (len >= 12 && memcmp(line, "SERVER_ERROR", 12) == 0);
}

/* Counters memcached keeps per reply. */
static void count_reply(struct gw_req *r, const char *line, size_t len)
{
    struct gw_stats *st = &r->w->stats;
    bool not_found = line_is(line, len, "NOT_FOUND");

    switch (r->cmd) {
    case MC_CMD_CAS:
        if (line_is(line, len, "STORED")) {
            STAT_INCR(st, cas_hits);
        } else if (line_is(line, len, "EXISTS")) {
            STAT_INCR(st, cas_badval);
        } else if (not_found) {
            STAT_INCR(st, cas_misses);
        }
        break;
    case MC_CMD_DELETE:
        if (line_is(line, len, "DELETED")) {
            STAT_INCR(st, delete_hits);
        } else if (not_found) {
            STAT_INCR(st, delete_misses);
        }
        break;
    case MC_CMD_INCR:
        if (not_found) {
            STAT_INCR(st, incr_misses);
        } else if (len > 0 && line[0] >= '0' && line[0] <= '9') {
            STAT_INCR(st, incr_hits);
        }
        break;
    case MC_CMD_DECR:
        if (not_found) {
            STAT_INCR(st, decr_misses);
        } else if (len > 0 && line[0] >= '0' && line[0] <= '9') {
            STAT_INCR(st, decr_hits);
        }
        break;
    case MC_CMD_TOUCH:
        STAT_INCR(st, cmd_touch);
        if (line_is(line, len, "TOUCHED")) {
            STAT_INCR(st, touch_hits);
        } else if (not_found) {
            STAT_INCR(st, touch_misses);
        }
        break;
    default:
        break;
    }
    if (len >= 12 && memcmp(line, "SERVER_ERROR", 12) == 0) {
        STAT_INCR(st, server_errors);
    }
}

void gw_req_frag_line(struct gw_frag *frag, struct evbuffer *in, const char *line, size_t len,
                      size_t consumed)
{
    struct gw_req *r = frag->req;

    if (mc_cmd_is_retrieval(r->cmd)) {
        if (line_is(line, len, "END")) {
            frag_slots_done(frag);
            if (r->slots == NULL && !r->failed && r->client != NULL) {
                evbuffer_remove_buffer(in, req_sink(r), consumed);
            } else {
                evbuffer_drain(in, consumed);
            }
        } else {
            /* An error instead of END: the whole retrieval answers with it. */
            char *copy = strndup(line, len);
            evbuffer_drain(in, consumed);
            if (copy != NULL) {
                set_failed(r, copy, true);
            } else {
                set_failed(r, "SERVER_ERROR out of memory", false);
            }
        }
        frag_complete(frag);
        return;
    }
    if (r->cmd == MC_CMD_FLUSH_ALL) {
        /* flush_all to every node: OK only when all said OK. */
        if (!line_is(line, len, "OK")) {
            char *copy = line_is_error(line, len) ? strndup(line, len) : NULL;
            if (copy != NULL) {
                set_failed(r, copy, true);
            } else {
                set_failed(r, "SERVER_ERROR flush_all failed on a node", false);
            }
        }
        evbuffer_drain(in, consumed);
        frag_complete(frag);
        return;
    }
    count_reply(r, line, len);
    if (r->noreply || r->client == NULL) {
        evbuffer_drain(in, consumed);
    } else {
        struct evbuffer *b = req_sink(r);
        if (b != NULL) {
            evbuffer_remove_buffer(in, b, consumed);
        } else {
            evbuffer_drain(in, consumed);
        }
    }
    frag_complete(frag);
}

struct evbuffer *gw_req_meta_dst(struct gw_frag *frag, uint32_t bytes)
{
    struct gw_req *r = frag->req;

    r->reply_bytes += bytes;
    return r->failed || r->noreply || r->client == NULL ? NULL : req_sink(r);
}

void gw_req_frag_meta_end(struct gw_frag *frag)
{
    frag_complete(frag);
}

void gw_req_frag_end(struct gw_frag *frag)
{
    struct gw_req *r = frag->req;

    frag_slots_done(frag);
    if (r->slots == NULL && !r->failed && r->client != NULL) {
        struct evbuffer *b = req_sink(r);
        if (b != NULL) {
            evbuffer_add(b, "END\r\n", 5);
        }
    }
    frag_complete(frag);
}

void gw_req_frag_fail(struct gw_frag *frag, const char *error)
{
    set_failed(frag->req, error, false);
    frag_complete(frag);
}

void gw_req_frag_lost(struct gw_frag *frag, const char *error)
{
    frag->req->node_lost = true;
    gw_req_frag_fail(frag, error);
}
