/*
 * ssh.c: the controller's SSH client over libssh2 (the only file that includes libssh2.h):
 * Ed25519 keys, connecting with a pinned host key, commands with streamed lines, SFTP
 * uploads. As curl does, libssh2 runs non-blocking and is driven as an explicit state
 * machine: one function per state, one ssh_set_state that logs "[a] -> [b]", one loop
 * (ssh_drive) that waits on the socket between steps. Used by the provisioning jobs.
 */
#include "ssh.h"
#include "buf.h"
#include "crypto.h"
#include "err.h"
#include "log.h"
#include "timeutil.h"

#include <libssh2.h>
#include <libssh2_sftp.h>

#include <openssl/evp.h>

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SSH_DEFAULT_PORT 22
#define SSH_CONNECT_TIMEOUT_MS 15000L
#define SSH_IO_TIMEOUT_MS 60000L
#define SSH_SLICE_MS 100L      /* longest wait between two looks at the cancel callback */
#define SSH_WIND_DOWN_MS 5000L /* stopping a command, closing SFTP, after a failure */
#define SSH_CLOSE_MS 2000L
#define SSH_BACKOFF_MIN_MS 250L
#define SSH_BACKOFF_MAX_MS 5000L
#define SSH_MOVE_TIMEOUT_MS 60000L
#define SSH_READ_CHUNK 16384
#define SSH_WRITE_CHUNK 32768
#define SSH_COMMENT_MAX 256
#define SSH_PATH_MAX 4000
#define SSH_AGAIN (-1) /* a step waits for the socket */

/*
 * Every command runs under this constant wrapper ($@ is the caller's argv): in its own
 * session (setsid, util-linux), stdin from /dev/null, while a watcher reads the channel's
 * stdin, on which we send nothing. When that ends (we sent EOF to stop the command, or the
 * connection died) the watcher sends SIGTERM to the command's whole process group.
 * libssh2 1.10 cannot send the "signal" channel request once a command runs, and sshd
 * leaves a command running when its channel closes, so this is how a timeout or a cancel
 * reaches the server. The exit code passes through; a signal ends it with 128 + number.
 */
#define SSH_EXEC_WRAPPER                                                                           \
	"command -v setsid >/dev/null 2>&1 || exec \"$@\" </dev/null\n"                            \
	"exec 3<&0\n"                                                                              \
	"setsid \"$@\" </dev/null 3<&- &\n"                                                        \
	"c=$!\n"                                                                                   \
	"{ while read -r _; do :; done; kill -s TERM -- \"-$c\" || kill -s TERM \"$c\"; } "        \
	"<&3 >/dev/null 2>&1 &\n"                                                                  \
	"w=$!\n"                                                                                   \
	"exec 3<&-\n"                                                                              \
	"wait \"$c\" 2>/dev/null\n"                                                                \
	"s=$?\n"                                                                                   \
	"kill -s TERM \"$w\" 2>/dev/null\n"                                                        \
	"exit \"$s\"\n"

/* Host key algorithms in the order we accept them: Ed25519 first, so the fingerprint is
 * the one of ssh_host_ed25519_key.pub that providers and people usually quote. */
static const char *const ssh_hostkey_order[] = {
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
    "ssh-rsa",
};

enum ssh_state {
	SSH_ST_NEW,
	SSH_ST_CONNECT,
	SSH_ST_HANDSHAKE,
	SSH_ST_HOSTKEY,
	SSH_ST_AUTH,
	SSH_ST_IDLE,
	SSH_ST_CHAN_OPEN,
	SSH_ST_CHAN_EXEC,
	SSH_ST_CHAN_READ,
	SSH_ST_CHAN_STOP,
	SSH_ST_CHAN_CLOSE,
	SSH_ST_CHAN_WAIT_CLOSED,
	SSH_ST_CHAN_FREE,
	SSH_ST_SFTP_INIT,
	SSH_ST_SFTP_OPEN,
	SSH_ST_SFTP_WRITE,
	SSH_ST_SFTP_CLOSE,
	SSH_ST_SFTP_UNLINK,
	SSH_ST_SFTP_SHUTDOWN,
	SSH_ST_DISCONNECT,
	SSH_ST_CLOSED,
	SSH_ST_BROKEN,
	SSH_ST__COUNT
};

struct ssh_linebuf {
	char data[SSH_LINE_MAX + 1];
	size_t len;
	int split; /* the last piece delivered was cut at SSH_LINE_MAX */
};

struct ssh_conn {
	enum ssh_state state;
	char name[320]; /* user@host:port, for logs and errors */
	int fd;
	struct addrinfo *ai, *ai_cur;
	int connect_errno;
	short want; /* poll events a step waits for outside libssh2 (connect); 0 = ask libssh2 */
	char *user;
	char *key; /* the private key, until the login; then wiped */
	char *pin;
	char fp[SSH_FP_MAX];
	const char *key_type;
	int fatal; /* the last error must not be retried (host key mismatch, bad key) */
	long io_timeout_ms;
	int keepalive; /* logged in: keepalives and the dead-peer check are on */
	int64_t last_io;
	int64_t last_cancel_check;
	int (*cancel_cb)(void *arg);
	void *cancel_arg;
	int winding; /* cleaning up after a failure: the steps take their failure exits */
	LIBSSH2_SESSION *s;

	/* ssh_exec */
	LIBSSH2_CHANNEL *ch;
	const char *cmd;
	int started; /* the command runs: stop it when giving up */
	ssh_line_cb line;
	void *line_arg;
	struct ssh_linebuf lines[2];
	int exit_status;

	/* ssh_upload */
	LIBSSH2_SFTP *sftp;
	LIBSSH2_SFTP_HANDLE *fh;
	char *tmp;
	int tmp_made;
	const unsigned char *data;
	size_t len, off;
};

typedef int (*ssh_step_fn)(struct ssh_conn *c, char *err, size_t errlen);

static int ssh_st_connect(struct ssh_conn *c, char *err, size_t errlen);
static int ssh_st_handshake(struct ssh_conn *c, char *err, size_t errlen);
static int ssh_st_hostkey(struct ssh_conn *c, char *err, size_t errlen);
static int ssh_st_auth(struct ssh_conn *c, char *err, size_t errlen);
static int ssh_st_chan_open(struct ssh_conn *c, char *err, size_t errlen);
static int ssh_st_chan_exec(struct ssh_conn *c, char *err, size_t errlen);
static int ssh_st_chan_read(struct ssh_conn *c, char *err, size_t errlen);
static int ssh_st_chan_stop(struct ssh_conn *c, char *err, size_t errlen);
static int ssh_st_chan_close(struct ssh_conn *c, char *err, size_t errlen);
static int ssh_st_chan_wait_closed(struct ssh_conn *c, char *err, size_t errlen);
static int ssh_st_chan_free(struct ssh_conn *c, char *err, size_t errlen);
static int ssh_st_sftp_init(struct ssh_conn *c, char *err, size_t errlen);
static int ssh_st_sftp_open(struct ssh_conn *c, char *err, size_t errlen);
static int ssh_st_sftp_write(struct ssh_conn *c, char *err, size_t errlen);
static int ssh_st_sftp_close(struct ssh_conn *c, char *err, size_t errlen);
static int ssh_st_sftp_unlink(struct ssh_conn *c, char *err, size_t errlen);
static int ssh_st_sftp_shutdown(struct ssh_conn *c, char *err, size_t errlen);
static int ssh_st_disconnect(struct ssh_conn *c, char *err, size_t errlen);

