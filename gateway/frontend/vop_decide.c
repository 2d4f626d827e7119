/*
 * vop_decide — see vop_decide.h.
 */
#include "gateway/frontend/vop_decide.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

const char *const gw_vop_verdict_names[GW_VOP_VERDICT_MAX] = {
    [GW_VOP_ANSWER] = "answer",
    [GW_VOP_WRITE] = "write",
};

const char *const gw_vop_value_names[GW_VOP_VALUE_MAX] = {
    [GW_VOP_VALUE_CLIENT] = "client",   [GW_VOP_VALUE_APPEND] = "append",
    [GW_VOP_VALUE_PREPEND] = "prepend", [GW_VOP_VALUE_NUMBER] = "number",
    [GW_VOP_VALUE_CURRENT] = "current",
};

const char *const gw_vop_next_names[GW_VOP_NEXT_MAX] = {
    [GW_VOP_NEXT_STORED] = "stored",
    [GW_VOP_NEXT_READ] = "read",
    [GW_VOP_NEXT_RELAY] = "relay",
};

/* incr/decr as memcached does them: the value must be a decimal number. */
static int vop_arith(const struct gw_vop_input *in, const struct gw_cur *cur, char *num,
                     size_t numlen)
{
    char buf[32];
    uint64_t n;

    if (cur->len == 0 || cur->len >= sizeof(buf)) {
        return -1;
    }
    memcpy(buf, cur->val, cur->len);
    buf[cur->len] = '\0';
    if (!mc_strtoull(buf, &n)) {
        return -1;
    }
    if (in->cmd == MC_CMD_INCR) {
        n += in->delta;
    } else {
        n = in->delta > n ? 0 : n - in->delta;
    }
    snprintf(num, numlen, "%" PRIu64, n);
    return 0;
}

static void answer(struct gw_vop_decision *out, const char *line)
{
    out->verdict = GW_VOP_ANSWER;
    out->answer = line;
}

void gw_vop_decide(const struct gw_vop_input *in, const struct gw_cur *cur,
                   struct gw_vop_decision *out)
{
    memset(out, 0, sizeof(*out));
    switch (in->cmd) {
    case MC_CMD_ADD:
        if (cur->found) {
            answer(out, "NOT_STORED");
            return;
        }
        break;
    case MC_CMD_CAS:
        /* Locally we get here only after memcached said EXISTS; at a peer the token is
         * checked here against the peer item's version clock. */
        if (!in->remote || !cur->found || cur->cas != in->cas_unique) {
            answer(out, cur->found ? "EXISTS" : "NOT_FOUND");
            return;
        }
        break;
    case MC_CMD_REPLACE:
    case MC_CMD_APPEND:
    case MC_CMD_PREPEND:
        if (!cur->found) {
            answer(out, "NOT_STORED");
            return;
        }
        break;
    case MC_CMD_INCR:
    case MC_CMD_DECR:
    case MC_CMD_TOUCH:
        if (!cur->found) {
            answer(out, "NOT_FOUND");
            return;
        }
        break;
    default:
        break;
    }
    switch (in->cmd) {
    case MC_CMD_ADD:
    case MC_CMD_CAS:
    case MC_CMD_REPLACE:
        out->expiry = in->expiry;
        out->client_flags = in->flags;
        out->value = GW_VOP_VALUE_CLIENT;
        out->new_len = in->ndata;
        break;
    case MC_CMD_APPEND:
    case MC_CMD_PREPEND:
        /* memcached keeps the old item's flags and expiry on append/prepend */
        out->expiry = cur->hdr.expiry;
        out->client_flags = cur->hdr.client_flags;
        out->value = in->cmd == MC_CMD_APPEND ? GW_VOP_VALUE_APPEND : GW_VOP_VALUE_PREPEND;
        out->new_len = cur->len + in->ndata;
        break;
    case MC_CMD_INCR:
    case MC_CMD_DECR:
        if (vop_arith(in, cur, out->num, sizeof(out->num)) != 0) {
            answer(out, "CLIENT_ERROR cannot increment or decrement non-numeric value");
            return;
        }
        out->expiry = cur->hdr.expiry;
        out->client_flags = cur->hdr.client_flags;
        out->value = GW_VOP_VALUE_NUMBER;
        out->num_len = strlen(out->num);
        /* memcached writes a number that fits over the old one in place, padded with
         * spaces to the old length ("100" decr 100 reads back as "0  "); so do we. */
        out->new_len = out->num_len <= cur->len ? cur->len : out->num_len;
        break;
    case MC_CMD_TOUCH:
        out->expiry = in->expiry;
        out->client_flags = cur->hdr.client_flags;
        out->value = GW_VOP_VALUE_CURRENT;
        out->new_len = cur->len;
        break;
    default:
        answer(out, "SERVER_ERROR unexpected operation");
        return;
    }
    out->verdict = GW_VOP_WRITE;
    /* Over a tombstone or an unversioned item of the same key, cas keeps us from
     * overwriting a write that landed since our read. */
    out->over = cur->present;
}

enum gw_vop_reply gw_vop_reply_kind(const char *line, size_t len)
{
    static const struct {
        const char *word;
        size_t len;
        enum gw_vop_reply kind;
    } words[] = {
        {"STORED", 6, GW_VOP_REPLY_STORED},
        {"NOT_STORED", 10, GW_VOP_REPLY_NOT_STORED},
        {"EXISTS", 6, GW_VOP_REPLY_EXISTS},
        {"NOT_FOUND", 9, GW_VOP_REPLY_NOT_FOUND},
    };

    if (len >= 2 && line[len - 2] == '\r' && line[len - 1] == '\n') {
        len -= 2;
    }
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        if (len == words[i].len && memcmp(line, words[i].word, len) == 0) {
            return words[i].kind;
        }
    }
    return GW_VOP_REPLY_OTHER;
}

enum gw_vop_next gw_vop_after_write(enum mc_cmd cmd, bool blind, enum gw_vop_reply reply)
{
    if (reply == GW_VOP_REPLY_STORED) {
        return GW_VOP_NEXT_STORED;
    }
    if (blind) {
        if ((cmd == MC_CMD_ADD && reply == GW_VOP_REPLY_NOT_STORED) ||
            (cmd == MC_CMD_CAS && reply == GW_VOP_REPLY_EXISTS)) {
            return GW_VOP_NEXT_READ;
        }
        return GW_VOP_NEXT_RELAY;
    }
    if (reply == GW_VOP_REPLY_EXISTS || reply == GW_VOP_REPLY_NOT_FOUND ||
        reply == GW_VOP_REPLY_NOT_STORED) {
        return GW_VOP_NEXT_READ;
    }
    return GW_VOP_NEXT_RELAY;
}
