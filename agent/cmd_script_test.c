/*
 * cmd_script_test.c: unit tests of the script command (cmd_script.c) with real bash: runs
 * as the user with the given variables from a private 0700 temp file owned by that user,
 * streams output, reports the exit code, removes the file, refuses root and bad names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <glob.h>

#include "testutil.h"

static int
cmd_script_test_run(const struct agent_config *cfg, const char *script, const char *user,
		    const char *const *env, struct testutil_out *out, struct cmd_result *res)
{
	Stoke__Command cmd = STOKE__COMMAND__INIT;
	Stoke__ScriptCommand sc = STOKE__SCRIPT_COMMAND__INIT;
	struct cmd_ctx ctx;
	atomic_int cancel;
	size_t ne = 0;

	while (env != NULL && env[ne] != NULL)
		ne++;
	sc.script = (char *)script;
	sc.user = (char *)user;
	sc.env = (char **)env;
	sc.n_env = ne;
	cmd.kind_case = STOKE__COMMAND__KIND_SCRIPT;
	cmd.script = &sc;
	atomic_init(&cancel, 0);
	testutil_out_init(out);
	cmd_result_init(res);
	testutil_ctx(&ctx, cfg, out, &cancel);
	cmd_lookup(STOKE__COMMAND__KIND_SCRIPT)->run(&ctx, &cmd, res);
	return res->exit_code;
}

/* How many script temp files exist now. */
static size_t
cmd_script_test_leftovers(void)
{
	glob_t g;
	size_t n;

	if (glob("/tmp/stoke-script-*", 0, NULL, &g) != 0)
		return 0;
	n = g.gl_pathc;
	globfree(&g);
	return n;
}

static void
cmd_script_test_runs_as_user(void **state)
{
	const char *script = "set -euo pipefail\n"
			     "echo \"uid=$(id -u) name=$(id -un)\"\n"
			     "echo \"file=$(stat -c '%a %U' \"$0\")\"\n"
			     "echo \"app=$APP_ENV quoted=$QUOTED\"\n"
			     "echo warn >&2\n"
			     "for i in 1 2 3; do echo line $i; done\n";
	const char *env[] = {"APP_ENV=production", "QUOTED=a 'b' \"c\" $(id)", NULL};
	struct passwd *pw = getpwnam(TESTUTIL_USER);
	struct testutil_out out;
	struct cmd_result res;
	char want[512];
	size_t before = cmd_script_test_leftovers();

	assert_non_null(pw);
	assert_int_equal(cmd_script_test_run(*state, script, TESTUTIL_USER, env, &out, &res), 0);
	snprintf(want, sizeof(want),
		 "uid=%ld name=" TESTUTIL_USER "\n"
		 "file=700 " TESTUTIL_USER "\n"
		 "app=production quoted=a 'b' \"c\" $(id)\n"
		 "line 1\nline 2\nline 3\n",
		 (long)pw->pw_uid);
	assert_string_equal(testutil_out_str(&out, CMD_STDOUT), want);
	assert_string_equal(testutil_out_str(&out, CMD_STDERR), "warn\n");
	assert_string_equal(res.error, "");
	/* The temp file is gone. */
	assert_int_equal(cmd_script_test_leftovers(), before);
	testutil_out_fini(&out);
	cmd_result_fini(&res);
}

static void
cmd_script_test_failure(void **state)
{
	struct testutil_out out;
	struct cmd_result res;

	assert_int_equal(
	    cmd_script_test_run(*state, "set -e\necho a\nfalse\necho b\n", "", NULL, &out, &res),
	    1);
	assert_string_equal(testutil_out_str(&out, CMD_STDOUT), "a\n");
	testutil_out_fini(&out);
	cmd_result_fini(&res);
}

static void
cmd_script_test_refused(void **state)
{
	const char *bad_env[] = {"GOOD=1", "BAD NAME=1", NULL};
	struct testutil_out out;
	struct cmd_result res;
	size_t before = cmd_script_test_leftovers();

	assert_int_equal(cmd_script_test_run(*state, "id -u\n", "root", NULL, &out, &res), -1);
	assert_non_null(strstr(res.error, "allow_root"));
	assert_string_equal(testutil_out_str(&out, CMD_STDOUT), "");
	testutil_out_fini(&out);
	cmd_result_fini(&res);

	assert_int_equal(cmd_script_test_run(*state, "id -u\n", "", bad_env, &out, &res), -1);
	assert_non_null(strstr(res.error, "environment"));
	assert_string_equal(testutil_out_str(&out, CMD_STDOUT), "");
	testutil_out_fini(&out);
	cmd_result_fini(&res);

	assert_int_equal(cmd_script_test_run(*state, "id -u\n", "x;rm", NULL, &out, &res), -1);
	assert_non_null(strstr(res.error, "user"));
	testutil_out_fini(&out);
	cmd_result_fini(&res);
	assert_int_equal(cmd_script_test_leftovers(), before);
}

static int
cmd_script_test_setup(void **state)
{
	struct agent_config *cfg = calloc(1, sizeof(*cfg));

	if (cfg == NULL || testutil_user() < 0 ||
	    testutil_cfg(cfg, "default_user", TESTUTIL_USER, "exec_timeout", "30s", NULL) != 0)
		return -1;
	*state = cfg;
	return 0;
}

static int
cmd_script_test_teardown(void **state)
{
	testutil_cfg_fini(*state);
	free(*state);
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(cmd_script_test_runs_as_user),
	    cmocka_unit_test(cmd_script_test_failure),
	    cmocka_unit_test(cmd_script_test_refused),
	};

	if (geteuid() != 0) {
		fprintf(stderr, "cmd_script_test: needs root (user switch); skipped\n");
		return 77;
	}
	return cmocka_run_group_tests(tests, cmd_script_test_setup, cmd_script_test_teardown);
}
