/* svg: see svg.h. Text is built with open_memstream and written with atomic_write. */
#include "report/svg.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/atomic_file.h"

static const char *const palette[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                      "#E69F00", "#56B4E9", "#F0E442", "#000000"};
#define NPAL (int)(sizeof palette / sizeof palette[0])

/* Viridis at 9 stops; linear interpolation between them. */
static const double viridis[9][3] = {
    {68, 1, 84},    {71, 44, 122},  {59, 81, 139},  {44, 113, 142}, {33, 144, 141},
    {39, 173, 129}, {92, 200, 99},  {170, 220, 50}, {253, 231, 37}};

static void viridis_rgb(double t, char out[8])
{
    if (!(t >= 0))
        t = 0;
    if (t > 1)
        t = 1;
    double p = t * 8;
    int i = (int)p;
    if (i >= 8)
        i = 7;
    double f = p - i;
    int rgb[3];
    for (int k = 0; k < 3; k++)
        rgb[k] = (int)lround(viridis[i][k] * (1 - f) + viridis[i + 1][k] * f);
    snprintf(out, 8, "#%02x%02x%02x", rgb[0], rgb[1], rgb[2]);
}

int svg_nice_ticks(double lo, double hi, int max, double *ticks)
{
    if (!isfinite(lo) || !isfinite(hi) || max < 2)
        return 0;
    if (hi <= lo) {
        double pad = fabs(lo) > 0 ? fabs(lo) * 0.1 : 1;
        lo -= pad;
        hi += pad;
    }
    double raw = (hi - lo) / (max - 1), mag = pow(10, floor(log10(raw))), step = mag;
    const double mult[] = {1, 2, 2.5, 5, 10};
    for (int i = 0; i < 5; i++)
        if (mag * mult[i] >= raw) {
            step = mag * mult[i];
            break;
        }
    double t0 = ceil(lo / step - 1e-9) * step;
    int n = 0;
    for (double t = t0; t <= hi + step * 1e-9 && n < max; t += step)
        ticks[n++] = fabs(t) < step * 1e-9 ? 0 : t;
    return n;
}

static void fmt_tick(double v, char *buf, size_t n)
{
    double a = fabs(v);
    if (a != 0 && (a >= 1e6 || a < 1e-3))
        snprintf(buf, n, "%.2g", v);
    else
        snprintf(buf, n, "%.6g", v);
}

/* XML-escapes text for element content and attributes. */
static void put_text(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

static void text_at(FILE *f, double x, double y, const char *anchor, int size, const char *extra,
                    const char *s)
{
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" font-size=\"%d\"%s%s>", x, y,
            anchor, size, extra ? " " : "", extra ? extra : "");
    put_text(f, s);
    fputs("</text>\n", f);
}

static FILE *begin(char **buf, size_t *len, int w, int h, const char *title)
{
    FILE *f = open_memstream(buf, len);
    if (!f)
        return NULL;
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "viewBox=\"0 0 %d %d\" font-family=\"Helvetica, Arial, sans-serif\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            w, h, w, h);
    if (title)
        text_at(f, w / 2.0, 22, "middle", 15, "font-weight=\"bold\"", title);
    return f;
}

/* open_memstream publishes the buffer and its length only at fclose, hence pointers. */
static int finish(FILE *f, char **buf, size_t *len, const char *path, err_t *e)
{
    fputs("</svg>\n", f);
    if (fclose(f) != 0) {
        free(*buf);
        return err_set(e, ERR_NOMEM, "out of memory drawing %s", path);
    }
    int rc = atomic_write(path, *buf, *len, e);
    free(*buf);
    return rc;
}

typedef struct frame {
    double x0, y0, x1, y1;       /* plot area in pixels (y0 top) */
    double lo_x, hi_x, lo_y, hi_y;
} frame_t;

static double px(const frame_t *fr, double x)
{
    return fr->x0 + (x - fr->lo_x) / (fr->hi_x - fr->lo_x) * (fr->x1 - fr->x0);
}

static double py(const frame_t *fr, double y)
{
    return fr->y1 - (y - fr->lo_y) / (fr->hi_y - fr->lo_y) * (fr->y1 - fr->y0);
}

