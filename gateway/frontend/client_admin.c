/*
 * client_admin — the admin commands a gateway answers by asking every node of its pool:
 * `stats slabs|items|sizes` (the nodes' numbers combined), `lru_crawler metadump <arg>`
 * (every node's dump, one after the other) and `cache_memlimit` (every node's limit set).
 * Worker loop only.  It does not answer what the gateway keeps itself (client_stats.c)
 * and does not parse (proto_mc.c).
 *
 *   client.c's request ──> admin_fan_out: one internal request per node (frag->cb)
 *   node i ──> backend.c ──> admin_node_done: its whole reply kept in caps[i]
 *   the last node ──> admin_answer: one combined reply into that request (queued in
 *                     its client's order when the command arrived), gw_req_finish
 *
 * A node that is down when the command arrives, or fails before it answers, turns the
 * whole answer into that node's SERVER_ERROR: a sum or a key list that silently leaves
 * a node out would read as the site's, and `stats nodes` says which node it is.
 */
#include "gateway/frontend/client.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "gateway/backend/backend.h"
#include "gateway/backend/backend_worker.h"
#include "gateway/base/log.h"
#include "gateway/protocol/req.h"
#include "gateway/routing/pool.h"
#include "gateway/loop/worker.h"

/* metadump and stats lines are short; memcached's own reply line limit is near this */
#define ADMIN_MAX_LINE 4096

enum admin_kind {
    ADMIN_STATS = 0, /* STAT lines then END: combined by admin_stats_merge */
    ADMIN_METADUMP,  /* key= lines then END: concatenated */
    ADMIN_MEMLIMIT,  /* one line: OK when every node says OK */
    ADMIN_KIND_MAX
};

struct admin_fan {
    struct gw_req *r; /* the client's request; answered when the last node is */
    enum admin_kind kind;
    uint32_t nnodes;
    uint32_t pending;
    struct gw_frag *frags;  /* one per node */
    struct evbuffer **caps; /* node i's reply */
    char *error;            /* the first node failure (owned), or NULL */
};

static void admin_fan_free(struct admin_fan *fan)
{
    for (uint32_t i = 0; i < fan->nnodes; i++) {
        if (fan->caps[i] != NULL) {
            evbuffer_free(fan->caps[i]);
        }
    }
    free(fan->caps);
    free(fan->frags);
    free(fan->error);
    free(fan);
}

/* ---- stats slabs|items|sizes: one STAT line per name, the nodes' values combined ---- */

struct stat_entry {
    char *name;
    char *value; /* the first node's text: what is not summed keeps it */
    uint64_t num;
    bool numeric;
    uint32_t cls; /* where it sorts: slab class or size; UINT32_MAX after them all */
};

struct stat_merge {
    struct stat_entry *e;
    size_t n, cap;
    size_t hint; /* where the last name was found: the next is usually just after it */
};

/* "7:chunk_size", "items:7:age" and (stats sizes) "96" belong to class or size 7, 7,
 * 96; totals such as "active_slabs" come after every class, as memcached puts them. */
static uint32_t stat_class(const char *name)
{
    const char *p = strncmp(name, "items:", 6) == 0 ? name + 6 : name;
    char *end;
    unsigned long v;

    if (*p < '0' || *p > '9') {
        return UINT32_MAX;
    }
    v = strtoul(p, &end, 10);
    return (*end == ':' || *end == '\0') && v < UINT32_MAX ? (uint32_t)v : UINT32_MAX;
}

enum stat_how { STAT_SUM = 0, STAT_MAX, STAT_FIRST, STAT_HOW_MAX };

/*
 * How the nodes' values of one name combine.  Counts and sizes in bytes add up.  A
 * class's geometry (chunk_size, chunks_per_page) is configuration, the same on nodes
 * started alike: the first node's.  Ages (the oldest item, the last eviction's idle time)
 * do not add: the largest, the oldest in the site.  Text values: the first node's.
 */
static enum stat_how stat_how(const char *name)
{
    const char *field = strrchr(name, ':');

    field = field != NULL ? field + 1 : name;
    if (strcmp(field, "chunk_size") == 0 || strcmp(field, "chunks_per_page") == 0) {
        return STAT_FIRST;
    }
    if (strncmp(field, "age", 3) == 0 || strcmp(field, "evicted_time") == 0) {
        return STAT_MAX;
    }
    return STAT_SUM;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    char *end;

    if (*s < '0' || *s > '9') {
        return false;
    }
    *out = strtoull(s, &end, 10);
    return *end == '\0';
}

static struct stat_entry *stat_find(struct stat_merge *m, const char *name)
{
    for (size_t k = 0; k < m->n; k++) {
        size_t i = (m->hint + k) % m->n;
        if (strcmp(m->e[i].name, name) == 0) {
            m->hint = i + 1;
            return &m->e[i];
        }
    }
    return NULL;
}

/* A name no node before had: after the last entry of its class or a lower one, so
 * classes stay in order and a class's fields in memcached's order.  -1 out of memory. */
