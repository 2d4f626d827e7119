/*
 * test_spool_recover — wan/spool.c after crashes and damage: restart recovery, sequence
 * numbers never reused after a crash, a torn tail cut at every byte offset, truncation at
 * every offset, bit flips in the middle of a segment and in a middle segment (detected,
 * cut, counted, logged), and a cursor that meets corruption.
 * Runs with cwd tests/unit (make unit); single-threaded.
 */
#include "tests/unit/spool_fixture.h"

static void test_restart_recovery(void **state)
{
    struct fx *f = *state;
    static struct got g[1000];
    struct wan_spool_stats before, after;

    f->opt.segment_bytes = 4096;
    sp_open(f);
    app_n(f, 0, 300);
    before = stats(f);
    sp_reopen(f);
    after = stats(f);
    assert_int_equal(after.id, before.id);
    assert_int_equal(after.records, 300);
    assert_int_equal(after.bytes, before.bytes);
    assert_int_equal(after.segments, before.segments);
    assert_int_equal(after.last_seq, 300);
    assert_int_equal(after.cut_events, 0);
    assert_int_equal(read_all(f, 0, g, 1000), 300);
    for (uint32_t i = 0; i < 300; i++) {
        assert_int_equal(g[i].seq, i + 1);
        assert_int_equal(g[i].i, i);
    }
    /* a clean close gives the reserved sequence numbers back: no hole */
    assert_int_equal(app(f, "next", 300), 301);
    assert_int_equal(f->log.count[WAN_SPOOL_LOG_ERROR], 0);
    assert_int_equal(f->log.count[WAN_SPOOL_LOG_WARN], 0);
}

