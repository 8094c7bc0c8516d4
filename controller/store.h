/*
 * store.h: the controller's SQLite store. store.c is the only file that includes
 * sqlite3.h. A struct store is one connection; use it from one thread at a time.
 * store_thread() hands each thread its own connection, opened on first use.
 * All calls block on disk I/O (and on SQLITE_BUSY up to the busy timeout).
 */
#ifndef STOKE_STORE_H
#define STOKE_STORE_H

#include <stddef.h>
#include <stdint.h>

struct store;
struct store_stmt;

#define STORE_ROW 1
#define STORE_DONE 0

/* Opens path (creating it), sets WAL, busy timeout, foreign keys. Does not migrate. */
int store_open(const char *path, struct store **out, char *err, size_t errlen);
void store_close(struct store *s);

/* Applies migrations up to target (-1 = latest) in one transaction each. */
int store_migrate(struct store *s, int target, char *err, size_t errlen);
int store_schema_version(struct store *s);
int store_latest_version(void);

/* Process-wide default path: opens it, migrates to latest. Call once at start-up. */
int store_global_init(const char *path, char *err, size_t errlen);
/* The calling thread's connection to the global path (opened on first use, closed at
 * thread exit). NULL only if opening fails (logged). */
struct store *store_thread(void);
void store_global_fini(void);

/* BEGIN IMMEDIATE / COMMIT / ROLLBACK. Transactions do not nest. */
int store_begin(struct store *s);
int store_commit(struct store *s);
void store_rollback(struct store *s);
/* One process-wide function that store_commit calls after a commit in which
 * store_after_commit was called (events.c: wake readers only once what they will read is
 * committed). store_after_commit returns 0 when s is in no transaction (nothing to wait
 * for: call it now), 1 when the call is deferred to the commit. */
void store_set_after_commit(void (*fn)(void));
int store_after_commit(struct store *s);

/*
 * Statements. Bind spec characters, one per '?' in order:
 *   'i' int64_t, 'd' int (promoted), 's' const char * (NULL binds NULL), 'n' NULL (no arg),
 *   'b' blob: const void *, size_t; 't' text of a given length: const char *, size_t.
 * store_query prepares and binds, returns the statement ready for store_step (NULL on error,
 * with the error text in store_errmsg). store_exec runs a statement to completion.
 */
struct store_stmt *store_query(struct store *s, const char *sql, const char *spec, ...);
int store_exec(struct store *s, const char *sql, const char *spec, ...);
/* Resets st and binds new values (every '?' again): runs one statement many times. */
int store_rebind(struct store_stmt *st, const char *spec, ...);
/* Runs several ';'-separated statements without bindings. */
int store_exec_script(struct store *s, const char *sql, char *err, size_t errlen);
/* STORE_ROW, STORE_DONE, or a negative value on error (see store_errmsg). */
int store_step(struct store_stmt *st);
int64_t store_col_int(struct store_stmt *st, int col);
/* Valid until the next step/finalize; NULL for SQL NULL. */
const char *store_col_text(struct store_stmt *st, int col);
int store_col_is_null(struct store_stmt *st, int col);
const char *store_col_name(struct store_stmt *st, int col);
int store_col_count(struct store_stmt *st);
int store_col_type_is_int(struct store_stmt *st, int col);
void store_finalize(struct store_stmt *st);

int64_t store_last_id(struct store *s);
int store_changes(struct store *s);
const char *store_errmsg(struct store *s);
/* 1 if the last error was a UNIQUE constraint violation. */
int store_err_is_unique(struct store *s);

/* Convenience: first column of the first row as int (def when no row / error). */
int64_t store_int(struct store *s, int64_t def, const char *sql, const char *spec, ...);
/* First column of the first row as malloc'd text; NULL when no row or NULL. */
char *store_text(struct store *s, const char *sql, const char *spec, ...);

/* Milliseconds since the epoch (wall clock), the time unit of every *_at column. */
int64_t store_now_ms(void);

#endif
