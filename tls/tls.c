/*
 * tls — builds the OpenSSL contexts of the WAN links (TLS 1.3 only, ALPN h2, mutual
 * certificates, peer site identity) and explains refused handshakes in one stable
 * line.  It does not do HTTP/2, sockets, config or logging of its own.  Any thread: a
 * tls_ctx is shared (a mutex guards only the swap on reload); an SSL is one thread's.
 *
 * Where the checks happen, so that a bad peer is refused inside the handshake (it gets
 * a TLS alert) rather than after it:
 *
 *   server                                   client
 *   client_hello_cb: offers TLS 1.3 but      (OpenSSL: server picked TLS 1.3?)
 *     no ALPN at all -> no_application_proto
 *   alpn_select_cb: h2 in the list?
 *   (OpenSSL: version, certificate chain)    verify_cb depth 0: the server's names
 *   verify_cb depth 0: the client's names      contain the dialled site
 *     contain an allowed site
 *   tls_check_peer(): all of it again        tls_check_peer(): + did the server
 *                                              select h2 (nothing earlier can tell)
 *
 * What the checks found is kept per connection (struct tls_note, SSL ex_data) so that
 * tls_explain() can name the reason even though OpenSSL only reports "certificate
 * verify failed" or "callback failed".
 */
#include "tls/tls.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#define TLS_NAMES_KEPT 8   /* names of one certificate looked at (and logged) */
#define TLS_NAMES_TEXT 320 /* room for them in a log line */
#define TLS_DETAIL_MAX 160 /* OpenSSL's own words for an unexpected failure */
#define TLS_BEV_ERRORS 16  /* bufferevent_openssl keeps 3; room to spare */

static const unsigned char alpn_h2_wire[] = {2, 'h', '2'};

/* What one SSL_CTX enforces.  It hangs off the SSL_CTX (ex_data) and dies with it, so
 * a connection keeps the peer list it started under while a reload swaps in another. */
struct tls_policy {
    int is_server;
    size_t n;
    char **names;
};

/* What one connection learned during its checks; hangs off the SSL, dies with it. */
struct tls_note {
    enum tls_reason reason;          /* found by our own checks, else TLS_REASON_NONE */
    char expected[TLS_SITE_MAX + 1]; /* client: the site dialled; "" = any allowed */
    char names[TLS_NAMES_TEXT];      /* the peer certificate's names, for log lines */
};

struct tls_ctx {
    pthread_mutex_t lock; /* guards ssl_ctx: reload swaps it while others SSL_new() */
    SSL_CTX *ssl_ctx;     /* ours: one reference */
    int is_server;
};

/* The names a certificate claims: its SAN DNS names, or its CNs when it has none. */
struct cert_names {
    size_t n;
    int more;                                    /* names beyond TLS_NAMES_KEPT exist */
    char name[TLS_NAMES_KEPT][TLS_SITE_MAX + 1]; /* printable; odd bytes shown as '?' */
    int usable[TLS_NAMES_KEPT];                  /* 0: odd bytes or too long, never matches */
};

static const char *const reason_names[TLS_REASON_MAX] = {
    [TLS_REASON_NONE] = "none",
    [TLS_REASON_PLAINTEXT] = "plaintext",
    [TLS_REASON_OLD_VERSION] = "old_version",
    [TLS_REASON_UNKNOWN_CA] = "unknown_ca",
    [TLS_REASON_EXPIRED] = "expired",
    [TLS_REASON_NOT_A_PEER] = "not_a_peer",
    [TLS_REASON_NO_ALPN] = "no_alpn",
    [TLS_REASON_WRONG_PEER] = "wrong_peer",
    [TLS_REASON_NO_CERT] = "no_cert",
    [TLS_REASON_NOT_YET_VALID] = "not_yet_valid",
    [TLS_REASON_BAD_CERT] = "bad_cert",
    [TLS_REASON_PEER_ALERT] = "peer_alert",
    [TLS_REASON_CLOSED] = "closed",
    [TLS_REASON_OTHER] = "other",
};

/* Fixed texts; the ones with a %s part are formatted in reason_text(). */
static const char *const reason_texts[TLS_REASON_MAX] = {
    [TLS_REASON_NONE] = "no failure",
    [TLS_REASON_PLAINTEXT] = TLS_REASON_TEXT_PLAINTEXT,
    [TLS_REASON_OLD_VERSION] = TLS_REASON_TEXT_OLD_VERSION,
    [TLS_REASON_UNKNOWN_CA] = TLS_REASON_TEXT_UNKNOWN_CA,
    [TLS_REASON_EXPIRED] = TLS_REASON_TEXT_EXPIRED,
    [TLS_REASON_NOT_A_PEER] = ("certificate names %s" TLS_REASON_TEXT_NOT_A_PEER),
    [TLS_REASON_NO_ALPN] = TLS_REASON_TEXT_NO_ALPN,
    [TLS_REASON_WRONG_PEER] = "certificate names %s, expected %s",
    [TLS_REASON_NO_CERT] = "no peer certificate",
    [TLS_REASON_NOT_YET_VALID] = "certificate not yet valid",
    [TLS_REASON_BAD_CERT] = "certificate rejected: %s",
    [TLS_REASON_PEER_ALERT] = "alert from peer: %s",
    [TLS_REASON_CLOSED] = "connection closed during handshake",
    [TLS_REASON_OTHER] = "TLS handshake failed: %s",
};

