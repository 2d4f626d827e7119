/*
 * admin_xfer — the admin listener's two long transfers: GET /snapshot streams the site's
 * snapshot file as it is produced, POST /restore applies one.  Each runs its blocking part
 * (gateway/transfer/snapshot.c, gateway/transfer/restore.c) on a thread of its own and talks to the main
 * thread's evhttp only through a wake-up event, so the admin loop never blocks and the
 * request path is not touched.  At most one snapshot and one restore at a time.
 * admin.c routes to it; it does not parse paths, check the client's address or answer
 * anything but these two requests.  Main thread (srv->base), except where noted.
 */
#ifndef GEOGATE_ADMIN_XFER_H
#define GEOGATE_ADMIN_XFER_H

#include <stdint.h>

struct evhttp_request;
struct gw_server;
struct gw_admin_xfer;

/* The largest snapshot POST /restore takes (bigger: 413 before the body is read). */
#define GW_ADMIN_RESTORE_MAX_BYTES (UINT64_C(1) << 30)

/* Set up (nothing runs yet).  Returns 0 and *out, or -ENOMEM. */
int gw_admin_xfer_create(struct gw_server *srv, struct gw_admin_xfer **out);

/*
 * Stop every transfer: producers and restores are told to stop and waited for (up to a
 * few seconds each; a restore stuck on a stopped worker is left to the process exit).
 * Their HTTP requests are left to evhttp_free.  Call before evhttp_free.  NULL is a no-op.
 */
void gw_admin_xfer_destroy(struct gw_admin_xfer *x);

/* GET /snapshot: 200 application/octet-stream streamed (chunked for HTTP/1.1) as the
 * producer thread writes it, with back-pressure; 409 while one runs; 503 when a node
 * cannot be reached before the first byte.  A failure after the first byte closes the
 * connection without the end record (the file is then visibly incomplete). */
void gw_admin_xfer_snapshot(struct gw_admin_xfer *x, struct evhttp_request *req);

/* POST /restore with the file as the body: JSON 200 {records, applied, skipped_expired,
 * rejected_older, ...}; 400 for a header that is not a v1 snapshot header (nothing
 * applied); 422 {applied, bad_offset, reason, ...} when it stopped at a bad record; 409
 * while another restore runs; 503 when a local node failed. */
void gw_admin_xfer_restore(struct gw_admin_xfer *x, struct evhttp_request *req);

#endif
