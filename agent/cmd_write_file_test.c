/*
 * cmd_write_file_test.c: unit tests of the write_file command (cmd_write_file.c) on a
 * private folder tree: writes inside the roots with owner and mode, refusals outside
 * them, of ".." and unnormalised paths, of links leading out, and the atomic replace;
 * and the root policy's findings (policy.c): no set-id files, no root-owned files without
 * allow_root, no other user's authorized_keys, no link of a non-root user followed for
 * root, nothing written into nginx's configuration.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>

#include "testutil.h"

#define CMD_WRITE_FILE_TEST_KEYS_USER "stoke-test-keys"

struct cmd_write_file_test {
	char dir[256];
	char roots[900];
	struct agent_config cfg;      /* allow_root off (the default) */
	struct agent_config cfg_root; /* allow_root on, allow_setuid off */
	int root;		      /* 1: runs use cfg_root */
};

static char cmd_write_file_test_path[PATH_MAX];

/* dir + "/" + rel, in a static buffer. */
static const char *
cmd_write_file_test_at(struct cmd_write_file_test *t, const char *rel)
{
	snprintf(cmd_write_file_test_path, sizeof(cmd_write_file_test_path), "%s/%s", t->dir, rel);
	return cmd_write_file_test_path;
}

static int
cmd_write_file_test_run(struct cmd_write_file_test *t, const char *path, const char *content,
			const char *owner, const char *group, unsigned mode, struct cmd_result *res)
{
	Stoke__Command cmd = STOKE__COMMAND__INIT;
	Stoke__WriteFileCommand wf = STOKE__WRITE_FILE_COMMAND__INIT;
	struct testutil_out out;
	struct cmd_ctx ctx;
	atomic_int cancel;

	wf.path = (char *)path;
	wf.content.data = (uint8_t *)(uintptr_t)content;
	wf.content.len = strlen(content);
	wf.owner = (char *)owner;
	wf.group = (char *)group;
	wf.mode = mode;
	cmd.kind_case = STOKE__COMMAND__KIND_WRITE_FILE;
	cmd.write_file = &wf;
	atomic_init(&cancel, 0);
	testutil_out_init(&out);
	cmd_result_init(res);
	testutil_ctx(&ctx, t->root ? &t->cfg_root : &t->cfg, &out, &cancel);
	cmd_lookup(STOKE__COMMAND__KIND_WRITE_FILE)->run(&ctx, &cmd, res);
	testutil_out_fini(&out);
	return res->exit_code;
}

/* Runs a write that must be refused with text in the error, leaving no file at path. */
static void
cmd_write_file_test_refused_g(struct cmd_write_file_test *t, const char *path, const char *owner,
			      const char *group, unsigned mode, const char *why)
{
	struct cmd_result res;
	struct stat st;
	int existed = lstat(path, &st) == 0;

	assert_int_equal(cmd_write_file_test_run(t, path, "x", owner, group, mode, &res), -1);
	if (strstr(res.error, why) == NULL)
		fail_msg("%s: error \"%s\" does not say \"%s\"", path, res.error, why);
	assert_null(res.result_json);
	if (!existed)
		assert_int_equal(lstat(path, &st), -1);
	cmd_result_fini(&res);
}

static void
cmd_write_file_test_refused(struct cmd_write_file_test *t, const char *path, const char *owner,
			    unsigned mode, const char *why)
{
	cmd_write_file_test_refused_g(t, path, owner, "", mode, why);
}

static int
cmd_write_file_test_setup(void **state)
{
	static const char *const dirs[] = {"www", "etc", "outside", "www/site", "home"};
	struct cmd_write_file_test *t = calloc(1, sizeof(*t));
	char p[PATH_MAX];
	long uid;

	if (t == NULL || (uid = testutil_user()) < 0 || testutil_tmpdir(p, "wf") != 0 ||
	    strlen(p) >= sizeof(t->dir))
		return -1;
	memcpy(t->dir, p, strlen(p) + 1);
	snprintf(t->roots, sizeof(t->roots), "%s/www:%s/etc:%s/home", t->dir, t->dir, t->dir);
	if (testutil_cfg(&t->cfg, "write_roots", t->roots, NULL) != 0 ||
	    testutil_cfg(&t->cfg_root, "write_roots", t->roots, "allow_root", "yes", NULL) != 0)
		return -1;
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", t->dir, dirs[i]);
		if (mkdir(p, 0755) != 0)
			return -1;
	}
	/* The deploy user's site folder: files there are written as that user. */
	snprintf(p, sizeof(p), "%s/www/site", t->dir);
	if (chown(p, (uid_t)uid, (gid_t)-1) != 0)
		return -1;
	*state = t;
	return 0;
}

