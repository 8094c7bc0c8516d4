/*
 * cli_run.c: `stoke run`: one command (or --script) on many servers as a batch, its output
 * live with each line prefixed by the server ("web-1: line", like parallel-ssh -i) or
 * gathered so identical outputs print once under the list of their servers (like clush -b),
 * then a summary of exit codes on stderr; exit 1 when any server did not exit 0. Ctrl-C
 * cancels the batch. And `stoke batch list|show|output|cancel` for batches run earlier.
 * Output comes from GET /batches/ID/output, long-polled. stoke.c dispatches here.
 */
#include "cli.h"
#include "err.h"
#include "timeutil.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CLI_RUN_SCRIPT_MAX (512 * 1024)
#define CLI_RUN_GATHER_MAX (256L * 1024 * 1024) /* output kept per server for --gather */

static volatile sig_atomic_t cli_run_interrupts;

static void
cli_run_sigint(int sig)
{
	(void)sig;
	cli_run_interrupts++;
	if (cli_run_interrupts >= 2)
		_exit(130);
}

/* One server of the batch, found by its command id. */
struct cli_run_srv {
	int64_t cmd;
	char name[72];
	struct buf out; /* --gather: its output */
	int group;	/* --gather: index of its group's first server */
};

struct cli_run {
	struct cli *cli;
	int64_t id;
	int gather;
	struct cli_run_srv *srv;
	size_t nsrv;
	int64_t lines;
};

static int
cli_run_cmp(const void *a, const void *b)
{
	const struct cli_run_srv *x = a, *y = b;

	return x->cmd < y->cmd ? -1 : x->cmd > y->cmd;
}

static struct cli_run_srv *
cli_run_find(struct cli_run *r, int64_t cmd)
{
	struct cli_run_srv key = {.cmd = cmd};

	return bsearch(&key, r->srv, r->nsrv, sizeof(key), cli_run_cmp);
}

static int
cli_run_servers(struct cli_run *r, json_t *batch)
{
	json_t *list = json_object_get(batch, "servers"), *e;
	size_t i;

	if ((r->srv = calloc(json_array_size(list) + 1, sizeof(*r->srv))) == NULL)
		return cli_error("out of memory");
	json_array_foreach(list, i, e)
	{
		struct cli_run_srv *s = &r->srv[r->nsrv++];

		s->cmd = cli_jint(e, "command_id");
		snprintf(s->name, sizeof(s->name), "%s", cli_jstr(e, "server"));
		buf_init(&s->out, CLI_RUN_GATHER_MAX);
	}
	qsort(r->srv, r->nsrv, sizeof(*r->srv), cli_run_cmp);
	return 0;
}

static void
cli_run_free(struct cli_run *r)
{
	for (size_t i = 0; i < r->nsrv; i++)
		buf_fini(&r->srv[i].out);
	free(r->srv);
}

/* Control characters in output would drive the terminal: shown as '?' (tabs kept). */
static void
cli_run_put(FILE *f, const char *prefix, const char *text)
{
	const unsigned char *p;

	if (prefix) {
		fputs(prefix, f);
		fputs(": ", f);
	}
	for (p = (const unsigned char *)text; *p != '\0'; p++)
		if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
			break;
	if (*p == '\0') {
		fputs(text, f);
	} else {
		for (p = (const unsigned char *)text; *p != '\0'; p++)
			fputc((*p < 0x20 && *p != '\t') || *p == 0x7f ? '?' : *p, f);
	}
	fputc('\n', f);
}

/* Handles one page of lines. */
static void
cli_run_lines(struct cli_run *r, json_t *items)
{
	json_t *e;
	size_t i;

	json_array_foreach(items, i, e)
	{
		/* compact rows: [id, command_id, stream, text] */
		const char *stream = json_string_value(json_array_get(e, 2));
		const char *text = json_string_value(json_array_get(e, 3));
		struct cli_run_srv *s =
		    cli_run_find(r, (int64_t)json_integer_value(json_array_get(e, 1)));

		if (stream == NULL || text == NULL)
			continue;
		if (strcmp(stream, "system") == 0 || s == NULL)
			continue; /* the agent's notes: the summary says it */
		r->lines++;
		if (r->gather) {
			buf_puts(&s->out, text);
			buf_putc(&s->out, '\n');
		} else if (!r->cli->json) {
			cli_run_put(strcmp(stream, "stderr") == 0 ? stderr : stdout, s->name, text);
		}
	}
}

