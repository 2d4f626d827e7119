/*
 * test_spool — wan/spool.c on real files in a mkdtemp directory under /tmp (removed after
 * each test): append and read back across segment rolls, restart recovery, a torn tail cut
 * at every byte offset, bit flips in the middle (detected, cut, counted, logged), acks that
 * survive a reopen and a crash (fork + _exit), trimming, overflow compaction and drop
 * counting, peer list changes, stats, the fsync modes, cursors across compaction and
 * corruption, and several threads appending while one reads and acks.
 * Runs with cwd tests/unit (make unit); single-threaded except test_threads.
 */
#include "tests/unit/spool_fixture.h"

static void test_fsync_names(void **state)
{
    enum wan_spool_fsync m;

    (void)state;
    assert_int_equal(wan_spool_fsync_from_name("always", &m), 0);
    assert_int_equal(m, WAN_SPOOL_FSYNC_ALWAYS);
    assert_int_equal(wan_spool_fsync_from_name("everysec", &m), 0);
    assert_int_equal(m, WAN_SPOOL_FSYNC_EVERYSEC);
    assert_int_equal(wan_spool_fsync_from_name("no", &m), 0);
    assert_int_equal(m, WAN_SPOOL_FSYNC_NO);
    assert_int_equal(wan_spool_fsync_from_name("sometimes", &m), -EINVAL);
    assert_int_equal(wan_spool_fsync_from_name(NULL, &m), -EINVAL);
    for (int i = 0; i < WAN_SPOOL_FSYNC_MAX; i++) {
        assert_int_equal(wan_spool_fsync_from_name(wan_spool_fsync_name(i), &m), 0);
        assert_int_equal(m, i);
    }
}

static void test_open_errors(void **state)
{
    struct fx *f = *state;
    struct wan_spool *sp = NULL;
    struct wan_spool_options o = f->opt;
    const char *bad_peers[][2] = {
        {"", "x"}, {"a b", "x"}, {"a\nb", "x"}, {"dup", "dup"}, {"ok", "tab\there"}};

    assert_int_equal(wan_spool_open(NULL, &sp), -EINVAL);
    o.dir = NULL;
    assert_int_equal(wan_spool_open(&o, &sp), -EINVAL);
    o = f->opt;
    o.fsync = WAN_SPOOL_FSYNC_MAX;
    assert_int_equal(wan_spool_open(&o, &sp), -EINVAL);
    for (size_t i = 0; i < sizeof(bad_peers) / sizeof(bad_peers[0]); i++) {
        o = f->opt;
        o.peers = bad_peers[i];
        o.npeers = 2;
        assert_int_equal(wan_spool_open(&o, &sp), -EINVAL);
    }
    o = f->opt;
    o.peers = NULL;
    assert_int_equal(wan_spool_open(&o, &sp), -EINVAL);
    assert_null(sp);

    /* one user per directory */
    sp_open(f);
    assert_int_equal(wan_spool_open(&f->opt, &sp), -EBUSY);
    assert_null(sp);
    sp_close(f);
    assert_int_equal(wan_spool_open(&f->opt, &sp), 0);
    assert_int_equal(wan_spool_close(sp), 0);

    /* a directory that cannot be created */
    o = f->opt;
    o.dir = "/proc/no/such/dir";
    assert_true(wan_spool_open(&o, &sp) < 0);
}

static void test_append_errors(void **state)
{
    struct fx *f = *state;
    static uint8_t big[70000];
    uint64_t seq = 77;

    f->opt.max_bytes = 65536;
    sp_open(f);
    assert_int_equal(wan_spool_append(f->sp, big, WAN_SPOOL_KEY_MAX + 1, "x", 1, &seq), -EINVAL);
    assert_int_equal(wan_spool_append(f->sp, NULL, 3, "x", 1, &seq), -EINVAL);
    assert_int_equal(wan_spool_append(f->sp, "k", 1, NULL, 1, &seq), -EINVAL);
    assert_int_equal(wan_spool_append(f->sp, "k", 1, big, sizeof(big), &seq), -EFBIG);
    assert_int_equal(seq, 77);
    /* empty key and empty data are fine */
    assert_int_equal(wan_spool_append(f->sp, NULL, 0, NULL, 0, &seq), 0);
    assert_int_equal(seq, 1);
    assert_int_equal(stats(f).records, 1);
}

/* Records come back intact and in order across many segment rolls; cursors follow rolls
 * and start anywhere. */
