//! Host entries as Ansible writes them: `name`, `name:port`, `[ipv6]:port`, and ranges
//! `srv[01:20].fleet.test`, `db-[a:f]`, `web[1:9:2]`, several per name (Ansible's
//! `expand_hostname_range`: zero-padded when the begin has a leading zero, begin and end of
//! equal width then, single letters for alphabetic ranges, an optional step).

use std::sync::LazyLock;

use regex::Regex;

use crate::error::ErrorKind;

/// The names a host entry stands for, and the port it gives them (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expanded {
    pub names: Vec<String>,
    pub port: Option<u16>,
}

/// Splits off a port and expands ranges, producing at most `room` names.
pub(crate) fn expand(entry: &str, room: usize) -> Result<Expanded, ErrorKind> {
    let (name, port) = split_port(entry)?;
    let names = if name.contains('[') || name.contains(']') {
        expand_ranges(name, room)?
    } else {
        if room == 0 {
            return Err(ErrorKind::TooManyHosts { limit: 0 });
        }
        vec![name.to_string()]
    };
    Ok(Expanded { names, port })
}

/// `[host]:port` or `host:port` (where the host part has no ':' outside brackets, so a bare
/// IPv6 address keeps its colons), as Ansible's `parse_address` splits them.
fn split_port(entry: &str) -> Result<(&str, Option<u16>), ErrorKind> {
    let captures = BRACKETED_HOSTPORT
        .captures(entry)
        .or_else(|| HOSTPORT.captures(entry));
    let Some((host, digits)) = captures.and_then(|c| Some((c.get(1)?, c.get(2)?))) else {
        return Ok((entry, None));
    };
    let port = digits
        .as_str()
        .parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| ErrorKind::BadHostPort {
            pattern: entry.to_string(),
            port: digits.as_str().to_string(),
        })?;
    Ok((host.as_str(), Some(port)))
}

/// One `[begin:end:step]` range.
#[derive(Debug)]
enum Range {
    Numeric {
        begin: u64,
        step: u64,
        count: u64,
        width: usize,
    },
    Letters {
        letters: Vec<char>,
    },
}

impl Range {
    fn count(&self) -> u64 {
        match self {
            Range::Numeric { count, .. } => *count,
            Range::Letters { letters } => letters.len() as u64,
        }
    }

    fn item(&self, index: u64) -> String {
        match self {
            Range::Numeric {
                begin, step, width, ..
            } => {
                let value = begin.saturating_add(index.saturating_mul(*step));
                format!("{value:0width$}")
            }
            Range::Letters { letters } => usize::try_from(index)
                .ok()
                .and_then(|i| letters.get(i))
                .map(|c| c.to_string())
                .unwrap_or_default(),
        }
    }
}

/// Expands every range of a name, first checking that the product fits in `room`.
fn expand_ranges(name: &str, room: usize) -> Result<Vec<String>, ErrorKind> {
    let bad = |reason: &str| ErrorKind::BadRange {
        pattern: name.to_string(),
        reason: reason.to_string(),
    };
    // Literal pieces and ranges, alternating: piece, range, piece, range, ..., piece.
    let mut pieces = Vec::new();
    let mut ranges = Vec::new();
    let mut rest = name;
    while let Some(open) = rest.find('[') {
        let close = rest
            .find(']')
            .ok_or_else(|| bad("'[' without a closing ']'"))?;
        if close < open {
            return Err(bad("']' before '['"));
        }
        let (head, tail) = rest.split_at(open);
        let inner = tail.get(1..close - open).unwrap_or_default();
        pieces.push(head);
        ranges.push(parse_range(inner).map_err(&bad)?);
        rest = tail.get(close - open + 1..).unwrap_or_default();
    }
    if rest.contains(']') {
        return Err(bad("']' without an opening '['"));
    }
    pieces.push(rest);

    let mut total: u64 = 1;
    for range in &ranges {
        total = total.saturating_mul(range.count());
    }
    if total > room as u64 {
        return Err(ErrorKind::TooManyHosts { limit: room });
    }
    let mut names = vec![String::new()];
    for (index, piece) in pieces.iter().enumerate() {
        for name in &mut names {
            name.push_str(piece);
        }
        if let Some(range) = ranges.get(index) {
            let mut next = Vec::with_capacity(names.len().saturating_mul(range.count() as usize));
            for name in &names {
                for i in 0..range.count() {
                    next.push(format!("{name}{}", range.item(i)));
                }
            }
            names = next;
        }
    }
    Ok(names)
}

