/*
 * webhook.c: recognises, authenticates and reads git webhook deliveries from GitHub, GitLab,
 * Gitea/Forgejo and Bitbucket Cloud. It does not look up sites, remember delivery ids or queue
 * deploys: the /hooks/ HTTP handler calls it and does those. No I/O, no logging.
 */
#include "webhook.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "crypto.h"
#include "err.h"
#include "names.h"

#define WEBHOOK_MAX_HEADERS 3
#define WEBHOOK_MAX_EVENT_NAME 64
#define WEBHOOK_MAX_DELIVERY_ID 128
#define WEBHOOK_MAX_AUTHOR 256
#define WEBHOOK_SHA1_HEX 40
#define WEBHOOK_SHA256_HEX 64
#define WEBHOOK_FORM_TYPE "application/x-www-form-urlencoded"

enum webhook_auth {
	WEBHOOK_AUTH_HMAC_PREFIXED, /* "sha256=" + hex HMAC-SHA256 */
	WEBHOOK_AUTH_HMAC_BARE,	    /* hex HMAC-SHA256 */
	WEBHOOK_AUTH_TOKEN,	    /* the secret itself */
};

typedef int (*webhook_push_fn)(json_t *root, struct webhook_event *ev, char *err, size_t errlen);

static int webhook_push_refs(json_t *root, struct webhook_event *ev, char *err, size_t errlen);
static int webhook_push_bitbucket(json_t *root, struct webhook_event *ev, char *err, size_t errlen);

/* One row per provider: how to recognise, authenticate and read its deliveries. Header lists
 * are in order of preference and NULL-terminated. */
struct webhook_row {
	const char *name;
	const char *detect_hdr[WEBHOOK_MAX_HEADERS];  /* any of these present… */
	const char *detect_also[WEBHOOK_MAX_HEADERS]; /* …and, if listed, any of these */
	const char *event_hdr[WEBHOOK_MAX_HEADERS];
	const char *delivery_hdr[WEBHOOK_MAX_HEADERS];
	const char *sig_hdr[WEBHOOK_MAX_HEADERS];
	enum webhook_auth auth;
	int sign_form_payload;	/* the HMAC covers the decoded payload= of a form body (Gitea) */
	const char *ping_event; /* NULL when the provider sends none */
	const char *push_event[WEBHOOK_MAX_HEADERS];
	webhook_push_fn push;
};

static const struct webhook_row webhook_rows[WEBHOOK__PROVIDER_COUNT] = {
    [WEBHOOK_GITHUB] =
	{
	    .name = "github",
	    .detect_hdr = {"X-GitHub-Event"},
	    .event_hdr = {"X-GitHub-Event"},
	    .delivery_hdr = {"X-GitHub-Delivery"},
	    .sig_hdr = {"X-Hub-Signature-256"},
	    .auth = WEBHOOK_AUTH_HMAC_PREFIXED,
	    .ping_event = "ping",
	    .push_event = {"push"},
	    .push = webhook_push_refs,
	},
    [WEBHOOK_GITLAB] =
	{
	    .name = "gitlab",
	    .detect_hdr = {"X-Gitlab-Event"},
	    .event_hdr = {"X-Gitlab-Event"},
	    /* Idempotency-Key stays the same when GitLab retries; older GitLab lacks it. */
	    .delivery_hdr = {"Idempotency-Key", "X-Gitlab-Event-UUID"},
	    .sig_hdr = {"X-Gitlab-Token"},
	    .auth = WEBHOOK_AUTH_TOKEN,
	    .push_event = {"Push Hook", "Tag Push Hook"},
	    .push = webhook_push_refs,
	},
    [WEBHOOK_GITEA] =
	{
	    .name = "gitea",
	    .detect_hdr = {"X-Forgejo-Event", "X-Gitea-Event"},
	    .event_hdr = {"X-Forgejo-Event", "X-Gitea-Event"},
	    .delivery_hdr = {"X-Forgejo-Delivery", "X-Gitea-Delivery"},
	    .sig_hdr = {"X-Forgejo-Signature", "X-Gitea-Signature"},
	    .auth = WEBHOOK_AUTH_HMAC_BARE,
	    .sign_form_payload = 1,
	    .push_event = {"push"},
	    .push = webhook_push_refs,
	},
    [WEBHOOK_BITBUCKET] =
	{
	    .name = "bitbucket",
	    .detect_hdr = {"X-Event-Key"},
	    .detect_also = {"X-Request-UUID", "X-Hook-UUID"},
	    .event_hdr = {"X-Event-Key"},
	    .delivery_hdr = {"X-Request-UUID"},
	    .sig_hdr = {"X-Hub-Signature"},
	    .auth = WEBHOOK_AUTH_HMAC_PREFIXED,
	    .push_event = {"repo:push"},
	    .push = webhook_push_bitbucket,
	},
};

