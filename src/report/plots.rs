//! PNG plots of a results table: quality and speed against file size, with the Pareto frontier.
//!
//! Text is drawn with DejaVu Sans embedded at compile time (plotters' `ab_glyph` backend), so
//! plotting needs no system font library and no font files at run time.

use super::pareto::{pareto_min_max, pareto_min_min};
use super::sweet_spot::Criteria;
use crate::record::results::{Kind, Results, Variant};
use anyhow::{anyhow, Context, Result};
use plotters::coord::combinators::WithKeyPoints;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::drawing::DrawingAreaErrorKind;
use plotters::prelude::*;
use std::path::Path;

const WIDTH: u32 = 1100;
const HEIGHT: u32 = 700;
/// Above this many points, points are not labelled with their recipe.
const MAX_LABELS: usize = 40;

const MICROSCALE: RGBColor = RGBColor(31, 119, 180);
const STOCK: RGBColor = RGBColor(230, 110, 0);
const BASELINE: RGBColor = RGBColor(0, 0, 0);
const SOURCE: RGBColor = RGBColor(148, 103, 189);
const FRONTIER: RGBColor = RGBColor(44, 160, 44);
const BUDGET: RGBColor = RGBColor(200, 40, 40);
const GREY: RGBColor = RGBColor(120, 120, 120);

/// One point of a scatter plot.
#[derive(Clone, Debug)]
pub struct Point {
    pub size_mib: f64,
    pub y: f64,
    /// Half-height of an error bar (standard error or standard deviation).
    pub err: Option<f64>,
    /// Variant name (for the frontier list) and recipe (the label drawn).
    pub name: String,
    pub label: String,
    pub kind: Kind,
}

/// One plot: points plus how to read them.
#[derive(Clone, Debug)]
pub struct Scatter {
    /// What y is, for lists: `perplexity`, `sst2_acc`, `tg t/s on pi5-8gb`.
    pub metric: String,
    pub unit: Unit,
    pub title: String,
    pub y_desc: String,
    pub points: Vec<Point>,
    /// The frontier maximizes y (accuracy, speed) rather than minimizing it (perplexity).
    pub maximize_y: bool,
    /// A horizontal reference line (e.g. the quality budget) and its legend.
    pub reference: Option<(f64, String)>,
    /// Start the y axis at zero (rates).
    pub y_from_zero: bool,
    /// The top of the useful region (lower-is-better plots), and what it is: the axis stops
    /// there, and a variant beyond it is drawn as a marker on the top edge with its value in its
    /// label, so that broken variants do not squeeze the useful ones into a sliver of the plot.
    pub y_cap: Option<(f64, String)>,
}

impl Scatter {
    /// Is point `i` beyond the useful region (drawn on the edge, off scale)?
    pub fn off_scale(&self, i: usize) -> bool {
        self.y_cap.as_ref().is_some_and(|(cap, _)| self.points[i].y > *cap)
    }

    /// Indices of the points on the Pareto frontier (smaller size, better y), by size.
    pub fn frontier(&self) -> Vec<usize> {
        let xy: Vec<(f64, f64)> = self.points.iter().map(|p| (p.size_mib, p.y)).collect();
        if self.maximize_y {
            pareto_min_max(&xy)
        } else {
            pareto_min_min(&xy)
        }
    }
}

/// How y values are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Perplexity,
    /// Mean KL divergence to the baseline, in nats.
    Kld,
    /// Accuracy, as a percentage (y is already multiplied by 100).
    Percent,
    TokensPerSecond,
}

impl Unit {
    pub fn format(self, y: f64) -> String {
        match self {
            Unit::Perplexity => format!("PPL {y:.3}"),
            Unit::Kld => format!("KLD {y:.4}"),
            Unit::Percent => format!("{y:.1}%"),
            Unit::TokensPerSecond => format!("{y:.2} t/s"),
        }
    }
}

/// The plots of a results table: perplexity, each accuracy metric, and tg tokens/s per profile
/// against file size. Failed variants and variants without the metric are left out; plots without
/// any point are not made.
pub fn scatters(results: &Results, criteria: &Criteria) -> Vec<(String, Scatter)> {
    let mut out: Vec<(String, Scatter)> = Vec::new();
    out.extend(ppl_scatter(results, criteria));
    out.extend(kld_scatter(results));
    out.extend(results.acc_metrics.iter().filter_map(|m| acc_scatter(results, criteria, m)));
    out.extend(results.profiles.iter().filter_map(|p| tg_scatter(results, p)));
    out
}

