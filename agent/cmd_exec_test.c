/*
 * cmd_exec_test.c: tests of exec (cmd_exec.c over cmd_proc.c) with real processes: streaming,
 * stderr apart, exit codes, signals, the user switch, root refused, time limit and cancel
 * killing the whole process group, 100,000 lines, environment checks, max_output.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>

#include "cmd_proc.h"
#include "testutil.h"

struct cmd_exec_test_run {
	const struct agent_config *cfg;
	const char *const *argv;
	const char *user;
	const char *cwd;
	const char *const *env;
	unsigned timeout_s;
	struct testutil_out out;
	struct cmd_result res;
	atomic_int cancel;
	int64_t ms;
};

static void
cmd_exec_test_start(struct cmd_exec_test_run *r, const struct agent_config *cfg,
		    const char *const *argv, const char *user)
{
	memset(r, 0, sizeof(*r));
	r->cfg = cfg;
	r->argv = argv;
	r->user = user;
	testutil_out_init(&r->out);
	cmd_result_init(&r->res);
	atomic_init(&r->cancel, 0);
}

static void
cmd_exec_test_go(struct cmd_exec_test_run *r)
{
	Stoke__Command cmd = STOKE__COMMAND__INIT;
	Stoke__ExecCommand ex = STOKE__EXEC_COMMAND__INIT;
	struct cmd_ctx ctx;
	size_t n = 0, ne = 0;
	int64_t t0;

	while (r->argv[n] != NULL)
		n++;
	while (r->env != NULL && r->env[ne] != NULL)
		ne++;
	ex.argv = (char **)r->argv;
	ex.n_argv = n;
	ex.user = (char *)(r->user != NULL ? r->user : "");
	ex.cwd = (char *)(r->cwd != NULL ? r->cwd : "");
	ex.env = (char **)r->env;
	ex.n_env = ne;
	ex.timeout_s = r->timeout_s;
	cmd.id = 7;
	cmd.kind_case = STOKE__COMMAND__KIND_EXEC;
	cmd.exec = &ex;
	testutil_ctx(&ctx, r->cfg, &r->out, &r->cancel);
	t0 = time_mono_ms();
	cmd_lookup(STOKE__COMMAND__KIND_EXEC)->run(&ctx, &cmd, &r->res);
	r->ms = time_mono_ms() - t0;
}

static void *
cmd_exec_test_thread(void *arg)
{
	cmd_exec_test_go(arg);
	return NULL;
}

static void
cmd_exec_test_done(struct cmd_exec_test_run *r)
{
	testutil_out_fini(&r->out);
	cmd_result_fini(&r->res);
}

/* 1 when a live (not zombie) process is in process group pgid. Read independently of
 * cmd_proc.c's own check. */
static int
cmd_exec_test_group_alive(long pgid)
{
	struct dirent *de;
	DIR *d = opendir("/proc");
	int alive = 0;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		char path[300], *text, *p, state;
		long pg;

		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
		if ((text = testutil_read(path)) == NULL)
			continue;
		p = strrchr(text, ')');
		if (p != NULL && sscanf(p + 1, " %c %*d %ld", &state, &pg) == 2 && pg == pgid &&
		    state != 'Z')
			alive = 1;
		free(text);
	}
	closedir(d);
	return alive;
}

static int
cmd_exec_test_setup(void **state)
{
	struct agent_config *cfg = calloc(1, sizeof(*cfg));

	if (cfg == NULL || testutil_user() < 0 ||
	    testutil_cfg(cfg, "default_user", TESTUTIL_USER, "exec_timeout", "30s", NULL) != 0)
		return -1;
	*state = cfg;
	return 0;
}

static int
cmd_exec_test_teardown(void **state)
{
	testutil_cfg_fini(*state);
	free(*state);
	return 0;
}

