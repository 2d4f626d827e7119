/*
 * server — see server.h.  The main thread accepts and hands each socket to a worker
 * (round robin); it never touches a client after that.
 *
 *   SIGTERM/SIGINT ──> stop listening ──> workers drain (answer what is in flight,
 *                      close idle clients) ──> exit 0; a worker still busy after
 *                      GW_DRAIN_DEADLINE_MS is stopped anyway
 *   SIGHUP ──> reload the config file ──> new pool to every worker; client
 *              connections stay open; an invalid file is logged and ignored
 */
#include "gateway/server.h"

#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <systemd/sd-daemon.h>

#include "gateway/base/clock.h"
#include "gateway/admin/admin.h"
#include "gateway/backend/backend_worker.h"
#include "gateway/transfer/backfill.h"
#include "gateway/base/config.h"
#include "gateway/failover/failover.h"
#include "gateway/frontend/client.h"
#include "gateway/frontend/vop.h"
#include "gateway/base/log.h"
#include "gateway/routing/pool.h"
#include "gateway/failover/remote.h"
#include "gateway/replication/repl.h"
#include "gateway/protocol/req.h"
#include "gateway/loop/hooks.h"
#include "gateway/store/apply.h"
#include "gateway/loop/worker.h"

#define GW_DRAIN_DEADLINE_MS 4500

