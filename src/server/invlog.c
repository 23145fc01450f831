/* The invocation log hook (see invlog.h). */
#include "invlog.h"

static invlog_sink g_sink;
static void *g_ctx;

void invlog_set_sink(invlog_sink sink, void *ctx)
{
    g_sink = sink;
    g_ctx = ctx;
}

void invlog_emit(const invocation_record *rec)
{
    if (g_sink) g_sink(g_ctx, rec);
}
