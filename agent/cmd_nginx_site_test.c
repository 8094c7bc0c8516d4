/*
 * cmd_nginx_site_test.c: nginx_site against a real nginx with its own prefix on a free port: a
 * good site is served over HTTP; a change nginx -t refuses or a failed reload is reported in
 * nginx's words while the old site keeps serving and its files stay exact; disable, remove;
 * a configuration that is not root's alone (a deploy-owned include folder or module, a
 * writable main file) refused before nginx runs (policy.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

struct cmd_nginx_site_test {
	char dir[256];
	int port;
	pid_t nginx;
	struct agent_config cfg;
};

static char cmd_nginx_site_test_buf[PATH_MAX];

static const char *
cmd_nginx_site_test_at(struct cmd_nginx_site_test *t, const char *rel)
{
	snprintf(cmd_nginx_site_test_buf, sizeof(cmd_nginx_site_test_buf), "%s/%s", t->dir, rel);
	return cmd_nginx_site_test_buf;
}

static int
cmd_nginx_site_test_run(struct cmd_nginx_site_test *t, const struct agent_config *cfg,
			const char *name, const char *const *names, const char *root, int enabled,
			int remove, struct cmd_result *res)
{
	Stoke__Command cmd = STOKE__COMMAND__INIT;
	Stoke__NginxSiteCommand ns = STOKE__NGINX_SITE_COMMAND__INIT;
	struct testutil_out out;
	struct cmd_ctx ctx;
	atomic_int cancel;
	size_t n = 0;

	while (names != NULL && names[n] != NULL)
		n++;
	ns.name = (char *)name;
	ns.server_names = (char **)names;
	ns.n_server_names = n;
	ns.root = (char *)(root != NULL ? root : "");
	ns.listen_port = (uint32_t)t->port;
	ns.enabled = enabled;
	ns.remove = remove;
	cmd.kind_case = STOKE__COMMAND__KIND_NGINX_SITE;
	cmd.nginx_site = &ns;
	atomic_init(&cancel, 0);
	testutil_out_init(&out);
	cmd_result_init(res);
	testutil_ctx(&ctx, cfg != NULL ? cfg : &t->cfg, &out, &cancel);
	cmd_lookup(STOKE__COMMAND__KIND_NGINX_SITE)->run(&ctx, &cmd, res);
	testutil_out_fini(&out);
	return res->exit_code;
}

/* Waits (deadline 15 s) until GET / with Host: host answers status with body. */
static int
cmd_nginx_site_test_serves(struct cmd_nginx_site_test *t, const char *host, int status,
			   const char *body)
{
	int64_t end = time_mono_ms() + 15000;
	int got = 0;
	char *b = NULL;

	while (time_mono_ms() < end) {
		free(b);
		b = NULL;
		if (testutil_http_get(t->port, host, "/", &got, &b) == 0 && got == status &&
		    (body == NULL || strcmp(b, body) == 0)) {
			free(b);
			return 1;
		}
		poll(NULL, 0, 25);
	}
	fprintf(stderr, "GET %s: status %d body %s\n", host, got, b != NULL ? b : "(none)");
	free(b);
	return 0;
}

/* What a site's two paths hold: file text and link target ("" when absent). */
struct cmd_nginx_site_test_state {
	char *avail;
	char link[PATH_MAX];
	int has_avail, has_link;
};

static void
cmd_nginx_site_test_snap(struct cmd_nginx_site_test *t, const char *name,
			 struct cmd_nginx_site_test_state *s)
{
	char p[PATH_MAX];
	ssize_t n;

	memset(s, 0, sizeof(*s));
	snprintf(p, sizeof(p), "%s/sites-available/%s", t->dir, name);
	s->avail = testutil_read(p);
	s->has_avail = s->avail != NULL;
	snprintf(p, sizeof(p), "%s/sites-enabled/%s", t->dir, name);
	n = readlink(p, s->link, sizeof(s->link) - 1);
	s->has_link = n >= 0;
	if (n >= 0)
		s->link[n] = '\0';
}