static int
cmd_write_file_test_teardown(void **state)
{
	struct cmd_write_file_test *t = *state;

	testutil_rm_rf(t->dir);
	testutil_cfg_fini(&t->cfg);
	testutil_cfg_fini(&t->cfg_root);
	free(t);
	return 0;
}

static void
cmd_write_file_test_inside(void **state)
{
	struct cmd_write_file_test *t = *state;
	struct passwd *pw = getpwnam(TESTUTIL_USER);
	struct cmd_result res;
	struct stat st;
	char path[PATH_MAX], *text;

	assert_non_null(pw);
	snprintf(path, sizeof(path), "%s", cmd_write_file_test_at(t, "www/site/a.txt"));
	assert_int_equal(
	    cmd_write_file_test_run(t, path, "hello", TESTUTIL_USER, TESTUTIL_USER, 0640, &res), 0);
	assert_string_equal(res.error, "");
	assert_non_null(res.result_json);
	assert_non_null(strstr(res.result_json, "\"sha256\":\"2cf24dba5fb0a30e26e83b2ac5b9e29e1b"
						"161e5c1fa7425e73043362938b9824\""));
	assert_non_null(strstr(res.result_json, "\"size\":5"));
	cmd_result_fini(&res);
	text = testutil_read(path);
	assert_string_equal(text, "hello");
	free(text);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(st.st_uid, pw->pw_uid);
	assert_int_equal(st.st_gid, pw->pw_gid);

	/* As root, with allow_root: root's file in root's folder. */
	t->root = 1;
	snprintf(path, sizeof(path), "%s", cmd_write_file_test_at(t, "etc/tool"));
	assert_int_equal(cmd_write_file_test_run(t, path, "#!/bin/sh\n", "root", "", 0755, &res),
			 0);
	t->root = 0;
	cmd_result_fini(&res);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755);
	assert_int_equal(st.st_uid, 0);

	/* A new file without a mode gets 0644, and without an owner its folder's owner. */
	snprintf(path, sizeof(path), "%s", cmd_write_file_test_at(t, "www/site/plain"));
	assert_int_equal(cmd_write_file_test_run(t, path, "", "", "", 0, &res), 0);
	cmd_result_fini(&res);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	assert_int_equal(st.st_size, 0);
	assert_int_equal(st.st_uid, pw->pw_uid);
}

static void
cmd_write_file_test_keeps_owner_and_mode(void **state)
{
	struct cmd_write_file_test *t = *state;
	struct passwd *pw = getpwnam(TESTUTIL_USER);
	struct cmd_result res;
	struct stat st;
	char path[PATH_MAX], *text;

	snprintf(path, sizeof(path), "%s", cmd_write_file_test_at(t, "www/site/.env"));
	assert_int_equal(testutil_write(path, "OLD=1\n", 0600), 0);
	assert_int_equal(chown(path, pw->pw_uid, pw->pw_gid), 0);
	assert_int_equal(cmd_write_file_test_run(t, path, "NEW=2\n", "", "", 0, &res), 0);
	cmd_result_fini(&res);
	text = testutil_read(path);
	assert_string_equal(text, "NEW=2\n");
	free(text);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_uid, pw->pw_uid);
}

static void
cmd_write_file_test_atomic(void **state)
{
	struct cmd_write_file_test *t = *state;
	struct cmd_result res;
	struct stat before, after;
	char path[PATH_MAX + 16], dir[PATH_MAX], old[16] = {0};
	struct dirent *de;
	DIR *d;
	int fd;

	snprintf(dir, sizeof(dir), "%s", cmd_write_file_test_at(t, "etc"));
	snprintf(path, sizeof(path), "%s/app.conf", dir);
	assert_int_equal(testutil_write(path, "version 1\n", 0644), 0);
	assert_int_equal(stat(path, &before), 0);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	t->root = 1; /* root's file in root's folder */
	assert_int_equal(cmd_write_file_test_run(t, path, "version 2\n", "", "", 0644, &res), 0);
	t->root = 0;
	cmd_result_fini(&res);
	/* Replaced by rename: a reader of the old file still sees it whole. */
	assert_int_equal(stat(path, &after), 0);
	assert_int_not_equal(before.st_ino, after.st_ino);
	assert_int_equal(read(fd, old, sizeof(old) - 1), 10);
	assert_string_equal(old, "version 1\n");
	close(fd);
	/* No temp file left beside it. */
	d = opendir(dir);
	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		assert_null(strstr(de->d_name, ".tmp"));
	closedir(d);
}

