/*
 * cli_deploy.c: `stoke deploy SITE [--commit SHA] [--follow]` and `stoke deploy
 * list|show|log|cancel`: queue a deployment, follow its log live (GET
 * /deployments/{id}/log?after=<line id>, polled while it runs: every line once, in order),
 * read it afterwards, cancel it. Sites themselves are cli_site.c's. stoke.c dispatches here
 * through cli_deploy_family; cli_site.c calls cli_deploy_follow for a first deployment.
 */
#include "cli.h"
#include "err.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CLI_DEPLOY_POLL_MS 200	     /* between polls while lines arrive */
#define CLI_DEPLOY_POLL_IDLE_MS 1000 /* at most, while nothing changes */
#define CLI_DEPLOY_RETRIES 10	     /* transport failures in a row before following gives up */

static int
cli_deploy_terminal(const char *state)
{
	return strcmp(state, "finished") == 0 || strcmp(state, "failed") == 0 ||
	       strcmp(state, "cancelled") == 0;
}

static void
cli_deploy_sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0)
		;
}

/* An ISO 8601 time of the API ("2026-11-22T18:40:00.123Z") in ms, or -1. */
static int64_t
cli_deploy_time_ms(json_t *obj, const char *key)
{
	const char *s = cli_jstr(obj, key);
	struct tm tm;
	int ms = 0, n = 0;

	memset(&tm, 0, sizeof(tm));
	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
		   &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6 ||
	    n == 0)
		return -1;
	if (s[n] == '.')
		sscanf(s + n + 1, "%3d", &ms);
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	return (int64_t)timegm(&tm) * 1000 + ms;
}

/* "3.2s", "4m05s", "1h02m" from started_at to finished_at (or now); "-" before it started. */
static const char *
cli_deploy_duration(json_t *dep, char *out, size_t outlen)
{
	int64_t a = cli_deploy_time_ms(dep, "started_at"),
		b = cli_deploy_time_ms(dep, "finished_at");
	int64_t d;

	if (a < 0) {
		snprintf(out, outlen, "-");
		return out;
	}
	if (b < 0)
		b = (int64_t)time(NULL) * 1000;
	d = b > a ? b - a : 0;
	if (d < 60000)
		snprintf(out, outlen, "%" PRId64 ".%" PRId64 "s", d / 1000, d % 1000 / 100);
	else if (d < 3600000)
		snprintf(out, outlen, "%" PRId64 "m%02" PRId64 "s", d / 60000, d % 60000 / 1000);
	else
		snprintf(out, outlen, "%" PRId64 "h%02" PRId64 "m", d / 3600000,
			 d % 3600000 / 60000);
	return out;
}

/* The first 12 characters of the commit, or "-". */
static const char *
cli_deploy_commit(json_t *dep, char *out, size_t outlen)
{
	snprintf(out, outlen, "%.12s", cli_jstr(dep, "commit_hash"));
	return out;
}

/* The first line of the commit message (cut to outlen), or "-". */
static const char *
cli_deploy_subject(json_t *dep, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s", cli_jstr(dep, "commit_message"));
	out[strcspn(out, "\r\n")] = '\0';
	return out;
}

static const char *
cli_deploy_exit(json_t *dep, char *out, size_t outlen)
{
	json_t *v = json_object_get(dep, "exit_code");

	if (json_is_integer(v))
		snprintf(out, outlen, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
	else
		snprintf(out, outlen, "-");
	return out;
}

/* Prints one log line as it was written; on a terminal, its control characters (but tab) as
 * '?' so that a script's output cannot drive the terminal. */
static void
cli_deploy_print_line(struct cli *cli, json_t *item)
{
	const char *text = cli_jstr(item, "text");
	char *copy, *p;

	if (cli->json) {
		char *s = json_dumps(item, JSON_COMPACT);

		if (s != NULL)
			printf("%s\n", s);
		free(s);
		return;
	}
	if (!cli->tty || (copy = strdup(text)) == NULL) {
		printf("%s\n", text);
		return;
	}
	for (p = copy; *p != '\0'; p++)
		if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f)
			*p = '?';
	printf("%s\n", copy);
	free(copy);
}

