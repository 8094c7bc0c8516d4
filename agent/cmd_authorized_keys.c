/*
 * cmd_authorized_keys.c: the authorized_keys command: set the Stoke block of a user's
 * authorized_keys to exactly the given keys (atomic; folder 0700, file 0600, the user's) and
 * report fingerprints and keys outside the block. The text comes from render_authorized_keys.c.
 */
#include "cmd.h"
#include "agent_config.h"
#include "atomicfile.h"
#include "cmd_proc.h"
#include "err.h"
#include "policy.h"
#include "names.h"
#include "render_authorized_keys.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CMD_AUTHORIZED_KEYS_FILE_MAX (4 * 1024 * 1024)

static pthread_mutex_t cmd_authorized_keys_lock = PTHREAD_MUTEX_INITIALIZER;

/* The template with %h, %u and %% replaced. */
static int
cmd_authorized_keys_path(const char *tmpl, const struct cmd_proc_user *u, char *out, size_t outlen,
			 char *err, size_t errlen)
{
	size_t o = 0;

	for (const char *p = tmpl; *p != '\0'; p++) {
		const char *add = NULL;
		char one[2] = {*p, '\0'};

		if (*p == '%') {
			p++;
			if (*p == 'h')
				add = u->home;
			else if (*p == 'u')
				add = u->name;
			else if (*p == '%')
				add = "%";
			else
				return err_set(err, errlen, ERR_INVAL,
					       "authorized_keys_file: bad escape '%%%c'",
					       *p != '\0' ? *p : ' ');
		} else {
			add = one;
		}
		if (o + strlen(add) >= outlen)
			return err_set(err, errlen, ERR_INVAL, "authorized_keys_file: too long");
		memcpy(out + o, add, strlen(add));
		o += strlen(add);
	}
	out[o] = '\0';
	if (out[0] != '/' || strstr(out, "/../") != NULL || strstr(out, "/./") != NULL ||
	    out[o - 1] == '/')
		return err_set(err, errlen, ERR_INVAL,
			       "authorized_keys_file: \"%s\" is not a normalised absolute path",
			       out);
	return 0;
}

/*
 * Opens the folder dir. When it lies under the user's home, walks there from the home
 * without following links (the user owns those folders and could plant one), creating
 * missing folders, and makes each 0700 and the user's. Returns the descriptor or -1.
 * With create 0 (reports) nothing is made or changed, and a missing folder sets *absent.
 */
