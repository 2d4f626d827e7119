/*
 * snapshot — a site's live items as one file: the file format (header, CRC-checked
 * length-prefixed protobuf Mutation records, end record; docs/SNAPSHOTS.md) and the
 * enumeration that produces it from the site's memcached nodes (`lru_crawler metadump
 * hash`, then batched `gets`, over one dedicated connection per node).
 *
 * Blocking I/O on the caller's thread: call gw_snapshot_run() from a thread of its own,
 * never from a worker's or the main thread's loop (it would stall the request path).  The
 * format functions are pure (no I/O, no allocation) and reentrant.  It does not apply
 * anything (restore.c does) and knows nothing of HTTP (admin_xfer.c streams it).
 */
#ifndef GEOGATE_SNAPSHOT_H
#define GEOGATE_SNAPSHOT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/geogate_wan.pb-c.h"

struct gw_pool;
struct iovec;

/* ---- the file format (see the top of snapshot.c) ------------------------------------- */

#define GW_SNAP_MAGIC "GGSNAP"
#define GW_SNAP_MAGIC_LEN 6
#define GW_SNAP_FORMAT 1        /* the only format version this build reads and writes */
#define GW_SNAP_PREFIX_LEN 8    /* magic + format version: the same in every version */
#define GW_SNAP_HEADER_FIXED 24 /* header bytes before the site name */
#define GW_SNAP_SITE_MAX 255    /* longest site name a header holds */
#define GW_SNAP_HEADER_MAX (GW_SNAP_HEADER_FIXED + GW_SNAP_SITE_MAX + 4)
#define GW_SNAP_RECORD_HEAD 8          /* u32 length + u32 CRC32C of the payload */
#define GW_SNAP_RECORD_MAX (64u << 20) /* longest payload a reader accepts */
#define GW_SNAP_END_MARK 0xFFFFFFFFu   /* the length field of the end record */
#define GW_SNAP_END_PAYLOAD 16         /* u64 records + u64 tombstones */

/* The decoded file header. */
struct gw_snap_header {
    uint16_t format;     /* GW_SNAP_FORMAT */
    uint64_t created;    /* unix seconds when the snapshot started */
    uint32_t site_id;    /* wan_site_id(site) */
    uint16_t gateway_id; /* the gateway that wrote it */
    char site[GW_SNAP_SITE_MAX + 1];
};

/* Encode h into out (at least GW_SNAP_HEADER_MAX bytes).  Returns the header's length, or
 * -EINVAL when the site name is empty or longer than GW_SNAP_SITE_MAX. */
int gw_snap_header_encode(const struct gw_snap_header *h, uint8_t *out);

/*
 * Decode the header at the start of buf (len bytes available).  The magic and the format
 * version are checked before anything else, so a file from another format version is
 * refused whatever the rest of its header looks like.  On 0, *hlen is the header's length
 * (the first record starts there); on an error *bad_offset is where the problem is.
 * Returns 0, or
 *   -EPROTO           no "GGSNAP" magic: not a snapshot
 *   -EPROTONOSUPPORT  a format version other than GW_SNAP_FORMAT (out->format says which)
 *   -EMSGSIZE         the data ends inside the header
 *   -EINVAL           site name length 0
 *   -EBADMSG          header CRC mismatch
 */
int gw_snap_header_decode(const uint8_t *buf, size_t len, struct gw_snap_header *out, size_t *hlen,
                          size_t *bad_offset);

/* Write a record's 8-byte head for payload into out.  Cannot fail. */
void gw_snap_record_head(const void *payload, uint32_t len, uint8_t out[GW_SNAP_RECORD_HEAD]);

/* Write the end record (head + payload, 24 bytes) into out.  Cannot fail. */
void gw_snap_end_record(uint64_t records, uint64_t tombstones,
                        uint8_t out[GW_SNAP_RECORD_HEAD + GW_SNAP_END_PAYLOAD]);

/* ---- producing a snapshot ------------------------------------------------------------ */

/* Where gw_snapshot_run writes the file, in order, in pieces of up to ~64 KiB.  Returns 0
 * to go on, or a negative errno to stop (the run then returns it; -ECANCELED when the
 * reader went away). */
typedef int (*gw_snapshot_write_fn)(void *arg, const void *data, size_t len);

struct gw_snapshot_source {
    struct gw_pool *pool; /* borrowed; the caller holds a reference for the whole run */
    const char *site;
    uint32_t site_id;
    uint16_t gateway_id;
    uint32_t io_timeout_ms; /* per read/write on a node connection; 0: 30 s */
};

struct gw_snapshot_stats {
    uint64_t records;         /* items written (tombstones included) */
    uint64_t tombstones;      /* of which tombstones */
    uint64_t versioned;       /* of which carry a version header; the rest are version 0 */
    uint64_t skipped_expired; /* listed by metadump but expired by the time they were read */
    uint64_t vanished;        /* listed by metadump, gone (evicted, deleted) when read */
    uint64_t unreadable;      /* keys the ASCII protocol cannot ask for (binary-protocol keys) */
    uint64_t bytes;           /* file bytes written */
    uint64_t listed;          /* keys metadump listed, over all nodes */
    uint64_t node_items;      /* curr_items of every node, summed when the run started
                                 (gw_enum_run only) */
    uint64_t skipped_resumed; /* keys before the resume point (gw_enum_run only) */
};

