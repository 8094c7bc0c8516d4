/*
 * ca.h: the controller's own certificate authority (ECDSA P-256, OpenSSL; ca.c is the
 * only file that touches X509). Kept in DATA_DIR/ca/: ca.crt, ca.key, server.crt,
 * server.key (keys mode 0600). The server certificate carries a DNS name that agents
 * verify. Client certificates are issued per agent (CN = agent id).
 */
#ifndef STOKE_CA_H
#define STOKE_CA_H

#include <stddef.h>

struct ca_files {
	char *ca_crt; /* PEM text */
	char *server_crt;
	char *server_key;
};

/* Loads the CA from data_dir/ca, creating it (and the server certificate for
 * server_name) at first start. A server certificate for another name is re-issued. */
int ca_load(const char *data_dir, const char *server_name, struct ca_files *out, char *err,
	    size_t errlen);
void ca_files_fini(struct ca_files *f);
/* Issues a client certificate for agent_id (valid 5 years); PEM texts malloc'd. */
int ca_issue_client(const char *data_dir, const char *agent_id, char **cert_pem, char **key_pem,
		    char *err, size_t errlen);

#endif