static void test_append_read_across_rolls(void **state)
{
    struct fx *f = *state;
    static struct got g[2000];
    static char names[1024][64];
    struct wan_spool_cursor *c;
    struct wan_spool_record r;
    uint64_t seg_size = 0, first_of_seg[1024];
    size_t nseg = 0, n;

    f->opt.segment_bytes = 2048;
    sp_open(f);
    /* simulate the roll rule to know where each segment must start */
    first_of_seg[nseg++] = 1;
    for (uint32_t i = 0; i < 600; i++) {
        uint64_t sz = rec_size(key_of(i), i);
        if (seg_size > 0 && seg_size + sz > 2048) {
            first_of_seg[nseg++] = i + 1;
            seg_size = 0;
        }
        seg_size += sz;
        assert_int_equal(app(f, key_of(i), i), i + 1);
    }
    assert_true(nseg > 50);
    assert_int_equal(segments(f, names, 1024), nseg);
    for (size_t s = 0; s < nseg; s++) {
        char want[64];
        snprintf(want, sizeof(want), "spool-%020llu.log", (unsigned long long)first_of_seg[s]);
        assert_string_equal(names[s], want);
    }
    assert_int_equal(stats(f).segments, nseg);
    assert_int_equal(stats(f).records, 600);
    assert_int_equal(stats(f).last_seq, 600);
    assert_int_equal(stats(f).first_seq, 1);

    n = read_all(f, 0, g, 2000);
    assert_int_equal(n, 600);
    for (uint32_t i = 0; i < 600; i++) {
        assert_int_equal(g[i].seq, i + 1);
        assert_int_equal(g[i].i, i);
        assert_string_equal(g[i].key, key_of(i));
        assert_int_equal(g[i].time_ms, f->now);
    }
    /* from the middle, exactly at a segment start, and past the end */
    n = read_all(f, 300, g, 2000);
    assert_int_equal(n, 301);
    assert_int_equal(g[0].seq, 300);
    n = read_all(f, first_of_seg[7], g, 2000);
    assert_int_equal(g[0].seq, first_of_seg[7]);
    assert_int_equal(n, 601 - first_of_seg[7]);
    assert_int_equal(read_all(f, 601, g, 2000), 0);

    /* a cursor at the end picks up records as they come, through rolls */
    assert_int_equal(wan_spool_cursor_create(f->sp, 0, &c), 0);
    for (int k = 0; k < 600; k++) {
        assert_int_equal(wan_spool_cursor_next(c, &r), 0);
    }
    assert_int_equal(wan_spool_cursor_next(c, &r), -EAGAIN);
    for (uint32_t i = 600; i < 700; i++) {
        app(f, key_of(i), i);
        assert_int_equal(wan_spool_cursor_next(c, &r), 0);
        assert_int_equal(r.seq, i + 1);
        assert_int_equal(check_data(&r), i);
        assert_int_equal(wan_spool_cursor_next(c, &r), -EAGAIN);
    }
    /* seek back */
    assert_int_equal(wan_spool_cursor_seek(c, 42), 0);
    assert_int_equal(wan_spool_cursor_next(c, &r), 0);
    assert_int_equal(r.seq, 42);
    wan_spool_cursor_destroy(c);

    /* a record larger than a segment gets one of its own */
    {
        static uint8_t big[10000];
        uint64_t seq;
        memset(big, 0xab, sizeof(big));
        big[0] = 1; /* data_for() is not used here: read it raw */
        assert_int_equal(wan_spool_append(f->sp, "big", 3, big, sizeof(big), &seq), 0);
        assert_int_equal(seq, 701);
        app(f, "after", 5);
        assert_int_equal(wan_spool_cursor_create(f->sp, 701, &c), 0);
        assert_int_equal(wan_spool_cursor_next(c, &r), 0);
        assert_int_equal(r.len, sizeof(big));
        assert_memory_equal(r.data, big, sizeof(big));
        assert_int_equal(wan_spool_cursor_next(c, &r), 0);
        assert_int_equal(r.seq, 702);
        wan_spool_cursor_destroy(c);
    }
}

static void test_acks_persist(void **state)
{
    struct fx *f = *state;
    uint64_t a;

    sp_open(f);
    app_n(f, 0, 10);
    assert_int_equal(wan_spool_ack(f->sp, "eu-west", 5), 0);
    assert_int_equal(wan_spool_ack(f->sp, "ap-south", 3), 0);
    /* older acks are ignored, unknown peers and future seqs refused */
    assert_int_equal(wan_spool_ack(f->sp, "eu-west", 4), 0);
    assert_int_equal(wan_spool_ack(f->sp, "us-east", 4), -ENOENT);
    assert_int_equal(wan_spool_ack(f->sp, NULL, 4), -ENOENT);
    assert_int_equal(wan_spool_ack(f->sp, "eu-west", 11), -ERANGE);
    assert_int_equal(wan_spool_peer_acked(f->sp, "eu-west", &a), 0);
    assert_int_equal(a, 5);
    assert_int_equal(wan_spool_peer_acked(f->sp, "nobody", &a), -ENOENT);
    sp_reopen(f);
    assert_int_equal(wan_spool_peer_acked(f->sp, "eu-west", &a), 0);
    assert_int_equal(a, 5);
    assert_int_equal(wan_spool_peer_acked(f->sp, "ap-south", &a), 0);
    assert_int_equal(a, 3);
    assert_int_equal(stats(f).records, 7);
    assert_int_equal(stats(f).first_seq, 4);
    /* the state file is readable text */
    {
        char p[256];
        size_t len;
        char *text;
        path_of(f, "acks", p, sizeof(p));
        text = (char *)slurp(p, &len);
        text[len] = '\0';
        assert_non_null(strstr(text, "ack eu-west 5\n"));
        assert_non_null(strstr(text, "ack ap-south 3\n"));
        assert_non_null(strstr(text, "\ncrc "));
        free(text);
    }
}

