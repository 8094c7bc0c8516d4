/*
 * ssh_test.c: ssh.c against a real OpenSSH sshd on 127.0.0.1 (own network namespace when
 * root; host keys made at test time): key generation, host key pinning, refused keys,
 * waiting for SSH with backoff, exec (streams, exit codes, quoting, timeout, cancel), uploads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <ftw.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "crypto.h"
#include "err.h"
#include "log.h"
#include "ssh.h"
#include "timeutil.h"

#define SSH_TEST_MAX_SSHD 4

/* Checks a call's result; on a mismatch the failure shows the call's error text (err). */
#define SSH_TEST_EXPECT(call, want)                                                                \
	do {                                                                                       \
		int ssh_test_rc_ = (call);                                                         \
		if (ssh_test_rc_ != (want))                                                        \
			fail_msg("%s\n  returned %d, expected %d: %s", #call, ssh_test_rc_,        \
				 (int)(want), err);                                                \
	} while (0)

static struct {
	char dir[128];
	char user[64];
	char hostfp[SSH_FP_MAX];  /* ssh-keygen -lf of the Ed25519 host key */
	char otherfp[SSH_FP_MAX]; /* ssh-keygen -lf of the ECDSA host key (not negotiated) */
	char *key, *pub;	  /* the authorized client key */
	char *key2, *pub2;	  /* a key the server does not know */
	int port;		  /* the main sshd */
	pid_t sshd[SSH_TEST_MAX_SSHD];
	int nsshd;
	int netns;
} ssh_test;

/* --- helpers -------------------------------------------------------------------------- */

static int
ssh_test_write(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	size_t len = strlen(text);

	if (fd == -1)
		return -1;
	if (write(fd, text, len) != (ssize_t)len || fchmod(fd, mode) != 0) {
		close(fd);
		return -1;
	}
	return close(fd);
}

static char *
ssh_test_read(const char *path, size_t *lenp)
{
	struct buf b;
	char chunk[65536];
	ssize_t r;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd == -1)
		return NULL;
	buf_init(&b, 64u * 1024 * 1024);
	while ((r = read(fd, chunk, sizeof(chunk))) > 0)
		if (buf_append(&b, chunk, (size_t)r) != 0)
			abort();
	close(fd);
	if (lenp != NULL)
		*lenp = b.len;
	return buf_take(&b);
}

/* Runs argv (PATH searched), stdout into *out (malloc'd) when out is set. Exit status or -1. */
static int
ssh_test_run(const char *const *argv, char **out)
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
	if ((pid = fork()) == 0) {
		int nul = open("/dev/null", O_RDONLY);

		dup2(nul, 0);
		dup2(p[1], 1);
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(p[1]);
	buf_init(&b, 1024 * 1024);
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

/* "SHA256:..." that `ssh-keygen -lf path` prints, into out. */
static int
ssh_test_keygen_fp(const char *path, char *out, size_t outlen)
{
	const char *argv[] = {"ssh-keygen", "-lf", path, NULL};
	char *text = NULL, *fp, *sp;
	int rc = -1;

	if (ssh_test_run(argv, &text) == 0 && (fp = strstr(text, "SHA256:")) != NULL) {
		if ((sp = strchr(fp, ' ')) != NULL)
			*sp = '\0';
		snprintf(out, outlen, "%s", fp);
		rc = 0;
	}
	free(text);
	return rc;
}

static int
ssh_test_rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

/* A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, read back). In the
 * test's own network namespace nobody else can take it in between. */
static int
ssh_test_free_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd != -1 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	if (fd != -1)
		close(fd);
	return port;
}

static int
ssh_test_port_open(int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd == -1)
		return 0;
	ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

