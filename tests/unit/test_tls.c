/*
 * test_tls — tls/: makes a lab CA with deploy/lab-ca.sh in a temp dir (sites us-east,
 * eu-west, ap-south, expired certificates, a second unrelated CA), then runs real
 * TLS handshakes over socketpair()s — server on the test thread, client on a second
 * thread, both blocking SSL_accept/SSL_connect — and checks the good handshake and each
 * refusal reason on the refusing end (and what the refused end is told).  A last group
 * drives the same through bufferevent_openssl on one libevent loop.  It does not test
 * HTTP/2 or the WAN protocol.  Runs with cwd tests/unit (make unit); needs `openssl`.
 */
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tls/tls.h"

static char tmpdir[256]; /* everything the tests write */
static char lab[300];    /* the lab CA and the three sites */
static char other[300];  /* the unrelated CA */
static char path_buf[16][600];
static int path_next;

/* A path under the temp dir; a small ring of buffers so a call can use several. */
static const char *P(const char *fmt, ...)
{
    char rel[300];
    char *out = path_buf[path_next++ % 16];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(rel, sizeof(rel), fmt, ap);
    va_end(ap);
    snprintf(out, sizeof(path_buf[0]), "%s/%s", tmpdir, rel);
    return out;
}

static const char *const only_eu_west[] = {"eu-west"};
static const char *const peers_of_us_east[] = {"eu-west", "ap-south"};
static const char *const peers_of_eu_west[] = {"us-east", "ap-south"};

/* ---- one end of a connection ----------------------------------------------------- */

struct side {
    /* set by the test */
    struct tls_ctx *ctx;   /* this module's end, or NULL */
    SSL_CTX *raw;          /* a foreign end (TLS 1.2 only, no ALPN, ...), or NULL */
    const char *peer_site; /* our client: the site it dials */
    const char *plaintext; /* not TLS at all: send these bytes */
    /* set by side_run() */
    int is_server;
    int fd;
    int handshake_ok; /* SSL_accept/SSL_connect returned 1 */
    int check_rc;     /* tls_check_peer() */
    int exchanged;    /* one byte went each way after the handshake */
    int refused;      /* the connection failed somewhere */
    enum tls_reason reason;
    char why[512];   /* tls_explain() */
    char line[1024]; /* what tls_log_refusal() logged */
    char site[TLS_SITE_MAX + 1];
    char alpn[16];
    size_t plain_got; /* plaintext end: bytes the TLS end answered with (OpenSSL 3.0
                       * sends no alert to a non-TLS peer: it just closes) */
};

/* TEST_TLS_VERBOSE=1 shows every line the module logs. */
static void show_line(const char *line)
{
    if (getenv("TEST_TLS_VERBOSE") != NULL) {
        fprintf(stderr, "    log: %s\n", line);
    }
}

static void log_to_side(void *arg, const char *line)
{
    struct side *s = arg;

    snprintf(s->line, sizeof(s->line), "%s", line);
    show_line(line);
}

static void side_refused(struct side *s, SSL *ssl)
{
    unsigned long errs[16];
    size_t n = tls_errors_from_queue(errs, 16);

    s->refused = 1;
    s->reason = tls_explain(ssl, errs, n, s->why, sizeof(s->why));
    tls_log_refusal(ssl, errs, n, s->is_server ? "test client" : "test server", log_to_side, s);
}

static void side_plaintext(struct side *s)
{
    unsigned char buf[4096];
    ssize_t r;

    if (s->is_server) {
        r = read(s->fd, buf, sizeof(buf)); /* the ClientHello, unanswered */
        (void)r;
    }
    if (write(s->fd, s->plaintext, strlen(s->plaintext)) < 0) {
        return;
    }
    shutdown(s->fd, SHUT_WR);
    while ((r = read(s->fd, buf, sizeof(buf))) > 0) {
        s->plain_got += (size_t)r;
    }
}

/* Handshake, tls_check_peer(), then one byte each way: in TLS 1.3 the client finishes
 * its handshake before the server has looked at the client's certificate, so a client
 * learns it was refused only when it next reads. */
static void *side_run(void *arg)
{
    struct side *s = arg;
    unsigned char byte = 0;
    const unsigned char *alpn;
    unsigned int alpn_len = 0;
    SSL *ssl = NULL;
    int rc;

    if (s->plaintext != NULL) {
        side_plaintext(s);
        goto done;
    }
    if (s->ctx != NULL) {
        if (tls_ssl_new(s->ctx, s->peer_site, &ssl) != 0) {
            snprintf(s->why, sizeof(s->why), "tls_ssl_new failed");
            s->refused = 1;
            goto done;
        }
    } else {
        ssl = SSL_new(s->raw);
        if (ssl == NULL) {
            s->refused = 1;
            goto done;
        }
    }
    SSL_set_fd(ssl, s->fd);
    ERR_clear_error();
    rc = s->is_server ? SSL_accept(ssl) : SSL_connect(ssl);
    if (rc != 1) {
        side_refused(s, ssl);
        goto done;
    }
    s->handshake_ok = 1;
    SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
    snprintf(s->alpn, sizeof(s->alpn), "%.*s", (int)alpn_len, alpn_len ? (const char *)alpn : "");
    if (s->ctx != NULL) {
        s->check_rc = tls_check_peer(ssl);
        if (s->check_rc != 0) {
            side_refused(s, ssl);
            goto done;
        }
        tls_peer_site(ssl, s->site, sizeof(s->site));
    }
    if (s->is_server) {
        rc = SSL_write(ssl, "s", 1) == 1 && SSL_read(ssl, &byte, 1) == 1 && byte == 'c';
    } else {
        rc = SSL_read(ssl, &byte, 1) == 1 && byte == 's' && SSL_write(ssl, "c", 1) == 1;
    }
    if (!rc) {
        side_refused(s, ssl);
        goto done;
    }
    s->exchanged = 1;
done:
    SSL_free(ssl);
    close(s->fd);
    ERR_clear_error();
    return NULL;
}

