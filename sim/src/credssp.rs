//! The simulator's CredSSP acceptor (MS-CSSP over HTTP, MS-WSMV 2.2.9.1.3): a rustls
//! server driven in memory with the TLS records from `Authorization: CredSSP <base64>`,
//! sspi's `CredSspServer` (SPNEGO with NTLM against the host's accounts) inside it, and
//! the TLS session sealing bodies afterwards (`HTTP-CredSSP-session-encrypted`).
//!
//! Like WinRM, the acceptor uses its own self-signed certificate for this inner TLS
//! ([`CredSspTls::generate`]); the client binds to its public key through `pubKeyAuth`.
//! TLS 1.2 only, as WinRM's CredSSP listener negotiates it.

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;

use psfleet_core::encryption::{MessageSealer, Sealed, Unsealed};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection};
use sspi::credssp::{CredSspServer, CredentialsProxy, ServerMode, ServerState, TsRequest};
use sspi::{AuthIdentity, NegotiateConfig, Username};

use crate::auth_kerberos::Accepted;

/// Largest TLS input of one leg or one sealed message.
const MAX_INPUT: usize = 16 * 1024 * 1024;

/// Largest decrypted TSRequest accepted (sspi encodes TSRequests with 16-bit lengths).
const MAX_TS_REQUEST: usize = 64 * 1024;

/// The inner-TLS identity of a CredSSP acceptor: a rustls server configuration and the
/// certificate's subjectPublicKey that `pubKeyAuth` binds.
#[derive(Clone)]
pub struct CredSspTls {
    config: Arc<ServerConfig>,
    public_key: Vec<u8>,
    certificate: CertificateDer<'static>,
}

impl fmt::Debug for CredSspTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredSspTls")
            .field("public_key_len", &self.public_key.len())
            .finish_non_exhaustive()
    }
}

impl CredSspTls {
    /// A fresh self-signed ECDSA P-256 certificate for `host` (WinRM generates a
    /// self-signed certificate for CredSSP the same way).
    pub fn generate(host: &str) -> Result<Self, CredSspError> {
        let setup = |e: &dyn fmt::Display| CredSspError::Setup(e.to_string());
        let key = rcgen::KeyPair::generate().map_err(|e| setup(&e))?;
        let cert = rcgen::CertificateParams::new(vec![host.to_owned()])
            .map_err(|e| setup(&e))?
            .self_signed(&key)
            .map_err(|e| setup(&e))?;
        let certificate = cert.der().clone();
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .map_err(|e| setup(&e))?
            .with_no_client_auth()
            .with_single_cert(vec![certificate.clone()], private)
            .map_err(|e| setup(&e))?;
        Ok(Self {
            config: Arc::new(config),
            // The BIT STRING contents of subjectPublicKey: for ECDSA the uncompressed
            // point, which is what rcgen calls the raw public key.
            public_key: key.public_key_raw().to_vec(),
            certificate,
        })
    }

    /// The certificate, DER.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }
}

/// Why the CredSSP acceptor refused a client or failed (every one is a 401, except
/// setup errors).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredSspError {
    /// The inner TLS could not be set up.
    #[error("CredSSP TLS setup: {0}")]
    Setup(String),
    /// The client's TLS records were refused.
    #[error("CredSSP TLS: {0}")]
    Tls(String),
    /// sspi refused the TSRequest (wrong password, unknown user, bad pubKeyAuth); when
    /// `reply` is set it holds TLS records carrying a TSRequest with the NTSTATUS for the
    /// client (MS-CSSP 2.2.1 errorCode).
    #[error("CredSSP refused: {source}")]
    Refused {
        /// sspi's error.
        #[source]
        source: sspi::Error,
        /// The error TSRequest, wrapped in TLS, to send with the 401.
        reply: Option<Vec<u8>>,
    },
    /// The client broke the sequence (a token after completion, no TSRequest, ...).
    #[error("CredSSP protocol violation: {0}")]
    Protocol(&'static str),
    /// Sealing or unsealing before the credentials were delegated.
    #[error("the CredSSP context is not established")]
    NotEstablished,
}

/// The accounts a CredSSP acceptor checks (sspi looks the wire user name up here).
struct Accounts(Vec<AuthIdentity>);

impl CredentialsProxy for Accounts {
    type AuthenticationData = AuthIdentity;

