/*
 * spool_compact — keeping the spool under max_bytes: compact non-active segments (drop
 * records a later record for the same key supersedes), then drop the oldest records by
 * raising the floor, counting every dropped record per peer and logging (at most one line
 * a second).  Called from wan_spool_append() with the spool's mutex held.
 */
#include "wan/spool_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "wan/crc32c.h"

/* One log line per second at most about records dropped for space (they come in runs). */
void spool_drop_log_flush(struct wan_spool *sp, bool force)
{
    char peers[512];
    size_t n = 0;
    uint64_t now = spool_now(sp);

    /* the first run is logged at once, then at most one line a second */
    if (sp->drop_unlogged == 0 ||
        (!force && sp->last_drop_log_ms != 0 && now >= sp->last_drop_log_ms &&
         now - sp->last_drop_log_ms < 1000)) {
        return;
    }
    peers[0] = '\0';
    for (size_t i = 0; i < sp->npeers && n < sizeof(peers); i++) {
        int k = snprintf(peers + n, sizeof(peers) - n, "%s%s %" PRIu64, n ? ", " : "",
                         sp->peers[i].name, sp->peers[i].drop_unlogged);
        sp->peers[i].drop_unlogged = 0;
        if (k > 0) {
            n += (size_t)k;
        }
    }
    spool_log(sp, WAN_SPOOL_LOG_ERROR,
              "spool over max_bytes %" PRIu64 ": dropped %" PRIu64 " oldest records (seq %" PRIu64
              "..%" PRIu64 ") never shipped; lost per peer: %s",
              sp->max_bytes, sp->drop_unlogged, sp->drop_first, sp->drop_last, peers);
    sp->drop_unlogged = 0;
    sp->last_drop_log_ms = now ? now : 1;
}

/* ---- compaction and dropping ------------------------------------------------------- */

/* key -> the last seq with that key in the segment being compacted, and whether a later
 * segment also has it.  Open addressing; keys copied into one arena. */
struct kt_ent {
    uint64_t hash;
    uint64_t key_off;
    uint64_t last_seq;
    uint32_t key_len;
    bool used;
    bool later;
};

struct keytab {
    struct kt_ent *ents;
    size_t cap, n;
    uint8_t *arena;
    size_t alen, acap;
};

static uint64_t key_hash(const uint8_t *k, size_t n)
{
    uint64_t h = 14695981039346656037u;

    for (size_t i = 0; i < n; i++) {
        h ^= k[i];
        h *= 1099511628211u;
    }
    return h;
}

static struct kt_ent *kt_find(struct keytab *t, const uint8_t *k, size_t n, uint64_t h)
{
    for (size_t i = h & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
        struct kt_ent *e = &t->ents[i];
        if (!e->used) {
            return e;
        }
        if (e->hash == h && e->key_len == n && memcmp(t->arena + e->key_off, k, n) == 0) {
            return e;
        }
    }
}

static int kt_grow(struct keytab *t)
{
    size_t nc = t->cap ? t->cap * 2 : 1024;
    struct kt_ent *old = t->ents;
    size_t oc = t->cap;

    t->ents = calloc(nc, sizeof(*t->ents));
    if (t->ents == NULL) {
        t->ents = old;
        return -ENOMEM;
    }
    t->cap = nc;
    for (size_t i = 0; i < oc; i++) {
        if (old[i].used) {
            *kt_find(t, t->arena + old[i].key_off, old[i].key_len, old[i].hash) = old[i];
        }
    }
    free(old);
    return 0;
}

static int kt_put(struct keytab *t, const uint8_t *k, size_t n, uint64_t seq)
{
    uint64_t h = key_hash(k, n);
    struct kt_ent *e;

    if ((t->n + 1) * 2 > t->cap && kt_grow(t) != 0) {
        return -ENOMEM;
    }
    e = kt_find(t, k, n, h);
    if (!e->used) {
        if (t->alen + n > t->acap) {
            size_t nc = max64(t->acap * 2, t->alen + n + 4096);
            uint8_t *na = realloc(t->arena, nc);
            if (na == NULL) {
                return -ENOMEM;
            }
            t->arena = na;
            t->acap = nc;
        }
        memcpy(t->arena + t->alen, k, n);
        *e = (struct kt_ent){.hash = h, .key_off = t->alen, .key_len = (uint32_t)n, .used = true};
        t->alen += n;
        t->n++;
    }
    e->last_seq = seq;
    return 0;
}

static struct kt_ent *kt_get(struct keytab *t, const uint8_t *k, size_t n)
{
    struct kt_ent *e;

    if (t->cap == 0) {
        return NULL;
    }
    e = kt_find(t, k, n, key_hash(k, n));
    return e->used ? e : NULL;
}

static void kt_free(struct keytab *t)
{
    free(t->ents);
    free(t->arena);
}

