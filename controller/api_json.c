/*
 * api_json.c: strict checks of request bodies against field tables, query and
 * pagination parsing, and JSON rendering of store rows, for the API handlers.
 * Knows nothing of HTTP (api.c) or of any one resource (api_<resource>.c).
 */
#include "api_json.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "names.h"
#include "store.h"
#include "timeutil.h"

#define API_JSON_ARRAY_MAX 32

/* ---- body fields ---- */

static const char *
api_json_type_words(unsigned types)
{
	switch (types) {
	case API_JSON_STRING:
		return "a string";
	case API_JSON_INTEGER:
		return "an integer";
	case API_JSON_BOOL:
		return "true or false";
	case API_JSON_ARRAY:
		return "an array";
	case API_JSON_OBJECT:
		return "an object";
	case API_JSON_STRING | API_JSON_INTEGER:
		return "a string or an integer";
	default:
		return "of another type";
	}
}

static int
api_json_type_ok(const json_t *v, unsigned types)
{
	if (json_is_string(v))
		return (types & API_JSON_STRING) != 0;
	if (json_is_integer(v))
		return (types & API_JSON_INTEGER) != 0;
	if (json_is_boolean(v))
		return (types & API_JSON_BOOL) != 0;
	if (json_is_array(v))
		return (types & API_JSON_ARRAY) != 0;
	if (json_is_object(v))
		return (types & API_JSON_OBJECT) != 0;
	return 0; /* null and reals are never accepted */
}

int
api_json_fields(struct api_req *r, const json_t *obj, const struct api_field *fields)
{
	const struct api_field *f;
	const char *key;
	json_t *v;
	char err[512];

	json_object_foreach((json_t *)obj, key, v)
	{
		for (f = fields; f->name != NULL; f++)
			if (strcmp(f->name, key) == 0)
				break;
		if (f->name == NULL) {
			api_reply_error(r, 400, "unknown_field", "%.64s: unknown field", key);
			return -1;
		}
	}
	for (f = fields; f->name != NULL; f++) {
		if (f->required && json_object_get(obj, f->name) == NULL) {
			api_reply_error(r, 400, "missing_field", "%s: required", f->name);
			return -1;
		}
	}
	for (f = fields; f->name != NULL; f++) {
		if ((v = json_object_get(obj, f->name)) == NULL)
			continue;
		if (!api_json_type_ok(v, f->types)) {
			api_reply_error(r, 400, "invalid_field", "%s: must be %s", f->name,
					api_json_type_words(f->types));
			return -1;
		}
		if (f->check != NULL && f->check(f->name, v, err, sizeof(err)) != 0) {
			api_reply_error(r, 400, "invalid_field", "%s", err);
			return -1;
		}
	}
	return 0;
}

/* Runs a names_* grammar on a string value and prefixes its message with the field. */
static int
api_check_names(const char *field, const json_t *v,
		int (*fn)(const char *s, char *err, size_t errlen), char *err, size_t errlen)
{
	char why[256];

	if (!json_is_string(v))
		return err_set(err, errlen, ERR_INVAL, "%s: must be a string", field);
	if (fn(json_string_value(v), why, sizeof(why)) != 0)
		return err_set(err, errlen, ERR_INVAL, "%s: %s", field, why);
	return 0;
}

static int
api_names_domain_plain(const char *s, char *err, size_t errlen)
{
	return names_domain(s, 0, err, errlen);
}

static int
api_names_domain_wild(const char *s, char *err, size_t errlen)
{
	return names_domain(s, 1, err, errlen);
}

int
api_check_server_name(const char *field, const json_t *v, char *err, size_t errlen)
{
	return api_check_names(field, v, names_server, err, errlen);
}

int
api_check_domain(const char *field, const json_t *v, char *err, size_t errlen)
{
	return api_check_names(field, v, api_names_domain_plain, err, errlen);
}

int
api_check_branch(const char *field, const json_t *v, char *err, size_t errlen)
{
	return api_check_names(field, v, names_branch, err, errlen);
}

int
api_check_user(const char *field, const json_t *v, char *err, size_t errlen)
{
	return api_check_names(field, v, names_user, err, errlen);
}

int
api_check_repo_url(const char *field, const json_t *v, char *err, size_t errlen)
{
	return api_check_names(field, v, names_repo_url, err, errlen);
}

int
api_check_label(const char *field, const json_t *v, char *err, size_t errlen)
{
	return api_check_names(field, v, names_label, err, errlen);
}

static int
api_names_slug(const char *s, char *err, size_t errlen)
{
	size_t i, n = strlen(s);

	if (n == 0 || n > 64)
		return err_set(err, errlen, ERR_INVAL, "must be 1-64 characters");
	if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
		return err_set(err, errlen, ERR_INVAL, "must start with a letter or digit");
	for (i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '.' ||
		      s[i] == '_' || s[i] == '-'))
			return err_set(err, errlen, ERR_INVAL,
				       "may hold only a-z, 0-9, '.', '_' and '-'");
	return 0;
}

int
api_check_slug(const char *field, const json_t *v, char *err, size_t errlen)
{
	return api_check_names(field, v, api_names_slug, err, errlen);
}

