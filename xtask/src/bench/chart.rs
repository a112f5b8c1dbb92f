//! The charts: of the medians, CPU µs per request and p99 latency, one bar per target, grouped
//! by scenario and pinning; and of the fan-out series, CPU µs per request by backend count.

use crate::bench::plan::{Named, Pinning, Target};
use crate::bench::record::{Median, Sample};
use crate::bench::report::FanOut;
use plotters::prelude::*;
use std::path::Path;

const SIZE: (u32, u32) = (1200, 500);
const FANOUT_SIZE: (u32, u32) = (900, 500);

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

/// Renders the fan-out series as an SVG at `path`: CPU µs per request by backend count, a line
/// per shell and pinning, and HAProxy's single forward in `fast` as a dashed horizontal line
/// per pinning (the unit each extra backend is measured in).
pub fn render_fanout(fanout: &FanOut, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, FANOUT_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let max = fanout
        .rows
        .iter()
        .map(|r| r.cpu_us)
        .chain(fanout.units.iter().map(|(_, u)| *u))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    // x is log2 of the backend count: 2, 4, 8 and 16 are evenly spaced.
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Splitter CPU µs per request by backend count (lower is better)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.8..4.2, 0.0..(max * 1.15).max(1e-9))?;
    let label = |x: &f64| match (x.round() - x).abs() < 1e-9 {
        true => format!("{}", 2u32.pow(x.round() as u32)),
        false => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(4)
        .x_label_formatter(&label)
        .x_desc("backends (log scale)")
        .y_desc("CPU µs per request")
        .draw()?;
    for &pinning in Pinning::ALL {
        for target in [Target::SplitterUring, Target::SplitterEpoll] {
            let points: Vec<(f64, f64)> = fanout
                .rows
                .iter()
                .filter(|r| r.pinning == pinning && r.target == target)
                .map(|r| ((r.backends as f64).log2(), r.cpu_us))
                .collect();
            if points.is_empty() {
                continue;
            }
            let style = line_color(target, pinning).stroke_width(2);
            chart
                .draw_series(LineSeries::new(points.iter().copied(), style).point_size(4))?
                .label(format!("{} {pinning}", target.name()))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
            chart.draw_series(points.iter().map(|&(x, v)| {
                Text::new(format!("{v:.1}"), (x, v + max * 0.03), ("sans-serif", 11))
            }))?;
        }
        if let Some(unit) = fanout.unit(pinning) {
            let style = line_color(Target::Haproxy, pinning).stroke_width(2);
            chart
                .draw_series(DashedLineSeries::new(
                    [(0.8, unit), (4.2, unit)],
                    8,
                    6,
                    style,
                ))?
                .label(format!("HAProxy's one forward, fast {pinning}"))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The target's colour, lighter when unpinned.
fn line_color(target: Target, pinning: Pinning) -> RGBColor {
    let RGBColor(r, g, b) = color(target);
    match pinning {
        Pinning::Pinned => RGBColor(r, g, b),
        Pinning::Unpinned => {
            let light = |c: u8| c + (255 - c) / 2;
            RGBColor(light(r), light(g), light(b))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::FanOutRow;

    #[test]
    fn fanout_chart_has_a_line_per_shell_and_pinning_and_the_haproxy_unit() {
        let row = |pinning, target, backends, cpu_us| FanOutRow {
            pinning,
            target,
            backends,
            requests_per_s: 1.0,
            cpu_us,
            per_extra_backend_us: None,
            per_extra_backend_forwards: None,
        };
        let fanout = FanOut {
            rows: [2, 4, 8, 16]
                .into_iter()
                .flat_map(|n| {
                    let cpu = 14.0 + 3.0 * n as f64;
                    [
                        row(Pinning::Pinned, Target::SplitterUring, n, cpu),
                        row(Pinning::Pinned, Target::SplitterEpoll, n, cpu + 1.0),
                    ]
                })
                .collect(),
            units: vec![(Pinning::Pinned, 11.0)],
        };
        let path = std::env::temp_dir().join(format!("fanout-{}.svg", std::process::id()));
        render_fanout(&fanout, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        for text in [
            "splitter-uring pinned",
            "splitter-epoll pinned",
            "HAProxy&apos;s one forward, fast pinned",
            "62.0",
        ] {
            assert!(svg.contains(text), "{text} missing from the chart");
        }
        for label in ["2", "4", "8", "16"] {
            assert!(svg.lines().any(|l| l == label), "x label {label} missing");
        }
        assert!(!svg.contains("unpinned"));
    }
}
