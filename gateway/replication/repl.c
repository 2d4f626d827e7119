/*
 * repl — see repl.h.
 *
 *   Shipping, per peer (WAN thread):
 *
 *     down ──connect──> (TLS, h2, Ship stream) ──up──> pump: cursor at acked+1
 *       ^                                              │ batches of spooled records,
 *       │ backoff (jittered, exponential)              │ at most REPL_INFLIGHT unacked
 *       └──────────── down (any reason) <──────────────┤
 *                                                      v
 *                      ShipAck(acked_seq) ──> spool ack (trims) ──> pump again
 *
 *   Receiving (WAN thread): one batch per stream at a time; while it is applied the
 *   stream is BUSY, so HTTP/2 flow control holds the peer back.
 *
 * The workers' side (spooling writes, ack waits, the end of a pass) is in repl_worker.c;
 * the state both share is in repl_int.h.
 */
#include "gateway/replication/repl.h"

#include <errno.h>
#include <inttypes.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "gateway/base/clock.h"
#include "gateway/store/apply.h"
#include "gateway/replication/catchup.h"
#include "gateway/base/config.h"
#include "gateway/base/json.h"
#include "gateway/base/log.h"
#include "gateway/routing/pool.h"
#include "gateway/protocol/req.h"
#include "gateway/server.h"
#include "gateway/replication/skew.h"
#include "gateway/frontend/vop.h"
#include "gateway/loop/worker.h"
#include "proto/geogate_wan.pb-c.h"
#include "proto/health.pb-c.h"
#include "tls/tls.h"
#include "wan/grpc_client.h"
#include "wan/grpc_server.h"
#include "wan/le.h"
#include "wan/spool.h"

#include "gateway/replication/repl_int.h"


/* ---- logging glue ---- */

static void grpc_log(void *arg, enum wan_grpc_log_level level, const char *line)
{
    (void)arg;
    if (level == WAN_GRPC_LOG_ERROR) {
        log_error("wan: %s", line);
    } else if (level == WAN_GRPC_LOG_WARN) {
        log_warn("wan: %s", line);
    } else {
        log_info("wan: %s", line);
    }
}

static void spool_log(void *arg, enum wan_spool_log_level level, const char *msg)
{
    (void)arg;
    if (level == WAN_SPOOL_LOG_ERROR) {
        log_error("spool: %s", msg);
    } else if (level == WAN_SPOOL_LOG_WARN) {
        log_warn("spool: %s", msg);
    } else {
        log_info("spool: %s", msg);
    }
}

/* ---- shipping: WAN thread ---- */

static void peer_connect(struct gw_peer *p);

static void lag_sample(struct gw_peer *p, uint64_t ms, uint32_t count)
{
    unsigned b = 0;

    while (b + 1 < REPL_LAG_BUCKETS && ms >= (1u << b)) {
        b++;
    }
    __atomic_add_fetch(&p->lag[b], count, __ATOMIC_RELAXED);
    __atomic_add_fetch(&p->lag_count, count, __ATOMIC_RELAXED);
}

/* ---- a ShipRequest built from the spool's packed Mutations, never decoded ---- */

#define PB_TAG(field, wire) ((uint8_t)((field) << 3 | (wire)))

