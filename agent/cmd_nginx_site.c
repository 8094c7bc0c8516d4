/*
 * cmd_nginx_site.c: the nginx_site command: write or remove a site's server block and enable
 * link, nginx -t the whole configuration, reload; on any failure put the previous files back
 * exactly so the running nginx never loads a broken configuration. Text from render_nginx.c.
 */
#include "cmd.h"
#include "agent_config.h"
#include "atomicfile.h"
#include "buf.h"
#include "cmd_proc.h"
#include "err.h"
#include "policy.h"
#include "names.h"
#include "render_nginx.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define CMD_NGINX_SITE_FILE_MAX (1024 * 1024)
#define CMD_NGINX_SITE_OUT_MAX (16 * 1024)
#define CMD_NGINX_SITE_TIMEOUT_MS 60000

/* One nginx configuration at a time: a second command must not snapshot the first one's
 * half-applied files. */
static pthread_mutex_t cmd_nginx_site_lock = PTHREAD_MUTEX_INITIALIZER;

enum cmd_nginx_site_kind { CMD_NGINX_SITE_ABSENT, CMD_NGINX_SITE_FILE, CMD_NGINX_SITE_LINK };

/* What a path held before the command. */
struct cmd_nginx_site_snap {
	char path[PATH_MAX];
	enum cmd_nginx_site_kind kind;
	char *data; /* FILE */
	size_t len;
	mode_t mode;
	uid_t uid;
	gid_t gid;
	char link[PATH_MAX]; /* LINK: its target */
};

static int
cmd_nginx_site_snap(struct cmd_nginx_site_snap *s, const char *path, char *err, size_t errlen)
{
	struct stat st;
	ssize_t n;

	memset(s, 0, sizeof(*s));
	if (snprintf(s->path, sizeof(s->path), "%s", path) >= (int)sizeof(s->path))
		return err_set(err, errlen, ERR_INVAL, "%s: path too long", path);
	if (lstat(path, &st) == -1) {
		if (errno == ENOENT) {
			s->kind = CMD_NGINX_SITE_ABSENT;
			return 0;
		}
		return err_set(err, errlen, ERR_IO, "%s: %s", path, strerror(errno));
	}
	if (S_ISLNK(st.st_mode)) {
		if ((n = readlink(path, s->link, sizeof(s->link) - 1)) < 0)
			return err_set(err, errlen, ERR_IO, "%s: readlink: %s", path,
				       strerror(errno));
		s->link[n] = '\0';
		s->kind = CMD_NGINX_SITE_LINK;
		return 0;
	}
	if (!S_ISREG(st.st_mode))
		return err_set(err, errlen, ERR_CONFLICT, "%s: exists and is not a file or a link",
			       path);
	s->kind = CMD_NGINX_SITE_FILE;
	s->mode = st.st_mode & 07777;
	s->uid = st.st_uid;
	s->gid = st.st_gid;
	return atomicfile_read(path, CMD_NGINX_SITE_FILE_MAX, &s->data, &s->len, err, errlen);
}

static void
cmd_nginx_site_snap_fini(struct cmd_nginx_site_snap *s)
{
	free(s->data);
	s->data = NULL;
}

/* Replaces path by a symbolic link to target in one rename. */
static int
cmd_nginx_site_symlink(const char *target, const char *path, char *err, size_t errlen)
{
	char tmp[PATH_MAX];

	for (int i = 0; i < 100; i++) {
		if (snprintf(tmp, sizeof(tmp), "%s.tmp-%ld-%d", path, (long)getpid(), i) >=
		    (int)sizeof(tmp))
			return err_set(err, errlen, ERR_INVAL, "%s: path too long", path);
		if (symlink(target, tmp) == 0) {
			if (rename(tmp, path) == 0)
				return 0;
			unlink(tmp);
			return err_set(err, errlen, ERR_IO, "%s: rename: %s", path,
				       strerror(errno));
		}
		if (errno != EEXIST)
			break;
	}
	return err_set(err, errlen, ERR_IO, "%s: symlink: %s", path, strerror(errno));
}

static int
cmd_nginx_site_unlink(const char *path, char *err, size_t errlen)
{
	if (unlink(path) == -1 && errno != ENOENT)
		return err_set(err, errlen, ERR_IO, "%s: remove: %s", path, strerror(errno));
	return 0;
}

