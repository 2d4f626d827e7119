/*
 * grpc_client — one outgoing WAN link to a peer site's gateway: TCP connect, TLS 1.3
 * with this site's certificate (tls/tls.h; the peer's certificate must name the site
 * we dial, ALPN h2), an nghttp2 client session, and on it the long-lived Ship stream
 * (ShipRequest out, ShipAck in) plus unary Read and Health/Check calls and
 * server-streaming Backfill calls.  A link made with no_ship has no Ship stream: it
 * serves only the calls (a backfill or read-only link).
 *
 * It gives primitives, not policy: it does not reconnect by itself (the caller does,
 * with wan_grpc_backoff_ms() from wan/grpc.h), does not pick batches, sequence numbers
 * or peers, and never includes gateway/ headers.
 *
 * Threads: everything runs on the event_base given to wan_grpc_client_create() (the
 * WAN thread); callbacks come on that thread; nothing locks.  The process must ignore SIGPIPE
 * (OpenSSL writes with write(2)); the gateway does.
 *
 * Back-pressure: wan_grpc_client_ship() packs a batch into the Ship stream's queue,
 * which HTTP/2 drains only as the peer's flow-control windows allow (the server gives
 * window back as its application takes batches).  Above ship_high queued bytes ship()
 * refuses with -ENOBUFS; `writable` fires once the queue is down to ship_low.  The
 * caller limits batches in flight with wan_grpc_client_ship_queued() and its own
 * count of unacked sequence numbers.
 *
 * The other way, a Backfill call's receive window (1 MiB, or one max_message if that is
 * more) is given back to the peer only as the batch callback returns from each batch,
 * so a caller that applies slowly slows the peer instead of buffering here.
 *
 * Life of a link (client side):
 *
 *   connect() ──TCP──> TLS 1.3 (SNI = peer_site) ──refused/failed──> down(UNAVAILABLE, why)
 *                          │ ok: certificate names peer_site, ALPN h2
 *                          v
 *                 SETTINGS + HEADERS :path=.../Ship ──> up(peer_site)
 *                          │     (no_ship: SETTINGS only, then up)
 *     ship(req) ──> queue ──DATA (as windows allow)──> peer ──> ShipAck ──> ship_ack(ack)
 *       -ENOBUFS above ship_high ... queue <= ship_low ──> writable()
 *     read()/health() ──> own streams ──> done(status, ...) (or DEADLINE_EXCEEDED)
 *     backfill(req) ──> own stream ──> batch(b) per message, window given back after each
 *                      ──> done(grpc-status of the trailers) (cancel(): CANCELLED)
 *                          │
 *   ship_end(): END_STREAM ──> peer's trailers ──┐
 *   peer ends Ship with a status / RST ──────────┼──> connection closed ──> down(status, why)
 *   socket error, keepalive timeout, close() ────┘    (pending calls: UNAVAILABLE first)
 */
#ifndef GEOGATE_WAN_GRPC_CLIENT_H
#define GEOGATE_WAN_GRPC_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "proto/geogate_wan.pb-c.h"
#include "wan/grpc.h"

struct tls_ctx;
struct wan_grpc_client;

struct wan_grpc_client_callbacks {
    /* The link is up and the Ship stream open: ship() works now. */
    void (*up)(void *arg, const char *peer_site);
    /* The link is down (or never came up): refused by TLS, connect failed, peer closed,
     * keepalive timeout, the peer ended the Ship stream, or close() was called.
     * grpc_status: the Ship stream's status when the peer ended it, else
     * WAN_GRPC_UNAVAILABLE (WAN_GRPC_OK after a clean ship_end()).  Anything queued and
     * not acked must be shipped again on the next link.  Called once per connect(). */
    void (*down)(void *arg, int grpc_status, const char *reason);
    /* One ShipAck (borrowed: valid during the call). */
    void (*ship_ack)(void *arg, const Geogate__Wan__V1__ShipAck *ack);
    /* The Ship queue went down to ship_low after ship() had refused, or after it had
     * reached ship_high.  May be NULL. */
    void (*writable)(void *arg);
};

