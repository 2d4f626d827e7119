/*
 * geogate-wanem — a WAN emulator for the tests: a TCP relay on loopback that gives each link
 * a one-way delay, jitter, a bandwidth cap, and can black-hole or cut the link on command.
 *
 * It does not touch packets, routes or the kernel (netem is not available on the test
 * machines); it only relays byte streams between 127.0.0.1:LISTEN_PORT and a loopback
 * target, so loss and retransmission are not modelled, and a client's connect() completes
 * at once instead of after one round trip.  Nor are ACKs: each end's bytes are acknowledged
 * by this relay's kernel (at once, after its delayed-ACK timer, or with the next bytes the
 * relay delivers to that end), not a round trip later, so a sender that waits for an ACK
 * (Nagle's algorithm holding a small write) waits for a time that only resembles a real
 * link's.  Data is delayed like a link's: every chunk by the link's delay from the moment it
 * was read, whatever is still in flight before it on the same or other connections (only
 * jitter can hold a chunk for an earlier one, because a stream never reorders).  It refuses
 * targets that are not loopback.
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
#include "wanem.h"

static void flow_deliver(struct flow *f, int64_t now);
static void side_flush(struct side *s);
static void conn_close(struct conn *c, bool rst);
static int conn_connect_upstream(struct conn *c);

/* ---------------------------------------------------------------------------------------
 * Small helpers
 */

int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void wanem_log(struct wanem *w, const char *fmt, ...)
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

void sock_nodelay(int fd)
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

size_t flow_queued(const struct flow *f)
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
void flow_check_backpressure(struct flow *f)
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

void link_set_blackhole(struct link *l, enum dir_id d, bool on)
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
void link_cut(struct link *l)
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
int link_uncut(struct link *l)
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

const char *link_state_str(const struct link *l)
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

struct link *link_find(struct wanem *w, const char *name)
{
    for (size_t i = 0; i < w->nlinks; i++) {
        if (strcmp(w->links[i].name, name) == 0) {
            return &w->links[i];
        }
    }
    return NULL;
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
