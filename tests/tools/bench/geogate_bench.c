/*
 * geogate-bench — memcached ASCII-protocol load generator: drives one target (memcached,
 * nutcracker, geogate) with a set/get mix over many connections and reports throughput,
 * (with --meta the same workload in meta commands: "ms <key> <len>" + value for a set,
 * "mg <key> v f" for a get; replies HD / VA <len> f<flags> + value / EN),
 * hits/misses, protocol errors and latency percentiles; or, with --idle-conns, opens many
 * connections that each make one request and then sit idle (to measure a proxy's memory
 * per connection).
 *
 * It does not start, stop or measure the target process: tests/bench/run_bench.py does.
 * Each --threads worker runs its own libevent loop over its own connections with no
 * shared state but the start barrier; the main thread parses options, starts the workers,
 * merges their results and prints them.
 *
 * Request path of one connection (all on its worker's loop):
 *
 *   conn_fill ──append "set"/"get" to wbuf, push pending──> conn_flush ──send()──┐
 *       ^                                                                       v
 *       └── conn_complete <── conn_parse <── conn_on_read <──recv()──────── target
 *               (latency into the histogram, counters, pop pending)
 *
 * Latency is taken from the monotonic clock when a request is queued and when its last
 * reply line is parsed; samples go into a fixed log-linear histogram (no allocation).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "tests/tools/bench/bench_opts.h"


/* ---------------------------------------------------------------------------------------
 * Latency histogram: log-linear over nanoseconds.  Values below 2^(SUB_BITS+1) get one
 * bucket each; above, every power of two is split into 2^SUB_BITS buckets, so a reported
 * percentile is within 1/64 (1.6%) of the true value.  A fixed array: recording a sample is
 * a count-leading-zeros and an increment.
 */

#define HIST_SUB_BITS 6
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_MAX_SHIFT 40 /* clamp samples at ~2^46 ns (19 hours) */
#define HIST_BUCKETS ((HIST_MAX_SHIFT + 2) * HIST_SUB)

struct bench_hist {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total;
    uint64_t sum_ns;
    uint64_t max_ns;
};

static unsigned hist_index(uint64_t v)
{
    unsigned msb, shift;

    if (v < 2 * HIST_SUB) {
        return (unsigned)v;
    }
    msb = 63 - (unsigned)__builtin_clzll(v);
    shift = msb - HIST_SUB_BITS;
    if (shift > HIST_MAX_SHIFT) {
        return HIST_BUCKETS - 1;
    }
    /* shift * SUB + (v >> shift): (v >> shift) lies in [SUB, 2*SUB), so octaves tile. */
    return shift * HIST_SUB + (unsigned)(v >> shift);
}

/* The middle of a bucket's value range: what a percentile falling in it reports. */
static uint64_t hist_value(unsigned idx)
{
    unsigned shift;
    uint64_t low;

    if (idx < 2 * HIST_SUB) {
        return idx;
    }
    shift = idx / HIST_SUB - 1;
    low = (uint64_t)(idx - shift * HIST_SUB) << shift;
    return low + ((1ull << shift) >> 1);
}

static void hist_record(struct bench_hist *h, uint64_t ns)
{
    h->counts[hist_index(ns)]++;
    h->total++;
    h->sum_ns += ns;
    if (ns > h->max_ns) {
        h->max_ns = ns;
    }
}

static void hist_merge(struct bench_hist *into, const struct bench_hist *from)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        into->counts[i] += from->counts[i];
    }
    into->total += from->total;
    into->sum_ns += from->sum_ns;
    if (from->max_ns > into->max_ns) {
        into->max_ns = from->max_ns;
    }
}

/* The q-quantile (0 < q <= 1) in nanoseconds; 0 for an empty histogram. */
static uint64_t hist_quantile(const struct bench_hist *h, double q)
{
    uint64_t rank, seen = 0;

    if (h->total == 0) {
        return 0;
    }
    rank = (uint64_t)ceil(q * (double)h->total);
    if (rank < 1) {
        rank = 1;
    }
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t v = hist_value(i);
            return v > h->max_ns ? h->max_ns : v;
        }
    }
    return h->max_ns;
}

/* ---------------------------------------------------------------------------------------
 * Results
 */

/* Ways a request can fail; each is counted separately. */
enum bench_err {
    BENCH_ERR_SERVER = 0, /* SERVER_ERROR ... */
    BENCH_ERR_CLIENT,     /* CLIENT_ERROR ... */
    BENCH_ERR_ERROR,      /* ERROR */
    BENCH_ERR_NOT_STORED, /* NOT_STORED answer to a set */
    BENCH_ERR_BAD_VALUE,  /* a get hit whose length is not --value-size */
    BENCH_ERR_PROTOCOL,   /* a reply line that makes no sense here; the connection is closed */
    BENCH_ERR_TIMEOUT,    /* no reply within --timeout */
    BENCH_ERR_CLOSED,     /* connection closed with the request in flight */
    BENCH_ERR_MAX
};

static const char *const bench_err_names[BENCH_ERR_MAX] = {
    [BENCH_ERR_SERVER] = "server_error", [BENCH_ERR_CLIENT] = "client_error",
    [BENCH_ERR_ERROR] = "error",         [BENCH_ERR_NOT_STORED] = "not_stored",
    [BENCH_ERR_BAD_VALUE] = "bad_value", [BENCH_ERR_PROTOCOL] = "protocol",
    [BENCH_ERR_TIMEOUT] = "timeout",     [BENCH_ERR_CLOSED] = "closed",
};

