/*
 * backend — see backend.h.
 *
 *   gw_backend_send ──> output evbuffer (no syscall yet) ──EV_WRITE, once per loop──> node
 *   node ──> be_read_cb: line or VALUE block ──> head frag of `pending` ──> req.c
 *
 * Replies come back in the order requests were written, so the head of `pending` is
 * always the frag being answered.  A VALUE data block is moved chain by chain into
 * its destination as it arrives, however large it is.
 */
#include "gateway/backend.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "gateway/conn.h"
#include "gateway/log.h"
#include "gateway/pool.h"
#include "gateway/req.h"
#include "gateway/server.h"
#include "wan/version.h"

/* A reply line longer than this means we are out of sync with the node. */
#define GW_BE_MAX_LINE 4096

static void be_fail(struct gw_backend *be, const char *why, bool count_failure);

struct gw_backend *gw_backend_create(struct gw_worker *w, struct gw_pool *pool,
                                     struct gw_node *node, uint32_t slot)
{
    struct gw_backend *be = calloc(1, sizeof(*be));

    if (be == NULL) {
        return NULL;
    }
    be->w = w;
    be->pool = pool;
    be->node = node;
    be->slot = slot;
    be->state = GW_BE_IDLE;
    TAILQ_INIT(&be->pending);
    return be;
}

void gw_backend_destroy(struct gw_backend *be)
{
    if (be == NULL) {
        return;
    }
    be_fail(be, "closed", false);
    if (be->ping_cap != NULL) {
        evbuffer_free(be->ping_cap);
    }
    free(be);
}

static void be_read(struct gw_conn *conn, void *arg);

static void be_connected(struct gw_conn *conn, void *arg)
{
    struct gw_backend *be = arg;

    (void)conn;
    be->state = GW_BE_CONNECTED;
    be->last_progress_ms = gw_now_ms();
}

static void be_error(struct gw_conn *conn, void *arg, bool eof)
{
    struct gw_backend *be = arg;

    (void)conn;
    if (eof) {
        /* An idle connection closed by the node (restart, idle timeout) is not a
         * failure; one that drops requests is. */
        be_fail(be, "connection closed by node", be->npending > 0 || be->state != GW_BE_CONNECTED);
        return;
    }
    be_fail(be, be->state == GW_BE_CONNECTING ? "connect failed" : "connection error", true);
}

static void be_connect(struct gw_backend *be)
{
    be->state = GW_BE_CONNECTING;
    be->connect_started_ms = gw_now_ms();
    be->in_data = false;
    if (gw_conn_connect(&be->conn, be->w, (struct sockaddr *)&be->node->addr, be->node->addrlen,
                        be_read, be_error, be_connected, be) != 0) {
        /* Reported from the tick, never from inside the caller's stack. */
        be->connect_started_ms = 0;
        return;
    }
    be->open = true;
}

void gw_backend_send(struct gw_backend *be, struct gw_frag *frag, const char *line, size_t len,
                     struct evbuffer *data, size_t ndata)
{
    struct evbuffer *out;

    if (!be->open && be->state == GW_BE_IDLE) {
        be_connect(be);
    }
    frag->be = be;
    if (TAILQ_EMPTY(&be->pending)) {
        be->last_progress_ms = gw_now_ms();
    }
    TAILQ_INSERT_TAIL(&be->pending, frag, link);
    be->npending++;
    STAT_INCR(&be->w->stats, backend_requests);
    if (!be->open) {
        if (data != NULL && ndata > 0) {
            evbuffer_drain(data, ndata); /* the tick fails the frag */
        }
        return;
    }
    out = be->conn.out;
    evbuffer_add(out, line, len);
    if (data != NULL && ndata > 0) {
        evbuffer_remove_buffer(data, out, ndata);
    }
    gw_conn_want_flush(&be->conn);
}

static void ping_cb(struct gw_frag *frag, struct evbuffer *reply, const char *error)
{
    struct gw_backend *be = frag->cb_arg;

    (void)reply;
    (void)error; /* a failure was counted by be_fail; a reply by be_read */
    be->ping_inflight = false;
}

void gw_backend_ping(struct gw_backend *be, int64_t now_ms, uint32_t interval_ms)
{
    static const char version[] = "version\r\n";

    if (be->ping_inflight || be->npending > 0 || now_ms < be->ping_due_ms ||
        !gw_node_usable(be->node)) {
        return;
    }
    if (be->ping_cap == NULL && (be->ping_cap = evbuffer_new()) == NULL) {
        return;
    }
    /* A node that just failed is asked again at once: failure_limit misses in a row
     * then take a few ticks, not failure_limit intervals. */
    if (__atomic_load_n(&be->node->failures, __ATOMIC_RELAXED) > 0) {
        interval_ms = 0;
    }
    be->ping_due_ms = now_ms + interval_ms;
    evbuffer_drain(be->ping_cap, evbuffer_get_length(be->ping_cap));
    memset(&be->ping, 0, sizeof(be->ping));
    be->ping.cb = ping_cb;
    be->ping.cb_arg = be;
    be->ping.capture = be->ping_cap;
    be->ping_inflight = true;
    gw_backend_send(be, &be->ping, version, sizeof(version) - 1, NULL, 0);
}