/* Run body in a child that "crashes" (exits without closing the spool). */
static void crash_child(struct fx *f, uint64_t ack, bool tick_after_a_second)
{
    pid_t pid = fork();
    int status;

    assert_true(pid != -1);
    if (pid == 0) {
        struct wan_spool *sp;
        if (wan_spool_open(&f->opt, &sp) != 0 || wan_spool_append(sp, "k", 1, "v", 1, NULL) ||
            wan_spool_ack(sp, "eu-west", ack) != 0 || wan_spool_tick(sp) != 0) {
            _exit(1);
        }
        if (tick_after_a_second) {
            f->now += 1000;
            if (wan_spool_tick(sp) != 0) {
                _exit(2);
            }
        }
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* everysec: an ack reaches the disk within a second (by tick), not at once. */
static void test_acks_everysec_crash(void **state)
{
    struct fx *f = *state;
    uint64_t a;

    f->opt.fsync = WAN_SPOOL_FSYNC_EVERYSEC;
    crash_child(f, 1, false);
    sp_open(f);
    assert_int_equal(wan_spool_peer_acked(f->sp, "eu-west", &a), 0);
    assert_int_equal(a, 0); /* not yet written: the record will simply ship again */
    sp_close(f);
    crash_child(f, 1, true);
    sp_open(f);
    assert_int_equal(wan_spool_peer_acked(f->sp, "eu-west", &a), 0);
    assert_int_equal(a, 1); /* written by the tick a second later */
}

static void test_trim(void **state)
{
    struct fx *f = *state;
    static struct got g[200];
    static char names[64][64];
    size_t before, after, n;

    f->opt.segment_bytes = 2048;
    sp_open(f);
    app_n(f, 0, 100);
    before = nsegments(f);
    assert_true(before > 6);
    assert_int_equal(stats(f).segments, before);

    /* one peer is not enough */
    assert_int_equal(wan_spool_ack(f->sp, "eu-west", 100), 0);
    assert_int_equal(nsegments(f), before);
    assert_int_equal(stats(f).records, 100);

    /* both past 50: every segment wholly below 51 goes */
    assert_int_equal(wan_spool_ack(f->sp, "ap-south", 50), 0);
    after = segments(f, names, 64);
    assert_true(after < before);
    assert_true(strtoull(names[0] + 6, NULL, 10) <= 51);
    if (after > 1) {
        assert_true(strtoull(names[1] + 6, NULL, 10) > 51);
    }
    assert_int_equal(stats(f).segments, after);
    assert_int_equal(stats(f).records, 50);
    assert_int_equal(stats(f).first_seq, 51);
    assert_true(stats(f).disk_bytes >= stats(f).bytes);
    /* readers start at the first record someone still needs */
    n = read_all(f, 0, g, 200);
    assert_int_equal(n, 50);
    assert_int_equal(g[0].seq, 51);

    /* all acked: only the segment being written stays */
    assert_int_equal(wan_spool_ack(f->sp, "ap-south", 100), 0);
    assert_int_equal(nsegments(f), 1);
    assert_int_equal(stats(f).records, 0);
    assert_int_equal(stats(f).bytes, 0);
    assert_int_equal(stats(f).first_seq, 0);
    assert_int_equal(read_all(f, 0, g, 200), 0);
    sp_reopen(f);
    assert_int_equal(stats(f).records, 0);
    assert_int_equal(app(f, "k", 1), 101);
    assert_int_equal(read_all(f, 0, g, 200), 1);
}

static void test_no_peers(void **state)
{
    struct fx *f = *state;
    static struct got g[10];

    f->opt.npeers = 0;
    f->opt.segment_bytes = 2048;
    sp_open(f);
    app_n(f, 0, 200);
    assert_int_equal(stats(f).records, 0);
    assert_int_equal(nsegments(f), 1);
    assert_int_equal(read_all(f, 0, g, 10), 0);
    assert_int_equal(wan_spool_peer_count(f->sp), 0);
    assert_int_equal(wan_spool_peer_stats(f->sp, 0, &(struct wan_spool_peer_stats){0}), -ENOENT);
}

/* A site that had no peers and now has one owes it nothing written before. */
static void test_peers_after_none(void **state)
{
    struct fx *f = *state;
    static struct got g[10];

    f->opt.npeers = 0;
    sp_open(f);
    app_n(f, 0, 5);
    sp_close(f);
    f->opt.npeers = 1;
    sp_open(f);
    assert_int_equal(read_all(f, 0, g, 10), 0);
    assert_int_equal(stats(f).records, 0);
    assert_int_equal(app(f, "k", 1), 6);
    assert_int_equal(read_all(f, 0, g, 10), 1);
}

/* A write that fails half way (file size limit, like a full disk) leaves no partial record,
 * puts the spool in its fault state (appends refused at once and counted as dropped for
 * every peer), and the next tick a second later finds the disk usable: later appends and
 * a reopen see only whole records. */
static void test_write_failure_takes_partial_back(void **state)
{
    struct fx *f = *state;
    pid_t pid;
    int status;

    f->opt.fsync = WAN_SPOOL_FSYNC_NO;
    pid = fork();
    assert_true(pid != -1);
    if (pid == 0) {
        struct wan_spool *sp;
        struct rlimit rl = {4096, 4096};
        uint8_t buf[MAXREC];
        uint32_t i = 0;
        int rc;
        signal(SIGXFSZ, SIG_IGN);
        if (wan_spool_open(&f->opt, &sp) != 0 || wan_spool_append(sp, "k", 1, "v", 1, NULL) ||
            setrlimit(RLIMIT_FSIZE, &rl) != 0) {
            _exit(1);
        }
        memset(buf, 'x', sizeof(buf));
        while ((rc = wan_spool_append(sp, "big", 3, buf, 1000, NULL)) == 0) {
            i++;
        }
        if (rc != -EFBIG || i != 3) { /* 30 + 3 * 1031 fit under 4096, the 4th does not */
            _exit(2);
        }
        {
            struct wan_spool_stats st;
            /* in the fault state: refused at once, counted for the peers */
            if (wan_spool_append(sp, "small", 5, "ok", 2, NULL) != -EFBIG ||
                wan_spool_stats(sp, &st) != 0 || st.fault != -EFBIG || st.unspooled != 2 ||
                st.faults != 1) {
                _exit(5);
            }
            f->now += 1000; /* the next probe: the small state file still fits */
            if (wan_spool_tick(sp) != 0 || wan_spool_stats(sp, &st) != 0 || st.fault != 0) {
                _exit(6);
            }
        }
        if (wan_spool_append(sp, "small", 5, "ok", 2, NULL) != 0) { /* 35 bytes still fit */
            _exit(3);
        }
        if (wan_spool_close(sp) != 0) {
            _exit(4);
        }
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    sp_open(f);
    assert_int_equal(stats(f).cut_events, 0);
    assert_int_equal(stats(f).records, 5);
    {
        struct wan_spool_cursor *c;
        struct wan_spool_record r;
        uint64_t seqs[5];
        int n = 0;
        assert_int_equal(wan_spool_cursor_create(f->sp, 0, &c), 0);
        while (wan_spool_cursor_next(c, &r) == 0) {
            assert_true(n < 5);
            seqs[n++] = r.seq;
        }
        wan_spool_cursor_destroy(c);
        assert_int_equal(n, 5);
        assert_int_equal(seqs[4], 5); /* the failed append was never given a seq */
    }
}

/* The active segment, then the whole directory, removed under a running spool: the next
 * tick notices, counts every record not acked as dropped for its peers, makes the
 * directory again and resumes in a fresh segment; what is spooled after is readable. */
static void test_fault_removed_files(void **state)
{
    struct fx *f = *state;
    struct wan_spool_cursor *c;
    struct wan_spool_record r;
    char path[512];
    DIR *d;
    struct dirent *de;
    uint64_t seq = 0;

    f->opt.fsync = WAN_SPOOL_FSYNC_NO;
    sp_open(f);
    app_n(f, 0, 3);
    d = opendir(f->dir);
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "spool-", 6) == 0) {
            snprintf(path, sizeof(path), "%s/%s", f->dir, de->d_name);
            assert_int_equal(unlink(path), 0);
        }
    }
    closedir(d);
    log_clear(f);
    f->now += 1000;
    assert_int_equal(wan_spool_tick(f->sp), 0);
    assert_int_equal(stats(f).faults, 1);
    assert_int_equal(stats(f).fault, 0); /* noticed and resumed in the same tick */
    assert_int_equal(peer_stats(f, 0).dropped, 3);
    assert_int_equal(peer_stats(f, 1).dropped, 3);
    assert_int_equal(f->log.count[WAN_SPOOL_LOG_WARN], 1); /* "writing again ..." */
    assert_int_equal(wan_spool_append(f->sp, "after", 5, "x", 1, &seq), 0);
    assert_int_equal(seq, 4);

    /* the whole directory */
    rm_rf(f->dir);
    f->now += 1000;
    assert_int_equal(wan_spool_tick(f->sp), 0);
    assert_int_equal(stats(f).faults, 2);
    assert_int_equal(stats(f).fault, 0);
    assert_int_equal(peer_stats(f, 0).dropped, 4);
    assert_int_equal(access(f->dir, F_OK), 0); /* made again */
    assert_int_equal(wan_spool_append(f->sp, "again", 5, "y", 1, &seq), 0);
    assert_int_equal(seq, 5);
    assert_int_equal(wan_spool_cursor_create(f->sp, 0, &c), 0);
    assert_int_equal(wan_spool_cursor_next(c, &r), 0);
    assert_int_equal(r.seq, 5);
    assert_int_equal(wan_spool_cursor_next(c, &r), -EAGAIN);
    wan_spool_cursor_destroy(c);
    sp_reopen(f); /* and a restart finds it */
    assert_int_equal(stats(f).records, 1);
}

