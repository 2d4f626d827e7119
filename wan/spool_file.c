/*
 * spool_file — the spool's plumbing: whole-buffer file I/O, the windowed segment reader,
 * record parsing, segment bookkeeping (sparse index, locating a seq, rolling), loss
 * counting and logging, and working out which records are still live.  Called by the
 * other spool files with the spool's mutex held.  It makes no policy decisions (what to
 * cut, compact or drop): see spool_recover.c and spool_compact.c.
 */
#include "wan/spool_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "wan/crc32c.h"

/* ---- small helpers --------------------------------------------------------------- */

void spool_seg_name(char *buf, size_t n, uint64_t name_seq, const char *suffix)
{
    snprintf(buf, n, "spool-%020" PRIu64 ".log%s", name_seq, suffix);
}

/* Parse "spool-<20 digits>.log" exactly.  Returns 0 or -EINVAL. */
int spool_seg_name_parse(const char *name, uint64_t *seq)
{
    uint64_t v = 0;

    if (strlen(name) != SEG_NAME_LEN || strncmp(name, "spool-", 6) != 0 ||
        strcmp(name + 26, ".log") != 0) {
        return -EINVAL;
    }
    for (int i = 6; i < 26; i++) {
        if (name[i] < '0' || name[i] > '9') {
            return -EINVAL;
        }
        if (v > (UINT64_MAX - 9) / 10) {
            return -EINVAL;
        }
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    *seq = v;
    return 0;
}

int spool_write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;

    while (len > 0) {
        ssize_t k = write(fd, p, len);
        if (k == -1) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        p += k;
        len -= (size_t)k;
    }
    return 0;
}

int spool_pwritev_all(int fd, struct iovec *iov, int iovcnt, uint64_t off)
{
    while (iovcnt > 0) {
        ssize_t k = pwritev(fd, iov, iovcnt, (off_t)off);
        if (k == -1) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (k == 0) {
            return -EIO;
        }
        off += (uint64_t)k;
        while (iovcnt > 0 && (size_t)k >= iov->iov_len) {
            k -= (ssize_t)iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + k;
            iov->iov_len -= (size_t)k;
        }
    }
    return 0;
}

int spool_pread_all(int fd, void *buf, size_t len, uint64_t off, size_t *got)
{
    size_t n = 0;

    *got = 0;
    while (n < len) {
        ssize_t k = pread(fd, (uint8_t *)buf + n, len - n, (off_t)(off + n));
        if (k == -1) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (k == 0) {
            break;
        }
        n += (size_t)k;
    }
    *got = n;
    return 0;
}

/* ---- windowed reader: sequential reads through a segment with few syscalls ------- */

void spool_rd_init(struct spool_rd *r)
{
    memset(r, 0, sizeof(*r));
    r->fd = -1;
}

void spool_rd_reset(struct spool_rd *r, int fd)
{
    r->fd = fd;
    r->base = 0;
    r->len = 0;
}

void spool_rd_free(struct spool_rd *r)
{
    free(r->buf);
    spool_rd_init(r);
}

/* File bytes [off, off + len) into buf: copied from the spool's tail when it holds them
 * all, else read (spool_pread_all). */
static int rd_fill(const struct spool_rd *r, uint8_t *buf, size_t len, uint64_t off, size_t *got)
{
    const struct spool_tail *t = r->tail;

    if (t != NULL && t->valid && off >= t->base && off - t->base <= t->len &&
        len <= t->len - (off - t->base)) {
        memcpy(buf, t->buf + (off - t->base), len);
        *got = len;
        return 0;
    }
    return spool_pread_all(r->fd, buf, len, off, got);
}

/* Point *p at file bytes [off, off + n), reading ahead but never at or past limit (the
 * segment's known good size, so bytes past it are never cached).  Returns 0, -ENOMEM,
 * -EIO (the file is shorter than limit says) or -errno of pread. */
