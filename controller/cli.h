/*
 * cli.h: what the command families of `stoke` share: the descriptor rows each family
 * exports (name, argument spec, usage, exec), the parsed arguments, calls to the API that
 * print the API's errors, tables for people, --json for scripts, and the progress bar.
 * stoke.c owns main and the dispatch table; cli_output.c implements the helpers;
 * cli_server.c (with cli_server_set.c), cli_job.c, cli_token.c, cli_site.c, cli_deploy.c are
 * the families.
 */
#ifndef STOKE_CLI_H
#define STOKE_CLI_H

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "buf.h"

struct http_client;
struct http_sse_event;

/* Exit codes. */
#define CLI_EXIT_OK 0
#define CLI_EXIT_FAIL 1	 /* the API or the operation failed */
#define CLI_EXIT_USAGE 2 /* bad command line or configuration */

/* One run of the program: the configured client and the global options. */
struct cli {
	struct http_client *http; /* base URL without "/api/v1" */
	int json;		  /* --json: print the API's JSON */
	int tty;		  /* stdout is a terminal */
};

#define CLI_MAX_ARGS 64

/* A command's arguments after parsing: positionals and --options. */
struct cli_args {
	const char *pos[CLI_MAX_ARGS];
	int npos;
	const char *opt_name[CLI_MAX_ARGS]; /* option names as in the spec, without "--" */
	const char *opt_val[CLI_MAX_ARGS];  /* the value, or "" for a flag */
	int nopt;
};

/* The value of --name, or NULL when it was not given ("" for a flag that was). */
const char *cli_args_get(const struct cli_args *a, const char *name);

/*
 * One command's descriptor row. opts lists the options it takes, separated by spaces; a
 * trailing '=' means the option takes a value: "tag= state=", "wait". The global options
 * (--json, --url, --token, --help) are taken by every command and are not listed.
 * A row named "" is the family's default: `stoke deploy SITE` runs it when the word after
 * the family is not one of its commands.
 */
struct cli_cmd {
	const char *name;  /* "list", or "" */
	const char *opts;  /* "tag= state=" */
	int min_pos;	   /* positional arguments it needs */
	int max_pos;	   /* and takes at most */
	const char *usage; /* "[--tag T] [--state S]" */
	const char *help;  /* one line */
	int (*exec)(struct cli *cli, const struct cli_args *args);
};

/* A command family ("server", "job", "token"): a table of commands. */
struct cli_family {
	const char *name;
	const char *help;
	const struct cli_cmd *cmds;
	size_t ncmds;
};

extern const struct cli_family cli_server_family;
extern const struct cli_family cli_job_family;
extern const struct cli_family cli_token_family;
extern const struct cli_family cli_site_family;
extern const struct cli_family cli_deploy_family;
extern const struct cli_family cli_key_family;
extern const struct cli_family cli_run_family;
extern const struct cli_family cli_batch_family;

/* `stoke server set` (cli_server_set.c), a row of cli_server_family's table. */
int cli_server_set(struct cli *cli, const struct cli_args *args);
/* `stoke server tag` (cli_server_tag.c), a row of cli_server_family's table. */
int cli_server_tag(struct cli *cli, const struct cli_args *args);
/* `stoke server create|delete|retry|log` (cli_server_create.c), rows of the same table. */
int cli_server_create(struct cli *cli, const struct cli_args *args);
int cli_server_delete(struct cli *cli, const struct cli_args *args);
int cli_server_retry(struct cli *cli, const struct cli_args *args);
int cli_server_log(struct cli *cli, const struct cli_args *args);

/* "stoke: <message>" on stderr. Returns CLI_EXIT_FAIL. */
int cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "stoke: <message>" and a hint to see help, on stderr. Returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Calls the API (path under /api/v1, e.g. "/servers?tag=web"; body may be NULL) and
 * parses the answer into *out (the caller decrefs it). On a transport failure prints
 * "stoke: cannot reach ...", on an error status prints the API's message; both return
 * CLI_EXIT_FAIL. When status is not NULL it gets the HTTP status (0 when none).
 */
int cli_api(struct cli *cli, const char *method, const char *path, json_t *body, json_t **out,
	    long *status);
/* Like cli_api for GET of a list: follows "next" through every page and gives
 * {"items": [all of them], "next": null}. path may hold a query already. */
