/*
 * test_config — gateway/base/config.c: minimal and full configs field by field, defaults,
 * twemproxy server lines, host:port parsing, and a table of broken configs each with the
 * exact "NAME:LINE: message" it must produce.  Runs with cwd tests/unit (make unit).
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "gateway/base/config.h"

static char err[512];

static struct gw_config *load(const char *yaml)
{
    struct gw_config *cfg = NULL;

    err[0] = '\0';
    if (gw_config_load_string(yaml, strlen(yaml), "t.yml", &cfg, err, sizeof(err)) != 0) {
        assert_null(cfg);
        assert_true(err[0] != '\0');
        return NULL;
    }
    assert_non_null(cfg);
    return cfg;
}

static struct gw_config *load_ok(const char *yaml)
{
    struct gw_config *cfg = load(yaml);

    if (cfg == NULL) {
        fail_msg("expected a valid config, got: %s", err);
    }
    return cfg;
}

#define MINIMAL                                                                                    \
    "site: us-east\n"                                                                              \
    "listen: 127.0.0.1:11311\n"                                                                    \
    "pool:\n"                                                                                      \
    "  servers:\n"                                                                                 \
    "    - 127.0.0.1:21211:1\n"

static void test_minimal_and_defaults(void **state)
{
    struct gw_config *cfg = load_ok(MINIMAL);

    (void)state;
    assert_string_equal(cfg->path, "t.yml");
    assert_string_equal(cfg->site, "us-east");
    assert_int_equal(cfg->gateway_id, 0);
    assert_string_equal(cfg->listen.host, "127.0.0.1");
    assert_int_equal(cfg->listen.port, 11311);
    assert_null(cfg->admin.host);
    assert_int_equal(cfg->threads, 2);
    assert_int_equal(cfg->log_level, GW_LOG_INFO);
    assert_int_equal(cfg->max_connections, 10000);
    assert_int_equal(cfg->max_request_bytes, 1048576);
    assert_int_equal(cfg->max_value_bytes, 1048576);

    assert_int_equal(cfg->pool.hash, RING_HASH_MD5);
    assert_int_equal(cfg->pool.nservers, 1);
    assert_string_equal(cfg->pool.servers[0].addr.host, "127.0.0.1");
    assert_int_equal(cfg->pool.servers[0].addr.port, 21211);
    assert_int_equal(cfg->pool.servers[0].weight, 1);
    assert_null(cfg->pool.servers[0].name);
    assert_string_equal(cfg->pool.servers[0].label, "127.0.0.1:21211");
    assert_string_equal(cfg->pool.servers[0].ring_name, "127.0.0.1:21211");
    assert_int_equal(cfg->pool.servers[0].line, 5);
    assert_int_equal(cfg->pool.timeout_ms, 250);
    assert_int_equal(cfg->pool.connect_timeout_ms, 250);
    assert_int_equal(cfg->pool.failure_limit, 3);
    assert_int_equal(cfg->pool.retry_timeout_ms, 2000);
    assert_int_equal(cfg->pool.connections, 1);

    assert_false(cfg->wan.enabled);
    assert_null(cfg->wan.listen.host);
    assert_null(cfg->wan.tls_ca);
    assert_null(cfg->wan.tls_cert);
    assert_null(cfg->wan.tls_key);
    assert_null(cfg->wan.spool_dir);
    assert_int_equal(cfg->wan.spool_max_bytes, 1073741824ull);
    assert_int_equal(cfg->wan.spool_fsync, GW_FSYNC_EVERYSEC);
    assert_null(cfg->wan.peers);
    assert_int_equal(cfg->wan.npeers, 0);

    assert_true(cfg->failover.local_healthy_fraction == 0.5);
    assert_int_equal(cfg->failover.hold_down_ms, 5000);
    assert_int_equal(cfg->failover.warmup_max_time_ms, 600000);
    assert_true(cfg->failover.warmup_hit_ratio == 0.9);

    assert_int_equal(cfg->replication.nrules, 1);
    assert_string_equal(cfg->replication.rules[0].prefix, "");
    assert_int_equal(cfg->replication.rules[0].mode, GW_REPL_COPY);
    assert_int_equal(cfg->replication.rules[0].line, 0);
    assert_false(cfg->replication.flush);
    assert_int_equal(cfg->replication.tombstone_ttl_s, 86400);
    assert_true(cfg->replication.auto_backfill);
    assert_int_equal(cfg->replication.max_clock_skew_ms, 1000);
    gw_config_destroy(cfg);
}

/* The example of DESIGN.md, plus every key it leaves out, each set away from its default. */
static const char full_config[] =
    "site: us-east                # this site's name\n"                        /* 1 */
    "gateway_id: 65535\n"                                                      /* 2 */
    "listen: 127.0.0.1:11311\n"                                                /* 3 */
    "admin: 127.0.0.1:9311\n"                                                  /* 4 */
    "threads: 4\n"                                                             /* 5 */
    "log_level: debug\n"                                                       /* 6 */
    "max_connections: 500\n"                                                   /* 7 */
    "max_request_bytes: 65536\n"                                               /* 8 */
    "max_value_bytes: 2097152\n"                                               /* 9 */
    "pool:\n"                                                                  /* 10 */
    "  distribution: ketama\n"                                                 /* 11 */
    "  hash: fnv1a_64\n"                                                       /* 12 */
    "  servers:\n"                                                             /* 13 */
    "    - 127.0.0.1:21211:1\n"                                                /* 14 */
    "    - 127.0.0.1:21212:3 cache-b\n"                                        /* 15 */
    "    - cache-c.internal:11211:2\n"                                         /* 16 */
    "    - \"[::1]:21213:1\"\n"                                                /* 17 */
    "  timeout: 300\n"                                                         /* 18 */
    "  connect_timeout: 1000\n"                                                /* 19 */
    "  failure_limit: 5\n"                                                     /* 20 */
    "  retry_timeout: 3000\n"                                                  /* 21 */
    "  connections: 2\n"                                                       /* 22 */
    "wan:\n"                                                                   /* 23 */
    "  listen: 127.0.0.1:7311\n"                                               /* 24 */
    "  tls: { ca: lab/ca.pem, cert: lab/us-east.pem, key: lab/us-east.key }\n" /* 25 */
    "  spool: { dir: /var/lib/geogate/us-east-1, max_bytes: 2147483648, fsync: always }\n"
    "  peers:\n"                                                          /* 27 */
    "    - { site: eu-west, addresses: [127.0.0.1:7312], priority: 1 }\n" /* 28 */
    "    - site: ap-south\n"                                              /* 29 */
    "      addresses:\n"                                                  /* 30 */
    "        - 10.1.0.1:7311\n"                                           /* 31 */
    "        - 10.1.0.2:7311\n"                                           /* 32 */
    "      priority: 2\n"                                                 /* 33 */
    "failover:\n"                                                         /* 34 */
    "  local_healthy_fraction: 0.25\n"                                    /* 35 */
    "  hold_down: 7000\n"                                                 /* 36 */
    "  warmup: { max_time: 120000, hit_ratio: 0.75 }\n"                   /* 37 */
    "replication:\n"                                                      /* 38 */
    "  rules:                     # first matching prefix wins\n"         /* 39 */
    "    - { prefix: \"tmp:\", mode: none }\n"                            /* 40 */
    "    - { prefix: \"session:\", mode: invalidate }\n"                  /* 41 */
    "    - { prefix: \"\",     mode: copy }\n"                            /* 42 */
    "  flush: true\n"                                                     /* 43 */
    "  tombstone_ttl: 3600\n"                                             /* 44 */
    "  auto_backfill: no\n"                                               /* 45 */
    "  max_clock_skew: 250\n";                                            /* 46 */

