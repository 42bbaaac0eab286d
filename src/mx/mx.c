/* mx: format table, names and specs (see mx.h). The arithmetic is in mx_quant.c. */
#include "mx/mx.h"

#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mx/mx_internal.h"

/* max_normal: e4m3 1.75*2^8 (OCP E4M3 has no Inf; S.1111.111 is NaN, so 1.75 is the
 * largest mantissa at emax), e5m2 1.75*2^15, e3m2 1.75*2^4, e2m3 1.875*2^2,
 * e2m1 1.5*2^2, int8 127/64, int4 7/4. */
static const mx_format_info_t infos[MX_FORMAT_COUNT] = {
    {MX_FP8_E4M3, "mxfp8_e4m3", "mxfp8", "fp8_e4m3", 8, 4, 3, 8, 448.0, true, false, true},
    {MX_FP8_E5M2, "mxfp8_e5m2", NULL, "fp8_e5m2", 8, 5, 2, 15, 57344.0, true, false, true},
    {MX_FP6_E3M2, "mxfp6_e3m2", "mxfp6", "fp6_e3m2", 6, 3, 2, 4, 28.0, true, false, true},
    {MX_FP6_E2M3, "mxfp6_e2m3", NULL, "fp6_e2m3", 6, 2, 3, 2, 7.5, true, false, true},
    {MX_FP4_E2M1, "mxfp4_e2m1", "mxfp4", "fp4_e2m1", 4, 2, 1, 2, 6.0, true, false, true},
    {MX_INT8, "mxint8", NULL, "int8", 8, 0, 6, 0, 127.0 / 64.0, true, true, true},
    {MX_INT4, "mxint4", NULL, "int4", 4, 0, 2, 0, 7.0 / 4.0, true, true, false},
    {MX_BF16, "bf16", NULL, "bfloat16", 16, 8, 7, 127, 3.38953138925153547590e38, false, false,
     false},
    {MX_FP16, "fp16", NULL, "float16", 16, 5, 10, 15, 65504.0, false, false, false},
    {MX_FP32, "fp32", NULL, "float32", 32, 8, 23, 127, FLT_MAX, false, false, false},
};

const mx_format_info_t *mx_format_info(mx_format_t f)
{
    return (unsigned)f < MX_FORMAT_COUNT ? &infos[f] : NULL;
}

int mx_format_from_name(const char *name, mx_format_t *out)
{
    if (!name)
        return -1;
    for (int i = 0; i < MX_FORMAT_COUNT; i++) {
        const mx_format_info_t *fi = &infos[i];
        if (!strcasecmp(name, fi->name) || (fi->alias && !strcasecmp(name, fi->alias)) ||
            !strcasecmp(name, fi->elem_name)) {
            *out = fi->format;
            return 0;
        }
    }
    return -1;
}

const char *mx_format_name(mx_format_t f)
{
    return (unsigned)f < MX_FORMAT_COUNT ? infos[f].name : "?";
}

static const char *round_names[MX_ROUND_COUNT] = {"nearest", "even", "trunc", "stochastic"};
static const char *scale_names[MX_SCALE_COUNT] = {"floor", "rceil"};

int mx_round_from_name(const char *name, mx_round_t *out)
{
    if (!name)
        return -1;
    if (!strcasecmp(name, "floor")) { /* microxcaling's name for truncation */
        *out = MX_ROUND_TRUNC;
        return 0;
    }
    for (int i = 0; i < MX_ROUND_COUNT; i++)
        if (!strcasecmp(name, round_names[i])) {
            *out = (mx_round_t)i;
            return 0;
        }
    return -1;
}

const char *mx_round_name(mx_round_t r)
{
    return (unsigned)r < MX_ROUND_COUNT ? round_names[r] : "?";
}

int mx_scale_from_name(const char *name, mx_scale_rule_t *out)
{
    if (!name)
        return -1;
    for (int i = 0; i < MX_SCALE_COUNT; i++)
        if (!strcasecmp(name, scale_names[i])) {
            *out = (mx_scale_rule_t)i;
            return 0;
        }
    return -1;
}

const char *mx_scale_name(mx_scale_rule_t s)
{
    return (unsigned)s < MX_SCALE_COUNT ? scale_names[s] : "?";
}

