/*
 * types — the structures of the request path, types only (no functions): one header per
 * folder (protocol/, backend/, frontend/, loop/ types.h), gathered here, so the modules
 * that pass them around can include them without including each other.
 *
 *   client socket ──read──> client.c: frame + parse ──> route.c: which node(s)?
 *                                                          │
 *            ┌─────────────────────────────────────────────┘
 *            v
 *   backend.c: frag queued on the worker's connection to that node; all frags of
 *   one loop iteration leave in one write ──> memcached
 *            │
 *   backend.c: replies parsed in order, matched to the head frag, moved (not
 *   copied) into the request's reply buffer
 *            v
 *   client.c: requests answered strictly in the client's order (a finished request
 *   waits for the ones before it), then written to the client socket
 */
#ifndef GEOGATE_TYPES_H
#define GEOGATE_TYPES_H

#include "gateway/loop/types.h"

#endif
