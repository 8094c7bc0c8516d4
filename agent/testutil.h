/*
 * testutil.h: helpers the agent's unit tests share (included by *_test.c only):
 * an output collector for handlers, temp folders, free ports, helper processes run with
 * an argv, waiting with deadlines, a plain HTTP GET, a test user. Not part of the agent.
 */
#ifndef STOKE_AGENT_TESTUTIL_H
#define STOKE_AGENT_TESTUTIL_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "agent_config.h"
#include "buf.h"
#include "cmd.h"
#include "timeutil.h"

#define TESTUTIL_USER "stoke-test"

/* Output a handler sent: per stream, and all of it in arrival order with stream tags. */
struct testutil_out {
	pthread_mutex_t lock;
	struct buf s[3];
	size_t calls;
};

static inline void
testutil_out_init(struct testutil_out *o)
{
	pthread_mutex_init(&o->lock, NULL);
	for (int i = 0; i < 3; i++)
		buf_init(&o->s[i], 512u * 1024 * 1024);
	o->calls = 0;
}

static inline void
testutil_out_fini(struct testutil_out *o)
{
	for (int i = 0; i < 3; i++)
		buf_fini(&o->s[i]);
	pthread_mutex_destroy(&o->lock);
}

static inline const char *
testutil_out_str(struct testutil_out *o, enum cmd_stream s)
{
	return o->s[s].data != NULL ? o->s[s].data : "";
}

static inline void
testutil_output_cb(void *arg, enum cmd_stream stream, const char *data, size_t len)
{
	struct testutil_out *o = arg;

	pthread_mutex_lock(&o->lock);
	if (buf_append(&o->s[stream], data, len) != 0)
		abort();
	o->calls++;
	pthread_mutex_unlock(&o->lock);
}

static inline void
testutil_ctx(struct cmd_ctx *ctx, const struct agent_config *cfg, struct testutil_out *o,
	     atomic_int *cancel)
{
	memset(ctx, 0, sizeof(*ctx));
	ctx->cfg = cfg;
	ctx->command_id = 1;
	ctx->output = testutil_output_cb;
	ctx->output_arg = o;
	ctx->cancel = cancel;
}

/* The agent's defaults, then NAME=VALUE overrides (NULL-terminated list of pairs). */
static inline int
testutil_cfg(struct agent_config *cfg, ...)
{
	char err[256];
	const char *k, *v;
	va_list ap;

	memset(cfg, 0, sizeof(*cfg));
	if (config_defaults(agent_config_opts, agent_config_nopts, cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "defaults: %s\n", err);
		return -1;
	}
	va_start(ap, cfg);
	while ((k = va_arg(ap, const char *)) != NULL) {
		v = va_arg(ap, const char *);
		if (config_set(agent_config_opts, agent_config_nopts, cfg, k, v, "test", err,
			       sizeof(err)) != 0) {
			fprintf(stderr, "config %s: %s\n", k, err);
			va_end(ap);
			return -1;
		}
	}
	va_end(ap);
	return 0;
}

static inline void
testutil_cfg_fini(struct agent_config *cfg)
{
	config_free(agent_config_opts, agent_config_nopts, cfg);
}

/* A fresh folder under /tmp, mode 0755 (so a test user can reach what is inside). */
static inline int
testutil_tmpdir(char out[PATH_MAX], const char *tag)
{
	snprintf(out, PATH_MAX, "/tmp/stoke-%s-XXXXXX", tag);
	if (mkdtemp(out) == NULL)
		return -1;
	return chmod(out, 0755);
}

static inline int
testutil_rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		return rmdir(path) == -1 ? 0 : 0;
	unlink(path);
	return 0;
}

static inline void
testutil_rm_rf(const char *path)
{
	if (path != NULL && path[0] == '/' && strncmp(path, "/tmp/stoke-", 11) == 0)
		nftw(path, testutil_rm_cb, 32, FTW_DEPTH | FTW_PHYS);
}

static inline int
testutil_write(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	size_t len = strlen(text);

	if (fd == -1)
		return -1;
	if (write(fd, text, len) != (ssize_t)len) {
		close(fd);
		return -1;
	}
	fchmod(fd, mode);
	return close(fd);
}

/* Whole file into a malloc'd string, or NULL. */
static inline char *
testutil_read(const char *path)
{
	struct buf b;
	char chunk[4096];
	ssize_t r;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd == -1)
		return NULL;
	buf_init(&b, 64u * 1024 * 1024);
	while ((r = read(fd, chunk, sizeof(chunk))) > 0)
		buf_append(&b, chunk, (size_t)r);
	close(fd);
	return buf_take(&b);
}

/* A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, read back). */
static inline int
testutil_free_port(void)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port;

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd == -1 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) == -1) {
		if (fd != -1)
			close(fd);
		return -1;
	}
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

