/*
 * clock — the gateway's two millisecond clocks, for any thread.  gw_mono_ms measures time
 * inside this process (timeouts, deadlines, retries, rates): it never jumps when the
 * system clock is set.  gw_wall_ms is unix time, for what is compared with another
 * process's or site's clock or shown to people (versions' physical part, the spool's
 * append times, status).  Not the hybrid logical clock (wan/version.h), not log stamps.
 */
#ifndef GEOGATE_CLOCK_H
#define GEOGATE_CLOCK_H

#include <stdint.h>

/* Milliseconds of CLOCK_MONOTONIC. */
int64_t gw_mono_ms(void);

/* Milliseconds since the unix epoch (CLOCK_REALTIME). */
int64_t gw_wall_ms(void);

#endif
