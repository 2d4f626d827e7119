/*
 * wanem_ctl — geogate-wanem's control protocol: one command per line on the control
 * port (set, state, stats, list, ping, help, quit), answered OK or ERR.  Test tool; runs on
 * the relay's one event loop.
 */
#include "wanem.h"

/* ---------------------------------------------------------------------------------------
 * Control protocol
 */

const char ctl_usage[] =
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

int ctl_parse_u64(const char *v, uint64_t min, uint64_t *out)
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

void ctl_client_free(struct ctl_client *cc)
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

void ctl_on_accept(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
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

