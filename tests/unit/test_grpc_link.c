/*
 * test_grpc_link — wan/grpc_client against wan/grpc_server over real TLS 1.3 on
 * loopback, both on one event_base in this process, with certificates made by
 * deploy/lab-ca.sh in a temporary directory.  Covers: link up, Ship batches and acks,
 * Read and Health calls, a clean ship_end; the client refusing a server whose
 * certificate names another site and being refused by a server that does not list it;
 * connect failures reported from the loop (and reconnecting from inside `down`);
 * back-pressure (-ENOBUFS, zero window, `writable`) while the server's application is
 * busy; call deadlines; the server going away with calls in flight.  Backfill on a link
 * without a Ship stream: 200 batches in order through the server's -ENOBUFS /
 * backfill_writable cycle, then OK; a cancel from inside the batch callback (and right
 * after the start) reaching the server; the server going away mid-stream.  One thread.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include <event2/event.h>

#include "proto/geogate_wan.pb-c.h"
#include "proto/health.pb-c.h"
#include "tls/tls.h"
#include "wan/grpc.h"
#include "wan/grpc_client.h"
#include "wan/grpc_server.h"

static char certdir[256];

/* ---- state shared by the callbacks ---------------------------------------------------------- */

struct world {
    struct event_base *base;
    struct wan_grpc_server *srv;
    struct wan_grpc_client *cli;
    struct tls_ctx *srv_tls, *cli_tls;
    uint16_t port;
    /* server application */
    int busy;
    int batches;
    struct wan_grpc_ship_stream *st;
    struct wan_grpc_read_call *call;
    int answer_reads;
    char server_log[4096];
    /* client application */
    int ups, downs, down_status;
    char down_reason[512];
    uint64_t acked;
    int acks;
    int writables;
    int reconnects_left;
    int read_done, read_status;
    size_t read_items;
    int health_done, health_status, health_serving;
    /* Backfill, server application */
    uint32_t backfill_high;
    int bf_total;       /* batches per call */
    int bf_stall_after; /* send this many, then nothing more (0: all of them) */
    struct wan_grpc_backfill_call *bf_call;
    int bf_next; /* next batch number */
    int bf_finished;
    int bf_opens, bf_closes, bf_close_status, bf_writables, bf_enobufs;
    /* Backfill, client application */
    int no_ship;
    uint32_t cli_max_message;
    struct wan_grpc_client_backfill *cb_call;
    int cb_batches;
    int cb_cancel_at; /* cancel from inside the batch callback at this batch (0: never) */
    int cb_cancelled;
    int cb_done, cb_status;
    char cb_message[256];
};

static struct world w;

static void log_cb(void *arg, enum wan_grpc_log_level level, const char *line)
{
    (void)arg;
    if (getenv("TEST_VERBOSE") != NULL) {
        fprintf(stderr, "[%s] %s\n", wan_grpc_log_level_name(level), line);
    }
    if (strlen(w.server_log) + strlen(line) + 2 < sizeof(w.server_log)) {
        strcat(w.server_log, line);
        strcat(w.server_log, "\n");
    }
}

static int s_open(void *arg, struct wan_grpc_ship_stream *st, const char *peer_site,
                  void **stream_arg)
{
    (void)arg;
    (void)stream_arg;
    assert_string_equal(peer_site, "eu-west");
    w.st = st;
    return 0;
}

static int s_batch(void *arg, void *stream_arg, struct wan_grpc_ship_stream *st,
                   Geogate__Wan__V1__ShipRequest *req)
{
    Geogate__Wan__V1__ShipAck ack = GEOGATE__WAN__V1__SHIP_ACK__INIT;

    (void)arg;
    (void)stream_arg;
    if (w.busy) {
        return WAN_GRPC_SHIP_BUSY;
    }
    w.batches++;
    ack.acked_seq = req->first_seq + req->n_mutations - 1;
    geogate__wan__v1__ship_request__free_unpacked(req, NULL);
    assert_int_equal(wan_grpc_server_ship_ack(st, &ack), 0);
    return WAN_GRPC_SHIP_TAKEN;
}

