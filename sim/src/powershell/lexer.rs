//! Tokenizer for the PowerShell subset.
//!
//! PowerShell's real tokenizer switches between expression and command modes; this one is
//! mode-free and leaves the choice to the parser: `-word` is always a [`Tok::Dash`] (an
//! operator in expressions, a parameter name in commands), barewords are [`Tok::Word`], and
//! every token records whether whitespace preceded it so that `$a.b` (member access) and
//! `$a .b` can be told apart.

use super::syntax::{ParseError, ParseErrorKind};

/// Most tokens a script may have (bounds the work done on a hostile script).
pub(crate) const MAX_TOKENS: usize = 200_000;

/// A token and where it is in the source.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub kind: Tok,
    /// Byte offset of the first character.
    pub start: usize,
    /// Byte offset after the last character.
    pub end: usize,
    /// Whitespace (or a comment) came right before this token.
    pub space_before: bool,
}

/// Token kinds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Newline,
    Semi,
    Pipe,
    Comma,
    LParen,
    RParen,
    LBrace,
    RBrace,
    /// `@(`
    AtParen,
    /// `@{`
    AtBrace,
    /// `$(`
    DollarParen,
    /// `[` directly after a value: an index.
    LBracket,
    RBracket,
    /// `=`, `+=`, `-=`, `*=`, `/=` (the operator character, or `=` for plain assignment).
    Assign(char),
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    /// `!`
    Bang,
    /// `..`
    DotDot,
    /// `.` directly after a value: member access.
    Dot,
    /// `::`
    ColonColon,
    /// `&` (call operator).
    Amp,
    /// `&&` or `||`: not statement separators in Windows PowerShell 5.1.
    ChainOp(&'static str),
    /// A redirection: `>`, `>>`, `2>`, `2>&1`, `*>` ...; the text as written.
    Redirect(String),
    /// `$name`, `${name}`, `$env:NAME` (name without the `$`).
    Variable(String),
    /// `@name` (splatting).
    Splat(String),
    /// A string literal: `'...'` (verbatim) or `"..."` (expandable).
    Str(StrLit),
    /// A number literal.
    Number(Number),
    /// A bareword (command name, argument, member name, keyword).
    Word(String),
    /// `-name` or `-name:` (the name without the dash; `colon` when written `-name:`).
    Dash {
        name: String,
        colon: bool,
    },
    /// `[type]` not directly after a value: a type literal (text inside the brackets).
    TypeLit(String),
    Eof,
}

/// A string literal.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StrLit {
    /// Expandable (`"..."`): the parts to join at run time.
    pub parts: Vec<StrPart>,
    /// Written with double quotes.
    pub expandable: bool,
}

/// A piece of an expandable string.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StrPart {
    /// Literal text (escapes already applied).
    Text(String),
    /// `$name` inside the string.
    Var(String),
    /// `$( ... )` inside the string: the byte range of the inner source.
    Sub { start: usize, end: usize },
}

/// A number literal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Number {
    /// An integer (Int32 when it fits, Int64 otherwise).
    Int(i64),
    /// A double.
    Double(f64),
}

