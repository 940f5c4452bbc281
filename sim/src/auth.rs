//! Server-side authentication for simulated hosts: sspi acceptors for the `Negotiate` HTTP
//! scheme (raw NTLM or SPNEGO carrying NTLM) and the `Basic` check.
//!
//! NTLM and SPNEGO authenticate the TCP connection (MS-WSMV 2.2.9.1.1.1): the network layer
//! keeps one [`Acceptor`] per connection, feeds it the client's tokens, and once it is
//! complete uses it as the [`MessageSealer`] of that connection's encrypted bodies.
//!
//! sspi's raw NTLM acceptor does not check the user name by itself (dependencies.md): after
//! the AUTHENTICATE message the wire user name is read (`query_context_names`), the account
//! looked up by its name part, that account's password given for the wire name
//! (`custom_set_auth_identities`), and only then is the proof verified
//! (`complete_auth_token`). The SPNEGO acceptor looks users up itself among the name forms
//! [`negotiate_identities`] lists.
//!
//! Adding Kerberos or CredSSP is one [`AcceptorKind`] variant each.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use psfleet_core::encryption::{MessageSealer, Protocol, Sealed, Unsealed};
use sspi::{
    AuthIdentity, BufferType, CredentialUse, DataRepresentation, EncryptionFlags, Negotiate,
    NegotiateConfig, Ntlm, SecurityBuffer, SecurityBufferRef, SecurityStatus, ServerRequestFlags,
    Sspi, SspiEx, SspiImpl, Username,
};

use crate::auth_kerberos::{Accepted, KerberosAcceptor, Keytab, Scheme as KerberosScheme};
use crate::credssp::{CredSspAcceptor, CredSspError, CredSspTls};
use crate::host::Account;
use crate::profile::DOMAIN;
use crate::tls::sec_channel_bindings;

/// Longest security token accepted (Windows caps tokens at 48,000 bytes).
pub const MAX_TOKEN_LEN: usize = 48_000;

/// The length of an NTLM message signature, the header of every NTLM-sealed block.
pub const NTLM_SIGNATURE_LEN: usize = 16;

/// The NetBIOS domain name simulated hosts accept besides `.` and their computer name.
pub const NETBIOS_DOMAIN: &str = "FLEET";

/// The HTTP authentication schemes whose tokens an [`Acceptor`] takes (Basic and
/// certificate authentication need no per-connection context).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpScheme {
    /// `Negotiate`: raw NTLM or SPNEGO.
    Negotiate,
    /// `Kerberos`: raw RFC 4121 tokens.
    Kerberos,
    /// `CredSSP`: TLS records carrying MS-CSSP.
    CredSsp,
}

impl HttpScheme {
    /// The scheme an `Authorization` header names (case-insensitive).
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Negotiate, Self::Kerberos, Self::CredSsp]
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }

    /// The scheme's name in `Authorization` and `WWW-Authenticate`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Negotiate => "Negotiate",
            Self::Kerberos => "Kerberos",
            Self::CredSsp => "CredSSP",
        }
    }
}

/// Which acceptor a connection uses, chosen from the scheme and the client's first token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AcceptorKind {
    /// Raw NTLMSSP under the `Negotiate` scheme (pywinrm's and pypsrp's `ntlm`).
    Ntlm,
    /// SPNEGO (RFC 4178) settling on NTLM, as Windows clients and pyspnego send it
    /// without Kerberos.
    Spnego,
    /// SPNEGO offering Kerberos to a host with a keytab key: the Kerberos acceptor
    /// (`auth_kerberos`), which falls back to NTLM when the client's ticket is not used.
    SpnegoKerberos,
    /// Raw Kerberos under the `Kerberos` scheme (keys from the keytab).
    Kerberos,
    /// CredSSP under the `CredSSP` scheme (`credssp`).
    CredSsp,
}

impl AcceptorKind {
    /// The kind a first `Negotiate` token asks for: an NTLMSSP message, or a GSS-API
    /// InitialContextToken (`[APPLICATION 0]`, RFC 2743 3.1) for SPNEGO.
    pub fn for_first_token(token: &[u8]) -> Option<Self> {
        if token.starts_with(b"NTLMSSP\0") {
            Some(Self::Ntlm)
        } else if token.first() == Some(&0x60) {
            Some(Self::Spnego)
        } else {
            None
        }
    }

    /// The HTTP scheme its tokens travel under.
    pub const fn http_scheme(self) -> HttpScheme {
        match self {
            Self::Ntlm | Self::Spnego | Self::SpnegoKerberos => HttpScheme::Negotiate,
            Self::Kerberos => HttpScheme::Kerberos,
            Self::CredSsp => HttpScheme::CredSsp,
        }
    }

    /// The session-encryption protocol of bodies sealed with it (MS-WSMV 2.2.9.1.1 for
    /// `Negotiate`, 2.2.9.1.2 for `Kerberos`, 2.2.9.1.3 for `CredSSP`).
    pub const fn protocol(self) -> Protocol {
        match self {
            Self::Ntlm | Self::Spnego | Self::SpnegoKerberos => Protocol::Spnego,
            Self::Kerberos => Protocol::Kerberos,
            Self::CredSsp => Protocol::CredSsp,
        }
    }
}

