/*
 * cli_job.c: `stoke job list|show|wait|cancel|retry`. `wait` (and --wait) follows a job's
 * events live (GET /events, resumed with Last-Event-ID when the stream drops), draws its
 * progress, and exits 0 when the job is done, 1 when it failed or was cancelled.
 * stoke.c dispatches here through cli_job_family.
 */
#include "cli.h"
#include "err.h"
#include "http_client.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int
cli_job_terminal(const char *state)
{
	return strcmp(state, "done") == 0 || strcmp(state, "failed") == 0 ||
	       strcmp(state, "failed_dirty") == 0 || strcmp(state, "cancelled") == 0;
}

/* "server 4", or "-" when the job is about no resource. */
static const char *
cli_job_resource(json_t *job, char *out, size_t outlen)
{
	json_t *res = json_object_get(job, "resource");

	if (!json_is_object(res))
		return "-";
	snprintf(out, outlen, "%s %" PRId64, cli_jstr(res, "kind"), cli_jint(res, "id"));
	return out;
}

/* The job's error without a leading "<failed step>: " (it is shown beside it). */
static const char *
cli_job_error(json_t *job)
{
	const char *e = cli_jstr(job, "error"), *step = cli_jstr(job, "failed_step");
	size_t n = strlen(step);

	if (strcmp(step, "-") != 0 && strncmp(e, step, n) == 0 && e[n] == ':' && e[n + 1] == ' ')
		return e + n + 2;
	return e;
}

static int
cli_job_get(struct cli *cli, int64_t id, json_t **job)
{
	char path[64];

	snprintf(path, sizeof(path), "/jobs/%" PRId64, id);
	return cli_api(cli, "GET", path, NULL, job, NULL);
}

