/*
 * version — what makes "newest wins" work: the version of a cached item
 * (hybrid logical clock, origin site id, origin gateway id), the per-process hybrid
 * logical clock that hands versions out, and the 32-byte item header that carries a
 * version inside memcached in front of the client's value (docs/REPLICATION.md,
 * "Versions" and "Item header").
 *
 * Pure logic: no I/O, no allocation, no event loop.  Version and header functions are
 * reentrant; one struct wan_hlc is shared by every worker thread of a gateway and is safe
 * to call from all of them at once (a lock-free atomic).  It does not decide what to do
 * with a version (apply, reject, ship back) and does not know memcached's protocol.
 */
#ifndef GEOGATE_WAN_VERSION_H
#define GEOGATE_WAN_VERSION_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- versions ------------------------------------------------------------------------ */

/* (hlc, site_id, gateway_id), compared in that order, bigger wins.  All zero is version 0:
 * "written before geogate or by another tool", beaten by every real version. */
struct wan_version {
    uint64_t hlc;        /* 48-bit physical unix ms << 16 | 16-bit logical counter */
    uint32_t site_id;    /* wan_site_id(site name) of the origin */
    uint16_t gateway_id; /* the origin gateway's config gateway_id */
};

#define WAN_HLC_LOGICAL_BITS 16
#define WAN_HLC_PHYSICAL_MAX ((UINT64_C(1) << 48) - 1)

/* Physical milliseconds / logical counter of an hlc value. */
static inline uint64_t wan_hlc_physical_ms(uint64_t hlc)
{
    return hlc >> WAN_HLC_LOGICAL_BITS;
}

static inline uint16_t wan_hlc_logical(uint64_t hlc)
{
    return (uint16_t)(hlc & 0xffffu);
}

/* Total order on versions: returns -1 if a is older than b, 0 if equal, 1 if a is newer.
 * Ties on hlc are broken by site_id, then gateway_id, so two sites always agree. */
int wan_version_cmp(const struct wan_version *a, const struct wan_version *b);

/* True for version 0 (all fields zero). */
bool wan_version_is_zero(const struct wan_version *v);

/* The site id of a site name: 32-bit FNV-1a of its bytes (no NUL), identical on every
 * site without coordination.  NULL is treated as "".  Cannot fail. */
uint32_t wan_site_id(const char *name);

/* ---- hybrid logical clock ---------------------------------------------------------- */

/* Source of physical time in unix milliseconds.  Tests inject their own. */
typedef uint64_t (*wan_hlc_clock_fn)(void *arg);

/* One per gateway process, shared by all threads.  Initialise with wan_hlc_init() before
 * any other thread can see it; there is nothing to destroy. */
struct wan_hlc {
    _Atomic uint64_t last;  /* the last value handed out or observed */
    wan_hlc_clock_fn clock; /* NULL: CLOCK_REALTIME */
    void *clock_arg;
    uint64_t max_drift_ms; /* see wan_hlc_observe(); 0 = unbounded */
    /* what the bound did, for stats (any thread reads them with wan_hlc_stats()) */
    _Atomic uint64_t refused;     /* remote versions wan_hlc_observe() refused */
    _Atomic uint64_t max_lead_ms; /* the furthest a value handed out ran ahead of now_ms */
    _Atomic uint64_t resets;      /* times the physical clock was found stepped back past
                                     max_drift_ms, and the clock restarted from it */
    _Atomic uint64_t restart;     /* where this clock started (wan_hlc_init) or last
                                     restarted: see wan_hlc_restart() */
};

/* Set up a clock starting at 0.  clock may be NULL for the system's real-time clock.
 * max_drift_ms bounds how far ahead of our physical clock a remote version may drag us,
 * and how far this clock may stay ahead of a physical clock that stepped back (0: no
 * bound).  Cannot fail. */
void wan_hlc_init(struct wan_hlc *hlc, wan_hlc_clock_fn clock, void *clock_arg,
                  uint64_t max_drift_ms);

/* Send / local-event rule: a new hlc value, strictly greater than every value this clock
 * has returned or observed before, and at least now_ms << 16:
 *     hlc = max(last + 1, now_ms << 16)
 * Monotonic even when the physical clock steps backwards (the logical counter carries the
 * order until physical time catches up) -- unless max_drift_ms is set and the step is
 * larger than it: then `last` is forgotten and the clock restarts at now_ms << 16 (counted
 * in `resets`).  Every value handed out before such a step is more than max_drift_ms ahead
 * of the corrected clock, so peers refuse it anyway (docs/REPLICATION.md, "Clock skew"),
 * and keeping it would stamp every later write as far in the future.  Saturates at
 * UINT64_MAX (year 10889).  Any thread; lock-free. */
uint64_t wan_hlc_now(struct wan_hlc *hlc);

