/*
 * cmd_git_checkout.c: the git_checkout command: clone, or fetch and move a checkout to a
 * branch tip or commit, as a user; a deploy key and known hosts go to a private temp folder
 * that ssh finds through agent-made paths only. Reports commit, message, author.
 */
#include "cmd.h"
#include "agent_config.h"
#include "buf.h"
#include "cmd_proc.h"
#include "err.h"
#include "policy.h"
#include "names.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CMD_GIT_CHECKOUT_KEY_MAX (16 * 1024)
#define CMD_GIT_CHECKOUT_KNOWN_HOSTS_MAX (256 * 1024)
#define CMD_GIT_CHECKOUT_ERR_MAX (16 * 1024)
#define CMD_GIT_CHECKOUT_TMP_TEMPLATE "/tmp/stoke-git-XXXXXX"

struct cmd_git_checkout_state {
	struct cmd_ctx *ctx;
	struct cmd_proc_user user;
	const char *cwd;
	char tmpdir[sizeof(CMD_GIT_CHECKOUT_TMP_TEMPLATE)];
	char ssh_env[128];
	const char *env[4];
	size_t nenv;
	struct buf err; /* stderr of the step that runs */
	struct buf out; /* stdout, when a step wants it */
};

/* Absolute, normalised, no control characters, not "/". */
static int
cmd_git_checkout_dest_check(const char *path, char *err, size_t errlen)
{
	size_t len = strlen(path);

	if (path[0] != '/' || len < 2)
		return err_set(err, errlen, ERR_INVAL, "must be an absolute path other than \"/\"");
	if (len > 1024)
		return err_set(err, errlen, ERR_INVAL, "must be at most 1024 characters");
	for (const char *p = path; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return err_set(err, errlen, ERR_INVAL,
				       "must not contain control characters");
	for (const char *p = path; *p != '\0';) {
		const char *part = p + 1, *next = strchr(part, '/');
		size_t n = next != NULL ? (size_t)(next - part) : strlen(part);

		if (n == 0 || (n == 1 && part[0] == '.') ||
		    (n == 2 && part[0] == '.' && part[1] == '.'))
			return err_set(
			    err, errlen, ERR_INVAL,
			    "must be normalised (no \"//\", \".\", \"..\" or trailing '/')");
		if (next == NULL)
			break;
		p = next;
	}
	return 0;
}

/* 7-40 hexadecimal digits, lower-cased into out. */
static int
cmd_git_checkout_commit_check(const char *c, char out[41], char *err, size_t errlen)
{
	size_t len = strlen(c);

	if (len < 7 || len > 40)
		return err_set(err, errlen, ERR_INVAL, "must be 7-40 hexadecimal digits");
	for (size_t i = 0; i < len; i++) {
		char ch = c[i];

		if (ch >= 'A' && ch <= 'F')
			ch = (char)(ch - 'A' + 'a');
		if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
			return err_set(err, errlen, ERR_INVAL, "must be 7-40 hexadecimal digits");
		out[i] = ch;
	}
	out[len] = '\0';
	return 0;
}

/* Creates name in folder dfd (not existing before, no link followed) holding data. */
static int
cmd_git_checkout_put(int dfd, const char *name, const char *data, size_t len, int addnl,
		     const struct cmd_proc_user *u, char *err, size_t errlen)
{
	int fd, rc = 0;

	fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd == -1)
		return err_set(err, errlen, ERR_IO, "temp %s: %s", name, strerror(errno));
	while (len > 0) {
		ssize_t w = write(fd, data, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			rc = err_set(err, errlen, ERR_IO, "temp %s: %s", name, strerror(errno));
			goto out;
		}
		data += w;
		len -= (size_t)w;
	}
	if (addnl && write(fd, "\n", 1) != 1) {
		rc = err_set(err, errlen, ERR_IO, "temp %s: %s", name, strerror(errno));
		goto out;
	}
	if (geteuid() == 0 && fchown(fd, u->uid, u->gid) == -1)
		rc = err_set(err, errlen, ERR_IO, "temp %s: chown: %s", name, strerror(errno));
out:
	close(fd);
	return rc;
}

