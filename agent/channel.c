/*
 * channel.c: the agent's channel to the controller (see channel.h). The poll loop is
 * the only reader of commands; handlers run in detached threads and share one output
 * slot of the wire (wire.c, the transport), guarded by a mutex, on which every chunk and
 * result is retried until the controller acknowledges it.
 */
#include "channel.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent_config.h"
#include "atomicfile.h"
#include "cmd.h"
#include "crypto.h"
#include "dedup.h"
#include "err.h"
#include "log.h"
#include "timeutil.h"
#include "wire.h"

#define CHANNEL_PROTOCOL 1
#define CHANNEL_MSG_MAX (1024 * 1024)
#define CHANNEL_CHUNK (32 * 1024)
#define CHANNEL_MAX_RUNNING 256
/* How long the next poll waits for the commands just received to end, so that their
 * results (and output) ride in it: a quick command then costs one exchange instead of
 * three. 250 ms, not less: on a busy machine a quick command can take longer than 50 ms
 * from receipt to exit, and each one that missed the window cost the agent and the
 * controller two more exchanges (1000 agents: 0.84-1.05 s against 0.93-1.22 s). What it
 * delays: the acknowledgement of a long command, and its first output, by that much. */
#define CHANNEL_GATHER_MS 250
/* Output that rides in a poll: per stream of one command, and for the whole poll. */
#define CHANNEL_GATHER_CHUNK CHANNEL_CHUNK
#define CHANNEL_GATHER_BYTES (256 * 1024)
#define CHANNEL_IDLE_MS 10000 /* how long a handler thread waits for another command */
/* The wire's slots (nng's contexts): the poll, and output chunks and results. */
#define CHANNEL_SLOT_POLL 0
#define CHANNEL_SLOT_OUT 1

struct channel_running {
	uint64_t id;
	atomic_int cancel;
};

struct channel {
	const struct agent_config *cfg;
	struct wire *wire;
	pthread_mutex_t out_mtx;
	pthread_mutex_t mtx; /* acks, running, results, started, gathering */
	pthread_cond_t cond; /* a result was gathered */
	char *secret;
	char session[33]; /* random per start (Poll.session) */
	struct dedup *dedup;
	uint64_t *acks;
	size_t nacks, capacks;
	struct channel_running *running[CHANNEL_MAX_RUNNING];
	atomic_int hello;	 /* a new connection: say hello with facts */
	atomic_uint features;	 /* what the controller accepts (Feature mask) */
	int gathering;		 /* the next poll has not gone out: results wait for it */
	size_t started;		 /* commands started since the last poll went out */
	Stoke__Result **results; /* gathered for the next poll */
	size_t nresults, capresults;
	Stoke__OutputChunk **outputs; /* their last output, gathered with them */
	size_t noutputs, capoutputs, gathered_bytes;
	atomic_int stopping;
	atomic_int threads; /* commands being handled */
	/* Handler threads are kept a while after their command (CHANNEL_IDLE_MS) and take
	 * the next one: a new thread per command cost its creation and a fresh stack. */
	pthread_mutex_t pool_mtx;
	pthread_cond_t pool_cond;
	struct channel_job *pool_head, *pool_tail; /* handed over, not yet taken */
	int pool_idle, pool_queued, pool_threads, pool_stop;
};

struct channel_worker_start {
	struct channel *ch;
	struct channel_job *job; /* its first, or NULL */
};

struct channel_job {
	struct channel_job *next; /* in the pool's queue */
	struct channel *ch;
	Stoke__Command *cmd; /* owned (unpacked) */
	Stoke__Envelope *env;
	struct channel_running *run;
};

/* Output of one command, buffered per stream so chunks carry whole lines. */
struct channel_sink {
	struct channel *ch;
	uint64_t id;
	uint64_t seq;
	char *part[3];
	size_t partlen[3];
	int hold; /* young command: output is kept, to ride with the result if it ends soon */
};

static void
channel_connected_cb(void *arg, int up)
{
	struct channel *ch = arg;

	if (up) {
		atomic_store(&ch->hello, 1);
		log_info("channel: connected to %s", ch->cfg->controller);
	}
}

/*
 * A request that got no answer in time on a connection that looks open: the controller
 * always answers (a parked poll within agent_park), so the connection is dead without the
 * kernel having noticed yet. Closing it makes the wire connect again; what was not
 * acknowledged is sent again on the new one.
 */
static void
channel_recycle(struct channel *ch, const char *what)
{
	log_warnx("channel: no answer to %s from %s: closing the connection to make a new one",
		  what, ch->cfg->controller);
	wire_recycle(ch->wire);
}

