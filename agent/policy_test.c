/*
 * policy_test.c: unit tests of the agent's root policy (policy.c) on decoded commands and
 * private nginx trees: who a command may run as, set-id and root-owned write_file
 * refusals, the nginx configuration walk (include, glob, links, load_module, comments and
 * quotes, a FIFO) and the nginx tree write_file may not enter. Needs root (chown).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "err.h"
#include "policy.h"
#include "testutil.h"

struct policy_test {
	char dir[256];
	long uid; /* the test user: the deploy user of these tests */
};

static char policy_test_buf[PATH_MAX];

static const char *
policy_test_at(struct policy_test *t, const char *rel)
{
	snprintf(policy_test_buf, sizeof(policy_test_buf), "%s/%s", t->dir, rel);
	return policy_test_buf;
}

/* The verdict on an exec as user under cfg. */
static int
policy_test_exec(const struct agent_config *cfg, const char *user, char *why, size_t whylen)
{
	Stoke__Command cmd = STOKE__COMMAND__INIT;
	Stoke__ExecCommand ex = STOKE__EXEC_COMMAND__INIT;
	char *argv[] = {"true"};

	ex.argv = argv;
	ex.n_argv = 1;
	ex.user = (char *)user;
	cmd.kind_case = STOKE__COMMAND__KIND_EXEC;
	cmd.exec = &ex;
	return policy_check(cfg, &cmd, why, whylen);
}

static int
policy_test_write(const struct agent_config *cfg, const char *path, const char *owner,
		  const char *group, unsigned mode, char *why, size_t whylen)
{
	Stoke__Command cmd = STOKE__COMMAND__INIT;
	Stoke__WriteFileCommand wf = STOKE__WRITE_FILE_COMMAND__INIT;

	wf.path = (char *)path;
	wf.owner = (char *)owner;
	wf.group = (char *)group;
	wf.mode = mode;
	cmd.kind_case = STOKE__COMMAND__KIND_WRITE_FILE;
	cmd.write_file = &wf;
	return policy_check(cfg, &cmd, why, whylen);
}

static int
policy_test_setup(void **state)
{
	static const char *const dirs[] = {"conf", "sites-available", "sites-enabled",
					   "mods", "deploy",	      "www"};
	struct policy_test *t = calloc(1, sizeof(*t));
	char p[PATH_MAX];

	if (t == NULL || (t->uid = testutil_user()) < 0 || testutil_tmpdir(p, "pol") != 0 ||
	    strlen(p) >= sizeof(t->dir))
		return -1;
	memcpy(t->dir, p, strlen(p) + 1);
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		if (mkdir(policy_test_at(t, dirs[i]), 0755) != 0)
			return -1;
	if (chown(policy_test_at(t, "deploy"), (uid_t)t->uid, (gid_t)-1) != 0)
		return -1;
	*state = t;
	return 0;
}

static int
policy_test_teardown(void **state)
{
	struct policy_test *t = *state;

	testutil_rm_rf(t->dir);
	free(t);
	return 0;
}

/* With allow_root off nothing the controller names runs as root. */
static void
policy_test_run_as(void **state)
{
	struct agent_config off, on;
	Stoke__Command cmd = STOKE__COMMAND__INIT;
	Stoke__AuthorizedKeysCommand ak = STOKE__AUTHORIZED_KEYS_COMMAND__INIT;
	char why[512];

	(void)state;
	assert_int_equal(testutil_cfg(&off, "default_user", "root", NULL), 0);
	assert_int_equal(testutil_cfg(&on, "allow_root", "yes", NULL), 0);
	assert_int_equal(policy_test_exec(&off, "root", why, sizeof(why)), ERR_AUTH);
	assert_non_null(strstr(why, "allow_root is off"));
	/* The default user counts too. */
	assert_int_equal(policy_test_exec(&off, "", why, sizeof(why)), ERR_AUTH);
	assert_int_equal(policy_test_exec(&off, TESTUTIL_USER, why, sizeof(why)), 0);
	assert_int_equal(policy_test_exec(&on, "root", why, sizeof(why)), 0);
	assert_int_equal(policy_test_exec(&off, "no-such-user-x", why, sizeof(why)), ERR_NOTFOUND);
	assert_int_equal(policy_test_exec(&off, "bad;name", why, sizeof(why)), ERR_INVAL);

	ak.user = "root";
	cmd.kind_case = STOKE__COMMAND__KIND_AUTHORIZED_KEYS;
	cmd.authorized_keys = &ak;
	assert_int_equal(policy_check(&off, &cmd, why, sizeof(why)), ERR_AUTH);
	assert_int_equal(policy_check(&on, &cmd, why, sizeof(why)), 0);
	ak.user = TESTUTIL_USER;
	assert_int_equal(policy_check(&off, &cmd, why, sizeof(why)), 0);

	/* A kind without a rule is refused. */
	cmd.kind_case = STOKE__COMMAND__KIND_NOOP;
	assert_int_equal(policy_check(&off, &cmd, why, sizeof(why)), ERR_AUTH);
	testutil_cfg_fini(&off);
	testutil_cfg_fini(&on);
}

