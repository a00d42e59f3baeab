//! How `audit verify --file` reports an access export or an evidence pack: one line
//! when it holds, an error naming the file and the first bad sequence number when not
//! (or the whole report as JSON with `--json`).

use anyhow::bail;

use crate::service::audit::access_file::AccessFileReport;
use crate::service::audit::evidence::PackReport;

fn range(a: Option<u64>, b: Option<u64>) -> String {
    let s = |x: Option<u64>| x.map(|s| s.to_string()).unwrap_or("-".into());
    format!("{}..{}", s(a), s(b))
}

pub fn print_access(r: &AccessFileReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else if r.ok {
        println!(
            "access export OK ({} mode): {} records verified ({}), every device signature checked with {} report keys, {} anchors, {} signed checkpoints",
            r.mode,
            r.verified,
            range(r.first_seq, r.last_seq),
            r.report_keys,
            r.anchors,
            r.checkpoints
        );
    }
    if !r.ok {
        let seq = r.first_bad_seq.map(|s| s.to_string()).unwrap_or("-".into());
        bail!(
            "access export FAILED verification at seq {seq}: {}",
            r.error.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}

pub fn print_pack(r: &PackReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else if r.ok {
        let ev = r.events.as_ref();
        let acc = r.access.as_ref();
        println!(
            "evidence pack OK: {} files match the manifest and the signed audit.evidence event; audit events {} verified up to a signed checkpoint; access records {} ({}) verified with the report keys and anchors from the signed events; {} policy versions",
            r.files,
            range(ev.and_then(|e| e.first_seq), ev.and_then(|e| e.last_seq)),
            range(acc.and_then(|a| a.first_seq), acc.and_then(|a| a.last_seq)),
            acc.map(|a| a.verified).unwrap_or(0),
            r.policies
        );
    }
    if !r.ok {
        let seq = r.first_bad_seq.map(|s| s.to_string()).unwrap_or("-".into());
        bail!(
            "evidence pack FAILED verification in {} at seq {seq}: {}",
            r.failed_file.as_deref().unwrap_or("?"),
            r.error.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}
