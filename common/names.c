/*
 * names.c: strict grammars for names that come from users or the network
 * (servers, domains, branches, Unix users, tags, repository URLs, labels). It does
 * not look anything up; the API edge and the agent call it before using a name.
 */
#include "names.h"
#include "err.h"

#include <stdint.h>
#include <string.h>

static int
names_is_lower(char c)
{
	return c >= 'a' && c <= 'z';
}

static int
names_is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static int
names_is_alnum(char c)
{
	return names_is_lower(c) || names_is_digit(c) || (c >= 'A' && c <= 'Z');
}

static int
names_is_ctl(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

/* One DNS label of len bytes: 1-63 of [a-z0-9-], not starting or ending with '-'. */
static int
names_label_dns(const char *s, size_t len, char *err, size_t errlen)
{
	if (len == 0)
		return err_set(err, errlen, ERR_INVAL, "must not contain an empty label");
	if (len > 63)
		return err_set(err, errlen, ERR_INVAL, "labels must be at most 63 characters");
	for (size_t i = 0; i < len; i++) {
		if (s[i] >= 'A' && s[i] <= 'Z')
			return err_set(err, errlen, ERR_INVAL, "must be lower case");
		if (!names_is_lower(s[i]) && !names_is_digit(s[i]) && s[i] != '-')
			return err_set(err, errlen, ERR_INVAL,
				       "must contain only a-z, 0-9, '-' and '.'");
	}
	if (s[0] == '-' || s[len - 1] == '-')
		return err_set(err, errlen, ERR_INVAL, "labels must not start or end with '-'");
	return 0;
}

int
names_server(const char *s, char *err, size_t errlen)
{
	size_t len;

	if (s == NULL)
		return err_set(err, errlen, ERR_INVAL, "is missing");
	len = strlen(s);
	if (len < 1 || len > 63)
		return err_set(err, errlen, ERR_INVAL, "must be 1-63 characters");
	for (size_t i = 0; i < len; i++) {
		if (s[i] >= 'A' && s[i] <= 'Z')
			return err_set(err, errlen, ERR_INVAL, "must be lower case");
		if (!names_is_lower(s[i]) && !names_is_digit(s[i]) && s[i] != '-')
			return err_set(err, errlen, ERR_INVAL,
				       "must contain only a-z, 0-9 and '-'");
	}
	if (s[0] == '-')
		return err_set(err, errlen, ERR_INVAL, "must start with a letter or digit");
	if (s[len - 1] == '-')
		return err_set(err, errlen, ERR_INVAL, "must not end with '-'");
	return 0;
}

int
names_domain(const char *s, int allow_wildcard, char *err, size_t errlen)
{
	const char *p, *dot, *last = NULL;
	size_t len;
	int labels = 0, rc;

	if (s == NULL)
		return err_set(err, errlen, ERR_INVAL, "is missing");
	len = strlen(s);
	if (len < 1 || len > 253)
		return err_set(err, errlen, ERR_INVAL, "must be 1-253 characters");
	p = s;
	if (p[0] == '*') {
		if (!allow_wildcard)
			return err_set(err, errlen, ERR_INVAL, "must not be a wildcard");
		if (p[1] != '.')
			return err_set(err, errlen, ERR_INVAL,
				       "a wildcard must be \"*.\" then a domain");
		p += 2;
	}
	if (strchr(p, '*') != NULL)
		return err_set(err, errlen, ERR_INVAL,
			       allow_wildcard ? "'*' is only allowed as the first label"
					      : "must not be a wildcard");
	if (len > 0 && s[len - 1] == '.')
		return err_set(err, errlen, ERR_INVAL, "must not end with '.'");
	for (;;) {
		dot = strchr(p, '.');
		if ((rc = names_label_dns(p, dot != NULL ? (size_t)(dot - p) : strlen(p), err,
					  errlen)) != 0)
			return rc;
		labels++;
		last = p;
		if (dot == NULL)
			break;
		p = dot + 1;
	}
	if (labels < 2)
		return err_set(err, errlen, ERR_INVAL,
			       "must have at least two labels (example.com)");
	for (p = last; *p != '\0'; p++)
		if (!names_is_lower(*p))
			return err_set(err, errlen, ERR_INVAL,
				       "the last label must be letters only");
	return 0;
}

int
names_branch(const char *s, char *err, size_t errlen)
{
	size_t len;
	const char *comp;

	if (s == NULL)
		return err_set(err, errlen, ERR_INVAL, "is missing");
	len = strlen(s);
	if (len < 1 || len > 200)
		return err_set(err, errlen, ERR_INVAL, "must be 1-200 characters");
	if (strcmp(s, "@") == 0)
		return err_set(err, errlen, ERR_INVAL, "must not be \"@\"");
	if (strcmp(s, "HEAD") == 0)
		return err_set(err, errlen, ERR_INVAL, "must not be \"HEAD\"");
	if (s[0] == '-')
		return err_set(err, errlen, ERR_INVAL, "must not start with '-'");
	if (s[0] == '/')
		return err_set(err, errlen, ERR_INVAL, "must not start with '/'");
	if (s[len - 1] == '/')
		return err_set(err, errlen, ERR_INVAL, "must not end with '/'");
	if (s[len - 1] == '.')
		return err_set(err, errlen, ERR_INVAL, "must not end with '.'");
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (names_is_ctl(c))
			return err_set(err, errlen, ERR_INVAL,
				       "must not contain control characters");
		if (c >= 0x80)
			return err_set(err, errlen, ERR_INVAL, "must be ASCII");
		if (strchr(" ~^:?*[\\", c) != NULL)
			return err_set(err, errlen, ERR_INVAL, "must not contain '%c'", c);
	}
	if (strstr(s, "..") != NULL)
		return err_set(err, errlen, ERR_INVAL, "must not contain '..'");
	if (strstr(s, "//") != NULL)
		return err_set(err, errlen, ERR_INVAL, "must not contain '//'");
	if (strstr(s, "@{") != NULL)
		return err_set(err, errlen, ERR_INVAL, "must not contain '@{'");
	for (comp = s; comp != NULL;) {
		const char *slash = strchr(comp, '/');
		size_t clen = slash != NULL ? (size_t)(slash - comp) : strlen(comp);

		if (comp[0] == '.')
			return err_set(err, errlen, ERR_INVAL,
				       "no part between '/' may start with '.'");
		if (clen >= 5 && memcmp(comp + clen - 5, ".lock", 5) == 0)
			return err_set(err, errlen, ERR_INVAL,
				       "no part between '/' may end with \".lock\"");
		comp = slash != NULL ? slash + 1 : NULL;
	}
	return 0;
}

