/*
 * client_stats — what the `stats` command shows of the gateway itself: its counters summed
 * over the workers (memcached's names where it has them), its settings, its client
 * connections, each node's health, and `stats reset`.  Any worker; it reads counters other
 * threads write with relaxed atomics.  What the nodes hold (slabs, items) is
 * client_admin.c's.
 */
#include "gateway/frontend/client.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "gateway/base/clock.h"
#include "gateway/base/config.h"
#include "gateway/protocol/req.h"
#include "gateway/replication/repl.h"
#include "gateway/routing/pool.h"
#include "gateway/server.h"

static void add_stat(struct evbuffer *b, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void add_stat(struct evbuffer *b, const char *name, const char *fmt, ...)
{
    va_list ap;

    evbuffer_add_printf(b, "STAT %s ", name);
    va_start(ap, fmt);
    evbuffer_add_vprintf(b, fmt, ap);
    va_end(ap);
    evbuffer_add(b, "\r\n", 2);
}

static void stats_general(struct gw_worker *w, struct evbuffer *b)
{
    struct gw_server *srv = w->srv;
    struct gw_stats *each[64];
    struct gw_stats sum;
    struct rusage ru;
    time_t now = time(NULL);
    uint32_t up = 0;
    int n = srv->nthreads < 64 ? srv->nthreads : 64;

    for (int i = 0; i < n; i++) {
        each[i] = &srv->workers[i].stats;
    }
    gw_stats_sum(&sum, each, n);
    for (uint32_t i = 0; i < w->pool->nnodes; i++) {
        up += gw_node_usable(&w->pool->nodes[i]);
    }
    getrusage(RUSAGE_SELF, &ru);
    add_stat(b, "pid", "%d", (int)getpid());
    add_stat(b, "uptime", "%ld", (long)(now - srv->started));
    add_stat(b, "time", "%ld", (long)now);
    add_stat(b, "version", "%s", GW_MC_VERSION);
    add_stat(b, "libevent", "%s", event_get_version());
    add_stat(b, "pointer_size", "%d", (int)(8 * sizeof(void *)));
    add_stat(b, "rusage_user", "%ld.%06ld", (long)ru.ru_utime.tv_sec, (long)ru.ru_utime.tv_usec);
    add_stat(b, "rusage_system", "%ld.%06ld", (long)ru.ru_stime.tv_sec, (long)ru.ru_stime.tv_usec);
    add_stat(b, "max_connections", "%u", srv->max_connections);
    add_stat(b, "curr_connections", "%" PRId64,
             __atomic_load_n(&srv->curr_connections, __ATOMIC_RELAXED));
#define GW_STATS_RENDER(name) add_stat(b, #name, "%" PRIu64, sum.name);
    GW_STATS_COUNTERS(GW_STATS_RENDER)
#undef GW_STATS_RENDER
    add_stat(b, "threads", "%d", srv->nworkers);
    add_stat(b, "site", "%s", srv->cfg->site);
    add_stat(b, "pool_nodes", "%u", w->pool->nnodes);
    add_stat(b, "pool_nodes_up", "%u", up);
    add_stat(b, "pool_hash", "%s", ring_hash_name(w->pool->hash));
}

static void stats_nodes(struct gw_worker *w, struct evbuffer *b)
{
    char name[300];

    for (uint32_t i = 0; i < w->pool->nnodes; i++) {
        struct gw_node *nd = &w->pool->nodes[i];
        int st = __atomic_load_n(&nd->state, __ATOMIC_RELAXED);
        snprintf(name, sizeof(name), "node:%s:state", nd->label);
        add_stat(b, name, "%s", gw_node_state_name(st));
        snprintf(name, sizeof(name), "node:%s:failures", nd->label);
        add_stat(b, name, "%u", __atomic_load_n(&nd->failures, __ATOMIC_RELAXED));
        snprintf(name, sizeof(name), "node:%s:down_events", nd->label);
        add_stat(b, name, "%" PRIu64, __atomic_load_n(&nd->down_events, __ATOMIC_RELAXED));
    }
}

static void stats_reset(struct gw_server *srv)
{
    for (int i = 0; i < srv->nthreads; i++) {
        struct gw_stats *st = &srv->workers[i].stats;
#define GW_STATS_ZERO(name) __atomic_store_n(&st->name, 0, __ATOMIC_RELAXED);
        GW_STATS_COUNTERS(GW_STATS_ZERO)
#undef GW_STATS_ZERO
    }
}

/*
 * memcached's `stats settings` names for what the gateway has an equivalent of, with the
 * gateway's values: maxconns (max_connections), tcpport (listen), num_threads (threads),
 * item_size_max (max_value_bytes: the largest value it takes), idle_timeout (seconds),
 * tcp_backlog (the listener's).  The fixed ones say what a client may rely on: text
 * protocol only, cas, flush_all and metadump pass to the nodes, no shutdown, no auth, no
 * TLS on the client port.  What only the nodes have (maxbytes, evictions, growth_factor,
 * the LRU's) is not here: ask a node, or `stats slabs` for the sums.  The last lines are
 * the gateway's own, under its own names.
 */
static void stats_settings(struct gw_worker *w, struct evbuffer *b)
{
    struct gw_server *srv = w->srv;
    const struct gw_config *cfg = srv->cfg;
    const struct gw_pool *pool = w->pool;

    add_stat(b, "maxconns", "%u", srv->max_connections);
    add_stat(b, "tcpport", "%u", cfg->listen.port);
    add_stat(b, "udpport", "0");
    add_stat(b, "inter", "%s", cfg->listen.host);
    add_stat(b, "shutdown_command", "no");
    add_stat(b, "num_threads", "%d", srv->nworkers);
    add_stat(b, "cas_enabled", "yes");
    add_stat(b, "tcp_backlog", "1024");
    add_stat(b, "binding_protocol", "ascii");
    add_stat(b, "auth_enabled_sasl", "no");
    add_stat(b, "auth_enabled_ascii", "no");
    add_stat(b, "item_size_max", "%u", srv->max_value_bytes);
    add_stat(b, "flush_enabled", "yes");
    add_stat(b, "dump_enabled", "yes");
    add_stat(b, "idle_timeout", "%u", srv->idle_timeout_ms / 1000);
    add_stat(b, "ssl_enabled", "no");
    /* the gateway's own */
    add_stat(b, "site", "%s", cfg->site);
    add_stat(b, "max_request_bytes", "%u", srv->max_request_bytes);
    add_stat(b, "client_output_limit", "%" PRIu64, srv->client_output_limit);
    add_stat(b, "replicating", "%s", gw_server_replicates(srv) ? "yes" : "no");
    add_stat(b, "pool_nodes", "%u", pool->nnodes);
    add_stat(b, "pool_hash", "%s", ring_hash_name(pool->hash));
    add_stat(b, "pool_connections", "%u", pool->connections);
    add_stat(b, "pool_timeout_ms", "%u", pool->timeout_ms);
    add_stat(b, "pool_connect_timeout_ms", "%u", pool->connect_timeout_ms);
    add_stat(b, "pool_failure_limit", "%u", pool->failure_limit);
    add_stat(b, "pool_retry_timeout_ms", "%u", pool->retry_timeout_ms);
}

/* "tcp:1.2.3.4:11211" or "tcp6:[::1]:11211", as memcached writes a socket's address. */
static void format_addr(const struct sockaddr_storage *ss, char *out, size_t n)
{
    char ip[INET6_ADDRSTRLEN] = "?";

    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
        snprintf(out, n, "tcp6:[%s]:%u", ip, ntohs(a->sin6_port));
    } else if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        snprintf(out, n, "tcp:%s:%u", ip, ntohs(a->sin_port));
    } else {
        snprintf(out, n, "unknown");
    }
}

