/*
 * config_test.c: unit tests of config.c over real files in a temp folder: syntax,
 * every option type, defaults, command-line overrides and "FILE:LINE:" errors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "err.h"

struct config_test_cfg {
	char *name;
	long workers;
	int debug;
	char *listen;
	long timeout_ms;
	char *motd;
	char *color;
};

static int
config_test_color_cb(const char *value, char *err, size_t errlen)
{
	if (strcmp(value, "red") != 0 && strcmp(value, "blue") != 0)
		return err_set(err, errlen, ERR_INVAL, "must be red or blue");
	return 0;
}

#define CFG_OFF(f) offsetof(struct config_test_cfg, f)
static const struct config_opt config_test_opts[] = {
    {"name", CONFIG_STRING, CFG_OFF(name), "stoke", 0, 0, NULL, "display name"},
    {"workers", CONFIG_INT, CFG_OFF(workers), "4", 1, 64, NULL, "worker threads"},
    {"debug", CONFIG_BOOL, CFG_OFF(debug), "no", 0, 0, NULL, "debug mode"},
    {"api-listen", CONFIG_HOSTPORT, CFG_OFF(listen), "127.0.0.1:8080", 0, 0, NULL, "API"},
    {"timeout", CONFIG_DURATION, CFG_OFF(timeout_ms), "30s", 100, 3600000, NULL, "timeout"},
    {"motd", CONFIG_STRING, CFG_OFF(motd), NULL, 0, 0, NULL, "message"},
    {"color", CONFIG_STRING, CFG_OFF(color), "red", 0, 0, config_test_color_cb, "color"},
};
#define NOPTS (sizeof(config_test_opts) / sizeof(config_test_opts[0]))

struct config_test_state {
	char dir[64];
	char path[128];
	struct config_test_cfg cfg;
};

static int
config_test_setup(void **state)
{
	struct config_test_state *st = calloc(1, sizeof(*st));
	char err[256];

	if (st == NULL)
		return -1;
	snprintf(st->dir, sizeof(st->dir), "/tmp/config_test.XXXXXX");
	if (mkdtemp(st->dir) == NULL)
		return -1;
	snprintf(st->path, sizeof(st->path), "%s/stoked.conf", st->dir);
	if (config_defaults(config_test_opts, NOPTS, &st->cfg, err, sizeof(err)) != 0)
		return -1;
	*state = st;
	return 0;
}

static int
config_test_teardown(void **state)
{
	struct config_test_state *st = *state;

	config_free(config_test_opts, NOPTS, &st->cfg);
	unlink(st->path);
	rmdir(st->dir);
	free(st);
	return 0;
}

static void
config_test_write(struct config_test_state *st, const char *text)
{
	FILE *f = fopen(st->path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

/* Parses text; returns the code and leaves the message in err. */
static int
config_test_parse(struct config_test_state *st, const char *text, char *err, size_t errlen)
{
	config_test_write(st, text);
	err[0] = '\0';
	return config_parse_file(config_test_opts, NOPTS, &st->cfg, st->path, err, errlen);
}

/* Expects a parse failure whose message is exactly "PATH:LINE: rest". */
static void
config_test_expect_error(struct config_test_state *st, const char *text, int line, const char *rest)
{
	char err[512], want[512];

	assert_int_not_equal(config_test_parse(st, text, err, sizeof(err)), 0);
	snprintf(want, sizeof(want), "%s:%d: %s", st->path, line, rest);
	assert_string_equal(err, want);
}

static void
config_test_defaults(void **state)
{
	struct config_test_state *st = *state;

	assert_string_equal(st->cfg.name, "stoke");
	assert_int_equal(st->cfg.workers, 4);
	assert_int_equal(st->cfg.debug, 0);
	assert_string_equal(st->cfg.listen, "127.0.0.1:8080");
	assert_int_equal(st->cfg.timeout_ms, 30000);
	assert_null(st->cfg.motd);
	assert_string_equal(st->cfg.color, "red");
}

static void
config_test_bad_default(void **state)
{
	static const struct config_opt bad[] = {
	    {"workers", CONFIG_INT, 0, "many", 0, 0, NULL, NULL},
	};
	long v = 0;
	char err[256];

	(void)state;
	assert_int_equal(config_defaults(bad, 1, &v, err, sizeof(err)), ERR_INTERNAL);
	assert_non_null(strstr(err, "workers"));
}