struct bench_stats {
    uint64_t sets;
    uint64_t gets;
    uint64_t hits;
    uint64_t misses;
    uint64_t errs[BENCH_ERR_MAX];
    struct bench_hist hist;
};

static uint64_t stats_errors(const struct bench_stats *s)
{
    uint64_t n = 0;

    for (int i = 0; i < BENCH_ERR_MAX; i++) {
        n += s->errs[i];
    }
    return n;
}

static void stats_merge(struct bench_stats *into, const struct bench_stats *from)
{
    into->sets += from->sets;
    into->gets += from->gets;
    into->hits += from->hits;
    into->misses += from->misses;
    for (int i = 0; i < BENCH_ERR_MAX; i++) {
        into->errs[i] += from->errs[i];
    }
    hist_merge(&into->hist, &from->hist);
}

/* ---------------------------------------------------------------------------------------
 * Workers and connections
 */

enum bench_kind { BENCH_KIND_GET = 0, BENCH_KIND_SET, BENCH_KIND_MAX };

enum bench_phase { BENCH_PHASE_WARMUP = 0, BENCH_PHASE_RUN, BENCH_PHASE_MAX };

#define BENCH_MAX_LINE 4096 /* longer reply lines are a protocol error */
#define BENCH_RBUF_SIZE (64 * 1024)
#define BENCH_WARM_DEPTH 32
#define BENCH_TICK_US 10000

struct bench_pending {
    uint64_t start_ns;
    uint8_t kind;
};

struct bench_conn {
    struct bench_worker *w;
    int fd;
    bool dead;
    struct event *rev; /* persistent read */
    struct event *wev; /* one-shot, added only while wbuf holds unsent bytes */
    char *rbuf;        /* [rstart, rend) is received but not yet parsed */
    size_t rstart, rend;
    char *wbuf; /* [wstart, wend) is queued but not yet sent */
    size_t wstart, wend, wcap;
    struct bench_pending *pend; /* ring of requests in flight, oldest at phead */
    unsigned phead, pcount, pcap;
    size_t value_left; /* bytes of a VALUE data block (and its CRLF) still to skip */
    bool value_ends;   /* --meta: the request in front is complete once they are skipped */
    bool value_hit;    /* the get in front has seen a VALUE line */
    bool value_bad;    /* ... whose length was not --value-size */
};

struct bench_worker {
    int id;
    const struct bench_opts *o;
    struct event_base *base;
    struct event *tick;
    struct event *pace; /* --rate: tops the connections up as the schedule allows */
    struct bench_conn *conns;
    int nconns;
    int live_conns;
    enum bench_phase phase;
    uint64_t warm_next, warm_end; /* keys still to pre-populate */
    uint64_t quota, issued;       /* requests this worker may send in the run phase */
    bool issuing;
    unsigned outstanding; /* requests in flight over all connections */
    uint64_t rng;
    uint64_t start_ns, deadline_ns, last_done_ns;
    struct bench_stats warm;
    struct bench_stats run;
    struct bench_stats *cur; /* warm or run, by phase */
    const char *set_tail;    /* " 0 0 <value_size>\r\n" (--meta: " <value_size>\r\n") */
    size_t set_tail_len;
    const char *set_cmd, *get_cmd; /* "set "/"get ", or with --meta "ms "/"mg " */
    const char *get_tail;          /* "\r\n", or with --meta " v f\r\n" */
    const char *value; /* value bytes followed by "\r\n" */
    int failed;        /* 0, or a negative errno from set-up */
    pthread_t thread;
};

/* Shared by all workers; written once before they start. */
struct bench_shared {
    pthread_barrier_t barrier;
    volatile int abort; /* a worker failed to set up: everyone leaves after the barrier */
};

static struct bench_shared bench_shared;
static volatile sig_atomic_t bench_stop_requested;

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* xorshift64*: fast, good enough to pick keys and commands. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Write the decimal form of v at p; returns the number of bytes written. */
static size_t fmt_u64(char *p, uint64_t v)
{
    char tmp[24];
    size_t n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) {
        p[i] = tmp[n - 1 - i];
    }
    return n;
}

/* Whether the worker has requests left to send, now or (--rate) later. */
static bool worker_has_more(const struct bench_worker *w)
{
    if (w->phase == BENCH_PHASE_WARMUP) {
        return w->warm_next < w->warm_end;
    }
    return w->issuing && w->issued < w->quota;
}

/* Whether it may send one now. */
static bool worker_can_issue(const struct bench_worker *w)
{
    if (w->phase == BENCH_PHASE_WARMUP) {
        return w->warm_next < w->warm_end;
    }
    if (w->o->rate > 0 && w->issuing) {
        /* open schedule: request N of this worker is due at start + N / its share of rate */
        double due = (double)(now_ns() - w->start_ns) * 1e-9 * w->o->rate / w->o->threads;
        if ((double)w->issued >= due + 1.0) {
            return false;
        }
    }
    return w->issuing && w->issued < w->quota;
}

static unsigned worker_depth(const struct bench_worker *w)
{
    unsigned d = (unsigned)w->o->pipeline;

    if (w->phase == BENCH_PHASE_WARMUP && d < w->conns[0].pcap) {
        d = w->conns[0].pcap; /* pre-populating is not measured: go deep */
    }
    return d;
}