/*
 * Prints the log lines of deployment id after line *after (all pages), moving *after on.
 * Returns 0 or CLI_EXIT_FAIL; *status gets the HTTP status of a failed call (0: no answer).
 */
static int
cli_deploy_drain(struct cli *cli, int64_t id, int64_t *after, int print, long *status)
{
	json_t *page = NULL, *items, *item, *next;
	char path[128];
	size_t i;
	int ret = 0;

	for (;;) {
		snprintf(path, sizeof(path),
			 "/deployments/%" PRId64 "/log?limit=200&after=%" PRId64, id, *after);
		if ((ret = cli_api(cli, "GET", path, NULL, &page, status)) != 0)
			break;
		items = json_object_get(page, "items");
		json_array_foreach(items, i, item)
		{
			/* The cursor is the line's id: each line once, in the order it arrived. */
			if (cli_jint(item, "seq") <= *after)
				continue;
			*after = cli_jint(item, "seq");
			if (print)
				cli_deploy_print_line(cli, item);
		}
		next = json_object_get(page, "next");
		if (json_array_size(items) == 0 || !json_is_integer(next) ||
		    json_integer_value(next) < *after)
			break;
		json_decref(page);
		page = NULL;
	}
	json_decref(page);
	fflush(stdout);
	return ret;
}

/* "deployment 7 finished in 3.2s: commit 1a2b3c4d5e6f (v2), exit code 0". */
static void
cli_deploy_print_result(json_t *dep)
{
	char dur[32], commit[16], subject[80], code[32];

	cli_deploy_subject(dep, subject, sizeof(subject));
	printf("deployment %" PRId64 " %s %s %s: commit %s%s%s%s, exit code %s\n",
	       cli_jint(dep, "id"), cli_jstr(dep, "state"),
	       strcmp(cli_jstr(dep, "state"), "finished") == 0 ? "in" : "after",
	       cli_deploy_duration(dep, dur, sizeof(dur)),
	       cli_deploy_commit(dep, commit, sizeof(commit)),
	       strcmp(subject, "-") != 0 ? " (" : "", strcmp(subject, "-") != 0 ? subject : "",
	       strcmp(subject, "-") != 0 ? ")" : "", cli_deploy_exit(dep, code, sizeof(code)));
}