/// What an acceptor needs to know about the host and the connection.
#[derive(Debug, Clone, Copy)]
pub struct AcceptorContext<'a> {
    /// The host's accounts.
    pub accounts: &'a [Account],
    /// The host name: the service principal is `HTTP/<host_name>`.
    pub host_name: &'a str,
    /// The NetBIOS computer name (a domain clients may write for local accounts).
    pub computer_name: &'a str,
    /// The RFC 5929 application data of the TLS connection (HTTPS only).
    pub channel_binding: Option<&'a [u8]>,
    /// CbtHardeningLevel.
    pub cbt_level: CbtLevel,
    /// The fleet's Kerberos service keys, when a KDC is configured.
    pub keytab: Option<&'a Keytab>,
    /// The host's CredSSP TLS identity, when CredSSP is enabled.
    pub credssp: Option<&'a CredSspTls>,
}

/// What one [`Acceptor::step`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptStep {
    /// Send this token in `WWW-Authenticate: Negotiate <token>` with a 401.
    Continue(Vec<u8>),
    /// Authenticated as the account `user` (its canonical name); `token` (SPNEGO's final
    /// token with its mechListMIC) goes in the 200's `WWW-Authenticate` header.
    Complete {
        /// The canonical account name.
        user: String,
        /// The final token, if any.
        token: Option<Vec<u8>>,
    },
}

/// Why a client was not authenticated. Every variant is answered with a 401.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The first token is neither NTLMSSP nor SPNEGO.
    #[error("the token is neither NTLMSSP nor SPNEGO")]
    UnknownMechanism,
    /// A token longer than [`MAX_TOKEN_LEN`].
    #[error("token of {0} bytes exceeds the limit")]
    TokenTooLarge(usize),
    /// The wire user name names no account of the host.
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    /// sspi refused a token (bad password, bad MIC, channel-binding mismatch, malformed).
    #[error("{operation} failed: {source}")]
    Sspi {
        /// What was being done.
        operation: &'static str,
        /// sspi's error (never holds the password).
        #[source]
        source: sspi::Error,
    },
    /// A step after the context completed, or sealing before it did.
    #[error("authentication step out of sequence: {0}")]
    OutOfSequence(&'static str),
    /// A sealed block's signature is not 16 bytes.
    #[error("sealed block header is {0} bytes, NTLM signatures are 16")]
    BadSignatureLength(usize),
    /// The Kerberos acceptor refused the client.
    #[error("Kerberos: {0}")]
    Kerberos(#[from] crate::auth_kerberos::AcceptError),
    /// The CredSSP acceptor refused the client.
    #[error("CredSSP: {0}")]
    CredSsp(#[from] CredSspError),
    /// Kerberos was asked for but the fleet has no keytab (no KDC configured).
    #[error("no Kerberos keytab: the fleet was started without a KDC")]
    NoKeytab,
    /// CredSSP was asked for but the host has no CredSSP identity.
    #[error("CredSSP is not available on this host")]
    NoCredSsp,
    /// CbtHardeningLevel is Strict and the client bound no TLS channel.
    #[error("channel binding required (CbtHardeningLevel Strict) but the client sent none")]
    ChannelBindingRequired,
}

/// CbtHardeningLevel (MS-WSMV 2.2.4.34; http.sys extended protection, wire-facts 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CbtLevel {
    /// Channel bindings are ignored.
    None,
    /// Checked when the client sends them (the Windows default).
    #[default]
    Relaxed,
    /// Required over HTTPS: a client without them is refused.
    Strict,
}

impl CbtLevel {
    /// The level named by a CbtHardeningLevel value (case-insensitive; anything unknown
    /// is the default, Relaxed).
    pub fn from_setting(value: &str) -> Self {
        if value.eq_ignore_ascii_case("none") {
            Self::None
        } else if value.eq_ignore_ascii_case("strict") {
            Self::Strict
        } else {
            Self::Relaxed
        }
    }
}

/// What an NTLM AUTHENTICATE message inside a token says about channel bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingClaim {
    /// The token holds no AUTHENTICATE message (an earlier leg).
    NoAuthenticate,
    /// No MsvAvChannelBindings AV pair, or an all-zero one (a client without bindings,
    /// MS-NLMP 3.1.5.1.2).
    Absent,
    /// A non-zero MsvAvChannelBindings hash.
    Present,
}

