//! The chart of the medians: CPU µs per request and p99 latency, one bar per target, grouped by
//! scenario and pinning.

use crate::bench::plan::{Named, Target};
use crate::bench::record::{Median, Sample};
use plotters::prelude::*;
use std::path::Path;

const SIZE: (u32, u32) = (1200, 500);

fn color(target: Target) -> RGBColor {
    match target {
        Target::SplitterUring => RGBColor(31, 119, 180),
        Target::SplitterEpoll => RGBColor(44, 160, 44),
        Target::Haproxy => RGBColor(255, 127, 14),
        Target::Direct => RGBColor(150, 150, 150),
    }
}

/// One panel: a figure of the medians, its title, and how its values are printed on the bars.
struct Panel {
    title: &'static str,
    value: fn(&Sample) -> f64,
    decimals: usize,
}

const PANELS: [Panel; 2] = [
    Panel {
        title: "CPU µs per request (lower is better)",
        value: |s| s.cpu_us_per_request,
        decimals: 1,
    },
    Panel {
        title: "p99 latency, ms",
        value: |s| s.p99_ms,
        decimals: 2,
    },
];

/// Renders `medians` as an SVG at `path`.
pub fn render(medians: &[Median], path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    for (area, panel) in root.split_evenly((1, 2)).iter().zip(&PANELS) {
        draw_panel(area, panel, medians)?;
    }
    root.present()?;
    Ok(())
}

/// The groups of bars: the scenario and pinning pairs, in the medians' order.
fn groups(medians: &[Median]) -> Vec<String> {
    let mut groups: Vec<String> = Vec::new();
    for m in medians {
        let name = group_name(m);
        if groups.last() != Some(&name) {
            groups.push(name);
        }
    }
    groups
}

fn group_name(m: &Median) -> String {
    format!("{} / {}", m.case.scenario, m.case.pinning)
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
    medians: &[Median],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let groups = groups(medians);
    let max = medians
        .iter()
        .map(|m| (panel.value)(&m.sample))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    // Group i is centred on x = i: the axis's round-number ticks fall on the centres.
    let n = groups.len();
    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..(max * 1.15).max(1e-9))?;
    let label = |x: &f64| match (x.round() - x).abs() < 1e-9 && *x >= 0.0 {
        true => groups.get(x.round() as usize).cloned().unwrap_or_default(),
        false => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&label)
        .draw()?;
    let width = 0.8 / Target::ALL.len() as f64;
    for (slot, &target) in Target::ALL.iter().enumerate() {
        let bars: Vec<(f64, f64)> = medians
            .iter()
            .filter(|m| m.case.target == target)
            .filter_map(|m| {
                let group = groups.iter().position(|g| *g == group_name(m))?;
                let x = group as f64 - 0.4 + slot as f64 * width;
                Some((x, (panel.value)(&m.sample)))
            })
            .collect();
        let style = color(target).filled();
        chart
            .draw_series(
                bars.iter()
                    .map(|&(x, v)| Rectangle::new([(x, 0.0), (x + width * 0.9, v)], style)),
            )?
            .label(target.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], style));
        chart.draw_series(bars.iter().map(|&(x, v)| {
            Text::new(
                format!("{v:.*}", panel.decimals),
                (x, v + max * 0.04),
                ("sans-serif", 11),
            )
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
