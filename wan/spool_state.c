/*
 * spool_state — the spool's small state file "acks" (spool id, sequence reservation, drop
 * floor, each peer's acked seq): written atomically (temp file, fsync, rename, fsync dir)
 * and read back with a CRC check so a damaged file is noticed rather than half-believed.
 * Called with the spool's mutex held.  It does not decide when to write: spool.c does.
 */
#include "wan/spool_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "wan/crc32c.h"

/* ---- state file -------------------------------------------------------------------- */

int spool_state_write(struct wan_spool *sp)
{
    size_t cap = 256 + sp->npeers * (WAN_SPOOL_PEER_NAME_MAX + 32), n = 0;
    char *buf = malloc(cap);
    int fd, rc;

    if (buf == NULL) {
        return -ENOMEM;
    }
    n += (size_t)snprintf(buf + n, cap - n,
                          "geogate-spool-state 1\nid %016" PRIx64 "\nreserved %" PRIu64
                          "\nfloor %" PRIu64 "\n",
                          sp->id, sp->reserved, sp->floor);
    for (size_t i = 0; i < sp->npeers; i++) {
        n += (size_t)snprintf(buf + n, cap - n, "ack %s %" PRIu64 "\n", sp->peers[i].name,
                              sp->peers[i].acked);
    }
    n += (size_t)snprintf(buf + n, cap - n, "crc %08" PRIx32 "\n", wan_crc32c(0, buf, n));

    fd = openat(sp->dir_fd, STATE_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd == -1) {
        rc = -errno;
        goto fail_open;
    }
    rc = spool_write_all(fd, buf, n);
    if (rc == 0 && durable(sp) && fsync(fd) == -1) {
        rc = -errno;
    }
    if (close(fd) == -1 && rc == 0) {
        rc = -errno;
    }
    if (rc != 0) {
        goto fail_write;
    }
    if (renameat(sp->dir_fd, STATE_TMP, sp->dir_fd, STATE_FILE) == -1) {
        rc = -errno;
        goto fail_write;
    }
    if (durable(sp) && fsync(sp->dir_fd) == -1) {
        rc = -errno;
        goto fail_open;
    }
    sp->state_dirty = false;
    sp->last_state_ms = spool_now(sp);
    free(buf);
    return 0;

fail_write:
    unlinkat(sp->dir_fd, STATE_TMP, 0);
fail_open:
    free(buf);
    spool_log(sp, WAN_SPOOL_LOG_ERROR, "spool: cannot write %s: %s", STATE_FILE, strerror(-rc));
    return rc;
}

bool spool_peer_name_ok(const char *name)
{
    size_t n = name != NULL ? strlen(name) : 0;

    if (n == 0 || n > WAN_SPOOL_PEER_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (name[i] <= ' ' || name[i] > '~') {
            return false;
        }
    }
    return true;
}

static int parse_u64(const char *s, int base, uint64_t *out)
{
    char *end;

    if (s == NULL || *s == '\0' || *s == '-' || *s == '+' || *s == ' ') {
        return -EBADMSG;
    }
    errno = 0;
    *out = strtoull(s, &end, base);
    return errno != 0 || *end != '\0' ? -EBADMSG : 0;
}

/* Parse the text of the state file (NUL-terminated, n bytes).  Returns 0, -EBADMSG or
 * -ENOMEM. */
static int state_parse(char *text, size_t n, struct spool_state *st)
{
    char *crc_line, *save = NULL, *line;
    uint64_t crc;
    int lineno = 0;
    bool have_id = false, have_res = false, have_floor = false;

    if (n < 2 || text[n - 1] != '\n') {
        return -EBADMSG;
    }
    text[n - 1] = '\0';
    crc_line = strrchr(text, '\n');
    if (crc_line == NULL || strncmp(crc_line + 1, "crc ", 4) != 0 ||
        parse_u64(crc_line + 5, 16, &crc) != 0 ||
        wan_crc32c(0, text, (size_t)(crc_line + 1 - text)) != crc) {
        return -EBADMSG;
    }
    *crc_line = '\0';
    for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        char *sp1 = strchr(line, ' ');
        if (lineno++ == 0) {
            if (strcmp(line, "geogate-spool-state 1") != 0) {
                return -EBADMSG;
            }
            continue;
        }
        if (sp1 == NULL) {
            return -EBADMSG;
        }
        *sp1++ = '\0';
        if (strcmp(line, "id") == 0 && parse_u64(sp1, 16, &st->id) == 0) {
            have_id = true;
        } else if (strcmp(line, "reserved") == 0 && parse_u64(sp1, 10, &st->reserved) == 0) {
            have_res = true;
        } else if (strcmp(line, "floor") == 0 && parse_u64(sp1, 10, &st->floor) == 0) {
            have_floor = true;
        } else if (strcmp(line, "ack") == 0) {
            char *sp2 = strchr(sp1, ' ');
            struct spool_state_peer *np;
            if (sp2 == NULL) {
                return -EBADMSG;
            }
            *sp2++ = '\0';
            if (!spool_peer_name_ok(sp1)) {
                return -EBADMSG;
            }
            np = realloc(st->peers, (st->npeers + 1) * sizeof(*np));
            if (np == NULL) {
                return -ENOMEM;
            }
            st->peers = np;
            strcpy(np[st->npeers].name, sp1);
            if (parse_u64(sp2, 10, &np[st->npeers].acked) != 0) {
                return -EBADMSG;
            }
            st->npeers++;
        } else {
            return -EBADMSG;
        }
    }
    return have_id && have_res && have_floor ? 0 : -EBADMSG;
}

/* Returns 0, -ENOENT (no state file), -EBADMSG, -ENOMEM or -errno. */
int spool_state_read(struct wan_spool *sp, struct spool_state *st)
{
    struct stat stb;
    char *text;
    size_t got;
    int fd, rc;

    fd = openat(sp->dir_fd, STATE_FILE, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        return -errno;
    }
    if (fstat(fd, &stb) == -1) {
        rc = -errno;
        goto fail_stat;
    }
    if (stb.st_size > STATE_MAX) {
        rc = -EBADMSG;
        goto fail_stat;
    }
    text = malloc((size_t)stb.st_size + 1);
    if (text == NULL) {
        rc = -ENOMEM;
        goto fail_stat;
    }
    rc = spool_pread_all(fd, text, (size_t)stb.st_size, 0, &got);
    if (rc == 0) {
        text[got] = '\0';
        rc = strlen(text) != got ? -EBADMSG : state_parse(text, got, st);
    }
    free(text);
fail_stat:
    close(fd);
    return rc;
}
