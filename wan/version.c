/*
 * version — version order, site ids, the hybrid logical clock and the 32-byte item header
 * codec (docs/REPLICATION.md "Versions", "Item header").  Pure logic, no I/O; the HLC is a
 * single atomic word updated with compare-and-swap, safe from every worker thread.  It
 * does not read or write memcached and does not decide conflicts beyond the order.
 */
#include "wan/version.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "wan/crc32c.h"
#include "wan/le.h"

int wan_version_cmp(const struct wan_version *a, const struct wan_version *b)
{
    if (a->hlc != b->hlc) {
        return a->hlc < b->hlc ? -1 : 1;
    }
    if (a->site_id != b->site_id) {
        return a->site_id < b->site_id ? -1 : 1;
    }
    if (a->gateway_id != b->gateway_id) {
        return a->gateway_id < b->gateway_id ? -1 : 1;
    }
    return 0;
}

bool wan_version_is_zero(const struct wan_version *v)
{
    return v->hlc == 0 && v->site_id == 0 && v->gateway_id == 0;
}

uint32_t wan_site_id(const char *name)
{
    uint32_t h = 2166136261u;

    if (name == NULL) {
        return h;
    }
    for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++) {
        h ^= *p;
        h *= 16777619u;
    }
    return h;
}

/* ---- hybrid logical clock ---------------------------------------------------------- */

