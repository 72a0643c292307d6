//! The errors of a CNI call. Each module says what went wrong in an enum of its own and gives
//! each case the spec's code ([`Failure`]); a call carries them up as [`Error`] to the edge
//! (`entry`), where they become the spec's JSON error, once ([`Error::reply`]). A teardown
//! (DEL, GC, the undo of a failed ADD) keeps going past a failure and collects every one in an
//! [`ErrorList`]. This module knows no module's errors: they know it.

use std::fmt;

use plexus_hw::kernel::KernelError;
use plexus_hw::vf::VfError;

use crate::spec::error::{ErrorCode, ErrorReply};

/// A module's error: what went wrong, and the spec's code for it.
pub trait Failure: std::error::Error + Send + Sync + 'static {
    /// The spec's code.
    fn code(&self) -> u32;

    /// The reply, when it is not made of the code and the message: a failed plugin binary's
    /// own, whose words pass through.
    fn reply(&self) -> Option<ErrorReply> {
        None
    }
}

/// A kernel request outside a delegate's own errors: the plugin's own failure.
impl Failure for KernelError {
    fn code(&self) -> u32 {
        ErrorCode::Plugin.into()
    }
}

/// The PF side of a VF: the plugin's own failure.
impl Failure for VfError {
    fn code(&self) -> u32 {
        ErrorCode::Plugin.into()
    }
}

/// Anything a CNI call can fail with.
#[derive(Debug)]
pub enum Error {
    /// A module's failure.
    Failure(Box<dyn Failure>),
    /// What was being done when `inner` happened (`network tenant/fast (net1)`).
    Context {
        /// What was being done.
        context: String,
        /// What happened.
        inner: Box<Error>,
    },
    /// Every failure of one teardown.
    List(ErrorList),
}

impl<F: Failure> From<F> for Error {
    fn from(failure: F) -> Self {
        Self::Failure(Box::new(failure))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failure(failure) => failure.fmt(f),
            Self::Context { context, inner } => write!(f, "{context}: {inner}"),
            Self::List(list) => list.fmt(f),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// This error with `context` before it.
    #[must_use]
    pub fn context(self, context: impl fmt::Display) -> Self {
        Self::Context { context: context.to_string(), inner: Box::new(self) }
    }

    /// The spec's code for it (a failed plugin binary's own code passes through).
    pub fn code(&self) -> u32 {
        match self {
            Self::Failure(failure) => failure.code(),
            Self::Context { inner, .. } => inner.code(),
            Self::List(list) => list.code(),
        }
    }

    /// The spec's error object: the code, the message with its context, and a failed plugin
    /// binary's own details.
    pub fn reply(&self) -> ErrorReply {
        match self {
            Self::Context { context, inner } => {
                let mut reply = inner.reply();
                reply.msg = format!("{context}: {}", reply.msg);
                reply
            }
            Self::Failure(failure) => failure.reply().unwrap_or_else(|| ErrorReply {
                code: failure.code(),
                msg: failure.to_string(),
                details: String::new(),
            }),
            Self::List(_) => ErrorReply { code: self.code(), msg: self.to_string(), details: String::new() },
        }
    }

    /// The errors it is made of: itself, or every error of a list.
    pub fn flatten(self) -> Vec<Error> {
        match self {
            Self::List(list) => list.0,
            other => vec![other],
        }
    }
}

/// Every error of a teardown, in the order they happened; the teardown goes on after each.
#[derive(Debug, Default)]
pub struct ErrorList(Vec<Error>);

impl ErrorList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `error` (a list's errors one by one).
    pub fn push(&mut self, error: impl Into<Error>) {
        self.0.extend(error.into().flatten());
    }

    /// The value of `result`, or `None` with its error added.
    pub fn keep<T, E: Into<Error>>(&mut self, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.push(error);
                None
            }
        }
    }

    /// Adds every error of `other`.
    pub fn append(&mut self, other: ErrorList) {
        self.0.extend(other.0);
    }

    /// Whether nothing failed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many failures.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The failures.
    pub fn iter(&self) -> impl Iterator<Item = &Error> {
        self.0.iter()
    }

    /// Each failure with `context` before it.
    #[must_use]
    pub fn context(self, context: impl fmt::Display + Clone) -> Self {
        Self(self.0.into_iter().map(|e| e.context(context.clone())).collect())
    }

    /// `Ok` when nothing failed; the one error when one did; all of them otherwise.
    pub fn into_result(mut self) -> Result<(), Error> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(self.0.remove(0)),
            _ => Err(Error::List(self)),
        }
    }

    /// The code of a single failure; several are the plugin's own failure (100).
    fn code(&self) -> u32 {
        match self.0.as_slice() {
            [one] => one.code(),
            _ => ErrorCode::Plugin.into(),
        }
    }
}

/// Every failure, in order, separated by `; `.
impl fmt::Display for ErrorList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&all.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::spec::{ConfigError, EnvError};

    #[test]
    fn the_reply_carries_code_context_and_a_plugins_own_details() {
        let err = Error::from(EnvError::Missing("CNI_NETNS")).context("network a");
        assert_eq!(
            err.reply(),
            ErrorReply { code: 4, msg: "network a: CNI_NETNS is not set".into(), details: String::new() }
        );
        let failed = crate::delegate::DelegateError::Failed {
            plugin: "bridge".into(),
            reply: ErrorReply { code: 11, msg: "busy".into(), details: "lock".into() },
        };
        let err = Error::from(failed).context("network b (net1)");
        assert_eq!(err.code(), 11);
        assert_eq!(
            err.reply(),
            ErrorReply { code: 11, msg: "network b (net1): busy".into(), details: "lock".into() }
        );
    }

    #[test]
    fn a_list_keeps_every_failure_and_flattens_lists() {
        let mut list = ErrorList::new();
        assert_eq!(list.keep(Ok::<_, Error>(3)), Some(3));
        list.keep(Err::<(), _>(EnvError::Missing("A")));
        let mut inner = ErrorList::new();
        inner.push(EnvError::Missing("B"));
        inner.push(ConfigError::invalid("c", "bad"));
        list.push(Error::List(inner));
        assert_eq!(list.len(), 3);
        let err = list.into_result().unwrap_err();
        assert_eq!(err.code(), 100);
        assert_eq!(err.to_string(), "A is not set; B is not set; c: bad");
        let mut one = ErrorList::new();
        one.push(EnvError::Missing("A"));
        assert_eq!(one.into_result().unwrap_err().code(), 4, "one failure keeps its code");
        assert!(ErrorList::new().into_result().is_ok());
    }
}
