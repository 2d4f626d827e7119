/*
 * wanem.h — the types geogate-wanem's two files share: links, flows, connections, the
 * control clients, and the functions the control protocol (wanem_ctl.c) calls in
 * wanem.c.  Test tool; one thread, one event loop.
 */
#ifndef GEOGATE_WANEM_H
#define GEOGATE_WANEM_H

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#define WANEM_READ_MAX (64 * 1024)         /* bytes taken from a socket per read event */
#define WANEM_QUEUE_CAP (4u * 1024 * 1024) /* default back-pressure cap per flow */
#define WANEM_BURST (16 * 1024)            /* default token bucket depth */
#define WANEM_SLACK_US 50                  /* deliver segments due this close to now */
#define WANEM_CTL_LINE_MAX 1024
#define WANEM_NAME_MAX 32

/* Direction of a flow and of a link's settings. */
enum dir_id {
    DIR_FWD = 0, /* client -> target; the source is side[0] */
    DIR_REV,     /* target -> client; the source is side[1] */
    DIR_MAX
};

static const char *const dir_names[DIR_MAX] = {
    [DIR_FWD] = "fwd",
    [DIR_REV] = "rev",
};

/* What a queued segment carries to the destination. */
enum seg_kind {
    SEG_DATA = 0, /* len bytes from the flow queue */
    SEG_EOF,      /* the source closed its write side: shutdown(SHUT_WR) the destination */
    SEG_RESET,    /* the source failed: reset the whole connection */
    SEG_KIND_MAX
};

/* A link's settings and shared state for one direction. */
struct link_dir {
    double delay_ms;    /* one-way delay */
    double jitter_ms;   /* each segment's delay is delay ± U(0, jitter), clamped at 0 */
    uint64_t rate;      /* bytes/s through this direction of the link; 0 = no cap */
    uint64_t burst;     /* token bucket depth in bytes */
    uint64_t queue_cap; /* back-pressure cap per flow in bytes */
    bool blackhole;     /* hold everything, deliver nothing */
    int64_t tb_time_us; /* token bucket: when tb_tokens was last brought up to date */
    double tb_tokens;   /* may go negative: debt paid off at `rate` */
    uint64_t bytes_in;  /* read from sources */
    uint64_t bytes_out; /* handed to destinations */
};

struct flow_seg {
    int64_t due_us;
    uint32_t len;
    uint8_t kind; /* enum seg_kind */
};

/* One end of a relayed connection: side[0] faces the client, side[1] the target. */
struct side {
    struct conn *c;
    int fd;               /* -1 until the upstream connect starts */
    struct event *rd_ev;  /* persistent EV_READ; added while its flow may read */
    struct event *wr_ev;  /* persistent EV_WRITE; added while out is not empty or connecting */
    struct evbuffer *out; /* delivered bytes not yet accepted by the kernel */
    bool connecting;      /* non-blocking connect in progress */
    bool reading;         /* rd_ev is added */
    bool shut_pending;    /* an EOF was delivered: shutdown(SHUT_WR) once out drains */
    bool shut_done;
};

/* One direction of a relayed connection; its source is side[dir], its destination side[!dir]. */
struct flow {
    struct conn *c;
    enum dir_id dir;
    struct evbuffer *queue; /* bytes of all queued SEG_DATA segments, in order */
    struct flow_seg *segs;  /* ring of seg_cap entries */
    size_t seg_cap;
    size_t seg_head;
    size_t seg_count;
    int64_t last_due_us; /* keeps due times monotonic: jitter never reorders */
    struct event *timer;
    bool src_done; /* EOF or error seen on the source: read no more */
    bool paused;   /* back-pressure: queued bytes passed the cap */
};

struct conn {
    struct link *l;
    struct side side[2];
    struct flow flow[DIR_MAX];
    bool upstream_started;
    bool closing; /* off the link's list, waiting for the reaper */
    bool rst;     /* close with RST rather than FIN */
    TAILQ_ENTRY(conn) link_entry;
    TAILQ_ENTRY(conn) reap_entry;
};

TAILQ_HEAD(conn_list, conn);

struct link {
    struct wanem *w;
    char name[WANEM_NAME_MAX];
    uint16_t listen_port; /* 0 on the command line: the kernel picks, then it is fixed */
    struct sockaddr_storage target;
    socklen_t target_len;
    char target_str[96];
    struct evconnlistener *listener; /* NULL while cut */
    bool cut;
    struct link_dir dir[DIR_MAX];
    struct conn_list conns;
    uint64_t conns_open;
    uint64_t conns_total;
    uint64_t conns_reset; /* connections ended by RST (cut, errors, upstream refused) */
};

struct ctl_client {
    struct wanem *w;
    struct bufferevent *bev;
    bool quitting;
    TAILQ_ENTRY(ctl_client) entry;
};

/* The process: only this context, passed explicitly. */
struct wanem {
    struct event_base *base;
    struct link *links;
    size_t nlinks;
    struct evconnlistener *ctl_listener;
    uint16_t ctl_port;
    TAILQ_HEAD(, ctl_client) ctl_clients;
    struct conn_list reap;
    struct event *reap_ev;
    struct event *sig_ev[2];
    uint64_t rng;
    uint64_t queue_cap;
    bool quiet;
};

/* in wanem.c, used by the control protocol */
int64_t now_us(void);
struct link *link_find(struct wanem *w, const char *name);
void flow_check_backpressure(struct flow *f);
void wanem_log(struct wanem *w, const char *fmt, ...);
void link_cut(struct link *l);
int link_uncut(struct link *l);
void link_set_blackhole(struct link *l, enum dir_id d, bool on);
const char *link_state_str(const struct link *l);
size_t flow_queued(const struct flow *f);
void sock_nodelay(int fd);

/* in wanem_ctl.c: the usage text, freeing a control client, a bounded number parser,
 * and accepting a control connection */
extern const char ctl_usage[];
void ctl_client_free(struct ctl_client *cc);
int ctl_parse_u64(const char *v, uint64_t min, uint64_t *out);
void ctl_on_accept(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
                          int salen, void *arg);
#endif
