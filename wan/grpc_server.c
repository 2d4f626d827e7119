/*
 * grpc_server — the WAN gRPC server: accepts TLS connections (tls/tls.h), runs one
 * nghttp2 server session per connection (wan/grpc_h2.c moves the bytes), routes
 * streams by :path, deframes and decodes requests, refuses bad input with a gRPC
 * status before the application sees it, and turns the application's acks and
 * replies into DATA and trailers.  See wan/grpc_server.h for the Ship stream's life.
 *
 * It does not apply batches or pick ack numbers (the application does), does not dial
 * out (wan/grpc_client.c), and never includes gateway/ headers.  WAN thread only.
 *
 * Input accounting (automatic WINDOW_UPDATE is off): every DATA byte nghttp2 hands us
 * counts in st->unconsumed until it is "consumed" (nghttp2_session_consume), which is
 * when the message it belongs to was taken by the application, or when the stream
 * fails or closes.  Bytes of a partial message or of a paused stream stay unconsumed,
 * so the peer can never have more than one stream window (one message + prefix) of
 * them outstanding per stream, nor more than the connection window in all.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <event2/util.h>

#include <arpa/inet.h>

#include "proto/geogate_wan.pb-c.h"
#include "proto/health.pb-c.h"
#include "tls/tls.h"
#include "wan/grpc_frame.h"
#include "wan/grpc_h2.h"
#include "wan/grpc_server.h"

#define SERVER_MAX_LISTENERS 8
#define SERVER_ACK_HIGH_DEFAULT (1u << 20)
#define SERVER_MAX_HEADER_LIST (16u << 10)

enum sstream_kind { SK_UNKNOWN = 0, SK_SHIP, SK_READ, SK_HEALTH, SK_MAX };

static const char *const kind_names[SK_MAX] = {
    [SK_UNKNOWN] = "unknown",
    [SK_SHIP] = "Ship",
    [SK_READ] = "Read",
    [SK_HEALTH] = "Health/Check",
};

struct wan_grpc_server {
    struct event_base *base;
    struct wan_grpc_server_config cfg;
    struct wan_grpc_server_callbacks cb;
    void *cb_arg;
    struct evconnlistener *listeners[SERVER_MAX_LISTENERS];
    size_t nlisteners;
    nghttp2_session_callbacks *h2cb;
    nghttp2_option *h2opt;
    int32_t stream_window;
    struct wan_grpc_server_conn *conns;
    size_t nconns_up;
    struct wan_grpc_read_call *calls; /* unanswered Read calls */
};

struct wan_grpc_server_conn {
    struct wan_grpc_h2 h2;
    struct wan_grpc_server *srv;
    struct wan_grpc_server_conn *prev, *next;
    struct wan_grpc_ship_stream *streams;
    char addr[64];
    char site[TLS_SITE_MAX + 1];
    int mem;     /* memory mode */
    int counted; /* in srv->nconns_up */
    int dead;    /* memory mode: closed itself, waits for wan_grpc_server_mem_close */
};

/* One server-side stream of any method (the public name is the Ship one). */
struct wan_grpc_ship_stream {
    struct wan_grpc_server_conn *conn;
    struct wan_grpc_ship_stream *prev, *next;
    int32_t id;
    enum sstream_kind kind;
    char path[80];
    int bad_method;        /* :method is not POST */
    int bad_content_type;  /* content-type is not application/grpc[+proto] */
    char bad_encoding[40]; /* grpc-encoding we cannot read */
    struct wan_grpc_deframer df;
    size_t unconsumed;                   /* DATA bytes not yet given back to the peer's window */
    struct evbuffer *backlog;            /* DATA received while paused, not deframed yet */
    Geogate__Wan__V1__ShipRequest *held; /* BUSY batch, offered again on resume */
    size_t held_bytes;                   /* its size on the wire, prefix included */
    ProtobufCMessage *request;           /* unary: the one request message */
    int paused;                          /* held batch or too many queued acks: not reading */
    int resume_pending;                  /* look at the stream at the next safe point */
    int remote_ended;                    /* peer sent END_STREAM */
    int end_notified;                    /* ship_end ran (or the stream auto-finished) */
    int failed;                          /* refused; further input is discarded */
    struct evbuffer *out;                /* framed messages for the peer */
    int response_started;                /* response HEADERS submitted */
    int deferred;                        /* the data provider said DEFERRED */
    int finishing;                       /* trailers after `out` */
    int trailers_submitted;              /* trailers (or a trailers-only response) submitted */
    int status;
    char message[200];
    int app_open; /* ship_open accepted: ship_closed is owed */
    void *app_arg;
    struct wan_grpc_read_call *call; /* Read: the call handed to the application */
};

