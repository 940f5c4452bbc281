//! CredSSP for WinRM (MS-CSSP over HTTP, MS-WSMV 2.2.9.1.3): a TLS session carried in
//! `Authorization: CredSSP <base64>` headers, SPNEGO inside it, then the user's password
//! delegated to the server; afterwards the same TLS session seals the SOAP bodies
//! (`HTTP-CredSSP-session-encrypted`).
//!
//! The TLS client is rustls driven in memory: every token is whatever TLS records the
//! client has to send, every server token is fed back in. Certificate checks are off for
//! this inner TLS, as MS-CSSP 3.1.5 step 1 and every client (pyspnego, Windows) have them:
//! WinRM's CredSSP certificate is self-signed, and the server is authenticated instead by
//! the `pubKeyAuth` exchange, which binds the TLS public key to the SPNEGO session keys.
//! Handshake signatures are still verified, so the certificate's key is the one that
//! signed the key exchange.
//!
//! The exchange (TLS 1.2, as WinRM's CredSSP listener negotiates it):
//! 1. ClientHello → ServerHello..ServerHelloDone;
//! 2. ClientKeyExchange, ChangeCipherSpec, Finished → ChangeCipherSpec, Finished;
//! 3. TSRequest with the SPNEGO NEGOTIATE → TSRequest with the CHALLENGE;
//! 4. TSRequest with AUTHENTICATE and `pubKeyAuth` → TSRequest with the server's
//!    `pubKeyAuth` (and SPNEGO's final token);
//! 5. TSRequest with `authInfo` (the encrypted TSCredentials) → 200.
//!
//! sspi's `CredSspClient` builds and checks the TSRequests (MS-CSSP 2.2.1); this module
//! owns the TLS layer and the WinRM sealing, which sspi does not provide
//! (dependencies.md).

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;

use psfleet_core::der;
use psfleet_core::encryption::{Sealed, Unsealed};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use sspi::credssp::{ClientMode, ClientState, CredSspClient, CredSspMode, TsRequest};
use sspi::{Credentials, NegotiateConfig};

use crate::auth::{AuthError, Credential};

/// Largest TLS output or input of one leg: a handshake flight with a certificate chain is
/// a few KiB; a sealed WinRM chunk is 16 KiB plus framing.
pub const MAX_TLS_FLIGHT: usize = 64 * 1024;

/// Largest decrypted TSRequest accepted from the server.
const MAX_TS_REQUEST: usize = 64 * 1024;

/// Largest sealed message accepted (WinRM's MaxEnvelopeSizekb is 500 KB by default; a
/// client never unseals more than one response at a time).
const MAX_SEALED_MESSAGE: usize = 16 * 1024 * 1024;

/// A CredSSP client context for one connection (used through
/// [`crate::auth::ClientContext`] with [`crate::auth::Mechanism::CredSsp`]).
pub(crate) struct CredSspContext {
    tls: ClientConnection,
    phase: Phase,
    credentials: Credentials,
    spn: String,
    sspi: Option<CredSspClient>,
}

impl fmt::Debug for CredSspContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredSspContext")
            .field("phase", &self.phase)
            .field("spn", &self.spn)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The TLS handshake is running.
    Tls,
    /// TSRequests are being exchanged inside TLS.
    Auth,
    /// The credentials were delegated: the TLS session seals messages.
    Done,
}

/// What one CredSSP step produced: the TLS bytes to send and whether the exchange is
/// complete once they are sent (the last leg carries the delegated credentials).
#[derive(Debug)]
pub(crate) struct CredSspStep {
    pub(crate) token: Vec<u8>,
    pub(crate) complete: bool,
}

