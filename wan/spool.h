/*
 * spool — the durable outbound replication log of one gateway: every mutation bound for
 * the peer sites is appended here before it ships, read back per peer from any sequence
 * number, and deleted once every peer has acknowledged it (docs/REPLICATION.md "Spool";
 * the on-disk format is described at the top of spool.c).
 *
 * Records are opaque bytes (a protobuf Mutation, to the spool just a blob) plus the key
 * they are for, which the spool uses for one thing only: when the spool is over max_bytes
 * it compacts its older segments by dropping records that a later record for the same key
 * supersedes, and only then drops the oldest records, counting and logging every one.
 *
 * Blocking file I/O, no event loop, no sockets.  One struct wan_spool per gateway, shared
 * by every thread: worker threads append and sync, the WAN thread reads and acks.  Every
 * call takes the spool's one mutex; wan_spool_sync() runs its fsync outside it so the
 * other threads keep appending (group commit).  It does not ship, retry or parse records.
 *
 * Sequence numbers are per spool, start at 1 and only grow, but are NOT contiguous:
 * compaction, dropping, a cut tail and a restart after a crash (which skips the sequence
 * numbers reserved but perhaps not written) all leave holes.  A receiver must treat
 * "next record has seq > last + 1" as normal, never wait for the missing ones.
 */
#ifndef GEOGATE_WAN_SPOOL_H
#define GEOGATE_WAN_SPOOL_H

#include <stddef.h>
#include <stdint.h>

enum wan_spool_fsync {
    WAN_SPOOL_FSYNC_ALWAYS = 0, /* wan_spool_sync() fsyncs; call it before acknowledging */
    WAN_SPOOL_FSYNC_EVERYSEC,   /* wan_spool_tick() fsyncs at most once a second */
    WAN_SPOOL_FSYNC_NO,         /* never fsync; the kernel writes back when it likes */
    WAN_SPOOL_FSYNC_MAX
};

enum wan_spool_log_level {
    WAN_SPOOL_LOG_ERROR = 0, /* records lost (dropped, or cut with damage), cannot write */
    WAN_SPOOL_LOG_WARN,      /* torn tail cut (no whole record lost), compaction, state reset */
    WAN_SPOOL_LOG_INFO,      /* peers added or removed */
    WAN_SPOOL_LOG_MAX
};

/* Log sink.  Called with the spool's lock held, from whichever thread made the call that
 * logs: it must not call back into the spool.  msg is one line without a newline. */
typedef void (*wan_spool_log_fn)(void *arg, enum wan_spool_log_level level, const char *msg);

/* Wall clock in unix milliseconds (record times, the everysec timer).  Tests inject one. */
typedef uint64_t (*wan_spool_clock_fn)(void *arg);

#define WAN_SPOOL_SEGMENT_BYTES_DEFAULT (UINT64_C(64) << 20)
#define WAN_SPOOL_KEY_MAX 65535u
#define WAN_SPOOL_DATA_MAX (UINT32_C(1) << 30)
#define WAN_SPOOL_PEER_NAME_MAX 255u

struct wan_spool_options {
    const char *dir;        /* created (one level) if missing; locked against a 2nd user */
    uint64_t max_bytes;     /* bound on retained record bytes; 0 = unbounded */
    uint64_t segment_bytes; /* roll size; 0 = 64 MiB; at most max_bytes / 4 */
    enum wan_spool_fsync fsync;
    const char *const *peers; /* peer site names: 1..255 printable bytes, no spaces */
    size_t npeers;            /* 0 is allowed: nothing is retained once written */
    wan_spool_log_fn log;     /* may be NULL */
    void *log_arg;
    wan_spool_clock_fn clock; /* NULL: CLOCK_REALTIME */
    void *clock_arg;
};

/* One record as a cursor returns it.  key and data point into the cursor's buffer
 * (borrowed) and stay valid until the next call on that cursor. */
struct wan_spool_record {
    uint64_t seq;
    uint64_t time_ms; /* when it was appended */
    const uint8_t *key;
    size_t key_len;
    const uint8_t *data;
    size_t len;
};