/* Connect server and client over a socketpair and run both to the end. */
static void run_pair(struct side *server, struct side *client)
{
    struct timeval tv = {.tv_sec = 10};
    pthread_t thread;
    int sv[2];

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    for (int i = 0; i < 2; i++) {
        /* A stuck handshake fails the test instead of hanging it. */
        setsockopt(sv[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(sv[i], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    }
    server->is_server = 1;
    server->fd = sv[0];
    client->is_server = 0;
    client->fd = sv[1];
    assert_int_equal(pthread_create(&thread, NULL, side_run, client), 0);
    side_run(server);
    assert_int_equal(pthread_join(thread, NULL), 0);
}

/* ---- contexts -------------------------------------------------------------------- */

static struct tls_ctx *site_ctx(const char *site, int is_server, const char *const *peers, size_t n)
{
    char err[256] = "";
    struct tls_ctx *ctx =
        tls_ctx_create(P("lab/ca.pem"), P("lab/%s.pem", site), P("lab/%s.key", site), is_server,
                       peers, n, err, sizeof(err));
    if (ctx == NULL) {
        fail_msg("tls_ctx_create(%s): %s", site, err);
    }
    return ctx;
}

/* A context of ours with another certificate (expired, other CA, ...). */
static struct tls_ctx *ctx_with_cert(const char *cert, const char *key, int is_server,
                                     const char *const *peers, size_t n)
{
    char err[256] = "";
    struct tls_ctx *ctx =
        tls_ctx_create(P("lab/ca.pem"), cert, key, is_server, peers, n, err, sizeof(err));
    if (ctx == NULL) {
        fail_msg("tls_ctx_create(%s): %s", cert, err);
    }
    return ctx;
}

/* A foreign end: any TLS versions up to max_version, the given ALPN wire list (or
 * none), a certificate or none.  It verifies nothing, so only our end decides. */
static SSL_CTX *raw_ctx(int is_server, int max_version, const char *alpn, size_t alpn_len,
                        const char *cert, const char *key)
{
    SSL_CTX *c = SSL_CTX_new(is_server ? TLS_server_method() : TLS_client_method());

    assert_non_null(c);
    SSL_CTX_set_security_level(c, 0);
    if (max_version != 0) {
        assert_int_equal(SSL_CTX_set_max_proto_version(c, max_version), 1);
    }
    if (alpn != NULL && !is_server) {
        assert_int_equal(
            SSL_CTX_set_alpn_protos(c, (const unsigned char *)alpn, (unsigned int)alpn_len), 0);
    }
    if (cert != NULL) {
        assert_int_equal(SSL_CTX_use_certificate_chain_file(c, cert), 1);
        assert_int_equal(SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM), 1);
    }
    SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
    return c;
}

static void assert_refused(const struct side *s, enum tls_reason reason, const char *text)
{
    if (!s->refused || s->reason != reason || strstr(s->why, text) == NULL) {
        fail_msg("%s: refused=%d reason=%s why='%s', wanted %s '%s'",
                 s->is_server ? "server" : "client", s->refused, tls_reason_name(s->reason), s->why,
                 tls_reason_name(reason), text);
    }
}

/* ---- fixtures -------------------------------------------------------------------- */

static char script[PATH_MAX]; /* deploy/lab-ca.sh, absolute */

static int find_lab_script(void)
{
    static const char *const where[] = {"../../deploy/lab-ca.sh", "deploy/lab-ca.sh"};

    for (size_t i = 0; i < sizeof(where) / sizeof(where[0]); i++) {
        if (access(where[i], R_OK) == 0 && realpath(where[i], script) != NULL) {
            return 0;
        }
    }
    return -1;
}

static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

/* A certificate made by hand, signed by the lab CA: subject and extensions chosen by
 * the test (no SAN, SAN and CN disagreeing, ...). */
static int hand_cert(const char *name, const char *subject, const char *ext)
{
    return sh("(cd '%s' && printf '%%s\\n' 'extendedKeyUsage=serverAuth,clientAuth' '%s' >%s.ext"
              " && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out %s.key"
              " && openssl req -new -key %s.key -subj '%s' -out %s.csr"
              " && openssl x509 -req -in %s.csr -CA lab/ca.pem -CAkey lab/ca.key"
              " -set_serial 0x%x -days 2 -extfile %s.ext -out %s.pem) >/dev/null 2>&1",
              tmpdir, ext, name, name, name, subject, name, name, 0x1000 + (int)strlen(name), name,
              name) == 0
               ? 0
               : -1;
}

static int group_setup(void **state)
{
    const char *base = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";

    (void)state;
    signal(SIGPIPE, SIG_IGN); /* a refused peer may write into a closed socket */
    if (find_lab_script() != 0) {
        fprintf(stderr, "test_tls: deploy/lab-ca.sh not found\n");
        return -1;
    }
    snprintf(tmpdir, sizeof(tmpdir), "%s/test_tls.XXXXXX", base);
    if (mkdtemp(tmpdir) == NULL) {
        return -1;
    }
    snprintf(lab, sizeof(lab), "%s/lab", tmpdir);
    snprintf(other, sizeof(other), "%s/other", tmpdir);
    if (sh("sh %s --expired --other-ca '%s' '%s' us-east eu-west ap-south >/dev/null", script,
           other, lab) != 0) {
        fprintf(stderr, "test_tls: lab-ca.sh failed\n");
        return -1;
    }
    /* CN only (the CN stands in), and SAN naming another site than the CN (SAN wins). */
    if (hand_cert("cn-only", "/CN=eu-west", "subjectKeyIdentifier=hash") != 0 ||
        hand_cert("san-vs-cn", "/CN=eu-west", "subjectAltName=DNS:mallory") != 0 ||
        sh("cd '%s' && cat cn-only.key >mismatch.key && cp lab/eu-west.pem mismatch.pem"
           " && openssl pkey -in lab/us-east.key -aes256 -passout pass:x -out encrypted.key",
           tmpdir) != 0) {
        fprintf(stderr, "test_tls: making hand-made certificates failed\n");
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (tmpdir[0] != '\0') {
        sh("rm -rf '%s'", tmpdir);
    }
    return 0;
}

/* ---- the script ------------------------------------------------------------------ */

static void test_lab_ca_script(void **state)
{
    (void)state;
    /* Every file, the right names, usable both ways, idempotent on a second run. */
    assert_int_equal(sh("cd '%s' && for f in ca us-east eu-west ap-south; do"
                        " test -s lab/$f.pem && test -s lab/$f.key || exit 1; done"
                        " && test -s lab/expired/eu-west.pem && test -s other/ca.pem"
                        " && test -s other/eu-west.pem",
                        tmpdir),
                     0);
    assert_int_equal(sh("openssl verify -CAfile '%s/ca.pem' -purpose sslserver '%s/eu-west.pem'"
                        " >/dev/null && openssl verify -CAfile '%s/ca.pem' -purpose sslclient"
                        " '%s/eu-west.pem' >/dev/null",
                        lab, lab, lab, lab),
                     0);
    assert_int_equal(sh("openssl x509 -in '%s/eu-west.pem' -noout -ext subjectAltName"
                        " | grep -q 'DNS:eu-west' && openssl x509 -in '%s/eu-west.pem' -noout"
                        " -subject | grep -q 'CN *= *eu-west' && openssl pkey -in"
                        " '%s/eu-west.key' -noout -text | grep -q 'prime256v1'",
                        lab, lab, lab),
                     0);
    /* The expired one: our CA, notAfter in the past.  The other CA's: not our CA. */
    assert_int_not_equal(sh("openssl x509 -in '%s/expired/eu-west.pem' -noout -checkend 0"
                            " >/dev/null",
                            lab),
                         0);
    assert_int_equal(sh("openssl verify -no_check_time -CAfile '%s/ca.pem'"
                        " '%s/expired/eu-west.pem' >/dev/null",
                        lab, lab),
                     0);
    assert_int_not_equal(sh("openssl verify -CAfile '%s/ca.pem' '%s/eu-west.pem' >/dev/null "
                            "2>&1",
                            lab, other),
                         0);
    /* A second run changes nothing; a bad site name or no directory is an error. */
    assert_int_equal(sh("cd '%s' && md5sum lab/*.pem lab/*.key lab/expired/* other/* >sums"
                        " && sh '%s' --expired --other-ca other lab us-east eu-west ap-south"
                        " && md5sum -c --quiet sums",
                        tmpdir, script),
                     0);
    assert_int_not_equal(sh("sh '%s' '%s' 'a/b' 2>/dev/null", script, lab), 0);
    assert_int_not_equal(sh("sh '%s' 2>/dev/null", script), 0);
}

/* ---- the good case --------------------------------------------------------------- */

static void test_good_handshake(void **state)
{
    struct side server = {.ctx = site_ctx("us-east", 1, peers_of_us_east, 2)};
    struct side client = {.ctx = site_ctx("eu-west", 0, peers_of_eu_west, 2),
                          .peer_site = "us-east"};

    (void)state;
    run_pair(&server, &client);
    if (!server.exchanged || !client.exchanged) {
        fail_msg("server: %s / client: %s", server.why, client.why);
    }
    assert_int_equal(server.check_rc, 0);
    assert_int_equal(client.check_rc, 0);
    assert_string_equal(server.alpn, "h2");
    assert_string_equal(client.alpn, "h2");
    assert_string_equal(server.site, "eu-west");
    assert_string_equal(client.site, "us-east");
    tls_ctx_destroy(server.ctx);
    tls_ctx_destroy(client.ctx);
}

/* A client that dials nobody in particular accepts any configured peer. */
static void test_good_any_peer_and_case(void **state)
{
    static const char *const upper[] = {"US-East"};
    struct side server = {.ctx = site_ctx("us-east", 1, peers_of_us_east, 2)};
    struct side client = {.ctx = site_ctx("ap-south", 0, upper, 1)};

    (void)state;
    run_pair(&server, &client);
    assert_true(server.exchanged && client.exchanged);
    assert_string_equal(server.site, "ap-south");
    assert_string_equal(client.site, "US-East"); /* spelled as configured */
    tls_ctx_destroy(server.ctx);
    tls_ctx_destroy(client.ctx);
}

/* ---- the five refusals (and the ALPN one), server side ---------------------------- */

static void test_refuse_plaintext(void **state)
{
    static const char *const inputs[] = {
        "stats\r\n",                                /* memcached text protocol */
        "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", /* HTTP/1 */
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",         /* HTTP/2 without TLS (h2c) */
        "CONNECT x:443 HTTP/1.1\r\n\r\n",           /* a proxy request */
    };
    struct tls_ctx *ctx = site_ctx("us-east", 1, peers_of_us_east, 2);

    (void)state;
    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        struct side server = {.ctx = ctx};
        struct side client = {.plaintext = inputs[i]};

        run_pair(&server, &client);
        assert_refused(&server, TLS_REASON_PLAINTEXT, "plaintext or not TLS");
        assert_string_equal(server.why, "plaintext or not TLS");
        assert_non_null(strstr(server.line, "TLS handshake with test client refused: "
                                            "plaintext or not TLS"));
    }
    tls_ctx_destroy(ctx);
}

static void test_refuse_tls12_client(void **state)
{
    static const char h2[] = "\x02h2";
    struct tls_ctx *ctx = site_ctx("us-east", 1, peers_of_us_east, 2);
    /* With ALPN h2, and without: the version is the first fault named either way. */
    SSL_CTX *raws[2] = {
        raw_ctx(0, TLS1_2_VERSION, h2, 3, P("lab/eu-west.pem"), P("lab/eu-west.key")),
        raw_ctx(0, TLS1_2_VERSION, NULL, 0, P("lab/eu-west.pem"), P("lab/eu-west.key")),
    };

    (void)state;
    for (int i = 0; i < 2; i++) {
        struct side server = {.ctx = ctx};
        struct side client = {.raw = raws[i]};

        run_pair(&server, &client);
        assert_refused(&server, TLS_REASON_OLD_VERSION, "TLS version below 1.3");
        assert_string_equal(server.why, "TLS version below 1.3");
        assert_refused(&client, TLS_REASON_OLD_VERSION, "TLS version below 1.3 (alert from peer)");
        SSL_CTX_free(raws[i]);
    }
    tls_ctx_destroy(ctx);
}

static void test_refuse_other_ca(void **state)
{
    struct side server = {.ctx = site_ctx("us-east", 1, peers_of_us_east, 2)};
    struct side client = {.ctx = ctx_with_cert(P("other/eu-west.pem"), P("other/eu-west.key"), 0,
                                               peers_of_eu_west, 2),
                          .peer_site = "us-east"};

    (void)state;
    run_pair(&server, &client);
    assert_refused(&server, TLS_REASON_UNKNOWN_CA, "certificate from an unknown CA");
    assert_string_equal(server.why, "certificate from an unknown CA");
    assert_non_null(strstr(server.line, "[peer certificate: eu-west]"));
    assert_true(client.handshake_ok); /* TLS 1.3: the client hears it on its next read */
    assert_refused(&client, TLS_REASON_UNKNOWN_CA,
                   "certificate from an unknown CA (alert from peer)");
    tls_ctx_destroy(server.ctx);
    tls_ctx_destroy(client.ctx);
}

static void test_refuse_expired(void **state)
{
    struct side server = {.ctx = site_ctx("us-east", 1, peers_of_us_east, 2)};
    struct side client = {.ctx =
                              ctx_with_cert(P("lab/expired/eu-west.pem"),
                                            P("lab/expired/eu-west.key"), 0, peers_of_eu_west, 2),
                          .peer_site = "us-east"};

    (void)state;
    run_pair(&server, &client);
    assert_refused(&server, TLS_REASON_EXPIRED, "certificate expired");
    assert_string_equal(server.why, "certificate expired");
    assert_refused(&client, TLS_REASON_EXPIRED, "certificate expired (alert from peer)");
    tls_ctx_destroy(server.ctx);
    tls_ctx_destroy(client.ctx);
}

static void test_refuse_not_a_peer(void **state)
{
    /* ap-south's certificate is valid, but us-east has only eu-west as a peer. */
    struct side server = {.ctx = site_ctx("us-east", 1, only_eu_west, 1)};
    struct side client = {.ctx = site_ctx("ap-south", 0, peers_of_eu_west, 2),
                          .peer_site = "us-east"};

    (void)state;
    run_pair(&server, &client);
    assert_refused(&server, TLS_REASON_NOT_A_PEER,
                   "certificate names ap-south, which is not a configured peer");
    assert_string_equal(server.why, "certificate names ap-south, which is not a configured peer");
    assert_string_equal(server.line, "TLS handshake with test client refused: certificate names "
                                     "ap-south, which is not a configured peer");
    assert_refused(&client, TLS_REASON_PEER_ALERT, "alert from peer: bad certificate");
    tls_ctx_destroy(server.ctx);
    tls_ctx_destroy(client.ctx);
}

static void test_refuse_no_alpn(void **state)
{
    static const char http11[] = "\x08http/1.1";
    struct tls_ctx *ctx = site_ctx("us-east", 1, peers_of_us_east, 2);
    /* No ALPN extension at all, then a list without h2. */
    SSL_CTX *raws[2] = {
        raw_ctx(0, 0, NULL, 0, P("lab/eu-west.pem"), P("lab/eu-west.key")),
        raw_ctx(0, 0, http11, 9, P("lab/eu-west.pem"), P("lab/eu-west.key")),
    };

    (void)state;
    for (int i = 0; i < 2; i++) {
        struct side server = {.ctx = ctx};
        struct side client = {.raw = raws[i]};

        run_pair(&server, &client);
        assert_refused(&server, TLS_REASON_NO_ALPN, "no ALPN h2");
        assert_string_equal(server.why, "no ALPN h2");
        assert_refused(&client, TLS_REASON_NO_ALPN, "no ALPN h2 (alert from peer)");
        SSL_CTX_free(raws[i]);
    }
    tls_ctx_destroy(ctx);
}

static void test_refuse_no_client_cert(void **state)
{
    static const char h2[] = "\x02h2";
    struct side server = {.ctx = site_ctx("us-east", 1, peers_of_us_east, 2)};
    struct side client = {.raw = raw_ctx(0, 0, h2, 3, NULL, NULL)};

    (void)state;
    run_pair(&server, &client);
    assert_refused(&server, TLS_REASON_NO_CERT, "no peer certificate");
    assert_refused(&client, TLS_REASON_NO_CERT, "no peer certificate (alert from peer)");
    SSL_CTX_free(client.raw);
    tls_ctx_destroy(server.ctx);
}

/* The CN counts only when the certificate has no SAN DNS name. */
static void test_cn_fallback_and_san_precedence(void **state)
{
    struct tls_ctx *server_ctx = site_ctx("us-east", 1, peers_of_us_east, 2);
    struct side server = {.ctx = server_ctx};
    struct side client = {
        .ctx = ctx_with_cert(P("cn-only.pem"), P("cn-only.key"), 0, peers_of_eu_west, 2),
        .peer_site = "us-east"};

    (void)state;
    run_pair(&server, &client);
    assert_true(server.exchanged && client.exchanged);
    assert_string_equal(server.site, "eu-west");
    tls_ctx_destroy(client.ctx);

    struct side server2 = {.ctx = server_ctx};
    struct side client2 = {
        .ctx = ctx_with_cert(P("san-vs-cn.pem"), P("san-vs-cn.key"), 0, peers_of_eu_west, 2)};
    run_pair(&server2, &client2);
    assert_refused(&server2, TLS_REASON_NOT_A_PEER,
                   "certificate names mallory, which is not a configured peer");
    tls_ctx_destroy(client2.ctx);
    tls_ctx_destroy(server_ctx);
}

/* ---- the same checks made by our client ------------------------------------------- */

static void test_client_refuses(void **state)
{
    static const char h2[] = "\x02h2";
    struct tls_ctx *client_ctx = site_ctx("eu-west", 0, peers_of_eu_west, 2);
    struct {
        SSL_CTX *raw;
        struct tls_ctx *ctx;
        const char *plaintext;
        const char *dial;
        enum tls_reason reason;
        const char *text;
    } cases[] = {
        {.plaintext = "ERROR\r\n",
         .dial = "us-east",
         .reason = TLS_REASON_PLAINTEXT,
         .text = "plaintext or not TLS"},
        {.raw = raw_ctx(1, TLS1_2_VERSION, NULL, 0, P("lab/us-east.pem"), P("lab/us-east.key")),
         .dial = "us-east",
         .reason = TLS_REASON_OLD_VERSION,
         .text = "TLS version below 1.3"},
        {.raw = raw_ctx(1, 0, NULL, 0, P("other/us-east.pem"), P("other/us-east.key")),
         .dial = "us-east",
         .reason = TLS_REASON_UNKNOWN_CA,
         .text = "certificate from an unknown CA"},
        {.raw = raw_ctx(1, 0, NULL, 0, P("lab/expired/us-east.pem"), P("lab/expired/us-east.key")),
         .dial = "us-east",
         .reason = TLS_REASON_EXPIRED,
         .text = "certificate expired"},
        /* A configured peer, but not the one dialled. */
        {.ctx = site_ctx("ap-south", 1, only_eu_west, 1),
         .dial = "us-east",
         .reason = TLS_REASON_WRONG_PEER,
         .text = "certificate names ap-south, expected us-east"},
        /* Not dialling anyone in particular: us-east is simply not a peer of this one. */
        {.raw = raw_ctx(1, 0, NULL, 0, P("lab/us-east.pem"), P("lab/us-east.key")),
         .dial = NULL,
         .reason = TLS_REASON_NOT_A_PEER,
         .text = "certificate names us-east, which is not a configured peer"},
        /* A TLS 1.3 server that ignores ALPN: only tls_check_peer() can tell. */
        {.raw = raw_ctx(1, 0, h2, 3, P("lab/us-east.pem"), P("lab/us-east.key")),
         .dial = "us-east",
         .reason = TLS_REASON_NO_ALPN,
         .text = "no ALPN h2"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tls_ctx *cctx = client_ctx;
        static const char *const not_us_east[] = {"ap-south", "eu-west"};
        struct side server = {
            .raw = cases[i].raw, .ctx = cases[i].ctx, .plaintext = cases[i].plaintext};
        struct side client;

        if (cases[i].dial == NULL) {
            cctx = site_ctx("eu-west", 0, not_us_east, 2);
        }
        client = (struct side){.ctx = cctx, .peer_site = cases[i].dial};
        run_pair(&server, &client);
        assert_refused(&client, cases[i].reason, cases[i].text);
        if (cases[i].reason == TLS_REASON_NO_ALPN) {
            assert_true(client.handshake_ok);
            assert_int_equal(client.check_rc, -TLS_ERR_REFUSED);
        }
        if (cctx != client_ctx) {
            tls_ctx_destroy(cctx);
        }
        SSL_CTX_free(cases[i].raw);
        tls_ctx_destroy(cases[i].ctx);
    }
    tls_ctx_destroy(client_ctx);
}

/* ---- set-up errors, reload, small API ----------------------------------------------- */

static void test_create_errors(void **state)
{
    static const char *const bad_names[] = {"eu west"};
    char err[256];

    (void)state;
    err[0] = '\0';
    assert_null(tls_ctx_create(P("nope/ca.pem"), P("lab/us-east.pem"), P("lab/us-east.key"), 1,
                               peers_of_us_east, 2, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot load CA"));
    assert_non_null(strstr(err, "nope/ca.pem"));
    assert_null(tls_ctx_create(P("lab/ca.pem"), P("lab/none.pem"), P("lab/us-east.key"), 1,
                               peers_of_us_east, 2, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot load certificate"));
    assert_null(tls_ctx_create(P("lab/ca.pem"), P("lab/us-east.pem"), P("lab/none.key"), 1,
                               peers_of_us_east, 2, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot load key"));
    assert_null(tls_ctx_create(P("lab/ca.pem"), P("mismatch.pem"), P("mismatch.key"), 0,
                               peers_of_us_east, 2, err, sizeof(err)));
    assert_non_null(strstr(err, "does not belong"));
    /* A key behind a passphrase fails at once; it never prompts. */
    assert_null(tls_ctx_create(P("lab/ca.pem"), P("lab/us-east.pem"), P("encrypted.key"), 1,
                               peers_of_us_east, 2, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot load key"));
    assert_null(tls_ctx_create(P("nope.pem"), P("lab/us-east.pem"), P("lab/us-east.key"), 1,
                               peers_of_us_east, 2, err, sizeof(err)));
    assert_non_null(strstr(err, "No such file or directory"));
    assert_null(tls_ctx_create(P("lab/ca.pem"), P("lab/us-east.pem"), P("lab/us-east.key"), 1,
                               bad_names, 1, err, sizeof(err)));
    assert_non_null(strstr(err, "bad peer site name 'eu west'"));
    assert_null(tls_ctx_create(P("lab/ca.pem"), P("lab/us-east.pem"), P("lab/us-east.key"), 1,
                               peers_of_us_east, 0, err, sizeof(err)));
    assert_null(tls_ctx_create(NULL, P("lab/us-east.pem"), P("lab/us-east.key"), 1,
                               peers_of_us_east, 2, NULL, 0));
    tls_ctx_destroy(NULL);
}

static void test_api_arguments(void **state)
{
    struct tls_ctx *server = site_ctx("us-east", 1, peers_of_us_east, 2);
    struct tls_ctx *client = site_ctx("eu-west", 0, peers_of_eu_west, 2);
    struct event_base *base = event_base_new();
    struct bufferevent *bev = NULL;
    char site[8];
    SSL *ssl = NULL;

    (void)state;
    assert_int_equal(tls_ctx_is_server(server), 1);
    assert_int_equal(tls_ctx_is_server(client), 0);
    assert_int_equal(tls_ssl_new(server, "eu-west", &ssl), -TLS_ERR_ARG); /* server: no dial */
    assert_int_equal(tls_ssl_new(client, "mallory", &ssl), -TLS_ERR_ARG); /* not a peer */
    assert_int_equal(tls_ssl_new(client, "bad name", &ssl), -TLS_ERR_ARG);
    assert_int_equal(tls_bev_accept(client, base, 3, 0, &bev), -TLS_ERR_ARG);
    assert_int_equal(tls_bev_connect(server, base, -1, "eu-west", 0, &bev), -TLS_ERR_ARG);
    assert_null(bev);
    assert_int_equal(tls_ssl_new(client, "us-east", &ssl), 0);
    assert_int_equal(tls_check_peer(ssl), -TLS_ERR_NOT_READY);
    assert_int_equal(tls_peer_site(ssl, site, sizeof(site)), -TLS_ERR_NOT_READY);
    assert_int_equal(tls_check_peer(NULL), -TLS_ERR_ARG);
    SSL_free(ssl);
    /* A client bufferevent that will connect later. */
    assert_int_equal(tls_bev_connect(client, base, -1, "us-east", 0, &bev), 0);
    assert_non_null(bufferevent_openssl_get_ssl(bev));
    bufferevent_free(bev);

    assert_string_equal(tls_reason_name(TLS_REASON_PLAINTEXT), "plaintext");
    assert_string_equal(tls_reason_name(TLS_REASON_NOT_A_PEER), "not_a_peer");
    assert_string_equal(tls_reason_name(TLS_REASON_MAX), "?");
    for (int r = 0; r < TLS_REASON_MAX; r++) {
        assert_true(strcmp(tls_reason_name((enum tls_reason)r), "?") != 0);
    }
    for (int e = 0; e < TLS_ERR_MAX; e++) {
        assert_non_null(tls_strerror(-e));
    }
    assert_string_equal(tls_strerror(-TLS_ERR_FILE), "cannot load CA, certificate or key");
    assert_string_equal(tls_strerror(-999), "unknown error");

    char why[128];
    assert_int_equal(tls_explain(NULL, NULL, 0, why, sizeof(why)), TLS_REASON_CLOSED);
    assert_string_equal(why, "connection closed during handshake");
    assert_int_equal(tls_log_refusal(NULL, NULL, 0, NULL, NULL, NULL), TLS_REASON_CLOSED);

    event_base_free(base);
    tls_ctx_destroy(server);
    tls_ctx_destroy(client);
}

static void test_reload(void **state)
{
    static const char *const only_ap_south[] = {"ap-south"};
    struct tls_ctx *server = site_ctx("us-east", 1, only_eu_west, 1);
    struct tls_ctx *eu = site_ctx("eu-west", 0, peers_of_eu_west, 2);
    struct tls_ctx *ap = site_ctx("ap-south", 0, peers_of_eu_west, 2);
    char err[256];

    (void)state;
    /* A failed reload changes nothing. */
    assert_int_equal(tls_ctx_reload(server, P("lab/ca.pem"), P("lab/none.pem"),
                                    P("lab/us-east.key"), only_ap_south, 1, err, sizeof(err)),
                     -TLS_ERR_FILE);
    assert_non_null(strstr(err, "cannot load certificate"));
    assert_int_equal(tls_ctx_reload(server, P("lab/ca.pem"), P("lab/us-east.pem"),
                                    P("lab/us-east.key"), peers_of_us_east, 0, err, sizeof(err)),
                     -TLS_ERR_ARG);
    {
        struct side s = {.ctx = server}, c = {.ctx = eu, .peer_site = "us-east"};
        run_pair(&s, &c);
        assert_true(s.exchanged);
        assert_string_equal(s.site, "eu-west");
    }
    /* New peer list: eu-west is out, ap-south is in. */
    assert_int_equal(tls_ctx_reload(server, P("lab/ca.pem"), P("lab/us-east.pem"),
                                    P("lab/us-east.key"), only_ap_south, 1, err, sizeof(err)),
                     0);
    {
        struct side s = {.ctx = server}, c = {.ctx = eu, .peer_site = "us-east"};
        run_pair(&s, &c);
        assert_refused(&s, TLS_REASON_NOT_A_PEER, "certificate names eu-west, which is not");
    }
    {
        struct side s = {.ctx = server}, c = {.ctx = ap, .peer_site = "us-east"};
        run_pair(&s, &c);
        assert_true(s.exchanged);
        assert_string_equal(s.site, "ap-south");
    }
    /* Same names (NULL), new certificate: the server now presents an expired one. */
    assert_int_equal(tls_ctx_reload(server, P("lab/ca.pem"), P("lab/expired/us-east.pem"),
                                    P("lab/expired/us-east.key"), NULL, 0, err, sizeof(err)),
                     0);
    {
        struct side s = {.ctx = server}, c = {.ctx = ap, .peer_site = "us-east"};
        run_pair(&s, &c);
        assert_refused(&c, TLS_REASON_EXPIRED, "certificate expired");
        assert_refused(&s, TLS_REASON_EXPIRED, "certificate expired (alert from peer)");
    }
    tls_ctx_destroy(server);
    tls_ctx_destroy(eu);
    tls_ctx_destroy(ap);
}

/* An SSL made before a reload keeps the settings it was made under. */
static void test_reload_keeps_open_connections(void **state)
{
    static const char *const only_ap_south[] = {"ap-south"};
    struct tls_ctx *server = site_ctx("us-east", 1, only_eu_west, 1);
    struct tls_ctx *eu = site_ctx("eu-west", 0, peers_of_eu_west, 2);
    struct side s = {.ctx = NULL}, c = {.ctx = eu, .peer_site = "us-east"};
    char err[256];
    SSL *early;

    (void)state;
    assert_int_equal(tls_ssl_new(server, NULL, &early), 0);
    assert_int_equal(tls_ctx_reload(server, P("lab/ca.pem"), P("lab/us-east.pem"),
                                    P("lab/us-east.key"), only_ap_south, 1, err, sizeof(err)),
                     0);
    tls_ctx_destroy(server); /* the SSL outlives the context */
    s.raw = SSL_get_SSL_CTX(early);
    SSL_CTX_up_ref(s.raw);
    SSL_free(early);
    /* A raw side with the pre-reload SSL_CTX: it still accepts eu-west. */
    run_pair(&s, &c);
    assert_true(s.exchanged && c.exchanged);
    SSL_CTX_free(s.raw);
    tls_ctx_destroy(eu);
}

/* Reloads on one thread while handshakes run on others: every handshake either
 * succeeds under the old or the new settings, nothing crashes or leaks. */
struct reloader {
    struct tls_ctx *ctx;
    char ca[600], cert[600], key[600]; /* P() is not for two threads */
    int rounds;
    int failures;
};

static void *reload_loop(void *arg)
{
    struct reloader *r = arg;
    char err[256];

    for (int i = 0; i < r->rounds; i++) {
        if (tls_ctx_reload(r->ctx, r->ca, r->cert, r->key, i % 2 ? peers_of_us_east : only_eu_west,
                           i % 2 ? 2 : 1, err, sizeof(err)) != 0) {
            r->failures++;
        }
    }
    return NULL;
}

static void test_reload_while_connecting(void **state)
{
    struct tls_ctx *server = site_ctx("us-east", 1, only_eu_west, 1);
    struct tls_ctx *eu = site_ctx("eu-west", 0, peers_of_eu_west, 2);
    struct reloader r = {.ctx = server, .rounds = 30};
    pthread_t thread;

    (void)state;
    snprintf(r.ca, sizeof(r.ca), "%s", P("lab/ca.pem"));
    snprintf(r.cert, sizeof(r.cert), "%s", P("lab/us-east.pem"));
    snprintf(r.key, sizeof(r.key), "%s", P("lab/us-east.key"));
    assert_int_equal(pthread_create(&thread, NULL, reload_loop, &r), 0);
    for (int i = 0; i < 15; i++) {
        struct side s = {.ctx = server}, c = {.ctx = eu, .peer_site = "us-east"};

        run_pair(&s, &c);
        assert_true(s.exchanged && c.exchanged); /* eu-west is a peer in both lists */
        assert_string_equal(s.site, "eu-west");
    }
    assert_int_equal(pthread_join(thread, NULL), 0);
    assert_int_equal(r.failures, 0);
    tls_ctx_destroy(server);
    tls_ctx_destroy(eu);
}

/* ---- bufferevent_openssl on one event loop ----------------------------------------- */

struct bev_end {
    struct bufferevent *bev;
    struct event_base *base;
    int *pending;
    int done;
    int connected;
    int check_rc;
    int got_byte;
    int refused;
    enum tls_reason reason;
    char site[TLS_SITE_MAX + 1];
    char line[1024];
};

static void bev_log(void *arg, const char *line)
{
    struct bev_end *e = arg;

    snprintf(e->line, sizeof(e->line), "%s", line);
    show_line(line);
}

static void bev_finish(struct bev_end *e)
{
    if (!e->done) {
        e->done = 1;
        if (--*e->pending == 0) {
            event_base_loopexit(e->base, NULL);
        }
    }
}

static void bev_read_cb(struct bufferevent *bev, void *arg)
{
    struct bev_end *e = arg;
    char c;

    while (bufferevent_read(bev, &c, 1) == 1) {
        e->got_byte = c == 'x';
    }
    bev_finish(e);
}

static void bev_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct bev_end *e = arg;
    SSL *ssl = bufferevent_openssl_get_ssl(bev);

    if (what & BEV_EVENT_CONNECTED) {
        e->connected = 1;
        e->check_rc = tls_check_peer(ssl);
        if (e->check_rc != 0) {
            e->refused = 1;
            e->reason = tls_log_refusal(ssl, NULL, 0, "bev peer", bev_log, e);
            bev_finish(e);
            return;
        }
        tls_peer_site(ssl, e->site, sizeof(e->site));
        bufferevent_write(bev, "x", 1);
        return;
    }
    if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) {
        unsigned long errs[8];
        size_t n = tls_errors_from_bev(bev, errs, 8);

        e->refused = 1;
        e->reason = tls_log_refusal(ssl, errs, n, "bev peer", bev_log, e);
        bev_finish(e);
    }
}

static void bev_pair(struct tls_ctx *server_ctx, struct tls_ctx *client_ctx, const char *dial,
                     struct bev_end *server, struct bev_end *client)
{
    struct event_base *base = event_base_new();
    struct timeval limit = {.tv_sec = 10};
    int pending = 2;
    int sv[2];

    assert_non_null(base);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    evutil_make_socket_nonblocking(sv[0]);
    evutil_make_socket_nonblocking(sv[1]);
    assert_int_equal(tls_bev_accept(server_ctx, base, sv[0], 0, &server->bev), 0);
    assert_int_equal(tls_bev_connect(client_ctx, base, sv[1], dial, 0, &client->bev), 0);
    struct bev_end *ends[2] = {server, client};
    for (int i = 0; i < 2; i++) {
        ends[i]->base = base;
        ends[i]->pending = &pending;
        bufferevent_setcb(ends[i]->bev, bev_read_cb, NULL, bev_event_cb, ends[i]);
        bufferevent_enable(ends[i]->bev, EV_READ | EV_WRITE);
    }
    event_base_loopexit(base, &limit);
    event_base_dispatch(base);
    assert_int_equal(pending, 0);
    bufferevent_free(server->bev); /* closes the fds, frees the SSLs */
    bufferevent_free(client->bev);
    event_base_free(base);
}

static void test_bev_good_and_refused(void **state)
{
    struct tls_ctx *server_ctx = site_ctx("us-east", 1, peers_of_us_east, 2);
    struct tls_ctx *eu = site_ctx("eu-west", 0, peers_of_eu_west, 2);
    struct tls_ctx *expired = ctx_with_cert(P("lab/expired/eu-west.pem"),
                                            P("lab/expired/eu-west.key"), 0, peers_of_eu_west, 2);
    struct bev_end s = {0}, c = {0};

    (void)state;
    bev_pair(server_ctx, eu, "us-east", &s, &c);
    assert_true(s.connected && c.connected);
    assert_true(s.got_byte && c.got_byte);
    assert_string_equal(s.site, "eu-west");
    assert_string_equal(c.site, "us-east");

    memset(&s, 0, sizeof(s));
    memset(&c, 0, sizeof(c));
    bev_pair(server_ctx, expired, "us-east", &s, &c);
    assert_true(s.refused);
    assert_int_equal(s.reason, TLS_REASON_EXPIRED);
    assert_string_equal(s.line, "TLS handshake with bev peer refused: certificate expired "
                                "[peer certificate: eu-west]");
    assert_true(c.refused);
    assert_int_equal(c.reason, TLS_REASON_EXPIRED);
    assert_non_null(strstr(c.line, "refused: certificate expired (alert from peer)"));

    tls_ctx_destroy(server_ctx);
    tls_ctx_destroy(eu);
    tls_ctx_destroy(expired);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lab_ca_script),
        cmocka_unit_test(test_good_handshake),
        cmocka_unit_test(test_good_any_peer_and_case),
        cmocka_unit_test(test_refuse_plaintext),
        cmocka_unit_test(test_refuse_tls12_client),
        cmocka_unit_test(test_refuse_other_ca),
        cmocka_unit_test(test_refuse_expired),
        cmocka_unit_test(test_refuse_not_a_peer),
        cmocka_unit_test(test_refuse_no_alpn),
        cmocka_unit_test(test_refuse_no_client_cert),
        cmocka_unit_test(test_cn_fallback_and_san_precedence),
        cmocka_unit_test(test_client_refuses),
        cmocka_unit_test(test_create_errors),
        cmocka_unit_test(test_api_arguments),
        cmocka_unit_test(test_reload),
        cmocka_unit_test(test_reload_keeps_open_connections),
        cmocka_unit_test(test_reload_while_connecting),
        cmocka_unit_test(test_bev_good_and_refused),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
