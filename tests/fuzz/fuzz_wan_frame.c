/*
 * fuzz_wan_frame — libFuzzer target for what a peer's bytes reach on the WAN server
 * before the application: the HTTP/2 + gRPC decode path of wan/grpc_server (without
 * TLS: a memory-mode connection whose certificate "named" eu-west, the same nghttp2
 * callbacks as a real connection), the gRPC deframer, and protobuf unpacking of
 * ShipRequest / ReadRequest / HealthCheckRequest.  A dummy application takes, holds
 * (BUSY) and resumes batches, acks them, answers or fails Read calls.  Besides the
 * sanitizers it checks the transport's promises: the application only ever sees a
 * ShipRequest whose origin_site is the peer's own site, and never after the stream
 * closed.  Single thread; one server for the whole run, one connection per input.
 *
 * The first input byte picks how the rest is used:
 *   0  raw client bytes after the HTTP/2 preface (frames, HPACK, flow control), fed in
 *      two chunks cut where byte 1 says
 *   1  a well-formed request built by an nghttp2 client session: byte 1 picks the path
 *      (bits 0-1: Ship / Read / Health / unknown; bit 3 set: Backfill) and END_STREAM
 *      (bit 2), byte 2 the chunking, the rest is the DATA (the gRPC messages): reaches
 *      the deframer and protobuf every time
 *   2  the deframer, and the unpacker of every message a peer sends us (requests as a
 *      server, replies as a client), on the bytes directly
 *   3  raw bytes without a preface (garbage handling)
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "proto/geogate_wan.pb-c.h"
#include "proto/health.pb-c.h"
#include "wan/grpc.h"
#include "wan/grpc_frame.h"
#include "wan/grpc_server.h"

#define FUZZ_MAX_MESSAGE 2048 /* small, so RESOURCE_EXHAUSTED is reachable */
#define FUZZ_MAX_CALLS 16

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_wan_frame: check failed: %s (%s:%d)\n", #cond, __FILE__,         \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static struct event_base *base;
static struct wan_grpc_server *srv;

/* The dummy application. */
static unsigned long counter;
static int open_streams;
static struct wan_grpc_read_call *calls[FUZZ_MAX_CALLS];
static size_t ncalls;
static struct wan_grpc_ship_stream *busy_streams[FUZZ_MAX_CALLS];
static size_t nbusy;

static void fuzz_log(void *arg, enum wan_grpc_log_level level, const char *line)
{
    (void)arg;
    (void)level;
    CHECK(line != NULL && strchr(line, '\n') == NULL);
}

static int app_open(void *arg, struct wan_grpc_ship_stream *st, const char *peer_site,
                    void **stream_arg)
{
    (void)arg;
    (void)st;
    CHECK(strcmp(peer_site, "eu-west") == 0);
    if (++counter % 13 == 0) {
        return WAN_GRPC_UNAVAILABLE;
    }
    open_streams++;
    *stream_arg = &open_streams;
    return 0;
}

static int app_batch(void *arg, void *stream_arg, struct wan_grpc_ship_stream *st,
                     Geogate__Wan__V1__ShipRequest *req)
{
    Geogate__Wan__V1__ShipAck ack = GEOGATE__WAN__V1__SHIP_ACK__INIT;

    (void)arg;
    CHECK(stream_arg == &open_streams);
    CHECK(req != NULL && req->origin_site != NULL && strcmp(req->origin_site, "eu-west") == 0);
    for (size_t i = 0; i < req->n_mutations; i++) {
        CHECK(req->mutations[i] != NULL);
    }
    counter++;
    if (counter % 5 == 0 && nbusy < FUZZ_MAX_CALLS) {
        busy_streams[nbusy++] = st;
        return WAN_GRPC_SHIP_BUSY;
    }
    if (counter % 7 == 0) {
        wan_grpc_server_ship_finish(st, WAN_GRPC_FAILED_PRECONDITION, "fuzz says no");
    } else {
        ack.acked_seq = req->first_seq;
        wan_grpc_server_ship_ack(st, &ack);
    }
    geogate__wan__v1__ship_request__free_unpacked(req, NULL);
    return WAN_GRPC_SHIP_TAKEN;
}

static void app_end(void *arg, void *stream_arg, struct wan_grpc_ship_stream *st)
{
    (void)arg;
    CHECK(stream_arg == &open_streams);
    wan_grpc_server_ship_finish(st, WAN_GRPC_OK, NULL);
}

static void app_closed(void *arg, void *stream_arg, struct wan_grpc_ship_stream *st, int status,
                       const char *why)
{
    (void)arg;
    CHECK(stream_arg == &open_streams);
    CHECK(status >= 0 && status < WAN_GRPC_STATUS_MAX && why != NULL);
    for (size_t i = 0; i < nbusy; i++) {
        if (busy_streams[i] == st) {
            busy_streams[i] = NULL; /* gone: must not be resumed */
        }
    }
    open_streams--;
    CHECK(open_streams >= 0);
}

