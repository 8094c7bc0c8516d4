/*
 * hub.c: the agent channel on the controller. nng callbacks only move received
 * messages to a queue; the hub thread authenticates them, stores output and results in
 * batched transactions, parks polls, dispatches queued commands, times out parked polls
 * and marks silent agents offline. Delivery is at-least-once; the agent de-duplicates.
 */
#include "hub.h"
#include "keys.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/tls/tls.h>

#include "agentcmd.h"
#include "commands.h"
#include "ca.h"
#include "crypto.h"
#include "err.h"
#include "events.h"
#include "log.h"
#include "sm.h"
#include "store.h"
#include "stoke.pb-c.h"
#include "timeutil.h"

#define HUB_PROTOCOL 1
#define HUB_MSG_MAX (1024 * 1024)
/* Output sequence numbers an agent may use: a line's key is seq << 16 | line, in 63 bits. */
#define HUB_SEQ_MAX ((uint64_t)1 << 40)

/* How often a polling agent's last_seen is written: well inside the offline threshold. */
#define HUB_SEEN_MS(h) ((h)->opts.offline_ms / 12 < 5000 ? (h)->opts.offline_ms / 12 : 5000)
#define HUB_MIN_IDLE 8
#define HUB_MAX_CTX 8192
#define HUB_MAX_BINDINGS 8192

enum hub_state { HUB_RECV, HUB_HELD, HUB_SEND };

struct hub_ctx {
	struct hub *h;
	nng_ctx ctx;
	nng_aio *aio;
	enum hub_state state;
	nng_msg *msg;
	uint32_t pipe;
	int64_t server_id; /* parked for this server, or 0 */
	int64_t parked_at;
	int carried; /* its poll carried results not committed yet */
	struct hub_ctx *qnext;
};

struct hub_pending {
	struct hub_ctx *c;
	uint8_t *buf;
	size_t n;
	int64_t parked_for; /* a command for the poll parked for this server; 0: an ack */
};

struct hub_binding {
	uint32_t pipe;
	int64_t server_id;
};

struct hub {
	struct hub_opts opts;
	nng_socket sock;
	nng_listener listener;
	nng_tls_config *tls;
	unsigned port;
	pthread_t thread;
	pthread_mutex_t mtx;
	pthread_cond_t cond;
	struct hub_ctx *queue, **qtail; /* received messages, for the hub thread */
	uint32_t removed[256];		/* pipes removed, for the hub thread */
	size_t nremoved;
	int dispatch; /* hub_notify was called */
	atomic_int stopping;
	struct hub_ctx *ctxs[HUB_MAX_CTX];
	size_t nctx;
	int idle; /* contexts in HUB_RECV */
	struct hub_binding bind[HUB_MAX_BINDINGS];
	size_t nbind;
	struct store *s;
	/* the round in progress (hub thread only) */
	int in_txn, txn_failed, redispatch;
	size_t txn_msgs;
	int64_t txn_lines, txn_start;
	struct hub_pending *pend;
	size_t npend, cappend;
	struct hub_ctx **carried; /* polls of this round that carried results */
	size_t ncarried, capcarried;
};

static struct hub *hub_current;
static pthread_mutex_t hub_current_mtx = PTHREAD_MUTEX_INITIALIZER;

static void hub_cb(void *arg);

static void
hub_wake(struct hub *h)
{
	pthread_cond_signal(&h->cond);
}

void
hub_notify(void)
{
	pthread_mutex_lock(&hub_current_mtx);
	if (hub_current) {
		pthread_mutex_lock(&hub_current->mtx);
		hub_current->dispatch = 1;
		hub_wake(hub_current);
		pthread_mutex_unlock(&hub_current->mtx);
	}
	pthread_mutex_unlock(&hub_current_mtx);
}

/* Adds a context receiving on the socket. Called with h->mtx held. */
static int
hub_ctx_add(struct hub *h)
{
	struct hub_ctx *c;

	if (h->nctx == HUB_MAX_CTX)
		return -1;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return -1;
	c->h = h;
	if (nng_ctx_open(&c->ctx, h->sock) != 0 || nng_aio_alloc(&c->aio, hub_cb, c) != 0) {
		free(c);
		return -1;
	}
	h->ctxs[h->nctx++] = c;
	c->state = HUB_RECV;
	h->idle++;
	nng_ctx_recv(c->ctx, c->aio);
	return 0;
}

static void
hub_cb(void *arg)
{
	struct hub_ctx *c = arg;
	struct hub *h = c->h;
	int rv = nng_aio_result(c->aio);

	pthread_mutex_lock(&h->mtx);
	if (c->state == HUB_SEND) {
		if (rv != 0) {
			nng_msg *m = nng_aio_get_msg(c->aio);

			if (m)
				nng_msg_free(m);
		}
		if (rv == NNG_ECLOSED || atomic_load(&h->stopping)) {
			pthread_mutex_unlock(&h->mtx);
			return;
		}
		c->state = HUB_RECV;
		h->idle++;
		nng_ctx_recv(c->ctx, c->aio);
		pthread_mutex_unlock(&h->mtx);
		return;
	}
	/* HUB_RECV */
	if (rv != 0) {
		if (rv != NNG_ECLOSED && !atomic_load(&h->stopping))
			nng_ctx_recv(c->ctx, c->aio);
		pthread_mutex_unlock(&h->mtx);
		return;
	}
	c->msg = nng_aio_get_msg(c->aio);
	c->pipe = nng_pipe_id(nng_msg_get_pipe(c->msg));
	c->state = HUB_HELD;
	h->idle--;
	c->qnext = NULL;
	*h->qtail = c;
	h->qtail = &c->qnext;
	hub_wake(h);
	pthread_mutex_unlock(&h->mtx);
}

