//! TLS for WinRM over HTTPS: rustls with ring, TLS 1.2 minimum.
//!
//! Certificates are verified by default against the system roots (rustls-native-certs)
//! plus an optional CA bundle. [`TlsOptions`] carries the `New-PSSessionOption`
//! equivalents: `skip_ca_check` (-SkipCACheck: an unknown issuer is accepted) and
//! `skip_cn_check` (-SkipCNCheck: a name mismatch is accepted), and a pinned certificate
//! thumbprint. Whatever is skipped, the certificate must still parse, be inside its
//! validity period, and its key must sign the handshake: only the checks asked for are
//! dropped, never signature verification.
//!
//! A failed handshake is a [`TlsFailure`] that names the check that failed (unknown
//! issuer, name mismatch, expired, thumbprint mismatch, a plaintext HTTP peer, ...), as the
//! Windows client's message does (wire-facts 1.8).
//!
//! [`channel_bindings`] computes the `tls-server-end-point` channel binding of RFC 5929 4
//! from the server certificate, for NTLM, Negotiate and Kerberos over HTTPS (wire-facts 3).

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use psfleet_core::der;
use ring::digest;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, InvalidMessage, OtherError,
    RootCertStore, SignatureScheme,
};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The prefix of the `tls-server-end-point` channel binding application data (RFC 5929 4).
pub const TLS_SERVER_END_POINT: &[u8] = b"tls-server-end-point:";

/// Longest CA bundle read (a full system bundle is about 200 KiB).
const MAX_BUNDLE_BYTES: u64 = 16 * 1024 * 1024;

/// How server certificates are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// Trust the operating system's root certificates.
    pub system_roots: bool,
    /// A PEM file of further trusted CA certificates.
    pub ca_file: Option<PathBuf>,
    /// Further trusted CA certificates as PEM text (a simulator's CA, for example).
    pub ca_pem: Option<String>,
    /// Accept a certificate whose issuer is not trusted (-SkipCACheck).
    pub skip_ca_check: bool,
    /// Accept a certificate issued for another name (-SkipCNCheck).
    pub skip_cn_check: bool,
    /// Accept only the certificate with this thumbprint. A matching certificate needs no
    /// trusted issuer (the pin stands in for the CA), but its name and validity are still
    /// checked unless `skip_cn_check` is set.
    pub thumbprint: Option<Thumbprint>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        Self {
            system_roots: true,
            ca_file: None,
            ca_pem: None,
            skip_ca_check: false,
            skip_cn_check: false,
            thumbprint: None,
        }
    }
}

/// A certificate thumbprint: the SHA-1 (as Windows shows it) or SHA-256 hash of its DER.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Thumbprint {
    /// 20 bytes (40 hex digits), the `Thumbprint` of `Get-ChildItem Cert:`.
    Sha1([u8; 20]),
    /// 32 bytes (64 hex digits).
    Sha256([u8; 32]),
}

impl Thumbprint {
    /// Parses 40 or 64 hex digits; spaces and colons between them are ignored.
    pub fn parse(text: &str) -> Result<Self, TlsSetupError> {
        let invalid = || TlsSetupError::InvalidThumbprint {
            text: text.chars().take(120).collect(),
        };
        let digits: Vec<u8> = text.bytes().filter(|b| !matches!(b, b' ' | b':')).collect();
        if !matches!(digits.len(), 40 | 64) {
            return Err(invalid());
        }
        let mut bytes = Vec::with_capacity(32);
        for pair in digits.chunks(2) {
            let text = std::str::from_utf8(pair).map_err(|_| invalid())?;
            bytes.push(u8::from_str_radix(text, 16).map_err(|_| invalid())?);
        }
        if let Ok(sha1) = <[u8; 20]>::try_from(bytes.as_slice()) {
            return Ok(Self::Sha1(sha1));
        }
        <[u8; 32]>::try_from(bytes.as_slice())
            .map(Self::Sha256)
            .map_err(|_| invalid())
    }

    /// The thumbprint of the same kind for `der`.
    pub fn of_same_kind(&self, der: &[u8]) -> Self {
        match self {
            Self::Sha1(_) => Self::sha1(der),
            Self::Sha256(_) => Self::sha256(der),
        }
    }

    /// The SHA-1 thumbprint of a DER certificate.
    pub fn sha1(der: &[u8]) -> Self {
        let mut out = [0u8; 20];
        out.copy_from_slice(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref());
        Self::Sha1(out)
    }

