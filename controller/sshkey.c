/*
 * sshkey.c: parsing and checking of pasted OpenSSH public keys and their SHA256
 * fingerprints (see sshkey.h). Reads the key blob's wire format itself (RFC 4253 strings
 * and mpints); touches no file. Called by api_keys.c when a key is added.
 */
#include "sshkey.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "crypto.h"
#include "err.h"

enum sshkey_kind { K_ED25519, K_ECDSA, K_RSA, K_SK_ED25519, K_SK_ECDSA };

struct sshkey_type {
	const char *name;
	const char *label;
	enum sshkey_kind kind;
	const char *curve; /* ECDSA: the curve name inside the blob */
	int bits;	   /* fixed size, 0 = from the blob (RSA) */
	size_t point;	   /* public point / key length in bytes */
};

static const struct sshkey_type sshkey_types[] = {
    {"ssh-ed25519", "ED25519", K_ED25519, NULL, 256, 32},
    {"ecdsa-sha2-nistp256", "ECDSA", K_ECDSA, "nistp256", 256, 65},
    {"ecdsa-sha2-nistp384", "ECDSA", K_ECDSA, "nistp384", 384, 97},
    {"ecdsa-sha2-nistp521", "ECDSA", K_ECDSA, "nistp521", 521, 133},
    {"sk-ssh-ed25519@openssh.com", "ED25519-SK", K_SK_ED25519, NULL, 256, 32},
    {"sk-ecdsa-sha2-nistp256@openssh.com", "ECDSA-SK", K_SK_ECDSA, "nistp256", 256, 65},
    {"ssh-rsa", "RSA", K_RSA, NULL, 0, 0},
};
#define SSHKEY_NTYPES (sizeof(sshkey_types) / sizeof(sshkey_types[0]))

/* Words that start an authorized_keys options prefix (sshd(8) AUTHORIZED_KEYS FILE FORMAT). */
static const char *const sshkey_options[] = {
    "agent-forwarding",
    "cert-authority",
    "command=",
    "environment=",
    "expiry-time=",
    "from=",
    "no-agent-forwarding",
    "no-port-forwarding",
    "no-pty",
    "no-user-rc",
    "no-x11-forwarding",
    "permitlisten=",
    "permitopen=",
    "port-forwarding",
    "principals=",
    "pty",
    "no-touch-required",
    "restrict",
    "tunnel=",
    "user-rc",
    "verify-required",
    "x11-forwarding",
};

static const struct sshkey_type *
sshkey_find(const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < SSHKEY_NTYPES; i++)
		if (strlen(sshkey_types[i].name) == len &&
		    memcmp(sshkey_types[i].name, name, len) == 0)
			return &sshkey_types[i];
	return NULL;
}

/* Why a key type OpenSSH knows is refused ([p, p+len)), or NULL. */
static const char *
sshkey_refused_type(const char *p, size_t len)
{
	if (len == 7 && memcmp(p, "ssh-dss", 7) == 0)
		return "DSA keys are refused: DSA is limited to 1024 bits and OpenSSH disables it; "
		       "use ssh-ed25519";
	if (len > 21 && memcmp(p + len - 21, "-cert-v01@openssh.com", 21) == 0)
		return "certificates are not taken: give the plain public key";
	return NULL;
}

/* ---- the blob's wire format ---- */

struct sshkey_rd {
	const uint8_t *p;
	size_t left;
};

/* One RFC 4253 string; 0, or -1 when the blob is cut short. */
static int
sshkey_rd_string(struct sshkey_rd *r, const uint8_t **s, size_t *len)
{
	uint32_t n;

	if (r->left < 4)
		return -1;
	n = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 | r->p[3];
	if (n > r->left - 4)
		return -1;
	*s = r->p + 4;
	*len = n;
	r->p += 4 + n;
	r->left -= 4 + n;
	return 0;
}

/* Bits of a positive mpint (leading zero bytes skipped); -1 when negative. */
static int
sshkey_mpint_bits(const uint8_t *s, size_t len)
{
	int bits;
	uint8_t top;

	if (len > 0 && (s[0] & 0x80))
		return -1;
	while (len > 0 && s[0] == 0) {
		s++;
		len--;
	}
	if (len == 0)
		return 0;
	top = s[0];
	bits = (int)(len - 1) * 8;
	while (top) {
		bits++;
		top >>= 1;
	}
	return bits;
}

static int
sshkey_is(const uint8_t *s, size_t len, const char *want)
{
	return strlen(want) == len && memcmp(s, want, len) == 0;
}