static void
config_test_syntax(void **state)
{
	struct config_test_state *st = *state;
	char err[256];

	assert_int_equal(
	    config_test_parse(st,
			      "# a comment\n"
			      "\n"
			      "   \t\n"
			      "name web-controller\n"
			      "workers = 8   # trailing comment\n"
			      "debug=yes\n"
			      "\tapi-listen   0.0.0.0:9090\r\n"
			      "timeout 2m\n"
			      "motd \"say \\\"hi\\\" # not a comment \\\\ ok\"  # comment\n"
			      "color blue",
			      err, sizeof(err)),
	    0);
	assert_string_equal(st->cfg.name, "web-controller");
	assert_int_equal(st->cfg.workers, 8);
	assert_int_equal(st->cfg.debug, 1);
	assert_string_equal(st->cfg.listen, "0.0.0.0:9090");
	assert_int_equal(st->cfg.timeout_ms, 120000);
	assert_string_equal(st->cfg.motd, "say \"hi\" # not a comment \\ ok");
	assert_string_equal(st->cfg.color, "blue");

	/* '#' inside a word is part of the value; an empty quoted string is a value. */
	assert_int_equal(config_test_parse(st, "name a#b c\nmotd \"\"\n", err, sizeof(err)), 0);
	assert_string_equal(st->cfg.name, "a#b c");
	assert_string_equal(st->cfg.motd, "");

	/* The same key twice: the last one wins (and the first is freed). */
	assert_int_equal(config_test_parse(st, "name one\nname two\n", err, sizeof(err)), 0);
	assert_string_equal(st->cfg.name, "two");

	/* An empty file changes nothing. */
	assert_int_equal(config_test_parse(st, "", err, sizeof(err)), 0);
	assert_string_equal(st->cfg.name, "two");
}

static void
config_test_errors(void **state)
{
	struct config_test_state *st = *state;

	config_test_expect_error(st, "name x\n\n# c\nfoo bar\n", 4, "unknown key 'foo'");
	config_test_expect_error(st, "workers ten\n", 1, "workers: 'ten' is not an integer");
	config_test_expect_error(st, "\nworkers 65\n", 2, "workers: must be between 1 and 64");
	config_test_expect_error(st, "workers 0\n", 1, "workers: must be between 1 and 64");
	config_test_expect_error(st, "workers 99999999999999999999999\n", 1,
				 "workers: '99999999999999999999999' is not an integer");
	config_test_expect_error(st, "workers  4x\n", 1, "workers: '4x' is not an integer");
	config_test_expect_error(st, "debug maybe\n", 1,
				 "debug: 'maybe' is not a boolean (use yes or no)");
	config_test_expect_error(st, "timeout 5x\n", 1,
				 "timeout: '5x' is not a duration (use e.g. 250ms, 30s, 5m, 2h)");
	config_test_expect_error(st, "timeout 50ms\n", 1, "timeout: must be between 100ms and 1h");
	config_test_expect_error(st, "api-listen localhost\n", 1,
				 "api-listen: 'localhost' is not host:port");
	config_test_expect_error(st, "color green\n", 1, "color: must be red or blue");
	config_test_expect_error(st, "name\n", 1, "name: missing value");
	config_test_expect_error(st, "name =\n", 1, "name: missing value");
	config_test_expect_error(st, "name \"abc\n", 1, "name: unterminated quoted value");
	config_test_expect_error(st, "name \"a\\nb\"\n", 1,
				 "name: bad escape in quoted value (only \\\" and \\\\)");
	config_test_expect_error(st, "name \"a\" b\n", 1, "name: text after closing quote");
	config_test_expect_error(st, "name a\"b\n", 1, "name: stray '\"' in value");
	config_test_expect_error(st, "na:me x\n", 1, "bad character ':' in key");
	config_test_expect_error(st, "name x\nmotd a\001b\n", 2, "control character in line");
}

