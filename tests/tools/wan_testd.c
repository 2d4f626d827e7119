/*
 * wan_testd — a stand-alone WAN gRPC server for tests: listens with TLS 1.3 and mutual
 * certificates (wan/grpc_server.h over tls/tls.h), acks every Ship batch at once with
 * its last sequence number (last_seq, or first_seq + n - 1 when that is 0), answers
 * Read with "not found" for every key, Health/Check with SERVING, and logs every
 * refusal and bad input to stderr.  It stores nothing and applies nothing.  One
 * thread, one event loop; SIGTERM/SIGINT stop it cleanly (everything freed, so
 * sanitizer builds check for leaks).
 *
 * Usage:
 *   wan_testd --listen 127.0.0.1:PORT --ca CA.pem --cert SITE.pem --key SITE.key
 *             --peer SITE [--peer SITE...] [--max-message BYTES] [--busy-every N] [-v]
 *
 *   --busy-every N   answer BUSY to every Nth batch and resume 50 ms later (exercises
 *                    flow control)
 *
 * Until the Makefile has a rule for it, build it by hand after `make`:
 *   cc -O2 -g -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -pthread \
 *      -D_GNU_SOURCE -I. $(pkg-config --cflags libevent openssl libnghttp2 libprotobuf-c) \
 *      tests/tools/wan_testd.c build/libgeogate.a -o bin/wan_testd \
 *      $(pkg-config --libs libevent libevent_pthreads libevent_openssl openssl libnghttp2 \
 *        libprotobuf-c yaml-0.1) -lm -pthread
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "proto/geogate_wan.pb-c.h"
#include "proto/health.pb-c.h"
#include "tls/tls.h"
#include "wan/grpc.h"
#include "wan/grpc_server.h"

#define TESTD_MAX_PEERS 16

struct testd {
    struct event_base *base;
    struct wan_grpc_server *srv;
    int verbose;
    unsigned busy_every;
    unsigned long batches;
};

/* Per Ship stream. */
struct testd_stream {
    struct testd *td;
    struct wan_grpc_ship_stream *st;
    uint64_t applied;
    struct event *resume_ev;
};

