/*
 * ctl_json — a small JSON reader (RFC 8259) for the admin listener's /status: a tree of
 * nodes, recursive descent with a depth limit, \u escapes decoded to UTF-8.  It does not
 * stream, keep number text, or detect duplicate keys (the first one wins on lookup).
 * Caller's thread.
 */
#include "gateway/ctl/ctl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define CTL_JSON_MAX_DEPTH 64

struct ctl_json_parser {
    const char *p, *end, *start;
    int depth;
    const char *error;
};

static void ctl_json_ws(struct ctl_json_parser *ps)
{
    while (ps->p < ps->end &&
           (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) {
        ps->p++;
    }
}

static struct ctl_json *ctl_json_node(enum ctl_json_type type)
{
    struct ctl_json *j = calloc(1, sizeof(*j));

    if (j != NULL) {
        j->type = type;
    }
    return j;
}

static int ctl_json_fail(struct ctl_json_parser *ps, const char *what)
{
    if (ps->error == NULL) {
        ps->error = what;
    }
    return -EINVAL;
}

static int ctl_json_hex4(const char *p, unsigned *out)
{
    unsigned v = 0;

    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') {
            v |= (unsigned)(c - '0');
        } else if (c >= 'a' && c <= 'f') {
            v |= (unsigned)(c - 'a' + 10);
        } else if (c >= 'A' && c <= 'F') {
            v |= (unsigned)(c - 'A' + 10);
        } else {
            return -EINVAL;
        }
    }
    *out = v;
    return 0;
}

static size_t ctl_json_utf8(unsigned cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* At the opening quote.  Returns 0 and *out (malloc'd), or -EINVAL / -ENOMEM. */
static int ctl_json_string(struct ctl_json_parser *ps, char **out)
{
    const char *q = ++ps->p;
    size_t cap = 0;
    char *s, *w;

    /* The decoded string is never longer than its source. */
    while (q < ps->end && *q != '"') {
        q += (*q == '\\' && q + 1 < ps->end) ? 2 : 1;
    }
    if (q >= ps->end) {
        return ctl_json_fail(ps, "unterminated string");
    }
    cap = (size_t)(q - ps->p) + 1;
    s = w = malloc(cap);
    if (s == NULL) {
        return -ENOMEM;
    }
    while (*ps->p != '"') {
        unsigned char c = (unsigned char)*ps->p++;
        unsigned cp, lo;
        if (c < 0x20) {
            free(s);
            return ctl_json_fail(ps, "control character in string");
        }
        if (c != '\\') {
            *w++ = (char)c;
            continue;
        }
        c = (unsigned char)*ps->p++;
        switch (c) {
        case '"':
        case '\\':
        case '/':
            *w++ = (char)c;
            break;
        case 'b':
            *w++ = '\b';
            break;
        case 'f':
            *w++ = '\f';
            break;
        case 'n':
            *w++ = '\n';
            break;
        case 'r':
            *w++ = '\r';
            break;
        case 't':
            *w++ = '\t';
            break;
        case 'u':
            if (ps->end - ps->p < 4 || ctl_json_hex4(ps->p, &cp) != 0) {
                free(s);
                return ctl_json_fail(ps, "bad \\u escape");
            }
            ps->p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && ps->end - ps->p >= 6 && ps->p[0] == '\\' &&
                ps->p[1] == 'u' && ctl_json_hex4(ps->p + 2, &lo) == 0 && lo >= 0xDC00 &&
                lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                ps->p += 6;
            }
            /* A \uXXXX takes 6 source bytes and at most 4 decoded ones (the pair: 12, 4). */
            w += ctl_json_utf8(cp, w);
            break;
        default:
            free(s);
            return ctl_json_fail(ps, "bad escape");
        }
    }
    ps->p++;
    *w = '\0';
    *out = s;
    return 0;
}

static int ctl_json_value(struct ctl_json_parser *ps, struct ctl_json **out);

static int ctl_json_container(struct ctl_json_parser *ps, struct ctl_json *j, char close)
{
    struct ctl_json **tail = &j->child;
    int rc;

    if (++ps->depth > CTL_JSON_MAX_DEPTH) {
        return ctl_json_fail(ps, "nested too deep");
    }
    ps->p++;
    ctl_json_ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        ps->depth--;
        return 0;
    }
    for (;;) {
        char *key = NULL;
        struct ctl_json *v = NULL;

        ctl_json_ws(ps);
        if (close == '}') {
            if (ps->p >= ps->end || *ps->p != '"') {
                return ctl_json_fail(ps, "expected a member name");
            }
            rc = ctl_json_string(ps, &key);
            if (rc != 0) {
                return rc;
            }
            ctl_json_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') {
                free(key);
                return ctl_json_fail(ps, "expected ':'");
            }
            ps->p++;
        }
        rc = ctl_json_value(ps, &v);
        if (rc != 0) {
            free(key);
            return rc;
        }
        v->key = key;
        *tail = v;
        tail = &v->next;
        ctl_json_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == close) {
            ps->p++;
            ps->depth--;
            return 0;
        }
        return ctl_json_fail(ps, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int ctl_json_literal(struct ctl_json_parser *ps, const char *word)
{
    size_t n = strlen(word);

    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) {
        return ctl_json_fail(ps, "unexpected character");
    }
    ps->p += n;
    return 0;
}

