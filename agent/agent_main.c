/*
 * agent_main.c: stoke-agent's main: command line, configuration (-n checks it),
 * signals, and the channel's poll loop. Everything it does comes from the controller.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "agent_config.h"
#include "channel.h"
#include "cmd_proc.h"
#include "err.h"
#include "log.h"

static struct channel *agent_channel;

static void *
agent_signals(void *arg)
{
	sigset_t *set = arg;
	int sig;

	while (sigwait(set, &sig) == 0) {
		log_info("signal %d: stopping", sig);
		if (agent_channel)
			channel_stop(agent_channel);
		break;
	}
	return NULL;
}

static void
agent_usage(FILE *f)
{
	fprintf(f, "usage: stoke-agent [-n] -c FILE\n");
}

int
main(int argc, char **argv)
{
	struct agent_config cfg = {0};
	const char *file = NULL;
	char err[1024];
	static sigset_t set;
	pthread_t sigt;
	int c, check = 0, level;

	while ((c = getopt(argc, argv, "c:nhV")) != -1) {
		switch (c) {
		case 'c':
			file = optarg;
			break;
		case 'n':
			check = 1;
			break;
		case 'V':
			printf("stoke-agent %s\n", STOKE_VERSION);
			return 0;
		case 'h':
			agent_usage(stdout);
			return 0;
		default:
			agent_usage(stderr);
			return 2;
		}
	}
	if (file == NULL || optind != argc) {
		agent_usage(stderr);
		return 2;
	}
	if (config_defaults(agent_config_opts, agent_config_nopts, &cfg, err, sizeof(err)) != 0 ||
	    config_parse_file(agent_config_opts, agent_config_nopts, &cfg, file, err,
			      sizeof(err)) != 0) {
		fprintf(stderr, "stoke-agent: %s\n", err);
		return 1;
	}
	if (check) {
		printf("configuration OK\n");
		config_free(agent_config_opts, agent_config_nopts, &cfg);
		return 0;
	}
	level = log_level_parse(cfg.log_level ? cfg.log_level : "info");
	log_init("stoke-agent", level < 0 ? LOG_LEVEL_INFO : level);
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (mkdir(cfg.state_dir, 0700) == -1 && errno != EEXIST) {
		log_warn("%s", cfg.state_dir);
		return 1;
	}
	if (cfg.pin_cpu) {
		int cpu = -1, rc = cmd_proc_pin_self(&cpu);

		if (rc < 0)
			log_warn("pin_cpu: staying on every CPU");
		else if (rc > 0)
			log_debug("pin_cpu: the agent's threads run on CPU %d", cpu);
	}
	/* Look the default user up now: an operator hears at once when it does not exist, and
	 * the name service modules are loaded before the first command, not during it. */
	if (cfg.default_user != NULL) {
		struct passwd pw, *res = NULL;
		char buf[4096];

		gid_t groups[64];
		int ngroups = 64;

		if (getpwnam_r(cfg.default_user, &pw, buf, sizeof(buf), &res) != 0 || res == NULL)
			log_warnx("default_user %s: no such user on this server; commands that "
				  "name no user will fail",
				  cfg.default_user);
		else
			(void)getgrouplist(pw.pw_name, pw.pw_gid, groups, &ngroups);
	}
	if (channel_start(&cfg, &agent_channel, err, sizeof(err)) != 0) {
		log_error("%s", err);
		config_free(agent_config_opts, agent_config_nopts, &cfg);
		return 1;
	}
	pthread_create(&sigt, NULL, agent_signals, &set);
	pthread_detach(sigt);
	log_info("agent %s: dialing %s (expecting %s)", cfg.agent_id, cfg.controller,
		 cfg.server_name);
	channel_run(agent_channel);
	channel_free(agent_channel);
	config_free(agent_config_opts, agent_config_nopts, &cfg);
	return 0;
}
