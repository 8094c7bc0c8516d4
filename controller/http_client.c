/*
 * http_client.c: HTTP requests and Server-Sent Event streams over libcurl; the only file
 * that includes curl.h. It moves bytes and parses the SSE framing, nothing else (callers
 * parse JSON). Used by the CLI (stoke) and meant for anything else that speaks HTTP.
 */
#include "http_client.h"
#include "err.h"
#include "timeutil.h"

#include <curl/curl.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifndef STOKE_VERSION
#define STOKE_VERSION "0"
#endif

#define HTTP_CONNECT_TIMEOUT_MS 10000L
#define HTTP_TIMEOUT_MS 60000L
#define HTTP_BODY_MAX (16u * 1024 * 1024)
#define HTTP_SSE_IDLE_MS 45000L
#define HTTP_SSE_RETRY_MS 500L
#define HTTP_SSE_RETRY_MAX_MS 5000L
#define HTTP_SSE_MAX_RETRIES 10
#define HTTP_SSE_EVENT_MAX (1u * 1024 * 1024)
#define HTTP_SSE_ID_MAX 256

struct http_client {
	CURL *curl;
	char *base;
	char *auth; /* "Authorization: Bearer ..." or NULL; wiped before it is freed */
	char *user_agent;
	long connect_ms;
	long timeout_ms;
	size_t body_max;
	char errbuf[CURL_ERROR_SIZE];
};

static pthread_once_t http_once = PTHREAD_ONCE_INIT;
static CURLcode http_global_rc = CURLE_FAILED_INIT;

static void
http_global_init(void)
{
	http_global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int
http_client_new(const struct http_client_opts *opts, struct http_client **out, char *err,
		size_t errlen)
{
	struct http_client *c = NULL;
	struct buf b;
	size_t n;
	int ret;

	*out = NULL;
	buf_init(&b, 64 * 1024);
	pthread_once(&http_once, http_global_init);
	if (http_global_rc != CURLE_OK)
		return err_set(err, errlen, ERR_INTERNAL, "libcurl: %s",
			       curl_easy_strerror(http_global_rc));
	if (opts->base_url == NULL || (strncasecmp(opts->base_url, "http://", 7) != 0 &&
				       strncasecmp(opts->base_url, "https://", 8) != 0))
		return err_set(err, errlen, ERR_INVAL, "%s: not an http:// or https:// URL",
			       opts->base_url != NULL ? opts->base_url : "(none)");
	if (opts->token != NULL && strpbrk(opts->token, "\r\n") != NULL)
		return err_set(err, errlen, ERR_INVAL, "the token holds a line break");
	if ((c = calloc(1, sizeof(*c))) == NULL)
		goto nomem;
	if ((c->base = strdup(opts->base_url)) == NULL)
		goto nomem;
	n = strlen(c->base);
	while (n > 0 && c->base[n - 1] == '/')
		c->base[--n] = '\0';
	if (opts->token != NULL) {
		if (buf_printf(&b, "Authorization: Bearer %s", opts->token) != 0)
			goto nomem;
		c->auth = buf_take(&b);
	}
	if (opts->user_agent != NULL)
		c->user_agent = strdup(opts->user_agent);
	else
		c->user_agent = strdup("stoke/" STOKE_VERSION);
	if (c->user_agent == NULL)
		goto nomem;
	c->connect_ms =
	    opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : HTTP_CONNECT_TIMEOUT_MS;
	c->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : HTTP_TIMEOUT_MS;
	c->body_max = opts->body_max > 0 ? opts->body_max : HTTP_BODY_MAX;
	if ((c->curl = curl_easy_init()) == NULL) {
		ret = err_set(err, errlen, ERR_INTERNAL, "libcurl: cannot create a handle");
		goto fail;
	}
	*out = c;
	return 0;
nomem:
	ret = err_set(err, errlen, ERR_NOMEM, "out of memory");
fail:
	buf_fini(&b);
	http_client_free(c);
	return ret;
}

void
http_client_free(struct http_client *c)
{
	if (c == NULL)
		return;
	if (c->curl != NULL)
		curl_easy_cleanup(c->curl);
	if (c->auth != NULL) {
		explicit_bzero(c->auth, strlen(c->auth));
		free(c->auth);
	}
	free(c->base);
	free(c->user_agent);
	free(c);
}

const char *
http_client_url(const struct http_client *c)
{
	return c->base;
}

void
http_response_init(struct http_response *r)
{
	r->status = 0;
	r->retry_after_s = -1;
	r->ratelimit_remaining = -1;
	r->ratelimit_reset = -1;
	buf_init(&r->body, 0);
}

void
http_response_fini(struct http_response *r)
{
	if (r == NULL)
		return;
	buf_fini(&r->body);
}

char *
http_escape(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(s), i, j = 0;
	char *out;

	if ((out = malloc(n * 3 + 1)) == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
			out[j++] = (char)ch;
		} else {
			out[j++] = '%';
			out[j++] = hex[ch >> 4];
			out[j++] = hex[ch & 15];
		}
	}
	out[j] = '\0';
	return out;
}