static void test_full(void **state)
{
    struct gw_config *cfg = load_ok(full_config);
    const struct gw_server_conf *s = cfg->pool.servers;
    const struct gw_peer_conf *p = cfg->wan.peers;
    const struct gw_rule_conf *r = cfg->replication.rules;

    (void)state;
    assert_string_equal(cfg->site, "us-east");
    assert_int_equal(cfg->gateway_id, 65535);
    assert_string_equal(cfg->listen.host, "127.0.0.1");
    assert_int_equal(cfg->listen.port, 11311);
    assert_string_equal(cfg->admin.host, "127.0.0.1");
    assert_int_equal(cfg->admin.port, 9311);
    assert_int_equal(cfg->threads, 4);
    assert_int_equal(cfg->log_level, GW_LOG_DEBUG);
    assert_int_equal(cfg->max_connections, 500);
    assert_int_equal(cfg->max_request_bytes, 65536);
    assert_int_equal(cfg->max_value_bytes, 2097152);

    assert_int_equal(cfg->pool.hash, RING_HASH_FNV1A_64);
    assert_int_equal(cfg->pool.nservers, 4);
    assert_string_equal(s[0].addr.host, "127.0.0.1");
    assert_int_equal(s[0].addr.port, 21211);
    assert_int_equal(s[0].weight, 1);
    assert_null(s[0].name);
    assert_string_equal(s[0].label, "127.0.0.1:21211");
    assert_string_equal(s[0].ring_name, "127.0.0.1:21211");
    assert_int_equal(s[0].line, 14);
    assert_string_equal(s[1].addr.host, "127.0.0.1");
    assert_int_equal(s[1].addr.port, 21212);
    assert_int_equal(s[1].weight, 3);
    assert_string_equal(s[1].name, "cache-b");
    assert_string_equal(s[1].label, "127.0.0.1:21212");
    assert_string_equal(s[1].ring_name, "cache-b");
    assert_int_equal(s[1].line, 15);
    assert_string_equal(s[2].addr.host, "cache-c.internal");
    assert_int_equal(s[2].addr.port, 11211);
    assert_int_equal(s[2].weight, 2);
    assert_null(s[2].name);
    assert_string_equal(s[2].label, "cache-c.internal:11211");
    assert_string_equal(s[2].ring_name, "cache-c.internal"); /* twemproxy drops :11211 */
    assert_int_equal(s[2].line, 16);
    assert_string_equal(s[3].addr.host, "::1");
    assert_int_equal(s[3].addr.port, 21213);
    assert_string_equal(s[3].label, "[::1]:21213");
    assert_int_equal(s[3].line, 17);
    assert_int_equal(cfg->pool.timeout_ms, 300);
    assert_int_equal(cfg->pool.connect_timeout_ms, 1000);
    assert_int_equal(cfg->pool.failure_limit, 5);
    assert_int_equal(cfg->pool.retry_timeout_ms, 3000);
    assert_int_equal(cfg->pool.connections, 2);

    assert_true(cfg->wan.enabled);
    assert_string_equal(cfg->wan.listen.host, "127.0.0.1");
    assert_int_equal(cfg->wan.listen.port, 7311);
    assert_string_equal(cfg->wan.tls_ca, "lab/ca.pem");
    assert_string_equal(cfg->wan.tls_cert, "lab/us-east.pem");
    assert_string_equal(cfg->wan.tls_key, "lab/us-east.key");
    assert_string_equal(cfg->wan.spool_dir, "/var/lib/geogate/us-east-1");
    assert_int_equal(cfg->wan.spool_max_bytes, 2147483648ull);
    assert_int_equal(cfg->wan.spool_fsync, GW_FSYNC_ALWAYS);
    assert_int_equal(cfg->wan.npeers, 2);
    assert_string_equal(p[0].site, "eu-west");
    assert_int_equal(p[0].naddresses, 1);
    assert_string_equal(p[0].addresses[0].host, "127.0.0.1");
    assert_int_equal(p[0].addresses[0].port, 7312);
    assert_int_equal(p[0].priority, 1);
    assert_int_equal(p[0].line, 28);
    assert_string_equal(p[1].site, "ap-south");
    assert_int_equal(p[1].naddresses, 2);
    assert_string_equal(p[1].addresses[0].host, "10.1.0.1");
    assert_int_equal(p[1].addresses[0].port, 7311);
    assert_string_equal(p[1].addresses[1].host, "10.1.0.2");
    assert_int_equal(p[1].addresses[1].port, 7311);
    assert_int_equal(p[1].priority, 2);
    assert_int_equal(p[1].line, 29);

    assert_true(cfg->failover.local_healthy_fraction == 0.25);
    assert_int_equal(cfg->failover.hold_down_ms, 7000);
    assert_int_equal(cfg->failover.warmup_max_time_ms, 120000);
    assert_true(cfg->failover.warmup_hit_ratio == 0.75);

    assert_int_equal(cfg->replication.nrules, 3);
    assert_string_equal(r[0].prefix, "tmp:");
    assert_int_equal(r[0].mode, GW_REPL_NONE);
    assert_int_equal(r[0].line, 40);
    assert_string_equal(r[1].prefix, "session:");
    assert_int_equal(r[1].mode, GW_REPL_INVALIDATE);
    assert_int_equal(r[1].line, 41);
    assert_string_equal(r[2].prefix, "");
    assert_int_equal(r[2].mode, GW_REPL_COPY);
    assert_int_equal(r[2].line, 42);
    assert_true(cfg->replication.flush);
    assert_int_equal(cfg->replication.tombstone_ttl_s, 3600);
    assert_false(cfg->replication.auto_backfill);
    assert_int_equal(cfg->replication.max_clock_skew_ms, 250);
    gw_config_destroy(cfg);
}