int
cli_deploy_follow(struct cli *cli, int64_t id, json_t **out)
{
	json_t *dep = NULL;
	char path[64], seen[512] = "", now[512];
	const char *state = "";
	int64_t after = 0, before;
	int ret, failures = 0, done = 0, ever = 0, print = !(cli->json && out != NULL);
	long status, delay = CLI_DEPLOY_POLL_MS, poll = CLI_DEPLOY_POLL_MS;

	if (out != NULL)
		*out = NULL;
	snprintf(path, sizeof(path), "/deployments/%" PRId64, id);
	while (!done) {
		/* The state first, then the lines: every line stored before the deployment
		 * ended is in the drain that follows the read that saw it end. */
		json_decref(dep);
		dep = NULL;
		before = after;
		if ((ret = cli_api(cli, "GET", path, NULL, &dep, &status)) == 0) {
			state = cli_jstr(dep, "state");
			done = cli_deploy_terminal(state);
			snprintf(now, sizeof(now), "%s: %s", state, cli_jstr(dep, "message"));
			if (strcmp(now, seen) != 0)
				before = -1; /* something changed: poll soon again */
			if (!cli->json && !done && strcmp(now, seen) != 0)
				fprintf(stderr, "deployment %" PRId64 ": %s%s%s\n", id, state,
					json_is_string(json_object_get(dep, "message")) ? ": " : "",
					json_is_string(json_object_get(dep, "message"))
					    ? cli_jstr(dep, "message")
					    : "");
			snprintf(seen, sizeof(seen), "%s", now);
			ret = cli_deploy_drain(cli, id, &after, print, &status);
		}
		if (ret != 0) {
			/* An API that answered (404, 401...) will answer the same again; one
			 * that stopped answering may be restarting: retry for a while. */
			if (!ever || status != 0 || ++failures > CLI_DEPLOY_RETRIES)
				goto out;
			done = 0;
			fprintf(stderr, "stoke: deployment %" PRId64 ": retrying in %ld ms\n", id,
				delay);
			cli_deploy_sleep_ms(delay);
			delay = delay * 2 > 5000 ? 5000 : delay * 2;
			continue;
		}
		ever = 1;
		failures = 0;
		delay = CLI_DEPLOY_POLL_MS;
		/* Quick polls while lines come, slower ones while the script is quiet. */
		if (after != before)
			poll = CLI_DEPLOY_POLL_MS;
		else if ((poll = poll * 3 / 2) > CLI_DEPLOY_POLL_IDLE_MS)
			poll = CLI_DEPLOY_POLL_IDLE_MS;
		if (!done)
			cli_deploy_sleep_ms(poll);
	}
	if (out != NULL)
		*out = json_incref(dep);
	else if (cli->json)
		cli_print_json(cli, dep);
	if (!cli->json)
		cli_deploy_print_result(dep);
	if (strcmp(state, "finished") == 0) {
		ret = CLI_EXIT_OK;
	} else if (strcmp(state, "cancelled") == 0) {
		ret = cli_error("deployment %" PRId64 " was cancelled", id);
	} else {
		const char *err = cli_jstr(dep, "error");

		ret =
		    cli_error("deployment %" PRId64 " failed%s%s", id,
			      strcmp(err, "-") != 0 ? ": " : "", strcmp(err, "-") != 0 ? err : "");
	}
out:
	json_decref(dep);
	return ret;
}

/* The id of a site named by id or domain (GET /sites/{ref}). */
static int
cli_deploy_site_id(struct cli *cli, const char *ref, int64_t *id, json_t **site)
{
	struct buf path;
	json_t *s = NULL;
	int ret;

	buf_init(&path, 4096);
	if (buf_puts(&path, "/sites") != 0 || cli_path_add(&path, ref) != 0) {
		ret = cli_usage_error("site: name too long");
		goto out;
	}
	if ((ret = cli_api(cli, "GET", path.data, NULL, &s, NULL)) != 0)
		goto out;
	*id = cli_jint(s, "id");
	if (site != NULL) {
		*site = s;
		s = NULL;
	}
out:
	json_decref(s);
	buf_fini(&path);
	return ret;
}

static int
cli_deploy_run(struct cli *cli, const struct cli_args *args)
{
	const char *commit = cli_args_get(args, "commit");
	int follow = cli_args_get(args, "follow") != NULL;
	json_t *body = NULL, *res = NULL;
	struct buf path;
	int64_t dep, job;
	int ret;

	buf_init(&path, 4096);
	if (commit != NULL && commit[0] == '\0') {
		ret = cli_usage_error("--commit: give a commit hash");
		goto out;
	}
	if (buf_puts(&path, "/sites") != 0 || cli_path_add(&path, args->pos[0]) != 0 ||
	    buf_puts(&path, "/deploy") != 0) {
		ret = cli_usage_error("site: name too long");
		goto out;
	}
	body = commit != NULL ? json_pack("{s:s}", "commit", commit) : json_object();
	if (body == NULL) {
		ret = cli_usage_error("--commit: not UTF-8 text");
		goto out;
	}
	if ((ret = cli_api(cli, "POST", path.data, body, &res, NULL)) != 0)
		goto out;
	dep = cli_jint(res, "deployment_id");
	job = cli_jint(res, "job_id");
	if (follow) {
		if (!cli->json)
			fprintf(stderr, "deployment %" PRId64 " queued for %s (job %" PRId64 ")\n",
				dep, args->pos[0], job);
		ret = cli_deploy_follow(cli, dep, NULL);
	} else if (cli->json) {
		ret = cli_print_json(cli, res);
	} else {
		printf("deployment %" PRId64 " queued for %s (job %" PRId64
		       "); follow it: stoke deploy log %" PRId64 " --follow\n",
		       dep, args->pos[0], job, dep);
	}
out:
	json_decref(body);
	json_decref(res);
	buf_fini(&path);
	return ret;
}