int cli_api_list(struct cli *cli, const char *path, json_t **out);
/*
 * Follows GET path (under /api/v1) as Server-Sent Events, after the event id last_id (NULL:
 * only new ones), reconnecting with Last-Event-ID when the stream drops (see http_sse_get,
 * whose callbacks these are). Returns CLI_EXIT_OK when cb stopped the stream; prints the
 * error and returns CLI_EXIT_FAIL otherwise.
 */
int cli_api_events(struct cli *cli, const char *path, const char *last_id,
		   int (*cb)(const struct http_sse_event *ev, void *arg),
		   void (*drop_cb)(const char *why, void *arg), void *arg);
/* Appends "?key=value" or "&key=value" to path, the value escaped. Returns 0 or ERR_*. */
int cli_query_add(struct buf *path, const char *key, const char *value);
/* Appends "/" + the escaped segment. */
int cli_path_add(struct buf *path, const char *segment);
/* Checks that s is a positive decimal id; prints a usage error naming what otherwise. */
int cli_parse_id(const char *s, const char *what, int64_t *id);

/* Prints j for scripts: indented on a terminal, one line otherwise. Returns CLI_EXIT_OK. */
int cli_print_json(struct cli *cli, json_t *j);

/* JSON field access that turns absence and null into "-" (or "" / 0). */
const char *cli_jstr(json_t *obj, const char *key); /* string, or "-" */
int64_t cli_jint(json_t *obj, const char *key);	    /* integer, or 0 */
/* Any value as short text into out: strings as they are, null as "-", others as JSON. */
const char *cli_jtext(json_t *v, char *out, size_t outlen);
/* An ISO 8601 time as "3m ago" / "in 5s" ("-" for null or unparsable). */
const char *cli_age(json_t *obj, const char *key, char *out, size_t outlen);

/* Aligned tables: a header row, then rows; columns are padded to their widest cell. */
struct cli_table;
struct cli_table *cli_table_new(int ncols, const char *const *headers);
/* Copies the cells (ncols of them; NULL prints "-"). Returns 0 or ERR_NOMEM. */
int cli_table_add(struct cli_table *t, const char *const *cells);
void cli_table_print(const struct cli_table *t, FILE *f);
void cli_table_free(struct cli_table *t);

/*
 * Follows job id (GET /events, resumed after a drop) until it finishes, drawing its progress
 * unless --json. Returns CLI_EXIT_OK when it ends in `want` ("done", or "cancelled" when
 * cancelling), otherwise prints why and returns CLI_EXIT_FAIL. With out NULL, --json prints
 * the finished job; otherwise *out gets it (the caller decrefs; NULL when the job could not
 * be read) and nothing is printed as JSON. Implemented in cli_job.c.
 */
int cli_job_follow(struct cli *cli, int64_t id, const char *want, json_t **out);

/*
 * Follows deployment id until it ends (cli_deploy.c): prints its log lines as they arrive
 * (with --json, one JSON object per line), then its result; state changes go to stderr.
 * Returns CLI_EXIT_OK when it finished, otherwise prints why and returns CLI_EXIT_FAIL.
 * With out NULL, --json also prints the ended deployment; otherwise *out gets it (the caller
 * decrefs) and --json prints nothing.
 */
int cli_deploy_follow(struct cli *cli, int64_t id, json_t **out);

/* Adds the server selector options --server A,B (ids or names) | --tag T | --all to a
 * request body as "servers", "tag" or "all". Returns 0, or a usage error when several are
 * given or (required) none is. Implemented in cli_key.c; `stoke run` uses it too. */
int cli_selector(const struct cli_args *args, json_t *body, int required);

/* "label:   value" lines for show commands. */
void cli_field(const char *label, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Progress of long work. On a terminal, one line redrawn in place:
 * "[#########...........]  45% message"; otherwise a plain line "45% message" whenever
 * percent or message changes.
 */
struct cli_progress {
	FILE *f;
	int tty;
	int drawn; /* a bar is on the screen (the cursor is at its end) */
	int percent;
	char message[256];
};

void cli_progress_init(struct cli_progress *p, FILE *f, int tty);
void cli_progress_update(struct cli_progress *p, int percent, const char *message);
/* Prints a line of its own (to stderr) without garbling the bar; the bar is redrawn. */
void cli_progress_note(struct cli_progress *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Ends the bar's line, if one is drawn. */
void cli_progress_end(struct cli_progress *p);

#endif