/* Sends an envelope on slot and waits for the reply (timeout_ms). *reply is unpacked. */
static int
channel_call(struct channel *ch, int slot, Stoke__Envelope *env, long timeout_ms,
	     Stoke__Envelope **reply)
{
	size_t n = stoke__envelope__get_packed_size(env), rlen;
	uint8_t *m, *r;
	int rv;

	*reply = NULL;
	if ((m = malloc(n ? n : 1)) == NULL)
		return WIRE_ENOMEM;
	stoke__envelope__pack(env, m);
	rv = wire_call(ch->wire, slot, m, n, timeout_ms, &r, &rlen);
	free(m);
	if (rv != 0)
		return rv;
	*reply = stoke__envelope__unpack(NULL, rlen, r);
	free(r);
	if (*reply == NULL)
		return WIRE_EINVAL;
	if ((*reply)->protocol_version != CHANNEL_PROTOCOL) {
		log_warnx("channel: controller speaks protocol %u, this agent %d",
			  (*reply)->protocol_version, CHANNEL_PROTOCOL);
		stoke__envelope__free_unpacked(*reply, NULL);
		*reply = NULL;
		return WIRE_EINVAL;
	}
	return 0;
}

static long
channel_backoff(int failures)
{
	long d = 100, cap = 30000;
	uint32_t r;
	int i;

	for (i = 0; i < failures && d < cap; i++)
		d *= 2;
	if (d > cap)
		d = cap;
	crypto_random(&r, sizeof(r));
	return d / 2 + (long)(r % (uint32_t)(d / 2 + 1)); /* jitter: 50-100% */
}

/* Sleeps ms, or less when the channel is stopping. */
static void
channel_sleep(struct channel *ch, long ms)
{
	int64_t end = time_mono_ms() + ms;

	while (!atomic_load(&ch->stopping) && time_mono_ms() < end)
		time_sleep_ms(50);
}

/* Sends an output chunk or result until the controller acknowledges it. */
static int
channel_deliver(struct channel *ch, Stoke__Envelope *env)
{
	Stoke__Envelope *reply;
	int rv, failures = 0;

	pthread_mutex_lock(&ch->out_mtx);
	for (;;) {
		rv = channel_call(ch, CHANNEL_SLOT_OUT, env, 30000, &reply);
		if (rv == 0 && reply->body_case == STOKE__ENVELOPE__BODY_ACK) {
			stoke__envelope__free_unpacked(reply, NULL);
			break;
		}
		if (rv == 0 && reply->body_case == STOKE__ENVELOPE__BODY_REFUSED)
			log_warnx("channel: controller refused output: %s", reply->refused->reason);
		if (rv == WIRE_ETIMEDOUT && wire_connected(ch->wire))
			channel_recycle(ch, "output");
		if (reply)
			stoke__envelope__free_unpacked(reply, NULL);
		if (atomic_load(&ch->stopping) > 1) {
			pthread_mutex_unlock(&ch->out_mtx);
			return -1;
		}
		/* After a timeout the wait was the pause (the request stays queued while there
		 * is no connection, and goes out as soon as there is one). */
		if (rv != WIRE_ETIMEDOUT)
			channel_sleep(ch, channel_backoff(failures++));
	}
	pthread_mutex_unlock(&ch->out_mtx);
	return 0;
}

static void
channel_send_chunk(struct channel_sink *k, enum cmd_stream stream, const char *data, size_t len)
{
	Stoke__Envelope env = STOKE__ENVELOPE__INIT;
	Stoke__OutputChunk o = STOKE__OUTPUT_CHUNK__INIT;

	env.protocol_version = CHANNEL_PROTOCOL;
	env.body_case = STOKE__ENVELOPE__BODY_OUTPUT;
	env.output = &o;
	o.agent_id = k->ch->cfg->agent_id;
	o.secret = k->ch->secret;
	o.command_id = k->id;
	o.seq = ++k->seq;
	o.stream = stream == CMD_STDERR	  ? STOKE__STREAM_KIND__STREAM_STDERR
		   : stream == CMD_SYSTEM ? STOKE__STREAM_KIND__STREAM_SYSTEM
					  : STOKE__STREAM_KIND__STREAM_STDOUT;
	o.data.data = (uint8_t *)data;
	o.data.len = len;
	channel_deliver(k->ch, &env);
}

/* Sends every complete line buffered for stream (all of it when flush). */
static void
channel_sink_flush(struct channel_sink *k, int stream, int flush)
{
	char *p = k->part[stream];
	size_t len = k->partlen[stream], off = 0, n;

	while (off < len) {
		const char *nl;

		n = len - off > CHANNEL_CHUNK ? CHANNEL_CHUNK : len - off;
		/* cut after the last newline that fits, unless one line is longer than a chunk */
		nl = memrchr(p + off, '\n', n);
		if (nl)
			n = (size_t)(nl - (p + off)) + 1;
		else if (len - off <= CHANNEL_CHUNK && !flush)
			break;
		channel_send_chunk(k, (enum cmd_stream)stream, p + off, n);
		off += n;
	}
	if (off > 0 && off < len)
		memmove(p, p + off, len - off);
	k->partlen[stream] = len - off;
}

