/*
 * agentcmd.c: validation (API edge) and packing (hub) of agent commands. Each kind is
 * a row: name, field table, packer. Field grammars come from common/names.h; nothing
 * here runs anything.
 */
#include "agentcmd.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "err.h"
#include "names.h"
#include "secrets.h"
#include "stoke.pb-c.h"

#define AGENTCMD_PROTOCOL 1
#define AGENTCMD_MAX_ARGS 256
#define AGENTCMD_MAX_ARG 8192
#define AGENTCMD_MAX_FILE (512 * 1024)

enum agentcmd_ftype { F_STR, F_INT, F_BOOL, F_STRS, F_ENV };

struct agentcmd_field {
	const char *name;
	enum agentcmd_ftype type;
	int required;
	/* Checks one string value; NULL = any string without control characters. */
	int (*check)(const char *v, char *err, size_t errlen);
};

static int
agentcmd_path(const char *v, char *err, size_t errlen)
{
	const char *p;

	if (v[0] != '/')
		return err_set(err, errlen, ERR_INVAL, "must be an absolute path");
	if (strlen(v) > 1024)
		return err_set(err, errlen, ERR_INVAL, "must be at most 1024 characters");
	for (p = v; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("/._-+@", *p))
			return err_set(err, errlen, ERR_INVAL,
				       "may only contain letters, digits and / . _ - + @");
	if (strstr(v, "/../") || strstr(v, "/./") || strstr(v, "//") ||
	    (strlen(v) >= 3 && strcmp(v + strlen(v) - 3, "/..") == 0))
		return err_set(err, errlen, ERR_INVAL, "must be a normal path (no . or ..)");
	return 0;
}

static int
agentcmd_user(const char *v, char *err, size_t errlen)
{
	return v[0] == '\0' ? 0 : names_user(v, err, errlen);
}

static int
agentcmd_opt_path(const char *v, char *err, size_t errlen)
{
	return v[0] == '\0' ? 0 : agentcmd_path(v, err, errlen);
}

static int
agentcmd_domain(const char *v, char *err, size_t errlen)
{
	return names_domain(v, 1, err, errlen);
}

static int
agentcmd_site_name(const char *v, char *err, size_t errlen)
{
	return names_domain(v, 0, err, errlen);
}

static int
agentcmd_branch(const char *v, char *err, size_t errlen)
{
	return names_branch(v, err, errlen);
}

static int
agentcmd_repo(const char *v, char *err, size_t errlen)
{
	return names_repo_url(v, err, errlen);
}

static int
agentcmd_commit(const char *v, char *err, size_t errlen)
{
	size_t n = strlen(v), i;

	if (n == 0)
		return 0;
	if (n < 7 || n > 40)
		return err_set(err, errlen, ERR_INVAL, "must be 7 to 40 hex digits");
	for (i = 0; i < n; i++)
		if (!isxdigit((unsigned char)v[i]))
			return err_set(err, errlen, ERR_INVAL, "must be 7 to 40 hex digits");
	return 0;
}

static int
agentcmd_service_name(const char *v, char *err, size_t errlen)
{
	const char *p;

	if (v[0] == '\0' || strlen(v) > 100 || v[0] == '-')
		return err_set(err, errlen, ERR_INVAL,
			       "must be 1-100 characters, not starting with '-'");
	for (p = v; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("@._-", *p))
			return err_set(err, errlen, ERR_INVAL,
				       "may only contain letters, digits and @ . _ -");
	return 0;
}

static int
agentcmd_action(const char *v, char *err, size_t errlen)
{
	static const char *const ok[] = {"start", "stop", "restart", "reload", "status"};
	size_t i;

	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		if (strcmp(v, ok[i]) == 0)
			return 0;
	return err_set(err, errlen, ERR_INVAL, "must be start, stop, restart, reload or status");
}

