/*
 * webhook.h: git webhook deliveries from GitHub, GitLab, Gitea/Forgejo and Bitbucket Cloud:
 * which provider sent a request, whether it carries the site's secret, and what was pushed.
 * Pure functions over headers and a body; no I/O, no logging, thread-safe.
 *
 * Order of use in a request handler (the body already read into a buffer of at most
 * WEBHOOK_MAX_BODY bytes):
 *
 *	webhook_detect(hdr, arg, &p, …)          which provider (or a configured one)
 *	webhook_verify(p, hdr, arg, secret, body, len, …)   before anything else looks at the body
 *	webhook_parse(p, hdr, arg, body, len, &ev, …)
 *	… ev.kind == WEBHOOK_PING: answer 2xx; WEBHOOK_OTHER: 2xx "ignored: event <event_name>";
 *	  WEBHOOK_PUSH: deleted or is_tag or branch != site branch → 2xx "ignored"; else queue a
 *	  deploy of ev.commit, skipping a delivery_id already seen …
 *	webhook_event_fini(&ev);
 *
 * Detection trusts headers only to pick the verification method; a caller that knows which
 * provider a site uses should also check that webhook_detect agrees.
 */
#ifndef STOKE_WEBHOOK_H
#define STOKE_WEBHOOK_H

#include <stddef.h>

/* Bodies larger than this are refused with ERR_TOOBIG (by webhook_verify and webhook_parse). */
#define WEBHOOK_MAX_BODY (1024 * 1024)
/* Commit messages are cut to this many bytes (on a UTF-8 character boundary). */
#define WEBHOOK_MAX_MESSAGE 4096

enum webhook_provider {
	WEBHOOK_GITHUB,
	WEBHOOK_GITLAB,
	WEBHOOK_GITEA, /* Gitea and Forgejo */
	WEBHOOK_BITBUCKET,
	WEBHOOK__PROVIDER_COUNT
};

/*
 * Returns the value of request header name, or NULL when the request has none. Header names
 * must be matched case-insensitively, as HTTP does (libmicrohttpd's MHD_lookup_connection_value
 * does). The returned string must stay valid for the duration of the webhook_* call.
 */
typedef const char *(*webhook_header_cb)(const char *name, void *arg);

/* "github", "gitlab", "gitea", "bitbucket"; "unknown" for a value out of range. Never NULL. */
const char *webhook_provider_name(enum webhook_provider p);
/* Inverse of webhook_provider_name (exact, lower case); 0 or ERR_INVAL. "forgejo" maps to
 * WEBHOOK_GITEA. */
int webhook_provider_parse(const char *name, enum webhook_provider *p, char *err, size_t errlen);

/*
 * Which provider sent this request, from its event headers, checked in this order (Gitea and
 * Forgejo also send X-GitHub-Event, so they are recognised first):
 *   X-Forgejo-Event or X-Gitea-Event          → WEBHOOK_GITEA
 *   X-Gitlab-Event                            → WEBHOOK_GITLAB
 *   X-Event-Key with X-Request-UUID or X-Hook-UUID → WEBHOOK_BITBUCKET
 *   X-GitHub-Event                            → WEBHOOK_GITHUB
 * Returns 0, or ERR_INVAL when none matches.
 */
int webhook_detect(webhook_header_cb header, void *arg, enum webhook_provider *p, char *err,
		   size_t errlen);

