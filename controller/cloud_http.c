/*
 * cloud_http.c: requests of the cloud drivers: JSON over http_client.h, retries of 429 and
 * 5xx with backoff and the providers' wait headers, and refusals in the provider's words.
 * It knows no provider's resources (those are in cloud_<provider>.c, its only callers).
 */
#include "cloud_http.h"
#include "err.h"
#include "http_client.h"
#include "log.h"
#include "timeutil.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLOUD_HTTP_CONNECT_MS 10000L
#define CLOUD_HTTP_TIMEOUT_MS 30000L
#define CLOUD_HTTP_BODY_MAX (1024u * 1024)
#define CLOUD_HTTP_RETRIES 5
#define CLOUD_HTTP_MAX_WAIT_MS 60000L
#define CLOUD_HTTP_BACKOFF_MS 500L
#define CLOUD_HTTP_URL_MAX 2048

void
cloud_reply_init(struct cloud_reply *r)
{
	memset(r, 0, sizeof(*r));
	r->retry_after_s = -1;
	r->ratelimit_reset = -1;
}

void
cloud_reply_fini(struct cloud_reply *r)
{
	if (r == NULL)
		return;
	json_decref(r->json);
	r->json = NULL;
}

void
cloud_ctx_fini(struct cloud_ctx *ctx)
{
	if (ctx == NULL)
		return;
	http_client_free(ctx->http);
	ctx->http = NULL;
	ctx->http_api = NULL;
}

int
cloud_http_max_retries(const struct cloud_ctx *ctx)
{
	if (ctx->max_retries < 0)
		return 0;
	return ctx->max_retries > 0 ? ctx->max_retries : CLOUD_HTTP_RETRIES;
}

void
cloud_text_clean(const char *s, char *out, size_t outlen)
{
	size_t j = 0;

	if (outlen == 0)
		return;
	for (; s != NULL && *s != '\0' && j + 1 < outlen; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch < 0x20 || ch == 0x7f)
			continue;
		out[j++] = (char)ch;
	}
	out[j] = '\0';
}

int
cloud_numeric_id(const char *s)
{
	size_t n = 0;

	if (s == NULL)
		return ERR_INVAL;
	for (; s[n] != '\0'; n++)
		if (s[n] < '0' || s[n] > '9' || n >= 20)
			return ERR_INVAL;
	return n > 0 ? 0 : ERR_INVAL;
}

