/*
 * tls — OpenSSL contexts for the WAN links between sites: TLS 1.3 only, ALPN "h2",
 * mutual certificates checked against one CA, and the peer's site identity (its
 * certificate's SAN DNS names, or its CN when it has none) checked against the
 * configured peer sites.  It also turns a refused handshake into one stable log-line
 * reason, and wraps sockets in bufferevent_openssl objects.
 *
 * It does not speak HTTP/2 or gRPC, read the config, pick addresses or connect, and
 * never writes logs by itself: the caller passes a log callback.  Depends only on
 * OpenSSL and libevent.
 *
 * Threads: a tls_ctx is shared by every thread; tls_ctx_reload() may run on any
 * thread while others create connections (new connections get the new certificates,
 * open ones keep the old).  One SSL (and its bufferevent) belongs to one thread.
 * The process must ignore SIGPIPE (OpenSSL writes to sockets with plain write()), and
 * the caller sets handshake timeouts (bufferevent_set_timeouts()): a peer that sends
 * nothing stalls a handshake for ever.
 *
 *   server (accepts)                              client (dials peer_site)
 *   tls_bev_accept()                              tls_bev_connect(peer_site)
 *     ClientHello: offers 1.3? offers ALPN?  <---   TLS 1.3 only, ALPN h2, SNI
 *     ALPN: select h2 or refuse                     certificate of this site
 *     verify client cert: CA, dates, name    --->   verify server cert: CA, dates,
 *       in allowed_names                              name == peer_site (or allowed)
 *   BEV_EVENT_CONNECTED: tls_check_peer()         BEV_EVENT_CONNECTED: tls_check_peer()
 *     then tls_peer_site() -> "eu-west"             (checks the ALPN the server chose)
 *   BEV_EVENT_ERROR: tls_errors_from_bev() + tls_log_refusal() -> one line, one reason
 */
#ifndef GEOGATE_TLS_H
#define GEOGATE_TLS_H

#include <stddef.h>

#include <event2/bufferevent.h>
#include <event2/util.h>
#include <openssl/ssl.h>

/* Error codes; functions return 0 or the negated value (-TLS_ERR_FILE). */
enum tls_err {
    TLS_OK = 0,
    TLS_ERR_ARG,       /* invalid argument (NULL path, empty or over-long name, ...) */
    TLS_ERR_NOMEM,     /* allocation failed */
    TLS_ERR_FILE,      /* CA, certificate or key cannot be read, or key and cert differ */
    TLS_ERR_SSL,       /* other OpenSSL failure while setting up */
    TLS_ERR_NOT_READY, /* no finished handshake or no verified peer certificate yet */
    TLS_ERR_REFUSED,   /* the peer failed a check; tls_explain() says which */
    TLS_ERR_TRUNCATED, /* the output buffer is too small */
    TLS_ERR_MAX
};

/* Why a connection was refused.  The text of each (tls_explain(), TLS_REASON_TEXT_*)
 * is part of the contract: tests and operators grep logs for it; never reword it. */
enum tls_reason {
    TLS_REASON_NONE = 0,      /* nothing went wrong */
    TLS_REASON_PLAINTEXT,     /* "plaintext or not TLS" */
    TLS_REASON_OLD_VERSION,   /* "TLS version below 1.3" */
    TLS_REASON_UNKNOWN_CA,    /* "certificate from an unknown CA" */
    TLS_REASON_EXPIRED,       /* "certificate expired" */
    TLS_REASON_NOT_A_PEER,    /* "certificate names X, which is not a configured peer" */
    TLS_REASON_NO_ALPN,       /* "no ALPN h2" */
    TLS_REASON_WRONG_PEER,    /* "certificate names X, expected Y" (client dialled Y) */
    TLS_REASON_NO_CERT,       /* "no peer certificate" */
    TLS_REASON_NOT_YET_VALID, /* "certificate not yet valid" (clock skew?) */
    TLS_REASON_BAD_CERT,      /* "certificate rejected: <OpenSSL's verify error>" */
    TLS_REASON_PEER_ALERT,    /* "alert from peer: <alert>" (the peer refused us) */
    TLS_REASON_CLOSED,        /* "connection closed during handshake" */
    TLS_REASON_OTHER,         /* "TLS handshake failed: <OpenSSL's reason>" */
    TLS_REASON_MAX
};

