//! Run-time values of the subset and PowerShell's conversion rules between them
//! (`LanguagePrimitives`: truthiness, string and number conversion, comparison, wildcards),
//! plus the date arithmetic and .NET date formatting that `Get-Date` needs.
//!
//! Scalars and objects are kept in their CLIXML form ([`Value`]) so that what a script
//! outputs is exactly what goes on the wire; arrays, hashtables and script blocks have
//! run-time forms that become CLIXML only when they are output.

use std::fmt::Write as _;
use std::rc::Rc;

use psfleet_core::psrp::clixml::{
    self, Content, DateTime, DateTimeOffset, DateTimeParts, DictEntry, Float, PsObject, Value,
};

use super::syntax::Block;

/// A run-time value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    /// A scalar or an object, in wire form.
    V(Value),
    /// `System.Object[]`.
    Array(Vec<Val>),
    /// `System.Collections.Hashtable` (or an ordered dictionary).
    Table(Table),
    /// A script block.
    Block(Rc<Block>),
}

/// A hashtable: keys compared ignoring case, insertion order kept (PowerShell's Hashtable
/// order is a hash order; keeping insertion order makes the simulator deterministic).
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Table {
    pub entries: Vec<(Value, Val)>,
    pub ordered: bool,
    /// A more derived type than Hashtable (`PSVersionHashTable`).
    pub type_name: Option<String>,
}

impl Table {
    pub(crate) fn get(&self, key: &str) -> Option<&Val> {
        self.entries
            .iter()
            .find(|(k, _)| k.display_text().eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    }

    pub(crate) fn set(&mut self, key: Value, value: Val) {
        let text = key.display_text().into_owned();
        match self
            .entries
            .iter_mut()
            .find(|(k, _)| k.display_text().eq_ignore_ascii_case(&text))
        {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key, value)),
        }
    }
}

/// A number for arithmetic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Num {
    Int(i64),
    Double(f64),
}

impl Num {
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            Self::Int(i) => i as f64,
            Self::Double(d) => d,
        }
    }

    pub(crate) fn into_val(self) -> Val {
        match self {
            Self::Int(i) => Val::int(i),
            Self::Double(d) => Val::double(d),
        }
    }
}

/// Type names of `System.Object[]`.
pub(crate) const OBJECT_ARRAY_TYPES: [&str; 3] =
    ["System.Object[]", "System.Array", "System.Object"];

impl Val {
    pub(crate) fn null() -> Self {
        Self::V(Value::Nil)
    }

    pub(crate) fn str(s: impl Into<String>) -> Self {
        Self::V(Value::String(s.into()))
    }

    pub(crate) fn bool(b: bool) -> Self {
        Self::V(Value::Bool(b))
    }

    /// An integer: Int32 when it fits, Int64 otherwise (PowerShell's literal rule).
    pub(crate) fn int(i: i64) -> Self {
        match i32::try_from(i) {
            Ok(v) => Self::V(Value::I32(v)),
            Err(_) => Self::V(Value::I64(i)),
        }
    }

    pub(crate) fn double(d: f64) -> Self {
        Self::V(Value::Double(Float::from_f64(d)))
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Self::V(Value::Nil))
    }

    /// The wire form.
    pub(crate) fn to_clixml(&self) -> Value {
        match self {
            Self::V(v) => v.clone(),
            Self::Array(items) => Value::list(
                &OBJECT_ARRAY_TYPES,
                items.iter().map(Val::to_clixml).collect(),
            ),
            Self::Table(t) => Value::dictionary(
                &table_types(t),
                t.entries
                    .iter()
                    .map(|(k, v)| DictEntry {
                        key: k.clone(),
                        value: v.to_clixml(),
                    })
                    .collect(),
            ),
            Self::Block(b) => Value::ScriptBlock(b.text.clone()),
        }
    }

    /// The items this value sends down a pipeline (arrays and lists are enumerated).
    pub(crate) fn enumerate(self) -> Vec<Val> {
        match self {
            Self::Array(items) => items,
            Self::V(Value::Object(o)) if o.list().is_some() && !o.is_enum() => o
                .list()
                .map(|items| items.iter().cloned().map(Val::V).collect())
                .unwrap_or_default(),
            other => vec![other],
        }
    }

    /// Like [`Self::enumerate`] without consuming.
    pub(crate) fn items(&self) -> Vec<Val> {
        self.clone().enumerate()
    }

    /// The .NET type name (`System.String`, or the first type name of an object).
    pub(crate) fn type_name(&self) -> String {
        match self {
            Self::Array(_) => "System.Object[]".into(),
            Self::Table(t) => table_types(t)
                .first()
                .copied()
                .unwrap_or_default()
                .to_owned(),
            Self::Block(_) => "System.Management.Automation.ScriptBlock".into(),
            Self::V(v) => value_type_name(v),
        }
    }
}

