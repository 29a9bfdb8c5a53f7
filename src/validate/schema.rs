//! Request schemas, and validation that reports errors as pydantic 2.8 does in FastAPI: see
//! [`Schema`].

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use super::json::{Dict, Int, Json};
use super::repr;

/// A field type, as a pydantic annotation.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Ty {
    /// `Any`: every value.
    Any,
    /// `str`
    Str,
    /// `int` (lax: integral floats, numeric strings and booleans are accepted).
    Int,
    /// `float` (lax: ints, numeric strings and booleans are accepted).
    Float,
    /// `bool` (lax: 0/1 and words such as `"true"`, `"no"` are accepted).
    Bool,
    /// `Literal["a", "b"]` of strings.
    Literal(&'static [&'static str]),
    /// `List[T]`
    List(Box<Ty>),
    /// `Dict[str, V]`
    Dict(Box<Ty>),
    /// A nested model.
    Model(Arc<Schema>),
    /// `Union[A, B, …]` in pydantic's smart mode (built with [`Ty::union`]).
    Union(Members),
    /// `Optional[T]`: `None` or `T`.
    Nullable(Box<Ty>),
    /// A number with bounds (`Field(ge=…, le=…)`).
    Bounded(Box<Ty>, Bounds),
}

/// The members of a union, each with the tag pydantic puts in an error's `loc`.
#[derive(Clone, Debug)]
pub struct Members(pub(super) Vec<(Box<str>, Ty)>);

/// Bounds of a number field, written as in the reference (`ge=0`, `le=2`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Bounds {
    ge: Option<i64>,
    le: Option<i64>,
}

impl Ty {
    /// `List[item]`
    pub fn list(item: Ty) -> Self {
        Self::List(Box::new(item))
    }

    /// `Dict[str, value]`
    pub fn dict(value: Ty) -> Self {
        Self::Dict(Box::new(value))
    }

    /// `Optional[self]`
    pub fn nullable(self) -> Self {
        Self::Nullable(Box::new(self))
    }

    /// `Union[members…]`
    pub fn union(members: impl IntoIterator<Item = Ty>) -> Self {
        let tagged = members
            .into_iter()
            .map(|member| {
                let mut tag = String::new();
                member.tag(&mut tag);
                (tag.into_boxed_str(), member)
            })
            .collect();
        Self::Union(Members(tagged))
    }

    /// A nested model.
    pub fn model(schema: Schema) -> Self {
        Self::Model(Arc::new(schema))
    }

    /// `Field(ge=bound)`
    pub fn ge(self, bound: i64) -> Self {
        self.bounded(|b| b.ge = Some(bound))
    }

    /// `Field(le=bound)`
    pub fn le(self, bound: i64) -> Self {
        self.bounded(|b| b.le = Some(bound))
    }

    fn bounded(self, set: impl FnOnce(&mut Bounds)) -> Self {
        match self {
            Self::Bounded(inner, mut bounds) => {
                set(&mut bounds);
                Self::Bounded(inner, bounds)
            }
            Self::Nullable(inner) => Self::Nullable(Box::new(inner.bounded(set))),
            other => {
                let mut bounds = Bounds::default();
                set(&mut bounds);
                Self::Bounded(Box::new(other), bounds)
            }
        }
    }

    /// The tag pydantic puts in `loc` for this type as a union member.
    fn tag(&self, out: &mut String) {
        match self {
            Self::Any => out.push_str("any"),
            Self::Str => out.push_str("str"),
            Self::Int => out.push_str("int"),
            Self::Float => out.push_str("float"),
            Self::Bool => out.push_str("bool"),
            Self::Literal(words) => {
                out.push_str("literal[");
                for (i, w) in words.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    repr::string(out, w);
                }
                out.push(']');
            }
            Self::List(item) => {
                out.push_str("list[");
                item.tag(out);
                out.push(']');
            }
            Self::Dict(value) => {
                out.push_str("dict[str,");
                value.tag(out);
                out.push(']');
            }
            Self::Model(schema) => out.push_str(&schema.name),
            Self::Union(Members(members)) => {
                out.push_str("union[");
                for (i, (_, m)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    m.tag(out);
                }
                out.push(']');
            }
            Self::Nullable(inner) => {
                out.push_str("nullable[");
                inner.tag(out);
                out.push(']');
            }
            Self::Bounded(inner, _) => inner.tag(out),
        }
    }
}

