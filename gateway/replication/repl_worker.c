/*
 * repl_worker — the client workers' side of replication (see repl.h): every local write is
 * packed as a Mutation into the worker's pending records and appended to the spool at the
 * end of the pass, one locked write for the pass; with fsync always the replies wait for
 * the group commit; writes that need a peer's ack (per-key fallback) wait for it here.
 * The WAN thread's side is in repl.c.
 */
#include "gateway/replication/repl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "gateway/base/clock.h"
#include "gateway/base/config.h"
#include "gateway/base/log.h"
#include "gateway/routing/pool.h"
#include "gateway/replication/repl_int.h"
#include "gateway/protocol/req.h"
#include "gateway/server.h"
#include "gateway/loop/worker.h"
#include "proto/geogate_wan.pb-c.h"

/* The first rule whose prefix starts the key decides; the loader guarantees a "" rule. */
static enum gw_repl_mode rule_for(const struct gw_config *cfg, const char *key, uint32_t nkey)
{
    for (size_t i = 0; i < cfg->replication.nrules; i++) {
        const struct gw_rule_conf *rule = &cfg->replication.rules[i];
        size_t n = strlen(rule->prefix);
        if (n <= nkey && memcmp(rule->prefix, key, n) == 0) {
            return rule->mode;
        }
    }
    return GW_REPL_COPY;
}

/* Records a worker spooled during this pass, appended together at its end
 * (gw_repl_pass_end): one lock and one write for the whole pass instead of one per
 * record.  Replies leave the process only after that (the end-of-pass flush comes after
 * the pass end, and a socket flushed mid-pass flushes these first), so a reply the client
 * saw always has its record written. */
struct gw_spool_pending {
    uint8_t *buf; /* keys and packed Mutations */
    size_t len, cap;
    struct pending_ent {
        size_t koff, klen, doff, dlen;
    } * ent;
    struct wan_spool_item *items;
    size_t n, max;
};

#define SPOOL_PENDING_MAX 4096 /* records before a pass appends early */

static int pending_reserve(struct gw_spool_pending *sp, size_t bytes)
{
    if (sp->n == sp->max) {
        size_t max = sp->max ? sp->max * 2 : 64;
        struct pending_ent *e = realloc(sp->ent, max * sizeof(*e));
        struct wan_spool_item *it = e != NULL ? realloc(sp->items, max * sizeof(*it)) : NULL;
        if (e != NULL) {
            sp->ent = e;
        }
        if (it == NULL) {
            return -ENOMEM;
        }
        sp->items = it;
        sp->max = max;
    }
    return repl_buf_room(&sp->buf, &sp->cap, sp->len, bytes, 16384);
}

void gw_repl_spool_flush(struct gw_worker *w)
{
    struct gw_spool_pending *sp = w->spool_pending;
    struct gw_repl *repl = w->srv->repl;
    size_t done = 0;
    int rc;

    if (sp == NULL || sp->n == 0 || repl == NULL) {
        return;
    }
    for (size_t i = 0; i < sp->n; i++) {
        sp->items[i] = (struct wan_spool_item){sp->buf + sp->ent[i].koff, sp->ent[i].klen,
                                               sp->buf + sp->ent[i].doff, sp->ent[i].dlen};
    }
    rc = wan_spool_append_many(repl->spool, sp->items, sp->n, NULL, &done);
    if (rc != 0) {
        /* a disk fault: the spool counts them as lost for every peer (who catch up by
         * backfill) and logs it once per interval, so no line per write here */
        __atomic_add_fetch(&repl->spool_errors, sp->n - done, __ATOMIC_RELAXED);
    }
    sp->n = 0;
    sp->len = 0;
}

static void pending_free(struct gw_worker *w)
{
    struct gw_spool_pending *sp = w->spool_pending;

    if (sp != NULL) {
        free(sp->buf);
        free(sp->ent);
        free(sp->items);
        free(sp);
        w->spool_pending = NULL;
    }
}