/* Readable reason for a failed transfer, naming the URL. */
static int
http_fail(struct http_client *c, CURLcode rc, const char *method, const char *url, char *err,
	  size_t errlen)
{
	long oserr = 0;
	const char *why;

	curl_easy_getinfo(c->curl, CURLINFO_OS_ERRNO, &oserr);
	why = c->errbuf[0] != '\0' ? c->errbuf : curl_easy_strerror(rc);
	switch (rc) {
	case CURLE_COULDNT_CONNECT:
		if (oserr != 0)
			why = strerror((int)oserr);
		/* FALLTHROUGH */
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return err_set(err, errlen, ERR_IO, "cannot reach %s: %s", c->base, why);
	case CURLE_OPERATION_TIMEDOUT:
		return err_set(err, errlen, ERR_TIMEOUT, "%s %s: timed out (%s)", method, url, why);
	default:
		return err_set(err, errlen, ERR_IO, "%s %s: %s", method, url, why);
	}
}

struct http_xfer {
	struct http_response *r;
	size_t max;
	int toobig;
};

/* A header's value as a non-negative number, or -1 (copied through a bounded buffer). */
static long long
http_header_num(const char *p, size_t len)
{
	char val[32], *end;
	long long v;
	size_t vlen;

	while (len > 0 && (*p == ' ' || *p == '\t')) {
		p++;
		len--;
	}
	vlen = len < sizeof(val) - 1 ? len : sizeof(val) - 1;
	memcpy(val, p, vlen);
	val[vlen] = '\0';
	val[strcspn(val, "\r\n")] = '\0';
	if (val[0] < '0' || val[0] > '9')
		return -1;
	errno = 0;
	v = strtoll(val, &end, 10);
	if (errno != 0 || (*end != '\0' && *end != ' ' && *end != '\t'))
		return -1;
	return v;
}

static size_t
http_header_cb(char *p, size_t size, size_t n, void *ud)
{
	struct http_xfer *x = ud;
	size_t len = size * n;
	char val[64];
	size_t vlen;

	if (len >= 5 && strncmp(p, "HTTP/", 5) == 0) {
		x->r->retry_after_s = -1;
		x->r->ratelimit_remaining = -1;
		x->r->ratelimit_reset = -1;
	} else if (len > 20 && strncasecmp(p, "RateLimit-Remaining:", 20) == 0) {
		long long v = http_header_num(p + 20, len - 20);

		x->r->ratelimit_remaining = v > LONG_MAX ? LONG_MAX : (long)v;
	} else if (len > 16 && strncasecmp(p, "RateLimit-Reset:", 16) == 0) {
		x->r->ratelimit_reset = http_header_num(p + 16, len - 16);
	} else if (len > 12 && strncasecmp(p, "Retry-After:", 12) == 0) {
		p += 12;
		len -= 12;
		while (len > 0 && (*p == ' ' || *p == '\t')) {
			p++;
			len--;
		}
		vlen = len < sizeof(val) - 1 ? len : sizeof(val) - 1;
		memcpy(val, p, vlen);
		val[vlen] = '\0';
		val[strcspn(val, "\r\n")] = '\0';
		if (val[0] >= '0' && val[0] <= '9') {
			x->r->retry_after_s = strtol(val, NULL, 10);
		} else if (val[0] != '\0') {
			time_t when = curl_getdate(val, NULL);
			long now = (long)(time_now_ms() / 1000);

			if (when != (time_t)-1)
				x->r->retry_after_s = (long)when > now ? (long)when - now : 0;
		}
	}
	return size * n;
}

