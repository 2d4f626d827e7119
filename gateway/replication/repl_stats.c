/*
 * repl_stats — what replication shows of itself: each peer's measured state (for
 * failover and /status), `stats peers`, the spool's disk-fault state for /status and
 * /metrics, and the lag histogram's quantiles.  It reads counters
 * the WAN thread and the workers keep (atomics, the spool's own lock); any thread.
 */
#include "gateway/replication/repl.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "gateway/base/clock.h"
#include "gateway/base/json.h"
#include "gateway/server.h"
#include "wan/spool.h"

#include "gateway/replication/repl_int.h"

static uint64_t lag_quantile(const struct gw_peer *p, double q)
{
    uint64_t total = __atomic_load_n(&p->lag_count, __ATOMIC_RELAXED);
    uint64_t want = (uint64_t)(q * (double)total);
    uint64_t seen = 0;

    if (total == 0) {
        return 0;
    }
    for (unsigned b = 0; b < REPL_LAG_BUCKETS; b++) {
        seen += __atomic_load_n(&p->lag[b], __ATOMIC_RELAXED);
        if (seen > want) {
            return b == 0 ? 1 : (1u << b);
        }
    }
    return 1u << (REPL_LAG_BUCKETS - 1);
}

static int64_t stats_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

size_t gw_repl_peer_status(struct gw_server *srv, struct gw_peer_status *out, size_t max)
{
    struct gw_repl *repl = srv->repl;
    size_t n = 0;
    uint64_t now = (uint64_t)stats_wall_ms();

    if (repl == NULL) {
        return 0;
    }
    for (size_t i = 0; i < repl->npeers && n < max; i++, n++) {
        struct gw_peer *p = &repl->peers[i];
        struct gw_peer_status *s = &out[n];
        struct wan_spool_peer_stats ps;

        memset(s, 0, sizeof(*s));
        memset(&ps, 0, sizeof(ps));
        snprintf(s->site, sizeof(s->site), "%s", p->site);
        s->link_up = __atomic_load_n(&p->up, __ATOMIC_ACQUIRE);
        s->serving = s->link_up && __atomic_load_n(&p->serving, __ATOMIC_ACQUIRE);
        s->priority = p->conf->priority;
        s->rtt_ms = __atomic_load_n(&p->rtt_ms, __ATOMIC_RELAXED);
        if (repl->spool != NULL) {
            wan_spool_peer_stats(repl->spool, i, &ps);
        }
        s->acked_seq = ps.acked_seq;
        s->spool_records = ps.records;
        s->spool_bytes = ps.bytes;
        s->oldest_unacked_age_ms =
            ps.oldest_unacked_ms && now > ps.oldest_unacked_ms ? now - ps.oldest_unacked_ms : 0;
        s->lag_p50_ms = lag_quantile(p, 0.5);
        s->lag_p99_ms = lag_quantile(p, 0.99);
        s->shipped = __atomic_load_n(&p->shipped, __ATOMIC_RELAXED);
        s->acked = __atomic_load_n(&p->acked_mutations, __ATOMIC_RELAXED);
        s->dropped = ps.dropped;
        s->lost_from_peer = __atomic_load_n(&p->in_lost_total, __ATOMIC_RELAXED);
        s->reconnects = __atomic_load_n(&p->reconnects, __ATOMIC_RELAXED);
        {
            int64_t at = __atomic_load_n(&p->clock_measured_ms, __ATOMIC_ACQUIRE);
            s->clock_measured = at != 0;
            s->clock_offset_ms = __atomic_load_n(&p->clock_offset_ms, __ATOMIC_RELAXED);
            s->clock_age_ms = at != 0 && (int64_t)now > at ? now - (uint64_t)at : 0;
            s->skew_refused = __atomic_load_n(&p->skew_refused, __ATOMIC_RELAXED);
        }
    }
    return n;
}