/*
 * The private folder for ssh: the key, the known hosts and an ssh config naming them.
 * The config and GIT_SSH_COMMAND hold only the folder's own path, never received text.
 */
static int
cmd_git_checkout_ssh_setup(struct cmd_git_checkout_state *g, const char *key,
			   const char *known_hosts, char *err, size_t errlen)
{
	char conf[1024];
	size_t klen = strlen(key), hlen = strlen(known_hosts);
	int dfd = -1, rc, n;

	memcpy(g->tmpdir, CMD_GIT_CHECKOUT_TMP_TEMPLATE, sizeof(CMD_GIT_CHECKOUT_TMP_TEMPLATE));
	if (mkdtemp(g->tmpdir) == NULL) {
		g->tmpdir[0] = '\0';
		return err_set(err, errlen, ERR_IO, "temp folder: %s", strerror(errno));
	}
	for (const char *p = g->tmpdir; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '/' || *p == '-'))
			return err_set(err, errlen, ERR_INTERNAL, "temp folder: odd name");
	if ((dfd = open(g->tmpdir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) == -1)
		return err_set(err, errlen, ERR_IO, "temp folder: %s", strerror(errno));
	if (geteuid() == 0 && fchown(dfd, g->user.uid, g->user.gid) == -1) {
		rc = err_set(err, errlen, ERR_IO, "temp folder: chown: %s", strerror(errno));
		goto out;
	}
	n = snprintf(conf, sizeof(conf),
		     "Host *\n"
		     "\tUserKnownHostsFile %s/known_hosts\n"
		     "\tStrictHostKeyChecking yes\n"
		     "\tUpdateHostKeys no\n"
		     "\tBatchMode yes\n"
		     "\tPasswordAuthentication no\n"
		     "\tKbdInteractiveAuthentication no\n",
		     g->tmpdir);
	if (klen > 0)
		n += snprintf(conf + n, sizeof(conf) - (size_t)n,
			      "\tIdentityFile %s/id\n"
			      "\tIdentitiesOnly yes\n",
			      g->tmpdir);
	if ((rc = cmd_git_checkout_put(dfd, "config", conf, (size_t)n, 0, &g->user, err, errlen)) !=
	    0)
		goto out;
	rc = cmd_git_checkout_put(dfd, "known_hosts", known_hosts, hlen,
				  hlen > 0 && known_hosts[hlen - 1] != '\n', &g->user, err, errlen);
	if (rc != 0)
		goto out;
	/* ssh refuses a key file without its final newline. */
	if (klen > 0 && (rc = cmd_git_checkout_put(dfd, "id", key, klen, key[klen - 1] != '\n',
						   &g->user, err, errlen)) != 0)
		goto out;
	snprintf(g->ssh_env, sizeof(g->ssh_env), "GIT_SSH_COMMAND=ssh -F %s/config", g->tmpdir);
out:
	close(dfd);
	return rc;
}

