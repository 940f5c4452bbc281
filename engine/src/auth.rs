//! Client security contexts for WinRM over HTTP: NTLM, Negotiate (SPNEGO) and Kerberos
//! over sspi.
//!
//! A [`ClientContext`] authenticates one TCP connection (MS-WSMV 2.2.9.1.1.1: NTLM,
//! SPNEGO and Kerberos are connection-oriented) and then seals the SOAP bodies sent on it,
//! as a [`MessageSealer`] for `psfleet_core::encryption`.
//!
//! NTLM and Negotiate travel under the HTTP `Negotiate` scheme: WinRM never offers an
//! `NTLM` scheme, and accepts a raw NTLMSSP token under `Negotiate` (wire-facts section 3).
//! [`Mechanism::Negotiate`] is SPNEGO (RFC 4178) the way Windows clients send it: Kerberos
//! first when a realm and KDC are known for the user (see [`crate::kerberos`]), NTLM
//! otherwise or when the KDC cannot be used. [`Mechanism::Kerberos`] is raw Kerberos
//! (RFC 4121 tokens) under the `Kerberos` scheme (MS-WSMV 2.2.9.1.2).
//!
//! Over HTTPS a context can be bound to the TLS channel ([`ContextOptions::channel_bindings`],
//! RFC 5929 tls-server-end-point).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use psfleet_core::encryption::{MessageSealer, Protocol, Sealed, Unsealed};
use psfleet_core::taxonomy::Bucket;
use sspi::generator::GeneratorState;
use sspi::{
    AuthIdentity, BufferType, ClientRequestFlags, CredentialUse, Credentials, CredentialsBuffers,
    DataRepresentation, EncryptionFlags, Kerberos, KerberosConfig, Negotiate, NegotiateConfig,
    Ntlm, SecurityBuffer, SecurityBufferRef, SecurityStatus, Sspi, SspiImpl, Username,
};

use crate::credssp::CredSspContext;
use crate::kerberos::{self, KdcClient, KerberosOptions, KerberosTarget};
use crate::ticket_cache::{LocalAs, TicketCache, TicketCacheError};

/// The length of an NTLM message signature: the header of every NTLM-sealed WinRM block
/// (MS-NLMP 2.2.2.9.1; MS-WSMV 2.2.9.1.1.2.2).
pub const NTLM_SIGNATURE_LEN: usize = 16;

/// Longest channel-binding application data accepted: `tls-server-end-point:` plus a
/// SHA-512 hash is 85 bytes; anything near this bound is not a channel binding.
pub const MAX_CHANNEL_BINDINGS_LEN: usize = 4_096;

/// Longest security token accepted from a peer. Windows caps tokens at 48,000 bytes
/// (`cbMaxToken` of the Negotiate package); an NTLM CHALLENGE is a few hundred.
pub const MAX_TOKEN_LEN: usize = 48_000;

/// Longest sealed-block header accepted: an RFC 4121 wrap token header with its rotated
/// checksum is 60 to 76 bytes for AES.
pub const MAX_SEAL_HEADER_LEN: usize = 1_024;

/// The NetBIOS address sspi puts in AS requests (RFC 4120 5.4.1 `addresses`); MIT KDCs
/// ignore NetBIOS addresses.
const CLIENT_COMPUTER_NAME: &str = "PSFLEET";

/// The client authentication mechanism of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mechanism {
    /// Raw NTLMSSP tokens (MS-NLMP), sent under the HTTP `Negotiate` scheme (pywinrm's
    /// and pypsrp's `ntlm` auth do the same).
    Ntlm,
    /// SPNEGO (RFC 4178, MS-SPNG): Kerberos first when a realm and KDC are known, NTLM
    /// otherwise, as Windows clients send it.
    Negotiate,
    /// Raw Kerberos (RFC 4121) under the HTTP `Kerberos` scheme (MS-WSMV 2.2.9.1.2).
    Kerberos,
    /// CredSSP (MS-CSSP) under the HTTP `CredSSP` scheme: TLS in the header, NTLM inside
    /// it, then the password delegated to the host (MS-WSMV 2.2.9.1.3).
    CredSsp,
}

impl Mechanism {
    /// The HTTP authentication scheme the tokens travel under (`Authorization:` and
    /// `WWW-Authenticate:`).
    pub const fn http_scheme(self) -> &'static str {
        match self {
            Self::Ntlm | Self::Negotiate => "Negotiate",
            Self::Kerberos => "Kerberos",
            Self::CredSsp => "CredSSP",
        }
    }

    /// The session-encryption protocol of bodies sealed under this mechanism
    /// (MS-WSMV 2.2.9.1.1: the `Negotiate` scheme seals as HTTP-SPNEGO-session-encrypted;
    /// 2.2.9.1.2: the `Kerberos` scheme as HTTP-Kerberos-session-encrypted).
    pub const fn protocol(self) -> Protocol {
        match self {
            Self::Ntlm | Self::Negotiate => Protocol::Spnego,
            Self::Kerberos => Protocol::Kerberos,
            Self::CredSsp => Protocol::CredSsp,
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ntlm => "NTLM",
            Self::Negotiate => "Negotiate",
            Self::Kerberos => "Kerberos",
            Self::CredSsp => "CredSSP",
        })
    }
}

/// Who authenticates, and with what: a user name and password, or a Kerberos ticket cache
/// (crate::ticket_cache). `Debug` never prints the password or a key, and the password is
/// zeroed when the credential is dropped (it lives in an `sspi::Secret`).
#[derive(Clone)]
pub struct Credential {
    user: Username,
    secret: Secret,
}

#[derive(Clone)]
enum Secret {
    Password(sspi::Secret<String>),
    TicketCache(Arc<TicketCache>),
}

impl Credential {
    /// A credential for `user` in one of the forms Windows accepts: `user`,
    /// `DOMAIN\user` (down-level logon name) or `user@domain` (UPN).
    pub fn new(user: &str, password: impl Into<String>) -> Result<Self, AuthError> {
        Ok(Self {
            user: parse_user(user)?,
            secret: Secret::Password(sspi::Secret::new(password.into())),
        })
    }

    /// A credential that logs on with the TGT of a ticket cache, as its principal
    /// (`REALM\user`). Kerberos and Negotiate (Kerberos only) can use it; NTLM, CredSSP
    /// and Basic need a password and refuse it.
    pub fn from_ticket_cache(cache: TicketCache) -> Result<Self, AuthError> {
        Ok(Self {
            user: cache.username()?,
            secret: Secret::TicketCache(Arc::new(cache)),
        })
    }

    /// The user name as given (`user`, `DOMAIN\user` or `user@domain`).
    pub fn user(&self) -> &str {
        self.user.inner()
    }

    /// The ticket cache this credential logs on with, if it is one.
    pub fn ticket_cache(&self) -> Option<&TicketCache> {
        match &self.secret {
            Secret::Password(_) => None,
            Secret::TicketCache(cache) => Some(cache),
        }
    }

    /// The password, for HTTP Basic (`engine::http` builds that header itself).
    pub(crate) fn password(&self, method: &'static str) -> Result<&str, AuthError> {
        match &self.secret {
            Secret::Password(password) => Ok(password.as_ref()),
            Secret::TicketCache(_) => Err(AuthError::PasswordNeeded { method }),
        }
    }

    /// The parsed user name.
    pub fn username(&self) -> &Username {
        &self.user
    }

    fn identity(&self, method: &'static str) -> Result<AuthIdentity, AuthError> {
        self.identity_as(self.user.clone(), method)
    }

    /// The identity CredSSP authenticates with and then delegates (TSPasswordCreds).
    pub(crate) fn identity_for_delegation(&self) -> Result<AuthIdentity, AuthError> {
        self.identity("CredSSP")
    }