static void add_sock_stat(struct evbuffer *b, int fd, const char *what, bool peer)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char addr[INET6_ADDRSTRLEN + 16];

    memset(&ss, 0, sizeof(ss));
    if ((peer ? getpeername(fd, (struct sockaddr *)&ss, &len)
              : getsockname(fd, (struct sockaddr *)&ss, &len)) == -1) {
        ss.ss_family = AF_UNSPEC;
    }
    format_addr(&ss, addr, sizeof(addr));
    evbuffer_add_printf(b, "STAT %d:%s %s\r\n", fd, what, addr);
}

/* memcached's connection states, for what a gateway client is doing: reading a
 * value's data block (conn_nread), discarding one (conn_swallow), going away
 * (conn_closing), the one asking (conn_parse_cmd, as memcached shows it), else
 * waiting for its next command (conn_waiting). */
static const char *client_state_name(const struct gw_client *c, const struct gw_client *asking)
{
    if (c == asking) {
        return "conn_parse_cmd";
    }
    switch (__atomic_load_n(&c->in_state, __ATOMIC_RELAXED)) {
    case GW_IN_DATA:
        return "conn_nread";
    case GW_IN_SWALLOW:
        return "conn_swallow";
    default:
        break;
    }
    return __atomic_load_n(&c->quitting, __ATOMIC_RELAXED) ? "conn_closing" : "conn_waiting";
}