int
cloud_json_id(json_t *o, const char *key, char *out, size_t outlen)
{
	json_t *v = json_object_get(o, key);
	int n;

	if (json_is_integer(v))
		n = snprintf(out, outlen, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
	else if (json_is_string(v) && json_string_length(v) > 0)
		n = snprintf(out, outlen, "%s", json_string_value(v));
	else
		return ERR_INVAL;
	return n > 0 && (size_t)n < outlen ? 0 : ERR_INVAL;
}

long
cloud_http_wait_ms(const struct cloud_ctx *ctx, long status, long retry_after_s,
		   long long ratelimit_reset, long long now_ms, int attempt)
{
	long cap = ctx->max_wait_ms > 0 ? ctx->max_wait_ms : CLOUD_HTTP_MAX_WAIT_MS;
	long base = ctx->backoff_ms > 0 ? ctx->backoff_ms : CLOUD_HTTP_BACKOFF_MS;
	long long w = -1;

	if (retry_after_s >= 0) {
		w = retry_after_s > cap / 1000 + 1 ? (long long)cap
						   : (long long)retry_after_s * 1000;
	} else if (status == 429 && ratelimit_reset > 0) {
		/* Epoch seconds: both providers' RateLimit-Reset. Already past: back off. */
		if (ratelimit_reset < 1000000000000LL && ratelimit_reset * 1000 > now_ms)
			w = ratelimit_reset * 1000 - now_ms;
	}
	if (w < 0) {
		int shift = attempt > 1 ? attempt - 1 : 0;

		w = shift > 20 ? (long long)cap : (long long)base << shift;
		/* A little jitter from the clock, so many workers do not retry in step. */
		w += now_ms % (w / 10 + 1);
	}
	return w > cap ? cap : (long)w;
}

/* Opens ctx->http for api, unless it is open for it already. */
static int
cloud_http_open(struct cloud_ctx *ctx, const struct cloud_api *api, char *err, size_t errlen)
{
	struct http_client_opts o;
	const char *base = ctx->base_url;
	char url[CLOUD_HTTP_URL_MAX];
	size_t n, vn = strlen(api->version_path);
	int ret;

	if (ctx->http != NULL && ctx->http_api == api)
		return 0;
	/* Never a silent fallback to the real provider: a context names its URL. */
	if (base == NULL || base[0] == '\0')
		return err_set(err, errlen, ERR_INVAL, "%s: no API URL configured", api->provider);
	http_client_free(ctx->http);
	ctx->http = NULL;
	ctx->http_api = NULL;
	n = strlen(base);
	while (n > 0 && base[n - 1] == '/')
		n--;
	if (n + vn + 1 > sizeof(url))
		return err_set(err, errlen, ERR_INVAL, "%s: the API URL is too long",
			       api->provider);
	memcpy(url, base, n);
	url[n] = '\0';
	if (n < vn || strcmp(url + n - vn, api->version_path) != 0)
		memcpy(url + n, api->version_path, vn + 1);
	memset(&o, 0, sizeof(o));
	o.base_url = url;
	o.token = ctx->token != NULL && ctx->token[0] != '\0' ? ctx->token : NULL;
	o.connect_timeout_ms =
	    ctx->connect_timeout_ms > 0 ? ctx->connect_timeout_ms : CLOUD_HTTP_CONNECT_MS;
	o.timeout_ms = ctx->timeout_ms > 0 ? ctx->timeout_ms : CLOUD_HTTP_TIMEOUT_MS;
	o.body_max = ctx->body_max > 0 ? ctx->body_max : CLOUD_HTTP_BODY_MAX;
	if ((ret = http_client_new(&o, &ctx->http, err, errlen)) != 0) {
		char why[512];

		snprintf(why, sizeof(why), "%s", err != NULL ? err : "");
		return err_set(err, errlen, ret, "%s: %s", api->provider, why);
	}
	ctx->http_api = api;
	return 0;
}

static int
cloud_http_code(long status)
{
	if (status == 401 || status == 403)
		return ERR_AUTH;
	if (status == 404 || status == 410)
		return ERR_NOTFOUND;
	if (status == 409)
		return ERR_EXISTS;
	if (status == 423 || status == 429 || status >= 500)
		return ERR_BUSY;
	if (status >= 400)
		return ERR_INVAL;
	return ERR_IO; /* 1xx, 3xx: not an answer this API gives */
}

/* Reads the provider's error code and message out of a refusal's body. */
static void
cloud_http_refusal(const struct buf *body, struct cloud_reply *r)
{
	json_t *j, *e, *code = NULL, *msg = NULL;

	r->code[0] = '\0';
	r->message[0] = '\0';
	if (body->len == 0 || (j = json_loadb(body->data, body->len, 0, NULL)) == NULL)
		return;
	if (json_is_object(e = json_object_get(j, "error"))) {
		/* Hetzner: {"error": {"code", "message", "details"}} */
		code = json_object_get(e, "code");
		msg = json_object_get(e, "message");
	} else if (json_is_object(j)) {
		/* DigitalOcean: {"id", "message", "request_id"} */
		code = json_object_get(j, "id");
		msg = json_object_get(j, "message");
	}
	if (json_is_string(code))
		cloud_text_clean(json_string_value(code), r->code, sizeof(r->code));
	if (json_is_string(msg))
		cloud_text_clean(json_string_value(msg), r->message, sizeof(r->message));
	json_decref(j);
}

static int
cloud_http_refused(const struct cloud_api *api, const char *method, const char *path,
		   struct cloud_reply *r, int tries, char *err, size_t errlen)
{
	int code = cloud_http_code(r->status);
	char more[48] = "";

	if (tries > 1)
		snprintf(more, sizeof(more), " (gave up after %d tries)", tries);
	if (r->code[0] != '\0' && r->message[0] != '\0')
		return err_set(err, errlen, code, "%s: %ld %s: %s%s", api->provider, r->status,
			       r->code, r->message, more);
	if (r->message[0] != '\0' || r->code[0] != '\0')
		return err_set(err, errlen, code, "%s: %ld %s%s", api->provider, r->status,
			       r->message[0] != '\0' ? r->message : r->code, more);
	return err_set(err, errlen, code, "%s: %s %s: HTTP %ld with no error body%s", api->provider,
		       method, path, r->status, more);
}

int
cloud_http_call(struct cloud_ctx *ctx, const struct cloud_api *api, const char *method,
		const char *path, json_t *body, unsigned flags, struct cloud_reply *r, char *err,
		size_t errlen)
{
	struct http_response resp;
	char *text = NULL, terr[1024];
	int max = cloud_http_max_retries(ctx), tries = 0, ret, retry;
	long wait;

	cloud_reply_fini(r);
	cloud_reply_init(r);
	http_response_init(&resp);
	if ((ret = cloud_http_open(ctx, api, err, errlen)) != 0)
		goto out;
	if (body != NULL && (text = json_dumps(body, JSON_COMPACT)) == NULL) {
		ret = err_set(err, errlen, ERR_NOMEM, "out of memory");
		goto out;
	}
	for (;;) {
		tries++;
		terr[0] = '\0';
		ret = http_request(ctx->http, method, path, text, &resp, terr, sizeof(terr));
		r->status = resp.status;
		r->retry_after_s = resp.retry_after_s;
		r->ratelimit_reset = resp.ratelimit_reset;
		if (ret != 0) {
			/* Not reached, reset, too slow or too big. Only a failed connection
			 * of a request that may run twice is tried again; a timeout is not
			 * (the caller's job retries, with its own deadline). */
			retry = ret == ERR_IO && !(flags & CLOUD_HTTP_ONCE) && tries <= max;
			if (!retry) {
				ret = err_set(err, errlen, ret, "%s: %s", api->provider, terr);
				goto out;
			}
			wait = cloud_http_wait_ms(ctx, 0, -1, -1, time_now_ms(), tries);
			log_info("%s: %s %s: %s; try %d of %d in %ld ms", api->provider, method,
				 path, terr, tries + 1, max + 1, wait);
			time_sleep_ms(wait);
			continue;
		}
		if (resp.status >= 200 && resp.status < 300) {
			if (resp.body.len > 0) {
				json_error_t jerr;

				r->json = json_loadb(resp.body.data, resp.body.len, 0, &jerr);
				if (r->json == NULL) {
					ret = err_set(err, errlen, ERR_IO,
						      "%s: %s %s: the answer is not JSON (%s)",
						      api->provider, method, path, jerr.text);
					goto out;
				}
			}
			ret = 0;
			goto out;
		}
		cloud_http_refusal(&resp.body, r);
		retry = resp.status == 429 || (resp.status >= 500 && !(flags & CLOUD_HTTP_ONCE));
		if (!retry || tries > max) {
			ret = cloud_http_refused(api, method, path, r, retry ? tries : 1, err,
						 errlen);
			goto out;
		}
		wait = cloud_http_wait_ms(ctx, resp.status, resp.retry_after_s,
					  resp.ratelimit_reset, time_now_ms(), tries);
		log_info("%s: %s %s: %ld %s; try %d of %d in %ld ms", api->provider, method, path,
			 resp.status, r->code[0] != '\0' ? r->code : "error", tries + 1, max + 1,
			 wait);
		time_sleep_ms(wait);
	}
out:
	free(text);
	http_response_fini(&resp);
	return ret;
}

/* "type base64" of an OpenSSH public key line (the comment dropped) into out. */
int
cloud_key_norm(const char *key, char *out, size_t outlen)
{
	const char *p = key, *type, *blob;
	size_t tn, bn;

	while (*p == ' ' || *p == '\t')
		p++;
	type = p;
	tn = strcspn(p, " \t");
	p += tn;
	while (*p == ' ' || *p == '\t')
		p++;
	blob = p;
	bn = strcspn(p, " \t\r\n");
	if (tn == 0 || bn == 0 || tn + bn + 2 > outlen)
		return ERR_INVAL;
	snprintf(out, outlen, "%.*s %.*s", (int)tn, type, (int)bn, blob);
	return 0;
}