static size_t pb_varint(uint8_t *out, uint64_t v)
{
    size_t n = 0;

    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

/* Room for n more bytes in the peer's batch buffer. */
static int batch_room(struct gw_peer *p, size_t n)
{
    return repl_buf_room(&p->bbuf, &p->bcap, p->blen, n, 65536);
}

/* Field 4 (mutations) of ShipRequest: the record's bytes are a packed Mutation already. */
static int batch_add_mutation(struct gw_peer *p, const uint8_t *data, size_t len)
{
    if (batch_room(p, 1 + 10 + len) != 0) {
        return -ENOMEM;
    }
    p->bbuf[p->blen++] = PB_TAG(4, 2);
    p->blen += pb_varint(p->bbuf + p->blen, len);
    memcpy(p->bbuf + p->blen, data, len);
    p->blen += len;
    return 0;
}

/* A loss is announced once the spool writes again: while a disk fault lasts, every
 * second adds to it, and each announcement would start the peer's whole catch-up over
 * again; one after the fault covers all of it. */
static bool lost_announcable(struct gw_repl *repl)
{
    struct wan_spool_stats ss;

    return wan_spool_stats(repl->spool, &ss) == 0 && ss.fault == 0;
}

/* The batch's other fields (field order is free in protobuf). */
static int batch_finish(struct gw_peer *p, uint64_t first, uint64_t last)
{
    struct gw_repl *repl = p->repl;
    const char *site = repl->srv->cfg->site;
    size_t slen = strlen(site);

    if (batch_room(p, 1 + 10 + slen + 6 * 11) != 0) {
        return -ENOMEM;
    }
    p->bbuf[p->blen++] = PB_TAG(1, 2); /* origin_site */
    p->blen += pb_varint(p->bbuf + p->blen, slen);
    memcpy(p->bbuf + p->blen, site, slen);
    p->blen += slen;
    if (repl->srv->cfg->gateway_id != 0) {
        p->bbuf[p->blen++] = PB_TAG(2, 0);
        p->blen += pb_varint(p->bbuf + p->blen, repl->srv->cfg->gateway_id);
    }
    p->bbuf[p->blen++] = PB_TAG(3, 0); /* first_seq */
    p->blen += pb_varint(p->bbuf + p->blen, first);
    p->bbuf[p->blen++] = PB_TAG(5, 0); /* last_seq */
    p->blen += pb_varint(p->bbuf + p->blen, last);
    if (p->lost > p->lost_seen && lost_announcable(repl)) {
        struct wan_spool_stats ss;
        wan_spool_stats(repl->spool, &ss);
        p->bbuf[p->blen++] = PB_TAG(6, 0); /* lost */
        p->blen += pb_varint(p->bbuf + p->blen, p->lost);
        /* spool_id names the stream the cumulative `lost` counts in: per spool *and* per
         * open, since the dropped counts start at 0 again when the gateway restarts (with
         * the id alone, a restarted gateway's new losses below its old count would be
         * taken for ones the peer already caught up on) */
        p->bbuf[p->blen++] = PB_TAG(7, 1); /* spool_id, fixed64 little-endian */
        put64(p->bbuf + p->blen, ss.id ^ ss.instance);
        p->blen += 8;
    }
    p->last_send_ms = gw_wall_ms();
    if (p->last_send_ms - p->clock_sent_ms >= REPL_CLOCK_EVERY_MS) {
        /* sent_ms: the peer measures our clock from it.  Once a second is enough, and
         * keeps its 7 bytes off most batches (each batch exchange is WAN overhead). */
        p->clock_sent_ms = p->last_send_ms;
        p->bbuf[p->blen++] = PB_TAG(8, 0);
        p->blen += pb_varint(p->bbuf + p->blen, (uint64_t)p->last_send_ms);
    }
    return 0;
}

static void peer_pump_once(struct gw_peer *p);

/*
 * Records meant for the peer were lost (a disk fault kept them out of the spool, or the
 * spool overflowed) and nothing is left to ship that would carry the news: send a batch
 * with no mutations, only the loss, so the peer starts its catch-up now rather than at
 * the next write.  Once a second at most, until its acks say it has taken note.
 */
static void peer_announce_lost(struct gw_peer *p)
{
    int64_t now = gw_wall_ms();

    if (p->lost <= p->lost_seen || p->inflight > 0 || now - p->lost_sent_ms < 1000 ||
        !lost_announcable(p->repl)) {
        return;
    }
    p->blen = 0;
    if (batch_finish(p, 0, 0) != 0 || wan_grpc_client_ship_raw(p->client, p->bbuf, p->blen) != 0) {
        return; /* full or gone: the next pump tries again */
    }
    p->lost_sent_ms = now;
}

/* Whether a record appended now should wake the WAN thread: only when some peer would act
 * on it at once.  A peer waiting on its coalescing timer, a full window or a reconnect
 * comes back by itself, so while every peer is like that, workers append without a
 * cross-thread wake-up (each one is an eventfd write, a lock and a context switch). */
static bool kicks_wanted(struct gw_repl *repl)
{
    for (size_t i = 0; i < repl->npeers; i++) {
        struct gw_peer *p = &repl->peers[i];
        if (p->up && p->inflight < REPL_INFLIGHT &&
            !p->coalesce_armed) {
            return true;
        }
    }
    return false;
}

/* After the WAN thread pumped: turn worker kicks on or off (repl->kicked). */
static void repl_rearm(struct gw_repl *repl)
{
    if (!kicks_wanted(repl)) {
        __atomic_store_n(&repl->kicked, 1, __ATOMIC_RELEASE);
        return;
    }
    if (__atomic_exchange_n(&repl->kicked, 0, __ATOMIC_SEQ_CST) != 0) {
        /* kicks were off: what was appended meanwhile woke nobody */
        for (size_t i = 0; i < repl->npeers; i++) {
            peer_pump_once(&repl->peers[i]);
        }
    }
}

static void peer_pump(struct gw_peer *p)
{
    peer_pump_once(p);
    repl_rearm(p->repl);
}

/* ---- re-stamping what our clock stamped ahead (docs/REPLICATION.md, "Clock skew") ---- */

/* Whether a spooled record must be re-stamped before it ships: it carries a version more
 * than max_clock_skew ahead of our clock now (every peer refuses it), or it is a write of
 * ours from before our clock was last put right (this process's start, or a step back)
 * with a version above where the clock restarted.  The second kind may be within the
 * bound by the time it is read, but shipped as it is it would beat writes made here
 * after it (the clock restarted below it), on this site and everywhere. */
static bool record_ahead(struct gw_repl *repl, const struct wan_spool_record *rec, uint64_t now_ms)
{
    uint64_t hlc;
    uint32_t site;

    if (gw_skew_mutation_hlc(rec->data, rec->len, &hlc, &site) != 0) {
        return false;
    }
    return (site == 0 && rec->seq <= repl->restamp_seq && hlc > repl->restamp_above) ||
           wan_hlc_beyond_bound(&repl->srv->hlc, hlc, now_ms);
}

/* Where the re-stamp window stands: what the spool held when the clock (re)started.  A
 * write stamped before a step back and spooled after this look is not in it: only the
 * bound catches that one (a write's round trip to memcached, after a step of more than
 * max_clock_skew). */
static void restamp_window(struct gw_repl *repl)
{
    uint64_t resets = wan_hlc_resets(&repl->srv->hlc);
    struct wan_spool_stats ss;

    if (repl->restamp_window_set && resets == repl->restamp_resets) {
        return;
    }
    if (wan_spool_stats(repl->spool, &ss) != 0) {
        return;
    }
    repl->restamp_window_set = true;
    repl->restamp_resets = resets;
    repl->restamp_seq = ss.last_seq;
    repl->restamp_above = wan_hlc_restart(&repl->srv->hlc);
}

static void restamp_done(void *arg, uint64_t applied, uint64_t rejected, bool failed,
                         Geogate__Wan__V1__Mutation **newer, size_t n_newer)
{
    struct gw_repl *repl = arg;
    int64_t now = gw_wall_ms();

    (void)newer;
    (void)n_newer;
    repl->restamp_running = false;
    if (failed) {
        /* Not all of them reached the local pool: the run is done again, later. */
        repl->restamp_retry_ms = now + 1000;
        if (gw_log_gate_pass(&repl->restamp_log, now, 10000, NULL)) {
            log_warn("re-stamping writes stamped ahead of our clock: a local node failed; "
                     "trying again (replication waits behind them)");
        }
        return;
    }
    repl->restamp_done = repl->restamp_pending;
    __atomic_add_fetch(&repl->restamped, applied, __ATOMIC_RELAXED);
    __atomic_add_fetch(&repl->restamp_superseded, rejected, __ATOMIC_RELAXED);
    if (gw_log_gate_pass(&repl->restamp_log, now, 10000, NULL)) {
        log_warn("re-stamped %" PRIu64 " writes this gateway had stamped more than "
                 "max_clock_skew ahead of its clock (%" PRIu64 " replaced by later writes "
                 "since); they ship with fresh versions (spool seq %" PRIu64 ")",
                 __atomic_load_n(&repl->restamped, __ATOMIC_RELAXED),
                 __atomic_load_n(&repl->restamp_superseded, __ATOMIC_RELAXED), repl->restamp_done);
    }
    /* Not from here: a run that finished at once would pump inside the pump. */
    if (repl->kick_ev != NULL) {
        event_active(repl->kick_ev, EV_READ, 0);
    }
}

/* Re-stamp the run of records ahead of our clock that starts at *first (borrowed from
 * p's cursor): read on while they are ahead, up to a batch, and hand them to
 * gw_apply_restamp.  One run at a time for the whole gateway: the spool is shared, so
 * the other peers' pumps wait at the same record.  The caller seeks the cursor back. */
static void restamp_start(struct gw_peer *p, const struct wan_spool_record *first, uint64_t now_ms)
{
    struct gw_repl *repl = p->repl;
    const char *site = repl->srv->cfg->site;
    struct wan_spool_record rec = *first;
    Geogate__Wan__V1__ShipRequest *req;
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0, n = 0;
    uint64_t last = 0;
    int rc;

    if (repl->restamp_running || gw_wall_ms() < repl->restamp_retry_ms) {
        return;
    }
    /* The same packing as a batch: origin_site and gateway_id (a record of our own write
     * leaves its version's site and gateway to them), then the records as they are. */
    rc = repl_buf_room(&buf, &cap, len, 2 * 11 + strlen(site), 65536);
    if (rc == 0) {
        buf[len++] = PB_TAG(1, 2);
        len += pb_varint(buf + len, strlen(site));
        memcpy(buf + len, site, strlen(site));
        len += strlen(site);
        buf[len++] = PB_TAG(2, 0);
        len += pb_varint(buf + len, repl->srv->cfg->gateway_id);
    }
    while (rc == 0) {
        /* rec is borrowed until the next cursor call: its bytes are copied now */
        rc = repl_buf_room(&buf, &cap, len, 1 + 10 + rec.len, 65536);
        if (rc != 0) {
            break;
        }
        buf[len++] = PB_TAG(4, 2);
        len += pb_varint(buf + len, rec.len);
        memcpy(buf + len, rec.data, rec.len);
        len += rec.len;
        last = rec.seq;
        if (++n >= REPL_BATCH_MAX || len >= REPL_BATCH_BYTES) {
            break;
        }
        do {
            rc = wan_spool_cursor_next(p->cursor, &rec);
        } while (rc == -EBADMSG);
        if (rc != 0 || !record_ahead(repl, &rec, now_ms)) {
            rc = 0;
            break;
        }
    }
    req = rc == 0 ? geogate__wan__v1__ship_request__unpack(NULL, len, buf) : NULL;
    free(buf);
    if (req == NULL) {
        repl->restamp_retry_ms = gw_wall_ms() + 1000;
        log_warn("re-stamping writes stamped ahead of our clock: out of memory; trying again");
        return;
    }
    repl->restamp_running = true;
    repl->restamp_pending = last;
    gw_apply_restamp(repl->w, req, restamp_done, repl); /* takes req */
}

/* Pump p again in ms milliseconds, unless that is already due. */
static void coalesce_arm(struct gw_peer *p, int64_t ms)
{
    struct itimerspec its = {
        .it_value = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L},
    };

    if (p->coalesce_armed || p->coalesce_fd == -1) {
        return;
    }
    if (timerfd_settime(p->coalesce_fd, 0, &its, NULL) == -1) {
        log_warn("peer %s: cannot arm the coalescing timer: %s", p->site, strerror(errno));
        return; /* the next write or ack pumps it */
    }
    p->coalesce_armed = true;
}