static void
cmd_write_file_test_outside_and_unnormalised(void **state)
{
	struct cmd_write_file_test *t = *state;
	char p[PATH_MAX];

	cmd_write_file_test_refused(t, cmd_write_file_test_at(t, "outside/x"), "", 0,
				    "not under one of the allowed folders");
	cmd_write_file_test_refused(t, "/etc/stoke-write-file-test", "", 0,
				    "not under one of the allowed folders");
	/* A root itself is not a file to write. */
	snprintf(p, sizeof(p), "%s/www", t->dir);
	cmd_write_file_test_refused(t, p, "", 0, "not under one of the allowed folders");
	/* A prefix of a root's name is not inside it. */
	cmd_write_file_test_refused(t, cmd_write_file_test_at(t, "wwwx"), "", 0,
				    "not under one of the allowed folders");
	cmd_write_file_test_refused(t, cmd_write_file_test_at(t, "www/../outside/x"), "", 0,
				    "normalised");
	cmd_write_file_test_refused(t, cmd_write_file_test_at(t, "www/site/.."), "", 0,
				    "normalised");
	cmd_write_file_test_refused(t, cmd_write_file_test_at(t, "www/./x"), "", 0, "normalised");
	cmd_write_file_test_refused(t, cmd_write_file_test_at(t, "www//x"), "", 0, "normalised");
	cmd_write_file_test_refused(t, cmd_write_file_test_at(t, "www/x/"), "", 0, "normalised");
	cmd_write_file_test_refused(t, "www/x", "", 0, "absolute");
	cmd_write_file_test_refused(t, cmd_write_file_test_at(t, "www/a\nb"), "", 0, "control");
	cmd_write_file_test_refused(t, cmd_write_file_test_at(t, "www/no-such-dir/x"), "", 0,
				    "No such file");
	cmd_write_file_test_refused(t, cmd_write_file_test_at(t, "www/m"), "", 010000, "07777");
	cmd_write_file_test_refused(t, cmd_write_file_test_at(t, "www/o"), "no-such-user-x", 0644,
				    "does not exist");
	cmd_write_file_test_refused(t, cmd_write_file_test_at(t, "www/o"), "bad;user", 0644,
				    "owner");
	/* An existing folder is not replaced by a file. */
	cmd_write_file_test_refused(t, cmd_write_file_test_at(t, "www/site"), "", 0, "a folder");
}

static void
cmd_write_file_test_links(void **state)
{
	struct cmd_write_file_test *t = *state;
	struct cmd_result res;
	char link[PATH_MAX], target[PATH_MAX], *text;
	struct stat st;

	/* A folder link leading out of the roots. */
	snprintf(link, sizeof(link), "%s/www/escape", t->dir);
	snprintf(target, sizeof(target), "%s/outside", t->dir);
	assert_int_equal(symlink(target, link), 0);
	cmd_write_file_test_refused(t, cmd_write_file_test_at(t, "www/escape/pwned"), "", 0,
				    "is really");
	assert_int_equal(lstat(cmd_write_file_test_at(t, "outside/pwned"), &st), -1);
	/* Deeper: a link to "/" */
	snprintf(link, sizeof(link), "%s/www/slash", t->dir);
	assert_int_equal(symlink("/", link), 0);
	cmd_write_file_test_refused(t, cmd_write_file_test_at(t, "www/slash/tmp/stoke-pwned"), "",
				    0, "is really");

	/* A file link: refused, its target untouched. */
	snprintf(target, sizeof(target), "%s/outside/secret", t->dir);
	assert_int_equal(testutil_write(target, "secret\n", 0600), 0);
	snprintf(link, sizeof(link), "%s/www/site/secret-link", t->dir);
	assert_int_equal(symlink(target, link), 0);
	cmd_write_file_test_refused(t, link, "", 0, "symbolic link");
	text = testutil_read(target);
	assert_string_equal(text, "secret\n");
	free(text);
	assert_int_equal(lstat(link, &st), 0);
	assert_true(S_ISLNK(st.st_mode));

	/* A link that stays inside the roots (a deploy's "current") is fine. */
	snprintf(link, sizeof(link), "%s/www/current", t->dir);
	snprintf(target, sizeof(target), "%s/www/site", t->dir);
	assert_int_equal(symlink(target, link), 0);
	assert_int_equal(cmd_write_file_test_run(t, cmd_write_file_test_at(t, "www/current/b.txt"),
						 "via link", "", "", 0644, &res),
			 0);
	cmd_result_fini(&res);
	text = testutil_read(cmd_write_file_test_at(t, "www/site/b.txt"));
	assert_string_equal(text, "via link");
	free(text);
	/* Also from one root into another (root's link; a root-owned file: allow_root). */
	snprintf(link, sizeof(link), "%s/www/conf", t->dir);
	snprintf(target, sizeof(target), "%s/etc", t->dir);
	assert_int_equal(symlink(target, link), 0);
	cmd_write_file_test_refused(t, cmd_write_file_test_at(t, "www/conf/c.txt"), "", 0644,
				    "belong to root");
	t->root = 1;
	assert_int_equal(cmd_write_file_test_run(t, cmd_write_file_test_at(t, "www/conf/c.txt"),
						 "c", "", "", 0644, &res),
			 0);
	t->root = 0;
	cmd_result_fini(&res);
	assert_int_equal(lstat(cmd_write_file_test_at(t, "etc/c.txt"), &st), 0);
}

