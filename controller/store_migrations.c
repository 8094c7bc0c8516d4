/*
 * store_migrations.c: the numbered schema migrations, applied in order at start-up
 * by store_migrate(). Never edit a migration that has shipped; add a new one.
 * Times are epoch milliseconds; JSON columns hold text.
 */
#include "store_migrations.h"

static const char store_m1[] =
    /* servers and their lifecycle (sm_server) and agent presence */
    "CREATE TABLE servers ("
    " id INTEGER PRIMARY KEY,"
    " name TEXT NOT NULL UNIQUE,"
    " provider TEXT NOT NULL,"
    " region TEXT, size TEXT, image TEXT,"
    " provider_id TEXT, intent_id TEXT,"
    " ipv4 TEXT, ssh_port INTEGER NOT NULL DEFAULT 22, ssh_user TEXT NOT NULL DEFAULT 'root',"
    " host_key_sha256 TEXT, ssh_public_key TEXT, ssh_private_sealed TEXT,"
    " state TEXT NOT NULL DEFAULT 'pending', progress INTEGER NOT NULL DEFAULT 0,"
    " message TEXT, checklist TEXT NOT NULL DEFAULT '[]',"
    " error TEXT, failed_step TEXT, failed_at INTEGER,"
    " agent_id TEXT UNIQUE, agent_secret_hash TEXT, agent_revoked INTEGER NOT NULL DEFAULT 0,"
    " agent_status TEXT NOT NULL DEFAULT 'offline', agent_version TEXT, last_seen INTEGER,"
    " facts TEXT NOT NULL DEFAULT '{}',"
    " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
    "CREATE TABLE server_tags ("
    " server_id INTEGER NOT NULL REFERENCES servers(id) ON DELETE CASCADE,"
    " tag TEXT NOT NULL, PRIMARY KEY (server_id, tag));"
    "CREATE INDEX server_tags_tag ON server_tags(tag);"
    /* sites (sm_site) */
    "CREATE TABLE sites ("
    " id INTEGER PRIMARY KEY,"
    " server_id INTEGER NOT NULL REFERENCES servers(id),"
    " domain TEXT NOT NULL UNIQUE, aliases TEXT NOT NULL DEFAULT '[]',"
    " web_dir TEXT NOT NULL DEFAULT 'public',"
    " repo_url TEXT, branch TEXT NOT NULL DEFAULT 'main',"
    " deploy_script TEXT, env_sealed TEXT,"
    " zero_downtime INTEGER NOT NULL DEFAULT 0, keep_releases INTEGER NOT NULL DEFAULT 5,"
    " deploy_timeout_ms INTEGER NOT NULL DEFAULT 600000,"
    " deploy_key_public TEXT, deploy_key_sealed TEXT,"
    " webhook_secret_sealed TEXT, deploy_token_hash TEXT UNIQUE,"
    " state TEXT NOT NULL DEFAULT 'pending', progress INTEGER NOT NULL DEFAULT 0,"
    " message TEXT, checklist TEXT NOT NULL DEFAULT '[]',"
    " error TEXT, failed_step TEXT, failed_at INTEGER,"
    " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
    /* ssh keys and their per-server, per-user attachments (sm_key_sync) */
    "CREATE TABLE ssh_keys ("
    " id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, type TEXT NOT NULL,"
    " public_key TEXT NOT NULL, fingerprint TEXT NOT NULL UNIQUE, comment TEXT,"
    " bits INTEGER, created_at INTEGER NOT NULL, revoked_at INTEGER);"
    "CREATE TABLE server_keys ("
    " id INTEGER PRIMARY KEY,"
    " key_id INTEGER NOT NULL REFERENCES ssh_keys(id),"
    " server_id INTEGER NOT NULL REFERENCES servers(id) ON DELETE CASCADE,"
    " user TEXT NOT NULL, want INTEGER NOT NULL DEFAULT 1,"
    " state TEXT NOT NULL DEFAULT 'pending', progress INTEGER NOT NULL DEFAULT 0,"
    " message TEXT, checklist TEXT NOT NULL DEFAULT '[]',"
    " error TEXT, failed_step TEXT, failed_at INTEGER,"
    " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
    " UNIQUE (key_id, server_id, user));"
    /* deployments (sm_deployment) */
    "CREATE TABLE deployments ("
    " id INTEGER PRIMARY KEY,"
    " site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE,"
    " trigger TEXT NOT NULL, actor TEXT,"
    " commit_hash TEXT, commit_message TEXT, commit_author TEXT, delivery_id TEXT,"
    " exit_code INTEGER,"
    " state TEXT NOT NULL DEFAULT 'pending', progress INTEGER NOT NULL DEFAULT 0,"
    " message TEXT, checklist TEXT NOT NULL DEFAULT '[]',"
    " error TEXT, failed_step TEXT, failed_at INTEGER,"
    " created_at INTEGER NOT NULL, started_at INTEGER, finished_at INTEGER,"
    " updated_at INTEGER NOT NULL);"
    "CREATE INDEX deployments_site ON deployments(site_id, id);"
    /* fleet command batches and per-server agent commands */
    "CREATE TABLE batches ("
    " id INTEGER PRIMARY KEY, argv TEXT NOT NULL, user TEXT, timeout_ms INTEGER,"
    " batch_size INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL DEFAULT 'running',"
    " actor TEXT, created_at INTEGER NOT NULL, finished_at INTEGER);"
    "CREATE TABLE commands ("
    " id INTEGER PRIMARY KEY,"
    " server_id INTEGER NOT NULL REFERENCES servers(id) ON DELETE CASCADE,"
    " batch_id INTEGER REFERENCES batches(id),"
    " kind TEXT NOT NULL, payload TEXT NOT NULL DEFAULT '{}',"
    " state TEXT NOT NULL DEFAULT 'queued', acked INTEGER NOT NULL DEFAULT 0,"
    " exit_code INTEGER, signal INTEGER, error TEXT, result TEXT,"
    " created_at INTEGER NOT NULL, sent_at INTEGER, started_at INTEGER, finished_at INTEGER);"
    "CREATE INDEX commands_server_state ON commands(server_id, state);"
    /* output of anything that ran somewhere: deployments, commands, provisioning */
    "CREATE TABLE output_lines ("
    " id INTEGER PRIMARY KEY,"
    " owner_kind TEXT NOT NULL, owner_id INTEGER NOT NULL, seq INTEGER NOT NULL,"
    " stream TEXT NOT NULL, time INTEGER NOT NULL, text TEXT NOT NULL,"
    " UNIQUE (owner_kind, owner_id, seq));"
    /* the job engine */
    "CREATE TABLE jobs ("
    " id INTEGER PRIMARY KEY, type TEXT NOT NULL, queue TEXT NOT NULL DEFAULT 'default',"
    " payload TEXT NOT NULL DEFAULT '{}',"
    " state TEXT NOT NULL DEFAULT 'queued',"
    " attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL DEFAULT 3,"
    " timeout_ms INTEGER NOT NULL DEFAULT 0, run_after INTEGER NOT NULL DEFAULT 0,"
    " lease_owner TEXT, lease_until INTEGER,"
    " step INTEGER NOT NULL DEFAULT 0, step_started INTEGER NOT NULL DEFAULT 0,"
    " progress INTEGER NOT NULL DEFAULT 0, message TEXT,"
    " error TEXT, failed_step TEXT,"
    " cancel_requested INTEGER NOT NULL DEFAULT 0,"
    " resource_kind TEXT, resource_id INTEGER, actor TEXT,"
    " attempt_started_at INTEGER,"
    " created_at INTEGER NOT NULL, started_at INTEGER, finished_at INTEGER,"
    " updated_at INTEGER NOT NULL);"
    "CREATE INDEX jobs_claim ON jobs(state, run_after);"
    "CREATE TABLE job_steps ("
    " job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
    " idx INTEGER NOT NULL, name TEXT NOT NULL,"
    " state TEXT NOT NULL," /* done | undone | undo_failed */
    " error TEXT, runs INTEGER NOT NULL DEFAULT 0, finished_at INTEGER,"
    " PRIMARY KEY (job_id, idx));"
    "CREATE TABLE job_data ("
    " job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
    " key TEXT NOT NULL, value TEXT, PRIMARY KEY (job_id, key));"
    /* audit trail and live feed */
    "CREATE TABLE events ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, actor TEXT,"
    " kind TEXT NOT NULL, resource_kind TEXT, resource_id INTEGER,"
    " data TEXT NOT NULL DEFAULT '{}');"
    "CREATE INDEX events_resource ON events(resource_kind, resource_id, id);"
    /* API tokens, stored as SHA-256 of the token */
    "CREATE TABLE api_tokens ("
    " id INTEGER PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,"
    " prefix TEXT NOT NULL, created_at INTEGER NOT NULL, last_used_at INTEGER,"
    " revoked_at INTEGER);"
    /* settings and secrets (value sealed when sealed = 1) */
    "CREATE TABLE settings ("
    " key TEXT PRIMARY KEY, value TEXT, sealed INTEGER NOT NULL DEFAULT 0,"
    " updated_at INTEGER NOT NULL);";