static void peer_pump_once(struct gw_peer *p)
{
    struct gw_repl *repl = p->repl;
    /* No bound: nothing is ever ahead, and no record is looked into. */
    uint64_t bound = repl->srv->hlc.max_drift_ms;
    uint64_t now_ms = bound != 0 ? wan_hlc_clock_now_ms(&repl->srv->hlc) : 0;

    if (bound != 0) {
        restamp_window(repl);
    }
    while (p->up && p->inflight < REPL_INFLIGHT) {
        struct wan_spool_record rec;
        uint64_t first = 0, last = 0, oldest = 0;
        size_t n = 0, skipped = 0, bytes = 0;
        bool held = false;
        int rc = 0;

        p->blen = 0;
        while (n + skipped < REPL_BATCH_MAX && bytes < REPL_BATCH_BYTES) {
            rc = wan_spool_cursor_next(p->cursor, &rec);
            if (rc == -EBADMSG) {
                continue; /* logged and counted by the spool */
            }
            if (rc != 0) {
                break;
            }
            if (bound != 0 && record_ahead(repl, &rec, now_ms)) {
                uint64_t at = rec.seq;
                if (at > repl->restamp_done) {
                    /* Peers refuse it: what precedes it ships, the rest waits for it. */
                    restamp_start(p, &rec, now_ms);
                    wan_spool_cursor_seek(p->cursor, at);
                    held = true;
                    break;
                }
                /* Re-stamped: the new record ships later; only its number goes in this
                 * batch's range, so that the peer's ack covers it. */
                if (first == 0) {
                    first = at;
                }
                last = at;
                skipped++;
                continue;
            }
            /* rec is borrowed until the next call: its bytes go into the batch now */
            rc = batch_add_mutation(p, rec.data, rec.len);
            if (rc != 0) {
                break;
            }
            if (first == 0) {
                first = rec.seq;
            }
            if (n == 0) {
                oldest = rec.time_ms;
            }
            last = rec.seq;
            bytes += rec.len;
            n++;
        }
        if (rc == -ENOMEM) {
            log_warn("peer %s: out of memory building a batch; trying again", p->site);
            if (first != 0) {
                wan_spool_cursor_seek(p->cursor, first);
            }
            return;
        }
        if (n == 0 && skipped == 0) {
            peer_announce_lost(p);
            return;
        }
        int64_t hold = p->inflight > 0 ? REPL_COALESCE_MS
                       : n < REPL_IDLE_BATCH &&
                               __atomic_load_n(&repl->ack_waiters, __ATOMIC_RELAXED) == 0
                           ? REPL_IDLE_COALESCE_MS
                           : 0;
        if (!held && n > 0 && hold > 0 && n + skipped < REPL_BATCH_MAX &&
            bytes < REPL_BATCH_BYTES && (int64_t)oldest + hold > gw_wall_ms()) {
            /* Let this small batch gather a few more mutations (bounded by `hold` ms of
             * added lag) instead of paying a whole batch exchange for one or two. */
            int64_t wait = (int64_t)oldest + hold - gw_wall_ms();
            wan_spool_cursor_seek(p->cursor, first);
            coalesce_arm(p, wait > 0 ? wait : 1);
            return;
        }
        if (n == 0) {
            oldest = (uint64_t)gw_wall_ms();
        }
        rc = batch_finish(p, first, last);
        if (rc == 0) {
            rc = wan_grpc_client_ship_raw(p->client, p->bbuf, p->blen);
        }
        if (rc != 0) {
            /* Full (writable will call us back) or gone (down will): read again later. */
            wan_spool_cursor_seek(p->cursor, first);
            if (rc != -ENOBUFS && rc != -ENOTCONN) {
                log_warn("peer %s: cannot ship a batch: %s", p->site, strerror(-rc));
            }
            return;
        }
        p->batches[p->inflight].last_seq = last;
        p->batches[p->inflight].oldest_ms = oldest;
        p->batches[p->inflight].count = (uint32_t)n;
        p->inflight++;
        __atomic_add_fetch(&p->shipped, n, __ATOMIC_RELAXED);
        if (held) {
            return;
        }
    }
}

/* ---- peer clocks ---- */

#define SKEW_LOG_MS 10000 /* one line per peer per this long about its clock */

/* A message from p carried its wall clock (peer_ms): note its offset from ours, and say
 * so (once per interval) when it is off by more than the bound. */
static void clock_measure(struct gw_peer *p, uint64_t peer_ms)
{
    const struct wan_hlc *hlc = &p->repl->srv->hlc;
    int64_t now = gw_wall_ms();
    int64_t off =
        gw_skew_offset_ms(peer_ms, (uint64_t)now, __atomic_load_n(&p->rtt_ms, __ATOMIC_RELAXED));
    uint64_t mag = off < 0 ? (uint64_t)(-off) : (uint64_t)off;

    __atomic_store_n(&p->clock_offset_ms, off, __ATOMIC_RELAXED);
    __atomic_store_n(&p->clock_measured_ms, now, __ATOMIC_RELEASE);
    if (hlc->max_drift_ms != 0 && mag > hlc->max_drift_ms &&
        gw_log_gate_pass(&p->offset_log, now, SKEW_LOG_MS, NULL)) {
        log_warn("peer %s: its clock is %c%" PRIu64 ".%03" PRIu64 " s off ours "
                 "(replication.max_clock_skew %" PRIu64 " ms): %s",
                 p->site, off < 0 ? '-' : '+', mag / 1000, mag % 1000, hlc->max_drift_ms,
                 off > 0 ? "its writes are refused here until it is right"
                         : "ours run ahead of it; if every peer says so, this gateway's clock is "
                           "wrong");
    }
}

