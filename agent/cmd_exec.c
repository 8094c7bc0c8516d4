/*
 * cmd_exec.c: the exec command: run a program given as argv as a user, in a folder, with
 * environment entries and a time limit, streaming its output. It builds no shell line;
 * the process handling itself is in cmd_proc.c. Called through cmd_table.c.
 */
#include "cmd.h"
#include "cmd_proc.h"
#include "err.h"
#include "policy.h"

#include <stdlib.h>
#include <string.h>

#define CMD_EXEC_MAX_ARGS 4096

void
cmd_exec(struct cmd_ctx *ctx, const Stoke__Command *cmd, struct cmd_result *res)
{
	const Stoke__ExecCommand *ex = cmd->exec;
	struct cmd_proc_spec spec;
	const char **argv;

	res->exit_code = -1; /* until the command succeeds */
	if (cmd->kind_case != STOKE__COMMAND__KIND_EXEC || ex == NULL) {
		err_set(res->error, sizeof(res->error), ERR_INVAL, "exec: not an exec command");
		return;
	}
	if (ex->n_argv == 0 || ex->argv[0][0] == '\0') {
		err_set(res->error, sizeof(res->error), ERR_INVAL, "exec: argv is empty");
		return;
	}
	if (ex->n_argv > CMD_EXEC_MAX_ARGS) {
		err_set(res->error, sizeof(res->error), ERR_TOOBIG, "exec: more than %d arguments",
			CMD_EXEC_MAX_ARGS);
		return;
	}
	if (policy_check(ctx->cfg, cmd, res->error, sizeof(res->error)) != 0)
		return;
	/* protobuf-c gives a count; execve wants a NULL-terminated array. */
	if ((argv = calloc(ex->n_argv + 1, sizeof(*argv))) == NULL) {
		err_set(res->error, sizeof(res->error), ERR_NOMEM, "exec: out of memory");
		return;
	}
	for (size_t i = 0; i < ex->n_argv; i++)
		argv[i] = ex->argv[i];
	memset(&spec, 0, sizeof(spec));
	spec.argv = argv;
	spec.user = ex->user;
	spec.cwd = ex->cwd;
	spec.env = (const char *const *)ex->env;
	spec.nenv = ex->n_env;
	spec.timeout_ms = (long)ex->timeout_s * 1000;
	cmd_proc_run(ctx, &spec, res);
	free(argv);
}
