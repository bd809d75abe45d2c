//! Line charts for `bench` (the plotters crate): a title, labelled axes with ticks and units, a legend, and an
//! optional second y axis on the right for a series in other units (FLOPs beside milliseconds). PNG (or any format
//! the `image` crate writes, by extension) is drawn into a buffer with DejaVu Sans compiled in, so a chart looks
//! the same on machines without fonts; `.svg` writes a vector file.

use super::CliError;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// One line of a chart.
pub struct Line {
    /// Its legend entry.
    pub label: String,
    /// `(x, y)` points in x order.
    pub points: Vec<(f64, f64)>,
}

/// A chart: lines against a shared x axis, on the left axis and optionally on a right one.
pub struct Chart {
    /// The title above the plot.
    pub title: String,
    /// The x axis's label, with its unit.
    pub x_label: String,
    /// The left y axis's label, with its unit.
    pub y_label: String,
    /// The lines on the left axis.
    pub lines: Vec<Line>,
    /// The right y axis's label and lines (drawn dashed), if any.
    pub right: Option<(String, Vec<Line>)>,
}

/// The Tableau colours matplotlib cycles through, so the charts read like the papers' figures.
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

const SIZE: (u32, u32) = (960, 560);

/// Registers the compiled-in DejaVu Sans as plotters' `sans-serif` (once per process).
fn register_font() -> Result<(), CliError> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    ok.then_some(()).ok_or_else(|| CliError::runtime("the compiled-in DejaVu Sans font did not load", None))
}

/// `[lo, hi]` of the values with a little room above and below (a flat series gets a unit-wide range).
fn span(values: impl Iterator<Item = f64>, from_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if from_zero {
        lo = lo.min(0.0);
    }
    if hi - lo < 1e-12 {
        hi = lo + 1.0;
    }
    let pad = 0.05 * (hi - lo);
    (if from_zero && lo >= 0.0 { 0.0 } else { lo - pad }, hi + pad)
}

/// A tick label without trailing zeros: `1600`, `0.25`, `12.5`.
fn tick(v: &f64) -> String {
    let text = if v.abs() >= 100.0 { format!("{v:.0}") } else { format!("{v:.3}") };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

impl Chart {
    /// Draws the chart to `path`: SVG for `.svg`, otherwise a bitmap in the format of the extension.
    pub fn save(&self, path: &Path) -> Result<(), CliError> {
        register_font()?;
        let failed = |e: String| CliError::runtime(format!("{}: {e}", path.display()), None);
        let svg = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("svg"));
        if svg {
            let root = SVGBackend::new(path, SIZE).into_drawing_area();
            self.draw(&root).map_err(failed)?;
            return root.present().map_err(|e| failed(e.to_string()));
        }
        let mut buffer = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buffer, SIZE).into_drawing_area();
            self.draw(&root).map_err(failed)?;
            root.present().map_err(|e| failed(e.to_string()))?;
        }
        let image = image::RgbImage::from_raw(SIZE.0, SIZE.1, buffer)
            .ok_or_else(|| failed("the chart buffer has the wrong size".into()))?;
        image.save(path).map_err(|e| failed(e.to_string()))
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        root.fill(&WHITE).map_err(err)?;
        let xs = || self.lines.iter().chain(self.right.iter().flat_map(|r| r.1.iter())).flat_map(|l| l.points.iter());
        let (x0, x1) = span(xs().map(|p| p.0), false);
        let (y0, y1) = span(self.lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)), true);
        let (r0, r1) =
            span(self.right.iter().flat_map(|r| r.1.iter()).flat_map(|l| l.points.iter().map(|p| p.1)), true);
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .right_y_label_area_size(if self.right.is_some() { 80 } else { 0 })
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?
            .set_secondary_coord(x0..x1, r0..r1);
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(err)?;
        for (i, line) in self.lines.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(line.points.iter().copied(), colour.stroke_width(2)))
                .map_err(err)?
                .label(&line.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
            chart.draw_series(line.points.iter().map(|&p| Circle::new(p, 4, colour.filled()))).map_err(err)?;
        }
        if let Some((label, lines)) = &self.right {
            chart
                .configure_secondary_axes()
                .y_desc(label)
                .y_label_formatter(&tick)
                .label_style(("sans-serif", 14))
                .axis_desc_style(("sans-serif", 16))
                .draw()
                .map_err(err)?;
            for (j, line) in lines.iter().enumerate() {
                let colour = COLOURS[(self.lines.len() + j) % COLOURS.len()];
                let dashed = DashedLineSeries::new(line.points.iter().copied(), 8, 5, colour.stroke_width(2));
                chart
                    .draw_secondary_series(dashed)
                    .map_err(err)?
                    .label(format!("{} (right axis)", line.label))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
                chart
                    .draw_secondary_series(line.points.iter().map(|&p| TriangleMarker::new(p, 5, colour.filled())))
                    .map_err(err)?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_text_where_its_title_and_legend_go() {
        let dir = std::env::temp_dir().join(format!("tokensieve-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let chart = Chart {
            title: "TTFT against the budget".into(),
            x_label: "budget (% of visual tokens)".into(),
            y_label: "time (ms)".into(),
            lines: vec![Line { label: "TTFT".into(), points: vec![(10.0, 40.0), (50.0, 90.0), (100.0, 160.0)] }],
            right: Some((
                "LLM prefill (TFLOPs)".into(),
                vec![Line { label: "FLOPs".into(), points: vec![(10.0, 0.1), (50.0, 0.5), (100.0, 1.0)] }],
            )),
        };
        let png = dir.join("chart.png");
        chart.save(&png).unwrap();
        let image = image::open(&png).unwrap().to_rgb8();
        assert_eq!(image.dimensions(), SIZE);
        // Dark glyph pixels in the title band (top 40 rows), none of them the series' colours: the text rendered.
        let dark = |y0: u32, y1: u32| {
            (y0..y1)
                .flat_map(|y| (0..SIZE.0).map(move |x| (x, y)))
                .filter(|&(x, y)| image.get_pixel(x, y).0[0] < 90)
                .count()
        };
        assert!(dark(0, 40) > 200, "the title has no glyphs: {} dark pixels", dark(0, 40));
        // Both series' colours appear (lines and markers).
        let has = |c: RGBColor| image.pixels().any(|p| p.0 == [c.0, c.1, c.2]);
        assert!(has(COLOURS[0]) && has(COLOURS[1]));
        let svg = dir.join("chart.svg");
        chart.save(&svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        for label in
            ["TTFT against the budget", "budget (% of visual tokens)", "LLM prefill (TFLOPs)", "FLOPs (right axis)"]
        {
            assert!(text.contains(label), "the SVG lacks {label:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
