/*
 * geogate-wanem — a WAN emulator for the tests: a TCP relay on loopback that gives each link
 * a one-way delay, jitter, a bandwidth cap, and can black-hole or cut the link on command.
 *
 * It does not touch packets, routes or the kernel (netem is not available on the test
 * machines); it only relays byte streams between 127.0.0.1:LISTEN_PORT and a loopback
 * target, so loss and retransmission are not modelled, and a client's connect() completes
 * at once instead of after one round trip.  It refuses targets that are not loopback.
 * Everything runs on one libevent loop in one thread.
 *
 * One relayed connection is two flows, fwd (client -> target) and rev (target -> client):
 *
 *   src fd ──read──> flow queue (one evbuffer) + segment list {len, due}
 *                         │ flow_schedule: token bucket (rate, burst) shared by the link's
 *                         │   direction, then delay + uniform jitter, never before the
 *                         │   previous segment's due time (so bytes never reorder)
 *                         v
 *                    flow timer (precise libevent timer) at the head's due time
 *                         │ flow_deliver: move due bytes to dst->out (no copy)
 *                         v
 *                    side_flush: writev to dst fd ──> dst
 *
 * Back-pressure: when a flow's queued bytes (its queue plus its destination's output) pass
 * the cap, reading from its source stops until they fall below half the cap; TCP's own
 * windows then push back on the sender (so, like a TCP window, one connection carries at
 * most about cap / one-way delay bytes per second).  Black-holed flows hold their segments (nothing
 * is delivered, the cap still applies) and reschedule them from the moment the link comes back, as
 * TCP would retransmit after a route heals.  A cut link closes its listener (new connections are
 * refused) and resets every connection on both sides.
 *
 * Control: a line protocol on --control PORT (127.0.0.1), one reply line per request line,
 * "OK ..." or "ERR reason"; see ctl_usage below.  tests/tools/wanem/wanem.py is its client.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#define WANEM_READ_MAX (64 * 1024)         /* bytes taken from a socket per read event */
#define WANEM_QUEUE_CAP (4u * 1024 * 1024) /* default back-pressure cap per flow */
#define WANEM_BURST (16 * 1024)            /* default token bucket depth */
#define WANEM_SLACK_US 50                  /* deliver segments due this close to now */
#define WANEM_CTL_LINE_MAX 1024
#define WANEM_NAME_MAX 32

/* Direction of a flow and of a link's settings. */
enum dir_id {
    DIR_FWD = 0, /* client -> target; the source is side[0] */
    DIR_REV,     /* target -> client; the source is side[1] */
    DIR_MAX
};

static const char *const dir_names[DIR_MAX] = {
    [DIR_FWD] = "fwd",
    [DIR_REV] = "rev",
};

/* What a queued segment carries to the destination. */
enum seg_kind {
    SEG_DATA = 0, /* len bytes from the flow queue */
    SEG_EOF,      /* the source closed its write side: shutdown(SHUT_WR) the destination */
    SEG_RESET,    /* the source failed: reset the whole connection */
    SEG_KIND_MAX
};

/* A link's settings and shared state for one direction. */
struct link_dir {
    double delay_ms;    /* one-way delay */
    double jitter_ms;   /* each segment's delay is delay ± U(0, jitter), clamped at 0 */
    uint64_t rate;      /* bytes/s through this direction of the link; 0 = no cap */
    uint64_t burst;     /* token bucket depth in bytes */
    uint64_t queue_cap; /* back-pressure cap per flow in bytes */
    bool blackhole;     /* hold everything, deliver nothing */
    int64_t tb_time_us; /* token bucket: when tb_tokens was last brought up to date */
    double tb_tokens;   /* may go negative: debt paid off at `rate` */
    uint64_t bytes_in;  /* read from sources */
    uint64_t bytes_out; /* handed to destinations */
};

struct flow_seg {
    int64_t due_us;
    uint32_t len;
    uint8_t kind; /* enum seg_kind */
};

/* One end of a relayed connection: side[0] faces the client, side[1] the target. */
struct side {
    struct conn *c;
    int fd;               /* -1 until the upstream connect starts */
    struct event *rd_ev;  /* persistent EV_READ; added while its flow may read */
    struct event *wr_ev;  /* persistent EV_WRITE; added while out is not empty or connecting */
    struct evbuffer *out; /* delivered bytes not yet accepted by the kernel */
    bool connecting;      /* non-blocking connect in progress */
    bool reading;         /* rd_ev is added */
    bool shut_pending;    /* an EOF was delivered: shutdown(SHUT_WR) once out drains */
    bool shut_done;
};

/* One direction of a relayed connection; its source is side[dir], its destination side[!dir]. */
struct flow {
    struct conn *c;
    enum dir_id dir;
    struct evbuffer *queue; /* bytes of all queued SEG_DATA segments, in order */
    struct flow_seg *segs;  /* ring of seg_cap entries */
    size_t seg_cap;
    size_t seg_head;
    size_t seg_count;
    int64_t last_due_us; /* keeps due times monotonic: jitter never reorders */
    struct event *timer;
    bool src_done; /* EOF or error seen on the source: read no more */
    bool paused;   /* back-pressure: queued bytes passed the cap */
};

struct conn {
    struct link *l;
    struct side side[2];
    struct flow flow[DIR_MAX];
    bool upstream_started;
    bool closing; /* off the link's list, waiting for the reaper */
    bool rst;     /* close with RST rather than FIN */
    TAILQ_ENTRY(conn) link_entry;
    TAILQ_ENTRY(conn) reap_entry;
};

TAILQ_HEAD(conn_list, conn);

struct link {
    struct wanem *w;
    char name[WANEM_NAME_MAX];
    uint16_t listen_port; /* 0 on the command line: the kernel picks, then it is fixed */
    struct sockaddr_storage target;
    socklen_t target_len;
    char target_str[96];
    struct evconnlistener *listener; /* NULL while cut */
    bool cut;
    struct link_dir dir[DIR_MAX];
    struct conn_list conns;
    uint64_t conns_open;
    uint64_t conns_total;
    uint64_t conns_reset; /* connections ended by RST (cut, errors, upstream refused) */
};

struct ctl_client {
    struct wanem *w;
    struct bufferevent *bev;
    bool quitting;
    TAILQ_ENTRY(ctl_client) entry;
};

