/*
 * agentcmd.h: the commands the controller can send an agent, as JSON payloads kept in
 * the commands table. agentcmd_validate checks a payload at the API edge (the agent
 * checks again) and returns its normal form, with secrets sealed; agentcmd_pack turns a
 * stored command into the protobuf Command the agent receives.
 */
#ifndef STOKE_AGENTCMD_H
#define STOKE_AGENTCMD_H

#include <stddef.h>
#include <stdint.h>

/* 1 if kind is one the API may queue ("exec", "script", "write_file", "nginx_site",
 * "git_checkout", "authorized_keys", "service", "facts"). */
int agentcmd_known(const char *kind);
/* Validates payload_json for kind. On success *normal is malloc'd JSON (secrets sealed).
 * Errors are ERR_INVAL with text naming the field ("argv[2]: must not be empty"). */
int agentcmd_validate(const char *kind, const char *payload_json, char **normal, char *err,
		      size_t errlen);
/* Packs command id/kind/payload into a serialized Envelope{Command}; *out malloc'd. */
int agentcmd_pack(uint64_t id, const char *kind, const char *payload_json, uint8_t **out,
		  size_t *outlen, char *err, size_t errlen);

#endif