/* The most bytes a packed Mutation takes besides its key and value: a tag and a length or
 * value of at most 5 bytes for each of its 10 fields, 8 for the fixed64 hlc. */
#define MUTATION_PACKED_EXTRA 64

/* Pack m for key into the worker's pending records.  False when out of memory. */
static bool pending_add(struct gw_worker *w, const char *key, uint32_t nkey,
                        const Geogate__Wan__V1__Mutation *m)
{
    struct gw_spool_pending *sp = w->spool_pending;
    /* packed into room for its largest size, which spares protobuf-c a sizing pass */
    size_t len = m->key.len + m->value.len + MUTATION_PACKED_EXTRA;
    struct pending_ent *e;

    if (sp == NULL && (sp = w->spool_pending = calloc(1, sizeof(*sp))) == NULL) {
        return false;
    }
    if (sp->n >= SPOOL_PENDING_MAX) {
        gw_repl_spool_flush(w);
    }
    if (pending_reserve(sp, nkey + len) != 0) {
        return false;
    }
    e = &sp->ent[sp->n++];
    e->koff = sp->len;
    e->klen = nkey;
    memcpy(sp->buf + sp->len, key, nkey);
    sp->len += nkey;
    e->doff = sp->len;
    len = geogate__wan__v1__mutation__pack(m, sp->buf + sp->len);
    e->dlen = len;
    sp->len += len;
    return true;
}

/* Pack one item as a Mutation and spool it: with seq, now (the caller waits for its ack);
 * without, at the end of the pass.  site_id 0 means "the shipper's own". */
static bool spool_item(struct gw_worker *w, const struct gw_item *it, bool tombstone, bool own,
                       uint64_t *seq)
{
    struct gw_repl *repl = w->srv->repl;
    Geogate__Wan__V1__Mutation m = GEOGATE__WAN__V1__MUTATION__INIT;
    uint8_t stackbuf[1024];
    uint8_t *buf = stackbuf;
    size_t len;
    int rc;
    /* The spool compacts by its record key (a later record of a key supersedes an earlier
     * one): a stale mark must not supersede the write before it, so it has a key of its
     * own ("\x01" + key). */
    char markkey[MC_KEY_MAX_LENGTH + 1];
    const char *skey = it->key;
    uint32_t nskey = it->nkey;

    if (it->stale && it->nkey <= MC_KEY_MAX_LENGTH) {
        markkey[0] = '\x01';
        memcpy(markkey + 1, it->key, it->nkey);
        skey = markkey;
        nskey = it->nkey + 1;
    }
    m.key.data = (uint8_t *)it->key;
    m.key.len = it->nkey;
    if (it->stale) {
        m.stale = true;
    } else if (!tombstone && !it->hdr->tombstone) {
        m.value.data = (uint8_t *)it->value;
        m.value.len = it->vlen;
    } else {
        m.tombstone = true;
    }
    m.hlc = it->hdr->version.hlc;
    m.flags = it->hdr->client_flags;
    m.expiry = it->hdr->expiry;
    if (!own) {
        m.site_id = it->hdr->version.site_id;
        m.gateway_id = it->hdr->version.gateway_id;
    }
    if (seq == NULL && pending_add(w, skey, nskey, &m)) {
        w->repl_appended = true;
        STAT_INCR(&w->stats, repl_queued);
        return true;
    }
    gw_repl_spool_flush(w); /* keep the worker's records in order */
    len = geogate__wan__v1__mutation__get_packed_size(&m);
    if (len > sizeof(stackbuf)) {
        buf = malloc(len);
        if (buf == NULL) {
            log_error("out of memory spooling key %.*s: not shipped", (int)it->nkey, it->key);
            return false;
        }
    }
    geogate__wan__v1__mutation__pack(&m, buf);
    rc = wan_spool_append(repl->spool, skey, nskey, buf, len, seq);
    if (buf != stackbuf) {
        free(buf);
    }
    if (rc != 0) {
        __atomic_add_fetch(&repl->spool_errors, 1, __ATOMIC_RELAXED); /* the spool logs it */
        return false;
    }
    w->repl_appended = true;
    STAT_INCR(&w->stats, repl_queued);
    return true;
}