    fn auth_data_by_user(&mut self, username: &Username) -> io::Result<AuthIdentity> {
        self.0
            .iter()
            .find(|a| a.username.eq_ignore_ascii_case(username))
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "unknown user"))
    }

    fn auth_data(&mut self) -> io::Result<Vec<AuthIdentity>> {
        Ok(self.0.clone())
    }
}

/// A CredSSP acceptor for one connection.
pub struct CredSspAcceptor {
    tls: ServerConnection,
    server: CredSspServer<Accounts>,
    phase: Phase,
    delegated: Option<AuthIdentity>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Tls,
    Auth,
    Done,
    Failed,
}

impl fmt::Debug for CredSspAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredSspAcceptor")
            .field("phase", &self.phase)
            .field("user", &self.user())
            .finish_non_exhaustive()
    }
}

impl CredSspAcceptor {
    /// An acceptor with the inner TLS identity `tls`, checking `accounts` (`(user,
    /// password)`, user as `DOMAIN\user`, `user@domain` or `user`).
    pub fn new(tls: &CredSspTls, accounts: &[(&str, &str)]) -> Result<Self, CredSspError> {
        let identities = accounts
            .iter()
            .map(|(user, password)| {
                Ok(AuthIdentity {
                    username: Username::parse(user)
                        .map_err(|e| CredSspError::Setup(format!("account {user:?}: {e}")))?,
                    password: (*password).to_owned().into(),
                })
            })
            .collect::<Result<Vec<_>, CredSspError>>()?;
        let connection = ServerConnection::new(Arc::clone(&tls.config))
            .map_err(|e| CredSspError::Setup(e.to_string()))?;
        // SPNEGO with NTLM, as a workgroup Windows host answers inside CredSSP.
        let mode = ServerMode::Negotiate(NegotiateConfig::new(
            Box::new(sspi::ntlm::NtlmConfig::default()),
            Some("ntlm".to_owned()),
            String::new(),
        ));
        let server = CredSspServer::new(tls.public_key.clone(), Accounts(identities), mode)
            .map_err(|e| CredSspError::Setup(e.to_string()))?;
        Ok(Self {
            tls: connection,
            server,
            phase: Phase::Tls,
            delegated: None,
        })
    }

    /// True once the client delegated its credentials.
    pub fn is_complete(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The delegated user (as the client wrote it), once complete.
    pub fn user(&self) -> Option<String> {
        self.delegated
            .as_ref()
            .map(|identity| identity.username.inner().to_owned())
    }

    /// The delegated password, once complete (a second hop would log on with it).
    pub fn delegated_password(&self) -> Option<&str> {
        self.delegated
            .as_ref()
            .map(|identity| identity.password.as_ref().as_str())
    }

    /// Takes one client token (TLS records) and answers with the server's.
    pub fn accept(&mut self, token: &[u8]) -> Result<Accepted, CredSspError> {
        match self.phase {
            Phase::Done => return Err(CredSspError::Protocol("the exchange is complete")),
            Phase::Failed => return Err(CredSspError::Protocol("the exchange failed")),
            Phase::Tls | Phase::Auth => {}
        }
        if let Err(e) = self.feed(token) {
            self.phase = Phase::Failed;
            return Err(e);
        }
        if self.phase == Phase::Tls {
            if self.tls.is_handshaking() {
                return Ok(Accepted::Continue(self.drain()?));
            }
            self.phase = Phase::Auth;
            // TLS 1.2: the server's Finished goes back alone; the client speaks next.
            let flight = self.drain()?;
            if !flight.is_empty() {
                return Ok(Accepted::Continue(flight));
            }
        }
        let plain = self.read_plaintext()?;
        if plain.is_empty() {
            return Err(CredSspError::Protocol("no TSRequest in the client token"));
        }
        let request = TsRequest::from_buffer(&plain)
            .map_err(|e| CredSspError::Tls(format!("malformed TSRequest: {e}")))?;
        // NTLM needs no network: a generator that suspends is an error.
        let result = self.server.process(request).resolve_to_result();
        match result {
            Ok(ServerState::ReplyNeeded(reply)) => {
                let records = self.wrap(&reply)?;
                Ok(Accepted::Continue(records))
            }
            Ok(ServerState::Finished(identity)) => {
                self.delegated = Some(identity);
                self.phase = Phase::Done;
                Ok(Accepted::Complete(None))
            }
            Err(error) => {
                self.phase = Phase::Failed;
                let reply = match error.ts_request {
                    Some(ts) => self.wrap(&ts).ok(),
                    None => None,
                };
                Err(CredSspError::Refused {
                    source: error.error,
                    reply,
                })
            }
        }
    }

    fn wrap(&mut self, request: &TsRequest) -> Result<Vec<u8>, CredSspError> {
        let mut encoded = Vec::new();
        request
            .encode_ts_request(&mut encoded)
            .map_err(|e| CredSspError::Tls(format!("encoding TSRequest: {e}")))?;
        self.tls
            .writer()
            .write_all(&encoded)
            .map_err(|e| CredSspError::Tls(e.to_string()))?;
        self.drain()
    }

    fn feed(&mut self, mut input: &[u8]) -> Result<(), CredSspError> {
        if input.len() > MAX_INPUT {
            return Err(CredSspError::Protocol("client token too large"));
        }
        while !input.is_empty() {
            let n = self
                .tls
                .read_tls(&mut input)
                .map_err(|e| CredSspError::Tls(e.to_string()))?;
            self.tls
                .process_new_packets()
                .map_err(|e| CredSspError::Tls(e.to_string()))?;
            if n == 0 {
                break;
            }
        }
        Ok(())
    }

    fn drain(&mut self) -> Result<Vec<u8>, CredSspError> {
        let mut out = Vec::new();
        while self.tls.wants_write() {
            self.tls
                .write_tls(&mut out)
                .map_err(|e| CredSspError::Tls(e.to_string()))?;
            if out.len() > MAX_INPUT {
                return Err(CredSspError::Protocol("TLS output exceeds its bound"));
            }
        }
        Ok(out)
    }

    fn read_plaintext(&mut self) -> Result<Vec<u8>, CredSspError> {
        let limit = if self.phase == Phase::Done {
            MAX_INPUT
        } else {
            MAX_TS_REQUEST
        };
        let mut out = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.tls.reader().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if out.len() > limit {
                        return Err(CredSspError::Protocol("TLS plaintext exceeds its bound"));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(CredSspError::Tls(e.to_string())),
            }
        }
        Ok(out)
    }
}

