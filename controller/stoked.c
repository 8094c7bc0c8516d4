/*
 * stoked.c: the controller daemon's main: command line and config, data dir,
 * store, job engine and API start-up, signals and orderly shutdown; and the
 * `stoked token create` subcommand. Does no work itself.
 */
#include "stoked.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api.h"
#include "enroll.h"
#include "hub.h"
#include "secrets.h"
#include "provision.h"
#include "sites.h"
#include "keys.h"
#include "batches.h"
#include "ssh.h"
#include "atomicfile.h"
#include "crypto.h"
#include "err.h"
#include "jobs.h"
#include "log.h"
#include "names.h"
#include "stoked_config.h"
#include "store.h"
#include "tokens.h"

enum {
	OPT_DATA_DIR = 256,
	OPT_API_LISTEN,
	OPT_AGENT_LISTEN,
	OPT_LOG_LEVEL,
	OPT_NAME,
	OPT_OUT,
	OPT_CONTROLLER,
	OPT_CONF_EXTRA,
};

static const struct option stoked_long[] = {
    {"data-dir", required_argument, NULL, OPT_DATA_DIR},
    {"api-listen", required_argument, NULL, OPT_API_LISTEN},
    {"agent-listen", required_argument, NULL, OPT_AGENT_LISTEN},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"name", required_argument, NULL, OPT_NAME},
    {"out", required_argument, NULL, OPT_OUT},
    {"controller", required_argument, NULL, OPT_CONTROLLER},
    {"conf-extra", required_argument, NULL, OPT_CONF_EXTRA},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

static void
stoked_usage(FILE *f)
{
	fprintf(f, "usage: stoked [-n] [-c FILE] [--data-dir DIR] [--api-listen HOST:PORT]\n"
		   "              [--agent-listen HOST:PORT] [--log-level LEVEL]\n"
		   "       stoked token create [-c FILE] [--data-dir DIR] [--name NAME]\n"
		   "       stoked agent enroll NAME --out DIR [-c FILE] [--data-dir DIR]\n"
		   "              [--controller tls+tcp://HOST:PORT] [--conf-extra FILE]\n"
		   "       stoked agent revoke NAME [-c FILE] [--data-dir DIR]\n");
}

/* Options only some subcommands take. */
struct stoked_extra {
	char *name, *out, *controller, *conf_extra;
	const char *positional;
};

/* Parses options shared by the daemon and its subcommands into cfg. */
static int
stoked_parse(int argc, char **argv, struct stoked_config *cfg, int *check, struct stoked_extra *x)
{
	const char *file = NULL;
	struct stoked_override {
		const char *key, *value, *flag;
	} over[8];
	char err[512];
	size_t nover = 0, i;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "c:nhV", stoked_long, NULL)) != -1) {
		switch (c) {
		case 'c':
			file = optarg;
			break;
		case 'n':
			if (check == NULL)
				goto usage;
			*check = 1;
			break;
		case OPT_DATA_DIR:
			over[nover++] = (struct stoked_override){"data_dir", optarg, "--data-dir"};
			break;
		case OPT_API_LISTEN:
			over[nover++] =
			    (struct stoked_override){"api_listen", optarg, "--api-listen"};
			break;
		case OPT_AGENT_LISTEN:
			over[nover++] =
			    (struct stoked_override){"agent_listen", optarg, "--agent-listen"};
			break;
		case OPT_LOG_LEVEL:
			over[nover++] =
			    (struct stoked_override){"log_level", optarg, "--log-level"};
			break;
		case OPT_NAME:
		case OPT_OUT:
		case OPT_CONTROLLER:
		case OPT_CONF_EXTRA:
			if (x == NULL)
				goto usage;
			*(c == OPT_NAME		? &x->name
			  : c == OPT_OUT	? &x->out
			  : c == OPT_CONTROLLER ? &x->controller
						: &x->conf_extra) = optarg;
			break;
		case 'V':
			printf("stoked %s\n", STOKE_VERSION);
			exit(0);
		case 'h':
			stoked_usage(stdout);
			exit(0);
		default:
			goto usage;
		}
		if (nover == sizeof(over) / sizeof(over[0]))
			goto usage;
	}
	if (x && optind + 1 == argc)
		x->positional = argv[optind++];
	if (optind != argc)
		goto usage;
	if (config_defaults(stoked_config_opts, stoked_config_nopts, cfg, err, sizeof(err)) != 0 ||
	    (file && config_parse_file(stoked_config_opts, stoked_config_nopts, cfg, file, err,
				       sizeof(err)) != 0)) {
		fprintf(stderr, "stoked: %s\n", err);
		return 1;
	}
	for (i = 0; i < nover; i++)
		if (config_set(stoked_config_opts, stoked_config_nopts, cfg, over[i].key,
			       over[i].value, over[i].flag, err, sizeof(err)) != 0) {
			fprintf(stderr, "stoked: %s\n", err);
			return 1;
		}
	return 0;