/* The fixed texts (see above).  NOT_A_PEER's full text names the certificate:
 * "certificate names eu-west, which is not a configured peer". */
#define TLS_REASON_TEXT_PLAINTEXT "plaintext or not TLS"
#define TLS_REASON_TEXT_OLD_VERSION "TLS version below 1.3"
#define TLS_REASON_TEXT_UNKNOWN_CA "certificate from an unknown CA"
#define TLS_REASON_TEXT_EXPIRED "certificate expired"
#define TLS_REASON_TEXT_NOT_A_PEER ", which is not a configured peer"
#define TLS_REASON_TEXT_NO_ALPN "no ALPN h2"
/* Appended when the reason was reported by the other end in a TLS alert, i.e. the
 * peer refused us ("certificate expired (alert from peer)": ours is expired). */
#define TLS_REASON_TEXT_FROM_PEER " (alert from peer)"

/* Longest site name (a DNS name) the module handles. */
#define TLS_SITE_MAX 253

/* One finished log line, without a trailing newline.  Called on the caller's thread. */
typedef void (*tls_log_fn)(void *arg, const char *line);

struct tls_ctx;

/* Make a WAN context: TLS 1.3 only, ALPN h2 (a server selects h2 and refuses clients
 * that do not offer it; a client offers h2 and refuses servers that do not pick it),
 * mutual authentication against the CA in ca_path (PEM; may hold several), this
 * site's certificate chain (PEM, leaf first) and key.  A server requires a client
 * certificate.  allowed_names (n entries, copied) are the peer sites this end accepts:
 * a peer's certificate must carry one of them as a SAN DNS name, or as its CN when
 * it has no SAN DNS name (case-insensitive, exact: no wildcards).  No session
 * resumption: every connection is fully authenticated.
 * Returns the context, or NULL with a one-line reason in err (may be NULL). */
struct tls_ctx *tls_ctx_create(const char *ca_path, const char *cert_path, const char *key_path,
                               int is_server, const char *const *allowed_names, size_t n, char *err,
                               size_t errlen);

/* Free the context.  Connections still open keep what they need (OpenSSL refcounts)
 * and may outlive it.  NULL is a no-op. */
void tls_ctx_destroy(struct tls_ctx *ctx);

/* Re-read CA, certificate and key (e.g. on SIGHUP) and, if allowed_names is not NULL,
 * replace the peer list.  All or nothing: on any error the old settings stay in force.
 * New connections use the new settings; open ones are not disturbed.  Any thread.
 * Returns 0, -TLS_ERR_ARG, -TLS_ERR_NOMEM, -TLS_ERR_FILE or -TLS_ERR_SSL (reason in
 * err). */
int tls_ctx_reload(struct tls_ctx *ctx, const char *ca_path, const char *cert_path,
                   const char *key_path, const char *const *allowed_names, size_t n, char *err,
                   size_t errlen);

/* 1 for a server (accepting) context, 0 for a client one. */
int tls_ctx_is_server(const struct tls_ctx *ctx);

/* Make one SSL from the context, for callers that drive the handshake themselves
 * (tests, blocking tools).  peer_site: for a client, the site it dials (sent as SNI;
 * the server's certificate must name exactly it), or NULL to accept any allowed
 * peer; must be NULL for a server.  *out is the caller's (SSL_free).
 * Returns 0, -TLS_ERR_ARG or -TLS_ERR_NOMEM. */
int tls_ssl_new(struct tls_ctx *ctx, const char *peer_site, SSL **out);

