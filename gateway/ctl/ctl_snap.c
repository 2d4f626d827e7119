/*
 * ctl_snap — `geogatectl snapshot --out FILE` and `geogatectl restore --in FILE`: the
 * snapshot file (docs/SNAPSHOTS.md) streamed from GET /snapshot into FILE, and FILE
 * streamed as the body of POST /restore.  Blocking sockets, one request each, caller's
 * thread.
 *
 * A snapshot goes to FILE.partial first and is checked (header, every record's CRC32C,
 * the end record's count) before it is renamed to FILE, so a FILE that exists is whole.
 * The restore is judged by the gateway (it reports the first bad record's offset); this
 * side only sends the file and prints the answer.  geogatectl links nothing of the
 * daemon, hence its own CRC32C and its own reading of the format here.
 */
#include "gateway/ctl/ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SNAP_IDLE_MS (10 * 60 * 1000)         /* a transfer may make no progress this long */
#define SNAP_RESTORE_WAIT_MS (60 * 60 * 1000) /* the gateway may apply this long */
#define SNAP_CONTINUE_WAIT_MS 2000            /* how long to wait for "100 Continue" */
#define SNAP_HEAD_MAX (16u << 10)
#define SNAP_IO (256u << 10)
#define SNAP_FORMAT 1
#define SNAP_HEADER_FIXED 24
#define SNAP_END_MARK 0xFFFFFFFFu
#define SNAP_RECORD_MAX (64u << 20)

/* ---- CRC-32C (Castagnoli, reflected 0x82F63B78), as wan/crc32c.c computes it ---- */

static uint32_t snap_crc_table[256];

static void snap_crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        }
        snap_crc_table[i] = c;
    }
}

