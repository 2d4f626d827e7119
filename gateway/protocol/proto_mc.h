/*
 * proto_mc — the memcached ASCII protocol as memcached 1.6 parses it: request line
 * framing, tokenizing, validation with memcached's own error strings, and the
 * framing of backend replies.  Pure functions over memory: no sockets, no event
 * loop, no allocation except the parser's growable key array; any thread.  It does
 * not route or answer anything itself: it tells the caller what memcached would do.
 *
 *   client bytes --mc_frame_line--> one line --mc_parse--> struct mc_request
 *                                                  |-> FORWARD (+ data block of vlen+2 bytes,
 *                                                  |            checked by mc_data_block_ok)
 *                                                  |-> META    (mg ms md ma me: the line goes on
 *                                                  |            as the client sent it, ms with
 *                                                  |            a data block of vlen+2 bytes)
 *                                                  |-> LOCAL   (version, stats, verbosity, quit, mn,
 *                                                  |            cache_memlimit, lru_crawler metadump)
 *                                                  |-> ERROR   (reply `error`, maybe swallow)
 *                                                  '-> CLOSE
 */
#ifndef GEOGATE_PROTO_MC_H
#define GEOGATE_PROTO_MC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MC_KEY_MAX_LENGTH 250
/* memcached closes a connection whose first 2048 bytes hold no '\n', unless it is a
 * (large) multi-get. */
#define MC_LINE_SOFT_LIMIT 2048

enum mc_cmd {
    MC_CMD_NONE = 0,
    MC_CMD_GET,
    MC_CMD_GETS,
    MC_CMD_GAT,
    MC_CMD_GATS,
    MC_CMD_SET,
    MC_CMD_ADD,
    MC_CMD_REPLACE,
    MC_CMD_APPEND,
    MC_CMD_PREPEND,
    MC_CMD_CAS,
    MC_CMD_DELETE,
    MC_CMD_INCR,
    MC_CMD_DECR,
    MC_CMD_TOUCH,
    MC_CMD_FLUSH_ALL,
    MC_CMD_VERSION,
    MC_CMD_VERBOSITY,
    MC_CMD_STATS,
    MC_CMD_QUIT,
    MC_CMD_MG, /* the meta commands (protocol.txt "Meta Commands") */
    MC_CMD_MS,
    MC_CMD_MD,
    MC_CMD_MA,
    MC_CMD_ME,
    MC_CMD_MN,
    MC_CMD_CACHE_MEMLIMIT, /* to every node of the pool */
    MC_CMD_LRU_CRAWLER,    /* `lru_crawler metadump <arg>`: to every node of the pool */
    MC_CMD_UNSUPPORTED, /* a memcached command a gateway cannot honour (slabs, ...) */
    MC_CMD_MAX
};

enum mc_action {
    MC_ACT_FORWARD = 0, /* valid: route it (storage commands: a data block follows) */
    MC_ACT_LOCAL,       /* valid: the gateway answers it itself */
    MC_ACT_ERROR,       /* answer `error` (unless noreply); the next line is a new command */
    MC_ACT_ERROR_SWALLOW, /* answer `error` (unless noreply), then discard `swallow` bytes */
    MC_ACT_CLOSE,       /* an HTTP request line: hang up without a reply, as memcached does */
    MC_ACT_MAX
};

/* What mc_frame_line found at the front of a client's input. */
enum mc_frame {
    MC_FRAME_LINE = 0, /* a whole line: *line_len bytes of command, *consumed with the '\n' */
    MC_FRAME_MORE,     /* no '\n' yet: read more */
    MC_FRAME_CLOSE,    /* no '\n' in the first 2048 bytes and not a get: memcached closes */
    MC_FRAME_TOO_LONG, /* a multi-get line longer than the configured maximum */
    MC_FRAME_MAX
};

struct mc_token {
    const char *p;
    uint32_t len;
};

struct mc_request {
    enum mc_cmd cmd;
    enum mc_action action;
    bool noreply;
    const char *error; /* MC_ACT_ERROR*: memcached's reply line, without "\r\n" */
    uint32_t swallow;  /* MC_ACT_ERROR_SWALLOW: bytes of data block to discard */

    const char *key; /* single-key commands; points into the parsed line */
    uint32_t nkey;

    uint32_t flags;      /* storage: client flags (as memcached truncates them) */
    int32_t exptime;     /* storage, touch, gat/gats, flush_all delay */
    int32_t vlen;        /* storage: value length, without the trailing "\r\n" */
    uint64_t cas_unique; /* cas */
    uint64_t delta;      /* incr/decr */
    bool has_delay;      /* flush_all with a delay argument */
    uint32_t verbosity;  /* verbosity level */

    struct mc_token *keys; /* get/gets/gat/gats: every key, in the client's order */
    uint32_t nkeys;
    const char *subcommand; /* stats, lru_crawler: first argument or NULL */
    const char *arg;        /* stats, lru_crawler: second argument or NULL */
    uint32_t memlimit_mb;   /* cache_memlimit */
    bool meta_b;            /* meta: flag b, the key is base64 */
};