static int
api_names_ipv4(const char *s, char *err, size_t errlen)
{
	struct in_addr a;

	if (inet_pton(AF_INET, s, &a) != 1)
		return err_set(err, errlen, ERR_INVAL, "must be an IPv4 address (203.0.113.5)");
	return 0;
}

int
api_check_ipv4(const char *field, const json_t *v, char *err, size_t errlen)
{
	return api_check_names(field, v, api_names_ipv4, err, errlen);
}

int
api_check_port(const char *field, const json_t *v, char *err, size_t errlen)
{
	json_int_t p = json_integer_value(v);

	if (!json_is_integer(v) || p < 1 || p > 65535)
		return err_set(err, errlen, ERR_INVAL, "%s: must be 1..65535", field);
	return 0;
}

/* An array of at most API_JSON_ARRAY_MAX distinct strings, each passing fn. */
static int
api_check_set(const char *field, const json_t *v,
	      int (*fn)(const char *s, char *err, size_t errlen), char *err, size_t errlen)
{
	char why[256];
	size_t i, j;

	if (!json_is_array(v))
		return err_set(err, errlen, ERR_INVAL, "%s: must be an array", field);
	if (json_array_size(v) > API_JSON_ARRAY_MAX)
		return err_set(err, errlen, ERR_INVAL, "%s: at most %d entries", field,
			       API_JSON_ARRAY_MAX);
	for (i = 0; i < json_array_size(v); i++) {
		const json_t *e = json_array_get(v, i);

		if (!json_is_string(e))
			return err_set(err, errlen, ERR_INVAL, "%s[%zu]: must be a string", field,
				       i);
		if (fn(json_string_value(e), why, sizeof(why)) != 0)
			return err_set(err, errlen, ERR_INVAL, "%s[%zu]: %s", field, i, why);
		for (j = 0; j < i; j++)
			if (strcmp(json_string_value(json_array_get(v, j)), json_string_value(e)) ==
			    0)
				return err_set(err, errlen, ERR_INVAL,
					       "%s[%zu]: %s is listed twice", field, i,
					       json_string_value(e));
	}
	return 0;
}

int
api_check_tags(const char *field, const json_t *v, char *err, size_t errlen)
{
	return api_check_set(field, v, names_tag, err, errlen);
}

int
api_check_domains(const char *field, const json_t *v, char *err, size_t errlen)
{
	return api_check_set(field, v, api_names_domain_wild, err, errlen);
}

/* ---- query parameters ---- */