static const char *const err_texts[TLS_ERR_MAX] = {
    [TLS_OK] = "ok",
    [TLS_ERR_ARG] = "invalid argument",
    [TLS_ERR_NOMEM] = "out of memory",
    [TLS_ERR_FILE] = "cannot load CA, certificate or key",
    [TLS_ERR_SSL] = "OpenSSL failure",
    [TLS_ERR_NOT_READY] = "no finished handshake or verified peer certificate",
    [TLS_ERR_REFUSED] = "peer refused",
    [TLS_ERR_TRUNCATED] = "output buffer too small",
};

/* ---- ex_data: where the policy and the notes live ------------------------------- */

static int policy_idx = -1;
static int note_idx = -1;
static pthread_once_t idx_once = PTHREAD_ONCE_INIT;

static void policy_free(struct tls_policy *pol)
{
    if (pol == NULL) {
        return;
    }
    for (size_t i = 0; i < pol->n; i++) {
        free(pol->names[i]);
    }
    free(pol->names);
    free(pol);
}

static void policy_free_cb(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                           void *argp)
{
    policy_free(ptr);
}

static void note_free_cb(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                         void *argp)
{
    free(ptr);
}

static void idx_init(void)
{
    policy_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, policy_free_cb);
    note_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, note_free_cb);
}

static int idx_ready(void)
{
    pthread_once(&idx_once, idx_init);
    return policy_idx >= 0 && note_idx >= 0;
}

static const struct tls_policy *policy_of(const SSL *ssl)
{
    return SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), policy_idx);
}

static struct tls_note *note_find(const SSL *ssl)
{
    return note_idx < 0 ? NULL : SSL_get_ex_data(ssl, note_idx);
}

/* The connection's note, made on first use (also for an SSL not made by tls_ssl_new).
 * NULL only when out of memory. */
static struct tls_note *note_get(SSL *ssl)
{
    struct tls_note *note = note_find(ssl);

    if (note != NULL || note_idx < 0) {
        return note;
    }
    note = calloc(1, sizeof(*note));
    if (note == NULL) {
        return NULL;
    }
    if (SSL_set_ex_data(ssl, note_idx, note) != 1) {
        free(note);
        return NULL;
    }
    return note;
}

/* ---- names ------------------------------------------------------------------------ */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err != NULL && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
}

/* A configured site name: a DNS label sequence as the lab script allows them. */
static int site_name_ok(const char *name)
{
    size_t len = name == NULL ? 0 : strlen(name);

    if (len == 0 || len > TLS_SITE_MAX || name[0] == '.') {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '-' || c == '_';
        if (!ok) {
            return 0;
        }
    }
    return 1;
}

static void names_add(struct cert_names *cn, const unsigned char *data, int len)
{
    size_t i, shown;
    int usable = data != NULL && len > 0 && len <= TLS_SITE_MAX;

    if (cn->n == TLS_NAMES_KEPT) {
        cn->more = 1;
        return;
    }
    shown = len < 0 ? 0 : (size_t)len;
    if (shown > TLS_SITE_MAX) {
        shown = TLS_SITE_MAX;
    }
    for (i = 0; i < shown; i++) {
        unsigned char c = data[i];
        /* Whatever a certificate says ends up in a log line: printable ASCII only.
         * An embedded NUL or a comma could make a name look like another one. */
        if (c <= 0x20 || c >= 0x7f || c == ',') {
            c = '?';
            usable = 0;
        }
        cn->name[cn->n][i] = (char)c;
    }
    cn->name[cn->n][i] = '\0';
    cn->usable[cn->n] = usable;
    cn->n++;
}

static void cert_names_get(X509 *cert, struct cert_names *cn)
{
    GENERAL_NAMES *gens;
    X509_NAME *subject;
    int i;

    memset(cn, 0, sizeof(*cn));
    gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    if (gens != NULL) {
        for (i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
            const GENERAL_NAME *gen = sk_GENERAL_NAME_value(gens, i);
            if (gen->type == GEN_DNS) {
                names_add(cn, ASN1_STRING_get0_data(gen->d.dNSName),
                          ASN1_STRING_length(gen->d.dNSName));
            }
        }
        GENERAL_NAMES_free(gens);
    }
    if (cn->n > 0) {
        return;
    }
    /* No SAN DNS name: the CN (every one, though there should be one) stands in. */
    subject = X509_get_subject_name(cert);
    i = -1;
    while ((i = X509_NAME_get_index_by_NID(subject, NID_commonName, i)) >= 0) {
        ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i));
        unsigned char *utf8 = NULL;
        int len = ASN1_STRING_to_UTF8(&utf8, s);
        if (len >= 0) {
            names_add(cn, utf8, len);
        }
        OPENSSL_free(utf8);
    }
}

static void cert_names_text(const struct cert_names *cn, char *out, size_t outlen)
{
    size_t used = 0;

    if (outlen == 0) {
        return;
    }
    out[0] = '\0';
    if (cn->n == 0) {
        snprintf(out, outlen, "(none)");
        return;
    }
    for (size_t i = 0; i < cn->n && used < outlen; i++) {
        int w = snprintf(out + used, outlen - used, "%s%s", i > 0 ? "," : "", cn->name[i]);
        if (w < 0) {
            break;
        }
        used += (size_t)w;
    }
    if (cn->more && used < outlen) {
        snprintf(out + used, outlen - used, ",...");
    }
}

