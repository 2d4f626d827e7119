/*
 * test_vop — gateway/frontend/vop_decide.c: what each client write does over the current
 * versioned item (absent, a tombstone, a live item, a plain memcached item): add, cas
 * (locally and at a peer), replace, append, prepend, incr, decr (numbers, padding,
 * underflow, non-numbers), touch; and what the node's answer to a write means, blind or
 * after a read.  Pure logic.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/frontend/vop_decide.h"

#define NOW_EXP 1765000600u

static struct gw_cur cur_absent(void)
{
    struct gw_cur c;

    memset(&c, 0, sizeof(c));
    return c;
}

static struct gw_cur cur_tombstone(void)
{
    struct gw_cur c = cur_absent();

    c.present = true;
    c.versioned = true;
    c.cas = 41;
    c.hdr.version.hlc = 1000;
    c.hdr.tombstone = true;
    return c;
}

static struct gw_cur cur_live(const char *val, uint32_t flags, uint32_t expiry)
{
    struct gw_cur c = cur_absent();

    c.present = true;
    c.found = true;
    c.versioned = true;
    c.cas = 42;
    c.hdr.version.hlc = 2000;
    c.hdr.client_flags = flags;
    c.hdr.expiry = expiry;
    c.val = (uint8_t *)val;
    c.len = strlen(val);
    return c;
}

static struct gw_vop_input input(enum mc_cmd cmd)
{
    struct gw_vop_input in;

    memset(&in, 0, sizeof(in));
    in.cmd = cmd;
    in.flags = 7;
    in.expiry = NOW_EXP;
    in.ndata = 3;
    return in;
}

static void expect_answer(const struct gw_vop_input *in, const struct gw_cur *cur, const char *line)
{
    struct gw_vop_decision d;

    gw_vop_decide(in, cur, &d);
    assert_int_equal(d.verdict, GW_VOP_ANSWER);
    assert_string_equal(d.answer, line);
}

static struct gw_vop_decision expect_write(const struct gw_vop_input *in, const struct gw_cur *cur)
{
    struct gw_vop_decision d;

    gw_vop_decide(in, cur, &d);
    assert_int_equal(d.verdict, GW_VOP_WRITE);
    assert_int_equal(d.over, cur->present);
    return d;
}

static void test_add(void **state)
{
    struct gw_vop_input in = input(MC_CMD_ADD);
    struct gw_cur absent = cur_absent(), tomb = cur_tombstone(), live = cur_live("x", 1, 2);
    struct gw_vop_decision d;

    (void)state;
    expect_answer(&in, &live, "NOT_STORED");
    d = expect_write(&in, &tomb); /* add wins over a tombstone, by cas */
    assert_true(d.over);
    assert_int_equal(d.value, GW_VOP_VALUE_CLIENT);
    assert_int_equal(d.client_flags, 7);
    assert_int_equal(d.expiry, NOW_EXP);
    assert_int_equal(d.new_len, 3);
    d = expect_write(&in, &absent);
    assert_false(d.over);
}

static void test_cas(void **state)
{
    struct gw_vop_input in = input(MC_CMD_CAS);
    struct gw_cur absent = cur_absent(), tomb = cur_tombstone(), live = cur_live("x", 1, 2);
    struct gw_vop_decision d;

    (void)state;
    /* locally we read only after memcached said EXISTS */
    in.cas_unique = live.cas;
    expect_answer(&in, &live, "EXISTS");
    expect_answer(&in, &tomb, "NOT_FOUND");
    expect_answer(&in, &absent, "NOT_FOUND");
    /* at a peer the token is the peer item's version clock */
    in.remote = true;
    d = expect_write(&in, &live);
    assert_int_equal(d.value, GW_VOP_VALUE_CLIENT);
    assert_int_equal(d.client_flags, 7);
    in.cas_unique = live.cas + 1;
    expect_answer(&in, &live, "EXISTS");
    expect_answer(&in, &tomb, "NOT_FOUND");
    expect_answer(&in, &absent, "NOT_FOUND");
}

static void test_replace(void **state)
{
    struct gw_vop_input in = input(MC_CMD_REPLACE);
    struct gw_cur absent = cur_absent(), tomb = cur_tombstone(), live = cur_live("x", 1, 2);
    struct gw_vop_decision d;

    (void)state;
    expect_answer(&in, &absent, "NOT_STORED");
    expect_answer(&in, &tomb, "NOT_STORED");
    d = expect_write(&in, &live);
    assert_int_equal(d.value, GW_VOP_VALUE_CLIENT);
    assert_int_equal(d.client_flags, 7);
    assert_int_equal(d.expiry, NOW_EXP);
}