static uint32_t snap_crc(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    while (n-- > 0) {
        crc = snap_crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    }
    return ~crc;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* ---- checking a snapshot file ---- */

struct snap_info {
    unsigned format;
    char site[256];
    uint64_t created;
    uint64_t records, tombstones, bytes;
};

/* Read exactly n bytes; returns n, or fewer at the end of the file. */
static size_t snap_fread(FILE *f, uint8_t *buf, size_t n)
{
    return fread(buf, 1, n, f);
}

/* Check the whole file.  Returns 0, or -1 with what is wrong and where in err. */
static int snap_verify(const char *path, struct snap_info *info, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    uint8_t head[SNAP_HEADER_FIXED + 255 + 4], rh[8];
    uint8_t *buf = NULL;
    size_t cap = 0, n;
    uint64_t off;
    int rc = -1;

    memset(info, 0, sizeof(*info));
    if (f == NULL) {
        snprintf(err, errlen, "cannot read %.300s: %s", path, strerror(errno));
        return -1;
    }
    n = snap_fread(f, head, SNAP_HEADER_FIXED);
    if (n < 8 || memcmp(head, "GGSNAP", 6) != 0) {
        snprintf(err, errlen, "not a geogate snapshot (no GGSNAP header)");
        goto done;
    }
    info->format = (unsigned)(head[6] | head[7] << 8);
    if (info->format != SNAP_FORMAT) {
        snprintf(err, errlen, "snapshot format version %u (this geogatectl reads %d)", info->format,
                 SNAP_FORMAT);
        goto done;
    }
    size_t sl = (size_t)(head[22] | head[23] << 8);
    if (n < SNAP_HEADER_FIXED || sl == 0 || sl > 255 ||
        snap_fread(f, head + SNAP_HEADER_FIXED, sl + 4) != sl + 4) {
        snprintf(err, errlen, "truncated or malformed header");
        goto done;
    }
    if (le32(head + SNAP_HEADER_FIXED + sl) != snap_crc(0, head, SNAP_HEADER_FIXED + sl)) {
        snprintf(err, errlen, "header CRC32C mismatch");
        goto done;
    }
    memcpy(info->site, head + SNAP_HEADER_FIXED, sl);
    info->site[sl] = '\0';
    info->created = le64(head + 8);
    off = SNAP_HEADER_FIXED + sl + 4;
    for (;;) {
        uint32_t len;
        n = snap_fread(f, rh, 8);
        if (n < 8) {
            snprintf(err, errlen, "offset %" PRIu64 ": truncated, no end record", off);
            goto done;
        }
        len = le32(rh);
        if (len == SNAP_END_MARK) {
            uint8_t end[16];
            if (snap_fread(f, end, 16) != 16 || le32(rh + 4) != snap_crc(0, end, 16)) {
                snprintf(err, errlen, "offset %" PRIu64 ": bad end record", off);
                goto done;
            }
            if (le64(end) != info->records) {
                snprintf(err, errlen,
                         "offset %" PRIu64 ": end record counts %" PRIu64
                         " records, file has %" PRIu64,
                         off, le64(end), info->records);
                goto done;
            }
            info->tombstones = le64(end + 8);
            info->bytes = off + 24;
            if (fgetc(f) != EOF) {
                snprintf(err, errlen, "offset %" PRIu64 ": data after the end record", off + 24);
                goto done;
            }
            rc = 0;
            goto done;
        }
        if (len == 0 || len > SNAP_RECORD_MAX) {
            snprintf(err, errlen, "offset %" PRIu64 ": record length %" PRIu32 " out of range", off,
                     len);
            goto done;
        }
        if (len > cap) {
            uint8_t *nb = realloc(buf, len);
            if (nb == NULL) {
                snprintf(err, errlen, "out of memory");
                goto done;
            }
            buf = nb;
            cap = len;
        }
        if (snap_fread(f, buf, len) != len) {
            snprintf(err, errlen, "offset %" PRIu64 ": truncated record", off);
            goto done;
        }
        if (snap_crc(0, buf, len) != le32(rh + 4)) {
            snprintf(err, errlen, "offset %" PRIu64 ": record CRC32C mismatch", off);
            goto done;
        }
        info->records++;
        off += 8 + len;
    }

done:
    free(buf);
    fclose(f);
    return rc;
}

/* ---- HTTP pieces ---- */

static int snap_send_all(int fd, const void *data, size_t n, int idle_ms)
{
    const char *p = data;

    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w == -1 && (errno == EAGAIN || errno == EINTR)) {
            int rc = ctl_fd_wait(fd, POLLOUT, ctl_mono_ms() + idle_ms);
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

/* recv once, waiting up to wait_ms.  Returns bytes (0 at EOF) or a negative errno. */
static ssize_t snap_recv(int fd, void *buf, size_t n, int wait_ms)
{
    int64_t deadline = ctl_mono_ms() + wait_ms;

    for (;;) {
        ssize_t r = recv(fd, buf, n, 0);
        if (r >= 0) {
            return r;
        }
        if (errno != EAGAIN && errno != EINTR) {
            return -errno;
        }
        int rc = ctl_fd_wait(fd, POLLIN, deadline);
        if (rc != 0) {
            return rc;
        }
    }
}

/* A response head read into buf: its status and where the head ends. */
struct snap_head {
    int status;
    size_t end; /* bytes of buf that are the head (through the blank line) */
};

/* Read until buf holds a whole response head.  Returns 0, -EPROTO, or a socket error. */
static int snap_read_head(int fd, char *buf, size_t cap, size_t *len, int wait_ms,
                          struct snap_head *h)
{
    for (;;) {
        char *e;
        ssize_t r;
        buf[*len] = '\0';
        e = strstr(buf, "\r\n\r\n");
        if (e != NULL) {
            if (strncmp(buf, "HTTP/1.", 7) != 0 || sscanf(buf + 8, " %3d", &h->status) != 1) {
                return -EPROTO;
            }
            h->end = (size_t)(e + 4 - buf);
            return 0;
        }
        if (*len + 1 >= cap) {
            return -EPROTO;
        }
        r = snap_recv(fd, buf + *len, cap - 1 - *len, wait_ms);
        if (r < 0) {
            return (int)r;
        }
        if (r == 0) {
            return *len == 0 ? -ECONNRESET : -EPROTO;
        }
        *len += (size_t)r;
    }
}

/* The rest of a (small) reply after its head, until the server closes.  Owned, NUL-ended. */
static char *snap_read_rest(int fd, const char *have, size_t nhave, int wait_ms, size_t *outlen)
{
    size_t cap = nhave + 4096, len = nhave;
    char *b = malloc(cap + 1);

    if (b == NULL) {
        return NULL;
    }
    memcpy(b, have, nhave);
    for (;;) {
        ssize_t r;
        if (len == cap) {
            char *nb = cap < (16u << 20) ? realloc(b, cap * 2 + 1) : NULL;
            if (nb == NULL) {
                break;
            }
            b = nb;
            cap *= 2;
        }
        r = snap_recv(fd, b + len, cap - len, wait_ms);
        if (r <= 0) {
            break;
        }
        len += (size_t)r;
    }
    b[len] = '\0';
    *outlen = len;
    return b;
}

static int snap_connect(const struct ctl_target *admin)
{
    int fd = ctl_tcp_connect(admin->host, admin->port, ctl_mono_ms() + admin->timeout_ms);

    if (fd < 0) {
        fprintf(stderr, "geogatectl: cannot connect to the admin listener %s: %s\n", admin->addr,
                fd == -ECONNREFUSED ? "connection refused (is geogate running with `admin:`?)"
                                    : strerror(-fd));
    }
    return fd;
}

static const char *snap_chomp(char *s)
{
    size_t n = strlen(s);

    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ')) {
        s[--n] = '\0';
    }
    return s;
}

static double snap_secs(int64_t t0)
{
    return (double)(ctl_mono_ms() - t0) / 1000.0;
}

/* ---- geogatectl snapshot ---- */

/* Stream the reply body (after the head) into out until the server closes. */
static int snap_download(int fd, FILE *out, const char *have, size_t nhave, uint64_t *bytes)
{
    char *buf = malloc(SNAP_IO);
    int rc = 0;

    if (buf == NULL) {
        return -ENOMEM;
    }
    *bytes = nhave;
    if (nhave > 0 && fwrite(have, 1, nhave, out) != nhave) {
        rc = -EIO;
    }
    while (rc == 0) {
        ssize_t r = snap_recv(fd, buf, SNAP_IO, SNAP_IDLE_MS);
        if (r == 0) {
            break;
        }
        if (r < 0) {
            rc = (int)r;
            break;
        }
        if (fwrite(buf, 1, (size_t)r, out) != (size_t)r) {
            rc = -EIO;
            break;
        }
        *bytes += (uint64_t)r;
    }
    free(buf);
    return rc;
}

int ctl_snapshot(const struct ctl_target *admin, int argc, char **argv)
{
    const char *path = NULL;
    char tmp[4096], head[SNAP_HEAD_MAX], req[512], err[512];
    struct snap_head h;
    struct snap_info info;
    size_t hlen = 0;
    uint64_t bytes = 0;
    int64_t t0 = ctl_mono_ms();
    FILE *out;
    int fd, rc, n;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else if (strncmp(argv[i], "--out=", 6) == 0) {
            path = argv[i] + 6;
        } else {
            fprintf(stderr, "geogatectl: snapshot: unknown or incomplete option %s\n", argv[i]);
            return CTL_EXIT_USAGE;
        }
    }
    if (path == NULL || path[0] == '\0') {
        fprintf(stderr, "geogatectl: snapshot needs --out FILE\n");
        return CTL_EXIT_USAGE;
    }
    snap_crc_init();
    n = snprintf(tmp, sizeof(tmp), "%s.partial", path);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        fprintf(stderr, "geogatectl: snapshot: path too long\n");
        return CTL_EXIT_USAGE;
    }
    fd = snap_connect(admin);
    if (fd < 0) {
        return CTL_EXIT_UNREACHABLE;
    }
    /* HTTP/1.0: the body simply runs until the gateway closes; the end record inside the
     * file is what says it is complete. */
    n = snprintf(req, sizeof(req),
                 "GET /snapshot HTTP/1.0\r\nHost: %s:%s\r\nUser-Agent: geogatectl\r\n\r\n",
                 admin->host, admin->port);
    rc = snap_send_all(fd, req, (size_t)n, admin->timeout_ms);
    if (rc == 0) {
        rc = snap_read_head(fd, head, sizeof(head), &hlen, SNAP_IDLE_MS, &h);
    }
    if (rc != 0) {
        fprintf(stderr, "geogatectl: snapshot: no readable answer from %s: %s\n", admin->addr,
                rc == -EPROTO ? "not HTTP" : strerror(-rc));
        close(fd);
        return CTL_EXIT_UNREACHABLE;
    }
    if (h.status != 200) {
        size_t blen;
        char *body = snap_read_rest(fd, head + h.end, hlen - h.end, admin->timeout_ms, &blen);
        fprintf(stderr, "geogatectl: snapshot refused (%d): %s\n", h.status,
                body != NULL ? snap_chomp(body) : "");
        free(body);
        close(fd);
        return CTL_EXIT_REFUSED;
    }
    out = fopen(tmp, "wb");
    if (out == NULL) {
        fprintf(stderr, "geogatectl: snapshot: cannot write %s: %s\n", tmp, strerror(errno));
        close(fd);
        return CTL_EXIT_REFUSED;
    }
    rc = snap_download(fd, out, head + h.end, hlen - h.end, &bytes);
    close(fd);
    if (fflush(out) != 0 || fsync(fileno(out)) != 0) {
        rc = rc != 0 ? rc : -EIO;
    }
    if (fclose(out) != 0) {
        rc = rc != 0 ? rc : -EIO;
    }
    if (rc != 0) {
        fprintf(stderr,
                "geogatectl: snapshot: transfer failed after %" PRIu64 " bytes: %s (%s kept)\n",
                bytes, strerror(-rc), tmp);
        return CTL_EXIT_REFUSED;
    }
    if (snap_verify(tmp, &info, err, sizeof(err)) != 0) {
        fprintf(stderr,
                "geogatectl: snapshot: the file is incomplete or damaged (%s) after %" PRIu64
                " bytes; the gateway's log says why; %s kept, %s not written\n",
                err, bytes, tmp, path);
        return CTL_EXIT_REFUSED;
    }
    if (rename(tmp, path) != 0) {
        fprintf(stderr, "geogatectl: snapshot: cannot rename %s to %s: %s\n", tmp, path,
                strerror(errno));
        return CTL_EXIT_REFUSED;
    }
    double secs = snap_secs(t0);
    printf("snapshot of site %s: %" PRIu64 " items (%" PRIu64 " tombstones), %" PRIu64
           " bytes in %.2f s (%.0f items/s) -> %s\n",
           info.site, info.records, info.tombstones, info.bytes, secs,
           secs > 0 ? (double)info.records / secs : 0.0, path);
    return CTL_EXIT_OK;
}