bool gw_repl_ship(struct gw_worker *w, const struct gw_item *it)
{
    struct gw_repl *repl = w->srv->repl;
    enum gw_repl_mode mode;

    if (repl == NULL || repl->npeers == 0) {
        return false;
    }
    mode = rule_for(w->srv->cfg, it->key, it->nkey);
    if (mode == GW_REPL_NONE) {
        return false;
    }
    return spool_item(w, it, mode == GW_REPL_INVALIDATE, true, NULL);
}

uint64_t gw_repl_ship_seq(struct gw_worker *w, const struct gw_item *it)
{
    struct gw_repl *repl = w->srv->repl;
    enum gw_repl_mode mode;
    uint64_t seq = 0;

    if (repl == NULL || repl->npeers == 0) {
        return 0;
    }
    mode = rule_for(w->srv->cfg, it->key, it->nkey);
    if (mode == GW_REPL_NONE || !spool_item(w, it, mode == GW_REPL_INVALIDATE, true, &seq)) {
        return 0;
    }
    return seq;
}

/* Waiters for a peer's ack, per worker (only that worker touches its list). */
struct gw_ack_wait {
    TAILQ_ENTRY(gw_ack_wait) link;
    int peer;
    uint64_t seq;
    int64_t deadline_ms;
    void (*done)(void *arg, bool ok);
    void *arg;
};

TAILQ_HEAD(gw_ack_list, gw_ack_wait);

void gw_repl_wait_ack(struct gw_worker *w, int peer, uint64_t seq, uint32_t timeout_ms,
                      void (*done)(void *arg, bool ok), void *arg)
{
    struct gw_ack_wait *a = calloc(1, sizeof(*a));

    if (a != NULL && w->ack_waits == NULL) {
        w->ack_waits = malloc(sizeof(*w->ack_waits));
        if (w->ack_waits != NULL) {
            TAILQ_INIT(w->ack_waits);
        }
    }
    if (a == NULL || w->ack_waits == NULL) {
        free(a);
        done(arg, false);
        return;
    }
    a->peer = peer;
    a->seq = seq;
    a->deadline_ms = gw_mono_ms() + timeout_ms;
    a->done = done;
    a->arg = arg;
    TAILQ_INSERT_TAIL(w->ack_waits, a, link);
    /* Nothing it waits for is held back for company (see REPL_IDLE_COALESCE_MS). */
    if (w->srv->repl != NULL) {
        __atomic_add_fetch(&w->srv->repl->ack_waiters, 1, __ATOMIC_RELAXED);
    }
}

void gw_repl_worker_stop(struct gw_worker *w)
{
    struct gw_ack_wait *a;

    gw_repl_spool_flush(w);
    pending_free(w);
    if (w->ack_waits == NULL) {
        return;
    }
    while ((a = TAILQ_FIRST(w->ack_waits)) != NULL) {
        TAILQ_REMOVE(w->ack_waits, a, link);
        if (w->srv->repl != NULL) {
            __atomic_sub_fetch(&w->srv->repl->ack_waiters, 1, __ATOMIC_RELAXED);
        }
        a->done(a->arg, false);
        free(a);
    }
    free(w->ack_waits);
    w->ack_waits = NULL;
}

void gw_repl_worker_tick(struct gw_worker *w, int64_t now)
{
    struct gw_repl *repl = w->srv->repl;
    struct gw_ack_wait *a, *next;

    if (repl == NULL || w->ack_waits == NULL) {
        return;
    }
    for (a = TAILQ_FIRST(w->ack_waits); a != NULL; a = next) {
        uint64_t acked = __atomic_load_n(&repl->peers[a->peer].acked, __ATOMIC_ACQUIRE);
        next = TAILQ_NEXT(a, link);
        if (acked >= a->seq || now >= a->deadline_ms) {
            TAILQ_REMOVE(w->ack_waits, a, link);
            __atomic_sub_fetch(&repl->ack_waiters, 1, __ATOMIC_RELAXED);
            a->done(a->arg, acked >= a->seq);
            free(a);
        }
    }
}