/* Axes, grid and tick labels; widens the ranges to the outer ticks. */
static void axes(FILE *f, frame_t *fr, const char *xlabel, const char *ylabel)
{
    double xt[16], yt[16];
    int nx = svg_nice_ticks(fr->lo_x, fr->hi_x, 8, xt), ny = svg_nice_ticks(fr->lo_y, fr->hi_y, 7, yt);
    if (nx >= 2) {
        double step = xt[1] - xt[0];
        fr->lo_x = fmin(fr->lo_x, xt[0]);
        fr->hi_x = fmax(fr->hi_x, xt[nx - 1] < fr->hi_x ? xt[nx - 1] + step : xt[nx - 1]);
    }
    if (ny >= 2) {
        double step = yt[1] - yt[0];
        fr->lo_y = fmin(fr->lo_y, yt[0] > fr->lo_y ? yt[0] - step : yt[0]);
        fr->hi_y = fmax(fr->hi_y, yt[ny - 1] < fr->hi_y ? yt[ny - 1] + step : yt[ny - 1]);
        ny = svg_nice_ticks(fr->lo_y, fr->hi_y, 8, yt);
    }
    nx = svg_nice_ticks(fr->lo_x, fr->hi_x, 9, xt);
    char buf[32];
    for (int i = 0; i < ny; i++) {
        double y = py(fr, yt[i]);
        if (y < fr->y0 - 0.5 || y > fr->y1 + 0.5)
            continue;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>\n",
                fr->x0, y, fr->x1, y);
        fmt_tick(yt[i], buf, sizeof buf);
        text_at(f, fr->x0 - 6, y + 4, "end", 11, NULL, buf);
    }
    for (int i = 0; i < nx; i++) {
        double x = px(fr, xt[i]);
        if (x < fr->x0 - 0.5 || x > fr->x1 + 0.5)
            continue;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>\n",
                x, fr->y0, x, fr->y1);
        fmt_tick(xt[i], buf, sizeof buf);
        text_at(f, x, fr->y1 + 16, "middle", 11, NULL, buf);
    }
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
               "stroke=\"#444\"/>\n",
            fr->x0, fr->y0, fr->x1 - fr->x0, fr->y1 - fr->y0);
    if (xlabel)
        text_at(f, (fr->x0 + fr->x1) / 2, fr->y1 + 36, "middle", 12, NULL, xlabel);
    if (ylabel) {
        char tr[96];
        snprintf(tr, sizeof tr, "transform=\"rotate(-90 %.1f %.1f)\"", 16.0, (fr->y0 + fr->y1) / 2);
        text_at(f, 16, (fr->y0 + fr->y1) / 2, "middle", 12, tr, ylabel);
    }
}

static void legend_item(FILE *f, double x, double y, const char *color, const char *label,
                        int box)
{
    if (box)
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"14\" height=\"10\" fill=\"%s\"%s/>\n", x,
                y - 9, color, box == 2 ? " fill-opacity=\"0.25\"" : "");
    else
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                   "stroke-width=\"2.5\"/>\n",
                x, y - 4, x + 14, y - 4, color);
    text_at(f, x + 19, y, "start", 11, NULL, label);
}

/* Pixels the legend column needs beyond the 170 the layout leaves right of the plot, for
 * the longest label (11 px sans: about 6.4 px a character), so no label is cut off. */
static int legend_extra(size_t longest)
{
    int need = 14 + 19 + (int)(6.4 * (double)longest + 0.5) + 10;
    return need > 170 ? need - 170 : 0;
}

