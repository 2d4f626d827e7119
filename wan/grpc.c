/*
 * grpc — status names, log level names, grpc-message escaping, grpc-timeout values and
 * the reconnect backoff shared by the WAN gRPC server and client (see wan/grpc.h).
 * Pure logic, any thread; no I/O and no allocation.
 */
#include <stdio.h>
#include <string.h>

#include "wan/grpc.h"

static const char *const status_names[WAN_GRPC_STATUS_MAX] = {
    [WAN_GRPC_OK] = "OK",
    [WAN_GRPC_CANCELLED] = "CANCELLED",
    [WAN_GRPC_UNKNOWN] = "UNKNOWN",
    [WAN_GRPC_INVALID_ARGUMENT] = "INVALID_ARGUMENT",
    [WAN_GRPC_DEADLINE_EXCEEDED] = "DEADLINE_EXCEEDED",
    [WAN_GRPC_NOT_FOUND] = "NOT_FOUND",
    [WAN_GRPC_ALREADY_EXISTS] = "ALREADY_EXISTS",
    [WAN_GRPC_PERMISSION_DENIED] = "PERMISSION_DENIED",
    [WAN_GRPC_RESOURCE_EXHAUSTED] = "RESOURCE_EXHAUSTED",
    [WAN_GRPC_FAILED_PRECONDITION] = "FAILED_PRECONDITION",
    [WAN_GRPC_ABORTED] = "ABORTED",
    [WAN_GRPC_OUT_OF_RANGE] = "OUT_OF_RANGE",
    [WAN_GRPC_UNIMPLEMENTED] = "UNIMPLEMENTED",
    [WAN_GRPC_INTERNAL] = "INTERNAL",
    [WAN_GRPC_UNAVAILABLE] = "UNAVAILABLE",
    [WAN_GRPC_DATA_LOSS] = "DATA_LOSS",
    [WAN_GRPC_UNAUTHENTICATED] = "UNAUTHENTICATED",
};

static const char *const level_names[WAN_GRPC_LOG_MAX] = {
    [WAN_GRPC_LOG_ERROR] = "error",
    [WAN_GRPC_LOG_WARN] = "warn",
    [WAN_GRPC_LOG_INFO] = "info",
    [WAN_GRPC_LOG_DEBUG] = "debug",
};

const char *wan_grpc_status_name(int status)
{
    if (status < 0 || status >= WAN_GRPC_STATUS_MAX) {
        return "?";
    }
    return status_names[status];
}

const char *wan_grpc_log_level_name(int level)
{
    if (level < 0 || level >= WAN_GRPC_LOG_MAX) {
        return "?";
    }
    return level_names[level];
}

static uint64_t xorshift64(uint64_t *state)
{
    uint64_t x = *state ? *state : UINT64_C(0x9e3779b97f4a7c15);

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

uint32_t wan_grpc_backoff_ms(unsigned attempt, uint32_t base_ms, uint32_t max_ms, uint64_t *rng)
{
    uint64_t ceiling, low, pick;
    uint64_t scratch = 0;

    if (base_ms == 0) {
        base_ms = 1;
    }
    if (max_ms < base_ms) {
        max_ms = base_ms;
    }
    /* Doubling past 2^32 only ever hits max_ms: stop shifting early. */
    ceiling = base_ms;
    for (unsigned i = 0; i < attempt && ceiling < max_ms; i++) {
        ceiling <<= 1;
    }
    if (ceiling > max_ms) {
        ceiling = max_ms;
    }
    low = ceiling / 2;
    pick = low + xorshift64(rng ? rng : &scratch) % (ceiling - low + 1);
    return pick ? (uint32_t)pick : 1;
}

size_t wan_grpc_message_encode(const char *in, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;

    if (outlen == 0) {
        return 0;
    }
    for (const unsigned char *p = (const unsigned char *)(in ? in : ""); *p; p++) {
        if (*p >= 0x20 && *p <= 0x7e && *p != '%') {
            if (n + 1 >= outlen) {
                break;
            }
            out[n++] = (char)*p;
        } else {
            if (n + 3 >= outlen) {
                break;
            }
            out[n++] = '%';
            out[n++] = hex[*p >> 4];
            out[n++] = hex[*p & 15];
        }
    }
    out[n] = '\0';
    return n;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

size_t wan_grpc_message_decode(const char *in, size_t inlen, char *out, size_t outlen)
{
    size_t n = 0;

    if (outlen == 0) {
        return 0;
    }
    for (size_t i = 0; i < inlen && n + 1 < outlen; i++) {
        unsigned char c = (unsigned char)in[i];

        if (c == '%' && i + 2 < inlen && hexval((unsigned char)in[i + 1]) >= 0 &&
            hexval((unsigned char)in[i + 2]) >= 0) {
            c = (unsigned char)(hexval((unsigned char)in[i + 1]) << 4 |
                                hexval((unsigned char)in[i + 2]));
            i += 2;
        }
        if (c == '\0') {
            break;
        }
        out[n++] = (char)c;
    }
    out[n] = '\0';
    return n;
}

char *wan_grpc_timeout_format(uint32_t ms, char *out)
{
    if (ms <= 99999999u) {
        snprintf(out, 10, "%um", (unsigned)ms);
    } else {
        snprintf(out, 10, "%uS", (unsigned)(ms / 1000u));
    }
    return out;
}
