//! The expression language of `if:` and of `${{ ... }}` templates.
//!
//! `if:` grammar (GitHub Actions-like): `||`, `&&`, `!`, `==`, `!=`, parentheses, string literals in
//! single quotes, the identifiers `branch` and `event`, and the functions `success()`, `failure()`,
//! `always()`, `cancelled()`, `startsWith(a, b)`, `endsWith(a, b)`, `contains(a, b)`. The whole
//! expression may be wrapped in `${{ }}`. An expression that calls none of the status functions is
//! evaluated as `success() && (expr)`, as in GitHub Actions.
//!
//! Precedence, loosest first: `||`, `&&`, `==`/`!=`, `!`. String literals escape a quote by
//! doubling it (`'it''s'`). `true` and `false` are also accepted as literals. Comparisons and the
//! string functions are case-sensitive (branch names are).

/// A parsed `if:` condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    source: String,
    expr: Expr,
    /// Whether a status function appears anywhere; if not, `success() &&` is implied.
    has_status: bool,
}

/// A syntax error at a 0-based byte offset within the expression text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    pub offset: usize,
    pub message: String,
}

/// What a condition is evaluated against; filled in by the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalContext<'a> {
    pub branch: &'a str,
    /// `push`, `manual` or `schedule`.
    pub event: &'a str,
    /// Every job in `needs` succeeded.
    pub needs_succeeded: bool,
    /// Some ancestor (transitive need) failed.
    pub ancestor_failed: bool,
    /// The run was cancelled.
    pub cancelled: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Str(String),
    Bool(bool),
    Var(Var),
    Status(Status),
    Call(StrFn, Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Eq(Box<Expr>, Box<Expr>),
    Ne(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Branch,
    Event,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Success,
    Failure,
    Always,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StrFn {
    StartsWith,
    EndsWith,
    Contains,
}

/// A runtime value: strings and booleans are all the language needs.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Bool(bool),
}

impl Value {
    fn truthy(&self) -> bool {
        match self {
            Value::Str(s) => !s.is_empty(),
            Value::Bool(b) => *b,
        }
    }

    fn into_string(self) -> String {
        match self {
            Value::Str(s) => s,
            Value::Bool(b) => b.to_string(),
        }
    }
}

impl Condition {
    pub fn parse(text: &str) -> Result<Condition, ExprError> {
        let (start, inner) = unwrap_template(text);
        let mut parser = Parser {
            src: inner,
            base: start,
            pos: 0,
        };
        parser.skip_ws();
        if parser.at_end() {
            return Err(parser.error_here("empty expression"));
        }
        let expr = parser.or()?;
        parser.skip_ws();
        if !parser.at_end() {
            return Err(parser.error_here(&format!(
                "unexpected '{}'",
                parser.rest().chars().next().unwrap_or(' ')
            )));
        }
        let has_status = expr.has_status();
        Ok(Condition {
            source: text.to_string(),
            expr,
            has_status,
        })
    }

    pub fn eval(&self, ctx: &EvalContext<'_>) -> bool {
        let value = self.expr.eval(ctx).truthy();
        if self.has_status {
            value
        } else {
            Status::Success.eval(ctx) && value
        }
    }

    /// The source text, as written.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Strips an optional `${{ ... }}` wrapper; returns the inner text and its byte offset.
fn unwrap_template(text: &str) -> (usize, &str) {
    let trimmed = text.trim();
    if let Some(inner) = trimmed.strip_prefix("${{").and_then(|t| t.strip_suffix("}}")) {
        let lead = text.len() - text.trim_start().len();
        (lead + 3, inner)
    } else {
        (0, text)
    }
}

impl Status {
    fn eval(self, ctx: &EvalContext<'_>) -> bool {
        match self {
            Status::Success => ctx.needs_succeeded && !ctx.cancelled,
            Status::Failure => ctx.ancestor_failed,
            Status::Always => true,
            Status::Cancelled => ctx.cancelled,
        }
    }
}

impl Expr {
    fn has_status(&self) -> bool {
        match self {
            Expr::Status(_) => true,
            Expr::Str(_) | Expr::Bool(_) | Expr::Var(_) => false,
            Expr::Not(a) => a.has_status(),
            Expr::Call(_, a, b) | Expr::And(a, b) | Expr::Or(a, b) | Expr::Eq(a, b) | Expr::Ne(a, b) => {
                a.has_status() || b.has_status()
            }
        }
    }

    fn eval(&self, ctx: &EvalContext<'_>) -> Value {
        match self {
            Expr::Str(s) => Value::Str(s.clone()),
            Expr::Bool(b) => Value::Bool(*b),
            Expr::Var(Var::Branch) => Value::Str(ctx.branch.to_string()),
            Expr::Var(Var::Event) => Value::Str(ctx.event.to_string()),
            Expr::Status(s) => Value::Bool(s.eval(ctx)),
            Expr::Call(f, a, b) => {
                let a = a.eval(ctx).into_string();
                let b = b.eval(ctx).into_string();
                Value::Bool(match f {
                    StrFn::StartsWith => a.starts_with(&b),
                    StrFn::EndsWith => a.ends_with(&b),
                    StrFn::Contains => a.contains(&b),
                })
            }
            Expr::Not(a) => Value::Bool(!a.eval(ctx).truthy()),
            // Short-circuit like GitHub: the result is a boolean either way.
            Expr::And(a, b) => Value::Bool(a.eval(ctx).truthy() && b.eval(ctx).truthy()),
            Expr::Or(a, b) => Value::Bool(a.eval(ctx).truthy() || b.eval(ctx).truthy()),
            Expr::Eq(a, b) => Value::Bool(values_equal(a.eval(ctx), b.eval(ctx))),
            Expr::Ne(a, b) => Value::Bool(!values_equal(a.eval(ctx), b.eval(ctx))),
        }
    }
}

fn values_equal(a: Value, b: Value) -> bool {
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (a, b) => a.into_string() == b.into_string(),
    }
}

/// Recursive-descent parser over `src`; error offsets are shifted by `base` so they refer to the
/// text as written (before any `${{ }}` wrapper was stripped).
struct Parser<'a> {
    src: &'a str,
    base: usize,
    pos: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn error_at(&self, pos: usize, message: &str) -> ExprError {
        ExprError {
            offset: self.base + pos,
            message: message.to_string(),
        }
    }

    fn error_here(&self, message: &str) -> ExprError {
        self.error_at(self.pos, message)
    }

    /// Consumes `token` (after whitespace) if it is next.
    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), ExprError> {
        if self.eat(token) {
            Ok(())
        } else if self.at_end() {
            Err(self.error_here(&format!("expected '{token}', found end of expression")))
        } else {
            let found = self.rest().chars().next().unwrap_or(' ');
            Err(self.error_here(&format!("expected '{token}', found '{found}'")))
        }
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.and()?;
        while self.eat("||") {
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.comparison()?;
        while self.eat("&&") {
            let right = self.comparison()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn comparison(&mut self) -> Result<Expr, ExprError> {
        let left = self.unary()?;
        if self.eat("==") {
            let right = self.unary()?;
            Ok(Expr::Eq(Box::new(left), Box::new(right)))
        } else if self.eat("!=") {
            let right = self.unary()?;
            Ok(Expr::Ne(Box::new(left), Box::new(right)))
        } else {
            Ok(left)
        }
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        self.skip_ws();
        // `!=` is handled by `comparison`; a lone `!` here is negation.
        if self.rest().starts_with('!') && !self.rest().starts_with("!=") {
            self.pos += 1;
            let inner = self.unary()?;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ExprError> {
        self.skip_ws();
        let start = self.pos;
        let Some(c) = self.rest().chars().next() else {
            return Err(self.error_here("unexpected end of expression"));
        };
        if c == '(' {
            self.pos += 1;
            let inner = self.or()?;
            self.expect(")")?;
            return Ok(inner);
        }
        if c == '\'' {
            return self.string();
        }
        if c == '"' {
            return Err(self.error_here("strings use single quotes: 'text'"));
        }
        if !(c.is_ascii_alphabetic() || c == '_') {
            return Err(self.error_here(&format!("unexpected '{c}'")));
        }
        let len = self
            .rest()
            .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_' || ch == '.'))
            .unwrap_or(self.rest().len());
        let name = &self.src[start..start + len];
        self.pos += len;
        self.skip_ws();
        if self.rest().starts_with('(') {
            self.pos += 1;
            return self.call(name, start);
        }
        match name {
            "branch" => Ok(Expr::Var(Var::Branch)),
            "event" => Ok(Expr::Var(Var::Event)),
            "true" => Ok(Expr::Bool(true)),
            "false" => Ok(Expr::Bool(false)),
            "success" | "failure" | "always" | "cancelled" => {
                Err(self.error_at(start, &format!("'{name}' is a function: write {name}()")))
            }
            _ => Err(self.error_at(
                start,
                &format!("unknown name '{name}' (expected branch, event or a function call)"),
            )),
        }
    }

    /// Parses the arguments of `name(`; the opening parenthesis is already consumed.
    fn call(&mut self, name: &str, start: usize) -> Result<Expr, ExprError> {
        let status = match name {
            "success" => Some(Status::Success),
            "failure" => Some(Status::Failure),
            "always" => Some(Status::Always),
            "cancelled" => Some(Status::Cancelled),
            _ => None,
        };
        if let Some(status) = status {
            if !self.eat(")") {
                return Err(self.error_here(&format!("{name}() takes no arguments")));
            }
            return Ok(Expr::Status(status));
        }
        let func = match name {
            "startsWith" => StrFn::StartsWith,
            "endsWith" => StrFn::EndsWith,
            "contains" => StrFn::Contains,
            _ => {
                return Err(self.error_at(start, &format!("unknown function '{name}'")));
            }
        };
        let a = self.or()?;
        if !self.eat(",") {
            return Err(self.error_here(&format!("{name}() takes two arguments")));
        }
        let b = self.or()?;
        if !self.eat(")") {
            return Err(self.error_here(&format!("{name}() takes two arguments")));
        }
        Ok(Expr::Call(func, Box::new(a), Box::new(b)))
    }

    /// A single-quoted literal; `''` is an escaped quote.
    fn string(&mut self) -> Result<Expr, ExprError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.rest().chars().next() else {
                return Err(self.error_at(start, "unterminated string"));
            };
            self.pos += c.len_utf8();
            if c == '\'' {
                if self.rest().starts_with('\'') {
                    self.pos += 1;
                    out.push('\'');
                } else {
                    return Ok(Expr::Str(out));
                }
            } else {
                out.push(c);
            }
        }
    }
}

/// One `${{ ... }}` occurrence: byte range of the whole template and its trimmed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateRef {
    pub start: usize,
    pub end: usize,
    pub reference: String,
}

/// Splits `text` into its `${{ }}` templates; `Err(offset)` points at an unterminated `${{`.
pub(crate) fn scan_templates(text: &str) -> Result<Vec<TemplateRef>, usize> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(found) = text.get(pos..).and_then(|t| t.find("${{")) {
        let start = pos + found;
        let inner_start = start + 3;
        let Some(close) = text.get(inner_start..).and_then(|t| t.find("}}")) else {
            return Err(start);
        };
        let end = inner_start + close + 2;
        out.push(TemplateRef {
            start,
            end,
            reference: text[inner_start..inner_start + close].trim().to_string(),
        });
        pos = end;
    }
    Ok(out)
}