/* ---- geogatectl restore ---- */

/* Send the file's bytes as the request body.  Returns 0 or a negative errno (-EPIPE and
 * -ECONNRESET mean the gateway answered early: read its answer). */
static int snap_upload(int fd, FILE *in)
{
    char *buf = malloc(SNAP_IO);
    int rc = 0;

    if (buf == NULL) {
        return -ENOMEM;
    }
    for (;;) {
        size_t n = fread(buf, 1, SNAP_IO, in);
        if (n == 0) {
            rc = ferror(in) ? -EIO : 0;
            break;
        }
        rc = snap_send_all(fd, buf, n, SNAP_IDLE_MS);
        if (rc != 0) {
            break;
        }
    }
    free(buf);
    return rc;
}

static void snap_print_restore(const struct ctl_json *j, const char *path, double secs)
{
    time_t created = (time_t)ctl_json_num(j, "created", 0);
    struct tm tm;
    char when[64] = "?";

    if (created > 0 && gmtime_r(&created, &tm) != NULL) {
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%SZ", &tm);
    }
    printf("restored %s (site %s, taken %s): %.0f records: %.0f applied, %.0f skipped as "
           "expired, %.0f older than what the site holds",
           path, ctl_json_str(j, "site", "?"), when, ctl_json_num(j, "records", 0),
           ctl_json_num(j, "applied", 0), ctl_json_num(j, "skipped_expired", 0),
           ctl_json_num(j, "rejected_older", 0));
    if (ctl_json_num(j, "skipped_tombstones", 0) > 0) {
        printf(", %.0f tombstones skipped (gateway without versions)",
               ctl_json_num(j, "skipped_tombstones", 0));
    }
    if (ctl_json_num(j, "paced_rounds", 0) > 0) {
        printf(", %.0f rounds paused for clients", ctl_json_num(j, "paced_rounds", 0));
    }
    printf("; %.2f s (%.0f items/s)\n", secs,
           secs > 0 ? ctl_json_num(j, "records", 0) / secs : 0.0);
}