/* The DESIGN.md example, verbatim: must load. */
static void test_design_example(void **state)
{
    struct gw_config *cfg = load_ok(
        "site: us-east                # this site's name; equals the CN/SAN of its certificate\n"
        "gateway_id: 1                # 0..65535, unique within the site\n"
        "listen: 127.0.0.1:11311      # memcached clients (ASCII protocol)\n"
        "admin: 127.0.0.1:9311        # HTTP: /health /status /metrics, admin actions\n"
        "threads: 2\n"
        "pool:                        # the site's memcached nodes\n"
        "  distribution: ketama       # twemproxy-compatible continuum\n"
        "  hash: md5                  # key hash: md5 | fnv1a_64 (as twemproxy computes them)\n"
        "  servers:                   # host:port:weight [name], exactly as twemproxy writes\n"
        "    - 127.0.0.1:21211:1\n"
        "    - 127.0.0.1:21212:1\n"
        "  timeout: 250\n"
        "  failure_limit: 3\n"
        "  retry_timeout: 2000\n"
        "wan:\n"
        "  listen: 127.0.0.1:7311\n"
        "  tls: { ca: lab/ca.pem, cert: lab/us-east.pem, key: lab/us-east.key }\n"
        "  spool: { dir: /var/lib/geogate/us-east-1, max_bytes: 1073741824, fsync: everysec }\n"
        "  peers:\n"
        "    - { site: eu-west, addresses: [127.0.0.1:7312], priority: 1 }\n"
        "failover:\n"
        "  local_healthy_fraction: 0.5\n"
        "  hold_down: 5000\n"
        "  warmup: { max_time: 600000, hit_ratio: 0.9 }\n"
        "replication:\n"
        "  rules:                     # first matching prefix wins\n"
        "    - { prefix: \"tmp:\", mode: none }\n"
        "    - { prefix: \"\",     mode: copy }   # copy | invalidate | none\n");

    (void)state;
    assert_int_equal(cfg->gateway_id, 1);
    assert_int_equal(cfg->pool.nservers, 2);
    assert_int_equal(cfg->wan.npeers, 1);
    assert_int_equal(cfg->replication.nrules, 2);
    assert_int_equal(cfg->replication.rules[0].mode, GW_REPL_NONE);
    gw_config_destroy(cfg);
}

/* Rules without a catch-all get {"", copy} appended, so every key matches a rule. */
static void test_rules_catch_all(void **state)
{
    struct gw_config *cfg = load_ok(MINIMAL "replication:\n"
                                            "  rules:\n"
                                            "    - prefix: \"tmp:\"\n"
                                            "      mode: none\n"
                                            "    - { prefix: \"x\" }\n");

    (void)state;
    assert_int_equal(cfg->replication.nrules, 3);
    assert_string_equal(cfg->replication.rules[0].prefix, "tmp:");
    assert_int_equal(cfg->replication.rules[0].mode, GW_REPL_NONE);
    assert_string_equal(cfg->replication.rules[1].prefix, "x");
    assert_int_equal(cfg->replication.rules[1].mode, GW_REPL_COPY); /* mode defaults to copy */
    assert_string_equal(cfg->replication.rules[2].prefix, "");
    assert_int_equal(cfg->replication.rules[2].mode, GW_REPL_COPY);
    assert_int_equal(cfg->replication.rules[2].line, 0);
    gw_config_destroy(cfg);

    cfg = load_ok(MINIMAL "replication: { rules: [] }\n");
    assert_int_equal(cfg->replication.nrules, 1);
    assert_string_equal(cfg->replication.rules[0].prefix, "");
    gw_config_destroy(cfg);
}

/* A wan section with no peers needs nothing else; peers default to priority 1. */
static void test_wan_variants(void **state)
{
    struct gw_config *cfg = load_ok(MINIMAL "wan: {}\n");

    (void)state;
    assert_true(cfg->wan.enabled);
    assert_int_equal(cfg->wan.npeers, 0);
    gw_config_destroy(cfg);

    cfg = load_ok(MINIMAL "wan:\n"
                          "  listen: 0.0.0.0:7311\n"
                          "  tls:\n"
                          "    ca: ca.pem\n"
                          "    cert: c.pem\n"
                          "    key: c.key\n"
                          "  spool:\n"
                          "    dir: /tmp/spool\n"
                          "    fsync: \"no\"\n"
                          "  peers:\n"
                          "  - site: eu-west\n"
                          "    addresses: [\"[2001:db8::1]:7311\", eu.example.com:7311]\n");
    assert_int_equal(cfg->wan.spool_fsync, GW_FSYNC_NO);
    assert_int_equal(cfg->wan.npeers, 1);
    assert_int_equal(cfg->wan.peers[0].priority, 1);
    assert_int_equal(cfg->wan.peers[0].line, 16);
    assert_string_equal(cfg->wan.peers[0].addresses[0].host, "2001:db8::1");
    assert_string_equal(cfg->wan.peers[0].addresses[1].host, "eu.example.com");
    gw_config_destroy(cfg);

    /* plain `no` is the fsync mode, not a boolean */
    cfg = load_ok(MINIMAL "wan: { spool: { fsync: no } }\n");
    assert_int_equal(cfg->wan.spool_fsync, GW_FSYNC_NO);
    gw_config_destroy(cfg);
}

static void test_server_lines(void **state)
{
    struct gw_config *cfg = load_ok("site: s\n"
                                    "listen: 127.0.0.1:11311\n"
                                    "pool:\n"
                                    "  servers:\n"
                                    "    - 10.0.0.1:11211:1\n"
                                    "    - 10.0.0.2:11211:10 node-2\n"
                                    "    - \"10.0.0.3:11212:65535\t node3\"\n"
                                    "    - localhost:11211:1\n");
    const struct gw_server_conf *s = cfg->pool.servers;

    (void)state;
    assert_int_equal(cfg->pool.nservers, 4);
    assert_string_equal(s[0].ring_name, "10.0.0.1");
    assert_string_equal(s[0].label, "10.0.0.1:11211");
    assert_int_equal(s[1].weight, 10);
    assert_string_equal(s[1].name, "node-2");
    assert_string_equal(s[1].ring_name, "node-2");
    assert_int_equal(s[2].weight, 65535);
    assert_string_equal(s[2].name, "node3");
    assert_string_equal(s[3].addr.host, "localhost");
    gw_config_destroy(cfg);
}

static void test_scalar_forms(void **state)
{
    struct gw_config *cfg = load_ok(MINIMAL "threads: \"8\"\n"
                                            "gateway_id: +7\n"
                                            "replication: { flush: On, auto_backfill: FALSE }\n"
                                            "failover: { local_healthy_fraction: 1, "
                                            "warmup: { hit_ratio: 0 } }\n");

    (void)state;
    assert_int_equal(cfg->threads, 8);
    assert_int_equal(cfg->gateway_id, 7);
    assert_true(cfg->replication.flush);
    assert_false(cfg->replication.auto_backfill);
    assert_true(cfg->failover.local_healthy_fraction == 1.0);
    assert_true(cfg->failover.warmup_hit_ratio == 0.0);
    gw_config_destroy(cfg);
}

/* replication.max_clock_skew: milliseconds like every duration; 0 turns the bound off and
 * the largest is a day. */
