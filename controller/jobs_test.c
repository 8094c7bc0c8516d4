/*
 * jobs_test.c: the job engine in one process against a real SQLite file: run to
 * done, retry with backoff, rollback in reverse order, timeout, cancel (queued and
 * running), resume after an expired lease, `once` steps, retry from the failed step.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>

#include <cmocka.h>

#include "err.h"
#include "jobs.h"
#include "log.h"
#include "store.h"
#include "timeutil.h"

static pthread_mutex_t jt_mtx = PTHREAD_MUTEX_INITIALIZER;
static char jt_log[4096];
static int jt_fail_step = -1; /* step that fails */
static int jt_fail_times = 0; /* 0 = always */
static long jt_sleep_ms = 0;  /* in the step that sleeps */
static int jt_sleep_step = -1;
static int jt_undo_fail_step = -1; /* step whose undo fails */
static int jt_undo_fail_times;	   /* how many times (then it succeeds) */
static char jt_dir[256];
static struct jobs_engine *jt_engine;

static void
jt_note(const char *fmt, ...)
{
	char line[64];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&jt_mtx);
	strncat(jt_log, line, sizeof(jt_log) - strlen(jt_log) - 1);
	strncat(jt_log, " ", sizeof(jt_log) - strlen(jt_log) - 1);
	pthread_mutex_unlock(&jt_mtx);
}

static int
jt_run(struct job_ctx *ctx, int i, char *err, size_t errlen)
{
	long t;

	jt_note("r%d", i);
	if (i == jt_sleep_step)
		for (t = 0; t < jt_sleep_ms; t += 10) {
			if (job_cancelled(ctx) || job_stopping(ctx))
				return err_set(err, errlen, ERR_CANCELLED, "stopped");
			time_sleep_ms(10);
		}
	if (i == jt_fail_step && (jt_fail_times == 0 || job_attempt(ctx) <= jt_fail_times))
		return err_set(err, errlen, ERR_IO, "boom %d", i);
	return 0;
}

static int
jt_undo(struct job_ctx *ctx, int i, char *err, size_t errlen)
{
	(void)ctx;
	jt_note("u%d", i);
	if (i == jt_undo_fail_step && jt_undo_fail_times > 0) {
		jt_undo_fail_times--;
		return err_set(err, errlen, ERR_IO, "undo %d refused", i);
	}
	return 0;
}

#define JT_STEP(n)                                                                                 \
	static int jt_r##n(struct job_ctx *c, char *e, size_t l)                                   \
	{                                                                                          \
		return jt_run(c, n, e, l);                                                         \
	}                                                                                          \
	static int jt_u##n(struct job_ctx *c, char *e, size_t l)                                   \
	{                                                                                          \
		return jt_undo(c, n, e, l);                                                        \
	}
JT_STEP(0)
JT_STEP(1)
JT_STEP(2)

static const struct job_step jt_steps[] = {
    {"zero", jt_r0, jt_u0, 0}, {"one", jt_r1, jt_u1, 0}, {"two", jt_r2, jt_u2, 0}};
static const struct job_type jt_type = {.name = "t.three",
					.steps = jt_steps,
					.nsteps = 3,
					.max_attempts = 3,
					.backoff_ms = 100,
					.backoff_max_ms = 1000,
					.rollback = 1};
static const struct job_step jt_once_steps[] = {
    {"zero", jt_r0, jt_u0, 0}, {"one", jt_r1, jt_u1, 1}, {"two", jt_r2, jt_u2, 0}};
static const struct job_type jt_once = {
    .name = "t.once", .steps = jt_once_steps, .nsteps = 3, .max_attempts = 3, .rollback = 0};

static char *
jt_state(int64_t id)
{
	return store_text(store_thread(), "SELECT state FROM jobs WHERE id = ?", "i", id);
}

/* Polls until the job reaches state (or 10 s pass). */
static int
jt_wait(int64_t id, const char *state)
{
	int64_t end = time_mono_ms() + 10000;
	char *s;
	int ok;

	while (time_mono_ms() < end) {
		s = jt_state(id);
		ok = s && strcmp(s, state) == 0;
		free(s);
		if (ok)
			return 1;
		time_sleep_ms(20);
	}
	return 0;
}

