/*
 * cli_site.c: `stoke site create|list|show|script|env|activate|deactivate|delete|rollback`.
 * create prints the secrets the API shows only once (webhook secret, CI deploy URL) and the
 * deploy key to add to the git host; --wait follows the site's job (cli_job_follow) and the
 * first deployment (cli_deploy_follow). Never prints environment values. Deployments are
 * cli_deploy.c's. stoke.c dispatches here through cli_site_family.
 */
#include "cli.h"
#include "err.h"
#include "http_client.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define CLI_SITE_FILE_MAX (1024 * 1024) /* the API takes bodies up to 1 MiB */

/* "/sites/<ref>" (+ suffix) into path. Returns 0 or a usage error. */
static int
cli_site_path(struct buf *path, const char *ref, const char *suffix)
{
	if (buf_puts(path, "/sites") != 0 || cli_path_add(path, ref) != 0 ||
	    (suffix != NULL && buf_puts(path, suffix) != 0))
		return cli_usage_error("site: name too long");
	return 0;
}

static int
cli_site_get(struct cli *cli, const char *ref, json_t **site)
{
	struct buf path;
	int ret;

	buf_init(&path, 4096);
	if ((ret = cli_site_path(&path, ref, NULL)) == 0)
		ret = cli_api(cli, "GET", path.data, NULL, site, NULL);
	buf_fini(&path);
	return ret;
}

/* Reads a file ("-": stdin) of at most CLI_SITE_FILE_MAX bytes into *out (NUL-terminated).
 * Refuses NUL bytes and text that is not UTF-8 (JSON could not carry it). */
static int
cli_site_read_file(const char *name, char **out)
{
	FILE *f = strcmp(name, "-") == 0 ? stdin : fopen(name, "r");
	const char *label = f == stdin ? "stdin" : name;
	char *text = NULL;
	size_t len = 0, n;
	json_t *probe;
	int ret;

	*out = NULL;
	if (f == NULL)
		return cli_usage_error("%s: %s", name, strerror(errno));
	if ((text = malloc(CLI_SITE_FILE_MAX + 1)) == NULL) {
		ret = cli_error("out of memory");
		goto out;
	}
	while (len <= CLI_SITE_FILE_MAX &&
	       (n = fread(text + len, 1, CLI_SITE_FILE_MAX + 1 - len, f)) > 0)
		len += n;
	if (ferror(f)) {
		ret = cli_usage_error("%s: read error", label);
		goto out;
	}
	if (len > CLI_SITE_FILE_MAX) {
		ret = cli_usage_error("%s: over %d bytes", label, CLI_SITE_FILE_MAX);
		goto out;
	}
	text[len] = '\0';
	if (strlen(text) != len) {
		ret = cli_usage_error("%s: holds a NUL byte (not a text file?)", label);
		goto out;
	}
	if ((probe = json_stringn(text, len)) == NULL) {
		ret = cli_usage_error("%s: not UTF-8 text", label);
		goto out;
	}
	json_decref(probe);
	*out = text;
	text = NULL;
	ret = 0;
out:
	free(text);
	if (f != NULL && f != stdin)
		fclose(f);
	return ret;
}

/* A decimal count option (--keep, --release); a usage error otherwise. */
static int
cli_site_count(const char *opt, const char *s, int64_t *v)
{
	char *end;
	long long n;

	errno = 0;
	n = s[0] >= '0' && s[0] <= '9' ? strtoll(s, &end, 10) : -1;
	if (n < 1 || errno != 0 || *end != '\0')
		return cli_usage_error("--%s: not a positive number: '%s'", opt, s);
	*v = n;
	return 0;
}

/* The name of server id from a /servers list, or NULL. */
static const char *
cli_site_server_name(json_t *servers, int64_t id)
{
	json_t *srv;
	size_t i;

	json_array_foreach(json_object_get(servers, "items"), i, srv)
	{
		if (cli_jint(srv, "id") == id)
			return cli_jstr(srv, "name");
	}
	return NULL;
}