/// A model: named fields in declaration order, each with a [`Ty`], required or optional, and
/// no extra fields allowed (vLLM's `extra="forbid"`).
///
/// Validation follows pydantic's lax Python mode, which is what FastAPI applies to the result
/// of `json.loads`: errors in field-declaration order, then one `extra_forbidden` per unknown
/// key in body order; unions report every member's errors under the member's tag (`'str'`,
/// `'list[str]'`).
///
/// ```
/// use tower_maas::validate::{Schema, Ty};
///
/// let rerank = Schema::new("RerankRequest")
///     .required("model", Ty::Str)
///     .required("query", Ty::Str)
///     .required("documents", Ty::list(Ty::Str))
///     .optional("top_n", Ty::Int.ge(1));
/// # let _ = rerank;
/// ```
#[derive(Clone, Debug)]
pub struct Schema {
    name: Cow<'static, str>,
    pub(super) fields: Vec<Field>,
    /// For each key length (the last entry: 32 and longer), the first 64 fields of that length,
    /// one bit each: a key is compared with one or two names, not all of them.
    by_len: [u64; 33],
}

#[derive(Clone, Debug)]
pub(super) struct Field {
    pub(super) name: &'static str,
    pub(super) ty: Ty,
    pub(super) required: bool,
}

impl Schema {
    /// An empty model called `name` (the name shows in union tags).
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        Self {
            name: name.into(),
            fields: Vec::new(),
            by_len: [0; 33],
        }
    }

    /// A field named again replaces the first declaration in its place, as a Python class's
    /// annotation written twice does: one field per name, which both the fast and the exact
    /// validation rely on.
    fn push(mut self, field: Field) -> Self {
        if let Some(same_name) = self.fields.iter_mut().find(|f| f.name == field.name) {
            *same_name = field;
            return self;
        }
        if let Some(bit) = 1u64.checked_shl(self.fields.len() as u32) {
            self.by_len[field.name.len().min(32)] |= bit;
        }
        self.fields.push(field);
        self
    }

    /// The index of the field called `key`, among the first 64.
    pub(super) fn field_index(&self, key: &[u8]) -> Option<usize> {
        let mut candidates = self.by_len[key.len().min(32)];
        while candidates != 0 {
            let k = candidates.trailing_zeros() as usize;
            if same(self.fields[k].name.as_bytes(), key) {
                return Some(k);
            }
            candidates &= candidates - 1;
        }
        None
    }

    /// Adds a required field.
    pub fn required(self, name: &'static str, ty: Ty) -> Self {
        self.push(Field {
            name,
            ty,
            required: true,
        })
    }

    /// Adds a field with a default: absent is fine, present is validated.
    pub fn optional(self, name: &'static str, ty: Ty) -> Self {
        self.push(Field {
            name,
            ty,
            required: false,
        })
    }
}