/* The gateway's answer to POST /restore.  Returns the exit code. */
static int snap_restore_answer(int status, char *body, size_t blen, const char *path, uint64_t size,
                               double secs)
{
    struct ctl_json *j = NULL;
    char err[256];

    if (status == 413) {
        fprintf(stderr,
                "geogatectl: restore refused (413): %s is %" PRIu64
                " bytes, more than the gateway takes in one restore\n",
                path, size);
        return CTL_EXIT_REFUSED;
    }
    if (ctl_json_parse(body, blen, &j, err, sizeof(err)) != 0 || j->type != CTL_JSON_OBJECT) {
        fprintf(stderr, "geogatectl: restore %s (%d): %s\n", status == 200 ? "answered" : "refused",
                status, snap_chomp(body));
        ctl_json_free(j);
        return status == 200 ? CTL_EXIT_UNREACHABLE : CTL_EXIT_REFUSED;
    }
    if (status == 200) {
        snap_print_restore(j, path, secs);
        ctl_json_free(j);
        return CTL_EXIT_OK;
    }
    if (status == 422 || (status == 503 && ctl_json_get(j, "records") != NULL)) {
        fprintf(stderr,
                "geogatectl: restore stopped (%d): %s\n"
                "  first bad record at offset %.0f of %s\n"
                "  %.0f records before it were read and applied: %.0f applied, %.0f skipped as "
                "expired, %.0f older than what the site holds; nothing after it was applied\n",
                status, ctl_json_str(j, "reason", "?"), ctl_json_num(j, "bad_offset", 0), path,
                ctl_json_num(j, "records", 0), ctl_json_num(j, "applied", 0),
                ctl_json_num(j, "skipped_expired", 0), ctl_json_num(j, "rejected_older", 0));
    } else {
        fprintf(stderr, "geogatectl: restore refused (%d): %s [header offset %.0f]\n", status,
                ctl_json_str(j, "reason", "?"), ctl_json_num(j, "bad_offset", 0));
    }
    ctl_json_free(j);
    return CTL_EXIT_REFUSED;
}

