/*
 * api.c: the REST API's HTTP layer over libmicrohttpd (the only includer of microhttpd.h):
 * listen, route, bearer auth, bounded bodies, JSON and streamed replies, access log.
 * A small pool of threads serves every connection (epoll); long-polls and idle event
 * streams are suspended and resumed by one waker thread, so no thread waits on a client.
 * Limits: connections in all and per client address, read, header and body deadlines,
 * streams per token.
 * No resource logic (api_*.c). Called by stoked.c and, via api_json.h, by the handlers.
 */
#include "api.h"
#include "api_json.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "buf.h"
#include "err.h"
#include "events.h"
#include "log.h"
#include "store.h"
#include "timeutil.h"
#include "tokens.h"

#define API_BODY_MAX_DEFAULT (1024u * 1024)
#define API_MAX_CONNS_DEFAULT 4096u
#define API_PER_IP_DEFAULT 64u
#define API_THREADS_DEFAULT 8u
#define API_READ_TIMEOUT_DEFAULT_S 10u
#define API_STREAMS_PER_TOKEN_DEFAULT 32u
#define API_BODY_DEADLINE_MS 60000   /* a whole body, however it trickles */
#define API_HEADER_DEADLINE_MS 30000 /* a request's headers, however they trickle */
#define API_FD_RESERVE 256u	     /* descriptors kept for the store, agents, jobs */
#define API_LISTEN_BACKLOG 1024
#define API_WAKER_SLICE_MS 50	   /* how late a timed wake-up may be */
#define API_WAKER_COALESCE_MS 20   /* events come in bursts: one round of wake-ups per burst */
#define API_HANGUP_CHECK_MS 1000   /* parked connections are checked for hang-ups this often */
#define API_STREAM_WAIT_MS 1000	   /* a stream that gave nothing and asked for no wake-up */
#define API_TOKEN_RECHECK_MS 15000 /* a stream's token is looked up again at least this often */
#define API_TOKEN_SETTLE_MS 2000
#define API_LOG_PATH_MAX 512
#define API_LOG_WINDOW_MS 10000
#define API_LOG_PER_WINDOW 20
#define API_MAX_PARAMS 3
#define API_PARAM_MAX 256
#define API_TOKEN_MAX 256
#define API_STREAM_BLOCK (16u * 1024)

/* Route flags. */
#define API_R_PUBLIC 0x01   /* no token needed */
#define API_R_BODY 0x02	    /* takes a JSON object body, required (411 without) */
#define API_R_BODY_OPT 0x04 /* takes an optional JSON object body */
#define API_R_STREAM 0x08   /* long-lived streamed reply (no HEAD) */
#define API_R_RAW 0x10	    /* takes a body of any type, not parsed (webhooks: api_req_raw_body) */

struct api_route {
	const char *method;
	const char *pattern; /* segments; ":x" matches one non-empty segment */
	api_handler_fn fn;
	unsigned flags;
};

static const struct api_route api_routes[] = {
    {"GET", "/api/v1/health", api_health_get, API_R_PUBLIC},
    {"GET", "/api/v1/servers", api_servers_list, 0},
    {"POST", "/api/v1/servers", api_servers_create, API_R_BODY},
    {"GET", "/api/v1/servers/:id", api_servers_get, 0},
    {"PATCH", "/api/v1/servers/:id", api_servers_patch, API_R_BODY},
    {"DELETE", "/api/v1/servers/:id", api_servers_delete, API_R_BODY_OPT},
    {"POST", "/api/v1/servers/:id/retry", api_servers_retry, API_R_BODY_OPT},
    {"GET", "/api/v1/servers/:id/log", api_servers_log, 0},
    {"GET", "/api/v1/sites", api_sites_list, 0},
    {"POST", "/api/v1/sites", api_sites_create, API_R_BODY},
    {"GET", "/api/v1/sites/:id", api_sites_get, 0},
    {"DELETE", "/api/v1/sites/:id", api_sites_delete, API_R_BODY_OPT},
    {"POST", "/api/v1/sites/:id/activate", api_sites_activate, API_R_BODY_OPT},
    {"POST", "/api/v1/sites/:id/deactivate", api_sites_deactivate, API_R_BODY_OPT},
    {"POST", "/api/v1/sites/:id/rollback", api_sites_rollback, API_R_BODY_OPT},
    {"POST", "/api/v1/sites/:id/deploy", api_sites_deploy, API_R_BODY_OPT},
    {"PUT", "/api/v1/sites/:id/script", api_sites_script, API_R_BODY},
    {"PUT", "/api/v1/sites/:id/env", api_sites_env, API_R_BODY},
    {"PUT", "/api/v1/sites/:id/known_hosts", api_sites_known_hosts, API_R_BODY},
    {"GET", "/api/v1/keys", api_keys_list, 0},
    {"POST", "/api/v1/keys", api_keys_create, API_R_BODY},
    {"GET", "/api/v1/keys/drift", api_keys_drift, 0},
    {"POST", "/api/v1/keys/drift/check", api_keys_drift_check, API_R_BODY_OPT},
    {"POST", "/api/v1/keys/sync", api_keys_sync, API_R_BODY_OPT},
    {"GET", "/api/v1/keys/:id", api_keys_get, 0},
    {"DELETE", "/api/v1/keys/:id", api_keys_revoke, API_R_BODY_OPT},
    {"POST", "/api/v1/keys/:id/attach", api_keys_attach, API_R_BODY},
    {"POST", "/api/v1/keys/:id/detach", api_keys_detach, API_R_BODY},
    {"GET", "/api/v1/keys/:id/servers", api_keys_servers, 0},
    {"GET", "/api/v1/batches", api_batches_list, 0},
    {"POST", "/api/v1/batches", api_batches_create, API_R_BODY},
    {"GET", "/api/v1/batches/:id", api_batches_get, 0},
    {"GET", "/api/v1/batches/:id/output", api_batches_output, 0},
    {"POST", "/api/v1/batches/:id/cancel", api_batches_cancel, API_R_BODY_OPT},
    {"GET", "/api/v1/deployments", api_deployments_list, 0},
    {"GET", "/api/v1/deployments/:id", api_deployments_get, 0},
    {"GET", "/api/v1/deployments/:id/log", api_deployments_log, 0},
    {"POST", "/api/v1/deployments/:id/cancel", api_deployments_cancel, API_R_BODY_OPT},
    {"POST", "/hooks/deploy/:token", api_hooks_deploy, API_R_PUBLIC | API_R_RAW},
    {"POST", "/hooks/:site", api_hooks_site, API_R_PUBLIC | API_R_RAW},
    {"GET", "/api/v1/commands", api_commands_list, 0},
    {"POST", "/api/v1/commands", api_commands_create, API_R_BODY},
    {"GET", "/api/v1/commands/:id", api_commands_get, 0},
    {"GET", "/api/v1/commands/:id/output", api_commands_output, 0},
    {"GET", "/api/v1/jobs", api_jobs_list, 0},
    {"GET", "/api/v1/jobs/:id", api_jobs_get, 0},
    {"POST", "/api/v1/jobs/:id/cancel", api_jobs_cancel, API_R_BODY_OPT},
    {"POST", "/api/v1/jobs/:id/retry", api_jobs_retry, API_R_BODY_OPT},
    {"GET", "/api/v1/tokens", api_tokens_list, 0},
    {"POST", "/api/v1/tokens", api_tokens_create, API_R_BODY},
    {"DELETE", "/api/v1/tokens/:id", api_tokens_revoke, API_R_BODY_OPT},
    {"GET", "/api/v1/audit", api_audit_list, 0},
    {"GET", "/api/v1/events", api_events_get, API_R_STREAM},
};
#define API_NROUTES (sizeof(api_routes) / sizeof(api_routes[0]))