/* Each state: its name in logs and errors, and the step that moves on from it (NULL: a
 * resting state that ssh_drive never leaves by itself). */
static const struct {
	const char *name;
	ssh_step_fn step;
} ssh_states[SSH_ST__COUNT] = {
    [SSH_ST_NEW] = {"new", NULL},
    [SSH_ST_CONNECT] = {"connect", ssh_st_connect},
    [SSH_ST_HANDSHAKE] = {"handshake", ssh_st_handshake},
    [SSH_ST_HOSTKEY] = {"host key", ssh_st_hostkey},
    [SSH_ST_AUTH] = {"login", ssh_st_auth},
    [SSH_ST_IDLE] = {"idle", NULL},
    [SSH_ST_CHAN_OPEN] = {"channel open", ssh_st_chan_open},
    [SSH_ST_CHAN_EXEC] = {"exec", ssh_st_chan_exec},
    [SSH_ST_CHAN_READ] = {"read output", ssh_st_chan_read},
    [SSH_ST_CHAN_STOP] = {"stop command", ssh_st_chan_stop},
    [SSH_ST_CHAN_CLOSE] = {"channel close", ssh_st_chan_close},
    [SSH_ST_CHAN_WAIT_CLOSED] = {"channel wait closed", ssh_st_chan_wait_closed},
    [SSH_ST_CHAN_FREE] = {"channel free", ssh_st_chan_free},
    [SSH_ST_SFTP_INIT] = {"sftp init", ssh_st_sftp_init},
    [SSH_ST_SFTP_OPEN] = {"sftp open", ssh_st_sftp_open},
    [SSH_ST_SFTP_WRITE] = {"sftp write", ssh_st_sftp_write},
    [SSH_ST_SFTP_CLOSE] = {"sftp close", ssh_st_sftp_close},
    [SSH_ST_SFTP_UNLINK] = {"sftp unlink", ssh_st_sftp_unlink},
    [SSH_ST_SFTP_SHUTDOWN] = {"sftp shutdown", ssh_st_sftp_shutdown},
    [SSH_ST_DISCONNECT] = {"disconnect", ssh_st_disconnect},
    [SSH_ST_CLOSED] = {"closed", NULL},
    [SSH_ST_BROKEN] = {"broken", NULL},
};

static pthread_once_t ssh_once = PTHREAD_ONCE_INIT;
static int ssh_init_rc = -1;

static void
ssh_once_init(void)
{
	ssh_init_rc = libssh2_init(0);
}

int
ssh_global_init(void)
{
	pthread_once(&ssh_once, ssh_once_init);
	return ssh_init_rc == 0 ? 0 : ERR_INTERNAL;
}

/* The one place the state changes. */
static void
ssh_set_state(struct ssh_conn *c, enum ssh_state next)
{
	if (c->state != next)
		log_debug("ssh %s: [%s] -> [%s]", c->name, ssh_states[c->state].name,
			  ssh_states[next].name);
	c->state = next;
}

/* libssh2's text for its last error. */
static const char *
ssh_lib_err(struct ssh_conn *c)
{
	char *msg = NULL;

	if (c->s == NULL || libssh2_session_last_error(c->s, &msg, NULL, 0) == 0 || msg == NULL ||
	    *msg == '\0')
		return "unknown error";
	return msg;
}

static int
ssh_would_block(struct ssh_conn *c)
{
	return libssh2_session_last_errno(c->s) == LIBSSH2_ERROR_EAGAIN;
}

/* Gives up on the transport: nothing more is sent or awaited on it. */
static void
ssh_break(struct ssh_conn *c)
{
	ssh_set_state(c, SSH_ST_BROKEN);
	if (c->fd != -1)
		shutdown(c->fd, SHUT_RDWR);
}

/* Deadline, cancel and dead-peer checks between steps. */
static int
ssh_check_limits(struct ssh_conn *c, int64_t deadline, int cancellable, char *err, size_t errlen)
{
	int64_t now = time_mono_ms();

	if (cancellable && c->cancel_cb != NULL && now - c->last_cancel_check >= SSH_SLICE_MS) {
		c->last_cancel_check = now;
		if (c->cancel_cb(c->cancel_arg))
			return err_set(err, errlen, ERR_CANCELLED, "cancelled during %s",
				       ssh_states[c->state].name);
	}
	if (deadline > 0 && now >= deadline)
		return err_set(err, errlen, ERR_TIMEOUT, "timed out during %s",
			       ssh_states[c->state].name);
	if (c->keepalive && c->io_timeout_ms > 0 && now - c->last_io >= c->io_timeout_ms)
		return err_set(err, errlen, ERR_TIMEOUT,
			       "the server sent nothing for %ld s (during %s)",
			       c->io_timeout_ms / 1000, ssh_states[c->state].name);
	return 0;
}

/* Waits (at most SSH_SLICE_MS) for the socket to be ready the way the step needs. */
static int
ssh_wait_io(struct ssh_conn *c, int64_t deadline, int cancellable, char *err, size_t errlen)
{
	struct pollfd p = {.fd = c->fd, .events = 0, .revents = 0};
	int64_t now = time_mono_ms();
	long ms = SSH_SLICE_MS;
	int dir, next = 0;

	if (c->want != 0) {
		p.events = c->want;
	} else {
		dir = libssh2_session_block_directions(c->s);
		if (dir & LIBSSH2_SESSION_BLOCK_INBOUND)
			p.events |= POLLIN;
		if (dir & LIBSSH2_SESSION_BLOCK_OUTBOUND)
			p.events |= POLLOUT;
		if (p.events == 0)
			p.events = POLLIN;
	}
	if (c->keepalive && libssh2_keepalive_send(c->s, &next) == 0 && next > 0 &&
	    next * 1000L < ms)
		ms = next * 1000L;
	if (deadline > 0 && deadline - now < ms)
		ms = deadline - now > 0 ? (long)(deadline - now) : 0;
	if (poll(&p, 1, (int)ms) == -1 && errno != EINTR)
		return err_set(err, errlen, ERR_IO, "poll: %s", strerror(errno));
	if (p.revents & (POLLIN | POLLHUP | POLLERR))
		c->last_io = time_mono_ms();
	return ssh_check_limits(c, deadline, cancellable, err, errlen);
}