/// The points of the variants that did not fail and have a size and a `y`.
fn points(results: &Results, y: impl Fn(&Variant) -> Option<(f64, Option<f64>)>) -> Vec<Point> {
    results
        .ok()
        .filter_map(|v| {
            let (value, err) = y(v)?;
            Some(Point {
                size_mib: v.size_mib()?,
                y: value,
                err,
                name: v.name.clone(),
                label: if v.recipe.is_empty() { v.name.clone() } else { v.recipe.clone() },
                kind: v.kind,
            })
        })
        .collect()
}

fn ppl_scatter(results: &Results, criteria: &Criteria) -> Option<(String, Scatter)> {
    let pts = points(results, |v| v.ppl.map(|m| (m.value, m.stderr)));
    if pts.is_empty() {
        return None;
    }
    let base = results.baseline().filter(|b| !b.failed());
    let reference = base.and_then(|b| b.ppl).map(|m| {
        let limit = m.value * (1.0 + criteria.max_ppl_increase);
        (limit, format!("quality budget: baseline {:+.0}%", 100.0 * criteria.max_ppl_increase))
    });
    // Beyond twice the baseline's perplexity a variant is broken for any use: off scale.
    let y_cap = base.and_then(|b| b.ppl).map(|m| (PPL_CAP * m.value, format!("PPL above {PPL_CAP}× the baseline's")));
    let scatter = Scatter {
        metric: "perplexity".into(),
        unit: Unit::Perplexity,
        title: "Perplexity vs file size (lower left is better)".into(),
        y_desc: "perplexity".into(),
        points: pts,
        maximize_y: false,
        reference,
        y_from_zero: false,
        y_cap,
    };
    Some(("ppl_vs_size.png".to_string(), scatter))
}

/// The perplexity plot's useful region ends at this multiple of the baseline's perplexity.
pub const PPL_CAP: f64 = 2.0;
/// The KL divergence plot's useful region ends here (nats per token: a variant that far from the
/// baseline no longer behaves like it).
pub const KLD_CAP: f64 = 1.0;

/// KL divergence to the baseline against size (the baseline itself has none): a log axis when the
/// values span more than a decade, as llama.cpp's quantization tables are read.
fn kld_scatter(results: &Results) -> Option<(String, Scatter)> {
    let pts = points(results, |v| v.kld.filter(|m| m.value > 0.0).map(|m| (m.value, m.stderr)));
    if pts.is_empty() {
        return None;
    }
    let scatter = Scatter {
        metric: "KL divergence".into(),
        unit: Unit::Kld,
        title: "KL divergence to the baseline vs file size (lower left is better)".into(),
        y_desc: "mean KL divergence (nats/token)".into(),
        points: pts,
        maximize_y: false,
        reference: None,
        y_from_zero: false,
        y_cap: Some((KLD_CAP, format!("KLD above {KLD_CAP} nat"))),
    };
    Some(("kld_vs_size.png".to_string(), scatter))
}

fn acc_scatter(results: &Results, criteria: &Criteria, metric: &str) -> Option<(String, Scatter)> {
    let pts = points(results, |v| v.acc.get(metric).map(|m| (100.0 * m.value, m.stderr.map(|s| 100.0 * s))));
    if pts.is_empty() {
        return None;
    }
    let base = results.baseline().filter(|b| !b.failed());
    // Only the primary accuracies (`_acc`) carry a budget.
    let reference = base.filter(|_| metric.ends_with("_acc")).and_then(|b| b.acc.get(metric)).map(|m| {
        let limit = 100.0 * (m.value - criteria.max_acc_drop);
        (limit, format!("quality budget: baseline -{:.1} points", 100.0 * criteria.max_acc_drop))
    });
    let scatter = Scatter {
        metric: metric.to_string(),
        unit: Unit::Percent,
        title: format!("{metric} vs file size (upper left is better)"),
        y_desc: format!("{metric} (%)"),
        points: pts,
        maximize_y: true,
        reference,
        y_from_zero: false,
        y_cap: None,
    };
    Some((format!("{}_vs_size.png", file_stem(metric)), scatter))
}

