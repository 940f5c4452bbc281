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

#[cfg(test)]
mod tests {
    use super::element;

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