struct wan_grpc_read_call {
    struct wan_grpc_server *srv;
    struct wan_grpc_ship_stream *st; /* NULL once the stream is gone */
    struct wan_grpc_read_call *prev, *next;
};

static void slog(const struct wan_grpc_server *srv, enum wan_grpc_log_level level, const char *fmt,
                 ...) __attribute__((format(printf, 3, 4)));

static void slog(const struct wan_grpc_server *srv, enum wan_grpc_log_level level, const char *fmt,
                 ...)
{
    char msg[640];
    va_list ap;

    if (srv->cfg.log == NULL) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    wan_grpc_logf(srv->cfg.log, srv->cfg.log_arg, level, "wan: %s", msg);
}

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
    if (st->kind == SK_SHIP && before >= srv->cfg.ack_queue_high &&
        evbuffer_get_length(st->out) < srv->cfg.ack_queue_high) {
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
static void stream_consume(struct wan_grpc_ship_stream *st, size_t n)
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
    stream_consume(st, st->unconsumed);
}

/* Refuse the stream for bad input: one log line, a status, nothing more read. */
static void stream_fail(struct wan_grpc_ship_stream *st, int status, const char *what)
{
    struct wan_grpc_server_conn *conn = st->conn;

    slog(conn->srv, WAN_GRPC_LOG_WARN, "%s: %s stream %d: %s: refused with %s", conn->h2.peer,
         kind_names[st->kind], (int)st->id, what, wan_grpc_status_name(status));
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
    stream_consume(st, wire_bytes);
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

/* Take up a paused stream again: the held batch first, then the backlog. */
static void ship_resume(struct wan_grpc_ship_stream *st)
{
    struct wan_grpc_server *srv = st->conn->srv;

    st->resume_pending = 0;
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

/* ---- unary input ----------------------------------------------------------------------- */

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
        if (st->kind == SK_READ) {
            st->request =
                (ProtobufCMessage *)geogate__wan__v1__read_request__unpack(NULL, msg_len, msg);
        } else {
            st->request = (ProtobufCMessage *)grpc__health__v1__health_check_request__unpack(
                NULL, msg_len, msg);
        }
        if (st->request == NULL) {
            char what[96];

            snprintf(what, sizeof(what), "malformed %s (%zu bytes)",
                     st->kind == SK_READ ? "ReadRequest" : "HealthCheckRequest", msg_len);
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
    if (st->kind == SK_HEALTH) {
        health_answer(st);
    } else {
        read_dispatch(st);
    }
}

/* ---- streams --------------------------------------------------------------------------- */

static struct wan_grpc_ship_stream *stream_new(struct wan_grpc_server_conn *conn, int32_t id)
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
static void stream_free(struct wan_grpc_ship_stream *st, int status, const char *why)
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
    if (st->app_open && srv->cb.ship_closed != NULL) {
        st->app_open = 0;
        srv->cb.ship_closed(srv->cb_arg, st->app_arg, st, status, why);
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
static void stream_route(struct wan_grpc_ship_stream *st)
{
    struct wan_grpc_server_conn *conn = st->conn;
    struct wan_grpc_server *srv = conn->srv;
    int rc;

    if (st->bad_content_type || st->bad_method) {
        nghttp2_nv nva[] = {WAN_GRPC_NV(":status", "415")};

        slog(srv, WAN_GRPC_LOG_WARN, "%s: stream %d: %s: answered HTTP 415", conn->h2.peer,
             (int)st->id, st->bad_method ? "method is not POST" : "content-type is not gRPC");
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
    if (st->kind == SK_UNKNOWN || (st->kind == SK_SHIP && srv->cb.ship_open == NULL) ||
        (st->kind == SK_READ && srv->cb.read == NULL)) {
        slog(srv, WAN_GRPC_LOG_INFO, "%s: stream %d: unknown method %s: UNIMPLEMENTED",
             conn->h2.peer, (int)st->id, st->path);
        st->failed = 1;
        stream_finish(st, WAN_GRPC_UNIMPLEMENTED, "unknown method %s", st->path);
        return;
    }
    if (st->kind != SK_SHIP) {
        return;
    }
    rc = srv->cb.ship_open(srv->cb_arg, st, conn->site, &st->app_arg);
    if (rc != 0) {
        slog(srv, WAN_GRPC_LOG_INFO, "%s: Ship stream %d refused by the application: %s",
             conn->h2.peer, (int)st->id, wan_grpc_status_name(rc));
        st->failed = 1;
        stream_finish(st, rc > 0 ? rc : WAN_GRPC_UNAVAILABLE, "Ship stream refused");
        return;
    }
    st->app_open = 1;
    slog(srv, WAN_GRPC_LOG_INFO, "%s: Ship stream %d open", conn->h2.peer, (int)st->id);
    if (stream_start_response(st) != 0) {
        stream_finish(st, WAN_GRPC_INTERNAL, "cannot start the response");
    }
}

static void stream_remote_end(struct wan_grpc_ship_stream *st)
{
    if (st->remote_ended) {
        return;
    }
    st->remote_ended = 1;
    if (st->failed) {
        return;
    }
    if (st->kind == SK_SHIP) {
        ship_remote_end(st);
    } else if (st->kind == SK_READ || st->kind == SK_HEALTH) {
        unary_remote_end(st);
    }
}

/* ---- nghttp2 callbacks ------------------------------------------------------------------- */

static struct wan_grpc_ship_stream *stream_of(nghttp2_session *session, int32_t id)
{
    return nghttp2_session_get_stream_user_data(session, id);
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    struct wan_grpc_server_conn *conn = user;
    struct wan_grpc_ship_stream *st;

    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
        return 0;
    }
    st = stream_new(conn, frame->hd.stream_id);
    if (st == NULL) {
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM INTERNAL_ERROR */
    }
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, st);
    return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    struct wan_grpc_ship_stream *st = stream_of(session, frame->hd.stream_id);

    (void)flags;
    (void)user;
    if (st == NULL || frame->hd.type != NGHTTP2_HEADERS ||
        frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
        return 0; /* trailers from the client carry nothing we use */
    }
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
            st->kind = SK_SHIP;
        } else if (valuelen == strlen(WAN_GRPC_PATH_READ) &&
                   memcmp(value, WAN_GRPC_PATH_READ, valuelen) == 0) {
            st->kind = SK_READ;
        } else if (valuelen == strlen(WAN_GRPC_PATH_HEALTH) &&
                   memcmp(value, WAN_GRPC_PATH_HEALTH, valuelen) == 0) {
            st->kind = SK_HEALTH;
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
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    struct wan_grpc_ship_stream *st;

    (void)user;
    if (frame->hd.stream_id == 0) {
        return 0;
    }
    st = stream_of(session, frame->hd.stream_id);
    if (st == NULL) {
        return 0;
    }
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        /* A missing content-type is as bad as a wrong one. */
        stream_route(st);
    }
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        stream_remote_end(st);
    }
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                              const uint8_t *data, size_t len, void *user)
{
    struct wan_grpc_ship_stream *st = stream_of(session, stream_id);

    (void)flags;
    (void)user;
    if (st == NULL) {
        nghttp2_session_consume(session, stream_id, len);
        return 0;
    }
    st->unconsumed += len;
    if (st->failed || st->finishing || st->remote_ended) {
        stream_consume(st, len);
        return 0;
    }
    if (st->kind == SK_SHIP) {
        ship_data(st, data, len);
    } else {
        unary_data(st, data, len);
        stream_consume(st, len); /* bounded by the deframer's limit: one message */
    }
    return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    struct wan_grpc_ship_stream *st;

    (void)user;
    if (frame->hd.type != NGHTTP2_HEADERS || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        return 0;
    }
    st = stream_of(session, frame->hd.stream_id);
    /* Our side is done; a peer still sending is told to stop (gRPC servers send
     * RST_STREAM NO_ERROR after trailers to a client that has not half-closed). */
    if (st != NULL && !st->remote_ended) {
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                  NGHTTP2_NO_ERROR);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user)
{
    struct wan_grpc_ship_stream *st = stream_of(session, stream_id);
    char why[256];
    int status;

    (void)user;
    if (st == NULL) {
        return 0;
    }
    if (st->trailers_submitted) {
        status = st->status;
        snprintf(why, sizeof(why), "finished: %s", st->message[0] ? st->message : "ok");
    } else {
        status = (error_code == NGHTTP2_CANCEL || error_code == NGHTTP2_NO_ERROR)
                     ? WAN_GRPC_CANCELLED
                     : wan_grpc_status_from_h2_error(error_code);
        snprintf(why, sizeof(why), "reset by peer (%s)", nghttp2_http2_strerror(error_code));
    }
    if (st->kind == SK_SHIP && st->app_open) {
        slog(st->conn->srv, WAN_GRPC_LOG_INFO, "%s: Ship stream %d closed: %s", st->conn->h2.peer,
             (int)stream_id, why);
    }
    stream_free(st, status, why);
    return 0;
}

