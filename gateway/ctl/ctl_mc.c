/*
 * ctl_mc — a tiny memcached ASCII client for the drill's load: single-key get and set on
 * one connection, each bounded by the timeout; any failure closes the connection and the
 * next call reconnects (a reply we did not wait for must never be read as the next one's).
 * No multi-get, no noreply, no pipelining.  The calling thread only (one ctl_mc per thread).
 */
#include "gateway/ctl/ctl.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void ctl_mc_init(struct ctl_mc *mc, const char *host, const char *port, int timeout_ms)
{
    memset(mc, 0, sizeof(*mc));
    mc->fd = -1;
    snprintf(mc->host, sizeof(mc->host), "%s", host);
    snprintf(mc->port, sizeof(mc->port), "%s", port);
    mc->timeout_ms = timeout_ms;
}

void ctl_mc_close(struct ctl_mc *mc)
{
    if (mc->fd >= 0) {
        close(mc->fd);
    }
    mc->fd = -1;
    mc->len = 0;
}

/* Close and remember why; returns rc. */
static int ctl_mc_fail(struct ctl_mc *mc, int rc, const char *what)
{
    snprintf(mc->last_error, sizeof(mc->last_error), "%s", what);
    ctl_mc_close(mc);
    return rc;
}

static int ctl_mc_connect(struct ctl_mc *mc, int64_t deadline)
{
    int one = 1;
    int fd;

    if (mc->fd >= 0) {
        return 0;
    }
    fd = ctl_tcp_connect(mc->host, mc->port, deadline);
    if (fd < 0) {
        char what[160];
        snprintf(what, sizeof(what), "connect %.64s:%.8s: %.60s", mc->host, mc->port,
                 strerror(-fd));
        return ctl_mc_fail(mc, fd, what);
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    mc->fd = fd;
    mc->len = 0;
    return 0;
}

static int ctl_mc_send(struct ctl_mc *mc, const char *p, size_t n, int64_t deadline)
{
    while (n > 0) {
        ssize_t w = send(mc->fd, p, n, MSG_NOSIGNAL);
        if (w == -1 && (errno == EAGAIN || errno == EINTR)) {
            if (ctl_fd_wait(mc->fd, POLLOUT, deadline) != 0) {
                return ctl_mc_fail(mc, -ETIMEDOUT, "send timed out");
            }
            continue;
        }
        if (w == -1) {
            return ctl_mc_fail(mc, -EIO, strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Make at least want bytes available in mc->buf.  Returns 0 or a negative error. */
static int ctl_mc_fill(struct ctl_mc *mc, size_t want, int64_t deadline)
{
    while (mc->len < want) {
        ssize_t r;
        if (mc->len == sizeof(mc->buf)) {
            return ctl_mc_fail(mc, -EPROTO, "reply too long");
        }
        r = recv(mc->fd, mc->buf + mc->len, sizeof(mc->buf) - mc->len, 0);
        if (r == -1 && (errno == EAGAIN || errno == EINTR)) {
            if (ctl_fd_wait(mc->fd, POLLIN, deadline) != 0) {
                return ctl_mc_fail(mc, -ETIMEDOUT, "reply timed out");
            }
            continue;
        }
        if (r == -1) {
            return ctl_mc_fail(mc, -EIO, strerror(errno));
        }
        if (r == 0) {
            return ctl_mc_fail(mc, -EIO, "connection closed by the server");
        }
        mc->len += (size_t)r;
    }
    return 0;
}

/* Read one line (without CRLF) into line.  Returns its length or a negative error. */
static int ctl_mc_line(struct ctl_mc *mc, char *line, size_t cap, int64_t deadline)
{
    for (;;) {
        char *nl = memchr(mc->buf, '\n', mc->len);
        if (nl != NULL) {
            size_t n = (size_t)(nl - mc->buf) + 1;
            size_t keep = n >= 2 && nl[-1] == '\r' ? n - 2 : n - 1;
            if (keep >= cap) {
                return ctl_mc_fail(mc, -EPROTO, "reply line too long");
            }
            memcpy(line, mc->buf, keep);
            line[keep] = '\0';
            memmove(mc->buf, mc->buf + n, mc->len - n);
            mc->len -= n;
            return (int)keep;
        }
        int rc = ctl_mc_fill(mc, mc->len + 1, deadline);
        if (rc != 0) {
            return rc;
        }
    }
}

/* An error line from the server ends the request with -EREMOTEIO (connection kept: the
 * server said so itself, the stream is still in step). */
static int ctl_mc_server_error(struct ctl_mc *mc, const char *line)
{
    snprintf(mc->last_error, sizeof(mc->last_error), "%.190s", line);
    return -EREMOTEIO;
}

int ctl_mc_get(struct ctl_mc *mc, const char *key)
{
    int64_t deadline = ctl_mono_ms() + mc->timeout_ms;
    char cmd[300], line[512];
    unsigned flags, bytes;
    int rc, n;

    rc = ctl_mc_connect(mc, deadline);
    if (rc != 0) {
        return rc;
    }
    n = snprintf(cmd, sizeof(cmd), "get %s\r\n", key);
    rc = ctl_mc_send(mc, cmd, (size_t)n, deadline);
    if (rc != 0) {
        return rc;
    }
    rc = ctl_mc_line(mc, line, sizeof(line), deadline);
    if (rc < 0) {
        return rc;
    }
    if (strcmp(line, "END") == 0) {
        return 0;
    }
    if (strncmp(line, "VALUE ", 6) != 0) {
        if (strncmp(line, "SERVER_ERROR", 12) == 0 || strncmp(line, "ERROR", 5) == 0 ||
            strncmp(line, "CLIENT_ERROR", 12) == 0) {
            return ctl_mc_server_error(mc, line);
        }
        return ctl_mc_fail(mc, -EPROTO, "unexpected reply to get");
    }
    if (sscanf(line + 6, "%*s %u %u", &flags, &bytes) != 2 || bytes > sizeof(mc->buf) - 16) {
        return ctl_mc_fail(mc, -EPROTO, "bad VALUE line (or a value too large for the drill)");
    }
    /* data + CRLF, then END CRLF */
    rc = ctl_mc_fill(mc, (size_t)bytes + 2, deadline);
    if (rc != 0) {
        return rc;
    }
    memmove(mc->buf, mc->buf + bytes + 2, mc->len - bytes - 2);
    mc->len -= bytes + 2;
    rc = ctl_mc_line(mc, line, sizeof(line), deadline);
    if (rc < 0) {
        return rc;
    }
    if (strcmp(line, "END") != 0) {
        return ctl_mc_fail(mc, -EPROTO, "no END after the value");
    }
    return 1;
}

int ctl_mc_set(struct ctl_mc *mc, const char *key, const char *value, int exptime)
{
    int64_t deadline = ctl_mono_ms() + mc->timeout_ms;
    char cmd[1024], line[512];
    size_t vlen = strlen(value);
    int rc, n;

    rc = ctl_mc_connect(mc, deadline);
    if (rc != 0) {
        return rc;
    }
    n = snprintf(cmd, sizeof(cmd), "set %s 0 %d %zu\r\n%s\r\n", key, exptime, vlen, value);
    if (n < 0 || (size_t)n >= sizeof(cmd)) {
        return -EINVAL;
    }
    rc = ctl_mc_send(mc, cmd, (size_t)n, deadline);
    if (rc != 0) {
        return rc;
    }
    rc = ctl_mc_line(mc, line, sizeof(line), deadline);
    if (rc < 0) {
        return rc;
    }
    if (strcmp(line, "STORED") == 0) {
        return 0;
    }
    if (strncmp(line, "SERVER_ERROR", 12) == 0 || strncmp(line, "ERROR", 5) == 0 ||
        strncmp(line, "CLIENT_ERROR", 12) == 0 || strcmp(line, "NOT_STORED") == 0) {
        return ctl_mc_server_error(mc, line);
    }
    return ctl_mc_fail(mc, -EPROTO, "unexpected reply to set");
}