/* Finding: 6 of 6 set-user-ID / set-group-ID files asked for were made (root's too). */
static void
cmd_write_file_test_setid_refused(void **state)
{
	static const struct {
		const char *rel, *owner, *group;
		unsigned mode;
	} cases[] = {
	    {"etc/suid-root", "root", "", 04755},
	    {"etc/sgid-root", "root", "root", 02755},
	    {"etc/both-root", "root", "root", 06755},
	    {"etc/suid-default", "", "", 04711},
	    {"www/site/suid-user", TESTUTIL_USER, "", 04755},
	    {"www/site/sgid-user", TESTUTIL_USER, "", 02750},
	};
	struct cmd_write_file_test *t = *state;
	struct agent_config setuid_cfg;
	struct cmd_result res;
	struct stat st;
	char path[PATH_MAX];

	for (int root = 0; root < 2; root++) {
		t->root = root;
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
			cmd_write_file_test_refused_g(t, cmd_write_file_test_at(t, cases[i].rel),
						      cases[i].owner, cases[i].group, cases[i].mode,
						      "set-user-ID or set-group-ID");
	}
	t->root = 0;
	/* Replacing a set-id file without naming a mode would keep its mode: refused too. */
	snprintf(path, sizeof(path), "%s", cmd_write_file_test_at(t, "www/site/kept"));
	assert_int_equal(testutil_write(path, "old\n", 0644), 0);
	assert_int_equal(
	    chown(path, getpwnam(TESTUTIL_USER)->pw_uid, getpwnam(TESTUTIL_USER)->pw_gid), 0);
	assert_int_equal(chmod(path, 04755), 0);
	cmd_write_file_test_refused(t, path, "", 0, "set-user-ID");

	/* allow_setuid (with allow_root) is the only way. */
	assert_int_equal(testutil_cfg(&setuid_cfg, "write_roots", t->roots, "allow_root", "yes",
				      "allow_setuid", "yes", NULL),
			 0);
	{
		struct agent_config keep = t->cfg_root;

		t->cfg_root = setuid_cfg;
		t->root = 1;
		snprintf(path, sizeof(path), "%s", cmd_write_file_test_at(t, "etc/suid-allowed"));
		assert_int_equal(
		    cmd_write_file_test_run(t, path, "#!/bin/sh\n", "root", "", 04755, &res), 0);
		cmd_result_fini(&res);
		t->root = 0;
		t->cfg_root = keep;
	}
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 04755);
	testutil_cfg_fini(&setuid_cfg);
}