void gw_backend_probe(struct gw_backend *be)
{
    static const char version[] = "version\r\n";

    memset(&be->probe, 0, sizeof(be->probe));
    be->probing = true;
    gw_backend_send(be, &be->probe, version, sizeof(version) - 1, NULL, 0);
}

/*
 * Fail the connection: close it, fail every pending frag with the node's error and,
 * when count_failure, count one consecutive failure against the node.  Safe to call
 * from this backend's own callbacks: conn_gen changes, so a reply loop in progress
 * can tell its buffers are gone.
 */
static void be_fail(struct gw_backend *be, const char *why, bool count_failure)
{
    struct gw_frag *f;
    int64_t now = gw_now_ms();

    be->conn_gen++;
    be->state = GW_BE_IDLE;
    be->in_data = false;
    be->dst = NULL;
    if (be->open) {
        gw_conn_close(&be->conn);
        be->open = false;
    }
    if (be->npending > 0 || count_failure) {
        log_debug("node %s: %s (%u requests pending)", be->node->label, why, be->npending);
    }
    if (count_failure) {
        STAT_INCR(&be->w->stats, backend_failures);
        gw_node_failure(be->pool, be->node, now);
    }
    while ((f = TAILQ_FIRST(&be->pending)) != NULL) {
        TAILQ_REMOVE(&be->pending, f, link);
        be->npending--;
        if (f == &be->probe) {
            be->probing = false;
            gw_node_probe_done(be->pool, be->node, false, now);
            continue;
        }
        if (f->cb != NULL) {
            f->cb(f, NULL, be->node->err_io);
            continue;
        }
        gw_req_frag_lost(f, be->node->err_io);
    }
}

void gw_backend_tick(struct gw_backend *be, int64_t now_ms)
{
    struct gw_pool *pool = be->pool;

    if (be->state == GW_BE_CONNECTING &&
        now_ms - be->connect_started_ms > (int64_t)pool->connect_timeout_ms) {
        STAT_INCR(&be->w->stats, backend_timeouts);
        be_fail(be, "connect timed out", true);
        return;
    }
    if (be->npending > 0 && now_ms - be->last_progress_ms > (int64_t)pool->timeout_ms &&
        be->open) {
        /* Before blaming the node, drain the socket: if this thread was starved of CPU
         * the replies may be waiting there (a read updates last_progress_ms). */
        uint64_t gen = be->conn_gen;
        gw_conn_poll_read(&be->conn);
        if (be->conn_gen != gen || be->npending == 0 ||
            now_ms - be->last_progress_ms <= (int64_t)pool->timeout_ms) {
            return;
        }
    }
    if (be->npending > 0 && now_ms - be->last_progress_ms > (int64_t)pool->timeout_ms) {
        STAT_INCR(&be->w->stats, backend_timeouts);
        be_fail(be, "request timed out", true);
    }
}

static void be_probe_reply(struct gw_backend *be, struct evbuffer *in, const char *line,
                           size_t len, size_t consumed)
{
    bool ok = len >= 8 && memcmp(line, "VERSION ", 8) == 0;

    TAILQ_REMOVE(&be->pending, &be->probe, link);
    be->npending--;
    be->probing = false;
    evbuffer_drain(in, consumed);
    gw_node_probe_done(be->pool, be->node, ok, gw_now_ms());
}

/*
 * A VALUE whose item carries a version header (replicating gateways only): hide the
 * header from the client, and hide tombstones altogether.  Returns 1 when handled, 0
 * when the header does not check out (the item is served as is, version 0), -1 when
 * the header bytes have not all arrived yet.
 */
static int be_versioned_value(struct gw_backend *be, struct gw_frag *frag, struct evbuffer *in,
                              const char *line, size_t len, const struct mc_reply *r)
{
    uint8_t hb[WAN_ITEM_HEADER_SIZE];
    struct wan_item_header h;
    struct evbuffer_ptr pos;
    struct evbuffer *dst;
    char head[MC_KEY_MAX_LENGTH + 80];
    int n;

    if (evbuffer_get_length(in) < len + 2 + WAN_ITEM_HEADER_SIZE) {
        return -1;
    }
    evbuffer_ptr_set(in, &pos, len + 2, EVBUFFER_PTR_SET);
    evbuffer_copyout_from(in, &pos, hb, sizeof(hb));
    if (wan_item_header_decode(hb, sizeof(hb), &h) != 0) {
        return 0;
    }
    if (h.tombstone) {
        dst = NULL;
    } else {
        dst = gw_req_value_dst(frag, r->key, r->nkey);
    }
    if (dst != NULL) {
        if (r->has_cas) {
            n = snprintf(head, sizeof(head), "VALUE %.*s %u %u %" PRIu64 "\r\n", (int)r->nkey,
                         r->key, h.client_flags, r->bytes - WAN_ITEM_HEADER_SIZE, r->cas);
        } else {
            n = snprintf(head, sizeof(head), "VALUE %.*s %u %u\r\n", (int)r->nkey, r->key,
                         h.client_flags, r->bytes - WAN_ITEM_HEADER_SIZE);
        }
        evbuffer_add(dst, head, (size_t)n);
    }
    (void)line;
    evbuffer_drain(in, len + 2 + WAN_ITEM_HEADER_SIZE);
    be->in_data = true;
    be->data_left = r->bytes - WAN_ITEM_HEADER_SIZE + 2;
    be->dst = dst;
    return 1;
}