static int stat_insert(struct stat_merge *m, const char *name, const char *value)
{
    uint32_t cls = stat_class(name);
    struct stat_entry *e;
    size_t at = m->n;

    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        struct stat_entry *p = realloc(m->e, cap * sizeof(*p));
        if (p == NULL) {
            return -1;
        }
        m->e = p;
        m->cap = cap;
    }
    while (at > 0 && m->e[at - 1].cls > cls) {
        at--;
    }
    memmove(&m->e[at + 1], &m->e[at], (m->n - at) * sizeof(*e));
    e = &m->e[at];
    e->name = strdup(name);
    e->value = strdup(value);
    e->numeric = parse_u64(value, &e->num);
    e->cls = cls;
    m->n++;
    m->hint = at + 1;
    if (e->name == NULL || e->value == NULL) {
        return -1;
    }
    return 0;
}

static int stat_add(struct stat_merge *m, const char *name, const char *value)
{
    struct stat_entry *e = stat_find(m, name);
    uint64_t v;

    if (e == NULL) {
        return stat_insert(m, name, value);
    }
    if (!e->numeric || !parse_u64(value, &v)) {
        return 0;
    }
    switch (stat_how(name)) {
    case STAT_SUM:
        e->num += v;
        break;
    case STAT_MAX:
        e->num = v > e->num ? v : e->num;
        break;
    default:
        break;
    }
    return 0;
}

static void stat_merge_release(struct stat_merge *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->e[i].name);
        free(m->e[i].value);
    }
    free(m->e);
}

/*
 * Every node's STAT lines into one reply b, then END.  A node that answered something
 * else than END (an error) is the answer instead: its line (no CRLF) in *other, owned.
 * Returns 0, or -1 when out of memory.
 */
static int admin_stats_merge(struct admin_fan *fan, struct evbuffer *b, char **other)
{
    struct stat_merge m = {0};
    int rc = 0;

    *other = NULL;
    for (uint32_t i = 0; i < fan->nnodes && rc == 0 && *other == NULL; i++) {
        char *line;
        size_t len;

        while ((line = evbuffer_readln(fan->caps[i], &len, EVBUFFER_EOL_CRLF)) != NULL) {
            char *sp = len > 5 && strncmp(line, "STAT ", 5) == 0 ? strchr(line + 5, ' ') : NULL;
            if (sp != NULL) {
                *sp = '\0';
                rc = stat_add(&m, line + 5, sp + 1);
                free(line);
                if (rc != 0) {
                    break;
                }
                continue;
            }
            if (strcmp(line, "END") != 0) {
                *other = line;
                break;
            }
            free(line);
        }
    }
    if (rc == 0 && *other == NULL) {
        for (size_t i = 0; i < m.n; i++) {
            if (m.e[i].numeric) {
                evbuffer_add_printf(b, "STAT %s %" PRIu64 "\r\n", m.e[i].name, m.e[i].num);
            } else {
                evbuffer_add_printf(b, "STAT %s %s\r\n", m.e[i].name, m.e[i].value);
            }
        }
        evbuffer_add(b, "END\r\n", 5);
    }
    stat_merge_release(&m);
    return rc;
}

/* ---- lru_crawler metadump: the nodes' dumps one after the other, one END ---- */

/* The last line of cap (the reply's terminal one), copied without its line end into
 * line (ADMIN_MAX_LINE + 1 bytes); returns where it starts in cap. */
static size_t last_line(struct evbuffer *cap, char *line)
{
    size_t total = evbuffer_get_length(cap);
    size_t n = total < ADMIN_MAX_LINE ? total : ADMIN_MAX_LINE;
    struct evbuffer_ptr pos;
    size_t start, end;

    evbuffer_ptr_set(cap, &pos, total - n, EVBUFFER_PTR_SET);
    evbuffer_copyout_from(cap, &pos, line, n);
    end = n;
    while (end > 0 && (line[end - 1] == '\n' || line[end - 1] == '\r')) {
        end--;
    }
    start = end;
    while (start > 0 && line[start - 1] != '\n') {
        start--;
    }
    memmove(line, line + start, end - start);
    line[end - start] = '\0';
    return total - n + start;
}

static int admin_metadump_join(struct admin_fan *fan, struct evbuffer *b, char **other)
{
    char line[ADMIN_MAX_LINE + 1];

    *other = NULL;
    for (uint32_t i = 0; i < fan->nnodes; i++) {
        last_line(fan->caps[i], line);
        if (strcmp(line, "END") != 0) {
            /* BUSY, BADCLASS, CLIENT_ERROR lru crawler disabled...: the first node's
             * refusal answers for all, rather than a dump with a node missing */
            *other = strdup(line);
            return *other != NULL ? 0 : -1;
        }
    }
    for (uint32_t i = 0; i < fan->nnodes; i++) {
        size_t body = last_line(fan->caps[i], line);
        evbuffer_remove_buffer(fan->caps[i], b, body);
    }
    evbuffer_add(b, "END\r\n", 5);
    return 0;
}

/* ---- answering ---- */