static void conn_close(struct bench_conn *c)
{
    struct bench_worker *w = c->w;

    if (c->dead) {
        return;
    }
    c->dead = true;
    w->cur->errs[BENCH_ERR_CLOSED] += c->pcount;
    w->outstanding -= c->pcount;
    c->pcount = 0;
    event_del(c->rev);
    event_del(c->wev);
    close(c->fd);
    c->fd = -1;
    w->live_conns--;
}

/*
 * Send what is queued.  Call after appending requests; leaves the rest for the write
 * event when the socket is full.  Closes the connection on a send error.
 */
static void conn_flush(struct bench_conn *c)
{
    while (c->wstart < c->wend) {
        ssize_t n = send(c->fd, c->wbuf + c->wstart, c->wend - c->wstart, MSG_NOSIGNAL);
        if (n == -1) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                event_add(c->wev, NULL);
                return;
            }
            conn_close(c);
            return;
        }
        c->wstart += (size_t)n;
    }
    c->wstart = c->wend = 0;
}

/* Make room for need more bytes at wend; the ring bound on requests keeps it within wcap. */
static char *conn_wspace(struct bench_conn *c, size_t need)
{
    if (c->wcap - c->wend < need && c->wstart > 0) {
        memmove(c->wbuf, c->wbuf + c->wstart, c->wend - c->wstart);
        c->wend -= c->wstart;
        c->wstart = 0;
    }
    if (c->wcap - c->wend < need) {
        return NULL;
    }
    return c->wbuf + c->wend;
}

/* Queue one request for key with the given kind, stamped with now. */
static int conn_append(struct bench_conn *c, enum bench_kind kind, uint64_t key, uint64_t now)
{
    struct bench_worker *w = c->w;
    const struct bench_opts *o = w->o;
    size_t plen = strlen(o->key_prefix);
    size_t need = 4 + plen + 20 + w->set_tail_len + o->value_size + 2;
    char *p = conn_wspace(c, need), *start = p;
    const char *cmd = kind == BENCH_KIND_SET ? w->set_cmd : w->get_cmd;
    size_t cmdlen = strlen(cmd);
    struct bench_pending *pd;

    if (p == NULL) {
        return -ENOBUFS;
    }
    memcpy(p, cmd, cmdlen);
    p += cmdlen;
    memcpy(p, o->key_prefix, plen);
    p += plen;
    p += fmt_u64(p, key);
    if (kind == BENCH_KIND_SET) {
        memcpy(p, w->set_tail, w->set_tail_len);
        p += w->set_tail_len;
        memcpy(p, w->value, o->value_size + 2);
        p += o->value_size + 2;
    } else {
        size_t tl = strlen(w->get_tail);
        memcpy(p, w->get_tail, tl);
        p += tl;
    }
    c->wend += (size_t)(p - start);

    pd = &c->pend[(c->phead + c->pcount) % c->pcap];
    pd->start_ns = now;
    pd->kind = (uint8_t)kind;
    c->pcount++;
    w->outstanding++;
    return 0;
}

/* Top the connection up to its pipeline depth with new requests, then send them. */
static void conn_fill(struct bench_conn *c, uint64_t now)
{
    struct bench_worker *w = c->w;
    const struct bench_opts *o = w->o;
    unsigned depth = worker_depth(w);

    while (!c->dead && c->pcount < depth && worker_can_issue(w)) {
        enum bench_kind kind;
        uint64_t key;

        if (w->phase == BENCH_PHASE_WARMUP) {
            kind = BENCH_KIND_SET;
            key = w->warm_next++;
        } else {
            uint64_t r = rng_next(&w->rng);
            kind = (r >> 32) % (o->ratio_set + o->ratio_get) < o->ratio_set ? BENCH_KIND_SET
                                                                            : BENCH_KIND_GET;
            key = rng_next(&w->rng) % o->keys;
            w->issued++;
        }
        if (conn_append(c, kind, key, now) != 0) {
            break;
        }
    }
    if (!c->dead && c->wend > c->wstart) {
        conn_flush(c);
    }
}

/* The request in front got its whole reply (err = BENCH_ERR_MAX for success). */
static void conn_complete(struct bench_conn *c, enum bench_err err, uint64_t now)
{
    struct bench_worker *w = c->w;
    struct bench_stats *st = w->cur;
    struct bench_pending *pd = &c->pend[c->phead];

    hist_record(&st->hist, now > pd->start_ns ? now - pd->start_ns : 0);
    if (pd->kind == BENCH_KIND_SET) {
        st->sets++;
    } else {
        st->gets++;
        if (err == BENCH_ERR_MAX || err == BENCH_ERR_BAD_VALUE) {
            if (c->value_hit) {
                st->hits++;
            } else {
                st->misses++;
            }
        }
    }
    if (err != BENCH_ERR_MAX) {
        st->errs[err]++;
    }
    c->phead = (c->phead + 1) % c->pcap;
    c->pcount--;
    w->outstanding--;
    w->last_done_ns = now;
    c->value_hit = false;
    c->value_bad = false;
}

static bool line_is(const char *line, size_t len, const char *word)
{
    size_t wl = strlen(word);

    return len == wl && memcmp(line, word, wl) == 0;
}

static bool line_starts(const char *line, size_t len, const char *word)
{
    size_t wl = strlen(word);

    return len >= wl && memcmp(line, word, wl) == 0;
}

