/*
 * fuzz_parser — libFuzzer target for gateway/proto_mc: drives arbitrary bytes through
 * the client-side state machine a proxy runs (frame a line, copy it into a buffer of
 * len + 1 bytes, parse it, then consume a storage command's data block or swallow a
 * refused one), and feeds the same bytes to the backend reply classifier.  Besides
 * the sanitizers it checks the parser's promises: keys lie inside the line, hold no
 * ' ' and no NUL and are at most 250 bytes, sizes and swallows agree.  Single thread;
 * the parser's key array is static so its growth is exercised across inputs.
 *
 *   input --mc_frame_line--> line copy --mc_parse--> FORWARD storage: vlen+2 bytes,
 *     ^                                    |                   mc_data_block_ok
 *     '------------------------------------+--> ERROR_SWALLOW: skip `swallow` bytes
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/protocol/proto_mc.h"

#define FUZZ_MAX_LINE 4096  /* small, so MC_FRAME_TOO_LONG is reachable */
#define FUZZ_MAX_VALUE 1000 /* small, so the too-large swallow is reachable */

static struct mc_parser parser;

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "fuzz_parser: check failed: %s (%s:%d)\n", #cond, __FILE__,      \
                    __LINE__);                                                               \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

static void check_key(const char *line, size_t len, const char *key, uint32_t nkey)
{
    CHECK(key != NULL);
    CHECK(nkey >= 1 && nkey <= MC_KEY_MAX_LENGTH);
    CHECK(key >= line && key + nkey <= line + len);
    CHECK(memchr(key, ' ', nkey) == NULL);
    CHECK(memchr(key, '\0', nkey) == NULL);
}

static void check_request(const char *line, size_t len, const struct mc_request *req)
{
    CHECK(req->action < MC_ACT_MAX);
    CHECK(req->cmd < MC_CMD_MAX);
    switch (req->action) {
    case MC_ACT_ERROR:
        CHECK(req->error != NULL && req->error[0] != '\0');
        CHECK(strchr(req->error, '\r') == NULL && strchr(req->error, '\n') == NULL);
        break;
    case MC_ACT_ERROR_SWALLOW:
        CHECK(req->error != NULL);
        CHECK(req->swallow >= 2);
        break;
    case MC_ACT_LOCAL:
        break;
    case MC_ACT_FORWARD:
        if (mc_cmd_is_retrieval(req->cmd)) {
            for (uint32_t i = 0; i < req->nkeys; i++) {
                check_key(line, len, req->keys[i].p, req->keys[i].len);
            }
        } else if (mc_cmd_is_storage(req->cmd)) {
            check_key(line, len, req->key, req->nkey);
            CHECK(req->vlen >= 0 && (uint32_t)req->vlen <= FUZZ_MAX_VALUE);
        } else if (req->cmd == MC_CMD_INCR || req->cmd == MC_CMD_DECR ||
                   req->cmd == MC_CMD_TOUCH || req->cmd == MC_CMD_DELETE) {
            check_key(line, len, req->key, req->nkey);
        } else {
            CHECK(req->cmd == MC_CMD_FLUSH_ALL);
        }
        break;
    default:
        abort();
    }
}

/* The client side: what a gateway does with a client's bytes. */
static void run_requests(const char *data, size_t size)
{
    size_t off = 0;

    while (off < size) {
        size_t line_len = 0, consumed = 0;
        struct mc_request req;
        char *line;
        enum mc_frame f = mc_frame_line(data + off, size - off, FUZZ_MAX_LINE, &line_len,
                                        &consumed);

        CHECK(f < MC_FRAME_MAX);
        if (f != MC_FRAME_LINE) {
            if (f == MC_FRAME_MORE || f == MC_FRAME_CLOSE || f == MC_FRAME_TOO_LONG) {
                /* the head-only variant must agree */
                size_t head = size - off < 128 ? size - off : 128;
                CHECK(mc_frame_no_eol(data + off, head, size - off, FUZZ_MAX_LINE) == f);
            }
            return;
        }
        CHECK(consumed >= 1 && consumed <= size - off);
        CHECK(line_len < consumed);
        CHECK(data[off + consumed - 1] == '\n');
        CHECK(memchr(data + off, '\n', line_len) == NULL);

        /* Exactly len + 1 bytes, and the extra byte is not a NUL: the parser may write
         * it but must not rely on it (a gateway reuses one scratch buffer). */
        line = malloc(line_len + 1);
        CHECK(line != NULL);
        memcpy(line, data + off, line_len);
        line[line_len] = '#';
        off += consumed;
        if (mc_parse(&parser, line, line_len, FUZZ_MAX_VALUE, &req) != 0) {
            free(line);
            return; /* out of memory */
        }
        check_request(line, line_len, &req);

        if (req.action == MC_ACT_FORWARD && mc_cmd_is_storage(req.cmd)) {
            size_t need = (size_t)req.vlen + 2;
            if (size - off < need) {
                free(line);
                return; /* waiting for the data block */
            }
            (void)mc_data_block_ok(data + off + need - 2);
            off += need;
        } else if (req.action == MC_ACT_ERROR_SWALLOW) {
            off += size - off < req.swallow ? size - off : req.swallow;
        } else if (req.action == MC_ACT_LOCAL && req.cmd == MC_CMD_QUIT) {
            free(line);
            return;
        }
        free(line);
    }
}

/* The backend side: the same bytes read as memcached replies. */
static void run_replies(const char *data, size_t size)
{
    size_t off = 0;

    while (off < size) {
        const char *el = memchr(data + off, '\n', size - off);
        size_t len;
        struct mc_reply r;
        char *line;

        if (el == NULL) {
            return;
        }
        len = (size_t)(el - (data + off));
        if (len > 0 && data[off + len - 1] == '\r') {
            len--;
        }
        line = malloc(len + 1); /* exact size, so ASan sees any over-read */
        CHECK(line != NULL);
        memcpy(line, data + off, len);
        off = (size_t)(el - data) + 1;
        mc_reply_parse(line, len, &r);
        CHECK(r.kind < MC_REPLY_MAX);
        if (r.kind == MC_REPLY_VALUE) {
            CHECK(r.key >= line && r.key + r.nkey <= line + len && r.nkey >= 1);
            CHECK(r.bytes <= UINT32_MAX - 2);
            off += size - off < (size_t)r.bytes + 2 ? size - off : (size_t)r.bytes + 2;
        }
        free(line);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run_requests((const char *)data, size);
    run_replies((const char *)data, size);
    return 0;
}
