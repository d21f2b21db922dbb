//! End-to-end tests of the registrar, digest authentication and relay protection (issue 5).
