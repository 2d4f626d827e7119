/*
 * grpc_server — the WAN listener: gRPC over HTTP/2 (nghttp2) over mutually
 * authenticated TLS 1.3 (tls/tls.h) on libevent.  It accepts peer gateways, checks
 * their certificates, and serves four methods:
 *
 *   /geogate.wan.v1.Replication/Ship      bidirectional stream: ShipRequest in, ShipAck out
 *   /geogate.wan.v1.Replication/Read      unary, answered asynchronously
 *   /geogate.wan.v1.Replication/Backfill  server stream: one BackfillRequest in, as many
 *                                         BackfillBatch out as the application sends
 *   /grpc.health.v1.Health/Check          unary, answered at once
 *
 * anything else gets grpc-status 12 UNIMPLEMENTED.  Bad input never reaches the
 * application: a malformed protobuf or a compressed message ends the stream with
 * INVALID_ARGUMENT, a message over max_message with RESOURCE_EXHAUSTED, a ShipRequest
 * whose origin_site is not the site named by the peer's certificate with
 * PERMISSION_DENIED; each with one log line.
 *
 * It does not apply anything, keep sequence numbers or decide acks: that is the
 * application's, through the callbacks below.  It never includes gateway/ headers.
 *
 * Threads: everything runs on the one event_base given to wan_grpc_server_create()
 * (the gateway's WAN thread).  Every callback and every function here is called on
 * that thread; nothing locks.  The process must ignore SIGPIPE (OpenSSL writes
 * with write(2)); the gateway does.
 *
 * Flow control is the back-pressure: a Ship stream's HTTP/2 window is given back to
 * the peer only as the application takes batches.  A stream window holds one whole
 * message of max_message bytes (so a big message never deadlocks), the connection
 * window bounds what one peer can make us buffer across its streams.
 *
 * Life of a Ship stream (server side):
 *
 *   peer HEADERS :path=.../Ship ──> ship_open(st, peer_site) ── refuse ──> trailers, closed
 *        │                               │ accept: response HEADERS 200 sent
 *        v                               v
 *   DATA ──deframe──> ShipRequest ──origin_site != cert's site──> PERMISSION_DENIED ─┐
 *        │   bad prefix/protobuf ──> INVALID_ARGUMENT / RESOURCE_EXHAUSTED ──────────┤
 *        v                                                                           │
 *   ship_batch(st, req) ── BUSY: held, window not given back ── ship_resume(st) ──┐  │
 *        │ TAKEN: window given back; app acks later:                             │  │
 *        │        wan_grpc_server_ship_ack(st, ack) ──> DATA (ShipAck) ──> peer  │  │
 *        v                                                                        │  │
 *   peer END_STREAM ──> ship_end(st) ──> app: wan_grpc_server_ship_finish(st, OK) │  │
 *        │                                     (also any time, with any status)   │  │
 *        v                                                                        v  v
 *   trailers grpc-status sent (after queued acks) ──> RST_STREAM(NO_ERROR) if the peer
 *   was still sending ──> stream closed ──> ship_closed(st, status)  [st is gone]
 *   (a peer's RST_STREAM or a lost connection also ends in ship_closed)
 *
 * Life of a Backfill call (server side).  The caller's flow-control window is what paces
 * it: the call's queue drains into DATA frames only as fast as the caller gives window
 * back (after applying each batch), so a slow caller stops the queue, and the queue's
 * high-water mark stops the application.
 *
 *   peer HEADERS :path=.../Backfill, one BackfillRequest, END_STREAM
 *        │ malformed / missing / two messages ──> INVALID_ARGUMENT (the app sees nothing)
 *        v
 *   backfill_open(call, peer_site, req) ── refuse ──> trailers-only status, nothing more
 *        │ accept: response HEADERS 200 sent
 *        v
 *   wan_grpc_server_backfill_send(call, batch) ──> queue ──DATA, as the caller's window
 *        │ -ENOBUFS at backfill_high ... queue <= high/4 ──> backfill_writable(call)
 *        v
 *   wan_grpc_server_backfill_finish(call, status) ──> trailers after the queue
 *        v
 *   stream closed ──> backfill_closed(call, status)  [call is gone]
 *   (the caller's RST_STREAM: CANCELLED; a lost connection or server destroy: UNAVAILABLE)
 */