static int
agentcmd_key_line(const char *v, char *err, size_t errlen)
{
	if (strchr(v, '\n') || strchr(v, '\r'))
		return err_set(err, errlen, ERR_INVAL, "must be a single line");
	if (strncmp(v, "ssh-", 4) != 0 && strncmp(v, "ecdsa-", 6) != 0 && strncmp(v, "sk-", 3) != 0)
		return err_set(err, errlen, ERR_INVAL,
			       "must start with the key type (ssh-ed25519 ...)");
	return 0;
}

static const struct agentcmd_field agentcmd_exec_f[] = {{"argv", F_STRS, 1, NULL},
							{"user", F_STR, 0, agentcmd_user},
							{"cwd", F_STR, 0, agentcmd_opt_path},
							{"env", F_ENV, 0, NULL},
							{"timeout", F_INT, 0, NULL},
							{NULL, 0, 0, NULL}};
static const struct agentcmd_field agentcmd_script_f[] = {
    {"script", F_STR, 1, NULL},		  {"user", F_STR, 0, agentcmd_user},
    {"cwd", F_STR, 0, agentcmd_opt_path}, {"env", F_ENV, 0, NULL},
    {"timeout", F_INT, 0, NULL},	  {NULL, 0, 0, NULL}};
static const struct agentcmd_field agentcmd_write_f[] = {
    {"path", F_STR, 1, agentcmd_path},	{"content", F_STR, 1, NULL},
    {"owner", F_STR, 0, agentcmd_user}, {"group", F_STR, 0, agentcmd_user},
    {"mode", F_INT, 0, NULL},		{NULL, 0, 0, NULL}};
static const struct agentcmd_field agentcmd_nginx_f[] = {
    {"name", F_STR, 1, agentcmd_site_name},
    {"server_names", F_STRS, 0, agentcmd_domain},
    {"root", F_STR, 0, agentcmd_opt_path},
    {"listen_port", F_INT, 0, NULL},
    {"enabled", F_BOOL, 0, NULL},
    {"remove", F_BOOL, 0, NULL},
    {NULL, 0, 0, NULL}};
static const struct agentcmd_field agentcmd_git_f[] = {
    {"repo_url", F_STR, 1, agentcmd_repo}, {"branch", F_STR, 1, agentcmd_branch},
    {"commit", F_STR, 0, agentcmd_commit}, {"dest", F_STR, 1, agentcmd_path},
    {"user", F_STR, 0, agentcmd_user},	   {"deploy_key", F_STR, 0, NULL},
    {"known_hosts", F_STR, 0, NULL},	   {NULL, 0, 0, NULL}};
static const struct agentcmd_field agentcmd_keys_f[] = {{"user", F_STR, 1, agentcmd_user},
							{"keys", F_STRS, 1, agentcmd_key_line},
							{"report_only", F_BOOL, 0, NULL},
							{NULL, 0, 0, NULL}};
static const struct agentcmd_field agentcmd_service_f[] = {
    {"name", F_STR, 1, agentcmd_service_name},
    {"action", F_STR, 1, agentcmd_action},
    {NULL, 0, 0, NULL}};
static const struct agentcmd_field agentcmd_facts_f[] = {{NULL, 0, 0, NULL}};
static const struct agentcmd_field agentcmd_cancel_f[] = {{"command_id", F_INT, 1, NULL},
							  {NULL, 0, 0, NULL}};

struct agentcmd_kind {
	const char *name;
	const struct agentcmd_field *fields;
	int api; /* may be queued through the API */
};

static const struct agentcmd_kind agentcmd_kinds[] = {
    {"exec", agentcmd_exec_f, 1},	 {"script", agentcmd_script_f, 1},
    {"write_file", agentcmd_write_f, 1}, {"nginx_site", agentcmd_nginx_f, 1},
    {"git_checkout", agentcmd_git_f, 1}, {"authorized_keys", agentcmd_keys_f, 1},
    {"service", agentcmd_service_f, 1},	 {"facts", agentcmd_facts_f, 1},
    {"cancel", agentcmd_cancel_f, 0},
};

