//! The figures every benchmark reports the same way: percentiles of sorted samples, and the CPU
//! time of processes read from `/proc`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The value at fraction `p` (0 to 1) of `sorted`, nearest rank; `None` when it is empty.
pub(crate) fn percentile_of<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let idx = ((sorted.len() as f64 * p).ceil() as usize)
        .saturating_sub(1)
        .min(sorted.len().saturating_sub(1));
    sorted.get(idx).copied()
}

/// [`percentile_of`] sorted latencies, in milliseconds (0 when there is none).
pub(crate) fn percentile_duration_ms(sorted: &[Duration], p: f64) -> f64 {
    percentile_of(sorted, p).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// [`percentile_of`] sorted latencies in microseconds (see [`micros`]), in milliseconds (0 when
/// there is none).
pub(crate) fn percentile_ms(sorted_micros: &[u32], p: f64) -> f64 {
    percentile_of(sorted_micros, p).map_or(0.0, |us| f64::from(us) / 1000.0)
}

/// A latency in microseconds, the compact form of large sample sets.
pub(crate) fn micros(latency: Duration) -> u32 {
    u32::try_from(latency.as_micros()).unwrap_or(u32::MAX)
}

/// `--json`: how a benchmark prints its figures.
#[derive(Debug, clap::Args)]
pub(crate) struct Output {
    /// Print the figures as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

impl Output {
    /// Prints a benchmark's report on stdout: as JSON with `--json`, else as `text` prints it.
    pub(crate) fn print<R: serde::Serialize + ?Sized>(&self, report: &R, text: impl FnOnce(&R)) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(report)?);
        } else {
            text(report);
        }
        Ok(())
    }
}

/// A table without borders, for the figures printed as text.
pub(crate) fn plain_table() -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::NOTHING);
    table
}

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`, normally 100).
pub(crate) fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().ok())
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

/// The fields of a `/proc/<pid>/stat` line after the command name: index 0 is field 3 (state).
pub(crate) fn stat_fields(text: &str) -> Option<Vec<&str>> {
    let (_, rest) = text.rsplit_once(')')?;
    Some(rest.split_whitespace().collect())
}

/// utime + stime of every thread of a process, in seconds.
pub(crate) fn cpu_seconds_of(stat_path: &Path, clock_ticks: f64) -> anyhow::Result<f64> {
    use anyhow::Context;
    let text = std::fs::read_to_string(stat_path).with_context(|| format!("cannot read {}", stat_path.display()))?;
    let fields = stat_fields(&text).with_context(|| format!("{} has no ')'", stat_path.display()))?;
    // Fields 14 (utime) and 15 (stime), counted from 1, are indexes 11 and 12 here.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .with_context(|| format!("{} has no CPU time in field {}", stat_path.display(), i + 3))
    };
    Ok((ticks(11)? + ticks(12)?) as f64 / clock_ticks)
}

/// The CPU time of process `pid`, in seconds.
pub(crate) fn process_cpu_seconds(pid: u32, clock_ticks: f64) -> anyhow::Result<f64> {
    cpu_seconds_of(&Path::new("/proc").join(pid.to_string()).join("stat"), clock_ticks)
}

/// The CPU time of this process (the load generator), in seconds.
pub(crate) fn process_cpu_seconds_self(clock_ticks: f64) -> anyhow::Result<f64> {
    cpu_seconds_of(Path::new("/proc/self/stat"), clock_ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let sorted = [1u32, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(percentile_of(&sorted, 0.5), Some(5));
        assert_eq!(percentile_of(&sorted, 0.99), Some(10));
        assert_eq!(percentile_of(&sorted, 0.0), Some(1));
        assert_eq!(percentile_of(&sorted, 1.0), Some(10));
        assert_eq!(percentile_of::<u32>(&[], 0.5), None);
        assert!((percentile_ms(&[1500, 2500], 1.0) - 2.5).abs() < 1e-9);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
        assert_eq!(percentile_duration_ms(&[Duration::from_millis(3)], 0.5), 3.0);
    }

    #[test]
    fn stat_lines_are_split_after_the_command_name() {
        let line = "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0";
        let fields = stat_fields(line).unwrap();
        assert_eq!(fields.first(), Some(&"S"));
        assert_eq!(fields.get(11), Some(&"250"));
        assert_eq!(fields.get(12), Some(&"50"));
    }
}
