//! The benchmark's figures: one row per endpoint and call count, printed as a
//! table, written as CSV, and plotted as a PNG.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

#[derive(Debug, Clone, Default)]
pub struct Row {
    pub endpoint: &'static str,
    pub calls: usize,
    /// Calls that were answered and ended with NORMAL_CLEARING.
    pub completed: usize,
    pub cpu_us_per_call_second: f64,
    /// Against the null endpoint at the same number of calls.
    pub cpu_ratio_to_null: Option<f64>,
    /// `(this − null) / socket-floor` at the same number of calls: what the
    /// row costs over FreeSWITCH's floor, in units of the kernel's share.
    pub over_floor: Option<f64>,
    /// Context switches per call-second of mod_wsbridge's runtime threads
    /// (the floor's process for `socket-floor`): how often they woke.
    pub wakeups_per_call_second: Option<f64>,
    pub rss_kib_per_call: f64,
    /// From originate to the CHANNEL_ANSWER event.
    pub setup_p50_ms: f64,
    pub setup_p99_ms: f64,
    /// From originate to its `+OK` reply.
    pub setup_ok_p50_ms: f64,
    pub setup_ok_p99_ms: f64,
    /// CPU the benchmark itself used (echo server, event socket), percent of one core.
    pub bench_cpu_percent: f64,
    pub media: Option<Media>,
}

/// What only a call through a WebSocket has: frames both ways and their timing.
#[derive(Debug, Clone, Default)]
pub struct Media {
    pub frames_expected: u64,
    /// Caller frames the module sent, by its CDR variables.
    pub frames_sent: u64,
    /// Whole caller frames the server received, counted by bytes.
    pub frames_received: u64,
    /// Frames short of the expected count, summed over calls.
    pub frames_lost: u64,
    pub bytes_expected: u64,
    /// Caller audio bytes the server received, and in how many messages.
    pub bytes_received: u64,
    pub messages_received: u64,
    /// How many calls delivered each number of whole frames: where a shortfall is.
    pub calls_by_frames: std::collections::BTreeMap<u64, usize>,
    pub frames_dropped_by_module: u64,
    pub jitter_p50_ms: f64,
    pub jitter_p99_ms: f64,
    pub jitter_max_ms: f64,
    /// p99 of the same gaps timed when the server read each frame: what its own scheduling adds.
    pub jitter_read_p99_ms: f64,
    /// Caller frames without a kernel timestamp, timed when read instead.
    pub unstamped_frames: u64,
    pub frames_echoed: u64,
    pub frames_played: u64,
    /// Times a call's playout ran dry after it had started playing, summed over calls.
    pub underruns: u64,
    /// Underruns per minute of call: underruns / (calls × seconds / 60).
    pub gaps_per_call_minute: f64,
    /// Frames the module made up to bridge gaps, summed over calls.
    pub concealed_frames: u64,
    /// Near-silent frames the module dropped to steer a fast stream back to its target.
    pub drift_dropped_frames: u64,
    /// Audio taken out of sound by time compression, summed over calls.
    pub compressed_ms: u64,
    /// The jitter buffer's target at hangup, mean over calls.
    pub playout_target_mean_ms: f64,
    /// From the server sending a mark after an echoed frame to hearing it was
    /// played: the playout latency.
    pub mark_delay_mean_ms: f64,
    pub mark_delay_p50_ms: f64,
    pub mark_delay_p99_ms: f64,
    pub marks_sent: u64,
    pub marks_back: u64,
    pub tone_checked: u64,
    pub tone_found: u64,
}

fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_string())
}

impl Media {
    /// False for the socket floor, which plays nothing: its playout figures are NaN.
    fn plays(&self) -> bool {
        !self.gaps_per_call_minute.is_nan()
    }
}

/// A figure with `digits` decimals, or "-" where the row has none (NaN).
fn fixed(value: f64, digits: usize) -> String {
    if value.is_nan() {
        "-".to_string()
    } else {
        format!("{value:.digits$}")
    }
}

/// The jitter buffer's columns: latency, gaps, concealed and dropped frames, target.
fn playout_cells(media: Option<&Media>) -> String {
    match media {
        Some(m) if !m.plays() => ["-"; 5].join(" | "),
        Some(m) => format!(
            "{:.1} | {:.2} | {} | {} | {:.0}",
            m.mark_delay_mean_ms,
            m.gaps_per_call_minute,
            m.concealed_frames,
            m.drift_dropped_frames,
            m.playout_target_mean_ms
        ),
        None => ["-"; 5].join(" | "),
    }
}

pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "| endpoint | calls | completed | FS CPU µs per call-second | × null | (− null) / socket floor | \
         runtime wake-ups per call-second | RSS KiB per call | \
         caller frames expected / received / lost | server frames echoed / played | \
         uplink jitter p50 / p99 / max ms (kernel stamps) | uplink jitter p99 ms by server reads | setup to answer p50 / p99 ms | setup to +OK p50 / p99 ms | \
         playout delay p50 / p99 ms | \
         playout latency mean ms | gaps per call-minute | concealed frames | drift-dropped frames | \
         final target mean ms | bench process CPU |\n",
    );
    out.push_str(
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let media = row.media.as_ref();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} | {} | {:.0}% |",
            row.endpoint,
            row.calls,
            row.completed,
            row.cpu_us_per_call_second,
            or_dash(row.cpu_ratio_to_null.map(|r| format!("{r:.2}"))),
            or_dash(row.over_floor.map(|r| format!("{r:.2}"))),
            or_dash(row.wakeups_per_call_second.map(|w| format!("{w:.1}"))),
            fixed(row.rss_kib_per_call, 0),
            or_dash(media.map(|m| format!("{} / {} / {}", m.frames_expected, m.frames_received, m.frames_lost))),
            or_dash(media.map(|m| match m.plays() {
                true => format!("{} / {}", m.frames_echoed, m.frames_played),
                false => format!("{} / -", m.frames_echoed),
            })),
            or_dash(media.map(|m| format!("{:.2} / {:.2} / {:.1}", m.jitter_p50_ms, m.jitter_p99_ms, m.jitter_max_ms))),
            or_dash(media.map(|m| format!("{:.2}", m.jitter_read_p99_ms))),
            fixed(row.setup_p50_ms, 1),
            fixed(row.setup_p99_ms, 1),
            fixed(row.setup_ok_p50_ms, 1),
            fixed(row.setup_ok_p99_ms, 1),
            or_dash(media.map(|m| format!("{} / {}", fixed(m.mark_delay_p50_ms, 1), fixed(m.mark_delay_p99_ms, 1)))),
            playout_cells(media),
            row.bench_cpu_percent,
        );
    }
    out
}

pub fn csv(rows: &[Row]) -> String {
    let mut out = String::from(
        "endpoint,calls,completed,cpu_us_per_call_second,cpu_ratio_to_null,over_socket_floor,\
         wakeups_per_call_second,rss_kib_per_call,setup_p50_ms,setup_p99_ms,setup_ok_p50_ms,setup_ok_p99_ms,\
         bench_cpu_percent,frames_expected,frames_sent,frames_received,frames_lost,frames_dropped_by_module,\
         jitter_p50_ms,jitter_p99_ms,jitter_max_ms,frames_echoed,frames_played,underruns,mark_delay_p50_ms,\
         mark_delay_p99_ms,marks_sent,marks_back,tone_checked,tone_found,gaps_per_call_minute,concealed_frames,\
         drift_dropped_frames,mark_delay_mean_ms,playout_target_mean_ms,jitter_read_p99_ms,unstamped_frames,\
         bytes_expected,bytes_received,messages_received\n",
    );
    for row in rows {
        let _ = write!(
            out,
            "{},{},{},{:.1},{},{},{},{:.1},{:.2},{:.2},{:.2},{:.2},{:.1}",
            row.endpoint,
            row.calls,
            row.completed,
            row.cpu_us_per_call_second,
            row.cpu_ratio_to_null.map(|r| format!("{r:.3}")).unwrap_or_default(),
            row.over_floor.map(|r| format!("{r:.3}")).unwrap_or_default(),
            row.wakeups_per_call_second.map(|w| format!("{w:.2}")).unwrap_or_default(),
            row.rss_kib_per_call,
            row.setup_p50_ms,
            row.setup_p99_ms,
            row.setup_ok_p50_ms,
            row.setup_ok_p99_ms,
            row.bench_cpu_percent,
        );
        match &row.media {
            Some(m) => out.push_str(&csv_media(m)),
            None => out.push_str(&format!("{}\n", ",".repeat(27))),
        }
    }
    out
}

/// A row's media columns, from their leading comma to the line's end.
fn csv_media(m: &Media) -> String {
    format!(
        ",{},{},{},{},{},{:.3},{:.3},{:.3},{},{},{},{:.2},{:.2},{},{},{},{},{:.3},{},{},{:.2},{:.1},{:.3},{},{},{},{}\n",
        m.frames_expected,
        m.frames_sent,
        m.frames_received,
        m.frames_lost,
        m.frames_dropped_by_module,
        m.jitter_p50_ms,
        m.jitter_p99_ms,
        m.jitter_max_ms,
        m.frames_echoed,
        m.frames_played,
        m.underruns,
        m.mark_delay_p50_ms,
        m.mark_delay_p99_ms,
        m.marks_sent,
        m.marks_back,
        m.tone_checked,
        m.tone_found,
        m.gaps_per_call_minute,
        m.concealed_frames,
        m.drift_dropped_frames,
        m.mark_delay_mean_ms,
        m.playout_target_mean_ms,
        m.jitter_read_p99_ms,
        m.unstamped_frames,
        m.bytes_expected,
        m.bytes_received,
        m.messages_received
    )
}

