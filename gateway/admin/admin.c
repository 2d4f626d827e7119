/*
 * admin — see admin.h.  One evhttp on the main thread's loop; every request is answered
 * at once from a snapshot (failover status, peers, nodes, summed counters), so nothing
 * here blocks the loop or holds state between requests.
 *
 *   GET  /health    200 "ok" | 503 "<reason>"    load balancers (haproxy httpchk)
 *   GET  /status    200 JSON                     operators, geogatectl
 *   GET  /metrics   200 Prometheus text 0.0.4    monitoring
 *   POST /drain     200                          /health turns 503; connections stay
 *   POST /failover[?to=SITE]                     force reads to SITE (default: the best
 *                   200 | 400 | 404 | 409        serving peer, as the automatic switch picks)
 *   POST /failback  200 | 409                    back to local through warm-up
 *   GET  /snapshot  200 stream | 409 | 503       the site's items as a snapshot file
 *   POST /restore   200 | 400 | 409 | 413 | 422  apply a snapshot file (the body)
 *                                                (both in admin_xfer.c, loopback only)
 *
 * GET endpoints also answer HEAD; any other method gets 405 with an Allow header.
 * Actions are refused (403) unless the client is on loopback: the admin listener binds
 * loopback by default, and when an operator binds it wider (so a remote load balancer
 * can check /health) the actions must still not become remote controls.
 */
#include "gateway/admin/admin.h"
#include "gateway/base/clock.h"
#include "gateway/admin/admin_xfer.h"

#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h> /* before event2/keyvalq_struct.h, which defines TAILQ_* without it */
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>

#include "gateway/transfer/backfill.h"
#include "gateway/base/config.h"
#include "gateway/failover/failover.h"
#include "gateway/base/json.h"
#include "gateway/replication/repl.h"
#include "gateway/base/log.h"
#include "gateway/routing/pool.h"
#include "gateway/replication/repl.h"
#include "gateway/server.h"
#include "gateway/base/stats.h"

#define ADMIN_MAX_PEERS 32
#define ADMIN_TIMEOUT_S 5      /* a slow admin client is closed after this */
#define ADMIN_MAX_HEADERS 8192 /* bytes */
#define ADMIN_MAX_BODY 4096    /* actions take no body; anything larger is refused */
/* evhttp 2.1 has one body limit for every path, checked before any callback sees the
 * path: it is POST /restore's, and every other route refuses more than ADMIN_MAX_BODY
 * itself (413) once the body is in. */
#define ADMIN_HTTP_MAX_BODY GW_ADMIN_RESTORE_MAX_BYTES

struct gw_admin {
    struct gw_server *srv;
    struct evhttp *http;
    struct gw_admin_xfer *xfer; /* GET /snapshot, POST /restore */
};

/* Everything one response needs, taken once per request. */
struct admin_snapshot {
    struct gw_failover_status fo;
    struct gw_peer_status peers[ADMIN_MAX_PEERS];
    size_t npeers;
    struct gw_clock_status clock;
    struct gw_stats stats;
    int64_t curr_connections;
    bool draining;
    bool healthy;
    char reason[192]; /* why not healthy ("ok" when healthy) */
    int64_t now_ms;   /* unix ms */
};

/* Drained for the load balancer (POST /drain): /health answers 503 "draining" from now
 * on, so health-checking load balancers stop sending new connections here; the listener
 * stays open and existing connections are served until the operator stops the process. */
static void admin_set_draining(struct gw_server *srv)
{
    __atomic_store_n(&srv->lb_draining, 1, __ATOMIC_RELEASE);
}

static bool admin_draining(const struct gw_server *srv)
{
    return srv->draining || __atomic_load_n(&srv->lb_draining, __ATOMIC_ACQUIRE) != 0;
}

static const struct gw_peer_status *admin_find_peer(const struct admin_snapshot *s,
                                                    const char *site)
{
    for (size_t i = 0; i < s->npeers; i++) {
        if (strcmp(s->peers[i].site, site) == 0) {
            return &s->peers[i];
        }
    }
    return NULL;
}

/*
 * Can this gateway serve reads?  Not while draining (the load balancer must move clients
 * away); otherwise yes when some local node is up, or when the site is failed over to a
 * peer that is serving.  Per-key fallback alone does not count: with every local node
 * down and no failover, the site is not in a state a load balancer should send reads to.
 */
static void admin_judge_health(struct admin_snapshot *s)
{
    const struct gw_failover_status *fo = &s->fo;
    const struct gw_peer_status *serving = NULL;

    s->healthy = false;
    if (s->draining) {
        snprintf(s->reason, sizeof(s->reason), "draining");
        return;
    }
    if (fo->nodes_up > 0) {
        s->healthy = true;
        snprintf(s->reason, sizeof(s->reason), "ok");
        return;
    }
    if (fo->mode == GW_MODE_FAILED_OVER && fo->peer[0] != '\0') {
        const struct gw_peer_status *p = admin_find_peer(s, fo->peer);
        if (p != NULL && p->link_up && p->serving) {
            s->healthy = true;
            snprintf(s->reason, sizeof(s->reason), "ok");
            return;
        }
        snprintf(s->reason, sizeof(s->reason),
                 "no healthy source: %" PRIu32 "/%" PRIu32
                 " local nodes up, failed over to %.64s which is not serving",
                 fo->nodes_up, fo->nodes, fo->peer);
        return;
    }
    for (size_t i = 0; i < s->npeers && serving == NULL; i++) {
        if (s->peers[i].link_up && s->peers[i].serving) {
            serving = &s->peers[i];
        }
    }
    if (serving != NULL) {
        snprintf(s->reason, sizeof(s->reason),
                 "no healthy source: %" PRIu32 "/%" PRIu32
                 " local nodes up, not failed over yet (%.64s is serving)",
                 fo->nodes_up, fo->nodes, serving->site);
    } else {
        snprintf(s->reason, sizeof(s->reason),
                 "no healthy source: %" PRIu32 "/%" PRIu32 " local nodes up, no serving peer",
                 fo->nodes_up, fo->nodes);
    }
}

