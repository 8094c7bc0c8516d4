/*
 * http_client.h: a small HTTP client over libcurl (http_client.c is the only file that
 * includes curl.h). JSON requests with a bearer token, response bodies read into a bounded
 * buffer, timeouts, and a streaming GET for Server-Sent Events that resumes with
 * Last-Event-ID when the connection drops. Transport only: it never parses JSON.
 *
 * A client owns one libcurl handle (connections are kept alive between requests), so one
 * client must not be used by two threads at once. Every call blocks until it is done.
 * The token is only ever put in the Authorization header; it is never logged or copied into
 * error text.
 */
#ifndef STOKE_HTTP_CLIENT_H
#define STOKE_HTTP_CLIENT_H

#include <stddef.h>

#include "buf.h"

struct http_client;

struct http_client_opts {
	const char *base_url;	 /* "http://127.0.0.1:8080"; request paths are appended to it */
	const char *token;	 /* bearer token, or NULL for none */
	long connect_timeout_ms; /* 0 = 10 s */
	long timeout_ms;	 /* a whole request (not streams); 0 = 60 s */
	size_t body_max;	 /* response body limit; 0 = 16 MiB */
	const char *user_agent;	 /* NULL = "stoke/VERSION" */
};

/* Copies what it needs from opts (strings included). Fails on a URL that is not http(s). */
int http_client_new(const struct http_client_opts *opts, struct http_client **out, char *err,
		    size_t errlen);
void http_client_free(struct http_client *c);
/* The base URL as given, without a trailing '/' (for messages). */
const char *http_client_url(const struct http_client *c);

struct http_response {
	long status;	    /* HTTP status; 0 until a response arrived */
	struct buf body;    /* the body (of an SSE request: only when the status is not 200) */
	long retry_after_s; /* the Retry-After header in seconds, -1 when absent */
	/* The cloud providers' rate-limit headers (DigitalOcean, Hetzner), -1 when absent. */
	long ratelimit_remaining;  /* RateLimit-Remaining */
	long long ratelimit_reset; /* RateLimit-Reset: epoch seconds */
};

void http_response_init(struct http_response *r);
void http_response_fini(struct http_response *r);

/*
 * One request: method "GET", "POST", "PATCH", "DELETE"...; path is appended to the base URL
 * (escape its variable parts with http_escape). json_body may be NULL (no body, no
 * Content-Type). Returns 0 when the server answered, whatever the status (r->status and
 * r->body tell). Otherwise ERR_IO ("cannot reach http://host:port: Connection refused"),
 * ERR_TIMEOUT or ERR_TOOBIG, with text in err. r is reset first.
 */
int http_request(struct http_client *c, const char *method, const char *path, const char *json_body,
		 struct http_response *r, char *err, size_t errlen);
int http_get(struct http_client *c, const char *path, struct http_response *r, char *err,
	     size_t errlen);
int http_post(struct http_client *c, const char *path, const char *json_body,
	      struct http_response *r, char *err, size_t errlen);
int http_patch(struct http_client *c, const char *path, const char *json_body,
	       struct http_response *r, char *err, size_t errlen);
int http_delete(struct http_client *c, const char *path, struct http_response *r, char *err,
		size_t errlen);

/* Percent-encodes s for a path segment or query value (malloc'd; NULL when out of memory). */
char *http_escape(const char *s);

/* One Server-Sent Event. Valid only during the callback. */
struct http_sse_event {
	const char *id;	   /* the last event id seen ("" when none yet) */
	const char *event; /* the event type; "message" when the event named none */
	const char *data;  /* the data lines joined with '\n' */
};

/* Returns 0 to go on, non-zero to end the stream (http_sse_get then returns 0). */
typedef int (*http_sse_cb)(const struct http_sse_event *ev, void *arg);
/* Told why the stream dropped, before each reconnect; arg is the one given to the event cb. */
typedef void (*http_sse_drop_cb)(const char *why, void *arg);

struct http_sse_opts {
	const char *last_event_id; /* sent as Last-Event-ID on the first connect; NULL = none */
	long idle_timeout_ms; /* no byte (not even a keep-alive) for this long: drop; 0 = 45 s */
	long retry_ms;	      /* first reconnect delay (doubles, to 5 s); 0 = 500 ms */
	int max_retries;      /* reconnects in a row without receiving anything; 0 = 10 */
	size_t event_max;     /* bytes of one line or event; 0 = 1 MiB */
	http_sse_drop_cb drop_cb; /* may be NULL */
};

/*
 * Streams GET path as Server-Sent Events, calling cb for each event. When the connection
 * drops or the server ends the stream, it reconnects (after the server's retry: delay, or
 * its own backoff) with Last-Event-ID set to the last id seen, so no event is missed or
 * repeated. Returns 0 when cb asked to stop, or when the server answered a status other
 * than 200 (r->status and r->body then hold the answer). Returns ERR_IO (or ERR_TOOBIG)
 * with text in err when it gave up reconnecting. Blocks for as long as the stream lasts.
 */
int http_sse_get(struct http_client *c, const char *path, const struct http_sse_opts *opts,
		 http_sse_cb cb, void *arg, struct http_response *r, char *err, size_t errlen);

#endif