/* Checks the blob against type t; sets *bits. */
static int
sshkey_check_blob(const struct sshkey_type *t, const uint8_t *blob, size_t bloblen, int *bits,
		  char *err, size_t errlen)
{
	struct sshkey_rd r = {blob, bloblen};
	const uint8_t *s, *e;
	size_t n, elen;
	int b;

	if (sshkey_rd_string(&r, &s, &n) != 0)
		return err_set(err, errlen, ERR_INVAL, "the key data is cut short");
	if (!sshkey_is(s, n, t->name)) {
		size_t i, shown = n < 40 ? n : 40;
		char inner[41];

		for (i = 0; i < shown; i++)
			inner[i] = s[i] >= 0x20 && s[i] < 0x7f ? (char)s[i] : '?';
		inner[shown] = '\0';
		if (sshkey_is(s, n, "ssh-dss"))
			return err_set(err, errlen, ERR_INVAL,
				       "the key data is a DSA key (ssh-dss) although the line says "
				       "%s; DSA keys are refused",
				       t->name);
		return err_set(err, errlen, ERR_INVAL,
			       "the key data is of type \"%s\" but the line says %s: the type and "
			       "the key do not match",
			       inner, t->name);
	}
	*bits = t->bits;
	switch (t->kind) {
	case K_ED25519:
	case K_SK_ED25519:
		if (sshkey_rd_string(&r, &s, &n) != 0 || n != t->point)
			return err_set(err, errlen, ERR_INVAL,
				       "the key data does not hold a %zu-byte Ed25519 key",
				       t->point);
		break;
	case K_ECDSA:
	case K_SK_ECDSA:
		if (sshkey_rd_string(&r, &s, &n) != 0 || !sshkey_is(s, n, t->curve))
			return err_set(err, errlen, ERR_INVAL,
				       "the key data does not name the curve %s of %s", t->curve,
				       t->name);
		if (sshkey_rd_string(&r, &s, &n) != 0 || n != t->point || s[0] != 0x04)
			return err_set(err, errlen, ERR_INVAL,
				       "the key data does not hold an uncompressed %s point",
				       t->curve);
		break;
	case K_RSA:
		if (sshkey_rd_string(&r, &e, &elen) != 0 || sshkey_rd_string(&r, &s, &n) != 0)
			return err_set(err, errlen, ERR_INVAL, "the key data is cut short");
		if (sshkey_mpint_bits(e, elen) < 2 || (e[elen - 1] & 1) == 0 || elen > 8)
			return err_set(err, errlen, ERR_INVAL,
				       "the RSA public exponent is not a small odd number");
		if ((b = sshkey_mpint_bits(s, n)) < 0)
			return err_set(err, errlen, ERR_INVAL, "the RSA modulus is negative");
		if (b < SSHKEY_RSA_MIN_BITS)
			return err_set(err, errlen, ERR_INVAL,
				       "this RSA key has %d bits; at least %d are required (or use "
				       "ssh-ed25519)",
				       b, SSHKEY_RSA_MIN_BITS);
		if (b > SSHKEY_RSA_MAX_BITS)
			return err_set(err, errlen, ERR_INVAL,
				       "this RSA key has %d bits; OpenSSH takes at most %d", b,
				       SSHKEY_RSA_MAX_BITS);
		*bits = b;
		break;
	}
	if (t->kind == K_SK_ED25519 || t->kind == K_SK_ECDSA) {
		/* The application ("ssh:..."), as sshkey.c in OpenSSH reads it. */
		if (sshkey_rd_string(&r, &s, &n) != 0 || n == 0)
			return err_set(err, errlen, ERR_INVAL,
				       "the security key data has no application string");
	}
	if (r.left != 0)
		return err_set(err, errlen, ERR_INVAL, "the key data has %zu bytes after the key",
			       r.left);
	return 0;
}

/* ---- the line ---- */

