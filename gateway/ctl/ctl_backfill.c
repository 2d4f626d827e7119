/*
 * ctl_backfill — `geogatectl backfill`: POST /backfill?from=SITE[&rate=N][&prefix=P] on the
 * admin listener, then GET /backfill every --interval until the job is no longer running,
 * printing one progress line each time and a summary at the end:
 *
 *   backfill from eu-west: 42000 items, 5.1 MB, 42.0% of 100000, 9850 items/s, ETA 6 s
 *   ...
 *   backfill from eu-west done in 10.3 s: 100000 items (12.2 MB), 99871 applied, 129 already
 *   as new or newer, 0 expired, 1 resume
 *
 * With --detach it prints the first answer and returns at once (the job goes on; `status`
 * or GET /backfill shows it).  Interrupting geogatectl does not stop the job: POST
 * /backfill/cancel does.
 */
#include "gateway/ctl/ctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BF_DEFAULT_INTERVAL_MS 1000
#define BF_UNREACHABLE_TRIES 10

static void bf_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

static void bf_print_bytes(double b)
{
    if (b >= 1e9) {
        printf("%.2f GB", b / 1e9);
    } else if (b >= 1e6) {
        printf("%.1f MB", b / 1e6);
    } else if (b >= 1e3) {
        printf("%.1f kB", b / 1e3);
    } else {
        printf("%.0f B", b);
    }
}

static void bf_progress(const struct ctl_json *j)
{
    double pct = ctl_json_num(j, "percent", -1), eta = ctl_json_num(j, "eta_s", -1);

    printf("backfill from %s: %.0f items, ", ctl_json_str(j, "from", "?"),
           ctl_json_num(j, "items", 0));
    bf_print_bytes(ctl_json_num(j, "bytes", 0));
    if (pct >= 0) {
        printf(", %.1f%% of %.0f", pct, ctl_json_num(j, "peer_items", 0));
    }
    printf(", %.0f items/s", ctl_json_num(j, "items_per_s", 0));
    if (eta >= 0) {
        printf(", ETA %.0f s", eta);
    }
    if (ctl_json_num(j, "resumes", 0) > 0) {
        printf(", %.0f resumes", ctl_json_num(j, "resumes", 0));
    }
    printf("\n");
    fflush(stdout);
}

static void bf_summary(const struct ctl_json *j)
{
    const char *state = ctl_json_str(j, "state", "?");
    const char *error = ctl_json_str(j, "error", "");

    printf("backfill from %s %s in %.1f s: %.0f items (", ctl_json_str(j, "from", "?"), state,
           ctl_json_num(j, "elapsed_ms", 0) / 1000.0, ctl_json_num(j, "items", 0));
    bf_print_bytes(ctl_json_num(j, "bytes", 0));
    printf("), %.0f applied, %.0f already as new or newer, %.0f expired, %.0f tombstones, "
           "%.0f resumes\n",
           ctl_json_num(j, "applied", 0), ctl_json_num(j, "rejected_older", 0),
           ctl_json_num(j, "skipped_expired", 0), ctl_json_num(j, "tombstones", 0),
           ctl_json_num(j, "resumes", 0));
    if (strcmp(state, "done") != 0 && error[0] != '\0') {
        printf("  %s\n", error);
    }
}

/* GET /backfill, parsed.  Returns 0 with *out, or a ctl_exit code (message printed). */
static int bf_get(const struct ctl_target *admin, struct ctl_json **out)
{
    struct ctl_http_reply r;
    char err[512];
    int rc;

    if (ctl_http(admin->host, admin->port, "GET", "/backfill", admin->timeout_ms, &r, err,
                 sizeof(err)) != 0) {
        fprintf(stderr, "geogatectl: %s\n", err);
        return CTL_EXIT_UNREACHABLE;
    }
    if (r.status != 200) {
        fprintf(stderr, "geogatectl: GET /backfill: %d: %s\n", r.status, ctl_chomp(r.body));
        ctl_http_reply_free(&r);
        return CTL_EXIT_REFUSED;
    }
    rc = ctl_json_parse(r.body, r.len, out, err, sizeof(err));
    ctl_http_reply_free(&r);
    if (rc != 0) {
        fprintf(stderr, "geogatectl: GET /backfill: unreadable answer: %s\n", err);
        return CTL_EXIT_UNREACHABLE;
    }
    return 0;
}