static void
hub_pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	struct hub *h = arg;

	if (ev != NNG_PIPE_EV_REM_POST)
		return;
	pthread_mutex_lock(&h->mtx);
	if (h->nremoved < sizeof(h->removed) / sizeof(h->removed[0]))
		h->removed[h->nremoved++] = nng_pipe_id(p);
	hub_wake(h);
	pthread_mutex_unlock(&h->mtx);
}

/* Sends body on a held context; frees nothing of the caller's. */
static void
hub_reply(struct hub_ctx *c, const void *data, size_t len)
{
	nng_msg *m;

	c->server_id = 0;
	if (c->msg) {
		nng_msg_free(c->msg);
		c->msg = NULL;
	}
	if (nng_msg_alloc(&m, 0) != 0 || nng_msg_append(m, data, len) != 0) {
		log_warnx("hub: out of memory replying");
		pthread_mutex_lock(&c->h->mtx);
		c->state = HUB_RECV;
		c->h->idle++;
		nng_ctx_recv(c->ctx, c->aio);
		pthread_mutex_unlock(&c->h->mtx);
		return;
	}
	pthread_mutex_lock(&c->h->mtx);
	c->state = HUB_SEND;
	nng_aio_set_msg(c->aio, m);
	nng_ctx_send(c->ctx, c->aio);
	pthread_mutex_unlock(&c->h->mtx);
}

/* Drops the request without answering (the context receives again). */
static void
hub_drop(struct hub_ctx *c)
{
	if (c->msg) {
		nng_msg_free(c->msg);
		c->msg = NULL;
	}
	c->server_id = 0;
	pthread_mutex_lock(&c->h->mtx);
	c->state = HUB_RECV;
	c->h->idle++;
	nng_ctx_recv(c->ctx, c->aio);
	pthread_mutex_unlock(&c->h->mtx);
}

static void
hub_reply_env(struct hub_ctx *c, Stoke__Envelope *env)
{
	size_t n = stoke__envelope__get_packed_size(env);
	uint8_t *buf = malloc(n ? n : 1);

	if (buf == NULL) {
		hub_drop(c);
		return;
	}
	stoke__envelope__pack(env, buf);
	hub_reply(c, buf, n);
	free(buf);
}

static void
hub_reply_noop(struct hub_ctx *c)
{
	uint8_t *buf;
	size_t n;
	char err[128];

	if (agentcmd_pack(0, NULL, NULL, &buf, &n, err, sizeof(err)) != 0) {
		hub_drop(c);
		return;
	}
	hub_reply(c, buf, n);
	free(buf);
}

static void
hub_reply_refused(struct hub_ctx *c, const char *reason)
{
	Stoke__Envelope env = STOKE__ENVELOPE__INIT;
	Stoke__Refused r = STOKE__REFUSED__INIT;

	env.protocol_version = HUB_PROTOCOL;
	env.body_case = STOKE__ENVELOPE__BODY_REFUSED;
	env.refused = &r;
	r.reason = (char *)reason;
	hub_reply_env(c, &env);
}

/* ---- bindings: which pipe speaks for which server ---- */

static int64_t
hub_bound(struct hub *h, uint32_t pipe)
{
	size_t i;

	for (i = 0; i < h->nbind; i++)
		if (h->bind[i].pipe == pipe)
			return h->bind[i].server_id;
	return 0;
}

static void
hub_bind(struct hub *h, uint32_t pipe, int64_t server_id)
{
	if (hub_bound(h, pipe) != 0 || h->nbind == HUB_MAX_BINDINGS)
		return;
	h->bind[h->nbind].pipe = pipe;
	h->bind[h->nbind].server_id = server_id;
	h->nbind++;
}

static int64_t
hub_unbind(struct hub *h, uint32_t pipe)
{
	size_t i;
	int64_t id;

	for (i = 0; i < h->nbind; i++)
		if (h->bind[i].pipe == pipe) {
			id = h->bind[i].server_id;
			h->bind[i] = h->bind[--h->nbind];
			return id;
		}
	return 0;
}

static int
hub_server_has_pipe(struct hub *h, int64_t server_id)
{
	size_t i;

	for (i = 0; i < h->nbind; i++)
		if (h->bind[i].server_id == server_id)
			return 1;
	return 0;
}

/* What hub_auth read of the server besides its id (so a poll need not read it again). */
struct hub_seen {
	int64_t last_seen; /* 0 when never */
	int online;
};

/* Checks agent id and secret; returns the server id, 0 when refused (reason set). seen
 * (may be NULL) gets the server's presence. */
static int64_t
hub_auth(struct hub *h, struct hub_ctx *c, const char *agent_id, const char *secret,
	 const char **reason, struct hub_seen *seen)
{
	struct store_stmt *st;
	char hash[65];
	int64_t id = 0, revoked = 0, bound;
	int ok = 0;

	*reason = NULL;
	if (agent_id == NULL || secret == NULL || agent_id[0] == '\0' || strlen(agent_id) > 64)
		return 0;
	crypto_sha256_hex(secret, hash);
	st = store_query(h->s,
			 "SELECT id, agent_secret_hash, agent_revoked, coalesce(last_seen, 0),"
			 " agent_status = 'online' FROM servers WHERE agent_id = ? AND"
			 " state != 'deleted'",
			 "s", agent_id);
	if (st && store_step(st) == STORE_ROW) {
		if (seen != NULL) {
			seen->last_seen = store_col_int(st, 3);
			seen->online = store_col_int(st, 4) != 0;
		}
		const char *want = store_col_text(st, 1);

		id = store_col_int(st, 0);
		revoked = store_col_int(st, 2);
		ok = want && strlen(want) == 64 && crypto_memeq(want, hash, 64);
	}
	store_finalize(st);
	if (!ok) {
		log_warnx("hub: refused a message for agent %.64s on connection %u: %s", agent_id,
			  c->pipe, id ? "wrong secret" : "unknown agent");
		return 0;
	}
	if (revoked) {
		log_warnx("hub: refused agent %s (server %lld): revoked", agent_id, (long long)id);
		*reason = "agent revoked";
		return 0;
	}
	bound = hub_bound(h, c->pipe);
	if (bound != 0 && bound != id) {
		log_warnx("hub: connection %u is bound to server %lld but spoke for %lld; closing",
			  c->pipe, (long long)bound, (long long)id);
		{
			nng_pipe p = nng_msg_get_pipe(c->msg);

			nng_pipe_close(p);
		}
		return 0;
	}
	if (bound == 0)
		hub_bind(h, c->pipe, id);
	return id;
}

