/*
 * main — the command line of bin/geogate:
 *
 *   geogate --config FILE            run in the foreground, logs to stderr
 *   geogate --config FILE --check    validate FILE: print the first error with its
 *                                    line and exit 1, or exit 0 when it is valid
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/base/config.h"
#include "gateway/base/evmem.h"
#include "gateway/base/log.h"
#include "gateway/server.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: geogate --config FILE [--check]\n"
               "  --config FILE  the YAML config (see docs/CONFIG.md)\n"
               "  --check        validate the config and exit (0 valid, 1 invalid)\n"
               "  --version      print the version and exit\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"check", no_argument, NULL, 'k'},
        {"version", no_argument, NULL, 'V'},      {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    bool check = false;
    struct gw_config *cfg = NULL;
    char err[1024];
    int opt, rc;

    gw_evmem_install();
    while ((opt = getopt_long(argc, argv, "c:kVh", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 'k':
            check = true;
            break;
        case 'V':
            printf("geogate %s\n", GW_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (path == NULL || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (gw_config_load(path, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (check) {
        printf("%s: ok\n", path);
        gw_config_destroy(cfg);
        return 0;
    }
    gw_log_set_level(cfg->log_level);
    rc = gw_server_run(cfg);
    gw_config_destroy(cfg);
    return rc;
}