struct wan_grpc_client_config {
    struct tls_ctx *tls;         /* client context (tls_ctx_create(..., is_server=0, peer
                                    sites)); borrowed, must outlive the client */
    const char *peer_site;       /* the site we dial: SNI, :authority, and the name its
                                    certificate must carry; copied */
    const char *address;         /* "127.0.0.1:7312" or "[::1]:7312"; numeric; copied */
    uint32_t max_message;        /* largest message either way; 0 = 4 MiB */
    uint32_t connect_timeout_ms; /* TCP + TLS handshake; 0 = 10 s */
    uint32_t ping_ms;            /* keepalive PING interval; 0 = 10 s */
    uint32_t ship_high;          /* Ship queue bytes where ship() refuses; 0 = 8 MiB */
    uint32_t ship_low;           /* where `writable` fires; 0 = ship_high / 4 */
    int no_ship;                 /* 1: do not open the Ship stream; `up` fires once TLS +
                                    HTTP/2 are ready, and the link serves only
                                    Read/Health/Backfill calls (a backfill or read-only
                                    link).  `down` then comes only when the connection
                                    goes (UNAVAILABLE) */
    wan_grpc_log_fn log;         /* may be NULL */
    void *log_arg;
};

/* Completion of a Read call: exactly once per successful wan_grpc_client_read().
 * resp is the callee's (free with geogate__wan__v1__read_response__free_unpacked(resp,
 * NULL)) and non-NULL only when grpc_status is WAN_GRPC_OK.  message may be "". */
typedef void (*wan_grpc_read_done_fn)(void *arg, int grpc_status, const char *message,
                                      Geogate__Wan__V1__ReadResponse *resp);

/* Completion of a Health/Check call: serving_status is a
 * GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__* value when grpc_status is
 * WAN_GRPC_OK, else 0 (UNKNOWN). */
typedef void (*wan_grpc_health_done_fn)(void *arg, int grpc_status, const char *message,
                                        int serving_status);

/* One message of a Backfill call.  b is borrowed (valid during the call).  The call's
 * flow-control window is given back only after this returns, so a callback that blocks
 * (applying the batch) slows the peer down instead of buffering.  It may call
 * wan_grpc_client_backfill_cancel() (no further batch follows) or
 * wan_grpc_client_close(). */
typedef void (*wan_grpc_backfill_batch_fn)(void *arg, const Geogate__Wan__V1__BackfillBatch *b);

/* The call ended: grpc_status from the trailers (WAN_GRPC_OK: every item was sent), or
 * UNAVAILABLE when the link dropped, CANCELLED after wan_grpc_client_backfill_cancel()
 * (or wan_grpc_client_destroy()), INTERNAL / INVALID_ARGUMENT for a malformed message.
 * message may be "".  Exactly once per successful wan_grpc_client_backfill(). */
typedef void (*wan_grpc_backfill_done_fn)(void *arg, int grpc_status, const char *message);

/* One Backfill call in flight; valid until its done callback has run. */
struct wan_grpc_client_backfill;

/* Make a client (not connected).  cfg and cb are copied; cb_arg goes to every
 * callback.  Returns 0 and sets *out, or -EINVAL (NULL argument, no tls, peer_site or
 * address, an address that is not numeric host:port, max_message over
 * WAN_GRPC_MAX_MESSAGE_LIMIT) or -ENOMEM. */
int wan_grpc_client_create(struct wan_grpc_client **out, struct event_base *base,
                           const struct wan_grpc_client_config *cfg,
                           const struct wan_grpc_client_callbacks *cb, void *cb_arg);

/* Close the link without calling `down`, complete pending calls with CANCELLED (their
 * callbacks run inside), and free the client.  Not from inside one of its own
 * callbacks.  NULL is a no-op. */
