/* mxrlhf tokenize: text -> ids and back with a Hugging Face tokenizer.json, and
 * `mxrlhf tokenize train` to learn a small byte-level BPE vocabulary. Parsing and
 * printing only; the work is in tokenizer/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "tokenizer/tokenizer.h"
#include "util/atomic_file.h"
#include "util/json.h"

static const char DETAILS[] =
    "Encoding prints {\"ids\": [...]}. With --jsonl, each input line {\"text\": \"...\"} gives\n"
    "one output line {\"ids\": [...]} (blank lines are skipped). The ids equal Hugging Face\n"
    "tokenizers' encode(text).ids; special tokens written in the text (<|im_end|>) become\n"
    "their ids, as there.\n"
    "\n"
    "--decode turns ids back into text: --ids 1,2,3 prints {\"text\": \"...\"}; with --jsonl,\n"
    "lines {\"ids\": [...]} give lines {\"text\": \"...\"}. Bytes that do not form UTF-8\n"
    "become U+FFFD, as in Hugging Face's decoder.\n"
    "\n"
    "--chat renders ChatML before encoding: --text is one user message; --jsonl lines are\n"
    "{\"messages\": [{\"role\": \"user\", \"content\": \"...\"}, ...]}. A final\n"
    "\"<|im_start|>assistant\\n\" is appended (unless a line says\n"
    "\"add_generation_prompt\": false). No default system message is added.\n"
    "\n"
    "Text that is not valid UTF-8 is refused (exit 2) naming the byte offset; so is\n"
    "\\u0000 in --jsonl input (the JSON reader cannot carry it).\n"
    "\n"
    "Training: mxrlhf tokenize train --corpus FILE --vocab-size N --out tokenizer.json\n"
    "  (mxrlhf tokenize train --help for its options)";

static const char TRAIN_DETAILS[] =
    "Learns byte-level BPE with Qwen2's pre-tokenization (NFC, Qwen2's split regex) and\n"
    "writes a tokenizer.json that Hugging Face tokenizers loads and encodes identically.\n"
    "The corpus is a .jsonl file of {\"text\": \"...\"} lines, or any other file read as one\n"
    "text. Ids 0..255 are the bytes; learnt tokens follow; <|endoftext|>, <|im_start|>,\n"
    "<|im_end|> come last (N includes them). Each step merges the most frequent adjacent\n"
    "pair; ties go to the smaller left id, then the smaller right id. Training stops at N\n"
    "tokens or when the best pair occurs fewer than --min-frequency times.";

/* ---- output -------------------------------------------------------------------------- */

static void print_ids(FILE *f, const int32_t *ids, size_t n)
{
    fputs("{\"ids\": [", f);
    for (size_t i = 0; i < n; i++)
        fprintf(f, i ? ", %d" : "%d", ids[i]);
    fputs("]}\n", f);
}

/* JSON string with its length (decoded text may hold U+0000, which C strings cannot). */
static void print_text(FILE *f, const char *text, size_t len)
{
    fputs("{\"text\": \"", f);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        switch (c) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        default:
            if (c < 0x20)
                fprintf(f, "\\u%04x", c);
            else
                fputc(c, f);
        }
    }
    fputs("\"}\n", f);
}

/* cJSON ends strings at U+0000, so a "\u0000" escape would silently cut the text: refuse
 * it instead (an odd number of backslashes before "u0000" makes it an escape). */
static bool has_nul_escape(const char *s, size_t n)
{
    for (size_t i = 0; i + 6 <= n; i++) {
        if (s[i] != '\\' || s[i + 1] != 'u' || strncmp(s + i + 2, "0000", 4))
            continue;
        size_t k = 0;
        while (k < i && s[i - 1 - k] == '\\')
            k++;
        if (k % 2 == 0)
            return true;
    }
    return false;
}

/* ---- one unit of work ---------------------------------------------------------------- */

typedef struct job {
    const tok_t *t;
    tok_work_t *w;
    bool decode, skip_special, chat;
    tok_ids_t ids;
} job_t;

static int parse_id_list(const char *s, tok_ids_t *ids, err_t *e)
{
    const char *p = s;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > INT32_MAX || (*end && *end != ','))
            return err_set(e, ERR_INPUT, "--ids: expected comma-separated non-negative integers, got \"%s\"", s);
        if (tok_ids_push(ids, (int32_t)v, e))
            return ERR_NOMEM;
        p = *end ? end + 1 : end;
    }
    return ERR_OK;
}

static int do_decode(job_t *j, FILE *f, err_t *e)
{
    char *text;
    size_t len;
    int rc = tok_decode(j->t, j->ids.ids, j->ids.n, j->skip_special, &text, &len, e);
    if (rc)
        return rc;
    print_text(f, text, len);
    free(text);
    return ERR_OK;
}

