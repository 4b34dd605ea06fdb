//! Python's `ast.literal_eval`, as Ansible's INI inventory plugin applies it to variable values.
//!
//! Ansible's `_parse_value` hands every inline host variable and every `[group:vars]` value to
//! `ast.literal_eval`; when that raises `ValueError` or `SyntaxError` the raw text is kept. This module
//! reimplements the literal subset of Python's expression grammar: ints (decimal, `0x`, `0o`, `0b`,
//! underscores), floats, strings and bytes (all prefixes, escapes, implicit concatenation, triple
//! quotes), `True`/`False`/`None`, tuples, lists, sets, `set()`, dicts, unary `+`/`-` on numbers and
//! parentheses. A dict key or set member that Python cannot hash (a list, dict or set) is a `TypeError`
//! in Python, which Ansible does not catch: it is an error here too.
//!
//! Mapping to YAML values: `None` -> null, bools, ints and floats -> numbers (an int too large for 64
//! bits becomes its decimal string), `str` and `bytes` -> strings, list/tuple/set -> sequences,
//! dict -> mapping. Complex numbers, `...` and the rare escapes this module does not decode
//! (`\N{NAME}`, lone surrogates) make the value stay the raw text.

use crate::Value;
use yaml_serde::{Mapping, Number};

/// Evaluates `text` as a Python literal, as `ast.literal_eval` does.
///
/// Returns `None` when Python would raise (the text is not a literal). For example `"42"` gives the
/// number 42, `"'web'"` the string `web`, `"[1, 'a']"` a sequence, and `"web1"` gives `None`.
pub fn literal_eval(text: &str) -> Option<Value> {
    match eval(text) {
        Outcome::Value(v) => Some(v),
        Outcome::NotLiteral | Outcome::Unhashable(_) => None,
    }
}

/// Ansible's INI `_parse_value`: the literal's value, or the raw text when it is not a literal.
///
/// Fails only where Ansible fails: a literal that Python parses but cannot build because a dict key
/// or set member is unhashable (`{[1]: 2}`).
pub(crate) fn parse_value(text: &str) -> Result<Value, String> {
    match eval(text) {
        Outcome::Value(v) => Ok(v),
        Outcome::NotLiteral => Ok(Value::String(text.to_string())),
        Outcome::Unhashable(kind) => Err(format!("unhashable type `{kind}` in value `{text}`")),
    }
}