static void test_max_clock_skew(void **state)
{
    struct gw_config *cfg;

    (void)state;
    cfg = load_ok(MINIMAL "replication: { max_clock_skew: 0 }\n");
    assert_int_equal(cfg->replication.max_clock_skew_ms, 0);
    gw_config_destroy(cfg);
    cfg = load_ok(MINIMAL "replication:\n  max_clock_skew: 86400000\n");
    assert_int_equal(cfg->replication.max_clock_skew_ms, 86400000);
    gw_config_destroy(cfg);
    cfg = load_ok(MINIMAL "replication: { max_clock_skew: \"1500\" }\n");
    assert_int_equal(cfg->replication.max_clock_skew_ms, 1500);
    gw_config_destroy(cfg);
}

static void test_addr_parse(void **state)
{
    static const struct {
        const char *in;
        const char *host;
        int port;
    } cases[] = {
        {"127.0.0.1:11211", "127.0.0.1", 11211},
        {"localhost:1", "localhost", 1},
        {"a.b-c_d:65535", "a.b-c_d", 65535},
        {"[::1]:80", "::1", 80},
        {"[fe80::1%eth0]:80", "fe80::1%eth0", 80},
        {"[::ffff:10.0.0.1]:80", "::ffff:10.0.0.1", 80},
        {"", NULL, 0},
        {"host", NULL, 0},
        {"host:", NULL, 0},
        {":80", NULL, 0},
        {"host:0", NULL, 0},
        {"host:65536", NULL, 0},
        {"host:-1", NULL, 0},
        {"host:+1", NULL, 0},
        {"host:8o", NULL, 0},
        {"host:000080", NULL, 0},
        {"::1:80", NULL, 0},
        {"[::1]80", NULL, 0},
        {"[::1:80", NULL, 0},
        {"[]:80", NULL, 0},
        {"[zz]:80", NULL, 0},
        {"[fe80::1%]:80", NULL, 0},
        {"ho st:80", NULL, 0},
        {"host/x:80", NULL, 0},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct gw_addr a = {NULL, 0};
        int rc = gw_addr_parse(cases[i].in, &a);

        if (cases[i].host == NULL) {
            if (rc != -1) {
                fail_msg("'%s' should not parse", cases[i].in);
            }
            assert_null(a.host);
        } else {
            if (rc != 0) {
                fail_msg("'%s' should parse", cases[i].in);
            }
            assert_string_equal(a.host, cases[i].host);
            assert_int_equal(a.port, cases[i].port);
            free(a.host);
        }
    }
    assert_int_equal(gw_addr_parse(NULL, NULL), -1);
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(gw_log_level_name(GW_LOG_ERROR), "error");
    assert_string_equal(gw_log_level_name(GW_LOG_WARN), "warn");
    assert_string_equal(gw_log_level_name(GW_LOG_INFO), "info");
    assert_string_equal(gw_log_level_name(GW_LOG_DEBUG), "debug");
    assert_string_equal(gw_log_level_name(GW_LOG_MAX), "unknown");
    assert_string_equal(gw_log_level_name((enum gw_log_level) - 1), "unknown");
    assert_string_equal(gw_fsync_mode_name(GW_FSYNC_ALWAYS), "always");
    assert_string_equal(gw_fsync_mode_name(GW_FSYNC_EVERYSEC), "everysec");
    assert_string_equal(gw_fsync_mode_name(GW_FSYNC_NO), "no");
    assert_string_equal(gw_fsync_mode_name(GW_FSYNC_MAX), "unknown");
    assert_string_equal(gw_repl_mode_name(GW_REPL_COPY), "copy");
    assert_string_equal(gw_repl_mode_name(GW_REPL_INVALIDATE), "invalidate");
    assert_string_equal(gw_repl_mode_name(GW_REPL_NONE), "none");
    assert_string_equal(gw_repl_mode_name(GW_REPL_MAX), "unknown");
}

static void test_load_file(void **state)
{
    char path[] = "/tmp/geogate-test-config-XXXXXX";
    char expect[600];
    struct gw_config *cfg = NULL;
    int fd = mkstemp(path);

    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(write(fd, MINIMAL "threads: x\n", strlen(MINIMAL "threads: x\n")),
                     (ssize_t)strlen(MINIMAL "threads: x\n"));
    close(fd);
    assert_int_equal(gw_config_load(path, &cfg, err, sizeof(err)), -1);
    assert_null(cfg);
    snprintf(expect, sizeof(expect), "%s:6: threads: expected an integer, got 'x'", path);
    assert_string_equal(err, expect);

    fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, MINIMAL, strlen(MINIMAL)), (ssize_t)strlen(MINIMAL));
    close(fd);
    assert_int_equal(gw_config_load(path, &cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg->path, path);
    gw_config_destroy(cfg);
    unlink(path);

    assert_int_equal(gw_config_load(path, &cfg, err, sizeof(err)), -1);
    snprintf(expect, sizeof(expect), "%s:1: cannot open: No such file or directory", path);
    assert_string_equal(err, expect);
    assert_int_equal(gw_config_load("/", &cfg, err, sizeof(err)), -1);
    assert_string_equal(err, "/:1: cannot read: Is a directory");
}