fn tg_scatter(results: &Results, profile: &str) -> Option<(String, Scatter)> {
    let pts = points(results, |v| Some((v.tg_tps(profile)?, v.bench(profile).and_then(|b| b.tg_tps_sd))));
    if pts.is_empty() {
        return None;
    }
    let scatter = Scatter {
        metric: format!("tg t/s on {profile}"),
        unit: Unit::TokensPerSecond,
        title: format!("Generation speed on {profile} vs file size (upper left is better)"),
        y_desc: "generation tokens/s".into(),
        points: pts,
        maximize_y: true,
        reference: None,
        y_from_zero: true,
        y_cap: None,
    };
    Some((format!("tg_vs_size_{}.png", file_stem(profile)), scatter))
}

/// A file-name-safe form of a metric or profile name.
pub fn file_stem(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

fn register_fonts() -> Result<()> {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *ONCE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!("the embedded DejaVu Sans font could not be loaded"))
    }
}

/// Render a scatter plot to PNG bytes.
pub fn render_png(s: &Scatter) -> Result<Vec<u8>> {
    register_fonts()?;
    let mut buf = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("plot: {e}"))?;
        draw(&root, s).map_err(|e| anyhow!("plot `{}`: {e}", s.title))?;
        root.present().map_err(|e| anyhow!("plot: {e}"))?;
    }
    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, WIDTH, HEIGHT);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().context("PNG header")?;
        w.write_image_data(&buf).context("PNG data")?;
    }
    Ok(png_bytes)
}

/// Render and write (atomically) one plot.
pub fn write_png(path: &Path, s: &Scatter) -> Result<()> {
    let bytes = render_png(s)?;
    crate::util::atomic::write_file(path, &bytes)
}

type DrawResult<T, DB> = std::result::Result<T, DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// The scatter as drawn: points beyond the useful region moved onto its edge (the cap), without
/// error bars, their labels carrying their real value.
fn clipped(s: &Scatter) -> Scatter {
    let mut shown = s.clone();
    if let Some((cap, _)) = &s.y_cap {
        for (i, p) in shown.points.iter_mut().enumerate() {
            if s.off_scale(i) {
                let value = if p.y >= 1e4 { format!("{:.2e}", p.y) } else { s.unit.format(p.y) };
                let value = value.trim_start_matches("PPL ").trim_start_matches("KLD ").to_string();
                p.label = format!("{} ↑ {value}", p.label);
                p.y = *cap;
                p.err = None;
            }
        }
    }
    shown
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, s: &Scatter) -> DrawResult<(), DB> {
    let original = s;
    let shown = clipped(s);
    let s = &shown;
    let (mut xlo, mut xhi) = bounds(s.points.iter().map(|p| p.size_mib));
    // Log x axis: pad by a ratio, and keep at least a factor 2 of span so ticks exist.
    if xhi / xlo < 2.0 {
        let mid = (xlo * xhi).sqrt();
        (xlo, xhi) = (mid / 1.414, mid * 1.414);
    }
    let (xlo, xhi) = (xlo / 1.12, xhi * 1.25);
    let ys = s.points.iter().flat_map(|p| {
        let e = p.err.unwrap_or(0.0);
        [p.y - e, p.y + e]
    });
    let (mut ylo, mut yhi) = bounds(ys.chain(s.reference.iter().map(|r| r.0)));
    if s.y_from_zero {
        ylo = 0.0;
    }
    if yhi - ylo < 1e-9 * yhi.abs().max(1.0) {
        (ylo, yhi) = (ylo - 0.5 * ylo.abs().max(1.0) * 0.1, yhi + 0.5 * yhi.abs().max(1.0) * 0.1);
    }
    let pad = 0.08 * (yhi - ylo);
    let ylo = if s.y_from_zero { 0.0 } else { ylo - pad };
    let yhi = yhi + pad;
    // Perplexities that span more than a decade read better on a log axis (padded by ratios, and
    // error bars clipped at half the value so the axis stays positive).
    let positive = s.points.iter().all(|p| p.y > 0.0);
    let (pmin, pmax) = bounds(s.points.iter().map(|p| p.y));
    if !s.maximize_y && positive && pmax / pmin > 10.0 {
        let lo = s.points.iter().map(|p| (p.y - p.err.unwrap_or(0.0)).max(p.y / 2.0)).fold(f64::INFINITY, f64::min);
        let hi = s
            .points
            .iter()
            .map(|p| p.y + p.err.unwrap_or(0.0))
            .chain(s.reference.iter().map(|r| r.0))
            .fold(0.0, f64::max);
        let y: LogCoord<f64> = (lo / 1.3..hi * 1.3).log_scale().into();
        draw_in(root, original, s, (xlo, xhi), y)
    } else {
        let y: RangedCoordf64 = (ylo..yhi).into();
        draw_in(root, original, s, (xlo, xhi), y)
    }
}