void wan_grpc_client_destroy(struct wan_grpc_client *c);

/* Start connecting.  `up` or `down` follows, always later from the event loop (never
 * inside this call).  Returns 0, -EALREADY (connecting or up), or -errno of socket(). */
int wan_grpc_client_connect(struct wan_grpc_client *c);

/* Drop the link; `down` follows from the event loop with reason.  Safe inside
 * callbacks.  Returns 0, or -ENOTCONN when there is no link. */
int wan_grpc_client_close(struct wan_grpc_client *c, const char *reason);

/* 1 between `up` and `down`. */
int wan_grpc_client_is_up(const struct wan_grpc_client *c);

/* Queue one batch on the Ship stream (packed now; req is borrowed).  Returns 0,
 * -ENOTCONN (not up, or the Ship stream is ending), -ENOBUFS (ship_high bytes already
 * queued: wait for `writable`), -EMSGSIZE (packs to more than max_message) or -ENOMEM. */
int wan_grpc_client_ship(struct wan_grpc_client *c, const Geogate__Wan__V1__ShipRequest *req);

/* As wan_grpc_client_ship() for a ShipRequest already serialized (msg, len bytes): the
 * shipper builds it from the spool's packed Mutations without decoding them. */
int wan_grpc_client_ship_raw(struct wan_grpc_client *c, const uint8_t *msg, size_t len);

/* Bytes queued on the Ship stream and not yet handed to HTTP/2 (waiting for the
 * peer's flow-control window or for the socket).  0 when not up. */
size_t wan_grpc_client_ship_queued(const struct wan_grpc_client *c);

/* What HTTP/2 flow control lets us send on the Ship stream right now (the smaller of
 * the stream's and the connection's window), or 0 when not up. */
size_t wan_grpc_client_ship_window(const struct wan_grpc_client *c);

/* Half-close the Ship stream once the queue is sent; the peer answers with trailers
 * and the link goes down with WAN_GRPC_OK.  Returns 0 or -ENOTCONN. */
int wan_grpc_client_ship_end(struct wan_grpc_client *c);

/* Unary Read.  req is borrowed (packed now).  timeout_ms 0 = no deadline.  Returns 0
 * (done follows exactly once: the reply, DEADLINE_EXCEEDED, or UNAVAILABLE if the
 * link drops), -ENOTCONN, -EMSGSIZE or -ENOMEM (done is not called). */
int wan_grpc_client_read(struct wan_grpc_client *c, const Geogate__Wan__V1__ReadRequest *req,
                         uint32_t timeout_ms, wan_grpc_read_done_fn done, void *done_arg);

/* Health/Check of `service` ("" or NULL: the whole server); as wan_grpc_client_read. */
int wan_grpc_client_health(struct wan_grpc_client *c, const char *service, uint32_t timeout_ms,
                           wan_grpc_health_done_fn done, void *done_arg);

/* Start a Backfill call (req borrowed, packed now); it has no deadline.  batch runs for
 * each BackfillBatch in order, then done once.  Returns 0 and sets *out (valid until
 * done runs), -EINVAL (a NULL argument), -ENOTCONN, -EMSGSIZE or -ENOMEM (done is not
 * called). */
int wan_grpc_client_backfill(struct wan_grpc_client *c,
                             const Geogate__Wan__V1__BackfillRequest *req,
                             wan_grpc_backfill_batch_fn batch, wan_grpc_backfill_done_fn done,
                             void *arg, struct wan_grpc_client_backfill **out);

/* Reset the call (RST_STREAM CANCEL); no batch is delivered after this, and done runs
 * later from the event loop with CANCELLED.  Safe inside the call's batch callback; a
 * second cancel is a no-op.  Returns 0 or -ENOTCONN (the link is already going down:
 * done follows with UNAVAILABLE). */
int wan_grpc_client_backfill_cancel(struct wan_grpc_client_backfill *call);

#endif