static void
config_test_failed_value_keeps_old(void **state)
{
	struct config_test_state *st = *state;
	char err[256];

	assert_int_not_equal(config_test_parse(st, "workers 7\nworkers 100\n", err, sizeof(err)),
			     0);
	/* Lines before the bad one are applied; the bad value itself is not. */
	assert_int_equal(st->cfg.workers, 7);
	assert_int_not_equal(config_set(config_test_opts, NOPTS, &st->cfg, "api-listen", "nope",
					"--api-listen", err, sizeof(err)),
			     0);
	assert_string_equal(st->cfg.listen, "127.0.0.1:8080");
}

static void
config_test_missing_file(void **state)
{
	struct config_test_state *st = *state;
	char err[256], want[256];

	assert_int_equal(config_parse_file(config_test_opts, NOPTS, &st->cfg, "/nonexistent/x.conf",
					   err, sizeof(err)),
			 ERR_NOTFOUND);
	snprintf(want, sizeof(want), "/nonexistent/x.conf: No such file or directory");
	assert_string_equal(err, want);
}

static void
config_test_bools(void **state)
{
	static const char *const yes[] = {"yes", "true", "on", "1", "YES", "True"};
	static const char *const no[] = {"no", "false", "off", "0", "No", "OFF"};
	static const char *const bad[] = {"", "y", "2", "yess", "enabled", " yes"};
	struct config_test_state *st = *state;
	char err[256];

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		st->cfg.debug = 0;
		assert_int_equal(
		    config_set(config_test_opts, NOPTS, &st->cfg, "debug", yes[i], "-d", err, 256),
		    0);
		assert_int_equal(st->cfg.debug, 1);
	}
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		st->cfg.debug = 1;
		assert_int_equal(
		    config_set(config_test_opts, NOPTS, &st->cfg, "debug", no[i], "-d", err, 256),
		    0);
		assert_int_equal(st->cfg.debug, 0);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		st->cfg.debug = 7;
		assert_int_equal(
		    config_set(config_test_opts, NOPTS, &st->cfg, "debug", bad[i], "-d", err, 256),
		    ERR_INVAL);
		assert_int_equal(st->cfg.debug, 7);
		assert_memory_equal(err, "-d: ", 4);
	}
}

static void
config_test_durations(void **state)
{
	static const struct {
		const char *text;
		long ms;
	} good[] = {{"250ms", 250}, {"30s", 30000}, {"5m", 300000},  {"45m", 2700000},
		    {"10", 10000},  {"100ms", 100}, {"1h", 3600000}, {"3600s", 3600000}};
	static const char *const bad[] = {"",	 "5x", "-1s", "1.5s", " 5s",  "5 s",
					  "s",	 "ms", "5S",  "5sec", "99ms", "2h1",
					  "61m", "1d", "+5s", "0x10"};
	struct config_test_state *st = *state;
	char err[256];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		if (config_set(config_test_opts, NOPTS, &st->cfg, "timeout", good[i].text,
			       "--timeout", err, sizeof(err)) != 0)
			fail_msg("'%s' rejected: %s", good[i].text, err);
		assert_int_equal(st->cfg.timeout_ms, good[i].ms);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		st->cfg.timeout_ms = 12345;
		if (config_set(config_test_opts, NOPTS, &st->cfg, "timeout", bad[i], "--timeout",
			       err, sizeof(err)) != ERR_INVAL)
			fail_msg("duration '%s' was accepted", bad[i]);
		assert_int_equal(st->cfg.timeout_ms, 12345);
	}
}

static void
config_test_duration_unbounded(void **state)
{
	static const struct config_opt opts[] = {
	    {"d", CONFIG_DURATION, 0, "0", 0, 0, NULL, NULL},
	};
	long v = -1;
	char err[256];

	(void)state;
	assert_int_equal(config_defaults(opts, 1, &v, err, sizeof(err)), 0);
	assert_int_equal(v, 0);
	assert_int_equal(config_set(opts, 1, &v, "d", "2h", "x", err, sizeof(err)), 0);
	assert_int_equal(v, 7200000);
	assert_int_equal(config_set(opts, 1, &v, "d", "0", "x", err, sizeof(err)), 0);
	assert_int_equal(v, 0);
	assert_int_equal(config_set(opts, 1, &v, "d", "100000h", "x", err, sizeof(err)), 0);
	assert_int_equal(v, 100000L * 3600000L);
	assert_int_equal(
	    config_set(opts, 1, &v, "d", "99999999999999999999h", "x", err, sizeof(err)),
	    ERR_INVAL);
	assert_int_equal(
	    config_set(opts, 1, &v, "d", "9223372036854775807h", "x", err, sizeof(err)), ERR_INVAL);
}