static size_t
http_body_cb(char *p, size_t size, size_t n, void *ud)
{
	struct http_xfer *x = ud;

	if (x->r->body.len + size * n > x->max || buf_append(&x->r->body, p, size * n) != 0) {
		x->toobig = 1;
		return 0;
	}
	return size * n;
}

/* Options every request shares. The handle is reset first (connections stay open). */
static int
http_setup(struct http_client *c, const char *path, struct curl_slist **hdrs, struct buf *url,
	   char *err, size_t errlen)
{
	struct curl_slist *h = *hdrs, *t;

	curl_easy_reset(c->curl);
	c->errbuf[0] = '\0';
	buf_reset(url);
	if (buf_puts(url, c->base) != 0 || buf_puts(url, path) != 0)
		return err_set(err, errlen, ERR_TOOBIG, "URL too long");
	if (c->auth != NULL) {
		if ((t = curl_slist_append(h, c->auth)) == NULL)
			goto nomem;
		h = t;
	}
	/* No "Expect: 100-continue" round trip for bodies. */
	if ((t = curl_slist_append(h, "Expect:")) == NULL)
		goto nomem;
	h = t;
	*hdrs = h;
	curl_easy_setopt(c->curl, CURLOPT_URL, url->data);
	curl_easy_setopt(c->curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c->curl, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, c->errbuf);
	curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT_MS, c->connect_ms);
	curl_easy_setopt(c->curl, CURLOPT_USERAGENT, c->user_agent);
	curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, h);
	return 0;
nomem:
	*hdrs = h;
	return err_set(err, errlen, ERR_NOMEM, "out of memory");
}

int
http_request(struct http_client *c, const char *method, const char *path, const char *json_body,
	     struct http_response *r, char *err, size_t errlen)
{
	struct curl_slist *hdrs = NULL, *t;
	struct http_xfer x = {r, c->body_max, 0};
	struct buf url;
	CURLcode rc;
	int ret;

	buf_init(&url, 64 * 1024);
	r->status = 0;
	r->retry_after_s = -1;
	r->ratelimit_remaining = -1;
	r->ratelimit_reset = -1;
	buf_reset(&r->body);
	if ((ret = http_setup(c, path, &hdrs, &url, err, errlen)) != 0)
		goto fail;
	if ((t = curl_slist_append(hdrs, "Accept: application/json")) == NULL)
		goto nomem;
	hdrs = t;
	if (json_body != NULL) {
		if ((t = curl_slist_append(hdrs, "Content-Type: application/json")) == NULL)
			goto nomem;
		hdrs = t;
	}
	curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, c->timeout_ms);
	curl_easy_setopt(c->curl, CURLOPT_HEADERFUNCTION, http_header_cb);
	curl_easy_setopt(c->curl, CURLOPT_HEADERDATA, &x);
	curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, http_body_cb);
	curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &x);
	if (strcmp(method, "GET") == 0) {
		curl_easy_setopt(c->curl, CURLOPT_HTTPGET, 1L);
	} else if (strcmp(method, "POST") == 0 && json_body != NULL) {
		curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, json_body);
		curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE_LARGE,
				 (curl_off_t)strlen(json_body));
	} else {
		/* POST without a body still says Content-Length: 0, and sends no Content-Type. */
		curl_easy_setopt(c->curl, CURLOPT_CUSTOMREQUEST, method);
		if (json_body != NULL || strcmp(method, "POST") == 0) {
			const char *bd = json_body != NULL ? json_body : "";

			if (json_body == NULL) {
				if ((t = curl_slist_append(hdrs, "Content-Type:")) == NULL)
					goto nomem;
				hdrs = t;
				curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, hdrs);
			}
			curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, bd);
			curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE_LARGE,
					 (curl_off_t)strlen(bd));
		}
	}
	rc = curl_easy_perform(c->curl);
	if (x.toobig) {
		ret = err_set(err, errlen, ERR_TOOBIG, "%s %s: the answer is over %zu bytes",
			      method, url.data, x.max);
		goto fail;
	}
	if (rc != CURLE_OK) {
		ret = http_fail(c, rc, method, url.data, err, errlen);
		goto fail;
	}
	curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &r->status);
	ret = 0;
	goto out;
