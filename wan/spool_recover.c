/*
 * spool_recover — what wan_spool_open() does to the segments on disk: find them (deleting
 * leftovers of interrupted writes), scan every record, cut a segment at its first torn or
 * corrupt record, and count and report the intact records lost with the cut.  Runs once,
 * in the opening thread, before the spool is shared.  It never makes open fail for damage,
 * only for I/O errors.
 */
#include "wan/spool_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "wan/crc32c.h"

/* ---- recovery ---------------------------------------------------------------------- */

/* After damage at off, look for intact records in the rest of the segment, only to count
 * and report what the cut loses.  A candidate must have a sane header, a seq above the
 * last good one (by less than 2^32) and a good CRC, so garbage is not counted. */
static int count_intact(struct wan_spool *sp, struct spool_rd *r, uint64_t off, uint64_t end,
                        uint64_t last_seq, uint64_t *n, uint64_t *first, uint64_t *last)
{
    *n = *first = *last = 0;
    for (off++; off < end && end - off >= REC_PREFIX;) {
        const uint8_t *p;
        struct spool_rec rec;
        uint32_t len;
        uint64_t seq;
        int rc = spool_rd_get(r, off, REC_PREFIX, end, &p);
        if (rc != 0) {
            return rc;
        }
        len = get32(p);
        seq = get64(p + 8);
        if (len >= REC_HDR_SIZE && len <= end - off - FRAME_SIZE && len <= REC_BODY_MAX &&
            get16(p + 26) == 0 && get16(p + 24) <= len - REC_HDR_SIZE && seq > last_seq &&
            seq - last_seq <= (UINT64_C(1) << 32)) {
            rc = spool_rec_parse(r, off, end, true, &rec);
            if (rc < 0) {
                return rc;
            }
            if (rc == REC_OK) {
                if (spool_count_loss(sp, rec.seq, LOSS_DROPPED)) {
                    sp->st.cut_records++;
                }
                if (*n == 0) {
                    *first = rec.seq;
                }
                *last = last_seq = rec.seq;
                (*n)++;
                off += rec.size;
                continue;
            }
        }
        off++;
    }
    return 0;
}

/* Cut s at off (the first bad record), report it.  fd is open O_RDWR on it; prev_seq is
 * the last good seq before the damage (in this or an earlier segment). */
static int seg_cut(struct wan_spool *sp, struct spool_seg *s, int fd, struct spool_rd *r,
                   uint64_t off, uint64_t fsize, int why, bool is_last, uint64_t prev_seq)
{
    uint64_t n, first, last;
    char name[64];
    int rc;

    spool_seg_name(name, sizeof(name), s->name_seq, "");
    rc = count_intact(sp, r, off, fsize, prev_seq, &n, &first, &last);
    if (rc != 0) {
        return rc;
    }
    if (ftruncate(fd, (off_t)off) == -1 || (durable(sp) && fsync(fd) == -1)) {
        rc = -errno;
        spool_log(sp, WAN_SPOOL_LOG_ERROR, "spool: cannot cut %s at %" PRIu64 ": %s", name, off,
                  strerror(-rc));
        return rc;
    }
    sp->st.cut_events++;
    sp->st.cut_bytes += fsize - off;
    if (n > 0) {
        spool_log(sp, WAN_SPOOL_LOG_ERROR,
                  "spool: %s: %s at offset %" PRIu64 " after seq %" PRIu64 "; cut %" PRIu64
                  " bytes, losing %" PRIu64 " intact records (seq %" PRIu64 "..%" PRIu64 ")",
                  name, spool_rec_status_str[why], off, prev_seq, fsize - off, n, first, last);
    } else {
        spool_log(sp, is_last ? WAN_SPOOL_LOG_WARN : WAN_SPOOL_LOG_ERROR,
                  "spool: %s: %s at offset %" PRIu64 " after seq %" PRIu64 "; cut %" PRIu64
                  " bytes (%s)",
                  name, spool_rec_status_str[why], off, prev_seq, fsize - off,
                  is_last ? "torn tail, no complete record lost" : "middle segment");
    }
    return 0;
}

/* Scan one segment record by record; cut it at the first bad one.  On return *fd_out is
 * the open O_RDWR fd (the caller keeps the last segment's). */