/* A suspended connection: a long-poll or an idle stream, parked until the waker resumes it. */
struct api_wait {
	struct api_wait *prev, *next;
	struct MHD_Connection *conn;
	int fd;		 /* the connection's socket, polled for hang-ups while parked */
	int64_t after;	 /* resume once an event newer than this may exist (-1: never mind) */
	int64_t wake_at; /* resume at this time (time_mono_ms) */
};

/* A connection, from accept to close; watched while it owes a request's headers. */
struct api_conn {
	struct api_conn *prev, *next;
	int fd;
	int64_t since; /* waiting for headers since (time_mono_ms); 0: not waiting */
};

struct api_token_streams {
	int64_t token_id;
	unsigned n;
};

struct api {
	struct MHD_Daemon *mhd;
	unsigned port;
	size_t body_max;
	unsigned streams_per_token;
	atomic_int stopping;
	pthread_mutex_t mtx;		   /* guards waits and streams */
	struct api_wait waits;		   /* list head of parked connections */
	struct api_token_streams *streams; /* open streams per token */
	size_t nstreams, streams_cap;
	struct api_conn conns; /* list head of every connection (guarded by conns_mtx) */
	pthread_mutex_t conns_mtx;
	pthread_t waker;
	int waker_started;
	pthread_mutex_t log_mtx; /* microhttpd's messages, rate-limited */
	int64_t log_window;
	unsigned log_count, log_dropped;
};

struct api_req {
	struct api *api;
	struct MHD_Connection *conn;
	const struct api_route *route;
	char method[16];
	char path[API_LOG_PATH_MAX]; /* for the log: printable, truncated, secrets cut out */
	char params[API_MAX_PARAMS][API_PARAM_MAX];
	int nparams;
	struct buf body;
	int body_seen;	  /* the request announced or sent a body */
	int body_too_big; /* the body passed body_max; the rest is discarded */
	json_t *json;
	int64_t token_id;
	char actor[160];
	int replied; /* a reply was attempted */
	int status;  /* 0 until a reply is queued */
	int checked; /* the body was judged and parsed: a resumed long-poll skips that */
	int waiting; /* the handler asked to run again later (api_req_wait) */
	struct api_wait wait;
	int64_t t0;
};

struct api_stream {
	struct api *api;
	int fd; /* the connection's socket, polled for hang-up */
	api_stream_fn fn;
	void *cls;
	void (*free_fn)(void *);
	struct api_wait wait;
	int wait_set;	      /* fn called api_stream_wait this time */
	int64_t token_id;     /* counted in api->streams; -1: none */
	unsigned revocations; /* tokens_revocations() when the token was last looked up */
	int64_t token_checked_ms;
	int64_t recheck_until; /* look at every call until then (a revocation may be committing) */
};

/* ---- small helpers ---- */

static void api_printable(char *dst, size_t dstlen, const char *s);

/* Blanks what looks like a secret of ours (API tokens "stk_…", deploy tokens "dpl_…") in a
 * text bound for the log: microhttpd's messages may quote a request. */
static void
api_scrub(char *s)
{
	char *p = s;
	size_t n;

	while ((p = strpbrk(p, "sd")) != NULL) {
		if ((strncmp(p, "stk_", 4) == 0 || strncmp(p, "dpl_", 4) == 0) &&
		    (p == s ||
		     !(p[-1] == '_' || (p[-1] >= '0' && p[-1] <= '9') ||
		       (p[-1] >= 'a' && p[-1] <= 'z') || (p[-1] >= 'A' && p[-1] <= 'Z')))) {
			p += 4;
			for (n = 0; p[n] == '_' || p[n] == '-' || (p[n] >= '0' && p[n] <= '9') ||
				    (p[n] >= 'a' && p[n] <= 'z') || (p[n] >= 'A' && p[n] <= 'Z');
			     n++)
				p[n] = '*';
			p += n;
		} else {
			p++;
		}
	}
}

/* microhttpd's messages: at most API_LOG_PER_WINDOW per window (a flood of refused
 * connections would otherwise write a line each), then one line saying how many were
 * dropped. */
static void
api_log_cb(void *cls, const char *fmt, va_list ap)
{
	struct api *a = cls;
	char msg[512];
	int64_t now = time_mono_ms();
	unsigned dropped = 0;
	size_t n;
	int show;

	pthread_mutex_lock(&a->log_mtx);
	if (now - a->log_window >= API_LOG_WINDOW_MS) {
		dropped = a->log_dropped;
		a->log_window = now;
		a->log_count = 0;
		a->log_dropped = 0;
	}
	show = a->log_count < API_LOG_PER_WINDOW;
	if (show)
		a->log_count++;
	else
		a->log_dropped++;
	pthread_mutex_unlock(&a->log_mtx);
	if (dropped > 0)
		log_warnx("api: microhttpd: %u more messages in %d s not shown", dropped,
			  API_LOG_WINDOW_MS / 1000);
	if (!show)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	api_scrub(msg);
	log_warnx("api: microhttpd: %s", msg);
}