nomem:
	ret = err_set(err, errlen, ERR_NOMEM, "out of memory");
fail:
	r->status = 0;
out:
	curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(hdrs);
	buf_fini(&url);
	return ret;
}

int
http_get(struct http_client *c, const char *path, struct http_response *r, char *err, size_t errlen)
{
	return http_request(c, "GET", path, NULL, r, err, errlen);
}

int
http_post(struct http_client *c, const char *path, const char *json_body, struct http_response *r,
	  char *err, size_t errlen)
{
	return http_request(c, "POST", path, json_body, r, err, errlen);
}

int
http_patch(struct http_client *c, const char *path, const char *json_body, struct http_response *r,
	   char *err, size_t errlen)
{
	return http_request(c, "PATCH", path, json_body, r, err, errlen);
}

int
http_delete(struct http_client *c, const char *path, struct http_response *r, char *err,
	    size_t errlen)
{
	return http_request(c, "DELETE", path, NULL, r, err, errlen);
}

/*
 * Server-Sent Events, parsed as the WHATWG HTML standard describes: lines end in CR, LF or
 * CRLF; a blank line dispatches; ':' starts a comment; "id" sets the id that is committed
 * when the event is dispatched (and sent as Last-Event-ID on reconnect).
 */
struct http_sse {
	struct http_client *c;
	struct http_response *r;
	http_sse_cb cb;
	void *arg;
	size_t max;
	struct buf line;
	struct buf data;
	struct buf event;
	char idbuf[HTTP_SSE_ID_MAX]; /* the id field of the event being read */
	char last_id[HTTP_SSE_ID_MAX];
	long retry_ms; /* from the server's retry: field; 0 = none */
	long status;   /* of this connection; 0 until known */
	int is_stream; /* status 200 and text/event-stream */
	int cr;	       /* the last byte was a CR (an LF right after it ends nothing) */
	int stopped;
	int toobig;
	size_t received; /* bytes of stream this connection */
};

static void
http_sse_dispatch(struct http_sse *s)
{
	struct http_sse_event ev;

	memcpy(s->last_id, s->idbuf, sizeof(s->last_id));
	if (s->data.len == 0) {
		buf_reset(&s->event);
		return;
	}
	s->data.data[--s->data.len] = '\0'; /* the last '\n' */
	ev.id = s->last_id;
	ev.event = s->event.len > 0 ? s->event.data : "message";
	ev.data = s->data.data;
	if (s->cb(&ev, s->arg) != 0)
		s->stopped = 1;
	buf_reset(&s->data);
	buf_reset(&s->event);
}

static void
http_sse_field(struct http_sse *s, const char *line, size_t len)
{
	const char *colon = memchr(line, ':', len), *val;
	size_t flen, vlen;

	if (len == 0) {
		http_sse_dispatch(s);
		return;
	}
	if (line[0] == ':')
		return; /* a comment: the keep-alive */
	if (colon != NULL) {
		flen = (size_t)(colon - line);
		val = colon + 1;
		vlen = len - flen - 1;
		if (vlen > 0 && *val == ' ') {
			val++;
			vlen--;
		}
	} else {
		flen = len;
		val = "";
		vlen = 0;
	}
	if (flen == 5 && memcmp(line, "event", 5) == 0) {
		buf_reset(&s->event);
		if (buf_append(&s->event, val, vlen) != 0)
			s->toobig = 1;
	} else if (flen == 4 && memcmp(line, "data", 4) == 0) {
		if (buf_append(&s->data, val, vlen) != 0 || buf_putc(&s->data, '\n') != 0)
			s->toobig = 1;
	} else if (flen == 2 && memcmp(line, "id", 2) == 0) {
		if (memchr(val, '\0', vlen) == NULL && vlen < sizeof(s->idbuf)) {
			memcpy(s->idbuf, val, vlen);
			s->idbuf[vlen] = '\0';
		}
	} else if (flen == 5 && memcmp(line, "retry", 5) == 0) {
		long ms = 0;
		size_t i;

		for (i = 0; i < vlen && val[i] >= '0' && val[i] <= '9' && ms < 3600000; i++)
			ms = ms * 10 + (val[i] - '0');
		if (i == vlen && vlen > 0)
			s->retry_ms = ms;
	}
	/* Other fields are ignored, as the standard says. */
}