static void
hub_presence(struct hub *h, int64_t server_id, const char *status)
{
	char data[64];

	if (store_exec(h->s,
		       "UPDATE servers SET agent_status = ?, updated_at = ? WHERE id = ? AND"
		       " agent_status != ?",
		       "siis", status, store_now_ms(), server_id, status) == 0 &&
	    store_changes(h->s) > 0) {
		snprintf(data, sizeof(data), "{\"status\":\"%s\"}", status);
		events_emit(h->s, "system", "agent.presence", "server", server_id, data);
		log_info("hub: server %lld agent %s", (long long)server_id, status);
	}
}

static char *
hub_facts_json(const Stoke__Facts *f)
{
	json_t *o = json_pack("{s:s, s:s, s:s, s:i, s:I, s:I, s:I, s:f, s:I}", "hostname",
			      f->hostname ? f->hostname : "", "os", f->os ? f->os : "", "kernel",
			      f->kernel ? f->kernel : "", "cpus", (int)f->cpus, "memory_bytes",
			      (json_int_t)f->memory_bytes, "disk_bytes", (json_int_t)f->disk_bytes,
			      "disk_free_bytes", (json_int_t)f->disk_free_bytes, "load1", f->load1,
			      "uptime_s", (json_int_t)f->uptime_s);
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;

	json_decref(o);
	return s;
}

/* ---- rounds: one write transaction, then the replies ---- */

/*
 * Everything the hub writes in one pass over received messages (polls, output, results,
 * commands handed out) goes in one transaction: one commit for hundreds of agents instead
 * of several each. Replies that depend on what was written (acknowledgements, commands)
 * wait in h->pend until the commit, so an agent never hears of something not stored.
 */
#define HUB_ROUND_MSGS 512    /* messages per transaction */
#define HUB_ROUND_LINES 50000 /* output lines per transaction */
#define HUB_ROUND_MS 50	      /* longest a round holds the write lock */

static int
hub_round_begin(struct hub *h)
{
	if (h->in_txn)
		return 0;
	if (store_begin(h->s) != 0) {
		log_warnx("hub: cannot begin a transaction: %s", store_errmsg(h->s));
		return -1;
	}
	h->in_txn = 1;
	h->txn_failed = 0;
	h->txn_lines = 0;
	h->txn_msgs = 0;
	h->txn_start = time_mono_ms();
	return 0;
}

/* Queues a reply to send once the round commits. Takes buf. */
static void
hub_pend(struct hub *h, struct hub_ctx *c, uint8_t *buf, size_t n, int64_t parked_for)
{
	if (h->npend == h->cappend) {
		size_t cap = h->cappend ? h->cappend * 2 : 256;
		struct hub_pending *p = realloc(h->pend, cap * sizeof(*p));

		if (p == NULL) {
			free(buf);
			h->txn_failed = 1; /* nothing of this round is promised */
			hub_drop(c);
			return;
		}
		h->pend = p;
		h->cappend = cap;
	}
	c->server_id = 0; /* taken: no other dispatch may use it */
	h->pend[h->npend].c = c;
	h->pend[h->npend].buf = buf;
	h->pend[h->npend].n = n;
	h->pend[h->npend].parked_for = parked_for;
	h->npend++;
}

/* Commits the round and sends its replies; on failure, stores nothing and promises
 * nothing: output is not acknowledged (the agent sends it again) and commands stay
 * queued for the next dispatch. */
static void
hub_round_end(struct hub *h)
{
	size_t i;
	int ok;

	if (!h->in_txn)
		return;
	h->in_txn = 0;
	ok = !h->txn_failed && store_commit(h->s) == 0;
	if (!ok) {
		log_warnx("hub: cannot store what agents sent: %s; they will send it again",
			  h->txn_failed ? "a statement failed" : store_errmsg(h->s));
		store_rollback(h->s);
	}
	for (i = 0; i < h->npend; i++) {
		struct hub_pending *p = &h->pend[i];

		if (ok)
			hub_reply(p->c, p->buf, p->n);
		else if (p->parked_for && !p->c->carried) {
			p->c->server_id = p->parked_for; /* still parked; dispatched later */
			h->redispatch = 1;
		} else if (!p->parked_for)
			/* output or a result: not an ack; the agent sends it again after a short
			 * back-off instead of waiting out its reply timeout */
			hub_reply_refused(p->c,
					  "the controller could not store this; send it again");
		else
			hub_drop(p->c);
		free(p->buf);
	}
	h->npend = 0;
	/* A poll that carried results is answered only if they were stored: any answer tells
	 * its agent they were. Not stored: no answer at all, and the agent sends them again. */
	for (i = 0; i < h->ncarried; i++) {
		struct hub_ctx *c = h->carried[i];

		if (!ok && c->state == HUB_HELD && c->carried)
			hub_drop(c);
		c->carried = 0;
	}
	h->ncarried = 0;
	if (ok)
		events_notify();
}

