/*
 * test_req — gateway/protocol/req.c: what a request's owner is told through its ops
 * (struct gw_req_ops) and when: a finished reply, a flush_all every node took (also
 * once its client is gone), a read whose node was lost (taken over by the owner or
 * answered with the error), and a reply that broke off after part of it streamed.
 * No sockets: the requests' replies stay in their own buffers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "gateway/protocol/req.h"
#include "gateway/types.h"

/* What the owner was told, in order. */
static char calls[256];
static bool retry_answer;
static char last_reply[128];

static void note(const char *what)
{
    strncat(calls, what, sizeof(calls) - strlen(calls) - 1);
}

static void fake_done(struct gw_req *r)
{
    size_t n = r->reply != NULL ? evbuffer_get_length(r->reply) : 0;

    note("done ");
    if (n >= sizeof(last_reply)) {
        n = sizeof(last_reply) - 1;
    }
    if (n > 0) {
        evbuffer_copyout(r->reply, last_reply, n);
    }
    last_reply[n] = '\0';
    gw_req_free(r);
}

static void fake_abort(struct gw_req *r)
{
    (void)r;
    note("abort ");
}

static bool fake_retry_read(struct gw_req *r)
{
    (void)r;
    note("retry ");
    return retry_answer;
}

static void fake_flushed(struct gw_req *r)
{
    note(r->client != NULL ? "flushed " : "flushed-orphan ");
}

static void fake_barrier(struct gw_client *c)
{
    (void)c;
    note("barrier ");
}

static const struct gw_req_ops fake_ops = {
    .done = fake_done,
    .abort = fake_abort,
    .retry_read = fake_retry_read,
    .flushed = fake_flushed,
    .barrier_hold = fake_barrier,
    .barrier_release = fake_barrier,
};

static struct gw_worker *worker;
static struct gw_client client; /* only its address: replies stay in the request */

static int setup(void **state)
{
    (void)state;
    worker = calloc(1, sizeof(*worker));
    calls[0] = '\0';
    last_reply[0] = '\0';
    retry_answer = false;
    return worker == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    gw_req_pool_release(worker);
    free(worker);
    return 0;
}

/* A frag's reply line, as backend.c hands it over. */
static void frag_line(struct gw_frag *frag, const char *line)
{
    struct evbuffer *in = evbuffer_new();
    size_t len = strlen(line);

    assert_non_null(in);
    evbuffer_add(in, line, len);
    evbuffer_add(in, "\r\n", 2);
    gw_req_frag_line(frag, in, line, len, len + 2);
    evbuffer_free(in);
}

static void test_new_keeps_ops(void **state)
{
    struct gw_req *r = gw_req_new(worker, &client, &fake_ops, MC_CMD_GET);

    (void)state;
    assert_non_null(r);
    assert_ptr_equal(r->ops, &fake_ops);
    assert_ptr_equal(r->client, &client);
    gw_req_free(r);
    /* reused from the worker's pool: the new owner's ops, not the old one's */
    r = gw_req_new(worker, NULL, &fake_ops, MC_CMD_SET);
    assert_non_null(r);
    assert_ptr_equal(r->ops, &fake_ops);
    assert_null(r->client);
    gw_req_free(r);
}

static void test_finish_tells_owner(void **state)
{
    struct gw_req *r = gw_req_new(worker, &client, &fake_ops, MC_CMD_NONE);

    (void)state;
    gw_req_finish_line(r, "VERSION 1.6.18");
    assert_string_equal(calls, "done ");
    assert_string_equal(last_reply, "VERSION 1.6.18\r\n");
}

static void test_orphan_is_freed_silently(void **state)
{
    struct gw_req *r = gw_req_new(worker, NULL, &fake_ops, MC_CMD_DELETE);

    (void)state;
    gw_req_finish_line(r, "DELETED");
    assert_string_equal(calls, "");
}