/// The type names a hashtable is written with.
fn table_types(t: &Table) -> Vec<&str> {
    match (&t.type_name, t.ordered) {
        (Some(name), _) => vec![
            name.as_str(),
            "System.Collections.Hashtable",
            "System.Object",
        ],
        (None, true) => vec![
            "System.Collections.Specialized.OrderedDictionary",
            "System.Object",
        ],
        (None, false) => vec!["System.Collections.Hashtable", "System.Object"],
    }
}

/// The .NET type name of a wire value.
pub(crate) fn value_type_name(v: &Value) -> String {
    match v {
        Value::Nil => "null".into(),
        Value::String(_) => "System.String".into(),
        Value::Char(_) => "System.Char".into(),
        Value::Bool(_) => "System.Boolean".into(),
        Value::DateTime(_) => "System.DateTime".into(),
        Value::Duration(_) => "System.TimeSpan".into(),
        Value::U8(_) => "System.Byte".into(),
        Value::I8(_) => "System.SByte".into(),
        Value::U16(_) => "System.UInt16".into(),
        Value::I16(_) => "System.Int16".into(),
        Value::U32(_) => "System.UInt32".into(),
        Value::I32(_) => "System.Int32".into(),
        Value::U64(_) => "System.UInt64".into(),
        Value::I64(_) => "System.Int64".into(),
        Value::Single(_) => "System.Single".into(),
        Value::Double(_) => "System.Double".into(),
        Value::Decimal(_) => "System.Decimal".into(),
        Value::Bytes(_) => "System.Byte[]".into(),
        Value::Guid(_) => "System.Guid".into(),
        Value::Uri(_) => "System.Uri".into(),
        Value::Version(_) => "System.Version".into(),
        Value::Xml(_) => "System.Xml.XmlDocument".into(),
        Value::ScriptBlock(_) => "System.Management.Automation.ScriptBlock".into(),
        Value::SecureString(_) => "System.Security.SecureString".into(),
        Value::Object(o) => match &o.content {
            Content::Value(inner) if o.type_names().is_empty() => value_type_name(inner),
            _ => o
                .type_names()
                .first()
                .cloned()
                .unwrap_or_else(|| "System.Management.Automation.PSCustomObject".into()),
        },
    }
}

/// The work units a bulk operation on `v` costs: one per item, one per KiB of text.
pub(crate) fn cost(v: &Val) -> usize {
    match v {
        Val::Array(items) => items.len(),
        Val::Table(t) => t.entries.len(),
        Val::V(Value::String(s)) => s.len() / 1024,
        Val::V(Value::Object(o)) => o.list().map_or(0, <[Value]>::len),
        _ => 0,
    }
}

/// PowerShell truthiness (`LanguagePrimitives.IsTrue`).
pub(crate) fn truthy(v: &Val) -> bool {
    match v {
        Val::Array(items) => match items.as_slice() {
            [] => false,
            [one] => truthy(one),
            _ => true,
        },
        Val::Table(_) | Val::Block(_) => true,
        Val::V(value) => match value.primitive() {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::String(s) => !s.is_empty(),
            Value::Object(o) => o.list().is_none_or(|l| !l.is_empty()),
            other => match number_of(other) {
                Some(n) => n.as_f64() != 0.0,
                None => true,
            },
        },
    }
}

