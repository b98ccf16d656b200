//! Latency-distribution plots (SVG): latency at each percentile, Keel against etcd.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Summary;

/// Draws `series` (label, summary) as percentile curves into `path`.
pub fn percentiles(path: &Path, title: &str, series: &[(&str, &Summary)]) -> anyhow::Result<()> {
    let quantiles: Vec<f64> =
        series.first().map(|(_, s)| s.percentiles.iter().map(|(q, _)| *q).collect()).unwrap_or_default();
    let ymax = series.iter().flat_map(|(_, s)| s.percentiles.iter().map(|(_, v)| *v)).fold(0.0f64, f64::max).max(0.001);
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0usize..quantiles.len().saturating_sub(1), 0f64..ymax * 1.1)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let labels = quantiles.clone();
    chart
        .configure_mesh()
        .x_labels(quantiles.len())
        .x_label_formatter(&|i| labels.get(*i).map_or(String::new(), |q| format!("p{}", q * 100.0)))
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let colors = [RGBColor(0, 114, 178), RGBColor(213, 94, 0), RGBColor(110, 110, 110)];
    for (i, (label, s)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        let points: Vec<(usize, f64)> = s.percentiles.iter().enumerate().map(|(x, (_, v))| (x, *v)).collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