/* A path that matched no route is anyone's text: the log keeps its first three segments
 * ("/api/v1/nowhere/…"), where a route's name would be, not what follows. */
static void
api_log_path_cut(char *path)
{
	char *p = path;
	int n;

	for (n = 0; n < 3 && p != NULL; n++)
		p = strchr(p + 1, '/');
	if (p != NULL && (size_t)(p - path) + sizeof("/...") <= API_LOG_PATH_MAX)
		memcpy(p, "/...", sizeof("/..."));
}

/* Copies url for the log with the secret part of a path that carries one cut out:
 * "/hooks/deploy/dpl_…" becomes "/hooks/deploy/[token]". */
static void
api_log_path(char *dst, size_t dstlen, const char *url)
{
	static const char deploy[] = "/hooks/deploy/";

	if (strncmp(url, deploy, sizeof(deploy) - 1) == 0 && url[sizeof(deploy) - 1] != '\0')
		url = "/hooks/deploy/[token]";
	api_printable(dst, dstlen, url);
	api_scrub(dst);
}

/* Copies s for the log: printable ASCII only, truncated. */
static void
api_printable(char *dst, size_t dstlen, const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0' && i + 1 < dstlen; i++)
		dst[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	dst[i] = '\0';
}

static int
api_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decodes s in place (paths, query names and values) like microhttpd does,
 * except that "%00" stays as it is: a NUL would cut the text short unseen, and the
 * literal "%00" then fails whatever grammar the value must meet. */
static size_t
api_unescape_cb(void *cls, struct MHD_Connection *conn, char *s)
{
	char *r = s, *w = s;
	int hi, lo;

	(void)cls;
	(void)conn;
	while (*r != '\0') {
		if (r[0] == '%' && (hi = api_hexval(r[1])) >= 0 && (lo = api_hexval(r[2])) >= 0 &&
		    (hi | lo) != 0) {
			*w++ = (char)(hi * 16 + lo);
			r += 3;
		} else {
			*w++ = *r++;
		}
	}
	*w = '\0';
	return (size_t)(w - s);
}

static int
api_match(const char *pattern, const char *path, char params[][API_PARAM_MAX], int *nparams)
{
	const char *p = pattern, *u = path, *pe, *ue;
	size_t pl, ul;
	int n = 0;

	while (*p != '\0' && *u != '\0') {
		if (*p != '/' || *u != '/')
			return 0;
		p++;
		u++;
		pe = strchrnul(p, '/');
		ue = strchrnul(u, '/');
		pl = (size_t)(pe - p);
		ul = (size_t)(ue - u);
		if (*p == ':') {
			if (ul == 0 || ul >= API_PARAM_MAX || n >= API_MAX_PARAMS)
				return 0;
			memcpy(params[n], u, ul);
			params[n][ul] = '\0';
			n++;
		} else if (pl != ul || memcmp(p, u, pl) != 0) {
			return 0;
		}
		p = pe;
		u = ue;
	}
	if (*p != '\0' || *u != '\0')
		return 0;
	*nparams = n;
	return 1;
}

static int
api_method_is(const struct api_route *rt, const char *method)
{
	if (strcmp(rt->method, method) == 0)
		return 1;
	return strcmp(method, "HEAD") == 0 && strcmp(rt->method, "GET") == 0 &&
	       !(rt->flags & API_R_STREAM);
}

/* ---- replies ---- */

static void
api_queue(struct api_req *r, int status, struct MHD_Response *resp)
{
	if (resp == NULL) {
		r->replied = 1;
		log_warnx("api: %s %s: cannot make a response", r->method, r->path);
		return;
	}
	r->replied = 1;
	MHD_add_response_header(resp, "Cache-Control", "no-store");
	MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
	if (MHD_queue_response(r->conn, (unsigned)status, resp) == MHD_YES)
		r->status = status;
	else
		log_warnx("api: %s %s: cannot queue response %d", r->method, r->path, status);
	MHD_destroy_response(resp);
}

static void
api_reply_text(struct api_req *r, int status, char *text, const char *allow)
{
	struct MHD_Response *resp;
	size_t len = strlen(text);

	/* A trailing newline makes curl output readable; JSON does not mind. */
	text[len] = '\n';
	resp = MHD_create_response_from_buffer(len + 1, text, MHD_RESPMEM_MUST_FREE);
	if (resp == NULL) {
		free(text);
		api_queue(r, status, NULL);
		return;
	}
	MHD_add_response_header(resp, "Content-Type", "application/json");
	if (allow != NULL)
		MHD_add_response_header(resp, "Allow", allow);
	if (status == 401)
		MHD_add_response_header(resp, "WWW-Authenticate", "Bearer realm=\"stoke\"");
	api_queue(r, status, resp);
}

static char *
api_dump(const json_t *body)
{
	char *text, *bigger;
	size_t len;

	/* Room for the newline api_reply_text appends. */
	if ((text = json_dumps(body, JSON_COMPACT)) == NULL)
		return NULL;
	len = strlen(text);
	if ((bigger = realloc(text, len + 2)) == NULL) {
		free(text);
		return NULL;
	}
	return bigger;
}

static void
api_reply_error_allow(struct api_req *r, int status, const char *code, const char *allow,
		      const char *fmt, va_list ap)
{
	char msg[1024];
	json_t *o;
	char *text;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	o = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg);
	text = o ? api_dump(o) : NULL;
	json_decref(o);
	if (text == NULL) {
		/* Last resort: a fixed body. */
		static const char oom[] =
		    "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}\n";
		api_queue(r, 500,
			  MHD_create_response_from_buffer(sizeof(oom) - 1, (void *)oom,
							  MHD_RESPMEM_PERSISTENT));
		return;
	}
	api_reply_text(r, status, text, allow);
}

void
api_reply_error(struct api_req *r, int status, const char *code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	api_reply_error_allow(r, status, code, NULL, fmt, ap);
	va_end(ap);
}

