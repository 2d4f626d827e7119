/*
 * bench_opts — geogate-bench's command line: usage, number parsing, defaults and checks.
 */
#include "tests/tools/bench/bench_opts.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------
 * Command line
 */

static void usage(FILE *f)
{
    fprintf(f, "usage: geogate-bench [options]\n"
               "  --host H            target host (127.0.0.1)\n"
               "  --port P            target port (11211)\n"
               "  --connections N     connections (50)\n"
               "  --threads N         worker threads, each with its own event loop (1)\n"
               "  --pipeline N        requests in flight per connection (1)\n"
               "  --ratio S:G         set:get mix (1:4)\n"
               "  --value-size N      bytes per value (100)\n"
               "  --keys N            key space (100000)\n"
               "  --key-prefix S      key prefix (\"bench:\")\n"
               "  --duration SEC      run this long (10) ...\n"
               "  --requests N        ... or send this many requests in total\n"
               "  --rate N            at most N requests per second in all, on schedule\n"
               "                      (0: each connection sends as soon as it has room)\n"
               "  --warmup-keys       set every key of the key space first (not measured)\n"
               "  --seed N            random seed (1)\n"
               "  --timeout SEC       give up on replies after this long without progress (5)\n"
               "  --label S           name echoed in --json output\n"
               "  --json              one JSON object on stdout\n"
               "  --meta              meta commands: ms for sets, \"mg <key> v f\" for gets\n"
               "  --idle-conns N      idle mode: open N connections, one get each, then hold\n"
               "                      them until SIGTERM/SIGINT or --duration (0 = forever)\n");
}

static int parse_u64(const char *s, uint64_t *out, uint64_t min, uint64_t max)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
        return -EINVAL;
    }
    *out = v;
    return 0;
}