/* Every node has answered or failed: the client's reply. */
static void admin_answer(struct admin_fan *fan)
{
    struct gw_req *r = fan->r;
    struct evbuffer *b = r->client != NULL && !r->noreply ? gw_req_reply(r) : NULL;
    char *other = NULL;
    int rc = 0;

    if (fan->error != NULL) {
        if (b != NULL) {
            evbuffer_add_printf(b, "%s\r\n", fan->error);
        }
    } else if (b == NULL) {
        /* noreply, or nobody to tell */
    } else if (fan->kind == ADMIN_STATS) {
        rc = admin_stats_merge(fan, b, &other);
    } else if (fan->kind == ADMIN_METADUMP) {
        rc = admin_metadump_join(fan, b, &other);
    } else {
        char line[ADMIN_MAX_LINE + 1];
        for (uint32_t i = 0; i < fan->nnodes && other == NULL; i++) {
            last_line(fan->caps[i], line);
            if (strcmp(line, "OK") != 0) {
                other = strdup(line);
                rc = other != NULL ? 0 : -1;
            }
        }
        if (other == NULL && rc == 0) {
            evbuffer_add(b, "OK\r\n", 4);
        }
    }
    if (b != NULL && (rc != 0 || other != NULL)) {
        evbuffer_drain(b, evbuffer_get_length(b));
        evbuffer_add_printf(b, "%s\r\n", rc != 0 ? "SERVER_ERROR out of memory" : other);
    }
    free(other);
    admin_fan_free(fan);
    gw_req_finish(r);
}

static void admin_node_done(struct gw_frag *frag, struct evbuffer *reply, const char *error)
{
    struct admin_fan *fan = frag->cb_arg;

    (void)reply; /* it is caps[frag - frags] */
    if (error != NULL && fan->error == NULL) {
        fan->error = strdup(error);
        if (fan->error == NULL) {
            fan->error = strdup("SERVER_ERROR out of memory");
        }
    }
    if (--fan->pending == 0) {
        admin_answer(fan);
    }
}

/*
 * Send line to every node of r's pool, as kind, and answer r once they all have.  A node
 * that is down already: its SERVER_ERROR now, nothing sent.
 */
static void admin_fan_out(struct gw_req *r, enum admin_kind kind, const char *line, size_t len)
{
    struct gw_worker *w = r->w;
    uint32_t nn = w->pool->nnodes;
    struct admin_fan *fan;

    for (uint32_t i = 0; i < nn; i++) {
        if (!gw_node_usable(&w->pool->nodes[i])) {
            gw_req_finish_line(r, w->pool->nodes[i].err_down);
            return;
        }
    }
    fan = calloc(1, sizeof(*fan));
    if (fan == NULL || (fan->frags = calloc(nn, sizeof(*fan->frags))) == NULL ||
        (fan->caps = calloc(nn, sizeof(*fan->caps))) == NULL) {
        goto fail_alloc;
    }
    fan->nnodes = nn;
    for (uint32_t i = 0; i < nn; i++) {
        if ((fan->caps[i] = evbuffer_new()) == NULL) {
            goto fail_alloc;
        }
    }
    fan->r = r;
    fan->kind = kind;
    fan->pending = nn;
    for (uint32_t i = 0; i < nn; i++) {
        struct gw_frag *f = &fan->frags[i];
        struct gw_backend *be =
            kind == ADMIN_METADUMP ? gw_backend_oneshot(w, i) : gw_worker_backend(w, i);
        f->cb = admin_node_done;
        f->cb_arg = fan;
        f->capture = fan->caps[i];
        f->cb_body = kind == ADMIN_STATS ? "STAT " : kind == ADMIN_METADUMP ? "key=" : NULL;
        if (be == NULL) {
            admin_node_done(f, NULL, "SERVER_ERROR out of memory");
            continue;
        }
        gw_backend_send(be, f, line, len, NULL, 0);
    }
    return;

fail_alloc:
    if (fan != NULL) {
        admin_fan_free(fan);
    }
    gw_req_finish_line(r, "SERVER_ERROR out of memory");
}

void gw_client_admin(struct gw_req *r, const struct mc_request *m)
{
    char line[ADMIN_MAX_LINE];
    enum admin_kind kind;
    int n;

    if (m->cmd == MC_CMD_STATS) {
        kind = ADMIN_STATS;
        n = snprintf(line, sizeof(line), "stats %s\r\n", m->subcommand);
    } else if (m->cmd == MC_CMD_LRU_CRAWLER) {
        kind = ADMIN_METADUMP;
        n = snprintf(line, sizeof(line), "lru_crawler metadump %s\r\n", m->arg);
    } else {
        kind = ADMIN_MEMLIMIT;
        n = snprintf(line, sizeof(line), "cache_memlimit %" PRIu32 "\r\n", m->memlimit_mb);
    }
    if (n < 0 || (size_t)n >= sizeof(line)) {
        gw_req_finish_line(r, "CLIENT_ERROR line too long");
        return;
    }
    admin_fan_out(r, kind, line, (size_t)n);
}
