/*
 * cmd_authorized_keys_test.c: authorized_keys against a real sshd on 127.0.0.1 (host key made
 * at test time, user home in a temp folder): a synced key logs in, an emptied list locks it
 * out, a hand-added key survives and is reported, fingerprints, modes, planted links refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

#define CMD_AUTHORIZED_KEYS_TEST_USER "stoke-test-ak"

struct cmd_authorized_keys_test {
	char dir[256];
	char home[300];
	char key1[300], key2[300];
	char *pub1, *pub2;
	int port;
	pid_t sshd;
	uid_t uid;
	gid_t gid;
	struct agent_config cfg;
};

static int
cmd_authorized_keys_test_run(struct cmd_authorized_keys_test *t, const char *user,
			     const char *const *keys, struct cmd_result *res)
{
	Stoke__Command cmd = STOKE__COMMAND__INIT;
	Stoke__AuthorizedKeysCommand ak = STOKE__AUTHORIZED_KEYS_COMMAND__INIT;
	struct testutil_out out;
	struct cmd_ctx ctx;
	atomic_int cancel;
	size_t n = 0;

	while (keys != NULL && keys[n] != NULL)
		n++;
	ak.user = (char *)user;
	ak.keys = (char **)keys;
	ak.n_keys = n;
	cmd.kind_case = STOKE__COMMAND__KIND_AUTHORIZED_KEYS;
	cmd.authorized_keys = &ak;
	atomic_init(&cancel, 0);
	testutil_out_init(&out);
	cmd_result_init(res);
	testutil_ctx(&ctx, &t->cfg, &out, &cancel);
	cmd_lookup(STOKE__COMMAND__KIND_AUTHORIZED_KEYS)->run(&ctx, &cmd, res);
	testutil_out_fini(&out);
	return res->exit_code;
}

/* ssh into the test sshd with one key: 0 when the login worked. */
static int
cmd_authorized_keys_test_login(struct cmd_authorized_keys_test *t, const char *key)
{
	char port[16];
	const char *argv[] = {"ssh",
			      "-F",
			      "/dev/null",
			      "-i",
			      key,
			      "-p",
			      port,
			      "-o",
			      "StrictHostKeyChecking=no",
			      "-o",
			      "UserKnownHostsFile=/dev/null",
			      "-o",
			      "BatchMode=yes",
			      "-o",
			      "IdentitiesOnly=yes",
			      "-o",
			      "LogLevel=ERROR",
			      "-o",
			      "ConnectTimeout=10",
			      CMD_AUTHORIZED_KEYS_TEST_USER "@127.0.0.1",
			      "true",
			      NULL};

	snprintf(port, sizeof(port), "%d", t->port);
	return testutil_run(argv, NULL);
}

/* The "SHA256:..." word ssh-keygen -lf prints for a public key file. */
static char *
cmd_authorized_keys_test_keygen_fp(const char *pubfile)
{
	const char *argv[] = {"ssh-keygen", "-lf", pubfile, NULL};
	char *out = NULL, *fp, *sp;

	if (testutil_run(argv, &out) != 0 || out == NULL)
		return NULL;
	fp = strstr(out, "SHA256:");
	if (fp == NULL) {
		free(out);
		return NULL;
	}
	sp = strchr(fp, ' ');
	if (sp != NULL)
		*sp = '\0';
	fp = strdup(fp);
	free(out);
	return fp;
}