static void be_read(struct gw_conn *conn, void *arg)
{
    struct gw_backend *be = arg;
    struct evbuffer *in = conn->in;
    uint64_t gen = be->conn_gen;

    be->last_progress_ms = gw_now_ms();
    for (;;) {
        size_t avail = evbuffer_get_length(in);
        struct gw_frag *frag;
        struct evbuffer_ptr eol;
        size_t eol_len = 0;
        size_t len;
        const char *line;

        if (avail == 0) {
            return;
        }
        if (be->in_data) {
            size_t n = avail < be->data_left ? avail : be->data_left;
            if (be->dst != NULL) {
                evbuffer_remove_buffer(in, be->dst, n);
            } else {
                evbuffer_drain(in, n);
            }
            be->data_left -= (uint32_t)n;
            if (be->data_left > 0) {
                return;
            }
            be->in_data = false;
            continue;
        }
        frag = TAILQ_FIRST(&be->pending);
        if (frag == NULL) {
            log_warn("node %s sent %zu bytes nobody asked for", be->node->label, avail);
            be_fail(be, "unexpected data", true);
            return;
        }
        eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF_STRICT);
        if (eol.pos < 0) {
            if (avail > GW_BE_MAX_LINE) {
                log_warn("node %s: reply line too long; closing", be->node->label);
                be_fail(be, "protocol error", true);
            }
            return;
        }
        len = (size_t)eol.pos;
        line = (const char *)evbuffer_pullup(in, (ssize_t)(len + 2));
        if (frag == &be->probe) {
            be_probe_reply(be, in, line, len, len + 2);
            continue;
        }
        if (frag->cb != NULL) {
            if (frag->cb_values && len >= 6 && memcmp(line, "VALUE ", 6) == 0) {
                struct mc_reply r;
                mc_reply_parse(line, len, &r);
                if (r.kind != MC_REPLY_VALUE) {
                    log_warn("node %s: malformed VALUE line; closing", be->node->label);
                    be_fail(be, "protocol error", true);
                    return;
                }
                evbuffer_remove_buffer(in, frag->capture, len + 2);
                be->in_data = true;
                be->data_left = r.bytes + 2;
                be->dst = frag->capture;
                continue;
            }
            TAILQ_REMOVE(&be->pending, frag, link);
            be->npending--;
            gw_node_success(be->node);
            evbuffer_remove_buffer(in, frag->capture, len + 2);
            frag->cb(frag, frag->capture, NULL);
            if (be->conn_gen != gen) {
                return;
            }
            continue;
        }
        if (mc_cmd_is_retrieval(frag->req->cmd) && len >= 6 && memcmp(line, "VALUE ", 6) == 0) {
            struct mc_reply r;
            struct evbuffer *dst;

            mc_reply_parse(line, len, &r);
            if (r.kind != MC_REPLY_VALUE) {
                log_warn("node %s: malformed VALUE line; closing", be->node->label);
                be_fail(be, "protocol error", true);
                return;
            }
            if (r.flags == WAN_ITEM_FLAGS_MARKER && r.bytes >= WAN_ITEM_HEADER_SIZE &&
                be->w->srv->versioned) {
                int rc = be_versioned_value(be, frag, in, line, len, &r);
                if (rc > 0) {
                    continue;
                }
                if (rc < 0) {
                    return; /* wait for the header bytes */
                }
            }
            dst = gw_req_value_dst(frag, r.key, r.nkey);
            if (dst != NULL) {
                evbuffer_remove_buffer(in, dst, len + 2);
            } else {
                evbuffer_drain(in, len + 2);
            }
            be->in_data = true;
            be->data_left = r.bytes + 2;
            be->dst = dst;
            continue;
        }
        TAILQ_REMOVE(&be->pending, frag, link);
        be->npending--;
        gw_node_success(be->node);
        gw_req_frag_line(frag, in, line, len, len + 2);
        if (be->conn_gen != gen) {
            return; /* failed while the reply was handled: `in` is gone */
        }
    }
}