static int on_error(nghttp2_session *session, int lib_error_code, const char *msg, size_t len,
                    void *user)
{
    struct wan_grpc_server_conn *conn = user;

    (void)session;
    (void)lib_error_code;
    slog(conn->srv, WAN_GRPC_LOG_DEBUG, "%s: HTTP/2: %.*s", conn->h2.peer, (int)len, msg);
    return 0;
}

/* ---- connections -------------------------------------------------------------------------- */

/* At a safe point (outside nghttp2): take up streams that may read again. */
static void conn_flushed(void *owner)
{
    struct wan_grpc_server_conn *conn = owner;
    struct wan_grpc_ship_stream *next;

    /* Streams are only freed inside nghttp2 calls, never from here, so the list holds
     * still.  A stream asking again while being resumed waits for the next pass (the
     * asking kicked it). */
    for (struct wan_grpc_ship_stream *st = conn->streams; st != NULL; st = next) {
        next = st->next;
        if (st->resume_pending && !conn->h2.closing) {
            ship_resume(st);
        }
    }
}

static void conn_teardown_streams(struct wan_grpc_server_conn *conn, const char *why)
{
    while (conn->streams != NULL) {
        stream_free(conn->streams, WAN_GRPC_UNAVAILABLE, why);
    }
}

static void conn_unlink(struct wan_grpc_server_conn *conn)
{
    struct wan_grpc_server *srv = conn->srv;

    if (conn->prev != NULL) {
        conn->prev->next = conn->next;
    } else if (srv->conns == conn) {
        srv->conns = conn->next;
    }
    if (conn->next != NULL) {
        conn->next->prev = conn->prev;
    }
    conn->prev = conn->next = NULL;
    if (conn->counted) {
        conn->counted = 0;
        srv->nconns_up--;
    }
}

