//! Operators, member access, method calls, casts and .NET formatting for the subset.
//!
//! Comparison follows PowerShell: the left operand decides the conversion of the right one
//! (`5 -eq '5'` is true, `'5' -eq 5` compares strings), string comparisons ignore case
//! unless the operator is a `-c` one, enums compare by name or by value, and a collection
//! on the left filters (`@(1,2,3) -gt 1` is `2,3`).

use std::cmp::Ordering;

use psfleet_core::psrp::clixml::{self, Content, Property, PsObject, Value, Version};
use regex::{Regex, RegexBuilder};

use super::eval::{Engine, Flow, MAX_ITEMS, MAX_STRING, R};
use super::objects;
use super::records;
use super::syntax::{BinOp, CmpOp, Expr, UnOp};
use super::values::{
    self, DAYS, Moment, Num, Table, Val, format_moment, format_timespan, number_of, to_number,
    to_str, truthy, value_to_str, wildcard_match,
};

/// Largest compiled regular expression accepted from a script.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

// ===== Binary operators =====

pub(crate) fn eval_binary(e: &mut Engine<'_>, op: BinOp, l: &Expr, r: &Expr) -> R<Val> {
    match op {
        BinOp::And => {
            let a = e.eval(l)?;
            if !truthy(&a) {
                return Ok(Val::bool(false));
            }
            let b = e.eval(r)?;
            Ok(Val::bool(truthy(&b)))
        }
        BinOp::Or => {
            let a = e.eval(l)?;
            if truthy(&a) {
                return Ok(Val::bool(true));
            }
            let b = e.eval(r)?;
            Ok(Val::bool(truthy(&b)))
        }
        BinOp::Is(positive) => {
            let a = e.eval(l)?;
            let t = match r {
                Expr::TypeLit(t) => t.clone(),
                other => to_str(&e.eval(other)?),
            };
            Ok(Val::bool(is_type(&a, &t) == positive))
        }
        BinOp::As => {
            let a = e.eval(l)?;
            let t = match r {
                Expr::TypeLit(t) => t.clone(),
                other => to_str(&e.eval(other)?),
            };
            Ok(convert(&t, a).unwrap_or_else(|_| Val::null()))
        }
        _ => {
            let a = e.eval(l)?;
            let b = e.eval(r)?;
            let (start, end) = e.cur;
            binary(e, op, a, b, start, end)
        }
    }
}

/// Applies a binary operator to two values.
pub(crate) fn binary(
    e: &mut Engine<'_>,
    op: BinOp,
    l: Val,
    r: Val,
    start: usize,
    end: usize,
) -> R<Val> {
    e.charge(values::cost(&l) + values::cost(&r))?;
    match op {
        BinOp::Add => add(e, l, r, start, end),
        BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => arith(e, op, l, r, start, end),
        BinOp::And => Ok(Val::bool(truthy(&l) && truthy(&r))),
        BinOp::Or => Ok(Val::bool(truthy(&l) || truthy(&r))),
        BinOp::Xor => Ok(Val::bool(truthy(&l) != truthy(&r))),
        BinOp::Format => {
            let args = r.enumerate();
            match format_composite(&to_str(&l), &args) {
                Ok(s) => Ok(Val::str(s)),
                Err(msg) => Err(e.fail(records::runtime_error(
                    format!("Error formatting a string: {msg}"),
                    "FormatError",
                    7,
                    "",
                    e.site(start, end),
                ))),
            }
        }
        BinOp::Join => {
            let sep = to_str(&r);
            let mut joined = String::new();
            for (i, item) in l.enumerate().iter().enumerate() {
                if i > 0 {
                    joined.push_str(&sep);
                }
                joined.push_str(&to_str(item));
                if joined.len() > MAX_STRING {
                    return Err(e.limit(
                        "The script built a string larger than this simulated host allows.",
                    ));
                }
            }
            Ok(Val::str(joined))
        }
        BinOp::Split => {
            let re = regex(e, &to_str(&r), false, start, end)?;
            let parts = l
                .enumerate()
                .iter()
                .flat_map(|s| {
                    re.split(&to_str(s))
                        .map(|p| Val::str(p.to_owned()))
                        .collect::<Vec<_>>()
                })
                .collect();
            Ok(Val::Array(parts))
        }
        BinOp::Replace { case } => {
            let mut args = r.enumerate().into_iter();
            let pattern = args.next().map(|v| to_str(&v)).unwrap_or_default();
            let replacement = args.next().map(|v| to_str(&v)).unwrap_or_default();
            let re = regex(e, &pattern, case, start, end)?;
            let texts: Vec<String> = l.items().iter().map(to_str).collect();
            // Bound the result before building it.
            let mut size = 0usize;
            let bound = texts.iter().fold(0usize, |acc, t| {
                acc.saturating_add(t.len())
                    .saturating_add((t.len() + 1).saturating_mul(replacement.len()))
            });
            for t in texts.iter().filter(|_| bound > MAX_STRING) {
                let n = re.find_iter(t).count();
                size = size
                    .saturating_add(t.len())
                    .saturating_add(n.saturating_mul(replacement.len()));
            }
            if size > MAX_STRING {
                return Err(
                    e.limit("The script built a string larger than this simulated host allows.")
                );
            }
            let replaced: Vec<Val> = texts
                .iter()
                .map(|t| Val::str(re.replace_all(t, replacement.as_str()).into_owned()))
                .collect();
            Ok(match l {
                Val::Array(_) => Val::Array(replaced),
                _ => super::eval::collapse(replaced),
            })
        }
        BinOp::Cmp(c, case) => compare(e, c, case, l, r, start, end),
        BinOp::Is(_) | BinOp::As => Ok(Val::null()),
    }
}

fn cast_failure(e: &mut Engine<'_>, value: &Val, target: &str, start: usize, end: usize) -> Flow {
    let text = to_str(value);
    e.fail(records::runtime_error(
        format!(
            "Cannot convert value \"{text}\" to type \"{target}\". Error: \"Input string was not in a correct format.\""
        ),
        "InvalidCastFromStringToInteger",
        5,
        "",
        e.site(start, end),
    ))
}

fn no_operator(e: &mut Engine<'_>, l: &Val, method: &str, start: usize, end: usize) -> Flow {
    e.fail(records::runtime_error(
        format!(
            "Method invocation failed because [{}] does not contain a method named '{method}'.",
            l.type_name()
        ),
        "MethodNotFound",
        7,
        "",
        e.site(start, end),
    ))
}

fn add(e: &mut Engine<'_>, l: Val, r: Val, start: usize, end: usize) -> R<Val> {
    match l {
        Val::Array(mut items) => {
            let extra = r.enumerate();
            if items.len() + extra.len() > MAX_ITEMS {
                return Err(
                    e.limit("The script built an array larger than this simulated host allows.")
                );
            }
            items.extend(extra);
            Ok(Val::Array(items))
        }
        Val::Table(mut t) => {
            let Val::Table(other) = r else {
                return Err(e.fail(records::runtime_error(
                    "A hash table can only be added to another hash table.".into(),
                    "AddHashTableToNonHashTable",
                    7,
                    "",
                    e.site(start, end),
                )));
            };
            for (k, v) in other.entries {
                let key = k.display_text().into_owned();
                if t.get(&key).is_some() {
                    return Err(e.fail(records::runtime_error(
                        format!("Item has already been added. Key in dictionary: '{key}'  Key being added: '{key}'"),
                        "System.ArgumentException",
                        0,
                        "",
                        e.site(start, end),
                    )));
                }
                t.entries.push((k, v));
            }
            Ok(Val::Table(t))
        }
        Val::Block(_) => Err(no_operator(e, &l, "op_Addition", start, end)),
        Val::V(ref value) => match value.primitive() {
            Value::Nil => Ok(match r {
                Val::Array(items) => Val::Array(items),
                other => other,
            }),
            Value::String(s) => {
                let mut s = s.clone();
                s.push_str(&to_str(&r));
                if s.len() > MAX_STRING {
                    return Err(e.limit(
                        "The script built a string larger than this simulated host allows.",
                    ));
                }
                Ok(Val::str(s))
            }
            Value::DateTime(d) => match (Moment::parse(d), duration_ticks(&r)) {
                (Some(m), Some(t)) => Ok(Val::V(Value::DateTime(m.add_ticks(t).to_datetime()))),
                _ => Err(no_operator(e, &l, "op_Addition", start, end)),
            },
            Value::Object(o) if o.list().is_some() => {
                let items = l.enumerate();
                add(e, Val::Array(items), r, start, end)
            }
            _ => arith(e, BinOp::Add, l, r, start, end),
        },
    }
}

