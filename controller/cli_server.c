/*
 * cli_server.c: `stoke server list|show` (and `set`, cli_server_set.c, in the table below):
 * the fleet as a table, and one server with its lifecycle state, agent presence and facts,
 * and checklist. Creating, deleting, retrying and the provisioning log are rows of the table
 * too (cli_server_create.c). stoke.c dispatches here through cli_server_family.
 */
#include "cli.h"
#include "err.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* "web, db" from a JSON array of strings. */
static void
cli_server_tags(json_t *srv, char *out, size_t outlen)
{
	json_t *tag;
	size_t i, n = 0;

	out[0] = '\0';
	json_array_foreach(json_object_get(srv, "tags"), i, tag)
	{
		if (!json_is_string(tag))
			continue;
		n += (size_t)snprintf(out + n, n < outlen ? outlen - n : 0, "%s%s",
				      i > 0 ? "," : "", json_string_value(tag));
		if (n >= outlen)
			break;
	}
}

/* "booting 40%" while it moves, the bare state when it is settled. */
static void
cli_server_state(json_t *srv, char *out, size_t outlen)
{
	const char *state = cli_jstr(srv, "state");
	int64_t progress = cli_jint(srv, "progress");

	if (strcmp(state, "active") == 0 || strcmp(state, "failed") == 0 ||
	    strcmp(state, "deleted") == 0 || progress <= 0)
		snprintf(out, outlen, "%s", state);
	else
		snprintf(out, outlen, "%s %" PRId64 "%%", state, progress);
}

