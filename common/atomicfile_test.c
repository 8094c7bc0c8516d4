/*
 * atomicfile_test.c: unit tests of atomicfile.c in a temp folder: contents, mode
 * and owner of written files, replacing, no temp file left after a failure, and
 * the size limit of atomicfile_read.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "atomicfile.h"
#include "err.h"

struct atomicfile_test_dir {
	char dir[64];
};

static int
atomicfile_test_setup(void **state)
{
	struct atomicfile_test_dir *d = calloc(1, sizeof(*d));

	if (d == NULL)
		return -1;
	snprintf(d->dir, sizeof(d->dir), "/tmp/atomicfile_test.XXXXXX");
	if (mkdtemp(d->dir) == NULL)
		return -1;
	*state = d;
	return 0;
}

/* Removes the test folder and whatever is in it. */
static void
atomicfile_test_rmtree(const char *dir)
{
	char path[512];
	struct dirent *e;
	DIR *dp = opendir(dir);

	if (dp == NULL)
		return;
	while ((e = readdir(dp)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (e->d_type == DT_DIR)
			atomicfile_test_rmtree(path);
		else
			unlink(path);
	}
	closedir(dp);
	rmdir(dir);
}

static int
atomicfile_test_teardown(void **state)
{
	struct atomicfile_test_dir *d = *state;

	chmod(d->dir, 0700);
	atomicfile_test_rmtree(d->dir);
	free(d);
	return 0;
}

/* Number of entries in dir, and whether any looks like one of our temp files. */
static int
atomicfile_test_count(const char *dir, int *temps)
{
	struct dirent *e;
	DIR *dp = opendir(dir);
	int n = 0;

	assert_non_null(dp);
	*temps = 0;
	while ((e = readdir(dp)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		n++;
		if (strstr(e->d_name, ".tmp-") != NULL)
			(*temps)++;
	}
	closedir(dp);
	return n;
}

static void
atomicfile_test_write_new(void **state)
{
	struct atomicfile_test_dir *d = *state;
	char path[128], err[256], *data = NULL;
	size_t len = 0;
	struct stat st;
	int temps;
	mode_t old;

	snprintf(path, sizeof(path), "%s/app.conf", d->dir);
	/* The mode is set exactly, whatever the umask. */
	old = umask(077);
	assert_int_equal(
	    atomicfile_write(path, "hello\n", 6, 0644, (uid_t)-1, (gid_t)-1, err, sizeof(err)), 0);
	umask(old);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	assert_int_equal(st.st_uid, geteuid());
	assert_int_equal(atomicfile_read(path, 100, &data, &len, err, sizeof(err)), 0);
	assert_int_equal(len, 6);
	assert_string_equal(data, "hello\n");
	free(data);
	assert_int_equal(atomicfile_test_count(d->dir, &temps), 1);
	assert_int_equal(temps, 0);
}

static void
atomicfile_test_replace(void **state)
{
	struct atomicfile_test_dir *d = *state;
	char path[128], err[256], *data = NULL;
	struct stat st;
	int temps;
	ino_t first;

	snprintf(path, sizeof(path), "%s/key", d->dir);
	assert_int_equal(atomicfile_write(path, "old contents that are longer", 28, 0644, (uid_t)-1,
					  (gid_t)-1, err, sizeof(err)),
			 0);
	assert_int_equal(stat(path, &st), 0);
	first = st.st_ino;
	assert_int_equal(
	    atomicfile_write(path, "new", 3, 0600, (uid_t)-1, (gid_t)-1, err, sizeof(err)), 0);
	assert_int_equal(stat(path, &st), 0);
	/* A new inode renamed over the old one, not a rewrite in place. */
	assert_int_not_equal(st.st_ino, first);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_size, 3);
	assert_int_equal(atomicfile_read(path, 100, &data, NULL, err, sizeof(err)), 0);
	assert_string_equal(data, "new");
	free(data);
	/* Empty contents. */
	assert_int_equal(
	    atomicfile_write(path, NULL, 0, 0640, (uid_t)-1, (gid_t)-1, err, sizeof(err)), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(atomicfile_test_count(d->dir, &temps), 1);
	assert_int_equal(temps, 0);
}

static void
atomicfile_test_owner(void **state)
{
	struct atomicfile_test_dir *d = *state;
	char path[128], err[256];
	struct stat st;
	uid_t uid = geteuid() == 0 ? 65534 : geteuid();
	gid_t gid = getegid() == 0 ? 65534 : getegid();

	snprintf(path, sizeof(path), "%s/owned", d->dir);
	assert_int_equal(atomicfile_write(path, "x", 1, 0640, uid, gid, err, sizeof(err)), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_uid, uid);
	assert_int_equal(st.st_gid, gid);
	assert_int_equal(st.st_mode & 07777, 0640);
}

static void
atomicfile_test_target_is_dir(void **state)
{
	struct atomicfile_test_dir *d = *state;
	char path[128], inner[160], err[256];
	struct stat st;
	int temps;

	snprintf(path, sizeof(path), "%s/sub", d->dir);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(inner, sizeof(inner), "%s/file", path);
	assert_int_equal(
	    atomicfile_write(inner, "keep", 4, 0644, (uid_t)-1, (gid_t)-1, err, sizeof(err)), 0);
	/* The temp file is created and written, then the rename fails. */
	assert_int_equal(
	    atomicfile_write(path, "data", 4, 0644, (uid_t)-1, (gid_t)-1, err, sizeof(err)),
	    ERR_IO);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, strerror(EISDIR)));
	assert_int_equal(atomicfile_test_count(d->dir, &temps), 1);
	assert_int_equal(temps, 0);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(stat(inner, &st), 0);
	assert_int_equal(st.st_size, 4);
}