/* Once per tick: say what the HLC's bound did since the last line (once per interval). */
static void clock_tick(struct gw_repl *repl)
{
    struct wan_hlc_stats st;
    int64_t now = gw_wall_ms();
    uint64_t held;

    wan_hlc_stats(&repl->srv->hlc, &st);
    if (st.resets > repl->hlc_resets_seen) {
        repl->hlc_resets_seen = st.resets;
        log_error("this gateway's clock stepped back more than replication.max_clock_skew: "
                  "its hybrid clock restarts from it, and the writes it stamped ahead are "
                  "re-stamped before they ship");
    }
    if (st.refused > repl->hlc_refused_seen &&
        gw_log_gate_pass(&repl->refused_log, now, SKEW_LOG_MS, &held)) {
        log_warn("%" PRIu64 " versions from peers (acks, warm-up reads, backfills) were more "
                 "than replication.max_clock_skew ahead of our clock and were not applied",
                 st.refused - repl->hlc_refused_seen);
        repl->hlc_refused_seen = st.refused;
    }
}

/* A link idle for a second carries a heartbeat: an empty batch with only our clock, so
 * that both ends keep measuring each other's clock without traffic (the ack carries the
 * peer's back). */
static void peer_heartbeat(struct gw_peer *p, int64_t now)
{
    Geogate__Wan__V1__ShipRequest hb = GEOGATE__WAN__V1__SHIP_REQUEST__INIT;

    if (!p->up || now - p->last_send_ms < REPL_CLOCK_EVERY_MS || p->inflight > 0) {
        return;
    }
    hb.origin_site = (char *)p->repl->srv->cfg->site;
    hb.gateway_id = p->repl->srv->cfg->gateway_id;
    hb.sent_ms = (uint64_t)now;
    p->last_send_ms = now; /* also when the queue is full: try again in a second */
    p->clock_sent_ms = now;
    (void)wan_grpc_client_ship(p->client, &hb);
}

static void peer_up(void *arg, const char *site)
{
    struct gw_peer *p = arg;

    p->up = true;
    p->connecting = false;
    p->attempt = 0;
    p->up_since_ms = gw_wall_ms();
    log_info("peer %s: link up (%s)", site, p->conf->addresses[p->addr].host);
    wan_spool_peer_acked(p->repl->spool, p->site, &p->acked);
    wan_spool_cursor_seek(p->cursor, p->acked + 1);
    p->inflight = 0;
    p->clock_sent_ms = 0; /* the first batch of a link tells our clock */
    peer_pump(p);
}

static void peer_down(void *arg, int status, const char *reason)
{
    struct gw_peer *p = arg;
    uint32_t wait;

    if (status == WAN_GRPC_FAILED_PRECONDITION) {
        /* It refused our batches for their versions: our clock runs ahead of its by more
         * than the bound.  They stay in the spool; say it once per interval, not per try. */
        if (gw_log_gate_pass(&p->skew_out_log, gw_wall_ms(), SKEW_LOG_MS, NULL)) {
            log_error("peer %s refuses our writes: %s (is this gateway's clock right?)", p->site,
                      reason);
        }
    } else if (p->up) {
        log_warn("peer %s: link down: %s", p->site, reason);
    } else {
        log_debug("peer %s: cannot connect: %s", p->site, reason);
    }
    snprintf(p->last_error, sizeof(p->last_error), "%s", reason);
    __atomic_store_n(&p->up, false, __ATOMIC_RELEASE);
    __atomic_store_n(&p->serving, false, __ATOMIC_RELEASE);
    p->health_inflight = false;
    p->connecting = false;
    p->inflight = 0;
    p->up_since_ms = 0;
    /* Unacked batches ship again on the next link, from the peer's acked seq. */
    /* A refusal for clock skew repeats until a clock is fixed: retry every few seconds,
     * not at the first attempt's 100 ms (every try is a TLS handshake on both ends), and
     * not slower, so that a clock fixed without a restart is noticed soon. */
    wait = wan_grpc_backoff_ms(status == WAN_GRPC_FAILED_PRECONDITION ? 6 : p->attempt++, 100, 5000,
                               &p->repl->rng);
    p->retry_at_ms = gw_mono_ms() + wait;
    p->addr = (p->addr + 1) % p->conf->naddresses;
    __atomic_add_fetch(&p->reconnects, 1, __ATOMIC_RELAXED);
}

static void newer_applied(void *arg, uint64_t applied, uint64_t rejected, bool failed,
                          Geogate__Wan__V1__Mutation **newer, size_t n_newer)
{
    struct gw_peer *p = arg;

    (void)newer;
    (void)n_newer;
    __atomic_add_fetch(&p->repl->in_applied, applied, __ATOMIC_RELAXED);
    __atomic_add_fetch(&p->repl->in_rejected, rejected, __ATOMIC_RELAXED);
    if (failed) {
        log_warn("peer %s: newer items it sent back could not all be applied", p->site);
    }
}

/* The peer holds newer versions of keys we shipped: apply them here (newest wins).  The
 * ack is borrowed, so they are copied by packing and unpacking one request. */
static void apply_newer(struct gw_peer *p, const Geogate__Wan__V1__ShipAck *ack)
{
    Geogate__Wan__V1__ShipRequest req = GEOGATE__WAN__V1__SHIP_REQUEST__INIT;
    Geogate__Wan__V1__ShipRequest *copy;
    uint8_t *buf;
    size_t len;

    req.origin_site = p->site;
    req.n_mutations = ack->n_newer;
    req.mutations = ack->newer;
    len = geogate__wan__v1__ship_request__get_packed_size(&req);
    buf = malloc(len ? len : 1);
    if (buf == NULL) {
        return;
    }
    geogate__wan__v1__ship_request__pack(&req, buf);
    copy = geogate__wan__v1__ship_request__unpack(NULL, len, buf);
    free(buf);
    if (copy == NULL) {
        return;
    }
    __atomic_add_fetch(&p->newer_received, ack->n_newer, __ATOMIC_RELAXED);
    gw_apply_batch(p->repl->w, copy, false, newer_applied, p);
}

static void peer_ack(void *arg, const Geogate__Wan__V1__ShipAck *ack)
{
    struct gw_peer *p = arg;
    uint64_t now = (uint64_t)gw_wall_ms();
    uint32_t done = 0;
    int rc;

    if (ack->sent_ms != 0) {
        clock_measure(p, ack->sent_ms);
    }
    if (ack->n_newer > 0) {
        apply_newer(p, ack);
    }
    if (ack->lost_seen > p->lost_seen && ack->lost_seen <= p->lost) {
        p->lost_seen = ack->lost_seen;
        log_info("peer %s: knows our spool lost %" PRIu64 " records meant for it", p->site,
                 p->lost_seen);
    }

    if (ack->acked_seq <= p->acked) {
        return;
    }
    rc = wan_spool_ack(p->repl->spool, p->site, ack->acked_seq);
    if (rc != 0 && rc != -ERANGE) {
        log_warn("peer %s: recording ack %" PRIu64 ": %s", p->site, ack->acked_seq,
                 strerror(-rc));
    }
    __atomic_store_n(&p->acked, ack->acked_seq, __ATOMIC_RELEASE);
    while (done < p->inflight && p->batches[done].last_seq <= ack->acked_seq) {
        struct repl_batch *b = &p->batches[done];
        lag_sample(p, now > b->oldest_ms ? now - b->oldest_ms : 0, b->count);
        __atomic_add_fetch(&p->acked_mutations, b->count, __ATOMIC_RELAXED);
        done++;
    }
    if (done > 0) {
        memmove(p->batches, p->batches + done, (p->inflight - done) * sizeof(p->batches[0]));
        p->inflight -= done;
    }
    peer_pump(p);
}