int ctl_restore(const struct ctl_target *admin, int argc, char **argv)
{
    const char *path = NULL;
    char head[SNAP_HEAD_MAX], req[768];
    struct snap_head h;
    struct stat stt;
    size_t hlen = 0, blen = 0;
    int64_t t0 = ctl_mono_ms();
    char *body;
    FILE *in;
    int fd, rc, n, code;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--in") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else if (strncmp(argv[i], "--in=", 5) == 0) {
            path = argv[i] + 5;
        } else {
            fprintf(stderr, "geogatectl: restore: unknown or incomplete option %s\n", argv[i]);
            return CTL_EXIT_USAGE;
        }
    }
    if (path == NULL || path[0] == '\0') {
        fprintf(stderr, "geogatectl: restore needs --in FILE\n");
        return CTL_EXIT_USAGE;
    }
    in = fopen(path, "rb");
    if (in == NULL || fstat(fileno(in), &stt) != 0) {
        fprintf(stderr, "geogatectl: restore: cannot read %s: %s\n", path, strerror(errno));
        if (in != NULL) {
            fclose(in);
        }
        return CTL_EXIT_USAGE;
    }
    fd = snap_connect(admin);
    if (fd < 0) {
        fclose(in);
        return CTL_EXIT_UNREACHABLE;
    }
    /* Expect: 100-continue lets the gateway refuse a file that is too big (413) before
     * we send it. */
    n = snprintf(req, sizeof(req),
                 "POST /restore HTTP/1.1\r\nHost: %s:%s\r\nUser-Agent: geogatectl\r\n"
                 "Content-Type: application/octet-stream\r\nContent-Length: %" PRIu64 "\r\n"
                 "Expect: 100-continue\r\nConnection: close\r\n\r\n",
                 admin->host, admin->port, (uint64_t)stt.st_size);
    rc = snap_send_all(fd, req, (size_t)n, admin->timeout_ms);
    if (rc == 0) {
        rc = snap_read_head(fd, head, sizeof(head), &hlen, SNAP_CONTINUE_WAIT_MS, &h);
        if (rc == 0 && h.status == 100) {
            memmove(head, head + h.end, hlen - h.end);
            hlen -= h.end;
            rc = 1; /* go on */
        } else if (rc == -ETIMEDOUT) {
            rc = 1; /* no interim answer: send anyway (RFC 9110 10.1.1) */
        }
    }
    if (rc == 1) {
        rc = snap_upload(fd, in);
        if (rc == -EPIPE || rc == -ECONNRESET) {
            rc = 0; /* the gateway answered before taking it all: read why */
        }
        while (rc == 0) {
            rc = snap_read_head(fd, head, sizeof(head), &hlen, SNAP_RESTORE_WAIT_MS, &h);
            if (rc != 0 || h.status != 100) {
                break;
            }
            memmove(head, head + h.end, hlen - h.end); /* a late "100 Continue" */
            hlen -= h.end;
        }
    }
    fclose(in);
    if (rc != 0) {
        fprintf(stderr, "geogatectl: restore: no readable answer from %s: %s\n", admin->addr,
                rc == -EPROTO ? "not HTTP" : strerror(-rc));
        close(fd);
        return CTL_EXIT_UNREACHABLE;
    }
    body = snap_read_rest(fd, head + h.end, hlen - h.end, admin->timeout_ms, &blen);
    close(fd);
    if (body == NULL) {
        fprintf(stderr, "geogatectl: restore: out of memory\n");
        return CTL_EXIT_UNREACHABLE;
    }
    code = snap_restore_answer(h.status, body, blen, path, (uint64_t)stt.st_size, snap_secs(t0));
    free(body);
    return code;
}