/* Starts an sshd on port (config and log in the temp folder); waits until it accepts. */
static pid_t
ssh_test_sshd_start(int port)
{
	char conf[8192], confpath[256], log[256];
	int64_t end;
	pid_t pid;
	int status;

	if (ssh_test.nsshd >= SSH_TEST_MAX_SSHD)
		return -1;
	snprintf(conf, sizeof(conf),
		 "ListenAddress 127.0.0.1\n"
		 "Port %d\n"
		 "HostKey %s/host_ecdsa\n"
		 "HostKey %s/host_ed25519\n"
		 "PidFile %s/sshd-%d.pid\n"
		 "AuthorizedKeysFile %s/authorized_keys\n"
		 "UsePAM no\n"
		 "StrictModes no\n"
		 "PasswordAuthentication no\n"
		 "KbdInteractiveAuthentication no\n"
		 "PubkeyAuthentication yes\n"
		 "Subsystem sftp internal-sftp\n"
		 "LogLevel VERBOSE\n",
		 port, ssh_test.dir, ssh_test.dir, ssh_test.dir, port, ssh_test.dir);
	snprintf(confpath, sizeof(confpath), "%s/sshd-%d.conf", ssh_test.dir, port);
	snprintf(log, sizeof(log), "%s/sshd-%d.log", ssh_test.dir, port);
	if (ssh_test_write(confpath, conf, 0644) != 0)
		return -1;
	if ((pid = fork()) == 0) {
		const char *argv[] = {"/usr/sbin/sshd", "-D", "-e", "-f", confpath, NULL};
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		int nul = open("/dev/null", O_RDONLY);

		prctl(PR_SET_PDEATHSIG, SIGKILL); /* gone with the test, even when it crashes */
		dup2(nul, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	if (pid == -1)
		return -1;
	ssh_test.sshd[ssh_test.nsshd++] = pid;
	for (end = time_mono_ms() + 15000; time_mono_ms() < end; poll(NULL, 0, 20)) {
		if (ssh_test_port_open(port))
			return pid;
		if (waitpid(pid, &status, WNOHANG) == pid) {
			ssh_test.sshd[--ssh_test.nsshd] = 0;
			break;
		}
	}
	fprintf(stderr, "sshd on port %d did not start; see %s\n", port, log);
	return -1;
}

static void
ssh_test_sshd_stop(pid_t pid)
{
	int64_t end;
	int status;

	if (pid <= 0)
		return;
	kill(pid, SIGTERM);
	for (end = time_mono_ms() + 5000; time_mono_ms() < end; poll(NULL, 0, 10))
		if (waitpid(pid, &status, WNOHANG) == pid)
			goto reaped;
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
reaped:
	for (int i = 0; i < ssh_test.nsshd; i++)
		if (ssh_test.sshd[i] == pid)
			ssh_test.sshd[i] = 0;
}

/* Own network namespace with only lo: ports cannot clash with other tests. Root only;
 * without it the test runs in the shared namespace with ports read back from port 0. */
static int
ssh_test_netns(void)
{
	struct ifreq ifr;
	int fd;

	if (unshare(CLONE_NEWNET) != 0)
		return 0;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	if ((fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1)
		return -1;
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) == -1 ||
	    (ifr.ifr_flags |= IFF_UP, ioctl(fd, SIOCSIFFLAGS, &ifr) == -1)) {
		close(fd);
		return -1;
	}
	close(fd);
	return 1;
}

/* Sends sig to the processes below the main sshd (its per-connection children and theirs):
 * SIGSTOP makes the server hang without closing anything. Returns how many. */
static int
ssh_test_signal_sessions(int sig)
{
	pid_t level[2][64];
	int n[2] = {0, 0}, total = 0;

	for (int depth = 0; depth < 2; depth++) {
		DIR *d = opendir("/proc");
		struct dirent *e;

		if (d == NULL)
			return -1;
		while ((e = readdir(d)) != NULL) {
			char path[300], buf[512], *p;
			long pid = atol(e->d_name), ppid;
			int fd, r, match = 0;

			if (pid <= 0)
				continue;
			snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
			if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
				continue;
			r = (int)read(fd, buf, sizeof(buf) - 1);
			close(fd);
			if (r <= 0)
				continue;
			buf[r] = '\0';
			if ((p = strrchr(buf, ')')) == NULL ||
			    sscanf(p + 1, " %*c %ld", &ppid) != 1)
				continue;
			if (depth == 0)
				match = ppid == ssh_test.sshd[0];
			for (int i = 0; depth == 1 && i < n[0]; i++)
				match |= ppid == level[0][i];
			if (match && n[depth] < 64)
				level[depth][n[depth]++] = (pid_t)pid;
		}
		closedir(d);
	}
	for (int depth = 0; depth < 2; depth++)
		for (int i = 0; i < n[depth]; i++)
			total += kill(level[depth][i], sig) == 0;
	return total;
}

static struct ssh_opts
ssh_test_opts(int port, const char *key)
{
	struct ssh_opts o = {
	    .host = "127.0.0.1",
	    .port = port,
	    .user = ssh_test.user,
	    .private_pem = key,
	    .connect_timeout_ms = 10000,
	};

	return o;
}

static struct ssh_conn *
ssh_test_connect(void)
{
	struct ssh_opts o = ssh_test_opts(ssh_test.port, ssh_test.key);
	struct ssh_conn *c = NULL;
	char fp[SSH_FP_MAX], err[512];

	o.pinned_sha256 = ssh_test.hostfp;
	if (ssh_connect(&o, &c, fp, sizeof(fp), err, sizeof(err)) != 0)
		fail_msg("connect: %s", err);
	return c;
}

static int
ssh_test_flag_cb(void *arg)
{
	return *(volatile int *)arg;
}

/* Output of one exec: each stream's lines joined with '\n', counts, arrival times. */
struct ssh_test_out {
	struct buf s[3];
	int lines[3];
	int64_t first_at, second_at;
	const char *cancel_on; /* set *cancel when stdout shows this line */
	volatile int *cancel;
};

static void
ssh_test_out_init(struct ssh_test_out *o)
{
	memset(o, 0, sizeof(*o));
	for (int i = 0; i < 3; i++)
		buf_init(&o->s[i], 64u * 1024 * 1024);
}

static void
ssh_test_out_fini(struct ssh_test_out *o)
{
	for (int i = 0; i < 3; i++)
		buf_fini(&o->s[i]);
}

static const char *
ssh_test_out_str(struct ssh_test_out *o, enum ssh_stream s)
{
	return o->s[s].data != NULL ? o->s[s].data : "";
}

static void
ssh_test_line_cb(void *arg, enum ssh_stream stream, const char *text, size_t len)
{
	struct ssh_test_out *o = arg;

	assert_true(stream == SSH_STDOUT || stream == SSH_STDERR);
	assert_int_equal(text[len], '\0');
	if (buf_append(&o->s[stream], text, len) != 0 || buf_putc(&o->s[stream], '\n') != 0)
		abort();
	o->lines[stream]++;
	if (strcmp(text, "first") == 0)
		o->first_at = time_mono_ms();
	if (strcmp(text, "second") == 0)
		o->second_at = time_mono_ms();
	if (o->cancel_on != NULL && strcmp(text, o->cancel_on) == 0)
		*o->cancel = 1;
}

static volatile int *ssh_test_freeze_on;
static int ssh_test_frozen;

/* ssh_test_line_cb, and once the flag goes up: SIGSTOP to the server's session processes. */
static void
ssh_test_freeze_line_cb(void *arg, enum ssh_stream stream, const char *text, size_t len)
{
	ssh_test_line_cb(arg, stream, text, len);
	if (ssh_test_freeze_on != NULL && *ssh_test_freeze_on && ssh_test_frozen == 0)
		ssh_test_frozen = ssh_test_signal_sessions(SIGSTOP);
}

/* --- setup ---------------------------------------------------------------------------- */

static int
ssh_test_setup(void **state)
{
	char path[384], err[256];
	struct passwd *pw = getpwuid(geteuid());

	(void)state;
	if (pw == NULL || strlen(pw->pw_name) >= sizeof(ssh_test.user))
		return -1;
	snprintf(ssh_test.user, sizeof(ssh_test.user), "%s", pw->pw_name);
	snprintf(ssh_test.dir, sizeof(ssh_test.dir), "/tmp/stoke-ssh-XXXXXX");
	if (mkdtemp(ssh_test.dir) == NULL)
		return -1;
	if (geteuid() == 0)
		mkdir("/run/sshd", 0755);
	if (ssh_global_init() != 0)
		return -1;

	/* Host keys, made now: git keeps no modes and nothing secret lives in the tree. */
	{
		char ed[256], ec[256];
		const char *k1[] = {"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", ed, NULL};
		const char *k2[] = {"ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", ec, NULL};

		snprintf(ed, sizeof(ed), "%s/host_ed25519", ssh_test.dir);
		snprintf(ec, sizeof(ec), "%s/host_ecdsa", ssh_test.dir);
		if (ssh_test_run(k1, NULL) != 0 || ssh_test_run(k2, NULL) != 0)
			return -1;
		snprintf(path, sizeof(path), "%s.pub", ed);
		if (ssh_test_keygen_fp(path, ssh_test.hostfp, sizeof(ssh_test.hostfp)) != 0)
			return -1;
		snprintf(path, sizeof(path), "%s.pub", ec);
		if (ssh_test_keygen_fp(path, ssh_test.otherfp, sizeof(ssh_test.otherfp)) != 0)
			return -1;
	}

	/* Client keys: the first one authorized. */
	if (ssh_keygen_ed25519("stoke-test", &ssh_test.key, &ssh_test.pub, err, sizeof(err)) != 0 ||
	    ssh_keygen_ed25519(NULL, &ssh_test.key2, &ssh_test.pub2, err, sizeof(err)) != 0) {
		fprintf(stderr, "keygen: %s\n", err);
		return -1;
	}
	snprintf(path, sizeof(path), "%s/authorized_keys", ssh_test.dir);
	{
		char line[1024];

		snprintf(line, sizeof(line), "%s\n", ssh_test.pub);
		if (ssh_test_write(path, line, 0600) != 0)
			return -1;
	}
	if ((ssh_test.port = ssh_test_free_port()) <= 0 || ssh_test_sshd_start(ssh_test.port) <= 0)
		return -1;
	return 0;
}

static int
ssh_test_teardown(void **state)
{
	(void)state;
	for (int i = 0; i < ssh_test.nsshd; i++)
		ssh_test_sshd_stop(ssh_test.sshd[i]);
	if (getenv("STOKE_TEST_KEEP") != NULL)
		fprintf(stderr, "ssh_test: kept %s\n", ssh_test.dir);
	else if (strncmp(ssh_test.dir, "/tmp/stoke-ssh-", 15) == 0)
		nftw(ssh_test.dir, ssh_test_rm_cb, 32, FTW_DEPTH | FTW_PHYS);
	if (ssh_test.key != NULL)
		explicit_bzero(ssh_test.key, strlen(ssh_test.key));
	free(ssh_test.key);
	free(ssh_test.pub);
	free(ssh_test.key2);
	free(ssh_test.pub2);
	return 0;
}

/* --- keys and connecting -------------------------------------------------------------- */

static void
test_keygen(void **state)
{
	char path[256], err[256], *out = NULL, *priv, *pub, fp[SSH_FP_MAX];
	size_t n;

	(void)state;
	/* The public line is what ssh-keygen derives from the private key we wrote. */
	assert_true(strncmp(ssh_test.pub, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI", 37) == 0);
	n = strlen(ssh_test.pub);
	assert_true(n > 11 && strcmp(ssh_test.pub + n - 11, " stoke-test") == 0);
	assert_non_null(strstr(ssh_test.key, "-----BEGIN OPENSSH PRIVATE KEY-----\n"));
	snprintf(path, sizeof(path), "%s/client_key", ssh_test.dir);
	assert_int_equal(ssh_test_write(path, ssh_test.key, 0600), 0);
	{
		const char *argv[] = {"ssh-keygen", "-y", "-f", path, NULL};

		assert_int_equal(ssh_test_run(argv, &out), 0);
	}
	assert_non_null(out);
	assert_true(strncmp(out, ssh_test.pub, n - 11) == 0);
	free(out);
	/* The comment is kept in the private key too, as ssh-keygen does. */
	assert_int_equal(ssh_test_keygen_fp(path, fp, sizeof(fp)), 0);
	snprintf(path, sizeof(path), "%s/client_key2", ssh_test.dir);
	assert_int_equal(ssh_test_write(path, ssh_test.key2, 0600), 0);
	{
		const char *argv[] = {"ssh-keygen", "-y", "-f", path, NULL};

		assert_int_equal(ssh_test_run(argv, &out), 0);
	}
	assert_true(strncmp(out, ssh_test.pub2, strlen(ssh_test.pub2)) == 0);
	assert_null(strchr(ssh_test.pub2 + 12, ' ')); /* no comment given: none written */
	free(out);
	assert_string_not_equal(ssh_test.pub, ssh_test.pub2);

	assert_int_equal(ssh_keygen_ed25519("a\nb", &priv, &pub, err, sizeof(err)), ERR_INVAL);
	assert_null(priv);
	assert_null(pub);
}

static void
test_quote_argv(void **state)
{
	const char *a[] = {"printf", "%s\n", "it's", "", "a b", NULL};
	const char *none[] = {NULL};
	char *q;

	(void)state;
	q = ssh_quote_argv(a);
	assert_string_equal(q, "'printf' '%s\n' 'it'\\''s' '' 'a b'");
	free(q);
	assert_null(ssh_quote_argv(none));
}

static void
test_connect_fingerprint(void **state)
{
	struct ssh_opts o = ssh_test_opts(ssh_test.port, ssh_test.key);
	struct ssh_conn *c = NULL;
	char fp[SSH_FP_MAX], err[512];

	(void)state;
	/* Trust on first use: what comes back is what ssh-keygen -lf says of the Ed25519
	 * host key, although the server also offers an ECDSA one. */
	SSH_TEST_EXPECT(ssh_connect(&o, &c, fp, sizeof(fp), err, sizeof(err)), 0);
	assert_non_null(c);
	assert_string_equal(fp, ssh_test.hostfp);
	ssh_close(c);

	/* Pinned to the right key: fine. */
	o.pinned_sha256 = ssh_test.hostfp;
	c = NULL;
	SSH_TEST_EXPECT(ssh_connect(&o, &c, fp, sizeof(fp), err, sizeof(err)), 0);
	assert_non_null(c);
	ssh_close(c);
	ssh_close(NULL);
}

static int ssh_test_attempts;

static void
ssh_test_count_cb(void *arg, int attempt, const char *why)
{
	(void)arg;
	assert_non_null(why);
	ssh_test_attempts = attempt;
}

static void
test_pin_mismatch(void **state)
{
	struct ssh_opts o = ssh_test_opts(ssh_test.port, ssh_test.key);
	struct ssh_conn *c = NULL;
	char fp[SSH_FP_MAX], err[512];
	int64_t t0;

	(void)state;
	o.pinned_sha256 = ssh_test.otherfp;
	SSH_TEST_EXPECT(ssh_connect(&o, &c, fp, sizeof(fp), err, sizeof(err)), ERR_AUTH);
	assert_null(c);
	assert_non_null(strstr(err, "host key mismatch"));
	assert_non_null(strstr(err, ssh_test.otherfp));
	assert_non_null(strstr(err, ssh_test.hostfp));
	assert_string_equal(fp, ssh_test.hostfp); /* what was seen, for the error page */

	/* ssh_wait does not retry a mismatch. */
	ssh_test_attempts = 0;
	t0 = time_mono_ms();
	SSH_TEST_EXPECT(
	    ssh_wait(&o, 20000, ssh_test_count_cb, NULL, &c, fp, sizeof(fp), err, sizeof(err)),
	    ERR_AUTH);
	assert_null(c);
	assert_int_equal(ssh_test_attempts, 0);
	assert_true(time_mono_ms() - t0 < 5000);
	assert_non_null(strstr(err, "host key mismatch"));

	/* A pin that is not a fingerprint is refused before connecting. */
	o.pinned_sha256 = "d2:3a:...";
	SSH_TEST_EXPECT(ssh_connect(&o, &c, fp, sizeof(fp), err, sizeof(err)), ERR_INVAL);
}

static void
test_wrong_key(void **state)
{
	struct ssh_opts o = ssh_test_opts(ssh_test.port, ssh_test.key2);
	struct ssh_conn *c = NULL;
	char fp[SSH_FP_MAX], err[512];

	(void)state;
	SSH_TEST_EXPECT(ssh_connect(&o, &c, fp, sizeof(fp), err, sizeof(err)), ERR_AUTH);
	assert_null(c);
	assert_non_null(strstr(err, "login refused"));
	assert_non_null(strstr(err, ssh_test.user));
	assert_string_equal(fp, ssh_test.hostfp);

	/* Another user: refused as well. */
	o.private_pem = ssh_test.key;
	o.user = "nobody-stoke-test";
	SSH_TEST_EXPECT(ssh_connect(&o, &c, fp, sizeof(fp), err, sizeof(err)), ERR_AUTH);

	/* Not a key at all: ERR_INVAL, and ssh_wait does not retry it. */
	o = ssh_test_opts(ssh_test.port, "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n"
					 "-----END OPENSSH PRIVATE KEY-----\n");
	SSH_TEST_EXPECT(ssh_connect(&o, &c, fp, sizeof(fp), err, sizeof(err)), ERR_INVAL);
	assert_non_null(strstr(err, "private key"));
	ssh_test_attempts = 0;
	SSH_TEST_EXPECT(
	    ssh_wait(&o, 20000, ssh_test_count_cb, NULL, &c, fp, sizeof(fp), err, sizeof(err)),
	    ERR_INVAL);
	assert_int_equal(ssh_test_attempts, 0);
}

/* ssh_wait's progress callback that starts sshd (on *port) at the second failure. */
static int ssh_test_late_port;
static pid_t ssh_test_late_pid;

static void
ssh_test_start_late_cb(void *arg, int attempt, const char *why)
{
	(void)arg;
	ssh_test_attempts = attempt;
	assert_non_null(strstr(why, "connect"));
	if (attempt == 2)
		ssh_test_late_pid = ssh_test_sshd_start(ssh_test_late_port);
}

static void
test_wait_until_up(void **state)
{
	struct ssh_opts o;
	struct ssh_conn *c = NULL;
	char fp[SSH_FP_MAX], err[512];
	int rc;

	(void)state;
	ssh_test_late_port = ssh_test_free_port();
	assert_true(ssh_test_late_port > 0);
	assert_false(ssh_test_port_open(ssh_test_late_port));
	o = ssh_test_opts(ssh_test_late_port, ssh_test.key);
	ssh_test_attempts = 0;
	ssh_test_late_pid = 0;
	rc =
	    ssh_wait(&o, 30000, ssh_test_start_late_cb, NULL, &c, fp, sizeof(fp), err, sizeof(err));
	if (rc != 0)
		fail_msg("ssh_wait: %s", err);
	assert_true(ssh_test_late_pid > 0);
	assert_true(ssh_test_attempts >= 2);
	assert_string_equal(fp, ssh_test.hostfp);
	ssh_close(c);
	ssh_test_sshd_stop(ssh_test_late_pid);
}

static void
test_wait_gives_up(void **state)
{
	struct ssh_opts o;
	struct ssh_conn *c = NULL;
	char fp[SSH_FP_MAX], err[512];
	int64_t t0, took;
	int port = ssh_test_free_port();

	(void)state;
	assert_true(port > 0);
	o = ssh_test_opts(port, ssh_test.key);
	ssh_test_attempts = 0;
	t0 = time_mono_ms();
	SSH_TEST_EXPECT(
	    ssh_wait(&o, 1500, ssh_test_count_cb, NULL, &c, fp, sizeof(fp), err, sizeof(err)),
	    ERR_TIMEOUT);
	took = time_mono_ms() - t0;
	assert_null(c);
	assert_true(took >= 1400 && took < 4000);
	assert_true(ssh_test_attempts >= 3); /* 0, 250, 750 ms ... */
	assert_non_null(strstr(err, "gave up after"));
	assert_non_null(strstr(err, "Connection refused"));
	assert_non_null(strstr(err, "127.0.0.1"));
	assert_string_equal(fp, "");
}

/* Progress callback that authorizes key2 at the second refused login, as cloud-init
 * installing the key after sshd came up. */
static void
ssh_test_authorize_late_cb(void *arg, int attempt, const char *why)
{
	char path[256], line[2048];

	(void)arg;
	ssh_test_attempts = attempt;
	assert_non_null(strstr(why, "login refused"));
	if (attempt == 2) {
		snprintf(path, sizeof(path), "%s/authorized_keys", ssh_test.dir);
		snprintf(line, sizeof(line), "%s\n%s\n", ssh_test.pub, ssh_test.pub2);
		assert_int_equal(ssh_test_write(path, line, 0600), 0);
	}
}

static void
test_wait_key_installed_late(void **state)
{
	struct ssh_opts o = ssh_test_opts(ssh_test.port, ssh_test.key2);
	struct ssh_conn *c = NULL;
	char fp[SSH_FP_MAX], err[512], path[256], line[1024];
	int rc;

	(void)state;
	ssh_test_attempts = 0;
	rc = ssh_wait(&o, 30000, ssh_test_authorize_late_cb, NULL, &c, fp, sizeof(fp), err,
		      sizeof(err));
	snprintf(path, sizeof(path), "%s/authorized_keys", ssh_test.dir);
	snprintf(line, sizeof(line), "%s\n", ssh_test.pub);
	assert_int_equal(ssh_test_write(path, line, 0600), 0);
	if (rc != 0)
		fail_msg("ssh_wait: %s", err);
	assert_int_equal(ssh_test_attempts, 2);
	ssh_close(c);
}

/* A listener that accepts TCP but never speaks SSH: the handshake must time out, and a
 * cancel must end the wait. */
static void
test_handshake_timeout_and_cancel(void **state)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	struct ssh_opts o;
	struct ssh_conn *c = NULL;
	char fp[SSH_FP_MAX], err[512];
	volatile int cancel = 0;
	int64_t t0;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	(void)state;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_true(fd != -1);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 16), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	o = ssh_test_opts(ntohs(sa.sin_port), ssh_test.key);
	o.connect_timeout_ms = 500;
	t0 = time_mono_ms();
	SSH_TEST_EXPECT(ssh_connect(&o, &c, fp, sizeof(fp), err, sizeof(err)), ERR_TIMEOUT);
	assert_true(time_mono_ms() - t0 < 3000);
	assert_non_null(strstr(err, "timed out during handshake"));

	o.connect_timeout_ms = 60000;
	o.cancel_cb = ssh_test_flag_cb;
	o.cancel_arg = (void *)&cancel;
	cancel = 1;
	t0 = time_mono_ms();
	SSH_TEST_EXPECT(ssh_connect(&o, &c, fp, sizeof(fp), err, sizeof(err)), ERR_CANCELLED);
	SSH_TEST_EXPECT(ssh_wait(&o, 60000, NULL, NULL, &c, fp, sizeof(fp), err, sizeof(err)),
			ERR_CANCELLED);
	assert_true(time_mono_ms() - t0 < 3000);
	assert_null(c);
	close(fd);
}

/* --- exec ----------------------------------------------------------------------------- */

static void
test_exec_streams(void **state)
{
	const char *argv[] = {
	    "sh", "-c", "echo out1; echo err1 >&2; echo out2; echo err2 >&2; echo; printf tail",
	    NULL};
	struct ssh_conn *c = ssh_test_connect();
	struct ssh_test_out o;
	char err[512];
	int status = -1;

	(void)state;
	ssh_test_out_init(&o);
	SSH_TEST_EXPECT(ssh_exec(c, argv, ssh_test_line_cb, &o, 10000, &status, err, sizeof(err)),
			0);
	assert_int_equal(status, 0);
	assert_string_equal(ssh_test_out_str(&o, SSH_STDOUT), "out1\nout2\n\ntail\n");
	assert_string_equal(ssh_test_out_str(&o, SSH_STDERR), "err1\nerr2\n");
	assert_int_equal(o.lines[SSH_STDOUT], 4);
	assert_int_equal(o.lines[SSH_STDERR], 2);
	ssh_test_out_fini(&o);
	ssh_close(c);
}

static void
test_exec_exit_status(void **state)
{
	const char *exit7[] = {"sh", "-c", "exit 7", NULL};
	const char *killed[] = {"sh", "-c", "kill -TERM $$", NULL};
	const char *cat[] = {"cat", NULL};
	const char *missing[] = {"/nonexistent/stoke-test-program", NULL};
	struct ssh_conn *c = ssh_test_connect();
	struct ssh_test_out o;
	char err[512];
	int status = -1;

	(void)state;
	SSH_TEST_EXPECT(ssh_exec(c, exit7, NULL, NULL, 10000, &status, err, sizeof(err)), 0);
	assert_int_equal(status, 7);
	SSH_TEST_EXPECT(ssh_exec(c, killed, NULL, NULL, 10000, &status, err, sizeof(err)), 0);
	assert_int_equal(status, 128 + SIGTERM);
	/* stdin is closed at once: cat ends. */
	SSH_TEST_EXPECT(ssh_exec(c, cat, NULL, NULL, 10000, &status, err, sizeof(err)), 0);
	assert_int_equal(status, 0);
	ssh_test_out_init(&o);
	SSH_TEST_EXPECT(
	    ssh_exec(c, missing, ssh_test_line_cb, &o, 10000, &status, err, sizeof(err)), 0);
	assert_int_equal(status, 127);
	assert_non_null(strstr(ssh_test_out_str(&o, SSH_STDERR), "stoke-test-program"));
	ssh_test_out_fini(&o);
	ssh_close(c);
}

static void
test_exec_quoting(void **state)
{
	char marker[256], sub[384], back[384], err[512];
	struct ssh_conn *c = ssh_test_connect();
	struct ssh_test_out o;
	struct buf want;
	int status = -1;

	(void)state;
	snprintf(marker, sizeof(marker), "%s/pwned", ssh_test.dir);
	snprintf(sub, sizeof(sub), "$(touch %s)", marker);
	snprintf(back, sizeof(back), "`touch %s`", marker);
	{
		const char *argv[] = {"printf", "%s\\n", sub,	  back, "a b;c", "it's",
				      "",	"*",	 "$HOME", "\\", "x'\"y", NULL};

		ssh_test_out_init(&o);
		SSH_TEST_EXPECT(
		    ssh_exec(c, argv, ssh_test_line_cb, &o, 10000, &status, err, sizeof(err)), 0);
		assert_int_equal(status, 0);
		buf_init(&want, 64 * 1024);
		for (int i = 2; argv[i] != NULL; i++)
			buf_printf(&want, "%s\n", argv[i]);
		assert_string_equal(ssh_test_out_str(&o, SSH_STDOUT), want.data);
		assert_string_equal(ssh_test_out_str(&o, SSH_STDERR), "");
		buf_fini(&want);
		ssh_test_out_fini(&o);
	}
	assert_int_equal(access(marker, F_OK), -1);
	ssh_close(c);
}

static void
test_exec_streams_live(void **state)
{
	const char *argv[] = {"sh", "-c", "echo first; sleep 1; echo second", NULL};
	struct ssh_conn *c = ssh_test_connect();
	struct ssh_test_out o;
	char err[512];
	int status = -1;

	(void)state;
	ssh_test_out_init(&o);
	SSH_TEST_EXPECT(ssh_exec(c, argv, ssh_test_line_cb, &o, 10000, &status, err, sizeof(err)),
			0);
	assert_int_equal(status, 0);
	assert_true(o.first_at > 0 && o.second_at > 0);
	/* "first" was handed over when it was printed, not when the command ended. */
	assert_true(o.second_at - o.first_at >= 700);
	ssh_test_out_fini(&o);
	ssh_close(c);
}

static void
test_exec_big_output(void **state)
{
	const char *seq[] = {"seq", "1", "200000", NULL};
	const char *longline[] = {"sh", "-c",
				  "head -c 131072 /dev/zero | tr '\\0' a; echo; echo next", NULL};
	struct ssh_conn *c = ssh_test_connect();
	struct ssh_test_out o;
	char err[512], *p;
	int status = -1, n = 0;

	(void)state;
	ssh_test_out_init(&o);
	SSH_TEST_EXPECT(ssh_exec(c, seq, ssh_test_line_cb, &o, 60000, &status, err, sizeof(err)),
			0);
	assert_int_equal(status, 0);
	assert_int_equal(o.lines[SSH_STDOUT], 200000);
	for (p = o.s[SSH_STDOUT].data; p != NULL && *p != '\0'; p = strchr(p, '\n') + 1)
		if (atoi(p) != ++n)
			fail_msg("line %d is %.20s", n, p);
	assert_int_equal(n, 200000);
	ssh_test_out_fini(&o);

	/* A 128 KiB line comes in two pieces of SSH_LINE_MAX, with no empty line after. */
	ssh_test_out_init(&o);
	SSH_TEST_EXPECT(
	    ssh_exec(c, longline, ssh_test_line_cb, &o, 60000, &status, err, sizeof(err)), 0);
	assert_int_equal(o.lines[SSH_STDOUT], 3);
	assert_int_equal(o.s[SSH_STDOUT].len, 131072 + 2 + 5);
	assert_int_equal(o.s[SSH_STDOUT].data[SSH_LINE_MAX], '\n');
	assert_string_equal(o.s[SSH_STDOUT].data + 131072 + 2, "next\n");
	ssh_test_out_fini(&o);
	ssh_close(c);
}

/* The remote process is gone (SIGTERM through the channel) within 5 s. */
static int
ssh_test_wait_gone(const char *pidfile)
{
	char *text = ssh_test_read(pidfile, NULL), proc[64];
	int64_t end = time_mono_ms() + 5000;
	long pid = text != NULL ? atol(text) : 0;

	free(text);
	if (pid <= 0)
		return -1;
	snprintf(proc, sizeof(proc), "/proc/%ld", pid);
	while (access(proc, F_OK) == 0) {
		if (time_mono_ms() > end)
			return -1;
		poll(NULL, 0, 20);
	}
	return 0;
}

static void
test_exec_timeout(void **state)
{
	char pidfile[256], script[384], err[512];
	const char *echo[] = {"echo", "still here", NULL};
	struct ssh_conn *c = ssh_test_connect();
	struct ssh_test_out o;
	int64_t t0;
	int status = -1;

	(void)state;
	snprintf(pidfile, sizeof(pidfile), "%s/timeout.pid", ssh_test.dir);
	snprintf(script, sizeof(script), "echo $$ > %s; echo started; exec sleep 30", pidfile);
	{
		const char *argv[] = {"sh", "-c", script, NULL};

		ssh_test_out_init(&o);
		t0 = time_mono_ms();
		SSH_TEST_EXPECT(
		    ssh_exec(c, argv, ssh_test_line_cb, &o, 4000, &status, err, sizeof(err)),
		    ERR_TIMEOUT);
		/* 4 s: a busy machine's sshd took more than 800 ms to start the command (and
		 * "started" never came); the limit is what is tested, not its size. */
		assert_true(time_mono_ms() - t0 < 20000);
		assert_int_equal(status, -1);
		assert_non_null(strstr(err, "timed out"));
		assert_string_equal(ssh_test_out_str(&o, SSH_STDOUT), "started\n");
		ssh_test_out_fini(&o);
	}
	assert_int_equal(ssh_test_wait_gone(pidfile), 0);
	/* The connection is still good. */
	ssh_test_out_init(&o);
	SSH_TEST_EXPECT(ssh_exec(c, echo, ssh_test_line_cb, &o, 10000, &status, err, sizeof(err)),
			0);
	assert_string_equal(ssh_test_out_str(&o, SSH_STDOUT), "still here\n");
	ssh_test_out_fini(&o);
	ssh_close(c);
}

static void
test_exec_cancel(void **state)
{
	char pidfile[256], script[384], err[512];
	const char *echo[] = {"echo", "still here", NULL};
	struct ssh_opts opts = ssh_test_opts(ssh_test.port, ssh_test.key);
	struct ssh_conn *c = NULL;
	struct ssh_test_out o;
	volatile int cancel = 0;
	int64_t t0;
	int status = -1;

	(void)state;
	opts.cancel_cb = ssh_test_flag_cb;
	opts.cancel_arg = (void *)&cancel;
	SSH_TEST_EXPECT(ssh_connect(&opts, &c, NULL, 0, err, sizeof(err)), 0);
	snprintf(pidfile, sizeof(pidfile), "%s/cancel.pid", ssh_test.dir);
	snprintf(script, sizeof(script), "echo $$ > %s; echo ready; exec sleep 30", pidfile);
	{
		const char *argv[] = {"sh", "-c", script, NULL};

		ssh_test_out_init(&o);
		o.cancel_on = "ready";
		o.cancel = &cancel;
		t0 = time_mono_ms();
		SSH_TEST_EXPECT(
		    ssh_exec(c, argv, ssh_test_line_cb, &o, 60000, &status, err, sizeof(err)),
		    ERR_CANCELLED);
		assert_true(time_mono_ms() - t0 < 5000);
		assert_non_null(strstr(err, "cancelled"));
		ssh_test_out_fini(&o);
	}
	assert_int_equal(ssh_test_wait_gone(pidfile), 0);
	cancel = 0;
	ssh_test_out_init(&o);
	SSH_TEST_EXPECT(ssh_exec(c, echo, ssh_test_line_cb, &o, 10000, &status, err, sizeof(err)),
			0);
	assert_string_equal(ssh_test_out_str(&o, SSH_STDOUT), "still here\n");
	ssh_test_out_fini(&o);
	ssh_close(c);
}

/* A command that prints nothing for longer than io_timeout is fine (keepalives answer);
 * a server that stops answering is given up on after io_timeout. */
static void
test_exec_dead_server(void **state)
{
	const char *quiet[] = {"sleep", "4", NULL};
	const char *argv[] = {"sh", "-c", "echo ready; exec sleep 30", NULL};
	struct ssh_opts opts = ssh_test_opts(ssh_test.port, ssh_test.key);
	struct ssh_conn *c = NULL;
	struct ssh_test_out o;
	volatile int stopped = 0;
	char err[512];
	int64_t t0;
	int status = -1;

	(void)state;
	opts.io_timeout_ms = 2500;
	SSH_TEST_EXPECT(ssh_connect(&opts, &c, NULL, 0, err, sizeof(err)), 0);
	SSH_TEST_EXPECT(ssh_exec(c, quiet, NULL, NULL, 20000, &status, err, sizeof(err)), 0);
	assert_int_equal(status, 0);

	ssh_test_out_init(&o);
	o.cancel_on = "ready"; /* here: the moment to freeze the server */
	o.cancel = &stopped;
	/* Freeze the server from the line callback: pass through a flag the callback sets. */
	t0 = time_mono_ms();
	{
		int rc;

		ssh_test_frozen = 0;
		ssh_test_freeze_on = &stopped;
		rc = ssh_exec(c, argv, ssh_test_freeze_line_cb, &o, 60000, &status, err,
			      sizeof(err));
		ssh_test_freeze_on = NULL;
		ssh_test_signal_sessions(SIGCONT);
		if (rc != ERR_TIMEOUT)
			fail_msg("ssh_exec returned %d: %s", rc, err);
	}
	assert_true(ssh_test_frozen > 0);
	assert_true(time_mono_ms() - t0 < 15000);
	assert_non_null(strstr(err, "the server sent nothing for 2 s"));
	ssh_test_out_fini(&o);
	/* The connection is given up: later calls say so instead of hanging. */
	SSH_TEST_EXPECT(ssh_exec(c, quiet, NULL, NULL, 20000, &status, err, sizeof(err)), ERR_IO);
	assert_non_null(strstr(err, "unusable"));
	ssh_close(c);
}

/* --- upload --------------------------------------------------------------------------- */

/* Entries of dir other than . and .. */
static int
ssh_test_count_entries(const char *dir)
{
	char *text = NULL;
	const char *argv[] = {"ls", "-A", dir, NULL};
	int n = 0;

	if (ssh_test_run(argv, &text) != 0)
		return -1;
	for (char *p = text; *p != '\0'; p++)
		n += *p == '\n';
	free(text);
	return n;
}

static void
test_upload(void **state)
{
	char dir[256], path[384], err[512], *text;
	struct ssh_conn *c = ssh_test_connect();
	unsigned char *big;
	struct stat st, st2;
	size_t n;
	int oldfd;

	(void)state;
	snprintf(dir, sizeof(dir), "%s/up", ssh_test.dir);
	assert_int_equal(mkdir(dir, 0755), 0);
	snprintf(path, sizeof(path), "%s/agent.conf", dir);

	/* New file, exact mode. */
	SSH_TEST_EXPECT(ssh_upload(c, path, "hello\n", 6, 0640, err, sizeof(err)), 0);
	text = ssh_test_read(path, &n);
	assert_non_null(text);
	assert_string_equal(text, "hello\n");
	free(text);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(ssh_test_count_entries(dir), 1);

	/* Overwrite: replaced by rename (a reader of the old file keeps the old content). */
	oldfd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(oldfd != -1);
	SSH_TEST_EXPECT(ssh_upload(c, path, "secret", 6, 0600, err, sizeof(err)), 0);
	text = ssh_test_read(path, &n);
	assert_string_equal(text, "secret");
	free(text);
	assert_int_equal(stat(path, &st2), 0);
	assert_int_equal(st2.st_mode & 07777, 0600);
	assert_true(st2.st_ino != st.st_ino);
	{
		char old[16] = "";

		assert_int_equal(pread(oldfd, old, sizeof(old) - 1, 0), 6);
		assert_string_equal(old, "hello\n");
	}
	close(oldfd);
	assert_int_equal(ssh_test_count_entries(dir), 1);

	/* The server's umask does not apply; an empty file works. */
	SSH_TEST_EXPECT(ssh_upload(c, path, "", 0, 0666, err, sizeof(err)), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0666);
	assert_int_equal(st.st_size, 0);

	/* 3 MiB of random bytes arrive intact. */
	n = 3u * 1024 * 1024 + 17;
	big = malloc(n);
	assert_non_null(big);
	assert_int_equal(crypto_random(big, n), 0);
	SSH_TEST_EXPECT(ssh_upload(c, path, big, n, 0755, err, sizeof(err)), 0);
	{
		size_t got = 0;
		char *back = ssh_test_read(path, &got);

		assert_int_equal(got, n);
		assert_memory_equal(back, big, n);
		free(back);
	}
	free(big);
	assert_int_equal(ssh_test_count_entries(dir), 1);

	/* A missing folder fails with the path in the message and leaves nothing. */
	snprintf(path, sizeof(path), "%s/missing/file", dir);
	SSH_TEST_EXPECT(ssh_upload(c, path, "x", 1, 0644, err, sizeof(err)), ERR_IO);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, "no such file"));
	assert_int_equal(ssh_test_count_entries(dir), 1);
	SSH_TEST_EXPECT(ssh_upload(c, "relative/file", "x", 1, 0644, err, sizeof(err)), ERR_INVAL);
	/* The connection still works after the failures. */
	snprintf(path, sizeof(path), "%s/after", dir);
	SSH_TEST_EXPECT(ssh_upload(c, path, "ok", 2, 0644, err, sizeof(err)), 0);
	assert_int_equal(ssh_test_count_entries(dir), 2);
	ssh_close(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_keygen),
	    cmocka_unit_test(test_quote_argv),
	    cmocka_unit_test(test_connect_fingerprint),
	    cmocka_unit_test(test_pin_mismatch),
	    cmocka_unit_test(test_wrong_key),
	    cmocka_unit_test(test_wait_until_up),
	    cmocka_unit_test(test_wait_gives_up),
	    cmocka_unit_test(test_wait_key_installed_late),
	    cmocka_unit_test(test_handshake_timeout_and_cancel),
	    cmocka_unit_test(test_exec_streams),
	    cmocka_unit_test(test_exec_exit_status),
	    cmocka_unit_test(test_exec_quoting),
	    cmocka_unit_test(test_exec_streams_live),
	    cmocka_unit_test(test_exec_big_output),
	    cmocka_unit_test(test_exec_timeout),
	    cmocka_unit_test(test_exec_cancel),
	    cmocka_unit_test(test_exec_dead_server),
	    cmocka_unit_test(test_upload),
	};
	const char *dbg = getenv("STOKE_TEST_DEBUG");

	log_init("ssh_test", dbg != NULL && *dbg != '\0' ? LOG_LEVEL_DEBUG : LOG_LEVEL_WARN);
	if (access("/usr/sbin/sshd", X_OK) != 0) {
		fprintf(stderr, "ssh_test: needs /usr/sbin/sshd (openssh-server)\n");
		return 1;
	}
	if (geteuid() == 0 && (ssh_test.netns = ssh_test_netns()) < 0) {
		fprintf(stderr, "ssh_test: cannot bring up lo in a new network namespace\n");
		return 1;
	}
	return cmocka_run_group_tests(tests, ssh_test_setup, ssh_test_teardown);
}
