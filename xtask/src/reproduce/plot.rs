//! Line charts of `cargo xtask reproduce`, rendered as SVG files with plotters.
//!
//! Text stays SVG `<text>` (plotters' font-free text layout estimates its size), so rendering
//! needs no fonts. The legend sits outside the plotting area, on the right, so it never hides
//! data.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::data::float::pretty_print_float;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One line of a chart.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    /// The legend label.
    pub(crate) name: String,
    /// The `(x, y)` points, drawn in order as a line with a marker at each; points with a
    /// non-finite coordinate (or x ≤ 0 on a log x axis) are skipped.
    pub(crate) points: Vec<(f64, f64)>,
    /// Optional `(low, high)` per point, drawn as a vertical error bar (e.g. min..max over
    /// seeds); must have one entry per point. Bars with a non-finite bound are skipped.
    pub(crate) spread: Option<Vec<(f64, f64)>>,
}

/// A line chart: one line per series, a legend naming them.
#[derive(Debug, Clone)]
pub(crate) struct LineChart {
    /// The title above the chart.
    pub(crate) title: String,
    /// The x axis description.
    pub(crate) x_label: String,
    /// The y axis description.
    pub(crate) y_label: String,
    /// Whether x is on a log scale, with ticks at the points' x values (e.g. nprobe 1, 2, 4, 8).
    pub(crate) log2_x: bool,
    /// The lines, drawn in order.
    pub(crate) series: Vec<Series>,
}

/// Writes `chart` to `path` as an SVG (the parent directory must exist), atomically.
///
/// # Errors
/// When the chart has nothing to draw, a spread does not match its points, rendering fails, or
/// the file cannot be written.
pub(crate) fn write_svg(chart: &LineChart, path: &Path) -> Result<()> {
    let svg = render_svg(chart).with_context(|| format!("plotting {}", path.display()))?;
    super::write_file(path, &svg)
}

/// The size of the picture, in pixels.
const SIZE: (u32, u32) = (800, 500);
/// The font of all text.
const FONT: FontFamily<'static> = FontFamily::SansSerif;
/// The largest title font size; long titles are drawn smaller so that they fit.
const TITLE_SIZE: f64 = 22.0;
/// The font size of the axis descriptions.
const AXIS_DESC_SIZE: f64 = 16.0;
/// The font size of tick labels and legend entries.
const LABEL_SIZE: f64 = 14.0;
/// The space kept free around the plot and the legend, in pixels.
const MARGIN: u32 = 12;
/// The height of the x label area (tick labels and the axis description), in pixels.
const X_LABEL_AREA: u32 = 50;
/// The number of y tick labels plotters aims for (its default).
const Y_LABELS: usize = 11;
/// The most x ticks on a log axis; more distinct x values are thinned out.
const MAX_LOG_TICKS: usize = 16;
/// The fraction of the data's span added on each side of an axis range.
const RANGE_MARGIN: f64 = 0.05;
/// The legend's widest text, in pixels; longer names are shortened with an ellipsis.
const MAX_LEGEND_TEXT: u32 = 260;
/// The height of one legend entry, in pixels (less when that many entries would not fit).
const LEGEND_ROW: i32 = 22;
/// The length of the line sample in front of a legend entry, in pixels.
const LEGEND_SAMPLE: i32 = 30;
/// The marker radius (half its width), in pixels.
const MARKER_SIZE: i32 = 4;
/// Safety factor over plotters' estimate of text width (which is crude without fonts).
const TEXT_WIDTH_SLACK: f64 = 1.15;

/// Line colours (the "tab10" palette), cycled for more series.
const PALETTE: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// Marker shapes, cycled per series alongside the colours (20 series differ in both together).
#[derive(Debug, Clone, Copy)]
enum Marker {
    /// A filled circle.
    Circle,
    /// A filled triangle.
    Triangle,
    /// A diagonal cross.
    Cross,
    /// A filled square.
    Square,
}

/// The marker shapes in the order series use them.
const MARKERS: [Marker; 4] = [
    Marker::Circle,
    Marker::Triangle,
    Marker::Cross,
    Marker::Square,
];

