/*
 * cmd_proc.c: runs one program for a handler: a vfork-style clone, privilege drop, execve with
 * an argv, output polled and streamed by line, time limit and cancel that kill the process group.
 * It knows no command kind; the exec, script, git, nginx and service handlers call it.
 */
#include "cmd_proc.h"
#include "agent_config.h"
#include "buf.h"
#include "err.h"
#include "names.h"
#include "timeutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define CMD_PROC_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define CMD_PROC_KILL_GRACE_MS 2000 /* SIGTERM, then SIGKILL this much later */
#define CMD_PROC_GIVEUP_MS 2000	    /* after SIGKILL, stop waiting this much later */
#define CMD_PROC_LINGER_MS 1000	    /* output still open after the program exited */
#define CMD_PROC_TICK_MS 100	    /* how often the cancel flag is looked at */
#define CMD_PROC_FLUSH_MS 100	    /* a partial line is sent once this old */
#define CMD_PROC_PENDING 32768	    /* longest line kept back waiting for its '\n' */
#define CMD_PROC_MAX_ARGS 4096
#define CMD_PROC_MAX_ENV 512
#define CMD_PROC_MAX_ENV_LEN 65536
#define CMD_PROC_MAX_GROUPS 1024

/* What the child reports on its error pipe when it cannot exec. */
enum cmd_proc_stage {
	CMD_PROC_STAGE_FDS,
	CMD_PROC_STAGE_SETGROUPS,
	CMD_PROC_STAGE_SETGID,
	CMD_PROC_STAGE_SETUID,
	CMD_PROC_STAGE_STILL_ROOT,
	CMD_PROC_STAGE_CHDIR,
	CMD_PROC_STAGE_EXEC,
};

struct cmd_proc_report {
	int stage;
	int err;
};

/* Everything the child needs, prepared before fork (the child only makes system calls). */
struct cmd_proc_child {
	int drop;
	uid_t uid;
	gid_t gid;
	gid_t *groups;
	size_t ngroups;
	const char *cwd;
	int cwd_fallback; /* chdir("/") when cwd fails (cwd was the default home) */
	char **paths;	  /* execve candidates for argv[0] */
	size_t npaths;
	char *const *argv;
	char **envp;
	int devnull, out_w, err_w, rep_w;
};

struct cmd_proc_stream {
	int fd; /* -1 once at end of file */
	enum cmd_stream kind;
	char pend[CMD_PROC_PENDING];
	size_t len;
	int64_t since; /* when the oldest pending byte arrived */
};

struct cmd_proc_run_state {
	struct cmd_ctx *ctx;
	const struct cmd_proc_spec *spec;
	size_t emitted;
	size_t max_output;
	int cut;
};

void
cmd_proc_emit(struct cmd_ctx *ctx, enum cmd_stream stream, const char *data, size_t len)
{
	if (ctx != NULL && ctx->output != NULL && len > 0)
		ctx->output(ctx->output_arg, stream, data, len);
}

void
cmd_proc_note(struct cmd_ctx *ctx, const char *fmt, ...)
{
	char line[1200];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	cmd_proc_emit(ctx, CMD_SYSTEM, line, (size_t)n);
}

int
cmd_proc_env_check(const char *kv, char *err, size_t errlen)
{
	const char *p = kv;

	if (kv == NULL || !((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || *p == '_'))
		return err_set(err, errlen, ERR_INVAL,
			       "environment entry must be NAME=value with NAME starting with a "
			       "letter or '_'");
	for (p++; *p != '=' && *p != '\0'; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		      (*p >= '0' && *p <= '9') || *p == '_'))
			return err_set(err, errlen, ERR_INVAL,
				       "environment name may contain only A-Z a-z 0-9 _");
	if (*p != '=')
		return err_set(err, errlen, ERR_INVAL, "environment entry must be NAME=value");
	if (strlen(kv) > CMD_PROC_MAX_ENV_LEN)
		return err_set(err, errlen, ERR_TOOBIG, "environment entry longer than %d bytes",
			       CMD_PROC_MAX_ENV_LEN);
	return 0;
}

static int
cmd_proc_copy(char *dst, size_t dstlen, const char *src)
{
	size_t n = strlen(src);

	if (n >= dstlen)
		return -1;
	memcpy(dst, src, n + 1);
	return 0;
}