static inline int
testutil_connect(int port)
{
	struct sockaddr_in sa;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons((uint16_t)port);
	if (fd == -1)
		return -1;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Waits until something accepts connections on 127.0.0.1:port, or the deadline. */
static inline int
testutil_wait_port(int port, long ms)
{
	int64_t end = time_mono_ms() + ms;

	while (time_mono_ms() < end) {
		int fd = testutil_connect(port);

		if (fd != -1) {
			close(fd);
			return 0;
		}
		poll(NULL, 0, 20);
	}
	return -1;
}

/* GET path with Host: host over HTTP/1.0; *status and a malloc'd body. */
static inline int
testutil_http_get(int port, const char *host, const char *path, int *status, char **body)
{
	char req[512], chunk[4096], *p;
	struct buf b;
	ssize_t r;
	int fd, n;

	*body = NULL;
	*status = 0;
	if ((fd = testutil_connect(port)) == -1)
		return -1;
	n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, host);
	if (write(fd, req, (size_t)n) != n) {
		close(fd);
		return -1;
	}
	buf_init(&b, 1024 * 1024);
	while ((r = read(fd, chunk, sizeof(chunk))) > 0)
		buf_append(&b, chunk, (size_t)r);
	close(fd);
	if (b.data == NULL || sscanf(b.data, "HTTP/%*s %d", status) != 1) {
		buf_fini(&b);
		return -1;
	}
	p = strstr(b.data, "\r\n\r\n");
	*body = strdup(p != NULL ? p + 4 : "");
	buf_fini(&b);
	return 0;
}

/* Starts argv in the background, output to logpath; returns the pid or -1. */
static inline pid_t
testutil_spawn(const char *const *argv, const char *logpath)
{
	pid_t pid = fork();

	if (pid == 0) {
		int fd = open(logpath != NULL ? logpath : "/dev/null",
			      O_WRONLY | O_CREAT | O_APPEND, 0644);
		int nul = open("/dev/null", O_RDONLY);

		/* Gone with the test even when it crashes before its teardown. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);

		dup2(nul, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

/* Ends a process started by testutil_spawn: SIGTERM, then SIGKILL after 5 s. */
static inline void
testutil_stop(pid_t pid)
{
	int64_t end;
	int status;

	if (pid <= 0)
		return;
	kill(pid, SIGTERM);
	end = time_mono_ms() + 5000;
	while (time_mono_ms() < end) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return;
		poll(NULL, 0, 10);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
}

/* Runs argv (PATH searched) to its end; stdout into *out (malloc'd) when out is set,
 * stderr to ours. Returns the exit status, or -1. */
static inline int
testutil_run(const char *const *argv, char **out)
{
	int p[2], status;
	struct buf b;
	char chunk[4096];
	ssize_t r;
	pid_t pid;

	if (out != NULL)
		*out = NULL;
	if (pipe2(p, O_CLOEXEC) == -1)
		return -1;
	pid = fork();
	if (pid == 0) {
		int nul = open("/dev/null", O_RDONLY);

		dup2(nul, 0);
		dup2(p[1], 1);
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(p[1]);
	buf_init(&b, 64u * 1024 * 1024);
	while ((r = read(p[0], chunk, sizeof(chunk))) > 0)
		buf_append(&b, chunk, (size_t)r);
	close(p[0]);
	if (pid == -1 || waitpid(pid, &status, 0) != pid) {
		buf_fini(&b);
		return -1;
	}
	if (out != NULL)
		*out = buf_take(&b);
	else
		buf_fini(&b);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* testutil_run, tried up to 10 times 300 ms apart: useradd and usermod fail while another
 * test binary holds the passwd lock. */
static inline int
testutil_run_retry(const char *const *argv)
{
	int rc = -1;

	for (int i = 0; i < 10 && rc != 0; i++) {
		if (i > 0)
			poll(NULL, 0, 300);
		rc = testutil_run(argv, NULL);
	}
	return rc;
}

/* The uid of TESTUTIL_USER, created (no home, system account) when missing. */
static inline long
testutil_user(void)
{
	const char *add[] = {"useradd", "-M", "-r", "-s", "/bin/sh", TESTUTIL_USER, NULL};
	struct passwd *pw = getpwnam(TESTUTIL_USER);

	for (int i = 0; pw == NULL && i < 10; i++) {
		/* Another test binary may be creating it at the same moment. */
		if (i > 0)
			poll(NULL, 0, 300);
		(void)testutil_run(add, NULL);
		pw = getpwnam(TESTUTIL_USER);
	}
	return pw != NULL ? (long)pw->pw_uid : -1;
}

/* Trims trailing newlines in place. */
static inline char *
testutil_chomp(char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;

	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
		s[--n] = '\0';
	return s;
}

#endif
