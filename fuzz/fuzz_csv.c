/* libFuzzer target: the CSV reader (report/csv_read.h) on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>

#include "report/csv_read.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    csv_table_t t;
    err_t e = ERR_INIT;
    if (csv_parse((const char *)data, size, "fuzz.csv", &t, &e) == ERR_OK) {
        for (int r = 0; r < t.nrows; r++)
            for (int c = 0; c < t.ncols; c++) {
                double v;
                bool b;
                err_clear(&e);
                (void)csv_cell_double(&t, r, c, &v, &e);
                err_clear(&e);
                (void)csv_cell_bool(&t, r, c, &b, &e);
            }
        csv_table_free(&t);
    }
    return 0;
}