static int
cli_job_list(struct cli *cli, const struct cli_args *args)
{
	static const char *const hdr[] = {"ID",	  "TYPE",     "STATE",	  "PROGRESS",
					  "STEP", "ATTEMPTS", "RESOURCE", "CREATED"};
	struct cli_table *t = NULL;
	json_t *list = NULL, *job;
	struct buf path;
	const char *v;
	size_t i;
	int ret;

	buf_init(&path, 4096);
	if (buf_puts(&path, "/jobs") != 0)
		goto nomem;
	if ((v = cli_args_get(args, "state")) != NULL && cli_query_add(&path, "state", v) != 0)
		goto nomem;
	if ((ret = cli_api_list(cli, path.data, &list)) != 0)
		goto out;
	if (cli->json) {
		ret = cli_print_json(cli, list);
		goto out;
	}
	if ((t = cli_table_new(8, hdr)) == NULL)
		goto nomem;
	json_array_foreach(json_object_get(list, "items"), i, job)
	{
		char id[32], progress[16], attempts[48], res[96], created[32];
		const char *row[8];

		snprintf(id, sizeof(id), "%" PRId64, cli_jint(job, "id"));
		snprintf(progress, sizeof(progress), "%" PRId64 "%%", cli_jint(job, "progress"));
		snprintf(attempts, sizeof(attempts), "%" PRId64 "/%" PRId64,
			 cli_jint(job, "attempts"), cli_jint(job, "max_attempts"));
		row[0] = id;
		row[1] = cli_jstr(job, "type");
		row[2] = cli_jstr(job, "state");
		row[3] = progress;
		row[4] = cli_jstr(job, "step");
		row[5] = attempts;
		row[6] = cli_job_resource(job, res, sizeof(res));
		row[7] = cli_age(job, "created_at", created, sizeof(created));
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
	buf_fini(&path);
	return ret;
}

static void
cli_job_print(json_t *job)
{
	const char *state = cli_jstr(job, "state"), *failed_step = cli_jstr(job, "failed_step");
	char res[96], age[32];
	json_t *step;
	size_t i;

	cli_field("id:", "%" PRId64, cli_jint(job, "id"));
	cli_field("type:", "%s (queue %s)", cli_jstr(job, "type"), cli_jstr(job, "queue"));
	cli_field("state:", "%s%s", state,
		  json_is_true(json_object_get(job, "cancel_requested")) && !cli_job_terminal(state)
		      ? " (cancel requested)"
		      : "");
	cli_field("progress:", "%" PRId64 "%% %s", cli_jint(job, "progress"),
		  json_is_string(json_object_get(job, "message")) ? cli_jstr(job, "message") : "");
	cli_field("step:", "%s", cli_jstr(job, "step"));
	cli_field("attempts:", "%" PRId64 " of %" PRId64, cli_jint(job, "attempts"),
		  cli_jint(job, "max_attempts"));
	if (json_is_string(json_object_get(job, "error")))
		cli_field("error:", "%s (step %s)", cli_job_error(job), failed_step);
	cli_field("resource:", "%s", cli_job_resource(job, res, sizeof(res)));
	cli_field("actor:", "%s", cli_jstr(job, "actor"));
	if (strcmp(state, "queued") == 0)
		cli_field("run after:", "%s (%s)", cli_jstr(job, "run_after"),
			  cli_age(job, "run_after", age, sizeof(age)));
	cli_field("created:", "%s (%s)", cli_jstr(job, "created_at"),
		  cli_age(job, "created_at", age, sizeof(age)));
	cli_field("started:", "%s", cli_jstr(job, "started_at"));
	cli_field("finished:", "%s", cli_jstr(job, "finished_at"));
	if (json_array_size(json_object_get(job, "steps")) == 0)
		return;
	printf("steps:\n");
	json_array_foreach(json_object_get(job, "steps"), i, step)
	{
		const char *name = cli_jstr(step, "name");
		char label[64];

		snprintf(label, sizeof(label), "  %s", cli_jstr(step, "state"));
		cli_field(label, "%s%s", name,
			  strcmp(name, failed_step) == 0 && strcmp(state, "failed") == 0
			      ? "  <- failed here"
			      : "");
	}
}

static int
cli_job_show(struct cli *cli, const struct cli_args *args)
{
	json_t *job = NULL;
	int64_t id;
	int ret;

	if ((ret = cli_parse_id(args->pos[0], "job", &id)) != 0)
		return ret;
	if ((ret = cli_job_get(cli, id, &job)) != 0)
		goto out;
	if (cli->json)
		ret = cli_print_json(cli, job);
	else
		cli_job_print(job);
out:
	json_decref(job);
	return ret;
}

/* Following a job: what the event callbacks share. */
struct cli_job_follow {
	int64_t id;
	struct cli_progress progress;
	int show;	  /* draw progress (not --json) */
	int check;	  /* a job.state event said it finished: look at the job */
	char last_id[64]; /* of the last event handled */
};

static int
cli_job_event_cb(const struct http_sse_event *ev, void *arg)
{
	struct cli_job_follow *f = arg;
	json_t *e, *data, *v;
	const char *kind;

	snprintf(f->last_id, sizeof(f->last_id), "%s", ev->id);
	if ((e = json_loads(ev->data, 0, NULL)) == NULL)
		return 0;
	kind = cli_jstr(e, "kind");
	data = json_object_get(e, "data");
	/* Only this job's events matter, whatever the server's filter let through. */
	if (strcmp(cli_jstr(e, "resource_kind"), "job") != 0 || cli_jint(e, "resource_id") != f->id)
		goto out;
	if (strcmp(kind, "job.progress") == 0 && f->show) {
		v = json_object_get(data, "message");
		cli_progress_update(&f->progress, (int)cli_jint(data, "progress"),
				    json_is_string(v) ? json_string_value(v) : f->progress.message);
	} else if (strcmp(kind, "job.state") == 0 && cli_job_terminal(cli_jstr(data, "state"))) {
		/* Stop the stream to read the job itself: this event may be an earlier
		 * attempt's, and the job has the failing step and the error. */
		f->check = 1;
	}
out:
	json_decref(e);
	return f->check;
}

static void
cli_job_drop_cb(const char *why, void *arg)
{
	struct cli_job_follow *f = arg;

	if (f->show)
		cli_progress_note(&f->progress,
				  "job %" PRId64 ": event stream lost (%s); reconnecting", f->id,
				  why);
}

/* The id of the job's newest event so far ("0" when it has none), from the audit trail. */
static int
cli_job_last_event(struct cli *cli, int64_t id, char *out, size_t outlen)
{
	json_t *list = NULL, *ev;
	char path[128];
	int64_t max = 0;
	size_t i;
	int ret;

	snprintf(path, sizeof(path), "/audit?resource_kind=job&resource_id=%" PRId64, id);
	if ((ret = cli_api_list(cli, path, &list)) != 0)
		return ret;
	json_array_foreach(json_object_get(list, "items"), i, ev)
	{
		if (cli_jint(ev, "id") > max)
			max = cli_jint(ev, "id");
	}
	json_decref(list);
	snprintf(out, outlen, "%" PRId64, max);
	return 0;
}

/* See cli.h. */
int
cli_job_follow(struct cli *cli, int64_t id, const char *want, json_t **out)
{
	struct cli_job_follow f;
	json_t *job = NULL, *msg;
	char path[128];
	const char *state;
	int ret;

	if (out != NULL)
		*out = NULL;
	memset(&f, 0, sizeof(f));
	f.id = id;
	f.show = !cli->json;
	cli_progress_init(&f.progress, stdout, cli->tty);
	/* Start after the events that already happened, then look at the job: whatever
	 * happens later is in the stream, and nothing from an earlier attempt is. */
	if ((ret = cli_job_last_event(cli, id, f.last_id, sizeof(f.last_id))) != 0)
		goto out;
	snprintf(path, sizeof(path), "/events?resource_kind=job&resource_id=%" PRId64, id);
	for (;;) {
		json_decref(job);
		job = NULL;
		if ((ret = cli_job_get(cli, id, &job)) != 0)
			goto out;
		state = cli_jstr(job, "state");
		msg = json_object_get(job, "message");
		/* No message yet (a queued job): its state says what is going on. */
		if (f.show && (!cli_job_terminal(state) || strcmp(state, "done") == 0))
			cli_progress_update(
			    &f.progress,
			    strcmp(state, "done") == 0 ? 100 : (int)cli_jint(job, "progress"),
			    json_is_string(msg) && json_string_length(msg) > 0
				? json_string_value(msg)
				: state);
		if (cli_job_terminal(state))
			break;
		f.check = 0;
		if ((ret = cli_api_events(cli, path, f.last_id, cli_job_event_cb, cli_job_drop_cb,
					  &f)) != 0)
			goto out;
	}
	cli_progress_end(&f.progress);
	if (out != NULL)
		*out = json_incref(job);
	else if (cli->json)
		cli_print_json(cli, job);
	if (strcmp(state, want) == 0) {
		if (!cli->json)
			printf("job %" PRId64 " %s\n", id, state);
		ret = CLI_EXIT_OK;
	} else if (strcmp(state, "failed") == 0) {
		if (json_is_string(json_object_get(job, "failed_step")))
			ret = cli_error("job %" PRId64 " failed at step %s: %s", id,
					cli_jstr(job, "failed_step"), cli_job_error(job));
		else
			ret = cli_error("job %" PRId64 " failed: %s", id, cli_jstr(job, "error"));
	} else if (strcmp(state, "failed_dirty") == 0) {
		ret = cli_error(
		    "job %" PRId64 " failed%s%s: %s; its undo has not finished: %s"
		    " (retried by itself; `stoke job retry %" PRId64 "` tries now)",
		    id, json_is_string(json_object_get(job, "failed_step")) ? " at step " : "",
		    json_is_string(json_object_get(job, "failed_step"))
			? cli_jstr(job, "failed_step")
			: "",
		    cli_job_error(job), cli_jstr(job, "message"), id);
	} else if (strcmp(state, "cancelled") == 0) {
		const char *why = cli_job_error(job);

		/* The error of a cancelled job is mostly just "cancelled". */
		if (strcmp(why, "-") == 0 || strcmp(why, "cancelled") == 0)
			ret = cli_error("job %" PRId64 " was cancelled", id);
		else
			ret = cli_error("job %" PRId64 " was cancelled: %s", id, why);
	} else {
		ret = cli_error("job %" PRId64 " finished (%s) before it could be cancelled", id,
				state);
	}
out:
	cli_progress_end(&f.progress);
	json_decref(job);
	return ret;
}

static int
cli_job_wait(struct cli *cli, const struct cli_args *args)
{
	int64_t id;
	int ret;

	if ((ret = cli_parse_id(args->pos[0], "job", &id)) != 0)
		return ret;
	return cli_job_follow(cli, id, "done", NULL);
}

/* POST /jobs/ID/<action>, then follow the job when --wait was given. */
static int
cli_job_action(struct cli *cli, const struct cli_args *args, const char *action, const char *want)
{
	json_t *res = NULL, *job;
	char path[96];
	int64_t id;
	int ret, wait = cli_args_get(args, "wait") != NULL;

	if ((ret = cli_parse_id(args->pos[0], "job", &id)) != 0)
		return ret;
	snprintf(path, sizeof(path), "/jobs/%" PRId64 "/%s", id, action);
	if ((ret = cli_api(cli, "POST", path, NULL, &res, NULL)) != 0)
		goto out;
	job = json_object_get(res, "job");
	if (wait) {
		if (!cli->json)
			printf("job %" PRId64 ": %s\n", id,
			       strcmp(action, "cancel") == 0 ? "cancel requested" : "queued again");
		ret = cli_job_follow(cli, id, want, NULL);
	} else if (cli->json) {
		ret = cli_print_json(cli, res);
	} else if (strcmp(action, "cancel") == 0) {
		if (strcmp(cli_jstr(job, "state"), "cancelled") == 0)
			printf("job %" PRId64 " cancelled\n", id);
		else
			printf("job %" PRId64 ": cancel requested\n", id);
	} else {
		printf("job %" PRId64 " queued again (%s)\n", id, cli_jstr(job, "state"));
	}
out:
	json_decref(res);
	return ret;
}

static int
cli_job_cancel(struct cli *cli, const struct cli_args *args)
{
	return cli_job_action(cli, args, "cancel", "cancelled");
}

static int
cli_job_retry(struct cli *cli, const struct cli_args *args)
{
	return cli_job_action(cli, args, "retry", "done");
}

static const struct cli_cmd cli_job_cmds[] = {
    {"list", "state=", 0, 0, "[--state S]", "list jobs", cli_job_list},
    {"show", "", 1, 1, "ID", "a job: state, steps, error, attempts", cli_job_show},
    {"wait", "", 1, 1, "ID", "follow a job's progress until it ends (0 when done)", cli_job_wait},
    {"cancel", "wait", 1, 1, "ID [--wait]", "cancel a job (--wait: until it has stopped)",
     cli_job_cancel},
    {"retry", "wait", 1, 1, "ID [--wait]", "retry a failed or cancelled job", cli_job_retry},
};

const struct cli_family cli_job_family = {
    "job",
    "jobs",
    cli_job_cmds,
    sizeof(cli_job_cmds) / sizeof(cli_job_cmds[0]),
};
