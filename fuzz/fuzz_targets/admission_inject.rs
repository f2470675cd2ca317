//! libFuzzer entry point; the checks live in `skjold_inject_fuzz::admission_inject` so that
//! `inject/tests/fuzz_regressions.rs` replays saved inputs through exactly the same code.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skjold_inject_fuzz::admission_inject(data));
