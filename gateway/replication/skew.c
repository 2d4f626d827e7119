/*
 * skew — see skew.h.
 */
#include "gateway/replication/skew.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "wan/le.h"
#include "wan/version.h"

uint64_t gw_skew_batch_ahead_ms(const Geogate__Wan__V1__ShipRequest *req, uint64_t now_ms)
{
    uint64_t newest = 0;

    for (size_t i = 0; i < req->n_mutations; i++) {
        if (req->mutations[i]->hlc > newest) {
            newest = req->mutations[i]->hlc;
        }
    }
    return wan_hlc_ahead_ms(newest, now_ms);
}

int64_t gw_skew_offset_ms(uint64_t peer_ms, uint64_t now_ms, uint32_t rtt_ms)
{
    return (int64_t)peer_ms - (int64_t)now_ms + (int64_t)(rtt_ms / 2);
}

/* One varint at data[*pos]; returns -EBADMSG when it runs past len or over 10 bytes. */
static int pb_varint(const uint8_t *data, size_t len, size_t *pos, uint64_t *out)
{
    uint64_t v = 0;

    for (unsigned shift = 0; shift < 70 && *pos < len; shift += 7) {
        uint8_t b = data[(*pos)++];
        v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *out = v;
            return 0;
        }
    }
    return -EBADMSG;
}

int gw_skew_mutation_hlc(const uint8_t *data, size_t len, uint64_t *hlc, uint32_t *site_id)
{
    size_t pos = 0;

    *hlc = 0;
    if (site_id != NULL) {
        *site_id = 0;
    }
    while (pos < len) {
        uint64_t tag, n;

        if (pb_varint(data, len, &pos, &tag) != 0) {
            return -EBADMSG;
        }
        switch (tag & 7) {
        case 0: /* varint */
            if (pb_varint(data, len, &pos, &n) != 0) {
                return -EBADMSG;
            }
            if (tag >> 3 == 7 && site_id != NULL) {
                *site_id = (uint32_t)n;
            }
            break;
        case 1: /* fixed64: the hlc is one */
            if (len - pos < 8) {
                return -EBADMSG;
            }
            if (tag >> 3 == 3) {
                *hlc = get64(data + pos);
            }
            pos += 8;
            break;
        case 2: /* length-delimited: key, value */
            if (pb_varint(data, len, &pos, &n) != 0 || n > len - pos) {
                return -EBADMSG;
            }
            pos += (size_t)n;
            break;
        case 5: /* fixed32 */
            if (len - pos < 4) {
                return -EBADMSG;
            }
            pos += 4;
            break;
        default:
            return -EBADMSG;
        }
    }
    return 0;
}

void gw_skew_describe(char *buf, size_t len, const char *site, uint64_t ahead_ms, uint32_t bound_ms,
                      bool offset_known, int64_t offset_ms)
{
    char off[48] = "";

    if (len == 0) {
        return;
    }
    if (offset_known) {
        uint64_t mag = offset_ms < 0 ? (uint64_t)(-(offset_ms + 1)) + 1 : (uint64_t)offset_ms;
        snprintf(off, sizeof(off), ", your clock %c%" PRIu64 ".%03" PRIu64 " s off",
                 offset_ms < 0 ? '-' : '+', mag / 1000, mag % 1000);
    }
    /* Short: a grpc-message is cut at 200 bytes. */
    snprintf(buf, len,
             "clock skew: versions %" PRIu64 ".%03" PRIu64 " s ahead of %s's clock "
             "(replication.max_clock_skew %" PRIu32 " ms)%s; batch left in your spool",
             ahead_ms / 1000, ahead_ms % 1000, site, bound_ms, off);
}

