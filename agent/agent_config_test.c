/*
 * agent_config_test.c: unit tests of agent_config.c: every default, a config file read
 * over them, and the values the checks must refuse (paths that could carry nginx or ssh
 * syntax, bad service and user names, out-of-range sizes and times).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

static void
agent_config_test_defaults(void **state)
{
	struct agent_config cfg;

	(void)state;
	assert_int_equal(testutil_cfg(&cfg, NULL), 0);
	assert_null(cfg.controller);
	assert_string_equal(cfg.server_name, "stoke-controller");
	assert_string_equal(cfg.state_dir, "/var/lib/stoke-agent");
	assert_string_equal(cfg.log_level, "info");
	assert_int_equal(cfg.allow_root, 0);
	assert_int_equal(cfg.allow_setuid, 0);
	assert_string_equal(cfg.default_user, "deploy");
	assert_string_equal(cfg.write_roots, "/var/www:/home");
	assert_string_equal(cfg.nginx_bin, "/usr/sbin/nginx");
	assert_string_equal(cfg.nginx_prefix, "");
	assert_string_equal(cfg.nginx_conf, "");
	assert_string_equal(cfg.nginx_pid, "");
	assert_string_equal(cfg.nginx_sites_available, "/etc/nginx/sites-available");
	assert_string_equal(cfg.nginx_sites_enabled, "/etc/nginx/sites-enabled");
	assert_string_equal(cfg.authorized_keys_file, "%h/.ssh/authorized_keys");
	assert_string_equal(cfg.git_bin, "/usr/bin/git");
	assert_string_equal(cfg.services, "nginx:php8.2-fpm");
	assert_string_equal(cfg.systemctl_bin, "/usr/bin/systemctl");
	assert_int_equal(cfg.exec_timeout, 3600000);
	assert_int_equal(cfg.max_output, 64L * 1024 * 1024);
	testutil_cfg_fini(&cfg);
}

static void
agent_config_test_file(void **state)
{
	char dir[PATH_MAX], path[PATH_MAX + 16], err[512];
	struct agent_config cfg;

	(void)state;
	assert_int_equal(testutil_tmpdir(dir, "cfg"), 0);
	snprintf(path, sizeof(path), "%s/agent.conf", dir);
	assert_int_equal(testutil_write(path,
					"# an agent\n"
					"controller tls+tcp://10.0.0.1:8443\n"
					"agent_id \"a-42\"\n"
					"allow_root yes\n"
					"write_roots /srv/www:/etc/nginx\n"
					"nginx_prefix /opt/nginx/\n"
					"nginx_conf conf/nginx.conf\n"
					"nginx_pid /run/nginx-test.pid\n"
					"authorized_keys_file /etc/ssh/keys/%u\n"
					"services nginx:php8.3-fpm:redis-server@main.service\n"
					"exec_timeout 90s\n"
					"max_output 1048576\n",
					0600),
			 0);
	assert_int_equal(testutil_cfg(&cfg, NULL), 0);
	assert_int_equal(
	    config_parse_file(agent_config_opts, agent_config_nopts, &cfg, path, err, sizeof(err)),
	    0);
	assert_string_equal(cfg.controller, "tls+tcp://10.0.0.1:8443");
	assert_string_equal(cfg.agent_id, "a-42");
	assert_int_equal(cfg.allow_root, 1);
	assert_string_equal(cfg.write_roots, "/srv/www:/etc/nginx");
	assert_string_equal(cfg.nginx_conf, "conf/nginx.conf");
	assert_string_equal(cfg.authorized_keys_file, "/etc/ssh/keys/%u");
	assert_string_equal(cfg.services, "nginx:php8.3-fpm:redis-server@main.service");
	assert_int_equal(cfg.exec_timeout, 90000);
	assert_int_equal(cfg.max_output, 1048576);
	/* Unchanged keys keep their defaults. */
	assert_string_equal(cfg.default_user, "deploy");
	testutil_cfg_fini(&cfg);
	testutil_rm_rf(dir);
}

static void
agent_config_test_refused(void **state)
{
	static const char *const bad[][2] = {
	    {"write_roots", "relative/www"},
	    {"write_roots", "/var/www:"},
	    {"write_roots", "/var/www:etc"},
	    {"nginx_pid", "/run/x.pid; daemon on"},
	    {"nginx_pid", "relative.pid"},
	    {"nginx_pid", "/run/x\".pid"},
	    {"nginx_conf", "-t"},
	    {"nginx_pid", "/run/x y.pid"},
	    {"nginx_prefix", "opt/nginx"},
	    {"nginx_sites_available", "sites"},
	    {"nginx_bin", "nginx"},
	    {"git_bin", "bin/git"},
	    {"systemctl_bin", ""},
	    {"services", "nginx;reboot"},
	    {"services", "nginx::php"},
	    {"services", "-nginx"},
	    {"services", "ngi nx"},
	    {"state_dir", ""},
	    {"authorized_keys_file", "%x/keys"},
	    {"authorized_keys_file", "relative/%u"},
	    {"authorized_keys_file", "~/.ssh/authorized_keys"},
	    {"authorized_keys_file", "/etc/keys/%"},
	    {"default_user", "Root"},
	    {"default_user", "a;b"},
	    {"default_user", ""},
	    {"log_level", "loud"},
	    {"allow_root", "maybe"},
	    {"exec_timeout", "0s"},
	    {"exec_timeout", "30d"},
	    {"max_output", "100"},
	    {"max_output", "99999999999"},
	    {"no_such_key", "x"},
	};
	struct agent_config cfg;
	char err[256];

	(void)state;
	assert_int_equal(testutil_cfg(&cfg, NULL), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (config_set(agent_config_opts, agent_config_nopts, &cfg, bad[i][0], bad[i][1],
			       "test", err, sizeof(err)) == 0)
			fail_msg("%s = \"%s\" was accepted", bad[i][0], bad[i][1]);
	}
	/* Refused values leave the old ones. */
	assert_string_equal(cfg.write_roots, "/var/www:/home");
	assert_string_equal(cfg.default_user, "deploy");
	assert_int_equal(cfg.max_output, 64L * 1024 * 1024);
	testutil_cfg_fini(&cfg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(agent_config_test_defaults),
	    cmocka_unit_test(agent_config_test_file),
	    cmocka_unit_test(agent_config_test_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
