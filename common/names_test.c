/*
 * names_test.c: unit tests of names.c: tables of valid and invalid names for each
 * grammar, and the exact messages for the common mistakes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "names.h"

typedef int (*names_test_fn)(const char *s, char *err, size_t errlen);

static void
names_test_table(const char *what, names_test_fn fn, const char *const *good, size_t ngood,
		 const char *const *bad, size_t nbad)
{
	char err[256];

	for (size_t i = 0; i < ngood; i++) {
		err[0] = '\0';
		if (fn(good[i], err, sizeof(err)) != 0)
			fail_msg("%s: '%s' rejected: %s", what, good[i], err);
	}
	for (size_t i = 0; i < nbad; i++) {
		err[0] = '\0';
		if (fn(bad[i], err, sizeof(err)) != ERR_INVAL)
			fail_msg("%s: '%s' accepted", what, bad[i]);
		if (err[0] == '\0')
			fail_msg("%s: '%s' rejected without a message", what, bad[i]);
	}
	assert_int_equal(fn(NULL, err, sizeof(err)), ERR_INVAL);
}

#define TABLE(what, fn, good, bad)                                                                 \
	names_test_table(what, fn, good, sizeof(good) / sizeof(good[0]), bad,                      \
			 sizeof(bad) / sizeof(bad[0]))

/* Expects fn(s) to fail with exactly msg. */
static void
names_test_msg(names_test_fn fn, const char *s, const char *msg)
{
	char err[256] = "";

	assert_int_equal(fn(s, err, sizeof(err)), ERR_INVAL);
	assert_string_equal(err, msg);
}

static int
names_test_domain_nowild(const char *s, char *err, size_t errlen)
{
	return names_domain(s, 0, err, errlen);
}

static int
names_test_domain_wild(const char *s, char *err, size_t errlen)
{
	return names_domain(s, 1, err, errlen);
}

static void
names_test_server(void **state)
{
	static const char *const good[] = {
	    "web-1", "a",
	    "0",     "db",
	    "web01", "1web",
	    "a-b-c", "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij123", /* 63 */
	};
	static const char *const bad[] = {
	    "",
	    "-web",
	    "web-",
	    "Web",
	    "web_1",
	    "web.1",
	    "web 1",
	    "wéb",
	    "web\n",
	    "a/b",
	    "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij1234", /* 64 */
	};

	(void)state;
	TABLE("server", names_server, good, bad);
	names_test_msg(names_server, "", "must be 1-63 characters");
	names_test_msg(names_server, "-web", "must start with a letter or digit");
	names_test_msg(names_server, "web-", "must not end with '-'");
	names_test_msg(names_server, "Web", "must be lower case");
	names_test_msg(names_server, "web_1", "must contain only a-z, 0-9 and '-'");
}

