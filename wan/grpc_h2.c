/*
 * grpc_h2 — one HTTP/2 connection over a TLS bufferevent, or over memory: byte pump
 * between the socket and nghttp2, TLS handshake checks, keepalive, and closing from a
 * deferred event only (see wan/grpc_h2.h for the picture).  It knows nothing of gRPC.
 * WAN thread (the event_base given), no locks.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>

#include "tls/tls.h"
#include "wan/grpc_h2.h"

/* Stop asking nghttp2 for more output while this much waits for the socket; the write
 * callback (output drained to OUT_LOW) asks again.  Bounds what a peer that does not
 * read can make us hold. */
#define H2_OUT_HIGH (256u << 10)
#define H2_OUT_LOW (64u << 10)
#define H2_MAX_TLS_ERRS 8

void wan_grpc_logv(wan_grpc_log_fn log, void *arg, enum wan_grpc_log_level level, const char *fmt,
                   va_list ap)
{
    char line[768];

    if (log == NULL) {
        return;
    }
    vsnprintf(line, sizeof(line), fmt, ap);
    /* Lines quote what peers sent (origin_site, nghttp2's header complaints): keep them
     * one printable line each. */
    for (char *p = line; *p != '\0'; p++) {
        if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f) {
            *p = '?';
        }
    }
    log(arg, level, line);
}

void wan_grpc_logf(wan_grpc_log_fn log, void *arg, enum wan_grpc_log_level level, const char *fmt,
                   ...)
{
    va_list ap;

    va_start(ap, fmt);
    wan_grpc_logv(log, arg, level, fmt, ap);
    va_end(ap);
}

void wan_grpc_h2_log(const struct wan_grpc_h2 *h, enum wan_grpc_log_level level, const char *fmt,
                     ...)
{
    char msg[640];
    va_list ap;

    if (h->log == NULL) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    wan_grpc_logf(h->log, h->log_arg, level, "wan: %s", msg);
}

/* tls_log_refusal() writes finished lines; pass them on as warnings. */
static void h2_tls_log(void *arg, const char *line)
{
    const struct wan_grpc_h2 *h = arg;

    wan_grpc_h2_log(h, WAN_GRPC_LOG_WARN, "%s", line);
}

nghttp2_nv wan_grpc_nv(const char *name, const char *value)
{
    nghttp2_nv nv = {(uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value),
                     NGHTTP2_NV_FLAG_NONE};

    return nv;
}

int wan_grpc_parse_status(const uint8_t *value, size_t len)
{
    int v = 0;

    if (len == 0 || len > 2) {
        return WAN_GRPC_UNKNOWN;
    }
    for (size_t i = 0; i < len; i++) {
        if (value[i] < '0' || value[i] > '9') {
            return WAN_GRPC_UNKNOWN;
        }
        v = v * 10 + (value[i] - '0');
    }
    return v < WAN_GRPC_STATUS_MAX ? v : WAN_GRPC_UNKNOWN;
}

int wan_grpc_status_from_http(int http_status)
{
    switch (http_status) {
    case 400:
        return WAN_GRPC_INTERNAL;
    case 401:
        return WAN_GRPC_UNAUTHENTICATED;
    case 403:
        return WAN_GRPC_PERMISSION_DENIED;
    case 404:
        return WAN_GRPC_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
        return WAN_GRPC_UNAVAILABLE;
    default:
        return WAN_GRPC_UNKNOWN;
    }
}

int wan_grpc_status_from_h2_error(uint32_t error_code)
{
    switch (error_code) {
    case NGHTTP2_NO_ERROR:
    case NGHTTP2_PROTOCOL_ERROR:
    case NGHTTP2_INTERNAL_ERROR:
    case NGHTTP2_FLOW_CONTROL_ERROR:
    case NGHTTP2_SETTINGS_TIMEOUT:
    case NGHTTP2_FRAME_SIZE_ERROR:
    case NGHTTP2_COMPRESSION_ERROR:
    case NGHTTP2_CONNECT_ERROR:
        return WAN_GRPC_INTERNAL;
    case NGHTTP2_REFUSED_STREAM:
        return WAN_GRPC_UNAVAILABLE;
    case NGHTTP2_CANCEL:
        return WAN_GRPC_CANCELLED;
    case NGHTTP2_ENHANCE_YOUR_CALM:
        return WAN_GRPC_RESOURCE_EXHAUSTED;
    case NGHTTP2_INADEQUATE_SECURITY:
        return WAN_GRPC_PERMISSION_DENIED;
    default:
        return WAN_GRPC_UNKNOWN;
    }
}