/* Returns 0, or -ENOMEM (counters left at zero). */
static int admin_snapshot_take(struct gw_server *srv, struct admin_snapshot *s)
{
    struct gw_stats **each;

    memset(s, 0, sizeof(*s));
    s->now_ms = gw_wall_ms();
    gw_failover_status(srv, &s->fo);
    s->npeers = gw_failover_peers(srv, s->peers, ADMIN_MAX_PEERS);
    gw_repl_clock_status(srv, &s->clock);
    s->draining = admin_draining(srv) || s->fo.draining;
    s->curr_connections = __atomic_load_n(&srv->curr_connections, __ATOMIC_RELAXED);
    admin_judge_health(s);
    each = calloc((size_t)(srv->nthreads > 0 ? srv->nthreads : 1), sizeof(*each));
    if (each == NULL) {
        return -ENOMEM;
    }
    for (int i = 0; i < srv->nthreads; i++) {
        each[i] = &srv->workers[i].stats;
    }
    gw_stats_sum(&s->stats, each, srv->nthreads);
    free(each);
    return 0;
}

/* ---- replies -------------------------------------------------------------------------- */

static const char *admin_reason_phrase(int code)
{
    switch (code) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 503:
        return "Service Unavailable";
    default:
        return "Internal Server Error";
    }
}

/* Send body (borrowed; evhttp drains it) with code and content type. */
static void admin_send(struct evhttp_request *req, int code, const char *ctype,
                       struct evbuffer *body)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);

    evhttp_add_header(h, "Content-Type", ctype);
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_send_reply(req, code, admin_reason_phrase(code), body);
}

