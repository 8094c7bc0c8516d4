/*
 * cli_output.c: what every command of `stoke` prints and how it calls the API: tables for
 * people, JSON for scripts, "stoke: <message>" errors (the API's own message), the progress
 * bar, and API calls that page through lists. Command families call it; it holds no state.
 */
#include "cli.h"
#include "err.h"
#include "http_client.h"
#include "timeutil.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define CLI_API_PREFIX "/api/v1"
#define CLI_PAGE_LIMIT "200"
#define CLI_LIST_MAX_PAGES 10000
#define CLI_BAR_WIDTH 24

/* Replaces control characters (which could drive the terminal) with '?', in place. */
static void
cli_sanitize(char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = '?';
}

/* Messages carry text from the server: printed without its control characters. */
static void
cli_verror(const char *fmt, va_list ap)
{
	char msg[4096];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	cli_sanitize(msg);
	fflush(stdout);
	fprintf(stderr, "stoke: %s\n", msg);
}

int
cli_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	cli_verror(fmt, ap);
	va_end(ap);
	return CLI_EXIT_FAIL;
}

int
cli_usage_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	cli_verror(fmt, ap);
	va_end(ap);
	fputs("Try 'stoke help' for the commands and their options.\n", stderr);
	return CLI_EXIT_USAGE;
}

/* Prints the API's {"error":{"code","message"}} answer, or what there is instead. */
static int
cli_api_error(const char *method, const char *path, const struct http_response *r)
{
	json_error_t jerr;
	json_t *j = NULL, *e, *m;
	char snippet[200];
	int ret;

	if (r->body.len > 0)
		j = json_loadb(r->body.data, r->body.len, 0, &jerr);
	e = json_object_get(j, "error");
	m = json_object_get(e, "message");
	if (json_is_string(m)) {
		ret = cli_error("%s", json_string_value(m));
	} else {
		/* Not the API's error shape (a proxy's page?): the status and the first line. */
		snprintf(snippet, sizeof(snippet), "%s", r->body.len > 0 ? r->body.data : "");
		snippet[strcspn(snippet, "\r\n")] = '\0';
		ret = cli_error("%s %s: HTTP %ld%s%s", method, path, r->status,
				snippet[0] != '\0' ? ": " : "", snippet);
	}
	json_decref(j);
	return ret;
}

int
cli_api(struct cli *cli, const char *method, const char *path, json_t *body, json_t **out,
	long *status)
{
	struct http_response r;
	struct buf full;
	json_error_t jerr;
	char err[1024], *text = NULL;
	json_t *j = NULL;
	int ret;

	if (out != NULL)
		*out = NULL;
	if (status != NULL)
		*status = 0;
	http_response_init(&r);
	buf_init(&full, 64 * 1024);
	if (buf_puts(&full, CLI_API_PREFIX) != 0 || buf_puts(&full, path) != 0) {
		ret = cli_error("%s: path too long", path);
		goto out;
	}
	if (body != NULL && (text = json_dumps(body, JSON_COMPACT)) == NULL) {
		ret = cli_error("out of memory");
		goto out;
	}
	if (http_request(cli->http, method, full.data, text, &r, err, sizeof(err)) != 0) {
		ret = cli_error("%s", err);
		goto out;
	}
	if (status != NULL)
		*status = r.status;
	if (r.status < 200 || r.status > 299) {
		ret = cli_api_error(method, full.data, &r);
		goto out;
	}
	if (out != NULL) {
		if (r.body.len == 0)
			j = json_object();
		else
			j = json_loadb(r.body.data, r.body.len, 0, &jerr);
		if (j == NULL) {
			ret = cli_error("%s %s: the answer is not JSON: %s", method, full.data,
					jerr.text);
			goto out;
		}
		*out = j;
	}
	ret = CLI_EXIT_OK;
out:
	free(text);
	buf_fini(&full);
	http_response_fini(&r);
	return ret;
}