static void peer_writable(void *arg)
{
    peer_pump(arg);
}

static void peer_connect(struct gw_peer *p)
{
    static const struct wan_grpc_client_callbacks cbs = {
        .up = peer_up,
        .down = peer_down,
        .ship_ack = peer_ack,
        .writable = peer_writable,
    };
    struct wan_grpc_client_config cc;
    char addr[300];
    const struct gw_addr *a = &p->conf->addresses[p->addr];
    int rc;

    if (p->client != NULL) {
        wan_grpc_client_destroy(p->client);
        p->client = NULL;
    }
    if (strchr(a->host, ':') != NULL) {
        snprintf(addr, sizeof(addr), "[%s]:%u", a->host, a->port);
    } else {
        snprintf(addr, sizeof(addr), "%s:%u", a->host, a->port);
    }
    memset(&cc, 0, sizeof(cc));
    cc.tls = p->repl->tls_cli;
    cc.peer_site = p->site;
    cc.address = addr;
    cc.connect_timeout_ms = 3000;
    cc.ping_ms = 2000;
    cc.log = grpc_log;
    rc = wan_grpc_client_create(&p->client, p->repl->w->base, &cc, &cbs, p);
    if (rc == 0) {
        rc = wan_grpc_client_connect(p->client);
    }
    if (rc != 0) {
        peer_down(p, WAN_GRPC_UNAVAILABLE, strerror(-rc));
        return;
    }
    p->connecting = true;
}

static void coalesce_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_peer *p = arg;

    (void)fd;
    (void)what;
    /* Edge-triggered: arming the timer again resets its expiry count, so it needs no read. */
    p->coalesce_armed = false;
    peer_pump(p);
}

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_repl *repl = arg;

    (void)fd;
    (void)what;
    __atomic_store_n(&repl->kicked, 0, __ATOMIC_SEQ_CST);
    for (size_t i = 0; i < repl->npeers; i++) {
        peer_pump_once(&repl->peers[i]);
    }
    repl_rearm(repl);
}

static void health_done(void *arg, int status, const char *message, int serving)
{
    struct gw_peer *p = arg;
    int64_t rtt = gw_mono_ms() - p->health_sent_ms;

    (void)message;
    p->health_inflight = false;
    __atomic_store_n(&p->rtt_ms, (uint32_t)(rtt > 0 ? rtt : 0), __ATOMIC_RELAXED);
    __atomic_store_n(&p->serving,
                     status == WAN_GRPC_OK &&
                         serving == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING,
                     __ATOMIC_RELEASE);
}

static void peer_health(struct gw_peer *p, int64_t now)
{
    if (!p->up || p->health_inflight || now < p->health_due_ms) {
        return;
    }
    p->health_due_ms = now + 1000;
    p->health_sent_ms = now;
    if (wan_grpc_client_health(p->client, "", 1500, health_done, p) == 0) {
        p->health_inflight = true;
    }
}

#define CATCHUP_RETRY_MS 30000 /* a catch-up that failed is tried again this long after */

static void catch_up(struct gw_repl *repl, struct gw_peer *p, const char *why,
                     const struct gw_catchup_entry *e);

/* A catch-up owed by p that is not running: one held back by another backfill, one a
 * restart cut short (once our link to p is up again: its job would only fail before), or
 * one that failed (every CATCHUP_RETRY_MS).  "Not running" is read before the entry: a
 * job clears its entry before it stops running. */
static void catch_up_owed(struct gw_repl *repl, struct gw_peer *p, int64_t now)
{
    struct gw_catchup_entry e;
    char why[160];

    if (repl->catchup == NULL || repl->srv->draining || !p->up || now < p->catchup_retry_ms ||
        !repl->srv->cfg->replication.auto_backfill ||
        (repl->hooks->backfill_running != NULL && repl->hooks->backfill_running(repl->srv)) ||
        !gw_catchup_pending(repl->catchup, p->site, &e)) {
        return;
    }
    if (e.items > 0 || e.cursor_len > 0) {
        snprintf(why, sizeof(why), "catch-up resumed after %" PRIu64 " items%s", e.items,
                 e.restarts > 0 ? " and a restart" : "");
    } else {
        snprintf(why, sizeof(why), "catch-up %s",
                 e.restarts > 0 ? "owed since before a restart" : "held back until now");
    }
    catch_up(repl, p, why, &e);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_repl *repl = arg;
    int64_t now = gw_mono_ms();
    int rc;

    (void)fd;
    (void)what;
    rc = wan_spool_tick(repl->spool);
    if (rc != 0) {
        log_error("spool: %s", strerror(-rc));
    }
    for (size_t i = 0; i < repl->npeers; i++) {
        struct gw_peer *p = &repl->peers[i];
        if (now >= p->lost_due_ms) {
            struct wan_spool_peer_stats ps;
            p->lost_due_ms = now + 1000;
            if (wan_spool_peer_stats(repl->spool, i, &ps) == 0) {
                p->lost = ps.dropped;
            }
        }
        catch_up_owed(repl, p, now);
        if (!p->up && !p->connecting && now >= p->retry_at_ms) {
            peer_connect(p);
        } else if (p->up) {
            peer_pump(p);
            peer_health(p, now);
            peer_heartbeat(p, gw_wall_ms());
        }
    }
    clock_tick(repl);
    if (repl->hooks->tick != NULL) {
        repl->hooks->tick(repl->srv);
    }
}

/* ---- receiving ---- */

/* Start the automatic catch-up from p (WAN thread), from entry e of the catch-up state
 * (NULL: not recorded, so not resumable).  Busy: tick_cb starts it when the running
 * backfill ends. */
static void catch_up(struct gw_repl *repl, struct gw_peer *p, const char *why,
                     const struct gw_catchup_entry *e)
{
    struct gw_repl_catch_up req = {
        .pool = repl->w->pool,
        .from = p->site,
        .why = why,
        .catchup = e != NULL ? repl->catchup : NULL,
        .resume = e,
    };
    char err[256];
    int rc;

    if (repl->hooks->backfill_start == NULL) {
        return;
    }
    rc = repl->hooks->backfill_start(repl->srv, &req, err, sizeof(err));
    if (rc == -EBUSY) {
        return;
    }
    p->catchup_retry_ms = gw_mono_ms() + CATCHUP_RETRY_MS;
    if (rc != 0) {
        log_error("peer %s: cannot start the catch-up backfill: %s", p->site, err);
    }
}

/* repl->peers are cfg->wan.peers, in order. */
static struct gw_peer *peer_by_site(struct gw_repl *repl, const char *site)
{
    int i = gw_config_peer_index(repl->srv->cfg, site);

    return i >= 0 && (size_t)i < repl->npeers ? &repl->peers[i] : NULL;
}