/* The <bytes> field of "VALUE <key> <flags> <bytes> [<cas>]"; -1 if malformed. */
static long long value_line_bytes(const char *line, size_t len)
{
    size_t i = 6; /* after "VALUE " */
    long long v = 0;
    int digits = 0;

    for (int field = 0; field < 2; field++) {
        while (i < len && line[i] != ' ') {
            i++;
        }
        while (i < len && line[i] == ' ') {
            i++;
        }
    }
    while (i < len && line[i] >= '0' && line[i] <= '9' && digits < 18) {
        v = v * 10 + (line[i++] - '0');
        digits++;
    }
    if (digits == 0 || (i < len && line[i] != ' ')) {
        return -1;
    }
    return v;
}

/* The <size> of "VA <size> <flags>*"; -1 if malformed. */
static long long va_line_bytes(const char *line, size_t len)
{
    size_t i = 3; /* after "VA " */
    long long v = 0;
    int digits = 0;

    while (i < len && line[i] >= '0' && line[i] <= '9' && digits < 18) {
        v = v * 10 + (line[i++] - '0');
        digits++;
    }
    if (digits == 0 || (i < len && line[i] != ' ')) {
        return -1;
    }
    return v;
}

/* --meta: a meta reply line.  HD/NS answer ms, VA/EN answer mg (the VA's value block
 * completes the request, in conn_parse); anything else is a protocol error. */
static bool conn_meta_reply_line(struct bench_conn *c, enum bench_kind kind, const char *line,
                                 size_t len, uint64_t now)
{
    bool tokens_end = len == 2 || (len > 2 && line[2] == ' ');

    if (kind == BENCH_KIND_SET && tokens_end && line_starts(line, len, "HD")) {
        conn_complete(c, BENCH_ERR_MAX, now);
    } else if (kind == BENCH_KIND_SET && tokens_end && line_starts(line, len, "NS")) {
        conn_complete(c, BENCH_ERR_NOT_STORED, now);
    } else if (kind == BENCH_KIND_GET && tokens_end && line_starts(line, len, "EN")) {
        conn_complete(c, BENCH_ERR_MAX, now);
    } else if (kind == BENCH_KIND_GET && line_starts(line, len, "VA ")) {
        long long bytes = va_line_bytes(line, len);
        if (bytes < 0) {
            return false;
        }
        c->value_hit = true;
        c->value_bad = (size_t)bytes != c->w->o->value_size;
        c->value_left = (size_t)bytes + 2;
        c->value_ends = true;
    } else {
        return false;
    }
    return true;
}

/*
 * Classify one reply line (without its CRLF) for the request in front.  Returns false when
 * the line makes no sense here, after which the connection cannot be trusted.
 */
static bool conn_reply_line(struct bench_conn *c, const char *line, size_t len, uint64_t now)
{
    enum bench_kind kind = (enum bench_kind)c->pend[c->phead].kind;

    if (c->w->o->meta && !line_starts(line, len, "SERVER_ERROR") &&
        !line_starts(line, len, "CLIENT_ERROR") && !line_is(line, len, "ERROR")) {
        return conn_meta_reply_line(c, kind, line, len, now);
    }
    if (line_starts(line, len, "SERVER_ERROR")) {
        conn_complete(c, BENCH_ERR_SERVER, now);
    } else if (line_starts(line, len, "CLIENT_ERROR")) {
        conn_complete(c, BENCH_ERR_CLIENT, now);
    } else if (line_is(line, len, "ERROR")) {
        conn_complete(c, BENCH_ERR_ERROR, now);
    } else if (kind == BENCH_KIND_SET && line_is(line, len, "STORED")) {
        conn_complete(c, BENCH_ERR_MAX, now);
    } else if (kind == BENCH_KIND_SET && line_is(line, len, "NOT_STORED")) {
        conn_complete(c, BENCH_ERR_NOT_STORED, now);
    } else if (kind == BENCH_KIND_GET && line_is(line, len, "END")) {
        conn_complete(c, c->value_bad ? BENCH_ERR_BAD_VALUE : BENCH_ERR_MAX, now);
    } else if (kind == BENCH_KIND_GET && !c->value_hit && line_starts(line, len, "VALUE ")) {
        long long bytes = value_line_bytes(line, len);
        if (bytes < 0) {
            return false;
        }
        c->value_hit = true;
        c->value_bad = (size_t)bytes != c->w->o->value_size;
        c->value_left = (size_t)bytes + 2;
    } else {
        return false;
    }
    return true;
}