/// A wire value as a number, when it is one.
pub(crate) fn number_of(v: &Value) -> Option<Num> {
    match v.primitive() {
        Value::Double(f) | Value::Single(f) => f.value().map(Num::Double),
        Value::Decimal(d) => d.to_f64().map(Num::Double),
        Value::U64(u) => Some(match i64::try_from(*u) {
            Ok(i) => Num::Int(i),
            Err(_) => Num::Double(*u as f64),
        }),
        other => other.as_i64().map(Num::Int),
    }
}

/// PowerShell's number conversion (`[double]`/arithmetic): numbers, numeric strings,
/// booleans and `$null` (0).
pub(crate) fn to_number(v: &Val) -> Option<Num> {
    match v {
        Val::V(value) => match value.primitive() {
            Value::Nil => Some(Num::Int(0)),
            Value::Bool(b) => Some(Num::Int(i64::from(*b))),
            Value::String(s) => parse_number(s),
            Value::Char(c) => Some(Num::Int(i64::from(*c))),
            other => number_of(other),
        },
        Val::Array(items) if items.len() == 1 => items.first().and_then(to_number),
        _ => None,
    }
}

/// Parses a numeric string as PowerShell does (trimmed, decimal or `0x` hex).
pub(crate) fn parse_number(s: &str) -> Option<Num> {
    let t = s.trim();
    if t.is_empty() {
        return Some(Num::Int(0));
    }
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return i64::from_str_radix(hex, 16).ok().map(Num::Int);
    }
    if let Ok(i) = t.parse::<i64>() {
        return Some(Num::Int(i));
    }
    if t.bytes()
        .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
    {
        return t.parse::<f64>().ok().map(Num::Double);
    }
    None
}

/// PowerShell's string conversion (invariant culture).
pub(crate) fn to_str(v: &Val) -> String {
    match v {
        Val::Array(items) => items.iter().map(to_str).collect::<Vec<_>>().join(" "),
        Val::Table(_) => v.type_name(),
        Val::Block(b) => b.text.clone(),
        Val::V(value) => value_to_str(value),
    }
}

/// The string form of a wire value.
pub(crate) fn value_to_str(value: &Value) -> String {
    match value {
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Double(f) | Value::Single(f) => {
            f.value().map_or_else(|| f.to_string(), format_double)
        }
        Value::DateTime(d) => format_datetime(d, "MM/dd/yyyy HH:mm:ss"),
        Value::Object(o) => match (&o.to_string, &o.content) {
            (Some(s), _) => s.clone(),
            (None, Content::Value(v)) => value_to_str(v),
            (None, Content::List(items)) => {
                items.iter().map(value_to_str).collect::<Vec<_>>().join(" ")
            }
            (None, _) if o.is_type("System.Management.Automation.PSCustomObject") => {
                custom_object_text(o)
            }
            (None, _) => o.type_names().first().cloned().unwrap_or_default(),
        },
        other => other.display_text().into_owned(),
    }
}

/// `@{Name=a; Count=2}`: how PowerShell converts a PSCustomObject to a string.
pub(crate) fn custom_object_text(o: &PsObject) -> String {
    let mut s = String::from("@{");
    for (i, p) in o.properties().enumerate() {
        if i > 0 {
            s.push_str("; ");
        }
        let _ = write!(s, "{}={}", p.name, value_to_str(&p.value));
    }
    s.push('}');
    s
}

/// A double as .NET Framework's `Double.ToString()` writes it (15 significant digits,
/// exponent form from 1E+15 and below 1E-05).
pub(crate) fn format_double(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if v == 0.0 {
        return "0".into();
    }
    let sci = format!("{v:.14e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if !(-5..15).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let _ = write!(
            out,
            "E{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        );
    } else if exp >= 0 {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(digits);
            out.extend(std::iter::repeat_n('0', int_len - digits.len()));
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
        out.push_str(digits);
    }
    out
}