/* write_file's verdicts on the command alone. */
static void
policy_test_write_rules(void **state)
{
	struct policy_test *t = *state;
	struct agent_config off, on, setuid_only, both;
	char roots[PATH_MAX], path[PATH_MAX], why[512];

	snprintf(roots, sizeof(roots), "%s", policy_test_at(t, "www"));
	snprintf(path, sizeof(path), "%s", policy_test_at(t, "www/f"));
	assert_int_equal(testutil_cfg(&off, "write_roots", roots, NULL), 0);
	assert_int_equal(testutil_cfg(&on, "write_roots", roots, "allow_root", "yes", NULL), 0);
	assert_int_equal(
	    testutil_cfg(&setuid_only, "write_roots", roots, "allow_setuid", "yes", NULL), 0);
	assert_int_equal(testutil_cfg(&both, "write_roots", roots, "allow_root", "yes",
				      "allow_setuid", "yes", NULL),
			 0);
	for (unsigned m = 0; m < 3; m++) {
		unsigned mode = m == 0 ? 04755 : m == 1 ? 02755 : 06755;

		assert_int_equal(
		    policy_test_write(&off, path, TESTUTIL_USER, "", mode, why, sizeof(why)),
		    ERR_AUTH);
		assert_non_null(strstr(why, "set-user-ID"));
		assert_int_equal(policy_test_write(&on, path, "root", "", mode, why, sizeof(why)),
				 ERR_AUTH);
		/* allow_setuid alone is not enough: it needs allow_root. */
		assert_int_equal(policy_test_write(&setuid_only, path, TESTUTIL_USER, "", mode, why,
						   sizeof(why)),
				 ERR_AUTH);
		assert_int_equal(policy_test_write(&both, path, "root", "", mode, why, sizeof(why)),
				 0);
	}
	assert_int_equal(policy_test_write(&off, path, "root", "", 0644, why, sizeof(why)),
			 ERR_AUTH);
	assert_int_equal(
	    policy_test_write(&off, path, TESTUTIL_USER, "root", 0644, why, sizeof(why)), ERR_AUTH);
	assert_int_equal(policy_test_write(&on, path, "root", "root", 0644, why, sizeof(why)), 0);
	assert_int_equal(policy_test_write(&off, path, TESTUTIL_USER, "", 01644, why, sizeof(why)),
			 0);
	assert_int_equal(
	    policy_test_write(&off, "/etc/passwd", TESTUTIL_USER, "", 0644, why, sizeof(why)),
	    ERR_AUTH);
	testutil_cfg_fini(&off);
	testutil_cfg_fini(&on);
	testutil_cfg_fini(&setuid_only);
	testutil_cfg_fini(&both);
}

/* A configuration for the private tree: main file text, prefix = the tree. */
static void
policy_test_nginx_cfg(struct policy_test *t, struct agent_config *cfg, const char *main_text)
{
	char prefix[PATH_MAX], avail[PATH_MAX], enabled[PATH_MAX], err[256];

	assert_int_equal(testutil_write(policy_test_at(t, "conf/nginx.conf"), main_text, 0644), 0);
	snprintf(prefix, sizeof(prefix), "%s/", t->dir);
	snprintf(avail, sizeof(avail), "%s", policy_test_at(t, "sites-available"));
	snprintf(enabled, sizeof(enabled), "%s", policy_test_at(t, "sites-enabled"));
	assert_int_equal(testutil_cfg(cfg, "nginx_prefix", prefix, "nginx_conf", "conf/nginx.conf",
				      "nginx_sites_available", avail, NULL),
			 0);
	assert_int_equal(config_set(agent_config_opts, agent_config_nopts, cfg,
				    "nginx_sites_enabled", enabled, "test", err, sizeof(err)),
			 0);
}

/* Expects policy_nginx_check to refuse with words in its reason. */
static void
policy_test_nginx_refused(struct policy_test *t, const char *main_text, const char *words)
{
	struct agent_config cfg;
	char why[1024];

	policy_test_nginx_cfg(t, &cfg, main_text);
	if (policy_nginx_check(&cfg, why, sizeof(why)) == 0)
		fail_msg("allowed: %s", main_text);
	if (strstr(why, words) == NULL)
		fail_msg("reason \"%s\" does not say \"%s\"", why, words);
	testutil_cfg_fini(&cfg);
}

