/*
 * cli_key.c: `stoke key add|list|show|attach|detach|revoke|drift|sync`: SSH keys across the
 * fleet. Changes wait for their sync job (following its progress) and then show each
 * server's sync state; they exit 1 when a server failed. stoke.c dispatches here through
 * cli_key_family.
 */
#include "cli.h"
#include "err.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CLI_KEY_FILE_MAX (64 * 1024)

/* Reads a key file (or stdin for "-") into a malloc'd string. */
static char *
cli_key_read(const char *path)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	char *buf;
	size_t n = 0, r;

	if (f == NULL) {
		cli_error("%s: %s", path, strerror(errno));
		return NULL;
	}
	if ((buf = malloc(CLI_KEY_FILE_MAX + 1)) == NULL) {
		cli_error("out of memory");
		goto out;
	}
	while (n < CLI_KEY_FILE_MAX && (r = fread(buf + n, 1, CLI_KEY_FILE_MAX - n, f)) > 0)
		n += r;
	if (n == CLI_KEY_FILE_MAX && fgetc(f) != EOF) {
		cli_error("%s: larger than %d bytes: not a public key", path, CLI_KEY_FILE_MAX);
		free(buf);
		buf = NULL;
		goto out;
	}
	buf[n] = '\0';
	if (strlen(buf) != n) {
		cli_error("%s: contains a NUL byte: not a public key", path);
		free(buf);
		buf = NULL;
	}
out:
	if (f != stdin)
		fclose(f);
	return buf;
}

int
cli_selector(const struct cli_args *args, json_t *body, int required)
{
	const char *srv = cli_args_get(args, "server"), *tag = cli_args_get(args, "tag");
	int all = cli_args_get(args, "all") != NULL;

	if ((srv != NULL) + (tag != NULL) + all > 1)
		return cli_usage_error("give one of --server, --tag or --all");
	if (srv != NULL) {
		json_t *a = json_array();
		char *copy = strdup(srv), *save = NULL, *w;

		if (a == NULL || copy == NULL) {
			free(copy);
			json_decref(a);
			return cli_error("out of memory");
		}
		for (w = strtok_r(copy, ",", &save); w != NULL; w = strtok_r(NULL, ",", &save)) {
			char *end;
			long long id = strtoll(w, &end, 10);

			json_array_append_new(a, *end == '\0' && id > 0 ? json_integer(id)
									: json_string(w));
		}
		free(copy);
		json_object_set_new(body, "servers", a);
	} else if (tag != NULL) {
		json_object_set_new(body, "tag", json_string(tag));
	} else if (all) {
		json_object_set_new(body, "all", json_true());
	} else if (required) {
		return cli_usage_error("choose servers: --server A,B, --tag T or --all");
	}
	return 0;
}

static int
cli_key_add(struct cli *cli, const struct cli_args *args)
{
	json_t *body = NULL, *res = NULL, *k;
	char *text;
	int ret;

	if ((text = cli_key_read(args->pos[1])) == NULL)
		return CLI_EXIT_FAIL;
	body = json_pack("{s:s, s:s}", "name", args->pos[0], "public_key", text);
	free(text);
	if (body == NULL)
		return cli_error("%s: not UTF-8 text: not a public key", args->pos[1]);
	if ((ret = cli_api(cli, "POST", "/keys", body, &res, NULL)) != 0)
		goto out;
	if (cli->json) {
		ret = cli_print_json(cli, res);
		goto out;
	}
	k = json_object_get(res, "key");
	printf("key %" PRId64 " %s added: %s %s (%" PRId64 " bits)\n", cli_jint(k, "id"),
	       cli_jstr(k, "name"), cli_jstr(k, "fingerprint"), cli_jstr(k, "type"),
	       cli_jint(k, "bits"));
out:
	json_decref(body);
	json_decref(res);
	return ret;
}

