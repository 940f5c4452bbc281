//! The syntax tree of the PowerShell subset and its recursive-descent parser.
//!
//! Grammar and operator precedence follow `about_Operator_Precedence` (PowerShell 5.1): the
//! comma binds tighter than arithmetic, arithmetic tighter than comparison, comparison tighter
//! than `-and`/`-or`. Parse errors carry the error ids and messages Windows PowerShell uses
//! (`ParseException` records, see `records::parse_error`).

use std::rc::Rc;

use super::lexer::{self, Number, StrLit, StrPart, Tok, Token};

/// Deepest nesting of blocks, parentheses and expressions accepted (the parser recurses).
const MAX_DEPTH: usize = 50;

/// Why a script did not parse, and where.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParseError {
    pub kind: ParseErrorKind,
    /// Byte offset of the offending position.
    pub at: usize,
}

/// The parse errors the subset reports (PowerShell's `ParseError.ErrorId` values).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ParseErrorKind {
    TerminatorExpectedAtEndOfString(char),
    MissingEndCurlyBrace,
    MissingEndParenthesisInExpression,
    MissingEndParenthesisInSubexpression,
    MissingEndSquareBracket,
    UnexpectedToken(String),
    ExpectedValueExpression(String),
    MissingAssignmentValue(String),
    EmptyPipeElement,
    ExpressionsMustBeFirstInPipeline,
    MissingEqualsInHashLiteral,
    MissingCatchOrFinally,
    MissingStatementBlock(&'static str),
    MissingOpenParenthesis(&'static str),
    MissingEndParenthesisAfterCondition(&'static str),
    MissingInInForeach,
    MissingCondition(&'static str),
    MissingVariableNameAfterForeach,
    MissingFunctionName,
    MissingEndOfComment,
    MissingTypename,
    EndSquareBracketExpectedAtEndOfAttribute,
    UnexpectedCharactersAfterHereStringHeader,
    InvalidEndOfLine(&'static str),
    MissingArrayIndexExpression,
    MissingFileSpecification,
    ParamBlockNotFirst,
    TooComplex,
}

impl ParseErrorKind {
    /// The `ErrorId` (FullyQualifiedErrorId of the ParseException record).
    pub(crate) fn id(&self) -> &'static str {
        match self {
            Self::TerminatorExpectedAtEndOfString(_) => "TerminatorExpectedAtEndOfString",
            Self::MissingEndCurlyBrace => "MissingEndCurlyBrace",
            Self::MissingEndParenthesisInExpression => "MissingEndParenthesisInExpression",
            Self::MissingEndParenthesisInSubexpression => "MissingEndParenthesisInSubexpression",
            Self::MissingEndSquareBracket => "MissingEndSquareBracket",
            Self::UnexpectedToken(_) => "UnexpectedToken",
            Self::ExpectedValueExpression(_) | Self::MissingAssignmentValue(_) => {
                "ExpectedValueExpression"
            }
            Self::EmptyPipeElement => "EmptyPipeElement",
            Self::ExpressionsMustBeFirstInPipeline => "ExpressionsMustBeFirstInPipeline",
            Self::MissingEqualsInHashLiteral => "MissingEqualsInHashLiteral",
            Self::MissingCatchOrFinally => "MissingCatchOrFinally",
            Self::MissingStatementBlock(_) => "MissingStatementBlock",
            Self::MissingOpenParenthesis(_) => "MissingOpenParenthesisInIfStatement",
            Self::MissingEndParenthesisAfterCondition(_) => "MissingEndParenthesisAfterStatement",
            Self::MissingInInForeach => "MissingInInForeach",
            Self::MissingCondition("if" | "elseif") => "IfStatementMissingCondition",
            Self::MissingCondition(_) => "WhileStatementMissingCondition",
            Self::MissingVariableNameAfterForeach => "MissingVariableNameAfterForeach",
            Self::MissingFunctionName => "MissingNameAfterKeyword",
            Self::MissingEndOfComment => "MissingTerminatorMultiLineComment",
            Self::MissingTypename => "MissingTypename",
            Self::EndSquareBracketExpectedAtEndOfAttribute => {
                "EndSquareBracketExpectedAtEndOfAttribute"
            }
            Self::UnexpectedCharactersAfterHereStringHeader => {
                "UnexpectedCharactersAfterHereStringHeader"
            }
            Self::InvalidEndOfLine(_) => "InvalidEndOfLine",
            Self::MissingArrayIndexExpression => "MissingArrayIndexExpression",
            Self::MissingFileSpecification => "MissingFileSpecification",
            Self::ParamBlockNotFirst => "UnexpectedToken",
            Self::TooComplex => "ScriptTooComplex",
        }
    }

    /// The message PowerShell shows for the error (en-US).
    pub(crate) fn message(&self) -> String {
        match self {
            Self::TerminatorExpectedAtEndOfString(q) => {
                format!("The string is missing the terminator: {q}.")
            }
            Self::MissingEndCurlyBrace => {
                "Missing closing '}' in statement block or type definition.".into()
            }
            Self::MissingEndParenthesisInExpression => "Missing closing ')' in expression.".into(),
            Self::MissingEndParenthesisInSubexpression => {
                "Missing closing ')' in subexpression.".into()
            }
            Self::MissingEndSquareBracket => "Missing ']' after array index expression.".into(),
            Self::UnexpectedToken(t) => format!("Unexpected token '{t}' in expression or statement."),
            Self::ExpectedValueExpression(op) => {
                format!("You must provide a value expression following the '{op}' operator.")
            }
            Self::MissingAssignmentValue(op) => format!(
                "You must provide a value expression on the right-hand side of the '{op}' operator."
            ),
            Self::EmptyPipeElement => "An empty pipe element is not allowed.".into(),
            Self::ExpressionsMustBeFirstInPipeline => {
                "Expressions are only allowed as the first element of a pipeline.".into()
            }
            Self::MissingEqualsInHashLiteral => {
                "Missing '=' operator after key in hash literal.".into()
            }
            Self::MissingCatchOrFinally => {
                "The Try statement is missing its Catch or Finally block.".into()
            }
            Self::MissingStatementBlock(after) => format!("Missing statement block after {after}."),
            Self::MissingOpenParenthesis(kw) => format!("Missing '(' after '{kw}' in {kw} statement."),
            Self::MissingEndParenthesisAfterCondition(kw) => {
                format!("Missing closing ')' after expression in '{kw}' statement.")
            }
            Self::MissingInInForeach => "Missing 'in' after variable in foreach loop.".into(),
            Self::MissingCondition(kw) => {
                format!("Missing condition in {kw} statement after '{kw} ('.")
            }
            Self::MissingVariableNameAfterForeach => {
                "Missing variable name after foreach.".into()
            }
            Self::MissingFunctionName => "Missing name after function keyword.".into(),
            Self::MissingEndOfComment => {
                "Missing the terminator '#>' of a block comment.".into()
            }
            Self::MissingTypename => "Missing type name after '['.".into(),
            Self::EndSquareBracketExpectedAtEndOfAttribute => {
                "Missing ] at end of attribute or type literal.".into()
            }
            Self::UnexpectedCharactersAfterHereStringHeader => {
                "No characters are allowed after a here-string header but before the end of the line."
                    .into()
            }
            Self::InvalidEndOfLine(t) => {
                format!("The token '{t}' is not a valid statement separator in this version.")
            }
            Self::MissingArrayIndexExpression => {
                "Array index expression is missing or not valid.".into()
            }
            Self::MissingFileSpecification => {
                "Missing file specification after redirection operator.".into()
            }
            Self::ParamBlockNotFirst => "Unexpected token 'param' in expression or statement.".into(),
            Self::TooComplex => {
                "The script is too large or too deeply nested for this host.".into()
            }
        }
    }
}

/// A script or script block: `param(...)` and statements.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Block {
    pub params: Vec<ParamDecl>,
    pub body: Vec<Stmt>,
    /// The source text inside the braces (the whole script for the top level).
    pub text: String,
}

/// One `param()` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParamDecl {
    pub name: String,
    /// The type constraint (`string`, `int`, `string[]`, `switch`...), lower-cased.
    pub type_name: Option<String>,
    pub default: Option<Expr>,
}

/// A statement and its source span.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stmt {
    pub kind: StmtKind,
    pub start: usize,
    pub end: usize,
}