/* Collect live keyed records of s into t (pass 1) or, with mark_later, flag the keys of t
 * that s also has (pass 2). */
static int seg_keys(struct wan_spool *sp, const struct spool_seg *s, struct spool_rd *r,
                    struct keytab *t, bool mark_later)
{
    uint64_t off = 0;
    int fd, rc;

    rc = spool_seg_fd_get(sp, s, &fd);
    if (rc != 0) {
        return rc;
    }
    spool_rd_reset(r, fd);
    while (off < s->size) {
        struct spool_rec rec;
        rc = spool_rec_parse(r, off, s->size, false, &rec);
        if (rc != REC_OK) {
            rc = rc < 0 ? rc : -EIO;
            break;
        }
        off += rec.size;
        if (rec.key_len == 0) {
            continue;
        }
        if (!mark_later) {
            if (rec.seq >= sp->live_start) {
                rc = kt_put(t, rec.key, rec.key_len, rec.seq);
                if (rc != 0) {
                    break;
                }
            }
        } else {
            struct kt_ent *e = kt_get(t, rec.key, rec.key_len);
            if (e != NULL) {
                e->later = true;
            }
        }
    }
    spool_seg_fd_put(sp, fd);
    return rc;
}

/* Pass 3: write the records of s that stay into <name>.compact, describe them in ns. */
static int seg_rewrite(struct wan_spool *sp, const struct spool_seg *s, struct spool_rd *r,
                       struct keytab *t, struct spool_seg *ns, uint64_t *removed)
{
    char name[64], tmp[80];
    uint8_t *wbuf;
    size_t wlen = 0;
    uint64_t off = 0;
    int in, out, rc;

    spool_seg_name(name, sizeof(name), s->name_seq, "");
    spool_seg_name(tmp, sizeof(tmp), s->name_seq, COMPACT_SUFFIX);
    wbuf = malloc(WR_CHUNK);
    if (wbuf == NULL) {
        return -ENOMEM;
    }
    rc = spool_seg_fd_get(sp, s, &in);
    if (rc != 0) {
        goto fail_in;
    }
    out = openat(sp->dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out == -1) {
        rc = -errno;
        goto fail_out;
    }
    spool_rd_reset(r, in);
    while (off < s->size) {
        struct spool_rec rec;
        struct kt_ent *e;
        rc = spool_rec_parse(r, off, s->size, false, &rec);
        if (rc != REC_OK) {
            rc = rc < 0 ? rc : -EIO;
            goto fail_write;
        }
        off += rec.size;
        if (rec.seq < sp->live_start) {
            continue; /* acked by everyone or dropped: not needed */
        }
        e = rec.key_len ? kt_get(t, rec.key, rec.key_len) : NULL;
        if (e != NULL && (e->later || e->last_seq > rec.seq)) {
            spool_count_loss(sp, rec.seq, LOSS_COMPACTED);
            (*removed)++;
            continue;
        }
        rc = spool_seg_note_record(ns, rec.seq, ns->size, rec.size);
        if (rc != 0) {
            goto fail_write;
        }
        if (wlen + rec.size > WR_CHUNK) {
            rc = spool_write_all(out, wbuf, wlen);
            wlen = 0;
            if (rc != 0) {
                goto fail_write;
            }
        }
        if (rec.size > WR_CHUNK) {
            rc = spool_write_all(out, rec.raw, (size_t)rec.size);
            if (rc != 0) {
                goto fail_write;
            }
        } else {
            memcpy(wbuf + wlen, rec.raw, (size_t)rec.size);
            wlen += (size_t)rec.size;
        }
    }
    rc = spool_write_all(out, wbuf, wlen);
    if (rc == 0 && durable(sp) && fsync(out) == -1) {
        rc = -errno;
    }
    if (rc != 0) {
        goto fail_write;
    }
    close(out);
    spool_seg_fd_put(sp, in);
    free(wbuf);
    return 0;

fail_write:
    close(out);
    unlinkat(sp->dir_fd, tmp, 0);
fail_out:
    spool_seg_fd_put(sp, in);
fail_in:
    free(wbuf);
    return rc;
}

/* Compact segs[i] (not the active one): drop records a later record for the same key
 * supersedes, and records nobody needs.  Replaces the file atomically (or deletes it when
 * nothing is left). */
