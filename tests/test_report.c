/* Tests for src/report: CSV quoting and missing values; SVG charts well formed, with
 * missing values left out rather than drawn as zero. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report/csv.h"
#include "report/csv_read.h"
#include "report/svg.h"
#include "support/testutil.h"
#include "util/fs.h"

static char *slurp(const char *path)
{
    char *t;
    err_t e = ERR_INIT;
    assert_int_equal(fs_read_all(path, 1 << 24, &t, NULL, &e), 0);
    return t;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static void csv_quotes_and_leaves_missing_cells_empty(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *path = fs_join(dir, "t.csv");
    csv_writer_t w;
    err_t e = ERR_INIT;
    assert_int_equal(csv_open(&w, path, &e), 0);
    const char *hdr[] = {"phase", "avg_power_W", "note", NULL};
    csv_header(&w, hdr);
    csv_str(&w, "rollout");
    csv_num(&w, NAN);
    csv_str(&w, "no sensor, \"none\"");
    csv_endrow(&w);
    csv_str(&w, "total");
    csv_num(&w, 0.1);
    csv_bool(&w, true);
    csv_endrow(&w);
    assert_int_equal(csv_commit(&w, &e), 0);
    char *t = slurp(path);
    assert_string_equal(t, "phase,avg_power_W,note\nrollout,,\"no sensor, \"\"none\"\"\"\n"
                           "total,0.1,true\n");
    free(t);
    free(path);
    test_rmtree(dir);
    free(dir);
}

static void shortest_double_text_reads_back_exactly(void **state)
{
    (void)state;
    double v[] = {0.1, 1.0 / 3, 2.5, 1e-300, 123456789.125, -0.0};
    char buf[32];
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        assert_true(strtod(csv_format_double(v[i], buf), NULL) == v[i]);
    assert_string_equal(csv_format_double(0.1, buf), "0.1");
    assert_string_equal(csv_format_double(2.5, buf), "2.5");
}

static void csv_reader_reads_back_what_the_writer_wrote(void **state)
{
    (void)state;
    const char *text = "layer,ppl,note\r\nmodel.layers.0.mlp.up_proj,12.5,\"a, \"\"b\"\"\nc\"\r\nlm_head,,x\n";
    csv_table_t t;
    err_t e = ERR_INIT;
    assert_int_equal(csv_parse(text, strlen(text), "m.csv", &t, &e), 0);
    assert_int_equal(t.ncols, 3);
    assert_int_equal(t.nrows, 2);
    assert_string_equal(csv_cell(&t, 0, 2), "a, \"b\"\nc");
    assert_int_equal(t.line[1], 4); /* the quoted line break counts */
    double v;
    assert_int_equal(csv_cell_double(&t, 0, 1, &v, &e), 0);
    assert_true(v == 12.5);
    assert_int_equal(csv_cell_double(&t, 1, 1, &v, &e), 0);
    assert_true(isnan(v));
    assert_int_equal(csv_cell_double(&t, 1, 2, &v, &e), ERR_INPUT);
    assert_string_equal(e.msg, "m.csv: line 4, column \"note\": expected a number, got \"x\"");
    int col;
    err_clear(&e);
    assert_int_equal(csv_require_col(&t, "absent", &col, &e), ERR_INPUT);
    assert_string_equal(e.msg, "m.csv: column \"absent\" is missing");
    csv_table_free(&t);
}