static void app_read(void *arg, struct wan_grpc_read_call *call, const char *peer_site,
                     Geogate__Wan__V1__ReadRequest *req)
{
    static unsigned long reads;
    Geogate__Wan__V1__ReadResponse resp = GEOGATE__WAN__V1__READ_RESPONSE__INIT;

    (void)arg;
    CHECK(strcmp(peer_site, "eu-west") == 0);
    geogate__wan__v1__read_request__free_unpacked(req, NULL);
    if (++reads % 2 == 0 || ncalls == FUZZ_MAX_CALLS) {
        wan_grpc_server_read_reply(call, &resp);
        return;
    }
    calls[ncalls++] = call; /* answered later, perhaps after the caller is gone */
}

/* Backfill: accept, send one batch echoing the request's prefix, finish; refuse every
 * third call.  The request and what is sent are the fuzzer's to shape. */
static int app_backfill_open(void *arg, struct wan_grpc_backfill_call *call, const char *peer_site,
                             Geogate__Wan__V1__BackfillRequest *req, void **call_arg)
{
    static unsigned long opens;
    Geogate__Wan__V1__BackfillBatch b = GEOGATE__WAN__V1__BACKFILL_BATCH__INIT;
    int rc;

    (void)arg;
    CHECK(strcmp(peer_site, "eu-west") == 0);
    if (++opens % 3 == 0) {
        geogate__wan__v1__backfill_request__free_unpacked(req, NULL);
        return WAN_GRPC_UNAVAILABLE;
    }
    b.cursor = req->prefix;
    b.peer_items = req->rate;
    rc = wan_grpc_server_backfill_send(call, &b);
    CHECK(rc == 0 || rc == -ENOBUFS || rc == -EMSGSIZE);
    geogate__wan__v1__backfill_request__free_unpacked(req, NULL);
    wan_grpc_server_backfill_finish(call, WAN_GRPC_OK, NULL);
    *call_arg = &open_streams;
    return 0;
}

static void app_backfill_closed(void *arg, void *call_arg, struct wan_grpc_backfill_call *call,
                                int status, const char *why)
{
    (void)arg;
    (void)call;
    CHECK(call_arg == &open_streams);
    CHECK(status >= 0 && status < WAN_GRPC_STATUS_MAX && why != NULL);
}

static int app_health(void *arg, const char *service)
{
    (void)arg;
    CHECK(service != NULL);
    return service[0] == '\0'
               ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
               : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
}

static void setup(void)
{
    struct wan_grpc_server_config cfg;
    struct wan_grpc_server_callbacks cb;

    base = event_base_new();
    CHECK(base != NULL);
    memset(&cfg, 0, sizeof(cfg));
    cfg.max_message = FUZZ_MAX_MESSAGE;
    cfg.max_streams = 8;
    cfg.ack_queue_high = 64; /* reachable: a few acks pause the stream */
    cfg.log = fuzz_log;
    memset(&cb, 0, sizeof(cb));
    cb.ship_open = app_open;
    cb.ship_batch = app_batch;
    cb.ship_end = app_end;
    cb.ship_closed = app_closed;
    cb.read = app_read;
    cb.health = app_health;
    cb.backfill_open = app_backfill_open;
    cb.backfill_closed = app_backfill_closed;
    CHECK(wan_grpc_server_create(&srv, base, &cfg, &cb, NULL) == 0);
}

/* Let deferred work run, resume held streams, answer held calls. */
static void settle(struct wan_grpc_server_conn *conn)
{
    for (int round = 0; round < 4; round++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        for (size_t i = 0; i < nbusy; i++) {
            if (busy_streams[i] != NULL) {
                wan_grpc_server_ship_resume(busy_streams[i]);
                busy_streams[i] = NULL;
            }
        }
        nbusy = 0;
    }
    for (size_t i = 0; i < ncalls; i++) {
        if (i % 2 == 0) {
            wan_grpc_server_read_fail(calls[i], WAN_GRPC_UNAVAILABLE, "fuzz");
        } else {
            Geogate__Wan__V1__ReadResponse resp = GEOGATE__WAN__V1__READ_RESPONSE__INIT;

            wan_grpc_server_read_reply(calls[i], &resp);
        }
    }
    ncalls = 0;
    event_base_loop(base, EVLOOP_NONBLOCK);
    evbuffer_drain(wan_grpc_server_mem_output(conn),
                   evbuffer_get_length(wan_grpc_server_mem_output(conn)));
}

