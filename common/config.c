/*
 * config.c: table-driven parser for "key value" config files and command-line
 * overrides. It knows no option of its own: each program (stoked, stoke-agent, the
 * CLI) passes its table of struct config_opt rows and a struct to fill.
 */
#include "config.h"
#include "atomicfile.h"
#include "err.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CONFIG_FILE_MAX (1024 * 1024)
#define CONFIG_WHY_MAX 256

static char **
config_str_at(const struct config_opt *opt, void *base)
{
	return (char **)(void *)((char *)base + opt->offset);
}

static long *
config_long_at(const struct config_opt *opt, void *base)
{
	return (long *)(void *)((char *)base + opt->offset);
}

static int *
config_int_at(const struct config_opt *opt, void *base)
{
	return (int *)(void *)((char *)base + opt->offset);
}

static const struct config_opt *
config_find(const struct config_opt *opts, size_t nopts, const char *name)
{
	for (size_t i = 0; i < nopts; i++)
		if (strcmp(opts[i].name, name) == 0)
			return &opts[i];
	return NULL;
}

/* Formats a duration in the largest unit that divides it exactly. */
static void
config_fmt_duration(long ms, char *out, size_t outlen)
{
	if (ms != 0 && ms % 3600000 == 0)
		snprintf(out, outlen, "%ldh", ms / 3600000);
	else if (ms != 0 && ms % 60000 == 0)
		snprintf(out, outlen, "%ldm", ms / 60000);
	else if (ms != 0 && ms % 1000 == 0)
		snprintf(out, outlen, "%lds", ms / 1000);
	else
		snprintf(out, outlen, "%ldms", ms);
}

/* Parses a decimal integer that fills the whole string. */
static int
config_parse_long(const char *s, long *out)
{
	char *end;
	long v;

	if (!(*s == '-' || *s == '+' || (*s >= '0' && *s <= '9')))
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0')
		return -1;
	*out = v;
	return 0;
}

static int
config_parse_int(const struct config_opt *opt, const char *value, long *out, char *why,
		 size_t whylen)
{
	long v;

	if (config_parse_long(value, &v) == -1)
		return err_set(why, whylen, ERR_INVAL, "'%s' is not an integer", value);
	if (opt->min != opt->max && (v < opt->min || v > opt->max))
		return err_set(why, whylen, ERR_INVAL, "must be between %ld and %ld", opt->min,
			       opt->max);
	*out = v;
	return 0;
}

static int
config_parse_bool(const char *value, int *out, char *why, size_t whylen)
{
	static const char *const yes[] = {"yes", "true", "on", "1"};
	static const char *const no[] = {"no", "false", "off", "0"};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(value, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcasecmp(value, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	return err_set(why, whylen, ERR_INVAL, "'%s' is not a boolean (use yes or no)", value);
}

static int
config_parse_duration(const struct config_opt *opt, const char *value, long *out, char *why,
		      size_t whylen)
{
	static const struct {
		const char *suffix;
		long ms;
	} units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"", 1000}};
	const char *p = value;
	char lo[32], hi[32];
	long n = 0, unit = -1;

	if (*p < '0' || *p > '9')
		goto bad;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (n > (LONG_MAX - (*p - '0')) / 10)
			return err_set(why, whylen, ERR_INVAL, "'%s' is too long", value);
		n = n * 10 + (*p - '0');
	}
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(p, units[i].suffix) == 0) {
			unit = units[i].ms;
			break;
		}
	}
	if (unit == -1)
		goto bad;
	if (n > LONG_MAX / unit)
		return err_set(why, whylen, ERR_INVAL, "'%s' is too long", value);
	n *= unit;
	if (opt->min != opt->max && (n < opt->min || n > opt->max)) {
		config_fmt_duration(opt->min, lo, sizeof(lo));
		config_fmt_duration(opt->max, hi, sizeof(hi));
		return err_set(why, whylen, ERR_INVAL, "must be between %s and %s", lo, hi);
	}
	*out = n;
	return 0;

bad:
	return err_set(why, whylen, ERR_INVAL,
		       "'%s' is not a duration (use e.g. 250ms, 30s, 5m, 2h)", value);
}