/// The references inside every `${{ ... }}` of `text`, trimmed (`secrets.TOKEN`, `branch`).
pub fn template_refs(text: &str) -> Vec<String> {
    match scan_templates(text) {
        Ok(refs) => refs.into_iter().map(|r| r.reference).collect(),
        // Validation rejects unterminated templates; here just report the complete ones.
        Err(cut) => scan_templates(&text[..cut])
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.reference)
            .collect(),
    }
}

/// Replaces every `${{ ref }}` in `text` with `lookup(ref)`; the first unknown reference is an error.
pub fn interpolate(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, UnknownRef> {
    // An unterminated `${{` (rejected at parse time anyway) is left as literal text.
    let (refs, tail_end) = match scan_templates(text) {
        Ok(refs) => (refs, text.len()),
        Err(cut) => (scan_templates(&text[..cut]).unwrap_or_default(), cut),
    };
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    for r in refs {
        out.push_str(&text[pos..r.start]);
        match lookup(&r.reference) {
            Some(value) => out.push_str(&value),
            None => return Err(UnknownRef(r.reference)),
        }
        pos = r.end;
    }
    out.push_str(&text[pos..tail_end]);
    out.push_str(&text[tail_end..]);
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown reference '{0}'")]
pub struct UnknownRef(pub String);

/// What `${{ }}` references resolve to: the facts of a run (or of the release being deployed)
/// and the project's secrets. The one vocabulary of steps, instances, hooks and `release.run`.
#[derive(Debug, Clone, Copy)]
pub struct Vocabulary<'a> {
    pub project: &'a str,
    pub branch: &'a str,
    pub sha: &'a str,
    pub run_id: i64,
    /// What started the run (`push`, `manual`, `schedule`), or `deploy` for a deployment.
    pub event: &'a str,
    /// The job's id; empty outside a job.
    pub job: &'a str,
    /// `${{ secrets.NAME }}`; empty where secrets must not appear (a command line).
    pub secrets: &'a std::collections::BTreeMap<String, String>,
}

impl Vocabulary<'_> {
    /// The references besides `secrets.NAME`.
    pub const NAMES: &'static [&'static str] = &["branch", "sha", "event", "run_id", "project", "job"];

    pub fn lookup(&self, reference: &str) -> Option<String> {
        if let Some(name) = reference.strip_prefix("secrets.") {
            return self.secrets.get(name).cloned();
        }
        Some(match reference {
            "branch" => self.branch.to_string(),
            "sha" => self.sha.to_string(),
            "event" => self.event.to_string(),
            "run_id" => self.run_id.to_string(),
            "project" => self.project.to_string(),
            "job" => self.job.to_string(),
            _ => return None,
        })
    }

    /// `text` with every `${{ }}` filled in.
    pub fn interpolate(&self, text: &str) -> Result<String, UnknownRef> {
        interpolate(text, |reference| self.lookup(reference))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(branch: &'a str, event: &'a str) -> EvalContext<'a> {
        EvalContext {
            branch,
            event,
            needs_succeeded: true,
            ancestor_failed: false,
            cancelled: false,
        }
    }

    #[test]
    fn the_vocabulary_fills_every_name_and_only_known_secrets() {
        let secrets = std::collections::BTreeMap::from([("TOKEN".to_string(), "s3cret".to_string())]);
        let vocabulary = Vocabulary {
            project: "shop",
            branch: "main",
            sha: "abc",
            run_id: 7,
            event: "deploy",
            job: "",
            secrets: &secrets,
        };
        let filled = vocabulary.interpolate("${{ project }}@${{ branch }}:${{ sha }}/${{ run_id }}/${{ event }}/${{ job }}/${{ secrets.TOKEN }}");
        assert_eq!(filled.unwrap(), "shop@main:abc/7/deploy//s3cret");
        assert_eq!(
            vocabulary.interpolate("${{ secrets.OTHER }}"),
            Err(UnknownRef("secrets.OTHER".into()))
        );
        assert!(
            Vocabulary::NAMES
                .iter()
                .all(|name| vocabulary.lookup(name).is_some())
        );
    }

    #[test]
    fn eval_table() {
        let ok = ctx("main", "push");
        let failed = EvalContext {
            needs_succeeded: false,
            ancestor_failed: true,
            ..ok.clone()
        };
        let cancelled = EvalContext {
            needs_succeeded: true,
            cancelled: true,
            ..ok.clone()
        };
        let feature = ctx("feature/x", "manual");
        // (expression, context, expected)
        let cases: &[(&str, &EvalContext<'_>, bool)] = &[
            ("branch == 'main'", &ok, true),
            ("branch == 'main'", &feature, false),
            ("branch != 'main'", &feature, true),
            ("${{ branch == 'main' }}", &ok, true),
            ("  ${{branch=='main'}}  ", &ok, true),
            // Implicit success(): a plain condition is false once an ancestor failed.
            ("branch == 'main'", &failed, false),
            ("branch == 'main'", &cancelled, false),
            ("true", &failed, false),
            ("failure()", &failed, true),
            ("failure()", &ok, false),
            ("always()", &failed, true),
            ("always()", &cancelled, true),
            ("cancelled()", &cancelled, true),
            ("cancelled()", &ok, false),
            ("success()", &ok, true),
            ("success()", &failed, false),
            ("success()", &cancelled, false),
            ("failure() || branch == 'main'", &failed, true),
            ("failure() && branch == 'dev'", &failed, false),
            ("!cancelled()", &cancelled, false),
            // Precedence: && binds tighter than ||; ! tighter than ==.
            ("branch == 'x' && event == 'push' || event == 'push'", &ok, true),
            (
                "branch == 'x' && (event == 'push' || event == 'push')",
                &ok,
                false,
            ),
            (
                "event == 'manual' || branch == 'main' && event == 'nope'",
                &ok,
                false,
            ),
            ("!(branch == 'main')", &ok, false),
            ("!branch", &ok, false),
            ("!''", &ok, true),
            ("branch", &ok, true),
            ("''", &ok, false),
            ("'it''s' == 'it''s'", &ok, true),
            ("startsWith(branch, 'release/')", &ok, false),
            ("startsWith(branch, 'feature/')", &feature, true),
            ("endsWith(branch, '/x')", &feature, true),
            ("contains(branch, 'ture')", &feature, true),
            ("contains('abc', 'B')", &ok, false),
            ("event == 'schedule' || event == 'manual'", &feature, true),
            ("true == true", &ok, true),
            ("false", &ok, false),
            ("success() == false", &failed, true),
        ];
        for (text, ctx, want) in cases {
            let cond = Condition::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(cond.eval(ctx), *want, "{text} with {ctx:?}");
            assert_eq!(cond.source(), *text);
        }
    }

    #[test]
    fn parse_error_table() {
        // (expression, offset, message)
        let cases: &[(&str, usize, &str)] = &[
            ("", 0, "empty expression"),
            ("${{ }}", 4, "empty expression"),
            ("branch ==", 9, "unexpected end of expression"),
            ("branch == 'main", 10, "unterminated string"),
            ("branch == \"main\"", 10, "strings use single quotes: 'text'"),
            ("(branch == 'a'", 14, "expected ')', found end of expression"),
            ("branch == 'a')", 13, "unexpected ')'"),
            (
                "ref == 'a'",
                0,
                "unknown name 'ref' (expected branch, event or a function call)",
            ),
            (
                "github.ref == 'a'",
                0,
                "unknown name 'github.ref' (expected branch, event or a function call)",
            ),
            ("${{ foo() }}", 4, "unknown function 'foo'"),
            ("success", 0, "'success' is a function: write success()"),
            ("success(1)", 8, "success() takes no arguments"),
            ("startsWith(branch)", 17, "startsWith() takes two arguments"),
            ("branch = 'a'", 7, "unexpected '='"),
            ("branch && && event", 10, "unexpected '&'"),
            ("# x", 0, "unexpected '#'"),
        ];
        for (text, offset, message) in cases {
            let err = Condition::parse(text).expect_err(text);
            assert_eq!((err.offset, err.message.as_str()), (*offset, *message), "{text}");
        }
    }

    #[test]
    fn template_refs_table() {
        let cases: &[(&str, &[&str])] = &[
            ("plain", &[]),
            ("${{ branch }}", &["branch"]),
            ("a ${{secrets.TOKEN}} b ${{ sha }}", &["secrets.TOKEN", "sha"]),
            ("${{ x }} ${{ unterminated", &["x"]),
            ("$ {{ no }} ${ {no} }", &[]),
            ("${{ a }}${{ b }}", &["a", "b"]),
        ];
        for (text, want) in cases {
            assert_eq!(template_refs(text), *want, "{text}");
        }
    }

    #[test]
    fn interpolate_table() {
        let lookup = |r: &str| match r {
            "branch" => Some("main".to_string()),
            "secrets.TOKEN" => Some("s3cr3t".to_string()),
            _ => None,
        };
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("no refs", Ok("no refs")),
            ("deploy-${{ branch }}", Ok("deploy-main")),
            ("${{branch}}/${{ secrets.TOKEN }}", Ok("main/s3cr3t")),
            ("é${{ branch }}ü", Ok("émainü")),
            ("x ${{ nope }} y", Err("nope")),
            ("${{ branch }} ${{ open", Ok("main ${{ open")),
        ];
        for (text, want) in cases {
            let got = interpolate(text, lookup);
            match want {
                Ok(s) => assert_eq!(got, Ok(s.to_string()), "{text}"),
                Err(r) => assert_eq!(got, Err(UnknownRef(r.to_string())), "{text}"),
            }
        }
        assert_eq!(UnknownRef("x".into()).to_string(), "unknown reference 'x'");
    }

    #[test]
    fn scan_reports_unterminated_offset() {
        assert_eq!(scan_templates("ab ${{ x"), Err(3));
        assert_eq!(scan_templates("${{ a }} ${{"), Err(9));
    }
}
