/*
 * conn — see conn.h.
 *
 *   EV_READ (persistent) ──> read into `in` ──> owner's on_read
 *   owner queues output ──> gw_conn_want_flush ──> worker's flush list
 *   end of loop iteration ──> gw_conn_flush_all ──> one writev per socket
 *                                  └── EAGAIN: arm EV_WRITE until the kernel takes it
 */
#include "gateway/loop/conn.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "gateway/loop/hooks.h"
#include "gateway/types.h"

#define GW_READ_CHUNK 16384
#define GW_WRITE_IOV 64

/*
 * The request path's socket calls, made without libc's wrappers: read and writev are
 * cancellation points there, and each call pays to switch asynchronous cancellation
 * on and off around the syscall (about 1% of the gateway's CPU in the proxy
 * benchmark).  geogate never cancels its threads.
 */
static ssize_t gw_sys_read(int fd, void *buf, size_t len)
{
    return syscall(SYS_read, fd, buf, len);
}

static ssize_t gw_sys_readv(int fd, const struct iovec *iov, int n)
{
    return syscall(SYS_readv, fd, iov, n);
}

static ssize_t gw_sys_writev(int fd, const struct iovec *iov, int n)
{
    /* one piece, the usual reply to a client: write skips importing an iovec array */
    if (n == 1) {
        return syscall(SYS_write, fd, iov[0].iov_base, iov[0].iov_len);
    }
    return syscall(SYS_writev, fd, iov, n);
}

static void conn_fail(struct gw_conn *conn, bool eof)
{
    if (conn->failed) {
        return;
    }
    conn->failed = true;
    if (conn->reading) {
        event_del(&conn->rev);
        conn->reading = false;
    }
    conn->on_error(conn, conn->arg, eof);
}

/* The peer will send nothing more.  Its replies can still be written: a client that
 * shut down its write side waits for them (memcached answers it too). */
static void conn_eof(struct gw_conn *conn)
{
    if (conn->failed || conn->eof) {
        return;
    }
    conn->eof = true;
    if (conn->reading) {
        event_del(&conn->rev);
        conn->reading = false;
    }
    conn->on_error(conn, conn->arg, true);
}

/* Reads are edge-triggered: epoll reports a socket once per arrival, not at every
 * wait while bytes remain, which saves polling each ready socket a second time.  So a
 * read that filled its buffer, which may have left bytes behind, comes round again,
 * and so does one after the kernel reported the peer's FIN (EV_CLOSED, EPOLLRDHUP):
 * a FIN that arrives with the last bytes raises no edge of its own, and a short read
 * does not look for it, so without this a client that sends and closes at once would
 * never be seen to go.  A reset that arrives with the last bytes is not reported as
 * EV_CLOSED at all (libevent turns EPOLLHUP|EPOLLERR into plain EV_READ), so a read
 * that leaves an incomplete command behind comes round again too (conn_read_partial):
 * the second read finds EAGAIN, more bytes, or the reset. */
static void conn_read_more(struct gw_conn *conn)
{
    if (conn->reading) {
        event_active(&conn->rev, EV_READ, 1);
    }
}

/* After on_read: bytes the owner left in `in` are an incomplete command (or commands
 * held back while reading is paused, when this does nothing).  Only a second read
 * tells whether the peer is still there: nothing else will. */
static void conn_read_partial(struct gw_conn *conn)
{
    if (conn->in != NULL && evbuffer_get_length(conn->in) > 0) {
        conn_read_more(conn);
    }
}

static void conn_start_read(struct gw_conn *conn)
{
    event_add(&conn->rev, NULL);
    conn->reading = true;
}

