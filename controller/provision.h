/*
 * provision.h: the server lifecycle jobs: server.provision (provider key, VM by intent
 * id, wait until active, SSH with a pinned host key, provision-scripts/, agent install,
 * agent hello) and server.delete (from any state). Provider settings come from stoked's
 * configuration through provision_configure().
 */
#ifndef STOKE_PROVISION_H
#define STOKE_PROVISION_H

#include <stddef.h>
#include <stdint.h>

struct store;

struct provision_config {
	const char *data_dir;
	const char *server_name;  /* agent certificate DNS name */
	const char *agent_url;	  /* tls+tcp://HOST:PORT that new servers' agents dial */
	const char *agent_binary; /* stoke-agent to upload */
	const char *scripts_dir;  /* provision-scripts/ */
	const char *unit_file;	  /* packaging/stoke-agent.service */
	const char *do_url, *do_token;
	const char *hz_url, *hz_token;
	long ssh_wait_ms, active_wait_ms, agent_wait_ms;
};

/* Keeps a copy of c (strings duplicated); call before jobs start. */
int provision_configure(const struct provision_config *c, char *err, size_t errlen);
void provision_register(void);
/* 0 when servers can be made at provider now (custom always): its URL configured and a
 * token imported for that URL. Else ERR_INVAL (or ERR_BUSY before start-up ends) and why. */
int provision_provider_ready(struct store *s, const char *provider, char *err, size_t errlen);

/* Makes the server's SSH key pair unless it has one (private half sealed). Custom servers
 * get theirs at once, so the API can show the public half to install. */
int provision_keypair(struct store *s, int64_t id, char *err, size_t errlen);
/* Queues server.provision for server id (row already written, state pending). */
int provision_start(struct store *s, int64_t id, const char *actor, int64_t *job_id, char *err,
		    size_t errlen);
/* Moves the server to deleting, cancels its running jobs, queues server.delete. */
int provision_delete(struct store *s, int64_t id, const char *actor, int64_t *job_id, char *err,
		     size_t errlen);

#endif
