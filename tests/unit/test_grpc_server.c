/*
 * test_grpc_server — unit tests for wan/grpc_server's HTTP/2 + gRPC layer, without
 * sockets or TLS: an nghttp2 client session in this file talks to a memory-mode server
 * connection (wan_grpc_server_mem_open, as if the handshake had verified "eu-west").
 * Covers the Ship stream (batches in order, acks, half-close, trailers), every refusal
 * (origin_site mismatch, malformed protobuf, oversized, compressed flag, truncated,
 * unknown method, bad content-type, grpc-encoding), Health, asynchronous Read (also
 * after the caller went away), and flow control as back-pressure (a BUSY application
 * stops the peer's window; resume delivers the rest in order).  Backfill calls: batches
 * out in order and trailers after them, refusal, bad requests, the caller's window
 * bounding what leaves the queue (-ENOBUFS, backfill_writable), a reset by the caller
 * and a lost connection.  One thread, one event_base driven with EVLOOP_NONBLOCK.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "proto/geogate_wan.pb-c.h"
#include "proto/health.pb-c.h"
#include "wan/grpc.h"
#include "wan/grpc_frame.h"
#include "wan/grpc_server.h"

#define MAX_STREAMS 8
#define MAX_MSGS 256

/* ---- the application side of the server -------------------------------------------------- */

struct app {
    int opens;
    int refuse_open; /* status ship_open returns */
    int batches;
    uint64_t first_seqs[MAX_MSGS];
    int busy;     /* ship_batch answers BUSY while set */
    int offers;   /* ship_batch calls, BUSY ones included */
    int auto_ack; /* ack each batch at once */
    int big_ack;  /* ...with every field at its largest */
    int ack_rc;
    int ends;
    int closes;
    int close_status;
    char close_why[256];
    struct wan_grpc_ship_stream *st;
    struct wan_grpc_read_call *call;
    Geogate__Wan__V1__ReadRequest *read_req;
    char health_service[64];
    int logs_warn;
    char last_warn[512];
    /* Backfill */
    int bf_opens;
    int bf_refuse;       /* status backfill_open returns */
    int bf_send_in_open; /* batches backfill_open sends before accepting */
    int bf_finish_in_open;
    int bf_finish_on_writable;
    char bf_prefix[32];
    uint32_t bf_rate;
    struct wan_grpc_backfill_call *bf_call;
    int bf_sent; /* batches queued so far (their `listed` numbers count up from 0) */
    int bf_writables;
    size_t bf_queued_at_writable;
    int bf_closes;
    int bf_close_status;
    char bf_close_why[256];
};

static struct app app;

static void test_log(void *arg, enum wan_grpc_log_level level, const char *line)
{
    (void)arg;
    if (level <= WAN_GRPC_LOG_WARN) {
        app.logs_warn++;
        snprintf(app.last_warn, sizeof(app.last_warn), "%s", line);
    }
    if (getenv("TEST_VERBOSE") != NULL) {
        fprintf(stderr, "[%s] %s\n", wan_grpc_log_level_name(level), line);
    }
}

static int on_ship_open(void *arg, struct wan_grpc_ship_stream *st, const char *peer_site,
                        void **stream_arg)
{
    (void)arg;
    assert_string_equal(peer_site, "eu-west");
    assert_string_equal(wan_grpc_server_ship_peer(st), "eu-west");
    if (app.refuse_open) {
        return app.refuse_open;
    }
    app.opens++;
    app.st = st;
    *stream_arg = &app;
    return 0;
}

static int on_ship_batch(void *arg, void *stream_arg, struct wan_grpc_ship_stream *st,
                         Geogate__Wan__V1__ShipRequest *req)
{
    (void)arg;
    assert_ptr_equal(stream_arg, &app);
    app.offers++;
    if (app.busy) {
        return WAN_GRPC_SHIP_BUSY;
    }
    assert_string_equal(req->origin_site, "eu-west");
    if (app.batches < MAX_MSGS) {
        app.first_seqs[app.batches] = req->first_seq;
    }
    app.batches++;
    if (app.auto_ack) {
        Geogate__Wan__V1__ShipAck ack = GEOGATE__WAN__V1__SHIP_ACK__INIT;

        ack.acked_seq = req->first_seq + req->n_mutations - 1;
        ack.applied = (uint64_t)app.batches;
        if (app.big_ack) {
            ack.acked_seq = ack.applied = ack.rejected_older = UINT64_MAX;
        }
        app.ack_rc = wan_grpc_server_ship_ack(st, &ack);
        assert_true(app.ack_rc == 0 || app.big_ack);
    }
    geogate__wan__v1__ship_request__free_unpacked(req, NULL);
    return WAN_GRPC_SHIP_TAKEN;
}

static void on_ship_end(void *arg, void *stream_arg, struct wan_grpc_ship_stream *st)
{
    (void)arg;
    (void)stream_arg;
    app.ends++;
    assert_int_equal(wan_grpc_server_ship_finish(st, WAN_GRPC_OK, NULL), 0);
    assert_int_equal(wan_grpc_server_ship_finish(st, WAN_GRPC_OK, NULL), -EPIPE);
}

static void on_ship_closed(void *arg, void *stream_arg, struct wan_grpc_ship_stream *st,
                           int grpc_status, const char *why)
{
    (void)arg;
    (void)stream_arg;
    assert_ptr_equal(st, app.st);
    app.closes++;
    app.close_status = grpc_status;
    snprintf(app.close_why, sizeof(app.close_why), "%s", why);
    app.st = NULL;
}

static void on_read(void *arg, struct wan_grpc_read_call *call, const char *peer_site,
                    Geogate__Wan__V1__ReadRequest *req)
{
    (void)arg;
    assert_string_equal(peer_site, "eu-west");
    app.call = call;
    app.read_req = req;
}

static int on_health(void *arg, const char *service)
{
    (void)arg;
    snprintf(app.health_service, sizeof(app.health_service), "%s", service);
    if (strcmp(service, "") != 0) {
        return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
    }
    return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
}

/* Queue batch number app.bf_sent (one item with value_len bytes) on call. */
static int bf_send(struct wan_grpc_backfill_call *call, size_t value_len)
{
    Geogate__Wan__V1__BackfillBatch b = GEOGATE__WAN__V1__BACKFILL_BATCH__INIT;
    Geogate__Wan__V1__Mutation m = GEOGATE__WAN__V1__MUTATION__INIT, *mp = &m;
    char key[32], cursor[32];
    uint8_t *value = calloc(1, value_len + 1);
    int rc;

    snprintf(key, sizeof(key), "k%d", app.bf_sent);
    snprintf(cursor, sizeof(cursor), "c%d", app.bf_sent);
    m.key.data = (uint8_t *)key;
    m.key.len = strlen(key);
    m.value.data = value;
    m.value.len = value_len;
    b.n_items = 1;
    b.items = &mp;
    b.cursor.data = (uint8_t *)cursor;
    b.cursor.len = strlen(cursor);
    b.listed = (uint64_t)app.bf_sent;
    rc = wan_grpc_server_backfill_send(call, &b);
    if (rc == 0) {
        app.bf_sent++;
    }
    free(value);
    return rc;
}

