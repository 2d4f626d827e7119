/*
 * catchup — see catchup.h.  Small and rarely written: a loss announced, then about twice
 * a second while a catch-up runs, then once at its end; so the whole file is rewritten
 * each time and read only at start-up.
 */
#include "gateway/replication/catchup.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gateway/base/log.h"
#include "wan/crc32c.h"

#define CATCHUP_FILE "catchup"
#define CATCHUP_TMP "catchup.tmp"
#define CATCHUP_MAGIC "geogate-catchup 1\n"
#define CATCHUP_FILE_MAX (1u << 20)

_Static_assert(2 * GW_BACKFILL_CURSOR_MAX < 1023, "a cursor in hex fits parse_line's buffer");

struct catchup_slot {
    bool owed;
    struct gw_catchup_entry e;
};

struct gw_catchup {
    pthread_mutex_t lock;
    char *dir;
    struct catchup_slot *slots; /* one per configured peer, in config order */
    size_t nslots;
    uint64_t next_gen;
};

static struct catchup_slot *slot_of(struct gw_catchup *c, const char *peer)
{
    for (size_t i = 0; i < c->nslots; i++) {
        if (strcmp(c->slots[i].e.peer, peer) == 0) {
            return &c->slots[i];
        }
    }
    return NULL;
}

static bool name_ok(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n >= sizeof(((struct gw_catchup_entry *)0)->peer)) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (name[i] <= ' ' || name[i] > '~') {
            return false;
        }
    }
    return true;
}

static int write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w == -1) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Rewrite the file from the slots (lock held).  Returns 0, -ENOMEM or -errno (logged). */
static int catchup_write(struct gw_catchup *c)
{
    size_t cap = 64 + c->nslots * (256 + 2 * GW_BACKFILL_CURSOR_MAX), n = 0;
    char *buf = malloc(cap), tmp[4096], path[4096];
    int fd, dfd, rc = 0;

    if (buf == NULL) {
        return -ENOMEM;
    }
    n += (size_t)snprintf(buf + n, cap - n, CATCHUP_MAGIC);
    for (size_t i = 0; i < c->nslots; i++) {
        const struct gw_catchup_entry *e = &c->slots[i].e;
        if (!c->slots[i].owed) {
            continue;
        }
        n += (size_t)snprintf(buf + n, cap - n,
                              "peer %s gen %" PRIu64 " items %" PRIu64 " restarts %" PRIu64
                              " cursor ",
                              e->peer, e->gen, e->items, e->restarts);
        for (size_t k = 0; k < e->cursor_len; k++) {
            n += (size_t)snprintf(buf + n, cap - n, "%02x", e->cursor[k]);
        }
        n += (size_t)snprintf(buf + n, cap - n, "%s\n", e->cursor_len == 0 ? "-" : "");
    }
    n += (size_t)snprintf(buf + n, cap - n, "crc %08" PRIx32 "\n", wan_crc32c(0, buf, n));

    snprintf(tmp, sizeof(tmp), "%s/" CATCHUP_TMP, c->dir);
    snprintf(path, sizeof(path), "%s/" CATCHUP_FILE, c->dir);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd == -1) {
        rc = -errno;
        goto fail_open;
    }
    rc = write_all(fd, buf, n);
    if (rc == 0 && fsync(fd) == -1) {
        rc = -errno;
    }
    if (close(fd) == -1 && rc == 0) {
        rc = -errno;
    }
    if (rc == 0 && rename(tmp, path) == -1) {
        rc = -errno;
    }
    if (rc != 0) {
        goto fail_write;
    }
    /* the rename itself is durable only once the directory is */
    dfd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd == -1 || fsync(dfd) == -1) {
        rc = -errno;
    }
    if (dfd != -1) {
        close(dfd);
    }
    if (rc != 0) {
        goto fail_open;
    }
    free(buf);
    return 0;

fail_write:
    unlink(tmp);
