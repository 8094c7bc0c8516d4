/*
 * fleet.c: server selectors of fleet operations (ids/names, tag, all) resolved to ids.
 * Read-only on the store. Called by api_keys.c and api_batches.c.
 */
#include "fleet.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "names.h"
#include "store.h"

#define FLEET_MAX 100000

static int
fleet_cmp(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

/* Appends the ids of a query's first column to *ids. */
static int
fleet_collect(struct store_stmt *st, int64_t **ids, size_t *n, size_t *cap)
{
	int64_t *v;
	int rc;

	while ((rc = store_step(st)) == STORE_ROW) {
		if (*n == *cap) {
			*cap = *cap ? *cap * 2 : 64;
			if (*cap > FLEET_MAX || (v = realloc(*ids, *cap * sizeof(*v))) == NULL)
				return ERR_NOMEM;
			*ids = v;
		}
		(*ids)[(*n)++] = store_col_int(st, 0);
	}
	return rc == STORE_DONE ? 0 : ERR_DB;
}

int
fleet_select(struct store *s, const json_t *servers, const char *tag, int all, int64_t **ids,
	     size_t *n, char *err, size_t errlen)
{
	struct store_stmt *st;
	size_t cap = 0, i, j, given = (servers != NULL) + (tag != NULL) + (all != 0);
	char why[256];
	json_t *v;
	int rc = 0;

	*ids = NULL;
	*n = 0;
	if (given != 1)
		return err_set(err, errlen, ERR_INVAL,
			       "servers: give exactly one of servers, tag or all");
	if (servers != NULL) {
		if (!json_is_array(servers) || json_array_size(servers) == 0)
			return err_set(err, errlen, ERR_INVAL,
				       "servers: must be a non-empty array of ids and names");
		if (json_array_size(servers) > FLEET_MAX)
			return err_set(err, errlen, ERR_INVAL, "servers: too many");
		json_array_foreach(servers, i, v)
		{
			if (json_is_integer(v))
				st = store_query(
				    s,
				    "SELECT id FROM servers WHERE id = ? AND state NOT IN"
				    " ('deleting', 'deleted')",
				    "i", (int64_t)json_integer_value(v));
			else if (json_is_string(v) &&
				 names_server(json_string_value(v), why, sizeof(why)) == 0)
				st = store_query(
				    s,
				    "SELECT id FROM servers WHERE name = ? AND state NOT"
				    " IN ('deleting', 'deleted')",
				    "s", json_string_value(v));
			else {
				rc = err_set(err, errlen, ERR_INVAL,
					     "servers[%zu]: must be a server id or name", i);
				goto fail;
			}
			if (st == NULL) {
				rc = err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
				goto fail;
			}
			j = *n;
			rc = fleet_collect(st, ids, n, &cap);
			store_finalize(st);
			if (rc != 0) {
				rc = err_set(err, errlen, rc, "selecting servers: %s",
					     store_errmsg(s));
				goto fail;
			}
			if (*n == j) {
				if (json_is_integer(v))
					rc = err_set(err, errlen, ERR_INVAL,
						     "servers[%zu]: no server with id %lld", i,
						     (long long)json_integer_value(v));
				else
					rc = err_set(err, errlen, ERR_INVAL,
						     "servers[%zu]: no server named %s", i,
						     json_string_value(v));
				goto fail;
			}
		}
		qsort(*ids, *n, sizeof(**ids), fleet_cmp);
		for (i = j = 0; i < *n; i++)
			if (j == 0 || (*ids)[j - 1] != (*ids)[i])
				(*ids)[j++] = (*ids)[i];
		*n = j;
		return 0;
	}
	if (tag != NULL) {
		if (names_tag(tag, why, sizeof(why)) != 0)
			return err_set(err, errlen, ERR_INVAL, "tag: %s", why);
		st = store_query(s,
				 "SELECT id FROM servers WHERE id IN (SELECT server_id FROM"
				 " server_tags WHERE tag = ?) AND state NOT IN ('deleting',"
				 " 'deleted') ORDER BY id",
				 "s", tag);
	} else {
		st = store_query(s,
				 "SELECT id FROM servers WHERE state NOT IN ('deleting', 'deleted')"
				 " ORDER BY id",
				 "");
	}
	if (st == NULL)
		return err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
	rc = fleet_collect(st, ids, n, &cap);
	store_finalize(st);
	if (rc != 0) {
		rc = err_set(err, errlen, rc, "selecting servers: %s", store_errmsg(s));
		goto fail;
	}
	if (*n == 0) {
		if (tag != NULL)
			rc = err_set(err, errlen, ERR_INVAL, "tag %s: no server has it", tag);
		else
			rc = err_set(err, errlen, ERR_INVAL, "all: there are no servers");
		goto fail;
	}
	return 0;
fail:
	free(*ids);
	*ids = NULL;
	*n = 0;
	return rc;
}

char *
fleet_describe(const json_t *servers, const char *tag, int all)
{
	json_t *o = json_object();
	char *text;

	if (o == NULL)
		return NULL;
	if (servers != NULL)
		json_object_set(o, "servers", (json_t *)servers);
	else if (tag != NULL)
		json_object_set_new(o, "tag", json_string(tag));
	else if (all)
		json_object_set_new(o, "all", json_true());
	text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return text;
}