/* Over max_bytes with a few keys written again and again: compaction alone keeps the
 * spool under the limit, the newest record of every key survives, nothing is dropped. */
static void test_overflow_compaction(void **state)
{
    struct fx *f = *state;
    static struct got g[4000];
    uint64_t latest[5] = {0};
    struct wan_spool_stats st;
    size_t n;

    f->opt.max_bytes = 16384;
    f->opt.segment_bytes = 4096;
    f->peers[0] = "eu-west";
    f->opt.npeers = 1;
    sp_open(f);
    for (uint32_t i = 0; i < 2000; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%u", i % 5);
        latest[i % 5] = app(f, key, i);
        assert_true(stats(f).bytes <= 16384);
    }
    st = stats(f);
    assert_true(st.compactions > 0);
    assert_true(st.compacted > 1000);
    assert_int_equal(st.dropped, 0);
    assert_int_equal(peer_stats(f, 0).compacted, st.compacted);
    assert_int_equal(peer_stats(f, 0).dropped, 0);
    assert_int_equal(st.records + st.compacted, 2000);
    n = read_all(f, 0, g, 4000);
    assert_int_equal(n, st.records);
    for (int k = 0; k < 5; k++) {
        bool found = false;
        char key[16];
        snprintf(key, sizeof(key), "k%d", k);
        for (size_t j = 0; j < n; j++) {
            if (g[j].seq == latest[k]) {
                assert_string_equal(g[j].key, key);
                found = true;
            }
        }
        assert_true(found);
    }
    assert_int_equal(f->log.count[WAN_SPOOL_LOG_ERROR], 0);
    assert_true(f->log.count[WAN_SPOOL_LOG_WARN] > 0);
    assert_non_null(strstr(f->log.text, "superseded records removed"));
    /* survives a restart */
    sp_reopen(f);
    assert_int_equal(read_all(f, 0, g, 4000), n);
}

