/*
 * config_yaml — the parse step of the config loader: libyaml events into a small tree
 * that remembers the line of every node, with syntax errors, aliases, depth and size
 * refused here.  It knows no keys (config.c applies the key table).  Main thread only.
 */
#include "gateway/base/config_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

/*
 * Record the first error: "NAME:LINE: message".  Later calls are ignored, so callers just
 * return what this returns (-1).  Control characters become '?' so the message stays
 * one line whatever bytes the input held.
 */
int gw_config_fail(struct gw_config_loader *ld, int line, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (ld->failed) {
        return -1;
    }
    ld->failed = true;
    if (ld->err == NULL || ld->errlen == 0) {
        return -1;
    }
    n = snprintf(ld->err, ld->errlen, "%s:%d: ", ld->name, line < 1 ? 1 : line);
    if (n >= 0 && (size_t)n < ld->errlen) {
        va_start(ap, fmt);
        vsnprintf(ld->err + n, ld->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    for (char *p = ld->err; *p != '\0'; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            *p = '?';
        }
    }
    return -1;
}

void gw_config_node_free(struct gw_config_node *node)
{
    if (node == NULL) {
        return;
    }
    for (size_t i = 0; i < node->nitems; i++) {
        gw_config_node_free(node->items[i]);
    }
    free(node->items);
    free(node->value);
    free(node);
}

static int gw_config_node_append(struct gw_config_node *parent, struct gw_config_node *child)
{
    if (parent->nitems == parent->cap) {
        size_t cap = parent->cap ? parent->cap * 2 : 8;
        struct gw_config_node **items = realloc(parent->items, cap * sizeof(*items));

        if (items == NULL) {
            return -1;
        }
        parent->items = items;
        parent->cap = cap;
    }
    parent->items[parent->nitems++] = child;
    return 0;
}

/* libyaml reports reader errors (bad UTF-8, control characters) as a byte offset. */
static int gw_config_line_of_offset(const struct gw_config_loader *ld, size_t offset)
{
    int line = 1;

    for (size_t i = 0; i < offset && i < ld->textlen; i++) {
        line += ld->text[i] == '\n';
    }
    return line;
}

static int gw_config_fail_syntax(struct gw_config_loader *ld, const yaml_parser_t *parser)
{
    const char *problem = parser->problem ? parser->problem : "unknown problem";

    switch (parser->error) {
    case YAML_MEMORY_ERROR:
        return gw_config_fail(ld, 1, "out of memory");
    case YAML_READER_ERROR:
        return gw_config_fail(ld, gw_config_line_of_offset(ld, parser->problem_offset),
                              "YAML syntax error: %s", problem);
    default:
        if (parser->context != NULL) {
            return gw_config_fail(ld, (int)parser->problem_mark.line + 1,
                                  "YAML syntax error: %s (%s on line %d)", problem, parser->context,
                                  (int)parser->context_mark.line + 1);
        }
        return gw_config_fail(ld, (int)parser->problem_mark.line + 1, "YAML syntax error: %s",
                              problem);
    }
}

struct gw_config_tree_builder {
    struct gw_config_node *root;
    struct gw_config_node *open[GW_CONFIG_MAX_DEPTH]; /* mappings/sequences not yet ended */
    size_t depth;
    int documents;
    bool done;
};

/* Hang a new node under the innermost open container (or make it the root). */
static int gw_config_tree_attach(struct gw_config_loader *ld, struct gw_config_tree_builder *b,
                                 struct gw_config_node *node)
{
    if (b->depth == 0) {
        if (b->root != NULL) {
            gw_config_node_free(node);
            return gw_config_fail(ld, node->line, "only one YAML document is allowed");
        }
        b->root = node;
    } else if (gw_config_node_append(b->open[b->depth - 1], node) != 0) {
        gw_config_node_free(node);
        return gw_config_fail(ld, node->line, "out of memory");
    }
    if (node->kind != GW_CONFIG_NODE_SCALAR) {
        if (b->depth == GW_CONFIG_MAX_DEPTH) {
            return gw_config_fail(ld, node->line, "nested more than %d levels deep",
                                  GW_CONFIG_MAX_DEPTH);
        }
        b->open[b->depth++] = node;
    }
    return 0;
}

/* Feed one event into the tree.  Returns 0 or -1 (error recorded). */
static int gw_config_tree_event(struct gw_config_loader *ld, struct gw_config_tree_builder *b,
                                const yaml_event_t *ev)
{
    int line = (int)ev->start_mark.line + 1;
    struct gw_config_node *node;

    switch (ev->type) {
    case YAML_STREAM_END_EVENT:
        b->done = true;
        return 0;
    case YAML_DOCUMENT_START_EVENT:
        if (++b->documents > 1) {
            return gw_config_fail(ld, line, "only one YAML document is allowed");
        }
        return 0;
    case YAML_ALIAS_EVENT:
        return gw_config_fail(ld, line, "YAML aliases (*%.64s) are not supported",
                              (const char *)ev->data.alias.anchor);
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        if (b->depth > 0) {
            b->depth--;
        }
        return 0;
    case YAML_SCALAR_EVENT:
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
        break;
    default:
        return 0;
    }

    node = calloc(1, sizeof(*node));
    if (node == NULL) {
        return gw_config_fail(ld, line, "out of memory");
    }
    node->line = line;
    if (ev->type == YAML_SCALAR_EVENT) {
        node->kind = GW_CONFIG_NODE_SCALAR;
        node->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        node->len = ev->data.scalar.length;
        node->value = malloc(node->len + 1);
        if (node->value == NULL) {
            free(node);
            return gw_config_fail(ld, line, "out of memory");
        }
        memcpy(node->value, ev->data.scalar.value, node->len);
        node->value[node->len] = '\0';
    } else {
        node->kind =
            ev->type == YAML_MAPPING_START_EVENT ? GW_CONFIG_NODE_MAPPING : GW_CONFIG_NODE_SEQUENCE;
    }
    return gw_config_tree_attach(ld, b, node);
}

/*
 * Parse text into a node tree.  Returns 0 and sets *root (NULL for an empty document;
 * the caller frees it), or -1 with the error recorded.  Aliases are refused: they would
 * let a small file expand into a huge one, and a config has no use for them.
 */
int gw_config_parse(struct gw_config_loader *ld, const char *text, size_t len,
                    struct gw_config_node **root)
{
    struct gw_config_tree_builder b;
    yaml_parser_t parser;
    yaml_event_t ev;
    int rc = 0;

    memset(&b, 0, sizeof(b));
    *root = NULL;
    if (!yaml_parser_initialize(&parser)) {
        return gw_config_fail(ld, 1, "out of memory");
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    while (rc == 0 && !b.done) {
        if (!yaml_parser_parse(&parser, &ev)) {
            rc = gw_config_fail_syntax(ld, &parser);
            break;
        }
        rc = gw_config_tree_event(ld, &b, &ev);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    if (rc != 0) {
        gw_config_node_free(b.root);
        return -1;
    }
    *root = b.root;
    return 0;
}
