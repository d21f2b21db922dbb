//! SIP methods.

/// A request method. Methods are case-sensitive (RFC 3261 §7.1); anything
/// that is not one of the known ones is `Other`, whose text is kept by the
/// message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    Other,
}

impl Method {
    #[inline]
    pub fn from_bytes(m: &[u8]) -> Method {
        match m {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"REGISTER" => Method::Register,
            b"OPTIONS" => Method::Options,
            b"INFO" => Method::Info,
            b"UPDATE" => Method::Update,
            b"PRACK" => Method::Prack,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"REFER" => Method::Refer,
            b"MESSAGE" => Method::Message,
            b"PUBLISH" => Method::Publish,
            _ => Method::Other,
        }
    }

    /// The method name; empty for `Other` (ask the message for its text).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other => "",
        }
    }
}