static void
atomicfile_test_missing_dir(void **state)
{
	struct atomicfile_test_dir *d = *state;
	char path[128], err[256];
	int temps;

	snprintf(path, sizeof(path), "%s/nope/file", d->dir);
	assert_int_equal(
	    atomicfile_write(path, "data", 4, 0644, (uid_t)-1, (gid_t)-1, err, sizeof(err)),
	    ERR_IO);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, strerror(ENOENT)));
	assert_int_equal(atomicfile_test_count(d->dir, &temps), 0);
}

/* Writes into a folder the caller cannot write to. Root can write anywhere, so
 * as root the write runs in a child that has dropped to nobody. */
static void
atomicfile_test_readonly_dir(void **state)
{
	struct atomicfile_test_dir *d = *state;
	char sub[128], path[160], err[256], *data = NULL;
	int temps, status;
	pid_t pid;

	snprintf(sub, sizeof(sub), "%s/ro", d->dir);
	snprintf(path, sizeof(path), "%s/file", sub);
	assert_int_equal(mkdir(sub, 0755), 0);
	assert_int_equal(
	    atomicfile_write(path, "before", 6, 0644, (uid_t)-1, (gid_t)-1, err, sizeof(err)), 0);
	if (geteuid() != 0) {
		assert_int_equal(chmod(sub, 0555), 0);
		assert_int_equal(atomicfile_write(path, "after", 5, 0644, (uid_t)-1, (gid_t)-1, err,
						  sizeof(err)),
				 ERR_IO);
		assert_non_null(strstr(err, path));
		assert_non_null(strstr(err, strerror(EACCES)));
	} else {
		/* The test folder is 0700; let nobody through to reach sub (0755, root's). */
		assert_int_equal(chmod(d->dir, 0711), 0);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			int rc;

			if (setgroups(0, NULL) == -1 || setresgid(65534, 65534, 65534) == -1 ||
			    setresuid(65534, 65534, 65534) == -1)
				_exit(10);
			rc = atomicfile_write(path, "after", 5, 0644, (uid_t)-1, (gid_t)-1, err,
					      sizeof(err));
			if (rc != ERR_IO)
				_exit(11);
			if (strstr(err, path) == NULL || strstr(err, strerror(EACCES)) == NULL)
				_exit(12);
			_exit(0);
		}
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
		assert_int_equal(chmod(d->dir, 0700), 0);
	}
	assert_int_equal(atomicfile_test_count(sub, &temps), 1);
	assert_int_equal(temps, 0);
	assert_int_equal(atomicfile_read(path, 100, &data, NULL, err, sizeof(err)), 0);
	assert_string_equal(data, "before");
	free(data);
}