static void csv_reader_refuses_ragged_and_broken_rows(void **state)
{
    (void)state;
    const char *bad[][2] = {
        {"a,b\n1,2,3\n", "line 2: 3 cells, the header has 2"},
        {"a,b\n\"1,2\n", "never closed"},
        {"a,b\n\"1\"x,2\n", "after a closing quote"},
        {"a,b\n1\"2,3\n", "quote inside"},
        {"a,a\n1,2\n", "appears twice"},
        {"", "empty file"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        csv_table_t t;
        err_t e = ERR_INIT;
        int rc = csv_parse(bad[i][0], strlen(bad[i][0]), "x.csv", &t, &e);
        if (rc != ERR_INPUT || !strstr(e.msg, bad[i][1]))
            fail_msg("case %zu: expected \"%s\", got rc %d \"%s\"", i, bad[i][1], rc, e.msg);
    }
}

static void line_chart_skips_nan_and_shades_bands(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *path = fs_join(dir, "p.svg");
    double x[5] = {0, 1, 2, 3, 4}, y[5] = {100, 150, NAN, 140, 120};
    svg_series_t s = {"power W", x, y, NULL, 5};
    svg_band_t bands[3] = {{0.5, 1.5, "rollout"}, {1.5, 2.0, "reward_inference"},
                           {2.5, 3.5, "rollout"}};
    svg_line_chart_t c = {"GPU power", "time (s)", "W", &s, 1, bands, 3, 0, 0};
    err_t e = ERR_INIT;
    assert_int_equal(svg_write_line_chart(path, &c, &e), 0);
    char *t = slurp(path);
    assert_non_null(strstr(t, "<svg "));
    assert_non_null(strstr(t, "</svg>"));
    /* The NaN splits the path into two pieces: two 'M' moves. */
    char *d = strstr(t, "<path fill=\"none\"");
    assert_non_null(d);
    char *end = strchr(strstr(d, "d=\"") + 3, '"');
    int moves = 0;
    for (char *p = strstr(d, "d=\"") + 3; p < end; p++)
        moves += *p == 'M';
    assert_int_equal(moves, 2);
    /* Three bands, two legend entries for the two labels. */
    assert_int_equal(count(t, "fill-opacity=\"0.18\""), 3);
    assert_int_equal(count(t, ">rollout</text>"), 1);
    assert_int_equal(count(t, ">reward_inference</text>"), 1);
    free(t);
    free(path);
    test_rmtree(dir);
    free(dir);
}

static void long_legend_labels_widen_the_canvas(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *path = fs_join(dir, "l.svg");
    double x[2] = {0, 1}, y[2] = {1, 2};
    const char *labels[2] = {"a", "ground truth (synthetic task, mean over the batch)"};
    int widths[2];
    for (int i = 0; i < 2; i++) {
        svg_series_t s = {labels[i], x, y, NULL, 2};
        svg_line_chart_t c = {"t", "x", "y", &s, 1, NULL, 0, 0, 0};
        err_t e = ERR_INIT;
        assert_int_equal(svg_write_line_chart(path, &c, &e), 0);
        char *t = slurp(path);
        assert_int_equal(sscanf(strstr(t, "<svg "), "<svg xmlns=\"http://www.w3.org/2000/svg\" "
                                "width=\"%d\"", &widths[i]), 1);
        free(t);
    }
    assert_int_equal(widths[0], 760); /* a short label fits the default legend column */
    /* the long one: 50 characters at about 6.4 px, plus the key, right of the plot's edge */
    if (!(widths[1] >= 760 - 170 + 14 + 19 + 50 * 6))
        fail_msg("expected the canvas widened to fit the label, got width %d", widths[1]);
    free(path);
    test_rmtree(dir);
    free(dir);
}

static void heatmap_hatches_missing_cells_and_escapes_labels(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *path = fs_join(dir, "h.svg");
    const char *rows[2] = {"model.layers.0.self_attn.q_proj", "a<b&c"};
    const char *cols[3] = {"mxfp4_g8", "mxfp8_g8", "mxint8_g32"};
    double v[6] = {2.5, 0.1, NAN, 40, 0.3, 0.2};
    svg_heatmap_t h = {"sensitivity", "delta ppl %", rows, cols, 2, 3, v, 0, 0, true, true, 2.0};
    err_t e = ERR_INIT;
    assert_int_equal(svg_write_heatmap(path, &h, &e), 0);
    char *t = slurp(path);
    assert_int_equal(count(t, "fill=\"url(#hatch)\""), 1);
    assert_int_equal(count(t, "stroke=\"black\" stroke-width=\"1.2\""), 2); /* 2.5 and 40 */
    assert_non_null(strstr(t, "a&lt;b&amp;c"));
    assert_null(strstr(t, "a<b&c"));
    free(t);
    free(path);
    test_rmtree(dir);
    free(dir);
}

static void nice_ticks_cover_range_with_round_steps(void **state)
{
    (void)state;
    double t[16];
    int n = svg_nice_ticks(0.3, 9.7, 8, t);
    assert_true(n >= 4 && n <= 8);
    assert_true(t[0] >= 0.3 && t[n - 1] <= 9.7);
    double step = t[1] - t[0];
    assert_true(fabs(step - 1) < 1e-12 || fabs(step - 2) < 1e-12 || fabs(step - 2.5) < 1e-12);
    assert_int_equal(svg_nice_ticks(NAN, 1, 8, t), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(csv_quotes_and_leaves_missing_cells_empty),
        cmocka_unit_test(shortest_double_text_reads_back_exactly),
        cmocka_unit_test(csv_reader_reads_back_what_the_writer_wrote),
        cmocka_unit_test(csv_reader_refuses_ragged_and_broken_rows),
        cmocka_unit_test(line_chart_skips_nan_and_shades_bands),
        cmocka_unit_test(long_legend_labels_widen_the_canvas),
        cmocka_unit_test(heatmap_hatches_missing_cells_and_escapes_labels),
        cmocka_unit_test(nice_ticks_cover_range_with_round_steps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
