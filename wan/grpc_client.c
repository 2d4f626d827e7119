/*
 * grpc_client — one outgoing WAN link: non-blocking TCP connect, TLS through
 * tls/tls.h, an nghttp2 client session (wan/grpc_h2.c moves the bytes), the Ship
 * stream, unary calls and Backfill calls (see wan/grpc_client.h for the picture).  It
 * does not retry, batch or decide what to ship.  WAN thread only, no locks.
 *
 * A link is a struct client_conn hanging off the client while it exists; `down` is
 * reported after the link is detached, so the caller may connect() again from
 * inside `down`.
 *
 * Receive windows are given back by hand (NGHTTP2_OPT_NO_AUTO_WINDOW_UPDATE): bytes of
 * the Ship stream and of unary calls are consumed as soon as they arrive (what automatic
 * updates would do), a Backfill call's only once the batch they belong to was handed to
 * the application, so its peer can never be more than one stream window ahead of it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/util.h>

#include "proto/geogate_wan.pb-c.h"
#include "proto/health.pb-c.h"
#include "tls/tls.h"
#include "wan/grpc_client.h"
#include "wan/grpc_frame.h"
#include "wan/grpc_h2.h"

#define CLIENT_CONN_WINDOW (16u << 20)
#define CLIENT_MAX_STREAMS 100u
#define CLIENT_USER_AGENT "geogate-wan/1"
/* A Backfill call's receive window (raised to one whole message + prefix if that is
 * more): enough to keep a WAN path busy, small enough that a slow apply holds the peer. */
#define CLIENT_BACKFILL_WINDOW (1u << 20)

enum call_kind { CALL_READ = 0, CALL_HEALTH, CALL_BACKFILL, CALL_KIND_MAX };

enum conn_state {
    CC_CONNECTING = 0, /* TCP connect in progress */
    CC_TLS,            /* TLS handshake (h2 owns the socket) */
    CC_UP,             /* session and Ship stream open */
    CC_STATE_MAX
};

struct client_conn;
struct client_call;

/* The application's handle on a Backfill call, embedded in the call. */
struct wan_grpc_client_backfill {
    struct client_call *call;
};

/* One unary or Backfill call in flight. */
struct client_call {
    struct client_conn *cc;
    struct client_call *prev, *next;
    enum call_kind kind;
    int32_t stream_id;
    struct evbuffer *req; /* the framed request, drained by the data provider */
    struct wan_grpc_deframer df;
    ProtobufCMessage *resp;
    int http_status;
    int grpc_status; /* -1 until seen */
    char grpc_message[256];
    int local_status; /* -1, or a status we decided (bad response) */
    char local_message[160];
    struct event *timer;
    uint32_t timeout_ms;
    wan_grpc_read_done_fn read_done;
    wan_grpc_health_done_fn health_done;
    wan_grpc_backfill_batch_fn backfill_batch;
    wan_grpc_backfill_done_fn backfill_done;
    void *done_arg;
    size_t unconsumed; /* Backfill: DATA bytes not yet given back to the peer's window */
    int cancelled;     /* Backfill: wan_grpc_client_backfill_cancel() was called */
    struct wan_grpc_client_backfill handle;
};

struct client_conn {
    struct wan_grpc_h2 h2;
    int h2_ready; /* h2 was initialised (owns the socket from then on) */
    struct wan_grpc_client *c;
    enum conn_state state;
    evutil_socket_t fd;       /* CC_CONNECTING only */
    struct event *connect_ev; /* CC_CONNECTING only */
    int connect_errno;        /* connect() failed at once; reported from connect_ev */
    int cancelled;            /* close() while connecting */
    int down_status;          /* what `down` will say */
    int32_t ship_id;
    struct evbuffer *ship_out;
    struct wan_grpc_deframer ship_df;
    int ship_deferred;
    int ship_ending; /* ship_end(): END_STREAM after the queue */
    int ship_http_status;
    int ship_grpc_status; /* -1 until seen */
    char ship_message[256];
    int want_writable;   /* ship() refused or the queue reached ship_high */
    int notify_writable; /* tell the application at the next safe point */
    struct client_call *calls;
};

struct wan_grpc_client {
    struct event_base *base;
    struct wan_grpc_client_config cfg;
    struct wan_grpc_client_callbacks cb;
    void *cb_arg;
    char *peer_site;
    char *address;
    struct sockaddr_storage ss;
    int sslen;
    int32_t stream_window;
    int32_t backfill_window;
    nghttp2_session_callbacks *h2cb;
    nghttp2_option *h2opt;
    struct client_conn *conn; /* the current link, NULL when down */
};

static void clog_(const struct wan_grpc_client *c, enum wan_grpc_log_level level, const char *fmt,
                  ...) __attribute__((format(printf, 3, 4)));

static void clog_(const struct wan_grpc_client *c, enum wan_grpc_log_level level, const char *fmt,
                  ...)
{
    char msg[640];
    va_list ap;

    if (c->cfg.log == NULL) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    wan_grpc_logf(c->cfg.log, c->cfg.log_arg, level, "wan: %s", msg);
}

/* ---- calls ------------------------------------------------------------------------------ */

static void call_unlink(struct client_call *call)
{
    struct client_conn *cc = call->cc;

    if (call->prev != NULL) {
        call->prev->next = call->next;
    } else {
        cc->calls = call->next;
    }
    if (call->next != NULL) {
        call->next->prev = call->prev;
    }
    if (call->stream_id > 0 && cc->h2.session != NULL) {
        nghttp2_session_set_stream_user_data(cc->h2.session, call->stream_id, NULL);
    }
}

