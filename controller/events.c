/*
 * events.c: the audit trail and live feed. Rows go into the events table in the
 * caller's transaction; a process-wide condition variable wakes SSE readers, who
 * then read the table themselves. Does not format SSE (api_events.c does).
 */
#include "events.h"

#include <pthread.h>
#include <time.h>

#include "log.h"
#include "store.h"
#include "timeutil.h"

static pthread_mutex_t events_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t events_cond = PTHREAD_COND_INITIALIZER;
static int64_t events_seen;
static uint64_t events_generation;

/* The newest event id this thread wrote in the transaction it has open. */
static __thread int64_t events_pending;

static void
events_publish(int64_t id)
{
	pthread_mutex_lock(&events_mtx);
	if (id > events_seen)
		events_seen = id;
	events_generation++;
	pthread_cond_broadcast(&events_cond);
	pthread_mutex_unlock(&events_mtx);
}

/* After a commit of a transaction that emitted events (store_after_commit). */
static void
events_commit_cb(void)
{
	events_publish(events_pending);
	events_pending = 0;
}

int
events_emit(struct store *s, const char *actor, const char *kind, const char *resource_kind,
	    int64_t resource_id, const char *data_json)
{
	int64_t id;

	if (store_exec(s,
		       "INSERT INTO events (time, actor, kind, resource_kind, resource_id, data)"
		       " VALUES (?, ?, ?, ?, ?, ?)",
		       "isssis", store_now_ms(), actor ? actor : "system", kind, resource_kind,
		       resource_kind ? resource_id : (int64_t)0,
		       data_json ? data_json : "{}") != 0) {
		log_warnx("events: cannot record %s: %s", kind, store_errmsg(s));
		return -1;
	}
	id = store_last_id(s);
	/* Readers learn of the row (events_last_id) and are woken once it is committed:
	 * told before, they could read, find nothing new, and sleep through the commit. */
	store_set_after_commit(events_commit_cb);
	if (store_after_commit(s)) {
		if (id > events_pending)
			events_pending = id;
	} else
		events_publish(id);
	return 0;
}

void
events_notify(void)
{
	pthread_mutex_lock(&events_mtx);
	events_generation++;
	pthread_cond_broadcast(&events_cond);
	pthread_mutex_unlock(&events_mtx);
}

int
events_wait(int64_t after_id, long timeout_ms)
{
	struct timespec ts;
	uint64_t gen;
	int woken = 0;

	time_deadline(CLOCK_REALTIME, timeout_ms, &ts);
	pthread_mutex_lock(&events_mtx);
	if (events_seen > after_id) {
		pthread_mutex_unlock(&events_mtx);
		return 1;
	}
	gen = events_generation;
	while (gen == events_generation) {
		if (pthread_cond_timedwait(&events_cond, &events_mtx, &ts) != 0)
			break;
	}
	woken = gen != events_generation;
	pthread_mutex_unlock(&events_mtx);
	return woken;
}

int64_t
events_last_id(void)
{
	int64_t id;

	pthread_mutex_lock(&events_mtx);
	id = events_seen;
	pthread_mutex_unlock(&events_mtx);
	return id;
}