static void stats_conns(struct gw_client *asking, struct evbuffer *b)
{
    struct gw_server *srv = asking->w->srv;
    int lfd = __atomic_load_n(&srv->listen_fd, __ATOMIC_RELAXED);
    int64_t now = gw_mono_ms();

    if (lfd >= 0) {
        add_sock_stat(b, lfd, "addr", false);
        evbuffer_add_printf(b, "STAT %d:state conn_listening\r\n", lfd);
        evbuffer_add_printf(b, "STAT %d:secs_since_last_cmd %ld\r\n", lfd,
                            (long)(time(NULL) - srv->started));
    }
    /* each worker's list under its lock: a client leaves it (and its socket closes) only
     * with the lock held, so every fd read here is still that client's */
    for (int i = 0; i < srv->nworkers; i++) {
        struct gw_worker *w = &srv->workers[i];
        struct gw_client *c;

        pthread_mutex_lock(&w->clients_lock);
        TAILQ_FOREACH(c, &w->clients, link)
        {
            int64_t last = __atomic_load_n(&c->last_active_ms, __ATOMIC_RELAXED);
            int fd = c->conn.fd;
            add_sock_stat(b, fd, "addr", true);
            add_sock_stat(b, fd, "listen_addr", false);
            evbuffer_add_printf(b, "STAT %d:state %s\r\n", fd, client_state_name(c, asking));
            evbuffer_add_printf(b, "STAT %d:secs_since_last_cmd %ld\r\n", fd,
                                (long)(now > last ? (now - last) / 1000 : 0));
        }
        pthread_mutex_unlock(&w->clients_lock);
    }
}

static bool sub_is(const struct mc_request *m, const char *name)
{
    return m->subcommand != NULL && strcmp(m->subcommand, name) == 0;
}

void gw_client_stats(struct gw_req *r, const struct mc_request *m)
{
    struct gw_worker *w = r->w;
    struct evbuffer *b;

    if (sub_is(m, "slabs") || sub_is(m, "items") || sub_is(m, "sizes")) {
        gw_client_admin(r, m);
        return;
    }
    if (sub_is(m, "reset")) {
        stats_reset(w->srv);
        gw_req_finish_line(r, "RESET");
        return;
    }
    if (sub_is(m, "detail")) {
        /* memcached's per-prefix counters: the gateway keeps none, so its dump is
         * memcached's with detail off; turning them on is each node's business */
        if (m->arg != NULL && strcmp(m->arg, "dump") == 0) {
            gw_req_finish_line(r, "END");
        } else if (m->arg != NULL && (strcmp(m->arg, "on") == 0 || strcmp(m->arg, "off") == 0)) {
            gw_req_finish_line(r, "SERVER_ERROR command not supported through geogate");
        } else {
            gw_req_finish_line(r, "CLIENT_ERROR usage: stats detail on|off|dump");
        }
        return;
    }
    if (m->subcommand != NULL && !sub_is(m, "nodes") && !sub_is(m, "peers") &&
        !sub_is(m, "settings") && !sub_is(m, "conns")) {
        gw_req_finish_line(r, "ERROR");
        return;
    }
    if ((b = gw_req_reply(r)) == NULL) {
        gw_req_finish(r);
        return;
    }
    if (m->subcommand == NULL) {
        stats_general(w, b);
    } else if (sub_is(m, "peers")) {
        gw_repl_stats(w->srv, b);
    } else if (sub_is(m, "settings")) {
        stats_settings(w, b);
    } else if (sub_is(m, "conns")) {
        stats_conns(r->client, b);
    } else {
        stats_nodes(w, b);
    }
    evbuffer_add(b, "END\r\n", 5);
    gw_req_finish(r);
}
