/*
 * test_catchup — the catch-up state file (gateway/replication/catchup.c): what survives a restart (the
 * cursor, the items so far, one more restart), a new loss starting over, progress of an
 * older walk ignored, peers no longer configured forgotten, a damaged file ignored.  The
 * restarts themselves are in tests/integration/test_backfill.py (CatchUpRestart).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "gateway/replication/catchup.h"

static const char *const peers[] = {"us-east", "ap-south"};

static int dir_setup(void **state)
{
    char *dir = strdup("/tmp/test_catchup.XXXXXX");

    if (dir == NULL || mkdtemp(dir) == NULL) {
        free(dir);
        return -1;
    }
    *state = dir;
    return 0;
}

static int dir_teardown(void **state)
{
    char path[256];
    char *dir = *state;

    snprintf(path, sizeof(path), "%s/catchup", dir);
    unlink(path);
    rmdir(dir);
    free(dir);
    return 0;
}

static struct gw_catchup *open_dir(const char *dir, size_t npeers)
{
    struct gw_catchup *c = NULL;

    assert_int_equal(gw_catchup_open(dir, peers, npeers, &c), 0);
    assert_non_null(c);
    return c;
}

static void test_nothing_owed_without_a_file(void **state)
{
    struct gw_catchup *c = open_dir(*state, 2);

    assert_false(gw_catchup_pending(c, "us-east", NULL));
    assert_false(gw_catchup_pending(c, "mars", NULL));
    assert_int_equal(gw_catchup_owe(c, "mars", NULL), -EINVAL);
    gw_catchup_close(c);
}

static void test_progress_survives_a_restart(void **state)
{
    struct gw_catchup *c = open_dir(*state, 2);
    struct gw_catchup_entry e, again;
    const uint8_t cursor[] = {0, 0, 0, 1, 3, 'a', 'b', 'c', 2, 'k', 0xff};

    assert_int_equal(gw_catchup_owe(c, "us-east", &e), 0);
    assert_int_equal(e.cursor_len, 0);
    assert_int_equal(e.items, 0);
    assert_int_equal(gw_catchup_progress(c, "us-east", e.gen, cursor, sizeof(cursor), 4200), 0);
    gw_catchup_close(c);

    c = open_dir(*state, 2);
    assert_true(gw_catchup_pending(c, "us-east", &again));
    assert_false(gw_catchup_pending(c, "ap-south", NULL));
    assert_int_equal(again.gen, e.gen);
    assert_int_equal(again.items, 4200);
    assert_int_equal(again.restarts, 1);
    assert_int_equal(again.cursor_len, sizeof(cursor));
    assert_memory_equal(again.cursor, cursor, sizeof(cursor));
    gw_catchup_close(c);

    c = open_dir(*state, 2); /* a second restart counts too */
    assert_true(gw_catchup_pending(c, "us-east", &again));
    assert_int_equal(again.restarts, 2);
    assert_int_equal(gw_catchup_done(c, "us-east", again.gen), 0);
    assert_false(gw_catchup_pending(c, "us-east", NULL));
    gw_catchup_close(c);

    c = open_dir(*state, 2);
    assert_false(gw_catchup_pending(c, "us-east", NULL));
    gw_catchup_close(c);
}

static void test_new_loss_starts_over(void **state)
{
    struct gw_catchup *c = open_dir(*state, 2);
    struct gw_catchup_entry first, second, now;
    const uint8_t cursor[] = {0, 0, 0, 0, 1, 'n', 1, 'k'};

    assert_int_equal(gw_catchup_owe(c, "ap-south", &first), 0);
    assert_int_equal(gw_catchup_progress(c, "ap-south", first.gen, cursor, sizeof(cursor), 10), 0);
    assert_int_equal(gw_catchup_owe(c, "ap-south", &second), 0);
    assert_true(second.gen > first.gen);
    /* the older walk goes on for a while: neither its progress nor its end counts */
    assert_int_equal(gw_catchup_progress(c, "ap-south", first.gen, cursor, sizeof(cursor), 99), 0);
    assert_int_equal(gw_catchup_done(c, "ap-south", first.gen), 0);
    assert_true(gw_catchup_pending(c, "ap-south", &now));
    assert_int_equal(now.gen, second.gen);
    assert_int_equal(now.items, 0);
    assert_int_equal(now.cursor_len, 0);
    gw_catchup_close(c);
    /* generations keep growing across restarts */
    c = open_dir(*state, 2);
    assert_int_equal(gw_catchup_owe(c, "us-east", &now), 0);
    assert_true(now.gen > second.gen);
    gw_catchup_close(c);
}

static void test_unconfigured_peer_forgotten(void **state)
{
    struct gw_catchup *c = open_dir(*state, 2);

    assert_int_equal(gw_catchup_owe(c, "ap-south", NULL), 0);
    assert_int_equal(gw_catchup_owe(c, "us-east", NULL), 0);
    gw_catchup_close(c);
    c = open_dir(*state, 1); /* ap-south is gone from the config */
    assert_true(gw_catchup_pending(c, "us-east", NULL));
    assert_false(gw_catchup_pending(c, "ap-south", NULL));
    gw_catchup_close(c);
    c = open_dir(*state, 2);
    assert_false(gw_catchup_pending(c, "ap-south", NULL));
    gw_catchup_close(c);
}

static void test_damaged_file_ignored(void **state)
{
    struct gw_catchup *c = open_dir(*state, 2);
    char path[256], buf[512];
    FILE *f;
    size_t n;

    assert_int_equal(gw_catchup_owe(c, "us-east", NULL), 0);
    gw_catchup_close(c);
    snprintf(path, sizeof(path), "%s/catchup", (char *)*state);
    f = fopen(path, "r+");
    assert_non_null(f);
    n = fread(buf, 1, sizeof(buf), f);
    assert_true(n > 30);
    buf[20] ^= 1; /* one bit in the "peer" line */
    rewind(f);
    assert_int_equal(fwrite(buf, 1, n, f), n);
    fclose(f);
    c = open_dir(*state, 2);
    assert_false(gw_catchup_pending(c, "us-east", NULL));
    gw_catchup_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_nothing_owed_without_a_file, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_progress_survives_a_restart, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_new_loss_starts_over, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_unconfigured_peer_forgotten, dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_damaged_file_ignored, dir_setup, dir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