static void test_append_prepend(void **state)
{
    struct gw_vop_input in = input(MC_CMD_APPEND);
    struct gw_cur absent = cur_absent(), tomb = cur_tombstone(), live = cur_live("hello", 9, 77);
    struct gw_vop_decision d;

    (void)state;
    expect_answer(&in, &absent, "NOT_STORED");
    expect_answer(&in, &tomb, "NOT_STORED");
    d = expect_write(&in, &live);
    assert_int_equal(d.value, GW_VOP_VALUE_APPEND);
    assert_int_equal(d.new_len, 5 + 3);
    /* the old item's flags and expiry stay */
    assert_int_equal(d.client_flags, 9);
    assert_int_equal(d.expiry, 77);
    in.cmd = MC_CMD_PREPEND;
    expect_answer(&in, &tomb, "NOT_STORED");
    d = expect_write(&in, &live);
    assert_int_equal(d.value, GW_VOP_VALUE_PREPEND);
    assert_int_equal(d.new_len, 8);
    assert_int_equal(d.client_flags, 9);
}

static void test_incr_decr(void **state)
{
    struct gw_vop_input in = input(MC_CMD_INCR);
    struct gw_cur absent = cur_absent(), tomb = cur_tombstone();
    struct gw_cur n100 = cur_live("100", 5, 66), n9 = cur_live("9", 5, 66);
    struct gw_cur word = cur_live("abc", 0, 0), empty = cur_live("", 0, 0);
    struct gw_cur big = cur_live("18446744073709551615", 0, 0);
    struct gw_cur toolong = cur_live("000000000000000000000000000000001", 0, 0);
    struct gw_vop_decision d;

    (void)state;
    expect_answer(&in, &absent, "NOT_FOUND");
    expect_answer(&in, &tomb, "NOT_FOUND");
    in.delta = 5;
    d = expect_write(&in, &n100);
    assert_int_equal(d.value, GW_VOP_VALUE_NUMBER);
    assert_string_equal(d.num, "105");
    assert_int_equal(d.num_len, 3);
    assert_int_equal(d.new_len, 3);
    assert_int_equal(d.client_flags, 5);
    assert_int_equal(d.expiry, 66);
    /* a longer result grows the value */
    d = expect_write(&in, &n9);
    assert_string_equal(d.num, "14");
    assert_int_equal(d.new_len, 2);
    /* incr wraps at 64 bits, as memcached's does */
    in.delta = 1;
    d = expect_write(&in, &big);
    assert_string_equal(d.num, "0");
    assert_int_equal(d.new_len, 20);
    expect_answer(&in, &word, "CLIENT_ERROR cannot increment or decrement non-numeric value");
    expect_answer(&in, &empty, "CLIENT_ERROR cannot increment or decrement non-numeric value");
    expect_answer(&in, &toolong, "CLIENT_ERROR cannot increment or decrement non-numeric value");

    in.cmd = MC_CMD_DECR;
    in.delta = 100;
    /* a shorter result is padded with spaces to the old length: "100" - 100 is "0  " */
    d = expect_write(&in, &n100);
    assert_string_equal(d.num, "0");
    assert_int_equal(d.num_len, 1);
    assert_int_equal(d.new_len, 3);
    /* decr stops at 0 */
    in.delta = 1000;
    d = expect_write(&in, &n9);
    assert_string_equal(d.num, "0");
    expect_answer(&in, &absent, "NOT_FOUND");
    expect_answer(&in, &word, "CLIENT_ERROR cannot increment or decrement non-numeric value");
}

static void test_touch(void **state)
{
    struct gw_vop_input in = input(MC_CMD_TOUCH);
    struct gw_cur absent = cur_absent(), tomb = cur_tombstone(), live = cur_live("val", 4, 1);
    struct gw_vop_decision d;

    (void)state;
    expect_answer(&in, &absent, "NOT_FOUND");
    expect_answer(&in, &tomb, "NOT_FOUND");
    d = expect_write(&in, &live);
    assert_int_equal(d.value, GW_VOP_VALUE_CURRENT);
    assert_int_equal(d.new_len, 3);
    assert_int_equal(d.client_flags, 4);
    assert_int_equal(d.expiry, NOW_EXP); /* the new expiry */
}

static void test_unversioned_and_other(void **state)
{
    struct gw_vop_input in = input(MC_CMD_APPEND);
    struct gw_cur plain = cur_live("abc", 3, 0);
    struct gw_vop_decision d;

    (void)state;
    /* a plain memcached item is live: written over by cas, its raw flags kept */
    plain.versioned = false;
    plain.hdr.version.hlc = 0;
    d = expect_write(&in, &plain);
    assert_true(d.over);
    assert_int_equal(d.client_flags, 3);
    /* commands that never get here */
    in.cmd = MC_CMD_GET;
    expect_answer(&in, &plain, "SERVER_ERROR unexpected operation");
    in.cmd = MC_CMD_SET;
    expect_answer(&in, &plain, "SERVER_ERROR unexpected operation");
}