static int
cli_server_list(struct cli *cli, const struct cli_args *args)
{
	static const char *const hdr[] = {"ID",	    "NAME", "STATE", "PROVIDER",
					  "REGION", "IPV4", "AGENT", "TAGS"};
	struct cli_table *t = NULL;
	json_t *list = NULL, *srv;
	struct buf path;
	const char *v;
	size_t i;
	int ret;

	buf_init(&path, 4096);
	if (buf_puts(&path, "/servers") != 0)
		goto nomem;
	if ((v = cli_args_get(args, "tag")) != NULL && cli_query_add(&path, "tag", v) != 0)
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
	json_array_foreach(json_object_get(list, "items"), i, srv)
	{
		char id[32], state[64], tags[256];
		const char *row[8];

		snprintf(id, sizeof(id), "%" PRId64, cli_jint(srv, "id"));
		cli_server_state(srv, state, sizeof(state));
		cli_server_tags(srv, tags, sizeof(tags));
		row[0] = id;
		row[1] = cli_jstr(srv, "name");
		row[2] = state;
		row[3] = cli_jstr(srv, "provider");
		row[4] = cli_jstr(srv, "region");
		row[5] = cli_jstr(srv, "ipv4");
		row[6] = cli_jstr(json_object_get(srv, "agent"), "status");
		row[7] = tags;
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

/* Facts are a JSON object, maybe nested: one "  key.sub: value" line per leaf. Below a few
 * levels, what is left is printed as JSON. */
static void
cli_server_facts(json_t *obj, const char *prefix, int depth)
{
	const char *key;
	json_t *v;
	char name[256], label[260], text[1024];

	json_object_foreach(obj, key, v)
	{
		snprintf(name, sizeof(name), "%s%s%s", prefix, prefix[0] != '\0' ? "." : "", key);
		if (json_is_object(v) && json_object_size(v) > 0 && depth < 4) {
			cli_server_facts(v, name, depth + 1);
			continue;
		}
		snprintf(label, sizeof(label), "  %s:", name);
		cli_field(label, "%s", cli_jtext(v, text, sizeof(text)));
	}
}

static void
cli_server_print(json_t *srv)
{
	json_t *agent = json_object_get(srv, "agent"), *item, *facts;
	char state[64], tags[512], age[32], age2[32];
	const char *s;
	size_t i;

	cli_server_state(srv, state, sizeof(state));
	cli_server_tags(srv, tags, sizeof(tags));
	cli_field("id:", "%" PRId64, cli_jint(srv, "id"));
	cli_field("name:", "%s", cli_jstr(srv, "name"));
	s = cli_jstr(srv, "message");
	cli_field("state:", "%s%s%s", state, strcmp(s, "-") != 0 ? ": " : "",
		  strcmp(s, "-") != 0 ? s : "");
	if (strcmp(cli_jstr(srv, "state"), "failed") == 0 ||
	    json_is_string(json_object_get(srv, "error")))
		cli_field("error:", "%s (step %s, %s)", cli_jstr(srv, "error"),
			  cli_jstr(srv, "failed_step"),
			  cli_age(srv, "failed_at", age, sizeof(age)));
	item = json_object_get(srv, "cleanup");
	if (json_is_object(item))
		cli_field("cleanup:",
			  "not finished (job %" PRId64 ", tried %" PRId64
			  " times, next at %s): %s; left at the provider: %s",
			  cli_jint(item, "job"), cli_jint(item, "tries"),
			  cli_jstr(item, "next_try"), cli_jstr(item, "error"),
			  cli_jstr(item, "provider_id"));
	cli_field("provider:", "%s, region %s, size %s, image %s", cli_jstr(srv, "provider"),
		  cli_jstr(srv, "region"), cli_jstr(srv, "size"), cli_jstr(srv, "image"));
	cli_field("provider id:", "%s", cli_jstr(srv, "provider_id"));
	cli_field("ipv4:", "%s", cli_jstr(srv, "ipv4"));
	cli_field("ssh:", "%s@%s port %" PRId64, cli_jstr(srv, "ssh_user"), cli_jstr(srv, "ipv4"),
		  cli_jint(srv, "ssh_port"));
	cli_field("host key:", "%s", cli_jstr(srv, "host_key_sha256"));
	cli_field("tags:", "%s", tags[0] != '\0' ? tags : "-");
	cli_field("sites:", "in %s, deployed by %s", cli_jstr(srv, "sites_root"),
		  cli_jstr(srv, "deploy_user"));
	cli_field("created:", "%s (%s)", cli_jstr(srv, "created_at"),
		  cli_age(srv, "created_at", age, sizeof(age)));
	cli_field("updated:", "%s (%s)", cli_jstr(srv, "updated_at"),
		  cli_age(srv, "updated_at", age2, sizeof(age2)));
	cli_field("agent:", "%s, version %s, last seen %s", cli_jstr(agent, "status"),
		  cli_jstr(agent, "version"), cli_age(agent, "last_seen", age, sizeof(age)));
	facts = json_object_get(agent, "facts");
	if (json_is_object(facts) && json_object_size(facts) > 0) {
		printf("facts:\n");
		cli_server_facts(facts, "", 0);
	}
	item = json_object_get(srv, "checklist");
	if (json_is_array(item) && json_array_size(item) > 0) {
		json_t *list = item;

		printf("checklist:\n");
		json_array_foreach(list, i, item)
		{
			int done = json_is_true(json_object_get(item, "done"));
			int required = json_is_true(json_object_get(item, "required"));
			json_t *detail = json_object_get(item, "detail");

			cli_field(done ? "  [x]" : "  [ ]", "%s%s%s%s", cli_jstr(item, "item"),
				  required || done ? "" : " (optional)",
				  json_is_string(detail) && json_string_length(detail) > 0 ? ": "
											   : "",
				  json_is_string(detail) ? json_string_value(detail) : "");
		}
	}
}

static int
cli_server_show(struct cli *cli, const struct cli_args *args)
{
	json_t *srv = NULL;
	struct buf path;
	int ret;

	buf_init(&path, 4096);
	if (buf_puts(&path, "/servers") != 0 || cli_path_add(&path, args->pos[0]) != 0) {
		ret = cli_usage_error("server: name too long");
		goto out;
	}
	if ((ret = cli_api(cli, "GET", path.data, NULL, &srv, NULL)) != 0)
		goto out;
	if (cli->json)
		ret = cli_print_json(cli, srv);
	else
		cli_server_print(srv);
out:
	json_decref(srv);
	buf_fini(&path);
	return ret;
}

static const struct cli_cmd cli_server_cmds[] = {
    {"list", "tag= state=", 0, 0, "[--tag T] [--state S]", "list servers", cli_server_list},
    {"show", "", 1, 1, "NAME|ID", "a server: state, agent and its facts, checklist",
     cli_server_show},
    {"set", "sites-root= deploy-user=", 1, 1, "SERVER [--sites-root DIR] [--deploy-user U]",
     "where sites go and who runs deploy scripts", cli_server_set},
    {"tag", "add remove", 1, 33, "SERVER [TAG...] [--add|--remove]",
     "set a server's tags (or add or remove some; none: show them)", cli_server_tag},
    {"create", "provider= region= size= image= ipv4= ssh-port= ssh-user= host-key= tag= wait", 1, 1,
     "NAME --provider digitalocean|hetzner|custom [--region R --size S --image I] [--ipv4 A "
     "--ssh-port P --ssh-user U] [--host-key SHA256:...] [--tag T]... [--wait]",
     "create a server (or adopt one: custom) and provision it; --wait shows progress",
     cli_server_create},
    {"delete", "wait", 1, 1, "NAME [--wait]",
     "delete a server: the VM, its provider key, the record", cli_server_delete},
    {"retry", "wait", 1, 1, "NAME [--wait]", "resume a failed provisioning where it stopped",
     cli_server_retry},
    {"log", "follow", 1, 1, "NAME [--follow]",
     "the provisioning log (--follow: until the server's job ends)", cli_server_log},
};

const struct cli_family cli_server_family = {
    "server",
    "servers",
    cli_server_cmds,
    sizeof(cli_server_cmds) / sizeof(cli_server_cmds[0]),
};