static void
cmd_exec_test_streams(void **state)
{
	const char *argv[] = {"/bin/sh", "-c",
			      "echo one; echo err1 >&2; echo two; printf 'no newline'; exit 3",
			      NULL};
	struct cmd_exec_test_run r;

	cmd_exec_test_start(&r, *state, argv, NULL);
	cmd_exec_test_go(&r);
	assert_string_equal(testutil_out_str(&r.out, CMD_STDOUT), "one\ntwo\nno newline");
	assert_string_equal(testutil_out_str(&r.out, CMD_STDERR), "err1\n");
	assert_int_equal(r.res.exit_code, 3);
	assert_int_equal(r.res.signal, 0);
	assert_string_equal(r.res.error, "");
	assert_non_null(strstr(testutil_out_str(&r.out, CMD_SYSTEM), "exited with code 3"));
	cmd_exec_test_done(&r);
}

static void
cmd_exec_test_signal(void **state)
{
	const char *argv[] = {"/bin/sh", "-c", "echo before; kill -SEGV $$", NULL};
	struct cmd_exec_test_run r;

	cmd_exec_test_start(&r, *state, argv, NULL);
	cmd_exec_test_go(&r);
	assert_string_equal(testutil_out_str(&r.out, CMD_STDOUT), "before\n");
	assert_int_equal(r.res.exit_code, -1);
	assert_int_equal(r.res.signal, SIGSEGV);
	assert_non_null(strstr(r.res.error, "signal 11"));
	cmd_exec_test_done(&r);
}

static void
cmd_exec_test_as_user(void **state)
{
	const char *argv[] = {"/bin/sh", "-c", "id -u; id -g; id -G; pwd", NULL};
	struct passwd *pw = getpwnam(TESTUTIL_USER);
	struct cmd_exec_test_run r;
	char want[256];

	assert_non_null(pw);
	snprintf(want, sizeof(want), "%ld\n%ld\n%ld\n/\n", (long)pw->pw_uid, (long)pw->pw_gid,
		 (long)pw->pw_gid);
	/* Named explicitly, and through default_user. */
	cmd_exec_test_start(&r, *state, argv, TESTUTIL_USER);
	cmd_exec_test_go(&r);
	assert_int_equal(r.res.exit_code, 0);
	/* Supplementary groups are the user's own (root's group 0 is gone). */
	assert_string_equal(testutil_out_str(&r.out, CMD_STDOUT), want);
	cmd_exec_test_done(&r);
	cmd_exec_test_start(&r, *state, argv, "");
	cmd_exec_test_go(&r);
	assert_string_equal(testutil_out_str(&r.out, CMD_STDOUT), want);
	cmd_exec_test_done(&r);
}

static void
cmd_exec_test_root(void **state)
{
	const char *argv[] = {"/usr/bin/id", "-u", NULL};
	struct agent_config cfg;
	struct cmd_exec_test_run r;

	assert_int_equal(testutil_cfg(&cfg, NULL), 0);
	cmd_exec_test_start(&r, &cfg, argv, "root");
	cmd_exec_test_go(&r);
	assert_int_equal(r.res.exit_code, -1);
	assert_non_null(strstr(r.res.error, "allow_root"));
	assert_string_equal(testutil_out_str(&r.out, CMD_STDOUT), "");
	cmd_exec_test_done(&r);
	testutil_cfg_fini(&cfg);

	assert_int_equal(testutil_cfg(&cfg, "allow_root", "yes", NULL), 0);
	cmd_exec_test_start(&r, &cfg, argv, "root");
	cmd_exec_test_go(&r);
	assert_int_equal(r.res.exit_code, 0);
	assert_string_equal(testutil_out_str(&r.out, CMD_STDOUT), "0\n");
	cmd_exec_test_done(&r);
	testutil_cfg_fini(&cfg);

	/* Unknown and malformed users. */
	cmd_exec_test_start(&r, *state, argv, "no-such-user-here");
	cmd_exec_test_go(&r);
	assert_non_null(strstr(r.res.error, "does not exist"));
	cmd_exec_test_done(&r);
	cmd_exec_test_start(&r, *state, argv, "Bad;User");
	cmd_exec_test_go(&r);
	assert_int_equal(r.res.exit_code, -1);
	assert_non_null(strstr(r.res.error, "user"));
	cmd_exec_test_done(&r);
}