static int
config_parse_hostport(const char *value, char *why, size_t whylen)
{
	const char *host = value, *hostend, *port;
	long n = 0;

	if (*value == '[') {
		hostend = strchr(value, ']');
		if (hostend == NULL)
			return err_set(why, whylen, ERR_INVAL, "'%s': missing ']'", value);
		host = value + 1;
		if (hostend[1] != ':')
			return err_set(why, whylen, ERR_INVAL, "'%s' is not host:port", value);
		port = hostend + 2;
		for (const char *c = host; c < hostend; c++)
			if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f') ||
			      (*c >= 'A' && *c <= 'F') || *c == ':' || *c == '.'))
				return err_set(why, whylen, ERR_INVAL,
					       "'%s': not an IPv6 address in brackets", value);
	} else {
		hostend = strrchr(value, ':');
		if (hostend == NULL)
			return err_set(why, whylen, ERR_INVAL, "'%s' is not host:port", value);
		if (memchr(value, ':', (size_t)(hostend - value)) != NULL)
			return err_set(why, whylen, ERR_INVAL,
				       "'%s': put an IPv6 address in brackets ([::1]:port)", value);
		port = hostend + 1;
		for (const char *c = host; c < hostend; c++)
			if ((unsigned char)*c <= ' ' || *c == 0x7f || *c == '/' || *c == '[' ||
			    *c == ']')
				return err_set(why, whylen, ERR_INVAL,
					       "'%s': host has a bad character", value);
	}
	if (hostend == host)
		return err_set(why, whylen, ERR_INVAL, "'%s': host must not be empty", value);
	if (*port == '\0')
		return err_set(why, whylen, ERR_INVAL, "'%s': port must not be empty", value);
	for (const char *c = port; *c != '\0'; c++) {
		if (*c < '0' || *c > '9' || c - port >= 5)
			return err_set(why, whylen, ERR_INVAL, "'%s': port must be 0-65535", value);
		n = n * 10 + (*c - '0');
	}
	if (n > 65535)
		return err_set(why, whylen, ERR_INVAL, "'%s': port must be 0-65535", value);
	return 0;
}

/* Parses value for opt and stores it. On failure fills why (without the option
 * name) and leaves the stored value unchanged. */
static int
config_apply(const struct config_opt *opt, void *base, const char *value, char *why, size_t whylen)
{
	long l = 0;
	int b = 0, rc = 0;
	char *s, **sp;

	switch (opt->type) {
	case CONFIG_STRING:
		break;
	case CONFIG_INT:
		rc = config_parse_int(opt, value, &l, why, whylen);
		break;
	case CONFIG_BOOL:
		rc = config_parse_bool(value, &b, why, whylen);
		break;
	case CONFIG_HOSTPORT:
		rc = config_parse_hostport(value, why, whylen);
		break;
	case CONFIG_DURATION:
		rc = config_parse_duration(opt, value, &l, why, whylen);
		break;
	default:
		return err_set(why, whylen, ERR_INTERNAL, "unknown option type %d", (int)opt->type);
	}
	if (rc != 0)
		return rc;
	if (opt->validate != NULL && (rc = opt->validate(value, why, whylen)) != 0)
		return rc;

	switch (opt->type) {
	case CONFIG_STRING:
	case CONFIG_HOSTPORT:
		if ((s = strdup(value)) == NULL)
			return err_set(why, whylen, ERR_NOMEM, "out of memory");
		sp = config_str_at(opt, base);
		free(*sp);
		*sp = s;
		break;
	case CONFIG_INT:
	case CONFIG_DURATION:
		*config_long_at(opt, base) = l;
		break;
	case CONFIG_BOOL:
		*config_int_at(opt, base) = b;
		break;
	}
	return 0;
}

/* base must be zeroed or hold values set by these functions: old strings are freed. */
int
config_defaults(const struct config_opt *opts, size_t nopts, void *base, char *err, size_t errlen)
{
	char why[CONFIG_WHY_MAX];
	int rc;

	for (size_t i = 0; i < nopts; i++) {
		const struct config_opt *opt = &opts[i];

		if (opt->def != NULL) {
			if ((rc = config_apply(opt, base, opt->def, why, sizeof(why))) != 0)
				return err_set(err, errlen, rc == ERR_INVAL ? ERR_INTERNAL : rc,
					       "default of %s: %s", opt->name, why);
			continue;
		}
		switch (opt->type) {
		case CONFIG_STRING:
		case CONFIG_HOSTPORT: {
			char **sp = config_str_at(opt, base);

			free(*sp);
			*sp = NULL;
			break;
		}
		case CONFIG_INT:
		case CONFIG_DURATION:
			*config_long_at(opt, base) = 0;
			break;
		case CONFIG_BOOL:
			*config_int_at(opt, base) = 0;
			break;
		}
	}
	return 0;
}

static int
config_is_space(char c)
{
	return c == ' ' || c == '\t';
}

static int
config_is_keychar(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-' || c == '.';
}

/* Splits one line (NUL-terminated, no '\n') in place into key and value.
 * Returns 0 with *key = NULL for blank and comment lines. */
