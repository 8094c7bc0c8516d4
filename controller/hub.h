/*
 * hub.h: the controller's end of the agent channel (hub.c is the only file that
 * includes nng). One tls+tcp listener with mutual TLS; a REP socket with a growing pool
 * of contexts; each agent's poll is parked until a command is due (or ~25 s pass);
 * output chunks and results are stored and acknowledged at once. All database work
 * happens on the hub's own thread.
 */
#ifndef STOKE_HUB_H
#define STOKE_HUB_H

#include <stddef.h>
#include <stdint.h>

struct hub;

struct hub_opts {
	const char *listen;	 /* "127.0.0.1:8443"; port 0 picks a free one */
	const char *data_dir;	 /* for the CA */
	const char *server_name; /* DNS name in the controller certificate */
	long park_ms;		 /* how long a poll is parked; 0 = 25000 */
	long offline_ms;	 /* silence before an agent is offline; 0 = 60000 */
	long long output_max;	 /* output bytes kept per command, then a marker; 0 = 64 MiB */
};

int hub_start(const struct hub_opts *opts, struct hub **out, char *err, size_t errlen);
unsigned hub_port(const struct hub *h);
void hub_stop(struct hub *h);
/* A command was queued (by any thread): the hub dispatches it to a parked poll. */
void hub_notify(void);

#endif
