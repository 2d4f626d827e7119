/*
 * conn — a non-blocking TCP socket with an input and an output evbuffer, cheaper than
 * a bufferevent on the request path: the read event is registered once, edge-triggered,
 * and never toggled, reads go straight into the input buffer (no FIONREAD ioctl), and writes
 * are deferred to the end of the loop iteration (gw_conn_want_flush) so that
 * everything queued for one socket during one iteration leaves in one writev.  A
 * write event is armed only when the kernel pushes back.  Runs on its worker's loop.
 * It does not parse anything; its owner does, in the callbacks.
 */
#ifndef GEOGATE_CONN_H
#define GEOGATE_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/event_struct.h>

struct gw_worker;
struct gw_conn;

/* Called on the owner after new input arrived. */
typedef void (*gw_conn_read_fn)(struct gw_conn *conn, void *arg);
/* Optional, before on_read: a read's bytes while the input buffer is empty.  Returns
 * how many it took; the rest is appended to the input buffer for on_read. */
typedef size_t (*gw_conn_data_fn)(struct gw_conn *conn, void *arg, const char *p, size_t n);
/* The peer closed its side (`eof`: every byte it sent has been read and handed to
 * on_read; the socket can still be written, see gw_conn_at_eof), or the socket failed
 * (error, reset, connect failure; nothing more can be written).  Reading has stopped.
 * After a failure the owner must call gw_conn_close (now or later in the iteration);
 * after an EOF it closes once it has written what it still owes the peer. */
typedef void (*gw_conn_error_fn)(struct gw_conn *conn, void *arg, bool eof);
/* Output fell to the low watermark set with gw_conn_notify_drain, or connected. */
typedef void (*gw_conn_event_fn)(struct gw_conn *conn, void *arg);

struct gw_conn {
    int fd;
    struct gw_worker *w;
    struct event rev;
    struct event wev;
    struct evbuffer *in;
    struct evbuffer *out;
    gw_conn_read_fn on_read;
    gw_conn_data_fn on_data; /* optional */
    gw_conn_error_fn on_error;
    gw_conn_event_fn on_drain;     /* optional */
    gw_conn_event_fn on_connected; /* optional */
    gw_conn_event_fn on_flush;     /* optional: the output is about to be written */
    void *arg;
    uint64_t *bytes_in;  /* optional counters, owned by the worker */
    uint64_t *bytes_out;
    size_t drain_below; /* call on_drain when output is at or below this */
    size_t out_limit;   /* unsent output past this fails the socket (0: no limit) */
    bool over_limit;    /* ... which is why it failed */
    bool notify_drain;
    bool connecting;
    bool reading; /* read event registered */
    bool wev_armed;
    bool queued; /* in the worker's flush list */
    bool failed;
    bool rdhup; /* the kernel reported the peer's FIN (EPOLLRDHUP): read on to EOF */
    bool eof;   /* read returned 0: nothing more will arrive */
    TAILQ_ENTRY(gw_conn) flush_link;
};

TAILQ_HEAD(gw_conn_list, gw_conn);

/* Adopt an accepted, non-blocking fd and start reading.  Returns 0, or -1 (fd is not
 * closed then). */
int gw_conn_open(struct gw_conn *conn, struct gw_worker *w, int fd, gw_conn_read_fn on_read,
                 gw_conn_error_fn on_error, void *arg);

/* Start a non-blocking connect; output queued before it completes is sent after.
 * Returns 0, or -1 when no socket could be made (nothing to close then). */
int gw_conn_connect(struct gw_conn *conn, struct gw_worker *w, const struct sockaddr *sa,
                    socklen_t salen, gw_conn_read_fn on_read, gw_conn_error_fn on_error,
                    gw_conn_event_fn on_connected, void *arg);

/* Write the output at the end of this loop iteration. */
void gw_conn_want_flush(struct gw_conn *conn);

/* Hand the kernel what it takes of the output now, calling nobody back (safe inside
 * another socket's callbacks); the flush at the end of the pass does the rest. */
void gw_conn_write_now(struct gw_conn *conn);

void gw_conn_pause_read(struct gw_conn *conn);
void gw_conn_resume_read(struct gw_conn *conn);

/* Ask for on_drain once the output is at or below `below` bytes. */
void gw_conn_notify_drain(struct gw_conn *conn, size_t below);

/* Read whatever the socket holds right now, as if its read event had fired (on_read /
 * on_error run as usual).  For a caller about to declare a timeout: when this thread
 * was itself starved of CPU, the reply may be sitting in the socket already. */
void gw_conn_poll_read(struct gw_conn *conn);

/* Close the socket and free the buffers; the struct itself belongs to the owner. */
void gw_conn_close(struct gw_conn *conn);

/* Worker: write every conn queued by gw_conn_want_flush (end of iteration). */
void gw_conn_flush_all(struct gw_worker *w);

#endif
