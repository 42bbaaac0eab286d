/* backend: opening backends by name. The ops themselves live in backend_<name>.c. */
#include "backend/backend.h"

#include <stdlib.h>
#include <string.h>

int be_open(const char *name, backend_t **out, err_t *e)
{
    *out = NULL;
    if (!name || !strcmp(name, "cpu"))
        return be_cpu_open(out, e);
    if (!strcmp(name, "cuda"))
        return be_cuda_open(out, e);
    if (!strncmp(name, "cuda:", 5) && name[5] >= '0' && name[5] <= '9') {
        char *end;
        long dev = strtol(name + 5, &end, 10);
        if (!*end && dev <= 1024)
            return be_cuda_open_device((int)dev, out, e);
    }
    return err_set(e, ERR_INPUT, "unknown device \"%s\" (expected cpu, cuda or cuda:N)", name);
}

void be_close(backend_t *be)
{
    if (be)
        be->ops->destroy(be);
}

const char *be_name(const backend_t *be) { return be ? be->ops->name : "none"; }

bool be_dec_native(const mx_spec_t *weight, const mx_spec_t *input, prec_compute_t compute)
{
    if (compute == PREC_COMPUTE_FP16)
        return false;
    const bool bf16 = compute == PREC_COMPUTE_BF16;
    return (bf16 || weight->format == MX_BF16 || mx_format_info(weight->format)->is_mx) &&
           (bf16 || input->format == MX_BF16 || mx_format_info(input->format)->is_mx);
}