static int
cmd_nginx_site_restore(const struct cmd_nginx_site_snap *s, char *err, size_t errlen)
{
	switch (s->kind) {
	case CMD_NGINX_SITE_ABSENT:
		return cmd_nginx_site_unlink(s->path, err, errlen);
	case CMD_NGINX_SITE_LINK:
		return cmd_nginx_site_symlink(s->link, s->path, err, errlen);
	case CMD_NGINX_SITE_FILE:
		return atomicfile_write(s->path, s->data, s->len, s->mode, s->uid, s->gid, err,
					errlen);
	}
	return 0;
}

/* Whether this machine can listen on IPv6 (a site then also listens on [::]). */
static int
cmd_nginx_site_have_ipv6(void)
{
	struct sockaddr_in6 sa;
	int fd, one = 1, ok;

	if ((fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		return 0;
	memset(&sa, 0, sizeof(sa));
	sa.sin6_family = AF_INET6;
	sa.sin6_addr = in6addr_any;
	setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

/* Trailing blanks off; the text of nginx's own messages. */
static void
cmd_nginx_site_trim(struct buf *b)
{
	while (b->len > 0 && (b->data[b->len - 1] == '\n' || b->data[b->len - 1] == ' ' ||
			      b->data[b->len - 1] == '\r'))
		b->data[--b->len] = '\0';
}

/*
 * Runs nginx with the configured -p/-c/-g and then the given arguments (as the agent:
 * argv built here from the config only). Returns 0 when nginx exited 0; otherwise fills
 * err with what it said.
 */
static int
cmd_nginx_site_nginx(struct cmd_ctx *ctx, const char *a1, const char *a2, struct buf *said,
		     char *err, size_t errlen)
{
	const struct agent_config *cfg = ctx->cfg;
	const char *argv[12];
	char pid[PATH_MAX + 16];
	struct cmd_proc_spec spec;
	struct cmd_result r;
	size_t n = 0;
	int rc;

	argv[n++] = cfg->nginx_bin;
	if (cfg->nginx_prefix != NULL && cfg->nginx_prefix[0] != '\0') {
		argv[n++] = "-p";
		argv[n++] = cfg->nginx_prefix;
	}
	if (cfg->nginx_conf != NULL && cfg->nginx_conf[0] != '\0') {
		argv[n++] = "-c";
		argv[n++] = cfg->nginx_conf;
	}
	if (cfg->nginx_pid != NULL && cfg->nginx_pid[0] != '\0') {
		/* nginx_pid is checked by agent_config.c: no ';', quote or blank in it. */
		snprintf(pid, sizeof(pid), "pid %s;", cfg->nginx_pid);
		argv[n++] = "-g";
		argv[n++] = pid;
	}
	argv[n++] = a1;
	if (a2 != NULL)
		argv[n++] = a2;
	argv[n] = NULL;

	memset(&spec, 0, sizeof(spec));
	spec.argv = argv;
	spec.as_agent = 1;
	spec.cwd = "/";
	spec.timeout_ms = CMD_NGINX_SITE_TIMEOUT_MS;
	spec.capture[CMD_STDOUT] = said;
	spec.capture[CMD_STDERR] = said;
	spec.announce = 1;
	spec.no_status = 1;
	buf_reset(said);
	cmd_result_init(&r);
	rc = cmd_proc_run(ctx, &spec, &r);
	cmd_nginx_site_trim(said);
	if (rc != 0)
		rc = err_set(err, errlen, rc, "%s", r.error);
	else if (r.exit_code != 0)
		rc = err_set(err, errlen, ERR_CONFLICT, "%s",
			     said->len > 0	  ? said->data
			     : r.error[0] != '\0' ? r.error
						  : "failed");
	cmd_result_fini(&r);
	return rc;
}

void
cmd_nginx_site(struct cmd_ctx *ctx, const Stoke__Command *cmd, struct cmd_result *res)
{
	const Stoke__NginxSiteCommand *ns = cmd->nginx_site;
	const struct agent_config *cfg = ctx->cfg;
	struct cmd_nginx_site_snap avail, enabled;
	char apath[PATH_MAX], epath[PATH_MAX], why[1024], undo[512];
	char *text = NULL;
	struct buf said;
	const char *step;
	int locked = 0;
	json_t *j;

	res->exit_code = -1; /* until the command succeeds */
	memset(&avail, 0, sizeof(avail));
	memset(&enabled, 0, sizeof(enabled));
	buf_init(&said, CMD_NGINX_SITE_OUT_MAX);
	if (cmd->kind_case != STOKE__COMMAND__KIND_NGINX_SITE || ns == NULL) {
		err_set(res->error, sizeof(res->error), ERR_INVAL,
			"nginx_site: not an nginx_site command");
		goto out;
	}
	if (names_domain(ns->name, 0, why, sizeof(why)) != 0) {
		err_set(res->error, sizeof(res->error), ERR_INVAL, "nginx_site: name \"%.80s\": %s",
			ns->name, why);
		goto out;
	}
	if (!ns->remove &&
	    render_nginx_site(
		ns->name, (const char *const *)ns->server_names, ns->n_server_names, ns->root,
		ns->listen_port ? ns->listen_port : (uint32_t)ctx->cfg->nginx_listen_port,
		cmd_nginx_site_have_ipv6(), &text, why, sizeof(why)) != 0) {
		err_set(res->error, sizeof(res->error), ERR_INVAL, "nginx_site %s: %s", ns->name,
			why);
		goto out;
	}
	if (snprintf(apath, sizeof(apath), "%s/%s", cfg->nginx_sites_available, ns->name) >=
		(int)sizeof(apath) ||
	    snprintf(epath, sizeof(epath), "%s/%s", cfg->nginx_sites_enabled, ns->name) >=
		(int)sizeof(epath)) {
		err_set(res->error, sizeof(res->error), ERR_INVAL, "nginx_site %s: path too long",
			ns->name);
		goto out;
	}

	pthread_mutex_lock(&cmd_nginx_site_lock);
	locked = 1;
	/* nginx runs as root: its whole configuration must be root's alone, checked before
	 * anything is written or run (policy.c). */
	if (policy_check(cfg, cmd, why, sizeof(why)) != 0) {
		err_set(res->error, sizeof(res->error), ERR_AUTH,
			"nginx_site %s: refused before running nginx: %s", ns->name, why);
		goto out;
	}
	if (cmd_nginx_site_snap(&avail, apath, why, sizeof(why)) != 0 ||
	    cmd_nginx_site_snap(&enabled, epath, why, sizeof(why)) != 0) {
		err_set(res->error, sizeof(res->error), ERR_IO, "nginx_site %s: %s", ns->name, why);
		goto out;
	}

	/* Apply. From here on every failure restores both paths. */
	step = "write";
	if (ns->remove) {
		if (cmd_nginx_site_unlink(epath, why, sizeof(why)) != 0 ||
		    cmd_nginx_site_unlink(apath, why, sizeof(why)) != 0)
			goto failed;
	} else {
		if (atomicfile_write(apath, text, strlen(text), 0644, (uid_t)-1, (gid_t)-1, why,
				     sizeof(why)) != 0)
			goto failed;
		if (ns->enabled) {
			if (cmd_nginx_site_symlink(apath, epath, why, sizeof(why)) != 0)
				goto failed;
		} else if (cmd_nginx_site_unlink(epath, why, sizeof(why)) != 0) {
			goto failed;
		}
	}

	step = "nginx -t";
	if (cmd_nginx_site_nginx(ctx, "-t", NULL, &said, why, sizeof(why)) != 0)
		goto failed;
	j = json_pack("{s:s, s:s, s:b, s:b, s:s}", "name", ns->name, "path", apath, "enabled",
		      !ns->remove && ns->enabled, "removed", ns->remove != 0, "test",
		      said.data != NULL ? said.data : "");
	step = "nginx -s reload";
	if (cmd_nginx_site_nginx(ctx, "-s", "reload", &said, why, sizeof(why)) != 0) {
		json_decref(j);
		goto failed;
	}
	if (j != NULL) {
		res->result_json = json_dumps(j, JSON_COMPACT);
		json_decref(j);
	}
	res->exit_code = 0;
	goto out;

failed:
	/* Put back what was there, in reverse order: the link first, then the file. */
	undo[0] = '\0';
	if (cmd_nginx_site_restore(&enabled, undo, sizeof(undo)) == 0)
		cmd_nginx_site_restore(&avail, undo, sizeof(undo));
	if (undo[0] != '\0')
		err_set(res->error, sizeof(res->error), ERR_IO,
			"nginx_site %s: %s failed: %s; restoring the previous files also failed: "
			"%s",
			ns->name, step, why, undo);
	else
		err_set(res->error, sizeof(res->error), ERR_CONFLICT,
			"nginx_site %s: %s failed (previous files restored): %s", ns->name, step,
			why);
	cmd_proc_note(ctx, "%s failed; the previous site files are back in place", step);
out:
	if (locked)
		pthread_mutex_unlock(&cmd_nginx_site_lock);
	cmd_nginx_site_snap_fini(&avail);
	cmd_nginx_site_snap_fini(&enabled);
	buf_fini(&said);
	free(text);
}
