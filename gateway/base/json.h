/*
 * json — the one JSON string writer the admin listener's answers share (admin.c,
 * admin_xfer.c, backfill.c).
 */
#ifndef GEOGATE_JSON_H
#define GEOGATE_JSON_H

struct evbuffer;

/* Append s as a JSON string: quoted, with '"', '\' and control characters escaped (bytes
 * from 0x80 pass through, so UTF-8 stays UTF-8). */
void gw_json_str(struct evbuffer *b, const char *s);

#endif