static const struct agentcmd_kind *
agentcmd_find(const char *kind)
{
	size_t i;

	for (i = 0; kind && i < sizeof(agentcmd_kinds) / sizeof(agentcmd_kinds[0]); i++)
		if (strcmp(agentcmd_kinds[i].name, kind) == 0)
			return &agentcmd_kinds[i];
	return NULL;
}

int
agentcmd_known(const char *kind)
{
	const struct agentcmd_kind *k = agentcmd_find(kind);

	return k && k->api;
}

static int
agentcmd_text_ok(const char *v, int multiline)
{
	const unsigned char *p;

	for (p = (const unsigned char *)v; *p; p++)
		if ((*p < 0x20 && !(multiline && (*p == '\n' || *p == '\t' || *p == '\r'))) ||
		    *p == 0x7f)
			return 0;
	return 1;
}

static int
agentcmd_check_str(const struct agentcmd_field *f, const char *label, const char *v, char *err,
		   size_t errlen)
{
	char why[256];
	int multiline = strcmp(f->name, "script") == 0 || strcmp(f->name, "content") == 0 ||
			strcmp(f->name, "deploy_key") == 0 || strcmp(f->name, "known_hosts") == 0;

	if (strlen(v) > (multiline ? AGENTCMD_MAX_FILE : AGENTCMD_MAX_ARG))
		return err_set(err, errlen, ERR_INVAL, "%s: too long", label);
	if (!agentcmd_text_ok(v, multiline))
		return err_set(err, errlen, ERR_INVAL, "%s: must not contain control characters",
			       label);
	if (f->check && f->check(v, why, sizeof(why)) != 0)
		return err_set(err, errlen, ERR_INVAL, "%s: %s", label, why);
	return 0;
}

static int
agentcmd_env_name(const char *n)
{
	const char *p;

	if (!(isalpha((unsigned char)n[0]) || n[0] == '_'))
		return 0;
	for (p = n; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '_')
			return 0;
	return p - n <= 128;
}

static int
agentcmd_check_field(const struct agentcmd_field *f, json_t *v, char *err, size_t errlen)
{
	char label[96];
	const char *k;
	json_t *x;
	size_t i;
	int rc;

	switch (f->type) {
	case F_STR:
		if (!json_is_string(v))
			return err_set(err, errlen, ERR_INVAL, "%s: must be a string", f->name);
		return agentcmd_check_str(f, f->name, json_string_value(v), err, errlen);
	case F_INT:
		if (!json_is_integer(v))
			return err_set(err, errlen, ERR_INVAL, "%s: must be an integer", f->name);
		if (json_integer_value(v) < 0 ||
		    (strcmp(f->name, "mode") == 0 && json_integer_value(v) > 07777) ||
		    (strcmp(f->name, "timeout") == 0 && json_integer_value(v) > 86400) ||
		    (strcmp(f->name, "listen_port") == 0 && json_integer_value(v) > 65535))
			return err_set(err, errlen, ERR_INVAL, "%s: out of range", f->name);
		return 0;
	case F_BOOL:
		if (!json_is_boolean(v))
			return err_set(err, errlen, ERR_INVAL, "%s: must be true or false",
				       f->name);
		return 0;
	case F_STRS:
		if (!json_is_array(v))
			return err_set(err, errlen, ERR_INVAL, "%s: must be an array of strings",
				       f->name);
		if (json_array_size(v) > AGENTCMD_MAX_ARGS)
			return err_set(err, errlen, ERR_INVAL, "%s: at most %d items", f->name,
				       AGENTCMD_MAX_ARGS);
		if (f->required && json_array_size(v) == 0 && strcmp(f->name, "argv") == 0)
			return err_set(err, errlen, ERR_INVAL, "argv: must not be empty");
		json_array_foreach(v, i, x)
		{
			snprintf(label, sizeof(label), "%s[%zu]", f->name, i);
			if (!json_is_string(x))
				return err_set(err, errlen, ERR_INVAL, "%s: must be a string",
					       label);
			if (strcmp(f->name, "argv") == 0 && i == 0 && json_string_length(x) == 0)
				return err_set(err, errlen, ERR_INVAL, "%s: must not be empty",
					       label);
			if ((rc = agentcmd_check_str(f, label, json_string_value(x), err,
						     errlen)) != 0)
				return rc;
		}
		return 0;
	case F_ENV:
		if (!json_is_object(v))
			return err_set(err, errlen, ERR_INVAL,
				       "%s: must be an object of NAME: \"value\"", f->name);
		json_object_foreach(v, k, x)
		{
			if (!agentcmd_env_name(k))
				return err_set(err, errlen, ERR_INVAL,
					       "env: '%.64s' is not a variable name", k);
			if (!json_is_string(x) || !agentcmd_text_ok(json_string_value(x), 0))
				return err_set(err, errlen, ERR_INVAL,
					       "env.%s: must be a one-line string", k);
		}
		return 0;
	}
	return ERR_INTERNAL;
}

