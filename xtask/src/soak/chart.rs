//! The soak's chart: requests per second, latency against the deadline, RSS and open
//! descriptors over the run, one panel each, and the machine's CPU contention (to read late
//! answers by), with every chaos event marked on all five.

use std::path::Path;

use plotters::prelude::*;

use crate::soak::chaos::{Event, Mode};
use crate::soak::report::{Row, Summary};

const SIZE: (u32, u32) = (1400, 1400);

fn color(mode: Mode) -> RGBColor {
    match mode {
        Mode::Down => RGBColor(214, 39, 40),
        Mode::Blackhole => RGBColor(40, 40, 40),
        Mode::Slow => RGBColor(255, 127, 14),
        Mode::Hostile(_) => RGBColor(148, 103, 189),
        Mode::Healthy => RGBColor(44, 160, 44),
    }
}

const MARKERS: [(Mode, &str); 5] = [
    (Mode::Down, "killed"),
    (Mode::Blackhole, "blackholed"),
    (Mode::Slow, "slowed"),
    (
        Mode::Hostile(crate::soak::chaos::Hostile::Garbage),
        "made hostile",
    ),
    (Mode::Healthy, "restored"),
];

/// One line of a panel.
struct Line {
    label: &'static str,
    color: RGBColor,
    value: fn(&Row) -> Option<f64>,
}

/// Renders the run as an SVG at `path`.
pub fn render(
    rows: &[Row],
    events: &[Event],
    summary: &Summary,
    title: &str,
    path: &Path,
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let panels = root.split_evenly((5, 1));
    let deadline = summary.deadline_ms as f64;
    let late = summary.late_after_ms as f64;

    let requests = [
        Line {
            label: "requests/s",
            color: RGBColor(31, 119, 180),
            value: |r| Some(r.requests as f64),
        },
        Line {
            label: "204/s",
            color: RGBColor(255, 127, 14),
            value: |r| Some(r.no_content as f64),
        },
        Line {
            label: "errors/s",
            color: RGBColor(214, 39, 40),
            value: |r| Some(r.errors as f64),
        },
    ];
    panel(
        &panels[0],
        "requests per second",
        rows,
        events,
        &requests,
        &[],
        true,
    )?;

    let latency = [
        Line {
            label: "p50",
            color: RGBColor(31, 119, 180),
            value: |r| r.p50_ms,
        },
        Line {
            label: "p99.9",
            color: RGBColor(214, 39, 40),
            value: |r| r.p999_ms,
        },
        Line {
            label: "max",
            color: RGBColor(255, 152, 150),
            value: |r| r.max_ms,
        },
    ];
    let limits = [
        (deadline, "deadline", BLACK),
        (late, "deadline + 20 ms", RGBColor(150, 150, 150)),
    ];
    panel(
        &panels[1],
        "latency per second, ms",
        rows,
        events,
        &latency,
        &limits,
        false,
    )?;

    let rss = [Line {
        label: "RSS MiB",
        color: RGBColor(31, 119, 180),
        value: |r| r.rss_mib,
    }];
    let rss_limit: Vec<(f64, &str, RGBColor)> = summary
        .rss_mib
        .iter()
        .map(|f| (f.limit, "flat limit", RGBColor(150, 150, 150)))
        .collect();
    panel(
        &panels[2],
        "splitter RSS, MiB",
        rows,
        events,
        &rss,
        &rss_limit,
        false,
    )?;

    let fds = [Line {
        label: "open fds",
        color: RGBColor(44, 160, 44),
        value: |r| r.fds.map(|f| f as f64),
    }];
    let fd_limit: Vec<(f64, &str, RGBColor)> = summary
        .fds
        .iter()
        .map(|f| (f.limit, "flat limit", RGBColor(150, 150, 150)))
        .collect();
    panel(
        &panels[3],
        "splitter open fds",
        rows,
        events,
        &fds,
        &fd_limit,
        false,
    )?;

    let contention = [
        Line {
            label: "machine CPU pressure, % of the second",
            color: RGBColor(150, 150, 150),
            value: |r| r.cpu_pressure.map(|p| p * 100.0),
        },
        Line {
            label: "splitter threads' run-queue wait, ms",
            color: RGBColor(214, 39, 40),
            value: |r| r.splitter_run_queue_ms,
        },
        Line {
            label: "splitter CPU, ms",
            color: RGBColor(31, 119, 180),
            value: |r| r.splitter_cpu_ms,
        },
        Line {
            label: "hypervisor steal, ms",
            color: RGBColor(148, 103, 189),
            value: |r| r.steal_ms,
        },
        Line {
            label: "sample read late, ms",
            color: RGBColor(23, 190, 207),
            value: |r| Some(r.sample_late_ms),
        },
    ];
    panel(
        &panels[4],
        "CPU contention per second",
        rows,
        events,
        &contention,
        &[],
        false,
    )?;
    root.present()?;
    Ok(())
}

/// One panel: `lines` over time, horizontal `limits`, and the events as vertical lines (with
/// their legend when `event_legend`).
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    rows: &[Row],
    events: &[Event],
    lines: &[Line],
    limits: &[(f64, &str, RGBColor)],
    event_legend: bool,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let x_max = rows.len().max(1) as f64;
    let data_max = rows
        .iter()
        .flat_map(|r| lines.iter().filter_map(|l| (l.value)(r)))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let limit_max = limits.iter().map(|l| l.0).fold(0.0, f64::max);
    // A few seconds of timeouts would flatten the latency panel: past twice the highest
    // limit, values are drawn at the top edge.
    let y_max = match limit_max > 0.0 {
        true => data_max.max(limit_max * 1.2).min(limit_max * 2.0),
        false => data_max * 1.15,
    }
    .max(1e-9);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(25)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("seconds")
        .draw()?;
    for &(mode, label) in &MARKERS {
        let style = color(mode).mix(0.5).stroke_width(1);
        let xs: Vec<f64> = events
            .iter()
            .filter(|e| std::mem::discriminant(&e.mode) == std::mem::discriminant(&mode))
            .map(|e| e.at_s)
            .collect();
        let series = chart.draw_series(
            xs.iter()
                .map(|&x| PathElement::new(vec![(x, 0.0), (x, y_max)], style)),
        )?;
        if event_legend {
            let c = color(mode);
            series.label(label).legend(move |(x, y)| {
                PathElement::new(vec![(x, y - 6), (x, y + 6)], c.stroke_width(2))
            });
        }
    }
    for &(y, label, c) in limits {
        chart
            .draw_series(LineSeries::new([(0.0, y), (x_max, y)], c.stroke_width(1)))?
            .label(format!("{label} {y:.0}"))
            .legend(move |(x, yy)| PathElement::new(vec![(x, yy), (x + 15, yy)], c));
    }
    for line in lines {
        let points: Vec<(f64, f64)> = rows
            .iter()
            .filter_map(|r| Some((f64::from(r.t_s) + 0.5, (line.value)(r)?.min(y_max))))
            .collect();
        let c = line.color;
        chart
            .draw_series(LineSeries::new(points, c.stroke_width(1)))?
            .label(line.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 11))
        .draw()?;
    Ok(())
}