/// Reads the MsvAvChannelBindings AV pair (MS-NLMP 2.2.2.1, AvId 0x000A) from the NTLMv2
/// response of the AUTHENTICATE message in `token` (raw, or inside SPNEGO's DER, where
/// it is embedded as is). Every offset is bounds-checked; at most 64 pairs are read.
pub fn binding_claim(token: &[u8]) -> BindingClaim {
    const SIGNATURE: &[u8] = b"NTLMSSP\0\x03\0\0\0";
    let Some(start) = token.windows(SIGNATURE.len()).position(|w| w == SIGNATURE) else {
        return BindingClaim::NoAuthenticate;
    };
    let message = token.get(start..).unwrap_or_default();
    let u16_at = |at: usize| {
        message
            .get(at..at + 2)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let u32_at = |at: usize| {
        message
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    // NtChallengeResponseFields: Len (u16) at 20, BufferOffset (u32) at 24.
    let (Some(len), Some(offset)) = (u16_at(20), u32_at(24)) else {
        return BindingClaim::Absent;
    };
    let Some(response) = offset
        .checked_add(len)
        .and_then(|end| message.get(offset..end))
    else {
        return BindingClaim::Absent;
    };
    // NTLMv2_RESPONSE: NTProofStr (16), then the NTLMv2_CLIENT_CHALLENGE whose AV pairs
    // start after 28 bytes of fixed fields. Shorter responses are NTLMv1: no AV pairs.
    let mut at = 16 + 28;
    for _ in 0..64 {
        let Some(header) = response.get(at..at + 4) else {
            return BindingClaim::Absent;
        };
        let id = u16::from_le_bytes([header[0], header[1]]);
        let value_len = usize::from(u16::from_le_bytes([header[2], header[3]]));
        let Some(value) = response.get(at + 4..at + 4 + value_len) else {
            return BindingClaim::Absent;
        };
        match id {
            0x0000 => return BindingClaim::Absent,
            0x000A if value.iter().any(|&b| b != 0) => return BindingClaim::Present,
            0x000A => return BindingClaim::Absent,
            _ => at += 4 + value_len,
        }
    }
    BindingClaim::Absent
}

/// A server security context for one connection.
pub struct Acceptor {
    kind: AcceptorKind,
    inner: Inner,
    accounts: Vec<Account>,
    channel_bindings: Option<Vec<u8>>,
    cbt_level: CbtLevel,
    user: Option<String>,
}

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acceptor")
            .field("kind", &self.kind)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

enum Inner {
    Ntlm {
        context: Box<Ntlm>,
        handle: Option<sspi::AuthIdentityBuffers>,
    },
    Spnego {
        context: Box<Negotiate>,
        handle: Option<sspi::CredentialsBuffers>,
    },
    Kerberos(Box<KerberosAcceptor>),
    CredSsp(Box<CredSspAcceptor>),
}

impl Acceptor {
    /// An acceptor for a connection whose first token under `scheme` is `first_token`.
    ///
    /// Channel bindings (`context.channel_binding`, HTTPS only): under CbtHardeningLevel
    /// Relaxed a client that sends them must match; under Strict a client must send
    /// them; under None they are ignored.
    pub fn new(
        scheme: HttpScheme,
        first_token: &[u8],
        context: &AcceptorContext<'_>,
    ) -> Result<Self, AcceptError> {
        let kind = match scheme {
            HttpScheme::Negotiate => {
                match AcceptorKind::for_first_token(first_token)
                    .ok_or(AcceptError::UnknownMechanism)?
                {
                    AcceptorKind::Spnego
                        if offers_kerberos(first_token)
                            && context.keytab.is_some_and(|k| {
                                k.key_for(&format!("HTTP/{}", context.host_name)).is_some()
                            }) =>
                    {
                        AcceptorKind::SpnegoKerberos
                    }
                    kind => kind,
                }
            }
            HttpScheme::Kerberos => AcceptorKind::Kerberos,
            HttpScheme::CredSsp => AcceptorKind::CredSsp,
        };
        let sspi_err = |operation| move |source| AcceptError::Sspi { operation, source };
        let bindings = context
            .channel_binding
            .filter(|_| context.cbt_level != CbtLevel::None);
        let inner = match kind {
            AcceptorKind::Ntlm => {
                let mut ntlm = Ntlm::new();
                let handle = ntlm
                    .acquire_credentials_handle()
                    .with_credential_use(CredentialUse::Inbound)
                    .execute(&mut ntlm)
                    .map_err(sspi_err("acquire credentials"))?
                    .credentials_handle;
                Inner::Ntlm {
                    context: Box::new(ntlm),
                    handle,
                }
            }
            AcceptorKind::Spnego => {
                // "ntlm" alone: Kerberos goes to the keytab acceptor (SpnegoKerberos).
                let config = NegotiateConfig::new(
                    Box::new(sspi::ntlm::NtlmConfig::default()),
                    Some("ntlm".to_owned()),
                    String::new(),
                );
                let mut negotiate = Negotiate::new_server(
                    config,
                    negotiate_identities(context.accounts, context.computer_name),
                )
                .map_err(sspi_err("create the SPNEGO acceptor"))?;
                let handle = negotiate
                    .acquire_credentials_handle()
                    .with_credential_use(CredentialUse::Inbound)
                    .execute(&mut negotiate)
                    .map_err(sspi_err("acquire credentials"))?
                    .credentials_handle;
                Inner::Spnego {
                    context: Box::new(negotiate),
                    handle,
                }
            }
            AcceptorKind::SpnegoKerberos | AcceptorKind::Kerberos => {
                let keytab = context.keytab.ok_or(AcceptError::NoKeytab)?;
                let forms = name_forms(context.accounts, context.computer_name);
                let refs: Vec<(&str, &str)> = forms
                    .iter()
                    .map(|(u, p)| (u.as_str(), p.as_str()))
                    .collect();
                let scheme = if kind == AcceptorKind::Kerberos {
                    KerberosScheme::Kerberos
                } else {
                    KerberosScheme::Negotiate
                };
                Inner::Kerberos(Box::new(KerberosAcceptor::new(
                    scheme,
                    keytab,
                    context.host_name,
                    &refs,
                    bindings,
                )?))
            }
            AcceptorKind::CredSsp => {
                let tls = context.credssp.ok_or(AcceptError::NoCredSsp)?;
                let forms = name_forms(context.accounts, context.computer_name);
                let refs: Vec<(&str, &str)> = forms
                    .iter()
                    .map(|(u, p)| (u.as_str(), p.as_str()))
                    .collect();
                Inner::CredSsp(Box::new(CredSspAcceptor::new(tls, &refs)?))
            }
        };
        Ok(Self {
            kind,
            inner,
            accounts: context.accounts.to_vec(),
            channel_bindings: bindings.map(sec_channel_bindings),
            cbt_level: context.cbt_level,
            user: None,
        })
    }

    /// The acceptor kind.
    pub fn kind(&self) -> AcceptorKind {
        self.kind
    }

    /// The canonical account name once authenticated.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// True once the context is established.
    pub fn is_complete(&self) -> bool {
        self.user.is_some()
    }

    /// One leg: the client's token in, the next step out.
    pub fn step(&mut self, token: &[u8]) -> Result<AcceptStep, AcceptError> {
        if self.user.is_some() {
            return Err(AcceptError::OutOfSequence(
                "the context is already established",
            ));
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AcceptError::TokenTooLarge(token.len()));
        }
        // Strict: an NTLM AUTHENTICATE without bindings is refused whoever accepts it.
        let claim = binding_claim(token);
        if self.channel_bindings.is_some()
            && self.cbt_level == CbtLevel::Strict
            && claim == BindingClaim::Absent
        {
            return Err(AcceptError::ChannelBindingRequired);
        }
        let progress = match &mut self.inner {
            Inner::Kerberos(acceptor) => match acceptor.accept(token)? {
                Accepted::Continue(reply) => Progress::Continue(reply),
                Accepted::Complete(reply) => Progress::Done(reply.unwrap_or_default()),
            },
            Inner::CredSsp(acceptor) => match acceptor.accept(token)? {
                Accepted::Continue(reply) => Progress::Continue(reply),
                Accepted::Complete(reply) => Progress::Done(reply.unwrap_or_default()),
            },
            Inner::Ntlm { .. } | Inner::Spnego { .. } => self.sspi_step(token, claim)?,
        };
        match progress {
            Progress::Continue(reply) => Ok(AcceptStep::Continue(reply)),
            Progress::Done(reply) => {
                let wire = self.wire_user()?;
                let account = find_account(&self.accounts, account_part(&wire))
                    .ok_or(AcceptError::UnknownUser(wire))?;
                let user = account.name.clone();
                self.user = Some(user.clone());
                Ok(AcceptStep::Complete {
                    user,
                    token: (!reply.is_empty()).then_some(reply),
                })
            }
        }
    }

    /// One leg of the NTLM or SPNEGO-NTLM acceptors.
    fn sspi_step(&mut self, token: &[u8], claim: BindingClaim) -> Result<Progress, AcceptError> {
        let mut input = vec![SecurityBuffer::new(token.to_vec(), BufferType::Token)];
        // sspi compares any MsvAvChannelBindings it finds with the bindings it is given,
        // the all-zero "no bindings" value included; so the bindings go to sspi only when
        // the client claims some (Relaxed: checked when present).
        if let Some(bindings) = &self.channel_bindings
            && claim == BindingClaim::Present
        {
            input.push(SecurityBuffer::new(
                bindings.clone(),
                BufferType::ChannelBindings,
            ));
        }
        let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
        let sspi_err = |operation| move |source| AcceptError::Sspi { operation, source };
        let status = match &mut self.inner {
            Inner::Ntlm { context, handle } => {
                let status = accept(context.as_mut(), handle, &mut input, &mut output)
                    .map_err(sspi_err("accept security context"))?;
                if status == SecurityStatus::CompleteNeeded {
                    // The user-name check the raw acceptor lacks (dependencies.md).
                    let wire = context
                        .query_context_names()
                        .map_err(sspi_err("query context names"))?
                        .username;
                    let account = find_account(&self.accounts, wire.account_name())
                        .ok_or_else(|| AcceptError::UnknownUser(wire.inner().to_owned()))?;
                    let identity = AuthIdentity {
                        username: wire.clone(),
                        password: account.password.clone().into(),
                    };
                    context
                        .custom_set_auth_identities(vec![identity])
                        .map_err(sspi_err("set identities"))?;
                    // Verifies the NTLMv2 proof and the MIC with that password.
                    context
                        .complete_auth_token(&mut output)
                        .map_err(sspi_err("complete auth token"))?;
                    SecurityStatus::Ok
                } else {
                    status
                }
            }
            Inner::Spnego { context, handle } => {
                let status = accept(context.as_mut(), handle, &mut input, &mut output)
                    .map_err(sspi_err("accept security context"))?;
                if matches!(
                    status,
                    SecurityStatus::CompleteNeeded | SecurityStatus::CompleteAndContinue
                ) {
                    context
                        .complete_auth_token(&mut output)
                        .map_err(sspi_err("complete auth token"))?;
                }
                match status {
                    SecurityStatus::CompleteAndContinue => SecurityStatus::ContinueNeeded,
                    SecurityStatus::CompleteNeeded => SecurityStatus::Ok,
                    other => other,
                }
            }
            Inner::Kerberos(_) | Inner::CredSsp(_) => {
                return Err(AcceptError::OutOfSequence("not an sspi NTLM acceptor"));
            }
        };
        let token = output
            .into_iter()
            .next()
            .map(|b| b.buffer)
            .unwrap_or_default();
        match status {
            SecurityStatus::ContinueNeeded => Ok(Progress::Continue(token)),
            SecurityStatus::Ok => Ok(Progress::Done(token)),
            _ => Err(AcceptError::OutOfSequence(
                "the acceptor returned an unexpected status",
            )),
        }
    }

    /// The user name the client authenticated as, as it wrote it.
    fn wire_user(&mut self) -> Result<String, AcceptError> {
        let sspi_err = |source| AcceptError::Sspi {
            operation: "query context names",
            source,
        };
        match &mut self.inner {
            Inner::Ntlm { context, .. } => context
                .query_context_names()
                .map(|n| n.username.inner().to_owned())
                .map_err(sspi_err),
            Inner::Spnego { context, .. } => context
                .query_context_names()
                .map(|n| n.username.inner().to_owned())
                .map_err(sspi_err),
            Inner::Kerberos(acceptor) => acceptor
                .user()
                .ok_or(AcceptError::OutOfSequence("no client name after Kerberos")),
            Inner::CredSsp(acceptor) => acceptor.user().ok_or(AcceptError::OutOfSequence(
                "no delegated user after CredSSP",
            )),
        }
    }
}

/// One leg's outcome before the user is looked up.
enum Progress {
    Continue(Vec<u8>),
    Done(Vec<u8>),
}

impl MessageSealer for Acceptor {
    type Error = AcceptError;

    /// Seals one reply: 16-byte NTLM signature + RC4-sealed data (MS-WSMV 2.2.9.1.1.2.2).
    fn seal(&mut self, plaintext: &[u8]) -> Result<Sealed, AcceptError> {
        if self.user.is_none() {
            return Err(AcceptError::OutOfSequence("sealing before authentication"));
        }
        match &mut self.inner {
            Inner::Kerberos(acceptor) => return Ok(acceptor.seal(plaintext)?),
            Inner::CredSsp(acceptor) => return Ok(acceptor.seal(plaintext)?),
            Inner::Ntlm { .. } | Inner::Spnego { .. } => {}
        }
        let mut header = vec![0u8; NTLM_SIGNATURE_LEN];
        let mut payload = plaintext.to_vec();
        let header_len = {
            let mut buffers = [
                SecurityBufferRef::token_buf(&mut header),
                SecurityBufferRef::data_buf(&mut payload),
            ];
            match &mut self.inner {
                Inner::Ntlm { context, .. } => {
                    context.encrypt_message(EncryptionFlags::empty(), &mut buffers)
                }
                Inner::Spnego { context, .. } => {
                    context.encrypt_message(EncryptionFlags::empty(), &mut buffers)
                }
                Inner::Kerberos(_) | Inner::CredSsp(_) => {
                    return Err(AcceptError::OutOfSequence("not an NTLM context"));
                }
            }
            .map_err(|source| AcceptError::Sspi {
                operation: "encrypt message",
                source,
            })?;
            buffers[0].data().len()
        };
        header.truncate(header_len);
        Ok(Sealed {
            header,
            payload,
            padding: 0,
        })
    }

    /// Verifies and decrypts one block sealed by the client.
    fn unseal(&mut self, header: &[u8], payload: &[u8]) -> Result<Unsealed, AcceptError> {
        if self.user.is_none() {
            return Err(AcceptError::OutOfSequence(
                "unsealing before authentication",
            ));
        }
        match &mut self.inner {
            Inner::Kerberos(acceptor) => return Ok(acceptor.unseal(header, payload)?),
            Inner::CredSsp(acceptor) => return Ok(acceptor.unseal(header, payload)?),
            Inner::Ntlm { .. } | Inner::Spnego { .. } => {}
        }
        if header.len() != NTLM_SIGNATURE_LEN {
            return Err(AcceptError::BadSignatureLength(header.len()));
        }
        let mut signature = header.to_vec();
        let mut data = payload.to_vec();
        let plaintext = {
            let mut buffers = [
                SecurityBufferRef::token_buf(&mut signature),
                SecurityBufferRef::data_buf(&mut data),
            ];
            match &mut self.inner {
                Inner::Ntlm { context, .. } => context.decrypt_message(&mut buffers).map(drop),
                Inner::Spnego { context, .. } => context.decrypt_message(&mut buffers).map(drop),
                Inner::Kerberos(_) | Inner::CredSsp(_) => {
                    return Err(AcceptError::OutOfSequence("not an NTLM context"));
                }
            }
            .map_err(|source| AcceptError::Sspi {
                operation: "decrypt message",
                source,
            })?;
            buffers[1].data().to_vec()
        };
        Ok(Unsealed::new(plaintext))
    }
}

/// Checks an `Authorization: Basic` credential (`base64(user:password)`) against the
/// host's accounts; returns the canonical account name.
pub fn check_basic(encoded: &str, accounts: &[Account]) -> Option<String> {
    let decoded = BASE64.decode(encoded.trim().as_bytes()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    let account = find_account(accounts, account_part(user))?;
    (account.password == password).then(|| account.name.clone())
}

/// The account whose name is `name` (ASCII case-insensitive, as Windows compares them).
pub fn find_account<'a>(accounts: &'a [Account], name: &str) -> Option<&'a Account> {
    accounts.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

/// The account part of `DOMAIN\user`, `user@domain` or `user`.
pub fn account_part(user: &str) -> &str {
    if let Some((_, account)) = user.rsplit_once('\\') {
        account
    } else if let Some((account, _)) = user.split_once('@') {
        account
    } else {
        user
    }
}

/// The identities the SPNEGO acceptor matches wire names against: every account as
/// `user`, `.\user`, `COMPUTER\user`, `FLEET\user` and `user@fleet.test` (sspi's SPNEGO
/// acceptor compares the whole name, domain included).
pub fn negotiate_identities(accounts: &[Account], computer_name: &str) -> Vec<AuthIdentity> {
    name_forms(accounts, computer_name)
        .into_iter()
        .filter_map(|(form, password)| {
            Username::parse(&form).ok().map(|username| AuthIdentity {
                username,
                password: password.into(),
            })
        })
        .collect()
}

/// Every account under each name form a client may write, with its password.
pub fn name_forms(accounts: &[Account], computer_name: &str) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(accounts.len() * 5);
    for account in accounts {
        for form in [
            account.name.clone(),
            format!(".\\{}", account.name),
            format!("{computer_name}\\{}", account.name),
            format!("{NETBIOS_DOMAIN}\\{}", account.name),
            format!("{}@{DOMAIN}", account.name),
        ] {
            out.push((form, account.password.clone()));
        }
    }
    out
}