static void
config_test_hostports(void **state)
{
	static const char *const good[] = {
	    "127.0.0.1:8080",	"localhost:0", "[::1]:443", "example.com:65535",
	    "[2001:db8::1]:22", "0.0.0.0:1",   "*:80"};
	static const char *const bad[] = {
	    "",	       "localhost",   ":80",	 "host:",   "host:65536", "host:-1",
	    "host:8o", "::1:80",      "[::1]",	 "[::1]80", "[]:80",	  "[::1:80",
	    "a b:80",  "host:123456", "[zz]:80", "host:80 "};
	struct config_test_state *st = *state;
	char err[256];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		if (config_set(config_test_opts, NOPTS, &st->cfg, "api-listen", good[i],
			       "--api-listen", err, sizeof(err)) != 0)
			fail_msg("'%s' rejected: %s", good[i], err);
		assert_string_equal(st->cfg.listen, good[i]);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (config_set(config_test_opts, NOPTS, &st->cfg, "api-listen", bad[i],
			       "--api-listen", err, sizeof(err)) != ERR_INVAL)
			fail_msg("'%s' accepted", bad[i]);
		assert_memory_equal(err, "--api-listen: ", 14);
	}
	config_set(config_test_opts, NOPTS, &st->cfg, "api-listen", "host:65536", "--api-listen",
		   err, sizeof(err));
	assert_string_equal(err, "--api-listen: 'host:65536': port must be 0-65535");
}

static void
config_test_set(void **state)
{
	struct config_test_state *st = *state;
	char err[256];

	assert_int_equal(config_set(config_test_opts, NOPTS, &st->cfg, "name", "from-cli", "--name",
				    err, sizeof(err)),
			 0);
	assert_string_equal(st->cfg.name, "from-cli");
	assert_int_equal(
	    config_set(config_test_opts, NOPTS, &st->cfg, "nope", "1", "--nope", err, sizeof(err)),
	    ERR_INVAL);
	assert_string_equal(err, "--nope: unknown option 'nope'");
	assert_int_equal(config_set(config_test_opts, NOPTS, &st->cfg, "workers", "100",
				    "--workers", err, sizeof(err)),
			 ERR_INVAL);
	assert_string_equal(err, "--workers: must be between 1 and 64");
	/* Without an origin the option name is used. */
	assert_int_equal(
	    config_set(config_test_opts, NOPTS, &st->cfg, "workers", "x", NULL, err, sizeof(err)),
	    ERR_INVAL);
	assert_string_equal(err, "workers: 'x' is not an integer");
	/* A NULL error buffer is allowed. */
	assert_int_equal(
	    config_set(config_test_opts, NOPTS, &st->cfg, "workers", "x", NULL, NULL, 0),
	    ERR_INVAL);
}

static void
config_test_free(void **state)
{
	struct config_test_state *st = *state;
	char err[256];

	assert_int_equal(config_set(config_test_opts, NOPTS, &st->cfg, "motd", "hello", "--motd",
				    err, sizeof(err)),
			 0);
	config_free(config_test_opts, NOPTS, &st->cfg);
	assert_null(st->cfg.name);
	assert_null(st->cfg.listen);
	assert_null(st->cfg.motd);
	assert_null(st->cfg.color);
	/* Freeing twice is harmless; defaults again after free work. */
	config_free(config_test_opts, NOPTS, &st->cfg);
	assert_int_equal(config_defaults(config_test_opts, NOPTS, &st->cfg, err, sizeof(err)), 0);
	assert_string_equal(st->cfg.name, "stoke");
}

#define T(f) cmocka_unit_test_setup_teardown(f, config_test_setup, config_test_teardown)

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    T(config_test_defaults),
	    T(config_test_bad_default),
	    T(config_test_syntax),
	    T(config_test_errors),
	    T(config_test_failed_value_keeps_old),
	    T(config_test_missing_file),
	    T(config_test_bools),
	    T(config_test_durations),
	    T(config_test_duration_unbounded),
	    T(config_test_hostports),
	    T(config_test_set),
	    T(config_test_free),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
