//! Client security contexts for WinRM over HTTP: NTLM and Negotiate (SPNEGO) over sspi.
//!
//! A [`ClientContext`] authenticates one TCP connection (MS-WSMV 2.2.9.1.1.1: NTLM and
//! SPNEGO are connection-oriented) and then seals the SOAP bodies sent on it, as a
//! [`MessageSealer`] for `psfleet_core::encryption`.
//!
//! Both mechanisms travel under the HTTP `Negotiate` scheme: WinRM never offers an `NTLM`
//! scheme, and accepts a raw NTLMSSP token under `Negotiate` (wire-facts section 3).
//! [`Mechanism::Negotiate`] wraps NTLM in SPNEGO (RFC 4178) the way Windows clients do;
//! Kerberos inside SPNEGO comes later, so for now the SPNEGO mechanism list offers NTLM
//! only, and sspi is never asked to find a KDC.

use std::fmt;

use psfleet_core::encryption::{MessageSealer, Protocol, Sealed, Unsealed};
use sspi::{
    AuthIdentity, BufferType, ClientRequestFlags, CredentialUse, Credentials, CredentialsBuffers,
    DataRepresentation, EncryptionFlags, Negotiate, NegotiateConfig, Ntlm, SecurityBuffer,
    SecurityBufferRef, SecurityStatus, Sspi, SspiImpl, Username,
};

/// The length of an NTLM message signature: the header of every NTLM-sealed WinRM block
/// (MS-NLMP 2.2.2.9.1; MS-WSMV 2.2.9.1.1.2.2).
pub const NTLM_SIGNATURE_LEN: usize = 16;

/// Longest channel-binding application data accepted: `tls-server-end-point:` plus a
/// SHA-512 hash is 85 bytes; anything near this bound is not a channel binding.
pub const MAX_CHANNEL_BINDINGS_LEN: usize = 4_096;

/// Longest security token accepted from a peer. Windows caps tokens at 48,000 bytes
/// (`cbMaxToken` of the Negotiate package); an NTLM CHALLENGE is a few hundred.
pub const MAX_TOKEN_LEN: usize = 48_000;

/// The client authentication mechanism of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mechanism {
    /// Raw NTLMSSP tokens (MS-NLMP), sent under the HTTP `Negotiate` scheme (pywinrm's
    /// and pypsrp's `ntlm` auth do the same).
    Ntlm,
    /// SPNEGO (RFC 4178, MS-SPNG) carrying NTLM, as Windows clients send it.
    Negotiate,
}

impl Mechanism {
    /// The HTTP authentication scheme the tokens travel under (`Authorization:` and
    /// `WWW-Authenticate:`).
    pub const fn http_scheme(self) -> &'static str {
        match self {
            Self::Ntlm | Self::Negotiate => "Negotiate",
        }
    }

    /// The session-encryption protocol of bodies sealed under this mechanism
    /// (MS-WSMV 2.2.9.1.1: the `Negotiate` scheme seals as HTTP-SPNEGO-session-encrypted).
    pub const fn protocol(self) -> Protocol {
        match self {
            Self::Ntlm | Self::Negotiate => Protocol::Spnego,
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ntlm => "NTLM",
            Self::Negotiate => "Negotiate",
        })
    }
}

/// A user name and password. `Debug` never prints the password, and the password is
/// zeroed when the credential is dropped (it lives in an `sspi::Secret`).
#[derive(Clone)]
pub struct Credential {
    user: Username,
    password: sspi::Secret<String>,
}

impl Credential {
    /// A credential for `user` in one of the forms Windows accepts: `user`,
    /// `DOMAIN\user` (down-level logon name) or `user@domain` (UPN).
    pub fn new(user: &str, password: impl Into<String>) -> Result<Self, AuthError> {
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
        Ok(Self {
            user: parsed,
            password: sspi::Secret::new(password.into()),
        })
    }

    /// The user name as given (`user`, `DOMAIN\user` or `user@domain`).
    pub fn user(&self) -> &str {
        self.user.inner()
    }

    /// The password, for HTTP Basic (`engine::http` builds that header itself).
    pub(crate) fn password(&self) -> &str {
        self.password.as_ref()
    }