static int
cmd_authorized_keys_test_setup(void **state)
{
	struct cmd_authorized_keys_test *t = calloc(1, sizeof(*t));
	char p[PATH_MAX], conf[2048], hostkey[300], pidfile[300], confpath[300], log[300];
	char tmpl[400];
	struct passwd *pw;

	if (t == NULL || testutil_tmpdir(p, "ak") != 0 || strlen(p) >= sizeof(t->dir))
		return -1;
	memcpy(t->dir, p, strlen(p) + 1);
	snprintf(t->home, sizeof(t->home), "%s/home", t->dir);

	/* The test user, with its home in the temp folder. Its password field must not say
	 * "locked" or sshd (without PAM) refuses every login. */
	{
		const char *add[] = {"useradd", "-M", "-r",    "-s",
				     "/bin/sh", "-d", t->home, CMD_AUTHORIZED_KEYS_TEST_USER,
				     NULL};
		const char *mod[] = {
		    "usermod", "-d", t->home, "-p", "*", CMD_AUTHORIZED_KEYS_TEST_USER, NULL};

		if (getpwnam(CMD_AUTHORIZED_KEYS_TEST_USER) == NULL)
			(void)testutil_run_retry(add);
		if (testutil_run_retry(mod) != 0)
			return -1;
	}
	if ((pw = getpwnam(CMD_AUTHORIZED_KEYS_TEST_USER)) == NULL)
		return -1;
	t->uid = pw->pw_uid;
	t->gid = pw->pw_gid;
	if (mkdir(t->home, 0755) != 0 || chown(t->home, t->uid, t->gid) != 0)
		return -1;

	/* Keys, made now (git keeps no modes; nothing secret lives in the tree). */
	snprintf(hostkey, sizeof(hostkey), "%s/host_ed25519", t->dir);
	snprintf(t->key1, sizeof(t->key1), "%s/client1", t->dir);
	snprintf(t->key2, sizeof(t->key2), "%s/client2", t->dir);
	{
		const char *k0[] = {"ssh-keygen", "-q", "-t",	 "ed25519", "-N",
				    "",		  "-f", hostkey, NULL};
		const char *k1[] = {"ssh-keygen", "-q",		"-t", "ed25519", "-N", "",
				    "-C",	  "synced key", "-f", t->key1,	 NULL};
		const char *k2[] = {"ssh-keygen", "-q",		"-t", "ecdsa", "-N", "",
				    "-C",	  "hand added", "-f", t->key2, NULL};

		if (testutil_run(k0, NULL) != 0 || testutil_run(k1, NULL) != 0 ||
		    testutil_run(k2, NULL) != 0)
			return -1;
	}
	snprintf(p, sizeof(p), "%s.pub", t->key1);
	t->pub1 = testutil_chomp(testutil_read(p));
	snprintf(p, sizeof(p), "%s.pub", t->key2);
	t->pub2 = testutil_chomp(testutil_read(p));
	if (t->pub1 == NULL || t->pub2 == NULL)
		return -1;

	/* sshd: StrictModes on, so the modes and owners the agent sets are checked too. */
	if ((t->port = testutil_free_port()) <= 0)
		return -1;
	mkdir("/run/sshd", 0755);
	snprintf(pidfile, sizeof(pidfile), "%s/sshd.pid", t->dir);
	snprintf(conf, sizeof(conf),
		 "ListenAddress 127.0.0.1\n"
		 "Port %d\n"
		 "HostKey %s\n"
		 "PidFile %s\n"
		 "AuthorizedKeysFile %%h/.ssh/authorized_keys\n"
		 "UsePAM no\n"
		 "StrictModes yes\n"
		 "PasswordAuthentication no\n"
		 "KbdInteractiveAuthentication no\n"
		 "PubkeyAuthentication yes\n"
		 "AllowUsers " CMD_AUTHORIZED_KEYS_TEST_USER "\n"
		 "LogLevel VERBOSE\n",
		 t->port, hostkey, pidfile);
	snprintf(confpath, sizeof(confpath), "%s/sshd_config", t->dir);
	if (testutil_write(confpath, conf, 0644) != 0)
		return -1;
	snprintf(log, sizeof(log), "%s/sshd.log", t->dir);
	{
		const char *argv[] = {"/usr/sbin/sshd", "-D", "-e", "-f", confpath, NULL};

		t->sshd = testutil_spawn(argv, log);
	}
	if (t->sshd <= 0 || testutil_wait_port(t->port, 15000) != 0) {
		fprintf(stderr, "sshd did not start; see %s\n", log);
		return -1;
	}
	snprintf(tmpl, sizeof(tmpl), "%%h/.ssh/authorized_keys");
	if (testutil_cfg(&t->cfg, "authorized_keys_file", tmpl, NULL) != 0)
		return -1;
	*state = t;
	return 0;
}

static int
cmd_authorized_keys_test_teardown(void **state)
{
	struct cmd_authorized_keys_test *t = *state;

	testutil_stop(t->sshd);
	testutil_rm_rf(t->dir);
	testutil_cfg_fini(&t->cfg);
	free(t->pub1);
	free(t->pub2);
	free(t);
	return 0;
}

