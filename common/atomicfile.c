/*
 * atomicfile.c: replace a whole file atomically (temp file beside it, fsync,
 * rename, fsync the folder) and read a whole file with a size limit. It does not
 * lock; the store, the key file, the agent's config writers and the renderers call it.
 */
#include "atomicfile.h"
#include "err.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ATOMICFILE_SUFFIX ".tmp-XXXXXX"

/* Writes the folder part of path into dir ("." when there is none). */
static int
atomicfile_dirname(const char *path, char *dir, size_t dirlen)
{
	const char *slash = strrchr(path, '/');
	size_t n;

	if (slash == NULL) {
		snprintf(dir, dirlen, ".");
		return 0;
	}
	n = slash == path ? 1 : (size_t)(slash - path);
	if (n >= dirlen)
		return -1;
	memcpy(dir, path, n);
	dir[n] = '\0';
	return 0;
}

static int
atomicfile_write_all(int fd, const void *data, size_t len)
{
	const char *p = data;

	while (len > 0) {
		ssize_t w = write(fd, p, len);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

static int
atomicfile_sync_dir(const char *dir, char *err, size_t errlen)
{
	int fd, rc = 0;

	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd == -1)
		return err_set(err, errlen, ERR_IO, "%s: open folder: %s", dir, strerror(errno));
	/* Some file systems cannot fsync a folder (EINVAL); the rename is done anyway. */
	if (fsync(fd) == -1 && errno != EINVAL && errno != EROFS)
		rc = err_set(err, errlen, ERR_IO, "%s: fsync folder: %s", dir, strerror(errno));
	close(fd);
	return rc;
}

int
atomicfile_write(const char *path, const void *data, size_t len, mode_t mode, uid_t uid, gid_t gid,
		 char *err, size_t errlen)
{
	char tmp[PATH_MAX], dir[PATH_MAX];
	int fd = -1, rc;

	if (path == NULL || *path == '\0' || (data == NULL && len > 0))
		return err_set(err, errlen, ERR_INVAL, "atomicfile: missing path or data");
	if (strlen(path) + sizeof(ATOMICFILE_SUFFIX) > sizeof(tmp) ||
	    atomicfile_dirname(path, dir, sizeof(dir)) == -1)
		return err_set(err, errlen, ERR_INVAL, "%s: path too long", path);
	snprintf(tmp, sizeof(tmp), "%s" ATOMICFILE_SUFFIX, path);

	/* mkostemp opens with O_CREAT|O_EXCL and mode 0600. */
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd == -1)
		return err_set(err, errlen, ERR_IO, "%s: create temp file: %s", path,
			       strerror(errno));
	if (atomicfile_write_all(fd, data, len) == -1) {
		rc = err_set(err, errlen, ERR_IO, "%s: write: %s", tmp, strerror(errno));
		goto fail;
	}
	if ((uid != (uid_t)-1 || gid != (gid_t)-1) && fchown(fd, uid, gid) == -1) {
		rc = err_set(err, errlen, ERR_IO, "%s: chown %ld:%ld: %s", tmp, (long)(int)uid,
			     (long)(int)gid, strerror(errno));
		goto fail;
	}
	/* After fchown, which may clear set-id bits. */
	if (fchmod(fd, mode & 07777) == -1) {
		rc = err_set(err, errlen, ERR_IO, "%s: chmod %04o: %s", tmp,
			     (unsigned)(mode & 07777), strerror(errno));
		goto fail;
	}
	if (fsync(fd) == -1) {
		rc = err_set(err, errlen, ERR_IO, "%s: fsync: %s", tmp, strerror(errno));
		goto fail;
	}
	if (close(fd) == -1) {
		fd = -1;
		rc = err_set(err, errlen, ERR_IO, "%s: close: %s", tmp, strerror(errno));
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) == -1) {
		rc = err_set(err, errlen, ERR_IO, "%s: rename from temp file: %s", path,
			     strerror(errno));
		goto fail;
	}
	return atomicfile_sync_dir(dir, err, errlen);

fail:
	if (fd != -1)
		close(fd);
	unlink(tmp);
	return rc;
}

/* read() that retries on EINTR. */
static ssize_t
atomicfile_read_some(int fd, void *p, size_t n)
{
	ssize_t r;

	do
		r = read(fd, p, n);
	while (r < 0 && errno == EINTR);
	return r;
}

int
atomicfile_read(const char *path, size_t max, char **out, size_t *outlen, char *err, size_t errlen)
{
	struct stat st;
	char *data = NULL, *p, probe;
	size_t len = 0, cap;
	ssize_t r;
	int fd, rc;

	*out = NULL;
	if (outlen != NULL)
		*outlen = 0;
	if (max > SIZE_MAX / 2)
		max = SIZE_MAX / 2;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return err_set(err, errlen, errno == ENOENT ? ERR_NOTFOUND : ERR_IO, "%s: %s", path,
			       strerror(errno));
	if (fstat(fd, &st) == -1) {
		rc = err_set(err, errlen, ERR_IO, "%s: stat: %s", path, strerror(errno));
		goto fail;
	}
	if (S_ISDIR(st.st_mode)) {
		rc = err_set(err, errlen, ERR_IO, "%s: %s", path, strerror(EISDIR));
		goto fail;
	}
	if (S_ISREG(st.st_mode) && (uintmax_t)st.st_size > (uintmax_t)max)
		goto toobig;

	/* cap counts the NUL. Sized by fstat for regular files, grown for pipes and
	 * /proc files (which report size 0). */
	cap = (S_ISREG(st.st_mode) && st.st_size > 0 ? (size_t)st.st_size : 4096);
	cap = (cap > max ? max : cap) + 1;
	if ((data = malloc(cap)) == NULL)
		goto nomem;
	for (;;) {
		if (len == cap - 1) {
			if (len == max) {
				/* Full: one more byte means the file is over the limit. */
				r = atomicfile_read_some(fd, &probe, 1);
				if (r < 0)
					goto readerr;
				if (r > 0)
					goto toobig;
				break;
			}
			cap = (cap - 1 > max / 2 ? max : (cap - 1) * 2) + 1;
			if ((p = realloc(data, cap)) == NULL)
				goto nomem;
			data = p;
		}
		r = atomicfile_read_some(fd, data + len, cap - 1 - len);
		if (r < 0)
			goto readerr;
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	data[len] = '\0';
	*out = data;
	if (outlen != NULL)
		*outlen = len;
	return 0;

readerr:
	rc = err_set(err, errlen, ERR_IO, "%s: read: %s", path, strerror(errno));
	goto fail;
nomem:
	rc = err_set(err, errlen, ERR_NOMEM, "%s: out of memory", path);
	goto fail;
toobig:
	rc = err_set(err, errlen, ERR_TOOBIG, "%s: larger than %zu bytes", path, max);
fail:
	close(fd);
	free(data);
	return rc;
}
