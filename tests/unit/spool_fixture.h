/*
 * spool_fixture — the fixture and helpers test_spool.c and test_spool_recover.c share: a
 * spool in a fresh mkdtemp directory with a captured log and a fake clock, records with
 * checkable contents, and file helpers.  Include once per test file.
 */
#ifndef GEOGATE_TEST_SPOOL_FIXTURE_H
#define GEOGATE_TEST_SPOOL_FIXTURE_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "wan/spool.h"

/* Not every test file uses every helper. */
#pragma GCC diagnostic ignored "-Wunused-function"

#define REC_OVERHEAD 28u /* frame + record header, see spool.c */
#define MAXREC 4096

/* ---- fixture ----------------------------------------------------------------------- */

struct logcap {
    int count[WAN_SPOOL_LOG_MAX];
    char text[1 << 16];
    size_t len;
};

struct fx {
    char dir[64];
    struct logcap log;
    uint64_t now;
    const char *peers[4];
    struct wan_spool_options opt;
    struct wan_spool *sp;
};

static void cap_log(void *arg, enum wan_spool_log_level level, const char *msg)
{
    struct logcap *c = arg;
    int k;

    assert_true(level < WAN_SPOOL_LOG_MAX);
    assert_null(strchr(msg, '\n'));
    c->count[level]++;
    k = snprintf(c->text + c->len, sizeof(c->text) - c->len, "%d %s\n", (int)level, msg);
    if (k > 0 && c->len + (size_t)k < sizeof(c->text)) {
        c->len += (size_t)k;
    }
}

static void log_clear(struct fx *f)
{
    memset(&f->log, 0, sizeof(f->log));
}