#ifndef GEOGATE_WAN_GRPC_SERVER_H
#define GEOGATE_WAN_GRPC_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "proto/geogate_wan.pb-c.h"
#include "wan/grpc.h"

struct tls_ctx;
struct wan_grpc_server;
struct wan_grpc_ship_stream;   /* one Ship stream; valid until its ship_closed callback */
struct wan_grpc_read_call;     /* one Read call; valid until answered */
struct wan_grpc_backfill_call; /* one Backfill call; valid until its backfill_closed callback */
struct wan_grpc_server_conn;   /* memory-mode connection, for tests and fuzzing */

/* What ship_batch returns. */
enum wan_grpc_ship_take {
    WAN_GRPC_SHIP_TAKEN = 0, /* the application owns req now; keep them coming */
    WAN_GRPC_SHIP_BUSY,      /* not taken: hold it, stop reading the stream until
                                wan_grpc_server_ship_resume(), then offer it again */
    WAN_GRPC_SHIP_TAKE_MAX
};

struct wan_grpc_server_callbacks {
    /* A peer opened a Ship stream.  Return 0 to accept it, setting *stream_arg (passed to
     * the other Ship callbacks), or a gRPC status (> 0, e.g. WAN_GRPC_UNAVAILABLE while
     * draining) to refuse it; ship_closed is not called for a refused stream.  NULL:
     * every Ship stream is refused with UNIMPLEMENTED. */
    int (*ship_open)(void *arg, struct wan_grpc_ship_stream *st, const char *peer_site,
                     void **stream_arg);
    /* One decoded batch whose origin_site is the peer's own site.  Return
     * WAN_GRPC_SHIP_TAKEN (req is the application's: free it with
     * geogate__wan__v1__ship_request__free_unpacked(req, NULL)) or WAN_GRPC_SHIP_BUSY
     * (req stays the server's).  Batches of one stream arrive in order. */
    int (*ship_batch)(void *arg, void *stream_arg, struct wan_grpc_ship_stream *st,
                      Geogate__Wan__V1__ShipRequest *req);
    /* The peer sent END_STREAM: no more batches.  Finish the stream with
     * wan_grpc_server_ship_finish() once your acks are queued.  NULL: finished with OK
     * at once. */
    void (*ship_end)(void *arg, void *stream_arg, struct wan_grpc_ship_stream *st);
    /* The stream is gone (finished, refused for bad input, reset by the peer, or the
     * connection was lost).  grpc_status: what we sent, or CANCELLED/UNAVAILABLE;
     * why: text for logs.  st must not be used after this returns. */
    void (*ship_closed)(void *arg, void *stream_arg, struct wan_grpc_ship_stream *st,
                        int grpc_status, const char *why);
    /* A Read call.  req is the application's (free with
     * geogate__wan__v1__read_request__free_unpacked(req, NULL)).  Answer later, exactly
     * once, with wan_grpc_server_read_reply() or wan_grpc_server_read_fail().  NULL:
     * Read is UNIMPLEMENTED. */
    void (*read)(void *arg, struct wan_grpc_read_call *call, const char *peer_site,
                 Geogate__Wan__V1__ReadRequest *req);
    /* Health/Check for `service` ("" = the whole server).  Return a
     * GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__* value; SERVICE_UNKNOWN
     * answers grpc-status NOT_FOUND as the health protocol says.  NULL: SERVING. */
    int (*health)(void *arg, const char *service);
    /* A Backfill call.  req is the application's (free with
     * geogate__wan__v1__backfill_request__free_unpacked(req, NULL)) in every case.  Return 0 to
     * accept (response HEADERS are sent; set *call_arg, passed to the other backfill
     * callbacks), or a gRPC status > 0 to refuse (trailers-only answer with that status;
     * backfill_closed is not called).  wan_grpc_server_backfill_send() and _finish() may
     * already be called from in here when accepting.  NULL: Backfill is UNIMPLEMENTED. */
    int (*backfill_open)(void *arg, struct wan_grpc_backfill_call *call, const char *peer_site,
                         Geogate__Wan__V1__BackfillRequest *req, void **call_arg);
    /* The call's send queue went down to the low-water mark after backfill_send() refused
     * with -ENOBUFS (or after the queue had reached the high-water mark).  May be NULL. */
    void (*backfill_writable)(void *arg, void *call_arg, struct wan_grpc_backfill_call *call);
    /* The call is gone: finished (after the trailers were sent), reset by the caller, or the
     * connection was lost.  grpc_status: what we sent, or CANCELLED (reset by the caller,
     * also while our trailers still waited behind queued batches) / UNAVAILABLE (connection
     * lost, server destroyed); why: text for logs.  Exactly once per accepted call.  call
     * must not be used after this returns (send and finish return -EPIPE inside it). */
    void (*backfill_closed)(void *arg, void *call_arg, struct wan_grpc_backfill_call *call,
                            int grpc_status, const char *why);
};

