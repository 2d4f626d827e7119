/*
 * drill — `geogatectl drill`: a scripted disaster-recovery drill against a live gateway.
 *
 *   status (must be local, with a serving peer) ──> set N drill keys through the gateway
 *   ──> wait until the peer acked them ──> read load starts (load thread) ──> baseline
 *   ──> backlog noted (= data at risk) ──> POST /failover ──> poll /status until
 *   failed_over (time to switch) and peer reads grow (reads served by the peer) ──> hold
 *   ──> POST /failback ──> poll until local (warm-up), at most --duration ──> tail
 *   ──> report (text on stdout, JSON with --report)
 *
 * It never touches memcached nodes or config files: everything goes through the admin
 * listener and the gateway's client port, so it runs against a real deployment.  An
 * interrupt (SIGINT/SIGTERM) after the failover still fails back before reporting.
 *
 * Threads: the main thread drives the steps and polls /status; --connections load threads
 * (one connection each) run the reads.  They share only struct drill_load's counters, under
 * its mutex.
 */
#include "gateway/ctl/ctl.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DRILL_MAX_PEERS 32
#define DRILL_MAX_CONNS 64
#define DRILL_MAX_PROBLEMS 8
#define DRILL_MAX_ERRORS 100000 /* error start times kept for classifying */
#define DRILL_MAX_SAMPLES (1u << 20) /* read latencies kept for the failed-over median */
#define DRILL_MAX_RTTS 1024          /* link round trips polled while failed over */
#define DRILL_RATIO_GOAL 1.1         /* a failed-over read should cost one WAN round trip */
#define DRILL_POLL_FAST_MS 50
#define DRILL_POLL_MS 250

static volatile sig_atomic_t drill_interrupted;

static void drill_on_signal(int sig)
{
    (void)sig;
    drill_interrupted = 1;
}

struct drill_opts {
    const char *to;        /* NULL: the gateway picks the best serving peer */
    const char *memcached; /* NULL: /status "listen" */
    const char *report;    /* JSON report file, or NULL */
    const char *prefix;
    int duration_s; /* longest wait for local after failback */
    int keys;
    int hold_s; /* time failed over */
    int baseline_s;
    int tail_s; /* reads after local, to show the steady state */
    int switch_timeout_s;
    int sync_timeout_s;
    int peer_wait_s; /* how long to wait for a serving peer before refusing */
    int ttl_s;
    double rate;     /* reads per second, all connections together */
    int connections; /* load connections (threads) */
    int mc_timeout_ms;
};

/* One second of the read load (by request start time). */
struct drill_second {
    uint32_t hits, misses, errors;
    uint64_t latency_us; /* summed over the reads that started in this second */
    char mode[16];       /* last mode /status showed in this second ("" if not polled) */
};

/* One answered read: when it started and how long it took. */
struct drill_sample {
    int64_t at_ms; /* start, ms since t0 */
    uint32_t us;
};

/* One load connection and its thread. */
struct drill_conn {
    struct drill_load *l;
    pthread_t thread;
    bool started;
    uint32_t seed;
    struct ctl_mc mc;
};

struct drill_load {
    struct drill_conn conns[DRILL_MAX_CONNS];
    int nconns;
    pthread_mutex_t lock;
    int stop; /* atomic */
    const struct drill_opts *o;
    int64_t t0; /* mono ms: the drill's start, second 0 */
    /* under lock */
    struct drill_second *secs;
    size_t nsecs;
    uint64_t hits, misses, errors;
    int64_t *err_at; /* start (ms since t0) of each failed read */
    size_t nerr;
    struct drill_sample *samples; /* every answered read, in completion order */
    size_t nsamples;
    char first_error[200];
};

struct drill_peer {
    char site[64];
    bool link_up, serving;
    double records, bytes, oldest_ms, acked_seq, rtt_ms;
};

/* What one /status poll told us. */
struct drill_status {
    char mode[16];
    char peer[64];
    double peer_reads, peer_read_errors;
    double warm_ratio, warm_filled, warm_hits, warm_misses;
    struct drill_peer peers[DRILL_MAX_PEERS];
    size_t npeers;
};

struct drill {
    const struct ctl_target *admin;
    struct drill_opts o;
    int64_t t0;    /* mono ms */
    int64_t wall0; /* unix ms at t0 */
    char site[64];
    char mc_host[256], mc_port[16], mc_addr[300];
    char expected_peer[64];
    struct drill_load load;
    int sets_ok, sets_failed;
    bool synced;
    int64_t sync_ms;
    struct drill_status at_failure; /* backlog = data at risk */
    /* times in ms since t0; -1 when it did not happen */
    int64_t t_load, t_fail, t_failed_over, t_peer_reads, t_failback, t_local, t_end;
    char failed_over_peer[64];
    int failover_http, failback_http;
    char failover_msg[256], failback_msg[256];
    int status_errors;
    char problems[DRILL_MAX_PROBLEMS][256];
    int nproblems;
    char notes[DRILL_MAX_PROBLEMS][256];
    int nnotes;
    /* the serving peer's link round trip (its last Health/Check, /status rtt_ms), one per
     * poll while failed over: the yardstick a failed-over read is measured against */
    double rtts[DRILL_MAX_RTTS];
    size_t nrtts;
};

