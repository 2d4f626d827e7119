/*
 * evmem — libevent's allocations, with a per-thread cache of buffer-sized blocks.
 *
 * An evbuffer allocates a chain (1, 2, 4 ... KiB) when bytes arrive in an empty
 * buffer and frees it once they are drained, so every request and reply that passes
 * through a buffer costs a malloc and a free of a block too large for glibc's
 * per-thread cache.  gw_evmem_install routes libevent's allocations through here: a
 * block of 1 KiB or more is kept on its thread when freed (a few hundred KiB at most
 * per thread) and handed out again; everything else goes to malloc as before.
 */
#ifndef GATEWAY_EVMEM_H
#define GATEWAY_EVMEM_H

/* Call before any other libevent function. */
void gw_evmem_install(void);

#endif