static const char too_many[] = "ERROR Too many open connections\r\n";

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    struct gw_server *srv = arg;
    struct gw_msg msg = {.type = GW_MSG_CONN, .fd = fd};
    int64_t cur;

    (void)l;
    (void)sa;
    (void)salen;
    cur = __atomic_add_fetch(&srv->curr_connections, 1, __ATOMIC_RELAXED);
    if (cur > (int64_t)srv->max_connections) {
        __atomic_sub_fetch(&srv->curr_connections, 1, __ATOMIC_RELAXED);
        STAT_INCR(&srv->workers[0].stats, rejected_connections);
        if (write(fd, too_many, sizeof(too_many) - 1) == -1) {
            /* the client is gone already */
        }
        close(fd);
        return;
    }
    for (int tries = 0; tries < srv->nworkers; tries++) {
        struct gw_worker *w = &srv->workers[srv->next_worker];
        srv->next_worker = (srv->next_worker + 1) % srv->nworkers;
        if (gw_worker_send(w, &msg) == 0) {
            return;
        }
    }
    log_error("no worker took a new connection; closing it");
    __atomic_sub_fetch(&srv->curr_connections, 1, __ATOMIC_RELAXED);
    close(fd);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    (void)l;
    (void)arg;
    log_warn("accept failed: %s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

static void worker_parser_release(struct gw_worker *w)
{
    mc_parser_release(&w->parser);
}

/*
 * What every worker runs at each point of its loop, in this order (loop/hooks.h):
 *
 *   tick      node timeouts, retired node connections closed ─> peer links redialled ─>
 *             clients (room, idle_timeout) ─> WAN thread's keep-alive to the nodes ─>
 *             writes waiting for a peer's ack ─> probes of down nodes
 *   pass end  the pass's spool records appended (fsync `always`: synced, held replies
 *             released) ─> then the worker writes every socket
 *   before a socket is written mid-pass: the spool records, so no reply overtakes its own
 *   stop      ack waiters failed ─> clients closed ─> node connections closed (failing what
 *             was pending) ─> clients those failures closed ─> peer links ─> spare
 *             requests and versioned operations ─> the node table and the pool ─> the parser
 *
 * Returns 0, or -ENOSPC when a point has no room left (hooks.h, GW_HOOKS_PER_POINT).
 */
static int worker_hooks(struct gw_worker_hooks *h)
{
    gw_hooks_set_accept(h, gw_client_accept);
    gw_hooks_set_reload(h, gw_backend_worker_reload);
    if (gw_hooks_add_start(h, gw_backend_worker_start, gw_backend_worker_release) != 0 ||
        gw_hooks_add_tick(h, gw_backend_worker_tick) != 0 ||
        gw_hooks_add_tick(h, gw_remote_tick) != 0 || gw_hooks_add_tick(h, gw_client_tick) != 0 ||
        gw_hooks_add_tick(h, gw_backend_worker_ping) != 0 ||
        gw_hooks_add_tick(h, gw_repl_worker_tick) != 0 ||
        gw_hooks_add_tick(h, gw_backend_worker_probe) != 0 ||
        gw_hooks_add(h, GW_HOOK_PASS_END, gw_repl_pass_end) != 0 ||
        gw_hooks_add(h, GW_HOOK_BEFORE_WRITE, gw_repl_spool_flush) != 0 ||
        gw_hooks_add(h, GW_HOOK_DRAIN, gw_client_drain_all) != 0 ||
        gw_hooks_add(h, GW_HOOK_REAP, gw_client_reap) != 0 ||
        gw_hooks_add(h, GW_HOOK_STOP, gw_repl_worker_stop) != 0 ||
        gw_hooks_add(h, GW_HOOK_STOP, gw_client_close_all) != 0 ||
        gw_hooks_add(h, GW_HOOK_STOP, gw_backend_worker_close) != 0 ||
        gw_hooks_add(h, GW_HOOK_STOP, gw_client_reap) != 0 ||
        gw_hooks_add(h, GW_HOOK_STOP, gw_remote_stop) != 0 ||
        gw_hooks_add(h, GW_HOOK_STOP, gw_req_pool_release) != 0 ||
        gw_hooks_add(h, GW_HOOK_STOP, gw_vop_pool_release) != 0 ||
        gw_hooks_add(h, GW_HOOK_STOP, gw_backend_worker_release) != 0 ||
        gw_hooks_add(h, GW_HOOK_STOP, worker_parser_release) != 0) {
        return -ENOSPC;
    }
    return 0;
}

static void apply_limits(struct gw_server *srv, const struct gw_config *cfg)
{
    srv->max_connections = cfg->max_connections;
    srv->max_request_bytes = cfg->max_request_bytes;
    srv->max_value_bytes = cfg->max_value_bytes;
    srv->idle_timeout_ms = cfg->idle_timeout_ms;
    srv->client_output_limit = cfg->client_output_limit;
    gw_log_set_level(cfg->log_level);
}

static void reload(struct gw_server *srv)
{
    struct gw_config *cfg = NULL;
    struct gw_pool *pool = NULL;
    char err[512];

    if (gw_config_load(srv->cfg->path, &cfg, err, sizeof(err)) != 0) {
        log_error("reload refused, keeping the running config: %s", err);
        return;
    }
    if (gw_pool_create(&pool, cfg, srv->generation + 1, err, sizeof(err)) != 0) {
        log_error("reload refused, keeping the running config: %s", err);
        gw_config_destroy(cfg);
        return;
    }
    if (cfg->threads != srv->cfg->threads || cfg->listen.port != srv->cfg->listen.port ||
        strcmp(cfg->listen.host, srv->cfg->listen.host) != 0) {
        log_warn("reload: listen and threads changes take effect only after a restart");
    }
    gw_pool_inherit_health(pool, srv->pool);
    srv->generation++;
    for (int i = 0; i < srv->nthreads; i++) {
        struct gw_msg msg = {.type = GW_MSG_RELOAD, .pool = pool};
        gw_pool_get(pool);
        if (gw_worker_send(&srv->workers[i], &msg) != 0) {
            gw_pool_put(pool);
            log_error("reload: worker %d did not take the new pool", i);
        }
    }
    gw_pool_put(srv->pool);
    srv->pool = pool;
    apply_limits(srv, cfg);
    log_info("reloaded %s: %u nodes, generation %llu", srv->cfg->path, pool->nnodes,
             (unsigned long long)srv->generation);
    /* srv->cfg stays the one workers read (site, listen); the pool is what changed. */
    gw_config_destroy(cfg);
}

static void drain_deadline(struct gw_server *srv)
{
    log_warn("drain deadline reached; stopping the remaining connections");
    for (int i = 0; i < srv->nthreads; i++) {
        struct gw_msg msg = {.type = GW_MSG_STOP};
        if (gw_worker_send(&srv->workers[i], &msg) != 0) {
            /* its base has no lock to take from here: it sees this within a tick */
            __atomic_store_n(&srv->workers[i].stop, true, __ATOMIC_RELEASE);
        }
    }
}

static void start_drain(struct gw_server *srv)
{
    if (srv->draining) {
        return;
    }
    srv->draining = true;
    log_info("draining: no new connections; finishing requests in flight");
    if (srv->listener != NULL) {
        __atomic_store_n(&srv->listen_fd, -1, __ATOMIC_RELAXED);
        evconnlistener_free(srv->listener);
        srv->listener = NULL;
    }
    for (int i = 0; i < srv->nthreads; i++) {
        struct gw_msg msg = {.type = GW_MSG_DRAIN};
        gw_worker_send(&srv->workers[i], &msg);
    }
    /* gw_server_run waits for the workers, with the deadline, once the loop ends. */
    event_base_loopexit(srv->base, NULL);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct gw_server *srv = arg;

    (void)what;
    if (sig == SIGHUP) {
        log_info("SIGHUP: reloading %s", srv->cfg->path);
        sd_notify(0, "RELOADING=1");
        reload(srv);
        sd_notify(0, "READY=1");
        return;
    }
    sd_notify(0, "STOPPING=1");
    start_drain(srv);
}

static struct evconnlistener *listen_on(struct gw_server *srv, const struct gw_addr *a)
{
    struct addrinfo hints, *res = NULL;
    struct evconnlistener *l;
    char port[8];
    int rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    snprintf(port, sizeof(port), "%u", a->port);
    rc = getaddrinfo(a->host, port, &hints, &res);
    if (rc != 0 || res == NULL) {
        log_error("cannot resolve listen address %s:%u: %s", a->host, a->port, gai_strerror(rc));
        return NULL;
    }
    l = evconnlistener_new_bind(srv->base, accept_cb, srv,
                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
                                1024, res->ai_addr, (int)res->ai_addrlen);
    freeaddrinfo(res);
    if (l == NULL) {
        log_error("cannot listen on %s:%u: %s", a->host, a->port,
                  evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        return NULL;
    }
    evconnlistener_set_error_cb(l, accept_error_cb);
    return l;
}

/* What the apply (store) hands up to replication to ship. */
static const struct gw_apply_shipper apply_shipper = {
    .item = gw_repl_ship_local,
    .flush = gw_repl_ship_flush,
};

int gw_server_run(struct gw_config *cfg)
{
    struct gw_server srv;
    struct gw_worker_hooks hooks; /* read by the workers until they are joined */
    struct gw_admin *admin = NULL;
    struct gw_repl_hooks repl_hooks = {0};
    char err[512];
    int started = 0;
    int rc = 1;

    memset(&srv, 0, sizeof(srv));
    memset(&hooks, 0, sizeof(hooks));
    srv.cfg = cfg;
    srv.started = time(NULL);
    apply_limits(&srv, cfg);
    srv.versioned = cfg->wan.enabled;
    srv.site_id = wan_site_id(cfg->site);
    srv.tombstone_ttl_s = cfg->replication.tombstone_ttl_s;
    srv.apply_ship = &apply_shipper;
    /* The bound is what keeps one site with a wrong clock from dragging every site's
     * versions into the future (docs/REPLICATION.md, "Clock skew"); it is read from the HLC
     * from here on, so a reload cannot make the two disagree. */
    wan_hlc_init(&srv.hlc, NULL, NULL, cfg->replication.max_clock_skew_ms);
    gw_failover_init(&srv);
    signal(SIGPIPE, SIG_IGN);
    if (evthread_use_pthreads() != 0) {
        log_error("libevent without pthreads support");
        return 1;
    }
    srv.base = event_base_new();
    if (srv.base == NULL) {
        goto fail_base;
    }
    if (gw_pool_create(&srv.pool, cfg, 1, err, sizeof(err)) != 0) {
        log_error("%s", err);
        goto fail_pool;
    }
    srv.generation = 1;
    srv.listen_fd = -1;
    srv.nworkers = (int)cfg->threads;
    srv.nthreads = srv.nworkers + (cfg->wan.enabled && cfg->wan.npeers > 0 ? 1 : 0);
    srv.workers = calloc((size_t)srv.nthreads, sizeof(*srv.workers));
    if (srv.workers == NULL || worker_hooks(&hooks) != 0 || gw_backfill_init(&srv) != 0) {
        free(srv.workers);
        goto fail_workers;
    }
    for (started = 0; started < srv.nthreads; started++) {
        if (gw_worker_start(&srv.workers[started], &srv, started, &hooks) != 0) {
            log_error("cannot start worker thread %d", started);
            goto fail_start;
        }
    }
    /* Replication runs the WAN thread's tick and listener; what sits above it plugs in. */
    gw_backfill_repl_hooks(&repl_hooks);
    repl_hooks.tick = gw_failover_tick;
    if (gw_server_replicates(&srv) &&
        gw_repl_create(&srv, srv.nthreads > srv.nworkers ? &srv.workers[srv.nworkers] : NULL,
                       &repl_hooks) != 0) {
        goto fail_start;
    }
    for (int i = 0; i < srv.nworkers && srv.repl != NULL; i++) {
        if (gw_worker_call(&srv.workers[i], gw_remote_start, &srv.workers[i]) != 0) {
            log_error("worker %d: cannot set up links to peer sites", i);
        }
    }
    srv.listener = listen_on(&srv, &cfg->listen);
    if (srv.listener == NULL) {
        goto fail_start;
    }
    __atomic_store_n(&srv.listen_fd, (int)evconnlistener_get_fd(srv.listener), __ATOMIC_RELAXED);
    if (gw_admin_start(&srv, &admin) != 0) {
        goto fail_start;
    }
    srv.sig_term = evsignal_new(srv.base, SIGTERM, signal_cb, &srv);
    srv.sig_int = evsignal_new(srv.base, SIGINT, signal_cb, &srv);
    srv.sig_hup = evsignal_new(srv.base, SIGHUP, signal_cb, &srv);
    evsignal_add(srv.sig_term, NULL);
    evsignal_add(srv.sig_int, NULL);
    evsignal_add(srv.sig_hup, NULL);
    log_info("geogate %s: site %s, listening on %s:%u, %d threads, %u nodes (%s)", GW_VERSION,
             cfg->site, cfg->listen.host, cfg->listen.port, srv.nworkers, srv.pool->nnodes,
             ring_hash_name(cfg->pool.hash));

    /* systemd Type=notify: ready once we listen (a no-op outside systemd). */
    sd_notify(0, "READY=1");
    event_base_dispatch(srv.base);
    rc = 0;
    gw_backfill_cancel(&srv); /* a job must not hold the drain up */
    if (srv.draining) {
        /* Wait for the workers, stopping them at the deadline if they linger. */
        int64_t deadline = gw_mono_ms() + GW_DRAIN_DEADLINE_MS;
        for (int i = 0; i < srv.nthreads; i++) {
            while (pthread_tryjoin_np(srv.workers[i].thread, NULL) != 0) {
                if (gw_mono_ms() > deadline) {
                    drain_deadline(&srv);
                    deadline = INT64_MAX;
                }
                usleep(10000);
            }
            srv.workers[i].joined = true;
        }
    }
    log_info("stopped");

fail_start:
    gw_backfill_shutdown(&srv); /* its thread waits for the workers: before they stop */
    for (int i = 0; i < started; i++) {
        struct gw_msg msg = {.type = GW_MSG_STOP};
        if (!srv.workers[i].joined) {
            gw_worker_send(&srv.workers[i], &msg);
        }
    }
    /* Every thread stops first; then the WAN links go while the WAN thread's event base
     * still exists (their timers and bufferevents live on it); then the workers' state. */
    for (int i = 0; i < started; i++) {
        if (!srv.workers[i].joined) {
            pthread_join(srv.workers[i].thread, NULL);
            srv.workers[i].joined = true;
        }
    }
    gw_repl_stop_links(&srv);
    for (int i = 0; i < started; i++) {
        gw_worker_join(&srv.workers[i]);
    }
    gw_repl_destroy(&srv);
    gw_admin_stop(admin);
    gw_backfill_free(&srv);
    if (srv.listener != NULL) {
        evconnlistener_free(srv.listener);
    }
    if (srv.sig_term) {
        event_free(srv.sig_term);
        event_free(srv.sig_int);
        event_free(srv.sig_hup);
    }
    free(srv.workers);
fail_workers:
    gw_pool_put(srv.pool);
fail_pool:
    event_base_free(srv.base);
fail_base:
    libevent_global_shutdown();
    return rc;
}