static void
channel_output_cb(void *arg, enum cmd_stream stream, const char *data, size_t len)
{
	struct channel_sink *k = arg;
	int s = stream == CMD_STDERR ? 1 : stream == CMD_SYSTEM ? 2 : 0;
	char *np;

	if (len == 0)
		return;
	np = realloc(k->part[s], k->partlen[s] + len);
	if (np == NULL)
		return;
	k->part[s] = np;
	memcpy(np + k->partlen[s], data, len);
	k->partlen[s] += len;
	if (k->hold && k->partlen[s] <= CHANNEL_GATHER_CHUNK)
		return;
	k->hold = 0;
	for (s = 0; s < 3; s++)
		channel_sink_flush(k, s, 0);
}

/* The command is no longer young: what was held goes out now, and what comes later at once. */
static void
channel_tick_cb(void *arg)
{
	struct channel_sink *k = arg;
	int s;

	if (!k->hold)
		return;
	k->hold = 0;
	for (s = 0; s < 3; s++)
		channel_sink_flush(k, s, 0);
}

static void
channel_result_free(Stoke__Result *r)
{
	if (r == NULL)
		return;
	if (r->error != protobuf_c_empty_string)
		free(r->error);
	if (r->result_json != protobuf_c_empty_string)
		free(r->result_json);
	free(r);
}

/* A copy of a result to send in a poll, or NULL when out of memory. */
static Stoke__Result *
channel_result_new(uint64_t id, const struct cmd_result *r, uint64_t last_seq, uint64_t duration_ms)
{
	Stoke__Result *res = malloc(sizeof(*res));

	if (res == NULL)
		return NULL;
	stoke__result__init(res);
	res->command_id = id;
	res->exit_code = r->exit_code;
	res->signal = r->signal;
	res->duration_ms = duration_ms;
	res->last_seq = last_seq;
	if ((r->error[0] && (res->error = strdup(r->error)) == NULL) ||
	    (r->result_json && r->result_json[0] &&
	     (res->result_json = strdup(r->result_json)) == NULL)) {
		channel_result_free(res);
		return NULL;
	}
	return res;
}

static void
channel_chunk_free(Stoke__OutputChunk *o)
{
	if (o == NULL)
		return;
	free(o->data.data);
	free(o);
}

/* Room for want more elements (of size bytes) in a gathered array holding n of *cap: the
 * array, moved if it grew, or NULL when it cannot grow (the old one stays valid). */
static void *
channel_gather_room(void *arr, size_t n, size_t *cap, size_t want, size_t size)
{
	void *na;
	size_t c;

	if (n + want <= *cap)
		return arr;
	c = *cap ? *cap : 8;
	while (c < n + want)
		c *= 2;
	if (c > 4096 || (na = realloc(arr, c * size)) == NULL)
		return NULL;
	*cap = c;
	return na;
}

/*
 * Hands a result, and the output the sink k still holds (when k is not NULL), to the poll
 * about to go out; 0 when there is none to take them (nothing is taken then: the caller
 * sends the output and the result on the output slot).
 */
static int
channel_gather(struct channel *ch, uint64_t id, const struct cmd_result *r, uint64_t last_seq,
	       uint64_t duration_ms, struct channel_sink *k)
{
	Stoke__OutputChunk *o[3] = {NULL, NULL, NULL};
	unsigned features = atomic_load(&ch->features);
	Stoke__Result *res = NULL;
	size_t bytes = 0, no = 0, i;
	void *room;
	int s, taken = 0;

	if (!(features & STOKE__FEATURE__FEATURE_POLL_RESULTS) || r->facts != NULL ||
	    atomic_load(&ch->stopping))
		return 0;
	for (s = 0; k != NULL && s < 3; s++) {
		if (k->partlen[s] == 0)
			continue;
		if (!(features & STOKE__FEATURE__FEATURE_POLL_OUTPUT) ||
		    k->partlen[s] > CHANNEL_GATHER_CHUNK)
			return 0;
		bytes += k->partlen[s];
	}
	pthread_mutex_lock(&ch->mtx);
	if (!ch->gathering || ch->gathered_bytes + bytes > CHANNEL_GATHER_BYTES)
		goto out;
	if ((room = channel_gather_room(ch->results, ch->nresults, &ch->capresults, 1,
					sizeof(*ch->results))) == NULL)
		goto out;
	ch->results = room;
	if ((room = channel_gather_room(ch->outputs, ch->noutputs, &ch->capoutputs, 3,
					sizeof(*ch->outputs))) == NULL)
		goto out;
	ch->outputs = room;
	for (s = 0; k != NULL && s < 3; s++) {
		if (k->partlen[s] == 0)
			continue;
		if ((o[no] = calloc(1, sizeof(*o[no]))) == NULL)
			goto out;
		stoke__output_chunk__init(o[no]);
		o[no]->command_id = id;
		o[no]->stream = s == 1	 ? STOKE__STREAM_KIND__STREAM_STDERR
				: s == 2 ? STOKE__STREAM_KIND__STREAM_SYSTEM
					 : STOKE__STREAM_KIND__STREAM_STDOUT;
		o[no]->data.data = (uint8_t *)k->part[s]; /* taken below, once all is well */
		o[no]->data.len = k->partlen[s];
		no++;
	}
	if ((res = channel_result_new(id, r, last_seq + no, duration_ms)) == NULL)
		goto out;
	for (i = 0, s = 0; k != NULL && s < 3; s++) {
		if (k->partlen[s] == 0)
			continue;
		o[i]->seq = ++k->seq;
		ch->outputs[ch->noutputs++] = o[i++];
		k->part[s] = NULL;
		k->partlen[s] = 0;
	}
	ch->gathered_bytes += bytes;
	ch->results[ch->nresults++] = res;
	pthread_cond_signal(&ch->cond);
	taken = 1;
out:
	pthread_mutex_unlock(&ch->mtx);
	if (!taken) {
		for (i = 0; i < no; i++)
			free(o[i]); /* their data is still the sink's */
		channel_result_free(res);
	}
	return taken;
}