/// Tick positions for a log axis: 1-2-5 per decade, or every 1..9 (and 1.5) per decade when that
/// gives fewer than four ticks in the range.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let gen = |mantissas: &[f64]| -> Vec<f64> {
        let (d0, d1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
        let mut v: Vec<f64> = (d0..=d1)
            .flat_map(|d| mantissas.iter().map(move |m| m * 10f64.powi(d)))
            .filter(|t| *t >= lo && *t <= hi)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let coarse = gen(&[1.0, 2.0, 5.0]);
    if coarse.len() >= 4 {
        return coarse;
    }
    let fine = gen(&[1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    if fine.len() <= 12 {
        fine
    } else {
        gen(&[1.0, 2.0, 3.0, 5.0, 7.0])
    }
}

fn bounds(v: impl Iterator<Item = f64>) -> (f64, f64) {
    v.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)))
}

/// Tick labels without trailing zeros: 50, 100, 12.5.
fn tick(v: f64) -> String {
    let s = if v.abs() >= 100.0 { format!("{v:.0}") } else { format!("{v:.2}") };
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

/// The chart of a scatter: file size on a log scale against `Y`.
type Chart<'a, DB, Y> = ChartContext<'a, DB, Cartesian2d<WithKeyPoints<LogCoord<f64>>, Y>>;

/// Draw `s` (the scatter as shown: [`clipped`]); `original` says which points are off scale and
/// which are on the frontier. Layer by layer, bottom up: axes, guide lines, the frontier, the
/// points, their labels, the legend.
fn draw_in<DB: DrawingBackend, Y>(
    root: &DrawingArea<DB, Shift>,
    original: &Scatter,
    s: &Scatter,
    (xlo, xhi): (f64, f64),
    y: Y,
) -> DrawResult<(), DB>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut chart = axes(root, s, (xlo, xhi), y)?;
    let off: Vec<bool> = (0..s.points.len()).map(|i| original.off_scale(i)).collect();
    draw_guides(&mut chart, original, s, (xlo, xhi), &off)?;
    let frontier = draw_frontier(&mut chart, original, s, &off)?;
    draw_points(&mut chart, s, &off)?;
    // Recipe labels: frontier points first, each placed right or left of its point where it does
    // not overlap a label already placed, else left out.
    let marks: Vec<(i32, i32)> = s.points.iter().map(|p| chart.backend_coord(&(p.size_mib, p.y))).collect();
    let (px, py) = chart.plotting_area().get_pixel_range();
    let labels = if s.points.len() <= MAX_LABELS {
        draw_labels(root, s, &frontier, &marks, (px.clone(), py.clone()))?
    } else {
        vec![]
    };
    draw_legend(root, &mut chart, original, s, &marks, &labels, (px, py))
}

/// The caption, the log-scale size axis and `y`, and the mesh.
fn axes<'a, DB: DrawingBackend, Y>(
    root: &'a DrawingArea<DB, Shift>,
    s: &Scatter,
    (xlo, xhi): (f64, f64),
    y: Y,
) -> DrawResult<Chart<'a, DB, Y>, DB>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let x = LogCoord::<f64>::from((xlo..xhi).log_scale()).with_key_points(log_ticks(xlo, xhi));
    let mut chart = ChartBuilder::on(root)
        .caption(&s.title, ("sans-serif", 24).into_font().style(FontStyle::Bold))
        .margin(18)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc("file size (MiB, log scale)")
        .y_desc(&s.y_desc)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .y_max_light_lines(1)
        .light_line_style(RGBColor(240, 240, 240))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()?;
    Ok(chart)
}