/* "web-1 (1)", or "1" when the name is not known. */
static const char *
cli_site_server(json_t *servers, json_t *site, char *out, size_t outlen)
{
	int64_t id = cli_jint(site, "server_id");
	const char *name = cli_site_server_name(servers, id);

	if (name != NULL)
		snprintf(out, outlen, "%s (%" PRId64 ")", name, id);
	else
		snprintf(out, outlen, "%" PRId64, id);
	return out;
}

/* "a.test, b.test" from the aliases array. */
static const char *
cli_site_aliases(json_t *site, char *out, size_t outlen)
{
	json_t *a;
	size_t i, n = 0;

	out[0] = '\0';
	json_array_foreach(json_object_get(site, "aliases"), i, a)
	{
		if (!json_is_string(a))
			continue;
		n += (size_t)snprintf(out + n, n < outlen ? outlen - n : 0, "%s%s",
				      n > 0 ? ", " : "", json_string_value(a));
		if (n >= outlen)
			break;
	}
	return out[0] != '\0' ? out : "-";
}

static void
cli_site_state(json_t *site, char *out, size_t outlen)
{
	const char *state = cli_jstr(site, "state");
	json_t *msg = json_object_get(site, "message");

	if (strcmp(state, "creating") == 0 || strcmp(state, "deleting") == 0)
		snprintf(out, outlen, "%s %" PRId64 "%%%s%s", state, cli_jint(site, "progress"),
			 json_is_string(msg) ? ": " : "",
			 json_is_string(msg) ? cli_jstr(site, "message") : "");
	else
		snprintf(out, outlen, "%s", state);
}

static void
cli_site_print(struct cli *cli, json_t *site, json_t *servers)
{
	json_t *item, *list;
	char buf[1024], age[32];
	size_t i;

	cli_field("id:", "%" PRId64, cli_jint(site, "id"));
	cli_field("domain:", "%s", cli_jstr(site, "domain"));
	cli_field("aliases:", "%s", cli_site_aliases(site, buf, sizeof(buf)));
	cli_field("server:", "%s", cli_site_server(servers, site, buf, sizeof(buf)));
	cli_site_state(site, buf, sizeof(buf));
	cli_field("state:", "%s", buf);
	if (json_is_string(json_object_get(site, "error")))
		cli_field("error:", "%s (step %s, %s)", cli_jstr(site, "error"),
			  cli_jstr(site, "failed_step"),
			  cli_age(site, "failed_at", age, sizeof(age)));
	if (json_is_string(json_object_get(site, "repo_url")))
		cli_field("repository:", "%s (branch %s)", cli_jstr(site, "repo_url"),
			  cli_jstr(site, "branch"));
	else
		cli_field("repository:", "none (the deploy script runs alone)");
	cli_field("web dir:", "%s", cli_jstr(site, "web_dir"));
	if (json_is_true(json_object_get(site, "zero_downtime")))
		cli_field("releases:", "zero-downtime, keeps %" PRId64,
			  cli_jint(site, "keep_releases"));
	else
		cli_field("releases:", "none (deploys in place)");
	cli_field("timeout:", "%" PRId64 "s per deployment",
		  cli_jint(site, "deploy_timeout_ms") / 1000);
	cli_field("deploy key:", "%s", cli_jstr(site, "deploy_key_public"));
	cli_field("webhook:", "%s/hooks/%" PRId64, http_client_url(cli->http),
		  cli_jint(site, "id"));
	cli_field("created:", "%s (%s)", cli_jstr(site, "created_at"),
		  cli_age(site, "created_at", age, sizeof(age)));
	cli_field("updated:", "%s (%s)", cli_jstr(site, "updated_at"),
		  cli_age(site, "updated_at", age, sizeof(age)));
	list = json_object_get(site, "checklist");
	if (json_array_size(list) == 0)
		return;
	printf("checklist:\n");
	json_array_foreach(list, i, item)
	{
		cli_field(json_is_true(json_object_get(item, "done")) ? "  [x]" : "  [ ]", "%s",
			  cli_jstr(item, "item"));
	}
}

/* The servers, to name them (only for people: --json shows ids). */
static int
cli_site_servers(struct cli *cli, json_t **servers)
{
	*servers = NULL;
	if (cli->json)
		return 0;
	return cli_api_list(cli, "/servers", servers);
}