/// Whether two short byte strings are equal, compared in place: keys and field names are a
/// few bytes, where a call to `memcmp` costs more than the comparison.
#[inline]
pub(super) fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    // Up to 16 bytes as two overlapping words (or half-words): no loop, no call.
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap_or([0; 8]));
    let half = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().unwrap_or([0; 4]));
    match n {
        0..=3 => a.iter().zip(b).all(|(x, y)| x == y),
        4..=8 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        9..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

#[cfg(test)]
#[test]
fn same_compares_every_length() {
    let text = b"abcdefghijklmnopqrstuvwxyz0123456789";
    for n in 0..=text.len() {
        let a = &text[..n];
        // Equal bytes in another place, not the same slice.
        let copy = a.to_vec();
        assert!(same(a, copy.as_slice()));
        for at in 0..n {
            let mut b = a.to_vec();
            b[at] ^= 1;
            assert!(!same(a, &b), "{n} {at}");
        }
        assert!(!same(a, &text[..n.saturating_sub(1)]) || n == 0);
    }
}

/// One step of an error's location.
#[derive(Clone, Debug)]
pub(crate) enum Loc<'a> {
    Key(&'a str),
    Tag(&'a str),
    Index(usize),
}

/// What an error shows as its `input`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Input<'a> {
    Value(&'a Json),
    Dict(&'a Dict),
    Bytes(&'a [u8]),
    None,
    EmptyDict,
}

/// A value in an error's `ctx`.
#[derive(Clone, Debug)]
pub(crate) enum CtxValue {
    Int(i64),
    Float(f64),
    Str(Cow<'static, str>),
}

/// One pydantic error dict.
#[derive(Clone, Debug)]
pub(crate) struct PyError<'a> {
    pub(crate) kind: &'static str,
    pub(crate) loc: Vec<Loc<'a>>,
    pub(crate) msg: Cow<'static, str>,
    pub(crate) input: Input<'a>,
    pub(crate) ctx: Option<(&'static str, CtxValue)>,
}

/// The most errors a refusal's message lists; the rest are counted at its end. pydantic lists
/// them all, but a 12 MiB body of bad list items would be millions of errors, gigabytes once
/// written out.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use http_body_util::{BodyExt, Full};
/// use tower::{Layer, ServiceExt};
/// use tower_maas::validate::{RequestSchemaValidatorLayer, MAX_ERRORS};
///
/// let model = tower::service_fn(|_: http::Request<_>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(bytes::Bytes::new())))
/// });
/// // Two bad values more than are listed: each is an error.
/// let bias: serde_json::Map<_, _> = (0..MAX_ERRORS + 2)
///     .map(|i| (format!("{i:04}"), "x".into()))
///     .collect();
/// let body = serde_json::json!({"model": "m", "messages": [], "logit_bias": bias});
/// let request = http::Request::post("/v1/chat/completions")
///     .header("content-type", "application/json")
///     .body(Full::new(bytes::Bytes::from(body.to_string())))
///     .unwrap();
/// let answer = RequestSchemaValidatorLayer::new().layer(model).oneshot(request).await.unwrap();
/// let answer = answer.into_body().collect().await.unwrap().to_bytes();
/// let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
/// let message = answer["message"].as_str().unwrap();
/// assert!(message.ends_with(", ... 2 more errors]"));
/// assert_eq!(message.matches("'float_parsing'").count(), MAX_ERRORS);
/// # }
/// ```
pub const MAX_ERRORS: usize = 1000;

/// A refusal's message takes no further error once this long (1 MiB); an error it takes is
/// written whole, so a message may pass the limit by one error's length.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use http_body_util::{BodyExt, Full};
/// use tower::{Layer, ServiceExt};
/// use tower_maas::validate::{RequestSchemaValidatorLayer, MESSAGE_LIMIT};
///
/// let model = tower::service_fn(|_: http::Request<_>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(bytes::Bytes::new())))
/// });
/// // 600 bad values under keys of 4 kB: about 2.4 MB of errors, written out.
/// let bias: serde_json::Map<_, _> = (0..600)
///     .map(|i| (format!("{i:04}{}", "k".repeat(4000)), "x".into()))
///     .collect();
/// let body = serde_json::json!({"model": "m", "messages": [], "logit_bias": bias});
/// let request = http::Request::post("/v1/chat/completions")
///     .header("content-type", "application/json")
///     .body(Full::new(bytes::Bytes::from(body.to_string())))
///     .unwrap();
/// let answer = RequestSchemaValidatorLayer::new().layer(model).oneshot(request).await.unwrap();
/// let answer = answer.into_body().collect().await.unwrap().to_bytes();
/// let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
/// let message = answer["message"].as_str().unwrap();
/// assert!(message.ends_with(" more errors]"));
/// assert!(message.len() > MESSAGE_LIMIT && message.len() < MESSAGE_LIMIT + 8192);
/// # }
/// ```
pub const MESSAGE_LIMIT: usize = 1 << 20;

/// The errors of one body in pydantic's order: the first [`MAX_ERRORS`] kept, the rest only
/// counted, so that a union still knows that a member failed.
#[derive(Debug)]
pub(crate) struct Errors<'a> {
    kept: Vec<PyError<'a>>,
    more: usize,
    /// How many are kept: [`MAX_ERRORS`], or none when only pass or fail is asked.
    keep: usize,
}

impl Default for Errors<'_> {
    fn default() -> Self {
        Self {
            kept: Vec::new(),
            more: 0,
            keep: MAX_ERRORS,
        }
    }
}

impl<'a> Errors<'a> {
    /// Errors counted, none built: for a check that only asks whether a value passes.
    fn counted() -> Self {
        Self {
            keep: 0,
            ..Self::default()
        }
    }

    /// Adds an error, made only when it is kept.
    fn push(&mut self, error: impl FnOnce() -> PyError<'a>) {
        if self.kept.len() < self.keep {
            self.kept.push(error());
        } else {
            self.more += 1;
        }
    }

    /// How many errors, counted ones included.
    pub(crate) fn len(&self) -> usize {
        self.kept.len() + self.more
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes back the errors after the first `len`.
    fn truncate(&mut self, len: usize) {
        self.more = len.saturating_sub(self.kept.len());
        self.kept.truncate(len);
    }

    /// `str()` of the error list, as vLLM puts it in `message`; past [`MAX_ERRORS`] or
    /// [`MESSAGE_LIMIT`], the list ends with how many errors are left out:
    /// `[{…}, {…}, ... 12345 more errors]`.
    pub(crate) fn message(&self) -> String {
        format_errors(&self.kept, self.more)
    }
}

/// `str()` of the error list, as vLLM puts it in `message`; `more` errors left out are counted
/// at its end, with any that do not fit in [`MESSAGE_LIMIT`].
pub(crate) fn format_errors(errors: &[PyError<'_>], more: usize) -> String {
    let mut out = String::with_capacity(128 * errors.len());
    out.push('[');
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        if out.len() >= MESSAGE_LIMIT {
            let _ = write!(out, "... {} more errors]", errors.len() - i + more);
            return out;
        }
        out.push_str("{'type': ");
        repr::string(&mut out, e.kind);
        out.push_str(", 'loc': (");
        for (j, step) in e.loc.iter().enumerate() {
            if j > 0 {
                out.push_str(", ");
            }
            match step {
                Loc::Key(k) => repr::string(&mut out, k),
                Loc::Tag(t) => repr::string(&mut out, t),
                Loc::Index(i) => {
                    let _ = write!(out, "{i}");
                }
            }
        }
        if e.loc.len() == 1 {
            out.push(',');
        }
        out.push_str("), 'msg': ");
        repr::string(&mut out, &e.msg);
        out.push_str(", 'input': ");
        match e.input {
            Input::Value(v) => repr::json(&mut out, v),
            Input::Dict(d) => repr::dict(&mut out, d),
            Input::Bytes(b) => repr::bytes(&mut out, b),
            Input::None => out.push_str("None"),
            Input::EmptyDict => out.push_str("{}"),
        }
        if let Some((key, value)) = &e.ctx {
            out.push_str(", 'ctx': {");
            repr::string(&mut out, key);
            out.push_str(": ");
            match value {
                CtxValue::Int(v) => {
                    let _ = write!(out, "{v}");
                }
                CtxValue::Float(v) => repr::float(&mut out, *v),
                CtxValue::Str(s) => repr::string(&mut out, s),
            }
            out.push('}');
        }
        out.push('}');
    }
    if more > 0 {
        let _ = write!(out, ", ... {more} more errors");
    }
    out.push(']');
    out
}

/// Validates `body` (the decoded request) against `schema`, appending errors located under
/// `('body', …)`.
pub(crate) fn validate_body<'a>(schema: &'a Schema, body: &'a Json, errors: &mut Errors<'a>) {
    // Deep enough for the OpenAI schemas (body, field, index, field, union tag, ...) without
    // regrowing on every request.
    let mut loc = Vec::with_capacity(8);
    loc.push(Loc::Key("body"));
    validate_model(schema, body, &mut loc, errors);
}

fn error<'a>(
    errors: &mut Errors<'a>,
    loc: &[Loc<'a>],
    kind: &'static str,
    msg: &'static str,
    input: &'a Json,
) {
    errors.push(|| PyError {
        kind,
        loc: loc.to_vec(),
        msg: Cow::Borrowed(msg),
        input: Input::Value(input),
        ctx: None,
    });
}

fn validate_model<'a>(
    schema: &'a Schema,
    value: &'a Json,
    loc: &mut Vec<Loc<'a>>,
    errors: &mut Errors<'a>,
) {
    let Json::Dict(dict) = value else {
        error(
            errors,
            loc,
            "model_attributes_type",
            "Input should be a valid dictionary or object to extract fields from",
            value,
        );
        return;
    };
    let mut matched = 0;
    for field in &schema.fields {
        match dict.get(field.name) {
            Some(v) => {
                matched += 1;
                loc.push(Loc::Key(field.name));
                validate(&field.ty, v, loc, errors);
                loc.pop();
            }
            None if field.required => {
                errors.push(|| {
                    let mut at = loc.clone();
                    at.push(Loc::Key(field.name));
                    PyError {
                        kind: "missing",
                        loc: at,
                        msg: Cow::Borrowed("Field required"),
                        input: Input::Dict(dict),
                        ctx: None,
                    }
                });
            }
            None => {}
        }
    }
    // Keys are unique and so are field names: when every key matched a field, none is extra,
    // and valid bodies skip a search of the fields per key.
    if matched == dict.len() {
        return;
    }
    for (key, v) in dict.iter() {
        if !schema.fields.iter().any(|f| f.name == key) {
            loc.push(Loc::Key(key));
            error(
                errors,
                loc,
                "extra_forbidden",
                "Extra inputs are not permitted",
                v,
            );
            loc.pop();
        }
    }
}

/// Whether `value` passes `ty`; errors are only counted, never built, so neither a passing
/// scalar nor a failing union member costs an allocation.
pub(super) fn accepts(ty: &Ty, value: &Json) -> bool {
    validate(ty, value, &mut Vec::new(), &mut Errors::counted())
}

/// Validates one value; returns whether it passed.
fn validate<'a>(
    ty: &'a Ty,
    value: &'a Json,
    loc: &mut Vec<Loc<'a>>,
    errors: &mut Errors<'a>,
) -> bool {
    let before = errors.len();
    match ty {
        Ty::Any => {}
        Ty::Str => {
            if !matches!(value, Json::Str(_) | Json::WideStr(_)) {
                error(
                    errors,
                    loc,
                    "string_type",
                    "Input should be a valid string",
                    value,
                );
            }
        }
        Ty::Int => {
            if let Err((kind, msg)) = as_int(value) {
                error(errors, loc, kind, msg, value);
            }
        }
        Ty::Float => {
            if let Err((kind, msg)) = as_float(value) {
                error(errors, loc, kind, msg, value);
            }
        }
        Ty::Bool => {
            if let Err((kind, msg)) = as_bool(value) {
                error(errors, loc, kind, msg, value);
            }
        }
        Ty::Literal(words) => {
            let ok = matches!(value, Json::Str(s) if words.contains(&&**s));
            if !ok {
                errors.push(|| {
                    let expected = expected_words(words);
                    PyError {
                        kind: "literal_error",
                        loc: loc.clone(),
                        msg: Cow::Owned(format!("Input should be {expected}")),
                        input: Input::Value(value),
                        ctx: Some(("expected", CtxValue::Str(Cow::Owned(expected)))),
                    }
                });
            }
        }
        Ty::List(item) => match value {
            Json::List(items) => {
                for (i, v) in items.iter().enumerate() {
                    loc.push(Loc::Index(i));
                    validate(item, v, loc, errors);
                    loc.pop();
                }
            }
            _ => error(
                errors,
                loc,
                "list_type",
                "Input should be a valid list",
                value,
            ),
        },
        Ty::Dict(item) => match value {
            Json::Dict(dict) => {
                for (k, v) in dict.iter() {
                    loc.push(Loc::Key(k));
                    validate(item, v, loc, errors);
                    loc.pop();
                }
            }
            _ => error(
                errors,
                loc,
                "dict_type",
                "Input should be a valid dictionary",
                value,
            ),
        },
        Ty::Model(schema) => validate_model(schema, value, loc, errors),
        Ty::Union(Members(members)) => {
            // Members' errors go straight into `errors` and are taken back when one passes,
            // which spares a vector per union on valid bodies.
            for (tag, member) in members {
                loc.push(Loc::Tag(tag));
                let passed = validate(member, value, loc, errors);
                loc.pop();
                if passed {
                    errors.truncate(before);
                    return true;
                }
            }
        }
        Ty::Nullable(inner) => {
            if !matches!(value, Json::Null) {
                return validate(inner, value, loc, errors);
            }
        }
        Ty::Bounded(inner, bounds) => {
            if validate(inner, value, loc, errors) {
                let float = matches!(**inner, Ty::Float);
                check_bounds(*bounds, float, value, loc, errors);
            }
        }
    }
    errors.len() == before
}

/// pydantic's `expected` text: `'a'`, `'a' or 'b'`, `'a', 'b' or 'c'`.
fn expected_words(words: &[&str]) -> String {
    let mut out = String::new();
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            out.push_str(if i + 1 == words.len() { " or " } else { ", " });
        }
        repr::string(&mut out, w);
    }
    out
}