static void
cmd_git_checkout_ssh_cleanup(struct cmd_git_checkout_state *g)
{
	struct dirent *de;
	DIR *d;
	int dfd;

	if (g->tmpdir[0] == '\0')
		return;
	if ((dfd = open(g->tmpdir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) != -1) {
		if ((d = fdopendir(dfd)) != NULL) {
			while ((de = readdir(d)) != NULL)
				if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
					unlinkat(dirfd(d), de->d_name, 0);
			closedir(d);
		} else {
			close(dfd);
		}
	}
	rmdir(g->tmpdir);
	g->tmpdir[0] = '\0';
}

/* The last lines of what git said, for res->error. */
static const char *
cmd_git_checkout_tail(struct buf *b)
{
	const char *p;

	if (b->data == NULL)
		return "";
	while (b->len > 0 && (b->data[b->len - 1] == '\n' || b->data[b->len - 1] == '\r'))
		b->data[--b->len] = '\0';
	p = b->data;
	if (b->len > 600)
		p = b->data + b->len - 600;
	return p;
}

/* Runs one git step; on failure fills res and returns non-zero. */
static int
cmd_git_checkout_run(struct cmd_git_checkout_state *g, const char *cwd, const char *const *args,
		     int want_out, struct cmd_result *res)
{
	const char *argv[16];
	struct cmd_proc_spec spec;
	size_t n = 0;
	int rc;

	argv[n++] = g->ctx->cfg->git_bin;
	for (size_t i = 0; args[i] != NULL && n < 15; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	memset(&spec, 0, sizeof(spec));
	spec.argv = argv;
	spec.user = g->user.name;
	spec.cwd = cwd;
	spec.env = g->env;
	spec.nenv = g->nenv;
	spec.capture[CMD_STDERR] = &g->err;
	if (want_out) {
		spec.capture[CMD_STDOUT] = &g->out;
		spec.quiet[CMD_STDOUT] = 1;
		spec.no_status = 1;
	} else {
		spec.announce = 1;
	}
	buf_reset(&g->err);
	buf_reset(&g->out);
	rc = cmd_proc_run(g->ctx, &spec, res);
	if (rc != 0)
		return rc;
	if (res->exit_code != 0) {
		char text[sizeof(res->error)];

		snprintf(text, sizeof(text), "git %s failed (exit %d): %s", args[0], res->exit_code,
			 cmd_git_checkout_tail(&g->err));
		memcpy(res->error, text, sizeof(text));
		res->exit_code = -1; /* the command failed; git's code is in the text */
		return ERR_IO;
	}
	if (res->signal != 0) {
		res->exit_code = -1;
		return ERR_IO;
	}
	return 0;
}

/*
 * Reads dest/.git/config (at most max bytes) as the checkout's user, without following a
 * link at its last step and without blocking on a FIFO put there: it must be a regular
 * file. *out NULL when it does not exist. 0, or an ERR_* code with err filled.
 */
static int
cmd_git_checkout_read_config(const struct cmd_git_checkout_state *g, const char *path, size_t max,
			     char **out, char *err, size_t errlen)
{
	struct policy_fs fs;
	struct stat st;
	size_t len = 0;
	char *text;
	ssize_t r;
	int fd, rc;

	*out = NULL;
	if ((rc = policy_fs_enter(&fs, g->user.uid, g->user.gid, g->user.name, err, errlen)) != 0)
		return rc;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	policy_fs_leave(&fs);
	if (fd == -1 && errno == ENOENT)
		return 0;
	if (fd == -1)
		return err_set(err, errlen, ERR_IO, "%s: %s", path,
			       errno == ELOOP ? "is a symbolic link" : strerror(errno));
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		close(fd);
		return err_set(err, errlen, ERR_CONFLICT, "%s: not a regular file", path);
	}
	if ((size_t)st.st_size > max || (text = malloc((size_t)st.st_size + 1)) == NULL) {
		close(fd);
		return err_set(err, errlen, ERR_TOOBIG, "%s: larger than %zu bytes", path, max);
	}
	while (
	    len < (size_t)st.st_size &&
	    ((r = read(fd, text + len, (size_t)st.st_size - len)) > 0 || (r < 0 && errno == EINTR)))
		len += r > 0 ? (size_t)r : 0;
	close(fd);
	text[len] = '\0';
	*out = text;
	return 0;
}

/*
 * 1 when the [remote "origin"] section of dest/.git/config already says url = url, as
 * git itself writes it; 0 otherwise (then `git remote set-url` runs: a process saved
 * per deploy when nothing changed); -1 when .git/config is not a regular file (a FIFO
 * would hang git too), with err filled.
 */
static int
cmd_git_checkout_origin_is(const struct cmd_git_checkout_state *g, const char *dest,
			   const char *url, char *err, size_t errlen)
{
	char path[PATH_MAX], *text = NULL, *line, *save = NULL, want[4096];
	int in_origin = 0, found = 0;

	if (snprintf(path, sizeof(path), "%s/.git/config", dest) >= (int)sizeof(path) ||
	    snprintf(want, sizeof(want), "\turl = %s", url) >= (int)sizeof(want))
		return 0;
	if (cmd_git_checkout_read_config(g, path, 256 * 1024, &text, err, errlen) != 0)
		return -1;
	if (text == NULL)
		return 0;
	for (line = strtok_r(text, "\n", &save); line && !found;
	     line = strtok_r(NULL, "\n", &save)) {
		if (line[0] == '[')
			in_origin = strcmp(line, "[remote \"origin\"]") == 0;
		else if (in_origin && strcmp(line, want) == 0)
			found = 1;
	}
	free(text);
	return found;
}

void
cmd_git_checkout(struct cmd_ctx *ctx, const Stoke__Command *cmd, struct cmd_result *res)
{
	const Stoke__GitCheckoutCommand *gc = cmd->git_checkout;
	char why[512], commit[41], target[300], refspec[512], gitdir[PATH_MAX];
	struct cmd_git_checkout_state g;
	struct stat st;
	char *f[3], *p;
	json_t *j;

	res->exit_code = -1; /* until the command succeeds */
	memset(&g, 0, sizeof(g));
	g.ctx = ctx;
	buf_init(&g.err, CMD_GIT_CHECKOUT_ERR_MAX);
	buf_init(&g.out, CMD_GIT_CHECKOUT_ERR_MAX);
	if (cmd->kind_case != STOKE__COMMAND__KIND_GIT_CHECKOUT || gc == NULL) {
		err_set(res->error, sizeof(res->error), ERR_INVAL,
			"git_checkout: not a git_checkout command");
		goto out;
	}
	if (names_repo_url(gc->repo_url, why, sizeof(why)) != 0) {
		err_set(res->error, sizeof(res->error), ERR_INVAL, "git_checkout: repo_url: %s",
			why);
		goto out;
	}
	if (names_branch(gc->branch, why, sizeof(why)) != 0) {
		err_set(res->error, sizeof(res->error), ERR_INVAL, "git_checkout: branch: %s", why);
		goto out;
	}
	commit[0] = '\0';
	if (gc->commit[0] != '\0' &&
	    cmd_git_checkout_commit_check(gc->commit, commit, why, sizeof(why))) {
		err_set(res->error, sizeof(res->error), ERR_INVAL, "git_checkout: commit: %s", why);
		goto out;
	}
	if (cmd_git_checkout_dest_check(gc->dest, why, sizeof(why)) != 0) {
		err_set(res->error, sizeof(res->error), ERR_INVAL, "git_checkout: dest: %s", why);
		goto out;
	}
	if (strlen(gc->deploy_key) > CMD_GIT_CHECKOUT_KEY_MAX ||
	    (gc->deploy_key[0] != '\0' && (strncmp(gc->deploy_key, "-----BEGIN ", 11) != 0 ||
					   strstr(gc->deploy_key, "PRIVATE KEY-----") == NULL))) {
		err_set(res->error, sizeof(res->error), ERR_INVAL,
			"git_checkout: deploy_key is not a private key in PEM/OpenSSH form");
		goto out;
	}
	if (strlen(gc->known_hosts) > CMD_GIT_CHECKOUT_KNOWN_HOSTS_MAX) {
		err_set(res->error, sizeof(res->error), ERR_TOOBIG,
			"git_checkout: known_hosts is too long");
		goto out;
	}
	if (gc->known_hosts[0] != '\0' && names_known_hosts(gc->known_hosts, why, sizeof(why))) {
		err_set(res->error, sizeof(res->error), ERR_INVAL, "git_checkout: known_hosts: %s",
			why);
		goto out;
	}
	if (policy_check(ctx->cfg, cmd, why, sizeof(why)) != 0 ||
	    cmd_proc_user_lookup(ctx->cfg, gc->user, &g.user, why, sizeof(why)) != 0) {
		err_set(res->error, sizeof(res->error), ERR_INVAL, "git_checkout: %s", why);
		goto out;
	}

	if (gc->deploy_key[0] != '\0' || gc->known_hosts[0] != '\0') {
		if (cmd_git_checkout_ssh_setup(&g, gc->deploy_key, gc->known_hosts, why,
					       sizeof(why)) != 0) {
			err_set(res->error, sizeof(res->error), ERR_IO, "git_checkout: %s", why);
			goto out;
		}
	} else {
		snprintf(g.ssh_env, sizeof(g.ssh_env),
			 "GIT_SSH_COMMAND=ssh -o BatchMode=yes -o StrictHostKeyChecking=yes");
	}
	g.env[g.nenv++] = g.ssh_env;
	g.env[g.nenv++] = "GIT_TERMINAL_PROMPT=0";
	g.env[g.nenv++] = "GIT_ALLOW_PROTOCOL=file:https:ssh";

	snprintf(refspec, sizeof(refspec), "+refs/heads/%s:refs/remotes/origin/%s", gc->branch,
		 gc->branch);
	if (commit[0] != '\0')
		snprintf(target, sizeof(target), "%s", commit);
	else
		snprintf(target, sizeof(target), "refs/remotes/origin/%s", gc->branch);
	snprintf(gitdir, sizeof(gitdir), "%s/.git", gc->dest);

	if (lstat(gitdir, &st) == -1) {
		const char *clone[] = {
		    "clone", "--no-checkout", "--origin", "origin", "--branch", gc->branch,
		    "--",    gc->repo_url,    gc->dest,	  NULL};

		if (cmd_git_checkout_run(&g, NULL, clone, 0, res) != 0)
			goto out;
	} else {
		const char *seturl[] = {"remote", "set-url", "origin", gc->repo_url, NULL};
		/* no auto gc/maintenance child, no forced-update walk, no submodule look:
		 * a deploy waits for this fetch */
		const char *fetch[] = {"fetch",
				       "--prune",
				       "--no-tags",
				       "--no-auto-gc",
				       "--no-show-forced-updates",
				       "--no-recurse-submodules",
				       "origin",
				       refspec,
				       NULL};

		int same = cmd_git_checkout_origin_is(&g, gc->dest, gc->repo_url, why, sizeof(why));

		if (same < 0) {
			err_set(res->error, sizeof(res->error), ERR_CONFLICT, "git_checkout: %s",
				why);
			goto out;
		}
		if ((!same && cmd_git_checkout_run(&g, gc->dest, seturl, 0, res) != 0) ||
		    cmd_git_checkout_run(&g, gc->dest, fetch, 0, res) != 0)
			goto out;
	}
	{
		const char *checkout[] = {"-c",	      "advice.detachedHead=false",
					  "checkout", "--force",
					  "-B",	      gc->branch,
					  target,     NULL};
		const char *log[] = {"log", "-1", "--format=%H%x00%an <%ae>%x00%s", NULL};

		/* checkout --force -B puts the branch at target (a changed branch too) and
		 * throws away local changes to tracked files and the index, as reset --hard
		 * would. Untracked files (.env) stay. */
		if (cmd_git_checkout_run(&g, gc->dest, checkout, 0, res) != 0 ||
		    cmd_git_checkout_run(&g, gc->dest, log, 1, res) != 0)
			goto out;
	}

	/* "hash\0author\0subject\n" */
	if (g.out.len == 0 || (p = memchr(g.out.data, '\0', g.out.len)) == NULL ||
	    memchr(p + 1, '\0', g.out.len - (size_t)(p + 1 - g.out.data)) == NULL) {
		err_set(res->error, sizeof(res->error), ERR_IO,
			"git_checkout: could not read the output of git log");
		res->exit_code = -1;
		goto out;
	}
	f[0] = g.out.data;
	f[1] = p + 1;
	f[2] = f[1] + strlen(f[1]) + 1;
	f[2][strcspn(f[2], "\n")] = '\0';
	j = json_pack("{s:s, s:s, s:s, s:s}", "commit", f[0], "message", f[2], "author", f[1],
		      "branch", gc->branch);
	if (j == NULL) /* not UTF-8: report the hash at least */
		j = json_pack("{s:s, s:s, s:s, s:s}", "commit", f[0], "message", "", "author", "",
			      "branch", gc->branch);
	if (j != NULL) {
		res->result_json = json_dumps(j, JSON_COMPACT);
		json_decref(j);
	}
	cmd_proc_note(ctx, "%s is at %.12s on %s", gc->dest, f[0], gc->branch);
	res->exit_code = 0;
out:
	cmd_git_checkout_ssh_cleanup(&g);
	buf_fini(&g.err);
	buf_fini(&g.out);
}
