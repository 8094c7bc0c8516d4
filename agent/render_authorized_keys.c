/*
 * render_authorized_keys.c: builds authorized_keys text with the Stoke-managed block set
 * to a given key list, and checks and fingerprints key lines. It touches no file;
 * cmd_authorized_keys.c reads the current file and writes the result.
 */
#include "render_authorized_keys.h"
#include "buf.h"
#include "crypto.h"
#include "names.h"
#include "err.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RENDER_AUTHORIZED_KEYS_BLOB_MAX 12288

/* Decodes the base64 field of a line into blob; returns its length or -1. */
static long
render_authorized_keys_blob(const char *b64, size_t len, uint8_t *blob, size_t max)
{
	char *tmp;
	long n;

	if ((tmp = malloc(len + 1)) == NULL)
		return -1;
	memcpy(tmp, b64, len);
	tmp[len] = '\0';
	n = crypto_unbase64(tmp, blob, max);
	free(tmp);
	return n;
}

/* Splits a line into type and base64 fields (pointers into line). */
static int
render_authorized_keys_split(const char *line, const char **type, size_t *typelen, const char **b64,
			     size_t *b64len, char *err, size_t errlen)
{
	const char *sp, *end;
	size_t len, i;

	if (line == NULL || *line == '\0')
		return err_set(err, errlen, ERR_INVAL, "key line is empty");
	len = strlen(line);
	if (len > RENDER_AUTHORIZED_KEYS_LINE_MAX)
		return err_set(err, errlen, ERR_INVAL, "key line is longer than %d characters",
			       RENDER_AUTHORIZED_KEYS_LINE_MAX);
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];

		if (c == '\n' || c == '\r')
			return err_set(err, errlen, ERR_INVAL, "key must be a single line");
		if (c < 0x20 || c == 0x7f)
			return err_set(err, errlen, ERR_INVAL,
				       "key line must not contain control characters");
	}
	if ((sp = strchr(line, ' ')) == NULL)
		return err_set(err, errlen, ERR_INVAL,
			       "key line must be \"type base64 [comment]\"");
	*type = line;
	*typelen = (size_t)(sp - line);
	if (!names_ssh_key_type(line, *typelen))
		return err_set(err, errlen, ERR_INVAL,
			       "key line must start with a known key type (ssh-ed25519, ssh-rsa, "
			       "ecdsa-sha2-*, sk-*); options are not allowed");
	*b64 = sp + 1;
	end = strchr(*b64, ' ');
	*b64len = end != NULL ? (size_t)(end - *b64) : strlen(*b64);
	if (*b64len == 0)
		return err_set(err, errlen, ERR_INVAL,
			       "key line must be \"type base64 [comment]\"");
	return 0;
}