static void conn_free(struct wan_grpc_server_conn *conn, const char *why)
{
    char reason[300];

    snprintf(reason, sizeof(reason), "connection lost: %s", why);
    conn_teardown_streams(conn, reason);
    conn_unlink(conn);
    wan_grpc_h2_free(&conn->h2);
    free(conn);
}

static void conn_closed(void *owner, int was_up, const char *reason)
{
    struct wan_grpc_server_conn *conn = owner;

    if (was_up && !conn->mem) {
        slog(conn->srv, WAN_GRPC_LOG_INFO, "connection from %s closed: %s", conn->h2.peer, reason);
    }
    if (conn->mem) {
        char why[300];

        snprintf(why, sizeof(why), "connection lost: %s", reason);
        conn->dead = 1;
        conn_teardown_streams(conn, why);
        return;
    }
    conn_free(conn, reason);
}

static int conn_start_session(struct wan_grpc_server_conn *conn)
{
    struct wan_grpc_server *srv = conn->srv;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, srv->cfg.max_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)srv->stream_window},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, SERVER_MAX_HEADER_LIST},
    };

    if (nghttp2_session_server_new2(&conn->h2.session, srv->h2cb, conn, srv->h2opt) != 0) {
        return -ENOMEM;
    }
    if (nghttp2_submit_settings(conn->h2.session, NGHTTP2_FLAG_NONE, iv,
                                sizeof(iv) / sizeof(iv[0])) != 0 ||
        nghttp2_session_set_local_window_size(conn->h2.session, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)srv->cfg.conn_window) != 0) {
        return -ENOMEM;
    }
    conn->counted = 1;
    srv->nconns_up++;
    return 0;
}