static void
cmd_exec_test_env(void **state)
{
	const char *argv[] = {"/usr/bin/env", NULL};
	const char *env[] = {"FOO=bar baz", "PATH=/bin:/usr/bin", "_X1=", NULL};
	static const char *const bad[] = {"1BAD=x", "BAD-NAME=x", "NOEQUALS",
					  "=x",	    "A B=c",	  "X\n=y"};
	struct cmd_exec_test_run r;
	const char *o;

	setenv("STOKE_AGENT_SECRET_TEST", "leak", 1);
	cmd_exec_test_start(&r, *state, argv, NULL);
	r.env = env;
	cmd_exec_test_go(&r);
	o = testutil_out_str(&r.out, CMD_STDOUT);
	assert_int_equal(r.res.exit_code, 0);
	assert_non_null(strstr(o, "FOO=bar baz\n"));
	assert_non_null(strstr(o, "_X1=\n"));
	assert_non_null(strstr(o, "PATH=/bin:/usr/bin\n"));
	assert_null(strstr(o, "PATH=/usr/local/sbin"));
	assert_non_null(strstr(o, "USER=" TESTUTIL_USER "\n"));
	assert_non_null(strstr(o, "LOGNAME=" TESTUTIL_USER "\n"));
	assert_non_null(strstr(o, "LANG=C.UTF-8\n"));
	assert_non_null(strstr(o, "HOME="));
	/* Nothing of the agent's own environment. */
	assert_null(strstr(o, "STOKE_AGENT_SECRET_TEST"));
	cmd_exec_test_done(&r);
	unsetenv("STOKE_AGENT_SECRET_TEST");

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *e[] = {"OK=1", bad[i], NULL};

		cmd_exec_test_start(&r, *state, argv, NULL);
		r.env = e;
		cmd_exec_test_go(&r);
		assert_int_equal(r.res.exit_code, -1);
		assert_non_null(strstr(r.res.error, "environment"));
		assert_string_equal(testutil_out_str(&r.out, CMD_STDOUT), "");
		cmd_exec_test_done(&r);
	}
}

static void
cmd_exec_test_cwd_and_missing(void **state)
{
	const char *pwd[] = {"pwd", NULL};
	const char *missing[] = {"no-such-program-stoke", NULL};
	const char *empty[] = {"", NULL};
	struct cmd_exec_test_run r;

	cmd_exec_test_start(&r, *state, pwd, NULL);
	r.cwd = "/tmp";
	cmd_exec_test_go(&r);
	assert_string_equal(testutil_out_str(&r.out, CMD_STDOUT), "/tmp\n");
	cmd_exec_test_done(&r);

	cmd_exec_test_start(&r, *state, pwd, NULL);
	r.cwd = "/no/such/folder";
	cmd_exec_test_go(&r);
	assert_int_equal(r.res.exit_code, -1);
	assert_non_null(strstr(r.res.error, "chdir /no/such/folder"));
	cmd_exec_test_done(&r);

	cmd_exec_test_start(&r, *state, pwd, NULL);
	r.cwd = "relative";
	cmd_exec_test_go(&r);
	assert_int_equal(r.res.exit_code, -1);
	assert_non_null(strstr(r.res.error, "absolute"));
	cmd_exec_test_done(&r);

	cmd_exec_test_start(&r, *state, missing, NULL);
	cmd_exec_test_go(&r);
	assert_int_equal(r.res.exit_code, -1);
	assert_non_null(strstr(r.res.error, "No such file"));
	cmd_exec_test_done(&r);

	cmd_exec_test_start(&r, *state, empty, NULL);
	cmd_exec_test_go(&r);
	assert_int_equal(r.res.exit_code, -1);
	assert_non_null(strstr(r.res.error, "argv"));
	cmd_exec_test_done(&r);
}

