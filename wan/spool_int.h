/*
 * spool_int — what the spool's source files share and nobody else may use: the on-disk
 * constants, the in-memory structures of a spool, and the internal functions the files
 * call across (named spool_*; the public API is wan_spool_* in spool.h).  Every function
 * here expects the spool's mutex held unless it says otherwise.  Included only by
 * wan/spool*.c.
 */
#ifndef GEOGATE_WAN_SPOOL_INT_H
#define GEOGATE_WAN_SPOOL_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "wan/le.h"
#include "wan/spool.h"

#define FRAME_SIZE 8u
#define REC_HDR_SIZE 20u
#define REC_PREFIX (FRAME_SIZE + REC_HDR_SIZE) /* frame + record header */
#define REC_BODY_MAX ((uint64_t)REC_HDR_SIZE + WAN_SPOOL_KEY_MAX + WAN_SPOOL_DATA_MAX)
#define MARK_EVERY 32u                  /* sparse index: one mark per this many records */
#define SEQ_RESERVE (UINT64_C(1) << 20) /* sequence numbers reserved per state write */
#define RD_CHUNK (256u << 10)
#define WR_CHUNK (1u << 20)
#define STATE_FILE "acks"
#define STATE_TMP "acks.tmp"
#define STATE_MAX (1u << 20)
#define LOCK_FILE "lock"
#define SEG_NAME_LEN 30 /* "spool-" + 20 digits + ".log" */
#define COMPACT_SUFFIX ".compact"
#define SEGMENT_MIN 4096u

static inline uint64_t max64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

/* ---- records and the reader ---- */

/* The last bytes appended to the active segment, kept in memory so that the shipper,
 * which follows the tail of the spool a moment behind the workers, copies them instead of
 * reading them back from the file.  Bytes [base, base + len) of segment `seg` while the
 * spool's gen is `gen`; always ending at that segment's committed size.  Under mu. */
#define SPOOL_TAIL_MAX RD_CHUNK
struct spool_tail {
    uint8_t *buf; /* SPOOL_TAIL_MAX bytes once used */
    uint64_t base;
    size_t len;
    uint64_t seg; /* name_seq */
    uint64_t gen;
    bool valid;
};

struct spool_rd {
    int fd;
    uint8_t *buf;
    size_t cap;
    uint64_t base; /* file offset of buf[0] */
    size_t len;    /* valid bytes in buf */
    const struct spool_tail *tail; /* the file's bytes in memory where it covers them, or
                                    * NULL; set by its user for each read, under mu */
};

enum rec_status {
    REC_OK = 0,
    REC_SHORT_FRAME, /* fewer than 8 bytes left */
    REC_BAD_LENGTH,  /* length below the record header or above the maximum */
    REC_SHORT_BODY,  /* the file ends inside the record */
    REC_BAD_CRC,
    REC_BAD_HEADER, /* flags not 0, or key longer than the record */
    REC_BAD_SEQ,    /* seq not above the previous record's (or below the file name) */
    REC_STATUS_MAX
};

extern const char *const spool_rec_status_str[REC_STATUS_MAX];

struct spool_rec {
    uint64_t seq;
    uint64_t time_ms;
    const uint8_t *key;
    size_t key_len;
    const uint8_t *data;
    size_t len;
    const uint8_t *raw; /* the whole record, frame included */
    uint64_t size;      /* FRAME_SIZE + L */
};

/* ---- a spool in memory ---- */

/* Sparse index entry: the record number ordinal (0-based within the segment) has seq and
 * starts at off. */
struct spool_mark {
    uint64_t seq;
    uint64_t off;
    uint64_t ordinal;
};

struct spool_seg {
    uint64_t name_seq;            /* from the file name; <= first_seq */
    uint64_t first_seq, last_seq; /* 0, 0 while empty */
    uint64_t size;                /* good bytes */
    uint64_t records;
    bool compacted; /* compacted since it stopped being active */
    struct spool_mark *marks;
    size_t nmarks, cmarks;
};