/* Length of a valid UTF-8 sequence at p, 0 when invalid. */
static size_t
sshkey_utf8(const unsigned char *p, uint32_t *cp)
{
	size_t n, i;
	uint32_t c;

	if (p[0] < 0x80) {
		*cp = p[0];
		return 1;
	}
	if ((p[0] & 0xe0) == 0xc0) {
		n = 2;
		c = p[0] & 0x1f;
	} else if ((p[0] & 0xf0) == 0xe0) {
		n = 3;
		c = p[0] & 0x0f;
	} else if ((p[0] & 0xf8) == 0xf0) {
		n = 4;
		c = p[0] & 0x07;
	} else {
		return 0;
	}
	for (i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (p[i] & 0x3f);
	}
	if ((n == 2 && c < 0x80) || (n == 3 && c < 0x800) || (n == 4 && c < 0x10000) ||
	    c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return n;
}

static int
sshkey_check_comment(const char *c, char *err, size_t errlen)
{
	const unsigned char *p = (const unsigned char *)c;
	uint32_t cp;
	size_t n;

	if (strlen(c) > SSHKEY_COMMENT_MAX)
		return err_set(err, errlen, ERR_INVAL,
			       "the comment is %zu bytes long; at most %d are allowed", strlen(c),
			       SSHKEY_COMMENT_MAX);
	while (*p != '\0') {
		if ((n = sshkey_utf8(p, &cp)) == 0)
			return err_set(err, errlen, ERR_INVAL, "the comment is not valid UTF-8");
		if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f))
			return err_set(err, errlen, ERR_INVAL,
				       "the comment must not contain control characters");
		if ((cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069) ||
		    cp == 0x200e || cp == 0x200f || cp == 0xfeff)
			return err_set(err, errlen, ERR_INVAL,
				       "the comment must not contain text direction or invisible "
				       "formatting characters");
		p += n;
	}
	return 0;
}

/* Number of lines of text that look like a public key ("type base64"). */
static int
sshkey_count_key_lines(const char *text)
{
	const char *p = text, *nl, *sp;
	int n = 0;

	while (*p != '\0') {
		nl = strchr(p, '\n');
		while (*p == ' ' || *p == '\t' || *p == '\r')
			p++;
		sp = p + strcspn(p, " \t\r\n");
		if (sshkey_find(p, (size_t)(sp - p)) != NULL ||
		    sshkey_refused_type(p, (size_t)(sp - p)) != NULL)
			n++;
		if (nl == NULL)
			break;
		p = nl + 1;
	}
	return n;
}

/* 1 when the first word looks like the start of an options prefix. */
static int
sshkey_is_options(const char *w, size_t len)
{
	size_t i, n;

	if (memchr(w, '=', len) != NULL || memchr(w, '"', len) != NULL ||
	    memchr(w, ',', len) != NULL)
		return 1;
	for (i = 0; i < sizeof(sshkey_options) / sizeof(sshkey_options[0]); i++) {
		n = strlen(sshkey_options[i]);
		if (sshkey_options[i][n - 1] == '=')
			n--;
		if (len == n && strncasecmp(w, sshkey_options[i], n) == 0)
			return 1;
	}
	return 0;
}

