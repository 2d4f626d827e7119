/*
 * apply_decide — see apply_decide.h.
 */
#include "gateway/store/apply_decide.h"

#include <string.h>

const char *const gw_apply_verdict_names[GW_APPLY_VERDICT_MAX] = {
    [GW_APPLY_WRITE] = "write",
    [GW_APPLY_KEEP] = "keep",
    [GW_APPLY_SEND_BACK] = "send back",
};

void gw_apply_incoming(const Geogate__Wan__V1__Mutation *m, uint32_t origin_site,
                       uint16_t origin_gateway, uint32_t now, struct wan_item_header *nh)
{
    memset(nh, 0, sizeof(*nh));
    nh->version.hlc = m->hlc;
    nh->version.site_id = m->site_id != 0 ? m->site_id : origin_site;
    nh->version.gateway_id = m->site_id != 0 ? (uint16_t)m->gateway_id : origin_gateway;
    nh->client_flags = m->flags;
    nh->expiry = m->expiry;
    nh->tombstone = m->tombstone;
    if (!m->tombstone && m->expiry != 0 && m->expiry <= now) {
        /* Expired at its origin: absent there, so absent here too. */
        nh->tombstone = true;
    }
}

enum gw_apply_verdict gw_apply_decide(const struct wan_version *incoming,
                                      const struct gw_item_view *local)
{
    static const struct wan_version zero = {0, 0, 0};
    int cmp;

    if (local == NULL) {
        return GW_APPLY_WRITE;
    }
    cmp = wan_version_cmp(incoming, local->versioned ? &local->hdr.version : &zero);
    if (cmp > 0) {
        return GW_APPLY_WRITE;
    }
    return cmp < 0 && local->versioned ? GW_APPLY_SEND_BACK : GW_APPLY_KEEP;
}

enum gw_apply_verdict gw_apply_restamp_decide(const struct wan_version *old,
                                              const struct gw_item_view *local,
                                              uint64_t restart_hlc)
{
    if (local == NULL) {
        return GW_APPLY_WRITE;
    }
    if (!local->versioned) {
        return GW_APPLY_KEEP; /* written by a plain memcached client: theirs */
    }
    if (wan_version_cmp(&local->hdr.version, old) != 0 && local->hdr.version.hlc > restart_hlc) {
        return GW_APPLY_KEEP;
    }
    return GW_APPLY_WRITE;
}
