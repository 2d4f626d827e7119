/*
 * spool — the durable outbound replication log of one gateway (see spool.h for the API
 * and docs/REPLICATION.md "Spool" for the policy).  Blocking file I/O under one mutex,
 * called from every worker thread (append, sync) and the WAN thread (cursors, acks,
 * tick); the group-commit fsync runs outside the mutex.  It does not ship records, parse
 * them, or retry anything: callers do.
 *
 * Directory layout
 *
 *     <dir>/lock                         flock()ed while open: one user per directory
 *     <dir>/acks                         state, rewritten atomically (acks.tmp + rename)
 *     <dir>/spool-<20-digit seq>.log     segments; the number is <= the first record's seq
 *     <dir>/spool-<seq>.log.compact      a compaction in progress (deleted at open)
 *
 * Segment file: no file header, just records back to back.  Every integer little-endian.
 *
 *     offset  size  field
 *     0       4     length L of what follows the 8-byte frame (20 + key_len + data_len)
 *     4       4     CRC32C of those L bytes
 *     8       8     seq         strictly increasing through the segment and across segments
 *     16      8     time        append time, unix milliseconds
 *     24      2     key_len     0 = never compacted away
 *     26      2     flags       0 (anything else is corruption)
 *     28      K     key
 *     28+K    L-20-K data       opaque to the spool (a protobuf Mutation)
 *
 * A segment is written only at its end and rolled when the next record would take it past
 * segment_bytes; only the last (active) segment is ever appended to.  Compaction rewrites
 * a non-active segment into <name>.compact and renames it over the original, so a crash
 * leaves either the old or the new file.
 *
 * State file "acks" (text, so an operator can read it):
 *
 *     geogate-spool-state 1
 *     id <16 hex digits>        random per spool directory; receivers key on it
 *     reserved <seq>            no seq above this has been handed out
 *     floor <seq>               records below it were dropped (overflow)
 *     ack <peer> <seq>          one line per peer
 *     crc <8 hex digits>        CRC32C of every byte before this line
 *
 * Sequence numbers are handed out from a durable reservation (SEQ_RESERVE at a time):
 * after a crash the spool resumes past the reservation, so a sequence number that a peer
 * may have seen and acked before the crash (the record shipped but never reached the
 * disk) is never reused for a different record.  A clean close gives the unused part back.
 *
 * Recovery scans every segment in full, checking length, CRC, header and seq order.  At
 * the first bad record the segment is cut (truncated) there; the rest of it is searched for
 * intact records only to count and report what was lost with the cut.
 *
 * "Live" records are those some peer still needs: seq >= max(floor, min over peers of the
 * acked seq + 1).  Segments with no live record are deleted (never the active one).  The
 * byte count that max_bytes bounds is the live bytes; disk use may exceed it by the dead
 * prefix of the oldest segment.  Over max_bytes, every segment but the active one is
 * compacted once, oldest first (records superseded by a later one with the same key
 * removed); only then are records dropped from the front, by raising the floor.  When the
 * peer list changes, what every peer of the previous run had acked stays gone (the floor
 * is raised to it) and a new peer starts at ack 0: it is sent every live record.
 *
 * Files: spool.c (this: open/close, append, sync, acks, numbers, cursors), spool_file.c
 * (I/O, reader, record parsing, segment bookkeeping), spool_state.c (the acks file),
 * spool_recover.c (the scan at open), spool_compact.c (max_bytes); spool_int.h joins them.
 */

#include "wan/spool_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "wan/crc32c.h"

static const char *const fsync_names[WAN_SPOOL_FSYNC_MAX] = {
    [WAN_SPOOL_FSYNC_ALWAYS] = "always",
    [WAN_SPOOL_FSYNC_EVERYSEC] = "everysec",
    [WAN_SPOOL_FSYNC_NO] = "no",
};