static void
policy_test_nginx_walk(void **state)
{
	struct policy_test *t = *state;
	struct agent_config cfg;
	char text[4096], why[1024], link[PATH_MAX], target[PATH_MAX];

	/* Root's alone: the main file, a site through a link, a module in root's folder. */
	assert_int_equal(testutil_write(policy_test_at(t, "sites-available/a.conf"),
					"server { listen 1; }\n", 0644),
			 0);
	snprintf(target, sizeof(target), "%s", policy_test_at(t, "sites-available/a.conf"));
	snprintf(link, sizeof(link), "%s", policy_test_at(t, "sites-enabled/a.conf"));
	assert_int_equal(symlink(target, link), 0);
	assert_int_equal(testutil_write(policy_test_at(t, "mods/ok.so"), "so\n", 0644), 0);
	snprintf(text, sizeof(text),
		 "load_module mods/ok.so; # relative to the prefix\n"
		 "# include %s/deploy/*.conf;\n"
		 "events {}\nhttp { include \"%s/sites-enabled/*\"; }\n",
		 t->dir, t->dir);
	policy_test_nginx_cfg(t, &cfg, text);
	if (policy_nginx_check(&cfg, why, sizeof(why)) != 0)
		fail_msg("refused: %s", why);
	/* The tree write_file may not enter. */
	assert_true(policy_nginx_tree(&cfg, policy_test_at(t, "conf/x.conf")));
	assert_true(policy_nginx_tree(&cfg, policy_test_at(t, "sites-enabled/b")));
	assert_true(policy_nginx_tree(&cfg, policy_test_at(t, "sites-available/b")));
	assert_false(policy_nginx_tree(&cfg, policy_test_at(t, "www/x")));
	testutil_cfg_fini(&cfg);

	/* A folder the deploy user owns, included (even empty, quoted or relative). */
	snprintf(text, sizeof(text), "events {}\ninclude %s/deploy/*.conf;\n", t->dir);
	policy_test_nginx_refused(t, text, "deploy");
	policy_test_nginx_refused(t, "events {}\ninclude '../deploy/*.conf';\n", "belongs to uid");
	/* A deploy user's file in root's folder, or a link to one. */
	assert_int_equal(testutil_write(policy_test_at(t, "deploy/evil.conf"), "\n", 0644), 0);
	assert_int_equal(chown(policy_test_at(t, "deploy/evil.conf"), (uid_t)t->uid, (gid_t)-1), 0);
	snprintf(target, sizeof(target), "%s", policy_test_at(t, "deploy/evil.conf"));
	snprintf(link, sizeof(link), "%s", policy_test_at(t, "sites-enabled/evil"));
	assert_int_equal(symlink(target, link), 0);
	snprintf(text, sizeof(text), "events {}\nhttp { include %s/sites-enabled/*; }\n", t->dir);
	policy_test_nginx_refused(t, text, "belongs to uid");
	assert_int_equal(unlink(link), 0);
	/* A module the deploy user placed. */
	snprintf(text, sizeof(text), "load_module %s/deploy/evil.conf;\nevents {}\n", t->dir);
	policy_test_nginx_refused(t, text, "load_module");
	/* A group-writable included file. */
	assert_int_equal(testutil_write(policy_test_at(t, "conf/gw.conf"), "\n", 0664), 0);
	policy_test_nginx_refused(t, "include gw.conf;\nevents {}\n", "writable by its group");
	/* A FIFO where a file is included: refused, without blocking. */
	assert_int_equal(mkfifo(policy_test_at(t, "conf/fifo.conf"), 0644), 0);
	policy_test_nginx_refused(t, "include fifo.conf;\nevents {}\n", "not a regular file");
	/* Including itself ends. */
	policy_test_nginx_refused(t, "include nginx.conf;\n", "too deep");
}

/* Debian's own layout on this machine (root's alone) passes. */
static void
policy_test_nginx_debian(void **state)
{
	struct agent_config cfg;
	char why[1024];

	(void)state;
	if (access("/etc/nginx/nginx.conf", R_OK) != 0)
		skip();
	assert_int_equal(testutil_cfg(&cfg, NULL), 0);
	if (policy_nginx_check(&cfg, why, sizeof(why)) != 0)
		fail_msg("refused: %s", why);
	assert_true(policy_nginx_tree(&cfg, "/etc/nginx/modules-enabled/50-evil.conf"));
	assert_false(policy_nginx_tree(&cfg, "/var/www/html/index.html"));
	testutil_cfg_fini(&cfg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(policy_test_run_as),
	    cmocka_unit_test(policy_test_write_rules),
	    cmocka_unit_test(policy_test_nginx_walk),
	    cmocka_unit_test(policy_test_nginx_debian),
	};

	if (geteuid() != 0) {
		fprintf(stderr, "policy_test: needs root (chown); skipped\n");
		return 77;
	}
	return cmocka_run_group_tests(tests, policy_test_setup, policy_test_teardown);
}
