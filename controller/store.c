/*
 * store.c: the SQLite store, and the only file that includes sqlite3.h. Opens
 * connections (WAL, busy timeout, foreign keys), applies numbered migrations, and
 * wraps statements with bind-spec helpers. Callers write their SQL; no SQL about
 * resources lives here.
 */
#include "store.h"
#include "store_migrations.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "err.h"
#include "log.h"
#include "timeutil.h"

#define STORE_BUSY_MS 10000
#define STORE_CACHE 128 /* prepared statements kept per connection */
#define STORE_CACHE_WAYS 4

struct store_stmt {
	struct store *s;
	sqlite3_stmt *st;
	uint32_t hash; /* of the SQL text, when cached */
	size_t len;    /* of the SQL text */
	int cached;    /* lives in s->cache; finalize resets it instead */
	int busy;      /* handed out by store_query, not finalized yet */
};

/* Statements are compiled once per connection and reused: parsing was a third of the
 * hub's time under load. Keyed by the SQL text (callers may build SQL in buffers). */
struct store {
	sqlite3 *db;
	int64_t busy_since; /* monotonic ms of the first try of the current wait */
	int after_commit;   /* store_after_commit asked for in this transaction */
	struct store_stmt cache[STORE_CACHE];
};

static int store_busy_cb(void *arg, int count);
static void (*store_after_commit_fn)(void);

static char *store_global_path;
static pthread_key_t store_tls_key;
static pthread_once_t store_tls_once = PTHREAD_ONCE_INIT;

int64_t
store_now_ms(void)
{
	return time_now_ms();
}

int
store_open(const char *path, struct store **out, char *err, size_t errlen)
{
	struct store *s;
	int rc;

	*out = NULL;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	rc = sqlite3_open_v2(
	    path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		err_set(err, errlen, ERR_DB, "%s: %s", path,
			s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
		goto fail;
	}
	sqlite3_busy_handler(s->db, store_busy_cb, s);
	sqlite3_extended_result_codes(s->db, 1);
	if (store_exec_script(s,
			      "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
			      " PRAGMA foreign_keys=ON;",
			      err, errlen) != 0)
		goto fail;
	*out = s;
	return 0;
fail:
	if (s->db)
		sqlite3_close(s->db);
	free(s);
	return ERR_DB;
}

void
store_close(struct store *s)
{
	size_t i;

	if (s == NULL)
		return;
	for (i = 0; i < STORE_CACHE; i++)
		if (s->cache[i].st)
			sqlite3_finalize(s->cache[i].st);
	sqlite3_close_v2(s->db);
	free(s);
}

int
store_exec_script(struct store *s, const char *sql, char *err, size_t errlen)
{
	char *msg = NULL;

	if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		err_set(err, errlen, ERR_DB, "sqlite: %s", msg ? msg : sqlite3_errmsg(s->db));
		sqlite3_free(msg);
		return ERR_DB;
	}
	return 0;
}

int
store_schema_version(struct store *s)
{
	return (int)store_int(s, 0, "PRAGMA user_version", "");
}

int
store_latest_version(void)
{
	return store_nmigrations;
}

int
store_migrate(struct store *s, int target, char *err, size_t errlen)
{
	char pragma[64];
	int v;

	if (target < 0)
		target = store_nmigrations;
	if (target > store_nmigrations)
		return err_set(err, errlen, ERR_INVAL, "no migration %d (latest is %d)", target,
			       store_nmigrations);
	v = store_schema_version(s);
	if (v > store_nmigrations)
		return err_set(err, errlen, ERR_DB,
			       "database schema %d is newer than this program (%d)", v,
			       store_nmigrations);
	for (; v < target; v++) {
		if (store_begin(s) != 0)
			return err_set(err, errlen, ERR_DB, "migration %d: %s", v + 1,
				       store_errmsg(s));
		/* Re-read under the write lock: another process may have migrated. */
		if (store_schema_version(s) != v) {
			store_rollback(s);
			v = store_schema_version(s) - 1;
			continue;
		}
		if (store_exec_script(s, store_migrations[v], err, errlen) != 0)
			goto fail;
		snprintf(pragma, sizeof(pragma), "PRAGMA user_version=%d", v + 1);
		if (store_exec_script(s, pragma, err, errlen) != 0)
			goto fail;
		if (store_commit(s) != 0) {
			err_set(err, errlen, ERR_DB, "commit: %s", store_errmsg(s));
			goto fail;
		}
		log_info("store: migrated to schema %d", v + 1);
	}
	return 0;
fail:
	store_rollback(s);
	{
		char tmp[512];

		snprintf(tmp, sizeof(tmp), "migration %d: %s", v + 1, err ? err : "");
		return err_set(err, errlen, ERR_DB, "%s", tmp);
	}
}