static int
cli_key_list(struct cli *cli, const struct cli_args *args)
{
	static const char *const hdr[] = {"ID",		 "NAME",    "TYPE",   "BITS",
					  "FINGERPRINT", "COMMENT", "REVOKED"};
	struct cli_table *t = NULL;
	json_t *list = NULL, *k;
	size_t i;
	int ret;

	(void)args;
	if ((ret = cli_api_list(cli, "/keys", &list)) != 0)
		goto out;
	if (cli->json) {
		ret = cli_print_json(cli, list);
		goto out;
	}
	if ((t = cli_table_new(7, hdr)) == NULL)
		goto nomem;
	json_array_foreach(json_object_get(list, "items"), i, k)
	{
		char id[32], bits[32], rev[32];
		const char *row[7];

		snprintf(id, sizeof(id), "%" PRId64, cli_jint(k, "id"));
		snprintf(bits, sizeof(bits), "%" PRId64, cli_jint(k, "bits"));
		row[0] = id;
		row[1] = cli_jstr(k, "name");
		row[2] = cli_jstr(k, "type");
		row[3] = bits;
		row[4] = cli_jstr(k, "fingerprint");
		row[5] = cli_jstr(k, "comment");
		row[6] = cli_age(k, "revoked_at", rev, sizeof(rev));
		if (cli_table_add(t, row) != 0)
			goto nomem;
	}
	cli_table_print(t, stdout);
	goto out;
nomem:
	ret = cli_error("out of memory");
out:
	cli_table_free(t);
	json_decref(list);
	return ret;
}

/* Prints the key's per-server states; counts failed rows (of user, when given). */
static int
cli_key_servers(struct cli *cli, const char *key, const char *user, int *failed)
{
	static const char *const hdr[] = {"SERVER", "USER", "STATE", "AGENT", "DETAIL"};
	struct cli_table *t = NULL;
	json_t *list = NULL, *e;
	struct buf path;
	size_t i;
	int ret;

	*failed = 0;
	buf_init(&path, 4096);
	if (buf_puts(&path, "/keys") != 0 || cli_path_add(&path, key) != 0 ||
	    buf_puts(&path, "/servers") != 0) {
		ret = cli_error("out of memory");
		goto out;
	}
	if ((ret = cli_api_list(cli, path.data, &list)) != 0)
		goto out;
	json_array_foreach(json_object_get(list, "items"), i,
			   e) if (strcmp(cli_jstr(e, "state"), "failed") == 0 &&
				  (user == NULL || strcmp(cli_jstr(e, "user"), user) == 0))(
	    *failed)++;
	if (cli->json) {
		ret = cli_print_json(cli, list);
		goto out;
	}
	if ((t = cli_table_new(5, hdr)) == NULL) {
		ret = cli_error("out of memory");
		goto out;
	}
	json_array_foreach(json_object_get(list, "items"), i, e)
	{
		const char *state = cli_jstr(e, "state"), *row[5];
		char detail[600];

		if (strcmp(state, "failed") == 0)
			snprintf(detail, sizeof(detail), "%s", cli_jstr(e, "error"));
		else
			snprintf(detail, sizeof(detail), "%s",
				 json_is_string(json_object_get(e, "message"))
				     ? cli_jstr(e, "message")
				     : "");
		row[0] = cli_jstr(e, "server");
		row[1] = cli_jstr(e, "user");
		row[2] = state;
		row[3] = cli_jstr(e, "agent");
		row[4] = detail;
		if (cli_table_add(t, row) != 0) {
			ret = cli_error("out of memory");
			goto out;
		}
	}
	cli_table_print(t, stdout);
out:
	cli_table_free(t);
	json_decref(list);
	buf_fini(&path);
	return ret;
}

static int
cli_key_show(struct cli *cli, const struct cli_args *args)
{
	json_t *k = NULL;
	struct buf path;
	char age[32];
	int ret, failed;

	buf_init(&path, 4096);
	if (buf_puts(&path, "/keys") != 0 || cli_path_add(&path, args->pos[0]) != 0) {
		ret = cli_error("out of memory");
		goto out;
	}
	if ((ret = cli_api(cli, "GET", path.data, NULL, &k, NULL)) != 0)
		goto out;
	if (cli->json) {
		ret = cli_print_json(cli, k);
		goto out;
	}
	cli_field("id:", "%" PRId64, cli_jint(k, "id"));
	cli_field("name:", "%s", cli_jstr(k, "name"));
	cli_field("type:", "%s, %" PRId64 " bits", cli_jstr(k, "type"), cli_jint(k, "bits"));
	cli_field("fingerprint:", "%s", cli_jstr(k, "fingerprint"));
	cli_field("comment:", "%s", cli_jstr(k, "comment"));
	cli_field("added:", "%s (%s)", cli_jstr(k, "created_at"),
		  cli_age(k, "created_at", age, sizeof(age)));
	if (json_is_string(json_object_get(k, "revoked_at")))
		cli_field("revoked:", "%s (%s)", cli_jstr(k, "revoked_at"),
			  cli_age(k, "revoked_at", age, sizeof(age)));
	printf("\n");
	ret = cli_key_servers(cli, args->pos[0], NULL, &failed);
out:
	json_decref(k);
	buf_fini(&path);
	return ret;
}