int
sshkey_parse(const char *text, struct sshkey **out, char *err, size_t errlen)
{
	const struct sshkey_type *t;
	struct sshkey *k = NULL;
	const char *p, *w, *b64, *why;
	char *copy = NULL, *b64z = NULL, *enc = NULL, *s, *e;
	uint8_t *blob = NULL, sum[CRYPTO_SHA256_LEN];
	size_t len, wlen, b64len;
	long bloblen;
	int bits = 0, rc;

	*out = NULL;
	if (text == NULL || (len = strlen(text)) == 0)
		return err_set(err, errlen, ERR_INVAL, "the key is empty");
	if (len > SSHKEY_INPUT_MAX)
		return err_set(err, errlen, ERR_INVAL,
			       "the input is %zu bytes long; a public key line is at most %d", len,
			       SSHKEY_INPUT_MAX);
	if (strstr(text, "PRIVATE KEY-----") != NULL || strstr(text, "PuTTY-User-Key-File") != NULL)
		return err_set(err, errlen, ERR_INVAL,
			       "this is a private key: never paste it anywhere; give the public "
			       "key (the .pub file, or ssh-keygen -y -f KEY)");
	if (strstr(text, "BEGIN SSH2 PUBLIC KEY") != NULL)
		return err_set(err, errlen, ERR_INVAL,
			       "this is an RFC 4716 (SSH2) public key: convert it with "
			       "ssh-keygen -i -f FILE first");
	if (strstr(text, "-----BEGIN") != NULL)
		return err_set(err, errlen, ERR_INVAL,
			       "this is a PEM file, not an OpenSSH public key line: convert it "
			       "with ssh-keygen -i -m PKCS8 -f FILE first");
	if ((copy = strdup(text)) == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	/* Blanks and line ends ("\n" or "\r\n") at the end, blanks at the start. */
	s = copy;
	e = copy + len;
	for (;;) {
		if (e > s && (e[-1] == ' ' || e[-1] == '\t')) {
			e--;
		} else if (e > s && e[-1] == '\n') {
			e--;
			if (e > s && e[-1] == '\r')
				e--;
		} else {
			break;
		}
	}
	*e = '\0';
	while (*s == ' ' || *s == '\t' || *s == '\n')
		s++;
	if (*s == '\0') {
		rc = err_set(err, errlen, ERR_INVAL, "the key is empty");
		goto fail;
	}
	if (strchr(s, '\n') != NULL) {
		int n = sshkey_count_key_lines(s);

		if (n > 1)
			rc = err_set(err, errlen, ERR_INVAL,
				     "the input holds %d keys; add one key at a time", n);
		else
			rc = err_set(err, errlen, ERR_INVAL,
				     "the key must be a single line: it has an embedded newline");
		goto fail;
	}
	if (strchr(s, '\r') != NULL) {
		rc = err_set(err, errlen, ERR_INVAL,
			     "the key must be a single line: it has an embedded carriage return");
		goto fail;
	}
	for (p = s; *p != '\0'; p++)
		if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f) {
			rc = err_set(err, errlen, ERR_INVAL,
				     "the key line contains a control character");
			goto fail;
		}
	/* type */
	w = s;
	wlen = strcspn(w, " \t");
	if ((t = sshkey_find(w, wlen)) == NULL) {
		if ((why = sshkey_refused_type(w, wlen)) != NULL) {
			rc = err_set(err, errlen, ERR_INVAL, "%s", why);
			goto fail;
		}
		if (sshkey_is_options(w, wlen) || strstr(s, " ssh-") != NULL ||
		    strstr(s, " ecdsa-") != NULL || strstr(s, " sk-") != NULL) {
			rc = err_set(err, errlen, ERR_INVAL,
				     "the line starts with options (%.*s...): give the bare key "
				     "\"type base64 comment\"; Stoke does not take "
				     "authorized_keys options",
				     (int)(wlen < 24 ? wlen : 24), w);
			goto fail;
		}
		rc = err_set(
		    err, errlen, ERR_INVAL,
		    "unknown key type \"%.*s\": use ssh-ed25519, ecdsa-sha2-nistp256/384/521, "
		    "sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com or "
		    "ssh-rsa (2048 bits or more)",
		    (int)(wlen < 40 ? wlen : 40), w);
		goto fail;
	}
	/* base64 */
	b64 = w + wlen;
	b64 += strspn(b64, " \t");
	b64len = strcspn(b64, " \t");
	if (b64len == 0) {
		rc = err_set(err, errlen, ERR_INVAL, "the key data is missing after the type %s",
			     t->name);
		goto fail;
	}
	if ((b64z = strndup(b64, b64len)) == NULL || (blob = malloc(b64len)) == NULL) {
		rc = err_set(err, errlen, ERR_NOMEM, "out of memory");
		goto fail;
	}
	if ((bloblen = crypto_unbase64(b64z, blob, b64len)) <= 0) {
		rc = err_set(err, errlen, ERR_INVAL, "the key data is not valid base64");
		goto fail;
	}
	if ((rc = sshkey_check_blob(t, blob, (size_t)bloblen, &bits, err, errlen)) != 0)
		goto fail;
	/* comment */
	p = b64 + b64len;
	p += strspn(p, " \t");
	if ((rc = sshkey_check_comment(p, err, errlen)) != 0)
		goto fail;
	crypto_sha256(blob, (size_t)bloblen, sum);
	if ((k = calloc(1, sizeof(*k))) == NULL ||
	    (enc = crypto_base64_nopad(sum, sizeof(sum))) == NULL ||
	    (k->comment = strdup(p)) == NULL ||
	    asprintf(&k->line, "%s %s%s%s", t->name, b64z, *p ? " " : "", p) < 0) {
		if (k)
			k->line = NULL;
		rc = err_set(err, errlen, ERR_NOMEM, "out of memory");
		goto fail;
	}
	snprintf(k->type, sizeof(k->type), "%s", t->name);
	k->label = t->label;
	k->bits = bits;
	snprintf(k->fingerprint, sizeof(k->fingerprint), "SHA256:%s", enc);
	*out = k;
	k = NULL;
	rc = 0;
fail:
	sshkey_free(k);
	free(enc);
	free(blob);
	free(b64z);
	free(copy);
	return rc;
}

void
sshkey_free(struct sshkey *k)
{
	if (k == NULL)
		return;
	free(k->comment);
	free(k->line);
	free(k);
}