static int conn_ready(void *owner, SSL *ssl)
{
    struct wan_grpc_server_conn *conn = owner;
    int rc = tls_peer_site(ssl, conn->site, sizeof(conn->site));

    if (rc < 0) {
        slog(conn->srv, WAN_GRPC_LOG_WARN, "refused %s: no configured peer site in its certificate",
             conn->addr);
        wan_grpc_h2_close(&conn->h2, 0, "refused: no configured peer site in the certificate");
        return -1;
    }
    snprintf(conn->h2.peer, sizeof(conn->h2.peer), "%s (%s)", conn->addr, conn->site);
    conn->h2.established = 1; /* a TLS server has checked the client when it gets here */
    if (conn_start_session(conn) != 0) {
        wan_grpc_h2_close(&conn->h2, 0, "out of memory");
        return -1;
    }
    slog(conn->srv, WAN_GRPC_LOG_INFO, "accepted %s: TLS 1.3, site %s", conn->addr, conn->site);
    return 0;
}

static const struct wan_grpc_h2_ops server_h2_ops = {
    .ready = conn_ready,
    .flushed = conn_flushed,
    .closed = conn_closed,
};

static struct wan_grpc_server_conn *conn_new(struct wan_grpc_server *srv)
{
    struct wan_grpc_server_conn *conn = calloc(1, sizeof(*conn));

    if (conn == NULL) {
        return NULL;
    }
    conn->srv = srv;
    conn->next = srv->conns;
    if (srv->conns != NULL) {
        srv->conns->prev = conn;
    }
    srv->conns = conn;
    return conn;
}

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    struct wan_grpc_server *srv = arg;
    struct wan_grpc_server_conn *conn;
    struct bufferevent *bev = NULL;
    char addr[64];

    (void)lev;
    (void)salen;
    wan_grpc_sockaddr_text(sa, addr, sizeof(addr));
    conn = conn_new(srv);
    if (conn == NULL) {
        slog(srv, WAN_GRPC_LOG_ERROR, "out of memory accepting %s", addr);
        evutil_closesocket(fd);
        return;
    }
    snprintf(conn->addr, sizeof(conn->addr), "%s", addr);
    if (tls_bev_accept(srv->cfg.tls, srv->base, fd, 0, &bev) != 0) {
        slog(srv, WAN_GRPC_LOG_ERROR, "cannot set up TLS for %s", addr);
        evutil_closesocket(fd);
        conn_unlink(conn);
        free(conn);
        return;
    }
    if (wan_grpc_h2_init(&conn->h2, srv->base, bev, srv->cfg.handshake_timeout_ms, srv->cfg.ping_ms,
                         &server_h2_ops, conn, srv->cfg.log, srv->cfg.log_arg, addr) != 0) {
        slog(srv, WAN_GRPC_LOG_ERROR, "out of memory accepting %s", addr);
        conn_free(conn, "out of memory");
        return;
    }
    slog(srv, WAN_GRPC_LOG_DEBUG, "connection from %s: TLS handshake", addr);
}

static void on_accept_error(struct evconnlistener *lev, void *arg)
{
    struct wan_grpc_server *srv = arg;
    int err = EVUTIL_SOCKET_ERROR();

    (void)lev;
    slog(srv, WAN_GRPC_LOG_WARN, "accept failed: %s", evutil_socket_error_to_string(err));
}

/* ---- public ---------------------------------------------------------------------------------- */