/// The budget's reference line, and the line off-scale points stand on (when there are any).
fn draw_guides<'a, DB: DrawingBackend + 'a, Y>(
    chart: &mut Chart<'a, DB, Y>,
    original: &Scatter,
    s: &Scatter,
    (xlo, xhi): (f64, f64),
    off: &[bool],
) -> DrawResult<(), DB>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    if let Some((yref, legend)) = &s.reference {
        chart
            .draw_series(DashedLineSeries::new([(xlo, *yref), (xhi, *yref)], 8, 6, BUDGET.stroke_width(1)))?
            .label(legend.as_str())
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BUDGET.stroke_width(1)));
    }
    if let Some((cap, what)) = original.y_cap.as_ref().filter(|_| off.iter().any(|&o| o)) {
        chart
            .draw_series(DashedLineSeries::new([(xlo, *cap), (xhi, *cap)], 3, 4, GREY.stroke_width(1)))?
            .label(format!("off scale ({what}): ↑ on this line"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREY.stroke_width(1)));
    }
    Ok(())
}

/// The Pareto frontier's line and rings; returns its points (indices into `s.points`). The
/// frontier is the real one; its off-scale points are not drawn as part of the line.
fn draw_frontier<'a, DB: DrawingBackend + 'a, Y>(
    chart: &mut Chart<'a, DB, Y>,
    original: &Scatter,
    s: &Scatter,
    off: &[bool],
) -> DrawResult<Vec<usize>, DB>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let frontier: Vec<usize> = original.frontier().into_iter().filter(|&i| !off[i]).collect();
    let fpts: Vec<(f64, f64)> = frontier.iter().map(|&i| (s.points[i].size_mib, s.points[i].y)).collect();
    if !fpts.is_empty() {
        chart.draw_series(LineSeries::new(fpts.clone(), FRONTIER.stroke_width(2)))?.label("Pareto frontier").legend(
            |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(-10, 0), (10, 0)], FRONTIER.stroke_width(2))
                    + Circle::new((0, 0), 7, FRONTIER.stroke_width(2))
            },
        );
        // A ring around each frontier point, so that a one-point frontier shows too.
        chart.draw_series(fpts.iter().map(|&p| Circle::new(p, 9, FRONTIER.stroke_width(2))))?;
    }
    Ok(frontier)
}

/// Error bars, then off-scale arrows, then each kind's markers with their legend entries.
fn draw_points<'a, DB: DrawingBackend + 'a, Y>(
    chart: &mut Chart<'a, DB, Y>,
    s: &Scatter,
    off: &[bool],
) -> DrawResult<(), DB>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    // Error bars under the markers.
    for p in &s.points {
        if let Some(e) = p.err.filter(|e| *e > 0.0) {
            let c = colour(p.kind).mix(0.55);
            let (lo, hi) = (p.y - e, p.y + e);
            chart.draw_series(std::iter::once(PathElement::new(vec![(p.size_mib, lo), (p.size_mib, hi)], c)))?;
        }
    }

    // Off-scale points: an arrow up, in their kind's colour.
    for (p, _) in s.points.iter().zip(off).filter(|(_, &o)| o) {
        let c = colour(p.kind);
        chart.draw_series(std::iter::once(
            EmptyElement::at((p.size_mib, p.y))
                + Polygon::new(vec![(0, -9), (6, 2), (-6, 2)], c.filled())
                + PathElement::new(vec![(0, 2), (0, 9)], c.stroke_width(2)),
        ))?;
    }

    for kind in [Kind::Microscale, Kind::Stock, Kind::Source, Kind::Baseline] {
        let pts: Vec<&Point> =
            s.points.iter().zip(off).filter(|(p, &o)| p.kind == kind && !o).map(|(p, _)| p).collect();
        if pts.is_empty() {
            continue;
        }
        // One macro per marker so that the series and its legend entry draw the same shape.
        macro_rules! mark {
            ($at:expr) => {
                match kind {
                    Kind::Microscale => EmptyElement::at($at) + Circle::new((0, 0), 5, MICROSCALE.filled()).into_dyn(),
                    Kind::Stock => {
                        // Hollow, so that a microscale point under it stays visible.
                        EmptyElement::at($at)
                            + PathElement::new(vec![(0, -8), (7, 5), (-7, 5), (0, -8)], STOCK.stroke_width(2))
                                .into_dyn()
                    }
                    Kind::Baseline => {
                        EmptyElement::at($at) + Cross::new((0, 0), 7, BASELINE.stroke_width(3)).into_dyn()
                    }
                    Kind::Source => {
                        // A hollow square: the file the user already has.
                        EmptyElement::at($at)
                            + PathElement::new(
                                vec![(-6, -6), (6, -6), (6, 6), (-6, 6), (-6, -6)],
                                SOURCE.stroke_width(3),
                            )
                            .into_dyn()
                    }
                }
            };
        }
        let legend = match kind {
            Kind::Microscale => "microscale",
            Kind::Stock => "llama.cpp stock",
            Kind::Source => "as shipped",
            Kind::Baseline => "baseline",
        };
        chart.draw_series(pts.iter().map(|p| mark!((p.size_mib, p.y))))?.label(legend).legend(move |c| mark!(c));
    }
    Ok(())
}