/*
 * Checks that the request carries secret, before the body is parsed:
 *   GitHub     X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>
 *   GitLab     X-Gitlab-Token: <secret>   (GitLab does not sign; the token is the secret)
 *   Gitea      X-Forgejo-Signature, else X-Gitea-Signature: <hex HMAC-SHA256(secret, body)>
 *   Bitbucket  X-Hub-Signature: sha256=<hex HMAC-SHA256(secret, body)>
 * The HMAC is over the raw body bytes as received (also for form-encoded bodies). Hex digits
 * may be in either case (they decode to the same bytes; the providers send lower case); the
 * "sha256=" prefix must be exactly that. SHA-1 signatures (X-Hub-Signature: sha1=…) are not
 * accepted. Comparisons are constant-time: HMACs as raw bytes after decoding, the GitLab token
 * through SHA-256 of both sides so that its length does not leak either.
 * Returns 0; ERR_AUTH when the header is missing, malformed or wrong (the message names the
 * header, never the secret nor the expected value); ERR_TOOBIG when len > WEBHOOK_MAX_BODY;
 * ERR_INVAL for an empty or NULL secret (a hook without a secret cannot be verified).
 */
int webhook_verify(enum webhook_provider p, webhook_header_cb header, void *arg, const char *secret,
		   const void *body, size_t len, char *err, size_t errlen);

enum webhook_kind {
	WEBHOOK_PING,  /* GitHub "ping" (sent when a hook is created); the others send none */
	WEBHOOK_PUSH,  /* a push of one ref */
	WEBHOOK_OTHER, /* any other event: answer 2xx and ignore */
};

/* What a delivery says. Strings are malloc'd and owned by the event; free with _fini. */
struct webhook_event {
	enum webhook_kind kind;
	char *event_name;  /* the provider's own event name ("push", "Push Hook", "repo:push") */
	char *delivery_id; /* X-GitHub-Delivery, Idempotency-Key (else X-Gitlab-Event-UUID),
			      X-Forgejo-Delivery / X-Gitea-Delivery, X-Request-UUID; stays the
			      same when the provider retries; NULL when absent */
	/* The rest is set for WEBHOOK_PUSH only (NULL / 0 otherwise). */
	char *ref;     /* "refs/heads/main", "refs/tags/v1.0" */
	char *branch;  /* "main" when ref is a branch, else NULL; passed names_branch */
	int is_tag;    /* ref is a tag */
	int deleted;   /* the ref was deleted: commit, message and author are NULL */
	char *commit;  /* the pushed commit: 40 (or 64, SHA-256 repos) lower-case hex */
	char *message; /* of that commit, trailing newlines removed; NULL when not sent */
	char *author;  /* of that commit, "Name <email>" (or "Name"); NULL when not sent */
};

/*
 * Reads the event from headers and body; call it only after webhook_verify succeeded.
 * A Content-Type of application/x-www-form-urlencoded (GitHub's and Gitea's "form" setting)
 * is decoded first and its payload= field parsed; any other body is parsed as JSON.
 * Pushes:
 *   GitHub, Gitea  ref, after, deleted; message/author from head_commit, else the entry of
 *                  commits[] whose id is after
 *   GitLab         ref, after, checkout_sha (the commit deployed, also for annotated tags);
 *                  message/author from the entry of commits[] whose id is checkout_sha
 *   Bitbucket      push.changes[0] only: new.{type,name,target.hash,target.message,
 *                  target.author.raw (else its user's display_name)}; new == null is a deletion
 *                  (name and type then come from old)
 * Pings and other events are not parsed beyond the headers.
 * Control characters in message (except newline and tab; carriage returns are dropped) and in
 * author are replaced by '?'.
 * Returns 0 with *ev filled in; ERR_TOOBIG (body > WEBHOOK_MAX_BODY); ERR_INVAL with the reason
 * (bad JSON, a missing or mistyped field, a ref that is neither a branch nor a tag, a branch
 * failing names_branch, a commit that is not hex); ERR_NOMEM. On error *ev is left empty
 * (webhook_event_fini on it is harmless).
 */
int webhook_parse(enum webhook_provider p, webhook_header_cb header, void *arg, const void *body,
		  size_t len, struct webhook_event *ev, char *err, size_t errlen);

/* Frees the strings of ev and zeroes it; NULL is a no-op. */
void webhook_event_fini(struct webhook_event *ev);

#endif