/* After a site job: the site's first deployment (trigger "create"), 0 when none. */
static int
cli_site_first_deployment(struct cli *cli, int64_t site, int64_t *dep)
{
	json_t *list = NULL, *d;
	char path[96];
	size_t i;
	int ret;

	*dep = 0;
	snprintf(path, sizeof(path), "/deployments?site=%" PRId64, site);
	if ((ret = cli_api_list(cli, path, &list)) != 0)
		return ret;
	json_array_foreach(json_object_get(list, "items"), i, d)
	{
		if (strcmp(cli_jstr(d, "trigger"), "create") == 0) {
			*dep = cli_jint(d, "id");
			break;
		}
	}
	json_decref(list);
	return 0;
}

static void
cli_site_print_secrets(struct cli *cli, json_t *res, int64_t id)
{
	const char *url = http_client_url(cli->http);

	printf("\nDeploy key: add it to your git host as a read-only deploy key (GitHub: "
	       "Settings > Deploy keys; GitLab: Settings > Repository > Deploy keys):\n  %s\n",
	       cli_jstr(res, "deploy_key_public"));
	printf("\nWebhook: add it to the repository for push events, content type "
	       "application/json\n(shown only this once):\n");
	printf("  URL:     %s/hooks/%" PRId64 "\n", url, id);
	printf("  secret:  %s\n", cli_jstr(res, "webhook_secret"));
	printf("\nCI deploy URL: a POST to it deploys the tip of the site's branch "
	       "(shown only this once):\n  %s/hooks/deploy/%s\n\n",
	       url, cli_jstr(res, "deploy_token"));
	fflush(stdout);
}