/* Ends the round when it has grown long enough that other writers should get a turn. */
static void
hub_round_maybe_end(struct hub *h)
{
	if (h->in_txn && (h->txn_msgs >= HUB_ROUND_MSGS || h->txn_lines >= HUB_ROUND_LINES ||
			  time_mono_ms() - h->txn_start >= HUB_ROUND_MS))
		hub_round_end(h);
}

static int
hub_exec_ok(struct hub *h, int rc)
{
	if (rc != 0)
		h->txn_failed = 1;
	return rc;
}

/* Whether output for command id of server_id may be stored, and how many bytes of it it
 * has: a command of another server, a finished one, a sequence number out of range: no. */
static int
hub_output_allowed(struct hub *h, const Stoke__OutputChunk *o, int64_t server_id, int64_t *bytes)
{
	struct store_stmt *st;
	int ok = 0;

	if (o->seq == 0 || o->seq > HUB_SEQ_MAX) {
		log_warnx("hub: server %lld: output for command %llu with sequence number %llu"
			  " (out of range) ignored",
			  (long long)server_id, (unsigned long long)o->command_id,
			  (unsigned long long)o->seq);
		return 0;
	}
	st = store_query(h->s,
			 "SELECT state, output_bytes FROM commands WHERE id = ? AND server_id = ?",
			 "ii", (int64_t)o->command_id, server_id);
	if (st != NULL && store_step(st) == STORE_ROW) {
		const char *state = store_col_text(st, 0);

		*bytes = store_col_int(st, 1);
		/* An agent sends a command's output before its result: output that comes after
		 * the command ended (or was cancelled, or given up as offline) is not its own. */
		ok = strcmp(state, "done") != 0 && strcmp(state, "failed") != 0 &&
		     strcmp(state, "cancelled") != 0 && strcmp(state, "offline") != 0;
	}
	store_finalize(st);
	return ok;
}

/* Stores one output chunk (idempotent: lines are keyed by command and sequence number); a
 * chunk for a command that is not this agent's, or finished, is ignored; past output_max
 * bytes a command's output is cut with a marker line. */
static void
hub_store_output(struct hub *h, const Stoke__OutputChunk *o, int64_t server_id)
{
	int64_t now = store_now_ms();
	const char *stream = o->stream == STOKE__STREAM_KIND__STREAM_STDERR   ? "stderr"
			     : o->stream == STOKE__STREAM_KIND__STREAM_SYSTEM ? "system"
									      : "stdout";
	const char *p = (const char *)o->data.data, *end = p + o->data.len, *nl;
	struct store_stmt *ins;
	int64_t line = 0, bytes = 0, added = 0, room;
	int cut = 0;

	if (!hub_output_allowed(h, o, server_id, &bytes))
		return;
	if (bytes > h->opts.output_max)
		return; /* cut already, marker stored */
	room = h->opts.output_max - bytes;
	if ((int64_t)o->data.len > room) {
		end = p + room;
		cut = 1;
	}
	/* one statement, bound again for each line */
	ins = store_query(h->s,
			  "INSERT OR IGNORE INTO output_lines (owner_kind, owner_id, seq,"
			  " stream, time, text) VALUES ('command', ?, ?, ?, ?, ?)",
			  "");
	if (ins == NULL)
		h->txn_failed = 1;
	while (ins != NULL && p < end && line < 0xffff) {
		nl = memchr(p, '\n', (size_t)(end - p));
		if (store_rebind(ins, "iisit", (int64_t)o->command_id,
				 ((int64_t)o->seq << 16) | line, stream, now, p,
				 (size_t)(nl ? nl - p : end - p)) != 0 ||
		    store_step(ins) != STORE_DONE)
			h->txn_failed = 1;
		else if (store_changes(h->s) > 0) /* a chunk sent again is not counted twice */
			added += (nl ? nl + 1 : end) - p;
		line++;
		p = nl ? nl + 1 : end;
	}
	if (ins != NULL && cut) {
		char mark[96];
		int n =
		    snprintf(mark, sizeof(mark), "[stoke: output cut here: more than %lld bytes]",
			     (long long)h->opts.output_max);

		if (store_rebind(ins, "iisit", (int64_t)o->command_id,
				 ((int64_t)o->seq << 16) | 0xffff, "system", now, mark,
				 (size_t)n) != 0 ||
		    store_step(ins) != STORE_DONE)
			h->txn_failed = 1;
		log_warnx("hub: server %lld: command %llu: output cut at %lld bytes",
			  (long long)server_id, (unsigned long long)o->command_id,
			  (long long)h->opts.output_max);
	}
	store_finalize(ins);
	h->txn_lines += line;
	/* A cut command's count goes past the limit: nothing more is stored for it. */
	hub_exec_ok(h, store_exec(h->s,
				  "UPDATE commands SET output_bytes = ?, started_at ="
				  " coalesce(started_at, ?), state = CASE WHEN state IN ('sent',"
				  " 'queued') THEN 'running' ELSE state END WHERE id = ?",
				  "iii", cut ? (int64_t)h->opts.output_max + 1 : bytes + added, now,
				  (int64_t)o->command_id));
}

/*
 * An agent says hello from a process (session) other than the one last heard from: it
 * restarted. Commands the old process was sent without acknowledging them (queued again
 * when its connection closed, or not), or was running, end as "outcome unknown": the agent
 * does not flush its journal to disk per command, so after a machine crash it may not know
 * it received them, and sending them again could run them twice. (A command sent again
 * within one session is safe: that process's journal is intact.)
 */