/* Finding: write_file made root-owned files with allow_root off. */
static void
cmd_write_file_test_root_owned_refused(void **state)
{
	struct cmd_write_file_test *t = *state;
	char path[PATH_MAX], *text;

	cmd_write_file_test_refused(t, cmd_write_file_test_at(t, "etc/named-root"), "root", 0644,
				    "allow_root is off");
	/* No owner named in root's folder: it would be root's. */
	cmd_write_file_test_refused(t, cmd_write_file_test_at(t, "etc/unnamed"), "", 0644,
				    "belong to root");
	cmd_write_file_test_refused_g(t, cmd_write_file_test_at(t, "www/site/group-root"),
				      TESTUTIL_USER, "root", 0644, "group root");
	/* An existing root-owned file is not replaced either. */
	snprintf(path, sizeof(path), "%s", cmd_write_file_test_at(t, "etc/existing"));
	assert_int_equal(testutil_write(path, "root's\n", 0644), 0);
	cmd_write_file_test_refused(t, path, "", 0, "belong to root");
	/* Nor by a user's file in root's folder: the user may not write there. */
	cmd_write_file_test_refused(t, path, TESTUTIL_USER, 0644, "Permission denied");
	text = testutil_read(path);
	assert_string_equal(text, "root's\n");
	free(text);
}

/* Finding: write_file replaced another user's ~/.ssh/authorized_keys. */
static void
cmd_write_file_test_other_users_keys(void **state)
{
	struct cmd_write_file_test *t = *state;
	char home[PATH_MAX], ssh[PATH_MAX + 8], keys[PATH_MAX + 32], *text;
	const char *add[] = {"useradd", "-M", "-r", "-s",
			     "/bin/sh", "-d", home, CMD_WRITE_FILE_TEST_KEYS_USER,
			     NULL};
	const char *del[] = {"userdel", CMD_WRITE_FILE_TEST_KEYS_USER, NULL};
	struct passwd *pw;

	snprintf(home, sizeof(home), "%s/home/keys", t->dir);
	if (getpwnam(CMD_WRITE_FILE_TEST_KEYS_USER) != NULL)
		(void)testutil_run_retry(del);
	assert_int_equal(testutil_run_retry(add), 0);
	pw = getpwnam(CMD_WRITE_FILE_TEST_KEYS_USER);
	assert_non_null(pw);
	snprintf(ssh, sizeof(ssh), "%s/.ssh", home);
	snprintf(keys, sizeof(keys), "%s/authorized_keys", ssh);
	assert_int_equal(mkdir(home, 0755), 0);
	assert_int_equal(mkdir(ssh, 0700), 0);
	assert_int_equal(testutil_write(keys, "ssh-ed25519 AAAA owner\n", 0600), 0);
	assert_int_equal(chown(home, pw->pw_uid, pw->pw_gid), 0);
	assert_int_equal(chown(ssh, pw->pw_uid, pw->pw_gid), 0);
	assert_int_equal(chown(keys, pw->pw_uid, pw->pw_gid), 0);

	/* The deploy user (here the test user) cannot enter another user's folder... */
	cmd_write_file_test_refused(t, keys, TESTUTIL_USER, 0600, "belongs to uid");
	/* ...and no one's keys are write_file's: the authorized_keys command's alone. */
	cmd_write_file_test_refused(t, keys, "", 0, "authorized_keys");
	cmd_write_file_test_refused(t, keys, CMD_WRITE_FILE_TEST_KEYS_USER, 0600,
				    "authorized_keys");
	t->root = 1;
	cmd_write_file_test_refused(t, keys, "root", 0600, "belongs to uid");
	t->root = 0;
	text = testutil_read(keys);
	assert_string_equal(text, "ssh-ed25519 AAAA owner\n");
	free(text);
	assert_int_equal(testutil_run_retry(del), 0);
}

