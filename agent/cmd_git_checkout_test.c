/*
 * cmd_git_checkout_test.c: git_checkout with real git: a local bare origin (clone, new commits,
 * a given commit, branch switch, local edits dropped, untracked kept, commit/message/author),
 * bad fields refused; over a real sshd with a deploy key and known hosts, a wrong host key refused;
 * a FIFO at .git/config refused at once (policy finding: it hung the agent).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <glob.h>

#include "testutil.h"

struct cmd_git_checkout_test {
	char dir[256];
	char origin[300], work[300], deploy[300], dest[300];
	char deploy_key_file[300];
	char *deploy_key, *known_hosts, *wrong_known_hosts;
	int port;
	pid_t sshd;
	uid_t uid;
	struct agent_config cfg;
};

static int
cmd_git_checkout_test_run(struct cmd_git_checkout_test *t, const char *url, const char *branch,
			  const char *commit, const char *dest, const char *key,
			  const char *known_hosts, struct cmd_result *res)
{
	Stoke__Command cmd = STOKE__COMMAND__INIT;
	Stoke__GitCheckoutCommand gc = STOKE__GIT_CHECKOUT_COMMAND__INIT;
	struct testutil_out out;
	struct cmd_ctx ctx;
	atomic_int cancel;

	gc.repo_url = (char *)url;
	gc.branch = (char *)branch;
	gc.commit = (char *)(commit != NULL ? commit : "");
	gc.dest = (char *)(dest != NULL ? dest : t->dest);
	gc.user = (char *)TESTUTIL_USER;
	gc.deploy_key = (char *)(key != NULL ? key : "");
	gc.known_hosts = (char *)(known_hosts != NULL ? known_hosts : "");
	cmd.kind_case = STOKE__COMMAND__KIND_GIT_CHECKOUT;
	cmd.git_checkout = &gc;
	atomic_init(&cancel, 0);
	testutil_out_init(&out);
	cmd_result_init(res);
	testutil_ctx(&ctx, &t->cfg, &out, &cancel);
	cmd_lookup(STOKE__COMMAND__KIND_GIT_CHECKOUT)->run(&ctx, &cmd, res);
	if (res->exit_code != 0)
		fprintf(stderr, "git_checkout: %s\n--- output:\n%s%s%s", res->error,
			testutil_out_str(&out, CMD_SYSTEM), testutil_out_str(&out, CMD_STDOUT),
			testutil_out_str(&out, CMD_STDERR));
	testutil_out_fini(&out);
	return res->exit_code;
}

/* git -C dir ARGS... as root (the test's own side); stdout chomped into *out. */
static int
cmd_git_checkout_test_git(const char *dir, char **out, ...)
{
	const char *argv[24] = {"git", "-C", dir};
	size_t n = 3;
	va_list ap;
	int rc;

	va_start(ap, out);
	while (n < 23 && (argv[n] = va_arg(ap, const char *)) != NULL)
		n++;
	va_end(ap);
	argv[n] = NULL;
	rc = testutil_run(argv, out);
	if (out != NULL)
		testutil_chomp(*out);
	return rc;
}

/* Commits file=text in the work repository and pushes the branch; returns the hash. */
static char *
cmd_git_checkout_test_commit(struct cmd_git_checkout_test *t, const char *branch, const char *file,
			     const char *text, const char *message)
{
	char path[400], *hash = NULL;

	snprintf(path, sizeof(path), "%s/%s", t->work, file);
	if (testutil_write(path, text, 0644) != 0 ||
	    cmd_git_checkout_test_git(t->work, NULL, "add", file, NULL) != 0 ||
	    cmd_git_checkout_test_git(t->work, NULL, "commit", "-q", "-m", message, NULL) != 0 ||
	    cmd_git_checkout_test_git(t->work, NULL, "push", "-q", "origin", branch, NULL) != 0 ||
	    cmd_git_checkout_test_git(t->work, &hash, "rev-parse", "HEAD", NULL) != 0)
		return NULL;
	return hash;
}