/// The legend, where it hides the fewest points, then the fewest labels.
fn draw_legend<'a, DB: DrawingBackend + 'a, Y>(
    root: &DrawingArea<DB, Shift>,
    chart: &mut Chart<'a, DB, Y>,
    original: &Scatter,
    s: &Scatter,
    marks: &[(i32, i32)],
    labels: &[(i32, i32, i32, i32)],
    (px, py): (std::ops::Range<i32>, std::ops::Range<i32>),
) -> DrawResult<(), DB>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut texts: Vec<String> = vec!["llama.cpp stock".into(), "Pareto frontier".into()];
    texts.extend(s.reference.iter().map(|r| r.1.clone()));
    texts.extend(original.y_cap.iter().map(|(_, what)| format!("off scale ({what}): ↑ on this line")));
    let font = ("sans-serif", 15).into_font().color(&BLACK);
    let mut w = 0;
    for t in &texts {
        w = w.max(root.estimate_text_size(t, &font)?.0 as i32);
    }
    let legend = (w + 50, 22 * (texts.len() as i32 + 1) + 20);
    chart
        .configure_series_labels()
        .position(legend_position(marks, labels, (px, py), legend, s.maximize_y))
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.9))
        .border_style(GREY)
        .margin(10)
        .draw()?;
    Ok(())
}

/// Each point's label where it overlaps no label already placed, no marker and no edge of the
/// plotting area (`area`, in pixels), frontier points first; a label with no such spot is left out.
/// Returns the labels' boxes (pixels: left, top, right, bottom).
fn draw_labels<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    s: &Scatter,
    frontier: &[usize],
    marks: &[(i32, i32)],
    (px, py): (std::ops::Range<i32>, std::ops::Range<i32>),
) -> DrawResult<Vec<(i32, i32, i32, i32)>, DB> {
    let font = ("sans-serif", 13).into_font().color(&RGBColor(60, 60, 60));
    let mut order: Vec<usize> = frontier.to_vec();
    order.extend((0..s.points.len()).filter(|i| !frontier.contains(i)));
    let mut placed: Vec<(i32, i32, i32, i32)> = Vec::new();
    for i in order {
        let p = &s.points[i];
        let (cx, cy) = marks[i];
        let (w, h) = root.estimate_text_size(&p.label, &font)?;
        let (w, h) = (w as i32, h as i32);
        // Right of the point, at its height first and then a row or two further up or down, before
        // the left (where a long label reaches across other points). Any spot but the first gets a
        // leader line from the point, so that a label pushed away still says whose it is.
        let rows = [-h - 1, 4, -2 * h - 8, h + 11, -3 * h - 15, 2 * h + 18];
        let candidates: Vec<(i32, i32)> =
            rows.iter().map(|&dy| (cx + 11, cy + dy)).chain(rows.iter().map(|&dy| (cx - 11 - w, cy + dy))).collect();
        let spot = candidates.into_iter().enumerate().find(|&(_, (x, y))| {
            let r = (x, y, x + w, y + h);
            x >= px.start
                && x + w <= px.end
                && y >= py.start
                && y + h <= py.end
                && !placed.iter().any(|q| overlap(r, *q))
                && !marks.iter().any(|&(mx, my)| overlap(r, (mx - 4, my - 4, mx + 4, my + 4)))
        });
        if let Some((k, (x, y))) = spot {
            root.draw(&Text::new(p.label.clone(), (x, y), font.clone()))?;
            if k > 0 {
                let end = (cx.clamp(x, x + w), cy.clamp(y, y + h));
                root.draw(&PathElement::new(vec![(cx, cy), end], GREY.stroke_width(1)))?;
            }
            placed.push((x, y, x + w, y + h));
        }
    }
    Ok(placed)
}

