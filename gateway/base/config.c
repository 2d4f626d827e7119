/*
 * config — turn a geogate YAML file into a read-only struct gw_config, or into the
 * first error found, written "FILE:LINE: message".  It does not open sockets, read
 * certificates or create the spool directory (the daemon does, and reports its own
 * errors).  Main thread only: load, --check and reload.
 *
 *   text --libyaml events--> node tree --gw_config_keys[]--> struct gw_config --> cross checks
 *         parse: syntax,         validate: one row per key,           apply: defaults that
 *         aliases, depth         types, ranges, duplicates           depend on other keys,
 *                                unknown and missing keys            conflicts between keys
 *
 * Every key is one row {path, type, offset, default, validator}.  Defaults are written as
 * YAML text and go through the same converters as values from the file (so they obey
 * the same ranges), and gw_config_destroy() frees by walking the same rows: adding a key
 * is adding a row.  Lists of mappings (wan.peers, replication.rules) have tables of
 * their own, walked by the same code.
 */
#include "gateway/base/config.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>


#include "gateway/base/config_int.h"

/* ---------------------------------------------------------------------------------------
 * The key table: its types.
 * ------------------------------------------------------------------------------------- */

enum gw_config_type {
    GW_CONFIG_T_SECTION = 0, /* a mapping of further keys; field (optional): bool "present" */
    GW_CONFIG_T_STRING,      /* char * */
    GW_CONFIG_T_UINT,        /* unsigned integer of the field's size, in [umin, umax] */
    GW_CONFIG_T_DURATION,    /* the same, in milliseconds (or .unit) */
    GW_CONFIG_T_DOUBLE,      /* double in [dmin, dmax] */
    GW_CONFIG_T_BOOL,        /* bool */
    GW_CONFIG_T_ENUM,        /* one of .names, stored as an integer of the field's size */
    GW_CONFIG_T_ADDR,        /* struct gw_addr from "host:port" */
    GW_CONFIG_T_LIST,        /* array + count (.count_offset), elements as .list says */
    GW_CONFIG_T_MAX
};

struct gw_config_key;

/* Extra check run after a value was converted and stored; returns 0 or gw_config_fail(). */
typedef int (*gw_config_check_fn)(struct gw_config_loader *ld, const struct gw_config_node *node,
                                  const char *path, void *field);

/* How the elements of a list are read, freed and checked against the ones before. */
struct gw_config_list {
    size_t elem_size;
    const struct gw_config_key *keys; /* elements are mappings of these keys... */
    size_t nkeys;
    gw_config_check_fn parse_elem; /* ...or scalars converted by this */
    void (*free_elem)(void *elem); /* frees what parse_elem allocated */
    int (*check_elem)(struct gw_config_loader *ld, const struct gw_config_node *node,
                      const char *path, const void *array, size_t index);
    size_t line_offset; /* int line in the element, or GW_CONFIG_NO_FIELD */
    size_t max;
    bool nonempty;
};

struct gw_config_key {
    const char *path; /* dotted, relative to its table */
    enum gw_config_type type;
    size_t offset;   /* of the field in the table's struct, or GW_CONFIG_NO_FIELD */
    size_t size;     /* of the field */
    const char *def; /* default as YAML text, converted like a value; NULL = none */
    bool required;
    uint64_t umin, umax;
    double dmin, dmax;
    const char *unit;                               /* durations: "milliseconds" when NULL */
    const char *const *names;                       /* enums: NULL-terminated, index = value */
    int (*from_name)(const char *name, int *value); /* enums: instead of names */
    const struct gw_config_list *list;              /* lists */
    size_t count_offset;                            /* lists: size_t count, beside the array */
    gw_config_check_fn check;
};

#define GW_CONFIG_FIELD(type, member)                                                              \
    .offset = offsetof(type, member), .size = sizeof(((type *)0)->member)
#define GW_CONFIG_CFG(member) GW_CONFIG_FIELD(struct gw_config, member)

static const char *const gw_config_log_level_names[GW_LOG_MAX + 1] = {
    [GW_LOG_ERROR] = "error", [GW_LOG_WARN] = "warn", [GW_LOG_INFO] = "info",
    [GW_LOG_DEBUG] = "debug", [GW_LOG_MAX] = NULL,
};

static const char *const gw_config_fsync_names[GW_FSYNC_MAX + 1] = {
    [GW_FSYNC_ALWAYS] = "always",
    [GW_FSYNC_EVERYSEC] = "everysec",
    [GW_FSYNC_NO] = "no",
    [GW_FSYNC_MAX] = NULL,
};

static const char *const gw_config_repl_names[GW_REPL_MAX + 1] = {
    [GW_REPL_COPY] = "copy",
    [GW_REPL_INVALIDATE] = "invalidate",
    [GW_REPL_NONE] = "none",
    [GW_REPL_MAX] = NULL,
};

/* For the error message only; parsing goes through ring_hash_from_name. */
static const char *const gw_config_hash_names[] = {"md5", "fnv1a_64", NULL};
static const char *const gw_config_distribution_names[] = {"ketama", NULL};

static int gw_config_hash_from_name(const char *name, int *value)
{
    enum ring_hash hash;

    if (ring_hash_from_name(name, &hash) != 0) {
        return -1;
    }
    *value = (int)hash;
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Validate: convert one scalar to the row's type and store it.
 * ------------------------------------------------------------------------------------- */

static bool gw_config_is_null(const struct gw_config_node *node)
{
    return node->kind == GW_CONFIG_NODE_SCALAR && node->plain &&
           (node->len == 0 || strcmp(node->value, "~") == 0 || strcmp(node->value, "null") == 0 ||
            strcmp(node->value, "Null") == 0 || strcmp(node->value, "NULL") == 0);
}

/* "got ..." for a node of the wrong kind. */
static const char *gw_config_what(const struct gw_config_node *node)
{
    if (node->kind == GW_CONFIG_NODE_MAPPING) {
        return "a mapping";
    }
    if (node->kind == GW_CONFIG_NODE_SEQUENCE) {
        return "a list";
    }
    if (gw_config_is_null(node)) {
        return "an empty value";
    }
    return "a scalar";
}

static void gw_config_store_uint(void *field, size_t size, uint64_t v)
{
    uint8_t u8 = (uint8_t)v;
    uint16_t u16 = (uint16_t)v;
    uint32_t u32 = (uint32_t)v;

    switch (size) {
    case 1:
        memcpy(field, &u8, 1);
        break;
    case 2:
        memcpy(field, &u16, 2);
        break;
    case 4:
        memcpy(field, &u32, 4);
        break;
    default:
        memcpy(field, &v, 8);
        break;
    }
}

/* Decimal digits only.  Returns 0, -1 when not a number, -2 when negative or too big. */
static int gw_config_parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    bool negative = false;

    if (*s == '+' || *s == '-') {
        negative = *s == '-';
        s++;
    }
    if (*s == '\0') {
        return -1;
    }
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            return -1;
        }
    }
    for (; *s != '\0'; s++) {
        unsigned d = (unsigned)(*s - '0');

        if (v > (UINT64_MAX - d) / 10) {
            return -2;
        }
        v = v * 10 + d;
    }
    if (negative && v != 0) {
        return -2;
    }
    *out = v;
    return 0;
}

