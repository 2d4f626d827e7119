/*
 * fuzz_config — libFuzzer target for the YAML config loader: any bytes must give either a
 * config or one "name:LINE: message" error, never a crash, a leak or an unterminated
 * error string.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "gateway/base/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct gw_config *cfg = NULL;
    char err[512];

    memset(err, 'x', sizeof(err));
    if (gw_config_load_string((const char *)data, size, "fuzz.yml", &cfg, err, sizeof(err)) ==
        0) {
        gw_config_destroy(cfg);
    } else if (memchr(err, '\0', sizeof(err)) == NULL || strncmp(err, "fuzz.yml:", 9) != 0) {
        __builtin_trap(); /* every error names the file and a line */
    }
    return 0;
}
