/* fuzz_tokenizer_json: tok_load_json on arbitrary bytes. A file either loads or is refused
 * with ERR_INPUT and a message; what loads must encode and decode without faults. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"

static const char SAMPLE[] = "Hello, WORLD! DON'T  stop\r\n\tcafe\xCC\x81 \xE6\x97\xA5\xE6\x9C\xAC 123 "
                             "<|im_start|>user\nhi<|im_end|> <mask> \xF0\x9F\x98\x80 end ";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1 << 20))
        return 0;
    tok_t *t = NULL;
    err_t e = ERR_INIT;
    int rc = tok_load_json((const char *)data, size, "fuzz.json", &t, &e);
    if (rc) {
        if (!e.msg[0] || (rc != ERR_INPUT && rc != ERR_NOMEM))
            abort();
        return 0;
    }
    tok_ids_t ids = {0};
    if (tok_encode(t, NULL, SAMPLE, sizeof SAMPLE - 1, &ids, &e) == 0) {
        for (size_t i = 0; i < ids.n; i++)
            if (!tok_id_token(t, ids.ids[i], NULL))
                abort(); /* every id produced names a token */
        char *s;
        if (tok_decode(t, ids.ids, ids.n, false, &s, NULL, &e) == 0)
            free(s);
    } else if (e.code != ERR_FAIL) {
        abort(); /* the sample is valid UTF-8: only a regex failure may stop it */
    }
    /* Decode every id once. */
    int32_t n = tok_vocab_size(t);
    for (int32_t id = 0; id < n && id < 4096; id++) {
        char *s;
        err_t e2 = ERR_INIT;
        if (tok_decode(t, &id, 1, id & 1, &s, NULL, &e2) == 0)
            free(s);
    }
    tok_ids_free(&ids);
    tok_free(t);
    return 0;
}