static int ctl_json_value(struct ctl_json_parser *ps, struct ctl_json **out)
{
    struct ctl_json *j = NULL;
    int rc = 0;

    ctl_json_ws(ps);
    if (ps->p >= ps->end) {
        return ctl_json_fail(ps, "unexpected end");
    }
    switch (*ps->p) {
    case '{':
    case '[':
        j = ctl_json_node(*ps->p == '{' ? CTL_JSON_OBJECT : CTL_JSON_ARRAY);
        if (j == NULL) {
            return -ENOMEM;
        }
        rc = ctl_json_container(ps, j, *ps->p == '{' ? '}' : ']');
        break;
    case '"':
        j = ctl_json_node(CTL_JSON_STRING);
        if (j == NULL) {
            return -ENOMEM;
        }
        rc = ctl_json_string(ps, &j->str);
        break;
    case 't':
    case 'f':
        j = ctl_json_node(CTL_JSON_BOOL);
        if (j == NULL) {
            return -ENOMEM;
        }
        j->b = *ps->p == 't';
        rc = ctl_json_literal(ps, j->b ? "true" : "false");
        break;
    case 'n':
        j = ctl_json_node(CTL_JSON_NULL);
        if (j == NULL) {
            return -ENOMEM;
        }
        rc = ctl_json_literal(ps, "null");
        break;
    default: {
        char num[64];
        size_t n = 0;
        char *endp;
        while (ps->p + n < ps->end && n + 1 < sizeof(num) &&
               strchr("+-0123456789.eE", ps->p[n]) != NULL) {
            num[n] = ps->p[n];
            n++;
        }
        num[n] = '\0';
        if (n == 0) {
            return ctl_json_fail(ps, "unexpected character");
        }
        j = ctl_json_node(CTL_JSON_NUMBER);
        if (j == NULL) {
            return -ENOMEM;
        }
        j->num = strtod(num, &endp);
        if (*endp != '\0') {
            rc = ctl_json_fail(ps, "bad number");
        }
        ps->p += n;
        break;
    }
    }
    if (rc != 0) {
        ctl_json_free(j);
        return rc;
    }
    *out = j;
    return 0;
}

int ctl_json_parse(const char *text, size_t len, struct ctl_json **out, char *err, size_t errlen)
{
    struct ctl_json_parser ps = {.p = text, .end = text + len, .start = text};
    struct ctl_json *j = NULL;
    int rc = ctl_json_value(&ps, &j);

    if (rc == 0) {
        ctl_json_ws(&ps);
        if (ps.p != ps.end) {
            ctl_json_free(j);
            j = NULL;
            rc = ctl_json_fail(&ps, "trailing characters");
        }
    }
    if (rc != 0) {
        snprintf(err, errlen, "%s at byte %zu",
                 rc == -ENOMEM ? "out of memory"
                 : ps.error    ? ps.error
                               : "bad JSON",
                 (size_t)(ps.p - ps.start));
        return rc;
    }
    *out = j;
    return 0;
}

void ctl_json_free(struct ctl_json *j)
{
    while (j != NULL) {
        struct ctl_json *next = j->next;
        ctl_json_free(j->child);
        free(j->key);
        free(j->str);
        free(j);
        j = next;
    }
}

const struct ctl_json *ctl_json_get(const struct ctl_json *obj, const char *key)
{
    if (obj == NULL || obj->type != CTL_JSON_OBJECT) {
        return NULL;
    }
    for (const struct ctl_json *c = obj->child; c != NULL; c = c->next) {
        if (c->key != NULL && strcmp(c->key, key) == 0) {
            return c;
        }
    }
    return NULL;
}

const char *ctl_json_str(const struct ctl_json *obj, const char *key, const char *def)
{
    const struct ctl_json *v = ctl_json_get(obj, key);

    return v != NULL && v->type == CTL_JSON_STRING ? v->str : def;
}

double ctl_json_num(const struct ctl_json *obj, const char *key, double def)
{
    const struct ctl_json *v = ctl_json_get(obj, key);

    return v != NULL && v->type == CTL_JSON_NUMBER ? v->num : def;
}

bool ctl_json_bool(const struct ctl_json *obj, const char *key, bool def)
{
    const struct ctl_json *v = ctl_json_get(obj, key);

    return v != NULL && v->type == CTL_JSON_BOOL ? v->b : def;
}

void ctl_json_write_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s != NULL && *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            fprintf(f, "\\%c", c);
        } else if (c < 0x20) {
            fprintf(f, "\\u%04x", c);
        } else {
            fputc(c, f);
        }
    }
    fputc('"', f);
}