static int on_bf_open(void *arg, struct wan_grpc_backfill_call *call, const char *peer_site,
                      Geogate__Wan__V1__BackfillRequest *req, void **call_arg)
{
    (void)arg;
    assert_string_equal(peer_site, "eu-west");
    app.bf_opens++;
    snprintf(app.bf_prefix, sizeof(app.bf_prefix), "%.*s", (int)req->prefix.len,
             (const char *)req->prefix.data);
    app.bf_rate = req->rate;
    geogate__wan__v1__backfill_request__free_unpacked(req, NULL);
    if (app.bf_refuse) {
        return app.bf_refuse;
    }
    for (int i = 0; i < app.bf_send_in_open; i++) {
        assert_int_equal(bf_send(call, 10), 0);
    }
    if (app.bf_finish_in_open) {
        assert_int_equal(wan_grpc_server_backfill_finish(call, WAN_GRPC_OK, NULL), 0);
    }
    app.bf_call = call;
    *call_arg = &app.bf_opens;
    return 0;
}

static void on_bf_writable(void *arg, void *call_arg, struct wan_grpc_backfill_call *call)
{
    (void)arg;
    assert_ptr_equal(call_arg, &app.bf_opens);
    assert_ptr_equal(call, app.bf_call);
    app.bf_writables++;
    app.bf_queued_at_writable = wan_grpc_server_backfill_queued(call);
    if (app.bf_finish_on_writable) {
        assert_int_equal(wan_grpc_server_backfill_finish(call, WAN_GRPC_OK, "all sent"), 0);
    }
}

static void on_bf_closed(void *arg, void *call_arg, struct wan_grpc_backfill_call *call,
                         int grpc_status, const char *why)
{
    (void)arg;
    assert_ptr_equal(call_arg, &app.bf_opens);
    /* The call is going: nothing more can be queued on it. */
    assert_int_equal(bf_send(call, 1), -EPIPE);
    assert_int_equal(wan_grpc_server_backfill_finish(call, WAN_GRPC_OK, NULL), -EPIPE);
    app.bf_closes++;
    app.bf_close_status = grpc_status;
    snprintf(app.bf_close_why, sizeof(app.bf_close_why), "%s", why);
    if (call == app.bf_call) {
        app.bf_call = NULL;
    }
}

/* ---- the client side: an nghttp2 client session in memory ----------------------------------- */

struct tstream {
    int32_t id;
    struct evbuffer *send;
    int end;
    int deferred;
    int http_status;
    int grpc_status;
    char grpc_message[256];
    int trailers_only; /* grpc-status came in the response HEADERS */
    int headers_frames;
    struct wan_grpc_deframer df;
    int nmsgs;
    uint8_t *msgs[MAX_MSGS];
    size_t msg_lens[MAX_MSGS];
    size_t data_bytes; /* DATA payload received */
    int closed;
    uint32_t close_error;
};

struct tc {
    struct event_base *base;
    struct wan_grpc_server *srv;
    struct wan_grpc_server_conn *conn;
    nghttp2_session *s;
    struct tstream st[MAX_STREAMS];
    int n;
};

static ssize_t tc_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                          uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    struct tstream *t = source->ptr;
    int n;

    (void)session;
    (void)stream_id;
    (void)user_data;
    n = evbuffer_remove(t->send, buf, length);
    if (evbuffer_get_length(t->send) == 0 && t->end) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        return n;
    }
    if (n == 0) {
        t->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    return n;
}

static struct tstream *tc_find(struct tc *tc, int32_t id)
{
    for (int i = 0; i < tc->n; i++) {
        if (tc->st[i].id == id) {
            return &tc->st[i];
        }
    }
    return NULL;
}

static int tc_on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *user)
{
    struct tstream *t = tc_find(user, frame->hd.stream_id);

    (void)session;
    (void)flags;
    if (t == NULL) {
        return 0;
    }
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        t->http_status = atoi((const char *)value);
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        char v[8] = {0};

        memcpy(v, value, valuelen < 7 ? valuelen : 7);
        t->grpc_status = atoi(v);
        t->trailers_only = t->headers_frames == 0;
    } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
        wan_grpc_message_decode((const char *)value, valuelen, t->grpc_message,
                                sizeof(t->grpc_message));
    } else if (namelen == 12 && memcmp(name, "content-type", 12) == 0) {
        assert_true(valuelen == 16 && memcmp(value, "application/grpc", 16) == 0);
    }
    return 0;
}

static int tc_on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    struct tstream *t = tc_find(user, frame->hd.stream_id);

    (void)session;
    if (t != NULL && frame->hd.type == NGHTTP2_HEADERS) {
        t->headers_frames++;
    }
    return 0;
}

static int tc_on_data(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                      const uint8_t *data, size_t len, void *user)
{
    struct tstream *t = tc_find(user, stream_id);
    size_t pos = 0;

    (void)session;
    (void)flags;
    assert_non_null(t);
    t->data_bytes += len;
    while (pos < len) {
        const uint8_t *msg = NULL;
        size_t used = 0, msg_len = 0;
        int rc = wan_grpc_deframer_feed(&t->df, data + pos, len - pos, &used, &msg, &msg_len);

        assert_true(rc >= 0);
        pos += used;
        if (rc == WAN_GRPC_FRAME_MESSAGE) {
            assert_true(t->nmsgs < MAX_MSGS);
            t->msgs[t->nmsgs] = malloc(msg_len + 1);
            memcpy(t->msgs[t->nmsgs], msg, msg_len);
            t->msg_lens[t->nmsgs] = msg_len;
            t->nmsgs++;
        }
    }
    return 0;
}

static int tc_on_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user)
{
    struct tstream *t = tc_find(user, stream_id);

    (void)session;
    if (t != NULL) {
        t->closed = 1;
        t->close_error = error_code;
    }
    return 0;
}

/* Move bytes both ways and run deferred events until nothing moves. */
static void tc_pump(struct tc *tc)
{
    for (int round = 0; round < 10000; round++) {
        int progress = 0;
        const uint8_t *data;
        ssize_t n;
        struct evbuffer *out;
        size_t len;

        event_base_loop(tc->base, EVLOOP_NONBLOCK);
        while ((n = nghttp2_session_mem_send(tc->s, &data)) > 0) {
            if (wan_grpc_server_mem_feed(tc->conn, data, (size_t)n) != 0) {
                break;
            }
            progress = 1;
        }
        event_base_loop(tc->base, EVLOOP_NONBLOCK);
        out = wan_grpc_server_mem_output(tc->conn);
        len = evbuffer_get_length(out);
        if (len > 0) {
            assert_int_equal(nghttp2_session_mem_recv(tc->s, evbuffer_pullup(out, -1), len),
                             (ssize_t)len);
            evbuffer_drain(out, len);
            progress = 1;
        }
        if (!progress) {
            return;
        }
    }
    fail_msg("tc_pump: no quiescence");
}