static uint64_t hlc_real_clock(void *arg)
{
    struct timespec ts;

    (void)arg;
    if (clock_gettime(CLOCK_REALTIME, &ts) == -1) {
        return 0;
    }
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t hlc_clock_ms(struct wan_hlc *hlc)
{
    uint64_t ms = hlc->clock != NULL ? hlc->clock(hlc->clock_arg) : hlc_real_clock(NULL);

    return ms > WAN_HLC_PHYSICAL_MAX ? WAN_HLC_PHYSICAL_MAX : ms;
}

static uint64_t add1_sat(uint64_t v)
{
    return v == UINT64_MAX ? v : v + 1;
}

static uint64_t max3(uint64_t a, uint64_t b, uint64_t c)
{
    uint64_t m = a > b ? a : b;
    return m > c ? m : c;
}

void wan_hlc_init(struct wan_hlc *hlc, wan_hlc_clock_fn clock, void *clock_arg,
                  uint64_t max_drift_ms)
{
    atomic_init(&hlc->last, 0);
    hlc->clock = clock;
    hlc->clock_arg = clock_arg;
    hlc->max_drift_ms = max_drift_ms;
    atomic_init(&hlc->refused, 0);
    atomic_init(&hlc->max_lead_ms, 0);
    atomic_init(&hlc->resets, 0);
    atomic_init(&hlc->restart, hlc_clock_ms(hlc) << WAN_HLC_LOGICAL_BITS);
}

bool wan_hlc_beyond_bound(const struct wan_hlc *hlc, uint64_t remote, uint64_t now_ms)
{
    return hlc->max_drift_ms != 0 && wan_hlc_ahead_ms(remote, now_ms) > hlc->max_drift_ms;
}

/* Keep the largest lead seen: rare (only when the logical counter or an observed version
 * carries the clock past the millisecond), so the common path pays one comparison. */
static void hlc_note_lead(struct wan_hlc *hlc, uint64_t next, uint64_t now_ms)
{
    uint64_t lead = wan_hlc_ahead_ms(next, now_ms);
    uint64_t seen;

    if (lead == 0) {
        return;
    }
    seen = atomic_load_explicit(&hlc->max_lead_ms, memory_order_relaxed);
    while (lead > seen &&
           !atomic_compare_exchange_weak_explicit(&hlc->max_lead_ms, &seen, lead,
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

/* One CAS loop for both rules: floor is 0 for the send rule, remote + 1 for receive;
 * now_ms is the physical clock, read once by the caller.  A last value beyond the bound can
 * only come from a physical clock that stepped back (the receive rule never lets one in),
 * and is dropped: see wan_hlc_now() in version.h. */
static uint64_t hlc_advance(struct wan_hlc *hlc, uint64_t floor, uint64_t now_ms)
{
    uint64_t phys = now_ms << WAN_HLC_LOGICAL_BITS;
    uint64_t old = atomic_load_explicit(&hlc->last, memory_order_relaxed);
    uint64_t next;
    bool reset;

    do {
        reset = wan_hlc_beyond_bound(hlc, old, now_ms);
        if (reset) {
            /* Another thread may have stored `old` after our clock read, within the bound
             * of its own later read: only a fresh read tells a step back from that. */
            now_ms = hlc_clock_ms(hlc);
            phys = now_ms << WAN_HLC_LOGICAL_BITS;
            reset = wan_hlc_beyond_bound(hlc, old, now_ms);
        }
        next = max3(reset ? 0 : add1_sat(old), floor, phys);
    } while (!atomic_compare_exchange_weak_explicit(&hlc->last, &old, next, memory_order_acq_rel,
                                                    memory_order_relaxed));
    if (reset) {
        uint64_t seen = atomic_load_explicit(&hlc->restart, memory_order_relaxed);
        while (next - 1 > seen &&
               !atomic_compare_exchange_weak_explicit(&hlc->restart, &seen, next - 1,
                                                      memory_order_release,
                                                      memory_order_relaxed)) {
        }
        atomic_fetch_add_explicit(&hlc->resets, 1, memory_order_release);
    }
    hlc_note_lead(hlc, next, now_ms);
    return next;
}

uint64_t wan_hlc_now(struct wan_hlc *hlc)
{
    return hlc_advance(hlc, 0, hlc_clock_ms(hlc));
}

int wan_hlc_observe(struct wan_hlc *hlc, uint64_t remote, uint64_t *out)
{
    uint64_t now_ms = hlc_clock_ms(hlc);
    uint64_t v;

    if (wan_hlc_beyond_bound(hlc, remote, now_ms)) {
        atomic_fetch_add_explicit(&hlc->refused, 1, memory_order_relaxed);
        v = hlc_advance(hlc, 0, now_ms);
        if (out != NULL) {
            *out = v;
        }
        return -ERANGE;
    }
    v = hlc_advance(hlc, add1_sat(remote), now_ms);
    if (out != NULL) {
        *out = v;
    }
    return 0;
}

uint64_t wan_hlc_restart(struct wan_hlc *hlc)
{
    return atomic_load_explicit(&hlc->restart, memory_order_acquire);
}

uint64_t wan_hlc_resets(struct wan_hlc *hlc)
{
    return atomic_load_explicit(&hlc->resets, memory_order_acquire);
}

uint64_t wan_hlc_peek(struct wan_hlc *hlc)
{
    return atomic_load_explicit(&hlc->last, memory_order_acquire);
}

uint64_t wan_hlc_clock_now_ms(struct wan_hlc *hlc)
{
    return hlc_clock_ms(hlc);
}

void wan_hlc_stats(struct wan_hlc *hlc, struct wan_hlc_stats *out)
{
    out->last = wan_hlc_peek(hlc);
    out->now_ms = hlc_clock_ms(hlc);
    out->refused = atomic_load_explicit(&hlc->refused, memory_order_relaxed);
    out->max_lead_ms = atomic_load_explicit(&hlc->max_lead_ms, memory_order_relaxed);
    out->resets = atomic_load_explicit(&hlc->resets, memory_order_relaxed);
}

/* ---- item header ------------------------------------------------------------------- */

void wan_item_header_encode(const struct wan_item_header *h, uint8_t out[WAN_ITEM_HEADER_SIZE])
{
    out[0] = WAN_ITEM_MAGIC0;
    out[1] = WAN_ITEM_MAGIC1;
    out[2] = WAN_ITEM_FORMAT;
    out[3] = h->tombstone ? WAN_ITEM_BIT_TOMBSTONE : 0;
    put32(out + 4, h->client_flags);
    put64(out + 8, h->version.hlc);
    put32(out + 16, h->version.site_id);
    put16(out + 20, h->version.gateway_id);
    put16(out + 22, 0);
    put32(out + 24, h->expiry);
    put32(out + 28, wan_crc32c(0, out, 28));
}

int wan_item_header_decode(const void *buf, size_t len, struct wan_item_header *out)
{
    const uint8_t *p = buf;

    if (p == NULL || len < WAN_ITEM_HEADER_SIZE) {
        return -EMSGSIZE;
    }
    if (p[0] != WAN_ITEM_MAGIC0 || p[1] != WAN_ITEM_MAGIC1) {
        return -EPROTO;
    }
    if (p[2] != WAN_ITEM_FORMAT) {
        return -EPROTONOSUPPORT;
    }
    if (get32(p + 28) != wan_crc32c(0, p, 28)) {
        return -EBADMSG;
    }
    if ((p[3] & ~WAN_ITEM_BIT_TOMBSTONE) != 0 || get16(p + 22) != 0) {
        return -EINVAL;
    }
    out->tombstone = (p[3] & WAN_ITEM_BIT_TOMBSTONE) != 0;
    out->client_flags = get32(p + 4);
    out->version.hlc = get64(p + 8);
    out->version.site_id = get32(p + 16);
    out->version.gateway_id = get16(p + 20);
    out->expiry = get32(p + 24);
    return 0;
}

int wan_item_decode(uint32_t mc_flags, const void *data, size_t len, struct wan_item_header *out,
                    const uint8_t **value, size_t *value_len)
{
    struct wan_item_header h;
    int rc;

    if (mc_flags != WAN_ITEM_FLAGS_MARKER) {
        return -ENOENT;
    }
    rc = wan_item_header_decode(data, len, &h);
    if (rc != 0) {
        return rc;
    }
    if (h.tombstone && len != WAN_ITEM_HEADER_SIZE) {
        return -EBADMSG;
    }
    *out = h;
    *value = (const uint8_t *)data + WAN_ITEM_HEADER_SIZE;
    *value_len = len - WAN_ITEM_HEADER_SIZE;
    return 0;
}