int wan_spool_fsync_from_name(const char *name, enum wan_spool_fsync *out)
{
    for (int i = 0; i < WAN_SPOOL_FSYNC_MAX; i++) {
        if (name != NULL && strcmp(name, fsync_names[i]) == 0) {
            *out = (enum wan_spool_fsync)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *wan_spool_fsync_name(enum wan_spool_fsync mode)
{
    return (unsigned)mode < WAN_SPOOL_FSYNC_MAX ? fsync_names[mode] : "?";
}

/* ---- open / close ------------------------------------------------------------------ */

static uint64_t new_spool_id(void)
{
    uint64_t id = 0;

    if (getrandom(&id, sizeof(id), 0) != (ssize_t)sizeof(id)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        id =
            ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^ ((uint64_t)getpid() << 32);
    }
    return id != 0 ? id : 1;
}

static int opt_check(const struct wan_spool_options *opt)
{
    if (opt == NULL || opt->dir == NULL || opt->dir[0] == '\0' ||
        (unsigned)opt->fsync >= WAN_SPOOL_FSYNC_MAX || (opt->npeers > 0 && opt->peers == NULL)) {
        return -EINVAL;
    }
    for (size_t i = 0; i < opt->npeers; i++) {
        if (!spool_peer_name_ok(opt->peers[i])) {
            return -EINVAL;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(opt->peers[i], opt->peers[j]) == 0) {
                return -EINVAL;
            }
        }
    }
    return 0;
}

/* Match the configured peers with the acks on disk; log the changes. */
static void peers_from_state(struct wan_spool *sp, const struct spool_state *st)
{
    for (size_t i = 0; i < sp->npeers; i++) {
        bool known = false;
        for (size_t j = 0; j < st->npeers; j++) {
            if (strcmp(sp->peers[i].name, st->peers[j].name) == 0) {
                sp->peers[i].acked = st->peers[j].acked;
                known = true;
            }
        }
        if (!known) {
            sp->state_dirty = true;
            spool_log(sp, WAN_SPOOL_LOG_INFO,
                      "spool: new peer %s: it will be sent every retained record",
                      sp->peers[i].name);
        }
    }
    for (size_t j = 0; j < st->npeers; j++) {
        bool kept = false;
        for (size_t i = 0; i < sp->npeers; i++) {
            kept = kept || strcmp(sp->peers[i].name, st->peers[j].name) == 0;
        }
        if (!kept) {
            sp->state_dirty = true;
            spool_log(sp, WAN_SPOOL_LOG_INFO,
                      "spool: peer %s is no longer configured: forgetting its ack %" PRIu64,
                      st->peers[j].name, st->peers[j].acked);
        }
    }
}

static void spool_free(struct wan_spool *sp)
{
    for (size_t i = 0; i < sp->nsegs; i++) {
        spool_seg_free(&sp->segs[i]);
    }
    free(sp->segs);
    for (size_t i = 0; i < sp->npeers; i++) {
        free(sp->peers[i].name);
    }
    free(sp->peers);
    free(sp->run);
    free(sp->tail.buf);
    free(sp->dir_path);
    if (sp->active_fd != -1) {
        close(sp->active_fd);
    }
    if (sp->lock_fd != -1) {
        close(sp->lock_fd); /* releases the flock */
    }
    if (sp->dir_fd != -1) {
        close(sp->dir_fd);
    }
    pthread_cond_destroy(&sp->cond);
    pthread_mutex_destroy(&sp->mu);
    free(sp);
}

int wan_spool_open(const struct wan_spool_options *opt, struct wan_spool **out)
{
    struct spool_state st;
    struct wan_spool *sp;
    uint64_t next = 1;
    bool state_ok;
    int rc;

    rc = opt_check(opt);
    if (rc != 0) {
        return rc;
    }
    sp = calloc(1, sizeof(*sp));
    if (sp == NULL) {
        return -ENOMEM;
    }
    pthread_mutex_init(&sp->mu, NULL);
    pthread_cond_init(&sp->cond, NULL);
    sp->dir_fd = sp->lock_fd = sp->active_fd = -1;
    sp->max_bytes = opt->max_bytes;
    sp->segment_bytes = opt->segment_bytes ? opt->segment_bytes : WAN_SPOOL_SEGMENT_BYTES_DEFAULT;
    if (sp->max_bytes != 0 && sp->segment_bytes > sp->max_bytes / 4) {
        sp->segment_bytes = max64(sp->max_bytes / 4, SEGMENT_MIN);
    }
    sp->fsync = opt->fsync;
    sp->log = opt->log;
    sp->log_arg = opt->log_arg;
    sp->clock = opt->clock;
    sp->clock_arg = opt->clock_arg;
    memset(&st, 0, sizeof(st));

    sp->peers = calloc(opt->npeers ? opt->npeers : 1, sizeof(*sp->peers));
    if (sp->peers == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < opt->npeers; i++) {
        sp->peers[i].name = strdup(opt->peers[i]);
        if (sp->peers[i].name == NULL) {
            rc = -ENOMEM;
            goto fail;
        }
        sp->npeers++;
    }

    if (mkdir(opt->dir, 0700) == -1 && errno != EEXIST) {
        rc = -errno;
        goto fail;
    }
    if ((sp->dir_path = strdup(opt->dir)) == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    sp->dir_fd = open(opt->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sp->dir_fd == -1) {
        rc = -errno;
        goto fail;
    }
    sp->lock_fd = openat(sp->dir_fd, LOCK_FILE, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (sp->lock_fd == -1) {
        rc = -errno;
        goto fail;
    }
    if (flock(sp->lock_fd, LOCK_EX | LOCK_NB) == -1) {
        rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
        goto fail;
    }

    rc = spool_state_read(sp, &st);
    if (rc == -EBADMSG) {
        spool_log(sp, WAN_SPOOL_LOG_WARN,
                  "spool: %s/%s is damaged: new spool id, every peer will be sent every retained "
                  "record",
                  opt->dir, STATE_FILE);
    } else if (rc != 0 && rc != -ENOENT) {
        goto fail;
    }
    state_ok = rc == 0;
    if (!state_ok) {
        free(st.peers);
        memset(&st, 0, sizeof(st));
        st.id = new_spool_id();
        sp->state_dirty = true;
    }
    sp->id = st.id;
    sp->floor = st.floor;
    peers_from_state(sp, &st);
    if (state_ok && st.npeers > 0) {
        /* what every peer of the previous run had acked stays gone, whoever joins now
         * (set before recovery so that a cut does not count those records as lost) */
        uint64_t old_min = UINT64_MAX;
        for (size_t j = 0; j < st.npeers; j++) {
            old_min = st.peers[j].acked < old_min ? st.peers[j].acked : old_min;
        }
        sp->floor = max64(sp->floor, old_min + 1);
    }

    rc = spool_segs_list(sp);
    if (rc == 0) {
        rc = spool_segs_recover(sp);
    }
    if (rc != 0) {
        goto fail;
    }

    /* Never reuse a sequence number that may have been handed out before. */
    next = max64(next, st.reserved + 1);
    next = max64(next, sp->floor);
    for (size_t i = 0; i < sp->nsegs; i++) {
        next = max64(next, sp->segs[i].records ? sp->segs[i].last_seq + 1 : sp->segs[i].name_seq);
    }
    for (size_t i = 0; i < sp->npeers; i++) {
        next = max64(next, sp->peers[i].acked + 1);
    }
    sp->next_seq = next;
    if (state_ok && st.npeers == 0) {
        sp->floor = next; /* the previous run had no peers: nothing it wrote is owed */
    }
    sp->reserved = max64(st.reserved, next - 1);
    sp->synced_seq = next - 1;
    if (sp->nsegs == 0) {
        rc = spool_seg_roll(sp);
        if (rc != 0) {
            goto fail;
        }
    }
    sp->last_sync_ms = spool_now(sp);
    rc = spool_state_write(sp);
    if (rc == 0) {
        rc = spool_recompute_live(sp);
    }
    if (rc != 0) {
        goto fail;
    }
    free(st.peers);
    sp->st.id = sp->id;
    sp->st.instance = new_spool_id();
    *out = sp;
    return 0;

fail:
    free(st.peers);
    spool_free(sp);
    return rc;
}

int wan_spool_close(struct wan_spool *sp)
{
    int rc = 0;

    if (sp == NULL) {
        return 0;
    }
    pthread_mutex_lock(&sp->mu);
    while (sp->syncing) {
        pthread_cond_wait(&sp->cond, &sp->mu);
    }
    spool_drop_log_flush(sp, true);
    rc = sp->failed;
    if (rc == 0 && durable(sp) && sp->synced_seq < sp->next_seq - 1) {
        if (fdatasync(sp->active_fd) == -1) {
            rc = -errno;
        }
    }
    if (rc == 0) {
        /* clean shutdown: every handed-out seq is on disk, give the reservation back */
        sp->reserved = sp->next_seq - 1;
    }
    if (sp->failed == 0) {
        int wrc = spool_state_write(sp);
        rc = rc != 0 ? rc : wrc;
    }
    pthread_mutex_unlock(&sp->mu);
    spool_free(sp);
    return rc;
}

/* ---- append / sync / ack ----------------------------------------------------------- */

/* Records framed under the lock and not written yet: one pwritev writes them all. */
#define APPEND_RUN 256 /* records per write (3 iovecs each, under IOV_MAX) */

struct append_run {
    struct iovec iov[APPEND_RUN * 3];
    uint8_t hdr[APPEND_RUN][REC_PREFIX];
    struct {
        uint64_t seq, off, size;
    } rec[APPEND_RUN];
    size_t n;
    uint64_t bytes;
};

/* Write the run at the end of the active segment, then index its records.  On a failed
 * write the records are taken back (file truncated, their seqs handed out again) and the
 * error returned; *committed counts the records that made it. */
/* The first n records of run are in the active segment s now: keep their bytes in the
 * tail too.  A tail that does not end where they start (another segment, files replaced,
 * a write taken back) or has no room starts again at them. */
static void tail_note(struct wan_spool *sp, const struct spool_seg *s,
                      const struct append_run *run, size_t n)
{
    struct spool_tail *t = &sp->tail;
    uint64_t off0, bytes = 0;
    size_t i;

    if (n == 0) {
        return;
    }
    off0 = run->rec[0].off;
    for (i = 0; i < n; i++) {
        bytes += run->rec[i].size;
    }
    if (!t->valid || t->gen != sp->gen || t->seg != s->name_seq || t->base + t->len != off0 ||
        bytes > SPOOL_TAIL_MAX - t->len) {
        t->valid = false;
        if (bytes > SPOOL_TAIL_MAX) {
            return;
        }
        if (t->buf == NULL && (t->buf = malloc(SPOOL_TAIL_MAX)) == NULL) {
            return; /* cursors read the file */
        }
        t->base = off0;
        t->len = 0;
        t->seg = s->name_seq;
        t->gen = sp->gen;
        t->valid = true;
    }
    for (i = 0; i < n * 3; i++) {
        if (run->iov[i].iov_len == 0) {
            continue; /* an empty key or record: its base may be NULL, which memcpy forbids */
        }
        memcpy(t->buf + t->len, run->iov[i].iov_base, run->iov[i].iov_len);
        t->len += run->iov[i].iov_len;
    }
}

static int append_run_write(struct wan_spool *sp, struct append_run *run, size_t *committed)
{
    struct spool_seg *s = &sp->segs[sp->nsegs - 1];
    uint64_t off0;
    int rc = 0;

    *committed = 0;
    if (run->n == 0) {
        return 0;
    }
    off0 = run->rec[0].off;
    rc = spool_pwritev_all(sp->active_fd, run->iov, (int)(run->n * 3), off0);
    if (rc != 0) {
        /* take the partial write back, or a later append would land behind garbage */
        if (ftruncate(sp->active_fd, (off_t)off0) == -1) {
            sp->active_bad = true; /* garbage may follow: the probe starts a fresh file */
        }
        spool_fault(sp, rc); /* counted and logged by the caller and spool_fault_tick */
        sp->next_seq = run->rec[0].seq;
        run->n = 0;
        run->bytes = 0;
        return rc;
    }
    for (size_t i = 0; i < run->n; i++) {
        rc = spool_seg_note_record(s, run->rec[i].seq, run->rec[i].off, run->rec[i].size);
        if (rc != 0) {
            /* the index is incomplete but the data is fine: undo to keep them in step */
            if (ftruncate(sp->active_fd, (off_t)run->rec[i].off) == -1) {
                sp->active_bad = true;
                spool_fault(sp, -EIO);
            }
            sp->next_seq = run->rec[i].seq;
            break;
        }
        sp->total_bytes += run->rec[i].size;
        sp->total_records++;
        sp->st.appended++;
        (*committed)++;
    }
    tail_note(sp, s, run, *committed);
    run->n = 0;
    run->bytes = 0;
    if (rc == 0 && sp->npeers == 0) {
        rc = spool_recompute_live(sp);
    }
    return rc;
}

int wan_spool_append_many(struct wan_spool *sp, const struct wan_spool_item *items, size_t n,
                          uint64_t *seqs, size_t *appended)
{
    struct append_run *run;
    int first_rc = 0, rc = 0;
    size_t done = 0, committed;

    *appended = 0;
    pthread_mutex_lock(&sp->mu);
    if (sp->failed != 0) {
        /* a disk fault in force: refused at once, and told to the peers as lost */
        rc = sp->failed;
        spool_note_unspooled(sp, n, rc);
        pthread_mutex_unlock(&sp->mu);
        return rc;
    }
    if (sp->run == NULL && (sp->run = malloc(sizeof(*sp->run))) == NULL) {
        pthread_mutex_unlock(&sp->mu);
        return -ENOMEM;
    }
    run = sp->run;
    run->n = 0;
    run->bytes = 0;
    for (size_t i = 0; i < n; i++) {
        const struct wan_spool_item *it = &items[i];
        struct spool_seg *s;
        uint64_t size = REC_PREFIX + (uint64_t)it->key_len + it->len;
        uint8_t *hdr;
        uint32_t crc;

        if (seqs != NULL) {
            seqs[i] = 0;
        }
        if (it->key_len > WAN_SPOOL_KEY_MAX || (it->key == NULL && it->key_len) ||
            (it->data == NULL && it->len)) {
            first_rc = first_rc ? first_rc : -EINVAL;
            continue;
        }
        if (it->len > WAN_SPOOL_DATA_MAX || (sp->max_bytes != 0 && size > sp->max_bytes)) {
            first_rc = first_rc ? first_rc : -EFBIG;
            continue;
        }
        rc = sp->failed;
        s = &sp->segs[sp->nsegs - 1];
        /* Room, a segment roll and the seq reservation work on indexed records only:
         * write what is pending first when one of them is due. */
        if (rc == 0 && run->n > 0 &&
            (run->n == APPEND_RUN ||
             (sp->max_bytes != 0 && sp->total_bytes + run->bytes + size > sp->max_bytes) ||
             s->size + run->bytes + size > sp->segment_bytes || sp->next_seq > sp->reserved)) {
            rc = append_run_write(sp, run, &committed);
            done += committed;
        }
        if (rc == 0 && sp->max_bytes != 0) {
            rc = spool_make_room(sp, size);
        }
        s = &sp->segs[sp->nsegs - 1];
        if (rc == 0 && s->size > 0 && s->size + size > sp->segment_bytes) {
            rc = spool_seg_roll(sp);
            s = &sp->segs[sp->nsegs - 1];
        }
        if (rc == 0 && sp->next_seq > sp->reserved) {
            uint64_t old = sp->reserved;
            sp->reserved = sp->next_seq + SEQ_RESERVE - 1;
            rc = spool_state_write(sp);
            if (rc != 0) {
                sp->reserved = old;
            }
        }
        if (rc != 0) {
            break;
        }
        hdr = run->hdr[run->n];
        put32(hdr, (uint32_t)(size - FRAME_SIZE));
        put64(hdr + 8, sp->next_seq);
        put64(hdr + 16, spool_now(sp));
        put16(hdr + 24, (uint16_t)it->key_len);
        put16(hdr + 26, 0);
        crc = wan_crc32c(0, hdr + FRAME_SIZE, REC_HDR_SIZE);
        crc = wan_crc32c(crc, it->key, it->key_len);
        crc = wan_crc32c(crc, it->data, it->len);
        put32(hdr + 4, crc);
        run->iov[run->n * 3] = (struct iovec){hdr, REC_PREFIX};
        run->iov[run->n * 3 + 1] = (struct iovec){(void *)it->key, it->key_len};
        run->iov[run->n * 3 + 2] = (struct iovec){(void *)it->data, it->len};
        run->rec[run->n].seq = sp->next_seq;
        run->rec[run->n].off = s->size + run->bytes;
        run->rec[run->n].size = size;
        run->n++;
        run->bytes += size;
        if (seqs != NULL) {
            seqs[i] = sp->next_seq;
        }
        sp->next_seq++;
    }
    if (rc == 0) {
        rc = append_run_write(sp, run, &committed);
        done += committed;
    }
    if (rc != 0) {
        spool_note_unspooled(sp, n - done, rc); /* enters the fault state */
    }
    if (rc != 0 && seqs != NULL) {
        /* what was not written has no seq */
        for (size_t i = 0; i < n; i++) {
            if (seqs[i] >= sp->next_seq) {
                seqs[i] = 0;
            }
        }
    }
    pthread_mutex_unlock(&sp->mu);
    *appended = done;
    return rc != 0 ? rc : first_rc;
}

int wan_spool_append(struct wan_spool *sp, const void *key, size_t key_len, const void *data,
                     size_t len, uint64_t *seq)
{
    struct wan_spool_item it = {key, key_len, data, len};
    uint64_t s = 0;
    size_t done;
    int rc = wan_spool_append_many(sp, &it, 1, &s, &done);

    if (rc == 0 && seq != NULL) {
        *seq = s;
    }
    return rc;
}

int wan_spool_sync(struct wan_spool *sp)
{
    uint64_t target;
    int fd, rc;

    if (!durable(sp)) {
        return 0;
    }
    pthread_mutex_lock(&sp->mu);
    target = sp->next_seq - 1;
    while (sp->syncing && sp->synced_seq < target) {
        pthread_cond_wait(&sp->cond, &sp->mu);
    }
    rc = sp->failed;
    if (rc != 0 || sp->synced_seq >= target) {
        pthread_mutex_unlock(&sp->mu);
        return rc;
    }
    sp->syncing = true;
    target = sp->next_seq - 1; /* cover everything written so far */
    fd = sp->active_fd;
    pthread_mutex_unlock(&sp->mu);

    rc = fdatasync(fd) == -1 ? -errno : 0;

    pthread_mutex_lock(&sp->mu);
    sp->syncing = false;
    if (rc != 0) {
        spool_note_not_durable(sp, target, rc);
    } else {
        sp->synced_seq = max64(sp->synced_seq, target);
        sp->st.fsyncs++;
        sp->last_sync_ms = spool_now(sp);
    }
    pthread_cond_broadcast(&sp->cond);
    pthread_mutex_unlock(&sp->mu);
    return rc;
}

static bool second_passed(uint64_t now, uint64_t then)
{
    return now < then || now - then >= 1000;
}

int wan_spool_tick(struct wan_spool *sp)
{
    bool need_sync;
    uint64_t now;
    int rc;

    pthread_mutex_lock(&sp->mu);
    now = spool_now(sp);
    spool_fault_tick(sp, now);
    rc = sp->failed;
    need_sync = rc == 0 && sp->fsync == WAN_SPOOL_FSYNC_EVERYSEC &&
                sp->synced_seq < sp->next_seq - 1 && second_passed(now, sp->last_sync_ms);
    spool_drop_log_flush(sp, false);
    if (rc == 0 && sp->state_dirty && second_passed(now, sp->last_state_ms)) {
        rc = spool_state_write(sp);
        if (rc != 0) {
            spool_fault(sp, rc);
        }
    }
    pthread_mutex_unlock(&sp->mu);
    if (rc == 0 && need_sync) {
        (void)wan_spool_sync(sp);
    }
    return 0; /* a disk fault is counted, logged and retried by spool_fault_tick */
}

static struct spool_peer *peer_find(struct wan_spool *sp, const char *name)
{
    for (size_t i = 0; name != NULL && i < sp->npeers; i++) {
        if (strcmp(sp->peers[i].name, name) == 0) {
            return &sp->peers[i];
        }
    }
    return NULL;
}

int wan_spool_ack(struct wan_spool *sp, const char *peer, uint64_t seq)
{
    struct spool_peer *p;
    int rc = 0;

    pthread_mutex_lock(&sp->mu);
    p = peer_find(sp, peer);
    if (p == NULL) {
        rc = -ENOENT;
    } else if (seq >= sp->next_seq) {
        rc = -ERANGE;
    } else if (seq > p->acked) {
        p->acked = seq;
        sp->state_dirty = true;
        if (sp->fsync == WAN_SPOOL_FSYNC_ALWAYS) {
            rc = spool_state_write(sp);
        }
        int lrc = spool_recompute_live(sp);
        rc = rc != 0 ? rc : lrc;
    }
    pthread_mutex_unlock(&sp->mu);
    return rc;
}

int wan_spool_peer_acked(struct wan_spool *sp, const char *peer, uint64_t *seq)
{
    struct spool_peer *p;
    int rc = 0;

    pthread_mutex_lock(&sp->mu);
    p = peer_find(sp, peer);
    if (p == NULL) {
        rc = -ENOENT;
    } else {
        *seq = p->acked;
    }
    pthread_mutex_unlock(&sp->mu);
    return rc;
}

/* ---- numbers ----------------------------------------------------------------------- */

/* Bytes, records and the first record at or after seq, counting to the end of the spool. */
static int span_from(struct wan_spool *sp, uint64_t seq, uint64_t *bytes, uint64_t *records,
                     struct spool_pos *first)
{
    size_t i = 0;
    int rc;

    *bytes = *records = 0;
    memset(first, 0, sizeof(*first));
    while (i < sp->nsegs && (sp->segs[i].records == 0 || sp->segs[i].last_seq < seq)) {
        i++;
    }
    if (i == sp->nsegs) {
        return 0;
    }
    rc = spool_seg_locate(sp, &sp->segs[i], seq, first);
    if (rc != 0) {
        return rc;
    }
    *bytes = sp->segs[i].size - first->off;
    *records = sp->segs[i].records - first->ordinal;
    for (i++; i < sp->nsegs; i++) {
        *bytes += sp->segs[i].size;
        *records += sp->segs[i].records;
    }
    return 0;
}

int wan_spool_stats(struct wan_spool *sp, struct wan_spool_stats *out)
{
    uint64_t b, r;
    struct spool_pos first;

    pthread_mutex_lock(&sp->mu);
    *out = sp->st;
    out->id = sp->id;
    out->last_seq = sp->next_seq - 1;
    out->records = sp->total_records - sp->dead_records;
    out->bytes = live_bytes(sp);
    out->disk_bytes = sp->total_bytes;
    out->segments = sp->nsegs;
    out->synced_seq = sp->synced_seq;
    out->fault = sp->failed;
    out->fault_since_ms = sp->failed != 0 ? sp->fault_since_ms : 0;
    out->first_seq = 0;
    if (out->records > 0 && span_from(sp, sp->live_start, &b, &r, &first) == 0 && first.found) {
        out->first_seq = first.seq;
    }
    pthread_mutex_unlock(&sp->mu);
    return 0;
}

size_t wan_spool_peer_count(struct wan_spool *sp)
{
    return sp->npeers;
}

int wan_spool_peer_stats(struct wan_spool *sp, size_t i, struct wan_spool_peer_stats *out)
{
    struct spool_pos first;
    struct spool_peer *p;
    int rc;

    if (i >= sp->npeers) {
        return -ENOENT;
    }
    pthread_mutex_lock(&sp->mu);
    p = &sp->peers[i];
    memset(out, 0, sizeof(*out));
    out->name = p->name;
    out->acked_seq = p->acked;
    out->dropped = p->dropped;
    out->compacted = p->compacted;
    rc = span_from(sp, max64(p->acked + 1, sp->live_start), &out->bytes, &out->records, &first);
    out->oldest_unacked_ms = first.found ? first.time_ms : 0;
    pthread_mutex_unlock(&sp->mu);
    return rc;
}

/* ---- cursors ----------------------------------------------------------------------- */

int wan_spool_cursor_create(struct wan_spool *sp, uint64_t from_seq, struct wan_spool_cursor **out)
{
    struct wan_spool_cursor *c;

    if (sp == NULL || out == NULL) {
        return -EINVAL;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return -ENOMEM;
    }
    c->sp = sp;
    c->want = from_seq;
    c->fd = -1;
    spool_rd_init(&c->rd);
    *out = c;
    return 0;
}

void wan_spool_cursor_destroy(struct wan_spool_cursor *c)
{
    if (c == NULL) {
        return;
    }
    if (c->fd != -1) {
        close(c->fd);
    }
    spool_rd_free(&c->rd);
    free(c);
}

int wan_spool_cursor_seek(struct wan_spool_cursor *c, uint64_t seq)
{
    pthread_mutex_lock(&c->sp->mu);
    c->want = seq;
    c->placed = false;
    pthread_mutex_unlock(&c->sp->mu);
    return 0;
}

static int cursor_open_seg(struct wan_spool_cursor *c, const struct spool_seg *s)
{
    char name[64];

    if (c->fd != -1) {
        close(c->fd);
    }
    spool_seg_name(name, sizeof(name), s->name_seq, "");
    c->fd = openat(c->sp->dir_fd, name, O_RDONLY | O_CLOEXEC);
    if (c->fd == -1) {
        return -errno;
    }
    spool_rd_reset(&c->rd, c->fd);
    c->seg_name_seq = s->name_seq;
    return 0;
}

/* Find c->want again (first use, after a seek, or after files changed). */
static int cursor_place(struct wan_spool_cursor *c)
{
    struct wan_spool *sp = c->sp;
    size_t i = 0;
    struct spool_pos pos;
    int rc;

    while (i < sp->nsegs && (sp->segs[i].records == 0 || sp->segs[i].last_seq < c->want)) {
        i++;
    }
    if (i == sp->nsegs) {
        i = sp->nsegs - 1;
        pos.off = sp->segs[i].size;
    } else {
        rc = spool_seg_locate(sp, &sp->segs[i], c->want, &pos);
        if (rc != 0) {
            return rc;
        }
    }
    /* A seek within the segment already open (the shipper holds back a small batch and
     * seeks back to its first record) keeps the file and what its reader has buffered: the
     * bytes of a segment never change while gen does not (appends only add complete
     * records).  Reopening here cost an openat, a close and fresh preads per seek. */
    if (c->fd == -1 || c->gen != sp->gen || c->seg_name_seq != sp->segs[i].name_seq) {
        rc = cursor_open_seg(c, &sp->segs[i]);
        if (rc != 0) {
            return rc;
        }
    }
    c->off = pos.off;
    c->placed = true;
    c->gen = sp->gen;
    return 0;
}

int wan_spool_cursor_next(struct wan_spool_cursor *c, struct wan_spool_record *out)
{
    struct wan_spool *sp = c->sp;
    int rc = 0;

    pthread_mutex_lock(&sp->mu);
    if (c->want < sp->live_start) { /* acked by every peer, or dropped */
        c->want = sp->live_start;
        c->placed = false;
    }
    if (!c->placed || c->gen != sp->gen) {
        rc = cursor_place(c);
    }
    while (rc == 0) {
        size_t i = spool_seg_find(sp, c->seg_name_seq);
        const struct spool_seg *s;
        struct spool_rec rec;

        if (i == SIZE_MAX) { /* cannot happen while gen is unchanged; be safe */
            rc = cursor_place(c);
            continue;
        }
        s = &sp->segs[i];
        c->rd.tail = sp->tail.valid && sp->tail.gen == sp->gen &&
                             sp->tail.seg == c->seg_name_seq
                         ? &sp->tail
                         : NULL;
        if (c->off >= s->size) {
            if (i + 1 == sp->nsegs) {
                rc = -EAGAIN;
                break;
            }
            rc = cursor_open_seg(c, &sp->segs[i + 1]);
            c->off = 0;
            continue;
        }
        rc = spool_rec_parse(&c->rd, c->off, s->size, true, &rec);
        if (rc < 0) {
            break;
        }
        if (rc != REC_OK) {
            char name[64];
            spool_seg_name(name, sizeof(name), s->name_seq, "");
            spool_log(sp, WAN_SPOOL_LOG_ERROR,
                      "spool: %s: %s at offset %" PRIu64 " while reading; skipping %" PRIu64
                      " bytes to the next segment",
                      name, spool_rec_status_str[rc], c->off, s->size - c->off);
            sp->st.cut_events++;
            sp->st.cut_bytes += s->size - c->off;
            c->off = s->size;
            rc = -EBADMSG;
            break;
        }
        c->off += rec.size;
        if (rec.seq < c->want) {
            continue;
        }
        c->want = rec.seq + 1;
        out->seq = rec.seq;
        out->time_ms = rec.time_ms;
        out->key = rec.key;
        out->key_len = rec.key_len;
        out->data = rec.data;
        out->len = rec.len;
        break;
    }
    pthread_mutex_unlock(&sp->mu);
    return rc;
}