/* client_window > 0: the client announces that stream window and gives window back only
 * when the test says so (tc_consume); 0: nghttp2's defaults and automatic updates. */
static void tc_init_with(struct tc *tc, uint32_t max_message, uint32_t backfill_high,
                         uint32_t client_window, int with_backfill)
{
    struct wan_grpc_server_config cfg;
    struct wan_grpc_server_callbacks cb;
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, client_window}};

    memset(&app, 0, sizeof(app));
    app.auto_ack = 1;
    memset(tc, 0, sizeof(*tc));
    tc->base = event_base_new();
    assert_non_null(tc->base);
    memset(&cfg, 0, sizeof(cfg));
    cfg.max_message = max_message;
    cfg.backfill_high = backfill_high;
    cfg.log = test_log;
    memset(&cb, 0, sizeof(cb));
    cb.ship_open = on_ship_open;
    cb.ship_batch = on_ship_batch;
    cb.ship_end = on_ship_end;
    cb.ship_closed = on_ship_closed;
    cb.read = on_read;
    cb.health = on_health;
    if (with_backfill) {
        cb.backfill_open = on_bf_open;
        cb.backfill_writable = on_bf_writable;
        cb.backfill_closed = on_bf_closed;
    }
    assert_int_equal(wan_grpc_server_create(&tc->srv, tc->base, &cfg, &cb, NULL), 0);
    assert_int_equal(wan_grpc_server_listen(tc->srv, "127.0.0.1:0", NULL), -EINVAL);
    assert_int_equal(wan_grpc_server_mem_open(tc->srv, "eu-west", &tc->conn), 0);
    assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
    nghttp2_session_callbacks_set_on_header_callback(cbs, tc_on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, tc_on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, tc_on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, tc_on_close);
    assert_int_equal(nghttp2_option_new(&opt), 0);
    nghttp2_option_set_no_auto_window_update(opt, client_window > 0);
    assert_int_equal(nghttp2_session_client_new2(&tc->s, cbs, tc, opt), 0);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    assert_int_equal(
        nghttp2_submit_settings(tc->s, NGHTTP2_FLAG_NONE, iv, client_window > 0 ? 1 : 0), 0);
    tc_pump(tc);
}

static void tc_init(struct tc *tc, uint32_t max_message)
{
    tc_init_with(tc, max_message, 0, 0, 1);
}

static void tc_free(struct tc *tc)
{
    nghttp2_session_del(tc->s);
    wan_grpc_server_mem_close(tc->conn);
    wan_grpc_server_destroy(tc->srv);
    for (int i = 0; i < tc->n; i++) {
        evbuffer_free(tc->st[i].send);
        wan_grpc_deframer_free(&tc->st[i].df);
        for (int m = 0; m < tc->st[i].nmsgs; m++) {
            free(tc->st[i].msgs[m]);
        }
    }
    event_base_free(tc->base);
}

/* Open a request stream; extra_name/value (may be NULL) replace content-type. */
static struct tstream *tc_open_with(struct tc *tc, const char *path, const char *ct,
                                    const char *extra_name, const char *extra_value)
{
    struct tstream *t = &tc->st[tc->n++];
    nghttp2_nv nva[8];
    size_t n = 0;
    nghttp2_data_provider prd;

#define NV(a, b)                                                                                   \
    (nghttp2_nv){(uint8_t *)(a), (uint8_t *)(b), strlen(a), strlen(b), NGHTTP2_NV_FLAG_NONE}
    nva[n++] = NV(":method", "POST");
    nva[n++] = NV(":scheme", "https");
    nva[n++] = NV(":path", path);
    nva[n++] = NV(":authority", "us-east");
    if (ct != NULL) {
        nva[n++] = NV("content-type", ct);
    }
    nva[n++] = NV("te", "trailers");
    if (extra_name != NULL) {
        nva[n++] = NV(extra_name, extra_value);
    }
#undef NV
    t->send = evbuffer_new();
    t->grpc_status = -1;
    wan_grpc_deframer_init(&t->df, 0);
    prd.source.ptr = t;
    prd.read_callback = tc_read_cb;
    t->id = nghttp2_submit_request(tc->s, NULL, nva, n, &prd, NULL);
    assert_true(t->id > 0);
    return t;
}

static struct tstream *tc_open(struct tc *tc, const char *path)
{
    return tc_open_with(tc, path, "application/grpc", NULL, NULL);
}

static void tc_wake(struct tc *tc, struct tstream *t)
{
    if (t->deferred) {
        t->deferred = 0;
        nghttp2_session_resume_data(tc->s, t->id);
    }
}

static void tc_send_raw(struct tc *tc, struct tstream *t, const void *data, size_t len)
{
    evbuffer_add(t->send, data, len);
    tc_wake(tc, t);
}

static void tc_send_msg(struct tc *tc, struct tstream *t, const ProtobufCMessage *msg)
{
    size_t size = wan_grpc_frame_size(msg);
    uint8_t *buf = malloc(size);

    assert_int_equal(wan_grpc_frame_write(msg, buf), size);
    tc_send_raw(tc, t, buf, size);
    free(buf);
}

static void tc_end(struct tc *tc, struct tstream *t)
{
    t->end = 1;
    tc_wake(tc, t);
}