/* The process: only this context, passed explicitly. */
struct wanem {
    struct event_base *base;
    struct link *links;
    size_t nlinks;
    struct evconnlistener *ctl_listener;
    uint16_t ctl_port;
    TAILQ_HEAD(, ctl_client) ctl_clients;
    struct conn_list reap;
    struct event *reap_ev;
    struct event *sig_ev[2];
    uint64_t rng;
    uint64_t queue_cap;
    bool quiet;
};

static void flow_deliver(struct flow *f, int64_t now);
static void side_flush(struct side *s);
static void conn_close(struct conn *c, bool rst);
static int conn_connect_upstream(struct conn *c);

/* ---------------------------------------------------------------------------------------
 * Small helpers
 */

static int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void wanem_log(struct wanem *w, const char *fmt, ...)
{
    va_list ap;

    if (w->quiet) {
        return;
    }
    va_start(ap, fmt);
    fputs("wanem: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* splitmix64: statistically fine for jitter, and reproducible with --seed. */
static double wanem_rand01(struct wanem *w)
{
    uint64_t z = (w->rng += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) / (double)(1ull << 53);
}

static void sock_nodelay(int fd)
{
    int one = 1;

    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static bool addr_is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr)) {
            return true;
        }
        return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127;
    }
    return false;
}

/*
 * Listen on 127.0.0.1:*port (0: the kernel picks, and *port is set to its choice).
 * Returns 0 or a negative errno.
 */
static int listen_loopback(struct event_base *base, uint16_t *port, evconnlistener_cb cb, void *arg,
                           struct evconnlistener **out)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons(*port);
    *out = evconnlistener_new_bind(
        base, cb, arg, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 128,
        (struct sockaddr *)&sin, sizeof(sin));
    if (*out == NULL) {
        return errno ? -errno : -EADDRINUSE;
    }
    if (getsockname(evconnlistener_get_fd(*out), (struct sockaddr *)&sin, &len) == 0) {
        *port = ntohs(sin.sin_port);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Flows: scheduling and delivery
 */

static size_t flow_queued(const struct flow *f)
{
    const struct side *dst = &f->c->side[!f->dir];

    return evbuffer_get_length(f->queue) + evbuffer_get_length(dst->out);
}

/* Add or remove the source's read event to match what the flow may take now. */
static void flow_update_reading(struct flow *f)
{
    struct side *src = &f->c->side[f->dir];
    bool want = src->fd >= 0 && !src->connecting && !f->src_done && !f->paused && !f->c->closing;

    if (want && !src->reading) {
        event_add(src->rd_ev, NULL);
    } else if (!want && src->reading) {
        event_del(src->rd_ev);
    }
    src->reading = want;
}

/* High watermark pauses the source, low watermark (half the cap) resumes it. */
static void flow_check_backpressure(struct flow *f)
{
    uint64_t cap = f->c->l->dir[f->dir].queue_cap;
    size_t q = flow_queued(f);

    if (!f->paused && q >= cap) {
        f->paused = true;
    } else if (f->paused && q < cap / 2) {
        f->paused = false;
    }
    flow_update_reading(f);
}

/*
 * When a segment of len bytes entering the link at `now` reaches the destination: first
 * through the direction's token bucket (shared by every connection of the link, so the cap
 * is on the link, not per connection), then one-way delay plus jitter, then never earlier
 * than the flow's previous segment.
 */
static int64_t flow_schedule(struct flow *f, size_t len, int64_t now)
{
    struct link_dir *d = &f->c->l->dir[f->dir];
    int64_t depart = now;
    double ms;
    int64_t due;

    if (d->rate > 0 && len > 0) {
        if (now > d->tb_time_us) {
            d->tb_tokens += (double)(now - d->tb_time_us) * (double)d->rate / 1e6;
            if (d->tb_tokens > (double)d->burst) {
                d->tb_tokens = (double)d->burst;
            }
            d->tb_time_us = now;
        }
        d->tb_tokens -= (double)len;
        if (d->tb_tokens < 0) {
            depart = d->tb_time_us + (int64_t)(-d->tb_tokens * 1e6 / (double)d->rate);
        }
    }
    ms = d->delay_ms;
    if (d->jitter_ms > 0) {
        ms += (2.0 * wanem_rand01(f->c->l->w) - 1.0) * d->jitter_ms;
    }
    if (ms < 0) {
        ms = 0;
    }
    due = depart + (int64_t)llround(ms * 1000.0);
    if (due < f->last_due_us) {
        due = f->last_due_us;
    }
    f->last_due_us = due;
    return due;
}

/* Append a segment; returns 0 or -ENOMEM. */
static int flow_push(struct flow *f, enum seg_kind kind, uint32_t len, int64_t now)
{
    struct flow_seg *seg;

    if (f->seg_count == f->seg_cap) {
        size_t ncap = f->seg_cap ? f->seg_cap * 2 : 64;
        struct flow_seg *n = malloc(ncap * sizeof(*n));

        if (n == NULL) {
            return -ENOMEM;
        }
        for (size_t i = 0; i < f->seg_count; i++) {
            n[i] = f->segs[(f->seg_head + i) % f->seg_cap];
        }
        free(f->segs);
        f->segs = n;
        f->seg_cap = ncap;
        f->seg_head = 0;
    }
    seg = &f->segs[(f->seg_head + f->seg_count) % f->seg_cap];
    seg->kind = (uint8_t)kind;
    seg->len = len;
    /* A black-holed segment gets its due time when the link comes back (flow_reschedule). */
    seg->due_us = f->c->l->dir[f->dir].blackhole ? 0 : flow_schedule(f, len, now);
    f->seg_count++;
    return 0;
}

/*
 * Queue what the source just sent (n bytes already appended to f->queue, or an EOF/reset
 * marker), cut into segments small enough that a rate cap delivers smoothly (about 2 ms of
 * data each), then deliver whatever is already due.
 */
static void flow_enqueue(struct flow *f, enum seg_kind kind, size_t n)
{
    struct link_dir *d = &f->c->l->dir[f->dir];
    int64_t now = now_us();
    size_t seg_max = WANEM_READ_MAX;

    if (kind == SEG_DATA) {
        d->bytes_in += n;
        if (d->rate > 0) {
            seg_max = d->rate / 500;
            seg_max = seg_max < 256 ? 256 : seg_max > WANEM_READ_MAX ? WANEM_READ_MAX : seg_max;
        }
        while (n > 0) {
            size_t len = n < seg_max ? n : seg_max;

            if (flow_push(f, SEG_DATA, (uint32_t)len, now) != 0) {
                conn_close(f->c, true);
                return;
            }
            n -= len;
        }
    } else if (flow_push(f, kind, 0, now) != 0) {
        conn_close(f->c, true);
        return;
    }
    if (!event_pending(f->timer, EV_TIMEOUT, NULL)) {
        flow_deliver(f, now);
    }
}

/* Arm the flow's timer for its head segment; nothing to do while black-holed or empty. */
static void flow_arm(struct flow *f)
{
    struct timeval tv;
    int64_t now, wait;

    event_del(f->timer);
    if (f->seg_count == 0 || f->c->l->dir[f->dir].blackhole || f->c->closing) {
        return;
    }
    /* libevent measures the relative timeout from its cached loop time: bring that to now,
     * or the time spent in this iteration's callbacks would make the timer fire early. */
    event_base_update_cache_time(f->c->l->w->base);
    now = now_us();
    wait = f->segs[f->seg_head].due_us - now;
    if (wait < 0) {
        wait = 0;
    }
    tv.tv_sec = wait / 1000000;
    tv.tv_usec = wait % 1000000;
    event_add(f->timer, &tv);
}

/*
 * Hand every segment that is due to the destination's output and flush it.  May close the
 * connection (a delivered reset, a write error); callers check c->closing afterwards.
 */
static void flow_deliver(struct flow *f, int64_t now)
{
    struct conn *c = f->c;
    struct link_dir *d = &c->l->dir[f->dir];
    struct side *dst = &c->side[!f->dir];

    while (f->seg_count > 0 && !d->blackhole && !c->closing) {
        struct flow_seg *seg = &f->segs[f->seg_head];

        if (seg->due_us > now + WANEM_SLACK_US) {
            break;
        }
        switch ((enum seg_kind)seg->kind) {
        case SEG_DATA:
            evbuffer_remove_buffer(f->queue, dst->out, seg->len);
            d->bytes_out += seg->len;
            break;
        case SEG_EOF:
            dst->shut_pending = true;
            break;
        case SEG_RESET:
        case SEG_KIND_MAX:
            conn_close(c, true);
            return;
        }
        f->seg_head = (f->seg_head + 1) % f->seg_cap;
        f->seg_count--;
    }
    if (c->closing) {
        return;
    }
    side_flush(dst);
    if (c->closing) {
        return;
    }
    flow_arm(f);
    flow_check_backpressure(f);
}

static void flow_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct flow *f = arg;

    (void)fd;
    (void)what;
    flow_deliver(f, now_us());
}

