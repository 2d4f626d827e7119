/*
 * grpc_server_stream — one server stream's gRPC: route by :path, deframe and decode
 * the requests, refuse bad input (with a status and a log line) before the application
 * sees it, check a ShipRequest's origin_site against the certificate's site, hand
 * batches to the application and hold them while it is busy, and send its acks,
 * replies and Backfill batches as DATA and trailers.  The pictures are in
 * wan/grpc_server.h.
 *
 * It does not own connections, sockets or the nghttp2 session (wan/grpc_server.c
 * does) and does not decide acks.  WAN thread only.
 *
 * Input accounting (automatic WINDOW_UPDATE is off): every DATA byte nghttp2 hands us
 * counts in st->unconsumed until it is "consumed" (nghttp2_session_consume), which is
 * when the message it belongs to was taken by the application, or when the stream
 * fails or closes.  Bytes of a partial message or of a paused stream stay unconsumed,
 * so the peer can never have more than one stream window (one message + prefix) of
 * them outstanding per stream, nor more than the connection window in all.
 *
 * Output: each stream's framed messages wait in st->out, and its data provider hands
 * them to nghttp2, which asks only while the peer's windows are open (it says DEFERRED
 * when `out` is empty; queueing resumes it).  So what a slow peer does not read stays in
 * `out`, bounded by ack_queue_high (Ship: we stop reading its batches) or backfill_high
 * (Backfill: backfill_send refuses until the queue is down to a quarter).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "proto/geogate_wan.pb-c.h"
#include "proto/health.pb-c.h"
#include "wan/grpc_frame.h"
#include "wan/grpc_h2.h"
#include "wan/grpc_server.h"
#include "wan/grpc_server_int.h"

/* One name a line, like the other string tables (clang-format would pack five). */
/* clang-format off */
static const char *const kind_names[WAN_GRPC_SK_MAX] = {
    [WAN_GRPC_SK_UNKNOWN] = "unknown",
    [WAN_GRPC_SK_SHIP] = "Ship",
    [WAN_GRPC_SK_READ] = "Read",
    [WAN_GRPC_SK_HEALTH] = "Health/Check",
    [WAN_GRPC_SK_BACKFILL] = "Backfill",
};
/* clang-format on */

/* ---- output ------------------------------------------------------------------------ */

static void stream_resume_output(struct wan_grpc_ship_stream *st)
{
    if (st->deferred) {
        st->deferred = 0;
        nghttp2_session_resume_data(st->conn->h2.session, st->id);
    }
    wan_grpc_h2_kick(&st->conn->h2);
}

static int submit_trailers(struct wan_grpc_ship_stream *st, int trailers_only)
{
    char status[8], message[600];
    nghttp2_nv nva[5];
    size_t n = 0;

    snprintf(status, sizeof(status), "%d", st->status);
    wan_grpc_message_encode(st->message, message, sizeof(message));
    if (trailers_only) {
        nva[n++] = (nghttp2_nv)WAN_GRPC_NV(":status", "200");
        nva[n++] = (nghttp2_nv)WAN_GRPC_NV("content-type", "application/grpc");
    }
    nva[n++] = wan_grpc_nv("grpc-status", status);
    if (message[0] != '\0') {
        nva[n++] = wan_grpc_nv("grpc-message", message);
    }
    st->trailers_submitted = 1;
    if (trailers_only) {
        return nghttp2_submit_response(st->conn->h2.session, st->id, nva, n, NULL);
    }
    return nghttp2_submit_trailer(st->conn->h2.session, st->id, nva, n);
}