static void send_batch(struct tc *tc, struct tstream *t, const char *origin, uint64_t first_seq,
                       size_t nmut, size_t value_len)
{
    Geogate__Wan__V1__ShipRequest req = GEOGATE__WAN__V1__SHIP_REQUEST__INIT;
    Geogate__Wan__V1__Mutation *m = calloc(nmut ? nmut : 1, sizeof(*m));
    Geogate__Wan__V1__Mutation **mp = calloc(nmut ? nmut : 1, sizeof(*mp));
    uint8_t *value = calloc(1, value_len + 1);

    for (size_t i = 0; i < nmut; i++) {
        geogate__wan__v1__mutation__init(&m[i]);
        m[i].key.data = (uint8_t *)"k";
        m[i].key.len = 1;
        m[i].value.data = value;
        m[i].value.len = value_len;
        mp[i] = &m[i];
    }
    req.origin_site = (char *)origin;
    req.gateway_id = 1;
    req.first_seq = first_seq;
    req.n_mutations = nmut;
    req.mutations = mp;
    tc_send_msg(tc, t, &req.base);
    free(m);
    free(mp);
    free(value);
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_ship_ok(void **state)
{
    struct tc tc;
    struct tstream *t;
    Geogate__Wan__V1__ShipAck *ack;

    (void)state;
    tc_init(&tc, 0);
    t = tc_open(&tc, WAN_GRPC_PATH_SHIP);
    tc_pump(&tc);
    assert_int_equal(app.opens, 1);
    assert_int_equal(t->http_status, 200);
    send_batch(&tc, t, "eu-west", 1, 10, 5);
    send_batch(&tc, t, "eu-west", 11, 1, 5);
    tc_pump(&tc);
    assert_int_equal(app.batches, 2);
    assert_int_equal(app.first_seqs[0], 1);
    assert_int_equal(app.first_seqs[1], 11);
    assert_int_equal(t->nmsgs, 2);
    ack = geogate__wan__v1__ship_ack__unpack(NULL, t->msg_lens[1], t->msgs[1]);
    assert_non_null(ack);
    assert_int_equal(ack->acked_seq, 11);
    geogate__wan__v1__ship_ack__free_unpacked(ack, NULL);
    assert_int_equal(wan_grpc_server_ship_queued(app.st), 0);
    assert_false(t->closed);
    /* Half-close: ship_end, the application finishes with OK. */
    tc_end(&tc, t);
    tc_pump(&tc);
    assert_int_equal(app.ends, 1);
    assert_true(t->closed);
    assert_int_equal(t->close_error, NGHTTP2_NO_ERROR);
    assert_int_equal(t->grpc_status, WAN_GRPC_OK);
    assert_false(t->trailers_only);
    assert_int_equal(app.closes, 1);
    assert_int_equal(app.close_status, WAN_GRPC_OK);
    assert_int_equal(app.logs_warn, 0);
    tc_free(&tc);
}

static void expect_refusal(struct tc *tc, struct tstream *t, int status, const char *msg_part)
{
    tc_pump(tc);
    assert_true(t->closed);
    assert_int_equal(t->grpc_status, status);
    assert_non_null(strstr(t->grpc_message, msg_part));
    assert_int_equal(app.batches, 0);
    assert_true(app.logs_warn >= 1 || status == WAN_GRPC_UNIMPLEMENTED);
}

static void test_ship_origin_mismatch(void **state)
{
    struct tc tc;
    struct tstream *t;

    (void)state;
    tc_init(&tc, 0);
    t = tc_open(&tc, WAN_GRPC_PATH_SHIP);
    send_batch(&tc, t, "ap-south", 1, 3, 5);
    expect_refusal(&tc, t, WAN_GRPC_PERMISSION_DENIED,
                   "claims origin_site 'ap-south' but the certificate names 'eu-west'");
    assert_non_null(strstr(app.last_warn, "PERMISSION_DENIED"));
    assert_int_equal(app.closes, 1);
    assert_int_equal(app.close_status, WAN_GRPC_PERMISSION_DENIED);
    /* The connection still serves. */
    t = tc_open(&tc, WAN_GRPC_PATH_SHIP);
    send_batch(&tc, t, "eu-west", 1, 3, 5);
    tc_pump(&tc);
    assert_int_equal(app.batches, 1);
    assert_false(wan_grpc_server_mem_closed(tc.conn));
    tc_free(&tc);
}

static void test_ship_malformed(void **state)
{
    struct tc tc;
    struct tstream *t;
    uint8_t bad[] = {0, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff};

    (void)state;
    tc_init(&tc, 0);
    t = tc_open(&tc, WAN_GRPC_PATH_SHIP);
    tc_send_raw(&tc, t, bad, sizeof(bad));
    expect_refusal(&tc, t, WAN_GRPC_INVALID_ARGUMENT, "malformed ShipRequest (4 bytes)");
    assert_non_null(strstr(app.last_warn, "INVALID_ARGUMENT"));
    tc_free(&tc);
}

static void test_ship_oversized(void **state)
{
    struct tc tc;
    struct tstream *t;
    uint8_t prefix[5];

    (void)state;
    tc_init(&tc, 1000);
    t = tc_open(&tc, WAN_GRPC_PATH_SHIP);
    wan_grpc_frame_prefix(prefix, 1001);
    tc_send_raw(&tc, t, prefix, 5); /* refused on the prefix alone */
    expect_refusal(&tc, t, WAN_GRPC_RESOURCE_EXHAUSTED,
                   "message of 1001 bytes is over the limit of 1000 bytes");
    tc_free(&tc);
}

static void test_ship_compressed(void **state)
{
    struct tc tc;
    struct tstream *t;
    uint8_t msg[] = {1, 0, 0, 0, 2, 0x08, 0x01};

    (void)state;
    tc_init(&tc, 0);
    t = tc_open(&tc, WAN_GRPC_PATH_SHIP);
    tc_send_raw(&tc, t, msg, sizeof(msg));
    expect_refusal(&tc, t, WAN_GRPC_INVALID_ARGUMENT, "compressed message");
    tc_free(&tc);
}

static void test_ship_truncated(void **state)
{
    struct tc tc;
    struct tstream *t;
    uint8_t msg[] = {0, 0, 0, 0, 9, 0x0a, 0x01};

    (void)state;
    tc_init(&tc, 0);
    t = tc_open(&tc, WAN_GRPC_PATH_SHIP);
    tc_send_raw(&tc, t, msg, sizeof(msg));
    tc_end(&tc, t);
    expect_refusal(&tc, t, WAN_GRPC_INVALID_ARGUMENT, "stream ended inside a message");
    assert_int_equal(app.ends, 0);
    tc_free(&tc);
}

static void test_unknown_method(void **state)
{
    struct tc tc;
    struct tstream *t;

    (void)state;
    tc_init(&tc, 0);
    t = tc_open(&tc, "/geogate.wan.v1.Replication/Nope");
    tc_send_raw(&tc, t, "\0\0\0\0\0", 5);
    tc_end(&tc, t);
    expect_refusal(&tc, t, WAN_GRPC_UNIMPLEMENTED, "unknown method");
    assert_true(t->trailers_only);
    assert_int_equal(t->http_status, 200);
    tc_free(&tc);
}

static void test_bad_headers(void **state)
{
    struct tc tc;
    struct tstream *t, *u;

    (void)state;
    tc_init(&tc, 0);
    t = tc_open_with(&tc, WAN_GRPC_PATH_HEALTH, "text/plain", NULL, NULL);
    tc_end(&tc, t);
    u = tc_open_with(&tc, WAN_GRPC_PATH_HEALTH, "application/grpc", "grpc-encoding", "gzip");
    tc_end(&tc, u);
    tc_pump(&tc);
    assert_true(t->closed);
    assert_int_equal(t->http_status, 415);
    assert_int_equal(t->grpc_status, -1);
    assert_true(u->closed);
    assert_int_equal(u->grpc_status, WAN_GRPC_UNIMPLEMENTED);
    assert_non_null(strstr(u->grpc_message, "gzip"));
    tc_free(&tc);
}

static void test_health(void **state)
{
    struct tc tc;
    struct tstream *t, *u;
    Grpc__Health__V1__HealthCheckResponse *resp;
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;

    (void)state;
    tc_init(&tc, 0);
    t = tc_open(&tc, WAN_GRPC_PATH_HEALTH);
    tc_send_raw(&tc, t, "\0\0\0\0\0", 5); /* an empty HealthCheckRequest */
    tc_end(&tc, t);
    u = tc_open(&tc, WAN_GRPC_PATH_HEALTH);
    req.service = "nope";
    tc_send_msg(&tc, u, &req.base);
    tc_end(&tc, u);
    tc_pump(&tc);
    assert_true(t->closed);
    assert_int_equal(t->grpc_status, WAN_GRPC_OK);
    assert_int_equal(t->nmsgs, 1);
    resp = grpc__health__v1__health_check_response__unpack(NULL, t->msg_lens[0], t->msgs[0]);
    assert_non_null(resp);
    assert_int_equal(resp->status,
                     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
    grpc__health__v1__health_check_response__free_unpacked(resp, NULL);
    assert_int_equal(u->grpc_status, WAN_GRPC_NOT_FOUND);
    assert_string_equal(app.health_service, "nope");
    tc_free(&tc);
}

static void test_unary_without_message(void **state)
{
    struct tc tc;
    struct tstream *t, *u;

    (void)state;
    tc_init(&tc, 0);
    t = tc_open(&tc, WAN_GRPC_PATH_HEALTH);
    tc_end(&tc, t);
    u = tc_open(&tc, WAN_GRPC_PATH_HEALTH);
    tc_send_raw(&tc, u, "\0\0\0\0\0\0\0\0\0\0", 10); /* two messages */
    tc_end(&tc, u);
    tc_pump(&tc);
    assert_int_equal(t->grpc_status, WAN_GRPC_INVALID_ARGUMENT);
    assert_non_null(strstr(t->grpc_message, "no request message"));
    assert_int_equal(u->grpc_status, WAN_GRPC_INVALID_ARGUMENT);
    assert_non_null(strstr(u->grpc_message, "more than one"));
    tc_free(&tc);
}

static void test_read_async(void **state)
{
    struct tc tc;
    struct tstream *t;
    Geogate__Wan__V1__ReadRequest req = GEOGATE__WAN__V1__READ_REQUEST__INIT;
    Geogate__Wan__V1__ReadResponse resp = GEOGATE__WAN__V1__READ_RESPONSE__INIT, *back;
    Geogate__Wan__V1__ReadItem item = GEOGATE__WAN__V1__READ_ITEM__INIT, *items[2];
    Geogate__Wan__V1__Mutation m = GEOGATE__WAN__V1__MUTATION__INIT;
    ProtobufCBinaryData keys[2] = {{1, (uint8_t *)"a"}, {1, (uint8_t *)"b"}};

    (void)state;
    tc_init(&tc, 0);
    t = tc_open(&tc, WAN_GRPC_PATH_READ);
    req.n_keys = 2;
    req.keys = keys;
    tc_send_msg(&tc, t, &req.base);
    tc_end(&tc, t);
    tc_pump(&tc);
    assert_non_null(app.call);
    assert_int_equal(app.read_req->n_keys, 2);
    assert_false(t->closed); /* nothing until the application answers */
    geogate__wan__v1__read_request__free_unpacked(app.read_req, NULL);
    m.key = keys[0];
    m.value.data = (uint8_t *)"value";
    m.value.len = 5;
    item.found = 1;
    item.item = &m;
    items[0] = &item;
    items[1] = &item;
    resp.n_items = 2;
    resp.items = items;
    assert_int_equal(wan_grpc_server_read_reply(app.call, &resp), 0);
    tc_pump(&tc);
    assert_true(t->closed);
    assert_int_equal(t->grpc_status, WAN_GRPC_OK);
    assert_int_equal(t->nmsgs, 1);
    back = geogate__wan__v1__read_response__unpack(NULL, t->msg_lens[0], t->msgs[0]);
    assert_non_null(back);
    assert_int_equal(back->n_items, 2);
    assert_true(back->items[1]->found);
    assert_int_equal(back->items[1]->item->value.len, 5);
    geogate__wan__v1__read_response__free_unpacked(back, NULL);
    tc_free(&tc);
}

static void test_read_fail_and_gone(void **state)
{
    struct tc tc;
    struct tstream *t;
    Geogate__Wan__V1__ReadRequest req = GEOGATE__WAN__V1__READ_REQUEST__INIT;
    Geogate__Wan__V1__ReadResponse resp = GEOGATE__WAN__V1__READ_RESPONSE__INIT;

    (void)state;
    tc_init(&tc, 0);
    t = tc_open(&tc, WAN_GRPC_PATH_READ);
    tc_send_msg(&tc, t, &req.base);
    tc_end(&tc, t);
    tc_pump(&tc);
    geogate__wan__v1__read_request__free_unpacked(app.read_req, NULL);
    assert_int_equal(wan_grpc_server_read_fail(app.call, WAN_GRPC_UNAVAILABLE, "pool down"), 0);
    tc_pump(&tc);
    assert_int_equal(t->grpc_status, WAN_GRPC_UNAVAILABLE);
    assert_string_equal(t->grpc_message, "pool down");

    /* The caller goes away before the answer: the answer is dropped, the call freed. */
    app.call = NULL;
    t = tc_open(&tc, WAN_GRPC_PATH_READ);
    tc_send_msg(&tc, t, &req.base);
    tc_end(&tc, t);
    tc_pump(&tc);
    assert_non_null(app.call);
    geogate__wan__v1__read_request__free_unpacked(app.read_req, NULL);
    nghttp2_submit_rst_stream(tc.s, NGHTTP2_FLAG_NONE, t->id, NGHTTP2_CANCEL);
    tc_pump(&tc);
    assert_int_equal(wan_grpc_server_read_reply(app.call, &resp), -ENOTCONN);

    /* Unanswered calls are freed with the server (checked by the sanitizer build). */
    t = tc_open(&tc, WAN_GRPC_PATH_READ);
    tc_send_msg(&tc, t, &req.base);
    tc_end(&tc, t);
    tc_pump(&tc);
    geogate__wan__v1__read_request__free_unpacked(app.read_req, NULL);
    tc_free(&tc);
}

/* A BUSY application holds the peer back through HTTP/2 flow control, and resuming
 * delivers everything in order. */
static void test_flow_control_busy(void **state)
{
    struct tc tc;
    struct tstream *t;
    int32_t window_before, window_stalled;

    (void)state;
    tc_init(&tc, 1000); /* stream window: the 65535-byte minimum */
    t = tc_open(&tc, WAN_GRPC_PATH_SHIP);
    tc_pump(&tc);
    window_before = nghttp2_session_get_stream_remote_window_size(tc.s, t->id);
    assert_true(window_before >= 65535);
    app.busy = 1;
    for (int i = 0; i < 100; i++) {
        send_batch(&tc, t, "eu-west", (uint64_t)i * 10 + 1, 10, 80); /* ~900 bytes each */
    }
    tc_pump(&tc);
    assert_int_equal(app.offers, 1); /* offered once, held, nothing more read */
    assert_int_equal(app.batches, 0);
    window_stalled = nghttp2_session_get_stream_remote_window_size(tc.s, t->id);
    assert_int_equal(window_stalled, 0);           /* the peer is stopped by flow control */
    assert_true(evbuffer_get_length(t->send) > 0); /* and keeps the rest itself */

    app.busy = 0;
    assert_int_equal(wan_grpc_server_ship_resume(app.st), 0);
    tc_pump(&tc);
    assert_int_equal(app.batches, 100);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(app.first_seqs[i], (uint64_t)i * 10 + 1);
    }
    assert_int_equal(evbuffer_get_length(t->send), 0);
    assert_int_equal(t->nmsgs, 100);
    assert_true(nghttp2_session_get_stream_remote_window_size(tc.s, t->id) > 0);

    /* Busy again mid-stream, then a half-close while held: ship_end waits for the
     * held batch and the backlog. */
    app.busy = 1;
    send_batch(&tc, t, "eu-west", 1001, 1, 10);
    send_batch(&tc, t, "eu-west", 1002, 1, 10);
    tc_end(&tc, t);
    tc_pump(&tc);
    assert_int_equal(app.ends, 0);
    app.busy = 0;
    wan_grpc_server_ship_resume(app.st);
    tc_pump(&tc);
    assert_int_equal(app.batches, 102);
    assert_int_equal(app.ends, 1);
    assert_int_equal(t->grpc_status, WAN_GRPC_OK);
    tc_free(&tc);
}

/* An ack the peer would refuse as too large is not sent. */
static void test_ack_too_large(void **state)
{
    struct tc tc;
    struct tstream *t;

    (void)state;
    tc_init(&tc, 30);
    t = tc_open(&tc, WAN_GRPC_PATH_SHIP);
    send_batch(&tc, t, "eu-west", 1, 0, 0); /* 13 bytes: fits */
    app.big_ack = 1;                        /* 33 bytes: does not */
    tc_pump(&tc);
    assert_int_equal(app.batches, 1);
    assert_int_equal(app.ack_rc, -EMSGSIZE);
    assert_int_equal(t->nmsgs, 0);
    assert_false(t->closed);
    tc_free(&tc);
}

static void test_ship_refused_by_app(void **state)
{
    struct tc tc;
    struct tstream *t;

    (void)state;
    tc_init(&tc, 0);
    app.refuse_open = WAN_GRPC_UNAVAILABLE;
    t = tc_open(&tc, WAN_GRPC_PATH_SHIP);
    tc_pump(&tc);
    assert_true(t->closed);
    assert_int_equal(t->grpc_status, WAN_GRPC_UNAVAILABLE);
    assert_int_equal(app.closes, 0);
    tc_free(&tc);
}

static void test_app_finishes_with_error(void **state)
{
    struct tc tc;
    struct tstream *t;

    (void)state;
    tc_init(&tc, 0);
    t = tc_open(&tc, WAN_GRPC_PATH_SHIP);
    send_batch(&tc, t, "eu-west", 1, 1, 1);
    tc_pump(&tc);
    assert_int_equal(wan_grpc_server_ship_finish(app.st, WAN_GRPC_FAILED_PRECONDITION, "gap"), 0);
    send_batch(&tc, t, "eu-west", 2, 1, 1); /* discarded */
    tc_pump(&tc);
    assert_true(t->closed);
    assert_int_equal(t->nmsgs, 1); /* the ack queued before finishing still went out */
    assert_int_equal(t->grpc_status, WAN_GRPC_FAILED_PRECONDITION);
    assert_string_equal(t->grpc_message, "gap");
    assert_int_equal(app.batches, 1);
    assert_int_equal(app.close_status, WAN_GRPC_FAILED_PRECONDITION);
    tc_free(&tc);
}

static void test_peer_reset_and_close(void **state)
{
    struct tc tc;
    struct tstream *t;

    (void)state;
    tc_init(&tc, 0);
    t = tc_open(&tc, WAN_GRPC_PATH_SHIP);
    tc_pump(&tc);
    nghttp2_submit_rst_stream(tc.s, NGHTTP2_FLAG_NONE, t->id, NGHTTP2_CANCEL);
    tc_pump(&tc);
    assert_int_equal(app.closes, 1);
    assert_int_equal(app.close_status, WAN_GRPC_CANCELLED);

    /* An open stream when the connection goes: ship_closed with UNAVAILABLE. */
    t = tc_open(&tc, WAN_GRPC_PATH_SHIP);
    send_batch(&tc, t, "eu-west", 1, 1, 1);
    tc_pump(&tc);
    assert_non_null(app.st);
    wan_grpc_server_mem_close(tc.conn);
    assert_int_equal(app.closes, 2);
    assert_int_equal(app.close_status, WAN_GRPC_UNAVAILABLE);
    tc.conn = NULL;
    nghttp2_session_del(tc.s);
    tc.s = NULL;
    for (int i = 0; i < tc.n; i++) {
        evbuffer_free(tc.st[i].send);
        wan_grpc_deframer_free(&tc.st[i].df);
        for (int m = 0; m < tc.st[i].nmsgs; m++) {
            free(tc.st[i].msgs[m]);
        }
    }
    wan_grpc_server_destroy(tc.srv);
    event_base_free(tc.base);
}

static void test_garbage(void **state)
{
    struct event_base *base = event_base_new();
    struct wan_grpc_server *srv;
    struct wan_grpc_server_conn *conn;
    struct wan_grpc_server_config cfg;
    struct wan_grpc_server_callbacks cb;
    const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    (void)state;
    memset(&app, 0, sizeof(app));
    memset(&cfg, 0, sizeof(cfg));
    memset(&cb, 0, sizeof(cb));
    cfg.log = test_log;
    assert_int_equal(wan_grpc_server_create(&srv, base, &cfg, &cb, NULL), 0);
    assert_int_equal(wan_grpc_server_mem_open(srv, "eu-west", &conn), 0);
    assert_int_equal(wan_grpc_server_mem_feed(conn, (const uint8_t *)junk, sizeof(junk) - 1),
                     -EPROTO);
    assert_true(wan_grpc_server_mem_closed(conn));
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(wan_grpc_server_mem_feed(conn, (const uint8_t *)junk, 3), -EPROTO);
    wan_grpc_server_mem_close(conn);
    /* A connection left open is freed by destroy. */
    assert_int_equal(wan_grpc_server_mem_open(srv, "eu-west", &conn), 0);
    wan_grpc_server_destroy(srv);
    event_base_free(base);
}

/* ---- Backfill ---------------------------------------------------------------------------- */

/* Open a Backfill call with prefix and rate, request sent and half-closed. */
static struct tstream *bf_call(struct tc *tc, const char *prefix, uint32_t rate)
{
    Geogate__Wan__V1__BackfillRequest req = GEOGATE__WAN__V1__BACKFILL_REQUEST__INIT;
    struct tstream *t = tc_open(tc, WAN_GRPC_PATH_BACKFILL);

    req.prefix.data = (uint8_t *)prefix;
    req.prefix.len = strlen(prefix);
    req.rate = rate;
    tc_send_msg(tc, t, &req.base);
    tc_end(tc, t);
    return t;
}

/* The client got batches 0 .. n-1, in order, each as one gRPC message. */
static void bf_expect_batches(const struct tstream *t, int n)
{
    assert_int_equal(t->nmsgs, n);
    for (int i = 0; i < n; i++) {
        Geogate__Wan__V1__BackfillBatch *b =
            geogate__wan__v1__backfill_batch__unpack(NULL, t->msg_lens[i], t->msgs[i]);
        char cursor[32];

        assert_non_null(b);
        assert_int_equal(b->listed, (uint64_t)i);
        assert_int_equal(b->n_items, 1);
        snprintf(cursor, sizeof(cursor), "c%d", i);
        assert_int_equal(b->cursor.len, strlen(cursor));
        assert_memory_equal(b->cursor.data, cursor, b->cursor.len);
        geogate__wan__v1__backfill_batch__free_unpacked(b, NULL);
    }
}

static void test_backfill_ok(void **state)
{
    struct tc tc;
    struct tstream *t;

    (void)state;
    tc_init(&tc, 4096);
    app.bf_send_in_open = 1; /* the response HEADERS still go first */
    t = bf_call(&tc, "user:", 500);
    tc_pump(&tc);
    assert_int_equal(app.bf_opens, 1);
    assert_string_equal(app.bf_prefix, "user:");
    assert_int_equal(app.bf_rate, 500);
    assert_non_null(app.bf_call);
    assert_int_equal(t->http_status, 200);
    assert_int_equal(t->headers_frames, 1);
    assert_int_equal(t->nmsgs, 1);
    assert_false(t->closed);

    for (int i = 0; i < 4; i++) {
        assert_int_equal(bf_send(app.bf_call, 100), 0);
    }
    assert_true(wan_grpc_server_backfill_queued(app.bf_call) > 400);
    /* Over max_message: refused, nothing queued, the call goes on. */
    assert_int_equal(bf_send(app.bf_call, 5000), -EMSGSIZE);
    tc_pump(&tc);
    assert_int_equal(wan_grpc_server_backfill_queued(app.bf_call), 0);
    bf_expect_batches(t, 5);
    assert_false(t->closed);

    assert_int_equal(bf_send(app.bf_call, 10), 0); /* queued before finishing: still sent */
    assert_int_equal(wan_grpc_server_backfill_finish(app.bf_call, WAN_GRPC_OK, NULL), 0);
    assert_int_equal(wan_grpc_server_backfill_finish(app.bf_call, WAN_GRPC_OK, NULL), -EPIPE);
    assert_int_equal(bf_send(app.bf_call, 10), -EPIPE);
    tc_pump(&tc);
    assert_true(t->closed);
    assert_int_equal(t->close_error, NGHTTP2_NO_ERROR);
    bf_expect_batches(t, 6);
    assert_int_equal(t->grpc_status, WAN_GRPC_OK);
    assert_false(t->trailers_only);
    assert_int_equal(app.bf_closes, 1);
    assert_int_equal(app.bf_close_status, WAN_GRPC_OK);
    assert_null(app.bf_call);
    assert_int_equal(app.logs_warn, 0);
    tc_free(&tc);
}

/* Everything from inside backfill_open: batches, then finish. */
static void test_backfill_all_in_open(void **state)
{
    struct tc tc;
    struct tstream *t;

    (void)state;
    tc_init(&tc, 0);
    app.bf_send_in_open = 3;
    app.bf_finish_in_open = 1;
    t = bf_call(&tc, "", 0);
    tc_pump(&tc);
    assert_true(t->closed);
    assert_int_equal(t->http_status, 200);
    bf_expect_batches(t, 3);
    assert_int_equal(t->grpc_status, WAN_GRPC_OK);
    assert_false(t->trailers_only);
    assert_int_equal(app.bf_closes, 1);
    assert_int_equal(app.bf_close_status, WAN_GRPC_OK);
    tc_free(&tc);
}

static void test_backfill_refused(void **state)
{
    struct tc tc;
    struct tstream *t;

    (void)state;
    tc_init(&tc, 0);
    app.bf_refuse = WAN_GRPC_RESOURCE_EXHAUSTED;
    app.bf_send_in_open = 2; /* sent before refusing: dropped */
    t = bf_call(&tc, "", 0);
    tc_pump(&tc);
    assert_int_equal(app.bf_opens, 1);
    assert_true(t->closed);
    assert_true(t->trailers_only);
    assert_int_equal(t->nmsgs, 0);
    assert_int_equal(t->grpc_status, WAN_GRPC_RESOURCE_EXHAUSTED);
    assert_int_equal(app.bf_closes, 0);
    tc_free(&tc);

    /* No backfill_open: UNIMPLEMENTED, like any unknown method. */
    tc_init_with(&tc, 0, 0, 0, 0);
    t = bf_call(&tc, "", 0);
    tc_pump(&tc);
    assert_true(t->closed);
    assert_true(t->trailers_only);
    assert_int_equal(t->grpc_status, WAN_GRPC_UNIMPLEMENTED);
    assert_int_equal(app.bf_opens, 0);
    tc_free(&tc);
}

static void test_backfill_bad_request(void **state)
{
    struct tc tc;
    struct tstream *t, *u, *v;
    uint8_t bad[] = {0, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff};

    (void)state;
    tc_init(&tc, 0);
    t = tc_open(&tc, WAN_GRPC_PATH_BACKFILL);
    tc_send_raw(&tc, t, bad, sizeof(bad));
    tc_end(&tc, t);
    u = tc_open(&tc, WAN_GRPC_PATH_BACKFILL);
    tc_end(&tc, u);
    v = tc_open(&tc, WAN_GRPC_PATH_BACKFILL);
    tc_send_raw(&tc, v, "\0\0\0\0\0\0\0\0\0\0", 10); /* two empty requests */
    tc_end(&tc, v);
    tc_pump(&tc);
    assert_int_equal(t->grpc_status, WAN_GRPC_INVALID_ARGUMENT);
    assert_non_null(strstr(t->grpc_message, "malformed BackfillRequest (4 bytes)"));
    assert_non_null(strstr(app.last_warn, "INVALID_ARGUMENT"));
    assert_int_equal(u->grpc_status, WAN_GRPC_INVALID_ARGUMENT);
    assert_non_null(strstr(u->grpc_message, "no request message"));
    assert_int_equal(v->grpc_status, WAN_GRPC_INVALID_ARGUMENT);
    assert_non_null(strstr(v->grpc_message, "more than one"));
    assert_int_equal(app.bf_opens, 0);
    assert_int_equal(app.bf_closes, 0);
    tc_free(&tc);
}

/* The caller's window decides what leaves the queue; the high mark stops the application
 * and backfill_writable starts it again. */
static void test_backfill_flow_control(void **state)
{
    struct tc tc;
    struct tstream *t;
    size_t total;
    int rc, sent = 0;

    (void)state;
    tc_init_with(&tc, 0, 8192, 4096, 1); /* low mark 2048; client window 4096, by hand */
    t = bf_call(&tc, "", 0);
    tc_pump(&tc);
    assert_non_null(app.bf_call);
    while ((rc = bf_send(app.bf_call, 990)) == 0) {
        sent++;
    }
    assert_int_equal(rc, -ENOBUFS);
    assert_int_equal(bf_send(app.bf_call, 990), -ENOBUFS);
    total = wan_grpc_server_backfill_queued(app.bf_call);
    assert_true(total >= 8192 && total < 8192 + 1100);
    assert_true(sent >= 8);

    /* One window's worth leaves, the rest stays queued at the server. */
    tc_pump(&tc);
    assert_int_equal(t->data_bytes, 4096);
    assert_int_equal(wan_grpc_server_backfill_queued(app.bf_call), total - 4096);
    assert_int_equal(nghttp2_session_get_stream_effective_recv_data_length(tc.s, t->id), 4096);
    tc_pump(&tc);
    assert_int_equal(t->data_bytes, 4096);
    assert_int_equal(app.bf_writables, 0); /* still above the low mark */

    /* The caller takes what it got: another window's worth, and the queue is down to
     * the low mark: writable. */
    app.bf_finish_on_writable = 1;
    assert_int_equal(nghttp2_session_consume(tc.s, t->id, 4096), 0);
    tc_pump(&tc);
    assert_int_equal(t->data_bytes, 8192);
    assert_int_equal(app.bf_writables, 1);
    assert_true(app.bf_queued_at_writable <= 2048);
    assert_false(t->closed); /* the rest and the trailers wait for window */
    assert_int_equal(nghttp2_session_consume(tc.s, t->id, 4096), 0);
    tc_pump(&tc);
    assert_true(t->closed);
    assert_int_equal(t->data_bytes, total);
    bf_expect_batches(t, sent);
    assert_int_equal(t->grpc_status, WAN_GRPC_OK);
    assert_string_equal(t->grpc_message, "all sent");
    assert_int_equal(app.bf_writables, 1);
    assert_int_equal(app.bf_closes, 1);
    assert_int_equal(app.bf_close_status, WAN_GRPC_OK);
    tc_free(&tc);
}

static void test_backfill_reset(void **state)
{
    struct tc tc;
    struct tstream *t;

    (void)state;
    tc_init_with(&tc, 0, 0, 4096, 1);
    t = bf_call(&tc, "", 0);
    tc_pump(&tc);
    assert_int_equal(bf_send(app.bf_call, 10), 0);
    tc_pump(&tc);
    nghttp2_submit_rst_stream(tc.s, NGHTTP2_FLAG_NONE, t->id, NGHTTP2_CANCEL);
    tc_pump(&tc);
    assert_int_equal(app.bf_closes, 1);
    assert_int_equal(app.bf_close_status, WAN_GRPC_CANCELLED);
    assert_non_null(strstr(app.bf_close_why, "reset by peer"));

    /* Finished, but the trailers still wait behind batches the window holds back: a
     * reset then is CANCELLED, not the status the caller never saw. */
    t = bf_call(&tc, "", 0);
    tc_pump(&tc);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(bf_send(app.bf_call, 990), 0);
    }
    assert_int_equal(wan_grpc_server_backfill_finish(app.bf_call, WAN_GRPC_OK, NULL), 0);
    tc_pump(&tc);
    assert_false(t->closed);
    assert_true(wan_grpc_server_backfill_queued(app.bf_call) > 0);
    nghttp2_submit_rst_stream(tc.s, NGHTTP2_FLAG_NONE, t->id, NGHTTP2_CANCEL);
    tc_pump(&tc);
    assert_int_equal(app.bf_closes, 2);
    assert_int_equal(app.bf_close_status, WAN_GRPC_CANCELLED);
    assert_false(wan_grpc_server_mem_closed(tc.conn)); /* the connection goes on */
    tc_free(&tc);
}