/* Runs steps until the state is goal, waiting on the socket whenever a step would block. */
static int
ssh_drive(struct ssh_conn *c, enum ssh_state goal, int64_t deadline, int cancellable, char *err,
	  size_t errlen)
{
	int rc;

	while (c->state != goal) {
		if (ssh_states[c->state].step == NULL)
			return err_set(err, errlen, ERR_IO,
				       "the connection is unusable (state %s) after an earlier "
				       "failure",
				       ssh_states[c->state].name);
		rc = ssh_states[c->state].step(c, err, errlen);
		if (rc == SSH_AGAIN) {
			rc = ssh_wait_io(c, deadline, cancellable, err, errlen);
		} else if (rc == 0) {
			c->last_io = time_mono_ms();
			rc = ssh_check_limits(c, deadline, cancellable, err, errlen);
		}
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* --- connecting ------------------------------------------------------------------------- */

static int
ssh_st_connect(struct ssh_conn *c, char *err, size_t errlen)
{
	struct pollfd p;
	socklen_t sl = sizeof(int);
	int e = 0, one = 1;

	if (c->fd != -1) {
		/* A connect in progress: done when the socket is writable. */
		p.fd = c->fd;
		p.events = POLLOUT;
		p.revents = 0;
		if (poll(&p, 1, 0) == 0)
			return SSH_AGAIN;
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &sl) == -1)
			e = errno;
		if (e == 0) {
			setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
			c->want = 0;
			ssh_set_state(c, SSH_ST_HANDSHAKE);
			return 0;
		}
		c->connect_errno = e;
		close(c->fd);
		c->fd = -1;
		c->ai_cur = c->ai_cur->ai_next;
	}
	for (; c->ai_cur != NULL; c->ai_cur = c->ai_cur->ai_next) {
		c->fd = socket(c->ai_cur->ai_family,
			       c->ai_cur->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			       c->ai_cur->ai_protocol);
		if (c->fd == -1) {
			c->connect_errno = errno;
			continue;
		}
		if (connect(c->fd, c->ai_cur->ai_addr, c->ai_cur->ai_addrlen) == 0 ||
		    errno == EINPROGRESS) {
			c->want = POLLOUT;
			return SSH_AGAIN;
		}
		c->connect_errno = errno;
		close(c->fd);
		c->fd = -1;
	}
	return err_set(err, errlen, ERR_IO, "connect: %s",
		       strerror(c->connect_errno != 0 ? c->connect_errno : EHOSTUNREACH));
}

/* Sets ssh_hostkey_order, keeping only what this libssh2 supports: libssh2 1.10 strips
 * unknown names itself with an overlapping memcpy. */
static int
ssh_hostkey_pref(struct ssh_conn *c)
{
	const char **algs = NULL;
	char pref[512] = "";
	int n = libssh2_session_supported_algs(c->s, LIBSSH2_METHOD_HOSTKEY, &algs), rc;

	if (n <= 0)
		return -1;
	for (size_t i = 0; i < sizeof(ssh_hostkey_order) / sizeof(ssh_hostkey_order[0]); i++)
		for (int k = 0; k < n; k++)
			if (strcmp(algs[k], ssh_hostkey_order[i]) == 0) {
				if (pref[0] != '\0')
					strcat(pref, ",");
				strcat(pref, ssh_hostkey_order[i]);
				break;
			}
	libssh2_free(c->s, algs);
	if (pref[0] == '\0')
		return -1;
	rc = libssh2_session_method_pref(c->s, LIBSSH2_METHOD_HOSTKEY, pref);
	return rc == 0 ? 0 : -1;
}

static int
ssh_st_handshake(struct ssh_conn *c, char *err, size_t errlen)
{
	int rc;

	if (c->s == NULL) {
		if ((c->s = libssh2_session_init_ex(NULL, NULL, NULL, c)) == NULL)
			return err_set(err, errlen, ERR_NOMEM, "cannot start an SSH session");
		libssh2_session_set_blocking(c->s, 0);
		if (ssh_hostkey_pref(c) != 0)
			return err_set(err, errlen, ERR_INTERNAL, "host key preference: %s",
				       ssh_lib_err(c));
	}
	rc = libssh2_session_handshake(c->s, c->fd);
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return SSH_AGAIN;
	if (rc != 0)
		return err_set(err, errlen, ERR_IO, "handshake: %s", ssh_lib_err(c));
	ssh_set_state(c, SSH_ST_HOSTKEY);
	return 0;
}

static const char *
ssh_key_type_name(int type)
{
	switch (type) {
	case LIBSSH2_HOSTKEY_TYPE_RSA:
		return "ssh-rsa";
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_256:
		return "ecdsa-sha2-nistp256";
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_384:
		return "ecdsa-sha2-nistp384";
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_521:
		return "ecdsa-sha2-nistp521";
	case LIBSSH2_HOSTKEY_TYPE_ED25519:
		return "ssh-ed25519";
	default:
		return "unknown";
	}
}

