/* safetensors: Hugging Face's tensor file, read by mmap and written atomically.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *  "__metadata__": {"key": "string"}}, then the data buffer. Offsets are relative to
 * the data buffer. Nothing in the header is trusted: the reader checks the header
 * length against the file size, each dtype, shape product (overflow included), that
 * end - begin equals what shape and dtype imply, that ranges lie inside the buffer and
 * do not overlap. Errors name the file and the tensor.
 *
 * Sub-byte dtypes: F4 (fp4 e2m1) holds two elements per byte, element 2i in the low
 * nibble (PyTorch's float4_e2m1fn_x2); F6_E3M2 and F6_E2M3 hold four elements per three
 * bytes, element i in bits [6i, 6i+6) of the little-endian bit stream. A tensor's byte
 * length is nelem * bits / 8 and must be whole.
 */
#ifndef MXRLHF_UTIL_SAFETENSORS_H
#define MXRLHF_UTIL_SAFETENSORS_H

#include <cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

typedef enum st_dtype {
    ST_BOOL, ST_U8, ST_I8, ST_I16, ST_U16, ST_I32, ST_U32, ST_I64, ST_U64,
    ST_F16, ST_BF16, ST_F32, ST_F64,
    ST_F8_E4M3, ST_F8_E5M2, ST_F8_E8M0,
    ST_F6_E3M2, ST_F6_E2M3, ST_F4,
    ST_DTYPE_COUNT
} st_dtype_t;

#define ST_MAX_DIMS 8

typedef struct st_tensor {
    const char *name;          /* owned by the file */
    st_dtype_t dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t nelem;
    const uint8_t *data;       /* inside the mapping; read-only */
    size_t nbytes;
} st_tensor_t;

typedef struct st_file {
    char *path;
    void *map;
    size_t map_len;
    st_tensor_t *tensors;      /* in data-offset order */
    int ntensors;
    cJSON *header;             /* parsed header (names point into it) */
    const cJSON *metadata;     /* "__metadata__" or NULL */
} st_file_t;

const char *st_dtype_name(st_dtype_t d);
int st_dtype_from_name(const char *name, st_dtype_t *out); /* 0, or -1 if unknown */
int st_dtype_bits(st_dtype_t d);
int st_dtype_is_float(st_dtype_t d);

/* Opens and validates a file. On error nothing is left open. */
int st_open(st_file_t *f, const char *path, err_t *e);

/* Validates an in-memory image (the fuzzer's entry point); `ctx` names it. The
 * tensors point into `buf`, which must outlive f; st_close does not free it. */
int st_parse(st_file_t *f, const uint8_t *buf, size_t len, const char *ctx, err_t *e);

void st_close(st_file_t *f);

const st_tensor_t *st_find(const st_file_t *f, const char *name);

/* A metadata string or NULL. */
const char *st_metadata(const st_file_t *f, const char *key);

/* Converts F32, F16, BF16, F64, F8_E4M3, F8_E5M2 elements to float32 (n = t->nelem).
 * Other dtypes are an error naming the tensor. */
int st_to_f32(const st_file_t *f, const st_tensor_t *t, float *out, err_t *e);

/* Reads a tensor that must have the given float32 shape (any float dtype); the error
 * names the file, the tensor and both shapes. */
int st_read_f32(const st_file_t *f, const char *name, int ndim, const int64_t *shape,
                float *out, err_t *e);

/* ---- writer ---------------------------------------------------------------- */

typedef struct st_writer st_writer_t;

st_writer_t *st_writer_new(err_t *e);
void st_writer_free(st_writer_t *w);

/* Adds a tensor; `data` (nbytes, which must match dtype and shape) is copied unless
 * `borrow` is set, in which case it must stay valid until st_writer_write. */
int st_writer_add(st_writer_t *w, const char *name, st_dtype_t dtype, int ndim,
                  const int64_t *shape, const void *data, size_t nbytes, int borrow, err_t *e);

/* Adds "__metadata__" string entries. */
int st_writer_meta(st_writer_t *w, const char *key, const char *value, err_t *e);

/* Writes tensors sorted by name (as the Python library does), header padded with
 * spaces to a multiple of 8, atomically. */
int st_writer_write(st_writer_t *w, const char *path, err_t *e);


#endif