void wan_grpc_sockaddr_text(const struct sockaddr *sa, char *out, size_t outlen)
{
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;

    if (sa != NULL && sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
        port = ntohs(sin->sin_port);
        snprintf(out, outlen, "%s:%u", host, port);
    } else if (sa != NULL && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
        port = ntohs(sin6->sin6_port);
        snprintf(out, outlen, "[%s]:%u", host, port);
    } else {
        snprintf(out, outlen, "?");
    }
}

static struct evbuffer *h2_output(struct wan_grpc_h2 *h)
{
    return h->bev ? bufferevent_get_output(h->bev) : h->mem_out;
}

void wan_grpc_h2_kick(struct wan_grpc_h2 *h)
{
    if (h->defer_ev != NULL) {
        event_active(h->defer_ev, EV_WRITE, 0);
    }
}

void wan_grpc_h2_close(struct wan_grpc_h2 *h, int drain, const char *fmt, ...)
{
    va_list ap;

    if (!h->closing) {
        h->closing = 1;
        h->drain = drain;
        va_start(ap, fmt);
        vsnprintf(h->reason, sizeof(h->reason), fmt, ap);
        va_end(ap);
    } else if (!drain) {
        h->drain = 0;
    }
    if (h->bev != NULL && !h->drain) {
        bufferevent_disable(h->bev, EV_READ | EV_WRITE);
    } else if (h->bev != NULL) {
        bufferevent_disable(h->bev, EV_READ);
    }
    wan_grpc_h2_kick(h);
}

/* Move what nghttp2 wants to send into the output buffer, up to H2_OUT_HIGH. */
static void h2_flush(struct wan_grpc_h2 *h)
{
    struct evbuffer *out = h2_output(h);

    if (h->session == NULL || out == NULL) {
        return;
    }
    while (evbuffer_get_length(out) < H2_OUT_HIGH) {
        const uint8_t *data = NULL;
        ssize_t n = nghttp2_session_mem_send(h->session, &data);

        if (n < 0) {
            wan_grpc_h2_close(h, 0, "HTTP/2 send failed: %s", nghttp2_strerror((int)n));
            return;
        }
        if (n == 0) {
            break;
        }
        if (evbuffer_add(out, data, (size_t)n) != 0) {
            wan_grpc_h2_close(h, 0, "out of memory");
            return;
        }
    }
    if (!h->closing && !nghttp2_session_want_read(h->session) &&
        !nghttp2_session_want_write(h->session)) {
        wan_grpc_h2_close(h, 1, "HTTP/2 session finished");
    }
}

static void h2_finish(struct wan_grpc_h2 *h)
{
    if (h->closed_sent) {
        return;
    }
    h->closed_sent = 1;
    if (h->ping_ev != NULL) {
        event_del(h->ping_ev);
    }
    /* Last thing: the owner frees itself (and h) here. */
    h->ops->closed(h->owner, h->up, h->reason);
}

static void h2_deferred_cb(evutil_socket_t fd, short what, void *arg)
{
    struct wan_grpc_h2 *h = arg;

    (void)fd;
    (void)what;
    if (h->closed_sent) {
        return;
    }
    if (h->up && (!h->closing || h->drain)) {
        h2_flush(h);
    }
    if (h->up && !h->closing && h->ops->flushed != NULL) {
        h->ops->flushed(h->owner);
        /* The application may have queued more while being told. */
        if (!h->closing) {
            h2_flush(h);
        }
    }
    if (!h->closing) {
        return;
    }
    if (h->drain && h->bev != NULL && evbuffer_get_length(h2_output(h)) > 0) {
        return; /* the write callback comes back when the output is out */
    }
    h2_finish(h);
}

static void h2_read_cb(struct bufferevent *bev, void *arg)
{
    struct wan_grpc_h2 *h = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    while (!h->closing && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        ssize_t n;

        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1) {
            break;
        }
        h->rx_bytes += v.iov_len;
        n = nghttp2_session_mem_recv(h->session, v.iov_base, v.iov_len);
        if (n < 0) {
            wan_grpc_h2_log(h, WAN_GRPC_LOG_WARN, "HTTP/2 error from %s: %s", h->peer,
                            nghttp2_strerror((int)n));
            wan_grpc_h2_close(h, 1, "HTTP/2 error: %s", nghttp2_strerror((int)n));
            break;
        }
        evbuffer_drain(in, (size_t)n);
    }
    if (h->closing) {
        evbuffer_drain(in, evbuffer_get_length(in));
    }
    wan_grpc_h2_kick(h);
}

static void h2_event_cb(struct bufferevent *bev, short events, void *arg);