/// Wildcard matching (`-like`, `Get-Service -Name`): `*`, `?`, `[abc]`, `[a-z]` and
/// backtick escapes.
pub(crate) fn wildcard_match(pattern: &str, text: &str, case_sensitive: bool) -> bool {
    // The matcher below is O(pattern x text); large inputs go through the regex engine.
    if pattern.len().saturating_mul(text.len()) > 10_000_000 {
        return wildcard_regex(pattern, case_sensitive).is_some_and(|re| re.is_match(text));
    }
    let fold = |c: char| {
        if case_sensitive {
            c
        } else {
            c.to_lowercase().next().unwrap_or(c)
        }
    };
    let p: Vec<char> = pattern.chars().map(fold).collect();
    let t: Vec<char> = text.chars().map(fold).collect();
    // Iterative matcher with single-star backtracking.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while let Some(&tc) = t.get(ti) {
        let (matched, width) = match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
                continue;
            }
            Some('?') => (true, 1),
            Some('[') => match class_match(&p, pi, tc) {
                Some((m, w)) => (m, w),
                None => (tc == '[', 1),
            },
            Some('`') if pi + 1 < p.len() => (p.get(pi + 1) == Some(&tc), 2),
            Some(c) => (*c == tc, 1),
            None => (false, 0),
        };
        if matched {
            pi += width;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

/// A wildcard pattern as an anchored regular expression.
fn wildcard_regex(pattern: &str, case_sensitive: bool) -> Option<regex::Regex> {
    let mut re = String::from(if case_sensitive { "(?s)^" } else { "(?is)^" });
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            '`' => {
                if let Some(n) = chars.next() {
                    re.push_str(&regex::escape(&n.to_string()));
                }
            }
            '[' => {
                let mut class = String::new();
                let mut closed = false;
                for n in chars.by_ref() {
                    if n == ']' {
                        closed = true;
                        break;
                    }
                    class.push(n);
                }
                if closed {
                    re.push('[');
                    for n in class.chars() {
                        if n == '-' {
                            re.push('-');
                        } else {
                            re.push_str(&regex::escape(&n.to_string()));
                        }
                    }
                    re.push(']');
                } else {
                    re.push_str(&regex::escape(&format!("[{class}")));
                }
            }
            other => re.push_str(&regex::escape(&other.to_string())),
        }
    }
    re.push('$');
    regex::RegexBuilder::new(&re)
        .size_limit(1 << 20)
        .build()
        .ok()
}

