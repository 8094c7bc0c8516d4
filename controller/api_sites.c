/*
 * api_sites.c: /api/v1/sites: list, get, and create (validated in full, then 501: sites
 * are not built yet, nothing is written). Never shows a site's sealed environment,
 * deploy key or webhook secret. Routed from api.c.
 */
#include "api_json.h"

#include <string.h>

#include "err.h"
#include "store.h"

#define API_SITES_COLS                                                                             \
	"SELECT id, server_id, domain, aliases, web_dir, repo_url, branch, deploy_script,"         \
	" zero_downtime, keep_releases, deploy_timeout_ms, deploy_key_public, state,"              \
	" progress, message, checklist, error, failed_step, failed_at, created_at,"                \
	" updated_at FROM sites"

#define API_SITES_SCRIPT_MAX (64 * 1024)
#define API_SITES_ENV_MAX 100
#define API_SITES_ENV_VALUE_MAX (32 * 1024)

void
api_sites_list(struct api_req *r)
{
	static const char *const q[] = {"limit", "after", "server", NULL};
	struct store *s = api_req_store(r);
	struct store_stmt *st;
	struct api_page pg;
	json_t *items, *o;
	int64_t server, last = 0;
	int n = 0, more = 0, rc;

	if (api_req_query_allow(r, q) != 0 || api_page_parse(r, &pg) != 0 ||
	    api_query_id(r, "server", &server) != 0)
		return;
	if (s == NULL) {
		api_reply_db(r, s, "listing sites");
		return;
	}
	st = store_query(s,
			 API_SITES_COLS " WHERE id > ? AND (? < 0 OR server_id = ?)"
					" ORDER BY id LIMIT ?",
			 "iiii", pg.after, server, server, (int64_t)pg.limit + 1);
	if (st == NULL || (items = json_array()) == NULL) {
		store_finalize(st);
		api_reply_db(r, s, "listing sites");
		return;
	}
	while ((rc = store_step(st)) == STORE_ROW) {
		if (n == pg.limit) {
			more = 1;
			break;
		}
		if ((o = api_json_row(st)) == NULL) {
			rc = -1;
			break;
		}
		last = store_col_int(st, 0);
		json_array_append_new(items, o);
		n++;
	}
	store_finalize(st);
	if (rc < 0) {
		json_decref(items);
		api_reply_db(r, s, "listing sites");
		return;
	}
	api_page_reply(r, items, more, last);
}

void
api_sites_get(struct api_req *r)
{
	static const char *const q[] = {NULL};
	struct store *s = api_req_store(r);
	struct store_stmt *st;
	json_t *o = NULL;
	int64_t id;

	if (api_req_query_allow(r, q) != 0 ||
	    api_lookup(r, "site", "sites", "domain", api_req_param(r, 0), &id) != 0)
		return;
	st = store_query(s, API_SITES_COLS " WHERE id = ?", "i", id);
	if (st != NULL && store_step(st) == STORE_ROW)
		o = api_json_row(st);
	store_finalize(st);
	if (o == NULL) {
		api_reply_db(r, s, "reading the site");
		return;
	}
	api_reply_json(r, 200, o);
}

static int
api_sites_check_server(const char *field, const json_t *v, char *err, size_t errlen)
{
	if (json_is_integer(v)) {
		if (json_integer_value(v) < 1)
			return err_set(err, errlen, ERR_INVAL, "%s: ids are positive", field);
		return 0;
	}
	return api_check_server_name(field, v, err, errlen);
}

/* A path under the site's folder: relative, no "..", no empty segment. */
static int
api_sites_check_web_dir(const char *field, const json_t *v, char *err, size_t errlen)
{
	const char *p = json_string_value(v), *seg;
	size_t n = strlen(p), i, len;

	if (n == 0 || n > 255)
		return err_set(err, errlen, ERR_INVAL, "%s: must be 1-255 characters", field);
	for (i = 0; i < n; i++)
		if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') ||
		      (p[i] >= '0' && p[i] <= '9') || strchr("._-/", p[i]) != NULL))
			return err_set(err, errlen, ERR_INVAL,
				       "%s: may hold only letters, digits, '.', '_', '-' and '/'",
				       field);
	for (seg = p; *seg != '\0'; seg += len + (seg[len] == '/')) {
		len = strcspn(seg, "/");
		if (len == 0)
			return err_set(err, errlen, ERR_INVAL,
				       "%s: must be a relative path without empty parts", field);
		if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
			return err_set(err, errlen, ERR_INVAL,
				       "%s: must not contain '.' or '..' parts", field);
	}
	if (p[n - 1] == '/')
		return err_set(err, errlen, ERR_INVAL, "%s: must not end with '/'", field);
	return 0;
}

static int
api_sites_check_script(const char *field, const json_t *v, char *err, size_t errlen)
{
	if (json_string_length(v) > API_SITES_SCRIPT_MAX)
		return err_set(err, errlen, ERR_INVAL, "%s: at most %d bytes", field,
			       API_SITES_SCRIPT_MAX);
	return 0;
}