int
cli_api_events(struct cli *cli, const char *path, const char *last_id,
	       int (*cb)(const struct http_sse_event *ev, void *arg),
	       void (*drop_cb)(const char *why, void *arg), void *arg)
{
	struct http_sse_opts o = {0};
	struct http_response r;
	struct buf full;
	char err[1024];
	int ret;

	http_response_init(&r);
	buf_init(&full, 64 * 1024);
	if (buf_puts(&full, CLI_API_PREFIX) != 0 || buf_puts(&full, path) != 0) {
		ret = cli_error("%s: path too long", path);
		goto out;
	}
	o.last_event_id = last_id;
	o.drop_cb = drop_cb;
	if (http_sse_get(cli->http, full.data, &o, cb, arg, &r, err, sizeof(err)) != 0) {
		ret = cli_error("%s", err);
		goto out;
	}
	if (r.status != 200) {
		ret = cli_api_error("GET", full.data, &r);
		goto out;
	}
	ret = CLI_EXIT_OK;
out:
	buf_fini(&full);
	http_response_fini(&r);
	return ret;
}

int
cli_api_list(struct cli *cli, const char *path, json_t **out)
{
	json_t *all = NULL, *items, *page = NULL, *pitems, *next;
	struct buf p;
	char after[32] = "";
	int64_t last = 0;
	int pages, ret;

	*out = NULL;
	buf_init(&p, 64 * 1024);
	if ((all = json_object()) == NULL || (items = json_array()) == NULL ||
	    json_object_set_new(all, "items", items) != 0) {
		ret = cli_error("out of memory");
		goto out;
	}
	for (pages = 0; pages < CLI_LIST_MAX_PAGES; pages++) {
		buf_reset(&p);
		if (buf_puts(&p, path) != 0 || cli_query_add(&p, "limit", CLI_PAGE_LIMIT) != 0 ||
		    (after[0] != '\0' && cli_query_add(&p, "after", after) != 0)) {
			ret = cli_error("%s: path too long", path);
			goto out;
		}
		if ((ret = cli_api(cli, "GET", p.data, NULL, &page, NULL)) != 0)
			goto out;
		pitems = json_object_get(page, "items");
		if (!json_is_array(pitems)) {
			ret = cli_error("GET %s%s: the answer has no \"items\" list",
					CLI_API_PREFIX, p.data);
			goto out;
		}
		if (json_array_extend(items, pitems) != 0) {
			ret = cli_error("out of memory");
			goto out;
		}
		next = json_object_get(page, "next");
		/* A "next" that does not move forward would loop for ever: stop there. */
		if (!json_is_integer(next) || json_integer_value(next) <= last ||
		    json_array_size(pitems) == 0)
			break;
		last = json_integer_value(next);
		snprintf(after, sizeof(after), "%" PRId64, last);
		json_decref(page);
		page = NULL;
	}
	if (json_object_set_new(all, "next", json_null()) != 0) {
		ret = cli_error("out of memory");
		goto out;
	}
	*out = all;
	all = NULL;
	ret = CLI_EXIT_OK;
out:
	json_decref(page);
	json_decref(all);
	buf_fini(&p);
	return ret;
}

int
cli_query_add(struct buf *path, const char *key, const char *value)
{
	char *k = http_escape(key), *v = http_escape(value);
	char sep = path->data != NULL && strchr(path->data, '?') != NULL ? '&' : '?';
	int ret;

	if (k == NULL || v == NULL)
		ret = ERR_NOMEM;
	else
		ret = buf_printf(path, "%c%s=%s", sep, k, v);
	free(k);
	free(v);
	return ret;
}

int
cli_path_add(struct buf *path, const char *segment)
{
	char *s = http_escape(segment);
	int ret;

	if (s == NULL)
		return ERR_NOMEM;
	ret = buf_printf(path, "/%s", s);
	free(s);
	return ret;
}