static struct gw_req *flush_req(struct gw_client *c, uint32_t nodes)
{
    struct gw_req *r = gw_req_new(worker, c, &fake_ops, MC_CMD_FLUSH_ALL);

    assert_non_null(r);
    r->frags = calloc(nodes, sizeof(*r->frags));
    assert_non_null(r->frags);
    r->nfrags = nodes;
    r->pending = nodes;
    for (uint32_t i = 0; i < nodes; i++) {
        r->frags[i].req = r;
    }
    return r;
}

static void test_flush_all_ok(void **state)
{
    struct gw_req *r = flush_req(&client, 2);

    (void)state;
    frag_line(&r->frags[0], "OK");
    assert_string_equal(calls, ""); /* one node still to answer */
    frag_line(&r->frags[1], "OK");
    assert_string_equal(calls, "flushed done ");
    assert_string_equal(last_reply, "OK\r\n");
}

static void test_flush_all_orphan_still_flushed(void **state)
{
    struct gw_req *r = flush_req(NULL, 1);

    (void)state;
    frag_line(&r->frags[0], "OK");
    assert_string_equal(calls, "flushed-orphan ");
}

static void test_flush_all_failed_not_flushed(void **state)
{
    struct gw_req *r = flush_req(&client, 2);

    (void)state;
    frag_line(&r->frags[0], "OK");
    frag_line(&r->frags[1], "SERVER_ERROR out of memory");
    assert_string_equal(calls, "done ");
    assert_string_equal(last_reply, "SERVER_ERROR out of memory\r\n");
}

static struct gw_req *get_req(void)
{
    struct gw_req *r = gw_req_new(worker, &client, &fake_ops, MC_CMD_GET);

    assert_non_null(r);
    r->nkeys = 1;
    r->pending = 1;
    return r;
}

static void test_lost_read_taken_over(void **state)
{
    struct gw_req *r = get_req();

    (void)state;
    retry_answer = true;
    gw_req_frag_lost(&r->frag, "SERVER_ERROR backend timeout");
    assert_string_equal(calls, "retry ");
    assert_int_equal(worker->stats.server_errors, 0);
    /* the owner answers it now (as remote.c would) */
    gw_req_clear_failure(r);
    gw_req_finish_line(r, "END");
    assert_string_equal(calls, "retry done ");
    assert_string_equal(last_reply, "END\r\n");
}

static void test_lost_read_not_taken(void **state)
{
    struct gw_req *r = get_req();

    (void)state;
    gw_req_frag_lost(&r->frag, "SERVER_ERROR backend timeout");
    assert_string_equal(calls, "retry done ");
    assert_string_equal(last_reply, "SERVER_ERROR backend timeout\r\n");
    assert_int_equal(worker->stats.server_errors, 1);
    assert_int_equal(worker->stats.get_errors, 1);
}

static void test_failed_read_no_retry(void **state)
{
    struct gw_req *r = get_req();

    (void)state;
    retry_answer = true;
    gw_req_frag_fail(&r->frag, "SERVER_ERROR node down"); /* not lost under it: no retry */
    assert_string_equal(calls, "done ");
    assert_string_equal(last_reply, "SERVER_ERROR node down\r\n");
}

static void test_streamed_failure_aborts(void **state)
{
    struct gw_req *r = get_req();

    (void)state;
    retry_answer = true;
    r->streamed = true; /* part of a value already went out */
    gw_req_frag_lost(&r->frag, "SERVER_ERROR backend timeout");
    assert_string_equal(calls, "abort done ");
    assert_string_equal(last_reply, ""); /* no error line inside a value */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_new_keeps_ops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_finish_tells_owner, setup, teardown),
        cmocka_unit_test_setup_teardown(test_orphan_is_freed_silently, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flush_all_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flush_all_orphan_still_flushed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flush_all_failed_not_flushed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_read_taken_over, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_read_not_taken, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_read_no_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streamed_failure_aborts, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