type Refusal = (&'static str, &'static str);

const INT_PARSING_SIZE: Refusal = (
    "int_parsing_size",
    "Unable to parse input string as an integer, exceeded maximum size",
);

/// pydantic's refusal of a string that is not valid Unicode (a lone surrogate) where it must
/// read the text as a number or a word.
const STRING_UNICODE: Refusal = (
    "string_unicode",
    "Input should be a valid string, unable to parse raw data as a unicode string",
);

const INT_PARSING: Refusal = (
    "int_parsing",
    "Input should be a valid integer, unable to parse string as an integer",
);

/// A lax `int`; the value itself is not needed, only whether pydantic takes it.
pub(crate) fn as_int(value: &Json) -> Result<Option<i64>, Refusal> {
    match value {
        Json::Int(int) => Ok(int.as_i64()),
        Json::Bool(b) => Ok(Some(i64::from(*b))),
        Json::Float(x) if !x.is_finite() => {
            Err(("finite_number", "Input should be a finite number"))
        }
        Json::Float(x) if x.fract() != 0.0 => Err((
            "int_from_float",
            "Input should be a valid integer, got a number with a fractional part",
        )),
        // pydantic-core converts a float to an i64 only strictly inside its range.
        Json::Float(x) if !(*x > i64::MIN as f64 && *x < i64::MAX as f64) => Err(INT_PARSING_SIZE),
        Json::Float(x) => Ok(Some(*x as i64)),
        Json::Str(s) => parse_int_str(s),
        Json::WideStr(_) => Err(STRING_UNICODE),
        _ => Err(("int_type", "Input should be a valid integer")),
    }
}