int
agentcmd_validate(const char *kind, const char *payload_json, char **normal, char *err,
		  size_t errlen)
{
	const struct agentcmd_kind *k = agentcmd_find(kind);
	const struct agentcmd_field *f;
	json_error_t je;
	json_t *p, *v;
	const char *key;
	char *sealed = NULL;
	int rc = 0;

	*normal = NULL;
	if (k == NULL)
		return err_set(err, errlen, ERR_INVAL, "kind: unknown command kind");
	if ((p = json_loads(payload_json ? payload_json : "{}", JSON_REJECT_DUPLICATES, &je)) ==
		NULL ||
	    !json_is_object(p)) {
		json_decref(p);
		return err_set(err, errlen, ERR_INVAL, "payload must be a JSON object");
	}
	json_object_foreach(p, key, v)
	{
		for (f = k->fields; f->name; f++)
			if (strcmp(f->name, key) == 0)
				break;
		if (f->name == NULL) {
			rc = err_set(err, errlen, ERR_INVAL, "%s: unknown field for %s", key, kind);
			goto out;
		}
		if ((rc = agentcmd_check_field(f, v, err, errlen)) != 0)
			goto out;
	}
	for (f = k->fields; f->name; f++)
		if (f->required && json_object_get(p, f->name) == NULL) {
			rc = err_set(err, errlen, ERR_INVAL, "%s: required for %s", f->name, kind);
			goto out;
		}
	/* A deploy key is a secret: kept sealed in the database. */
	if ((v = json_object_get(p, "deploy_key")) != NULL && json_string_length(v) > 0) {
		if ((rc = secrets_seal(json_string_value(v), "command:deploy_key", &sealed, err,
				       errlen)) != 0)
			goto out;
		json_object_del(p, "deploy_key");
		json_object_set_new(p, "deploy_key_sealed", json_string(sealed));
	}
	if ((*normal = json_dumps(p, JSON_COMPACT)) == NULL)
		rc = err_set(err, errlen, ERR_NOMEM, "out of memory");
out:
	free(sealed);
	json_decref(p);
	return rc;
}

/* ---- packing ---- */

static char *
agentcmd_s(json_t *p, const char *k)
{
	const char *v = json_string_value(json_object_get(p, k));

	return (char *)(v ? v : "");
}

static char **
agentcmd_strs(json_t *p, const char *k, size_t *n)
{
	json_t *a = json_object_get(p, k), *x;
	char **out;
	size_t i;

	*n = json_array_size(a);
	if (*n == 0)
		return NULL;
	out = calloc(*n, sizeof(*out));
	json_array_foreach(a, i, x) out[i] = (char *)json_string_value(x);
	return out;
}