static const char store_m2[] =
    /* webhook deliveries already seen (replay protection) and faster lookups */
    "CREATE TABLE webhook_deliveries ("
    " site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE,"
    " delivery_id TEXT NOT NULL, received_at INTEGER NOT NULL,"
    " deployment_id INTEGER, PRIMARY KEY (site_id, delivery_id));"
    "CREATE INDEX output_owner ON output_lines(owner_kind, owner_id, seq);"
    "CREATE INDEX jobs_resource ON jobs(resource_kind, resource_id);";

static const char store_m3[] =
    /* commands belong to what they were run for (a deployment's script, a site's
     * checkout), whose log is their output */
    "ALTER TABLE commands ADD COLUMN owner_kind TEXT;"
    "ALTER TABLE commands ADD COLUMN owner_id INTEGER;"
    "CREATE INDEX commands_owner ON commands(owner_kind, owner_id, id);";

static const char store_m4[] =
    /* where sites live on a server and who runs deploys; a site's served release and
     * the job of each deployment */
    "ALTER TABLE servers ADD COLUMN sites_root TEXT NOT NULL DEFAULT '/var/www';"
    "ALTER TABLE servers ADD COLUMN deploy_user TEXT NOT NULL DEFAULT 'deploy';"
    "ALTER TABLE sites ADD COLUMN path TEXT;"
    "ALTER TABLE sites ADD COLUMN current_release INTEGER;"
    "ALTER TABLE deployments ADD COLUMN job_id INTEGER;"
    "ALTER TABLE deployments ADD COLUMN release TEXT;";