/* Report and free a call.  The callback runs last, with the call already unlinked. */
static void call_complete(struct client_call *call, int status, const char *message)
{
    enum call_kind kind = call->kind;
    wan_grpc_read_done_fn read_done = call->read_done;
    wan_grpc_health_done_fn health_done = call->health_done;
    wan_grpc_backfill_done_fn backfill_done = call->backfill_done;
    void *done_arg = call->done_arg;
    ProtobufCMessage *resp = status == WAN_GRPC_OK ? call->resp : NULL;
    char msg[256];

    if (kind == CALL_BACKFILL && call->cancelled) {
        status = WAN_GRPC_CANCELLED;
        message = "cancelled by the caller";
    }
    snprintf(msg, sizeof(msg), "%s", message ? message : "");
    if (call->unconsumed > 0 && call->cc->h2.session != NULL) {
        /* The stream is closing: what it held back still counts against the connection. */
        nghttp2_session_consume_connection(call->cc->h2.session, call->unconsumed);
    }
    if (kind == CALL_BACKFILL) {
        clog_(call->cc->c,
              status == WAN_GRPC_OK || status == WAN_GRPC_CANCELLED ? WAN_GRPC_LOG_INFO
                                                                    : WAN_GRPC_LOG_WARN,
              "%s: Backfill call %d ended: %s%s%s", call->cc->h2.peer, (int)call->stream_id,
              wan_grpc_status_name(status), msg[0] ? ": " : "", msg);
    }
    call_unlink(call);
    if (resp == NULL && call->resp != NULL) {
        protobuf_c_message_free_unpacked(call->resp, NULL);
    }
    if (call->timer != NULL) {
        event_free(call->timer);
    }
    evbuffer_free(call->req);
    wan_grpc_deframer_free(&call->df);
    free(call);
    if (kind == CALL_READ) {
        read_done(done_arg, status, msg, (Geogate__Wan__V1__ReadResponse *)resp);
    } else if (kind == CALL_BACKFILL) {
        backfill_done(done_arg, status, msg);
    } else {
        int serving = 0;

        if (resp != NULL) {
            serving = ((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
            protobuf_c_message_free_unpacked(resp, NULL);
        }
        health_done(done_arg, status, msg, serving);
    }
}

static void call_fail_all(struct client_conn *cc, int status, const char *message)
{
    while (cc->calls != NULL) {
        call_complete(cc->calls, status, message);
    }
}

/* The call's stream closed: work out its status. */
static void call_stream_closed(struct client_call *call, uint32_t error_code)
{
    int status;
    const char *message;
    char buf[200];

    if (call->local_status >= 0) {
        status = call->local_status;
        message = call->local_message;
    } else if (call->grpc_status >= 0) {
        status = call->grpc_status;
        message = call->grpc_message;
        if (status == WAN_GRPC_OK && call->resp == NULL && call->kind != CALL_BACKFILL) {
            status = WAN_GRPC_INTERNAL;
            message = "no response message";
        }
    } else if (call->http_status != 0 && call->http_status != 200) {
        status = wan_grpc_status_from_http(call->http_status);
        snprintf(buf, sizeof(buf), "HTTP status %d", call->http_status);
        message = buf;
    } else if (error_code != NGHTTP2_NO_ERROR) {
        status = wan_grpc_status_from_h2_error(error_code);
        snprintf(buf, sizeof(buf), "stream reset: %s", nghttp2_http2_strerror(error_code));
        message = buf;
    } else {
        status = WAN_GRPC_INTERNAL;
        message = "stream ended without grpc-status";
    }
    call_complete(call, status, message);
}

static void call_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct client_call *call = arg;
    struct client_conn *cc = call->cc;
    char msg[96];

    (void)fd;
    (void)what;
    if (call->stream_id > 0) {
        nghttp2_submit_rst_stream(cc->h2.session, NGHTTP2_FLAG_NONE, call->stream_id,
                                  NGHTTP2_CANCEL);
        wan_grpc_h2_kick(&cc->h2);
    }
    snprintf(msg, sizeof(msg), "no answer within %u ms", (unsigned)call->timeout_ms);
    call_complete(call, WAN_GRPC_DEADLINE_EXCEEDED, msg);
}

static ssize_t call_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                            size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                            void *user_data)
{
    struct evbuffer *req = source->ptr;
    int n;

    (void)session;
    (void)stream_id;
    (void)user_data;
    n = evbuffer_remove(req, buf, length);
    if (n < 0) {
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (evbuffer_get_length(req) == 0) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return n;
}

static void call_data(struct client_call *call, const uint8_t *data, size_t len)
{
    size_t pos = 0;

    while (pos < len && call->local_status < 0) {
        const uint8_t *msg = NULL;
        size_t used = 0, msg_len = 0;
        int rc = wan_grpc_deframer_feed(&call->df, data + pos, len - pos, &used, &msg, &msg_len);

        pos += used;
        if (rc < 0) {
            call->local_status =
                rc == -WAN_GRPC_FRAME_ETOOBIG ? WAN_GRPC_RESOURCE_EXHAUSTED : WAN_GRPC_INTERNAL;
            snprintf(call->local_message, sizeof(call->local_message), "response: %s",
                     wan_grpc_frame_strerror(rc));
            break;
        }
        if (rc == WAN_GRPC_FRAME_MORE) {
            break;
        }
        if (call->resp != NULL) {
            call->local_status = WAN_GRPC_INTERNAL;
            snprintf(call->local_message, sizeof(call->local_message),
                     "more than one response message");
            break;
        }
        if (call->kind == CALL_READ) {
            call->resp =
                (ProtobufCMessage *)geogate__wan__v1__read_response__unpack(NULL, msg_len, msg);
        } else {
            call->resp = (ProtobufCMessage *)grpc__health__v1__health_check_response__unpack(
                NULL, msg_len, msg);
        }
        if (call->resp == NULL) {
            call->local_status = WAN_GRPC_INTERNAL;
            snprintf(call->local_message, sizeof(call->local_message),
                     "malformed response (%zu bytes)", msg_len);
        }
    }
    if (call->local_status >= 0 && call->stream_id > 0) {
        nghttp2_submit_rst_stream(call->cc->h2.session, NGHTTP2_FLAG_NONE, call->stream_id,
                                  NGHTTP2_CANCEL);
    }
}

/* Give n bytes of a Backfill call back to the peer's windows. */
static void backfill_consume(struct client_call *call, size_t n)
{
    if (n > call->unconsumed) {
        n = call->unconsumed;
    }
    if (n == 0) {
        return;
    }
    call->unconsumed -= n;
    nghttp2_session_consume(call->cc->h2.session, call->stream_id, n);
}

/* DATA of a Backfill call: hand each whole batch to the application, then give its bytes
 * back.  A partial message's bytes stay held until it completes. */
static void backfill_data(struct client_call *call, const uint8_t *data, size_t len)
{
    struct client_conn *cc = call->cc;
    size_t pos = 0;

    call->unconsumed += len;
    if (call->local_status >= 0 || call->cancelled || cc->h2.closing) {
        backfill_consume(call, call->unconsumed); /* being reset: nobody takes it */
        return;
    }
    while (pos < len && call->local_status < 0 && !call->cancelled && !cc->h2.closing) {
        const uint8_t *msg = NULL;
        size_t used = 0, msg_len = 0;
        Geogate__Wan__V1__BackfillBatch *b;
        int rc = wan_grpc_deframer_feed(&call->df, data + pos, len - pos, &used, &msg, &msg_len);

        pos += used;
        if (rc < 0) {
            call->local_status =
                rc == -WAN_GRPC_FRAME_ETOOBIG ? WAN_GRPC_RESOURCE_EXHAUSTED : WAN_GRPC_INTERNAL;
            snprintf(call->local_message, sizeof(call->local_message), "batch: %s",
                     wan_grpc_frame_strerror(rc));
            break;
        }
        if (rc == WAN_GRPC_FRAME_MORE) {
            break;
        }
        b = geogate__wan__v1__backfill_batch__unpack(NULL, msg_len, msg);
        if (b == NULL) {
            call->local_status = WAN_GRPC_INTERNAL;
            snprintf(call->local_message, sizeof(call->local_message),
                     "malformed BackfillBatch (%zu bytes)", msg_len);
            break;
        }
        call->backfill_batch(call->done_arg, b);
        geogate__wan__v1__backfill_batch__free_unpacked(b, NULL);
        backfill_consume(call, WAN_GRPC_FRAME_PREFIX + msg_len);
    }
    if (call->local_status >= 0 || call->cancelled || cc->h2.closing) {
        /* Nothing more goes to the application: keep no window closed for it. */
        wan_grpc_deframer_free(&call->df);
        backfill_consume(call, call->unconsumed);
    }
    if (call->local_status >= 0 && !call->cancelled) {
        clog_(cc->c, WAN_GRPC_LOG_WARN, "%s: Backfill call %d: %s", cc->h2.peer,
              (int)call->stream_id, call->local_message);
        nghttp2_submit_rst_stream(cc->h2.session, NGHTTP2_FLAG_NONE, call->stream_id,
                                  NGHTTP2_CANCEL);
        wan_grpc_h2_kick(&cc->h2);
    }
}

/* ---- the Ship stream ------------------------------------------------------------------------- */

static ssize_t ship_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                            size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                            void *user_data)
{
    struct client_conn *cc = source->ptr;
    struct wan_grpc_client *c = cc->c;
    int n = 0;

    (void)session;
    (void)stream_id;
    (void)user_data;
    if (evbuffer_get_length(cc->ship_out) > 0) {
        n = evbuffer_remove(cc->ship_out, buf, length);
        if (n < 0) {
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
    }
    if (cc->want_writable && evbuffer_get_length(cc->ship_out) <= c->cfg.ship_low) {
        cc->want_writable = 0;
        cc->notify_writable = 1; /* told from conn_flushed, outside nghttp2 */
    }
    if (evbuffer_get_length(cc->ship_out) == 0 && cc->ship_ending) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        return n;
    }
    if (n == 0) {
        cc->ship_deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    return n;
}

static void ship_wake(struct client_conn *cc)
{
    if (cc->ship_deferred) {
        cc->ship_deferred = 0;
        nghttp2_session_resume_data(cc->h2.session, cc->ship_id);
    }
    wan_grpc_h2_kick(&cc->h2);
}

static void ship_data(struct client_conn *cc, const uint8_t *data, size_t len)
{
    struct wan_grpc_client *c = cc->c;
    size_t pos = 0;

    while (pos < len && !cc->h2.closing) {
        const uint8_t *msg = NULL;
        size_t used = 0, msg_len = 0;
        Geogate__Wan__V1__ShipAck *ack;
        int rc = wan_grpc_deframer_feed(&cc->ship_df, data + pos, len - pos, &used, &msg, &msg_len);

        pos += used;
        if (rc < 0) {
            clog_(c, WAN_GRPC_LOG_WARN, "%s: bad message on the Ship stream: %s", cc->h2.peer,
                  wan_grpc_frame_strerror(rc));
            cc->down_status = WAN_GRPC_INTERNAL;
            wan_grpc_h2_close(&cc->h2, 0, "bad message on the Ship stream: %s",
                              wan_grpc_frame_strerror(rc));
            return;
        }
        if (rc == WAN_GRPC_FRAME_MORE) {
            return;
        }
        ack = geogate__wan__v1__ship_ack__unpack(NULL, msg_len, msg);
        if (ack == NULL) {
            clog_(c, WAN_GRPC_LOG_WARN, "%s: malformed ShipAck (%zu bytes)", cc->h2.peer, msg_len);
            cc->down_status = WAN_GRPC_INTERNAL;
            wan_grpc_h2_close(&cc->h2, 0, "malformed ShipAck (%zu bytes)", msg_len);
            return;
        }
        if (c->cb.ship_ack != NULL) {
            c->cb.ship_ack(c->cb_arg, ack);
        }
        geogate__wan__v1__ship_ack__free_unpacked(ack, NULL);
    }
}

static void ship_closed(struct client_conn *cc, uint32_t error_code)
{
    int status;
    char why[300];

    if (cc->ship_grpc_status >= 0) {
        status = cc->ship_grpc_status;
        snprintf(why, sizeof(why), "Ship stream ended by the peer: %s%s%s",
                 wan_grpc_status_name(status), cc->ship_message[0] ? ": " : "", cc->ship_message);
    } else if (cc->ship_http_status != 0 && cc->ship_http_status != 200) {
        status = wan_grpc_status_from_http(cc->ship_http_status);
        snprintf(why, sizeof(why), "Ship stream answered HTTP %d", cc->ship_http_status);
    } else {
        status = error_code == NGHTTP2_NO_ERROR ? WAN_GRPC_UNAVAILABLE
                                                : wan_grpc_status_from_h2_error(error_code);
        snprintf(why, sizeof(why), "Ship stream reset: %s", nghttp2_http2_strerror(error_code));
    }
    cc->ship_id = -1;
    if (status == WAN_GRPC_OK && cc->ship_ending) {
        snprintf(why, sizeof(why), "Ship stream finished");
        clog_(cc->c, WAN_GRPC_LOG_INFO, "%s: %s", cc->h2.peer, why);
    } else {
        clog_(cc->c, WAN_GRPC_LOG_WARN, "%s: %s", cc->h2.peer, why);
    }
    cc->down_status = status;
    wan_grpc_h2_close(&cc->h2, 1, "%s", why);
}

static int ship_open(struct client_conn *cc)
{
    struct wan_grpc_client *c = cc->c;
    nghttp2_nv nva[] = {
        WAN_GRPC_NV(":method", "POST"),
        WAN_GRPC_NV(":scheme", "https"),
        WAN_GRPC_NV(":path", WAN_GRPC_PATH_SHIP),
        wan_grpc_nv(":authority", c->peer_site),
        WAN_GRPC_NV("content-type", "application/grpc"),
        WAN_GRPC_NV("te", "trailers"),
        WAN_GRPC_NV("grpc-accept-encoding", "identity"),
        WAN_GRPC_NV("user-agent", CLIENT_USER_AGENT),
    };
    nghttp2_data_provider prd;

    prd.source.ptr = cc;
    prd.read_callback = ship_read_cb;
    cc->ship_id =
        nghttp2_submit_request(cc->h2.session, NULL, nva, sizeof(nva) / sizeof(nva[0]), &prd, NULL);
    return cc->ship_id > 0 ? 0 : -ENOMEM;
}

/* ---- nghttp2 callbacks --------------------------------------------------------------------------
 */

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    struct client_conn *cc = user;
    int32_t id = frame->hd.stream_id;
    struct client_call *call = NULL;
    int *http_status, *grpc_status;
    char *message;
    size_t message_len;

    (void)flags;
    if (frame->hd.type != NGHTTP2_HEADERS) {
        return 0;
    }
    if (id == cc->ship_id) {
        http_status = &cc->ship_http_status;
        grpc_status = &cc->ship_grpc_status;
        message = cc->ship_message;
        message_len = sizeof(cc->ship_message);
    } else {
        call = nghttp2_session_get_stream_user_data(session, id);
        if (call == NULL) {
            return 0;
        }
        http_status = &call->http_status;
        grpc_status = &call->grpc_status;
        message = call->grpc_message;
        message_len = sizeof(call->grpc_message);
    }
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        int v = 0;

        for (size_t i = 0; i < valuelen && i < 3; i++) {
            v = v * 10 + (value[i] >= '0' && value[i] <= '9' ? value[i] - '0' : 0);
        }
        *http_status = v;
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        *grpc_status = wan_grpc_parse_status(value, valuelen);
    } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
        wan_grpc_message_decode((const char *)value, valuelen, message, message_len);
    }
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                              const uint8_t *data, size_t len, void *user)
{
    struct client_conn *cc = user;
    struct client_call *call;

    (void)flags;
    call = nghttp2_session_get_stream_user_data(session, stream_id);
    if (stream_id != cc->ship_id && call != NULL && call->kind == CALL_BACKFILL) {
        backfill_data(call, data, len); /* gives the window back batch by batch */
        return 0;
    }
    /* Acks and unary answers are small and taken at once: window back at once. */
    nghttp2_session_consume(session, stream_id, len);
    if (stream_id == cc->ship_id) {
        ship_data(cc, data, len);
    } else if (call != NULL) {
        call_data(call, data, len);
    }
    return 0;
}