/*
 * The link's direction came back from a black hole at `now`: every held segment leaves as
 * if it had been sent (retransmitted) now, in order, through a full token bucket.
 */
static void flow_reschedule(struct flow *f, int64_t now)
{
    f->last_due_us = 0;
    for (size_t i = 0; i < f->seg_count; i++) {
        struct flow_seg *seg = &f->segs[(f->seg_head + i) % f->seg_cap];

        seg->due_us = flow_schedule(f, seg->len, now);
    }
}

/* ---------------------------------------------------------------------------------------
 * Sides: socket I/O
 */

/* Write out as much of s->out as the kernel takes; finish a pending shutdown once drained. */
static void side_flush(struct side *s)
{
    struct conn *c = s->c;
    int fi = (s == &c->side[0]) ? DIR_REV : DIR_FWD; /* the flow delivering into s */

    if (s->fd < 0 || s->connecting) {
        return;
    }
    while (evbuffer_get_length(s->out) > 0) {
        int n = evbuffer_write(s->out, s->fd);

        if (n == -1) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                break;
            }
            conn_close(c, true);
            return;
        }
        if (n == 0) {
            break;
        }
    }
    if (evbuffer_get_length(s->out) > 0) {
        event_add(s->wr_ev, NULL);
        return;
    }
    event_del(s->wr_ev);
    if (s->shut_pending && !s->shut_done) {
        s->shut_done = true;
        (void)shutdown(s->fd, SHUT_WR);
        if (c->side[0].shut_done && c->side[1].shut_done) {
            conn_close(c, false); /* both ends said goodbye and everything arrived */
            return;
        }
    }
    flow_check_backpressure(&c->flow[fi]);
}

static void side_on_read(evutil_socket_t fd, short what, void *arg)
{
    struct flow *f = arg;
    struct side *src = &f->c->side[f->dir];
    int n;

    (void)what;
    n = evbuffer_read(f->queue, fd, WANEM_READ_MAX);
    if (n > 0) {
        flow_enqueue(f, SEG_DATA, (size_t)n);
    } else if (n == 0) {
        f->src_done = true;
        flow_enqueue(f, SEG_EOF, 0);
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        f->src_done = true;
        flow_enqueue(f, SEG_RESET, 0);
    }
    if (!f->c->closing && src->fd >= 0) {
        flow_check_backpressure(f);
    }
}

/* The upstream connect finished (or failed), or a side can take more output. */
static void side_on_write(evutil_socket_t fd, short what, void *arg)
{
    struct side *s = arg;
    struct conn *c = s->c;

    (void)what;
    if (s->connecting) {
        int err = 0;
        socklen_t len = sizeof(err);

        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1 || err != 0) {
            conn_close(c, true); /* refused upstream: the client sees a reset */
            return;
        }
        s->connecting = false;
        flow_check_backpressure(&c->flow[DIR_REV]);
    }
    side_flush(s);
}

/* Create a side's events for fd; returns 0 or -ENOMEM. */
static int side_open(struct side *s, int fd, struct flow *reader)
{
    struct event_base *base = s->c->l->w->base;

    s->fd = fd;
    s->rd_ev = event_new(base, fd, EV_READ | EV_PERSIST, side_on_read, reader);
    if (s->rd_ev == NULL) {
        goto fail_rd;
    }
    s->wr_ev = event_new(base, fd, EV_WRITE | EV_PERSIST, side_on_write, s);
    if (s->wr_ev == NULL) {
        goto fail_wr;
    }
    return 0;

fail_wr:
    event_free(s->rd_ev);
    s->rd_ev = NULL;
fail_rd:
    s->fd = -1;
    return -ENOMEM;
}

/* ---------------------------------------------------------------------------------------
 * Connections: create, connect upstream, close, reap
 *
 * Ownership: a link owns its open connections (link->conns).  conn_close takes one off the
 * list, removes its events and hands it to the reaper, which frees it after the current
 * callbacks return — never inside its own callback chain.
 */

