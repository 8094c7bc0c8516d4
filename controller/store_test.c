/*
 * store_test.c: the store against real SQLite files: migrations from empty and from
 * every earlier version (keeping data), WAL mode, bind specs, unique errors, refusing
 * a schema newer than the program, per-thread connections.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>

#include <cmocka.h>

#include "err.h"
#include "log.h"
#include "store.h"

static char st_dir[256];
static char st_path[300];

static int
st_setup(void **state)
{
	(void)state;
	snprintf(st_dir, sizeof(st_dir), "/tmp/stoke-store-test-XXXXXX");
	assert_non_null(mkdtemp(st_dir));
	snprintf(st_path, sizeof(st_path), "%s/stoke.db", st_dir);
	return 0;
}

static int
st_teardown(void **state)
{
	char cmd[400];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", st_dir);
	return system(cmd) == 0 ? 0 : -1;
}

static int64_t
st_tables(struct store *s)
{
	return store_int(s, -1, "SELECT count(*) FROM sqlite_master WHERE type='table'", "");
}

static void
test_migrate_from_empty(void **state)
{
	struct store *s;
	char err[256], *mode;

	(void)state;
	assert_int_equal(store_open(st_path, &s, err, sizeof(err)), 0);
	assert_int_equal(store_schema_version(s), 0);
	assert_int_equal(store_migrate(s, -1, err, sizeof(err)), 0);
	assert_int_equal(store_schema_version(s), store_latest_version());
	mode = store_text(s, "PRAGMA journal_mode", "");
	assert_string_equal(mode, "wal");
	free(mode);
	/* every table the design names */
	const char *want[] = {"servers",      "server_tags", "sites",	  "ssh_keys",
			      "server_keys",  "deployments", "batches",	  "commands",
			      "output_lines", "jobs",	     "job_steps", "job_data",
			      "events",	      "api_tokens",  "settings",  "webhook_receipts"};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		assert_int_equal(store_int(s, 0,
					   "SELECT count(*) FROM sqlite_master WHERE type='table'"
					   " AND name=?",
					   "s", want[i]),
				 1);
	/* running it again changes nothing */
	int64_t n = st_tables(s);
	assert_int_equal(store_migrate(s, -1, err, sizeof(err)), 0);
	assert_int_equal(st_tables(s), n);
	store_close(s);
}

static void
test_migrate_from_each_version(void **state)
{
	struct store *s;
	char err[256], *name;
	int v;

	(void)state;
	for (v = 1; v < store_latest_version(); v++) {
		unlink(st_path);
		assert_int_equal(store_open(st_path, &s, err, sizeof(err)), 0);
		assert_int_equal(store_migrate(s, v, err, sizeof(err)), 0);
		assert_int_equal(store_schema_version(s), v);
		/* data written at version v survives later migrations */
		assert_int_equal(store_exec(s,
					    "INSERT INTO servers (name, provider, created_at,"
					    " updated_at) VALUES ('web-1', 'custom', 1, 1)",
					    ""),
				 0);
		store_close(s);
		assert_int_equal(store_open(st_path, &s, err, sizeof(err)), 0);
		assert_int_equal(store_migrate(s, -1, err, sizeof(err)), 0);
		assert_int_equal(store_schema_version(s), store_latest_version());
		name = store_text(s, "SELECT name FROM servers WHERE id = 1", "");
		assert_string_equal(name, "web-1");
		free(name);
		store_close(s);
	}
}

static void
test_refuses_newer_schema(void **state)
{
	struct store *s;
	char err[256];

	(void)state;
	assert_int_equal(store_open(st_path, &s, err, sizeof(err)), 0);
	assert_int_equal(store_exec(s, "PRAGMA user_version = 999", ""), 0);
	assert_int_equal(store_migrate(s, -1, err, sizeof(err)), ERR_DB);
	assert_non_null(strstr(err, "newer"));
	assert_int_equal(store_migrate(s, 99, err, sizeof(err)), ERR_INVAL);
	store_close(s);
}

static void
test_binds_and_unique(void **state)
{
	struct store *s;
	struct store_stmt *st;
	char err[256];

	(void)state;
	assert_int_equal(store_open(st_path, &s, err, sizeof(err)), 0);
	assert_int_equal(store_migrate(s, -1, err, sizeof(err)), 0);
	assert_int_equal(store_exec(s,
				    "INSERT INTO settings (key, value, sealed, updated_at)"
				    " VALUES (?, ?, ?, ?)",
				    "ssdi", "k", NULL, 1, (int64_t)1 << 40),
			 0);
	st = store_query(s, "SELECT value, sealed, updated_at FROM settings WHERE key = ?", "s",
			 "k");
	assert_non_null(st);
	assert_int_equal(store_step(st), STORE_ROW);
	assert_true(store_col_is_null(st, 0));
	assert_int_equal(store_col_int(st, 1), 1);
	assert_int_equal(store_col_int(st, 2), (int64_t)1 << 40);
	assert_int_equal(store_step(st), STORE_DONE);
	store_finalize(st);
	assert_int_not_equal(store_exec(s,
					"INSERT INTO settings (key, value, updated_at)"
					" VALUES ('k', 'x', 1)",
					""),
			     0);
	assert_true(store_err_is_unique(s));
	/* a rolled-back transaction leaves nothing */
	assert_int_equal(store_begin(s), 0);
	store_exec(s, "INSERT INTO settings (key, updated_at) VALUES ('t', 1)", "");
	store_rollback(s);
	assert_int_equal(store_int(s, -1, "SELECT count(*) FROM settings WHERE key='t'", ""), 0);
	store_close(s);
}

static void *
st_thread(void *arg)
{
	struct store *s = store_thread();

	*(int64_t *)arg = s ? store_int(s, -1, "SELECT count(*) FROM settings", "") : -2;
	return s;
}

static void
test_thread_connections(void **state)
{
	pthread_t t;
	char err[256];
	int64_t n = -5;
	void *other;

	(void)state;
	assert_int_equal(store_global_init(st_path, err, sizeof(err)), 0);
	store_exec(store_thread(), "INSERT INTO settings (key, updated_at) VALUES ('a', 1)", "");
	assert_int_equal(pthread_create(&t, NULL, st_thread, &n), 0);
	pthread_join(t, &other);
	assert_int_equal(n, 1);
	assert_ptr_not_equal(other, store_thread());
	store_global_fini();
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_migrate_from_empty, st_setup, st_teardown),
	    cmocka_unit_test_setup_teardown(test_migrate_from_each_version, st_setup, st_teardown),
	    cmocka_unit_test_setup_teardown(test_refuses_newer_schema, st_setup, st_teardown),
	    cmocka_unit_test_setup_teardown(test_binds_and_unique, st_setup, st_teardown),
	    cmocka_unit_test_setup_teardown(test_thread_connections, st_setup, st_teardown),
	};

	log_init("store_test", LOG_LEVEL_WARN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