void gw_repl_ship_local(struct gw_worker *w, const struct gw_item *it)
{
    struct gw_repl *repl = w->srv->repl;

    if (repl == NULL || repl->npeers == 0 ||
        rule_for(w->srv->cfg, it->key, it->nkey) == GW_REPL_NONE) {
        return;
    }
    spool_item(w, it, rule_for(w->srv->cfg, it->key, it->nkey) == GW_REPL_INVALIDATE, false, NULL);
}

void gw_repl_ship_flush(struct gw_worker *w, int32_t delay)
{
    struct gw_repl *repl = w->srv->repl;
    Geogate__Wan__V1__Mutation m = GEOGATE__WAN__V1__MUTATION__INIT;
    uint8_t buf[64];
    size_t len;
    int rc;

    if (repl == NULL || repl->npeers == 0 || !w->srv->cfg->replication.flush) {
        return;
    }
    m.flush = true;
    m.hlc = wan_hlc_now(&w->srv->hlc);
    /* The delay travels as an absolute time, so a late delivery does not stretch it. */
    m.expiry = delay > 0 ? mc_expiry_abs(delay, (uint32_t)time(NULL)) : 0;
    len = geogate__wan__v1__mutation__get_packed_size(&m);
    geogate__wan__v1__mutation__pack(&m, buf);
    gw_repl_spool_flush(w);                                      /* after the writes before it */
    rc = wan_spool_append(repl->spool, NULL, 0, buf, len, NULL); /* never compacted away */
    if (rc != 0) {
        __atomic_add_fetch(&repl->spool_errors, 1, __ATOMIC_RELAXED); /* the spool logs it */
        return;
    }
    w->repl_appended = true;
    STAT_INCR(&w->stats, repl_queued);
}

bool gw_repl_hold(struct gw_worker *w, struct gw_req *r)
{
    struct gw_repl *repl = w->srv->repl;

    if (repl == NULL || repl->fsync != GW_FSYNC_ALWAYS || !w->repl_appended) {
        return false;
    }
    r->pending = 1; /* a closing client orphans it instead of freeing it */
    TAILQ_INSERT_TAIL(&w->sync_wait, r, sync_link);
    return true;
}

void gw_repl_pass_end(struct gw_worker *w)
{
    struct gw_repl *repl = w->srv->repl;
    struct gw_req *r;
    int rc = 0;

    if (repl == NULL || !w->repl_appended) {
        return;
    }
    gw_repl_spool_flush(w);
    w->repl_appended = false;
    if (repl->fsync == GW_FSYNC_ALWAYS) {
        rc = wan_spool_sync(repl->spool); /* a failure is logged by the spool, per interval */
    }
    while ((r = TAILQ_FIRST(&w->sync_wait)) != NULL) {
        TAILQ_REMOVE(&w->sync_wait, r, sync_link);
        r->pending = 0;
        if (rc != 0 && r->reply != NULL) {
            evbuffer_drain(r->reply, evbuffer_get_length(r->reply));
            if (!r->noreply) {
                evbuffer_add_printf(r->reply, "SERVER_ERROR replication log not durable\r\n");
            }
        }
        gw_req_finish(r);
    }
    /* Wake the WAN thread unless it comes back by itself (repl.c, kicks_wanted); a write
     * that waits for a peer's ack always does, so it need not wait out a coalescing. */
    if (!__atomic_exchange_n(&repl->kicked, 1, __ATOMIC_SEQ_CST) ||
        __atomic_load_n(&repl->ack_waiters, __ATOMIC_RELAXED) > 0) {
        event_active(repl->kick_ev, EV_READ, 0);
    }
}