static void
hub_session(struct hub *h, int64_t server_id, const char *session)
{
	static const char unknown[] = "the agent restarted before this command was confirmed "
				      "finished; its outcome is unknown";
	struct store_stmt *st;
	char *old =
	    store_text(h->s, "SELECT agent_session FROM servers WHERE id = ?", "i", server_id);
	int64_t ids[256], now = store_now_ms();
	size_t n = 0, i;

	if (old != NULL && strcmp(old, session) == 0) {
		free(old);
		return;
	}
	hub_exec_ok(h, store_exec(h->s, "UPDATE servers SET agent_session = ? WHERE id = ?", "si",
				  session, server_id));
	if (old == NULL)
		return; /* first hello with a session: nothing was sent to an older one */
	free(old);
	do {
		n = 0;
		st =
		    store_query(h->s,
				"SELECT id FROM commands WHERE server_id = ? AND (state IN ('sent',"
				" 'running') OR (state = 'queued' AND sent_at IS NOT NULL))"
				" LIMIT 256",
				"i", server_id);
		while (st && n < 256 && store_step(st) == STORE_ROW)
			ids[n++] = store_col_int(st, 0);
		store_finalize(st);
		for (i = 0; i < n; i++) {
			hub_exec_ok(h, store_exec(h->s,
						  "UPDATE commands SET state = 'failed', error = ?,"
						  " exit_code = -1, finished_at = ? WHERE id = ?",
						  "sii", unknown, now, ids[i]));
			events_emit(h->s, "system", "command.state", "command", ids[i],
				    "{\"state\":\"failed\",\"exit_code\":-1}");
		}
		if (n > 0)
			log_warnx("hub: server %lld agent restarted: %zu command(s) in flight end "
				  "as outcome unknown",
				  (long long)server_id, n);
	} while (n == 256 && !h->txn_failed);
}

/* Stores a command's result (idempotent: a result already stored changes nothing). */
static void
hub_store_result(struct hub *h, const Stoke__Result *r, int64_t server_id)
{
	int64_t now = store_now_ms();
	int ok = (r->error == NULL || r->error[0] == '\0') && r->exit_code == 0 && r->signal == 0;
	char data[96], *facts = NULL;

	hub_exec_ok(h, store_exec(h->s,
				  "UPDATE commands SET state = ?, exit_code = ?, signal = ?,"
				  " error = ?, result = ?, finished_at = ?, acked = 1,"
				  " started_at = coalesce(started_at, ?) WHERE id = ? AND"
				  " server_id = ? AND state NOT IN ('done', 'failed', 'cancelled')",
				  "sddssiiii", ok ? "done" : "failed", (int)r->exit_code,
				  (int)r->signal, r->error && r->error[0] ? r->error : NULL,
				  r->result_json && r->result_json[0] ? r->result_json : NULL, now,
				  now, (int64_t)r->command_id, server_id));
	if (store_changes(h->s) > 0) {
		snprintf(data, sizeof(data), "{\"state\":\"%s\",\"exit_code\":%d}",
			 ok ? "done" : "failed", (int)r->exit_code);
		events_emit(h->s, "system", "command.state", "command", (int64_t)r->command_id,
			    data);
	}
	if (r->facts && (facts = hub_facts_json(r->facts)) != NULL)
		store_exec(h->s, "UPDATE servers SET facts = ? WHERE id = ?", "si", facts,
			   server_id);
	free(facts);
}

/* Frees a payload that may have held secrets, wiped first. */
static void
hub_wipe(char *p)
{
	if (p != NULL) {
		explicit_bzero(p, strlen(p));
		free(p);
	}
}

/* Hands the next queued command for server_id to the poll parked on c (in the round's
 * transaction). 1 if c was answered or taken, 0 if there is nothing to send. */
static int
hub_send_next(struct hub *h, struct hub_ctx *c, int64_t server_id)
{
	struct store_stmt *st;
	char err[512], *kind = NULL, *payload = NULL;
	int64_t id = 0;
	uint8_t *buf;
	size_t n = 0;
	int opened;

	/* A poll parked before its agent was revoked gets nothing more. */
	if (store_int(h->s, 1, "SELECT agent_revoked FROM servers WHERE id = ?", "i", server_id)) {
		hub_reply_refused(c, "agent revoked");
		return 1;
	}
	for (;;) {
		st = store_query(h->s,
				 "SELECT id, kind, payload, payload_sealed FROM commands WHERE"
				 " server_id = ? AND state = 'queued' ORDER BY id LIMIT 1",
				 "i", server_id);
		id = 0;
		n = 0;
		opened = 0;
		if (st && store_step(st) == STORE_ROW) {
			id = store_col_int(st, 0);
			kind = strdup(store_col_text(st, 1));
			/* a sealed payload is opened only here, to be sent */
			opened = commands_payload_open(store_col_text(st, 2), store_col_text(st, 3),
						       &payload, err, sizeof(err)) == 0;
		}
		store_finalize(st);
		if (id == 0)
			return 0;
		if (kind == NULL) {
			free(kind);
			free(payload);
			h->txn_failed = 1;
			return 0;
		}
		if (opened &&
		    agentcmd_pack((uint64_t)id, kind, payload, &buf, &n, err, sizeof(err)) == 0 &&
		    n <= HUB_MSG_MAX)
			break;
		if (n > HUB_MSG_MAX)
			free(buf);
		hub_exec_ok(h,
			    store_exec(h->s,
				       "UPDATE commands SET state = 'failed', error = ?,"
				       " finished_at = ? WHERE id = ?",
				       "sii", n > HUB_MSG_MAX ? "command too large to send" : err,
				       store_now_ms(), id));
		free(kind);
		hub_wipe(payload);
		kind = payload = NULL;
	}
	hub_exec_ok(h,
		    store_exec(h->s, "UPDATE commands SET state = 'sent', sent_at = ? WHERE id = ?",
			       "ii", store_now_ms(), id));
	events_emit(h->s, "system", "command.state", "command", id, "{\"state\":\"sent\"}");
	log_debug("hub: command %lld [%s] -> server %lld", (long long)id, kind,
		  (long long)server_id);
	hub_pend(h, c, buf, n, server_id);
	free(kind);
	hub_wipe(payload);
	return 1;
}

