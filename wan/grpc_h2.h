/*
 * grpc_h2 — internal to wan/grpc_server.c and wan/grpc_client.c: one HTTP/2 connection
 * over a TLS bufferevent (or over memory, for tests and fuzzing).  It owns the
 * bufferevent and the nghttp2 session, moves bytes between them, waits for and checks
 * the TLS handshake (tls/tls.h), sends keepalive PINGs, and closes the connection only
 * from its own deferred event, never inside a callback chain.  The session's
 * callbacks (streams, headers, gRPC) belong to the owner.
 *
 * It does not know gRPC, streams or sites.  Runs on the event_base it was given (the
 * WAN thread); no locks.
 *
 *   socket ─> bufferevent_openssl ─read_cb─> nghttp2_session_mem_recv ─> owner callbacks
 *                     ^                                                      │ submit
 *                     └── evbuffer_add <─ nghttp2_session_mem_send <─ defer event ("kick")
 *   close requested anywhere ─> closing=1, kick ─> defer event: flush what it can, then
 *   (once the output is out, or at once) ops->closed(owner) frees the owner and this.
 */
#ifndef GEOGATE_WAN_GRPC_H2_H
#define GEOGATE_WAN_GRPC_H2_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>

#include "wan/grpc.h"

/* What the owner of a connection is told. */
struct wan_grpc_h2_ops {
    /* The TLS handshake finished and tls_check_peer() passed.  Create h->session (with
     * the owner as user_data) and submit SETTINGS.  Return 0, or a negative value after
     * writing a reason with wan_grpc_h2_close() to refuse. */
    int (*ready)(void *owner, SSL *ssl);
    /* After every flush pass, outside nghttp2: a safe point to tell the application
     * things noticed inside nghttp2 callbacks.  May be NULL. */
    void (*flushed)(void *owner);
    /* The connection is finished (called once, from the deferred event).  The owner
     * frees itself here and calls wan_grpc_h2_free().  was_up: ready() had succeeded. */
    void (*closed)(void *owner, int was_up, const char *reason);
};

struct wan_grpc_h2 {
    struct event_base *base;
    struct bufferevent *bev;  /* TLS; NULL in memory mode */
    struct evbuffer *mem_out; /* memory mode: what the session wrote */
    nghttp2_session *session; /* made by ops->ready (or by the owner in memory mode) */
    struct event *defer_ev;   /* flush and close point */
    struct event *ping_ev;    /* keepalive; NULL when disabled */
    const struct wan_grpc_h2_ops *ops;
    void *owner;
    wan_grpc_log_fn log;
    void *log_arg;
    uint32_t ping_ms;
    uint64_t rx_bytes; /* total received, for keepalive */
    uint64_t rx_at_ping;
    int ping_idle;    /* keepalive ticks without any byte received */
    int up;           /* ready() succeeded */
    int established;  /* the owner saw the peer accept us (a TLS 1.3 client's handshake
                         ends before the server has checked its certificate): TLS errors
                         before that are refusals and logged as such */
    int closing;      /* close requested; reason holds why */
    int drain;        /* flush the output before closing */
    int closed_sent;  /* ops->closed has been called */
    char peer[320];   /* "address" or "address (site)", for log lines */
    char reason[256]; /* why it closed */
};

/* Set up h around bev (from tls_bev_accept / tls_bev_connect; h takes ownership) and
 * arm the handshake timeout.  bev NULL: memory mode (the owner makes the session
 * itself and feeds bytes with wan_grpc_h2_feed).  Returns 0 or -ENOMEM (h needs
 * wan_grpc_h2_free() either way; bev is freed by it). */
int wan_grpc_h2_init(struct wan_grpc_h2 *h, struct event_base *base, struct bufferevent *bev,
                     uint32_t handshake_timeout_ms, uint32_t ping_ms,
                     const struct wan_grpc_h2_ops *ops, void *owner, wan_grpc_log_fn log,
                     void *log_arg, const char *peer);

/* Free everything h holds (session, bufferevent, events); h itself is the owner's. */
void wan_grpc_h2_free(struct wan_grpc_h2 *h);

/* Schedule a flush pass (after submitting frames from outside nghttp2's callbacks). */
void wan_grpc_h2_kick(struct wan_grpc_h2 *h);

/* Ask for the connection to close.  drain: send what nghttp2 still has queued (e.g.
 * a GOAWAY) first.  The first reason sticks.  Safe anywhere, including inside nghttp2
 * callbacks: ops->closed comes later from the deferred event. */
void wan_grpc_h2_close(struct wan_grpc_h2 *h, int drain, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Memory mode: run bytes through the session, then flush into h->mem_out.  Returns 0,
 * or -EPROTO when the session failed (h is then closing). */
int wan_grpc_h2_feed(struct wan_grpc_h2 *h, const uint8_t *data, size_t len);

/* printf-style logging through h's sink, prefixed "wan: ". */
void wan_grpc_h2_log(const struct wan_grpc_h2 *h, enum wan_grpc_log_level level, const char *fmt,
                     ...) __attribute__((format(printf, 3, 4)));
void wan_grpc_logv(wan_grpc_log_fn log, void *arg, enum wan_grpc_log_level level, const char *fmt,
                   va_list ap);
void wan_grpc_logf(wan_grpc_log_fn log, void *arg, enum wan_grpc_log_level level, const char *fmt,
                   ...) __attribute__((format(printf, 4, 5)));

/* Header helpers shared by both ends. */
#define WAN_GRPC_NV(name, value)                                                                   \
    {                                                                                              \
        (uint8_t *)(name), (uint8_t *)(value), sizeof(name) - 1, sizeof(value) - 1,                \
            NGHTTP2_NV_FLAG_NONE                                                                   \
    }
nghttp2_nv wan_grpc_nv(const char *name, const char *value);

/* Parse a grpc-status value ("0".."16", anything else UNKNOWN). */
int wan_grpc_parse_status(const uint8_t *value, size_t len);

/* Map an HTTP :status without grpc-status to a gRPC status (PROTOCOL-HTTP2.md). */
int wan_grpc_status_from_http(int http_status);

/* Map a RST_STREAM error code to a gRPC status. */
int wan_grpc_status_from_h2_error(uint32_t error_code);

/* "127.0.0.1:7311" for a sockaddr (NUL-terminated, truncated to outlen). */
void wan_grpc_sockaddr_text(const struct sockaddr *sa, char *out, size_t outlen);

#endif