    /// This credential's password under another spelling of the user (`REALM\user`).
    fn identity_as(
        &self,
        username: Username,
        method: &'static str,
    ) -> Result<AuthIdentity, AuthError> {
        Ok(AuthIdentity {
            username,
            password: sspi::Secret::new(self.password(method)?.to_owned()),
        })
    }
}

/// Checks and parses a user name in one of the forms Windows accepts.
fn parse_user(user: &str) -> Result<Username, AuthError> {
    let invalid = |reason| AuthError::InvalidUserName {
        user: user.to_owned(),
        reason,
    };
    if user.is_empty() {
        return Err(invalid("the user name is empty"));
    }
    if user.chars().any(char::is_control) {
        return Err(invalid("the user name contains a control character"));
    }
    let parsed = Username::parse(user)
        .map_err(|_| invalid("mixes the DOMAIN\\user and user@domain forms"))?;
    if parsed.account_name().is_empty() {
        return Err(invalid("the account part is empty"));
    }
    Ok(parsed)
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Credential");
        debug.field("user", &self.user.inner());
        match &self.secret {
            Secret::Password(_) => debug.field("password", &"<redacted>"),
            Secret::TicketCache(cache) => debug.field("ticket_cache", &cache.path),
        };
        debug.finish()
    }
}

/// The `Authorization` header value of WS-Man certificate authentication (the
/// `https/mutual` security profile; pypsrp `_build_auth_certificate` and pywinrm send
/// exactly this, wire-facts section 3). It goes with every request on a TLS connection
/// made with a [`ClientCertificate`].
pub const CERTIFICATE_AUTH_HEADER: &str =
    "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/mutual";

/// A TLS client certificate and its private key, for certificate authentication over
/// HTTPS. `Debug` never prints the key.
pub struct ClientCertificate {
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    /// The chain with its signing key, as the TLS handshake presents it.
    certified: Arc<rustls::sign::CertifiedKey>,
}

impl Clone for ClientCertificate {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            certified: Arc::clone(&self.certified),
        }
    }
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("certificates", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl ClientCertificate {
    /// Reads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or
    /// SEC1), and checks that the key belongs to the leaf certificate.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, AuthError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let invalid = |reason: String| AuthError::ClientCertificate { reason };
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("certificate PEM: {e}")))?;
        if chain.is_empty() {
            return Err(invalid(
                "no CERTIFICATE block in the certificate PEM".to_owned(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| invalid(format!("private key PEM: {e}")))?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| invalid(format!("private key: {e}")))?;
        let certified = rustls::sign::CertifiedKey::new(chain.clone(), signing);
        // Cannot be skipped: a key from another certificate makes every handshake fail
        // far from its cause.
        certified.keys_match().map_err(|e| {
            invalid(format!(
                "the private key does not belong to the leaf certificate: {e}"
            ))
        })?;
        Ok(Self {
            chain,
            key,
            certified: Arc::new(certified),
        })
    }

    /// [`ClientCertificate::from_pem`] from two files.
    pub fn from_pem_files(
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<Self, AuthError> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| AuthError::ClientCertificate {
                reason: format!("reading {}: {e}", path.display()),
            })
        };
        Self::from_pem(&read(cert)?, &read(key)?)
    }

    /// The certificate chain, leaf first.
    pub fn chain(&self) -> &[rustls::pki_types::CertificateDer<'static>] {
        &self.chain
    }

    /// A resolver for one connection's TLS client (`TlsClient::with_client_cert_resolver`):
    /// it presents this certificate when the server asks, and notes that it asked.
    pub fn resolver(&self) -> CertificateResolver {
        CertificateResolver {
            certified: Arc::clone(&self.certified),
            requested: AtomicBool::new(false),
        }
    }

    /// Finishes a rustls client configuration with this certificate (for a TLS client
    /// built by hand, where it would call `with_no_client_auth`).
    pub fn apply(
        &self,
        builder: rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    ) -> Result<rustls::ClientConfig, AuthError> {
        builder
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| AuthError::ClientCertificate {
                reason: e.to_string(),
            })
    }
}

/// The client certificate of one TLS connection: handed to rustls when the server sends a
/// CertificateRequest, and the record that it did. A listener without certificate
/// authentication never asks, so a 401 on such a connection means the mechanism is not
/// offered rather than that the certificate was refused.
pub struct CertificateResolver {
    certified: Arc<rustls::sign::CertifiedKey>,
    requested: AtomicBool,
}

impl CertificateResolver {
    /// True once the server asked for a client certificate (and was given this one).
    pub fn was_requested(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for CertificateResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateResolver")
            .field("certificates", &self.certified.cert.len())
            .field("requested", &self.was_requested())
            .finish()
    }
}

impl rustls::client::ResolvesClientCert for CertificateResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        // Relaxed: a flag read after the handshake completed on this same connection.
        self.requested.store(true, Ordering::Relaxed);
        Some(Arc::clone(&self.certified))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Per-connection settings of a [`ClientContext`] beyond mechanism, credential and host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextOptions {
    /// The TLS channel's binding application data over HTTPS: `b"tls-server-end-point:"`
    /// followed by the server certificate hash (RFC 5929 4.1; wire-facts section 3).
    /// `None` over plain HTTP.
    pub channel_bindings: Option<Vec<u8>>,
    /// Where the KDC is and what the service is called (Kerberos and Negotiate).
    pub kerberos: KerberosOptions,
}

/// What one [`ClientContext::step`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The token to send in `Authorization: <scheme> <base64>`, if any.
    pub token: Option<Vec<u8>>,
    /// True once the context is established: nothing more is expected from the server
    /// and messages can be sealed.
    pub complete: bool,
}