fn duration_ticks(v: &Val) -> Option<i64> {
    match v {
        Val::V(Value::Duration(d)) => d.ticks(),
        _ => None,
    }
}

fn moment_of(v: &Val) -> Option<Moment> {
    match v {
        Val::V(value) => match value.primitive() {
            Value::DateTime(d) => Moment::parse(d),
            Value::String(s) => parse_date(s),
            _ => None,
        },
        _ => None,
    }
}

/// Parses a date the way `[datetime]'...'` does for the common forms (ISO 8601 and
/// `M/d/yyyy [H:mm[:ss]]`, invariant culture).
pub(crate) fn parse_date(s: &str) -> Option<Moment> {
    let t = s.trim();
    if let Some(m) = Moment::parse(&clixml::DateTime::from_text(t)) {
        return Some(m);
    }
    if t.len() == 10 && t.as_bytes().get(4) == Some(&b'-') {
        return Moment::parse(&clixml::DateTime::from_text(format!("{t}T00:00:00")));
    }
    let (date, time) = t.split_once(' ').unwrap_or((t, "00:00:00"));
    let mut d = date.split('/');
    let (m, day, y) = (d.next()?, d.next()?, d.next()?);
    let mut tp = time.trim().split(':');
    let (h, mi, sec) = (
        tp.next().unwrap_or("0"),
        tp.next().unwrap_or("0"),
        tp.next().unwrap_or("0"),
    );
    let text = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        y.parse::<u32>().ok()?,
        m.parse::<u32>().ok()?,
        day.parse::<u32>().ok()?,
        h.parse::<u32>().ok()?,
        mi.parse::<u32>().ok()?,
        sec.parse::<u32>().ok()?
    );
    Moment::parse(&clixml::DateTime::from_text(text))
}

fn arith(e: &mut Engine<'_>, op: BinOp, l: Val, r: Val, start: usize, end: usize) -> R<Val> {
    if op == BinOp::Sub
        && let (Some(a), Some(b)) = (moment_of(&l), moment_of(&r))
        && matches!(&l, Val::V(v) if matches!(v.primitive(), Value::DateTime(_)))
    {
        let ticks = (a.ticks - i64::from(a.offset) * 600_000_000)
            - (b.ticks - i64::from(b.offset) * 600_000_000);
        return Ok(Val::V(Value::Duration(clixml::Duration::from_ticks(ticks))));
    }
    if op == BinOp::Mul {
        match &l {
            Val::V(Value::String(s)) => {
                let n = to_number(&r).map_or(0, |n| n.as_f64().max(0.0) as usize);
                if s.len().saturating_mul(n) > MAX_STRING {
                    return Err(e.limit(
                        "The script built a string larger than this simulated host allows.",
                    ));
                }
                return Ok(Val::str(s.repeat(n)));
            }
            Val::Array(items) => {
                let n = to_number(&r).map_or(0, |n| n.as_f64().max(0.0) as usize);
                if items.len().saturating_mul(n) > MAX_ITEMS {
                    return Err(e.limit(
                        "The script built an array larger than this simulated host allows.",
                    ));
                }
                let mut out = Vec::with_capacity(items.len() * n);
                for _ in 0..n {
                    out.extend(items.iter().cloned());
                }
                return Ok(Val::Array(out));
            }
            _ => {}
        }
    }
    let method = match op {
        BinOp::Add => "op_Addition",
        BinOp::Sub => "op_Subtraction",
        BinOp::Mul => "op_Multiply",
        BinOp::Div => "op_Division",
        _ => "op_Modulus",
    };
    if matches!(l, Val::Array(_) | Val::Table(_) | Val::Block(_)) {
        return Err(no_operator(e, &l, method, start, end));
    }
    let Some(a) = to_number(&l) else {
        return Err(if matches!(&l, Val::V(Value::String(_))) {
            cast_failure(e, &l, "System.Int32", start, end)
        } else {
            no_operator(e, &l, method, start, end)
        });
    };
    let Some(b) = to_number(&r) else {
        return Err(cast_failure(e, &r, "System.Int32", start, end));
    };
    let divide_by_zero = |e: &mut Engine<'_>| {
        e.fail(records::runtime_error(
            "Attempted to divide by zero.".into(),
            "RuntimeException",
            0,
            "",
            e.site(start, end),
        ))
    };
    Ok(match (a, b) {
        (Num::Int(x), Num::Int(y)) => match op {
            BinOp::Add => x
                .checked_add(y)
                .map_or(Val::double(x as f64 + y as f64), Val::int),
            BinOp::Sub => x
                .checked_sub(y)
                .map_or(Val::double(x as f64 - y as f64), Val::int),
            BinOp::Mul => x
                .checked_mul(y)
                .map_or(Val::double(x as f64 * y as f64), Val::int),
            BinOp::Div => {
                if y == 0 {
                    return Err(divide_by_zero(e));
                }
                if x % y == 0 {
                    Val::int(x / y)
                } else {
                    Val::double(x as f64 / y as f64)
                }
            }
            _ => {
                if y == 0 {
                    return Err(divide_by_zero(e));
                }
                Val::int(x % y)
            }
        },
        (a, b) => {
            let (x, y) = (a.as_f64(), b.as_f64());
            match op {
                BinOp::Add => Val::double(x + y),
                BinOp::Sub => Val::double(x - y),
                BinOp::Mul => Val::double(x * y),
                BinOp::Div => {
                    if y == 0.0 {
                        return Err(divide_by_zero(e));
                    }
                    Val::double(x / y)
                }
                _ => Val::double(x % y),
            }
        }
    })
}

pub(crate) fn unary(e: &mut Engine<'_>, op: UnOp, v: Val) -> R<Val> {
    match op {
        UnOp::Not => Ok(Val::bool(!truthy(&v))),
        UnOp::Comma => Ok(Val::Array(vec![v])),
        UnOp::Plus => Ok(to_number(&v).map_or(v, Num::into_val)),
        UnOp::Neg => match to_number(&v) {
            Some(Num::Int(i)) => Ok(i.checked_neg().map_or(Val::double(-(i as f64)), Val::int)),
            Some(Num::Double(d)) => Ok(Val::double(-d)),
            None => {
                let (start, end) = e.cur;
                Err(cast_failure(e, &v, "System.Int32", start, end))
            }
        },
    }
}

// ===== Comparison =====

fn regex(e: &mut Engine<'_>, pattern: &str, case: bool, start: usize, end: usize) -> R<Regex> {
    RegexBuilder::new(pattern)
        .case_insensitive(!case)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|_| {
            e.fail(records::runtime_error(
                format!("The regular expression pattern {pattern} is not valid."),
                "InvalidRegularExpression",
                7,
                pattern,
                e.site(start, end),
            ))
        })
}

fn is_collection(v: &Val) -> bool {
    match v {
        Val::Array(_) => true,
        Val::V(Value::Object(o)) => o.list().is_some() && !o.is_enum(),
        _ => false,
    }
}

