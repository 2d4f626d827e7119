/*
 * grpc — what the WAN gRPC server (wan/grpc_server.h) and client (wan/grpc_client.h)
 * share: gRPC status codes and their names, the log callback, size defaults, the
 * method paths, and the jittered exponential backoff the replication engine uses
 * between reconnect attempts.
 *
 * Pure logic: no I/O, no event loop, no allocation.  Any thread.  It does not frame
 * messages (wan/grpc_frame.h) or speak HTTP/2.
 */
#ifndef GEOGATE_WAN_GRPC_H
#define GEOGATE_WAN_GRPC_H

#include <stddef.h>
#include <stdint.h>

/* gRPC status codes (grpc/doc/statuscodes.md); the numbers are the wire values. */
enum wan_grpc_status {
    WAN_GRPC_OK = 0,
    WAN_GRPC_CANCELLED = 1,
    WAN_GRPC_UNKNOWN = 2,
    WAN_GRPC_INVALID_ARGUMENT = 3,
    WAN_GRPC_DEADLINE_EXCEEDED = 4,
    WAN_GRPC_NOT_FOUND = 5,
    WAN_GRPC_ALREADY_EXISTS = 6,
    WAN_GRPC_PERMISSION_DENIED = 7,
    WAN_GRPC_RESOURCE_EXHAUSTED = 8,
    WAN_GRPC_FAILED_PRECONDITION = 9,
    WAN_GRPC_ABORTED = 10,
    WAN_GRPC_OUT_OF_RANGE = 11,
    WAN_GRPC_UNIMPLEMENTED = 12,
    WAN_GRPC_INTERNAL = 13,
    WAN_GRPC_UNAVAILABLE = 14,
    WAN_GRPC_DATA_LOSS = 15,
    WAN_GRPC_UNAUTHENTICATED = 16,
    WAN_GRPC_STATUS_MAX
};

/* "OK", "INVALID_ARGUMENT", ...; "?" for values out of range. */
const char *wan_grpc_status_name(int status);

/* Log levels; the numbers match the gateway's (error 0 .. debug 3) so main can pass
 * them straight through. */
enum wan_grpc_log_level {
    WAN_GRPC_LOG_ERROR = 0, /* this end is broken (cannot listen, out of memory) */
    WAN_GRPC_LOG_WARN,      /* a peer was refused or sent bad input; a link went down */
    WAN_GRPC_LOG_INFO,      /* connections up and down, streams opened and finished */
    WAN_GRPC_LOG_DEBUG,     /* per stream detail */
    WAN_GRPC_LOG_MAX
};

const char *wan_grpc_log_level_name(int level);

/* Log sink: one finished line, no trailing newline.  Called on the WAN thread (the
 * event_base's), possibly from inside other callbacks of this module: it must not
 * call back into the server or client. */
typedef void (*wan_grpc_log_fn)(void *arg, enum wan_grpc_log_level level, const char *line);

/* Defaults used when a config field is 0. */
#define WAN_GRPC_MAX_MESSAGE_DEFAULT (4u << 20)      /* largest message either way */
#define WAN_GRPC_CONN_WINDOW_DEFAULT (16u << 20)     /* receive window of a connection */
#define WAN_GRPC_MAX_STREAMS_DEFAULT 32u             /* concurrent streams a peer may open */
#define WAN_GRPC_HANDSHAKE_TIMEOUT_DEFAULT_MS 10000u /* TCP + TLS + HTTP/2 preface */
#define WAN_GRPC_PING_INTERVAL_DEFAULT_MS 10000u     /* client keepalive PING */
#define WAN_GRPC_SHIP_HIGH_DEFAULT (8u << 20)        /* client ship queue high watermark */

/* The largest max_message accepted: a whole message must fit one stream window
 * (2^31 - 1) together with its 5-byte prefix. */
#define WAN_GRPC_MAX_MESSAGE_LIMIT (1u << 30)

/* Method paths. */
#define WAN_GRPC_PATH_SHIP "/geogate.wan.v1.Replication/Ship"
#define WAN_GRPC_PATH_READ "/geogate.wan.v1.Replication/Read"
#define WAN_GRPC_PATH_BACKFILL "/geogate.wan.v1.Replication/Backfill"
#define WAN_GRPC_PATH_HEALTH "/grpc.health.v1.Health/Check"

/* Jittered exponential backoff for reconnecting to a peer: attempt 0 waits about
 * base_ms, each further attempt doubles the ceiling up to max_ms, and the wait is
 * drawn uniformly from [ceiling / 2, ceiling] so that gateways which lost a peer at
 * the same moment do not all come back at the same moment (and never wait 0).
 * *rng is the caller's xorshift64 state (any non-zero seed; 0 is replaced by a
 * constant); it is advanced.  base_ms 0 is treated as 1, max_ms below base_ms as
 * base_ms.  Returns the delay in milliseconds, at least 1. */
uint32_t wan_grpc_backoff_ms(unsigned attempt, uint32_t base_ms, uint32_t max_ms, uint64_t *rng);

/* grpc-message values are percent-encoded (PROTOCOL-HTTP2.md): every byte outside
 * 0x20..0x7e, and '%', becomes %XX.  Writes at most outlen - 1 bytes plus a NUL,
 * never cutting an escape in half.  Returns the length written. */
size_t wan_grpc_message_encode(const char *in, char *out, size_t outlen);

/* The reverse; invalid escapes are kept as they are (the spec says so).  NULs decoded
 * from %00 end the string.  Returns the length written (at most outlen - 1). */
size_t wan_grpc_message_decode(const char *in, size_t inlen, char *out, size_t outlen);

/* gRPC timeout header value for ms milliseconds ("250m", "3000S" when too many digits
 * for milliseconds).  out needs 10 bytes.  Returns out. */
char *wan_grpc_timeout_format(uint32_t ms, char *out);

#endif