static void feed(struct wan_grpc_server_conn *conn, const uint8_t *data, size_t len, size_t cut)
{
    if (cut > len) {
        cut = len;
    }
    if (wan_grpc_server_mem_feed(conn, data, cut) == 0) {
        wan_grpc_server_mem_feed(conn, data + cut, len - cut);
    }
}

static void run_raw(const uint8_t *data, size_t len, int with_preface)
{
    struct wan_grpc_server_conn *conn;
    uint8_t *buf = malloc(NGHTTP2_CLIENT_MAGIC_LEN + 9 + len + 1);
    size_t n = 0;

    CHECK(buf != NULL);
    if (with_preface) {
        /* Preface and an empty SETTINGS frame, so the fuzzer starts inside a session. */
        static const uint8_t settings[9] = {0, 0, 0, NGHTTP2_SETTINGS, 0, 0, 0, 0, 0};

        memcpy(buf, NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN);
        n = NGHTTP2_CLIENT_MAGIC_LEN;
        memcpy(buf + n, settings, sizeof(settings));
        n += sizeof(settings);
    }
    if (len > 1) {
        memcpy(buf + n, data + 1, len - 1);
        n += len - 1;
    }
    CHECK(wan_grpc_server_mem_open(srv, "eu-west", &conn) == 0);
    feed(conn, buf, n, len > 0 ? n * data[0] / 256 : n);
    settle(conn);
    wan_grpc_server_mem_close(conn);
    free(buf);
}

struct body {
    const uint8_t *data;
    size_t len;
    int end;
};

static ssize_t body_read(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    struct body *b = source->ptr;
    size_t n = b->len < length ? b->len : length;

    (void)session;
    (void)stream_id;
    (void)user_data;
    memcpy(buf, b->data, n);
    b->data += n;
    b->len -= n;
    if (b->len == 0) {
        if (!b->end) {
            return n > 0 ? (ssize_t)n : NGHTTP2_ERR_DEFERRED;
        }
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return (ssize_t)n;
}

static void run_request(const uint8_t *data, size_t len)
{
    static const char *const paths[5] = {WAN_GRPC_PATH_SHIP, WAN_GRPC_PATH_READ,
                                         WAN_GRPC_PATH_HEALTH, "/geogate.wan.v1.Replication/X",
                                         WAN_GRPC_PATH_BACKFILL};
    uint8_t sel = len > 0 ? data[0] : 0, chunk = len > 1 ? data[1] : 0;
    const char *path = paths[(sel & 8) != 0 ? 4 : sel & 3];
    nghttp2_nv nva[] = {
        {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)":scheme", (uint8_t *)"https", 7, 5, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)":path", (uint8_t *)path, 5, strlen(path), NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)":authority", (uint8_t *)"us-east", 10, 7, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"te", (uint8_t *)"trailers", 2, 8, NGHTTP2_NV_FLAG_NONE},
    };
    struct body body = {len > 2 ? data + 2 : data, len > 2 ? len - 2 : 0, (sel & 4) == 0};
    nghttp2_session_callbacks *cbs;
    nghttp2_session *client;
    nghttp2_data_provider prd = {{.ptr = &body}, body_read};
    struct wan_grpc_server_conn *conn;
    struct evbuffer *wire = evbuffer_new();
    const uint8_t *out;
    ssize_t n;
    size_t step, total;
    uint8_t *flat;

    CHECK(wire != NULL);
    CHECK(nghttp2_session_callbacks_new(&cbs) == 0);
    CHECK(nghttp2_session_client_new(&client, cbs, NULL) == 0);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_submit_settings(client, NGHTTP2_FLAG_NONE, NULL, 0);
    CHECK(nghttp2_submit_request(client, NULL, nva, sizeof(nva) / sizeof(nva[0]), &prd, NULL) > 0);
    if (sel & 8) { /* a second stream on the same connection */
        nghttp2_submit_request(client, NULL, nva, sizeof(nva) / sizeof(nva[0]), NULL, NULL);
    }
    while ((n = nghttp2_session_mem_send(client, &out)) > 0) {
        evbuffer_add(wire, out, (size_t)n);
    }
    if (sel & 16) { /* the client gives up on the stream */
        nghttp2_submit_rst_stream(client, NGHTTP2_FLAG_NONE, 1, NGHTTP2_CANCEL);
        while ((n = nghttp2_session_mem_send(client, &out)) > 0) {
            evbuffer_add(wire, out, (size_t)n);
        }
    }
    nghttp2_session_del(client);

    CHECK(wan_grpc_server_mem_open(srv, "eu-west", &conn) == 0);
    total = evbuffer_get_length(wire);
    flat = evbuffer_pullup(wire, -1);
    step = (size_t)chunk + 1;
    for (size_t pos = 0; pos < total; pos += step) {
        size_t take = total - pos < step ? total - pos : step;

        if (wan_grpc_server_mem_feed(conn, flat + pos, take) != 0) {
            break;
        }
        if (chunk & 0x80) {
            settle(conn);
        }
    }
    settle(conn);
    wan_grpc_server_mem_close(conn);
    evbuffer_free(wire);
}