    /// The SHA-256 thumbprint of a DER certificate.
    pub fn sha256(der: &[u8]) -> Self {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest::digest(&digest::SHA256, der).as_ref());
        Self::Sha256(out)
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Self::Sha1(b) => b,
            Self::Sha256(b) => b,
        }
    }
}

impl fmt::Display for Thumbprint {
    /// Upper-case hex, as Windows prints thumbprints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.bytes().iter().try_for_each(|b| write!(f, "{b:02X}"))
    }
}

impl fmt::Debug for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Thumbprint({self})")
    }
}

/// Why the TLS client could not be set up (local configuration, before any host).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// The CA bundle could not be read.
    #[error("cannot read CA file {path:?}: {source}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The CA bundle holds no usable certificate.
    #[error("{what} holds no usable CA certificate ({problem})")]
    CaBundle {
        /// The file or `the CA PEM text`.
        what: String,
        /// What was wrong.
        problem: String,
    },
    /// A thumbprint that is not 40 or 64 hex digits.
    #[error(
        "invalid certificate thumbprint {text:?}: expected 40 (SHA-1) or 64 (SHA-256) hex digits"
    )]
    InvalidThumbprint {
        /// The text as given (at most 120 characters).
        text: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Which check failed in a TLS handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The certificate is not issued by a trusted CA (self-signed, or an unknown CA).
    #[error("the certificate is signed by an unknown certificate authority")]
    UnknownIssuer,
    /// The certificate is not issued for the name connected to.
    #[error("the certificate is not valid for the name {name:?}")]
    NameMismatch {
        /// The name or address the client connected to.
        name: String,
    },
    /// The certificate has expired.
    #[error("the certificate has expired")]
    Expired,
    /// The certificate is not valid yet.
    #[error("the certificate is not valid yet")]
    NotYetValid,
    /// The certificate does not have the pinned thumbprint.
    #[error("the certificate thumbprint is {actual}, not the pinned {expected}")]
    ThumbprintMismatch {
        /// The pinned thumbprint.
        expected: Thumbprint,
        /// The server certificate's thumbprint (same hash).
        actual: Thumbprint,
    },
    /// Any other certificate problem (bad encoding, bad signature, revoked, ...).
    #[error("the certificate was rejected: {0}")]
    BadCertificate(String),
    /// The peer answered the ClientHello with plaintext (an HTTP listener on that port).
    #[error("the peer answered in plaintext: the port serves HTTP, not HTTPS")]
    PlaintextPeer,
    /// The peer closed the connection during the handshake.
    #[error("the peer closed the connection during the TLS handshake")]
    Closed,
    /// The peer sent a TLS alert or broke the protocol.
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
}

impl TlsFailure {
    /// True when the failure is about the certificate (InvalidCertificate), not the link.
    pub fn is_certificate(&self) -> bool {
        matches!(
            self,
            Self::UnknownIssuer
                | Self::NameMismatch { .. }
                | Self::Expired
                | Self::NotYetValid
                | Self::ThumbprintMismatch { .. }
                | Self::BadCertificate(_)
        )
    }

    /// Reads a failed `tokio_rustls` handshake.
    pub fn from_io(error: &io::Error, name: &str) -> Self {
        if let Some(tls) = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Self::from_rustls(tls, name);
        }
        match error.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Self::Closed,
            _ => Self::Handshake(error.to_string()),
        }
    }

    /// Reads a rustls error.
    pub fn from_rustls(error: &rustls::Error, name: &str) -> Self {
        match error {
            rustls::Error::InvalidCertificate(cert) => match cert {
                CertificateError::UnknownIssuer => Self::UnknownIssuer,
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => Self::NameMismatch {
                    name: name.to_owned(),
                },
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    Self::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    Self::NotYetValid
                }
                CertificateError::Other(OtherError(inner)) => {
                    match inner.downcast_ref::<PinMismatch>() {
                        Some(pin) => Self::ThumbprintMismatch {
                            expected: pin.expected,
                            actual: pin.actual,
                        },
                        None => Self::BadCertificate(inner.to_string()),
                    }
                }
                other => Self::BadCertificate(format!("{other:?}")),
            },
            // The first bytes back were not a TLS record: `HTTP/1.1 400 ...` from an HTTP
            // listener (wire-facts 1.8, the converse of plaintext to a TLS port).
            rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType) => {
                Self::PlaintextPeer
            }
            other => Self::Handshake(other.to_string()),
        }
    }
}

/// A TLS client built once from [`TlsOptions`] and shared by every connection.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    /// The configuration behind `connector`, kept to derive a client-certificate variant.
    config: Arc<ClientConfig>,
    roots: usize,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

