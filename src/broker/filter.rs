//! Subscription filters (<https://ably.com/docs/pub-sub/advanced#subscription-filters>):
//! the expression a client names in `[filter=<base64>]<channel>` (ably-js's
//! `channels.getDerived(name, { filter })`), parsed once at attach into an
//! [`Expr`] and evaluated against each message published on the channel.
//!
//! Ably writes filters in JMESPath (<https://jmespath.org/specification.html>)
//! over a message's `name` and `extras.headers`, a flat object
//! (<https://ably.com/docs/pub-sub/advanced#filter-create>). The subset read
//! here is what those docs use and what a filter over those two fields can
//! mean:
//!
//! - fields: `name`, and `headers.<key>` where the key is an identifier
//!   (`flavor`) or a quoted one (`headers."content-type"`);
//! - literals: JSON in backticks (`` `"ice-cream"` ``, `` `50` ``, `` `true` ``,
//!   `` `null` ``) and raw strings in single quotes (`'ice-cream'`);
//! - comparisons `==`, `!=`, `<`, `<=`, `>`, `>=`; `&&`, `||`, `!` and
//!   parentheses, with JMESPath's precedence (`!` binds tightest, then the
//!   comparisons, then `&&`, then `||`).
//!
//! JMESPath's meaning is kept: a field that is absent is `null`, so
//! ``headers.cost == `50` `` does not match a message without that header and
//! ``headers.cost != `50` `` does; `<` and friends compare numbers only (anything
//! else gives `null`); a message matches when the result is truthy (not
//! `false`, `null`, `""`, `[]` or `{}`). Everything else JMESPath has —
//! other fields (`data`, `clientId`), nested paths, projections, functions,
//! pipes, `@`, chained comparisons (`a == b == c`) — is refused at attach
//! with the position and what to write instead, as is an expression longer
//! than [`MAX_FILTER_BYTES`] or nested deeper than [`MAX_DEPTH`].

use std::fmt;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde_json::Value;

/// The longest expression accepted, decoded. Ably states no limit; the
/// channel name carrying it is advised to stay well under 2048 characters
/// (<https://ably.com/docs/channels>), which 1 KiB of expression (about
/// 1.4 KB of base64) respects.
pub(crate) const MAX_FILTER_BYTES: usize = 1024;

/// How deeply parentheses and `!` may nest.
pub(crate) const MAX_DEPTH: usize = 32;

/// Why a filter was refused; the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FilterError {
    #[error("the filter is not base64 (ably-js sends the expression base64-encoded)")]
    NotBase64,
    #[error("the filter is not UTF-8 text")]
    NotUtf8,
    #[error("the filter expression is empty")]
    Empty,
    #[error("the filter expression is longer than {MAX_FILTER_BYTES} bytes")]
    TooLong,
    #[error("the filter expression nests parentheses or '!' more than {MAX_DEPTH} deep")]
    TooDeep,
    #[error("filter expression, at byte {at}: {why}")]
    Syntax { at: usize, why: String },
}

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Field(Field),
    Literal(Value),
    Not(Box<Expr>),
    Compare(Box<Expr>, Comparator, Box<Expr>),
    /// Two or more operands: a chain of `&&` is one node, so a long chain
    /// does not deepen the evaluation.
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

/// What an expression may read of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Field {
    /// The message's `name`.
    Name,
    /// One key of the message's `extras.headers`.
    Header(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Comparator {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl fmt::Display for Comparator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Comparator::Eq => "==",
            Comparator::Ne => "!=",
            Comparator::Lt => "<",
            Comparator::Le => "<=",
            Comparator::Gt => ">",
            Comparator::Ge => ">=",
        })
    }
}

/// The filter of a derived channel: its expression, parsed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Filter {
    expr: Expr,
}

/// Base64 as ably-js writes it (the standard alphabet, padded), and the URL
/// alphabet too; padding optional in both.
fn engine(alphabet: &alphabet::Alphabet) -> GeneralPurpose {
    GeneralPurpose::new(
        alphabet,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    )
}

impl Filter {
    /// The filter named in a `[filter=…]` qualifier: base64 (standard or URL
    /// alphabet) of the expression, bounded before decoding.
    pub(crate) fn from_base64(text: &str) -> Result<Filter, FilterError> {
        if text.len() > MAX_FILTER_BYTES.div_ceil(3) * 4 {
            return Err(FilterError::TooLong);
        }
        let url = text.contains(['-', '_']);
        let bytes = if url {
            engine(&alphabet::URL_SAFE).decode(text)
        } else {
            engine(&alphabet::STANDARD).decode(text)
        }
        .map_err(|_| FilterError::NotBase64)?;
        let expression = String::from_utf8(bytes).map_err(|_| FilterError::NotUtf8)?;
        Filter::parse(&expression)
    }