/* Consume every complete reply in rbuf; closes the connection on a protocol error. */
static void conn_parse(struct bench_conn *c, uint64_t now)
{
    for (;;) {
        size_t avail = c->rend - c->rstart;
        char *line, *nl;
        size_t len;

        if (c->value_left > 0) {
            size_t n = avail < c->value_left ? avail : c->value_left;
            c->rstart += n;
            c->value_left -= n;
            if (c->value_left > 0) {
                break;
            }
            if (c->value_ends) { /* --meta: a VA's block ends its mg */
                c->value_ends = false;
                if (c->pcount == 0) {
                    goto protocol_error;
                }
                conn_complete(c, c->value_bad ? BENCH_ERR_BAD_VALUE : BENCH_ERR_MAX, now);
            }
            continue;
        }
        if (avail == 0) {
            break;
        }
        line = c->rbuf + c->rstart;
        nl = memchr(line, '\n', avail);
        if (nl == NULL) {
            if (avail > BENCH_MAX_LINE) {
                goto protocol_error;
            }
            break;
        }
        c->rstart += (size_t)(nl - line) + 1;
        len = (size_t)(nl - line);
        if (len > 0 && line[len - 1] == '\r') {
            len--;
        }
        if (c->pcount == 0 || !conn_reply_line(c, line, len, now)) {
            goto protocol_error;
        }
    }
    if (c->rstart == c->rend) {
        c->rstart = c->rend = 0;
    } else if (c->rstart > 0) {
        memmove(c->rbuf, c->rbuf + c->rstart, c->rend - c->rstart);
        c->rend -= c->rstart;
        c->rstart = 0;
    }
    return;

protocol_error:
    if (c->pcount > 0) {
        conn_complete(c, BENCH_ERR_PROTOCOL, now);
    } else {
        c->w->cur->errs[BENCH_ERR_PROTOCOL]++;
    }
    conn_close(c);
}

static void worker_check_done(struct bench_worker *w)
{
    if ((w->outstanding == 0 && !worker_has_more(w)) || w->live_conns == 0) {
        event_base_loopbreak(w->base);
    }
}

static void conn_on_read(evutil_socket_t fd, short what, void *arg)
{
    struct bench_conn *c = arg;
    struct bench_worker *w = c->w;
    ssize_t n = recv(fd, c->rbuf + c->rend, BENCH_RBUF_SIZE - c->rend, 0);
    uint64_t now;

    (void)what;

    if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        return;
    }
    if (n <= 0) {
        conn_close(c);
        worker_check_done(w);
        return;
    }
    c->rend += (size_t)n;
    now = now_ns();
    conn_parse(c, now);
    conn_fill(c, now);
    worker_check_done(w);
}

static void conn_on_write(evutil_socket_t fd, short what, void *arg)
{
    struct bench_conn *c = arg;

    (void)fd;
    (void)what;
    conn_flush(c);
    worker_check_done(c->w);
}

/*
 * Periodic check: stop issuing at the deadline or on a signal, and give up on requests
 * that got no reply for --timeout seconds.
 */
static void worker_on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct bench_worker *w = arg;
    uint64_t now = now_ns();

    (void)fd;
    (void)what;
    if (bench_stop_requested) {
        w->issuing = false;
        if (w->phase == BENCH_PHASE_WARMUP) {
            w->warm_next = w->warm_end;
        }
    }
    if (w->phase == BENCH_PHASE_RUN && w->deadline_ns && now >= w->deadline_ns) {
        w->issuing = false;
    }
    if (w->outstanding > 0 && now - w->last_done_ns > (uint64_t)(w->o->timeout * 1e9)) {
        w->cur->errs[BENCH_ERR_TIMEOUT] += w->outstanding;
        for (int i = 0; i < w->nconns; i++) {
            w->conns[i].pcount = 0;
            conn_close(&w->conns[i]);
        }
        w->outstanding = 0;
        event_base_loopbreak(w->base);
        return;
    }
    worker_check_done(w);
}

/* --rate: every connection with room takes what the schedule has made due meanwhile. */
static void worker_on_pace(evutil_socket_t fd, short what, void *arg)
{
    struct bench_worker *w = arg;
    uint64_t now = now_ns();

    (void)fd;
    (void)what;
    if (w->phase != BENCH_PHASE_RUN) {
        return;
    }
    for (int i = 0; i < w->nconns && worker_can_issue(w); i++) {
        conn_fill(&w->conns[i], now);
    }
}

/* A blocking TCP connection to the target; returns the fd or a negative errno. */
static int bench_connect(const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, SOCK_STREAM, 0), one = 1;

    if (fd == -1) {
        return -errno;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == -1) {
        int err = -errno;
        close(fd);
        return err;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static int conn_init(struct bench_conn *c, struct bench_worker *w, const struct addrinfo *ai)
{
    const struct bench_opts *o = w->o;
    size_t maxreq = 4 + strlen(o->key_prefix) + 20 + w->set_tail_len + o->value_size + 2;
    int fd;

    c->w = w;
    c->fd = -1;
    c->pcap = (unsigned)o->pipeline;
    /* Pre-populating goes deeper, but not so deep that big values eat the memory. */
    if (o->warmup_keys) {
        unsigned warm = BENCH_WARM_DEPTH;
        if (o->value_size > 4096) {
            warm = 1 + (unsigned)(65536 / o->value_size);
        }
        if (warm > c->pcap) {
            c->pcap = warm;
        }
    }
    c->wcap = maxreq * c->pcap;
    c->rbuf = malloc(BENCH_RBUF_SIZE);
    c->wbuf = malloc(c->wcap);
    c->pend = calloc(c->pcap, sizeof(*c->pend));
    if (c->rbuf == NULL || c->wbuf == NULL || c->pend == NULL) {
        return -ENOMEM;
    }
    fd = bench_connect(ai);
    if (fd < 0) {
        return fd;
    }
    c->fd = fd;
    if (evutil_make_socket_nonblocking(fd) == -1) {
        return -errno;
    }
    c->rev = event_new(w->base, fd, EV_READ | EV_PERSIST, conn_on_read, c);
    c->wev = event_new(w->base, fd, EV_WRITE, conn_on_write, c);
    if (c->rev == NULL || c->wev == NULL || event_add(c->rev, NULL) == -1) {
        return -ENOMEM;
    }
    w->live_conns++;
    return 0;
}

static void conn_destroy(struct bench_conn *c)
{
    if (c->w == NULL) {
        return; /* never set up */
    }
    if (c->rev) {
        event_free(c->rev);
    }
    if (c->wev) {
        event_free(c->wev);
    }
    if (c->fd >= 0) {
        close(c->fd);
    }
    free(c->rbuf);
    free(c->wbuf);
    free(c->pend);
}

static int resolve(const struct bench_opts *o, struct addrinfo **res)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = getaddrinfo(o->host, o->port, &hints, res);

    if (rc != 0) {
        fprintf(stderr, "geogate-bench: cannot resolve %s:%s: %s\n", o->host, o->port,
                gai_strerror(rc));
        return -EINVAL;
    }
    return 0;
}