/* Releases the poll parked for server_id, if any, other than keep. */
static void
hub_unpark(struct hub *h, int64_t server_id, struct hub_ctx *keep)
{
	size_t i;

	for (i = 0; i < h->nctx; i++) {
		struct hub_ctx *c = h->ctxs[i];

		if (c != keep && c->state == HUB_HELD && c->server_id == server_id)
			hub_reply_noop(c);
	}
}

static void
hub_poll(struct hub *h, struct hub_ctx *c, const Stoke__Poll *p)
{
	struct hub_seen seen = {0, 0};
	const char *reason;
	int64_t id = hub_auth(h, c, p->agent_id, p->secret, &reason, &seen), now = store_now_ms();
	char *facts = NULL, *state = NULL, err[256];
	size_t i;

	if (id == 0) {
		if (reason)
			hub_reply_refused(c, reason);
		else
			hub_drop(c);
		return;
	}
	if (p->facts)
		facts = hub_facts_json(p->facts);
	/* last_seen is written at most every HUB_SEEN_MS (each write rewrites the server's
	 * row, facts and all; a fleet run polls once per command); the version and facts come
	 * with a hello. */
	if (facts != NULL || p->hello || now - seen.last_seen >= HUB_SEEN_MS(h))
		store_exec(h->s,
			   "UPDATE servers SET last_seen = ?, agent_version = ?,"
			   " facts = coalesce(?, facts) WHERE id = ?",
			   "issi", now, p->version, facts, id);
	if (!seen.online)
		hub_presence(h, id, "online");
	for (i = 0; i < p->n_ack_command_ids; i++)
		store_exec(h->s,
			   "UPDATE commands SET acked = 1, state = CASE WHEN state = 'sent' THEN"
			   " 'running' ELSE state END, started_at = coalesce(started_at, ?)"
			   " WHERE id = ? AND server_id = ?",
			   "iii", now, (int64_t)p->ack_command_ids[i], id);
	if (p->n_results > 0 || p->n_output > 0) {
		if (h->ncarried == h->capcarried) {
			size_t cap = h->capcarried ? h->capcarried * 2 : 64;
			struct hub_ctx **nc = realloc(h->carried, cap * sizeof(*nc));

			if (nc == NULL) {
				hub_drop(c); /* the agent sends them again */
				return;
			}
			h->carried = nc;
			h->capcarried = cap;
		}
		h->carried[h->ncarried++] = c;
		c->carried = 1;
	}
	if (p->hello && p->session && p->session[0])
		hub_session(h, id, p->session);
	for (i = 0; i < p->n_output; i++)
		hub_store_output(h, p->output[i], id);
	for (i = 0; i < p->n_results; i++)
		hub_store_result(h, p->results[i], id);
	/* Anything sent but not acknowledged by now was lost on the way: send it again. */
	store_exec(h->s,
		   "UPDATE commands SET state = 'queued' WHERE server_id = ? AND state = 'sent'"
		   " AND acked = 0",
		   "i", id);
	if (p->hello) {
		log_info("hub: server %lld agent hello (version %s, connection %u)", (long long)id,
			 p->version, c->pipe);
		sm_check(h->s, &sm_server, id, "agent hello", 1, 1, NULL);
		state = store_text(h->s, "SELECT state FROM servers WHERE id = ?", "i", id);
		if (state && strcmp(state, "installing_agent") == 0 &&
		    sm_transition(h->s, &sm_server, id, "active", "system", err, sizeof(err)) != 0)
			log_warnx("hub: %s", err);
		keys_agent_hello(h->s, id);
	}
	free(facts);
	free(state);
	hub_unpark(h, id, c);
	c->parked_at = time_mono_ms();
	if (hub_send_next(h, c, id))
		return;
	c->server_id = id;
}

/* Stores one output chunk or result in the round's transaction; its ack waits for the
 * commit. */
static void
hub_ingest(struct hub *h, struct hub_ctx *c, Stoke__Envelope *e, int64_t server_id)
{
	Stoke__Envelope env = STOKE__ENVELOPE__INIT;
	Stoke__Ack ack = STOKE__ACK__INIT;
	uint8_t *buf;
	size_t n;

	if (e->body_case == STOKE__ENVELOPE__BODY_OUTPUT) {
		ack.command_id = e->output->command_id;
		ack.seq = e->output->seq;
		hub_store_output(h, e->output, server_id);
	} else {
		ack.command_id = e->result->command_id;
		hub_store_result(h, e->result, server_id);
	}
	env.protocol_version = HUB_PROTOCOL;
	env.body_case = STOKE__ENVELOPE__BODY_ACK;
	env.ack = &ack;
	n = stoke__envelope__get_packed_size(&env);
	if ((buf = malloc(n ? n : 1)) == NULL) {
		h->txn_failed = 1;
		hub_drop(c);
		return;
	}
	stoke__envelope__pack(&env, buf);
	hub_pend(h, c, buf, n, 0);
}

