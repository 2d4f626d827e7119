/*
 * geogatectl — the operator's command line for one gateway's admin listener:
 *
 *   geogatectl --admin HOST:PORT status [--json]
 *   geogatectl --admin HOST:PORT drain
 *   geogatectl --admin HOST:PORT failover [--to SITE]
 *   geogatectl --admin HOST:PORT failback
 *   geogatectl --admin HOST:PORT drill [options]        (drill.c; `drill --help`)
 *   geogatectl --admin HOST:PORT snapshot --out FILE    (ctl_snap.c)
 *   geogatectl --admin HOST:PORT restore --in FILE
 *   geogatectl --admin HOST:PORT backfill --from SITE [--rate N] [--prefix P]  (ctl_backfill.c)
 *
 * It only speaks HTTP to the admin listener (and memcached, for the drill's load); it never
 * reads the gateway's config or files.  Exit codes: 0 done, 1 the gateway refused (its
 * message is printed) or the drill found a problem, 2 usage, 3 the admin listener could
 * not be reached or answered something unreadable.  Single-threaded (the drill adds one
 * load thread).
 */
#include "gateway/ctl/ctl.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CTL_DEFAULT_TIMEOUT_MS 5000

static void ctl_usage(FILE *f)
{
    fprintf(f, "usage: geogatectl --admin HOST:PORT [--timeout MS] COMMAND\n"
               "\n"
               "commands:\n"
               "  status [--json]     health, site mode, local nodes, peers (replication backlog,\n"
               "                      lag), warm-up and counters; --json prints /status as is\n"
               "  drain               /health answers 503 so the load balancer moves new\n"
               "                      connections away; existing ones are still served; stop the\n"
               "                      gateway with SIGTERM afterwards\n"
               "  failover [--to SITE]  send this site's reads to SITE (default: the best serving\n"
               "                      peer, as the automatic failover would pick)\n"
               "  failback            come back from a forced failover (through warm-up)\n"
               "  drill [options]     scripted disaster-recovery drill; `drill --help`\n"
               "  snapshot --out FILE write the site's live items (tombstones too) to FILE\n"
               "  restore --in FILE   apply a snapshot, newest version wins, expired items\n"
               "                      skipped; a damaged file stops at its first bad record\n"
               "                      (offset printed, nothing after it applied; exit 1)\n"
               "  backfill --from SITE [--rate ITEMS_PER_S] [--prefix P] [--detach]\n"
               "                      pull every live item of peer SITE (newest version wins),\n"
               "                      printing progress until it ends; --rate 0: no limit\n"
               "                      (default: the gateway's replication.backfill_rate)\n"
               "\n"
               "exit codes: 0 done, 1 refused by the gateway (its message is printed) or drill\n"
               "problem, 2 usage, 3 admin listener unreachable\n");
}

int64_t ctl_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ctl_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ctl_split_addr(const char *s, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *colon;
    size_t hl;
    char *end;
    unsigned long p;

    if (s == NULL || *s == '\0') {
        return -EINVAL;
    }
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL || rb[1] != ':') {
            return -EINVAL;
        }
        hl = (size_t)(rb - s - 1);
        s++;
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || strchr(s, ':') != colon) {
            return -EINVAL;
        }
        hl = (size_t)(colon - s);
    }
    if (hl == 0 || hl >= hostlen) {
        return -EINVAL;
    }
    p = strtoul(colon + 1, &end, 10);
    if (*end != '\0' || p == 0 || p > 65535 || colon[1] == '\0') {
        return -EINVAL;
    }
    memcpy(host, s, hl);
    host[hl] = '\0';
    snprintf(port, portlen, "%lu", p);
    return 0;
}

/* Strip the trailing newline of a server message for printing. */
const char *ctl_chomp(char *s)
{
    size_t n = strlen(s);

    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r')) {
        s[--n] = '\0';
    }
    return s;
}

int ctl_get_status(const struct ctl_target *admin, struct ctl_json **out)
{
    struct ctl_http_reply r;
    char err[512];
    int rc;

    rc = ctl_http(admin->host, admin->port, "GET", "/status", admin->timeout_ms, &r, err,
                  sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "geogatectl: %s\n", err);
        return CTL_EXIT_UNREACHABLE;
    }
    if (r.status != 200) {
        fprintf(stderr, "geogatectl: GET /status: %d: %s\n", r.status, ctl_chomp(r.body));
        ctl_http_reply_free(&r);
        return CTL_EXIT_REFUSED;
    }
    rc = ctl_json_parse(r.body, r.len, out, err, sizeof(err));
    ctl_http_reply_free(&r);
    if (rc != 0) {
        fprintf(stderr, "geogatectl: /status is not JSON: %s\n", err);
        return CTL_EXIT_UNREACHABLE;
    }
    return CTL_EXIT_OK;
}

