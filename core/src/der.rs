//! The one DER reader of the workspace: enough of X.690 (§8.1 identifier and length octets)
//! to walk X.509 certificates for channel bindings (RFC 5929 tls-server-end-point), CredSSP's
//! public-key binding ([MS-CSSP] 3.1.5) and client-certificate user mapping. Only definite
//! lengths of up to four octets; every read is bounds-checked, so hostile input gives `None`.

/// Reads one DER element whose identifier octet is `tag`: its contents and what follows it.
/// `None` when the tag differs, the length is indefinite, longer than four octets, or runs
/// past the input.
pub fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let bytes = rest.get(..count)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest.get(count..)?)
    };
    Some((rest.get(..len)?, rest.get(len..)?))
}

/// Deepest nesting [`is_well_formed`] follows; Kerberos messages nest about ten deep.
const MAX_DEPTH: usize = 32;

/// Whether `input` is a run of DER elements, each with a low-number identifier (tag number
/// under 31), a definite length of at most four octets that fits its parent, and, when
/// constructed (bit 6 of the identifier), contents that are such a run themselves. Decoders
/// that trust length arithmetic (picky-asn1-der adds lengths without checking) only see
/// input that passed this.
pub fn is_well_formed(input: &[u8]) -> bool {
    well_formed(input, 0)
}

fn well_formed(mut input: &[u8], depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    while let Some(&tag) = input.first() {
        if tag & 0x1f == 0x1f {
            return false;
        }
        let Some((contents, rest)) = element(input, tag) else {
            return false;
        };
        if tag & 0x20 != 0 && !well_formed(contents, depth + 1) {
            return false;
        }
        input = rest;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::{element, is_well_formed};

    #[test]
    fn well_formed_runs_are_checked_all_the_way_down() {
        // SEQUENCE { INTEGER 5, [APPLICATION 10] { OCTET STRING "ab" } }
        let good = [
            0x30, 0x09, 0x02, 0x01, 0x05, 0x6a, 0x04, 0x04, 0x02, b'a', b'b',
        ];
        assert!(is_well_formed(&good));
        assert!(is_well_formed(&[]));
        // A nested length past its parent, a huge long-form length, a high tag number,
        // trailing garbage, and nesting deeper than the bound.
        assert!(!is_well_formed(&[0x30, 0x03, 0x04, 0x05, 0x00]));
        assert!(!is_well_formed(&[
            0x6a, 0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
        ]));
        assert!(!is_well_formed(&[0x1f, 0x81, 0x00, 0x00]));
        assert!(!is_well_formed(&[0x02, 0x01, 0x05, 0x30]));
        let mut deep = vec![0x30u8, 0x00];
        for _ in 0..40 {
            let len = u8::try_from(deep.len()).unwrap_or(0);
            if deep.len() > 127 {
                break;
            }
            deep = [vec![0x30, len], deep].concat();
        }
        assert!(!is_well_formed(&deep));
    }

    #[test]
    fn short_and_long_lengths() {
        assert_eq!(
            element(&[0x02, 0x01, 0x05, 0xff], 0x02),
            Some((&[5u8][..], &[0xffu8][..]))
        );
        assert_eq!(
            element(&[0x02, 0x81, 0x01, 0x07], 0x02),
            Some((&[7u8][..], &[][..]))
        );
        let long = [&[0x04, 0x81, 0x80][..], &[7u8; 0x80]].concat();
        assert_eq!(element(&long, 0x04).map(|(c, _)| c.len()), Some(0x80));
    }

    #[test]
    fn bad_input_is_none() {
        // Wrong tag, short contents, five length octets, indefinite length, a length past
        // the input, and nothing at all.
        assert_eq!(element(&[0x31, 0x00], 0x30), None);
        assert_eq!(element(&[0x30, 0x03, 1, 2], 0x30), None);
        assert_eq!(element(&[0x30, 0x85, 1, 1, 1, 1, 1], 0x30), None);
        assert_eq!(element(&[0x30, 0x80, 0, 0], 0x30), None);
        assert_eq!(element(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff], 0x30), None);
        assert_eq!(element(&[0x30, 0x82, 0x01], 0x30), None);
        assert_eq!(element(&[], 0x30), None);
    }
}
