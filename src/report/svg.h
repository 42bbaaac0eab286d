/* svg: the few chart kinds the study needs, as standalone SVG files (no scripts, no
 * external fonts), written atomically. Missing values (NaN) are left out, never drawn
 * as zero. Colours follow the Okabe-Ito palette (safe for colour-blind readers); the
 * heat map uses viridis. */
#ifndef MXRLHF_REPORT_SVG_H
#define MXRLHF_REPORT_SVG_H

#include <stdbool.h>

#include "util/err.h"

typedef struct svg_series {
    const char *label;
    const double *x, *y;   /* n points; NaN y values are gaps */
    const double *err;     /* optional ± per point (drawn as a band) */
    int n;
} svg_series_t;

/* A shaded interval of the x axis (a phase on a power trace). Bands with the same
 * label share a colour and one legend entry. */
typedef struct svg_band {
    double x0, x1;
    const char *label;
} svg_band_t;

typedef struct svg_line_chart {
    const char *title, *xlabel, *ylabel;
    const svg_series_t *series;
    int nseries;
    const svg_band_t *bands;
    int nbands;
    int width, height;     /* 0: defaults 760 x 420 */
} svg_line_chart_t;

int svg_write_line_chart(const char *path, const svg_line_chart_t *c, err_t *e);

typedef struct svg_heatmap {
    const char *title, *value_label;
    const char *const *row_labels;
    const char *const *col_labels;
    int rows, cols;
    const double *values;  /* rows x cols, row-major; NaN = not measured (hatched) */
    double vmin, vmax;     /* colour range; equal values: taken from the data */
    bool symmetric_log;    /* colour by sign(v) * log10(1 + |v|): deltas spanning decades */
    bool annotate;         /* print each value in its cell */
    double mark_above;     /* cells with value > mark_above get a black outline; NaN: none */
} svg_heatmap_t;

int svg_write_heatmap(const char *path, const svg_heatmap_t *h, err_t *e);

typedef struct svg_bar_chart {
    const char *title, *ylabel;
    const char *const *categories; /* ncat groups along x */
    int ncat;
    const char *const *series;     /* nser bars per group (or stacked segments) */
    int nser;
    const double *values;          /* nser x ncat, row-major by series */
    const double *errors;          /* optional ±, same layout */
    bool stacked;
    int width, height;
} svg_bar_chart_t;

int svg_write_bar_chart(const char *path, const svg_bar_chart_t *b, err_t *e);

typedef struct svg_point {
    const char *label;
    double x, y, xerr, yerr;       /* errors 0 or NaN: none */
} svg_point_t;

typedef struct svg_scatter {
    const char *title, *xlabel, *ylabel;
    const svg_point_t *points;
    int n;
    int width, height;
} svg_scatter_t;

int svg_write_scatter(const char *path, const svg_scatter_t *s, err_t *e);

/* "Nice" axis ticks covering [lo, hi]: fills up to max ticks, returns their count. */
int svg_nice_ticks(double lo, double hi, int max, double *ticks);

#endif