static void
channel_result(struct channel *ch, uint64_t id, const struct cmd_result *r, uint64_t last_seq,
	       uint64_t duration_ms)
{
	Stoke__Envelope env = STOKE__ENVELOPE__INIT;
	Stoke__Result res = STOKE__RESULT__INIT;

	if (channel_gather(ch, id, r, last_seq, duration_ms, NULL))
		return; /* dedup_done once the poll carrying it is answered */

	env.protocol_version = CHANNEL_PROTOCOL;
	env.body_case = STOKE__ENVELOPE__BODY_RESULT;
	env.result = &res;
	res.agent_id = ch->cfg->agent_id;
	res.secret = ch->secret;
	res.command_id = id;
	res.exit_code = r->exit_code;
	res.signal = r->signal;
	res.error = (char *)r->error;
	res.duration_ms = duration_ms;
	res.last_seq = last_seq;
	res.result_json = r->result_json ? r->result_json : "";
	res.facts = r->facts;
	if (channel_deliver(ch, &env) == 0)
		dedup_done(ch->dedup, id);
}

static void
channel_running_del(struct channel *ch, struct channel_running *run)
{
	size_t i;

	pthread_mutex_lock(&ch->mtx);
	for (i = 0; i < CHANNEL_MAX_RUNNING; i++)
		if (ch->running[i] == run)
			ch->running[i] = NULL;
	pthread_mutex_unlock(&ch->mtx);
}

static void
channel_job_run(struct channel_job *j)
{
	struct channel *ch = j->ch;
	const struct cmd_kind *k = cmd_lookup(j->cmd->kind_case);
	int64_t t0 = time_mono_ms();
	struct channel_sink sink = {
	    .ch = ch,
	    .id = j->cmd->id,
	    .hold = (atomic_load(&ch->features) & STOKE__FEATURE__FEATURE_POLL_OUTPUT) != 0};
	struct cmd_ctx ctx = {.cfg = ch->cfg,
			      .command_id = j->cmd->id,
			      .output = channel_output_cb,
			      .output_arg = &sink,
			      .cancel = &j->run->cancel,
			      .tick = channel_tick_cb,
			      .tick_at = t0 + CHANNEL_GATHER_MS};
	struct cmd_result r;
	uint64_t duration;
	int s;

	cmd_result_init(&r);
	if (k == NULL) {
		r.exit_code = -1;
		snprintf(r.error, sizeof(r.error), "this agent does not know command kind %d",
			 (int)j->cmd->kind_case);
	} else {
		log_info("command %llu [%s]: started", (unsigned long long)j->cmd->id, k->name);
		k->run(&ctx, j->cmd, &r);
	}
	log_info("command %llu [%s]: exit %d%s%s", (unsigned long long)j->cmd->id,
		 k ? k->name : "?", r.exit_code, r.error[0] ? ": " : "", r.error);
	duration = (uint64_t)(time_mono_ms() - t0);
	/* A quick command's output and result ride in the next poll; else the output goes
	 * first, then the result (which may still ride in a poll). */
	if (!channel_gather(ch, j->cmd->id, &r, sink.seq, duration, &sink)) {
		for (s = 0; s < 3; s++)
			channel_sink_flush(&sink, s, 1);
		channel_result(ch, j->cmd->id, &r, sink.seq, duration);
	} /* else dedup_done once the poll carrying it is answered */
	cmd_result_fini(&r);
	for (s = 0; s < 3; s++)
		free(sink.part[s]);
	channel_running_del(ch, j->run);
	free(j->run);
	stoke__envelope__free_unpacked(j->env, NULL);
	free(j);
	atomic_fetch_sub(&ch->threads, 1);
}

