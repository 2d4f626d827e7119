/*
 * backend — see backend.h.
 *
 *   gw_backend_send ──> output evbuffer (no syscall yet) ──EV_WRITE, once per loop──> node
 *   node ──> be_read_cb: line or VALUE block ──> head frag of `pending` ──> req.c
 *
 * Replies come back in the order requests were written, so the head of `pending` is
 * always the frag being answered.  A VALUE data block is moved chain by chain into
 * its destination as it arrives, however large it is.
 *
 * One-key gets queued back to back leave as one `get k1 k2 ...` (gw_backend_send_get):
 * memcached writes each pipelined get's reply on its own, a multi-key get's in one
 * go.  Its reply holds a VALUE for each hit, in the order asked, then one END; a
 * merged frag is answered by its VALUE, or as a miss once a later key's VALUE or
 * the END shows it was skipped.  A command from a client with no key in that get goes
 * ahead of it (the two clients' requests are concurrent, so either order is one they
 * could have seen), which lets memcached answer the whole pass with one write.
 *
 * While a batch is at the node, what is queued next waits for its reply (up to
 * GW_BE_HOLD_MAX requests) and then leaves as one bigger batch.  memcached works through
 * one connection in order anyway, so this costs the held requests little, and it
 * saves writes, reads and wake-ups on both sides.  An idle node gets a request at once.
 */
#include "gateway/backend/backend.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "gateway/base/clock.h"
#include "gateway/loop/conn.h"
#include "gateway/base/log.h"
#include "gateway/routing/pool.h"
#include "gateway/protocol/req.h"
#include "gateway/server.h"
#include "wan/version.h"

/* A reply line longer than this means we are out of sync with the node. */
#define GW_BE_MAX_LINE 4096
/* A data block streaming to a client is written out whenever this much is waiting. */
#define GW_BE_STREAM_WRITE (64u << 10)

/* A multi-key get made of one-key gets: at most this many keys and line bytes. */
#define GW_BE_GROUP_KEYS 64
#define GW_BE_GROUP_LINE 4096

/* Requests queued behind a batch in flight are written once this many are waiting. */
#define GW_BE_HOLD_MAX 64

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
    free(be->gline);
    free(be);
}

static void be_read(struct gw_conn *conn, void *arg);

