/*
 * repl — see repl.h.
 */
#include "gateway/repl.h"

#include <string.h>

#include "gateway/config.h"
#include "gateway/server.h"

/* The first rule whose prefix starts the key decides; the loader guarantees a "" rule. */
static enum gw_repl_mode rule_for(const struct gw_config *cfg, const char *key, uint32_t nkey)
{
    for (size_t i = 0; i < cfg->replication.nrules; i++) {
        const struct gw_rule_conf *rule = &cfg->replication.rules[i];
        size_t n = strlen(rule->prefix);
        if (n <= nkey && memcmp(rule->prefix, key, n) == 0) {
            return rule->mode;
        }
    }
    return GW_REPL_COPY;
}

void gw_repl_ship(struct gw_worker *w, const struct gw_item *it)
{
    enum gw_repl_mode mode = rule_for(w->srv->cfg, it->key, it->nkey);

    if (mode == GW_REPL_NONE || w->srv->cfg->wan.npeers == 0) {
        return;
    }
    STAT_INCR(&w->stats, repl_queued);
}
