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
#include "atomicfile.h"
#include "crypto.h"
#include "err.h"
#include "jobs.h"
#include "log.h"
#include "names.h"
#include "stoked_config.h"
#include "store.h"
#include "tokens.h"

enum { OPT_DATA_DIR = 256, OPT_API_LISTEN, OPT_AGENT_LISTEN, OPT_LOG_LEVEL, OPT_NAME };

static const struct option stoked_long[] = {
    {"data-dir", required_argument, NULL, OPT_DATA_DIR},
    {"api-listen", required_argument, NULL, OPT_API_LISTEN},
    {"agent-listen", required_argument, NULL, OPT_AGENT_LISTEN},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"name", required_argument, NULL, OPT_NAME},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

static void
stoked_usage(FILE *f)
{
	fprintf(f, "usage: stoked [-n] [-c FILE] [--data-dir DIR] [--api-listen HOST:PORT]\n"
		   "              [--agent-listen HOST:PORT] [--log-level LEVEL]\n"
		   "       stoked token create [-c FILE] [--data-dir DIR] [--name NAME]\n");
}

/* Parses options shared by the daemon and its subcommands into cfg. */
static int
stoked_parse(int argc, char **argv, struct stoked_config *cfg, int *check, char **name)
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
			if (name == NULL)
				goto usage;
			*name = optarg;
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
	uint8_t key[CRYPTO_KEY_LEN];
	int rc;

	if (mkdir(cfg->data_dir, 0700) == -1 && errno != EEXIST)
		return err_set(err, errlen, ERR_IO, "%s: %s", cfg->data_dir, strerror(errno));
	snprintf(path, sizeof(path), "%s/secret.key", cfg->data_dir);
	if ((rc = crypto_key_load(path, key, err, errlen)) != 0)
		return rc;
	explicit_bzero(key, sizeof(key)); /* checked here; modules load it when they need it */
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
	char err[1024], *tok = NULL, *name = "cli";
	int rc;

	if (argc < 2 || strcmp(argv[1], "create") != 0) {
		stoked_usage(stderr);
		return 2;
	}
	if ((rc = stoked_parse(argc - 1, argv + 1, &cfg, NULL, &name)) != 0)
		return rc;
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
	char err[1024], url[300], path[4096], host[256];
	sigset_t set;
	int check = 0, rc, sig;

	if (argc > 1 && strcmp(argv[1], "token") == 0)
		return stoked_token(argc - 1, argv + 1);
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
	snprintf(path, sizeof(path), "%s/stoke.db", cfg.data_dir);
	jopts.db_path = path;
	jopts.workers = (int)cfg.workers;
	jopts.lease_ms = cfg.job_lease;
	if (jobs_start(&jopts, &jobs, err, sizeof(err)) != 0) {
		log_error("%s", err);
		goto out;
	}
	aopts.listen = cfg.api_listen;
	aopts.body_max = (size_t)cfg.body_max;
	aopts.max_conns = (unsigned)cfg.api_conns;
	if (api_start(&aopts, &api, err, sizeof(err)) != 0) {
		log_error("api: %s", err);
		goto out;
	}
	snprintf(host, sizeof(host), "%s", cfg.api_listen);
	if (strrchr(host, ':'))
		*strrchr(host, ':') = '\0';
	snprintf(url, sizeof(url), "http://%s:%u", host, api_port(api));
	if (stoked_first_token(url, err, sizeof(err)) != 0) {
		log_error("%s", err);
		goto out;
	}
	snprintf(path, sizeof(path), "%s/api.url", cfg.data_dir);
	{
		char line[320];
		int n = snprintf(line, sizeof(line), "%s\n", url);

		if (atomicfile_write(path, line, (size_t)n, 0644, (uid_t)-1, (gid_t)-1, err,
				     sizeof(err)) != 0)
			log_warnx("%s", err);
	}
	log_info("api listening on %s", url);
	log_info("agent channel (%s) arrives with the agent; not listening yet", cfg.agent_listen);
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
	jobs_stop(jobs);
	store_global_fini();
	config_free(stoked_config_opts, stoked_config_nopts, &cfg);
	return rc;
}