static int
cmd_git_checkout_test_setup(void **state)
{
	struct cmd_git_checkout_test *t = calloc(1, sizeof(*t));
	char p[PATH_MAX], *hash;
	struct passwd *pw;

	if (t == NULL || testutil_user() < 0 || testutil_tmpdir(p, "gitt") != 0 ||
	    strlen(p) >= sizeof(t->dir))
		return -1;
	memcpy(t->dir, p, strlen(p) + 1);
	pw = getpwnam(TESTUTIL_USER);
	/* This side's git (root) works in repositories another user owns: let it, through a
	 * HOME of its own (the agent's clean environment never passes it on). */
	snprintf(p, sizeof(p), "%s/root-home", t->dir);
	if (mkdir(p, 0700) != 0 || setenv("HOME", p, 1) != 0)
		return -1;
	snprintf(p, sizeof(p), "%s/root-home/.gitconfig", t->dir);
	if (testutil_write(p, "[safe]\n\tdirectory = *\n", 0600) != 0)
		return -1;
	t->uid = pw->pw_uid;
	snprintf(t->origin, sizeof(t->origin), "%s/origin.git", t->dir);
	snprintf(t->work, sizeof(t->work), "%s/work", t->dir);
	snprintf(t->deploy, sizeof(t->deploy), "%s/deploy", t->dir);
	snprintf(t->dest, sizeof(t->dest), "%s/deploy/app", t->dir);
	{
		const char *bare[] = {"git", "init", "-q", "--bare", "-b", "main", t->origin, NULL};
		const char *work[] = {"git", "init", "-q", "-b", "main", t->work, NULL};

		if (testutil_run(bare, NULL) != 0 || testutil_run(work, NULL) != 0)
			return -1;
	}
	if (cmd_git_checkout_test_git(t->work, NULL, "config", "user.name", "Test Author", NULL) !=
		0 ||
	    cmd_git_checkout_test_git(t->work, NULL, "config", "user.email", "author@example.com",
				      NULL) ||
	    cmd_git_checkout_test_git(t->work, NULL, "remote", "add", "origin", t->origin, NULL) !=
		0)
		return -1;
	if ((hash = cmd_git_checkout_test_commit(t, "main", "index.html", "version 1\n",
						 "First page")) == NULL)
		return -1;
	free(hash);
	/* origin belongs to the user (as a git server's repositories belong to its user; git
	 * refuses to serve another user's), and so does the deploy folder. */
	{
		const char *own[] = {"chown", "-R", TESTUTIL_USER, t->origin, NULL};

		if (testutil_run(own, NULL) != 0)
			return -1;
	}
	if (mkdir(t->deploy, 0755) != 0 || chown(t->deploy, pw->pw_uid, pw->pw_gid) != 0)
		return -1;
	if (testutil_cfg(&t->cfg, "default_user", TESTUTIL_USER, "exec_timeout", "60s", NULL) != 0)
		return -1;
	*state = t;
	return 0;
}

static int
cmd_git_checkout_test_teardown(void **state)
{
	struct cmd_git_checkout_test *t = *state;

	testutil_stop(t->sshd);
	testutil_rm_rf(t->dir);
	testutil_cfg_fini(&t->cfg);
	free(t->deploy_key);
	free(t->known_hosts);
	free(t->wrong_known_hosts);
	free(t);
	return 0;
}