static void api_reply_405(struct api_req *r, const char *allow, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
api_reply_405(struct api_req *r, const char *allow, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	api_reply_error_allow(r, 405, "method_not_allowed", allow, fmt, ap);
	va_end(ap);
}

void
api_reply_err(struct api_req *r, int code, const char *msg)
{
	switch (code) {
	case ERR_NOTFOUND:
		api_reply_error(r, 404, "not_found", "%s", msg);
		break;
	case ERR_CONFLICT:
	case ERR_EXISTS:
		api_reply_error(r, 409, "conflict", "%s", msg);
		break;
	case ERR_INVAL:
		api_reply_error(r, 400, "invalid_field", "%s", msg);
		break;
	case ERR_AUTH:
		api_reply_error(r, 401, "unauthorized", "%s", msg);
		break;
	default:
		api_reply_error(r, 500, "internal", "%s", msg);
		break;
	}
}

void
api_reply_json(struct api_req *r, int status, json_t *body)
{
	char *text;

	if (body == NULL) {
		api_reply_error(r, 500, "internal", "out of memory building the reply");
		return;
	}
	text = api_dump(body);
	json_decref(body);
	if (text == NULL) {
		api_reply_error(r, 500, "internal", "out of memory building the reply");
		return;
	}
	api_reply_text(r, status, text, NULL);
}

/* ---- parking: suspended connections and the waker that resumes them ---- */

static int
api_hungup(int fd)
{
	struct pollfd pfd;

	if (fd < 0)
		return 0;
	pfd.fd = fd;
	pfd.events = POLLRDHUP;
	pfd.revents = 0;
	return poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

/* Caller holds a->mtx. */
static void
api_wait_resume(struct api_wait *w)
{
	w->prev->next = w->next;
	w->next->prev = w->prev;
	w->prev = w->next = NULL;
	MHD_resume_connection(w->conn);
}

/* Suspends w's connection until the waker resumes it (w->after, w->wake_at). Call only
 * from the access handler or the content reader of that connection. Returns 0, or -1
 * when the daemon is stopping (nothing suspended). */
static int
api_wait_park(struct api *a, struct api_wait *w)
{
	pthread_mutex_lock(&a->mtx);
	if (atomic_load(&a->stopping)) {
		pthread_mutex_unlock(&a->mtx);
		return -1;
	}
	MHD_suspend_connection(w->conn);
	w->next = &a->waits;
	w->prev = a->waits.prev;
	a->waits.prev->next = w;
	a->waits.prev = w;
	/* An event that came since the caller looked: go on at once. */
	if (w->after >= 0 && events_last_id() > w->after)
		api_wait_resume(w);
	pthread_mutex_unlock(&a->mtx);
	return 0;
}

/* ---- connections: the header deadline ---- */

/* microhttpd calls this as a connection opens and as it closes (before it closes the
 * socket: while the entry is listed, its fd is the connection's). */
static void
api_conn_cb(void *cls, struct MHD_Connection *conn, void **socket_context,
	    enum MHD_ConnectionNotificationCode toe)
{
	struct api *a = cls;
	const union MHD_ConnectionInfo *ci;
	struct api_conn *c = *socket_context;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		if ((c = calloc(1, sizeof(*c))) == NULL)
			return;
		ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		c->fd = ci ? ci->connect_fd : -1;
		c->since = time_mono_ms();
		pthread_mutex_lock(&a->conns_mtx);
		c->next = &a->conns;
		c->prev = a->conns.prev;
		a->conns.prev->next = c;
		a->conns.prev = c;
		pthread_mutex_unlock(&a->conns_mtx);
		*socket_context = c;
		return;
	}
	if (c == NULL)
		return;
	pthread_mutex_lock(&a->conns_mtx);
	c->prev->next = c->next;
	c->next->prev = c->prev;
	pthread_mutex_unlock(&a->conns_mtx);
	free(c);
	*socket_context = NULL;
}

/* The connection owes a request's headers from now (now = 0: it owes none). */
static void
api_conn_owes_headers(struct api *a, struct MHD_Connection *conn, int64_t now)
{
	const union MHD_ConnectionInfo *ci;
	struct api_conn *c;

	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	if (ci == NULL || (c = ci->socket_context) == NULL)
		return;
	pthread_mutex_lock(&a->conns_mtx);
	c->since = now;
	pthread_mutex_unlock(&a->conns_mtx);
}

/* Shuts down connections whose request headers took longer than API_HEADER_DEADLINE_MS
 * (each pause is bounded by the read deadline; this bounds them all: a client sending
 * a byte every few seconds); microhttpd then closes them. */
static void
api_conns_sweep(struct api *a, int64_t now)
{
	struct api_conn *c;
	unsigned n = 0;

	pthread_mutex_lock(&a->conns_mtx);
	for (c = a->conns.next; c != &a->conns; c = c->next) {
		if (c->since > 0 && now - c->since > API_HEADER_DEADLINE_MS && c->fd >= 0) {
			shutdown(c->fd, SHUT_RDWR);
			c->since = 0;
			n++;
		}
	}
	pthread_mutex_unlock(&a->conns_mtx);
	if (n > 0)
		log_warnx(
		    "api: closed %u connections that sent no complete request headers in %d s", n,
		    API_HEADER_DEADLINE_MS / 1000);
}

static void *
api_waker_main(void *arg)
{
	struct api *a = arg;
	struct api_wait *w, *next;
	struct timespec ts = {0, API_WAKER_COALESCE_MS * 1000000L};
	int64_t now, last_hup = 0, last_id;
	int woken, hup;

	while (!atomic_load(&a->stopping)) {
		woken = events_wait(events_last_id(), API_WAKER_SLICE_MS);
		if (woken)
			nanosleep(&ts, NULL);
		now = time_mono_ms();
		last_id = events_last_id();
		hup = now - last_hup >= API_HANGUP_CHECK_MS;
		if (hup) {
			last_hup = now;
			api_conns_sweep(a, now);
		}
		pthread_mutex_lock(&a->mtx);
		for (w = a->waits.next; w != &a->waits; w = next) {
			next = w->next;
			if ((w->after >= 0 && (woken || last_id > w->after)) || now >= w->wake_at ||
			    (hup && api_hungup(w->fd)))
				api_wait_resume(w);
		}
		pthread_mutex_unlock(&a->mtx);
	}
	return NULL;
}

/* ---- streams ---- */

static void
api_stream_count(struct api *a, int64_t token_id, int delta)
{
	size_t i;

	for (i = 0; i < a->nstreams; i++) {
		if (a->streams[i].token_id != token_id)
			continue;
		a->streams[i].n = (unsigned)((int)a->streams[i].n + delta);
		if (a->streams[i].n == 0)
			a->streams[i] = a->streams[--a->nstreams];
		return;
	}
}

/* Takes a stream for token_id; 0, or -1 when it has all it may have (or out of memory). */
static int
api_stream_take(struct api *a, int64_t token_id)
{
	struct api_token_streams *bigger;
	size_t i, cap;
	int rc = 0;

	pthread_mutex_lock(&a->mtx);
	for (i = 0; i < a->nstreams && a->streams[i].token_id != token_id; i++)
		;
	if (i < a->nstreams) {
		if (a->streams[i].n >= a->streams_per_token)
			rc = -1;
		else
			a->streams[i].n++;
		goto out;
	}
	if (a->nstreams == a->streams_cap) {
		cap = a->streams_cap * 2 + 8;
		if ((bigger = realloc(a->streams, cap * sizeof(*bigger))) == NULL) {
			rc = -1;
			goto out;
		}
		a->streams = bigger;
		a->streams_cap = cap;
	}
	a->streams[a->nstreams++] = (struct api_token_streams){token_id, 1};
out:
	pthread_mutex_unlock(&a->mtx);
	return rc;
}

/* Whether the stream's token still holds: looked up again when any token was revoked in
 * this process, and every API_TOKEN_RECHECK_MS (a revocation by another process). */
static int
api_stream_token_ok(struct api_stream *s)
{
	unsigned rev = tokens_revocations();
	int64_t now = time_mono_ms();
	struct store *db;

	if (s->token_id < 0 ||
	    (rev == s->revocations && now - s->token_checked_ms < API_TOKEN_RECHECK_MS &&
	     now >= s->recheck_until))
		return 1;
	/* The count moves before the revocation commits: keep looking for a moment. */
	if (rev != s->revocations)
		s->recheck_until = now + API_TOKEN_SETTLE_MS;
	s->revocations = rev;
	s->token_checked_ms = now;
	if ((db = store_thread()) == NULL || tokens_active(db, s->token_id) != 0)
		return 1; /* a database hiccup does not end streams */
	log_info("api: stream of token %lld ended: the token was revoked", (long long)s->token_id);
	return 0;
}

static ssize_t
api_stream_cb(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct api_stream *s = cls;
	ssize_t n;

	(void)pos;
	if (!api_stream_token_ok(s))
		return MHD_CONTENT_READER_END_OF_STREAM;
	s->wait_set = 0;
	n = s->fn(s, s->cls, buf, max);
	if (n == API_STREAM_END)
		return MHD_CONTENT_READER_END_OF_STREAM;
	if (n > 0)
		return n;
	if (n != 0)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	/* Nothing to send: park the connection rather than be called again at once. */
	if (!s->wait_set)
		api_stream_wait(s, -1, time_mono_ms() + API_STREAM_WAIT_MS);
	if (api_wait_park(s->api, &s->wait) != 0)
		return MHD_CONTENT_READER_END_OF_STREAM;
	return 0;
}

static void
api_stream_free_cb(void *cls)
{
	struct api_stream *s = cls;

	if (s->token_id >= 0) {
		pthread_mutex_lock(&s->api->mtx);
		api_stream_count(s->api, s->token_id, -1);
		pthread_mutex_unlock(&s->api->mtx);
	}
	if (s->free_fn)
		s->free_fn(s->cls);
	free(s);
}

void
api_stream_wait(struct api_stream *s, int64_t after_event_id, int64_t wake_at_ms)
{
	s->wait.after = after_event_id;
	s->wait.wake_at = wake_at_ms;
	s->wait_set = 1;
}

void
api_reply_stream(struct api_req *r, const char *content_type, api_stream_fn fn, void *cls,
		 void (*free_fn)(void *))
{
	const union MHD_ConnectionInfo *ci;
	struct MHD_Response *resp;
	struct api_stream *s;

	if (r->token_id >= 0 && api_stream_take(r->api, r->token_id) != 0) {
		if (free_fn)
			free_fn(cls);
		api_reply_error(r, 429, "too_many_streams",
				"this token has %u streams open already (the most it may have)",
				r->api->streams_per_token);
		return;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		if (r->token_id >= 0) {
			pthread_mutex_lock(&r->api->mtx);
			api_stream_count(r->api, r->token_id, -1);
			pthread_mutex_unlock(&r->api->mtx);
		}
		if (free_fn)
			free_fn(cls);
		api_reply_error(r, 500, "internal", "out of memory");
		return;
	}
	ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	s->api = r->api;
	s->fd = ci ? ci->connect_fd : -1;
	s->fn = fn;
	s->cls = cls;
	s->free_fn = free_fn;
	s->wait.conn = r->conn;
	s->wait.fd = s->fd;
	s->token_id = r->token_id;
	s->revocations = tokens_revocations();
	s->token_checked_ms = time_mono_ms();
	resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, API_STREAM_BLOCK, api_stream_cb,
						 s, api_stream_free_cb);
	if (resp == NULL) {
		api_stream_free_cb(s);
		api_reply_error(r, 500, "internal", "cannot make a streamed response");
		return;
	}
	MHD_add_response_header(resp, "Content-Type", content_type);
	/* Tell buffering proxies (nginx) to pass events through at once. */
	MHD_add_response_header(resp, "X-Accel-Buffering", "no");
	/* A stream is the connection's last reply: when it ends (stop, revoked token) the
	 * client sees the connection close rather than wait on an idle one. */
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	api_queue(r, 200, resp);
}