/* Follows the job in res ({"job": {"id"}}) to its end. */
static int
cli_key_wait(struct cli *cli, json_t *res, json_t **job)
{
	json_t *j = json_object_get(res, "job");

	*job = NULL;
	if (!json_is_object(j))
		return CLI_EXIT_OK; /* nothing to do */
	return cli_job_follow(cli, cli_jint(j, "id"), "done", job);
}

/* attach, detach: POST /keys/KEY/ACTION, follow the job, show the servers. */
static int
cli_key_change(struct cli *cli, const struct cli_args *args, const char *action)
{
	json_t *body = json_object(), *res = NULL, *job = NULL;
	const char *user = cli_args_get(args, "user");
	struct buf path;
	int ret, failed = 0;

	buf_init(&path, 4096);
	if (body == NULL)
		return cli_error("out of memory");
	if (strcmp(action, "revoke") != 0) {
		if (user == NULL || user[0] == '\0') {
			ret = cli_usage_error("--user USER is required");
			goto out;
		}
		json_object_set_new(body, "user", json_string(user));
		if ((ret = cli_selector(args, body, 1)) != 0)
			goto out;
	}
	if (buf_puts(&path, "/keys") != 0 || cli_path_add(&path, args->pos[0]) != 0 ||
	    (strcmp(action, "revoke") != 0 && buf_printf(&path, "/%s", action) != 0)) {
		ret = cli_error("out of memory");
		goto out;
	}
	ret = cli_api(cli, strcmp(action, "revoke") == 0 ? "DELETE" : "POST", path.data,
		      strcmp(action, "revoke") == 0 ? NULL : body, &res, NULL);
	if (ret != 0)
		goto out;
	if (cli_args_get(args, "no-wait") != NULL) {
		if (cli->json)
			ret = cli_print_json(cli, res);
		else
			printf("key %s: %s queued (job %" PRId64 ")\n", args->pos[0], action,
			       cli_jint(json_object_get(res, "job"), "id"));
		goto out;
	}
	ret = cli_key_wait(cli, res, &job);
	if (ret == CLI_EXIT_OK || job != NULL) {
		int r2 = cli_key_servers(cli, args->pos[0], user, &failed);

		if (ret == CLI_EXIT_OK)
			ret = r2;
	}
	if (ret == CLI_EXIT_OK && failed > 0)
		ret = cli_error("key %s: %d server(s) failed to sync", args->pos[0], failed);
out:
	json_decref(job);
	json_decref(body);
	json_decref(res);
	buf_fini(&path);
	return ret;
}

static int
cli_key_attach(struct cli *cli, const struct cli_args *args)
{
	return cli_key_change(cli, args, "attach");
}

static int
cli_key_detach(struct cli *cli, const struct cli_args *args)
{
	return cli_key_change(cli, args, "detach");
}

static int
cli_key_revoke(struct cli *cli, const struct cli_args *args)
{
	return cli_key_change(cli, args, "revoke");
}

/* "3 missing, 1 extra in the block, 2 outside" */
static void
cli_key_drift_detail(json_t *d, char *out, size_t outlen)
{
	size_t m = json_array_size(json_object_get(d, "missing"));
	size_t x = json_array_size(json_object_get(d, "extra"));
	size_t o = json_array_size(json_object_get(d, "outside"));

	if (strcmp(cli_jstr(d, "state"), "error") == 0) {
		snprintf(out, outlen, "%s", cli_jstr(d, "error"));
		return;
	}
	snprintf(out, outlen, "%zu missing, %zu extra in the block, %zu outside it%s%s", m, x, o,
		 json_is_string(json_object_get(d, "error")) ? "; " : "",
		 json_is_string(json_object_get(d, "error")) ? cli_jstr(d, "error") : "");
}