struct spool_peer {
    char *name;
    uint64_t acked;
    uint64_t dropped, compacted;
    uint64_t drop_unlogged;
};

struct wan_spool {
    pthread_mutex_t mu;
    pthread_cond_t cond; /* an fsync finished */

    int dir_fd;
    int lock_fd;
    int active_fd; /* the last segment, O_RDWR */
    uint64_t max_bytes, segment_bytes;
    enum wan_spool_fsync fsync;
    wan_spool_log_fn log;
    void *log_arg;
    wan_spool_clock_fn clock;
    void *clock_arg;

    struct spool_seg *segs; /* by name_seq; the last one is active */
    size_t nsegs, csegs;
    struct spool_peer *peers;
    size_t npeers;

    uint64_t id;
    uint64_t next_seq;
    uint64_t reserved;
    uint64_t floor;
    uint64_t live_start;
    uint64_t dead_bytes, dead_records; /* in segs[0], before live_start */
    uint64_t total_bytes, total_records;
    uint64_t gen; /* bumped whenever files are replaced or deleted */

    uint64_t synced_seq;
    bool syncing;
    int failed; /* a write fault in force (negative errno): appends are refused and
                 * counted lost until spool_fault_tick finds the disk usable again */
    char *dir_path;   /* to find the directory again after it was removed */
    bool active_bad;  /* the active segment's fsync failed: it is never fsynced again */
    bool fault_quiet; /* spool_fault_tick is probing: its failures are not logged */
    uint64_t fault_since_ms, fault_log_ms, last_probe_ms, fault_resumed_ms;
    uint64_t unspooled_unlogged; /* since the last fault log line */
    uint64_t last_sync_ms, last_state_ms;
    bool state_dirty;

    uint64_t drop_unlogged, drop_first, drop_last, last_drop_log_ms;

    struct wan_spool_stats st; /* the counters part */

    /* The appends' staging (spool.c), under mu: kept from one append to the next, since
     * allocating its 25 KB cost a malloc from the top of the heap every time. */
    struct append_run *run;
    struct spool_tail tail;
};

struct wan_spool_cursor {
    struct wan_spool *sp;
    uint64_t want; /* the next seq wanted */
    bool placed;
    uint64_t gen;
    uint64_t seg_name_seq; /* name_seq of the segment it is in */
    uint64_t off;
    int fd;
    struct spool_rd rd;
};

/* Where the first record with seq >= target sits in s. */
struct spool_pos {
    bool found;
    uint64_t off, ordinal; /* off = size, ordinal = records when !found */
    uint64_t seq, time_ms;
};

struct spool_state_peer {
    char name[WAN_SPOOL_PEER_NAME_MAX + 1];
    uint64_t acked;
};

struct spool_state {
    uint64_t id, reserved, floor;
    struct spool_state_peer *peers;
    size_t npeers;
};

enum loss_kind { LOSS_DROPPED = 0, LOSS_COMPACTED, LOSS_MAX };

/* ---- disk faults (spool_fault.c), all under mu ---- */

/* A write failed with rc: appends are refused from now on (and counted lost) until
 * spool_fault_tick sees the disk usable again.  The first error stays the reported one. */
void spool_fault(struct wan_spool *sp, int rc);

/* n mutations could not be written: each counts as dropped for every peer, so the peers
 * are told and catch up by themselves (auto_backfill). */
void spool_note_unspooled(struct wan_spool *sp, uint64_t n, int rc);

/* An fsync of the active segment failed: what it was to cover, seqs (synced_seq, last],
 * counts as not durable (lost for every peer that has not acked it), and that file is
 * never fsynced again, since a retry could report success for pages the kernel dropped. */
void spool_note_not_durable(struct wan_spool *sp, uint64_t last, int rc);

/* Once a second: find a removed directory or active segment, try to resume writing when
 * a fault is in force, and log the fault's state once per interval. */
void spool_fault_tick(struct wan_spool *sp, uint64_t now);

static inline bool durable(const struct wan_spool *sp)
{
    return sp->fsync != WAN_SPOOL_FSYNC_NO;
}