int
api_stream_closing(struct api_stream *s)
{
	if (atomic_load(&s->api->stopping))
		return API_STREAM_STOPPING;
	if (api_hungup(s->fd))
		return API_STREAM_HUNGUP;
	return 0;
}

/* ---- the request ---- */

struct store *
api_req_store(struct api_req *r)
{
	(void)r;
	return store_thread();
}

const char *
api_req_param(struct api_req *r, int i)
{
	return i >= 0 && i < r->nparams ? r->params[i] : NULL;
}

const char *
api_req_query(struct api_req *r, const char *name)
{
	return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *
api_req_header(struct api_req *r, const char *name)
{
	return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

json_t *
api_req_body(struct api_req *r)
{
	return r->json;
}

const char *
api_req_raw_body(struct api_req *r, size_t *len)
{
	*len = r->body.len;
	return r->body.data ? r->body.data : "";
}

const char *
api_req_actor(struct api_req *r)
{
	return r->actor;
}

int64_t
api_req_token_id(struct api_req *r)
{
	return r->token_id;
}

int64_t
api_req_started_ms(struct api_req *r)
{
	return r->t0;
}

void
api_req_wait(struct api_req *r, int64_t after_event_id, int64_t wake_at_ms)
{
	r->waiting = 1;
	r->wait.after = after_event_id;
	r->wait.wake_at = wake_at_ms;
}

struct api_query_scan {
	const char *const *names;
	char bad[160]; /* message of the first problem */
	const char *seen[16];
	size_t nseen;
};

static enum MHD_Result
api_query_scan_cb(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct api_query_scan *q = cls;
	char name[64];
	size_t i;

	(void)kind;
	api_printable(name, sizeof(name), key ? key : "");
	for (i = 0; q->names[i] != NULL; i++)
		if (key != NULL && strcmp(q->names[i], key) == 0)
			break;
	if (q->names[i] == NULL) {
		snprintf(q->bad, sizeof(q->bad), "%s: unknown parameter", name);
		return MHD_NO;
	}
	if (value == NULL || value[0] == '\0') {
		snprintf(q->bad, sizeof(q->bad), "%s: needs a value", name);
		return MHD_NO;
	}
	for (i = 0; i < q->nseen; i++) {
		if (strcmp(q->seen[i], key) == 0) {
			snprintf(q->bad, sizeof(q->bad), "%s: given more than once", name);
			return MHD_NO;
		}
	}
	if (q->nseen == sizeof(q->seen) / sizeof(q->seen[0])) {
		snprintf(q->bad, sizeof(q->bad), "too many parameters");
		return MHD_NO;
	}
	q->seen[q->nseen++] = key;
	return MHD_YES;
}

int
api_req_query_allow(struct api_req *r, const char *const *names)
{
	struct api_query_scan q;

	memset(&q, 0, sizeof(q));
	q.names = names;
	MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, api_query_scan_cb, &q);
	if (q.bad[0] != '\0') {
		api_reply_error(r, 400, "invalid_parameter", "%s", q.bad);
		return -1;
	}
	return 0;
}

/* ---- the request cycle ---- */

/* Finds the route; replies 404 or 405 when there is none. */
static int
api_route_find(struct api_req *r, const char *url)
{
	char allow[64];
	size_t i;
	int n;

	allow[0] = '\0';
	for (i = 0; i < API_NROUTES; i++) {
		if (!api_match(api_routes[i].pattern, url, r->params, &n))
			continue;
		if (api_method_is(&api_routes[i], r->method)) {
			r->route = &api_routes[i];
			r->nparams = n;
			return 0;
		}
		if (allow[0] != '\0')
			strncat(allow, ", ", sizeof(allow) - strlen(allow) - 1);
		strncat(allow, api_routes[i].method, sizeof(allow) - strlen(allow) - 1);
		if (strcmp(api_routes[i].method, "GET") == 0 &&
		    !(api_routes[i].flags & API_R_STREAM))
			strncat(allow, ", HEAD", sizeof(allow) - strlen(allow) - 1);
	}
	if (allow[0] != '\0')
		api_reply_405(r, allow, "%s %s: method not allowed (allowed: %s)", r->method,
			      r->path, allow);
	else
		api_reply_error(r, 404, "not_found", "%s: no such endpoint", r->path);
	api_log_path_cut(r->path);
	return -1;
}

/* Checks the bearer token; replies 401 when it is missing or not valid. The token is
 * never logged or echoed. */
static int
api_auth(struct api_req *r)
{
	const char *h = api_req_header(r, "Authorization");
	struct store *s;
	char *name = NULL;
	int rc;

	if (h == NULL) {
		api_reply_error(r, 401, "unauthorized", "missing Authorization: Bearer token");
		return -1;
	}
	if (strncasecmp(h, "Bearer ", 7) != 0) {
		api_reply_error(r, 401, "unauthorized", "Authorization must be: Bearer <token>");
		return -1;
	}
	h += 7;
	while (*h == ' ')
		h++;
	if (*h == '\0' || strlen(h) > API_TOKEN_MAX) {
		api_reply_error(r, 401, "unauthorized", "malformed bearer token");
		return -1;
	}
	if ((s = store_thread()) == NULL) {
		api_reply_error(r, 500, "internal", "cannot open the database");
		return -1;
	}
	rc = tokens_verify(s, h, &r->token_id, &name);
	if (rc == ERR_DB) {
		api_reply_error(r, 500, "internal", "checking the token: %s", store_errmsg(s));
		return -1;
	}
	if (rc != 0) {
		api_reply_error(r, 401, "unauthorized", "unknown or revoked token");
		return -1;
	}
	snprintf(r->actor, sizeof(r->actor), "token:%s", name ? name : "?");
	free(name);
	return 0;
}

static int
api_is_json_type(const char *ct)
{
	static const char want[] = "application/json";
	size_t n = sizeof(want) - 1;

	if (ct == NULL || strncasecmp(ct, want, n) != 0)
		return 0;
	ct += n;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	return *ct == '\0' || *ct == ';';
}

/* First call: everything that can be judged from the headers alone. Replying now makes
 * microhttpd skip the body and close the connection. */
static void
api_headers(struct api_req *r, const char *url)
{
	const char *cl, *te;
	int64_t len = -1;
	char *end;

	if (api_route_find(r, url) != 0)
		return;
	if (!(r->route->flags & API_R_PUBLIC) && api_auth(r) != 0)
		return;
	cl = api_req_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
	te = api_req_header(r, MHD_HTTP_HEADER_TRANSFER_ENCODING);
	if (cl != NULL) {
		errno = 0;
		len = strtoll(cl, &end, 10);
		if (errno != 0 || end == cl || *end != '\0' || len < 0)
			len = INT64_MAX;
	}
	if (len > 0 || te != NULL)
		r->body_seen = 1;
	if (len > (int64_t)r->api->body_max) {
		api_reply_error(r, 413, "payload_too_large", "request body over %zu bytes",
				r->api->body_max);
		return;
	}
	if (r->body_seen && (r->route->flags & (API_R_BODY | API_R_BODY_OPT)) &&
	    !api_is_json_type(api_req_header(r, MHD_HTTP_HEADER_CONTENT_TYPE))) {
		api_reply_error(r, 415, "unsupported_media_type",
				"request body must be sent as Content-Type: application/json");
		return;
	}
}

/* Last call: the whole body is here. Judges it and parses JSON bodies; 0, or -1 after
 * replying. */
static int
api_body_check(struct api_req *r)
{
	json_error_t jerr;
	unsigned fl = r->route->flags;

	if (r->body_too_big) {
		api_reply_error(r, 413, "payload_too_large", "request body over %zu bytes",
				r->api->body_max);
		return -1;
	}
	if ((fl & API_R_BODY) && r->body.len == 0) {
		api_reply_error(r, 411, "length_required", "%s %s needs a JSON object body",
				r->method, r->route->pattern);
		return -1;
	}
	if ((fl & (API_R_BODY | API_R_BODY_OPT)) && r->body.len > 0) {
		/* A body sent without a length (chunked) was not seen by api_headers. */
		if (!api_is_json_type(api_req_header(r, MHD_HTTP_HEADER_CONTENT_TYPE))) {
			api_reply_error(r, 415, "unsupported_media_type",
					"request body must be sent as Content-Type: "
					"application/json");
			return -1;
		}
		r->json = json_loadb(r->body.data, r->body.len, JSON_REJECT_DUPLICATES, &jerr);
		if (r->json == NULL) {
			api_reply_error(r, 400, "invalid_json", "body: %s (line %d, column %d)",
					jerr.text, jerr.line, jerr.column);
			return -1;
		}
		if (!json_is_object(r->json)) {
			api_reply_error(r, 400, "invalid_json", "body must be a JSON object");
			return -1;
		}
	}
	return 0;
}

/* Runs the handler (again, for a long-poll resumed by the waker). */
static void
api_dispatch(struct api_req *r)
{
	if (!r->checked) {
		r->checked = 1;
		if (api_body_check(r) != 0)
			return;
	}
	r->waiting = 0;
	r->route->fn(r);
	if (!r->replied && !r->waiting) {
		log_error("api: %s %s: handler sent no reply", r->method, r->route->pattern);
		api_reply_error(r, 500, "internal", "the handler sent no reply");
	}
}

static enum MHD_Result
api_access_cb(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
	      const char *version, const char *upload_data, size_t *upload_data_size,
	      void **con_cls)
{
	struct api *a = cls;
	struct api_req *r = *con_cls;

	(void)version;
	if (r == NULL) {
		if ((r = calloc(1, sizeof(*r))) == NULL)
			return MHD_NO;
		r->api = a;
		r->conn = conn;
		r->t0 = time_mono_ms();
		r->token_id = -1;
		snprintf(r->actor, sizeof(r->actor), "anonymous");
		api_printable(r->method, sizeof(r->method), method);
		api_log_path(r->path, sizeof(r->path), url);
		r->wait.conn = conn;
		r->wait.fd = -1;
		buf_init(&r->body, a->body_max);
		*con_cls = r;
		api_conn_owes_headers(a, conn, 0);
		api_headers(r, url);
		return r->replied && r->status == 0 ? MHD_NO : MHD_YES;
	}
	if (r->replied) {
		/* Replied already; microhttpd discards the rest. */
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (*upload_data_size > 0) {
		/* The read deadline bounds each pause; this bounds the whole body. */
		if (time_mono_ms() - r->t0 > API_BODY_DEADLINE_MS) {
			log_warnx("api: %s %s: body not complete after %d s; connection closed",
				  r->method, r->path, API_BODY_DEADLINE_MS / 1000);
			return MHD_NO;
		}
		if (!r->body_too_big && buf_append(&r->body, upload_data, *upload_data_size) != 0)
			r->body_too_big = 1;
		*upload_data_size = 0;
		return MHD_YES;
	}
	api_dispatch(r);
	if (r->waiting && !r->replied) {
		if (r->wait.fd < 0) {
			const union MHD_ConnectionInfo *ci =
			    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
			r->wait.fd = ci ? ci->connect_fd : -1;
		}
		if (api_wait_park(a, &r->wait) == 0)
			return MHD_YES;
		api_reply_error(r, 503, "unavailable", "the server is stopping");
	}
	return r->status != 0 ? MHD_YES : MHD_NO;
}

static void
api_completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls,
		 enum MHD_RequestTerminationCode toe)
{
	struct api_req *r = *con_cls;

	if (r == NULL)
		return;
	log_info("api: %s %s %d %s %lldms%s", r->method, r->path, r->status, r->actor,
		 (long long)(time_mono_ms() - r->t0),
		 toe == MHD_REQUEST_TERMINATED_COMPLETED_OK	 ? ""
		 : toe == MHD_REQUEST_TERMINATED_CLIENT_ABORT	 ? " (client gone)"
		 : toe == MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN ? " (shutdown)"
								 : " (aborted)");
	json_decref(r->json);
	buf_fini(&r->body);
	free(r);
	*con_cls = NULL;
	/* A kept-alive connection owes the next request's headers. */
	if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
		api_conn_owes_headers(cls, conn, time_mono_ms());
}

/* ---- start and stop ---- */

/* "host:port", "[v6]:port", ":port" or "*:port" into host (NULL = any) and port. */
static int
api_split_listen(const char *addr, char *host, size_t hostlen, char *port, size_t portlen,
		 char *err, size_t errlen)
{
	const char *colon, *h = addr, *hend;
	int64_t p;

	if (addr == NULL || *addr == '\0')
		return err_set(err, errlen, ERR_INVAL, "api addr address is empty");
	if (*addr == '[') {
		if ((hend = strchr(addr, ']')) == NULL || hend[1] != ':')
			return err_set(err, errlen, ERR_INVAL, "%s: expected [address]:port", addr);
		h = addr + 1;
		colon = hend + 1;
	} else {
		if ((colon = strrchr(addr, ':')) == NULL)
			return err_set(err, errlen, ERR_INVAL, "%s: expected host:port", addr);
		if (memchr(addr, ':', (size_t)(colon - addr)) != NULL)
			return err_set(err, errlen, ERR_INVAL,
				       "%s: write IPv6 addresses as [address]:port", addr);
		hend = colon;
	}
	if ((size_t)(hend - h) >= hostlen)
		return err_set(err, errlen, ERR_INVAL, "%s: host too long", addr);
	memcpy(host, h, (size_t)(hend - h));
	host[hend - h] = '\0';
	if (strcmp(host, "*") == 0)
		host[0] = '\0';
	if (api_parse_int(colon + 1, 0, 65535, &p) != 0)
		return err_set(err, errlen, ERR_INVAL, "%s: port must be 0..65535", addr);
	snprintf(port, portlen, "%d", (int)p);
	return 0;
}

static int
api_listen_socket(const char *addr, int *fdp, int *v6, char *err, size_t errlen)
{
	struct addrinfo hints, *res = NULL, *ai;
	char host[256], port[8];
	int fd = -1, one = 1, rc, saved = 0;

	if ((rc = api_split_listen(addr, host, sizeof(host), port, sizeof(port), err, errlen)) != 0)
		return rc;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if ((rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res)) != 0)
		return err_set(err, errlen, ERR_INVAL, "api listen %s: %s", addr, gai_strerror(rc));
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			saved = errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
		    listen(fd, API_LISTEN_BACKLOG) == 0) {
			*v6 = ai->ai_family == AF_INET6;
			break;
		}
		saved = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return err_set(err, errlen, ERR_IO, "api listen %s: %s", addr, strerror(saved));
	*fdp = fd;
	return 0;
}