fail_open:
    free(buf);
    log_error("catch-up state: cannot write %s: %s", path, strerror(-rc));
    return rc;
}

static int unhex(const char *s, uint8_t *out, size_t max, size_t *len)
{
    size_t n = strlen(s);

    if (strcmp(s, "-") == 0) {
        *len = 0;
        return 0;
    }
    if (n % 2 != 0 || n / 2 > max) {
        return -EBADMSG;
    }
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1) {
            return -EBADMSG;
        }
        out[i] = (uint8_t)v;
    }
    *len = n / 2;
    return 0;
}

/* One "peer ..." line (NUL-terminated) into e.  Returns 0 or -EBADMSG. */
static int parse_line(char *line, struct gw_catchup_entry *e)
{
    char peer[64], cursor[1024]; /* the %1023s below */
    int used = 0;

    memset(e, 0, sizeof(*e));
    if (sscanf(line,
               "peer %63s gen %" SCNu64 " items %" SCNu64 " restarts %" SCNu64 " cursor %1023s%n",
               peer, &e->gen, &e->items, &e->restarts, cursor, &used) != 5 ||
        line[used] != '\0' || !name_ok(peer)) {
        return -EBADMSG;
    }
    snprintf(e->peer, sizeof(e->peer), "%s", peer);
    return unhex(cursor, e->cursor, sizeof(e->cursor), &e->cursor_len);
}

/* Read and check the file into the slots (before any other thread sees c).  Returns 0,
 * -ENOENT (no file), -EBADMSG or -errno. */
static int catchup_read(struct gw_catchup *c, bool *rewrite)
{
    char path[4096], *buf, *crc_line, *save = NULL;
    struct stat sb;
    uint32_t crc;
    ssize_t got;
    int fd, rc = 0;

    snprintf(path, sizeof(path), "%s/" CATCHUP_FILE, c->dir);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        return -errno;
    }
    if (fstat(fd, &sb) == -1 || sb.st_size > CATCHUP_FILE_MAX) {
        close(fd);
        return -EBADMSG;
    }
    buf = malloc((size_t)sb.st_size + 1);
    if (buf == NULL) {
        close(fd);
        return -ENOMEM;
    }
    got = read(fd, buf, (size_t)sb.st_size);
    close(fd);
    if (got != sb.st_size || got < (ssize_t)strlen(CATCHUP_MAGIC) || buf[got - 1] != '\n') {
        free(buf);
        return -EBADMSG;
    }
    buf[got - 1] = '\0';
    crc_line = strrchr(buf, '\n');
    if (crc_line == NULL || sscanf(crc_line + 1, "crc %8" SCNx32, &crc) != 1 ||
        wan_crc32c(0, buf, (size_t)(crc_line + 1 - buf)) != crc ||
        strncmp(buf, CATCHUP_MAGIC, strlen(CATCHUP_MAGIC)) != 0) {
        free(buf);
        return -EBADMSG;
    }
    crc_line[1] = '\0'; /* the entries: after the magic line, up to the crc line */
    for (char *line = strtok_r(buf + strlen(CATCHUP_MAGIC), "\n", &save); line != NULL && rc == 0;
         line = strtok_r(NULL, "\n", &save)) {
        struct gw_catchup_entry e;
        struct catchup_slot *s;
        rc = parse_line(line, &e);
        if (rc != 0) {
            break;
        }
        if (e.gen >= c->next_gen) {
            c->next_gen = e.gen + 1;
        }
        s = slot_of(c, e.peer);
        if (s == NULL) {
            log_warn("catch-up state: %s is no longer a configured peer: forgetting the "
                     "catch-up from it",
                     e.peer);
            *rewrite = true;
            continue;
        }
        e.restarts++;
        s->e = e;
        s->owed = true;
        *rewrite = true;
    }
    free(buf);
    return rc;
}

int gw_catchup_open(const char *dir, const char *const *peers, size_t npeers,
                    struct gw_catchup **out)
{
    struct gw_catchup *c = calloc(1, sizeof(*c));
    bool rewrite = false;
    int rc;