/// How one series is drawn: its colour and marker, fixed by its position in the chart.
#[derive(Debug, Clone, Copy)]
struct Look {
    /// The line, marker and error bar colour.
    colour: RGBColor,
    /// The marker shape.
    marker: Marker,
}

impl Look {
    /// The look of the series at `index`.
    fn of(index: usize) -> Self {
        Look {
            colour: PALETTE[index % PALETTE.len()],
            marker: MARKERS[index % MARKERS.len()],
        }
    }
}

/// A series reduced to what can be drawn.
#[derive(Debug)]
struct Drawable {
    /// The position of the series in the chart, which fixes its look.
    index: usize,
    /// The drawable points, in order.
    points: Vec<(f64, f64)>,
    /// The drawable error bars, as `(x, low, high)`.
    bars: Vec<(f64, f64, f64)>,
}

/// Renders `chart` as an SVG document.
fn render_svg(chart: &LineChart) -> Result<String> {
    let series = drawable_series(chart)?;
    let points = || series.iter().flat_map(|s| &s.points);
    let no_point = || {
        format!(
            "chart `{}` has no point to draw (finite, and with x > 0 on a log x axis)",
            chart.title
        )
    };
    let (x_min, x_max) = bounds(points().map(|p| p.0)).with_context(no_point)?;
    let (y_min, y_max) = bounds(
        points().map(|p| p.1).chain(
            series
                .iter()
                .flat_map(|s| s.bars.iter().flat_map(|b| [b.1, b.2])),
        ),
    )
    .with_context(no_point)?;
    let y_range = linear_padded(y_min, y_max)?;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let title_size = fitting_font_size(&root, &chart.title, TITLE_SIZE, SIZE.0 - 2 * MARGIN)?;
        let body = root.titled(&chart.title, (FONT, title_size))?;
        let entries = legend_entries(&body, chart, &series)?;
        let legend_width = legend_width(&body, &entries)?;
        let (plot_area, legend_area) = body.split_horizontally(SIZE.0 - legend_width);
        let x_format = TickFormat::for_range(x_min, x_max);
        if chart.log2_x {
            let (lo, hi) = padded(x_min.ln(), x_max.ln(), std::f64::consts::LN_2)?;
            let ticks = log_ticks(points().map(|p| p.0));
            let x_spec = (lo.exp()..hi.exp()).log_scale().with_key_points(ticks);
            draw_plot(&plot_area, chart, &series, x_spec, x_format, y_range)?;
        } else {
            let (lo, hi) = linear_padded(x_min, x_max)?;
            draw_plot(&plot_area, chart, &series, lo..hi, x_format, y_range)?;
        }
        draw_legend(&legend_area, &entries)?;
        root.present()?;
    }
    Ok(svg)
}

/// The drawable part of each series of `chart` that has any, in chart order.
fn drawable_series(chart: &LineChart) -> Result<Vec<Drawable>> {
    let drawable_x = |x: f64| x.is_finite() && (!chart.log2_x || x > 0.0);
    let mut drawable = Vec::new();
    for (index, series) in chart.series.iter().enumerate() {
        if let Some(spread) = &series.spread {
            ensure!(
                spread.len() == series.points.len(),
                "chart `{}`, series `{}`: {} spreads for {} points",
                chart.title,
                series.name,
                spread.len(),
                series.points.len()
            );
        }
        let kept = |&(x, y): &(f64, f64)| drawable_x(x) && y.is_finite();
        let points: Vec<_> = series.points.iter().copied().filter(kept).collect();
        if points.is_empty() {
            continue;
        }
        let bars = match &series.spread {
            Some(spread) => series
                .points
                .iter()
                .zip(spread)
                .filter(|&(point, &(low, high))| kept(point) && low.is_finite() && high.is_finite())
                .map(|(&(x, _), &(low, high))| (x, low.min(high), low.max(high)))
                .collect(),
            None => Vec::new(),
        };
        drawable.push(Drawable {
            index,
            points,
            bars,
        });
    }
    Ok(drawable)
}