static const char store_m5[] =
    /* fleet operations: the last drift report of each server and user whose
     * authorized_keys Stoke manages; batches keep their script, selector, job, pick-up
     * deadline and where their output starts; commands found by batch */
    "CREATE TABLE key_drift ("
    " server_id INTEGER NOT NULL REFERENCES servers(id) ON DELETE CASCADE,"
    " user TEXT NOT NULL, state TEXT NOT NULL," /* clean | drift | error */
    " path TEXT, missing TEXT NOT NULL DEFAULT '[]', extra TEXT NOT NULL DEFAULT '[]',"
    " outside TEXT NOT NULL DEFAULT '[]', error TEXT, checked_at INTEGER NOT NULL,"
    " PRIMARY KEY (server_id, user));"
    "CREATE INDEX server_keys_server ON server_keys(server_id, user);"
    "ALTER TABLE batches ADD COLUMN script TEXT;"
    "ALTER TABLE batches ADD COLUMN selector TEXT NOT NULL DEFAULT '{}';"
    "ALTER TABLE batches ADD COLUMN job_id INTEGER;"
    "ALTER TABLE batches ADD COLUMN pickup_ms INTEGER NOT NULL DEFAULT 10000;"
    "ALTER TABLE batches ADD COLUMN output_from INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX commands_batch ON commands(batch_id, state);";

static const char store_m6[] =
    /* output_owner repeated the UNIQUE (owner_kind, owner_id, seq) index of output_lines
     * column for column: every stored line paid for two identical B-trees */
    "DROP INDEX IF EXISTS output_owner;";

static const char store_m7[] =
    /* the host keys an SSH repository is checked against (known_hosts text) */
    "ALTER TABLE sites ADD COLUMN known_hosts TEXT;";