/* A Backfill call's request HEADERS are out, so its stream exists now: widen its receive
 * window past the connection's initial stream window. */
static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    struct client_conn *cc = user;
    struct client_call *call;

    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
        return 0;
    }
    call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (call != NULL && call->kind == CALL_BACKFILL &&
        cc->c->backfill_window > cc->c->stream_window) {
        nghttp2_session_set_local_window_size(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                              cc->c->backfill_window);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user)
{
    struct client_conn *cc = user;
    struct client_call *call;

    if (stream_id == cc->ship_id) {
        ship_closed(cc, error_code);
        return 0;
    }
    call = nghttp2_session_get_stream_user_data(session, stream_id);
    if (call != NULL) {
        call_stream_closed(call, error_code);
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    struct client_conn *cc = user;

    (void)session;
    if (frame->hd.type == NGHTTP2_SETTINGS && !(frame->hd.flags & NGHTTP2_FLAG_ACK) &&
        cc->state == CC_TLS && !cc->h2.closing) {
        struct wan_grpc_client *c = cc->c;

        cc->state = CC_UP;
        cc->h2.established = 1;
        clog_(c, WAN_GRPC_LOG_INFO, "link to %s up: TLS 1.3, %s", cc->h2.peer,
              c->cfg.no_ship ? "no Ship stream" : "Ship stream open");
        if (c->cb.up != NULL) {
            c->cb.up(c->cb_arg, c->peer_site);
        }
        return 0;
    }
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        clog_(cc->c, WAN_GRPC_LOG_INFO, "%s: GOAWAY from peer (%s)", cc->h2.peer,
              nghttp2_http2_strerror(frame->goaway.error_code));
    }
    return 0;
}