static void ctl_print_time(const char *label, double ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    char buf[64];
    double ago = ((double)ctl_wall_ms() - ms) / 1000.0;

    gmtime_r(&t, &tm);
    strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%SZ", &tm);
    printf("%s%s (%.0fs ago)", label, buf, ago < 0 ? 0 : ago);
}

static const char *ctl_bytes(double n, char *buf, size_t len)
{
    if (n >= 1024.0 * 1024 * 1024) {
        snprintf(buf, len, "%.1f GiB", n / (1024.0 * 1024 * 1024));
    } else if (n >= 1024.0 * 1024) {
        snprintf(buf, len, "%.1f MiB", n / (1024.0 * 1024));
    } else if (n >= 1024.0) {
        snprintf(buf, len, "%.1f KiB", n / 1024.0);
    } else {
        snprintf(buf, len, "%.0f B", n);
    }
    return buf;
}

static void ctl_print_status(const struct ctl_json *st)
{
    const struct ctl_json *health = ctl_json_get(st, "health");
    const struct ctl_json *local = ctl_json_get(st, "local");
    const struct ctl_json *nodes = ctl_json_get(st, "nodes");
    const struct ctl_json *peers = ctl_json_get(st, "peers");
    const struct ctl_json *warm = ctl_json_get(st, "warmup");
    const struct ctl_json *reads = ctl_json_get(st, "failover_reads");
    const struct ctl_json *c = ctl_json_get(st, "counters");
    const char *mode = ctl_json_str(st, "mode", "?");
    char b1[32];

    printf("site      %s (gateway %.0f, geogate %s); clients on %s, admin on %s\n",
           ctl_json_str(st, "site", "?"), ctl_json_num(st, "gateway_id", 0),
           ctl_json_str(st, "version", "?"), ctl_json_str(st, "listen", "?"),
           ctl_json_str(st, "admin", "?"));
    printf("health    %s%s\n", ctl_json_bool(health, "ok", false) ? "" : "503 ",
           ctl_json_str(health, "reason", "?"));
    printf("mode      %s", mode);
    if (strcmp(mode, "local") != 0) {
        printf(" via %s%s", ctl_json_str(st, "peer", "?"),
               ctl_json_bool(st, "forced", false) ? " (forced)" : "");
    }
    ctl_print_time(", since ", ctl_json_num(st, "since_ms", 0));
    printf(", %.0f switches\n", ctl_json_num(st, "switches", 0));
    printf("local     %.0f/%.0f nodes up (healthy fraction %.2f; fails over below %.2f)\n",
           ctl_json_num(local, "nodes_up", 0), ctl_json_num(local, "nodes", 0),
           ctl_json_num(local, "healthy_fraction", 0), ctl_json_num(local, "threshold", 0));
    for (const struct ctl_json *n = nodes ? nodes->child : NULL; n != NULL; n = n->next) {
        printf("  %-24s %s", ctl_json_str(n, "node", "?"), ctl_json_str(n, "state", "?"));
        if (ctl_json_num(n, "failures", 0) > 0 || ctl_json_num(n, "down_events", 0) > 0) {
            printf(" (%.0f consecutive failures, down %.0f times)", ctl_json_num(n, "failures", 0),
                   ctl_json_num(n, "down_events", 0));
        }
        printf("\n");
    }
    if (peers == NULL || peers->child == NULL) {
        printf("peers     none (single-site gateway)\n");
    } else {
        printf("peers     (unacked = ours, not yet acknowledged by the peer: data at risk)\n");
    }
    for (const struct ctl_json *p = peers ? peers->child : NULL; p != NULL; p = p->next) {
        double off = ctl_json_num(p, "clock_offset_ms", NAN); /* null until measured */
        double refused = ctl_json_num(p, "clock_refused_batches", 0);

        printf("  %-12s link %s, %s, priority %.0f, rtt %.0f ms", ctl_json_str(p, "site", "?"),
               ctl_json_bool(p, "link_up", false) ? "up" : "DOWN",
               ctl_json_bool(p, "serving", false) ? "serving" : "NOT serving",
               ctl_json_num(p, "priority", 0), ctl_json_num(p, "rtt_ms", 0));
        if (!isnan(off)) {
            printf(", clock %+.3f s", off / 1000.0);
        }
        if (refused > 0) {
            printf(", %.0f batches REFUSED (clock skew)", refused);
        }
        printf("\n");
        printf("  %-12s unacked %.0f records, %s, oldest %.1fs; lag p50 %.0f ms, p99 %.0f ms; "
               "acked seq %.0f\n",
               "", ctl_json_num(p, "spool_records", 0),
               ctl_bytes(ctl_json_num(p, "spool_bytes", 0), b1, sizeof(b1)),
               ctl_json_num(p, "oldest_unacked_age_ms", 0) / 1000.0,
               ctl_json_num(p, "lag_p50_ms", 0), ctl_json_num(p, "lag_p99_ms", 0),
               ctl_json_num(p, "acked_seq", 0));
    }
    if (ctl_json_get(st, "clock") != NULL) {
        const struct ctl_json *ck = ctl_json_get(st, "clock");
        printf("clock     hybrid clock %+.3f s from the wall clock (at most %+.3f s since start; "
               "max_clock_skew %.0f ms); %.0f writes re-stamped, %.0f peer versions refused\n",
               ctl_json_num(ck, "hlc_lead_ms", 0) / 1000.0,
               ctl_json_num(ck, "hlc_max_lead_ms", 0) / 1000.0, ctl_json_num(ck, "max_skew_ms", 0),
               ctl_json_num(ck, "restamped", 0), ctl_json_num(ck, "refused_versions", 0));
    }
    if (peers != NULL && peers->child != NULL) {
        printf("warm-up   hit ratio %.2f (ends at %.2f), %.0f local hits, %.0f misses, %.0f "
               "filled from the peer\n",
               ctl_json_num(warm, "hit_ratio", 0), ctl_json_num(warm, "target_hit_ratio", 0),
               ctl_json_num(warm, "local_hits", 0), ctl_json_num(warm, "local_misses", 0),
               ctl_json_num(warm, "filled", 0));
        printf("peer reads %.0f (%.0f errors)\n", ctl_json_num(reads, "peer_reads", 0),
               ctl_json_num(reads, "peer_read_errors", 0));
    }
    printf("clients   %.0f connected (%.0f since start); get %.0f (hits %.0f, misses %.0f, "
           "errors %.0f); set %.0f; server errors %.0f\n",
           ctl_json_num(c, "curr_connections", 0), ctl_json_num(c, "total_connections", 0),
           ctl_json_num(c, "cmd_get", 0), ctl_json_num(c, "get_hits", 0),
           ctl_json_num(c, "get_misses", 0), ctl_json_num(c, "get_errors", 0),
           ctl_json_num(c, "cmd_set", 0), ctl_json_num(c, "server_errors", 0));
}