int bench_parse_opts(int argc, char **argv, struct bench_opts *o)
{
    enum {
        OPT_HOST = 0x100,
        OPT_PORT,
        OPT_CONNS,
        OPT_THREADS,
        OPT_PIPELINE,
        OPT_RATIO,
        OPT_VSIZE,
        OPT_KEYS,
        OPT_PREFIX,
        OPT_DURATION,
        OPT_REQUESTS,
        OPT_RATE,
        OPT_WARMUP,
        OPT_SEED,
        OPT_TIMEOUT,
        OPT_LABEL,
        OPT_JSON,
        OPT_IDLE,
        OPT_HELP,
        OPT_META
    };
    static const struct option longopts[] = {
        {"host", required_argument, NULL, OPT_HOST},
        {"port", required_argument, NULL, OPT_PORT},
        {"connections", required_argument, NULL, OPT_CONNS},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"pipeline", required_argument, NULL, OPT_PIPELINE},
        {"ratio", required_argument, NULL, OPT_RATIO},
        {"value-size", required_argument, NULL, OPT_VSIZE},
        {"keys", required_argument, NULL, OPT_KEYS},
        {"key-prefix", required_argument, NULL, OPT_PREFIX},
        {"duration", required_argument, NULL, OPT_DURATION},
        {"requests", required_argument, NULL, OPT_REQUESTS},
        {"rate", required_argument, NULL, OPT_RATE},
        {"warmup-keys", no_argument, NULL, OPT_WARMUP},
        {"seed", required_argument, NULL, OPT_SEED},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"label", required_argument, NULL, OPT_LABEL},
        {"json", no_argument, NULL, OPT_JSON},
        {"idle-conns", required_argument, NULL, OPT_IDLE},
        {"help", no_argument, NULL, OPT_HELP},
        {"meta", no_argument, NULL, OPT_META},
        {NULL, 0, NULL, 0},
    };
    bool duration_set = false;
    uint64_t v;
    int ch;

    *o = (struct bench_opts){.host = "127.0.0.1",
                             .port = "11211",
                             .connections = 50,
                             .pipeline = 1,
                             .ratio_set = 1,
                             .ratio_get = 4,
                             .value_size = 100,
                             .keys = 100000,
                             .key_prefix = "bench:",
                             .duration = 10,
                             .seed = 1,
                             .threads = 1,
                             .timeout = 5};
    while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int bad = 0;
        char *end;
        switch (ch) {
        case OPT_HOST:
            o->host = optarg;
            break;
        case OPT_PORT:
            o->port = optarg;
            break;
        case OPT_CONNS:
            bad = parse_u64(optarg, &v, 1, 1000000);
            o->connections = (int)v;
            break;
        case OPT_THREADS:
            bad = parse_u64(optarg, &v, 1, 256);
            o->threads = (int)v;
            break;
        case OPT_PIPELINE:
            bad = parse_u64(optarg, &v, 1, 65536);
            o->pipeline = (int)v;
            break;
        case OPT_RATIO: {
            unsigned long s, g;
            errno = 0;
            s = strtoul(optarg, &end, 10);
            bad = *end != ':' || optarg[0] == '-' || errno;
            if (!bad) {
                char *g_str = end + 1;
                g = strtoul(g_str, &end, 10);
                bad = *end || end == g_str || g_str[0] == '-' || errno || s + g == 0 ||
                      s > 1000000 || g > 1000000;
                o->ratio_set = (unsigned)s;
                o->ratio_get = (unsigned)g;
            }
            break;
        }
        case OPT_VSIZE:
            bad = parse_u64(optarg, &v, 0, 64u << 20);
            o->value_size = (size_t)v;
            break;
        case OPT_KEYS:
            bad = parse_u64(optarg, &v, 1, UINT64_MAX / 2);
            o->keys = v;
            break;
        case OPT_PREFIX:
            o->key_prefix = optarg;
            bad = strlen(optarg) > 200 || strpbrk(optarg, " \r\n\t") != NULL;
            break;
        case OPT_DURATION:
            o->duration = strtod(optarg, &end);
            bad = *end || end == optarg || !(o->duration >= 0);
            duration_set = true;
            break;
        case OPT_REQUESTS:
            bad = parse_u64(optarg, &o->requests, 1, UINT64_MAX / 2);
            break;
        case OPT_RATE:
            o->rate = strtod(optarg, &end);
            bad = *end || end == optarg || !(o->rate >= 0);
            break;
        case OPT_WARMUP:
            o->warmup_keys = true;
            break;
        case OPT_SEED:
            bad = parse_u64(optarg, &o->seed, 0, UINT64_MAX);
            break;
        case OPT_TIMEOUT:
            o->timeout = strtod(optarg, &end);
            bad = *end || end == optarg || !(o->timeout > 0);
            break;
        case OPT_LABEL:
            o->label = optarg;
            bad = strpbrk(optarg, "\"\\") != NULL;
            break;
        case OPT_JSON:
            o->json = true;
            break;
        case OPT_META:
            o->meta = true;
            break;
        case OPT_IDLE:
            bad = parse_u64(optarg, &v, 1, 1000000);
            o->idle_conns = (int)v;
            break;
        case OPT_HELP:
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -EINVAL;
        }
        if (bad) {
            fprintf(stderr, "geogate-bench: bad value for --%s: %s\n", longopts[ch - OPT_HOST].name,
                    optarg);
            return -EINVAL;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "geogate-bench: unexpected argument %s\n", argv[optind]);
        return -EINVAL;
    }
    if (o->idle_conns > 0 && !duration_set) {
        o->duration = 0; /* idle mode holds until signalled unless told otherwise */
    }
    if (o->requests > 0 && duration_set) {
        fprintf(stderr, "geogate-bench: give --duration or --requests, not both\n");
        return -EINVAL;
    }
    if (o->idle_conns == 0 && o->requests == 0 && o->duration <= 0) {
        fprintf(stderr, "geogate-bench: --duration must be > 0\n");
        return -EINVAL;
    }
    if (o->threads > o->connections) {
        o->threads = o->connections;
    }
    return 0;
}