    *out = NULL;
    if (c == NULL) {
        return -ENOMEM;
    }
    c->dir = strdup(dir);
    c->slots = calloc(npeers ? npeers : 1, sizeof(*c->slots));
    if (c->dir == NULL || c->slots == NULL) {
        free(c->dir);
        free(c->slots);
        free(c);
        return -ENOMEM;
    }
    c->nslots = npeers;
    c->next_gen = 1;
    for (size_t i = 0; i < npeers; i++) {
        snprintf(c->slots[i].e.peer, sizeof(c->slots[i].e.peer), "%s", peers[i]);
    }
    pthread_mutex_init(&c->lock, NULL);
    rc = catchup_read(c, &rewrite);
    if (rc == -EBADMSG) {
        /* Better a catch-up owed and forgotten, said loudly, than one half-believed. */
        log_error("catch-up state: %s/" CATCHUP_FILE " is damaged: ignoring it; a catch-up "
                  "it held is not resumed (run `geogatectl backfill` by hand)",
                  dir);
        for (size_t i = 0; i < npeers; i++) {
            c->slots[i].owed = false;
        }
        rewrite = true;
    } else if (rc == -ENOMEM) {
        gw_catchup_close(c);
        return rc;
    } else if (rc != 0 && rc != -ENOENT) {
        log_error("catch-up state: cannot read %s/" CATCHUP_FILE ": %s", dir, strerror(-rc));
    }
    if (rewrite) {
        catchup_write(c); /* the restart counts; logged when it fails */
    }
    *out = c;
    return 0;
}

void gw_catchup_close(struct gw_catchup *c)
{
    if (c == NULL) {
        return;
    }
    pthread_mutex_destroy(&c->lock);
    free(c->slots);
    free(c->dir);
    free(c);
}

int gw_catchup_owe(struct gw_catchup *c, const char *peer, struct gw_catchup_entry *e)
{
    struct catchup_slot *s;
    int rc;

    pthread_mutex_lock(&c->lock);
    s = slot_of(c, peer);
    if (s == NULL || !name_ok(peer)) {
        pthread_mutex_unlock(&c->lock);
        return -EINVAL;
    }
    s->owed = true;
    s->e.gen = c->next_gen++;
    s->e.items = 0;
    s->e.restarts = 0;
    s->e.cursor_len = 0;
    if (e != NULL) {
        *e = s->e;
    }
    rc = catchup_write(c);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

bool gw_catchup_pending(struct gw_catchup *c, const char *peer, struct gw_catchup_entry *e)
{
    struct catchup_slot *s;
    bool owed;

    pthread_mutex_lock(&c->lock);
    s = slot_of(c, peer);
    owed = s != NULL && s->owed;
    if (owed && e != NULL) {
        *e = s->e;
    }
    pthread_mutex_unlock(&c->lock);
    return owed;
}

int gw_catchup_progress(struct gw_catchup *c, const char *peer, uint64_t gen, const uint8_t *cursor,
                        size_t cursor_len, uint64_t items)
{
    struct catchup_slot *s;
    int rc = 0;

    if (cursor_len > GW_BACKFILL_CURSOR_MAX) {
        return -EINVAL;
    }
    pthread_mutex_lock(&c->lock);
    s = slot_of(c, peer);
    if (s != NULL && s->owed && s->e.gen == gen) {
        memcpy(s->e.cursor, cursor, cursor_len);
        s->e.cursor_len = cursor_len;
        s->e.items = items;
        rc = catchup_write(c);
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int gw_catchup_done(struct gw_catchup *c, const char *peer, uint64_t gen)
{
    struct catchup_slot *s;
    int rc = 0;

    pthread_mutex_lock(&c->lock);
    s = slot_of(c, peer);
    if (s != NULL && s->owed && s->e.gen == gen) {
        s->owed = false;
        rc = catchup_write(c);
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}