/* Run one phase: fill every connection, then loop until the phase has nothing left. */
static void worker_run_phase(struct bench_worker *w, enum bench_phase phase)
{
    uint64_t now = now_ns();

    w->phase = phase;
    w->cur = phase == BENCH_PHASE_WARMUP ? &w->warm : &w->run;
    w->last_done_ns = now;
    if (phase == BENCH_PHASE_RUN) {
        w->start_ns = now;
        w->issuing = !bench_stop_requested;
        if (w->o->requests == 0) {
            w->deadline_ns = now + (uint64_t)(w->o->duration * 1e9);
        }
    }
    for (int i = 0; i < w->nconns; i++) {
        conn_fill(&w->conns[i], now);
    }
    if (w->outstanding > 0 || worker_has_more(w)) {
        event_base_dispatch(w->base);
    }
    if (phase == BENCH_PHASE_RUN && w->run.hist.total == 0) {
        w->last_done_ns = now_ns();
    }
}

/*
 * A worker thread: connect its share of connections, pre-populate its slice of the key
 * space, wait for every other worker, then run the measured phase.
 */
static void *worker_main(void *arg)
{
    struct bench_worker *w = arg;
    const struct bench_opts *o = w->o;
    struct addrinfo *ai = NULL;
    struct timeval tick = {0, BENCH_TICK_US};

    w->failed = resolve(o, &ai);
    if (w->failed == 0) {
        w->base = event_base_new();
        w->tick = w->base ? event_new(w->base, -1, EV_PERSIST, worker_on_tick, w) : NULL;
        if (w->tick == NULL || event_add(w->tick, &tick) == -1) {
            w->failed = -ENOMEM;
        }
    }
    if (w->failed == 0 && o->rate > 0) {
        struct timeval pace = {0, 1000};
        w->pace = event_new(w->base, -1, EV_PERSIST, worker_on_pace, w);
        if (w->pace == NULL || event_add(w->pace, &pace) == -1) {
            w->failed = -ENOMEM;
        }
    }
    for (int i = 0; w->failed == 0 && i < w->nconns; i++) {
        w->failed = conn_init(&w->conns[i], w, ai);
    }
    if (ai) {
        freeaddrinfo(ai);
    }
    if (w->failed) {
        bench_shared.abort = 1;
    }
    pthread_barrier_wait(&bench_shared.barrier);
    if (bench_shared.abort) {
        return NULL;
    }
    if (o->warmup_keys) {
        worker_run_phase(w, BENCH_PHASE_WARMUP);
    }
    pthread_barrier_wait(&bench_shared.barrier);
    worker_run_phase(w, BENCH_PHASE_RUN);
    return NULL;
}

/* ---------------------------------------------------------------------------------------
 * Reporting
 */

