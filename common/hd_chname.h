/*
 * The rules for channel names (hd_chname_*; the channel table is hd_chan
 * in worker/): [A-Za-z0-9_.:@-], 1..255 bytes. The namespace is the part
 * before the first ':' (empty when there is no ':').
 */
#ifndef HD_CHNAME_H
#define HD_CHNAME_H

#include <stdbool.h>
#include <stddef.h>

#define HD_CHNAME_MAX 255

bool hd_chname_valid(const char *name, size_t len);
/* Tenant names (the JWT "tenant" claim, the HTTP API's "tenant"):
 * [A-Za-z0-9_.-], 1..HD_TENANT_MAX bytes. One rule for both, so a tenant
 * that can log in can also be published to. */
#define HD_TENANT_MAX 64
bool hd_tenant_valid(const char *name, size_t len);
/* Length of the namespace prefix (0 if none); *has_ns set when a ':' exists. */
size_t hd_chname_namespace(const char *name, size_t len, bool *has_ns);

#endif
