/* fuzz_tokenizer_encode: the encoder and decoder on arbitrary text, with two committed
 * tokenizers (run from the repository root). Invalid UTF-8 must be refused and produce
 * nothing; valid text must encode, decode to valid UTF-8, and for the plain trained
 * tokenizer re-encoding the decoded text must give the same ids (decoding gives back the
 * normalised text, and normalising again changes nothing). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"
#include "tokenizer/tokenizer.h"

static tok_t *load(const char *path)
{
    tok_t *t;
    err_t e = ERR_INIT;
    if (tok_load(path, &t, &e)) {
        fprintf(stderr, "fuzz_tokenizer_encode: %s (run from the repository root)\n", e.msg);
        abort();
    }
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static tok_t *plain, *flags;
    static tok_work_t *wp, *wf;
    if (!plain) {
        err_t e = ERR_INIT;
        plain = load("tests/fixtures/tokenizer/small_synthetic.json");
        flags = load("tests/fixtures/tokenizer/flags.json");
        if (tok_work_new(plain, &wp, &e) || tok_work_new(flags, &wf, &e))
            abort();
    }
    if (size > (1 << 16))
        return 0;
    const char *text = (const char *)data;
    bool valid = tok_utf8_check(text, size) == size;
    tok_ids_t a = {0}, b = {0};
    err_t e = ERR_INIT;
    int rc = tok_encode(flags, wf, text, size, &a, &e);
    if (valid != (rc == 0) || (!valid && (rc != ERR_INPUT || a.n)))
        abort();
    a.n = 0;
    rc = tok_encode(plain, wp, text, size, &a, &e);
    if (rc == 0) {
        char *s;
        size_t n;
        if (tok_decode(plain, a.ids, a.n, false, &s, &n, &e))
            abort();
        if (tok_utf8_check(s, n) != n)
            abort();
        if (tok_encode(plain, wp, s, n, &b, &e))
            abort();
        if (a.n != b.n || memcmp(a.ids, b.ids, a.n * sizeof(int32_t)))
            abort();
        free(s);
    }
    tok_ids_free(&a);
    tok_ids_free(&b);
    return 0;
}