int svg_write_line_chart(const char *path, const svg_line_chart_t *c, err_t *e)
{
    int W = c->width ? c->width : 760, H = c->height ? c->height : 420;
    size_t longest = 0;
    for (int s = 0; s < c->nseries; s++)
        longest = c->series[s].label && strlen(c->series[s].label) > longest
                      ? strlen(c->series[s].label) : longest;
    for (int b = 0; b < c->nbands; b++)
        longest = c->bands[b].label && strlen(c->bands[b].label) > longest
                      ? strlen(c->bands[b].label) : longest;
    frame_t fr = {70, 36, W - 170.0, H - 50.0, DBL_MAX, -DBL_MAX, DBL_MAX, -DBL_MAX};
    for (int s = 0; s < c->nseries; s++)
        for (int i = 0; i < c->series[s].n; i++) {
            double x = c->series[s].x[i], y = c->series[s].y[i];
            double er = c->series[s].err && isfinite(c->series[s].err[i]) ? c->series[s].err[i] : 0;
            if (!isfinite(x) || !isfinite(y))
                continue;
            fr.lo_x = fmin(fr.lo_x, x), fr.hi_x = fmax(fr.hi_x, x);
            fr.lo_y = fmin(fr.lo_y, y - er), fr.hi_y = fmax(fr.hi_y, y + er);
        }
    for (int b = 0; b < c->nbands; b++)
        fr.lo_x = fmin(fr.lo_x, c->bands[b].x0), fr.hi_x = fmax(fr.hi_x, c->bands[b].x1);
    if (fr.lo_x > fr.hi_x)
        fr.lo_x = 0, fr.hi_x = 1;
    if (fr.lo_y > fr.hi_y)
        fr.lo_y = 0, fr.hi_y = 1;
    if (fr.hi_x == fr.lo_x)
        fr.hi_x = fr.lo_x + 1;
    if (fr.hi_y == fr.lo_y)
        fr.lo_y -= 1, fr.hi_y += 1;
    char *buf;
    size_t len;
    FILE *f = begin(&buf, &len, W + legend_extra(longest), H, c->title);
    if (!f)
        return err_set(e, ERR_NOMEM, "out of memory drawing %s", path);
    axes(f, &fr, c->xlabel, c->ylabel);
    /* Bands: one colour per distinct label, drawn under the lines. */
    const char *band_labels[NPAL];
    int nbl = 0;
    for (int b = 0; b < c->nbands; b++) {
        int k = 0;
        while (k < nbl && strcmp(band_labels[k], c->bands[b].label ? c->bands[b].label : ""))
            k++;
        if (k == nbl && nbl < NPAL)
            band_labels[nbl++] = c->bands[b].label ? c->bands[b].label : "";
        double x0 = fmax(px(&fr, c->bands[b].x0), fr.x0), x1 = fmin(px(&fr, c->bands[b].x1), fr.x1);
        fprintf(f, "<rect x=\"%.2f\" y=\"%.1f\" width=\"%.2f\" height=\"%.1f\" fill=\"%s\" "
                   "fill-opacity=\"0.18\"/>\n",
                x0, fr.y0, fmax(x1 - x0, 0.5), fr.y1 - fr.y0, palette[(k + 4) % NPAL]);
    }
    for (int s = 0; s < c->nseries; s++) {
        const svg_series_t *se = &c->series[s];
        const char *col = palette[s % NPAL];
        if (se->err) { /* ± band as a polygon: upper edge forward, lower edge back */
            fprintf(f, "<polygon fill=\"%s\" fill-opacity=\"0.2\" stroke=\"none\" points=\"", col);
            for (int i = 0; i < se->n; i++)
                if (isfinite(se->y[i]) && isfinite(se->err[i]))
                    fprintf(f, "%.2f,%.2f ", px(&fr, se->x[i]), py(&fr, se->y[i] + se->err[i]));
            for (int i = se->n - 1; i >= 0; i--)
                if (isfinite(se->y[i]) && isfinite(se->err[i]))
                    fprintf(f, "%.2f,%.2f ", px(&fr, se->x[i]), py(&fr, se->y[i] - se->err[i]));
            fputs("\"/>\n", f);
        }
        fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\" d=\"", col);
        int pen = 0;
        for (int i = 0; i < se->n; i++) {
            if (!isfinite(se->x[i]) || !isfinite(se->y[i])) {
                pen = 0;
                continue;
            }
            fprintf(f, "%c%.2f,%.2f ", pen ? 'L' : 'M', px(&fr, se->x[i]), py(&fr, se->y[i]));
            pen = 1;
        }
        fputs("\"/>\n", f);
        if (se->n == 1 && isfinite(se->y[0]))
            fprintf(f, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3\" fill=\"%s\"/>\n",
                    px(&fr, se->x[0]), py(&fr, se->y[0]), col);
    }
    double ly = fr.y0 + 12;
    for (int s = 0; s < c->nseries; s++, ly += 18)
        legend_item(f, fr.x1 + 14, ly, palette[s % NPAL], c->series[s].label, 0);
    for (int k = 0; k < nbl; k++, ly += 18)
        legend_item(f, fr.x1 + 14, ly, palette[(k + 4) % NPAL], band_labels[k], 2);
    return finish(f, &buf, &len, path, e);
}