    /// Parses an expression (see the module documentation for the subset).
    pub(crate) fn parse(expression: &str) -> Result<Filter, FilterError> {
        if expression.len() > MAX_FILTER_BYTES {
            return Err(FilterError::TooLong);
        }
        if expression.trim().is_empty() {
            return Err(FilterError::Empty);
        }
        let tokens = lex(expression)?;
        let mut parser = Parser {
            tokens: &tokens,
            pos: 0,
            depth: 0,
            end: expression.len(),
        };
        let expr = parser.or()?;
        if let Some((at, token)) = parser.tokens.get(parser.pos) {
            return Err(syntax(
                *at,
                format!("unexpected {token} after a complete expression"),
            ));
        }
        Ok(Filter { expr })
    }

    /// Whether `message` (a message as published: `name`, `extras`) passes.
    #[must_use]
    pub(crate) fn matches(&self, message: &Value) -> bool {
        eval(&self.expr, message).truthy()
    }

    #[cfg(test)]
    fn expr(&self) -> &Expr {
        &self.expr
    }
}

fn syntax(at: usize, why: impl Into<String>) -> FilterError {
    FilterError::Syntax {
        at,
        why: why.into(),
    }
}

// ---------------------------------------------------------------------------
// Tokens

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Literal(Value),
    Dot,
    LParen,
    RParen,
    Not,
    And,
    Or,
    Cmp(Comparator),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(name) => write!(f, "identifier {name:?}"),
            Token::Literal(value) => write!(f, "literal `{value}`"),
            Token::Dot => f.write_str("'.'"),
            Token::LParen => f.write_str("'('"),
            Token::RParen => f.write_str("')'"),
            Token::Not => f.write_str("'!'"),
            Token::And => f.write_str("'&&'"),
            Token::Or => f.write_str("'||'"),
            Token::Cmp(c) => write!(f, "'{c}'"),
        }
    }
}

/// The index of the `quote` closing the one at `start`, skipping anything
/// escaped with a backslash.
fn closing(source: &str, start: usize, quote: u8) -> Result<usize, FilterError> {
    let bytes = source.as_bytes();
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b if b == quote => return Ok(i),
            _ => i += 1,
        }
    }
    Err(syntax(
        start,
        format!("the {} literal is not closed", quote as char),
    ))
}

fn lex(source: &str) -> Result<Vec<(usize, Token)>, FilterError> {
    let mut tokens = Vec::new();
    let bytes = source.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let at = i;
        let two = source.get(i..i + 2).unwrap_or("");
        let token = match bytes[i] {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'.' => Token::Dot,
            b'(' => Token::LParen,
            b')' => Token::RParen,
            _ if two == "&&" => Token::And,
            _ if two == "||" => Token::Or,
            _ if two == "==" => Token::Cmp(Comparator::Eq),
            _ if two == "!=" => Token::Cmp(Comparator::Ne),
            _ if two == "<=" => Token::Cmp(Comparator::Le),
            _ if two == ">=" => Token::Cmp(Comparator::Ge),
            b'<' => Token::Cmp(Comparator::Lt),
            b'>' => Token::Cmp(Comparator::Gt),
            b'!' => Token::Not,
            b'`' => {
                let end = closing(source, i, b'`')?;
                let text = source[i + 1..end].replace("\\`", "`");
                let value: Value = serde_json::from_str(&text).map_err(|_| {
                    syntax(
                        at,
                        "a `literal` must be JSON: write `\"text\"` for a string, `50` for a number",
                    )
                })?;
                tokens.push((at, Token::Literal(value)));
                i = end + 1;
                continue;
            }
            // A raw string: only \' is an escape (JMESPath "raw-string").
            b'\'' => {
                let end = closing(source, i, b'\'')?;
                let text = source[i + 1..end].replace("\\'", "'");
                tokens.push((at, Token::Literal(Value::String(text))));
                i = end + 1;
                continue;
            }
            b'"' => {
                let end = closing(source, i, b'"')?;
                let name: String = serde_json::from_str(&source[i..=end])
                    .map_err(|_| syntax(at, "a quoted identifier must be a JSON string"))?;
                tokens.push((at, Token::Ident(name)));
                i = end + 1;
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let len = bytes[i..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                    .count();
                tokens.push((at, Token::Ident(source[i..i + len].to_string())));
                i += len;
                continue;
            }
            _ => {
                let c = source[i..].chars().next().unwrap_or_default();
                let why = match c {
                    '|' => "pipes are not supported; use || for \"or\"".to_string(),
                    '&' => "use && for \"and\"".to_string(),
                    '=' => "use == to compare".to_string(),
                    '[' | ']' | '{' | '}' | '*' | '@' | ',' | ':' => format!(
                        "'{c}' is not supported: filters compare name and headers.<key> with literals"
                    ),
                    '0'..='9' | '-' => {
                        "numbers are written in backticks: `50`".to_string()
                    }
                    _ => format!("unexpected character {c:?}"),
                };
                return Err(syntax(at, why));
            }
        };
        i += match token {
            Token::And | Token::Or => 2,
            Token::Cmp(Comparator::Eq | Comparator::Ne | Comparator::Le | Comparator::Ge) => 2,
            _ => 1,
        };
        tokens.push((at, token));
    }
    Ok(tokens)
}