/// Matches `c` against the class starting at `p[at] == '['`: (matched, pattern width).
fn class_match(p: &[char], at: usize, c: char) -> Option<(bool, usize)> {
    let close = p.iter().skip(at + 1).position(|x| *x == ']')? + at + 1;
    let class = &p[at + 1..close];
    let mut i = 0;
    let mut matched = false;
    while i < class.len() {
        if i + 2 < class.len() && class[i + 1] == '-' {
            if class[i] <= c && c <= class[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if class[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    Some((matched, close - at + 1))
}

/// True when a pattern has wildcard characters.
pub(crate) fn has_wildcards(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

// ===== Dates =====

/// 100-ns ticks per day.
const TICKS_PER_DAY: i64 = 864_000_000_000;

/// A date as ticks since 0001-01-01 (local wall time) and its UTC offset in minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Moment {
    pub ticks: i64,
    pub offset: i16,
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // Howard Hinnant's algorithm, shifted so that 0001-01-01 is day 0.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468 + 719_162
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days - 719_162 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl Moment {
    /// Reads a CLIXML date (`2024-05-01T08:00:00Z`, with or without fraction and offset).
    pub(crate) fn parse(d: &DateTime) -> Option<Self> {
        let p = d.parts()?;
        let days = days_from_civil(i64::from(p.year), i64::from(p.month), i64::from(p.day));
        let secs = i64::from(p.hour) * 3600 + i64::from(p.minute) * 60 + i64::from(p.second);
        Some(Self {
            ticks: days * TICKS_PER_DAY + secs * 10_000_000 + i64::from(p.ticks),
            offset: match p.offset {
                DateTimeOffset::Minutes(m) => m,
                _ => 0,
            },
        })
    }

    /// The CLIXML form: local time with its offset, as Windows serializes a local
    /// `DateTime` (`2018-06-13T23:45:29.4583203+00:00`).
    pub(crate) fn to_datetime(self) -> DateTime {
        let (year, month, day, hour, minute, second, frac) = self.fields();
        DateTime::from_parts(DateTimeParts {
            year: u16::try_from(year).unwrap_or(1),
            month: month as u8,
            day: day as u8,
            hour: hour as u8,
            minute: minute as u8,
            second: second as u8,
            ticks: frac as u32,
            offset: DateTimeOffset::Minutes(self.offset),
        })
    }

    /// (year, month, day, hour, minute, second, sub-second ticks).
    pub(crate) fn fields(self) -> (i64, i64, i64, i64, i64, i64, i64) {
        let days = self.ticks.div_euclid(TICKS_PER_DAY);
        let rest = self.ticks.rem_euclid(TICKS_PER_DAY);
        let (y, m, d) = civil_from_days(days);
        let secs = rest / 10_000_000;
        (
            y,
            m,
            d,
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            rest % 10_000_000,
        )
    }

    /// Day of the week, 0 = Sunday.
    pub(crate) fn weekday(self) -> i64 {
        // 0001-01-01 was a Monday.
        (self.ticks.div_euclid(TICKS_PER_DAY) + 1).rem_euclid(7)
    }

    pub(crate) fn add_ticks(self, ticks: i64) -> Self {
        Self {
            ticks: self.ticks.saturating_add(ticks),
            offset: self.offset,
        }
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Day names, Sunday first (`System.DayOfWeek`).
pub(crate) const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// Formats a date with a .NET format string (en-US): the standard one-letter formats
/// (`d D f F g G M o O r R s t T u U y`) and the custom specifiers (`yyyy MM dd HH hh mm ss
/// fff tt zzz K ddd dddd MMM MMMM` ...), quoted literals and `\` escapes.
pub(crate) fn format_datetime(d: &DateTime, format: &str) -> String {
    let Some(m) = Moment::parse(d) else {
        return d.to_string();
    };
    format_moment(m, format)
}

/// [`format_datetime`] on a [`Moment`].
pub(crate) fn format_moment(m: Moment, format: &str) -> String {
    let expanded = match format {
        "d" => "M/d/yyyy",
        "D" => "dddd, MMMM d, yyyy",
        "f" => "dddd, MMMM d, yyyy h:mm tt",
        "F" | "" => "dddd, MMMM d, yyyy h:mm:ss tt",
        "g" => "M/d/yyyy h:mm tt",
        "G" => "M/d/yyyy h:mm:ss tt",
        "M" | "m" => "MMMM d",
        "o" | "O" => "yyyy'-'MM'-'dd'T'HH':'mm':'ss'.'fffffffzzz",
        "r" | "R" => "ddd, dd MMM yyyy HH':'mm':'ss 'GMT'",
        "s" => "yyyy'-'MM'-'dd'T'HH':'mm':'ss",
        "t" => "h:mm tt",
        "T" => "h:mm:ss tt",
        "u" => "yyyy'-'MM'-'dd HH':'mm':'ss'Z'",
        "U" => "dddd, MMMM d, yyyy h:mm:ss tt",
        "y" | "Y" => "MMMM yyyy",
        other => other,
    };
    let (year, month, day, hour, minute, second, frac) = m.fields();
    let chars: Vec<char> = expanded.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let run = chars[i..].iter().take_while(|x| **x == c).count();
        match c {
            '\'' | '"' => {
                let close = chars[i + 1..].iter().position(|x| *x == c);
                let end = close.map_or(chars.len(), |p| i + 1 + p);
                out.extend(&chars[i + 1..end]);
                i = end + 1;
                continue;
            }
            '\\' => {
                if let Some(n) = chars.get(i + 1) {
                    out.push(*n);
                }
                i += 2;
                continue;
            }
            'y' => {
                let _ = match run {
                    1 => write!(out, "{}", year % 100),
                    2 => write!(out, "{:02}", year % 100),
                    n => write!(out, "{:0width$}", year, width = n),
                };
            }
            'M' => match run {
                1 => out.push_str(&month.to_string()),
                2 => out.push_str(&format!("{month:02}")),
                3 => out.push_str(MONTHS.get(month as usize - 1).map_or("", |s| &s[..3])),
                _ => out.push_str(MONTHS.get(month as usize - 1).copied().unwrap_or("")),
            },
            'd' => match run {
                1 => out.push_str(&day.to_string()),
                2 => out.push_str(&format!("{day:02}")),
                3 => out.push_str(&DAYS[m.weekday() as usize][..3]),
                _ => out.push_str(DAYS[m.weekday() as usize]),
            },
            'H' => out.push_str(&format!("{hour:0width$}", width = run.min(2))),
            'h' => {
                let h12 = if hour % 12 == 0 { 12 } else { hour % 12 };
                out.push_str(&format!("{h12:0width$}", width = run.min(2)));
            }
            'm' => out.push_str(&format!("{minute:0width$}", width = run.min(2))),
            's' => out.push_str(&format!("{second:0width$}", width = run.min(2))),
            'f' | 'F' => {
                let digits = format!("{frac:07}");
                let n = run.min(7);
                let part = &digits[..n];
                if c == 'F' {
                    out.push_str(part.trim_end_matches('0'));
                } else {
                    out.push_str(part);
                }
            }
            't' => {
                let ampm = if hour < 12 { "AM" } else { "PM" };
                out.push_str(if run == 1 { &ampm[..1] } else { ampm });
            }
            'z' | 'K' => {
                let sign = if m.offset < 0 { '-' } else { '+' };
                let abs = m.offset.unsigned_abs();
                let _ = match (c, run) {
                    ('z', 1) => write!(out, "{sign}{}", abs / 60),
                    ('z', 2) => write!(out, "{sign}{:02}", abs / 60),
                    _ => write!(out, "{sign}{:02}:{:02}", abs / 60, abs % 60),
                };
            }
            other => {
                for _ in 0..run {
                    out.push(other);
                }
            }
        }
        i += run;
    }
    out
}

/// A `TimeSpan` as .NET writes it with `ToString()` (`[-][d.]hh:mm:ss[.fffffff]`).
pub(crate) fn format_timespan(ticks: i64) -> String {
    let neg = ticks < 0;
    let t = ticks.unsigned_abs();
    let days = t / TICKS_PER_DAY as u64;
    let rest = t % TICKS_PER_DAY as u64;
    let secs = rest / 10_000_000;
    let frac = rest % 10_000_000;
    let mut s = String::new();
    if neg {
        s.push('-');
    }
    if days > 0 {
        let _ = write!(s, "{days}.");
    }
    let _ = write!(
        s,
        "{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    if frac > 0 {
        let _ = write!(s, ".{frac:07}");
    }
    s
}

/// Builds an object with type names, an optional `ToString`, adapted and extended
/// properties.
pub(crate) fn object(
    type_names: &[&str],
    to_string: Option<String>,
    adapted: Vec<clixml::Property>,
    extended: Vec<clixml::Property>,
) -> Value {
    Value::object(PsObject {
        type_names: Some(clixml::type_names_of(type_names)),
        to_string,
        content: Content::None,
        adapted,
        extended,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthiness_follows_powershell() {
        assert!(!truthy(&Val::null()));
        assert!(!truthy(&Val::str("")));
        assert!(truthy(&Val::str("False")));
        assert!(!truthy(&Val::int(0)));
        assert!(truthy(&Val::double(0.5)));
        assert!(!truthy(&Val::Array(vec![])));
        assert!(!truthy(&Val::Array(vec![Val::int(0)])));
        assert!(truthy(&Val::Array(vec![Val::int(0), Val::int(0)])));
    }

    #[test]
    fn numbers_and_strings_convert_both_ways() {
        assert_eq!(to_number(&Val::str(" 42 ")), Some(Num::Int(42)));
        assert_eq!(to_number(&Val::str("0x1F")), Some(Num::Int(31)));
        assert_eq!(to_number(&Val::str("2.5")), Some(Num::Double(2.5)));
        assert_eq!(to_number(&Val::str("abc")), None);
        assert_eq!(to_str(&Val::bool(true)), "True");
        assert_eq!(to_str(&Val::Array(vec![Val::int(1), Val::str("a")])), "1 a");
        assert_eq!(format_double(1.0 / 3.0), "0.333333333333333");
        assert_eq!(format_double(2.0 / 3.0), "0.666666666666667");
        assert_eq!(format_double(3.5), "3.5");
        assert_eq!(format_double(1e15), "1E+15");
        assert_eq!(format_double(0.0001), "0.0001");
        assert_eq!(format_double(0.000001), "1E-06");
        assert_eq!(Val::int(5), Val::V(Value::I32(5)));
        assert_eq!(Val::int(5_000_000_000), Val::V(Value::I64(5_000_000_000)));
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("win*", "WinRM", false));
        assert!(!wildcard_match("win*", "WinRM", true));
        assert!(wildcard_match("*RM", "WinRM", false));
        assert!(wildcard_match("W?n[a-z]M", "WinRM", false));
        assert!(wildcard_match("*", "", false));
        assert!(!wildcard_match("a*b", "acbd", false));
        assert!(wildcard_match("a*b*", "acbd", false));
        assert!(wildcard_match("a`*", "a*", false));
        assert!(!wildcard_match("a`*", "ab", false));
        // Large inputs take the regex path with the same answers.
        let long = "x".repeat(20_000);
        assert!(wildcard_match(
            &format!("{}*", "x".repeat(600)),
            &long,
            false
        ));
        assert!(!wildcard_match(
            &format!("*y{}", "x".repeat(600)),
            &long,
            false
        ));
        assert!(wildcard_match(
            &format!("[w-y]*{}", "X".repeat(600)),
            &long,
            false
        ));
    }

    #[test]
    fn dates_round_trip_and_format() {
        let d = DateTime::from_text("2024-02-29T13:05:09.1234567+00:00");
        let m = Moment::parse(&d).unwrap();
        assert_eq!(m.to_datetime(), d);
        assert_eq!(m.weekday(), 4); // Thursday
        assert_eq!(
            format_moment(m, "F"),
            "Thursday, February 29, 2024 1:05:09 PM"
        );
        assert_eq!(
            format_moment(m, "yyyy-MM-dd HH:mm:ss.fff"),
            "2024-02-29 13:05:09.123"
        );
        assert_eq!(format_moment(m, "o"), "2024-02-29T13:05:09.1234567+00:00");
        assert_eq!(
            format_moment(m, "MM/dd/yyyy HH:mm:ss"),
            "02/29/2024 13:05:09"
        );
        let next = m.add_ticks(11 * 3_600 * 10_000_000);
        assert_eq!(format_moment(next, "s"), "2024-03-01T00:05:09");
        let epoch = Moment::parse(&DateTime::from_text("1970-01-01T00:00:00Z")).unwrap();
        assert_eq!(epoch.ticks, 621_355_968_000_000_000);
        assert_eq!(
            format_timespan(36_610_000_000 + 864_000_000_000),
            "1.01:01:01"
        );
    }
}