int spool_rd_get(struct spool_rd *r, uint64_t off, size_t n, uint64_t limit, const uint8_t **p)
{
    size_t want, got;
    int rc;

    if (off > limit || n > limit - off) {
        return -EIO;
    }
    if (off >= r->base && off + n <= r->base + r->len) {
        *p = r->buf + (off - r->base);
        return 0;
    }
    if (r->len > 0 && off >= r->base && off <= r->base + r->len &&
        limit - r->base <= RD_CHUNK) {
        /* A tail follower: the wanted bytes start inside (or right after) what is buffered
         * and the file has grown since.  Read only the new bytes, after the old ones, so a
         * reader that steps back within the buffer (a held-back batch) finds them there. */
        uint64_t end = r->base + r->len;
        size_t more = (size_t)(limit - end);
        if ((size_t)(limit - r->base) > r->cap) {
            uint8_t *nb = realloc(r->buf, RD_CHUNK);
            if (nb == NULL) {
                return -ENOMEM;
            }
            r->buf = nb;
            r->cap = RD_CHUNK;
        }
        rc = rd_fill(r, r->buf + r->len, more, end, &got);
        if (rc != 0) {
            r->len = 0;
            return rc;
        }
        r->len += got;
        if (off + n > r->base + r->len) {
            return -EIO;
        }
        *p = r->buf + (off - r->base);
        return 0;
    }
    want = n > RD_CHUNK ? n : RD_CHUNK;
    if (want > limit - off) {
        want = (size_t)(limit - off);
    }
    if (want > r->cap) {
        uint8_t *nb = realloc(r->buf, want);
        if (nb == NULL) {
            return -ENOMEM;
        }
        r->buf = nb;
        r->cap = want;
    }
    r->len = 0;
    rc = rd_fill(r, r->buf, want, off, &got);
    if (rc != 0) {
        return rc;
    }
    r->base = off;
    r->len = got;
    if (got < n) {
        return -EIO;
    }
    *p = r->buf;
    return 0;
}

/* ---- records --------------------------------------------------------------------- */

const char *const spool_rec_status_str[REC_STATUS_MAX] = {
    [REC_OK] = "ok",
    [REC_SHORT_FRAME] = "torn frame",
    [REC_BAD_LENGTH] = "bad length",
    [REC_SHORT_BODY] = "torn record",
    [REC_BAD_CRC] = "crc mismatch",
    [REC_BAD_HEADER] = "bad record header",
    [REC_BAD_SEQ] = "sequence out of order",
};

/* Parse the record at off; end is where the segment's valid bytes stop.  Pointers in *out
 * borrow r's buffer.  Returns an enum rec_status (>= 0), or -errno for I/O errors. */
int spool_rec_parse(struct spool_rd *r, uint64_t off, uint64_t end, bool verify,
                    struct spool_rec *out)
{
    const uint8_t *p, *body;
    uint32_t len, crc;
    uint16_t key_len;
    int rc;

    if (end - off < FRAME_SIZE) {
        return REC_SHORT_FRAME;
    }
    rc = spool_rd_get(r, off, FRAME_SIZE, end, &p);
    if (rc != 0) {
        return rc;
    }
    len = get32(p);
    crc = get32(p + 4);
    if (len < REC_HDR_SIZE || len > REC_BODY_MAX) {
        return REC_BAD_LENGTH;
    }
    if (end - off - FRAME_SIZE < len) {
        return REC_SHORT_BODY;
    }
    rc = spool_rd_get(r, off, FRAME_SIZE + (size_t)len, end, &p);
    if (rc != 0) {
        return rc;
    }
    body = p + FRAME_SIZE;
    if (verify && wan_crc32c(0, body, len) != crc) {
        return REC_BAD_CRC;
    }
    key_len = get16(body + 16);
    if (get16(body + 18) != 0 || key_len > len - REC_HDR_SIZE) {
        return REC_BAD_HEADER;
    }
    out->seq = get64(body);
    out->time_ms = get64(body + 8);
    out->key = body + REC_HDR_SIZE;
    out->key_len = key_len;
    out->data = body + REC_HDR_SIZE + key_len;
    out->len = len - REC_HDR_SIZE - key_len;
    out->raw = p;
    out->size = FRAME_SIZE + (uint64_t)len;
    return REC_OK;
}