/// Why authentication or sealing failed on the client side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The user name is not in a form Windows accepts.
    #[error("invalid user name {user:?}: {reason}")]
    InvalidUserName {
        /// The user name as given.
        user: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// sspi refused a step: a malformed or hostile server token, a failed SPNEGO
    /// mechListMIC, or a mechanism the server chose that was not offered.
    #[error("{mechanism} {operation} failed: {source}")]
    Sspi {
        /// The mechanism of the context.
        mechanism: Mechanism,
        /// What was being done (`initialize`, `encrypt`, ...).
        operation: &'static str,
        /// sspi's error (kind and description; never holds the password).
        #[source]
        source: sspi::Error,
    },
    /// A server token is larger than [`MAX_TOKEN_LEN`].
    #[error("server token of {0} bytes exceeds the limit")]
    TokenTooLarge(usize),
    /// `step` was called with a server token before the first step, or without one
    /// after it, or after the context was established.
    #[error("authentication step out of sequence: {0}")]
    OutOfSequence(&'static str),
    /// Sealing or unsealing was attempted before the context was established.
    #[error("the security context is not established")]
    NotEstablished,
    /// The channel-binding application data is empty or longer than
    /// [`MAX_CHANNEL_BINDINGS_LEN`].
    #[error("channel-binding application data of {0} bytes is not acceptable")]
    BadChannelBindings(usize),
    /// A sealed block's header has a length the mechanism never produces (NTLM
    /// signatures are 16 bytes, Kerberos headers at most [`MAX_SEAL_HEADER_LEN`]).
    #[error("sealed block header of {0} bytes does not fit the mechanism")]
    BadSignatureLength(usize),
    /// Kerberos needs a realm, and the user name has none and no default realm is
    /// configured (a bare `user` or a local `.\user`). Windows: Kerberos authentication
    /// is unavailable on this client (ClientAuthenticationDisabled).
    #[error(
        "no Kerberos realm for {user:?}: write DOMAIN\\user or user@REALM, or configure a default realm"
    )]
    KerberosNoRealm {
        /// The user name as given.
        user: String,
    },
    /// No KDC is configured for the realm (no option, no `$PSFLEET_KDC`, no krb5.conf
    /// entry): the domain is unavailable (InvalidDomain, wire-facts 1.5).
    #[error("no KDC known for realm {realm} (set the KDC option, $PSFLEET_KDC or krb5.conf)")]
    KerberosRealmUnknown {
        /// The realm.
        realm: String,
    },
    /// The KDC could not be reached, did not answer in time, or said the realm is not
    /// its own (InvalidDomain, wire-facts 1.5).
    #[error("KDC {kdc} for realm {realm} unavailable: {source}")]
    KdcUnreachable {
        /// The realm.
        realm: String,
        /// The KDC tried.
        kdc: String,
        /// sspi's error (the socket or KDC error text).
        #[source]
        source: sspi::Error,
    },
    /// The KDC refused the client: unknown principal, failed pre-authentication (wrong
    /// password), revoked or expired credentials (InvalidCredentials, wire-facts 1.4).
    #[error("KDC rejected {principal}: {reason}")]
    KerberosCredentialsRejected {
        /// The principal as sent (`REALM\user`).
        principal: String,
        /// What the KDC said, in words.
        reason: &'static str,
        /// sspi's error.
        #[source]
        source: sspi::Error,
    },
    /// The KDC does not know the service principal (`Server not found in Kerberos
    /// database`, wire-facts 1.5: missing SPN, or an IP address used as the host).
    #[error("KDC does not know the service {spn}: {source}")]
    KerberosServiceUnknown {
        /// The SPN asked for.
        spn: String,
        /// sspi's error.
        #[source]
        source: sspi::Error,
    },
    /// A KDC address that cannot be used.
    #[error("invalid KDC address {kdc:?}: {reason}")]
    InvalidKdc {
        /// The address as given.
        kdc: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A service principal name that cannot be used.
    #[error("invalid service principal name {spn:?}: {reason}")]
    InvalidSpn {
        /// The SPN or service class as given.
        spn: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A krb5.conf that exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Krb5Config {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS layer of CredSSP failed (handshake, record or TSRequest encoding).
    #[error("CredSSP TLS: {reason}")]
    CredSspTls {
        /// rustls' or the decoder's message.
        reason: String,
    },
    /// The server broke the CredSSP sequence.
    #[error("CredSSP protocol violation: {0}")]
    CredSspProtocol(&'static str),
    /// The server refused the CredSSP authentication with an NTSTATUS in its TSRequest
    /// (MS-CSSP 2.2.1 errorCode; 0xC000006D logon failure for a wrong password).
    #[error("CredSSP refused by the server (NTSTATUS {nt_status:#010x})")]
    CredSspRejected {
        /// The NTSTATUS code.
        nt_status: u32,
        /// sspi's error.
        #[source]
        source: sspi::Error,
    },
    /// A client certificate or key that cannot be used.
    #[error("client certificate: {reason}")]
    ClientCertificate {
        /// What is wrong.
        reason: String,
    },
    /// Kerberos cannot authenticate to an IP address: there is no SPN for it (Windows
    /// ERROR_WSMAN_KERBEROS_IPADDRESS, wire-facts 1.5; classified InvalidHostIPAddress).
    #[error("Kerberos needs a host name, not the IP address {host}")]
    KerberosIpAddress {
        /// The address.
        host: String,
    },
    /// The method needs a password and the credential is a ticket cache.
    #[error(
        "{method} authentication needs a password; a Kerberos ticket cache logs on with \
         Kerberos or Negotiate only"
    )]
    PasswordNeeded {
        /// The method (`NTLM`, `Basic`, `CredSSP`).
        method: &'static str,
    },
    /// The ticket cache cannot be used (unreadable, no TGT, expired, a key type sspi
    /// lacks); the message says what to run.
    #[error(transparent)]
    TicketCache(#[from] TicketCacheError),
}

impl AuthError {
    /// The failure bucket this error names, when it names one by itself (the rest are
    /// classified with the HTTP evidence by the transport).
    pub fn bucket(&self) -> Option<Bucket> {
        match self {
            Self::KerberosNoRealm { .. } => Some(Bucket::ClientAuthenticationDisabled),
            // Windows refuses Kerberos to an address with the TrustedHosts message
            // (ERROR_WSMAN_KERBEROS_IPADDRESS, wire-facts 1.5 and 1.6).
            Self::KerberosIpAddress { .. } => Some(Bucket::InvalidHostIpAddress),
            Self::KerberosRealmUnknown { .. } | Self::KdcUnreachable { .. } => {
                Some(Bucket::InvalidDomain)
            }
            Self::KerberosCredentialsRejected { .. }
            | Self::InvalidUserName { .. }
            | Self::CredSspRejected { .. }
            | Self::PasswordNeeded { .. }
            | Self::TicketCache(_) => Some(Bucket::InvalidCredentials),
            _ => None,
        }
    }
}

/// A client security context for one connection: drives the token exchange, then seals
/// and unseals WinRM messages with the negotiated session keys.
///
/// Sequence numbers advance with every sealed or unsealed message (MS-NLMP 3.4.4,
/// RFC 4121 4.2.6.2), so messages must be sealed and unsealed in wire order; after any
/// unseal error the context is out of step with its peer and the connection must be
/// dropped.
pub struct ClientContext {
    mechanism: Mechanism,
    inner: Inner,
    /// The SPN the target is named by (`HTTP/<host>` unless configured otherwise).
    target: String,
    /// The SEC_CHANNEL_BINDINGS structure handed to sspi with every step, when the
    /// connection is bound to a TLS channel.
    channel_bindings: Option<Vec<u8>>,
    /// The resolved Kerberos principal, realm and KDC, when Kerberos may be used.
    kerberos: Option<KerberosTarget>,
    state: State,
}

impl fmt::Debug for ClientContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientContext")
            .field("mechanism", &self.mechanism)
            .field("target", &self.target)
            .field("channel_bound", &self.channel_bindings.is_some())
            .field("kerberos", &self.kerberos)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl ClientContext {
    /// A context that will authenticate `credential` to the WinRM service on `host`
    /// (the SPN `HTTP/<host>`), without channel binding (plain HTTP), finding the KDC
    /// through the environment and krb5.conf.
    pub fn new(
        mechanism: Mechanism,
        credential: &Credential,
        host: &str,
    ) -> Result<Self, AuthError> {
        Self::with_options(mechanism, credential, host, &ContextOptions::default())
    }

    /// Like [`ClientContext::new`], bound to a TLS channel when `channel_bindings` holds
    /// its application data (see [`ContextOptions::channel_bindings`]).
    pub fn with_channel_bindings(
        mechanism: Mechanism,
        credential: &Credential,
        host: &str,
        channel_bindings: Option<Vec<u8>>,
    ) -> Result<Self, AuthError> {
        let options = ContextOptions {
            channel_bindings,
            ..ContextOptions::default()
        };
        Self::with_options(mechanism, credential, host, &options)
    }

    /// A context for `credential` to the WinRM service on `host` with every option.
    ///
    /// Channel bindings are wrapped in a SEC_CHANNEL_BINDINGS structure
    /// ([`sec_channel_bindings`]) and given to sspi as a `ChannelBindings` buffer, so NTLM
    /// puts their MD5 into the `MsvAvChannelBindings` AV pair of the AUTHENTICATE message
    /// (MS-NLMP 2.2.2.1) and Kerberos into the authenticator checksum (RFC 4121 4.1.1.2).
    ///
    /// Kerberos resolves realm, KDC and SPN here, before any packet
    /// ([`crate::kerberos::resolve`]); an IP address host rules it out, as on Windows.
    /// Negotiate tries Kerberos when the user name carries a domain (or a default realm is
    /// given in the options) and a KDC is known for it, and otherwise offers NTLM alone.
    pub fn with_options(
        mechanism: Mechanism,
        credential: &Credential,
        host: &str,
        options: &ContextOptions,
    ) -> Result<Self, AuthError> {
        // CredSSP binds its inner TLS session to the SPNEGO keys itself (pubKeyAuth,
        // MS-CSSP 3.1.5); the outer channel's bindings have no place in it.
        let channel_bindings = options
            .channel_bindings
            .as_deref()
            .filter(|_| mechanism != Mechanism::CredSsp)
            .map(sec_channel_bindings)
            .transpose()?;
        let sspi_err = sspi_error(mechanism, "acquire credentials");
        let is_ip = host.parse::<std::net::IpAddr>().is_ok();
        let mut kerberos_target = None;
        let inner = match mechanism {
            Mechanism::Ntlm => {
                let identity = credential.identity("NTLM")?;
                let mut ntlm = Ntlm::new();
                let handle = ntlm
                    .acquire_credentials_handle()
                    .with_credential_use(CredentialUse::Outbound)
                    .with_auth_data(&identity)
                    .execute(&mut ntlm)
                    .map_err(sspi_err)?
                    .credentials_handle;
                Inner::Ntlm {
                    context: Box::new(ntlm),
                    handle,
                }
            }
            Mechanism::Kerberos => {
                if is_ip {
                    return Err(AuthError::KerberosIpAddress {
                        host: host.to_owned(),
                    });
                }
                let target = kerberos::resolve(credential.username(), host, &options.kerberos)?;
                let config = KerberosConfig::new_with_kdc_url(
                    &target.kdc_url,
                    CLIENT_COMPUTER_NAME.to_owned(),
                );
                let mut context = Kerberos::new_client_from_config(config).map_err(sspi_err)?;
                let (auth_data, kdc) = kerberos_credentials(credential, &target)?;
                let handle = context
                    .acquire_credentials_handle()
                    .with_credential_use(CredentialUse::Outbound)
                    .with_auth_data(&auth_data)
                    .execute(&mut context)
                    .map_err(sspi_err)?
                    .credentials_handle;
                kerberos_target = Some(target);
                Inner::Kerberos {
                    context: Box::new(context),
                    handle,
                    kdc,
                }
            }
            Mechanism::CredSsp => Inner::CredSsp(Box::new(CredSspContext::new(credential, host)?)),
            Mechanism::Negotiate => {
                let target = match (is_ip, credential.ticket_cache()) {
                    // A ticket cache has no password for NTLM: Kerberos or nothing.
                    (true, Some(_)) => {
                        return Err(AuthError::KerberosIpAddress {
                            host: host.to_owned(),
                        });
                    }
                    (false, Some(_)) => Some(kerberos::resolve(
                        credential.username(),
                        host,
                        &options.kerberos,
                    )?),
                    (true, None) => None,
                    (false, None) => {
                        negotiate_kerberos_target(credential, host, &options.kerberos)?
                    }
                };
                let (config, auth_data, kdc) = match &target {
                    Some(target) => {
                        let (auth_data, kdc) = kerberos_credentials(credential, target)?;
                        // "kerberos,ntlm" lets SPNEGO fall back to NTLM when the KDC
                        // cannot be reached, as Windows does; a ticket cache cannot.
                        let packages = if credential.ticket_cache().is_some() {
                            "kerberos"
                        } else {
                            "kerberos,ntlm"
                        };
                        (
                            NegotiateConfig::new(
                                Box::new(KerberosConfig::new_with_kdc_url(
                                    &target.kdc_url,
                                    CLIENT_COMPUTER_NAME.to_owned(),
                                )),
                                Some(packages.to_owned()),
                                CLIENT_COMPUTER_NAME.to_owned(),
                            ),
                            auth_data,
                            kdc,
                        )
                    }
                    // "ntlm" alone: no Kerberos (and so no KDC discovery by sspi through
                    // krb5.conf or DNS) and no PKU2U.
                    None => (
                        NegotiateConfig::new(
                            Box::new(sspi::ntlm::NtlmConfig::default()),
                            Some("ntlm".to_owned()),
                            String::new(),
                        ),
                        Credentials::AuthIdentity(credential.identity("NTLM")?),
                        KdcClient::new(kerberos::DEFAULT_KDC_TIMEOUT),
                    ),
                };
                let mut negotiate = Negotiate::new_client(config).map_err(sspi_err)?;
                let handle = negotiate
                    .acquire_credentials_handle()
                    .with_credential_use(CredentialUse::Outbound)
                    .with_auth_data(&auth_data)
                    .execute(&mut negotiate)
                    .map_err(sspi_err)?
                    .credentials_handle;
                kerberos_target = target;
                Inner::Negotiate {
                    context: Box::new(negotiate),
                    handle,
                    kdc,
                }
            }
        };
        let target = match &kerberos_target {
            Some(target) => target.spn.clone(),
            None => format!("HTTP/{host}"),
        };
        Ok(Self {
            mechanism,
            inner,
            target,
            channel_bindings,
            kerberos: kerberos_target,
            state: State::Initial,
        })
    }

    /// The mechanism of this context.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The service principal name the context authenticates to.
    pub fn target_name(&self) -> &str {
        &self.target
    }

    /// The resolved Kerberos realm, principal, KDC and SPN, when Kerberos may be used
    /// (always for [`Mechanism::Kerberos`]; for Negotiate when a KDC is known).
    pub fn kerberos_target(&self) -> Option<&KerberosTarget> {
        self.kerberos.as_ref()
    }

    /// For Negotiate, whether SPNEGO settled on Kerberos (false while NTLM is in use or
    /// after a fallback to NTLM); for the other mechanisms, whether they are Kerberos.
    pub fn uses_kerberos(&self) -> bool {
        match &self.inner {
            Inner::Ntlm { .. } | Inner::CredSsp(_) => false,
            Inner::Kerberos { .. } => true,
            Inner::Negotiate { context, .. } => context.negotiated_protocol().is_kerberos(),
        }
    }

    /// True once the token exchange has completed and messages can be sealed.
    pub fn is_complete(&self) -> bool {
        self.state == State::Complete
    }

    /// True when the context carries TLS channel bindings.
    pub fn is_channel_bound(&self) -> bool {
        self.channel_bindings.is_some()
    }

    /// True once this context has produced its first token.
    pub fn has_started(&self) -> bool {
        self.state != State::Initial
    }

    /// One step of the exchange: `input` is the server's token from
    /// `WWW-Authenticate: <scheme> <base64>` (`None` on the first call), the result the
    /// token for the next `Authorization: <scheme> <base64>` header, if any.
    ///
    /// NTLM completes when it produces the AUTHENTICATE message. SPNEGO completes one
    /// step later, on the server's final token (negState accept-completed with its
    /// mechListMIC, carried in the 200 answer): that step verifies the MIC and so keeps
    /// the receive sequence number in step with the server's (MS-SPNG 3.1.5.1). Kerberos
    /// completes on the server's AP-REP (mutual authentication, RFC 4121 4.1).
    ///
    /// The first Kerberos step talks to the KDC (AS and TGS exchanges) over blocking
    /// sockets, each wait bounded by the KDC timeout; async callers use
    /// [`ClientContext::step_async`].
    pub fn step(&mut self, input: Option<&[u8]>) -> Result<Step, AuthError> {
        self.check_step(input)?;
        let bindings = self.channel_bindings.as_deref();
        let result = match &mut self.inner {
            Inner::CredSsp(context) => return credssp_step(context, &mut self.state, input),
            Inner::Ntlm { context, handle } => initialize(
                context.as_mut(),
                handle,
                &self.target,
                input,
                bindings,
                None,
            ),
            Inner::Negotiate {
                context,
                handle,
                kdc,
            } => initialize(
                context.as_mut(),
                handle,
                &self.target,
                input,
                bindings,
                Some(kdc),
            ),
            Inner::Kerberos {
                context,
                handle,
                kdc,
            } => initialize(
                context.as_mut(),
                handle,
                &self.target,
                input,
                bindings,
                Some(kdc),
            ),
        };
        self.finish_step(input, result)
    }

    /// [`ClientContext::step`] for async callers: KDC requests go over tokio sockets, so
    /// a slow or dead KDC never blocks a runtime thread. The future is `Send`.
    pub async fn step_async(&mut self, input: Option<&[u8]>) -> Result<Step, AuthError> {
        self.check_step(input)?;
        let bindings = self.channel_bindings.as_deref();
        let result = match &mut self.inner {
            Inner::CredSsp(context) => return credssp_step(context, &mut self.state, input),
            Inner::Ntlm { context, handle } => initialize(
                context.as_mut(),
                handle,
                &self.target,
                input,
                bindings,
                None,
            ),
            Inner::Negotiate {
                context,
                handle,
                kdc,
            } => {
                initialize_async(context.as_mut(), handle, &self.target, input, bindings, kdc).await
            }
            Inner::Kerberos {
                context,
                handle,
                kdc,
            } => {
                initialize_async(context.as_mut(), handle, &self.target, input, bindings, kdc).await
            }
        };
        self.finish_step(input, result)
    }

    fn check_step(&self, input: Option<&[u8]>) -> Result<(), AuthError> {
        match (self.state, input) {
            (State::Complete, _) => Err(AuthError::OutOfSequence(
                "the context is already established",
            )),
            (State::Initial, Some(_)) => Err(AuthError::OutOfSequence(
                "a server token arrived before the client's first token",
            )),
            (State::InProgress, None) => Err(AuthError::OutOfSequence(
                "the server sent no token to continue the exchange",
            )),
            (_, Some(token)) if token.len() > MAX_TOKEN_LEN => {
                Err(AuthError::TokenTooLarge(token.len()))
            }
            _ => Ok(()),
        }
    }

    fn finish_step(
        &mut self,
        input: Option<&[u8]>,
        result: sspi::Result<(SecurityStatus, Vec<u8>)>,
    ) -> Result<Step, AuthError> {
        // The KDC is only contacted on the first step.
        let operation = if input.is_none() {
            kerberos::KDC_EXCHANGE
        } else {
            "initialize security context"
        };
        let (status, token) = result.map_err(|error| match &self.kerberos {
            Some(target) => kerberos::classify(error, target, self.mechanism, operation),
            None => AuthError::Sspi {
                mechanism: self.mechanism,
                operation,
                source: error,
            },
        })?;
        let complete = status == SecurityStatus::Ok;
        self.state = if complete {
            State::Complete
        } else {
            State::InProgress
        };
        Ok(Step {
            token: (!token.is_empty()).then_some(token),
            complete,
        })
    }
}

impl MessageSealer for ClientContext {
    type Error = AuthError;

    /// Seals one message: `header` = the SSPI token buffer (the 16-byte NTLM signature, or
    /// the RFC 4121 wrap token header for Kerberos), `payload` = the sealed bytes (sspi
    /// `EncryptMessage` with a Token and a Data buffer, the SSPI call Windows' WinRM
    /// client makes, MS-WSMV 2.2.9.1.1.2.2).
    fn seal(&mut self, plaintext: &[u8]) -> Result<Sealed, AuthError> {
        if !self.is_complete() {
            return Err(AuthError::NotEstablished);
        }
        if let Inner::CredSsp(context) = &mut self.inner {
            return context.seal(plaintext);
        }
        let on_error = sspi_error(self.mechanism, "encrypt message");
        let trailer = self.inner.security_trailer().map_err(on_error)?;
        let mut header = vec![0u8; trailer];
        let mut payload = plaintext.to_vec();
        let header_len = {
            let mut buffers = [
                SecurityBufferRef::token_buf(&mut header),
                SecurityBufferRef::data_buf(&mut payload),
            ];
            self.inner.encrypt(&mut buffers).map_err(on_error)?;
            buffers[0].data().len()
        };
        header.truncate(header_len);
        Ok(Sealed {
            header,
            payload,
            padding: 0,
        })
    }

    /// Verifies and decrypts one block sealed by the server.
    fn unseal(&mut self, header: &[u8], payload: &[u8]) -> Result<Unsealed, AuthError> {
        if !self.is_complete() {
            return Err(AuthError::NotEstablished);
        }
        if let Inner::CredSsp(context) = &mut self.inner {
            return context.unseal(header, payload);
        }
        let fits = if self.uses_kerberos() {
            !header.is_empty() && header.len() <= MAX_SEAL_HEADER_LEN
        } else {
            header.len() == NTLM_SIGNATURE_LEN
        };
        if !fits {
            return Err(AuthError::BadSignatureLength(header.len()));
        }
        let on_error = sspi_error(self.mechanism, "decrypt message");
        let mut signature = header.to_vec();
        let mut data = payload.to_vec();
        let plaintext = {
            let mut buffers = [
                SecurityBufferRef::token_buf(&mut signature),
                SecurityBufferRef::data_buf(&mut data),
            ];
            self.inner.decrypt(&mut buffers).map_err(on_error)?;
            buffers[1].data().to_vec()
        };
        Ok(Unsealed::new(plaintext))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Initial,
    InProgress,
    Complete,
}

/// The sspi context and the credentials handle it was acquired with.
enum Inner {
    Ntlm {
        context: Box<Ntlm>,
        handle: Option<sspi::AuthIdentityBuffers>,
    },
    Negotiate {
        context: Box<Negotiate>,
        handle: Option<CredentialsBuffers>,
        kdc: KdcClient,
    },
    Kerberos {
        context: Box<Kerberos>,
        handle: Option<CredentialsBuffers>,
        kdc: KdcClient,
    },
    CredSsp(Box<CredSspContext>),
}

impl Inner {
    fn encrypt(&mut self, buffers: &mut [SecurityBufferRef<'_>]) -> sspi::Result<SecurityStatus> {
        match self {
            Self::Ntlm { context, .. } => {
                context.encrypt_message(EncryptionFlags::empty(), buffers)
            }
            Self::Negotiate { context, .. } => {
                context.encrypt_message(EncryptionFlags::empty(), buffers)
            }
            Self::Kerberos { context, .. } => {
                context.encrypt_message(EncryptionFlags::empty(), buffers)
            }
            Self::CredSsp(_) => Err(credssp_not_sspi()),
        }
    }

    fn decrypt(&mut self, buffers: &mut [SecurityBufferRef<'_>]) -> sspi::Result<()> {
        match self {
            Self::Ntlm { context, .. } => context.decrypt_message(buffers).map(drop),
            Self::Negotiate { context, .. } => context.decrypt_message(buffers).map(drop),
            Self::Kerberos { context, .. } => context.decrypt_message(buffers).map(drop),
            Self::CredSsp(_) => Err(credssp_not_sspi()),
        }
    }

    /// The token buffer size `EncryptMessage` needs (SSPI `cbSecurityTrailer`).
    fn security_trailer(&mut self) -> sspi::Result<usize> {
        let sizes = match self {
            Self::Ntlm { context, .. } => context.query_context_sizes()?,
            Self::Negotiate { context, .. } => context.query_context_sizes()?,
            Self::Kerberos { context, .. } => context.query_context_sizes()?,
            Self::CredSsp(_) => return Err(credssp_not_sspi()),
        };
        let trailer = usize::try_from(sizes.security_trailer).unwrap_or(usize::MAX);
        if trailer == 0 || trailer > MAX_SEAL_HEADER_LEN {
            return Err(sspi::Error::new(
                sspi::ErrorKind::InternalError,
                format!("security trailer of {trailer} bytes"),
            ));
        }
        Ok(trailer)
    }
}

/// CredSSP seals through its TLS session, never through an sspi package.
fn credssp_not_sspi() -> sspi::Error {
    sspi::Error::new(
        sspi::ErrorKind::UnsupportedFunction,
        "CredSSP seals with its TLS session",
    )
}

/// One CredSSP leg, with the context state kept as for the other mechanisms.
fn credssp_step(
    context: &mut CredSspContext,
    state: &mut State,
    input: Option<&[u8]>,
) -> Result<Step, AuthError> {
    let step = context.step(input)?;
    *state = if step.complete {
        State::Complete
    } else {
        State::InProgress
    };
    Ok(Step {
        token: (!step.token.is_empty()).then_some(step.token),
        complete: step.complete,
    })
}

/// The Kerberos target of a Negotiate context, or `None` for NTLM alone: a bare user name
/// (a local account, unless the options name a default realm), a realm no KDC is known
/// for. Configuration mistakes (a bad KDC address or SPN, an unreadable krb5.conf) are
/// errors, not a silent NTLM.
fn negotiate_kerberos_target(
    credential: &Credential,
    host: &str,
    options: &KerberosOptions,
) -> Result<Option<KerberosTarget>, AuthError> {
    let bare = matches!(
        credential.username().parts(),
        sspi::UsernameParts::DownLevelLogonName(parts) if parts.netbios_domain().is_none()
    );
    if bare && options.realm.is_none() {
        return Ok(None);
    }
    match kerberos::resolve(credential.username(), host, options) {
        Ok(target) => Ok(Some(target)),
        Err(AuthError::KerberosNoRealm { .. } | AuthError::KerberosRealmUnknown { .. }) => Ok(None),
        Err(other) => Err(other),
    }
}

/// What sspi's Kerberos client logs on with for `target`, and the KDC client it talks
/// through: the password under the `REALM\user` spelling MIT KDCs need, or, for a ticket
/// cache, a one-connection keytab key whose AS exchange the cache answers
/// (crate::ticket_cache).
fn kerberos_credentials(
    credential: &Credential,
    target: &KerberosTarget,
) -> Result<(Credentials, KdcClient), AuthError> {
    match credential.ticket_cache() {
        None => Ok((
            Credentials::AuthIdentity(
                credential.identity_as(target.principal.clone(), "Kerberos")?,
            ),
            KdcClient::new(target.kdc_timeout),
        )),
        Some(cache) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let (local_as, identity) = LocalAs::new(cache, now)?;
            Ok((
                Credentials::Keytab(identity),
                KdcClient::with_ticket_cache(target.kdc_timeout, local_as),
            ))
        }
    }
}

/// The SEC_CHANNEL_BINDINGS structure (MS-NLMP 2.2.2.1 references it; the Windows SSPI
/// layout sspi parses): eight little-endian u32 fields, initiator and acceptor addresses
/// empty (type 0, length 0, offset 0, as every TLS channel binding has them), then the
/// application data length and its offset 32, then the application data. Acceptors give
/// the same structure to sspi to check the client's binding.
pub fn sec_channel_bindings(application_data: &[u8]) -> Result<Vec<u8>, AuthError> {
    const HEADER_LEN: u32 = 32;
    let len = application_data.len();
    if len == 0 || len > MAX_CHANNEL_BINDINGS_LEN {
        return Err(AuthError::BadChannelBindings(len));
    }
    // Cannot fail: len <= MAX_CHANNEL_BINDINGS_LEN.
    let len32 = u32::try_from(len).map_err(|_| AuthError::BadChannelBindings(len))?;
    let mut out = Vec::with_capacity(HEADER_LEN as usize + len);
    for field in [0, 0, 0, 0, 0, 0, len32, HEADER_LEN] {
        out.extend_from_slice(&u32::to_le_bytes(field));
    }
    out.extend_from_slice(application_data);
    Ok(out)
}

/// Wraps an sspi error with what was being done.
fn sspi_error(
    mechanism: Mechanism,
    operation: &'static str,
) -> impl Fn(sspi::Error) -> AuthError + Copy {
    move |source| AuthError::Sspi {
        mechanism,
        operation,
        source,
    }
}

/// Sealing requires confidentiality; integrity is implied but requested explicitly as
/// pypsrp does (`ContextReq.integrity | confidentiality`); mutual authentication makes
/// Kerberos wait for the server's AP-REP (RFC 4121 4.1), as Windows' WinRM client does.
fn request_flags() -> ClientRequestFlags {
    ClientRequestFlags::CONFIDENTIALITY
        | ClientRequestFlags::INTEGRITY
        | ClientRequestFlags::MUTUAL_AUTH
        | ClientRequestFlags::ALLOCATE_MEMORY
}

/// The input buffers of one step: the server token (empty on the first step, where
/// Kerberos reads the channel bindings) and the channel bindings, which ride with every
/// step (sspi's NTLM reads them on the CHALLENGE leg, Kerberos on its first step).
fn input_buffers(input: Option<&[u8]>, channel_bindings: Option<&[u8]>) -> Vec<SecurityBuffer> {
    let mut buffers = vec![SecurityBuffer::new(
        input.map(<[u8]>::to_vec).unwrap_or_default(),
        BufferType::Token,
    )];
    if let Some(bindings) = channel_bindings {
        buffers.push(SecurityBuffer::new(
            bindings.to_vec(),
            BufferType::ChannelBindings,
        ));
    }
    buffers
}

/// Runs one `InitializeSecurityContext` call and returns its status and output token; KDC
/// requests go through `kdc` over blocking sockets.
fn initialize<S>(
    context: &mut S,
    handle: &mut S::CredentialsHandle,
    target: &str,
    input: Option<&[u8]>,
    channel_bindings: Option<&[u8]>,
    kdc: Option<&KdcClient>,
) -> sspi::Result<(SecurityStatus, Vec<u8>)>
where
    S: Sspi + SspiImpl,
{
    let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
    let mut input_buffers = input_buffers(input, channel_bindings);
    let status = {
        let mut builder = context
            .initialize_security_context()
            .with_credentials_handle(handle)
            .with_context_requirements(request_flags())
            .with_target_data_representation(DataRepresentation::Native)
            .with_target_name(target)
            .with_output(&mut output)
            .with_input(&mut input_buffers);
        let mut generator = context.initialize_security_context_impl(&mut builder)?;
        match kdc {
            Some(kdc) => generator.resolve_with_client(kdc)?.status,
            None => generator.resolve_to_result()?.status,
        }
    };
    complete(context, status, output)
}

/// [`initialize`] with KDC requests over tokio sockets: the sspi generator is resumed by
/// hand with each KDC reply (sspi's own async driver returns a future that is not `Send`).
async fn initialize_async<S>(
    context: &mut S,
    handle: &mut S::CredentialsHandle,
    target: &str,
    input: Option<&[u8]>,
    channel_bindings: Option<&[u8]>,
    kdc: &KdcClient,
) -> sspi::Result<(SecurityStatus, Vec<u8>)>
where
    S: Sspi + SspiImpl + Send,
    S::CredentialsHandle: Send,
{
    let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
    let mut input_buffers = input_buffers(input, channel_bindings);
    let status = {
        let mut builder = context
            .initialize_security_context()
            .with_credentials_handle(handle)
            .with_context_requirements(request_flags())
            .with_target_data_representation(DataRepresentation::Native)
            .with_target_name(target)
            .with_output(&mut output)
            .with_input(&mut input_buffers);
        let mut generator = context.initialize_security_context_impl(&mut builder)?;
        let mut state = generator.start();
        // Bounded: AS (with the pre-authentication retry and a clock-skew retry) and TGS
        // with referrals take a handful of requests.
        let mut requests = 0;
        loop {
            match state {
                GeneratorState::Completed(result) => break result?.status,
                GeneratorState::Suspended(request) => {
                    requests += 1;
                    if requests > MAX_KDC_REQUESTS {
                        return Err(sspi::Error::new(
                            sspi::ErrorKind::NoAuthenticatingAuthority,
                            format!("more than {MAX_KDC_REQUESTS} KDC requests in one step"),
                        ));
                    }
                    let reply = kdc.send_async(&request).await;
                    state = generator.resume(reply);
                }
            }
        }
    };
    complete(context, status, output)
}

/// Most KDC requests one step may make (sspi follows at most 10 referrals).
const MAX_KDC_REQUESTS: usize = 16;

/// Runs `CompleteAuthToken` when sspi asks for it and returns the status and token.
fn complete<S: Sspi>(
    context: &mut S,
    status: SecurityStatus,
    mut output: Vec<SecurityBuffer>,
) -> sspi::Result<(SecurityStatus, Vec<u8>)> {
    let status = match status {
        SecurityStatus::CompleteNeeded => {
            context.complete_auth_token(&mut output)?;
            SecurityStatus::Ok
        }
        SecurityStatus::CompleteAndContinue => {
            context.complete_auth_token(&mut output)?;
            SecurityStatus::ContinueNeeded
        }
        other => other,
    };
    let token = output
        .into_iter()
        .next()
        .map(|buffer| buffer.buffer)
        .unwrap_or_default();
    Ok((status, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential() -> Credential {
        Credential::new("CORP\\alice", "S3cret-pw").unwrap()
    }

    #[test]
    fn debug_never_prints_the_password() {
        let text = format!("{:?}", credential());
        assert_eq!(
            text,
            "Credential { user: \"CORP\\\\alice\", password: \"<redacted>\" }"
        );
        let context = ClientContext::new(Mechanism::Ntlm, &credential(), "web01").unwrap();
        let text = format!("{context:?}");
        assert!(!text.contains("S3cret"), "{text}");
        assert!(text.contains("HTTP/web01"), "{text}");
    }

    #[test]
    fn user_name_forms() {
        for user in ["alice", "CORP\\alice", "alice@corp.example", ".\\alice"] {
            assert_eq!(Credential::new(user, "pw").unwrap().user(), user);
        }
        for (user, reason) in [
            ("", "the user name is empty"),
            ("CORP\\", "the account part is empty"),
            ("a\\b\\c", "mixes the DOMAIN\\user and user@domain forms"),
            ("bob\n", "the user name contains a control character"),
        ] {
            match Credential::new(user, "pw") {
                Err(AuthError::InvalidUserName { reason: r, .. }) => {
                    assert_eq!(r, reason, "{user:?}")
                }
                other => panic!("{user:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn first_tokens_have_the_mechanism_shape() {
        // Raw NTLM: an NTLMSSP NEGOTIATE message (MS-NLMP 2.2.1.1: signature, type 1).
        let mut ntlm = ClientContext::new(Mechanism::Ntlm, &credential(), "web01").unwrap();
        let step = ntlm.step(None).unwrap();
        let token = step.token.unwrap();
        assert_eq!(&token[..12], b"NTLMSSP\0\x01\0\0\0");
        assert!(!step.complete);
        assert!(ntlm.has_started() && !ntlm.is_complete());

        // SPNEGO: a GSS-API InitialContextToken ([APPLICATION 0], RFC 2743 3.1) holding
        // the SPNEGO OID 1.3.6.1.5.5.2 and the NTLMSSP OID, and the NTLM token inside.
        let mut spnego = ClientContext::new(Mechanism::Negotiate, &credential(), "web01").unwrap();
        let token = spnego.step(None).unwrap().token.unwrap();
        assert_eq!(token[0], 0x60);
        let spnego_oid = [0x06, 0x06, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x02];
        let ntlm_oid = [
            0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x02, 0x0a,
        ];
        assert!(token.windows(spnego_oid.len()).any(|w| w == spnego_oid));
        assert!(token.windows(ntlm_oid.len()).any(|w| w == ntlm_oid));
        assert!(token.windows(8).any(|w| w == b"NTLMSSP\0"));
        // No Kerberos OIDs offered (1.2.840.113554.1.2.2 and the MS variant).
        let krb5 = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02];
        let ms_krb5 = [0x2a, 0x86, 0x48, 0x82, 0xf7, 0x12, 0x01, 0x02, 0x02];
        assert!(!token.windows(9).any(|w| w == krb5 || w == ms_krb5));
    }

    #[test]
    fn out_of_sequence_steps_are_refused() {
        let mut ctx = ClientContext::new(Mechanism::Ntlm, &credential(), "web01").unwrap();
        assert!(matches!(
            ctx.step(Some(b"x")),
            Err(AuthError::OutOfSequence(_))
        ));
        ctx.step(None).unwrap();
        assert!(matches!(ctx.step(None), Err(AuthError::OutOfSequence(_))));
        let huge = vec![0u8; MAX_TOKEN_LEN + 1];
        assert!(matches!(
            ctx.step(Some(&huge)),
            Err(AuthError::TokenTooLarge(n)) if n == MAX_TOKEN_LEN + 1
        ));
    }

    #[test]
    fn hostile_challenges_are_errors_not_panics() {
        for mechanism in [Mechanism::Ntlm, Mechanism::Negotiate] {
            for token in [
                &b""[..],
                b"NTLMSSP\0",
                b"NTLMSSP\0\x02\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff",
                b"\xa1\x03\x30\x01\x00",
                &[0xa1, 0x84, 0xff, 0xff, 0xff, 0xff],
                // Eight-octet lengths near 2^64 (picky-asn1-der's unchecked additions).
                &[0xa1, 0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                &[
                    0xa1, 0x0c, 0x30, 0x0a, 0xa0, 0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                    0xff,
                ],
                &[0x60, 0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            ] {
                let mut ctx = ClientContext::new(mechanism, &credential(), "web01").unwrap();
                ctx.step(None).unwrap();
                assert!(
                    matches!(ctx.step(Some(token)), Err(AuthError::Sspi { .. })),
                    "{mechanism} accepted {token:?}"
                );
            }
        }
    }

    #[test]
    fn sealing_needs_an_established_context() {
        let mut ctx = ClientContext::new(Mechanism::Negotiate, &credential(), "web01").unwrap();
        assert!(matches!(ctx.seal(b"x"), Err(AuthError::NotEstablished)));
        ctx.step(None).unwrap();
        assert!(matches!(
            ctx.unseal(&[0; 16], b"x"),
            Err(AuthError::NotEstablished)
        ));
    }

    #[test]
    fn client_certificates_load_and_check_their_key() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let loaded =
            ClientCertificate::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
                .unwrap();
        assert_eq!(loaded.chain().len(), 1);
        assert_eq!(loaded.chain()[0].as_ref(), cert.der().as_ref());
        let debug = format!("{loaded:?}");
        assert_eq!(
            debug,
            "ClientCertificate { certificates: 1, key: \"<redacted>\" }"
        );
        let other = rcgen::KeyPair::generate().unwrap();
        for (cert_pem, key_pem, reason) in [
            (cert.pem(), other.serialize_pem(), "does not belong"),
            (String::new(), key.serialize_pem(), "no CERTIFICATE"),
            (cert.pem(), String::new(), "private key PEM"),
        ] {
            match ClientCertificate::from_pem(cert_pem.as_bytes(), key_pem.as_bytes()) {
                Err(AuthError::ClientCertificate { reason: r }) => {
                    assert!(r.contains(reason), "{r}")
                }
                other => panic!("{reason}: {other:?}"),
            }
        }
    }

    #[test]
    fn certificate_resolvers_note_the_servers_request() {
        use rustls::client::ResolvesClientCert as _;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let loaded =
            ClientCertificate::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
                .unwrap();
        // One resolver per connection: asking on one says nothing about another.
        let first = loaded.resolver();
        let second = loaded.resolver();
        assert!(first.has_certs());
        assert!(!first.was_requested());
        let presented = first
            .resolve(&[], &[rustls::SignatureScheme::ECDSA_NISTP256_SHA256])
            .unwrap();
        assert_eq!(presented.cert[0].as_ref(), cert.der().as_ref());
        assert!(first.was_requested());
        assert!(!second.was_requested());
        assert!(!format!("{first:?}").contains("key"));
    }

    #[test]
    fn credssp_ignores_the_outer_channel_bindings() {
        let bindings = Some(b"tls-server-end-point:0123456789abcdef".to_vec());
        let credssp = ClientContext::with_channel_bindings(
            Mechanism::CredSsp,
            &credential(),
            "web01",
            bindings.clone(),
        )
        .unwrap();
        assert!(!credssp.is_channel_bound());
        let ntlm =
            ClientContext::with_channel_bindings(Mechanism::Ntlm, &credential(), "web01", bindings)
                .unwrap();
        assert!(ntlm.is_channel_bound());
    }

    #[test]
    fn step_async_is_send() {
        // Connections run in spawned tasks: the step future must be Send.
        fn assert_send<T: Send>(_: &T) {}
        let mut ctx = ClientContext::new(Mechanism::Negotiate, &credential(), "web01").unwrap();
        let future = ctx.step_async(None);
        assert_send(&future);
    }

    #[test]
    fn sec_channel_bindings_layout() {
        let data = b"tls-server-end-point:0123456789abcdef0123456789abcdef";
        let cb = sec_channel_bindings(data).unwrap();
        assert_eq!(cb.len(), 32 + data.len());
        assert_eq!(&cb[..24], &[0u8; 24]);
        assert_eq!(cb[24..28], (data.len() as u32).to_le_bytes());
        assert_eq!(cb[28..32], 32u32.to_le_bytes());
        assert_eq!(&cb[32..], data);
        for bad in [0, MAX_CHANNEL_BINDINGS_LEN + 1] {
            assert!(matches!(
                sec_channel_bindings(&vec![b'x'; bad]),
                Err(AuthError::BadChannelBindings(n)) if n == bad
            ));
            assert!(matches!(
                ClientContext::with_channel_bindings(
                    Mechanism::Ntlm,
                    &credential(),
                    "web01",
                    Some(vec![b'x'; bad])
                ),
                Err(AuthError::BadChannelBindings(_))
            ));
        }
    }

    /// Runs `client` against sspi's acceptor of the same mechanism for `CORP\alice`,
    /// given `bindings` as the channel's application data (the acceptor checks the
    /// client's MsvAvChannelBindings hash against it).
    fn accept_all(client: &mut ClientContext, bindings: Option<&[u8]>) -> Result<(), String> {
        use sspi::SspiEx;
        match client.mechanism() {
            Mechanism::Ntlm => {
                let mut server = Ntlm::new();
                // sspi's raw NTLM acceptor takes the account to verify after the
                // AUTHENTICATE leg (dependencies.md).
                let on_complete = |server: &mut Ntlm| {
                    server.custom_set_auth_identities(vec![credential().identity("NTLM").unwrap()])
                };
                run_acceptor(client, &mut server, bindings, on_complete)
            }
            Mechanism::Negotiate => {
                let config = NegotiateConfig::new(
                    Box::new(sspi::ntlm::NtlmConfig::default()),
                    Some("ntlm".to_owned()),
                    String::new(),
                );
                let mut server =
                    Negotiate::new_server(config, vec![credential().identity("NTLM").unwrap()])
                        .unwrap();
                run_acceptor(client, &mut server, bindings, |_| Ok(()))
            }
            other => panic!("no in-memory acceptor for {other}"),
        }
    }

    fn run_acceptor<S>(
        client: &mut ClientContext,
        server: &mut S,
        bindings: Option<&[u8]>,
        on_complete: impl Fn(&mut S) -> sspi::Result<()>,
    ) -> Result<(), String>
    where
        S: Sspi + SspiImpl,
    {
        use sspi::ServerRequestFlags;
        let mut handle = server
            .acquire_credentials_handle()
            .with_credential_use(CredentialUse::Inbound)
            .execute(server)
            .unwrap()
            .credentials_handle;
        let mut input: Option<Vec<u8>> = None;
        for _ in 0..4 {
            let step = client.step(input.as_deref()).map_err(|e| e.to_string())?;
            let Some(token) = step.token else {
                return Ok(());
            };
            let mut buffers = vec![SecurityBuffer::new(token, BufferType::Token)];
            if let Some(data) = bindings {
                buffers.push(SecurityBuffer::new(
                    sec_channel_bindings(data).unwrap(),
                    BufferType::ChannelBindings,
                ));
            }
            let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
            let status = {
                let builder = server
                    .accept_security_context()
                    .with_credentials_handle(&mut handle)
                    .with_context_requirements(ServerRequestFlags::ALLOCATE_MEMORY)
                    .with_target_data_representation(DataRepresentation::Native)
                    .with_input(&mut buffers)
                    .with_output(&mut output);
                server
                    .accept_security_context_impl(builder)
                    .and_then(|mut g| g.resolve_to_result())
                    .map_err(|e| e.to_string())?
                    .status
            };
            if matches!(
                status,
                SecurityStatus::CompleteNeeded | SecurityStatus::CompleteAndContinue
            ) {
                on_complete(server).map_err(|e| e.to_string())?;
                server
                    .complete_auth_token(&mut output)
                    .map_err(|e| e.to_string())?;
            }
            if step.complete {
                return Ok(());
            }
            input = Some(output.remove(0).buffer);
        }
        Err("too many legs".to_owned())
    }

    #[test]
    fn channel_bindings_reach_the_acceptor() {
        let ours = b"tls-server-end-point:\x11\x22\x33 (a SHA-256 would be here)".to_vec();
        let theirs = b"tls-server-end-point:another certificate".to_vec();
        for mechanism in [Mechanism::Ntlm, Mechanism::Negotiate] {
            let bound = |data: &[u8]| {
                ClientContext::with_channel_bindings(
                    mechanism,
                    &credential(),
                    "web01",
                    Some(data.to_vec()),
                )
                .unwrap()
            };
            // Same channel: accepted.
            let mut client = bound(&ours);
            assert!(client.is_channel_bound());
            accept_all(&mut client, Some(&ours)).unwrap();
            assert!(client.is_complete(), "{mechanism}");
            // Another channel (a TLS-intercepting proxy): refused by the acceptor.
            let error = accept_all(&mut bound(&ours), Some(&theirs)).unwrap_err();
            assert!(error.contains("hash mismatch"), "{mechanism}: {error}");
            // Acceptor without bindings (plain HTTP): the bound client still gets in.
            accept_all(&mut bound(&ours), None).unwrap();
        }
    }

    #[test]
    fn mechanisms_use_the_negotiate_scheme_and_spnego_sealing() {
        for mechanism in [Mechanism::Ntlm, Mechanism::Negotiate] {
            assert_eq!(mechanism.http_scheme(), "Negotiate");
            assert_eq!(mechanism.protocol(), Protocol::Spnego);
        }
        assert_eq!(Mechanism::Kerberos.http_scheme(), "Kerberos");
        assert_eq!(Mechanism::Kerberos.protocol(), Protocol::Kerberos);
        assert_eq!(Mechanism::CredSsp.http_scheme(), "CredSSP");
        assert_eq!(Mechanism::CredSsp.protocol(), Protocol::CredSsp);
    }
}
