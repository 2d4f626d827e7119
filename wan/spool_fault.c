/*
 * spool_fault — what the spool does when its disk fails under it: no space, I/O errors,
 * a read-only remount, its directory or active segment removed.  It never stops the
 * gateway.  While a fault is in force appends are refused at once (no system call) and
 * each refused mutation counts as dropped for every peer, so the peers are told (the
 * `lost` field of the next batch) and catch up by backfill.  A failed fsync is never
 * retried as if it had worked: what it was to cover counts as not durable, and that file
 * is never fsynced again (after a failed fsync the kernel may have dropped the dirty
 * pages and cleared the error, so a second fsync could report success for data that is
 * gone).  Once a second the disk is tried again (a fresh segment and the state file,
 * with room left on a disk that was full), and writing resumes by itself.  The log says
 * so once per interval, with counts, never once per write.
 *
 * It does not decide what ships or when; everything here runs under the spool's mutex,
 * on whichever thread holds it (workers append, the WAN thread ticks).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "wan/spool_int.h"

#define FAULT_LOG_MS 10000
#define FAULT_PROBE_MS 1000
/* A disk that was full must have this much free again before writing resumes, so that
 * a few freed bytes do not turn the fault on and off every second. */
#define FAULT_RESUME_FREE (1u << 20)

void spool_fault(struct wan_spool *sp, int rc)
{
    if (sp->failed != 0) {
        return;
    }
    sp->failed = rc < 0 ? rc : -EIO;
    sp->fault_since_ms = spool_now(sp);
    sp->fault_log_ms = 0; /* the next tick says it */
    sp->st.faults++;
}

void spool_note_unspooled(struct wan_spool *sp, uint64_t n, int rc)
{
    if (n == 0) {
        return;
    }
    for (size_t i = 0; i < sp->npeers; i++) {
        sp->peers[i].dropped += n;
    }
    sp->st.unspooled += n;
    sp->unspooled_unlogged += n;
    spool_fault(sp, rc);
}

/* For every peer, the records up to last it has not acked (and that are not counted
 * already) count as dropped; returns the most any peer lost. */
static uint64_t lose_upto(struct wan_spool *sp, uint64_t last, uint64_t counted_upto)
{
    uint64_t most = 0;

    for (size_t i = 0; i < sp->npeers; i++) {
        struct spool_peer *p = &sp->peers[i];
        uint64_t from = p->acked > counted_upto ? p->acked : counted_upto;
        if (sp->floor > 0 && sp->floor - 1 > from) {
            from = sp->floor - 1;
        }
        if (last > from) {
            p->dropped += last - from;
            most = last - from > most ? last - from : most;
        }
    }
    return most;
}

void spool_note_not_durable(struct wan_spool *sp, uint64_t last, int rc)
{
    uint64_t lost = lose_upto(sp, last, sp->synced_seq);

    sp->st.not_durable += lost;
    sp->unspooled_unlogged += lost;
    /* counted once: the next fsync (of a fresh segment) covers only what follows */
    sp->synced_seq = last > sp->synced_seq ? last : sp->synced_seq;
    sp->active_bad = true;
    spool_fault(sp, rc);
}

/* The files are gone (directory or active segment removed): every record not acked
 * counts as dropped for its peers, and the spool starts again, empty, at next_seq. */
static void lose_all(struct wan_spool *sp, bool unlink_files)
{
    uint64_t last = sp->next_seq - 1;
    uint64_t lost = lose_upto(sp, last, 0);
    char name[64];

    sp->st.dropped += lost;
    sp->unspooled_unlogged += lost;
    for (size_t i = 0; i < sp->nsegs; i++) {
        if (unlink_files) {
            spool_seg_name(name, sizeof(name), sp->segs[i].name_seq, "");
            (void)unlinkat(sp->dir_fd, name, 0); /* what is left of it; gone is fine */
        }
        spool_seg_free(&sp->segs[i]);
    }
    sp->nsegs = 0;
    if (sp->active_fd != -1) {
        close(sp->active_fd);
        sp->active_fd = -1;
    }
    sp->active_bad = false;
    sp->floor = sp->next_seq;
    sp->live_start = sp->next_seq;
    sp->dead_bytes = sp->dead_records = 0;
    sp->total_bytes = sp->total_records = 0;
    sp->synced_seq = last;
    sp->gen++; /* cursors place themselves again */
    sp->state_dirty = true;
}