static int seg_compact(struct wan_spool *sp, size_t i)
{
    struct spool_seg *s = &sp->segs[i], ns;
    struct keytab t;
    struct spool_rd r;
    char name[64], tmp[80];
    uint64_t removed = 0, old_size = s->size, old_records = s->records;
    int rc;

    memset(&t, 0, sizeof(t));
    memset(&ns, 0, sizeof(ns));
    ns.name_seq = s->name_seq;
    spool_rd_init(&r);
    rc = seg_keys(sp, s, &r, &t, false);
    for (size_t j = i + 1; rc == 0 && j < sp->nsegs; j++) {
        rc = seg_keys(sp, &sp->segs[j], &r, &t, true);
    }
    if (rc == 0) {
        rc = seg_rewrite(sp, s, &r, &t, &ns, &removed);
    }
    spool_rd_free(&r);
    kt_free(&t);
    spool_seg_name(name, sizeof(name), s->name_seq, "");
    spool_seg_name(tmp, sizeof(tmp), s->name_seq, COMPACT_SUFFIX);
    if (rc == 0 && ns.records == 0) {
        /* nothing left: the segment goes (the temp file first, so a crash in between
         * leaves the full original, never a hole in a kept file) */
        unlinkat(sp->dir_fd, tmp, 0);
        if (unlinkat(sp->dir_fd, name, 0) == -1) {
            rc = -errno;
        }
    } else if (rc == 0 && renameat(sp->dir_fd, tmp, sp->dir_fd, name) == -1) {
        rc = -errno;
        unlinkat(sp->dir_fd, tmp, 0);
    }
    if (rc == 0 && durable(sp) && fsync(sp->dir_fd) == -1) {
        rc = -errno;
    }
    if (rc != 0) {
        spool_seg_free(&ns);
        spool_log(sp, WAN_SPOOL_LOG_ERROR, "spool: compacting %s failed: %s", name, strerror(-rc));
        return rc;
    }
    ns.compacted = true;
    sp->total_bytes = sp->total_bytes - old_size + ns.size;
    sp->total_records = sp->total_records - old_records + ns.records;
    if (i == 0) {
        sp->dead_bytes = sp->dead_records = 0; /* compaction left out the dead prefix */
    }
    if (ns.records == 0) {
        spool_seg_free(&ns);
        spool_segs_remove(sp, i);
    } else {
        spool_seg_free(s);
        *s = ns;
    }
    sp->gen++;
    sp->st.compactions++;
    spool_log(sp, WAN_SPOOL_LOG_WARN,
              "spool over max_bytes %" PRIu64 ": compacted %s: %" PRIu64
              " superseded records removed, %" PRIu64 " -> %" PRIu64 " bytes",
              sp->max_bytes, name, removed, old_size, ns.size);
    return spool_recompute_live(sp);
}

/* Drop live records from the front of segs[0] (compacted, not active) until need more
 * bytes fit under max_bytes or the segment is used up. */
static int drop_front(struct wan_spool *sp, uint64_t need)
{
    struct spool_seg *s = &sp->segs[0];
    uint64_t off = sp->dead_bytes, freed = 0, last = 0;
    int fd, rc;

    rc = spool_seg_fd_get(sp, s, &fd);
    if (rc != 0) {
        return rc;
    }
    while (off < s->size && live_bytes(sp) - freed + need > sp->max_bytes) {
        uint8_t h[REC_PREFIX];
        size_t got;
        rc = spool_pread_all(fd, h, sizeof(h), off, &got);
        if (rc == 0 && got != sizeof(h)) {
            rc = -EIO;
        }
        if (rc != 0) {
            break;
        }
        last = get64(h + 8);
        if (spool_count_loss(sp, last, LOSS_DROPPED)) {
            if (sp->drop_unlogged == 0) {
                sp->drop_first = last;
            }
            sp->drop_unlogged++;
            sp->drop_last = last;
        }
        freed += FRAME_SIZE + get32(h);
        off += FRAME_SIZE + get32(h);
    }
    spool_seg_fd_put(sp, fd);
    if (last != 0) {
        sp->floor = max64(sp->floor, last + 1);
        sp->state_dirty = true;
    }
    spool_drop_log_flush(sp, false);
    if (rc != 0) {
        return rc;
    }
    return spool_recompute_live(sp);
}

/* Make need bytes fit under max_bytes: every segment but the active one is compacted
 * once (oldest first) before any record is dropped; then records go from the front.  A
 * segment is not compacted twice, so a record superseded only after its segment was
 * compacted is counted as dropped when it goes (over-reported, never under-reported). */
int spool_make_room(struct wan_spool *sp, uint64_t need)
{
    int rc = 0;

    while (rc == 0 && live_bytes(sp) + need > sp->max_bytes) {
        size_t i = 0;
        while (i + 1 < sp->nsegs && sp->segs[i].compacted) {
            i++;
        }
        if (sp->nsegs == 1) {
            if (sp->segs[0].size == 0) {
                return -EFBIG;
            }
            rc = spool_seg_roll(sp);
        } else if (i + 1 < sp->nsegs) {
            rc = seg_compact(sp, i);
        } else {
            uint64_t before = live_bytes(sp);
            size_t nsegs = sp->nsegs;
            rc = drop_front(sp, need);
            if (rc == 0 && live_bytes(sp) == before && sp->nsegs == nsegs) {
                return -EIO; /* no progress (a segment that cannot be deleted) */
            }
        }
    }
    return rc;
}