impl CredSspContext {
    /// A context delegating `credential` to the WinRM service on `host` (SPN `HTTP/<host>`
    /// for the SPNEGO part, which is NTLM here).
    pub(crate) fn new(credential: &Credential, host: &str) -> Result<Self, AuthError> {
        let tls_error = |reason: String| AuthError::CredSspTls { reason };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .map_err(|e| tls_error(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        // The name is only sent as SNI; the certificate is not checked against it. A name
        // rustls cannot send falls back to an address (no SNI) rather than failing.
        let name = ServerName::try_from(host.to_owned())
            .unwrap_or(ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        let tls =
            ClientConnection::new(Arc::new(config), name).map_err(|e| tls_error(e.to_string()))?;
        Ok(Self {
            tls,
            phase: Phase::Tls,
            credentials: Credentials::AuthIdentity(credential.identity_for_delegation()?),
            spn: format!("HTTP/{host}"),
            sspi: None,
        })
    }

    /// One leg: feeds the server's token (TLS records) in and returns the client's.
    pub(crate) fn step(&mut self, input: Option<&[u8]>) -> Result<CredSspStep, AuthError> {
        if let Some(input) = input {
            self.feed(input)?;
        }
        match self.phase {
            Phase::Tls if self.tls.is_handshaking() => {
                let token = self.drain()?;
                if token.is_empty() {
                    return Err(AuthError::CredSspProtocol(
                        "the TLS handshake stalled with nothing to send",
                    ));
                }
                Ok(CredSspStep {
                    token,
                    complete: false,
                })
            }
            Phase::Tls => {
                // The handshake just finished: start SPNEGO inside TLS with an empty
                // TSRequest, as the client speaks first (MS-CSSP 3.1.5 step 2).
                let public_key = self.server_public_key()?;
                let config = NegotiateConfig::new(
                    Box::new(sspi::ntlm::NtlmConfig::default()),
                    Some("ntlm".to_owned()),
                    String::new(),
                );
                let client = CredSspClient::new(
                    public_key,
                    self.credentials.clone(),
                    CredSspMode::WithCredentials,
                    ClientMode::Negotiate(config),
                    self.spn.clone(),
                )
                .map_err(sspi_error("start"))?;
                self.sspi = Some(client);
                self.phase = Phase::Auth;
                self.exchange(TsRequest::default())
            }
            Phase::Auth => {
                let plain = self.read_plaintext(MAX_TS_REQUEST)?;
                if plain.is_empty() {
                    return Err(AuthError::CredSspProtocol(
                        "the server token held no TSRequest",
                    ));
                }
                let request =
                    TsRequest::from_buffer(&plain).map_err(|e| AuthError::CredSspTls {
                        reason: format!("malformed TSRequest: {e}"),
                    })?;
                self.exchange(request)
            }
            Phase::Done => Err(AuthError::OutOfSequence(
                "the CredSSP exchange is already complete",
            )),
        }
    }

    /// Runs sspi's CredSSP client on one server TSRequest and wraps its answer in TLS.
    fn exchange(&mut self, request: TsRequest) -> Result<CredSspStep, AuthError> {
        let client = self
            .sspi
            .as_mut()
            .ok_or(AuthError::CredSspProtocol("no CredSSP state"))?;
        // NTLM inside SPNEGO needs no network; a generator that suspends is an error.
        let state = client
            .process(request)
            .resolve_to_result()
            .map_err(|e| match e.nstatus {
                Some(status) => AuthError::CredSspRejected {
                    nt_status: status.0,
                    source: e,
                },
                None => sspi_error("process TSRequest")(e),
            })?;
        let (reply, complete) = match state {
            ClientState::ReplyNeeded(reply) => (reply, false),
            ClientState::FinalMessage(reply) => (reply, true),
        };
        let mut encoded = Vec::new();
        reply
            .encode_ts_request(&mut encoded)
            .map_err(|e| AuthError::CredSspTls {
                reason: format!("encoding TSRequest: {e}"),
            })?;
        self.write_plaintext(&encoded)?;
        let token = self.drain()?;
        if complete {
            self.phase = Phase::Done;
        }
        Ok(CredSspStep { token, complete })
    }

    /// Seals one message as TLS application data, split after the TLS trailer length as
    /// Windows frames it (MS-WSMV 2.2.9.1.3; pyspnego `wrap_winrm`): `header` = the first
    /// trailer-length bytes of the records, `payload` = the rest.
    pub(crate) fn seal(&mut self, plaintext: &[u8]) -> Result<Sealed, AuthError> {
        if self.phase != Phase::Done {
            return Err(AuthError::NotEstablished);
        }
        self.write_plaintext(plaintext)?;
        let mut records = self.drain_bounded(plaintext.len().saturating_add(MAX_TLS_FLIGHT))?;
        let split = trailer_len(&self.tls)?.min(records.len());
        let payload = records.split_off(split);
        Ok(Sealed {
            header: records,
            payload,
            padding: 0,
        })
    }

    /// Unseals one block: the header and payload together are the TLS records.
    pub(crate) fn unseal(&mut self, header: &[u8], payload: &[u8]) -> Result<Unsealed, AuthError> {
        if self.phase != Phase::Done {
            return Err(AuthError::NotEstablished);
        }
        let mut records = Vec::with_capacity(header.len() + payload.len());
        records.extend_from_slice(header);
        records.extend_from_slice(payload);
        self.feed(&records)?;
        let plain = self.read_plaintext(MAX_SEALED_MESSAGE)?;
        Ok(Unsealed::new(plain))
    }

    /// The server certificate's subjectPublicKey, which `pubKeyAuth` binds (MS-CSSP 3.1.5
    /// step 3: "the public key of the server's certificate", the BIT STRING contents).
    fn server_public_key(&self) -> Result<Vec<u8>, AuthError> {
        let cert = self
            .tls
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or(AuthError::CredSspProtocol("the server sent no certificate"))?;
        subject_public_key(cert.as_ref())
            .map(<[u8]>::to_vec)
            .ok_or(AuthError::CredSspProtocol(
                "the server certificate's public key cannot be read",
            ))
    }

    fn feed(&mut self, mut input: &[u8]) -> Result<(), AuthError> {
        if input.len() > MAX_SEALED_MESSAGE {
            return Err(AuthError::TokenTooLarge(input.len()));
        }
        // read_tls takes at most one buffer's worth at a time; process between reads.
        while !input.is_empty() {
            let n = self
                .tls
                .read_tls(&mut input)
                .map_err(|e| AuthError::CredSspTls {
                    reason: format!("reading TLS records: {e}"),
                })?;
            self.tls
                .process_new_packets()
                .map_err(|e| AuthError::CredSspTls {
                    reason: e.to_string(),
                })?;
            if n == 0 {
                break;
            }
        }
        Ok(())
    }

    fn drain(&mut self) -> Result<Vec<u8>, AuthError> {
        self.drain_bounded(MAX_TLS_FLIGHT)
    }

    fn drain_bounded(&mut self, limit: usize) -> Result<Vec<u8>, AuthError> {
        let mut out = Vec::new();
        while self.tls.wants_write() {
            self.tls
                .write_tls(&mut out)
                .map_err(|e| AuthError::CredSspTls {
                    reason: format!("writing TLS records: {e}"),
                })?;
            if out.len() > limit {
                return Err(AuthError::CredSspProtocol("TLS output exceeds its bound"));
            }
        }
        Ok(out)
    }

    fn write_plaintext(&mut self, data: &[u8]) -> Result<(), AuthError> {
        self.tls
            .writer()
            .write_all(data)
            .map_err(|e| AuthError::CredSspTls {
                reason: format!("buffering plaintext: {e}"),
            })
    }

    fn read_plaintext(&mut self, limit: usize) -> Result<Vec<u8>, AuthError> {
        let mut out = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.tls.reader().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if out.len() > limit {
                        return Err(AuthError::CredSspProtocol(
                            "TLS plaintext exceeds its bound",
                        ));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    return Err(AuthError::CredSspTls {
                        reason: format!("reading plaintext: {e}"),
                    });
                }
            }
        }
        Ok(out)
    }
}

/// The TLS record overhead Windows splits sealed messages at (pyspnego
/// `_tls_trailer_length`): 16 for TLS 1.2 AEAD suites (the GCM or Poly1305 tag), 17 for
/// TLS 1.3 (the tag and the content-type byte). rustls offers AEAD suites only.
fn trailer_len(tls: &ClientConnection) -> Result<usize, AuthError> {
    match tls.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_2) => Ok(16),
        Some(rustls::ProtocolVersion::TLSv1_3) => Ok(17),
        _ => Err(AuthError::CredSspProtocol("no TLS version negotiated")),
    }
}

