/*
 * wire.c: the agent's transport (see wire.h). One I/O thread owns the socket and the TLS
 * session; callers put their request in a slot under the mutex, poke the thread through an
 * eventfd and wait on their own condition variable. What the messages mean is channel.c's.
 */
#include "wire.h"
#include "wire_frame.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "crypto.h"
#include "err.h"
#include "log.h"
#include "timeutil.h"

/* TCP connect, TLS handshake and SP header, together. Generous: when a thousand agents
 * dial at once (a controller restart), handshakes queue at the controller, and giving up
 * early only makes each one start over. */
#define WIRE_CONNECT_MS 30000
#define WIRE_BACKOFF_MIN 100
#define WIRE_BACKOFF_MAX 15000
#define WIRE_RECORD 16384 /* most plaintext one TLS record carries */

enum wire_req_state { WIRE_QUEUED, WIRE_SENT, WIRE_DONE };

struct wire_req {
	uint32_t id;
	const uint8_t *msg; /* the caller's; read (under the mutex) only while it waits */
	size_t len;
	enum wire_req_state state;
	int rv;
	uint8_t *reply;
	size_t replylen;
	pthread_cond_t cond;
};

struct wire {
	char *url, *server_name, *host, *port;
	int family;
	size_t recv_max;
	void (*connected_cb)(void *, int);
	void *arg;

	mbedtls_entropy_context entropy;
	mbedtls_ctr_drbg_context drbg;
	mbedtls_ssl_config conf;
	mbedtls_x509_crt ca, crt;
	mbedtls_pk_context key;

	int wakefd;
	pthread_t thread;
	int started;

	pthread_mutex_t mtx; /* slot, closed, next_id, recycle, stopping */
	struct wire_req *slot[WIRE_SLOTS];
	int closed[WIRE_SLOTS];
	uint32_t next_id;
	int recycle, stopping, up;

	/* the I/O thread's alone */
	int fd;
	int have_ssl;
	mbedtls_ssl_context ssl;
	uint8_t *wbuf, *rbuf;
	size_t wlen, woff, wcap, wtry, rlen, rcap;
	char why[256]; /* why the last connection attempt failed or the connection ended */
};

const char *
wire_strerror(int rv)
{
	switch (rv) {
	case WIRE_OK:
		return "ok";
	case WIRE_ETIMEDOUT:
		return "timed out";
	case WIRE_ECLOSED:
		return "closed";
	case WIRE_ENOMEM:
		return "out of memory";
	case WIRE_EINVAL:
		return "invalid argument";
	}
	return "unknown error";
}

static void
wire_tls_error(char *buf, size_t len, const char *what, int rv)
{
	char text[160];

	mbedtls_strerror(rv, text, sizeof(text));
	snprintf(buf, len, "%s: %s", what, text);
}