static int
cli_site_create(struct cli *cli, const struct cli_args *args)
{
	const char *server = args->pos[0], *v;
	json_t *body = NULL, *res = NULL, *aliases = NULL, *job = NULL, *dep = NULL, *site = NULL;
	json_t *servers = NULL;
	char *script = NULL, url[4096];
	int wait = cli_args_get(args, "wait") != NULL;
	int64_t id, job_id, dep_id = 0, keep;
	size_t n = strspn(server, "0123456789");
	int i, ret;

	if ((body = json_object()) == NULL || (aliases = json_array()) == NULL)
		goto nomem;
	if (n > 0 && server[n] == '\0') {
		int64_t sid;

		if ((ret = cli_parse_id(server, "server", &sid)) != 0)
			goto out;
		json_object_set_new(body, "server", json_integer(sid));
	} else {
		if (json_object_set_new(body, "server", json_string(server)) != 0) {
			ret = cli_usage_error("server: not UTF-8 text");
			goto out;
		}
	}
	if (json_object_set_new(body, "domain", json_string(args->pos[1])) != 0) {
		ret = cli_usage_error("domain: not UTF-8 text");
		goto out;
	}
	for (i = 0; i < args->nopt; i++) {
		if (strcmp(args->opt_name[i], "alias") != 0)
			continue;
		if (json_array_append_new(aliases, json_string(args->opt_val[i])) != 0) {
			ret = cli_usage_error("--alias: not UTF-8 text");
			goto out;
		}
	}
	if (json_array_size(aliases) > 0 && json_object_set(body, "aliases", aliases) != 0)
		goto nomem;
	if ((v = cli_args_get(args, "repo")) != NULL &&
	    json_object_set_new(body, "repo_url", json_string(v)) != 0) {
		ret = cli_usage_error("--repo: not UTF-8 text");
		goto out;
	}
	if ((v = cli_args_get(args, "branch")) != NULL &&
	    json_object_set_new(body, "branch", json_string(v)) != 0) {
		ret = cli_usage_error("--branch: not UTF-8 text");
		goto out;
	}
	if ((v = cli_args_get(args, "web-dir")) != NULL &&
	    json_object_set_new(body, "web_dir", json_string(v)) != 0) {
		ret = cli_usage_error("--web-dir: not UTF-8 text");
		goto out;
	}
	if (cli_args_get(args, "zero-downtime") != NULL)
		json_object_set_new(body, "zero_downtime", json_true());
	if ((v = cli_args_get(args, "keep")) != NULL) {
		if ((ret = cli_site_count("keep", v, &keep)) != 0)
			goto out;
		json_object_set_new(body, "keep_releases", json_integer(keep));
	}
	if ((v = cli_args_get(args, "script")) != NULL) {
		if ((ret = cli_site_read_file(v, &script)) != 0)
			goto out;
		json_object_set_new(body, "deploy_script", json_string(script));
	}
	if ((v = cli_args_get(args, "known-hosts")) != NULL) {
		char *kh = NULL;

		if ((ret = cli_site_read_file(v, &kh)) != 0)
			goto out;
		json_object_set_new(body, "known_hosts", json_string(kh));
		free(kh);
	}
	if ((ret = cli_api(cli, "POST", "/sites", body, &res, NULL)) != 0)
		goto out;
	id = cli_jint(json_object_get(res, "site"), "id");
	job_id = cli_jint(res, "job_id");
	/* The URLs to give the git host and CI, beside the secrets the API shows once. */
	snprintf(url, sizeof(url), "%s/hooks/%" PRId64, http_client_url(cli->http), id);
	json_object_set_new(res, "webhook_url", json_string(url));
	snprintf(url, sizeof(url), "%s/hooks/deploy/%s", http_client_url(cli->http),
		 cli_jstr(res, "deploy_token"));
	json_object_set_new(res, "deploy_url", json_string(url));
	if (cli->json && !wait) {
		ret = cli_print_json(cli, res);
		goto out;
	}
	if (!cli->json) {
		if ((ret = cli_site_servers(cli, &servers)) != 0)
			goto out;
		printf("site %" PRId64 " %s created (job %" PRId64 ")\n", id, args->pos[1], job_id);
		cli_site_print(cli, json_object_get(res, "site"), servers);
		cli_site_print_secrets(cli, res, id);
	}
	if (!wait) {
		if (!cli->json)
			printf("follow it: stoke job wait %" PRId64 "\n", job_id);
		goto out;
	}
	/* The secrets are out before the wait: an interrupted wait loses nothing. */
	if ((ret = cli_job_follow(cli, job_id, "done", &job)) != 0)
		goto json;
	if ((ret = cli_site_first_deployment(cli, id, &dep_id)) != 0)
		goto json;
	if (dep_id != 0) {
		if (!cli->json)
			printf("first deployment %" PRId64 ":\n", dep_id);
		if ((ret = cli_deploy_follow(cli, dep_id, &dep)) != 0)
			cli_error("site %" PRId64 " is created, but its first deployment did not "
				  "finish: see stoke deploy show %" PRId64,
				  id, dep_id);
	}
	if (!cli->json && ret == 0)
		printf("site %" PRId64 " %s is active\n", id, args->pos[1]);
json:
	if (cli->json) {
		char ref[32];

		snprintf(ref, sizeof(ref), "%" PRId64, id);
		if (cli_site_get(cli, ref, &site) == 0)
			json_object_set(res, "site", site);
		json_object_set(res, "job", job ? job : json_null());
		json_object_set(res, "deployment", dep ? dep : json_null());
		cli_print_json(cli, res);
	}
	goto out;
nomem:
	ret = cli_error("out of memory");
out:
	json_decref(body);
	json_decref(aliases);
	json_decref(res);
	json_decref(job);
	json_decref(dep);
	json_decref(site);
	json_decref(servers);
	free(script);
	return ret;
}

