/*
 * webhook_test.c: unit tests of webhook.c against the published deliveries and signature
 * vectors in tests/fixtures/webhooks/ (see its SOURCES.md): detection, verification (and the
 * ways it must fail), and the branch, commit, message, author and delivery id of each fixture.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "crypto.h"
#include "err.h"
#include "webhook.h"

#define WEBHOOK_TEST_MAX_HDRS 32
/* The secret the derived fixtures were signed with (see SOURCES.md, derived/). */
#define WEBHOOK_TEST_SECRET "stoke-webhook-test"

struct webhook_test_hdrs {
	size_t n;
	char name[WEBHOOK_TEST_MAX_HDRS][64];
	char value[WEBHOOK_TEST_MAX_HDRS][256];
};

struct webhook_test_file {
	char *data;
	size_t len;
};

static const char *
webhook_test_header_cb(const char *name, void *arg)
{
	struct webhook_test_hdrs *h = arg;

	for (size_t i = 0; i < h->n; i++) {
		if (strcasecmp(h->name[i], name) == 0)
			return h->value[i];
	}
	return NULL;
}

/* Sets (or with value NULL removes) a header. */
static void
webhook_test_hdr(struct webhook_test_hdrs *h, const char *name, const char *value)
{
	for (size_t i = 0; i < h->n; i++) {
		if (strcasecmp(h->name[i], name) != 0)
			continue;
		if (value == NULL) {
			h->n--;
			memmove(h->name[i], h->name[h->n], sizeof(h->name[i]));
			memmove(h->value[i], h->value[h->n], sizeof(h->value[i]));
		} else {
			snprintf(h->value[i], sizeof(h->value[i]), "%s", value);
		}
		return;
	}
	if (value == NULL)
		return;
	assert_true(h->n < WEBHOOK_TEST_MAX_HDRS);
	snprintf(h->name[h->n], sizeof(h->name[0]), "%s", name);
	snprintf(h->value[h->n], sizeof(h->value[0]), "%s", value);
	h->n++;
}

static const char *
webhook_test_dir(void)
{
	static char dir[4096];
	const char *src = getenv("STOKE_SRC");
	char *slash;

	if (src != NULL && src[0] != '\0') {
		snprintf(dir, sizeof(dir), "%s/tests/fixtures/webhooks", src);
		return dir;
	}
	/* This file is <source root>/controller/webhook_test.c. */
	snprintf(dir, sizeof(dir), "%s", __FILE__);
	if ((slash = strrchr(dir, '/')) != NULL)
		*slash = '\0';
	else
		snprintf(dir, sizeof(dir), ".");
	strncat(dir, "/../tests/fixtures/webhooks", sizeof(dir) - strlen(dir) - 1);
	return dir;
}

/* Reads a fixture (exact bytes, NUL added); the test fails when it is missing. */
static struct webhook_test_file
webhook_test_read(const char *rel)
{
	struct webhook_test_file f = {NULL, 0};
	char path[4352];
	FILE *fp;
	long n;

	snprintf(path, sizeof(path), "%s/%s", webhook_test_dir(), rel);
	if ((fp = fopen(path, "rb")) == NULL)
		fail_msg("cannot open fixture %s (set STOKE_SRC to the source tree)", path);
	assert_int_equal(fseek(fp, 0, SEEK_END), 0);
	n = ftell(fp);
	assert_true(n >= 0);
	rewind(fp);
	f.data = malloc((size_t)n + 1);
	assert_non_null(f.data);
	assert_int_equal(fread(f.data, 1, (size_t)n, fp), (size_t)n);
	f.data[n] = '\0';
	f.len = (size_t)n;
	fclose(fp);
	return f;
}