/*
 * Enumerate every node of src->pool and write the snapshot file through write(arg, ...):
 * header, one record per live item (tombstones included, expired items skipped; version-0
 * items with their raw flags and memcached's expiry), end record.  Every node is connected,
 * and the first one listed, before the first byte is written, so an unreachable node or a
 * busy crawler there fails the run before anything is.
 * cancel (may be NULL) is checked between batches.  Stats are filled as far as it got.
 * Blocking; not on an event loop thread.
 * Returns 0, or
 *   -EHOSTUNREACH  a node could not be connected (err names it)
 *   -ETIMEDOUT     a node stopped answering
 *   -EBUSY         a node's LRU crawler stayed busy (another metadump) for 10 s
 *   -EPROTO        a node answered something unexpected (err quotes it)
 *   -ENOMEM
 *   -ECANCELED     *cancel was set
 *   whatever write returned
 */
int gw_snapshot_run(const struct gw_snapshot_source *src, gw_snapshot_write_fn write, void *arg,
                    atomic_bool *cancel, struct gw_snapshot_stats *stats, char *err, size_t errlen);

/* ---- enumerating items (backfill) --------------------------------------------------- */

/* One live item (key and value borrowed for the call; site_id/gateway_id as stored: both 0
 * with hlc 0 for an item without a version header).  Return 0 to go on, or a negative errno
 * to stop the run (it then returns it). */
typedef int (*gw_enum_item_fn)(void *arg, uint32_t node, const Geogate__Wan__V1__Mutation *m);
/* After each batch of keys read from node: every key up to and including last_key (in the
 * node's sorted order) has been handed to item() or found gone.  A run resumed after it
 * (start_node = node, after = last_key) sees none of them again.  0 or a negative errno. */
typedef int (*gw_enum_batch_fn)(void *arg, uint32_t node, const char *last_key, size_t last_len);

struct gw_enum_options {
    const char *prefix; /* only keys starting with it; NULL or "" = every key */
    size_t prefix_len;
    uint32_t start_node; /* resume: nodes before it are skipped */
    const char *after;   /* resume: within start_node, only keys sorting after it; NULL = all */
    size_t after_len;
    gw_enum_item_fn item; /* required */
    gw_enum_batch_fn batch; /* may be NULL */
    void *arg;
};

/*
 * Walk every node of src->pool as gw_snapshot_run does (metadump, then batched gets), but hand
 * each live item (tombstones included, expired skipped) to opt->item instead of writing a file.
 * Keys of a node are visited in byte order (shorter first on a common prefix), which is what
 * makes a run resumable from (node, last key).  stats->node_items is the pool's curr_items
 * sum at the start (for progress).  Same errors as gw_snapshot_run, plus what the callbacks
 * return.  Blocking; not on an event loop thread.
 */
int gw_enum_run(const struct gw_snapshot_source *src, const struct gw_enum_options *opt,
                atomic_bool *cancel, struct gw_snapshot_stats *stats, char *err, size_t errlen);

/* Compare two keys in the order gw_enum_run visits them: <0, 0, >0. */
int gw_enum_key_cmp(const char *a, size_t alen, const char *b, size_t blen);

/* ---- blocking memcached connections (shared with restore.c) --------------------------- */

/* One blocking connection to a memcached node with a read buffer. */
struct gw_mc_sock {
    int fd; /* -1 when closed */
    uint32_t timeout_ms;
    char *buf;
    size_t cap, start, end; /* unread bytes are buf[start..end) */
    char label[96];         /* host:port, for messages */
};

/* Connect to the pool's node (addresses resolved in the pool).  Returns 0, or
 * -EHOSTUNREACH / -ETIMEDOUT / -ENOMEM with err filled. */
int gw_mc_sock_open(struct gw_mc_sock *s, struct gw_pool *pool, uint32_t node, uint32_t timeout_ms,
                    char *err, size_t errlen);
void gw_mc_sock_close(struct gw_mc_sock *s);

/* Send all of data.  Returns 0, -ETIMEDOUT or -EIO. */
int gw_mc_sock_send(struct gw_mc_sock *s, const void *data, size_t len);

/* Send all of iov[0..n) with as few system calls as the socket allows; iov is consumed
 * (its entries are advanced past what was sent).  Returns 0, -ETIMEDOUT or -EIO. */
int gw_mc_sock_sendv(struct gw_mc_sock *s, struct iovec *iov, size_t n);

/* Read one line (without its "\r\n" or "\n"); *line points into the buffer until the next
 * call.  Lines over 64 KiB are an error.  Returns 0, -ETIMEDOUT, -EIO (closed), -EPROTO
 * (too long) or -ENOMEM. */
int gw_mc_sock_line(struct gw_mc_sock *s, char **line, size_t *len);

#endif