/* A batch says the sender's spool lost records meant for us: act once per new loss. */
static void inbound_lost(struct gw_repl *repl, struct gw_inbound *in,
                         const Geogate__Wan__V1__ShipRequest *req)
{
    struct gw_peer *p = peer_by_site(repl, in->site);
    struct gw_catchup_entry e;
    uint64_t gap;
    char why[160];
    int rc;

    in->lost_seen = req->lost;
    if (p == NULL) {
        return;
    }
    if (req->spool_id == p->in_spool_id && req->lost <= p->in_lost) {
        return; /* known */
    }
    gap = req->spool_id == p->in_spool_id ? req->lost - p->in_lost : req->lost;
    p->in_spool_id = req->spool_id;
    p->in_lost = req->lost;
    __atomic_add_fetch(&p->in_lost_total, gap, __ATOMIC_RELAXED);
    if (!repl->srv->cfg->replication.auto_backfill) {
        log_error("peer %s: its spool lost %" PRIu64 " records meant for this site; "
                  "replication.auto_backfill is off: run `geogatectl backfill --from %s`",
                  in->site, gap, in->site);
        return;
    }
    log_warn("peer %s: its spool lost %" PRIu64 " records meant for this site; backfilling "
             "from it",
             in->site, gap);
    snprintf(why, sizeof(why), "%s's spool lost %" PRIu64 " records meant for this site",
             in->site, gap);
    /* On disk before this batch is acked (the ack tells the peer we know): a restart from
     * now on resumes the catch-up instead of forgetting it. */
    rc = gw_catchup_owe(repl->catchup, p->site, &e);
    p->catchup_retry_ms = 0;
    catch_up(repl, p, why, rc == -EINVAL ? NULL : &e);
}

static int srv_ship_open(void *arg, struct wan_grpc_ship_stream *st, const char *peer_site,
                         void **stream_arg)
{
    struct gw_repl *repl = arg;
    struct gw_inbound *in;

    if (repl->srv->draining) {
        return WAN_GRPC_UNAVAILABLE;
    }
    in = calloc(1, sizeof(*in));
    if (in == NULL) {
        return WAN_GRPC_RESOURCE_EXHAUSTED;
    }
    in->repl = repl;
    in->peer = peer_by_site(repl, peer_site);
    in->st = st;
    snprintf(in->site, sizeof(in->site), "%s", peer_site);
    *stream_arg = in;
    log_info("peer %s: shipping to us", peer_site);
    return 0;
}

static void inbound_applied(void *arg, uint64_t applied, uint64_t rejected, bool failed,
                            Geogate__Wan__V1__Mutation **newer, size_t n_newer)
{
    struct gw_inbound *in = arg;
    Geogate__Wan__V1__ShipAck ack = GEOGATE__WAN__V1__SHIP_ACK__INIT;

    in->busy = false;
    if (in->closed) {
        free(in);
        return;
    }
    if (failed) {
        /* Not all of it reached the local pool: no ack, so the peer ships it again
         * after it reconnects, from what we acked before. */
        log_warn("peer %s: a batch could not be applied (local node failing); asking for it "
                 "again", in->site);
        wan_grpc_server_ship_finish(in->st, WAN_GRPC_UNAVAILABLE, "local cache node failing");
        return;
    }
    ack.n_newer = n_newer;
    ack.newer = newer;
    in->applied += applied;
    in->rejected += rejected;
    __atomic_add_fetch(&in->repl->in_applied, applied, __ATOMIC_RELAXED);
    __atomic_add_fetch(&in->repl->in_rejected, rejected, __ATOMIC_RELAXED);
    ack.acked_seq = in->last_seq;
    ack.lost_seen = in->lost_seen;
    ack.applied = in->applied;
    ack.rejected_older = in->rejected;
    if (gw_wall_ms() - in->clock_sent_ms >= REPL_CLOCK_EVERY_MS) {
        in->clock_sent_ms = gw_wall_ms(); /* as for batches: once a second is enough */
        ack.sent_ms = (uint64_t)in->clock_sent_ms;
    }
    wan_grpc_server_ship_ack(in->st, &ack);
    if (in->ending) {
        wan_grpc_server_ship_finish(in->st, WAN_GRPC_OK, NULL);
        return;
    }
    wan_grpc_server_ship_resume(in->st);
}

/* A heartbeat (an empty batch, first_seq = last_seq = 0, no lost): answered at once with an
 * ack that carries our clock and only what was acked before; not counted as a batch. */
static void inbound_heartbeat(struct gw_inbound *in)
{
    Geogate__Wan__V1__ShipAck ack = GEOGATE__WAN__V1__SHIP_ACK__INIT;

    ack.acked_seq = in->last_seq;
    ack.lost_seen = in->lost_seen;
    ack.applied = in->applied;
    ack.rejected_older = in->rejected;
    in->clock_sent_ms = gw_wall_ms();
    ack.sent_ms = (uint64_t)in->clock_sent_ms;
    wan_grpc_server_ship_ack(in->st, &ack);
}

/*
 * A batch carries a version more than max_clock_skew (ahead_ms) ahead of our clock: the
 * sender's clock runs ahead, or ran ahead when it stamped it.  Applying it would drag our
 * HLC along (the receive rule) or hold a version our HLC has not passed; dropping it would
 * lose the write.  So none of it is applied or observed, and the stream ends with
 * FAILED_PRECONDITION naming the skew: the sender keeps the batch (unacked) in its spool
 * and tries again (docs/REPLICATION.md, "Clock skew").  Counted, logged once per interval.
 */
static void inbound_refuse(struct gw_inbound *in, struct wan_grpc_ship_stream *st,
                           uint64_t ahead_ms)
{
    struct gw_repl *repl = in->repl;
    struct gw_peer *p = in->peer;
    bool known = p != NULL && __atomic_load_n(&p->clock_measured_ms, __ATOMIC_ACQUIRE) != 0;
    int64_t off = known ? __atomic_load_n(&p->clock_offset_ms, __ATOMIC_RELAXED) : 0;
    uint64_t held = 0;
    char why[200];

    gw_skew_describe(why, sizeof(why), repl->srv->cfg->site, ahead_ms,
                     (uint32_t)repl->srv->hlc.max_drift_ms, known, off);
    if (p != NULL) {
        __atomic_add_fetch(&p->skew_refused, 1, __ATOMIC_RELAXED);
        __atomic_store_n(&p->skew_ahead_ms, ahead_ms, __ATOMIC_RELAXED);
    }
    if (p == NULL || gw_log_gate_pass(&p->skew_log, gw_wall_ms(), SKEW_LOG_MS, &held)) {
        log_warn("peer %s: batch refused (%" PRIu64 " more since the last line): %s", in->site,
                 held, why);
    }
    wan_grpc_server_ship_finish(st, WAN_GRPC_FAILED_PRECONDITION, why);
}

static int srv_ship_batch(void *arg, void *stream_arg, struct wan_grpc_ship_stream *st,
                          Geogate__Wan__V1__ShipRequest *req)
{
    struct gw_repl *repl = arg;
    struct gw_inbound *in = stream_arg;
    uint64_t last, ahead;

    if (in->busy) {
        return WAN_GRPC_SHIP_BUSY;
    }
    if (req->sent_ms != 0 && in->peer != NULL) {
        clock_measure(in->peer, req->sent_ms);
    }
    if (req->n_mutations == 0 && req->first_seq == 0 && req->last_seq == 0 && req->lost == 0) {
        /* (an empty batch that announces lost records is not one: it goes on below) */
        inbound_heartbeat(in);
        geogate__wan__v1__ship_request__free_unpacked(req, NULL);
        return WAN_GRPC_SHIP_TAKEN;
    }
    ahead = gw_skew_batch_ahead_ms(req, wan_hlc_clock_now_ms(&repl->srv->hlc));
    if (repl->srv->hlc.max_drift_ms != 0 && ahead > repl->srv->hlc.max_drift_ms) {
        inbound_refuse(in, st, ahead);
        geogate__wan__v1__ship_request__free_unpacked(req, NULL);
        return WAN_GRPC_SHIP_TAKEN;
    }
    last = req->last_seq != 0 ? req->last_seq : req->first_seq + req->n_mutations - 1;
    if (req->n_mutations == 0 && req->last_seq == 0) {
        last = req->first_seq;
    }
    if (req->lost > 0) {
        inbound_lost(repl, in, req);
    }
    in->busy = true;
    in->last_seq = last > in->last_seq ? last : in->last_seq;
    __atomic_add_fetch(&repl->in_batches, 1, __ATOMIC_RELAXED);
    gw_apply_ship(repl->w, req, inbound_applied, in); /* takes req */
    return WAN_GRPC_SHIP_TAKEN;
}