usage:
	stoked_usage(stderr);
	return 2;
}

/* Creates the data dir (0700) and opens the store in it, migrated. */
static int
stoked_data(const struct stoked_config *cfg, char *err, size_t errlen)
{
	char path[4096];
	int rc;

	if (mkdir(cfg->data_dir, 0700) == -1 && errno != EEXIST)
		return err_set(err, errlen, ERR_IO, "%s: %s", cfg->data_dir, strerror(errno));
	if ((rc = secrets_init(cfg->data_dir, err, errlen)) != 0)
		return rc;
	snprintf(path, sizeof(path), "%s/stoke.db", cfg->data_dir);
	return store_global_init(path, err, errlen);
}

int
stoked_open_store(int argc, char **argv, char **data_dir)
{
	struct stoked_config cfg = {0};
	char err[1024];
	int rc;

	if ((rc = stoked_parse(argc, argv, &cfg, NULL, NULL)) != 0)
		return rc;
	log_init("stoked", LOG_LEVEL_WARN);
	/* the stoked_open_store caller has no positional arguments */
	if (stoked_data(&cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "stoked: %s\n", err);
		config_free(stoked_config_opts, stoked_config_nopts, &cfg);
		return 1;
	}
	if (data_dir)
		*data_dir = strdup(cfg.data_dir);
	config_free(stoked_config_opts, stoked_config_nopts, &cfg);
	return 0;
}

static int
stoked_token(int argc, char **argv)
{
	struct stoked_config cfg = {0};
	struct stoked_extra x = {.name = "cli"};
	char err[1024], *tok = NULL, *name;
	int rc;

	if (argc < 2 || strcmp(argv[1], "create") != 0) {
		stoked_usage(stderr);
		return 2;
	}
	if ((rc = stoked_parse(argc - 1, argv + 1, &cfg, NULL, &x)) != 0)
		return rc;
	name = x.name;
	if (x.positional) {
		stoked_usage(stderr);
		config_free(stoked_config_opts, stoked_config_nopts, &cfg);
		return 2;
	}
	log_init("stoked", LOG_LEVEL_WARN);
	rc = 1;
	if (names_label(name, err, sizeof(err)) != 0) {
		fprintf(stderr, "stoked: --name: %s\n", err);
		goto out;
	}
	if (stoked_data(&cfg, err, sizeof(err)) != 0 ||
	    tokens_create(store_thread(), name, &tok, NULL, err, sizeof(err)) != 0) {
		fprintf(stderr, "stoked: %s\n", err);
		goto out;
	}
	printf("%s\n", tok);
	rc = 0;
out:
	free(tok);
	store_global_fini();
	config_free(stoked_config_opts, stoked_config_nopts, &cfg);
	return rc;
}