static void run_decoders(const uint8_t *data, size_t len)
{
    struct wan_grpc_deframer d;
    size_t pos = 0, step = len > 0 ? (size_t)data[0] % 17 + 1 : 1;
    Geogate__Wan__V1__ShipRequest *ship;
    Geogate__Wan__V1__ReadRequest *read;
    Grpc__Health__V1__HealthCheckRequest *health;

    ship = geogate__wan__v1__ship_request__unpack(NULL, len, data);
    if (ship != NULL) {
        for (size_t i = 0; i < ship->n_mutations; i++) {
            CHECK(ship->mutations[i] != NULL);
            CHECK(ship->mutations[i]->key.len == 0 || ship->mutations[i]->key.data != NULL);
        }
        geogate__wan__v1__ship_request__free_unpacked(ship, NULL);
    }
    read = geogate__wan__v1__read_request__unpack(NULL, len, data);
    if (read != NULL) {
        geogate__wan__v1__read_request__free_unpacked(read, NULL);
    }
    health = grpc__health__v1__health_check_request__unpack(NULL, len, data);
    if (health != NULL) {
        grpc__health__v1__health_check_request__free_unpacked(health, NULL);
    }
    {
        /* what a peer sends back when we are the client */
        Geogate__Wan__V1__BackfillRequest *bfr =
            geogate__wan__v1__backfill_request__unpack(NULL, len, data);
        Geogate__Wan__V1__BackfillBatch *bfb =
            geogate__wan__v1__backfill_batch__unpack(NULL, len, data);
        Geogate__Wan__V1__ShipAck *ack = geogate__wan__v1__ship_ack__unpack(NULL, len, data);
        Geogate__Wan__V1__ReadResponse *rr =
            geogate__wan__v1__read_response__unpack(NULL, len, data);
        Grpc__Health__V1__HealthCheckResponse *hr =
            grpc__health__v1__health_check_response__unpack(NULL, len, data);

        if (bfr != NULL) {
            geogate__wan__v1__backfill_request__free_unpacked(bfr, NULL);
        }
        if (bfb != NULL) {
            for (size_t i = 0; i < bfb->n_items; i++) {
                CHECK(bfb->items[i] != NULL);
            }
            geogate__wan__v1__backfill_batch__free_unpacked(bfb, NULL);
        }
        if (ack != NULL) {
            geogate__wan__v1__ship_ack__free_unpacked(ack, NULL);
        }
        if (rr != NULL) {
            geogate__wan__v1__read_response__free_unpacked(rr, NULL);
        }
        if (hr != NULL) {
            grpc__health__v1__health_check_response__free_unpacked(hr, NULL);
        }
    }

    wan_grpc_deframer_init(&d, FUZZ_MAX_MESSAGE);
    while (pos < len) {
        size_t take = len - pos < step ? len - pos : step;

        while (take > 0) {
            const uint8_t *msg = NULL;
            size_t used = 0, msg_len = 0;
            int rc = wan_grpc_deframer_feed(&d, data + pos, take, &used, &msg, &msg_len);

            CHECK(used <= take);
            pos += used;
            take -= used;
            if (rc < 0) {
                CHECK(wan_grpc_deframer_finish(&d) == rc);
                wan_grpc_deframer_free(&d);
                return;
            }
            if (rc == WAN_GRPC_FRAME_MESSAGE) {
                CHECK(msg != NULL && msg_len <= FUZZ_MAX_MESSAGE);
                ship = geogate__wan__v1__ship_request__unpack(NULL, msg_len, msg);
                if (ship != NULL) {
                    geogate__wan__v1__ship_request__free_unpacked(ship, NULL);
                }
            } else {
                CHECK(take == 0);
            }
        }
    }
    CHECK(wan_grpc_deframer_pending(&d) <= (size_t)FUZZ_MAX_MESSAGE + WAN_GRPC_FRAME_PREFIX);
    wan_grpc_deframer_finish(&d);
    wan_grpc_deframer_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (srv == NULL) {
        setup();
    }
    if (size == 0) {
        return 0;
    }
    switch (data[0] & 3) {
    case 0:
        run_raw(data + 1, size - 1, 1);
        break;
    case 1:
        run_request(data + 1, size - 1);
        break;
    case 2:
        run_decoders(data + 1, size - 1);
        break;
    default:
        run_raw(data + 1, size - 1, 0);
        break;
    }
    CHECK(open_streams == 0); /* every accepted Ship stream was closed with its connection */
    CHECK(ncalls == 0 && nbusy == 0);
    return 0;
}
