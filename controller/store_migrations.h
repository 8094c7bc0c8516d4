/* store_migrations.h: the schema migrations table; migration N is store_migrations[N-1]. */
#ifndef STOKE_STORE_MIGRATIONS_H
#define STOKE_STORE_MIGRATIONS_H

extern const char *const store_migrations[];
extern const int store_nmigrations;

#endif