static void srv_ship_end(void *arg, void *stream_arg, struct wan_grpc_ship_stream *st)
{
    struct gw_inbound *in = stream_arg;

    (void)arg;
    if (in->busy) {
        in->ending = true;
        return;
    }
    wan_grpc_server_ship_finish(st, WAN_GRPC_OK, NULL);
}

static void srv_ship_closed(void *arg, void *stream_arg, struct wan_grpc_ship_stream *st,
                            int status, const char *why)
{
    struct gw_inbound *in = stream_arg;

    (void)arg;
    (void)st;
    if (status != WAN_GRPC_OK && status != WAN_GRPC_FAILED_PRECONDITION) {
        /* (a refusal for clock skew was logged by inbound_refuse, once per interval) */
        log_info("peer %s: inbound stream closed: %s", in->site, why);
    }
    if (in->busy) {
        in->closed = true; /* freed when its batch is done */
        return;
    }
    free(in);
}

static void srv_read(void *arg, struct wan_grpc_read_call *call, const char *peer_site,
                     Geogate__Wan__V1__ReadRequest *req)
{
    struct gw_repl *repl = arg;

    (void)peer_site;
    gw_apply_read(repl->w, req, call);
}

static int srv_backfill_open(void *arg, struct wan_grpc_backfill_call *call,
                             const char *peer_site, Geogate__Wan__V1__BackfillRequest *req,
                             void **call_arg)
{
    struct gw_repl *repl = arg;

    if (repl->hooks->serve_open == NULL) {
        geogate__wan__v1__backfill_request__free_unpacked(req, NULL);
        return WAN_GRPC_UNIMPLEMENTED;
    }
    return repl->hooks->serve_open(repl->srv, repl->w->base, repl->w->pool, call, peer_site, req,
                                   call_arg);
}

static void srv_backfill_writable(void *arg, void *call_arg, struct wan_grpc_backfill_call *call)
{
    struct gw_repl *repl = arg;

    (void)call;
    if (repl->hooks->serve_writable != NULL) {
        repl->hooks->serve_writable(call_arg);
    }
}

static void srv_backfill_closed(void *arg, void *call_arg, struct wan_grpc_backfill_call *call,
                                int grpc_status, const char *why)
{
    struct gw_repl *repl = arg;

    (void)call;
    if (repl->hooks->serve_closed != NULL) {
        repl->hooks->serve_closed(call_arg, grpc_status, why);
    }
}

static int srv_health(void *arg, const char *service)
{
    struct gw_repl *repl = arg;
    struct gw_pool *pool = repl->w->pool;

    if (service != NULL && service[0] != '\0' &&
        strcmp(service, "geogate.wan.v1.Replication") != 0) {
        return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
    }
    for (uint32_t i = 0; i < pool->nnodes; i++) {
        if (gw_node_usable(&pool->nodes[i])) {
            return repl->srv->draining
                       ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
                       : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
        }
    }
    return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
}

/* ---- set-up, on the WAN thread ---- */

static int repl_start(void *arg)
{
    static const struct wan_grpc_server_callbacks scb = {
        .ship_open = srv_ship_open,
        .ship_batch = srv_ship_batch,
        .ship_end = srv_ship_end,
        .ship_closed = srv_ship_closed,
        .read = srv_read,
        .health = srv_health,
        .backfill_open = srv_backfill_open,
        .backfill_writable = srv_backfill_writable,
        .backfill_closed = srv_backfill_closed,
    };
    struct gw_repl *repl = arg;
    const struct gw_config *cfg = repl->srv->cfg;
    struct wan_grpc_server_config sc;
    struct timeval tick = {0, REPL_TICK_MS * 1000};
    char addr[300];
    int rc;

    repl->kick_ev = event_new(repl->w->base, -1, EV_PERSIST, kick_cb, repl);
    repl->tick_ev = event_new(repl->w->base, -1, EV_PERSIST, tick_cb, repl);
    if (repl->kick_ev == NULL || repl->tick_ev == NULL) {
        return -ENOMEM;
    }
    event_add(repl->tick_ev, &tick);
    memset(&sc, 0, sizeof(sc));
    sc.tls = repl->tls_srv;
    sc.log = grpc_log;
    rc = wan_grpc_server_create(&repl->server, repl->w->base, &sc, &scb, repl);
    if (rc != 0) {
        return rc;
    }
    if (strchr(cfg->wan.listen.host, ':') != NULL) {
        snprintf(addr, sizeof(addr), "[%s]:%u", cfg->wan.listen.host, cfg->wan.listen.port);
    } else {
        snprintf(addr, sizeof(addr), "%s:%u", cfg->wan.listen.host, cfg->wan.listen.port);
    }
    rc = wan_grpc_server_listen(repl->server, addr, NULL);
    if (rc != 0) {
        return rc;
    }
    for (size_t i = 0; i < repl->npeers; i++) {
        struct gw_peer *p = &repl->peers[i];
        p->coalesce_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (p->coalesce_fd == -1) {
            return -errno;
        }
        p->coalesce_ev = event_new(repl->w->base, p->coalesce_fd, EV_READ | EV_PERSIST | EV_ET,
                                   coalesce_cb, p);
        if (p->coalesce_ev == NULL || event_add(p->coalesce_ev, NULL) != 0) {
            return -ENOMEM;
        }
        peer_connect(p);
    }
    return 0;
}

static int repl_stop(void *arg)
{
    struct gw_repl *repl = arg;

    for (size_t i = 0; i < repl->npeers; i++) {
        if (repl->peers[i].client != NULL) {
            wan_grpc_client_destroy(repl->peers[i].client);
            repl->peers[i].client = NULL;
        }
        if (repl->peers[i].coalesce_ev != NULL) {
            event_free(repl->peers[i].coalesce_ev);
            repl->peers[i].coalesce_ev = NULL;
        }
        if (repl->peers[i].coalesce_fd != -1) {
            close(repl->peers[i].coalesce_fd);
            repl->peers[i].coalesce_fd = -1;
        }
        repl->peers[i].coalesce_armed = false;
    }
    if (repl->server != NULL) {
        wan_grpc_server_destroy(repl->server);
        repl->server = NULL;
    }
    /* the calls just closed cannot be freed by the WAN thread's wake-ups any more */
    if (repl->hooks->serve_stop_all != NULL) {
        repl->hooks->serve_stop_all(repl->srv);
    }
    if (repl->kick_ev) {
        event_free(repl->kick_ev);
        repl->kick_ev = NULL;
    }
    if (repl->tick_ev) {
        event_free(repl->tick_ev);
        repl->tick_ev = NULL;
    }
    return 0;
}

