/*
 * ctl — the pieces geogatectl is built from: a small blocking HTTP/1.0 client for the
 * admin listener, a JSON reader for its /status, a tiny memcached ASCII client for the
 * drill's load, and the drill itself.  A command-line tool: blocking sockets with
 * timeouts, no event loop, nothing shared with the daemon's code.  Single-threaded except
 * the drill's load thread (drill.c says what it shares).
 */
#ifndef GEOGATE_CTL_H
#define GEOGATE_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Exit codes of geogatectl. */
enum ctl_exit {
    CTL_EXIT_OK = 0,
    CTL_EXIT_REFUSED = 1, /* the gateway answered 4xx/5xx, or the drill found a problem */
    CTL_EXIT_USAGE = 2,
    CTL_EXIT_UNREACHABLE = 3, /* no connection, no answer, or an answer we cannot read */
    CTL_EXIT_MAX
};

/* ---- addresses (geogatectl.c) ---- */

/* Split "host:port" or "[v6]:port" into host and port strings.  Returns 0 or -EINVAL. */
int ctl_split_addr(const char *s, char *host, size_t hostlen, char *port, size_t portlen);

/* Monotonic and wall clocks in milliseconds. */
int64_t ctl_mono_ms(void);
int64_t ctl_wall_ms(void);

/* ---- sockets (ctl_http.c) ---- */

/* Connect to host:port before deadline (ctl_mono_ms() clock).  Returns a non-blocking fd,
 * or -ECONNREFUSED, -ETIMEDOUT, -EHOSTUNREACH (cannot resolve) or another negative errno. */
int ctl_tcp_connect(const char *host, const char *port, int64_t deadline);

/* Wait until fd is ready for events (POLLIN/POLLOUT).  Returns 0, -ETIMEDOUT or -EIO. */
int ctl_fd_wait(int fd, short events, int64_t deadline);

/* ---- HTTP (ctl_http.c) ---- */

struct ctl_http_reply {
    int status; /* 200, 404, ... */
    char *body; /* NUL-terminated; owned, free with ctl_http_reply_free */
    size_t len;
};

/*
 * One HTTP/1.0 request to host:port (no body), answer read until the server closes.
 * Returns 0 with *out filled (any status), or -ECONNREFUSED, -ETIMEDOUT, -EHOSTUNREACH
 * (cannot resolve or connect), -EPROTO (not an HTTP answer), -ENOMEM, -EIO; err says
 * what happened in words.
 */
int ctl_http(const char *host, const char *port, const char *method, const char *path,
             int timeout_ms, struct ctl_http_reply *out, char *err, size_t errlen);
void ctl_http_reply_free(struct ctl_http_reply *r);

/* ---- JSON (ctl_json.c) ---- */

enum ctl_json_type {
    CTL_JSON_NULL = 0,
    CTL_JSON_BOOL,
    CTL_JSON_NUMBER,
    CTL_JSON_STRING,
    CTL_JSON_ARRAY,
    CTL_JSON_OBJECT,
    CTL_JSON_TYPE_MAX
};

struct ctl_json {
    enum ctl_json_type type;
    char *key;              /* member name inside an object, else NULL */
    char *str;              /* CTL_JSON_STRING */
    double num;             /* CTL_JSON_NUMBER */
    bool b;                 /* CTL_JSON_BOOL */
    struct ctl_json *child; /* first element or member */
    struct ctl_json *next;  /* next sibling */
};

/* Parse text (len bytes).  Returns 0 and *out (free with ctl_json_free), or -EINVAL with
 * the position in err, or -ENOMEM. */
int ctl_json_parse(const char *text, size_t len, struct ctl_json **out, char *err, size_t errlen);
void ctl_json_free(struct ctl_json *j);

/* Lookups on an object; a missing member or a wrong type gives the default. */
const struct ctl_json *ctl_json_get(const struct ctl_json *obj, const char *key);
const char *ctl_json_str(const struct ctl_json *obj, const char *key, const char *def);
double ctl_json_num(const struct ctl_json *obj, const char *key, double def);
bool ctl_json_bool(const struct ctl_json *obj, const char *key, bool def);

/* Write s as a JSON string (quoted, escaped). */
void ctl_json_write_str(FILE *f, const char *s);

/* ---- memcached (ctl_mc.c) ---- */

struct ctl_mc {
    int fd; /* -1 while not connected */
    char host[256];
    char port[16];
    int timeout_ms;
    char buf[4096]; /* bytes read and not consumed yet */
    size_t len;
    char last_error[200];
};

/* Set up (not connected yet: every call connects when needed). */
void ctl_mc_init(struct ctl_mc *mc, const char *host, const char *port, int timeout_ms);
void ctl_mc_close(struct ctl_mc *mc);

/* get key: returns 1 hit, 0 miss, or a negative error (-ECONNREFUSED, -ETIMEDOUT, -EIO,
 * -EREMOTEIO for a SERVER_ERROR/ERROR reply, -EPROTO for an answer we cannot read);
 * mc->last_error says which.  After an error the connection is closed; the next call
 * reconnects. */
int ctl_mc_get(struct ctl_mc *mc, const char *key);

/* set key value with exptime (seconds).  Returns 0 (STORED) or a negative error as above
 * (-EREMOTEIO also for NOT_STORED). */
int ctl_mc_set(struct ctl_mc *mc, const char *key, const char *value, int exptime);

/* ---- the drill (drill.c) ---- */

struct ctl_target {
    char host[256];
    char port[16];
    char addr[300]; /* as given: host:port */
    int timeout_ms;
};

/* `geogatectl drill [options]`: argv starts after "drill".  Returns a ctl_exit code. */
int ctl_drill(const struct ctl_target *admin, int argc, char **argv);

/* The path of POST /failover, with to=SITE (percent-encoded) unless site is NULL
 * (geogatectl.c). */
void ctl_failover_path(const char *site, char *out, size_t len);

/* Percent-encode s for a query string (geogatectl.c). */
void ctl_urlencode(const char *s, char *out, size_t len);

/* Cut trailing newlines off s in place; returns s (geogatectl.c). */
const char *ctl_chomp(char *s);

/* GET /status and parse it.  Returns 0 and *out, or a ctl_exit code (message printed). */
int ctl_get_status(const struct ctl_target *admin, struct ctl_json **out);

/* ---- snapshots (ctl_snap.c) ---- */

/* `geogatectl snapshot --out FILE` / `geogatectl restore --in FILE`: argv starts after the
 * command.  Return a ctl_exit code (1 also for a damaged file, with the offset printed). */
int ctl_snapshot(const struct ctl_target *admin, int argc, char **argv);
int ctl_restore(const struct ctl_target *admin, int argc, char **argv);

/* ---- backfill (ctl_backfill.c) ---- */

/* `geogatectl backfill --from SITE [--rate N] [--prefix P] [--interval MS] [--detach]`:
 * start it, print progress until it ends, then a summary.  Returns a ctl_exit code (1 when
 * it was refused, failed or was cancelled). */
int ctl_backfill(const struct ctl_target *admin, int argc, char **argv);

#endif