/// pydantic-core's `str_as_int`: surrounding whitespace stripped, an optional sign, digits
/// (with single underscores between them), and a fraction of zeros only.
fn parse_int_str(s: &str) -> Result<Option<i64>, Refusal> {
    let s = s.trim();
    // Python's limit on converting text to an int.
    if s.len() > 4300 {
        return Err(INT_PARSING_SIZE);
    }
    let s = match s.split_once('.') {
        Some((int, frac)) if !frac.is_empty() && frac.bytes().all(|b| b == b'0') => int,
        Some(_) => return Err(INT_PARSING),
        None => s,
    };
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    let valid = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_')
        && !digits.starts_with('_')
        && !digits.ends_with('_')
        && !digits.contains("__");
    if !valid {
        return Err(INT_PARSING);
    }
    Ok(s.replace('_', "").parse().ok())
}

const FLOAT_PARSING: Refusal = (
    "float_parsing",
    "Input should be a valid number, unable to parse string as a number",
);

/// A lax `float`.
pub(crate) fn as_float(value: &Json) -> Result<f64, Refusal> {
    match value {
        Json::Float(x) => Ok(*x),
        // An int too large for a float is not a number to pydantic.
        Json::Int(int) => match int.to_f64() {
            x if x.is_finite() => Ok(x),
            _ => Err(("float_type", "Input should be a valid number")),
        },
        Json::Bool(b) => Ok(f64::from(u8::from(*b))),
        Json::Str(s) => parse_float_str(s).ok_or(FLOAT_PARSING),
        Json::WideStr(_) => Err(STRING_UNICODE),
        _ => Err(("float_type", "Input should be a valid number")),
    }
}

