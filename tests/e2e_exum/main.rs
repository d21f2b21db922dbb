//! End-to-end tests of the ExUM routing application (issue 6).