static void h2_write_cb(struct bufferevent *bev, void *arg)
{
    struct wan_grpc_h2 *h = arg;

    (void)bev;
    wan_grpc_h2_kick(h);
}

static const char *socket_error_text(char *buf, size_t len)
{
    int err = EVUTIL_SOCKET_ERROR();

    if (err == 0) {
        return NULL;
    }
    snprintf(buf, len, "%s", evutil_socket_error_to_string(err));
    return buf;
}

/* Handshake over: check the peer, then let the owner start HTTP/2. */
static void h2_connected(struct wan_grpc_h2 *h)
{
    SSL *ssl = bufferevent_openssl_get_ssl(h->bev);
    char why[256];

    bufferevent_set_timeouts(h->bev, NULL, NULL);
    if (tls_check_peer(ssl) < 0) {
        tls_log_refusal(ssl, NULL, 0, h->peer, h2_tls_log, h);
        tls_explain(ssl, NULL, 0, why, sizeof(why));
        wan_grpc_h2_close(h, 0, "refused: %s", why);
        return;
    }
    if (h->ops->ready(h->owner, ssl) < 0) {
        if (!h->closing) {
            wan_grpc_h2_close(h, 0, "could not start HTTP/2");
        }
        return;
    }
    h->up = 1;
    bufferevent_setwatermark(h->bev, EV_WRITE, H2_OUT_LOW, 0);
    bufferevent_setcb(h->bev, h2_read_cb, h2_write_cb, h2_event_cb, h);
    bufferevent_enable(h->bev, EV_READ | EV_WRITE);
    if (h->ping_ev != NULL) {
        struct timeval tv = {h->ping_ms / 1000, (h->ping_ms % 1000) * 1000};

        event_add(h->ping_ev, &tv);
    }
    /* Bytes may have arrived together with the end of the handshake. */
    if (evbuffer_get_length(bufferevent_get_input(h->bev)) > 0) {
        h2_read_cb(h->bev, h);
    }
    wan_grpc_h2_kick(h);
}

static void h2_event_cb(struct bufferevent *bev, short events, void *arg)
{
    struct wan_grpc_h2 *h = arg;
    unsigned long errs[H2_MAX_TLS_ERRS];
    size_t nerrs;
    char why[256], sock[128];

    if (h->closing) {
        if (events & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) {
            wan_grpc_h2_close(h, 0, "%s", h->reason);
        }
        return;
    }
    if (!h->up) {
        if (events & BEV_EVENT_CONNECTED) {
            h2_connected(h);
            return;
        }
        if (events & BEV_EVENT_TIMEOUT) {
            wan_grpc_h2_log(h, WAN_GRPC_LOG_WARN,
                            "TLS handshake with %s refused: no handshake within the timeout",
                            h->peer);
            wan_grpc_h2_close(h, 0, "refused: no TLS handshake within the timeout");
            return;
        }
        nerrs = tls_errors_from_bev(bev, errs, H2_MAX_TLS_ERRS);
        if (nerrs == 0 && (events & BEV_EVENT_ERROR) &&
            socket_error_text(sock, sizeof(sock)) != NULL && !(events & BEV_EVENT_EOF)) {
            /* A socket error, not a TLS decision (reset, refused). */
            wan_grpc_h2_log(h, WAN_GRPC_LOG_INFO, "connection with %s failed during TLS: %s",
                            h->peer, sock);
            wan_grpc_h2_close(h, 0, "connection failed during TLS handshake: %s", sock);
            return;
        }
        tls_log_refusal(bufferevent_openssl_get_ssl(bev), errs, nerrs, h->peer, h2_tls_log, h);
        tls_explain(bufferevent_openssl_get_ssl(bev), errs, nerrs, why, sizeof(why));
        wan_grpc_h2_close(h, 0, "refused: %s", why);
        return;
    }
    if (!h->established && (events & BEV_EVENT_ERROR) &&
        (nerrs = tls_errors_from_bev(bev, errs, H2_MAX_TLS_ERRS)) > 0) {
        /* The peer refused us after our side of the handshake had finished. */
        tls_log_refusal(bufferevent_openssl_get_ssl(bev), errs, nerrs, h->peer, h2_tls_log, h);
        tls_explain(bufferevent_openssl_get_ssl(bev), errs, nerrs, why, sizeof(why));
        wan_grpc_h2_close(h, 0, "refused: %s", why);
        return;
    }
    if (events & BEV_EVENT_EOF) {
        wan_grpc_h2_close(h, 0, "peer closed the connection");
    } else if (events & BEV_EVENT_ERROR) {
        nerrs = tls_errors_from_bev(bev, errs, H2_MAX_TLS_ERRS);
        if (nerrs > 0 && ERR_GET_REASON(errs[nerrs - 1]) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            wan_grpc_h2_close(h, 0, "peer closed the connection (without TLS close_notify)");
        } else if (nerrs > 0) {
            char e[160];

            ERR_error_string_n(errs[0], e, sizeof(e));
            wan_grpc_h2_close(h, 0, "TLS error: %s", e);
        } else if (socket_error_text(sock, sizeof(sock)) != NULL) {
            wan_grpc_h2_close(h, 0, "socket error: %s", sock);
        } else {
            wan_grpc_h2_close(h, 0, "connection lost");
        }
    } else if (events & BEV_EVENT_TIMEOUT) {
        wan_grpc_h2_close(h, 0, "timeout");
    }
}