static int
cli_site_list(struct cli *cli, const struct cli_args *args)
{
	static const char *const hdr[] = {"ID",		"DOMAIN", "SERVER",   "STATE",
					  "REPOSITORY", "BRANCH", "RELEASES", "CREATED"};
	struct cli_table *t = NULL;
	json_t *list = NULL, *servers = NULL, *site, *srv;
	const char *want = cli_args_get(args, "server");
	char path[96];
	size_t i;
	int ret;

	/* ?server= takes an id: find a server given by name in the list. */
	if ((ret = cli_api_list(cli, "/servers", &servers)) != 0)
		goto out;
	snprintf(path, sizeof(path), "/sites");
	if (want != NULL) {
		int64_t sid = 0;

		json_array_foreach(json_object_get(servers, "items"), i, srv)
		{
			char id[32];

			snprintf(id, sizeof(id), "%" PRId64, cli_jint(srv, "id"));
			if (strcmp(cli_jstr(srv, "name"), want) == 0 || strcmp(id, want) == 0)
				sid = cli_jint(srv, "id");
		}
		if (sid == 0) {
			ret = cli_error("no server named %s", want);
			goto out;
		}
		snprintf(path, sizeof(path), "/sites?server=%" PRId64, sid);
	}
	if ((ret = cli_api_list(cli, path, &list)) != 0)
		goto out;
	if (cli->json) {
		ret = cli_print_json(cli, list);
		goto out;
	}
	if ((t = cli_table_new(8, hdr)) == NULL)
		goto nomem;
	json_array_foreach(json_object_get(list, "items"), i, site)
	{
		char id[32], state[300], server[128], created[32];
		const char *row[8];

		snprintf(id, sizeof(id), "%" PRId64, cli_jint(site, "id"));
		cli_site_state(site, state, sizeof(state));
		row[0] = id;
		row[1] = cli_jstr(site, "domain");
		row[2] = cli_site_server_name(servers, cli_jint(site, "server_id"));
		if (row[2] == NULL) {
			snprintf(server, sizeof(server), "%" PRId64, cli_jint(site, "server_id"));
			row[2] = server;
		}
		row[3] = state;
		row[4] = cli_jstr(site, "repo_url");
		row[5] = json_is_string(json_object_get(site, "repo_url"))
			     ? cli_jstr(site, "branch")
			     : "-";
		row[6] = json_is_true(json_object_get(site, "zero_downtime")) ? "zero-downtime"
									      : "in place";
		row[7] = cli_age(site, "created_at", created, sizeof(created));
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
	json_decref(servers);
	return ret;
}

static int
cli_site_show(struct cli *cli, const struct cli_args *args)
{
	json_t *site = NULL, *servers = NULL;
	int ret;

	if ((ret = cli_site_get(cli, args->pos[0], &site)) != 0)
		goto out;
	if (cli->json) {
		ret = cli_print_json(cli, site);
		goto out;
	}
	if ((ret = cli_site_servers(cli, &servers)) != 0)
		goto out;
	cli_site_print(cli, site, servers);
out:
	json_decref(site);
	json_decref(servers);
	return ret;
}

/* Prints the script as it is stored; on a terminal without its control characters (but
 * newline and tab) and ending with a newline. */
static void
cli_site_print_script(struct cli *cli, const char *script)
{
	size_t n = strlen(script);
	char *copy, *p;

	if (!cli->tty || (copy = strdup(script)) == NULL) {
		fputs(script, stdout);
		return;
	}
	for (p = copy; *p != '\0'; p++)
		if (((unsigned char)*p < 0x20 && *p != '\t' && *p != '\n') || *p == 0x7f)
			*p = '?';
	fputs(copy, stdout);
	if (n > 0 && copy[n - 1] != '\n')
		fputc('\n', stdout);
	free(copy);
}

static int
cli_site_script(struct cli *cli, const struct cli_args *args)
{
	json_t *site = NULL, *body = NULL, *res = NULL, *s;
	char *script = NULL;
	struct buf path;
	int ret;

	buf_init(&path, 4096);
	if (args->npos < 2) {
		if ((ret = cli_site_get(cli, args->pos[0], &site)) != 0)
			goto out;
		s = json_object_get(site, "deploy_script");
		if (cli->json)
			ret = cli_print_json(cli, site);
		else
			cli_site_print_script(cli, json_is_string(s) ? json_string_value(s) : "");
		goto out;
	}
	if ((ret = cli_site_read_file(args->pos[1], &script)) != 0)
		goto out;
	if ((body = json_pack("{s:s}", "script", script)) == NULL) {
		ret = cli_error("out of memory");
		goto out;
	}
	if ((ret = cli_site_path(&path, args->pos[0], "/script")) != 0 ||
	    (ret = cli_api(cli, "PUT", path.data, body, &res, NULL)) != 0)
		goto out;
	site = json_incref(json_object_get(res, "site"));
	if (cli->json)
		ret = cli_print_json(cli, res);
	else
		printf("site %" PRId64 " %s: deploy script saved (%zu bytes); the next deployment "
		       "runs it\n",
		       cli_jint(site, "id"), cli_jstr(site, "domain"), strlen(script));
out:
	json_decref(site);
	json_decref(body);
	json_decref(res);
	free(script);
	buf_fini(&path);
	return ret;
}

/* stoke site known-hosts SITE [FILE|-|--clear]: shows or sets the host keys its SSH
 * repository is checked against. */
static int
cli_site_known_hosts(struct cli *cli, const struct cli_args *args)
{
	json_t *site = NULL, *body = NULL, *res = NULL, *kh;
	char *text = NULL;
	struct buf path;
	int ret, clear = cli_args_get(args, "clear") != NULL;

	buf_init(&path, 4096);
	if (args->npos < 2 && !clear) {
		if ((ret = cli_site_get(cli, args->pos[0], &site)) != 0)
			goto out;
		kh = json_object_get(site, "known_hosts");
		if (cli->json)
			ret = cli_print_json(cli, site);
		else if (json_is_string(kh))
			fputs(json_string_value(kh), stdout);
		else
			fprintf(stderr, "site %s has no known hosts\n", cli_jstr(site, "domain"));
		goto out;
	}
	if (clear && args->npos > 1) {
		ret = cli_usage_error("give a FILE or --clear, not both");
		goto out;
	}
	if (!clear && (ret = cli_site_read_file(args->pos[1], &text)) != 0)
		goto out;
	if ((body = json_pack("{s:s}", "known_hosts", text ? text : "")) == NULL) {
		ret = cli_error("out of memory");
		goto out;
	}
	if ((ret = cli_site_path(&path, args->pos[0], "/known_hosts")) != 0 ||
	    (ret = cli_api(cli, "PUT", path.data, body, &res, NULL)) != 0)
		goto out;
	site = json_incref(json_object_get(res, "site"));
	if (cli->json)
		ret = cli_print_json(cli, res);
	else if (clear)
		printf("site %" PRId64 " %s: known hosts removed\n", cli_jint(site, "id"),
		       cli_jstr(site, "domain"));
	else
		printf("site %" PRId64 " %s: known hosts saved; the next deployment checks the "
		       "repository's host key against them\n",
		       cli_jint(site, "id"), cli_jstr(site, "domain"));
out:
	json_decref(site);
	json_decref(body);
	json_decref(res);
	free(text);
	buf_fini(&path);
	return ret;
}

/* Adds "KEY=VALUE" to env; a usage error naming where it came from otherwise. */
static int
cli_site_env_add(json_t *env, const char *pair, const char *where)
{
	const char *eq = strchr(pair, '=');
	char key[160];
	json_t *v;

	if (eq == NULL || eq == pair)
		return cli_usage_error("%s: expected KEY=VALUE, got '%.40s'", where, pair);
	if ((size_t)(eq - pair) >= sizeof(key))
		return cli_usage_error("%s: the name is too long", where);
	memcpy(key, pair, (size_t)(eq - pair));
	key[eq - pair] = '\0';
	if (json_object_get(env, key) != NULL)
		return cli_usage_error("%s: %s is given twice", where, key);
	/* The value is never printed, not even in errors. */
	if ((v = json_string(eq + 1)) == NULL)
		return cli_usage_error("%s: the value of %s is not UTF-8 text", where, key);
	if (json_object_set_new(env, key, v) != 0)
		return cli_usage_error("%s: %s: not a valid name", where, key);
	return 0;
}

/* KEY=VALUE lines from stdin; blank lines and lines starting with '#' are skipped. */
static int
cli_site_env_stdin(json_t *env)
{
	char *text = NULL, *line, *next, where[32];
	int ret = 0, lineno = 0;

	if ((ret = cli_site_read_file("-", &text)) != 0)
		return ret;
	for (line = text; line != NULL && *line != '\0'; line = next) {
		lineno++;
		if ((next = strchr(line, '\n')) != NULL)
			*next++ = '\0';
		line[strcspn(line, "\r")] = '\0';
		if (line[0] == '\0' || line[0] == '#')
			continue;
		snprintf(where, sizeof(where), "stdin:%d", lineno);
		if ((ret = cli_site_env_add(env, line, where)) != 0)
			break;
	}
	explicit_bzero(text, strlen(text));
	free(text);
	return ret;
}

static int
cli_site_env(struct cli *cli, const struct cli_args *args)
{
	json_t *env = NULL, *body = NULL, *res = NULL, *site;
	int clear = cli_args_get(args, "clear") != NULL;
	const char *key;
	json_t *v;
	struct buf path;
	int i, ret, first = 1;

	buf_init(&path, 4096);
	if ((env = json_object()) == NULL) {
		ret = cli_error("out of memory");
		goto out;
	}
	if (clear && args->npos > 1) {
		ret = cli_usage_error("--clear empties the environment: give no KEY=VALUE with it");
		goto out;
	}
	if (!clear && args->npos < 2) {
		ret = cli_usage_error("give KEY=VALUE... (they replace the whole environment), "
				      "'-' to read KEY=VALUE lines from stdin, or --clear");
		goto out;
	}
	if (args->npos == 2 && strcmp(args->pos[1], "-") == 0) {
		if ((ret = cli_site_env_stdin(env)) != 0)
			goto out;
	} else {
		for (i = 1; i < args->npos; i++)
			if ((ret = cli_site_env_add(env, args->pos[i], "argument")) != 0)
				goto out;
	}
	if ((body = json_pack("{s:O}", "env", env)) == NULL) {
		ret = cli_error("out of memory");
		goto out;
	}
	if ((ret = cli_site_path(&path, args->pos[0], "/env")) != 0 ||
	    (ret = cli_api(cli, "PUT", path.data, body, &res, NULL)) != 0)
		goto out;
	if (cli->json) {
		ret = cli_print_json(cli, res);
		goto out;
	}
	site = json_object_get(res, "site");
	printf("site %" PRId64 " %s: environment set, %" PRId64 " variable%s", cli_jint(site, "id"),
	       cli_jstr(site, "domain"), cli_jint(res, "env_count"),
	       cli_jint(res, "env_count") == 1 ? "" : "s");
	json_object_foreach(env, key, v)
	{
		printf("%s%s", first ? " (" : ", ", key);
		first = 0;
	}
	printf("%s; the next deployment gets it\n", first ? "" : ")");
out:
	/* The values are secrets: wipe them before the memory goes back. */
	json_object_foreach(env, key, v)
	{
		if (json_is_string(v))
			explicit_bzero((char *)json_string_value(v), json_string_length(v));
	}
	json_decref(env);
	json_decref(body);
	json_decref(res);
	buf_fini(&path);
	return ret;
}

/*
 * A site job: method path-suffix (body may be NULL), then --wait follows the job. `doing` is
 * said when it is queued ("deactivating"), `done` when it ended ("is inactive").
 */
static int
cli_site_job(struct cli *cli, const struct cli_args *args, const char *method, const char *suffix,
	     json_t *body, const char *doing, const char *done)
{
	json_t *res = NULL, *job = NULL, *site = NULL;
	int wait = cli_args_get(args, "wait") != NULL, deleting = strcmp(method, "DELETE") == 0;
	int64_t id, job_id;
	char domain[300];
	struct buf path;
	int ret;

	buf_init(&path, 4096);
	if ((ret = cli_site_path(&path, args->pos[0], suffix)) != 0 ||
	    (ret = cli_api(cli, method, path.data, body, &res, NULL)) != 0)
		goto out;
	id = cli_jint(json_object_get(res, "site"), "id");
	job_id = cli_jint(res, "job_id");
	snprintf(domain, sizeof(domain), "%s", cli_jstr(json_object_get(res, "site"), "domain"));
	if (!wait) {
		if (cli->json)
			ret = cli_print_json(cli, res);
		else
			printf("site %" PRId64 " %s: %s (job %" PRId64
			       "; follow it: stoke job wait "
			       "%" PRId64 ")\n",
			       id, domain, doing, job_id, job_id);
		goto out;
	}
	if (!cli->json)
		printf("site %" PRId64 " %s: %s (job %" PRId64 ")\n", id, domain, doing, job_id);
	ret = cli_job_follow(cli, job_id, "done", &job);
	if (cli->json) {
		/* The site as it is now (a deleted one is gone). */
		if (ret == 0 && !deleting && cli_site_get(cli, args->pos[0], &site) == 0)
			json_object_set(res, "site", site);
		json_object_set(res, "job", job ? job : json_null());
		cli_print_json(cli, res);
	} else if (ret == 0) {
		printf("site %" PRId64 " %s %s\n", id, domain, done);
	}
out:
	json_decref(res);
	json_decref(job);
	json_decref(site);
	buf_fini(&path);
	return ret;
}

static int
cli_site_activate(struct cli *cli, const struct cli_args *args)
{
	return cli_site_job(cli, args, "POST", "/activate", NULL, "activating", "is active");
}

static int
cli_site_deactivate(struct cli *cli, const struct cli_args *args)
{
	return cli_site_job(cli, args, "POST", "/deactivate", NULL, "deactivating",
			    "is inactive (not served)");
}

static int
cli_site_delete(struct cli *cli, const struct cli_args *args)
{
	return cli_site_job(cli, args, "DELETE", NULL, NULL, "deleting", "deleted");
}

static int
cli_site_rollback(struct cli *cli, const struct cli_args *args)
{
	const char *v = cli_args_get(args, "release");
	json_t *body = NULL;
	int64_t release;
	char doing[64];
	int ret;

	if (v != NULL) {
		if ((ret = cli_site_count("release", v, &release)) != 0)
			return ret;
		body = json_pack("{s:I}", "release", (json_int_t)release);
		snprintf(doing, sizeof(doing), "rolling back to release %" PRId64, release);
	} else {
		body = json_object();
		snprintf(doing, sizeof(doing), "rolling back to the release before");
	}
	if (body == NULL)
		return cli_error("out of memory");
	ret = cli_site_job(cli, args, "POST", "/rollback", body, doing, "rolled back");
	json_decref(body);
	return ret;
}

static const struct cli_cmd cli_site_cmds[] = {
    {"create", "alias= repo= branch= web-dir= zero-downtime keep= script= known-hosts= wait", 2, 2,
     "SERVER DOMAIN [--alias A]... [--repo URL --branch B] [--known-hosts FILE] [--web-dir DIR] "
     "[--zero-downtime] [--keep N] [--script FILE] [--wait]",
     "create a site; prints its deploy key, webhook and CI deploy URL", cli_site_create},
    {"list", "server=", 0, 0, "[--server S]", "list sites", cli_site_list},
    {"show", "", 1, 1, "SITE", "a site: state, repository, deploy key, webhook URL", cli_site_show},
    {"script", "", 1, 2, "SITE [FILE|-]", "print the deploy script, or set it from FILE or stdin",
     cli_site_script},
    {"known-hosts", "clear", 1, 2, "SITE [FILE|-|--clear]",
     "print, set or remove the host keys its SSH repository is checked against",
     cli_site_known_hosts},
    {"env", "clear", 1, CLI_MAX_ARGS, "SITE KEY=VALUE...|-|--clear",
     "replace the environment (values never printed; '-': lines from stdin)", cli_site_env},
    {"activate", "wait", 1, 1, "SITE [--wait]", "serve the site again", cli_site_activate},
    {"deactivate", "wait", 1, 1, "SITE [--wait]", "stop serving the site (nginx site disabled)",
     cli_site_deactivate},
    {"delete", "wait", 1, 1, "SITE [--wait]", "remove the site: nginx site, files, record",
     cli_site_delete},
    {"rollback", "release= wait", 1, 1, "SITE [--release N] [--wait]",
     "serve an earlier release (deployment N; default: the one before)", cli_site_rollback},
};

const struct cli_family cli_site_family = {
    "site",
    "sites",
    cli_site_cmds,
    sizeof(cli_site_cmds) / sizeof(cli_site_cmds[0]),
};