static void test_reply_kind(void **state)
{
    (void)state;
    assert_int_equal(gw_vop_reply_kind("STORED\r\n", 8), GW_VOP_REPLY_STORED);
    assert_int_equal(gw_vop_reply_kind("NOT_STORED\r\n", 12), GW_VOP_REPLY_NOT_STORED);
    assert_int_equal(gw_vop_reply_kind("EXISTS\r\n", 8), GW_VOP_REPLY_EXISTS);
    assert_int_equal(gw_vop_reply_kind("NOT_FOUND\r\n", 11), GW_VOP_REPLY_NOT_FOUND);
    assert_int_equal(gw_vop_reply_kind("STORED", 6), GW_VOP_REPLY_STORED);
    assert_int_equal(gw_vop_reply_kind("STOREDX\r\n", 9), GW_VOP_REPLY_OTHER);
    assert_int_equal(gw_vop_reply_kind("SERVER_ERROR out of memory\r\n", 28), GW_VOP_REPLY_OTHER);
    assert_int_equal(gw_vop_reply_kind("", 0), GW_VOP_REPLY_OTHER);
}

static void test_after_write(void **state)
{
    (void)state;
    /* blind set/add/cas */
    assert_int_equal(gw_vop_after_write(MC_CMD_SET, true, GW_VOP_REPLY_STORED), GW_VOP_NEXT_STORED);
    assert_int_equal(gw_vop_after_write(MC_CMD_SET, true, GW_VOP_REPLY_NOT_STORED),
                     GW_VOP_NEXT_RELAY);
    assert_int_equal(gw_vop_after_write(MC_CMD_ADD, true, GW_VOP_REPLY_NOT_STORED),
                     GW_VOP_NEXT_READ);
    assert_int_equal(gw_vop_after_write(MC_CMD_ADD, true, GW_VOP_REPLY_EXISTS), GW_VOP_NEXT_RELAY);
    assert_int_equal(gw_vop_after_write(MC_CMD_CAS, true, GW_VOP_REPLY_EXISTS), GW_VOP_NEXT_READ);
    assert_int_equal(gw_vop_after_write(MC_CMD_CAS, true, GW_VOP_REPLY_NOT_FOUND),
                     GW_VOP_NEXT_RELAY);
    assert_int_equal(gw_vop_after_write(MC_CMD_CAS, true, GW_VOP_REPLY_OTHER), GW_VOP_NEXT_RELAY);
    /* the write after a read: a lost race reads again */
    assert_int_equal(gw_vop_after_write(MC_CMD_APPEND, false, GW_VOP_REPLY_STORED),
                     GW_VOP_NEXT_STORED);
    assert_int_equal(gw_vop_after_write(MC_CMD_APPEND, false, GW_VOP_REPLY_EXISTS),
                     GW_VOP_NEXT_READ);
    assert_int_equal(gw_vop_after_write(MC_CMD_INCR, false, GW_VOP_REPLY_NOT_FOUND),
                     GW_VOP_NEXT_READ);
    assert_int_equal(gw_vop_after_write(MC_CMD_ADD, false, GW_VOP_REPLY_NOT_STORED),
                     GW_VOP_NEXT_READ);
    assert_int_equal(gw_vop_after_write(MC_CMD_TOUCH, false, GW_VOP_REPLY_OTHER),
                     GW_VOP_NEXT_RELAY);
}

static void test_names(void **state)
{
    (void)state;
    for (int i = 0; i < GW_VOP_VERDICT_MAX; i++) {
        assert_non_null(gw_vop_verdict_names[i]);
    }
    for (int i = 0; i < GW_VOP_VALUE_MAX; i++) {
        assert_non_null(gw_vop_value_names[i]);
    }
    for (int i = 0; i < GW_VOP_NEXT_MAX; i++) {
        assert_non_null(gw_vop_next_names[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add),
        cmocka_unit_test(test_cas),
        cmocka_unit_test(test_replace),
        cmocka_unit_test(test_append_prepend),
        cmocka_unit_test(test_incr_decr),
        cmocka_unit_test(test_touch),
        cmocka_unit_test(test_unversioned_and_other),
        cmocka_unit_test(test_reply_kind),
        cmocka_unit_test(test_after_write),
        cmocka_unit_test(test_names),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