static void s_closed(void *arg, void *stream_arg, struct wan_grpc_ship_stream *st, int status,
                     const char *why)
{
    (void)arg;
    (void)stream_arg;
    (void)st;
    (void)status;
    (void)why;
    w.st = NULL;
}

static void s_read(void *arg, struct wan_grpc_read_call *call, const char *peer_site,
                   Geogate__Wan__V1__ReadRequest *req)
{
    Geogate__Wan__V1__ReadResponse resp = GEOGATE__WAN__V1__READ_RESPONSE__INIT;
    Geogate__Wan__V1__ReadItem items[4], *ptrs[4];

    (void)arg;
    (void)peer_site;
    if (!w.answer_reads) {
        w.call = call;
        geogate__wan__v1__read_request__free_unpacked(req, NULL);
        return;
    }
    assert_true(req->n_keys <= 4);
    for (size_t i = 0; i < req->n_keys; i++) {
        geogate__wan__v1__read_item__init(&items[i]);
        ptrs[i] = &items[i];
    }
    resp.n_items = req->n_keys;
    resp.items = ptrs;
    geogate__wan__v1__read_request__free_unpacked(req, NULL);
    assert_int_equal(wan_grpc_server_read_reply(call, &resp), 0);
}

/* 200 batches of ~100 KB: each call moves more than the client's 16 MiB connection
 * window and many times its 1 MiB Backfill stream window, so it only completes if the
 * client gives window back as it takes batches. */
#define BF_ITEMS 4
#define BF_VALUE 25000

/* Queue batches until the queue is full, the stall point or the end (then finish). */
static void s_bf_produce(struct wan_grpc_backfill_call *call)
{
    static uint8_t value[BF_VALUE];
    Geogate__Wan__V1__Mutation m[BF_ITEMS], *mp[BF_ITEMS];
    char key[BF_ITEMS][32], cursor[32];

    while (w.bf_next < w.bf_total && (w.bf_stall_after == 0 || w.bf_next < w.bf_stall_after)) {
        Geogate__Wan__V1__BackfillBatch b = GEOGATE__WAN__V1__BACKFILL_BATCH__INIT;
        int rc;

        for (int i = 0; i < BF_ITEMS; i++) {
            geogate__wan__v1__mutation__init(&m[i]);
            snprintf(key[i], sizeof(key[i]), "key-%d-%d", w.bf_next, i);
            m[i].key.data = (uint8_t *)key[i];
            m[i].key.len = strlen(key[i]);
            m[i].value.data = value;
            m[i].value.len = sizeof(value);
            mp[i] = &m[i];
        }
        snprintf(cursor, sizeof(cursor), "cursor-%d", w.bf_next);
        b.n_items = BF_ITEMS;
        b.items = mp;
        b.cursor.data = (uint8_t *)cursor;
        b.cursor.len = strlen(cursor);
        b.listed = (uint64_t)(w.bf_next + 1) * BF_ITEMS;
        rc = wan_grpc_server_backfill_send(call, &b);
        if (rc == -ENOBUFS) {
            w.bf_enobufs++;
            return; /* backfill_writable comes back */
        }
        assert_int_equal(rc, 0);
        w.bf_next++;
    }
    if (w.bf_next == w.bf_total && !w.bf_finished) {
        w.bf_finished = 1;
        assert_int_equal(wan_grpc_server_backfill_finish(call, WAN_GRPC_OK, NULL), 0);
    }
}

static int s_bf_open(void *arg, struct wan_grpc_backfill_call *call, const char *peer_site,
                     Geogate__Wan__V1__BackfillRequest *req, void **call_arg)
{
    (void)arg;
    assert_string_equal(peer_site, "eu-west");
    assert_int_equal(req->prefix.len, 4);
    assert_memory_equal(req->prefix.data, "key-", 4);
    geogate__wan__v1__backfill_request__free_unpacked(req, NULL);
    w.bf_opens++;
    w.bf_call = call;
    w.bf_next = 0;
    w.bf_finished = 0;
    *call_arg = &w;
    s_bf_produce(call);
    return 0;
}

static void s_bf_writable(void *arg, void *call_arg, struct wan_grpc_backfill_call *call)
{
    (void)arg;
    assert_ptr_equal(call_arg, &w);
    assert_ptr_equal(call, w.bf_call);
    w.bf_writables++;
    s_bf_produce(call);
}