static void
cmd_nginx_site_test_same(const struct cmd_nginx_site_test_state *a,
			 const struct cmd_nginx_site_test_state *b)
{
	assert_int_equal(a->has_avail, b->has_avail);
	if (a->has_avail)
		assert_string_equal(a->avail, b->avail);
	assert_int_equal(a->has_link, b->has_link);
	assert_string_equal(a->link, b->link);
}

static void
cmd_nginx_site_test_snap_fini(struct cmd_nginx_site_test_state *s)
{
	free(s->avail);
}

static int
cmd_nginx_site_test_setup(void **state)
{
	static const char *const dirs[] = {"conf", "logs",    "sites-available", "sites-enabled",
					   "www",  "www/one", "www/two",	 "www/three"};
	struct cmd_nginx_site_test *t = calloc(1, sizeof(*t));
	char p[PATH_MAX], conf[2048], pidarg[400], prefix[300], pidfile[300];
	char log[300];

	if (t == NULL || testutil_tmpdir(p, "ngx") != 0 || strlen(p) >= sizeof(t->dir))
		return -1;
	memcpy(t->dir, p, strlen(p) + 1);
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		if (mkdir(cmd_nginx_site_test_at(t, dirs[i]), 0755) != 0)
			return -1;
	if (testutil_write(cmd_nginx_site_test_at(t, "www/one/index.html"), "site one\n", 0644) ||
	    testutil_write(cmd_nginx_site_test_at(t, "www/two/index.html"), "site two\n", 0644) ||
	    testutil_write(cmd_nginx_site_test_at(t, "www/three/index.html"), "site three\n", 0644))
		return -1;
	if ((t->port = testutil_free_port()) <= 0)
		return -1;
	/* A default server answers every name no site claims; sites come from sites-enabled.
	 * It listens on the port's every address like the sites do: nginx picks servers by
	 * the most specific listen address, so a 127.0.0.1 one would hide *:port sites. */
	snprintf(conf, sizeof(conf),
		 "worker_processes 1;\n"
		 "events { worker_connections 64; }\n"
		 "http {\n"
		 "\taccess_log off;\n"
		 "\tserver {\n"
		 "\t\tlisten %d default_server;\n"
		 "\t\treturn 404 \"no site\\n\";\n"
		 "\t}\n"
		 "\tinclude %s/sites-enabled/*;\n"
		 "}\n",
		 t->port, t->dir);
	if (testutil_write(cmd_nginx_site_test_at(t, "conf/nginx.conf"), conf, 0644) != 0)
		return -1;
	snprintf(prefix, sizeof(prefix), "%s/", t->dir);
	snprintf(pidfile, sizeof(pidfile), "%s/nginx.pid", t->dir);
	snprintf(pidarg, sizeof(pidarg), "daemon off; pid %s;", pidfile);
	snprintf(log, sizeof(log), "%s/logs/nginx.out", t->dir);
	{
		const char *argv[] = {
		    "/usr/sbin/nginx", "-p", prefix, "-c", "conf/nginx.conf", "-e",
		    "logs/error.log",  "-g", pidarg, NULL};

		t->nginx = testutil_spawn(argv, log);
	}
	if (t->nginx <= 0 || testutil_wait_port(t->port, 15000) != 0) {
		fprintf(stderr, "nginx did not start; see %s\n", log);
		return -1;
	}
	if (testutil_cfg(&t->cfg, "nginx_prefix", prefix, "nginx_conf", "conf/nginx.conf",
			 "nginx_pid", pidfile, "nginx_sites_available",
			 cmd_nginx_site_test_at(t, "sites-available"), NULL) != 0 ||
	    config_set(agent_config_opts, agent_config_nopts, &t->cfg, "nginx_sites_enabled",
		       cmd_nginx_site_test_at(t, "sites-enabled"), "test", p, sizeof(p)) != 0)
		return -1;
	*state = t;
	return 0;
}

static int
cmd_nginx_site_test_teardown(void **state)
{
	struct cmd_nginx_site_test *t = *state;

	testutil_stop(t->nginx);
	testutil_rm_rf(t->dir);
	testutil_cfg_fini(&t->cfg);
	free(t);
	return 0;
}