/// The smallest and largest of `values`, or `None` when there are none.
fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// `lo..hi` widened by [`RANGE_MARGIN`] of its span on each side, or by `pad_when_empty` when
/// the span is empty.
fn padded(lo: f64, hi: f64, pad_when_empty: f64) -> Result<(f64, f64)> {
    let span = hi - lo;
    let pad = if span > 0.0 {
        span * RANGE_MARGIN
    } else {
        pad_when_empty
    };
    let range = (lo - pad, hi + pad);
    ensure!(
        range.0.is_finite() && range.1.is_finite(),
        "the data range is too large to plot"
    );
    Ok(range)
}

/// The range of a linear axis over data in `lo..hi`: see [`padded`]; an empty span is widened
/// by 10% of the value (by 1 around 0).
fn linear_padded(lo: f64, hi: f64) -> Result<(f64, f64)> {
    padded(lo, hi, if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 })
}

/// The x ticks of a log axis: the distinct values of `xs`, ascending, thinned to at most about
/// [`MAX_LOG_TICKS`] evenly spread (in log scale) ones.
fn log_ticks(xs: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut xs: Vec<f64> = xs.collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let (Some(&first), Some(&last)) = (xs.first(), xs.last()) else {
        return xs;
    };
    let min_gap = (last / first).ln() / MAX_LOG_TICKS as f64;
    let mut ticks: Vec<f64> = Vec::new();
    for x in xs {
        if ticks.last().is_none_or(|&kept| (x / kept).ln() >= min_gap) {
            ticks.push(x);
        }
    }
    ticks
}

/// How the tick labels of one axis are written: all plain numbers, or (for an axis whose values
/// are all huge or all tiny) all in scientific notation.
#[derive(Debug, Clone, Copy)]
struct TickFormat {
    /// Whether labels are written as `1.5e7`.
    scientific: bool,
}

impl TickFormat {
    /// The format for an axis spanning `lo..hi`.
    fn for_range(lo: f64, hi: f64) -> Self {
        let largest = lo.abs().max(hi.abs());
        TickFormat {
            scientific: largest >= 1e6 || (largest > 0.0 && largest < 1e-3),
        }
    }

    /// The label of the tick at `value` (rounding noise removed).
    fn label(self, value: f64) -> String {
        if !self.scientific || value == 0.0 {
            return pretty_print_float(value, false);
        }
        let mut exponent = value.abs().log10().floor();
        let mut mantissa = value / 10f64.powf(exponent);
        if (mantissa.abs() - 10.0).abs() < 1e-9 {
            mantissa /= 10.0;
            exponent += 1.0;
        }
        format!("{}e{exponent}", pretty_print_float(mantissa, false))
    }
}

/// The width plotters estimates for `text` at font `size`, widened by [`TEXT_WIDTH_SLACK`].
fn text_width(area: &DrawingArea<SVGBackend<'_>, Shift>, text: &str, size: f64) -> Result<u32> {
    let (width, _) = area.estimate_text_size(text, &(FONT, size).into_font().into())?;
    Ok((f64::from(width) * TEXT_WIDTH_SLACK).ceil() as u32)
}

/// `size`, or a smaller font size at which `text` fits in `width` pixels.
fn fitting_font_size(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    text: &str,
    size: f64,
    width: u32,
) -> Result<f64> {
    let needed = text_width(area, text, size)?;
    Ok(if needed > width {
        size * f64::from(width) / f64::from(needed)
    } else {
        size
    })
}