/* Free a connection and close its sockets; tolerates a partly built one (conn_create). */
static void conn_free(struct conn *c)
{
    for (int i = 0; i < 2; i++) {
        struct side *s = &c->side[i];

        if (s->rd_ev != NULL) {
            event_free(s->rd_ev);
        }
        if (s->wr_ev != NULL) {
            event_free(s->wr_ev);
        }
        if (s->fd >= 0) {
            if (c->rst) {
                struct linger lg = {.l_onoff = 1, .l_linger = 0};

                (void)setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
            }
            close(s->fd);
        }
        if (s->out != NULL) {
            evbuffer_free(s->out);
        }
    }
    for (int d = 0; d < DIR_MAX; d++) {
        if (c->flow[d].timer != NULL) {
            event_free(c->flow[d].timer);
        }
        if (c->flow[d].queue != NULL) {
            evbuffer_free(c->flow[d].queue);
        }
        free(c->flow[d].segs);
    }
    free(c);
}

static void conn_on_reap(evutil_socket_t fd, short what, void *arg)
{
    struct wanem *w = arg;
    struct conn *c;

    (void)fd;
    (void)what;
    while ((c = TAILQ_FIRST(&w->reap)) != NULL) {
        TAILQ_REMOVE(&w->reap, c, reap_entry);
        conn_free(c);
    }
}

/*
 * End a connection: with rst, both sides get a TCP reset (SO_LINGER 0), else a normal
 * close.  Safe to call from any of the connection's callbacks, and more than once.
 */
static void conn_close(struct conn *c, bool rst)
{
    struct wanem *w = c->l->w;

    if (c->closing) {
        return;
    }
    c->closing = true;
    c->rst = rst;
    if (rst) {
        c->l->conns_reset++;
    }
    for (int i = 0; i < 2; i++) {
        if (c->side[i].rd_ev != NULL) {
            event_del(c->side[i].rd_ev);
        }
        if (c->side[i].wr_ev != NULL) {
            event_del(c->side[i].wr_ev);
        }
        c->side[i].reading = false;
    }
    for (int d = 0; d < DIR_MAX; d++) {
        event_del(c->flow[d].timer);
    }
    TAILQ_REMOVE(&c->l->conns, c, link_entry);
    c->l->conns_open--;
    TAILQ_INSERT_TAIL(&w->reap, c, reap_entry);
    event_active(w->reap_ev, EV_TIMEOUT, 0);
}

/* Allocate a connection for an accepted client fd (takes ownership of fd); NULL on ENOMEM. */
static struct conn *conn_create(struct link *l, int fd)
{
    struct conn *c = calloc(1, sizeof(*c));

    if (c == NULL) {
        goto fail_alloc;
    }
    c->l = l;
    for (int i = 0; i < 2; i++) {
        c->side[i].c = c;
        c->side[i].fd = -1;
        c->side[i].out = evbuffer_new();
        if (c->side[i].out == NULL) {
            goto fail_parts;
        }
    }
    for (int d = 0; d < DIR_MAX; d++) {
        c->flow[d].c = c;
        c->flow[d].dir = (enum dir_id)d;
        c->flow[d].queue = evbuffer_new();
        c->flow[d].timer = evtimer_new(l->w->base, flow_on_timer, &c->flow[d]);
        if (c->flow[d].queue == NULL || c->flow[d].timer == NULL) {
            goto fail_parts;
        }
    }
    if (side_open(&c->side[0], fd, &c->flow[DIR_FWD]) != 0) {
        goto fail_parts;
    }
    return c;

fail_parts:
    conn_free(c);
fail_alloc:
    close(fd);
    return NULL;
}

/*
 * Start the non-blocking connect to the link's target.  Returns 0 (connected or in
 * progress) or a negative errno; on failure the caller resets the client.
 */