static int
config_split(char *line, char **key, char **value, char *why, size_t whylen)
{
	char *p = line, *v, *w;

	*key = NULL;
	*value = NULL;
	while (config_is_space(*p))
		p++;
	if (*p == '\0' || *p == '#')
		return 0;
	*key = p;
	while (config_is_keychar(*p))
		p++;
	if (p == *key || !(*p == '\0' || *p == '=' || config_is_space(*p)))
		return err_set(why, whylen, ERR_INVAL, "bad character '%c' in key", *p);
	if (*p == '=') {
		*p++ = '\0';
	} else if (*p != '\0') {
		*p++ = '\0';
		while (config_is_space(*p))
			p++;
		if (*p == '=')
			p++;
	}
	while (config_is_space(*p))
		p++;

	if (*p == '"') {
		/* Quoted: \" and \\ are the only escapes; unescape in place. */
		v = w = ++p;
		for (;; p++) {
			if (*p == '\0')
				return err_set(why, whylen, ERR_INVAL,
					       "%s: unterminated quoted value", *key);
			if (*p == '"')
				break;
			if (*p == '\\') {
				p++;
				if (*p != '"' && *p != '\\')
					return err_set(why, whylen, ERR_INVAL,
						       "%s: bad escape in quoted value (only \\\" "
						       "and \\\\)",
						       *key);
			}
			*w++ = *p;
		}
		p++;
		while (config_is_space(*p))
			p++;
		if (*p != '\0' && *p != '#')
			return err_set(why, whylen, ERR_INVAL, "%s: text after closing quote",
				       *key);
		*w = '\0';
		*value = v;
		return 0;
	}

	/* Unquoted: up to a '#' that starts a word (a comment) or the end of line,
	 * without trailing blanks. */
	v = p;
	for (; *p != '\0'; p++) {
		if (*p == '#' && p > v && config_is_space(p[-1]))
			break;
		if (*p == '"')
			return err_set(why, whylen, ERR_INVAL, "%s: stray '\"' in value", *key);
	}
	while (p > v && config_is_space(p[-1]))
		p--;
	*p = '\0';
	if (*v == '\0')
		return err_set(why, whylen, ERR_INVAL, "%s: missing value", *key);
	*value = v;
	return 0;
}

int
config_parse_file(const struct config_opt *opts, size_t nopts, void *base, const char *path,
		  char *err, size_t errlen)
{
	const struct config_opt *opt;
	char why[CONFIG_WHY_MAX], *text = NULL, *line, *next, *key, *value;
	size_t len, lineno = 0;
	int rc;

	rc = atomicfile_read(path, CONFIG_FILE_MAX, &text, &len, err, errlen);
	if (rc != 0)
		return rc;
	if (memchr(text, '\0', len) != NULL) {
		rc = err_set(err, errlen, ERR_INVAL, "%s: contains a NUL byte", path);
		goto fail;
	}
	for (line = text; line != NULL; line = next) {
		lineno++;
		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		len = strlen(line);
		if (len > 0 && line[len - 1] == '\r')
			line[len - 1] = '\0';
		for (const char *c = line; *c != '\0'; c++) {
			if (((unsigned char)*c < ' ' && *c != '\t') || *c == 0x7f) {
				rc = err_set(err, errlen, ERR_INVAL,
					     "%s:%zu: control character in line", path, lineno);
				goto fail;
			}
		}
		if ((rc = config_split(line, &key, &value, why, sizeof(why))) != 0) {
			err_set(err, errlen, rc, "%s:%zu: %s", path, lineno, why);
			goto fail;
		}
		if (key == NULL)
			continue;
		if ((opt = config_find(opts, nopts, key)) == NULL) {
			rc = err_set(err, errlen, ERR_INVAL, "%s:%zu: unknown key '%s'", path,
				     lineno, key);
			goto fail;
		}
		if ((rc = config_apply(opt, base, value, why, sizeof(why))) != 0) {
			err_set(err, errlen, rc, "%s:%zu: %s: %s", path, lineno, key, why);
			goto fail;
		}
	}
	free(text);
	return 0;

fail:
	free(text);
	return rc;
}

int
config_set(const struct config_opt *opts, size_t nopts, void *base, const char *name,
	   const char *value, const char *origin, char *err, size_t errlen)
{
	const struct config_opt *opt;
	char why[CONFIG_WHY_MAX];
	int rc;

	if (origin == NULL)
		origin = name;
	if ((opt = config_find(opts, nopts, name)) == NULL)
		return err_set(err, errlen, ERR_INVAL, "%s: unknown option '%s'", origin, name);
	if (value == NULL)
		return err_set(err, errlen, ERR_INVAL, "%s: missing value", origin);
	if ((rc = config_apply(opt, base, value, why, sizeof(why))) != 0)
		return err_set(err, errlen, rc, "%s: %s", origin, why);
	return 0;
}

void
config_free(const struct config_opt *opts, size_t nopts, void *base)
{
	if (base == NULL)
		return;
	for (size_t i = 0; i < nopts; i++) {
		if (opts[i].type == CONFIG_STRING || opts[i].type == CONFIG_HOSTPORT) {
			char **sp = config_str_at(&opts[i], base);

			free(*sp);
			*sp = NULL;
		}
	}
}
