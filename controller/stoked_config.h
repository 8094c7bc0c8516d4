/*
 * stoked_config.h: stoked's configuration: one struct and one table of options
 * (name, type, default, bounds, help). Read from `-c FILE`, then overridden by flags.
 */
#ifndef STOKE_STOKED_CONFIG_H
#define STOKE_STOKED_CONFIG_H

#include <stddef.h>

#include "config.h"

struct stoked_config {
	char *data_dir;
	char *api_listen;
	char *agent_listen;
	char *log_level;
	long workers;
	long job_lease; /* ms */
	long job_max_resumes;
	long command_output_max;
	long body_max; /* bytes */
	long api_conns;
	long api_per_address; /* 0 = no limit */
	long api_threads;
	long api_read_timeout; /* ms */
	long api_streams_per_token;
	char *agent_server_name; /* DNS name in the controller's agent certificate */
	long agent_park;	 /* ms a poll is parked before a no-op */
	char *agent_public_url;	 /* what new servers' agents dial; "" = the agent listener */
	char *agent_binary;	 /* stoke-agent uploaded to new servers */
	char *provision_scripts; /* folder of provision.sh and install-agent.sh */
	char *agent_unit;	 /* systemd unit installed with the agent */
	char *digitalocean_url, *digitalocean_token;
	char *hetzner_url, *hetzner_token;
};

extern const struct config_opt stoked_config_opts[];
extern const size_t stoked_config_nopts;

struct api_opts;
/* Fills the API's options from the configuration (api_listen, api_body_max,
 * api_connections, api_connections_per_address, api_threads, api_read_timeout,
 * api_streams_per_token). */
void stoked_config_api(const struct stoked_config *cfg, struct api_opts *o);

#endif