static void
cmd_nginx_site_test_good_site(void **state)
{
	struct cmd_nginx_site_test *t = *state;
	const char *names[] = {"one.example.com", "www.one.example.com", NULL};
	struct cmd_nginx_site_test_state s;
	struct cmd_result res;
	char want[PATH_MAX];

	assert_true(cmd_nginx_site_test_serves(t, "one.example.com", 404, "no site\n"));
	assert_int_equal(cmd_nginx_site_test_run(t, NULL, "one.example.com", names,
						 cmd_nginx_site_test_at(t, "www/one"), 1, 0, &res),
			 0);
	assert_string_equal(res.error, "");
	assert_non_null(res.result_json);
	assert_non_null(strstr(res.result_json, "syntax is ok"));
	cmd_result_fini(&res);
	assert_true(cmd_nginx_site_test_serves(t, "one.example.com", 200, "site one\n"));
	assert_true(cmd_nginx_site_test_serves(t, "www.one.example.com", 200, "site one\n"));
	assert_true(cmd_nginx_site_test_serves(t, "other.example.com", 404, "no site\n"));

	cmd_nginx_site_test_snap(t, "one.example.com", &s);
	assert_true(s.has_avail);
	assert_non_null(strstr(s.avail, "server_name one.example.com www.one.example.com;"));
	assert_true(s.has_link);
	snprintf(want, sizeof(want), "%s/sites-available/one.example.com", t->dir);
	assert_string_equal(s.link, want);
	cmd_nginx_site_test_snap_fini(&s);

	/* Changing the root moves the site. */
	assert_int_equal(cmd_nginx_site_test_run(t, NULL, "one.example.com", names,
						 cmd_nginx_site_test_at(t, "www/two"), 1, 0, &res),
			 0);
	cmd_result_fini(&res);
	assert_true(cmd_nginx_site_test_serves(t, "one.example.com", 200, "site two\n"));
}

static void
cmd_nginx_site_test_refused_by_nginx(void **state)
{
	struct cmd_nginx_site_test *t = *state;
	const char *names[] = {"one.example.com", NULL};
	const char *new_names[] = {"new.example.com", NULL};
	struct cmd_nginx_site_test_state before, after;
	struct cmd_result res;
	char broken[PATH_MAX];

	assert_true(cmd_nginx_site_test_serves(t, "one.example.com", 200, "site two\n"));
	cmd_nginx_site_test_snap(t, "one.example.com", &before);
	/* Someone broke the configuration by hand: no change may be loaded until it is fixed. */
	snprintf(broken, sizeof(broken), "%s/sites-enabled/zz-by-hand", t->dir);
	assert_int_equal(testutil_write(broken, "server { listen 1; bogus_directive on; }\n", 0644),
			 0);

	assert_int_equal(cmd_nginx_site_test_run(t, NULL, "one.example.com", names,
						 cmd_nginx_site_test_at(t, "www/three"), 1, 0,
						 &res),
			 -1);
	/* nginx's own words, naming the file and the directive. */
	if (strstr(res.error, "unknown directive \"bogus_directive\"") == NULL ||
	    strstr(res.error, "zz-by-hand") == NULL || strstr(res.error, "nginx -t") == NULL)
		fail_msg("error: %s", res.error);
	assert_null(res.result_json);
	cmd_result_fini(&res);
	cmd_nginx_site_test_snap(t, "one.example.com", &after);
	cmd_nginx_site_test_same(&before, &after);
	cmd_nginx_site_test_snap_fini(&after);
	assert_true(cmd_nginx_site_test_serves(t, "one.example.com", 200, "site two\n"));

	/* A new site is refused too and leaves nothing behind (absence restored). */
	assert_int_equal(cmd_nginx_site_test_run(t, NULL, "new.example.com", new_names,
						 cmd_nginx_site_test_at(t, "www/three"), 1, 0,
						 &res),
			 -1);
	assert_non_null(strstr(res.error, "bogus_directive"));
	cmd_result_fini(&res);
	cmd_nginx_site_test_snap(t, "new.example.com", &after);
	assert_false(after.has_avail);
	assert_false(after.has_link);
	cmd_nginx_site_test_snap_fini(&after);

	/* So is removing one: the files come back. */
	assert_int_equal(
	    cmd_nginx_site_test_run(t, NULL, "one.example.com", NULL, NULL, 0, 1, &res), -1);
	cmd_result_fini(&res);
	cmd_nginx_site_test_snap(t, "one.example.com", &after);
	cmd_nginx_site_test_same(&before, &after);
	cmd_nginx_site_test_snap_fini(&after);

	assert_int_equal(unlink(broken), 0);
	cmd_nginx_site_test_snap_fini(&before);
	assert_true(cmd_nginx_site_test_serves(t, "one.example.com", 200, "site two\n"));
}