int
cli_parse_id(const char *s, const char *what, int64_t *id)
{
	char *end;
	long long v;

	errno = 0;
	if (s[0] < '0' || s[0] > '9')
		goto bad;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || v <= 0)
		goto bad;
	*id = v;
	return 0;
bad:
	return cli_usage_error("%s: not an id: '%s'", what, s);
}

int
cli_print_json(struct cli *cli, json_t *j)
{
	size_t flags = cli->tty ? JSON_INDENT(2) : JSON_COMPACT;

	json_dumpf(j, stdout, flags | JSON_ENCODE_ANY);
	fputc('\n', stdout);
	return CLI_EXIT_OK;
}

const char *
cli_jstr(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	return json_is_string(v) ? json_string_value(v) : "-";
}

int64_t
cli_jint(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	if (json_is_integer(v))
		return json_integer_value(v);
	if (json_is_real(v))
		return (int64_t)json_real_value(v);
	if (json_is_true(v))
		return 1;
	return 0;
}

const char *
cli_jtext(json_t *v, char *out, size_t outlen)
{
	char *s;

	if (v == NULL || json_is_null(v)) {
		snprintf(out, outlen, "-");
	} else if (json_is_string(v)) {
		snprintf(out, outlen, "%s", json_string_value(v));
	} else if ((s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)) != NULL) {
		snprintf(out, outlen, "%s", s);
		free(s);
	} else {
		snprintf(out, outlen, "?");
	}
	return out;
}

const char *
cli_age(json_t *obj, const char *key, char *out, size_t outlen)
{
	const char *s = cli_jstr(obj, key);
	struct tm tm;
	int64_t when, now, d;
	int n = 0, ago;
	char unit;

	memset(&tm, 0, sizeof(tm));
	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
		   &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6 ||
	    n == 0) {
		snprintf(out, outlen, "-");
		return out;
	}
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	when = (int64_t)timegm(&tm);
	now = time_now_ms() / 1000;
	d = now - when;
	ago = d >= 0;
	if (d < 0)
		d = -d;
	if (d < 60) {
		unit = 's';
	} else if (d < 3600) {
		d /= 60;
		unit = 'm';
	} else if (d < 86400) {
		d /= 3600;
		unit = 'h';
	} else {
		d /= 86400;
		unit = 'd';
	}
	snprintf(out, outlen, "%s%" PRId64 "%c%s", ago ? "" : "in ", d, unit, ago ? " ago" : "");
	return out;
}

struct cli_table {
	int ncols;
	size_t nrows; /* the header included */
	size_t cap;
	char **cells; /* nrows * ncols */
};

struct cli_table *
cli_table_new(int ncols, const char *const *headers)
{
	struct cli_table *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return NULL;
	t->ncols = ncols;
	if (cli_table_add(t, headers) != 0) {
		cli_table_free(t);
		return NULL;
	}
	return t;
}

int
cli_table_add(struct cli_table *t, const char *const *cells)
{
	size_t i, base;
	char **p;

	if (t->nrows == t->cap) {
		size_t cap = t->cap == 0 ? 16 : t->cap * 2;

		if ((p = realloc(t->cells, cap * (size_t)t->ncols * sizeof(*p))) == NULL)
			return ERR_NOMEM;
		t->cells = p;
		t->cap = cap;
	}
	base = t->nrows * (size_t)t->ncols;
	for (i = 0; i < (size_t)t->ncols; i++) {
		const char *c = cells[i] != NULL && cells[i][0] != '\0' ? cells[i] : "-";

		if ((t->cells[base + i] = strdup(c)) == NULL) {
			while (i-- > 0)
				free(t->cells[base + i]);
			return ERR_NOMEM;
		}
		cli_sanitize(t->cells[base + i]);
	}
	t->nrows++;
	return 0;
}