static const char *policy_find(const struct tls_policy *pol, const char *name)
{
    for (size_t j = 0; pol != NULL && j < pol->n; j++) {
        if (strcasecmp(pol->names[j], name) == 0) {
            return pol->names[j];
        }
    }
    return NULL;
}

/* The site a certificate's names stand for: the dialled one if expected is set, else
 * any allowed one, spelled as configured.  NULL if none matches. */
static const char *cert_names_match(const struct cert_names *cn, const struct tls_policy *pol,
                                    const char *expected)
{
    for (size_t i = 0; i < cn->n; i++) {
        if (!cn->usable[i]) {
            continue;
        }
        if (expected != NULL && expected[0] != '\0') {
            if (strcasecmp(cn->name[i], expected) == 0) {
                return expected;
            }
        } else {
            const char *site = policy_find(pol, cn->name[i]);
            if (site != NULL) {
                return site;
            }
        }
    }
    return NULL;
}

/* Why names did not match: another configured peer than the dialled one, or none. */
static enum tls_reason mismatch_reason(const struct cert_names *cn, const struct tls_policy *pol,
                                       const char *expected)
{
    if (expected != NULL && expected[0] != '\0' && cert_names_match(cn, pol, NULL) != NULL) {
        return TLS_REASON_WRONG_PEER;
    }
    return TLS_REASON_NOT_A_PEER;
}

/* ---- OpenSSL callbacks ------------------------------------------------------------- */

/* Chain verification, both ends.  OpenSSL calls this for each certificate from the
 * root down; at the leaf (depth 0) with the chain fine so far, the leaf must name an
 * allowed (server) or the dialled (client) site.  Failing here, not after the
 * handshake, makes OpenSSL send the peer a bad_certificate alert. */
static int verify_cb(int ok, X509_STORE_CTX *xs)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    X509 *cert = X509_STORE_CTX_get_current_cert(xs);
    const struct tls_policy *pol;
    struct tls_note *note;
    struct cert_names cn;

    if (ssl == NULL || cert == NULL || X509_STORE_CTX_get_error_depth(xs) != 0) {
        return ok;
    }
    note = note_get(ssl);
    cert_names_get(cert, &cn);
    if (note != NULL) {
        cert_names_text(&cn, note->names, sizeof(note->names));
    }
    if (!ok) {
        return 0; /* keep OpenSSL's own error: unknown CA, expired, ... */
    }
    pol = policy_of(ssl);
    if (note == NULL || pol == NULL) {
        X509_STORE_CTX_set_error(xs, X509_V_ERR_OUT_OF_MEM); /* fail closed */
        return 0;
    }
    if (cert_names_match(&cn, pol, note->expected) != NULL) {
        return 1;
    }
    note->reason = mismatch_reason(&cn, pol, note->expected);
    X509_STORE_CTX_set_error(xs, X509_V_ERR_HOSTNAME_MISMATCH);
    return 0;
}

static int offers_tls13(SSL *ssl)
{
    const unsigned char *p;
    size_t len;

    if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_supported_versions, &p, &len) || len < 1) {
        return 0;
    }
    if ((size_t)p[0] + 1 > len) {
        return 0;
    }
    for (size_t i = 1; i + 2 <= (size_t)p[0] + 1; i += 2) {
        if (p[i] == 0x03 && p[i + 1] == 0x04) {
            return 1;
        }
    }
    return 0;
}

/* Server: a TLS 1.3 client that sends no ALPN extension never reaches alpn_select_cb,
 * so refuse it here.  A client without TLS 1.3 is left to version negotiation, so it
 * is refused for its version, the more basic fault. */
static int client_hello_cb(SSL *ssl, int *alert, void *arg)
{
    const unsigned char *p;
    size_t len;
    struct tls_note *note;

    if (!offers_tls13(ssl) ||
        SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &p,
                                  &len)) {
        return SSL_CLIENT_HELLO_SUCCESS;
    }
    note = note_get(ssl);
    if (note != NULL) {
        note->reason = TLS_REASON_NO_ALPN;
    }
    *alert = SSL_AD_NO_APPLICATION_PROTOCOL;
    return SSL_CLIENT_HELLO_ERROR;
}