/* Adds the "Name: value" lines of a fixture file ('#' lines and others skipped). */
static void
webhook_test_hdr_load(struct webhook_test_hdrs *h, const char *rel)
{
	struct webhook_test_file f = webhook_test_read(rel);
	char *save = NULL;

	for (char *line = strtok_r(f.data, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		char *colon = strstr(line, ": ");

		if (line[0] == '#' || colon == NULL)
			continue;
		*colon = '\0';
		line[strcspn(line, "\r")] = '\0';
		colon[2 + strcspn(colon + 2, "\r")] = '\0';
		webhook_test_hdr(h, line, colon + 2);
	}
	free(f.data);
}

static void
webhook_test_str(const char *what, const char *got, const char *want)
{
	if (want == NULL && got != NULL)
		fail_msg("%s: expected NULL, got \"%s\"", what, got);
	if (want != NULL && got == NULL)
		fail_msg("%s: expected \"%s\", got NULL", what, want);
	if (want != NULL && strcmp(got, want) != 0)
		fail_msg("%s: expected \"%s\", got \"%s\"", what, want, got);
}

struct webhook_test_want {
	const char *ref, *branch;
	int is_tag, deleted;
	const char *commit, *message, *author;
};

static void
webhook_test_expect_push(const struct webhook_event *ev, const struct webhook_test_want *w)
{
	assert_int_equal(ev->kind, WEBHOOK_PUSH);
	webhook_test_str("ref", ev->ref, w->ref);
	webhook_test_str("branch", ev->branch, w->branch);
	assert_int_equal(ev->is_tag, w->is_tag);
	assert_int_equal(ev->deleted, w->deleted);
	webhook_test_str("commit", ev->commit, w->commit);
	webhook_test_str("message", ev->message, w->message);
	webhook_test_str("author", ev->author, w->author);
}

/* Parses body (a fixture path, or literal text when rel is NULL) and expects success. */
static void
webhook_test_parse_ok(enum webhook_provider p, struct webhook_test_hdrs *h, const char *rel,
		      const char *text, struct webhook_event *ev)
{
	struct webhook_test_file f = {NULL, 0};
	char err[256] = "";
	int rc;

	if (rel != NULL)
		f = webhook_test_read(rel);
	rc = webhook_parse(p, webhook_test_header_cb, h, rel != NULL ? f.data : text,
			   rel != NULL ? f.len : strlen(text), ev, err, sizeof(err));
	free(f.data);
	if (rc != 0)
		fail_msg("parse %s: %s (%d)", rel != NULL ? rel : "text", err, rc);
}

/* Parses text and expects code, with a message that contains want (when not NULL). */
static void
webhook_test_parse_fails(enum webhook_provider p, struct webhook_test_hdrs *h, const char *text,
			 size_t len, int code, const char *want)
{
	struct webhook_event ev;
	char err[256] = "";
	int rc;

	rc = webhook_parse(p, webhook_test_header_cb, h, text, len, &ev, err, sizeof(err));
	if (rc != code)
		fail_msg("parse of \"%.60s\": expected %s, got %s (%s)", text, err_name(code),
			 err_name(rc), err);
	if (err[0] == '\0')
		fail_msg("parse of \"%.60s\" failed without a message", text);
	if (want != NULL && strstr(err, want) == NULL)
		fail_msg("parse of \"%.60s\": message \"%s\" lacks \"%s\"", text, err, want);
	/* On failure the event is left empty. */
	assert_null(ev.event_name);
	assert_null(ev.ref);
	assert_null(ev.commit);
	webhook_event_fini(&ev);
}

/* Dumps root and parses it as a body. */
static int
webhook_test_parse_json(enum webhook_provider p, struct webhook_test_hdrs *h, json_t *root,
			struct webhook_event *ev, char *err, size_t errlen)
{
	char *s = json_dumps(root, JSON_COMPACT);
	int rc;

	assert_non_null(s);
	rc = webhook_parse(p, webhook_test_header_cb, h, s, strlen(s), ev, err, errlen);
	free(s);
	return rc;
}

static json_t *
webhook_test_load_json(const char *rel)
{
	struct webhook_test_file f = webhook_test_read(rel);
	json_error_t jerr;
	json_t *root = json_loadb(f.data, f.len, 0, &jerr);

	if (root == NULL)
		fail_msg("fixture %s: %s", rel, jerr.text);
	free(f.data);
	return root;
}

static int
webhook_test_verify(enum webhook_provider p, struct webhook_test_hdrs *h, const char *secret,
		    const void *body, size_t len, char *err, size_t errlen)
{
	err[0] = '\0';
	return webhook_verify(p, webhook_test_header_cb, h, secret, body, len, err, errlen);
}

/* Expects ERR_AUTH with a message that reveals neither the secret nor the expected value. */
static void
webhook_test_verify_fails(enum webhook_provider p, struct webhook_test_hdrs *h, const char *secret,
			  const void *body, size_t len, const char *expected, const char *what)
{
	char err[256];
	int rc = webhook_test_verify(p, h, secret, body, len, err, sizeof(err));

	if (rc != ERR_AUTH)
		fail_msg("%s: expected auth failure, got %s (%s)", what, err_name(rc), err);
	if (err[0] == '\0')
		fail_msg("%s: failed without a message", what);
	if (strstr(err, secret) != NULL)
		fail_msg("%s: message reveals the secret: %s", what, err);
	if (expected != NULL && strstr(err, expected) != NULL)
		fail_msg("%s: message reveals the expected signature: %s", what, err);
}

static void
webhook_test_provider_names(void **state)
{
	enum webhook_provider p;
	const char *names[] = {"github", "gitlab", "gitea", "bitbucket"};

	(void)state;
	for (int i = 0; i < 4; i++) {
		assert_string_equal(webhook_provider_name((enum webhook_provider)i), names[i]);
		assert_int_equal(webhook_provider_parse(names[i], &p, NULL, 0), 0);
		assert_int_equal(p, i);
	}
	assert_int_equal(webhook_provider_parse("forgejo", &p, NULL, 0), 0);
	assert_int_equal(p, WEBHOOK_GITEA);
	assert_int_equal(webhook_provider_parse("GitHub", &p, NULL, 0), ERR_INVAL);
	assert_int_equal(webhook_provider_parse("gogs", &p, NULL, 0), ERR_INVAL);
	assert_int_equal(webhook_provider_parse(NULL, &p, NULL, 0), ERR_INVAL);
	assert_string_equal(webhook_provider_name((enum webhook_provider)42), "unknown");
	assert_string_equal(webhook_provider_name((enum webhook_provider) - 1), "unknown");
}

static void
webhook_test_detect_one(const struct webhook_test_hdrs *h, int want_rc, enum webhook_provider want,
			const char *what)
{
	enum webhook_provider p = (enum webhook_provider) - 1;
	char err[256] = "";
	int rc = webhook_detect(webhook_test_header_cb, (void *)h, &p, err, sizeof(err));

	if (rc != want_rc)
		fail_msg("%s: detect returned %s (%s)", what, err_name(rc), err);
	if (rc == 0 && p != want)
		fail_msg("%s: detected %s, expected %s", what, webhook_provider_name(p),
			 webhook_provider_name(want));
	if (rc != 0 && err[0] == '\0')
		fail_msg("%s: failed without a message", what);
}

static void
webhook_test_detect(void **state)
{
	struct webhook_test_hdrs h;

	(void)state;
	memset(&h, 0, sizeof(h));
	webhook_test_hdr_load(&h, "github/example_delivery.headers.txt");
	webhook_test_detect_one(&h, 0, WEBHOOK_GITHUB, "github example delivery");

	memset(&h, 0, sizeof(h));
	webhook_test_hdr_load(&h, "github/example_delivery.older_docs.headers.txt");
	webhook_test_detect_one(&h, 0, WEBHOOK_GITHUB, "github older docs delivery");

	memset(&h, 0, sizeof(h));
	webhook_test_hdr_load(&h, "gitlab/push.delivery_headers.txt");
	webhook_test_detect_one(&h, 0, WEBHOOK_GITLAB, "gitlab delivery");

	/* Gitea also sends X-GitHub-Event and X-GitHub-Delivery. */
	memset(&h, 0, sizeof(h));
	webhook_test_hdr_load(&h, "gitea/push.headers.txt");
	assert_non_null(webhook_test_header_cb("X-GitHub-Event", &h));
	webhook_test_detect_one(&h, 0, WEBHOOK_GITEA, "gitea delivery");

	memset(&h, 0, sizeof(h));
	webhook_test_hdr(&h, "X-Forgejo-Event", "push");
	webhook_test_hdr(&h, "X-GitHub-Event", "push");
	webhook_test_detect_one(&h, 0, WEBHOOK_GITEA, "forgejo delivery");

	/* Bitbucket's documented headers (headers.documented.txt); names in another case. */
	memset(&h, 0, sizeof(h));
	webhook_test_hdr(&h, "x-event-key", "repo:push");
	webhook_test_detect_one(&h, ERR_INVAL, 0, "X-Event-Key alone");
	webhook_test_hdr(&h, "x-hook-uuid", "{a54f16da-24e9-4d7f-a3a7-b1ba2cd98aa3}");
	webhook_test_detect_one(&h, 0, WEBHOOK_BITBUCKET, "bitbucket with hook uuid");
	webhook_test_hdr(&h, "x-hook-uuid", NULL);
	webhook_test_hdr(&h, "X-Request-UUID", "afe2a4e8-64a1-4a3c-a4a3-3a9f8a4c6a51");
	webhook_test_detect_one(&h, 0, WEBHOOK_BITBUCKET, "bitbucket with request uuid");

	memset(&h, 0, sizeof(h));
	webhook_test_detect_one(&h, ERR_INVAL, 0, "no headers");
	webhook_test_hdr(&h, "X-GitHub-Event", "");
	webhook_test_hdr(&h, "User-Agent", "curl/8.0");
	webhook_test_detect_one(&h, ERR_INVAL, 0, "empty X-GitHub-Event");
}

/* The two published GitHub vectors, and the same HMACs under each provider's header. */
static void
webhook_test_verify_vectors(void **state)
{
	struct webhook_test_file secret =
	    webhook_test_read("github/validating_test_vector.secret.txt");
	struct webhook_test_file body =
	    webhook_test_read("github/validating_test_vector.payload.txt");
	struct webhook_test_hdrs h, o;
	const char *sig, *osig;
	char err[256], upper[80];

	(void)state;
	memset(&h, 0, sizeof(h));
	webhook_test_hdr_load(&h, "github/validating_test_vector.txt");
	sig = webhook_test_header_cb("X-Hub-Signature-256", &h);
	assert_non_null(sig);
	assert_string_equal(
	    sig, "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
	assert_string_equal(secret.data, "It's a Secret to Everybody");
	assert_int_equal(body.len, 13);
	if (webhook_test_verify(WEBHOOK_GITHUB, &h, secret.data, body.data, body.len, err,
				sizeof(err)) != 0)
		fail_msg("github docs vector: %s", err);

	memset(&o, 0, sizeof(o));
	webhook_test_hdr_load(&o, "github/octokit_sign_vector.txt");
	osig = webhook_test_header_cb("X-Hub-Signature-256", &o);
	assert_non_null(osig);
	assert_string_equal(webhook_test_header_cb("secret", &o), "mysecret");
	assert_string_equal(webhook_test_header_cb("payload", &o), "{\"foo\":\"bar\"}");
	if (webhook_test_verify(WEBHOOK_GITHUB, &o, "mysecret", "{\"foo\":\"bar\"}", 13, err,
				sizeof(err)) != 0)
		fail_msg("octokit vector: %s", err);

	/* Bitbucket: the same sha256=<hex> format, under X-Hub-Signature. */
	memset(&o, 0, sizeof(o));
	webhook_test_hdr(&o, "X-Hub-Signature", sig);
	if (webhook_test_verify(WEBHOOK_BITBUCKET, &o, secret.data, body.data, body.len, err,
				sizeof(err)) != 0)
		fail_msg("bitbucket: %s", err);

	/* Gitea: bare hex in X-Gitea-Signature, or X-Forgejo-Signature. */
	memset(&o, 0, sizeof(o));
	webhook_test_hdr(&o, "X-Gitea-Signature", sig + 7);
	if (webhook_test_verify(WEBHOOK_GITEA, &o, secret.data, body.data, body.len, err,
				sizeof(err)) != 0)
		fail_msg("gitea: %s", err);
	webhook_test_hdr(&o, "X-Gitea-Signature", NULL);
	webhook_test_hdr(&o, "X-Forgejo-Signature", sig + 7);
	if (webhook_test_verify(WEBHOOK_GITEA, &o, secret.data, body.data, body.len, err,
				sizeof(err)) != 0)
		fail_msg("forgejo: %s", err);

	/* Decided: hex digits in upper case decode to the same bytes and are accepted. */
	memset(&o, 0, sizeof(o));
	snprintf(upper, sizeof(upper), "sha256=%s", sig + 7);
	for (char *c = upper + 7; *c != '\0'; c++)
		*c = (*c >= 'a' && *c <= 'f') ? (char)(*c - 'a' + 'A') : *c;
	webhook_test_hdr(&o, "X-Hub-Signature-256", upper);
	if (webhook_test_verify(WEBHOOK_GITHUB, &o, secret.data, body.data, body.len, err,
				sizeof(err)) != 0)
		fail_msg("upper-case hex: %s", err);
	free(secret.data);
	free(body.data);
}

static void
webhook_test_verify_rejects(void **state)
{
	struct webhook_test_file body =
	    webhook_test_read("github/validating_test_vector.payload.txt");
	const char *secret = "It's a Secret to Everybody";
	const char *hex = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
	const char *bad_values[] = {
	    /* wrong prefix */
	    "sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
	    "SHA256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
	    "sha256:757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
	    " sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
	    "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
	    /* truncated, one digit short, one too many, odd, not hex */
	    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e",
	    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1",
	    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e170",
	    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1700",
	    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1g",
	    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17 ",
	    "sha256=",
	    /* one hex digit flipped (first and last) */
	    "sha256=857107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
	    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e16",
	};
	struct webhook_test_hdrs h;
	char err[256], *flipped;

	(void)state;
	for (size_t i = 0; i < sizeof(bad_values) / sizeof(bad_values[0]); i++) {
		memset(&h, 0, sizeof(h));
		webhook_test_hdr(&h, "X-Hub-Signature-256", bad_values[i]);
		webhook_test_verify_fails(WEBHOOK_GITHUB, &h, secret, body.data, body.len, hex,
					  bad_values[i]);
	}

	memset(&h, 0, sizeof(h));
	webhook_test_hdr_load(&h, "github/validating_test_vector.txt");
	/* a flipped bit in the body, a byte more, a byte less */
	flipped = malloc(body.len + 1);
	assert_non_null(flipped);
	memcpy(flipped, body.data, body.len + 1);
	flipped[5] ^= 0x01;
	webhook_test_verify_fails(WEBHOOK_GITHUB, &h, secret, flipped, body.len, hex, "flipped");
	free(flipped);
	webhook_test_verify_fails(WEBHOOK_GITHUB, &h, secret, body.data, body.len - 1, hex,
				  "short body");
	webhook_test_verify_fails(WEBHOOK_GITHUB, &h, secret, "Hello, World!\n", 14, hex,
				  "longer body");
	webhook_test_verify_fails(WEBHOOK_GITHUB, &h, secret, "", 0, hex, "empty body");
	/* wrong secrets: another one, a prefix of it, it with a byte more */
	webhook_test_verify_fails(WEBHOOK_GITHUB, &h, "mysecret", body.data, body.len, hex,
				  "wrong secret");
	webhook_test_verify_fails(WEBHOOK_GITHUB, &h, "It's a Secret", body.data, body.len, hex,
				  "secret prefix");
	webhook_test_verify_fails(WEBHOOK_GITHUB, &h, "It's a Secret to Everybody!", body.data,
				  body.len, hex, "secret longer");
	/* the right signature under another provider's header does not count */
	webhook_test_verify_fails(WEBHOOK_BITBUCKET, &h, secret, body.data, body.len, hex,
				  "bitbucket wants X-Hub-Signature");
	webhook_test_verify_fails(WEBHOOK_GITEA, &h, secret, body.data, body.len, hex,
				  "gitea wants X-Gitea-Signature");

	/* missing header */
	memset(&h, 0, sizeof(h));
	webhook_test_verify_fails(WEBHOOK_GITHUB, &h, secret, body.data, body.len, hex,
				  "no header");
	assert_int_equal(
	    webhook_test_verify(WEBHOOK_GITHUB, &h, secret, body.data, body.len, err, sizeof(err)),
	    ERR_AUTH);
	assert_string_equal(err, "X-Hub-Signature-256 header missing");
	webhook_test_hdr(&h, "X-Hub-Signature-256", "");
	webhook_test_verify_fails(WEBHOOK_GITHUB, &h, secret, body.data, body.len, hex,
				  "empty header");

	/* GitHub's legacy SHA-1 signature is not accepted, even when it is right. */
	{
		struct webhook_test_file lb =
		    webhook_test_read("github/legacy_push_sha1.body.json");
		struct webhook_test_file ls =
		    webhook_test_read("github/legacy_push_sha1.secret.txt");

		memset(&h, 0, sizeof(h));
		webhook_test_hdr_load(&h, "github/legacy_push_sha1.headers.txt");
		webhook_test_verify_fails(WEBHOOK_GITHUB, &h, ls.data, lb.data, lb.len, NULL,
					  "legacy sha1 without prefix");
		assert_int_equal(webhook_test_verify(WEBHOOK_GITHUB, &h, ls.data, lb.data, lb.len,
						     err, sizeof(err)),
				 ERR_AUTH);
		assert_non_null(strstr(err, "SHA-1"));
		webhook_test_hdr(&h, "X-Hub-Signature",
				 "sha1=f68df0375d7b03e3eb29b4cf9f9ec12e08f42ff8");
		webhook_test_verify_fails(WEBHOOK_GITHUB, &h, ls.data, lb.data, lb.len, NULL,
					  "legacy sha1 with prefix");
		/* Bitbucket's X-Hub-Signature must be sha256=. */
		webhook_test_verify_fails(WEBHOOK_BITBUCKET, &h, ls.data, lb.data, lb.len, NULL,
					  "bitbucket sha1");
		free(lb.data);
		free(ls.data);
	}

	/* Gitea's header is bare hex: a prefix makes it malformed. */
	memset(&h, 0, sizeof(h));
	webhook_test_hdr(&h, "X-Gitea-Signature",
			 "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
	webhook_test_verify_fails(WEBHOOK_GITEA, &h, secret, body.data, body.len, hex,
				  "gitea prefixed");
	/* X-Forgejo-Signature is preferred: a wrong one fails even beside a right Gitea one. */
	webhook_test_hdr(&h, "X-Gitea-Signature", hex);
	webhook_test_hdr(&h, "X-Forgejo-Signature",
			 "0000000000000000000000000000000000000000000000000000000000000000");
	webhook_test_verify_fails(WEBHOOK_GITEA, &h, secret, body.data, body.len, hex,
				  "forgejo wrong");
	free(body.data);
}

static void
webhook_test_verify_gitlab(void **state)
{
	struct webhook_test_file body = webhook_test_read("gitlab/push.payload.json");
	struct webhook_test_hdrs h;
	char err[256];

	(void)state;
	memset(&h, 0, sizeof(h));
	webhook_test_hdr_load(&h, "gitlab/push.delivery_headers.txt");
	/* The recorded delivery's token is masked as "[REDACTED]". */
	assert_string_equal(webhook_test_header_cb("X-Gitlab-Token", &h), "[REDACTED]");
	webhook_test_verify_fails(WEBHOOK_GITLAB, &h, "s3cret-token", body.data, body.len, NULL,
				  "redacted token");
	assert_int_equal(webhook_test_verify(WEBHOOK_GITLAB, &h, "[REDACTED]", body.data, body.len,
					     err, sizeof(err)),
			 0);

	webhook_test_hdr(&h, "X-Gitlab-Token", "s3cret-token");
	assert_int_equal(webhook_test_verify(WEBHOOK_GITLAB, &h, "s3cret-token", body.data,
					     body.len, err, sizeof(err)),
			 0);
	/* the token does not depend on the body */
	assert_int_equal(
	    webhook_test_verify(WEBHOOK_GITLAB, &h, "s3cret-token", "{}", 2, err, sizeof(err)), 0);
	webhook_test_verify_fails(WEBHOOK_GITLAB, &h, "s3cret-tokem", body.data, body.len, NULL,
				  "last byte differs");
	webhook_test_verify_fails(WEBHOOK_GITLAB, &h, "s3cret-token2", body.data, body.len, NULL,
				  "longer secret");
	webhook_test_verify_fails(WEBHOOK_GITLAB, &h, "s3cret", body.data, body.len, NULL,
				  "token longer than secret");
	webhook_test_verify_fails(WEBHOOK_GITLAB, &h, "S3CRET-TOKEN", body.data, body.len, NULL,
				  "case differs");
	webhook_test_hdr(&h, "X-Gitlab-Token", "");
	webhook_test_verify_fails(WEBHOOK_GITLAB, &h, "s3cret-token", body.data, body.len, NULL,
				  "empty token");
	webhook_test_hdr(&h, "X-Gitlab-Token", NULL);
	webhook_test_verify_fails(WEBHOOK_GITLAB, &h, "s3cret-token", body.data, body.len, NULL,
				  "no token");
	free(body.data);
}

/* Form-encoded deliveries: GitHub signs the form body, Gitea the JSON inside it. */
static void
webhook_test_verify_form(void **state)
{
	struct webhook_test_file gh = webhook_test_read("derived/github_push_new_branch.form.txt");
	struct webhook_test_file gt = webhook_test_read("derived/gitea_push.form.txt");
	struct webhook_test_file gtjson = webhook_test_read("gitea/push.payload.json");
	const char *gh_sig =
	    "sha256=0e99ea40e5d7cc56494160da17585da7c9a2ca76fc6e8b4960cfdcf2ad187088";
	const char *gt_sig = "62cfd3cec237220fa2a794a1c410ad1fb85b5c812bd397008c2b31ba9d98d513";
	struct webhook_test_hdrs h;
	char err[256];

	(void)state;
	memset(&h, 0, sizeof(h));
	webhook_test_hdr(&h, "Content-Type", "application/x-www-form-urlencoded");
	webhook_test_hdr(&h, "X-Hub-Signature-256", gh_sig);
	if (webhook_test_verify(WEBHOOK_GITHUB, &h, WEBHOOK_TEST_SECRET, gh.data, gh.len, err,
				sizeof(err)) != 0)
		fail_msg("github form: %s", err);

	memset(&h, 0, sizeof(h));
	webhook_test_hdr(&h, "Content-Type", "application/x-www-form-urlencoded; charset=utf-8");
	webhook_test_hdr(&h, "X-Gitea-Signature", gt_sig);
	if (webhook_test_verify(WEBHOOK_GITEA, &h, WEBHOOK_TEST_SECRET, gt.data, gt.len, err,
				sizeof(err)) != 0)
		fail_msg("gitea form: %s", err);
	webhook_test_verify_fails(WEBHOOK_GITEA, &h, "other", gt.data, gt.len, gt_sig,
				  "gitea form, wrong secret");
	/* The same JSON sent as JSON carries the same signature. */
	webhook_test_hdr(&h, "Content-Type", "application/json");
	if (webhook_test_verify(WEBHOOK_GITEA, &h, WEBHOOK_TEST_SECRET, gtjson.data, gtjson.len,
				err, sizeof(err)) != 0)
		fail_msg("gitea json: %s", err);
	/* A form body declared as JSON is checked as it is, and fails. */
	webhook_test_verify_fails(WEBHOOK_GITEA, &h, WEBHOOK_TEST_SECRET, gt.data, gt.len, gt_sig,
				  "gitea form sent as json");
	free(gh.data);
	free(gt.data);
	free(gtjson.data);
}

static void
webhook_test_verify_limits(void **state)
{
	struct webhook_test_hdrs h;
	char err[256], *big;

	(void)state;
	memset(&h, 0, sizeof(h));
	webhook_test_hdr(&h, "X-Hub-Signature-256",
			 "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
	big = calloc(1, WEBHOOK_MAX_BODY + 1);
	assert_non_null(big);
	assert_int_equal(webhook_test_verify(WEBHOOK_GITHUB, &h, "x", big, WEBHOOK_MAX_BODY + 1,
					     err, sizeof(err)),
			 ERR_TOOBIG);
	/* exactly the limit is checked (and fails only on the signature) */
	assert_int_equal(
	    webhook_test_verify(WEBHOOK_GITHUB, &h, "x", big, WEBHOOK_MAX_BODY, err, sizeof(err)),
	    ERR_AUTH);
	free(big);
	assert_int_equal(
	    webhook_test_verify(WEBHOOK_GITHUB, &h, "", "Hello, World!", 13, err, sizeof(err)),
	    ERR_INVAL);
	assert_int_equal(
	    webhook_test_verify(WEBHOOK_GITHUB, &h, NULL, "Hello, World!", 13, err, sizeof(err)),
	    ERR_INVAL);
	assert_int_equal(webhook_test_verify((enum webhook_provider)9, &h, "x", "Hello, World!", 13,
					     err, sizeof(err)),
			 ERR_INVAL);
	/* NULL error buffer is allowed */
	assert_int_equal(webhook_verify(WEBHOOK_GITHUB, webhook_test_header_cb, &h,
					"It's a Secret to Everybody", "Hello, World!", 13, NULL, 0),
			 0);
}

static void
webhook_test_parse_github(void **state)
{
	struct webhook_test_hdrs h;
	struct webhook_event ev;

	(void)state;
	memset(&h, 0, sizeof(h));
	webhook_test_hdr_load(&h, "github/example_delivery.headers.txt");
	webhook_test_hdr(&h, "X-GitHub-Event", "push");
	webhook_test_parse_ok(WEBHOOK_GITHUB, &h, "github/push_new_branch.payload.json", NULL, &ev);
	webhook_test_expect_push(&ev,
				 &(struct webhook_test_want){
				     .ref = "refs/heads/master",
				     .branch = "master",
				     .commit = "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
				     .message = "Initial commit",
				     .author = "Codertocat "
					       "<21031067+Codertocat@users.noreply.github.com>",
				 });
	webhook_test_str("delivery", ev.delivery_id, "72d3162e-cc78-11e3-81ab-4c9367dc0958");
	webhook_test_str("event", ev.event_name, "push");
	webhook_event_fini(&ev);
	assert_null(ev.ref);
	webhook_event_fini(&ev); /* twice is harmless */
	webhook_event_fini(NULL);

	webhook_test_parse_ok(WEBHOOK_GITHUB, &h, "github/push_tag_deleted.payload.json", NULL,
			      &ev);
	webhook_test_expect_push(
	    &ev,
	    &(struct webhook_test_want){.ref = "refs/tags/simple-tag", .is_tag = 1, .deleted = 1});
	webhook_event_fini(&ev);

	webhook_test_parse_ok(WEBHOOK_GITHUB, &h, "github/push_with_organization.payload.json",
			      NULL, &ev);
	webhook_test_expect_push(
	    &ev,
	    &(struct webhook_test_want){.ref = "refs/tags/simple-tag", .is_tag = 1, .deleted = 1});
	webhook_event_fini(&ev);

	/* The old docs' push (head_commit, non-zero before), without a delivery id. */
	memset(&h, 0, sizeof(h));
	webhook_test_hdr(&h, "X-GitHub-Event", "push");
	webhook_test_parse_ok(WEBHOOK_GITHUB, &h, "github/legacy_push_sha1.body.json", NULL, &ev);
	webhook_test_expect_push(
	    &ev, &(struct webhook_test_want){
		     .ref = "refs/heads/master",
		     .branch = "master",
		     .commit = "1481a2de7b2a7d02428ad93446ab166be7793fbb",
		     .message = "Rename madame-bovary.txt to words/madame-bovary.txt",
		     .author = "Garen Torikian <lolwut@noway.biz>",
		 });
	assert_null(ev.delivery_id);
	webhook_event_fini(&ev);

	/* ping: answered, body not needed */
	webhook_test_hdr(&h, "X-GitHub-Event", "ping");
	webhook_test_hdr(&h, "X-GitHub-Delivery", "d2a1c1f0-0f1e-11ee-8b4a-5a4b3c2d1e0f");
	webhook_test_parse_ok(WEBHOOK_GITHUB, &h, "github/ping.payload.json", NULL, &ev);
	assert_int_equal(ev.kind, WEBHOOK_PING);
	webhook_test_str("event", ev.event_name, "ping");
	webhook_test_str("delivery", ev.delivery_id, "d2a1c1f0-0f1e-11ee-8b4a-5a4b3c2d1e0f");
	assert_null(ev.ref);
	assert_null(ev.commit);
	webhook_event_fini(&ev);

	/* any other event is reported by name and not parsed */
	webhook_test_hdr(&h, "X-GitHub-Event", "issues");
	webhook_test_parse_ok(WEBHOOK_GITHUB, &h, NULL, "not json", &ev);
	assert_int_equal(ev.kind, WEBHOOK_OTHER);
	webhook_test_str("event", ev.event_name, "issues");
	webhook_event_fini(&ev);
	/* a push payload under another event name is not a push */
	webhook_test_hdr(&h, "X-GitHub-Event", "Push");
	webhook_test_parse_ok(WEBHOOK_GITHUB, &h, "github/push_new_branch.payload.json", NULL, &ev);
	assert_int_equal(ev.kind, WEBHOOK_OTHER);
	assert_null(ev.commit);
	webhook_event_fini(&ev);
}

static void
webhook_test_parse_github_form(void **state)
{
	struct webhook_test_hdrs h;
	struct webhook_event ev;

	(void)state;
	memset(&h, 0, sizeof(h));
	webhook_test_hdr(&h, "X-GitHub-Event", "push");
	webhook_test_hdr(&h, "Content-Type", "Application/X-WWW-Form-Urlencoded");
	webhook_test_parse_ok(WEBHOOK_GITHUB, &h, "derived/github_push_new_branch.form.txt", NULL,
			      &ev);
	webhook_test_expect_push(&ev,
				 &(struct webhook_test_want){
				     .ref = "refs/heads/master",
				     .branch = "master",
				     .commit = "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
				     .message = "Initial commit",
				     .author = "Codertocat "
					       "<21031067+Codertocat@users.noreply.github.com>",
				 });
	webhook_event_fini(&ev);

	/* other fields are ignored, '+' is a space, %2B a plus */
	webhook_test_parse_ok(
	    WEBHOOK_GITHUB, &h, NULL,
	    "a=1&payload=%7B%22ref%22%3A%22refs%2Fheads%2Fa%2Bb%22%2C%22after%22%3A"
	    "%22da1560886d4f094c3e6c9ef40349f7d38b5d27d7%22%2C%22head_commit%22%3A%7B"
	    "%22id%22%3A%22da1560886d4f094c3e6c9ef40349f7d38b5d27d7%22%2C%22message%"
	    "22%3A%22two+words%22%7D%7D&b=2",
	    &ev);
	webhook_test_expect_push(&ev, &(struct webhook_test_want){
					  .ref = "refs/heads/a+b",
					  .branch = "a+b",
					  .commit = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
					  .message = "two words",
				      });
	webhook_event_fini(&ev);

	webhook_test_parse_fails(WEBHOOK_GITHUB, &h, "payloadx=%7B%7D", 15, ERR_INVAL,
				 "no payload field");
	webhook_test_parse_fails(WEBHOOK_GITHUB, &h, "payload=%7B%7D&payload=%7B%7D", 29, ERR_INVAL,
				 "more than one");
	webhook_test_parse_fails(WEBHOOK_GITHUB, &h, "payload=%7B%7", 13, ERR_INVAL, "escape");
	webhook_test_parse_fails(WEBHOOK_GITHUB, &h, "payload=%7B%zz%7D", 17, ERR_INVAL, "escape");
	webhook_test_parse_fails(WEBHOOK_GITHUB, &h, "payload=", 8, ERR_INVAL, "empty");
	/* JSON sent with the form content type is not a form */
	webhook_test_parse_fails(WEBHOOK_GITHUB, &h, "{\"ref\":\"refs/heads/main\"}", 25, ERR_INVAL,
				 "payload");
}

static void
webhook_test_parse_gitlab(void **state)
{
	struct webhook_test_hdrs h;
	struct webhook_event ev;

	(void)state;
	memset(&h, 0, sizeof(h));
	webhook_test_hdr_load(&h, "gitlab/push.delivery_headers.txt");
	/* the documented push: the head commit is the last of commits[] */
	webhook_test_parse_ok(WEBHOOK_GITLAB, &h, "gitlab/push.payload.json", NULL, &ev);
	webhook_test_expect_push(&ev, &(struct webhook_test_want){
					  .ref = "refs/heads/master",
					  .branch = "master",
					  .commit = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
					  .message = "fixed readme",
					  .author = "GitLab dev user <gitlabdev@dv6700.(none)>",
				      });
	/* Idempotency-Key (stable across retries) rather than X-Gitlab-Event-UUID */
	webhook_test_str("delivery", ev.delivery_id, "3a427872-00df-429c-9bc9-a9475de2efe4");
	webhook_test_str("event", ev.event_name, "Push Hook");
	webhook_event_fini(&ev);

	/* the recorded delivery: the head commit is the first of commits[] */
	webhook_test_parse_ok(WEBHOOK_GITLAB, &h, "gitlab/push_ssh_port.payload.json", NULL, &ev);
	webhook_test_expect_push(&ev, &(struct webhook_test_want){
					  .ref = "refs/heads/master",
					  .branch = "master",
					  .commit = "f15b32277d2c55c6c595845a87109b09c913c556",
					  .message = "v1.5.2",
					  .author = "Andrew Lunny <[REDACTED]>",
				      });
	webhook_event_fini(&ev);

	/* older GitLab without Idempotency-Key: X-Gitlab-Event-UUID */
	webhook_test_hdr(&h, "Idempotency-Key", NULL);
	webhook_test_parse_ok(WEBHOOK_GITLAB, &h, "gitlab/push.go-playground.payload.json", NULL,
			      &ev);
	webhook_test_expect_push(&ev, &(struct webhook_test_want){
					  .ref = "refs/heads/master",
					  .branch = "master",
					  .commit = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
					  .message = "fixed readme",
					  .author = "GitLab dev user <gitlabdev@dv6700.(none)>",
				      });
	webhook_test_str("delivery", ev.delivery_id, "9cebe914-4827-408f-b014-cfa23a47a35f");
	webhook_event_fini(&ev);

	/* tag push: commit from checkout_sha, no commits listed */
	memset(&h, 0, sizeof(h));
	webhook_test_hdr_load(&h, "gitlab/tag_push.event_header.txt");
	webhook_test_parse_ok(WEBHOOK_GITLAB, &h, "gitlab/tag_push.payload.json", NULL, &ev);
	webhook_test_expect_push(&ev, &(struct webhook_test_want){
					  .ref = "refs/tags/v1.0.0",
					  .is_tag = 1,
					  .commit = "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
				      });
	webhook_test_str("event", ev.event_name, "Tag Push Hook");
	assert_null(ev.delivery_id);
	webhook_event_fini(&ev);

	/* GitLab sends no ping; other hooks are reported by name */
	webhook_test_hdr(&h, "X-Gitlab-Event", "Merge Request Hook");
	webhook_test_parse_ok(WEBHOOK_GITLAB, &h, NULL, "{}", &ev);
	assert_int_equal(ev.kind, WEBHOOK_OTHER);
	webhook_test_str("event", ev.event_name, "Merge Request Hook");
	webhook_event_fini(&ev);
}

static void
webhook_test_parse_gitea(void **state)
{
	struct webhook_test_hdrs h;
	struct webhook_event ev;

	(void)state;
	memset(&h, 0, sizeof(h));
	webhook_test_hdr_load(&h, "gitea/push.headers.txt");
	webhook_test_parse_ok(WEBHOOK_GITEA, &h, "gitea/push.payload.json", NULL, &ev);
	webhook_test_expect_push(&ev, &(struct webhook_test_want){
					  .ref = "refs/heads/develop",
					  .branch = "develop",
					  .commit = "bffeb74224043ba2feb48d137756c8a9331c449a",
					  .message = "Webhooks Yay!",
					  .author = "Gitea <someone@gitea.io>",
				      });
	webhook_test_str("delivery", ev.delivery_id, "f6266f16-1bf3-46a5-9ea4-602e06ead473");
	webhook_test_str("event", ev.event_name, "push");
	webhook_event_fini(&ev);

	webhook_test_parse_ok(WEBHOOK_GITEA, &h, "gitea/push.go-playground.payload.json", NULL,
			      &ev);
	webhook_test_expect_push(&ev, &(struct webhook_test_want){
					  .ref = "refs/heads/master",
					  .branch = "master",
					  .commit = "67b56589a45103f891bdee7c0546e5d40bc02001",
					  .message = "example",
					  .author = "example <example@example.com>",
				      });
	webhook_event_fini(&ev);

	/* form-encoded, as Gitea's "POST form" setting sends it */
	webhook_test_hdr(&h, "Content-Type", "application/x-www-form-urlencoded");
	webhook_test_parse_ok(WEBHOOK_GITEA, &h, "derived/gitea_push.form.txt", NULL, &ev);
	webhook_test_expect_push(&ev, &(struct webhook_test_want){
					  .ref = "refs/heads/develop",
					  .branch = "develop",
					  .commit = "bffeb74224043ba2feb48d137756c8a9331c449a",
					  .message = "Webhooks Yay!",
					  .author = "Gitea <someone@gitea.io>",
				      });
	webhook_event_fini(&ev);

	/* Forgejo's own headers win over Gitea's */
	memset(&h, 0, sizeof(h));
	webhook_test_hdr(&h, "X-Gitea-Event", "push");
	webhook_test_hdr(&h, "X-Gitea-Delivery", "f6266f16-1bf3-46a5-9ea4-602e06ead473");
	webhook_test_hdr(&h, "X-Forgejo-Event", "create");
	webhook_test_hdr(&h, "X-Forgejo-Delivery", "0b1c2d3e-1bf3-46a5-9ea4-602e06ead473");
	webhook_test_parse_ok(WEBHOOK_GITEA, &h, "gitea/push.payload.json", NULL, &ev);
	assert_int_equal(ev.kind, WEBHOOK_OTHER);
	webhook_test_str("event", ev.event_name, "create");
	webhook_test_str("delivery", ev.delivery_id, "0b1c2d3e-1bf3-46a5-9ea4-602e06ead473");
	webhook_event_fini(&ev);

	/* Gitea has no ping event */
	webhook_test_hdr(&h, "X-Forgejo-Event", "ping");
	webhook_test_parse_ok(WEBHOOK_GITEA, &h, NULL, "{}", &ev);
	assert_int_equal(ev.kind, WEBHOOK_OTHER);
	webhook_event_fini(&ev);
}

static void
webhook_test_parse_bitbucket(void **state)
{
	struct webhook_test_hdrs h;
	struct webhook_event ev;
	json_t *root, *change, *author;
	char err[256];

	(void)state;
	memset(&h, 0, sizeof(h));
	webhook_test_hdr(&h, "X-Event-Key", "repo:push");
	webhook_test_hdr(&h, "X-Hook-UUID", "{a54f16da-24e9-4d7f-a3a7-b1ba2cd98aa3}");
	webhook_test_hdr(&h, "X-Request-UUID", "{0a1b2c3d-24e9-4d7f-a3a7-b1ba2cd98aa3}");
	webhook_test_hdr(&h, "X-Attempt-Number", "1");
	webhook_test_parse_ok(WEBHOOK_BITBUCKET, &h, "bitbucket/repo_push.payload.json", NULL, &ev);
	/* the sample's author is the user object itself: display name, no e-mail */
	webhook_test_expect_push(&ev, &(struct webhook_test_want){
					  .ref = "refs/heads/name-of-branch",
					  .branch = "name-of-branch",
					  .commit = "709d658dc5b6d6afcd46049c2f332ee3f515a67d",
					  .message = "new commit message",
					  .author = "Emma",
				      });
	webhook_test_str("delivery", ev.delivery_id, "{0a1b2c3d-24e9-4d7f-a3a7-b1ba2cd98aa3}");
	webhook_test_str("event", ev.event_name, "repo:push");
	webhook_event_fini(&ev);

	/* the API's commit author shape: {raw, user{display_name}} */
	root = webhook_test_load_json("bitbucket/repo_push.payload.json");
	change = json_array_get(json_object_get(json_object_get(root, "push"), "changes"), 0);
	author = json_pack("{s:s, s:{s:s}}", "raw", "Emma Paris <emma@example.com>", "user",
			   "display_name", "Emma");
	json_object_set_new(json_object_get(json_object_get(change, "new"), "target"), "author",
			    author);
	assert_int_equal(
	    webhook_test_parse_json(WEBHOOK_BITBUCKET, &h, root, &ev, err, sizeof(err)), 0);
	webhook_test_str("author", ev.author, "Emma Paris <emma@example.com>");
	webhook_event_fini(&ev);
	json_object_del(author, "raw");
	assert_int_equal(
	    webhook_test_parse_json(WEBHOOK_BITBUCKET, &h, root, &ev, err, sizeof(err)), 0);
	webhook_test_str("author", ev.author, "Emma");
	webhook_event_fini(&ev);

	/* a tag */
	json_object_set_new(json_object_get(change, "new"), "type", json_string("tag"));
	json_object_set_new(json_object_get(change, "new"), "name", json_string("v2.0"));
	assert_int_equal(
	    webhook_test_parse_json(WEBHOOK_BITBUCKET, &h, root, &ev, err, sizeof(err)), 0);
	webhook_test_expect_push(&ev, &(struct webhook_test_want){
					  .ref = "refs/tags/v2.0",
					  .is_tag = 1,
					  .commit = "709d658dc5b6d6afcd46049c2f332ee3f515a67d",
					  .message = "new commit message",
					  .author = "Emma",
				      });
	webhook_event_fini(&ev);

	/* a deleted branch: new is null, the name comes from old */
	json_object_set_new(change, "new", json_null());
	json_object_set_new(change, "closed", json_true());
	assert_int_equal(
	    webhook_test_parse_json(WEBHOOK_BITBUCKET, &h, root, &ev, err, sizeof(err)), 0);
	webhook_test_expect_push(&ev, &(struct webhook_test_want){
					  .ref = "refs/heads/name-of-branch",
					  .branch = "name-of-branch",
					  .deleted = 1,
				      });
	webhook_event_fini(&ev);

	/* neither side, unknown type, empty changes */
	json_object_set_new(change, "old", json_null());
	assert_int_equal(
	    webhook_test_parse_json(WEBHOOK_BITBUCKET, &h, root, &ev, err, sizeof(err)), ERR_INVAL);
	json_object_set_new(change, "old",
			    json_pack("{s:s, s:s}", "type", "bookmark", "name", "default"));
	assert_int_equal(
	    webhook_test_parse_json(WEBHOOK_BITBUCKET, &h, root, &ev, err, sizeof(err)), ERR_INVAL);
	assert_non_null(strstr(err, "bookmark"));
	json_array_clear(json_object_get(json_object_get(root, "push"), "changes"));
	assert_int_equal(
	    webhook_test_parse_json(WEBHOOK_BITBUCKET, &h, root, &ev, err, sizeof(err)), ERR_INVAL);
	assert_non_null(strstr(err, "changes"));
	json_decref(root);

	/* other events */
	webhook_test_hdr(&h, "X-Event-Key", "pullrequest:created");
	webhook_test_parse_ok(WEBHOOK_BITBUCKET, &h, NULL, "{}", &ev);
	assert_int_equal(ev.kind, WEBHOOK_OTHER);
	webhook_event_fini(&ev);
}

/* Branch deletions and tag pushes in the GitHub-shaped payloads (GitLab, Gitea). */
static void
webhook_test_parse_deletions(void **state)
{
	struct webhook_test_hdrs h;
	struct webhook_event ev;
	json_t *root;
	char err[256];

	(void)state;
	/* GitLab deletes a branch with after = zeros and checkout_sha = null */
	memset(&h, 0, sizeof(h));
	webhook_test_hdr(&h, "X-Gitlab-Event", "Push Hook");
	root = webhook_test_load_json("gitlab/push.payload.json");
	json_object_set_new(root, "after", json_string("0000000000000000000000000000000000000000"));
	json_object_set_new(root, "checkout_sha", json_null());
	json_object_set_new(root, "commits", json_array());
	assert_int_equal(webhook_test_parse_json(WEBHOOK_GITLAB, &h, root, &ev, err, sizeof(err)),
			 0);
	webhook_test_expect_push(&ev, &(struct webhook_test_want){.ref = "refs/heads/master",
								  .branch = "master",
								  .deleted = 1});
	webhook_event_fini(&ev);
	json_decref(root);

	/* Gitea: a tag pushed, then deleted */
	memset(&h, 0, sizeof(h));
	webhook_test_hdr(&h, "X-Gitea-Event", "push");
	root = webhook_test_load_json("gitea/push.payload.json");
	json_object_set_new(root, "ref", json_string("refs/tags/v1.2.3"));
	assert_int_equal(webhook_test_parse_json(WEBHOOK_GITEA, &h, root, &ev, err, sizeof(err)),
			 0);
	webhook_test_expect_push(&ev, &(struct webhook_test_want){
					  .ref = "refs/tags/v1.2.3",
					  .is_tag = 1,
					  .commit = "bffeb74224043ba2feb48d137756c8a9331c449a",
					  .message = "Webhooks Yay!",
					  .author = "Gitea <someone@gitea.io>",
				      });
	webhook_event_fini(&ev);
	json_object_set_new(root, "after", json_string("0000000000000000000000000000000000000000"));
	assert_int_equal(webhook_test_parse_json(WEBHOOK_GITEA, &h, root, &ev, err, sizeof(err)),
			 0);
	webhook_test_expect_push(
	    &ev, &(struct webhook_test_want){.ref = "refs/tags/v1.2.3", .is_tag = 1, .deleted = 1});
	webhook_event_fini(&ev);
	json_decref(root);

	/* GitHub: deleted: true is enough; a new branch (before = zeros) is not a deletion */
	memset(&h, 0, sizeof(h));
	webhook_test_hdr(&h, "X-GitHub-Event", "push");
	root = webhook_test_load_json("github/push_new_branch.payload.json");
	json_object_set_new(root, "deleted", json_true());
	assert_int_equal(webhook_test_parse_json(WEBHOOK_GITHUB, &h, root, &ev, err, sizeof(err)),
			 0);
	assert_int_equal(ev.deleted, 1);
	assert_null(ev.commit);
	assert_null(ev.message);
	webhook_event_fini(&ev);
	/* head_commit for another commit is not used; commits[] is searched instead */
	json_object_set_new(root, "deleted", json_false());
	json_object_set_new(json_object_get(root, "head_commit"), "id",
			    json_string("1111111111111111111111111111111111111111"));
	assert_int_equal(webhook_test_parse_json(WEBHOOK_GITHUB, &h, root, &ev, err, sizeof(err)),
			 0);
	webhook_test_expect_push(&ev,
				 &(struct webhook_test_want){
				     .ref = "refs/heads/master",
				     .branch = "master",
				     .commit = "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
				     .message = "Initial commit",
				     .author = "Codertocat "
					       "<21031067+Codertocat@users.noreply.github.com>",
				 });
	webhook_event_fini(&ev);
	/* no description of the commit at all: commit only */
	json_object_set_new(root, "commits", json_array());
	json_object_set_new(root, "head_commit", json_null());
	assert_int_equal(webhook_test_parse_json(WEBHOOK_GITHUB, &h, root, &ev, err, sizeof(err)),
			 0);
	webhook_test_expect_push(&ev, &(struct webhook_test_want){
					  .ref = "refs/heads/master",
					  .branch = "master",
					  .commit = "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
				      });
	webhook_event_fini(&ev);
	json_decref(root);
}

/* A GitHub push body with one field replaced (value is raw JSON). */
static void
webhook_test_bad_field(struct webhook_test_hdrs *h, const char *key, const char *value,
		       const char *want)
{
	json_t *root = webhook_test_load_json("github/push_new_branch.payload.json");
	char *s;

	if (value == NULL) {
		json_object_del(root, key);
	} else {
		json_t *v = json_loads(value, JSON_DECODE_ANY, NULL);

		assert_non_null(v);
		json_object_set_new(root, key, v);
	}
	s = json_dumps(root, JSON_COMPACT);
	assert_non_null(s);
	webhook_test_parse_fails(WEBHOOK_GITHUB, h, s, strlen(s), ERR_INVAL, want);
	free(s);
	json_decref(root);
}

static void
webhook_test_parse_malformed(void **state)
{
	struct webhook_test_hdrs h;
	struct webhook_event ev;
	char *big;
	const char *dup;
	const char *junk[] = {
	    "", "not json", "{", "{\"ref\":", "[]", "\"push\"", "42", "null",
	};

	(void)state;
	memset(&h, 0, sizeof(h));
	webhook_test_hdr(&h, "X-GitHub-Event", "push");
	for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++)
		webhook_test_parse_fails(WEBHOOK_GITHUB, &h, junk[i], strlen(junk[i]), ERR_INVAL,
					 NULL);
	webhook_test_parse_fails(WEBHOOK_GITHUB, &h, "{\"a\":1} trailing", 16, ERR_INVAL, "JSON");
	/* a duplicate key, which could make two readers see two different refs */
	dup = "{\"ref\":\"refs/heads/main\",\"after\":\"6113728f27ae82c7b1a177c8d03f9e96e0adf246\","
	      "\"ref\":\"refs/heads/x\"}";
	webhook_test_parse_fails(WEBHOOK_GITHUB, &h, dup, strlen(dup), ERR_INVAL, "duplicate");
	webhook_test_parse_fails(WEBHOOK_GITHUB, &h, "{\"ref\":\"a\\u0000b\"}", 18, ERR_INVAL,
				 "JSON");
	webhook_test_parse_fails(WEBHOOK_GITHUB, &h, "{\"ref\":\"\xff\"}", 11, ERR_INVAL, "JSON");

	webhook_test_bad_field(&h, "ref", NULL, "ref missing");
	webhook_test_bad_field(&h, "ref", "null", "ref missing");
	webhook_test_bad_field(&h, "ref", "42", "ref is not a string");
	webhook_test_bad_field(&h, "ref", "\"master\"", "neither a branch nor a tag");
	webhook_test_bad_field(&h, "ref", "\"refs/notes/commits\"", "neither a branch nor a tag");
	webhook_test_bad_field(&h, "ref", "\"refs/heads/\"", "branch name");
	webhook_test_bad_field(&h, "ref", "\"refs/heads/a..b\"", "'..'");
	webhook_test_bad_field(&h, "ref", "\"refs/heads/-rf\"", "'-'");
	webhook_test_bad_field(&h, "ref", "\"refs/heads/a b\"", "' '");
	webhook_test_bad_field(&h, "ref", "\"refs/heads/x\\u001b[31m\"", "control");
	webhook_test_bad_field(&h, "ref", "\"refs/tags/v1:2\"", "tag name");
	webhook_test_bad_field(&h, "after", NULL, "after missing");
	webhook_test_bad_field(&h, "after", "true", "after is not a string");
	webhook_test_bad_field(&h, "after", "\"6113728f27ae82c7b1a177c8d03f9e96e0adf24\"",
			       "not a commit id");
	webhook_test_bad_field(&h, "after", "\"6113728F27AE82C7B1A177C8D03F9E96E0ADF246\"",
			       "not a commit id");
	webhook_test_bad_field(&h, "after", "\"6113728f27ae82c7b1a177c8d03f9e96e0adf24g\"",
			       "not a commit id");
	webhook_test_bad_field(&h, "after", "\"HEAD\"", "not a commit id");
	webhook_test_bad_field(&h, "deleted", "\"yes\"", "deleted is not a boolean");
	webhook_test_bad_field(&h, "checkout_sha", "\"0000000000000000000000000000000000000000\"",
			       "all zeros");
	webhook_test_bad_field(&h, "checkout_sha", "\"abc\"", "not a commit id");
	webhook_test_bad_field(
	    &h, "head_commit",
	    "{\"id\":\"6113728f27ae82c7b1a177c8d03f9e96e0adf246\",\"message\":7}",
	    "message is not a string");
	webhook_test_bad_field(
	    &h, "head_commit",
	    "{\"id\":\"6113728f27ae82c7b1a177c8d03f9e96e0adf246\",\"author\":\"me\"}",
	    "author is not an object");
	webhook_test_bad_field(&h, "head_commit",
			       "{\"id\":\"6113728f27ae82c7b1a177c8d03f9e96e0adf246\",\"author\":{"
			       "\"name\":[]}}",
			       "name is not a string");

	/* a SHA-256 repository's 64-digit ids are accepted */
	webhook_test_parse_ok(
	    WEBHOOK_GITHUB, &h, NULL,
	    "{\"ref\":\"refs/heads/main\",\"after\":\"757107ea0eb2509fc211221cce98"
	    "4b8a37570b6d7586c22c46f4379c8b043e17\"}",
	    &ev);
	webhook_test_str("commit", ev.commit,
			 "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
	webhook_event_fini(&ev);

	/* headers */
	memset(&h, 0, sizeof(h));
	webhook_test_parse_fails(WEBHOOK_GITHUB, &h, "{}", 2, ERR_INVAL, "X-GitHub-Event");
	webhook_test_hdr(&h, "X-GitHub-Event", "push\x1b[2J");
	webhook_test_parse_fails(WEBHOOK_GITHUB, &h, "{}", 2, ERR_INVAL, "printable");
	webhook_test_hdr(&h, "X-GitHub-Event",
			 "pushpushpushpushpushpushpushpushpushpushpushpushpushpushpushpushp");
	webhook_test_parse_fails(WEBHOOK_GITHUB, &h, "{}", 2, ERR_INVAL, "longer");
	webhook_test_hdr(&h, "X-GitHub-Event", "ping");
	webhook_test_hdr(&h, "X-GitHub-Delivery", "72d3162e cc78");
	webhook_test_parse_fails(WEBHOOK_GITHUB, &h, "{}", 2, ERR_INVAL, "X-GitHub-Delivery");
	webhook_test_hdr(&h, "X-GitHub-Delivery", "72d3162e\ncc78");
	webhook_test_parse_fails(WEBHOOK_GITHUB, &h, "{}", 2, ERR_INVAL, "X-GitHub-Delivery");
	big = malloc(200);
	assert_non_null(big);
	memset(big, 'a', 199);
	big[199] = '\0';
	webhook_test_hdr(&h, "X-GitHub-Delivery", big);
	webhook_test_parse_fails(WEBHOOK_GITHUB, &h, "{}", 2, ERR_INVAL, "longer");
	free(big);
	webhook_test_hdr(&h, "X-GitHub-Delivery", NULL);

	/* size limit: refused before anything is read */
	webhook_test_hdr(&h, "X-GitHub-Event", "push");
	big = malloc(WEBHOOK_MAX_BODY + 2);
	assert_non_null(big);
	memset(big, ' ', WEBHOOK_MAX_BODY + 1);
	memcpy(big, "{}", 2);
	big[WEBHOOK_MAX_BODY + 1] = '\0';
	webhook_test_parse_fails(WEBHOOK_GITHUB, &h, big, WEBHOOK_MAX_BODY + 1, ERR_TOOBIG,
				 "limit");
	/* the limit itself is allowed (and then fails on content) */
	webhook_test_parse_fails(WEBHOOK_GITHUB, &h, big, WEBHOOK_MAX_BODY, ERR_INVAL,
				 "ref missing");
	free(big);
	assert_int_equal(webhook_parse((enum webhook_provider)7, webhook_test_header_cb, &h, "{}",
				       2, &ev, NULL, 0),
			 ERR_INVAL);
}

/* Messages and authors lose control characters and are bounded. */
static void
webhook_test_parse_clean(void **state)
{
	struct webhook_test_hdrs h;
	struct webhook_event ev;
	json_t *root, *commit, *author;
	char err[256], *msg;
	size_t n;

	(void)state;
	memset(&h, 0, sizeof(h));
	webhook_test_hdr(&h, "X-GitHub-Event", "push");
	root = webhook_test_load_json("github/push_new_branch.payload.json");
	commit = json_object_get(root, "head_commit");
	author = json_object_get(commit, "author");
	json_object_set_new(commit, "message",
			    json_string("Fix \x1b[31mred\x1b[0m\r\n\n\tdetails\x7f\n\n"));
	json_object_set_new(author, "name", json_string("Eve\nInjected: yes"));
	json_object_set_new(author, "email", json_string(""));
	assert_int_equal(webhook_test_parse_json(WEBHOOK_GITHUB, &h, root, &ev, err, sizeof(err)),
			 0);
	webhook_test_str("message", ev.message, "Fix ?[31mred?[0m\n\n\tdetails?");
	webhook_test_str("author", ev.author, "Eve?Injected: yes");
	webhook_event_fini(&ev);

	json_object_set_new(author, "name", json_null());
	json_object_set_new(author, "email", json_string("eve@example.com"));
	assert_int_equal(webhook_test_parse_json(WEBHOOK_GITHUB, &h, root, &ev, err, sizeof(err)),
			 0);
	webhook_test_str("author", ev.author, "<eve@example.com>");
	webhook_event_fini(&ev);

	/* long messages are cut on a character boundary: 2-byte "é" after an odd prefix */
	n = WEBHOOK_MAX_MESSAGE * 2;
	msg = malloc(n + 2);
	assert_non_null(msg);
	msg[0] = 'x';
	for (size_t i = 1; i + 1 < n; i += 2)
		memcpy(msg + i, "\xc3\xa9", 2);
	msg[n - 1] = '\0';
	json_object_set_new(commit, "message", json_string(msg));
	assert_int_equal(webhook_test_parse_json(WEBHOOK_GITHUB, &h, root, &ev, err, sizeof(err)),
			 0);
	assert_non_null(ev.message);
	assert_true(strlen(ev.message) <= WEBHOOK_MAX_MESSAGE);
	assert_true(strlen(ev.message) >= WEBHOOK_MAX_MESSAGE - 1);
	assert_int_equal(strlen(ev.message) % 2, 1); /* "x" + whole "é"s */
	assert_memory_equal(ev.message, msg, strlen(ev.message));
	webhook_event_fini(&ev);
	free(msg);
	json_decref(root);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(webhook_test_provider_names),
	    cmocka_unit_test(webhook_test_detect),
	    cmocka_unit_test(webhook_test_verify_vectors),
	    cmocka_unit_test(webhook_test_verify_rejects),
	    cmocka_unit_test(webhook_test_verify_gitlab),
	    cmocka_unit_test(webhook_test_verify_form),
	    cmocka_unit_test(webhook_test_verify_limits),
	    cmocka_unit_test(webhook_test_parse_github),
	    cmocka_unit_test(webhook_test_parse_github_form),
	    cmocka_unit_test(webhook_test_parse_gitlab),
	    cmocka_unit_test(webhook_test_parse_gitea),
	    cmocka_unit_test(webhook_test_parse_bitbucket),
	    cmocka_unit_test(webhook_test_parse_deletions),
	    cmocka_unit_test(webhook_test_parse_malformed),
	    cmocka_unit_test(webhook_test_parse_clean),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
