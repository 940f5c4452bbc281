//! Client-certificate authentication on the simulator's HTTPS listener (WS-Man's
//! `https/mutual` security profile; wire-facts section 3, "Certificate auth").
//!
//! As on Windows, three things must hold: the TLS handshake carried a client certificate
//! that chains to a trusted issuer with the client-authentication EKU (checked by rustls'
//! WebPKI verifier, [`client_verifier`]); the request names the profile in its
//! `Authorization` header ([`CERTIFICATE_AUTH_HEADER`]); and a certificate mapping names
//! the account the certificate logs on as (WinRM's `WSMan:\localhost\ClientCertificate`
//! entries match the certificate's UPN subject alternative name, falling back here to the
//! subject common name).

use std::sync::Arc;

use psfleet_core::der;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

/// The `Authorization` header value of certificate authentication (the WS-Management
/// `https/mutual` security profile URI; pypsrp and pywinrm send exactly this).
pub const CERTIFICATE_AUTH_HEADER: &str =
    "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/mutual";

/// The UPN otherName type (Microsoft, 1.3.6.1.4.1.311.20.2.3), DER-encoded with its tag.
const UPN_OID: [u8; 12] = [
    0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x14, 0x02, 0x03,
];

/// subjectAltName (2.5.29.17), DER-encoded with its tag.
const SAN_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x1d, 0x11];

/// commonName (2.5.4.3), DER-encoded with its tag.
const CN_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];

/// Most subject alternative names or name attributes looked at in one certificate.
const MAX_NAMES: usize = 64;

/// One `WSMan:\localhost\ClientCertificate` entry: certificates whose subject (UPN) is
/// `subject` log on as `account`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateMapping {
    /// The UPN (or common name) the certificate must carry, compared case-insensitively.
    pub subject: String,
    /// The local account it maps to.
    pub account: String,
}

/// Why certificate authentication failed (a 401 on the wire; Windows answers "access is
/// denied" for an unmapped certificate).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateAuthError {
    /// The request did not ask for certificate authentication.
    #[error("the Authorization header does not name the https/mutual profile")]
    NotRequested,
    /// The TLS handshake carried no client certificate.
    #[error("no client certificate was presented")]
    NoCertificate,
    /// The certificate carries neither a UPN nor a common name.
    #[error("the client certificate names no subject")]
    NoSubject,
    /// No mapping for the certificate's subject.
    #[error("no certificate mapping for {0:?}")]
    NotMapped(String),
}

/// Authenticates a request by client certificate: `authorization` is the request's
/// `Authorization` header, `peer` the certificate chain from the TLS session (leaf first).
/// Returns the mapped account.
pub fn authenticate<'m>(
    authorization: Option<&str>,
    peer: Option<&[CertificateDer<'_>]>,
    mappings: &'m [CertificateMapping],
) -> Result<&'m str, CertificateAuthError> {
    if authorization.map(str::trim) != Some(CERTIFICATE_AUTH_HEADER) {
        return Err(CertificateAuthError::NotRequested);
    }
    let leaf = peer
        .and_then(|chain| chain.first())
        .ok_or(CertificateAuthError::NoCertificate)?;
    let subject = certificate_upn(leaf.as_ref())
        .or_else(|| certificate_common_name(leaf.as_ref()))
        .ok_or(CertificateAuthError::NoSubject)?;
    mappings
        .iter()
        .find(|m| m.subject.eq_ignore_ascii_case(&subject))
        .map(|m| m.account.as_str())
        .ok_or(CertificateAuthError::NotMapped(subject))
}

/// A client-certificate verifier for the HTTPS listener: certificates must chain to one
/// of `issuers` and carry the client-authentication EKU; a handshake without a
/// certificate is allowed (the request then fails certificate authentication, and other
/// schemes still work, as on a Windows listener with certificate auth enabled).
pub fn client_verifier(
    issuers: &[CertificateDer<'static>],
) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
    let mut roots = RootCertStore::empty();
    for issuer in issuers {
        roots.add(issuer.clone())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))
}

/// The UPN in the certificate's subject alternative names (an otherName of type
/// 1.3.6.1.4.1.311.20.2.3 holding a UTF8String, the form Windows CAs issue).
pub fn certificate_upn(cert: &[u8]) -> Option<String> {
    let extensions = extensions(cert)?;
    let mut rest = extensions;
    for _ in 0..MAX_NAMES {
        if rest.is_empty() {
            return None;
        }
        let (extension, after) = der::element(rest, 0x30)?;
        rest = after;
        let Some(after_oid) = extension.strip_prefix(&SAN_OID[..]) else {
            continue;
        };
        // critical BOOLEAN DEFAULT FALSE may come before the value.
        let value = match after_oid.first() {
            Some(0x01) => der::element(after_oid, 0x01)?.1,
            _ => after_oid,
        };
        let (san, _) = der::element(value, 0x04)?;
        let (mut names, _) = der::element(san, 0x30)?;
        for _ in 0..MAX_NAMES {
            if names.is_empty() {
                return None;
            }
            let tag = *names.first()?;
            let (name, after) = der::element(names, tag)?;
            names = after;
            // otherName is [0] IMPLICIT, constructed.
            if tag != 0xa0 {
                continue;
            }
            let Some(value) = name.strip_prefix(&UPN_OID[..]) else {
                continue;
            };
            let (explicit, _) = der::element(value, 0xa0)?;
            let (text, _) = der::element(explicit, 0x0c)?;
            return String::from_utf8(text.to_vec()).ok();
        }
        return None;
    }
    None
}