static void
cmd_git_checkout_test_clone_and_follow(void **state)
{
	struct cmd_git_checkout_test *t = *state;
	char *head = NULL, *second, *first = NULL, *text, path[400], want[600];
	struct cmd_result res;
	struct stat st;

	assert_int_equal(cmd_git_checkout_test_git(t->work, &first, "rev-parse", "HEAD", NULL), 0);
	assert_int_equal(
	    cmd_git_checkout_test_run(t, t->origin, "main", NULL, NULL, NULL, NULL, &res), 0);
	snprintf(want, sizeof(want),
		 "{\"commit\":\"%s\",\"message\":\"First page\",\"author\":\"Test Author "
		 "<author@example.com>\",\"branch\":\"main\"}",
		 first);
	assert_string_equal(res.result_json, want);
	cmd_result_fini(&res);
	/* Checked out as the user. */
	snprintf(path, sizeof(path), "%s/index.html", t->dest);
	text = testutil_read(path);
	assert_string_equal(text, "version 1\n");
	free(text);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_uid, t->uid);

	/* A new commit upstream; a local edit and an untracked file on the server. */
	second =
	    cmd_git_checkout_test_commit(t, "main", "index.html", "version 2\n", "Second page");
	assert_non_null(second);
	assert_int_equal(testutil_write(path, "edited on the server\n", 0644), 0);
	snprintf(path, sizeof(path), "%s/.env", t->dest);
	assert_int_equal(testutil_write(path, "SECRET=1\n", 0600), 0);
	assert_int_equal(
	    cmd_git_checkout_test_run(t, t->origin, "main", NULL, NULL, NULL, NULL, &res), 0);
	assert_non_null(strstr(res.result_json, second));
	assert_non_null(strstr(res.result_json, "\"message\":\"Second page\""));
	cmd_result_fini(&res);
	assert_int_equal(cmd_git_checkout_test_git(t->dest, &head, "rev-parse", "HEAD", NULL), 0);
	assert_string_equal(head, second);
	free(head);
	snprintf(path, sizeof(path), "%s/index.html", t->dest);
	text = testutil_read(path);
	assert_string_equal(text, "version 2\n");
	free(text);
	snprintf(path, sizeof(path), "%s/.env", t->dest);
	assert_int_equal(access(path, F_OK), 0);

	/* A given commit (abbreviated, upper case is fine). */
	{
		char abbrev[13];

		for (int i = 0; i < 12; i++)
			abbrev[i] =
			    (char)(first[i] >= 'a' && first[i] <= 'f' ? first[i] - 32 : first[i]);
		abbrev[12] = '\0';
		assert_int_equal(
		    cmd_git_checkout_test_run(t, t->origin, "main", abbrev, NULL, NULL, NULL, &res),
		    0);
		assert_non_null(strstr(res.result_json, first));
		cmd_result_fini(&res);
		assert_int_equal(
		    cmd_git_checkout_test_git(t->dest, &head, "rev-parse", "HEAD", NULL), 0);
		assert_string_equal(head, first);
		free(head);
	}
	/* And back to the tip. */
	assert_int_equal(
	    cmd_git_checkout_test_run(t, t->origin, "main", NULL, NULL, NULL, NULL, &res), 0);
	assert_non_null(strstr(res.result_json, second));
	cmd_result_fini(&res);

	/* The repository moved: the next checkout fetches from the new place and origin
	 * says so (git remote set-url runs only when the URL changed). */
	{
		char moved[400], *third, *url = NULL;
		const char *copy[] = {"git", "clone", "-q", "--bare", t->origin, moved, NULL};
		const char *own[] = {"chown", "-R", TESTUTIL_USER, moved, NULL};

		snprintf(moved, sizeof(moved), "%s/moved.git", t->dir);
		assert_int_equal(testutil_run(copy, NULL), 0);
		assert_int_equal(cmd_git_checkout_test_git(t->work, NULL, "remote", "set-url",
							   "origin", moved, NULL),
				 0);
		third = cmd_git_checkout_test_commit(t, "main", "index.html", "version 3\n",
						     "Third page");
		assert_non_null(third);
		assert_int_equal(testutil_run(own, NULL), 0);
		assert_int_equal(
		    cmd_git_checkout_test_run(t, moved, "main", NULL, NULL, NULL, NULL, &res), 0);
		assert_non_null(strstr(res.result_json, third));
		cmd_result_fini(&res);
		assert_int_equal(cmd_git_checkout_test_git(t->dest, &url, "config", "--get",
							   "remote.origin.url", NULL),
				 0);
		assert_string_equal(url, moved);
		free(url);
		free(third);
		assert_int_equal(cmd_git_checkout_test_git(t->work, NULL, "remote", "set-url",
							   "origin", t->origin, NULL),
				 0);
		assert_int_equal(
		    cmd_git_checkout_test_git(t->work, NULL, "push", "-q", "origin", "main", NULL),
		    0);
	}
	free(first);
	free(second);
}

static void
cmd_git_checkout_test_branch_switch(void **state)
{
	struct cmd_git_checkout_test *t = *state;
	char *hash, *head = NULL;
	struct cmd_result res;

	assert_int_equal(
	    cmd_git_checkout_test_git(t->work, NULL, "checkout", "-q", "-b", "feature/x", NULL), 0);
	hash = cmd_git_checkout_test_commit(t, "feature/x", "feature.txt", "new\n", "Feature work");
	assert_non_null(hash);
	assert_int_equal(cmd_git_checkout_test_git(t->work, NULL, "checkout", "-q", "main", NULL),
			 0);
	assert_int_equal(
	    cmd_git_checkout_test_run(t, t->origin, "feature/x", NULL, NULL, NULL, NULL, &res), 0);
	assert_non_null(strstr(res.result_json, hash));
	assert_non_null(strstr(res.result_json, "\"branch\":\"feature/x\""));
	cmd_result_fini(&res);
	assert_int_equal(
	    cmd_git_checkout_test_git(t->dest, &head, "rev-parse", "--abbrev-ref", "HEAD", NULL),
	    0);
	assert_string_equal(head, "feature/x");
	free(head);
	free(hash);

	/* A branch that is not there: git's own words. */
	assert_int_equal(
	    cmd_git_checkout_test_run(t, t->origin, "no-such-branch", NULL, NULL, NULL, NULL, &res),
	    -1);
	assert_non_null(strstr(res.error, "no-such-branch"));
	assert_non_null(strstr(res.error, "git fetch failed"));
	cmd_result_fini(&res);
}