/* Finding: a link the deploy user places under a write root redirected root's writes. */
static void
cmd_write_file_test_users_link_not_followed(void **state)
{
	struct cmd_write_file_test *t = *state;
	char link[PATH_MAX], target[PATH_MAX + 16];
	struct stat st;
	long uid = testutil_user();

	/* In the deploy user's own folder, a link to root's folder etc (another root). */
	snprintf(link, sizeof(link), "%s/www/site/cfg", t->dir);
	snprintf(target, sizeof(target), "%s/etc", t->dir);
	assert_int_equal(symlink(target, link), 0);
	assert_int_equal(lchown(link, (uid_t)uid, (gid_t)-1), 0);

	/* As root: the walk stops at the user's folder and never reaches the link. */
	t->root = 1;
	cmd_write_file_test_refused(t, cmd_write_file_test_at(t, "www/site/cfg/planted.conf"),
				    "root", 0644, "belongs to uid");
	cmd_write_file_test_refused(t, cmd_write_file_test_at(t, "www/site/cfg/planted.conf"), "",
				    0644, "Permission denied");
	t->root = 0;
	/* As the user: followed, but written as the user, who may not write in root's folder. */
	cmd_write_file_test_refused(t, cmd_write_file_test_at(t, "www/site/cfg/planted.conf"), "",
				    0644, "Permission denied");
	snprintf(target, sizeof(target), "%s/etc/planted.conf", t->dir);
	assert_int_equal(lstat(target, &st), -1);

	/* A folder of another non-root user on the way is refused for root too. */
	snprintf(link, sizeof(link), "%s/www/site/sub", t->dir);
	assert_int_equal(mkdir(link, 0755), 0);
	t->root = 1;
	cmd_write_file_test_refused(t, cmd_write_file_test_at(t, "www/site/sub/x"), "root", 0644,
				    "belongs to uid");
	t->root = 0;
}

/* Finding: a load_module line written under /etc/nginx made the next nginx -t load code. */
static void
cmd_write_file_test_nginx_tree(void **state)
{
	struct cmd_write_file_test *t = *state;
	struct agent_config cfg;
	char conf[PATH_MAX], dir[PATH_MAX], text[PATH_MAX + 64], link[PATH_MAX];

	snprintf(dir, sizeof(dir), "%s/etc/nginx", t->dir);
	assert_int_equal(mkdir(dir, 0755), 0);
	snprintf(conf, sizeof(conf), "%s/etc/nginx/modules-enabled", t->dir);
	assert_int_equal(mkdir(conf, 0755), 0);
	snprintf(conf, sizeof(conf), "%s/etc/nginx/nginx.conf", t->dir);
	snprintf(text, sizeof(text), "include %s/modules-enabled/*.conf;\nevents {}\n", dir);
	assert_int_equal(testutil_write(conf, text, 0644), 0);
	/* write_roots names etc, which holds nginx's configuration: still refused. */
	assert_int_equal(testutil_cfg(&cfg, "write_roots", t->roots, "allow_root", "yes",
				      "nginx_conf", conf, NULL),
			 0);
	{
		struct agent_config keep = t->cfg_root;

		t->cfg_root = cfg;
		t->root = 1;
		cmd_write_file_test_refused(
		    t, cmd_write_file_test_at(t, "etc/nginx/modules-enabled/50-evil.conf"), "root",
		    0644, "nginx's configuration");
		cmd_write_file_test_refused(t, cmd_write_file_test_at(t, "etc/nginx/nginx.conf"),
					    "root", 0644, "nginx's configuration");
		/* Nor through a link into it. */
		snprintf(link, sizeof(link), "%s/www/ngx", t->dir);
		assert_int_equal(symlink(dir, link), 0);
		cmd_write_file_test_refused(
		    t, cmd_write_file_test_at(t, "www/ngx/modules-enabled/50-evil.conf"), "root",
		    0644, "nginx's configuration");
		t->root = 0;
		t->cfg_root = keep;
	}
	testutil_cfg_fini(&cfg);
	/* The default write_roots no longer name /etc/nginx. */
	assert_int_equal(testutil_cfg(&cfg, "allow_root", "yes", NULL), 0);
	assert_null(strstr(cfg.write_roots, "/etc/nginx"));
	testutil_cfg_fini(&cfg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(cmd_write_file_test_inside),
	    cmocka_unit_test(cmd_write_file_test_keeps_owner_and_mode),
	    cmocka_unit_test(cmd_write_file_test_atomic),
	    cmocka_unit_test(cmd_write_file_test_outside_and_unnormalised),
	    cmocka_unit_test(cmd_write_file_test_links),
	    cmocka_unit_test(cmd_write_file_test_setid_refused),
	    cmocka_unit_test(cmd_write_file_test_root_owned_refused),
	    cmocka_unit_test(cmd_write_file_test_other_users_keys),
	    cmocka_unit_test(cmd_write_file_test_users_link_not_followed),
	    cmocka_unit_test(cmd_write_file_test_nginx_tree),
	};

	if (geteuid() != 0) {
		fprintf(stderr, "cmd_write_file_test: needs root (chown); skipped\n");
		return 77;
	}
	return cmocka_run_group_tests(tests, cmd_write_file_test_setup,
				      cmd_write_file_test_teardown);
}
