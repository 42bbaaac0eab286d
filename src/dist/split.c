/* split: each rank's share of a list of items (dist.h). */
#include "dist/dist.h"

void dist_share(size_t n, int size, int rank, size_t *off, size_t *cnt)
{
    size_t s = (size_t)(size > 0 ? size : 1), r = (size_t)(rank > 0 ? rank : 0);
    size_t q = n / s, extra = n % s;
    *cnt = q + (r < extra ? 1 : 0);
    *off = r * q + (r < extra ? r : extra);
}

int dist_share_even(size_t n, int size, const char *what, size_t *per, err_t *e)
{
    if (size < 1 || n % (size_t)size)
        return err_set(e, ERR_INPUT, "%s %zu does not split evenly over %d ranks (--gpus): "
                       "use a multiple of %d", what, n, size, size);
    *per = n / (size_t)size;
    return ERR_OK;
}