static void s_bf_closed(void *arg, void *call_arg, struct wan_grpc_backfill_call *call, int status,
                        const char *why)
{
    (void)arg;
    (void)why;
    assert_ptr_equal(call_arg, &w);
    assert_ptr_equal(call, w.bf_call);
    w.bf_closes++;
    w.bf_close_status = status;
    w.bf_call = NULL;
}

static void c_bf_batch(void *arg, const Geogate__Wan__V1__BackfillBatch *b)
{
    char cursor[32];

    assert_ptr_equal(arg, &w);
    assert_false(w.cb_cancelled); /* nothing after a cancel */
    snprintf(cursor, sizeof(cursor), "cursor-%d", w.cb_batches);
    assert_int_equal(b->cursor.len, strlen(cursor)); /* in order, none lost */
    assert_memory_equal(b->cursor.data, cursor, b->cursor.len);
    assert_int_equal(b->listed, (uint64_t)(w.cb_batches + 1) * BF_ITEMS);
    assert_int_equal(b->n_items, BF_ITEMS);
    assert_int_equal(b->items[BF_ITEMS - 1]->value.len, BF_VALUE);
    w.cb_batches++;
    if (w.cb_cancel_at > 0 && w.cb_batches == w.cb_cancel_at) {
        assert_int_equal(wan_grpc_client_backfill_cancel(w.cb_call), 0);
        assert_int_equal(wan_grpc_client_backfill_cancel(w.cb_call), 0); /* a no-op */
        w.cb_cancelled = 1;
    }
}

static void c_bf_done(void *arg, int status, const char *message)
{
    assert_ptr_equal(arg, &w);
    w.cb_done++;
    w.cb_status = status;
    snprintf(w.cb_message, sizeof(w.cb_message), "%s", message);
    w.cb_call = NULL;
}

static void c_up(void *arg, const char *peer_site)
{
    (void)arg;
    assert_string_equal(peer_site, "us-east");
    w.ups++;
}

static void c_down(void *arg, int status, const char *reason)
{
    (void)arg;
    w.downs++;
    w.down_status = status;
    snprintf(w.down_reason, sizeof(w.down_reason), "%s", reason);
    if (w.reconnects_left > 0) {
        w.reconnects_left--;
        assert_int_equal(wan_grpc_client_connect(w.cli), 0); /* allowed inside down */
    }
}

static void c_ack(void *arg, const Geogate__Wan__V1__ShipAck *ack)
{
    (void)arg;
    w.acks++;
    w.acked = ack->acked_seq;
}

static void c_writable(void *arg)
{
    (void)arg;
    w.writables++;
}

static void read_done(void *arg, int status, const char *message,
                      Geogate__Wan__V1__ReadResponse *resp)
{
    (void)arg;
    (void)message;
    w.read_done++;
    w.read_status = status;
    if (resp != NULL) {
        w.read_items = resp->n_items;
        geogate__wan__v1__read_response__free_unpacked(resp, NULL);
    }
}

static void health_done(void *arg, int status, const char *message, int serving)
{
    (void)arg;
    (void)message;
    w.health_done++;
    w.health_status = status;
    w.health_serving = serving;
}

/* ---- set-up --------------------------------------------------------------------------------- */

static char *path(const char *name)
{
    static char buf[8][320];
    static int i;

    i = (i + 1) % 8;
    snprintf(buf[i], sizeof(buf[i]), "%s/%s", certdir, name);
    return buf[i];
}