/* `stoked agent enroll NAME --out DIR` and `stoked agent revoke NAME`. */
static int
stoked_agent(int argc, char **argv)
{
	struct stoked_config cfg = {0};
	struct stoked_extra x = {0};
	struct enroll_opts eo = {0};
	char err[1024], url[512], path[4096], *extra = NULL, *known = NULL;
	size_t n;
	int rc, enroll;

	if (argc < 2 || (strcmp(argv[1], "enroll") != 0 && strcmp(argv[1], "revoke") != 0)) {
		stoked_usage(stderr);
		return 2;
	}
	enroll = strcmp(argv[1], "enroll") == 0;
	if ((rc = stoked_parse(argc - 1, argv + 1, &cfg, NULL, &x)) != 0)
		return rc;
	rc = 2;
	if (x.positional == NULL || (enroll && x.out == NULL)) {
		stoked_usage(stderr);
		goto out;
	}
	log_init("stoked", LOG_LEVEL_WARN);
	rc = 1;
	if (stoked_data(&cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "stoked: %s\n", err);
		goto out;
	}
	if (!enroll) {
		if (enroll_revoke(store_thread(), x.positional, err, sizeof(err)) != 0) {
			fprintf(stderr, "stoked: %s\n", err);
			goto out;
		}
		printf("agent of %s revoked\n", x.positional);
		rc = 0;
		goto out;
	}
	/* The address agents dial: given, or the one the running controller bound. */
	snprintf(path, sizeof(path), "%s/agent.url", cfg.data_dir);
	if (x.controller)
		snprintf(url, sizeof(url), "%s", x.controller);
	else if (atomicfile_read(path, 4096, &known, &n, err, sizeof(err)) == 0) {
		known[strcspn(known, "\r\n")] = '\0';
		snprintf(url, sizeof(url), "%s", known);
	} else
		snprintf(url, sizeof(url), "tls+tcp://%s", cfg.agent_listen);
	if (strncmp(url, "tls+tcp://", 10) != 0) {
		fprintf(stderr, "stoked: --controller must be tls+tcp://HOST:PORT\n");
		goto out;
	}
	if (x.conf_extra &&
	    atomicfile_read(x.conf_extra, 1 << 20, &extra, &n, err, sizeof(err)) != 0) {
		fprintf(stderr, "stoked: %s\n", err);
		goto out;
	}
	eo.data_dir = cfg.data_dir;
	eo.server_name = cfg.agent_server_name;
	eo.controller = url;
	eo.out_dir = x.out;
	eo.extra_conf = extra;
	if (enroll_agent(store_thread(), x.positional, &eo, NULL, err, sizeof(err)) != 0) {
		fprintf(stderr, "stoked: %s\n", err);
		goto out;
	}
	printf("enrolled %s; start the agent with: stoke-agent -c %s/agent.conf\n", x.positional,
	       x.out);
	rc = 0;
out:
	free(extra);
	free(known);
	store_global_fini();
	config_free(stoked_config_opts, stoked_config_nopts, &cfg);
	return rc;
}

/* Provider tokens given in the configuration are sealed into the database (and used from
 * there); the provisioning jobs get the rest of their settings. */
