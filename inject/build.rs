//! Reads the one Istio pin (`e2e/versions.env`) into `crate::istio`: the default proxy image, the
//! operator's default tag and its embedded CRDs come from the same place as the tests' binaries.
use std::fs;
use std::path::Path;

fn main() {
    let pins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/versions.env");
    println!("cargo:rerun-if-changed={}", pins.display());
    let text =
        fs::read_to_string(&pins).unwrap_or_else(|e| panic!("reading {}: {e}", pins.display()));
    for key in ["ISTIO_VERSION", "ISTIO_MODULE_VERSION"] {
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("{} has no {key}=", pins.display()));
        println!("cargo:rustc-env=SKJOLD_{key}={}", value.trim());
    }
}