/* Messages of a {"messages": [...]} line; strings stay owned by the cJSON tree. */
static int read_messages(const cJSON *root, const char *ctx, tok_msg_t **msgs, size_t *n,
                         err_t *e)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!cJSON_IsArray(arr))
        return err_set(e, ERR_INPUT, "%s: field \"messages\": expected an array of {role, content}",
                       ctx);
    size_t k = (size_t)cJSON_GetArraySize(arr), i = 0;
    *msgs = err_calloc(e, k + 1, sizeof **msgs, "chat messages");
    if (!*msgs)
        return ERR_NOMEM;
    const cJSON *m;
    cJSON_ArrayForEach(m, arr)
    {
        char c[600];
        snprintf(c, sizeof c, "%s: messages[%zu]", ctx, i);
        if (json_req_string(m, "role", c, &(*msgs)[i].role, e) ||
            json_req_string(m, "content", c, &(*msgs)[i].content, e)) {
            free(*msgs);
            *msgs = NULL;
            return ERR_INPUT;
        }
        i++;
    }
    *n = k;
    return ERR_OK;
}

static int run_jsonl(job_t *j, const char *in, FILE *out, err_t *e)
{
    FILE *f = strcmp(in, "-") ? fopen(in, "rb") : stdin;
    if (!f)
        return err_errno(e, ERR_INPUT, "cannot open %s", in);
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t got;
    int rc = ERR_OK;
    while (!rc && (got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t n = (size_t)got;
        size_t k = 0;
        while (k < n && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r' || line[k] == '\n'))
            k++;
        if (k == n)
            continue;
        char ctx[600];
        snprintf(ctx, sizeof ctx, "%s:%zu", in, lineno);
        if (has_nul_escape(line, n)) {
            rc = err_set(e, ERR_INPUT, "%s: \\u0000 in the input is not supported", ctx);
            break;
        }
        cJSON *root;
        if ((rc = json_parse(line, n, ctx, &root, e)))
            break;
        j->ids.n = 0;
        if (j->decode) {
            const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "ids");
            const cJSON *v;
            size_t i = 0;
            if (!cJSON_IsArray(arr))
                rc = err_set(e, ERR_INPUT, "%s: field \"ids\": expected an array of integers", ctx);
            cJSON_ArrayForEach(v, arr)
            {
                if (rc)
                    break;
                if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > INT32_MAX ||
                    v->valuedouble != (double)(int32_t)v->valuedouble)
                    rc = err_set(e, ERR_INPUT, "%s: field \"ids[%zu]\": expected a non-negative integer",
                                 ctx, i);
                else
                    rc = tok_ids_push(&j->ids, (int32_t)v->valuedouble, e);
                i++;
            }
            if (!rc && (rc = do_decode(j, out, e)))
                err_prefix(e, "%s", ctx);
        } else if (j->chat) {
            tok_msg_t *msgs = NULL;
            size_t nm = 0;
            bool gen = true;
            if (!(rc = read_messages(root, ctx, &msgs, &nm, e)) &&
                !(rc = json_opt_bool(root, "add_generation_prompt", ctx, true, &gen, e))) {
                if ((rc = tok_encode_chat(j->t, j->w, msgs, nm, gen, &j->ids, e)))
                    err_prefix(e, "%s", ctx);
                else
                    print_ids(out, j->ids.ids, j->ids.n);
            }
            free(msgs);
        } else {
            const cJSON *text = cJSON_GetObjectItemCaseSensitive(root, "text");
            if (!cJSON_IsString(text)) {
                rc = err_set(e, ERR_INPUT, "%s: field \"text\": missing or not a string", ctx);
            } else if ((rc = tok_encode(j->t, j->w, text->valuestring, strlen(text->valuestring),
                                        &j->ids, e))) {
                err_prefix(e, "%s: field \"text\"", ctx);
            } else {
                print_ids(out, j->ids.ids, j->ids.n);
            }
        }
        cJSON_Delete(root);
    }
    if (!rc && ferror(f))
        rc = err_errno(e, ERR_FAIL, "reading %s", in);
    free(line);
    if (f != stdin)
        fclose(f);
    return rc;
}

/* ---- train --------------------------------------------------------------------------- */

