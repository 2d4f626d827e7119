/*
 * log — leveled log lines to stderr, one write(2) per line so threads never
 * interleave.  Any thread.  The level is a global set once at start and on reload.
 */
#ifndef GEOGATE_LOG_H
#define GEOGATE_LOG_H

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

#endif