/* A plain-text reply: the formatted message plus a newline. */
static void admin_text(struct evhttp_request *req, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void admin_text(struct evhttp_request *req, int code, const char *fmt, ...)
{
    struct evbuffer *b = evbuffer_new();
    va_list ap;

    if (b == NULL) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    va_start(ap, fmt);
    evbuffer_add_vprintf(b, fmt, ap);
    va_end(ap);
    evbuffer_add(b, "\n", 1);
    admin_send(req, code, "text/plain; charset=utf-8", b);
    evbuffer_free(b);
}

/* Copy s into out for a message, control characters and quotes replaced, at most 64
 * bytes: what a client sent must not forge log lines or break the reply. */
static const char *admin_clean(const char *s, char *out, size_t outlen)
{
    size_t n = 0;

    for (; *s != '\0' && n + 1 < outlen && n < 64; s++) {
        unsigned char c = (unsigned char)*s;
        out[n++] = (c < 0x20 || c == 0x7f || c == '"' || c == '\\') ? '?' : (char)c;
    }
    out[n] = '\0';
    return out;
}

/* ---- JSON ----------------------------------------------------------------------------- */

static const char *json_bool(bool v)
{
    return v ? "true" : "false";
}

/* "host:port", with brackets around an IPv6 host. */
static void admin_addr_str(const struct gw_addr *a, char *out, size_t len)
{
    if (a->host == NULL) {
        snprintf(out, len, "%s", "");
    } else if (strchr(a->host, ':') != NULL) {
        snprintf(out, len, "[%s]:%u", a->host, a->port);
    } else {
        snprintf(out, len, "%s:%u", a->host, a->port);
    }
}

static void admin_status_json(struct gw_server *srv, const struct admin_snapshot *s,
                              struct evbuffer *b)
{
    const struct gw_config *cfg = srv->cfg;
    const struct gw_failover_status *fo = &s->fo;
    const struct gw_pool *pool = srv->pool;
    char addr[300];
    int64_t since = fo->since_ms != 0 ? fo->since_ms : (int64_t)srv->started * 1000;

    evbuffer_add_printf(b, "{\n  \"site\": ");
    gw_json_str(b, cfg->site);
    evbuffer_add_printf(b, ",\n  \"gateway_id\": %" PRIu32 ",\n  \"version\": ", cfg->gateway_id);
    gw_json_str(b, GW_VERSION);
    admin_addr_str(&cfg->listen, addr, sizeof(addr));
    evbuffer_add_printf(b, ",\n  \"listen\": ");
    gw_json_str(b, addr);
    admin_addr_str(&cfg->admin, addr, sizeof(addr));
    evbuffer_add_printf(b, ",\n  \"admin\": ");
    gw_json_str(b, addr);
    evbuffer_add_printf(b,
                        ",\n  \"time_ms\": %" PRId64 ",\n  \"started_ms\": %" PRId64
                        ",\n  \"health\": {\"ok\": %s, \"reason\": ",
                        s->now_ms, (int64_t)srv->started * 1000, json_bool(s->healthy));
    gw_json_str(b, s->reason);
    evbuffer_add_printf(b, "},\n  \"draining\": %s,\n  \"mode\": ", json_bool(s->draining));
    gw_json_str(b, gw_site_mode_name(fo->mode));
    evbuffer_add_printf(b, ",\n  \"peer\": ");
    gw_json_str(b, fo->peer);
    evbuffer_add_printf(
        b, ",\n  \"forced\": %s,\n  \"since_ms\": %" PRId64 ",\n  \"switches\": %" PRIu64 ",\n",
        json_bool(fo->forced), since, fo->switches);
    evbuffer_add_printf(b,
                        "  \"local\": {\"nodes\": %" PRIu32 ", \"nodes_up\": %" PRIu32
                        ", \"healthy_fraction\": %.4f, \"threshold\": %.4f},\n",
                        fo->nodes, fo->nodes_up, fo->local_healthy_fraction,
                        cfg->failover.local_healthy_fraction);

    evbuffer_add_printf(b, "  \"nodes\": [");
    for (uint32_t i = 0; pool != NULL && i < pool->nnodes; i++) {
        const struct gw_node *n = &pool->nodes[i];
        int st = __atomic_load_n(&n->state, __ATOMIC_RELAXED);
        evbuffer_add_printf(b, "%s\n    {\"node\": ", i ? "," : "");
        gw_json_str(b, n->label);
        evbuffer_add_printf(b, ", \"state\": ");
        gw_json_str(b, gw_node_state_name(st));
        evbuffer_add_printf(
            b, ", \"up\": %s, \"failures\": %" PRIu32 ", \"down_events\": %" PRIu64 "}",
            json_bool(st == GW_NODE_UP), __atomic_load_n(&n->failures, __ATOMIC_RELAXED),
            __atomic_load_n(&n->down_events, __ATOMIC_RELAXED));
    }
    evbuffer_add_printf(b, "%s],\n  \"peers\": [", pool != NULL && pool->nnodes ? "\n  " : "");
    for (size_t i = 0; i < s->npeers; i++) {
        const struct gw_peer_status *p = &s->peers[i];
        evbuffer_add_printf(b, "%s\n    {\"site\": ", i ? "," : "");
        gw_json_str(b, p->site);
        evbuffer_add_printf(
            b,
            ", \"link_up\": %s, \"serving\": %s, \"priority\": %d, \"rtt_ms\": %" PRIu32
            ", \"acked_seq\": %" PRIu64 ", \"spool_records\": %" PRIu64
            ", \"spool_bytes\": %" PRIu64 ", \"oldest_unacked_age_ms\": %" PRIu64
            ", \"lag_p50_ms\": %" PRIu64 ", \"lag_p99_ms\": %" PRIu64 ", \"shipped\": %" PRIu64
            ", \"acked\": %" PRIu64 ", \"dropped\": %" PRIu64 ", \"reconnects\": %" PRIu64
            ", \"lost_from_peer\": %" PRIu64,
            json_bool(p->link_up), json_bool(p->serving), p->priority, p->rtt_ms, p->acked_seq,
            p->spool_records, p->spool_bytes, p->oldest_unacked_age_ms, p->lag_p50_ms,
            p->lag_p99_ms, p->shipped, p->acked, p->dropped, p->reconnects, p->lost_from_peer);
        /* null until a batch, ack or heartbeat of the peer has told its clock */
        if (p->clock_measured) {
            evbuffer_add_printf(
                b, ", \"clock_offset_ms\": %" PRId64 ", \"clock_offset_age_ms\": %" PRIu64,
                p->clock_offset_ms, p->clock_age_ms);
        } else {
            evbuffer_add_printf(b, ", \"clock_offset_ms\": null, \"clock_offset_age_ms\": null");
        }
        evbuffer_add_printf(b, ", \"clock_refused_batches\": %" PRIu64 "}", p->skew_refused);
    }
    evbuffer_add_printf(b, "%s],\n", s->npeers ? "\n  " : "");
    if (cfg->wan.enabled) {
        const struct gw_clock_status *c = &s->clock;
        evbuffer_add_printf(
            b,
            "  \"clock\": {\"max_skew_ms\": %" PRIu64 ", \"wall_ms\": %" PRIu64
            ", \"hlc_ms\": %" PRIu64 ", \"hlc_lead_ms\": %" PRId64 ", \"hlc_max_lead_ms\": %" PRIu64
            ", \"refused_versions\": %" PRIu64 ", \"resets\": %" PRIu64 ", \"restamped\": %" PRIu64
            ", \"restamp_superseded\": %" PRIu64 "},\n",
            c->max_skew_ms, c->wall_ms, c->hlc_ms, c->hlc_lead_ms, c->hlc_max_lead_ms,
            c->refused_versions, c->resets, c->restamped, c->restamp_superseded);
    }
    evbuffer_add_printf(b,
                        "  \"warmup\": {\"local_hits\": %" PRIu64 ", \"local_misses\": %" PRIu64
                        ", \"filled\": %" PRIu64 ", \"hit_ratio\": %.4f, \"target_hit_ratio\": %.4f"
                        ", \"max_time_ms\": %" PRIu32 "},\n",
                        fo->warmup_local_hits, fo->warmup_local_misses, fo->warmup_filled,
                        fo->warmup_hit_ratio, cfg->failover.warmup_hit_ratio,
                        cfg->failover.warmup_max_time_ms);
    evbuffer_add_printf(b,
                        "  \"failover_reads\": {\"peer_reads\": %" PRIu64
                        ", \"peer_read_errors\": %" PRIu64 ", \"retried_at_peer\": %" PRIu64
                        "},\n",
                        fo->peer_reads, fo->peer_read_errors, fo->reads_retried);
    evbuffer_add_printf(b, "  \"counters\": {\"curr_connections\": %" PRId64, s->curr_connections);
#define ADMIN_JSON_COUNTER(name) evbuffer_add_printf(b, ", \"" #name "\": %" PRIu64, s->stats.name);
    GW_STATS_COUNTERS(ADMIN_JSON_COUNTER)
#undef ADMIN_JSON_COUNTER
    evbuffer_add_printf(b, "},\n  \"replication\": ");
    gw_repl_spool_json(srv, b);
    evbuffer_add_printf(b, ",\n  \"backfill\": ");
    gw_backfill_json(srv, b);
    evbuffer_add_printf(b, "\n}\n");
}

/* ---- Prometheus text format ----------------------------------------------------------- */

static void prom_head(struct evbuffer *b, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value, escaped as the text format wants (\\, \", \n). */
static void prom_label(struct evbuffer *b, const char *v)
{
    for (; *v != '\0'; v++) {
        if (*v == '\\' || *v == '"') {
            evbuffer_add_printf(b, "\\%c", *v);
        } else if (*v == '\n') {
            evbuffer_add(b, "\\n", 2);
        } else {
            evbuffer_add(b, v, 1);
        }
    }
}

/* name{label="value"} followed by the caller's value. */
static void prom_labelled(struct evbuffer *b, const char *name, const char *label,
                          const char *value)
{
    evbuffer_add_printf(b, "%s{%s=\"", name, label);
    prom_label(b, value);
    evbuffer_add(b, "\"} ", 3);
}

/* One family with one series per peer; field picks the value (as a double). */
typedef double (*prom_peer_value_fn)(const struct gw_peer_status *p);

static void prom_peer_family(struct evbuffer *b, const struct admin_snapshot *s, const char *name,
                             const char *type, const char *help, prom_peer_value_fn value)
{
    if (s->npeers == 0) {
        return;
    }
    prom_head(b, name, type, help);
    for (size_t i = 0; i < s->npeers; i++) {
        prom_labelled(b, name, "peer", s->peers[i].site);
        evbuffer_add_printf(b, "%.17g\n", value(&s->peers[i]));
    }
}

static double pv_link_up(const struct gw_peer_status *p)
{
    return p->link_up;
}
static double pv_serving(const struct gw_peer_status *p)
{
    return p->serving;
}
static double pv_priority(const struct gw_peer_status *p)
{
    return p->priority;
}
static double pv_rtt(const struct gw_peer_status *p)
{
    return p->rtt_ms / 1000.0;
}
static double pv_acked_seq(const struct gw_peer_status *p)
{
    return (double)p->acked_seq;
}
static double pv_spool_records(const struct gw_peer_status *p)
{
    return (double)p->spool_records;
}
static double pv_spool_bytes(const struct gw_peer_status *p)
{
    return (double)p->spool_bytes;
}
static double pv_oldest_age(const struct gw_peer_status *p)
{
    return (double)p->oldest_unacked_age_ms / 1000.0;
}
static double pv_shipped(const struct gw_peer_status *p)
{
    return (double)p->shipped;
}
static double pv_acked(const struct gw_peer_status *p)
{
    return (double)p->acked;
}
static double pv_lost_from_peer(const struct gw_peer_status *p)
{
    return (double)p->lost_from_peer;
}

static double pv_skew_refused(const struct gw_peer_status *p)
{
    return (double)p->skew_refused;
}

static double pv_dropped(const struct gw_peer_status *p)
{
    return (double)p->dropped;
}
static double pv_reconnects(const struct gw_peer_status *p)
{
    return (double)p->reconnects;
}

static void prom_gauge(struct evbuffer *b, const char *name, const char *help, double v)
{
    prom_head(b, name, "gauge", help);
    evbuffer_add_printf(b, "%s %.17g\n", name, v);
}

static void prom_counter(struct evbuffer *b, const char *name, const char *help, uint64_t v)
{
    prom_head(b, name, "counter", help);
    evbuffer_add_printf(b, "%s %" PRIu64 "\n", name, v);
}

static void admin_metrics_site(struct gw_server *srv, const struct admin_snapshot *s,
                               struct evbuffer *b)
{
    const struct gw_config *cfg = srv->cfg;
    const struct gw_failover_status *fo = &s->fo;

    prom_head(b, "geogate_info", "gauge", "Identity of this gateway (always 1).");
    evbuffer_add_printf(b, "geogate_info{site=\"");
    prom_label(b, cfg->site);
    evbuffer_add_printf(b, "\",gateway_id=\"%" PRIu32 "\",version=\"%s\"} 1\n", cfg->gateway_id,
                        GW_VERSION);
    prom_gauge(b, "geogate_start_time_seconds", "Unix time the gateway started.",
               (double)srv->started);
    prom_gauge(b, "geogate_healthy",
               "1 when GET /health answers 200 (this gateway can serve reads), else 0.",
               s->healthy);
    prom_gauge(b, "geogate_draining",
               "1 while drained for the load balancer (POST /drain) or stopping.", s->draining);
    prom_gauge(b, "geogate_current_connections", "Client connections open now.",
               (double)s->curr_connections);

    prom_head(b, "geogate_site_mode", "gauge",
              "Where this site's reads are served from: 1 for the current mode, 0 for the others.");
    for (int m = 0; m < GW_MODE_MAX; m++) {
        prom_labelled(b, "geogate_site_mode", "mode", gw_site_mode_name((enum gw_site_mode)m));
        evbuffer_add_printf(b, "%d\n", (int)fo->mode == m);
    }
    if (cfg->wan.npeers > 0) {
        prom_head(b, "geogate_site_read_peer", "gauge",
                  "1 for the peer site reads are failed over to or warmed up from, else 0.");
        for (size_t i = 0; i < cfg->wan.npeers; i++) {
            prom_labelled(b, "geogate_site_read_peer", "peer", cfg->wan.peers[i].site);
            evbuffer_add_printf(b, "%d\n",
                                fo->mode != GW_MODE_LOCAL &&
                                    strcmp(fo->peer, cfg->wan.peers[i].site) == 0);
        }
    }
    prom_gauge(b, "geogate_site_failover_forced",
               "1 when the current failover was forced by an operator or a drill.", fo->forced);
    prom_gauge(b, "geogate_site_mode_since_seconds", "Unix time the current mode was entered.",
               (double)(fo->since_ms != 0 ? fo->since_ms : (int64_t)srv->started * 1000) / 1000.0);
    prom_counter(b, "geogate_site_mode_switches_total", "Site mode changes since start.",
                 fo->switches);
    prom_gauge(b, "geogate_local_healthy_fraction", "Usable local nodes / local nodes.",
               fo->local_healthy_fraction);
    prom_gauge(b, "geogate_local_healthy_fraction_threshold",
               "failover.local_healthy_fraction: below it the site fails over.",
               cfg->failover.local_healthy_fraction);
    prom_gauge(b, "geogate_warmup_hit_ratio",
               "Local hit ratio of the last one-second warm-up window.", fo->warmup_hit_ratio);
    prom_counter(b, "geogate_warmup_local_hits_total", "Local hits while warming up.",
                 fo->warmup_local_hits);
    prom_counter(b, "geogate_warmup_local_misses_total",
                 "Local misses while warming up (each read from the peer).",
                 fo->warmup_local_misses);
    prom_counter(b, "geogate_warmup_filled_total",
                 "Items read from the peer during warm-up and added locally.", fo->warmup_filled);
    prom_counter(b, "geogate_failover_peer_reads_total",
                 "Reads served by a peer site (failed over or per-key fallback).", fo->peer_reads);
    prom_counter(b, "geogate_failover_peer_read_errors_total", "Reads a peer site failed to serve.",
                 fo->peer_read_errors);
    prom_counter(b, "geogate_failover_reads_retried_total",
                 "Reads whose local node failed under them, asked again at a peer site.",
                 fo->reads_retried);
}

static void admin_metrics_nodes(struct gw_server *srv, struct evbuffer *b)
{
    const struct gw_pool *pool = srv->pool;

    if (pool == NULL || pool->nnodes == 0) {
        return;
    }
    prom_head(b, "geogate_node_up", "gauge", "1 while the local memcached node is up.");
    for (uint32_t i = 0; i < pool->nnodes; i++) {
        prom_labelled(b, "geogate_node_up", "node", pool->nodes[i].label);
        evbuffer_add_printf(b, "%d\n",
                            __atomic_load_n(&pool->nodes[i].state, __ATOMIC_RELAXED) == GW_NODE_UP);
    }
    prom_head(b, "geogate_node_consecutive_failures", "gauge",
              "Consecutive failed requests to the node (failure_limit marks it down).");
    for (uint32_t i = 0; i < pool->nnodes; i++) {
        prom_labelled(b, "geogate_node_consecutive_failures", "node", pool->nodes[i].label);
        evbuffer_add_printf(b, "%" PRIu32 "\n",
                            __atomic_load_n(&pool->nodes[i].failures, __ATOMIC_RELAXED));
    }
    prom_head(b, "geogate_node_down_events_total", "counter",
              "Times the node was marked down (since the pool was built or reloaded).");
    for (uint32_t i = 0; i < pool->nnodes; i++) {
        prom_labelled(b, "geogate_node_down_events_total", "node", pool->nodes[i].label);
        evbuffer_add_printf(b, "%" PRIu64 "\n",
                            __atomic_load_n(&pool->nodes[i].down_events, __ATOMIC_RELAXED));
    }
}

static void admin_metrics_peers(struct gw_server *srv, const struct admin_snapshot *s,
                                struct evbuffer *b)
{
    if (srv->cfg->wan.enabled) {
        prom_gauge(b, "geogate_spool_max_bytes",
                   "wan.spool.max_bytes: the spool's size limit (over it the oldest segment is "
                   "compacted and old records are dropped).",
                   (double)srv->cfg->wan.spool_max_bytes);
    }
    prom_peer_family(b, s, "geogate_peer_link_up", "gauge",
                     "1 while the replication (Ship) link to the peer site is up.", pv_link_up);
    prom_peer_family(b, s, "geogate_peer_serving", "gauge",
                     "1 while the peer's health check says SERVING (it can take our reads).",
                     pv_serving);
    prom_peer_family(b, s, "geogate_peer_priority", "gauge",
                     "The peer's configured priority (lower is chosen first).", pv_priority);
    prom_peer_family(b, s, "geogate_peer_rtt_seconds", "gauge",
                     "Round trip of the last health check to the peer.", pv_rtt);
    prom_peer_family(b, s, "geogate_peer_acked_sequence", "gauge",
                     "Highest spool sequence number the peer acknowledged.", pv_acked_seq);
    prom_peer_family(b, s, "geogate_spool_records", "gauge",
                     "Spooled records the peer has not acknowledged (data at risk).",
                     pv_spool_records);
    prom_peer_family(b, s, "geogate_spool_bytes", "gauge",
                     "Bytes of spooled records the peer has not acknowledged.", pv_spool_bytes);
    prom_peer_family(b, s, "geogate_spool_oldest_unacked_age_seconds", "gauge",
                     "Age of the oldest record the peer has not acknowledged.", pv_oldest_age);
    prom_peer_family(b, s, "geogate_peer_shipped_total", "counter",
                     "Mutations shipped to the peer.", pv_shipped);
    prom_peer_family(b, s, "geogate_peer_acked_total", "counter",
                     "Mutations the peer acknowledged.", pv_acked);
    prom_peer_family(b, s, "geogate_spool_dropped_total", "counter",
                     "Records dropped before the peer acknowledged them (spool full).", pv_dropped);
    prom_peer_family(b, s, "geogate_peer_lost_records_total", "counter",
                     "Records meant for this site that the peer said its spool lost (a backfill "
                     "from it follows unless replication.auto_backfill is off).",
                     pv_lost_from_peer);
    prom_peer_family(b, s, "geogate_peer_reconnects_total", "counter",
                     "Reconnections of the replication link to the peer.", pv_reconnects);
    if (s->npeers == 0) {
        return;
    }
    prom_head(b, "geogate_replication_lag_seconds", "summary",
              "Time from a local write to the peer's ack (histogram since start; bucket upper "
              "bounds).");
    for (size_t i = 0; i < s->npeers; i++) {
        evbuffer_add_printf(b, "geogate_replication_lag_seconds{peer=\"");
        prom_label(b, s->peers[i].site);
        evbuffer_add_printf(b, "\",quantile=\"0.5\"} %.3f\n", s->peers[i].lag_p50_ms / 1000.0);
        evbuffer_add_printf(b, "geogate_replication_lag_seconds{peer=\"");
        prom_label(b, s->peers[i].site);
        evbuffer_add_printf(b, "\",quantile=\"0.99\"} %.3f\n", s->peers[i].lag_p99_ms / 1000.0);
    }
}

/* This gateway's hybrid clock and every peer's clock offset (docs/REPLICATION.md,
 * "Clock skew").  An offset appears once the peer has told its clock. */
static void admin_metrics_clock(struct gw_server *srv, const struct admin_snapshot *s,
                                struct evbuffer *b)
{
    const struct gw_clock_status *c = &s->clock;
    bool any = false;

    if (!srv->cfg->wan.enabled) {
        return;
    }
    prom_gauge(b, "geogate_max_clock_skew_seconds",
               "replication.max_clock_skew: how far ahead of this gateway's clock a peer's "
               "version may be (0: no bound).",
               (double)c->max_skew_ms / 1000.0);
    prom_gauge(b, "geogate_hlc_lead_seconds",
               "This gateway's hybrid clock minus its wall clock (at most 0 unless a version "
               "ran ahead).",
               (double)c->hlc_lead_ms / 1000.0);
    prom_gauge(b, "geogate_hlc_max_lead_seconds",
               "The furthest this gateway's hybrid clock ran ahead of its wall clock since start "
               "(at most max_clock_skew).",
               (double)c->hlc_max_lead_ms / 1000.0);
    prom_counter(b, "geogate_clock_refused_versions_total",
                 "Peer versions further ahead than max_clock_skew, not applied (acks, warm-up "
                 "reads, backfills; refused Ship batches count per peer).",
                 c->refused_versions);
    prom_counter(b, "geogate_clock_resets_total",
                 "Times this gateway's clock was found stepped back past max_clock_skew (its "
                 "hybrid clock restarted from it).",
                 c->resets);
    prom_counter(b, "geogate_clock_restamped_total",
                 "Writes this gateway stamped ahead of its clock, re-stamped before shipping.",
                 c->restamped);
    for (size_t i = 0; i < s->npeers; i++) {
        if (!s->peers[i].clock_measured) {
            continue;
        }
        if (!any) {
            prom_head(b, "geogate_peer_clock_offset_seconds", "gauge",
                      "The peer's clock minus ours, from its last batch, ack or heartbeat "
                      "(within half a round trip).");
            any = true;
        }
        prom_labelled(b, "geogate_peer_clock_offset_seconds", "peer", s->peers[i].site);
        evbuffer_add_printf(b, "%.3f\n", (double)s->peers[i].clock_offset_ms / 1000.0);
    }
    prom_peer_family(b, s, "geogate_peer_clock_refused_batches_total", "counter",
                     "The peer's batches refused because a version in them was further ahead of "
                     "our clock than max_clock_skew (they stay in its spool).",
                     pv_skew_refused);
}

/* The `stats` counters as geogate_<name>_total ("total_connections" becomes
 * geogate_connections_total rather than geogate_total_connections_total). */
static void admin_metrics_counters(const struct admin_snapshot *s, struct evbuffer *b)
{
    static const struct {
        const char *name;
        size_t offset;
    } counters[] = {
#define ADMIN_COUNTER_ROW(n) {#n, offsetof(struct gw_stats, n)},
        GW_STATS_COUNTERS(ADMIN_COUNTER_ROW)
#undef ADMIN_COUNTER_ROW
    };

    for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++) {
        const char *n = counters[i].name;
        uint64_t v;
        char metric[96], help[160];

        memcpy(&v, (const char *)&s->stats + counters[i].offset, sizeof(v));
        if (strncmp(n, "total_", 6) == 0) {
            n += 6;
        }
        snprintf(metric, sizeof(metric), "geogate_%s_total", n);
        snprintf(help, sizeof(help), "The gateway's `stats` counter %s, summed over threads.",
                 counters[i].name);
        prom_counter(b, metric, help, v);
    }
}

/* ---- handlers ------------------------------------------------------------------------- */

static void admin_health(struct gw_admin *a, struct evhttp_request *req)
{
    struct admin_snapshot *s = malloc(sizeof(*s));
    struct evbuffer *b = evbuffer_new();

    if (s == NULL || b == NULL) {
        evhttp_send_error(req, 500, "out of memory");
        goto done;
    }
    admin_snapshot_take(a->srv, s);
    /* No newline: load balancers and scripts compare the body with "ok". */
    evbuffer_add_printf(b, "%s", s->reason);
    admin_send(req, s->healthy ? 200 : 503, "text/plain; charset=utf-8", b);
done:
    if (b != NULL) {
        evbuffer_free(b);
    }
    free(s);
}

static void admin_status(struct gw_admin *a, struct evhttp_request *req)
{
    struct admin_snapshot *s = malloc(sizeof(*s));
    struct evbuffer *b = evbuffer_new();

    if (s == NULL || b == NULL) {
        evhttp_send_error(req, 500, "out of memory");
        goto done;
    }
    admin_snapshot_take(a->srv, s);
    admin_status_json(a->srv, s, b);
    admin_send(req, 200, "application/json", b);
done:
    if (b != NULL) {
        evbuffer_free(b);
    }
    free(s);
}

static void admin_metrics(struct gw_admin *a, struct evhttp_request *req)
{
    struct admin_snapshot *s = malloc(sizeof(*s));
    struct evbuffer *b = evbuffer_new();

    if (s == NULL || b == NULL) {
        evhttp_send_error(req, 500, "out of memory");
        goto done;
    }
    admin_snapshot_take(a->srv, s);
    admin_metrics_site(a->srv, s, b);
    admin_metrics_nodes(a->srv, b);
    admin_metrics_peers(a->srv, s, b);
    admin_metrics_clock(a->srv, s, b);
    admin_metrics_counters(s, b);
    gw_backfill_metrics(a->srv, b);
    gw_repl_spool_metrics(a->srv, b);
    admin_send(req, 200, "text/plain; version=0.0.4; charset=utf-8", b);
done:
    if (b != NULL) {
        evbuffer_free(b);
    }
    free(s);
}

static void admin_drain(struct gw_admin *a, struct evhttp_request *req, struct evkeyvalq *q)
{
    (void)q;
    if (admin_draining(a->srv)) {
        admin_text(req, 200, "already draining: /health answers 503");
        return;
    }
    admin_set_draining(a->srv);
    log_warn("admin: drained for the load balancer: /health answers 503; existing "
             "connections are still served until SIGTERM");
    admin_text(req, 200,
               "draining: /health answers 503 from now on; existing connections are still "
               "served; stop the gateway with SIGTERM once the load balancer has moved them");
}

static bool admin_is_peer(const struct gw_config *cfg, const char *site)
{
    return gw_config_peer_index(cfg, site) >= 0;
}

/* "a, b, c" of the configured peers, into out. */
static void admin_peer_list(const struct gw_config *cfg, char *out, size_t len)
{
    size_t n = 0;

    out[0] = '\0';
    for (size_t i = 0; i < cfg->wan.npeers && n < len; i++) {
        int w = snprintf(out + n, len - n, "%s%s", i ? ", " : "", cfg->wan.peers[i].site);
        if (w < 0) {
            break;
        }
        n += (size_t)w;
    }
}

/*
 * POST /failover?to=SITE.  Without `to` the best serving peer is chosen (lowest priority,
 * then round trip), exactly as the automatic switch would: "fail us over" is the common
 * drill, and naming a site stays available when the operator has a preference.
 */
static void admin_failover(struct gw_admin *a, struct evhttp_request *req, struct evkeyvalq *q)
{
    const struct gw_config *cfg = a->srv->cfg;
    const char *to = evhttp_find_header(q, "to");
    char err[256] = "", clean[80], peers[512];
    int rc;

    for (struct evkeyval *kv = q->tqh_first; kv != NULL; kv = kv->next.tqe_next) {
        if (strcmp(kv->key, "to") != 0) {
            admin_text(req, 400, "unknown parameter '%s': POST /failover takes only to=SITE",
                       admin_clean(kv->key, clean, sizeof(clean)));
            return;
        }
    }
    if (to != NULL && to[0] == '\0') {
        admin_text(req, 400,
                   "to= is empty: name a peer site, or leave `to` out for the best "
                   "serving peer");
        return;
    }
    if (to != NULL && strcmp(to, cfg->site) == 0) {
        admin_text(req, 400, "'%s' is this gateway's own site: name a peer site",
                   admin_clean(to, clean, sizeof(clean)));
        return;
    }
    if (to != NULL && !admin_is_peer(cfg, to)) {
        admin_peer_list(cfg, peers, sizeof(peers));
        admin_text(req, 404, "unknown site '%s': not a configured peer (%s%s)",
                   admin_clean(to, clean, sizeof(clean)),
                   cfg->wan.npeers ? "peers: " : "this gateway has no peer sites",
                   cfg->wan.npeers ? peers : "");
        return;
    }
    rc = gw_failover_force(a->srv, to, err, sizeof(err));
    switch (rc) {
    case 0:
        log_warn("admin: failover forced%s%s: %s", to ? " to " : "", to ? to : "", err);
        admin_text(req, 200, "failed over: %s", err);
        return;
    case -ENOENT:
        admin_text(req, 404, "%s", err);
        return;
    case -EHOSTUNREACH:
    case -ENOTSUP:
        admin_text(req, 409, "%s", err);
        return;
    default:
        admin_text(req, 500, "failover failed: %s (%s)", err, strerror(-rc));
        return;
    }
}

static void admin_failback(struct gw_admin *a, struct evhttp_request *req, struct evkeyvalq *q)
{
    char err[256] = "";
    int rc;

    if (q->tqh_first != NULL) {
        admin_text(req, 400, "POST /failback takes no parameters");
        return;
    }
    rc = gw_failover_back(a->srv, err, sizeof(err));
    switch (rc) {
    case 0:
        log_warn("admin: failback: %s", err);
        admin_text(req, 200, "%s", err);
        return;
    case -EALREADY:
    case -EAGAIN:
        admin_text(req, 409, "%s", err);
        return;
    default:
        admin_text(req, 500, "failback failed: %s (%s)", err, strerror(-rc));
        return;
    }
}

static bool admin_from_loopback(struct evhttp_request *req);

/* A GET, but it hands out every item of the site: loopback only, like the actions. */
static void admin_snapshot(struct gw_admin *a, struct evhttp_request *req)
{
    if (!admin_from_loopback(req)) {
        admin_text(req, 403, "/snapshot is served to loopback only");
        return;
    }
    gw_admin_xfer_snapshot(a->xfer, req);
}

static void admin_restore(struct gw_admin *a, struct evhttp_request *req, struct evkeyvalq *q)
{
    if (q->tqh_first != NULL) {
        admin_text(req, 400, "POST /restore takes no parameters, only the snapshot file as body");
        return;
    }
    gw_admin_xfer_restore(a->xfer, req);
}

enum admin_route_kind { ADMIN_GET = 0, ADMIN_POST, ADMIN_ROUTE_KIND_MAX };

/* GET /backfill: the running or last backfill job as JSON. */
static void admin_backfill_status(struct gw_admin *a, struct evhttp_request *req)
{
    struct evbuffer *b = evbuffer_new();

    if (b == NULL) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    gw_backfill_json(a->srv, b);
    evbuffer_add(b, "\n", 1);
    admin_send(req, 200, "application/json", b);
    evbuffer_free(b);
}

/* POST /backfill?from=SITE[&rate=N][&prefix=P]: start pulling a peer's items. */
static void admin_backfill(struct gw_admin *a, struct evhttp_request *req, struct evkeyvalq *q)
{
    const struct gw_config *cfg = a->srv->cfg;
    const char *from = evhttp_find_header(q, "from");
    const char *rate = evhttp_find_header(q, "rate");
    struct gw_backfill_params p;
    char err[256] = "", clean[80], peers[512];
    int rc;

    memset(&p, 0, sizeof(p));
    p.rate = -1;
    for (struct evkeyval *kv = q->tqh_first; kv != NULL; kv = kv->next.tqe_next) {
        if (strcmp(kv->key, "from") != 0 && strcmp(kv->key, "rate") != 0 &&
            strcmp(kv->key, "prefix") != 0) {
            admin_text(req, 400,
                       "unknown parameter '%s': POST /backfill takes from=SITE, rate=ITEMS_PER_S, "
                       "prefix=P",
                       admin_clean(kv->key, clean, sizeof(clean)));
            return;
        }
    }
    if (from == NULL || from[0] == '\0') {
        admin_text(req, 400, "from=SITE is required: the peer site to pull items from");
        return;
    }
    if (strcmp(from, cfg->site) == 0) {
        admin_text(req, 400, "'%s' is this gateway's own site: name a peer site",
                   admin_clean(from, clean, sizeof(clean)));
        return;
    }
    if (!admin_is_peer(cfg, from)) {
        admin_peer_list(cfg, peers, sizeof(peers));
        admin_text(req, 404, "unknown site '%s': not a configured peer (%s%s)",
                   admin_clean(from, clean, sizeof(clean)),
                   cfg->wan.npeers ? "peers: " : "this gateway has no peer sites",
                   cfg->wan.npeers ? peers : "");
        return;
    }
    if (rate != NULL) {
        char *end = NULL;
        unsigned long long v;
        errno = 0;
        v = strtoull(rate, &end, 10);
        if (rate[0] < '0' || rate[0] > '9' || *end != '\0' || errno != 0 || v > 100000000ull) {
            admin_text(req, 400, "rate must be a whole number of items per second (0 = no limit, "
                                 "at most 100000000)");
            return;
        }
        p.rate = (int64_t)v;
    }
    p.pool = a->srv->pool;
    p.from = from;
    p.prefix = evhttp_find_header(q, "prefix");
    p.why = "requested on the admin listener";
    rc = gw_backfill_start(a->srv, &p, err, sizeof(err));
    switch (rc) {
    case 0:
        admin_backfill_status(a, req);
        return;
    case -EBUSY:
        admin_text(req, 409, "%s", err);
        return;
    case -ENOENT:
        admin_text(req, 404, "%s", err);
        return;
    case -EINVAL:
    case -ENOTCONN:
        admin_text(req, 400, "%s", err);
        return;
    default:
        admin_text(req, 500, "%s", err);
        return;
    }
}

/* POST /backfill/cancel */
static void admin_backfill_cancel(struct gw_admin *a, struct evhttp_request *req,
                                  struct evkeyvalq *q)
{
    (void)q;
    if (gw_backfill_cancel(a->srv) != 0) {
        admin_text(req, 409, "no backfill is running");
        return;
    }
    admin_text(req, 200, "backfill cancelled");
}

struct admin_route {
    const char *path;
    enum admin_route_kind kind;
    void (*get)(struct gw_admin *a, struct evhttp_request *req);
    void (*post)(struct gw_admin *a, struct evhttp_request *req, struct evkeyvalq *q);
};

static const struct admin_route admin_routes[] = {
    {"/health", ADMIN_GET, admin_health, NULL},
    {"/status", ADMIN_GET, admin_status, NULL},
    {"/metrics", ADMIN_GET, admin_metrics, NULL},
    {"/drain", ADMIN_POST, NULL, admin_drain},
    {"/failover", ADMIN_POST, NULL, admin_failover},
    {"/failback", ADMIN_POST, NULL, admin_failback},
    {"/snapshot", ADMIN_GET, admin_snapshot, NULL},
    {"/restore", ADMIN_POST, NULL, admin_restore},
    {"/backfill", ADMIN_GET, admin_backfill_status, NULL},
    {"/backfill", ADMIN_POST, NULL, admin_backfill},
    {"/backfill/cancel", ADMIN_POST, NULL, admin_backfill_cancel},
};

/* Actions only from loopback (see the top of the file).  Unix sockets count as local. */
static bool admin_from_loopback(struct evhttp_request *req)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    const struct sockaddr *sa = conn != NULL ? evhttp_connection_get_addr(conn) : NULL;

    if (sa == NULL) {
        return false;
    }
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        const uint8_t *a6 = in6->sin6_addr.s6_addr;
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr)) {
            return true;
        }
        return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && a6[12] == 127;
    }
    return sa->sa_family == AF_UNIX;
}

