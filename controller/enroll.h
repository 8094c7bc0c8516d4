/*
 * enroll.h: enrolling an agent: a server record (made if needed), a fresh agent id and
 * secret (only the hash is stored), a client certificate from the controller's CA, and
 * a bundle folder the agent starts from (agent.conf, ca.crt, agent.crt, agent.key,
 * secret). Used by `stoked agent enroll` and by SSH bootstrap.
 */
#ifndef STOKE_ENROLL_H
#define STOKE_ENROLL_H

#include <stddef.h>
#include <stdint.h>

struct store;

struct enroll_opts {
	const char *data_dir;
	const char *server_name; /* the DNS name in the controller certificate */
	const char *controller;	 /* "tls+tcp://HOST:PORT" the agent dials */
	const char *out_dir;	 /* bundle folder (created, mode 0700) */
	const char *state_dir;	 /* agent's state dir; NULL = OUT_DIR/state */
	const char *extra_conf;	 /* lines appended to agent.conf (managed paths), may be NULL */
};

/* Enrolls (or re-enrolls, replacing id and secret) server `name`. */
int enroll_agent(struct store *s, const char *name, const struct enroll_opts *o, int64_t *server_id,
		 char *err, size_t errlen);
/* Revokes the agent of server `name` (by name or id): effective on its next message. */
int enroll_revoke(struct store *s, const char *name, char *err, size_t errlen);

#endif