/* The first line of stdout as a number (the shell's $$: the process group). */
static long
cmd_exec_test_first_number(struct cmd_exec_test_run *r, long ms)
{
	int64_t end = time_mono_ms() + ms;

	while (time_mono_ms() < end) {
		long v = 0;

		pthread_mutex_lock(&r->out.lock);
		if (r->out.s[CMD_STDOUT].data != NULL &&
		    strchr(r->out.s[CMD_STDOUT].data, '\n') != NULL)
			v = atol(r->out.s[CMD_STDOUT].data);
		pthread_mutex_unlock(&r->out.lock);
		if (v > 0)
			return v;
		poll(NULL, 0, 10);
	}
	return -1;
}

static void
cmd_exec_test_timeout(void **state)
{
	const char *argv[] = {"/bin/sh", "-c", "echo $$; sleep 100 & sleep 100", NULL};
	/* Ignores SIGTERM (and so do the sleeps it starts): needs the SIGKILL. */
	const char *stubborn[] = {"/bin/sh", "-c", "trap '' TERM; echo $$; sleep 100 & sleep 100",
				  NULL};
	struct cmd_exec_test_run r;
	long pgid;

	cmd_exec_test_start(&r, *state, argv, NULL);
	r.timeout_s = 1;
	cmd_exec_test_go(&r);
	pgid = atol(testutil_out_str(&r.out, CMD_STDOUT));
	assert_true(pgid > 1);
	assert_non_null(strstr(r.res.error, "timed out after 1.00s"));
	assert_non_null(strstr(testutil_out_str(&r.out, CMD_SYSTEM), "sent SIGTERM"));
	assert_int_equal(r.res.signal, SIGTERM);
	assert_true(r.ms >= 1000 && r.ms < 10000);
	/* Both sleeps are gone, not only the shell. */
	assert_false(cmd_exec_test_group_alive(pgid));
	cmd_exec_test_done(&r);

	cmd_exec_test_start(&r, *state, stubborn, NULL);
	r.timeout_s = 1;
	cmd_exec_test_go(&r);
	pgid = atol(testutil_out_str(&r.out, CMD_STDOUT));
	assert_true(pgid > 1);
	assert_non_null(strstr(testutil_out_str(&r.out, CMD_SYSTEM), "sent SIGKILL"));
	assert_int_equal(r.res.signal, SIGKILL);
	assert_true(r.ms >= 3000 && r.ms < 12000);
	assert_false(cmd_exec_test_group_alive(pgid));
	cmd_exec_test_done(&r);
}

static void
cmd_exec_test_cancel(void **state)
{
	const char *argv[] = {"/bin/sh", "-c", "echo $$; sleep 100 & exec sleep 100", NULL};
	struct cmd_exec_test_run r;
	pthread_t t;
	long pgid;

	cmd_exec_test_start(&r, *state, argv, NULL);
	assert_int_equal(pthread_create(&t, NULL, cmd_exec_test_thread, &r), 0);
	/* The line arrives while the program still runs: output is streamed. */
	pgid = cmd_exec_test_first_number(&r, 10000);
	assert_true(pgid > 1);
	assert_true(cmd_exec_test_group_alive(pgid));
	atomic_store(&r.cancel, 1);
	pthread_join(t, NULL);
	assert_string_equal(r.res.error, "cancelled");
	assert_non_null(strstr(testutil_out_str(&r.out, CMD_SYSTEM), "cancelled: sent SIGTERM"));
	assert_int_equal(r.res.signal, SIGTERM);
	assert_true(r.ms < 5000);
	assert_false(cmd_exec_test_group_alive(pgid));
	cmd_exec_test_done(&r);
}

static void
cmd_exec_test_many_lines(void **state)
{
	const char *argv[] = {"/bin/sh", "-c", "seq 1 100000; echo done >&2", NULL};
	struct cmd_exec_test_run r;
	struct buf want;

	buf_init(&want, 0);
	for (int i = 1; i <= 100000; i++)
		assert_int_equal(buf_printf(&want, "%d\n", i), 0);
	cmd_exec_test_start(&r, *state, argv, NULL);
	cmd_exec_test_go(&r);
	assert_int_equal(r.res.exit_code, 0);
	assert_int_equal(r.out.s[CMD_STDOUT].len, want.len);
	assert_memory_equal(r.out.s[CMD_STDOUT].data, want.data, want.len);
	assert_string_equal(testutil_out_str(&r.out, CMD_STDERR), "done\n");
	/* Streamed in pieces, each ending on a line. */
	assert_true(r.out.calls > 2);
	cmd_exec_test_done(&r);
	buf_fini(&want);
}