int
names_user(const char *s, char *err, size_t errlen)
{
	size_t len;

	if (s == NULL)
		return err_set(err, errlen, ERR_INVAL, "is missing");
	len = strlen(s);
	if (len < 1 || len > 32)
		return err_set(err, errlen, ERR_INVAL, "must be 1-32 characters");
	if (!names_is_lower(s[0]) && s[0] != '_')
		return err_set(err, errlen, ERR_INVAL, "must start with a letter or '_'");
	for (size_t i = 1; i < len; i++) {
		if (s[i] >= 'A' && s[i] <= 'Z')
			return err_set(err, errlen, ERR_INVAL, "must be lower case");
		if (!names_is_lower(s[i]) && !names_is_digit(s[i]) && s[i] != '_' && s[i] != '-')
			return err_set(err, errlen, ERR_INVAL,
				       "must contain only a-z, 0-9, '_' and '-'");
	}
	if (s[len - 1] == '-')
		return err_set(err, errlen, ERR_INVAL, "must not end with '-'");
	return 0;
}

int
names_tag(const char *s, char *err, size_t errlen)
{
	size_t len;

	if (s == NULL)
		return err_set(err, errlen, ERR_INVAL, "is missing");
	len = strlen(s);
	if (len < 1 || len > 63)
		return err_set(err, errlen, ERR_INVAL, "must be 1-63 characters");
	for (size_t i = 0; i < len; i++) {
		if (s[i] >= 'A' && s[i] <= 'Z')
			return err_set(err, errlen, ERR_INVAL, "must be lower case");
		if (!names_is_lower(s[i]) && !names_is_digit(s[i]) && s[i] != '_' && s[i] != '.' &&
		    s[i] != '-')
			return err_set(err, errlen, ERR_INVAL,
				       "must contain only a-z, 0-9, '_', '.' and '-'");
	}
	if (!names_is_lower(s[0]) && !names_is_digit(s[0]))
		return err_set(err, errlen, ERR_INVAL, "must start with a letter or digit");
	return 0;
}