struct wan_grpc_server_config {
    struct tls_ctx *tls;           /* server context (tls_ctx_create(..., is_server=1, peer
                                      sites)); borrowed, must outlive the server.  NULL:
                                      memory-mode connections only (tests, fuzzing) */
    uint32_t max_message;          /* largest message either way; 0 = 4 MiB */
    uint32_t conn_window;          /* per-connection receive window; 0 = 16 MiB; raised to
                                      at least one stream window */
    uint32_t max_streams;          /* concurrent streams per connection; 0 = 32 */
    uint32_t handshake_timeout_ms; /* 0 = 10 s */
    uint32_t ping_ms;              /* keepalive PING interval; 0 = 10 s */
    uint32_t ack_queue_high;       /* a Ship stream stops reading while this many ack bytes
                                      wait for the peer; 0 = 1 MiB */
    uint32_t backfill_high;        /* per-call queue bytes where backfill_send refuses; 0 =
                                      4 MiB (at least max_message); low water = high / 4 */
    wan_grpc_log_fn log;           /* may be NULL */
    void *log_arg;
};

/* Make a server (not yet listening).  cfg and cb are copied; cb_arg is passed to every
 * callback.  Returns 0 and sets *out, or -EINVAL (NULL argument, max_message over
 * WAN_GRPC_MAX_MESSAGE_LIMIT) or -ENOMEM. */
int wan_grpc_server_create(struct wan_grpc_server **out, struct event_base *base,
                           const struct wan_grpc_server_config *cfg,
                           const struct wan_grpc_server_callbacks *cb, void *cb_arg);

/* Listen on addr ("127.0.0.1:7311", "[::1]:7311"; port 0 picks a free one).  May be
 * called more than once for several addresses (up to 8).  *bound_port (may be NULL)
 * gets the port.  Returns 0, -EINVAL (bad address, no tls in the config, too many
 * listeners) or -errno of bind/listen (logged). */
int wan_grpc_server_listen(struct wan_grpc_server *srv, const char *addr, uint16_t *bound_port);

/* Stop accepting; open connections go on.  Returns 0. */
int wan_grpc_server_stop_listening(struct wan_grpc_server *srv);

/* Close every connection (ship_closed runs for open Ship streams and backfill_closed for
 * open Backfill calls, with UNAVAILABLE; unanswered Read calls are freed: their handles
 * die with the server) and free the server.  Not from inside one of its own callbacks.
 * NULL is a no-op. */
void wan_grpc_server_destroy(struct wan_grpc_server *srv);

/* Number of open connections (those past the TLS handshake). */
size_t wan_grpc_server_connections(const struct wan_grpc_server *srv);

/* Queue one ShipAck on a Ship stream (after acks queued before it).  Borrows ack.
 * Returns 0, -EPIPE (the stream is finishing: the ack is dropped), -EMSGSIZE (it packs
 * to more than max_message, e.g. too many `newer` items: not sent; send fewer) or
 * -ENOMEM. */
