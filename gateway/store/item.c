/*
 * item — see item.h.
 *
 *   gets reply:  VALUE key MARKER n+32 cas \r\n [32-byte header][value] \r\n ... END \r\n
 *                VALUE key flags n cas \r\n [value] \r\n       (version 0: not ours)
 */
#include "gateway/store/item.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "gateway/protocol/proto_mc.h"
#include "wan/version.h"

const char *const gw_gets_next_names[GW_GETS_NEXT_MAX] = {
    [GW_GETS_ITEM] = "item",
    [GW_GETS_END] = "end",
    [GW_GETS_ERROR] = "error",
};

const char *const gw_item_cmd_names[GW_ITEM_CMD_MAX] = {
    [GW_ITEM_SET] = "set",
    [GW_ITEM_ADD] = "add",
    [GW_ITEM_CAS] = "cas",
};

#define UNEXPECTED "SERVER_ERROR unexpected reply from node"

/* The readers' cores, inlined into each other: a client's read-modify-write reads its item
 * through three of them. */
static inline void view_decode(struct gw_item_view *view, const struct mc_reply *mr,
                               const uint8_t *data, size_t dlen)
{
    const uint8_t *val = data;
    size_t vlen = dlen;

    view->key = mr->key;
    view->nkey = mr->nkey;
    view->has_cas = mr->has_cas;
    view->cas = mr->cas;
    view->versioned = wan_item_decode(mr->flags, data, dlen, &view->hdr, &val, &vlen) == 0;
    if (view->versioned && view->hdr.tombstone) {
        view->found = false; /* a tombstone is an absence */
        view->val = NULL;
        view->len = 0;
        return;
    }
    if (!view->versioned) {
        /* Written before geogate or by another tool: version 0, served as is. */
        memset(&view->hdr, 0, sizeof(view->hdr));
        view->hdr.client_flags = mr->flags;
        val = data;
        vlen = dlen;
    }
    view->found = true;
    view->val = val;
    view->len = vlen;
}

void gw_item_view_decode(struct gw_item_view *view, const struct mc_reply *mr, const uint8_t *data,
                         size_t dlen)
{
    view_decode(view, mr, data, dlen);
}

static inline void reader_init(struct gw_gets_reader *rd, struct evbuffer *reply)
{
    rd->len = evbuffer_get_length(reply);
    rd->p = (const char *)evbuffer_pullup(reply, (ssize_t)rd->len);
    rd->pos = 0;
}

void gw_gets_reader_init(struct gw_gets_reader *rd, struct evbuffer *reply)
{
    reader_init(rd, reply);
}

static inline enum gw_gets_next gets_next(struct gw_gets_reader *rd, struct gw_item_view *view)
{
    const char *line = rd->p + rd->pos;
    size_t left = rd->len - rd->pos;
    const char *eol = left > 0 ? memchr(line, '\n', left) : NULL;
    size_t n, end;
    struct mc_reply mr;

    if (eol == NULL || eol == line || eol[-1] != '\r') {
        return GW_GETS_ERROR;
    }
    n = (size_t)(eol - line) - 1;
    if (n == 3 && memcmp(line, "END", 3) == 0) {
        rd->pos += n + 2;
        return GW_GETS_END;
    }
    mc_reply_parse(line, n, &mr);
    end = (size_t)(eol + 1 - rd->p) + mr.bytes + 2;
    if (mr.kind != MC_REPLY_VALUE || end > rd->len) {
        return GW_GETS_ERROR;
    }
    view_decode(view, &mr, (const uint8_t *)eol + 1, mr.bytes);
    rd->pos = end;
    return GW_GETS_ITEM;
}

enum gw_gets_next gw_gets_next(struct gw_gets_reader *rd, struct gw_item_view *view)
{
    return gets_next(rd, view);
}

const char *gw_gets_reader_line(const struct gw_gets_reader *rd, size_t *n)
{
    const char *line = rd->p + rd->pos;
    size_t left = rd->len - rd->pos;
    const char *eol = left > 0 ? memchr(line, '\n', left) : NULL;

    *n = eol != NULL && eol > line ? (size_t)(eol - line) - 1 : left;
    return line;
}