fn sspi_error(operation: &'static str) -> impl Fn(sspi::Error) -> AuthError {
    move |source| AuthError::Sspi {
        mechanism: crate::auth::Mechanism::CredSsp,
        operation,
        source,
    }
}

/// Accepts any certificate (MS-CSSP 3.1.5 step 1) but still checks that the handshake was
/// signed by the certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The subjectPublicKey BIT STRING contents (without its unused-bits byte) of a DER
/// X.509 certificate (RFC 5280 4.1: Certificate → tbsCertificate → [0] version, serial,
/// signature, issuer, validity, subject, subjectPublicKeyInfo → algorithm,
/// subjectPublicKey). For RSA this is the PKCS#1 RSAPublicKey, the bytes Windows and
/// pyspnego bind.
pub fn subject_public_key(cert: &[u8]) -> Option<&[u8]> {
    let (certificate, _) = der::element(cert, 0x30)?;
    let (tbs, _) = der::element(certificate, 0x30)?;
    let mut rest = tbs;
    // Optional [0] EXPLICIT version.
    if rest.first() == Some(&0xa0) {
        rest = der::element(rest, 0xa0)?.1;
    }
    // serialNumber, signature, issuer, validity, subject.
    for tag in [0x02, 0x30, 0x30, 0x30, 0x30] {
        rest = der::element(rest, tag)?.1;
    }
    let (spki, _) = der::element(rest, 0x30)?;
    let (_algorithm, after) = der::element(spki, 0x30)?;
    let (bits, _) = der::element(after, 0x03)?;
    match bits.split_first() {
        Some((0, key)) if !key.is_empty() => Some(key),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_public_key_of_generated_certificates() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["web01.fleet.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(
            subject_public_key(cert.der()).unwrap(),
            key.public_key_raw()
        );
        // Damaged certificates give None, never a panic.
        let der = cert.der().to_vec();
        for cut in 0..der.len() {
            let _ = subject_public_key(&der[..cut]);
        }
        assert!(subject_public_key(&der[..der.len() / 2]).is_none());
        assert!(subject_public_key(b"").is_none());
    }
}
