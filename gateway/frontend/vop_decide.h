/*
 * vop_decide — what a client's write does over the current versioned item, as pure
 * functions: after a read, whether the command answers at once (memcached's "not there" or
 * "exists" replies, a tombstone being an absence) or writes a new item, and from what
 * (flags, expiry, value, cas over what is there or add into nothing); after a write, what
 * the node's one-line answer means.  No I/O, no clock, no allocation: vop.c reads, stamps
 * the version, builds the value, writes and ships.  Any thread.
 */
#ifndef GEOGATE_VOP_DECIDE_H
#define GEOGATE_VOP_DECIDE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/protocol/proto_mc.h"
#include "gateway/store/item.h"

/* A client's command, as the decision needs it. */
struct gw_vop_input {
    enum mc_cmd cmd;
    uint32_t flags;      /* the client's flags (storage commands) */
    uint32_t expiry;     /* the client's exptime as an absolute expiry (0 never, 1 expired) */
    uint64_t cas_unique; /* cas: the client's token */
    uint64_t delta;      /* incr/decr */
    size_t ndata;        /* the client's value length (storage commands) */
    bool remote;         /* read at a peer site (the key's local node is down): a cas token
                            is checked here against the peer item's version clock */
};

enum gw_vop_verdict {
    GW_VOP_ANSWER = 0, /* answer .answer, write nothing */
    GW_VOP_WRITE,      /* write the new item, then answer as the command does on success */
    GW_VOP_VERDICT_MAX
};

/* Where the new item's value comes from. */
enum gw_vop_value {
    GW_VOP_VALUE_CLIENT = 0, /* the client's value */
    GW_VOP_VALUE_APPEND,     /* the current value, then the client's */
    GW_VOP_VALUE_PREPEND,    /* the client's value, then the current one */
    GW_VOP_VALUE_NUMBER,     /* .num, padded with spaces to .new_len */
    GW_VOP_VALUE_CURRENT,    /* the current value as it is */
    GW_VOP_VALUE_MAX
};

extern const char *const gw_vop_verdict_names[GW_VOP_VERDICT_MAX];
extern const char *const gw_vop_value_names[GW_VOP_VALUE_MAX];

struct gw_vop_decision {
    enum gw_vop_verdict verdict;
    const char *answer; /* GW_VOP_ANSWER: the line for the client (static) */
    /* GW_VOP_WRITE: the new item */
    uint32_t client_flags;
    uint32_t expiry;
    enum gw_vop_value value;
    size_t new_len; /* its value's length */
    char num[24];   /* incr/decr: the result's digits (NUL-terminated) */
    size_t num_len;
    bool over; /* cas over what the read found (its cas), else add into nothing */
};

/* After a read that found cur (a tombstone is present but not found): decide in. */
void gw_vop_decide(const struct gw_vop_input *in, const struct gw_cur *cur,
                   struct gw_vop_decision *out);

/* The node's one-line answer to a write. */
enum gw_vop_reply {
    GW_VOP_REPLY_STORED = 0,
    GW_VOP_REPLY_NOT_STORED,
    GW_VOP_REPLY_EXISTS,
    GW_VOP_REPLY_NOT_FOUND,
    GW_VOP_REPLY_OTHER, /* an error: relayed to the client */
    GW_VOP_REPLY_MAX
};

/* What to do after it. */
enum gw_vop_next {
    GW_VOP_NEXT_STORED = 0, /* the item is in: ship it, answer success */
    GW_VOP_NEXT_READ,       /* read the current item and decide again (gw_vop_decide) */
    GW_VOP_NEXT_RELAY,      /* answer the node's line as it is */
    GW_VOP_NEXT_MAX
};

extern const char *const gw_vop_next_names[GW_VOP_NEXT_MAX];

/* Classify a reply line (len bytes, with or without its CRLF). */
enum gw_vop_reply gw_vop_reply_kind(const char *line, size_t len);

/* blind: the write was a set/add/cas sent without a read (an add that found something may
 * have found a tombstone, which it wins over; a cas that found EXISTS may have found one,
 * and then answers NOT_FOUND); else it was the cas/add after a read, and anything but
 * STORED or an error means a write landed in between: read again. */
enum gw_vop_next gw_vop_after_write(enum mc_cmd cmd, bool blind, enum gw_vop_reply reply);

#endif
