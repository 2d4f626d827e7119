/*
 * ctl_http — a blocking HTTP/1.0 client for geogate's admin listener: one request, no
 * request body, the answer read until the server closes (HTTP/1.0 without keep-alive),
 * every step bounded by one deadline.  No redirects, no chunked encoding, no TLS: the admin
 * listener sends none of them.  Caller's thread.
 */
#include "gateway/ctl/ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define CTL_HTTP_MAX_REPLY (16u << 20)

int ctl_fd_wait(int fd, short events, int64_t deadline)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int64_t left = deadline - ctl_mono_ms();
        int rc;

        if (left <= 0) {
            return -ETIMEDOUT;
        }
        rc = poll(&p, 1, (int)left);
        if (rc == -1 && errno == EINTR) {
            continue;
        }
        if (rc == -1) {
            return -EIO;
        }
        if (rc == 0) {
            return -ETIMEDOUT;
        }
        return 0;
    }
}

/* Connect to one address before the deadline.  Returns the fd or a negative errno. */
static int ctl_http_connect_one(const struct addrinfo *ai, int64_t deadline)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    int rc;

    if (fd == -1) {
        return -errno;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == -1) {
        if (errno != EINPROGRESS) {
            rc = -errno;
            close(fd);
            return rc;
        }
        rc = ctl_fd_wait(fd, POLLOUT, deadline);
        if (rc != 0) {
            close(fd);
            return rc;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == -1 || soerr != 0) {
            close(fd);
            return soerr != 0 ? -soerr : -EIO;
        }
    }
    return fd;
}

/* Tries every address getaddrinfo gives; the error is the last address's. */
int ctl_tcp_connect(const char *host, const char *port, int64_t deadline)
{
    struct addrinfo hints, *res = NULL;
    int fd = -EHOSTUNREACH;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &res) != 0 || res == NULL) {
        return -EHOSTUNREACH;
    }
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        fd = ctl_http_connect_one(ai, deadline);
        if (fd >= 0) {
            break;
        }
    }
    freeaddrinfo(res);
    return fd;
}

static int ctl_http_send_all(int fd, const char *p, size_t n, int64_t deadline)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w == -1 && (errno == EAGAIN || errno == EINTR)) {
            int rc = ctl_fd_wait(fd, POLLOUT, deadline);
            if (rc != 0) {
                return rc;
            }
            continue;
        }
        if (w == -1) {
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Read until EOF into a growing buffer.  Returns 0 or a negative errno. */
static int ctl_http_read_all(int fd, char **out, size_t *outlen, int64_t deadline)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap + 1);

    if (buf == NULL) {
        return -ENOMEM;
    }
    for (;;) {
        ssize_t r;
        if (len == cap) {
            char *nb;
            if (cap >= CTL_HTTP_MAX_REPLY) {
                free(buf);
                return -EPROTO;
            }
            nb = realloc(buf, cap * 2 + 1);
            if (nb == NULL) {
                free(buf);
                return -ENOMEM;
            }
            buf = nb;
            cap *= 2;
        }
        r = recv(fd, buf + len, cap - len, 0);
        if (r == -1 && (errno == EAGAIN || errno == EINTR)) {
            int rc = ctl_fd_wait(fd, POLLIN, deadline);
            if (rc != 0) {
                free(buf);
                return rc;
            }
            continue;
        }
        if (r == -1) {
            int rc = -errno;
            free(buf);
            return rc;
        }
        if (r == 0) {
            break;
        }
        len += (size_t)r;
    }
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    return 0;
}

/* Split raw into status and body.  Returns 0 or -EPROTO. */
static int ctl_http_parse(char *raw, size_t len, struct ctl_http_reply *out)
{
    char *hdr_end = strstr(raw, "\r\n\r\n");
    char *cl;
    size_t body_off;
    int status;

    if (strncmp(raw, "HTTP/1.", 7) != 0 || len < 12 || sscanf(raw + 8, " %3d", &status) != 1) {
        return -EPROTO;
    }
    if (hdr_end == NULL) {
        return -EPROTO;
    }
    body_off = (size_t)(hdr_end + 4 - raw);
    out->status = status;
    out->len = len - body_off;
    /* Trust Content-Length when present and shorter (nothing else should follow). */
    *hdr_end = '\0';
    cl = strcasestr(raw, "\r\nContent-Length:");
    if (cl != NULL) {
        unsigned long n = strtoul(cl + 17, NULL, 10);
        if (n < out->len) {
            out->len = n;
        }
    }
    memmove(raw, raw + body_off, out->len);
    raw[out->len] = '\0';
    out->body = raw;
    return 0;
}

int ctl_http(const char *host, const char *port, const char *method, const char *path,
             int timeout_ms, struct ctl_http_reply *out, char *err, size_t errlen)
{
    int64_t deadline = ctl_mono_ms() + timeout_ms;
    char req[2048];
    char *raw = NULL;
    size_t rawlen = 0;
    int fd, rc, n;

    memset(out, 0, sizeof(*out));
    n = snprintf(req, sizeof(req),
                 "%s %s HTTP/1.0\r\nHost: %s:%s\r\nUser-Agent: geogatectl\r\n"
                 "Content-Length: 0\r\n\r\n",
                 method, path, host, port);
    if (n < 0 || (size_t)n >= sizeof(req)) {
        snprintf(err, errlen, "request too long");
        return -EINVAL;
    }
    fd = ctl_tcp_connect(host, port, deadline);
    if (fd < 0) {
        if (fd == -EHOSTUNREACH) {
            snprintf(err, errlen, "cannot resolve or reach %s:%s", host, port);
        } else if (fd == -ECONNREFUSED) {
            snprintf(err, errlen,
                     "connection refused by %s:%s (is geogate running, with `admin: %s:%s` in "
                     "its config?)",
                     host, port, host, port);
        } else if (fd == -ETIMEDOUT) {
            snprintf(err, errlen, "no connection to %s:%s within %d ms", host, port, timeout_ms);
        } else {
            snprintf(err, errlen, "cannot connect to %s:%s: %s", host, port, strerror(-fd));
        }
        return fd == -ECONNREFUSED || fd == -ETIMEDOUT ? fd : -EHOSTUNREACH;
    }
    rc = ctl_http_send_all(fd, req, (size_t)n, deadline);
    if (rc == 0) {
        rc = ctl_http_read_all(fd, &raw, &rawlen, deadline);
    }
    close(fd);
    if (rc == -ETIMEDOUT) {
        snprintf(err, errlen, "no answer from %s:%s within %d ms", host, port, timeout_ms);
        return rc;
    }
    if (rc != 0) {
        snprintf(err, errlen, "talking to %s:%s: %s", host, port, strerror(-rc));
        return rc == -ENOMEM ? rc : -EIO;
    }
    if (ctl_http_parse(raw, rawlen, out) != 0) {
        snprintf(err, errlen, "%s:%s did not answer in HTTP (is that the admin port?)", host, port);
        free(raw);
        return -EPROTO;
    }
    return 0;
}

void ctl_http_reply_free(struct ctl_http_reply *r)
{
    free(r->body);
    r->body = NULL;
    r->len = 0;
}
