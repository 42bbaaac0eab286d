/* Tests for src/util/safetensors: round trip, Hugging Face's byte layout, and every kind
 * of lying header the reader must refuse with an error naming file and tensor. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/testutil.h"
#include "util/fs.h"
#include "util/half.h"
#include "util/safetensors.h"

/* Builds an image: u64 header length, header text padded to 8, then `data`. */
static uint8_t *image(const char *header, const void *data, size_t ndata, size_t *len)
{
    size_t h = strlen(header), hp = (h + 7) / 8 * 8;
    uint8_t *b = calloc(1, 8 + hp + ndata);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)hp >> (8 * i));
    memcpy(b + 8, header, h);
    memset(b + 8 + h, ' ', hp - h);
    if (ndata)
        memcpy(b + 8 + hp, data, ndata);
    *len = 8 + hp + ndata;
    return b;
}

static void expect_refused(const char *header, size_t ndata, const char *needle)
{
    uint8_t data[64] = {0};
    size_t len;
    uint8_t *b = image(header, data, ndata, &len);
    st_file_t f;
    err_t e = ERR_INIT;
    int rc = st_parse(&f, b, len, "bad.safetensors", &e);
    if (rc != ERR_INPUT || !strstr(e.msg, needle))
        fail_msg("header %s: expected an error containing \"%s\", got rc %d \"%s\"", header,
                 needle, rc, e.msg);
    assert_non_null(strstr(e.msg, "bad.safetensors"));
    free(b);
}

static void writer_output_reads_back(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *path = fs_join(dir, "t.safetensors");
    err_t e = ERR_INIT;
    st_writer_t *w = st_writer_new(&e);
    float a[6] = {1, -2, 3.5f, 0, 1e-3f, 65504};
    uint16_t hb[3] = {half_f32_to_bf16(1.5f), half_f32_to_bf16(-0.25f), half_f32_to_bf16(3)};
    uint8_t f4[3] = {0x21, 0x43, 0x65}; /* 6 fp4 elements, two per byte */
    int64_t s23[2] = {2, 3}, s3[1] = {3}, s6[1] = {6};
    assert_int_equal(st_writer_add(w, "z.weight", ST_F32, 2, s23, a, sizeof a, 0, &e), 0);
    assert_int_equal(st_writer_add(w, "a.bias", ST_BF16, 1, s3, hb, sizeof hb, 1, &e), 0);
    assert_int_equal(st_writer_add(w, "q.elems", ST_F4, 1, s6, f4, sizeof f4, 0, &e), 0);
    assert_int_equal(st_writer_meta(w, "format", "pt", &e), 0);
    assert_int_equal(st_writer_write(w, path, &e), 0);
    st_writer_free(w);

    st_file_t f;
    assert_int_equal(st_open(&f, path, &e), 0);
    assert_int_equal(f.ntensors, 3);
    assert_string_equal(st_metadata(&f, "format"), "pt");
    /* Sorted by name, as the Python library writes them. */
    assert_string_equal(f.tensors[0].name, "a.bias");
    assert_string_equal(f.tensors[2].name, "z.weight");
    float back[6];
    assert_int_equal(st_read_f32(&f, "z.weight", 2, s23, back, &e), 0);
    assert_memory_equal(back, a, sizeof a);
    assert_int_equal(st_read_f32(&f, "a.bias", 1, s3, back, &e), 0);
    assert_true(back[0] == 1.5f && back[1] == -0.25f && back[2] == 3);
    const st_tensor_t *t = st_find(&f, "q.elems");
    assert_int_equal(t->dtype, ST_F4);
    assert_int_equal(t->nbytes, 3);
    assert_memory_equal(t->data, f4, 3);
    /* Wrong expected shape: the error names tensor and both shapes. */
    int64_t s32[2] = {3, 2};
    assert_int_equal(st_read_f32(&f, "z.weight", 2, s32, back, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "has shape [2, 3], expected [3, 2]"));
    st_close(&f);
    free(path);
    test_rmtree(dir);
    free(dir);
}

/* The exact bytes huggingface/safetensors writes for {"a": zeros(2, f32)} with
 * metadata {"format": "pt"}: header first, padded with spaces to 8 bytes. */