static int on_error(nghttp2_session *session, int lib_error_code, const char *msg, size_t len,
                    void *user)
{
    struct client_conn *cc = user;

    (void)session;
    (void)lib_error_code;
    clog_(cc->c, WAN_GRPC_LOG_DEBUG, "%s: HTTP/2: %.*s", cc->h2.peer, (int)len, msg);
    return 0;
}

/* ---- the link
 * ------------------------------------------------------------------------------------ */

/* Free a link; the client must have let go of it already. */
static void conn_free(struct client_conn *cc)
{
    if (cc->connect_ev != NULL) {
        event_free(cc->connect_ev);
    }
    if (cc->h2_ready) {
        wan_grpc_h2_free(&cc->h2);
    } else if (cc->fd >= 0) {
        evutil_closesocket(cc->fd);
    }
    if (cc->ship_out != NULL) {
        evbuffer_free(cc->ship_out);
    }
    wan_grpc_deframer_free(&cc->ship_df);
    free(cc);
}

/* The link is over: fail its calls, detach it, free it, then tell the application. */
static void conn_finish(struct client_conn *cc, int status, const char *reason)
{
    struct wan_grpc_client *c = cc->c;
    char why[300], msg[320];

    snprintf(why, sizeof(why), "%s", reason);
    snprintf(msg, sizeof(msg), "link down: %s", why);
    call_fail_all(cc, WAN_GRPC_UNAVAILABLE, msg);
    c->conn = NULL;
    conn_free(cc);
    if (c->cb.down != NULL) {
        c->cb.down(c->cb_arg, status, why);
    }
}

