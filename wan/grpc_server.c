/*
 * grpc_server — the WAN gRPC server's connections: the listener, TLS accept
 * (tls/tls.h), one nghttp2 server session per connection (wan/grpc_h2.c moves the
 * bytes), the session callbacks that hand each stream to wan/grpc_server_stream.c,
 * memory-mode connections for tests and fuzzing, and the server's public set-up.
 * See wan/grpc_server.h for the lives of a Ship stream and of a Backfill call.
 *
 * It does not look inside streams (grpc_server_stream.c does), apply batches or pick
 * ack numbers (the application does), dial out (wan/grpc_client.c), and never includes
 * gateway/ headers.  WAN thread only.
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
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "proto/geogate_wan.pb-c.h"
#include "proto/health.pb-c.h"
#include "tls/tls.h"
#include "wan/grpc_frame.h"
#include "wan/grpc_h2.h"
#include "wan/grpc_server.h"
#include "wan/grpc_server_int.h"

#define SERVER_ACK_HIGH_DEFAULT (1u << 20)
#define SERVER_BACKFILL_HIGH_DEFAULT (4u << 20)
#define SERVER_MAX_HEADER_LIST (16u << 10)

void wan_grpc_server_log(const struct wan_grpc_server *srv, enum wan_grpc_log_level level,
                         const char *fmt, ...)
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
    st = wan_grpc_sstream_new(conn, frame->hd.stream_id);
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
    wan_grpc_sstream_header(st, name, namelen, value, valuelen);
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
        wan_grpc_sstream_route(st);
    }
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        wan_grpc_sstream_remote_end(st);
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
    wan_grpc_sstream_data(st, data, len);
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
    if (st != NULL) {
        st->trailers_sent = 1;
    }
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
    /* A Backfill call's trailers can wait long behind batches the caller's window holds
     * back: a caller that resets meanwhile did not get them (a Ship stream's trailers
     * count once submitted, as they always have). */
    if (st->trailers_submitted && (st->kind != WAN_GRPC_SK_BACKFILL || st->trailers_sent)) {
        status = st->status;
        snprintf(why, sizeof(why), "finished: %s", st->message[0] ? st->message : "ok");
    } else {
        status = (error_code == NGHTTP2_CANCEL || error_code == NGHTTP2_NO_ERROR)
                     ? WAN_GRPC_CANCELLED
                     : wan_grpc_status_from_h2_error(error_code);
        snprintf(why, sizeof(why), "reset by peer (%s)", nghttp2_http2_strerror(error_code));
    }
    if ((st->kind == WAN_GRPC_SK_SHIP || st->kind == WAN_GRPC_SK_BACKFILL) && st->app_open) {
        wan_grpc_server_log(
            st->conn->srv, WAN_GRPC_LOG_INFO, "%s: %s %d closed: %s", st->conn->h2.peer,
            st->kind == WAN_GRPC_SK_SHIP ? "Ship stream" : "Backfill call", (int)stream_id, why);
    }
    wan_grpc_sstream_free(st, status, why);
    return 0;
}

static int on_error(nghttp2_session *session, int lib_error_code, const char *msg, size_t len,
                    void *user)
{
    struct wan_grpc_server_conn *conn = user;

    (void)session;
    (void)lib_error_code;
    wan_grpc_server_log(conn->srv, WAN_GRPC_LOG_DEBUG, "%s: HTTP/2: %.*s", conn->h2.peer, (int)len,
                        msg);
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
            wan_grpc_sstream_resume(st);
        }
    }
}