static size_t
http_sse_write_cb(char *p, size_t size, size_t n, void *ud)
{
	struct http_sse *s = ud;
	size_t len = size * n, i, start;

	if (s->status == 0) {
		char *ctype = NULL;

		curl_easy_getinfo(s->c->curl, CURLINFO_RESPONSE_CODE, &s->status);
		curl_easy_getinfo(s->c->curl, CURLINFO_CONTENT_TYPE, &ctype);
		s->is_stream = s->status == 200 && ctype != NULL &&
			       strncasecmp(ctype, "text/event-stream", 17) == 0;
	}
	if (!s->is_stream) {
		if (s->r->body.len + len > s->c->body_max || buf_append(&s->r->body, p, len) != 0) {
			s->toobig = 1;
			return 0;
		}
		return len;
	}
	s->received += len;
	start = 0;
	for (i = 0; i < len && !s->stopped && !s->toobig; i++) {
		if (p[i] != '\r' && p[i] != '\n')
			continue;
		if (p[i] == '\n' && s->cr && i == start && s->line.len == 0) {
			/* the LF of a CRLF */
			s->cr = 0;
			start = i + 1;
			continue;
		}
		if (buf_append(&s->line, p + start, i - start) != 0) {
			s->toobig = 1;
			break;
		}
		s->cr = p[i] == '\r';
		http_sse_field(s, s->line.len > 0 ? s->line.data : "", s->line.len);
		buf_reset(&s->line);
		start = i + 1;
	}
	if (s->stopped || s->toobig)
		return 0;
	if (start < len) {
		s->cr = 0;
		if (buf_append(&s->line, p + start, len - start) != 0) {
			s->toobig = 1;
			return 0;
		}
	}
	return len;
}