/// What a completed handshake established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSession {
    /// The server's end-entity certificate (DER).
    pub peer_certificate: Vec<u8>,
    /// The `tls-server-end-point` channel binding application data for it.
    pub channel_bindings: Vec<u8>,
}

impl TlsClient {
    /// Builds the client: loads the system roots (when asked) and the CA bundle, TLS 1.2
    /// and 1.3 only, the ring provider.
    pub fn new(options: &TlsOptions) -> Result<Self, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        if options.system_roots {
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::debug!(%error, "skipping a system root store");
            }
            let (added, ignored) = roots.add_parsable_certificates(native.certs);
            tracing::debug!(added, ignored, "system roots");
        }
        if let Some(path) = &options.ca_file {
            let pem = read_bounded(path).map_err(|source| TlsSetupError::CaFile {
                path: path.clone(),
                source,
            })?;
            add_pem_roots(&mut roots, &pem, &path.display().to_string())?;
        }
        if let Some(pem) = &options.ca_pem {
            add_pem_roots(&mut roots, pem.as_bytes(), "the CA PEM text")?;
        }
        let verifier = Arc::new(FleetVerifier {
            roots: Arc::new(roots),
            algorithms: provider.signature_verification_algorithms,
            skip_ca: options.skip_ca_check,
            skip_cn: options.skip_cn_check,
            pin: options.thumbprint,
        });
        let count = verifier.roots.len();
        let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let config = Arc::new(config);
        Ok(Self {
            connector: TlsConnector::from(Arc::clone(&config)),
            config,
            roots: count,
        })
    }

    /// This client with the same server checks, presenting the certificate `resolver`
    /// gives when a server asks for one (WS-Man certificate authentication,
    /// `crate::auth::ClientCertificate`).
    pub fn with_client_cert_resolver(
        &self,
        resolver: Arc<dyn rustls::client::ResolvesClientCert>,
    ) -> Self {
        let mut config = (*self.config).clone();
        config.client_auth_cert_resolver = resolver;
        // A resumed session would not present the certificate again; rustls never resumes
        // across resolvers anyway, and each connection gets its own.
        config.resumption = rustls::client::Resumption::disabled();
        let config = Arc::new(config);
        Self {
            connector: TlsConnector::from(Arc::clone(&config)),
            config,
            roots: self.roots,
        }
    }

    /// The number of trusted roots loaded.
    pub fn root_count(&self) -> usize {
        self.roots
    }

    /// Runs the handshake on `tcp` (a `TcpStream`, or a wrapper around one), verifying the
    /// certificate for `name` (a DNS name or an IP address).
    pub async fn connect<IO>(
        &self,
        name: &str,
        tcp: IO,
    ) -> Result<(TlsStream<IO>, TlsSession), TlsFailure>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let server_name =
            ServerName::try_from(name.to_owned()).map_err(|_| TlsFailure::NameMismatch {
                name: name.to_owned(),
            })?;
        let stream = self
            .connector
            .connect(server_name, tcp)
            .await
            .map_err(|error| TlsFailure::from_io(&error, name))?;
        let peer_certificate = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|cert| cert.as_ref().to_vec())
            .ok_or_else(|| TlsFailure::BadCertificate("no certificate presented".to_owned()))?;
        let channel_bindings = channel_bindings(&peer_certificate);
        Ok((
            stream,
            TlsSession {
                peer_certificate,
                channel_bindings,
            },
        ))
    }
}

/// The hash RFC 5929 4.1 picks for a certificate's `tls-server-end-point` binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndPointHash {
    /// SHA-256: for SHA-256 signatures, and in place of MD5 and SHA-1, or an algorithm
    /// with no single hash (Ed25519; pypsrp falls back to SHA-256 there too).
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

/// The hash of the certificate's signature algorithm, as RFC 5929 4.1 maps it.
pub fn end_point_hash(certificate_der: &[u8]) -> EndPointHash {
    let Some((oid, params)) = signature_algorithm(certificate_der) else {
        return EndPointHash::Sha256;
    };
    match oid {
        // sha384WithRSAEncryption, ecdsa-with-SHA384
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c]
        | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03] => EndPointHash::Sha384,
        // sha512WithRSAEncryption, ecdsa-with-SHA512
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d]
        | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04] => EndPointHash::Sha512,
        // RSASSA-PSS: the hash is in the parameters (RFC 4055 3.1).
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a] => pss_hash(params),
        _ => EndPointHash::Sha256,
    }
}