static inline uint64_t live_bytes(const struct wan_spool *sp)
{
    return sp->total_bytes - sp->dead_bytes;
}

static inline uint64_t min_acked(const struct wan_spool *sp)
{
    uint64_t m = sp->next_seq - 1;

    for (size_t i = 0; i < sp->npeers; i++) {
        if (sp->peers[i].acked < m) {
            m = sp->peers[i].acked;
        }
    }
    return m;
}

/* ---- internal functions ---- */

/* spool_file.c: I/O helpers.  Return 0 or -errno; *got is what pread returned in total
 * (short only at end of file). */
int spool_write_all(int fd, const void *buf, size_t len);
int spool_pwritev_all(int fd, struct iovec *iov, int iovcnt, uint64_t off);
int spool_pread_all(int fd, void *buf, size_t len, uint64_t off, size_t *got);

/* spool_file.c: "spool-<20 digits>.log<suffix>"; parse returns 0 or -EINVAL. */
void spool_seg_name(char *buf, size_t n, uint64_t name_seq, const char *suffix);
int spool_seg_name_parse(const char *name, uint64_t *seq);

/* spool_file.c: the windowed reader and the record parser (see their definitions for the
 * return codes: rd_get 0/-ENOMEM/-EIO/-errno; rec_parse an enum rec_status or -errno). */
void spool_rd_init(struct spool_rd *r);
void spool_rd_reset(struct spool_rd *r, int fd);
void spool_rd_free(struct spool_rd *r);
int spool_rd_get(struct spool_rd *r, uint64_t off, size_t n, uint64_t limit, const uint8_t **p);
int spool_rec_parse(struct spool_rd *r, uint64_t off, uint64_t end, bool verify,
                    struct spool_rec *out);

/* spool_file.c: logging through the caller's callback, the clock, loss counting. */
__attribute__((format(printf, 3, 4))) void
spool_log(struct wan_spool *sp, enum wan_spool_log_level level, const char *fmt, ...);
uint64_t spool_now(struct wan_spool *sp);
bool spool_count_loss(struct wan_spool *sp, uint64_t seq, enum loss_kind kind);

/* spool_file.c: segments.  Return 0, -ENOMEM or -errno where they return int. */
int spool_seg_note_record(struct spool_seg *s, uint64_t seq, uint64_t off, uint64_t size);
void spool_seg_free(struct spool_seg *s);
bool spool_seg_is_active(const struct wan_spool *sp, const struct spool_seg *s);
int spool_seg_fd_get(struct wan_spool *sp, const struct spool_seg *s, int *fd);
void spool_seg_fd_put(struct wan_spool *sp, int fd);
size_t spool_seg_find(const struct wan_spool *sp, uint64_t name_seq); /* SIZE_MAX: none */
int spool_segs_push(struct wan_spool *sp, const struct spool_seg *s);
void spool_segs_remove(struct wan_spool *sp, size_t i);
int spool_seg_locate(struct wan_spool *sp, const struct spool_seg *s, uint64_t target,
                     struct spool_pos *pos);
int spool_recompute_live(struct wan_spool *sp);
int spool_seg_roll(struct wan_spool *sp);

/* spool_state.c: write returns 0/-ENOMEM/-errno (and logs); read 0/-ENOENT/-EBADMSG/
 * -ENOMEM/-errno. */
int spool_state_write(struct wan_spool *sp);
int spool_state_read(struct wan_spool *sp, struct spool_state *st);
bool spool_peer_name_ok(const char *name);

/* spool_recover.c: 0, -ENOMEM or -errno (damage is cut and reported, not an error). */
int spool_segs_list(struct wan_spool *sp);
int spool_segs_recover(struct wan_spool *sp);

/* spool_compact.c: make room for need more bytes: 0, -EFBIG, -EIO, -ENOMEM or -errno. */
int spool_make_room(struct wan_spool *sp, uint64_t need);
void spool_drop_log_flush(struct wan_spool *sp, bool force);

#endif
