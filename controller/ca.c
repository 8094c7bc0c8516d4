/*
 * ca.c: the controller's CA over OpenSSL 3: creates the ECDSA P-256 CA and the server
 * certificate at first start, issues per-agent client certificates. Keys are written
 * atomically with mode 0600. Called by stoked at start-up and by enrollment.
 */
#include "ca.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "atomicfile.h"
#include "err.h"
#include "log.h"

#define CA_DAYS_CA (20 * 365)
#define CA_DAYS_LEAF (5 * 365)

static int
ca_ssl_err(char *err, size_t errlen, const char *what)
{
	char buf[256];

	ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
	return err_set(err, errlen, ERR_CRYPTO, "%s: %s", what, buf);
}

static char *
ca_pem_key(EVP_PKEY *k)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *out = NULL;
	long n;

	if (b && PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) == 1) {
		n = BIO_get_mem_data(b, &data);
		if ((out = malloc((size_t)n + 1)) != NULL) {
			memcpy(out, data, (size_t)n);
			out[n] = '\0';
		}
	}
	BIO_free(b);
	return out;
}

static char *
ca_pem_crt(X509 *x)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *out = NULL;
	long n;

	if (b && PEM_write_bio_X509(b, x) == 1) {
		n = BIO_get_mem_data(b, &data);
		if ((out = malloc((size_t)n + 1)) != NULL) {
			memcpy(out, data, (size_t)n);
			out[n] = '\0';
		}
	}
	BIO_free(b);
	return out;
}

static int
ca_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *ext;
	int ok;

	X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
	if ((ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value)) == NULL)
		return -1;
	ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok == 1 ? 0 : -1;
}

/* Makes a certificate for key `k` named cn, signed by (issuer, ikey), or self-signed. */
static X509 *
ca_make(EVP_PKEY *k, const char *cn, X509 *issuer, EVP_PKEY *ikey, int days, int kind)
{
	unsigned char serial[16];
	X509 *x = X509_new();
	BIGNUM *bn = NULL;
	char san[300];

	if (x == NULL)
		return NULL;
	RAND_bytes(serial, sizeof(serial));
	serial[0] &= 0x7f;
	bn = BN_bin2bn(serial, sizeof(serial), NULL);
	if (X509_set_version(x, 2) != 1 || bn == NULL ||
	    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL)
		goto fail;
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), (long)days * 86400);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "O", MBSTRING_ASC,
				   (const unsigned char *)"Stoke", -1, -1, 0);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				   (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : X509_get_subject_name(x));
	if (X509_set_pubkey(x, k) != 1)
		goto fail;
	if (kind == 0) { /* CA */
		if (ca_ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
		    ca_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") ||
		    ca_ext(x, x, NID_subject_key_identifier, "hash"))
			goto fail;
	} else {
		if (ca_ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE") ||
		    ca_ext(x, issuer, NID_key_usage, "critical,digitalSignature,keyAgreement") ||
		    ca_ext(x, issuer, NID_ext_key_usage, kind == 1 ? "serverAuth" : "clientAuth") ||
		    ca_ext(x, issuer, NID_authority_key_identifier, "keyid:always"))
			goto fail;
		if (kind == 1) {
			snprintf(san, sizeof(san), "DNS:%s", cn);
			if (ca_ext(x, issuer, NID_subject_alt_name, san))
				goto fail;
		}
	}
	if (X509_sign(x, ikey ? ikey : k, EVP_sha256()) == 0)
		goto fail;
	BN_free(bn);
	return x;
fail:
	BN_free(bn);
	X509_free(x);
	return NULL;
}

static int
ca_write(const char *dir, const char *name, const char *pem, mode_t mode, char *err, size_t errlen)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return atomicfile_write(path, pem, strlen(pem), mode, (uid_t)-1, (gid_t)-1, err, errlen);
}

static char *
ca_read(const char *dir, const char *name)
{
	char path[4096], e[256], *out = NULL;
	size_t n;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (atomicfile_read(path, 1 << 20, &out, &n, e, sizeof(e)) != 0)
		return NULL;
	return out;
}

static EVP_PKEY *
ca_key_parse(const char *pem)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;

	BIO_free(b);
	return k;
}

static X509 *
ca_crt_parse(const char *pem)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;

	BIO_free(b);
	return x;
}

