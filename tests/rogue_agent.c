/*
 * rogue_agent.c: a test client for the agent port that sends one poll with whatever
 * credentials it is given, and reports what the controller did. Used to check that
 * connections without a CA-issued certificate, or with a wrong secret, get nothing.
 *
 * usage: rogue_agent URL SERVER_NAME CA_FILE [CERT_FILE KEY_FILE] AGENT_ID SECRET WAIT_MS
 *        (CERT_FILE KEY_FILE given as "-" "-" for no client certificate)
 * exit:  0 nothing came back (or a Refused), 3 the controller answered the poll,
 *        2 usage or local error (1 is left to sanitizers). Prints what happened.
 * ROGUE_OUTPUT="ID:SEQ:BYTES:COUNT" (after an answered poll): sends COUNT output chunks for
 * command ID, sequence numbers SEQ, SEQ+1, ..., each one line of BYTES bytes (newline
 * included), as a compromised agent might; prints how many were acknowledged.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>

#include "atomicfile.h"
#include "stoke.pb-c.h"

static char *
rogue_read(const char *path)
{
	char err[256], *text = NULL;
	size_t n;

	if (strcmp(path, "-") == 0)
		return NULL;
	if (atomicfile_read(path, 1 << 20, &text, &n, err, sizeof(err)) != 0) {
		fprintf(stderr, "rogue_agent: %s\n", err);
		exit(2);
	}
	return text;
}

/* Sends the output chunks ROGUE_OUTPUT asks for, each as one request; counts the acks. */
static void
rogue_output(nng_socket sock, char *agent_id, char *secret, const char *spec)
{
	unsigned long long id, seq, bytes, count, i, acked = 0;
	Stoke__Envelope env = STOKE__ENVELOPE__INIT, *reply;
	Stoke__OutputChunk o = STOKE__OUTPUT_CHUNK__INIT;
	uint8_t *line;
	nng_msg *m;

	if (sscanf(spec, "%llu:%llu:%llu:%llu", &id, &seq, &bytes, &count) != 4 || bytes == 0 ||
	    bytes > (1u << 20) || (line = malloc(bytes)) == NULL) {
		fprintf(stderr, "rogue_agent: ROGUE_OUTPUT=ID:SEQ:BYTES:COUNT\n");
		exit(2);
	}
	memset(line, 'x', bytes - 1);
	line[bytes - 1] = '\n';
	env.protocol_version = 1;
	env.body_case = STOKE__ENVELOPE__BODY_OUTPUT;
	env.output = &o;
	o.agent_id = agent_id;
	o.secret = secret;
	o.command_id = id;
	o.stream = STOKE__STREAM_KIND__STREAM_STDOUT;
	o.data.data = line;
	o.data.len = bytes;
	for (i = 0; i < count; i++) {
		o.seq = seq + i;
		if (nng_msg_alloc(&m, stoke__envelope__get_packed_size(&env)) != 0)
			break;
		stoke__envelope__pack(&env, nng_msg_body(m));
		if (nng_sendmsg(sock, m, 0) != 0) {
			nng_msg_free(m);
			break;
		}
		if (nng_recvmsg(sock, &m, 0) != 0)
			break;
		reply = stoke__envelope__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
		acked += reply && reply->body_case == STOKE__ENVELOPE__BODY_ACK;
		stoke__envelope__free_unpacked(reply, NULL);
		nng_msg_free(m);
	}
	printf("output: %llu of %llu chunks acknowledged\n", acked, count);
	free(line);
}

int
main(int argc, char **argv)
{
	Stoke__Envelope env = STOKE__ENVELOPE__INIT, *reply;
	Stoke__Poll poll = STOKE__POLL__INIT;
	nng_tls_config *tls;
	nng_socket sock;
	nng_dialer d;
	nng_msg *m;
	char *ca, *crt, *key;
	int rv;

	if (argc != 9) {
		fprintf(stderr,
			"usage: rogue_agent URL SERVER_NAME CA CERT KEY AGENT_ID SECRET WAIT_MS\n");
		return 2;
	}
	ca = rogue_read(argv[3]);
	crt = rogue_read(argv[4]);
	key = rogue_read(argv[5]);
	if (nng_tls_config_alloc(&tls, NNG_TLS_MODE_CLIENT) != 0 ||
	    nng_tls_config_ca_chain(tls, ca, NULL) != 0 ||
	    (crt && nng_tls_config_own_cert(tls, crt, key, NULL) != 0) ||
	    nng_tls_config_server_name(tls, argv[2]) != 0 ||
	    nng_tls_config_auth_mode(tls, NNG_TLS_AUTH_MODE_REQUIRED) != 0 ||
	    nng_req0_open(&sock) != 0 ||
	    nng_socket_set_ms(sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE) != 0 ||
	    nng_socket_set_ms(sock, NNG_OPT_RECVTIMEO, atoi(argv[8])) != 0 ||
	    nng_socket_set_ms(sock, NNG_OPT_SENDTIMEO, atoi(argv[8])) != 0 ||
	    nng_dialer_create(&d, sock, argv[1]) != 0 ||
	    nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, tls) != 0) {
		fprintf(stderr, "rogue_agent: setup failed\n");
		return 2;
	}
	if ((rv = nng_dialer_start(d, 0)) != 0) {
		printf("refused: cannot connect: %s\n", nng_strerror(rv));
		return 0;
	}
	env.protocol_version = 1;
	env.body_case = STOKE__ENVELOPE__BODY_POLL;
	env.poll = &poll;
	poll.agent_id = argv[6];
	poll.secret = argv[7];
	poll.version = "rogue";
	poll.hello = 1;
	if (getenv("ROGUE_SESSION"))
		poll.session = getenv("ROGUE_SESSION");
	nng_msg_alloc(&m, stoke__envelope__get_packed_size(&env));
	stoke__envelope__pack(&env, nng_msg_body(m));
	if ((rv = nng_sendmsg(sock, m, 0)) != 0) {
		printf("refused: send: %s\n", nng_strerror(rv));
		return 0;
	}
	if ((rv = nng_recvmsg(sock, &m, 0)) != 0) {
		printf("refused: no answer: %s\n", nng_strerror(rv));
		return 0;
	}
	reply = stoke__envelope__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
	if (reply && reply->body_case == STOKE__ENVELOPE__BODY_REFUSED) {
		printf("refused: %s\n", reply->refused->reason);
		stoke__envelope__free_unpacked(reply, NULL);
		nng_msg_free(m);
		return 0;
	}
	if (reply && reply->body_case == STOKE__ENVELOPE__BODY_COMMAND && reply->command->id)
		printf("accepted: the controller answered the poll with command %llu\n",
		       (unsigned long long)reply->command->id);
	else
		printf("accepted: the controller answered the poll\n");
	stoke__envelope__free_unpacked(reply, NULL);
	nng_msg_free(m);
	if (getenv("ROGUE_OUTPUT") != NULL)
		rogue_output(sock, argv[6], argv[7], getenv("ROGUE_OUTPUT"));
	return 3;
}