fn compare(
    e: &mut Engine<'_>,
    c: CmpOp,
    case: bool,
    l: Val,
    r: Val,
    start: usize,
    end: usize,
) -> R<Val> {
    match c {
        CmpOp::Contains | CmpOp::NotContains => {
            let found = l.items().iter().any(|i| equals(i, &r, case));
            return Ok(Val::bool(found == (c == CmpOp::Contains)));
        }
        CmpOp::In | CmpOp::NotIn => {
            let found = r.items().iter().any(|i| equals(&l, i, case));
            return Ok(Val::bool(found == (c == CmpOp::In)));
        }
        _ => {}
    }
    if is_collection(&l) {
        let mut out = Vec::new();
        for item in l.enumerate() {
            if scalar_compare(e, c, case, &item, &r, false, start, end)? {
                out.push(item);
            }
        }
        return Ok(Val::Array(out));
    }
    Ok(Val::bool(scalar_compare(
        e, c, case, &l, &r, true, start, end,
    )?))
}

#[allow(clippy::too_many_arguments)] // the operator, its operands and the error site
pub(crate) fn scalar_compare(
    e: &mut Engine<'_>,
    c: CmpOp,
    case: bool,
    l: &Val,
    r: &Val,
    set_matches: bool,
    start: usize,
    end: usize,
) -> R<bool> {
    Ok(match c {
        CmpOp::Eq => equals(l, r, case),
        CmpOp::Ne => !equals(l, r, case),
        CmpOp::Gt => ordering(l, r, case) == Some(Ordering::Greater),
        CmpOp::Ge => matches!(
            ordering(l, r, case),
            Some(Ordering::Greater | Ordering::Equal)
        ),
        CmpOp::Lt => ordering(l, r, case) == Some(Ordering::Less),
        CmpOp::Le => matches!(ordering(l, r, case), Some(Ordering::Less | Ordering::Equal)),
        CmpOp::Like => wildcard_match(&to_str(r), &to_str(l), case),
        CmpOp::NotLike => !wildcard_match(&to_str(r), &to_str(l), case),
        CmpOp::Match | CmpOp::NotMatch => {
            let re = regex(e, &to_str(r), case, start, end)?;
            let text = to_str(l);
            let caps = re.captures(&text);
            if set_matches && let Some(caps) = &caps {
                let mut t = Table::default();
                for (i, name) in re.capture_names().enumerate() {
                    if let Some(m) = caps.get(i) {
                        let key =
                            name.map_or(Value::I32(i as i32), |n| Value::String(n.to_owned()));
                        t.set(key, Val::str(m.as_str().to_owned()));
                    }
                }
                e.set_var("Matches", Val::Table(t));
            }
            caps.is_some() == (c == CmpOp::Match)
        }
        CmpOp::Contains | CmpOp::NotContains | CmpOp::In | CmpOp::NotIn => false,
    })
}

fn enum_of(v: &Val) -> Option<(&str, i32)> {
    match v {
        Val::V(Value::Object(o)) if o.is_enum() => Some((
            o.to_string.as_deref().unwrap_or(""),
            match &o.content {
                Content::Value(inner) => inner.as_i32().unwrap_or(0),
                _ => 0,
            },
        )),
        _ => None,
    }
}

fn str_eq(a: &str, b: &str, case: bool) -> bool {
    if case {
        a == b
    } else {
        a.to_lowercase() == b.to_lowercase()
    }
}

/// `-eq`: PowerShell equality with the left operand's type deciding.
pub(crate) fn equals(l: &Val, r: &Val, case: bool) -> bool {
    if let Some((name, value)) = enum_of(l) {
        if let Some((_, rv)) = enum_of(r) {
            return value == rv;
        }
        return match to_number(r) {
            Some(n) if !matches!(r, Val::V(Value::String(_))) => n.as_f64() == f64::from(value),
            _ => str_eq(name, &to_str(r), case),
        };
    }
    let Val::V(lv) = l else {
        return l == r;
    };
    match lv.primitive() {
        Value::Nil => r.is_null(),
        Value::String(s) => !r.is_null() && str_eq(s, &to_str(r), case),
        Value::Bool(b) => *b == truthy(r),
        Value::DateTime(_) => match (moment_of(l), moment_of(r)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        },
        Value::Version(v) => match r {
            Val::V(rv) => {
                version_cmp(v, &Version::from_text(value_to_str(rv))) == Some(Ordering::Equal)
            }
            _ => false,
        },
        Value::Object(_) => match r {
            Val::V(rv) => lv == rv,
            _ => false,
        },
        other => match (number_of(other), to_number(r)) {
            (Some(a), Some(b)) if !r.is_null() => match (a, b) {
                (Num::Int(x), Num::Int(y)) => x == y,
                (a, b) => a.as_f64() == b.as_f64(),
            },
            _ => other.display_text() == to_str(r),
        },
    }
}

fn version_cmp(a: &Version, b: &Version) -> Option<Ordering> {
    let (a, b) = (a.components()?, b.components()?);
    Some(a.cmp(&b))
}

/// Ordering for `-gt`/`-lt` and Sort-Object (`$null` sorts first).
pub(crate) fn ordering(l: &Val, r: &Val, case: bool) -> Option<Ordering> {
    if let Some((lname, lv)) = enum_of(l) {
        if let Some((_, rv)) = enum_of(r) {
            return Some(lv.cmp(&rv));
        }
        return match to_number(r) {
            Some(n) if !matches!(r, Val::V(Value::String(_))) => {
                f64::from(lv).partial_cmp(&n.as_f64())
            }
            _ => Some(lname.to_lowercase().cmp(&to_str(r).to_lowercase())),
        };
    }
    if r.is_null() {
        return Some(if l.is_null() {
            Ordering::Equal
        } else {
            Ordering::Greater
        });
    }
    let Val::V(lv) = l else {
        return Some(to_str(l).cmp(&to_str(r)));
    };
    match lv.primitive() {
        Value::Nil => Some(Ordering::Less),
        Value::String(s) => Some(if case {
            s.as_str().cmp(to_str(r).as_str())
        } else {
            s.to_lowercase().cmp(&to_str(r).to_lowercase())
        }),
        Value::DateTime(_) => match (moment_of(l), moment_of(r)) {
            (Some(a), Some(b)) => Some(a.ticks.cmp(&b.ticks)),
            _ => None,
        },
        Value::Version(v) => match r {
            Val::V(rv) => version_cmp(v, &Version::from_text(value_to_str(rv))),
            _ => None,
        },
        Value::Bool(b) => Some(b.cmp(&truthy(r))),
        other => match (number_of(other), to_number(r)) {
            (Some(Num::Int(x)), Some(Num::Int(y))) => Some(x.cmp(&y)),
            (Some(a), Some(b)) => a.as_f64().partial_cmp(&b.as_f64()),
            _ => Some(
                value_to_str(other)
                    .to_lowercase()
                    .cmp(&to_str(r).to_lowercase()),
            ),
        },
    }
}

// ===== Members =====

/// `$x.Name`: hashtable keys, object properties, the members of strings, dates, time
/// spans and versions, `Count`/`Length`, and member enumeration over collections.
pub(crate) fn member(v: &Val, name: &str) -> Val {
    let lower = name.to_ascii_lowercase();
    match v {
        Val::Table(t) => {
            if let Some(found) = t.get(name) {
                return found.clone();
            }
            match lower.as_str() {
                "count" => Val::int(t.entries.len() as i64),
                "keys" => Val::Array(t.entries.iter().map(|(k, _)| Val::V(k.clone())).collect()),
                "values" => Val::Array(t.entries.iter().map(|(_, v)| v.clone()).collect()),
                _ => Val::null(),
            }
        }
        Val::Array(items) => match lower.as_str() {
            "count" | "length" => Val::int(items.len() as i64),
            _ => {
                let mut out = Vec::new();
                for item in items {
                    let m = member(item, name);
                    if !m.is_null() {
                        out.extend(m.enumerate());
                    }
                }
                match out.len() {
                    0 => Val::null(),
                    1 => out.pop().unwrap_or_else(Val::null),
                    _ => Val::Array(out),
                }
            }
        },
        Val::Block(_) => Val::null(),
        Val::V(value) => value_member(value, &lower, name),
    }
}