static void
cmd_nginx_site_test_reload_fails(void **state)
{
	struct cmd_nginx_site_test *t = *state;
	const char *names[] = {"one.example.com", NULL};
	struct cmd_nginx_site_test_state before, after;
	struct agent_config cfg;
	struct cmd_result res;
	char err[256];

	/* The same configuration, but a pid file nobody wrote: nginx -t passes, the reload
	 * cannot find the master. */
	assert_int_equal(testutil_cfg(&cfg, "nginx_prefix", t->cfg.nginx_prefix, "nginx_conf",
				      t->cfg.nginx_conf, "nginx_pid",
				      cmd_nginx_site_test_at(t, "no-such.pid"),
				      "nginx_sites_available", t->cfg.nginx_sites_available, NULL),
			 0);
	assert_int_equal(config_set(agent_config_opts, agent_config_nopts, &cfg,
				    "nginx_sites_enabled", t->cfg.nginx_sites_enabled, "test", err,
				    sizeof(err)),
			 0);
	cmd_nginx_site_test_snap(t, "one.example.com", &before);
	assert_int_equal(cmd_nginx_site_test_run(t, &cfg, "one.example.com", names,
						 cmd_nginx_site_test_at(t, "www/three"), 1, 0,
						 &res),
			 -1);
	if (strstr(res.error, "reload failed") == NULL || strstr(res.error, "no-such.pid") == NULL)
		fail_msg("error: %s", res.error);
	cmd_result_fini(&res);
	cmd_nginx_site_test_snap(t, "one.example.com", &after);
	cmd_nginx_site_test_same(&before, &after);
	cmd_nginx_site_test_snap_fini(&after);
	cmd_nginx_site_test_snap_fini(&before);
	testutil_cfg_fini(&cfg);
	assert_true(cmd_nginx_site_test_serves(t, "one.example.com", 200, "site two\n"));
}

static void
cmd_nginx_site_test_bad_fields(void **state)
{
	struct cmd_nginx_site_test *t = *state;
	const char *names[] = {"one.example.com", NULL};
	const char *inject[] = {"one.example.com; root /etc", NULL};
	const char *brace[] = {"x.example.com}", NULL};
	struct cmd_nginx_site_test_state before, after;
	struct cmd_result res;

	cmd_nginx_site_test_snap(t, "one.example.com", &before);
	assert_int_equal(cmd_nginx_site_test_run(t, NULL, "one.example.com", inject,
						 cmd_nginx_site_test_at(t, "www/one"), 1, 0, &res),
			 -1);
	assert_non_null(strstr(res.error, "server_names[0]"));
	cmd_result_fini(&res);
	assert_int_equal(cmd_nginx_site_test_run(t, NULL, "one.example.com", brace,
						 cmd_nginx_site_test_at(t, "www/one"), 1, 0, &res),
			 -1);
	cmd_result_fini(&res);
	assert_int_equal(cmd_nginx_site_test_run(t, NULL, "one.example.com", names,
						 "/var/www;include /etc/passwd", 1, 0, &res),
			 -1);
	assert_non_null(strstr(res.error, "root"));
	cmd_result_fini(&res);
	/* The name is a file name in sites-available: no path tricks. */
	assert_int_equal(cmd_nginx_site_test_run(t, NULL, "../../etc/passwd", names,
						 cmd_nginx_site_test_at(t, "www/one"), 1, 0, &res),
			 -1);
	assert_non_null(strstr(res.error, "name"));
	cmd_result_fini(&res);
	cmd_nginx_site_test_snap(t, "one.example.com", &after);
	cmd_nginx_site_test_same(&before, &after);
	cmd_nginx_site_test_snap_fini(&after);
	cmd_nginx_site_test_snap_fini(&before);
}