static int
cmd_authorized_keys_dir(const char *dir, const struct cmd_proc_user *u, int create, int *absent,
			char *err, size_t errlen)
{
	size_t hl = strlen(u->home);
	char part[NAME_MAX + 1];
	const char *p;
	int fd, next;

	while (hl > 1 && u->home[hl - 1] == '/')
		hl--;
	if (!(strncmp(dir, u->home, hl) == 0 && dir[hl] == '/' && hl > 1)) {
		/* A system folder (such as /etc/ssh/keys): the configuration chose it. */
		if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1) {
			if (!create && errno == ENOENT)
				*absent = 1;
			err_set(err, errlen, ERR_IO, "%s: %s", dir, strerror(errno));
		}
		return fd;
	}
	if ((fd = open(u->home, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1) {
		err_set(err, errlen, ERR_IO, "home %s: %s", u->home, strerror(errno));
		return -1;
	}
	for (p = dir + hl + 1; *p != '\0';) {
		const char *slash = strchr(p, '/');
		size_t n = slash != NULL ? (size_t)(slash - p) : strlen(p);

		if (n == 0 || n > NAME_MAX) {
			err_set(err, errlen, ERR_INVAL, "%s: bad folder name", dir);
			goto fail;
		}
		memcpy(part, p, n);
		part[n] = '\0';
		if (create && mkdirat(fd, part, 0700) == -1 && errno != EEXIST) {
			err_set(err, errlen, ERR_IO, "%s: mkdir %s: %s", dir, part,
				strerror(errno));
			goto fail;
		}
		next = openat(fd, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (next == -1 && !create && errno == ENOENT) {
			*absent = 1;
			err_set(err, errlen, ERR_IO, "%s: %s", dir, strerror(errno));
			goto fail;
		}
		if (next == -1) {
			err_set(err, errlen, ERR_IO, "%s: %s: %s", dir, part,
				errno == ELOOP || errno == ENOTDIR ? "is not a folder (a link?)"
								   : strerror(errno));
			goto fail;
		}
		close(fd);
		fd = next;
		if (!create) {
			p += n;
			if (*p == '/')
				p++;
			continue;
		}
		if (geteuid() == 0 && fchown(fd, u->uid, u->gid) == -1) {
			err_set(err, errlen, ERR_IO, "%s: chown: %s", dir, strerror(errno));
			goto fail;
		}
		if (fchmod(fd, 0700) == -1) {
			err_set(err, errlen, ERR_IO, "%s: chmod: %s", dir, strerror(errno));
			goto fail;
		}
		p += n;
		if (*p == '/')
			p++;
	}
	return fd;
fail:
	close(fd);
	return -1;
}

/* Reads base in folder dfd without following a link; it must be owner's or root's and
 * have no other hard link. *out NULL when absent. */
static int
cmd_authorized_keys_read(int dfd, const char *base, const char *path, uid_t owner, char **out,
			 char *err, size_t errlen)
{
	struct stat st;
	size_t len = 0, cap = 0;
	char *data = NULL, *p;
	ssize_t r;
	int fd, rc;

	*out = NULL;
	fd = openat(dfd, base, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd == -1) {
		if (errno == ENOENT)
			return 0;
		return err_set(err, errlen, ERR_IO, "%s: %s", path,
			       errno == ELOOP ? "is a symbolic link" : strerror(errno));
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		rc = err_set(err, errlen, ERR_IO, "%s: not a regular file", path);
		goto fail;
	}
	/* A hard link the user made to a file of someone else's (/etc/shadow) would be read
	 * and reported back, and its text rewritten into a file the user owns. */
	if (st.st_nlink > 1 || (st.st_uid != owner && st.st_uid != 0)) {
		rc = err_set(err, errlen, ERR_CONFLICT,
			     "%s: has other hard links or belongs to someone else; fix it by hand",
			     path);
		goto fail;
	}
	for (;;) {
		if (cap - len < 4096) {
			if (cap >= CMD_AUTHORIZED_KEYS_FILE_MAX) {
				rc = err_set(err, errlen, ERR_TOOBIG, "%s: larger than %d bytes",
					     path, CMD_AUTHORIZED_KEYS_FILE_MAX);
				goto fail;
			}
			cap = cap == 0 ? 65536 : cap * 2;
			if ((p = realloc(data, cap + 1)) == NULL) {
				rc = err_set(err, errlen, ERR_NOMEM, "out of memory");
				goto fail;
			}
			data = p;
		}
		r = read(fd, data + len, cap - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = err_set(err, errlen, ERR_IO, "%s: read: %s", path, strerror(errno));
			goto fail;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	data[len] = '\0';
	if (strlen(data) != len) {
		free(data);
		return err_set(err, errlen, ERR_INVAL, "%s: contains a NUL byte", path);
	}
	*out = data;
	return 0;
fail:
	close(fd);
	free(data);
	return rc;
}

/* Appends lines to arr as JSON strings (invalid UTF-8 bytes replaced), and their
 * fingerprints (null for a line that is not a bare key) to fps. */
static int
cmd_authorized_keys_lines(json_t *arr, json_t *fps, char **lines, size_t n)
{
	char fp[RENDER_AUTHORIZED_KEYS_FP_LEN], why[256];

	for (size_t i = 0; i < n; i++) {
		json_t *s = json_string(lines[i]);

		if (s == NULL) {
			for (char *c = lines[i]; *c != '\0'; c++)
				if ((unsigned char)*c >= 0x80)
					*c = '?';
			s = json_string(lines[i]);
		}
		if (json_array_append_new(arr, s) != 0)
			return -1;
		if (render_authorized_keys_fingerprint(lines[i], fp, why, sizeof(why)) == 0)
			s = json_string(fp);
		else
			s = json_null();
		if (json_array_append_new(fps, s) != 0)
			return -1;
	}
	return 0;
}

/* report_only: reads the file (making nothing) and reports its block and other keys. */
static void
cmd_authorized_keys_report(const struct cmd_proc_user *u, const char *path, const char *dir,
			   const char *base, struct cmd_result *res)
{
	struct render_authorized_keys_scan sc;
	char why[1024], *current = NULL;
	json_t *j = NULL, *m, *mf, *o, *of;
	int dfd, absent = 0;

	memset(&sc, 0, sizeof(sc));
	pthread_mutex_lock(&cmd_authorized_keys_lock);
	dfd = cmd_authorized_keys_dir(dir, u, 0, &absent, why, sizeof(why));
	if ((dfd == -1 && !absent) ||
	    (dfd != -1 &&
	     cmd_authorized_keys_read(dfd, base, path, u->uid, &current, why, sizeof(why)) != 0) ||
	    render_authorized_keys_scan(current, &sc, why, sizeof(why)) != 0) {
		err_set(res->error, sizeof(res->error), ERR_IO, "authorized_keys %s: %s", u->name,
			why);
		goto out;
	}
	j = json_pack("{s:s, s:b, s:b, s:s?, s:[], s:[], s:[], s:[]}", "path", path, "exists",
		      current != NULL, "block", sc.block, "broken", sc.broken[0] ? sc.broken : NULL,
		      "managed", "managed_fingerprints", "outside", "outside_fingerprints");
	if (j == NULL || (m = json_object_get(j, "managed")) == NULL ||
	    (mf = json_object_get(j, "managed_fingerprints")) == NULL ||
	    (o = json_object_get(j, "outside")) == NULL ||
	    (of = json_object_get(j, "outside_fingerprints")) == NULL ||
	    cmd_authorized_keys_lines(m, mf, sc.managed, sc.nmanaged) != 0 ||
	    cmd_authorized_keys_lines(o, of, sc.outside, sc.noutside) != 0 ||
	    (res->result_json = json_dumps(j, JSON_COMPACT)) == NULL) {
		err_set(res->error, sizeof(res->error), ERR_NOMEM,
			"authorized_keys: out of memory");
		goto out;
	}
	res->exit_code = 0;
out:
	pthread_mutex_unlock(&cmd_authorized_keys_lock);
	if (dfd != -1)
		close(dfd);
	json_decref(j);
	free(current);
	render_authorized_keys_scan_fini(&sc);
}

void
cmd_authorized_keys(struct cmd_ctx *ctx, const Stoke__Command *cmd, struct cmd_result *res)
{
	const Stoke__AuthorizedKeysCommand *ak = cmd->authorized_keys;
	struct render_authorized_keys r;
	struct cmd_proc_user u;
	char path[PATH_MAX], dir[PATH_MAX], target[PATH_MAX], why[1024];
	char fp[RENDER_AUTHORIZED_KEYS_FP_LEN];
	const char *base;
	char *current = NULL;
	json_t *j = NULL, *fps, *outside;
	int dfd = -1, locked = 0;

	res->exit_code = -1; /* until the command succeeds */
	memset(&r, 0, sizeof(r));
	if (cmd->kind_case != STOKE__COMMAND__KIND_AUTHORIZED_KEYS || ak == NULL) {
		err_set(res->error, sizeof(res->error), ERR_INVAL,
			"authorized_keys: not an authorized_keys command");
		return;
	}
	if (ak->user[0] == '\0') {
		err_set(res->error, sizeof(res->error), ERR_INVAL,
			"authorized_keys: user is missing");
		return;
	}
	/* Also refuses root unless allow_root: root's keys are root's login. */
	if (policy_check(ctx->cfg, cmd, why, sizeof(why)) != 0 ||
	    cmd_proc_user_lookup(ctx->cfg, ak->user, &u, why, sizeof(why)) != 0) {
		err_set(res->error, sizeof(res->error), ERR_INVAL, "authorized_keys: %s", why);
		return;
	}
	for (size_t i = 0; i < ak->n_keys; i++) {
		if (render_authorized_keys_check(ak->keys[i], why, sizeof(why)) != 0) {
			err_set(res->error, sizeof(res->error), ERR_INVAL,
				"authorized_keys %s: keys[%zu]: %s", u.name, i, why);
			return;
		}
	}
	if (cmd_authorized_keys_path(ctx->cfg->authorized_keys_file, &u, path, sizeof(path), why,
				     sizeof(why)) != 0) {
		err_set(res->error, sizeof(res->error), ERR_INVAL, "authorized_keys %s: %s", u.name,
			why);
		return;
	}
	base = strrchr(path, '/') + 1;
	memcpy(dir, path, (size_t)(base - path - 1));
	dir[base - path - 1] = '\0';
	if (dir[0] == '\0')
		snprintf(dir, sizeof(dir), "/");
	if (ak->report_only) {
		cmd_authorized_keys_report(&u, path, dir, base, res);
		return;
	}

	pthread_mutex_lock(&cmd_authorized_keys_lock);
	locked = 1;
	if ((dfd = cmd_authorized_keys_dir(dir, &u, 1, NULL, why, sizeof(why))) == -1 ||
	    cmd_authorized_keys_read(dfd, base, path, u.uid, &current, why, sizeof(why)) != 0 ||
	    render_authorized_keys(current, (const char *const *)ak->keys, ak->n_keys, &r, why,
				   sizeof(why)) != 0) {
		err_set(res->error, sizeof(res->error), ERR_IO, "authorized_keys %s: %s", u.name,
			why);
		goto out;
	}
	/* Through the pinned folder: a link swapped in for it cannot redirect the write. */
	snprintf(target, sizeof(target), "/proc/self/fd/%d/%s", dfd, base);
	if (atomicfile_write(target, r.text, strlen(r.text), 0600,
			     geteuid() == 0 ? u.uid : (uid_t)-1, geteuid() == 0 ? u.gid : (gid_t)-1,
			     why, sizeof(why)) != 0) {
		err_set(res->error, sizeof(res->error), ERR_IO, "authorized_keys %s: write %s: %s",
			u.name, path, why);
		goto out;
	}

	if ((j = json_object()) == NULL || (fps = json_array()) == NULL ||
	    json_object_set_new(j, "fingerprints", fps) != 0 || (outside = json_array()) == NULL ||
	    json_object_set_new(j, "outside", outside) != 0 ||
	    json_object_set_new(j, "path", json_string(path)) != 0) {
		err_set(res->error, sizeof(res->error), ERR_NOMEM,
			"authorized_keys: out of memory");
		goto out;
	}
	for (size_t i = 0; i < ak->n_keys; i++) {
		if (render_authorized_keys_fingerprint(ak->keys[i], fp, why, sizeof(why)) != 0 ||
		    json_array_append_new(fps, json_string(fp)) != 0) {
			err_set(res->error, sizeof(res->error), ERR_NOMEM,
				"authorized_keys: fingerprint: %s", why);
			goto out;
		}
	}
	for (size_t i = 0; i < r.noutside; i++) {
		/* json_stringn_nocheck would keep invalid UTF-8; replace such lines' bytes. */
		json_t *s = json_string(r.outside[i]);

		if (s == NULL) {
			for (char *c = r.outside[i]; *c != '\0'; c++)
				if ((unsigned char)*c >= 0x80)
					*c = '?';
			s = json_string(r.outside[i]);
		}
		json_array_append_new(outside, s);
	}
	res->result_json = json_dumps(j, JSON_COMPACT);
	if (r.noutside > 0)
		cmd_proc_note(ctx, "%s: %zu key line(s) outside the Stoke block", path, r.noutside);
	res->exit_code = 0;
out:
	if (locked)
		pthread_mutex_unlock(&cmd_authorized_keys_lock);
	json_decref(j);
	if (dfd != -1)
		close(dfd);
	free(current);
	render_authorized_keys_fini(&r);
}