/* Mixed: compaction removes what is superseded first, and only then are the oldest
 * unique records dropped. */
static void test_overflow_compacts_before_dropping(void **state)
{
    struct fx *f = *state;
    static struct got g[4000];
    struct wan_spool_stats st;
    size_t n;

    f->opt.max_bytes = 16384;
    f->opt.segment_bytes = 4096;
    f->opt.npeers = 1;
    sp_open(f);
    /* 20 unique records, then one hot key written many times */
    app_n(f, 0, 20);
    for (uint32_t i = 20; i < 300; i++) {
        app(f, "hot", i);
    }
    st = stats(f);
    assert_int_equal(st.dropped, 0);
    assert_true(st.compacted > 0);
    n = read_all(f, 0, g, 4000);
    for (uint32_t i = 0; i < 20; i++) {
        assert_int_equal(g[i].seq, i + 1); /* every unique record is still there */
    }
    assert_int_equal(g[n - 1].seq, 300);
    assert_true(st.bytes <= 16384);
}

/* Unique keys: the oldest records are dropped, counted per peer, logged (rate limited),
 * and the floor survives a restart. */
static void test_overflow_drop_counting(void **state)
{
    struct fx *f = *state;
    static struct got g[1000];
    struct wan_spool_stats st;
    struct wan_spool_peer_stats eu, ap;
    size_t n;
    int errors;

    f->opt.max_bytes = 16384;
    f->opt.segment_bytes = 4096;
    sp_open(f);
    for (uint32_t i = 0; i < 500; i++) {
        uint64_t s = app(f, key_of(i), i);
        if (i % 10 == 9) {
            assert_int_equal(wan_spool_ack(f->sp, "eu-west", s), 0);
        }
        assert_true(stats(f).bytes <= 16384);
    }
    st = stats(f);
    eu = peer_stats(f, 0);
    ap = peer_stats(f, 1);
    assert_true(st.dropped > 300);
    assert_int_equal(st.compacted, 0);
    assert_int_equal(ap.dropped, st.dropped);
    assert_int_equal(eu.dropped, 0); /* it had them all */
    assert_int_equal(st.records + st.dropped, 500);
    n = read_all(f, 0, g, 1000);
    assert_int_equal(n, 500 - st.dropped);
    /* what is left is the newest, contiguous up to the last */
    for (size_t j = 0; j < n; j++) {
        assert_int_equal(g[j].seq, st.dropped + 1 + j);
        assert_int_equal(g[j].i, g[j].seq - 1);
    }
    assert_int_equal(ap.records, n);
    assert_int_equal(ap.bytes, st.bytes);
    /* logged once for the first run (the fake clock stands still), then a second later */
    errors = f->log.count[WAN_SPOOL_LOG_ERROR];
    assert_int_equal(errors, 1);
    assert_non_null(strstr(f->log.text, "dropped"));
    assert_non_null(strstr(f->log.text, "ap-south"));
    f->now += 1000;
    assert_int_equal(wan_spool_tick(f->sp), 0);
    assert_int_equal(f->log.count[WAN_SPOOL_LOG_ERROR], 2);

    /* the dropped records do not come back */
    sp_reopen(f);
    assert_int_equal(read_all(f, 0, g, 1000), n);
    assert_int_equal(g[0].seq, st.dropped + 1);
    assert_int_equal(stats(f).records, n);
}