fn parse_float_str(s: &str) -> Option<f64> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let unsigned = lower.trim_start_matches(['+', '-']);
    if matches!(unsigned, "inf" | "infinity" | "nan") {
        let x: f64 = if unsigned == "nan" {
            f64::NAN
        } else {
            f64::INFINITY
        };
        return Some(if lower.starts_with('-') { -x } else { x });
    }
    let ok = !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E' | b'_'));
    if !ok || t.contains("__") || t.starts_with('_') || t.ends_with('_') {
        return None;
    }
    t.replace('_', "").parse().ok()
}

/// A lax `bool`.
pub(crate) fn as_bool(value: &Json) -> Result<bool, Refusal> {
    const PARSING: Refusal = (
        "bool_parsing",
        "Input should be a valid boolean, unable to interpret input",
    );
    match value {
        Json::Bool(b) => Ok(*b),
        Json::Int(Int::Small(0)) => Ok(false),
        Json::Int(Int::Small(1)) => Ok(true),
        Json::Int(_) => Err(PARSING),
        Json::Float(x) if *x == 0.0 => Ok(false),
        Json::Float(x) if *x == 1.0 => Ok(true),
        Json::Float(x) if x.is_finite() && x.fract() == 0.0 => Err(PARSING),
        Json::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
            "0" | "off" | "f" | "false" | "n" | "no" => Ok(false),
            "1" | "on" | "t" | "true" | "y" | "yes" => Ok(true),
            _ => Err(PARSING),
        },
        Json::WideStr(_) => Err(STRING_UNICODE),
        _ => Err(("bool_type", "Input should be a valid boolean")),
    }
}

