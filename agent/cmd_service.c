/*
 * cmd_service.c: the service command: systemctl start, stop, restart, reload or status of
 * a service named in the agent's allow-list (services). Nothing else can be controlled;
 * the argv is built from the allow-list entry, not from the received text.
 */
#include "cmd.h"
#include "agent_config.h"
#include "cmd_proc.h"
#include "err.h"
#include "policy.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#define CMD_SERVICE_TIMEOUT_MS 300000

static const char *const cmd_service_actions[] = {"start", "stop", "restart", "reload", "status"};

/* The allow-list entry equal to name, copied into out, or -1. */
static int
cmd_service_allowed(const char *list, const char *name, char *out, size_t outlen)
{
	size_t nl = strlen(name);

	for (const char *p = list; p != NULL && *p != '\0';) {
		const char *colon = strchr(p, ':');
		size_t n = colon != NULL ? (size_t)(colon - p) : strlen(p);

		if (n == nl && n > 0 && n < outlen && memcmp(p, name, n) == 0) {
			memcpy(out, p, n);
			out[n] = '\0';
			return 0;
		}
		p = colon != NULL ? colon + 1 : NULL;
	}
	return -1;
}

void
cmd_service(struct cmd_ctx *ctx, const Stoke__Command *cmd, struct cmd_result *res)
{
	const Stoke__ServiceCommand *sv = cmd->service;
	const struct agent_config *cfg = ctx->cfg;
	const char *action = NULL, *argv[4];
	struct cmd_proc_spec spec;
	char unit[256], why[768];
	json_t *j;

	res->exit_code = -1; /* until the command succeeds */
	if (cmd->kind_case != STOKE__COMMAND__KIND_SERVICE || sv == NULL) {
		err_set(res->error, sizeof(res->error), ERR_INVAL,
			"service: not a service command");
		return;
	}
	for (size_t i = 0; i < sizeof(cmd_service_actions) / sizeof(cmd_service_actions[0]); i++)
		if (strcmp(sv->action, cmd_service_actions[i]) == 0)
			action = cmd_service_actions[i];
	if (action == NULL) {
		err_set(res->error, sizeof(res->error), ERR_INVAL,
			"service: action \"%.32s\" is not start, stop, restart, reload or status",
			sv->action);
		return;
	}
	if (cmd_service_allowed(cfg->services, sv->name, unit, sizeof(unit)) != 0) {
		err_set(res->error, sizeof(res->error), ERR_AUTH,
			"service: \"%.64s\" is not in the agent's services list (%s)", sv->name,
			cfg->services != NULL ? cfg->services : "");
		return;
	}
	/* Starting or reloading nginx loads its configuration as root: the policy walks it. */
	if (policy_check(cfg, cmd, why, sizeof(why)) != 0) {
		err_set(res->error, sizeof(res->error), ERR_AUTH, "service %s: %s", unit, why);
		return;
	}
	argv[0] = cfg->systemctl_bin;
	argv[1] = action;
	argv[2] = unit;
	argv[3] = NULL;
	memset(&spec, 0, sizeof(spec));
	spec.argv = argv;
	spec.as_agent = 1;
	spec.cwd = "/";
	spec.timeout_ms = CMD_SERVICE_TIMEOUT_MS;
	spec.announce = 1;
	if (cmd_proc_run(ctx, &spec, res) != 0)
		return;
	/* status exits 3 for a stopped service: an answer, not a failure. */
	if (strcmp(action, "status") == 0) {
		j = json_pack("{s:s, s:b, s:i}", "service", unit, "active", res->exit_code == 0,
			      "status", res->exit_code);
		if (j != NULL) {
			res->result_json = json_dumps(j, JSON_COMPACT);
			json_decref(j);
		}
		if (res->signal == 0)
			res->exit_code = 0;
		return;
	}
	if (res->exit_code != 0 && res->error[0] == '\0')
		err_set(res->error, sizeof(res->error), ERR_IO,
			"systemctl %s %s: exited with code %d", action, unit, res->exit_code);
}
