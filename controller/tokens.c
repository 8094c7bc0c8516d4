/*
 * tokens.c: API bearer tokens. Creates "stk_" + 64 hex tokens, stores only their
 * SHA-256, verifies by hash lookup, revokes. Called by the API and `stoked token`.
 * Never logs a token.
 */
#include "tokens.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "err.h"
#include "store.h"

#define TOKENS_PREFIX "stk_"
#define TOKENS_BYTES 32

static atomic_uint tokens_revoked;

int
tokens_create(struct store *s, const char *name, char **plain, int64_t *id, char *err,
	      size_t errlen)
{
	char hash[65], prefix[12];
	char *tok;

	*plain = NULL;
	if ((tok = crypto_token(TOKENS_PREFIX, TOKENS_BYTES)) == NULL)
		return err_set(err, errlen, ERR_CRYPTO, "cannot make a random token");
	crypto_sha256_hex(tok, hash);
	/* Enough of the token to recognise it in a list, not enough to matter. */
	snprintf(prefix, sizeof(prefix), "%.8s", tok);
	if (store_exec(s,
		       "INSERT INTO api_tokens (name, hash, prefix, created_at) VALUES (?,?,?,?)",
		       "sssi", name, hash, prefix, store_now_ms()) != 0) {
		free(tok);
		return err_set(err, errlen, ERR_DB, "cannot store token: %s", store_errmsg(s));
	}
	if (id)
		*id = store_last_id(s);
	*plain = tok;
	return 0;
}

int
tokens_verify(struct store *s, const char *plain, int64_t *id, char **name)
{
	struct store_stmt *st;
	char hash[65];
	int64_t tid, last;
	int rc = ERR_AUTH;

	if (name)
		*name = NULL;
	if (plain == NULL || strncmp(plain, TOKENS_PREFIX, strlen(TOKENS_PREFIX)) != 0 ||
	    strlen(plain) != strlen(TOKENS_PREFIX) + 2 * TOKENS_BYTES)
		return ERR_AUTH;
	crypto_sha256_hex(plain, hash);
	st = store_query(s,
			 "SELECT id, name, coalesce(last_used_at, 0) FROM api_tokens"
			 " WHERE hash = ? AND revoked_at IS NULL",
			 "s", hash);
	if (st == NULL)
		return ERR_DB;
	if (store_step(st) == STORE_ROW) {
		tid = store_col_int(st, 0);
		last = store_col_int(st, 2);
		if (id)
			*id = tid;
		if (name)
			*name = strdup(store_col_text(st, 1));
		rc = 0;
		store_finalize(st);
		if (store_now_ms() - last > 60000)
			store_exec(s, "UPDATE api_tokens SET last_used_at = ? WHERE id = ?", "ii",
				   store_now_ms(), tid);
		return rc;
	}
	store_finalize(st);
	return rc;
}

int
tokens_revoke(struct store *s, int64_t id, char *err, size_t errlen)
{
	if (store_exec(s,
		       "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
		       "ii", store_now_ms(), id) != 0)
		return err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
	if (store_changes(s) == 0) {
		if (store_int(s, 0, "SELECT count(*) FROM api_tokens WHERE id = ?", "i", id) == 0)
			return err_set(err, errlen, ERR_NOTFOUND, "token %lld: not found",
				       (long long)id);
		return err_set(err, errlen, ERR_CONFLICT, "token %lld: already revoked",
			       (long long)id);
	}
	/* Moves before the caller commits; holders also look again every few seconds. */
	atomic_fetch_add(&tokens_revoked, 1);
	return 0;
}

int
tokens_active(struct store *s, int64_t id)
{
	struct store_stmt *st;
	int rc;

	st = store_query(s, "SELECT revoked_at IS NULL FROM api_tokens WHERE id = ?", "i", id);
	if (st == NULL)
		return -1;
	rc = store_step(st);
	rc = rc == STORE_ROW ? (store_col_int(st, 0) != 0) : rc == STORE_DONE ? 0 : -1;
	store_finalize(st);
	return rc;
}

unsigned
tokens_revocations(void)
{
	return atomic_load(&tokens_revoked);
}

int64_t
tokens_count(struct store *s)
{
	return store_int(s, 0, "SELECT count(*) FROM api_tokens WHERE revoked_at IS NULL", "");
}