fn check_bounds<'a>(
    bounds: Bounds,
    float: bool,
    value: &'a Json,
    loc: &[Loc<'a>],
    errors: &mut Errors<'a>,
) {
    let Ok(x) = as_float(value) else {
        return;
    };
    let exact = match value {
        Json::Int(Int::Big(_)) => None,
        _ => as_int(value).ok().flatten(),
    };
    // pydantic-core checks `le` before `ge`; NaN fails the first comparison made.
    if let Some(le) = bounds.le {
        let within = match exact {
            Some(v) => v <= le,
            None if matches!(value, Json::Int(i) if !i.is_negative()) => false,
            None => x <= le as f64,
        };
        if !within {
            errors.push(|| {
                bound_error(
                    "less_than_equal",
                    "less than or equal to",
                    ("le", le, float),
                    value,
                    loc,
                )
            });
            return;
        }
    }
    if let Some(ge) = bounds.ge {
        let within = match exact {
            Some(v) => v >= ge,
            None if matches!(value, Json::Int(i) if i.is_negative()) => false,
            None => x >= ge as f64,
        };
        if !within {
            errors.push(|| {
                bound_error(
                    "greater_than_equal",
                    "greater than or equal to",
                    ("ge", ge, float),
                    value,
                    loc,
                )
            });
        }
    }
}

/// A bound error: the message writes the bound as given (`2`), the `ctx` as the field's type
/// holds it (`2.0` for a float field).
fn bound_error<'a>(
    kind: &'static str,
    words: &str,
    (key, bound, float): (&'static str, i64, bool),
    value: &'a Json,
    loc: &[Loc<'a>],
) -> PyError<'a> {
    let ctx = if float {
        CtxValue::Float(bound as f64)
    } else {
        CtxValue::Int(bound)
    };
    PyError {
        kind,
        loc: loc.to_vec(),
        msg: Cow::Owned(format!("Input should be {words} {bound}")),
        input: Input::Value(value),
        ctx: Some((key, ctx)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::json::loads;

    /// A list of `int | str` items: an item that is neither fails both members, two errors; a
    /// string passes the second member after the first failed, and the first's error is taken
    /// back.
    fn errors_of(items: &str) -> (bool, Errors<'static>) {
        let ty: &'static Ty = Box::leak(Box::new(Ty::list(Ty::union([Ty::Int, Ty::Str]))));
        let value: &'static Json = Box::leak(Box::new(loads(items.as_bytes()).unwrap()));
        let mut errors = Errors::default();
        let passed = validate(ty, value, &mut Vec::new(), &mut errors);
        (passed, errors)
    }

    #[test]
    fn past_the_bound_errors_are_counted_and_unions_still_judged() {
        // 600 bad items: 1200 errors, the last 200 only counted. Items past the bound still
        // fail their union: counted errors are errors.
        let bad = vec!["{}"; 600].join(",");
        let (passed, errors) = errors_of(&format!("[{bad}]"));
        assert!(!passed);
        assert_eq!((errors.kept.len(), errors.len()), (MAX_ERRORS, 1200));

        // A string after them passes its union's second member: the first member's error,
        // counted past the bound, is taken back with it.
        let (passed, errors) = errors_of(&format!("[{bad},\"ok\"]"));
        assert!(!passed);
        assert_eq!((errors.kept.len(), errors.len()), (MAX_ERRORS, 1200));

        // Taking back below the bound frees room for the errors that follow.
        let mut errors = errors;
        errors.truncate(998);
        assert_eq!((errors.kept.len(), errors.len()), (998, 998));
        errors.push(|| errors_of("[{}]").1.kept.remove(0));
        assert_eq!((errors.kept.len(), errors.len()), (999, 999));

        // The message lists the kept ones and counts the rest.
        let (_, errors) = errors_of(&format!("[{bad}]"));
        assert!(errors.message().ends_with(", ... 200 more errors]"));
    }
}