static void
cmd_git_checkout_test_refused(void **state)
{
	struct cmd_git_checkout_test *t = *state;
	static const char *const bad_branches[] = {"main;rm -rf /", "-x", "a..b",   "a b", "HEAD",
						   "x.lock",	    "",	  "ma\nin", "a~1", "a:b"};
	static const char *const bad_urls[] = {
	    "ext::sh -c touch% /tmp/stoke-pwned",
	    "--upload-pack=touch /tmp/stoke-pwned",
	    "-uhttps://example.com/x",
	    "http://example.com/repo.git",
	    "https://user:pass@example.com/repo.git",
	    "ssh://-oProxyCommand=touch /tmp/x/r",
	    "relative/path",
	    "",
	    "/tmp/x\n/y",
	};
	static const char *const bad_commits[] = {
	    "abc", "xyz1234", "0123456789abcdef0123456789abcdef01234567ff", "1234567 "};
	static const char *const bad_dests[] = {"relative", "/", "/tmp/../etc", "/tmp//x", ""};
	struct cmd_result res;

	for (size_t i = 0; i < sizeof(bad_branches) / sizeof(bad_branches[0]); i++) {
		assert_int_equal(cmd_git_checkout_test_run(t, t->origin, bad_branches[i], NULL,
							   NULL, NULL, NULL, &res),
				 -1);
		assert_non_null(strstr(res.error, "branch"));
		cmd_result_fini(&res);
	}
	/* A legal branch name full of shell syntax reaches git as it is, never a shell. */
	assert_int_equal(
	    cmd_git_checkout_test_run(t, t->origin, "$(id)", NULL, NULL, NULL, NULL, &res), -1);
	assert_non_null(strstr(res.error, "refs/heads/$(id)"));
	cmd_result_fini(&res);
	for (size_t i = 0; i < sizeof(bad_urls) / sizeof(bad_urls[0]); i++) {
		assert_int_equal(
		    cmd_git_checkout_test_run(t, bad_urls[i], "main", NULL, NULL, NULL, NULL, &res),
		    -1);
		assert_non_null(strstr(res.error, "repo_url"));
		cmd_result_fini(&res);
	}
	for (size_t i = 0; i < sizeof(bad_commits) / sizeof(bad_commits[0]); i++) {
		assert_int_equal(cmd_git_checkout_test_run(t, t->origin, "main", bad_commits[i],
							   NULL, NULL, NULL, &res),
				 -1);
		assert_non_null(strstr(res.error, "commit"));
		cmd_result_fini(&res);
	}
	for (size_t i = 0; i < sizeof(bad_dests) / sizeof(bad_dests[0]); i++) {
		assert_int_equal(cmd_git_checkout_test_run(t, t->origin, "main", NULL, bad_dests[i],
							   NULL, NULL, &res),
				 -1);
		assert_non_null(strstr(res.error, "dest"));
		cmd_result_fini(&res);
	}
	assert_int_equal(
	    cmd_git_checkout_test_run(t, t->origin, "main", NULL, NULL, "not a key", NULL, &res),
	    -1);
	assert_non_null(strstr(res.error, "deploy_key"));
	cmd_result_fini(&res);
	assert_int_equal(access("/tmp/stoke-pwned", F_OK), -1);
}

/* How many deploy-key temp folders exist now. */
static size_t
cmd_git_checkout_test_tmpdirs(void)
{
	glob_t g;
	size_t n;

	if (glob("/tmp/stoke-git-??????", 0, NULL, &g) != 0)
		return 0;
	n = g.gl_pathc;
	globfree(&g);
	return n;
}