/*
 * The converters: each turns the text of a non-null scalar (no NUL inside) into its row's
 * type and stores it in field (when not NULL).  Returns 0, 1 when the text is not of
 * that type (gw_config_convert() says so), or -1 with a more precise error recorded.
 */
typedef int (*gw_config_convert_fn)(struct gw_config_loader *ld, const struct gw_config_key *row,
                                    const struct gw_config_node *node, const char *path,
                                    void *field);

static int gw_config_set_uint(struct gw_config_loader *ld, const struct gw_config_key *row,
                              const struct gw_config_node *node, const char *path, void *field)
{
    uint64_t v = 0;
    int rc = gw_config_parse_u64(node->value, &v);

    if (rc == -1) {
        return 1;
    }
    if (rc == -2 || v < row->umin || v > row->umax) {
        return gw_config_fail(ld, node->line, "%s: %.64s is out of range (%llu..%llu)", path,
                              node->value, (unsigned long long)row->umin,
                              (unsigned long long)row->umax);
    }
    if (field != NULL) {
        gw_config_store_uint(field, row->size, v);
    }
    return 0;
}

static int gw_config_set_double(struct gw_config_loader *ld, const struct gw_config_key *row,
                                const struct gw_config_node *node, const char *path, void *field)
{
    char *end = NULL;
    double v;

    /* strtod alone would also take "inf", "nan" and hex floats */
    if (node->value[strspn(node->value, "0123456789+-.eE")] != '\0') {
        return 1;
    }
    errno = 0;
    v = strtod(node->value, &end);
    if (end == node->value || *end != '\0') {
        return 1;
    }
    if (errno == ERANGE || !isfinite(v) || v < row->dmin || v > row->dmax) {
        return gw_config_fail(ld, node->line, "%s: %.64s is out of range (%g..%g)", path,
                              node->value, row->dmin, row->dmax);
    }
    if (field != NULL) {
        memcpy(field, &v, sizeof(v));
    }
    return 0;
}

static int gw_config_set_bool(struct gw_config_loader *ld, const struct gw_config_key *row,
                              const struct gw_config_node *node, const char *path, void *field)
{
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};
    bool v;
    (void)ld, (void)row, (void)path; /* the signature of every converter */

    for (size_t i = 0; i < GW_CONFIG_ARRAY_LEN(yes); i++) {
        if (strcasecmp(node->value, yes[i]) == 0 || strcasecmp(node->value, no[i]) == 0) {
            v = strcasecmp(node->value, yes[i]) == 0;
            if (field != NULL) {
                memcpy(field, &v, sizeof(v));
            }
            return 0;
        }
    }
    return 1;
}

static int gw_config_set_enum(struct gw_config_loader *ld, const struct gw_config_key *row,
                              const struct gw_config_node *node, const char *path, void *field)
{
    int v = -1;
    (void)ld, (void)path;

    if (row->from_name != NULL) {
        if (row->from_name(node->value, &v) != 0) {
            v = -1;
        }
    } else {
        for (int i = 0; row->names[i] != NULL; i++) {
            if (strcmp(node->value, row->names[i]) == 0) {
                v = i;
            }
        }
    }
    if (v < 0) {
        return 1;
    }
    if (field != NULL) {
        gw_config_store_uint(field, row->size, (uint64_t)v);
    }
    return 0;
}

static int gw_config_set_string(struct gw_config_loader *ld, const struct gw_config_key *row,
                                const struct gw_config_node *node, const char *path, void *field)
{
    char *s;
    (void)row;

    if (node->len > GW_CONFIG_MAX_STRING) {
        return gw_config_fail(ld, node->line, "%s: longer than %d bytes", path,
                              GW_CONFIG_MAX_STRING);
    }
    if (field == NULL) {
        return 0;
    }
    s = strdup(node->value);
    if (s == NULL) {
        return gw_config_fail(ld, node->line, "out of memory");
    }
    free(*(char **)field);
    *(char **)field = s;
    return 0;
}

/*
 * Split "host:port" (or "[v6]:port") into addr, allocating addr->host without brackets.
 * Returns 0, or -1 with *why saying what is wrong.
 */
static int gw_config_addr_split(const char *s, struct gw_addr *addr, const char **why)
{
    const char *host, *port, *p;
    size_t hostlen, addrlen;
    uint64_t portnum = 0;

    if (*s == '[') {
        const char *close = strchr(s, ']');

        if (close == NULL) {
            *why = "missing ']' after the IPv6 address";
            return -1;
        }
        host = s + 1;
        hostlen = (size_t)(close - host);
        if (close[1] != ':') {
            *why = "missing port";
            return -1;
        }
        port = close + 2;
        /* hex digits and colons (maybe a dotted IPv4 tail), then an optional %zone */
        p = memchr(host, '%', hostlen);
        addrlen = p ? (size_t)(p - host) : hostlen;
        if (addrlen == 0 || memchr(host, ':', addrlen) == NULL ||
            strspn(host, "0123456789abcdefABCDEF:.") < addrlen ||
            (p != NULL &&
             (p + 1 == close || strspn(p + 1, GW_CONFIG_NAME_CHARS) < (size_t)(close - p - 1)))) {
            *why = "bad IPv6 address";
            return -1;
        }
    } else {
        p = strrchr(s, ':');
        if (p == NULL) {
            *why = "missing port";
            return -1;
        }
        host = s;
        hostlen = (size_t)(p - s);
        port = p + 1;
        if (hostlen == 0) {
            *why = "empty host";
            return -1;
        }
        if (memchr(host, ':', hostlen) != NULL) {
            *why = "IPv6 addresses need brackets, like [::1]:11211";
            return -1;
        }
        if (strspn(host, GW_CONFIG_NAME_CHARS) < hostlen) {
            *why = "bad character in host";
            return -1;
        }
    }
    if (hostlen > 253) {
        *why = "host longer than 253 characters";
        return -1;
    }
    if (*port == '+' || *port == '-' || strlen(port) > 5 ||
        gw_config_parse_u64(port, &portnum) != 0) {
        *why = *port == '\0' ? "missing port" : "port is not a number";
        return -1;
    }
    if (portnum < 1 || portnum > 65535) {
        *why = "port out of range (1..65535)";
        return -1;
    }
    addr->host = strndup(host, hostlen);
    if (addr->host == NULL) {
        *why = "out of memory";
        return -1;
    }
    addr->port = (uint16_t)portnum;
    return 0;
}

static int gw_config_set_addr(struct gw_config_loader *ld, const struct gw_config_key *row,
                              const struct gw_config_node *node, const char *path, void *field)
{
    struct gw_addr addr;
    const char *why = "";
    (void)row;

    if (gw_config_addr_split(node->value, &addr, &why) != 0) {
        return gw_config_fail(ld, node->line, "%s: '%.64s' is not host:port (%s)", path,
                              node->value, why);
    }
    if (field == NULL) {
        free(addr.host);
        return 0;
    }
    free(((struct gw_addr *)field)->host);
    memcpy(field, &addr, sizeof(addr));
    return 0;
}