/* Free what gw_repl_create built (the WAN thread's part is gone already). */
static void repl_free(struct gw_repl *repl)
{
    for (size_t i = 0; i < repl->npeers; i++) {
        free(repl->peers[i].bbuf);
        if (repl->peers[i].cursor) {
            wan_spool_cursor_destroy(repl->peers[i].cursor);
        }
    }
    gw_catchup_close(repl->catchup);
    if (repl->spool) {
        wan_spool_close(repl->spool);
    }
    tls_ctx_destroy(repl->tls_srv);
    tls_ctx_destroy(repl->tls_cli);
    free(repl->peers);
    free(repl);
}

int gw_repl_create(struct gw_server *srv, struct gw_worker *wan, const struct gw_repl_hooks *hooks)
{
    static const struct gw_repl_hooks no_hooks;
    const struct gw_config *cfg = srv->cfg;
    struct gw_repl *repl = calloc(1, sizeof(*repl));
    struct wan_spool_options so;
    const char **names = NULL;
    char err[512];
    int rc;

    if (repl == NULL) {
        return -1;
    }
    repl->srv = srv;
    repl->w = wan;
    repl->hooks = hooks != NULL ? hooks : &no_hooks;
    repl->fsync = cfg->wan.spool_fsync;
    repl->rng = (uint64_t)gw_wall_ms() ^ ((uint64_t)cfg->gateway_id << 32);
    repl->npeers = cfg->wan.npeers;
    repl->peers = calloc(repl->npeers ? repl->npeers : 1, sizeof(*repl->peers));
    names = calloc(repl->npeers ? repl->npeers : 1, sizeof(*names));
    if (repl->peers == NULL || names == NULL) {
        goto fail;
    }
    for (size_t i = 0; i < repl->npeers; i++) {
        repl->peers[i].repl = repl;
        repl->peers[i].conf = &cfg->wan.peers[i];
        repl->peers[i].site = cfg->wan.peers[i].site;
        repl->peers[i].coalesce_fd = -1;
        names[i] = cfg->wan.peers[i].site;
    }
    if (repl->npeers > 0) {
        repl->tls_srv = tls_ctx_create(cfg->wan.tls_ca, cfg->wan.tls_cert, cfg->wan.tls_key, 1,
                                       names, repl->npeers, err, sizeof(err));
        if (repl->tls_srv == NULL) {
            log_error("wan tls: %s", err);
            goto fail;
        }
        repl->tls_cli = tls_ctx_create(cfg->wan.tls_ca, cfg->wan.tls_cert, cfg->wan.tls_key, 0,
                                       names, repl->npeers, err, sizeof(err));
        if (repl->tls_cli == NULL) {
            log_error("wan tls: %s", err);
            goto fail;
        }
        memset(&so, 0, sizeof(so));
        so.dir = cfg->wan.spool_dir;
        so.max_bytes = cfg->wan.spool_max_bytes;
        so.fsync = cfg->wan.spool_fsync == GW_FSYNC_ALWAYS     ? WAN_SPOOL_FSYNC_ALWAYS
                   : cfg->wan.spool_fsync == GW_FSYNC_EVERYSEC ? WAN_SPOOL_FSYNC_EVERYSEC
                                                               : WAN_SPOOL_FSYNC_NO;
        so.peers = names;
        so.npeers = repl->npeers;
        so.log = spool_log;
        rc = wan_spool_open(&so, &repl->spool);
        if (rc != 0) {
            log_error("cannot open the spool in %s: %s", cfg->wan.spool_dir, strerror(-rc));
            goto fail;
        }
        /* Before any write of this process is spooled: everything it finds was stamped
         * by the clock of an earlier process. */
        restamp_window(repl);
        for (size_t i = 0; i < repl->npeers; i++) {
            wan_spool_peer_acked(repl->spool, names[i], &repl->peers[i].acked);
            if (wan_spool_cursor_create(repl->spool, repl->peers[i].acked + 1,
                                        &repl->peers[i].cursor) != 0) {
                goto fail;
            }
        }
        /* After the spool: its lock on the directory covers the catch-up file too. */
        if (gw_catchup_open(cfg->wan.spool_dir, names, repl->npeers, &repl->catchup) != 0) {
            log_error("cannot load the catch-up state in %s: out of memory", cfg->wan.spool_dir);
            goto fail;
        }
        for (size_t i = 0; i < repl->npeers; i++) {
            struct gw_catchup_entry e;
            if (!gw_catchup_pending(repl->catchup, names[i], &e)) {
                continue;
            }
            if (cfg->replication.auto_backfill) {
                log_info("peer %s: the catch-up from it was cut short (%" PRIu64 " items so "
                         "far): resuming it %s once the link is up",
                         names[i], e.items,
                         e.cursor_len > 0 ? "from its last cursor" : "from the start");
            } else {
                log_error("peer %s: the catch-up from it was cut short and "
                          "replication.auto_backfill is off: run `geogatectl backfill --from %s`",
                          names[i], names[i]);
            }
        }
    }
    free(names);
    names = NULL;
    srv->repl = repl;
    if (repl->npeers > 0) {
        rc = gw_worker_call(wan, repl_start, repl);
        if (rc != 0) {
            log_error("cannot start the WAN listener on %s:%u: %s", cfg->wan.listen.host,
                      cfg->wan.listen.port, strerror(-rc));
            srv->repl = NULL;
            gw_worker_call(wan, repl_stop, repl);
            goto fail;
        }
        log_info("replicating to %zu peer site(s); WAN listener on %s:%u", repl->npeers,
                 cfg->wan.listen.host, cfg->wan.listen.port);
    }
    return 0;

fail:
    free(names);
    repl_free(repl);
    return -1;
}

struct tls_ctx *gw_repl_client_tls(struct gw_server *srv)
{
    return srv->repl != NULL ? srv->repl->tls_cli : NULL;
}

void gw_repl_stop_links(struct gw_server *srv)
{
    if (srv->repl != NULL) {
        repl_stop(srv->repl);
    }
}

void gw_repl_destroy(struct gw_server *srv)
{
    if (srv->repl == NULL) {
        return;
    }
    repl_stop(srv->repl); /* no-op when gw_repl_stop_links ran */
    repl_free(srv->repl);
    srv->repl = NULL;
}

/* ---- stats ---- */

void gw_repl_clock_status(struct gw_server *srv, struct gw_clock_status *out)
{
    struct wan_hlc_stats hs;

    memset(out, 0, sizeof(*out));
    wan_hlc_stats(&srv->hlc, &hs);
    out->max_skew_ms = srv->hlc.max_drift_ms;
    out->wall_ms = hs.now_ms;
    out->hlc_ms = wan_hlc_physical_ms(hs.last);
    out->hlc_lead_ms = (int64_t)out->hlc_ms - (int64_t)out->wall_ms;
    out->hlc_max_lead_ms = hs.max_lead_ms;
    out->refused_versions = hs.refused;
    out->resets = hs.resets;
    if (srv->repl != NULL) {
        out->restamped = __atomic_load_n(&srv->repl->restamped, __ATOMIC_RELAXED);
        out->restamp_superseded = __atomic_load_n(&srv->repl->restamp_superseded, __ATOMIC_RELAXED);
    }
}