struct wan_spool_stats {
    uint64_t id;         /* random, made when the spool directory was first used */
    uint64_t instance;   /* random, made at each open: dropped counts start again there */
    uint64_t first_seq;  /* oldest retained record; 0 if none */
    uint64_t last_seq;   /* last sequence handed out (0 if none yet) */
    uint64_t records;    /* retained: not yet acked by every peer, not dropped */
    uint64_t bytes;      /* their bytes on disk, framing included; what max_bytes bounds */
    uint64_t disk_bytes; /* every segment file, acked/dropped leftovers included */
    uint64_t segments;
    uint64_t synced_seq; /* everything up to here has been fsynced */
    uint64_t appended;   /* records appended since open */
    uint64_t fsyncs;
    uint64_t compactions; /* segments compacted since open */
    uint64_t compacted;   /* superseded records removed by compaction */
    uint64_t dropped;     /* records lost: overflow past max_bytes, or corruption */
    uint64_t cut_events;  /* torn/corrupt places found (at open or while reading) */
    uint64_t cut_bytes;   /* bytes cut off there */
    uint64_t cut_records; /* intact records seen after the damage and lost with the cut */
    /* disk faults (spool_fault.c) */
    uint64_t faults;      /* write faults since open (no space, I/O error, read-only, removed) */
    uint64_t unspooled;   /* mutations refused by a fault: counted as dropped for every peer */
    uint64_t not_durable; /* records a failed fsync was to cover: counted the same way */
    int fault;            /* the fault in force (negative errno), or 0: writing works */
    uint64_t fault_since_ms;
};

struct wan_spool_peer_stats {
    const char *name;   /* borrowed, valid until wan_spool_close() */
    uint64_t acked_seq; /* highest sequence the peer acknowledged (0: none) */
    uint64_t records;   /* retained records it has not acked yet */
    uint64_t bytes;
    uint64_t oldest_unacked_ms; /* append time of the oldest of them; 0 if none */
    uint64_t dropped;           /* records lost before it acked them (since open) */
    uint64_t compacted;         /* superseded records removed before it acked them */
};

struct wan_spool;
struct wan_spool_cursor;

/* Parse "always" / "everysec" / "no".  Returns 0 or -EINVAL. */
int wan_spool_fsync_from_name(const char *name, enum wan_spool_fsync *out);
const char *wan_spool_fsync_name(enum wan_spool_fsync mode);

/* Open (or create) the spool in opt->dir and recover it: every segment is scanned and
 * checked record by record; a torn or corrupt part is cut at the last good record (the
 * file truncated), logged, and counted in cut_* and, for intact records found after the
 * damage, in dropped.  Peers in the state file but not in opt->peers are forgotten;
 * peers in opt->peers but not in the state file start at ack 0, i.e. they will be sent
 * every retained record (records that every peer of the previous run had acked are not
 * retained).  Damage never makes open fail; only I/O errors do.
 * On success *out owns the spool (free it with wan_spool_close()).
 * Returns 0, or
 *   -EINVAL   bad options (no dir, bad fsync mode, bad or duplicate peer name)
 *   -EBUSY    another process (or spool) holds the directory
 *   -ENOMEM
 *   -errno    of a failing mkdir/open/read/write/fsync/ftruncate */
int wan_spool_open(const struct wan_spool_options *opt, struct wan_spool **out);

/* Flush (fsync unless mode is no), record a clean shutdown, close and free.  Destroy all
 * cursors first.  Always frees; returns 0 or the -errno of the last flush. */
int wan_spool_close(struct wan_spool *sp);

/* Append one record: data (len bytes, opaque) for key (key_len bytes; 0 for records that
 * must never be compacted away).  The bytes are written (not fsynced) before it returns;
 * *seq (may be NULL) gets the record's sequence number.  May first roll the segment and,
 * over max_bytes, compact and drop old records (counted, logged).
 * Returns 0, or
 *   -EINVAL   key_len > WAN_SPOOL_KEY_MAX, or NULL pointers with non-zero lengths
 *   -EFBIG    the record alone is larger than max_bytes or WAN_SPOOL_DATA_MAX
 *   -ENOMEM
 *   -errno    write error (ENOSPC, EIO...); the partial record is removed
 *   -EIO      a previous fsync failed: the spool no longer accepts writes */
int wan_spool_append(struct wan_spool *sp, const void *key, size_t key_len, const void *data,
                     size_t len, uint64_t *seq);

/* One record for wan_spool_append_many(): as wan_spool_append()'s arguments. */
struct wan_spool_item {
    const void *key;
    size_t key_len;
    const void *data;
    size_t len;
};

