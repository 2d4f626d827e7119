/*
 * evmem — see evmem.h.
 *
 * No header is added to a block: malloc_usable_size tells on free how much the block
 * holds, and a block is cached in the largest class it can serve.  Requests are rounded
 * up to their class only from 1 KiB, where libevent's chain sizes are powers of two
 * already, so small allocations (an idle connection's buffers) cost what they did.
 */
#include "gateway/base/evmem.h"

#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

/* No cache under AddressSanitizer: it would hide a use after free from it. */
#if defined(__SANITIZE_ADDRESS__)
#define GW_EVMEM_CACHE 0
#else
#define GW_EVMEM_CACHE 1
#endif

#define GW_EVMEM_MIN_SHIFT 10 /* 1 KiB */
#define GW_EVMEM_NCLASS 5     /* 1, 2, 4, 8, 16 KiB */

struct evmem_free {
    struct evmem_free *next;
};

/* Blocks kept per class and thread: 128 KiB of each class at most. */
static const uint16_t evmem_cap[GW_EVMEM_NCLASS] = {128, 64, 32, 16, 8};

static __thread struct evmem_free *evmem_list[GW_EVMEM_NCLASS];
static __thread uint16_t evmem_count[GW_EVMEM_NCLASS];

static size_t class_size(int k)
{
    return (size_t)1 << (GW_EVMEM_MIN_SHIFT + k);
}

/* The smallest class that holds n bytes, or -1 when n is below or above the classes. */
static int class_for_request(size_t n)
{
    if (n < class_size(0) || n > class_size(GW_EVMEM_NCLASS - 1)) {
        return -1;
    }
    for (int k = 0; k < GW_EVMEM_NCLASS; k++) {
        if (n <= class_size(k)) {
            return k;
        }
    }
    return -1;
}

/* The largest class a block of `usable` bytes can serve, or -1. */
static int class_for_block(size_t usable)
{
    int best = -1;

    for (int k = 0; k < GW_EVMEM_NCLASS && class_size(k) <= usable; k++) {
        best = k;
    }
    return best;
}

static void *evmem_malloc(size_t n)
{
    int k = GW_EVMEM_CACHE ? class_for_request(n) : -1;

    if (k < 0) {
        return malloc(n);
    }
    if (evmem_list[k] != NULL) {
        struct evmem_free *f = evmem_list[k];
        evmem_list[k] = f->next;
        evmem_count[k]--;
        return f;
    }
    return malloc(class_size(k));
}

static void evmem_free(void *p)
{
    int k;

    if (p == NULL) {
        return;
    }
    k = GW_EVMEM_CACHE ? class_for_block(malloc_usable_size(p)) : -1;
    if (k < 0 || evmem_count[k] >= evmem_cap[k]) {
        free(p);
        return;
    }
    ((struct evmem_free *)p)->next = evmem_list[k];
    evmem_list[k] = p;
    evmem_count[k]++;
}

static void *evmem_realloc(void *p, size_t n)
{
    size_t have;
    void *q;

    if (p == NULL) {
        return evmem_malloc(n);
    }
    if (!GW_EVMEM_CACHE) {
        return realloc(p, n);
    }
    have = malloc_usable_size(p);
    if (n <= have && class_for_request(n) < 0) {
        return realloc(p, n); /* shrinking below the classes: let malloc trim it */
    }
    if (n <= have) {
        return p;
    }
    q = evmem_malloc(n);
    if (q == NULL) {
        return NULL;
    }
    memcpy(q, p, have);
    evmem_free(p);
    return q;
}

void gw_evmem_install(void)
{
    event_set_mem_functions(evmem_malloc, evmem_realloc, evmem_free);
}