static void
names_test_domain(void **state)
{
	static const char *const good[] = {
	    "example.com",   "www.example.com", "a.b.c.d.example.org", "xn--bcher-kva.example",
	    "1.example.com", "a-b.example.io",	"example.co.uk",       "my-site.dev",
	};
	static const char *const bad[] = {
	    "",
	    "com",
	    "example",
	    "Example.com",
	    "example.com.",
	    ".example.com",
	    "example..com",
	    "-a.example.com",
	    "a-.example.com",
	    "exa mple.com",
	    "exa_mple.com",
	    "example.c0m",
	    "example.123",
	    "*.example.com",
	    "a.*.example.com",
	    "*example.com",
	    "example.com/",
	    "ex\x01.com",
	    "ex\xc3\xa9.com",
	    "*",
	    "127.0.0.1",
	};
	static const char *const wild_good[] = {"*.example.com", "example.com", "*.a.example.org"};
	static const char *const wild_bad[] = {"*.com",
					       "*",
					       "*.",
					       "a.*.example.com",
					       "**.example.com",
					       "*example.com",
					       "*.*.example.com",
					       "*.Example.com"};
	char label63[64], name[300];

	(void)state;
	TABLE("domain", names_test_domain_nowild, good, bad);
	TABLE("domain wildcard", names_test_domain_wild, wild_good, wild_bad);
	names_test_msg(names_test_domain_nowild, "*.example.com", "must not be a wildcard");
	names_test_msg(names_test_domain_nowild, "example",
		       "must have at least two labels (example.com)");
	names_test_msg(names_test_domain_nowild, "example..com", "must not contain an empty label");
	names_test_msg(names_test_domain_nowild, "Example.com", "must be lower case");
	names_test_msg(names_test_domain_nowild, "-a.example.com",
		       "labels must not start or end with '-'");
	names_test_msg(names_test_domain_nowild, "example.c0m",
		       "the last label must be letters only");

	/* Label length 63 is fine, 64 is not; total 253 is fine, 254 is not. */
	memset(label63, 'a', 63);
	label63[63] = '\0';
	snprintf(name, sizeof(name), "%s.com", label63);
	assert_int_equal(names_domain(name, 0, NULL, 0), 0);
	snprintf(name, sizeof(name), "a%s.com", label63);
	assert_int_equal(names_domain(name, 0, NULL, 0), ERR_INVAL);
	/* 63+1+63+1+63+1+57+1+3 = 253 */
	snprintf(name, sizeof(name), "%s.%s.%s.%.57s.com", label63, label63, label63, label63);
	assert_int_equal(strlen(name), 253);
	assert_int_equal(names_domain(name, 0, NULL, 0), 0);
	snprintf(name, sizeof(name), "%s.%s.%s.%.58s.com", label63, label63, label63, label63);
	assert_int_equal(names_domain(name, 0, NULL, 0), ERR_INVAL);
}

static void
names_test_branch(void **state)
{
	static const char *const good[] = {
	    "main",
	    "master",
	    "feature/login",
	    "release-1.2",
	    "fix_bug",
	    "v1.0.0",
	    "a/b/c",
	    "user@work",
	    "has#hash",
	    "dependabot/npm_and_yarn/lodash-4.17.21",
	    "a.b",
	    "x-",
	    "@x",
	    "a@b",
	    "foo.lockx",
	    "lock",
	    "a/x.lockb",
	};
	static const char *const bad[] = {
	    "",	      "-main",	 "/main",	"main/",       "main.",	     "a..b",
	    "a//b",   ".hidden", "a/.hidden",	"a.lock",      "a/b.lock/c", "a@{1}",
	    "@",      "HEAD",	 "with space",	"tilde~1",     "caret^",     "co:lon",
	    "ques?",  "star*",	 "brack[et",	"back\\slash", "ctl\x01",    "del\x7f",
	    "tab\tx", "nl\nx",	 "caf\xc3\xa9", ".",	       "..",	     "a/./b",
	    "a/../b", "/",
	};
	char longname[256];

	(void)state;
	TABLE("branch", names_branch, good, bad);
	names_test_msg(names_branch, "a..b", "must not contain '..'");
	names_test_msg(names_branch, "-main", "must not start with '-'");
	names_test_msg(names_branch, "a.lock", "no part between '/' may end with \".lock\"");
	names_test_msg(names_branch, "a/.b", "no part between '/' may start with '.'");
	names_test_msg(names_branch, "a b", "must not contain ' '");
	names_test_msg(names_branch, "a@{u}", "must not contain '@{'");
	names_test_msg(names_branch, "@", "must not be \"@\"");

	memset(longname, 'b', 200);
	longname[200] = '\0';
	assert_int_equal(names_branch(longname, NULL, 0), 0);
	longname[200] = 'b';
	longname[201] = '\0';
	assert_int_equal(names_branch(longname, NULL, 0), ERR_INVAL);
}