static int
cli_key_drift(struct cli *cli, const struct cli_args *args)
{
	static const char *const hdr[] = {"SERVER", "USER", "STATE", "CHECKED", "DETAIL"};
	json_t *body = json_object(), *res = NULL, *job = NULL, *list = NULL, *d, *e;
	struct cli_table *t = NULL;
	size_t i, j, drift = 0;
	int ret;

	if (body == NULL)
		return cli_error("out of memory");
	if ((ret = cli_selector(args, body, 0)) != 0)
		goto out;
	if (cli_args_get(args, "check") != NULL) {
		if ((ret = cli_api(cli, "POST", "/keys/drift/check", body, &res, NULL)) != 0 ||
		    (ret = cli_key_wait(cli, res, &job)) != 0)
			goto out;
	}
	if ((ret = cli_api(cli, "GET", "/keys/drift", NULL, &list, NULL)) != 0)
		goto out;
	json_array_foreach(json_object_get(list, "items"), i, d) drift +=
	    strcmp(cli_jstr(d, "state"), "clean") != 0;
	if (cli->json) {
		cli_print_json(cli, list);
		ret = drift ? CLI_EXIT_FAIL : CLI_EXIT_OK;
		goto out;
	}
	if ((t = cli_table_new(5, hdr)) == NULL) {
		ret = cli_error("out of memory");
		goto out;
	}
	json_array_foreach(json_object_get(list, "items"), i, d)
	{
		char age[32], detail[600];
		const char *row[5];

		cli_key_drift_detail(d, detail, sizeof(detail));
		row[0] = cli_jstr(d, "server");
		row[1] = cli_jstr(d, "user");
		row[2] = cli_jstr(d, "state");
		row[3] = cli_age(d, "checked_at", age, sizeof(age));
		row[4] = strcmp(row[2], "clean") == 0 ? "" : detail;
		if (cli_table_add(t, row) != 0) {
			ret = cli_error("out of memory");
			goto out;
		}
	}
	cli_table_print(t, stdout);
	/* The keys themselves, for what drifted. */
	json_array_foreach(json_object_get(list, "items"), i, d)
	{
		static const char *const what[] = {"missing", "extra", "outside"};
		static const char *const why[] = {"missing from the block",
						  "in the block, not attached",
						  "outside the block (added by hand)"};

		for (size_t w = 0; w < 3; w++) {
			json_array_foreach(json_object_get(d, what[w]), j, e)
			{
				char line[200];
				const char *fp =
				    json_is_string(e) ? NULL : cli_jstr(e, "fingerprint");

				snprintf(line, sizeof(line), "%s",
					 json_is_string(e) ? json_string_value(e)
							   : cli_jstr(e, "line"));
				printf("%s %s: %s: %s%s%s\n", cli_jstr(d, "server"),
				       cli_jstr(d, "user"), why[w], fp && strcmp(fp, "-") ? fp : "",
				       fp && strcmp(fp, "-") ? " " : "", line);
			}
		}
	}
	if (drift > 0)
		ret = cli_error("%zu server/user pair(s) drifted from the desired keys; "
				"`stoke key sync` restores the managed blocks",
				drift);
out:
	cli_table_free(t);
	json_decref(body);
	json_decref(res);
	json_decref(job);
	json_decref(list);
	return ret;
}

static int
cli_key_sync(struct cli *cli, const struct cli_args *args)
{
	json_t *body = json_object(), *res = NULL, *job = NULL;
	int ret;

	if (body == NULL)
		return cli_error("out of memory");
	if ((ret = cli_selector(args, body, 0)) != 0 ||
	    (ret = cli_api(cli, "POST", "/keys/sync", body, &res, NULL)) != 0 ||
	    (ret = cli_key_wait(cli, res, &job)) != 0)
		goto out;
	if (cli->json)
		cli_print_json(cli, job);
out:
	json_decref(body);
	json_decref(res);
	json_decref(job);
	return ret;
}

static const struct cli_cmd cli_key_cmds[] = {
    {"add", "", 2, 2, "NAME FILE|-", "add a public key (validated, fingerprinted)", cli_key_add},
    {"list", "", 0, 0, "", "list keys with their fingerprints", cli_key_list},
    {"show", "", 1, 1, "KEY", "a key and its sync state on each server", cli_key_show},
    {"attach", "user= server= tag= all no-wait", 1, 1,
     "KEY --user U (--server A,B | --tag T | --all) [--no-wait]",
     "put a key in a user's authorized_keys on servers", cli_key_attach},
    {"detach", "user= server= tag= all no-wait", 1, 1,
     "KEY --user U (--server A,B | --tag T | --all) [--no-wait]",
     "take a key out of a user's authorized_keys on servers", cli_key_detach},
    {"revoke", "no-wait", 1, 1, "KEY [--no-wait]", "remove a key from every server, for good",
     cli_key_revoke},
    {"drift", "check server= tag= all", 0, 0, "[--check [--server A,B | --tag T]]",
     "keys changed outside Stoke (--check: ask the agents now); exit 1 on drift", cli_key_drift},
    {"sync", "server= tag= all", 0, 0, "[--server A,B | --tag T | --all]",
     "write the desired keys again (undoes hand edits of the managed block)", cli_key_sync},
};

const struct cli_family cli_key_family = {
    "key",
    "SSH keys across servers",
    cli_key_cmds,
    sizeof(cli_key_cmds) / sizeof(cli_key_cmds[0]),
};
