//! SIP messages for umproxy: a zero-copy parser, span-copy editor and stream
//! framer (RFC 3261). No I/O and no clock: bytes in, values out.
//!
//! What the parser checks when:
//! - **Parsed eagerly**: start line and Request-URI, every Via, From and To
//!   (tags kept), Call-ID, CSeq, Max-Forwards, Content-Length, Expires,
//!   Content-Type, Require / Proxy-Require / Supported. A malformed one fails
//!   [`Message::parse`].
//! - **Located and counted eagerly, grammar-checked on access**: Route,
//!   Record-Route and Contact (except a REGISTER's Contacts, which are fully
//!   eager). Parsing checks their structure (quotes, `<…>`, a URI scheme) and
//!   counts them against [`Limits`]; [`Message::routes`],
//!   [`Message::record_routes`] and [`Message::contacts`] run the URI grammar
//!   and stop at a malformed element, and [`Message::check_name_addrs`]
//!   returns it as an error.
//! - Everything else: on demand from its span.
//!
//! ```
//! use sip_message::{Message, Method};
//! let msg = Message::parse_slice(
//!     "OPTIONS sip:bob@example.com SIP/2.0\r\n\
//!      Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds\r\n\
//!      To: <sip:bob@example.com>\r\nFrom: <sip:alice@example.com>;tag=1928301774\r\n\
//!      Call-ID: a84b4c76e66710\r\nCSeq: 63104 OPTIONS\r\nContent-Length: 0\r\n\r\n",
//! ).unwrap();
//! assert_eq!(msg.method(), Some(Method::Options));
//! assert_eq!(msg.branch(), Some("z9hG4bK776asdhds"));
//! assert_eq!(msg.from_tag(), Some("1928301774"));
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

pub mod build;
pub mod edit;
pub mod error;
mod fast;
pub mod framing;
pub mod grammar;
pub mod header;
pub mod limits;
pub mod message;
pub mod method;
mod on_demand;

pub use error::{ErrorKind, ParseError};
pub use framing::{Frame, Framer, FramingError};
pub use grammar::auth::AuthValue;
pub use grammar::extension::ReasonValue;
pub use grammar::name_addr::NameAddr;
pub use grammar::params::Params;
pub use grammar::uri::{HostKind, Scheme, Uri};
pub use grammar::via::{Via, MAGIC_COOKIE};
pub use header::HeaderName;
pub use limits::{Limit, Limits};
pub use message::{Header, Message, Span};
pub use method::Method;