static void
store_tls_close(void *p)
{
	store_close(p);
}

static void
store_tls_make(void)
{
	pthread_key_create(&store_tls_key, store_tls_close);
}

int
store_global_init(const char *path, char *err, size_t errlen)
{
	struct store *s;
	int rc;

	pthread_once(&store_tls_once, store_tls_make);
	if ((rc = store_open(path, &s, err, errlen)) != 0)
		return rc;
	if ((rc = store_migrate(s, -1, err, errlen)) != 0) {
		store_close(s);
		return rc;
	}
	free(store_global_path);
	if ((store_global_path = strdup(path)) == NULL) {
		store_close(s);
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	}
	pthread_setspecific(store_tls_key, s);
	return 0;
}

struct store *
store_thread(void)
{
	struct store *s;
	char err[256];

	pthread_once(&store_tls_once, store_tls_make);
	if ((s = pthread_getspecific(store_tls_key)) != NULL)
		return s;
	if (store_global_path == NULL) {
		log_warnx("store: no database opened");
		return NULL;
	}
	if (store_open(store_global_path, &s, err, sizeof(err)) != 0) {
		log_warnx("store: %s", err);
		return NULL;
	}
	pthread_setspecific(store_tls_key, s);
	return s;
}

void
store_global_fini(void)
{
	struct store *s;

	pthread_once(&store_tls_once, store_tls_make);
	if ((s = pthread_getspecific(store_tls_key)) != NULL) {
		store_close(s);
		pthread_setspecific(store_tls_key, NULL);
	}
	free(store_global_path);
	store_global_path = NULL;
}

int
store_begin(struct store *s)
{
	return store_exec(s, "BEGIN IMMEDIATE", "");
}

int
store_commit(struct store *s)
{
	int rc = store_exec(s, "COMMIT", "");

	if (rc == 0 && s->after_commit) {
		s->after_commit = 0;
		if (store_after_commit_fn)
			store_after_commit_fn();
	}
	return rc;
}