/* Follows the batch's output until it is complete. */
static int
cli_run_follow(struct cli_run *r)
{
	json_t *page = NULL;
	char path[160];
	int64_t after = 0;
	int ret, cancelled = 0;

	for (;;) {
		if (cli_run_interrupts > 0 && !cancelled) {
			json_t *res = NULL;

			snprintf(path, sizeof(path), "/batches/%" PRId64 "/cancel", r->id);
			fprintf(stderr,
				"stoke: cancelling batch %" PRId64
				" (Ctrl-C again to stop waiting)\n",
				r->id);
			cli_api(r->cli, "POST", path, NULL, &res, NULL);
			json_decref(res);
			cancelled = 1;
		}
		snprintf(path, sizeof(path),
			 "/batches/%" PRId64 "/output?after=%" PRId64
			 "&limit=5000&wait=1000&format=compact",
			 r->id, after);
		if ((ret = cli_api(r->cli, "GET", path, NULL, &page, NULL)) != 0)
			return ret;
		cli_run_lines(r, json_object_get(page, "items"));
		after = cli_jint(page, "next");
		if (!r->gather)
			fflush(stdout);
		if (json_is_true(json_object_get(page, "complete"))) {
			json_decref(page);
			return CLI_EXIT_OK;
		}
		json_decref(page);
		page = NULL;
	}
}

/* --gather: identical outputs once, under the list of their servers (clush -b). */
static void
cli_run_print_gathered(struct cli_run *r)
{
	size_t i, j;

	for (i = 0; i < r->nsrv; i++)
		r->srv[i].group = -1;
	for (i = 0; i < r->nsrv; i++) {
		struct cli_run_srv *a = &r->srv[i];
		struct buf names;
		size_t count = 0;

		if (a->group >= 0 || a->out.len == 0)
			continue;
		buf_init(&names, 1 << 20);
		for (j = i; j < r->nsrv; j++) {
			struct cli_run_srv *b = &r->srv[j];

			if (b->group >= 0 || b->out.len != a->out.len ||
			    memcmp(b->out.data, a->out.data, a->out.len) != 0)
				continue;
			b->group = (int)i;
			buf_printf(&names, "%s%s", count ? "," : "", b->name);
			count++;
		}
		printf("---------------\n%s (%zu)\n---------------\n", names.data, count);
		for (char *p = a->out.data, *nl; p < a->out.data + a->out.len; p = nl + 1) {
			nl = memchr(p, '\n', (size_t)(a->out.data + a->out.len - p));
			*nl = '\0';
			cli_run_put(stdout, NULL, p);
			*nl = '\n';
		}
		buf_fini(&names);
	}
}