static void
wire_poke(struct wire *w)
{
	uint64_t one = 1;

	if (write(w->wakefd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_warn("wire: eventfd");
}

static void
wire_drain(struct wire *w)
{
	uint64_t v;

	while (read(w->wakefd, &v, sizeof(v)) > 0)
		;
}

static int
wire_stopping(struct wire *w)
{
	int s;

	pthread_mutex_lock(&w->mtx);
	s = w->stopping;
	pthread_mutex_unlock(&w->mtx);
	return s;
}

/* Waits for events on the socket until deadline (monotonic ms); -1 on timeout or stop. */
static int
wire_wait(struct wire *w, short events, int64_t deadline)
{
	for (;;) {
		struct pollfd p[2] = {{.fd = w->fd, .events = events},
				      {.fd = w->wakefd, .events = POLLIN}};
		int64_t left = deadline - time_mono_ms();

		if (wire_stopping(w))
			return -1;
		if (left <= 0) {
			snprintf(w->why, sizeof(w->why), "timed out");
			return -1;
		}
		if (poll(p, 2, (int)left) < 0 && errno != EINTR) {
			snprintf(w->why, sizeof(w->why), "poll: %s", strerror(errno));
			return -1;
		}
		if (p[1].revents)
			wire_drain(w);
		if (p[0].revents)
			return 0;
	}
}

static int
wire_bio_send(void *arg, const unsigned char *buf, size_t len)
{
	struct wire *w = arg;
	ssize_t n = send(w->fd, buf, len, MSG_NOSIGNAL);

	if (n >= 0)
		return (int)n;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return MBEDTLS_ERR_SSL_WANT_WRITE;
	snprintf(w->why, sizeof(w->why), "send: %s", strerror(errno));
	return errno == EPIPE || errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET
						     : MBEDTLS_ERR_NET_SEND_FAILED;
}

static int
wire_bio_recv(void *arg, unsigned char *buf, size_t len)
{
	struct wire *w = arg;
	ssize_t n = recv(w->fd, buf, len, 0);

	if (n >= 0)
		return (int)n;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return MBEDTLS_ERR_SSL_WANT_READ;
	snprintf(w->why, sizeof(w->why), "recv: %s", strerror(errno));
	return errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET : MBEDTLS_ERR_NET_RECV_FAILED;
}

static void
wire_disconnect(struct wire *w)
{
	size_t i;

	if (w->have_ssl) {
		mbedtls_ssl_free(&w->ssl);
		w->have_ssl = 0;
	}
	if (w->fd >= 0) {
		close(w->fd);
		w->fd = -1;
	}
	w->wlen = w->woff = w->wtry = w->rlen = 0;
	/* What was sent and not answered goes again on the next connection (as nng's req0). */
	pthread_mutex_lock(&w->mtx);
	for (i = 0; i < WIRE_SLOTS; i++)
		if (w->slot[i] && w->slot[i]->state == WIRE_SENT)
			w->slot[i]->state = WIRE_QUEUED;
	pthread_mutex_unlock(&w->mtx);
}

static int
wire_tcp_connect(struct wire *w, int64_t deadline)
{
	struct addrinfo hints = {.ai_family = w->family, .ai_socktype = SOCK_STREAM}, *res, *ai;
	int rv, one = 1, idle = 20, intvl = 5, cnt = 4;
	unsigned int user_timeout = 40000;

	if ((rv = getaddrinfo(w->host, w->port, &hints, &res)) != 0) {
		snprintf(w->why, sizeof(w->why), "cannot resolve %s: %s", w->host,
			 gai_strerror(rv));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		int soerr = 0;
		socklen_t sl = sizeof(soerr);

		w->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (w->fd < 0) {
			snprintf(w->why, sizeof(w->why), "socket: %s", strerror(errno));
			continue;
		}
		if (connect(w->fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno == EINPROGRESS && wire_wait(w, POLLOUT, deadline) == 0 &&
		    getsockopt(w->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
			break;
		if (soerr != 0 || errno != EINPROGRESS)
			snprintf(w->why, sizeof(w->why), "connect: %s",
				 strerror(soerr ? soerr : errno));
		close(w->fd);
		w->fd = -1;
		if (wire_stopping(w))
			break;
	}
	freeaddrinfo(res);
	if (w->fd < 0)
		return -1;
	/* A dead peer is noticed within about 40 s, whether the connection is idle
	 * (keepalive) or has data waiting to be acknowledged (user timeout). */
	setsockopt(w->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(w->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(w->fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(w->fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(w->fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	setsockopt(w->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof(user_timeout));
	return 0;
}

/* Writes or reads exactly len bytes of TLS plaintext before deadline (connection set-up). */
static int
wire_tls_io(struct wire *w, int writing, uint8_t *buf, size_t len, int64_t deadline)
{
	size_t off = 0;

	while (off < len) {
		int rv = writing ? mbedtls_ssl_write(&w->ssl, buf + off, len - off)
				 : mbedtls_ssl_read(&w->ssl, buf + off, len - off);

		if (rv > 0) {
			off += (size_t)rv;
			continue;
		}
		if (rv == MBEDTLS_ERR_SSL_WANT_READ || rv == MBEDTLS_ERR_SSL_WANT_WRITE) {
			if (wire_wait(w, rv == MBEDTLS_ERR_SSL_WANT_READ ? POLLIN : POLLOUT,
				      deadline) != 0)
				return -1;
			continue;
		}
		if (rv == 0)
			snprintf(w->why, sizeof(w->why), "closed by the controller");
		else
			wire_tls_error(w->why, sizeof(w->why), "TLS", rv);
		return -1;
	}
	return 0;
}

/* TCP, TLS (verifying the controller's chain and name), then the SP header exchange. */
static int
wire_connect(struct wire *w)
{
	int64_t deadline = time_mono_ms() + WIRE_CONNECT_MS;
	uint8_t hdr[8], peer[8];
	int rv;

	wire_frame_sp_header(hdr, WIRE_PROTO_REQ0);
	if (wire_tcp_connect(w, deadline) != 0)
		return -1;
	mbedtls_ssl_init(&w->ssl);
	w->have_ssl = 1;
	if ((rv = mbedtls_ssl_setup(&w->ssl, &w->conf)) != 0 ||
	    (rv = mbedtls_ssl_set_hostname(&w->ssl, w->server_name)) != 0) {
		wire_tls_error(w->why, sizeof(w->why), "TLS set-up", rv);
		return -1;
	}
	mbedtls_ssl_set_bio(&w->ssl, w, wire_bio_send, wire_bio_recv, NULL);
	while ((rv = mbedtls_ssl_handshake(&w->ssl)) != 0) {
		if (rv == MBEDTLS_ERR_SSL_WANT_READ || rv == MBEDTLS_ERR_SSL_WANT_WRITE) {
			if (wire_wait(w, rv == MBEDTLS_ERR_SSL_WANT_READ ? POLLIN : POLLOUT,
				      deadline) != 0)
				return -1;
			continue;
		}
		if (rv == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
			char info[200];

			mbedtls_x509_crt_verify_info(info, sizeof(info), "",
						     mbedtls_ssl_get_verify_result(&w->ssl));
			info[strcspn(info, "\n")] = '\0';
			snprintf(w->why, sizeof(w->why),
				 "TLS: the controller's certificate is not trusted (%s; expected "
				 "name %s)",
				 info, w->server_name);
		} else {
			wire_tls_error(w->why, sizeof(w->why), "TLS handshake", rv);
		}
		return -1;
	}
	if (wire_tls_io(w, 1, hdr, sizeof(hdr), deadline) != 0 ||
	    wire_tls_io(w, 0, peer, sizeof(peer), deadline) != 0)
		return -1;
	if (wire_frame_sp_check(peer, WIRE_PROTO_REP0) != 0) {
		snprintf(w->why, sizeof(w->why),
			 "the peer does not speak the controller's protocol (SP header)");
		return -1;
	}
	return 0;
}

static int
wire_reserve(uint8_t **buf, size_t *cap, size_t need)
{
	uint8_t *nb;
	size_t c = *cap ? *cap : 4096;

	if (need <= *cap)
		return 0;
	while (c < need)
		c *= 2;
	if ((nb = realloc(*buf, c)) == NULL)
		return -1;
	*buf = nb;
	*cap = c;
	return 0;
}

/* Moves queued requests into the write buffer as frames: length, request id, body. */
static int
wire_queue(struct wire *w)
{
	size_t i;
	int rv = 0;

	pthread_mutex_lock(&w->mtx);
	for (i = 0; i < WIRE_SLOTS; i++) {
		struct wire_req *r = w->slot[i];

		if (r == NULL || r->state != WIRE_QUEUED)
			continue;
		if (w->woff == w->wlen)
			w->woff = w->wlen = 0;
		if (wire_reserve(&w->wbuf, &w->wcap, w->wlen + WIRE_FRAME_HDR + r->len) != 0) {
			rv = -1;
			break;
		}
		wire_frame_put(w->wbuf + w->wlen, r->id, r->msg, r->len);
		w->wlen += WIRE_FRAME_HDR + r->len;
		r->state = WIRE_SENT;
	}
	pthread_mutex_unlock(&w->mtx);
	if (rv != 0)
		snprintf(w->why, sizeof(w->why), "out of memory");
	return rv;
}

/* Writes what it can; 0 when all is written or the socket is full. */
static int
wire_flush(struct wire *w)
{
	while (w->woff < w->wlen) {
		/* after WANT_WRITE, mbedTLS must be called again with the same length */
		size_t n =
		    w->wtry ? w->wtry
			    : (w->wlen - w->woff > WIRE_RECORD ? WIRE_RECORD : w->wlen - w->woff);
		int rv = mbedtls_ssl_write(&w->ssl, w->wbuf + w->woff, n);

		if (rv == MBEDTLS_ERR_SSL_WANT_WRITE || rv == MBEDTLS_ERR_SSL_WANT_READ) {
			w->wtry = n;
			return 0;
		}
		if (rv < 0) {
			wire_tls_error(w->why, sizeof(w->why), "TLS write", rv);
			return -1;
		}
		w->wtry = 0;
		w->woff += (size_t)rv;
	}
	return 0;
}

/* Hands every complete reply in the read buffer to its caller. */
static int
wire_dispatch(struct wire *w)
{
	size_t off = 0, i, bodylen, used;
	const uint8_t *body;
	uint32_t id;
	int rv;

	while ((rv = wire_frame_next(w->rbuf + off, w->rlen - off, w->recv_max, &id, &body,
				     &bodylen, &used, w->why, sizeof(w->why))) == 1) {
		pthread_mutex_lock(&w->mtx);
		for (i = 0; i < WIRE_SLOTS; i++) {
			struct wire_req *r = w->slot[i];

			if (r == NULL || r->state != WIRE_SENT || r->id != id)
				continue;
			r->replylen = bodylen;
			r->reply = malloc(r->replylen ? r->replylen : 1);
			r->rv = r->reply ? WIRE_OK : WIRE_ENOMEM;
			if (r->reply)
				memcpy(r->reply, body, r->replylen);
			r->state = WIRE_DONE;
			pthread_cond_signal(&r->cond);
			break;
		}
		pthread_mutex_unlock(&w->mtx); /* no caller: it gave up; the reply is dropped */
		off += used;
	}
	if (rv < 0)
		return -1;
	if (off > 0) {
		memmove(w->rbuf, w->rbuf + off, w->rlen - off);
		w->rlen -= off;
	}
	return 0;
}

/* Reads until the socket has no more; 0 unless the connection failed. */
static int
wire_read(struct wire *w)
{
	for (;;) {
		int rv;

		if (wire_reserve(&w->rbuf, &w->rcap, w->rlen + WIRE_RECORD) != 0) {
			snprintf(w->why, sizeof(w->why), "out of memory");
			return -1;
		}
		rv = mbedtls_ssl_read(&w->ssl, w->rbuf + w->rlen, w->rcap - w->rlen);
		if (rv == MBEDTLS_ERR_SSL_WANT_READ || rv == MBEDTLS_ERR_SSL_WANT_WRITE)
			return 0;
		if (rv == 0 || rv == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
			snprintf(w->why, sizeof(w->why), "closed by the controller");
			return -1;
		}
		if (rv < 0) {
			wire_tls_error(w->why, sizeof(w->why), "TLS read", rv);
			return -1;
		}
		w->rlen += (size_t)rv;
		if (wire_dispatch(w) != 0)
			return -1;
	}
}

/* Runs one connection until it fails, is recycled or the wire stops. */
static void
wire_serve(struct wire *w)
{
	int readable = 1;

	for (;;) {
		struct pollfd p[2] = {{.fd = w->fd}, {.fd = w->wakefd, .events = POLLIN}};
		int stop, recycle;

		pthread_mutex_lock(&w->mtx);
		stop = w->stopping;
		recycle = w->recycle;
		w->recycle = 0;
		pthread_mutex_unlock(&w->mtx);
		if (stop)
			return;
		if (recycle) {
			snprintf(w->why, sizeof(w->why), "closed by the agent (no answer in time)");
			return;
		}
		if (wire_queue(w) != 0 || wire_flush(w) != 0)
			return;
		if (readable && wire_read(w) != 0)
			return;
		p[0].events = POLLIN | (w->woff < w->wlen ? POLLOUT : 0);
		if (poll(p, 2, -1) < 0 && errno != EINTR) {
			snprintf(w->why, sizeof(w->why), "poll: %s", strerror(errno));
			return;
		}
		if (p[1].revents)
			wire_drain(w);
		readable = (p[0].revents & (POLLIN | POLLERR | POLLHUP)) != 0;
	}
}

/* Sleeps ms, or less when woken to stop. */
static void
wire_pause(struct wire *w, long ms)
{
	int64_t end = time_mono_ms() + ms;

	while (!wire_stopping(w)) {
		struct pollfd p = {.fd = w->wakefd, .events = POLLIN};
		int64_t left = end - time_mono_ms();

		if (left <= 0)
			return;
		if (poll(&p, 1, (int)left) > 0)
			wire_drain(w);
	}
}

static void *
wire_main(void *arg)
{
	struct wire *w = arg;
	long backoff = WIRE_BACKOFF_MIN;
	int failures = 0;

	while (!wire_stopping(w)) {
		w->why[0] = '\0';
		if (wire_connect(w) != 0) {
			if (!wire_stopping(w) && (failures == 0 || failures % 10 == 0))
				log_warnx("channel: cannot connect to %s: %s", w->url,
					  w->why[0] ? w->why : "failed");
			else
				log_debug("channel: cannot connect to %s: %s", w->url, w->why);
			wire_disconnect(w);
			failures++;
		} else {
			failures = 0;
			backoff = WIRE_BACKOFF_MIN;
			pthread_mutex_lock(&w->mtx);
			w->up = 1;
			w->recycle = 0; /* asked for before this connection existed */
			pthread_mutex_unlock(&w->mtx);
			if (w->connected_cb)
				w->connected_cb(w->arg, 1);
			wire_serve(w);
			if (!wire_stopping(w))
				log_info("channel: connection to %s closed: %s", w->url,
					 w->why[0] ? w->why : "?");
			pthread_mutex_lock(&w->mtx);
			w->up = 0;
			pthread_mutex_unlock(&w->mtx);
			wire_disconnect(w);
			if (w->connected_cb)
				w->connected_cb(w->arg, 0);
		}
		if (!wire_stopping(w)) {
			uint32_t r;
			long d = backoff;

			crypto_random(&r, sizeof(r));
			wire_pause(w, d / 2 + (long)(r % (uint32_t)(d / 2 + 1))); /* 50-100% */
			if (failures > 0 && backoff < WIRE_BACKOFF_MAX)
				backoff =
				    backoff * 2 > WIRE_BACKOFF_MAX ? WIRE_BACKOFF_MAX : backoff * 2;
		}
	}
	return NULL;
}

/* Splits tls+tcp://host:port (an IPv6 host in brackets). */
static int
wire_parse_url(struct wire *w, const char *url, char *err, size_t errlen)
{
	const char *p = NULL, *h, *e, *c;

	if (strncmp(url, "tls+tcp://", 10) == 0) {
		p = url + 10;
		w->family = AF_UNSPEC;
	} else if (strncmp(url, "tls+tcp4://", 11) == 0) {
		p = url + 11;
		w->family = AF_INET;
	} else if (strncmp(url, "tls+tcp6://", 11) == 0) {
		p = url + 11;
		w->family = AF_INET6;
	}
	if (p == NULL)
		return err_set(err, errlen, ERR_INVAL,
			       "%s: the controller's address must start "
			       "with tls+tcp://",
			       url);
	if (*p == '[') {
		h = p + 1;
		if ((e = strchr(h, ']')) == NULL || e[1] != ':')
			return err_set(err, errlen, ERR_INVAL, "%s: bad IPv6 address", url);
		c = e + 1;
	} else {
		h = p;
		if ((c = strrchr(p, ':')) == NULL)
			return err_set(err, errlen, ERR_INVAL, "%s: no port", url);
		e = c;
	}
	if (e == h || c[1] == '\0' || strspn(c + 1, "0123456789") != strlen(c + 1) ||
	    strchr(c + 1, '/') != NULL)
		return err_set(err, errlen, ERR_INVAL, "%s: want tls+tcp://host:port", url);
	if ((w->host = strndup(h, (size_t)(e - h))) == NULL || (w->port = strdup(c + 1)) == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	return 0;
}

static int
wire_pem(mbedtls_x509_crt *crt, const char *pem, const char *what, char *err, size_t errlen)
{
	int rv = mbedtls_x509_crt_parse(crt, (const unsigned char *)pem, strlen(pem) + 1);
	char text[160];

	if (rv == 0)
		return 0;
	mbedtls_strerror(rv, text, sizeof(text));
	return err_set(err, errlen, ERR_CRYPTO, "TLS configuration: %s: %s", what, text);
}

int
wire_new(const struct wire_config *cfg, struct wire **out, char *err, size_t errlen)
{
	static const char pers[] = "stoke-agent wire";
	struct wire *w;
	pthread_attr_t attr;
	char text[160];
	int rv;

	*out = NULL;
	if ((w = calloc(1, sizeof(*w))) == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	w->fd = w->wakefd = -1;
	pthread_mutex_init(&w->mtx, NULL);
	mbedtls_entropy_init(&w->entropy);
	mbedtls_ctr_drbg_init(&w->drbg);
	mbedtls_ssl_config_init(&w->conf);
	mbedtls_x509_crt_init(&w->ca);
	mbedtls_x509_crt_init(&w->crt);
	mbedtls_pk_init(&w->key);
	w->recv_max = cfg->recv_max;
	w->connected_cb = cfg->connected_cb;
	w->arg = cfg->arg;
	crypto_random(&w->next_id, sizeof(w->next_id));
	if ((rv = wire_parse_url(w, cfg->url, err, errlen)) != 0)
		goto fail;
	if ((w->url = strdup(cfg->url)) == NULL ||
	    (w->server_name = strdup(cfg->server_name ? cfg->server_name : "")) == NULL) {
		rv = err_set(err, errlen, ERR_NOMEM, "out of memory");
		goto fail;
	}
	if ((rv = wire_pem(&w->ca, cfg->ca_pem, "ca_file", err, errlen)) != 0 ||
	    (rv = wire_pem(&w->crt, cfg->cert_pem, "cert_file", err, errlen)) != 0)
		goto fail;
	if ((rv = mbedtls_pk_parse_key(&w->key, (const unsigned char *)cfg->key_pem,
				       strlen(cfg->key_pem) + 1, NULL, 0)) != 0) {
		mbedtls_strerror(rv, text, sizeof(text));
		rv = err_set(err, errlen, ERR_CRYPTO, "TLS configuration: key_file: %s", text);
		goto fail;
	}
	if ((rv = mbedtls_ctr_drbg_seed(&w->drbg, mbedtls_entropy_func, &w->entropy,
					(const unsigned char *)pers, sizeof(pers) - 1)) != 0 ||
	    (rv = mbedtls_ssl_config_defaults(&w->conf, MBEDTLS_SSL_IS_CLIENT,
					      MBEDTLS_SSL_TRANSPORT_STREAM,
					      MBEDTLS_SSL_PRESET_DEFAULT)) != 0 ||
	    (rv = mbedtls_ssl_conf_own_cert(&w->conf, &w->crt, &w->key)) != 0) {
		mbedtls_strerror(rv, text, sizeof(text));
		rv = err_set(err, errlen, ERR_CRYPTO, "TLS configuration: %s", text);
		goto fail;
	}
	mbedtls_ssl_conf_rng(&w->conf, mbedtls_ctr_drbg_random, &w->drbg);
	mbedtls_ssl_conf_ca_chain(&w->conf, &w->ca, NULL);
	mbedtls_ssl_conf_authmode(&w->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
	mbedtls_ssl_conf_min_version(&w->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
				     MBEDTLS_SSL_MINOR_VERSION_3); /* TLS 1.2 */
	if ((w->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
		rv = err_set(err, errlen, ERR_IO, "eventfd: %s", strerror(errno));
		goto fail;
	}
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	rv = pthread_create(&w->thread, &attr, wire_main, w);
	pthread_attr_destroy(&attr);
	if (rv != 0) {
		rv = err_set(err, errlen, ERR_IO, "cannot start a thread: %s", strerror(rv));
		goto fail;
	}
	w->started = 1;
	*out = w;
	return 0;
fail:
	wire_free(w);
	return rv ? rv : ERR_IO;
}

int
wire_call(struct wire *w, int slot, const void *msg, size_t len, long timeout_ms, uint8_t **reply,
	  size_t *replylen)
{
	struct wire_req r = {.msg = msg, .len = len, .state = WIRE_QUEUED};
	pthread_condattr_t ca;
	struct timespec ts;
	int rv;

	*reply = NULL;
	*replylen = 0;
	if (slot < 0 || slot >= WIRE_SLOTS || len > SIZE_MAX - 16)
		return WIRE_EINVAL;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&r.cond, &ca);
	pthread_condattr_destroy(&ca);
	time_deadline(CLOCK_MONOTONIC, timeout_ms, &ts);
	pthread_mutex_lock(&w->mtx);
	if (w->closed[slot] || w->stopping || w->slot[slot] != NULL) {
		rv = w->slot[slot] != NULL && !w->closed[slot] ? WIRE_EINVAL : WIRE_ECLOSED;
		pthread_mutex_unlock(&w->mtx);
		pthread_cond_destroy(&r.cond);
		return rv;
	}
	r.id = 0x80000000u | w->next_id++;
	w->slot[slot] = &r;
	pthread_mutex_unlock(&w->mtx);
	wire_poke(w);
	pthread_mutex_lock(&w->mtx);
	while (r.state != WIRE_DONE)
		if (pthread_cond_timedwait(&r.cond, &w->mtx, &ts) == ETIMEDOUT &&
		    r.state != WIRE_DONE) {
			r.rv = WIRE_ETIMEDOUT;
			break;
		}
	w->slot[slot] = NULL;
	pthread_mutex_unlock(&w->mtx);
	pthread_cond_destroy(&r.cond);
	if (r.rv == WIRE_OK) {
		*reply = r.reply;
		*replylen = r.replylen;
	} else {
		free(r.reply);
	}
	return r.rv;
}

int
wire_connected(struct wire *w)
{
	int up;

	pthread_mutex_lock(&w->mtx);
	up = w->up;
	pthread_mutex_unlock(&w->mtx);
	return up;
}

void
wire_recycle(struct wire *w)
{
	pthread_mutex_lock(&w->mtx);
	w->recycle = 1;
	pthread_mutex_unlock(&w->mtx);
	wire_poke(w);
}

void
wire_close_slot(struct wire *w, int slot)
{
	struct wire_req *r;

	if (slot < 0 || slot >= WIRE_SLOTS)
		return;
	pthread_mutex_lock(&w->mtx);
	w->closed[slot] = 1;
	if ((r = w->slot[slot]) != NULL && r->state != WIRE_DONE) {
		r->state = WIRE_DONE;
		r->rv = WIRE_ECLOSED;
		pthread_cond_signal(&r->cond);
	}
	pthread_mutex_unlock(&w->mtx);
}

void
wire_free(struct wire *w)
{
	int i;

	if (w == NULL)
		return;
	for (i = 0; i < WIRE_SLOTS; i++)
		wire_close_slot(w, i);
	pthread_mutex_lock(&w->mtx);
	w->stopping = 1;
	pthread_mutex_unlock(&w->mtx);
	if (w->started) {
		wire_poke(w);
		pthread_join(w->thread, NULL);
	}
	wire_disconnect(w);
	if (w->wakefd >= 0)
		close(w->wakefd);
	mbedtls_pk_free(&w->key);
	mbedtls_x509_crt_free(&w->crt);
	mbedtls_x509_crt_free(&w->ca);
	mbedtls_ssl_config_free(&w->conf);
	mbedtls_ctr_drbg_free(&w->drbg);
	mbedtls_entropy_free(&w->entropy);
	pthread_mutex_destroy(&w->mtx);
	free(w->wbuf);
	free(w->rbuf);
	free(w->url);
	free(w->server_name);
	free(w->host);
	free(w->port);
	free(w);
}
