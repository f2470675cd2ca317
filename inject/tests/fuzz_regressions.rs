//! Replays every saved fuzz input (`fuzz/regressions/<target>/*`: seeds and every crash ever
//! found) through the same harness code the libFuzzer targets run, on stable Rust.

#[path = "../../fuzz/src/lib.rs"]
mod harness;

use std::path::{Path, PathBuf};

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions")
}

/// The files of one target's directory, sorted so failures are reproducible by name.
fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = regressions_dir().join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_saved_input_passes_its_target() {
    let mut total = 0;
    for (name, run) in harness::TARGETS {
        let files = inputs(name);
        assert!(!files.is_empty(), "no saved inputs for fuzz target {name}");
        for file in files {
            let data = std::fs::read(&file).expect("readable input");
            // A panic names the input so it can be reproduced with `cargo fuzz run NAME FILE`.
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(
                outcome.is_ok(),
                "fuzz target {name} fails on {}",
                file.display()
            );
            total += 1;
        }
    }
    assert!(total >= harness::TARGETS.len());
}

#[test]
fn every_regressions_dir_is_a_known_target() {
    for entry in std::fs::read_dir(regressions_dir()).expect("fuzz/regressions exists") {
        let name = entry.expect("directory entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            harness::TARGETS.iter().any(|(t, _)| *t == name),
            "fuzz/regressions/{name} matches no fuzz target"
        );
    }
}

/// The harness reaches the injection path (and its patch and idempotence checks) for a plain
/// pod, and refuses an invalid annotation with a message instead of panicking.
#[test]
fn harness_injects_a_typical_pod_and_refuses_bad_annotations() {
    let ns = skjold_inject::inject::NamespaceInfo {
        name: "shop".into(),
        ..Default::default()
    };
    let mut ann = std::collections::BTreeMap::new();
    ann.insert("sidecar.istio.io/proxyCPU".to_string(), "250m".to_string());
    let pod = serde_json::from_value(harness::typical_pod(ann.clone())).unwrap();
    let outcome = harness::inject_checked(&pod, &ns).expect("injected");
    assert_eq!(outcome.reason, skjold_inject::inject::Reason::Injected);
    ann.insert("sidecar.istio.io/proxyCPU".to_string(), "lots".to_string());
    let pod = serde_json::from_value(harness::typical_pod(ann)).unwrap();
    let message = harness::inject_checked(&pod, &ns).expect_err("refused");
    assert!(message.contains("proxyCPU"), "{message}");
}