/* What each type of row expects, for messages, and how it is converted. */
static const struct {
    const char *expected;
    gw_config_convert_fn convert;
} gw_config_types[GW_CONFIG_T_MAX] = {
    [GW_CONFIG_T_STRING] = {"a string", gw_config_set_string},
    [GW_CONFIG_T_UINT] = {"an integer", gw_config_set_uint},
    [GW_CONFIG_T_DURATION] = {NULL, gw_config_set_uint}, /* gw_config_expected() */
    [GW_CONFIG_T_DOUBLE] = {"a number", gw_config_set_double},
    [GW_CONFIG_T_BOOL] = {"true or false", gw_config_set_bool},
    [GW_CONFIG_T_ENUM] = {NULL, gw_config_set_enum}, /* gw_config_expected() */
    [GW_CONFIG_T_ADDR] = {"host:port", gw_config_set_addr},
};

static void gw_config_expected(const struct gw_config_key *row, char *buf, size_t len)
{
    size_t n;

    if (row->type == GW_CONFIG_T_DURATION) {
        snprintf(buf, len, "a duration in %s (an integer)", row->unit ? row->unit : "milliseconds");
    } else if (row->type == GW_CONFIG_T_ENUM) {
        n = (size_t)snprintf(buf, len, "one of");
        for (int i = 0; row->names[i] != NULL && n < len; i++) {
            int r = snprintf(buf + n, len - n, "%s%s", i ? " | " : " ", row->names[i]);

            n += r > 0 ? (size_t)r : 0;
        }
    } else {
        snprintf(buf, len, "%s", gw_config_types[row->type].expected);
    }
}

/*
 * Convert one scalar for row and store it in field (NULL: check only), then run the
 * row's validator.  Returns 0 or -1 (error recorded).
 */
static int gw_config_convert(struct gw_config_loader *ld, const struct gw_config_key *row,
                             const struct gw_config_node *node, const char *path, void *field)
{
    char expected[160];
    int rc;

    if (row->type >= GW_CONFIG_T_MAX || gw_config_types[row->type].convert == NULL) {
        return gw_config_fail(ld, node->line, "%s: internal error: bad key type", path);
    }
    gw_config_expected(row, expected, sizeof(expected));
    if (node->kind != GW_CONFIG_NODE_SCALAR || gw_config_is_null(node)) {
        return gw_config_fail(ld, node->line, "%s: expected %s, got %s%s", path, expected,
                              gw_config_what(node),
                              row->type == GW_CONFIG_T_STRING && gw_config_is_null(node)
                                  ? " (write \"\" for an empty string)"
                                  : "");
    }
    if (node->len != strlen(node->value)) {
        return gw_config_fail(ld, node->line, "%s: contains a NUL byte", path);
    }
    rc = gw_config_types[row->type].convert(ld, row, node, path, field);
    if (rc == 1) {
        return gw_config_fail(ld, node->line, "%s: expected %s, got '%.64s'", path, expected,
                              node->value);
    }
    if (rc == 0 && row->check != NULL && field != NULL) {
        rc = row->check(ld, node, path, field);
    }
    return rc;
}

static bool gw_config_addr_equal(const struct gw_addr *a, const struct gw_addr *b)
{
    return a->host != NULL && b->host != NULL && a->port == b->port &&
           strcasecmp(a->host, b->host) == 0;
}

/* "host:port", with brackets around an IPv6 host. */
static void gw_config_addr_format(const struct gw_addr *a, char *buf, size_t len)
{
    snprintf(buf, len, strchr(a->host, ':') ? "[%s]:%u" : "%s:%u", a->host, (unsigned)a->port);
}

/* ---------------------------------------------------------------------------------------
 * Validators of single values and of list elements.
 * ------------------------------------------------------------------------------------- */

/* A site name ends up in certificates, metric labels and spool paths: keep it plain. */
static int gw_config_check_site(struct gw_config_loader *ld, const struct gw_config_node *node,
                                const char *path, void *field)
{
    const char *s = *(char **)field;
    size_t len = strlen(s);

    if (len == 0 || len > 63 ||
        !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') ||
          (s[0] >= '0' && s[0] <= '9')) ||
        strspn(s, GW_CONFIG_NAME_CHARS) < len) {
        return gw_config_fail(ld, node->line,
                              "%s: '%.64s' is not a site name (1 to 63 letters, digits, '.', "
                              "'_' or '-', starting with a letter or digit)",
                              path, s);
    }
    return 0;
}

static int gw_config_check_nonempty(struct gw_config_loader *ld, const struct gw_config_node *node,
                                    const char *path, void *field)
{
    if (**(char **)field == '\0') {
        return gw_config_fail(ld, node->line, "%s: must not be empty", path);
    }
    return 0;
}

/* A prefix is the start of a memcached key: at most 250 bytes, no spaces or controls. */
static int gw_config_check_prefix(struct gw_config_loader *ld, const struct gw_config_node *node,
                                  const char *path, void *field)
{
    const unsigned char *s = *(unsigned char **)field;

    if (node->len != strlen((const char *)s)) {
        return gw_config_fail(ld, node->line, "%s: contains a NUL byte", path);
    }
    if (node->len > 250) {
        return gw_config_fail(ld, node->line, "%s: longer than a memcached key (250 bytes)", path);
    }
    for (; *s != '\0'; s++) {
        if (*s <= ' ' || *s == 0x7f) {
            return gw_config_fail(ld, node->line,
                                  "%s: memcached keys cannot hold spaces or control characters",
                                  path);
        }
    }
    return 0;
}

static void gw_config_free_addr(void *elem)
{
    struct gw_addr *addr = elem;

    free(addr->host);
    addr->host = NULL;
}

static int gw_config_parse_addr_elem(struct gw_config_loader *ld, const struct gw_config_node *node,
                                     const char *path, void *elem)
{
    static const struct gw_config_key row = {.type = GW_CONFIG_T_ADDR};

    return gw_config_convert(ld, &row, node, path, elem);
}

static int gw_config_check_addr(struct gw_config_loader *ld, const struct gw_config_node *node,
                                const char *path, const void *array, size_t index)
{
    const struct gw_addr *addrs = array;
    char buf[300];

    for (size_t i = 0; i < index; i++) {
        if (gw_config_addr_equal(&addrs[i], &addrs[index])) {
            gw_config_addr_format(&addrs[index], buf, sizeof(buf));
            return gw_config_fail(ld, node->line, "%s: duplicate address %s", path, buf);
        }
    }
    return 0;
}

static void gw_config_free_server(void *elem)
{
    struct gw_server_conf *srv = elem;

    free(srv->addr.host);
    free(srv->name);
    free(srv->label);
    free(srv->ring_name);
    memset(srv, 0, sizeof(*srv));
}

/*
 * One pool.servers entry, "host:port:weight [name]" as twemproxy writes it: the weight
 * is the last ':' field of the first word, the optional name is the second word.
 */