static void
hub_handle_one(struct hub *h, struct hub_ctx *c)
{
	Stoke__Envelope *e;
	const char *reason;
	int64_t id;

	e = stoke__envelope__unpack(NULL, nng_msg_len(c->msg), nng_msg_body(c->msg));
	if (e == NULL) {
		log_warnx("hub: undecodable message on connection %u", c->pipe);
		hub_drop(c);
		return;
	}
	if (e->protocol_version != HUB_PROTOCOL) {
		char why[96];

		snprintf(why, sizeof(why),
			 "protocol version %u not supported (controller speaks %d)",
			 e->protocol_version, HUB_PROTOCOL);
		hub_reply_refused(c, why);
		stoke__envelope__free_unpacked(e, NULL);
		return;
	}
	switch (e->body_case) {
	case STOKE__ENVELOPE__BODY_POLL:
		hub_poll(h, c, e->poll);
		break;
	case STOKE__ENVELOPE__BODY_OUTPUT:
	case STOKE__ENVELOPE__BODY_RESULT:
		id = e->body_case == STOKE__ENVELOPE__BODY_OUTPUT
			 ? hub_auth(h, c, e->output->agent_id, e->output->secret, &reason, NULL)
			 : hub_auth(h, c, e->result->agent_id, e->result->secret, &reason, NULL);
		if (id != 0)
			hub_ingest(h, c, e, id);
		else if (reason)
			hub_reply_refused(c, reason);
		else
			hub_drop(c);
		break;
	default:
		log_warnx("hub: unexpected message on connection %u", c->pipe);
		hub_drop(c);
	}
	stoke__envelope__free_unpacked(e, NULL);
}

/* Handles received messages in rounds of one transaction each. Without a transaction
 * (the database stays locked past the busy timeout) nothing is promised: every message
 * is dropped and its agent sends it again. */
static void
hub_handle_batch(struct hub *h, struct hub_ctx *list)
{
	struct hub_ctx *c, *next;

	for (c = list; c; c = next) {
		next = c->qnext;
		if (hub_round_begin(h) != 0) {
			for (; c; c = next) {
				next = c->qnext;
				hub_drop(c);
			}
			return;
		}
		hub_handle_one(h, c);
		h->txn_msgs++;
		hub_round_maybe_end(h);
	}
}

/* Parked polls that waited long enough get a no-op; silent agents go offline. */
static void
hub_tick(struct hub *h)
{
	int64_t now = time_mono_ms();
	struct store_stmt *st;
	int64_t ids[256];
	size_t i, n = 0;

	for (i = 0; i < h->nctx; i++) {
		struct hub_ctx *c = h->ctxs[i];

		if (c->state == HUB_HELD && c->server_id && now - c->parked_at >= h->opts.park_ms)
			hub_reply_noop(c);
	}
	st = store_query(h->s,
			 "SELECT id FROM servers WHERE agent_status = 'online' AND last_seen < ?",
			 "i", store_now_ms() - h->opts.offline_ms);
	while (st && store_step(st) == STORE_ROW && n < 256)
		ids[n++] = store_col_int(st, 0);
	store_finalize(st);
	for (i = 0; i < n; i++)
		hub_presence(h, ids[i], "offline");
}

/* Every parked poll looks for a queued command, all in rounds of one transaction. */
static void
hub_dispatch(struct hub *h)
{
	size_t i;

	for (i = 0; i < h->nctx; i++) {
		struct hub_ctx *c = h->ctxs[i];

		if (c->state != HUB_HELD || c->server_id == 0)
			continue;
		if (hub_round_begin(h) != 0) {
			h->redispatch = 1;
			return;
		}
		hub_send_next(h, c, c->server_id);
		h->txn_msgs++;
		hub_round_maybe_end(h);
	}
}

static void
hub_pipe_gone(struct hub *h, uint32_t pipe)
{
	int64_t id = hub_unbind(h, pipe);
	size_t i;

	for (i = 0; i < h->nctx; i++) {
		struct hub_ctx *c = h->ctxs[i];

		if (c->state == HUB_HELD && c->pipe == pipe && c->server_id)
			hub_reply_noop(c); /* lost with the connection; frees the context */
	}
	if (id == 0)
		return;
	log_info("hub: server %lld: connection %u closed", (long long)id, pipe);
	store_exec(h->s,
		   "UPDATE commands SET state = 'queued' WHERE server_id = ? AND state = 'sent'"
		   " AND acked = 0",
		   "i", id);
	if (!hub_server_has_pipe(h, id))
		hub_presence(h, id, "offline");
}

static void *
hub_main(void *arg)
{
	struct hub *h = arg;
	struct hub_ctx *list;
	uint32_t removed[256];
	size_t nremoved, i;
	int dispatch;
	int64_t last_tick = 0;
	struct timespec ts;

	h->s = store_thread();
	while (!atomic_load(&h->stopping)) {
		pthread_mutex_lock(&h->mtx);
		if (h->queue == NULL && h->nremoved == 0 && !h->dispatch) {
			time_deadline(CLOCK_REALTIME, 250, &ts);
			pthread_cond_timedwait(&h->cond, &h->mtx, &ts);
		}
		list = h->queue;
		h->queue = NULL;
		h->qtail = &h->queue;
		nremoved = h->nremoved;
		memcpy(removed, h->removed, nremoved * sizeof(removed[0]));
		h->nremoved = 0;
		dispatch = h->dispatch;
		h->dispatch = 0;
		/* Enough contexts receiving that a burst of results from every agent at once
		 * lands in a few rounds rather than waiting eight at a time. */
		while (h->idle < HUB_MIN_IDLE + (int)(h->nbind / 4) && hub_ctx_add(h) == 0)
			;
		pthread_mutex_unlock(&h->mtx);
		if (atomic_load(&h->stopping) || h->s == NULL)
			break;
		if (list)
			hub_handle_batch(h, list);
		hub_round_end(h);
		for (i = 0; i < nremoved; i++)
			hub_pipe_gone(h, removed[i]);
		if (dispatch || h->redispatch) {
			h->redispatch = 0;
			hub_dispatch(h);
			hub_round_end(h);
		}
		if (time_mono_ms() - last_tick >= 1000) {
			hub_tick(h);
			last_tick = time_mono_ms();
		}
	}
	return NULL;
}