int wan_grpc_server_create(struct wan_grpc_server **out, struct event_base *base,
                           const struct wan_grpc_server_config *cfg,
                           const struct wan_grpc_server_callbacks *cb, void *cb_arg)
{
    struct wan_grpc_server *srv;
    uint64_t window;

    if (out == NULL || base == NULL || cfg == NULL || cb == NULL ||
        cfg->max_message > WAN_GRPC_MAX_MESSAGE_LIMIT) {
        return -EINVAL;
    }
    srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        return -ENOMEM;
    }
    srv->base = base;
    srv->cfg = *cfg;
    srv->cb = *cb;
    srv->cb_arg = cb_arg;
    if (srv->cfg.max_message == 0) {
        srv->cfg.max_message = WAN_GRPC_MAX_MESSAGE_DEFAULT;
    }
    if (srv->cfg.max_streams == 0) {
        srv->cfg.max_streams = WAN_GRPC_MAX_STREAMS_DEFAULT;
    }
    if (srv->cfg.handshake_timeout_ms == 0) {
        srv->cfg.handshake_timeout_ms = WAN_GRPC_HANDSHAKE_TIMEOUT_DEFAULT_MS;
    }
    if (srv->cfg.ping_ms == 0) {
        srv->cfg.ping_ms = WAN_GRPC_PING_INTERVAL_DEFAULT_MS;
    }
    if (srv->cfg.ack_queue_high == 0) {
        srv->cfg.ack_queue_high = SERVER_ACK_HIGH_DEFAULT;
    }
    /* One whole message must fit a stream window, or a big one could never complete. */
    window = (uint64_t)srv->cfg.max_message + WAN_GRPC_FRAME_PREFIX;
    if (window < NGHTTP2_INITIAL_WINDOW_SIZE) {
        window = NGHTTP2_INITIAL_WINDOW_SIZE;
    }
    srv->stream_window = (int32_t)window;
    if (srv->cfg.conn_window == 0) {
        srv->cfg.conn_window = WAN_GRPC_CONN_WINDOW_DEFAULT;
    }
    if (srv->cfg.conn_window < window) {
        srv->cfg.conn_window = (uint32_t)window;
    }
    if (srv->cfg.conn_window > NGHTTP2_MAX_WINDOW_SIZE) {
        srv->cfg.conn_window = NGHTTP2_MAX_WINDOW_SIZE;
    }
    if (nghttp2_session_callbacks_new(&srv->h2cb) != 0 || nghttp2_option_new(&srv->h2opt) != 0) {
        wan_grpc_server_destroy(srv);
        return -ENOMEM;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(srv->h2cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(srv->h2cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(srv->h2cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(srv->h2cb, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(srv->h2cb, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(srv->h2cb, on_stream_close);
    nghttp2_session_callbacks_set_error_callback2(srv->h2cb, on_error);
    nghttp2_option_set_no_auto_window_update(srv->h2opt, 1);
    *out = srv;
    return 0;
}

/* evutil_parse_sockaddr_port() refuses port 0, which tests use for "any free port". */
static int parse_listen_addr(const char *addr, struct sockaddr_storage *ss, int *sslen)
{
    char buf[128];
    size_t len = strlen(addr);

    if (len >= sizeof(buf)) {
        return -1;
    }
    memcpy(buf, addr, len + 1);
    if (len >= 2 && strcmp(buf + len - 2, ":0") == 0) {
        buf[len - 1] = '1';
        if (evutil_parse_sockaddr_port(buf, (struct sockaddr *)ss, sslen) != 0) {
            return -1;
        }
        if (ss->ss_family == AF_INET6) {
            ((struct sockaddr_in6 *)ss)->sin6_port = 0;
        } else {
            ((struct sockaddr_in *)ss)->sin_port = 0;
        }
        return 0;
    }
    return evutil_parse_sockaddr_port(buf, (struct sockaddr *)ss, sslen);
}

int wan_grpc_server_listen(struct wan_grpc_server *srv, const char *addr, uint16_t *bound_port)
{
    struct sockaddr_storage ss;
    int sslen = (int)sizeof(ss);
    struct evconnlistener *lev;
    socklen_t len;

    if (srv == NULL || addr == NULL || srv->cfg.tls == NULL ||
        srv->nlisteners >= SERVER_MAX_LISTENERS) {
        return -EINVAL;
    }
    memset(&ss, 0, sizeof(ss));
    if (parse_listen_addr(addr, &ss, &sslen) != 0) {
        slog(srv, WAN_GRPC_LOG_ERROR, "cannot listen on '%s': not an address:port", addr);
        return -EINVAL;
    }
    lev = evconnlistener_new_bind(srv->base, on_accept, srv,
                                  LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
                                  128, (struct sockaddr *)&ss, sslen);
    if (lev == NULL) {
        int err = errno ? errno : EADDRINUSE;

        slog(srv, WAN_GRPC_LOG_ERROR, "cannot listen on %s: %s", addr, strerror(err));
        return -err;
    }
    evconnlistener_set_error_cb(lev, on_accept_error);
    srv->listeners[srv->nlisteners++] = lev;
    len = sizeof(ss);
    if (getsockname(evconnlistener_get_fd(lev), (struct sockaddr *)&ss, &len) == 0) {
        char text[64];

        wan_grpc_sockaddr_text((struct sockaddr *)&ss, text, sizeof(text));
        if (bound_port != NULL) {
            *bound_port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                                   : ntohs(((struct sockaddr_in *)&ss)->sin_port);
        }
        slog(srv, WAN_GRPC_LOG_INFO, "listening on %s (gRPC, TLS 1.3)", text);
    }
    return 0;
}

int wan_grpc_server_stop_listening(struct wan_grpc_server *srv)
{
    for (size_t i = 0; i < srv->nlisteners; i++) {
        evconnlistener_free(srv->listeners[i]);
        srv->listeners[i] = NULL;
    }
    srv->nlisteners = 0;
    return 0;
}

void wan_grpc_server_destroy(struct wan_grpc_server *srv)
{
    if (srv == NULL) {
        return;
    }
    wan_grpc_server_stop_listening(srv);
    while (srv->conns != NULL) {
        conn_free(srv->conns, "server shutting down");
    }
    while (srv->calls != NULL) {
        struct wan_grpc_read_call *call = srv->calls;

        srv->calls = call->next;
        free(call);
    }
    if (srv->h2cb != NULL) {
        nghttp2_session_callbacks_del(srv->h2cb);
    }
    if (srv->h2opt != NULL) {
        nghttp2_option_del(srv->h2opt);
    }
    free(srv);
}

size_t wan_grpc_server_connections(const struct wan_grpc_server *srv)
{
    return srv->nconns_up;
}

int wan_grpc_server_ship_ack(struct wan_grpc_ship_stream *st, const Geogate__Wan__V1__ShipAck *ack)
{
    if (st->finishing || st->trailers_submitted) {
        return -EPIPE;
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
        slog(st->conn->srv, WAN_GRPC_LOG_WARN,
             "%s: Read reply of %zu bytes is over the limit of %u bytes", st->conn->h2.peer, size,
             (unsigned)st->conn->srv->cfg.max_message);
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

int wan_grpc_server_mem_open(struct wan_grpc_server *srv, const char *peer_site,
                             struct wan_grpc_server_conn **out)
{
    struct wan_grpc_server_conn *conn;

    if (srv == NULL || peer_site == NULL || out == NULL) {
        return -EINVAL;
    }
    conn = conn_new(srv);
    if (conn == NULL) {
        return -ENOMEM;
    }
    conn->mem = 1;
    snprintf(conn->addr, sizeof(conn->addr), "memory");
    snprintf(conn->site, sizeof(conn->site), "%s", peer_site);
    if (wan_grpc_h2_init(&conn->h2, srv->base, NULL, 0, 0, &server_h2_ops, conn, srv->cfg.log,
                         srv->cfg.log_arg, "memory") != 0 ||
        conn_start_session(conn) != 0) {
        conn_free(conn, "out of memory");
        return -ENOMEM;
    }
    snprintf(conn->h2.peer, sizeof(conn->h2.peer), "memory (%s)", conn->site);
    *out = conn;
    return 0;
}

int wan_grpc_server_mem_feed(struct wan_grpc_server_conn *conn, const uint8_t *data, size_t len)
{
    if (conn->dead) {
        return -EPROTO;
    }
    return wan_grpc_h2_feed(&conn->h2, data, len);
}

struct evbuffer *wan_grpc_server_mem_output(struct wan_grpc_server_conn *conn)
{
    return conn->h2.mem_out;
}

int wan_grpc_server_mem_closed(const struct wan_grpc_server_conn *conn)
{
    return conn->dead || conn->h2.closing;
}

void wan_grpc_server_mem_close(struct wan_grpc_server_conn *conn)
{
    if (conn != NULL) {
        conn_free(conn, "closed");
    }
}