static int gw_config_parse_server(struct gw_config_loader *ld, const struct gw_config_node *node,
                                  const char *path, void *elem)
{
    struct gw_server_conf *srv = elem;
    char ring_name[512], label[300];
    const char *s, *why = NULL, *colon;
    char *word = NULL;
    size_t wlen, nlen;
    uint64_t weight = 0;

    if (node->kind != GW_CONFIG_NODE_SCALAR || gw_config_is_null(node)) {
        return gw_config_fail(ld, node->line, "%s: expected host:port:weight [name], got %s", path,
                              gw_config_what(node));
    }
    s = node->value;
    wlen = strcspn(s, " \t");
    nlen = strcspn(s + wlen + strspn(s + wlen, " \t"), " \t");
    if (s[wlen + strspn(s + wlen, " \t") + nlen] != '\0') {
        why = "text after the name";
    } else if ((word = strndup(s, wlen)) == NULL) {
        return gw_config_fail(ld, node->line, "out of memory");
    } else if ((colon = strrchr(word, ':')) == NULL) {
        why = "missing port and weight";
    } else if (gw_config_parse_u64(colon + 1, &weight) != 0 || colon[1] == '+' || colon[1] == '-' ||
               weight < 1 || weight > 65535) {
        why = colon[1] == '\0' ? "missing weight" : "weight must be an integer 1..65535";
    } else {
        word[colon - word] = '\0';
        /* "host:port" alone: what looked like the weight was the port */
        if (word[0] == '[' ? strstr(word, "]:") == NULL : strchr(word, ':') == NULL) {
            why = "missing weight";
        } else {
            gw_config_addr_split(word, &srv->addr, &why); /* sets why on failure */
        }
    }
    free(word);
    if (why != NULL) {
        return gw_config_fail(ld, node->line, "%s: '%.64s' is not host:port:weight [name] (%s)",
                              path, s, why);
    }
    srv->weight = (uint32_t)weight;
    if (nlen > 0) {
        if (nlen > 255) {
            return gw_config_fail(ld, node->line, "%s: server name longer than 255 bytes", path);
        }
        srv->name = strndup(s + wlen + strspn(s + wlen, " \t"), nlen);
        if (srv->name == NULL) {
            return gw_config_fail(ld, node->line, "out of memory");
        }
    }
    gw_config_addr_format(&srv->addr, label, sizeof(label));
    if (ring_server_name(ring_name, sizeof(ring_name), srv->addr.host, srv->addr.port, srv->name) !=
        0) {
        return gw_config_fail(ld, node->line, "%s: server name too long", path);
    }
    srv->label = strdup(label);
    srv->ring_name = strdup(ring_name);
    if (srv->label == NULL || srv->ring_name == NULL) {
        return gw_config_fail(ld, node->line, "out of memory");
    }
    return 0;
}

static int gw_config_check_server(struct gw_config_loader *ld, const struct gw_config_node *node,
                                  const char *path, const void *array, size_t index)
{
    const struct gw_server_conf *srv = array, *cur = &srv[index];

    for (size_t i = 0; i < index; i++) {
        if (gw_config_addr_equal(&srv[i].addr, &cur->addr)) {
            return gw_config_fail(ld, node->line, "%s: duplicate server %s (first on line %d)",
                                  path, cur->label, srv[i].line);
        }
        if (cur->name != NULL && srv[i].name != NULL && strcmp(cur->name, srv[i].name) == 0) {
            return gw_config_fail(ld, node->line,
                                  "%s: duplicate server name '%.64s' (first on line %d)", path,
                                  cur->name, srv[i].line);
        }
        /* two servers hashed under one name would share every ring point */
        if (strcmp(cur->ring_name, srv[i].ring_name) == 0) {
            return gw_config_fail(ld, node->line,
                                  "%s: server %s has the same ring name '%.64s' as the server "
                                  "on line %d",
                                  path, cur->label, cur->ring_name, srv[i].line);
        }
    }
    return 0;
}

static int gw_config_check_peer(struct gw_config_loader *ld, const struct gw_config_node *node,
                                const char *path, const void *array, size_t index)
{
    const struct gw_peer_conf *peers = array;

    for (size_t i = 0; i < index; i++) {
        if (strcmp(peers[i].site, peers[index].site) == 0) {
            return gw_config_fail(ld, node->line, "%s: duplicate peer site '%s' (first on line %d)",
                                  path, peers[index].site, peers[i].line);
        }
    }
    return 0;
}

