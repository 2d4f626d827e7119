/*
 * client_stats — what the `stats` command shows: the gateway's counters summed over the
 * workers (memcached's names where it has them), each node's health, and `stats reset`.
 * Any worker; it reads counters other threads write with relaxed atomics.
 */
#include "gateway/frontend/client.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "gateway/base/config.h"
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

void gw_client_stats_general(struct gw_worker *w, struct evbuffer *b)
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

void gw_client_stats_nodes(struct gw_worker *w, struct evbuffer *b)
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

void gw_client_stats_reset(struct gw_server *srv)
{
    for (int i = 0; i < srv->nthreads; i++) {
        struct gw_stats *st = &srv->workers[i].stats;
#define GW_STATS_ZERO(name) __atomic_store_n(&st->name, 0, __ATOMIC_RELAXED);
        GW_STATS_COUNTERS(GW_STATS_ZERO)
#undef GW_STATS_ZERO
    }
}
