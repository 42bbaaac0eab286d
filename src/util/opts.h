/* opts: options declared once. A section of options (the "ppo" object of the configuration
 * file, say) is a C struct and a table of its fields; each row gives the JSON key, the type,
 * where the value lives, its default, its range, a help line and the command-line flag
 * that mirrors it (if any). From that one table come:
 *
 *   - the defaults                      opts_default
 *   - reading a JSON object             opts_from_json  (unknown keys rejected with the
 *                                       nearest key suggested; duplicate keys, wrong types
 *                                       and values out of range rejected naming the key)
 *   - writing it                        opts_to_json    (`mxrlhf config`, run records)
 *   - "KEY=VALUE" overrides             opts_set_json   (`--set`: VALUE as JSON, else text)
 *   - a flag's text                     opts_set_text   (`--steps 20`, `--formats a,b`)
 *   - help lines                        opts_keys + opts_ref_help
 *
 * Defaults are text in the command line's syntax ("42", "even", "8,16,32", "true"), parsed
 * by the same code as a flag, so a default cannot be of the wrong type or out of range
 * unnoticed (tests parse every table's defaults). A section can embed another struct's
 * table (OPT_SUB): its keys join the section's, in place, with defaults of its own
 * ("lr=3e-3;warmup_steps=20") and keys left out (they keep their defaults).
 *
 * Storage: OPT_INT int, OPT_LONG long, OPT_U64 uint64_t (seeds: a JSON integer up to 2^53
 * or a decimal string), OPT_DOUBLE double, OPT_BOOL bool, OPT_ENUM an int-sized enum,
 * OPT_STRING char[cap], OPT_LIST int[cap] of numbers or enum values with an int count.
 */
#ifndef MXRLHF_UTIL_OPTS_H
#define MXRLHF_UTIL_OPTS_H

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "util/err.h"

typedef enum opt_type {
    OPT_INT,
    OPT_LONG,
    OPT_U64,
    OPT_DOUBLE,
    OPT_BOOL,
    OPT_ENUM,
    OPT_STRING,
    OPT_LIST,
    OPT_SUB
} opt_type_t;

/* An enum's names: either a NULL-terminated array indexed by value, matched exactly, or a
 * module's own functions (name(v) for v in [0, count); parse accepts the names and any
 * aliases the module allows, returning 0 or -1). */
typedef struct opt_enum {
    const char *const *names;
    int count;
    const char *(*name)(int value);
    int (*parse)(const char *text, int *value);
} opt_enum_t;

/* Defines `const opt_enum_t id` from a module's own functions: const char *namefn(T) and
 * int parsefn(const char *, T *) returning 0 or -1 (declare it `extern const opt_enum_t
 * id;` in the module's header). */