static void
names_test_user(void **state)
{
	static const char *const good[] = {
	    "deploy", "_apt",  "www-data", "user1",
	    "a",      "a_b-c", "_",	   "abcdefghijabcdefghijabcdefghij12", /* 32 */
	};
	static const char *const bad[] = {
	    "",
	    "1user",
	    "-user",
	    "user-",
	    "User",
	    "us er",
	    "us.er",
	    "us$er",
	    "root\n",
	    "üser",
	    "abcdefghijabcdefghijabcdefghij123", /* 33 */
	};

	(void)state;
	TABLE("user", names_user, good, bad);
	names_test_msg(names_user, "1user", "must start with a letter or '_'");
	names_test_msg(names_user, "user-", "must not end with '-'");
	names_test_msg(names_user, "", "must be 1-32 characters");
}

static void
names_test_tag(void **state)
{
	static const char *const good[] = {
	    "prod",
	    "eu-west",
	    "v1.2",
	    "team_a",
	    "0day",
	    "a",
	    "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij123",
	};
	static const char *const bad[] = {
	    "",	      "-prod",
	    ".prod",  "_prod",
	    "Prod",   "pr od",
	    "pr/od",  "pr:od",
	    "pr\x01", "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij1234",
	};

	(void)state;
	TABLE("tag", names_tag, good, bad);
	names_test_msg(names_tag, "_prod", "must start with a letter or digit");
}

static void
names_test_repo_url(void **state)
{
	static const char *const good[] = {
	    "https://github.com/org/repo.git",
	    "https://git.example.com:8443/team/app",
	    "https://gitlab.com/group/sub/project.git",
	    "ssh://git@github.com/org/repo.git",
	    "ssh://github.com/org/repo.git",
	    "ssh://deploy@git.example.com:2222/srv/repo.git",
	    "git@github.com:org/repo.git",
	    "deploy@10.0.0.5:/srv/git/app.git",
	    "/srv/git/app.git",
	    "/home/me/repo",
	};
	static const char *const bad[] = {
	    "",
	    "-u https://x",
	    "--upload-pack=touch /tmp/x",
	    "http://github.com/org/repo.git",
	    "https://github.com",
	    "https://github.com/",
	    "https://token@github.com/org/repo.git",
	    "https://-oProxyCommand=x/repo",
	    "https://git hub.com/org/repo",
	    "https://github.com/org/re po",
	    "https://github.com:0/org/repo",
	    "https://github.com:99999/org/repo",
	    "https://github.com:/org/repo",
	    "https://github.com:22a/org/repo",
	    "https://gith_ub.com/org/repo",
	    "ssh://-oProxyCommand=touch%20x/repo",
	    "ssh://-user@host/repo",
	    "ssh://git@/repo",
	    "ssh://@host/repo",
	    "ssh://host",
	    "ssh://us;er@host/repo",
	    "file:///srv/repo",
	    "ext::sh",
	    "git://github.com/org/repo",
	    "github.com:org/repo.git",
	    "git@github.com",
	    "git@github.com:",
	    "git@github.com:-oProxyCommand=x",
	    "git@-host:repo",
	    "git@:repo",
	    "@host:repo",
	    "relative/path",
	    "/",
	    "/srv/repo\n",
	    "/srv/re\x01po",
	    "/srv/r\xc3\xa9po",
	};
	char longurl[1100];

	(void)state;
	TABLE("repo url", names_repo_url, good, bad);
	names_test_msg(names_repo_url, "-x", "must not start with '-'");
	names_test_msg(names_repo_url, "/a b", "must not contain spaces");
	names_test_msg(names_repo_url, "https://github.com", "must include a path after the host");
	names_test_msg(names_repo_url, "https://token@github.com/x",
		       "must not contain a user name or credentials");
	names_test_msg(names_repo_url, "ftp://x/y",
		       "must be https://, ssh://, user@host:path or an absolute path");

	memset(longurl, 'a', sizeof(longurl) - 1);
	longurl[sizeof(longurl) - 1] = '\0';
	longurl[0] = '/';
	longurl[1024] = '\0';
	assert_int_equal(names_repo_url(longurl, NULL, 0), 0);
	longurl[1024] = 'a';
	longurl[1025] = '\0';
	assert_int_equal(names_repo_url(longurl, NULL, 0), ERR_INVAL);
}

