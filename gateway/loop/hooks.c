/*
 * hooks — filling the table of worker hooks (see hooks.h).  Runs on the thread that wires
 * the server, before any worker starts; the workers run the hooks themselves.
 */
#include "gateway/loop/hooks.h"

#include <errno.h>

#include "gateway/base/log.h"

static const char *const hook_names[GW_HOOK_MAX] = {
    [GW_HOOK_PASS_END] = "pass_end",
    [GW_HOOK_BEFORE_WRITE] = "before_write",
    [GW_HOOK_DRAIN] = "drain",
    [GW_HOOK_REAP] = "reap",
    [GW_HOOK_STOP] = "stop",
};

int gw_hooks_add(struct gw_worker_hooks *h, enum gw_hook point, gw_hook_fn fn)
{
    if (h->non[point] == GW_HOOKS_PER_POINT) {
        log_error("worker hooks: no room for another %s hook", hook_names[point]);
        return -ENOSPC;
    }
    h->on[point][h->non[point]++] = fn;
    return 0;
}

int gw_hooks_add_tick(struct gw_worker_hooks *h, gw_hook_tick_fn fn)
{
    if (h->ntick == GW_HOOKS_PER_POINT) {
        log_error("worker hooks: no room for another tick hook");
        return -ENOSPC;
    }
    h->tick[h->ntick++] = fn;
    return 0;
}

int gw_hooks_add_start(struct gw_worker_hooks *h, gw_hook_start_fn start, gw_hook_fn undo)
{
    if (h->nstart == GW_HOOKS_PER_POINT) {
        log_error("worker hooks: no room for another start hook");
        return -ENOSPC;
    }
    h->start[h->nstart] = start;
    h->undo[h->nstart] = undo;
    h->nstart++;
    return 0;
}

void gw_hooks_set_accept(struct gw_worker_hooks *h, gw_hook_accept_fn fn)
{
    h->accept = fn;
}

void gw_hooks_set_reload(struct gw_worker_hooks *h, gw_hook_reload_fn fn)
{
    h->reload = fn;
}