static int ctl_cmd_status(const struct ctl_target *admin, int argc, char **argv)
{
    struct ctl_json *st = NULL;
    bool json = false;
    int rc;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else {
            fprintf(stderr, "geogatectl: status: unknown option %s\n", argv[i]);
            return CTL_EXIT_USAGE;
        }
    }
    if (json) {
        struct ctl_http_reply r;
        char err[512];
        if (ctl_http(admin->host, admin->port, "GET", "/status", admin->timeout_ms, &r, err,
                     sizeof(err)) != 0) {
            fprintf(stderr, "geogatectl: %s\n", err);
            return CTL_EXIT_UNREACHABLE;
        }
        fwrite(r.body, 1, r.len, r.status == 200 ? stdout : stderr);
        rc = r.status == 200 ? CTL_EXIT_OK : CTL_EXIT_REFUSED;
        ctl_http_reply_free(&r);
        return rc;
    }
    rc = ctl_get_status(admin, &st);
    if (rc != CTL_EXIT_OK) {
        return rc;
    }
    ctl_print_status(st);
    ctl_json_free(st);
    return CTL_EXIT_OK;
}

/* POST path; print the gateway's message (stdout when done, stderr when refused). */
static int ctl_post(const struct ctl_target *admin, const char *what, const char *path)
{
    struct ctl_http_reply r;
    char err[512];
    int rc;

    if (ctl_http(admin->host, admin->port, "POST", path, admin->timeout_ms, &r, err, sizeof(err)) !=
        0) {
        fprintf(stderr, "geogatectl: %s\n", err);
        return CTL_EXIT_UNREACHABLE;
    }
    if (r.status >= 200 && r.status < 300) {
        printf("%s\n", ctl_chomp(r.body));
        rc = CTL_EXIT_OK;
    } else {
        fprintf(stderr, "geogatectl: %s refused (%d): %s\n", what, r.status, ctl_chomp(r.body));
        rc = CTL_EXIT_REFUSED;
    }
    ctl_http_reply_free(&r);
    return rc;
}