static void test_peer_list_change(void **state)
{
    struct fx *f = *state;
    static struct got g[100];
    const char *p2[] = {"ap-south", "sa-east"};
    const char *p3[] = {"eu-west"};
    uint64_t a;

    sp_open(f);
    app_n(f, 0, 10);
    assert_int_equal(wan_spool_ack(f->sp, "eu-west", 10), 0);
    assert_int_equal(wan_spool_ack(f->sp, "ap-south", 5), 0);
    sp_close(f);

    /* eu-west leaves, sa-east joins */
    f->opt.peers = p2;
    f->opt.npeers = 2;
    log_clear(f);
    sp_open(f);
    assert_int_equal(wan_spool_peer_count(f->sp), 2);
    assert_int_equal(wan_spool_peer_acked(f->sp, "eu-west", &a), -ENOENT);
    assert_int_equal(wan_spool_peer_acked(f->sp, "ap-south", &a), 0);
    assert_int_equal(a, 5);
    assert_int_equal(wan_spool_peer_acked(f->sp, "sa-east", &a), 0);
    assert_int_equal(a, 0);
    assert_int_equal(f->log.count[WAN_SPOOL_LOG_INFO], 2);
    assert_non_null(strstr(f->log.text, "new peer sa-east"));
    assert_non_null(strstr(f->log.text, "eu-west is no longer configured"));
    /* the newcomer is owed what some peer of the last run still needed (6..10), not
     * what all of them had acked */
    assert_int_equal(read_all(f, 1, g, 100), 5);
    assert_int_equal(g[0].seq, 6);
    assert_int_equal(peer_stats(f, 1).records, 5);
    assert_int_equal(peer_stats(f, 0).records, 5);
    assert_string_equal(peer_stats(f, 1).name, "sa-east");
    assert_int_equal(wan_spool_ack(f->sp, "sa-east", 10), 0);
    assert_int_equal(stats(f).records, 5);
    assert_int_equal(wan_spool_ack(f->sp, "ap-south", 7), 0);
    sp_close(f);

    /* eu-west back: its old ack was forgotten */
    f->opt.peers = p3;
    f->opt.npeers = 1;
    sp_open(f);
    assert_int_equal(wan_spool_peer_acked(f->sp, "eu-west", &a), 0);
    assert_int_equal(a, 0);
    assert_int_equal(read_all(f, 0, g, 100), 3); /* what was left when it came back */
    assert_int_equal(g[0].seq, 8);
    assert_non_null(strstr(f->log.text, "new peer eu-west"));
}

static void test_stats_and_times(void **state)
{
    struct fx *f = *state;
    struct wan_spool_peer_stats eu, ap;
    struct wan_spool_stats st;
    uint64_t t0 = f->now, all = 0, tail = 0;

    f->opt.segment_bytes = 1024;
    sp_open(f);
    for (uint32_t i = 0; i < 30; i++) {
        f->now = t0 + 10 * i;
        app(f, key_of(i), i);
        all += rec_size(key_of(i), i);
        if (i >= 10) {
            tail += rec_size(key_of(i), i);
        }
    }
    assert_int_equal(wan_spool_ack(f->sp, "eu-west", 10), 0);
    eu = peer_stats(f, 0);
    ap = peer_stats(f, 1);
    assert_string_equal(eu.name, "eu-west");
    assert_int_equal(eu.acked_seq, 10);
    assert_int_equal(eu.records, 20);
    assert_int_equal(eu.bytes, tail);
    assert_int_equal(eu.oldest_unacked_ms, t0 + 100);
    assert_int_equal(ap.records, 30);
    assert_int_equal(ap.bytes, all);
    assert_int_equal(ap.oldest_unacked_ms, t0);
    st = stats(f);
    assert_int_equal(st.records, 30);
    assert_int_equal(st.bytes, all);
    assert_int_equal(st.appended, 30);
    assert_int_equal(st.first_seq, 1);

    assert_int_equal(wan_spool_ack(f->sp, "ap-south", 30), 0);
    ap = peer_stats(f, 1);
    assert_int_equal(ap.records, 0);
    assert_int_equal(ap.bytes, 0);
    assert_int_equal(ap.oldest_unacked_ms, 0);
    st = stats(f);
    assert_int_equal(st.records, 20);
    assert_int_equal(st.bytes, tail);
    assert_int_equal(st.first_seq, 11);
    assert_int_equal(wan_spool_peer_stats(f->sp, 2, &ap), -ENOENT);
}