static int
cli_deploy_list(struct cli *cli, const struct cli_args *args)
{
	static const char *const hdr[] = {"ID",	     "STATE", "TRIGGER",  "COMMIT",
					  "MESSAGE", "EXIT",  "DURATION", "CREATED"};
	struct cli_table *t = NULL;
	json_t *list = NULL, *dep;
	char path[96];
	int64_t site = 0;
	size_t i;
	int ret;

	if ((ret = cli_deploy_site_id(cli, args->pos[0], &site, NULL)) != 0)
		return ret;
	snprintf(path, sizeof(path), "/deployments?site=%" PRId64, site);
	if ((ret = cli_api_list(cli, path, &list)) != 0)
		goto out;
	if (cli->json) {
		ret = cli_print_json(cli, list);
		goto out;
	}
	if ((t = cli_table_new(8, hdr)) == NULL)
		goto nomem;
	json_array_foreach(json_object_get(list, "items"), i, dep)
	{
		char id[32], commit[16], subject[48], code[32], dur[32], created[32];
		const char *row[8];

		snprintf(id, sizeof(id), "%" PRId64, cli_jint(dep, "id"));
		row[0] = id;
		row[1] = cli_jstr(dep, "state");
		row[2] = cli_jstr(dep, "trigger");
		row[3] = cli_deploy_commit(dep, commit, sizeof(commit));
		row[4] = cli_deploy_subject(dep, subject, sizeof(subject));
		row[5] = cli_deploy_exit(dep, code, sizeof(code));
		row[6] = cli_deploy_duration(dep, dur, sizeof(dur));
		row[7] = cli_age(dep, "created_at", created, sizeof(created));
		if (cli_table_add(t, row) != 0)
			goto nomem;
	}
	cli_table_print(t, stdout);
	ret = CLI_EXIT_OK;
	goto out;
nomem:
	ret = cli_error("out of memory");
out:
	cli_table_free(t);
	json_decref(list);
	return ret;
}

static int
cli_deploy_show(struct cli *cli, const struct cli_args *args)
{
	json_t *dep = NULL;
	char path[64], dur[32], code[32], age[32];
	const char *state;
	int64_t id;
	int ret;

	if ((ret = cli_parse_id(args->pos[0], "deployment", &id)) != 0)
		return ret;
	snprintf(path, sizeof(path), "/deployments/%" PRId64, id);
	if ((ret = cli_api(cli, "GET", path, NULL, &dep, NULL)) != 0)
		goto out;
	if (cli->json) {
		ret = cli_print_json(cli, dep);
		goto out;
	}
	state = cli_jstr(dep, "state");
	cli_field("id:", "%" PRId64, cli_jint(dep, "id"));
	cli_field("site:", "%" PRId64, cli_jint(dep, "site_id"));
	if (cli_deploy_terminal(state) || !json_is_string(json_object_get(dep, "message")))
		cli_field("state:", "%s", state);
	else
		cli_field("state:", "%s %" PRId64 "%%: %s", state, cli_jint(dep, "progress"),
			  cli_jstr(dep, "message"));
	if (json_is_string(json_object_get(dep, "error")))
		cli_field("error:", "%s", cli_jstr(dep, "error"));
	cli_field("trigger:", "%s (by %s)", cli_jstr(dep, "trigger"), cli_jstr(dep, "actor"));
	cli_field("commit:", "%s", cli_jstr(dep, "commit_hash"));
	if (json_is_string(json_object_get(dep, "commit_message"))) {
		char subject[256];

		cli_field("message:", "%s", cli_deploy_subject(dep, subject, sizeof(subject)));
	}
	if (json_is_string(json_object_get(dep, "commit_author")))
		cli_field("author:", "%s", cli_jstr(dep, "commit_author"));
	if (json_is_string(json_object_get(dep, "delivery_id")))
		cli_field("delivery:", "%s", cli_jstr(dep, "delivery_id"));
	cli_field("exit code:", "%s", cli_deploy_exit(dep, code, sizeof(code)));
	cli_field("release:", "%s", cli_jstr(dep, "release"));
	cli_field("job:", "%" PRId64, cli_jint(dep, "job_id"));
	cli_field("created:", "%s (%s)", cli_jstr(dep, "created_at"),
		  cli_age(dep, "created_at", age, sizeof(age)));
	cli_field("started:", "%s", cli_jstr(dep, "started_at"));
	cli_field("finished:", "%s", cli_jstr(dep, "finished_at"));
	cli_field("duration:", "%s", cli_deploy_duration(dep, dur, sizeof(dur)));
out:
	json_decref(dep);
	return ret;
}