int
api_parse_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
	int64_t v = 0;
	size_t i;

	if (s == NULL || s[0] == '\0' || strlen(s) > 18)
		return -1;
	if (s[0] == '0' && s[1] != '\0')
		return -1;
	for (i = 0; s[i] != '\0'; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	if (v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

int
api_page_parse(struct api_req *r, struct api_page *p)
{
	const char *s;
	int64_t v;

	p->limit = API_LIMIT_DEFAULT;
	p->after = 0;
	if ((s = api_req_query(r, "limit")) != NULL) {
		if (api_parse_int(s, 1, API_LIMIT_MAX, &v) != 0) {
			api_reply_error(r, 400, "invalid_parameter", "limit: must be 1..%d",
					API_LIMIT_MAX);
			return -1;
		}
		p->limit = (int)v;
	}
	if ((s = api_req_query(r, "after")) != NULL) {
		if (api_parse_int(s, 0, INT64_MAX, &v) != 0) {
			api_reply_error(r, 400, "invalid_parameter",
					"after: must be a non-negative integer");
			return -1;
		}
		p->after = v;
	}
	return 0;
}

int
api_query_id(struct api_req *r, const char *name, int64_t *out)
{
	const char *s = api_req_query(r, name);

	*out = -1;
	if (s == NULL)
		return 0;
	if (api_parse_int(s, 1, INT64_MAX, out) != 0) {
		api_reply_error(r, 400, "invalid_parameter", "%s: must be a positive integer",
				name);
		return -1;
	}
	return 0;
}

int
api_param_id(struct api_req *r, int i, const char *what, int64_t *out)
{
	if (api_parse_int(api_req_param(r, i), 1, INT64_MAX, out) != 0) {
		api_reply_error(r, 400, "invalid_parameter", "%s: must be a positive integer",
				what);
		return -1;
	}
	return 0;
}

int
api_lookup(struct api_req *r, const char *kind, const char *table, const char *name_col,
	   const char *ref, int64_t *id)
{
	struct store *s = api_req_store(r);
	struct store_stmt *st;
	char sql[256];
	int64_t v;
	int rc;

	if (s == NULL) {
		api_reply_error(r, 500, "internal", "cannot open the database");
		return -1;
	}
	if (ref != NULL && api_parse_int(ref, 1, INT64_MAX, &v) == 0) {
		snprintf(sql, sizeof(sql), "SELECT id FROM %s WHERE id = ?", table);
		st = store_query(s, sql, "i", v);
	} else if (ref != NULL && name_col != NULL) {
		snprintf(sql, sizeof(sql), "SELECT id FROM %s WHERE %s = ?", table, name_col);
		st = store_query(s, sql, "s", ref);
	} else {
		api_reply_error(r, 400, "invalid_parameter", "%s id: must be a positive integer",
				kind);
		return -1;
	}
	if (st == NULL) {
		api_reply_db(r, s, kind);
		return -1;
	}
	rc = store_step(st);
	if (rc == STORE_ROW)
		*id = store_col_int(st, 0);
	store_finalize(st);
	if (rc == STORE_ROW)
		return 0;
	if (rc < 0) {
		api_reply_db(r, s, kind);
		return -1;
	}
	api_reply_error(r, 404, "not_found", "%s %.100s: not found", kind, ref);
	return -1;
}

void
api_reply_db(struct api_req *r, struct store *s, const char *what)
{
	api_reply_error(r, 500, "internal", "%s: database error: %s", what,
			s ? store_errmsg(s) : "no connection");
}

void
api_page_reply(struct api_req *r, json_t *items, int more, int64_t last)
{
	json_t *o;

	if (items == NULL) {
		api_reply_json(r, 500, NULL);
		return;
	}
	o = json_pack("{s:o, s:o}", "items", items, "next",
		      more ? json_integer((json_int_t)last) : json_null());
	api_reply_json(r, 200, o);
}

/* ---- rendering ---- */

enum api_col_kind { API_COL_PLAIN, API_COL_TIME, API_COL_JSON, API_COL_BOOL };

static const struct {
	const char *name;
	enum api_col_kind kind;
} api_json_cols[] = {
    {"time", API_COL_TIME},	 {"last_seen", API_COL_TIME},
    {"run_after", API_COL_TIME}, {"checklist", API_COL_JSON},
    {"facts", API_COL_JSON},	 {"data", API_COL_JSON},
    {"payload", API_COL_JSON},	 {"result", API_COL_JSON},
    {"aliases", API_COL_JSON},	 {"zero_downtime", API_COL_BOOL},
    {"acked", API_COL_BOOL},	 {"cancel_requested", API_COL_BOOL},
};

static enum api_col_kind
api_json_col_kind(const char *name)
{
	size_t i, n = strlen(name);

	for (i = 0; i < sizeof(api_json_cols) / sizeof(api_json_cols[0]); i++)
		if (strcmp(api_json_cols[i].name, name) == 0)
			return api_json_cols[i].kind;
	if (n > 3 && strcmp(name + n - 3, "_at") == 0)
		return API_COL_TIME;
	return API_COL_PLAIN;
}

/* Text that may not be UTF-8 (command output): invalid bytes become U+FFFD. */
static json_t *
api_json_text(const char *s)
{
	json_t *v;
	size_t i = 0, n = strlen(s), k, need;
	unsigned char c;
	char *out, *o;

	if ((v = json_string(s)) != NULL)
		return v;
	if ((out = malloc(n * 3 + 1)) == NULL)
		return NULL;
	for (o = out; i < n;) {
		c = (unsigned char)s[i];
		need = c < 0x80		    ? 0
		       : (c & 0xe0) == 0xc0 ? 1
		       : (c & 0xf0) == 0xe0 ? 2
		       : (c & 0xf8) == 0xf0 ? 3
					    : 9;
		for (k = 1; need != 9 && k <= need; k++)
			if (i + k >= n || ((unsigned char)s[i + k] & 0xc0) != 0x80)
				break;
		if (need == 9 || k <= need) {
			memcpy(o, "\xef\xbf\xbd", 3);
			o += 3;
			i++;
			continue;
		}
		memcpy(o, s + i, need + 1);
		o += need + 1;
		i += need + 1;
	}
	*o = '\0';
	/* Overlong forms and surrogates may still fail: give up on the text then. */
	v = json_string(out);
	free(out);
	return v ? v : json_string("(not valid UTF-8)");
}

json_t *
api_json_time(int64_t ms)
{
	char iso[32];

	time_iso(ms, iso);
	return json_string(iso);
}

json_t *
api_json_row(struct store_stmt *st)
{
	json_t *o, *v;
	const char *name, *text;
	int i, n = store_col_count(st);

	if ((o = json_object()) == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		name = store_col_name(st, i);
		if (store_col_is_null(st, i)) {
			v = json_null();
		} else {
			switch (api_json_col_kind(name)) {
			case API_COL_TIME:
				v = api_json_time(store_col_int(st, i));
				break;
			case API_COL_BOOL:
				v = json_boolean(store_col_int(st, i) != 0);
				break;
			case API_COL_JSON:
				text = store_col_text(st, i);
				v = json_loads(text, JSON_DECODE_ANY, NULL);
				if (v == NULL) /* never lose data: show it as text */
					v = api_json_text(text);
				break;
			default:
				if (store_col_type_is_int(st, i))
					v = json_integer((json_int_t)store_col_int(st, i));
				else
					v = api_json_text(store_col_text(st, i));
				break;
			}
		}
		if (v == NULL || json_object_set_new(o, name, v) != 0) {
			json_decref(o);
			return NULL;
		}
	}
	return o;
}