    fn identity(&self) -> AuthIdentity {
        AuthIdentity {
            username: self.user.clone(),
            password: self.password.clone(),
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("user", &self.user.inner())
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What one [`ClientContext::step`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The token to send in `Authorization: Negotiate <base64>`, if any.
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
    /// A sealed block's signature is not [`NTLM_SIGNATURE_LEN`] bytes.
    #[error("sealed block header is {0} bytes, NTLM signatures are 16")]
    BadSignatureLength(usize),
}

/// A client security context for one connection: drives the token exchange, then seals
/// and unseals WinRM messages with the negotiated session keys.
///
/// Sequence numbers advance with every sealed or unsealed message (MS-NLMP 3.4.4), so
/// messages must be sealed and unsealed in wire order; after any unseal error the
/// context is out of step with its peer and the connection must be dropped.
pub struct ClientContext {
    mechanism: Mechanism,
    inner: Inner,
    /// `HTTP/<host>`: the SPN the target is named by.
    target: String,
    /// The SEC_CHANNEL_BINDINGS structure handed to sspi with every server token, when
    /// the connection is bound to a TLS channel.
    channel_bindings: Option<Vec<u8>>,
    state: State,
}

impl fmt::Debug for ClientContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientContext")
            .field("mechanism", &self.mechanism)
            .field("target", &self.target)
            .field("channel_bound", &self.channel_bindings.is_some())
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl ClientContext {
    /// A context that will authenticate `credential` to the WinRM service on `host`
    /// (the SPN `HTTP/<host>`; an IP address host rules out Kerberos, as on Windows),
    /// without channel binding (plain HTTP).
    pub fn new(
        mechanism: Mechanism,
        credential: &Credential,
        host: &str,
    ) -> Result<Self, AuthError> {
        Self::with_channel_bindings(mechanism, credential, host, None)
    }

    /// Like [`ClientContext::new`], bound to a TLS channel when `channel_bindings` holds
    /// its application data: `b"tls-server-end-point:"` followed by the server
    /// certificate hash (RFC 5929 4.1; wire-facts section 3). The data is wrapped in a
    /// SEC_CHANNEL_BINDINGS structure ([`sec_channel_bindings`]) and given to sspi as a
    /// `ChannelBindings` buffer, so NTLM puts its MD5 into the `MsvAvChannelBindings` AV
    /// pair of the AUTHENTICATE message (MS-NLMP 2.2.2.1) and Kerberos into the
    /// authenticator checksum (RFC 4121 4.1.1.2).
    pub fn with_channel_bindings(
        mechanism: Mechanism,
        credential: &Credential,
        host: &str,
        channel_bindings: Option<Vec<u8>>,
    ) -> Result<Self, AuthError> {
        let channel_bindings = channel_bindings
            .map(|data| sec_channel_bindings(&data))
            .transpose()?;
        let sspi_err = sspi_error(mechanism, "acquire credentials");
        let identity = credential.identity();
        let inner = match mechanism {
            Mechanism::Ntlm => {
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
            Mechanism::Negotiate => {
                // "ntlm" alone: no Kerberos (and so no KDC discovery through krb5.conf or
                // DNS) and no PKU2U until the engine supplies a KDC network client.
                let config = NegotiateConfig::new(
                    Box::new(sspi::ntlm::NtlmConfig::default()),
                    Some("ntlm".to_owned()),
                    String::new(),
                );
                let mut negotiate = Negotiate::new_client(config).map_err(sspi_err)?;
                let auth_data = Credentials::AuthIdentity(identity);
                let handle = negotiate
                    .acquire_credentials_handle()
                    .with_credential_use(CredentialUse::Outbound)
                    .with_auth_data(&auth_data)
                    .execute(&mut negotiate)
                    .map_err(sspi_err)?
                    .credentials_handle;
                Inner::Negotiate {
                    context: Box::new(negotiate),
                    handle,
                }
            }
        };
        Ok(Self {
            mechanism,
            inner,
            target: format!("HTTP/{host}"),
            channel_bindings,
            state: State::Initial,
        })
    }

    /// The mechanism of this context.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
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
    /// `WWW-Authenticate: Negotiate <base64>` (`None` on the first call), the result the
    /// token for the next `Authorization: Negotiate <base64>` header, if any.
    ///
    /// NTLM completes when it produces the AUTHENTICATE message. SPNEGO completes one
    /// step later, on the server's final token (negState accept-completed with its
    /// mechListMIC, carried in the 200 answer): that step verifies the MIC and so keeps
    /// the receive sequence number in step with the server's (MS-SPNG 3.1.5.1).
    pub fn step(&mut self, input: Option<&[u8]>) -> Result<Step, AuthError> {
        match (self.state, input) {
            (State::Complete, _) => {
                return Err(AuthError::OutOfSequence(
                    "the context is already established",
                ));
            }
            (State::Initial, Some(_)) => {
                return Err(AuthError::OutOfSequence(
                    "a server token arrived before the client's first token",
                ));
            }
            (State::InProgress, None) => {
                return Err(AuthError::OutOfSequence(
                    "the server sent no token to continue the exchange",
                ));
            }
            (_, Some(token)) if token.len() > MAX_TOKEN_LEN => {
                return Err(AuthError::TokenTooLarge(token.len()));
            }
            _ => {}
        }
        let mechanism = self.mechanism;
        let bindings = self.channel_bindings.as_deref();
        let (status, token) = match &mut self.inner {
            Inner::Ntlm { context, handle } => {
                initialize(context.as_mut(), handle, &self.target, input, bindings)
            }
            Inner::Negotiate { context, handle } => {
                initialize(context.as_mut(), handle, &self.target, input, bindings)
            }
        }
        .map_err(sspi_error(mechanism, "initialize security context"))?;
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

    /// Seals one message: `header` = the 16-byte NTLM signature, `payload` = the
    /// RC4-sealed bytes (sspi `EncryptMessage` with a Token and a Data buffer, the SSPI
    /// call Windows' WinRM client makes, MS-WSMV 2.2.9.1.1.2.2).
    fn seal(&mut self, plaintext: &[u8]) -> Result<Sealed, AuthError> {
        if !self.is_complete() {
            return Err(AuthError::NotEstablished);
        }
        let on_error = sspi_error(self.mechanism, "encrypt message");
        let mut header = vec![0u8; NTLM_SIGNATURE_LEN];
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
        if header.len() != NTLM_SIGNATURE_LEN {
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
    },
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
        }
    }

    fn decrypt(&mut self, buffers: &mut [SecurityBufferRef<'_>]) -> sspi::Result<()> {
        match self {
            Self::Ntlm { context, .. } => context.decrypt_message(buffers).map(drop),
            Self::Negotiate { context, .. } => context.decrypt_message(buffers).map(drop),
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

/// Runs one `InitializeSecurityContext` call and returns its status and output token.
fn initialize<S>(
    context: &mut S,
    handle: &mut S::CredentialsHandle,
    target: &str,
    input: Option<&[u8]>,
    channel_bindings: Option<&[u8]>,
) -> sspi::Result<(SecurityStatus, Vec<u8>)>
where
    S: Sspi + SspiImpl,
{
    // Sealing requires confidentiality; integrity is implied but requested explicitly as
    // pypsrp does (`ContextReq.integrity | confidentiality`).
    let flags = ClientRequestFlags::CONFIDENTIALITY
        | ClientRequestFlags::INTEGRITY
        | ClientRequestFlags::ALLOCATE_MEMORY;
    let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
    // The channel bindings ride with every server token: sspi's NTLM reads them on the
    // CHALLENGE leg, where the AUTHENTICATE message is built.
    let mut input_buffers = input.map(|token| {
        let mut buffers = vec![SecurityBuffer::new(token.to_vec(), BufferType::Token)];
        if let Some(bindings) = channel_bindings {
            buffers.push(SecurityBuffer::new(
                bindings.to_vec(),
                BufferType::ChannelBindings,
            ));
        }
        buffers
    });
    let status = {
        let mut builder = context
            .initialize_security_context()
            .with_credentials_handle(handle)
            .with_context_requirements(flags)
            .with_target_data_representation(DataRepresentation::Native)
            .with_target_name(target)
            .with_output(&mut output);
        if let Some(buffers) = input_buffers.as_mut() {
            builder = builder.with_input(buffers);
        }
        context
            .initialize_security_context_impl(&mut builder)?
            .resolve_to_result()?
            .status
    };
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
                    server.custom_set_auth_identities(vec![credential().identity()])
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
                    Negotiate::new_server(config, vec![credential().identity()]).unwrap();
                run_acceptor(client, &mut server, bindings, |_| Ok(()))
            }
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
    }
}