void gw_cur_release(struct gw_cur *cur)
{
    free(cur->val);
    memset(cur, 0, sizeof(*cur));
}

static inline int gets_one(struct evbuffer *reply, struct gw_item_view *view, bool *present,
                           char *err, size_t errlen)
{
    struct gw_gets_reader rd;
    const char *line;
    size_t n;

    *present = false;
    reader_init(&rd, reply);
    switch (gets_next(&rd, view)) {
    case GW_GETS_END:
        return 0;
    case GW_GETS_ITEM:
        break;
    default:
        /* The node's own error line is answered as it is; anything else is not a reply
         * memcached sends to a gets. */
        line = gw_gets_reader_line(&rd, &n);
        snprintf(err, errlen, "%.*s", (int)(n < errlen ? n : errlen - 1), line);
        if (strncmp(err, "SERVER_ERROR", 12) != 0 && strncmp(err, "CLIENT_ERROR", 12) != 0) {
            snprintf(err, errlen, UNEXPECTED);
        }
        return -1;
    }
    if (!view->has_cas) {
        snprintf(err, errlen, UNEXPECTED);
        return -1;
    }
    *present = true;
    return 0;
}

int gw_gets_one(struct evbuffer *reply, struct gw_item_view *view, bool *present, char *err,
                size_t errlen)
{
    return gets_one(reply, view, present, err, errlen);
}

int gw_cur_parse(struct evbuffer *reply, struct gw_cur *cur, char *err, size_t errlen)
{
    struct gw_item_view view;
    bool present;

    gw_cur_release(cur);
    if (gets_one(reply, &view, &present, err, errlen) != 0) {
        return -1;
    }
    if (!present) {
        return 0;
    }
    cur->present = true;
    cur->cas = view.cas;
    cur->versioned = view.versioned;
    cur->hdr = view.hdr;
    if (!view.found) {
        return 0;
    }
    cur->val = malloc(view.len + 1);
    if (cur->val == NULL) {
        snprintf(err, errlen, "SERVER_ERROR out of memory");
        return -1;
    }
    memcpy(cur->val, view.val, view.len);
    cur->len = view.len;
    cur->found = true;
    return 0;
}

size_t gw_item_write(char *line, enum gw_item_cmd cmd, uint64_t cas, const struct gw_item *it,
                     uint32_t tombstone_ttl_s, struct evbuffer **data)
{
    const struct wan_item_header *h = it->hdr;
    size_t vlen = h->tombstone ? 0 : it->vlen;
    const char *name = gw_item_cmd_names[cmd]; /* each 3 letters */
    int64_t exptime;
    size_t n;

    *data = NULL;
    if (h->tombstone) {
        exptime = tombstone_ttl_s;
    } else {
        exptime = h->expiry == 1 ? -1 : (int64_t)h->expiry; /* 1: already expired */
    }
    /* not by snprintf: that was the most expensive step of a replicating set */
    n = mc_put_storage_line(line, name, 3, it->key, it->nkey, WAN_ITEM_FLAGS_MARKER, exptime,
                            WAN_ITEM_HEADER_SIZE + vlen, cmd == GW_ITEM_CAS, cas);
    if (vlen <= GW_ITEM_INLINE_VALUE) {
        /* A small item goes out in one piece with its command line. */
        wan_item_header_encode(h, (uint8_t *)line + n);
        n += WAN_ITEM_HEADER_SIZE;
        if (vlen > 0) {
            memcpy(line + n, it->value, vlen);
            n += vlen;
        }
        line[n++] = '\r';
        line[n++] = '\n';
        return n;
    }
    *data = evbuffer_new();
    if (*data == NULL) {
        return 0;
    }
    {
        uint8_t hdr[WAN_ITEM_HEADER_SIZE];
        wan_item_header_encode(h, hdr);
        evbuffer_add(*data, hdr, sizeof(hdr));
    }
    evbuffer_add(*data, it->value, vlen);
    evbuffer_add(*data, "\r\n", 2);
    return n;
}
