/*
 * cmd_proc.h: the process runner handlers share: execve with an argv (never a shell line) as
 * a user with a clean environment in its own process group, output streamed as produced,
 * a time limit and cancel that kill the whole group.
 */
#ifndef STOKE_AGENT_CMD_PROC_H
#define STOKE_AGENT_CMD_PROC_H

#include <limits.h>
#include <stddef.h>
#include <sys/types.h>

#include "cmd.h"

struct buf;

struct cmd_proc_user {
	char name[64];
	uid_t uid;
	gid_t gid;
	char home[PATH_MAX];
};

/* Looks up the user a command runs as ("" or NULL: cfg->default_user), checking the name
 * with names_user. Refuses uid 0 unless cfg->allow_root. Does not block for long. */
int cmd_proc_user_lookup(const struct agent_config *cfg, const char *name, struct cmd_proc_user *u,
			 char *err, size_t errlen);

/* Checks one "NAME=value" environment entry: NAME is [A-Za-z_][A-Za-z0-9_]*. */
int cmd_proc_env_check(const char *kv, char *err, size_t errlen);

struct cmd_proc_spec {
	const char *const *argv; /* NULL-terminated; argv[0] absolute, or searched in PATH */
	const char *user;	 /* "" or NULL: cfg->default_user (ignored when as_agent) */
	int as_agent;		 /* run as the agent itself: only for argv the agent built */
	const char *cwd;	 /* absolute; NULL or "": the user's home, else "/" */
	const char *const *env;	 /* extra "NAME=value" entries (checked), may be NULL */
	size_t nenv;
	long timeout_ms;	/* 0: cfg->exec_timeout */
	struct buf *capture[2]; /* when set, stdout / stderr are also appended here (bounded) */
	int quiet[2];		/* when set, stdout / stderr are not sent to ctx->output */
	int announce;		/* send "$ argv..." on CMD_SYSTEM before starting */
	int no_status;		/* do not send the closing "exited with ..." note */
};

/*
 * Runs spec->argv to its end and fills res->exit_code, res->signal and, when it could not
 * run or was stopped, res->error. Returns 0 when the program ran to its end (whatever its
 * exit status: look at res), or an ERR_* code when it could not be started (ERR_INVAL,
 * ERR_NOTFOUND, ERR_IO...), timed out (ERR_TIMEOUT) or was cancelled (ERR_CANCELLED).
 * Blocks until the program and, when it was killed, its whole process group are gone.
 */
int cmd_proc_run(struct cmd_ctx *ctx, const struct cmd_proc_spec *spec, struct cmd_result *res);

/* Sends output through ctx->output when there is one. */
void cmd_proc_emit(struct cmd_ctx *ctx, enum cmd_stream stream, const char *data, size_t len);
/* Sends one line (a '\n' is added) on CMD_SYSTEM. */
void cmd_proc_note(struct cmd_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* 1 when a process other than a zombie is in process group pgid, else 0 (reads /proc). */
int cmd_proc_group_alive(pid_t pgid);

/* Pins the calling thread (and so every thread it starts later) to one of the CPUs it
 * may use, chosen by pid; programs started by cmd_proc_run get all of them back.
 * 1 pinned (*cpu set), 0 nothing to do (one CPU), -1 failed (errno). Call before any
 * other thread starts. */
int cmd_proc_pin_self(int *cpu);

#endif