static void
cmd_nginx_site_test_disable_and_remove(void **state)
{
	struct cmd_nginx_site_test *t = *state;
	const char *names[] = {"one.example.com", NULL};
	struct cmd_nginx_site_test_state s;
	struct cmd_result res;

	/* Disabled: the file stays, the link goes, nginx no longer serves it. */
	assert_int_equal(cmd_nginx_site_test_run(t, NULL, "one.example.com", names,
						 cmd_nginx_site_test_at(t, "www/two"), 0, 0, &res),
			 0);
	cmd_result_fini(&res);
	cmd_nginx_site_test_snap(t, "one.example.com", &s);
	assert_true(s.has_avail);
	assert_false(s.has_link);
	cmd_nginx_site_test_snap_fini(&s);
	assert_true(cmd_nginx_site_test_serves(t, "one.example.com", 404, "no site\n"));

	/* Enabled again, then removed. */
	assert_int_equal(cmd_nginx_site_test_run(t, NULL, "one.example.com", names,
						 cmd_nginx_site_test_at(t, "www/one"), 1, 0, &res),
			 0);
	cmd_result_fini(&res);
	assert_true(cmd_nginx_site_test_serves(t, "one.example.com", 200, "site one\n"));
	assert_int_equal(
	    cmd_nginx_site_test_run(t, NULL, "one.example.com", NULL, NULL, 0, 1, &res), 0);
	assert_non_null(strstr(res.result_json, "\"removed\":true"));
	cmd_result_fini(&res);
	cmd_nginx_site_test_snap(t, "one.example.com", &s);
	assert_false(s.has_avail);
	assert_false(s.has_link);
	cmd_nginx_site_test_snap_fini(&s);
	assert_true(cmd_nginx_site_test_serves(t, "one.example.com", 404, "no site\n"));
	/* Removing what is not there is fine. */
	assert_int_equal(
	    cmd_nginx_site_test_run(t, NULL, "one.example.com", NULL, NULL, 0, 1, &res), 0);
	cmd_result_fini(&res);
}

/* A copy of the agent's configuration naming another main configuration file. */
static void
cmd_nginx_site_test_cfg_conf(struct cmd_nginx_site_test *t, struct agent_config *cfg,
			     const char *conf)
{
	char err[256];

	assert_int_equal(testutil_cfg(cfg, "nginx_prefix", t->cfg.nginx_prefix, "nginx_conf", conf,
				      "nginx_pid", t->cfg.nginx_pid, "nginx_sites_available",
				      t->cfg.nginx_sites_available, NULL),
			 0);
	assert_int_equal(config_set(agent_config_opts, agent_config_nopts, cfg,
				    "nginx_sites_enabled", t->cfg.nginx_sites_enabled, "test", err,
				    sizeof(err)),
			 0);
}

/*
 * Finding: nginx -t runs as root and loads whatever the configuration names; when it
 * includes a folder the deploy user can write (or loads a module from one), that user's
 * code runs as root. nginx_site refuses before writing or running anything.
 */
