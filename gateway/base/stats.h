/*
 * stats — the gateway's counters.  Each worker thread owns one struct gw_stats and is
 * the only writer of it (plain increments, no locks); `stats` sums every worker's
 * copy with relaxed loads.  Rendering follows memcached's "STAT name value\r\n".
 */
#ifndef GEOGATE_STATS_H
#define GEOGATE_STATS_H

#include <stdint.h>

/* X(name): one counter, named as memcached names its counter where one exists. */
#define GW_STATS_COUNTERS(X)                                                                 \
    X(total_connections)                                                                     \
    X(rejected_connections)                                                                  \
    X(cmd_get)                                                                               \
    X(get_hits)                                                                              \
    X(get_misses)                                                                            \
    X(get_errors)                                                                            \
    X(cmd_set)                                                                               \
    X(cmd_touch)                                                                             \
    X(touch_hits)                                                                            \
    X(touch_misses)                                                                          \
    X(cmd_flush)                                                                             \
    X(delete_hits)                                                                           \
    X(delete_misses)                                                                         \
    X(incr_hits)                                                                             \
    X(incr_misses)                                                                           \
    X(decr_hits)                                                                             \
    X(decr_misses)                                                                           \
    X(cas_hits)                                                                              \
    X(cas_misses)                                                                            \
    X(cas_badval)                                                                            \
    X(store_too_large)                                                                       \
    X(idle_kicks)                                                                            \
    X(output_limit_kicks)                                                                    \
    X(read_pauses)                                                                           \
    X(client_errors)                                                                         \
    X(server_errors)                                                                         \
    X(backend_requests)                                                                      \
    X(backend_gets_merged)                                                                   \
    X(backend_failures)                                                                      \
    X(backend_timeouts)                                                                      \
    X(repl_queued)                                                                           \
    X(bytes_read)                                                                            \
    X(bytes_written)

struct gw_stats {
#define GW_STATS_FIELD(name) uint64_t name;
    GW_STATS_COUNTERS(GW_STATS_FIELD)
#undef GW_STATS_FIELD
    int64_t curr_connections; /* gauge, may be updated by any thread: atomic */
};

#define STAT_INCR(st, field) __atomic_store_n(&(st)->field, (st)->field + 1, __ATOMIC_RELAXED)
#define STAT_ADD(st, field, n)                                                               \
    __atomic_store_n(&(st)->field, (st)->field + (n), __ATOMIC_RELAXED)

/* Sum n per-thread copies into out. */
void gw_stats_sum(struct gw_stats *out, struct gw_stats *const *each, int n);

#endif