/* The example shipped in deploy/ must stay valid. */
static void test_deploy_example(void **state)
{
    struct gw_config *cfg = NULL;

    (void)state;
    if (gw_config_load("../../deploy/examples/single-site.yml", &cfg, err, sizeof(err)) != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(cfg->wan.npeers, 0);
    gw_config_destroy(cfg);
}

/* Tiny or missing error buffers are never overrun; a NULL input is an empty config. */
static void test_error_buffer(void **state)
{
    struct gw_config *cfg = NULL;
    char small[8];
    char *big;

    (void)state;
    memset(small, 'x', sizeof(small));
    assert_int_equal(gw_config_load_string("x: 1", 4, "name", &cfg, small, sizeof(small)), -1);
    assert_string_equal(small, "name:1:");
    assert_int_equal(gw_config_load_string("x: 1", 4, "name", &cfg, NULL, 0), -1);
    assert_int_equal(gw_config_load_string(NULL, 0, NULL, &cfg, err, sizeof(err)), -1);
    assert_string_equal(err, "config:1: the config is empty (it needs at least site, listen "
                             "and pool.servers)");
    /* the length is honoured: what follows it is not read */
    assert_int_equal(
        gw_config_load_string(MINIMAL "threads: x\n", strlen(MINIMAL), "n", &cfg, err, sizeof(err)),
        0);
    gw_config_destroy(cfg);
    gw_config_destroy(NULL);

    /* more than 1 MiB is refused before libyaml sees it */
    big = malloc((1u << 20) + 2);
    assert_non_null(big);
    memset(big, '#', (1u << 20) + 1);
    assert_int_equal(gw_config_load_string(big, (1u << 20) + 1, "n", &cfg, err, sizeof(err)), -1);
    assert_string_equal(err, "n:1: larger than 1048576 bytes");
    free(big);
}

/* Every prefix of the full config, and every single-byte corruption of it, either loads
 * or fails with a "t.yml:LINE: " message; nothing crashes or leaks (run under valgrind). */
static void test_mangled_inputs(void **state)
{
    static const char junk[] = {'\0', '\t', ':', '-', '[', '{', '"', '&', '*', '\n', '\xff', '#'};
    size_t len = strlen(full_config);
    char *buf = malloc(len + 1);
    struct gw_config *cfg;

    (void)state;
    assert_non_null(buf);
    for (size_t cut = 0; cut <= len; cut++) {
        cfg = NULL;
        if (gw_config_load_string(full_config, cut, "t.yml", &cfg, err, sizeof(err)) == 0) {
            gw_config_destroy(cfg);
        } else {
            assert_null(cfg);
            assert_memory_equal(err, "t.yml:", 6);
            assert_null(strchr(err, '\n'));
        }
    }
    for (size_t pos = 0; pos < len; pos += 3) {
        for (size_t j = 0; j < sizeof(junk); j++) {
            memcpy(buf, full_config, len);
            buf[pos] = junk[j];
            cfg = NULL;
            if (gw_config_load_string(buf, len, "t.yml", &cfg, err, sizeof(err)) == 0) {
                gw_config_destroy(cfg);
            } else {
                assert_memory_equal(err, "t.yml:", 6);
            }
        }
    }
    free(buf);
}

/* ---- broken configs: each must fail with exactly this first error ---- */

struct bad_case {
    const char *name;
    const char *yaml;
    const char *error; /* a prefix of the full message */
};

#define HEAD "site: us-east\nlisten: 127.0.0.1:11311\n" /* lines 1-2 */
#define POOL "pool:\n  servers: [127.0.0.1:21211:1]\n"  /* 2 lines */
#define WAN_OK                                                                                     \
    "wan:\n"                                                                                       \
    "  listen: 127.0.0.1:7311\n"                                                                   \
    "  tls: { ca: ca.pem, cert: c.pem, key: c.key }\n"                                             \
    "  spool: { dir: /tmp/s }\n" /* 4 lines */

static const struct bad_case bad_cases[] = {
    /* the file as a whole */
    {"empty", "", "t.yml:1: the config is empty"},
    {"only_comments", "# nothing\n\n# here\n", "t.yml:1: the config is empty"},
    {"top_level_list", "- a\n- b\n",
     "t.yml:1: the top level must be a mapping of keys, not a list"},
    {"top_level_scalar", "\n\nhello\n",
     "t.yml:3: the top level must be a mapping of keys, not a scalar"},
    {"two_documents", HEAD POOL "---\nsite: b\n", "t.yml:5: only one YAML document is allowed"},
    {"syntax_unclosed_flow", HEAD "pool:\n  servers: [127.0.0.1:21211:1\nthreads: 2\n",
     "t.yml:5: YAML syntax error: did not find expected ',' or ']' (while parsing a flow "
     "sequence on line 4)"},
    {"syntax_bad_indent", HEAD "pool:\n  servers: [127.0.0.1:21211:1]\n   timeout: 5\n",
     "t.yml:5: YAML syntax error: did not find expected key (while parsing a block mapping on "
     "line 4)"},
    {"syntax_tab", HEAD "pool:\n\tservers: []\n",
     "t.yml:4: YAML syntax error: found character that cannot start any token"},
    {"syntax_bad_utf8", HEAD "\xff: 1\n" POOL,
     "t.yml:3: YAML syntax error: invalid leading UTF-8 octet"},
    {"alias", HEAD "pool:\n  servers: &s [127.0.0.1:21211:1]\nwan:\n  peers: *s\n",
     "t.yml:6: YAML aliases (*s) are not supported"},
    {"too_deep",
     HEAD POOL "x: "
               "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
               "]]]]]]]]]\n",
     "t.yml:5: nested more than 32 levels deep"},
    {"complex_key", HEAD POOL "? [a, b]\n: 1\n", "t.yml:5: keys must be plain names, not a list"},

    /* unknown and duplicate keys */
    {"unknown_top", HEAD "bogus: 1\n" POOL, "t.yml:3: unknown key 'bogus'"},
    {"unknown_nested", HEAD POOL "  servrs: []\n", "t.yml:5: unknown key 'pool.servrs'"},
    {"unknown_deep", HEAD POOL "wan:\n  tls: { ca: a, cert: b, kee: c }\n",
     "t.yml:6: unknown key 'wan.tls.kee'"},
    {"unknown_in_peer",
     HEAD POOL WAN_OK "  peers:\n    - { site: eu, addresses: [1.2.3.4:5], prio: 1 }\n",
     "t.yml:10: unknown key 'wan.peers[0].prio'"},
    {"unknown_in_rule", HEAD POOL "replication:\n  rules:\n    - { prefix: a, mod: copy }\n",
     "t.yml:7: unknown key 'replication.rules[0].mod'"},
    {"dotted_key", HEAD POOL "pool.timeout: 5\n", "t.yml:5: unknown key 'pool.timeout'"},
    {"unknown_twemproxy_key", HEAD POOL "  auto_eject_hosts: true\n",
     "t.yml:5: unknown key 'pool.auto_eject_hosts'"},
    {"duplicate_top", HEAD "threads: 2\n" POOL "threads: 3\n",
     "t.yml:6: duplicate key 'threads' (first on line 3)"},
    {"duplicate_section", HEAD POOL "pool:\n  timeout: 5\n",
     "t.yml:5: duplicate key 'pool' (first on line 3)"},
    {"duplicate_nested", HEAD POOL "  timeout: 1\n  timeout: 2\n",
     "t.yml:6: duplicate key 'pool.timeout' (first on line 5)"},
    {"duplicate_in_flow", HEAD POOL "failover: { hold_down: 1, hold_down: 2 }\n",
     "t.yml:5: duplicate key 'failover.hold_down' (first on line 5)"},
    {"duplicate_in_peer", HEAD POOL WAN_OK "  peers:\n    - { site: a, site: b }\n",
     "t.yml:10: duplicate key 'wan.peers[0].site' (first on line 10)"},

    /* missing keys */
    {"missing_site", "listen: 127.0.0.1:11311\n" POOL, "t.yml:1: missing required key 'site'"},
    {"missing_listen", "site: a\n" POOL, "t.yml:1: missing required key 'listen'"},
    {"missing_pool", HEAD "threads: 2\n", "t.yml:1: missing required key 'pool'"},
    {"missing_servers", HEAD "threads: 2\npool:\n  hash: md5\n",
     "t.yml:4: missing required key 'pool.servers'"},
    {"missing_servers_flow", HEAD "pool: {}\n", "t.yml:3: missing required key 'pool.servers'"},
    {"missing_peer_site", HEAD POOL WAN_OK "  peers:\n    - addresses: [1.2.3.4:5]\n",
     "t.yml:10: missing required key 'wan.peers[0].site'"},
    {"missing_peer_addresses", HEAD POOL WAN_OK "  peers:\n    - { site: eu }\n",
     "t.yml:10: missing required key 'wan.peers[0].addresses'"},
    {"missing_rule_prefix", HEAD POOL "replication:\n  rules:\n  - mode: none\n",
     "t.yml:7: missing required key 'replication.rules[0].prefix'"},
    {"wan_peers_without_tls",
     HEAD POOL "wan:\n  listen: 127.0.0.1:7311\n  spool: { dir: /tmp/s }\n"
               "  peers: [{ site: eu, addresses: [1.2.3.4:5] }]\n",
     "t.yml:5: missing required key 'wan.tls.ca' (needed when wan.peers lists peers)"},
    {"wan_peers_without_key",
     HEAD POOL
     "wan:\n  listen: 127.0.0.1:7311\n  tls:\n    ca: a\n    cert: b\n  spool: { dir: /tmp/s }\n"
     "  peers: [{ site: eu, addresses: [1.2.3.4:5] }]\n",
     "t.yml:7: missing required key 'wan.tls.key' (needed when wan.peers lists peers)"},
    {"wan_peers_without_spool",
     HEAD POOL "wan:\n  listen: 127.0.0.1:7311\n  tls: { ca: ca.pem, cert: c.pem, key: c.key }\n"
               "  peers: [{ site: eu, addresses: [1.2.3.4:5] }]\n",
     "t.yml:5: missing required key 'wan.spool.dir' (needed when wan.peers lists peers)"},
    {"wan_peers_without_listen",
     HEAD POOL "wan:\n  tls: { ca: ca.pem, cert: c.pem, key: c.key }\n  spool: { dir: /tmp/s }\n"
               "  peers: [{ site: eu, addresses: [1.2.3.4:5] }]\n",
     "t.yml:5: missing required key 'wan.listen' (needed when wan.peers lists peers)"},

    /* wrong types */
    {"section_is_scalar", HEAD "pool: 5\n", "t.yml:3: pool: expected a mapping, got a scalar"},
    {"section_is_null", HEAD POOL "wan:\n", "t.yml:5: wan: expected a mapping, got an empty value"},
    {"section_is_list", HEAD POOL "failover: [1]\n",
     "t.yml:5: failover: expected a mapping, got a list"},
    {"string_is_null", "site:\nlisten: 127.0.0.1:11311\n" POOL,
     "t.yml:1: site: expected a string, got an empty value (write \"\" for an empty string)"},
    {"string_is_list", "site: [a]\nlisten: 127.0.0.1:11311\n" POOL,
     "t.yml:1: site: expected a string, got a list"},
    {"uint_not_number", HEAD POOL "threads: two\n",
     "t.yml:5: threads: expected an integer, got 'two'"},
    {"uint_float", HEAD POOL "threads: 2.5\n", "t.yml:5: threads: expected an integer, got '2.5'"},
    {"uint_is_map", HEAD POOL "threads: {a: 1}\n",
     "t.yml:5: threads: expected an integer, got a mapping"},
    {"uint_is_null", HEAD POOL "threads: ~\n",
     "t.yml:5: threads: expected an integer, got an empty value"},
    {"duration_with_unit", HEAD POOL "  timeout: 250ms\n",
     "t.yml:5: pool.timeout: expected a duration in milliseconds (an integer), got '250ms'"},
    {"seconds_with_unit", HEAD POOL "replication: { tombstone_ttl: 1d }\n",
     "t.yml:5: replication.tombstone_ttl: expected a duration in seconds (an integer), got '1d'"},
    {"max_clock_skew_seconds", HEAD POOL "replication:\n  max_clock_skew: 1s\n",
     "t.yml:6: replication.max_clock_skew: expected a duration in milliseconds (an integer), "
     "got '1s'"},
    {"double_not_number", HEAD POOL "failover: { local_healthy_fraction: half }\n",
     "t.yml:5: failover.local_healthy_fraction: expected a number, got 'half'"},
    {"double_nan", HEAD POOL "failover: { local_healthy_fraction: nan }\n",
     "t.yml:5: failover.local_healthy_fraction: expected a number, got 'nan'"},
    {"double_garbage", HEAD POOL "failover: { local_healthy_fraction: 0.5.5 }\n",
     "t.yml:5: failover.local_healthy_fraction: expected a number, got '0.5.5'"},
    {"bool_bad", HEAD POOL "replication: { flush: maybe }\n",
     "t.yml:5: replication.flush: expected true or false, got 'maybe'"},
    {"bool_number", HEAD POOL "replication: { auto_backfill: 1 }\n",
     "t.yml:5: replication.auto_backfill: expected true or false, got '1'"},
    {"enum_hash", HEAD "pool:\n  hash: crc32\n  servers: [127.0.0.1:21211:1]\n",
     "t.yml:4: pool.hash: expected one of md5 | fnv1a_64, got 'crc32'"},
    {"enum_distribution", HEAD "pool:\n  distribution: modula\n  servers: [127.0.0.1:21211:1]\n",
     "t.yml:4: pool.distribution: expected one of ketama, got 'modula'"},
    {"enum_log_level", HEAD POOL "log_level: verbose\n",
     "t.yml:5: log_level: expected one of error | warn | info | debug, got 'verbose'"},
    {"enum_case", HEAD POOL "log_level: INFO\n",
     "t.yml:5: log_level: expected one of error | warn | info | debug, got 'INFO'"},
    {"enum_fsync", HEAD POOL "wan: { spool: { fsync: sometimes } }\n",
     "t.yml:5: wan.spool.fsync: expected one of always | everysec | no, got 'sometimes'"},
    {"enum_null", HEAD POOL "wan: { spool: { fsync: } }\n",
     "t.yml:5: wan.spool.fsync: expected one of always | everysec | no, got an empty value"},
    {"enum_rule_mode", HEAD POOL "replication: { rules: [{ prefix: a, mode: copyy }] }\n",
     "t.yml:5: replication.rules[0].mode: expected one of copy | invalidate | "
     "none, got 'copyy'"},
    {"list_is_scalar", HEAD "pool:\n  servers: 127.0.0.1:21211:1\n",
     "t.yml:4: pool.servers: expected a list, got a scalar"},
    {"peers_is_map", HEAD POOL "wan: { peers: { site: a } }\n",
     "t.yml:5: wan.peers: expected a list, got a mapping"},
    {"peer_is_scalar", HEAD POOL WAN_OK "  peers:\n    - eu-west\n",
     "t.yml:10: wan.peers[0]: expected a mapping, got a scalar"},
    {"rule_is_list", HEAD POOL "replication:\n  rules:\n    - [a, copy]\n",
     "t.yml:7: replication.rules[0]: expected a mapping, got a list"},
    {"nul_byte", "site: \"us\\0east\"\nlisten: 127.0.0.1:11311\n" POOL,
     "t.yml:1: site: contains a NUL byte"},

    /* ranges */
    {"gateway_id_too_big", HEAD POOL "gateway_id: 65536\n",
     "t.yml:5: gateway_id: 65536 is out of range (0..65535)"},
    {"gateway_id_negative", HEAD POOL "gateway_id: -1\n",
     "t.yml:5: gateway_id: -1 is out of range (0..65535)"},
    {"gateway_id_overflow", HEAD POOL "gateway_id: 99999999999999999999999\n",
     "t.yml:5: gateway_id: 99999999999999999999999 is out of range (0..65535)"},
    {"threads_zero", HEAD POOL "threads: 0\n", "t.yml:5: threads: 0 is out of range (1..64)"},
    {"threads_too_many", HEAD POOL "threads: 65\n", "t.yml:5: threads: 65 is out of range (1..64)"},
    {"timeout_zero", HEAD POOL "  timeout: 0\n",
     "t.yml:5: pool.timeout: 0 is out of range (1..3600000)"},
    {"failure_limit_zero", HEAD POOL "  failure_limit: 0\n",
     "t.yml:5: pool.failure_limit: 0 is out of range (1..1000)"},
    {"connections_zero", HEAD POOL "  connections: 0\n",
     "t.yml:5: pool.connections: 0 is out of range (1..64)"},
    {"max_value_small", HEAD POOL "max_value_bytes: 10\n",
     "t.yml:5: max_value_bytes: 10 is out of range (1024..1073741824)"},
    {"max_connections_zero", HEAD POOL "max_connections: 0\n",
     "t.yml:5: max_connections: 0 is out of range (1..1000000)"},
    {"spool_max_small", HEAD POOL "wan: { spool: { max_bytes: 1000 } }\n",
     "t.yml:5: wan.spool.max_bytes: 1000 is out of range (1048576..1125899906842624)"},
    {"fraction_above_one", HEAD POOL "failover: { local_healthy_fraction: 1.5 }\n",
     "t.yml:5: failover.local_healthy_fraction: 1.5 is out of range (0..1)"},
    {"hit_ratio_negative", HEAD POOL "failover: { warmup: { hit_ratio: -0.1 } }\n",
     "t.yml:5: failover.warmup.hit_ratio: -0.1 is out of range (0..1)"},
    {"hold_down_too_long", HEAD POOL "failover: { hold_down: 86400001 }\n",
     "t.yml:5: failover.hold_down: 86400001 is out of range (0..86400000)"},
    {"tombstone_ttl_zero", HEAD POOL "replication: { tombstone_ttl: 0 }\n",
     "t.yml:5: replication.tombstone_ttl: 0 is out of range (1..2592000)"},
    {"max_clock_skew_too_big", HEAD POOL "replication: { max_clock_skew: 86400001 }\n",
     "t.yml:5: replication.max_clock_skew: 86400001 is out of range (0..86400000)"},
    {"max_clock_skew_negative", HEAD POOL "replication: { max_clock_skew: -1 }\n",
     "t.yml:5: replication.max_clock_skew: -1 is out of range (0..86400000)"},
    {"peer_priority",
     HEAD POOL WAN_OK "  peers: [{ site: eu, addresses: [1.2.3.4:5], priority: 70000 }]\n",
     "t.yml:9: wan.peers[0].priority: 70000 is out of range (0..65535)"},

    /* addresses */
    {"listen_no_port", "site: a\nlisten: localhost\n" POOL,
     "t.yml:2: listen: 'localhost' is not host:port (missing port)"},
    {"listen_empty_host", "site: a\nlisten: :11311\n" POOL,
     "t.yml:2: listen: ':11311' is not host:port (empty host)"},
    {"listen_port_text", "site: a\nlisten: 127.0.0.1:http\n" POOL,
     "t.yml:2: listen: '127.0.0.1:http' is not host:port (port is not a number)"},
    {"listen_port_zero", "site: a\nlisten: 127.0.0.1:0\n" POOL,
     "t.yml:2: listen: '127.0.0.1:0' is not host:port (port out of range (1..65535))"},
    {"listen_port_big", "site: a\nlisten: 127.0.0.1:65536\n" POOL,
     "t.yml:2: listen: '127.0.0.1:65536' is not host:port (port out of range (1..65535))"},
    {"listen_v6_no_brackets", "site: a\nlisten: \"::1:11311\"\n" POOL,
     "t.yml:2: listen: '::1:11311' is not host:port (IPv6 addresses need brackets"},
    {"listen_bad_host", "site: a\nlisten: \"a b:1\"\n" POOL,
     "t.yml:2: listen: 'a b:1' is not host:port (bad character in host)"},
    {"listen_is_number", "site: a\nlisten: 11311\n" POOL,
     "t.yml:2: listen: '11311' is not host:port (missing port)"},
    {"admin_same_as_listen", HEAD "admin: 127.0.0.1:11311\n" POOL,
     "t.yml:3: admin: 127.0.0.1:11311 is already used by listen"},
    {"wan_listen_same_as_admin",
     HEAD "admin: 127.0.0.1:9311\n" POOL "wan: { listen: 127.0.0.1:9311 }\n",
     "t.yml:6: wan.listen: 127.0.0.1:9311 is already used by admin"},
    {"peer_bad_address", HEAD POOL WAN_OK "  peers: [{ site: eu, addresses: [eu-west] }]\n",
     "t.yml:9: wan.peers[0].addresses[0]: 'eu-west' is not host:port (missing port)"},
    {"peer_no_addresses", HEAD POOL WAN_OK "  peers: [{ site: eu, addresses: [] }]\n",
     "t.yml:9: wan.peers[0].addresses: must list at least one entry"},
    {"peer_duplicate_address",
     HEAD POOL WAN_OK "  peers: [{ site: eu, addresses: [1.2.3.4:5, 1.2.3.4:5] }]\n",
     "t.yml:9: wan.peers[0].addresses[1]: duplicate address 1.2.3.4:5"},
    {"peer_is_us", HEAD POOL WAN_OK "  peers: [{ site: eu, addresses: [127.0.0.1:7311] }]\n",
     "t.yml:9: wan.peers[0].addresses[0]: 127.0.0.1:7311 is this gateway's own wan.listen"},

    /* servers */
    {"servers_empty", HEAD "pool:\n  servers: []\n",
     "t.yml:4: pool.servers: must list at least one entry"},
    {"server_no_weight", HEAD "pool:\n  servers:\n    - 127.0.0.1:21211\n",
     "t.yml:5: pool.servers[0]: '127.0.0.1:21211' is not host:port:weight [name] (missing weight)"},
    {"server_v6_no_weight", HEAD "pool:\n  servers:\n    - \"[::1]:21211\"\n",
     "t.yml:5: pool.servers[0]: '[::1]:21211' is not host:port:weight [name] (missing weight)"},
    {"server_host_only", HEAD "pool:\n  servers:\n    - cache1\n",
     "t.yml:5: pool.servers[0]: 'cache1' is not host:port:weight [name] (missing port and weight)"},
    {"server_weight_zero", HEAD "pool:\n  servers:\n    - 127.0.0.1:21211:0\n",
     "t.yml:5: pool.servers[0]: '127.0.0.1:21211:0' is not host:port:weight [name] (weight must "
     "be an integer 1..65535)"},
    {"server_weight_text", HEAD "pool:\n  servers:\n    - 127.0.0.1:21211:x\n",
     "t.yml:5: pool.servers[0]: '127.0.0.1:21211:x' is not host:port:weight [name] (weight must "
     "be an integer 1..65535)"},
    {"server_weight_empty", HEAD "pool:\n  servers:\n    - \"127.0.0.1:21211:\"\n",
     "t.yml:5: pool.servers[0]: '127.0.0.1:21211:' is not host:port:weight [name] (missing "
     "weight)"},
    {"server_port_zero", HEAD "pool:\n  servers:\n    - 127.0.0.1:0:1\n",
     "t.yml:5: pool.servers[0]: '127.0.0.1:0:1' is not host:port:weight [name] (port out of "
     "range (1..65535))"},
    {"server_port_big", HEAD "pool:\n  servers:\n    - 127.0.0.1:70000:1\n",
     "t.yml:5: pool.servers[0]: '127.0.0.1:70000:1' is not host:port:weight [name] (port out of "
     "range (1..65535))"},
    {"server_trailing_text", HEAD "pool:\n  servers:\n    - 127.0.0.1:21211:1 name extra\n",
     "t.yml:5: pool.servers[0]: '127.0.0.1:21211:1 name extra' is not host:port:weight [name] "
     "(text after the name)"},
    {"server_is_map", HEAD "pool:\n  servers:\n    - { host: a }\n",
     "t.yml:5: pool.servers[0]: expected host:port:weight [name], got a mapping"},
    {"server_duplicate",
     HEAD "pool:\n  servers:\n    - 127.0.0.1:21211:1\n    - 127.0.0.1:21211:2\n",
     "t.yml:6: pool.servers[1]: duplicate server 127.0.0.1:21211 (first on line 5)"},
    {"server_duplicate_name",
     HEAD "pool:\n  servers:\n    - 127.0.0.1:21211:1 a\n    - 127.0.0.1:21212:1 a\n",
     "t.yml:6: pool.servers[1]: duplicate server name 'a' (first on line 5)"},
    {"server_same_ring_name",
     HEAD "pool:\n  servers:\n    - 10.0.0.1:11211:1\n    - 127.0.0.1:21212:1 10.0.0.1\n",
     "t.yml:6: pool.servers[1]: server 127.0.0.1:21212 has the same ring name '10.0.0.1' as the "
     "server on line 5"},
    {"server_is_listen", HEAD "pool:\n  servers:\n    - 127.0.0.1:11311:1\n",
     "t.yml:5: pool.servers[0]: 127.0.0.1:11311 is this gateway's own listen"},

    /* names, peers, rules */
    {"site_with_space", "site: us east\nlisten: 127.0.0.1:11311\n" POOL,
     "t.yml:1: site: 'us east' is not a site name"},
    {"site_empty", "site: \"\"\nlisten: 127.0.0.1:11311\n" POOL,
     "t.yml:1: site: '' is not a site name"},
    {"site_slash", "site: ../etc\nlisten: 127.0.0.1:11311\n" POOL,
     "t.yml:1: site: '../etc' is not a site name"},
    {"tls_ca_empty", HEAD POOL "wan: { tls: { ca: \"\" } }\n",
     "t.yml:5: wan.tls.ca: must not be empty"},
    {"peer_duplicate_site",
     HEAD POOL WAN_OK "  peers:\n    - { site: eu, addresses: [1.2.3.4:5] }\n    - { site: eu, "
                      "addresses: [1.2.3.5:5] }\n",
     "t.yml:11: wan.peers[1]: duplicate peer site 'eu' (first on line 10)"},
    {"peer_own_site",
     HEAD POOL WAN_OK "  peers:\n    - { site: us-east, addresses: [1.2.3.4:5] }\n",
     "t.yml:10: wan.peers[0].site: 'us-east' is this gateway's own site"},
    {"peer_own_site_declared_later",
     "listen: 127.0.0.1:11311\n" POOL WAN_OK
     "  peers:\n    - { site: us-east, addresses: [1.2.3.4:5] }\nsite: us-east\n",
     "t.yml:9: wan.peers[0].site: 'us-east' is this gateway's own site"},
    {"peer_bad_site",
     HEAD POOL WAN_OK "  peers:\n    - { site: \"eu west\", addresses: [1.2.3.4:5] }\n",
     "t.yml:10: wan.peers[0].site: 'eu west' is not a site name"},
    {"rule_prefix_null", HEAD POOL "replication:\n  rules:\n    - prefix:\n      mode: none\n",
     "t.yml:7: replication.rules[0].prefix: expected a string, got an empty value"},
    {"rule_prefix_space", HEAD POOL "replication: { rules: [{ prefix: \"a b\" }] }\n",
     "t.yml:5: replication.rules[0].prefix: memcached keys cannot hold spaces or control "
     "characters"},
    {"rule_duplicate",
     HEAD POOL "replication:\n  rules:\n    - { prefix: a }\n    - { prefix: a }\n",
     "t.yml:8: replication.rules[1]: prefix 'a' can never match: the rule on line 7 (prefix 'a') "
     "comes first"},
    {"rule_shadowed",
     HEAD POOL "replication:\n  rules:\n    - { prefix: \"\", mode: copy }\n    - { prefix: "
               "\"tmp:\", mode: none }\n",
     "t.yml:8: replication.rules[1]: prefix 'tmp:' can never match: the rule on line 7 (prefix '') "
     "comes first"},
};

static void test_bad_config(void **state)
{
    const struct bad_case *c = *state;
    struct gw_config *cfg = load(c->yaml);

    (void)state;
    if (cfg != NULL) {
        gw_config_destroy(cfg);
        fail_msg("%s: loaded, expected: %s", c->name, c->error);
    }
    if (strncmp(err, c->error, strlen(c->error)) != 0) {
        fail_msg("%s:\n  got:      %s\n  expected: %s", c->name, err, c->error);
    }
    assert_null(strchr(err, '\n'));
}

int main(void)
{
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_minimal_and_defaults),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_design_example),
        cmocka_unit_test(test_rules_catch_all),
        cmocka_unit_test(test_wan_variants),
        cmocka_unit_test(test_server_lines),
        cmocka_unit_test(test_scalar_forms),
        cmocka_unit_test(test_max_clock_skew),
        cmocka_unit_test(test_addr_parse),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_deploy_example),
        cmocka_unit_test(test_error_buffer),
        cmocka_unit_test(test_mangled_inputs),
    };
    size_t nfixed = sizeof(fixed) / sizeof(fixed[0]);
    size_t nbad = sizeof(bad_cases) / sizeof(bad_cases[0]);
    struct CMUnitTest *tests = calloc(nfixed + nbad, sizeof(*tests));
    int rc;

    if (tests == NULL) {
        return 1;
    }
    memcpy(tests, fixed, sizeof(fixed));
    /* one test per broken config, named after it, so a failure says which */
    for (size_t i = 0; i < nbad; i++) {
        tests[nfixed + i].name = bad_cases[i].name;
        tests[nfixed + i].test_func = test_bad_config;
        tests[nfixed + i].initial_state = (void *)&bad_cases[i];
    }
    rc = _cmocka_run_group_tests("config", tests, nfixed + nbad, NULL, NULL);
    free(tests);
    return rc;
}