void
store_rollback(struct store *s)
{
	s->after_commit = 0;
	if (!sqlite3_get_autocommit(s->db))
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

void
store_set_after_commit(void (*fn)(void))
{
	store_after_commit_fn = fn;
}

int
store_after_commit(struct store *s)
{
	if (sqlite3_get_autocommit(s->db))
		return 0; /* no transaction: what was written is committed already */
	s->after_commit = 1;
	return 1;
}

static int
store_bindv(struct store_stmt *st, const char *spec, va_list ap)
{
	int i, rc = SQLITE_OK;

	for (i = 0; spec[i] != '\0' && rc == SQLITE_OK; i++) {
		switch (spec[i]) {
		case 'i':
			rc = sqlite3_bind_int64(st->st, i + 1, va_arg(ap, int64_t));
			break;
		case 'd':
			rc = sqlite3_bind_int64(st->st, i + 1, va_arg(ap, int));
			break;
		case 's': {
			const char *v = va_arg(ap, const char *);

			rc = v ? sqlite3_bind_text(st->st, i + 1, v, -1, SQLITE_TRANSIENT)
			       : sqlite3_bind_null(st->st, i + 1);
			break;
		}
		case 'n':
			rc = sqlite3_bind_null(st->st, i + 1);
			break;
		case 't': {
			const char *p = va_arg(ap, const char *);
			size_t n = va_arg(ap, size_t);

			rc =
			    sqlite3_bind_text64(st->st, i + 1, p, n, SQLITE_TRANSIENT, SQLITE_UTF8);
			break;
		}
		case 'b': {
			const void *p = va_arg(ap, const void *);
			size_t n = va_arg(ap, size_t);

			rc = sqlite3_bind_blob64(st->st, i + 1, p, n, SQLITE_TRANSIENT);
			break;
		}
		default:
			log_warnx("store: bad bind spec '%c'", spec[i]);
			return -1;
		}
	}
	if (rc != SQLITE_OK) {
		log_warnx("store: bind %d: %s", i, sqlite3_errmsg(st->s->db));
		return -1;
	}
	return 0;
}

/* Waits for the write lock in short steps: SQLite's own busy timeout sleeps 1, 2, 5,
 * 10... 100 ms, while the lock here is held for well under a millisecond, so a waiter
 * slept far longer than the holder needed. */
static int
store_busy_cb(void *arg, int count)
{
	struct store *s = arg;
	int64_t now = time_mono_ms();
	struct timespec ts;
	long us;

	if (count == 0)
		s->busy_since = now;
	if (now - s->busy_since >= STORE_BUSY_MS)
		return 0;
	us = count < 6 ? 50L << count : 2000; /* 50 us .. 1.6 ms, then 2 ms */
	ts.tv_sec = 0;
	ts.tv_nsec = us * 1000;
	nanosleep(&ts, NULL);
	return 1;
}

/* FNV-1a over the length and at most the first and last 32 bytes: SQL texts differ early
 * or late, and hashing whole statements byte by byte was a tenth of the hub's time. */
static uint32_t
store_hash(const char *sql, size_t len)
{
	uint32_t h = 2166136261u ^ (uint32_t)len;
	size_t i, head = len < 32 ? len : 32, tail = len - head < 32 ? len - head : 32;

	for (i = 0; i < head; i++)
		h = (h ^ (uint8_t)sql[i]) * 16777619u;
	for (i = len - tail; i < len; i++)
		h = (h ^ (uint8_t)sql[i]) * 16777619u;
	return h;
}

/* A cached statement for sql, ready to bind; a fresh uncached one when every way of its
 * set is in use; NULL when it does not compile. */
static struct store_stmt *
store_prepare(struct store *s, const char *sql)
{
	size_t sqllen = strlen(sql);
	uint32_t h = store_hash(sql, sqllen);
	size_t base = (h % (STORE_CACHE / STORE_CACHE_WAYS)) * STORE_CACHE_WAYS, i;
	struct store_stmt *st, *victim = NULL;

	for (i = 0; i < STORE_CACHE_WAYS; i++) {
		st = &s->cache[base + i];
		if (st->st && !st->busy && st->hash == h && st->len == sqllen &&
		    strncmp(sqlite3_sql(st->st), sql, sqllen + 1) == 0) {
			st->busy = 1;
			return st;
		}
		if (!st->busy && (victim == NULL || (victim->st && !st->st)))
			victim = st;
	}
	if (victim == NULL) {
		if ((st = calloc(1, sizeof(*st))) == NULL)
			return NULL;
	} else {
		st = victim;
		if (st->st)
			sqlite3_finalize(st->st);
		memset(st, 0, sizeof(*st));
	}
	st->s = s;
	if (sqlite3_prepare_v3(s->db, sql, -1, victim ? SQLITE_PREPARE_PERSISTENT : 0, &st->st,
			       NULL) != SQLITE_OK) {
		log_warnx("store: prepare: %s: %s", sqlite3_errmsg(s->db), sql);
		if (victim == NULL)
			free(st);
		else
			memset(st, 0, sizeof(*st));
		return NULL;
	}
	st->hash = h;
	st->len = sqllen;
	st->cached = victim != NULL;
	st->busy = 1;
	return st;
}

static struct store_stmt *
store_vquery(struct store *s, const char *sql, const char *spec, va_list ap)
{
	struct store_stmt *st;

	if ((st = store_prepare(s, sql)) == NULL)
		return NULL;
	if (store_bindv(st, spec, ap) != 0) {
		store_finalize(st);
		return NULL;
	}
	return st;
}

int
store_rebind(struct store_stmt *st, const char *spec, ...)
{
	va_list ap;
	int rc;

	sqlite3_reset(st->st);
	va_start(ap, spec);
	rc = store_bindv(st, spec, ap);
	va_end(ap);
	return rc;
}

struct store_stmt *
store_query(struct store *s, const char *sql, const char *spec, ...)
{
	struct store_stmt *st;
	va_list ap;

	va_start(ap, spec);
	st = store_vquery(s, sql, spec, ap);
	va_end(ap);
	return st;
}

int
store_exec(struct store *s, const char *sql, const char *spec, ...)
{
	struct store_stmt *st;
	va_list ap;
	int rc;

	va_start(ap, spec);
	st = store_vquery(s, sql, spec, ap);
	va_end(ap);
	if (st == NULL)
		return ERR_DB;
	while ((rc = store_step(st)) == STORE_ROW)
		;
	store_finalize(st);
	return rc == STORE_DONE ? 0 : ERR_DB;
}

int
store_step(struct store_stmt *st)
{
	int rc = sqlite3_step(st->st);

	if (rc == SQLITE_ROW)
		return STORE_ROW;
	if (rc == SQLITE_DONE)
		return STORE_DONE;
	if ((rc & 0xff) != SQLITE_CONSTRAINT)
		log_warnx("store: step: %s", sqlite3_errmsg(st->s->db));
	return -1;
}

int64_t
store_col_int(struct store_stmt *st, int col)
{
	return sqlite3_column_int64(st->st, col);
}

const char *
store_col_text(struct store_stmt *st, int col)
{
	return (const char *)sqlite3_column_text(st->st, col);
}

int
store_col_is_null(struct store_stmt *st, int col)
{
	return sqlite3_column_type(st->st, col) == SQLITE_NULL;
}

int
store_col_type_is_int(struct store_stmt *st, int col)
{
	return sqlite3_column_type(st->st, col) == SQLITE_INTEGER;
}

const char *
store_col_name(struct store_stmt *st, int col)
{
	return sqlite3_column_name(st->st, col);
}

int
store_col_count(struct store_stmt *st)
{
	return sqlite3_column_count(st->st);
}

void
store_finalize(struct store_stmt *st)
{
	if (st == NULL)
		return;
	if (st->cached) {
		sqlite3_reset(st->st);
		sqlite3_clear_bindings(st->st);
		st->busy = 0;
		return;
	}
	sqlite3_finalize(st->st);
	free(st);
}

int64_t
store_last_id(struct store *s)
{
	return sqlite3_last_insert_rowid(s->db);
}

int
store_changes(struct store *s)
{
	return sqlite3_changes(s->db);
}

const char *
store_errmsg(struct store *s)
{
	return sqlite3_errmsg(s->db);
}

int
store_err_is_unique(struct store *s)
{
	int rc = sqlite3_extended_errcode(s->db);

	return rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY;
}

int64_t
store_int(struct store *s, int64_t def, const char *sql, const char *spec, ...)
{
	struct store_stmt *st;
	va_list ap;
	int64_t v = def;

	va_start(ap, spec);
	st = store_vquery(s, sql, spec, ap);
	va_end(ap);
	if (st == NULL)
		return def;
	if (store_step(st) == STORE_ROW && !store_col_is_null(st, 0))
		v = store_col_int(st, 0);
	store_finalize(st);
	return v;
}

char *
store_text(struct store *s, const char *sql, const char *spec, ...)
{
	struct store_stmt *st;
	va_list ap;
	char *v = NULL;

	va_start(ap, spec);
	st = store_vquery(s, sql, spec, ap);
	va_end(ap);
	if (st == NULL)
		return NULL;
	if (store_step(st) == STORE_ROW && !store_col_is_null(st, 0))
		v = strdup(store_col_text(st, 0));
	store_finalize(st);
	return v;
}
