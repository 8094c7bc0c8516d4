/*
 * agent_config.c: the table of stoke-agent's configuration keys, their defaults and
 * checks. It reads no file itself; agent_main.c passes this table to config.c.
 */
#include "agent_config.h"

#include <stddef.h>
#include <string.h>

#include "err.h"
#include "log.h"

static int
agent_config_level(const char *v, char *err, size_t errlen)
{
	if (log_level_parse(v) < 0)
		return err_set(err, errlen, ERR_INVAL, "must be debug, info, warn or error");
	return 0;
}

/* Characters allowed in a path nginx reads inside a directive (-g "pid ...;"): nothing
 * that could end a directive or a word. */
static int
agent_config_pathchar(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '/' || c == '.' || c == '_' || c == '-' || c == '+' || c == '@' || c == '%';
}

/* An absolute path of len bytes; with strict, of agent_config_pathchar only, else of
 * anything but control characters (it is only ever an argv element or a file name). */
static int
agent_config_path_ok(const char *v, size_t len, int strict, char *err, size_t errlen)
{
	if (len == 0 || v[0] != '/')
		return err_set(err, errlen, ERR_INVAL, "must be an absolute path");
	if (len > 1024)
		return err_set(err, errlen, ERR_INVAL, "is too long");
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
			return err_set(err, errlen, ERR_INVAL,
				       "must not contain control characters");
		if (strict && !agent_config_pathchar(v[i]))
			return err_set(err, errlen, ERR_INVAL,
				       "may contain only A-Z a-z 0-9 / . _ - + @ %%");
	}
	return 0;
}

/* An absolute path. */
static int
agent_config_path(const char *v, char *err, size_t errlen)
{
	return agent_config_path_ok(v, strlen(v), 0, err, errlen);
}

/* An absolute path, or "" for the program's default. */
static int
agent_config_path_or_empty(const char *v, char *err, size_t errlen)
{
	if (*v == '\0')
		return 0;
	return agent_config_path(v, err, errlen);
}

/* An absolute path of plain characters, or "" for the program's default. */
static int
agent_config_strict_path_or_empty(const char *v, char *err, size_t errlen)
{
	if (*v == '\0')
		return 0;
	return agent_config_path_ok(v, strlen(v), 1, err, errlen);
}

/* A folder: absolute, or relative to where the agent starts (as the other file keys). */
static int
agent_config_dir(const char *v, char *err, size_t errlen)
{
	if (*v == '\0')
		return err_set(err, errlen, ERR_INVAL, "must not be empty");
	for (const char *p = v; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return err_set(err, errlen, ERR_INVAL,
				       "must not contain control characters");
	return 0;
}

/* ':'-separated absolute paths. */
static int
agent_config_path_list(const char *v, char *err, size_t errlen)
{
	const char *p = v, *colon;
	int rc;

	for (;;) {
		colon = strchr(p, ':');
		rc = agent_config_path_ok(p, colon != NULL ? (size_t)(colon - p) : strlen(p), 0,
					  err, errlen);
		if (rc != 0)
			return rc;
		if (colon == NULL)
			return 0;
		p = colon + 1;
	}
}

/* ':'-separated systemd unit names. */
static int
agent_config_services(const char *v, char *err, size_t errlen)
{
	const char *p = v;
	size_t n = 0;

	for (;; p++) {
		if (*p == ':' || *p == '\0') {
			if (n == 0 && *v != '\0')
				return err_set(err, errlen, ERR_INVAL, "has an empty name");
			if (*p == '\0')
				return 0;
			n = 0;
			continue;
		}
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '@' || *p == '.' || *p == '_' || *p == '-'))
			return err_set(err, errlen, ERR_INVAL,
				       "names may contain only A-Z a-z 0-9 @ . _ -");
		if (n == 0 && *p == '-')
			return err_set(err, errlen, ERR_INVAL, "names must not start with '-'");
		n++;
	}
}

/* The template of the authorized_keys path: starts with '/' or "%h"; %h, %u and %% are
 * the only escapes. */
static int
agent_config_ak_template(const char *v, char *err, size_t errlen)
{
	if (v[0] != '/' && strncmp(v, "%h", 2) != 0)
		return err_set(err, errlen, ERR_INVAL, "must start with '/' or \"%%h\"");
	if (strlen(v) > 1024)
		return err_set(err, errlen, ERR_INVAL, "is too long");
	for (const char *p = v; *p != '\0'; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return err_set(err, errlen, ERR_INVAL,
				       "must not contain control characters");
		if (*p == '%') {
			if (p[1] != 'h' && p[1] != 'u' && p[1] != '%')
				return err_set(
				    err, errlen, ERR_INVAL,
				    "only %%h (home), %%u (user) and %%%% may follow '%%'");
			p++;
		}
	}
	return 0;
}

/* nginx -c FILE: absolute or relative to the prefix, or "" for the default. */
static int
agent_config_nginx_conf(const char *v, char *err, size_t errlen)
{
	if (v[0] == '-')
		return err_set(err, errlen, ERR_INVAL, "must not start with '-'");
	if (strlen(v) > 1024)
		return err_set(err, errlen, ERR_INVAL, "is too long");
	for (const char *p = v; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return err_set(err, errlen, ERR_INVAL,
				       "must not contain control characters");
	return 0;
}

static int
agent_config_user(const char *v, char *err, size_t errlen)
{
	const char *p = v;

	if (*p == '\0' || !((*p >= 'a' && *p <= 'z') || *p == '_'))
		return err_set(err, errlen, ERR_INVAL, "must be a user name");
	for (; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' ||
		      *p == '-'))
			return err_set(err, errlen, ERR_INVAL, "must be a user name");
	return 0;
}

