/*
 * grpc_frame — gRPC length-prefixed message framing: an incremental decoder that
 * accepts a stream's bytes in arbitrary chunks, and the encoder (wan/grpc_frame.h).
 * Pure logic, one stream on one thread; it does not parse protobuf or HTTP/2.
 */
#include <stdlib.h>
#include <string.h>

#include "wan/grpc.h"
#include "wan/grpc_frame.h"

static const char *const frame_errors[WAN_GRPC_FRAME_ERR_MAX] = {
    [WAN_GRPC_FRAME_OK] = "ok",
    [WAN_GRPC_FRAME_ETOOBIG] = "message larger than the limit",
    [WAN_GRPC_FRAME_ECOMPRESSED] = "compressed message (only identity encoding is accepted)",
    [WAN_GRPC_FRAME_EFLAG] = "bad compressed-flag byte in message prefix",
    [WAN_GRPC_FRAME_ETRUNCATED] = "stream ended inside a message",
    [WAN_GRPC_FRAME_ENOMEM] = "out of memory",
};

const char *wan_grpc_frame_strerror(int rc)
{
    if (rc == WAN_GRPC_FRAME_MESSAGE) {
        return "message";
    }
    if (rc > 0 || -rc >= WAN_GRPC_FRAME_ERR_MAX) {
        return "?";
    }
    return frame_errors[-rc];
}

void wan_grpc_deframer_init(struct wan_grpc_deframer *d, uint32_t max_len)
{
    memset(d, 0, sizeof(*d));
    d->max_len = max_len ? max_len : WAN_GRPC_MAX_MESSAGE_DEFAULT;
}

void wan_grpc_deframer_free(struct wan_grpc_deframer *d)
{
    free(d->buf);
    d->buf = NULL;
    d->cap = 0;
}

/* Make room for `want` payload bytes.  Grows by doubling from what already arrived,
 * so a prefix that merely claims 4 MiB costs nothing until the bytes come. */
static int deframer_reserve(struct wan_grpc_deframer *d, size_t want)
{
    size_t cap;
    uint8_t *nb;

    if (want <= d->cap) {
        return 0;
    }
    cap = d->cap ? d->cap : 256;
    while (cap < want) {
        cap *= 2;
    }
    if (cap > d->len) {
        cap = d->len;
    }
    nb = realloc(d->buf, cap);
    if (nb == NULL) {
        return -WAN_GRPC_FRAME_ENOMEM;
    }
    d->buf = nb;
    d->cap = cap;
    return 0;
}

int wan_grpc_deframer_feed(struct wan_grpc_deframer *d, const uint8_t *data, size_t len,
                           size_t *used, const uint8_t **msg, size_t *msg_len)
{
    static const uint8_t empty[1];
    size_t pos = 0;

    *used = 0;
    if (d->err) {
        return d->err;
    }
    if (d->complete) {
        d->complete = 0;
        d->hdr_have = 0;
        d->len = 0;
        d->have = 0;
    }
    while (d->hdr_have < WAN_GRPC_FRAME_PREFIX) {
        if (pos == len) {
            *used = pos;
            return WAN_GRPC_FRAME_MORE;
        }
        d->hdr[d->hdr_have++] = data[pos++];
        if (d->hdr_have < WAN_GRPC_FRAME_PREFIX) {
            continue;
        }
        d->len = (uint32_t)d->hdr[1] << 24 | (uint32_t)d->hdr[2] << 16 | (uint32_t)d->hdr[3] << 8 |
                 d->hdr[4];
        if (d->hdr[0] == 1) {
            d->err = -WAN_GRPC_FRAME_ECOMPRESSED;
        } else if (d->hdr[0] != 0) {
            d->err = -WAN_GRPC_FRAME_EFLAG;
        } else if (d->len > d->max_len) {
            d->err = -WAN_GRPC_FRAME_ETOOBIG;
        }
        if (d->err) {
            *used = pos;
            return d->err;
        }
    }
    if (d->have < d->len && pos < len) {
        size_t take = len - pos;
        int rc;

        if (take > d->len - d->have) {
            take = d->len - d->have;
        }
        rc = deframer_reserve(d, (size_t)d->have + take);
        if (rc < 0) {
            d->err = rc;
            *used = pos;
            return rc;
        }
        memcpy(d->buf + d->have, data + pos, take);
        d->have += (uint32_t)take;
        pos += take;
    }
    *used = pos;
    if (d->have < d->len) {
        return WAN_GRPC_FRAME_MORE;
    }
    d->complete = 1;
    *msg = d->len ? d->buf : empty;
    *msg_len = d->len;
    return WAN_GRPC_FRAME_MESSAGE;
}

int wan_grpc_deframer_finish(const struct wan_grpc_deframer *d)
{
    if (d->err) {
        return d->err;
    }
    if (d->complete || d->hdr_have == 0) {
        return 0;
    }
    return -WAN_GRPC_FRAME_ETRUNCATED;
}

size_t wan_grpc_deframer_pending(const struct wan_grpc_deframer *d)
{
    if (d->complete) {
        return 0;
    }
    return (size_t)d->hdr_have + d->have;
}

void wan_grpc_frame_prefix(uint8_t out[WAN_GRPC_FRAME_PREFIX], uint32_t len)
{
    out[0] = 0;
    out[1] = (uint8_t)(len >> 24);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
}

size_t wan_grpc_frame_size(const ProtobufCMessage *msg)
{
    return WAN_GRPC_FRAME_PREFIX + protobuf_c_message_get_packed_size(msg);
}

size_t wan_grpc_frame_write(const ProtobufCMessage *msg, uint8_t *out)
{
    size_t n = protobuf_c_message_get_packed_size(msg);

    if (n > UINT32_MAX) {
        return 0;
    }
    wan_grpc_frame_prefix(out, (uint32_t)n);
    return WAN_GRPC_FRAME_PREFIX + protobuf_c_message_pack(msg, out + WAN_GRPC_FRAME_PREFIX);
}