/* Append n records in order, as many wan_spool_append() calls would, but under one lock
 * and with one write per run of records (a segment roll, room-making or APPEND_RUN
 * records start a new run).  seqs (may be NULL) gets each record's sequence number, 0 for
 * a record not appended; *appended counts those appended.  A record that is invalid
 * (-EINVAL) or too large (-EFBIG) is skipped and the others go on; a write error stops
 * the rest (taken back: the file is truncated to the last record written).  Returns 0
 * when every record was appended, else the first error.  A write fault (or one in force)
 * counts every mutation not appended as dropped for every peer (see wan_spool_tick). */
int wan_spool_append_many(struct wan_spool *sp, const struct wan_spool_item *items, size_t n,
                          uint64_t *seqs, size_t *appended);

/* Group commit: one fsync covering every record appended (by any thread) before the
 * call.  Concurrent callers share an fsync in progress when it covers them.  Records only:
 * acks are written by wan_spool_ack() (always) or wan_spool_tick().  A no-op with fsync
 * mode no.
 * Returns 0, or the -errno of the failed fsync: what it was to cover counts as dropped for
 * every peer that has not acked it (after a failed fsync the kernel may have dropped the
 * dirty pages and cleared the error: that file is never fsynced again), and the spool
 * refuses appends until wan_spool_tick() finds the disk usable. */
int wan_spool_sync(struct wan_spool *sp);

/* Call periodically (every 100-250 ms) from any thread.  everysec: fsyncs when something
 * is unsynced and the last fsync is >= 1 s old.  All modes: writes changed acks/state at
 * most once a second.  Disk faults (no space, I/O errors, read-only, the directory or the
 * active segment removed): while one is in force every append is refused at once with
 * its error and each refused mutation counts as dropped for every peer; once a second
 * the disk is tried again and writing resumes by itself; the log says so once per 10 s
 * with counts (wan_spool_stats: faults, unspooled, not_durable, fault).  Returns 0. */
int wan_spool_tick(struct wan_spool *sp);

/* The peer acknowledged every record up to seq.  Older or equal acks are ignored.
 * With fsync always the ack is on disk (temp file + fsync + rename + fsync dir) before
 * this returns; otherwise by the next wan_spool_tick() a second later, or by close (a
 * lost ack only means records are shipped again).  Segments acked by every peer are then deleted
 * (never the one being written).
 * Returns 0, or -ENOENT (unknown peer), -ERANGE (seq beyond the last appended),
 * -errno of the state write (the ack is still taken in memory). */
int wan_spool_ack(struct wan_spool *sp, const char *peer, uint64_t seq);

/* The highest sequence peer acked, in *seq.  Returns 0 or -ENOENT. */
int wan_spool_peer_acked(struct wan_spool *sp, const char *peer, uint64_t *seq);

/* Whole-spool numbers.  Returns 0 (cannot fail). */
int wan_spool_stats(struct wan_spool *sp, struct wan_spool_stats *out);

/* Number of configured peers, and the numbers of peer i (0 <= i < count).
 * wan_spool_peer_stats returns 0, -ENOENT (i out of range), or -errno of a read. */
size_t wan_spool_peer_count(struct wan_spool *sp);
int wan_spool_peer_stats(struct wan_spool *sp, size_t i, struct wan_spool_peer_stats *out);

/* A reader positioned at the first retained record with seq >= from_seq (for a peer:
 * its acked seq + 1).  It follows the spool across segment rolls, compaction and
 * trimming.  Several cursors may exist; each is used by one thread at a time.
 * Returns 0, -EINVAL, or -ENOMEM. */
int wan_spool_cursor_create(struct wan_spool *sp, uint64_t from_seq, struct wan_spool_cursor **out);

/* The next record, into *rec (pointers borrowed until the next call).
 * Returns 0, or
 *   -EAGAIN   no record yet: call again after more appends
 *   -EBADMSG  a record failed its check since open (disk damage): logged and counted
 *             in cut_*, the cursor skipped to the next segment; call again to go on
 *   -ENOMEM, -errno of a read */
int wan_spool_cursor_next(struct wan_spool_cursor *c, struct wan_spool_record *rec);

/* Move the cursor to the first record with seq >= seq (e.g. after a reconnect, to the
 * peer's acked seq + 1).  Returns 0 (cannot fail). */
int wan_spool_cursor_seek(struct wan_spool_cursor *c, uint64_t seq);

/* Free a cursor (before its spool). */
void wan_spool_cursor_destroy(struct wan_spool_cursor *c);

#endif