fn value_member(value: &Value, lower: &str, name: &str) -> Val {
    if let Value::Object(o) = value {
        if let Some(p) = o.property(name) {
            return Val::V(p.clone());
        }
        if let Some(d) = o.dictionary() {
            if let Some(found) = d
                .iter()
                .find(|e| e.key.display_text().eq_ignore_ascii_case(name))
            {
                return Val::V(found.value.clone());
            }
            if lower == "count" {
                return Val::int(d.len() as i64);
            }
        }
        if let Some(items) = o.list() {
            if matches!(lower, "count" | "length") {
                return Val::int(items.len() as i64);
            }
            let vals: Vec<Val> = items.iter().cloned().map(Val::V).collect();
            let e = Val::Array(vals);
            return match &e {
                Val::Array(items) => {
                    let mut out: Vec<Val> = items
                        .iter()
                        .filter_map(|i| match i {
                            Val::V(v) => {
                                let m = value_member(v, lower, name);
                                (!m.is_null()).then_some(m)
                            }
                            _ => None,
                        })
                        .collect();
                    match out.len() {
                        0 => Val::null(),
                        1 => out.pop().unwrap_or_else(Val::null),
                        _ => Val::Array(out),
                    }
                }
                _ => Val::null(),
            };
        }
        if let Content::Value(inner) = &o.content {
            return value_member(inner, lower, name);
        }
        return match lower {
            "count" | "length" => Val::int(1),
            _ => Val::null(),
        };
    }
    match (value, lower) {
        (Value::Nil, "count" | "length") => Val::int(0),
        (Value::Nil, _) => Val::null(),
        (Value::String(s), "length") => Val::int(s.encode_utf16().count() as i64),
        (Value::DateTime(d), _) => match Moment::parse(d) {
            Some(m) => date_member(m, lower),
            None => Val::null(),
        },
        (Value::Duration(d), _) => match d.ticks() {
            Some(t) => timespan_member(t, lower),
            None => Val::null(),
        },
        (Value::Version(v), _) => {
            let c = v.components().unwrap_or_default();
            let at = |i: usize| Val::int(c.get(i).map_or(-1, |x| i64::from(*x)));
            match lower {
                "major" => at(0),
                "minor" => at(1),
                "build" => at(2),
                "revision" => at(3),
                _ => Val::null(),
            }
        }
        (_, "count" | "length") => Val::int(1),
        _ => Val::null(),
    }
}

fn date_member(m: Moment, lower: &str) -> Val {
    let (y, mo, d, h, mi, s, frac) = m.fields();
    match lower {
        "year" => Val::int(y),
        "month" => Val::int(mo),
        "day" => Val::int(d),
        "hour" => Val::int(h),
        "minute" => Val::int(mi),
        "second" => Val::int(s),
        "millisecond" => Val::int(frac / 10_000),
        "ticks" => Val::V(Value::I64(m.ticks)),
        "dayofweek" => {
            let w = m.weekday();
            Val::V(Value::enumeration(
                "System.DayOfWeek",
                DAYS[w as usize],
                w as i32,
            ))
        }
        "dayofyear" => {
            let jan1 =
                super::ops::parse_date(&format!("{y:04}-01-01")).map_or(m.ticks, |j| j.ticks);
            Val::int((m.ticks - jan1) / 864_000_000_000 + 1)
        }
        "date" => Val::V(Value::DateTime(
            Moment {
                ticks: m.ticks - m.ticks.rem_euclid(864_000_000_000),
                offset: m.offset,
            }
            .to_datetime(),
        )),
        "timeofday" => Val::V(Value::Duration(clixml::Duration::from_ticks(
            m.ticks.rem_euclid(864_000_000_000),
        ))),
        "kind" => Val::V(Value::enumeration("System.DateTimeKind", "Local", 2)),
        _ => Val::null(),
    }
}

fn timespan_member(t: i64, lower: &str) -> Val {
    let secs = t / 10_000_000;
    match lower {
        "days" => Val::int(t / 864_000_000_000),
        "hours" => Val::int(secs / 3600 % 24),
        "minutes" => Val::int(secs / 60 % 60),
        "seconds" => Val::int(secs % 60),
        "milliseconds" => Val::int(t / 10_000 % 1000),
        "ticks" => Val::V(Value::I64(t)),
        "totaldays" => Val::double(t as f64 / 864_000_000_000.0),
        "totalhours" => Val::double(t as f64 / 36_000_000_000.0),
        "totalminutes" => Val::double(t as f64 / 600_000_000.0),
        "totalseconds" => Val::double(t as f64 / 10_000_000.0),
        "totalmilliseconds" => Val::double(t as f64 / 10_000.0),
        _ => Val::null(),
    }
}

/// `$x[i]`: array elements (negative from the end, several indexes make a slice),
/// hashtable keys, characters of a string.
pub(crate) fn index(v: &Val, i: &Val) -> Val {
    if let Val::Array(idx) = i {
        return Val::Array(
            idx.iter()
                .map(|j| index(v, j))
                .filter(|x| !x.is_null())
                .collect(),
        );
    }
    let at = |len: usize| -> Option<usize> {
        let n = to_number(i)?.as_f64() as i64;
        let n = if n < 0 { n + len as i64 } else { n };
        usize::try_from(n).ok().filter(|n| *n < len)
    };
    match v {
        Val::Array(items) => at(items.len())
            .and_then(|n| items.get(n).cloned())
            .unwrap_or_else(Val::null),
        Val::Table(t) => t.get(&to_str(i)).cloned().unwrap_or_else(Val::null),
        Val::V(Value::String(s)) => {
            let units: Vec<u16> = s.encode_utf16().collect();
            at(units.len())
                .and_then(|n| units.get(n))
                .map_or_else(Val::null, |c| Val::V(Value::Char(*c)))
        }
        Val::V(Value::Object(o)) => {
            if let Some(items) = o.list() {
                return at(items.len())
                    .and_then(|n| items.get(n).cloned())
                    .map_or_else(Val::null, Val::V);
            }
            if o.dictionary().is_some() {
                return value_member(
                    &Value::Object(o.clone()),
                    &to_str(i).to_ascii_lowercase(),
                    &to_str(i),
                );
            }
            if at(1) == Some(0) {
                v.clone()
            } else {
                Val::null()
            }
        }
        Val::V(Value::Nil) => Val::null(),
        other => {
            if at(1) == Some(0) {
                other.clone()
            } else {
                Val::null()
            }
        }
    }
}

// ===== Methods =====

fn arg_str(args: &[Val], i: usize) -> String {
    args.get(i).map(to_str).unwrap_or_default()
}

fn arg_num(args: &[Val], i: usize) -> Option<f64> {
    args.get(i).and_then(to_number).map(Num::as_f64)
}

fn method_missing(e: &mut Engine<'_>, type_name: &str, name: &str) -> Flow {
    let (start, end) = e.cur;
    e.fail(records::runtime_error(
        format!("Method invocation failed because [{type_name}] does not contain a method named '{name}'."),
        "MethodNotFound",
        7,
        "",
        e.site(start, end),
    ))
}