/* Per-connection (or per-thread) scratch: a growable key array.  Zero-initialise. */
struct mc_parser {
    struct mc_token *keys;
    uint32_t cap;
};

void mc_parser_release(struct mc_parser *p);

/*
 * Look for a request line at the front of buf.  On MC_FRAME_LINE, *line_len is the
 * length of the command (without '\n', and without the '\r' before it when memcached
 * would strip it) and *consumed the bytes to drop from the input.  max_line bounds
 * multi-get lines (MC_FRAME_TOO_LONG beyond it).
 */
enum mc_frame mc_frame_line(const char *buf, size_t len, size_t max_line, size_t *line_len,
                            size_t *consumed);

/* The same decision when the caller already knows there is no '\n' in its `total`
 * buffered bytes and can show only the first `headlen` of them (>= 110 when total
 * allows).  Returns MC_FRAME_MORE, MC_FRAME_CLOSE or MC_FRAME_TOO_LONG. */
enum mc_frame mc_frame_no_eol(const char *head, size_t headlen, size_t total, size_t max_line);

/*
 * Parse one command line in place (line[len] must be writable: tokens are
 * NUL-terminated inside it, as memcached does).  max_value is the largest vlen the
 * gateway accepts; bigger values get memcached's "object too large" answer.
 * Returns 0, or -1 when out of memory (the caller answers SERVER_ERROR).
 */
int mc_parse(struct mc_parser *p, char *line, size_t len, uint32_t max_value,
             struct mc_request *req);

/* A storage command's data block (vlen + 2 bytes) ends in "\r\n": memcached accepts
 * it only then, and otherwise answers "CLIENT_ERROR bad data chunk". */
bool mc_data_block_ok(const char last2[2]);

/* Inline: the request path asks these several times per request. */
static inline bool mc_cmd_is_storage(enum mc_cmd cmd)
{
    return cmd >= MC_CMD_SET && cmd <= MC_CMD_CAS;
}

static inline bool mc_cmd_is_retrieval(enum mc_cmd cmd)
{
    return cmd >= MC_CMD_GET && cmd <= MC_CMD_GATS;
}
static inline bool mc_cmd_is_meta(enum mc_cmd cmd)
{
    return cmd >= MC_CMD_MG && cmd <= MC_CMD_MN;
}
const char *mc_cmd_name(enum mc_cmd cmd);

/* A meta command's key in base64 (flag b) decoded into out (room for
 * MC_KEY_MAX_LENGTH bytes).  Returns its length, or -1 when it is not valid base64 (the
 * node answers that; the caller routes by the key as sent). */
int mc_meta_key_decode(const char *key, uint32_t nkey, unsigned char *out);

/* The size in a meta "VA <size> <flags>*" reply line; false when it has none. */
bool mc_meta_va_bytes(const char *line, size_t len, uint32_t *bytes);

/* memcached's number parsers, bug for bug (util.c): the whole token must be a number
 * (trailing whitespace allowed), no '-' on unsigned values that wrap. */
bool mc_strtoul(const char *s, uint32_t *out);
bool mc_strtol(const char *s, int32_t *out);

/* Write v's decimal digits at p (no NUL); returns how many, at most 20. */
size_t mc_put_u64(char *p, uint64_t v);
/* The same for a signed value ('-' first when negative); at most 20. */
size_t mc_put_i64(char *p, int64_t v);
/* A storage command's line, "<cmd> <key> <flags> <exptime> <bytes>[ <cas>]\r\n" (the
 * cas when has_cas), at p; returns its length, at most ncmd + nkey + 70. */
size_t mc_put_storage_line(char *p, const char *cmd, size_t ncmd, const char *key, size_t nkey,
                           uint32_t flags, int64_t exptime, uint64_t bytes, bool has_cas,
                           uint64_t cas);
bool mc_strtoull(const char *s, uint64_t *out);

/* The absolute expiry (unix seconds, 0 = never) of a client's exptime at `now`, by
 * memcached's rules: 0 never, up to 30 days relative, beyond that an absolute time;
 * negative, or an absolute time already past, is already expired (returns 1). */
uint32_t mc_expiry_abs(int32_t exptime, uint32_t now);

/* ---- backend replies ---- */

enum mc_reply_kind {
    MC_REPLY_LINE = 0, /* a one-line reply that ends the response (STORED, END, 42, errors...) */
    MC_REPLY_VALUE,    /* "VALUE key flags bytes [cas]": bytes + 2 data bytes follow */
    MC_REPLY_BAD,      /* not something memcached sends: the connection is out of sync */
    MC_REPLY_MAX
};

struct mc_reply {
    enum mc_reply_kind kind;
    const char *key; /* VALUE only */
    uint32_t nkey;
    uint32_t flags;
    uint32_t bytes;
    bool has_cas;
    uint64_t cas;
};

/* Classify one backend reply line (without "\r\n"). */
void mc_reply_parse(const char *line, size_t len, struct mc_reply *out);

#endif