int svg_write_heatmap(const char *path, const svg_heatmap_t *h, err_t *e)
{
    double lo = h->vmin, hi = h->vmax;
    if (!(hi > lo)) {
        lo = DBL_MAX, hi = -DBL_MAX;
        for (int i = 0; i < h->rows * h->cols; i++)
            if (isfinite(h->values[i]))
                lo = fmin(lo, h->values[i]), hi = fmax(hi, h->values[i]);
        if (lo > hi)
            lo = 0, hi = 1;
        if (lo == hi)
            hi = lo + 1;
    }
    /* Layout: row labels on the left, column labels rotated on top, colour bar right. */
    int label_w = 40, top = 40 + 0;
    for (int r = 0; r < h->rows; r++)
        label_w = (int)fmax(label_w, 6.5 * strlen(h->row_labels[r]) + 12);
    int col_h = 30;
    for (int c = 0; c < h->cols; c++)
        col_h = (int)fmax(col_h, 6.0 * strlen(h->col_labels[c]) + 10);
    int cw = h->annotate ? 44 : 22, ch = h->annotate ? 18 : 14;
    top += col_h;
    int W = label_w + cw * h->cols + 120, Hh = top + ch * h->rows + 30;
    char *buf;
    size_t len;
    FILE *f = begin(&buf, &len, W, Hh, h->title);
    if (!f)
        return err_set(e, ERR_NOMEM, "out of memory drawing %s", path);
    fputs("<defs><pattern id=\"hatch\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\">"
          "<path d=\"M0,6 L6,0\" stroke=\"#999\"/></pattern></defs>\n", f);
#define HM_T(v) (h->symmetric_log ? (copysign(log10(1 + fabs(v)), v) - copysign(log10(1 + fabs(lo)), lo)) / \
                  (copysign(log10(1 + fabs(hi)), hi) - copysign(log10(1 + fabs(lo)), lo)) \
                : ((v) - lo) / (hi - lo))
    for (int c = 0; c < h->cols; c++) {
        double x = label_w + cw * (c + 0.5) + 4, y = top - 6;
        char tr[96];
        snprintf(tr, sizeof tr, "transform=\"rotate(-60 %.1f %.1f)\"", x, y);
        text_at(f, x, y, "start", 10, tr, h->col_labels[c]);
    }
    for (int r = 0; r < h->rows; r++) {
        double y = top + ch * r;
        text_at(f, label_w - 6, y + ch * 0.72, "end", 10, NULL, h->row_labels[r]);
        for (int c = 0; c < h->cols; c++) {
            double v = h->values[r * h->cols + c], x = label_w + cw * c;
            char col[8];
            if (!isfinite(v)) {
                fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%d\" height=\"%d\" "
                           "fill=\"url(#hatch)\"/>\n", x, y, cw, ch);
                continue;
            }
            viridis_rgb(HM_T(v), col);
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%d\" height=\"%d\" fill=\"%s\"", x, y,
                    cw, ch, col);
            if (isfinite(h->mark_above) && v > h->mark_above)
                fputs(" stroke=\"black\" stroke-width=\"1.2\"", f);
            fputs("><title>", f);
            put_text(f, h->row_labels[r]);
            fputs(" / ", f);
            put_text(f, h->col_labels[c]);
            fprintf(f, ": %g</title></rect>\n", v);
            if (h->annotate) {
                char t[32];
                snprintf(t, sizeof t, "%.3g", v);
                text_at(f, x + cw / 2.0, y + ch * 0.72, "middle", 9,
                        HM_T(v) > 0.6 ? "fill=\"black\"" : "fill=\"white\"", t);
            }
        }
    }
    /* Colour bar. */
    double bx = label_w + cw * h->cols + 20, by = top, bh = fmax(ch * h->rows, 120);
    for (int i = 0; i < 50; i++) {
        char col[8];
        viridis_rgb(1 - i / 49.0, col);
        fprintf(f, "<rect x=\"%.1f\" y=\"%.2f\" width=\"14\" height=\"%.2f\" fill=\"%s\"/>\n", bx,
                by + bh * i / 50, bh / 50 + 0.5, col);
    }
    char t[32];
    snprintf(t, sizeof t, "%.3g", hi);
    text_at(f, bx + 18, by + 9, "start", 10, NULL, t);
    snprintf(t, sizeof t, "%.3g", lo);
    text_at(f, bx + 18, by + bh, "start", 10, NULL, t);
    if (h->value_label) {
        char tr[96];
        snprintf(tr, sizeof tr, "transform=\"rotate(-90 %.1f %.1f)\"", bx + 70, by + bh / 2);
        text_at(f, bx + 70, by + bh / 2, "middle", 11, tr, h->value_label);
    }