static void test_sync_modes(void **state)
{
    struct fx *f = *state;
    struct wan_spool_stats st;
    uint64_t fs;

    f->opt.fsync = WAN_SPOOL_FSYNC_ALWAYS;
    sp_open(f);
    app_n(f, 0, 3);
    assert_int_equal(stats(f).synced_seq, 0);
    assert_int_equal(wan_spool_sync(f->sp), 0);
    st = stats(f);
    assert_int_equal(st.synced_seq, 3);
    fs = st.fsyncs;
    assert_true(fs >= 1);
    assert_int_equal(wan_spool_sync(f->sp), 0); /* nothing new: no fsync */
    assert_int_equal(stats(f).fsyncs, fs);
    sp_close(f);

    f->opt.fsync = WAN_SPOOL_FSYNC_EVERYSEC;
    sp_open(f);
    app_n(f, 3, 2);
    assert_int_equal(wan_spool_tick(f->sp), 0);
    assert_int_equal(stats(f).synced_seq, 3);
    f->now += 999;
    assert_int_equal(wan_spool_tick(f->sp), 0);
    assert_int_equal(stats(f).synced_seq, 3);
    f->now += 1;
    assert_int_equal(wan_spool_tick(f->sp), 0);
    assert_int_equal(stats(f).synced_seq, 5);
    /* a clock that steps back does not stop the fsyncs */
    app_n(f, 5, 1);
    f->now -= 5000;
    assert_int_equal(wan_spool_tick(f->sp), 0);
    assert_int_equal(stats(f).synced_seq, 6);
    sp_close(f);

    f->opt.fsync = WAN_SPOOL_FSYNC_NO;
    sp_open(f);
    app_n(f, 6, 2);
    assert_int_equal(wan_spool_sync(f->sp), 0);
    f->now += 5000;
    assert_int_equal(wan_spool_tick(f->sp), 0);
    st = stats(f);
    assert_int_equal(st.synced_seq, 6);
    assert_int_equal(st.fsyncs, 0);
}

/* A damaged state file costs re-shipping, never the records; leftovers are cleaned. */
static void test_damaged_state_and_leftovers(void **state)
{
    struct fx *f = *state;
    static struct got g[100];
    char p[256];
    uint64_t id, a;

    sp_open(f);
    app_n(f, 0, 10);
    assert_int_equal(wan_spool_ack(f->sp, "eu-west", 10), 0);
    assert_int_equal(wan_spool_ack(f->sp, "ap-south", 4), 0);
    id = stats(f).id;
    assert_true(id != 0);
    sp_close(f);

    path_of(f, "acks", p, sizeof(p));
    spit(p, (const uint8_t *)"geogate-spool-state 1\nid 1\ncrc 0\n", 33);
    path_of(f, "spool-00000000000000000001.log.compact", p, sizeof(p));
    spit(p, (const uint8_t *)"junk", 4);
    path_of(f, "acks.tmp", p, sizeof(p));
    spit(p, (const uint8_t *)"junk", 4);
    path_of(f, "README", p, sizeof(p));
    spit(p, (const uint8_t *)"keep me", 7);
    path_of(f, "spool-12.log", p, sizeof(p));
    spit(p, (const uint8_t *)"not a segment name", 18);

    log_clear(f);
    sp_open(f);
    assert_int_equal(f->log.count[WAN_SPOOL_LOG_WARN], 1);
    assert_non_null(strstr(f->log.text, "damaged"));
    assert_true(stats(f).id != id);
    assert_int_equal(wan_spool_peer_acked(f->sp, "eu-west", &a), 0);
    assert_int_equal(a, 0);
    assert_int_equal(read_all(f, 0, g, 100), 10);
    assert_false(exists(f, "spool-00000000000000000001.log.compact"));
    assert_false(exists(f, "acks.tmp"));
    assert_true(exists(f, "README"));
    assert_true(exists(f, "spool-12.log"));
    assert_int_equal(app(f, "k", 1), 11);
    /* every way of truncating the state file is caught */
    sp_close(f);
    {
        size_t len;
        uint8_t *good;
        path_of(f, "acks", p, sizeof(p));
        good = slurp(p, &len);
        for (size_t t = 0; t < len; t++) {
            spit(p, good, t);
            log_clear(f);
            sp_open(f);
            assert_int_equal(f->log.count[WAN_SPOOL_LOG_WARN], t == 0 ? 1 : 1);
            assert_int_equal(read_all(f, 0, g, 100), 11);
            sp_close(f);
        }
        free(good);
    }
}

/* A cursor in the middle keeps its place through compaction and trimming. */
static void test_cursor_through_compaction(void **state)
{
    struct fx *f = *state;
    struct wan_spool_cursor *c;
    struct wan_spool_record r;
    uint64_t last = 0;
    int got = 0;

    f->opt.max_bytes = 16384;
    f->opt.segment_bytes = 4096;
    sp_open(f);
    for (uint32_t i = 0; i < 100; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%u", i % 3);
        app(f, key, i);
    }
    assert_int_equal(wan_spool_cursor_create(f->sp, 0, &c), 0);
    for (int k = 0; k < 5; k++) {
        assert_int_equal(wan_spool_cursor_next(c, &r), 0);
        assert_true(r.seq > last);
        last = r.seq;
    }
    /* lots more: compactions rewrite and delete files under the cursor */
    for (uint32_t i = 100; i < 1000; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%u", i % 3);
        app(f, key, i);
        if (i % 97 == 0) {
            assert_int_equal(wan_spool_ack(f->sp, "eu-west", i), 0);
        }
    }
    assert_true(stats(f).compactions > 0);
    while (wan_spool_cursor_next(c, &r) == 0) {
        assert_true(r.seq > last);
        last = r.seq;
        check_data(&r);
        got++;
    }
    assert_true(got > 0);
    assert_int_equal(last, 1000);
    wan_spool_cursor_destroy(c);
}