impl MessageSealer for CredSspAcceptor {
    type Error = CredSspError;

    /// Seals a reply as TLS application data, split after the 16-byte TLS 1.2 AEAD
    /// trailer length as Windows frames it (MS-WSMV 2.2.9.1.3).
    fn seal(&mut self, plaintext: &[u8]) -> Result<Sealed, CredSspError> {
        if self.phase != Phase::Done {
            return Err(CredSspError::NotEstablished);
        }
        self.tls
            .writer()
            .write_all(plaintext)
            .map_err(|e| CredSspError::Tls(e.to_string()))?;
        let mut records = self.drain()?;
        let split = TLS12_AEAD_TRAILER.min(records.len());
        let payload = records.split_off(split);
        Ok(Sealed {
            header: records,
            payload,
            padding: 0,
        })
    }

    /// Unseals a client block: header and payload together are TLS records.
    fn unseal(&mut self, header: &[u8], payload: &[u8]) -> Result<Unsealed, CredSspError> {
        if self.phase != Phase::Done {
            return Err(CredSspError::NotEstablished);
        }
        let mut records = Vec::with_capacity(header.len() + payload.len());
        records.extend_from_slice(header);
        records.extend_from_slice(payload);
        self.feed(&records)?;
        Ok(Unsealed::new(self.read_plaintext()?))
    }
}

/// The TLS trailer length of TLS 1.2 AEAD suites (the 16-byte GCM/Poly1305 tag), the
/// only ones the acceptor negotiates.
const TLS12_AEAD_TRAILER: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tls_identity_and_refusals_before_completion() {
        let tls = CredSspTls::generate("web01.fleet.test").unwrap();
        assert_eq!(tls.public_key.len(), 65, "an uncompressed P-256 point");
        let mut acceptor = CredSspAcceptor::new(&tls, &[("alice", "pw")]).unwrap();
        assert!(!acceptor.is_complete());
        assert!(acceptor.user().is_none());
        assert!(matches!(
            acceptor.seal(b"x"),
            Err(CredSspError::NotEstablished)
        ));
        // Garbage instead of a ClientHello fails the TLS layer, and the acceptor stays
        // failed.
        assert!(matches!(
            acceptor.accept(b"GET / HTTP/1.1\r\n\r\n"),
            Err(CredSspError::Tls(_))
        ));
        assert!(matches!(
            acceptor.accept(b"\x16\x03\x01"),
            Err(CredSspError::Protocol(_))
        ));
        assert!(CredSspAcceptor::new(&tls, &[("a\\b\\c", "pw")]).is_err());
    }
}