/* sshd on a free port letting TESTUTIL_USER in with the deploy key only. */
static int
cmd_git_checkout_test_sshd(struct cmd_git_checkout_test *t)
{
	char hostkey[300], wrongkey[300], conf[2048], confpath[300], log[300], pidfile[300];
	char akfile[300], p[400], *hostpub, *wrongpub, *pub;
	const char *mod[] = {"usermod", "-p", "*", TESTUTIL_USER, NULL};

	snprintf(hostkey, sizeof(hostkey), "%s/host_key", t->dir);
	snprintf(wrongkey, sizeof(wrongkey), "%s/other_host_key", t->dir);
	snprintf(t->deploy_key_file, sizeof(t->deploy_key_file), "%s/deploy_key", t->dir);
	{
		const char *k0[] = {"ssh-keygen", "-q", "-t",	 "ed25519", "-N",
				    "",		  "-f", hostkey, NULL};
		const char *k1[] = {"ssh-keygen", "-q", "-t",	  "ed25519", "-N",
				    "",		  "-f", wrongkey, NULL};
		const char *k2[] = {"ssh-keygen", "-q",		"-t", "ed25519",	  "-N", "",
				    "-C",	  "deploy key", "-f", t->deploy_key_file, NULL};

		if (testutil_run(k0, NULL) != 0 || testutil_run(k1, NULL) != 0 ||
		    testutil_run(k2, NULL) != 0)
			return -1;
	}
	/* Without PAM, sshd refuses an account whose password field says locked ("!"). */
	if (testutil_run_retry(mod) != 0)
		return -1;
	t->deploy_key = testutil_read(t->deploy_key_file);
	snprintf(p, sizeof(p), "%s.pub", t->deploy_key_file);
	pub = testutil_read(p);
	snprintf(akfile, sizeof(akfile), "%s/git_authorized_keys", t->dir);
	if (t->deploy_key == NULL || pub == NULL || testutil_write(akfile, pub, 0644) != 0)
		return -1;
	free(pub);
	if ((t->port = testutil_free_port()) <= 0)
		return -1;
	snprintf(p, sizeof(p), "%s.pub", hostkey);
	hostpub = testutil_chomp(testutil_read(p));
	snprintf(p, sizeof(p), "%s.pub", wrongkey);
	wrongpub = testutil_chomp(testutil_read(p));
	if (hostpub == NULL || wrongpub == NULL ||
	    asprintf(&t->known_hosts, "[127.0.0.1]:%d %s\n", t->port, hostpub) < 0 ||
	    asprintf(&t->wrong_known_hosts, "[127.0.0.1]:%d %s\n", t->port, wrongpub) < 0)
		return -1;
	free(hostpub);
	free(wrongpub);
	mkdir("/run/sshd", 0755);
	snprintf(pidfile, sizeof(pidfile), "%s/sshd.pid", t->dir);
	snprintf(conf, sizeof(conf),
		 "ListenAddress 127.0.0.1\n"
		 "Port %d\n"
		 "HostKey %s\n"
		 "PidFile %s\n"
		 "AuthorizedKeysFile %s\n"
		 "UsePAM no\n"
		 "StrictModes no\n"
		 "PasswordAuthentication no\n"
		 "KbdInteractiveAuthentication no\n"
		 "AllowUsers " TESTUTIL_USER "\n",
		 t->port, hostkey, pidfile, akfile);
	snprintf(confpath, sizeof(confpath), "%s/sshd_config", t->dir);
	if (testutil_write(confpath, conf, 0644) != 0)
		return -1;
	snprintf(log, sizeof(log), "%s/sshd.log", t->dir);
	{
		const char *argv[] = {"/usr/sbin/sshd", "-D", "-e", "-f", confpath, NULL};

		t->sshd = testutil_spawn(argv, log);
	}
	return t->sshd > 0 && testutil_wait_port(t->port, 15000) == 0 ? 0 : -1;
}

