/*
 * bench_opts — geogate-bench's options: what the command line sets (bench_opts.c) and the
 * load and idle modes read (geogate_bench.c).
 */
#ifndef GEOGATE_BENCH_OPTS_H
#define GEOGATE_BENCH_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bench_opts {
    const char *host;
    const char *port;
    int connections;
    int pipeline;
    unsigned ratio_set;
    unsigned ratio_get;
    size_t value_size;
    uint64_t keys;
    const char *key_prefix;
    double duration;   /* seconds; used when requests == 0 */
    uint64_t requests; /* total over all connections; 0 = run for duration */
    double rate;       /* requests per second over all threads; 0 = as fast as replies come */
    bool warmup_keys;
    uint64_t seed;
    bool json;
    int threads;
    int idle_conns; /* > 0 selects idle-connection mode */
    double timeout; /* seconds without any reply before outstanding requests time out */
    const char *label;
    bool meta; /* meta commands (ms/mg) instead of set/get */
};

/* Fill o from the command line (defaults first); prints usage or the error on stderr.
 * Returns 0, or -EINVAL (the caller exits 2). */
int bench_parse_opts(int argc, char **argv, struct bench_opts *o);

#endif
