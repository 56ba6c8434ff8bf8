//! `--json FILE`: the summaries (and fio's rate) for scripts.

use std::fmt::Write as _;
use std::path::Path;

use crate::fio::FioComparison;
use crate::measure::Summary;

pub fn write(path: &Path, summaries: &[Summary], fio: Option<&FioComparison>) -> Result<(), String> {
    std::fs::write(path, render(summaries, fio) + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn render(summaries: &[Summary], fio: Option<&FioComparison>) -> String {
    let mut json = String::from("{\"variants\":[");
    for (i, s) in summaries.iter().enumerate() {
        let t = &s.stats;
        let _ = write!(
            json,
            "{}{{\"label\":\"{}\",\"seconds\":{:?},\"median\":{},\"mean\":{},\"min\":{},\"max\":{},\
             \"headers_per_second\":{},\"cpu_us_per_header\":{},\"user_us_per_header\":{},\"sys_us_per_header\":{},\"index_bytes_per_entry\":{},\"indexed\":{}}}",
            if i > 0 { "," } else { "" },
            s.label,
            t.seconds,
            t.median,
            t.mean,
            t.min,
            t.max,
            t.headers_per_second,
            t.cpu_us(),
            t.user_us,
            t.sys_us,
            s.runs[0].index_bytes_per_entry,
            s.first().indexed
        );
    }
    json.push(']');
    if let Some(f) = fio {
        let _ = write!(json, ",\"fio_reads_per_second\":{},\"fraction_of_fio\":{}", f.fio_reads_per_second, f.fraction());
    }
    json.push('}');
    json
}