static int
jt_setup(void **state)
{
	char path[300], err[256];
	struct jobs_engine_opts o = {0};

	(void)state;
	snprintf(jt_dir, sizeof(jt_dir), "/tmp/stoke-jobs-test-XXXXXX");
	assert_non_null(mkdtemp(jt_dir));
	snprintf(path, sizeof(path), "%s/stoke.db", jt_dir);
	assert_int_equal(store_global_init(path, err, sizeof(err)), 0);
	jt_log[0] = '\0';
	jt_fail_step = jt_sleep_step = -1;
	jt_fail_times = 0;
	jt_sleep_ms = 0;
	jt_undo_fail_step = -1;
	jt_undo_fail_times = 0;
	o.db_path = path;
	o.workers = 2;
	o.lease_ms = 1500;
	o.poll_ms = 50;
	assert_int_equal(jobs_start(&o, &jt_engine, err, sizeof(err)), 0);
	return 0;
}

static int
jt_teardown(void **state)
{
	char cmd[400];

	(void)state;
	jobs_stop(jt_engine);
	jt_engine = NULL;
	store_global_fini();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", jt_dir);
	if (system(cmd) != 0)
		return -1;
	return 0;
}

static int64_t
jt_enqueue(const char *type, const struct jobs_enqueue_opts *o)
{
	char err[256];
	int64_t id = 0;

	assert_int_equal(jobs_enqueue(store_thread(), type, "{}", o, &id, err, sizeof(err)), 0);
	return id;
}

static void
test_runs_to_done(void **state)
{
	int64_t id;
	char *json;

	(void)state;
	id = jt_enqueue("t.three", NULL);
	assert_true(jt_wait(id, "done"));
	assert_string_equal(jt_log, "r0 r1 r2 ");
	assert_int_equal(
	    store_int(store_thread(), -1, "SELECT progress FROM jobs WHERE id=?", "i", id), 100);
	assert_int_equal(store_int(store_thread(), -1,
				   "SELECT count(*) FROM job_steps WHERE job_id=? AND state='done'",
				   "i", id),
			 3);
	json = jobs_get_json(store_thread(), id);
	assert_non_null(json);
	assert_non_null(strstr(json, "\"state\":\"done\""));
	assert_non_null(strstr(json, "{\"name\":\"two\",\"state\":\"done\"}"));
	free(json);
	/* every state change was published */
	assert_int_equal(store_int(store_thread(), -1,
				   "SELECT count(*) FROM events WHERE resource_kind='job' AND"
				   " resource_id=? AND kind='job.state'",
				   "i", id),
			 3); /* queued, running, done */
}

static void
test_retry_backoff(void **state)
{
	int64_t id, t0;

	(void)state;
	jt_fail_step = 1;
	jt_fail_times = 2;
	t0 = time_mono_ms();
	id = jt_enqueue("t.three", NULL);
	assert_true(jt_wait(id, "done"));
	/* two retries: 100 ms then 200 ms of backoff */
	assert_true(time_mono_ms() - t0 >= 300);
	assert_string_equal(jt_log, "r0 r1 r1 r1 r2 ");
	assert_int_equal(
	    store_int(store_thread(), -1, "SELECT attempts FROM jobs WHERE id=?", "i", id), 3);
}

static void
test_rollback_reverse(void **state)
{
	struct jobs_enqueue_opts o = {.max_attempts = 1};
	char *err, *step;
	int64_t id;

	(void)state;
	jt_fail_step = 2;
	id = jt_enqueue("t.three", &o);
	assert_true(jt_wait(id, "failed"));
	assert_string_equal(jt_log, "r0 r1 r2 u2 u1 u0 ");
	err = store_text(store_thread(), "SELECT error FROM jobs WHERE id=?", "i", id);
	step = store_text(store_thread(), "SELECT failed_step FROM jobs WHERE id=?", "i", id);
	assert_string_equal(step, "two");
	assert_non_null(strstr(err, "boom 2"));
	free(err);
	free(step);
	assert_int_equal(
	    store_int(store_thread(), -1,
		      "SELECT count(*) FROM job_steps WHERE job_id=? AND state='undone'", "i", id),
	    3);
}

static void
test_retry_failed_job(void **state)
{
	struct jobs_enqueue_opts o = {.max_attempts = 1};
	char err[256];
	int64_t id;

	(void)state;
	jt_fail_step = 1;
	id = jt_enqueue("t.once", &o); /* no rollback: step zero stays done */
	assert_true(jt_wait(id, "failed"));
	assert_string_equal(jt_log, "r0 r1 ");
	jt_fail_step = -1; /* the cause is mended */
	assert_int_equal(jobs_retry(store_thread(), id, "test", err, sizeof(err)), 0);
	assert_true(jt_wait(id, "done"));
	/* resumed at the failed step; zero did not run again */
	assert_string_equal(jt_log, "r0 r1 r1 r2 ");
	assert_int_equal(jobs_retry(store_thread(), id, "test", err, sizeof(err)), ERR_CONFLICT);
	assert_int_equal(jobs_cancel(store_thread(), id, "test", err, sizeof(err)), ERR_CONFLICT);
	assert_int_equal(jobs_cancel(store_thread(), 999999, "test", err, sizeof(err)),
			 ERR_NOTFOUND);
}

