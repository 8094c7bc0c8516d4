/*
 * sites.c: the site and deployment job types (see sites.h). Every change on a server
 * is an agent command run from a step through agentrun, so a step resumed after a
 * crash waits for the command it already sent. Paths are built only from validated
 * names (domain, sites_root) and deployment ids.
 */
#include "sites.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "agentrun.h"
#include "err.h"
#include "events.h"
#include "jobs.h"
#include "log.h"
#include "secrets.h"
#include "sm.h"
#include "store.h"

const char sites_default_script[] =
    "#!/bin/bash\n"
    "# Stoke deploy script. Runs as the deploy user in the new release's folder.\n"
    "# Variables: STOKE_SITE_PATH STOKE_RELEASE_PATH STOKE_DOMAIN STOKE_BRANCH STOKE_COMMIT\n"
    "# STOKE_DEPLOYMENT_ID, and the site's environment.\n"
    "set -euo pipefail\n"
    "echo \"Deploying ${STOKE_COMMIT:0:12} ($STOKE_BRANCH) to $STOKE_DOMAIN\"\n"
    "if [ -f composer.json ] && command -v composer >/dev/null; then\n"
    "\tcomposer install --no-dev --no-interaction --prefer-dist\n"
    "fi\n"
    "if [ -f package.json ] && command -v npm >/dev/null; then\n"
    "\tnpm ci && npm run build --if-present\n"
    "fi\n"
    "echo \"Deployed.\"\n";

/* Links shared/ entries into the release, switches `current` atomically, prunes old
 * releases (never the one serving). Constant text: values arrive as variables. */
static const char sites_switch_script[] =
    "set -eu\n"
    "site=$STOKE_SITE_PATH; rel=$STOKE_RELEASE_PATH\n"
    "if [ ! -d \"$rel\" ]; then\n" /* pruned: keep serving the current one */
    "  echo \"release ${rel##*/} is not on the server\" >&2; exit 3\n"
    "fi\n"
    "mkdir -p \"$site/shared\"\n"
    "if [ \"${STOKE_LINK_SHARED:-1}\" = 1 ]; then\n"
    "  for f in \"$site/shared\"/* \"$site/shared\"/.[!.]*; do\n"
    "    [ -e \"$f\" ] || [ -L \"$f\" ] || continue\n"
    "    name=${f##*/}; rm -rf \"${rel:?}/$name\"; ln -s \"$f\" \"$rel/$name\"\n"
    "  done\n"
    "fi\n"
    "ln -sfn \"$rel\" \"$site/current.stoke-tmp\"\n"
    "mv -Tf \"$site/current.stoke-tmp\" \"$site/current\"\n"
    "echo \"now serving ${rel##*/}\"\n"
    /* STOKE_KEEP_IDS: the releases to keep (this one and the newest finished ones);
     * every other numbered release goes, failed ones included */
    "if [ -n \"${STOKE_KEEP_IDS:-}\" ]; then\n"
    "  for d in \"$site/releases\"/*; do\n"
    "    old=${d##*/}\n"
    "    case $old in ''|*[!0-9]*) continue ;; esac\n"
    "    case \" $STOKE_KEEP_IDS \" in *\" $old \"*) continue ;; esac\n"
    "    [ \"$d\" = \"$rel\" ] && continue\n"
    "    rm -rf \"${site:?}/releases/$old\" && echo \"removed release $old\"\n"
    "  done\n"
    "fi\n";

struct sites_row {
	int64_t id, server_id, zero_downtime, keep, timeout_ms, current;
	char *domain, *path, *web_dir, *repo_url, *branch, *script, *user, *aliases;
	char *deploy_key_sealed, *env_sealed, *known_hosts;
};

static void
sites_row_fini(struct sites_row *r)
{
	free(r->domain);
	free(r->path);
	free(r->web_dir);
	free(r->repo_url);
	free(r->branch);
	free(r->script);
	free(r->user);
	free(r->aliases);
	free(r->deploy_key_sealed);
	free(r->known_hosts);
	free(r->env_sealed);
	memset(r, 0, sizeof(*r));
}

static char *
sites_dup(struct store_stmt *st, int col)
{
	return store_col_is_null(st, col) ? NULL : strdup(store_col_text(st, col));
}