static void
cmd_authorized_keys_test_sync_login_revoke(void **state)
{
	struct cmd_authorized_keys_test *t = *state;
	const char *keys[] = {t->pub1, NULL};
	char ssh[400], file[500], pub[400], want[200], *fp, *text;
	struct cmd_result res;
	struct stat st;

	/* Nothing yet: no login. */
	assert_int_not_equal(cmd_authorized_keys_test_login(t, t->key1), 0);

	assert_int_equal(cmd_authorized_keys_test_run(t, CMD_AUTHORIZED_KEYS_TEST_USER, keys, &res),
			 0);
	assert_string_equal(res.error, "");
	snprintf(pub, sizeof(pub), "%s.pub", t->key1);
	fp = cmd_authorized_keys_test_keygen_fp(pub);
	assert_non_null(fp);
	snprintf(want, sizeof(want), "\"fingerprints\":[\"%s\"]", fp);
	if (strstr(res.result_json, want) == NULL)
		fail_msg("result %s lacks %s", res.result_json, want);
	assert_non_null(strstr(res.result_json, "\"outside\":[]"));
	free(fp);
	cmd_result_fini(&res);

	/* ~/.ssh 0700 and the file 0600, both the user's. */
	snprintf(ssh, sizeof(ssh), "%s/.ssh", t->home);
	snprintf(file, sizeof(file), "%s/authorized_keys", ssh);
	assert_int_equal(stat(ssh, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(st.st_uid, t->uid);
	assert_int_equal(stat(file, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_uid, t->uid);
	assert_int_equal(st.st_gid, t->gid);
	text = testutil_read(file);
	snprintf(want, sizeof(want), "# BEGIN stoke managed keys\n%.120s", t->pub1);
	assert_non_null(strstr(text, want));
	free(text);

	assert_int_equal(cmd_authorized_keys_test_login(t, t->key1), 0);

	/* Revoked: the empty list locks the key out. */
	assert_int_equal(cmd_authorized_keys_test_run(t, CMD_AUTHORIZED_KEYS_TEST_USER, NULL, &res),
			 0);
	assert_non_null(strstr(res.result_json, "\"fingerprints\":[]"));
	cmd_result_fini(&res);
	assert_int_not_equal(cmd_authorized_keys_test_login(t, t->key1), 0);
}

static void
cmd_authorized_keys_test_outside_block(void **state)
{
	struct cmd_authorized_keys_test *t = *state;
	const char *keys[] = {t->pub1, NULL};
	char file[400], *text, *json_want;
	struct cmd_result res;
	FILE *f;

	snprintf(file, sizeof(file), "%s/.ssh/authorized_keys", t->home);
	/* Someone adds a key by hand, after the block. */
	f = fopen(file, "a");
	assert_non_null(f);
	fprintf(f, "%s\n", t->pub2);
	fclose(f);
	assert_int_equal(cmd_authorized_keys_test_login(t, t->key2), 0);

	assert_int_equal(cmd_authorized_keys_test_run(t, CMD_AUTHORIZED_KEYS_TEST_USER, keys, &res),
			 0);
	assert_true(asprintf(&json_want, "\"outside\":[\"%s\"]", t->pub2) > 0);
	if (strstr(res.result_json, json_want) == NULL)
		fail_msg("result %s lacks %s", res.result_json, json_want);
	free(json_want);
	cmd_result_fini(&res);
	text = testutil_read(file);
	assert_non_null(strstr(text, t->pub2));
	free(text);
	assert_int_equal(cmd_authorized_keys_test_login(t, t->key1), 0);
	assert_int_equal(cmd_authorized_keys_test_login(t, t->key2), 0);

	/* Revoking the managed key leaves the hand-added one working. */
	assert_int_equal(cmd_authorized_keys_test_run(t, CMD_AUTHORIZED_KEYS_TEST_USER, NULL, &res),
			 0);
	cmd_result_fini(&res);
	assert_int_not_equal(cmd_authorized_keys_test_login(t, t->key1), 0);
	assert_int_equal(cmd_authorized_keys_test_login(t, t->key2), 0);
}

static void
cmd_authorized_keys_test_refused(void **state)
{
	struct cmd_authorized_keys_test *t = *state;
	char *opt, file[400], *before, *after;
	struct cmd_result res;

	snprintf(file, sizeof(file), "%s/.ssh/authorized_keys", t->home);
	before = testutil_read(file);
	assert_true(asprintf(&opt, "command=\"/bin/sh\" %s", t->pub1) > 0);
	{
		const char *keys[] = {t->pub1, opt, NULL};

		assert_int_equal(
		    cmd_authorized_keys_test_run(t, CMD_AUTHORIZED_KEYS_TEST_USER, keys, &res), -1);
		assert_non_null(strstr(res.error, "keys[1]"));
		cmd_result_fini(&res);
	}
	{
		char *two;
		const char *keys[2] = {NULL, NULL};

		assert_true(asprintf(&two, "%s\n%s", t->pub1, t->pub2) > 0);
		keys[0] = two;
		assert_int_equal(
		    cmd_authorized_keys_test_run(t, CMD_AUTHORIZED_KEYS_TEST_USER, keys, &res), -1);
		assert_non_null(strstr(res.error, "single line"));
		cmd_result_fini(&res);
		free(two);
	}
	free(opt);
	{
		const char *keys[] = {t->pub1, NULL};

		assert_int_equal(cmd_authorized_keys_test_run(t, "root", keys, &res), -1);
		assert_non_null(strstr(res.error, "allow_root"));
		cmd_result_fini(&res);
		assert_int_equal(cmd_authorized_keys_test_run(t, "no-such-user-ak", keys, &res),
				 -1);
		assert_non_null(strstr(res.error, "does not exist"));
		cmd_result_fini(&res);
		assert_int_equal(cmd_authorized_keys_test_run(t, "../etc", keys, &res), -1);
		cmd_result_fini(&res);
	}
	after = testutil_read(file);
	assert_string_equal(before, after);
	free(before);
	free(after);
}

static void
cmd_authorized_keys_test_links(void **state)
{
	struct cmd_authorized_keys_test *t = *state;
	const char *keys[] = {t->pub1, NULL};
	char file[500], ssh[400], victim[400], moved[400], *text;
	struct cmd_result res;

	snprintf(ssh, sizeof(ssh), "%s/.ssh", t->home);
	snprintf(file, sizeof(file), "%s/authorized_keys", ssh);
	snprintf(victim, sizeof(victim), "%s/victim", t->dir);
	assert_int_equal(testutil_write(victim, "root's file\n", 0644), 0);

	/* The user makes authorized_keys a link to a file of root's. */
	assert_int_equal(unlink(file), 0);
	assert_int_equal(symlink(victim, file), 0);
	assert_int_equal(cmd_authorized_keys_test_run(t, CMD_AUTHORIZED_KEYS_TEST_USER, keys, &res),
			 -1);
	assert_non_null(strstr(res.error, "symbolic link"));
	cmd_result_fini(&res);
	text = testutil_read(victim);
	assert_string_equal(text, "root's file\n");
	free(text);
	assert_int_equal(unlink(file), 0);

	/* Or a hard link to it (as if protected_hardlinks were off): not read, not reported. */
	assert_int_equal(link(victim, file), 0);
	assert_int_equal(cmd_authorized_keys_test_run(t, CMD_AUTHORIZED_KEYS_TEST_USER, keys, &res),
			 -1);
	assert_non_null(strstr(res.error, "hard links"));
	assert_null(res.result_json);
	cmd_result_fini(&res);
	text = testutil_read(victim);
	assert_string_equal(text, "root's file\n");
	free(text);
	assert_int_equal(unlink(file), 0);

	/* Or ~/.ssh a link to a folder of root's. */
	snprintf(moved, sizeof(moved), "%s/.ssh-real", t->home);
	assert_int_equal(rename(ssh, moved), 0);
	assert_int_equal(symlink(t->dir, ssh), 0);
	assert_int_equal(cmd_authorized_keys_test_run(t, CMD_AUTHORIZED_KEYS_TEST_USER, keys, &res),
			 -1);
	assert_non_null(strstr(res.error, "not a folder"));
	cmd_result_fini(&res);
	snprintf(file, sizeof(file), "%s/authorized_keys", t->dir);
	assert_int_equal(access(file, F_OK), -1);
	assert_int_equal(unlink(ssh), 0);
	assert_int_equal(rename(moved, ssh), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(cmd_authorized_keys_test_sync_login_revoke),
	    cmocka_unit_test(cmd_authorized_keys_test_outside_block),
	    cmocka_unit_test(cmd_authorized_keys_test_refused),
	    cmocka_unit_test(cmd_authorized_keys_test_links),
	};

	if (geteuid() != 0 || access("/usr/sbin/sshd", X_OK) != 0) {
		fprintf(stderr, "cmd_authorized_keys_test: needs root and sshd; skipped\n");
		return 77;
	}
	return cmocka_run_group_tests(tests, cmd_authorized_keys_test_setup,
				      cmd_authorized_keys_test_teardown);
}
