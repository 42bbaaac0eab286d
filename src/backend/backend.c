/* backend: opening backends by name. The ops themselves live in backend_<name>.c. */
#include "backend/backend.h"

#include <string.h>

int be_open(const char *name, backend_t **out, err_t *e)
{
    *out = NULL;
    if (!name || !strcmp(name, "cpu"))
        return be_cpu_open(out, e);
    if (!strcmp(name, "cuda"))
        return err_set(e, ERR_UNAVAILABLE, "backend \"cuda\" is not built in this version "
                       "(available: cpu)");
    return err_set(e, ERR_INPUT, "unknown backend \"%s\" (available: cpu)", name);
}

void be_close(backend_t *be)
{
    if (be)
        be->ops->destroy(be);
}

const char *be_name(const backend_t *be) { return be ? be->ops->name : "none"; }