/* Host of a URL: a DNS-ish name or IPv4 address, letters any case, 1-253 chars,
 * labels not starting with '-' (so it can never be read as an ssh option). */
static int
names_url_host(const char *s, size_t len, char *err, size_t errlen)
{
	if (len == 0)
		return err_set(err, errlen, ERR_INVAL, "host must not be empty");
	if (len > 253)
		return err_set(err, errlen, ERR_INVAL, "host is too long");
	for (size_t i = 0; i < len; i++) {
		if (!names_is_alnum(s[i]) && s[i] != '-' && s[i] != '.')
			return err_set(err, errlen, ERR_INVAL, "host has a bad character '%c'",
				       s[i]);
		if ((i == 0 || s[i - 1] == '.') && (s[i] == '-' || s[i] == '.'))
			return err_set(err, errlen, ERR_INVAL, "host has a bad label");
	}
	return 0;
}

/* ssh login name in a URL: [A-Za-z0-9._][A-Za-z0-9._-]*. */
static int
names_url_user(const char *s, size_t len, char *err, size_t errlen)
{
	if (len == 0 || len > 64)
		return err_set(err, errlen, ERR_INVAL, "user must be 1-64 characters");
	if (s[0] == '-')
		return err_set(err, errlen, ERR_INVAL, "user must not start with '-'");
	for (size_t i = 0; i < len; i++)
		if (!names_is_alnum(s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
			return err_set(err, errlen, ERR_INVAL, "user has a bad character '%c'",
				       s[i]);
	return 0;
}

static int
names_url_port(const char *s, size_t len, char *err, size_t errlen)
{
	long n = 0;

	if (len == 0 || len > 5)
		return err_set(err, errlen, ERR_INVAL, "port must be 1-65535");
	for (size_t i = 0; i < len; i++) {
		if (!names_is_digit(s[i]))
			return err_set(err, errlen, ERR_INVAL, "port must be 1-65535");
		n = n * 10 + (s[i] - '0');
	}
	if (n < 1 || n > 65535)
		return err_set(err, errlen, ERR_INVAL, "port must be 1-65535");
	return 0;
}

/* "[user@]host[:port]/path" after "https://" or "ssh://". */
static int
names_url_authority(const char *s, int allow_user, char *err, size_t errlen)
{
	const char *slash = strchr(s, '/'), *at, *colon, *host;
	int rc;

	if (slash == NULL || slash[1] == '\0')
		return err_set(err, errlen, ERR_INVAL, "must include a path after the host");
	at = memchr(s, '@', (size_t)(slash - s));
	host = s;
	if (at != NULL) {
		if (!allow_user)
			return err_set(err, errlen, ERR_INVAL,
				       "must not contain a user name or credentials");
		if ((rc = names_url_user(s, (size_t)(at - s), err, errlen)) != 0)
			return rc;
		host = at + 1;
	}
	colon = memchr(host, ':', (size_t)(slash - host));
	if ((rc = names_url_host(host, (size_t)((colon != NULL ? colon : slash) - host), err,
				 errlen)) != 0)
		return rc;
	if (colon != NULL &&
	    (rc = names_url_port(colon + 1, (size_t)(slash - colon - 1), err, errlen)) != 0)
		return rc;
	return 0;
}

int
names_repo_url(const char *s, char *err, size_t errlen)
{
	const char *at, *colon;
	size_t len;
	int rc;

	if (s == NULL)
		return err_set(err, errlen, ERR_INVAL, "is missing");
	len = strlen(s);
	if (len < 1 || len > 1024)
		return err_set(err, errlen, ERR_INVAL, "must be 1-1024 characters");
	if (s[0] == '-')
		return err_set(err, errlen, ERR_INVAL, "must not start with '-'");
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (names_is_ctl(c))
			return err_set(err, errlen, ERR_INVAL,
				       "must not contain control characters");
		if (c == ' ')
			return err_set(err, errlen, ERR_INVAL, "must not contain spaces");
		if (c >= 0x80)
			return err_set(err, errlen, ERR_INVAL, "must be ASCII");
	}
	if (strncmp(s, "https://", 8) == 0)
		return names_url_authority(s + 8, 0, err, errlen);
	if (strncmp(s, "ssh://", 6) == 0)
		return names_url_authority(s + 6, 1, err, errlen);
	if (s[0] == '/') {
		if (len < 2)
			return err_set(err, errlen, ERR_INVAL, "must name a repository, not \"/\"");
		return 0;
	}
	if (strstr(s, "://") != NULL || strstr(s, "::") != NULL)
		return err_set(err, errlen, ERR_INVAL,
			       "must be https://, ssh://, user@host:path or an absolute path");
	/* scp form: user@host:path */
	at = strchr(s, '@');
	colon = strchr(s, ':');
	if (at == NULL || colon == NULL || colon < at)
		return err_set(err, errlen, ERR_INVAL,
			       "must be https://, ssh://, user@host:path or an absolute path");
	if ((rc = names_url_user(s, (size_t)(at - s), err, errlen)) != 0)
		return rc;
	if ((rc = names_url_host(at + 1, (size_t)(colon - at - 1), err, errlen)) != 0)
		return rc;
	if (colon[1] == '\0')
		return err_set(err, errlen, ERR_INVAL, "must include a path after the host");
	if (colon[1] == '-')
		return err_set(err, errlen, ERR_INVAL, "path must not start with '-'");
	return 0;
}

/* Length of the UTF-8 sequence at s and its code point, or 0 when malformed
 * (overlong forms, surrogates and values past U+10FFFF included). */
static size_t
names_utf8(const unsigned char *s, uint32_t *cp)
{
	size_t n;
	uint32_t c, min;

	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if ((s[0] & 0xe0) == 0xc0) {
		n = 2, c = s[0] & 0x1f, min = 0x80;
	} else if ((s[0] & 0xf0) == 0xe0) {
		n = 3, c = s[0] & 0x0f, min = 0x800;
	} else if ((s[0] & 0xf8) == 0xf0) {
		n = 4, c = s[0] & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (s[i] & 0x3f);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return n;
}

int
names_label(const char *s, char *err, size_t errlen)
{
	const unsigned char *p;
	size_t chars = 0, n;
	uint32_t cp;

	if (s == NULL)
		return err_set(err, errlen, ERR_INVAL, "is missing");
	for (p = (const unsigned char *)s; *p != '\0'; p += n) {
		if ((n = names_utf8(p, &cp)) == 0)
			return err_set(err, errlen, ERR_INVAL, "must be valid UTF-8");
		if (cp < 0x20 || (cp >= 0x7f && cp < 0xa0))
			return err_set(err, errlen, ERR_INVAL,
				       "must not contain control characters");
		/* Line separators and bidi overrides change how other text displays. */
		if (cp == 0x2028 || cp == 0x2029 || (cp >= 0x202a && cp <= 0x202e) ||
		    (cp >= 0x2066 && cp <= 0x2069))
			return err_set(err, errlen, ERR_INVAL,
				       "must not contain line separators or direction controls");
		if (++chars > 100)
			break;
	}
	if (chars < 1 || chars > 100)
		return err_set(err, errlen, ERR_INVAL, "must be 1-100 characters");
	return 0;
}

int
names_ssh_key_type(const char *t, size_t n)
{
	static const char *const types[] = {"ssh-ed25519",
					    "ssh-rsa",
					    "ecdsa-sha2-nistp256",
					    "ecdsa-sha2-nistp384",
					    "ecdsa-sha2-nistp521",
					    "sk-ssh-ed25519@openssh.com",
					    "sk-ecdsa-sha2-nistp256@openssh.com",
					    NULL};

	for (size_t i = 0; types[i] != NULL; i++)
		if (strlen(types[i]) == n && strncmp(types[i], t, n) == 0)
			return 1;
	return 0;
}

int
names_known_hosts(const char *s, char *err, size_t errlen)
{
	size_t len, line = 0, keys = 0;
	const char *p = s;

	if (s == NULL)
		return err_set(err, errlen, ERR_INVAL, "missing");
	len = strlen(s);
	if (len > NAMES_KNOWN_HOSTS_MAX)
		return err_set(err, errlen, ERR_INVAL, "at most %d bytes", NAMES_KNOWN_HOSTS_MAX);
	while (*p != '\0') {
		const char *end = strchr(p, '\n'), *f[4];
		size_t fl[4], nf = 0, i;

		if (end == NULL)
			end = p + strlen(p);
		line++;
		for (const char *c = p; c < end; c++)
			if ((*c < 0x20 || *c > 0x7e) && *c != '\t')
				return err_set(err, errlen, ERR_INVAL,
					       "line %zu: a control or non-ASCII character", line);
		/* fields: [@marker] hosts keytype key [comment...] */
		for (const char *c = p; c < end && nf < 4;) {
			while (c < end && (*c == ' ' || *c == '\t'))
				c++;
			if (c == end)
				break;
			f[nf] = c;
			while (c < end && *c != ' ' && *c != '\t')
				c++;
			fl[nf] = (size_t)(c - f[nf]);
			nf++;
		}
		if (nf > 0 && f[0][0] != '#') {
			i = f[0][0] == '@' ? 1 : 0;
			if (i == 1 &&
			    !((fl[0] == 15 && strncmp(f[0], "@cert-authority", 15) == 0) ||
			      (fl[0] == 8 && strncmp(f[0], "@revoked", 8) == 0)))
				return err_set(err, errlen, ERR_INVAL,
					       "line %zu: unknown marker %.*s", line, (int)fl[0],
					       f[0]);
			if (nf < i + 3)
				return err_set(err, errlen, ERR_INVAL,
					       "line %zu: want HOSTS KEYTYPE KEY (as ssh-keyscan "
					       "prints)",
					       line);
			if (!names_ssh_key_type(f[i + 1], fl[i + 1]))
				return err_set(err, errlen, ERR_INVAL,
					       "line %zu: unknown key type %.*s", line,
					       (int)fl[i + 1], f[i + 1]);
			if (fl[i + 2] < 16)
				return err_set(err, errlen, ERR_INVAL, "line %zu: key too short",
					       line);
			for (size_t k = 0; k < fl[i + 2]; k++) {
				char c = f[i + 2][k];

				if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
				      (c >= '0' && c <= '9') || c == '+' || c == '/' || c == '='))
					return err_set(err, errlen, ERR_INVAL,
						       "line %zu: the key is not base64", line);
			}
			keys++;
		}
		p = *end == '\n' ? end + 1 : end;
	}
	if (keys == 0)
		return err_set(err, errlen, ERR_INVAL, "no host key in it");
	return 0;
}
