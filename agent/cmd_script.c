/*
 * cmd_script.c: the script command (deploy scripts): the script text is written to a
 * private temp file (mode 0700, owned by the user it runs as) and run as /bin/bash FILE
 * through cmd_proc.c, then removed. It never passes the text on a command line.
 */
#include "cmd.h"
#include "cmd_proc.h"
#include "err.h"
#include "policy.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CMD_SCRIPT_BASH "/bin/bash"
#define CMD_SCRIPT_TEMPLATE "/tmp/stoke-script-XXXXXX"

static int
cmd_script_write(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t w = write(fd, data, len);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		data += w;
		len -= (size_t)w;
	}
	return 0;
}

void
cmd_script(struct cmd_ctx *ctx, const Stoke__Command *cmd, struct cmd_result *res)
{
	const Stoke__ScriptCommand *sc = cmd->script;
	struct cmd_proc_spec spec;
	struct cmd_proc_user u;
	char path[] = CMD_SCRIPT_TEMPLATE;
	const char *argv[3];
	int fd = -1;

	res->exit_code = -1; /* until the command succeeds */
	if (cmd->kind_case != STOKE__COMMAND__KIND_SCRIPT || sc == NULL) {
		err_set(res->error, sizeof(res->error), ERR_INVAL, "script: not a script command");
		return;
	}
	for (size_t i = 0; i < sc->n_env; i++)
		if (cmd_proc_env_check(sc->env[i], res->error, sizeof(res->error)) != 0)
			return;
	if (policy_check(ctx->cfg, cmd, res->error, sizeof(res->error)) != 0)
		return;
	/* The same lookup cmd_proc_run does, for the owner of the file. */
	if (cmd_proc_user_lookup(ctx->cfg, sc->user, &u, res->error, sizeof(res->error)) != 0)
		return;

	/* mkstemp: O_EXCL, mode 0600, a fresh name: no link can be planted in its place. */
	if ((fd = mkstemp(path)) == -1) {
		err_set(res->error, sizeof(res->error), ERR_IO, "script: temp file: %s",
			strerror(errno));
		return;
	}
	if (cmd_script_write(fd, sc->script, strlen(sc->script)) == -1) {
		err_set(res->error, sizeof(res->error), ERR_IO, "script: write %s: %s", path,
			strerror(errno));
		goto fail;
	}
	if (geteuid() == 0 && fchown(fd, u.uid, u.gid) == -1) {
		err_set(res->error, sizeof(res->error), ERR_IO, "script: chown %s: %s", path,
			strerror(errno));
		goto fail;
	}
	if (fchmod(fd, 0700) == -1 || close(fd) == -1) {
		fd = -1;
		err_set(res->error, sizeof(res->error), ERR_IO, "script: %s: %s", path,
			strerror(errno));
		goto fail;
	}
	fd = -1;

	argv[0] = CMD_SCRIPT_BASH;
	argv[1] = path;
	argv[2] = NULL;
	memset(&spec, 0, sizeof(spec));
	spec.argv = argv;
	spec.user = sc->user;
	spec.cwd = sc->cwd;
	spec.env = (const char *const *)sc->env;
	spec.nenv = sc->n_env;
	spec.timeout_ms = (long)sc->timeout_s * 1000;
	cmd_proc_run(ctx, &spec, res);

fail:
	if (fd != -1)
		close(fd);
	unlink(path);
}