static void
cmd_exec_test_max_output(void **state)
{
	const char *argv[] = {"/bin/sh", "-c", "seq 1 100000; echo end", NULL};
	struct agent_config cfg;
	struct cmd_exec_test_run r;

	(void)state;
	assert_int_equal(
	    testutil_cfg(&cfg, "default_user", TESTUTIL_USER, "max_output", "4096", NULL), 0);
	cmd_exec_test_start(&r, &cfg, argv, NULL);
	cmd_exec_test_go(&r);
	/* The program still runs to its end; what it printed past the limit is dropped. */
	assert_int_equal(r.res.exit_code, 0);
	assert_true(r.out.s[CMD_STDOUT].len <= 4097);
	assert_true(r.out.s[CMD_STDOUT].len >= 4000);
	assert_memory_equal(r.out.s[CMD_STDOUT].data, "1\n2\n3\n", 6);
	assert_null(strstr(testutil_out_str(&r.out, CMD_STDOUT), "end"));
	assert_non_null(strstr(testutil_out_str(&r.out, CMD_SYSTEM), "output cut"));
	cmd_exec_test_done(&r);
	testutil_cfg_fini(&cfg);
}

/* Cpus_allowed_list of /proc/self/status, malloc'd. */
static char *
cmd_exec_test_cpus(void)
{
	char line[512], *v = NULL;
	FILE *f = fopen("/proc/self/status", "r");

	while (f && v == NULL && fgets(line, sizeof(line), f))
		if (strncmp(line, "Cpus_allowed_list:", 18) == 0)
			v = strdup(line + 18 + strspn(line + 18, " \t"));
	if (f)
		fclose(f);
	return v;
}

/* An agent pinned to one CPU gives the programs it starts every CPU back. */
static void
cmd_exec_test_pinned(void **state)
{
	const char *argv[] = {"/usr/bin/grep", "^Cpus_allowed_list:", "/proc/self/status", NULL};
	char *before = cmd_exec_test_cpus(), *after, want[600];
	struct cmd_exec_test_run r;
	int cpu = -1, rc;

	assert_non_null(before);
	rc = cmd_proc_pin_self(&cpu);
	assert_true(rc >= 0);
	if (rc == 0) { /* one CPU: nothing pinned, nothing to give back */
		free(before);
		skip();
	}
	after = cmd_exec_test_cpus();
	snprintf(want, sizeof(want), "%d\n", cpu);
	assert_string_equal(after, want); /* this thread is pinned */
	cmd_exec_test_start(&r, *state, argv, NULL);
	cmd_exec_test_go(&r);
	assert_int_equal(r.res.exit_code, 0);
	snprintf(want, sizeof(want), "Cpus_allowed_list:\t%s", before);
	assert_string_equal(testutil_out_str(&r.out, CMD_STDOUT), want);
	cmd_exec_test_done(&r);
	free(before);
	free(after);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(cmd_exec_test_streams),
	    cmocka_unit_test(cmd_exec_test_signal),
	    cmocka_unit_test(cmd_exec_test_as_user),
	    cmocka_unit_test(cmd_exec_test_root),
	    cmocka_unit_test(cmd_exec_test_env),
	    cmocka_unit_test(cmd_exec_test_cwd_and_missing),
	    cmocka_unit_test(cmd_exec_test_timeout),
	    cmocka_unit_test(cmd_exec_test_cancel),
	    cmocka_unit_test(cmd_exec_test_pinned),
	    cmocka_unit_test(cmd_exec_test_many_lines),
	    cmocka_unit_test(cmd_exec_test_max_output),
	};

	if (geteuid() != 0) {
		fprintf(stderr, "cmd_exec_test: needs root (user switch); skipped\n");
		return 77;
	}
	return cmocka_run_group_tests(tests, cmd_exec_test_setup, cmd_exec_test_teardown);
}