int wan_grpc_server_ship_ack(struct wan_grpc_ship_stream *st, const Geogate__Wan__V1__ShipAck *ack);

/* After ship_batch answered BUSY: offer the held batch again and go on reading.  May
 * be called from inside ship_batch's caller chain (it takes effect after it returns).
 * Returns 0, or -EPIPE when the stream is finishing. */
int wan_grpc_server_ship_resume(struct wan_grpc_ship_stream *st);

/* End the stream: after the acks already queued, send trailers with grpc_status and
 * message (may be NULL).  ship_closed follows once the stream is closed.  Returns 0,
 * or -EPIPE if it is already finishing. */
int wan_grpc_server_ship_finish(struct wan_grpc_ship_stream *st, int grpc_status,
                                const char *message);

/* The site named by the peer's certificate. */
const char *wan_grpc_server_ship_peer(const struct wan_grpc_ship_stream *st);

/* Bytes of acks queued on the stream and not yet handed to HTTP/2. */
size_t wan_grpc_server_ship_queued(const struct wan_grpc_ship_stream *st);

/* Answer a Read call with resp (borrowed) and free the call.  Returns 0, -ENOTCONN (the
 * caller went away; nothing sent), -EMSGSIZE (resp packs to more than max_message:
 * RESOURCE_EXHAUSTED was sent instead) or -ENOMEM (INTERNAL was sent if possible).
 * The call is freed in every case. */
int wan_grpc_server_read_reply(struct wan_grpc_read_call *call,
                               const Geogate__Wan__V1__ReadResponse *resp);

/* Fail a Read call with grpc_status (> 0) and message (may be NULL); frees the call.
 * Returns 0 or -ENOTCONN (the caller went away). */
int wan_grpc_server_read_fail(struct wan_grpc_read_call *call, int grpc_status,
                              const char *message);

/* Queue one BackfillBatch (packed now; b is borrowed).  Returns 0, -ENOBUFS (the call's
 * queue holds backfill_high bytes or more: nothing queued, wait for backfill_writable),
 * -EPIPE (the call is finishing or gone), -EMSGSIZE (packs to more than max_message) or
 * -ENOMEM. */
int wan_grpc_server_backfill_send(struct wan_grpc_backfill_call *call,
                                  const Geogate__Wan__V1__BackfillBatch *b);

/* After the batches already queued, send trailers with grpc_status and message (may be
 * NULL).  backfill_closed follows once the stream is closed.  Returns 0 or -EPIPE. */
int wan_grpc_server_backfill_finish(struct wan_grpc_backfill_call *call, int grpc_status,
                                    const char *message);

/* Bytes queued on the call and not yet handed to HTTP/2. */
size_t wan_grpc_server_backfill_queued(const struct wan_grpc_backfill_call *call);

/* Memory mode, for unit tests and fuzzing: a connection without socket or TLS, as if
 * the handshake had verified peer_site.  Feed it the client's bytes; what the server
 * answers collects in wan_grpc_server_mem_output() (drain it yourself).  Callbacks
 * run as for a real connection.  Returns 0 or -ENOMEM / -EINVAL. */
int wan_grpc_server_mem_open(struct wan_grpc_server *srv, const char *peer_site,
                             struct wan_grpc_server_conn **out);

/* Returns 0, or -EPROTO once the connection has failed (then only close it). */
int wan_grpc_server_mem_feed(struct wan_grpc_server_conn *conn, const uint8_t *data, size_t len);

/* What the server wrote so far (borrowed; drain what you read). */
struct evbuffer *wan_grpc_server_mem_output(struct wan_grpc_server_conn *conn);

/* 1 once the connection has closed itself (GOAWAY sent, protocol error). */
int wan_grpc_server_mem_closed(const struct wan_grpc_server_conn *conn);

/* Close and free a memory-mode connection (ship_closed / backfill_closed run for open
 * streams and calls). */
void wan_grpc_server_mem_close(struct wan_grpc_server_conn *conn);

#endif
