//! Errors of the ExUM module. Directory errors are the operator's fault and
//! name the file, the object and the field; request-building errors are ours
//! or the operator's (a template that renders to no URI), never the peer's.

use std::fmt;

/// One problem found in a directory: `file: object.field: problem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The object, as `user[sip:alice@contoso.test]` or `um_dial_plan[dp-redmond]`.
    pub object: String,
    /// The field of that object (`hosted_voicemail_policy`, `servers`, …).
    pub field: &'static str,
    /// What is wrong, in words an operator can act on.
    pub problem: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}: {}", self.object, self.field, self.problem)
    }
}

/// Why a directory could not be loaded. The previous snapshot stays in use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Io { file: String, source: std::io::Error },
    /// The file is not TOML of the directory's shape (unknown key, wrong type…).
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    /// The LDAP server could not be reached, refused the bind or the search.
    #[error("{url}: LDAP {operation} failed: {message}")]
    Ldap { url: String, operation: &'static str, message: String },
    /// The file parsed, but objects are inconsistent; every problem found is listed.
    #[error("{}", render_problems(file, problems))]
    Invalid { file: String, problems: Vec<Problem> },
}

fn render_problems(file: &str, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(file);
        out.push_str(": ");
        out.push_str(&p.to_string());
    }
    out
}

impl DirectoryError {
    /// The problems of an [`DirectoryError::Invalid`] error (empty otherwise).
    pub fn problems(&self) -> &[Problem] {
        match self {
            DirectoryError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

/// A Request-URI template that is not acceptable (config time), or that
/// rendered to something that is not a SIP URI (request time).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UmRequestError {
    /// `[exum] <key>`: the template names a placeholder this mode does not know.
    #[error("exum.{key}: unknown placeholder {{{name}}} (allowed: {allowed})")]
    UnknownPlaceholder { key: &'static str, name: String, allowed: String },
    /// `[exum] <key>`: an unbalanced `{` or `}`, or a template that is not a sip/sips URI.
    #[error("exum.{key}: {problem}")]
    BadTemplate { key: &'static str, problem: String },
    /// The template rendered to text that does not parse as a URI (e.g. an
    /// empty `{extension}` in the user part). The core answers 480.
    #[error("exum.{key}: rendered Request-URI {uri:?} is not a SIP URI")]
    BadRenderedUri { key: &'static str, uri: String },
    /// The original request has no Request-URI (a response was passed in: our bug).
    #[error("not a request")]
    NotARequest,
}