/// Tokenizes `src[start..end]`; offsets in the tokens are absolute.
pub(crate) fn tokenize(src: &str, start: usize, end: usize) -> Result<Vec<Token>, ParseError> {
    let mut lx = Lexer {
        src,
        pos: start,
        end,
        tokens: Vec::new(),
    };
    lx.run()?;
    Ok(lx.tokens)
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    end: usize,
    tokens: Vec<Token>,
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Characters that end a bareword.
fn ends_word(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            ';' | '|' | ',' | '(' | ')' | '{' | '}' | '=' | '"' | '\''
        )
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.src.get(self.pos..self.end)?.chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.src.get(self.pos..self.end)?.chars().nth(n)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn rest(&self) -> &str {
        self.src.get(self.pos..self.end).unwrap_or("")
    }

    fn err(&self, kind: ParseErrorKind, at: usize) -> ParseError {
        ParseError { kind, at }
    }

    /// True when the previous token ends a value, so that `.`, `[` and `::` right after it
    /// are member access, indexing and static access.
    fn after_value(&self, space: bool) -> bool {
        if space {
            return false;
        }
        matches!(
            self.tokens.last().map(|t| &t.kind),
            Some(
                Tok::Variable(_)
                    | Tok::RParen
                    | Tok::RBracket
                    | Tok::RBrace
                    | Tok::Str(_)
                    | Tok::Number(_)
            )
        ) || matches!(
            (
                self.tokens
                    .len()
                    .checked_sub(2)
                    .and_then(|i| self.tokens.get(i)),
                self.tokens.last()
            ),
            (
                Some(Token {
                    kind: Tok::Dot | Tok::ColonColon,
                    ..
                }),
                Some(Token {
                    kind: Tok::Word(_),
                    ..
                })
            )
        )
    }

    fn push(&mut self, kind: Tok, start: usize, space_before: bool) -> Result<(), ParseError> {
        if self.tokens.len() >= MAX_TOKENS {
            return Err(self.err(ParseErrorKind::TooComplex, start));
        }
        self.tokens.push(Token {
            kind,
            start,
            end: self.pos,
            space_before,
        });
        Ok(())
    }

    fn run(&mut self) -> Result<(), ParseError> {
        let mut space = true;
        loop {
            let Some(c) = self.peek() else {
                let at = self.pos;
                self.push(Tok::Eof, at, space)?;
                return Ok(());
            };
            let start = self.pos;
            match c {
                '\n' => {
                    self.bump();
                    self.push(Tok::Newline, start, space)?;
                    space = true;
                    continue;
                }
                c if c.is_whitespace() => {
                    self.bump();
                    space = true;
                    continue;
                }
                '`' if matches!(self.peek_at(1), Some('\n' | '\r')) => {
                    // Line continuation.
                    self.bump();
                    if self.peek() == Some('\r') {
                        self.bump();
                    }
                    if self.peek() == Some('\n') {
                        self.bump();
                    }
                    space = true;
                    continue;
                }
                '#' => {
                    while let Some(c) = self.peek() {
                        if c == '\n' {
                            break;
                        }
                        self.bump();
                    }
                    space = true;
                    continue;
                }
                '<' if self.peek_at(1) == Some('#') => {
                    match self.rest().find("#>") {
                        Some(i) => self.pos += i + 2,
                        None => {
                            return Err(self.err(ParseErrorKind::MissingEndOfComment, start));
                        }
                    }
                    space = true;
                    continue;
                }
                _ => {}
            }
            self.token(c, start, space)?;
            space = false;
        }
    }

    fn token(&mut self, c: char, start: usize, space: bool) -> Result<(), ParseError> {
        let after_value = self.after_value(space);
        let kind = match c {
            ';' => self.single(Tok::Semi),
            ',' => self.single(Tok::Comma),
            '(' => self.single(Tok::LParen),
            ')' => self.single(Tok::RParen),
            '{' => self.single(Tok::LBrace),
            '}' => self.single(Tok::RBrace),
            ']' => self.single(Tok::RBracket),
            '|' if self.peek_at(1) == Some('|') => {
                self.pos += 2;
                Tok::ChainOp("||")
            }
            '|' => self.single(Tok::Pipe),
            '&' if self.peek_at(1) == Some('&') => {
                self.pos += 2;
                Tok::ChainOp("&&")
            }
            '&' => self.single(Tok::Amp),
            '!' => self.single(Tok::Bang),
            '%' => self.single(Tok::Percent),
            '=' => self.single(Tok::Assign('=')),
            '+' | '*' | '/' if self.peek_at(1) == Some('=') => {
                self.pos += 2;
                Tok::Assign(c)
            }
            '*' if self.peek_at(1) == Some('>') => self.redirect(),
            '+' => self.single(Tok::Plus),
            '*' => self.single(Tok::Star),
            '/' => self.single(Tok::Slash),
            '>' => self.redirect(),
            '1'..='6' if self.peek_at(1) == Some('>') => self.redirect(),
            '[' if after_value => self.single(Tok::LBracket),
            '[' => self.type_literal(start)?,
            ':' if self.peek_at(1) == Some(':') => {
                self.pos += 2;
                Tok::ColonColon
            }
            '.' if self.peek_at(1) == Some('.') => {
                self.pos += 2;
                Tok::DotDot
            }
            '.' if after_value && self.peek_at(1).is_some_and(is_ident_char) => {
                self.bump();
                self.push(Tok::Dot, start, space)?;
                let member_start = self.pos;
                let name = self.take_while(is_ident_char);
                self.push(Tok::Word(name), member_start, false)?;
                return Ok(());
            }
            '-' if self.peek_at(1) == Some('=') => {
                self.pos += 2;
                Tok::Assign('-')
            }
            '-' if self
                .peek_at(1)
                .is_some_and(|c| c.is_alphabetic() || c == '_') =>
            {
                self.bump();
                let name = self.take_while(|c| is_ident_char(c) || c == '?');
                let colon = if self.peek() == Some(':') && self.peek_at(1) != Some(':') {
                    self.bump();
                    true
                } else {
                    false
                };
                Tok::Dash { name, colon }
            }
            '-' | '\u{2013}' | '\u{2014}' => self.single(Tok::Minus),
            '$' => self.variable(start)?,
            '@' => match self.peek_at(1) {
                Some('(') => {
                    self.pos += 2;
                    Tok::AtParen
                }
                Some('{') => {
                    self.pos += 2;
                    Tok::AtBrace
                }
                Some('"') | Some('\'') => self.here_string(start)?,
                Some(c) if is_ident_char(c) => {
                    self.bump();
                    Tok::Splat(self.take_while(is_ident_char))
                }
                _ => self.word(),
            },
            '\'' => self.verbatim_string(start)?,
            '"' => self.expandable_string(start)?,
            '0'..='9' => self.number_or_word(),
            _ => self.word(),
        };
        self.push(kind, start, space)
    }

    fn single(&mut self, t: Tok) -> Tok {
        self.bump();
        t
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> String {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if !f(c) {
                break;
            }
            self.bump();
        }
        self.src.get(start..self.pos).unwrap_or("").to_owned()
    }

    fn redirect(&mut self) -> Tok {
        let start = self.pos;
        if matches!(self.peek(), Some('1'..='6' | '*')) {
            self.bump();
        }
        self.bump(); // '>'
        if self.peek() == Some('>') {
            self.bump();
        } else if self.peek() == Some('&') && matches!(self.peek_at(1), Some('1' | '2')) {
            self.pos += 2;
        }
        Tok::Redirect(self.src.get(start..self.pos).unwrap_or(">").to_owned())
    }

    fn word(&mut self) -> Tok {
        let mut text = String::new();
        while let Some(c) = self.peek() {
            if ends_word(c) {
                break;
            }
            if c == '`' {
                self.bump();
                if let Some(e) = self.bump() {
                    text.push(e);
                }
                continue;
            }
            text.push(c);
            self.bump();
        }
        Tok::Word(text)
    }

    fn number_or_word(&mut self) -> Tok {
        let start = self.pos;
        let rest = self.rest();
        let bytes = rest.as_bytes();
        let mut i = 0;
        let mut hex = false;
        if rest.starts_with("0x") || rest.starts_with("0X") {
            hex = true;
            i = 2;
            while bytes.get(i).is_some_and(u8::is_ascii_hexdigit) {
                i += 1;
            }
        } else {
            while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
                i += 1;
                while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
            }
            if matches!(bytes.get(i), Some(b'e' | b'E')) {
                let mut j = i + 1;
                if matches!(bytes.get(j), Some(b'+' | b'-')) {
                    j += 1;
                }
                if bytes.get(j).is_some_and(u8::is_ascii_digit) {
                    while bytes.get(j).is_some_and(u8::is_ascii_digit) {
                        j += 1;
                    }
                    i = j;
                }
            }
        }
        let digits_end = i;
        let lower = rest.get(i..).unwrap_or("").to_ascii_lowercase();
        let mut multiplier: i64 = 1;
        for (suffix, m) in [
            ("kb", 1i64 << 10),
            ("mb", 1 << 20),
            ("gb", 1 << 30),
            ("tb", 1 << 40),
            ("pb", 1 << 50),
        ] {
            if lower.starts_with(suffix) {
                multiplier = m;
                i += 2;
                break;
            }
        }
        let next = rest.get(i..).and_then(|s| s.chars().next());
        let after = rest.get(i + 1..).and_then(|s| s.chars().next());
        let terminated = match next {
            None => true,
            Some('.') => after == Some('.'),
            Some(c) => ends_word(c) || matches!(c, '+' | '-' | '*' | '/' | '%' | ']' | '>'),
        };
        let text = rest.get(..digits_end).unwrap_or("");
        let number = if !terminated {
            None
        } else if hex {
            i64::from_str_radix(text.get(2..).unwrap_or(""), 16)
                .ok()
                .map(Number::Int)
        } else if text.contains(['.', 'e', 'E']) {
            text.parse::<f64>()
                .ok()
                .map(|v| Number::Double(v * multiplier as f64))
        } else {
            match text
                .parse::<i64>()
                .ok()
                .and_then(|v| v.checked_mul(multiplier))
            {
                Some(v) => Some(Number::Int(v)),
                None => text.parse::<f64>().ok().map(Number::Double),
            }
        };
        match number {
            Some(n) => {
                self.pos = start + i;
                Tok::Number(n)
            }
            None => {
                self.pos = start;
                self.word()
            }
        }
    }

    fn type_literal(&mut self, start: usize) -> Result<Tok, ParseError> {
        self.bump(); // '['
        let inner_start = self.pos;
        let mut depth = 1usize;
        while let Some(c) = self.peek() {
            match c {
                '[' => depth += 1,
                ']' => {
                    depth -= 1;
                    if depth == 0 {
                        let text = self.src.get(inner_start..self.pos).unwrap_or("");
                        let text = text.trim().to_owned();
                        self.bump();
                        if text.is_empty() {
                            return Err(self.err(ParseErrorKind::MissingTypename, start + 1));
                        }
                        return Ok(Tok::TypeLit(text));
                    }
                }
                '\n' => break,
                _ => {}
            }
            self.bump();
        }
        Err(self.err(
            ParseErrorKind::EndSquareBracketExpectedAtEndOfAttribute,
            start,
        ))
    }

    fn variable(&mut self, start: usize) -> Result<Tok, ParseError> {
        self.bump(); // '$'
        match self.peek() {
            Some('(') => {
                self.bump();
                Ok(Tok::DollarParen)
            }
            Some('{') => {
                self.bump();
                let name = self.take_while(|c| c != '}');
                if self.bump() != Some('}') {
                    return Err(self.err(ParseErrorKind::MissingEndCurlyBrace, start));
                }
                Ok(Tok::Variable(name))
            }
            Some(c @ ('?' | '$' | '^')) => {
                self.bump();
                Ok(Tok::Variable(c.to_string()))
            }
            Some(c) if is_ident_char(c) => Ok(Tok::Variable(self.variable_name())),
            // A lone `$` is a bareword.
            _ => {
                self.pos = start;
                Ok(self.word())
            }
        }
    }

    /// A variable name at the cursor, with an optional scope or drive (`env:`, `script:`).
    fn variable_name(&mut self) -> String {
        let mut name = self.take_while(is_ident_char);
        if self.peek() == Some(':') && self.peek_at(1).is_some_and(is_ident_char) && is_scope(&name)
        {
            self.bump();
            name.push(':');
            name.push_str(&self.take_while(is_ident_char));
        }
        name
    }

    fn verbatim_string(&mut self, start: usize) -> Result<Tok, ParseError> {
        self.bump();
        let mut text = String::new();
        loop {
            match self.bump() {
                None => {
                    return Err(
                        self.err(ParseErrorKind::TerminatorExpectedAtEndOfString('\''), start)
                    );
                }
                Some('\'') if self.peek() == Some('\'') => {
                    self.bump();
                    text.push('\'');
                }
                Some('\'') => break,
                Some(c) => text.push(c),
            }
        }
        Ok(Tok::Str(StrLit {
            parts: vec![StrPart::Text(text)],
            expandable: false,
        }))
    }

    fn expandable_string(&mut self, start: usize) -> Result<Tok, ParseError> {
        self.bump();
        let parts = self.expandable_parts(start, |lx| {
            if lx.peek() == Some('"') {
                if lx.peek_at(1) == Some('"') {
                    lx.pos += 2;
                    return Some(Some('"'));
                }
                lx.bump();
                return Some(None);
            }
            None
        })?;
        Ok(Tok::Str(StrLit {
            parts,
            expandable: true,
        }))
    }

    /// Reads an expandable body until `close` says it ended (`Some(None)`), or produced an
    /// escaped character (`Some(Some(c))`).
    fn expandable_parts(
        &mut self,
        start: usize,
        close: impl Fn(&mut Self) -> Option<Option<char>>,
    ) -> Result<Vec<StrPart>, ParseError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        loop {
            match close(self) {
                Some(None) => break,
                Some(Some(c)) => {
                    text.push(c);
                    continue;
                }
                None => {}
            }
            let Some(c) = self.peek() else {
                return Err(self.err(ParseErrorKind::TerminatorExpectedAtEndOfString('"'), start));
            };
            match c {
                '`' => {
                    self.bump();
                    let Some(e) = self.bump() else {
                        return Err(
                            self.err(ParseErrorKind::TerminatorExpectedAtEndOfString('"'), start)
                        );
                    };
                    text.push(match e {
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        '0' => '\0',
                        'a' => '\u{7}',
                        'b' => '\u{8}',
                        'e' => '\u{1b}',
                        'f' => '\u{c}',
                        'v' => '\u{b}',
                        other => other,
                    });
                }
                '$' => {
                    let next = self.peek_at(1);
                    if next == Some('(') {
                        let inner_start = self.pos + 2;
                        let inner_end = self.matching_paren(inner_start, start)?;
                        flush(&mut parts, &mut text);
                        parts.push(StrPart::Sub {
                            start: inner_start,
                            end: inner_end,
                        });
                        self.pos = inner_end + 1;
                    } else if next == Some('{') {
                        self.pos += 2;
                        let name = self.take_while(|c| c != '}');
                        if self.bump() != Some('}') {
                            return Err(self.err(ParseErrorKind::MissingEndCurlyBrace, start));
                        }
                        flush(&mut parts, &mut text);
                        parts.push(StrPart::Var(name));
                    } else if next.is_some_and(|c| is_ident_char(c) || c == '?' || c == '$') {
                        self.bump();
                        let name = match self.peek() {
                            Some(c @ ('?' | '$')) => {
                                self.bump();
                                c.to_string()
                            }
                            _ => self.variable_name(),
                        };
                        flush(&mut parts, &mut text);
                        parts.push(StrPart::Var(name));
                    } else {
                        self.bump();
                        text.push('$');
                    }
                }
                _ => {
                    self.bump();
                    text.push(c);
                }
            }
        }
        flush(&mut parts, &mut text);
        Ok(parts)
    }

    /// The offset of the `)` closing a `$(` whose inside starts at `from`.
    fn matching_paren(&self, from: usize, string_start: usize) -> Result<usize, ParseError> {
        let mut depth = 1usize;
        let mut quote: Option<char> = None;
        let body = self.src.get(from..self.end).unwrap_or("");
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match (quote, c) {
                (_, '`') => {
                    chars.next();
                }
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'') => quote = Some('\''),
                (None, '(') => depth += 1,
                (None, ')') => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(from + i);
                    }
                }
                _ => {}
            }
        }
        Err(self.err(
            ParseErrorKind::TerminatorExpectedAtEndOfString('"'),
            string_start,
        ))
    }

    fn here_string(&mut self, start: usize) -> Result<Tok, ParseError> {
        self.bump(); // '@'
        let quote = self.bump().unwrap_or('"');
        // The opening quote must end its line.
        while matches!(self.peek(), Some(' ' | '\t' | '\r')) {
            self.bump();
        }
        if self.bump() != Some('\n') {
            return Err(self.err(
                ParseErrorKind::UnexpectedCharactersAfterHereStringHeader,
                start,
            ));
        }
        let terminator = format!("\n{quote}@");
        let body_start = self.pos;
        let rest = self.rest();
        // An empty here-string ends right away.
        let (body_end, after) = if rest.starts_with(&terminator[1..]) {
            (body_start, body_start + 2)
        } else {
            match rest.find(&terminator) {
                Some(i) => (body_start + i, body_start + i + terminator.len()),
                None => {
                    return Err(self.err(
                        ParseErrorKind::TerminatorExpectedAtEndOfString(quote),
                        start,
                    ));
                }
            }
        };
        let raw = self.src.get(body_start..body_end).unwrap_or("");
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if quote == '\'' {
            self.pos = after;
            return Ok(Tok::Str(StrLit {
                parts: vec![StrPart::Text(raw.to_owned())],
                expandable: false,
            }));
        }
        let raw_end = body_start + raw.len();
        let saved_end = self.end;
        self.end = raw_end;
        let parts = self.expandable_parts(start, |lx| (lx.pos >= lx.end).then_some(None));
        self.end = saved_end;
        self.pos = after;
        Ok(Tok::Str(StrLit {
            parts: parts?,
            expandable: true,
        }))
    }
}