// ---------------------------------------------------------------------------
// Parser: or := and ('||' and)*; and := cmp ('&&' cmp)*;
// cmp := unary (comparator unary)?; unary := '!' unary | primary;
// primary := '(' or ')' | field | literal.

struct Parser<'a> {
    tokens: &'a [(usize, Token)],
    pos: usize,
    depth: usize,
    end: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn at(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |(at, _)| *at)
    }

    fn deeper(&mut self) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(FilterError::TooDeep);
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut operands = vec![self.and()?];
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            operands.push(self.and()?);
        }
        Ok(if operands.len() == 1 {
            operands.remove(0)
        } else {
            Expr::Or(operands)
        })
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut operands = vec![self.comparison()?];
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            operands.push(self.comparison()?);
        }
        Ok(if operands.len() == 1 {
            operands.remove(0)
        } else {
            Expr::And(operands)
        })
    }

    fn comparison(&mut self) -> Result<Expr, FilterError> {
        let left = self.unary()?;
        let Some(&Token::Cmp(comparator)) = self.peek() else {
            return Ok(left);
        };
        self.pos += 1;
        let right = self.unary()?;
        if let Some(Token::Cmp(_)) = self.peek() {
            return Err(syntax(
                self.at(),
                "comparisons do not chain; join them with && or ||",
            ));
        }
        Ok(Expr::Compare(Box::new(left), comparator, Box::new(right)))
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        if self.peek() == Some(&Token::Not) {
            self.pos += 1;
            self.deeper()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, FilterError> {
        let at = self.at();
        let Some((_, token)) = self.tokens.get(self.pos) else {
            return Err(syntax(
                at,
                "the expression ends where a field, a literal or '(' was expected",
            ));
        };
        self.pos += 1;
        match token {
            Token::LParen => {
                self.deeper()?;
                let inner = self.or()?;
                self.depth -= 1;
                if self.peek() != Some(&Token::RParen) {
                    return Err(syntax(self.at(), "')' expected"));
                }
                self.pos += 1;
                Ok(inner)
            }
            Token::Literal(value) => Ok(Expr::Literal(value.clone())),
            Token::Ident(name) => self.field(at, name),
            other => Err(syntax(
                at,
                format!("unexpected {other}: a field, a literal or '(' was expected"),
            )),
        }
    }

    fn field(&mut self, at: usize, name: &str) -> Result<Expr, FilterError> {
        if self.peek() == Some(&Token::LParen) {
            return Err(syntax(at, "functions are not supported in filters"));
        }
        let field = match name {
            "name" => Field::Name,
            "headers" => {
                if self.peek() != Some(&Token::Dot) {
                    return Err(syntax(
                        at,
                        "compare one header: headers.<key> (headers is a flat object)",
                    ));
                }
                self.pos += 1;
                match self.tokens.get(self.pos) {
                    Some((_, Token::Ident(key))) => {
                        self.pos += 1;
                        Field::Header(key.clone())
                    }
                    _ => {
                        return Err(syntax(
                            self.at(),
                            "a header key must follow 'headers.' (quote it if it is not an identifier: headers.\"content-type\")",
                        ))
                    }
                }
            }
            other => {
                return Err(syntax(
                    at,
                    format!(
                        "{other:?} cannot be filtered on: only name and headers.<key> (the message's extras.headers) can, see https://ably.com/docs/pub-sub/advanced#filter-create"
                    ),
                ))
            }
        };
        if self.peek() == Some(&Token::Dot) {
            return Err(syntax(
                self.at(),
                "headers are a flat object: nothing can follow headers.<key> or name",
            ));
        }
        Ok(Expr::Field(field))
    }
}

// ---------------------------------------------------------------------------
// Evaluation

/// An intermediate value: a reference into the message or the expression,
/// or a boolean a comparison or `!` produced. Nothing is allocated.
#[derive(Debug, Clone, Copy)]
enum Val<'a> {
    Json(&'a Value),
    Bool(bool),
    Null,
}

impl Val<'_> {
    /// JMESPath truthiness: false, null, "", [] and {} are false.
    fn truthy(self) -> bool {
        match self {
            Val::Null => false,
            Val::Bool(b) => b,
            Val::Json(value) => match value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                Value::Object(o) => !o.is_empty(),
                Value::Number(_) => true,
            },
        }
    }

    fn number(self) -> Option<f64> {
        match self {
            Val::Json(Value::Number(n)) => n.as_f64(),
            _ => None,
        }
    }

    fn bool(self) -> Option<bool> {
        match self {
            Val::Bool(b) => Some(b),
            Val::Json(Value::Bool(b)) => Some(*b),
            Val::Json(_) | Val::Null => None,
        }
    }

    fn is_null(self) -> bool {
        matches!(self, Val::Null | Val::Json(Value::Null))
    }
}