/* The summary of exit codes (stderr); CLI_EXIT_OK when every server exited 0. */
static int
cli_run_summary(json_t *batch, double secs)
{
	static const char *const outcomes[] = {"failed",    "timeout", "offline", "error",
					       "cancelled", "running", "waiting"};
	static const char *const words[] = {"failed",	 "timed out", "offline",    "error",
					    "cancelled", "running",   "not started"};
	json_t *sum = json_object_get(batch, "summary"), *list = json_object_get(batch, "servers");
	json_t *e;
	int64_t total = cli_jint(sum, "servers"), ok = cli_jint(sum, "ok");
	size_t i, k;

	fflush(stdout);
	fprintf(stderr, "batch %" PRId64 " %s: %" PRId64 " server%s: %" PRId64 " ok",
		cli_jint(batch, "id"), cli_jstr(batch, "state"), total, total == 1 ? "" : "s", ok);
	for (k = 0; k < sizeof(outcomes) / sizeof(outcomes[0]); k++)
		if (cli_jint(sum, outcomes[k]) > 0)
			fprintf(stderr, ", %" PRId64 " %s", cli_jint(sum, outcomes[k]), words[k]);
	if (secs >= 0)
		fprintf(stderr, " (%.2f s)", secs);
	fputc('\n', stderr);
	/* failed: grouped by exit code */
	for (int code = 1; code < 256; code++) {
		int n = 0;

		json_array_foreach(list, i, e)
		{
			if (strcmp(cli_jstr(e, "outcome"), "failed") != 0 ||
			    cli_jint(e, "exit_code") != code)
				continue;
			if (n++ == 0)
				fprintf(stderr, "  exit %d: %s", code, cli_jstr(e, "server"));
			else
				fprintf(stderr, ",%s", cli_jstr(e, "server"));
		}
		if (n)
			fputc('\n', stderr);
	}
	for (k = 1; k < sizeof(outcomes) / sizeof(outcomes[0]); k++) {
		int n = 0;

		json_array_foreach(list, i, e)
		{
			if (strcmp(cli_jstr(e, "outcome"), outcomes[k]) != 0)
				continue;
			if (strcmp(outcomes[k], "error") == 0) {
				fprintf(stderr, "  error: %s: %s\n", cli_jstr(e, "server"),
					cli_jstr(e, "error"));
				continue;
			}
			if (n++ == 0)
				fprintf(stderr, "  %s: %s", words[k], cli_jstr(e, "server"));
			else
				fprintf(stderr, ",%s", cli_jstr(e, "server"));
		}
		if (n)
			fputc('\n', stderr);
	}
	/* killed by a signal without an error text */
	json_array_foreach(list, i, e) if (strcmp(cli_jstr(e, "outcome"), "failed") == 0 &&
					   cli_jint(e, "exit_code") <= 0)
	    fprintf(stderr, "  signal %" PRId64 ": %s\n", cli_jint(e, "signal"),
		    cli_jstr(e, "server"));
	return total > 0 && ok == total ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

static int
cli_run_get(struct cli *cli, int64_t id, json_t **batch)
{
	char path[64];

	snprintf(path, sizeof(path), "/batches/%" PRId64, id);
	return cli_api(cli, "GET", path, NULL, batch, NULL);
}

/* Follows batch (made or found), prints its output and summary. */
static int
cli_run_show(struct cli *cli, json_t *batch, int gather, int64_t t0)
{
	struct cli_run r = {cli, cli_jint(batch, "id"), gather, NULL, 0, 0};
	json_t *end = NULL;
	int ret;

	if ((ret = cli_run_servers(&r, batch)) != 0)
		goto out;
	if ((ret = cli_run_follow(&r)) != 0)
		goto out;
	if ((ret = cli_run_get(cli, r.id, &end)) != 0)
		goto out;
	if (cli->json) {
		cli_print_json(cli, end);
		ret = cli_jint(json_object_get(end, "summary"), "ok") ==
			      cli_jint(json_object_get(end, "summary"), "servers")
			  ? CLI_EXIT_OK
			  : CLI_EXIT_FAIL;
		goto out;
	}
	if (gather)
		cli_run_print_gathered(&r);
	ret = cli_run_summary(end, t0 > 0 ? (double)(time_mono_ms() - t0) / 1000.0 : -1);
out:
	json_decref(end);
	cli_run_free(&r);
	return ret;
}

static int
cli_run_num(const struct cli_args *args, const char *name, long lo, long hi, json_t *body,
	    const char *field)
{
	const char *v = cli_args_get(args, name);
	char *end;
	long n;

	if (v == NULL)
		return 0;
	errno = 0;
	n = strtol(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0' || n < lo || n > hi)
		return cli_usage_error("--%s: must be a number %ld..%ld", name, lo, hi);
	json_object_set_new(body, field, json_integer(n));
	return 0;
}

static int
cli_run(struct cli *cli, const struct cli_args *args)
{
	const char *script = cli_args_get(args, "script"), *user = cli_args_get(args, "user");
	json_t *body = json_object(), *res = NULL, *argv;
	struct sigaction sa;
	int64_t t0 = time_mono_ms();
	int ret, i;

	if (body == NULL)
		return cli_error("out of memory");
	if ((ret = cli_selector(args, body, 1)) != 0)
		goto out;
	if ((script != NULL) == (args->npos > 0)) {
		ret = cli_usage_error("give a command after --, or --script FILE (not both)");
		goto out;
	}
	if (script != NULL) {
		FILE *f = strcmp(script, "-") == 0 ? stdin : fopen(script, "r");
		char *text;
		size_t n = 0, r;

		if (f == NULL) {
			ret = cli_error("%s: %s", script, strerror(errno));
			goto out;
		}
		if ((text = malloc(CLI_RUN_SCRIPT_MAX + 1)) == NULL) {
			if (f != stdin)
				fclose(f);
			ret = cli_error("out of memory");
			goto out;
		}
		while (n < CLI_RUN_SCRIPT_MAX &&
		       (r = fread(text + n, 1, CLI_RUN_SCRIPT_MAX - n, f)) > 0)
			n += r;
		text[n] = '\0';
		if (f != stdin)
			fclose(f);
		json_object_set_new(body, "script", json_string(text));
		free(text);
		if (json_object_get(body, "script") == NULL) {
			ret = cli_error("%s: not UTF-8 text", script);
			goto out;
		}
	} else {
		if ((argv = json_array()) == NULL) {
			ret = cli_error("out of memory");
			goto out;
		}
		for (i = 0; i < args->npos; i++)
			json_array_append_new(argv, json_string(args->pos[i]));
		json_object_set_new(body, "argv", argv);
	}
	if (user != NULL)
		json_object_set_new(body, "user", json_string(user));
	if ((ret = cli_run_num(args, "timeout", 1, 86400, body, "timeout")) != 0 ||
	    (ret = cli_run_num(args, "batch", 1, 10000, body, "batch_size")) != 0 ||
	    (ret = cli_run_num(args, "pickup", 1, 3600, body, "pickup_timeout")) != 0)
		goto out;
	if ((ret = cli_api(cli, "POST", "/batches", body, &res, NULL)) != 0)
		goto out;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = cli_run_sigint;
	sigaction(SIGINT, &sa, NULL);
	ret = cli_run_show(cli, json_object_get(res, "batch"), cli_args_get(args, "gather") != NULL,
			   t0);
out:
	json_decref(body);
	json_decref(res);
	return ret;
}

static const struct cli_cmd cli_run_cmds[] = {
    {"", "server= tag= all user= timeout= batch= gather script= pickup=", 0, CLI_MAX_ARGS,
     "(--server A,B | --tag T | --all) [--user U] [--timeout S] [--batch N] [--gather] "
     "[--pickup S] (-- CMD ARGS... | --script FILE)",
     "run a command on servers; output prefixed by server (or --gather), exit-code summary",
     cli_run},
};

const struct cli_family cli_run_family = {
    "run",
    "a command across servers",
    cli_run_cmds,
    sizeof(cli_run_cmds) / sizeof(cli_run_cmds[0]),
};

/* ---- stoke batch ---- */

static int
cli_batch_list(struct cli *cli, const struct cli_args *args)
{
	static const char *const hdr[] = {"ID", "STATE", "SERVERS", "OK", "COMMAND", "CREATED"};
	struct cli_table *t = NULL;
	json_t *list = NULL, *b;
	size_t i;
	int ret;

	(void)args;
	if ((ret = cli_api_list(cli, "/batches", &list)) != 0)
		goto out;
	if (cli->json) {
		ret = cli_print_json(cli, list);
		goto out;
	}
	if ((t = cli_table_new(6, hdr)) == NULL) {
		ret = cli_error("out of memory");
		goto out;
	}
	json_array_foreach(json_object_get(list, "items"), i, b)
	{
		char id[32], n[32], ok[32], cmd[256], age[32];
		json_t *sum = json_object_get(b, "summary"), *argv = json_object_get(b, "argv");
		const char *row[6];

		snprintf(id, sizeof(id), "%" PRId64, cli_jint(b, "id"));
		snprintf(n, sizeof(n), "%" PRId64, cli_jint(sum, "servers"));
		snprintf(ok, sizeof(ok), "%" PRId64, cli_jint(sum, "ok"));
		if (json_is_array(argv) && json_array_size(argv) > 0) {
			size_t k, len = 0;
			json_t *a;

			cmd[0] = '\0';
			json_array_foreach(argv, k, a) len +=
			    (size_t)snprintf(cmd + len, len < sizeof(cmd) ? sizeof(cmd) - len : 0,
					     "%s%s", k ? " " : "", json_string_value(a));
		} else {
			snprintf(cmd, sizeof(cmd), "(script)");
		}
		row[0] = id;
		row[1] = cli_jstr(b, "state");
		row[2] = n;
		row[3] = ok;
		row[4] = cmd;
		row[5] = cli_age(b, "created_at", age, sizeof(age));
		if (cli_table_add(t, row) != 0) {
			ret = cli_error("out of memory");
			goto out;
		}
	}
	cli_table_print(t, stdout);
out:
	cli_table_free(t);
	json_decref(list);
	return ret;
}

static int
cli_batch_show(struct cli *cli, const struct cli_args *args)
{
	static const char *const hdr[] = {"SERVER", "STATE", "OUTCOME", "EXIT", "TIME", "ERROR"};
	struct cli_table *t = NULL;
	json_t *b = NULL, *e;
	int64_t id;
	size_t i;
	int ret;

	if ((ret = cli_parse_id(args->pos[0], "batch", &id)) != 0)
		return ret;
	if ((ret = cli_run_get(cli, id, &b)) != 0)
		goto out;
	if (cli->json) {
		ret = cli_print_json(cli, b);
		goto out;
	}
	if ((t = cli_table_new(6, hdr)) == NULL) {
		ret = cli_error("out of memory");
		goto out;
	}
	json_array_foreach(json_object_get(b, "servers"), i, e)
	{
		char code[32], dur[32];
		const char *row[6];

		snprintf(code, sizeof(code), "%s",
			 json_is_integer(json_object_get(e, "exit_code")) ? "" : "-");
		if (code[0] == '\0')
			snprintf(code, sizeof(code), "%" PRId64, cli_jint(e, "exit_code"));
		if (json_is_integer(json_object_get(e, "duration_ms")))
			snprintf(dur, sizeof(dur), "%.2fs",
				 (double)cli_jint(e, "duration_ms") / 1000.0);
		else
			snprintf(dur, sizeof(dur), "-");
		row[0] = cli_jstr(e, "server");
		row[1] = cli_jstr(e, "state");
		row[2] = cli_jstr(e, "outcome");
		row[3] = code;
		row[4] = dur;
		row[5] = cli_jstr(e, "error");
		if (cli_table_add(t, row) != 0) {
			ret = cli_error("out of memory");
			goto out;
		}
	}
	cli_table_print(t, stdout);
	ret = cli_run_summary(b, -1);
out:
	cli_table_free(t);
	json_decref(b);
	return ret;
}

static int
cli_batch_output(struct cli *cli, const struct cli_args *args)
{
	json_t *b = NULL;
	int64_t id;
	int ret;

	if ((ret = cli_parse_id(args->pos[0], "batch", &id)) != 0)
		return ret;
	if ((ret = cli_run_get(cli, id, &b)) != 0)
		return ret;
	ret = cli_run_show(cli, b, cli_args_get(args, "gather") != NULL, 0);
	json_decref(b);
	return ret;
}

static int
cli_batch_cancel(struct cli *cli, const struct cli_args *args)
{
	json_t *res = NULL;
	char path[96];
	int64_t id;
	int ret;

	if ((ret = cli_parse_id(args->pos[0], "batch", &id)) != 0)
		return ret;
	snprintf(path, sizeof(path), "/batches/%" PRId64 "/cancel", id);
	if ((ret = cli_api(cli, "POST", path, NULL, &res, NULL)) != 0)
		return ret;
	if (cli->json)
		cli_print_json(cli, res);
	else
		printf("batch %" PRId64 ": cancel requested\n", id);
	json_decref(res);
	return CLI_EXIT_OK;
}

static const struct cli_cmd cli_batch_cmds[] = {
    {"list", "", 0, 0, "", "batches run with stoke run", cli_batch_list},
    {"show", "", 1, 1, "ID", "a batch: each server's state and exit code, the summary",
     cli_batch_show},
    {"output", "gather", 1, 1, "ID [--gather]",
     "a batch's output (following it while it runs), then its summary", cli_batch_output},
    {"cancel", "", 1, 1, "ID", "stop a running batch", cli_batch_cancel},
};

const struct cli_family cli_batch_family = {
    "batch",
    "command batches",
    cli_batch_cmds,
    sizeof(cli_batch_cmds) / sizeof(cli_batch_cmds[0]),
};