/* Width on a terminal: UTF-8 code points, not bytes. */
static size_t
cli_width(const char *s)
{
	size_t n = 0;

	for (; *s != '\0'; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			n++;
	return n;
}

void
cli_table_print(const struct cli_table *t, FILE *f)
{
	size_t w[32] = {0}, r, len;
	int c, ncols = t->ncols < 32 ? t->ncols : 32;

	for (r = 0; r < t->nrows; r++)
		for (c = 0; c < ncols; c++)
			if ((len = cli_width(t->cells[r * (size_t)t->ncols + (size_t)c])) > w[c])
				w[c] = len;
	for (r = 0; r < t->nrows; r++) {
		for (c = 0; c < ncols; c++) {
			const char *cell = t->cells[r * (size_t)t->ncols + (size_t)c];

			fputs(cell, f);
			if (c + 1 < ncols)
				fprintf(f, "%*s", (int)(w[c] - cli_width(cell) + 2), "");
		}
		fputc('\n', f);
	}
}

void
cli_table_free(struct cli_table *t)
{
	size_t i;

	if (t == NULL)
		return;
	for (i = 0; i < t->nrows * (size_t)t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t);
}

void
cli_field(const char *label, const char *fmt, ...)
{
	char line[4096];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	cli_sanitize(line);
	printf("%-13s %s\n", label, line);
}

void
cli_progress_init(struct cli_progress *p, FILE *f, int tty)
{
	memset(p, 0, sizeof(*p));
	p->f = f;
	p->tty = tty;
	p->percent = -1;
}

static int
cli_progress_cols(struct cli_progress *p)
{
	struct winsize ws;

	if (ioctl(fileno(p->f), TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
		return ws.ws_col;
	return 80;
}

static void
cli_progress_draw(struct cli_progress *p)
{
	char bar[CLI_BAR_WIDTH + 1], msg[sizeof(p->message)];
	int fill = p->percent * CLI_BAR_WIDTH / 100, room, i;
	size_t cut;

	for (i = 0; i < CLI_BAR_WIDTH; i++)
		bar[i] = i < fill ? '#' : '.';
	bar[CLI_BAR_WIDTH] = '\0';
	/* "[bar] 100% " takes CLI_BAR_WIDTH + 8 columns; keep the last one free. */
	room = cli_progress_cols(p) - CLI_BAR_WIDTH - 9;
	snprintf(msg, sizeof(msg), "%s", p->message);
	if (room < 0)
		room = 0;
	if (cli_width(msg) > (size_t)room) {
		/* Cut at a code point boundary. */
		for (cut = 0, i = 0; msg[cut] != '\0'; cut++) {
			if (((unsigned char)msg[cut] & 0xc0) != 0x80 && i++ == room)
				break;
		}
		msg[cut] = '\0';
	}
	fprintf(p->f, "\r[%s] %3d%% %s\033[K", bar, p->percent, msg);
	fflush(p->f);
	p->drawn = 1;
}

void
cli_progress_update(struct cli_progress *p, int percent, const char *message)
{
	if (percent < 0)
		percent = 0;
	if (percent > 100)
		percent = 100;
	if (message == NULL)
		message = "";
	if (percent == p->percent && strncmp(message, p->message, sizeof(p->message) - 1) == 0)
		return;
	p->percent = percent;
	snprintf(p->message, sizeof(p->message), "%s", message);
	cli_sanitize(p->message);
	if (p->tty) {
		cli_progress_draw(p);
	} else {
		fprintf(p->f, "%d%% %s\n", p->percent, p->message);
		fflush(p->f);
	}
}

void
cli_progress_note(struct cli_progress *p, const char *fmt, ...)
{
	va_list ap;

	if (p->drawn) {
		fputs("\r\033[K", p->f);
		fflush(p->f);
	}
	va_start(ap, fmt);
	cli_verror(fmt, ap);
	va_end(ap);
	if (p->drawn)
		cli_progress_draw(p);
}

void
cli_progress_end(struct cli_progress *p)
{
	if (p->drawn) {
		fputc('\n', p->f);
		fflush(p->f);
		p->drawn = 0;
	}
}
