//! Deciding whether a text may pass: the [`Classifier`] trait and its verdicts.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::body::BoxError;

/// Which side of the exchange a text comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// What the client sent.
    Input,
    /// What the model generated.
    Output,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Input => "input",
            Self::Output => "output",
        })
    }
}

/// A classifier's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The text may pass.
    Pass,
    /// The text is refused (81011); the category goes to logs, never to the client.
    Block {
        /// What kind of content was found.
        category: Arc<str>,
    },
}

/// A decision now, or one that needs a round trip (a remote moderation service).
#[derive(Debug)]
pub enum Classified<F> {
    /// Decided locally.
    Now(Result<Verdict, BoxError>),
    /// Decided remotely; the layer bounds the wait with its timeout.
    Later(F),
}

/// Classifies texts for risk control.
///
/// Local rules answer [`Classified::Now`] and cost nothing more; a remote service answers
/// [`Classified::Later`], and [`ContentRiskFilterLayer`](super::ContentRiskFilterLayer) applies
/// its timeout and its failure policy to the future.
///
/// ```
/// use std::future::Ready;
/// use tower_maas::risk::{Classified, Classifier, Side, Verdict};
///
/// /// Refuses any text that shouts.
/// struct NoShouting;
///
/// impl Classifier for NoShouting {
///     type Future = Ready<Result<Verdict, tower_maas::BoxError>>;
///
///     fn classify(&self, _: Side, text: &str) -> Classified<Self::Future> {
///         let shouting = text.len() > 8 && !text.chars().any(char::is_lowercase);
///         Classified::Now(Ok(if shouting {
///             Verdict::Block { category: "shouting".into() }
///         } else {
///             Verdict::Pass
///         }))
///     }
/// }
/// ```
pub trait Classifier: Send + Sync + 'static {
    /// The future of a remote decision.
    type Future: Future<Output = Result<Verdict, BoxError>> + Send + 'static;

    /// Classifies `text` from `side`.
    fn classify(&self, side: Side, text: &str) -> Classified<Self::Future>;
}

impl<C: Classifier + ?Sized> Classifier for Arc<C> {
    type Future = C::Future;

    fn classify(&self, side: Side, text: &str) -> Classified<Self::Future> {
        (**self).classify(side, text)
    }
}