static void
test_timeout(void **state)
{
	struct jobs_enqueue_opts o = {.max_attempts = 1, .timeout_ms = 300};
	char *err;
	int64_t id;

	(void)state;
	jt_sleep_step = 1;
	jt_sleep_ms = 5000;
	id = jt_enqueue("t.three", &o);
	assert_true(jt_wait(id, "failed"));
	err = store_text(store_thread(), "SELECT error FROM jobs WHERE id=?", "i", id);
	assert_non_null(strstr(err, "timed out in step one"));
	free(err);
	assert_string_equal(jt_log, "r0 r1 u1 u0 ");
}

static void
test_cancel_running(void **state)
{
	char err[256];
	int64_t id;

	(void)state;
	jt_sleep_step = 1;
	jt_sleep_ms = 10000;
	id = jt_enqueue("t.three", NULL);
	assert_true(jt_wait(id, "running"));
	while (strstr(jt_log, "r1") == NULL)
		time_sleep_ms(10);
	assert_int_equal(jobs_cancel(store_thread(), id, "test", err, sizeof(err)), 0);
	assert_true(jt_wait(id, "cancelled"));
	assert_string_equal(jt_log, "r0 r1 u1 u0 ");
}

static void
test_cancel_queued(void **state)
{
	struct jobs_enqueue_opts o = {.run_after_ms = time_now_ms() + 60000};
	char err[256];
	int64_t id;

	(void)state;
	id = jt_enqueue("t.three", &o);
	assert_int_equal(jobs_cancel(store_thread(), id, "test", err, sizeof(err)), 0);
	{
		char *s = jt_state(id);

		assert_string_equal(s, "cancelled");
		free(s);
	}
	assert_string_equal(jt_log, "");
}

/* A job left running by a dead controller: its lease expires and it resumes where it was. */
static void
test_resume_expired_lease(void **state)
{
	struct store *s = store_thread();
	int64_t id;

	(void)state;
	jobs_stop(jt_engine); /* take the job before any worker sees it */
	jt_engine = NULL;
	id = jt_enqueue("t.three", NULL);
	assert_int_equal(store_exec(s,
				    "UPDATE jobs SET state='running', lease_owner='dead',"
				    " lease_until=?, attempts=1, step=1, step_started=1 WHERE id=?",
				    "ii", time_now_ms() + 700, id),
			 0);
	assert_int_equal(store_exec(s,
				    "INSERT INTO job_steps (job_id, idx, name, state) VALUES"
				    " (?, 0, 'zero', 'done')",
				    "i", id),
			 0);
	{
		struct jobs_engine_opts o = {.workers = 1, .lease_ms = 1500, .poll_ms = 50};
		char err[256];
		int64_t t0 = time_mono_ms();

		assert_int_equal(jobs_start(&o, &jt_engine, err, sizeof(err)), 0);
		assert_true(jt_wait(id, "done"));
		/* not before the dead owner's lease ran out */
		assert_true(time_mono_ms() - t0 >= 600);
	}
	assert_string_equal(jt_log, "r1 r2 ");
	/* a crash is not the job's failure: a resume, not an attempt */
	assert_int_equal(store_int(s, -1, "SELECT attempts FROM jobs WHERE id=?", "i", id), 1);
	assert_int_equal(store_int(s, -1, "SELECT resumes FROM jobs WHERE id=?", "i", id), 1);
}

/* A graceful stop cuts a waiting step short and hands the job over: queued again at the same
 * step, not counted as an attempt, and the next engine runs the step again. */