static void
cmd_git_checkout_test_ssh_deploy_key(void **state)
{
	struct cmd_git_checkout_test *t = *state;
	char url[600], dest[400], *head = NULL, *tip = NULL;
	struct cmd_result res;
	size_t before;

	assert_int_equal(cmd_git_checkout_test_sshd(t), 0);
	before = cmd_git_checkout_test_tmpdirs();
	snprintf(url, sizeof(url), "ssh://" TESTUTIL_USER "@127.0.0.1:%d%s", t->port, t->origin);
	snprintf(dest, sizeof(dest), "%s/deploy/over-ssh", t->dir);

	/* A host key other than the server's: refused before any login. */
	assert_int_equal(cmd_git_checkout_test_run(t, url, "main", NULL, dest, t->deploy_key,
						   t->wrong_known_hosts, &res),
			 -1);
	assert_non_null(strstr(res.error, "Host key verification failed"));
	cmd_result_fini(&res);
	assert_int_equal(access(dest, F_OK), -1);
	/* The right host key but no deploy key: the user has no key of its own. */
	assert_int_equal(
	    cmd_git_checkout_test_run(t, url, "main", NULL, dest, NULL, t->known_hosts, &res), -1);
	assert_non_null(strstr(res.error, "Permission denied"));
	cmd_result_fini(&res);

	assert_int_equal(cmd_git_checkout_test_run(t, url, "main", NULL, dest, t->deploy_key,
						   t->known_hosts, &res),
			 0);
	cmd_result_fini(&res);
	assert_int_equal(cmd_git_checkout_test_git(dest, &head, "rev-parse", "HEAD", NULL), 0);
	assert_int_equal(cmd_git_checkout_test_git(t->origin, &tip, "rev-parse", "main", NULL), 0);
	assert_string_equal(head, tip);
	free(head);
	free(tip);
	/* Fetching again over ssh. */
	assert_int_equal(cmd_git_checkout_test_run(t, url, "main", NULL, dest, t->deploy_key,
						   t->known_hosts, &res),
			 0);
	cmd_result_fini(&res);
	/* The key's temp folder is gone each time. */
	assert_int_equal(cmd_git_checkout_test_tmpdirs(), before);
}

struct cmd_git_checkout_test_bg {
	struct cmd_git_checkout_test *t;
	const char *dest;
	struct cmd_result res;
	atomic_int done;
};

static void *
cmd_git_checkout_test_bg_run(void *arg)
{
	struct cmd_git_checkout_test_bg *bg = arg;

	cmd_git_checkout_test_run(bg->t, bg->t->origin, "main", NULL, bg->dest, NULL, NULL,
				  &bg->res);
	atomic_store(&bg->done, 1);
	return NULL;
}

/* Finding: the agent read dest/.git/config as root without O_NOFOLLOW; a FIFO put there by
 * the deploy user hung the command (and the agent's thread) for good. */
static void
cmd_git_checkout_test_config_fifo(void **state)
{
	struct cmd_git_checkout_test *t = *state;
	struct cmd_git_checkout_test_bg bg;
	char dest[400], config[450];
	pthread_t th;
	int64_t end;
	int fd;

	snprintf(dest, sizeof(dest), "%s/fifo-app", t->deploy);
	memset(&bg, 0, sizeof(bg));
	bg.t = t;
	bg.dest = dest;
	assert_int_equal(
	    cmd_git_checkout_test_run(t, t->origin, "main", NULL, dest, NULL, NULL, &bg.res), 0);
	cmd_result_fini(&bg.res);
	snprintf(config, sizeof(config), "%s/.git/config", dest);
	assert_int_equal(unlink(config), 0);
	assert_int_equal(mkfifo(config, 0644), 0);
	assert_int_equal(chown(config, t->uid, (gid_t)-1), 0);

	atomic_init(&bg.done, 0);
	assert_int_equal(pthread_create(&th, NULL, cmd_git_checkout_test_bg_run, &bg), 0);
	end = time_mono_ms() + 20000;
	while (!atomic_load(&bg.done) && time_mono_ms() < end)
		poll(NULL, 0, 20);
	if (!atomic_load(&bg.done)) {
		/* Let the stuck reader go (a writer opens the FIFO) before failing. */
		if ((fd = open(config, O_WRONLY | O_NONBLOCK)) != -1)
			close(fd);
		pthread_join(th, NULL);
		cmd_result_fini(&bg.res);
		fail_msg("git_checkout hung on a FIFO at .git/config for 20 s");
	}
	pthread_join(th, NULL);
	assert_int_equal(bg.res.exit_code, -1);
	if (strstr(bg.res.error, "not a regular file") == NULL)
		fail_msg("error: %s", bg.res.error);
	cmd_result_fini(&bg.res);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(cmd_git_checkout_test_clone_and_follow),
	    cmocka_unit_test(cmd_git_checkout_test_branch_switch),
	    cmocka_unit_test(cmd_git_checkout_test_refused),
	    cmocka_unit_test(cmd_git_checkout_test_config_fifo),
	    cmocka_unit_test(cmd_git_checkout_test_ssh_deploy_key),
	};

	if (geteuid() != 0 || access("/usr/bin/git", X_OK) != 0) {
		fprintf(stderr, "cmd_git_checkout_test: needs root and git; skipped\n");
		return 77;
	}
	return cmocka_run_group_tests(tests, cmd_git_checkout_test_setup,
				      cmd_git_checkout_test_teardown);
}