/// The `tls-server-end-point` channel binding application data (RFC 5929 4; wire-facts 3):
/// `tls-server-end-point:` followed by the certificate hash.
pub fn channel_bindings(certificate_der: &[u8]) -> Vec<u8> {
    let algorithm = match end_point_hash(certificate_der) {
        EndPointHash::Sha256 => &digest::SHA256,
        EndPointHash::Sha384 => &digest::SHA384,
        EndPointHash::Sha512 => &digest::SHA512,
    };
    let hash = digest::digest(algorithm, certificate_der);
    [TLS_SERVER_END_POINT, hash.as_ref()].concat()
}

/// The verifier behind [`TlsOptions`].
#[derive(Debug)]
struct FleetVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    skip_ca: bool,
    skip_cn: bool,
    pin: Option<Thumbprint>,
}

/// A pinned thumbprint that did not match, carried through rustls as an `OtherError`.
#[derive(Debug, thiserror::Error)]
#[error("certificate thumbprint {actual} is not the pinned {expected}")]
struct PinMismatch {
    expected: Thumbprint,
    actual: Thumbprint,
}

impl ServerCertVerifier for FleetVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut pinned = false;
        if let Some(expected) = self.pin {
            let actual = expected.of_same_kind(end_entity.as_ref());
            if actual != expected {
                return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    OtherError(Arc::new(PinMismatch { expected, actual })),
                )));
            }
            pinned = true;
        }
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        // webpki checks the end entity's own properties (validity period, basic
        // constraints) before it looks for an issuer, so UnknownIssuer means the
        // certificate is otherwise in order: that is the one error the CA skip forgives.
        match rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        ) {
            Ok(()) => {}
            Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))
                if self.skip_ca || pinned => {}
            Err(error) => return Err(error),
        }
        if !self.skip_cn {
            rustls::client::verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    // The handshake signatures are always verified with the certificate's key: the skips
    // drop certificate checks, never the proof that the peer holds the key.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Adds every certificate of a PEM bundle; an error when none is usable.
fn add_pem_roots(roots: &mut RootCertStore, pem: &[u8], what: &str) -> Result<(), TlsSetupError> {
    let mut certs = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem) {
        certs.push(cert.map_err(|e| TlsSetupError::CaBundle {
            what: what.to_owned(),
            problem: e.to_string(),
        })?);
    }
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsSetupError::CaBundle {
            what: what.to_owned(),
            problem: format!("{ignored} certificates could not be parsed"),
        });
    }
    Ok(())
}

/// Reads at most [`MAX_BUNDLE_BYTES`] of a file.
fn read_bounded(path: &std::path::Path) -> io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut data = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_BUNDLE_BYTES)
        .read_to_end(&mut data)?;
    Ok(data)
}

/// `Certificate.signatureAlgorithm` (RFC 5280 4.1.1.2): the OID bytes and the parameters.
fn signature_algorithm(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (certificate, _) = der::element(der, 0x30)?;
    let (_tbs, rest) = der::element(certificate, 0x30)?;
    let (algorithm, _) = der::element(rest, 0x30)?;
    let (oid, params) = der::element(algorithm, 0x06)?;
    Some((oid, params))
}