static int
stoked_provision(const struct stoked_config *cfg, unsigned agent_port, char *err, size_t errlen)
{
	struct provision_config pc = {0};
	struct store *s = store_thread();
	const char *names[] = {"digitalocean", "hetzner"};
	const char *tokens[] = {cfg->digitalocean_token, cfg->hetzner_token};
	const char *urls[] = {cfg->digitalocean_url, cfg->hetzner_url};
	char key[64], url[320], host[256], *sealed;
	int i, rc;

	for (i = 0; i < 2; i++) {
		if (tokens[i] == NULL || tokens[i][0] == '\0')
			continue;
		if (urls[i] == NULL || urls[i][0] == '\0')
			return err_set(err, errlen, ERR_INVAL,
				       "%s_token is set but %s_url is empty", names[i], names[i]);
		snprintf(key, sizeof(key), "token.%s", names[i]);
		if ((rc = secrets_seal(tokens[i], key, &sealed, err, errlen)) != 0)
			return rc;
		rc = store_exec(
		    s,
		    "INSERT INTO settings (key, value, sealed, updated_at) VALUES (?,?,1,?)"
		    " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
		    " sealed = 1, updated_at = excluded.updated_at",
		    "ssi", key, sealed, store_now_ms());
		free(sealed);
		/* The URL the token was given for: a token is never sent anywhere else. */
		if (rc == 0) {
			snprintf(key, sizeof(key), "url.%s", names[i]);
			rc = store_exec(
			    s,
			    "INSERT INTO settings (key, value, sealed, updated_at) VALUES (?,?,0,?)"
			    " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
			    " sealed = 0, updated_at = excluded.updated_at",
			    "ssi", key, urls[i], store_now_ms());
		}
		if (rc != 0)
			return err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
		log_info("provider %s: API token imported (sealed), for %s", names[i], urls[i]);
	}
	snprintf(host, sizeof(host), "%s", cfg->agent_listen);
	if (strrchr(host, ':'))
		*strrchr(host, ':') = '\0';
	if (host[0] == '\0' || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "*") == 0)
		snprintf(host, sizeof(host), "127.0.0.1");
	if (cfg->agent_public_url && cfg->agent_public_url[0])
		snprintf(url, sizeof(url), "%s", cfg->agent_public_url);
	else
		snprintf(url, sizeof(url), "tls+tcp://%s:%u", host, agent_port);
	pc.data_dir = cfg->data_dir;
	pc.server_name = cfg->agent_server_name;
	pc.agent_url = url;
	pc.agent_binary = cfg->agent_binary;
	pc.scripts_dir = cfg->provision_scripts;
	pc.unit_file = cfg->agent_unit;
	pc.do_url = cfg->digitalocean_url;
	pc.hz_url = cfg->hetzner_url;
	return provision_configure(&pc, err, errlen);
}

/* The first start of an empty store makes an admin token and shows it once. */
static int
stoked_first_token(const char *api_url, char *err, size_t errlen)
{
	struct store *s = store_thread();
	char *tok = NULL;
	int rc;

	if (tokens_count(s) > 0)
		return 0;
	if ((rc = tokens_create(s, "admin", &tok, NULL, err, errlen)) != 0)
		return rc;
	printf("\nstoked: first start: an admin API token was made. It is shown once; keep it:\n\n"
	       "    export STOKE_URL=%s\n"
	       "    export STOKE_TOKEN=%s\n\n"
	       "Then try: stoke server list\n\n",
	       api_url, tok);
	fflush(stdout);
	free(tok);
	return 0;
}

