/*
 * The API's bearer token. With `server.auth: true` the server keeps one
 * token in DATA_DIR/token (mode 0600): generated from getrandom() on the
 * first start and printed once on stderr, read on later starts. Endpoints
 * that change state, and invocations when `server.auth_invoke` is set,
 * need "Authorization: Bearer <token>".
 */
#ifndef KILN_SERVER_AUTH_H
#define KILN_SERVER_AUTH_H

#include <stddef.h>

#define AUTH_TOKEN_CHARS 64 /* hex of 32 random bytes */

/* Loads or creates the token file in data_dir; token gets
 * AUTH_TOKEN_CHARS + 1 bytes. *created is set when it was generated now.
 * 0, or -1 with the reason in err. */
int auth_load_or_create(const char *data_dir, char *token, int *created, char *err, size_t errlen);

/* 1 when the Authorization header value carries `token`, compared in
 * constant time; 0 otherwise (NULL header included). */
int auth_check(const char *token, const char *authorization);

#endif