static void
test_stop_mid_step(void **state)
{
	struct jobs_engine_opts o = {.workers = 1, .lease_ms = 1500, .poll_ms = 50};
	struct store *s = store_thread();
	char e[256], *st;
	int64_t id, t0;

	(void)state;
	jt_sleep_step = 1;
	jt_sleep_ms = 20000;
	id = jt_enqueue("t.three", NULL);
	while (strstr(jt_log, "r1") == NULL)
		time_sleep_ms(10);
	t0 = time_mono_ms();
	jobs_stop(jt_engine);
	jt_engine = NULL;
	assert_true(time_mono_ms() - t0 < 5000); /* not the step's 20 s */
	st = jt_state(id);
	assert_string_equal(st, "queued");
	free(st);
	assert_int_equal(store_int(s, -1, "SELECT attempts FROM jobs WHERE id=?", "i", id), 0);
	assert_int_equal(store_int(s, -1, "SELECT step FROM jobs WHERE id=?", "i", id), 1);
	jt_sleep_ms = 0;
	assert_int_equal(jobs_start(&o, &jt_engine, e, sizeof(e)), 0);
	assert_true(jt_wait(id, "done"));
	assert_string_equal(jt_log, "r0 r1 r1 r2 ");
	assert_int_equal(store_int(s, -1, "SELECT attempts FROM jobs WHERE id=?", "i", id), 1);
}

/* Stops the engine and makes a job of type as a dead controller left it: running under an
 * expired lease of another owner, with "SET ..." applied to its row. */
static int64_t
jt_dead_job(const char *type, const char *set)
{
	char sql[512];
	int64_t id;

	jobs_stop(jt_engine);
	jt_engine = NULL;
	id = jt_enqueue(type, NULL);
	snprintf(sql, sizeof(sql),
		 "UPDATE jobs SET state='running', lease_owner='dead', lease_until=0, %s"
		 " WHERE id=?",
		 set);
	assert_int_equal(store_exec(store_thread(), sql, "i", id), 0);
	return id;
}

/* Starts a one-worker engine, as a controller coming back. */
static void
jt_restart(int max_resumes)
{
	struct jobs_engine_opts o = {
	    .workers = 1, .lease_ms = 1500, .poll_ms = 50, .max_resumes = max_resumes};
	char e[256];

	assert_int_equal(jobs_start(&o, &jt_engine, e, sizeof(e)), 0);
}

/* A job that a crash interrupted more often than the limit fails, undone, saying why. */
static void
test_resume_limit(void **state)
{
	struct store *s = store_thread();
	char *err;
	int64_t id;

	(void)state;
	id = jt_dead_job("t.three", "attempts=1, resumes=3, step=1, step_started=1");
	store_exec(s,
		   "INSERT INTO job_steps (job_id, idx, name, state) VALUES (?, 0, 'zero', 'done')",
		   "i", id);
	jt_restart(3);
	assert_true(jt_wait(id, "failed"));
	assert_string_equal(jt_log, "u1 u0 "); /* nothing run again; what was made undone */
	err = store_text(s, "SELECT error FROM jobs WHERE id=?", "i", id);
	assert_non_null(strstr(err, "controller stopped 4 times"));
	free(err);
	assert_int_equal(store_int(s, -1, "SELECT attempts FROM jobs WHERE id=?", "i", id), 1);
}

/* An undo that fails leaves the job failed_dirty (not failed) and is tried again with
 * backoff until it finishes; then the job is failed, clean. */
static void
test_undo_failed_dirty(void **state)
{
	struct store *s = store_thread();
	struct jobs_enqueue_opts o = {.max_attempts = 1};
	char *json;
	int64_t id;

	(void)state;
	jt_fail_step = 2;
	jt_undo_fail_step = 1;
	jt_undo_fail_times = 2;
	id = jt_enqueue("t.three", &o);
	assert_true(jt_wait(id, "failed_dirty"));
	json = jobs_get_json(s, id);
	assert_non_null(strstr(json, "{\"name\":\"one\",\"state\":\"undo_failed\"}"));
	assert_non_null(strstr(json, "undo one: undo 1 refused"));
	free(json);
	assert_true(jt_wait(id, "failed"));
	/* first pass undoes two (failed) and zero, one refuses twice, then is undone alone */
	assert_string_equal(jt_log, "r0 r1 r2 u2 u1 u0 u1 u1 ");
	assert_int_equal(store_int(s, -1, "SELECT undo_attempts FROM jobs WHERE id=?", "i", id), 3);
	assert_int_equal(
	    store_int(s, -1, "SELECT count(*) FROM job_steps WHERE job_id=? AND state='undone'",
		      "i", id),
	    3);
	json = store_text(s, "SELECT error FROM jobs WHERE id=?", "i", id);
	assert_non_null(strstr(json, "boom 2"));
	free(json);
	/* the failure was announced once, then the end of the undo */
	assert_int_equal(
	    store_int(s, -1,
		      "SELECT count(*) FROM events WHERE resource_kind='job' AND"
		      " resource_id=? AND kind='job.state' AND data LIKE '%failed_dirty%'",
		      "i", id),
	    2);
}

