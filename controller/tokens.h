/*
 * tokens.h: API bearer tokens. A token is "stk_" + 64 hex chars of secure random;
 * only its SHA-256 is stored. Verification hashes the presented token and looks the
 * hash up (the lookup is by hash, so timing reveals nothing about stored tokens).
 */
#ifndef STOKE_TOKENS_H
#define STOKE_TOKENS_H

#include <stddef.h>
#include <stdint.h>

struct store;

/* Creates a token named name; *plain gets the token text (malloc'd, shown once). */
int tokens_create(struct store *s, const char *name, char **plain, int64_t *id, char *err,
		  size_t errlen);
/* 0 and the token's id and name (malloc'd, may be NULL) when valid and not revoked;
 * ERR_AUTH otherwise. Updates last_used_at at most once a minute. */
int tokens_verify(struct store *s, const char *plain, int64_t *id, char **name);
int tokens_revoke(struct store *s, int64_t id, char *err, size_t errlen);
/* 1 when token id exists and is not revoked, 0 when not, -1 on a database error. */
int tokens_active(struct store *s, int64_t id);
/* A counter that tokens_revoke bumps (in this process): holders of a token's rights (event
 * streams) look the token up again when it moved. Thread-safe. */
unsigned tokens_revocations(void);
/* Number of tokens not revoked. */
int64_t tokens_count(struct store *s);

#endif