void gw_repl_stats(struct gw_server *srv, struct evbuffer *b)
{
    struct gw_repl *repl = srv->repl;
    struct wan_spool_stats ss;
    uint64_t now = (uint64_t)gw_wall_ms(); /* the spool's append times are wall-clock ms */

    if (repl == NULL || repl->spool == NULL) {
        return;
    }
    wan_spool_stats(repl->spool, &ss);
    evbuffer_add_printf(b, "STAT spool:records %" PRIu64 "\r\n", ss.records);
    evbuffer_add_printf(b, "STAT spool:bytes %" PRIu64 "\r\n", ss.bytes);
    evbuffer_add_printf(b, "STAT spool:last_seq %" PRIu64 "\r\n", ss.last_seq);
    evbuffer_add_printf(b, "STAT spool:dropped %" PRIu64 "\r\n", ss.dropped);
    evbuffer_add_printf(b, "STAT spool:compacted %" PRIu64 "\r\n", ss.compacted);
    evbuffer_add_printf(b, "STAT spool:fsyncs %" PRIu64 "\r\n", ss.fsyncs);
    evbuffer_add_printf(b, "STAT spool:errors %" PRIu64 "\r\n",
                        __atomic_load_n(&repl->spool_errors, __ATOMIC_RELAXED));
    evbuffer_add_printf(b, "STAT spool:fault %s\r\n", ss.fault != 0 ? "yes" : "no");
    evbuffer_add_printf(b, "STAT spool:faults %" PRIu64 "\r\n", ss.faults);
    evbuffer_add_printf(b, "STAT spool:unspooled %" PRIu64 "\r\n", ss.unspooled);
    evbuffer_add_printf(b, "STAT spool:not_durable %" PRIu64 "\r\n", ss.not_durable);
    evbuffer_add_printf(b, "STAT inbound:batches %" PRIu64 "\r\n",
                        __atomic_load_n(&repl->in_batches, __ATOMIC_RELAXED));
    evbuffer_add_printf(b, "STAT inbound:applied %" PRIu64 "\r\n",
                        __atomic_load_n(&repl->in_applied, __ATOMIC_RELAXED));
    evbuffer_add_printf(b, "STAT inbound:rejected_older %" PRIu64 "\r\n",
                        __atomic_load_n(&repl->in_rejected, __ATOMIC_RELAXED));
    {
        struct gw_clock_status cs;
        gw_repl_clock_status(srv, &cs);
        evbuffer_add_printf(b, "STAT clock:max_skew_ms %" PRIu64 "\r\n", cs.max_skew_ms);
        evbuffer_add_printf(b, "STAT clock:hlc_lead_ms %" PRId64 "\r\n", cs.hlc_lead_ms);
        evbuffer_add_printf(b, "STAT clock:hlc_max_lead_ms %" PRIu64 "\r\n", cs.hlc_max_lead_ms);
        evbuffer_add_printf(b, "STAT clock:refused_versions %" PRIu64 "\r\n", cs.refused_versions);
        evbuffer_add_printf(b, "STAT clock:resets %" PRIu64 "\r\n", cs.resets);
        evbuffer_add_printf(b, "STAT clock:restamped %" PRIu64 "\r\n", cs.restamped);
        evbuffer_add_printf(b, "STAT clock:restamp_superseded %" PRIu64 "\r\n",
                            cs.restamp_superseded);
    }
    for (size_t i = 0; i < repl->npeers; i++) {
        struct gw_peer *p = &repl->peers[i];
        struct wan_spool_peer_stats ps;
        memset(&ps, 0, sizeof(ps));
        wan_spool_peer_stats(repl->spool, i, &ps);
        evbuffer_add_printf(b, "STAT peer:%s:state %s\r\n", p->site,
                            __atomic_load_n(&p->up, __ATOMIC_RELAXED) ? "up" : "down");
        evbuffer_add_printf(b, "STAT peer:%s:acked_seq %" PRIu64 "\r\n", p->site, ps.acked_seq);
        evbuffer_add_printf(b, "STAT peer:%s:spool_records %" PRIu64 "\r\n", p->site, ps.records);
        evbuffer_add_printf(b, "STAT peer:%s:spool_bytes %" PRIu64 "\r\n", p->site, ps.bytes);
        evbuffer_add_printf(b, "STAT peer:%s:oldest_unacked_age_ms %" PRIu64 "\r\n", p->site,
                            ps.oldest_unacked_ms && now > ps.oldest_unacked_ms
                                ? now - ps.oldest_unacked_ms
                                : 0);
        evbuffer_add_printf(b, "STAT peer:%s:shipped %" PRIu64 "\r\n", p->site,
                            __atomic_load_n(&p->shipped, __ATOMIC_RELAXED));
        evbuffer_add_printf(b, "STAT peer:%s:acked %" PRIu64 "\r\n", p->site,
                            __atomic_load_n(&p->acked_mutations, __ATOMIC_RELAXED));
        evbuffer_add_printf(b, "STAT peer:%s:dropped %" PRIu64 "\r\n", p->site, ps.dropped);
        evbuffer_add_printf(b, "STAT peer:%s:reconnects %" PRIu64 "\r\n", p->site,
                            __atomic_load_n(&p->reconnects, __ATOMIC_RELAXED));
        evbuffer_add_printf(b, "STAT peer:%s:newer_received %" PRIu64 "\r\n", p->site,
                            __atomic_load_n(&p->newer_received, __ATOMIC_RELAXED));
        evbuffer_add_printf(b, "STAT peer:%s:lag_p50_ms %" PRIu64 "\r\n", p->site,
                            lag_quantile(p, 0.5));
        evbuffer_add_printf(b, "STAT peer:%s:lag_p99_ms %" PRIu64 "\r\n", p->site,
                            lag_quantile(p, 0.99));
        if (__atomic_load_n(&p->clock_measured_ms, __ATOMIC_ACQUIRE) != 0) {
            evbuffer_add_printf(b, "STAT peer:%s:clock_offset_ms %" PRId64 "\r\n", p->site,
                                __atomic_load_n(&p->clock_offset_ms, __ATOMIC_RELAXED));
        }
        evbuffer_add_printf(b, "STAT peer:%s:clock_refused_batches %" PRIu64 "\r\n", p->site,
                            __atomic_load_n(&p->skew_refused, __ATOMIC_RELAXED));
    }
}