const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];

/// plotters draws text with a font it is given; the machine's own is used.
fn register_font() -> Result<(), String> {
    let path = FONT_CANDIDATES
        .iter()
        .find(|path| Path::new(path).exists())
        .ok_or("no TrueType font found; install fonts-dejavu-core")?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(path).map_err(|e| e.to_string())?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| format!("{path} is not a font"))
}

type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    y_label: &str,
    series: &[Series<'_>],
    target: Option<(f64, &str)>,
) -> Result<(), String> {
    let max_x = series.iter().flat_map(|(_, _, points)| points.iter().map(|p| p.0)).fold(1.0, f64::max);
    let max_y = series
        .iter()
        .flat_map(|(_, _, points)| points.iter().map(|p| p.1))
        .chain(target.map(|t| t.0))
        .fold(1e-3, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..max_x * 1.08, 0.0..max_y * 1.2)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("concurrent calls")
        .y_desc(y_label)
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())?;
    for (name, color, points) in series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|point| Circle::new(*point, 4, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    if let Some((value, name)) = target {
        let grey = RGBColor(120, 120, 120);
        chart
            .draw_series(LineSeries::new(vec![(0.0, value), (max_x * 1.08, value)], grey.stroke_width(1)))
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

/// The points of one endpoint's rows where `value` has a figure.
fn points(rows: &[Row], endpoint: &str, value: &dyn Fn(&Row) -> Option<f64>) -> Vec<(f64, f64)> {
    rows.iter()
        .filter(|row| row.endpoint == endpoint)
        .filter_map(|row| value(row).map(|v| (row.calls as f64, v)))
        .collect()
}

fn endpoint_style(endpoint: &str) -> (&'static str, RGBColor) {
    match endpoint {
        "null" => ("null endpoint (floor)", BLUE),
        "socket-floor" => ("socket floor (epoll loop)", GREEN),
        "wsbridge" => ("wsbridge", RED),
        "wsbridge-live" => ("wsbridge-live", RGBColor(230, 140, 0)),
        _ => ("other", BLACK),
    }
}

/// One series per endpoint, in the order the rows name them, where `value` has figures.
fn per_endpoint(rows: &[Row], value: &dyn Fn(&Row) -> Option<f64>) -> Vec<Series<'static>> {
    let mut endpoints: Vec<&'static str> = Vec::new();
    for row in rows {
        if !endpoints.contains(&row.endpoint) {
            endpoints.push(row.endpoint);
        }
    }
    endpoints
        .into_iter()
        .map(|endpoint| {
            let (label, color) = endpoint_style(endpoint);
            (label, color, points(rows, endpoint, value))
        })
        .filter(|(_, _, points)| !points.is_empty())
        .collect()
}

/// Against the number of calls: CPU per call for every endpoint, the uplink
/// jitter the server saw, and the downlink's gaps and playout latency.
pub fn plot(rows: &[Row], path: &Path) -> Result<(), String> {
    register_font()?;
    let root = BitMapBackend::new(path, (1280, 1040)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((2, 2));
    let cpu = |row: &Row| Some(row.cpu_us_per_call_second);
    panel(&areas[0], "FreeSWITCH CPU per call", "CPU µs per call-second", &per_endpoint(rows, &cpu), None)?;
    // NaN where the row has no such figure (the socket floor plays nothing).
    let media = |pick: fn(&Media) -> f64| move |row: &Row| row.media.as_ref().map(pick).filter(|v| !v.is_nan());
    panel(
        &areas[1],
        "Uplink jitter at the server (wsbridge)",
        "|arrival gap - 20 ms|, ms",
        &[
            ("p50", GREEN, points(rows, "wsbridge", &media(|m| m.jitter_p50_ms))),
            ("p99", RED, points(rows, "wsbridge", &media(|m| m.jitter_p99_ms))),
            ("max", BLACK, points(rows, "wsbridge", &media(|m| m.jitter_max_ms))),
        ],
        Some((5.0, "p99 target, 5 ms")),
    )?;
    let gaps = per_endpoint(rows, &media(|m| m.gaps_per_call_minute));
    panel(&areas[2], "Playout gaps (goal: 0)", "underruns per call-minute", &gaps, None)?;
    let latency = per_endpoint(rows, &media(|m| m.mark_delay_mean_ms));
    panel(&areas[3], "Playout latency, mean", "mark sent to mark played, ms", &latency, None)?;
    root.present().map_err(|e| e.to_string())
}