static int conn_connect_upstream(struct conn *c)
{
    struct link *l = c->l;
    struct side *s = &c->side[1];
    int fd;

    c->upstream_started = true;
    fd = socket(l->target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        return -errno;
    }
    sock_nodelay(fd);
    if (side_open(s, fd, &c->flow[DIR_REV]) != 0) {
        close(fd);
        return -ENOMEM;
    }
    if (connect(fd, (struct sockaddr *)&l->target, l->target_len) == -1) {
        if (errno != EINPROGRESS) {
            return -errno;
        }
        s->connecting = true;
        event_add(s->wr_ev, NULL);
        return 0;
    }
    flow_check_backpressure(&c->flow[DIR_REV]);
    side_flush(s);
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Links: listener, state changes, settings
 */

static void link_on_accept(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
                           int salen, void *arg)
{
    struct link *l = arg;
    struct conn *c;

    (void)lis;
    (void)sa;
    (void)salen;
    sock_nodelay(fd);
    c = conn_create(l, fd);
    if (c == NULL) {
        wanem_log(l->w, "link %s: out of memory accepting a connection", l->name);
        return;
    }
    TAILQ_INSERT_TAIL(&l->conns, c, link_entry);
    l->conns_open++;
    l->conns_total++;
    flow_check_backpressure(&c->flow[DIR_FWD]);
    /* Through a black hole the SYN would not arrive either: connect once the link is back. */
    if (!l->dir[DIR_FWD].blackhole && conn_connect_upstream(c) != 0) {
        conn_close(c, true);
    }
}

/* Open (or reopen after a cut) the link's listener; returns 0 or a negative errno. */
static int link_listen(struct link *l)
{
    return listen_loopback(l->w->base, &l->listen_port, link_on_accept, l, &l->listener);
}

static void link_set_blackhole(struct link *l, enum dir_id d, bool on)
{
    struct link_dir *ld = &l->dir[d];
    struct conn *c, *next;
    int64_t now = now_us();

    if (ld->blackhole == on) {
        return;
    }
    ld->blackhole = on;
    if (on) {
        for (c = TAILQ_FIRST(&l->conns); c != NULL; c = TAILQ_NEXT(c, link_entry)) {
            event_del(c->flow[d].timer);
        }
        return;
    }
    ld->tb_time_us = now;
    ld->tb_tokens = (double)ld->burst;
    for (c = TAILQ_FIRST(&l->conns); c != NULL; c = next) {
        next = TAILQ_NEXT(c, link_entry);
        if (d == DIR_FWD && !c->upstream_started && conn_connect_upstream(c) != 0) {
            conn_close(c, true);
            continue;
        }
        flow_reschedule(&c->flow[d], now);
        flow_deliver(&c->flow[d], now);
    }
}

/* Cut: refuse new connections (listener closed) and reset every open one, both sides. */
static void link_cut(struct link *l)
{
    struct conn *c;

    l->cut = true;
    if (l->listener != NULL) {
        evconnlistener_free(l->listener);
        l->listener = NULL;
    }
    while ((c = TAILQ_FIRST(&l->conns)) != NULL) {
        conn_close(c, true);
    }
}

/* Leave the cut state: listen again on the same port.  Returns 0 or a negative errno. */
static int link_uncut(struct link *l)
{
    int rc;

    if (!l->cut) {
        return 0;
    }
    rc = link_listen(l);
    if (rc == 0) {
        l->cut = false;
    }
    return rc;
}

static const char *link_state_str(const struct link *l)
{
    bool f = l->dir[DIR_FWD].blackhole, r = l->dir[DIR_REV].blackhole;

    if (l->cut) {
        return "cut";
    }
    if (f && r) {
        return "blackhole";
    }
    return f ? "blackhole-fwd" : r ? "blackhole-rev" : "up";
}

static struct link *link_find(struct wanem *w, const char *name)
{
    for (size_t i = 0; i < w->nlinks; i++) {
        if (strcmp(w->links[i].name, name) == 0) {
            return &w->links[i];
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------------------------------
 * Control protocol
 */

static const char ctl_usage[] =
    "commands: set LINK [dir=fwd|rev|both] [delay=MS] [jitter=MS] [rate=BYTES_PER_S] "
    "[burst=BYTES] [queue=BYTES]; state LINK up|blackhole|cut [dir=fwd|rev|both]; "
    "stats LINK; list; ping; help; quit";

/* Parse "dir=..." into a mask of directions; returns 0 or -EINVAL. */
static int ctl_parse_dir(const char *v, unsigned *mask)
{
    if (strcmp(v, "fwd") == 0) {
        *mask = 1u << DIR_FWD;
    } else if (strcmp(v, "rev") == 0) {
        *mask = 1u << DIR_REV;
    } else if (strcmp(v, "both") == 0) {
        *mask = (1u << DIR_FWD) | (1u << DIR_REV);
    } else {
        return -EINVAL;
    }
    return 0;
}

static int ctl_parse_double(const char *v, double max, double *out)
{
    char *end;
    double d;

    errno = 0;
    d = strtod(v, &end);
    if (errno != 0 || end == v || *end != '\0' || !(d >= 0) || d > max) {
        return -EINVAL;
    }
    *out = d;
    return 0;
}

static int ctl_parse_u64(const char *v, uint64_t min, uint64_t *out)
{
    char *end;
    unsigned long long u;

    if (*v == '-' || *v == '\0') {
        return -EINVAL;
    }
    errno = 0;
    u = strtoull(v, &end, 10);
    if (errno != 0 || *end != '\0' || u < min) {
        return -EINVAL;
    }
    *out = u;
    return 0;
}

/* The settings `set` may change: one table drives parsing, validation and the reply. */
enum set_type {
    SET_MS = 0, /* double, milliseconds */
    SET_BYTES,  /* uint64_t */
    SET_TYPE_MAX
};

static const struct set_key {
    const char *name;
    enum set_type type;
    size_t offset; /* into struct link_dir */
    uint64_t min;
} set_keys[] = {
    {"delay", SET_MS, offsetof(struct link_dir, delay_ms), 0},
    {"jitter", SET_MS, offsetof(struct link_dir, jitter_ms), 0},
    {"rate", SET_BYTES, offsetof(struct link_dir, rate), 0},
    {"burst", SET_BYTES, offsetof(struct link_dir, burst), 1},
    {"queue", SET_BYTES, offsetof(struct link_dir, queue_cap), 1},
};

#define SET_NKEYS (sizeof(set_keys) / sizeof(set_keys[0]))

/*
 * set LINK [dir=fwd|rev|both] key=value...: every argument is parsed and validated into a
 * copy of the settings before any is applied, so a bad argument changes nothing.  A new
 * rate or burst starts with a full bucket; queued segments keep their delivery times.
 */
static void ctl_set(struct wanem *w, struct evbuffer *out, char **argv, int argc)
{
    unsigned mask = (1u << DIR_FWD) | (1u << DIR_REV);
    struct link_dir staged;
    bool given[SET_NKEYS] = {false};
    struct link *l;
    int64_t now = now_us();

    if (argc < 2 || (l = link_find(w, argv[1])) == NULL) {
        evbuffer_add_printf(out, "ERR unknown link '%s'\n", argc < 2 ? "" : argv[1]);
        return;
    }
    if (argc < 3) {
        evbuffer_add_printf(out, "ERR set needs at least one key=value\n");
        return;
    }
    memset(&staged, 0, sizeof(staged));
    for (int i = 2; i < argc; i++) {
        char *v = strchr(argv[i], '=');
        size_t k;
        int rc = -EINVAL;

        if (v == NULL) {
            evbuffer_add_printf(out, "ERR expected key=value, got '%s'\n", argv[i]);
            return;
        }
        *v++ = '\0';
        for (k = 0; k < SET_NKEYS && strcmp(argv[i], set_keys[k].name) != 0; k++) {
        }
        if (strcmp(argv[i], "dir") == 0) {
            rc = ctl_parse_dir(v, &mask);
        } else if (k == SET_NKEYS) {
            evbuffer_add_printf(out, "ERR unknown key '%s'\n", argv[i]);
            return;
        } else if (set_keys[k].type == SET_MS) {
            rc = ctl_parse_double(v, 600000, (double *)((char *)&staged + set_keys[k].offset));
            given[k] = true;
        } else {
            rc = ctl_parse_u64(v, set_keys[k].min,
                               (uint64_t *)((char *)&staged + set_keys[k].offset));
            given[k] = true;
        }
        if (rc != 0) {
            evbuffer_add_printf(out, "ERR bad value for %s: '%s'\n", argv[i], v);
            return;
        }
    }
    for (int d = 0; d < DIR_MAX; d++) {
        struct link_dir *ld = &l->dir[d];

        if (!(mask & (1u << d))) {
            continue;
        }
        for (size_t k = 0; k < SET_NKEYS; k++) {
            if (given[k]) {
                size_t size = set_keys[k].type == SET_MS ? sizeof(double) : sizeof(uint64_t);

                memcpy((char *)ld + set_keys[k].offset, (char *)&staged + set_keys[k].offset, size);
            }
        }
        ld->tb_time_us = now;
        ld->tb_tokens = (double)ld->burst;
        for (struct conn *c = TAILQ_FIRST(&l->conns); c != NULL; c = TAILQ_NEXT(c, link_entry)) {
            flow_check_backpressure(&c->flow[d]);
        }
        wanem_log(
            w, "link %s: %s delay=%g jitter=%g rate=%" PRIu64 " burst=%" PRIu64 " queue=%" PRIu64,
            l->name, dir_names[d], ld->delay_ms, ld->jitter_ms, ld->rate, ld->burst, ld->queue_cap);
    }
    evbuffer_add_printf(out, "OK\n");
}

/* state LINK up|blackhole|cut [dir=fwd|rev|both] */
static void ctl_state(struct wanem *w, struct evbuffer *out, char **argv, int argc)
{
    struct link *l;
    unsigned mask = (1u << DIR_FWD) | (1u << DIR_REV);
    const char *st;
    int rc;

    if (argc < 2 || (l = link_find(w, argv[1])) == NULL) {
        evbuffer_add_printf(out, "ERR unknown link '%s'\n", argc < 2 ? "" : argv[1]);
        return;
    }
    if (argc < 3 || argc > 4) {
        evbuffer_add_printf(out, "ERR usage: state LINK up|blackhole|cut [dir=fwd|rev|both]\n");
        return;
    }
    st = argv[2];
    if (argc == 4 && (strncmp(argv[3], "dir=", 4) != 0 || ctl_parse_dir(argv[3] + 4, &mask))) {
        evbuffer_add_printf(out, "ERR bad direction '%s'\n", argv[3]);
        return;
    }
    if (strcmp(st, "cut") == 0) {
        if (argc == 4) {
            evbuffer_add_printf(out, "ERR cut applies to both directions\n");
            return;
        }
        link_cut(l);
    } else if (strcmp(st, "up") == 0 || strcmp(st, "blackhole") == 0) {
        bool on = st[0] == 'b';

        rc = link_uncut(l);
        if (rc != 0) {
            evbuffer_add_printf(out, "ERR cannot listen again on port %u: %s\n", l->listen_port,
                                strerror(-rc));
            return;
        }
        /* The forward direction first, so a deferred upstream connect exists before the
         * reverse direction delivers into it. */
        for (int d = 0; d < DIR_MAX; d++) {
            if (mask & (1u << d)) {
                link_set_blackhole(l, (enum dir_id)d, on);
            }
        }
    } else {
        evbuffer_add_printf(out, "ERR unknown state '%s' (up, blackhole, cut)\n", st);
        return;
    }
    wanem_log(w, "link %s: state %s", l->name, link_state_str(l));
    evbuffer_add_printf(out, "OK\n");
}

static void ctl_stats(struct wanem *w, struct evbuffer *out, char **argv, int argc)
{
    struct link *l;
    size_t queued[DIR_MAX] = {0, 0};
    struct conn *c;

    if (argc != 2 || (l = link_find(w, argv[1])) == NULL) {
        evbuffer_add_printf(out, "ERR unknown link '%s'\n", argc < 2 ? "" : argv[1]);
        return;
    }
    for (c = TAILQ_FIRST(&l->conns); c != NULL; c = TAILQ_NEXT(c, link_entry)) {
        for (int d = 0; d < DIR_MAX; d++) {
            queued[d] += flow_queued(&c->flow[d]);
        }
    }
    evbuffer_add_printf(out,
                        "OK link=%s listen=%u target=%s state=%s conns=%" PRIu64
                        " conns_total=%" PRIu64 " conns_reset=%" PRIu64,
                        l->name, l->listen_port, l->target_str, link_state_str(l), l->conns_open,
                        l->conns_total, l->conns_reset);
    for (int d = 0; d < DIR_MAX; d++) {
        const struct link_dir *ld = &l->dir[d];
        const char *n = dir_names[d];

        evbuffer_add_printf(out,
                            " %s_bytes_in=%" PRIu64 " %s_bytes=%" PRIu64 " %s_queued=%zu"
                            " %s_delay=%g %s_jitter=%g %s_rate=%" PRIu64 " %s_burst=%" PRIu64
                            " %s_queue_cap=%" PRIu64 " %s_state=%s",
                            n, ld->bytes_in, n, ld->bytes_out, n, queued[d], n, ld->delay_ms, n,
                            ld->jitter_ms, n, ld->rate, n, ld->burst, n, ld->queue_cap, n,
                            l->cut          ? "cut"
                            : ld->blackhole ? "blackhole"
                                            : "up");
    }
    evbuffer_add_printf(out, "\n");
}

/* Execute one request line; the reply goes to out.  Returns true when the client quits. */
static bool ctl_exec(struct wanem *w, char *line, struct evbuffer *out)
{
    char *argv[16];
    int argc = 0;
    char *save = NULL;

    for (char *t = strtok_r(line, " \t", &save); t != NULL; t = strtok_r(NULL, " \t", &save)) {
        if (argc == (int)(sizeof(argv) / sizeof(argv[0]))) {
            evbuffer_add_printf(out, "ERR too many arguments\n");
            return false;
        }
        argv[argc++] = t;
    }
    if (argc == 0) {
        evbuffer_add_printf(out, "ERR empty command\n");
    } else if (strcmp(argv[0], "set") == 0) {
        ctl_set(w, out, argv, argc);
    } else if (strcmp(argv[0], "state") == 0) {
        ctl_state(w, out, argv, argc);
    } else if (strcmp(argv[0], "stats") == 0) {
        ctl_stats(w, out, argv, argc);
    } else if (strcmp(argv[0], "list") == 0) {
        evbuffer_add_printf(out, "OK");
        for (size_t i = 0; i < w->nlinks; i++) {
            evbuffer_add_printf(out, " %s", w->links[i].name);
        }
        evbuffer_add_printf(out, "\n");
    } else if (strcmp(argv[0], "ping") == 0) {
        evbuffer_add_printf(out, "OK pong\n");
    } else if (strcmp(argv[0], "help") == 0) {
        evbuffer_add_printf(out, "OK %s\n", ctl_usage);
    } else if (strcmp(argv[0], "quit") == 0) {
        evbuffer_add_printf(out, "OK bye\n");
        return true;
    } else {
        evbuffer_add_printf(out, "ERR unknown command '%s'; %s\n", argv[0], ctl_usage);
    }
    return false;
}

static void ctl_client_free(struct ctl_client *cc)
{
    TAILQ_REMOVE(&cc->w->ctl_clients, cc, entry);
    bufferevent_free(cc->bev);
    free(cc);
}

/*
 * The control channel uses bufferevents: it is not a hot path, and libevent defers a
 * bufferevent's destruction until its running callback returns, so freeing one from its
 * own callback is safe.
 */
static void ctl_on_read(struct bufferevent *bev, void *arg)
{
    struct ctl_client *cc = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer *out = bufferevent_get_output(bev);
    char *line;
    size_t len;

    while (!cc->quitting && (line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF)) != NULL) {
        if (len > WANEM_CTL_LINE_MAX) {
            evbuffer_add_printf(out, "ERR line too long\n");
        } else {
            cc->quitting = ctl_exec(cc->w, line, out);
        }
        free(line);
    }
    if (!cc->quitting && evbuffer_get_length(in) > WANEM_CTL_LINE_MAX) {
        evbuffer_add_printf(out, "ERR line too long\n");
        cc->quitting = true;
    }
    if (cc->quitting) {
        bufferevent_disable(bev, EV_READ);
    }
}

static void ctl_on_write(struct bufferevent *bev, void *arg)
{
    struct ctl_client *cc = arg;

    (void)bev;
    if (cc->quitting) {
        ctl_client_free(cc);
    }
}

static void ctl_on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        ctl_client_free(arg);
    }
}

static void ctl_on_accept(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
                          int salen, void *arg)
{
    struct wanem *w = arg;
    struct ctl_client *cc = calloc(1, sizeof(*cc));

    (void)lis;
    (void)sa;
    (void)salen;
    if (cc == NULL) {
        close(fd);
        return;
    }
    cc->w = w;
    cc->bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (cc->bev == NULL) {
        close(fd);
        free(cc);
        return;
    }
    sock_nodelay(fd);
    TAILQ_INSERT_TAIL(&w->ctl_clients, cc, entry);
    bufferevent_setcb(cc->bev, ctl_on_read, ctl_on_write, ctl_on_event, cc);
    bufferevent_enable(cc->bev, EV_READ | EV_WRITE);
}

/* ---------------------------------------------------------------------------------------
 * Start-up and shut-down
 */

/*
 * Parse NAME=LISTEN_PORT:TARGET_HOST:TARGET_PORT into l; TARGET_HOST is a numeric address
 * (IPv6 may be in brackets) or "localhost".
 * Returns 0 or -EINVAL with a message on stderr; refuses targets that are not loopback.
 */
static int link_parse(struct wanem *w, struct link *l, const char *spec)
{
    char buf[256], *eq, *c1, *c2, *host, *end;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_NUMERICHOST};
    struct addrinfo *res = NULL;
    unsigned long lport;
    size_t nlen;
    int rc;

    if (strlen(spec) >= sizeof(buf)) {
        goto fail_syntax;
    }
    strcpy(buf, spec);
    eq = strchr(buf, '=');
    if (eq == NULL) {
        goto fail_syntax;
    }
    *eq = '\0';
    nlen = strlen(buf);
    if (nlen == 0 || nlen >= WANEM_NAME_MAX ||
        strspn(buf, "abcdefghijklmnopqrstuvwxyz"
                    "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                    "0123456789_.-") != nlen) {
        fprintf(stderr, "wanem: bad link name in '%s' (letters, digits, _ . -)\n", spec);
        return -EINVAL;
    }
    c1 = strchr(eq + 1, ':');
    c2 = strrchr(eq + 1, ':');
    if (c1 == NULL || c2 == c1) {
        goto fail_syntax;
    }
    *c1 = '\0';
    *c2 = '\0';
    errno = 0;
    lport = strtoul(eq + 1, &end, 10);
    if (errno != 0 || end == eq + 1 || *end != '\0' || lport > 65535) {
        goto fail_syntax;
    }
    host = c1 + 1;
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        host[strlen(host) - 1] = '\0';
        host++;
    }
    if (strcmp(host, "localhost") == 0) {
        host = "127.0.0.1"; /* the only name taken: no resolver, no DNS */
    }
    rc = getaddrinfo(host, c2 + 1, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "wanem: link %s: target %s:%s: %s (want a loopback address or localhost)\n",
                buf, host, c2 + 1, gai_strerror(rc));
        return -EINVAL;
    }
    if (!addr_is_loopback(res->ai_addr)) {
        fprintf(stderr, "wanem: link %s: target %s is not a loopback address; refusing\n", buf,
                host);
        freeaddrinfo(res);
        return -EINVAL;
    }
    if (link_find(w, buf) != NULL) {
        fprintf(stderr, "wanem: link %s given twice\n", buf);
        freeaddrinfo(res);
        return -EINVAL;
    }
    memset(l, 0, sizeof(*l));
    l->w = w;
    memcpy(l->name, buf, nlen + 1);
    l->listen_port = (uint16_t)lport;
    memcpy(&l->target, res->ai_addr, res->ai_addrlen);
    l->target_len = res->ai_addrlen;
    snprintf(l->target_str, sizeof(l->target_str), "%s:%s", host, c2 + 1);
    freeaddrinfo(res);
    TAILQ_INIT(&l->conns);
    for (int d = 0; d < DIR_MAX; d++) {
        l->dir[d].burst = WANEM_BURST;
        l->dir[d].tb_tokens = WANEM_BURST;
        l->dir[d].queue_cap = w->queue_cap;
    }
    return 0;

