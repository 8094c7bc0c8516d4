/*
 * dedup.c: the command-id journal (see dedup.h). Keeps the ids in a sorted array in
 * memory; the file is the truth across restarts.
 */
#include "dedup.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "atomicfile.h"
#include "buf.h"
#include "err.h"
#include "log.h"

#define DEDUP_KEEP 20000 /* ids kept after compaction (the newest) */

struct dedup_entry {
	uint64_t id;
	int done;
};

struct dedup {
	pthread_mutex_t mtx;
	char path[4096];
	int fd;
	struct dedup_entry *e;
	size_t n, cap;
	size_t lines;
	uint64_t *unfinished;
	size_t nunfinished;
};

static struct dedup_entry *
dedup_find(struct dedup *d, uint64_t id, size_t *pos)
{
	size_t lo = 0, hi = d->n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (d->e[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	*pos = lo;
	return lo < d->n && d->e[lo].id == id ? &d->e[lo] : NULL;
}

static int
dedup_insert(struct dedup *d, uint64_t id, int done)
{
	struct dedup_entry *x;
	size_t pos;

	if ((x = dedup_find(d, id, &pos)) != NULL) {
		x->done |= done;
		return 0;
	}
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 1024;
		struct dedup_entry *ne = realloc(d->e, cap * sizeof(*ne));

		if (ne == NULL)
			return -1;
		d->e = ne;
		d->cap = cap;
	}
	memmove(&d->e[pos + 1], &d->e[pos], (d->n - pos) * sizeof(*d->e));
	d->e[pos].id = id;
	d->e[pos].done = done;
	d->n++;
	return 1;
}

static int
dedup_append(struct dedup *d, char kind, uint64_t id)
{
	char line[40];
	int n = snprintf(line, sizeof(line), "%c %" PRIu64 "\n", kind, id);

	/* Not flushed to disk: the journal survives the agent's own crash or restart (the
	 * kernel has it), which is what it is for. After a machine crash it may have lost its
	 * last lines; the controller does not send again what a previous agent process was
	 * sent (Poll.session), so a lost "received" cannot make a command run twice. An fsync
	 * per command was a tenth of the agent's CPU in a fleet run and a disk flush each. */
	if (write(d->fd, line, (size_t)n) != n) {
		log_warn("dedup: %s", d->path);
		return -1;
	}
	d->lines++;
	return 0;
}

/* Rewrites the journal with the newest DEDUP_KEEP ids. Called with mtx held. */
static void
dedup_compact(struct dedup *d)
{
	struct buf b;
	char err[256];
	size_t i, from = d->n > DEDUP_KEEP ? d->n - DEDUP_KEEP : 0;
	int fd;

	buf_init(&b, 0);
	for (i = from; i < d->n; i++)
		buf_printf(&b, "R %" PRIu64 "\n", d->e[i].id);
	for (i = from; i < d->n; i++)
		if (d->e[i].done)
			buf_printf(&b, "D %" PRIu64 "\n", d->e[i].id);
	if (atomicfile_write(d->path, b.data ? b.data : "", b.len, 0600, (uid_t)-1, (gid_t)-1, err,
			     sizeof(err)) == 0 &&
	    (fd = open(d->path, O_WRONLY | O_APPEND | O_CLOEXEC)) >= 0) {
		close(d->fd);
		d->fd = fd;
		memmove(d->e, &d->e[from], (d->n - from) * sizeof(*d->e));
		d->n -= from;
		d->lines = d->n;
	} else
		log_warnx("dedup: cannot compact: %s", err);
	buf_fini(&b);
}

int
dedup_open(const char *state_dir, struct dedup **out, char *err, size_t errlen)
{
	struct dedup *d;
	char *text = NULL, *line, *save;
	size_t len, i;
	int rc;

	*out = NULL;
	if ((d = calloc(1, sizeof(*d))) == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	pthread_mutex_init(&d->mtx, NULL);
	snprintf(d->path, sizeof(d->path), "%s/commands.journal", state_dir);
	rc = atomicfile_read(d->path, 64u << 20, &text, &len, err, errlen);
	if (rc != 0 && rc != ERR_NOTFOUND)
		goto fail;
	for (line = text ? strtok_r(text, "\n", &save) : NULL; line;
	     line = strtok_r(NULL, "\n", &save)) {
		char kind;
		uint64_t id;

		if (sscanf(line, "%c %" SCNu64, &kind, &id) != 2 || (kind != 'R' && kind != 'D'))
			continue; /* a torn last line after a crash */
		dedup_insert(d, id, kind == 'D');
		d->lines++;
	}
	free(text);
	text = NULL;
	for (i = 0; i < d->n; i++)
		if (!d->e[i].done) {
			uint64_t *nu = realloc(d->unfinished, (d->nunfinished + 1) * sizeof(*nu));

			if (nu == NULL)
				break;
			d->unfinished = nu;
			d->unfinished[d->nunfinished++] = d->e[i].id;
		}
	if ((d->fd = open(d->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600)) < 0) {
		rc = err_set(err, errlen, ERR_IO, "%s: %s", d->path, strerror(errno));
		goto fail;
	}
	*out = d;
	return 0;
fail:
	free(text);
	free(d->e);
	free(d);
	return rc;
}

void
dedup_close(struct dedup *d)
{
	if (d == NULL)
		return;
	close(d->fd);
	free(d->e);
	free(d->unfinished);
	pthread_mutex_destroy(&d->mtx);
	free(d);
}

int
dedup_receive(struct dedup *d, uint64_t id)
{
	int rc;

	pthread_mutex_lock(&d->mtx);
	rc = dedup_insert(d, id, 0);
	if (rc == 1 && dedup_append(d, 'R', id) != 0)
		rc = -1;
	if (d->lines > 4 * DEDUP_KEEP)
		dedup_compact(d);
	pthread_mutex_unlock(&d->mtx);
	return rc;
}

int
dedup_done(struct dedup *d, uint64_t id)
{
	int rc;

	pthread_mutex_lock(&d->mtx);
	dedup_insert(d, id, 1);
	rc = dedup_append(d, 'D', id);
	pthread_mutex_unlock(&d->mtx);
	return rc;
}

size_t
dedup_unfinished(struct dedup *d, uint64_t *ids, size_t max)
{
	size_t n = d->nunfinished < max ? d->nunfinished : max;

	if (n > 0)
		memcpy(ids, d->unfinished, n * sizeof(*ids));
	return n;
}