/* getpwnam_r / getpwuid_r into u. */
static int
cmd_proc_pw(const char *name, uid_t uid, struct cmd_proc_user *u, char *err, size_t errlen)
{
	struct passwd pw, *res = NULL;
	size_t len = 16384;
	char *mem = NULL;
	int rc;

	for (;;) {
		free(mem);
		if ((mem = malloc(len)) == NULL)
			return err_set(err, errlen, ERR_NOMEM, "out of memory");
		rc = name != NULL ? getpwnam_r(name, &pw, mem, len, &res)
				  : getpwuid_r(uid, &pw, mem, len, &res);
		if (rc != ERANGE || len >= 1024 * 1024)
			break;
		len *= 2;
	}
	if (res == NULL) {
		if (rc != 0)
			rc = err_set(err, errlen, ERR_IO, "user %s: %s", name != NULL ? name : "?",
				     strerror(rc));
		else if (name != NULL)
			rc = err_set(err, errlen, ERR_NOTFOUND, "user %s does not exist", name);
		else
			rc = err_set(err, errlen, ERR_NOTFOUND, "uid %ld has no passwd entry",
				     (long)uid);
		goto out;
	}
	if (cmd_proc_copy(u->name, sizeof(u->name), pw.pw_name) == -1 ||
	    cmd_proc_copy(u->home, sizeof(u->home),
			  pw.pw_dir != NULL && pw.pw_dir[0] == '/' ? pw.pw_dir : "/") == -1) {
		rc = err_set(err, errlen, ERR_INVAL, "user %s: name or home too long", pw.pw_name);
		goto out;
	}
	u->uid = pw.pw_uid;
	u->gid = pw.pw_gid;
	rc = 0;
out:
	free(mem);
	return rc;
}

int
cmd_proc_user_lookup(const struct agent_config *cfg, const char *name, struct cmd_proc_user *u,
		     char *err, size_t errlen)
{
	char why[256];
	int rc;

	if (name == NULL || *name == '\0')
		name = cfg->default_user != NULL ? cfg->default_user : "";
	if (names_user(name, why, sizeof(why)) != 0)
		return err_set(err, errlen, ERR_INVAL, "user \"%.64s\": %s", name, why);
	if ((rc = cmd_proc_pw(name, 0, u, err, errlen)) != 0)
		return rc;
	if (u->uid == 0 && !cfg->allow_root)
		return err_set(err, errlen, ERR_AUTH,
			       "user %s: running as root is not allowed (allow_root is off)", name);
	return 0;
}

/* Supplementary groups of a user (as initgroups would set them), malloc'd. */
static int
cmd_proc_groups(const struct cmd_proc_user *u, gid_t **out, size_t *nout, char *err, size_t errlen)
{
	int n = 32;
	gid_t *g = NULL, *p;

	for (;;) {
		int want = n;

		if ((p = realloc(g, sizeof(*g) * (size_t)n)) == NULL) {
			free(g);
			return err_set(err, errlen, ERR_NOMEM, "out of memory");
		}
		g = p;
		if (getgrouplist(u->name, u->gid, g, &want) != -1) {
			n = want;
			break;
		}
		if (want <= n || want > CMD_PROC_MAX_GROUPS) {
			free(g);
			return err_set(err, errlen, ERR_INVAL, "user %s: too many groups", u->name);
		}
		n = want;
	}
	*out = g;
	*nout = (size_t)n;
	return 0;
}

/* Index of the entry named like kv ("NAME=...") in env[0..n), or -1. */
static long
cmd_proc_env_find(char **env, size_t n, const char *kv)
{
	size_t namelen = (size_t)(strchr(kv, '=') - kv);

	for (size_t i = 0; i < n; i++)
		if (strncmp(env[i], kv, namelen + 1) == 0)
			return (long)i;
	return -1;
}