fn flush(parts: &mut Vec<StrPart>, text: &mut String) {
    if !text.is_empty() {
        parts.push(StrPart::Text(std::mem::take(text)));
    }
}

/// Scope and drive prefixes a variable name may carry.
fn is_scope(name: &str) -> bool {
    [
        "env", "global", "script", "local", "private", "variable", "using",
    ]
    .iter()
    .any(|s| s.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<Tok> {
        tokenize(src, 0, src.len())
            .unwrap()
            .into_iter()
            .map(|t| t.kind)
            .collect()
    }

    fn word(s: &str) -> Tok {
        Tok::Word(s.to_owned())
    }

    #[test]
    fn commands_parameters_and_operators() {
        assert_eq!(
            kinds("Get-Service -Name WinRM,Spooler | Where-Object Status -eq Running"),
            vec![
                word("Get-Service"),
                Tok::Dash {
                    name: "Name".into(),
                    colon: false
                },
                word("WinRM"),
                Tok::Comma,
                word("Spooler"),
                Tok::Pipe,
                word("Where-Object"),
                word("Status"),
                Tok::Dash {
                    name: "eq".into(),
                    colon: false
                },
                word("Running"),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn member_access_needs_no_space() {
        assert_eq!(
            kinds("$_.Status.Length $x .y"),
            vec![
                Tok::Variable("_".into()),
                Tok::Dot,
                word("Status"),
                Tok::Dot,
                word("Length"),
                Tok::Variable("x".into()),
                word(".y"),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn numbers_ranges_and_versions() {
        assert_eq!(
            kinds("1..3 1.5 10.0.17763 2kb 0x10 5-2"),
            vec![
                Tok::Number(Number::Int(1)),
                Tok::DotDot,
                Tok::Number(Number::Int(3)),
                Tok::Number(Number::Double(1.5)),
                word("10.0.17763"),
                Tok::Number(Number::Int(2048)),
                Tok::Number(Number::Int(16)),
                Tok::Number(Number::Int(5)),
                Tok::Minus,
                Tok::Number(Number::Int(2)),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn strings_and_expansion_parts() {
        let src = r#"'it''s' "a $env:COMPUTERNAME `$x ""q"" $($y + 1)!""#;
        let toks = kinds(src);
        assert_eq!(
            toks[0],
            Tok::Str(StrLit {
                parts: vec![StrPart::Text("it's".into())],
                expandable: false
            })
        );
        let Tok::Str(s) = &toks[1] else { panic!() };
        assert_eq!(s.parts[0], StrPart::Text("a ".into()));
        assert_eq!(s.parts[1], StrPart::Var("env:COMPUTERNAME".into()));
        assert_eq!(s.parts[2], StrPart::Text(" $x \"q\" ".into()));
        let StrPart::Sub { start, end } = s.parts[3] else {
            panic!()
        };
        assert_eq!(&src[start..end], "$y + 1");
        assert_eq!(s.parts[4], StrPart::Text("!".into()));
    }

    #[test]
    fn comments_type_literals_and_redirections() {
        assert_eq!(
            kinds("[int]$a # note\n<# block #> $b[0] 2>&1 >$null"),
            vec![
                Tok::TypeLit("int".into()),
                Tok::Variable("a".into()),
                Tok::Newline,
                Tok::Variable("b".into()),
                Tok::LBracket,
                Tok::Number(Number::Int(0)),
                Tok::RBracket,
                Tok::Redirect("2>&1".into()),
                Tok::Redirect(">".into()),
                Tok::Variable("null".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn here_strings() {
        let toks = kinds("@'\nline1\nline2\n'@");
        assert_eq!(
            toks[0],
            Tok::Str(StrLit {
                parts: vec![StrPart::Text("line1\nline2".into())],
                expandable: false
            })
        );
        let toks = kinds("@\"\nhi $x\n\"@");
        let Tok::Str(s) = &toks[0] else { panic!() };
        assert_eq!(
            s.parts,
            vec![StrPart::Text("hi ".into()), StrPart::Var("x".into())]
        );
    }

    #[test]
    fn unterminated_string_is_a_parse_error() {
        let e = tokenize("'abc", 0, 4).unwrap_err();
        assert_eq!(
            e.kind,
            ParseErrorKind::TerminatorExpectedAtEndOfString('\'')
        );
        assert_eq!(e.at, 0);
    }
}
