//! Support for the end-to-end tests: finding the umproxy binary, free ports,
//! certificates, and real peers (SIPp, a TLS user agent, DNS servers).