/* A handler thread: runs its first job (if any), then the jobs handed over while it is
 * idle, and ends after CHANNEL_IDLE_MS without one, unless it is the last one (or when the
 * channel stops). */
static void *
channel_worker_main(void *arg)
{
	struct channel_worker_start *ws = arg;
	struct channel_job *j = ws->job;
	struct channel *ch = ws->ch;
	struct timespec ts;

	free(ws);
	for (;;) {
		if (j != NULL)
			channel_job_run(j);
		pthread_mutex_lock(&ch->pool_mtx);
		ch->pool_idle++;
		time_deadline(CLOCK_REALTIME, CHANNEL_IDLE_MS, &ts);
		while ((j = ch->pool_head) == NULL && !ch->pool_stop)
			if (pthread_cond_timedwait(&ch->pool_cond, &ch->pool_mtx, &ts) ==
			    ETIMEDOUT) {
				if (ch->pool_threads > 1)
					break;
				/* the last one stays, so a command never waits for a thread */
				time_deadline(CLOCK_REALTIME, CHANNEL_IDLE_MS, &ts);
			}
		if ((j = ch->pool_head) != NULL) {
			if ((ch->pool_head = j->next) == NULL)
				ch->pool_tail = NULL;
			ch->pool_queued--;
		}
		ch->pool_idle--;
		if (j == NULL) {
			ch->pool_threads--;
			pthread_cond_broadcast(&ch->pool_cond); /* channel_free waits for this */
			pthread_mutex_unlock(&ch->pool_mtx);
			return NULL;
		}
		pthread_mutex_unlock(&ch->pool_mtx);
	}
}

/* Starts a handler thread with its first job j (NULL: none); 0 on success. */
static int
channel_worker_new(struct channel *ch, struct channel_job *j)
{
	struct channel_worker_start *ws = malloc(sizeof(*ws));
	pthread_attr_t attr;
	pthread_t t;
	int rv;

	if (ws == NULL)
		return ENOMEM;
	ws->ch = ch;
	ws->job = j;
	pthread_mutex_lock(&ch->pool_mtx);
	ch->pool_threads++;
	pthread_mutex_unlock(&ch->pool_mtx);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	rv = pthread_create(&t, &attr, channel_worker_main, ws);
	pthread_attr_destroy(&attr);
	if (rv != 0) {
		free(ws);
		pthread_mutex_lock(&ch->pool_mtx);
		ch->pool_threads--;
		pthread_mutex_unlock(&ch->pool_mtx);
	}
	return rv;
}

/* Hands j to an idle handler thread, or starts a new one; 0 on success. */
static int
channel_dispatch(struct channel *ch, struct channel_job *j)
{
	pthread_mutex_lock(&ch->pool_mtx);
	if (ch->pool_idle > ch->pool_queued) {
		j->next = NULL;
		if (ch->pool_tail)
			ch->pool_tail->next = j;
		else
			ch->pool_head = j;
		ch->pool_tail = j;
		ch->pool_queued++;
		pthread_cond_signal(&ch->pool_cond);
		pthread_mutex_unlock(&ch->pool_mtx);
		return 0;
	}
	pthread_mutex_unlock(&ch->pool_mtx);
	return channel_worker_new(ch, j);
}

static void
channel_ack_add(struct channel *ch, uint64_t id)
{
	pthread_mutex_lock(&ch->mtx);
	if (ch->nacks == ch->capacks) {
		size_t cap = ch->capacks ? ch->capacks * 2 : 16;
		uint64_t *na = realloc(ch->acks, cap * sizeof(*na));

		if (na) {
			ch->acks = na;
			ch->capacks = cap;
		}
	}
	if (ch->nacks < ch->capacks)
		ch->acks[ch->nacks++] = id;
	pthread_mutex_unlock(&ch->mtx);
}