/* Percent-encode a site name for a query string. */
void ctl_urlencode(const char *s, char *out, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;

    for (; *s != '\0' && n + 4 < len; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            out[n++] = (char)c;
        } else {
            out[n++] = '%';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        }
    }
    out[n] = '\0';
}

/* Shared with drill.c: POST /failover with or without to=SITE. */
void ctl_failover_path(const char *site, char *out, size_t len)
{
    char enc[256];

    if (site == NULL) {
        snprintf(out, len, "/failover");
        return;
    }
    ctl_urlencode(site, enc, sizeof(enc));
    snprintf(out, len, "/failover?to=%s", enc);
}

static int ctl_cmd_failover(const struct ctl_target *admin, int argc, char **argv)
{
    const char *to = NULL;
    char path[300];

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--to") == 0 && i + 1 < argc) {
            to = argv[++i];
        } else if (strncmp(argv[i], "--to=", 5) == 0) {
            to = argv[i] + 5;
        } else {
            fprintf(stderr, "geogatectl: failover: unknown or incomplete option %s\n", argv[i]);
            return CTL_EXIT_USAGE;
        }
    }
    if (to != NULL && to[0] == '\0') {
        fprintf(stderr, "geogatectl: failover: --to needs a site name\n");
        return CTL_EXIT_USAGE;
    }
    ctl_failover_path(to, path, sizeof(path));
    return ctl_post(admin, "failover", path);
}

int main(int argc, char **argv)
{
    struct ctl_target admin;
    const char *addr = NULL;
    int i;

    memset(&admin, 0, sizeof(admin));
    admin.timeout_ms = CTL_DEFAULT_TIMEOUT_MS;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--admin") == 0 && i + 1 < argc) {
            addr = argv[++i];
        } else if (strncmp(argv[i], "--admin=", 8) == 0) {
            addr = argv[i] + 8;
        } else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
            admin.timeout_ms = atoi(argv[++i]);
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            ctl_usage(stdout);
            return CTL_EXIT_OK;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "geogatectl: unknown option %s\n", argv[i]);
            ctl_usage(stderr);
            return CTL_EXIT_USAGE;
        } else {
            break;
        }
    }
    if (i >= argc) {
        ctl_usage(stderr);
        return CTL_EXIT_USAGE;
    }
    if (addr == NULL) {
        addr = getenv("GEOGATE_ADMIN");
    }
    if (addr == NULL) {
        fprintf(stderr, "geogatectl: --admin HOST:PORT is required (or GEOGATE_ADMIN)\n");
        return CTL_EXIT_USAGE;
    }
    if (ctl_split_addr(addr, admin.host, sizeof(admin.host), admin.port, sizeof(admin.port)) != 0) {
        fprintf(stderr, "geogatectl: --admin %s: expected HOST:PORT\n", addr);
        return CTL_EXIT_USAGE;
    }
    if (admin.timeout_ms <= 0) {
        fprintf(stderr, "geogatectl: --timeout must be a positive number of milliseconds\n");
        return CTL_EXIT_USAGE;
    }
    snprintf(admin.addr, sizeof(admin.addr), "%s", addr);

    const char *cmd = argv[i];
    int cargc = argc - i - 1;
    char **cargv = argv + i + 1;
    if (strcmp(cmd, "status") == 0) {
        return ctl_cmd_status(&admin, cargc, cargv);
    }
    if (strcmp(cmd, "drain") == 0 || strcmp(cmd, "failback") == 0) {
        if (cargc != 0) {
            fprintf(stderr, "geogatectl: %s takes no options\n", cmd);
            return CTL_EXIT_USAGE;
        }
        return ctl_post(&admin, cmd, strcmp(cmd, "drain") == 0 ? "/drain" : "/failback");
    }
    if (strcmp(cmd, "failover") == 0) {
        return ctl_cmd_failover(&admin, cargc, cargv);
    }
    if (strcmp(cmd, "drill") == 0) {
        return ctl_drill(&admin, cargc, cargv);
    }
    if (strcmp(cmd, "snapshot") == 0) {
        return ctl_snapshot(&admin, cargc, cargv);
    }
    if (strcmp(cmd, "restore") == 0) {
        return ctl_restore(&admin, cargc, cargv);
    }
    if (strcmp(cmd, "backfill") == 0) {
        return ctl_backfill(&admin, cargc, cargv);
    }
    fprintf(stderr, "geogatectl: unknown command %s\n", cmd);
    ctl_usage(stderr);
    return CTL_EXIT_USAGE;
}