static void be_connected(struct gw_conn *conn, void *arg)
{
    struct gw_backend *be = arg;

    (void)conn;
    be->state = GW_BE_CONNECTED;
    be->last_progress_ms = gw_mono_ms();
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

/* No multi-key get is being built. */
static void be_group_reset(struct gw_backend *be)
{
    be->gkeys = 0;
    be->glen = 0;
    be->gfirst = be->glast = NULL;
    be->gkeybits = 0;
}

/* The multi-key get being built joins the output, after everything queued before it. */
static void be_group_close(struct gw_backend *be)
{
    if (be->gkeys == 0) {
        return;
    }
    be->glast->group_last = true;
    if (be->open) {
        evbuffer_add(be->conn.out, be->gline, be->glen);
        evbuffer_add(be->conn.out, "\r\n", 2);
    }
    be_group_reset(be);
}

static void be_on_flush(struct gw_conn *conn, void *arg)
{
    struct gw_backend *be = arg;

    (void)conn;
    be_group_close(be);
    be->nunsent = 0; /* all of it is the kernel's from here on */
}

/* frag joins pending, before `before` (NULL: at the end), in the order of the output. */
static void be_enqueue(struct gw_backend *be, struct gw_frag *frag, struct gw_frag *before)
{
    frag->be = be;
    if (TAILQ_EMPTY(&be->pending)) {
        be->last_progress_ms = gw_mono_ms();
    }
    if (before != NULL) {
        TAILQ_INSERT_BEFORE(before, frag, link);
    } else {
        TAILQ_INSERT_TAIL(&be->pending, frag, link);
    }
    be->npending++;
    STAT_INCR(&be->w->stats, backend_requests);
}

/* One more request is queued: write it this pass, or hold it while a batch is at the
 * node (npending counts both). */
static void be_queued(struct gw_backend *be)
{
    be->nunsent++;
    if (be->conn.queued || be->npending == be->nunsent || be->nunsent >= GW_BE_HOLD_MAX) {
        gw_conn_want_flush(&be->conn);
    }
}

/* A request got its reply: when it was the last one at the node, the held ones go. */
static void be_answered(struct gw_backend *be)
{
    be->npending--;
    if (be->nunsent > 0 && be->npending == be->nunsent) {
        gw_conn_want_flush(&be->conn);
    }
}

/* Whether the multi-key get being built holds a key of client c. */
static bool be_group_has_client(const struct gw_backend *be, const struct gw_client *c)
{
    for (const struct gw_frag *f = be->gfirst; f != NULL; f = TAILQ_NEXT(f, link)) {
        if (f->req->client == c) {
            return true;
        }
        if (f == be->glast) {
            break;
        }
    }
    return false;
}

static void be_connect(struct gw_backend *be)
{
    be->state = GW_BE_CONNECTING;
    be->connect_started_ms = gw_mono_ms();
    be->in_data = false;
    if (gw_conn_connect(&be->conn, be->w, (struct sockaddr *)&be->node->addr, be->node->addrlen,
                        be_read, be_error, be_connected, be) != 0) {
        /* Reported from the tick, never from inside the caller's stack. */
        be->connect_started_ms = 0;
        return;
    }
    be->conn.on_flush = be_on_flush;
    be->open = true;
}

/* gw_backend_send's work: the data comes out of the evbuffer data or, when that is
 * NULL, from memory at bytes. */
static void be_send(struct gw_backend *be, struct gw_frag *frag, const char *line, size_t len,
                    struct evbuffer *data, const void *bytes, size_t ndata)
{
    struct evbuffer *out;
    bool ahead;

    if (!be->open && be->state == GW_BE_IDLE) {
        be_connect(be);
    }
    /* A client's command may pass the multi-key get being built unless one of its own
     * keys is in it; internal requests never do. */
    ahead = be->gkeys > 0 && frag->req != NULL && frag->req->client != NULL &&
            !be_group_has_client(be, frag->req->client);
    if (!ahead) {
        be_group_close(be);
    }
    frag->merged = false;
    frag->group_last = false;
    be_enqueue(be, frag, ahead ? be->gfirst : NULL);
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
    } else if (bytes != NULL && ndata > 0) {
        evbuffer_add(out, bytes, ndata);
    }
    if (frag->meta) {
        evbuffer_add(out, "mn\r\n", 4);
    }
    be_queued(be);
}

void gw_backend_send(struct gw_backend *be, struct gw_frag *frag, const char *line, size_t len,
                     struct evbuffer *data, size_t ndata)
{
    be_send(be, frag, line, len, data, NULL, ndata);
}

void gw_backend_send_bytes(struct gw_backend *be, struct gw_frag *frag, const char *line,
                           size_t len, const void *data, size_t ndata)
{
    be_send(be, frag, line, len, NULL, data, ndata);
}

/* Whether key is already one of the multi-key get's (a server may answer a key asked
 * twice only once, and then the second frag could not tell its reply from a miss). */
/* A key's bit in gkeybits, from its first and last eight bytes (keys that differ tend
 * to differ at the end: "user:1041", "user:1042"). */
static uint64_t be_key_bit(const char *key, uint32_t nkey)
{
    uint64_t head = 0, tail = 0;
    uint32_t n = nkey < 8 ? nkey : 8;

    memcpy(&head, key, n);
    memcpy(&tail, key + nkey - n, n);
    return (uint64_t)1 << (((head ^ (tail << 7 | tail >> 57) ^ nkey) * 0x9e3779b97f4a7c15ull) >>
                           58);
}