/// `$x.Method(args)`.
pub(crate) fn method(e: &mut Engine<'_>, v: Val, name: &str, args: Vec<Val>) -> R<Val> {
    let lower = name.to_ascii_lowercase();
    if v.is_null() {
        let (start, end) = e.cur;
        return Err(e.fail(records::runtime_error(
            "You cannot call a method on a null-valued expression.".into(),
            "InvokeMethodOnNull",
            7,
            "",
            e.site(start, end),
        )));
    }
    match lower.as_str() {
        "gettype" => {
            let full = v.type_name();
            let short = full.rsplit('.').next().unwrap_or(&full).to_owned();
            return Ok(Val::V(values::object(
                &[
                    "System.RuntimeType",
                    "System.Reflection.TypeInfo",
                    "System.Type",
                    "System.Object",
                ],
                Some(full.clone()),
                vec![
                    Property::new("Name", short),
                    Property::new("FullName", full),
                ],
                Vec::new(),
            )));
        }
        "equals" => {
            return Ok(Val::bool(
                args.first().is_some_and(|a| equals(&v, a, false)),
            ));
        }
        _ => {}
    }
    match &v {
        Val::Table(t) => {
            let mut t = t.clone();
            return match lower.as_str() {
                "containskey" | "contains" => Ok(Val::bool(t.get(&arg_str(&args, 0)).is_some())),
                "tostring" => Ok(Val::str(to_str(&v))),
                "add" => {
                    let key = args.first().cloned().unwrap_or_else(Val::null);
                    t.set(
                        key.to_clixml(),
                        args.get(1).cloned().unwrap_or_else(Val::null),
                    );
                    // A void method: no output.
                    Ok(Val::Array(Vec::new()))
                }
                _ => Err(method_missing(e, &v.type_name(), name)),
            };
        }
        Val::Array(items) => {
            return match lower.as_str() {
                "contains" => Ok(Val::bool(
                    args.first()
                        .is_some_and(|a| items.iter().any(|i| equals(i, a, true))),
                )),
                "indexof" => Ok(Val::int(
                    args.first()
                        .and_then(|a| items.iter().position(|i| equals(i, a, true)))
                        .map_or(-1, |p| p as i64),
                )),
                "tostring" => Ok(Val::str("System.Object[]")),
                _ => Err(method_missing(e, "System.Object[]", name)),
            };
        }
        Val::Block(b) => {
            return match lower.as_str() {
                "invoke" | "invokereturnasis" => {
                    let b = b.clone();
                    let out = e.capture(|e| e.call_block(&b, args, Vec::new(), None))?;
                    Ok(super::eval::collapse(out))
                }
                "tostring" => Ok(Val::str(b.text.clone())),
                _ => Err(method_missing(
                    e,
                    "System.Management.Automation.ScriptBlock",
                    name,
                )),
            };
        }
        Val::V(_) => {}
    }
    let Val::V(value) = &v else {
        return Ok(Val::null());
    };
    match value.primitive() {
        Value::String(s) => string_method(e, s, &lower, name, &args),
        Value::DateTime(d) => {
            let Some(m) = Moment::parse(d) else {
                return Ok(Val::null());
            };
            let add = |ticks: f64| {
                Ok(Val::V(Value::DateTime(
                    m.add_ticks(ticks as i64).to_datetime(),
                )))
            };
            let n = arg_num(&args, 0).unwrap_or(0.0);
            match lower.as_str() {
                "tostring" => Ok(Val::str(if args.is_empty() {
                    format_moment(m, "G")
                } else {
                    format_moment(m, &arg_str(&args, 0))
                })),
                "adddays" => add(n * 864_000_000_000.0),
                "addhours" => add(n * 36_000_000_000.0),
                "addminutes" => add(n * 600_000_000.0),
                "addseconds" => add(n * 10_000_000.0),
                "addmilliseconds" => add(n * 10_000.0),
                "addticks" => add(n),
                "touniversaltime" => Ok(Val::V(Value::DateTime(
                    Moment {
                        ticks: m.ticks - i64::from(m.offset) * 600_000_000,
                        offset: 0,
                    }
                    .to_datetime(),
                ))),
                "tolocaltime" => Ok(v.clone()),
                "toshortdatestring" => Ok(Val::str(format_moment(m, "d"))),
                "tolongdatestring" => Ok(Val::str(format_moment(m, "D"))),
                "toshorttimestring" => Ok(Val::str(format_moment(m, "t"))),
                "tolongtimestring" => Ok(Val::str(format_moment(m, "T"))),
                "subtract" => {
                    let other = args.first().cloned().unwrap_or_else(Val::null);
                    let (start, end) = e.cur;
                    binary(e, BinOp::Sub, v.clone(), other, start, end)
                }
                _ => Err(method_missing(e, "System.DateTime", name)),
            }
        }
        Value::Duration(d) if lower == "tostring" => Ok(Val::str(
            d.ticks().map_or_else(|| d.to_string(), format_timespan),
        )),
        other => {
            if lower == "tostring" {
                if let (Some(n), Some(fmt)) = (number_of(other), args.first()) {
                    return Ok(Val::str(format_number(n, &to_str(fmt))));
                }
                return Ok(Val::str(to_str(&v)));
            }
            if matches!(lower.as_str(), "compareto") {
                let o = args
                    .first()
                    .map_or(Some(Ordering::Greater), |a| ordering(&v, a, false));
                return Ok(Val::int(match o {
                    Some(Ordering::Less) => -1,
                    Some(Ordering::Equal) => 0,
                    _ => 1,
                }));
            }
            Err(method_missing(e, &v.type_name(), name))
        }
    }
}

fn string_method(e: &mut Engine<'_>, s: &str, lower: &str, name: &str, args: &[Val]) -> R<Val> {
    let a0 = arg_str(args, 0);
    let trim_set: Vec<char> = args
        .iter()
        .flat_map(|a| to_str(a).chars().collect::<Vec<_>>())
        .collect();
    let index = |n: Option<f64>| n.map_or(0, |n| n.max(0.0) as usize);
    Ok(match lower {
        "toupper" | "toupperinvariant" => Val::str(s.to_uppercase()),
        "tolower" | "tolowerinvariant" => Val::str(s.to_lowercase()),
        "tostring" | "clone" => Val::str(s.to_owned()),
        "trim" if args.is_empty() => Val::str(s.trim().to_owned()),
        "trim" => Val::str(s.trim_matches(trim_set.as_slice()).to_owned()),
        "trimstart" if args.is_empty() => Val::str(s.trim_start().to_owned()),
        "trimstart" => Val::str(s.trim_start_matches(trim_set.as_slice()).to_owned()),
        "trimend" if args.is_empty() => Val::str(s.trim_end().to_owned()),
        "trimend" => Val::str(s.trim_end_matches(trim_set.as_slice()).to_owned()),
        "contains" => Val::bool(s.contains(&a0)),
        "startswith" => Val::bool(s.starts_with(&a0)),
        "endswith" => Val::bool(s.ends_with(&a0)),
        "indexof" => Val::int(
            s.find(&a0)
                .map_or(-1, |i| s[..i].encode_utf16().count() as i64),
        ),
        "lastindexof" => Val::int(
            s.rfind(&a0)
                .map_or(-1, |i| s[..i].encode_utf16().count() as i64),
        ),
        "replace" => {
            if a0.is_empty() {
                return Ok(Val::str(s.to_owned()));
            }
            let out = s.replace(&a0, &arg_str(args, 1));
            if out.len() > MAX_STRING {
                return Err(
                    e.limit("The script built a string larger than this simulated host allows.")
                );
            }
            Val::str(out)
        }
        "split" => {
            let seps: Vec<char> = if args.is_empty() {
                vec![' ']
            } else {
                trim_set.clone()
            };
            Val::Array(
                s.split(seps.as_slice())
                    .map(|p| Val::str(p.to_owned()))
                    .collect(),
            )
        }
        "substring" => {
            let chars: Vec<char> = s.chars().collect();
            let from = index(arg_num(args, 0));
            let len =
                arg_num(args, 1).map_or(chars.len().saturating_sub(from), |n| n.max(0.0) as usize);
            if from > chars.len() || from + len > chars.len() {
                let (start, end) = e.cur;
                return Err(e.fail(records::runtime_error(
                    "Exception calling \"Substring\" with the given arguments: \"Index and length must refer to a location within the string.\"".into(),
                    "ArgumentOutOfRangeException",
                    0,
                    "",
                    e.site(start, end),
                )));
            }
            Val::str(chars[from..from + len].iter().collect::<String>())
        }
        "padleft" | "padright" => {
            let width = index(arg_num(args, 0)).min(MAX_STRING);
            let fill = args
                .get(1)
                .map(to_str)
                .and_then(|f| f.chars().next())
                .unwrap_or(' ');
            let n = s.chars().count();
            let pad: String = std::iter::repeat_n(fill, width.saturating_sub(n)).collect();
            Val::str(if lower == "padleft" {
                format!("{pad}{s}")
            } else {
                format!("{s}{pad}")
            })
        }
        "compareto" => Val::int(match s.to_lowercase().cmp(&a0.to_lowercase()) {
            Ordering::Less => -1,
            Ordering::Equal => 0,
            Ordering::Greater => 1,
        }),
        _ => return Err(method_missing(e, "System.String", name)),
    })
}

