/*
 * cmd_service_test.c: unit tests of the service command (cmd_service.c) with a stand-in
 * systemctl (a script that prints its arguments): only allow-listed services and the five
 * actions run, with exactly the argv expected; status answers instead of failing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

struct cmd_service_test {
	char dir[256];
	char marker[300];
	struct agent_config cfg;
};

static int
cmd_service_test_run(struct cmd_service_test *t, const char *name, const char *action,
		     struct testutil_out *out, struct cmd_result *res)
{
	Stoke__Command cmd = STOKE__COMMAND__INIT;
	Stoke__ServiceCommand sv = STOKE__SERVICE_COMMAND__INIT;
	struct cmd_ctx ctx;
	atomic_int cancel;

	sv.name = (char *)name;
	sv.action = (char *)action;
	cmd.kind_case = STOKE__COMMAND__KIND_SERVICE;
	cmd.service = &sv;
	atomic_init(&cancel, 0);
	testutil_out_init(out);
	cmd_result_init(res);
	testutil_ctx(&ctx, &t->cfg, out, &cancel);
	unlink(t->marker);
	cmd_lookup(STOKE__COMMAND__KIND_SERVICE)->run(&ctx, &cmd, res);
	return res->exit_code;
}

static int
cmd_service_test_setup(void **state)
{
	struct cmd_service_test *t = calloc(1, sizeof(*t));
	char p[PATH_MAX], script[1024], bin[300];

	if (t == NULL || testutil_tmpdir(p, "svc") != 0 || strlen(p) >= sizeof(t->dir))
		return -1;
	memcpy(t->dir, p, strlen(p) + 1);
	snprintf(t->marker, sizeof(t->marker), "%s/ran", t->dir);
	snprintf(bin, sizeof(bin), "%s/systemctl", t->dir);
	/* Prints its argv one per line, leaves a marker that it ran. */
	snprintf(script, sizeof(script),
		 "#!/bin/sh\n"
		 "touch %s\n"
		 "for a in \"$@\"; do echo \"[$a]\"; done\n"
		 "[ \"$1\" = status ] && [ \"$2\" = php8.2-fpm ] && exit 3\n"
		 "[ \"$2\" = broken.service ] && { echo failed >&2; exit 1; }\n"
		 "exit 0\n",
		 t->marker);
	if (testutil_write(bin, script, 0755) != 0)
		return -1;
	if (testutil_cfg(&t->cfg, "systemctl_bin", bin, "services",
			 "nginx:php8.2-fpm:broken.service", NULL) != 0)
		return -1;
	*state = t;
	return 0;
}

static int
cmd_service_test_teardown(void **state)
{
	struct cmd_service_test *t = *state;

	testutil_rm_rf(t->dir);
	testutil_cfg_fini(&t->cfg);
	free(t);
	return 0;
}

static void
cmd_service_test_allowed(void **state)
{
	struct cmd_service_test *t = *state;
	static const char *const actions[] = {"start", "stop", "restart", "reload"};
	struct testutil_out out;
	struct cmd_result res;
	char want[64];

	for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++) {
		assert_int_equal(cmd_service_test_run(t, "nginx", actions[i], &out, &res), 0);
		snprintf(want, sizeof(want), "[%s]\n[nginx]\n", actions[i]);
		assert_string_equal(testutil_out_str(&out, CMD_STDOUT), want);
		assert_string_equal(res.error, "");
		testutil_out_fini(&out);
		cmd_result_fini(&res);
	}
	/* status of a stopped service: an answer, not a failure. */
	assert_int_equal(cmd_service_test_run(t, "php8.2-fpm", "status", &out, &res), 0);
	assert_string_equal(res.result_json, "{\"service\":\"php8.2-fpm\",\"active\":false,"
					     "\"status\":3}");
	testutil_out_fini(&out);
	cmd_result_fini(&res);
	assert_int_equal(cmd_service_test_run(t, "nginx", "status", &out, &res), 0);
	assert_non_null(strstr(res.result_json, "\"active\":true"));
	testutil_out_fini(&out);
	cmd_result_fini(&res);
	/* A failing action keeps systemctl's code and says so. */
	assert_int_equal(cmd_service_test_run(t, "broken.service", "restart", &out, &res), 1);
	assert_non_null(strstr(res.error, "systemctl restart broken.service: exited with code 1"));
	assert_string_equal(testutil_out_str(&out, CMD_STDERR), "failed\n");
	testutil_out_fini(&out);
	cmd_result_fini(&res);
}

static void
cmd_service_test_refused(void **state)
{
	struct cmd_service_test *t = *state;
	static const char *const names[] = {"sshd", "ngin",	"nginx;reboot", "nginx:php8.2-fpm",
					    "",	    "../nginx", "nginx ",	"-nginx"};
	static const char *const actions[] = {"enable", "mask", "", "restart;", "RESTART", "--now"};
	struct testutil_out out;
	struct cmd_result res;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		assert_int_equal(cmd_service_test_run(t, names[i], "restart", &out, &res), -1);
		assert_non_null(strstr(res.error, "services list"));
		assert_int_equal(access(t->marker, F_OK), -1);
		testutil_out_fini(&out);
		cmd_result_fini(&res);
	}
	for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++) {
		assert_int_equal(cmd_service_test_run(t, "nginx", actions[i], &out, &res), -1);
		assert_non_null(strstr(res.error, "action"));
		assert_int_equal(access(t->marker, F_OK), -1);
		testutil_out_fini(&out);
		cmd_result_fini(&res);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(cmd_service_test_allowed),
	    cmocka_unit_test(cmd_service_test_refused),
	};

	return cmocka_run_group_tests(tests, cmd_service_test_setup, cmd_service_test_teardown);
}