int
hub_start(const struct hub_opts *opts, struct hub **out, char *err, size_t errlen)
{
	struct ca_files ca = {0};
	struct hub *h;
	char url[300], host[256];
	const char *colon;
	int rv, port, i;

	*out = NULL;
	if ((colon = strrchr(opts->listen, ':')) == NULL)
		return err_set(err, errlen, ERR_INVAL, "agent listen address %s: need HOST:PORT",
			       opts->listen);
	snprintf(host, sizeof(host), "%.*s", (int)(colon - opts->listen), opts->listen);
	if ((h = calloc(1, sizeof(*h))) == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	h->opts = *opts;
	if (h->opts.park_ms <= 0)
		h->opts.park_ms = 25000;
	if (h->opts.offline_ms <= 0)
		h->opts.offline_ms = 60000;
	if (h->opts.output_max <= 0)
		h->opts.output_max = 64LL << 20;
	h->qtail = &h->queue;
	{
		/* Recursive: nng may finish an aio (and call hub_cb) inside a send. */
		pthread_mutexattr_t ma;

		pthread_mutexattr_init(&ma);
		pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
		pthread_mutex_init(&h->mtx, &ma);
		pthread_mutexattr_destroy(&ma);
	}
	pthread_cond_init(&h->cond, NULL);
	if ((rv = ca_load(opts->data_dir, opts->server_name, &ca, err, errlen)) != 0)
		goto fail;
	if ((rv = nng_tls_config_alloc(&h->tls, NNG_TLS_MODE_SERVER)) != 0 ||
	    (rv = nng_tls_config_own_cert(h->tls, ca.server_crt, ca.server_key, NULL)) != 0 ||
	    (rv = nng_tls_config_ca_chain(h->tls, ca.ca_crt, NULL)) != 0 ||
	    (rv = nng_tls_config_auth_mode(h->tls, NNG_TLS_AUTH_MODE_REQUIRED)) != 0) {
		err_set(err, errlen, ERR_CRYPTO, "agent TLS: %s", nng_strerror(rv));
		goto fail;
	}
	if ((rv = nng_rep0_open(&h->sock)) != 0 ||
	    (rv = nng_socket_set_size(h->sock, NNG_OPT_RECVMAXSZ, HUB_MSG_MAX + 4096)) != 0 ||
	    (rv = nng_pipe_notify(h->sock, NNG_PIPE_EV_REM_POST, hub_pipe_cb, h)) != 0) {
		err_set(err, errlen, ERR_IO, "agent socket: %s", nng_strerror(rv));
		goto fail;
	}
	snprintf(url, sizeof(url), "tls+tcp://%s:%s", host, colon + 1);
	if ((rv = nng_listener_create(&h->listener, h->sock, url)) != 0 ||
	    (rv = nng_listener_set_ptr(h->listener, NNG_OPT_TLS_CONFIG, h->tls)) != 0 ||
	    (rv = nng_listener_set_bool(h->listener, NNG_OPT_TCP_NODELAY, true)) != 0 ||
	    (rv = nng_listener_set_bool(h->listener, NNG_OPT_TCP_KEEPALIVE, true)) != 0 ||
	    (rv = nng_listener_start(h->listener, 0)) != 0) {
		err_set(err, errlen, ERR_IO, "agent listener %s: %s", url, nng_strerror(rv));
		goto fail;
	}
	nng_listener_get_int(h->listener, NNG_OPT_TCP_BOUND_PORT, &port);
	h->port = (unsigned)port;
	pthread_mutex_lock(&h->mtx);
	for (i = 0; i < 16; i++)
		hub_ctx_add(h);
	pthread_mutex_unlock(&h->mtx);
	/* Commands sent before a restart and never acknowledged go out again. */
	{
		struct store *s = store_thread();

		if (s)
			store_exec(s,
				   "UPDATE commands SET state = 'queued' WHERE state = 'sent' AND"
				   " acked = 0",
				   "");
		if (s)
			store_exec(
			    s,
			    "UPDATE servers SET agent_status = 'offline' WHERE agent_status ="
			    " 'online'",
			    "");
	}
	if (pthread_create(&h->thread, NULL, hub_main, h) != 0) {
		err_set(err, errlen, ERR_INTERNAL, "hub thread");
		goto fail;
	}
	pthread_mutex_lock(&hub_current_mtx);
	hub_current = h;
	pthread_mutex_unlock(&hub_current_mtx);
	ca_files_fini(&ca);
	log_info("hub: agents connect to tls+tcp://%s:%u (certificate name %s)", host, h->port,
		 opts->server_name);
	*out = h;
	return 0;
fail:
	ca_files_fini(&ca);
	nng_close(h->sock);
	if (h->tls)
		nng_tls_config_free(h->tls);
	free(h);
	return rv ? (rv > 0 && rv < ERR__COUNT ? rv : ERR_IO) : ERR_IO;
}

unsigned
hub_port(const struct hub *h)
{
	return h->port;
}

void
hub_stop(struct hub *h)
{
	size_t i;

	if (h == NULL)
		return;
	pthread_mutex_lock(&hub_current_mtx);
	if (hub_current == h)
		hub_current = NULL;
	pthread_mutex_unlock(&hub_current_mtx);
	atomic_store(&h->stopping, 1);
	pthread_mutex_lock(&h->mtx);
	hub_wake(h);
	pthread_mutex_unlock(&h->mtx);
	pthread_join(h->thread, NULL);
	nng_close(h->sock);
	for (i = 0; i < h->nctx; i++) {
		nng_aio_stop(h->ctxs[i]->aio);
		nng_aio_free(h->ctxs[i]->aio);
		if (h->ctxs[i]->msg)
			nng_msg_free(h->ctxs[i]->msg);
		free(h->ctxs[i]);
	}
	nng_tls_config_free(h->tls);
	free(h->pend);
	free(h->carried);
	pthread_mutex_destroy(&h->mtx);
	pthread_cond_destroy(&h->cond);
	free(h);
}