// ===== Types =====

/// The .NET name of a type literal (`int` -> `System.Int32`).
pub(crate) fn full_type_name(t: &str) -> String {
    let lower = t.to_ascii_lowercase();
    let known = match lower.trim_start_matches("system.") {
        "int" | "int32" => "System.Int32",
        "long" | "int64" => "System.Int64",
        "string" => "System.String",
        "bool" | "boolean" => "System.Boolean",
        "double" => "System.Double",
        "float" | "single" => "System.Single",
        "decimal" => "System.Decimal",
        "char" => "System.Char",
        "byte" => "System.Byte",
        "datetime" => "System.DateTime",
        "timespan" => "System.TimeSpan",
        "hashtable" | "collections.hashtable" => "System.Collections.Hashtable",
        "array" => "System.Array",
        "object" => "System.Object",
        "object[]" => "System.Object[]",
        "string[]" => "System.String[]",
        "int[]" => "System.Int32[]",
        "version" => "System.Version",
        "scriptblock" | "management.automation.scriptblock" => {
            "System.Management.Automation.ScriptBlock"
        }
        "pscustomobject" | "psobject" | "management.automation.psobject" => {
            "System.Management.Automation.PSObject"
        }
        "environment" => "System.Environment",
        "math" => "System.Math",
        "uint32" => "System.UInt32",
        "uint64" => "System.UInt64",
        "switch" => "System.Management.Automation.SwitchParameter",
        _ => return t.to_owned(),
    };
    known.to_owned()
}

/// `-is`.
fn is_type(v: &Val, t: &str) -> bool {
    let full = full_type_name(t);
    match full.as_str() {
        "System.Object" | "System.Management.Automation.PSObject" => !v.is_null(),
        "System.Array" | "System.Object[]" => matches!(v, Val::Array(_)),
        "System.Collections.Hashtable" => matches!(v, Val::Table(_)),
        "System.Management.Automation.ScriptBlock" => matches!(v, Val::Block(_)),
        _ => match v {
            Val::V(Value::Object(o)) => {
                o.is_type(&full)
                    || matches!(&o.content, Content::Value(inner) if values::value_type_name(inner) == full)
            }
            other => other.type_name().eq_ignore_ascii_case(&full),
        },
    }
}

/// A cast `[type]value`, failing as PowerShell does when the value does not convert.
pub(crate) fn cast(e: &mut Engine<'_>, t: &str, v: Val, start: usize, end: usize) -> R<Val> {
    match convert(t, v.clone()) {
        Ok(out) => Ok(out),
        Err(Conversion::UnknownType) => {
            let (start, end) = if start == end { e.cur } else { (start, end) };
            Err(e.fail(records::runtime_error(
                format!("Unable to find type [{t}]."),
                "TypeNotFound",
                7,
                t,
                e.site(start, end),
            )))
        }
        Err(Conversion::Invalid(target)) => {
            let (start, end) = if start == end { e.cur } else { (start, end) };
            Err(cast_failure(e, &v, &target, start, end))
        }
    }
}

/// Why a conversion failed.
pub(crate) enum Conversion {
    UnknownType,
    Invalid(String),
}

fn convert(t: &str, v: Val) -> Result<Val, Conversion> {
    let lower = t.to_ascii_lowercase();
    let lower = lower.trim_start_matches("system.");
    if lower.matches("[]").count() > 8 {
        return Err(Conversion::UnknownType);
    }
    if let Some(elem) = lower.strip_suffix("[]") {
        let mut out = Vec::new();
        for item in v.enumerate() {
            if !item.is_null() || elem == "string" {
                out.push(convert(elem, item)?);
            }
        }
        return Ok(Val::Array(out));
    }
    let invalid = || Conversion::Invalid(full_type_name(t));
    Ok(match lower {
        "int" | "int32" | "long" | "int64" | "uint32" | "uint64" | "byte" | "int16" => {
            let n = to_number(&v).ok_or_else(invalid)?;
            let i = match n {
                Num::Int(i) => i,
                Num::Double(d) => d.round_ties_even() as i64,
            };
            match lower {
                "int" | "int32" => Val::V(Value::I32(i32::try_from(i).map_err(|_| invalid())?)),
                "uint32" => Val::V(Value::U32(u32::try_from(i).map_err(|_| invalid())?)),
                "uint64" => Val::V(Value::U64(u64::try_from(i).map_err(|_| invalid())?)),
                "byte" => Val::V(Value::U8(u8::try_from(i).map_err(|_| invalid())?)),
                "int16" => Val::V(Value::I16(i16::try_from(i).map_err(|_| invalid())?)),
                _ => Val::V(Value::I64(i)),
            }
        }
        "double" | "float" | "single" | "decimal" => {
            Val::double(to_number(&v).ok_or_else(invalid)?.as_f64())
        }
        "string" => {
            if v.is_null() {
                Val::str("")
            } else {
                Val::str(to_str(&v))
            }
        }
        "bool" | "boolean" | "switch" | "management.automation.switchparameter" => {
            Val::bool(truthy(&v))
        }
        "char" => match to_str(&v).encode_utf16().collect::<Vec<_>>().as_slice() {
            [c] => Val::V(Value::Char(*c)),
            _ => return Err(invalid()),
        },
        "datetime" => match moment_of(&v) {
            Some(m) => Val::V(Value::DateTime(m.to_datetime())),
            None => return Err(invalid()),
        },
        "version" => match Version::parse(to_str(&v).trim()) {
            Some(ver) => Val::V(Value::Version(ver)),
            None => return Err(invalid()),
        },
        "object" | "psobject" | "management.automation.psobject" => v,
        "array" | "object[]" => Val::Array(v.enumerate()),
        "void" => Val::null(),
        "hashtable" | "collections.hashtable" => match v {
            Val::Table(t) => Val::Table(t),
            _ => return Err(invalid()),
        },
        "ordered" => match v {
            Val::Table(mut t) => {
                t.ordered = true;
                Val::Table(t)
            }
            _ => return Err(invalid()),
        },
        "pscustomobject" | "management.automation.pscustomobject" => match v {
            Val::Table(t) => Val::V(objects::custom_object(
                None,
                t.entries
                    .iter()
                    .map(|(k, v)| Property::new(k.display_text().into_owned(), v.to_clixml()))
                    .collect(),
            )),
            other => other,
        },
        "scriptblock" | "management.automation.scriptblock" => match v {
            Val::Block(b) => Val::Block(b),
            _ => return Err(invalid()),
        },
        _ => return Err(Conversion::UnknownType),
    })
}