static void h2_ping_cb(evutil_socket_t fd, short what, void *arg)
{
    struct wan_grpc_h2 *h = arg;

    (void)fd;
    (void)what;
    if (!h->up || h->closing) {
        return;
    }
    if (h->rx_bytes == h->rx_at_ping) {
        h->ping_idle++;
    } else {
        h->ping_idle = 0;
    }
    h->rx_at_ping = h->rx_bytes;
    if (h->ping_idle >= 2) {
        wan_grpc_h2_log(h, WAN_GRPC_LOG_WARN, "%s: nothing received for %u ms (keepalive)", h->peer,
                        2 * h->ping_ms);
        wan_grpc_h2_close(h, 0, "keepalive: nothing received for %u ms", 2 * h->ping_ms);
        return;
    }
    if (nghttp2_submit_ping(h->session, NGHTTP2_FLAG_NONE, NULL) == 0) {
        wan_grpc_h2_kick(h);
    }
}

int wan_grpc_h2_init(struct wan_grpc_h2 *h, struct event_base *base, struct bufferevent *bev,
                     uint32_t handshake_timeout_ms, uint32_t ping_ms,
                     const struct wan_grpc_h2_ops *ops, void *owner, wan_grpc_log_fn log,
                     void *log_arg, const char *peer)
{
    memset(h, 0, sizeof(*h));
    h->base = base;
    h->bev = bev;
    h->ops = ops;
    h->owner = owner;
    h->log = log;
    h->log_arg = log_arg;
    h->ping_ms = ping_ms;
    snprintf(h->peer, sizeof(h->peer), "%s", peer ? peer : "?");
    h->defer_ev = event_new(base, -1, 0, h2_deferred_cb, h);
    if (h->defer_ev == NULL) {
        return -ENOMEM;
    }
    if (bev == NULL) {
        h->up = 1;
        h->mem_out = evbuffer_new();
        return h->mem_out ? 0 : -ENOMEM;
    }
    if (ping_ms > 0) {
        h->ping_ev = event_new(base, -1, EV_PERSIST, h2_ping_cb, h);
        if (h->ping_ev == NULL) {
            return -ENOMEM;
        }
    }
    bufferevent_setcb(bev, NULL, NULL, h2_event_cb, h);
    if (handshake_timeout_ms > 0) {
        struct timeval tv = {handshake_timeout_ms / 1000, (handshake_timeout_ms % 1000) * 1000};

        bufferevent_set_timeouts(bev, &tv, &tv);
    }
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    return 0;
}

void wan_grpc_h2_free(struct wan_grpc_h2 *h)
{
    if (h->session != NULL) {
        nghttp2_session_del(h->session);
        h->session = NULL;
    }
    if (h->bev != NULL) {
        bufferevent_free(h->bev);
        h->bev = NULL;
    }
    if (h->mem_out != NULL) {
        evbuffer_free(h->mem_out);
        h->mem_out = NULL;
    }
    if (h->ping_ev != NULL) {
        event_free(h->ping_ev);
        h->ping_ev = NULL;
    }
    if (h->defer_ev != NULL) {
        event_free(h->defer_ev);
        h->defer_ev = NULL;
    }
}

int wan_grpc_h2_feed(struct wan_grpc_h2 *h, const uint8_t *data, size_t len)
{
    ssize_t n;

    if (h->closing || h->session == NULL) {
        return -EPROTO;
    }
    n = nghttp2_session_mem_recv(h->session, data, len);
    if (n < 0) {
        wan_grpc_h2_close(h, 1, "HTTP/2 error: %s", nghttp2_strerror((int)n));
        h2_flush(h);
        return -EPROTO;
    }
    h2_flush(h);
    if (!h->closing && h->ops->flushed != NULL) {
        h->ops->flushed(h->owner);
        if (!h->closing) {
            h2_flush(h);
        }
    }
    return 0;
}
