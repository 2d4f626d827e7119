/*
 * skew — the pure decisions behind the bound on clock skew between sites
 * (docs/REPLICATION.md, "Clock skew"): how far a batch's versions run ahead of our clock,
 * a peer's clock offset from a timestamp it sent, the version of a spooled (packed)
 * Mutation without unpacking it, the status message that names a skew, and a gate that
 * lets a line be logged once per interval instead of once per batch.
 *
 * No I/O, no allocation, no state of its own: repl.c keeps the per-peer state and does the
 * refusing, on the WAN thread.  Reentrant; any thread.
 */
#ifndef GEOGATE_SKEW_H
#define GEOGATE_SKEW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/geogate_wan.pb-c.h"

/* How many milliseconds the newest version (hlc) of req's mutations is ahead of now_ms;
 * 0 when none is ahead (or there are none).  Flushes count: they carry an hlc too. */
uint64_t gw_skew_batch_ahead_ms(const Geogate__Wan__V1__ShipRequest *req, uint64_t now_ms);

/* A peer's clock minus ours, in ms, from peer_ms (its wall clock when it sent a message)
 * read at our now_ms: the message took about half a round trip (rtt_ms, 0 when unknown)
 * to arrive.  Only as good as that guess: off by the difference between the two ways,
 * at most rtt/2, and always on the side of "behind" when the message waited in a queue. */
int64_t gw_skew_offset_ms(uint64_t peer_ms, uint64_t now_ms, uint32_t rtt_ms);

/* The hlc (field 3) and, when site_id is not NULL, the version's site (field 7: 0 for
 * the batch's origin, i.e. a write made here) of a packed geogate.wan.v1.Mutation, read
 * without unpacking it: the shipper looks at every spooled record, so this must cost a
 * few varints, not an allocation.  Absent fields read as 0.  Returns 0, or -EBADMSG when
 * data is not a well-formed protobuf message (truncated varint or field, unknown wire
 * type). */
int gw_skew_mutation_hlc(const uint8_t *data, size_t len, uint64_t *hlc, uint32_t *site_id);

/* The gRPC status message for a refused batch: what site refused it, how far ahead its
 * newest version was, the bound, and the sender's measured offset when known.  Always
 * NUL-terminated (truncated to len). */
void gw_skew_describe(char *buf, size_t len, const char *site, uint64_t ahead_ms, uint32_t bound_ms,
                      bool offset_known, int64_t offset_ms);


#endif