/// `begin:end` or `begin:end:step`, numeric or single letters (Ansible's rules).
fn parse_range(inner: &str) -> Result<Range, &'static str> {
    let bounds: Vec<&str> = inner.split(':').collect();
    let (begin, end, step) = match bounds.as_slice() {
        [b, e] => (*b, *e, "1"),
        [b, e, s] => (*b, *e, *s),
        _ => return Err("a host range is [begin:end] or [begin:end:step]"),
    };
    let begin = if begin.is_empty() { "0" } else { begin };
    if end.is_empty() {
        return Err("a host range needs an end value");
    }
    let step: u64 = step
        .parse()
        .map_err(|_| "the step of a host range must be a positive number")?;
    if step == 0 {
        return Err("the step of a host range cannot be 0");
    }
    let letter = |s: &str| {
        let mut chars = s.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) if c.is_ascii_alphabetic() => Some(c),
            _ => None,
        }
    };
    if let (Some(b), Some(e)) = (letter(begin), letter(end)) {
        // Python's string.ascii_letters order: a-z then A-Z.
        const LETTERS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        let (Some(i), Some(j)) = (LETTERS.find(b), LETTERS.find(e)) else {
            return Err("host range letters must be ASCII letters");
        };
        if i > j {
            return Err("a host range must have begin <= end");
        }
        let letters = LETTERS
            .get(i..=j)
            .unwrap_or_default()
            .chars()
            .step_by(usize::try_from(step).unwrap_or(usize::MAX))
            .collect();
        return Ok(Range::Letters { letters });
    }
    let number = |s: &str| -> Result<u64, &'static str> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err("host range bounds must be numbers or single letters");
        }
        s.parse().map_err(|_| "host range bound is too large")
    };
    let (b, e) = (number(begin)?, number(end)?);
    let width = if begin.starts_with('0') && begin.len() > 1 {
        if begin.len() != end.len() {
            return Err(
                "a zero-padded host range must have begin and end of equal length, like [01:20]",
            );
        }
        begin.len()
    } else {
        0
    };
    if b > e {
        return Err("a host range must have begin <= end");
    }
    Ok(Range::Numeric {
        begin: b,
        step,
        count: (e - b) / step + 1,
        width,
    })
}

static BRACKETED_HOSTPORT: LazyLock<Regex> = LazyLock::new(|| constant(r"^\[(.+)\]:([0-9]+)$"));
static HOSTPORT: LazyLock<Regex> =
    LazyLock::new(|| constant(r"^((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)$"));

/// Compiles a constant pattern (exercised by the tests, so it cannot fail at run time).
pub(crate) fn constant(pattern: &str) -> Regex {
    #[allow(clippy::expect_used)]
    Regex::new(pattern).expect("constant regex")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(entry: &str) -> Vec<String> {
        expand(entry, 1_000_000).unwrap().names
    }

    #[test]
    fn ranges_expand_as_ansible_does() {
        assert_eq!(
            names("srv[01:03].fleet.test"),
            ["srv01.fleet.test", "srv02.fleet.test", "srv03.fleet.test"]
        );
        assert_eq!(names("web[1:10:4]"), ["web1", "web5", "web9"]);
        assert_eq!(names("db-[a:c]"), ["db-a", "db-b", "db-c"]);
        assert_eq!(names("db-[y:B]"), ["db-y", "db-z", "db-A", "db-B"]);
        assert_eq!(names("x[:2]"), ["x0", "x1", "x2"]);
        assert_eq!(names("r[1:2]n[a:b]"), ["r1na", "r1nb", "r2na", "r2nb"]);
        assert_eq!(names("[8:10].fleet"), ["8.fleet", "9.fleet", "10.fleet"]);
    }

    #[test]
    fn ports_split_off_like_parse_address() {
        assert_eq!(
            expand("srv1:5986", 10).unwrap(),
            Expanded {
                names: vec!["srv1".into()],
                port: Some(5986)
            }
        );
        assert_eq!(expand("[fe80::1]:5985", 10).unwrap().port, Some(5985));
        assert_eq!(expand("[fe80::1]:5985", 10).unwrap().names, ["fe80::1"]);
        assert_eq!(expand("fe80::1", 10).unwrap().port, None);
        assert_eq!(expand("fe80::1", 10).unwrap().names, ["fe80::1"]);
        let e = expand("srv[1:2]:5986", 10).unwrap();
        assert_eq!((e.names.len(), e.port), (2, Some(5986)));
        assert!(matches!(
            expand("srv1:70000", 10),
            Err(ErrorKind::BadHostPort { .. })
        ));
    }

    #[test]
    fn bad_ranges_say_what_is_wrong() {
        let reason = |entry: &str| match expand(entry, 1000).unwrap_err() {
            ErrorKind::BadRange { reason, .. } => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            reason("a[1]"),
            "a host range is [begin:end] or [begin:end:step]"
        );
        assert_eq!(reason("a[1:]"), "a host range needs an end value");
        assert_eq!(
            reason("a[01:100]"),
            "a zero-padded host range must have begin and end of equal length, like [01:20]"
        );
        assert_eq!(reason("a[5:1]"), "a host range must have begin <= end");
        assert_eq!(reason("a[1:5:0]"), "the step of a host range cannot be 0");
        assert_eq!(
            reason("a[1:x]"),
            "host range bounds must be numbers or single letters"
        );
        assert_eq!(reason("a[1:2"), "'[' without a closing ']'");
        assert_eq!(reason("a]1:2["), "']' before '['");
    }

    #[test]
    fn huge_ranges_are_refused_before_expanding() {
        assert_eq!(
            expand("a[0:999999][0:999999][0:999999]", 1000).unwrap_err(),
            ErrorKind::TooManyHosts { limit: 1000 }
        );
        assert_eq!(expand("a[1:1000]", 1000).unwrap().names.len(), 1000);
    }
}