static void writer_matches_reference_layout(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *path = fs_join(dir, "ref.safetensors");
    err_t e = ERR_INIT;
    st_writer_t *w = st_writer_new(&e);
    float z[2] = {0, 0};
    int64_t s[1] = {2};
    assert_int_equal(st_writer_add(w, "a", ST_F32, 1, s, z, 8, 0, &e), 0);
    assert_int_equal(st_writer_meta(w, "format", "pt", &e), 0);
    assert_int_equal(st_writer_write(w, path, &e), 0);
    st_writer_free(w);
    const char *hdr =
        "{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
        "\"data_offsets\":[0,8]}}";
    size_t len;
    uint8_t *want = image(hdr, z, 8, &len);
    char *got;
    size_t glen;
    assert_int_equal(fs_read_all(path, 1 << 20, &got, &glen, &e), 0);
    assert_int_equal(glen, len);
    assert_memory_equal(got, want, len);
    free(got);
    free(want);
    free(path);
    test_rmtree(dir);
    free(dir);
}

static void lying_headers_are_refused(void **state)
{
    (void)state;
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8,
                   "past the data");
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
                   "needs 12");
    expect_refused("{\"a\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                   "unknown dtype \"F33\"");
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8,
                   "shape[0]");
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8,
                   "begin <= end");
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                   12, "overlaps");
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
                   "gap");
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8,
                   "after the last tensor");
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                   "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                   8, "appears twice");
    expect_refused("{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2,
                   "not whole bytes");
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
                   "\"data_offsets\":[0,8]}}", 8, "too large");
    expect_refused("{\"__metadata__\":{\"k\":1}}", 0, "must be a string");
    expect_refused("{\"a\":[1,2]}", 0, "expected an object");
    expect_refused("{\"a\":{\"dtype\":\"F32\"", 0, "not a valid JSON");
    expect_refused("[1]", 0, "start with '{'");
}

static void header_length_past_file_is_refused(void **state)
{
    (void)state;
    uint8_t b[16] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, '{', '}'};
    st_file_t f;
    err_t e = ERR_INIT;
    assert_int_equal(st_parse(&f, b, sizeof b, "x.safetensors", &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "exceeds the file"));
    err_clear(&e);
    assert_int_equal(st_parse(&f, b, 5, "x.safetensors", &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "too short"));
    err_clear(&e);
    assert_int_equal(st_open(&f, "/nonexistent/model.safetensors", &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "/nonexistent/model.safetensors"));
}

static void fp8_and_half_decode_exactly(void **state)
{
    (void)state;
    /* e4m3: 0x7e = 448 (max), 0x01 = 2^-9 (min subnormal), 0xb8 = -1; 0x7f NaN.
     * e5m2: 0x7b = 57344 (max), 0x7c = inf, 0x01 = 2^-16. */
    uint8_t e4[4] = {0x7e, 0x01, 0xb8, 0x7f}, e5[3] = {0x7b, 0x7c, 0x01};
    const char *hdr = "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]},"
                      "\"b\":{\"dtype\":\"F8_E5M2\",\"shape\":[3],\"data_offsets\":[4,7]}}";
    uint8_t data[7];
    memcpy(data, e4, 4);
    memcpy(data + 4, e5, 3);
    size_t len;
    uint8_t *b = image(hdr, data, 7, &len);
    st_file_t f;
    err_t e = ERR_INIT;
    assert_int_equal(st_parse(&f, b, len, "f8", &e), 0);
    float v[4];
    assert_int_equal(st_to_f32(&f, st_find(&f, "a"), v, &e), 0);
    assert_true(v[0] == 448.0f && v[1] == 0x1p-9f && v[2] == -1.0f && isnan(v[3]));
    assert_int_equal(st_to_f32(&f, st_find(&f, "b"), v, &e), 0);
    assert_true(v[0] == 57344.0f && isinf(v[1]) && v[2] == 0x1p-16f);
    st_close(&f);
    free(b);
    /* fp16 round trip over every bit pattern that is not NaN. */
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff))
            continue;
        uint16_t back = half_f32_to_f16(half_f16_to_f32((uint16_t)h));
        if (back != h)
            fail_msg("fp16 %04x -> %g -> %04x", h, half_f16_to_f32((uint16_t)h), back);
    }
    /* Rounding to nearest even at the half-way points. */
    assert_int_equal(half_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);                /* tie -> even */
    assert_int_equal(half_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);            /* tie -> even */
    assert_int_equal(half_f32_to_f16(65520.0f), 0x7c00);                      /* to inf */
    assert_int_equal(half_f32_to_f16(65519.0f), 0x7bff);
    assert_int_equal(half_f32_to_f16(0x1p-25f), 0x0000);                       /* tie -> 0 */
    assert_int_equal(half_f32_to_f16(0x1.8p-25f), 0x0001);
    assert_int_equal(half_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);               /* tie -> even */
    assert_int_equal(half_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(writer_output_reads_back),
        cmocka_unit_test(writer_matches_reference_layout),
        cmocka_unit_test(lying_headers_are_refused),
        cmocka_unit_test(header_length_past_file_is_refused),
        cmocka_unit_test(fp8_and_half_decode_exactly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
