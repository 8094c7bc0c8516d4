/*
 * err.c: readable text and stable names for the ERR_* codes, and err_set().
 * It does not log anything; every module that returns an error code calls it.
 */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>

struct err_row {
	const char *name;
	const char *text;
};

/* Indexed by enum err_code; the names are part of the API (error bodies). */
static const struct err_row err_rows[ERR__COUNT] = {
    [ERR_OK] = {"ok", "success"},
    [ERR_NOMEM] = {"nomem", "out of memory"},
    [ERR_INVAL] = {"invalid", "invalid argument"},
    [ERR_NOTFOUND] = {"not_found", "not found"},
    [ERR_EXISTS] = {"exists", "already exists"},
    [ERR_CONFLICT] = {"conflict", "conflicts with the current state"},
    [ERR_IO] = {"io", "input/output error"},
    [ERR_TOOBIG] = {"too_big", "too big"},
    [ERR_CRYPTO] = {"crypto", "cryptographic failure"},
    [ERR_DB] = {"db", "database error"},
    [ERR_BUSY] = {"busy", "busy, try again"},
    [ERR_TIMEOUT] = {"timeout", "timed out"},
    [ERR_CANCELLED] = {"cancelled", "cancelled"},
    [ERR_AUTH] = {"auth", "authentication failed"},
    [ERR_INTERNAL] = {"internal", "internal error"},
};

const char *
err_str(int code)
{
	if (code < 0 || code >= ERR__COUNT || err_rows[code].text == NULL)
		return "unknown error";
	return err_rows[code].text;
}

const char *
err_name(int code)
{
	if (code < 0 || code >= ERR__COUNT || err_rows[code].name == NULL)
		return "unknown";
	return err_rows[code].name;
}

int
err_set(char *err, size_t errlen, int code, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL && errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}