static void tc_free_client(struct tc *tc)
{
    nghttp2_session_del(tc->s);
    tc->s = NULL;
    for (int i = 0; i < tc->n; i++) {
        evbuffer_free(tc->st[i].send);
        wan_grpc_deframer_free(&tc->st[i].df);
        for (int m = 0; m < tc->st[i].nmsgs; m++) {
            free(tc->st[i].msgs[m]);
        }
    }
    tc->n = 0;
}

/* Calls open when the connection goes, or when the server is destroyed: backfill_closed
 * with UNAVAILABLE, once each. */
static void test_backfill_connection_lost(void **state)
{
    struct tc tc;
    struct wan_grpc_server_conn *conn2;

    (void)state;
    tc_init_with(&tc, 0, 0, 4096, 1);
    bf_call(&tc, "a", 0);
    bf_call(&tc, "b", 0);
    tc_pump(&tc);
    assert_int_equal(app.bf_opens, 2);
    assert_int_equal(bf_send(app.bf_call, 5000), 0); /* more than the window: stays queued */
    tc_pump(&tc);
    wan_grpc_server_mem_close(tc.conn);
    tc.conn = NULL;
    assert_int_equal(app.bf_closes, 2);
    assert_int_equal(app.bf_close_status, WAN_GRPC_UNAVAILABLE);
    assert_non_null(strstr(app.bf_close_why, "connection lost"));
    tc_free_client(&tc);

    /* A second connection, and the server destroyed under its open call. */
    assert_int_equal(wan_grpc_server_mem_open(tc.srv, "eu-west", &conn2), 0);
    tc.conn = conn2;
    {
        nghttp2_session_callbacks *cbs;

        assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
        nghttp2_session_callbacks_set_on_header_callback(cbs, tc_on_header);
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, tc_on_frame_recv);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, tc_on_data);
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, tc_on_close);
        assert_int_equal(nghttp2_session_client_new(&tc.s, cbs, &tc), 0);
        nghttp2_session_callbacks_del(cbs);
    }
    nghttp2_submit_settings(tc.s, NGHTTP2_FLAG_NONE, NULL, 0);
    bf_call(&tc, "", 0);
    tc_pump(&tc);
    assert_int_equal(app.bf_opens, 3);
    wan_grpc_server_destroy(tc.srv);
    assert_int_equal(app.bf_closes, 3);
    assert_int_equal(app.bf_close_status, WAN_GRPC_UNAVAILABLE);
    tc_free_client(&tc);
    event_base_free(tc.base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ship_ok),
        cmocka_unit_test(test_ship_origin_mismatch),
        cmocka_unit_test(test_ship_malformed),
        cmocka_unit_test(test_ship_oversized),
        cmocka_unit_test(test_ship_compressed),
        cmocka_unit_test(test_ship_truncated),
        cmocka_unit_test(test_unknown_method),
        cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_health),
        cmocka_unit_test(test_unary_without_message),
        cmocka_unit_test(test_read_async),
        cmocka_unit_test(test_read_fail_and_gone),
        cmocka_unit_test(test_flow_control_busy),
        cmocka_unit_test(test_ack_too_large),
        cmocka_unit_test(test_ship_refused_by_app),
        cmocka_unit_test(test_app_finishes_with_error),
        cmocka_unit_test(test_peer_reset_and_close),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_backfill_ok),
        cmocka_unit_test(test_backfill_all_in_open),
        cmocka_unit_test(test_backfill_refused),
        cmocka_unit_test(test_backfill_bad_request),
        cmocka_unit_test(test_backfill_flow_control),
        cmocka_unit_test(test_backfill_reset),
        cmocka_unit_test(test_backfill_connection_lost),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