/// `[Type]::Member` and `[Type]::Method(args)` for the few types scripts commonly use.
pub(crate) fn static_member(
    e: &mut Engine<'_>,
    t: &str,
    name: &str,
    args: Option<Vec<Val>>,
    _start: usize,
    _end: usize,
) -> R<Val> {
    let full = full_type_name(t);
    let lower = name.to_ascii_lowercase();
    let args = args.unwrap_or_default();
    let n0 = arg_num(&args, 0).unwrap_or(0.0);
    let found = match (full.as_str(), lower.as_str()) {
        ("System.Environment", "machinename") => Some(Val::str(e.facts.computer.clone())),
        ("System.Environment", "username") => Some(Val::str(e.facts.user.clone())),
        ("System.Environment", "userdomainname") => Some(Val::str(e.facts.computer.clone())),
        ("System.Environment", "newline") => Some(Val::str("\r\n")),
        ("System.Environment", "processorcount") => Some(Val::int(2)),
        ("System.Environment", "is64bitoperatingsystem") => Some(Val::bool(true)),
        ("System.Environment", "osversion") => Some(Val::str(format!(
            "Microsoft Windows NT {}.0",
            e.host.os.version
        ))),
        ("System.DateTime", "now") => Some(Val::V(Value::DateTime(e.now().to_datetime()))),
        ("System.DateTime", "utcnow") => Some(Val::V(Value::DateTime(e.now().to_datetime()))),
        ("System.DateTime", "today") => {
            let m = e.now();
            Some(Val::V(Value::DateTime(
                Moment {
                    ticks: m.ticks - m.ticks.rem_euclid(864_000_000_000),
                    offset: m.offset,
                }
                .to_datetime(),
            )))
        }
        ("System.Math", "round") => {
            let digits = arg_num(&args, 1).unwrap_or(0.0).clamp(0.0, 15.0) as i32;
            let scale = 10f64.powi(digits);
            let r = (n0 * scale).round_ties_even() / scale;
            Some(
                if digits == 0 && !matches!(args.first(), Some(Val::V(Value::Double(_)))) {
                    Val::int(r as i64)
                } else {
                    Val::double(r)
                },
            )
        }
        ("System.Math", "floor") => Some(Val::double(n0.floor())),
        ("System.Math", "ceiling") => Some(Val::double(n0.ceil())),
        ("System.Math", "abs") => Some(match to_number(args.first().unwrap_or(&Val::null())) {
            Some(Num::Int(i)) => Val::int(i.saturating_abs()),
            _ => Val::double(n0.abs()),
        }),
        ("System.Math", "sqrt") => Some(Val::double(n0.sqrt())),
        ("System.Math", "pow") => Some(Val::double(n0.powf(arg_num(&args, 1).unwrap_or(1.0)))),
        ("System.Math", "max") => Some(Val::double(n0.max(arg_num(&args, 1).unwrap_or(n0)))),
        ("System.Math", "min") => Some(Val::double(n0.min(arg_num(&args, 1).unwrap_or(n0)))),
        ("System.Math", "pi") => Some(Val::double(std::f64::consts::PI)),
        ("System.Int32", "maxvalue") => Some(Val::int(i64::from(i32::MAX))),
        ("System.Int32", "minvalue") => Some(Val::int(i64::from(i32::MIN))),
        ("System.Int64", "maxvalue") => Some(Val::V(Value::I64(i64::MAX))),
        ("System.String", "empty") => Some(Val::str("")),
        ("System.String", "isnullorempty") => {
            Some(Val::bool(args.first().is_none_or(|a| to_str(a).is_empty())))
        }
        ("System.String", "isnullorwhitespace") => Some(Val::bool(
            args.first().is_none_or(|a| to_str(a).trim().is_empty()),
        )),
        ("System.String", "join") => Some(Val::str(
            args.iter()
                .skip(1)
                .flat_map(|a| a.items())
                .map(|a| to_str(&a))
                .collect::<Vec<_>>()
                .join(&arg_str(&args, 0)),
        )),
        ("System.Net.Dns", "gethostname") | ("system.net.dns", "gethostname") => {
            Some(Val::str(e.facts.computer.to_lowercase()))
        }
        _ => None,
    };
    if let Some(v) = found {
        return Ok(v);
    }
    let (start, end) = e.cur;
    let known_type = matches!(
        full.as_str(),
        "System.Environment"
            | "System.DateTime"
            | "System.Math"
            | "System.Int32"
            | "System.Int64"
            | "System.String"
    ) || full.eq_ignore_ascii_case("System.Net.Dns");
    if !known_type {
        return Err(e.fail(records::runtime_error(
            format!("Unable to find type [{t}]."),
            "TypeNotFound",
            7,
            t,
            e.site(start, end),
        )));
    }
    Err(e.fail(records::runtime_error(
        format!(
            "Method invocation failed because [{full}] does not contain a method named '{name}'."
        ),
        "MethodNotFound",
        7,
        "",
        e.site(start, end),
    )))
}

// ===== .NET formatting =====

/// Composite formatting (`'{0,-10} {1:N2}' -f $a, $b`).
pub(crate) fn format_composite(format: &str, args: &[Val]) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut spec = String::new();
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '}' {
                        closed = true;
                        break;
                    }
                    spec.push(c);
                }
                if !closed {
                    return Err("Input string was not in a correct format.".into());
                }
                let (head, fmt) = spec.split_once(':').unwrap_or((&spec, ""));
                let (idx, align) = head.split_once(',').unwrap_or((head, ""));
                let idx: usize = idx
                    .trim()
                    .parse()
                    .map_err(|_| "Input string was not in a correct format.".to_owned())?;
                let arg = args.get(idx).ok_or_else(|| {
                    "Index (zero based) must be greater than or equal to zero and less than the size of the argument list."
                        .to_owned()
                })?;
                let text = format_item(arg, fmt);
                let width: i64 = align.trim().parse().unwrap_or(0);
                let pad = (width.unsigned_abs() as usize)
                    .saturating_sub(text.chars().count())
                    .min(MAX_STRING);
                if width > 0 {
                    out.extend(std::iter::repeat_n(' ', pad));
                    out.push_str(&text);
                } else {
                    out.push_str(&text);
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            '}' => return Err("Input string was not in a correct format.".into()),
            other => out.push(other),
        }
        if out.len() > MAX_STRING {
            return Err("The result is too long.".into());
        }
    }
    Ok(out)
}

fn format_item(v: &Val, fmt: &str) -> String {
    if fmt.is_empty() {
        return to_str(v);
    }
    if let Some(m) = moment_of(v)
        .filter(|_| matches!(v, Val::V(x) if matches!(x.primitive(), Value::DateTime(_))))
    {
        return format_moment(m, fmt);
    }
    match v {
        Val::V(value) => match number_of(value.primitive()) {
            Some(n) => format_number(n, fmt),
            None => to_str(v),
        },
        other => to_str(other),
    }
}