static void drill_problem(struct drill *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void drill_note(struct drill *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void drill_problem(struct drill *d, const char *fmt, ...)
{
    va_list ap;

    if (d->nproblems >= DRILL_MAX_PROBLEMS) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(d->problems[d->nproblems++], sizeof(d->problems[0]), fmt, ap);
    va_end(ap);
}

static void drill_note(struct drill *d, const char *fmt, ...)
{
    va_list ap;

    if (d->nnotes >= DRILL_MAX_PROBLEMS) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(d->notes[d->nnotes++], sizeof(d->notes[0]), fmt, ap);
    va_end(ap);
}

static int64_t drill_now(const struct drill *d)
{
    return ctl_mono_ms() - d->t0;
}

/* A progress line, stamped with the drill's clock. */
static void drill_say(const struct drill *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void drill_say(const struct drill *d, const char *fmt, ...)
{
    va_list ap;

    printf("[%6.1fs] ", (double)drill_now(d) / 1000.0);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

/* Sleep ms unless interrupted.  Returns false when interrupted. */
static bool drill_sleep(int64_t ms)
{
    while (ms > 0 && !drill_interrupted) {
        int64_t step = ms > 50 ? 50 : ms;
        usleep((useconds_t)step * 1000);
        ms -= step;
    }
    return !drill_interrupted;
}

/* ---- the load thread ------------------------------------------------------------------ */

static int64_t drill_mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static struct drill_second *drill_sec(struct drill_load *l, int64_t ms_since_t0)
{
    size_t i = ms_since_t0 < 0 ? 0 : (size_t)(ms_since_t0 / 1000);

    return &l->secs[i < l->nsecs ? i : l->nsecs - 1];
}

static void *drill_load_main(void *arg)
{
    struct drill_conn *dc = arg;
    struct drill_load *l = dc->l;
    const struct drill_opts *o = l->o;
    double interval_ms = 1000.0 * o->connections / o->rate;
    double next = (double)ctl_mono_ms();
    uint32_t x = dc->seed; /* xorshift: which key next */

    while (!__atomic_load_n(&l->stop, __ATOMIC_ACQUIRE)) {
        char key[256];
        int64_t start;
        int rc;

        double now = (double)ctl_mono_ms();
        if (next > now) {
            usleep((useconds_t)((next - now) * 1000));
        } else if (now - next > 1000) {
            next = now; /* fell behind (a slow or failed read): do not burst to catch up */
        }
        next += interval_ms;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        snprintf(key, sizeof(key), "%s%u", o->prefix, x % (uint32_t)o->keys);
        start = ctl_mono_ms();
        int64_t start_us = drill_mono_us();
        rc = ctl_mc_get(&dc->mc, key);
        int64_t took_us = drill_mono_us() - start_us;
        pthread_mutex_lock(&l->lock);
        struct drill_second *s = drill_sec(l, start - l->t0);
        s->latency_us += (uint64_t)took_us;
        if (rc >= 0 && l->nsamples < DRILL_MAX_SAMPLES) {
            l->samples[l->nsamples].at_ms = start - l->t0;
            l->samples[l->nsamples++].us = (uint32_t)(took_us < UINT32_MAX ? took_us : UINT32_MAX);
        }
        if (rc == 1) {
            s->hits++;
            l->hits++;
        } else if (rc == 0) {
            s->misses++;
            l->misses++;
        } else {
            s->errors++;
            l->errors++;
            if (l->nerr < DRILL_MAX_ERRORS) {
                l->err_at[l->nerr++] = start - l->t0;
            }
            if (l->first_error[0] == '\0') {
                snprintf(l->first_error, sizeof(l->first_error), "%s", dc->mc.last_error);
            }
        }
        pthread_mutex_unlock(&l->lock);
        if (rc < 0 && rc != -EREMOTEIO) {
            usleep(20000); /* connection trouble: do not spin on reconnects */
        }
    }
    ctl_mc_close(&dc->mc);
    return NULL;
}

/* Start one thread per load connection.  Returns 0 or -EAGAIN (the ones started run on
 * and are stopped by drill_load_stop). */
static int drill_load_start(struct drill *d)
{
    struct drill_load *l = &d->load;

    l->nconns = d->o.connections;
    for (int i = 0; i < l->nconns; i++) {
        struct drill_conn *dc = &l->conns[i];
        dc->l = l;
        dc->seed = 2463534242u + 7919u * (uint32_t)i;
        ctl_mc_init(&dc->mc, d->mc_host, d->mc_port, d->o.mc_timeout_ms);
        if (pthread_create(&dc->thread, NULL, drill_load_main, dc) != 0) {
            return -EAGAIN;
        }
        dc->started = true;
    }
    return 0;
}

static void drill_load_stop(struct drill *d)
{
    struct drill_load *l = &d->load;

    __atomic_store_n(&l->stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < l->nconns; i++) {
        if (l->conns[i].started) {
            pthread_join(l->conns[i].thread, NULL);
            l->conns[i].started = false;
        }
    }
}

/* ---- talking to the admin listener ---------------------------------------------------- */

static void drill_copy_str(char *dst, size_t len, const char *src)
{
    snprintf(dst, len, "%s", src != NULL ? src : "");
}

/* GET /status into out; also stamps the mode on this second of the load.  Returns 0 or
 * -1 (counted; the drill goes on). */
static int drill_poll(struct drill *d, struct drill_status *out)
{
    struct ctl_http_reply r;
    struct ctl_json *st = NULL;
    char err[512];
    const struct ctl_json *peers, *reads, *warm;

    memset(out, 0, sizeof(*out));
    if (ctl_http(d->admin->host, d->admin->port, "GET", "/status", d->admin->timeout_ms, &r, err,
                 sizeof(err)) != 0) {
        d->status_errors++;
        return -1;
    }
    if (r.status != 200 || ctl_json_parse(r.body, r.len, &st, err, sizeof(err)) != 0) {
        ctl_http_reply_free(&r);
        d->status_errors++;
        return -1;
    }
    ctl_http_reply_free(&r);
    drill_copy_str(out->mode, sizeof(out->mode), ctl_json_str(st, "mode", "?"));
    drill_copy_str(out->peer, sizeof(out->peer), ctl_json_str(st, "peer", ""));
    reads = ctl_json_get(st, "failover_reads");
    out->peer_reads = ctl_json_num(reads, "peer_reads", 0);
    out->peer_read_errors = ctl_json_num(reads, "peer_read_errors", 0);
    warm = ctl_json_get(st, "warmup");
    out->warm_ratio = ctl_json_num(warm, "hit_ratio", 0);
    out->warm_filled = ctl_json_num(warm, "filled", 0);
    out->warm_hits = ctl_json_num(warm, "local_hits", 0);
    out->warm_misses = ctl_json_num(warm, "local_misses", 0);
    peers = ctl_json_get(st, "peers");
    for (const struct ctl_json *p = peers ? peers->child : NULL;
         p != NULL && out->npeers < DRILL_MAX_PEERS; p = p->next) {
        struct drill_peer *dp = &out->peers[out->npeers++];
        drill_copy_str(dp->site, sizeof(dp->site), ctl_json_str(p, "site", "?"));
        dp->link_up = ctl_json_bool(p, "link_up", false);
        dp->serving = ctl_json_bool(p, "serving", false);
        dp->records = ctl_json_num(p, "spool_records", 0);
        dp->bytes = ctl_json_num(p, "spool_bytes", 0);
        dp->oldest_ms = ctl_json_num(p, "oldest_unacked_age_ms", 0);
        dp->acked_seq = ctl_json_num(p, "acked_seq", 0);
        dp->rtt_ms = ctl_json_num(p, "rtt_ms", 0);
    }
    ctl_json_free(st);
    if (strcmp(out->mode, "failed_over") == 0 && d->nrtts < DRILL_MAX_RTTS) {
        for (size_t i = 0; i < out->npeers; i++) {
            if (strcmp(out->peers[i].site, out->peer) == 0 && out->peers[i].rtt_ms > 0) {
                d->rtts[d->nrtts++] = out->peers[i].rtt_ms;
            }
        }
    }
    if (d->load.secs != NULL) {
        pthread_mutex_lock(&d->load.lock);
        drill_copy_str(drill_sec(&d->load, drill_now(d))->mode, sizeof(d->load.secs[0].mode),
                       out->mode);
        pthread_mutex_unlock(&d->load.lock);
    }
    return 0;
}

/* POST path; keeps the status code and message.  Returns the HTTP status, or -1 when
 * the admin listener could not be reached (message in msg). */
static int drill_post(struct drill *d, const char *path, char *msg, size_t msglen)
{
    struct ctl_http_reply r;
    int code;
    size_t n;

    if (ctl_http(d->admin->host, d->admin->port, "POST", path, d->admin->timeout_ms, &r, msg,
                 msglen) != 0) {
        return -1;
    }
    code = r.status;
    drill_copy_str(msg, msglen, r.body);
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) {
        msg[--n] = '\0';
    }
    ctl_http_reply_free(&r);
    return code;
}

/* ---- the steps ------------------------------------------------------------------------ */

/* Status before anything: local, a serving peer (waited for a little: a gateway that just
 * started has not checked its peers' health yet), where clients connect.  Returns 0 or a
 * ctl_exit code. */
static int drill_check_start(struct drill *d)
{
    int64_t wait_until = drill_now(d) + (int64_t)d->o.peer_wait_s * 1000;
    bool waited = false;

    for (;;) {
        struct ctl_json *st = NULL;
        const struct ctl_json *peers;
        const char *mode, *listen;
        int rc, serving = 0;
        char peerlist[512] = "";
        size_t pl = 0;

        rc = ctl_get_status(d->admin, &st);
        if (rc != CTL_EXIT_OK) {
            return rc;
        }
        drill_copy_str(d->site, sizeof(d->site), ctl_json_str(st, "site", "?"));
        mode = ctl_json_str(st, "mode", "?");
        listen = d->o.memcached != NULL ? d->o.memcached : ctl_json_str(st, "listen", NULL);
        peers = ctl_json_get(st, "peers");
        for (const struct ctl_json *p = peers ? peers->child : NULL; p != NULL; p = p->next) {
            const char *site = ctl_json_str(p, "site", "?");
            bool ok = ctl_json_bool(p, "link_up", false) && ctl_json_bool(p, "serving", false);
            if (d->o.to == NULL || strcmp(site, d->o.to) == 0) {
                serving += ok;
            }
            if (pl < sizeof(peerlist)) {
                int w = snprintf(peerlist + pl, sizeof(peerlist) - pl, "%s%s (%s)", pl ? ", " : "",
                                 site, ok ? "serving" : "not serving");
                pl += w > 0 ? (size_t)w : 0;
            }
        }
        if (serving == 0 && peers != NULL && peers->child != NULL && strcmp(mode, "local") == 0 &&
            drill_now(d) < wait_until && !drill_interrupted) {
            if (!waited) {
                drill_say(d, "site %s: peers: %s; waiting up to %ds for a serving peer", d->site,
                          peerlist, d->o.peer_wait_s);
                waited = true;
            }
            ctl_json_free(st);
            drill_sleep(500);
            continue;
        }
        drill_say(d, "site %s via admin %s: mode %s; peers: %s", d->site, d->admin->addr, mode,
                  peerlist[0] ? peerlist : "none");
        if (strcmp(mode, "local") != 0) {
            fprintf(stderr,
                    "geogatectl: drill: the site is in mode %s (peer %s); a drill starts from "
                    "local: fail back first\n",
                    mode, ctl_json_str(st, "peer", "?"));
            rc = CTL_EXIT_REFUSED;
        } else if (peers == NULL || peers->child == NULL) {
            fprintf(stderr, "geogatectl: drill: %s has no peer sites: nothing to fail over to\n",
                    d->site);
            rc = CTL_EXIT_REFUSED;
        } else if (serving == 0) {
            fprintf(stderr, "geogatectl: drill: %s: a failover now would be refused\n",
                    d->o.to ? "that peer is not reachable or not serving" : "no peer is serving");
            rc = CTL_EXIT_REFUSED;
        } else if (listen == NULL || ctl_split_addr(listen, d->mc_host, sizeof(d->mc_host),
                                                    d->mc_port, sizeof(d->mc_port)) != 0) {
            fprintf(stderr,
                    "geogatectl: drill: no usable memcached address (%s): use --memcached\n",
                    listen ? listen : "none in /status");
            rc = CTL_EXIT_USAGE;
        }
        if (rc == CTL_EXIT_OK) {
            /* A gateway listening on every address is reached on loopback. */
            if (strcmp(d->mc_host, "0.0.0.0") == 0) {
                snprintf(d->mc_host, sizeof(d->mc_host), "127.0.0.1");
            } else if (strcmp(d->mc_host, "::") == 0) {
                snprintf(d->mc_host, sizeof(d->mc_host), "::1");
            }
            snprintf(d->mc_addr, sizeof(d->mc_addr), "%s:%s", d->mc_host, d->mc_port);
        }
        ctl_json_free(st);
        return rc;
    }
}

/* Write the drill keys through the gateway.  Returns 0 or a ctl_exit code. */
static int drill_set_keys(struct drill *d)
{
    struct ctl_mc mc;
    char key[256], value[128];

    ctl_mc_init(&mc, d->mc_host, d->mc_port, d->o.mc_timeout_ms);
    for (int i = 0; i < d->o.keys && !drill_interrupted; i++) {
        snprintf(key, sizeof(key), "%s%d", d->o.prefix, i);
        snprintf(value, sizeof(value), "geogate drill key %d written %" PRId64, i, d->wall0);
        if (ctl_mc_set(&mc, key, value, d->o.ttl_s) == 0) {
            d->sets_ok++;
            continue;
        }
        d->sets_failed++;
        if (d->sets_ok == 0 && d->sets_failed >= 3) {
            fprintf(stderr, "geogatectl: drill: cannot write through %s: %s\n", d->mc_addr,
                    mc.last_error);
            ctl_mc_close(&mc);
            return CTL_EXIT_UNREACHABLE;
        }
    }
    ctl_mc_close(&mc);
    drill_say(d, "wrote %d drill keys (%s0..%d) through %s, %d failed", d->sets_ok, d->o.prefix,
              d->o.keys - 1, d->mc_addr, d->sets_failed);
    if (d->sets_failed > d->o.keys / 100) {
        drill_problem(d, "%d of %d drill keys could not be written", d->sets_failed, d->o.keys);
    }
    return CTL_EXIT_OK;
}

/* Wait until the peer(s) acked everything, so the keys are there after the switch. */
static void drill_wait_sync(struct drill *d)
{
    int64_t start = drill_now(d), deadline = start + (int64_t)d->o.sync_timeout_s * 1000;
    struct drill_status s;

    while (!drill_interrupted && drill_now(d) < deadline) {
        if (drill_poll(d, &s) == 0) {
            bool done = true;
            for (size_t i = 0; i < s.npeers; i++) {
                if (d->o.to != NULL && strcmp(s.peers[i].site, d->o.to) != 0) {
                    continue;
                }
                if (!s.peers[i].link_up || s.peers[i].records > 0) {
                    done = false;
                }
            }
            if (done) {
                d->synced = true;
                d->sync_ms = drill_now(d) - start;
                drill_say(d, "peers acked every spooled write (%.1fs)", d->sync_ms / 1000.0);
                return;
            }
        }
        drill_sleep(DRILL_POLL_MS);
    }
    drill_note(d,
               "the peer had not acked every write %ds after the keys were set: drill keys "
               "may miss after the switch",
               d->o.sync_timeout_s);
    drill_say(d, "peers still behind after %ds; going on", d->o.sync_timeout_s);
}

static void drill_failover(struct drill *d)
{
    char path[300];
    struct drill_status s;
    int64_t deadline;
    double reads0;

    if (drill_poll(d, &d->at_failure) != 0) {
        drill_problem(d, "/status unreadable right before the failover");
    }
    reads0 = d->at_failure.peer_reads;
    for (size_t i = 0; i < d->at_failure.npeers; i++) {
        const struct drill_peer *p = &d->at_failure.peers[i];
        drill_say(d, "backlog at failure, %s: %.0f records, %.0f bytes not acked (oldest %.0f ms)",
                  p->site, p->records, p->bytes, p->oldest_ms);
    }
    ctl_failover_path(d->o.to, path, sizeof(path));
    d->t_fail = drill_now(d);
    d->failover_http = drill_post(d, path, d->failover_msg, sizeof(d->failover_msg));
    drill_say(d, "POST %s: %d %s", path, d->failover_http, d->failover_msg);
    if (d->failover_http != 200) {
        drill_problem(d, "failover refused (%d): %s", d->failover_http, d->failover_msg);
        return;
    }
    deadline = d->t_fail + (int64_t)d->o.switch_timeout_s * 1000;
    while (!drill_interrupted && drill_now(d) < deadline) {
        if (drill_poll(d, &s) == 0) {
            if (d->t_failed_over < 0 && strcmp(s.mode, "failed_over") == 0) {
                d->t_failed_over = drill_now(d);
                drill_copy_str(d->failed_over_peer, sizeof(d->failed_over_peer), s.peer);
                drill_say(d, "status: failed_over via %s after %" PRId64 " ms", s.peer,
                          d->t_failed_over - d->t_fail);
            }
            if (d->t_failed_over >= 0 && d->t_peer_reads < 0 && s.peer_reads > reads0) {
                d->t_peer_reads = drill_now(d);
                drill_say(d, "reads served by %s after %" PRId64 " ms", s.peer,
                          d->t_peer_reads - d->t_fail);
            }
            if (d->t_failed_over >= 0 && d->t_peer_reads >= 0) {
                break;
            }
        }
        drill_sleep(DRILL_POLL_FAST_MS);
    }
    if (d->t_failed_over < 0 && !drill_interrupted) {
        drill_problem(d, "the site did not report failed_over within %ds", d->o.switch_timeout_s);
    } else if (d->t_peer_reads < 0 && !drill_interrupted) {
        drill_problem(d, "no read was served by the peer within %ds of the failover",
                      d->o.switch_timeout_s);
    }
}

static void drill_hold(struct drill *d)
{
    int64_t until =
        (d->t_failed_over >= 0 ? d->t_failed_over : d->t_fail) + (int64_t)d->o.hold_s * 1000;
    struct drill_status s;

    drill_say(d, "holding failed over for %ds", d->o.hold_s);
    while (!drill_interrupted && drill_now(d) < until) {
        drill_poll(d, &s);
        drill_sleep(until - drill_now(d) < 1000 ? until - drill_now(d) : 1000);
    }
}

/* Fail back (also after an interrupt); retry while the local pool is not healthy yet. */
static void drill_failback(struct drill *d)
{
    int64_t deadline = drill_now(d) + (int64_t)d->o.duration_s * 1000;
    struct drill_status s;

    for (;;) {
        d->failback_http = drill_post(d, "/failback", d->failback_msg, sizeof(d->failback_msg));
        drill_say(d, "POST /failback: %d %s", d->failback_http, d->failback_msg);
        if (d->failback_http == 200) {
            d->t_failback = drill_now(d);
            return;
        }
        if (d->failback_http == 409 && drill_poll(d, &s) == 0 &&
            strcmp(s.mode, "failed_over") != 0) {
            /* Someone (the automatic failover, another operator) already moved it. */
            drill_note(d, "failback found the site already in mode %s", s.mode);
            d->t_failback = drill_now(d);
            return;
        }
        if (drill_now(d) >= deadline) {
            drill_problem(d, "failback refused for %ds (%d): %s; the site is still failed over",
                          d->o.duration_s, d->failback_http, d->failback_msg);
            return;
        }
        sleep(1); /* not drill_sleep: an interrupt must not stop the failback */
    }
}

static void drill_watch_warmup(struct drill *d)
{
    int64_t deadline = d->t_failback + (int64_t)d->o.duration_s * 1000;
    int64_t next_say = 0;
    struct drill_status s;

    while (!drill_interrupted && drill_now(d) < deadline) {
        if (drill_poll(d, &s) == 0) {
            if (strcmp(s.mode, "local") == 0) {
                d->t_local = drill_now(d);
                drill_say(d, "status: local again %.1fs after the failback",
                          (d->t_local - d->t_failback) / 1000.0);
                return;
            }
            if (drill_now(d) >= next_say) {
                drill_say(d, "status: %s, warm-up hit ratio %.2f, %.0f filled from the peer",
                          s.mode, s.warm_ratio, s.warm_filled);
                next_say = drill_now(d) + 1000;
            }
        }
        drill_sleep(DRILL_POLL_MS);
    }
    if (!drill_interrupted) {
        drill_problem(d, "still not local %ds after the failback (warm-up not finished)",
                      d->o.duration_s);
    }
}

static void drill_tail(struct drill *d)
{
    int64_t until = drill_now(d) + (int64_t)d->o.tail_s * 1000;
    struct drill_status s;

    while (!drill_interrupted && drill_now(d) < until) {
        drill_poll(d, &s);
        drill_sleep(until - drill_now(d) < 1000 ? until - drill_now(d) : 1000);
    }
}

/* ---- the report ----------------------------------------------------------------------- */

struct drill_window {
    uint64_t hits, misses, errors;
    uint64_t latency_us;
};

/* Sum the load's seconds whose start is in [from, to) ms since t0 (whole seconds). */
static struct drill_window drill_sum(const struct drill *d, int64_t from, int64_t to)
{
    struct drill_window w = {0, 0, 0, 0};

    if (from < 0) {
        from = 0;
    }
    for (int64_t s = from / 1000; s * 1000 < to && (size_t)s < d->load.nsecs; s++) {
        w.hits += d->load.secs[s].hits;
        w.misses += d->load.secs[s].misses;
        w.errors += d->load.secs[s].errors;
        w.latency_us += d->load.secs[s].latency_us;
    }
    return w;
}

/* The load's phases as windows of whole seconds that lie entirely inside each phase (the
 * second in which a switch happens mixes both sides; the per-second timeline shows it):
 * all of it, before the failover request, failed over (from one second after the switch
 * was seen), and the first 10 s after the failback. */
static void drill_windows(const struct drill *d, struct drill_window *all,
                          struct drill_window *before, struct drill_window *fo,
                          struct drill_window *fb10)
{
    static const struct drill_window none = {0, 0, 0, 0};

    *all = drill_sum(d, d->t_load, d->t_end);
    *before = drill_sum(d, d->t_load, (d->t_fail >= 0 ? d->t_fail : d->t_end) - 999);
    *fo = d->t_failed_over >= 0 && d->t_failback > d->t_failed_over + 1999
              ? drill_sum(d, d->t_failed_over + 1000, d->t_failback - 999)
              : none;
    *fb10 = d->t_failback >= 0 ? drill_sum(d, d->t_failback + 999, d->t_failback + 10999) : none;
}

static double drill_ratio(struct drill_window w)
{
    return w.hits + w.misses > 0 ? (double)w.hits / (double)(w.hits + w.misses) : -1;
}

/* Mean read latency in ms, -1 without reads. */
static double drill_latency(struct drill_window w)
{
    uint64_t n = w.hits + w.misses + w.errors;

    return n > 0 ? (double)w.latency_us / 1000.0 / (double)n : -1;
}

/* Failed-over reads against the link they crossed: one read should cost one round trip of
 * the link to the serving peer, whatever the number of clients, so the ratio of the median
 * read to that round trip is the figure to watch (goal DRILL_RATIO_GOAL).  Medians, not
 * means: a read that waited for a second round trip shows up as a ratio near 2 for the
 * clients that waited, and a mean hides how many did. */
struct drill_peer_read {
    size_t reads;       /* answered reads in the failed-over window */
    double median_ms;   /* -1 without reads */
    double p90_ms;      /* -1 without reads */
    double link_rtt_ms; /* median of the polled rtt_ms, -1 when none was polled */
    double ratio;       /* median_ms / link_rtt_ms, -1 when either is missing */
};

static int drill_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

static int drill_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* The same window as drill_windows' "failed over": whole seconds inside the phase. */
static struct drill_peer_read drill_peer_read(const struct drill *d)
{
    struct drill_peer_read pr = {0, -1, -1, -1, -1};
    int64_t from = d->t_failed_over + 1000, to = d->t_failback - 999;
    uint32_t *us;
    size_t n = 0;

    if (d->nrtts > 0) {
        double r[DRILL_MAX_RTTS];

        memcpy(r, d->rtts, d->nrtts * sizeof(r[0]));
        qsort(r, d->nrtts, sizeof(r[0]), drill_cmp_double);
        pr.link_rtt_ms = r[d->nrtts / 2];
    }
    if (d->t_failed_over < 0 || d->t_failback <= d->t_failed_over + 1999 ||
        d->load.nsamples == 0) {
        return pr;
    }
    us = malloc(d->load.nsamples * sizeof(*us));
    if (us == NULL) {
        return pr;
    }
    for (size_t i = 0; i < d->load.nsamples; i++) {
        const struct drill_sample *x = &d->load.samples[i];

        if (x->at_ms >= (from / 1000) * 1000 && x->at_ms < ((to + 999) / 1000) * 1000) {
            us[n++] = x->us;
        }
    }
    if (n > 0) {
        qsort(us, n, sizeof(*us), drill_cmp_u32);
        pr.reads = n;
        pr.median_ms = us[n / 2] / 1000.0;
        pr.p90_ms = us[(n * 9) / 10] / 1000.0;
        if (pr.link_rtt_ms > 0) {
            pr.ratio = pr.median_ms / pr.link_rtt_ms;
        }
    }
    free(us);
    return pr;
}

/* Errors of reads that started in [from, to) ms since t0 (exact, from the error list). */
static uint64_t drill_errors_in(const struct drill *d, int64_t from, int64_t to)
{
    uint64_t n = 0;

    for (size_t i = 0; i < d->load.nerr; i++) {
        if (d->load.err_at[i] >= from && d->load.err_at[i] < to) {
            n++;
        }
    }
    return n;
}

static void drill_pct(FILE *f, double r)
{
    if (r < 0) {
        fprintf(f, "   -  ");
    } else {
        fprintf(f, "%5.1f%%", r * 100.0);
    }
}

static void drill_json_ratio(FILE *f, double r)
{
    if (r < 0) {
        fprintf(f, "null");
    } else {
        fprintf(f, "%.4f", r);
    }
}

static void drill_json_ms(FILE *f, int64_t t, int64_t since)
{
    if (t < 0 || since < 0) {
        fprintf(f, "null");
    } else {
        fprintf(f, "%" PRId64, t - since);
    }
}

/* Error counts by phase: before the failover request, while switching (in flight at the
 * moment of failure: allowed), failed over, warm-up and after. */
struct drill_phases {
    uint64_t before, switching, failed_over, after_failback, after_switch;
};

static struct drill_phases drill_error_phases(const struct drill *d)
{
    struct drill_phases p;
    int64_t end = INT64_MAX;
    int64_t fail = d->t_fail >= 0 ? d->t_fail : end;
    int64_t over = d->t_failed_over >= 0 ? d->t_failed_over : end;
    int64_t back = d->t_failback >= 0 ? d->t_failback : end;

    if (over < fail) {
        over = fail;
    }
    p.before = drill_errors_in(d, 0, fail);
    p.switching = drill_errors_in(d, fail, over);
    p.failed_over = drill_errors_in(d, over, back > over ? back : over);
    p.after_failback = drill_errors_in(d, back, end);
    p.after_switch = over < end ? drill_errors_in(d, over, end) : 0;
    return p;
}

/* The timeline's zero: the failover request (the load's start if there was none). */
static int64_t drill_ref(const struct drill *d)
{
    return d->t_fail >= 0 ? d->t_fail : d->t_load;
}

/* The mode of second s: the last one polled at or before it. */
static const char *drill_mode_at(const struct drill *d, size_t s)
{
    for (size_t i = s + 1; i-- > 0;) {
        if (d->load.secs[i].mode[0] != '\0') {
            return d->load.secs[i].mode;
        }
    }
    return "local";
}

static void drill_print_report(const struct drill *d)
{
    const struct drill_phases ph = drill_error_phases(d);
    struct drill_window all, before, fo, fb10;
    struct drill_peer_read pr;
    double total_records = 0, total_bytes = 0;

    drill_windows(d, &all, &before, &fo, &fb10);
    pr = drill_peer_read(d);
    printf("\n== geogate drill report: site %s (admin %s, clients %s)\n", d->site, d->admin->addr,
           d->mc_addr);
    printf("load             %d keys, up to %.0f reads/s on %d connections; %" PRIu64
           " reads: %" PRIu64 " hits, %" PRIu64 " misses, %" PRIu64 " errors\n",
           d->o.keys, d->o.rate, d->o.connections, all.hits + all.misses + all.errors, all.hits,
           all.misses, all.errors);
    printf("backlog at failure (data at risk: written here, not yet acked by the peer):\n");
    for (size_t i = 0; i < d->at_failure.npeers; i++) {
        const struct drill_peer *p = &d->at_failure.peers[i];
        printf("  %-14s %.0f records, %.0f bytes, oldest %.0f ms; link %s, %s\n", p->site,
               p->records, p->bytes, p->oldest_ms, p->link_up ? "up" : "down",
               p->serving ? "serving" : "not serving");
        total_records += p->records;
        total_bytes += p->bytes;
    }
    printf("  %-14s %.0f records, %.0f bytes\n", "total", total_records, total_bytes);
    if (d->t_failed_over >= 0) {
        printf("time to switch   %" PRId64 " ms to failed_over via %s",
               d->t_failed_over - d->t_fail, d->failed_over_peer);
        if (d->t_peer_reads >= 0) {
            printf("; reads served by the peer after %" PRId64 " ms", d->t_peer_reads - d->t_fail);
        }
        printf("\n");
    } else {
        printf("time to switch   did not switch (%d: %s)\n", d->failover_http, d->failover_msg);
    }
    printf("errors           %" PRIu64 " before the failover, %" PRIu64
           " while switching (in flight), %" PRIu64 " after the switch (%" PRIu64
           " failed over, %" PRIu64 " after failback)\n",
           ph.before, ph.switching, ph.after_switch, ph.failed_over, ph.after_failback);
    if (d->load.first_error[0] != '\0') {
        printf("first error      %s\n", d->load.first_error);
    }
    printf("hit ratio        before ");
    drill_pct(stdout, drill_ratio(before));
    printf(", failed over ");
    drill_pct(stdout, drill_ratio(fo));
    printf(", first 10 s after failback ");
    drill_pct(stdout, drill_ratio(fb10));
    printf("\nread latency     before %.1f ms, failed over %.1f ms, first 10 s after failback "
           "%.1f ms (mean; -1: no reads)\n",
           drill_latency(before), drill_latency(fo), drill_latency(fb10));
    if (pr.reads > 0) {
        printf("peer reads       median %.1f ms, p90 %.1f ms over %zu failed-over reads; link RTT ",
               pr.median_ms, pr.p90_ms, pr.reads);
        if (pr.ratio > 0) {
            printf("%.0f ms (%s's Health/Check round trip, median of %zu polls)\n"
                   "peer read latency / link RTT  %.2f (goal <= %.1f: one WAN round trip per "
                   "read)\n",
                   pr.link_rtt_ms, d->failed_over_peer, d->nrtts, pr.ratio, DRILL_RATIO_GOAL);
        } else {
            printf("not reported by /status\n");
        }
    }
    if (d->t_failback >= 0) {
        if (d->t_local >= 0) {
            printf("warm-up          local again %.1f s after the failback\n",
                   (d->t_local - d->t_failback) / 1000.0);
        } else {
            printf("warm-up          not finished within %d s\n", d->o.duration_s);
        }
    }
    printf("hit ratio over time (seconds from the failover request; mode as /status said):\n");
    for (size_t s = (size_t)(d->t_load / 1000); s * 1000 < (size_t)d->t_end && s < d->load.nsecs;
         s++) {
        const struct drill_second *x = &d->load.secs[s];
        struct drill_window w = {x->hits, x->misses, x->errors, x->latency_us};
        printf("  %+7.1fs  %-12s ", ((double)s * 1000 - (double)drill_ref(d)) / 1000.0,
               drill_mode_at(d, s));
        drill_pct(stdout, drill_ratio(w));
        printf("  %5u hits %5u misses %3u errors  %7.1f ms\n", x->hits, x->misses, x->errors,
               drill_latency(w));
    }
    for (int i = 0; i < d->nnotes; i++) {
        printf("note             %s\n", d->notes[i]);
    }
    for (int i = 0; i < d->nproblems; i++) {
        printf("PROBLEM          %s\n", d->problems[i]);
    }
    printf("result           %s\n", d->nproblems == 0 ? "OK" : "FAILED");
    fflush(stdout);
}

static int drill_write_json(const struct drill *d, const char *path)
{
    const struct drill_phases ph = drill_error_phases(d);
    struct drill_window all, before, fo, fb10;
    struct drill_peer_read pr;
    double total_records = 0, total_bytes = 0;
    FILE *f = fopen(path, "w");

    drill_windows(d, &all, &before, &fo, &fb10);
    if (f == NULL) {
        fprintf(stderr, "geogatectl: drill: cannot write %s: %s\n", path, strerror(errno));
        return -errno;
    }
    fprintf(f, "{\n  \"site\": ");
    ctl_json_write_str(f, d->site);
    fprintf(f, ",\n  \"admin\": ");
    ctl_json_write_str(f, d->admin->addr);
    fprintf(f, ",\n  \"memcached\": ");
    ctl_json_write_str(f, d->mc_addr);
    fprintf(f, ",\n  \"started_ms\": %" PRId64 ",\n  \"result\": \"%s\",\n  \"problems\": [",
            d->wall0, d->nproblems == 0 ? "ok" : "failed");
    for (int i = 0; i < d->nproblems; i++) {
        fprintf(f, "%s", i ? ", " : "");
        ctl_json_write_str(f, d->problems[i]);
    }
    fprintf(f, "],\n  \"notes\": [");
    for (int i = 0; i < d->nnotes; i++) {
        fprintf(f, "%s", i ? ", " : "");
        ctl_json_write_str(f, d->notes[i]);
    }
    fprintf(f,
            "],\n  \"options\": {\"keys\": %d, \"rate\": %.1f, \"duration_s\": %d, \"hold_s\": "
            "%d, \"baseline_s\": %d, \"connections\": %d, \"to\": ",
            d->o.keys, d->o.rate, d->o.duration_s, d->o.hold_s, d->o.baseline_s, d->o.connections);
    if (d->o.to != NULL) {
        ctl_json_write_str(f, d->o.to);
    } else {
        fprintf(f, "null");
    }
    fprintf(f, "},\n  \"keys_written\": %d,\n  \"keys_failed\": %d,\n", d->sets_ok, d->sets_failed);
    fprintf(f, "  \"replicated_before_failure\": %s,\n", d->synced ? "true" : "false");
    fprintf(f, "  \"backlog_at_failure\": [");
    for (size_t i = 0; i < d->at_failure.npeers; i++) {
        const struct drill_peer *p = &d->at_failure.peers[i];
        fprintf(f, "%s\n    {\"peer\": ", i ? "," : "");
        ctl_json_write_str(f, p->site);
        fprintf(f,
                ", \"spool_records\": %.0f, \"spool_bytes\": %.0f, \"oldest_unacked_age_ms\": "
                "%.0f, \"acked_seq\": %.0f, \"link_up\": %s, \"serving\": %s}",
                p->records, p->bytes, p->oldest_ms, p->acked_seq, p->link_up ? "true" : "false",
                p->serving ? "true" : "false");
        total_records += p->records;
        total_bytes += p->bytes;
    }
    fprintf(f, "%s],\n", d->at_failure.npeers ? "\n  " : "");
    fprintf(f, "  \"backlog_total\": {\"spool_records\": %.0f, \"spool_bytes\": %.0f},\n",
            total_records, total_bytes);
    fprintf(f, "  \"failover\": {\"http_status\": %d, \"message\": ", d->failover_http);
    ctl_json_write_str(f, d->failover_msg);
    fprintf(f, ", \"peer\": ");
    ctl_json_write_str(f, d->failed_over_peer);
    fprintf(f, ", \"time_to_failed_over_ms\": ");
    drill_json_ms(f, d->t_failed_over, d->t_fail);
    fprintf(f, ", \"time_to_peer_reads_ms\": ");
    drill_json_ms(f, d->t_peer_reads, d->t_fail);
    fprintf(f, "},\n  \"failback\": {\"http_status\": %d, \"message\": ", d->failback_http);
    ctl_json_write_str(f, d->failback_msg);
    fprintf(f, ", \"after_failover_ms\": ");
    drill_json_ms(f, d->t_failback, d->t_fail);
    fprintf(f, ", \"time_to_local_ms\": ");
    drill_json_ms(f, d->t_local, d->t_failback);
    fprintf(f, ", \"reached_local\": %s},\n", d->t_local >= 0 ? "true" : "false");
    fprintf(f,
            "  \"reads\": {\"total\": %" PRIu64 ", \"hits\": %" PRIu64 ", \"misses\": %" PRIu64
            ", \"errors\": %" PRIu64 ", \"errors_before_failover\": %" PRIu64
            ", \"errors_while_switching\": %" PRIu64 ", \"errors_after_switch\": %" PRIu64
            ", \"errors_failed_over\": %" PRIu64 ", \"errors_after_failback\": %" PRIu64,
            all.hits + all.misses + all.errors, all.hits, all.misses, all.errors, ph.before,
            ph.switching, ph.after_switch, ph.failed_over, ph.after_failback);
    fprintf(f, ", \"first_error\": ");
    ctl_json_write_str(f, d->load.first_error);
    fprintf(f, "},\n  \"hit_ratio\": {\"before\": ");
    drill_json_ratio(f, drill_ratio(before));
    fprintf(f, ", \"failed_over\": ");
    drill_json_ratio(f, drill_ratio(fo));
    fprintf(f, ", \"first_10s_after_failback\": ");
    drill_json_ratio(f, drill_ratio(fb10));
    fprintf(f, "},\n  \"latency_ms\": {\"before\": ");
    drill_json_ratio(f, drill_latency(before));
    fprintf(f, ", \"failed_over\": ");
    drill_json_ratio(f, drill_latency(fo));
    fprintf(f, ", \"first_10s_after_failback\": ");
    drill_json_ratio(f, drill_latency(fb10));
    pr = drill_peer_read(d);
    fprintf(f, "},\n  \"peer_read\": {\"reads\": %zu, \"median_ms\": ", pr.reads);
    drill_json_ratio(f, pr.median_ms);
    fprintf(f, ", \"p90_ms\": ");
    drill_json_ratio(f, pr.p90_ms);
    fprintf(f, ", \"link_rtt_ms\": ");
    drill_json_ratio(f, pr.link_rtt_ms);
    fprintf(f, ", \"latency_per_link_rtt\": ");
    drill_json_ratio(f, pr.ratio);
    fprintf(f, ", \"goal\": %.1f", DRILL_RATIO_GOAL);
    fprintf(f, "},\n  \"timeline\": [");
    bool first = true;
    for (size_t s = (size_t)(d->t_load / 1000); s * 1000 < (size_t)d->t_end && s < d->load.nsecs;
         s++) {
        const struct drill_second *x = &d->load.secs[s];
        struct drill_window w = {x->hits, x->misses, x->errors, x->latency_us};
        fprintf(f, "%s\n    {\"t_s\": %.1f, \"mode\": ", first ? "" : ",",
                ((double)s * 1000 - (double)drill_ref(d)) / 1000.0);
        ctl_json_write_str(f, drill_mode_at(d, s));
        fprintf(f, ", \"hits\": %u, \"misses\": %u, \"errors\": %u, \"hit_ratio\": ", x->hits,
                x->misses, x->errors);
        drill_json_ratio(f, drill_ratio(w));
        fprintf(f, ", \"latency_ms\": ");
        drill_json_ratio(f, drill_latency(w));
        fprintf(f, "}");
        first = false;
    }
    fprintf(f, "%s]\n}\n", first ? "" : "\n  ");
    if (fclose(f) != 0) {
        fprintf(stderr, "geogatectl: drill: writing %s: %s\n", path, strerror(errno));
        return -EIO;
    }
    return 0;
}

/* ---- options and the whole drill ------------------------------------------------------ */

static void drill_usage(FILE *f)
{
    fprintf(f,
            "usage: geogatectl --admin HOST:PORT drill [options]\n"
            "  --to SITE          fail over to SITE (default: the best serving peer)\n"
            "  --memcached H:P    the gateway's client address (default: \"listen\" in /status)\n"
            "  --keys N           drill keys written, then read (default 1000)\n"
            "  --rate R           reads per second during the drill (default 500)\n"
            "  --connections N    load connections sharing that rate (default 4); each reads\n"
            "                     one key at a time, so failed over each connection manages\n"
            "                     about 1000 / (peer round trip in ms) reads per second\n"
            "  --baseline S       seconds of reads before the failover (default 3)\n"
            "  --hold S           seconds failed over before failing back (default 5)\n"
            "  --duration S       longest wait for warm-up to end after failback (default 60)\n"
            "  --tail S           seconds of reads after local again (default 2)\n"
            "  --report FILE      also write the report as JSON\n"
            "  --prefix P         drill key prefix (default geogate-drill:)\n"
            "  --ttl S            drill keys' expiry in seconds (default 3600)\n"
            "  --sync-timeout S   wait at most this long for the peers to ack the drill keys\n"
            "                     before the failover (default 15)\n"
            "exit code 0 when the drill went as it should: switched, no read errors after the\n"
            "switch, failed back and local again within --duration; 1 otherwise.\n");
}

static int drill_int_arg(const char *name, const char *v, int min, int max, int *out)
{
    char *end;
    long n = strtol(v, &end, 10);

    if (*v == '\0' || *end != '\0' || n < min || n > max) {
        fprintf(stderr, "geogatectl: drill: %s wants a number from %d to %d\n", name, min, max);
        return -EINVAL;
    }
    *out = (int)n;
    return 0;
}

static int drill_parse(struct drill_opts *o, int argc, char **argv)
{
    int rate = 500;

    o->prefix = "geogate-drill:";
    o->duration_s = 60;
    o->keys = 1000;
    o->hold_s = 5;
    o->baseline_s = 3;
    o->tail_s = 2;
    o->switch_timeout_s = 10;
    o->sync_timeout_s = 15;
    o->peer_wait_s = 10;
    o->ttl_s = 3600;
    o->mc_timeout_ms = 1000;
    o->connections = 4;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            drill_usage(stdout);
            return 1;
        }
        if (v == NULL) {
            fprintf(stderr, "geogatectl: drill: %s needs a value (or is unknown)\n", a);
            return -EINVAL;
        }
        if (strcmp(a, "--to") == 0) {
            o->to = v;
        } else if (strcmp(a, "--memcached") == 0) {
            o->memcached = v;
        } else if (strcmp(a, "--report") == 0) {
            o->report = v;
        } else if (strcmp(a, "--prefix") == 0) {
            o->prefix = v;
        } else if (strcmp(a, "--duration") == 0) {
            rc = drill_int_arg(a, v, 1, 86400, &o->duration_s);
        } else if (strcmp(a, "--keys") == 0) {
            rc = drill_int_arg(a, v, 1, 10000000, &o->keys);
        } else if (strcmp(a, "--rate") == 0) {
            rc = drill_int_arg(a, v, 1, 100000, &rate);
        } else if (strcmp(a, "--connections") == 0) {
            rc = drill_int_arg(a, v, 1, DRILL_MAX_CONNS, &o->connections);
        } else if (strcmp(a, "--hold") == 0) {
            rc = drill_int_arg(a, v, 0, 86400, &o->hold_s);
        } else if (strcmp(a, "--baseline") == 0) {
            rc = drill_int_arg(a, v, 1, 3600, &o->baseline_s);
        } else if (strcmp(a, "--tail") == 0) {
            rc = drill_int_arg(a, v, 0, 3600, &o->tail_s);
        } else if (strcmp(a, "--sync-timeout") == 0) {
            rc = drill_int_arg(a, v, 0, 3600, &o->sync_timeout_s);
        } else if (strcmp(a, "--ttl") == 0) {
            rc = drill_int_arg(a, v, 1, 30 * 86400, &o->ttl_s);
        } else {
            fprintf(stderr, "geogatectl: drill: unknown option %s\n", a);
            return -EINVAL;
        }
        if (rc != 0) {
            return rc;
        }
        i++;
    }
    if (o->to != NULL && o->to[0] == '\0') {
        fprintf(stderr, "geogatectl: drill: --to needs a site name\n");
        return -EINVAL;
    }
    if (strlen(o->prefix) > 200 || strpbrk(o->prefix, " \t\r\n") != NULL) {
        fprintf(stderr, "geogatectl: drill: --prefix must be a short memcached key prefix\n");
        return -EINVAL;
    }
    o->rate = rate;
    return 0;
}

static int drill_run(struct drill *d)
{
    int rc;

    rc = drill_check_start(d);
    if (rc != CTL_EXIT_OK) {
        return rc;
    }
    rc = drill_set_keys(d);
    if (rc != CTL_EXIT_OK) {
        return rc;
    }
    drill_wait_sync(d);
    if (drill_load_start(d) != 0) {
        fprintf(stderr, "geogatectl: drill: cannot start the load thread\n");
        return CTL_EXIT_REFUSED;
    }
    d->t_load = drill_now(d);
    drill_say(d, "reading at %.0f/s on %d connections; baseline for %ds", d->o.rate,
              d->o.connections, d->o.baseline_s);
    drill_sleep((int64_t)d->o.baseline_s * 1000);
    if (!drill_interrupted) {
        drill_failover(d);
    }
    if (d->failover_http == 200) {
        drill_hold(d);
        drill_failback(d);
        if (d->t_failback >= 0) {
            drill_watch_warmup(d);
            if (d->t_local >= 0) {
                drill_tail(d);
            }
        }
    }
    d->t_end = drill_now(d);
    drill_load_stop(d);
    if (drill_interrupted) {
        drill_problem(d, "interrupted");
    }
    struct drill_phases ph = drill_error_phases(d);
    if (ph.after_switch > 0) {
        drill_problem(d, "%" PRIu64 " reads failed after the switch (first error: %s)",
                      ph.after_switch, d->load.first_error);
    }
    if (d->t_failed_over >= 0 && d->t_failback > d->t_failed_over) {
        struct drill_window w = drill_sum(d, d->t_failed_over + 1000, d->t_failback);
        if (w.misses > 0 && d->synced) {
            drill_note(d,
                       "%" PRIu64 " reads of drill keys missed while failed over, although "
                       "the peer had acked them",
                       w.misses);
        }
    }
    return CTL_EXIT_OK;
}

int ctl_drill(const struct ctl_target *admin, int argc, char **argv)
{
    struct drill *d = calloc(1, sizeof(*d));
    struct sigaction sa;
    int rc;
    size_t nsecs;

    if (d == NULL) {
        fprintf(stderr, "geogatectl: out of memory\n");
        return CTL_EXIT_REFUSED;
    }
    d->admin = admin;
    rc = drill_parse(&d->o, argc, argv);
    if (rc != 0) {
        free(d);
        return rc > 0 ? CTL_EXIT_OK : CTL_EXIT_USAGE;
    }
    d->t_load = d->t_fail = d->t_failed_over = d->t_peer_reads = d->t_failback = d->t_local = -1;
    d->t0 = ctl_mono_ms();
    d->wall0 = ctl_wall_ms();
    d->load.o = &d->o;
    d->load.t0 = d->t0;
    pthread_mutex_init(&d->load.lock, NULL);
    /* Every second the drill can last, with room for slow steps. */
    nsecs = (size_t)d->o.sync_timeout_s + (size_t)d->o.baseline_s + (size_t)d->o.switch_timeout_s +
            (size_t)d->o.hold_s + 2 * (size_t)d->o.duration_s + (size_t)d->o.tail_s + 600;
    d->load.nsecs = nsecs;
    d->load.secs = calloc(nsecs, sizeof(*d->load.secs));
    d->load.err_at = calloc(DRILL_MAX_ERRORS, sizeof(*d->load.err_at));
    d->load.samples = calloc(DRILL_MAX_SAMPLES, sizeof(*d->load.samples));
    if (d->load.secs == NULL || d->load.err_at == NULL || d->load.samples == NULL) {
        fprintf(stderr, "geogatectl: out of memory\n");
        rc = CTL_EXIT_REFUSED;
        goto done;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = drill_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    rc = drill_run(d);
    if (rc == CTL_EXIT_OK) {
        drill_print_report(d);
        if (d->o.report != NULL && drill_write_json(d, d->o.report) != 0) {
            drill_problem(d, "the JSON report could not be written");
        }
        rc = d->nproblems == 0 ? CTL_EXIT_OK : CTL_EXIT_REFUSED;
    }
done:
    drill_load_stop(d);
    free(d->load.secs);
    free(d->load.err_at);
    free(d->load.samples);
    pthread_mutex_destroy(&d->load.lock);
    free(d);
    return rc;
}