void spool_log(struct wan_spool *sp, enum wan_spool_log_level level, const char *fmt, ...)
{
    char msg[768];
    va_list ap;

    if (sp->log == NULL || (sp->fault_quiet && level == WAN_SPOOL_LOG_ERROR)) {
        return; /* spool_fault_tick probing a disk it knows is failing */
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sp->log(sp->log_arg, level, msg);
}

uint64_t spool_now(struct wan_spool *sp)
{
    struct timespec ts;

    if (sp->clock != NULL) {
        return sp->clock(sp->clock_arg);
    }
    if (clock_gettime(CLOCK_REALTIME, &ts) == -1) {
        return 0;
    }
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Count one record that will never be shipped, for each peer that had not acked it.
 * Returns true if some peer had not (the record was live). */
bool spool_count_loss(struct wan_spool *sp, uint64_t seq, enum loss_kind kind)
{
    bool live = false;

    if (seq < sp->floor) {
        return false; /* already dropped and counted */
    }
    for (size_t i = 0; i < sp->npeers; i++) {
        struct spool_peer *p = &sp->peers[i];
        if (p->acked >= seq) {
            continue;
        }
        live = true;
        if (kind == LOSS_DROPPED) {
            p->dropped++;
            p->drop_unlogged++;
        } else {
            p->compacted++;
        }
    }
    if (live) {
        if (kind == LOSS_DROPPED) {
            sp->st.dropped++;
        } else {
            sp->st.compacted++;
        }
    }
    return live;
}

/* ---- segments ---------------------------------------------------------------------- */

int spool_seg_note_record(struct spool_seg *s, uint64_t seq, uint64_t off, uint64_t size)
{
    if (s->records % MARK_EVERY == 0) {
        if (s->nmarks == s->cmarks) {
            size_t nc = s->cmarks ? s->cmarks * 2 : 16;
            struct spool_mark *nm = realloc(s->marks, nc * sizeof(*nm));
            if (nm == NULL) {
                return -ENOMEM;
            }
            s->marks = nm;
            s->cmarks = nc;
        }
        s->marks[s->nmarks++] = (struct spool_mark){seq, off, s->records};
    }
    if (s->records == 0) {
        s->first_seq = seq;
    }
    s->last_seq = seq;
    s->records++;
    s->size = off + size;
    return 0;
}

void spool_seg_free(struct spool_seg *s)
{
    free(s->marks);
    s->marks = NULL;
    s->nmarks = s->cmarks = 0;
}

bool spool_seg_is_active(const struct wan_spool *sp, const struct spool_seg *s)
{
    return s == &sp->segs[sp->nsegs - 1];
}

/* A read-only fd on s (the active fd for the active segment: close with spool_seg_fd_put). */
int spool_seg_fd_get(struct wan_spool *sp, const struct spool_seg *s, int *fd)
{
    char name[64];

    if (spool_seg_is_active(sp, s)) {
        *fd = sp->active_fd;
        return 0;
    }
    spool_seg_name(name, sizeof(name), s->name_seq, "");
    *fd = openat(sp->dir_fd, name, O_RDONLY | O_CLOEXEC);
    return *fd == -1 ? -errno : 0;
}

void spool_seg_fd_put(struct wan_spool *sp, int fd)
{
    if (fd != sp->active_fd && fd != -1) {
        close(fd);
    }
}

size_t spool_seg_find(const struct wan_spool *sp, uint64_t name_seq)
{
    size_t lo = 0, hi = sp->nsegs;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sp->segs[mid].name_seq < name_seq) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo < sp->nsegs && sp->segs[lo].name_seq == name_seq ? lo : SIZE_MAX;
}

int spool_segs_push(struct wan_spool *sp, const struct spool_seg *s)
{
    if (sp->nsegs == sp->csegs) {
        size_t nc = sp->csegs ? sp->csegs * 2 : 8;
        struct spool_seg *ns = realloc(sp->segs, nc * sizeof(*ns));
        if (ns == NULL) {
            return -ENOMEM;
        }
        sp->segs = ns;
        sp->csegs = nc;
    }
    sp->segs[sp->nsegs++] = *s;
    return 0;
}

void spool_segs_remove(struct wan_spool *sp, size_t i)
{
    spool_seg_free(&sp->segs[i]);
    memmove(&sp->segs[i], &sp->segs[i + 1], (sp->nsegs - i - 1) * sizeof(sp->segs[0]));
    sp->nsegs--;
}

#define LOCATE_CHUNK (64u << 10)

/* spool_seg_locate's walk over record heads held in memory: bytes [base, base + len) of
 * s, which end at its size. */
static int locate_walk(const struct spool_seg *s, uint64_t target, uint64_t off,
                       uint64_t ordinal, const uint8_t *buf, uint64_t base, size_t len,
                       struct spool_pos *pos)
{
    while (off < s->size) {
        const uint8_t *h = buf + (off - base);
        if (off + REC_PREFIX > base + len) {
            return -EIO;
        }
        if (get64(h + 8) >= target) {
            pos->found = true;
            pos->off = off;
            pos->ordinal = ordinal;
            pos->seq = get64(h + 8);
            pos->time_ms = get64(h + 16);
            return 0;
        }
        off += FRAME_SIZE + get32(h);
        ordinal++;
    }
    return 0;
}

int spool_seg_locate(struct wan_spool *sp, const struct spool_seg *s, uint64_t target,
                     struct spool_pos *pos)
{
    size_t lo = 0, hi = s->nmarks;
    uint64_t off, ordinal;
    int fd, rc = 0;

    memset(pos, 0, sizeof(*pos));
    pos->off = s->size;
    pos->ordinal = s->records;
    if (s->records == 0 || target > s->last_seq) {
        return 0;
    }
    /* last mark with seq <= target (mark 0 when target is before the first record) */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->marks[mid].seq <= target) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    off = s->marks[lo].off;
    ordinal = s->marks[lo].ordinal;
    /* The records past the mark are usually the last ones appended, still in the tail:
     * walk them there (the shipper seeks back after holding a batch, and acks trim). */
    const struct spool_tail *t = &sp->tail;
    if (t->valid && t->gen == sp->gen && t->seg == s->name_seq && off >= t->base &&
        t->base + t->len == s->size) {
        return locate_walk(s, target, off, ordinal, t->buf, t->base, t->len, pos);
    }
    rc = spool_seg_fd_get(sp, s, &fd);
    if (rc != 0) {
        return rc;
    }
    /* Walk the record heads from the mark, reading the file in chunks (one pread per head
     * made every ack's trim and every cursor seek cost dozens of syscalls). */
    uint8_t *chunk = malloc(LOCATE_CHUNK);
    uint64_t cbase = 0;
    size_t clen = 0;
    if (chunk == NULL) {
        spool_seg_fd_put(sp, fd);
        return -ENOMEM;
    }
    while (off < s->size) {
        const uint8_t *h;
        if (off < cbase || off + REC_PREFIX > cbase + clen) {
            size_t want = s->size - off < LOCATE_CHUNK ? (size_t)(s->size - off) : LOCATE_CHUNK;
            rc = spool_pread_all(fd, chunk, want, off, &clen);
            cbase = off;
            if (rc == 0 && clen < REC_PREFIX) {
                rc = -EIO;
            }
            if (rc != 0) {
                break;
            }
        }
        h = chunk + (off - cbase);
        if (get64(h + 8) >= target) {
            pos->found = true;
            pos->off = off;
            pos->ordinal = ordinal;
            pos->seq = get64(h + 8);
            pos->time_ms = get64(h + 16);
            break;
        }
        off += FRAME_SIZE + get32(h);
        ordinal++;
    }
    free(chunk);
    spool_seg_fd_put(sp, fd);
    return rc;
}

