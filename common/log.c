/*
 * log.c: one line per event to stderr, "TIME PROG[PID] LEVEL: message", written
 * with a single write() under a mutex. It does not rotate or open files; every
 * process (stoked, stoke-agent, the CLI) calls log_init() once at start-up.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "log.h"
#include "timeutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096

enum log_kind { LOG_KIND_PLAIN, LOG_KIND_ERRNO };

static pthread_mutex_t log_mutex = PTHREAD_MUTEX_INITIALIZER;
static char log_progname[64] = "stoke";
static enum log_level log_min_level = LOG_LEVEL_INFO;

void
log_init(const char *progname, enum log_level level)
{
	pthread_mutex_lock(&log_mutex);
	if (progname != NULL) {
		const char *slash = strrchr(progname, '/');

		snprintf(log_progname, sizeof(log_progname), "%s",
			 slash != NULL ? slash + 1 : progname);
	}
	log_min_level = level;
	pthread_mutex_unlock(&log_mutex);
}

void
log_set_level(enum log_level level)
{
	pthread_mutex_lock(&log_mutex);
	log_min_level = level;
	pthread_mutex_unlock(&log_mutex);
}

int
log_level_parse(const char *s)
{
	if (s == NULL)
		return -1;
	if (strcmp(s, "debug") == 0)
		return LOG_LEVEL_DEBUG;
	if (strcmp(s, "info") == 0)
		return LOG_LEVEL_INFO;
	if (strcmp(s, "warn") == 0 || strcmp(s, "warning") == 0)
		return LOG_LEVEL_WARN;
	if (strcmp(s, "error") == 0)
		return LOG_LEVEL_ERROR;
	return -1;
}

/* Copies msg into out, turning newlines and other control characters into
 * visible escapes so one event always stays on one line. */
static size_t
log_sanitize(char *out, size_t outlen, const char *msg)
{
	size_t n = 0;

	for (; *msg != '\0' && n + 5 < outlen; msg++) {
		unsigned char c = (unsigned char)*msg;

		if (c == '\n') {
			out[n++] = '\\';
			out[n++] = 'n';
		} else if (c < 0x20 && c != '\t') {
			n += (size_t)snprintf(out + n, outlen - n, "\\x%02x", c);
		} else if (c == 0x7f) {
			n += (size_t)snprintf(out + n, outlen - n, "\\x7f");
		} else {
			out[n++] = (char)c;
		}
	}
	out[n] = '\0';
	return n;
}

static void log_vlog(int level, const char *lname, enum log_kind kind, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

static void
log_vlog(int level, const char *lname, enum log_kind kind, const char *fmt, va_list ap)
{
	int saved_errno = errno;
	char msg[LOG_LINE_MAX], clean[LOG_LINE_MAX], line[LOG_LINE_MAX + 256], ts[32];
	char ebuf[128];
	const char *etext = NULL;
	size_t off;
	int n;

	pthread_mutex_lock(&log_mutex);
	if (level < (int)log_min_level) {
		pthread_mutex_unlock(&log_mutex);
		errno = saved_errno;
		return;
	}
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (kind == LOG_KIND_ERRNO)
		etext = strerror_r(saved_errno, ebuf, sizeof(ebuf));
	log_sanitize(clean, sizeof(clean), msg);
	time_iso(time_now_ms(), ts);
	n = snprintf(line, sizeof(line), "%s %s[%ld] %s: %s%s%s", ts, log_progname, (long)getpid(),
		     lname, clean, etext != NULL ? ": " : "", etext != NULL ? etext : "");
	off = n < 0 ? 0 : (size_t)n;
	if (off > sizeof(line) - 2)
		off = sizeof(line) - 2;
	line[off++] = '\n';
	for (size_t done = 0; done < off;) {
		ssize_t w = write(STDERR_FILENO, line + done, off - done);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		done += (size_t)w;
	}
	pthread_mutex_unlock(&log_mutex);
	errno = saved_errno;
}

#define LOG_DEFINE(fn, level, lname, kind)                                                         \
	void fn(const char *fmt, ...)                                                              \
	{                                                                                          \
		va_list ap;                                                                        \
                                                                                                   \
		va_start(ap, fmt);                                                                 \
		log_vlog(level, lname, kind, fmt, ap);                                             \
		va_end(ap);                                                                        \
	}

LOG_DEFINE(log_debug, LOG_LEVEL_DEBUG, "debug", LOG_KIND_PLAIN)
LOG_DEFINE(log_info, LOG_LEVEL_INFO, "info", LOG_KIND_PLAIN)
LOG_DEFINE(log_warn, LOG_LEVEL_WARN, "warn", LOG_KIND_ERRNO)
LOG_DEFINE(log_warnx, LOG_LEVEL_WARN, "warn", LOG_KIND_PLAIN)
LOG_DEFINE(log_error, LOG_LEVEL_ERROR, "error", LOG_KIND_PLAIN)

void
fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vlog(LOG_LEVEL_ERROR + 1, "fatal", LOG_KIND_ERRNO, fmt, ap);
	va_end(ap);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vlog(LOG_LEVEL_ERROR + 1, "fatal", LOG_KIND_PLAIN, fmt, ap);
	va_end(ap);
	exit(1);
}