/// RSASSA-PSS-params `[0] hashAlgorithm` (default SHA-1, which maps to SHA-256).
fn pss_hash(params: &[u8]) -> EndPointHash {
    let hash_oid = der::element(params, 0x30)
        .and_then(|(seq, _)| der::element(seq, 0xa0))
        .and_then(|(explicit, _)| der::element(explicit, 0x30))
        .and_then(|(alg, _)| der::element(alg, 0x06))
        .map(|(oid, _)| oid);
    match hash_oid {
        // id-sha384, id-sha512 (2.16.840.1.101.3.4.2.2 / .3)
        Some([0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02]) => EndPointHash::Sha384,
        Some([0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03]) => EndPointHash::Sha512,
        _ => EndPointHash::Sha256,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let params = rcgen::CertificateParams::new(vec!["web01".to_owned()]).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn thumbprints_parse_and_print() {
        let sha1 = "1a2B3c4D5e6F7a8B9c0D1e2F3a4B5c6D7e8F9a0B";
        let t = Thumbprint::parse(sha1).unwrap();
        assert!(matches!(t, Thumbprint::Sha1(_)));
        assert_eq!(t.to_string(), sha1.to_ascii_uppercase());
        let spaced = "1a 2b:3c 4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b";
        assert!(matches!(
            Thumbprint::parse(spaced).unwrap(),
            Thumbprint::Sha1(_)
        ));
        let sha256 = "ab".repeat(32);
        assert!(matches!(
            Thumbprint::parse(&sha256).unwrap(),
            Thumbprint::Sha256(_)
        ));
        for bad in [
            "",
            "abc",
            &"zz".repeat(20),
            &"ab".repeat(21),
            "é".repeat(20).as_str(),
        ] {
            assert!(Thumbprint::parse(bad).is_err(), "{bad}");
        }
        let der = cert(&rcgen::PKCS_ECDSA_P256_SHA256);
        let sha1 = Thumbprint::sha1(&der);
        assert_eq!(Thumbprint::parse(&sha1.to_string()).unwrap(), sha1);
        assert_eq!(sha1.of_same_kind(&der), sha1);
        assert_eq!(Thumbprint::sha256(&der).to_string().len(), 64);
    }

    #[test]
    fn end_point_hash_follows_the_signature_hash() {
        // RFC 5929 4.1: the certificate's own signature hash, SHA-256 in place of weaker.
        assert_eq!(
            end_point_hash(&cert(&rcgen::PKCS_ECDSA_P256_SHA256)),
            EndPointHash::Sha256
        );
        assert_eq!(
            end_point_hash(&cert(&rcgen::PKCS_ECDSA_P384_SHA384)),
            EndPointHash::Sha384
        );
        assert_eq!(
            end_point_hash(&cert(&rcgen::PKCS_ED25519)),
            EndPointHash::Sha256
        );
        assert_eq!(end_point_hash(b"not DER"), EndPointHash::Sha256);
        assert_eq!(end_point_hash(&[]), EndPointHash::Sha256);

        let der = cert(&rcgen::PKCS_ECDSA_P384_SHA384);
        let cbt = channel_bindings(&der);
        assert_eq!(&cbt[..21], b"tls-server-end-point:");
        assert_eq!(&cbt[21..], digest::digest(&digest::SHA384, &der).as_ref());
        let der = cert(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(channel_bindings(&der).len(), 21 + 32);
    }

    #[test]
    fn rsa_oids_map_like_rfc_5929() {
        // Hand-built Certificate shells: SEQUENCE { tbs SEQUENCE {}, alg SEQUENCE { OID } }.
        let shell = |oid: &[u8], params: &[u8]| {
            let mut alg = vec![0x06, oid.len() as u8];
            alg.extend_from_slice(oid);
            alg.extend_from_slice(params);
            let mut body = vec![0x30, 0x00, 0x30, alg.len() as u8];
            body.extend(alg);
            let mut der = vec![0x30, body.len() as u8];
            der.extend(body);
            der
        };
        let rsa = |last: u8| [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, last];
        assert_eq!(
            end_point_hash(&shell(&rsa(0x05), &[])),
            EndPointHash::Sha256
        ); // SHA-1
        assert_eq!(
            end_point_hash(&shell(&rsa(0x04), &[])),
            EndPointHash::Sha256
        ); // MD5
        assert_eq!(
            end_point_hash(&shell(&rsa(0x0b), &[])),
            EndPointHash::Sha256
        );
        assert_eq!(
            end_point_hash(&shell(&rsa(0x0c), &[])),
            EndPointHash::Sha384
        );
        assert_eq!(
            end_point_hash(&shell(&rsa(0x0d), &[])),
            EndPointHash::Sha512
        );
        // RSASSA-PSS with hashAlgorithm [0] = id-sha512.
        let sha512 = [
            0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03,
        ];
        let mut params = Vec::new();
        let alg_id = [&[0x30, sha512.len() as u8][..], &sha512].concat();
        let explicit = [&[0xa0, alg_id.len() as u8][..], &alg_id].concat();
        params.extend([0x30, explicit.len() as u8]);
        params.extend(explicit);
        assert_eq!(
            end_point_hash(&shell(&rsa(0x0a), &params)),
            EndPointHash::Sha512
        );
        assert_eq!(
            end_point_hash(&shell(&rsa(0x0a), &[0x30, 0x00])),
            EndPointHash::Sha256
        );
    }

    #[test]
    fn ca_bundles_must_hold_certificates() {
        let mut options = TlsOptions {
            system_roots: false,
            ca_pem: Some("not pem".to_owned()),
            ..TlsOptions::default()
        };
        assert!(matches!(
            TlsClient::new(&options),
            Err(TlsSetupError::CaBundle { .. })
        ));
        options.ca_pem = None;
        options.ca_file = Some("/nonexistent/psfleet-ca.pem".into());
        assert!(matches!(
            TlsClient::new(&options),
            Err(TlsSetupError::CaFile { .. })
        ));
        options.ca_file = None;
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        options.ca_pem = Some(params.self_signed(&key).unwrap().pem());
        assert_eq!(TlsClient::new(&options).unwrap().root_count(), 1);
    }
}