static int group_setup(void **state)
{
    char cmd[600];

    (void)state;
    snprintf(certdir, sizeof(certdir), "/tmp/test_grpc_link.XXXXXX");
    if (mkdtemp(certdir) == NULL) {
        return -1;
    }
    snprintf(cmd, sizeof(cmd), "../../deploy/lab-ca.sh %s us-east eu-west ap-south", certdir);
    return system(cmd) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    char cmd[400];

    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf %s", certdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void world_server(const char *const *allowed, size_t nallowed, uint32_t max_message)
{
    struct wan_grpc_server_config cfg;
    struct wan_grpc_server_callbacks cb;
    char err[256];

    w.srv_tls = tls_ctx_create(path("ca.pem"), path("us-east.pem"), path("us-east.key"), 1, allowed,
                               nallowed, err, sizeof(err));
    assert_non_null(w.srv_tls);
    memset(&cfg, 0, sizeof(cfg));
    cfg.tls = w.srv_tls;
    cfg.max_message = max_message;
    cfg.log = log_cb;
    memset(&cb, 0, sizeof(cb));
    cb.ship_open = s_open;
    cb.ship_batch = s_batch;
    cb.ship_closed = s_closed;
    cb.read = s_read;
    cb.backfill_open = s_bf_open;
    cb.backfill_writable = s_bf_writable;
    cb.backfill_closed = s_bf_closed;
    cfg.backfill_high = w.backfill_high;
    assert_int_equal(wan_grpc_server_create(&w.srv, w.base, &cfg, &cb, NULL), 0);
    assert_int_equal(wan_grpc_server_listen(w.srv, "127.0.0.1:0", &w.port), 0);
    assert_true(w.port > 0);
}

static void world_client(const char *dial_site, uint16_t port, uint32_t ship_high)
{
    static const char *const peers[] = {"us-east", "ap-south"};
    struct wan_grpc_client_config cfg;
    struct wan_grpc_client_callbacks cb;
    char err[256], addr[64];

    w.cli_tls = tls_ctx_create(path("ca.pem"), path("eu-west.pem"), path("eu-west.key"), 0, peers,
                               2, err, sizeof(err));
    assert_non_null(w.cli_tls);
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", (unsigned)port);
    memset(&cfg, 0, sizeof(cfg));
    cfg.tls = w.cli_tls;
    cfg.peer_site = dial_site;
    cfg.address = addr;
    cfg.connect_timeout_ms = 3000;
    cfg.ship_high = ship_high;
    cfg.no_ship = w.no_ship;
    cfg.max_message = w.cli_max_message;
    cfg.log = log_cb;
    memset(&cb, 0, sizeof(cb));
    cb.up = c_up;
    cb.down = c_down;
    cb.ship_ack = c_ack;
    cb.writable = c_writable;
    assert_int_equal(wan_grpc_client_create(&w.cli, w.base, &cfg, &cb, NULL), 0);
}

static void world_init(void)
{
    memset(&w, 0, sizeof(w));
    w.answer_reads = 1;
    w.base = event_base_new();
    assert_non_null(w.base);
}

static void world_free(void)
{
    wan_grpc_client_destroy(w.cli);
    wan_grpc_server_destroy(w.srv);
    /* Let closing sockets and deferred events finish (nothing may be left over). */
    event_base_loop(w.base, EVLOOP_NONBLOCK);
    tls_ctx_destroy(w.cli_tls);
    tls_ctx_destroy(w.srv_tls);
    event_base_free(w.base);
}

static long long now_ms(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* Run the loop until *flag >= want, or fail after 5 s. */
static void run_until(const int *flag, int want)
{
    long long deadline = now_ms() + 5000;
    struct timeval tick = {0, 20000};

    while (*flag < want) {
        assert_true(now_ms() < deadline);
        event_base_loopexit(w.base, &tick);
        event_base_loop(w.base, EVLOOP_ONCE);
    }
}

static void run_for(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    event_base_loopexit(w.base, &tv);
    event_base_dispatch(w.base);
}

static void ship(uint64_t first_seq, size_t nmut, size_t value_len, int expect)
{
    Geogate__Wan__V1__ShipRequest req = GEOGATE__WAN__V1__SHIP_REQUEST__INIT;
    Geogate__Wan__V1__Mutation m[64], *mp[64];
    static uint8_t value[4096];

    assert_true(nmut <= 64 && value_len <= sizeof(value));
    for (size_t i = 0; i < nmut; i++) {
        geogate__wan__v1__mutation__init(&m[i]);
        m[i].key.data = (uint8_t *)"key";
        m[i].key.len = 3;
        m[i].value.data = value;
        m[i].value.len = value_len;
        mp[i] = &m[i];
    }
    req.origin_site = "eu-west";
    req.first_seq = first_seq;
    req.n_mutations = nmut;
    req.mutations = mp;
    assert_int_equal(wan_grpc_client_ship(w.cli, &req), expect);
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_link_ship_read_health(void **state)
{
    static const char *const allowed[] = {"eu-west"};
    Geogate__Wan__V1__ReadRequest rr = GEOGATE__WAN__V1__READ_REQUEST__INIT;
    ProtobufCBinaryData keys[3] = {{1, (uint8_t *)"a"}, {1, (uint8_t *)"b"}, {1, (uint8_t *)"c"}};

    (void)state;
    world_init();
    world_server(allowed, 1, 0);
    world_client("us-east", w.port, 0);
    assert_int_equal(wan_grpc_client_is_up(w.cli), 0);
    ship(1, 1, 1, -ENOTCONN);
    assert_int_equal(wan_grpc_client_connect(w.cli), 0);
    assert_int_equal(wan_grpc_client_connect(w.cli), -EALREADY);
    run_until(&w.ups, 1);
    assert_true(wan_grpc_client_is_up(w.cli));
    /* `up` waits for the server's SETTINGS, sent once it has accepted us. */
    assert_int_equal(wan_grpc_server_connections(w.srv), 1);
    ship(1, 10, 100, 0);
    ship(11, 10, 100, 0);
    ship(21, 5, 100, 0);
    run_until(&w.acks, 3);
    assert_int_equal(w.acked, 25);
    assert_int_equal(w.batches, 3);
    assert_int_equal(wan_grpc_client_ship_queued(w.cli), 0);
    assert_true(wan_grpc_client_ship_window(w.cli) > 0);

    rr.n_keys = 3;
    rr.keys = keys;
    assert_int_equal(wan_grpc_client_read(w.cli, &rr, 2000, read_done, NULL), 0);
    assert_int_equal(wan_grpc_client_health(w.cli, NULL, 2000, health_done, NULL), 0);
    run_until(&w.read_done, 1);
    run_until(&w.health_done, 1);
    assert_int_equal(w.read_status, WAN_GRPC_OK);
    assert_int_equal(w.read_items, 3);
    assert_int_equal(w.health_status, WAN_GRPC_OK);
    assert_int_equal(w.health_serving,
                     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);

    /* A clean end: the server's default ship_end finishes with OK. */
    assert_int_equal(wan_grpc_client_ship_end(w.cli), 0);
    ship(26, 1, 1, -ENOTCONN);
    run_until(&w.downs, 1);
    assert_int_equal(w.down_status, WAN_GRPC_OK);
    assert_non_null(strstr(w.down_reason, "Ship stream finished"));
    assert_false(wan_grpc_client_is_up(w.cli));
    world_free();
}

static void test_link_wrong_site(void **state)
{
    static const char *const allowed[] = {"eu-west"};

    (void)state;
    world_init();
    world_server(allowed, 1, 0);
    world_client("ap-south", w.port, 0); /* but the server's certificate names us-east */
    assert_int_equal(wan_grpc_client_connect(w.cli), 0);
    run_until(&w.downs, 1);
    assert_int_equal(w.ups, 0);
    assert_int_equal(w.down_status, WAN_GRPC_UNAVAILABLE);
    assert_non_null(strstr(w.down_reason, "refused"));
    assert_non_null(strstr(w.down_reason, "us-east"));
    world_free();
}

static void test_link_not_a_peer(void **state)
{
    static const char *const allowed[] = {"ap-south"}; /* not eu-west */

    (void)state;
    world_init();
    world_server(allowed, 1, 0);
    world_client("us-east", w.port, 0);
    assert_int_equal(wan_grpc_client_connect(w.cli), 0);
    run_until(&w.downs, 1);
    assert_int_equal(w.ups, 0);
    assert_non_null(
        strstr(w.server_log, "certificate names eu-west, which is not a configured peer"));
    assert_non_null(strstr(w.down_reason, "refused: alert from peer"));
    world_free();
}

static void test_link_connect_refused(void **state)
{
    static const char *const allowed[] = {"eu-west"};
    uint16_t port;

    (void)state;
    world_init();
    world_server(allowed, 1, 0);
    port = w.port;
    wan_grpc_server_destroy(w.srv); /* nothing listens there now */
    w.srv = NULL;
    world_client("us-east", port, 0);
    w.reconnects_left = 2;
    assert_int_equal(wan_grpc_client_connect(w.cli), 0);
    assert_int_equal(w.downs, 0); /* never inside connect() */
    run_until(&w.downs, 3);
    assert_int_equal(w.down_status, WAN_GRPC_UNAVAILABLE);
    assert_non_null(strstr(w.down_reason, "Connection refused"));
    assert_int_equal(wan_grpc_client_close(w.cli, "x"), -ENOTCONN);

    /* close() while connecting is reported as down too. */
    assert_int_equal(wan_grpc_client_connect(w.cli), 0);
    assert_int_equal(wan_grpc_client_close(w.cli, "changed my mind"), 0);
    run_until(&w.downs, 4);
    world_free();
}

static void test_link_backpressure(void **state)
{
    static const char *const allowed[] = {"eu-west"};
    int refused = 0, shipped = 0;

    (void)state;
    world_init();
    world_server(allowed, 1, 16384); /* stream window: the 64 KiB minimum */
    world_client("us-east", w.port, 32768);
    assert_int_equal(wan_grpc_client_connect(w.cli), 0);
    run_until(&w.ups, 1);
    w.busy = 1;
    /* ~4 KiB batches: the window takes ~16, the queue ~8 more, then -ENOBUFS. */
    for (int i = 0; i < 200 && !refused; i++) {
        Geogate__Wan__V1__ShipRequest req = GEOGATE__WAN__V1__SHIP_REQUEST__INIT;

        (void)req;
        run_for(5);
        if (wan_grpc_client_ship_queued(w.cli) >= 32768) {
            ship((uint64_t)i + 1, 1, 4000, -ENOBUFS);
            refused = 1;
            break;
        }
        ship((uint64_t)i + 1, 1, 4000, 0);
        shipped++;
    }
    assert_true(refused);
    run_for(100);
    assert_int_equal(wan_grpc_client_ship_window(w.cli), 0);
    assert_true(wan_grpc_client_ship_queued(w.cli) >= 32768);
    assert_int_equal(w.batches, 0);
    assert_int_equal(w.writables, 0);

    w.busy = 0;
    assert_int_equal(wan_grpc_server_ship_resume(w.st), 0);
    run_until(&w.writables, 1);
    run_until(&w.acks, shipped);
    assert_int_equal(w.batches, shipped);
    assert_int_equal(w.acked, (uint64_t)shipped);
    assert_int_equal(wan_grpc_client_ship_queued(w.cli), 0);
    world_free();
}

static void test_link_deadline_and_server_gone(void **state)
{
    static const char *const allowed[] = {"eu-west"};
    Geogate__Wan__V1__ReadRequest rr = GEOGATE__WAN__V1__READ_REQUEST__INIT;
    Geogate__Wan__V1__ReadResponse resp = GEOGATE__WAN__V1__READ_RESPONSE__INIT;

    (void)state;
    world_init();
    world_server(allowed, 1, 0);
    world_client("us-east", w.port, 0);
    w.answer_reads = 0;
    assert_int_equal(wan_grpc_client_connect(w.cli), 0);
    run_until(&w.ups, 1);
    assert_int_equal(wan_grpc_client_read(w.cli, &rr, 100, read_done, NULL), 0);
    run_until(&w.read_done, 1);
    assert_int_equal(w.read_status, WAN_GRPC_DEADLINE_EXCEEDED);
    run_for(50); /* the CANCEL reaches the server */
    assert_non_null(w.call);
    assert_int_equal(wan_grpc_server_read_reply(w.call, &resp), -ENOTCONN);
    w.call = NULL;

    /* The server goes away with a call in flight: the call fails, the link goes down. */
    assert_int_equal(wan_grpc_client_read(w.cli, &rr, 0, read_done, NULL), 0);
    run_for(50);
    assert_non_null(w.call);
    wan_grpc_server_destroy(w.srv);
    w.srv = NULL;
    run_until(&w.downs, 1);
    assert_int_equal(w.read_done, 2);
    assert_int_equal(w.read_status, WAN_GRPC_UNAVAILABLE);
    assert_int_equal(w.down_status, WAN_GRPC_UNAVAILABLE);
    world_free();
}

static void test_link_close_and_destroy(void **state)
{
    static const char *const allowed[] = {"eu-west"};
    Geogate__Wan__V1__ReadRequest rr = GEOGATE__WAN__V1__READ_REQUEST__INIT;

    (void)state;
    world_init();
    world_server(allowed, 1, 0);
    world_client("us-east", w.port, 0);
    assert_int_equal(wan_grpc_client_connect(w.cli), 0);
    run_until(&w.ups, 1);
    assert_int_equal(wan_grpc_client_close(w.cli, "operator"), 0);
    assert_false(wan_grpc_client_is_up(w.cli));
    run_until(&w.downs, 1);
    assert_non_null(strstr(w.down_reason, "operator"));
    /* Reconnect, then destroy with a call in flight: CANCELLED, no down. */
    w.answer_reads = 0;
    assert_int_equal(wan_grpc_client_connect(w.cli), 0);
    run_until(&w.ups, 2);
    assert_int_equal(wan_grpc_client_read(w.cli, &rr, 0, read_done, NULL), 0);
    run_for(30);
    wan_grpc_client_destroy(w.cli);
    w.cli = NULL;
    assert_int_equal(w.read_done, 1);
    assert_int_equal(w.read_status, WAN_GRPC_CANCELLED);
    assert_int_equal(w.downs, 1);
    run_for(50); /* the server notices */
    world_free();
}

/* Start a Backfill call for keys under "key-". */
static void backfill_start(void)
{
    Geogate__Wan__V1__BackfillRequest req = GEOGATE__WAN__V1__BACKFILL_REQUEST__INIT;

    req.prefix.data = (uint8_t *)"key-";
    req.prefix.len = 4;
    w.cb_batches = 0;
    w.cb_cancelled = 0;
    assert_int_equal(wan_grpc_client_backfill(w.cli, &req, c_bf_batch, c_bf_done, &w, &w.cb_call),
                     0);
}

static void backfill_link_up(void)
{
    static const char *const allowed[] = {"eu-west"};

    world_init();
    w.no_ship = 1;
    w.backfill_high = 64u << 10; /* under one batch: the server's application waits often */
    w.bf_total = 200;
    w.cli_max_message = 256u << 10; /* stream window 256 KiB: raised to 1 MiB for Backfill */
    world_server(allowed, 1, 0);
    world_client("us-east", w.port, 0);
    assert_int_equal(wan_grpc_client_connect(w.cli), 0);
    run_until(&w.ups, 1);
}

static void test_link_backfill(void **state)
{
    Geogate__Wan__V1__BackfillRequest req = GEOGATE__WAN__V1__BACKFILL_REQUEST__INIT;
    Geogate__Wan__V1__ReadRequest rr = GEOGATE__WAN__V1__READ_REQUEST__INIT;
    struct wan_grpc_client_backfill *call;

    (void)state;
    backfill_link_up();
    /* No Ship stream on this link. */
    assert_true(wan_grpc_client_is_up(w.cli));
    ship(1, 1, 1, -ENOTCONN);
    assert_int_equal(wan_grpc_client_ship_end(w.cli), -ENOTCONN);
    assert_int_equal(wan_grpc_client_ship_window(w.cli), 0);
    assert_int_equal(wan_grpc_client_backfill(w.cli, &req, c_bf_batch, NULL, &w, &call), -EINVAL);

    backfill_start();
    run_until(&w.cb_done, 1);
    assert_int_equal(w.cb_status, WAN_GRPC_OK);
    assert_int_equal(w.cb_batches, 200);
    run_until(&w.bf_closes, 1);
    assert_int_equal(w.bf_close_status, WAN_GRPC_OK);
    assert_int_equal(w.bf_opens, 1);
    assert_true(w.bf_enobufs > 0);
    assert_true(w.bf_writables > 0);
    assert_null(w.st); /* the server never saw a Ship stream */

    /* The link serves Read as well, and stays up without a Ship stream. */
    assert_int_equal(wan_grpc_client_read(w.cli, &rr, 2000, read_done, NULL), 0);
    run_until(&w.read_done, 1);
    assert_int_equal(w.read_status, WAN_GRPC_OK);
    run_for(30);
    assert_int_equal(w.downs, 0);
    assert_true(wan_grpc_client_is_up(w.cli));
    assert_int_equal(wan_grpc_client_close(w.cli, "done"), 0);
    run_until(&w.downs, 1);
    assert_int_equal(w.down_status, WAN_GRPC_UNAVAILABLE);
    assert_int_equal(wan_grpc_client_backfill(w.cli, &req, c_bf_batch, c_bf_done, &w, &call),
                     -ENOTCONN);
    world_free();
}

static void test_link_backfill_cancel(void **state)
{
    (void)state;
    backfill_link_up();
    /* The server sends 5 batches and waits; the client cancels inside the 5th. */
    w.bf_stall_after = 5;
    w.cb_cancel_at = 5;
    backfill_start();
    run_until(&w.cb_done, 1);
    assert_int_equal(w.cb_status, WAN_GRPC_CANCELLED);
    assert_int_equal(w.cb_batches, 5);
    run_until(&w.bf_closes, 1);
    assert_int_equal(w.bf_close_status, WAN_GRPC_CANCELLED);

    /* Cancelled before its HEADERS even left: done still comes, from the loop. */
    w.cb_cancel_at = 0;
    backfill_start();
    assert_int_equal(wan_grpc_client_backfill_cancel(w.cb_call), 0);
    w.cb_cancelled = 1;
    assert_int_equal(w.cb_done, 1);
    run_until(&w.cb_done, 2);
    assert_int_equal(w.cb_status, WAN_GRPC_CANCELLED);
    run_for(50);
    assert_int_equal(w.bf_closes, w.bf_opens); /* if it got there at all, it is closed */

    /* The link is still good for a whole call. */
    w.bf_stall_after = 0;
    backfill_start();
    run_until(&w.cb_done, 3);
    assert_int_equal(w.cb_status, WAN_GRPC_OK);
    assert_int_equal(w.cb_batches, 200);
    assert_int_equal(w.downs, 0);

    /* Destroying the client with a call in flight: done with CANCELLED, no down. */
    w.bf_stall_after = 3;
    backfill_start();
    run_until(&w.cb_batches, 3);
    wan_grpc_client_destroy(w.cli);
    w.cli = NULL;
    assert_int_equal(w.cb_done, 4);
    assert_int_equal(w.cb_status, WAN_GRPC_CANCELLED);
    assert_int_equal(w.downs, 0);
    run_until(&w.bf_closes, w.bf_opens);
    world_free();
}

static void test_link_backfill_server_gone(void **state)
{
    (void)state;
    backfill_link_up();
    w.bf_stall_after = 5;
    backfill_start();
    run_until(&w.cb_batches, 5);
    run_for(30);
    assert_int_equal(w.cb_done, 0);
    wan_grpc_server_destroy(w.srv); /* backfill_closed runs inside */
    w.srv = NULL;
    assert_int_equal(w.bf_closes, 1);
    assert_int_equal(w.bf_close_status, WAN_GRPC_UNAVAILABLE);
    run_until(&w.cb_done, 1);
    assert_int_equal(w.cb_status, WAN_GRPC_UNAVAILABLE);
    assert_non_null(strstr(w.cb_message, "link down"));
    assert_int_equal(w.cb_batches, 5);
    run_until(&w.downs, 1);
    assert_int_equal(w.down_status, WAN_GRPC_UNAVAILABLE);
    world_free();
}

int main(void)
{
    /* OpenSSL writes with write(2): a peer that went away must not kill us (the gateway
     * ignores SIGPIPE the same way). */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_link_ship_read_health),
        cmocka_unit_test(test_link_wrong_site),
        cmocka_unit_test(test_link_not_a_peer),
        cmocka_unit_test(test_link_connect_refused),
        cmocka_unit_test(test_link_backpressure),
        cmocka_unit_test(test_link_deadline_and_server_gone),
        cmocka_unit_test(test_link_close_and_destroy),
        cmocka_unit_test(test_link_backfill),
        cmocka_unit_test(test_link_backfill_cancel),
        cmocka_unit_test(test_link_backfill_server_gone),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