int ctl_backfill(const struct ctl_target *admin, int argc, char **argv)
{
    const char *from = NULL, *rate = NULL, *prefix = NULL;
    int interval = BF_DEFAULT_INTERVAL_MS, misses = 0, rc;
    bool detach = false;
    char path[1200], enc[800];
    struct ctl_http_reply r;
    char err[512];

    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--from") == 0 && i + 1 < argc) {
            from = argv[++i];
        } else if (strcmp(a, "--rate") == 0 && i + 1 < argc) {
            rate = argv[++i];
        } else if (strcmp(a, "--prefix") == 0 && i + 1 < argc) {
            prefix = argv[++i];
        } else if (strcmp(a, "--interval") == 0 && i + 1 < argc) {
            interval = atoi(argv[++i]);
        } else if (strcmp(a, "--detach") == 0) {
            detach = true;
        } else {
            fprintf(stderr, "geogatectl: backfill: unknown or incomplete option %s\n", a);
            return CTL_EXIT_USAGE;
        }
    }
    if (from == NULL || from[0] == '\0') {
        fprintf(stderr, "geogatectl: backfill: --from SITE is required\n");
        return CTL_EXIT_USAGE;
    }
    if (rate != NULL && (rate[0] < '0' || rate[0] > '9' || strspn(rate, "0123456789") !=
                                                                  strlen(rate))) {
        fprintf(stderr, "geogatectl: backfill: --rate takes a whole number of items per second "
                        "(0: no limit)\n");
        return CTL_EXIT_USAGE;
    }
    if (interval < 50) {
        fprintf(stderr, "geogatectl: backfill: --interval is at least 50 ms\n");
        return CTL_EXIT_USAGE;
    }
    ctl_urlencode(from, enc, sizeof(enc));
    snprintf(path, sizeof(path), "/backfill?from=%s", enc);
    if (rate != NULL) {
        size_t n = strlen(path);
        snprintf(path + n, sizeof(path) - n, "&rate=%s", rate);
    }
    if (prefix != NULL && prefix[0] != '\0') {
        size_t n = strlen(path);
        ctl_urlencode(prefix, enc, sizeof(enc));
        snprintf(path + n, sizeof(path) - n, "&prefix=%s", enc);
    }
    if (ctl_http(admin->host, admin->port, "POST", path, admin->timeout_ms, &r, err,
                 sizeof(err)) != 0) {
        fprintf(stderr, "geogatectl: %s\n", err);
        return CTL_EXIT_UNREACHABLE;
    }
    if (r.status < 200 || r.status >= 300) {
        fprintf(stderr, "geogatectl: backfill refused (%d): %s\n", r.status, ctl_chomp(r.body));
        ctl_http_reply_free(&r);
        return CTL_EXIT_REFUSED;
    }
    ctl_http_reply_free(&r);
    printf("backfill from %s started%s%s\n", from, rate != NULL ? ", rate " : "",
           rate != NULL ? rate : "");
    if (detach) {
        return CTL_EXIT_OK;
    }
    for (;;) {
        struct ctl_json *j = NULL;
        const char *state;
        bf_sleep_ms(interval);
        rc = bf_get(admin, &j);
        if (rc == CTL_EXIT_UNREACHABLE && ++misses < BF_UNREACHABLE_TRIES) {
            continue; /* the job goes on in the gateway: try again */
        }
        if (rc != 0) {
            return rc;
        }
        misses = 0;
        state = ctl_json_str(j, "state", "none");
        if (strcmp(state, "running") == 0) {
            bf_progress(j);
            ctl_json_free(j);
            continue;
        }
        bf_summary(j);
        rc = strcmp(state, "done") == 0 ? CTL_EXIT_OK : CTL_EXIT_REFUSED;
        ctl_json_free(j);
        return rc;
    }
}