int
render_authorized_keys_check(const char *line, char *err, size_t errlen)
{
	const char *type, *b64;
	size_t typelen, b64len;
	uint8_t *blob;
	uint32_t n;
	long len;
	int rc;

	rc = render_authorized_keys_split(line, &type, &typelen, &b64, &b64len, err, errlen);
	if (rc != 0)
		return rc;
	if ((blob = malloc(RENDER_AUTHORIZED_KEYS_BLOB_MAX)) == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	len = render_authorized_keys_blob(b64, b64len, blob, RENDER_AUTHORIZED_KEYS_BLOB_MAX);
	if (len < 4) {
		rc = err_set(err, errlen, ERR_INVAL, "key is not valid base64");
		goto out;
	}
	/* The blob starts with string(type): uint32 length, then the name. */
	n = (uint32_t)blob[0] << 24 | (uint32_t)blob[1] << 16 | (uint32_t)blob[2] << 8 | blob[3];
	if (n != typelen || (size_t)len < 4 + typelen || memcmp(blob + 4, type, typelen) != 0) {
		rc = err_set(err, errlen, ERR_INVAL, "key data does not match its type %.*s",
			     (int)typelen, type);
		goto out;
	}
	if ((size_t)len == 4 + typelen) {
		rc = err_set(err, errlen, ERR_INVAL, "key data holds no key");
		goto out;
	}
	rc = 0;
out:
	free(blob);
	return rc;
}

int
render_authorized_keys_fingerprint(const char *line, char out[RENDER_AUTHORIZED_KEYS_FP_LEN],
				   char *err, size_t errlen)
{
	uint8_t sum[CRYPTO_SHA256_LEN], *blob;
	const char *type, *b64;
	size_t typelen, b64len;
	char *enc;
	long len;
	int rc;

	out[0] = '\0';
	if ((rc = render_authorized_keys_check(line, err, errlen)) != 0)
		return rc;
	render_authorized_keys_split(line, &type, &typelen, &b64, &b64len, NULL, 0);
	if ((blob = malloc(RENDER_AUTHORIZED_KEYS_BLOB_MAX)) == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	len = render_authorized_keys_blob(b64, b64len, blob, RENDER_AUTHORIZED_KEYS_BLOB_MAX);
	crypto_sha256(blob, (size_t)len, sum);
	free(blob);
	if ((enc = crypto_base64_nopad(sum, sizeof(sum))) == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	memcpy(out, "SHA256:", 7);
	memcpy(out + 7, enc, strlen(enc) + 1); /* 43 characters for 32 bytes */
	free(enc);
	return 0;
}

void
render_authorized_keys_fini(struct render_authorized_keys *r)
{
	if (r == NULL)
		return;
	free(r->text);
	for (size_t i = 0; i < r->noutside; i++)
		free(r->outside[i]);
	free(r->outside);
	memset(r, 0, sizeof(*r));
}

/* 1 when the line [p, p+len) (without its '\n') equals s. */
static int
render_authorized_keys_is(const char *p, size_t len, const char *s)
{
	return strlen(s) == len && memcmp(p, s, len) == 0;
}

/* 1 for a line that holds a key or options: not blank, not a comment. */
static int
render_authorized_keys_is_entry(const char *p, size_t len)
{
	while (len > 0 && (*p == ' ' || *p == '\t' || *p == '\r')) {
		p++;
		len--;
	}
	while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t' || p[len - 1] == '\r'))
		len--;
	return len > 0 && *p != '#';
}

static int
render_authorized_keys_keep(struct render_authorized_keys *r, const char *p, size_t len)
{
	char **v;

	if (r->noutside >= RENDER_AUTHORIZED_KEYS_MAX_KEYS * 10)
		return 0; /* report no more than that; the file itself is kept whole */
	if ((v = realloc(r->outside, sizeof(*v) * (r->noutside + 1))) == NULL)
		return ERR_NOMEM;
	r->outside = v;
	if ((v[r->noutside] = strndup(p, len)) == NULL)
		return ERR_NOMEM;
	r->noutside++;
	return 0;
}

static int
render_authorized_keys_block(struct buf *b, const char *const *keys, size_t nkeys)
{
	int rc = buf_puts(b, RENDER_AUTHORIZED_KEYS_BEGIN "\n");

	for (size_t i = 0; i < nkeys && rc == 0; i++)
		if ((rc = buf_puts(b, keys[i])) == 0)
			rc = buf_putc(b, '\n');
	if (rc == 0)
		rc = buf_puts(b, RENDER_AUTHORIZED_KEYS_END "\n");
	return rc;
}

int
render_authorized_keys(const char *current, const char *const *keys, size_t nkeys,
		       struct render_authorized_keys *out, char *err, size_t errlen)
{
	enum { BEFORE, INSIDE, AFTER } where = BEFORE;
	const char *p, *nl;
	char why[256];
	struct buf b;
	size_t lineno = 0;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	if (nkeys > RENDER_AUTHORIZED_KEYS_MAX_KEYS)
		return err_set(err, errlen, ERR_INVAL, "more than %d keys",
			       RENDER_AUTHORIZED_KEYS_MAX_KEYS);
	for (size_t i = 0; i < nkeys; i++)
		if (render_authorized_keys_check(keys[i], why, sizeof(why)) != 0)
			return err_set(err, errlen, ERR_INVAL, "keys[%zu]: %s", i, why);
	if (current == NULL)
		current = "";

	buf_init(&b, 16 * 1024 * 1024);
	for (p = current; *p != '\0' && rc == 0; p = nl != NULL ? nl + 1 : p + strlen(p)) {
		size_t len, full;

		lineno++;
		nl = strchr(p, '\n');
		len = nl != NULL ? (size_t)(nl - p) : strlen(p);
		full = nl != NULL ? len + 1 : len;
		if (render_authorized_keys_is(p, len, RENDER_AUTHORIZED_KEYS_BEGIN)) {
			if (where != BEFORE) {
				rc = err_set(err, errlen, ERR_CONFLICT,
					     "line %zu: a second \"%s\" line; fix the file by hand",
					     lineno, RENDER_AUTHORIZED_KEYS_BEGIN);
				goto fail;
			}
			where = INSIDE;
			rc = render_authorized_keys_block(&b, keys, nkeys);
			continue;
		}
		if (render_authorized_keys_is(p, len, RENDER_AUTHORIZED_KEYS_END)) {
			if (where != INSIDE) {
				rc = err_set(
				    err, errlen, ERR_CONFLICT,
				    "line %zu: \"%s\" without \"%s\" before it; fix the file "
				    "by hand",
				    lineno, RENDER_AUTHORIZED_KEYS_END,
				    RENDER_AUTHORIZED_KEYS_BEGIN);
				goto fail;
			}
			where = AFTER;
			continue;
		}
		if (where == INSIDE)
			continue; /* the old managed keys */
		if (render_authorized_keys_is_entry(p, len) &&
		    (rc = render_authorized_keys_keep(out, p, len)) != 0)
			break;
		rc = buf_append(&b, p, full);
	}
	if (rc == 0 && where == INSIDE) {
		rc = err_set(err, errlen, ERR_CONFLICT,
			     "\"%s\" without \"%s\" after it; fix the file by hand",
			     RENDER_AUTHORIZED_KEYS_BEGIN, RENDER_AUTHORIZED_KEYS_END);
		goto fail;
	}
	if (rc == 0 && where == BEFORE) {
		/* No block yet: append one, on a line of its own. */
		if (b.len > 0 && b.data[b.len - 1] != '\n')
			rc = buf_putc(&b, '\n');
		if (rc == 0)
			rc = render_authorized_keys_block(&b, keys, nkeys);
	}
	if (rc != 0) {
		rc = err_set(err, errlen, rc, "%s",
			     rc == ERR_TOOBIG ? "authorized_keys would be too large"
					      : "out of memory");
		goto fail;
	}
	out->text = buf_take(&b);
	if (out->text == NULL) {
		rc = err_set(err, errlen, ERR_NOMEM, "out of memory");
		goto fail;
	}
	return 0;
fail:
	buf_fini(&b);
	render_authorized_keys_fini(out);
	return rc;
}

/* Adds a copy of [p, p+len) to *v (at most RENDER_AUTHORIZED_KEYS_MAX_KEYS * 10 kept). */
static int
render_authorized_keys_push(char ***v, size_t *n, const char *p, size_t len)
{
	char **nv;

	if (*n >= RENDER_AUTHORIZED_KEYS_MAX_KEYS * 10)
		return 0;
	if ((nv = realloc(*v, sizeof(*nv) * (*n + 1))) == NULL)
		return ERR_NOMEM;
	*v = nv;
	if ((nv[*n] = strndup(p, len)) == NULL)
		return ERR_NOMEM;
	(*n)++;
	return 0;
}

int
render_authorized_keys_scan(const char *current, struct render_authorized_keys_scan *out, char *err,
			    size_t errlen)
{
	enum { BEFORE, INSIDE, AFTER } where = BEFORE;
	const char *p, *nl;
	size_t lineno = 0;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	for (p = current ? current : ""; *p != '\0' && rc == 0;
	     p = nl != NULL ? nl + 1 : p + strlen(p)) {
		size_t len;

		lineno++;
		nl = strchr(p, '\n');
		len = nl != NULL ? (size_t)(nl - p) : strlen(p);
		if (len > 0 && p[len - 1] == '\r')
			len--;
		if (render_authorized_keys_is(p, len, RENDER_AUTHORIZED_KEYS_BEGIN)) {
			if (where != BEFORE && out->broken[0] == '\0')
				snprintf(out->broken, sizeof(out->broken),
					 "line %zu: a second \"%s\" line", lineno,
					 RENDER_AUTHORIZED_KEYS_BEGIN);
			where = INSIDE;
			continue;
		}
		if (render_authorized_keys_is(p, len, RENDER_AUTHORIZED_KEYS_END)) {
			if (where != INSIDE && out->broken[0] == '\0')
				snprintf(out->broken, sizeof(out->broken),
					 "line %zu: \"%s\" without \"%s\" before it", lineno,
					 RENDER_AUTHORIZED_KEYS_END, RENDER_AUTHORIZED_KEYS_BEGIN);
			if (where == INSIDE)
				out->block = 1;
			where = AFTER;
			continue;
		}
		if (!render_authorized_keys_is_entry(p, len))
			continue;
		if (where == INSIDE)
			rc = render_authorized_keys_push(&out->managed, &out->nmanaged, p, len);
		else
			rc = render_authorized_keys_push(&out->outside, &out->noutside, p, len);
	}
	if (rc == 0 && where == INSIDE && out->broken[0] == '\0')
		snprintf(out->broken, sizeof(out->broken), "\"%s\" without \"%s\" after it",
			 RENDER_AUTHORIZED_KEYS_BEGIN, RENDER_AUTHORIZED_KEYS_END);
	if (rc != 0) {
		render_authorized_keys_scan_fini(out);
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	}
	return 0;
}

void
render_authorized_keys_scan_fini(struct render_authorized_keys_scan *sc)
{
	if (sc == NULL)
		return;
	for (size_t i = 0; i < sc->nmanaged; i++)
		free(sc->managed[i]);
	for (size_t i = 0; i < sc->noutside; i++)
		free(sc->outside[i]);
	free(sc->managed);
	free(sc->outside);
	memset(sc, 0, sizeof(*sc));
}
