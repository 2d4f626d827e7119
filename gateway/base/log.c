/*
 * log — see log.h.  Formats into a stack buffer and writes it with a single
 * write(2) so concurrent lines from worker threads stay whole.
 */
#include "gateway/base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int gw_log_level_current = GW_LOG_INFO;

static const char *const level_tags[GW_LOG_MAX] = {
    [GW_LOG_ERROR] = "ERROR",
    [GW_LOG_WARN] = "WARN",
    [GW_LOG_INFO] = "INFO",
    [GW_LOG_DEBUG] = "DEBUG",
};

void gw_log_set_level(enum gw_log_level level)
{
    __atomic_store_n(&gw_log_level_current, (int)level, __ATOMIC_RELAXED);
}

void gw_log_write(enum gw_log_level level, const char *file, int line, const char *fmt, ...)
{
    char buf[1024];
    struct timeval tv;
    struct tm tm;
    size_t n;
    int r;
    va_list ap;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    r = snprintf(buf + n, sizeof(buf) - n, ".%03ldZ %-5s %s:%d ", (long)(tv.tv_usec / 1000),
                 level < GW_LOG_MAX ? level_tags[level] : "?", file, line);
    if (r > 0) {
        n += (size_t)r < sizeof(buf) - n ? (size_t)r : sizeof(buf) - n - 1;
    }
    va_start(ap, fmt);
    r = vsnprintf(buf + n, sizeof(buf) - n, fmt, ap);
    va_end(ap);
    if (r > 0) {
        n += (size_t)r < sizeof(buf) - n ? (size_t)r : sizeof(buf) - n - 1;
    }
    if (n >= sizeof(buf) - 1) {
        n = sizeof(buf) - 2;
    }
    buf[n++] = '\n';
    if (write(STDERR_FILENO, buf, n) == -1) {
        /* nowhere left to report it */
    }
}

bool gw_log_gate_pass(struct gw_log_gate *g, int64_t now_ms, uint32_t interval_ms,
                      uint64_t *suppressed)
{
    if (g->due_ms != 0 && now_ms < g->due_ms) {
        g->suppressed++;
        return false;
    }
    if (suppressed != NULL) {
        *suppressed = g->suppressed;
    }
    g->suppressed = 0;
    g->due_ms = now_ms + interval_ms;
    return true;
}