int
http_sse_get(struct http_client *c, const char *path, const struct http_sse_opts *opts,
	     http_sse_cb cb, void *arg, struct http_response *r, char *err, size_t errlen)
{
	struct http_sse s;
	struct http_xfer hx = {r, c->body_max, 0};
	struct curl_slist *hdrs = NULL, *t;
	struct buf url, idh;
	long idle_ms = opts->idle_timeout_ms > 0 ? opts->idle_timeout_ms : HTTP_SSE_IDLE_MS;
	long base_ms = opts->retry_ms > 0 ? opts->retry_ms : HTTP_SSE_RETRY_MS, delay_ms;
	int max_retries = opts->max_retries > 0 ? opts->max_retries : HTTP_SSE_MAX_RETRIES;
	int failures = 0, connected = 0, ret;
	char why[CURL_ERROR_SIZE + 600];
	CURLcode rc;

	memset(&s, 0, sizeof(s));
	s.c = c;
	s.r = r;
	s.cb = cb;
	s.arg = arg;
	s.max = opts->event_max > 0 ? opts->event_max : HTTP_SSE_EVENT_MAX;
	buf_init(&s.line, s.max);
	buf_init(&s.data, s.max);
	buf_init(&s.event, 1024);
	buf_init(&url, 64 * 1024);
	buf_init(&idh, 512);
	r->status = 0;
	r->retry_after_s = -1;
	buf_reset(&r->body);
	if (opts->last_event_id != NULL) {
		if (strlen(opts->last_event_id) >= sizeof(s.last_id) ||
		    strpbrk(opts->last_event_id, "\r\n") != NULL) {
			ret = err_set(err, errlen, ERR_INVAL, "bad Last-Event-ID");
			goto out;
		}
		snprintf(s.last_id, sizeof(s.last_id), "%s", opts->last_event_id);
	}
	delay_ms = base_ms;
	for (;;) {
		/* A new connection starts parsing afresh, from the last id dispatched. */
		buf_reset(&s.line);
		buf_reset(&s.data);
		buf_reset(&s.event);
		memcpy(s.idbuf, s.last_id, sizeof(s.idbuf));
		s.cr = 0;
		s.status = 0;
		s.is_stream = 0;
		s.received = 0;
		buf_reset(&r->body);
		hdrs = NULL;
		if ((ret = http_setup(c, path, &hdrs, &url, err, errlen)) != 0)
			goto out;
		if ((t = curl_slist_append(hdrs, "Accept: text/event-stream")) == NULL)
			goto nomem;
		hdrs = t;
		if ((t = curl_slist_append(hdrs, "Cache-Control: no-cache")) == NULL)
			goto nomem;
		hdrs = t;
		if (s.last_id[0] != '\0') {
			buf_reset(&idh);
			if (buf_printf(&idh, "Last-Event-ID: %s", s.last_id) != 0 ||
			    (t = curl_slist_append(hdrs, idh.data)) == NULL)
				goto nomem;
			hdrs = t;
		}
		curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, hdrs);
		curl_easy_setopt(c->curl, CURLOPT_HTTPGET, 1L);
		curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, 0L);
		/* Keep-alives come every 15 s; silence for longer means the link is dead. */
		curl_easy_setopt(c->curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(c->curl, CURLOPT_LOW_SPEED_TIME, (idle_ms + 999) / 1000);
		curl_easy_setopt(c->curl, CURLOPT_HEADERFUNCTION, http_header_cb);
		curl_easy_setopt(c->curl, CURLOPT_HEADERDATA, &hx);
		curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, http_sse_write_cb);
		curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &s);
		rc = curl_easy_perform(c->curl);
		if (s.status == 0)
			curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &s.status);
		curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, NULL);
		curl_slist_free_all(hdrs);
		hdrs = NULL;
		if (s.stopped) {
			r->status = s.status;
			ret = 0;
			goto out;
		}
		if (s.toobig) {
			ret = err_set(err, errlen, ERR_TOOBIG, "GET %s: an event is over %zu bytes",
				      url.data, s.max);
			goto out;
		}
		if (s.status != 0 && s.status != 200) {
			r->status = s.status; /* an answer, not a stream: the caller reads it */
			ret = 0;
			goto out;
		}
		if (s.status == 200 && !s.is_stream) {
			ret = err_set(err, errlen, ERR_IO,
				      "GET %s: the answer is not an event stream", url.data);
			goto out;
		}
		if (s.status == 200)
			r->status = 200;
		if (rc == CURLE_OK)
			snprintf(why, sizeof(why), "the server closed the stream");
		else if (rc == CURLE_OPERATION_TIMEDOUT && s.status == 200)
			snprintf(why, sizeof(why), "nothing received for %ld s",
				 (idle_ms + 999) / 1000);
		else
			http_fail(c, rc, "GET", url.data, why, sizeof(why));
		if (!connected && s.status != 200) {
			/* Never connected: there is nothing to resume. */
			ret = http_fail(c, rc, "GET", url.data, err, errlen);
			goto out;
		}
		connected = 1;
		if (s.received > 0) {
			/* It was alive: start the backoff again. */
			failures = 0;
			delay_ms = s.retry_ms > 0 ? s.retry_ms : base_ms;
		}
		if (++failures > max_retries) {
			ret = err_set(err, errlen, ERR_IO,
				      "lost the event stream: %s (gave up after %d tries)", why,
				      max_retries);
			goto out;
		}
		if (opts->drop_cb != NULL)
			opts->drop_cb(why, arg);
		time_sleep_ms(delay_ms);
		if (delay_ms < HTTP_SSE_RETRY_MAX_MS)
			delay_ms = delay_ms * 2 > HTTP_SSE_RETRY_MAX_MS ? HTTP_SSE_RETRY_MAX_MS
									: delay_ms * 2;
	}
nomem:
	ret = err_set(err, errlen, ERR_NOMEM, "out of memory");
out:
	curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(hdrs);
	buf_fini(&s.line);
	buf_fini(&s.data);
	buf_fini(&s.event);
	buf_fini(&url);
	buf_fini(&idh);
	return ret;
}
