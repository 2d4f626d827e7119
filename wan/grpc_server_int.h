/*
 * grpc_server_int — internal to wan/grpc_server.c (connections, nghttp2 callbacks,
 * the listener) and wan/grpc_server_stream.c (one stream's gRPC: routing, deframing,
 * refusing bad input, responses and trailers): the types they share and the stream
 * functions the connection side calls.  Nothing else includes it.  WAN thread only.
 */
#ifndef GEOGATE_WAN_GRPC_SERVER_INT_H
#define GEOGATE_WAN_GRPC_SERVER_INT_H

#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/listener.h>
#include <nghttp2/nghttp2.h>

#include "proto/geogate_wan.pb-c.h"
#include "tls/tls.h"
#include "wan/grpc_frame.h"
#include "wan/grpc_h2.h"
#include "wan/grpc_server.h"

#define WAN_GRPC_SERVER_MAX_LISTENERS 8

/* Which method a stream is for (from :path). */
enum wan_grpc_sstream_kind {
    WAN_GRPC_SK_UNKNOWN = 0,
    WAN_GRPC_SK_SHIP,
    WAN_GRPC_SK_READ,
    WAN_GRPC_SK_HEALTH,
    WAN_GRPC_SK_BACKFILL,
    WAN_GRPC_SK_MAX
};

struct wan_grpc_server {
    struct event_base *base;
    struct wan_grpc_server_config cfg;
    struct wan_grpc_server_callbacks cb;
    void *cb_arg;
    struct evconnlistener *listeners[WAN_GRPC_SERVER_MAX_LISTENERS];
    size_t nlisteners;
    nghttp2_session_callbacks *h2cb;
    nghttp2_option *h2opt;
    int32_t stream_window;
    uint32_t backfill_low; /* a Backfill queue this small is writable again (high / 4) */
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

/* The application's handle on a Backfill call: embedded in its stream, so it lives
 * exactly as long as the stream does. */
struct wan_grpc_backfill_call {
    struct wan_grpc_ship_stream *st;
};

/* One server-side stream of any method (the public name is the Ship one). */
struct wan_grpc_ship_stream {
    struct wan_grpc_server_conn *conn;
    struct wan_grpc_ship_stream *prev, *next;
    int32_t id;
    enum wan_grpc_sstream_kind kind;
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
    int trailers_sent;                   /* ...and handed to the connection (END_STREAM out) */
    int status;                          /* grpc-status of the trailers */
    char message[200];                   /* grpc-message of the trailers (unescaped) */
    int app_open;                        /* ship_open / backfill_open accepted: the
                                            matching closed callback is owed */
    int opening;                         /* inside backfill_open: no response submitted yet */
    int gone;                            /* the closed callback is running: no more sends */
    int want_writable;                   /* Backfill: the queue reached backfill_high (or send
                                            refused): tell backfill_writable at the low mark */
    void *app_arg;
    struct wan_grpc_read_call *call;  /* Read: the call handed to the application */
    struct wan_grpc_backfill_call bf; /* Backfill: the application's handle (bf.st = this) */
};

struct wan_grpc_read_call {
    struct wan_grpc_server *srv;
    struct wan_grpc_ship_stream *st; /* NULL once the stream is gone */
    struct wan_grpc_read_call *prev, *next;
};

/* printf-style log line through the server's sink, prefixed "wan: ". */
void wan_grpc_server_log(const struct wan_grpc_server *srv, enum wan_grpc_log_level level,
                         const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A stream's life, as the connection side drives it (wan/grpc_server_stream.c). */

/* New stream state for a request HEADERS frame, linked into conn.  NULL: no memory. */
struct wan_grpc_ship_stream *wan_grpc_sstream_new(struct wan_grpc_server_conn *conn, int32_t id);

/* One request header (:path, :method, content-type, grpc-encoding are looked at). */
void wan_grpc_sstream_header(struct wan_grpc_ship_stream *st, const uint8_t *name, size_t namelen,
                             const uint8_t *value, size_t valuelen);

/* All request headers are in: answer what cannot be served, open a Ship stream. */
void wan_grpc_sstream_route(struct wan_grpc_ship_stream *st);

/* DATA for the stream (st->unconsumed already counts it). */
void wan_grpc_sstream_data(struct wan_grpc_ship_stream *st, const uint8_t *data, size_t len);

/* The peer sent END_STREAM. */
void wan_grpc_sstream_remote_end(struct wan_grpc_ship_stream *st);

/* At a safe point (outside nghttp2): take up a stream that asked to (resume_pending): a
 * paused Ship stream reads again, a Backfill call's application hears backfill_writable. */
void wan_grpc_sstream_resume(struct wan_grpc_ship_stream *st);

/* Give n received bytes back to the peer's windows. */
void wan_grpc_sstream_consume(struct wan_grpc_ship_stream *st, size_t n);

/* Unlink and free a stream, telling the application (ship_closed, backfill_closed) if it
 * had it. */
void wan_grpc_sstream_free(struct wan_grpc_ship_stream *st, int status, const char *why);

#endif
