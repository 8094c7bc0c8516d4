/*
 * stoked_config.c: the table of stoked's configuration keys, their defaults and
 * checks. The README's configuration reference is written from this table.
 */
#include "stoked_config.h"

#include <stddef.h>

#include "api.h"
#include <string.h>

#include "err.h"
#include "log.h"
#include "names.h"

static int
stoked_config_level(const char *v, char *err, size_t errlen)
{
	if (log_level_parse(v) < 0)
		return err_set(err, errlen, ERR_INVAL, "must be debug, info, warn or error");
	return 0;
}

static int
stoked_config_dns(const char *v, char *err, size_t errlen)
{
	return names_domain(v, 0, err, errlen) == 0 || names_server(v, err, errlen) == 0
		   ? 0
		   : err_set(err, errlen, ERR_INVAL, "must be a DNS name");
}

#define OPT(f) offsetof(struct stoked_config, f)

const struct config_opt stoked_config_opts[] = {
    {"data_dir", CONFIG_STRING, OPT(data_dir), "./var", 0, 0, NULL,
     "folder for the database, the sealing key and the CA"},
    {"api_listen", CONFIG_HOSTPORT, OPT(api_listen), "127.0.0.1:8080", 0, 0, NULL,
     "address of the REST API and webhooks (port 0: any free port)"},
    {"agent_listen", CONFIG_HOSTPORT, OPT(agent_listen), "127.0.0.1:8443", 0, 0, NULL,
     "address agents dial (mutual TLS)"},
    {"log_level", CONFIG_STRING, OPT(log_level), "info", 0, 0, stoked_config_level,
     "debug, info, warn or error"},
    {"workers", CONFIG_INT, OPT(workers), "4", 1, 64, NULL, "job worker threads"},
    {"job_lease", CONFIG_DURATION, OPT(job_lease), "30s", 1000, 3600000, NULL,
     "how long a job's lease lasts without a heartbeat (a crashed controller's jobs resume "
     "after it)"},
    {"command_output_max", CONFIG_INT, OPT(command_output_max), "67108864", 65536, 4294967296L,
     NULL,
     "output bytes kept per command (deploy logs, fleet runs): the rest is cut, with a marker "
     "line"},
    {"job_max_resumes", CONFIG_INT, OPT(job_max_resumes), "10", 1, 1000, NULL,
     "times a job may be resumed after the controller stopped under it before it fails (a "
     "job that kills the controller each time); resumes are not attempts"},
    {"api_body_max", CONFIG_INT, OPT(body_max), "1048576", 1024, 67108864, NULL,
     "largest request body the API accepts, in bytes"},
    {"api_connections", CONFIG_INT, OPT(api_conns), "4096", 16, 65536, NULL,
     "most simultaneous API connections (the open-file limit is raised to fit)"},
    {"api_connections_per_address", CONFIG_INT, OPT(api_per_address), "64", 0, 65536, NULL,
     "most simultaneous API connections from one client address (0: no limit; behind a "
     "reverse proxy on this host every client has the proxy's address)"},
    {"api_threads", CONFIG_INT, OPT(api_threads), "8", 1, 256, NULL,
     "threads serving API connections (idle connections and event streams hold none)"},
    {"api_read_timeout", CONFIG_DURATION, OPT(api_read_timeout), "10s", 1000, 3600000, NULL,
     "an API connection silent this long (no request, a stalled header or body) is closed"},
    {"api_streams_per_token", CONFIG_INT, OPT(api_streams_per_token), "32", 1, 65536, NULL,
     "event streams (GET /api/v1/events) one API token may hold open"},
    {"agent_server_name", CONFIG_STRING, OPT(agent_server_name), "stoke-controller", 0, 0,
     stoked_config_dns, "DNS name in the controller's agent certificate, verified by agents"},
    {"agent_park", CONFIG_DURATION, OPT(agent_park), "25s", 100, 300000, NULL,
     "how long an idle agent's poll is held before a no-op answer"},
    {"agent_public_url", CONFIG_STRING, OPT(agent_public_url), "", 0, 0, NULL,
     "tls+tcp://HOST:PORT that new servers' agents dial (empty: the agent listener)"},
    {"agent_binary", CONFIG_STRING, OPT(agent_binary), STOKE_DEFAULT_AGENT, 0, 0, NULL,
     "the stoke-agent binary installed on new servers"},
    {"provision_scripts", CONFIG_STRING, OPT(provision_scripts), STOKE_DEFAULT_SCRIPTS, 0, 0, NULL,
     "folder holding provision.sh and install-agent.sh"},
    {"agent_unit", CONFIG_STRING, OPT(agent_unit), STOKE_DEFAULT_UNIT, 0, 0, NULL,
     "systemd unit installed with the agent"},
    {"digitalocean_url", CONFIG_STRING, OPT(digitalocean_url), "https://api.digitalocean.com", 0, 0,
     NULL, "DigitalOcean API base URL (the stand-in cloud's in tests and the demo)"},
    {"digitalocean_token", CONFIG_STRING, OPT(digitalocean_token), "", 0, 0, NULL,
     "DigitalOcean API token; imported sealed into the database at start"},
    {"hetzner_url", CONFIG_STRING, OPT(hetzner_url), "https://api.hetzner.cloud", 0, 0, NULL,
     "Hetzner Cloud API base URL"},
    {"hetzner_token", CONFIG_STRING, OPT(hetzner_token), "", 0, 0, NULL,
     "Hetzner Cloud API token; imported sealed into the database at start"},
};

const size_t stoked_config_nopts = sizeof(stoked_config_opts) / sizeof(stoked_config_opts[0]);

void
stoked_config_api(const struct stoked_config *cfg, struct api_opts *o)
{
	o->listen = cfg->api_listen;
	o->body_max = (size_t)cfg->body_max;
	o->max_conns = (unsigned)cfg->api_conns;
	o->per_ip_conns =
	    cfg->api_per_address == 0 ? API_UNLIMITED : (unsigned)cfg->api_per_address;
	o->threads = (unsigned)cfg->api_threads;
	o->read_timeout_s = (unsigned)((cfg->api_read_timeout + 999) / 1000);
	o->streams_per_token = (unsigned)cfg->api_streams_per_token;
}
