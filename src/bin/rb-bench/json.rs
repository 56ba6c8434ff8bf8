//! `--json FILE`: the summaries (and fio's rate) for scripts.

use std::path::Path;

use serde_json::{json, Value};

use crate::fio::FioComparison;
use crate::measure::Summary;

pub fn write(path: &Path, summaries: &[Summary], fio: Option<&FioComparison>) -> Result<(), String> {
    std::fs::write(path, render(summaries, fio).to_string() + "\n")
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn render(summaries: &[Summary], fio: Option<&FioComparison>) -> Value {
    let mut doc = json!({ "variants": summaries.iter().map(variant).collect::<Vec<_>>() });
    if let Some(f) = fio {
        doc["fio_reads_per_second"] = json!(f.fio_reads_per_second);
        doc["fraction_of_fio"] = json!(f.fraction());
        doc["fio_args"] = json!(f.job.args());
    }
    doc
}

fn variant(s: &Summary) -> Value {
    let t = &s.stats;
    json!({
        "label": s.label,
        "seconds": t.seconds,
        "median": t.median,
        "mean": t.mean,
        "min": t.min,
        "max": t.max,
        "headers_per_second": t.headers_per_second,
        "cpu_us_per_header": t.cpu_us(),
        "user_us_per_header": t.user_us,
        "sys_us_per_header": t.sys_us,
        "index_bytes_per_entry": s.runs[0].index_bytes_per_entry,
        "indexed": s.first().indexed,
    })
}