static const char store_m8[] =
    /* the agent process last heard from (Poll.session): a new one means it restarted */
    "ALTER TABLE servers ADD COLUMN agent_session TEXT;";

static const char store_m9[] =
    /* crash safety: a re-claim after a lease expiry is a resume, not an attempt; a job
     * whose forward part ended (end_state: failed or cancelled) is undoing, and stays
     * failed_dirty, retried, until its undo has finished */
    "ALTER TABLE jobs ADD COLUMN resumes INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE jobs ADD COLUMN end_state TEXT;"
    "ALTER TABLE jobs ADD COLUMN undo_attempts INTEGER NOT NULL DEFAULT 0;";

static const char store_m10[] =
    /* what an agent may send is bounded: bytes of output stored per command */
    "ALTER TABLE commands ADD COLUMN output_bytes INTEGER NOT NULL DEFAULT 0;";

static const char store_m11[] =
    /* a command's payload with its secret values (environments, file contents, keys), sealed;
     * payload then shows them as "(sealed)" (commands.c) */
    "ALTER TABLE commands ADD COLUMN payload_sealed TEXT;";

static const char store_m12[] =
    /* ids of sites and deployments are never given again: a new site took a deleted one's
     * id, and with it its old deployments' commands, logs, jobs and webhook URL (found by the
     * chaos test). id_high keeps the highest id ever used (also those that only live on in
     * jobs, commands and events); inserts take last + 1. */
    "CREATE TABLE id_high (name TEXT PRIMARY KEY, last INTEGER NOT NULL);"
    "INSERT INTO id_high SELECT 'sites', max(coalesce((SELECT max(id) FROM sites), 0),"
    " coalesce((SELECT max(resource_id) FROM jobs WHERE resource_kind = 'site'), 0),"
    " coalesce((SELECT max(resource_id) FROM events WHERE resource_kind = 'site'), 0));"
    "INSERT INTO id_high SELECT 'deployments', max(coalesce((SELECT max(id) FROM deployments),"
    " 0), coalesce((SELECT max(owner_id) FROM commands WHERE owner_kind = 'deployment'), 0),"
    " coalesce((SELECT max(resource_id) FROM events WHERE resource_kind = 'deployment'), 0));"
    "CREATE TRIGGER sites_id_high AFTER INSERT ON sites BEGIN"
    " UPDATE id_high SET last = max(last, NEW.id) WHERE name = 'sites'; END;"
    "CREATE TRIGGER deployments_id_high AFTER INSERT ON deployments BEGIN"
    " UPDATE id_high SET last = max(last, NEW.id) WHERE name = 'deployments'; END;";

static const char store_m13[] =
    /* webhook deliveries remembered by the SHA-256 of their body (signed) as well as by
     * their delivery id (not signed): a replay with a new id is still a duplicate; ignored
     * deliveries are remembered too. Replaces webhook_deliveries (its rows carried over). */
    "CREATE TABLE webhook_receipts ("
    " id INTEGER PRIMARY KEY,"
    " site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE,"
    " delivery_id TEXT, body_sha256 TEXT NOT NULL, received_at INTEGER NOT NULL,"
    " outcome TEXT," /* queued | ignored; NULL while being handled */
    " deployment_id INTEGER);"
    "CREATE UNIQUE INDEX webhook_receipts_body ON webhook_receipts(site_id, body_sha256);"
    "CREATE UNIQUE INDEX webhook_receipts_delivery ON webhook_receipts(site_id, delivery_id)"
    " WHERE delivery_id IS NOT NULL;"
    "INSERT INTO webhook_receipts (site_id, delivery_id, body_sha256, received_at, outcome,"
    " deployment_id) SELECT site_id, delivery_id, 'unknown:' || delivery_id, received_at,"
    " 'queued', deployment_id FROM webhook_deliveries;"
    "DROP TABLE webhook_deliveries;";

const char *const store_migrations[] = {store_m1,  store_m2,  store_m3, store_m4, store_m5,
					store_m6,  store_m7,  store_m8, store_m9, store_m10,
					store_m11, store_m12, store_m13};
const int store_nmigrations = sizeof(store_migrations) / sizeof(store_migrations[0]);
