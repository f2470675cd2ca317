//! Check results and how they are printed: one line per check for people, JSON for scripts.

use std::fmt::Write as _;

use serde::Serialize;

/// Outcome of one check. A `Fail` makes `skjoldctl check` exit non-zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// One line of the report: a stable id for scripts, what was found, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    pub id: &'static str,
    pub status: Status,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl CheckResult {
    pub fn pass(id: &'static str, message: impl Into<String>) -> Self {
        CheckResult {
            id,
            status: Status::Pass,
            message: message.into(),
            hint: None,
        }
    }

    pub fn warn(id: &'static str, message: impl Into<String>, hint: impl Into<String>) -> Self {
        CheckResult {
            id,
            status: Status::Warn,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn fail(id: &'static str, message: impl Into<String>, hint: impl Into<String>) -> Self {
        CheckResult {
            id,
            status: Status::Fail,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
}

/// Output format of `skjoldctl check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// One line per check: status, id, finding and hint.
    #[default]
    Text,
    /// `{"ok": bool, "summary": {...}, "checks": [...]}` for scripts.
    Json,
}

/// Counts per status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
}

/// Every check that ran, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub ok: bool,
    pub summary: Summary,
    pub checks: Vec<CheckResult>,
}

impl Report {
    pub fn new(checks: Vec<CheckResult>) -> Self {
        let mut summary = Summary::default();
        for c in &checks {
            match c.status {
                Status::Pass => summary.pass += 1,
                Status::Warn => summary.warn += 1,
                Status::Fail => summary.fail += 1,
            }
        }
        Report {
            ok: summary.fail == 0,
            summary,
            checks,
        }
    }

    /// 0 when nothing failed (warnings included), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.ok { 0 } else { 1 }
    }

    pub fn render(&self, format: OutputFormat) -> String {
        match format {
            OutputFormat::Text => self.to_text(),
            OutputFormat::Json => {
                let mut s = serde_json::to_string_pretty(self)
                    .unwrap_or_else(|e| format!("{{\"ok\":false,\"error\":\"{e}\"}}"));
                s.push('\n');
                s
            }
        }
    }

    fn to_text(&self) -> String {
        let width = self.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            let _ = write!(
                out,
                "{:<4}  {:<width$}  {}",
                c.status.label(),
                c.id,
                c.message
            );
            if let Some(hint) = &c.hint {
                let _ = write!(out, "  (hint: {hint})");
            }
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "\n{} checks: {} passed, {} warnings, {} failed",
            self.checks.len(),
            self.summary.pass,
            self.summary.warn,
            self.summary.fail
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report::new(vec![
            CheckResult::pass("crd", "established"),
            CheckResult::warn("certificate-expiry", "expires in 3 days", "rotate"),
            CheckResult::fail("meshconfig", "not Ready", "look at the operator"),
        ])
    }

    #[test]
    fn summary_counts_and_exit_code() {
        let r = sample();
        assert_eq!(
            r.summary,
            Summary {
                pass: 1,
                warn: 1,
                fail: 1
            }
        );
        assert!(!r.ok);
        assert_eq!(r.exit_code(), 1);
        let only_warn = Report::new(vec![CheckResult::warn("x", "y", "z")]);
        assert_eq!(
            only_warn.exit_code(),
            0,
            "warnings alone must not fail scripts"
        );
    }

    #[test]
    fn text_is_one_line_per_check_with_hint() {
        let text = sample().render(OutputFormat::Text);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "pass  crd                 established");
        assert_eq!(
            lines[1],
            "warn  certificate-expiry  expires in 3 days  (hint: rotate)"
        );
        assert!(lines[2].starts_with("FAIL  meshconfig"), "{}", lines[2]);
        assert!(
            text.ends_with("3 checks: 1 passed, 1 warnings, 1 failed\n"),
            "{text}"
        );
    }

    #[test]
    fn json_has_stable_fields() {
        let v: serde_json::Value =
            serde_json::from_str(&sample().render(OutputFormat::Json)).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["summary"]["warn"], 1);
        assert_eq!(v["checks"][0]["id"], "crd");
        assert_eq!(v["checks"][0]["status"], "pass");
        assert!(v["checks"][0].get("hint").is_none());
        assert_eq!(v["checks"][2]["status"], "fail");
        assert_eq!(v["checks"][2]["hint"], "look at the operator");
    }
}