/// True when an SPNEGO InitialContextToken lists a Kerberos mechanism (the RFC 4121 OID
/// 1.2.840.113554.1.2.2 or Microsoft's 1.2.840.48018.1.2.2).
pub fn offers_kerberos(token: &[u8]) -> bool {
    const KRB5: [u8; 11] = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02,
    ];
    const MS_KRB5: [u8; 11] = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x82, 0xf7, 0x12, 0x01, 0x02, 0x02,
    ];
    token.windows(KRB5.len()).any(|w| w == KRB5 || w == MS_KRB5)
}

/// Runs one `AcceptSecurityContext` call.
fn accept<S>(
    context: &mut S,
    handle: &mut S::CredentialsHandle,
    input: &mut [SecurityBuffer],
    output: &mut [SecurityBuffer],
) -> sspi::Result<SecurityStatus>
where
    S: Sspi + SspiImpl,
{
    let builder = context
        .accept_security_context()
        .with_credentials_handle(handle)
        .with_context_requirements(ServerRequestFlags::ALLOCATE_MEMORY)
        .with_target_data_representation(DataRepresentation::Native)
        .with_input(input)
        .with_output(output);
    Ok(context
        .accept_security_context_impl(builder)?
        .resolve_to_result()?
        .status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use psfleet_core::encryption;
    use psfleet_engine::auth::{ClientContext, Credential, Mechanism};

    fn accounts() -> Vec<Account> {
        vec![
            Account {
                name: "fleetadmin".into(),
                password: "Adm1n-Pass!".into(),
                admin: true,
            },
            Account {
                name: "fleetuser".into(),
                password: "Us3r-Pass!".into(),
                admin: false,
            },
        ]
    }

    fn context<'a>(
        accounts: &'a [Account],
        channel_binding: Option<&'a [u8]>,
        cbt_level: CbtLevel,
    ) -> AcceptorContext<'a> {
        AcceptorContext {
            accounts,
            host_name: "srv0001.fleet.test",
            computer_name: "SRV0001",
            channel_binding,
            cbt_level,
            keytab: None,
            credssp: None,
        }
    }

    /// Runs the client against a fresh acceptor; returns the acceptor when it completed.
    fn handshake(
        mechanism: Mechanism,
        user: &str,
        password: &str,
        server_cb: Option<&[u8]>,
        level: CbtLevel,
    ) -> Result<(ClientContext, Acceptor), String> {
        let credential = Credential::new(user, password).unwrap();
        let mut client = ClientContext::new(mechanism, &credential, "srv1").unwrap();
        let first = client.step(None).unwrap().token.unwrap();
        let accounts = accounts();
        let context = context(&accounts, server_cb, level);
        let mut server =
            Acceptor::new(HttpScheme::Negotiate, &first, &context).map_err(|e| e.to_string())?;
        let mut token = first;
        for _ in 0..4 {
            match server.step(&token).map_err(|e| e.to_string())? {
                AcceptStep::Continue(reply) => {
                    let step = client.step(Some(&reply)).map_err(|e| e.to_string())?;
                    token = step.token.ok_or("client stalled")?;
                }
                AcceptStep::Complete { user, token } => {
                    assert_eq!(user, account_part(user.as_str()));
                    if let Some(final_token) = token {
                        client.step(Some(&final_token)).map_err(|e| e.to_string())?;
                    }
                    assert!(client.is_complete());
                    return Ok((client, server));
                }
            }
        }
        Err("too many legs".into())
    }

    #[test]
    fn ntlm_and_spnego_authenticate_and_seal_both_ways() {
        for mechanism in [Mechanism::Ntlm, Mechanism::Negotiate] {
            for user in [
                "fleetadmin",
                "FLEET\\fleetadmin",
                ".\\FleetAdmin",
                "fleetadmin@fleet.test",
            ] {
                let (mut client, mut server) =
                    handshake(mechanism, user, "Adm1n-Pass!", None, CbtLevel::Relaxed)
                        .unwrap_or_else(|e| panic!("{mechanism} {user}: {e}"));
                assert_eq!(server.user(), Some("fleetadmin"));
                for body in [&b"<a/>"[..], &[7u8; 70_000][..]] {
                    let sealed = encryption::encrypt(&mut client, Protocol::Spnego, body).unwrap();
                    let plain =
                        encryption::decrypt(&mut server, &sealed.content_type, &sealed.body)
                            .unwrap();
                    assert_eq!(plain, body);
                    let reply = encryption::encrypt(&mut server, Protocol::Spnego, body).unwrap();
                    let plain =
                        encryption::decrypt(&mut client, &reply.content_type, &reply.body).unwrap();
                    assert_eq!(plain, body);
                }
            }
        }
    }

    #[test]
    fn wrong_password_and_unknown_user_are_refused() {
        for mechanism in [Mechanism::Ntlm, Mechanism::Negotiate] {
            for (user, password) in [
                ("fleetadmin", "wrong"),
                ("fleetadmin", "Us3r-Pass!"),
                ("nobody", "Adm1n-Pass!"),
                ("FLEET\\intruder", "Adm1n-Pass!"),
            ] {
                assert!(
                    handshake(mechanism, user, password, None, CbtLevel::Relaxed).is_err(),
                    "{mechanism} {user} {password} accepted"
                );
            }
        }
    }

    #[test]
    fn clients_without_bindings_follow_the_hardening_level() {
        let binding = b"tls-server-end-point:0123456789abcdef0123456789abcdef";
        for mechanism in [Mechanism::Ntlm, Mechanism::Negotiate] {
            for level in [CbtLevel::None, CbtLevel::Relaxed] {
                handshake(mechanism, "fleetadmin", "Adm1n-Pass!", Some(binding), level)
                    .unwrap_or_else(|e| panic!("{mechanism} {level:?}: {e}"));
            }
            let error = handshake(
                mechanism,
                "fleetadmin",
                "Adm1n-Pass!",
                Some(binding),
                CbtLevel::Strict,
            )
            .unwrap_err();
            assert!(error.contains("channel binding required"), "{error}");
            // Over HTTP there is no channel to bind: Strict does not apply.
            handshake(
                mechanism,
                "fleetadmin",
                "Adm1n-Pass!",
                None,
                CbtLevel::Strict,
            )
            .unwrap();
        }
    }

    #[test]
    fn binding_claims_are_read_from_av_pairs() {
        // A hand-made AUTHENTICATE message: NtChallengeResponse at offset 64.
        let message = |pairs: &[(u16, &[u8])]| {
            let mut response = vec![0u8; 44];
            for (id, value) in pairs {
                response.extend_from_slice(&id.to_le_bytes());
                response.extend_from_slice(&(value.len() as u16).to_le_bytes());
                response.extend_from_slice(value);
            }
            response.extend_from_slice(&[0, 0, 0, 0]);
            let mut m = b"NTLMSSP\0\x03\0\0\0".to_vec();
            m.resize(64, 0);
            m[20..22].copy_from_slice(&(response.len() as u16).to_le_bytes());
            m[24..28].copy_from_slice(&64u32.to_le_bytes());
            m.extend_from_slice(&response);
            m
        };
        let hash = [7u8; 16];
        assert_eq!(
            binding_claim(&message(&[(2, b"D\0"), (10, &hash)])),
            BindingClaim::Present
        );
        assert_eq!(
            binding_claim(&message(&[(10, &[0; 16])])),
            BindingClaim::Absent
        );
        assert_eq!(
            binding_claim(&message(&[(2, b"D\0")])),
            BindingClaim::Absent
        );
        // Inside SPNEGO's DER the message is found as is.
        let mut wrapped = vec![0xa1, 0x82, 0x01, 0x00];
        wrapped.extend_from_slice(&message(&[(10, &hash)]));
        assert_eq!(binding_claim(&wrapped), BindingClaim::Present);
        assert_eq!(
            binding_claim(b"NTLMSSP\0\x01\0\0\0"),
            BindingClaim::NoAuthenticate
        );
        // Lying lengths and offsets are absent claims, never panics.
        let mut lying = message(&[(10, &hash)]);
        lying[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(binding_claim(&lying), BindingClaim::Absent);
        let mut lying = message(&[(10, &hash)]);
        let at = 64 + 44 + 2;
        lying[at..at + 2].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(binding_claim(&lying), BindingClaim::Absent);
        assert_eq!(binding_claim(&lying[..70]), BindingClaim::Absent);
    }

    #[test]
    fn kerberos_and_credssp_need_their_set_up() {
        let accounts = accounts();
        let context = context(&accounts, None, CbtLevel::Relaxed);
        assert!(matches!(
            Acceptor::new(HttpScheme::Kerberos, &[0x60, 0x01], &context),
            Err(AcceptError::NoKeytab)
        ));
        assert!(matches!(
            Acceptor::new(HttpScheme::CredSsp, &[0x16, 0x03], &context),
            Err(AcceptError::NoCredSsp)
        ));
        assert_eq!(HttpScheme::parse("credssp"), Some(HttpScheme::CredSsp));
        assert_eq!(HttpScheme::parse("Basic"), None);
        assert_eq!(AcceptorKind::Kerberos.protocol(), Protocol::Kerberos);
        assert_eq!(
            AcceptorKind::SpnegoKerberos.http_scheme(),
            HttpScheme::Negotiate
        );
        // An SPNEGO token listing Kerberos, from the engine's Negotiate client with no KDC
        // (NTLM only), does not.
        let credential = Credential::new("fleetadmin", "x").unwrap();
        let mut client = ClientContext::new(Mechanism::Negotiate, &credential, "srv1").unwrap();
        let first = client.step(None).unwrap().token.unwrap();
        assert!(!offers_kerberos(&first));
        let mut with_krb = first.clone();
        with_krb.extend_from_slice(&[
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02,
        ]);
        assert!(offers_kerberos(&with_krb));
    }

    #[test]
    fn basic_credentials() {
        let encode = |s: &str| BASE64.encode(s);
        assert_eq!(
            check_basic(&encode("fleetadmin:Adm1n-Pass!"), &accounts()).as_deref(),
            Some("fleetadmin")
        );
        assert_eq!(
            check_basic(&encode("FLEET\\FLEETUSER:Us3r-Pass!"), &accounts()).as_deref(),
            Some("fleetuser")
        );
        for bad in [
            encode("fleetadmin:wrong"),
            encode("fleetadmin"),
            encode("nobody:Adm1n-Pass!"),
            "!!!".to_owned(),
        ] {
            assert_eq!(check_basic(&bad, &accounts()), None, "{bad}");
        }
    }

    #[test]
    fn first_tokens_pick_the_acceptor() {
        assert_eq!(
            AcceptorKind::for_first_token(b"NTLMSSP\0\x01\0\0\0"),
            Some(AcceptorKind::Ntlm)
        );
        assert_eq!(
            AcceptorKind::for_first_token(&[0x60, 0x30]),
            Some(AcceptorKind::Spnego)
        );
        assert_eq!(AcceptorKind::for_first_token(b"garbage"), None);
        assert!(matches!(
            Acceptor::new(
                HttpScheme::Negotiate,
                b"garbage",
                &context(&accounts(), None, CbtLevel::Relaxed)
            ),
            Err(AcceptError::UnknownMechanism)
        ));
        // Hostile tokens are errors, not panics.
        for token in [
            &b"NTLMSSP\0"[..],
            b"NTLMSSP\0\x01\0\0\0\xff\xff",
            &[0x60, 0x84, 0xff],
        ] {
            let accounts = accounts();
            let context = context(&accounts, None, CbtLevel::Relaxed);
            if let Ok(mut acceptor) = Acceptor::new(HttpScheme::Negotiate, token, &context) {
                assert!(acceptor.step(token).is_err());
            }
        }
    }
}