static void print_result(const struct bench_opts *o, const struct bench_stats *warm,
                         const struct bench_stats *st, double elapsed, int conns_alive)
{
    uint64_t done = st->hist.total;
    double ops = elapsed > 0 ? (double)done / elapsed : 0;
    const struct bench_hist *h = &st->hist;
    double mean_us = done ? (double)h->sum_ns / (double)done / 1e3 : 0;

    if (o->json) {
        if (o->meta) {
            printf("{\"protocol\":\"meta\",");
        } else {
            printf("{");
        }
        printf("\"label\":\"%s\",\"host\":\"%s\",\"port\":\"%s\",\"connections\":%d,"
               "\"threads\":%d,\"pipeline\":%d,\"ratio\":\"%u:%u\",\"value_size\":%zu,"
               "\"keys\":%" PRIu64 ",\"warmup_keys\":%s,\"warmup_errors\":%" PRIu64 ",",
               o->label ? o->label : "", o->host, o->port, o->connections, o->threads, o->pipeline,
               o->ratio_set, o->ratio_get, o->value_size, o->keys,
               o->warmup_keys ? "true" : "false", stats_errors(warm));
        printf("\"requests\":%" PRIu64 ",\"elapsed_s\":%.6f,\"ops_per_sec\":%.1f,"
               "\"sets\":%" PRIu64 ",\"gets\":%" PRIu64 ",\"hits\":%" PRIu64 ",\"misses\":%" PRIu64
               ",\"errors\":%" PRIu64 ",\"connections_alive\":%d,",
               done, elapsed, ops, st->sets, st->gets, st->hits, st->misses, stats_errors(st),
               conns_alive);
        printf("\"error_kinds\":{");
        for (int i = 0; i < BENCH_ERR_MAX; i++) {
            printf("%s\"%s\":%" PRIu64, i ? "," : "", bench_err_names[i], st->errs[i]);
        }
        printf("},\"latency_us\":{\"mean\":%.2f,\"p50\":%.2f,\"p90\":%.2f,\"p99\":%.2f,"
               "\"p999\":%.2f,\"max\":%.2f}}\n",
               mean_us, hist_quantile(h, 0.5) / 1e3, hist_quantile(h, 0.9) / 1e3,
               hist_quantile(h, 0.99) / 1e3, hist_quantile(h, 0.999) / 1e3, h->max_ns / 1e3);
        return;
    }
    printf("target %s:%s  connections %d  threads %d  pipeline %d  set:get %u:%u  value %zu B  "
           "keys %" PRIu64 "\n",
           o->host, o->port, o->connections, o->threads, o->pipeline, o->ratio_set, o->ratio_get,
           o->value_size, o->keys);
    if (o->meta) {
        printf("protocol meta (ms / mg v f)\n");
    }
    printf("requests %" PRIu64 " in %.3f s: %.0f ops/s\n", done, elapsed, ops);
    printf("sets %" PRIu64 "  gets %" PRIu64 " (hits %" PRIu64 ", misses %" PRIu64 ")\n", st->sets,
           st->gets, st->hits, st->misses);
    printf("errors %" PRIu64, stats_errors(st));
    for (int i = 0; i < BENCH_ERR_MAX; i++) {
        if (st->errs[i]) {
            printf("  %s %" PRIu64, bench_err_names[i], st->errs[i]);
        }
    }
    printf("  (connections alive %d/%d)\n", conns_alive, o->connections);
    if (o->warmup_keys) {
        printf("warm-up: %" PRIu64 " sets, %" PRIu64 " errors\n", warm->sets, stats_errors(warm));
    }
    printf("latency us: mean %.1f  p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n", mean_us,
           hist_quantile(h, 0.5) / 1e3, hist_quantile(h, 0.9) / 1e3, hist_quantile(h, 0.99) / 1e3,
           hist_quantile(h, 0.999) / 1e3, h->max_ns / 1e3);
}

/* ---------------------------------------------------------------------------------------
 * Load mode
 */