static int
sites_load(struct store *s, int64_t id, struct sites_row *r, char *err, size_t errlen)
{
	struct store_stmt *st;

	memset(r, 0, sizeof(*r));
	st = store_query(s,
			 "SELECT s.id, s.server_id, s.zero_downtime, s.keep_releases,"
			 " s.deploy_timeout_ms, coalesce(s.current_release, 0), s.domain, s.path,"
			 " s.web_dir, s.repo_url, s.branch, s.deploy_script, v.deploy_user,"
			 " s.aliases, s.deploy_key_sealed, s.env_sealed, s.known_hosts"
			 " FROM sites s JOIN servers v ON v.id = s.server_id WHERE s.id = ?",
			 "i", id);
	if (st == NULL || store_step(st) != STORE_ROW) {
		store_finalize(st);
		return err_set(err, errlen, ERR_NOTFOUND, "site %lld: not found", (long long)id);
	}
	r->id = store_col_int(st, 0);
	r->server_id = store_col_int(st, 1);
	r->zero_downtime = store_col_int(st, 2);
	r->keep = store_col_int(st, 3);
	r->timeout_ms = store_col_int(st, 4);
	r->current = store_col_int(st, 5);
	r->domain = sites_dup(st, 6);
	r->path = sites_dup(st, 7);
	r->web_dir = sites_dup(st, 8);
	r->repo_url = sites_dup(st, 9);
	r->branch = sites_dup(st, 10);
	r->script = sites_dup(st, 11);
	r->user = sites_dup(st, 12);
	r->aliases = sites_dup(st, 13);
	r->deploy_key_sealed = sites_dup(st, 14);
	r->env_sealed = sites_dup(st, 15);
	r->known_hosts = sites_dup(st, 16);
	store_finalize(st);
	return 0;
}

static int64_t
sites_payload_int(struct job_ctx *ctx, const char *key)
{
	json_t *p = json_loads(job_payload(ctx), 0, NULL);
	int64_t v = (int64_t)json_integer_value(json_object_get(p, key));

	json_decref(p);
	return v;
}

/* The folder nginx serves: the web dir of the code (current release when zero-downtime). */
static void
sites_webroot(const struct sites_row *r, char *out, size_t len)
{
	const char *code = r->zero_downtime ? "/current" : "";

	if (r->web_dir && r->web_dir[0] && strcmp(r->web_dir, ".") != 0)
		snprintf(out, len, "%s%s/%s", r->path, code, r->web_dir);
	else
		snprintf(out, len, "%s%s", r->path, code);
}