/* Gitea and Forgejo also send X-GitHub-Event, so they must be recognised before GitHub. */
static const enum webhook_provider webhook_detect_order[] = {
    WEBHOOK_GITEA,
    WEBHOOK_GITLAB,
    WEBHOOK_BITBUCKET,
    WEBHOOK_GITHUB,
};

static const struct webhook_row *
webhook_row(enum webhook_provider p)
{
	if ((int)p < 0 || p >= WEBHOOK__PROVIDER_COUNT)
		return NULL;
	return &webhook_rows[p];
}

const char *
webhook_provider_name(enum webhook_provider p)
{
	const struct webhook_row *row = webhook_row(p);

	return row != NULL ? row->name : "unknown";
}

int
webhook_provider_parse(const char *name, enum webhook_provider *p, char *err, size_t errlen)
{
	if (name != NULL && strcmp(name, "forgejo") == 0) {
		*p = WEBHOOK_GITEA;
		return 0;
	}
	for (int i = 0; name != NULL && i < WEBHOOK__PROVIDER_COUNT; i++) {
		if (strcmp(name, webhook_rows[i].name) == 0) {
			*p = (enum webhook_provider)i;
			return 0;
		}
	}
	return err_set(
	    err, errlen, ERR_INVAL,
	    "unknown git provider (expected github, gitlab, gitea, forgejo or bitbucket)");
}

/* First header of names the request has (with a non-empty value); its name in *found. */
static const char *
webhook_header_first(const char *const *names, webhook_header_cb header, void *arg,
		     const char **found)
{
	for (int i = 0; i < WEBHOOK_MAX_HEADERS && names[i] != NULL; i++) {
		const char *v = header(names[i], arg);

		if (v != NULL && v[0] != '\0') {
			if (found != NULL)
				*found = names[i];
			return v;
		}
	}
	return NULL;
}

int
webhook_detect(webhook_header_cb header, void *arg, enum webhook_provider *p, char *err,
	       size_t errlen)
{
	if (header == NULL)
		return err_set(err, errlen, ERR_INVAL, "no request headers");
	for (size_t i = 0; i < sizeof(webhook_detect_order) / sizeof(webhook_detect_order[0]);
	     i++) {
		const struct webhook_row *row = &webhook_rows[webhook_detect_order[i]];

		if (webhook_header_first(row->detect_hdr, header, arg, NULL) == NULL)
			continue;
		if (row->detect_also[0] != NULL &&
		    webhook_header_first(row->detect_also, header, arg, NULL) == NULL)
			continue;
		*p = webhook_detect_order[i];
		return 0;
	}
	return err_set(err, errlen, ERR_INVAL,
		       "not a git webhook: no X-GitHub-Event, X-Gitlab-Event, X-Gitea-Event, "
		       "X-Forgejo-Event or X-Event-Key header");
}

