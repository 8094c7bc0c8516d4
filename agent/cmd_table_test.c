/*
 * cmd_table_test.c: unit tests of cmd_table.c: every command kind maps to its handler,
 * noop and cancel to none; a result starts as "not run" and frees what handlers fill in;
 * a handler given another kind's message refuses it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

static void
cmd_table_test_lookup(void **state)
{
	static const struct {
		Stoke__Command__KindCase kind;
		const char *name;
		cmd_fn fn;
	} want[] = {
	    {STOKE__COMMAND__KIND_EXEC, "exec", cmd_exec},
	    {STOKE__COMMAND__KIND_WRITE_FILE, "write_file", cmd_write_file},
	    {STOKE__COMMAND__KIND_SCRIPT, "script", cmd_script},
	    {STOKE__COMMAND__KIND_NGINX_SITE, "nginx_site", cmd_nginx_site},
	    {STOKE__COMMAND__KIND_GIT_CHECKOUT, "git_checkout", cmd_git_checkout},
	    {STOKE__COMMAND__KIND_AUTHORIZED_KEYS, "authorized_keys", cmd_authorized_keys},
	    {STOKE__COMMAND__KIND_SERVICE, "service", cmd_service},
	    {STOKE__COMMAND__KIND_FACTS, "facts", cmd_facts},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		const struct cmd_kind *k = cmd_lookup(want[i].kind);

		assert_non_null(k);
		assert_string_equal(k->name, want[i].name);
		assert_ptr_equal(k->run, want[i].fn);
		assert_int_equal(k->kind, want[i].kind);
	}
	assert_null(cmd_lookup(STOKE__COMMAND__KIND_NOOP));
	assert_null(cmd_lookup(STOKE__COMMAND__KIND_CANCEL_ID));
	assert_null(cmd_lookup(STOKE__COMMAND__KIND__NOT_SET));
	assert_null(cmd_lookup((Stoke__Command__KindCase)999));
}

static void
cmd_table_test_result(void **state)
{
	struct cmd_result r;

	(void)state;
	cmd_result_init(&r);
	assert_int_equal(r.exit_code, 0);
	assert_int_equal(r.signal, 0);
	assert_string_equal(r.error, "");
	assert_null(r.result_json);
	assert_null(r.facts);
	r.result_json = strdup("{}");
	r.facts = malloc(sizeof(*r.facts));
	stoke__facts__init(r.facts);
	r.facts->hostname = strdup("h");
	cmd_result_fini(&r); /* ASan: nothing leaks */
	assert_null(r.result_json);
	assert_null(r.facts);
	cmd_result_fini(&r);
	cmd_result_fini(NULL);
}

static void
cmd_table_test_wrong_kind(void **state)
{
	Stoke__Command cmd = STOKE__COMMAND__INIT;
	struct agent_config cfg;
	struct testutil_out out;
	struct cmd_result res;
	struct cmd_ctx ctx;
	atomic_int cancel;

	(void)state;
	assert_int_equal(testutil_cfg(&cfg, NULL), 0);
	cmd.kind_case = STOKE__COMMAND__KIND_NOOP;
	cmd.noop = 1;
	atomic_init(&cancel, 0);
	testutil_out_init(&out);
	testutil_ctx(&ctx, &cfg, &out, &cancel);
	/* Each handler refuses a message that is not its own (no NULL dereference). */
	for (int k = STOKE__COMMAND__KIND_EXEC; k <= STOKE__COMMAND__KIND_FACTS; k++) {
		const struct cmd_kind *kind = cmd_lookup((Stoke__Command__KindCase)k);

		if (kind == NULL || k == STOKE__COMMAND__KIND_FACTS)
			continue;
		cmd_result_init(&res);
		kind->run(&ctx, &cmd, &res);
		assert_int_equal(res.exit_code, -1);
		assert_non_null(strstr(res.error, "not a"));
		cmd_result_fini(&res);
	}
	testutil_out_fini(&out);
	testutil_cfg_fini(&cfg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(cmd_table_test_lookup),
	    cmocka_unit_test(cmd_table_test_result),
	    cmocka_unit_test(cmd_table_test_wrong_kind),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
