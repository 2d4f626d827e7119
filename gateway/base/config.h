/*
 * config — load, validate and hold a geogate YAML config (libyaml).  Table-driven:
 * every key is one row {path, type, offset, default, validator}; loading is
 * parse -> validate -> apply, and every error names its line.  Knows nothing about
 * sockets or threads; the loaded struct is read-only once handed to the daemon
 * (a reload builds a new one).  Runs on the main thread only.
 */
#ifndef GEOGATE_CONFIG_H
#define GEOGATE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ring/ring.h"

enum gw_fsync_mode { GW_FSYNC_ALWAYS = 0, GW_FSYNC_EVERYSEC, GW_FSYNC_NO, GW_FSYNC_MAX };
enum gw_repl_mode { GW_REPL_COPY = 0, GW_REPL_INVALIDATE, GW_REPL_NONE, GW_REPL_MAX };
enum gw_log_level { GW_LOG_ERROR = 0, GW_LOG_WARN, GW_LOG_INFO, GW_LOG_DEBUG, GW_LOG_MAX };

/* "host:port" split up.  host is never NULL once loaded. */
struct gw_addr {
    char *host;
    uint16_t port;
};

/* One memcached node, written "host:port:weight [name]" as twemproxy writes it. */
struct gw_server_conf {
    struct gw_addr addr;
    uint32_t weight;
    char *name;  /* explicit name, or NULL */
    char *label; /* "host:port", for logs and stats */
    char *ring_name; /* what the ketama continuum hashes (ring_server_name) */
    int line;
};

struct gw_peer_conf {
    char *site;
    struct gw_addr *addresses;
    size_t naddresses;
    int priority;
    int line;
};

struct gw_rule_conf {
    char *prefix; /* "" matches every key */
    enum gw_repl_mode mode;
    int line; /* 0 for the implicit catch-all rule added when no rule has prefix "" */
};

struct gw_config {
    char *path;

    char *site;            /* required */
    uint32_t gateway_id;   /* 0..65535, default 0 */
    struct gw_addr listen; /* required */
    struct gw_addr admin;  /* optional: admin.host == NULL when absent */
    uint32_t threads;      /* default 2, 1..64 */
    enum gw_log_level log_level; /* log_level: error|warn|info|debug, default info */

    /* limits: clear errors, never a crash */
    uint32_t max_connections;   /* client connections, default 10000 */
    uint32_t max_request_bytes; /* longest request line (multi-get), default 1 MiB */
    uint32_t max_value_bytes;   /* largest value accepted, default 1 MiB (memcached -I) */
    uint32_t idle_timeout_ms;   /* close a client idle this long; 0 (default) = never */
    uint64_t client_output_limit; /* a client's unsent replies past this: disconnect */

    struct {
        enum ring_hash hash;            /* default md5 */
        struct gw_server_conf *servers; /* required, >= 1 */
        size_t nservers;
        uint32_t timeout_ms;       /* default 250 */
        uint32_t connect_timeout_ms; /* default = timeout_ms */
        uint32_t failure_limit;    /* default 3 */
        uint32_t retry_timeout_ms; /* default 2000 */
        uint32_t connections;      /* connections per node per worker thread, default 1 */
    } pool;

    struct {
        bool enabled; /* true when a wan: section is present */
        struct gw_addr listen;
        char *tls_ca, *tls_cert, *tls_key;
        char *spool_dir;
        uint64_t spool_max_bytes; /* default 1 GiB */
        enum gw_fsync_mode spool_fsync; /* default everysec */
        struct gw_peer_conf *peers;
        size_t npeers;
    } wan;

    struct {
        double local_healthy_fraction; /* default 0.5 */
        uint32_t hold_down_ms;         /* default 5000 */
        uint32_t warmup_max_time_ms;   /* default 600000 */
        double warmup_hit_ratio;       /* default 0.9 */
    } failover;

    struct {
        struct gw_rule_conf *rules; /* default: one rule {"", copy}; the last rule always has
                                       prefix "" (a {"", copy} is appended when none has), so
                                       every key matches some rule */
        size_t nrules;
        bool flush;                /* default false */
        uint32_t tombstone_ttl_s;  /* tombstone_ttl, seconds, default 86400 */
        bool auto_backfill;        /* default true */
        uint32_t backfill_rate;    /* items/s a peer may send us in a backfill when no rate is
                                      given; 0 = no limit; default 20000 */
        uint32_t max_clock_skew_ms; /* max_clock_skew: how far ahead of this gateway's clock
                                       a peer's version may be and still be applied (and
                                       move our HLC); 0 = no bound; default 1000 */
    } replication;
};

/*
 * Load and validate the config at path.  On success returns 0 and sets *out (caller
 * owns it; free with gw_config_destroy).  On failure returns -1 and writes one line
 * to err: "FILE:LINE: what is wrong" (the first error found).
 */
int gw_config_load(const char *path, struct gw_config **out, char *err, size_t errlen);

/* Same, from a string in memory (for tests); name is used in error messages. */
int gw_config_load_string(const char *yaml, size_t len, const char *name,
                          struct gw_config **out, char *err, size_t errlen);

void gw_config_destroy(struct gw_config *cfg);

/* Parse "host:port" or "[v6]:port" into addr (allocates host, stored without brackets;
 * port 1..65535).  Returns 0, or -1 with addr untouched. */
int gw_addr_parse(const char *s, struct gw_addr *addr);

/* The index in cfg->wan.peers of the peer named site (site names are unique), or -1 when
 * it is not a configured peer.  Every lookup of a peer by name goes through here; the
 * lists derived from the config (replication's links, status snapshots) keep its order. */
int gw_config_peer_index(const struct gw_config *cfg, const char *site);

/* Lower-case names as written in the config ("info", "everysec", "copy"); "unknown"
 * for a value out of range. */
const char *gw_log_level_name(enum gw_log_level level);
const char *gw_fsync_mode_name(enum gw_fsync_mode mode);
const char *gw_repl_mode_name(enum gw_repl_mode mode);

#endif