static void conn_closed(void *owner, int was_up, const char *reason)
{
    struct client_conn *cc = owner;

    if (was_up) {
        clog_(cc->c, WAN_GRPC_LOG_INFO, "link to %s down: %s", cc->h2.peer, reason);
    }
    conn_finish(cc, cc->down_status, reason);
}

static void conn_flushed(void *owner)
{
    struct client_conn *cc = owner;
    struct wan_grpc_client *c = cc->c;

    if (cc->notify_writable) {
        cc->notify_writable = 0;
        if (c->cb.writable != NULL) {
            c->cb.writable(c->cb_arg);
        }
    }
}

static int conn_ready(void *owner, SSL *ssl)
{
    struct client_conn *cc = owner;
    struct wan_grpc_client *c = cc->c;
    char site[TLS_SITE_MAX + 1];
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, CLIENT_MAX_STREAMS},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)c->stream_window},
    };

    if (tls_peer_site(ssl, site, sizeof(site)) != 0 || strcasecmp(site, c->peer_site) != 0) {
        clog_(c, WAN_GRPC_LOG_WARN, "refused %s: its certificate does not name %s", c->address,
              c->peer_site);
        wan_grpc_h2_close(&cc->h2, 0, "refused: the certificate does not name %s", c->peer_site);
        return -1;
    }
    if (nghttp2_session_client_new2(&cc->h2.session, c->h2cb, cc, c->h2opt) != 0 ||
        nghttp2_submit_settings(cc->h2.session, NGHTTP2_FLAG_NONE, iv,
                                sizeof(iv) / sizeof(iv[0])) != 0 ||
        nghttp2_session_set_local_window_size(cc->h2.session, NGHTTP2_FLAG_NONE, 0,
                                              CLIENT_CONN_WINDOW) != 0 ||
        (!c->cfg.no_ship && ship_open(cc) != 0)) {
        wan_grpc_h2_close(&cc->h2, 0, "out of memory starting HTTP/2");
        return -1;
    }
    /* Not up yet: with TLS 1.3 our handshake ends before the server has checked our
     * certificate.  Its SETTINGS frame, sent only once it accepted us, makes us up. */
    return 0;
}

static const struct wan_grpc_h2_ops client_h2_ops = {
    .ready = conn_ready,
    .flushed = conn_flushed,
    .closed = conn_closed,
};

static void conn_connect_cb(evutil_socket_t fd, short what, void *arg)
{
    struct client_conn *cc = arg;
    struct wan_grpc_client *c = cc->c;
    struct bufferevent *bev = NULL;
    char peer[320], why[200];
    int err = cc->connect_errno;
    socklen_t len = sizeof(err);

    if (cc->cancelled) {
        conn_finish(cc, WAN_GRPC_UNAVAILABLE, "closed while connecting");
        return;
    }
    if (err == 0 && (what & EV_TIMEOUT)) {
        err = ETIMEDOUT;
    }
    if (err == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1) {
        err = errno;
    }
    if (err != 0) {
        snprintf(why, sizeof(why), "connect to %s failed: %s", c->address, strerror(err));
        clog_(c, WAN_GRPC_LOG_INFO, "%s (%s)", why, c->peer_site);
        conn_finish(cc, WAN_GRPC_UNAVAILABLE, why);
        return;
    }
    event_free(cc->connect_ev);
    cc->connect_ev = NULL;
    if (tls_bev_connect(c->cfg.tls, c->base, cc->fd, c->peer_site, 0, &bev) != 0) {
        conn_finish(cc, WAN_GRPC_UNAVAILABLE, "cannot set up TLS");
        return;
    }
    cc->fd = -1; /* the bufferevent's now */
    cc->state = CC_TLS;
    cc->h2_ready = 1;
    snprintf(peer, sizeof(peer), "%s (%s)", c->address, c->peer_site);
    if (wan_grpc_h2_init(&cc->h2, c->base, bev, c->cfg.connect_timeout_ms, c->cfg.ping_ms,
                         &client_h2_ops, cc, c->cfg.log, c->cfg.log_arg, peer) != 0) {
        conn_finish(cc, WAN_GRPC_UNAVAILABLE, "out of memory");
    }
}

