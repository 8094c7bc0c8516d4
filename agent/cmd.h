/*
 * cmd.h: the agent's command handlers. One file per kind (cmd_exec.c, cmd_write_file.c,
 * cmd_nginx_site.c, cmd_git_checkout.c, cmd_script.c, cmd_authorized_keys.c,
 * cmd_service.c, cmd_facts.c) and one table (cmd_table.c) mapping the protobuf oneof case
 * to its handler. Handlers validate every field again, never build a shell command
 * line from received fields (execve with argv only), stream output through ctx->output,
 * and block until the command is finished (the channel runs each in its own thread).
 */
#ifndef STOKE_AGENT_CMD_H
#define STOKE_AGENT_CMD_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "stoke.pb-c.h"

struct agent_config;

enum cmd_stream { CMD_STDOUT = 0, CMD_STDERR = 1, CMD_SYSTEM = 2 };

struct cmd_ctx {
	const struct agent_config *cfg;
	uint64_t command_id;
	/* Sends output (any size; the channel splits it into chunks). May block. */
	void (*output)(void *arg, enum cmd_stream stream, const char *data, size_t len);
	void *output_arg;
	atomic_int *cancel; /* becomes non-zero when the controller cancels the command */
	/* Optional: called (with output_arg, on the command's thread) once tick_at
	 * (time_mono_ms) has passed while a process runs: the channel holds the first
	 * moments of output so that a quick command's output rides with its result. */
	void (*tick)(void *arg);
	int64_t tick_at;
};

struct cmd_result {
	int exit_code;		    /* 0 success; -1 when not run or killed by a signal */
	int signal;		    /* terminating signal, 0 if none */
	char error[1024];	    /* "" on success; readable text otherwise */
	char *result_json;	    /* malloc'd kind-specific JSON object text, or NULL */
	struct Stoke__Facts *facts; /* facts command only (malloc'd, freed by cmd_result_fini) */
};

typedef void (*cmd_fn)(struct cmd_ctx *ctx, const Stoke__Command *cmd, struct cmd_result *res);

struct cmd_kind {
	const char *name; /* "exec" */
	Stoke__Command__KindCase kind;
	cmd_fn run;
};

/* The handler for a command, or NULL (unknown / noop / cancel). */
const struct cmd_kind *cmd_lookup(Stoke__Command__KindCase kind);
void cmd_result_init(struct cmd_result *r);
void cmd_result_fini(struct cmd_result *r);

/* Handlers (one file each). */
void cmd_exec(struct cmd_ctx *ctx, const Stoke__Command *cmd, struct cmd_result *res);
void cmd_script(struct cmd_ctx *ctx, const Stoke__Command *cmd, struct cmd_result *res);
void cmd_write_file(struct cmd_ctx *ctx, const Stoke__Command *cmd, struct cmd_result *res);
void cmd_nginx_site(struct cmd_ctx *ctx, const Stoke__Command *cmd, struct cmd_result *res);
void cmd_git_checkout(struct cmd_ctx *ctx, const Stoke__Command *cmd, struct cmd_result *res);
void cmd_authorized_keys(struct cmd_ctx *ctx, const Stoke__Command *cmd, struct cmd_result *res);
void cmd_service(struct cmd_ctx *ctx, const Stoke__Command *cmd, struct cmd_result *res);
void cmd_facts(struct cmd_ctx *ctx, const Stoke__Command *cmd, struct cmd_result *res);

#endif
