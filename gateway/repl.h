/*
 * repl — the gateway's side of replication: turning items written by local clients
 * into WAN mutations (per-prefix rules: copy, invalidate, none), handing them to the
 * spool and the shipper, and applying what peers ship.  Called from worker loops
 * (ship) and the WAN loop (apply).  The WAN protocol itself lives in wan/.
 */
#ifndef GEOGATE_REPL_H
#define GEOGATE_REPL_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/types.h"
#include "wan/version.h"

/* An item as it now is in the local cache (borrowed pointers). */
struct gw_item {
    const char *key;
    uint32_t nkey;
    const struct wan_item_header *hdr;
    const uint8_t *value;
    size_t vlen;
};

/* A local write succeeded: ship its result to every peer (per replication.rules). */
void gw_repl_ship(struct gw_worker *w, const struct gw_item *it);

#endif