#undef HM_T
    return finish(f, &buf, &len, path, e);
}

int svg_write_bar_chart(const char *path, const svg_bar_chart_t *b, err_t *e)
{
    int W = b->width ? b->width : 760, H = b->height ? b->height : 420;
    size_t longest = 0;
    for (int s = 0; s < b->nser; s++)
        longest = b->series[s] && strlen(b->series[s]) > longest ? strlen(b->series[s]) : longest;
    frame_t fr = {70, 36, W - 170.0, H - 70.0, 0, 1, 0, -DBL_MAX};
    for (int c = 0; c < b->ncat; c++) {
        double stack = 0;
        for (int s = 0; s < b->nser; s++) {
            double v = b->values[s * b->ncat + c];
            double er = b->errors && isfinite(b->errors[s * b->ncat + c]) ? b->errors[s * b->ncat + c] : 0;
            if (!isfinite(v))
                continue;
            if (b->stacked)
                stack += v, fr.hi_y = fmax(fr.hi_y, stack + er);
            else
                fr.hi_y = fmax(fr.hi_y, v + er), fr.lo_y = fmin(fr.lo_y, v - er);
        }
    }
    if (fr.hi_y <= fr.lo_y)
        fr.hi_y = fr.lo_y + 1;
    char *buf;
    size_t len;
    FILE *f = begin(&buf, &len, W + legend_extra(longest), H, b->title);
    if (!f)
        return err_set(e, ERR_NOMEM, "out of memory drawing %s", path);
    /* y axis only: categories are labels, not numbers. */
    double yt[16];
    int ny = svg_nice_ticks(fr.lo_y, fr.hi_y * 1.05, 7, yt);
    if (ny)
        fr.hi_y = fmax(fr.hi_y * 1.05, yt[ny - 1]);
    char tb[32];
    for (int i = 0; i < ny; i++) {
        double y = py(&fr, yt[i]);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>\n",
                fr.x0, y, fr.x1, y);
        fmt_tick(yt[i], tb, sizeof tb);
        text_at(f, fr.x0 - 6, y + 4, "end", 11, NULL, tb);
    }
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
               "stroke=\"#444\"/>\n", fr.x0, fr.y0, fr.x1 - fr.x0, fr.y1 - fr.y0);
    if (b->ylabel) {
        char tr[96];
        snprintf(tr, sizeof tr, "transform=\"rotate(-90 16 %.1f)\"", (fr.y0 + fr.y1) / 2);
        text_at(f, 16, (fr.y0 + fr.y1) / 2, "middle", 12, tr, b->ylabel);
    }
    double gw = (fr.x1 - fr.x0) / (b->ncat ? b->ncat : 1);
    double bw = b->stacked ? gw * 0.6 : gw * 0.8 / (b->nser ? b->nser : 1);
    for (int c = 0; c < b->ncat; c++) {
        double gx = fr.x0 + gw * c, stack = 0;
        text_at(f, gx + gw / 2, fr.y1 + 16, "middle", 11, NULL, b->categories[c]);
        for (int s = 0; s < b->nser; s++) {
            double v = b->values[s * b->ncat + c];
            if (!isfinite(v))
                continue;
            double x = b->stacked ? gx + gw * 0.2 : gx + gw * 0.1 + bw * s;
            double y0 = b->stacked ? stack : fmin(0, v), y1 = b->stacked ? stack + v : fmax(0, v);
            if (b->stacked)
                stack += v;
            fprintf(f, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\">"
                       "<title>", x, py(&fr, y1), bw, py(&fr, y0) - py(&fr, y1), palette[s % NPAL]);
            put_text(f, b->series[s]);
            fprintf(f, ": %g</title></rect>\n", v);
            if (b->errors && isfinite(b->errors[s * b->ncat + c]) && b->errors[s * b->ncat + c] > 0) {
                double er = b->errors[s * b->ncat + c], top = b->stacked ? stack : v;
                double cx = x + bw / 2;
                fprintf(f, "<path stroke=\"#222\" d=\"M%.2f,%.2f L%.2f,%.2f M%.2f,%.2f L%.2f,%.2f "
                           "M%.2f,%.2f L%.2f,%.2f\"/>\n",
                        cx, py(&fr, top - er), cx, py(&fr, top + er), cx - 3, py(&fr, top - er),
                        cx + 3, py(&fr, top - er), cx - 3, py(&fr, top + er), cx + 3,
                        py(&fr, top + er));
            }
        }
    }
    double ly = fr.y0 + 12;
    for (int s = 0; s < b->nser; s++, ly += 18)
        legend_item(f, fr.x1 + 14, ly, palette[s % NPAL], b->series[s], 1);
    return finish(f, &buf, &len, path, e);
}