/* Raises the soft limit on open files to fit conns connections and a reserve; returns how
 * many connections fit when it cannot. The limit is the process's: raising it is harmless
 * here, nothing in stoked uses select(). */
static unsigned
api_fit_descriptors(unsigned conns)
{
	struct rlimit rl, want;
	rlim_t need = (rlim_t)conns + API_FD_RESERVE;
	unsigned fit;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur >= need)
		return conns;
	want = rl;
	want.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &want) == 0)
		rl = want;
	if (rl.rlim_cur >= need)
		return conns;
	fit = rl.rlim_cur > 2 * API_FD_RESERVE ? (unsigned)(rl.rlim_cur - API_FD_RESERVE)
					       : (unsigned)(rl.rlim_cur / 2);
	log_warnx("api: %u connections need %llu open files, the limit is %llu: at most %u "
		  "connections",
		  conns, (unsigned long long)need, (unsigned long long)rl.rlim_cur, fit);
	return fit;
}

int
api_start(const struct api_opts *opts, struct api **out, char *err, size_t errlen)
{
	const union MHD_DaemonInfo *di;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct api *a;
	unsigned flags, max_conns, per_ip, threads, timeout;
	int fd = -1, v6 = 0, rc;

	*out = NULL;
	if ((a = calloc(1, sizeof(*a))) == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	a->body_max = opts->body_max ? opts->body_max : API_BODY_MAX_DEFAULT;
	a->streams_per_token =
	    opts->streams_per_token ? opts->streams_per_token : API_STREAMS_PER_TOKEN_DEFAULT;
	max_conns = api_fit_descriptors(opts->max_conns ? opts->max_conns : API_MAX_CONNS_DEFAULT);
	per_ip = opts->per_ip_conns == 0	       ? API_PER_IP_DEFAULT
		 : opts->per_ip_conns == API_UNLIMITED ? 0 /* microhttpd's "no limit" */
						       : opts->per_ip_conns;
	threads = opts->threads ? opts->threads : API_THREADS_DEFAULT;
	timeout = opts->read_timeout_s ? opts->read_timeout_s : API_READ_TIMEOUT_DEFAULT_S;
	atomic_init(&a->stopping, 0);
	pthread_mutex_init(&a->mtx, NULL);
	pthread_mutex_init(&a->log_mtx, NULL);
	pthread_mutex_init(&a->conns_mtx, NULL);
	a->waits.next = a->waits.prev = &a->waits;
	a->conns.next = a->conns.prev = &a->conns;
	if ((rc = api_listen_socket(opts->listen, &fd, &v6, err, errlen)) != 0)
		goto fail;
	/* A pool of threads, each polling its share of the connections with epoll: a
	 * connection holds a thread only while a handler runs; long-polls and streams with
	 * nothing to send are suspended (api_wait_park) and resumed by the waker. */
	flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
	if (v6)
		flags |= MHD_USE_IPv6;
	/* The logger first, so that microhttpd sends every message to it. */
	a->mhd = MHD_start_daemon(
	    flags, 0, NULL, NULL, api_access_cb, a, MHD_OPTION_EXTERNAL_LOGGER, api_log_cb, a,
	    MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd, MHD_OPTION_THREAD_POOL_SIZE, threads,
	    MHD_OPTION_CONNECTION_LIMIT, max_conns, MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip,
	    MHD_OPTION_CONNECTION_TIMEOUT, timeout, MHD_OPTION_NOTIFY_COMPLETED, api_completed_cb,
	    a, MHD_OPTION_NOTIFY_CONNECTION, api_conn_cb, a, MHD_OPTION_UNESCAPE_CALLBACK,
	    api_unescape_cb, a, MHD_OPTION_END);
	if (a->mhd == NULL) {
		/* microhttpd may have closed fd already; leaking it beats closing twice. */
		rc = err_set(err, errlen, ERR_IO, "api listen %s: cannot start the HTTP server",
			     opts->listen);
		goto fail;
	}
	if (pthread_create(&a->waker, NULL, api_waker_main, a) != 0) {
		MHD_stop_daemon(a->mhd);
		rc = err_set(err, errlen, ERR_IO, "api: cannot start the waker thread");
		goto fail;
	}
	a->waker_started = 1;
	di = MHD_get_daemon_info(a->mhd, MHD_DAEMON_INFO_BIND_PORT);
	a->port = di ? di->port : 0;
	if (a->port == 0 && getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
		a->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
							 : ((struct sockaddr_in *)&ss)->sin_port);
	log_info("api: listening on %s (port %u; %u threads, at most %u connections, %u per "
		 "address, read deadline %u s)",
		 opts->listen, a->port, threads, max_conns, per_ip, timeout);
	*out = a;
	return 0;
fail:
	pthread_mutex_destroy(&a->mtx);
	pthread_mutex_destroy(&a->log_mtx);
	pthread_mutex_destroy(&a->conns_mtx);
	free(a);
	return rc;
}

unsigned
api_port(const struct api *a)
{
	return a ? a->port : 0;
}

void
api_stop(struct api *a)
{
	if (a == NULL)
		return;
	atomic_store(&a->stopping, 1);
	events_notify();
	if (a->waker_started)
		pthread_join(a->waker, NULL);
	/* microhttpd must not stop with connections suspended: resume them all; streams see
	 * `stopping` and end, long-polls answer 503. Nothing parks after `stopping`. */
	pthread_mutex_lock(&a->mtx);
	while (a->waits.next != &a->waits)
		api_wait_resume(a->waits.next);
	pthread_mutex_unlock(&a->mtx);
	MHD_stop_daemon(a->mhd);
	log_info("api: stopped");
	pthread_mutex_destroy(&a->mtx);
	pthread_mutex_destroy(&a->log_mtx);
	pthread_mutex_destroy(&a->conns_mtx);
	free(a->streams);
	free(a);
}
