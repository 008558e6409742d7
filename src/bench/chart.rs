//! The quality-vs-latency chart of a bench run: one point per method, nDCG@10 against p50
//! milliseconds per query (log scale), as SVG and PNG. Text is drawn with a system TrueType
//! font (DejaVu Sans or Liberation Sans); without one the chart is skipped with a warning.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use super::BenchResults;
use crate::error::{Error, Result};

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Registers a system font with plotters once; false when none is found.
fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        FONT_PATHS.iter().any(|p| {
            std::fs::read(p).ok().is_some_and(|bytes| {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            })
        })
    })
}

fn perr(e: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!("drawing the chart: {e}"))
}

/// Writes `STEM.svg` and `STEM.png`. Returns false (after a warning) when no font is found.
pub fn quality_latency(results: &BenchResults, stem: &Path) -> Result<bool> {
    if results.methods.is_empty() {
        return Ok(false);
    }
    if !font_ready() {
        tracing::warn!(
            "no TrueType font found ({}); chart not drawn. Install fonts-dejavu-core.",
            FONT_PATHS[0]
        );
        return Ok(false);
    }
    let svg = stem.with_extension("svg");
    let png = stem.with_extension("png");
    draw(
        results,
        SVGBackend::new(&svg, (800, 560)).into_drawing_area(),
    )?;
    draw(
        results,
        BitMapBackend::new(&png, (800, 560)).into_drawing_area(),
    )?;
    Ok(true)
}

fn draw<DB: DrawingBackend>(
    results: &BenchResults,
    root: DrawingArea<DB, plotters::coord::Shift>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(perr)?;
    let points: Vec<(String, f64, f64)> = results
        .methods
        .iter()
        .map(|m| {
            (
                m.name.clone(),
                m.p50_ms.max(0.01),
                m.metrics.get("ndcg@10").copied().unwrap_or(0.0),
            )
        })
        .collect();
    let x_min = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min) / 2.0;
    // Room to the right of the slowest method for its label (x is on a log scale).
    let x_max = points.iter().map(|p| p.1).fold(0.0, f64::max) * 8.0;
    // The methods' range with a margin, not from 0: their differences are what the chart
    // is for.
    let y_lo = points.iter().map(|p| p.2).fold(f64::INFINITY, f64::min);
    let y_hi = points.iter().map(|p| p.2).fold(0.0, f64::max);
    let pad = (y_hi - y_lo).max(0.02) * 0.25;
    let (y_min, y_max) = ((y_lo - pad).max(0.0), (y_hi + pad).min(1.0));
    let title = format!(
        "{} ({}, {} queries): quality vs latency",
        results.collection, results.split, results.queries
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((x_min..x_max).log_scale(), y_min..y_max)
        .map_err(perr)?;
    chart
        .configure_mesh()
        .x_desc("p50 latency per query (ms, log scale)")
        .y_desc("nDCG@10")
        .draw()
        .map_err(perr)?;
    let colors = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
    for (i, (name, x, y)) in points.iter().enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(std::iter::once(Circle::new((*x, *y), 7, color.filled())))
            .map_err(perr)?
            .label(name.clone())
            .legend(move |(lx, ly)| Circle::new((lx, ly), 5, color.filled()));
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{name} ({y:.3})"),
                // Beside the marker, not on it (x is on a log scale).
                (*x * 1.12, *y + (y_max - y_min) * 0.01),
                ("sans-serif", 16).into_font().color(&color),
            )))
            .map_err(perr)?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(perr)?;
    root.present().map_err(perr)?;
    Ok(())
}