static int
cli_deploy_log(struct cli *cli, const struct cli_args *args)
{
	json_t *list = NULL;
	char path[64];
	int64_t id, after = 0;
	int ret;

	if ((ret = cli_parse_id(args->pos[0], "deployment", &id)) != 0)
		return ret;
	if (cli_args_get(args, "follow") != NULL)
		return cli_deploy_follow(cli, id, NULL);
	if (cli->json) {
		snprintf(path, sizeof(path), "/deployments/%" PRId64 "/log", id);
		if ((ret = cli_api_list(cli, path, &list)) == 0)
			ret = cli_print_json(cli, list);
		json_decref(list);
		return ret;
	}
	return cli_deploy_drain(cli, id, &after, 1, NULL);
}

static int
cli_deploy_cancel(struct cli *cli, const struct cli_args *args)
{
	json_t *res = NULL, *dep = NULL;
	char path[96];
	int64_t id;
	int ret;

	if ((ret = cli_parse_id(args->pos[0], "deployment", &id)) != 0)
		return ret;
	snprintf(path, sizeof(path), "/deployments/%" PRId64 "/cancel", id);
	if ((ret = cli_api(cli, "POST", path, NULL, &res, NULL)) != 0)
		goto out;
	if (cli->json) {
		ret = cli_print_json(cli, res);
		goto out;
	}
	snprintf(path, sizeof(path), "/deployments/%" PRId64, id);
	if (cli_api(cli, "GET", path, NULL, &dep, NULL) == 0 &&
	    strcmp(cli_jstr(dep, "state"), "cancelled") == 0)
		printf("deployment %" PRId64 " cancelled\n", id);
	else
		printf("deployment %" PRId64 ": cancel requested (job %" PRId64 ")\n", id,
		       cli_jint(res, "job_id"));
out:
	json_decref(res);
	json_decref(dep);
	return ret;
}

static const struct cli_cmd cli_deploy_cmds[] = {
    {"", "commit= follow", 1, 1, "SITE [--commit SHA] [--follow]",
     "deploy a site (--follow: its log live; exits 1 unless it finished)", cli_deploy_run},
    {"list", "", 1, 1, "SITE", "a site's deployments", cli_deploy_list},
    {"show", "", 1, 1, "ID", "a deployment: state, commit, duration, exit code", cli_deploy_show},
    {"log", "follow", 1, 1, "ID [--follow]", "a deployment's output (--follow: until it ends)",
     cli_deploy_log},
    {"cancel", "", 1, 1, "ID", "cancel a waiting or running deployment", cli_deploy_cancel},
};

const struct cli_family cli_deploy_family = {
    "deploy",
    "deployments",
    cli_deploy_cmds,
    sizeof(cli_deploy_cmds) / sizeof(cli_deploy_cmds[0]),
};