/* Delete segments nobody needs and find where live records start in segs[0].  Call after
 * anything that moves acks or the floor, or replaces files. */
int spool_recompute_live(struct wan_spool *sp)
{
    struct spool_pos pos;
    int rc;

    sp->live_start = max64(sp->floor, min_acked(sp) + 1);
    while (sp->nsegs > 1 && (sp->segs[0].records == 0 || sp->segs[0].last_seq < sp->live_start)) {
        char name[64];
        spool_seg_name(name, sizeof(name), sp->segs[0].name_seq, "");
        if (unlinkat(sp->dir_fd, name, 0) == -1 && errno != ENOENT) {
            spool_log(sp, WAN_SPOOL_LOG_ERROR, "spool: cannot delete %s: %s", name,
                      strerror(errno));
            break;
        }
        sp->total_bytes -= sp->segs[0].size;
        sp->total_records -= sp->segs[0].records;
        spool_segs_remove(sp, 0);
        sp->gen++;
    }
    rc = spool_seg_locate(sp, &sp->segs[0], sp->live_start, &pos);
    if (rc != 0) {
        return rc;
    }
    sp->dead_bytes = pos.off;
    sp->dead_records = pos.ordinal;
    return 0;
}
/* Start a new empty active segment named next_seq.  The old one is fsynced first. */
int spool_seg_roll(struct wan_spool *sp)
{
    struct spool_seg s;
    char name[64];
    int fd, rc;

    while (sp->syncing) {
        pthread_cond_wait(&sp->cond, &sp->mu);
    }
    if (sp->active_fd != -1 && durable(sp) && !sp->active_bad) {
        if (fdatasync(sp->active_fd) == -1) {
            rc = -errno;
            spool_note_not_durable(sp, sp->next_seq - 1, rc);
            return rc;
        }
        sp->synced_seq = sp->next_seq - 1;
        sp->st.fsyncs++;
    }
    memset(&s, 0, sizeof(s));
    s.name_seq = sp->next_seq;
    spool_seg_name(name, sizeof(name), s.name_seq, "");
    fd = openat(sp->dir_fd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd == -1) {
        rc = -errno;
        spool_log(sp, WAN_SPOOL_LOG_ERROR, "spool: cannot create %s: %s", name, strerror(-rc));
        return rc;
    }
    if (durable(sp) && fsync(sp->dir_fd) == -1) {
        rc = -errno;
        goto fail;
    }
    rc = spool_segs_push(sp, &s);
    if (rc != 0) {
        goto fail;
    }
    if (sp->active_fd != -1) {
        close(sp->active_fd);
    }
    sp->active_fd = fd;
    return 0;

fail:
    close(fd);
    unlinkat(sp->dir_fd, name, 0);
    return rc;
}
