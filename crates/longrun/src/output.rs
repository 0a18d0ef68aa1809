//! Printing operations for people (aligned text, a progress bar) or for scripts (JSON).

use std::time::Duration;

use longrun_core::Operation;
use serde::Serialize;

/// Prints any value as pretty JSON.
pub fn json(value: &impl Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values serialize")
    );
}

/// Prints one operation: JSON, or a field list.
pub fn operation(op: &Operation, as_json: bool) {
    if as_json {
        return json(op);
    }
    let mut rows: Vec<(&str, String)> = vec![
        ("id", op.id.to_string()),
        ("name", op.name.clone()),
        ("status", status_line(op)),
        ("queue", format!("{} (priority {})", op.queue, op.priority)),
        ("created", timestamp(op.created_at)),
        (
            "retries",
            format!("{} of {}", op.retries, op.retry_policy.max_retries),
        ),
    ];
    if let Some(t) = op.started_at {
        rows.push(("started", timestamp(t)));
    }
    if let Some(t) = op.completed_at {
        rows.push(("completed", timestamp(t)));
    }
    if let Some(result) = &op.result {
        rows.push(("result", result.to_string()));
    }
    if let Some(e) = &op.error {
        rows.push((
            "error",
            format!("{} ({}): {}", e.error_type, e.code, e.message),
        ));
    }
    if let Some(parent) = op.parent_id {
        rows.push(("parent", parent.to_string()));
    }
    for (key, value) in rows {
        println!("{key:<10} {value}");
    }
}

/// RFC 3339.
pub fn timestamp(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn status_line(op: &Operation) -> String {
    let mut line = op.status.to_string();
    if let Some(pct) = op.progress_pct.filter(|_| !op.is_terminal()) {
        line.push_str(&format!(" {pct:.0}%"));
    }
    if let Some(detail) = op.status_detail.as_deref().filter(|_| !op.is_terminal()) {
        line.push_str(&format!(" ({detail})"));
    }
    if op.cancel_requested && !op.is_terminal() {
        line.push_str(" [cancel requested]");
    }
    line
}

/// Prints operations one a line.
pub fn table(ops: &[Operation]) {
    println!(
        "{:<8} {:<36} {:<10} {:>5} NAME",
        "SEQ", "ID", "STATUS", "PCT"
    );
    for op in ops {
        let pct = op
            .progress_pct
            .map_or_else(|| "-".to_owned(), |p| format!("{p:.0}"));
        println!(
            "{:<8} {:<36} {:<10} {:>5} {}",
            op.seq, op.id, op.status, pct, op.name
        );
    }
}

/// A live progress bar on stderr (hidden when stderr is not a terminal).
pub struct ProgressBar(indicatif::ProgressBar);

impl ProgressBar {
    /// A bar for `op`, at its current progress.
    pub fn new(op: &Operation) -> Self {
        let bar = indicatif::ProgressBar::new(100);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{bar:40}] {pos:>3}% {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        let this = Self(bar);
        this.update(op);
        this
    }

    /// Shows `op`'s progress and status.
    pub fn update(&self, op: &Operation) {
        self.0
            .set_position(op.progress_pct.unwrap_or(0.0).clamp(0.0, 100.0) as u64);
        self.0.set_message(status_line(op));
    }

    /// Stops the bar at `op`'s final state.
    pub fn finish(self, op: &Operation) {
        self.update(op);
        self.0.finish_and_clear();
    }
}