static void admin_request_cb(struct evhttp_request *req, void *arg)
{
    struct gw_admin *a = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    const char *query = uri != NULL ? evhttp_uri_get_query(uri) : NULL;
    const struct admin_route *r = NULL;
    struct evkeyvalq q;
    char clean[80];

    if (path == NULL || path[0] == '\0') {
        path = "/";
    }
    for (size_t i = 0; i < sizeof(admin_routes) / sizeof(admin_routes[0]); i++) {
        if (strcmp(admin_routes[i].path, path) == 0) {
            /* A path with both a GET and a POST route: the method picks. */
            bool post = cmd == EVHTTP_REQ_POST;
            if (r == NULL || (admin_routes[i].kind == ADMIN_POST) == post) {
                r = &admin_routes[i];
            }
        }
    }
    if (r == NULL) {
        admin_text(req, 404,
                   "unknown path %s: GET /health, /status, /metrics, /snapshot, /backfill; "
                   "POST /drain, /failover?to=SITE, /failback, /restore, /backfill?from=SITE, "
                   "/backfill/cancel",
                   admin_clean(path, clean, sizeof(clean)));
        return;
    }
    if (r->post != admin_restore &&
        evbuffer_get_length(evhttp_request_get_input_buffer(req)) > ADMIN_MAX_BODY) {
        admin_text(req, 413, "%s takes no body", r->path);
        return;
    }
    if (r->kind == ADMIN_GET) {
        if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
            admin_text(req, 405, "%s is read with GET", r->path);
            return;
        }
        r->get(a, req);
        return;
    }
    if (cmd != EVHTTP_REQ_POST) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
        admin_text(req, 405, "%s is an action: use POST", r->path);
        return;
    }
    if (!admin_from_loopback(req)) {
        admin_text(req, 403, "admin actions are accepted from loopback only");
        return;
    }
    TAILQ_INIT(&q);
    if (query != NULL && evhttp_parse_query_str(query, &q) != 0) {
        admin_text(req, 400, "malformed query string");
        evhttp_clear_headers(&q);
        return;
    }
    r->post(a, req, &q);
    evhttp_clear_headers(&q);
}