static char **
agentcmd_env(json_t *p, size_t *n)
{
	json_t *o = json_object_get(p, "env"), *x;
	const char *k;
	char **out;
	size_t i = 0;

	*n = json_object_size(o);
	if (*n == 0)
		return NULL;
	out = calloc(*n, sizeof(*out));
	json_object_foreach(o, k, x)
	{
		if (asprintf(&out[i], "%s=%s", k, json_string_value(x)) < 0)
			out[i] = NULL;
		i++;
	}
	return out;
}

static void
agentcmd_free_env(char **env, size_t n)
{
	size_t i;

	for (i = 0; env && i < n; i++)
		free(env[i]);
	free(env);
}

int
agentcmd_pack(uint64_t id, const char *kind, const char *payload_json, uint8_t **out,
	      size_t *outlen, char *err, size_t errlen)
{
	Stoke__Envelope env = STOKE__ENVELOPE__INIT;
	Stoke__Command cmd = STOKE__COMMAND__INIT;
	Stoke__ExecCommand ex = STOKE__EXEC_COMMAND__INIT;
	Stoke__ScriptCommand sc = STOKE__SCRIPT_COMMAND__INIT;
	Stoke__WriteFileCommand wf = STOKE__WRITE_FILE_COMMAND__INIT;
	Stoke__NginxSiteCommand ng = STOKE__NGINX_SITE_COMMAND__INIT;
	Stoke__GitCheckoutCommand gc = STOKE__GIT_CHECKOUT_COMMAND__INIT;
	Stoke__AuthorizedKeysCommand ak = STOKE__AUTHORIZED_KEYS_COMMAND__INIT;
	Stoke__ServiceCommand sv = STOKE__SERVICE_COMMAND__INIT;
	Stoke__FactsCommand fc = STOKE__FACTS_COMMAND__INIT;
	char *deploy_key = NULL;
	char **env_a = NULL;
	size_t env_n = 0;
	json_t *p;
	int rc = 0;

	*out = NULL;
	if ((p = json_loads(payload_json ? payload_json : "{}", 0, NULL)) == NULL)
		return err_set(err, errlen, ERR_INVAL, "command %llu: bad payload",
			       (unsigned long long)id);
	env.protocol_version = AGENTCMD_PROTOCOL;
	env.features = STOKE__FEATURE__FEATURE_POLL_RESULTS | STOKE__FEATURE__FEATURE_POLL_OUTPUT;
	env.body_case = STOKE__ENVELOPE__BODY_COMMAND;
	env.command = &cmd;
	cmd.id = id;
	if (kind == NULL) {
		cmd.kind_case = STOKE__COMMAND__KIND_NOOP;
		cmd.noop = 1;
	} else if (strcmp(kind, "exec") == 0) {
		cmd.kind_case = STOKE__COMMAND__KIND_EXEC;
		cmd.exec = &ex;
		ex.argv = agentcmd_strs(p, "argv", &ex.n_argv);
		ex.user = agentcmd_s(p, "user");
		ex.cwd = agentcmd_s(p, "cwd");
		ex.env = env_a = agentcmd_env(p, &env_n);
		ex.n_env = env_n;
		ex.timeout_s = (uint32_t)json_integer_value(json_object_get(p, "timeout"));
	} else if (strcmp(kind, "script") == 0) {
		cmd.kind_case = STOKE__COMMAND__KIND_SCRIPT;
		cmd.script = &sc;
		sc.script = agentcmd_s(p, "script");
		sc.user = agentcmd_s(p, "user");
		sc.cwd = agentcmd_s(p, "cwd");
		sc.env = env_a = agentcmd_env(p, &env_n);
		sc.n_env = env_n;
		sc.timeout_s = (uint32_t)json_integer_value(json_object_get(p, "timeout"));
	} else if (strcmp(kind, "write_file") == 0) {
		cmd.kind_case = STOKE__COMMAND__KIND_WRITE_FILE;
		cmd.write_file = &wf;
		wf.path = agentcmd_s(p, "path");
		wf.content.data = (uint8_t *)agentcmd_s(p, "content");
		wf.content.len = strlen((char *)wf.content.data);
		wf.owner = agentcmd_s(p, "owner");
		wf.group = agentcmd_s(p, "group");
		wf.mode = json_object_get(p, "mode")
			      ? (uint32_t)json_integer_value(json_object_get(p, "mode"))
			      : 0644;
	} else if (strcmp(kind, "nginx_site") == 0) {
		cmd.kind_case = STOKE__COMMAND__KIND_NGINX_SITE;
		cmd.nginx_site = &ng;
		ng.name = agentcmd_s(p, "name");
		ng.server_names = agentcmd_strs(p, "server_names", &ng.n_server_names);
		ng.root = agentcmd_s(p, "root");
		ng.listen_port = (uint32_t)json_integer_value(json_object_get(p, "listen_port"));
		ng.enabled =
		    json_object_get(p, "enabled") ? json_is_true(json_object_get(p, "enabled")) : 1;
		ng.remove = json_is_true(json_object_get(p, "remove"));
	} else if (strcmp(kind, "git_checkout") == 0) {
		const char *sealed = json_string_value(json_object_get(p, "deploy_key_sealed"));

		cmd.kind_case = STOKE__COMMAND__KIND_GIT_CHECKOUT;
		cmd.git_checkout = &gc;
		gc.repo_url = agentcmd_s(p, "repo_url");
		gc.branch = agentcmd_s(p, "branch");
		gc.commit = agentcmd_s(p, "commit");
		gc.dest = agentcmd_s(p, "dest");
		gc.user = agentcmd_s(p, "user");
		gc.known_hosts = agentcmd_s(p, "known_hosts");
		gc.deploy_key = "";
		if (sealed) {
			if ((rc = secrets_open(sealed, "command:deploy_key", &deploy_key, err,
					       errlen)) != 0)
				goto out;
			gc.deploy_key = deploy_key;
		}
	} else if (strcmp(kind, "authorized_keys") == 0) {
		cmd.kind_case = STOKE__COMMAND__KIND_AUTHORIZED_KEYS;
		cmd.authorized_keys = &ak;
		ak.user = agentcmd_s(p, "user");
		ak.keys = agentcmd_strs(p, "keys", &ak.n_keys);
		ak.report_only = json_is_true(json_object_get(p, "report_only"));
	} else if (strcmp(kind, "service") == 0) {
		cmd.kind_case = STOKE__COMMAND__KIND_SERVICE;
		cmd.service = &sv;
		sv.name = agentcmd_s(p, "name");
		sv.action = agentcmd_s(p, "action");
	} else if (strcmp(kind, "facts") == 0) {
		cmd.kind_case = STOKE__COMMAND__KIND_FACTS;
		cmd.facts = &fc;
	} else if (strcmp(kind, "cancel") == 0) {
		cmd.kind_case = STOKE__COMMAND__KIND_CANCEL_ID;
		cmd.cancel_id = (uint64_t)json_integer_value(json_object_get(p, "command_id"));
	} else {
		rc = err_set(err, errlen, ERR_INVAL, "command %llu: unknown kind %s",
			     (unsigned long long)id, kind);
		goto out;
	}
	*outlen = stoke__envelope__get_packed_size(&env);
	if ((*out = malloc(*outlen)) == NULL) {
		rc = err_set(err, errlen, ERR_NOMEM, "out of memory");
		goto out;
	}
	stoke__envelope__pack(&env, *out);
out:
	free(ex.argv);
	free(ng.server_names);
	free(ak.keys);
	agentcmd_free_env(env_a, env_n);
	if (deploy_key) {
		explicit_bzero(deploy_key, strlen(deploy_key));
		free(deploy_key);
	}
	json_decref(p);
	return rc;
}