/// The first common name of the certificate's subject.
pub fn certificate_common_name(cert: &[u8]) -> Option<String> {
    let (certificate, _) = der::element(cert, 0x30)?;
    let (tbs, _) = der::element(certificate, 0x30)?;
    let mut rest = skip_version(tbs)?;
    // serialNumber, signature, issuer, validity.
    for tag in [0x02, 0x30, 0x30, 0x30] {
        rest = der::element(rest, tag)?.1;
    }
    let (mut subject, _) = der::element(rest, 0x30)?;
    for _ in 0..MAX_NAMES {
        if subject.is_empty() {
            return None;
        }
        let (rdn, after) = der::element(subject, 0x31)?;
        subject = after;
        let (attribute, _) = der::element(rdn, 0x30)?;
        if let Some(value) = attribute.strip_prefix(&CN_OID[..]) {
            // UTF8String, PrintableString or IA5String.
            let tag = *value.first()?;
            if matches!(tag, 0x0c | 0x13 | 0x16) {
                let (text, _) = der::element(value, tag)?;
                return String::from_utf8(text.to_vec()).ok();
            }
        }
    }
    None
}

/// The contents of the extensions SEQUENCE ([3] EXPLICIT in tbsCertificate).
fn extensions(cert: &[u8]) -> Option<&[u8]> {
    let (certificate, _) = der::element(cert, 0x30)?;
    let (tbs, _) = der::element(certificate, 0x30)?;
    let mut rest = skip_version(tbs)?;
    // serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo.
    for tag in [0x02, 0x30, 0x30, 0x30, 0x30, 0x30] {
        rest = der::element(rest, tag)?.1;
    }
    // Optional issuerUniqueID [1] and subjectUniqueID [2].
    for tag in [0x81, 0x82] {
        if rest.first() == Some(&tag) {
            rest = der::element(rest, tag)?.1;
        }
    }
    let (explicit, _) = der::element(rest, 0xa3)?;
    Some(der::element(explicit, 0x30)?.0)
}

fn skip_version(tbs: &[u8]) -> Option<&[u8]> {
    if tbs.first() == Some(&0xa0) {
        Some(der::element(tbs, 0xa0)?.1)
    } else {
        Some(tbs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn cert(cn: Option<&str>, upn: Option<&str>) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["client.fleet.test".to_owned()]).unwrap();
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(DnType::OrganizationName, "psfleet");
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        if let Some(upn) = upn {
            params.subject_alt_names.push(SanType::OtherName((
                vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3],
                upn.into(),
            )));
        }
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn mappings() -> Vec<CertificateMapping> {
        vec![CertificateMapping {
            subject: "alice@fleet.test".to_owned(),
            account: "alice".to_owned(),
        }]
    }

    #[test]
    fn names_are_read_from_certificates() {
        let both = cert(Some("Alice"), Some("alice@fleet.test"));
        assert_eq!(certificate_upn(&both).as_deref(), Some("alice@fleet.test"));
        assert_eq!(certificate_common_name(&both).as_deref(), Some("Alice"));
        let none = cert(None, None);
        assert_eq!(certificate_upn(&none), None);
        // rcgen writes a default CN when none is given; either way no panic.
        let _ = certificate_common_name(&none);
        for cut in 0..both.len() {
            let _ = certificate_upn(&both[..cut]);
            let _ = certificate_common_name(&both[..cut]);
        }
    }

    #[test]
    fn authentication_needs_header_certificate_and_mapping() {
        let good = CertificateDer::from(cert(Some("x"), Some("ALICE@fleet.test")));
        let chain = [good];
        let maps = mappings();
        assert_eq!(
            authenticate(Some(CERTIFICATE_AUTH_HEADER), Some(&chain), &maps),
            Ok("alice")
        );
        assert_eq!(
            authenticate(Some("Negotiate abc"), Some(&chain), &maps),
            Err(CertificateAuthError::NotRequested)
        );
        assert_eq!(
            authenticate(Some(CERTIFICATE_AUTH_HEADER), None, &maps),
            Err(CertificateAuthError::NoCertificate)
        );
        let other = [CertificateDer::from(cert(
            Some("bob"),
            Some("bob@fleet.test"),
        ))];
        assert_eq!(
            authenticate(Some(CERTIFICATE_AUTH_HEADER), Some(&other), &maps),
            Err(CertificateAuthError::NotMapped("bob@fleet.test".to_owned()))
        );
        // The common name serves when there is no UPN.
        let cn_only = [CertificateDer::from(cert(Some("alice@fleet.test"), None))];
        assert_eq!(
            authenticate(Some(CERTIFICATE_AUTH_HEADER), Some(&cn_only), &maps),
            Ok("alice")
        );
    }
}
