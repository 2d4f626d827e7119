/*
 * log — leveled log lines to stderr, one write(2) per line so threads never
 * interleave.  Any thread.  The level is a global set once at start and on reload.
 */
#ifndef GEOGATE_LOG_H
#define GEOGATE_LOG_H

#include <stdbool.h>
#include <stdint.h>

#include "gateway/base/config.h"

extern int gw_log_level_current;

void gw_log_set_level(enum gw_log_level level);
void gw_log_write(enum gw_log_level level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define gw_log(lvl, ...)                                                                     \
    do {                                                                                     \
        if ((int)(lvl) <= gw_log_level_current) {                                            \
            gw_log_write((lvl), __FILE__, __LINE__, __VA_ARGS__);                            \
        }                                                                                    \
    } while (0)

#define log_error(...) gw_log(GW_LOG_ERROR, __VA_ARGS__)
#define log_warn(...) gw_log(GW_LOG_WARN, __VA_ARGS__)
#define log_info(...) gw_log(GW_LOG_INFO, __VA_ARGS__)
#define log_debug(...) gw_log(GW_LOG_DEBUG, __VA_ARGS__)

/* Lets one log line through per interval. */
struct gw_log_gate {
    int64_t due_ms;      /* the next line may go out at or after this (0: at once) */
    uint64_t suppressed; /* calls held back since the last line */
};

/* True when a line may be logged now (then the gate closes for interval_ms and
 * *suppressed, when not NULL, gets how many calls were held back since the last line);
 * false when it is shut (the call is counted). */
bool gw_log_gate_pass(struct gw_log_gate *g, int64_t now_ms, uint32_t interval_ms,
                      uint64_t *suppressed);

#endif
