/*
 * worker — see worker.h.  Messages from other threads arrive as fixed-size records
 * on a pipe (atomic writes below PIPE_BUF), so the loop needs no locks:
 *
 *   main thread ──GW_MSG_CONN fd──────> the accept hook adopts a client
 *               ──GW_MSG_RELOAD pool──> the reload hook swaps pools
 *               ──GW_MSG_DRAIN────────> drain hooks; exit once no client is left
 *
 * What runs at each point is registered by the layers above (hooks.h); the worker itself
 * knows no client, node or spool.
 */
#include "gateway/loop/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "gateway/base/clock.h"
#include "gateway/loop/conn.h"
#include "gateway/loop/hooks.h"
#include "gateway/routing/pool.h"
#include "gateway/server.h"

#define GW_TICK_MS 50
#define GW_TRIM_MS 2000
#define GW_CALL_CHECK_MS 100 /* gw_worker_call looks this often whether the worker stopped */

struct gw_call {
    int (*fn)(void *arg);
    void *arg;
    int rc;
    sem_t done;
};

static void worker_drain(struct gw_worker *w)
{
    w->draining = true;
    gw_hooks_run(w->hooks, GW_HOOK_DRAIN, w);
    if (w->nclients == 0) {
        event_base_loopexit(w->base, NULL);
    }
}

static void notify_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_worker *w = arg;
    struct gw_msg msgs[64];
    ssize_t n;

    (void)what;
    n = read(fd, msgs, sizeof(msgs));
    if (n <= 0) {
        return;
    }
    for (size_t i = 0; i < (size_t)n / sizeof(msgs[0]); i++) {
        switch (msgs[i].type) {
        case GW_MSG_CONN:
            if (w->hooks->accept != NULL) {
                w->hooks->accept(w, msgs[i].fd);
            } else {
                close(msgs[i].fd);
            }
            break;
        case GW_MSG_RELOAD:
            if (w->hooks->reload != NULL) {
                w->hooks->reload(w, msgs[i].pool);
            }
            break;
        case GW_MSG_DRAIN:
            worker_drain(w);
            break;
        case GW_MSG_STOP:
            event_base_loopbreak(w->base);
            break;
        case GW_MSG_CALL:
            msgs[i].call->rc = msgs[i].call->fn(msgs[i].call->arg);
            sem_post(&msgs[i].call->done);
            break;
        default:
            break;
        }
    }
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_worker *w = arg;
    int64_t now = gw_mono_ms();

    (void)fd;
    (void)what;
    w->now_ms = now;
    for (uint8_t i = 0; i < w->hooks->ntick; i++) {
        w->hooks->tick[i](w, now);
    }
    if (w->id == 0 && now - w->trim_ms >= GW_TRIM_MS) {
        /* Give freed memory back to the system: after a burst of large values, malloc
         * keeps the free pages in its arenas (between live blocks, where its own
         * trimming at the top of the heap does not reach). */
        w->trim_ms = now;
        malloc_trim(0);
    }
    if (w->draining && w->nclients == 0) {
        event_base_loopexit(w->base, NULL);
    }
}

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_worker *w = arg;

    (void)fd;
    (void)what;
    gw_hooks_run(w->hooks, GW_HOOK_REAP, w);
    if (w->draining && w->nclients == 0) {
        event_base_loopexit(w->base, NULL);
    }
}

struct gw_backend *gw_worker_backend(struct gw_worker *w, uint32_t node)
{
    uint32_t conns = w->pool->connections;

    if (conns == 1) {
        return w->backends[node];
    }
    return w->backends[node * conns + (w->rr++ % conns)];
}

/* One pass of the loop runs every ready callback; then the pass-end hooks (the spool is
 * appended and synced before any reply it covers leaves); then everything they queued
 * for any socket is written, one writev per socket.  That is where requests from many
 * clients to one node get batched into one write. */
static void *worker_main(void *arg)
{
    struct gw_worker *w = arg;

    while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
        if (event_base_loop(w->base, EVLOOP_ONCE) != 0) {
            break;
        }
        gw_hooks_run(w->hooks, GW_HOOK_PASS_END, w);
        gw_conn_flush_all(w);
        if (event_base_got_exit(w->base) || event_base_got_break(w->base)) {
            break;
        }
    }
    gw_hooks_run(w->hooks, GW_HOOK_PASS_END, w);
    gw_conn_flush_all(w);
    __atomic_store_n(&w->exited, true, __ATOMIC_RELEASE);
    return NULL;
}