static int cmd_tokenize_train(int argc, char **argv)
{
    const char *corpus = NULL, *out = NULL;
    long long vocab = 0, min_freq = 2;
    arg_opt_t opts[] = {
        {"corpus", ARG_STRING, &corpus, "FILE", "training text (.jsonl of {\"text\"}, else one text)"},
        {"vocab-size", ARG_INT, &vocab, "N", "vocabulary size, special tokens included (>= 259)"},
        {"out", ARG_STRING, &out, "FILE", "tokenizer.json to write"},
        {"min-frequency", ARG_INT, &min_freq, "N", "stop when the best pair is rarer (default 2)"},
    };
    arg_spec_t spec = {"tokenize train", "Train a byte-level BPE tokenizer (Qwen2 style).",
                       "--corpus FILE --vocab-size N --out FILE [--min-frequency N]",
                       TRAIN_DETAILS, opts, (int)(sizeof opts / sizeof opts[0]), false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    if (!rc && !(rc = args_require(corpus, "corpus", &e)) && !(rc = args_require(out, "out", &e))) {
        if (vocab < 259 || vocab > (1 << 24))
            rc = err_set(&e, ERR_INPUT, "--vocab-size: expected 259 .. %d, got %lld", 1 << 24, vocab);
        else if (min_freq < 1)
            rc = err_set(&e, ERR_INPUT, "--min-frequency: expected at least 1, got %lld", min_freq);
    }
    if (!rc) {
        tok_train_opts_t o = {(long)vocab, (long)min_freq};
        rc = tok_train_file(corpus, &o, out, &e);
    }
    return cli_report("tokenize train", &e);
}

/* ---- main ---------------------------------------------------------------------------- */

int cmd_tokenize(int argc, char **argv)
{
    if (argc > 0 && !strcmp(argv[0], "train"))
        return cmd_tokenize_train(argc - 1, argv + 1);
    const char *tokenizer = NULL, *text = NULL, *jsonl = NULL, *id_list = NULL, *out_path = NULL;
    bool decode = false, skip_special = false, chat = false;
    arg_opt_t opts[] = {
        {"tokenizer", ARG_STRING, &tokenizer, "FILE", "Hugging Face tokenizer.json (byte-level BPE)"},
        {"text", ARG_STRING, &text, "TEXT", "encode this text"},
        {"jsonl", ARG_STRING, &jsonl, "IN", "one JSON object a line (\"-\": standard input)"},
        {"out", ARG_STRING, &out_path, "FILE", "write the output lines here (default: stdout)"},
        {"decode", ARG_FLAG, &decode, NULL, "ids -> text (with --ids or --jsonl)"},
        {"ids", ARG_STRING, &id_list, "LIST", "ids to decode, comma-separated"},
        {"skip-special", ARG_FLAG, &skip_special, NULL, "decode: leave special tokens out"},
        {"chat", ARG_FLAG, &chat, NULL, "encode ChatML (see below)"},
    };
    arg_spec_t spec = {"tokenize", "Encode text to token ids, or decode ids, with a tokenizer.json.",
                       "--tokenizer FILE (--text TEXT | --jsonl IN | --decode (--ids LIST | --jsonl IN)) "
                       "[--chat] [--out FILE]\n       mxrlhf tokenize train --corpus FILE --vocab-size N "
                       "--out FILE",
                       DETAILS, opts, (int)(sizeof opts / sizeof opts[0]), false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    if (rc)
        return cli_report("tokenize", &e);
    if ((rc = args_require(tokenizer, "tokenizer", &e)))
        return cli_report("tokenize", &e);
    int inputs = (text != NULL) + (jsonl != NULL) + (id_list != NULL);
    if (inputs != 1)
        err_set(&e, ERR_INPUT, "give exactly one of --text, --jsonl, --ids (see --help)");
    else if (decode && text)
        err_set(&e, ERR_INPUT, "--decode takes --ids or --jsonl, not --text");
    else if (!decode && id_list)
        err_set(&e, ERR_INPUT, "--ids needs --decode");
    else if (decode && chat)
        err_set(&e, ERR_INPUT, "--chat applies to encoding only");
    else if (skip_special && !decode)
        err_set(&e, ERR_INPUT, "--skip-special applies to --decode only");
    if (e.code)
        return cli_report("tokenize", &e);

    job_t j = {.decode = decode, .skip_special = skip_special, .chat = chat};
    tok_t *t = NULL;
    if ((rc = tok_load(tokenizer, &t, &e)))
        return cli_report("tokenize", &e);
    j.t = t;
    atomic_file_t af = {0};
    FILE *out = stdout;
    if (!(rc = tok_work_new(t, &j.w, &e)) && out_path && !(rc = atomic_open(&af, out_path, &e)))
        out = af.fp;
    if (!rc) {
        if (jsonl) {
            rc = run_jsonl(&j, jsonl, out, &e);
        } else if (decode) {
            if (!(rc = parse_id_list(id_list, &j.ids, &e)))
                rc = do_decode(&j, out, &e);
        } else if (chat) {
            tok_msg_t m = {"user", text};
            if (!(rc = tok_encode_chat(t, j.w, &m, 1, true, &j.ids, &e)))
                print_ids(out, j.ids.ids, j.ids.n);
        } else if (!(rc = tok_encode(t, j.w, text, strlen(text), &j.ids, &e))) {
            print_ids(out, j.ids.ids, j.ids.n);
        } else {
            err_prefix(&e, "--text");
        }
    }
    if (out_path && af.fp) {
        if (rc)
            atomic_abort(&af);
        else
            rc = atomic_commit(&af, &e);
    } else if (!rc && fflush(stdout) != 0) {
        rc = err_errno(&e, ERR_FAIL, "writing standard output");
    }
    tok_ids_free(&j.ids);
    tok_work_free(j.w);
    tok_free(t);
    return cli_report("tokenize", &e);
}
