/*
 * sites.h: sites and deployments: the job types that create, switch on and off,
 * delete and roll back a site through its server's agent, and the deploy job; plus
 * queueing a deployment (from the API, the CLI or a webhook). State lives in the
 * sites and deployments tables (sm_site, sm_deployment).
 */
#ifndef STOKE_SITES_H
#define STOKE_SITES_H

#include <stddef.h>
#include <stdint.h>

struct store;

/* Registers site.create, site.toggle, site.delete, site.rollback and deploy. */
void sites_register(void);

/* The deploy script a new site starts with. */
extern const char sites_default_script[];

struct sites_deploy_req {
	const char *trigger; /* "manual", "api", "webhook:github", "create", "ci" */
	const char *actor;
	const char *commit; /* NULL = tip of the branch */
	const char *message, *author;
	const char *delivery_id; /* webhook delivery, recorded on the deployment (may be NULL;
				    replays are refused before: deliveries.h) */
};

/* Inserts a pending deployment and its job (in one transaction of its own). */
int sites_deploy(struct store *s, int64_t site_id, const struct sites_deploy_req *req,
		 int64_t *deployment_id, int64_t *job_id, char *err, size_t errlen);

/* 1 when commit is what the site serves (its current release, else its newest finished
 * deployment: *why "is already deployed") or is being deployed (a pending or running
 * deployment: "is already being deployed"), with *deployment that one; 0 when not. */
int sites_commit_current(struct store *s, int64_t site_id, const char *commit, int64_t *deployment,
			 const char **why);

/* Queues a site job (type "site.create", ...) for the site with payload; *job_id set. */
int sites_job(struct store *s, int64_t site_id, const char *type, const char *payload,
	      const char *actor, int64_t *job_id, char *err, size_t errlen);

#endif
