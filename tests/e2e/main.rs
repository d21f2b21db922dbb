//! End-to-end tests: the real umproxy binary on loopback with real peers.