/* Receive rule, for every version applied or seen from another gateway:
 *     hlc = max(last + 1, remote + 1, now_ms << 16)
 * so this gateway's next local version is newer than anything it has applied.
 * Stores the new value in *out (may be NULL).
 * Returns 0, or -ERANGE when max_drift_ms is set and remote's physical time is more than
 * max_drift_ms ahead of our physical clock: the clock then only takes the send rule step
 * (a peer with a wildly wrong clock cannot drag every site into the future) and `refused`
 * counts it; the caller must then not apply the item (it would hold a version this clock
 * has not passed) and should log it. */
int wan_hlc_observe(struct wan_hlc *hlc, uint64_t remote, uint64_t *out);

/* Where this clock started (its physical clock at wan_hlc_init(), << 16) or last
 * restarted after a step back.  Every value it hands out from then on is above it, and
 * a value of ours above it that this clock did not hand out was stamped by a clock since
 * put right (an earlier process, or this one before the step): the shipper re-stamps
 * those (docs/REPLICATION.md, "Clock skew").  Any thread. */
uint64_t wan_hlc_restart(struct wan_hlc *hlc);

/* How many times the clock restarted after a step back (the `resets` of the stats; read
 * before wan_hlc_restart(), it tells whether that moved).  Any thread. */
uint64_t wan_hlc_resets(struct wan_hlc *hlc);

/* The last value handed out or observed, without advancing.  Any thread. */
uint64_t wan_hlc_peek(struct wan_hlc *hlc);

/* The physical clock this HLC reads (unix ms; the injected one in tests), clamped to 48
 * bits.  Any thread. */
uint64_t wan_hlc_clock_now_ms(struct wan_hlc *hlc);

/* How many milliseconds remote's physical part is ahead of now_ms (0 when it is not). */
static inline uint64_t wan_hlc_ahead_ms(uint64_t remote, uint64_t now_ms)
{
    uint64_t ms = wan_hlc_physical_ms(remote);

    return ms > now_ms ? ms - now_ms : 0;
}

/* True when max_drift_ms is set and remote is more than max_drift_ms ahead of now_ms:
 * what wan_hlc_observe() refuses.  Lets a caller refuse a whole batch before observing
 * any of it.  Pure. */
bool wan_hlc_beyond_bound(const struct wan_hlc *hlc, uint64_t remote, uint64_t now_ms);

/* A snapshot of the clock and of what its bound did. */
struct wan_hlc_stats {
    uint64_t last;        /* as wan_hlc_peek() */
    uint64_t now_ms;      /* the physical clock when the snapshot was taken */
    uint64_t refused;     /* remote versions refused by the bound */
    uint64_t max_lead_ms; /* the most a value handed out ran ahead of the physical clock */
    uint64_t resets;      /* restarts after the physical clock stepped back past the bound */
};

void wan_hlc_stats(struct wan_hlc *hlc, struct wan_hlc_stats *out);

/* ---- item header (a version inside memcached) ------------------------------------- */

#define WAN_ITEM_HEADER_SIZE 32
#define WAN_ITEM_FLAGS_MARKER 0x67670001u /* memcached flags of items that carry a header */
#define WAN_ITEM_MAGIC0 0x47              /* 'G' */
#define WAN_ITEM_MAGIC1 0x47              /* 'G' */
#define WAN_ITEM_FORMAT 1
#define WAN_ITEM_BIT_TOMBSTONE 0x01 /* the key is deleted; the item has no value */

/* The decoded header.  Layout on the wire (little-endian) is in docs/REPLICATION.md. */
struct wan_item_header {
    struct wan_version version;
    uint32_t client_flags; /* the flags the client set; memcached stores the marker */
    uint32_t expiry;       /* absolute unix seconds, 0 = never */
    bool tombstone;
};

/* Write the 32-byte header (magic, format 1, bits, fields, CRC32C of bytes 0..27) to out.
 * Cannot fail. */
void wan_item_header_encode(const struct wan_item_header *h, uint8_t out[WAN_ITEM_HEADER_SIZE]);

/* Decode the header at the start of buf (len bytes available: the whole item, or just its
 * first 32 bytes when the value streams).  On any error *out is left untouched and the
 * caller serves the item unchanged as version 0.
 * Returns 0, or
 *   -EMSGSIZE         len < 32
 *   -EPROTO           magic is not "GG"
 *   -EPROTONOSUPPORT  format byte is not 1
 *   -EBADMSG          CRC32C mismatch
 *   -EINVAL           CRC good but unknown bits or a non-zero reserved field (a writer bug
 *                     or a newer format that forgot to bump the format byte) */
int wan_item_header_decode(const void *buf, size_t len, struct wan_item_header *out);

/* Decode a whole item as memcached returned it: its flags field and its data block.
 * On 0, *value / *value_len point into data past the header (borrowed).
 * Returns 0, or
 *   -ENOENT   flags are not WAN_ITEM_FLAGS_MARKER: a plain item, serve it as version 0
 *   the errors of wan_item_header_decode()
 *   -EBADMSG  a tombstone that carries a value (a tombstone is exactly 32 bytes) */
int wan_item_decode(uint32_t mc_flags, const void *data, size_t len, struct wan_item_header *out,
                    const uint8_t **value, size_t *value_len);

#endif