/// Rounds half away from zero at `decimals`, on the 15-significant-digit decimal form
/// (.NET Framework's rule), returning (integer digits, fraction digits, negative).
fn round_decimal(v: f64, decimals: usize) -> (String, String, bool) {
    let negative = v < 0.0;
    let sci = format!("{:.14e}", v.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i64 = exp.parse().unwrap_or(0);
    let digits: Vec<u8> = mantissa
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    // Place digits on a fixed grid: position of the decimal point is exp + 1.
    let point = exp + 1;
    let mut int_part: Vec<u8> = Vec::new();
    let mut frac_part: Vec<u8> = Vec::new();
    if point <= 0 {
        frac_part.extend(std::iter::repeat_n(0, (-point) as usize));
        frac_part.extend(&digits);
    } else {
        for (i, d) in digits.iter().enumerate() {
            if (i as i64) < point {
                int_part.push(*d);
            } else {
                frac_part.push(*d);
            }
        }
        while (int_part.len() as i64) < point {
            int_part.push(0);
        }
    }
    if int_part.is_empty() {
        int_part.push(0);
    }
    let round_up = frac_part.get(decimals).is_some_and(|d| *d >= 5);
    frac_part.truncate(decimals);
    while frac_part.len() < decimals {
        frac_part.push(0);
    }
    if round_up {
        let mut carry = true;
        for d in frac_part.iter_mut().rev().chain(int_part.iter_mut().rev()) {
            if !carry {
                break;
            }
            if *d == 9 {
                *d = 0;
            } else {
                *d += 1;
                carry = false;
            }
        }
        if carry {
            int_part.insert(0, 1);
        }
    }
    let s = |v: &[u8]| v.iter().map(|d| char::from(b'0' + d)).collect::<String>();
    let int = s(&int_part).trim_start_matches('0').to_owned();
    let int = if int.is_empty() { "0".to_owned() } else { int };
    let is_zero = int == "0" && frac_part.iter().all(|d| *d == 0);
    (int, s(&frac_part), negative && !is_zero)
}

fn group_thousands(int: &str) -> String {
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// .NET numeric formatting (en-US): `N`, `F`, `D`, `X`, `P`, `G`, `E` and simple custom
/// patterns (`0.00`, `#,##0`).
pub(crate) fn format_number(n: Num, fmt: &str) -> String {
    let mut chars = fmt.chars();
    let kind = chars.next().unwrap_or('G');
    let rest: String = chars.collect();
    let precision: Option<usize> = if rest.is_empty() {
        None
    } else {
        rest.parse().ok().map(|p: usize| p.min(30))
    };
    let is_standard = precision.is_some() || rest.is_empty();
    let v = n.as_f64();
    if is_standard {
        match kind {
            'N' | 'n' | 'F' | 'f' => {
                let (int, frac, neg) = round_decimal(v, precision.unwrap_or(2));
                let int = if kind.eq_ignore_ascii_case(&'n') {
                    group_thousands(&int)
                } else {
                    int
                };
                let sign = if neg { "-" } else { "" };
                return if frac.is_empty() {
                    format!("{sign}{int}")
                } else {
                    format!("{sign}{int}.{frac}")
                };
            }
            'D' | 'd' => {
                if let Num::Int(i) = n {
                    let width = precision.unwrap_or(0);
                    let digits = format!("{:0width$}", i.unsigned_abs());
                    return if i < 0 { format!("-{digits}") } else { digits };
                }
            }
            'X' | 'x' => {
                if let Num::Int(i) = n {
                    let width = precision.unwrap_or(0);
                    return if kind == 'X' {
                        format!("{i:0width$X}")
                    } else {
                        format!("{i:0width$x}")
                    };
                }
            }
            'P' | 'p' => {
                let (int, frac, neg) = round_decimal(v * 100.0, precision.unwrap_or(2));
                let sign = if neg { "-" } else { "" };
                let int = group_thousands(&int);
                return if frac.is_empty() {
                    format!("{sign}{int} %")
                } else {
                    format!("{sign}{int}.{frac} %")
                };
            }
            'G' | 'g' => {
                return match n {
                    Num::Int(i) => i.to_string(),
                    Num::Double(d) => values::format_double(d),
                };
            }
            'E' | 'e' => {
                let p = precision.unwrap_or(6);
                let s = format!("{:.*e}", p, v);
                let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
                let e: i32 = e.parse().unwrap_or(0);
                return format!(
                    "{m}{kind}{}{:03}",
                    if e < 0 { '-' } else { '+' },
                    e.unsigned_abs()
                );
            }
            _ => {}
        }
    }
    // Custom pattern: digits after the point from the count of 0/# there, grouping if a
    // comma appears before the point, minimum integer digits from the zeros.
    let (int_pat, frac_pat) = fmt.split_once('.').unwrap_or((fmt, ""));
    if !int_pat.chars().all(|c| matches!(c, '0' | '#' | ','))
        || !frac_pat.chars().all(|c| matches!(c, '0' | '#'))
    {
        return match n {
            Num::Int(i) => i.to_string(),
            Num::Double(d) => values::format_double(d),
        };
    }
    let min_frac = frac_pat.chars().filter(|c| *c == '0').count();
    let max_frac = frac_pat.len();
    let (int, mut frac, neg) = round_decimal(v, max_frac);
    while frac.len() > min_frac && frac.ends_with('0') {
        frac.pop();
    }
    let min_int = int_pat.chars().filter(|c| *c == '0').count();
    let mut int = if int == "0" && min_int == 0 {
        String::new()
    } else {
        int
    };
    while int.len() < min_int {
        int.insert(0, '0');
    }
    if int_pat.contains(',') {
        int = group_thousands(&int);
    }
    let sign = if neg { "-" } else { "" };
    if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

/// Properties of an object for `Select-Object *` and formatting: extended first, then
/// adapted (PowerShell's member order).
pub(crate) fn all_properties(v: &Val) -> Vec<(String, Val)> {
    match v {
        Val::V(Value::Object(o)) => PsObject::properties(o)
            .map(|p| (p.name.clone(), Val::V(p.value.clone())))
            .collect(),
        Val::Table(t) => t
            .entries
            .iter()
            .map(|(k, v)| (k.display_text().into_owned(), v.clone()))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_and_numeric_formatting() {
        let args = [Val::str("a"), Val::double(1234.5678), Val::int(42)];
        assert_eq!(
            format_composite("{0}-{1:N2}-{2:D5}", &args).unwrap(),
            "a-1,234.57-00042"
        );
        assert_eq!(
            format_composite("[{0,5}][{0,-5}]", &args).unwrap(),
            "[    a][a    ]"
        );
        assert_eq!(format_composite("{{{2:X}}}", &args).unwrap(), "{2A}");
        assert!(format_composite("{3}", &args).is_err());
        assert_eq!(format_number(Num::Double(2.345), "F2"), "2.35");
        assert_eq!(format_number(Num::Double(0.5), "P0"), "50 %");
        assert_eq!(format_number(Num::Double(1234.5), "#,##0.0"), "1,234.5");
        assert_eq!(format_number(Num::Double(-0.001), "F2"), "0.00");
        assert_eq!(format_number(Num::Double(999.999), "N2"), "1,000.00");
        assert_eq!(format_number(Num::Int(7), "0.00"), "7.00");
    }

    #[test]
    fn equality_and_ordering_follow_the_left_operand() {
        assert!(equals(&Val::int(5), &Val::str("5"), false));
        assert!(equals(&Val::str("ABC"), &Val::str("abc"), false));
        assert!(!equals(&Val::str("ABC"), &Val::str("abc"), true));
        assert!(!equals(&Val::int(5), &Val::str("five"), false));
        let running = Val::V(Value::enumeration(
            "System.ServiceProcess.ServiceControllerStatus",
            "Running",
            4,
        ));
        assert!(equals(&running, &Val::str("running"), false));
        assert!(equals(&running, &Val::int(4), false));
        assert!(!equals(&running, &Val::str("Stopped"), false));
        assert_eq!(
            ordering(&Val::int(10), &Val::str("9"), false),
            Some(Ordering::Greater)
        );
        assert_eq!(
            ordering(&Val::str("10"), &Val::str("9"), false),
            Some(Ordering::Less)
        );
        assert_eq!(
            ordering(&Val::null(), &Val::int(1), false),
            Some(Ordering::Less)
        );
        let v = Val::V(Value::Version(Version::from_text("5.1.17763.1")));
        assert_eq!(
            ordering(&v, &Val::str("5.0"), false),
            Some(Ordering::Greater)
        );
    }

    #[test]
    fn dates_parse_in_common_forms() {
        let a = parse_date("2024-05-01").unwrap();
        let b = parse_date("5/1/2024 00:00:00").unwrap();
        assert_eq!(a.ticks, b.ticks);
        assert!(parse_date("not a date").is_none());
    }
}