/* Copies s into out for an error message: at most 64 bytes, control characters as '?'. */
static const char *
webhook_quote(const char *s, char *out, size_t outlen)
{
	size_t i, n = 0;

	for (i = 0; s[i] != '\0' && n + 4 < outlen && i < 64; i++) {
		unsigned char c = (unsigned char)s[i];

		out[n++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
	}
	if (s[i] != '\0' && n + 4 <= outlen) {
		memcpy(out + n, "...", 3);
		n += 3;
	}
	out[n] = '\0';
	return out;
}

static int
webhook_is_form(webhook_header_cb header, void *arg)
{
	const char *ct = header("Content-Type", arg);
	size_t n = strlen(WEBHOOK_FORM_TYPE);

	if (ct == NULL)
		return 0;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	if (strncasecmp(ct, WEBHOOK_FORM_TYPE, n) != 0)
		return 0;
	ct += n;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	return *ct == '\0' || *ct == ';';
}

static int
webhook_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Decodes the payload= field of an application/x-www-form-urlencoded body ('+' is a space,
 * %XX a byte) into a malloc'd, NUL-terminated buffer. Other fields are ignored; a second
 * payload= field is an error.
 */
static int
webhook_form_payload(const char *body, size_t len, char **out, size_t *outlen, char *err,
		     size_t errlen)
{
	const char *field = NULL, *end = body + len, *p;
	size_t flen = 0, n = 0;
	char *buf;

	*out = NULL;
	*outlen = 0;
	for (p = body; p < end;) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *fend = amp != NULL ? amp : end;

		if ((size_t)(fend - p) >= 8 && memcmp(p, "payload=", 8) == 0) {
			if (field != NULL)
				return err_set(err, errlen, ERR_INVAL,
					       "form body has more than one payload field");
			field = p + 8;
			flen = (size_t)(fend - field);
		}
		p = amp != NULL ? amp + 1 : end;
	}
	if (field == NULL)
		return err_set(err, errlen, ERR_INVAL, "form body has no payload field");
	if ((buf = malloc(flen + 1)) == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < flen; i++) {
		if (field[i] == '+') {
			buf[n++] = ' ';
		} else if (field[i] == '%') {
			int hi = -1, lo = -1;

			if (i + 2 < flen) {
				hi = webhook_hexval(field[i + 1]);
				lo = webhook_hexval(field[i + 2]);
			}
			if (hi < 0 || lo < 0) {
				free(buf);
				return err_set(err, errlen, ERR_INVAL,
					       "form body: bad %%-escape in payload");
			}
			buf[n++] = (char)(hi << 4 | lo);
			i += 2;
		} else {
			buf[n++] = field[i];
		}
	}
	buf[n] = '\0';
	*out = buf;
	*outlen = n;
	return 0;
}

int
webhook_verify(enum webhook_provider p, webhook_header_cb header, void *arg, const char *secret,
	       const void *body, size_t len, char *err, size_t errlen)
{
	const struct webhook_row *row = webhook_row(p);
	const char *name = NULL, *value, *hex;
	uint8_t got[CRYPTO_SHA256_LEN], want[CRYPTO_SHA256_LEN];
	char *form = NULL;
	const void *msg = body;
	size_t msglen = len;
	int rc, ok;

	if (row == NULL || header == NULL)
		return err_set(err, errlen, ERR_INVAL, "unknown webhook provider");
	if (secret == NULL || secret[0] == '\0')
		return err_set(err, errlen, ERR_INVAL, "the hook has no secret to verify with");
	if (len > WEBHOOK_MAX_BODY)
		return err_set(err, errlen, ERR_TOOBIG,
			       "body of %zu bytes is over the %d-byte limit", len,
			       WEBHOOK_MAX_BODY);
	if (body == NULL && len > 0)
		return err_set(err, errlen, ERR_INVAL, "no body");
	if ((value = webhook_header_first(row->sig_hdr, header, arg, &name)) == NULL) {
		if (p == WEBHOOK_GITHUB && header("X-Hub-Signature", arg) != NULL)
			return err_set(err, errlen, ERR_AUTH,
				       "%s header missing (a SHA-1 X-Hub-Signature alone is not "
				       "accepted)",
				       row->sig_hdr[0]);
		return err_set(err, errlen, ERR_AUTH, "%s header missing", row->sig_hdr[0]);
	}

	if (row->auth == WEBHOOK_AUTH_TOKEN) {
		/* Hash both sides so that the comparison takes the same time whatever the
		 * lengths are. */
		crypto_sha256(value, strlen(value), got);
		crypto_sha256(secret, strlen(secret), want);
		ok = crypto_memeq(got, want, sizeof(got));
		explicit_bzero(want, sizeof(want));
		if (!ok)
			return err_set(err, errlen, ERR_AUTH, "%s does not match the hook's secret",
				       name);
		return 0;
	}

	hex = value;
	if (row->auth == WEBHOOK_AUTH_HMAC_PREFIXED) {
		if (strncmp(hex, "sha256=", 7) != 0)
			return err_set(err, errlen, ERR_AUTH, "%s is not of the form sha256=<hex>",
				       name);
		hex += 7;
	}
	if (strlen(hex) != 2 * CRYPTO_SHA256_LEN ||
	    crypto_unhex(hex, got, sizeof(got)) != CRYPTO_SHA256_LEN)
		return err_set(err, errlen, ERR_AUTH, "%s is not a %d-digit hex HMAC-SHA256", name,
			       2 * CRYPTO_SHA256_LEN);

	if (row->sign_form_payload && webhook_is_form(header, arg)) {
		/* Gitea signs the JSON it puts in the form, not the form. */
		if ((rc = webhook_form_payload(body, len, &form, &msglen, err, errlen)) != 0)
			return rc == ERR_NOMEM ? rc
					       : err_set(err, errlen, ERR_AUTH,
							 "%s cannot be checked: form body has no "
							 "readable payload field",
							 name);
		msg = form;
	}
	crypto_hmac_sha256(secret, strlen(secret), msg != NULL ? msg : "", msglen, want);
	ok = crypto_memeq(got, want, sizeof(got));
	explicit_bzero(want, sizeof(want));
	free(form);
	if (!ok)
		return err_set(err, errlen, ERR_AUTH,
			       "%s does not match the body signed with the hook's secret", name);
	return 0;
}