/// Statement kinds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StmtKind {
    Pipeline(Pipeline),
    Assign {
        target: Expr,
        op: char,
        value: Box<Stmt>,
    },
    If {
        clauses: Vec<(Pipeline, Block)>,
        otherwise: Option<Block>,
    },
    Foreach {
        var: String,
        items: Pipeline,
        body: Block,
    },
    While {
        cond: Pipeline,
        body: Block,
    },
    Try {
        body: Block,
        catches: Vec<Block>,
        finally: Option<Block>,
    },
    Function {
        name: String,
        body: Rc<Block>,
    },
    Throw(Option<Pipeline>),
    Exit(Option<Pipeline>),
    Return(Option<Pipeline>),
    Break,
    Continue,
}

/// `a | b | c` with the redirections written after its elements.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pipeline {
    pub elements: Vec<Element>,
    pub redirects: Vec<Redirect>,
    pub start: usize,
    pub end: usize,
}

/// One pipeline element.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Element {
    Expr(Expr),
    Command(Command),
}

/// A command invocation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Command {
    pub name: CommandName,
    pub args: Vec<Arg>,
    pub start: usize,
    pub end: usize,
}

/// How a command is named.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CommandName {
    Word(String),
    /// `& <expr>`
    Expr(Expr),
}

/// One command argument.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    /// `-Name` or `-Name:value`.
    Param { name: String, value: Option<Expr> },
    /// A positional value (or the value of the preceding `-Name`, decided when binding).
    Value(Expr),
    /// `@name`
    Splat(String),
}

/// A redirection.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Redirect {
    /// `1`..`6` or `*`.
    pub stream: char,
    /// `None` for `2>&1` (merge into output), otherwise the target (`$null` or a path).
    pub target: Option<Expr>,
}

/// Expressions.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Str(String),
    Int(i64),
    Double(f64),
    Expandable(Vec<XPart>),
    Var(String),
    Member {
        target: Box<Expr>,
        name: String,
        is_static: bool,
    },
    Method {
        target: Box<Expr>,
        name: String,
        args: Vec<Expr>,
        is_static: bool,
    },
    Index {
        target: Box<Expr>,
        index: Box<Expr>,
    },
    Array(Vec<Expr>),
    /// `$( ... )`
    Sub(Vec<Stmt>),
    /// `@( ... )`
    ArraySub(Vec<Stmt>),
    /// `( ... )`
    Paren(Box<Stmt>),
    Hash(Vec<(Expr, Stmt)>),
    ScriptBlock(Rc<Block>),
    Cast(String, Box<Expr>),
    TypeLit(String),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Unary(UnOp, Box<Expr>),
    Range(Box<Expr>, Box<Expr>),
}

/// A piece of an expandable string.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum XPart {
    Text(String),
    Var(String),
    Sub(Vec<Stmt>),
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    And,
    Or,
    Xor,
    Format,
    Join,
    Split,
    Replace { case: bool },
    Cmp(CmpOp, bool),
    Is(bool),
    As,
}

/// Comparison operators (`bool` in [`BinOp::Cmp`] is case-sensitivity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Like,
    NotLike,
    Match,
    NotMatch,
    Contains,
    NotContains,
    In,
    NotIn,
}

/// Unary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnOp {
    Not,
    Neg,
    Plus,
    /// `,x`: a one-element array.
    Comma,
}

/// Parses a whole script.
pub(crate) fn parse_script(src: &str) -> Result<Block, ParseError> {
    let tokens = lexer::tokenize(src, 0, src.len())?;
    let mut p = Parser {
        src,
        tokens,
        pos: 0,
        depth: 0,
        no_comma: false,
    };
    let params = p.param_block_if_any()?;
    let body = p.statements(Tok::Eof)?;
    Ok(Block {
        params,
        body,
        text: src.to_owned(),
    })
}

/// Where a statement list ends.
fn closes(t: &Tok, close: &Tok) -> bool {
    std::mem::discriminant(t) == std::mem::discriminant(close) || matches!(t, Tok::Eof)
}

struct Parser<'a> {
    src: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
    no_comma: bool,
}

