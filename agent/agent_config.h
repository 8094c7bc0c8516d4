/*
 * agent_config.h: stoke-agent's configuration (one struct, one option table in
 * agent_config.c, read from `-c FILE`). Managed paths default to the real system
 * paths so a test can point one agent at a private root.
 */
#ifndef STOKE_AGENT_CONFIG_H
#define STOKE_AGENT_CONFIG_H

#include <stddef.h>

#include "config.h"

struct agent_config {
	/* channel */
	char *controller;  /* "tls+tcp://127.0.0.1:8443" */
	char *server_name; /* DNS name in the controller's certificate */
	char *ca_file;	   /* controller CA certificate (PEM) */
	char *cert_file;   /* this agent's client certificate */
	char *key_file;	   /* its key (mode 0600) */
	char *agent_id;
	char *secret_file; /* file holding the per-agent secret (mode 0600) */
	char *state_dir;   /* de-duplication journal and other state */
	char *log_level;
	/* commands */
	int allow_root;	    /* may commands run as root */
	int allow_setuid;   /* with allow_root: may write_file make set-id files */
	char *default_user; /* user for exec/script when none given */
	char *write_roots;  /* ':'-separated folders write_file may write under */
	char *nginx_bin;    /* "/usr/sbin/nginx" */
	char *nginx_prefix; /* -p for nginx (empty = nginx's default) */
	char *nginx_conf;   /* -c for nginx (empty = nginx's default) */
	char *nginx_pid;    /* pid file given to nginx with -g (empty = default) */
	char *nginx_sites_available;
	char *nginx_sites_enabled;
	long nginx_listen_port;	    /* port of sites whose command gives none (80) */
	char *authorized_keys_file; /* "%h/.ssh/authorized_keys"; %h home, %u user */
	char *git_bin;
	char *services; /* ':'-separated allow-list for the service command */
	char *systemctl_bin;
	long exec_timeout; /* ms, default for exec/script */
	long max_output;   /* bytes of output per command before it is cut */
	int pin_cpu;	   /* the agent's own threads on one CPU (its commands on all) */
};

extern const struct config_opt agent_config_opts[];
extern const size_t agent_config_nopts;

#endif