/* Handles one command from a poll reply; takes ownership of env. */
static void
channel_command(struct channel *ch, Stoke__Envelope *env)
{
	Stoke__Command *cmd = env->command;
	struct channel_job *j;
	size_t i;
	int fresh;

	if (cmd->kind_case == STOKE__COMMAND__KIND_NOOP || cmd->id == 0) {
		stoke__envelope__free_unpacked(env, NULL);
		return;
	}
	channel_ack_add(ch, cmd->id);
	if ((fresh = dedup_receive(ch->dedup, cmd->id)) != 1) {
		if (fresh == 0)
			log_info("command %llu: already received; not running it again",
				 (unsigned long long)cmd->id);
		stoke__envelope__free_unpacked(env, NULL);
		return;
	}
	if (cmd->kind_case == STOKE__COMMAND__KIND_CANCEL_ID) {
		struct cmd_result r;
		int found = 0;

		pthread_mutex_lock(&ch->mtx);
		for (i = 0; i < CHANNEL_MAX_RUNNING; i++)
			if (ch->running[i] && ch->running[i]->id == cmd->cancel_id) {
				atomic_store(&ch->running[i]->cancel, 1);
				found = 1;
			}
		pthread_mutex_unlock(&ch->mtx);
		pthread_mutex_lock(&ch->mtx);
		ch->started++;
		pthread_mutex_unlock(&ch->mtx);
		cmd_result_init(&r);
		if (!found) {
			r.exit_code = 1;
			snprintf(r.error, sizeof(r.error), "command %llu is not running",
				 (unsigned long long)cmd->cancel_id);
		}
		channel_result(ch, cmd->id, &r, 0, 0);
		cmd_result_fini(&r);
		stoke__envelope__free_unpacked(env, NULL);
		return;
	}
	j = calloc(1, sizeof(*j));
	if (j == NULL || (j->run = calloc(1, sizeof(*j->run))) == NULL) {
		free(j);
		stoke__envelope__free_unpacked(env, NULL);
		return;
	}
	j->ch = ch;
	j->env = env;
	j->cmd = cmd;
	j->run->id = cmd->id;
	pthread_mutex_lock(&ch->mtx);
	for (i = 0; i < CHANNEL_MAX_RUNNING; i++)
		if (ch->running[i] == NULL) {
			ch->running[i] = j->run;
			break;
		}
	ch->started++;
	pthread_mutex_unlock(&ch->mtx);
	atomic_fetch_add(&ch->threads, 1);
	if (channel_dispatch(ch, j) != 0) {
		log_warn("command %llu: cannot start a thread", (unsigned long long)cmd->id);
		atomic_fetch_sub(&ch->threads, 1);
		pthread_mutex_lock(&ch->mtx);
		ch->started--;
		pthread_mutex_unlock(&ch->mtx);
		channel_running_del(ch, j->run);
		free(j->run);
		free(j);
		stoke__envelope__free_unpacked(env, NULL);
	}
}

static char *
channel_read(const char *path, const char *what, char *err, size_t errlen)
{
	char *text = NULL;
	size_t n;

	if (path == NULL || path[0] == '\0') {
		err_set(err, errlen, ERR_INVAL, "%s: not set in the configuration", what);
		return NULL;
	}
	if (atomicfile_read(path, 1 << 20, &text, &n, err, errlen) != 0)
		return NULL;
	return text;
}

