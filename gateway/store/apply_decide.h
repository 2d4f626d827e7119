/*
 * apply_decide — the newest-wins rules of applying what peers ship, as pure functions of
 * the incoming item and what a `gets` found locally: what header an incoming mutation is
 * written with, whether it is written over the local item, whether the local item travels
 * back, and whether a re-stamp still applies.  No I/O, no clock reads, no allocation: the
 * caller (apply.c) reads, writes and ships.  Any thread.
 */
#ifndef GEOGATE_APPLY_DECIDE_H
#define GEOGATE_APPLY_DECIDE_H

#include <stdbool.h>
#include <stdint.h>

#include "gateway/store/item.h"
#include "proto/geogate_wan.pb-c.h"
#include "wan/version.h"

/* What to do with an incoming item over the local one. */
enum gw_apply_verdict {
    GW_APPLY_WRITE = 0, /* write it: cas over what is there, add into nothing */
    GW_APPLY_KEEP,      /* the local item stays (rejected) */
    GW_APPLY_SEND_BACK, /* the local item stays (rejected) and is strictly newer: it travels
                           back, so the sender converges on it */
    GW_APPLY_VERDICT_MAX
};

extern const char *const gw_apply_verdict_names[GW_APPLY_VERDICT_MAX];

/* The header mutation m is written with: its version (a site_id of 0 stands for the
 * batch's origin, origin_site and origin_gateway), flags and expiry; an item whose expiry
 * has passed at now (unix seconds) is absent at its origin, so it is a tombstone here. */
void gw_apply_incoming(const Geogate__Wan__V1__Mutation *m, uint32_t origin_site,
                       uint16_t origin_gateway, uint32_t now, struct wan_item_header *nh);

/* Newest wins: incoming against local (NULL when the gets found nothing).  A local item
 * without our header is version 0 (every real version beats it), and never travels back.
 * A tombstone is a version like any other. */
enum gw_apply_verdict gw_apply_decide(const struct wan_version *incoming,
                                      const struct gw_item_view *local);

/* Re-stamping our own item of version old (docs/REPLICATION.md, "Clock skew"): GW_APPLY_WRITE
 * (the item again, with a fresh version) unless a later write replaced it here
 * (GW_APPLY_KEEP).  A later write is one of a version above restart_hlc, where our clock
 * restarted, other than old itself; an item written by a plain memcached client is theirs.
 * Absent, the same version, or older than the restart: the node lost the write (restarted
 * empty, evicted it) and maybe took a peer's older copy since, and the write was
 * acknowledged here, so it is put back. */
enum gw_apply_verdict gw_apply_restamp_decide(const struct wan_version *old,
                                              const struct gw_item_view *local,
                                              uint64_t restart_hlc);

#endif