fail_syntax:
    fprintf(stderr, "wanem: bad --link '%s' (want NAME=LISTEN_PORT:TARGET_HOST:TARGET_PORT)\n",
            spec);
    return -EINVAL;
}

static void wanem_on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct wanem *w = arg;

    (void)what;
    wanem_log(w, "signal %d, stopping", (int)sig);
    event_base_loopexit(w->base, NULL);
}

static void usage(FILE *to)
{
    fprintf(to,
            "usage: geogate-wanem --link NAME=LISTEN_PORT:TARGET_HOST:TARGET_PORT [--link ...]\n"
            "                     [--control PORT] [--queue-cap BYTES] [--seed N] [--quiet]\n"
            "\n"
            "Relays TCP from 127.0.0.1:LISTEN_PORT to a loopback target with per-direction\n"
            "delay, jitter, bandwidth cap, black hole and cut, driven over the control port.\n"
            "Ports may be 0 (the kernel picks); once listening it prints one line:\n"
            "  ready control=PORT NAME=PORT ...\n"
            "Control (127.0.0.1:PORT, one line each, replies OK ... or ERR reason):\n  %s\n",
            ctl_usage);
}

/* Free everything (for clean sanitizer runs); the loop has stopped. */
static void wanem_destroy(struct wanem *w)
{
    struct ctl_client *cc;

    for (size_t i = 0; i < w->nlinks; i++) {
        struct link *l = &w->links[i];
        struct conn *c;

        while ((c = TAILQ_FIRST(&l->conns)) != NULL) {
            conn_close(c, false);
        }
        if (l->listener != NULL) {
            evconnlistener_free(l->listener);
        }
    }
    conn_on_reap(-1, 0, w);
    while ((cc = TAILQ_FIRST(&w->ctl_clients)) != NULL) {
        ctl_client_free(cc);
    }
    if (w->ctl_listener != NULL) {
        evconnlistener_free(w->ctl_listener);
    }
    for (int i = 0; i < 2; i++) {
        if (w->sig_ev[i] != NULL) {
            event_free(w->sig_ev[i]);
        }
    }
    if (w->reap_ev != NULL) {
        event_free(w->reap_ev);
    }
    free(w->links);
    if (w->base != NULL) {
        event_base_free(w->base);
    }
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"link", required_argument, NULL, 'l'},
        {"control", required_argument, NULL, 'c'},
        {"queue-cap", required_argument, NULL, 'q'},
        {"seed", required_argument, NULL, 's'},
        {"quiet", no_argument, NULL, 'Q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct wanem w;
    struct event_config *cfg;
    const char **specs;
    size_t nspecs = 0;
    bool seeded = false;
    int opt, rc = 1;

    memset(&w, 0, sizeof(w));
    TAILQ_INIT(&w.ctl_clients);
    TAILQ_INIT(&w.reap);
    w.queue_cap = WANEM_QUEUE_CAP;
    specs = calloc((size_t)argc, sizeof(*specs));
    if (specs == NULL) {
        return 1;
    }
    while ((opt = getopt_long(argc, argv, "l:c:q:s:Qh", opts, NULL)) != -1) {
        uint64_t v;

        switch (opt) {
        case 'l':
            specs[nspecs++] = optarg;
            break;
        case 'c':
            if (ctl_parse_u64(optarg, 0, &v) != 0 || v > 65535) {
                fprintf(stderr, "wanem: bad --control port '%s'\n", optarg);
                goto fail_args;
            }
            w.ctl_port = (uint16_t)v;
            break;
        case 'q':
            if (ctl_parse_u64(optarg, 1, &w.queue_cap) != 0) {
                fprintf(stderr, "wanem: bad --queue-cap '%s'\n", optarg);
                goto fail_args;
            }
            break;
        case 's':
            if (ctl_parse_u64(optarg, 0, &w.rng) != 0) {
                fprintf(stderr, "wanem: bad --seed '%s'\n", optarg);
                goto fail_args;
            }
            seeded = true;
            break;
        case 'Q':
            w.quiet = true;
            break;
        case 'h':
            usage(stdout);
            rc = 0;
            goto fail_args;
        default:
            usage(stderr);
            goto fail_args;
        }
    }
    if (nspecs == 0 || optind != argc) {
        usage(stderr);
        goto fail_args;
    }
    if (!seeded) {
        w.rng = (uint64_t)now_us() ^ ((uint64_t)getpid() << 32);
    }
    w.links = calloc(nspecs, sizeof(*w.links));
    if (w.links == NULL) {
        goto fail_args;
    }
    for (size_t i = 0; i < nspecs; i++) {
        if (link_parse(&w, &w.links[i], specs[i]) != 0) {
            goto fail_setup;
        }
        w.nlinks++;
    }
    signal(SIGPIPE, SIG_IGN);
    /* The kernel's default 50 us timer slack would show up in every delivery. */
    (void)prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);

    /* Precise timers: epoll's millisecond timeout would add up to 1 ms to every delivery. */
    cfg = event_config_new();
    if (cfg == NULL) {
        goto fail_setup;
    }
    event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
    w.base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (w.base == NULL) {
        fprintf(stderr, "wanem: cannot create the event loop\n");
        goto fail_setup;
    }
    w.reap_ev = event_new(w.base, -1, 0, conn_on_reap, &w);
    w.sig_ev[0] = evsignal_new(w.base, SIGTERM, wanem_on_signal, &w);
    w.sig_ev[1] = evsignal_new(w.base, SIGINT, wanem_on_signal, &w);
    if (w.reap_ev == NULL || w.sig_ev[0] == NULL || w.sig_ev[1] == NULL ||
        event_add(w.sig_ev[0], NULL) != 0 || event_add(w.sig_ev[1], NULL) != 0) {
        goto fail_setup;
    }
    for (size_t i = 0; i < w.nlinks; i++) {
        int err = link_listen(&w.links[i]);

        if (err != 0) {
            fprintf(stderr, "wanem: link %s: cannot listen on 127.0.0.1:%u: %s\n", w.links[i].name,
                    w.links[i].listen_port, strerror(-err));
            goto fail_setup;
        }
    }
    rc = listen_loopback(w.base, &w.ctl_port, ctl_on_accept, &w, &w.ctl_listener);
    if (rc != 0) {
        fprintf(stderr, "wanem: cannot listen on control port %u: %s\n", w.ctl_port, strerror(-rc));
        rc = 1;
        goto fail_setup;
    }
    printf("ready control=%u", w.ctl_port);
    for (size_t i = 0; i < w.nlinks; i++) {
        printf(" %s=%u", w.links[i].name, w.links[i].listen_port);
        wanem_log(&w, "link %s: 127.0.0.1:%u -> %s", w.links[i].name, w.links[i].listen_port,
                  w.links[i].target_str);
    }
    printf("\n");
    fflush(stdout);

    rc = event_base_dispatch(w.base) == -1 ? 1 : 0;

fail_setup:
    wanem_destroy(&w);
fail_args:
    free(specs);
    return rc;
}