#define OPT(f) offsetof(struct agent_config, f)

const struct config_opt agent_config_opts[] = {
    /* channel */
    {"controller", CONFIG_STRING, OPT(controller), NULL, 0, 0, NULL,
     "controller address to dial (tls+tcp://host:port)"},
    {"server_name", CONFIG_STRING, OPT(server_name), "stoke-controller", 0, 0, NULL,
     "DNS name in the controller's certificate, always verified"},
    {"ca_file", CONFIG_STRING, OPT(ca_file), NULL, 0, 0, NULL, "controller CA certificate (PEM)"},
    {"cert_file", CONFIG_STRING, OPT(cert_file), NULL, 0, 0, NULL,
     "this agent's client certificate (PEM)"},
    {"key_file", CONFIG_STRING, OPT(key_file), NULL, 0, 0, NULL,
     "this agent's private key (PEM, mode 0600)"},
    {"agent_id", CONFIG_STRING, OPT(agent_id), NULL, 0, 0, NULL, "this agent's id"},
    {"secret_file", CONFIG_STRING, OPT(secret_file), NULL, 0, 0, NULL,
     "file holding the per-agent secret (mode 0600)"},
    {"state_dir", CONFIG_STRING, OPT(state_dir), "/var/lib/stoke-agent", 0, 0, agent_config_dir,
     "folder for the de-duplication journal and other state"},
    {"log_level", CONFIG_STRING, OPT(log_level), "info", 0, 0, agent_config_level,
     "debug, info, warn or error"},
    /* commands */
    {"allow_root", CONFIG_BOOL, OPT(allow_root), "no", 0, 0, NULL,
     "may exec, script, git_checkout and authorized_keys act as root, and write_file make "
     "root's files"},
    {"allow_setuid", CONFIG_BOOL, OPT(allow_setuid), "no", 0, 0, NULL,
     "with allow_root: may write_file make set-user-ID or set-group-ID files"},
    {"default_user", CONFIG_STRING, OPT(default_user), "deploy", 0, 0, agent_config_user,
     "user for exec, script and git_checkout when the command names none"},
    {"write_roots", CONFIG_STRING, OPT(write_roots), "/var/www:/home", 0, 0, agent_config_path_list,
     "':'-separated folders write_file may write under (never nginx's configuration)"},
    {"nginx_bin", CONFIG_STRING, OPT(nginx_bin), "/usr/sbin/nginx", 0, 0, agent_config_path,
     "the nginx program"},
    {"nginx_prefix", CONFIG_STRING, OPT(nginx_prefix), "", 0, 0, agent_config_path_or_empty,
     "nginx -p PREFIX (empty: nginx's default)"},
    {"nginx_conf", CONFIG_STRING, OPT(nginx_conf), "", 0, 0, agent_config_nginx_conf,
     "nginx -c FILE (empty: nginx's default)"},
    {"nginx_pid", CONFIG_STRING, OPT(nginx_pid), "", 0, 0, agent_config_strict_path_or_empty,
     "pid file given to nginx with -g \"pid FILE;\" (empty: as nginx.conf says)"},
    {"nginx_listen_port", CONFIG_INT, OPT(nginx_listen_port), "80", 1, 65535, NULL,
     "port a site listens on when its command gives none"},
    {"nginx_sites_available", CONFIG_STRING, OPT(nginx_sites_available),
     "/etc/nginx/sites-available", 0, 0, agent_config_path, "folder of site server blocks"},
    {"nginx_sites_enabled", CONFIG_STRING, OPT(nginx_sites_enabled), "/etc/nginx/sites-enabled", 0,
     0, agent_config_path, "folder of links to enabled sites (included by nginx.conf)"},
    {"authorized_keys_file", CONFIG_STRING, OPT(authorized_keys_file), "%h/.ssh/authorized_keys", 0,
     0, agent_config_ak_template,
     "a user's authorized_keys file; %h is the home folder, %u the user name"},
    {"git_bin", CONFIG_STRING, OPT(git_bin), "/usr/bin/git", 0, 0, agent_config_path,
     "the git program"},
    {"services", CONFIG_STRING, OPT(services), "nginx:php8.2-fpm", 0, 0, agent_config_services,
     "':'-separated services the service command may control"},
    {"systemctl_bin", CONFIG_STRING, OPT(systemctl_bin), "/usr/bin/systemctl", 0, 0,
     agent_config_path, "the systemctl program"},
    {"exec_timeout", CONFIG_DURATION, OPT(exec_timeout), "1h", 1000, 7L * 24 * 3600000, NULL,
     "default time limit of exec and script commands"},
    {"max_output", CONFIG_INT, OPT(max_output), "67108864", 4096, 1073741824L, NULL,
     "bytes of output kept per command before the rest is cut"},
    {"pin_cpu", CONFIG_BOOL, OPT(pin_cpu), "yes", 0, 0, NULL,
     "run the agent's own threads on one CPU (fewer cross-CPU wake-ups; the programs it "
     "starts may use every CPU)"},
};

const size_t agent_config_nopts = sizeof(agent_config_opts) / sizeof(agent_config_opts[0]);