void
webhook_event_fini(struct webhook_event *ev)
{
	if (ev == NULL)
		return;
	free(ev->event_name);
	free(ev->delivery_id);
	free(ev->ref);
	free(ev->branch);
	free(ev->commit);
	free(ev->message);
	free(ev->author);
	memset(ev, 0, sizeof(*ev));
}

static int
webhook_dup(const char *s, size_t n, char **out, char *err, size_t errlen)
{
	if ((*out = strndup(s, n)) == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	return 0;
}

/* 1-64 printable ASCII characters ("push", "Push Hook", "repo:push"). */
static int
webhook_check_event_name(const char *hdr, const char *s, char *err, size_t errlen)
{
	size_t len = strlen(s);

	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return err_set(err, errlen, ERR_INVAL, "%s: not printable ASCII", hdr);
	}
	if (len > WEBHOOK_MAX_EVENT_NAME)
		return err_set(err, errlen, ERR_INVAL, "%s: longer than %d characters", hdr,
			       WEBHOOK_MAX_EVENT_NAME);
	return 0;
}

/* 1-128 of [A-Za-z0-9._:{}-]: UUIDs, with Bitbucket's braces. */
static int
webhook_check_delivery_id(const char *hdr, const char *s, char *err, size_t errlen)
{
	size_t len = strlen(s);

	if (len > WEBHOOK_MAX_DELIVERY_ID)
		return err_set(err, errlen, ERR_INVAL, "%s: longer than %d characters", hdr,
			       WEBHOOK_MAX_DELIVERY_ID);
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      strchr("._:{}-", c) != NULL))
			return err_set(err, errlen, ERR_INVAL,
				       "%s: only letters, digits and ._:{}- are allowed", hdr);
	}
	return 0;
}

/* Reads key of o as a string: missing or null gives NULL (an error when required). */
static int
webhook_get_str(json_t *o, const char *where, const char *key, int required, const char **out,
		char *err, size_t errlen)
{
	json_t *v = json_object_get(o, key);

	*out = NULL;
	if (v == NULL || json_is_null(v)) {
		if (required) {
			err_set(err, errlen, ERR_INVAL, "%s%s missing", where, key);
			return ERR_INVAL;
		}
		return 0;
	}
	if (!json_is_string(v)) {
		err_set(err, errlen, ERR_INVAL, "%s%s is not a string", where, key);
		return ERR_INVAL;
	}
	*out = json_string_value(v);
	return 0;
}