impl Parser<'_> {
    fn tok(&self) -> &Tok {
        self.tokens.get(self.pos).map_or(&Tok::Eof, |t| &t.kind)
    }

    fn token(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn peek_kind(&self, n: usize) -> &Tok {
        self.tokens.get(self.pos + n).map_or(&Tok::Eof, |t| &t.kind)
    }

    fn start(&self) -> usize {
        self.token().map_or(self.src.len(), |t| t.start)
    }

    fn prev_end(&self) -> usize {
        self.pos
            .checked_sub(1)
            .and_then(|i| self.tokens.get(i))
            .map_or(0, |t| t.end)
    }

    fn advance(&mut self) {
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
    }

    fn err<T>(&self, kind: ParseErrorKind) -> Result<T, ParseError> {
        Err(ParseError {
            kind,
            at: self.start(),
        })
    }

    fn err_at<T>(&self, kind: ParseErrorKind, at: usize) -> Result<T, ParseError> {
        Err(ParseError { kind, at })
    }

    /// The source text of the current token.
    fn text(&self) -> String {
        match self.token() {
            Some(t) if matches!(t.kind, Tok::Eof) => String::new(),
            Some(t) => self.src.get(t.start..t.end).unwrap_or("").to_owned(),
            None => String::new(),
        }
    }

    fn unexpected<T>(&self) -> Result<T, ParseError> {
        match self.tok() {
            Tok::ChainOp(op) => self.err(ParseErrorKind::InvalidEndOfLine(op)),
            _ => self.err(ParseErrorKind::UnexpectedToken(self.text())),
        }
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err(ParseErrorKind::TooComplex);
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn skip_newlines(&mut self) {
        while matches!(self.tok(), Tok::Newline) {
            self.advance();
        }
    }

    fn word_is(&self, w: &str) -> bool {
        matches!(self.tok(), Tok::Word(x) if x.eq_ignore_ascii_case(w))
    }

    /// `[attributes] param(...)` at the start of a script or block, if present.
    fn param_block_if_any(&mut self) -> Result<Vec<ParamDecl>, ParseError> {
        let mut j = self.pos;
        loop {
            match self.tokens.get(j).map(|t| &t.kind) {
                Some(Tok::Newline | Tok::Semi | Tok::TypeLit(_)) => j += 1,
                Some(Tok::Word(w)) if w.eq_ignore_ascii_case("param") => break,
                _ => return Ok(Vec::new()),
            }
        }
        if !matches!(self.tokens.get(j + 1).map(|t| &t.kind), Some(Tok::LParen)) {
            return Ok(Vec::new());
        }
        self.pos = j + 2;
        let open = self.tokens.get(j + 1).map_or(0, |t| t.start);
        let mut params = Vec::new();
        let saved = std::mem::replace(&mut self.no_comma, true);
        loop {
            self.skip_newlines();
            let mut type_name = None;
            while let Tok::TypeLit(t) = self.tok() {
                if !t.contains('(') {
                    type_name = Some(t.to_ascii_lowercase());
                }
                self.advance();
                self.skip_newlines();
            }
            match self.tok().clone() {
                Tok::Variable(name) => {
                    self.advance();
                    self.skip_newlines();
                    let default = if matches!(self.tok(), Tok::Assign('=')) {
                        self.advance();
                        self.skip_newlines();
                        Some(self.expression("=")?)
                    } else {
                        None
                    };
                    params.push(ParamDecl {
                        name,
                        type_name,
                        default,
                    });
                    self.skip_newlines();
                    match self.tok() {
                        Tok::Comma => self.advance(),
                        Tok::RParen => {
                            self.advance();
                            break;
                        }
                        Tok::Eof => {
                            return self
                                .err_at(ParseErrorKind::MissingEndParenthesisInExpression, open);
                        }
                        _ => return self.unexpected(),
                    }
                }
                Tok::RParen if type_name.is_none() => {
                    self.advance();
                    break;
                }
                Tok::Eof => {
                    return self.err_at(ParseErrorKind::MissingEndParenthesisInExpression, open);
                }
                _ => return self.unexpected(),
            }
        }
        self.no_comma = saved;
        Ok(params)
    }

    /// Statements until `close` (not consumed).
    fn statements(&mut self, close: Tok) -> Result<Vec<Stmt>, ParseError> {
        let mut out = Vec::new();
        loop {
            while matches!(self.tok(), Tok::Newline | Tok::Semi) {
                self.advance();
            }
            if closes(self.tok(), &close) {
                return Ok(out);
            }
            out.push(self.statement()?);
            match self.tok() {
                Tok::Newline | Tok::Semi => {}
                t if closes(t, &close) => {}
                _ => return self.unexpected(),
            }
        }
    }

    fn statement(&mut self) -> Result<Stmt, ParseError> {
        self.enter()?;
        let start = self.start();
        let kind = self.statement_kind()?;
        self.leave();
        Ok(Stmt {
            kind,
            start,
            end: self.prev_end().max(start),
        })
    }

    fn statement_kind(&mut self) -> Result<StmtKind, ParseError> {
        if let Tok::Word(w) = self.tok() {
            let w = w.to_ascii_lowercase();
            match w.as_str() {
                "if" => return self.if_statement(),
                "foreach" if matches!(self.peek_kind(1), Tok::LParen) => {
                    return self.foreach_statement();
                }
                "while" => return self.while_statement(),
                "try" => return self.try_statement(),
                "function" | "filter" => return self.function_statement(),
                "throw" | "exit" | "return" => {
                    self.advance();
                    let value = if self.at_statement_end() {
                        None
                    } else {
                        Some(self.pipeline()?)
                    };
                    return Ok(match w.as_str() {
                        "throw" => StmtKind::Throw(value),
                        "exit" => StmtKind::Exit(value),
                        _ => StmtKind::Return(value),
                    });
                }
                "break" => {
                    self.advance();
                    return Ok(StmtKind::Break);
                }
                "continue" => {
                    self.advance();
                    return Ok(StmtKind::Continue);
                }
                "param" if matches!(self.peek_kind(1), Tok::LParen) => {
                    return self.err(ParseErrorKind::ParamBlockNotFirst);
                }
                _ => {}
            }
        }
        let pipeline = self.pipeline()?;
        if let Tok::Assign(op) = *self.tok() {
            let assignable = pipeline.elements.len() == 1
                && matches!(
                    pipeline.elements.first(),
                    Some(Element::Expr(
                        Expr::Var(_) | Expr::Member { .. } | Expr::Index { .. } | Expr::Cast(..)
                    ))
                );
            if !assignable {
                return self.unexpected();
            }
            let op_text = self.text();
            self.advance();
            self.skip_newlines();
            if self.at_statement_end() {
                return self.err(ParseErrorKind::MissingAssignmentValue(op_text));
            }
            let value = self.statement()?;
            let target = match pipeline.elements.into_iter().next() {
                Some(Element::Expr(e)) => e,
                _ => return self.unexpected(),
            };
            return Ok(StmtKind::Assign {
                target,
                op,
                value: Box::new(value),
            });
        }
        Ok(StmtKind::Pipeline(pipeline))
    }

    fn at_statement_end(&self) -> bool {
        matches!(
            self.tok(),
            Tok::Newline | Tok::Semi | Tok::RBrace | Tok::RParen | Tok::Eof | Tok::Pipe
        )
    }

    fn block(&mut self, after: &'static str) -> Result<Block, ParseError> {
        self.skip_newlines();
        if !matches!(self.tok(), Tok::LBrace) {
            return self.err(ParseErrorKind::MissingStatementBlock(after));
        }
        self.braced_block()
    }

    /// `{ [param(...)] statements }` at a `{`.
    fn braced_block(&mut self) -> Result<Block, ParseError> {
        let open = self.token().map_or(0, |t| t.start);
        self.advance();
        self.enter()?;
        let saved = std::mem::replace(&mut self.no_comma, false);
        let params = self.param_block_if_any()?;
        let body = self.statements(Tok::RBrace)?;
        self.no_comma = saved;
        self.leave();
        if !matches!(self.tok(), Tok::RBrace) {
            return self.err_at(ParseErrorKind::MissingEndCurlyBrace, open);
        }
        let close = self.start();
        self.advance();
        Ok(Block {
            params,
            body,
            text: self.src.get(open + 1..close).unwrap_or("").to_owned(),
        })
    }

    fn condition(&mut self, kw: &'static str) -> Result<Pipeline, ParseError> {
        self.skip_newlines();
        if !matches!(self.tok(), Tok::LParen) {
            return self.err(ParseErrorKind::MissingOpenParenthesis(kw));
        }
        self.advance();
        self.skip_newlines();
        if matches!(self.tok(), Tok::RParen | Tok::Eof) {
            return self.err(ParseErrorKind::MissingCondition(kw));
        }
        let saved = std::mem::replace(&mut self.no_comma, false);
        let cond = self.pipeline()?;
        self.no_comma = saved;
        self.skip_newlines();
        if !matches!(self.tok(), Tok::RParen) {
            return self.err(ParseErrorKind::MissingEndParenthesisAfterCondition(kw));
        }
        self.advance();
        Ok(cond)
    }

    fn if_statement(&mut self) -> Result<StmtKind, ParseError> {
        self.advance();
        let mut clauses = vec![(self.condition("if")?, self.block("if ( condition )")?)];
        let mut otherwise = None;
        loop {
            let save = self.pos;
            self.skip_newlines();
            if self.word_is("elseif") {
                self.advance();
                clauses.push((
                    self.condition("elseif")?,
                    self.block("elseif ( condition )")?,
                ));
            } else if self.word_is("else") {
                self.advance();
                otherwise = Some(self.block("else")?);
                break;
            } else {
                self.pos = save;
                break;
            }
        }
        Ok(StmtKind::If { clauses, otherwise })
    }

    fn foreach_statement(&mut self) -> Result<StmtKind, ParseError> {
        self.advance();
        self.advance(); // '('
        self.skip_newlines();
        let Tok::Variable(var) = self.tok().clone() else {
            return self.err(ParseErrorKind::MissingVariableNameAfterForeach);
        };
        self.advance();
        if !self.word_is("in") {
            return self.err(ParseErrorKind::MissingInInForeach);
        }
        self.advance();
        self.skip_newlines();
        let saved = std::mem::replace(&mut self.no_comma, false);
        let items = self.pipeline()?;
        self.no_comma = saved;
        self.skip_newlines();
        if !matches!(self.tok(), Tok::RParen) {
            return self.err(ParseErrorKind::MissingEndParenthesisAfterCondition(
                "foreach",
            ));
        }
        self.advance();
        let body = self.block("foreach ( condition )")?;
        Ok(StmtKind::Foreach { var, items, body })
    }

    fn while_statement(&mut self) -> Result<StmtKind, ParseError> {
        self.advance();
        let cond = self.condition("while")?;
        let body = self.block("while ( condition )")?;
        Ok(StmtKind::While { cond, body })
    }

    fn try_statement(&mut self) -> Result<StmtKind, ParseError> {
        self.advance();
        let body = self.block("try")?;
        let mut catches = Vec::new();
        let mut finally = None;
        loop {
            let save = self.pos;
            self.skip_newlines();
            if self.word_is("catch") {
                self.advance();
                while matches!(self.tok(), Tok::TypeLit(_) | Tok::Comma) {
                    self.advance();
                    self.skip_newlines();
                }
                catches.push(self.block("catch")?);
            } else if self.word_is("finally") {
                self.advance();
                finally = Some(self.block("finally")?);
                break;
            } else {
                self.pos = save;
                break;
            }
        }
        if catches.is_empty() && finally.is_none() {
            return self.err(ParseErrorKind::MissingCatchOrFinally);
        }
        Ok(StmtKind::Try {
            body,
            catches,
            finally,
        })
    }

    fn function_statement(&mut self) -> Result<StmtKind, ParseError> {
        self.advance();
        let Tok::Word(name) = self.tok().clone() else {
            return self.err(ParseErrorKind::MissingFunctionName);
        };
        self.advance();
        // `function f($a, $b) { }`: the parenthesised list becomes the param block.
        let mut params = Vec::new();
        if matches!(self.tok(), Tok::LParen) {
            params = self.function_params()?;
        }
        let mut body = self.block("function")?;
        if body.params.is_empty() {
            body.params = params;
        }
        Ok(StmtKind::Function {
            name,
            body: Rc::new(body),
        })
    }

    fn function_params(&mut self) -> Result<Vec<ParamDecl>, ParseError> {
        let mut params = Vec::new();
        self.advance(); // '('
        let saved = std::mem::replace(&mut self.no_comma, true);
        loop {
            self.skip_newlines();
            let mut type_name = None;
            while let Tok::TypeLit(t) = self.tok() {
                type_name = Some(t.to_ascii_lowercase());
                self.advance();
            }
            match self.tok().clone() {
                Tok::RParen => {
                    self.advance();
                    break;
                }
                Tok::Variable(name) => {
                    self.advance();
                    let default = if matches!(self.tok(), Tok::Assign('=')) {
                        self.advance();
                        Some(self.expression("=")?)
                    } else {
                        None
                    };
                    params.push(ParamDecl {
                        name,
                        type_name,
                        default,
                    });
                    if matches!(self.tok(), Tok::Comma) {
                        self.advance();
                    }
                }
                _ => return self.unexpected(),
            }
        }
        self.no_comma = saved;
        Ok(params)
    }

    fn pipeline(&mut self) -> Result<Pipeline, ParseError> {
        let start = self.start();
        if matches!(self.tok(), Tok::Pipe) {
            return self.err(ParseErrorKind::EmptyPipeElement);
        }
        let mut elements = vec![self.element(true)?];
        let mut redirects = self.redirects()?;
        while matches!(self.tok(), Tok::Pipe) {
            self.advance();
            self.skip_newlines();
            if matches!(
                self.tok(),
                Tok::Pipe | Tok::Eof | Tok::Semi | Tok::RParen | Tok::RBrace
            ) {
                return self.err(ParseErrorKind::EmptyPipeElement);
            }
            elements.push(self.element(false)?);
            redirects.extend(self.redirects()?);
        }
        Ok(Pipeline {
            elements,
            redirects,
            start,
            end: self.prev_end().max(start),
        })
    }

    fn redirects(&mut self) -> Result<Vec<Redirect>, ParseError> {
        let mut out = Vec::new();
        while let Tok::Redirect(r) = self.tok().clone() {
            self.advance();
            let stream = r.chars().next().filter(|c| *c != '>').unwrap_or('1');
            let target = if r.ends_with("&1") || r.ends_with("&2") {
                None
            } else {
                if self.at_statement_end() {
                    return self.err(ParseErrorKind::MissingFileSpecification);
                }
                Some(self.arg_value()?)
            };
            out.push(Redirect { stream, target });
        }
        Ok(out)
    }

    fn element(&mut self, first: bool) -> Result<Element, ParseError> {
        let start = self.start();
        match self.tok().clone() {
            Tok::Word(_) | Tok::Amp | Tok::Percent => self.command(start).map(Element::Command),
            Tok::ChainOp(_) => self.unexpected(),
            _ if first => {
                let e = self.expression_or_empty()?;
                Ok(Element::Expr(e))
            }
            _ => self.err(ParseErrorKind::ExpressionsMustBeFirstInPipeline),
        }
    }

    fn expression_or_empty(&mut self) -> Result<Expr, ParseError> {
        if self.at_statement_end() {
            return self.unexpected();
        }
        self.expression("")
    }

    fn command(&mut self, start: usize) -> Result<Command, ParseError> {
        let name = match self.tok().clone() {
            Tok::Word(w) => {
                self.advance();
                CommandName::Word(w)
            }
            Tok::Percent => {
                self.advance();
                CommandName::Word("%".into())
            }
            _ => {
                self.advance(); // '&'
                let e = self.arg_primary()?;
                CommandName::Expr(e)
            }
        };
        let mut args = Vec::new();
        loop {
            match self.tok().clone() {
                Tok::Newline
                | Tok::Semi
                | Tok::Pipe
                | Tok::RParen
                | Tok::RBrace
                | Tok::Eof
                | Tok::Redirect(_)
                | Tok::ChainOp(_) => break,
                Tok::Dash { name, colon } => {
                    self.advance();
                    let value = if colon { Some(self.arg_value()?) } else { None };
                    args.push(Arg::Param { name, value });
                }
                Tok::Splat(name) => {
                    self.advance();
                    args.push(Arg::Splat(name));
                }
                _ => args.push(Arg::Value(self.arg_value()?)),
            }
            if args.len() > lexer::MAX_TOKENS {
                return self.err(ParseErrorKind::TooComplex);
            }
        }
        Ok(Command {
            name,
            args,
            start,
            end: self.prev_end().max(start),
        })
    }

    /// A command argument: one or more primaries joined by commas.
    fn arg_value(&mut self) -> Result<Expr, ParseError> {
        let first = self.arg_primary()?;
        if !matches!(self.tok(), Tok::Comma) {
            return Ok(first);
        }
        let mut items = vec![first];
        while matches!(self.tok(), Tok::Comma) {
            self.advance();
            self.skip_newlines();
            items.push(self.arg_primary()?);
        }
        Ok(Expr::Array(items))
    }

    fn arg_primary(&mut self) -> Result<Expr, ParseError> {
        let t = self.tok().clone();
        match t {
            Tok::Word(w) => {
                self.advance();
                Ok(Expr::Str(w))
            }
            Tok::Number(_)
            | Tok::Str(_)
            | Tok::Variable(_)
            | Tok::LParen
            | Tok::DollarParen
            | Tok::AtParen
            | Tok::AtBrace
            | Tok::LBrace
            | Tok::TypeLit(_) => {
                let p = self.primary()?;
                self.postfix(p)
            }
            Tok::Minus
                if matches!(self.peek_kind(1), Tok::Number(_))
                    && self
                        .tokens
                        .get(self.pos + 1)
                        .is_some_and(|t| !t.space_before) =>
            {
                self.advance();
                let n = match self.tok() {
                    Tok::Number(Number::Int(v)) => Expr::Int(-v),
                    Tok::Number(Number::Double(v)) => Expr::Double(-v),
                    _ => return self.unexpected(),
                };
                self.advance();
                Ok(n)
            }
            Tok::Minus
            | Tok::Plus
            | Tok::Star
            | Tok::Slash
            | Tok::Percent
            | Tok::Bang
            | Tok::DotDot
            | Tok::Assign(_)
            | Tok::Amp
            | Tok::ColonColon => {
                let text = self.text();
                self.advance();
                Ok(Expr::Str(text))
            }
            Tok::Dash { .. } => {
                let text = self.text();
                self.advance();
                Ok(Expr::Str(text))
            }
            _ => self.unexpected(),
        }
    }

    /// A full expression; `op` names the operator it follows (for the error message when it
    /// is missing).
    fn expression(&mut self, op: &str) -> Result<Expr, ParseError> {
        if self.at_statement_end() {
            return self.err(ParseErrorKind::ExpectedValueExpression(op.to_owned()));
        }
        self.logical()
    }

    fn operand(
        &mut self,
        op: &str,
        f: fn(&mut Self) -> Result<Expr, ParseError>,
    ) -> Result<Expr, ParseError> {
        self.skip_newlines();
        if self.at_statement_end() || matches!(self.tok(), Tok::Comma) {
            return self.err(ParseErrorKind::ExpectedValueExpression(op.to_owned()));
        }
        f(self)
    }

    fn dash_op(&self) -> Option<String> {
        match self.tok() {
            Tok::Dash { name, colon: false } => Some(name.to_ascii_lowercase()),
            _ => None,
        }
    }

    fn logical(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.comparison()?;
        while let Some(op) = self.dash_op() {
            let bin = match op.as_str() {
                "and" => BinOp::And,
                "or" => BinOp::Or,
                "xor" => BinOp::Xor,
                _ => break,
            };
            let text = self.text();
            self.advance();
            let right = self.operand(&text, Self::comparison)?;
            left = Expr::Binary(bin, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.additive()?;
        while let Some(op) = self.dash_op() {
            let Some(bin) = comparison_op(&op) else {
                if matches!(op.as_str(), "and" | "or" | "xor") {
                    break;
                }
                return self.unexpected();
            };
            let text = self.text();
            self.advance();
            let right = self.operand(&text, Self::additive)?;
            left = Expr::Binary(bin, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn additive(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.tok() {
                Tok::Plus => BinOp::Add,
                Tok::Minus => BinOp::Sub,
                _ => break,
            };
            let text = self.text();
            self.advance();
            let right = self.operand(&text, Self::multiplicative)?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn multiplicative(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.format()?;
        loop {
            let op = match self.tok() {
                Tok::Star => BinOp::Mul,
                Tok::Slash => BinOp::Div,
                Tok::Percent => BinOp::Rem,
                _ => break,
            };
            let text = self.text();
            self.advance();
            let right = self.operand(&text, Self::format)?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn format(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.range()?;
        while self.dash_op().as_deref() == Some("f") {
            self.advance();
            let right = self.operand("-f", Self::range)?;
            left = Expr::Binary(BinOp::Format, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn range(&mut self) -> Result<Expr, ParseError> {
        let left = self.array()?;
        if matches!(self.tok(), Tok::DotDot) {
            self.advance();
            let right = self.operand("..", Self::array)?;
            return Ok(Expr::Range(Box::new(left), Box::new(right)));
        }
        Ok(left)
    }

    fn array(&mut self) -> Result<Expr, ParseError> {
        let first = self.unary()?;
        if self.no_comma || !matches!(self.tok(), Tok::Comma) {
            return Ok(first);
        }
        let mut items = vec![first];
        while matches!(self.tok(), Tok::Comma) {
            self.advance();
            let item = self.operand(",", Self::unary)?;
            items.push(item);
        }
        Ok(Expr::Array(items))
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        let op = match self.tok() {
            Tok::Bang => Some((UnOp::Not, "!")),
            Tok::Minus => Some((UnOp::Neg, "-")),
            Tok::Plus => Some((UnOp::Plus, "+")),
            Tok::Comma => Some((UnOp::Comma, ",")),
            Tok::Dash { name, colon: false } if name.eq_ignore_ascii_case("not") => {
                Some((UnOp::Not, "-not"))
            }
            _ => None,
        };
        if let Some((op, text)) = op {
            self.advance();
            self.enter()?;
            let operand = self.operand(text, Self::unary);
            self.leave();
            return Ok(Expr::Unary(op, Box::new(operand?)));
        }
        if let Tok::TypeLit(t) = self.tok().clone() {
            // A cast when a value follows right away; otherwise a type (maybe `::` after).
            let next = self.peek_kind(1);
            let casts = matches!(
                next,
                Tok::Variable(_)
                    | Tok::Str(_)
                    | Tok::Number(_)
                    | Tok::LParen
                    | Tok::DollarParen
                    | Tok::AtParen
                    | Tok::AtBrace
                    | Tok::TypeLit(_)
                    | Tok::Minus
            ) && !matches!(next, Tok::ColonColon);
            if casts {
                self.advance();
                self.enter()?;
                let operand = self.unary();
                self.leave();
                return Ok(Expr::Cast(t.to_ascii_lowercase(), Box::new(operand?)));
            }
        }
        let p = self.primary()?;
        self.postfix(p)
    }

    fn postfix(&mut self, mut e: Expr) -> Result<Expr, ParseError> {
        loop {
            match self.tok() {
                Tok::Dot | Tok::ColonColon => {
                    let is_static = matches!(self.tok(), Tok::ColonColon);
                    self.advance();
                    let Tok::Word(name) = self.tok().clone() else {
                        return self.unexpected();
                    };
                    self.advance();
                    let call = matches!(self.tok(), Tok::LParen)
                        && self.token().is_some_and(|t| !t.space_before);
                    if call {
                        let args = self.call_args()?;
                        e = Expr::Method {
                            target: Box::new(e),
                            name,
                            args,
                            is_static,
                        };
                    } else {
                        e = Expr::Member {
                            target: Box::new(e),
                            name,
                            is_static,
                        };
                    }
                }
                Tok::LBracket => {
                    let open = self.start();
                    self.advance();
                    self.skip_newlines();
                    if matches!(self.tok(), Tok::RBracket) {
                        return self.err(ParseErrorKind::MissingArrayIndexExpression);
                    }
                    let saved = std::mem::replace(&mut self.no_comma, false);
                    let index = self.expression("[")?;
                    self.no_comma = saved;
                    self.skip_newlines();
                    if !matches!(self.tok(), Tok::RBracket) {
                        return self.err_at(ParseErrorKind::MissingEndSquareBracket, open);
                    }
                    self.advance();
                    e = Expr::Index {
                        target: Box::new(e),
                        index: Box::new(index),
                    };
                }
                _ => return Ok(e),
            }
        }
    }

    fn call_args(&mut self) -> Result<Vec<Expr>, ParseError> {
        let open = self.start();
        self.advance(); // '('
        let saved = std::mem::replace(&mut self.no_comma, true);
        let mut args = Vec::new();
        loop {
            self.skip_newlines();
            if matches!(self.tok(), Tok::RParen) {
                self.advance();
                break;
            }
            if matches!(self.tok(), Tok::Eof) {
                return self.err_at(ParseErrorKind::MissingEndParenthesisInExpression, open);
            }
            args.push(self.expression("(")?);
            self.skip_newlines();
            match self.tok() {
                Tok::Comma => self.advance(),
                Tok::RParen => {}
                Tok::Eof => {
                    return self.err_at(ParseErrorKind::MissingEndParenthesisInExpression, open);
                }
                _ => return self.unexpected(),
            }
        }
        self.no_comma = saved;
        Ok(args)
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let start = self.start();
        let t = self.tok().clone();
        match t {
            Tok::Number(Number::Int(v)) => {
                self.advance();
                Ok(Expr::Int(v))
            }
            Tok::Number(Number::Double(v)) => {
                self.advance();
                Ok(Expr::Double(v))
            }
            Tok::Str(s) => {
                self.advance();
                self.string(s)
            }
            Tok::Variable(name) => {
                self.advance();
                Ok(Expr::Var(name))
            }
            Tok::TypeLit(t) => {
                self.advance();
                Ok(Expr::TypeLit(t.to_ascii_lowercase()))
            }
            Tok::LParen => {
                self.advance();
                self.skip_newlines();
                let saved = std::mem::replace(&mut self.no_comma, false);
                let inner = self.statement()?;
                self.no_comma = saved;
                self.skip_newlines();
                if !matches!(self.tok(), Tok::RParen) {
                    if matches!(self.tok(), Tok::Eof) {
                        return self
                            .err_at(ParseErrorKind::MissingEndParenthesisInExpression, start);
                    }
                    return self.unexpected();
                }
                self.advance();
                Ok(Expr::Paren(Box::new(inner)))
            }
            Tok::DollarParen | Tok::AtParen => {
                self.advance();
                let saved = std::mem::replace(&mut self.no_comma, false);
                let body = self.statements(Tok::RParen)?;
                self.no_comma = saved;
                if !matches!(self.tok(), Tok::RParen) {
                    return self
                        .err_at(ParseErrorKind::MissingEndParenthesisInSubexpression, start);
                }
                self.advance();
                Ok(if matches!(t, Tok::DollarParen) {
                    Expr::Sub(body)
                } else {
                    Expr::ArraySub(body)
                })
            }
            Tok::AtBrace => self.hash_literal(start),
            Tok::LBrace => Ok(Expr::ScriptBlock(Rc::new(self.braced_block()?))),
            Tok::Eof => self.err(ParseErrorKind::ExpectedValueExpression(String::new())),
            _ => self.unexpected(),
        }
    }

    fn hash_literal(&mut self, open: usize) -> Result<Expr, ParseError> {
        self.advance();
        let saved = std::mem::replace(&mut self.no_comma, false);
        let mut entries = Vec::new();
        loop {
            while matches!(self.tok(), Tok::Newline | Tok::Semi) {
                self.advance();
            }
            let key = match self.tok().clone() {
                Tok::RBrace => {
                    self.advance();
                    break;
                }
                Tok::Eof => return self.err_at(ParseErrorKind::MissingEndCurlyBrace, open),
                Tok::Word(w) => {
                    self.advance();
                    Expr::Str(w)
                }
                Tok::Number(_) | Tok::Str(_) | Tok::Variable(_) | Tok::LParen => {
                    let p = self.primary()?;
                    self.postfix(p)?
                }
                _ => return self.unexpected(),
            };
            if !matches!(self.tok(), Tok::Assign('=')) {
                return self.err(ParseErrorKind::MissingEqualsInHashLiteral);
            }
            self.advance();
            self.skip_newlines();
            if self.at_statement_end() {
                return self.err(ParseErrorKind::MissingAssignmentValue("=".into()));
            }
            let value = self.statement()?;
            entries.push((key, value));
            match self.tok() {
                Tok::Newline | Tok::Semi | Tok::RBrace => {}
                Tok::Eof => return self.err_at(ParseErrorKind::MissingEndCurlyBrace, open),
                _ => return self.unexpected(),
            }
        }
        self.no_comma = saved;
        Ok(Expr::Hash(entries))
    }

    fn string(&mut self, s: StrLit) -> Result<Expr, ParseError> {
        if !s.expandable {
            let text = s
                .parts
                .into_iter()
                .map(|p| match p {
                    StrPart::Text(t) => t,
                    _ => String::new(),
                })
                .collect();
            return Ok(Expr::Str(text));
        }
        let mut parts = Vec::new();
        for part in s.parts {
            parts.push(match part {
                StrPart::Text(t) => XPart::Text(t),
                StrPart::Var(v) => XPart::Var(v),
                StrPart::Sub { start, end } => {
                    self.enter()?;
                    let tokens = lexer::tokenize(self.src, start, end)?;
                    let mut inner = Parser {
                        src: self.src,
                        tokens,
                        pos: 0,
                        depth: self.depth,
                        no_comma: false,
                    };
                    let body = inner.statements(Tok::Eof)?;
                    self.leave();
                    XPart::Sub(body)
                }
            });
        }
        if parts.iter().all(|p| matches!(p, XPart::Text(_))) {
            return Ok(Expr::Str(
                parts
                    .into_iter()
                    .map(|p| match p {
                        XPart::Text(t) => t,
                        _ => String::new(),
                    })
                    .collect(),
            ));
        }
        Ok(Expr::Expandable(parts))
    }
}

/// The comparison-level operator named `op` (lower case, without the dash).
fn comparison_op(op: &str) -> Option<BinOp> {
    let (case, base) = match op.strip_prefix('c') {
        Some(rest) if cmp_base(rest).is_some() || rest == "replace" => (true, rest),
        _ => match op.strip_prefix('i') {
            Some(rest) if cmp_base(rest).is_some() || rest == "replace" => (false, rest),
            _ => (false, op),
        },
    };
    if let Some(c) = cmp_base(base) {
        return Some(BinOp::Cmp(c, case));
    }
    Some(match base {
        "replace" => BinOp::Replace { case },
        "join" => BinOp::Join,
        "split" => BinOp::Split,
        "is" => BinOp::Is(true),
        "isnot" => BinOp::Is(false),
        "as" => BinOp::As,
        _ => return None,
    })
}

fn cmp_base(op: &str) -> Option<CmpOp> {
    Some(match op {
        "eq" => CmpOp::Eq,
        "ne" => CmpOp::Ne,
        "gt" => CmpOp::Gt,
        "ge" => CmpOp::Ge,
        "lt" => CmpOp::Lt,
        "le" => CmpOp::Le,
        "like" => CmpOp::Like,
        "notlike" => CmpOp::NotLike,
        "match" => CmpOp::Match,
        "notmatch" => CmpOp::NotMatch,
        "contains" => CmpOp::Contains,
        "notcontains" => CmpOp::NotContains,
        "in" => CmpOp::In,
        "notin" => CmpOp::NotIn,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Block {
        parse_script(src).unwrap_or_else(|e| panic!("{src:?}: {e:?}"))
    }

    fn first_pipeline(b: &Block) -> &Pipeline {
        match &b.body[0].kind {
            StmtKind::Pipeline(p) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn param_block_with_types_and_defaults() {
        let b = parse(
            "[CmdletBinding()]\nparam([Parameter(Mandatory)][string]$Name = 'x', [int]$Count)\n$Name",
        );
        assert_eq!(b.params.len(), 2);
        assert_eq!(b.params[0].name, "Name");
        assert_eq!(b.params[0].type_name.as_deref(), Some("string"));
        assert_eq!(b.params[0].default, Some(Expr::Str("x".into())));
        assert_eq!(b.params[1].type_name.as_deref(), Some("int"));
        assert_eq!(b.body.len(), 1);
    }

    #[test]
    fn pipeline_of_commands_with_script_block() {
        let b = parse(
            "Get-Service | Where-Object { $_.Status -eq 'Running' } | Select-Object -First 2",
        );
        let p = first_pipeline(&b);
        assert_eq!(p.elements.len(), 3);
        let Element::Command(c) = &p.elements[1] else {
            panic!()
        };
        assert_eq!(c.name, CommandName::Word("Where-Object".into()));
        let Arg::Value(Expr::ScriptBlock(sb)) = &c.args[0] else {
            panic!()
        };
        assert_eq!(sb.text, " $_.Status -eq 'Running' ");
        let StmtKind::Pipeline(inner) = &sb.body[0].kind else {
            panic!()
        };
        let Element::Expr(Expr::Binary(BinOp::Cmp(CmpOp::Eq, false), l, r)) = &inner.elements[0]
        else {
            panic!()
        };
        assert_eq!(
            **l,
            Expr::Member {
                target: Box::new(Expr::Var("_".into())),
                name: "Status".into(),
                is_static: false
            }
        );
        assert_eq!(**r, Expr::Str("Running".into()));
    }

    #[test]
    fn precedence_comma_over_arithmetic_over_comparison_over_logical() {
        let b = parse("1 + 2 * 3 -gt 5 -and $true");
        let p = first_pipeline(&b);
        let Element::Expr(Expr::Binary(BinOp::And, l, _)) = &p.elements[0] else {
            panic!()
        };
        let Expr::Binary(BinOp::Cmp(CmpOp::Gt, false), sum, _) = &**l else {
            panic!()
        };
        let Expr::Binary(BinOp::Add, _, prod) = &**sum else {
            panic!()
        };
        assert!(matches!(**prod, Expr::Binary(BinOp::Mul, _, _)));
        let b = parse("'{0}-{1}' -f 1,2");
        let p = first_pipeline(&b);
        let Element::Expr(Expr::Binary(BinOp::Format, _, r)) = &p.elements[0] else {
            panic!()
        };
        assert!(matches!(**r, Expr::Array(ref v) if v.len() == 2));
    }

    #[test]
    fn assignment_hashtable_and_cast() {
        let b = parse("$o = [pscustomobject]@{ Name = 'a'; Count = 2 }");
        let StmtKind::Assign { target, op, value } = &b.body[0].kind else {
            panic!()
        };
        assert_eq!(*target, Expr::Var("o".into()));
        assert_eq!(*op, '=');
        let StmtKind::Pipeline(p) = &value.kind else {
            panic!()
        };
        let Element::Expr(Expr::Cast(t, inner)) = &p.elements[0] else {
            panic!()
        };
        assert_eq!(t, "pscustomobject");
        let Expr::Hash(entries) = &**inner else {
            panic!()
        };
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].0, Expr::Str("Count".into()));
    }

    #[test]
    fn keywords_try_if_foreach() {
        let b = parse(
            "try { throw 'x' } catch { $_ } finally { 1 }\nif ($a) { 1 } elseif ($b) { 2 } else { 3 }\nforeach ($i in 1..3) { $i }\nexit 3",
        );
        assert!(
            matches!(b.body[0].kind, StmtKind::Try { ref catches, finally: Some(_), .. } if catches.len() == 1)
        );
        assert!(
            matches!(b.body[1].kind, StmtKind::If { ref clauses, otherwise: Some(_) } if clauses.len() == 2)
        );
        assert!(matches!(b.body[2].kind, StmtKind::Foreach { ref var, .. } if var == "i"));
        assert!(matches!(b.body[3].kind, StmtKind::Exit(Some(_))));
    }

    #[test]
    fn statement_spans_cover_the_source() {
        let src = "Write-Output 1\n  Get-Date -Format o ; hostname";
        let b = parse(src);
        let spans: Vec<&str> = b.body.iter().map(|s| &src[s.start..s.end]).collect();
        assert_eq!(spans, ["Write-Output 1", "Get-Date -Format o", "hostname"]);
    }

    #[test]
    fn parse_errors_have_windows_ids_and_positions() {
        let cases = [
            ("if ($x) { 1", "MissingEndCurlyBrace", 8),
            ("'abc", "TerminatorExpectedAtEndOfString", 0),
            ("(1 + 2", "MissingEndParenthesisInExpression", 0),
            ("$x = ", "ExpectedValueExpression", 5),
            ("1 -eq", "ExpectedValueExpression", 5),
            ("Get-Date | | hostname", "EmptyPipeElement", 11),
            ("hostname | 5", "ExpressionsMustBeFirstInPipeline", 11),
            ("try { 1 }", "MissingCatchOrFinally", 9),
            ("@{ a 1 }", "MissingEqualsInHashLiteral", 5),
            ("hostname && hostname", "InvalidEndOfLine", 9),
            ("$x }", "UnexpectedToken", 3),
        ];
        for (src, id, at) in cases {
            let e = parse_script(src).unwrap_err();
            assert_eq!((e.kind.id(), e.at), (id, at), "{src:?}: {e:?}");
        }
        assert_eq!(
            parse_script("1 -bogus 2").unwrap_err().kind.message(),
            "Unexpected token '-bogus' in expression or statement."
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}1{}", "(".repeat(500), ")".repeat(500));
        assert_eq!(
            parse_script(&deep).unwrap_err().kind,
            ParseErrorKind::TooComplex
        );
    }
}