static void
cmd_proc_strv_free(char **v, size_t n)
{
	if (v == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* The clean environment: PATH, HOME, USER, LOGNAME, LANG, then the given entries (a given
 * name replaces a default one). NULL-terminated, malloc'd. */
static int
cmd_proc_envp(const struct cmd_proc_spec *spec, const struct cmd_proc_user *u, char ***out,
	      size_t *nout, char *err, size_t errlen)
{
	size_t n = 0, cap = 5 + spec->nenv + 1;
	char **env;
	int rc;

	if (spec->nenv > CMD_PROC_MAX_ENV)
		return err_set(err, errlen, ERR_TOOBIG, "more than %d environment entries",
			       CMD_PROC_MAX_ENV);
	if ((env = calloc(cap, sizeof(*env))) == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	if (asprintf(&env[n++], "PATH=%s", CMD_PROC_PATH) < 0 ||
	    asprintf(&env[n++], "HOME=%s", u->home) < 0 ||
	    asprintf(&env[n++], "USER=%s", u->name) < 0 ||
	    asprintf(&env[n++], "LOGNAME=%s", u->name) < 0 ||
	    asprintf(&env[n++], "LANG=%s", "C.UTF-8") < 0) {
		env[--n] = NULL;
		rc = err_set(err, errlen, ERR_NOMEM, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < spec->nenv; i++) {
		char *dup;
		long at;

		if ((rc = cmd_proc_env_check(spec->env[i], err, errlen)) != 0)
			goto fail;
		if ((dup = strdup(spec->env[i])) == NULL) {
			rc = err_set(err, errlen, ERR_NOMEM, "out of memory");
			goto fail;
		}
		if ((at = cmd_proc_env_find(env, n, dup)) >= 0) {
			free(env[at]);
			env[at] = dup;
		} else {
			env[n++] = dup;
		}
	}
	env[n] = NULL;
	*out = env;
	*nout = n;
	return 0;
fail:
	cmd_proc_strv_free(env, n);
	return rc;
}

/* execve candidates for argv0: itself when it has a '/', else each PATH folder. */
static int
cmd_proc_paths(const char *argv0, char **envp, size_t nenv, char ***out, size_t *nout, char *err,
	       size_t errlen)
{
	const char *path = CMD_PROC_PATH, *p, *colon;
	char **v = NULL;
	size_t n = 0, cap = 1;
	long at;

	if (strchr(argv0, '/') != NULL) {
		if ((v = calloc(1, sizeof(*v))) == NULL || (v[0] = strdup(argv0)) == NULL)
			goto nomem;
		*out = v;
		*nout = 1;
		return 0;
	}
	if ((at = cmd_proc_env_find(envp, nenv, "PATH=")) >= 0)
		path = envp[at] + 5;
	for (p = path; *p != '\0'; p++)
		cap += *p == ':';
	if ((v = calloc(cap, sizeof(*v))) == NULL)
		goto nomem;
	for (p = path;; p = colon + 1) {
		size_t len;

		colon = strchr(p, ':');
		len = colon != NULL ? (size_t)(colon - p) : strlen(p);
		/* Only absolute folders: an empty or relative PATH entry would search the
		 * working folder. */
		if (len > 0 && p[0] == '/') {
			if (asprintf(&v[n], "%.*s/%s", (int)len, p, argv0) < 0) {
				v[n] = NULL;
				goto nomem;
			}
			n++;
		}
		if (colon == NULL)
			break;
	}
	if (n == 0) {
		free(v);
		return err_set(err, errlen, ERR_NOTFOUND, "%s: no absolute folder in PATH", argv0);
	}
	*out = v;
	*nout = n;
	return 0;
nomem:
	cmd_proc_strv_free(v, n);
	return err_set(err, errlen, ERR_NOMEM, "out of memory");
}

/*
 * The child runs in the agent's own memory (clone with CLONE_VM | CLONE_VFORK, as
 * posix_spawn does): copying the page tables of a multi-threaded agent for a fork was one
 * of its biggest CPU costs. So until execve it makes raw system calls only, through
 * syscall(): no malloc, no stdio, no locks, and none of the glibc wrappers that keep
 * process-wide state (glibc's setuid, setgid and setgroups would change the credentials of
 * every thread of the agent). The agent's other threads keep running meanwhile; the calling
 * thread sleeps until the child execs or exits, so the child may use that thread's errno.
 */
#define CMD_PROC_STACK (64 * 1024) /* the child's stack (in the spawning frame) */

/* 32-bit x86 and arm have 16-bit ids in the plain calls; the *32 ones take full ids. */
#ifdef SYS_setresuid32
#define CMD_PROC_SYS_SETGROUPS SYS_setgroups32
#define CMD_PROC_SYS_SETRESGID SYS_setresgid32
#define CMD_PROC_SYS_SETRESUID SYS_setresuid32
#define CMD_PROC_SYS_GETRESUID SYS_getresuid32
#else
#define CMD_PROC_SYS_SETGROUPS SYS_setgroups
#define CMD_PROC_SYS_SETRESGID SYS_setresgid
#define CMD_PROC_SYS_SETRESUID SYS_setresuid
#define CMD_PROC_SYS_GETRESUID SYS_getresuid
#endif

/* The kernel's signal set is NSIG - 1 bits (8 bytes on most architectures). */
#define CMD_PROC_KSIGSET ((NSIG - 1 + 7) / 8)

/* All zero: as a kernel struct sigaction, SIG_DFL with no flags and an empty mask; as a
 * kernel signal set, no signal. Static so the child needs no memset. */
static const unsigned long cmd_proc_zero[16];

/* The signals whose disposition is not the default (handled or ignored), looked up once:
 * the child resets only these (execve resets handlers but keeps ignored signals ignored),
 * not every signal (64 system calls per command). The agent sets its dispositions at
 * start-up, before any command. */
static int cmd_proc_reset_sig[NSIG];
static int cmd_proc_nreset;
static pthread_once_t cmd_proc_reset_once = PTHREAD_ONCE_INIT;

static void
cmd_proc_reset_init(void)
{
	for (int sig = 1; sig < NSIG; sig++) {
		struct sigaction sa;

		if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &sa) == -1)
			continue;
		if (sa.sa_handler != SIG_DFL || (sa.sa_flags & SA_SIGINFO))
			cmd_proc_reset_sig[cmd_proc_nreset++] = sig;
	}
}

/* The CPUs the agent may use as it started, given back to each program it starts when
 * cmd_proc_pin_self pinned the agent's own threads to one of them. */
static cpu_set_t cmd_proc_cpus;
static int cmd_proc_pinned;

int
cmd_proc_pin_self(int *cpu)
{
	cpu_set_t one;
	int n, k, i;

	if (sched_getaffinity(0, sizeof(cmd_proc_cpus), &cmd_proc_cpus) == -1)
		return -1;
	if ((n = CPU_COUNT(&cmd_proc_cpus)) <= 1)
		return 0;	 /* nothing to gain */
	k = (int)(getpid() % n); /* many agents on one machine (tests) spread out */
	for (i = 0; i < CPU_SETSIZE; i++)
		if (CPU_ISSET(i, &cmd_proc_cpus) && k-- == 0)
			break;
	CPU_ZERO(&one);
	CPU_SET(i, &one);
	if (sched_setaffinity(0, sizeof(one), &one) == -1)
		return -1;
	cmd_proc_pinned = 1;
	*cpu = i;
	return 1;
}

/* Sanitizer runtimes keep per-thread state that the child would share with the sleeping
 * parent thread (ASan unpoisons "its" stack before a noreturn call): no instrumentation in
 * the child. */
#define CMD_PROC_CHILD __attribute__((no_sanitize("address", "undefined")))

static void CMD_PROC_CHILD __attribute__((noreturn)) cmd_proc_child_fail(int rep, int stage, int e)
{
	struct cmd_proc_report r = {stage, e};
	long w;

	do
		w = syscall(SYS_write, rep, &r, sizeof(r));
	while (w == -1 && errno == EINTR);
	syscall(SYS_exit_group, 127);
	__builtin_unreachable();
}

/* In the clone child, on its own stack in the agent's memory: raw system calls only. */
static int CMD_PROC_CHILD
cmd_proc_child_run(void *arg)
{
	const struct cmd_proc_child *c = arg;
	int devnull, out_w, err_w, rep, e;

	/* Signals are all blocked (the parent blocked them around clone). Reset every handler
	 * before unblocking, so no agent handler ever runs on this stack. */
	syscall(SYS_setpgid, 0, 0);
	for (int i = 0; i < cmd_proc_nreset; i++)
		syscall(SYS_rt_sigaction, cmd_proc_reset_sig[i], cmd_proc_zero, NULL,
			CMD_PROC_KSIGSET);
	syscall(SYS_rt_sigprocmask, SIG_SETMASK, cmd_proc_zero, NULL, CMD_PROC_KSIGSET);
	/* The program may use every CPU the agent could, not only the agent's own one. */
	if (cmd_proc_pinned)
		syscall(SYS_sched_setaffinity, 0, sizeof(cmd_proc_cpus), &cmd_proc_cpus);

	/* Move the descriptors above 2 first so dup3 cannot clobber one of them. The
	 * descriptor table is the child's own copy (no CLONE_FILES). */
	devnull = (int)syscall(SYS_fcntl, c->devnull, F_DUPFD_CLOEXEC, 10);
	out_w = (int)syscall(SYS_fcntl, c->out_w, F_DUPFD_CLOEXEC, 10);
	err_w = (int)syscall(SYS_fcntl, c->err_w, F_DUPFD_CLOEXEC, 10);
	rep = (int)syscall(SYS_fcntl, c->rep_w, F_DUPFD_CLOEXEC, 10);
	if (rep == -1)
		syscall(SYS_exit_group, 127);
	if (devnull == -1 || out_w == -1 || err_w == -1)
		cmd_proc_child_fail(rep, CMD_PROC_STAGE_FDS, errno);
	if (syscall(SYS_dup3, devnull, 0, 0) == -1 || syscall(SYS_dup3, out_w, 1, 0) == -1 ||
	    syscall(SYS_dup3, err_w, 2, 0) == -1 || syscall(SYS_dup3, rep, 3, O_CLOEXEC) == -1)
		cmd_proc_child_fail(rep, CMD_PROC_STAGE_FDS, errno);
	rep = 3;
	syscall(SYS_close_range, 4, ~0U, 0);

	if (c->drop) {
		uid_t ruid, euid, suid;

		if (syscall(CMD_PROC_SYS_SETGROUPS, c->ngroups, c->groups) == -1)
			cmd_proc_child_fail(rep, CMD_PROC_STAGE_SETGROUPS, errno);
		if (syscall(CMD_PROC_SYS_SETRESGID, c->gid, c->gid, c->gid) == -1)
			cmd_proc_child_fail(rep, CMD_PROC_STAGE_SETGID, errno);
		if (syscall(CMD_PROC_SYS_SETRESUID, c->uid, c->uid, c->uid) == -1)
			cmd_proc_child_fail(rep, CMD_PROC_STAGE_SETUID, errno);
		if (c->uid != 0 && (syscall(CMD_PROC_SYS_GETRESUID, &ruid, &euid, &suid) == -1 ||
				    ruid != c->uid || euid != c->uid || suid != c->uid ||
				    syscall(CMD_PROC_SYS_SETRESUID, 0, 0, 0) != -1))
			cmd_proc_child_fail(rep, CMD_PROC_STAGE_STILL_ROOT, EPERM);
	}
	if (syscall(SYS_chdir, c->cwd) == -1) {
		e = errno;
		if (!c->cwd_fallback || syscall(SYS_chdir, "/") == -1)
			cmd_proc_child_fail(rep, CMD_PROC_STAGE_CHDIR, e);
	}
	e = ENOENT;
	for (size_t i = 0; i < c->npaths; i++) {
		syscall(SYS_execve, c->paths[i], c->argv, c->envp);
		/* As execvp: remember a permission error, keep looking on the others. */
		if (errno == EACCES)
			e = EACCES;
		else if (errno != ENOENT && errno != ENOTDIR && errno != ESTALE)
			e = errno;
	}
	cmd_proc_child_fail(rep, CMD_PROC_STAGE_EXEC, e);
}

/*
 * Starts the child and returns once it has called execve or exited (CLONE_VFORK): its pid,
 * or -1 with errno set. The child runs on a stack that is an array in this frame: this
 * thread is suspended until then, and a fresh mapping per command (mmap, munmap and the
 * TLB shoot-down on every CPU) cost more than the child itself. The child stays far below
 * CMD_PROC_STACK (raw system calls only). Signals are blocked around clone so no handler of
 * the agent runs in the child before it resets them.
 */
static pid_t
cmd_proc_spawn(struct cmd_proc_child *c)
{
	_Alignas(64) char stack[CMD_PROC_STACK];
	sigset_t all, old;
	pid_t pid;
	int e;

	pthread_once(&cmd_proc_reset_once, cmd_proc_reset_init);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pid = clone(cmd_proc_child_run, stack + sizeof(stack), CLONE_VM | CLONE_VFORK | SIGCHLD, c);
	e = errno; /* meaningful only when clone failed (the child may have changed it) */
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	errno = e;
	return pid;
}

/* Sends data to the capture buffer and the output, cutting it at max_output. */
static void
cmd_proc_send(struct cmd_proc_run_state *st, const char *data, size_t len, enum cmd_stream kind)
{
	const struct cmd_proc_spec *spec = st->spec;
	size_t room;

	if (len == 0)
		return;
	if (spec->capture[kind] != NULL)
		(void)buf_append(spec->capture[kind], data, len); /* bounded: excess dropped */
	if (spec->quiet[kind] || st->cut)
		return;
	room = st->max_output > st->emitted ? st->max_output - st->emitted : 0;
	if (len > room) {
		cmd_proc_emit(st->ctx, kind, data, room);
		st->emitted += room;
		st->cut = 1;
		cmd_proc_emit(st->ctx, kind, "\n", 1);
		cmd_proc_note(st->ctx,
			      "output cut: more than %zu bytes (max_output); the rest is discarded",
			      st->max_output);
		return;
	}
	cmd_proc_emit(st->ctx, kind, data, len);
	st->emitted += len;
}

static void
cmd_proc_flush(struct cmd_proc_run_state *st, struct cmd_proc_stream *s, int force)
{
	char *nl;
	size_t n;

	if (s->len == 0)
		return;
	if (force || s->len == sizeof(s->pend)) {
		n = s->len;
	} else {
		nl = memrchr(s->pend, '\n', s->len);
		if (nl == NULL)
			return;
		n = (size_t)(nl - s->pend) + 1;
	}
	cmd_proc_send(st, s->pend, n, s->kind);
	memmove(s->pend, s->pend + n, s->len - n);
	s->len -= n;
	s->since = time_mono_ms();
}

/* Reads what is available (up to about 1 MiB per call, to stay fair to the other
 * stream). Returns 1 when something was read. */
static int
cmd_proc_read(struct cmd_proc_run_state *st, struct cmd_proc_stream *s)
{
	size_t total = 0;
	ssize_t r;
	int got = 0;

	while (s->fd != -1 && total < 1024 * 1024) {
		if (s->len == 0)
			s->since = time_mono_ms();
		r = read(s->fd, s->pend + s->len, sizeof(s->pend) - s->len);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			/* Treat a read error as the end of the stream. */
			r = 0;
		}
		if (r == 0) {
			close(s->fd);
			s->fd = -1;
			cmd_proc_flush(st, s, 1);
			break;
		}
		got = 1;
		total += (size_t)r;
		s->len += (size_t)r;
		cmd_proc_flush(st, s, 0);
	}
	return got;
}

int
cmd_proc_group_alive(pid_t pgid)
{
	char path[300], stat[512], *p;
	struct dirent *de;
	DIR *d;
	int alive = 0;

	if ((d = opendir("/proc")) == NULL)
		return kill(-pgid, 0) == 0;
	while (!alive && (de = readdir(d)) != NULL) {
		long pg;
		char state;
		ssize_t n;
		int fd;

		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
			continue;
		n = read(fd, stat, sizeof(stat) - 1);
		close(fd);
		if (n <= 0)
			continue;
		stat[n] = '\0';
		/* "pid (comm) S ppid pgrp ...": comm may hold anything, so from the last ')'. */
		if ((p = strrchr(stat, ')')) == NULL)
			continue;
		if (sscanf(p + 1, " %c %*d %ld", &state, &pg) != 2)
			continue;
		if (pg == (long)pgid && state != 'Z' && state != 'X')
			alive = 1;
	}
	closedir(d);
	return alive;
}

static const char *
cmd_proc_stage_name(int stage)
{
	switch (stage) {
	case CMD_PROC_STAGE_FDS:
		return "set up descriptors";
	case CMD_PROC_STAGE_SETGROUPS:
		return "setgroups";
	case CMD_PROC_STAGE_SETGID:
		return "setgid";
	case CMD_PROC_STAGE_SETUID:
		return "setuid";
	case CMD_PROC_STAGE_STILL_ROOT:
		return "drop privileges";
	case CMD_PROC_STAGE_CHDIR:
		return "chdir";
	default:
		return "exec";
	}
}

/* "$ argv0 arg 'arg with space'" for the announce line. */
static void
cmd_proc_announce(struct cmd_ctx *ctx, const char *const *argv)
{
	struct buf b;

	buf_init(&b, 4096);
	buf_puts(&b, "$");
	for (size_t i = 0; argv[i] != NULL; i++) {
		int plain = argv[i][0] != '\0';

		for (const char *p = argv[i]; *p != '\0'; p++)
			if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
				   "/._-+=:@,%",
				   *p) == NULL)
				plain = 0;
		if (plain) {
			buf_printf(&b, " %s", argv[i]);
			continue;
		}
		buf_puts(&b, " '");
		for (const char *p = argv[i]; *p != '\0'; p++) {
			if (*p == '\'')
				buf_puts(&b, "'\\''");
			else if ((unsigned char)*p < 0x20)
				buf_putc(&b, '?');
			else
				buf_putc(&b, *p);
		}
		buf_putc(&b, '\'');
	}
	buf_putc(&b, '\n');
	if (b.data != NULL)
		cmd_proc_emit(ctx, CMD_SYSTEM, b.data, b.len);
	buf_fini(&b);
}