static void conn_teardown_streams(struct wan_grpc_server_conn *conn, const char *why)
{
    while (conn->streams != NULL) {
        wan_grpc_sstream_free(conn->streams, WAN_GRPC_UNAVAILABLE, why);
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
        wan_grpc_server_log(conn->srv, WAN_GRPC_LOG_INFO, "connection from %s closed: %s",
                            conn->h2.peer, reason);
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
        wan_grpc_server_log(conn->srv, WAN_GRPC_LOG_WARN,
                            "refused %s: no configured peer site in its certificate", conn->addr);
        wan_grpc_h2_close(&conn->h2, 0, "refused: no configured peer site in the certificate");
        return -1;
    }
    snprintf(conn->h2.peer, sizeof(conn->h2.peer), "%s (%s)", conn->addr, conn->site);
    conn->h2.established = 1; /* a TLS server has checked the client when it gets here */
    if (conn_start_session(conn) != 0) {
        wan_grpc_h2_close(&conn->h2, 0, "out of memory");
        return -1;
    }
    wan_grpc_server_log(conn->srv, WAN_GRPC_LOG_INFO, "accepted %s: TLS 1.3, site %s", conn->addr,
                        conn->site);
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
    int one = 1;

    (void)lev;
    (void)salen;
    wan_grpc_sockaddr_text(sa, addr, sizeof(addr));
    /* Replies are small and many streams share the connection: with Nagle on, a reply
     * written while the previous one is not yet acknowledged waits for that ACK, which
     * comes back a WAN round trip later, so every read answered second costs the client
     * two round trips.  The client side (grpc_client.c) already sends without delay. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    conn = conn_new(srv);
    if (conn == NULL) {
        wan_grpc_server_log(srv, WAN_GRPC_LOG_ERROR, "out of memory accepting %s", addr);
        evutil_closesocket(fd);
        return;
    }
    snprintf(conn->addr, sizeof(conn->addr), "%s", addr);
    if (tls_bev_accept(srv->cfg.tls, srv->base, fd, 0, &bev) != 0) {
        wan_grpc_server_log(srv, WAN_GRPC_LOG_ERROR, "cannot set up TLS for %s", addr);
        evutil_closesocket(fd);
        conn_unlink(conn);
        free(conn);
        return;
    }
    if (wan_grpc_h2_init(&conn->h2, srv->base, bev, srv->cfg.handshake_timeout_ms, srv->cfg.ping_ms,
                         &server_h2_ops, conn, srv->cfg.log, srv->cfg.log_arg, addr) != 0) {
        wan_grpc_server_log(srv, WAN_GRPC_LOG_ERROR, "out of memory accepting %s", addr);
        conn_free(conn, "out of memory");
        return;
    }
    wan_grpc_server_log(srv, WAN_GRPC_LOG_DEBUG, "connection from %s: TLS handshake", addr);
}

static void on_accept_error(struct evconnlistener *lev, void *arg)
{
    struct wan_grpc_server *srv = arg;
    int err = EVUTIL_SOCKET_ERROR();

    (void)lev;
    wan_grpc_server_log(srv, WAN_GRPC_LOG_WARN, "accept failed: %s",
                        evutil_socket_error_to_string(err));
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
    if (srv->cfg.backfill_high == 0) {
        srv->cfg.backfill_high = SERVER_BACKFILL_HIGH_DEFAULT;
        if (srv->cfg.backfill_high < srv->cfg.max_message) {
            srv->cfg.backfill_high = srv->cfg.max_message;
        }
    }
    srv->backfill_low = srv->cfg.backfill_high / 4;
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
        srv->nlisteners >= WAN_GRPC_SERVER_MAX_LISTENERS) {
        return -EINVAL;
    }
    memset(&ss, 0, sizeof(ss));
    if (parse_listen_addr(addr, &ss, &sslen) != 0) {
        wan_grpc_server_log(srv, WAN_GRPC_LOG_ERROR, "cannot listen on '%s': not an address:port",
                            addr);
        return -EINVAL;
    }
    lev = evconnlistener_new_bind(srv->base, on_accept, srv,
                                  LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
                                  128, (struct sockaddr *)&ss, sslen);
    if (lev == NULL) {
        int err = errno ? errno : EADDRINUSE;

        wan_grpc_server_log(srv, WAN_GRPC_LOG_ERROR, "cannot listen on %s: %s", addr,
                            strerror(err));
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
        wan_grpc_server_log(srv, WAN_GRPC_LOG_INFO, "listening on %s (gRPC, TLS 1.3)", text);
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