static int
sites_run(struct job_ctx *ctx, const struct sites_row *r, const char *key, const char *kind,
	  json_t *payload, const char *owner_kind, int64_t owner_id, long timeout_ms, char **result,
	  int64_t *command_id, char *err, size_t errlen)
{
	struct agentrun_opts o = {.key = key,
				  .owner_kind = owner_kind,
				  .owner_id = owner_id,
				  .timeout_ms = timeout_ms,
				  .result_json = result,
				  .command_id = command_id};
	char *text = json_dumps(payload, JSON_COMPACT);
	int rc;

	json_decref(payload);
	if (text == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	rc = agentrun(ctx, r->server_id, kind, text, &o, err, errlen);
	explicit_bzero(text, strlen(text));
	free(text);
	return rc;
}

/* ---- site.create ---- */

static int
sites_nginx(struct job_ctx *ctx, int enabled, int remove, const char *key, char *err, size_t errlen)
{
	struct sites_row r;
	char root[4200];
	json_t *names, *aliases;
	int rc;

	if ((rc = sites_load(job_store(ctx), job_resource_id(ctx), &r, err, errlen)) != 0)
		return rc;
	sites_webroot(&r, root, sizeof(root));
	names = json_array();
	json_array_append_new(names, json_string(r.domain));
	aliases = json_loads(r.aliases ? r.aliases : "[]", 0, NULL);
	json_array_extend(names, aliases);
	json_decref(aliases);
	rc = sites_run(ctx, &r, key, "nginx_site",
		       json_pack("{s:s, s:o, s:s, s:b, s:b}", "name", r.domain, "server_names",
				 names, "root", root, "enabled", enabled, "remove", remove),
		       "site", r.id, 120000, NULL, NULL, err, errlen);
	sites_row_fini(&r);
	return rc;
}

static int
sites_step_nginx(struct job_ctx *ctx, char *err, size_t errlen)
{
	job_progress(ctx, 20, "writing the nginx site");
	return sites_nginx(ctx, 1, 0, "cmd:nginx", err, errlen);
}

static int
sites_undo_nginx(struct job_ctx *ctx, char *err, size_t errlen)
{
	return sites_nginx(ctx, 0, 1, "cmd:nginx-undo", err, errlen);
}

static int
sites_step_folders(struct job_ctx *ctx, char *err, size_t errlen)
{
	struct sites_row r;
	char rel[4200], shared[4200];
	int rc;

	if ((rc = sites_load(job_store(ctx), job_resource_id(ctx), &r, err, errlen)) != 0)
		return rc;
	job_progress(ctx, 50, "making %s", r.path);
	snprintf(rel, sizeof(rel), "%s/releases", r.path);
	snprintf(shared, sizeof(shared), "%s/shared", r.path);
	rc = sites_run(ctx, &r, "cmd:folders", "exec",
		       r.zero_downtime ? json_pack("{s:[s,s,s,s], s:s}", "argv", "mkdir", "-p", rel,
						   shared, "user", r.user)
				       : json_pack("{s:[s,s,s], s:s}", "argv", "mkdir", "-p",
						   r.path, "user", r.user),
		       "site", r.id, 60000, NULL, NULL, err, errlen);
	sites_row_fini(&r);
	return rc;
}

static int
sites_remove_files(struct job_ctx *ctx, const char *key, char *err, size_t errlen)
{
	struct sites_row r;
	int rc;

	if ((rc = sites_load(job_store(ctx), job_resource_id(ctx), &r, err, errlen)) != 0)
		return rc == ERR_NOTFOUND ? 0 : rc;
	rc = sites_run(
	    ctx, &r, key, "exec",
	    json_pack("{s:[s,s,s,s], s:s}", "argv", "rm", "-rf", "--", r.path, "user", r.user),
	    "site", r.id, 300000, NULL, NULL, err, errlen);
	sites_row_fini(&r);
	return rc;
}

static int
sites_undo_folders(struct job_ctx *ctx, char *err, size_t errlen)
{
	return sites_remove_files(ctx, "cmd:folders-undo", err, errlen);
}

static int
sites_step_active(struct job_ctx *ctx, char *err, size_t errlen)
{
	struct store *s = job_store(ctx);
	int64_t id = job_resource_id(ctx);
	int rc;

	store_begin(s);
	sm_check(s, &sm_site, id, "nginx site", 1, 1, NULL);
	sm_check(s, &sm_site, id, "folders", 1, 1, NULL);
	rc = sm_transition(s, &sm_site, id, "active", "system", err, errlen);
	if (rc == 0)
		sm_progress(s, &sm_site, id, 100, "active");
	if (rc == 0 && store_commit(s) == 0)
		return 0;
	store_rollback(s);
	return rc ? rc : ERR_DB;
}

/* The first deployment checks the repository out; it queues behind this job. */
static int
sites_step_first_deploy(struct job_ctx *ctx, char *err, size_t errlen)
{
	struct sites_deploy_req req = {.trigger = "create", .actor = "system"};
	struct store *s = job_store(ctx);
	int64_t id = job_resource_id(ctx), dep, job;
	char *repo, *done = job_data_get(ctx, "first_deployment"), text[32];
	int rc = 0;

	repo = store_text(s, "SELECT repo_url FROM sites WHERE id = ?", "i", id);
	if (repo && done == NULL &&
	    (rc = sites_deploy(s, id, &req, &dep, &job, err, errlen)) == 0) {
		snprintf(text, sizeof(text), "%lld", (long long)dep);
		job_data_set(ctx, "first_deployment", text);
		job_progress(ctx, 95, "deployment %lld queued", (long long)dep);
	}
	free(repo);
	free(done);
	return rc;
}

static void
sites_create_finished(struct job_ctx *ctx, const char *state, const char *error)
{
	if (strcmp(state, "done") != 0)
		sm_fail(job_store(ctx), &sm_site, job_resource_id(ctx), "create",
			error ? error : state, "system");
}

static const struct job_step sites_create_steps[] = {
    {"nginx", sites_step_nginx, sites_undo_nginx, 0},
    {"folders", sites_step_folders, sites_undo_folders, 0},
    {"activate", sites_step_active, NULL, 0},
    {"first_deploy", sites_step_first_deploy, NULL, 0},
};
static const struct job_type sites_create_type = {.name = "site.create",
						  .steps = sites_create_steps,
						  .nsteps = 4,
						  .timeout_ms = 600000,
						  .max_attempts = 2,
						  .backoff_ms = 2000,
						  .rollback = 1,
						  .finished = sites_create_finished};

/* ---- site.toggle: {"enabled": 1 or 0} ---- */

static int
sites_step_toggle(struct job_ctx *ctx, char *err, size_t errlen)
{
	int enabled = (int)sites_payload_int(ctx, "enabled");
	struct store *s = job_store(ctx);
	int rc;

	if ((rc = sites_nginx(ctx, enabled, 0, "cmd:toggle", err, errlen)) != 0)
		return rc;
	store_begin(s);
	rc = sm_transition(s, &sm_site, job_resource_id(ctx), enabled ? "active" : "inactive",
			   "system", err, errlen);
	if (rc == 0 && store_commit(s) == 0)
		return 0;
	store_rollback(s);
	return rc ? rc : ERR_DB;
}

static const struct job_step sites_toggle_steps[] = {{"nginx", sites_step_toggle, NULL, 0}};
static const struct job_type sites_toggle_type = {.name = "site.toggle",
						  .steps = sites_toggle_steps,
						  .nsteps = 1,
						  .timeout_ms = 300000,
						  .max_attempts = 2};

/* ---- site.delete ---- */

static int
sites_step_del_nginx(struct job_ctx *ctx, char *err, size_t errlen)
{
	job_progress(ctx, 30, "removing the nginx site");
	return sites_nginx(ctx, 0, 1, "cmd:delete-nginx", err, errlen);
}

static int
sites_step_del_files(struct job_ctx *ctx, char *err, size_t errlen)
{
	job_progress(ctx, 60, "removing the site's files");
	return sites_remove_files(ctx, "cmd:delete-files", err, errlen);
}

static int
sites_step_del_record(struct job_ctx *ctx, char *err, size_t errlen)
{
	struct store *s = job_store(ctx);
	int64_t id = job_resource_id(ctx);

	store_begin(s);
	sm_transition(s, &sm_site, id, "deleted", "system", err, errlen);
	if (store_exec(s, "DELETE FROM sites WHERE id = ?", "i", id) != 0) {
		store_rollback(s);
		return err_set(err, errlen, ERR_DB, "delete site %lld: %s", (long long)id,
			       store_errmsg(s));
	}
	events_emit(s, "system", "site.deleted", "site", id, NULL);
	if (store_commit(s) != 0) {
		store_rollback(s);
		return err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
	}
	return 0;
}

static void
sites_delete_finished(struct job_ctx *ctx, const char *state, const char *error)
{
	if (strcmp(state, "done") != 0)
		sm_fail(job_store(ctx), &sm_site, job_resource_id(ctx), "delete",
			error ? error : state, "system");
}

static const struct job_step sites_delete_steps[] = {
    {"nginx", sites_step_del_nginx, NULL, 0},
    {"files", sites_step_del_files, NULL, 0},
    {"record", sites_step_del_record, NULL, 0},
};
static const struct job_type sites_delete_type = {.name = "site.delete",
						  .steps = sites_delete_steps,
						  .nsteps = 3,
						  .timeout_ms = 600000,
						  .max_attempts = 3,
						  .finished = sites_delete_finished};

/* ---- deploy: {"deployment_id": N} ---- */

static int64_t
sites_dep_id(struct job_ctx *ctx)
{
	return sites_payload_int(ctx, "deployment_id");
}

static void
sites_release(const struct sites_row *r, int64_t dep, char *out, size_t len)
{
	if (r->zero_downtime)
		snprintf(out, len, "%s/releases/%lld", r->path, (long long)dep);
	else
		snprintf(out, len, "%s", r->path);
}

static int
sites_step_start(struct job_ctx *ctx, char *err, size_t errlen)
{
	struct store *s = job_store(ctx);
	int64_t dep = sites_dep_id(ctx);
	int rc;

	store_begin(s);
	rc = sm_transition(s, &sm_deployment, dep, "running", "system", err, errlen);
	store_exec(s, "UPDATE deployments SET started_at = coalesce(started_at, ?) WHERE id = ?",
		   "ii", store_now_ms(), dep);
	if (rc == 0 && store_commit(s) == 0)
		return 0;
	store_rollback(s);
	return rc ? rc : ERR_DB;
}

static int
sites_step_checkout(struct job_ctx *ctx, char *err, size_t errlen)
{
	struct store *s = job_store(ctx);
	int64_t dep = sites_dep_id(ctx);
	struct sites_row r;
	char dest[4200], *commit, *key = NULL, *result = NULL;
	json_t *p, *res;
	int rc;

	if ((rc = sites_load(s, job_resource_id(ctx), &r, err, errlen)) != 0)
		return rc;
	if (r.repo_url == NULL) {
		sites_row_fini(&r);
		return 0; /* no repository: the script runs alone */
	}
	/* ssh:// or user@host:path: the agent checks the host key against the site's known
	 * hosts only (never the deploy user's), so without them every fetch would fail. */
	if (r.repo_url[0] != '/' && strncmp(r.repo_url, "https://", 8) != 0 &&
	    (r.known_hosts == NULL || r.known_hosts[0] == '\0')) {
		rc = err_set(err, errlen, ERR_INVAL,
			     "%s is reached over SSH but the site has no known hosts to check its"
			     " host key against: set them (stoke site known-hosts %s FILE, or PUT"
			     " /api/v1/sites/%lld/known_hosts), e.g. from ssh-keyscan, checked"
			     " against the host's published fingerprints",
			     r.repo_url, r.domain, (long long)r.id);
		sites_row_fini(&r);
		return rc;
	}
	sites_release(&r, dep, dest, sizeof(dest));
	commit = store_text(s, "SELECT commit_hash FROM deployments WHERE id = ?", "i", dep);
	sm_progress(s, &sm_deployment, dep, 20, "checking out");
	if (r.deploy_key_sealed &&
	    (rc = secrets_open(r.deploy_key_sealed, "site:deploy_key", &key, err, errlen)) != 0)
		goto out;
	p = json_pack("{s:s, s:s, s:s, s:s}", "repo_url", r.repo_url, "branch", r.branch, "dest",
		      dest, "user", r.user);
	if (commit)
		json_object_set_new(p, "commit", json_string(commit));
	if (key && strncmp(r.repo_url, "/", 1) != 0)
		json_object_set_new(p, "deploy_key", json_string(key));
	if (r.known_hosts && r.known_hosts[0] && strncmp(r.repo_url, "/", 1) != 0)
		json_object_set_new(p, "known_hosts", json_string(r.known_hosts));
	rc = sites_run(ctx, &r, "cmd:checkout", "git_checkout", p, "deployment", dep, 600000,
		       &result, NULL, err, errlen);
	if (rc == 0 && result && (res = json_loads(result, 0, NULL)) != NULL) {
		store_exec(
		    s,
		    "UPDATE deployments SET commit_hash = ?, commit_message ="
		    " coalesce(commit_message, ?), commit_author = coalesce(commit_author, ?),"
		    " release = ? WHERE id = ?",
		    "ssssi", json_string_value(json_object_get(res, "commit")),
		    json_string_value(json_object_get(res, "message")),
		    json_string_value(json_object_get(res, "author")), dest, dep);
		json_decref(res);
	}
out:
	if (key) {
		explicit_bzero(key, strlen(key));
		free(key);
	}
	free(result);
	free(commit);
	sites_row_fini(&r);
	return rc;
}

static int
sites_step_script(struct job_ctx *ctx, char *err, size_t errlen)
{
	struct store *s = job_store(ctx);
	int64_t dep = sites_dep_id(ctx), cmd = 0;
	struct sites_row r;
	char dest[4200], depid[32], *commit, *envtext = NULL;
	json_t *env, *extra;
	int rc;

	if ((rc = sites_load(s, job_resource_id(ctx), &r, err, errlen)) != 0)
		return rc;
	sites_release(&r, dep, dest, sizeof(dest));
	commit = store_text(s, "SELECT commit_hash FROM deployments WHERE id = ?", "i", dep);
	snprintf(depid, sizeof(depid), "%lld", (long long)dep);
	env = json_object();
	if (r.env_sealed && secrets_open(r.env_sealed, "site:env", &envtext, err, errlen) == 0 &&
	    (extra = json_loads(envtext, 0, NULL)) != NULL) {
		json_object_update(env, extra);
		json_decref(extra);
	}
	if (envtext) {
		explicit_bzero(envtext, strlen(envtext));
		free(envtext);
	}
	json_object_set_new(env, "STOKE_SITE_PATH", json_string(r.path));
	json_object_set_new(env, "STOKE_RELEASE_PATH", json_string(dest));
	json_object_set_new(env, "STOKE_DOMAIN", json_string(r.domain));
	json_object_set_new(env, "STOKE_BRANCH", json_string(r.branch ? r.branch : ""));
	json_object_set_new(env, "STOKE_COMMIT", json_string(commit ? commit : ""));
	json_object_set_new(env, "STOKE_DEPLOYMENT_ID", json_string(depid));
	sm_progress(s, &sm_deployment, dep, 50, "running the deploy script");
	if (r.repo_url == NULL)
		/* nothing checked out: make sure the folder exists */
		snprintf(dest, sizeof(dest), "%s", r.path);
	rc = sites_run(ctx, &r, "cmd:script", "script",
		       json_pack("{s:s, s:s, s:s, s:o, s:i}", "script",
				 r.script ? r.script : sites_default_script, "user", r.user, "cwd",
				 dest, "env", env, "timeout", (int)(r.timeout_ms / 1000)),
		       "deployment", dep, r.timeout_ms + 30000, NULL, &cmd, err, errlen);
	store_exec(
	    s,
	    "UPDATE deployments SET exit_code = (SELECT exit_code FROM commands WHERE id = ?)"
	    " WHERE id = ?",
	    "ii", cmd, dep);
	free(commit);
	sites_row_fini(&r);
	return rc;
}

/* Switches `current` to a release (zero-downtime sites). Exit code 3 of the command (see
 * *command_id) means the release's folder is gone: nothing was changed. */
static int
sites_switch(struct job_ctx *ctx, const struct sites_row *r, int64_t release, int prune,
	     const char *key, const char *owner_kind, int64_t owner_id, int64_t *command_id,
	     char *err, size_t errlen)
{
	char dest[4200], keep[1024] = "";
	struct store_stmt *st;
	size_t n = 0;
	int rc;

	sites_release(r, release, dest, sizeof(dest));
	if (prune) {
		/* this release and the newest finished ones, keep_releases in all */
		n = (size_t)snprintf(keep, sizeof(keep), "%lld", (long long)release);
		st = store_query(
		    job_store(ctx),
		    "SELECT id FROM deployments WHERE site_id = ? AND state = 'finished'"
		    " AND release IS NOT NULL AND id != ? ORDER BY id DESC LIMIT ?",
		    "iii", r->id, release, r->keep > 1 ? r->keep - 1 : (int64_t)0);
		while (st && store_step(st) == STORE_ROW && n < sizeof(keep) - 24)
			n += (size_t)snprintf(keep + n, sizeof(keep) - n, " %lld",
					      (long long)store_col_int(st, 0));
		store_finalize(st);
	}
	rc = sites_run(ctx, r, key, "script",
		       json_pack("{s:s, s:s, s:{s:s, s:s, s:s, s:s}}", "script",
				 sites_switch_script, "user", r->user, "env", "STOKE_SITE_PATH",
				 r->path, "STOKE_RELEASE_PATH", dest, "STOKE_KEEP_IDS", keep,
				 "STOKE_LINK_SHARED", prune ? "1" : "0"),
		       owner_kind, owner_id, 120000, NULL, command_id, err, errlen);
	if (rc == 0)
		store_exec(job_store(ctx), "UPDATE sites SET current_release = ? WHERE id = ?",
			   "ii", release, r->id);
	return rc;
}

static int
sites_step_release(struct job_ctx *ctx, char *err, size_t errlen)
{
	struct store *s = job_store(ctx);
	int64_t dep = sites_dep_id(ctx);
	struct sites_row r;
	int rc;

	if ((rc = sites_load(s, job_resource_id(ctx), &r, err, errlen)) != 0)
		return rc;
	if (r.zero_downtime) {
		sm_progress(s, &sm_deployment, dep, 90, "switching to the new release");
		rc = sites_switch(ctx, &r, dep, 1, "cmd:switch", "deployment", dep, NULL, err,
				  errlen);
	}
	sites_row_fini(&r);
	return rc;
}

static int
sites_step_finish(struct job_ctx *ctx, char *err, size_t errlen)
{
	struct store *s = job_store(ctx);
	int64_t dep = sites_dep_id(ctx);
	int rc;

	store_begin(s);
	rc = sm_transition(s, &sm_deployment, dep, "finished", "system", err, errlen);
	store_exec(s, "UPDATE deployments SET finished_at = ? WHERE id = ?", "ii", store_now_ms(),
		   dep);
	sm_progress(s, &sm_deployment, dep, 100, "finished");
	if (rc == 0 && store_commit(s) == 0)
		return 0;
	store_rollback(s);
	return rc ? rc : ERR_DB;
}

static void
sites_deploy_finished(struct job_ctx *ctx, const char *state, const char *error)
{
	struct store *s = job_store(ctx);
	int64_t dep = sites_dep_id(ctx);
	char err[256];

	if (strcmp(state, "done") == 0)
		return;
	store_exec(s, "UPDATE deployments SET finished_at = ?, error = ? WHERE id = ?", "isi",
		   store_now_ms(), error, dep);
	if (strcmp(state, "cancelled") == 0) {
		if (sm_transition(s, &sm_deployment, dep, "cancelled", "system", err, sizeof(err)))
			log_warnx("%s", err);
	} else
		sm_fail(s, &sm_deployment, dep, "deploy", error ? error : "failed", "system");
}

static const struct job_step sites_deploy_steps[] = {
    {"start", sites_step_start, NULL, 0},   {"checkout", sites_step_checkout, NULL, 0},
    {"script", sites_step_script, NULL, 0}, {"release", sites_step_release, NULL, 0},
    {"finish", sites_step_finish, NULL, 0},
};
/* A deploy script may not be idempotent: one attempt; retry is the user's call. */
static const struct job_type sites_deploy_type = {.name = "deploy",
						  .steps = sites_deploy_steps,
						  .nsteps = 5,
						  .timeout_ms = 0,
						  .max_attempts = 1,
						  .finished = sites_deploy_finished};

/* ---- site.rollback: {"release": deployment id, 0 = the one before current} ---- */

static int
sites_step_rollback(struct job_ctx *ctx, char *err, size_t errlen)
{
	struct store *s = job_store(ctx);
	int64_t want = sites_payload_int(ctx, "release"), cmd = 0;
	struct sites_row r;
	int rc;

	if ((rc = sites_load(s, job_resource_id(ctx), &r, err, errlen)) != 0)
		return rc;
	if (!r.zero_downtime) {
		rc = err_set(err, errlen, ERR_INVAL,
			     "site %s is not zero-downtime: it has no releases to switch to",
			     r.domain);
		sites_row_fini(&r);
		return rc;
	}
	if (want == 0)
		want = store_int(s, 0,
				 "SELECT max(id) FROM deployments WHERE site_id = ? AND state ="
				 " 'finished' AND id < ? AND release IS NOT NULL",
				 "ii", r.id, r.current);
	if (want == 0 || store_int(s, 0,
				   "SELECT count(*) FROM deployments WHERE id = ? AND site_id = ?"
				   " AND state = 'finished'",
				   "ii", want, r.id) == 0) {
		sites_row_fini(&r);
		return err_set(err, errlen, ERR_INVAL, "no finished release to roll back to");
	}
	job_progress(ctx, 50, "switching to release %lld", (long long)want);
	rc = sites_switch(ctx, &r, want, 0, "cmd:rollback", "site", r.id, &cmd, err, errlen);
	if (rc != 0 && cmd != 0 &&
	    store_int(s, 0, "SELECT exit_code = 3 FROM commands WHERE id = ?", "i", cmd) == 1)
		rc = err_set(err, errlen, ERR_NOTFOUND,
			     "release %lld is no longer on the server (the site keeps %lld"
			     " releases); still serving the current one",
			     (long long)want, (long long)r.keep);
	if (rc == 0)
		events_emit(s, "system", "site.rolled_back", "site", r.id, NULL);
	sites_row_fini(&r);
	return rc;
}

static const struct job_step sites_rollback_steps[] = {{"switch", sites_step_rollback, NULL, 0}};
static const struct job_type sites_rollback_type = {.name = "site.rollback",
						    .steps = sites_rollback_steps,
						    .nsteps = 1,
						    .timeout_ms = 300000,
						    .max_attempts = 1};

void
sites_register(void)
{
	jobs_register(&sites_create_type);
	jobs_register(&sites_toggle_type);
	jobs_register(&sites_delete_type);
	jobs_register(&sites_deploy_type);
	jobs_register(&sites_rollback_type);
}

int
sites_job(struct store *s, int64_t site_id, const char *type, const char *payload,
	  const char *actor, int64_t *job_id, char *err, size_t errlen)
{
	struct jobs_enqueue_opts o = {0};
	char queue[64];

	/* Every job of one site runs in order, deployments included. */
	snprintf(queue, sizeof(queue), "serial:site:%lld", (long long)site_id);
	o.queue = queue;
	o.resource_kind = "site";
	o.resource_id = site_id;
	o.actor = actor;
	return jobs_enqueue(s, type, payload, &o, job_id, err, errlen);
}

int
sites_commit_current(struct store *s, int64_t site_id, const char *commit, int64_t *deployment,
		     const char **why)
{
	int64_t dep;
	char *served;
	int same;

	*deployment = 0;
	*why = NULL;
	dep = store_int(
	    s, -1,
	    "SELECT id FROM deployments WHERE site_id = ? AND commit_hash = ? AND state IN"
	    " ('pending', 'running') ORDER BY id DESC LIMIT 1",
	    "is", site_id, commit);
	if (dep > 0) {
		*deployment = dep;
		*why = "is already being deployed";
		return 1;
	}
	/* What is served: the current release (zero-downtime sites, rollbacks included),
	 * else the newest finished deployment. */
	dep =
	    store_int(s, 0,
		      "SELECT coalesce((SELECT current_release FROM sites WHERE id = ?), (SELECT id"
		      " FROM deployments WHERE site_id = ? AND state = 'finished' ORDER BY id DESC"
		      " LIMIT 1), 0)",
		      "ii", site_id, site_id);
	if (dep <= 0)
		return 0;
	if ((served = store_text(s, "SELECT commit_hash FROM deployments WHERE id = ?", "i",
				 dep)) == NULL)
		return 0;
	same = strcmp(served, commit) == 0;
	free(served);
	if (!same)
		return 0;
	*deployment = dep;
	*why = "is already deployed";
	return 1;
}

int
sites_deploy(struct store *s, int64_t site_id, const struct sites_deploy_req *req,
	     int64_t *deployment_id, int64_t *job_id, char *err, size_t errlen)
{
	char payload[64];
	int64_t dep, now = store_now_ms();
	int rc;

	if (store_begin(s) != 0)
		return err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
	if (store_exec(s,
		       "INSERT INTO deployments (id, site_id, trigger, actor, commit_hash,"
		       " commit_message, commit_author, delivery_id, created_at, updated_at)"
		       /* never a deleted deployment's id (id_high, migration 12) */
		       " VALUES ((SELECT last + 1 FROM id_high WHERE name = 'deployments'),"
		       " ?,?,?,?,?,?,?,?,?)",
		       "issssssii", site_id, req->trigger, req->actor, req->commit, req->message,
		       req->author, req->delivery_id, now, now) != 0) {
		rc = err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
		goto fail;
	}
	dep = store_last_id(s);
	snprintf(payload, sizeof(payload), "{\"deployment_id\":%lld}", (long long)dep);
	if ((rc = sites_job(s, site_id, "deploy", payload, req->actor, job_id, err, errlen)) != 0)
		goto fail;
	store_exec(s, "UPDATE deployments SET job_id = ? WHERE id = ?", "ii", *job_id, dep);
	events_emit(s, req->actor, "deployment.created", "deployment", dep, NULL);
	if (store_commit(s) != 0) {
		rc = err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
		goto fail;
	}
	log_info("site %lld: deployment %lld queued (%s)", (long long)site_id, (long long)dep,
		 req->trigger);
	*deployment_id = dep;
	return 0;
fail:
	store_rollback(s);
	return rc;
}