/* Loads (or makes) the CA pair. */
static int
ca_root(const char *dir, X509 **crt, EVP_PKEY **key, char *err, size_t errlen)
{
	char *crt_pem = ca_read(dir, "ca.crt"), *key_pem = ca_read(dir, "ca.key");
	int rc = 0;

	*crt = NULL;
	*key = NULL;
	if (crt_pem && key_pem) {
		*crt = ca_crt_parse(crt_pem);
		*key = ca_key_parse(key_pem);
		if (*crt == NULL || *key == NULL)
			rc = err_set(err, errlen, ERR_CRYPTO, "%s/ca.crt or ca.key: cannot parse",
				     dir);
		goto out;
	}
	if (crt_pem || key_pem) {
		rc = err_set(err, errlen, ERR_CRYPTO,
			     "%s: ca.crt and ca.key must both exist (one is missing)", dir);
		goto out;
	}
	if ((*key = EVP_EC_gen("P-256")) == NULL) {
		rc = ca_ssl_err(err, errlen, "CA key");
		goto out;
	}
	if ((*crt = ca_make(*key, "Stoke controller CA", NULL, NULL, CA_DAYS_CA, 0)) == NULL) {
		rc = ca_ssl_err(err, errlen, "CA certificate");
		goto out;
	}
	free(crt_pem);
	free(key_pem);
	key_pem = ca_pem_key(*key);
	crt_pem = ca_pem_crt(*crt);
	if (key_pem == NULL || crt_pem == NULL) {
		rc = err_set(err, errlen, ERR_NOMEM, "out of memory");
		goto out;
	}
	/* The key first: a crash between the two leaves no certificate without its key. */
	if ((rc = ca_write(dir, "ca.key", key_pem, 0600, err, errlen)) != 0 ||
	    (rc = ca_write(dir, "ca.crt", crt_pem, 0644, err, errlen)) != 0)
		goto out;
	log_info("ca: created a new CA in %s", dir);
out:
	if (key_pem)
		explicit_bzero(key_pem, strlen(key_pem));
	free(key_pem);
	free(crt_pem);
	if (rc) {
		X509_free(*crt);
		EVP_PKEY_free(*key);
		*crt = NULL;
		*key = NULL;
	}
	return rc;
}

/* 1 if the certificate's DNS SAN is exactly name. */
static int
ca_has_name(X509 *x, const char *name)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	int i, found = 0;

	for (i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
		GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);

		if (g->type == GEN_DNS &&
		    strcmp((const char *)ASN1_STRING_get0_data(g->d.dNSName), name) == 0)
			found = 1;
	}
	GENERAL_NAMES_free(gens);
	return found;
}

static int
ca_leaf(const char *dir, X509 *cacrt, EVP_PKEY *cakey, const char *cn, int kind, char **crt_pem,
	char **key_pem, char *err, size_t errlen)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = NULL;

	(void)dir;
	*crt_pem = *key_pem = NULL;
	if (k == NULL)
		return ca_ssl_err(err, errlen, "key");
	if ((x = ca_make(k, cn, cacrt, cakey, CA_DAYS_LEAF, kind)) == NULL) {
		EVP_PKEY_free(k);
		return ca_ssl_err(err, errlen, "certificate");
	}
	*crt_pem = ca_pem_crt(x);
	*key_pem = ca_pem_key(k);
	X509_free(x);
	EVP_PKEY_free(k);
	if (*crt_pem == NULL || *key_pem == NULL) {
		free(*crt_pem);
		free(*key_pem);
		*crt_pem = *key_pem = NULL;
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	}
	return 0;
}

int
ca_load(const char *data_dir, const char *server_name, struct ca_files *out, char *err,
	size_t errlen)
{
	char dir[4096];
	X509 *cacrt = NULL, *srv = NULL;
	EVP_PKEY *cakey = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	snprintf(dir, sizeof(dir), "%s/ca", data_dir);
	if (mkdir(dir, 0700) == -1 && errno != EEXIST)
		return err_set(err, errlen, ERR_IO, "%s: %s", dir, strerror(errno));
	if ((rc = ca_root(dir, &cacrt, &cakey, err, errlen)) != 0)
		return rc;
	out->ca_crt = ca_pem_crt(cacrt);
	out->server_crt = ca_read(dir, "server.crt");
	out->server_key = ca_read(dir, "server.key");
	if (out->server_crt && out->server_key && (srv = ca_crt_parse(out->server_crt)) &&
	    ca_has_name(srv, server_name))
		goto done;
	free(out->server_crt);
	free(out->server_key);
	if ((rc = ca_leaf(dir, cacrt, cakey, server_name, 1, &out->server_crt, &out->server_key,
			  err, errlen)) != 0 ||
	    (rc = ca_write(dir, "server.key", out->server_key, 0600, err, errlen)) != 0 ||
	    (rc = ca_write(dir, "server.crt", out->server_crt, 0644, err, errlen)) != 0)
		goto fail;
	log_info("ca: issued the controller certificate for %s", server_name);
done:
	X509_free(srv);
	X509_free(cacrt);
	EVP_PKEY_free(cakey);
	return 0;
fail:
	X509_free(srv);
	X509_free(cacrt);
	EVP_PKEY_free(cakey);
	ca_files_fini(out);
	return rc;
}

void
ca_files_fini(struct ca_files *f)
{
	if (f->server_key)
		explicit_bzero(f->server_key, strlen(f->server_key));
	free(f->ca_crt);
	free(f->server_crt);
	free(f->server_key);
	memset(f, 0, sizeof(*f));
}

int
ca_issue_client(const char *data_dir, const char *agent_id, char **cert_pem, char **key_pem,
		char *err, size_t errlen)
{
	char dir[4096];
	X509 *cacrt;
	EVP_PKEY *cakey;
	int rc;

	snprintf(dir, sizeof(dir), "%s/ca", data_dir);
	if (mkdir(dir, 0700) == -1 && errno != EEXIST)
		return err_set(err, errlen, ERR_IO, "%s: %s", dir, strerror(errno));
	if ((rc = ca_root(dir, &cacrt, &cakey, err, errlen)) != 0)
		return rc;
	rc = ca_leaf(dir, cacrt, cakey, agent_id, 2, cert_pem, key_pem, err, errlen);
	X509_free(cacrt);
	EVP_PKEY_free(cakey);
	return rc;
}