/* Like webhook_get_str for an object; missing or null gives NULL. */
static int
webhook_get_obj(json_t *o, const char *where, const char *key, int required, json_t **out,
		char *err, size_t errlen)
{
	json_t *v = json_object_get(o, key);

	*out = NULL;
	if (v == NULL || json_is_null(v)) {
		if (required) {
			err_set(err, errlen, ERR_INVAL, "%s%s missing", where, key);
			return ERR_INVAL;
		}
		return 0;
	}
	if (!json_is_object(v)) {
		err_set(err, errlen, ERR_INVAL, "%s%s is not an object", where, key);
		return ERR_INVAL;
	}
	*out = v;
	return 0;
}

/* A commit id: 40 (SHA-1) or 64 (SHA-256) lower-case hex digits. */
static int
webhook_check_sha(const char *what, const char *s, char *err, size_t errlen)
{
	size_t len = strlen(s);
	char q[80];

	if (len != WEBHOOK_SHA1_HEX && len != WEBHOOK_SHA256_HEX)
		goto bad;
	for (size_t i = 0; i < len; i++) {
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			goto bad;
	}
	return 0;
bad:
	return err_set(err, errlen, ERR_INVAL,
		       "%s \"%s\" is not a commit id (40 or 64 lower-case hex digits)", what,
		       webhook_quote(s, q, sizeof(q)));
}

static int
webhook_sha_is_zero(const char *s)
{
	return s[0] != '\0' && strspn(s, "0") == strlen(s);
}

/* Sets ref, and branch or is_tag, from a full ref name. */
static int
webhook_set_ref(struct webhook_event *ev, const char *ref, char *err, size_t errlen)
{
	const char *name;
	char q[80], why[128];
	int tag;

	if (strncmp(ref, "refs/heads/", 11) == 0) {
		name = ref + 11;
		tag = 0;
	} else if (strncmp(ref, "refs/tags/", 10) == 0) {
		name = ref + 10;
		tag = 1;
	} else {
		return err_set(err, errlen, ERR_INVAL, "ref \"%s\" is neither a branch nor a tag",
			       webhook_quote(ref, q, sizeof(q)));
	}
	/* Tag names follow the same check-ref-format rules as branch names. */
	if (names_branch(name, why, sizeof(why)) != 0)
		return err_set(err, errlen, ERR_INVAL, "ref \"%s\": %s name %s",
			       webhook_quote(ref, q, sizeof(q)), tag ? "tag" : "branch", why);
	if (webhook_dup(ref, strlen(ref), &ev->ref, err, errlen) != 0)
		return ERR_NOMEM;
	ev->is_tag = tag;
	if (!tag && webhook_dup(name, strlen(name), &ev->branch, err, errlen) != 0)
		return ERR_NOMEM;
	return 0;
}

/*
 * A malloc'd copy of s cut to max bytes on a UTF-8 character boundary (jansson only hands out
 * valid UTF-8), trailing white space removed, control characters replaced by '?' (newline and
 * tab kept when keep_lines; carriage returns dropped).
 */
static char *
webhook_clean(const char *s, size_t max, int keep_lines)
{
	size_t len = strlen(s), n = 0;
	char *out;

	if (len > max) {
		len = max;
		while (len > 0 && ((unsigned char)s[len] & 0xc0) == 0x80)
			len--;
	}
	while (len > 0 && strchr(" \t\r\n", s[len - 1]) != NULL)
		len--;
	if ((out = malloc(len + 1)) == NULL)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (keep_lines && c == '\r')
			continue;
		if (keep_lines && (c == '\n' || c == '\t'))
			out[n++] = (char)c;
		else
			out[n++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
	}
	out[n] = '\0';
	return out;
}

