//! Stamps `skjoldctl version` with the git commit it was built from. An explicit
//! `SKJOLD_GIT_SHA` (e.g. from a Docker build without .git) wins; no git means "unknown".
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SKJOLD_GIT_SHA");
    if std::env::var_os("SKJOLD_GIT_SHA").is_some() {
        return;
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
    };
    if let Some(sha) = git(&["rev-parse", "--short=12", "HEAD"]) {
        println!("cargo:rustc-env=SKJOLD_GIT_SHA={sha}");
    }
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/refs/heads");
    }
}
