/*
 * cli_server_create.c: `stoke server create|delete|retry|log`: make a server at a provider
 * (or adopt an existing machine) and follow its provisioning live, remove it, resume a failed
 * provisioning, and read the provisioning log (GET /servers/{id}/log, polled with --follow).
 * Rows of cli_server_family's table (cli_server.c); jobs are followed with cli_job_follow.
 */
#include "cli.h"
#include "err.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CLI_SERVER_LOG_POLL_MS 300

static void
cli_server_sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0)
		;
}

/* "/servers/<escaped ref><suffix>" into path. Returns 0 or a usage error. */
static int
cli_server_path(struct buf *path, const char *ref, const char *suffix)
{
	if (buf_puts(path, "/servers") != 0 || cli_path_add(path, ref) != 0 ||
	    buf_puts(path, suffix) != 0)
		return cli_usage_error("server: name too long");
	return 0;
}

/* Sets body[key] to the string value of --opt, when given. */
static int
cli_server_opt_str(const struct cli_args *args, const char *opt, json_t *body, const char *key)
{
	const char *v = cli_args_get(args, opt);

	if (v == NULL)
		return 0;
	if (json_object_set_new(body, key, json_string(v)) != 0)
		return cli_usage_error("--%s: not UTF-8 text", opt);
	return 0;
}

/* The request body of POST /servers from the command line. */
static int
cli_server_body(const struct cli_args *args, json_t **out)
{
	static const char *const strs[][2] = {
	    {"provider", "provider"},
	    {"region", "region"},
	    {"size", "size"},
	    {"image", "image"},
	    {"ipv4", "ipv4"},
	    {"ssh-user", "ssh_user"},
	    {"host-key", "host_key_sha256"},
	};
	json_t *body = json_object(), *tags = json_array();
	const char *v;
	size_t k;
	int i, ret = 0;

	*out = NULL;
	if (body == NULL || tags == NULL) {
		ret = cli_error("out of memory");
		goto out;
	}
	if (json_object_set_new(body, "name", json_string(args->pos[0])) != 0) {
		ret = cli_usage_error("name: not UTF-8 text");
		goto out;
	}
	for (k = 0; k < sizeof(strs) / sizeof(strs[0]); k++)
		if ((ret = cli_server_opt_str(args, strs[k][0], body, strs[k][1])) != 0)
			goto out;
	if ((v = cli_args_get(args, "ssh-port")) != NULL) {
		char *end;
		long port = strtol(v, &end, 10);

		if (v[0] == '\0' || *end != '\0' || port < 1 || port > 65535) {
			ret = cli_usage_error("--ssh-port: must be 1..65535");
			goto out;
		}
		json_object_set_new(body, "ssh_port", json_integer(port));
	}
	for (i = 0; i < args->nopt; i++) {
		if (strcmp(args->opt_name[i], "tag") != 0)
			continue;
		if (json_array_append_new(tags, json_string(args->opt_val[i])) != 0) {
			ret = cli_usage_error("--tag: not UTF-8 text");
			goto out;
		}
	}
	if (json_array_size(tags) > 0 && json_object_set(body, "tags", tags) != 0) {
		ret = cli_error("out of memory");
		goto out;
	}
	*out = body;
	body = NULL;
out:
	json_decref(body);
	json_decref(tags);
	return ret;
}

/* After a finished provisioning: where the server is and how to reach it. */
static void
cli_server_print_ready(struct cli *cli, const char *ref)
{
	json_t *srv = NULL;
	struct buf path;

	buf_init(&path, 4096);
	if (cli_server_path(&path, ref, "") != 0 ||
	    cli_api(cli, "GET", path.data, NULL, &srv, NULL) != 0)
		goto out;
	printf("server %s is %s: %s, ssh %s@%s -p %" PRId64 ", agent %s\n", cli_jstr(srv, "name"),
	       cli_jstr(srv, "state"), cli_jstr(srv, "ipv4"), cli_jstr(srv, "ssh_user"),
	       cli_jstr(srv, "ipv4"), cli_jint(srv, "ssh_port"),
	       cli_jstr(json_object_get(srv, "agent"), "status"));
out:
	json_decref(srv);
	buf_fini(&path);
}