static void conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_conn *conn = arg;
    struct evbuffer_iovec vec[2];
    struct iovec iov[2];
    int nvec;
    ssize_t n;

    if (what & EV_CLOSED) {
        conn->rdhup = true;
    }
    if (evbuffer_get_length(conn->in) == 0 && !conn->w->rbuf_busy) {
        /* The common case, a request or a reply that fits one read: read into the
         * worker's buffer, let on_data take the whole commands straight from there,
         * and copy only what is left over, instead of making the input buffer
         * allocate (and, once drained, free) a chain on every read.  rbuf_busy keeps
         * a read nested inside on_data off the bytes it is still reading. */
        struct gw_worker *w = conn->w;
        size_t used = 0;

        n = gw_sys_read(fd, w->rbuf, sizeof(w->rbuf));
        if (n > 0) {
            if ((size_t)n == sizeof(w->rbuf) || conn->rdhup) {
                conn_read_more(conn);
            }
            if (conn->bytes_in != NULL) {
                __atomic_store_n(conn->bytes_in, *conn->bytes_in + (uint64_t)n,
                                 __ATOMIC_RELAXED);
            }
            if (conn->on_data != NULL) {
                w->rbuf_busy = true;
                used = conn->on_data(conn, conn->arg, w->rbuf, (size_t)n);
                w->rbuf_busy = false;
                if (conn->in == NULL) {
                    return; /* closed under it */
                }
            }
            if (used < (size_t)n) {
                evbuffer_add(conn->in, w->rbuf + used, (size_t)n - used);
            }
            conn->on_read(conn, conn->arg);
            conn_read_partial(conn);
        } else if (n == 0) {
            conn_eof(conn);
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            conn_fail(conn, false);
        }
        return;
    }
    nvec = evbuffer_reserve_space(conn->in, GW_READ_CHUNK, vec, 2);
    if (nvec <= 0) {
        conn_fail(conn, false);
        return;
    }
    for (int i = 0; i < nvec; i++) {
        iov[i].iov_base = vec[i].iov_base;
        iov[i].iov_len = vec[i].iov_len;
    }
    n = gw_sys_readv(fd, iov, nvec);
    if (n > 0) {
        size_t left = (size_t)n;
        size_t room = 0;
        for (int i = 0; i < nvec; i++) {
            room += iov[i].iov_len;
        }
        if ((size_t)n == room || conn->rdhup) {
            conn_read_more(conn);
        }
        for (int i = 0; i < nvec; i++) {
            size_t take = left < vec[i].iov_len ? left : vec[i].iov_len;
            vec[i].iov_len = take;
            left -= take;
        }
        evbuffer_commit_space(conn->in, vec, nvec);
        if (conn->bytes_in != NULL) {
            __atomic_store_n(conn->bytes_in, *conn->bytes_in + (uint64_t)n, __ATOMIC_RELAXED);
        }
        conn->on_read(conn, conn->arg);
        conn_read_partial(conn);
        return;
    }
    evbuffer_commit_space(conn->in, vec, 0);
    if (n == 0) {
        conn_eof(conn);
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        conn_fail(conn, false);
    }
}

/* Write up to GW_WRITE_IOV chains of out in one writev and take what the kernel took. */
static ssize_t conn_write(struct gw_conn *conn, size_t left, size_t *offered)
{
    struct evbuffer_iovec vec[GW_WRITE_IOV];
    struct iovec iov[GW_WRITE_IOV];
    int n = evbuffer_peek(conn->out, (ev_ssize_t)left, NULL, vec, GW_WRITE_IOV);
    ssize_t done;

    if (n > GW_WRITE_IOV) {
        n = GW_WRITE_IOV;
    }
    *offered = 0;
    for (int i = 0; i < n; i++) {
        iov[i].iov_base = vec[i].iov_base;
        iov[i].iov_len = vec[i].iov_len;
        *offered += vec[i].iov_len;
    }
    done = gw_sys_writev(conn->fd, iov, n);
    if (done > 0) {
        evbuffer_drain(conn->out, (size_t)done);
    }
    return done;
}

static int conn_flush(struct gw_conn *conn);

static void conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_conn *conn = arg;
    int err = 0;
    socklen_t len = sizeof(err);

    (void)what;
    conn->wev_armed = false;
    if (conn->connecting) {
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1 || err != 0) {
            conn_fail(conn, false);
            return;
        }
        conn->connecting = false;
        if (conn->on_connected != NULL) {
            conn->on_connected(conn, conn->arg);
        }
        if (conn->failed) {
            return;
        }
    }
    /* a reply queued in this pass leaves only after what it depends on (the spool) */
    gw_hooks_run(conn->w->hooks, GW_HOOK_BEFORE_WRITE, conn->w);
    if (conn_flush(conn) != 0) {
        conn_fail(conn, false);
    }
}

static int conn_setup(struct gw_conn *conn, struct gw_worker *w, int fd, gw_conn_read_fn on_read,
                      gw_conn_error_fn on_error, void *arg)
{
    memset(conn, 0, sizeof(*conn));
    conn->fd = fd;
    conn->w = w;
    conn->on_read = on_read;
    conn->on_error = on_error;
    conn->arg = arg;
    conn->in = evbuffer_new();
    conn->out = evbuffer_new();
    if (conn->in == NULL || conn->out == NULL) {
        goto fail;
    }
    if (event_assign(&conn->rev, w->base, fd, EV_READ | EV_CLOSED | EV_PERSIST | EV_ET,
                     conn_read_cb, conn) != 0 ||
        event_assign(&conn->wev, w->base, fd, EV_WRITE | EV_ET, conn_write_cb, conn) != 0) {
        goto fail;
    }
    return 0;
fail:
    if (conn->in) {
        evbuffer_free(conn->in);
    }
    if (conn->out) {
        evbuffer_free(conn->out);
    }
    conn->in = conn->out = NULL;
    return -1;
}

int gw_conn_open(struct gw_conn *conn, struct gw_worker *w, int fd, gw_conn_read_fn on_read,
                 gw_conn_error_fn on_error, void *arg)
{
    int one = 1;

    if (conn_setup(conn, w, fd, on_read, on_error, arg) != 0) {
        return -1;
    }
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    conn_start_read(conn);
    return 0;
}