/// The legend entries of `chart`, one per series in chart order: its name, shortened to
/// [`MAX_LEGEND_TEXT`] pixels, and marked "(no data)" where it is missing from `drawn`.
fn legend_entries(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    chart: &LineChart,
    drawn: &[Drawable],
) -> Result<Vec<String>> {
    let mut entries = Vec::with_capacity(chart.series.len());
    for (index, series) in chart.series.iter().enumerate() {
        let mut entry = shortened(area, &series.name)?;
        if !drawn.iter().any(|line| line.index == index) {
            entry += " (no data)";
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// `name`, or its longest prefix that fits in [`MAX_LEGEND_TEXT`] pixels with an ellipsis.
fn shortened(area: &DrawingArea<SVGBackend<'_>, Shift>, name: &str) -> Result<String> {
    if text_width(area, name, LABEL_SIZE)? <= MAX_LEGEND_TEXT {
        return Ok(name.to_owned());
    }
    let mut prefix = name.to_owned();
    while prefix.pop().is_some() {
        let shortened = format!("{prefix}…");
        if text_width(area, &shortened, LABEL_SIZE)? <= MAX_LEGEND_TEXT {
            return Ok(shortened);
        }
    }
    Ok("…".to_owned())
}

/// The width of the legend column: its box around the widest of `entries`, and margins.
fn legend_width(area: &DrawingArea<SVGBackend<'_>, Shift>, entries: &[String]) -> Result<u32> {
    let mut widest = 0;
    for entry in entries {
        widest = widest.max(text_width(area, entry, LABEL_SIZE)?);
    }
    Ok(widest + LEGEND_SAMPLE.unsigned_abs() + 4 * MARGIN)
}

/// The width of the y label area: the widest tick label plotters will draw for `y_range`, the
/// tick marks, and the rotated axis description.
fn y_label_area_width(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    y_range: (f64, f64),
    format: TickFormat,
) -> Result<u32> {
    let coord = RangedCoordf64::from(y_range.0..y_range.1);
    let mut widest = 0;
    for value in coord.key_points(Y_LABELS) {
        widest = widest.max(text_width(area, &format.label(value), LABEL_SIZE)?);
    }
    let (_, desc_height) =
        area.estimate_text_size("Ag", &(FONT, AXIS_DESC_SIZE).into_font().into())?;
    Ok(widest + desc_height + 2 * MARGIN)
}

/// Draws the axes, the grid and the lines of `series` on `area`, with `x_spec` as the x axis
/// (labelled in `x_format`) and `y_range` as the y axis.
fn draw_plot<X>(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    chart: &LineChart,
    series: &[Drawable],
    x_spec: X,
    x_format: TickFormat,
    y_range: (f64, f64),
) -> Result<()>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let y_format = TickFormat::for_range(y_range.0, y_range.1);
    let mut plot = ChartBuilder::on(area)
        .margin(MARGIN)
        .margin_right(0)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(y_label_area_width(area, y_range, y_format)?)
        .build_cartesian_2d(x_spec, y_range.0..y_range.1)?;
    plot.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .axis_desc_style((FONT, AXIS_DESC_SIZE))
        .label_style((FONT, LABEL_SIZE))
        .x_label_formatter(&|x| x_format.label(*x))
        .y_label_formatter(&|y| y_format.label(*y))
        .y_labels(Y_LABELS)
        .light_line_style(BLACK.mix(0.04))
        .draw()?;
    for line in series {
        let look = Look::of(line.index);
        let colour = look.colour;
        for &(x, low, high) in &line.bars {
            let bar_style = colour.stroke_width(1);
            plot.plotting_area()
                .draw(&PathElement::new(vec![(x, low), (x, high)], bar_style))?;
            for end in [low, high] {
                let cap = vec![(-MARKER_SIZE, 0), (MARKER_SIZE, 0)];
                plot.plotting_area()
                    .draw(&(EmptyElement::at((x, end)) + PathElement::new(cap, bar_style)))?;
            }
        }
        plot.draw_series(LineSeries::new(
            line.points.iter().copied(),
            colour.stroke_width(2),
        ))?;
        for &point in &line.points {
            plot.plotting_area().draw(&marker(look, point))?;
        }
    }
    Ok(())
}

/// The marker of a series drawn with `look`, centred at `at`.
fn marker<'a, DB: DrawingBackend + 'a, C: Clone + 'a>(look: Look, at: C) -> DynElement<'a, DB, C> {
    let fill = look.colour.filled();
    let s = MARKER_SIZE;
    let anchor = EmptyElement::at(at);
    match look.marker {
        Marker::Circle => (anchor + Circle::new((0, 0), s, fill)).into_dyn(),
        Marker::Triangle => (anchor + TriangleMarker::new((0, 0), s + 1, fill)).into_dyn(),
        Marker::Cross => (anchor + Cross::new((0, 0), s, look.colour.stroke_width(2))).into_dyn(),
        Marker::Square => (anchor + Rectangle::new([(-s, -s), (s, s)], fill)).into_dyn(),
    }
}

/// Draws the legend at the top of `area`: a box with one row per entry of `entries`, each in
/// the look of the series at its position (rows get tighter when they would not fit).
fn draw_legend(area: &DrawingArea<SVGBackend<'_>, Shift>, entries: &[String]) -> Result<()> {
    let margin = MARGIN as i32;
    let (width, height) = area.dim_in_pixel();
    let (width, height) = (
        i32::try_from(width).context("legend width")?,
        i32::try_from(height).context("legend height")?,
    );
    let rows = i32::try_from(entries.len()).context("too many series for a legend")?;
    let row_height = LEGEND_ROW.min((height - 3 * margin) / rows.max(1));
    let (left, right, top) = (margin, width - margin, margin);
    let bottom = top + row_height * rows + margin;
    let corners = [(left, top), (right, bottom)];
    area.draw(&Rectangle::new(corners, WHITE.filled()))?;
    area.draw(&Rectangle::new(corners, BLACK.mix(0.5).stroke_width(1)))?;
    let text_style =
        TextStyle::from((FONT, LABEL_SIZE).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (row, (index, entry)) in (0..rows).zip(entries.iter().enumerate()) {
        let look = Look::of(index);
        let y = top + margin / 2 + row_height * row + row_height / 2;
        let sample_left = left + margin / 2;
        let sample_right = sample_left + LEGEND_SAMPLE;
        area.draw(&PathElement::new(
            vec![(sample_left, y), (sample_right, y)],
            look.colour.stroke_width(2),
        ))?;
        area.draw(&marker(look, ((sample_left + sample_right) / 2, y)))?;
        area.draw_text(entry, &text_style, (sample_right + margin / 2, y))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A series named `name` through `points`, without spreads.
    fn series(name: &str, points: &[(f64, f64)]) -> Series {
        Series {
            name: name.to_owned(),
            points: points.to_vec(),
            spread: None,
        }
    }

    /// A chart titled `title` over `series`, on a log x axis.
    fn chart(title: &str, series: Vec<Series>) -> LineChart {
        LineChart {
            title: title.to_owned(),
            x_label: "nprobe".to_owned(),
            y_label: "recall@10".to_owned(),
            log2_x: true,
            series,
        }
    }

    /// The texts of the `<text>` elements of `svg`.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|element| {
                let (_, rest) = element.split_once('>')?;
                let (text, _) = rest.split_once("</text>")?;
                Some(text.trim().to_owned())
            })
            .collect()
    }

    #[test]
    fn log2_chart_with_spreads_has_title_labels_legend_and_ticks() {
        let xs = [1.0, 2.0, 4.0, 8.0];
        let with_spread = |name: &str, base: f64| Series {
            name: name.to_owned(),
            points: xs.iter().map(|&x| (x, base + x / 100.0)).collect(),
            spread: Some(
                xs.iter()
                    .map(|&x| (base + x / 100.0 - 0.02, base + x / 100.0 + 0.01))
                    .collect(),
            ),
        };
        let chart = chart(
            "Recall by nprobe",
            vec![with_spread("poeem OPQ", 0.8), with_spread("faiss OPQ", 0.7)],
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recall.svg");
        write_svg(&chart, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        let texts = texts(&svg);
        for expected in [
            "Recall by nprobe",
            "nprobe",
            "recall@10",
            "poeem OPQ",
            "faiss OPQ",
        ] {
            assert!(
                texts.iter().any(|t| t == expected),
                "{expected} missing in {texts:?}"
            );
        }
        for tick in ["1", "2", "4", "8"] {
            assert!(
                texts.iter().any(|t| t == tick),
                "tick {tick} missing in {texts:?}"
            );
        }
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(
            files.len(),
            1,
            "a temporary file was left behind: {files:?}"
        );
    }

    #[test]
    fn non_finite_points_are_skipped_and_marked_in_the_legend() {
        let chart = chart(
            "With gaps",
            vec![
                series(
                    "gappy",
                    &[
                        (1.0, 0.5),
                        (2.0, f64::NAN),
                        (4.0, 0.7),
                        (f64::INFINITY, 0.8),
                    ],
                ),
                series("empty", &[(1.0, f64::NAN), (0.0, 0.5)]),
            ],
        );
        let svg = render_svg(&chart).unwrap();
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        let texts = texts(&svg);
        assert!(texts.iter().any(|t| t == "gappy"), "{texts:?}");
        assert!(texts.iter().any(|t| t == "empty (no data)"), "{texts:?}");
        // Only the drawable points get markers (circles: series 0 only).
        assert_eq!(svg.matches("<circle").count(), 2 + 1, "{svg}");
    }

    #[test]
    fn chart_without_drawable_points_is_an_error_naming_it() {
        let no_series = chart("Nothing here", Vec::new());
        let error = render_svg(&no_series).unwrap_err();
        assert!(format!("{error:#}").contains("Nothing here"), "{error:#}");

        let only_nan = chart("All NaN", vec![series("a", &[(f64::NAN, 1.0)])]);
        let error = format!("{:#}", render_svg(&only_nan).unwrap_err());
        assert!(error.contains("All NaN"), "{error}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.svg");
        let error = format!("{:#}", write_svg(&no_series, &path).unwrap_err());
        assert!(
            error.contains("none.svg") && error.contains("Nothing here"),
            "{error}"
        );
        assert!(!path.exists());
    }

    #[test]
    fn mismatched_spread_is_an_error() {
        let mut bad = series("a", &[(1.0, 1.0), (2.0, 2.0)]);
        bad.spread = Some(vec![(0.5, 1.5)]);
        let error = format!(
            "{:#}",
            render_svg(&chart("Bad spread", vec![bad])).unwrap_err()
        );
        assert!(
            error.contains("Bad spread") && error.contains("1 spreads for 2 points"),
            "{error}"
        );
    }

    #[test]
    fn single_point_renders_on_both_scales() {
        for log2_x in [true, false] {
            let mut single = chart("One point", vec![series("only", &[(4.0, 0.9)])]);
            single.log2_x = log2_x;
            let texts = texts(&render_svg(&single).unwrap());
            assert!(texts.iter().any(|t| t == "only"), "{texts:?}");
            if log2_x {
                assert!(texts.iter().any(|t| t == "4"), "{texts:?}");
            }
        }
    }

    #[test]
    fn tick_labels_are_plain_or_all_scientific() {
        let plain = TickFormat::for_range(0.0, 130_000.0);
        assert_eq!(plain.label(0.1 + 0.2), "0.3");
        assert_eq!(plain.label(120_000.0), "120000");
        let huge = TickFormat::for_range(-4e8, 4e8);
        assert_eq!(huge.label(-2e8), "-2e8");
        assert_eq!(huge.label(1.5e8), "1.5e8");
        assert_eq!(huge.label(0.0), "0");
        assert_eq!(TickFormat::for_range(1e-4, 2e-4).label(1.25e-4), "1.25e-4");
    }

    #[test]
    fn log_ticks_are_distinct_and_thinned() {
        assert_eq!(
            log_ticks([4.0, 1.0, 2.0, 1.0].into_iter()),
            vec![1.0, 2.0, 4.0]
        );
        let many = log_ticks((0..100).map(|i| 1.0 + f64::from(i)));
        assert!(many.len() <= MAX_LOG_TICKS + 1, "{many:?}");
        assert_eq!(many.first(), Some(&1.0));
    }
}