static int
api_sites_check_env(const char *field, const json_t *v, char *err, size_t errlen)
{
	const char *key;
	json_t *val;
	size_t i;

	if (json_object_size(v) > API_SITES_ENV_MAX)
		return err_set(err, errlen, ERR_INVAL, "%s: at most %d variables", field,
			       API_SITES_ENV_MAX);
	json_object_foreach((json_t *)v, key, val)
	{
		int ok =
		    strlen(key) >= 1 && strlen(key) <= 128 && !(key[0] >= '0' && key[0] <= '9');

		for (i = 0; ok && key[i] != '\0'; i++)
			ok = (key[i] >= 'A' && key[i] <= 'Z') || (key[i] >= 'a' && key[i] <= 'z') ||
			     (key[i] >= '0' && key[i] <= '9') || key[i] == '_';
		if (!ok)
			return err_set(err, errlen, ERR_INVAL,
				       "%s: %.64s: names are [A-Za-z_][A-Za-z0-9_]*, 1-128 long",
				       field, key);
		if (!json_is_string(val))
			return err_set(err, errlen, ERR_INVAL, "%s.%s: must be a string", field,
				       key);
		if (json_string_length(val) > API_SITES_ENV_VALUE_MAX)
			return err_set(err, errlen, ERR_INVAL, "%s.%s: at most %d bytes", field,
				       key, API_SITES_ENV_VALUE_MAX);
	}
	return 0;
}

static int
api_sites_check_keep(const char *field, const json_t *v, char *err, size_t errlen)
{
	if (json_integer_value(v) < 1 || json_integer_value(v) > 50)
		return err_set(err, errlen, ERR_INVAL, "%s: must be 1..50", field);
	return 0;
}

static int
api_sites_check_timeout(const char *field, const json_t *v, char *err, size_t errlen)
{
	if (json_integer_value(v) < 1000 || json_integer_value(v) > 86400000)
		return err_set(err, errlen, ERR_INVAL, "%s: must be 1000..86400000 (1 s to 24 h)",
			       field);
	return 0;
}

static const struct api_field api_sites_create_fields[] = {
    {"server", API_JSON_STRING | API_JSON_INTEGER, 1, api_sites_check_server},
    {"domain", API_JSON_STRING, 1, api_check_domain},
    {"aliases", API_JSON_ARRAY, 0, api_check_domains},
    {"web_dir", API_JSON_STRING, 0, api_sites_check_web_dir},
    {"repo_url", API_JSON_STRING, 0, api_check_repo_url},
    {"branch", API_JSON_STRING, 0, api_check_branch},
    {"deploy_script", API_JSON_STRING, 0, api_sites_check_script},
    {"env", API_JSON_OBJECT, 0, api_sites_check_env},
    {"zero_downtime", API_JSON_BOOL, 0, NULL},
    {"keep_releases", API_JSON_INTEGER, 0, api_sites_check_keep},
    {"deploy_timeout_ms", API_JSON_INTEGER, 0, api_sites_check_timeout},
    {NULL, 0, 0, NULL},
};

/* 1 when name is some site's domain or alias, 0 when free, -1 on a database error. */
static int
api_sites_name_taken(struct store *s, const char *name)
{
	return (int)store_int(s, -1,
			      "SELECT EXISTS (SELECT 1 FROM sites WHERE domain = ?1)"
			      " OR EXISTS (SELECT 1 FROM sites, json_each(sites.aliases)"
			      " WHERE json_each.value = ?1)",
			      "s", name);
}

void
api_sites_create(struct api_req *r)
{
	static const char *const q[] = {NULL};
	json_t *body = api_req_body(r), *server, *aliases;
	struct store *s = api_req_store(r);
	const char *domain;
	size_t i;
	int64_t n;
	int taken;

	if (api_req_query_allow(r, q) != 0 ||
	    api_json_fields(r, body, api_sites_create_fields) != 0)
		return;
	if (s == NULL) {
		api_reply_db(r, s, "creating a site");
		return;
	}
	server = json_object_get(body, "server");
	domain = json_string_value(json_object_get(body, "domain"));
	aliases = json_object_get(body, "aliases");
	if (json_is_integer(server))
		n = store_int(s, -1, "SELECT count(*) FROM servers WHERE id = ?", "i",
			      (int64_t)json_integer_value(server));
	else
		n = store_int(s, -1, "SELECT count(*) FROM servers WHERE name = ?", "s",
			      json_string_value(server));
	if (n < 0) {
		api_reply_db(r, s, "creating a site");
		return;
	}
	if (n == 0) {
		if (json_is_integer(server))
			api_reply_error(r, 400, "invalid_field", "server: no server with id %lld",
					(long long)json_integer_value(server));
		else
			api_reply_error(r, 400, "invalid_field", "server: no server named %s",
					json_string_value(server));
		return;
	}
	for (i = 0; i < json_array_size(aliases); i++) {
		if (strcmp(json_string_value(json_array_get(aliases, i)), domain) == 0) {
			api_reply_error(r, 400, "invalid_field", "aliases[%zu]: repeats the domain",
					i);
			return;
		}
	}
	if ((taken = api_sites_name_taken(s, domain)) != 0) {
		if (taken < 0)
			api_reply_db(r, s, "creating a site");
		else
			api_reply_error(r, 409, "conflict", "domain: %s is taken by another site",
					domain);
		return;
	}
	for (i = 0; i < json_array_size(aliases); i++) {
		const char *a = json_string_value(json_array_get(aliases, i));

		if ((taken = api_sites_name_taken(s, a)) != 0) {
			if (taken < 0)
				api_reply_db(r, s, "creating a site");
			else
				api_reply_error(r, 409, "conflict",
						"aliases[%zu]: %s is taken by another site", i, a);
			return;
		}
	}
	api_reply_error(r, 501, "not_implemented",
			"sites are not built yet; the request was valid and nothing was created");
}