static uint64_t fake_clock(void *arg)
{
    return *(uint64_t *)arg;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    strcpy(f->dir, "/tmp/test_spool.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->now = UINT64_C(1700000000000);
    f->peers[0] = "eu-west";
    f->peers[1] = "ap-south";
    f->opt.dir = f->dir;
    f->opt.fsync = WAN_SPOOL_FSYNC_EVERYSEC;
    f->opt.peers = f->peers;
    f->opt.npeers = 2;
    f->opt.log = cap_log;
    f->opt.log_arg = &f->log;
    f->opt.clock = fake_clock;
    f->opt.clock_arg = &f->now;
    *state = f;
    return 0;
}

static void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char path[512];

    if (d == NULL) {
        return;
    }
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static int teardown(void **state)
{
    struct fx *f = *state;

    if (f->sp != NULL) {
        wan_spool_close(f->sp);
    }
    rm_rf(f->dir);
    free(f);
    return 0;
}

static void sp_open(struct fx *f)
{
    assert_null(f->sp);
    assert_int_equal(wan_spool_open(&f->opt, &f->sp), 0);
    assert_non_null(f->sp);
}

static void sp_close(struct fx *f)
{
    assert_int_equal(wan_spool_close(f->sp), 0);
    f->sp = NULL;
}

static void sp_reopen(struct fx *f)
{
    sp_close(f);
    sp_open(f);
}

/* ---- records ----------------------------------------------------------------------- */

/* Data for record number i: i (4 bytes LE) then a pattern; 4..303 bytes. */
static size_t data_for(uint32_t i, uint8_t *buf)
{
    size_t len = 4 + (i * 37u) % 300u;

    buf[0] = (uint8_t)i;
    buf[1] = (uint8_t)(i >> 8);
    buf[2] = (uint8_t)(i >> 16);
    buf[3] = (uint8_t)(i >> 24);
    for (size_t j = 4; j < len; j++) {
        buf[j] = (uint8_t)(i * 31u + j);
    }
    return len;
}

static uint64_t rec_size(const char *key, uint32_t i)
{
    uint8_t buf[MAXREC];
    return REC_OVERHEAD + strlen(key) + data_for(i, buf);
}

static uint64_t app(struct fx *f, const char *key, uint32_t i)
{
    uint8_t buf[MAXREC];
    size_t len = data_for(i, buf);
    uint64_t seq = 0;

    assert_int_equal(wan_spool_append(f->sp, key, strlen(key), buf, len, &seq), 0);
    assert_true(seq > 0);
    return seq;
}

static const char *key_of(uint32_t i)
{
    static __thread char k[32]; /* the threads test calls it from several threads */
    snprintf(k, sizeof(k), "key-%u", i);
    return k;
}

/* Append records i = from .. from + n - 1 with keys key-<i>; they get seqs first.. */
static uint64_t app_n(struct fx *f, uint32_t from, uint32_t n)
{
    uint64_t first = 0;

    for (uint32_t i = from; i < from + n; i++) {
        uint64_t s = app(f, key_of(i), i);
        if (i == from) {
            first = s;
        }
    }
    return first;
}

struct got {
    uint64_t seq;
    uint64_t time_ms;
    uint32_t i;
    char key[64];
};

/* Check a record's data against its embedded number; return the number. */
static uint32_t check_data(const struct wan_spool_record *r)
{
    uint8_t buf[MAXREC];
    uint32_t i;

    assert_true(r->len >= 4);
    i = (uint32_t)r->data[0] | ((uint32_t)r->data[1] << 8) | ((uint32_t)r->data[2] << 16) |
        ((uint32_t)r->data[3] << 24);
    assert_int_equal(r->len, data_for(i, buf));
    assert_memory_equal(r->data, buf, r->len);
    return i;
}

/* Read everything from seq on; records must come in increasing seq order, intact. */
static size_t read_all(struct fx *f, uint64_t from, struct got *out, size_t cap)
{
    struct wan_spool_cursor *c = NULL;
    struct wan_spool_record r;
    size_t n = 0;
    uint64_t last = 0;
    int rc;

    assert_int_equal(wan_spool_cursor_create(f->sp, from, &c), 0);
    while ((rc = wan_spool_cursor_next(c, &r)) == 0) {
        assert_true(r.seq >= from);
        assert_true(r.seq > last);
        last = r.seq;
        assert_true(n < cap);
        out[n].seq = r.seq;
        out[n].time_ms = r.time_ms;
        out[n].i = check_data(&r);
        assert_true(r.key_len < sizeof(out[n].key));
        memcpy(out[n].key, r.key, r.key_len);
        out[n].key[r.key_len] = '\0';
        n++;
    }
    assert_int_equal(rc, -EAGAIN);
    wan_spool_cursor_destroy(c);
    return n;
}

static struct wan_spool_stats stats(struct fx *f)
{
    struct wan_spool_stats st;
    assert_int_equal(wan_spool_stats(f->sp, &st), 0);
    return st;
}

static struct wan_spool_peer_stats peer_stats(struct fx *f, size_t i)
{
    struct wan_spool_peer_stats ps;
    assert_int_equal(wan_spool_peer_stats(f->sp, i, &ps), 0);
    return ps;
}

/* ---- files ------------------------------------------------------------------------- */

static int name_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* Segment file names, sorted. */
static size_t segments(struct fx *f, char (*names)[64], size_t cap)
{
    DIR *d = opendir(f->dir);
    struct dirent *de;
    size_t n = 0;

    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (strncmp(de->d_name, "spool-", 6) == 0 && len > 4 &&
            strcmp(de->d_name + len - 4, ".log") == 0) {
            assert_true(n < cap && len < 64);
            memcpy(names[n++], de->d_name, len + 1);
        }
    }
    closedir(d);
    qsort(names, n, 64, name_cmp);
    return n;
}

static size_t nsegments(struct fx *f)
{
    static char names[1024][64];
    return segments(f, names, 1024);
}

static void path_of(struct fx *f, const char *name, char *buf, size_t n)
{
    snprintf(buf, n, "%s/%s", f->dir, name);
}

static uint8_t *slurp(const char *path, size_t *len)
{
    struct stat st;
    uint8_t *buf;
    int fd = open(path, O_RDONLY);

    assert_true(fd != -1);
    assert_int_equal(fstat(fd, &st), 0);
    buf = malloc((size_t)st.st_size + 1);
    assert_non_null(buf);
    assert_int_equal(read(fd, buf, (size_t)st.st_size), st.st_size);
    close(fd);
    *len = (size_t)st.st_size;
    return buf;
}

static void spit(const char *path, const uint8_t *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

    assert_true(fd != -1);
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
    close(fd);
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

static bool exists(struct fx *f, const char *name)
{
    char p[256];
    path_of(f, name, p, sizeof(p));
    return access(p, F_OK) == 0;
}

/* ---- tests ------------------------------------------------------------------------- */
#endif
