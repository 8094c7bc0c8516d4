/*
 * cloud_http.h: the HTTP layer of the cloud drivers, over http_client.h (the one owner of
 * libcurl). JSON in and out with the context's bearer token, a connect and a total timeout
 * on every request, answers capped at ctx->body_max, retries of 429 and 5xx with
 * exponential backoff that honours Retry-After (seconds or an HTTP date) and the
 * providers' RateLimit-Reset (epoch seconds), capped at ctx->max_wait_ms, and refusals
 * turned into the provider's own words: DigitalOcean's {"id","message"} and Hetzner's
 * {"error":{"code","message"}} both read as "PROVIDER: STATUS CODE: MESSAGE".
 * Used by cloud_*.c only. Blocks; never logs the token or request bodies.
 */
#ifndef STOKE_CLOUD_HTTP_H
#define STOKE_CLOUD_HTTP_H

#include <jansson.h>
#include <stddef.h>

#include "cloud.h"

/* What differs between providers at this layer. */
struct cloud_api {
	const char *provider;	  /* "digitalocean": starts every error text */
	const char *version_path; /* "/v2": added to a base URL that does not end with it */
};

struct cloud_reply {
	long status;  /* HTTP status of the last answer; 0 when none came */
	json_t *json; /* the answer's JSON (NULL when it had no body) */
	/* Of a refusal: the provider's error code ("unprocessable_entity", "uniqueness_error")
	 * and message, "" when none. */
	char code[64];
	char message[512];
	long retry_after_s;	   /* of the last answer, -1 when absent */
	long long ratelimit_reset; /* of the last answer, -1 when absent */
};

void cloud_reply_init(struct cloud_reply *r);
void cloud_reply_fini(struct cloud_reply *r);

/* Not idempotent (creating something): after a 5xx it is not sent again (the provider may
 * have done the work); the caller looks before it asks again. 429 is still retried: the
 * provider refused it before doing anything. */
#define CLOUD_HTTP_ONCE 0x1u

/*
 * One API call: method on path (under the base URL and version, e.g. "/droplets?page=2";
 * escape variable parts with http_escape), body (may be NULL) sent as JSON.
 * Returns 0 on a 2xx answer (r->json holds its JSON, NULL for an empty body). A refusal
 * returns its ERR_* code (see cloud.h) with r->status, r->code and r->message set and
 * "PROVIDER: STATUS CODE: MESSAGE" in err; a transport failure returns ERR_IO, ERR_TIMEOUT
 * or ERR_TOOBIG with r->status 0. r is reset first.
 */
int cloud_http_call(struct cloud_ctx *ctx, const struct cloud_api *api, const char *method,
		    const char *path, json_t *body, unsigned flags, struct cloud_reply *r,
		    char *err, size_t errlen);

/*
 * The wait before retry number attempt (1 = the first retry) after an answer with these
 * headers: Retry-After (seconds, -1 = none), else RateLimit-Reset (epoch seconds, -1 =
 * none; used only for a 429), else exponential backoff from ctx->backoff_ms; always
 * capped at ctx->max_wait_ms. now_ms is the wall clock. Exposed for tests.
 */
long cloud_http_wait_ms(const struct cloud_ctx *ctx, long status, long retry_after_s,
			long long ratelimit_reset, long long now_ms, int attempt);

/* ctx->max_retries with its default applied. */
int cloud_http_max_retries(const struct cloud_ctx *ctx);

/* JSON helpers for the drivers: the string, or the integer as text, at key of o into out
 * (0), or ERR_INVAL when absent or of another type. */
int cloud_json_id(json_t *o, const char *key, char *out, size_t outlen);
/* A copy of s fit for error text: control characters dropped, cut at outlen. */
void cloud_text_clean(const char *s, char *out, size_t outlen);
/* "type base64" of an OpenSSH public key line (its comment dropped) into out, to compare
 * keys; ERR_INVAL when it has not two fields or out is too small. */
int cloud_key_norm(const char *key, char *out, size_t outlen);
/* 0 when s is 1-20 decimal digits (a provider's numeric id). */
int cloud_numeric_id(const char *s);

#endif