int
channel_start(const struct agent_config *cfg, struct channel **out, char *err, size_t errlen)
{
	struct channel *ch;
	char *ca = NULL, *crt = NULL, *key = NULL;
	uint64_t unfinished[256];
	size_t nu, i;
	int rv = 0;

	*out = NULL;
	if ((ch = calloc(1, sizeof(*ch))) == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	ch->cfg = cfg;
	/* The first poll is a hello, whether or not the pipe callback has run yet. */
	atomic_store(&ch->hello, 1);
	pthread_mutex_init(&ch->out_mtx, NULL);
	pthread_mutex_init(&ch->mtx, NULL);
	pthread_cond_init(&ch->cond, NULL);
	pthread_mutex_init(&ch->pool_mtx, NULL);
	pthread_cond_init(&ch->pool_cond, NULL);
	if (cfg->agent_id == NULL || cfg->agent_id[0] == '\0' || cfg->controller == NULL ||
	    cfg->controller[0] == '\0') {
		rv = err_set(err, errlen, ERR_INVAL, "controller and agent_id must be set");
		goto fail;
	}
	if ((ca = channel_read(cfg->ca_file, "ca_file", err, errlen)) == NULL ||
	    (crt = channel_read(cfg->cert_file, "cert_file", err, errlen)) == NULL ||
	    (key = channel_read(cfg->key_file, "key_file", err, errlen)) == NULL ||
	    (ch->secret = channel_read(cfg->secret_file, "secret_file", err, errlen)) == NULL) {
		rv = ERR_IO;
		goto fail;
	}
	ch->secret[strcspn(ch->secret, "\r\n")] = '\0';
	{
		uint8_t r[16];

		crypto_random(r, sizeof(r));
		for (size_t k = 0; k < sizeof(r); k++)
			snprintf(ch->session + 2 * k, 3, "%02x", r[k]);
	}
	if ((rv = dedup_open(cfg->state_dir, &ch->dedup, err, errlen)) != 0)
		goto fail;
	{
		struct wire_config wc = {.url = cfg->controller,
					 .server_name = cfg->server_name,
					 .ca_pem = ca,
					 .cert_pem = crt,
					 .key_pem = key,
					 .recv_max = CHANNEL_MSG_MAX + 4096,
					 .connected_cb = channel_connected_cb,
					 .arg = ch};

		if ((rv = wire_new(&wc, &ch->wire, err, errlen)) != 0)
			goto fail;
	}
	/* One handler thread waits from the start: the first command does not pay for it. */
	if (channel_worker_new(ch, NULL) != 0)
		log_warnx("channel: cannot start a handler thread yet");
	free(ca);
	free(crt);
	explicit_bzero(key, strlen(key));
	free(key);
	*out = ch;
	/* Commands that were running when the agent last stopped: their outcome is unknown,
	 * and they must not run again. Say so. */
	nu = dedup_unfinished(ch->dedup, unfinished, 256);
	for (i = 0; i < nu; i++) {
		struct cmd_result r;

		cmd_result_init(&r);
		r.exit_code = -1;
		snprintf(r.error, sizeof(r.error),
			 "the agent stopped while this command ran; its outcome is unknown");
		log_warnx("command %llu: %s", (unsigned long long)unfinished[i], r.error);
		channel_result(ch, unfinished[i], &r, 0, 0);
		cmd_result_fini(&r);
	}
	return 0;
fail:
	free(ca);
	free(crt);
	if (key)
		explicit_bzero(key, strlen(key));
	free(key);
	channel_free(ch);
	return rv ? rv : ERR_IO;
}

/* What the next poll carries: results, and output of their commands. */
struct channel_carry {
	Stoke__Result **results;
	size_t nresults;
	Stoke__OutputChunk **output;
	size_t noutput;
};

static void
channel_carry_clear(struct channel_carry *cy)
{
	size_t i;

	for (i = 0; i < cy->nresults; i++)
		channel_result_free(cy->results[i]);
	for (i = 0; i < cy->noutput; i++)
		channel_chunk_free(cy->output[i]);
	cy->nresults = cy->noutput = 0;
}

/* Waits (up to CHANNEL_GATHER_MS) for the commands started since the last poll to end,
 * then closes the gathering and moves what it gathered to cy. */
static void
channel_gather_close(struct channel *ch, struct channel_carry *cy)
{
	int64_t end = time_mono_ms() + CHANNEL_GATHER_MS;
	Stoke__OutputChunk **no;
	Stoke__Result **nc;
	size_t i;

	pthread_mutex_lock(&ch->mtx);
	while (ch->gathering && ch->nresults < ch->started && !atomic_load(&ch->stopping)) {
		int64_t left = end - time_mono_ms();
		struct timespec ts;

		if (left <= 0)
			break;
		time_deadline(CLOCK_REALTIME, (long)left, &ts);
		pthread_cond_timedwait(&ch->cond, &ch->mtx, &ts);
	}
	ch->gathering = 0;
	ch->started = 0;
	if (ch->nresults > 0 &&
	    (nc = realloc(cy->results, (cy->nresults + ch->nresults) * sizeof(*nc))) != NULL) {
		for (i = 0; i < ch->nresults; i++)
			nc[cy->nresults++] = ch->results[i];
		cy->results = nc;
		ch->nresults = 0;
	}
	/* Output only with the results of its commands: if they could not be moved, it
	 * waits with them for the next poll. */
	if (ch->noutputs > 0 && ch->nresults == 0 &&
	    (no = realloc(cy->output, (cy->noutput + ch->noutputs) * sizeof(*no))) != NULL) {
		for (i = 0; i < ch->noutputs; i++)
			no[cy->noutput++] = ch->outputs[i];
		cy->output = no;
		ch->noutputs = 0;
		ch->gathered_bytes = 0;
	}
	pthread_mutex_unlock(&ch->mtx);
}

void
channel_run(struct channel *ch)
{
	Stoke__Envelope env = STOKE__ENVELOPE__INIT, *reply;
	Stoke__Poll poll = STOKE__POLL__INIT;
	struct channel_carry cy = {NULL, 0, NULL, 0};
	struct cmd_result facts;
	uint64_t *acks = NULL;
	size_t i;
	int failures = 0, silent = 0, rv;

	while (!atomic_load(&ch->stopping)) {
		channel_gather_close(ch, &cy);
		env.protocol_version = CHANNEL_PROTOCOL;
		env.body_case = STOKE__ENVELOPE__BODY_POLL;
		env.poll = &poll;
		poll.agent_id = ch->cfg->agent_id;
		poll.secret = ch->secret;
		poll.version = STOKE_VERSION;
		poll.session = ch->session;
		poll.results = cy.results;
		poll.n_results = cy.nresults;
		poll.output = cy.output;
		poll.n_output = cy.noutput;
		pthread_mutex_lock(&ch->mtx);
		free(acks);
		acks = ch->acks;
		poll.n_ack_command_ids = ch->nacks;
		poll.ack_command_ids = acks;
		ch->acks = NULL;
		ch->nacks = ch->capacks = 0;
		pthread_mutex_unlock(&ch->mtx);
		cmd_result_init(&facts);
		poll.hello = atomic_exchange(&ch->hello, 0);
		poll.facts = NULL;
		if (poll.hello) {
			cmd_facts(NULL, NULL, &facts);
			poll.facts = facts.facts;
		}
		rv = channel_call(ch, CHANNEL_SLOT_POLL, &env, 40000, &reply);
		cmd_result_fini(&facts);
		if (rv != 0) {
			/* Not delivered: keep the acks, results and hello for the next poll. */
			for (i = 0; i < poll.n_ack_command_ids; i++)
				channel_ack_add(ch, acks[i]);
			if (poll.hello)
				atomic_store(&ch->hello, 1);
			if (atomic_load(&ch->stopping))
				break;
			if (rv != WIRE_ETIMEDOUT) {
				log_debug("channel: poll: %s", wire_strerror(rv));
				channel_sleep(ch, channel_backoff(failures++));
			} else if (!wire_connected(ch->wire)) {
				silent = 0; /* still connecting: the poll waits for it */
			} else if (++silent >= 3) {
				/* three polls in a row unanswered: each is answered within
				 * agent_park (25 s) while the connection lives */
				channel_recycle(ch, "three polls");
				silent = 0;
			}
			continue;
		}
		failures = 0;
		silent = 0;
		/* Answered: the controller stored the results before it replied. */
		for (i = 0; i < cy.nresults; i++)
			dedup_done(ch->dedup, cy.results[i]->command_id);
		channel_carry_clear(&cy);
		atomic_store(&ch->features, reply->features);
		pthread_mutex_lock(&ch->mtx);
		ch->gathering = 1;
		pthread_mutex_unlock(&ch->mtx);
		switch (reply->body_case) {
		case STOKE__ENVELOPE__BODY_COMMAND:
			channel_command(ch, reply);
			break;
		case STOKE__ENVELOPE__BODY_REFUSED:
			log_warnx("channel: the controller refused this agent: %s",
				  reply->refused->reason);
			stoke__envelope__free_unpacked(reply, NULL);
			channel_sleep(ch, channel_backoff(8));
			break;
		default:
			stoke__envelope__free_unpacked(reply, NULL);
		}
	}
	free(acks);
	/* Stopping. Results still carried are those of a poll that failed: the controller is
	 * not answering, so they are not waited for (the controller times those commands
	 * out). Results of commands still running go the ordinary way (channel_free waits
	 * for them a moment). */
	pthread_mutex_lock(&ch->mtx);
	ch->gathering = 0;
	pthread_mutex_unlock(&ch->mtx);
	channel_gather_close(ch, &cy);
	for (i = 0; i < cy.nresults; i++)
		log_warnx("command %llu: result not delivered before stopping",
			  (unsigned long long)cy.results[i]->command_id);
	channel_carry_clear(&cy);
	free(cy.results);
	free(cy.output);
}

void
channel_stop(struct channel *ch)
{
	atomic_store(&ch->stopping, 1);
	if (ch->wire)
		wire_close_slot(ch->wire, CHANNEL_SLOT_POLL);
}

void
channel_free(struct channel *ch)
{
	int64_t end = time_mono_ms() + 3000;

	if (ch == NULL)
		return;
	/* Give running commands a moment to deliver their results. */
	while (atomic_load(&ch->threads) > 0 && time_mono_ms() < end)
		time_sleep_ms(20);
	atomic_store(&ch->stopping, 2);
	if (ch->wire)
		wire_close_slot(ch->wire, CHANNEL_SLOT_OUT);
	while (atomic_load(&ch->threads) > 0 && time_mono_ms() < end + 2000)
		time_sleep_ms(20);
	if (atomic_load(&ch->threads) > 0) {
		/* a handler still runs and may still touch the channel: the process is
		 * about to exit, so leave it allocated */
		log_warnx("channel: %d command(s) still running at exit",
			  atomic_load(&ch->threads));
		return;
	}
	/* Idle handler threads end now; they touch the channel until they do. */
	pthread_mutex_lock(&ch->pool_mtx);
	ch->pool_stop = 1;
	pthread_cond_broadcast(&ch->pool_cond);
	while (ch->pool_threads > 0) {
		struct timespec ts;

		time_deadline(CLOCK_REALTIME, 1000, &ts);
		if (pthread_cond_timedwait(&ch->pool_cond, &ch->pool_mtx, &ts) == ETIMEDOUT)
			break;
	}
	if (ch->pool_threads > 0) {
		pthread_mutex_unlock(&ch->pool_mtx);
		return; /* about to exit: leave it allocated */
	}
	pthread_mutex_unlock(&ch->pool_mtx);
	wire_free(ch->wire);
	dedup_close(ch->dedup);
	if (ch->secret)
		explicit_bzero(ch->secret, strlen(ch->secret));
	free(ch->secret);
	free(ch->acks);
	for (size_t i = 0; i < ch->nresults; i++)
		channel_result_free(ch->results[i]);
	free(ch->results);
	for (size_t i = 0; i < ch->noutputs; i++)
		channel_chunk_free(ch->outputs[i]);
	free(ch->outputs);
	pthread_cond_destroy(&ch->cond);
	pthread_cond_destroy(&ch->pool_cond);
	pthread_mutex_destroy(&ch->pool_mtx);
	free(ch);
}
