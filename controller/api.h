/*
 * api.h: the REST API and webhook receiver over libmicrohttpd (api.c is the only
 * file that includes microhttpd.h). One thread per connection; each handler uses
 * that thread's store connection. Routes live in one table in api.c; each resource
 * family has its own file (api_servers.c, api_jobs.c, api_events.c ...).
 */
#ifndef STOKE_API_H
#define STOKE_API_H

#include <stddef.h>

struct api;

struct api_opts {
	const char *listen; /* "127.0.0.1:8080"; port 0 picks a free one */
	size_t body_max;    /* request body limit; 0 = 1 MiB */
	unsigned max_conns; /* 0 = 256 */
};

int api_start(const struct api_opts *opts, struct api **out, char *err, size_t errlen);
/* The port actually bound (useful with port 0). */
unsigned api_port(const struct api *a);
void api_stop(struct api *a);

#endif
