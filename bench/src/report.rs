//! The results table and its Markdown rendering.

use std::{fmt::Write as _, time::Duration};

use crate::{
    stats::{summarize, Summary},
    Config, Impl, Progress,
};

/// Which direction is good for a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Better {
    Higher,
    Lower,
}

/// One figure: every repetition's value for both twins.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub group: String,
    pub name: String,
    pub unit: &'static str,
    pub better: Better,
    pub jetq: Vec<f64>,
    pub raw: Vec<f64>,
}

impl Row {
    /// jetq ÷ raw for each repetition where both were measured (paired by run order).
    pub(crate) fn ratios(&self) -> Vec<f64> {
        self.jetq
            .iter()
            .zip(&self.raw)
            .filter(|(_, raw)| **raw > 0.0)
            .map(|(jetq, raw)| jetq / raw)
            .collect()
    }
}

/// All figures of a run, in the order first measured, plus failed measurements.
#[derive(Debug, Default)]
pub(crate) struct Table {
    pub rows: Vec<Row>,
    pub failures: Vec<String>,
}

impl Table {
    /// Records a throughput figure: tasks per second, higher is better.
    pub(crate) fn record_rate(
        &mut self,
        progress: &Progress,
        group: &str,
        name: &str,
        imp: Impl,
        value: Result<f64, String>,
    ) {
        self.record(progress, group, name, "tasks/s", Better::Higher, imp, value);
    }

    /// Records one measurement (or its failure) and logs it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &mut self,
        progress: &Progress,
        group: &str,
        name: &str,
        unit: &'static str,
        better: Better,
        imp: Impl,
        value: Result<f64, String>,
    ) {
        match value {
            Ok(value) => {
                progress.log(&format!(
                    "{group} | {name} | {}: {} {unit}",
                    imp.name(),
                    format_value(value, unit)
                ));
                let index = match self
                    .rows
                    .iter()
                    .position(|r| r.group == group && r.name == name)
                {
                    Some(index) => index,
                    None => {
                        self.rows.push(Row {
                            group: group.to_owned(),
                            name: name.to_owned(),
                            unit,
                            better,
                            jetq: Vec::new(),
                            raw: Vec::new(),
                        });
                        self.rows.len() - 1
                    }
                };
                let row = &mut self.rows[index];
                match imp {
                    Impl::Jetq => row.jetq.push(value),
                    Impl::Raw => row.raw.push(value),
                }
            }
            Err(err) => {
                let text = format!("{group} | {name} | {}: FAILED: {err}", imp.name());
                progress.log(&text);
                self.failures.push(text);
            }
        }
    }
}

/// A figure in its unit's precision.
pub(crate) fn format_value(value: f64, unit: &str) -> String {
    match unit {
        "tasks/s" => {
            let n = value.round() as u64;
            let digits = n.to_string();
            let mut out = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i).is_multiple_of(3) {
                    out.push(',');
                }
                out.push(c);
            }
            out
        }
        "ms" if value < 10.0 => format!("{value:.2}"),
        "ms" => format!("{value:.1}"),
        _ => format!("{value:.1}"),
    }
}

fn cell(summary: Option<Summary>, unit: &str) -> (String, String) {
    match summary {
        None => ("–".into(), "–".into()),
        Some(s) => (
            format_value(s.median, unit),
            format!(
                "{}–{}",
                format_value(s.min, unit),
                format_value(s.max, unit)
            ),
        ),
    }
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpus} CPUs ({model}), {mem_gib:.1} GiB RAM, Linux {}",
        kernel.trim()
    )
}

/// The whole report in Markdown.
pub(crate) fn render(
    config: &Config,
    server_version: &str,
    elapsed: Duration,
    load: &str,
    table: &Table,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### jetq-bench results\n");
    let _ = writeln!(out, "- command: `{}`", config.command);
    let _ = writeln!(out, "- machine: {}; {load}", machine());
    let _ = writeln!(
        out,
        "- nats-server {server_version}, file storage, one server per measurement (fresh store)"
    );
    let _ = writeln!(
        out,
        "- {} repetition(s){}; worker concurrency {}; enqueue window {}; wall time {}m{:02}s",
        config.reps,
        if config.scale_reps < config.reps && config.runs("scale") {
            format!(
                " ({} for scaling runs of 1,000,000 tasks or more and for the scheduler-memory run)",
                config.scale_reps
            )
        } else {
            String::new()
        },
        config.concurrency,
        config.window,
        elapsed.as_secs() / 60,
        elapsed.as_secs() % 60
    );
    let _ = writeln!(
        out,
        "- jetq/raw: per-repetition ratio of the paired runs; for ms and MiB lower is better, so \
         a ratio above 1 means jetq is slower or larger\n"
    );
    let mut groups: Vec<&str> = Vec::new();
    for row in &table.rows {
        if !groups.contains(&row.group.as_str()) {
            groups.push(&row.group);
        }
    }
    for group in groups {
        let _ = writeln!(out, "#### {group}\n");
        let _ = writeln!(
            out,
            "| figure | unit | jetq | jetq min–max | raw | raw min–max | jetq/raw | ratio min–max |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|");
        for row in table.rows.iter().filter(|r| r.group == group) {
            let (jetq, jetq_range) = cell(summarize(&row.jetq), row.unit);
            let (raw, raw_range) = cell(summarize(&row.raw), row.unit);
            let (ratio, ratio_range) = match summarize(&row.ratios()) {
                None => ("–".into(), "–".into()),
                Some(s) => (
                    format!("{:.2}", s.median),
                    format!("{:.2}–{:.2}", s.min, s.max),
                ),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {jetq} | {jetq_range} | {raw} | {raw_range} | {ratio} | {ratio_range} |",
                row.name,
                match row.better {
                    Better::Higher => format!("{} ↑", row.unit),
                    Better::Lower => format!("{} ↓", row.unit),
                }
            );
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "<details><summary>every repetition</summary>\n");
    for row in &table.rows {
        let list = |values: &[f64]| {
            values
                .iter()
                .map(|v| format_value(*v, row.unit))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "- {} / {}: jetq [{}], raw [{}]",
            row.group,
            row.name,
            list(&row.jetq),
            list(&row.raw)
        );
    }
    let _ = writeln!(out, "\n</details>\n");
    if !table.failures.is_empty() {
        let _ = writeln!(out, "**Failed measurements and errors:**\n");
        for failure in &table.failures {
            let _ = writeln!(out, "- {failure}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_values() {
        assert_eq!(format_value(1234567.4, "tasks/s"), "1,234,567");
        assert_eq!(format_value(999.0, "tasks/s"), "999");
        assert_eq!(format_value(1.234, "ms"), "1.23");
        assert_eq!(format_value(12.34, "MiB"), "12.3");
    }
}