/* --wait: follow the job; on failure, say where the details are. */
static int
cli_server_wait(struct cli *cli, const char *ref, int64_t job, const char *what)
{
	int ret = cli_job_follow(cli, job, "done", NULL);

	if (ret != 0 && !cli->json)
		fprintf(stderr,
			"stoke: the %s log: stoke server log %s; after fixing the cause: stoke "
			"server retry %s --wait\n",
			what, ref, ref);
	return ret;
}

int
cli_server_create(struct cli *cli, const struct cli_args *args)
{
	const char *name = args->pos[0];
	int wait = cli_args_get(args, "wait") != NULL;
	json_t *body = NULL, *res = NULL, *srv;
	const char *key;
	int64_t job;
	int ret;

	if (cli_args_get(args, "provider") == NULL)
		return cli_usage_error("--provider: required (digitalocean, hetzner or custom)");
	if ((ret = cli_server_body(args, &body)) != 0)
		goto out;
	if ((ret = cli_api(cli, "POST", "/servers", body, &res, NULL)) != 0)
		goto out;
	srv = json_object_get(res, "server");
	job = cli_jint(res, "job_id");
	key = cli_jstr(srv, "ssh_public_key");
	if (cli->json && !wait) {
		ret = cli_print_json(cli, res);
		goto out;
	}
	if (!cli->json) {
		printf("server %" PRId64 " %s created at %s (job %" PRId64 ")\n",
		       cli_jint(srv, "id"), name, cli_jstr(srv, "provider"), job);
		if (strcmp(cli_jstr(srv, "provider"), "custom") == 0 && strcmp(key, "-") != 0) {
			printf(
			    "\nStoke logs in with this key. Add it to ~%s/.ssh/authorized_keys on "
			    "%s:\n\n  %s\n\n",
			    cli_jstr(srv, "ssh_user"), cli_jstr(srv, "ipv4"), key);
			printf("The job tries to log in a few times, then fails; once the key is "
			       "there, stoke server retry %s --wait resumes it.\n",
			       name);
		}
		if (!wait)
			printf("follow it: stoke server log %s --follow (or stoke job wait %" PRId64
			       ")\n",
			       name, job);
		fflush(stdout);
	}
	if (!wait)
		goto out;
	if ((ret = cli_server_wait(cli, name, job, "provisioning")) == 0 && !cli->json)
		cli_server_print_ready(cli, name);
out:
	json_decref(body);
	json_decref(res);
	return ret;
}

/* DELETE /servers/{ref} or POST /servers/{ref}/retry, then --wait. */
static int
cli_server_job(struct cli *cli, const struct cli_args *args, const char *method, const char *suffix,
	       const char *doing, const char *done)
{
	const char *ref = args->pos[0];
	int wait = cli_args_get(args, "wait") != NULL;
	json_t *res = NULL;
	struct buf path;
	int64_t job;
	int ret;

	buf_init(&path, 4096);
	if ((ret = cli_server_path(&path, ref, suffix)) != 0)
		goto out;
	if ((ret = cli_api(cli, method, path.data, NULL, &res, NULL)) != 0)
		goto out;
	job = cli_jint(res, "job_id");
	if (cli->json && !wait) {
		ret = cli_print_json(cli, res);
		goto out;
	}
	if (!cli->json) {
		printf("server %s: %s (job %" PRId64 ")\n", ref, doing, job);
		fflush(stdout);
	}
	if (!wait) {
		if (!cli->json)
			printf("follow it: stoke job wait %" PRId64 "\n", job);
		goto out;
	}
	if ((ret = cli_job_follow(cli, job, "done", NULL)) == 0) {
		if (!cli->json && strcmp(done, "active") == 0)
			cli_server_print_ready(cli, ref);
		else if (!cli->json)
			printf("server %s %s\n", ref, done);
	} else if (!cli->json) {
		fprintf(stderr, "stoke: see stoke server log %s\n", ref);
	}
out:
	json_decref(res);
	buf_fini(&path);
	return ret;
}

