/*
 * config_int — what the two halves of the config loader share: the node tree libyaml's
 * events are turned into (config_yaml.c) and the loader state the key table is applied
 * with (config.c).  Private to gateway/config*.c; main thread only.
 */
#ifndef GEOGATE_CONFIG_INT_H
#define GEOGATE_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "gateway/base/config.h"

#define GW_CONFIG_MAX_FILE (1u << 20) /* a config is a few KiB; 4096 servers are ~100 KiB */
#define GW_CONFIG_MAX_DEPTH 32        /* our deepest key is 3 levels; 32 leaves room */
#define GW_CONFIG_MAX_KEYS 64         /* rows in the top-level table */
#define GW_CONFIG_MAX_SUBKEYS 8       /* rows in the table of a list element */
#define GW_CONFIG_MAX_STRING 4096
#define GW_CONFIG_PATH_LEN 160
#define GW_CONFIG_NO_FIELD ((size_t)-1)
#define GW_CONFIG_NAME_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
#define GW_CONFIG_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---------------------------------------------------------------------------------------
 * Parse: libyaml events into a small tree that remembers the line of every node.
 * ------------------------------------------------------------------------------------- */

enum gw_config_node_kind {
    GW_CONFIG_NODE_SCALAR = 0,
    GW_CONFIG_NODE_MAPPING,
    GW_CONFIG_NODE_SEQUENCE,
    GW_CONFIG_NODE_MAX
};

struct gw_config_node {
    enum gw_config_node_kind kind;
    int line;    /* 1-based */
    bool plain;  /* an unquoted scalar: "", "~" and "null" mean nothing */
    char *value; /* scalars: NUL-terminated copy (may hold NULs of its own: see len) */
    size_t len;
    struct gw_config_node **items; /* mapping: key, value, key, value...; sequence: elements */
    size_t nitems, cap;
};

struct gw_config_loader {
    const char *name; /* for messages */
    const char *text; /* the whole input, to find the line of a reader error */
    size_t textlen;
    char *err;
    size_t errlen;
    bool failed;
    struct gw_config *cfg;
    int seen[GW_CONFIG_MAX_KEYS]; /* line where each top-level row was set, 0 = absent */
};

/* Record the first error: "NAME:LINE: message".  Later calls are ignored, so callers
 * just return what this returns (-1).  Control characters become '?' so the message
 * stays one line whatever bytes the input held. */
int gw_config_fail(struct gw_config_loader *ld, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

void gw_config_node_free(struct gw_config_node *node);

/* Parse text into a node tree.  Returns 0 and sets *root (NULL for an empty document;
 * the caller frees it), or -1 with the error recorded. */
int gw_config_parse(struct gw_config_loader *ld, const char *text, size_t len,
                    struct gw_config_node **root);

#endif
