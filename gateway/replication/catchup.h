/*
 * catchup — the automatic catch-ups this site still owes itself, kept on disk so that a
 * restart of the gateway neither forgets one nor starts it over.  For every peer whose
 * spool announced records lost for us: how far the backfill from it got (the last resume
 * cursor whose items are all in the local pool, and the item count so far).
 *
 * It does not start or run backfills: repl.c decides when (a loss announced, the link up
 * after a start, a retry after a failed attempt) and backfill.c runs them and reports
 * progress here.  Any thread: one mutex; every change is on disk before the call returns.
 *
 * File <wan.spool.dir>/catchup (inside the spool directory, whose lock keeps a second
 * gateway away), text so that an operator can read it, rewritten atomically (catchup.tmp,
 * fsync, rename, fsync of the directory): a crash leaves the old or the new version.
 *
 *     geogate-catchup 1
 *     peer <site> gen <n> items <n> restarts <n> cursor <hex, or - for the start>
 *     crc <8 hex digits>        CRC32C of every byte before this line
 */
#ifndef GEOGATE_CATCHUP_H
#define GEOGATE_CATCHUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/transfer/backfill.h"

struct gw_catchup;

struct gw_catchup_entry {
    char peer[64];
    uint64_t gen;      /* bumped by every new loss: progress of an older walk is ignored */
    uint64_t items;    /* items brought so far; every one of them is in the local pool */
    uint64_t restarts; /* gateway restarts this catch-up has outlived */
    uint8_t cursor[GW_BACKFILL_CURSOR_MAX]; /* resume after it; empty: from the start */
    size_t cursor_len;
};

/* Load dir/catchup (no file: nothing owed).  Entries of sites not in peers are forgotten
 * (logged); every entry loaded counts one more restart.  Returns 0 or -ENOMEM; a damaged
 * file is logged and treated as empty (it is replaced on the next change). */
int gw_catchup_open(const char *dir, const char *const *peers, size_t npeers,
                    struct gw_catchup **out);
void gw_catchup_close(struct gw_catchup *c);

/* peer announced a new loss: the catch-up from it starts over from the beginning (a walk
 * already past some of the lost keys would miss them).  *e (may be NULL) gets the entry.
 * Returns 0, -EINVAL (a peer name the file cannot hold), -ENOMEM or the write's error
 * (logged; the entry is owed in memory all the same). */
int gw_catchup_owe(struct gw_catchup *c, const char *peer, struct gw_catchup_entry *e);

/* Whether a catch-up from peer is owed; *e (may be NULL) gets a copy. */
bool gw_catchup_pending(struct gw_catchup *c, const char *peer, struct gw_catchup_entry *e);

/* The walk started for gen got this far: every item up to cursor is in the local pool.
 * Ignored when gen is no longer the peer's (a newer loss restarted it).  Returns 0 or the
 * write's error (logged). */
int gw_catchup_progress(struct gw_catchup *c, const char *peer, uint64_t gen, const uint8_t *cursor,
                        size_t cursor_len, uint64_t items);

/* The walk started for gen is over (done, or cancelled by an operator): nothing is owed
 * from peer any more, unless a newer loss came meanwhile.  Returns 0 or the write's error
 * (logged). */
int gw_catchup_done(struct gw_catchup *c, const char *peer, uint64_t gen);

#endif
