//! Istio parity: every case of the pinned Istio version's own injector goldens
//! (`pkg/kube/inject/testdata/inject/` of the `istio.io/istio` module, read from the Go module
//! cache so bumping the pin re-checks parity) goes through the offline injector, which calls the
//! same `inject::inject` as the webhook, and is compared with Istio's expected output on what a
//! user relies on. Each case is a match, a difference explained in [`cases::EXPLAINED`], or out of
//! scope (Istio CNI, OpenShift with CNI); any other difference fails the test.
//!
//! `SKJOLD_ISTIO_GOLDEN_DIR` points the test at another copy (e.g. `../shared/istio-golden/cases`).

mod parity;

use std::path::PathBuf;

use parity::{cases, compare, run};

fn golden_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("SKJOLD_ISTIO_GOLDEN_DIR")
        && !dir.is_empty()
    {
        return PathBuf::from(dir);
    }
    let module = format!(
        "istio.io/istio@{}",
        skjold_inject::istio::ISTIO_MODULE_VERSION
    );
    let modcache = std::process::Command::new("go")
        .args(["env", "GOMODCACHE"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| {
            panic!(
                "`go env GOMODCACHE` failed: Go is needed to find {module}; \
                 run `make setup` or set SKJOLD_ISTIO_GOLDEN_DIR"
            )
        });
    let dir = PathBuf::from(&modcache)
        .join(&module)
        .join("pkg/kube/inject/testdata/inject");
    if !dir.is_dir() {
        // The module is in the cache after `make setup` (it builds Istio's binaries); fetch it
        // here too so `cargo test` alone works on a machine with Go.
        let status = std::process::Command::new("go")
            .args(["mod", "download", &module])
            .env("GOFLAGS", "-mod=mod")
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()) && dir.is_dir(),
            "Istio's injector goldens are not at {} and `go mod download {module}` failed \
             ({status:?}); run `make setup` or set SKJOLD_ISTIO_GOLDEN_DIR",
            dir.display()
        );
    }
    dir
}

#[test]
fn istio_injector_goldens() {
    let dir = golden_dir();
    let results = run::run_all(&dir);
    let mut unexplained = Vec::new();
    let (mut matched, mut explained, mut oos, mut refusals, mut gaps) = (0, 0, 0, 0, 0);
    let mut unexplained_cases = std::collections::BTreeSet::new();
    for r in &results {
        match &r.verdict {
            compare::Verdict::Match => matched += 1,
            compare::Verdict::RefusedAsExpected(why) => {
                refusals += 1;
                println!("refused       {:<58} {why}", r.case);
            }
            compare::Verdict::OutOfScope(why) => {
                oos += 1;
                println!("out of scope  {:<58} {why}", r.case);
            }
            compare::Verdict::Differs(_) | compare::Verdict::Failed(_)
                if cases::gap(&r.case).is_some() =>
            {
                gaps += 1;
                println!(
                    "known gap     {:<58} {}",
                    r.case,
                    cases::gap(&r.case).unwrap_or_default()
                );
            }
            compare::Verdict::Differs(diffs) => {
                let (known, unknown): (Vec<_>, Vec<_>) = diffs
                    .iter()
                    .partition(|d| cases::explained(&r.case, &d.path).is_some());
                if unknown.is_empty() {
                    explained += 1;
                    for d in &known {
                        println!(
                            "differs       {:<58} {}: {}",
                            r.case,
                            d.path,
                            cases::explained(&r.case, &d.path).unwrap_or_default()
                        );
                    }
                } else {
                    unexplained_cases.insert(r.case.clone());
                    for d in unknown {
                        unexplained.push(format!("{}: {d}", r.case));
                    }
                }
            }
            compare::Verdict::Failed(why) => {
                unexplained_cases.insert(r.case.clone());
                unexplained.push(format!("{}: {why}", r.case));
            }
        }
    }
    println!(
        "Istio {} goldens ({}): {} cases: {matched} match, {refusals} refused as Istio refuses, \
         {explained} differ deliberately (explained), {gaps} known gaps, {oos} out of scope, \
         {} differ unexplained ({} fields)",
        skjold_inject::istio::ISTIO_MODULE_VERSION,
        dir.display(),
        results.len(),
        unexplained_cases.len(),
        unexplained.len()
    );
    // A gap that now matches must leave the list, so the list stays true.
    for r in &results {
        if matches!(r.verdict, compare::Verdict::Match) {
            assert!(
                cases::gap(&r.case).is_none(),
                "{} now matches Istio: remove it from cases::GAPS",
                r.case
            );
        }
    }
    assert!(
        results.len() >= 100,
        "only {} cases found in {}: wrong directory?",
        results.len(),
        dir.display()
    );
    assert!(
        unexplained.is_empty(),
        "{} unexplained differences from Istio's goldens:\n{}",
        unexplained.len(),
        unexplained.join("\n")
    );
}