int gw_conn_connect(struct gw_conn *conn, struct gw_worker *w, const struct sockaddr *sa,
                    socklen_t salen, gw_conn_read_fn on_read, gw_conn_error_fn on_error,
                    gw_conn_event_fn on_connected, void *arg)
{
    int one = 1;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd == -1) {
        return -1;
    }
    if (conn_setup(conn, w, fd, on_read, on_error, arg) != 0) {
        close(fd);
        return -1;
    }
    conn->on_connected = on_connected;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    conn->connecting = true;
    conn_start_read(conn);
    if (connect(fd, sa, salen) == -1 && errno != EINPROGRESS) {
        /* Reported through on_error from the write event, never synchronously. */
        conn->connecting = true;
    }
    event_add(&conn->wev, NULL);
    conn->wev_armed = true;
    return 0;
}

void gw_conn_want_flush(struct gw_conn *conn)
{
    if (!conn->queued && !conn->failed && conn->fd >= 0) {
        conn->queued = true;
        TAILQ_INSERT_TAIL(&conn->w->flushq, conn, flush_link);
    }
}

/* Write what the kernel takes; returns what is left, or -1 when the socket failed. */
static ssize_t conn_write_out(struct gw_conn *conn)
{
    size_t left = evbuffer_get_length(conn->out);

    while (left > 0) {
        size_t offered;
        ssize_t n = conn_write(conn, left, &offered);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            }
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        if (conn->bytes_out != NULL) {
            __atomic_store_n(conn->bytes_out, *conn->bytes_out + (uint64_t)n, __ATOMIC_RELAXED);
        }
        left -= (size_t)n; /* conn_write drained what the kernel took */
        if ((size_t)n < offered) {
            break; /* the kernel took what it could; wait for EV_WRITE */
        }
    }
    return (ssize_t)left;
}

void gw_conn_write_now(struct gw_conn *conn)
{
    if (!conn->connecting && !conn->failed && conn->fd >= 0) {
        (void)conn_write_out(conn); /* a failure shows in the flush that follows */
    }
}

static int conn_flush(struct gw_conn *conn)
{
    ssize_t n;
    size_t left;

    if (conn->on_flush != NULL && !conn->failed) {
        conn->on_flush(conn, conn->arg);
    }
    if (conn->connecting || conn->failed || conn->fd < 0) {
        return 0;
    }
    if ((n = conn_write_out(conn)) < 0) {
        return -1;
    }
    left = (size_t)n;
    if (conn->out_limit > 0 && left > conn->out_limit) {
        conn->over_limit = true; /* a peer that does not read: the owner hangs up */
        return -1;
    }
    if (left > 0 && !conn->wev_armed) {
        event_add(&conn->wev, NULL);
        conn->wev_armed = true;
    }
    if (conn->notify_drain && left <= conn->drain_below) {
        conn->notify_drain = false;
        if (conn->on_drain != NULL) {
            conn->on_drain(conn, conn->arg);
        }
    }
    return 0;
}

void gw_conn_flush_all(struct gw_worker *w)
{
    struct gw_conn *conn;

    while ((conn = TAILQ_FIRST(&w->flushq)) != NULL) {
        TAILQ_REMOVE(&w->flushq, conn, flush_link);
        conn->queued = false;
        if (conn_flush(conn) != 0) {
            conn_fail(conn, false);
        }
    }
}

void gw_conn_poll_read(struct gw_conn *conn)
{
    if (conn->fd >= 0 && !conn->failed && !conn->eof && !conn->connecting) {
        conn_read_cb(conn->fd, EV_READ, conn);
    }
}

void gw_conn_pause_read(struct gw_conn *conn)
{
    if (conn->reading) {
        event_del(&conn->rev);
        conn->reading = false;
    }
}

void gw_conn_resume_read(struct gw_conn *conn)
{
    if (!conn->reading && !conn->failed && !conn->eof && conn->fd >= 0) {
        conn_start_read(conn);
        /* bytes that arrived while paused raised no new edge */
        conn_read_more(conn);
    }
}

void gw_conn_notify_drain(struct gw_conn *conn, size_t below)
{
    conn->notify_drain = true;
    conn->drain_below = below;
    if (evbuffer_get_length(conn->out) <= below) {
        gw_conn_want_flush(conn); /* the flush pass reports it */
    }
}

void gw_conn_close(struct gw_conn *conn)
{
    if (conn->fd < 0) {
        return;
    }
    if (conn->queued) {
        TAILQ_REMOVE(&conn->w->flushq, conn, flush_link);
        conn->queued = false;
    }
    event_del(&conn->rev);
    event_del(&conn->wev);
    conn->reading = false;
    conn->wev_armed = false;
    close(conn->fd);
    conn->fd = -1;
    conn->failed = true;
    evbuffer_free(conn->in);
    evbuffer_free(conn->out);
    conn->in = conn->out = NULL;
}