/* The first matching prefix wins, so a rule behind a shorter prefix of itself is dead. */
static int gw_config_check_rule(struct gw_config_loader *ld, const struct gw_config_node *node,
                                const char *path, const void *array, size_t index)
{
    const struct gw_rule_conf *rules = array, *cur = &rules[index];

    for (size_t i = 0; i < index; i++) {
        if (strncmp(cur->prefix, rules[i].prefix, strlen(rules[i].prefix)) == 0) {
            return gw_config_fail(ld, node->line,
                                  "%s: prefix '%.64s' can never match: the rule on line %d "
                                  "(prefix '%.64s') comes first",
                                  path, cur->prefix, rules[i].line, rules[i].prefix);
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * The tables: every key of the file, one row each.  Document each one in docs/CONFIG.md.
 * ------------------------------------------------------------------------------------- */

#define GW_CONFIG_MS_MAX 86400000u /* one day */
#define GW_CONFIG_PEER(member) GW_CONFIG_FIELD(struct gw_peer_conf, member)
#define GW_CONFIG_RULE(member) GW_CONFIG_FIELD(struct gw_rule_conf, member)
#define GW_CONFIG_NONE .offset = GW_CONFIG_NO_FIELD

/* clang-format off */
static const struct gw_config_list gw_config_server_list = {
    .elem_size = sizeof(struct gw_server_conf), .parse_elem = gw_config_parse_server,
    .free_elem = gw_config_free_server, .check_elem = gw_config_check_server,
    .line_offset = offsetof(struct gw_server_conf, line), .max = 4096, .nonempty = true,
};

static const struct gw_config_list gw_config_addr_list = {
    .elem_size = sizeof(struct gw_addr), .parse_elem = gw_config_parse_addr_elem,
    .free_elem = gw_config_free_addr, .check_elem = gw_config_check_addr,
    .line_offset = GW_CONFIG_NO_FIELD, .max = 16, .nonempty = true,
};

/* One wan.peers entry: { site: eu-west, addresses: [host:port, ...], priority: 1 } */
static const struct gw_config_key gw_config_peer_keys[] = {
    {.path = "site", .type = GW_CONFIG_T_STRING, GW_CONFIG_PEER(site), .required = true,
     .check = gw_config_check_site},
    {.path = "addresses", .type = GW_CONFIG_T_LIST, GW_CONFIG_PEER(addresses), .required = true,
     .list = &gw_config_addr_list, .count_offset = offsetof(struct gw_peer_conf, naddresses)},
    {.path = "priority", .type = GW_CONFIG_T_UINT, GW_CONFIG_PEER(priority), .def = "1",
     .umin = 0, .umax = 65535},
};

static const struct gw_config_list gw_config_peer_list = {
    .elem_size = sizeof(struct gw_peer_conf), .keys = gw_config_peer_keys,
    .nkeys = GW_CONFIG_ARRAY_LEN(gw_config_peer_keys), .check_elem = gw_config_check_peer,
    .line_offset = offsetof(struct gw_peer_conf, line), .max = 64,
};

/* One replication.rules entry: { prefix: "tmp:", mode: none } */
static const struct gw_config_key gw_config_rule_keys[] = {
    {.path = "prefix", .type = GW_CONFIG_T_STRING, GW_CONFIG_RULE(prefix), .required = true,
     .check = gw_config_check_prefix},
    {.path = "mode", .type = GW_CONFIG_T_ENUM, GW_CONFIG_RULE(mode), .def = "copy",
     .names = gw_config_repl_names},
};

static const struct gw_config_list gw_config_rule_list = {
    .elem_size = sizeof(struct gw_rule_conf), .keys = gw_config_rule_keys,
    .nkeys = GW_CONFIG_ARRAY_LEN(gw_config_rule_keys), .check_elem = gw_config_check_rule,
    .line_offset = offsetof(struct gw_rule_conf, line), .max = 1024,
};

static const struct gw_config_key gw_config_keys[] = {
    {.path = "site", .type = GW_CONFIG_T_STRING, GW_CONFIG_CFG(site), .required = true,
     .check = gw_config_check_site},
    {.path = "gateway_id", .type = GW_CONFIG_T_UINT, GW_CONFIG_CFG(gateway_id), .def = "0",
     .umin = 0, .umax = 65535},
    {.path = "listen", .type = GW_CONFIG_T_ADDR, GW_CONFIG_CFG(listen), .required = true},
    {.path = "admin", .type = GW_CONFIG_T_ADDR, GW_CONFIG_CFG(admin)},
    {.path = "threads", .type = GW_CONFIG_T_UINT, GW_CONFIG_CFG(threads), .def = "2",
     .umin = 1, .umax = 64},
    {.path = "log_level", .type = GW_CONFIG_T_ENUM, GW_CONFIG_CFG(log_level), .def = "info",
     .names = gw_config_log_level_names},
    {.path = "max_connections", .type = GW_CONFIG_T_UINT, GW_CONFIG_CFG(max_connections),
     .def = "10000", .umin = 1, .umax = 1000000},
    {.path = "max_request_bytes", .type = GW_CONFIG_T_UINT, GW_CONFIG_CFG(max_request_bytes),
     .def = "1048576", .umin = 1024, .umax = 1u << 30},
    {.path = "max_value_bytes", .type = GW_CONFIG_T_UINT, GW_CONFIG_CFG(max_value_bytes),
     .def = "1048576", .umin = 1024, .umax = 1u << 30},
    {.path = "idle_timeout", .type = GW_CONFIG_T_DURATION, GW_CONFIG_CFG(idle_timeout_ms),
     .def = "0", .umin = 0, .umax = 86400000},
    {.path = "client_output_limit", .type = GW_CONFIG_T_UINT,
     GW_CONFIG_CFG(client_output_limit), .def = "67108864", .umin = 1048576,
     .umax = 1ull << 40},

    {.path = "pool", .type = GW_CONFIG_T_SECTION, GW_CONFIG_NONE, .required = true},
    {.path = "pool.distribution", .type = GW_CONFIG_T_ENUM, GW_CONFIG_NONE,
     .names = gw_config_distribution_names},
    {.path = "pool.hash", .type = GW_CONFIG_T_ENUM, GW_CONFIG_CFG(pool.hash), .def = "md5",
     .names = gw_config_hash_names, .from_name = gw_config_hash_from_name},
    {.path = "pool.servers", .type = GW_CONFIG_T_LIST, GW_CONFIG_CFG(pool.servers),
     .required = true, .list = &gw_config_server_list,
     .count_offset = offsetof(struct gw_config, pool.nservers)},
    {.path = "pool.timeout", .type = GW_CONFIG_T_DURATION, GW_CONFIG_CFG(pool.timeout_ms),
     .def = "250", .umin = 1, .umax = 3600000},
    /* default: pool.timeout, filled in by gw_config_apply() */
    {.path = "pool.connect_timeout", .type = GW_CONFIG_T_DURATION,
     GW_CONFIG_CFG(pool.connect_timeout_ms), .umin = 1, .umax = 3600000},
    {.path = "pool.failure_limit", .type = GW_CONFIG_T_UINT, GW_CONFIG_CFG(pool.failure_limit),
     .def = "3", .umin = 1, .umax = 1000},
    {.path = "pool.retry_timeout", .type = GW_CONFIG_T_DURATION,
     GW_CONFIG_CFG(pool.retry_timeout_ms), .def = "2000", .umin = 1, .umax = GW_CONFIG_MS_MAX},
    {.path = "pool.connections", .type = GW_CONFIG_T_UINT, GW_CONFIG_CFG(pool.connections),
     .def = "1", .umin = 1, .umax = 64},

    {.path = "wan", .type = GW_CONFIG_T_SECTION, GW_CONFIG_CFG(wan.enabled)},
    {.path = "wan.listen", .type = GW_CONFIG_T_ADDR, GW_CONFIG_CFG(wan.listen)},
    {.path = "wan.tls", .type = GW_CONFIG_T_SECTION, GW_CONFIG_NONE},
    {.path = "wan.tls.ca", .type = GW_CONFIG_T_STRING, GW_CONFIG_CFG(wan.tls_ca),
     .check = gw_config_check_nonempty},
    {.path = "wan.tls.cert", .type = GW_CONFIG_T_STRING, GW_CONFIG_CFG(wan.tls_cert),
     .check = gw_config_check_nonempty},
    {.path = "wan.tls.key", .type = GW_CONFIG_T_STRING, GW_CONFIG_CFG(wan.tls_key),
     .check = gw_config_check_nonempty},
    {.path = "wan.spool", .type = GW_CONFIG_T_SECTION, GW_CONFIG_NONE},
    {.path = "wan.spool.dir", .type = GW_CONFIG_T_STRING, GW_CONFIG_CFG(wan.spool_dir),
     .check = gw_config_check_nonempty},
    {.path = "wan.spool.max_bytes", .type = GW_CONFIG_T_UINT, GW_CONFIG_CFG(wan.spool_max_bytes),
     .def = "1073741824", .umin = 1u << 20, .umax = 1ull << 50},
    {.path = "wan.spool.fsync", .type = GW_CONFIG_T_ENUM, GW_CONFIG_CFG(wan.spool_fsync),
     .def = "everysec", .names = gw_config_fsync_names},
    {.path = "wan.peers", .type = GW_CONFIG_T_LIST, GW_CONFIG_CFG(wan.peers),
     .list = &gw_config_peer_list, .count_offset = offsetof(struct gw_config, wan.npeers)},

    {.path = "failover", .type = GW_CONFIG_T_SECTION, GW_CONFIG_NONE},
    {.path = "failover.local_healthy_fraction", .type = GW_CONFIG_T_DOUBLE,
     GW_CONFIG_CFG(failover.local_healthy_fraction), .def = "0.5", .dmin = 0, .dmax = 1},
    {.path = "failover.hold_down", .type = GW_CONFIG_T_DURATION,
     GW_CONFIG_CFG(failover.hold_down_ms), .def = "5000", .umin = 0, .umax = GW_CONFIG_MS_MAX},
    {.path = "failover.warmup", .type = GW_CONFIG_T_SECTION, GW_CONFIG_NONE},
    {.path = "failover.warmup.max_time", .type = GW_CONFIG_T_DURATION,
     GW_CONFIG_CFG(failover.warmup_max_time_ms), .def = "600000", .umin = 0,
     .umax = GW_CONFIG_MS_MAX},
    {.path = "failover.warmup.hit_ratio", .type = GW_CONFIG_T_DOUBLE,
     GW_CONFIG_CFG(failover.warmup_hit_ratio), .def = "0.9", .dmin = 0, .dmax = 1},

    {.path = "replication", .type = GW_CONFIG_T_SECTION, GW_CONFIG_NONE},
    /* default and catch-all: gw_config_apply() */
    {.path = "replication.rules", .type = GW_CONFIG_T_LIST, GW_CONFIG_CFG(replication.rules),
     .list = &gw_config_rule_list, .count_offset = offsetof(struct gw_config, replication.nrules)},
    {.path = "replication.flush", .type = GW_CONFIG_T_BOOL, GW_CONFIG_CFG(replication.flush),
     .def = "false"},
    {.path = "replication.tombstone_ttl", .type = GW_CONFIG_T_DURATION,
     GW_CONFIG_CFG(replication.tombstone_ttl_s), .def = "86400", .umin = 1, .umax = 2592000,
     .unit = "seconds"},
    {.path = "replication.auto_backfill", .type = GW_CONFIG_T_BOOL,
     GW_CONFIG_CFG(replication.auto_backfill), .def = "true"},
    {.path = "replication.backfill_rate", .type = GW_CONFIG_T_UINT,
     GW_CONFIG_CFG(replication.backfill_rate), .def = "20000", .umin = 0, .umax = 100000000},
    {.path = "replication.max_clock_skew", .type = GW_CONFIG_T_DURATION,
     GW_CONFIG_CFG(replication.max_clock_skew_ms), .def = "1000", .umin = 0,
     .umax = GW_CONFIG_MS_MAX},
};
/* clang-format on */

_Static_assert(GW_CONFIG_ARRAY_LEN(gw_config_keys) <= GW_CONFIG_MAX_KEYS, "seen[] too small");
_Static_assert(GW_CONFIG_ARRAY_LEN(gw_config_peer_keys) <= GW_CONFIG_MAX_SUBKEYS, "subkeys");
_Static_assert(GW_CONFIG_ARRAY_LEN(gw_config_rule_keys) <= GW_CONFIG_MAX_SUBKEYS, "subkeys");

/* ---------------------------------------------------------------------------------------
 * Validate: walk mappings and lists against a table.
 * ------------------------------------------------------------------------------------- */

static void *gw_config_field(const struct gw_config_key *row, void *base)
{
    return row->offset == GW_CONFIG_NO_FIELD ? NULL : (char *)base + row->offset;
}

static int gw_config_find(const struct gw_config_key *keys, size_t nkeys, const char *path)
{
    for (size_t i = 0; i < nkeys; i++) {
        if (strcmp(keys[i].path, path) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* Is path a direct child of prefix ("" = the top of the table)? */
static bool gw_config_is_child(const char *prefix, const char *path)
{
    size_t plen = strlen(prefix);

    if (plen == 0) {
        return strchr(path, '.') == NULL;
    }
    return strncmp(path, prefix, plen) == 0 && path[plen] == '.' &&
           strchr(path + plen + 1, '.') == NULL;
}

static int gw_config_set_value(struct gw_config_loader *ld, const struct gw_config_key *row,
                               const struct gw_config_node *node, const char *path, void *base);

/* Write "prefix.name" (or "name" at the top) into buf. */
static void gw_config_join(char *buf, size_t len, const char *prefix, const char *name)
{
    snprintf(buf, len, "%s%s%s", prefix, *prefix ? "." : "", name);
}

/*
 * Walk one mapping: every key must have a row under rel (the table path of this mapping),
 * appear once, and hold a value of the row's type; then every required child row must
 * have been seen.  disp is the same path as the user reads it ("wan.peers[0]"); a missing
 * key is blamed on owner_line, the line of the key or list item that holds the mapping
 * (1 at the top).
 */
static int gw_config_walk_mapping(struct gw_config_loader *ld, const struct gw_config_key *keys,
                                  size_t nkeys, int *seen, void *base,
                                  const struct gw_config_node *map, const char *rel,
                                  const char *disp, int owner_line)
{
    char relpath[GW_CONFIG_PATH_LEN], disppath[GW_CONFIG_PATH_LEN];

    for (size_t i = 0; i + 1 < map->nitems; i += 2) {
        const struct gw_config_node *k = map->items[i], *v = map->items[i + 1];
        int idx = -1;

        if (k->kind != GW_CONFIG_NODE_SCALAR) {
            return gw_config_fail(ld, k->line, "%s%skeys must be plain names, not %s", disp,
                                  *disp ? ": " : "", gw_config_what(k));
        }
        if (k->len == strlen(k->value) && k->len <= 64 && strchr(k->value, '.') == NULL) {
            gw_config_join(relpath, sizeof(relpath), rel, k->value);
            idx = gw_config_find(keys, nkeys, relpath);
        }
        gw_config_join(disppath, sizeof(disppath), disp, k->value);
        if (idx < 0) {
            return gw_config_fail(ld, k->line, "unknown key '%s'", disppath);
        }
        if (seen[idx] != 0) {
            return gw_config_fail(ld, k->line, "duplicate key '%s' (first on line %d)", disppath,
                                  seen[idx]);
        }
        seen[idx] = k->line;
        if (keys[idx].type == GW_CONFIG_T_SECTION) {
            void *field = gw_config_field(&keys[idx], base);

            if (v->kind != GW_CONFIG_NODE_MAPPING) {
                return gw_config_fail(ld, v->line, "%s: expected a mapping, got %s", disppath,
                                      gw_config_what(v));
            }
            if (field != NULL) {
                *(bool *)field = true;
            }
            if (gw_config_walk_mapping(ld, keys, nkeys, seen, base, v, relpath, disppath,
                                       k->line) != 0) {
                return -1;
            }
        } else if (gw_config_set_value(ld, &keys[idx], v, disppath, base) != 0) {
            return -1;
        }
    }
    for (size_t i = 0; i < nkeys; i++) {
        if (keys[i].required && seen[i] == 0 && gw_config_is_child(rel, keys[i].path)) {
            gw_config_join(disppath, sizeof(disppath), disp,
                           keys[i].path + (*rel ? strlen(rel) + 1 : 0));
            return gw_config_fail(ld, owner_line, "missing required key '%s'", disppath);
        }
    }
    return 0;
}

static int gw_config_apply_defaults(struct gw_config_loader *ld, const struct gw_config_key *keys,
                                    size_t nkeys, void *base);

/* Read a list into a freshly allocated array, one element per item; each element is
 * counted before it is filled, so gw_config_destroy() can free a half-built list. */
static int gw_config_walk_list(struct gw_config_loader *ld, const struct gw_config_key *row,
                               const struct gw_config_node *seq, const char *path, void *base)
{
    const struct gw_config_list *list = row->list;
    char elempath[GW_CONFIG_PATH_LEN];
    size_t *count = (size_t *)((char *)base + row->count_offset);
    void **array = (void **)((char *)base + row->offset);

    if (seq->kind != GW_CONFIG_NODE_SEQUENCE) {
        return gw_config_fail(ld, seq->line, "%s: expected a list, got %s", path,
                              gw_config_what(seq));
    }
    if (list->nonempty && seq->nitems == 0) {
        return gw_config_fail(ld, seq->line, "%s: must list at least one entry", path);
    }
    if (seq->nitems > list->max) {
        return gw_config_fail(ld, seq->line, "%s: more than %zu entries", path, list->max);
    }
    if (seq->nitems == 0) {
        return 0;
    }
    *array = calloc(seq->nitems, list->elem_size);
    if (*array == NULL) {
        return gw_config_fail(ld, seq->line, "out of memory");
    }
    for (size_t i = 0; i < seq->nitems; i++) {
        const struct gw_config_node *item = seq->items[i];
        char *elem = (char *)*array + i * list->elem_size;

        snprintf(elempath, sizeof(elempath), "%s[%zu]", path, i);
        (*count)++;
        if (list->line_offset != GW_CONFIG_NO_FIELD) {
            memcpy(elem + list->line_offset, &item->line, sizeof(int));
        }
        if (list->keys != NULL) {
            int seen[GW_CONFIG_MAX_SUBKEYS] = {0};

            if (item->kind != GW_CONFIG_NODE_MAPPING) {
                return gw_config_fail(ld, item->line, "%s: expected a mapping, got %s", elempath,
                                      gw_config_what(item));
            }
            if (gw_config_apply_defaults(ld, list->keys, list->nkeys, elem) != 0 ||
                gw_config_walk_mapping(ld, list->keys, list->nkeys, seen, elem, item, "", elempath,
                                       item->line) != 0) {
                return -1;
            }
        } else if (list->parse_elem(ld, item, elempath, elem) != 0) {
            return -1;
        }
        if (list->check_elem != NULL && list->check_elem(ld, item, elempath, *array, i) != 0) {
            return -1;
        }
    }
    return 0;
}

static int gw_config_set_value(struct gw_config_loader *ld, const struct gw_config_key *row,
                               const struct gw_config_node *node, const char *path, void *base)
{
    if (row->type == GW_CONFIG_T_LIST) {
        return gw_config_walk_list(ld, row, node, path, base);
    }
    return gw_config_convert(ld, row, node, path, gw_config_field(row, base));
}

/* Defaults are YAML text converted exactly like values from the file. */
static int gw_config_apply_defaults(struct gw_config_loader *ld, const struct gw_config_key *keys,
                                    size_t nkeys, void *base)
{
    for (size_t i = 0; i < nkeys; i++) {
        struct gw_config_node node = {.kind = GW_CONFIG_NODE_SCALAR, .line = 1, .plain = false};

        if (keys[i].def == NULL) {
            continue;
        }
        node.value = (char *)keys[i].def;
        node.len = strlen(keys[i].def);
        if (gw_config_set_value(ld, &keys[i], &node, keys[i].path, base) != 0) {
            return -1;
        }
    }
    return 0;
}

/* Free every allocation the rows point to (not base itself). */
static void gw_config_free_fields(const struct gw_config_key *keys, size_t nkeys, void *base)
{
    for (size_t i = 0; i < nkeys; i++) {
        void *field = gw_config_field(&keys[i], base);

        if (field == NULL) {
            continue;
        }
        if (keys[i].type == GW_CONFIG_T_STRING) {
            free(*(char **)field);
            *(char **)field = NULL;
        } else if (keys[i].type == GW_CONFIG_T_ADDR) {
            gw_config_free_addr(field);
        } else if (keys[i].type == GW_CONFIG_T_LIST) {
            const struct gw_config_list *list = keys[i].list;
            size_t *count = (size_t *)((char *)base + keys[i].count_offset);
            char *array = *(char **)field;

            for (size_t j = 0; array != NULL && j < *count; j++) {
                if (list->keys != NULL) {
                    gw_config_free_fields(list->keys, list->nkeys, array + j * list->elem_size);
                } else {
                    list->free_elem(array + j * list->elem_size);
                }
            }
            free(array);
            *(char **)field = NULL;
            *count = 0;
        }
    }
}

/* ---------------------------------------------------------------------------------------
 * Apply: defaults that depend on other keys, and checks that span several keys.
 * ------------------------------------------------------------------------------------- */

static int gw_config_seen(const struct gw_config_loader *ld, const char *path)
{
    int idx = gw_config_find(gw_config_keys, GW_CONFIG_ARRAY_LEN(gw_config_keys), path);

    return idx < 0 ? 0 : ld->seen[idx];
}

/* The line to blame for a missing key: its nearest present ancestor, else line 1. */
static int gw_config_missing_line(const struct gw_config_loader *ld, const char *path)
{
    char buf[GW_CONFIG_PATH_LEN];
    char *dot;

    snprintf(buf, sizeof(buf), "%s", path);
    while ((dot = strrchr(buf, '.')) != NULL) {
        *dot = '\0';
        if (gw_config_seen(ld, buf) != 0) {
            return gw_config_seen(ld, buf);
        }
    }
    return 1;
}

static int gw_config_add_catch_all(struct gw_config_loader *ld, struct gw_config *cfg)
{
    struct gw_rule_conf *rules;

    for (size_t i = 0; i < cfg->replication.nrules; i++) {
        if (cfg->replication.rules[i].prefix[0] == '\0') {
            return 0;
        }
    }
    rules = realloc(cfg->replication.rules, (cfg->replication.nrules + 1) * sizeof(*rules));
    if (rules == NULL) {
        return gw_config_fail(ld, 1, "out of memory");
    }
    cfg->replication.rules = rules;
    rules[cfg->replication.nrules].prefix = strdup("");
    rules[cfg->replication.nrules].mode = GW_REPL_COPY;
    rules[cfg->replication.nrules].line = 0;
    cfg->replication.nrules++;
    if (rules[cfg->replication.nrules - 1].prefix == NULL) {
        return gw_config_fail(ld, 1, "out of memory");
    }
    return 0;
}

/* No two of our own listeners on one address, and no backend or peer that is ourselves. */
static int gw_config_check_loops(struct gw_config_loader *ld, struct gw_config *cfg)
{
    const struct {
        const char *path;
        const struct gw_addr *addr;
    } own[] = {
        {"listen", &cfg->listen},
        {"admin", &cfg->admin},
        {"wan.listen", &cfg->wan.listen},
    };
    char buf[300];

    for (size_t i = 1; i < GW_CONFIG_ARRAY_LEN(own); i++) {
        for (size_t j = 0; j < i; j++) {
            if (gw_config_addr_equal(own[i].addr, own[j].addr)) {
                gw_config_addr_format(own[i].addr, buf, sizeof(buf));
                return gw_config_fail(ld, gw_config_seen(ld, own[i].path),
                                      "%s: %s is already used by %s", own[i].path, buf,
                                      own[j].path);
            }
        }
    }
    for (size_t s = 0; s < cfg->pool.nservers; s++) {
        for (size_t i = 0; i < GW_CONFIG_ARRAY_LEN(own); i++) {
            if (gw_config_addr_equal(&cfg->pool.servers[s].addr, own[i].addr)) {
                return gw_config_fail(ld, cfg->pool.servers[s].line,
                                      "pool.servers[%zu]: %s is this gateway's own %s", s,
                                      cfg->pool.servers[s].label, own[i].path);
            }
        }
    }
    for (size_t p = 0; p < cfg->wan.npeers; p++) {
        const struct gw_peer_conf *peer = &cfg->wan.peers[p];

        if (strcmp(peer->site, cfg->site) == 0) {
            return gw_config_fail(ld, peer->line,
                                  "wan.peers[%zu].site: '%s' is this gateway's own site", p,
                                  peer->site);
        }
        for (size_t a = 0; a < peer->naddresses; a++) {
            for (size_t i = 0; i < GW_CONFIG_ARRAY_LEN(own); i++) {
                if (gw_config_addr_equal(&peer->addresses[a], own[i].addr)) {
                    gw_config_addr_format(own[i].addr, buf, sizeof(buf));
                    return gw_config_fail(ld, peer->line,
                                          "wan.peers[%zu].addresses[%zu]: %s is this "
                                          "gateway's own %s",
                                          p, a, buf, own[i].path);
                }
            }
        }
    }
    return 0;
}

static int gw_config_apply(struct gw_config_loader *ld, struct gw_config *cfg)
{
    static const char *const wan_needs[] = {"wan.listen", "wan.tls.ca", "wan.tls.cert",
                                            "wan.tls.key", "wan.spool.dir"};

    if (gw_config_seen(ld, "pool.connect_timeout") == 0) {
        cfg->pool.connect_timeout_ms = cfg->pool.timeout_ms;
    }
    if (gw_config_add_catch_all(ld, cfg) != 0 || gw_config_check_loops(ld, cfg) != 0) {
        return -1;
    }
    if (cfg->wan.npeers > 0) {
        for (size_t i = 0; i < GW_CONFIG_ARRAY_LEN(wan_needs); i++) {
            if (gw_config_seen(ld, wan_needs[i]) == 0) {
                return gw_config_fail(ld, gw_config_missing_line(ld, wan_needs[i]),
                                      "missing required key '%s' (needed when wan.peers lists "
                                      "peers)",
                                      wan_needs[i]);
            }
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Public interface.
 * ------------------------------------------------------------------------------------- */

static int gw_config_load_text(struct gw_config_loader *ld, const char *text, size_t len,
                               struct gw_config **out)
{
    struct gw_config_node *root = NULL;
    struct gw_config *cfg;

    ld->text = text;
    ld->textlen = len;
    if (gw_config_parse(ld, text, len, &root) != 0) {
        return -1;
    }
    if (root == NULL || gw_config_is_null(root)) {
        gw_config_node_free(root);
        return gw_config_fail(ld, 1,
                              "the config is empty (it needs at least site, listen and "
                              "pool.servers)");
    }
    if (root->kind != GW_CONFIG_NODE_MAPPING) {
        int line = root->line;
        const char *what = gw_config_what(root);

        gw_config_node_free(root);
        return gw_config_fail(ld, line, "the top level must be a mapping of keys, not %s", what);
    }
    cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL || (cfg->path = strdup(ld->name)) == NULL) {
        free(cfg);
        gw_config_node_free(root);
        return gw_config_fail(ld, 1, "out of memory");
    }
    ld->cfg = cfg;
    if (gw_config_apply_defaults(ld, gw_config_keys, GW_CONFIG_ARRAY_LEN(gw_config_keys), cfg) !=
            0 ||
        gw_config_walk_mapping(ld, gw_config_keys, GW_CONFIG_ARRAY_LEN(gw_config_keys), ld->seen,
                               cfg, root, "", "", 1) != 0 ||
        gw_config_apply(ld, cfg) != 0) {
        gw_config_node_free(root);
        gw_config_destroy(cfg);
        return -1;
    }
    gw_config_node_free(root);
    *out = cfg;
    return 0;
}

int gw_config_load_string(const char *yaml, size_t len, const char *name, struct gw_config **out,
                          char *err, size_t errlen)
{
    struct gw_config_loader ld = {.name = name ? name : "config", .err = err, .errlen = errlen};

    if (err != NULL && errlen > 0) {
        err[0] = '\0';
    }
    *out = NULL;
    if (yaml == NULL) {
        yaml = "";
        len = 0;
    }
    if (len > GW_CONFIG_MAX_FILE) {
        return gw_config_fail(&ld, 1, "larger than %u bytes", GW_CONFIG_MAX_FILE);
    }
    return gw_config_load_text(&ld, yaml, len, out);
}

int gw_config_load(const char *path, struct gw_config **out, char *err, size_t errlen)
{
    struct gw_config_loader ld = {.name = path, .err = err, .errlen = errlen};
    char *text = NULL, *grown;
    size_t len = 0, cap = 0;
    int rc, e = 0;
    FILE *f;

    *out = NULL;
    f = fopen(path, "r");
    if (f == NULL) {
        return gw_config_fail(&ld, 1, "cannot open: %s", strerror(errno));
    }
    /* read one byte past the limit so gw_config_load_string() can refuse the file */
    while (e == 0 && !feof(f) && len <= GW_CONFIG_MAX_FILE) {
        if (len == cap) {
            cap = cap ? cap * 2 : 16384;
            if ((grown = realloc(text, cap)) == NULL) {
                e = ENOMEM;
                break;
            }
            text = grown;
        }
        len += fread(text + len, 1, cap - len, f);
        e = ferror(f) ? errno : 0;
    }
    fclose(f);
    if (e != 0) {
        free(text);
        return gw_config_fail(&ld, 1, "cannot read: %s", strerror(e));
    }
    rc = gw_config_load_string(text, len, path, out, err, errlen);
    free(text);
    return rc;
}

void gw_config_destroy(struct gw_config *cfg)
{
    if (cfg == NULL) {
        return;
    }
    gw_config_free_fields(gw_config_keys, GW_CONFIG_ARRAY_LEN(gw_config_keys), cfg);
    free(cfg->path);
    free(cfg);
}

int gw_addr_parse(const char *s, struct gw_addr *addr)
{
    const char *why;

    if (s == NULL || addr == NULL) {
        return -1;
    }
    return gw_config_addr_split(s, addr, &why);
}

int gw_config_peer_index(const struct gw_config *cfg, const char *site)
{
    for (size_t i = 0; i < cfg->wan.npeers; i++) {
        if (strcmp(cfg->wan.peers[i].site, site) == 0) {
            return (int)i;
        }
    }
    return -1;
}

const char *gw_log_level_name(enum gw_log_level level)
{
    return (unsigned)level < GW_LOG_MAX ? gw_config_log_level_names[level] : "unknown";
}

const char *gw_fsync_mode_name(enum gw_fsync_mode mode)
{
    return (unsigned)mode < GW_FSYNC_MAX ? gw_config_fsync_names[mode] : "unknown";
}

const char *gw_repl_mode_name(enum gw_repl_mode mode)
{
    return (unsigned)mode < GW_REPL_MAX ? gw_config_repl_names[mode] : "unknown";
}
