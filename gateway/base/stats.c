/*
 * stats — see stats.h.  Summing reads other threads' counters with relaxed atomic
 * loads: values may be a moment old, never torn.
 */
#include "gateway/base/stats.h"

#include <string.h>

void gw_stats_sum(struct gw_stats *out, struct gw_stats *const *each, int n)
{
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < n; i++) {
#define GW_STATS_SUM(name) out->name += __atomic_load_n(&each[i]->name, __ATOMIC_RELAXED);
        GW_STATS_COUNTERS(GW_STATS_SUM)
#undef GW_STATS_SUM
        out->curr_connections += __atomic_load_n(&each[i]->curr_connections, __ATOMIC_RELAXED);
    }
}
