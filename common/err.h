/*
 * err.h: error codes shared by every module, each with readable text, and the
 * convention for error buffers: functions return 0 or an ERR_* code and fill a
 * caller-supplied buffer (char *err, size_t errlen) with text a user can read.
 */
#ifndef STOKE_ERR_H
#define STOKE_ERR_H

#include <stddef.h>

enum err_code {
	ERR_OK = 0,
	ERR_NOMEM,     /* out of memory */
	ERR_INVAL,     /* invalid argument or input */
	ERR_NOTFOUND,  /* no such object */
	ERR_EXISTS,    /* already exists */
	ERR_CONFLICT,  /* state does not allow it */
	ERR_IO,	       /* file or socket error */
	ERR_TOOBIG,    /* exceeds a size limit */
	ERR_CRYPTO,    /* cryptographic failure (bad tag, bad key) */
	ERR_DB,	       /* database error */
	ERR_BUSY,      /* busy, try again */
	ERR_TIMEOUT,   /* timed out */
	ERR_CANCELLED, /* cancelled */
	ERR_AUTH,      /* authentication failed */
	ERR_INTERNAL,  /* broken invariant */
	ERR__COUNT
};

/* Readable text of a code ("out of memory"); never NULL. */
const char *err_str(int code);
/* Short stable name of a code ("nomem", "not_found"); used in API error bodies. */
const char *err_name(int code);
/* printf into err (if err != NULL) and return code. */
int err_set(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