#define OPT_ENUM_FUNCS(id, T, count_, namefn, parsefn)                                     \
    static const char *id##_name(int v) { return namefn((T)v); }                           \
    static int id##_parse(const char *s, int *v)                                           \
    {                                                                                      \
        T t_;                                                                              \
        if (parsefn(s, &t_))                                                               \
            return -1;                                                                     \
        *v = (int)t_;                                                                      \
        return 0;                                                                          \
    }                                                                                      \
    const opt_enum_t id = {NULL, (count_), id##_name, id##_parse}

typedef struct opt_table opt_table_t;

typedef struct opt_field {
    const char *key;        /* the JSON key                                                 */
    opt_type_t type;
    size_t off;             /* offsetof(struct, member)                                     */
    const char *def;        /* the default as text; OPT_SUB: "key=value;..." or NULL         */
    double min, max;        /* numbers (list elements): the inclusive range                */
    const char *help;       /* one line: what the value means                              */
    const char *flag;       /* the command-line flag mirroring the key ("max-prompt-tokens") */
    const opt_enum_t *en;   /* OPT_ENUM, and OPT_LIST of names                              */
    size_t cap;             /* OPT_STRING: bytes of the array; OPT_LIST: elements            */
    size_t count_off;       /* OPT_LIST: offsetof the int count                             */
    const opt_table_t *sub; /* OPT_SUB: the embedded struct's table                         */
    const char *omit;       /* OPT_SUB: "a,b": its keys that are not keys of this section  */
    const char *alias;      /* an older name the key is still read under (deprecated; never
                               written): "backend" for "device"                              */
} opt_field_t;

/* A row: OPT_KEY("steps", OPT_INT, offsetof(T, steps), "100", 1, 1e9, "PPO steps",
 * .flag = "steps"), the trailing designators optional (.flag, .en, .cap, .count_off). */
#define OPT_KEY(key_, type_, off_, def_, min_, max_, help_, ...)                           \
    {.key = (key_), .type = (type_), .off = (off_), .def = (def_), .min = (min_),           \
     .max = (max_), .help = (help_), __VA_ARGS__}

/* An embedded struct's keys: OPT_EMBED("optimizer", offsetof(T, optim), &its_table,
 * "lr=3e-3;warmup_steps=20"), optionally .omit = "a,b". */
#define OPT_EMBED(name_, off_, table_, defs_, ...)                                          \
    {.key = (name_), .type = OPT_SUB, .off = (off_), .def = (defs_), .sub = (table_),       \
     __VA_ARGS__}

struct opt_table {
    const char *name;       /* for messages ("ppo")                                         */
    size_t size;            /* sizeof the struct                                            */
    const opt_field_t *fields;
    int n;
    /* checks across fields, run after a read (NULL: none); ctx names the section */
    int (*check)(const void *opts, const char *ctx, err_t *e);
};

/* A table's check from a typed int fn(const T *, const char *ctx, err_t *). */
#define OPT_CHECK(name, T, fn)                                                             \
    static int name(const void *o_, const char *ctx_, err_t *e_)                           \
    {                                                                                      \
        return fn((const T *)o_, ctx_, e_);                                                \
    }

/* A number macro as a default: OPT_STR(DATA_DEFAULT_PAIRS) is "1000". */
#define OPT_STR(x) OPT_STR_(x)
#define OPT_STR_(x) #x

#define OPT_TABLE(name_, T, fields_, check_)                                               \
    {(name_), sizeof(T), (fields_), (int)(sizeof(fields_) / sizeof *(fields_)), (check_)}

/* A max meaning "no upper bound" (help and errors then say "at least min"). */
#define OPT_NO_MAX 1e308

/* The most keys a section (subs included) may have. */
#define OPT_MAX_KEYS 96

/* One key of a section with the subs resolved: its row, the value's offset in the
 * section's struct and its effective default. `hidden` rows (a sub's omitted keys) are
 * defaults only. */
typedef struct opt_ref {
    const opt_field_t *f;
    size_t off;
    const char *def;
    bool hidden;
} opt_ref_t;

/* Every key of a section in order, subs expanded. */
typedef struct opt_keys {
    int n;
    opt_ref_t ref[OPT_MAX_KEYS];
    char defs[2048]; /* overridden defaults, which ref[].def may point into */
} opt_keys_t;

void opts_keys(const opt_table_t *t, opt_keys_t *k);

/* The key's row, or NULL (hidden keys are not found). */
const opt_ref_t *opts_find(const opt_keys_t *k, const char *key);

/* The default of every key (the struct is zeroed first). */
void opts_default(const opt_table_t *t, void *opts);

/* Reads obj's keys over the values in opts (missing keys keep theirs; a sub's omitted keys
 * are set to their defaults), then t->check; opts changes only on success. obj NULL changes nothing. Errors name ctx and the key:
 * "cfg.json: sft: field \"lr\": expected a number in [0, 10]". */
int opts_from_json(const opt_table_t *t, const cJSON *obj, const char *ctx, void *opts,
                   err_t *e);

/* The struct as a JSON object, keys in table order (NULL on allocation failure). */
cJSON *opts_to_json(const opt_table_t *t, const void *opts);

/* "KEY=VALUE": VALUE parsed as JSON, or taken as a string when it is not JSON, then read
 * as opts_from_json reads {"KEY": VALUE}. */
int opts_set_json(const opt_table_t *t, void *opts, const char *assignment, const char *ctx,
                  err_t *e);

/* One key from command-line text: numbers, true/false, names, comma-separated lists.
 * Errors read "CTX: expected ..., got \"TEXT\"". The table's checks are not run: call
 * opts_check after the last key. */
int opts_set_text(const opt_table_t *t, void *opts, const char *key, const char *text,
                  const char *ctx, err_t *e);

/* A JSON file's object `section` read over opts; without one, the whole file when `whole`
 * (a file of just that section's keys), else nothing. */
int opts_load_file(const opt_table_t *t, const char *path, const char *section, bool whole,
                   void *opts, err_t *e);

/* t->check (ERR_OK without one). */
int opts_check(const opt_table_t *t, const void *opts, const char *ctx, err_t *e);

/* A help line for a key: its help, its range or choices and its default, e.g.
 * "PPO steps (1 to 1e+09; default 100)". */
void opts_ref_help(const opt_ref_t *r, char *buf, size_t cap);

/* The key of `keys` nearest to `key` (edit distance), for "did you mean" hints. */
const char *opts_nearest(const char *key, const char *const *keys, int n);

#endif