/// The result of evaluating a string.
#[derive(Debug)]
enum Outcome {
    Value(Value),
    NotLiteral,
    Unhashable(&'static str),
}

// ---------------------------------------------------------------------------------------------
// Tokens

#[derive(Debug, Clone, PartialEq)]
enum Num {
    Int(IntVal),
    Float(f64),
    Imaginary,
}

#[derive(Debug, Clone, PartialEq)]
enum IntVal {
    Small(u128),
    /// Too large for 128 bits: the decimal digits (or, for other radixes, the literal text).
    Big(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(Num),
    Str(String),
    Bytes(Vec<u8>),
    /// An f-string, or a string this module cannot decode: never a literal.
    Opaque,
    Name(String),
    Ellipsis,
    Op(char),
    Newline,
}

fn is_py_space(c: char) -> bool {
    c == ' ' || c == '\t' || c == '\x0c'
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_continue(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Splits `src` into tokens; `None` is a Python `SyntaxError`.
fn tokenize(src: &[char]) -> Option<Vec<Tok>> {
    let mut toks = Vec::new();
    let mut i = 0;
    let mut depth: usize = 0;
    // At the start of a logical line (after a newline outside brackets), indentation is an error
    // unless the line is blank or a comment.
    let mut line_start = false;
    while i < src.len() {
        let c = src[i];
        if is_py_space(c) {
            if line_start {
                let mut j = i;
                while j < src.len() && is_py_space(src[j]) {
                    j += 1;
                }
                if !matches!(src.get(j), Some('\n' | '\r' | '#')) {
                    // IndentationError: unexpected indent.
                    return None;
                }
            }
            i += 1;
            continue;
        }
        if c != '\n' && c != '\r' && c != '#' {
            line_start = false;
        }
        if c == '#' {
            while i < src.len() && src[i] != '\n' && src[i] != '\r' {
                i += 1;
            }
            continue;
        }
        if c == '\\' {
            // Explicit line joining.
            match (src.get(i + 1), src.get(i + 2)) {
                (Some('\n'), _) => i += 2,
                (Some('\r'), Some('\n')) => i += 3,
                (Some('\r'), _) => i += 2,
                _ => return None,
            }
            if i >= src.len() {
                // A continuation line with nothing after it: unexpected EOF.
                return None;
            }
            continue;
        }
        if c == '\n' || c == '\r' {
            if depth == 0 {
                toks.push(Tok::Newline);
                line_start = true;
            }
            i += 1;
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && src.get(i + 1).is_some_and(char::is_ascii_digit)) {
            let (num, end) = lex_number(src, i)?;
            if src.get(end).is_some_and(|&c| is_ident_continue(c)) {
                return None;
            }
            toks.push(Tok::Num(num));
            i = end;
            continue;
        }
        if c == '.' {
            if src.get(i + 1) == Some(&'.') && src.get(i + 2) == Some(&'.') {
                toks.push(Tok::Ellipsis);
                i += 3;
            } else {
                toks.push(Tok::Op('.'));
                i += 1;
            }
            continue;
        }
        if c == '\'' || c == '"' {
            let (tok, end) = lex_string(src, i, "")?;
            toks.push(tok);
            i = end;
            continue;
        }
        if is_ident_start(c) {
            let start = i;
            while i < src.len() && is_ident_continue(src[i]) {
                i += 1;
            }
            let word: String = src[start..i].iter().collect();
            if matches!(src.get(i), Some('\'') | Some('"')) && is_string_prefix(&word) {
                let (tok, end) = lex_string(src, i, &word)?;
                toks.push(tok);
                i = end;
            } else {
                toks.push(Tok::Name(word));
            }
            continue;
        }
        match c {
            // CPython's tokenizer: "too many nested parentheses".
            '(' | '[' | '{' if depth >= 200 => return None,
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.checked_sub(1)?,
            _ => {}
        }
        toks.push(Tok::Op(c));
        i += 1;
    }
    if depth != 0 {
        return None;
    }
    Some(toks)
}

fn is_string_prefix(word: &str) -> bool {
    matches!(
        word.to_ascii_lowercase().as_str(),
        "r" | "u" | "b" | "br" | "rb" | "f" | "fr" | "rf"
    ) && word.is_ascii()
}

/// Scans `digit (_? digit)*` with `pred` as the digit class; returns the end, or `start` if no digit.
fn scan_digits(src: &[char], start: usize, pred: impl Fn(char) -> bool) -> usize {
    let mut i = start;
    if i >= src.len() || !pred(src[i]) {
        return start;
    }
    i += 1;
    loop {
        if i < src.len() && pred(src[i]) {
            i += 1;
        } else if i + 1 < src.len() && src[i] == '_' && pred(src[i + 1]) {
            i += 2;
        } else {
            return i;
        }
    }
}

fn lex_number(src: &[char], start: usize) -> Option<(Num, usize)> {
    let c = src[start];
    let radix = match (c, src.get(start + 1)) {
        ('0', Some('x' | 'X')) => Some(16),
        ('0', Some('o' | 'O')) => Some(8),
        ('0', Some('b' | 'B')) => Some(2),
        _ => None,
    };
    if let Some(radix) = radix {
        // 0x(_?hex)+
        let mut i = start + 2;
        let digits_start = i;
        loop {
            if i < src.len() && src[i].is_digit(radix) {
                i += 1;
            } else if i + 1 < src.len() && src[i] == '_' && src[i + 1].is_digit(radix) {
                i += 2;
            } else {
                break;
            }
        }
        if i == digits_start {
            return None;
        }
        if src.get(i).is_some_and(|c| c.is_ascii_digit()) {
            // e.g. 0b102
            return None;
        }
        let digits: String = src[digits_start..i].iter().filter(|&&c| c != '_').collect();
        let val = match u128::from_str_radix(&digits, radix) {
            Ok(v) => IntVal::Small(v),
            Err(_) => IntVal::Big(src[start..i].iter().collect()),
        };
        return Some((Num::Int(val), i));
    }
    let int_end = scan_digits(src, start, |c| c.is_ascii_digit());
    let mut i = int_end;
    let mut is_float = false;
    if src.get(i) == Some(&'.') {
        is_float = true;
        i += 1;
        i = scan_digits(src, i, |c| c.is_ascii_digit());
    }
    if matches!(src.get(i), Some('e') | Some('E')) {
        let mut j = i + 1;
        if matches!(src.get(j), Some('+') | Some('-')) {
            j += 1;
        }
        let end = scan_digits(src, j, |c| c.is_ascii_digit());
        if end == j {
            return None;
        }
        is_float = true;
        i = end;
    }
    if matches!(src.get(i), Some('j') | Some('J')) {
        return Some((Num::Imaginary, i + 1));
    }
    let text: String = src[start..i].iter().filter(|&&c| c != '_').collect();
    if is_float {
        let v: f64 = text.parse().ok()?;
        return Some((Num::Float(v), i));
    }
    // Decimal integer: no leading zeros unless all zeros.
    if text.len() > 1 && text.starts_with('0') && text.chars().any(|c| c != '0') {
        return None;
    }
    let val = match text.parse::<u128>() {
        Ok(v) => IntVal::Small(v),
        Err(_) => IntVal::Big(text),
    };
    Some((Num::Int(val), i))
}

/// Lexes a string literal whose opening quote is at `start`.
fn lex_string(src: &[char], start: usize, prefix: &str) -> Option<(Tok, usize)> {
    let lower = prefix.to_ascii_lowercase();
    let raw = lower.contains('r');
    let bytes = lower.contains('b');
    let fstring = lower.contains('f');
    let q = src[start];
    let triple = src.get(start + 1) == Some(&q) && src.get(start + 2) == Some(&q);
    let mut i = if triple { start + 3 } else { start + 1 };
    let mut out = String::new();
    let mut opaque = fstring;
    loop {
        let c = *src.get(i)?;
        if c == q {
            if !triple {
                i += 1;
                break;
            }
            if src.get(i + 1) == Some(&q) && src.get(i + 2) == Some(&q) {
                i += 3;
                break;
            }
            out.push(c);
            i += 1;
            continue;
        }
        if !triple && (c == '\n' || c == '\r') {
            return None;
        }
        if bytes && !c.is_ascii() {
            return None;
        }
        if c != '\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let e = *src.get(i + 1)?;
        if raw || fstring {
            // The backslash stays; it only stops the next character from ending the string.
            out.push('\\');
            if bytes && !e.is_ascii() {
                return None;
            }
            out.push(e);
            i += 2;
            continue;
        }
        i += 2;
        match e {
            '\n' => {}
            '\r' => {
                if src.get(i) == Some(&'\n') {
                    i += 1;
                }
            }
            '\\' | '\'' | '"' => out.push(e),
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'f' => out.push('\x0c'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\x0b'),
            '0'..='7' => {
                let mut v = e.to_digit(8)?;
                let mut n = 1;
                while n < 3 {
                    match src.get(i).and_then(|c| c.to_digit(8)) {
                        Some(d) => {
                            v = v * 8 + d;
                            i += 1;
                            n += 1;
                        }
                        None => break,
                    }
                }
                if bytes {
                    v &= 0xff;
                }
                out.push(char::from_u32(v)?);
            }
            'x' => {
                let h: String = src.get(i..i + 2)?.iter().collect();
                if !h.chars().all(|c| c.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(char::from_u32(u32::from_str_radix(&h, 16).ok()?)?);
                i += 2;
            }
            'u' | 'U' if !bytes => {
                let n = if e == 'u' { 4 } else { 8 };
                let h: String = src.get(i..i + n)?.iter().collect();
                if !h.chars().all(|c| c.is_ascii_hexdigit()) {
                    return None;
                }
                let v = u32::from_str_radix(&h, 16).ok()?;
                if v > 0x10ffff {
                    return None;
                }
                match char::from_u32(v) {
                    Some(ch) => out.push(ch),
                    // A lone surrogate: Python accepts it, a Rust string cannot hold it.
                    None => opaque = true,
                }
                i += n;
            }
            'N' if !bytes => {
                // \N{NAME}: valid Python, but decoding needs the Unicode name table.
                if src.get(i) != Some(&'{') {
                    return None;
                }
                let close = src[i..].iter().position(|&c| c == '}')?;
                i += close + 1;
                opaque = true;
            }
            other => {
                out.push('\\');
                out.push(other);
            }
        }
    }
    let tok = if opaque {
        Tok::Opaque
    } else if bytes {
        // Chars are all < 256 here: escapes were masked and literal chars are ASCII.
        Tok::Bytes(out.chars().map(|c| c as u32 as u8).collect())
    } else {
        Tok::Str(out)
    };
    Some((tok, i))
}

// ---------------------------------------------------------------------------------------------
// Parser: tokens -> nodes (None is a SyntaxError or a construct we treat as non-literal)

#[derive(Debug, Clone)]
enum Node {
    /// A constant: a number, string, bytes, `True`/`False`/`None` or `...`.
    Const(Const),
    /// `+x`/`-x` on a numeric constant.
    Signed(Num, bool),
    /// `a + bj`: a complex number.
    Complex,
    /// Anything Python parses but `literal_eval` refuses (a name, an f-string, a call, ...).
    NonLiteral,
    Tuple(Vec<Node>),
    List(Vec<Node>),
    Set(Vec<Node>),
    Dict(Vec<(Node, Node)>),
}

#[derive(Debug, Clone)]
enum Const {
    Num(Num),
    Str(String),
    Bytes(Vec<u8>),
    Bool(bool),
    None,
    Ellipsis,
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    /// The atom just parsed was the name `set` (for `set()`, the empty set).
    last_name_was_set: bool,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn peek_op(&self) -> Option<char> {
        match self.peek() {
            Some(Tok::Op(c)) => Some(*c),
            _ => None,
        }
    }

    fn eat_op(&mut self, c: char) -> bool {
        if self.peek_op() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// `expressions`: one expression, or a tuple of them.
    fn exprlist(&mut self, terminators: &[char]) -> Option<Node> {
        let first = self.expr()?;
        if self.peek_op() != Some(',') {
            return Some(first);
        }
        let mut items = vec![first];
        while self.eat_op(',') {
            if self.at_end_of_list(terminators) {
                break;
            }
            items.push(self.expr()?);
        }
        Some(Node::Tuple(items))
    }

    fn at_end_of_list(&self, terminators: &[char]) -> bool {
        match self.peek() {
            None | Some(Tok::Newline) => true,
            Some(Tok::Op(c)) => terminators.contains(c),
            _ => false,
        }
    }

    fn expr(&mut self) -> Option<Node> {
        let left = self.unary()?;
        match self.peek_op() {
            Some('+' | '-') => {
                self.pos += 1;
                let right = self.unary()?;
                let left_ok = matches!(
                    left,
                    Node::Const(Const::Num(Num::Int(_) | Num::Float(_)))
                        | Node::Signed(Num::Int(_) | Num::Float(_), _)
                );
                let right_ok = matches!(right, Node::Const(Const::Num(Num::Imaginary)));
                let node = if left_ok && right_ok {
                    Node::Complex
                } else {
                    Node::NonLiteral
                };
                // Anything further (`1+2j+3j`, `1+2*3`) is a longer expression: not a literal.
                self.rest_of_expression(node)
            }
            _ => self.rest_of_expression(left),
        }
    }

    /// After a complete operand: a further binary operator, call, subscript or attribute makes the
    /// whole expression non-literal (still valid Python syntax as long as it parses).
    fn rest_of_expression(&mut self, node: Node) -> Option<Node> {
        match self.peek_op() {
            Some(
                '+' | '-' | '*' | '/' | '%' | '@' | '&' | '|' | '^' | '<' | '>' | '=' | '!' | '.',
            ) => {
                // A binary operation or comparison: consume the rest as an opaque operand chain.
                self.skip_operand_chain()?;
                Some(Node::NonLiteral)
            }
            _ => Some(node),
        }
    }

    /// Consumes `op operand (op operand)*` loosely enough to tell literal from non-literal; the
    /// exact syntax does not matter because the result is not a literal either way.
    fn skip_operand_chain(&mut self) -> Option<()> {
        while let Some(c) = self.peek_op() {
            if !matches!(
                c,
                '+' | '-'
                    | '*'
                    | '/'
                    | '%'
                    | '@'
                    | '&'
                    | '|'
                    | '^'
                    | '<'
                    | '>'
                    | '='
                    | '!'
                    | '.'
                    | '~'
            ) {
                break;
            }
            self.pos += 1;
            while matches!(
                self.peek_op(),
                Some('*' | '/' | '=' | '<' | '>' | '-' | '+' | '~')
            ) {
                self.pos += 1;
            }
            self.unary()?;
        }
        Some(())
    }

    fn unary(&mut self) -> Option<Node> {
        // Iterative, so that `------1` cannot exhaust the stack. Only one `+`/`-` directly on a
        // number is a literal; `--1`, `-(-1)` and `~1` are not.
        let mut ops = Vec::new();
        while let Some(op @ ('+' | '-' | '~')) = self.peek_op() {
            self.pos += 1;
            ops.push(op);
        }
        let operand = self.postfix()?;
        Some(match (ops.as_slice(), operand) {
            ([], node) => node,
            ([op @ ('+' | '-')], Node::Const(Const::Num(n))) => Node::Signed(n, *op == '-'),
            _ => Node::NonLiteral,
        })
    }

    /// An atom followed by calls and subscripts.
    fn postfix(&mut self) -> Option<Node> {
        let mut node = self.atom()?;
        loop {
            match self.peek_op() {
                Some('(') => {
                    self.pos += 1;
                    let is_set_name = matches!(&node, Node::NonLiteral) && self.last_name_was_set;
                    let args = self.list_items(')')?;
                    node = if is_set_name && args.is_empty() {
                        Node::Set(Vec::new())
                    } else {
                        Node::NonLiteral
                    };
                }
                Some('[') => {
                    self.pos += 1;
                    self.list_items(']')?;
                    node = Node::NonLiteral;
                }
                _ => break,
            }
            self.last_name_was_set = false;
        }
        self.last_name_was_set = false;
        Some(node)
    }

    fn atom(&mut self) -> Option<Node> {
        let tok = self.peek()?.clone();
        self.pos += 1;
        match tok {
            Tok::Num(n) => Some(Node::Const(Const::Num(n))),
            Tok::Str(_) | Tok::Bytes(_) | Tok::Opaque => {
                // Implicit concatenation of adjacent string literals.
                let mut parts = vec![tok];
                while let Some(t @ (Tok::Str(_) | Tok::Bytes(_) | Tok::Opaque)) = self.peek() {
                    parts.push(t.clone());
                    self.pos += 1;
                }
                concat_strings(parts)
            }
            Tok::Name(n) => Some(match n.as_str() {
                "True" => Node::Const(Const::Bool(true)),
                "False" => Node::Const(Const::Bool(false)),
                "None" => Node::Const(Const::None),
                "set" => {
                    self.last_name_was_set = true;
                    return Some(Node::NonLiteral);
                }
                _ => Node::NonLiteral,
            }),
            Tok::Ellipsis => Some(Node::Const(Const::Ellipsis)),
            Tok::Op('(') => {
                if self.eat_op(')') {
                    return Some(Node::Tuple(Vec::new()));
                }
                let inner = self.exprlist(&[')'])?;
                if !self.eat_op(')') {
                    return None;
                }
                Some(inner)
            }
            Tok::Op('[') => {
                let items = self.list_items(']')?;
                Some(Node::List(items))
            }
            Tok::Op('{') => self.brace(),
            Tok::Op(_) | Tok::Newline => None,
        }
    }

    /// Comma-separated expressions up to `close` (consumed); trailing comma allowed.
    fn list_items(&mut self, close: char) -> Option<Vec<Node>> {
        let mut items = Vec::new();
        loop {
            if self.eat_op(close) {
                return Some(items);
            }
            items.push(self.expr()?);
            if self.eat_op(',') {
                continue;
            }
            if self.eat_op(close) {
                return Some(items);
            }
            return None;
        }
    }

    fn brace(&mut self) -> Option<Node> {
        if self.eat_op('}') {
            return Some(Node::Dict(Vec::new()));
        }
        let first = self.expr()?;
        if self.eat_op(':') {
            let value = self.expr()?;
            let mut pairs = vec![(first, value)];
            loop {
                if self.eat_op('}') {
                    return Some(Node::Dict(pairs));
                }
                if !self.eat_op(',') {
                    return None;
                }
                if self.eat_op('}') {
                    return Some(Node::Dict(pairs));
                }
                let k = self.expr()?;
                if !self.eat_op(':') {
                    return None;
                }
                let v = self.expr()?;
                pairs.push((k, v));
            }
        }
        let mut items = vec![first];
        loop {
            if self.eat_op('}') {
                return Some(Node::Set(items));
            }
            if !self.eat_op(',') {
                return None;
            }
            if self.eat_op('}') {
                return Some(Node::Set(items));
            }
            items.push(self.expr()?);
        }
    }
}

impl Parser {
    fn new(toks: Vec<Tok>) -> Self {
        Parser {
            toks,
            pos: 0,
            last_name_was_set: false,
        }
    }
}

fn concat_strings(parts: Vec<Tok>) -> Option<Node> {
    let any_bytes = parts.iter().any(|t| matches!(t, Tok::Bytes(_)));
    let any_text = parts.iter().any(|t| matches!(t, Tok::Str(_)));
    if any_bytes && (any_text || parts.iter().any(|t| matches!(t, Tok::Opaque))) {
        // Mixing bytes and str is a SyntaxError; an opaque part is either.
        return None;
    }
    if parts.iter().any(|t| matches!(t, Tok::Opaque)) {
        return Some(Node::NonLiteral);
    }
    if any_bytes {
        let mut out = Vec::new();
        for p in parts {
            if let Tok::Bytes(b) = p {
                out.extend(b);
            }
        }
        return Some(Node::Const(Const::Bytes(out)));
    }
    let mut out = String::new();
    for p in parts {
        if let Tok::Str(s) = p {
            out.push_str(&s);
        }
    }
    Some(Node::Const(Const::Str(out)))
}

// ---------------------------------------------------------------------------------------------
// Evaluation: nodes -> values, in Python's order, with hashability checks

enum EvalError {
    NotLiteral,
    Unhashable(&'static str),
}

fn eval(text: &str) -> Outcome {
    // literal_eval strips leading spaces and tabs only.
    let trimmed = text.trim_start_matches([' ', '\t']);
    // Fast path: a bare word (`web13`, `standby1`) is a name, never a literal.
    let mut chars = trimmed.chars();
    if chars.next().is_some_and(is_ident_start)
        && chars.all(is_ident_continue)
        && !matches!(trimmed, "True" | "False" | "None")
    {
        return Outcome::NotLiteral;
    }
    let src: Vec<char> = trimmed.chars().collect();
    let Some(toks) = tokenize(&src) else {
        return Outcome::NotLiteral;
    };
    let mut p = Parser::new(toks);
    while p.peek() == Some(&Tok::Newline) {
        p.pos += 1;
    }
    if p.peek().is_none() {
        return Outcome::NotLiteral;
    }
    let Some(node) = p.exprlist(&[]) else {
        return Outcome::NotLiteral;
    };
    while p.peek() == Some(&Tok::Newline) {
        p.pos += 1;
    }
    if p.peek().is_some() {
        return Outcome::NotLiteral;
    }
    match to_value(&node) {
        Ok(Some(v)) => Outcome::Value(v),
        Ok(None) | Err(EvalError::NotLiteral) => Outcome::NotLiteral,
        Err(EvalError::Unhashable(k)) => Outcome::Unhashable(k),
    }
}

/// Converts a node; `Ok(None)` means a literal that has no YAML form (complex, `...`): the whole
/// value then stays raw text.
fn to_value(node: &Node) -> Result<Option<Value>, EvalError> {
    Ok(Some(match node {
        Node::NonLiteral => return Err(EvalError::NotLiteral),
        Node::Complex => return Ok(None),
        Node::Const(c) => match c {
            Const::Num(n) => match num_value(n, false) {
                Some(v) => v,
                None => return Ok(None),
            },
            Const::Str(s) => Value::String(s.clone()),
            Const::Bytes(b) => match String::from_utf8(b.clone()) {
                Ok(s) => Value::String(s),
                Err(_) => return Ok(None),
            },
            Const::Bool(b) => Value::Bool(*b),
            Const::None => Value::Null,
            Const::Ellipsis => return Ok(None),
        },
        Node::Signed(n, neg) => match num_value(n, *neg) {
            Some(v) => v,
            None => return Ok(None),
        },
        Node::Tuple(items) | Node::List(items) => {
            let mut seq = Vec::with_capacity(items.len());
            let mut representable = true;
            for item in items {
                match to_value(item)? {
                    Some(v) => seq.push(v),
                    None => representable = false,
                }
            }
            if !representable {
                return Ok(None);
            }
            Value::Sequence(seq)
        }
        Node::Set(items) => {
            let mut seq: Vec<Value> = Vec::with_capacity(items.len());
            let mut representable = true;
            for item in items {
                let v = to_value(item)?;
                check_hashable(item)?;
                match v {
                    Some(v) => {
                        if !seq.contains(&v) {
                            seq.push(v);
                        }
                    }
                    None => representable = false,
                }
            }
            if !representable {
                return Ok(None);
            }
            Value::Sequence(seq)
        }
        Node::Dict(pairs) => {
            // Later duplicate keys overwrite earlier values (which may have had no YAML form).
            let mut entries: Vec<(Value, Option<Value>)> = Vec::new();
            let mut representable = true;
            for (k, v) in pairs {
                let kv = to_value(k)?;
                let vv = to_value(v)?;
                check_hashable(k)?;
                match kv {
                    Some(kv) => match entries.iter_mut().find(|(key, _)| *key == kv) {
                        Some(slot) => slot.1 = vv,
                        None => entries.push((kv, vv)),
                    },
                    None => representable = false,
                }
            }
            let mut map = Mapping::new();
            for (k, v) in entries {
                match v {
                    Some(v) => {
                        map.insert(k, v);
                    }
                    None => representable = false,
                }
            }
            if !representable {
                return Ok(None);
            }
            Value::Mapping(map)
        }
    }))
}

fn check_hashable(node: &Node) -> Result<(), EvalError> {
    match node {
        Node::List(_) => Err(EvalError::Unhashable("list")),
        Node::Dict(_) => Err(EvalError::Unhashable("dict")),
        Node::Set(_) => Err(EvalError::Unhashable("set")),
        Node::Tuple(items) => items.iter().try_for_each(check_hashable),
        _ => Ok(()),
    }
}

fn num_value(n: &Num, neg: bool) -> Option<Value> {
    match n {
        Num::Imaginary => None,
        Num::Float(f) => Some(Value::Number(Number::from(if neg { -f } else { *f }))),
        Num::Int(IntVal::Small(v)) => {
            if neg {
                if *v <= i64::MAX as u128 + 1 {
                    // -(2^63) fits.
                    let x = -(*v as i128);
                    Some(Value::Number(Number::from(x as i64)))
                } else {
                    Some(Value::String(format!("-{v}")))
                }
            } else if let Ok(x) = u64::try_from(*v) {
                if let Ok(x) = i64::try_from(x) {
                    Some(Value::Number(Number::from(x)))
                } else {
                    Some(Value::Number(Number::from(x)))
                }
            } else {
                Some(Value::String(v.to_string()))
            }
        }
        Num::Int(IntVal::Big(s)) => {
            Some(Value::String(if neg { format!("-{s}") } else { s.clone() }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(v: &str) -> Value {
        Value::String(v.to_string())
    }

    fn n(v: i64) -> Value {
        Value::Number(Number::from(v))
    }

    fn f(v: f64) -> Value {
        Value::Number(Number::from(v))
    }

    fn seq(v: Vec<Value>) -> Value {
        Value::Sequence(v)
    }

    #[test]
    fn numbers() {
        assert_eq!(literal_eval("42"), Some(n(42)));
        assert_eq!(literal_eval("-5"), Some(n(-5)));
        assert_eq!(literal_eval("+3"), Some(n(3)));
        assert_eq!(literal_eval("- 1"), Some(n(-1)));
        assert_eq!(literal_eval("-(1)"), Some(n(-1)));
        assert_eq!(literal_eval("1_000"), Some(n(1000)));
        assert_eq!(literal_eval("0x1f"), Some(n(31)));
        assert_eq!(literal_eval("0x_1"), Some(n(1)));
        assert_eq!(literal_eval("0o17"), Some(n(15)));
        assert_eq!(literal_eval("0b101"), Some(n(5)));
        assert_eq!(literal_eval("00"), Some(n(0)));
        assert_eq!(literal_eval("1e3"), Some(f(1000.0)));
        assert_eq!(literal_eval("1."), Some(f(1.0)));
        assert_eq!(literal_eval(".5"), Some(f(0.5)));
        assert_eq!(literal_eval("09.5"), Some(f(9.5)));
        assert_eq!(literal_eval("+1.5"), Some(f(1.5)));
        assert_eq!(literal_eval("-9223372036854775808"), Some(n(i64::MIN)));
        assert_eq!(
            literal_eval("18446744073709551615"),
            Some(Value::Number(Number::from(u64::MAX)))
        );
        assert_eq!(
            literal_eval("99999999999999999999999999999"),
            Some(s("99999999999999999999999999999"))
        );
        assert!(
            matches!(literal_eval("1e400"), Some(Value::Number(x)) if x.as_f64() == Some(f64::INFINITY))
        );
    }

    #[test]
    fn not_numbers() {
        for t in [
            "09", "1_", "1__0", "1e", "0x", "0b102", "1abc", "1..2", "--1", "-True", "1 2", "5 ;",
            "12:30",
        ] {
            assert_eq!(literal_eval(t), None, "{t}");
        }
        assert_eq!(literal_eval("192.168.33.15"), None);
    }

    #[test]
    fn keywords() {
        assert_eq!(literal_eval("True"), Some(Value::Bool(true)));
        assert_eq!(literal_eval("False"), Some(Value::Bool(false)));
        assert_eq!(literal_eval("None"), Some(Value::Null));
        assert_eq!(literal_eval("true"), None);
        assert_eq!(literal_eval("yes"), None);
        assert_eq!(literal_eval("..."), None);
    }

    #[test]
    fn strings() {
        assert_eq!(literal_eval("'app1'"), Some(s("app1")));
        assert_eq!(literal_eval("\"a b\""), Some(s("a b")));
        assert_eq!(literal_eval("'a' 'b'"), Some(s("ab")));
        assert_eq!(literal_eval("'a' b'b'"), None);
        assert_eq!(literal_eval("u'x'"), Some(s("x")));
        assert_eq!(literal_eval("b'x\\x41'"), Some(s("xA")));
        assert_eq!(literal_eval("r'\\n'"), Some(s("\\n")));
        assert_eq!(literal_eval("r'\\''"), Some(s("\\'")));
        assert_eq!(literal_eval("'\\n\\t\\\\\\''"), Some(s("\n\t\\'")));
        assert_eq!(
            literal_eval("'\\101\\x42\\u0043\\U00000044'"),
            Some(s("ABCD"))
        );
        assert_eq!(literal_eval("'\\777'"), Some(s("\u{1ff}")));
        assert_eq!(literal_eval("'\\d'"), Some(s("\\d")));
        assert_eq!(literal_eval("'''a\nb'''"), Some(s("a\nb")));
        assert_eq!(literal_eval("\"\"\"x\"y\"\"\""), Some(s("x\"y")));
        assert_eq!(literal_eval("'a\nb'"), None);
        assert_eq!(literal_eval("'\\x4'"), None);
        assert_eq!(literal_eval("b'\u{e9}'"), None);
        assert_eq!(literal_eval("f'x'"), None);
        assert_eq!(literal_eval("x'a'"), None);
        assert_eq!(literal_eval("'unterminated"), None);
        assert_eq!(literal_eval("'\u{e9}t\u{e9}'"), Some(s("\u{e9}t\u{e9}")));
        assert_eq!(literal_eval("\"['standby1']\""), Some(s("['standby1']")));
    }

    #[test]
    fn containers() {
        assert_eq!(literal_eval("[1, 'a']"), Some(seq(vec![n(1), s("a")])));
        assert_eq!(literal_eval("[1,]"), Some(seq(vec![n(1)])));
        assert_eq!(literal_eval("[]"), Some(seq(vec![])));
        assert_eq!(literal_eval("()"), Some(seq(vec![])));
        assert_eq!(literal_eval("(1,)"), Some(seq(vec![n(1)])));
        assert_eq!(literal_eval("1,"), Some(seq(vec![n(1)])));
        assert_eq!(literal_eval("1, 2"), Some(seq(vec![n(1), n(2)])));
        assert_eq!(literal_eval("(1)"), Some(n(1)));
        assert_eq!(literal_eval("((1, 2))"), Some(seq(vec![n(1), n(2)])));
        assert_eq!(literal_eval("{1, 2, 1}"), Some(seq(vec![n(1), n(2)])));
        assert_eq!(literal_eval("set()"), Some(seq(vec![])));
        assert_eq!(literal_eval("set(1)"), None);
        assert_eq!(literal_eval("{}"), Some(Value::Mapping(Mapping::new())));
        let mut m = Mapping::new();
        m.insert(s("a"), n(1));
        m.insert(n(2), seq(vec![Value::Null]));
        assert_eq!(
            literal_eval("{'a': 1, 2: [None],}"),
            Some(Value::Mapping(m))
        );
        assert_eq!(literal_eval("{'a': 1, 'a': 2}").unwrap()["a"], n(2));
        assert_eq!(literal_eval("{'a': ..., 'a': 2}").unwrap()["a"], n(2));
        assert_eq!(literal_eval("{'a': 2, 'a': ...}"), None);
        assert_eq!(literal_eval("[\n1,\n2 # c\n]"), Some(seq(vec![n(1), n(2)])));
        assert_eq!(literal_eval("[x]"), None);
        assert_eq!(literal_eval("[1"), None);
        assert_eq!(literal_eval("{1: 2, 3}"), None);
        assert_eq!(literal_eval("[*a]"), None);
        let deep = format!("{}1{}", "[".repeat(199), "]".repeat(199));
        assert!(literal_eval(&deep).is_some());
        let too_deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
        assert_eq!(literal_eval(&too_deep), None);
        assert_eq!(literal_eval(&format!("{}1", "-".repeat(100_000))), None);
        assert_eq!(literal_eval("'abc'[0]"), None);
    }

    #[test]
    fn whitespace_and_comments() {
        assert_eq!(literal_eval("\t 5"), Some(n(5)));
        assert_eq!(literal_eval("5 "), Some(n(5)));
        assert_eq!(literal_eval("8080 # all members"), Some(n(8080)));
        assert_eq!(literal_eval("\n1"), Some(n(1)));
        assert_eq!(literal_eval("1\n"), Some(n(1)));
        assert_eq!(literal_eval("1\n \n"), Some(n(1)));
        assert_eq!(literal_eval("1\n # c"), Some(n(1)));
        assert_eq!(literal_eval("[1,\n 2]"), Some(seq(vec![n(1), n(2)])));
        // IndentationError in Python.
        assert_eq!(literal_eval("1\n "), None);
        assert_eq!(literal_eval("\n 1"), None);
        assert_eq!(literal_eval("2 \\\n 3"), None);
        assert_eq!(literal_eval("[2, \\\n 3]"), Some(seq(vec![n(2), n(3)])));
        assert_eq!(literal_eval("2\\\n"), None);
        assert_eq!(literal_eval(""), None);
        assert_eq!(literal_eval("# only"), None);
    }

    #[test]
    fn complex_and_other_operators_stay_raw() {
        assert_eq!(literal_eval("1+2j"), None);
        assert_eq!(literal_eval("1+2"), None);
        assert_eq!(literal_eval("1 if True else 2"), None);
        assert_eq!(literal_eval("not True"), None);
        assert_eq!(literal_eval("a.b"), None);
        assert_eq!(literal_eval("x = 1"), None);
        assert_eq!(literal_eval("lambda: 1"), None);
    }

    #[test]
    fn parse_value_like_ansible() {
        assert_eq!(parse_value("standby1").unwrap(), s("standby1"));
        assert_eq!(parse_value("'app1'").unwrap(), s("app1"));
        assert_eq!(parse_value("").unwrap(), s(""));
        assert_eq!(parse_value("bar # comment").unwrap(), s("bar # comment"));
        assert!(parse_value("{[1]: 2}").unwrap_err().contains("list"));
        assert!(parse_value("{1, {}}").is_err());
        assert!(parse_value("{(1, [2]): 3}").is_err());
        // A non-literal before the unhashable key wins, as in Python's evaluation order.
        assert_eq!(parse_value("{[1]: x}").unwrap(), s("{[1]: x}"));
        assert_eq!(parse_value("1+2j").unwrap(), s("1+2j"));
    }

    /// Python's `repr` of a string, the way a user quotes a value.
    fn py_repr(v: &str) -> String {
        let mut out = String::from("'");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\'' => out.push_str("\\'"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    out.push_str(&format!("\\x{:02x}", c as u32))
                }
                c => out.push(c),
            }
        }
        out.push('\'');
        out
    }

    proptest! {
        #[test]
        fn round_trips_ints(v in any::<i64>()) {
            prop_assert_eq!(literal_eval(&v.to_string()), Some(n(v)));
        }

        #[test]
        fn round_trips_strings(v in any::<String>()) {
            prop_assert_eq!(literal_eval(&py_repr(&v)), Some(s(&v)));
        }

        #[test]
        fn round_trips_lists_of_ints(v in proptest::collection::vec(any::<i32>(), 0..8)) {
            let text = format!("[{}]", v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", "));
            prop_assert_eq!(literal_eval(&text), Some(seq(v.iter().map(|&x| n(x.into())).collect())));
        }

        #[test]
        fn never_panics(v in any::<String>()) {
            let _ = literal_eval(&v);
            let _ = parse_value(&v);
        }

        #[test]
        fn never_panics_on_python_like_text(v in "[-+*/()\\[\\]{},:'\"\\\\ \\n0-9a-fjxeE._#TrueFalsN]{0,24}") {
            let _ = literal_eval(&v);
        }
    }
}
