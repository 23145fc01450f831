/* Status names and messages, and the library version. */
#include "kiln.h"

static const char *const status_messages[] = {
#define KILN_STATUS_MSG_(name, msg) msg,
    KILN_STATUS_MAP(KILN_STATUS_MSG_)
#undef KILN_STATUS_MSG_
};

static const char *const status_names[] = {
#define KILN_STATUS_NAME_(name, msg) #name,
    KILN_STATUS_MAP(KILN_STATUS_NAME_)
#undef KILN_STATUS_NAME_
};

const char *kiln_strerror(kiln_status status)
{
    if ((unsigned)status >= KILN_STATUS_COUNT_) return "unknown status";
    return status_messages[status];
}

const char *kiln_status_name(kiln_status status)
{
    if ((unsigned)status >= KILN_STATUS_COUNT_) return "UNKNOWN";
    return status_names[status];
}

const char *kiln_version(void)
{
    return KILN_VERSION_STRING;
}

unsigned kiln_version_hex(void)
{
    return KILN_VERSION_HEX;
}