/* ---- public
 * ------------------------------------------------------------------------------------------ */

int wan_grpc_client_create(struct wan_grpc_client **out, struct event_base *base,
                           const struct wan_grpc_client_config *cfg,
                           const struct wan_grpc_client_callbacks *cb, void *cb_arg)
{
    struct wan_grpc_client *c;
    uint64_t window;

    if (out == NULL || base == NULL || cfg == NULL || cb == NULL || cfg->tls == NULL ||
        cfg->peer_site == NULL || cfg->peer_site[0] == '\0' || cfg->address == NULL ||
        cfg->max_message > WAN_GRPC_MAX_MESSAGE_LIMIT) {
        return -EINVAL;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return -ENOMEM;
    }
    c->base = base;
    c->cfg = *cfg;
    c->cb = *cb;
    c->cb_arg = cb_arg;
    c->sslen = (int)sizeof(c->ss);
    if (evutil_parse_sockaddr_port(cfg->address, (struct sockaddr *)&c->ss, &c->sslen) != 0) {
        free(c);
        return -EINVAL;
    }
    c->peer_site = strdup(cfg->peer_site);
    c->address = strdup(cfg->address);
    if (c->peer_site == NULL || c->address == NULL ||
        nghttp2_session_callbacks_new(&c->h2cb) != 0 || nghttp2_option_new(&c->h2opt) != 0) {
        wan_grpc_client_destroy(c);
        return -ENOMEM;
    }
    c->cfg.peer_site = c->peer_site;
    c->cfg.address = c->address;
    if (c->cfg.max_message == 0) {
        c->cfg.max_message = WAN_GRPC_MAX_MESSAGE_DEFAULT;
    }
    if (c->cfg.connect_timeout_ms == 0) {
        c->cfg.connect_timeout_ms = WAN_GRPC_HANDSHAKE_TIMEOUT_DEFAULT_MS;
    }
    if (c->cfg.ping_ms == 0) {
        c->cfg.ping_ms = WAN_GRPC_PING_INTERVAL_DEFAULT_MS;
    }
    if (c->cfg.ship_high == 0) {
        c->cfg.ship_high = WAN_GRPC_SHIP_HIGH_DEFAULT;
    }
    if (c->cfg.ship_low == 0 || c->cfg.ship_low >= c->cfg.ship_high) {
        c->cfg.ship_low = c->cfg.ship_high / 4;
    }
    window = (uint64_t)c->cfg.max_message + WAN_GRPC_FRAME_PREFIX;
    if (window < NGHTTP2_INITIAL_WINDOW_SIZE) {
        window = NGHTTP2_INITIAL_WINDOW_SIZE;
    }
    c->stream_window = (int32_t)window;
    c->backfill_window =
        (int32_t)(window > CLIENT_BACKFILL_WINDOW ? window : CLIENT_BACKFILL_WINDOW);
    nghttp2_option_set_no_auto_window_update(c->h2opt, 1);
    nghttp2_session_callbacks_set_on_header_callback(c->h2cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(c->h2cb, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(c->h2cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(c->h2cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(c->h2cb, on_frame_send);
    nghttp2_session_callbacks_set_error_callback2(c->h2cb, on_error);
    *out = c;
    return 0;
}

void wan_grpc_client_destroy(struct wan_grpc_client *c)
{
    if (c == NULL) {
        return;
    }
    if (c->conn != NULL) {
        struct client_conn *cc = c->conn;

        call_fail_all(cc, WAN_GRPC_CANCELLED, "client destroyed");
        c->conn = NULL;
        conn_free(cc);
    }
    if (c->h2cb != NULL) {
        nghttp2_session_callbacks_del(c->h2cb);
    }
    if (c->h2opt != NULL) {
        nghttp2_option_del(c->h2opt);
    }
    free(c->peer_site);
    free(c->address);
    free(c);
}

int wan_grpc_client_connect(struct wan_grpc_client *c)
{
    struct client_conn *cc;
    struct timeval tv;
    evutil_socket_t fd;
    int one = 1;

    if (c->conn != NULL) {
        return -EALREADY;
    }
    fd = socket(c->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        int err = errno;

        clog_(c, WAN_GRPC_LOG_ERROR, "socket() for %s: %s", c->address, strerror(err));
        return -err;
    }
    cc = calloc(1, sizeof(*cc));
    if (cc == NULL || (cc->ship_out = evbuffer_new()) == NULL) {
        free(cc);
        evutil_closesocket(fd);
        return -ENOMEM;
    }
    cc->c = c;
    cc->fd = fd;
    cc->ship_id = -1;
    cc->ship_grpc_status = -1;
    cc->down_status = WAN_GRPC_UNAVAILABLE;
    wan_grpc_deframer_init(&cc->ship_df, c->cfg.max_message);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&c->ss, (socklen_t)c->sslen) == -1 && errno != EINPROGRESS) {
        cc->connect_errno = errno;
    }
    /* Even an immediate failure is reported from the loop, never inside connect(). */
    cc->connect_ev = event_new(c->base, fd, EV_WRITE, conn_connect_cb, cc);
    if (cc->connect_ev == NULL) {
        conn_free(cc);
        return -ENOMEM;
    }
    tv.tv_sec = c->cfg.connect_timeout_ms / 1000;
    tv.tv_usec = (c->cfg.connect_timeout_ms % 1000) * 1000;
    if (cc->connect_errno != 0) {
        event_active(cc->connect_ev, EV_WRITE, 0);
    } else if (event_add(cc->connect_ev, &tv) != 0) {
        conn_free(cc);
        return -ENOMEM;
    }
    c->conn = cc;
    clog_(c, WAN_GRPC_LOG_DEBUG, "connecting to %s (%s)", c->address, c->peer_site);
    return 0;
}

int wan_grpc_client_close(struct wan_grpc_client *c, const char *reason)
{
    struct client_conn *cc = c->conn;

    if (cc == NULL) {
        return -ENOTCONN;
    }
    if (cc->state == CC_CONNECTING) {
        cc->cancelled = 1;
        event_active(cc->connect_ev, EV_WRITE, 0);
        return 0;
    }
    cc->down_status = WAN_GRPC_UNAVAILABLE;
    wan_grpc_h2_close(&cc->h2, 0, "closed: %s", reason ? reason : "by the caller");
    return 0;
}

int wan_grpc_client_is_up(const struct wan_grpc_client *c)
{
    return c->conn != NULL && c->conn->state == CC_UP && !c->conn->h2.closing;
}

/* Room for one framed message of size bytes on the Ship queue.  0 with *v reserved, or
 * -ENOTCONN / -EMSGSIZE / -ENOBUFS / -ENOMEM as wan_grpc_client_ship() says. */
static int ship_reserve(struct wan_grpc_client *c, size_t size, struct evbuffer_iovec *v)
{
    struct client_conn *cc = c->conn;

    if (!wan_grpc_client_is_up(c) || cc->ship_ending || cc->ship_id < 0) {
        return -ENOTCONN;
    }
    if (size - WAN_GRPC_FRAME_PREFIX > c->cfg.max_message) {
        return -EMSGSIZE;
    }
    if (evbuffer_get_length(cc->ship_out) >= c->cfg.ship_high) {
        cc->want_writable = 1;
        return -ENOBUFS;
    }
    if (evbuffer_reserve_space(cc->ship_out, (ev_ssize_t)size, v, 1) < 1 || v->iov_len < size) {
        return -ENOMEM;
    }
    return 0;
}

static int ship_commit(struct wan_grpc_client *c, struct evbuffer_iovec *v, size_t size)
{
    struct client_conn *cc = c->conn;

    v->iov_len = size;
    if (evbuffer_commit_space(cc->ship_out, v, 1) != 0) {
        return -ENOMEM;
    }
    if (evbuffer_get_length(cc->ship_out) >= c->cfg.ship_high) {
        cc->want_writable = 1;
    }
    ship_wake(cc);
    return 0;
}

int wan_grpc_client_ship(struct wan_grpc_client *c, const Geogate__Wan__V1__ShipRequest *req)
{
    struct evbuffer_iovec v;
    size_t size = wan_grpc_frame_size(&req->base);
    int rc = ship_reserve(c, size, &v);

    if (rc != 0) {
        return rc;
    }
    if (wan_grpc_frame_write(&req->base, v.iov_base) != size) {
        return -ENOMEM;
    }
    return ship_commit(c, &v, size);
}

int wan_grpc_client_ship_raw(struct wan_grpc_client *c, const uint8_t *msg, size_t len)
{
    struct evbuffer_iovec v;
    size_t size = WAN_GRPC_FRAME_PREFIX + len;
    int rc = len > UINT32_MAX ? -EMSGSIZE : ship_reserve(c, size, &v);

    if (rc != 0) {
        return rc;
    }
    wan_grpc_frame_prefix(v.iov_base, (uint32_t)len);
    memcpy((uint8_t *)v.iov_base + WAN_GRPC_FRAME_PREFIX, msg, len);
    return ship_commit(c, &v, size);
}

size_t wan_grpc_client_ship_queued(const struct wan_grpc_client *c)
{
    if (c->conn == NULL || c->conn->ship_out == NULL) {
        return 0;
    }
    return evbuffer_get_length(c->conn->ship_out);
}

size_t wan_grpc_client_ship_window(const struct wan_grpc_client *c)
{
    struct client_conn *cc = c->conn;
    int32_t sw, cw;

    if (!wan_grpc_client_is_up(c) || cc->ship_id < 0) {
        return 0;
    }
    sw = nghttp2_session_get_stream_remote_window_size(cc->h2.session, cc->ship_id);
    cw = nghttp2_session_get_remote_window_size(cc->h2.session);
    if (sw < 0 || cw < 0) {
        return 0;
    }
    return (size_t)(sw < cw ? sw : cw);
}

int wan_grpc_client_ship_end(struct wan_grpc_client *c)
{
    struct client_conn *cc = c->conn;

    if (!wan_grpc_client_is_up(c) || cc->ship_ending || cc->ship_id < 0) {
        return -ENOTCONN;
    }
    cc->ship_ending = 1;
    ship_wake(cc);
    return 0;
}

static int call_start(struct wan_grpc_client *c, struct client_call *call, const char *path,
                      const ProtobufCMessage *req)
{
    struct client_conn *cc = c->conn;
    char timeout[16];
    nghttp2_nv nva[9] = {
        WAN_GRPC_NV(":method", "POST"),
        WAN_GRPC_NV(":scheme", "https"),
        wan_grpc_nv(":path", path),
        wan_grpc_nv(":authority", c->peer_site),
        WAN_GRPC_NV("content-type", "application/grpc"),
        WAN_GRPC_NV("te", "trailers"),
        WAN_GRPC_NV("grpc-accept-encoding", "identity"),
        WAN_GRPC_NV("user-agent", CLIENT_USER_AGENT),
    };
    size_t nnv = 8;
    nghttp2_data_provider prd;
    struct evbuffer_iovec v;
    size_t size = wan_grpc_frame_size(req);

    if (size - WAN_GRPC_FRAME_PREFIX > c->cfg.max_message) {
        return -EMSGSIZE;
    }
    call->cc = cc;
    call->grpc_status = -1;
    call->local_status = -1;
    wan_grpc_deframer_init(&call->df, c->cfg.max_message);
    call->req = evbuffer_new();
    if (call->req == NULL || evbuffer_reserve_space(call->req, (ev_ssize_t)size, &v, 1) < 1 ||
        v.iov_len < size || wan_grpc_frame_write(req, v.iov_base) != size) {
        goto fail_req;
    }
    v.iov_len = size;
    if (evbuffer_commit_space(call->req, &v, 1) != 0) {
        goto fail_req;
    }
    if (call->timeout_ms > 0) {
        struct timeval tv = {call->timeout_ms / 1000, (call->timeout_ms % 1000) * 1000};

        nva[nnv++] =
            wan_grpc_nv("grpc-timeout", wan_grpc_timeout_format(call->timeout_ms, timeout));
        call->timer = evtimer_new(c->base, call_timeout_cb, call);
        if (call->timer == NULL || evtimer_add(call->timer, &tv) != 0) {
            goto fail_timer;
        }
    }
    prd.source.ptr = call->req;
    prd.read_callback = call_read_cb;
    call->stream_id = nghttp2_submit_request(cc->h2.session, NULL, nva, nnv, &prd, call);
    if (call->stream_id < 0) {
        goto fail_timer;
    }
    call->next = cc->calls;
    if (cc->calls != NULL) {
        cc->calls->prev = call;
    }
    cc->calls = call;
    wan_grpc_h2_kick(&cc->h2);
    return 0;

fail_timer:
    if (call->timer != NULL) {
        event_free(call->timer);
    }
fail_req:
    if (call->req != NULL) {
        evbuffer_free(call->req);
    }
    wan_grpc_deframer_free(&call->df);
    return -ENOMEM;
}

int wan_grpc_client_read(struct wan_grpc_client *c, const Geogate__Wan__V1__ReadRequest *req,
                         uint32_t timeout_ms, wan_grpc_read_done_fn done, void *done_arg)
{
    struct client_call *call;
    int rc;

    if (!wan_grpc_client_is_up(c) || done == NULL || req == NULL) {
        return done == NULL || req == NULL ? -EINVAL : -ENOTCONN;
    }
    call = calloc(1, sizeof(*call));
    if (call == NULL) {
        return -ENOMEM;
    }
    call->kind = CALL_READ;
    call->read_done = done;
    call->done_arg = done_arg;
    call->timeout_ms = timeout_ms;
    rc = call_start(c, call, WAN_GRPC_PATH_READ, &req->base);
    if (rc != 0) {
        free(call);
    }
    return rc;
}

int wan_grpc_client_health(struct wan_grpc_client *c, const char *service, uint32_t timeout_ms,
                           wan_grpc_health_done_fn done, void *done_arg)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    struct client_call *call;
    int rc;

    if (!wan_grpc_client_is_up(c) || done == NULL) {
        return done == NULL ? -EINVAL : -ENOTCONN;
    }
    call = calloc(1, sizeof(*call));
    if (call == NULL) {
        return -ENOMEM;
    }
    req.service = (char *)(service ? service : "");
    call->kind = CALL_HEALTH;
    call->health_done = done;
    call->done_arg = done_arg;
    call->timeout_ms = timeout_ms;
    rc = call_start(c, call, WAN_GRPC_PATH_HEALTH, &req.base);
    if (rc != 0) {
        free(call);
    }
    return rc;
}

int wan_grpc_client_backfill(struct wan_grpc_client *c,
                             const Geogate__Wan__V1__BackfillRequest *req,
                             wan_grpc_backfill_batch_fn batch, wan_grpc_backfill_done_fn done,
                             void *arg, struct wan_grpc_client_backfill **out)
{
    struct client_call *call;
    int rc;

    if (c == NULL || req == NULL || batch == NULL || done == NULL || out == NULL) {
        return -EINVAL;
    }
    if (!wan_grpc_client_is_up(c)) {
        return -ENOTCONN;
    }
    call = calloc(1, sizeof(*call));
    if (call == NULL) {
        return -ENOMEM;
    }
    call->kind = CALL_BACKFILL;
    call->backfill_batch = batch;
    call->backfill_done = done;
    call->done_arg = arg;
    call->handle.call = call;
    rc = call_start(c, call, WAN_GRPC_PATH_BACKFILL, &req->base);
    if (rc != 0) {
        free(call);
        return rc;
    }
    clog_(c, WAN_GRPC_LOG_DEBUG, "%s: Backfill call %d started", c->conn->h2.peer,
          (int)call->stream_id);
    *out = &call->handle;
    return 0;
}

int wan_grpc_client_backfill_cancel(struct wan_grpc_client_backfill *handle)
{
    struct client_call *call = handle->call;
    struct client_conn *cc = call->cc;

    if (call->cancelled) {
        return 0;
    }
    if (cc->h2.closing) {
        return -ENOTCONN; /* conn_finish completes it with UNAVAILABLE */
    }
    call->cancelled = 1;
    /* on_stream_close reports it once the RST_STREAM is out (a request whose HEADERS
     * were still queued is dropped by nghttp2, which closes the stream just the same). */
    nghttp2_submit_rst_stream(cc->h2.session, NGHTTP2_FLAG_NONE, call->stream_id, NGHTTP2_CANCEL);
    wan_grpc_h2_kick(&cc->h2);
    return 0;
}