/* A controller that dies in the middle of an undo: the next one finishes the undo, and
 * never runs the job's steps again. */
static void
test_crash_in_undo(void **state)
{
	struct store *s = store_thread();
	int64_t id;

	(void)state;
	id = jt_dead_job("t.three", "attempts=3, step=2, step_started=1, end_state='failed',"
				    " error='boom 2', undo_attempts=1");
	store_exec(
	    s,
	    "INSERT INTO job_steps (job_id, idx, name, state) VALUES (?1, 0, 'zero', 'done'),"
	    " (?1, 1, 'one', 'done'), (?1, 2, 'two', 'undone')",
	    "i", id);
	jt_restart(0);
	assert_true(jt_wait(id, "failed"));
	assert_string_equal(jt_log, "u1 u0 ");
	assert_int_equal(store_int(s, -1, "SELECT resumes FROM jobs WHERE id=?", "i", id), 0);
}

static void
test_once_not_rerun(void **state)
{
	struct store *s = store_thread();
	char *err;
	int64_t id;

	(void)state;
	id = jt_dead_job("t.once", "attempts=1, step=1, step_started=1");
	jt_restart(0);
	assert_true(jt_wait(id, "failed"));
	assert_string_equal(jt_log, ""); /* "one" was not run again */
	err = store_text(s, "SELECT error FROM jobs WHERE id=?", "i", id);
	assert_non_null(strstr(err, "must not run twice"));
	free(err);
}

/* Jobs of one serial queue never overlap and run in the order they were queued. */
static void
test_serial_queue(void **state)
{
	struct jobs_enqueue_opts o = {.queue = "serial:site:1"};
	int64_t a, b;

	(void)state;
	jt_sleep_step = 0;
	jt_sleep_ms = 300;
	a = jt_enqueue("t.three", &o);
	b = jt_enqueue("t.three", &o);
	assert_true(jt_wait(a, "done"));
	assert_true(jt_wait(b, "done"));
	/* two workers, yet the second job started only after the first finished */
	assert_string_equal(jt_log, "r0 r1 r2 r0 r1 r2 ");
	assert_true(store_int(store_thread(), 0,
			      "SELECT (SELECT started_at FROM jobs WHERE id = ?) >="
			      " (SELECT finished_at FROM jobs WHERE id = ?)",
			      "ii", b, a));
}

static void
test_enqueue_rejects(void **state)
{
	char err[256];
	int64_t id;

	(void)state;
	assert_int_equal(jobs_enqueue(store_thread(), "no.such", "{}", NULL, &id, err, sizeof(err)),
			 ERR_INVAL);
	assert_int_equal(
	    jobs_enqueue(store_thread(), "t.three", "[1]", NULL, &id, err, sizeof(err)), ERR_INVAL);
	assert_int_equal(store_int(store_thread(), -1, "SELECT count(*) FROM jobs", ""), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_runs_to_done, jt_setup, jt_teardown),
	    cmocka_unit_test_setup_teardown(test_retry_backoff, jt_setup, jt_teardown),
	    cmocka_unit_test_setup_teardown(test_rollback_reverse, jt_setup, jt_teardown),
	    cmocka_unit_test_setup_teardown(test_retry_failed_job, jt_setup, jt_teardown),
	    cmocka_unit_test_setup_teardown(test_timeout, jt_setup, jt_teardown),
	    cmocka_unit_test_setup_teardown(test_cancel_running, jt_setup, jt_teardown),
	    cmocka_unit_test_setup_teardown(test_cancel_queued, jt_setup, jt_teardown),
	    cmocka_unit_test_setup_teardown(test_resume_expired_lease, jt_setup, jt_teardown),
	    cmocka_unit_test_setup_teardown(test_stop_mid_step, jt_setup, jt_teardown),
	    cmocka_unit_test_setup_teardown(test_resume_limit, jt_setup, jt_teardown),
	    cmocka_unit_test_setup_teardown(test_undo_failed_dirty, jt_setup, jt_teardown),
	    cmocka_unit_test_setup_teardown(test_crash_in_undo, jt_setup, jt_teardown),
	    cmocka_unit_test_setup_teardown(test_once_not_rerun, jt_setup, jt_teardown),
	    cmocka_unit_test_setup_teardown(test_serial_queue, jt_setup, jt_teardown),
	    cmocka_unit_test_setup_teardown(test_enqueue_rejects, jt_setup, jt_teardown),
	};

	log_init("jobs_test", LOG_LEVEL_WARN);
	jobs_register(&jt_type);
	jobs_register(&jt_once);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