static int
webhook_set_message(struct webhook_event *ev, const char *msg, char *err, size_t errlen)
{
	if (msg == NULL)
		return 0;
	if ((ev->message = webhook_clean(msg, WEBHOOK_MAX_MESSAGE, 1)) == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	return 0;
}

/* "Name <email>", "Name" or "<email>" from either part (NULL or empty when unknown). */
static int
webhook_set_author(struct webhook_event *ev, const char *name, const char *email, char *err,
		   size_t errlen)
{
	char buf[2 * WEBHOOK_MAX_AUTHOR];
	int has_name = name != NULL && name[0] != '\0';
	int has_email = email != NULL && email[0] != '\0';

	if (!has_name && !has_email)
		return 0;
	snprintf(buf, sizeof(buf), "%s%s%s%s%s", has_name ? name : "",
		 has_name && has_email ? " " : "", has_email ? "<" : "", has_email ? email : "",
		 has_email ? ">" : "");
	if ((ev->author = webhook_clean(buf, WEBHOOK_MAX_AUTHOR, 0)) == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	return 0;
}

/* The entry describing commit id: head_commit when it is that commit, else the entry of
 * commits[] with that id; NULL when the payload does not describe it. */
static json_t *
webhook_find_commit(json_t *root, const char *id)
{
	json_t *c = json_object_get(root, "head_commit");
	json_t *list = json_object_get(root, "commits"), *v;
	size_t i;

	if (json_is_object(c) && json_is_string(json_object_get(c, "id")) &&
	    strcmp(json_string_value(json_object_get(c, "id")), id) == 0)
		return c;
	if (!json_is_array(list))
		return NULL;
	json_array_foreach(list, i, v)
	{
		json_t *vid = json_object_get(v, "id");

		if (json_is_string(vid) && strcmp(json_string_value(vid), id) == 0)
			return v;
	}
	return NULL;
}

/*
 * GitHub, GitLab and Gitea pushes: ref, before/after, optional deleted (GitHub) and
 * checkout_sha (GitLab), and commits[] / head_commit with message and author{name,email}.
 */
static int
webhook_push_refs(json_t *root, struct webhook_event *ev, char *err, size_t errlen)
{
	const char *ref, *after, *checkout, *commit, *msg = NULL, *name = NULL, *email = NULL;
	json_t *deleted, *meta, *author = NULL;
	int rc;

	if ((rc = webhook_get_str(root, "", "ref", 1, &ref, err, errlen)) != 0 ||
	    (rc = webhook_get_str(root, "", "after", 1, &after, err, errlen)) != 0 ||
	    (rc = webhook_get_str(root, "", "checkout_sha", 0, &checkout, err, errlen)) != 0)
		return rc;
	if ((rc = webhook_check_sha("after", after, err, errlen)) != 0)
		return rc;
	deleted = json_object_get(root, "deleted");
	if (deleted != NULL && !json_is_boolean(deleted))
		return err_set(err, errlen, ERR_INVAL, "deleted is not a boolean");
	if ((rc = webhook_set_ref(ev, ref, err, errlen)) != 0)
		return rc;
	if (json_is_true(deleted) || webhook_sha_is_zero(after)) {
		ev->deleted = 1;
		return 0;
	}

	/* GitLab's checkout_sha is the commit a tag points to; after may be the tag object. */
	commit = checkout != NULL ? checkout : after;
	if ((rc = webhook_check_sha("checkout_sha", commit, err, errlen)) != 0)
		return rc;
	if (webhook_sha_is_zero(commit))
		return err_set(err, errlen, ERR_INVAL, "pushed commit is all zeros");
	if ((rc = webhook_dup(commit, strlen(commit), &ev->commit, err, errlen)) != 0)
		return rc;

	if ((meta = webhook_find_commit(root, commit)) == NULL)
		return 0;
	if ((rc = webhook_get_str(meta, "commit.", "message", 0, &msg, err, errlen)) != 0 ||
	    (rc = webhook_get_obj(meta, "commit.", "author", 0, &author, err, errlen)) != 0)
		return rc;
	if (author != NULL &&
	    ((rc = webhook_get_str(author, "commit.author.", "name", 0, &name, err, errlen)) != 0 ||
	     (rc = webhook_get_str(author, "commit.author.", "email", 0, &email, err, errlen)) !=
		 0))
		return rc;
	if ((rc = webhook_set_message(ev, msg, err, errlen)) != 0)
		return rc;
	return webhook_set_author(ev, name, email, err, errlen);
}

/*
 * Bitbucket Cloud repo:push: push.changes[0].{new,old}.{type,name,target}. One delivery can
 * carry several changes (one per ref pushed); only the first is read.
 */
#define WEBHOOK_BB_NEW "push.changes[0].new."
#define WEBHOOK_BB_TARGET "push.changes[0].new.target."
#define WEBHOOK_BB_AUTHOR "push.changes[0].new.target.author."

static int
webhook_push_bitbucket(json_t *root, struct webhook_event *ev, char *err, size_t errlen)
{
	const char *type, *name, *hash, *msg = NULL, *raw = NULL, *display = NULL, *where;
	json_t *push, *changes, *change, *nw, *old, *side, *target, *author = NULL, *user = NULL;
	char ref[256], q[80];
	int rc;

	if ((rc = webhook_get_obj(root, "", "push", 1, &push, err, errlen)) != 0)
		return rc;
	changes = json_object_get(push, "changes");
	if (!json_is_array(changes) || json_array_size(changes) == 0)
		return err_set(err, errlen, ERR_INVAL, "push.changes missing or empty");
	change = json_array_get(changes, 0);
	if (!json_is_object(change))
		return err_set(err, errlen, ERR_INVAL, "push.changes[0] is not an object");
	if ((rc = webhook_get_obj(change, "push.changes[0].", "new", 0, &nw, err, errlen)) != 0 ||
	    (rc = webhook_get_obj(change, "push.changes[0].", "old", 0, &old, err, errlen)) != 0)
		return rc;
	/* A deleted ref has new: null; its name is in old. */
	side = nw != NULL ? nw : old;
	where = nw != NULL ? WEBHOOK_BB_NEW : "push.changes[0].old.";
	if (side == NULL)
		return err_set(err, errlen, ERR_INVAL, "push.changes[0] has neither new nor old");
	if ((rc = webhook_get_str(side, where, "type", 1, &type, err, errlen)) != 0 ||
	    (rc = webhook_get_str(side, where, "name", 1, &name, err, errlen)) != 0)
		return rc;
	if (strlen(name) > 200)
		return err_set(err, errlen, ERR_INVAL, "%sname is too long", where);
	if (strcmp(type, "branch") == 0 || strcmp(type, "named_branch") == 0)
		snprintf(ref, sizeof(ref), "refs/heads/%s", name);
	else if (strcmp(type, "tag") == 0 || strcmp(type, "annotated_tag") == 0)
		snprintf(ref, sizeof(ref), "refs/tags/%s", name);
	else
		return err_set(err, errlen, ERR_INVAL,
			       "%stype \"%s\" is neither a branch nor a tag", where,
			       webhook_quote(type, q, sizeof(q)));
	if ((rc = webhook_set_ref(ev, ref, err, errlen)) != 0)
		return rc;
	if (nw == NULL) {
		ev->deleted = 1;
		return 0;
	}

	if ((rc = webhook_get_obj(nw, WEBHOOK_BB_NEW, "target", 1, &target, err, errlen)) != 0 ||
	    (rc = webhook_get_str(target, WEBHOOK_BB_TARGET, "hash", 1, &hash, err, errlen)) != 0)
		return rc;
	if ((rc = webhook_check_sha(WEBHOOK_BB_TARGET "hash", hash, err, errlen)) != 0)
		return rc;
	if (webhook_sha_is_zero(hash))
		return err_set(err, errlen, ERR_INVAL, "pushed commit is all zeros");
	if ((rc = webhook_dup(hash, strlen(hash), &ev->commit, err, errlen)) != 0)
		return rc;
	if ((rc = webhook_get_str(target, WEBHOOK_BB_TARGET, "message", 0, &msg, err, errlen)) !=
		0 ||
	    (rc = webhook_get_obj(target, WEBHOOK_BB_TARGET, "author", 0, &author, err, errlen)) !=
		0)
		return rc;
	if (author != NULL) {
		/* The API's commit author is {raw: "Name <email>", user: {display_name…}};
		 * Atlassian's sample payload puts the user's fields in author itself. */
		if ((rc = webhook_get_str(author, WEBHOOK_BB_AUTHOR, "raw", 0, &raw, err,
					  errlen)) != 0 ||
		    (rc = webhook_get_obj(author, WEBHOOK_BB_AUTHOR, "user", 0, &user, err,
					  errlen)) != 0 ||
		    (rc = webhook_get_str(user != NULL ? user : author, WEBHOOK_BB_AUTHOR,
					  "display_name", 0, &display, err, errlen)) != 0)
			return rc;
	}
	if ((rc = webhook_set_message(ev, msg, err, errlen)) != 0)
		return rc;
	if (raw != NULL && raw[0] != '\0') {
		if ((ev->author = webhook_clean(raw, WEBHOOK_MAX_AUTHOR, 0)) == NULL)
			return err_set(err, errlen, ERR_NOMEM, "out of memory");
		return 0;
	}
	return webhook_set_author(ev, display, NULL, err, errlen);
}

static enum webhook_kind
webhook_kind_of(const struct webhook_row *row, const char *event)
{
	if (row->ping_event != NULL && strcmp(event, row->ping_event) == 0)
		return WEBHOOK_PING;
	for (int i = 0; i < WEBHOOK_MAX_HEADERS && row->push_event[i] != NULL; i++) {
		if (strcmp(event, row->push_event[i]) == 0)
			return WEBHOOK_PUSH;
	}
	return WEBHOOK_OTHER;
}

int
webhook_parse(enum webhook_provider p, webhook_header_cb header, void *arg, const void *body,
	      size_t len, struct webhook_event *ev, char *err, size_t errlen)
{
	const struct webhook_row *row = webhook_row(p);
	const char *event, *delivery, *hdr = NULL;
	const char *json = body;
	char *form = NULL;
	size_t jsonlen = len;
	json_t *root = NULL;
	json_error_t jerr;
	int rc;

	memset(ev, 0, sizeof(*ev));
	if (row == NULL || header == NULL)
		return err_set(err, errlen, ERR_INVAL, "unknown webhook provider");
	if (len > WEBHOOK_MAX_BODY)
		return err_set(err, errlen, ERR_TOOBIG,
			       "body of %zu bytes is over the %d-byte limit", len,
			       WEBHOOK_MAX_BODY);
	if (body == NULL && len > 0)
		return err_set(err, errlen, ERR_INVAL, "no body");

	if ((event = webhook_header_first(row->event_hdr, header, arg, &hdr)) == NULL)
		return err_set(err, errlen, ERR_INVAL, "%s header missing", row->event_hdr[0]);
	if ((rc = webhook_check_event_name(hdr, event, err, errlen)) != 0)
		goto fail;
	if ((rc = webhook_dup(event, strlen(event), &ev->event_name, err, errlen)) != 0)
		goto fail;
	if ((delivery = webhook_header_first(row->delivery_hdr, header, arg, &hdr)) != NULL) {
		if ((rc = webhook_check_delivery_id(hdr, delivery, err, errlen)) != 0 ||
		    (rc = webhook_dup(delivery, strlen(delivery), &ev->delivery_id, err, errlen)) !=
			0)
			goto fail;
	}
	ev->kind = webhook_kind_of(row, event);
	if (ev->kind != WEBHOOK_PUSH)
		return 0;

	if (webhook_is_form(header, arg)) {
		if ((rc = webhook_form_payload(body, len, &form, &jsonlen, err, errlen)) != 0)
			goto fail;
		json = form;
	}
	if (json == NULL || jsonlen == 0) {
		rc = err_set(err, errlen, ERR_INVAL, "empty body");
		goto fail;
	}
	if ((root = json_loadb(json, jsonlen, JSON_REJECT_DUPLICATES, &jerr)) == NULL) {
		rc = err_set(err, errlen, ERR_INVAL, "body is not valid JSON: %s (line %d)",
			     jerr.text, jerr.line);
		goto fail;
	}
	if (!json_is_object(root)) {
		rc = err_set(err, errlen, ERR_INVAL, "body is not a JSON object");
		goto fail;
	}
	if ((rc = row->push(root, ev, err, errlen)) != 0)
		goto fail;
	json_decref(root);
	free(form);
	return 0;

fail:
	json_decref(root);
	free(form);
	webhook_event_fini(ev);
	return rc;
}