/* Several threads append (and sync, group commit) while one reads and acks. */
#define T_WRITERS 4
#define T_PER_WRITER 1500

struct t_ctx {
    struct fx *f;
    int id;
    int err;
    size_t read;
};

static void *t_writer(void *arg)
{
    struct t_ctx *t = arg;
    uint8_t buf[MAXREC];

    for (uint32_t k = 0; k < T_PER_WRITER; k++) {
        uint32_t i = (uint32_t)t->id * T_PER_WRITER + k;
        size_t len = data_for(i, buf);
        if (wan_spool_append(t->f->sp, key_of(i), strlen(key_of(i)), buf, len, NULL) != 0) {
            t->err = 1;
        }
        if (k % 50 == 49 && wan_spool_sync(t->f->sp) != 0) {
            t->err = 2;
        }
    }
    return NULL;
}

static void *t_reader(void *arg)
{
    struct t_ctx *t = arg;
    struct wan_spool_cursor *c;
    struct wan_spool_record r;
    static uint8_t seen[T_WRITERS * T_PER_WRITER];
    uint64_t last = 0;
    int rc;

    memset(seen, 0, sizeof(seen));
    if (wan_spool_cursor_create(t->f->sp, 1, &c) != 0) {
        t->err = 1;
        return NULL;
    }
    while (t->read < T_WRITERS * T_PER_WRITER) {
        uint32_t i;
        rc = wan_spool_cursor_next(c, &r);
        if (rc == -EAGAIN) {
            usleep(100);
            continue;
        }
        if (rc != 0 || r.seq <= last || r.len < 4) {
            t->err = 2;
            break;
        }
        last = r.seq;
        i = (uint32_t)r.data[0] | ((uint32_t)r.data[1] << 8) | ((uint32_t)r.data[2] << 16);
        if (i >= T_WRITERS * T_PER_WRITER || seen[i] || r.key_len != strlen(key_of(i)) ||
            memcmp(r.key, key_of(i), r.key_len) != 0) {
            t->err = 3;
            break;
        }
        seen[i] = 1;
        t->read++;
        if (t->read % 100 == 0 &&
            (wan_spool_ack(t->f->sp, "eu-west", r.seq) != 0 ||
             wan_spool_ack(t->f->sp, "ap-south", r.seq) != 0 || wan_spool_tick(t->f->sp) != 0)) {
            t->err = 4;
            break;
        }
    }
    wan_spool_cursor_destroy(c);
    return NULL;
}

static void test_threads(void **state)
{
    struct fx *f = *state;
    pthread_t tid[T_WRITERS + 1];
    struct t_ctx ctx[T_WRITERS + 1];
    static struct got g[T_WRITERS * T_PER_WRITER];

    f->opt.fsync = WAN_SPOOL_FSYNC_ALWAYS;
    f->opt.segment_bytes = 16384;
    f->opt.clock = NULL;
    sp_open(f);
    for (int i = 0; i <= T_WRITERS; i++) {
        ctx[i] = (struct t_ctx){.f = f, .id = i};
        assert_int_equal(
            pthread_create(&tid[i], NULL, i < T_WRITERS ? t_writer : t_reader, &ctx[i]), 0);
    }
    for (int i = 0; i <= T_WRITERS; i++) {
        pthread_join(tid[i], NULL);
        assert_int_equal(ctx[i].err, 0);
    }
    assert_int_equal(ctx[T_WRITERS].read, T_WRITERS * T_PER_WRITER);
    assert_int_equal(stats(f).appended, T_WRITERS * T_PER_WRITER);
    assert_int_equal(stats(f).last_seq, T_WRITERS * T_PER_WRITER);
    assert_int_equal(wan_spool_sync(f->sp), 0);
    assert_int_equal(stats(f).synced_seq, T_WRITERS * T_PER_WRITER);
    /* after the reader's acks only a tail remains, and it reads back after a restart */
    sp_reopen(f);
    assert_int_equal(read_all(f, 0, g, T_WRITERS * T_PER_WRITER), stats(f).records);
    assert_true(stats(f).records < 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fsync_names),
        cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_append_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_append_read_across_rolls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_acks_persist, setup, teardown),
        cmocka_unit_test_setup_teardown(test_acks_everysec_crash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trim, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_peers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peers_after_none, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_failure_takes_partial_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_removed_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overflow_compaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overflow_compacts_before_dropping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overflow_drop_counting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peer_list_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats_and_times, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_modes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_state_and_leftovers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cursor_through_compaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