mx_spec_t mx_spec_default(mx_format_t f)
{
    mx_spec_t s = {f, 32, MX_ROUND_EVEN, MX_SCALE_FLOOR};
    return s;
}

int mx_spec_check(const mx_spec_t *s, err_t *e)
{
    if ((unsigned)s->format >= MX_FORMAT_COUNT)
        return err_set(e, ERR_INPUT, "spec: format %d is not a known format", (int)s->format);
    if (!infos[s->format].is_mx)
        return ERR_OK; /* plain casts: block, rounding and scale do not apply */
    if (s->block < 1 || s->block > MX_BLOCK_MAX)
        return err_set(e, ERR_INPUT, "spec: block %d out of range (expected 1..%d)", s->block,
                       MX_BLOCK_MAX);
    if ((unsigned)s->round >= MX_ROUND_COUNT)
        return err_set(e, ERR_INPUT, "spec: rounding %d is not a known rounding", (int)s->round);
    if ((unsigned)s->scale >= MX_SCALE_COUNT)
        return err_set(e, ERR_INPUT, "spec: scale rule %d is not a known rule", (int)s->scale);
    return ERR_OK;
}

bool mx_spec_is_identity(const mx_spec_t *s)
{
    return s->format == MX_FP32;
}

bool mx_spec_equal(const mx_spec_t *a, const mx_spec_t *b)
{
    return a->format == b->format && a->block == b->block && a->round == b->round &&
           a->scale == b->scale;
}

int mx_spec_parse(const char *text, mx_spec_t *out, err_t *e)
{
    if (!text || !*text)
        return err_set(e, ERR_INPUT, "spec: empty (expected format[/block[/rounding[/scale]]])");
    char buf[128];
    if (strlen(text) >= sizeof buf)
        return err_set(e, ERR_INPUT, "spec \"%.40s...\": too long", text);
    strcpy(buf, text);
    char *field[5] = {0};
    int nf = 0;
    for (char *p = buf; nf < 5;) {
        field[nf++] = p;
        char *slash = strchr(p, '/');
        if (!slash)
            break;
        *slash = 0;
        p = slash + 1;
    }
    if (nf == 5)
        return err_set(e, ERR_INPUT,
                       "spec \"%s\": too many fields (expected format[/block[/rounding[/scale]]])",
                       text);
    mx_format_t f;
    if (mx_format_from_name(field[0], &f))
        return err_set(e, ERR_INPUT,
                       "spec \"%s\": unknown format \"%s\" (mxrlhf mx info lists them)", text,
                       field[0]);
    mx_spec_t s = mx_spec_default(f);
    if (!infos[f].is_mx) {
        if (nf > 1)
            return err_set(e, ERR_INPUT,
                           "spec \"%s\": %s is a plain cast and takes no block, rounding or scale",
                           text, infos[f].name);
        *out = s;
        return ERR_OK;
    }
    if (nf > 1) {
        char *end;
        long b = strtol(field[1], &end, 10);
        if (end == field[1] || *end || b < 1 || b > MX_BLOCK_MAX)
            return err_set(e, ERR_INPUT, "spec \"%s\": block \"%s\" is not an integer in 1..%d",
                           text, field[1], MX_BLOCK_MAX);
        s.block = (int)b;
    }
    if (nf > 2 && mx_round_from_name(field[2], &s.round))
        return err_set(e, ERR_INPUT,
                       "spec \"%s\": unknown rounding \"%s\" (nearest, even, trunc or floor, "
                       "stochastic)", text, field[2]);
    if (nf > 3 && mx_scale_from_name(field[3], &s.scale))
        return err_set(e, ERR_INPUT, "spec \"%s\": unknown scale rule \"%s\" (floor, rceil)",
                       text, field[3]);
    *out = s;
    return ERR_OK;
}

char *mx_spec_format(const mx_spec_t *s, char *buf, size_t n)
{
    if (!n)
        return buf;
    if ((unsigned)s->format >= MX_FORMAT_COUNT)
        snprintf(buf, n, "?");
    else if (!infos[s->format].is_mx)
        snprintf(buf, n, "%s", infos[s->format].name);
    else
        snprintf(buf, n, "%s/%d/%s/%s", infos[s->format].name, s->block, mx_round_name(s->round),
                 mx_scale_name(s->scale));
    return buf;
}