/* Server: select h2 from the client's list, or refuse (no_application_protocol). */
static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg)
{
    struct tls_note *note;
    unsigned int i = 0;

    while (i < inlen) {
        unsigned int len = in[i];
        if (len == 0 || i + 1 + len > inlen) {
            break;
        }
        if (len == 2 && memcmp(in + i + 1, "h2", 2) == 0) {
            *out = in + i + 1;
            *outlen = 2;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + len;
    }
    note = note_get(ssl);
    if (note != NULL) {
        note->reason = TLS_REASON_NO_ALPN;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* ---- contexts ---------------------------------------------------------------------- */

/* OpenSSL's words on a failed set-up call, for an err line; clears the queue.  The
 * oldest entry is the cause ("no start line", errno); later ones only say where it
 * surfaced ("PEM lib", "system lib"). */
static const char *ssl_last_error(char *buf, size_t len)
{
    unsigned long e, first = 0;
    int sys_errno = 0;

    while ((e = ERR_get_error()) != 0) {
        if (first == 0) {
            first = e;
        }
        if (sys_errno == 0 && ERR_SYSTEM_ERROR(e)) {
            sys_errno = ERR_GET_REASON(e);
        }
    }
    if (sys_errno != 0) {
        snprintf(buf, len, "%s", strerror(sys_errno));
    } else if (first != 0 && ERR_reason_error_string(first) != NULL) {
        snprintf(buf, len, "%s", ERR_reason_error_string(first));
    } else if (first != 0) {
        ERR_error_string_n(first, buf, len);
    } else {
        snprintf(buf, len, "unknown error");
    }
    return buf;
}

static int no_passphrase_cb(char *buf, int size, int rwflag, void *arg)
{
    return 0;
}

static int policy_new(int is_server, const char *const *names, size_t n, struct tls_policy **out,
                      char *err, size_t errlen)
{
    struct tls_policy *pol;

    if (n == 0 || names == NULL) {
        set_err(err, errlen, "no peer site names given");
        return -TLS_ERR_ARG;
    }
    for (size_t i = 0; i < n; i++) {
        if (!site_name_ok(names[i])) {
            set_err(err, errlen, "bad peer site name '%s' (letters, digits, '.', '-', '_')",
                    names[i] != NULL ? names[i] : "(null)");
            return -TLS_ERR_ARG;
        }
    }
    pol = calloc(1, sizeof(*pol));
    if (pol == NULL) {
        goto fail_pol;
    }
    pol->is_server = is_server;
    pol->names = calloc(n, sizeof(*pol->names));
    if (pol->names == NULL) {
        goto fail_names;
    }
    for (pol->n = 0; pol->n < n; pol->n++) {
        pol->names[pol->n] = strdup(names[pol->n]);
        if (pol->names[pol->n] == NULL) {
            goto fail_names;
        }
    }
    *out = pol;
    return 0;

fail_names:
    policy_free(pol);
fail_pol:
    set_err(err, errlen, "out of memory");
    return -TLS_ERR_NOMEM;
}

/* Load the CA, this site's certificate chain and key into a new SSL_CTX set up for the
 * WAN.  Takes ownership of pol (it becomes the SSL_CTX's).  Returns 0, -TLS_ERR_FILE,
 * -TLS_ERR_NOMEM or -TLS_ERR_SSL, with err filled. */
static int ssl_ctx_build(const char *ca_path, const char *cert_path, const char *key_path,
                         struct tls_policy *pol, SSL_CTX **out, char *err, size_t errlen)
{
    char why[TLS_DETAIL_MAX];
    int is_server = pol->is_server;
    SSL_CTX *sctx;
    int rc = -TLS_ERR_SSL;

    ERR_clear_error();
    sctx = SSL_CTX_new(is_server ? TLS_server_method() : TLS_client_method());
    if (sctx == NULL) {
        set_err(err, errlen, "SSL_CTX_new: %s", ssl_last_error(why, sizeof(why)));
        rc = -TLS_ERR_NOMEM;
        goto fail_ctx;
    }
    if (SSL_CTX_set_ex_data(sctx, policy_idx, pol) != 1) {
        set_err(err, errlen, "out of memory");
        rc = -TLS_ERR_NOMEM;
        goto fail_policy;
    }
    pol = NULL; /* the SSL_CTX owns it now */

    if (SSL_CTX_set_min_proto_version(sctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(sctx, TLS1_3_VERSION) != 1) {
        set_err(err, errlen, "cannot restrict to TLS 1.3: %s", ssl_last_error(why, sizeof(why)));
        goto fail_setup;
    }
    if (SSL_CTX_load_verify_locations(sctx, ca_path, NULL) != 1) {
        set_err(err, errlen, "cannot load CA %s: %s", ca_path, ssl_last_error(why, sizeof(why)));
        rc = -TLS_ERR_FILE;
        goto fail_setup;
    }
    if (SSL_CTX_use_certificate_chain_file(sctx, cert_path) != 1) {
        set_err(err, errlen, "cannot load certificate %s: %s", cert_path,
                ssl_last_error(why, sizeof(why)));
        rc = -TLS_ERR_FILE;
        goto fail_setup;
    }
    /* An encrypted key must fail, not make OpenSSL prompt on the daemon's terminal. */
    SSL_CTX_set_default_passwd_cb(sctx, no_passphrase_cb);
    if (SSL_CTX_use_PrivateKey_file(sctx, key_path, SSL_FILETYPE_PEM) != 1) {
        unsigned long e = ERR_peek_last_error();

        /* OpenSSL checks the pair while loading the key: say it in our words. */
        if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH) {
            set_err(err, errlen, "key %s does not belong to certificate %s", key_path, cert_path);
            ERR_clear_error();
        } else {
            set_err(err, errlen, "cannot load key %s: %s", key_path,
                    ssl_last_error(why, sizeof(why)));
        }
        rc = -TLS_ERR_FILE;
        goto fail_setup;
    }
    if (SSL_CTX_check_private_key(sctx) != 1) {
        set_err(err, errlen, "key %s does not belong to certificate %s", key_path, cert_path);
        ERR_clear_error();
        rc = -TLS_ERR_FILE;
        goto fail_setup;
    }

    /* No resumption: a resumed session would skip the certificate checks, and a reload
     * must take effect on the very next connection. */
    SSL_CTX_set_session_cache_mode(sctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(sctx, SSL_OP_NO_TICKET);
    if (is_server) {
        STACK_OF(X509_NAME) *cas = SSL_load_client_CA_file(ca_path);

        SSL_CTX_set_num_tickets(sctx, 0);
        if (cas != NULL) {
            SSL_CTX_set_client_CA_list(sctx, cas); /* tells clients which CA we want */
        }
        SSL_CTX_set_verify(sctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
        SSL_CTX_set_client_hello_cb(sctx, client_hello_cb, NULL);
        SSL_CTX_set_alpn_select_cb(sctx, alpn_select_cb, NULL);
    } else {
        SSL_CTX_set_verify(sctx, SSL_VERIFY_PEER, verify_cb);
        /* Unlike nearly all of OpenSSL, this one returns 0 on success. */
        if (SSL_CTX_set_alpn_protos(sctx, alpn_h2_wire, sizeof(alpn_h2_wire)) != 0) {
            set_err(err, errlen, "cannot set ALPN: %s", ssl_last_error(why, sizeof(why)));
            rc = -TLS_ERR_NOMEM;
            goto fail_setup;
        }
    }
    ERR_clear_error();
    *out = sctx;
    return 0;

fail_setup:
fail_policy:
    SSL_CTX_free(sctx); /* frees pol too once attached */
fail_ctx:
    policy_free(pol);
    ERR_clear_error();
    return rc;
}

static int paths_ok(const char *ca_path, const char *cert_path, const char *key_path, char *err,
                    size_t errlen)
{
    if (ca_path == NULL || cert_path == NULL || key_path == NULL || ca_path[0] == '\0' ||
        cert_path[0] == '\0' || key_path[0] == '\0') {
        set_err(err, errlen, "CA, certificate and key paths are all required");
        return 0;
    }
    return 1;
}

struct tls_ctx *tls_ctx_create(const char *ca_path, const char *cert_path, const char *key_path,
                               int is_server, const char *const *allowed_names, size_t n, char *err,
                               size_t errlen)
{
    struct tls_policy *pol = NULL;
    struct tls_ctx *ctx;

    if (!paths_ok(ca_path, cert_path, key_path, err, errlen)) {
        return NULL;
    }
    if (!idx_ready()) {
        set_err(err, errlen, "OpenSSL: no ex_data index");
        return NULL;
    }
    ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        set_err(err, errlen, "out of memory");
        goto fail_ctx;
    }
    ctx->is_server = is_server ? 1 : 0;
    if (policy_new(ctx->is_server, allowed_names, n, &pol, err, errlen) != 0) {
        goto fail_policy;
    }
    if (ssl_ctx_build(ca_path, cert_path, key_path, pol, &ctx->ssl_ctx, err, errlen) != 0) {
        goto fail_build;
    }
    if (pthread_mutex_init(&ctx->lock, NULL) != 0) {
        set_err(err, errlen, "cannot create a mutex");
        goto fail_lock;
    }
    return ctx;

fail_lock:
    SSL_CTX_free(ctx->ssl_ctx);
fail_build:
fail_policy:
    free(ctx);
fail_ctx:
    return NULL;
}

void tls_ctx_destroy(struct tls_ctx *ctx)
{
    if (ctx == NULL) {
        return;
    }
    SSL_CTX_free(ctx->ssl_ctx);
    pthread_mutex_destroy(&ctx->lock);
    free(ctx);
}

/* The current SSL_CTX with a reference of the caller's own (SSL_CTX_free it). */
static SSL_CTX *ctx_current(struct tls_ctx *ctx)
{
    SSL_CTX *sctx;

    pthread_mutex_lock(&ctx->lock);
    sctx = ctx->ssl_ctx;
    SSL_CTX_up_ref(sctx);
    pthread_mutex_unlock(&ctx->lock);
    return sctx;
}

int tls_ctx_reload(struct tls_ctx *ctx, const char *ca_path, const char *cert_path,
                   const char *key_path, const char *const *allowed_names, size_t n, char *err,
                   size_t errlen)
{
    struct tls_policy *pol = NULL;
    SSL_CTX *fresh, *old;
    int rc;

    if (ctx == NULL) {
        set_err(err, errlen, "no context");
        return -TLS_ERR_ARG;
    }
    if (!paths_ok(ca_path, cert_path, key_path, err, errlen)) {
        return -TLS_ERR_ARG;
    }
    if (allowed_names != NULL) {
        rc = policy_new(ctx->is_server, allowed_names, n, &pol, err, errlen);
    } else {
        SSL_CTX *cur = ctx_current(ctx);
        const struct tls_policy *now = SSL_CTX_get_ex_data(cur, policy_idx);

        rc = policy_new(ctx->is_server, (const char *const *)now->names, now->n, &pol, err, errlen);
        SSL_CTX_free(cur);
    }
    if (rc != 0) {
        return rc;
    }
    rc = ssl_ctx_build(ca_path, cert_path, key_path, pol, &fresh, err, errlen);
    if (rc != 0) {
        return rc;
    }
    pthread_mutex_lock(&ctx->lock);
    old = ctx->ssl_ctx;
    ctx->ssl_ctx = fresh;
    pthread_mutex_unlock(&ctx->lock);
    SSL_CTX_free(old); /* open connections hold their own references */
    return 0;
}

int tls_ctx_is_server(const struct tls_ctx *ctx)
{
    return ctx != NULL && ctx->is_server;
}

/* ---- connections ------------------------------------------------------------------- */

int tls_ssl_new(struct tls_ctx *ctx, const char *peer_site, SSL **out)
{
    struct tls_note *note;
    SSL_CTX *sctx;
    SSL *ssl;
    int rc;

    if (ctx == NULL || out == NULL ||
        (peer_site != NULL && (ctx->is_server || !site_name_ok(peer_site)))) {
        return -TLS_ERR_ARG;
    }
    sctx = ctx_current(ctx);
    ssl = SSL_new(sctx); /* takes its own reference on sctx */
    SSL_CTX_free(sctx);
    if (ssl == NULL) {
        rc = -TLS_ERR_NOMEM;
        goto fail_ssl;
    }
    note = note_get(ssl);
    if (note == NULL) {
        rc = -TLS_ERR_NOMEM;
        goto fail_note;
    }
    if (peer_site != NULL) {
        /* Dialling a site we would not accept is a configuration slip: say so now. */
        if (policy_find(policy_of(ssl), peer_site) == NULL) {
            rc = -TLS_ERR_ARG;
            goto fail_note;
        }
        snprintf(note->expected, sizeof(note->expected), "%s", peer_site);
        if (SSL_set_tlsext_host_name(ssl, peer_site) != 1) {
            rc = -TLS_ERR_NOMEM;
            goto fail_note;
        }
    }
    if (ctx->is_server) {
        SSL_set_accept_state(ssl);
    } else {
        SSL_set_connect_state(ssl);
    }
    *out = ssl;
    return 0;

fail_note:
    SSL_free(ssl);
fail_ssl:
    ERR_clear_error();
    return rc;
}

static int bev_new(struct tls_ctx *ctx, struct event_base *base, evutil_socket_t fd,
                   const char *peer_site, int options, enum bufferevent_ssl_state state,
                   struct bufferevent **out)
{
    struct bufferevent *bev;
    SSL *ssl;
    int rc;

    if (base == NULL || out == NULL) {
        return -TLS_ERR_ARG;
    }
    rc = tls_ssl_new(ctx, peer_site, &ssl);
    if (rc != 0) {
        return rc;
    }
    /* With BEV_OPT_CLOSE_ON_FREE the bufferevent frees the SSL (and closes the fd) when
     * it is freed; libevent >= 2.1.9 also frees the SSL itself if this call fails. */
    bev = bufferevent_openssl_socket_new(base, fd, ssl, state, options | BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        return -TLS_ERR_NOMEM;
    }
    *out = bev;
    return 0;
}

int tls_bev_accept(struct tls_ctx *ctx, struct event_base *base, evutil_socket_t fd, int options,
                   struct bufferevent **out)
{
    if (ctx == NULL || !ctx->is_server || fd < 0) {
        return -TLS_ERR_ARG;
    }
    return bev_new(ctx, base, fd, NULL, options, BUFFEREVENT_SSL_ACCEPTING, out);
}

int tls_bev_connect(struct tls_ctx *ctx, struct event_base *base, evutil_socket_t fd,
                    const char *peer_site, int options, struct bufferevent **out)
{
    if (ctx == NULL || ctx->is_server) {
        return -TLS_ERR_ARG;
    }
    return bev_new(ctx, base, fd, peer_site, options, BUFFEREVENT_SSL_CONNECTING, out);
}

/* ---- after the handshake ----------------------------------------------------------- */

static enum tls_reason reason_from_verify(long v, char *detail, size_t detail_len)
{
    switch (v) {
    case X509_V_OK:
        return TLS_REASON_NONE;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_UNTRUSTED:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
    case X509_V_ERR_INVALID_CA:
        return TLS_REASON_UNKNOWN_CA;
    case X509_V_ERR_CERT_HAS_EXPIRED:
        return TLS_REASON_EXPIRED;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return TLS_REASON_NOT_YET_VALID;
    case X509_V_ERR_HOSTNAME_MISMATCH:
        return TLS_REASON_NOT_A_PEER;
    default:
        snprintf(detail, detail_len, "%s", X509_verify_cert_error_string(v));
        return TLS_REASON_BAD_CERT;
    }
}

/* Identity of a finished connection: a verified certificate naming an allowed (or
 * the dialled) site.  *site gets the configured spelling.  Names go to note if given. */
static enum tls_reason identity_status(SSL *ssl, struct tls_note *note, const char **site)
{
    X509 *cert = SSL_get0_peer_certificate(ssl);
    const struct tls_policy *pol = policy_of(ssl);
    const char *expected = note != NULL ? note->expected : NULL;
    char detail[TLS_DETAIL_MAX];
    struct cert_names cn;
    enum tls_reason r;

    *site = NULL;
    if (cert == NULL) {
        return TLS_REASON_NO_CERT;
    }
    cert_names_get(cert, &cn);
    if (note != NULL) {
        cert_names_text(&cn, note->names, sizeof(note->names));
    }
    r = reason_from_verify(SSL_get_verify_result(ssl), detail, sizeof(detail));
    if (r != TLS_REASON_NONE) {
        return r;
    }
    *site = cert_names_match(&cn, pol, expected);
    return *site != NULL ? TLS_REASON_NONE : mismatch_reason(&cn, pol, expected);
}

int tls_check_peer(SSL *ssl)
{
    const unsigned char *alpn = NULL;
    unsigned int alpn_len = 0;
    struct tls_note *note;
    const char *site;
    enum tls_reason r;

    if (ssl == NULL) {
        return -TLS_ERR_ARG;
    }
    if (!SSL_is_init_finished(ssl)) {
        return -TLS_ERR_NOT_READY;
    }
    note = note_get(ssl);
    if (note == NULL) {
        return -TLS_ERR_NOMEM;
    }
    SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
    if (SSL_version(ssl) != TLS1_3_VERSION) {
        r = TLS_REASON_OLD_VERSION;
    } else if (alpn_len != 2 || memcmp(alpn, "h2", 2) != 0) {
        r = TLS_REASON_NO_ALPN;
    } else {
        r = identity_status(ssl, note, &site);
    }
    if (r != TLS_REASON_NONE) {
        note->reason = r;
        return -TLS_ERR_REFUSED;
    }
    return 0;
}

int tls_peer_site(SSL *ssl, char *out, size_t outlen)
{
    const char *site;
    enum tls_reason r;

    if (ssl == NULL || out == NULL || outlen == 0) {
        return -TLS_ERR_ARG;
    }
    out[0] = '\0';
    if (!SSL_is_init_finished(ssl) || SSL_get0_peer_certificate(ssl) == NULL ||
        SSL_get_verify_result(ssl) != X509_V_OK) {
        return -TLS_ERR_NOT_READY;
    }
    r = identity_status(ssl, note_find(ssl), &site);
    if (r != TLS_REASON_NONE || site == NULL) {
        return -TLS_ERR_REFUSED;
    }
    if (strlen(site) >= outlen) {
        return -TLS_ERR_TRUNCATED;
    }
    memcpy(out, site, strlen(site) + 1);
    return 0;
}

/* ---- explaining failures ----------------------------------------------------------- */

size_t tls_errors_from_queue(unsigned long *errs, size_t max)
{
    size_t n = 0;
    unsigned long e;

    while ((e = ERR_get_error()) != 0) {
        if (errs != NULL && n < max) {
            errs[n++] = e;
        }
    }
    return n;
}

size_t tls_errors_from_bev(struct bufferevent *bev, unsigned long *errs, size_t max)
{
    unsigned long got[TLS_BEV_ERRORS];
    size_t k = 0, n = 0;
    unsigned long e;

    if (bev == NULL) {
        return 0;
    }
    while ((e = bufferevent_get_openssl_error(bev)) != 0) {
        /* libevent 2.1 also stores SSL_get_error()'s small result (SSL_ERROR_SSL = 1,
         * SSL_ERROR_SYSCALL = 5) among the codes; real codes carry a library number. */
        if (e > 0xff && k < TLS_BEV_ERRORS) {
            got[k++] = e;
        }
    }
    /* libevent hands them back newest first. */
    while (k > 0 && errs != NULL && n < max) {
        errs[n++] = got[--k];
    }
    return n;
}

/* One OpenSSL error code as a reason.  *from_peer: the code is an alert the peer sent. */
static enum tls_reason reason_from_err(SSL *ssl, unsigned long e, int *from_peer, char *detail,
                                       size_t detail_len)
{
    int lib = ERR_GET_LIB(e);
    int reason = ERR_GET_REASON(e);
    const char *text;

    *from_peer = 0;
    if (lib == ERR_LIB_SSL && reason >= SSL_AD_REASON_OFFSET &&
        reason < SSL_AD_REASON_OFFSET + 256) {
        int alert = reason - SSL_AD_REASON_OFFSET;

        *from_peer = 1;
        switch (alert) {
        case SSL_AD_PROTOCOL_VERSION:
            return TLS_REASON_OLD_VERSION;
        case SSL_AD_UNKNOWN_CA:
            return TLS_REASON_UNKNOWN_CA;
        case SSL_AD_CERTIFICATE_EXPIRED:
            return TLS_REASON_EXPIRED;
        case SSL_AD_NO_APPLICATION_PROTOCOL:
            return TLS_REASON_NO_ALPN;
        case SSL_AD_CERTIFICATE_REQUIRED:
            return TLS_REASON_NO_CERT;
        default:
            snprintf(detail, detail_len, "%s", SSL_alert_desc_string_long(alert));
            return TLS_REASON_PEER_ALERT;
        }
    }
    if (lib == ERR_LIB_SSL) {
        switch (reason) {
        case SSL_R_WRONG_VERSION_NUMBER: /* first record header is not TLS */
        case SSL_R_HTTP_REQUEST:
        case SSL_R_HTTPS_PROXY_REQUEST:
        case SSL_R_PACKET_LENGTH_TOO_LONG:
        case SSL_R_UNKNOWN_PROTOCOL:
            return TLS_REASON_PLAINTEXT;
        case SSL_R_UNSUPPORTED_PROTOCOL:
        case SSL_R_UNSUPPORTED_SSL_VERSION:
        case SSL_R_WRONG_SSL_VERSION:
        case SSL_R_VERSION_TOO_LOW:
        case SSL_R_BAD_LEGACY_VERSION:
            return TLS_REASON_OLD_VERSION;
        case SSL_R_CERTIFICATE_VERIFY_FAILED:
            if (ssl != NULL) {
                enum tls_reason r =
                    reason_from_verify(SSL_get_verify_result(ssl), detail, detail_len);
                if (r != TLS_REASON_NONE) {
                    return r;
                }
            }
            snprintf(detail, detail_len, "certificate verify failed");
            return TLS_REASON_BAD_CERT;
        case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
            return TLS_REASON_NO_CERT;
        case SSL_R_NO_APPLICATION_PROTOCOL:
            return TLS_REASON_NO_ALPN;
        case SSL_R_UNEXPECTED_EOF_WHILE_READING:
            return TLS_REASON_CLOSED;
        default:
            break;
        }
    }
    if (lib == ERR_LIB_SYS) {
        return TLS_REASON_CLOSED; /* reset, broken pipe: the peer went away */
    }
    text = ERR_reason_error_string(e);
    if (text != NULL) {
        snprintf(detail, detail_len, "%s", text);
    } else {
        ERR_error_string_n(e, detail, detail_len);
    }
    return TLS_REASON_OTHER;
}

static void reason_text(enum tls_reason r, int from_peer, const struct tls_note *note,
                        const char *detail, char *out, size_t outlen)
{
    const char *names = note != NULL && note->names[0] != '\0' ? note->names : "(unknown)";

    switch (r) {
    case TLS_REASON_NOT_A_PEER:
        snprintf(out, outlen, reason_texts[r], names);
        break;
    case TLS_REASON_WRONG_PEER:
        snprintf(out, outlen, reason_texts[r], names, note != NULL ? note->expected : "?");
        break;
    case TLS_REASON_BAD_CERT:
    case TLS_REASON_PEER_ALERT:
    case TLS_REASON_OTHER:
        snprintf(out, outlen, reason_texts[r], detail[0] != '\0' ? detail : "unknown error");
        break;
    default:
        snprintf(out, outlen, "%s%s", reason_texts[r], from_peer ? TLS_REASON_TEXT_FROM_PEER : "");
        break;
    }
}

/* tls_explain() that also says whether the reason came from the peer's alert. */
static enum tls_reason explain(SSL *ssl, const unsigned long *errs, size_t nerrs, char *out,
                               size_t outlen, int *from_peer)
{
    const struct tls_note *note = ssl != NULL ? note_find(ssl) : NULL;
    enum tls_reason r = TLS_REASON_NONE;
    char detail[TLS_DETAIL_MAX] = "";
    char text[TLS_NAMES_TEXT + 2 * TLS_SITE_MAX];

    *from_peer = 0;
    if (note != NULL && note->reason != TLS_REASON_NONE) {
        r = note->reason; /* our own check knows more than OpenSSL's "callback failed" */
    }
    /* Several codes: the first that names a known reason wins; failing that, the
     * first one's own words. */
    for (size_t i = 0; r == TLS_REASON_NONE && errs != NULL && i < nerrs; i++) {
        char d[TLS_DETAIL_MAX] = "";
        int fp;
        enum tls_reason got = reason_from_err(ssl, errs[i], &fp, d, sizeof(d));

        if (got != TLS_REASON_OTHER) {
            r = got;
            *from_peer = fp;
            memcpy(detail, d, sizeof(detail));
        } else if (i == 0) {
            memcpy(detail, d, sizeof(detail));
        }
    }
    if (r == TLS_REASON_NONE && errs != NULL && nerrs > 0) {
        r = TLS_REASON_OTHER;
    }
    if (r == TLS_REASON_NONE && ssl != NULL) {
        r = reason_from_verify(SSL_get_verify_result(ssl), detail, sizeof(detail));
    }
    if (r == TLS_REASON_NONE) {
        r = TLS_REASON_CLOSED; /* no code at all: EOF or reset mid-handshake */
    }
    reason_text(r, *from_peer, note, detail, text, sizeof(text));
    if (out != NULL && outlen > 0) {
        snprintf(out, outlen, "%s", text);
    }
    return r;
}

enum tls_reason tls_explain(SSL *ssl, const unsigned long *errs, size_t nerrs, char *out,
                            size_t outlen)
{
    int from_peer;

    return explain(ssl, errs, nerrs, out, outlen, &from_peer);
}

enum tls_reason tls_log_refusal(SSL *ssl, const unsigned long *errs, size_t nerrs, const char *peer,
                                tls_log_fn log, void *log_arg)
{
    const struct tls_note *note = ssl != NULL ? note_find(ssl) : NULL;
    char why[TLS_NAMES_TEXT + 2 * TLS_SITE_MAX + TLS_DETAIL_MAX];
    char line[sizeof(why) + TLS_NAMES_TEXT + 128];
    int from_peer;
    enum tls_reason r = explain(ssl, errs, nerrs, why, sizeof(why), &from_peer);
    /* Name the certificate when it is the peer's that failed (not when the peer
     * refused ours, and not when the reason text names it already). */
    int show_names = !from_peer && note != NULL && note->names[0] != '\0' &&
                     (r == TLS_REASON_UNKNOWN_CA || r == TLS_REASON_EXPIRED ||
                      r == TLS_REASON_NOT_YET_VALID || r == TLS_REASON_BAD_CERT);

    if (log == NULL) {
        return r;
    }
    snprintf(line, sizeof(line), "TLS handshake with %s refused: %s%s%s%s",
             peer != NULL ? peer : "peer", why, show_names ? " [peer certificate: " : "",
             show_names ? note->names : "", show_names ? "]" : "");
    log(log_arg, line);
    return r;
}

const char *tls_reason_name(enum tls_reason reason)
{
    if ((int)reason < 0 || reason >= TLS_REASON_MAX) {
        return "?";
    }
    return reason_names[reason];
}

const char *tls_strerror(int rc)
{
    int e = rc < 0 ? -rc : rc;

    if (e >= TLS_ERR_MAX) {
        return "unknown error";
    }
    return err_texts[e];
}