int
cli_server_delete(struct cli *cli, const struct cli_args *args)
{
	return cli_server_job(cli, args, "DELETE", "", "deleting", "deleted");
}

int
cli_server_retry(struct cli *cli, const struct cli_args *args)
{
	return cli_server_job(cli, args, "POST", "/retry", "provisioning resumed", "active");
}

/* Prints the log lines after *after (every page), moving *after on. */
static int
cli_server_log_drain(struct cli *cli, const char *base, int64_t *after)
{
	json_t *page = NULL, *items, *item, *next;
	struct buf path;
	size_t i;
	int ret = 0, last_page;

	buf_init(&path, 8192);
	for (;;) {
		buf_reset(&path);
		if (buf_printf(&path, "%s?limit=200&after=%" PRId64, base, *after) != 0) {
			ret = cli_error("out of memory");
			break;
		}
		if ((ret = cli_api(cli, "GET", path.data, NULL, &page, NULL)) != 0)
			break;
		items = json_object_get(page, "items");
		json_array_foreach(items, i, item)
		{
			if (cli_jint(item, "seq") <= *after)
				continue;
			*after = cli_jint(item, "seq");
			if (cli->json) {
				char *s = json_dumps(item, JSON_COMPACT);

				if (s != NULL)
					printf("%s\n", s);
				free(s);
			} else {
				printf("%s\n", cli_jstr(item, "text"));
			}
		}
		/* items and next belong to page: look at them before it goes. */
		next = json_object_get(page, "next");
		last_page = json_array_size(items) == 0 || !json_is_integer(next);
		json_decref(page);
		page = NULL;
		if (last_page)
			break;
	}
	json_decref(page);
	buf_fini(&path);
	fflush(stdout);
	return ret;
}

/* Whether the server's newest job (provisioning or deletion) still runs; 0 when there is
 * none, or the server is gone. */
static int
cli_server_busy(struct cli *cli, const char *ref, int *busy)
{
	json_t *srv = NULL, *list = NULL, *job;
	struct buf path;
	char q[96];
	const char *state;
	size_t i;
	int ret;
	long status = 0;

	*busy = 0;
	buf_init(&path, 4096);
	if ((ret = cli_server_path(&path, ref, "")) != 0)
		goto out;
	if (cli_api(cli, "GET", path.data, NULL, &srv, &status) != 0) {
		ret = status == 404 ? 0 : CLI_EXIT_FAIL; /* deleted: nothing more to come */
		goto out;
	}
	snprintf(q, sizeof(q), "/jobs?resource_kind=server&resource_id=%" PRId64,
		 cli_jint(srv, "id"));
	if ((ret = cli_api_list(cli, q, &list)) != 0)
		goto out;
	json_array_foreach(json_object_get(list, "items"), i, job)
	{
		state = cli_jstr(job, "state");
		if (strcmp(state, "queued") == 0 || strcmp(state, "running") == 0)
			*busy = 1;
	}
out:
	json_decref(srv);
	json_decref(list);
	buf_fini(&path);
	return ret;
}

int
cli_server_log(struct cli *cli, const struct cli_args *args)
{
	const char *ref = args->pos[0];
	int follow = cli_args_get(args, "follow") != NULL, busy = 1;
	struct buf base;
	int64_t after = 0;
	int ret;

	buf_init(&base, 4096);
	if ((ret = cli_server_path(&base, ref, "/log")) != 0)
		goto out;
	for (;;) {
		/* Whether it still runs first, then the lines: the last drain sees every
		 * line written before the job ended. */
		if (follow && (ret = cli_server_busy(cli, ref, &busy)) != 0)
			goto out;
		if ((ret = cli_server_log_drain(cli, base.data, &after)) != 0) {
			if (follow && !busy)
				ret = 0; /* deleted while we followed */
			goto out;
		}
		if (!follow || !busy)
			break;
		cli_server_sleep_ms(CLI_SERVER_LOG_POLL_MS);
	}
out:
	buf_fini(&base);
	return ret;
}