void gw_repl_spool_json(struct gw_server *srv, struct evbuffer *out)
{
    struct gw_repl *repl = srv->repl;
    struct wan_spool_stats ss;

    if (repl == NULL || repl->spool == NULL) {
        evbuffer_add_printf(out, "null");
        return;
    }
    wan_spool_stats(repl->spool, &ss);
    evbuffer_add_printf(out, "{\"degraded\": %s, \"spool_fault\": ", ss.fault ? "true" : "false");
    if (ss.fault != 0) {
        gw_json_str(out, strerror(-ss.fault));
    } else {
        evbuffer_add_printf(out, "null");
    }
    evbuffer_add_printf(out,
                        ", \"spool_fault_since_ms\": %" PRIu64 ", \"spool_faults\": %" PRIu64
                        ", \"unspooled\": %" PRIu64 ", \"not_durable\": %" PRIu64
                        ", \"spool_dropped\": %" PRIu64 "}",
                        ss.fault_since_ms, ss.faults, ss.unspooled, ss.not_durable, ss.dropped);
}

void gw_repl_spool_metrics(struct gw_server *srv, struct evbuffer *out)
{
    struct gw_repl *repl = srv->repl;
    struct wan_spool_stats ss;

    if (repl == NULL || repl->spool == NULL) {
        return;
    }
    wan_spool_stats(repl->spool, &ss);
    evbuffer_add_printf(out,
                        "# HELP geogate_replication_degraded 1 while the spool cannot write (no "
                        "space, I/O error, read-only, removed): mutations are then counted as "
                        "lost for every peer, which catch up by backfill.\n"
                        "# TYPE geogate_replication_degraded gauge\n"
                        "geogate_replication_degraded %d\n",
                        ss.fault != 0);
    evbuffer_add_printf(out,
                        "# HELP geogate_spool_faults_total Disk faults the spool met (each one "
                        "lasts until writing works again).\n"
                        "# TYPE geogate_spool_faults_total counter\n"
                        "geogate_spool_faults_total %" PRIu64 "\n",
                        ss.faults);
    evbuffer_add_printf(out,
                        "# HELP geogate_spool_unspooled_total Mutations a disk fault kept out of "
                        "the spool (counted as dropped for every peer).\n"
                        "# TYPE geogate_spool_unspooled_total counter\n"
                        "geogate_spool_unspooled_total %" PRIu64 "\n",
                        ss.unspooled);
    evbuffer_add_printf(out,
                        "# HELP geogate_spool_not_durable_total Records a failed fsync was to "
                        "cover (counted as dropped for every peer that had not acked them).\n"
                        "# TYPE geogate_spool_not_durable_total counter\n"
                        "geogate_spool_not_durable_total %" PRIu64 "\n",
                        ss.not_durable);
}
