//! The parts of the Istio parity test: the case table, the comparison and the runner.
pub mod cases;
pub mod compare;
pub mod run;