static int run_load(const struct bench_opts *o)
{
    struct bench_worker *ws = calloc((size_t)o->threads, sizeof(*ws));
    char set_tail[48];
    char *value = malloc(o->value_size + 2);
    struct bench_stats *warm = calloc(1, sizeof(*warm)), *run = calloc(1, sizeof(*run));
    uint64_t start = UINT64_MAX, end = 0;
    int rc = 1, started = 0, alive = 0;

    if (ws == NULL || value == NULL || warm == NULL || run == NULL) {
        fprintf(stderr, "geogate-bench: out of memory\n");
        goto fail_alloc;
    }
    snprintf(set_tail, sizeof(set_tail), o->meta ? " %zu\r\n" : " 0 0 %zu\r\n", o->value_size);
    for (size_t i = 0; i < o->value_size; i++) {
        value[i] = (char)('a' + i % 26);
    }
    memcpy(value + o->value_size, "\r\n", 2);
    if (pthread_barrier_init(&bench_shared.barrier, NULL, (unsigned)o->threads) != 0) {
        goto fail_alloc;
    }

    for (int t = 0; t < o->threads; t++) {
        struct bench_worker *w = &ws[t];
        w->id = t;
        w->o = o;
        w->nconns = o->connections / o->threads + (t < o->connections % o->threads);
        w->conns = calloc((size_t)w->nconns, sizeof(*w->conns));
        w->warm_next = o->keys * (uint64_t)t / (uint64_t)o->threads;
        w->warm_end =
            o->warmup_keys ? o->keys * (uint64_t)(t + 1) / (uint64_t)o->threads : w->warm_next;
        w->quota = o->requests == 0 ? UINT64_MAX
                                    : o->requests / (uint64_t)o->threads +
                                          ((uint64_t)t < o->requests % (uint64_t)o->threads);
        w->rng = (o->seed + 1) * 0x9E3779B97F4A7C15ull + (uint64_t)t * 0xBF58476D1CE4E5B9ull;
        if (w->rng == 0) {
            w->rng = 1;
        }
        w->set_tail = set_tail;
        w->set_tail_len = strlen(set_tail);
        w->set_cmd = o->meta ? "ms " : "set ";
        w->get_cmd = o->meta ? "mg " : "get ";
        w->get_tail = o->meta ? " v f\r\n" : "\r\n";
        w->value = value;
        w->cur = &w->warm;
        if (w->conns == NULL) {
            bench_shared.abort = 1;
        }
    }
    if (bench_shared.abort) {
        fprintf(stderr, "geogate-bench: out of memory\n");
        goto fail_workers;
    }
    for (; started < o->threads; started++) {
        if (pthread_create(&ws[started].thread, NULL, worker_main, &ws[started]) != 0) {
            fprintf(stderr, "geogate-bench: cannot start thread\n");
            break;
        }
    }
    if (started < o->threads) {
        /* The barrier would never open; nothing sensible is left but to leave. */
        exit(1);
    }
    for (int t = 0; t < started; t++) {
        pthread_join(ws[t].thread, NULL);
    }
    for (int t = 0; t < o->threads; t++) {
        struct bench_worker *w = &ws[t];
        if (w->failed) {
            fprintf(stderr, "geogate-bench: worker %d cannot set up connections to %s:%s: %s\n", t,
                    o->host, o->port, strerror(-w->failed));
            goto fail_workers;
        }
    }
    for (int t = 0; t < o->threads; t++) {
        struct bench_worker *w = &ws[t];
        stats_merge(warm, &w->warm);
        stats_merge(run, &w->run);
        if (w->start_ns < start) {
            start = w->start_ns;
        }
        if (w->last_done_ns > end) {
            end = w->last_done_ns;
        }
        alive += w->live_conns;
    }
    print_result(o, warm, run, end > start ? (double)(end - start) / 1e9 : 0, alive);
    rc = 0;

fail_workers:
    for (int t = 0; t < o->threads; t++) {
        for (int i = 0; ws[t].conns && i < ws[t].nconns; i++) {
            conn_destroy(&ws[t].conns[i]);
        }
        free(ws[t].conns);
        if (ws[t].tick) {
            event_free(ws[t].tick);
        }
        if (ws[t].pace) {
            event_free(ws[t].pace);
        }
        if (ws[t].base) {
            event_base_free(ws[t].base);
        }
    }
    pthread_barrier_destroy(&bench_shared.barrier);
fail_alloc:
    free(run);
    free(warm);
    free(value);
    free(ws);
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * Idle-connection mode: open --idle-conns connections one after another; send one get on
 * every one of them in two parts (all but the CRLF, half a second's pause, the CRLF), so a
 * partial request sits in the target on every connection at once, as with many slow clients
 * (a proxy that keeps a buffer per connection, or pools buffers at their high-water mark,
 * shows it here whatever the timing); read every reply; say so on stdout; then hold the
 * connections until a signal or --duration.  Plain blocking sockets: this mode measures the
 * target's memory, not its speed.
 */

/* Read one reply to a get: true once it ends in "END\r\n" or an error line. */
static bool idle_read_reply(int fd)
{
    char buf[4096];
    size_t have = 0;

    for (;;) {
        ssize_t n = recv(fd, buf + have, sizeof(buf) - have, 0);
        if (n == -1 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        have += (size_t)n;
        if (have >= 5 && memcmp(buf + have - 5, "END\r\n", 5) == 0) {
            return true;
        }
        if (have >= 2 && memcmp(buf + have - 2, "\r\n", 2) == 0 &&
            (line_starts(buf, have, "SERVER_ERROR") || line_starts(buf, have, "CLIENT_ERROR") ||
             line_starts(buf, have, "ERROR"))) {
            return false;
        }
        if (have == sizeof(buf)) {
            have = 0; /* a long value: keep only looking for the end */
        }
    }
}

static int run_idle(const struct bench_opts *o)
{
    struct addrinfo *ai = NULL;
    int *fds = malloc(sizeof(int) * (size_t)o->idle_conns);
    bool *ok = calloc((size_t)o->idle_conns, sizeof(bool));
    struct timeval tv = {(time_t)o->timeout, 0};
    int opened = 0, errors = 0, rc = 1;
    uint64_t end;

    if (fds == NULL || ok == NULL || resolve(o, &ai) != 0) {
        goto fail_resolve;
    }
    for (int i = 0; i < o->idle_conns && !bench_stop_requested; i++) {
        int fd = bench_connect(ai);

        if (fd < 0) {
            fprintf(stderr, "geogate-bench: connection %d: %s\n", i, strerror(-fd));
            break;
        }
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        fds[opened++] = fd;
    }
    /*
     * Every connection first gets its request without the final CRLF, so the target holds a
     * partial request on all of them at the same moment whatever its speed; then the CRLFs
     * go out and the replies are read.
     */
    for (int i = 0; i < opened; i++) {
        char req[300];
        int len = snprintf(req, sizeof(req), "get %sidle:%d", o->key_prefix, i);

        ok[i] = send(fds[i], req, (size_t)len, MSG_NOSIGNAL) == len;
    }
    nanosleep(&(struct timespec){0, 500 * 1000 * 1000}, NULL);
    for (int i = 0; i < opened; i++) {
        ok[i] = ok[i] && send(fds[i], "\r\n", 2, MSG_NOSIGNAL) == 2;
    }
    for (int i = 0; i < opened; i++) {
        if (!ok[i] || !idle_read_reply(fds[i])) {
            errors++;
        }
    }
    if (o->json) {
        printf("{\"mode\":\"idle\",\"requested\":%d,\"opened\":%d,\"errors\":%d}\n", o->idle_conns,
               opened, errors);
    } else {
        printf("idle: %d of %d connections open, %d errors; holding\n", opened, o->idle_conns,
               errors);
    }
    fflush(stdout);
    end = o->duration > 0 ? now_ns() + (uint64_t)(o->duration * 1e9) : UINT64_MAX;
    while (!bench_stop_requested && now_ns() < end) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    rc = opened == o->idle_conns ? 0 : 1;
    for (int i = 0; i < opened; i++) {
        close(fds[i]);
    }
    freeaddrinfo(ai);
fail_resolve:
    free(ok);
    free(fds);
    return rc;
}

static void on_stop_signal(int sig)
{
    (void)sig;
    bench_stop_requested = 1;
}

/* Let this process use as many descriptors as it is allowed to. */
static void raise_fd_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    struct bench_opts o;
    struct sigaction sa = {.sa_handler = on_stop_signal};

    if (bench_parse_opts(argc, argv, &o) != 0) {
        return 2;
    }
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    if (o.idle_conns > 0) {
        return run_idle(&o);
    }
    return run_load(&o);
}