static int
ssh_st_hostkey(struct ssh_conn *c, char *err, size_t errlen)
{
	const char *hash = libssh2_hostkey_hash(c->s, LIBSSH2_HOSTKEY_HASH_SHA256);
	size_t keylen = 0;
	int type = LIBSSH2_HOSTKEY_TYPE_UNKNOWN;
	char *b64;

	if (hash == NULL)
		return err_set(err, errlen, ERR_IO, "the server's host key has no SHA-256 hash");
	if (libssh2_session_hostkey(c->s, &keylen, &type) == NULL)
		type = LIBSSH2_HOSTKEY_TYPE_UNKNOWN;
	c->key_type = ssh_key_type_name(type);
	if ((b64 = crypto_base64_nopad(hash, 32)) == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	snprintf(c->fp, sizeof(c->fp), "SHA256:%s", b64);
	free(b64);
	if (c->pin != NULL && strcmp(c->pin, c->fp) != 0) {
		c->fatal = 1;
		return err_set(err, errlen, ERR_AUTH,
			       "host key mismatch: expected %s, got %s (%s key); the server was "
			       "reinstalled or someone is in the middle",
			       c->pin, c->fp, c->key_type);
	}
	ssh_set_state(c, SSH_ST_AUTH);
	return 0;
}

static void
ssh_wipe_key(struct ssh_conn *c)
{
	if (c->key != NULL) {
		explicit_bzero(c->key, strlen(c->key));
		free(c->key);
		c->key = NULL;
	}
}

/* Errors of the connection itself, as opposed to the request. */
static int
ssh_transport_error(int rc)
{
	switch (rc) {
	case LIBSSH2_ERROR_SOCKET_NONE:
	case LIBSSH2_ERROR_BANNER_RECV:
	case LIBSSH2_ERROR_BANNER_SEND:
	case LIBSSH2_ERROR_INVALID_MAC:
	case LIBSSH2_ERROR_KEX_FAILURE:
	case LIBSSH2_ERROR_SOCKET_SEND:
	case LIBSSH2_ERROR_KEY_EXCHANGE_FAILURE:
	case LIBSSH2_ERROR_TIMEOUT:
	case LIBSSH2_ERROR_DECRYPT:
	case LIBSSH2_ERROR_SOCKET_DISCONNECT:
	case LIBSSH2_ERROR_SOCKET_TIMEOUT:
	case LIBSSH2_ERROR_SOCKET_RECV:
	case LIBSSH2_ERROR_ENCRYPT:
	case LIBSSH2_ERROR_BAD_SOCKET:
	case LIBSSH2_ERROR_ALLOC:
		return 1;
	default:
		return 0;
	}
}

static int
ssh_st_auth(struct ssh_conn *c, char *err, size_t errlen)
{
	long ka;
	int rc;

	rc = libssh2_userauth_publickey_frommemory(c->s, c->user, strlen(c->user), NULL, 0, c->key,
						   strlen(c->key), NULL);
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return SSH_AGAIN;
	if (rc == LIBSSH2_ERROR_AUTHENTICATION_FAILED || rc == LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED)
		return err_set(err, errlen, ERR_AUTH,
			       "login refused: the server does not accept "
			       "this key for user %s",
			       c->user);
	if (rc != 0 && ssh_transport_error(rc))
		return err_set(err, errlen, ERR_IO, "login: %s", ssh_lib_err(c));
	if (rc != 0) {
		/* Anything else comes from reading the key ("key too short", "Unable to
		 * extract public key from private key"): trying again cannot help. */
		c->fatal = 1;
		return err_set(err, errlen, ERR_INVAL, "the private key cannot be used: %s",
			       ssh_lib_err(c));
	}
	ssh_wipe_key(c);
	ka = c->io_timeout_ms / 3000;
	libssh2_keepalive_config(c->s, 1, (unsigned)(ka > 0 ? ka : 1));
	c->keepalive = 1;
	ssh_set_state(c, SSH_ST_IDLE);
	return 0;
}

/* "user@host:port", with brackets around an IPv6 address. */
static void
ssh_name(const struct ssh_opts *o, char *out, size_t outlen)
{
	int port = o->port > 0 ? o->port : SSH_DEFAULT_PORT;
	const char *host = o->host != NULL ? o->host : "?";

	if (strchr(host, ':') != NULL)
		snprintf(out, outlen, "%s@[%s]:%d", o->user != NULL ? o->user : "?", host, port);
	else
		snprintf(out, outlen, "%s@%s:%d", o->user != NULL ? o->user : "?", host, port);
}

static int
ssh_opts_check(const struct ssh_opts *o, char *err, size_t errlen)
{
	if (o->host == NULL || *o->host == '\0')
		return err_set(err, errlen, ERR_INVAL, "no host given");
	if (o->user == NULL || *o->user == '\0' || strpbrk(o->user, "\r\n") != NULL)
		return err_set(err, errlen, ERR_INVAL, "no valid user given");
	if (o->port < 0 || o->port > 65535)
		return err_set(err, errlen, ERR_INVAL, "port %d is out of range", o->port);
	if (o->private_pem == NULL || *o->private_pem == '\0')
		return err_set(err, errlen, ERR_INVAL, "no private key given");
	if (o->pinned_sha256 != NULL &&
	    (strncmp(o->pinned_sha256, "SHA256:", 7) != 0 || strlen(o->pinned_sha256) < 8 ||
	     strlen(o->pinned_sha256) >= SSH_FP_MAX))
		return err_set(err, errlen, ERR_INVAL,
			       "the pinned host key \"%.80s\" is not a SHA256:... fingerprint",
			       o->pinned_sha256);
	return 0;
}

/*
 * One attempt, bounded by limit_ms as well as the connect timeout (0 = no extra bound).
 * err gets the error without the "ssh user@host:port: " prefix; *fatal tells ssh_wait
 * whether another attempt could help.
 */
static int
ssh_connect_once(const struct ssh_opts *o, long limit_ms, struct ssh_conn **out, char *seen_fp,
		 size_t seenlen, int *fatal, char *err, size_t errlen)
{
	struct addrinfo hints;
	struct ssh_conn *c = NULL;
	char port[16];
	long ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : SSH_CONNECT_TIMEOUT_MS;
	int rc;

	*out = NULL;
	*fatal = 1;
	if (seen_fp != NULL && seenlen > 0)
		seen_fp[0] = '\0';
	if ((rc = ssh_opts_check(o, err, errlen)) != 0)
		return rc;
	if (ssh_global_init() != 0)
		return err_set(err, errlen, ERR_INTERNAL, "libssh2_init failed");
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	c->fd = -1;
	c->state = SSH_ST_NEW;
	c->io_timeout_ms = o->io_timeout_ms > 0 ? o->io_timeout_ms : SSH_IO_TIMEOUT_MS;
	c->cancel_cb = o->cancel_cb;
	c->cancel_arg = o->cancel_arg;
	ssh_name(o, c->name, sizeof(c->name));
	if ((c->user = strdup(o->user)) == NULL || (c->key = strdup(o->private_pem)) == NULL ||
	    (o->pinned_sha256 != NULL && (c->pin = strdup(o->pinned_sha256)) == NULL)) {
		rc = err_set(err, errlen, ERR_NOMEM, "out of memory");
		goto fail;
	}
	*fatal = 0;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(port, sizeof(port), "%d", o->port > 0 ? o->port : SSH_DEFAULT_PORT);
	if ((rc = getaddrinfo(o->host, port, &hints, &c->ai)) != 0) {
		c->ai = NULL;
		rc = err_set(err, errlen, ERR_IO, "resolve %s: %s", o->host, gai_strerror(rc));
		goto fail;
	}
	c->ai_cur = c->ai;
	if (limit_ms > 0 && limit_ms < ms)
		ms = limit_ms;
	ssh_set_state(c, SSH_ST_CONNECT);
	rc = ssh_drive(c, SSH_ST_IDLE, time_mono_ms() + ms, 1, err, errlen);
	if (c->fp[0] != '\0' && seen_fp != NULL)
		snprintf(seen_fp, seenlen, "%s", c->fp);
	if (rc != 0) {
		*fatal = c->fatal || rc == ERR_CANCELLED;
		goto fail;
	}
	log_info("ssh %s: logged in (host key %s %s)", c->name, c->key_type, c->fp);
	*out = c;
	return 0;
fail:
	ssh_close(c);
	return rc;
}

int
ssh_connect(const struct ssh_opts *o, struct ssh_conn **out, char *seen_fp, size_t seenlen,
	    char *err, size_t errlen)
{
	char name[320], why[768];
	int fatal, rc;

	ssh_name(o, name, sizeof(name));
	rc = ssh_connect_once(o, 0, out, seen_fp, seenlen, &fatal, why, sizeof(why));
	if (rc != 0)
		err_set(err, errlen, rc, "ssh %s: %s", name, why);
	return rc;
}

/* Sleeps ms, looking at the cancel callback every SSH_SLICE_MS: 0 or ERR_CANCELLED. */
static int
ssh_nap(const struct ssh_opts *o, long ms)
{
	int64_t end = time_mono_ms() + ms, now;

	while ((now = time_mono_ms()) < end) {
		if (o->cancel_cb != NULL && o->cancel_cb(o->cancel_arg))
			return ERR_CANCELLED;
		poll(NULL, 0, (int)(end - now < SSH_SLICE_MS ? end - now : SSH_SLICE_MS));
	}
	return 0;
}

int
ssh_wait(const struct ssh_opts *o, long wait_ms, ssh_progress_cb progress, void *arg,
	 struct ssh_conn **out, char *seen_fp, size_t seenlen, char *err, size_t errlen)
{
	int64_t start = time_mono_ms(), end = start + (wait_ms > 0 ? wait_ms : 0), now;
	long backoff = SSH_BACKOFF_MIN_MS, limit;
	char name[320], why[768] = "";
	int attempt, fatal, rc;

	*out = NULL;
	ssh_name(o, name, sizeof(name));
	for (attempt = 1;; attempt++) {
		now = time_mono_ms();
		if (attempt > 1 && now >= end)
			break;
		/* wait_ms <= 0: one attempt, bounded by the connect timeout alone. */
		limit = 0;
		if (wait_ms > 0)
			limit = end > now ? (long)(end - now) : 1;
		rc = ssh_connect_once(o, limit, out, seen_fp, seenlen, &fatal, why, sizeof(why));
		if (rc == 0) {
			if (attempt > 1)
				log_info("ssh %s: up after %d attempts", name, attempt);
			return 0;
		}
		if (fatal)
			return err_set(err, errlen, rc, "ssh %s: %s", name, why);
		log_debug("ssh %s: attempt %d: %s", name, attempt, why);
		if (progress != NULL)
			progress(arg, attempt, why);
		now = time_mono_ms();
		if (now >= end)
			break;
		if (ssh_nap(o, backoff < end - now ? backoff : (long)(end - now)) != 0)
			return err_set(err, errlen, ERR_CANCELLED,
				       "ssh %s: cancelled while waiting for SSH", name);
		backoff = backoff * 2 < SSH_BACKOFF_MAX_MS ? backoff * 2 : SSH_BACKOFF_MAX_MS;
	}
	return err_set(err, errlen, ERR_TIMEOUT, "ssh %s: gave up after %d attempt%s in %.1f s: %s",
		       name, attempt - 1, attempt - 1 == 1 ? "" : "s",
		       (double)(time_mono_ms() - start) / 1000.0, why);
}

/* --- running commands ------------------------------------------------------------------- */

char *
ssh_quote_argv(const char *const *argv)
{
	struct buf b;
	const char *p;
	int rc = 0;

	if (argv == NULL || argv[0] == NULL)
		return NULL;
	buf_init(&b, SSH_CMD_MAX);
	for (size_t i = 0; argv[i] != NULL && rc == 0; i++) {
		if (i > 0)
			rc = buf_putc(&b, ' ');
		rc = rc != 0 ? rc : buf_putc(&b, '\'');
		for (p = argv[i]; *p != '\0' && rc == 0; p++)
			rc = *p == '\'' ? buf_puts(&b, "'\\''") : buf_putc(&b, *p);
		rc = rc != 0 ? rc : buf_putc(&b, '\'');
	}
	if (rc != 0) {
		buf_fini(&b);
		return NULL;
	}
	return buf_take(&b);
}

static void
ssh_line_deliver(struct ssh_conn *c, int idx)
{
	struct ssh_linebuf *lb = &c->lines[idx];

	lb->data[lb->len] = '\0';
	if (c->line != NULL)
		c->line(c->line_arg, idx == 0 ? SSH_STDOUT : SSH_STDERR, lb->data, lb->len);
	lb->len = 0;
}

/* Splits output into lines; a line longer than SSH_LINE_MAX goes out in pieces. */
static void
ssh_line_feed(struct ssh_conn *c, int idx, const char *p, size_t n)
{
	struct ssh_linebuf *lb = &c->lines[idx];
	const char *nl;
	size_t take;

	while (n > 0) {
		nl = memchr(p, '\n', n);
		if (nl == p && lb->len == 0 && lb->split) {
			/* The newline ending a line already sent in full-sized pieces. */
			lb->split = 0;
			p++;
			n--;
			continue;
		}
		lb->split = 0;
		take = nl != NULL ? (size_t)(nl - p) : n;
		if (take > SSH_LINE_MAX - lb->len)
			take = SSH_LINE_MAX - lb->len;
		memcpy(lb->data + lb->len, p, take);
		lb->len += take;
		p += take;
		n -= take;
		if (nl != NULL && p == nl) {
			ssh_line_deliver(c, idx);
			p++;
			n--;
		} else if (lb->len == SSH_LINE_MAX) {
			ssh_line_deliver(c, idx);
			lb->split = 1;
		}
	}
}

static int
ssh_st_chan_open(struct ssh_conn *c, char *err, size_t errlen)
{
	if ((c->ch = libssh2_channel_open_session(c->s)) == NULL) {
		if (ssh_would_block(c))
			return SSH_AGAIN;
		return err_set(err, errlen, ERR_IO, "opening a session channel: %s",
			       ssh_lib_err(c));
	}
	ssh_set_state(c, SSH_ST_CHAN_EXEC);
	return 0;
}

static int
ssh_st_chan_exec(struct ssh_conn *c, char *err, size_t errlen)
{
	int rc = libssh2_channel_exec(c->ch, c->cmd);

	if (rc == LIBSSH2_ERROR_EAGAIN)
		return SSH_AGAIN;
	if (rc != 0)
		return err_set(err, errlen, ERR_IO, "starting the command: %s", ssh_lib_err(c));
	c->started = 1;
	ssh_set_state(c, SSH_ST_CHAN_READ);
	return 0;
}

/* One pass over stdout and stderr; done when both are at their end and the server sent
 * EOF. Returns after any data so that ssh_drive can check the time and the cancel flag. */
static int
ssh_st_chan_read(struct ssh_conn *c, char *err, size_t errlen)
{
	char chunk[SSH_READ_CHUNK];
	ssize_t n;
	int got = 0, ended = 0;

	for (int i = 0; i < 2; i++) {
		n = libssh2_channel_read_ex(c->ch, i, chunk, sizeof(chunk));
		if (n > 0) {
			ssh_line_feed(c, i, chunk, (size_t)n);
			got = 1;
		} else if (n == 0) {
			ended++;
		} else if (n != LIBSSH2_ERROR_EAGAIN) {
			return err_set(err, errlen, ERR_IO, "reading the output: %s",
				       ssh_lib_err(c));
		}
	}
	if (got)
		return 0;
	if (ended < 2 || !libssh2_channel_eof(c->ch))
		return SSH_AGAIN;
	for (int i = 0; i < 2; i++)
		if (c->lines[i].len > 0)
			ssh_line_deliver(c, i);
	ssh_set_state(c, SSH_ST_CHAN_CLOSE);
	return 0;
}

/* Giving up on a running command: EOF on its stdin makes SSH_EXEC_WRAPPER end it; then
 * the output is read to its end as usual. */
static int
ssh_st_chan_stop(struct ssh_conn *c, char *err, size_t errlen)
{
	int rc = libssh2_channel_send_eof(c->ch);

	if (rc == LIBSSH2_ERROR_EAGAIN)
		return SSH_AGAIN;
	if (rc != 0)
		return err_set(err, errlen, ERR_IO, "stopping the command: %s", ssh_lib_err(c));
	ssh_set_state(c, SSH_ST_CHAN_READ);
	return 0;
}

static int
ssh_st_chan_close(struct ssh_conn *c, char *err, size_t errlen)
{
	int rc = libssh2_channel_close(c->ch);

	if (rc == LIBSSH2_ERROR_EAGAIN)
		return SSH_AGAIN;
	if (rc != 0)
		return err_set(err, errlen, ERR_IO, "closing the channel: %s", ssh_lib_err(c));
	ssh_set_state(c, SSH_ST_CHAN_WAIT_CLOSED);
	return 0;
}

static int
ssh_signal_number(const char *name)
{
	static const struct {
		const char *name;
		int no;
	} sigs[] = {
	    {"HUP", SIGHUP},   {"INT", SIGINT},	  {"QUIT", SIGQUIT}, {"ILL", SIGILL},
	    {"ABRT", SIGABRT}, {"FPE", SIGFPE},	  {"KILL", SIGKILL}, {"USR1", SIGUSR1},
	    {"SEGV", SIGSEGV}, {"USR2", SIGUSR2}, {"PIPE", SIGPIPE}, {"ALRM", SIGALRM},
	    {"TERM", SIGTERM}, {"BUS", SIGBUS},	  {"XCPU", SIGXCPU}, {"XFSZ", SIGXFSZ},
	};

	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		if (strcmp(sigs[i].name, name) == 0)
			return sigs[i].no;
	return 127; /* 128 + 127 = 255: ended by a signal we cannot name */
}

static int
ssh_st_chan_wait_closed(struct ssh_conn *c, char *err, size_t errlen)
{
	char *sig = NULL;
	size_t siglen = 0;
	int rc;

	if (!c->winding) {
		rc = libssh2_channel_wait_closed(c->ch);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return SSH_AGAIN;
		if (rc != 0)
			return err_set(err, errlen, ERR_IO, "closing the channel: %s",
				       ssh_lib_err(c));
		c->exit_status = libssh2_channel_get_exit_status(c->ch);
		if (libssh2_channel_get_exit_signal(c->ch, &sig, &siglen, NULL, NULL, NULL, NULL) ==
			0 &&
		    sig != NULL) {
			c->exit_status = 128 + ssh_signal_number(sig);
			log_debug("ssh %s: the command ended by SIG%s", c->name, sig);
			libssh2_free(c->s, sig);
		}
	}
	ssh_set_state(c, SSH_ST_CHAN_FREE);
	return 0;
}

static int
ssh_st_chan_free(struct ssh_conn *c, char *err, size_t errlen)
{
	int rc = libssh2_channel_free(c->ch);

	(void)err;
	(void)errlen;
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return SSH_AGAIN;
	if (rc != 0)
		log_debug("ssh %s: freeing the channel: %s", c->name, ssh_lib_err(c));
	c->ch = NULL;
	ssh_set_state(c, SSH_ST_IDLE);
	return 0;
}

/* After a failed or abandoned exec: stop the command if it runs and read it to its end,
 * close the channel, free it. When even that fails the connection is given up. */
static void
ssh_chan_wind_down(struct ssh_conn *c)
{
	char why[256];

	if (c->state == SSH_ST_BROKEN)
		return;
	if (c->ch == NULL) {
		ssh_set_state(c, SSH_ST_IDLE);
		return;
	}
	c->winding = 1;
	if (c->started && c->state == SSH_ST_CHAN_READ)
		ssh_set_state(c, SSH_ST_CHAN_STOP);
	else if (c->state != SSH_ST_CHAN_FREE)
		ssh_set_state(c, SSH_ST_CHAN_CLOSE);
	if (ssh_drive(c, SSH_ST_IDLE, time_mono_ms() + SSH_WIND_DOWN_MS, 0, why, sizeof(why)) !=
	    0) {
		log_warnx("ssh %s: giving up the connection: %s", c->name, why);
		ssh_break(c);
	}
	c->winding = 0;
}

static int
ssh_ready(struct ssh_conn *c, char *err, size_t errlen)
{
	if (c == NULL)
		return err_set(err, errlen, ERR_INVAL, "ssh: no connection");
	if (c->state != SSH_ST_IDLE)
		return err_set(err, errlen, ERR_IO,
			       "ssh %s: the connection is unusable after an earlier failure",
			       c->name);
	/* The connection may have sat idle: the dead-peer clock starts now. */
	c->last_io = time_mono_ms();
	return 0;
}

int
ssh_exec(struct ssh_conn *c, const char *const *argv, ssh_line_cb line, void *arg, long timeout_ms,
	 int *exit_status, char *err, size_t errlen)
{
	char why[768];
	const char **full = NULL;
	char *cmd = NULL;
	size_t n = 0;
	int rc;

	*exit_status = -1;
	if ((rc = ssh_ready(c, err, errlen)) != 0)
		return rc;
	while (argv != NULL && argv[n] != NULL)
		n++;
	if (n == 0)
		return err_set(err, errlen, ERR_INVAL, "ssh %s: no command given", c->name);
	if ((full = calloc(n + 5, sizeof(*full))) == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	full[0] = "sh";
	full[1] = "-c";
	full[2] = SSH_EXEC_WRAPPER;
	full[3] = "stoke-exec";
	memcpy(full + 4, argv, n * sizeof(*full));
	cmd = ssh_quote_argv(full);
	free(full);
	if (cmd == NULL)
		return err_set(err, errlen, ERR_INVAL,
			       "ssh %s: the command is longer than %u bytes", c->name, SSH_CMD_MAX);
	c->cmd = cmd;
	c->line = line;
	c->line_arg = arg;
	c->started = 0;
	c->exit_status = -1;
	for (int i = 0; i < 2; i++) {
		c->lines[i].len = 0;
		c->lines[i].split = 0;
	}
	log_debug("ssh %s: running %s", c->name, argv[0]);
	ssh_set_state(c, SSH_ST_CHAN_OPEN);
	rc = ssh_drive(c, SSH_ST_IDLE, timeout_ms > 0 ? time_mono_ms() + timeout_ms : 0, 1, why,
		       sizeof(why));
	if (rc != 0) {
		ssh_chan_wind_down(c);
		err_set(err, errlen, rc, "ssh %s: %s: %s", c->name, argv[0], why);
	} else {
		*exit_status = c->exit_status;
	}
	c->cmd = NULL;
	c->line = NULL;
	free(cmd);
	return rc;
}

/* --- uploading -------------------------------------------------------------------------- */

static const char *
ssh_sftp_status(unsigned long code)
{
	switch (code) {
	case LIBSSH2_FX_NO_SUCH_FILE:
	case LIBSSH2_FX_NO_SUCH_PATH:
		return "no such file or folder";
	case LIBSSH2_FX_PERMISSION_DENIED:
		return "permission denied";
	case LIBSSH2_FX_FILE_ALREADY_EXISTS:
		return "already exists";
	case LIBSSH2_FX_WRITE_PROTECT:
		return "read-only file system";
	case LIBSSH2_FX_NO_SPACE_ON_FILESYSTEM:
		return "no space left";
	case LIBSSH2_FX_QUOTA_EXCEEDED:
		return "quota exceeded";
	case LIBSSH2_FX_NOT_A_DIRECTORY:
		return "not a folder";
	case LIBSSH2_FX_INVALID_FILENAME:
		return "invalid file name";
	default:
		return "failure";
	}
}

/* Text for an SFTP call that failed: the server's status when it sent one. */
static const char *
ssh_sftp_err(struct ssh_conn *c)
{
	if (c->sftp != NULL && libssh2_session_last_errno(c->s) == LIBSSH2_ERROR_SFTP_PROTOCOL)
		return ssh_sftp_status(libssh2_sftp_last_error(c->sftp));
	return ssh_lib_err(c);
}

static int
ssh_st_sftp_init(struct ssh_conn *c, char *err, size_t errlen)
{
	if ((c->sftp = libssh2_sftp_init(c->s)) == NULL) {
		if (ssh_would_block(c))
			return SSH_AGAIN;
		return err_set(err, errlen, ERR_IO, "starting SFTP: %s", ssh_lib_err(c));
	}
	ssh_set_state(c, SSH_ST_SFTP_OPEN);
	return 0;
}

static int
ssh_st_sftp_open(struct ssh_conn *c, char *err, size_t errlen)
{
	/* Owner-only until the final chmod: what is uploaded may be a secret. */
	c->fh = libssh2_sftp_open_ex(c->sftp, c->tmp, (unsigned)strlen(c->tmp),
				     LIBSSH2_FXF_WRITE | LIBSSH2_FXF_CREAT | LIBSSH2_FXF_EXCL,
				     LIBSSH2_SFTP_S_IRUSR | LIBSSH2_SFTP_S_IWUSR,
				     LIBSSH2_SFTP_OPENFILE);
	if (c->fh == NULL) {
		if (ssh_would_block(c))
			return SSH_AGAIN;
		return err_set(err, errlen, ERR_IO, "creating %s: %s", c->tmp, ssh_sftp_err(c));
	}
	c->tmp_made = 1;
	ssh_set_state(c, SSH_ST_SFTP_WRITE);
	return 0;
}

static int
ssh_st_sftp_write(struct ssh_conn *c, char *err, size_t errlen)
{
	size_t n = c->len - c->off;
	ssize_t rc;

	if (n == 0) {
		ssh_set_state(c, SSH_ST_SFTP_CLOSE);
		return 0;
	}
	/* After EAGAIN libssh2 wants the same buffer again: off only moves on success. */
	rc = libssh2_sftp_write(c->fh, (const char *)c->data + c->off,
				n < SSH_WRITE_CHUNK ? n : SSH_WRITE_CHUNK);
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return SSH_AGAIN;
	if (rc < 0)
		return err_set(err, errlen, ERR_IO, "writing %s: %s", c->tmp, ssh_sftp_err(c));
	c->off += (size_t)rc;
	return 0;
}

static int
ssh_st_sftp_close(struct ssh_conn *c, char *err, size_t errlen)
{
	int rc = libssh2_sftp_close_handle(c->fh);

	if (rc == LIBSSH2_ERROR_EAGAIN)
		return SSH_AGAIN;
	c->fh = NULL;
	if (c->winding) {
		ssh_set_state(c, SSH_ST_SFTP_UNLINK);
		return 0;
	}
	if (rc != 0)
		return err_set(err, errlen, ERR_IO, "closing %s: %s", c->tmp, ssh_sftp_err(c));
	ssh_set_state(c, SSH_ST_SFTP_SHUTDOWN);
	return 0;
}

static int
ssh_st_sftp_unlink(struct ssh_conn *c, char *err, size_t errlen)
{
	int rc = libssh2_sftp_unlink(c->sftp, c->tmp);

	(void)err;
	(void)errlen;
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return SSH_AGAIN;
	if (rc != 0)
		log_warnx("ssh %s: cannot remove %s: %s", c->name, c->tmp, ssh_sftp_err(c));
	c->tmp_made = 0;
	ssh_set_state(c, SSH_ST_SFTP_SHUTDOWN);
	return 0;
}

static int
ssh_st_sftp_shutdown(struct ssh_conn *c, char *err, size_t errlen)
{
	int rc = libssh2_sftp_shutdown(c->sftp);

	(void)err;
	(void)errlen;
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return SSH_AGAIN;
	if (rc != 0)
		log_debug("ssh %s: SFTP shutdown: %s", c->name, ssh_lib_err(c));
	c->sftp = NULL;
	ssh_set_state(c, SSH_ST_IDLE);
	return 0;
}

/* After a failed upload: close the file, remove it, end the SFTP session. */
static void
ssh_sftp_wind_down(struct ssh_conn *c)
{
	char why[256];

	if (c->state == SSH_ST_BROKEN)
		return;
	c->winding = 1;
	if (c->fh != NULL)
		ssh_set_state(c, SSH_ST_SFTP_CLOSE);
	else if (c->tmp_made)
		ssh_set_state(c, SSH_ST_SFTP_UNLINK);
	else if (c->sftp != NULL)
		ssh_set_state(c, SSH_ST_SFTP_SHUTDOWN);
	else
		ssh_set_state(c, SSH_ST_IDLE);
	if (ssh_drive(c, SSH_ST_IDLE, time_mono_ms() + SSH_WIND_DOWN_MS, 0, why, sizeof(why)) !=
	    0) {
		log_warnx("ssh %s: giving up the connection: %s", c->name, why);
		ssh_break(c);
	}
	c->winding = 0;
}

/* Keeps the first bytes of the mv command's stderr for the error message. */
static void
ssh_upload_line_cb(void *arg, enum ssh_stream stream, const char *text, size_t len)
{
	struct buf *b = arg;

	if (stream != SSH_STDERR)
		return;
	if (b->len > 0)
		(void)buf_puts(b, "; ");
	(void)buf_append(b, text, len < 300 ? len : 300);
}

int
ssh_upload(struct ssh_conn *c, const char *path, const void *data, size_t len, int mode, char *err,
	   size_t errlen)
{
	/* $1 mode, $2 temporary file, $3 destination. */
	static const char script[] = "chmod \"$1\" \"$2\" && mv -f -- \"$2\" \"$3\" || "
				     "{ rm -f -- \"$2\"; exit 1; }";
	unsigned char rnd[6];
	char hex[13], modestr[8], why[768];
	struct buf tmp, errout;
	int rc, status = -1;

	buf_init(&tmp, SSH_PATH_MAX + 32);
	buf_init(&errout, 1024);
	if ((rc = ssh_ready(c, err, errlen)) != 0)
		goto out;
	if (path == NULL || path[0] != '/' || strlen(path) > SSH_PATH_MAX ||
	    path[strlen(path) - 1] == '/' || strpbrk(path, "\r\n") != NULL) {
		rc = err_set(err, errlen, ERR_INVAL,
			     "ssh %s: upload: \"%.200s\" is not an absolute file path", c->name,
			     path != NULL ? path : "");
		goto out;
	}
	if (data == NULL && len > 0) {
		rc = err_set(err, errlen, ERR_INVAL, "ssh %s: upload %s: no data", c->name, path);
		goto out;
	}
	if (mode < 0 || mode > 07777) {
		rc = err_set(err, errlen, ERR_INVAL, "ssh %s: upload %s: bad mode %o", c->name,
			     path, mode);
		goto out;
	}
	if (crypto_random(rnd, sizeof(rnd)) != 0) {
		rc = err_set(err, errlen, ERR_CRYPTO, "ssh %s: upload %s: no random bytes", c->name,
			     path);
		goto out;
	}
	crypto_hex(rnd, sizeof(rnd), hex);
	if (buf_printf(&tmp, "%s.tmp-%s", path, hex) != 0) {
		rc = err_set(err, errlen, ERR_NOMEM, "out of memory");
		goto out;
	}
	c->tmp = tmp.data;
	c->tmp_made = 0;
	c->data = data;
	c->len = len;
	c->off = 0;
	ssh_set_state(c, SSH_ST_SFTP_INIT);
	rc = ssh_drive(c, SSH_ST_IDLE, 0, 1, why, sizeof(why));
	if (rc != 0) {
		ssh_sftp_wind_down(c);
		err_set(err, errlen, rc, "ssh %s: upload %s: %s", c->name, path, why);
		goto out;
	}
	snprintf(modestr, sizeof(modestr), "%04o", (unsigned)mode);
	{
		const char *argv[] = {"sh",    "-c",   script, "stoke-upload",
				      modestr, c->tmp, path,   NULL};

		rc = ssh_exec(c, argv, ssh_upload_line_cb, &errout, SSH_MOVE_TIMEOUT_MS, &status,
			      why, sizeof(why));
	}
	if (rc != 0) {
		err_set(err, errlen, rc, "%s (moving the upload of %s into place)", why, path);
		goto out;
	}
	if (status != 0) {
		rc = err_set(err, errlen, ERR_IO,
			     "ssh %s: upload %s: moving into place failed "
			     "(exit %d): %s",
			     c->name, path, status, errout.data != NULL ? errout.data : "");
		goto out;
	}
	log_debug("ssh %s: uploaded %s (%zu bytes, mode %s)", c->name, path, len, modestr);
out:
	if (c != NULL) {
		c->tmp = NULL;
		c->data = NULL;
	}
	buf_fini(&tmp);
	buf_fini(&errout);
	return rc;
}

/* --- closing ---------------------------------------------------------------------------- */

static int
ssh_st_disconnect(struct ssh_conn *c, char *err, size_t errlen)
{
	int rc = libssh2_session_disconnect(c->s, "stoke: done");

	if (rc == LIBSSH2_ERROR_EAGAIN)
		return SSH_AGAIN;
	if (rc != 0)
		return err_set(err, errlen, ERR_IO, "disconnect: %s", ssh_lib_err(c));
	ssh_set_state(c, SSH_ST_CLOSED);
	return 0;
}

void
ssh_close(struct ssh_conn *c)
{
	char why[256];

	if (c == NULL)
		return;
	if (c->s != NULL && c->state == SSH_ST_IDLE) {
		ssh_set_state(c, SSH_ST_DISCONNECT);
		if (ssh_drive(c, SSH_ST_CLOSED, time_mono_ms() + SSH_CLOSE_MS, 0, why,
			      sizeof(why)) != 0)
			log_debug("ssh %s: %s", c->name, why);
	}
	if (c->fd != -1)
		shutdown(c->fd, SHUT_RDWR);
	if (c->s != NULL) {
		/* The socket is shut: whatever libssh2 still tries to send fails at once
		 * instead of blocking, and the session frees what it holds. */
		if (c->fh != NULL)
			libssh2_sftp_close_handle(c->fh);
		if (c->sftp != NULL)
			libssh2_sftp_shutdown(c->sftp);
		for (int i = 0; i < 50 && libssh2_session_free(c->s) == LIBSSH2_ERROR_EAGAIN; i++)
			poll(NULL, 0, 1);
	}
	if (c->fd != -1)
		close(c->fd);
	if (c->ai != NULL)
		freeaddrinfo(c->ai);
	ssh_wipe_key(c);
	free(c->user);
	free(c->pin);
	free(c);
}

/* --- keys ------------------------------------------------------------------------------- */

/* A bounded writer of SSH wire encoding (RFC 4251: uint32, string). */
struct ssh_wr {
	unsigned char *p;
	size_t len, cap;
	int overflow;
};

static void
ssh_wr_raw(struct ssh_wr *w, const void *data, size_t len)
{
	if (w->overflow || len > w->cap - w->len) {
		w->overflow = 1;
		return;
	}
	memcpy(w->p + w->len, data, len);
	w->len += len;
}

static void
ssh_wr_u32(struct ssh_wr *w, uint32_t v)
{
	unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
			      (unsigned char)(v >> 8), (unsigned char)v};

	ssh_wr_raw(w, b, 4);
}

static void
ssh_wr_str(struct ssh_wr *w, const void *data, size_t len)
{
	ssh_wr_u32(w, (uint32_t)len);
	ssh_wr_raw(w, data, len);
}

/* PEM armour with base64 lines of 70 characters, as ssh-keygen writes. */
static char *
ssh_pem_wrap(const char *b64)
{
	static const char head[] = "-----BEGIN OPENSSH PRIVATE KEY-----\n";
	static const char tail[] = "-----END OPENSSH PRIVATE KEY-----\n";
	size_t n = strlen(b64), lines = n / 70 + 1, i, o = 0;
	char *pem = malloc(sizeof(head) + n + lines + sizeof(tail));

	if (pem == NULL)
		return NULL;
	memcpy(pem, head, sizeof(head) - 1);
	o = sizeof(head) - 1;
	for (i = 0; i < n; i += 70) {
		size_t k = n - i < 70 ? n - i : 70;

		memcpy(pem + o, b64 + i, k);
		o += k;
		pem[o++] = '\n';
	}
	memcpy(pem + o, tail, sizeof(tail));
	return pem;
}

int
ssh_keygen_ed25519(const char *comment, char **private_pem, char **public_line, char *err,
		   size_t errlen)
{
	unsigned char pub[32], kp[64], blob[64], sec[512], file[1024];
	size_t publen = sizeof(pub), seedlen = 32, clen;
	struct ssh_wr w;
	EVP_PKEY *pk = NULL;
	char *b64 = NULL, *line = NULL, *pem = NULL;
	uint32_t check;
	int rc = 0, n;

	*private_pem = NULL;
	*public_line = NULL;
	if (comment == NULL)
		comment = "";
	clen = strlen(comment);
	if (clen > SSH_COMMENT_MAX)
		return err_set(err, errlen, ERR_INVAL, "key comment longer than %d bytes",
			       SSH_COMMENT_MAX);
	for (size_t i = 0; i < clen; i++)
		if ((unsigned char)comment[i] < 0x20 || comment[i] == 0x7f)
			return err_set(err, errlen, ERR_INVAL,
				       "key comment holds a control character");
	if ((pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")) == NULL ||
	    EVP_PKEY_get_raw_public_key(pk, pub, &publen) != 1 || publen != 32 ||
	    EVP_PKEY_get_raw_private_key(pk, kp, &seedlen) != 1 || seedlen != 32 ||
	    crypto_random(&check, sizeof(check)) != 0) {
		rc = err_set(err, errlen, ERR_CRYPTO, "cannot make an Ed25519 key");
		goto fail;
	}
	memcpy(kp + 32, pub, 32); /* OpenSSH keeps seed || public key */

	/* Public key blob: string "ssh-ed25519", string key. */
	w = (struct ssh_wr){.p = blob, .cap = sizeof(blob)};
	ssh_wr_str(&w, "ssh-ed25519", 11);
	ssh_wr_str(&w, pub, 32);
	if (w.overflow || (b64 = crypto_base64(blob, w.len)) == NULL)
		goto nomem;
	n = clen > 0 ? asprintf(&line, "ssh-ed25519 %s %s", b64, comment)
		     : asprintf(&line, "ssh-ed25519 %s", b64);
	free(b64);
	b64 = NULL;
	if (n < 0) {
		line = NULL;
		goto nomem;
	}

	/* Private section (PROTOCOL.key): checkints, key, comment, padding to 8 bytes. */
	w = (struct ssh_wr){.p = sec, .cap = sizeof(sec)};
	ssh_wr_u32(&w, check);
	ssh_wr_u32(&w, check);
	ssh_wr_str(&w, "ssh-ed25519", 11);
	ssh_wr_str(&w, pub, 32);
	ssh_wr_str(&w, kp, 64);
	ssh_wr_str(&w, comment, clen);
	for (unsigned char pad = 1; w.len % 8 != 0; pad++)
		ssh_wr_raw(&w, &pad, 1);
	if (w.overflow)
		goto nomem;
	{
		size_t seclen = w.len, bloblen = 4 + 11 + 4 + 32;

		w = (struct ssh_wr){.p = file, .cap = sizeof(file)};
		ssh_wr_raw(&w, "openssh-key-v1", 15); /* with its NUL */
		ssh_wr_str(&w, "none", 4);	      /* cipher */
		ssh_wr_str(&w, "none", 4);	      /* kdf */
		ssh_wr_str(&w, "", 0);		      /* kdf options */
		ssh_wr_u32(&w, 1);		      /* number of keys */
		ssh_wr_str(&w, blob, bloblen);
		ssh_wr_str(&w, sec, seclen);
	}
	if (w.overflow || (b64 = crypto_base64(file, w.len)) == NULL ||
	    (pem = ssh_pem_wrap(b64)) == NULL)
		goto nomem;
	*private_pem = pem;
	*public_line = line;
	pem = NULL;
	line = NULL;
	goto out;
nomem:
	rc = err_set(err, errlen, ERR_NOMEM, "out of memory");
fail:
out:
	if (b64 != NULL) {
		explicit_bzero(b64, strlen(b64));
		free(b64);
	}
	explicit_bzero(kp, sizeof(kp));
	explicit_bzero(sec, sizeof(sec));
	explicit_bzero(file, sizeof(file));
	free(line);
	free(pem);
	EVP_PKEY_free(pk);
	return rc;
}