static void
cmd_proc_duration(int64_t ms, char *out, size_t outlen)
{
	snprintf(out, outlen, "%lld.%02llds", (long long)(ms / 1000), (long long)(ms % 1000 / 10));
}

/* Sends sig to the process group. */
static void
cmd_proc_kill(struct cmd_ctx *ctx, pid_t pgid, int sig, const char *why)
{
	if (kill(-pgid, sig) == -1 && errno != ESRCH)
		cmd_proc_note(ctx, "%s: kill process group %ld: %s", why, (long)pgid,
			      strerror(errno));
	else
		cmd_proc_note(ctx, "%s: sent SIG%s to process group %ld", why, sigabbrev_np(sig),
			      (long)pgid);
}

int
cmd_proc_run(struct cmd_ctx *ctx, const struct cmd_proc_spec *spec, struct cmd_result *res)
{
	const struct agent_config *cfg = ctx->cfg;
	struct cmd_proc_run_state st = {ctx, spec, 0, 0, 0};
	struct cmd_proc_stream *out = NULL, *errs = NULL;
	struct cmd_proc_child c;
	struct cmd_proc_user u;
	struct cmd_proc_report rep;
	int outp[2] = {-1, -1}, errp[2] = {-1, -1}, repp[2] = {-1, -1};
	int pidfd = -1, rc, status = 0, reaped = 0, killing = 0, ticked = 0;
	int64_t start, deadline, kill_at = 0, exited_at = 0, last_data;
	long timeout_ms;
	char **envp = NULL, **paths = NULL;
	size_t nenv = 0, npaths = 0, nargs = 0;
	ssize_t r;
	pid_t pid = -1;
	char dur[32];

	memset(&c, 0, sizeof(c));
	c.devnull = -1;
	res->exit_code = -1;
	res->signal = 0;
	res->error[0] = '\0';

	if (spec->argv == NULL || spec->argv[0] == NULL || spec->argv[0][0] == '\0')
		return err_set(res->error, sizeof(res->error), ERR_INVAL, "argv is empty");
	while (spec->argv[nargs] != NULL)
		nargs++;
	if (nargs > CMD_PROC_MAX_ARGS)
		return err_set(res->error, sizeof(res->error), ERR_TOOBIG, "more than %d arguments",
			       CMD_PROC_MAX_ARGS);
	if (spec->cwd != NULL && spec->cwd[0] != '\0' && spec->cwd[0] != '/')
		return err_set(res->error, sizeof(res->error), ERR_INVAL,
			       "working folder must be an absolute path");

	/* Who it runs as. */
	memset(&u, 0, sizeof(u));
	if (spec->as_agent) {
		if ((rc = cmd_proc_pw(NULL, geteuid(), &u, res->error, sizeof(res->error))) != 0)
			return rc;
	} else {
		rc = cmd_proc_user_lookup(cfg, spec->user, &u, res->error, sizeof(res->error));
		if (rc != 0)
			return rc;
		if (geteuid() == 0) {
			c.drop = 1;
			rc = cmd_proc_groups(&u, &c.groups, &c.ngroups, res->error,
					     sizeof(res->error));
			if (rc != 0)
				return rc;
		} else if (u.uid != geteuid()) {
			return err_set(res->error, sizeof(res->error), ERR_AUTH,
				       "user %s: the agent does not run as root and cannot switch "
				       "users",
				       u.name);
		}
	}
	c.uid = u.uid;
	c.gid = u.gid;
	if (spec->cwd != NULL && spec->cwd[0] != '\0') {
		c.cwd = spec->cwd;
	} else {
		c.cwd = u.home;
		c.cwd_fallback = 1;
	}
	if ((rc = cmd_proc_envp(spec, &u, &envp, &nenv, res->error, sizeof(res->error))) != 0)
		goto fail;
	rc = cmd_proc_paths(spec->argv[0], envp, nenv, &paths, &npaths, res->error,
			    sizeof(res->error));
	if (rc != 0)
		goto fail;
	c.paths = paths;
	c.npaths = npaths;
	c.argv = (char *const *)spec->argv;
	c.envp = envp;

	if ((out = calloc(1, sizeof(*out))) == NULL || (errs = calloc(1, sizeof(*errs))) == NULL) {
		rc = err_set(res->error, sizeof(res->error), ERR_NOMEM, "out of memory");
		goto fail;
	}
	out->kind = CMD_STDOUT;
	errs->kind = CMD_STDERR;
	out->fd = errs->fd = -1;
	if ((c.devnull = open("/dev/null", O_RDONLY | O_CLOEXEC)) == -1 ||
	    pipe2(outp, O_CLOEXEC) == -1 || pipe2(errp, O_CLOEXEC) == -1 ||
	    pipe2(repp, O_CLOEXEC) == -1) {
		rc = err_set(res->error, sizeof(res->error), ERR_IO, "pipe: %s", strerror(errno));
		goto fail;
	}
	c.out_w = outp[1];
	c.err_w = errp[1];
	c.rep_w = repp[1];

	timeout_ms = spec->timeout_ms > 0 ? spec->timeout_ms : cfg->exec_timeout;
	if (timeout_ms <= 0)
		timeout_ms = 3600000;
	st.max_output = cfg->max_output > 0 ? (size_t)cfg->max_output : 64u * 1024 * 1024;
	if (spec->announce)
		cmd_proc_announce(ctx, spec->argv);

	if ((pid = cmd_proc_spawn(&c)) == -1) {
		rc = err_set(res->error, sizeof(res->error), ERR_IO, "clone: %s", strerror(errno));
		goto fail;
	}
	rc = 0;
	start = time_mono_ms();
	deadline = start + timeout_ms;
	/* The child has made itself a process group leader before execve (CLONE_VFORK). */
	close(outp[1]);
	close(errp[1]);
	close(repp[1]);
	outp[1] = errp[1] = repp[1] = -1;
	close(c.devnull);
	c.devnull = -1;

	/* The report pipe closes on a successful execve. */
	do
		r = read(repp[0], &rep, sizeof(rep));
	while (r < 0 && errno == EINTR);
	if (r == (ssize_t)sizeof(rep)) {
		waitpid(pid, &status, 0);
		if (rep.stage == CMD_PROC_STAGE_EXEC)
			rc = err_set(res->error, sizeof(res->error),
				     rep.err == ENOENT ? ERR_NOTFOUND : ERR_IO, "%s: %s",
				     spec->argv[0], strerror(rep.err));
		else if (rep.stage == CMD_PROC_STAGE_CHDIR)
			rc = err_set(res->error, sizeof(res->error), ERR_IO, "chdir %s: %s", c.cwd,
				     strerror(rep.err));
		else
			rc = err_set(res->error, sizeof(res->error), ERR_IO, "%s: %s (as user %s)",
				     cmd_proc_stage_name(rep.stage), strerror(rep.err), u.name);
		pid = -1;
		goto fail;
	}

	out->fd = outp[0];
	errs->fd = errp[0];
	outp[0] = errp[0] = -1;
	fcntl(out->fd, F_SETFL, O_NONBLOCK);
	fcntl(errs->fd, F_SETFL, O_NONBLOCK);
	pidfd = pidfd_open(pid, 0);
	last_data = start;

	for (;;) {
		struct pollfd pfd[3];
		nfds_t n = 0;
		int64_t now, wait_ms;

		if (!reaped) {
			if (waitpid(pid, &status, WNOHANG) == pid) {
				reaped = 1;
				exited_at = time_mono_ms();
				if (pidfd != -1) {
					close(pidfd);
					pidfd = -1;
				}
			}
		}
		now = time_mono_ms();
		if (reaped && out->fd == -1 && errs->fd == -1)
			break;
		if (killing && reaped && !cmd_proc_group_alive(pid))
			break;
		if (!killing && ctx->cancel != NULL && atomic_load(ctx->cancel) != 0) {
			cmd_proc_kill(ctx, pid, SIGTERM, "cancelled");
			killing = 1;
			kill_at = now + CMD_PROC_KILL_GRACE_MS;
			rc = err_set(res->error, sizeof(res->error), ERR_CANCELLED, "cancelled");
		} else if (!killing && now >= deadline) {
			char why[64];

			cmd_proc_duration(timeout_ms, dur, sizeof(dur));
			snprintf(why, sizeof(why), "timed out after %s", dur);
			cmd_proc_kill(ctx, pid, SIGTERM, why);
			killing = 1;
			kill_at = now + CMD_PROC_KILL_GRACE_MS;
			rc = err_set(res->error, sizeof(res->error), ERR_TIMEOUT, "%s", why);
		} else if (killing == 1 && now >= kill_at) {
			if (!reaped || cmd_proc_group_alive(pid))
				cmd_proc_kill(ctx, pid, SIGKILL, "still running 2s after SIGTERM");
			killing = 2;
			kill_at = now + CMD_PROC_GIVEUP_MS;
		} else if (killing == 2 && now >= kill_at) {
			cmd_proc_note(ctx,
				      "process group %ld did not end after SIGKILL; "
				      "no longer waiting",
				      (long)pid);
			break;
		} else if (!killing && reaped && now - exited_at >= CMD_PROC_LINGER_MS &&
			   now - last_data >= CMD_PROC_LINGER_MS) {
			cmd_proc_note(ctx, "the program exited but processes it started still "
					   "hold its output open; stopped reading");
			break;
		}

		wait_ms = CMD_PROC_TICK_MS;
		if (!killing && deadline - now < wait_ms)
			wait_ms = deadline - now;
		if (killing && kill_at - now < wait_ms)
			wait_ms = kill_at - now;
		if ((out->len > 0 || errs->len > 0) && wait_ms > CMD_PROC_FLUSH_MS / 2)
			wait_ms = CMD_PROC_FLUSH_MS / 2;
		if (!reaped && pidfd == -1 && out->fd == -1 && errs->fd == -1 && wait_ms > 5)
			wait_ms = 5; /* no pidfd: look for the exit often */
		if (ctx->tick != NULL && !ticked) {
			if (now >= ctx->tick_at) {
				ctx->tick(ctx->output_arg);
				ticked = 1;
			} else if (ctx->tick_at - now < wait_ms) {
				wait_ms = ctx->tick_at - now;
			}
		}
		if (wait_ms < 0)
			wait_ms = 0;
		if (out->fd != -1)
			pfd[n++] = (struct pollfd){.fd = out->fd, .events = POLLIN};
		if (errs->fd != -1)
			pfd[n++] = (struct pollfd){.fd = errs->fd, .events = POLLIN};
		if (pidfd != -1)
			pfd[n++] = (struct pollfd){.fd = pidfd, .events = POLLIN};
		if (poll(pfd, n, (int)wait_ms) > 0) {
			int got = cmd_proc_read(&st, out);

			got |= cmd_proc_read(&st, errs);
			if (got)
				last_data = time_mono_ms();
		}
		now = time_mono_ms();
		if (out->len > 0 && now - out->since >= CMD_PROC_FLUSH_MS)
			cmd_proc_flush(&st, out, 1);
		if (errs->len > 0 && now - errs->since >= CMD_PROC_FLUSH_MS)
			cmd_proc_flush(&st, errs, 1);
	}
	/* What is still in the pipes (non-blocking), then partial lines. */
	cmd_proc_read(&st, out);
	cmd_proc_read(&st, errs);
	cmd_proc_flush(&st, out, 1);
	cmd_proc_flush(&st, errs, 1);
	if (!reaped) {
		/* Only after SIGKILL did not work: do not block this thread forever. */
		if (waitpid(pid, &status, killing ? WNOHANG : 0) == pid)
			reaped = 1;
	}
	cmd_proc_duration(time_mono_ms() - start, dur, sizeof(dur));
	if (!reaped) {
		if (rc == 0)
			rc = err_set(res->error, sizeof(res->error), ERR_IO, "could not reap");
	} else if (WIFEXITED(status)) {
		res->exit_code = WEXITSTATUS(status);
		if (!spec->no_status)
			cmd_proc_note(ctx, "exited with code %d after %s", res->exit_code, dur);
	} else if (WIFSIGNALED(status)) {
		res->signal = WTERMSIG(status);
		if (!spec->no_status)
			cmd_proc_note(ctx, "killed by signal %d (SIG%s) after %s", res->signal,
				      sigabbrev_np(res->signal) != NULL ? sigabbrev_np(res->signal)
									: "?",
				      dur);
		if (rc == 0)
			err_set(res->error, sizeof(res->error), 0, "killed by signal %d (SIG%s)",
				res->signal,
				sigabbrev_np(res->signal) != NULL ? sigabbrev_np(res->signal)
								  : "?");
	}
	pid = -1;

fail:
	if (pid > 0) {
		kill(-pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	if (pidfd != -1)
		close(pidfd);
	if (out != NULL && out->fd != -1)
		close(out->fd);
	if (errs != NULL && errs->fd != -1)
		close(errs->fd);
	free(out);
	free(errs);
	for (int i = 0; i < 2; i++) {
		if (outp[i] != -1)
			close(outp[i]);
		if (errp[i] != -1)
			close(errp[i]);
		if (repp[i] != -1)
			close(repp[i]);
	}
	if (c.devnull != -1)
		close(c.devnull);
	free(c.groups);
	cmd_proc_strv_free(paths, npaths);
	cmd_proc_strv_free(envp, nenv);
	return rc;
}