/* kill -9 equivalent: the child appends and exits without closing. */
static void test_crash_never_reuses_seqs(void **state)
{
    struct fx *f = *state;
    static struct got g[100];
    pid_t pid;
    int status;

    f->opt.fsync = WAN_SPOOL_FSYNC_ALWAYS;
    pid = fork();
    assert_true(pid != -1);
    if (pid == 0) {
        struct wan_spool *sp;
        uint8_t buf[MAXREC];
        uint64_t seq;
        if (wan_spool_open(&f->opt, &sp) != 0) {
            _exit(1);
        }
        for (uint32_t i = 0; i < 10; i++) {
            size_t len = data_for(i, buf);
            if (wan_spool_append(sp, key_of(i), strlen(key_of(i)), buf, len, &seq) != 0 ||
                seq != i + 1) {
                _exit(2);
            }
        }
        if (wan_spool_sync(sp) != 0 || wan_spool_ack(sp, "eu-west", 7) != 0) {
            _exit(3);
        }
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    sp_open(f);
    assert_int_equal(read_all(f, 0, g, 100), 10);
    for (uint32_t i = 0; i < 10; i++) {
        assert_int_equal(g[i].seq, i + 1);
    }
    /* the ack (fsync always) survived the crash */
    {
        uint64_t acked;
        assert_int_equal(wan_spool_peer_acked(f->sp, "eu-west", &acked), 0);
        assert_int_equal(acked, 7);
    }
    /* seqs 11.. may have been shipped before the crash: the next one skips the whole
     * reservation */
    assert_int_equal(app(f, "after-crash", 1), (UINT64_C(1) << 20) + 1);
    assert_int_equal(read_all(f, 0, g, 100), 11);
    assert_int_equal(g[10].seq, (UINT64_C(1) << 20) + 1);
}

/* Truncate the last record at every byte offset: exactly the complete records survive. */
static void test_torn_tail_every_offset(void **state)
{
    struct fx *f = *state;
    static struct got g[100];
    static char names[16][64];
    char seg_path[256], acks_path[256];
    uint8_t *seg, *acks;
    size_t seg_len, acks_len;
    uint64_t last_start;

    f->opt.fsync = WAN_SPOOL_FSYNC_NO;
    sp_open(f);
    app_n(f, 0, 20);
    sp_close(f);
    assert_int_equal(segments(f, names, 16), 1);
    path_of(f, names[0], seg_path, sizeof(seg_path));
    path_of(f, "acks", acks_path, sizeof(acks_path));
    seg = slurp(seg_path, &seg_len);
    acks = slurp(acks_path, &acks_len);
    last_start = seg_len - rec_size(key_of(19), 19);

    for (uint64_t t = last_start; t <= seg_len; t++) {
        struct wan_spool_stats st;
        bool torn = t != last_start && t != seg_len;
        size_t n;
        spit(seg_path, seg, (size_t)t);
        spit(acks_path, acks, acks_len);
        log_clear(f);
        sp_open(f);
        st = stats(f);
        n = read_all(f, 0, g, 100);
        assert_int_equal(n, t == seg_len ? 20 : 19);
        assert_int_equal(st.records, n);
        for (uint32_t i = 0; i < n; i++) {
            assert_int_equal(g[i].seq, i + 1);
            assert_int_equal(g[i].i, i);
        }
        assert_int_equal(st.cut_events, torn ? 1 : 0);
        assert_int_equal(st.cut_bytes, torn ? t - last_start : 0);
        assert_int_equal(st.cut_records, 0);
        assert_int_equal(st.dropped, 0);
        assert_int_equal(f->log.count[WAN_SPOOL_LOG_WARN], torn ? 1 : 0);
        assert_int_equal(f->log.count[WAN_SPOOL_LOG_ERROR], 0);
        if (torn) {
            assert_non_null(strstr(f->log.text, "torn"));
            assert_int_equal(file_size(seg_path), last_start);
        }
        /* seq 20 was handed out once: never again */
        assert_int_equal(app(f, "new", 1000), 21);
        sp_close(f);
    }
    free(seg);
    free(acks);
}

/* Truncate a small spool at every byte offset of the whole file. */
static void test_truncate_every_offset(void **state)
{
    struct fx *f = *state;
    static struct got g[16];
    static char names[16][64];
    char seg_path[256];
    uint8_t *seg;
    size_t seg_len;
    uint64_t ends[6], off = 0;

    f->opt.fsync = WAN_SPOOL_FSYNC_NO;
    sp_open(f);
    for (uint32_t i = 0; i < 6; i++) {
        app(f, key_of(i), i);
        off += rec_size(key_of(i), i);
        ends[i] = off;
    }
    sp_close(f);
    assert_int_equal(segments(f, names, 16), 1);
    path_of(f, names[0], seg_path, sizeof(seg_path));
    seg = slurp(seg_path, &seg_len);
    assert_int_equal(seg_len, ends[5]);
    for (uint64_t t = 0; t <= seg_len; t++) {
        size_t complete = 0;
        while (complete < 6 && ends[complete] <= t) {
            complete++;
        }
        spit(seg_path, seg, (size_t)t);
        sp_open(f);
        assert_int_equal(read_all(f, 0, g, 16), complete);
        assert_int_equal(stats(f).records, complete);
        assert_int_equal(file_size(seg_path), complete ? ends[complete - 1] : 0);
        sp_close(f);
    }
    free(seg);
}

/* Flip a bit in every byte of record 10 of 30: the damage is found, the segment cut at
 * record 10, and the 20 intact records after it reported lost. */
static void test_bit_flip_in_middle(void **state)
{
    struct fx *f = *state;
    static struct got g[64];
    static char names[16][64];
    char seg_path[256], acks_path[256];
    uint8_t *seg, *acks, *bad;
    size_t seg_len, acks_len;
    uint64_t start = 0, size;

    f->opt.fsync = WAN_SPOOL_FSYNC_NO;
    sp_open(f);
    app_n(f, 0, 30);
    sp_close(f);
    assert_int_equal(segments(f, names, 16), 1);
    path_of(f, names[0], seg_path, sizeof(seg_path));
    path_of(f, "acks", acks_path, sizeof(acks_path));
    seg = slurp(seg_path, &seg_len);
    acks = slurp(acks_path, &acks_len);
    bad = malloc(seg_len);
    assert_non_null(bad);
    for (uint32_t i = 0; i < 9; i++) {
        start += rec_size(key_of(i), i);
    }
    size = rec_size(key_of(9), 9); /* record 10 (seq 10) */

    for (uint64_t b = 0; b < size; b++) {
        struct wan_spool_stats st;
        struct wan_spool_peer_stats ps;
        memcpy(bad, seg, seg_len);
        bad[start + b] ^= (uint8_t)(1u << (b % 8));
        spit(seg_path, bad, seg_len);
        spit(acks_path, acks, acks_len);
        log_clear(f);
        sp_open(f);
        st = stats(f);
        assert_int_equal(read_all(f, 0, g, 64), 9);
        assert_int_equal(st.records, 9);
        assert_int_equal(st.cut_events, 1);
        assert_int_equal(st.cut_bytes, seg_len - start);
        assert_int_equal(st.cut_records, 20);
        assert_int_equal(st.dropped, 20);
        ps = peer_stats(f, 0);
        assert_int_equal(ps.dropped, 20);
        ps = peer_stats(f, 1);
        assert_int_equal(ps.dropped, 20);
        assert_int_equal(f->log.count[WAN_SPOOL_LOG_ERROR], 1);
        assert_non_null(strstr(f->log.text, "losing 20 intact records (seq 11..30)"));
        assert_int_equal(file_size(seg_path), start);
        assert_int_equal(app(f, "new", 1), 31);
        sp_close(f);
    }
    free(bad);
    free(seg);
    free(acks);
}

/* Damage in a segment that is not the last: that segment is cut, the later ones kept;
 * peers that already acked the lost records do not count them. */
static void test_corrupt_middle_segment(void **state)
{
    struct fx *f = *state;
    static struct got g[200];
    static char names[64][64];
    char path[256];
    uint8_t *buf;
    size_t len, nseg, n;
    uint64_t seg3_first, seg4_first, off;

    f->opt.fsync = WAN_SPOOL_FSYNC_NO;
    f->opt.segment_bytes = 2048;
    sp_open(f);
    app_n(f, 0, 100);
    assert_int_equal(wan_spool_ack(f->sp, "eu-west", 100), 0);
    sp_close(f);
    nseg = segments(f, names, 64);
    assert_true(nseg > 6);
    seg3_first = strtoull(names[3] + 6, NULL, 10);
    seg4_first = strtoull(names[4] + 6, NULL, 10);
    assert_true(seg4_first - seg3_first >= 3);

    /* flip a data byte of the second record of segment 3 */
    path_of(f, names[3], path, sizeof(path));
    buf = slurp(path, &len);
    off = rec_size(key_of((uint32_t)seg3_first - 1), (uint32_t)seg3_first - 1);
    buf[off + REC_OVERHEAD + 2] ^= 0x10;
    spit(path, buf, len);
    free(buf);

    log_clear(f);
    sp_open(f);
    n = read_all(f, 0, g, 200);
    /* lost: seg3_first + 1 .. seg4_first - 1 */
    assert_int_equal(n, 100 - (seg4_first - seg3_first - 1));
    for (size_t k = 0; k < n; k++) {
        assert_true(g[k].seq <= seg3_first || g[k].seq >= seg4_first);
        assert_int_equal(g[k].i, g[k].seq - 1);
    }
    assert_int_equal(stats(f).cut_events, 1);
    assert_int_equal(stats(f).cut_records, seg4_first - seg3_first - 2);
    assert_int_equal(peer_stats(f, 0).dropped, 0); /* eu-west had acked them */
    assert_int_equal(peer_stats(f, 1).dropped, seg4_first - seg3_first - 2);
    assert_int_equal(file_size(path), off);
    assert_int_equal(f->log.count[WAN_SPOOL_LOG_ERROR], 1);
    assert_non_null(strstr(f->log.text, "crc mismatch"));
    assert_non_null(strstr(f->log.text, names[3]));
    assert_int_equal(app(f, "new", 1), 101);
}

/* Damage that appears after open (disk rot): the reader reports it once and goes on. */
static void test_cursor_sees_corruption(void **state)
{
    struct fx *f = *state;
    static char names[64][64];
    struct wan_spool_cursor *c;
    struct wan_spool_record r;
    char path[256];
    uint8_t *buf;
    size_t len;
    uint64_t seg1_first, last = 0;
    int rc, bad = 0, good = 0;

    f->opt.segment_bytes = 2048;
    sp_open(f);
    app_n(f, 0, 60);
    assert_true(segments(f, names, 64) > 3);
    seg1_first = strtoull(names[1] + 6, NULL, 10);
    path_of(f, names[0], path, sizeof(path));
    buf = slurp(path, &len);
    buf[rec_size(key_of(0), 0) + REC_OVERHEAD + 1] ^= 0x01; /* record 2 */
    spit(path, buf, len);
    free(buf);

    assert_int_equal(wan_spool_cursor_create(f->sp, 0, &c), 0);
    while ((rc = wan_spool_cursor_next(c, &r)) != -EAGAIN) {
        if (rc == -EBADMSG) {
            bad++;
            continue;
        }
        assert_int_equal(rc, 0);
        assert_true(r.seq > last);
        if (last == 1) {
            assert_int_equal(r.seq, seg1_first); /* skipped the rest of segment 0 */
        }
        last = r.seq;
        check_data(&r);
        good++;
    }
    wan_spool_cursor_destroy(c);
    assert_int_equal(bad, 1);
    assert_int_equal(good, 1 + 60 - (int)(seg1_first - 1));
    assert_int_equal(stats(f).cut_events, 1);
    assert_int_equal(f->log.count[WAN_SPOOL_LOG_ERROR], 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_restart_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_never_reuses_seqs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_every_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncate_every_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bit_flip_in_middle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_middle_segment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cursor_sees_corruption, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
