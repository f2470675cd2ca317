//! Local cluster harness.