/* dir_fd is still the directory at dir_path.  When that was removed, make it again (as
 * the spool does at start-up) and take it, with its lock.  Returns 0, 1 when the
 * directory was replaced, or a negative errno. */
static int dir_check(struct wan_spool *sp)
{
    struct stat a, b;
    int fd, lock;

    if (fstat(sp->dir_fd, &a) == 0 && a.st_nlink > 0 && stat(sp->dir_path, &b) == 0 &&
        a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
        return 0;
    }
    if (mkdir(sp->dir_path, 0700) == -1 && errno != EEXIST) {
        return -errno;
    }
    fd = open(sp->dir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd == -1) {
        return -errno;
    }
    lock = openat(fd, LOCK_FILE, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock == -1) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    if (flock(lock, LOCK_EX | LOCK_NB) == -1) {
        close(lock);
        close(fd);
        return -EBUSY; /* someone else's now */
    }
    close(sp->lock_fd);
    close(sp->dir_fd);
    sp->dir_fd = fd;
    sp->lock_fd = lock;
    return 1;
}

static bool active_removed(const struct wan_spool *sp)
{
    struct stat st;

    return sp->active_fd != -1 && fstat(sp->active_fd, &st) == 0 && st.st_nlink == 0;
}

/* A fault is in force: is the disk usable again?  If so, writing resumes. */
static void fault_probe(struct wan_spool *sp, uint64_t now)
{
    struct statvfs vfs;
    int rc;

    sp->fault_quiet = true;
    rc = dir_check(sp);
    if (rc >= 0 && (rc == 1 || active_removed(sp))) {
        lose_all(sp, rc == 0);
        rc = 0;
    }
    if (rc == 0 && sp->failed == -ENOSPC && sp->nsegs > 0 &&
        sp->segs[sp->nsegs - 1].records > 0 &&
        sp->segs[sp->nsegs - 1].last_seq < sp->live_start) {
        /* every peer acked the whole active segment, but the active one is never deleted:
         * start a fresh one so that the full one goes and its space comes back */
        if (spool_seg_roll(sp) == 0) {
            (void)spool_recompute_live(sp);
        }
    }
    if (rc == 0 && sp->failed == -ENOSPC && fstatvfs(sp->dir_fd, &vfs) == 0 &&
        (uint64_t)vfs.f_bavail * vfs.f_frsize < FAULT_RESUME_FREE) {
        rc = -ENOSPC;
    }
    if (rc == 0 && (sp->active_bad || sp->active_fd == -1)) {
        rc = spool_seg_roll(sp); /* a fresh file; the bad one is not fsynced again */
    }
    if (rc == 0) {
        rc = spool_state_write(sp); /* also a small write that tells a full disk */
    }
    sp->fault_quiet = false;
    if (rc != 0) {
        return;
    }
    spool_log(sp, WAN_SPOOL_LOG_WARN,
              "spool: writing again after %" PRIu64 " s of %s; %" PRIu64
              " mutations in all could not be spooled or made durable, counted as lost for "
              "every peer, which catch up by backfill",
              (now - sp->fault_since_ms) / 1000, strerror(-sp->failed),
              sp->st.unspooled + sp->st.not_durable);
    sp->failed = 0;
    sp->unspooled_unlogged = 0;
}

void spool_fault_tick(struct wan_spool *sp, uint64_t now)
{
    if (now >= sp->last_probe_ms && now - sp->last_probe_ms < FAULT_PROBE_MS) {
        return;
    }
    sp->last_probe_ms = now;
    if (sp->failed == 0) {
        struct stat st;
        /* removed under a running gateway: appends to the open files would still work,
         * and be gone at the next start */
        if ((fstat(sp->dir_fd, &st) == 0 && st.st_nlink == 0) || active_removed(sp)) {
            spool_fault(sp, -ENOENT);
        }
    }
    if (sp->failed != 0) {
        fault_probe(sp, now);
    }
    if (sp->failed != 0 && (sp->fault_log_ms == 0 || now - sp->fault_log_ms >= FAULT_LOG_MS)) {
        spool_log(sp, WAN_SPOOL_LOG_ERROR,
                  "spool: cannot write for %" PRIu64 " s (%s): %" PRIu64
                  " mutations not spooled since the last such line, counted as lost for every "
                  "peer; trying again every second",
                  (now - sp->fault_since_ms) / 1000, strerror(-sp->failed),
                  sp->unspooled_unlogged);
        sp->fault_log_ms = now;
        sp->unspooled_unlogged = 0;
    }
}
