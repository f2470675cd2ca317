//! The Skjold operator.