static void
cmd_nginx_site_test_untrusted_config(void **state)
{
	struct cmd_nginx_site_test *t = *state;
	const char *names[] = {"one.example.com", NULL};
	struct cmd_nginx_site_test_state before, after;
	struct agent_config cfg;
	struct cmd_result res;
	char *main_text, text[8192], deploy[PATH_MAX], so[PATH_MAX + 16];
	long uid = testutil_user();

	assert_true(uid > 0);
	main_text = testutil_read(cmd_nginx_site_test_at(t, "conf/nginx.conf"));
	assert_non_null(main_text);
	snprintf(deploy, sizeof(deploy), "%s", cmd_nginx_site_test_at(t, "deploy"));
	assert_int_equal(mkdir(deploy, 0755), 0);
	assert_int_equal(chown(deploy, (uid_t)uid, (gid_t)-1), 0);

	/* 1. The configuration includes a folder the deploy user owns. */
	snprintf(text, sizeof(text), "%sinclude %s/*.conf;\n", main_text, deploy);
	assert_int_equal(
	    testutil_write(cmd_nginx_site_test_at(t, "conf/include-deploy.conf"), text, 0644), 0);
	cmd_nginx_site_test_cfg_conf(t, &cfg, "conf/include-deploy.conf");
	cmd_nginx_site_test_snap(t, "one.example.com", &before);
	assert_int_equal(cmd_nginx_site_test_run(t, &cfg, "one.example.com", names,
						 cmd_nginx_site_test_at(t, "www/three"), 1, 0,
						 &res),
			 -1);
	if (strstr(res.error, "refused before running nginx") == NULL ||
	    strstr(res.error, deploy) == NULL || strstr(res.error, "belongs to uid") == NULL)
		fail_msg("error: %s", res.error);
	cmd_result_fini(&res);
	cmd_nginx_site_test_snap(t, "one.example.com", &after);
	cmd_nginx_site_test_same(&before, &after);
	cmd_nginx_site_test_snap_fini(&after);
	testutil_cfg_fini(&cfg);

	/* 2. A load_module line naming a shared object the deploy user placed. */
	snprintf(so, sizeof(so), "%s/evil.so", deploy);
	assert_int_equal(testutil_write(so, "not really a module\n", 0644), 0);
	assert_int_equal(chown(so, (uid_t)uid, (gid_t)-1), 0);
	snprintf(text, sizeof(text), "load_module %s;\n%s", so, main_text);
	assert_int_equal(
	    testutil_write(cmd_nginx_site_test_at(t, "conf/load-module.conf"), text, 0644), 0);
	cmd_nginx_site_test_cfg_conf(t, &cfg, "conf/load-module.conf");
	assert_int_equal(cmd_nginx_site_test_run(t, &cfg, "one.example.com", names,
						 cmd_nginx_site_test_at(t, "www/three"), 1, 0,
						 &res),
			 -1);
	if (strstr(res.error, "refused before running nginx") == NULL ||
	    strstr(res.error, "load_module") == NULL)
		fail_msg("error: %s", res.error);
	cmd_result_fini(&res);
	testutil_cfg_fini(&cfg);

	/* 3. A main configuration others may write. */
	assert_int_equal(
	    testutil_write(cmd_nginx_site_test_at(t, "conf/writable.conf"), main_text, 0666), 0);
	cmd_nginx_site_test_cfg_conf(t, &cfg, "conf/writable.conf");
	assert_int_equal(cmd_nginx_site_test_run(t, &cfg, "one.example.com", names,
						 cmd_nginx_site_test_at(t, "www/three"), 1, 0,
						 &res),
			 -1);
	if (strstr(res.error, "writable by its group or others") == NULL)
		fail_msg("error: %s", res.error);
	cmd_result_fini(&res);
	testutil_cfg_fini(&cfg);

	cmd_nginx_site_test_snap(t, "one.example.com", &after);
	cmd_nginx_site_test_same(&before, &after);
	cmd_nginx_site_test_snap_fini(&after);
	cmd_nginx_site_test_snap_fini(&before);
	free(main_text);
	assert_true(cmd_nginx_site_test_serves(t, "one.example.com", 200, "site two\n"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(cmd_nginx_site_test_good_site),
	    cmocka_unit_test(cmd_nginx_site_test_refused_by_nginx),
	    cmocka_unit_test(cmd_nginx_site_test_reload_fails),
	    cmocka_unit_test(cmd_nginx_site_test_untrusted_config),
	    cmocka_unit_test(cmd_nginx_site_test_bad_fields),
	    cmocka_unit_test(cmd_nginx_site_test_disable_and_remove),
	};

	if (access("/usr/sbin/nginx", X_OK) != 0) {
		fprintf(stderr, "cmd_nginx_site_test: /usr/sbin/nginx missing; skipped\n");
		return 77;
	}
	return cmocka_run_group_tests(tests, cmd_nginx_site_test_setup,
				      cmd_nginx_site_test_teardown);
}
