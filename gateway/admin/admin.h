/*
 * admin — the admin HTTP listener (libevent's evhttp) at the config's `admin:` address:
 * GET /health for load balancers, GET /status (JSON) and GET /metrics (Prometheus text
 * format) for operators and monitoring, and the operator actions POST /drain,
 * POST /failover?to=SITE and POST /failback.  It only reads state and calls the failover
 * API; it never touches a client connection or a worker's loop.  Runs on the main
 * thread's event_base (srv->base).
 */
#ifndef GEOGATE_ADMIN_H
#define GEOGATE_ADMIN_H

struct gw_server;
struct gw_admin;

/*
 * Start the admin listener on srv->cfg->admin, on srv->base (main thread, before the
 * loop runs).  On success returns 0 and *out (free with gw_admin_stop); when the config
 * has no `admin:` there is no listener: returns 0 with *out = NULL.  Returns -ENOMEM, or
 * -EADDRNOTAVAIL when the address cannot be bound (logged with the reason).
 */
int gw_admin_start(struct gw_server *srv, struct gw_admin **out);

/* Close the listener and every admin connection (main thread, before event_base_free).
 * NULL is a no-op. */
void gw_admin_stop(struct gw_admin *admin);

#endif