static void testd_log(void *arg, enum wan_grpc_log_level level, const char *line)
{
    struct testd *td = arg;
    struct timespec ts;

    if (level == WAN_GRPC_LOG_DEBUG && !td->verbose) {
        return;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    fprintf(stderr, "%lld.%03ld [%s] %s\n", (long long)ts.tv_sec, ts.tv_nsec / 1000000,
            wan_grpc_log_level_name(level), line);
    fflush(stderr);
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct testd_stream *ts = arg;

    (void)fd;
    (void)what;
    wan_grpc_server_ship_resume(ts->st);
}

static int on_ship_open(void *arg, struct wan_grpc_ship_stream *st, const char *peer_site,
                        void **stream_arg)
{
    struct testd *td = arg;
    struct testd_stream *ts = calloc(1, sizeof(*ts));

    (void)peer_site;
    if (ts == NULL) {
        return WAN_GRPC_RESOURCE_EXHAUSTED;
    }
    ts->td = td;
    ts->st = st;
    ts->resume_ev = evtimer_new(td->base, resume_cb, ts);
    if (ts->resume_ev == NULL) {
        free(ts);
        return WAN_GRPC_RESOURCE_EXHAUSTED;
    }
    *stream_arg = ts;
    return 0;
}

static int on_ship_batch(void *arg, void *stream_arg, struct wan_grpc_ship_stream *st,
                         Geogate__Wan__V1__ShipRequest *req)
{
    struct testd *td = arg;
    struct testd_stream *ts = stream_arg;
    Geogate__Wan__V1__ShipAck ack = GEOGATE__WAN__V1__SHIP_ACK__INIT;
    char line[256];

    td->batches++;
    if (td->busy_every > 0 && td->batches % td->busy_every == 0 &&
        !evtimer_pending(ts->resume_ev, NULL)) {
        struct timeval tv = {0, 50000};

        td->batches++; /* so the same batch is taken when offered again */
        evtimer_add(ts->resume_ev, &tv);
        return WAN_GRPC_SHIP_BUSY;
    }
    ts->applied += req->n_mutations;
    if (req->last_seq != 0) {
        ack.acked_seq = req->last_seq; /* the batch covers [first_seq, last_seq] */
    } else if (req->n_mutations > 0) {
        ack.acked_seq = req->first_seq + req->n_mutations - 1;
    } else {
        ack.acked_seq = req->first_seq > 0 ? req->first_seq - 1 : 0;
    }
    ack.applied = ts->applied;
    snprintf(line, sizeof(line),
             "batch from %s gateway %u: first_seq %llu, %zu mutations, ack %llu", req->origin_site,
             (unsigned)req->gateway_id, (unsigned long long)req->first_seq, req->n_mutations,
             (unsigned long long)ack.acked_seq);
    testd_log(td, WAN_GRPC_LOG_INFO, line);
    geogate__wan__v1__ship_request__free_unpacked(req, NULL);
    wan_grpc_server_ship_ack(st, &ack);
    return WAN_GRPC_SHIP_TAKEN;
}

static void on_ship_end(void *arg, void *stream_arg, struct wan_grpc_ship_stream *st)
{
    (void)arg;
    (void)stream_arg;
    wan_grpc_server_ship_finish(st, WAN_GRPC_OK, NULL);
}

static void on_ship_closed(void *arg, void *stream_arg, struct wan_grpc_ship_stream *st,
                           int grpc_status, const char *why)
{
    struct testd_stream *ts = stream_arg;

    (void)arg;
    (void)st;
    (void)grpc_status;
    (void)why;
    event_free(ts->resume_ev);
    free(ts);
}

static void on_read(void *arg, struct wan_grpc_read_call *call, const char *peer_site,
                    Geogate__Wan__V1__ReadRequest *req)
{
    Geogate__Wan__V1__ReadResponse resp = GEOGATE__WAN__V1__READ_RESPONSE__INIT;
    Geogate__Wan__V1__ReadItem *items = NULL, **ptrs = NULL;
    char line[160];

    (void)peer_site;
    if (req->n_keys > 0) {
        items = calloc(req->n_keys, sizeof(*items));
        ptrs = calloc(req->n_keys, sizeof(*ptrs));
        if (items == NULL || ptrs == NULL) {
            free(items);
            free(ptrs);
            geogate__wan__v1__read_request__free_unpacked(req, NULL);
            wan_grpc_server_read_fail(call, WAN_GRPC_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
    }
    for (size_t i = 0; i < req->n_keys; i++) {
        geogate__wan__v1__read_item__init(&items[i]);
        items[i].found = 0;
        ptrs[i] = &items[i];
    }
    resp.n_items = req->n_keys;
    resp.items = ptrs;
    snprintf(line, sizeof(line), "read of %zu keys from %s: all not found", req->n_keys, peer_site);
    testd_log(arg, WAN_GRPC_LOG_INFO, line);
    wan_grpc_server_read_reply(call, &resp);
    free(items);
    free(ptrs);
    geogate__wan__v1__read_request__free_unpacked(req, NULL);
}

static int on_health(void *arg, const char *service)
{
    (void)arg;
    if (service[0] != '\0' && strcmp(service, "geogate.wan.v1.Replication") != 0) {
        return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
    }
    return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct testd *td = arg;

    (void)sig;
    (void)what;
    event_base_loopexit(td->base, NULL);
}

static void usage(void)
{
    fprintf(stderr, "usage: wan_testd --listen ADDR --ca CA --cert CERT --key KEY --peer SITE "
                    "[--peer SITE...] [--max-message BYTES] [--busy-every N] [-v]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *listen = NULL, *ca = NULL, *cert = NULL, *key = NULL;
    const char *peers[TESTD_MAX_PEERS];
    size_t npeers = 0;
    uint32_t max_message = 0;
    struct testd td;
    struct wan_grpc_server_config cfg;
    struct wan_grpc_server_callbacks cb;
    struct tls_ctx *tls;
    struct event *sigterm, *sigint;
    char err[256];
    uint16_t port = 0;
    int rc;

    memset(&td, 0, sizeof(td));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "-v") == 0) {
            td.verbose = 1;
            continue;
        }
        if (v == NULL) {
            usage();
        }
        i++;
        if (strcmp(a, "--listen") == 0) {
            listen = v;
        } else if (strcmp(a, "--ca") == 0) {
            ca = v;
        } else if (strcmp(a, "--cert") == 0) {
            cert = v;
        } else if (strcmp(a, "--key") == 0) {
            key = v;
        } else if (strcmp(a, "--peer") == 0 && npeers < TESTD_MAX_PEERS) {
            peers[npeers++] = v;
        } else if (strcmp(a, "--max-message") == 0) {
            max_message = (uint32_t)strtoul(v, NULL, 10);
        } else if (strcmp(a, "--busy-every") == 0) {
            td.busy_every = (unsigned)strtoul(v, NULL, 10);
        } else {
            usage();
        }
    }
    if (listen == NULL || ca == NULL || cert == NULL || key == NULL || npeers == 0) {
        usage();
    }
    signal(SIGPIPE, SIG_IGN);
    tls = tls_ctx_create(ca, cert, key, 1, peers, npeers, err, sizeof(err));
    if (tls == NULL) {
        fprintf(stderr, "wan_testd: TLS setup failed: %s\n", err);
        return 1;
    }
    td.base = event_base_new();
    if (td.base == NULL) {
        fprintf(stderr, "wan_testd: no event base\n");
        tls_ctx_destroy(tls);
        return 1;
    }
    memset(&cfg, 0, sizeof(cfg));
    cfg.tls = tls;
    cfg.max_message = max_message;
    cfg.log = testd_log;
    cfg.log_arg = &td;
    memset(&cb, 0, sizeof(cb));
    cb.ship_open = on_ship_open;
    cb.ship_batch = on_ship_batch;
    cb.ship_end = on_ship_end;
    cb.ship_closed = on_ship_closed;
    cb.read = on_read;
    cb.health = on_health;
    rc = wan_grpc_server_create(&td.srv, td.base, &cfg, &cb, &td);
    if (rc != 0) {
        fprintf(stderr, "wan_testd: server: %s\n", strerror(-rc));
        goto fail_server;
    }
    rc = wan_grpc_server_listen(td.srv, listen, &port);
    if (rc != 0) {
        fprintf(stderr, "wan_testd: cannot listen on %s: %s\n", listen, strerror(-rc));
        goto fail_listen;
    }
    sigterm = evsignal_new(td.base, SIGTERM, on_signal, &td);
    sigint = evsignal_new(td.base, SIGINT, on_signal, &td);
    evsignal_add(sigterm, NULL);
    evsignal_add(sigint, NULL);
    fprintf(stderr, "wan_testd: ready on port %u\n", (unsigned)port);
    fflush(stderr);
    event_base_dispatch(td.base);
    fprintf(stderr, "wan_testd: stopping\n");
    event_free(sigterm);
    event_free(sigint);
    wan_grpc_server_destroy(td.srv);
    event_base_free(td.base);
    tls_ctx_destroy(tls);
    return 0;

fail_listen:
    wan_grpc_server_destroy(td.srv);
fail_server:
    event_base_free(td.base);
    tls_ctx_destroy(tls);
    return 1;
}
