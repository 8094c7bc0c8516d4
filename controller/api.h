/*
 * api.h: the REST API and webhook receiver over libmicrohttpd (api.c is the only
 * file that includes microhttpd.h). A pool of threads serves all connections; each
 * handler uses its thread's store connection and must not wait on anything slow
 * (long-polls and streams park instead: api_json.h). Routes live in one table in api.c; each
 * resource family has its own file (api_servers.c, api_jobs.c, api_events.c ...).
 */
#ifndef STOKE_API_H
#define STOKE_API_H

#include <stddef.h>

struct api;

#define API_UNLIMITED (~0u)

/* Zero fields take the defaults. */
struct api_opts {
	const char *listen;	    /* "127.0.0.1:8080"; port 0 picks a free one */
	size_t body_max;	    /* request body limit; 0 = 1 MiB */
	unsigned max_conns;	    /* connections in all; 0 = 4096 (the open-file limit is raised
				       to fit, or the number lowered to fit it) */
	unsigned per_ip_conns;	    /* connections from one client address; 0 = 64,
				       API_UNLIMITED = no limit */
	unsigned threads;	    /* threads serving connections; 0 = 8 */
	unsigned read_timeout_s;    /* a connection silent this long (no request, a stalled
				       header or body) is closed; 0 = 10. Headers must also
				       arrive within 30 s, a body within 60 s. */
	unsigned streams_per_token; /* event streams one token may hold open; 0 = 32 */
};

int api_start(const struct api_opts *opts, struct api **out, char *err, size_t errlen);
/* The port actually bound (useful with port 0). */
unsigned api_port(const struct api *a);
void api_stop(struct api *a);

#endif
