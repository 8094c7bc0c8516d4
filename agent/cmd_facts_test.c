/*
 * cmd_facts_test.c: unit tests of the facts command (cmd_facts.c): the values agree with
 * what this machine says through other calls, and the result frees cleanly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sys/utsname.h>

#include "testutil.h"

static void
cmd_facts_test_values(void **state)
{
	Stoke__Command cmd = STOKE__COMMAND__INIT;
	Stoke__FactsCommand fc = STOKE__FACTS_COMMAND__INIT;
	struct agent_config cfg;
	struct testutil_out out;
	struct cmd_result res;
	struct cmd_ctx ctx;
	struct utsname un;
	atomic_int cancel;
	char host[256], *os;
	Stoke__Facts *f;

	(void)state;
	assert_int_equal(testutil_cfg(&cfg, NULL), 0);
	cmd.kind_case = STOKE__COMMAND__KIND_FACTS;
	cmd.facts = &fc;
	atomic_init(&cancel, 0);
	testutil_out_init(&out);
	cmd_result_init(&res);
	testutil_ctx(&ctx, &cfg, &out, &cancel);
	cmd_lookup(STOKE__COMMAND__KIND_FACTS)->run(&ctx, &cmd, &res);
	assert_int_equal(res.exit_code, 0);
	assert_non_null(res.facts);
	f = res.facts;

	assert_int_equal(gethostname(host, sizeof(host)), 0);
	assert_string_equal(f->hostname, host);
	assert_int_equal(uname(&un), 0);
	assert_non_null(strstr(f->kernel, un.release));
	/* PRETTY_NAME without its quotes. */
	os = testutil_read("/etc/os-release");
	if (os != NULL && strstr(os, "PRETTY_NAME=") != NULL) {
		assert_true(strlen(f->os) > 0);
		assert_null(strchr(f->os, '"'));
		assert_non_null(strstr(os, f->os));
	}
	free(os);
	assert_int_equal(f->cpus, (uint32_t)sysconf(_SC_NPROCESSORS_ONLN));
	{
		uint64_t phys = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);

		assert_true(f->memory_bytes + 65536 >= phys && f->memory_bytes <= phys + 65536);
	}
	assert_true(f->disk_bytes > 0);
	assert_true(f->disk_free_bytes <= f->disk_bytes);
	assert_true(f->load1 >= 0.0);
	assert_true(f->uptime_s > 0);

	/* It packs: the channel sends it as it is. */
	assert_true(stoke__facts__get_packed_size(f) > 10);

	cmd_result_fini(&res);
	assert_null(res.facts);
	testutil_out_fini(&out);
	testutil_cfg_fini(&cfg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(cmd_facts_test_values),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