/* Wrap an accepted socket (server context) in a bufferevent_openssl that starts the
 * handshake as the server.  options: BEV_OPT_* (BEV_OPT_CLOSE_ON_FREE is always added:
 * the bufferevent owns the fd and the SSL).  On success takes ownership of fd; on
 * failure fd stays the caller's.  Returns 0, -TLS_ERR_ARG or -TLS_ERR_NOMEM. */
int tls_bev_accept(struct tls_ctx *ctx, struct event_base *base, evutil_socket_t fd, int options,
                   struct bufferevent **out);

/* Same for an outgoing connection (client context): fd is a connected or connecting
 * socket, or -1 to connect later with bufferevent_socket_connect().  peer_site as in
 * tls_ssl_new() (SNI and expected name).  Returns 0, -TLS_ERR_ARG or -TLS_ERR_NOMEM. */
int tls_bev_connect(struct tls_ctx *ctx, struct event_base *base, evutil_socket_t fd,
                    const char *peer_site, int options, struct bufferevent **out);

/* Call once the handshake has finished (SSL_accept/SSL_connect returned 1, or
 * BEV_EVENT_CONNECTED) and before trusting any byte: checks TLS 1.3, ALPN h2, a
 * verified peer certificate and its site name.  The handshake already refuses all of
 * these except a server that picks no ALPN, which only this check can catch on the
 * client.  Returns 0, -TLS_ERR_NOT_READY (handshake not finished) or -TLS_ERR_REFUSED
 * (close the connection; tls_explain()/tls_log_refusal() give the reason). */
int tls_check_peer(SSL *ssl);

/* Which configured peer site the verified peer certificate matched, spelled as in
 * allowed_names (or the dialled peer_site), NUL-terminated into out.  Returns 0,
 * -TLS_ERR_NOT_READY (no finished handshake or no verified certificate),
 * -TLS_ERR_REFUSED (no name matches) or -TLS_ERR_TRUNCATED. */
int tls_peer_site(SSL *ssl, char *out, size_t outlen);

/* Collect the OpenSSL error codes of a failed handshake, oldest first, from this
 * thread's error queue (draining it) or from a bufferevent_openssl (which keeps them
 * itself).  Return how many were stored in errs (at most max). */
size_t tls_errors_from_queue(unsigned long *errs, size_t max);
size_t tls_errors_from_bev(struct bufferevent *bev, unsigned long *errs, size_t max);

/* Turn a refused or failed handshake into one reason and its text (see enum
 * tls_reason), written NUL-terminated into out (may be NULL).  ssl may be NULL (less
 * precise); errs are the codes collected above (may be empty).  Reasons found by
 * this module's own checks (name, ALPN) win over OpenSSL's codes.  Never fails:
 * unknown cases give TLS_REASON_CLOSED or TLS_REASON_OTHER. */
enum tls_reason tls_explain(SSL *ssl, const unsigned long *errs, size_t nerrs, char *out,
                            size_t outlen);

/* tls_explain() and log one line through log(log_arg, line):
 *   "TLS handshake with <peer> refused: <reason text>[ [peer certificate: <names>]]"
 * The bracket names the peer's certificate when that is what failed (unknown CA,
 * expired, not yet valid, rejected).
 * peer describes the other end for humans (address, site), may be NULL.  log may be
 * NULL (then nothing is logged).  Returns the reason. */
enum tls_reason tls_log_refusal(SSL *ssl, const unsigned long *errs, size_t nerrs, const char *peer,
                                tls_log_fn log, void *log_arg);

/* Short stable token for metrics labels ("plaintext", "old_version", "unknown_ca",
 * "expired", "not_a_peer", "no_alpn", ...); "?" when out of range. */
const char *tls_reason_name(enum tls_reason reason);

/* Text for a return code of this module (0 or -TLS_ERR_*). */
const char *tls_strerror(int rc);

#endif