int
stoked_main(int argc, char **argv)
{
	struct stoked_config cfg = {0};
	struct jobs_engine_opts jopts = {0};
	struct jobs_engine *jobs = NULL;
	struct api_opts aopts = {0};
	struct api *api = NULL;
	struct hub_opts hopts = {0};
	struct hub *hub = NULL;
	char err[1024], url[300], path[4096], dbpath[4096], host[256];
	sigset_t set;
	int check = 0, rc, sig;

	/* Built-in job types; test builds may have registered theirs before. */
	sites_register();
	provision_register();
	keys_register();
	batches_register();
	ssh_global_init();
	if (argc > 1 && strcmp(argv[1], "token") == 0)
		return stoked_token(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "agent") == 0)
		return stoked_agent(argc - 1, argv + 1);
	if ((rc = stoked_parse(argc, argv, &cfg, &check, NULL)) != 0)
		return rc;
	if (check) {
		printf("configuration OK\n");
		config_free(stoked_config_opts, stoked_config_nopts, &cfg);
		return 0;
	}
	log_init("stoked", log_level_parse(cfg.log_level));
	rc = 1;
	/* Threads inherit this mask; only the main thread takes the signals. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (stoked_data(&cfg, err, sizeof(err)) != 0) {
		log_error("%s", err);
		goto out;
	}
	/* Start-up in one order: the configuration (parsed and checked above), the store, the
	 * agent hub, the provisioning configuration, the API, and only then the job workers:
	 * a job claimed at start (a dead controller's job whose lease expired, or a retry that
	 * came due) never sees a half-made configuration. */
	hopts.listen = cfg.agent_listen;
	hopts.data_dir = cfg.data_dir;
	hopts.server_name = cfg.agent_server_name;
	hopts.park_ms = cfg.agent_park;
	hopts.output_max = cfg.command_output_max;
	if (hub_start(&hopts, &hub, err, sizeof(err)) != 0) {
		log_error("%s", err);
		goto out;
	}
	{
		char line[320], ahost[256];
		int n;

		snprintf(ahost, sizeof(ahost), "%s", cfg.agent_listen);
		if (strrchr(ahost, ':'))
			*strrchr(ahost, ':') = '\0';
		n = snprintf(line, sizeof(line), "tls+tcp://%s:%u\n", ahost, hub_port(hub));
		snprintf(path, sizeof(path), "%s/agent.url", cfg.data_dir);
		if (atomicfile_write(path, line, (size_t)n, 0644, (uid_t)-1, (gid_t)-1, err,
				     sizeof(err)) != 0)
			log_warnx("%s", err);
	}
	if (stoked_provision(&cfg, hub_port(hub), err, sizeof(err)) != 0) {
		log_error("%s", err);
		goto out;
	}
	stoked_config_api(&cfg, &aopts);
	if (api_start(&aopts, &api, err, sizeof(err)) != 0) {
		log_error("api: %s", err);
		goto out;
	}
	snprintf(host, sizeof(host), "%s", cfg.api_listen);
	if (strrchr(host, ':'))
		*strrchr(host, ':') = '\0';
	/* A wildcard address is reached on loopback from this machine. */
	if (host[0] == '\0' || strcmp(host, "*") == 0 || strcmp(host, "0.0.0.0") == 0)
		snprintf(host, sizeof(host), "127.0.0.1");
	snprintf(url, sizeof(url), "http://%s:%u", host, api_port(api));
	if (stoked_first_token(url, err, sizeof(err)) != 0) {
		log_error("%s", err);
		goto out;
	}
	log_info("api listening on %s", url);
	snprintf(dbpath, sizeof(dbpath), "%s/stoke.db", cfg.data_dir);
	jopts.db_path = dbpath;
	jopts.workers = (int)cfg.workers;
	jopts.lease_ms = cfg.job_lease;
	jopts.max_resumes = (int)cfg.job_max_resumes;
	if (jobs_start(&jopts, &jobs, err, sizeof(err)) != 0) {
		log_error("%s", err);
		goto out;
	}
	/* api.url is written last: tests and tools wait for it to know everything listens. */
	snprintf(path, sizeof(path), "%s/api.url", cfg.data_dir);
	{
		char line[320];
		int n = snprintf(line, sizeof(line), "%s\n", url);

		if (atomicfile_write(path, line, (size_t)n, 0644, (uid_t)-1, (gid_t)-1, err,
				     sizeof(err)) != 0)
			log_warnx("%s", err);
	}
	printf("stoked %s: API on %s (data in %s)\n", STOKE_VERSION, url, cfg.data_dir);
	fflush(stdout);

	for (;;) {
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			log_info("SIGHUP: nothing to reload yet");
			continue;
		}
		log_info("signal %d: shutting down", sig);
		break;
	}
	rc = 0;
out:
	api_stop(api);
	hub_stop(hub);
	jobs_stop(jobs);
	store_global_fini();
	config_free(stoked_config_opts, stoked_config_nopts, &cfg);
	return rc;
}