static void
atomicfile_test_read_limits(void **state)
{
	struct atomicfile_test_dir *d = *state;
	char path[128], err[256], *data = NULL, *big;
	size_t len = 99, n = 300000;

	snprintf(path, sizeof(path), "%s/data", d->dir);
	assert_int_equal(
	    atomicfile_write(path, "0123456789", 10, 0644, (uid_t)-1, (gid_t)-1, err, sizeof(err)),
	    0);
	assert_int_equal(atomicfile_read(path, 10, &data, &len, err, sizeof(err)), 0);
	assert_int_equal(len, 10);
	assert_string_equal(data, "0123456789");
	free(data);
	data = NULL;
	assert_int_equal(atomicfile_read(path, 9, &data, &len, err, sizeof(err)), ERR_TOOBIG);
	assert_null(data);
	assert_int_equal(len, 0);
	assert_non_null(strstr(err, path));

	/* Empty file: "" and length 0, not NULL. */
	assert_int_equal(
	    atomicfile_write(path, "", 0, 0644, (uid_t)-1, (gid_t)-1, err, sizeof(err)), 0);
	assert_int_equal(atomicfile_read(path, 0, &data, &len, err, sizeof(err)), 0);
	assert_non_null(data);
	assert_string_equal(data, "");
	assert_int_equal(len, 0);
	free(data);

	/* A bigger file with NUL bytes comes back whole. */
	big = malloc(n);
	assert_non_null(big);
	for (size_t i = 0; i < n; i++)
		big[i] = (char)(i * 7);
	assert_int_equal(
	    atomicfile_write(path, big, n, 0600, (uid_t)-1, (gid_t)-1, err, sizeof(err)), 0);
	assert_int_equal(atomicfile_read(path, n, &data, &len, err, sizeof(err)), 0);
	assert_int_equal(len, n);
	assert_memory_equal(data, big, n);
	free(data);
	assert_int_equal(atomicfile_read(path, n - 1, &data, &len, err, sizeof(err)), ERR_TOOBIG);
	free(big);

	/* Missing file and folder. */
	snprintf(path, sizeof(path), "%s/missing", d->dir);
	assert_int_equal(atomicfile_read(path, 10, &data, &len, err, sizeof(err)), ERR_NOTFOUND);
	assert_non_null(strstr(err, path));
	assert_int_equal(atomicfile_read(d->dir, 10, &data, &len, err, sizeof(err)), ERR_IO);
}

static void
atomicfile_test_read_proc(void **state)
{
	char err[256], *data = NULL;
	size_t len = 0;

	(void)state;
	/* /proc files report size 0; they are read until EOF, limit included. */
	assert_int_equal(
	    atomicfile_read("/proc/self/status", 1 << 20, &data, &len, err, sizeof(err)), 0);
	assert_true(len > 100);
	assert_int_equal(strlen(data), len);
	assert_non_null(strstr(data, "Pid:"));
	free(data);
	assert_int_equal(atomicfile_read("/proc/self/status", 20, &data, &len, err, sizeof(err)),
			 ERR_TOOBIG);
	assert_null(data);
}

#define T(f) cmocka_unit_test_setup_teardown(f, atomicfile_test_setup, atomicfile_test_teardown)

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    T(atomicfile_test_write_new),   T(atomicfile_test_replace),
	    T(atomicfile_test_owner),	    T(atomicfile_test_target_is_dir),
	    T(atomicfile_test_missing_dir), T(atomicfile_test_readonly_dir),
	    T(atomicfile_test_read_limits), cmocka_unit_test(atomicfile_test_read_proc),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
