/*
 * item — the versioned item as memcached holds it for a replicating gateway: our 32-byte
 * header (wan/version.h, docs/REPLICATION.md "Item header") in front of the client's value,
 * under the flags WAN_ITEM_FLAGS_MARKER.  The one reader of `gets` replies (one item, or
 * the next of many) and the one writer of a storage command that puts an item back.
 *
 * No I/O and no decisions: callers send, receive and decide (apply.c, vop.c, remote.c,
 * snapshot.c).  Any thread; nothing shared.
 */
#ifndef GEOGATE_ITEM_H
#define GEOGATE_ITEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/types.h"
#include "wan/version.h"

struct evbuffer;
struct mc_reply;

/* An item as it now is in the local cache (borrowed pointers). */
struct gw_item {
    const char *key;
    uint32_t nkey;
    const struct wan_item_header *hdr;
    const uint8_t *value;
    size_t vlen;
    bool stale; /* shipped as a stale mark (meta md I): no value, hdr's version and expiry */
};

/* ---- reading ------------------------------------------------------------------------ */

/* One VALUE block of a `gets` reply, decoded; it borrows the reply's bytes. */
struct gw_item_view {
    const char *key;
    uint32_t nkey;
    bool versioned; /* it has a valid version header (else version 0) */
    bool found;     /* a live item: not a tombstone */
    bool has_cas;
    uint64_t cas;
    struct wan_item_header hdr; /* version 0 and the raw flags when not versioned */
    const uint8_t *val;         /* the client's value (NULL for a tombstone) */
    size_t len;
};

/* Decode the data of one VALUE block (mr its parsed line, data its dlen bytes without
 * CRLF) into view.  An item without our marker or with a header that does not check is
 * version 0, served as it is.  Cannot fail. */
void gw_item_view_decode(struct gw_item_view *view, const struct mc_reply *mr, const uint8_t *data,
                         size_t dlen);

/* What the next entry of a `gets` reply is. */
enum gw_gets_next {
    GW_GETS_ITEM = 0, /* a VALUE block: the view holds it */
    GW_GETS_END,      /* END: no more items */
    GW_GETS_ERROR,    /* anything else: an error line from the node, or not a gets reply */
    GW_GETS_NEXT_MAX
};

extern const char *const gw_gets_next_names[GW_GETS_NEXT_MAX];

/* A `gets` reply held whole in memory (as a backend capture is), read item by item.
 * memcached answers in the order the keys were asked, hits only, then END. */
struct gw_gets_reader {
    const char *p;
    size_t len;
    size_t pos; /* the start of the next entry */
};

/* Start reading reply (made contiguous, once; the reader borrows it until it is
 * drained or freed). */
void gw_gets_reader_init(struct gw_gets_reader *rd, struct evbuffer *reply);

/* The next entry: GW_GETS_ITEM with view filled in (borrowing the reply), GW_GETS_END,
 * or GW_GETS_ERROR, after which the reader stays where it is (gw_gets_reader_line tells
 * the line).  A VALUE line without a cas is an item with has_cas false. */
enum gw_gets_next gw_gets_next(struct gw_gets_reader *rd, struct gw_item_view *view);

/* The reader's current line without its CRLF (n bytes; at most what is left). */
const char *gw_gets_reader_line(const struct gw_gets_reader *rd, size_t *n);

/* Read the reply to a one-key `gets` (END, or one VALUE block then END): *present says
 * whether memcached holds the key (a tombstone counts), and then view has it, borrowing the
 * reply.  Returns 0, or -1 with the line to answer in err: the node's own error line, or
 * "SERVER_ERROR unexpected reply from node" (also for a VALUE without a cas). */
int gw_gets_one(struct evbuffer *reply, struct gw_item_view *view, bool *present, char *err,
                size_t errlen);

/* An item as a one-key `gets` showed it, with its value copied (owned). */
struct gw_cur {
    bool present;   /* memcached holds something (a tombstone counts) */
    bool found;     /* a live item: present and not a tombstone */
    bool versioned; /* it has a valid version header (else version 0) */
    uint64_t cas;
    struct wan_item_header hdr; /* version 0 and the raw flags when not versioned */
    uint8_t *val;               /* the client's value (owned; NULL when not found) */
    size_t len;
};

/* Parse a `gets` reply (END, or one VALUE block then END) into cur, freeing what cur
 * held.  Returns 0, or -1 with the line to answer (an error from the node, or
 * "SERVER_ERROR unexpected reply from node", or "SERVER_ERROR out of memory") in err. */
int gw_cur_parse(struct evbuffer *reply, struct gw_cur *cur, char *err, size_t errlen);
void gw_cur_release(struct gw_cur *cur);

/* ---- writing ------------------------------------------------------------------------ */

/* The storage commands an item is written with. */
enum gw_item_cmd {
    GW_ITEM_SET = 0,
    GW_ITEM_ADD, /* into nothing */
    GW_ITEM_CAS, /* over exactly what a gets read */
    GW_ITEM_CMD_MAX
};

extern const char *const gw_item_cmd_names[GW_ITEM_CMD_MAX];

#define GW_ITEM_INLINE_VALUE 2048 /* values up to this go out with their command line */
/* Room for a command line with an inline value. */
#define GW_ITEM_LINE_MAX (MC_KEY_MAX_LENGTH + 96 + WAN_ITEM_HEADER_SIZE + GW_ITEM_INLINE_VALUE + 2)

/*
 * Build the storage command that writes it (the key checked already: at most
 * MC_KEY_MAX_LENGTH; its value ignored for a tombstone): "<cmd> key MARKER exptime n[
 * cas]\r\n" in line (GW_ITEM_LINE_MAX bytes), and then the header, the value and CRLF:
 * after the line when the value is at most GW_ITEM_INLINE_VALUE (one piece, *data NULL),
 * else in a new *data the caller sends after the line and frees.  memcached's exptime is
 * the absolute expiry (it reads values past 30 days as unix times; 1 means already
 * expired), or tombstone_ttl_s for a tombstone.
 * Returns the length in line, or 0 when out of memory.
 */
size_t gw_item_write(char *line, enum gw_item_cmd cmd, uint64_t cas, const struct gw_item *it,
                     uint32_t tombstone_ttl_s, struct evbuffer **data);

#endif