int gw_admin_start(struct gw_server *srv, struct gw_admin **out)
{
    const struct gw_addr *addr = &srv->cfg->admin;
    struct gw_admin *a;

    *out = NULL;
    if (addr->host == NULL) {
        return 0;
    }
    a = calloc(1, sizeof(*a));
    if (a == NULL) {
        return -ENOMEM;
    }
    a->srv = srv;
    if (gw_admin_xfer_create(srv, &a->xfer) != 0) {
        goto fail_xfer;
    }
    a->http = evhttp_new(srv->base);
    if (a->http == NULL) {
        goto fail_http;
    }
    /* Every method reaches admin_request_cb, so a wrong one gets our 405 and message. */
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_timeout(a->http, ADMIN_TIMEOUT_S);
    evhttp_set_max_headers_size(a->http, ADMIN_MAX_HEADERS);
    evhttp_set_max_body_size(a->http, (ev_ssize_t)ADMIN_HTTP_MAX_BODY);
    evhttp_set_gencb(a->http, admin_request_cb, a);
    if (evhttp_bind_socket_with_handle(a->http, addr->host, addr->port) == NULL) {
        log_error("cannot listen on admin %s:%u: %s", addr->host, addr->port,
                  evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        goto fail_bind;
    }
    log_info("admin listener on %s:%u (/health /status /metrics)", addr->host, addr->port);
    *out = a;
    return 0;

fail_bind:
    evhttp_free(a->http);
    gw_admin_xfer_destroy(a->xfer);
    free(a);
    return -EADDRNOTAVAIL;
fail_http:
    gw_admin_xfer_destroy(a->xfer);
fail_xfer:
    free(a);
    return -ENOMEM;
}

void gw_admin_stop(struct gw_admin *a)
{
    if (a == NULL) {
        return;
    }
    gw_admin_xfer_destroy(a->xfer); /* stops and waits for the transfers' threads */
    evhttp_free(a->http);
    free(a);
}