static void
names_test_known_hosts(void **state)
{
	static const char *const good[] = {
	    "github.com ssh-ed25519 "
	    "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
	    "# from ssh-keyscan\n[git.example.com]:2222 ecdsa-sha2-nistp256 "
	    "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= comment words\n\n",
	    "|1|abc=|def= ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ==\n",
	    "@cert-authority *.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqq",
	};
	static const char *const bad[] = {
	    "",
	    "# only a comment\n",
	    "github.com",
	    "github.com ssh-ed25519",
	    "github.com ssh-dss AAAAB3NzaC1kc3MAAACBAP1/U4Ed",
	    "github.com ssh-ed25519 AAAA",
	    "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA$(touch x)",
	    "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqq\r\n",
	    "@revoked-not ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqq",
	    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n",
	};
	char *big;

	(void)state;
	TABLE("known_hosts", names_known_hosts, good, bad);
	names_test_msg(names_known_hosts, "github.com ssh-dss AAAAB3NzaC1kc3MAAACBAP1",
		       "line 1: unknown key type ssh-dss");
	names_test_msg(names_known_hosts, "# x\ngithub.com ssh-ed25519",
		       "line 2: want HOSTS KEYTYPE KEY (as ssh-keyscan prints)");
	names_test_msg(names_known_hosts, "", "no host key in it");
	big = malloc(NAMES_KNOWN_HOSTS_MAX + 2);
	assert_non_null(big);
	memset(big, '#', NAMES_KNOWN_HOSTS_MAX + 1);
	big[NAMES_KNOWN_HOSTS_MAX + 1] = '\0';
	names_test_msg(names_known_hosts, big, "at most 65536 bytes");
	free(big);
}

static void
names_test_label(void **state)
{
	static const char *const good[] = {
	    "laptop",
	    "CI token (prod)",
	    "Jörg's key",
	    "日本語のキー",
	    "emoji \xf0\x9f\x94\x91",
	    " spaced ",
	    "a",
	};
	static const char *const bad[] = {
	    "",
	    "line\nbreak",
	    "tab\there",
	    "nul\x7f",
	    "c1 \xc2\x85",	    /* U+0085 NEL */
	    "bad \xc3",		    /* truncated sequence */
	    "bad \xc3\x28",	    /* bad continuation */
	    "over \xc0\xaf",	    /* overlong '/' */
	    "sur \xed\xa0\x80",	    /* surrogate */
	    "big \xf4\x90\x80\x80", /* past U+10FFFF */
	    "rlo \xe2\x80\xae txt", /* U+202E right-to-left override */
	    "ls \xe2\x80\xa8",	    /* U+2028 line separator */
	    "\xff",
	};
	char s[512];

	(void)state;
	TABLE("label", names_label, good, bad);
	/* 100 characters is the limit, counted as characters, not bytes. */
	memset(s, 'x', 100);
	s[100] = '\0';
	assert_int_equal(names_label(s, NULL, 0), 0);
	s[100] = 'x';
	s[101] = '\0';
	assert_int_equal(names_label(s, NULL, 0), ERR_INVAL);
	s[0] = '\0';
	for (int i = 0; i < 100; i++)
		strcat(s, "\xc3\xa9"); /* é, 2 bytes */
	assert_int_equal(names_label(s, NULL, 0), 0);
	strcat(s, "\xc3\xa9");
	assert_int_equal(names_label(s, NULL, 0), ERR_INVAL);
	names_test_msg(names_label, "", "must be 1-100 characters");
	names_test_msg(names_label, "a\nb", "must not contain control characters");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(names_test_server), cmocka_unit_test(names_test_domain),
	    cmocka_unit_test(names_test_branch), cmocka_unit_test(names_test_user),
	    cmocka_unit_test(names_test_tag),	 cmocka_unit_test(names_test_repo_url),
	    cmocka_unit_test(names_test_label),	 cmocka_unit_test(names_test_known_hosts),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
