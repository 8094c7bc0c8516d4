/*
 * sm_test.c: resource state machines against a real store: allowed and refused
 * transitions, guards naming what is missing, failed keeps step and error, retry
 * clears them, every change becomes an event.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "err.h"
#include "log.h"
#include "sm.h"
#include "store.h"

static char sm_dir[256];

static int
smt_setup(void **state)
{
	char path[300], err[256];

	(void)state;
	snprintf(sm_dir, sizeof(sm_dir), "/tmp/stoke-sm-test-XXXXXX");
	assert_non_null(mkdtemp(sm_dir));
	snprintf(path, sizeof(path), "%s/stoke.db", sm_dir);
	assert_int_equal(store_global_init(path, err, sizeof(err)), 0);
	assert_int_equal(
	    store_exec(store_thread(),
		       "INSERT INTO servers (id, name, provider, created_at, updated_at)"
		       " VALUES (1, 'web-1', 'custom', 1, 1)",
		       ""),
	    0);
	return 0;
}

static int
smt_teardown(void **state)
{
	char cmd[400];

	(void)state;
	store_global_fini();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", sm_dir);
	return system(cmd) == 0 ? 0 : -1;
}

static char *
smt_col(const char *col)
{
	char sql[100];

	snprintf(sql, sizeof(sql), "SELECT %s FROM servers WHERE id = 1", col);
	return store_text(store_thread(), sql, "");
}

static void
test_server_path(void **state)
{
	struct store *s = store_thread();
	const char *path[] = {"creating", "booting", "bootstrapping", "installing_agent"};
	char err[512], *v;
	size_t i;

	(void)state;
	for (i = 0; i < 4; i++)
		assert_int_equal(sm_transition(s, &sm_server, 1, path[i], "test", err, sizeof(err)),
				 0);
	/* the guard: required checklist items not done */
	sm_check(s, &sm_server, 1, "agent hello", 0, 1, NULL);
	sm_check(s, &sm_server, 1, "links", 0, 1, "have 2, need 3");
	sm_check(s, &sm_server, 1, "motd", 0, 0, NULL);
	assert_int_equal(sm_transition(s, &sm_server, 1, "active", "test", err, sizeof(err)),
			 ERR_CONFLICT);
	assert_non_null(strstr(err, "missing: agent hello, links (have 2, need 3)"));
	assert_null(strstr(err, "motd"));
	sm_check(s, &sm_server, 1, "agent hello", 1, 1, NULL);
	sm_check(s, &sm_server, 1, "links", 1, 1, "have 3, need 3");
	assert_int_equal(sm_transition(s, &sm_server, 1, "active", "test", err, sizeof(err)), 0);
	v = smt_col("state");
	assert_string_equal(v, "active");
	free(v);
	/* 1 event per transition */
	assert_int_equal(store_int(s, -1,
				   "SELECT count(*) FROM events WHERE kind='server.state' AND"
				   " resource_id=1",
				   ""),
			 5);
}

static void
test_refused_moves(void **state)
{
	struct store *s = store_thread();
	char err[512];

	(void)state;
	assert_int_equal(sm_transition(s, &sm_server, 1, "active", "t", err, sizeof(err)),
			 ERR_CONFLICT);
	assert_non_null(strstr(err, "cannot go from pending to active"));
	assert_int_equal(sm_transition(s, &sm_server, 1, "nonsense", "t", err, sizeof(err)),
			 ERR_INTERNAL);
	assert_int_equal(sm_transition(s, &sm_server, 42, "creating", "t", err, sizeof(err)),
			 ERR_NOTFOUND);
	/* deleted is final, even for "*" transitions */
	assert_int_equal(sm_transition(s, &sm_server, 1, "deleting", "t", err, sizeof(err)), 0);
	assert_int_equal(sm_transition(s, &sm_server, 1, "deleted", "t", err, sizeof(err)), 0);
	assert_int_equal(sm_transition(s, &sm_server, 1, "deleting", "t", err, sizeof(err)),
			 ERR_CONFLICT);
}

static void
test_fail_and_retry(void **state)
{
	struct store *s = store_thread();
	char err[512], *v;

	(void)state;
	assert_int_equal(sm_transition(s, &sm_server, 1, "creating", "t", err, sizeof(err)), 0);
	assert_int_equal(sm_fail(s, &sm_server, 1, "create_vm", "provider said no", "t"), 0);
	v = smt_col("state");
	assert_string_equal(v, "failed");
	free(v);
	v = smt_col("failed_step");
	assert_string_equal(v, "create_vm");
	free(v);
	v = smt_col("error");
	assert_string_equal(v, "provider said no");
	free(v);
	assert_int_not_equal(store_int(s, 0, "SELECT failed_at FROM servers WHERE id=1", ""), 0);
	assert_int_equal(sm_transition(s, &sm_server, 1, "creating", "t", err, sizeof(err)), 0);
	v = smt_col("error");
	assert_null(v);
	assert_int_equal(sm_progress(s, &sm_server, 1, 140, "too much"), 0);
	assert_int_equal(store_int(s, -1, "SELECT progress FROM servers WHERE id=1", ""), 100);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_server_path, smt_setup, smt_teardown),
	    cmocka_unit_test_setup_teardown(test_refused_moves, smt_setup, smt_teardown),
	    cmocka_unit_test_setup_teardown(test_fail_and_retry, smt_setup, smt_teardown),
	};

	log_init("sm_test", LOG_LEVEL_WARN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