static ssize_t stream_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                              size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                              void *user_data)
{
    struct wan_grpc_ship_stream *st = source->ptr;
    struct wan_grpc_server *srv = st->conn->srv;
    size_t before = evbuffer_get_length(st->out);
    int n = 0;

    (void)session;
    (void)stream_id;
    (void)user_data;
    if (before > 0) {
        n = evbuffer_remove(st->out, buf, length);
        if (n < 0) {
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
    }
    if (evbuffer_get_length(st->out) == 0 && st->finishing) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        if (submit_trailers(st, 0) != 0) {
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        return n;
    }
    if (n == 0) {
        st->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    /* Acks drained below the mark: a stream paused on them may read again. */
    if (st->kind == WAN_GRPC_SK_SHIP && before >= srv->cfg.ack_queue_high &&
        evbuffer_get_length(st->out) < srv->cfg.ack_queue_high) {
        st->resume_pending = 1;
        wan_grpc_h2_kick(&st->conn->h2);
    }
    /* A Backfill queue down to the low mark: the application hears backfill_writable at
     * the next safe point (outside nghttp2). */
    if (st->kind == WAN_GRPC_SK_BACKFILL && st->want_writable &&
        evbuffer_get_length(st->out) <= srv->backfill_low) {
        st->want_writable = 0;
        st->resume_pending = 1;
        wan_grpc_h2_kick(&st->conn->h2);
    }
    return n;
}

/* Send response HEADERS (200, application/grpc) with `out` as the body. */
static int stream_start_response(struct wan_grpc_ship_stream *st)
{
    nghttp2_nv nva[] = {
        WAN_GRPC_NV(":status", "200"),
        WAN_GRPC_NV("content-type", "application/grpc"),
        WAN_GRPC_NV("grpc-accept-encoding", "identity"),
    };
    nghttp2_data_provider prd;

    if (st->response_started) {
        return 0;
    }
    prd.source.ptr = st;
    prd.read_callback = stream_read_cb;
    st->response_started = 1;
    return nghttp2_submit_response(st->conn->h2.session, st->id, nva, sizeof(nva) / sizeof(nva[0]),
                                   &prd);
}

/* Queue one framed message for the peer.  Returns 0 or -ENOMEM. */
static int stream_queue_message(struct wan_grpc_ship_stream *st, const ProtobufCMessage *msg)
{
    size_t size = wan_grpc_frame_size(msg);
    struct evbuffer_iovec v;

    if (evbuffer_reserve_space(st->out, (ev_ssize_t)size, &v, 1) < 1 || v.iov_len < size) {
        return -ENOMEM;
    }
    if (wan_grpc_frame_write(msg, v.iov_base) != size) {
        return -ENOMEM;
    }
    v.iov_len = size;
    return evbuffer_commit_space(st->out, &v, 1) == 0 ? 0 : -ENOMEM;
}

/* End the stream with status/message after what is queued (or at once, as a
 * trailers-only response, when no response has started). */
static void stream_finish(struct wan_grpc_ship_stream *st, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void stream_finish(struct wan_grpc_ship_stream *st, int status, const char *fmt, ...)
{
    va_list ap;

    if (st->finishing || st->trailers_submitted) {
        return;
    }
    st->finishing = 1;
    st->status = status;
    st->message[0] = '\0';
    if (fmt != NULL) {
        va_start(ap, fmt);
        vsnprintf(st->message, sizeof(st->message), fmt, ap);
        va_end(ap);
    }
    if (st->opening) {
        return; /* backfill_open accepting: the response starts when it returns */
    }
    if (!st->response_started) {
        st->response_started = 1;
        if (submit_trailers(st, 1) != 0) {
            nghttp2_submit_rst_stream(st->conn->h2.session, NGHTTP2_FLAG_NONE, st->id,
                                      NGHTTP2_INTERNAL_ERROR);
        }
        wan_grpc_h2_kick(&st->conn->h2);
        return;
    }
    stream_resume_output(st);
}

/* Give `n` received bytes back to the peer's windows. */
void wan_grpc_sstream_consume(struct wan_grpc_ship_stream *st, size_t n)
{
    if (n > st->unconsumed) {
        n = st->unconsumed;
    }
    if (n == 0) {
        return;
    }
    st->unconsumed -= n;
    nghttp2_session_consume(st->conn->h2.session, st->id, n);
}

static void stream_drop_input(struct wan_grpc_ship_stream *st)
{
    if (st->held != NULL) {
        geogate__wan__v1__ship_request__free_unpacked(st->held, NULL);
        st->held = NULL;
    }
    if (st->backlog != NULL) {
        evbuffer_drain(st->backlog, evbuffer_get_length(st->backlog));
    }
    wan_grpc_deframer_free(&st->df);
    wan_grpc_sstream_consume(st, st->unconsumed);
}

/* Refuse the stream for bad input: one log line, a status, nothing more read. */
static void stream_fail(struct wan_grpc_ship_stream *st, int status, const char *what)
{
    struct wan_grpc_server_conn *conn = st->conn;

    wan_grpc_server_log(conn->srv, WAN_GRPC_LOG_WARN, "%s: %s stream %d: %s: refused with %s",
                        conn->h2.peer, kind_names[st->kind], (int)st->id, what,
                        wan_grpc_status_name(status));
    st->failed = 1;
    st->paused = 0;
    stream_drop_input(st);
    stream_finish(st, status, "%s", what);
}

static int frame_error_status(int rc)
{
    if (rc == -WAN_GRPC_FRAME_ETOOBIG || rc == -WAN_GRPC_FRAME_ENOMEM) {
        return WAN_GRPC_RESOURCE_EXHAUSTED;
    }
    return WAN_GRPC_INVALID_ARGUMENT;
}

static void stream_frame_error(struct wan_grpc_ship_stream *st, int rc)
{
    char what[160];

    if (rc == -WAN_GRPC_FRAME_ETOOBIG) {
        snprintf(what, sizeof(what), "message of %u bytes is over the limit of %u bytes",
                 (unsigned)st->df.len, (unsigned)st->df.max_len);
    } else {
        snprintf(what, sizeof(what), "%s", wan_grpc_frame_strerror(rc));
    }
    stream_fail(st, frame_error_status(rc), what);
}

/* ---- Ship input ------------------------------------------------------------------------ */

static void ship_notify_end(struct wan_grpc_ship_stream *st)
{
    struct wan_grpc_server *srv = st->conn->srv;

    if (st->end_notified || st->failed || st->finishing) {
        return;
    }
    st->end_notified = 1;
    if (srv->cb.ship_end != NULL) {
        srv->cb.ship_end(srv->cb_arg, st->app_arg, st);
    } else {
        stream_finish(st, WAN_GRPC_OK, NULL);
    }
}

/* Offer one decoded batch.  Returns 1 if taken, 0 if the application is busy. */
static int ship_offer(struct wan_grpc_ship_stream *st, Geogate__Wan__V1__ShipRequest *req,
                      size_t wire_bytes)
{
    struct wan_grpc_server *srv = st->conn->srv;
    int rc = WAN_GRPC_SHIP_TAKEN;

    if (srv->cb.ship_batch != NULL) {
        rc = srv->cb.ship_batch(srv->cb_arg, st->app_arg, st, req);
    } else {
        geogate__wan__v1__ship_request__free_unpacked(req, NULL);
    }
    if (rc == WAN_GRPC_SHIP_BUSY) {
        st->held = req;
        st->held_bytes = wire_bytes;
        st->paused = 1;
        return 0;
    }
    wan_grpc_sstream_consume(st, wire_bytes);
    return 1;
}

/* Deframe and deliver from data until done, paused or failed.  Returns bytes used. */
static size_t ship_feed(struct wan_grpc_ship_stream *st, const uint8_t *data, size_t len)
{
    struct wan_grpc_server_conn *conn = st->conn;
    struct wan_grpc_server *srv = conn->srv;
    size_t pos = 0;

    while (pos < len && !st->paused && !st->failed && !st->finishing) {
        const uint8_t *msg = NULL;
        size_t used = 0, msg_len = 0;
        Geogate__Wan__V1__ShipRequest *req;
        int rc;

        if (evbuffer_get_length(st->out) >= srv->cfg.ack_queue_high) {
            st->paused = 1; /* the peer does not read its acks: stop reading its batches */
            break;
        }
        rc = wan_grpc_deframer_feed(&st->df, data + pos, len - pos, &used, &msg, &msg_len);
        pos += used;
        if (rc < 0) {
            stream_frame_error(st, rc);
            return len;
        }
        if (rc == WAN_GRPC_FRAME_MORE) {
            break;
        }
        req = geogate__wan__v1__ship_request__unpack(NULL, msg_len, msg);
        if (req == NULL) {
            char what[96];

            snprintf(what, sizeof(what), "malformed ShipRequest (%zu bytes)", msg_len);
            stream_fail(st, WAN_GRPC_INVALID_ARGUMENT, what);
            return len;
        }
        if (req->origin_site == NULL || strcmp(req->origin_site, conn->site) != 0) {
            char what[TLS_SITE_MAX + 160];

            snprintf(what, sizeof(what),
                     "ShipRequest claims origin_site '%.64s' but the certificate names '%s'",
                     req->origin_site ? req->origin_site : "", conn->site);
            geogate__wan__v1__ship_request__free_unpacked(req, NULL);
            stream_fail(st, WAN_GRPC_PERMISSION_DENIED, what);
            return len;
        }
        ship_offer(st, req, WAN_GRPC_FRAME_PREFIX + msg_len);
    }
    return pos;
}

/* A Backfill queue drained to the low mark: the application may send again. */
static void backfill_notify_writable(struct wan_grpc_ship_stream *st)
{
    struct wan_grpc_server *srv = st->conn->srv;

    if (!st->app_open || st->gone || st->finishing || st->trailers_submitted) {
        return;
    }
    if (srv->cb.backfill_writable != NULL) {
        srv->cb.backfill_writable(srv->cb_arg, st->app_arg, &st->bf);
    }
}

/* Take up a paused stream again: the held batch first, then the backlog. */
void wan_grpc_sstream_resume(struct wan_grpc_ship_stream *st)
{
    struct wan_grpc_server *srv = st->conn->srv;

    st->resume_pending = 0;
    if (st->kind == WAN_GRPC_SK_BACKFILL) {
        backfill_notify_writable(st);
        return;
    }
    if (st->failed || st->finishing) {
        return;
    }
    if (evbuffer_get_length(st->out) >= srv->cfg.ack_queue_high) {
        return; /* still waiting for the peer to read acks */
    }
    if (st->held != NULL) {
        Geogate__Wan__V1__ShipRequest *req = st->held;

        st->held = NULL;
        st->paused = 0;
        if (!ship_offer(st, req, st->held_bytes)) {
            return;
        }
    }
    st->paused = 0;
    while (st->backlog != NULL && evbuffer_get_length(st->backlog) > 0 && !st->paused &&
           !st->failed && !st->finishing) {
        struct evbuffer_iovec v;
        size_t used;

        if (evbuffer_peek(st->backlog, -1, NULL, &v, 1) < 1) {
            break;
        }
        used = ship_feed(st, v.iov_base, v.iov_len);
        if (st->failed) {
            break;
        }
        evbuffer_drain(st->backlog, used);
        if (used < v.iov_len) {
            break;
        }
    }
    if (st->remote_ended && !st->paused && !st->failed &&
        (st->backlog == NULL || evbuffer_get_length(st->backlog) == 0)) {
        int rc = wan_grpc_deframer_finish(&st->df);

        if (rc < 0) {
            stream_frame_error(st, rc);
            return;
        }
        ship_notify_end(st);
    }
    wan_grpc_h2_kick(&st->conn->h2);
}

static void ship_data(struct wan_grpc_ship_stream *st, const uint8_t *data, size_t len)
{
    size_t used = 0;

    if (!st->paused && (st->backlog == NULL || evbuffer_get_length(st->backlog) == 0)) {
        used = ship_feed(st, data, len);
    }
    if (used < len && !st->failed && !st->finishing) {
        if (st->backlog == NULL) {
            st->backlog = evbuffer_new();
        }
        if (st->backlog == NULL || evbuffer_add(st->backlog, data + used, len - used) != 0) {
            stream_fail(st, WAN_GRPC_RESOURCE_EXHAUSTED, "out of memory for stream input");
        }
    }
}

static void ship_remote_end(struct wan_grpc_ship_stream *st)
{
    int rc;

    if (st->failed || st->finishing) {
        return;
    }
    if (st->paused || (st->backlog != NULL && evbuffer_get_length(st->backlog) > 0)) {
        return; /* ship_resume() notices the end once the backlog is through */
    }
    rc = wan_grpc_deframer_finish(&st->df);
    if (rc < 0) {
        stream_frame_error(st, rc);
        return;
    }
    ship_notify_end(st);
}

/* ---- request input (unary calls and Backfill: one message, then END_STREAM) ------------ */

static void unary_data(struct wan_grpc_ship_stream *st, const uint8_t *data, size_t len)
{
    size_t pos = 0;

    while (pos < len && !st->failed && !st->finishing) {
        const uint8_t *msg = NULL;
        size_t used = 0, msg_len = 0;
        int rc = wan_grpc_deframer_feed(&st->df, data + pos, len - pos, &used, &msg, &msg_len);

        pos += used;
        if (rc < 0) {
            stream_frame_error(st, rc);
            return;
        }
        if (rc == WAN_GRPC_FRAME_MORE) {
            break;
        }
        if (st->request != NULL) {
            stream_fail(st, WAN_GRPC_INVALID_ARGUMENT, "more than one request message");
            return;
        }
        if (st->kind == WAN_GRPC_SK_READ) {
            st->request =
                (ProtobufCMessage *)geogate__wan__v1__read_request__unpack(NULL, msg_len, msg);
        } else if (st->kind == WAN_GRPC_SK_BACKFILL) {
            st->request =
                (ProtobufCMessage *)geogate__wan__v1__backfill_request__unpack(NULL, msg_len, msg);
        } else {
            st->request = (ProtobufCMessage *)grpc__health__v1__health_check_request__unpack(
                NULL, msg_len, msg);
        }
        if (st->request == NULL) {
            char what[96];

            snprintf(what, sizeof(what), "malformed %s (%zu bytes)",
                     st->kind == WAN_GRPC_SK_READ       ? "ReadRequest"
                     : st->kind == WAN_GRPC_SK_BACKFILL ? "BackfillRequest"
                                                        : "HealthCheckRequest",
                     msg_len);
            stream_fail(st, WAN_GRPC_INVALID_ARGUMENT, what);
            return;
        }
    }
}

static void health_answer(struct wan_grpc_ship_stream *st)
{
    struct wan_grpc_server *srv = st->conn->srv;
    Grpc__Health__V1__HealthCheckRequest *req = (Grpc__Health__V1__HealthCheckRequest *)st->request;
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    int serving = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;

    if (srv->cb.health != NULL) {
        serving = srv->cb.health(srv->cb_arg, req->service ? req->service : "");
    }
    if (serving == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN) {
        stream_finish(st, WAN_GRPC_NOT_FOUND, "unknown service");
        return;
    }
    resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)serving;
    if (stream_queue_message(st, &resp.base) != 0 || stream_start_response(st) != 0) {
        stream_finish(st, WAN_GRPC_INTERNAL, "out of memory");
        return;
    }
    stream_finish(st, WAN_GRPC_OK, NULL);
}

static void read_dispatch(struct wan_grpc_ship_stream *st)
{
    struct wan_grpc_server *srv = st->conn->srv;
    struct wan_grpc_read_call *call = calloc(1, sizeof(*call));
    Geogate__Wan__V1__ReadRequest *req = (Geogate__Wan__V1__ReadRequest *)st->request;

    if (call == NULL) {
        stream_finish(st, WAN_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    call->srv = srv;
    call->st = st;
    call->next = srv->calls;
    if (srv->calls != NULL) {
        srv->calls->prev = call;
    }
    srv->calls = call;
    st->call = call;
    st->request = NULL; /* the application's now */
    srv->cb.read(srv->cb_arg, call, st->conn->site, req);
}

/* The request is in: offer the call to the application.  It may send batches and even
 * finish from inside backfill_open; the response HEADERS go out first either way. */
static void backfill_dispatch(struct wan_grpc_ship_stream *st)
{
    struct wan_grpc_server_conn *conn = st->conn;
    struct wan_grpc_server *srv = conn->srv;
    Geogate__Wan__V1__BackfillRequest *req = (Geogate__Wan__V1__BackfillRequest *)st->request;
    void *call_arg = NULL;
    int rc;

    st->request = NULL; /* the application's now, whatever it answers */
    st->bf.st = st;
    st->opening = 1;
    rc = srv->cb.backfill_open(srv->cb_arg, &st->bf, conn->site, req, &call_arg);
    st->opening = 0;
    if (rc != 0) {
        wan_grpc_server_log(srv, WAN_GRPC_LOG_INFO,
                            "%s: Backfill call %d refused by the application: %s", conn->h2.peer,
                            (int)st->id, wan_grpc_status_name(rc));
        /* Whatever it queued before refusing goes nowhere. */
        evbuffer_drain(st->out, evbuffer_get_length(st->out));
        st->finishing = 0;
        st->failed = 1;
        stream_finish(st, rc > 0 && rc < WAN_GRPC_STATUS_MAX ? rc : WAN_GRPC_UNAVAILABLE,
                      "Backfill call refused");
        return;
    }
    st->app_open = 1;
    st->app_arg = call_arg;
    wan_grpc_server_log(srv, WAN_GRPC_LOG_INFO, "%s: Backfill call %d open", conn->h2.peer,
                        (int)st->id);
    if (stream_start_response(st) != 0) {
        /* Not even HEADERS could be queued: reset; on_stream_close tells the application. */
        nghttp2_submit_rst_stream(conn->h2.session, NGHTTP2_FLAG_NONE, st->id,
                                  NGHTTP2_INTERNAL_ERROR);
    }
    wan_grpc_h2_kick(&conn->h2);
}

static void unary_remote_end(struct wan_grpc_ship_stream *st)
{
    int rc;

    if (st->failed || st->finishing) {
        return;
    }
    rc = wan_grpc_deframer_finish(&st->df);
    if (rc < 0) {
        stream_frame_error(st, rc);
        return;
    }
    if (st->request == NULL) {
        stream_fail(st, WAN_GRPC_INVALID_ARGUMENT, "no request message");
        return;
    }
    if (st->kind == WAN_GRPC_SK_HEALTH) {
        health_answer(st);
    } else if (st->kind == WAN_GRPC_SK_BACKFILL) {
        backfill_dispatch(st);
    } else {
        read_dispatch(st);
    }
}

void wan_grpc_sstream_data(struct wan_grpc_ship_stream *st, const uint8_t *data, size_t len)
{
    if (st->failed || st->finishing || st->remote_ended) {
        wan_grpc_sstream_consume(st, len);
        return;
    }
    if (st->kind == WAN_GRPC_SK_SHIP) {
        ship_data(st, data, len);
    } else {
        /* Read, Health and Backfill: one request message, taken whole. */
        unary_data(st, data, len);
        wan_grpc_sstream_consume(st, len); /* bounded by the deframer's limit: one message */
    }
}

/* ---- streams --------------------------------------------------------------------------- */

struct wan_grpc_ship_stream *wan_grpc_sstream_new(struct wan_grpc_server_conn *conn, int32_t id)
{
    struct wan_grpc_ship_stream *st = calloc(1, sizeof(*st));

    if (st == NULL) {
        return NULL;
    }
    st->out = evbuffer_new();
    if (st->out == NULL) {
        free(st);
        return NULL;
    }
    st->conn = conn;
    st->id = id;
    wan_grpc_deframer_init(&st->df, conn->srv->cfg.max_message);
    st->next = conn->streams;
    if (conn->streams != NULL) {
        conn->streams->prev = st;
    }
    conn->streams = st;
    return st;
}

/* Unlink and free a stream; tell the application if it had accepted it. */
void wan_grpc_sstream_free(struct wan_grpc_ship_stream *st, int status, const char *why)
{
    struct wan_grpc_server_conn *conn = st->conn;
    struct wan_grpc_server *srv = conn->srv;

    if (st->prev != NULL) {
        st->prev->next = st->next;
    } else {
        conn->streams = st->next;
    }
    if (st->next != NULL) {
        st->next->prev = st->prev;
    }
    if (conn->h2.session != NULL) {
        nghttp2_session_set_stream_user_data(conn->h2.session, st->id, NULL);
        if (st->unconsumed > 0) {
            nghttp2_session_consume_connection(conn->h2.session, st->unconsumed);
        }
    }
    if (st->call != NULL) {
        st->call->st = NULL;
    }
    if (st->app_open) {
        st->app_open = 0;
        st->gone = 1; /* backfill_send / _finish from inside the callback: -EPIPE */
        if (st->kind == WAN_GRPC_SK_SHIP && srv->cb.ship_closed != NULL) {
            srv->cb.ship_closed(srv->cb_arg, st->app_arg, st, status, why);
        } else if (st->kind == WAN_GRPC_SK_BACKFILL && srv->cb.backfill_closed != NULL) {
            srv->cb.backfill_closed(srv->cb_arg, st->app_arg, &st->bf, status, why);
        }
    }
    if (st->held != NULL) {
        geogate__wan__v1__ship_request__free_unpacked(st->held, NULL);
    }
    if (st->request != NULL) {
        protobuf_c_message_free_unpacked(st->request, NULL);
    }
    if (st->backlog != NULL) {
        evbuffer_free(st->backlog);
    }
    evbuffer_free(st->out);
    wan_grpc_deframer_free(&st->df);
    free(st);
}

static int content_type_ok(const uint8_t *v, size_t len)
{
    static const char ct[] = "application/grpc";
    size_t n = sizeof(ct) - 1;

    if (len < n || strncasecmp((const char *)v, ct, n) != 0) {
        return 0;
    }
    return len == n || v[n] == '+' || v[n] == ';';
}

/* All request headers are in: route the stream. */
void wan_grpc_sstream_route(struct wan_grpc_ship_stream *st)
{
    struct wan_grpc_server_conn *conn = st->conn;
    struct wan_grpc_server *srv = conn->srv;
    int rc;

    if (st->bad_content_type || st->bad_method) {
        nghttp2_nv nva[] = {WAN_GRPC_NV(":status", "415")};

        wan_grpc_server_log(srv, WAN_GRPC_LOG_WARN, "%s: stream %d: %s: answered HTTP 415",
                            conn->h2.peer, (int)st->id,
                            st->bad_method ? "method is not POST" : "content-type is not gRPC");
        st->failed = 1;
        st->response_started = 1;
        st->trailers_submitted = 1;
        nghttp2_submit_response(conn->h2.session, st->id, nva, 1, NULL);
        return;
    }
    if (st->bad_encoding[0] != '\0') {
        char what[96];

        snprintf(what, sizeof(what), "grpc-encoding '%s' is not supported", st->bad_encoding);
        stream_fail(st, WAN_GRPC_UNIMPLEMENTED, what);
        return;
    }
    if (st->kind == WAN_GRPC_SK_UNKNOWN ||
        (st->kind == WAN_GRPC_SK_SHIP && srv->cb.ship_open == NULL) ||
        (st->kind == WAN_GRPC_SK_READ && srv->cb.read == NULL) ||
        (st->kind == WAN_GRPC_SK_BACKFILL && srv->cb.backfill_open == NULL)) {
        wan_grpc_server_log(srv, WAN_GRPC_LOG_INFO,
                            "%s: stream %d: unknown method %s: UNIMPLEMENTED", conn->h2.peer,
                            (int)st->id, st->path);
        st->failed = 1;
        stream_finish(st, WAN_GRPC_UNIMPLEMENTED, "unknown method %s", st->path);
        return;
    }
    if (st->kind != WAN_GRPC_SK_SHIP) {
        return;
    }
    rc = srv->cb.ship_open(srv->cb_arg, st, conn->site, &st->app_arg);
    if (rc != 0) {
        wan_grpc_server_log(srv, WAN_GRPC_LOG_INFO,
                            "%s: Ship stream %d refused by the application: %s", conn->h2.peer,
                            (int)st->id, wan_grpc_status_name(rc));
        st->failed = 1;
        stream_finish(st, rc > 0 ? rc : WAN_GRPC_UNAVAILABLE, "Ship stream refused");
        return;
    }
    st->app_open = 1;
    wan_grpc_server_log(srv, WAN_GRPC_LOG_INFO, "%s: Ship stream %d open", conn->h2.peer,
                        (int)st->id);
    if (stream_start_response(st) != 0) {
        stream_finish(st, WAN_GRPC_INTERNAL, "cannot start the response");
    }
}

void wan_grpc_sstream_remote_end(struct wan_grpc_ship_stream *st)
{
    if (st->remote_ended) {
        return;
    }
    st->remote_ended = 1;
    if (st->failed) {
        return;
    }
    if (st->kind == WAN_GRPC_SK_SHIP) {
        ship_remote_end(st);
    } else if (st->kind == WAN_GRPC_SK_READ || st->kind == WAN_GRPC_SK_HEALTH ||
               st->kind == WAN_GRPC_SK_BACKFILL) {
        unary_remote_end(st);
    }
}

void wan_grpc_sstream_header(struct wan_grpc_ship_stream *st, const uint8_t *name, size_t namelen,
                             const uint8_t *value, size_t valuelen)
{
    if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
        size_t n = valuelen < sizeof(st->path) - 1 ? valuelen : sizeof(st->path) - 1;

        memcpy(st->path, value, n);
        st->path[n] = '\0';
        for (size_t i = 0; i < n; i++) {
            if (st->path[i] < 0x20 || st->path[i] > 0x7e) {
                st->path[i] = '?';
            }
        }
        if (valuelen == strlen(WAN_GRPC_PATH_SHIP) &&
            memcmp(value, WAN_GRPC_PATH_SHIP, valuelen) == 0) {
            st->kind = WAN_GRPC_SK_SHIP;
        } else if (valuelen == strlen(WAN_GRPC_PATH_READ) &&
                   memcmp(value, WAN_GRPC_PATH_READ, valuelen) == 0) {
            st->kind = WAN_GRPC_SK_READ;
        } else if (valuelen == strlen(WAN_GRPC_PATH_HEALTH) &&
                   memcmp(value, WAN_GRPC_PATH_HEALTH, valuelen) == 0) {
            st->kind = WAN_GRPC_SK_HEALTH;
        } else if (valuelen == strlen(WAN_GRPC_PATH_BACKFILL) &&
                   memcmp(value, WAN_GRPC_PATH_BACKFILL, valuelen) == 0) {
            st->kind = WAN_GRPC_SK_BACKFILL;
        }
    } else if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
        st->bad_method = !(valuelen == 4 && memcmp(value, "POST", 4) == 0);
    } else if (namelen == 12 && memcmp(name, "content-type", 12) == 0) {
        st->bad_content_type = !content_type_ok(value, valuelen);
    } else if (namelen == 13 && memcmp(name, "grpc-encoding", 13) == 0) {
        if (!(valuelen == 8 && memcmp(value, "identity", 8) == 0)) {
            size_t n =
                valuelen < sizeof(st->bad_encoding) - 1 ? valuelen : sizeof(st->bad_encoding) - 1;

            for (size_t i = 0; i < n; i++) {
                st->bad_encoding[i] = (value[i] >= 0x20 && value[i] <= 0x7e) ? (char)value[i] : '?';
            }
            st->bad_encoding[n] = '\0';
            if (n == 0) {
                snprintf(st->bad_encoding, sizeof(st->bad_encoding), "(empty)");
            }
        }
    }
}

/* ---- the application's side ------------------------------------------------------------ */

int wan_grpc_server_ship_ack(struct wan_grpc_ship_stream *st, const Geogate__Wan__V1__ShipAck *ack)
{
    if (st->finishing || st->trailers_submitted) {
        return -EPIPE;
    }
    /* The peer would refuse it (and drop the link): an ack carrying items travelling
     * back must stay within the limit; the caller splits or sends fewer. */
    if (protobuf_c_message_get_packed_size(&ack->base) > st->conn->srv->cfg.max_message) {
        return -EMSGSIZE;
    }
    if (stream_queue_message(st, &ack->base) != 0) {
        return -ENOMEM;
    }
    stream_resume_output(st);
    return 0;
}

int wan_grpc_server_ship_resume(struct wan_grpc_ship_stream *st)
{
    if (st->failed || st->finishing || st->trailers_submitted) {
        return -EPIPE;
    }
    st->resume_pending = 1;
    wan_grpc_h2_kick(&st->conn->h2);
    return 0;
}

int wan_grpc_server_ship_finish(struct wan_grpc_ship_stream *st, int grpc_status,
                                const char *message)
{
    if (st->finishing || st->trailers_submitted) {
        return -EPIPE;
    }
    stream_drop_input(st);
    st->failed = 1; /* anything the peer still sends is discarded */
    stream_finish(st, grpc_status, "%s", message ? message : "");
    return 0;
}

const char *wan_grpc_server_ship_peer(const struct wan_grpc_ship_stream *st)
{
    return st->conn->site;
}

size_t wan_grpc_server_ship_queued(const struct wan_grpc_ship_stream *st)
{
    return evbuffer_get_length(st->out);
}

static void call_free(struct wan_grpc_read_call *call)
{
    struct wan_grpc_server *srv = call->srv;

    if (call->prev != NULL) {
        call->prev->next = call->next;
    } else {
        srv->calls = call->next;
    }
    if (call->next != NULL) {
        call->next->prev = call->prev;
    }
    if (call->st != NULL) {
        call->st->call = NULL;
    }
    free(call);
}

int wan_grpc_server_read_reply(struct wan_grpc_read_call *call,
                               const Geogate__Wan__V1__ReadResponse *resp)
{
    struct wan_grpc_ship_stream *st = call->st;
    size_t size;
    int rc = 0;

    if (st == NULL || st->finishing || st->trailers_submitted) {
        call_free(call);
        return -ENOTCONN;
    }
    size = protobuf_c_message_get_packed_size(&resp->base);
    if (size > st->conn->srv->cfg.max_message) {
        wan_grpc_server_log(st->conn->srv, WAN_GRPC_LOG_WARN,
                            "%s: Read reply of %zu bytes is over the limit of %u bytes",
                            st->conn->h2.peer, size, (unsigned)st->conn->srv->cfg.max_message);
        stream_finish(st, WAN_GRPC_RESOURCE_EXHAUSTED, "response too large (%zu bytes)", size);
        rc = -EMSGSIZE;
    } else if (stream_queue_message(st, &resp->base) != 0 || stream_start_response(st) != 0) {
        stream_finish(st, WAN_GRPC_INTERNAL, "out of memory");
        rc = -ENOMEM;
    } else {
        stream_finish(st, WAN_GRPC_OK, NULL);
    }
    call_free(call);
    return rc;
}

int wan_grpc_server_read_fail(struct wan_grpc_read_call *call, int grpc_status, const char *message)
{
    struct wan_grpc_ship_stream *st = call->st;

    if (st == NULL || st->finishing || st->trailers_submitted) {
        call_free(call);
        return -ENOTCONN;
    }
    if (grpc_status <= 0 || grpc_status >= WAN_GRPC_STATUS_MAX) {
        grpc_status = WAN_GRPC_UNKNOWN;
    }
    stream_finish(st, grpc_status, "%s", message ? message : "");
    call_free(call);
    return 0;
}

/* ---- Backfill, the application's side -------------------------------------------------- */

int wan_grpc_server_backfill_send(struct wan_grpc_backfill_call *call,
                                  const Geogate__Wan__V1__BackfillBatch *b)
{
    struct wan_grpc_ship_stream *st = call->st;
    struct wan_grpc_server *srv = st->conn->srv;

    if (st->gone || st->finishing || st->trailers_submitted || st->conn->h2.closing) {
        return -EPIPE; /* a closing connection: backfill_closed follows */
    }
    /* The caller would refuse it and lose the call: the application makes smaller ones. */
    if (protobuf_c_message_get_packed_size(&b->base) > srv->cfg.max_message) {
        return -EMSGSIZE;
    }
    if (evbuffer_get_length(st->out) >= srv->cfg.backfill_high) {
        st->want_writable = 1;
        return -ENOBUFS;
    }
    if (stream_queue_message(st, &b->base) != 0) {
        return -ENOMEM;
    }
    if (evbuffer_get_length(st->out) >= srv->cfg.backfill_high) {
        st->want_writable = 1;
    }
    if (!st->opening) {
        stream_resume_output(st);
    }
    return 0;
}

int wan_grpc_server_backfill_finish(struct wan_grpc_backfill_call *call, int grpc_status,
                                    const char *message)
{
    struct wan_grpc_ship_stream *st = call->st;

    if (st->gone || st->finishing || st->trailers_submitted || st->conn->h2.closing) {
        return -EPIPE;
    }
    if (grpc_status < 0 || grpc_status >= WAN_GRPC_STATUS_MAX) {
        grpc_status = WAN_GRPC_UNKNOWN;
    }
    stream_finish(st, grpc_status, "%s", message ? message : "");
    return 0;
}

size_t wan_grpc_server_backfill_queued(const struct wan_grpc_backfill_call *call)
{
    return evbuffer_get_length(call->st->out);
}