static int seg_scan(struct wan_spool *sp, struct spool_seg *s, bool is_last, uint64_t *prev_seq,
                    struct spool_rd *r, int *fd_out)
{
    char name[64];
    struct stat stb;
    uint64_t off = 0;
    int fd, rc = 0;

    spool_seg_name(name, sizeof(name), s->name_seq, "");
    fd = openat(sp->dir_fd, name, O_RDWR | O_CLOEXEC);
    if (fd == -1) {
        return -errno;
    }
    if (fstat(fd, &stb) == -1) {
        rc = -errno;
        goto fail;
    }
    spool_rd_reset(r, fd);
    while (off < (uint64_t)stb.st_size) {
        struct spool_rec rec;
        rc = spool_rec_parse(r, off, (uint64_t)stb.st_size, true, &rec);
        if (rc < 0) {
            goto fail;
        }
        if (rc == REC_OK && (rec.seq < s->name_seq || rec.seq <= *prev_seq)) {
            rc = REC_BAD_SEQ;
        }
        if (rc != REC_OK) {
            rc = seg_cut(sp, s, fd, r, off, (uint64_t)stb.st_size, rc, is_last, *prev_seq);
            if (rc != 0) {
                goto fail;
            }
            break;
        }
        rc = spool_seg_note_record(s, rec.seq, off, rec.size);
        if (rc != 0) {
            goto fail;
        }
        *prev_seq = rec.seq;
        off += rec.size;
    }
    s->size = off;
    *fd_out = fd;
    return 0;

fail:
    close(fd);
    return rc;
}

static int seg_cmp(const void *a, const void *b)
{
    const struct spool_seg *x = a, *y = b;
    return x->name_seq < y->name_seq ? -1 : x->name_seq > y->name_seq;
}

/* Find the segments (and delete leftovers of interrupted writes). */
int spool_segs_list(struct wan_spool *sp)
{
    int fd = openat(sp->dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d;
    struct dirent *de;
    int rc = 0;

    if (fd == -1) {
        return -errno;
    }
    d = fdopendir(fd);
    if (d == NULL) {
        rc = -errno;
        close(fd);
        return rc;
    }
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        struct spool_seg s;
        if (strcmp(de->d_name, STATE_TMP) == 0 ||
            (len > strlen(COMPACT_SUFFIX) &&
             strcmp(de->d_name + len - strlen(COMPACT_SUFFIX), COMPACT_SUFFIX) == 0 &&
             strncmp(de->d_name, "spool-", 6) == 0)) {
            unlinkat(sp->dir_fd, de->d_name, 0);
            continue;
        }
        memset(&s, 0, sizeof(s));
        if (spool_seg_name_parse(de->d_name, &s.name_seq) != 0) {
            continue;
        }
        rc = spool_segs_push(sp, &s);
        if (rc != 0) {
            break;
        }
    }
    closedir(d);
    if (sp->nsegs > 1) {
        qsort(sp->segs, sp->nsegs, sizeof(sp->segs[0]), seg_cmp);
    }
    return rc;
}

/* Scan every segment, keep the last one's fd as active_fd, drop empty middle segments. */
int spool_segs_recover(struct wan_spool *sp)
{
    struct spool_rd r;
    uint64_t prev_seq = 0;
    int rc = 0;

    spool_rd_init(&r);
    for (size_t i = 0; i < sp->nsegs; i++) {
        struct spool_seg *s = &sp->segs[i];
        bool is_last = i + 1 == sp->nsegs;
        int fd = -1;
        rc = seg_scan(sp, s, is_last, &prev_seq, &r, &fd);
        if (rc != 0) {
            break;
        }
        if (is_last) {
            sp->active_fd = fd;
        } else {
            close(fd);
        }
        sp->total_bytes += s->size;
        sp->total_records += s->records;
    }
    spool_rd_free(&r);
    if (rc != 0) {
        return rc;
    }
    for (size_t i = 0; i + 1 < sp->nsegs;) {
        if (sp->segs[i].records == 0) {
            char name[64];
            spool_seg_name(name, sizeof(name), sp->segs[i].name_seq, "");
            unlinkat(sp->dir_fd, name, 0);
            sp->total_bytes -= sp->segs[i].size;
            spool_segs_remove(sp, i);
        } else {
            i++;
        }
    }
    return 0;
}