int svg_write_scatter(const char *path, const svg_scatter_t *s, err_t *e)
{
    int W = s->width ? s->width : 640, H = s->height ? s->height : 440;
    frame_t fr = {70, 36, W - 30.0, H - 50.0, DBL_MAX, -DBL_MAX, DBL_MAX, -DBL_MAX};
    for (int i = 0; i < s->n; i++) {
        const svg_point_t *p = &s->points[i];
        if (!isfinite(p->x) || !isfinite(p->y))
            continue;
        double xe = isfinite(p->xerr) ? p->xerr : 0, ye = isfinite(p->yerr) ? p->yerr : 0;
        fr.lo_x = fmin(fr.lo_x, p->x - xe), fr.hi_x = fmax(fr.hi_x, p->x + xe);
        fr.lo_y = fmin(fr.lo_y, p->y - ye), fr.hi_y = fmax(fr.hi_y, p->y + ye);
    }
    if (fr.lo_x > fr.hi_x)
        fr.lo_x = 0, fr.hi_x = 1, fr.lo_y = 0, fr.hi_y = 1;
    double padx = (fr.hi_x - fr.lo_x) * 0.08 + 1e-12, pady = (fr.hi_y - fr.lo_y) * 0.08 + 1e-12;
    fr.lo_x -= padx, fr.hi_x += padx, fr.lo_y -= pady, fr.hi_y += pady;
    char *buf;
    size_t len;
    FILE *f = begin(&buf, &len, W, H, s->title);
    if (!f)
        return err_set(e, ERR_NOMEM, "out of memory drawing %s", path);
    axes(f, &fr, s->xlabel, s->ylabel);
    for (int i = 0; i < s->n; i++) {
        const svg_point_t *p = &s->points[i];
        if (!isfinite(p->x) || !isfinite(p->y))
            continue;
        const char *col = palette[i % NPAL];
        double x = px(&fr, p->x), y = py(&fr, p->y);
        if (isfinite(p->xerr) && p->xerr > 0)
            fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"%s\"/>\n",
                    px(&fr, p->x - p->xerr), y, px(&fr, p->x + p->xerr), y, col);
        if (isfinite(p->yerr) && p->yerr > 0)
            fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"%s\"/>\n",
                    x, py(&fr, p->y - p->yerr), x, py(&fr, p->y + p->yerr), col);
        fprintf(f, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"5\" fill=\"%s\"/>\n", x, y, col);
        text_at(f, x + 8, y - 6, "start", 11, NULL, p->label);
    }
    return finish(f, &buf, &len, path, e);
}