/// JMESPath equality: numbers by value, everything else as JSON.
fn equal(a: Val<'_>, b: Val<'_>) -> bool {
    if let (Some(x), Some(y)) = (a.number(), b.number()) {
        return x == y;
    }
    if a.is_null() || b.is_null() {
        return a.is_null() && b.is_null();
    }
    if let (Some(x), Some(y)) = (a.bool(), b.bool()) {
        return x == y;
    }
    match (a, b) {
        (Val::Json(x), Val::Json(y)) => x == y,
        _ => false,
    }
}

fn eval<'a>(expr: &'a Expr, message: &'a Value) -> Val<'a> {
    match expr {
        Expr::Literal(value) => Val::Json(value),
        Expr::Field(Field::Name) => message.get("name").map_or(Val::Null, Val::Json),
        Expr::Field(Field::Header(key)) => message
            .get("extras")
            .and_then(|extras| extras.get("headers"))
            .and_then(|headers| headers.get(key))
            .map_or(Val::Null, Val::Json),
        Expr::Not(inner) => Val::Bool(!eval(inner, message).truthy()),
        Expr::Compare(left, comparator, right) => {
            let (a, b) = (eval(left, message), eval(right, message));
            match comparator {
                Comparator::Eq => Val::Bool(equal(a, b)),
                Comparator::Ne => Val::Bool(!equal(a, b)),
                ordering => match (a.number(), b.number()) {
                    (Some(x), Some(y)) => Val::Bool(match ordering {
                        Comparator::Lt => x < y,
                        Comparator::Le => x <= y,
                        Comparator::Gt => x > y,
                        _ => x >= y,
                    }),
                    // JMESPath: ordering anything but numbers is null.
                    _ => Val::Null,
                },
            }
        }
        Expr::And(operands) => {
            let mut last = Val::Null;
            for operand in operands {
                last = eval(operand, message);
                if !last.truthy() {
                    return last;
                }
            }
            last
        }
        Expr::Or(operands) => {
            let mut last = Val::Null;
            for operand in operands {
                last = eval(operand, message);
                if last.truthy() {
                    return last;
                }
            }
            last
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use proptest::prelude::*;
    use serde_json::json;

    fn filter(expression: &str) -> Filter {
        Filter::parse(expression).unwrap_or_else(|e| panic!("{expression}: {e}"))
    }

    fn refused(expression: &str) -> String {
        Filter::parse(expression).expect_err(expression).to_string()
    }

    /// ably-js's test (test/realtime/message.test.js, "subscribes to
    /// filtered channel") and its messages.
    #[test]
    fn ably_js_filter_selects_the_two_matching_messages() {
        let f = filter("name == `\"filtered\"` && headers.number == `26095`");
        let messages = [
            json!({"name": "filtered", "extras": {"headers": {"name": "Lorem Choo", "number": 26095, "bool": true}}}),
            json!({"name": "filtered", "data": "no extras"}),
            json!({"name": "filtered", "extras": {"headers": {"name": "John Bull", "number": 26095, "bool": false}}}),
            json!({"name": "filtered", "extras": {}}),
            json!({"name": "filtered", "extras": {"headers": {"name": "John Bull", "number": 12345, "bool": false}}}),
            json!({"name": "end"}),
        ];
        let passed: Vec<usize> = (0..messages.len())
            .filter(|i| f.matches(&messages[*i]))
            .collect();
        assert_eq!(passed, [0, 2]);
    }

    #[test]
    fn ably_docs_examples() {
        let f = filter(
            "name == `\"ice-cream\"` && headers.flavor == `\"strawberry\"` && headers.cost < `50`",
        );
        let m = |name: &str, flavor: &str, cost: u64| json!({"name": name, "extras": {"headers": {"flavor": flavor, "cost": cost, "temp": 3}}});
        assert!(f.matches(&m("ice-cream", "strawberry", 35)));
        assert!(!f.matches(&m("ice-cream", "strawberry", 50)));
        assert!(!f.matches(&m("ice-cream", "chocolate", 35)));
        assert!(!f.matches(&m("sorbet", "strawberry", 35)));

        let f = filter("headers.flavor == `\"strawberry\"` || headers.flavor == `\"chocolate\"`");
        assert!(f.matches(&m("x", "chocolate", 1)));
        assert!(f.matches(&m("x", "strawberry", 1)));
        assert!(!f.matches(&m("x", "vanilla", 1)));
    }

    #[test]
    fn operators_literals_and_precedence() {
        let msg = json!({"name": "a", "extras": {"headers": {"n": 5, "s": "x", "t": true, "e": "", "content-type": "json", "q\"k": "v"}}});
        let yes = [
            "headers.n == `5`",
            "headers.n == `5.0`",
            "headers.n != `6`",
            "headers.n < `6` && headers.n <= `5` && headers.n > `4` && headers.n >= `5`",
            "name == 'a'",
            "name == `\"a\"`",
            "headers.t",
            "headers.t == `true`",
            "!headers.e",
            "!headers.missing",
            "headers.missing == `null`",
            "headers.missing != `1`",
            "headers.\"content-type\" == 'json'",
            "headers.\"q\\\"k\" == 'v'",
            "name == 'b' || headers.s == 'x'",
            "!(name == 'b')",
            "!name == `false`",
            "(name == 'b' || name == 'a') && headers.n == `5`",
            "name == 'b' && headers.n == `1` || name == 'a'",
            "`true`",
            "'it\\'s' == 'it\\'s'",
        ];
        for e in yes {
            assert!(filter(e).matches(&msg), "{e}");
        }
        let no = [
            "headers.n == `6`",
            "headers.n == '5'",
            "headers.s < `1`",
            "headers.s < 'y'",
            "headers.missing == `1`",
            "!headers.t",
            "name == 'b' && headers.n == `5`",
            "name == 'b' || headers.n == `1`",
            "headers.e",
            "`null`",
        ];
        for e in no {
            assert!(!filter(e).matches(&msg), "{e}");
        }
    }

    #[test]
    fn messages_without_extras_or_headers_never_match_header_equality() {
        let f = filter("headers.number == `26095`");
        for m in [
            json!({"name": "x"}),
            json!({"name": "x", "extras": null}),
            json!({"name": "x", "extras": {"headers": null}}),
            json!({"name": "x", "extras": {"headers": "not an object"}}),
            json!({}),
        ] {
            assert!(!f.matches(&m), "{m}");
        }
    }

    #[test]
    fn and_chains_are_flat() {
        let f = filter("name == 'a' && name == 'a' && name == 'a'");
        assert!(matches!(f.expr(), Expr::And(ops) if ops.len() == 3));
    }

    #[test]
    fn malformed_expressions_are_refused_with_a_reason() {
        for (expression, says) in [
            ("", "empty"),
            ("   ", "empty"),
            ("data == 'x'", "cannot be filtered on"),
            ("clientId == 'x'", "cannot be filtered on"),
            ("headers == `{}`", "headers.<key>"),
            ("headers.a.b == `1`", "flat object"),
            ("name.first == 'x'", "flat object"),
            ("headers.", "header key must follow"),
            ("name = 'x'", "use =="),
            ("name == 5", "backticks"),
            ("name == \"x\"", "cannot be filtered on"),
            ("name == `x`", "must be JSON"),
            ("name == `\"x\"", "not closed"),
            ("name == 'x", "not closed"),
            ("name | length(@)", "pipes"),
            ("length(name) == `1`", "functions"),
            ("name & headers.a", "use &&"),
            ("headers[0]", "not supported"),
            ("headers.*", "not supported"),
            ("@", "not supported"),
            ("name == 'a' == 'b'", "do not chain"),
            ("(name == 'a'", "')' expected"),
            ("name == 'a')", "unexpected ')'"),
            ("name ==", "ends where"),
            ("&& name", "unexpected '&&'"),
            ("name 'a'", "after a complete expression"),
            ("name == 'a' #", "unexpected character"),
        ] {
            let message = refused(expression);
            assert!(message.contains(says), "{expression:?}: {message}");
        }
        assert!(refused("name == 'a' == 'b'").contains("at byte 12"));
    }

    #[test]
    fn size_and_depth_are_bounded_before_evaluation() {
        let long = format!("name == '{}'", "x".repeat(MAX_FILTER_BYTES));
        assert_eq!(Filter::parse(&long), Err(FilterError::TooLong));
        let fits = format!(
            "name == '{}'",
            "x".repeat(MAX_FILTER_BYTES - "name == ''".len())
        );
        assert_eq!(fits.len(), MAX_FILTER_BYTES);
        assert!(Filter::parse(&fits).is_ok());

        let deep = format!(
            "{}name{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(Filter::parse(&deep), Err(FilterError::TooDeep));
        let nots = format!("{}name", "!".repeat(MAX_DEPTH + 1));
        assert_eq!(Filter::parse(&nots), Err(FilterError::TooDeep));
        let ok = format!("{}name{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(Filter::parse(&ok).is_ok());
        // A long flat chain is neither deep nor slow.
        let chain = vec!["name"; 120].join(" && ");
        assert!(chain.len() < MAX_FILTER_BYTES);
        assert!(filter(&chain).matches(&json!({"name": "a"})));
        assert!(!filter(&chain).matches(&json!({"name": ""})));
    }

    #[test]
    fn base64_forms_ably_js_and_others_send() {
        let expression = "name == `\"filtered\"` && headers.number == `26095`";
        let want = filter(expression);
        for text in [
            STANDARD.encode(expression),
            URL_SAFE_NO_PAD.encode(expression),
        ] {
            assert_eq!(Filter::from_base64(&text).as_ref(), Ok(&want), "{text}");
        }
        // Padding is optional in the standard alphabet too.
        let padded = STANDARD.encode("name=='ab'");
        assert!(padded.ends_with('='));
        assert!(Filter::from_base64(padded.trim_end_matches('=')).is_ok());
        assert_eq!(
            Filter::from_base64("not base64!"),
            Err(FilterError::NotBase64)
        );
        assert_eq!(
            Filter::from_base64(&STANDARD.encode([0xff, 0xfe])),
            Err(FilterError::NotUtf8)
        );
        assert_eq!(Filter::from_base64(""), Err(FilterError::Empty));
        let huge = STANDARD.encode("x".repeat(MAX_FILTER_BYTES + 3));
        assert_eq!(Filter::from_base64(&huge), Err(FilterError::TooLong));
    }

    proptest! {
        /// Any text up to the bound parses or is refused; none panics, and
        /// what parses evaluates against any headers.
        #[test]
        fn any_text_parses_or_is_refused(text in ".{0,200}", n in any::<i64>(), s in ".{0,8}") {
            if let Ok(f) = Filter::parse(&text) {
                let _ = f.matches(&json!({"name": s, "extras": {"headers": {"n": n, "s": s}}}));
            }
        }

        /// `!`, `&&` and `||` follow boolean logic over comparisons.
        #[test]
        fn boolean_laws(a in 0i64..4, b in 0i64..4) {
            let msg = json!({"extras": {"headers": {"a": a, "b": b}}});
            let pa = a == 1;
            let pb = b == 2;
            let both = filter("headers.a == `1` && headers.b == `2`").matches(&msg);
            let either = filter("headers.a == `1` || headers.b == `2`").matches(&msg);
            let neither = filter("!(headers.a == `1` || headers.b == `2`)").matches(&msg);
            let de_morgan = filter("!(headers.a == `1`) && !(headers.b == `2`)").matches(&msg);
            prop_assert_eq!(both, pa && pb);
            prop_assert_eq!(either, pa || pb);
            prop_assert_eq!(neither, !(pa || pb));
            prop_assert_eq!(neither, de_morgan);
        }
    }
}