/// Where the legend box (`w` × `h` pixels) covers the fewest of the points (`marks`) inside the
/// plotting area, then the fewest labels (boxes); ties go to the usual corner (upper right for
/// lower-is-better plots, lower right for higher-is-better ones).
fn legend_position(
    marks: &[(i32, i32)],
    labels: &[(i32, i32, i32, i32)],
    (px, py): (std::ops::Range<i32>, std::ops::Range<i32>),
    (w, h): (i32, i32),
    maximize_y: bool,
) -> SeriesLabelPosition {
    use SeriesLabelPosition::*;
    const M: i32 = 10; // the legend's margin
    let (left, right) = (px.start + M, px.end - M - w);
    let (top, middle, bottom) = (py.start + M, (py.start + py.end - h) / 2, py.end - M - h);
    let mut spots = vec![
        (UpperRight, right, top),
        (MiddleRight, right, middle),
        (LowerRight, right, bottom),
        (UpperLeft, left, top),
        (MiddleLeft, left, middle),
        (LowerLeft, left, bottom),
    ];
    if maximize_y {
        spots.swap(0, 2);
    }
    // A hidden point costs more than any number of hidden labels.
    let covered = |x: i32, y: i32| {
        let r = (x, y, x + w, y + h);
        let points = marks.iter().filter(|&&(mx, my)| overlap(r, (mx - 6, my - 6, mx + 6, my + 6))).count();
        let texts = labels.iter().filter(|&&l| overlap(r, l)).count();
        points * 10_000 + texts
    };
    let best = spots.iter().map(|&(_, x, y)| covered(x, y)).min().unwrap_or(0);
    spots.into_iter().find(|&(_, x, y)| covered(x, y) == best).map(|(p, _, _)| p).unwrap_or(UpperRight)
}

fn overlap(a: (i32, i32, i32, i32), b: (i32, i32, i32, i32)) -> bool {
    a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3
}

fn colour(kind: Kind) -> RGBColor {
    match kind {
        Kind::Microscale => MICROSCALE,
        Kind::Stock => STOCK,
        Kind::Baseline => BASELINE,
        Kind::Source => SOURCE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_legend_goes_where_it_hides_the_fewest_points() {
        let area = (0..1000, 0..600);
        let at = |p: SeriesLabelPosition| format!("{p:?}");
        // Nothing anywhere: the usual corner.
        assert_eq!(at(legend_position(&[], &[], area.clone(), (300, 120), false)), "UpperRight");
        assert_eq!(at(legend_position(&[], &[], area.clone(), (300, 120), true)), "LowerRight");
        // Points along the top right and the middle right: the lower right is free.
        let marks = [(900, 40), (800, 60), (850, 300), (950, 280)];
        assert_eq!(at(legend_position(&marks, &[], area.clone(), (300, 120), false)), "LowerRight");
        // Points on the whole right side: the left.
        let right: Vec<(i32, i32)> = (0..12).map(|i| (900, 30 + 50 * i)).collect();
        assert_eq!(at(legend_position(&right, &[], area.clone(), (300, 120), false)), "UpperLeft");
        // No point in the way, but a label in the upper right: the next free corner.
        let label = [(750, 20, 990, 40)];
        assert_eq!(at(legend_position(&[], &label, area.clone(), (300, 120), false)), "MiddleRight");
        // Labels never outweigh a point.
        assert_eq!(at(legend_position(&marks, &label, area, (300, 120), false)), "LowerRight");
    }
}