static bool be_group_has(const struct gw_backend *be, const char *key, uint32_t nkey)
{
    for (const struct gw_frag *f = be->gfirst; f != NULL; f = TAILQ_NEXT(f, link)) {
        if (f->nmkey == nkey && memcmp(f->mkey, key, nkey) == 0) {
            return true;
        }
        if (f == be->glast) {
            break;
        }
    }
    return false;
}

void gw_backend_send_get(struct gw_backend *be, struct gw_frag *frag, enum mc_cmd cmd,
                         const char *key, uint32_t nkey)
{
    const char *name = cmd == MC_CMD_GETS ? "gets" : "get";
    size_t nname = cmd == MC_CMD_GETS ? 4 : 3;
    uint64_t bit;

    if (!be->open && be->state == GW_BE_IDLE) {
        be_connect(be);
    }
    if (!be->open || (be->gline == NULL && (be->gline = malloc(GW_BE_GROUP_LINE)) == NULL)) {
        char line[8 + MC_KEY_MAX_LENGTH];
        int n = snprintf(line, sizeof(line), "%s %.*s\r\n", name, (int)nkey, key);
        gw_backend_send(be, frag, line, (size_t)n, NULL, 0);
        return;
    }
    bit = be_key_bit(key, nkey);
    if (be->gkeys > 0 && (be->gcmd != cmd || be->gkeys >= GW_BE_GROUP_KEYS ||
                          be->glen + 1 + nkey > GW_BE_GROUP_LINE ||
                          ((be->gkeybits & bit) != 0 && be_group_has(be, key, nkey)))) {
        be_group_close(be);
    }
    if (be->gkeys > 0) {
        STAT_INCR(&be->w->stats, backend_gets_merged);
    } else {
        memcpy(be->gline, name, nname);
        be->glen = (uint32_t)nname;
        be->gcmd = cmd;
        be->gfirst = frag;
    }
    be->gline[be->glen++] = ' ';
    memcpy(be->gline + be->glen, key, nkey);
    be->glen += nkey;
    be->gkeys++;
    be->gkeybits |= bit;
    be->glast = frag;
    frag->merged = true;
    frag->group_last = false;
    frag->mkey = key;
    frag->nmkey = (uint8_t)nkey;
    be_enqueue(be, frag, NULL);
    be_queued(be);
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
    struct gw_frag_queue dead;
    struct gw_frag *f;
    int64_t now = gw_mono_ms();

    be->conn_gen++;
    be->state = GW_BE_IDLE;
    be->in_data = false;
    be->dst = NULL;
    be->dst_conn = NULL;
    be->value_frag = NULL;
    be->await_end = false;
    be->nunsent = 0;
    be_group_reset(be);
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
    /* Fail what was pending on the connection that just died, and only that: failing a
     * request completes it, its client may go on at once and queue new requests here,
     * and those belong to the next connection (failing them too would free frags a new
     * multi-key get is being built from, and leave their replies to be matched to the
     * wrong requests). */
    TAILQ_INIT(&dead);
    TAILQ_CONCAT(&dead, &be->pending, link);
    be->npending = 0;
    while ((f = TAILQ_FIRST(&dead)) != NULL) {
        TAILQ_REMOVE(&dead, f, link);
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

void gw_backend_forget_dst(struct gw_worker *w, const struct evbuffer *buf)
{
    struct gw_backend *be;

    for (uint32_t i = 0; i < w->nbackends; i++) {
        if (w->backends[i] != NULL && w->backends[i]->dst == buf) {
            w->backends[i]->dst = NULL; /* the rest of the data block is read and dropped */
            w->backends[i]->dst_conn = NULL;
        }
    }
    TAILQ_FOREACH(be, &w->retired, retire_link)
    {
        if (be->dst == buf) {
            be->dst = NULL;
            be->dst_conn = NULL;
        }
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
    if (be->npending > 0 && now_ms - be->last_progress_ms > (int64_t)pool->timeout_ms && be->open) {
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

static void be_probe_reply(struct gw_backend *be, struct evbuffer *in, const char *line, size_t len,
                           size_t consumed)
{
    bool ok = len >= 8 && memcmp(line, "VERSION ", 8) == 0;

    TAILQ_REMOVE(&be->pending, &be->probe, link);
    be_answered(be);
    be->probing = false;
    evbuffer_drain(in, consumed);
    gw_node_probe_done(be->pool, be->node, ok, gw_mono_ms());
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
    uint8_t copy[WAN_ITEM_HEADER_SIZE];
    const uint8_t *hb = copy;
    struct wan_item_header h;
    struct evbuffer *dst;
    struct evbuffer_iovec first;
    char head[MC_KEY_MAX_LENGTH + 80];
    int n;

    if (evbuffer_get_length(in) < len + 2 + WAN_ITEM_HEADER_SIZE) {
        return -1;
    }
    /* The header is almost always in the same piece of the buffer as the line before it:
     * read it there.  (Not by a pullup: that may move the line, which r points into.) */
    if (evbuffer_peek(in, -1, NULL, &first, 1) >= 1 && (const char *)first.iov_base == line &&
        first.iov_len >= len + 2 + WAN_ITEM_HEADER_SIZE) {
        hb = (const uint8_t *)line + len + 2;
    } else {
        struct evbuffer_ptr pos;
        evbuffer_ptr_set(in, &pos, len + 2, EVBUFFER_PTR_SET);
        evbuffer_copyout_from(in, &pos, copy, sizeof(copy));
    }
    if (wan_item_header_decode(hb, WAN_ITEM_HEADER_SIZE, &h) != 0) {
        return 0;
    }
    if (h.tombstone) {
        dst = NULL;
    } else {
        dst = gw_req_value_dst(frag, r->key, r->nkey, r->bytes - WAN_ITEM_HEADER_SIZE);
    }
    if (dst != NULL) {
        /* "VALUE key flags bytes[ cas]\r\n", built by hand: snprintf cost more than the
         * rest of a replicating gateway's get hit */
        memcpy(head, "VALUE ", 6);
        n = 6;
        memcpy(head + n, r->key, r->nkey);
        n += (int)r->nkey;
        head[n++] = ' ';
        n += (int)mc_put_u64(head + n, h.client_flags);
        head[n++] = ' ';
        n += (int)mc_put_u64(head + n, r->bytes - WAN_ITEM_HEADER_SIZE);
        if (r->has_cas) {
            head[n++] = ' ';
            n += (int)mc_put_u64(head + n, r->cas);
        }
        head[n++] = '\r';
        head[n++] = '\n';
        evbuffer_add(dst, head, (size_t)n);
    }
    (void)line;
    evbuffer_drain(in, len + 2 + WAN_ITEM_HEADER_SIZE);
    be->in_data = true;
    be->data_left = r->bytes - WAN_ITEM_HEADER_SIZE + 2;
    be->dst = dst;
    be->dst_conn = dst != NULL ? gw_req_stream_conn(frag) : NULL;
    return 1;
}

/* A VALUE line for frag: its header goes where the request wants it and the data
 * block follows (be->in_data).  Returns 0, or 1 to wait for more input. */
static int be_value_start(struct gw_backend *be, struct gw_frag *frag, struct evbuffer *in,
                          const char *line, size_t len, const struct mc_reply *r)
{
    struct evbuffer *dst;
    size_t move;

    if (r->flags == WAN_ITEM_FLAGS_MARKER && r->bytes >= WAN_ITEM_HEADER_SIZE &&
        gw_server_replicates(be->w->srv)) {
        int rc = be_versioned_value(be, frag, in, line, len, r);
        if (rc != 0) {
            return rc > 0 ? 0 : 1;
        }
    }
    dst = gw_req_value_dst(frag, r->key, r->nkey, r->bytes);
    move = len + 2;
    be->data_left = r->bytes + 2;
    if (evbuffer_get_length(in) >= move + be->data_left) {
        /* the data block is here already (the usual small value): line and block
         * leave in one move, and be_read finds the block done */
        move += be->data_left;
        be->data_left = 0;
    }
    if (dst != NULL) {
        evbuffer_remove_buffer(in, dst, move);
    } else {
        evbuffer_drain(in, move);
    }
    be->in_data = true;
    be->dst = dst;
    be->dst_conn = dst != NULL ? gw_req_stream_conn(frag) : NULL;
    return 0;
}

/* Take frag, a merged one-key get at the head of pending, off the queue: answered by
 * its VALUE (moved already) or, when it was skipped, as a miss.  Returns 0, or -1
 * when the connection failed meanwhile. */
static int be_merged_answered(struct gw_backend *be, struct gw_frag *frag, uint64_t gen)
{
    TAILQ_REMOVE(&be->pending, frag, link);
    be_answered(be);
    gw_node_success(be->node);
    gw_req_frag_end(frag);
    return be->conn_gen == gen ? 0 : -1;
}

/*
 * A reply line to the multi-key get the head frag belongs to.  Returns 0 when the line
 * was consumed, 1 to wait for more input, -1 when the connection failed.
 */
static int be_merged_line(struct gw_backend *be, struct evbuffer *in, const char *line, size_t len,
                          uint64_t gen)
{
    struct gw_frag *frag = TAILQ_FIRST(&be->pending);
    struct mc_reply r;

    if (be->gkeys > 0 && frag == be->gfirst) {
        /* that get has not even been written yet */
        log_warn("node %s sent %zu bytes nobody asked for", be->node->label, len + 2);
        be_fail(be, "unexpected data", true);
        return -1;
    }
    if (len >= 6 && memcmp(line, "VALUE ", 6) == 0) {
        mc_reply_parse(line, len, &r);
        if (r.kind != MC_REPLY_VALUE) {
            log_warn("node %s: malformed VALUE line; closing", be->node->label);
            be_fail(be, "protocol error", true);
            return -1;
        }
        /* keys before this one had no VALUE: misses */
        while (frag->nmkey != r.nkey || memcmp(frag->mkey, r.key, r.nkey) != 0) {
            if (frag->group_last) {
                log_warn("node %s sent a VALUE for a key it was not asked for; closing",
                         be->node->label);
                be_fail(be, "protocol error", true);
                return -1;
            }
            if (be_merged_answered(be, frag, gen) != 0) {
                return -1;
            }
            frag = TAILQ_FIRST(&be->pending);
        }
        be->value_frag = frag;
        return be_value_start(be, frag, in, line, len, &r);
    }
    /* END (the rest were misses) or an error line, which answers every key left */
    {
        char copy[GW_BE_MAX_LINE + 1];
        bool end = len == 3 && memcmp(line, "END", 3) == 0;
        bool last;

        memcpy(copy, line, len);
        copy[len] = '\0';
        evbuffer_drain(in, len + 2);
        do {
            last = frag->group_last;
            if (end) {
                if (be_merged_answered(be, frag, gen) != 0) {
                    return -1;
                }
            } else {
                TAILQ_REMOVE(&be->pending, frag, link);
                be_answered(be);
                gw_node_success(be->node);
                gw_req_frag_line(frag, in, copy, len, 0);
                if (be->conn_gen != gen) {
                    return -1;
                }
            }
            frag = TAILQ_FIRST(&be->pending);
        } while (!last && frag != NULL);
        if (!last) {
            log_warn("node %s: a multi-key get lost its frags; closing", be->node->label);
            be_fail(be, "protocol error", true);
            return -1;
        }
    }
    return 0;
}

/* The reply line at the head of in, contiguous, and its length without the CRLF; NULL
 * while no whole line is there.  A line nearly always lies in the first chain, where
 * memchr finds its end; a line across chains, or one after a bare LF, takes libevent's
 * search and a pullup. */
/*
 * A reply line to the meta command at the head of pending: passed on as it is (a VA
 * line with its data block) until the MN that followed the command, which ends it.
 * Quiet mode (q) needs nothing more: whatever the node chose to say comes before the MN.
 * An internal request (frag->cb) gets the whole reply in its capture at the MN.
 * Returns 0, or -1 when the connection failed meanwhile.
 */
static int be_meta_line(struct gw_backend *be, struct gw_frag *frag, struct evbuffer *in,
                        const char *line, size_t len, uint64_t gen)
{
    struct evbuffer *dst;
    uint32_t bytes = 0;

    if (len == 2 && line[0] == 'M' && line[1] == 'N') {
        evbuffer_drain(in, 4);
        TAILQ_REMOVE(&be->pending, frag, link);
        be_answered(be);
        gw_node_success(be->node);
        if (frag->cb != NULL) {
            frag->cb(frag, frag->capture, NULL);
        } else {
            gw_req_frag_meta_end(frag);
        }
        return be->conn_gen == gen ? 0 : -1;
    }
    if (len >= 3 && memcmp(line, "VA ", 3) == 0 && !mc_meta_va_bytes(line, len, &bytes)) {
        log_warn("node %s: malformed VA line; closing", be->node->label);
        be_fail(be, "protocol error", true);
        return -1;
    }
    dst = frag->cb != NULL ? frag->capture : gw_req_meta_dst(frag, bytes);
    if (dst != NULL) {
        evbuffer_remove_buffer(in, dst, len + 2);
    } else {
        evbuffer_drain(in, len + 2);
    }
    if (len >= 3 && memcmp(line, "VA ", 3) == 0) {
        be->in_data = true;
        be->data_left = bytes + 2;
        be->dst = dst;
        be->dst_conn = dst != NULL && frag->cb == NULL ? gw_req_stream_conn(frag) : NULL;
    }
    return 0;
}

static const char *be_next_line(struct evbuffer *in, size_t *len)
{
    struct evbuffer_iovec v;
    struct evbuffer_ptr eol;
    size_t eol_len = 0;

    if (evbuffer_peek(in, -1, NULL, &v, 1) > 0) {
        const char *p = v.iov_base;
        const char *nl = memchr(p, '\n', v.iov_len);
        if (nl != NULL && nl > p && nl[-1] == '\r') {
            *len = (size_t)(nl - p) - 1;
            return p;
        }
    }
    eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF_STRICT);
    if (eol.pos < 0) {
        return NULL;
    }
    *len = (size_t)eol.pos;
    return (const char *)evbuffer_pullup(in, (ssize_t)(*len + 2));
}

/*
 * The lines of a many-line internal reply (frag->cb_body) at the head of in: body lines
 * go to the frag's capture as they come; the first other line ends the reply (it goes
 * to the capture too, and the frag to its cb).  Returns 0 when the reply is done, 1 to
 * wait for more input, -1 when the connection failed.
 */
static int be_body_reply(struct gw_backend *be, struct gw_frag *frag, struct evbuffer *in,
                         uint64_t gen)
{
    size_t nbody = strlen(frag->cb_body);
    char head[16];

    if (nbody > sizeof(head)) {
        nbody = sizeof(head);
    }
    for (;;) {
        size_t eol_len = 0;
        struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
        size_t n;

        if ((eol.pos < 0 && evbuffer_get_length(in) > GW_BE_MAX_LINE) || eol.pos > GW_BE_MAX_LINE) {
            log_warn("node %s: reply line too long; closing", be->node->label);
            be_fail(be, "protocol error", true);
            return -1;
        }
        if (eol.pos < 0) {
            return 1;
        }
        n = (size_t)eol.pos + eol_len;
        if ((size_t)eol.pos >= nbody && evbuffer_copyout(in, head, nbody) == (ssize_t)nbody &&
            memcmp(head, frag->cb_body, nbody) == 0) {
            evbuffer_remove_buffer(in, frag->capture, n);
            continue;
        }
        TAILQ_REMOVE(&be->pending, frag, link);
        be_answered(be);
        gw_node_success(be->node);
        evbuffer_remove_buffer(in, frag->capture, n);
        frag->cb(frag, frag->capture, NULL);
        return be->conn_gen == gen ? 0 : -1;
    }
}

static void be_read(struct gw_conn *conn, void *arg)
{
    struct gw_backend *be = arg;
    struct evbuffer *in = conn->in;
    uint64_t gen = be->conn_gen;

    be->last_progress_ms = gw_mono_ms();
    for (;;) {
        size_t avail = evbuffer_get_length(in);
        struct gw_frag *frag;
        size_t len;
        const char *line;

        if (be->in_data) {
            size_t n = avail < be->data_left ? avail : be->data_left;
            if (n > 0 && be->dst != NULL) {
                evbuffer_remove_buffer(in, be->dst, n);
                if (be->dst_conn != NULL && evbuffer_get_length(be->dst) >= GW_BE_STREAM_WRITE) {
                    /* a large value streaming to a client: to the kernel as it comes,
                     * not at the end of a pass that may read much more of it */
                    gw_conn_write_now(be->dst_conn);
                }
            } else if (n > 0) {
                evbuffer_drain(in, n);
            }
            be->data_left -= (uint32_t)n;
            if (be->data_left > 0) {
                return;
            }
            be->in_data = false;
            if (be->value_frag != NULL) {
                frag = be->value_frag;
                be->value_frag = NULL;
                be->await_end = frag->group_last;
                if (be_merged_answered(be, frag, gen) != 0) {
                    return;
                }
            }
            continue;
        }
        if (avail == 0) {
            return;
        }
        frag = TAILQ_FIRST(&be->pending);
        if (frag == NULL && !be->await_end) {
            log_warn("node %s sent %zu bytes nobody asked for", be->node->label, avail);
            be_fail(be, "unexpected data", true);
            return;
        }
        if (!be->await_end && frag->cb != NULL && frag->cb_body != NULL) {
            if (be_body_reply(be, frag, in, gen) != 0) {
                return;
            }
            continue;
        }
        line = be_next_line(in, &len);
        if (line == NULL || len > GW_BE_MAX_LINE) {
            /* a whole line over the limit too: be_merged_line copies an error line
             * into a GW_BE_MAX_LINE buffer, and memcached never sends one that long */
            if (line != NULL || avail > GW_BE_MAX_LINE) {
                log_warn("node %s: reply line too long; closing", be->node->label);
                be_fail(be, "protocol error", true);
            }
            return;
        }
        if (be->await_end) {
            if (len != 3 || memcmp(line, "END", 3) != 0) {
                log_warn("node %s: no END after a multi-key get; closing", be->node->label);
                be_fail(be, "protocol error", true);
                return;
            }
            be->await_end = false;
            evbuffer_drain(in, len + 2);
            continue;
        }
        if (frag->meta) {
            if (be_meta_line(be, frag, in, line, len, gen) != 0) {
                return;
            }
            continue;
        }
        if (frag->merged) {
            if (be_merged_line(be, in, line, len, gen) != 0) {
                return;
            }
            continue;
        }
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
                be->dst_conn = NULL;
                continue;
            }
            TAILQ_REMOVE(&be->pending, frag, link);
            be_answered(be);
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

            mc_reply_parse(line, len, &r);
            if (r.kind != MC_REPLY_VALUE) {
                log_warn("node %s: malformed VALUE line; closing", be->node->label);
                be_fail(be, "protocol error", true);
                return;
            }
            if (be_value_start(be, frag, in, line, len, &r) != 0) {
                return; /* wait for the header bytes */
            }
            continue;
        }
        TAILQ_REMOVE(&be->pending, frag, link);
        be_answered(be);
        gw_node_success(be->node);
        gw_req_frag_line(frag, in, line, len, len + 2);
        if (be->conn_gen != gen) {
            return; /* failed while the reply was handled: `in` is gone */
        }
    }
}