int gw_worker_call(struct gw_worker *w, int (*fn)(void *arg), void *arg)
{
    struct gw_call call;
    struct gw_msg msg = {.type = GW_MSG_CALL, .call = &call};
    int rc;

    call.fn = fn;
    call.arg = arg;
    call.rc = -EIO;
    sem_init(&call.done, 0, 0);
    if (gw_worker_send(w, &msg) != 0) {
        sem_destroy(&call.done);
        return -EIO;
    }
    for (;;) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += GW_CALL_CHECK_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        if (sem_timedwait(&call.done, &ts) == 0) {
            break;
        }
        /* A worker that has stopped (a drain) reads no more messages: waiting on would
         * hang the caller, and the shutdown that joins it.  Whatever it ran before it
         * stopped has posted already; the message left in the pipe is never read. */
        if (errno == ETIMEDOUT && __atomic_load_n(&w->exited, __ATOMIC_ACQUIRE) &&
            sem_trywait(&call.done) != 0) {
            sem_destroy(&call.done);
            return -EIO;
        }
    }
    rc = call.rc;
    sem_destroy(&call.done);
    return rc;
}

int gw_worker_start(struct gw_worker *w, struct gw_server *srv, int id,
                    const struct gw_worker_hooks *hooks)
{
    struct timeval tick = {0, GW_TICK_MS * 1000};
    uint8_t started;

    w->id = id;
    w->srv = srv;
    w->hooks = hooks;
    TAILQ_INIT(&w->clients);
    pthread_mutex_init(&w->clients_lock, NULL);
    TAILQ_INIT(&w->dead);
    TAILQ_INIT(&w->retired);
    TAILQ_INIT(&w->flushq);
    TAILQ_INIT(&w->sync_wait);
    w->now_ms = gw_mono_ms(); /* the tick keeps it; clients may come before the first one */
    {
        struct event_config *ec = event_config_new();
        if (ec != NULL) {
            if (id < srv->nworkers) {
                /* A client worker's base is touched by its own thread only (others
                 * reach it through notify_fd), so it needs no lock. */
                event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
            }
            w->base = event_base_new_with_config(ec);
            event_config_free(ec);
        }
    }
    if (w->base == NULL) {
        goto fail_base;
    }
    if (pipe2(w->notify_fd, O_CLOEXEC) == -1) {
        goto fail_pipe;
    }
    w->notify_ev = event_new(w->base, w->notify_fd[0], EV_READ | EV_PERSIST, notify_cb, w);
    w->tick_ev = event_new(w->base, -1, EV_PERSIST, tick_cb, w);
    w->reap_ev = event_new(w->base, -1, 0, reap_cb, w);
    if (w->notify_ev == NULL || w->tick_ev == NULL || w->reap_ev == NULL) {
        goto fail_events;
    }
    for (started = 0; started < hooks->nstart; started++) {
        if (hooks->start[started](w) != 0) {
            goto fail_hooks;
        }
    }
    event_add(w->notify_ev, NULL);
    event_add(w->tick_ev, &tick);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        goto fail_thread;
    }
    return 0;

fail_thread:
fail_hooks:
    while (started-- > 0) {
        if (hooks->undo[started] != NULL) {
            hooks->undo[started](w);
        }
    }
fail_events:
    if (w->notify_ev) {
        event_free(w->notify_ev);
    }
    if (w->tick_ev) {
        event_free(w->tick_ev);
    }
    if (w->reap_ev) {
        event_free(w->reap_ev);
    }
    close(w->notify_fd[0]);
    close(w->notify_fd[1]);
fail_pipe:
    event_base_free(w->base);
fail_base:
    return -1;
}

int gw_worker_send(struct gw_worker *w, const struct gw_msg *msg)
{
    ssize_t n;

    do {
        n = write(w->notify_fd[1], msg, sizeof(*msg));
    } while (n == -1 && errno == EINTR);
    return n == (ssize_t)sizeof(*msg) ? 0 : -1;
}

void gw_worker_join(struct gw_worker *w)
{
    if (!w->joined) {
        pthread_join(w->thread, NULL);
        w->joined = true;
    }
    gw_hooks_run(w->hooks, GW_HOOK_STOP, w);
    event_free(w->notify_ev);
    event_free(w->tick_ev);
    event_free(w->reap_ev);
    close(w->notify_fd[0]);
    close(w->notify_fd[1]);
    free(w->scratch);
    free(w->out);
    event_base_free(w->base);
}
