//! The simulator's Kerberos acceptor: what a domain-joined Windows host's WinRM service
//! does with an AP-REQ, over sspi, with the service keys taken from an MIT keytab.
//!
//! Two shapes, as WinRM offers them (MS-WSMV 2.2.9.1.2; wire-facts 1.2):
//! - [`Scheme::Kerberos`]: raw RFC 4121 tokens under the `Kerberos` HTTP scheme;
//! - [`Scheme::Negotiate`]: SPNEGO choosing Kerberos when the client offers it, NTLM (with
//!   the local accounts) when it does not.
//!
//! An acceptor serves one connection (connection-bound authentication, MS-WSMV
//! 2.2.9.1.1.1): [`KerberosAcceptor::accept`] takes each client token and answers with
//! the token for `WWW-Authenticate`; once complete, [`KerberosAcceptor::user`] names the
//! client and the acceptor seals and unseals bodies as a [`MessageSealer`].
//!
//! Gap: sspi's Kerberos acceptor does not compare the channel-binding hash in the
//! authenticator checksum (RFC 4121 4.1.1.2) with the channel's, so a Kerberos
//! channel-binding mismatch is not detected here (NTLM's is, inside SPNEGO).

use std::fmt;
use std::path::Path;
use std::time::Duration;

use psfleet_core::encryption::{MessageSealer, Sealed, Unsealed};
use sspi::kerberos::ServerProperties;
use sspi::{
    AuthIdentity, BufferType, CredentialUse, DataRepresentation, EncryptionFlags, Kerberos,
    KerberosConfig, KerberosServerConfig, Negotiate, NegotiateConfig, SecurityBuffer,
    SecurityBufferRef, SecurityStatus, ServerRequestFlags, Sspi, SspiImpl, Username,
};

/// The MIT keytab format version this reader understands (0x0502: big-endian fields,
/// name types present; every MIT release since 1.x writes it).
const KEYTAB_V2: [u8; 2] = [0x05, 0x02];

/// Largest keytab read: one entry is about 100 bytes; a fleet of 10,000 services fits.
const MAX_KEYTAB_LEN: u64 = 16 * 1024 * 1024;

/// aes256-cts-hmac-sha1-96 (RFC 3962), the enctype `scripts/kdc` issues and sspi asks
/// for first.
pub const AES256_CTS_HMAC_SHA1_96: u16 = 18;

/// Largest token accepted from a client (Windows' `cbMaxToken`, 48,000 bytes).
pub const MAX_TOKEN_LEN: usize = 48_000;

/// Clock skew tolerated between client and simulator (RFC 4120's customary 5 minutes).
const MAX_TIME_SKEW: Duration = Duration::from_secs(300);

/// One key of a keytab: a principal, its key version and type, and the key.
#[derive(Clone)]
pub struct ServiceKey {
    /// The principal's name components (`["HTTP", "web01.fleet.test"]`).
    pub components: Vec<String>,
    /// The realm (`FLEET.TEST`).
    pub realm: String,
    /// The key version number.
    pub kvno: u32,
    /// The encryption type (RFC 3961 numbers; 18 = aes256-cts-hmac-sha1-96).
    pub enctype: u16,
    key: sspi::Secret<Vec<u8>>,
}

impl ServiceKey {
    /// The principal written `comp/comp@REALM`.
    pub fn principal(&self) -> String {
        format!("{}@{}", self.components.join("/"), self.realm)
    }
}

impl fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceKey")
            .field("principal", &self.principal())
            .field("kvno", &self.kvno)
            .field("enctype", &self.enctype)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The service keys of an MIT keytab (`ktadd -k FILE`), as the KDC issued them.
#[derive(Debug, Clone, Default)]
pub struct Keytab {
    keys: Vec<ServiceKey>,
}

impl Keytab {
    /// Reads a keytab file.
    pub fn read(path: &Path) -> Result<Self, KeytabError> {
        use std::io::Read;
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_KEYTAB_LEN + 1).read_to_end(&mut bytes))
            .map_err(|source| KeytabError::Io {
                path: path.to_owned(),
                source,
            })?;
        if bytes.len() as u64 > MAX_KEYTAB_LEN {
            return Err(KeytabError::Malformed("the keytab is larger than 16 MiB"));
        }
        Self::parse(&bytes)
    }

    /// Parses the MIT keytab format: `05 02`, then entries of a signed 32-bit size (a
    /// negative size is a deleted entry, skipped) holding the principal (component
    /// count, realm, components, name type), timestamp, 8-bit kvno, key type and key,
    /// and optionally a 32-bit kvno that supersedes the 8-bit one.
    pub fn parse(bytes: &[u8]) -> Result<Self, KeytabError> {
        let mut reader = Reader(bytes);
        if reader.take(2)? != KEYTAB_V2 {
            return Err(KeytabError::Malformed("not an MIT keytab (version 0x0502)"));
        }
        let mut keys = Vec::new();
        while !reader.0.is_empty() {
            let size = i32::from_be_bytes(reader.array()?);
            let len = usize::try_from(size.unsigned_abs())
                .map_err(|_| KeytabError::Malformed("entry size"))?;
            let entry = reader.take(len)?;
            if size <= 0 {
                continue;
            }
            keys.push(parse_entry(entry)?);
        }
        Ok(Self { keys })
    }

    /// Every key, in file order.
    pub fn keys(&self) -> &[ServiceKey] {
        &self.keys
    }

    /// The newest aes256 key of `spn` (`class/host`, any realm, case-insensitive as
    /// Windows treats SPNs).
    pub fn key_for(&self, spn: &str) -> Option<&ServiceKey> {
        self.keys
            .iter()
            .filter(|k| k.enctype == AES256_CTS_HMAC_SHA1_96)
            .filter(|k| k.components.join("/").eq_ignore_ascii_case(spn))
            .max_by_key(|k| k.kvno)
    }
}

/// Why a keytab could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeytabError {
    /// The file could not be read.
    #[error("cannot read keytab {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a keytab this reader understands.
    #[error("malformed keytab: {0}")]
    Malformed(&'static str),
}

fn parse_entry(entry: &[u8]) -> Result<ServiceKey, KeytabError> {
    let mut r = Reader(entry);
    let count = u16::from_be_bytes(r.array()?);
    let realm = r.counted_string()?;
    let components = (0..count)
        .map(|_| r.counted_string())
        .collect::<Result<Vec<_>, _>>()?;
    let _name_type = u32::from_be_bytes(r.array()?);
    let _timestamp = u32::from_be_bytes(r.array()?);
    let kvno8 = r.array::<1>()?[0];
    let enctype = u16::from_be_bytes(r.array()?);
    let key_len = usize::from(u16::from_be_bytes(r.array()?));
    let key = r.take(key_len)?.to_vec();
    // A 32-bit kvno follows when at least four bytes remain (MIT writes it since 1.14).
    let kvno = match r.array::<4>() {
        Ok(bytes) if u32::from_be_bytes(bytes) != 0 => u32::from_be_bytes(bytes),
        _ => u32::from(kvno8),
    };
    Ok(ServiceKey {
        components,
        realm,
        kvno,
        enctype,
        key: sspi::Secret::new(key),
    })
}

/// A bounds-checked cursor over keytab bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], KeytabError> {
        if n > self.0.len() {
            return Err(KeytabError::Malformed("truncated entry"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], KeytabError> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn counted_string(&mut self) -> Result<String, KeytabError> {
        let len = usize::from(u16::from_be_bytes(self.array()?));
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| KeytabError::Malformed("non-UTF-8 name"))
    }
}

/// The HTTP scheme an acceptor serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Raw Kerberos under `Kerberos` (sealing: HTTP-Kerberos-session-encrypted).
    Kerberos,
    /// SPNEGO under `Negotiate`: Kerberos when offered, else NTLM against the accounts
    /// (sealing: HTTP-SPNEGO-session-encrypted).
    Negotiate,
}

/// What [`KerberosAcceptor::accept`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// More legs: send this token with a 401.
    Continue(Vec<u8>),
    /// Authenticated: send this token (the AP-REP, or SPNEGO's final token) with the
    /// 200, if there is one.
    Complete(Option<Vec<u8>>),
}

/// Why an acceptor refused a client (every one is a 401 on the wire).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// sspi refused the token: a ticket not for this service, a bad authenticator, a
    /// replay, clock skew, a wrong NTLM password, a channel-binding mismatch.
    #[error("{operation} failed: {source}")]
    Sspi {
        /// What was being done.
        operation: &'static str,
        /// sspi's error.
        #[source]
        source: sspi::Error,
    },
    /// No aes256 key for the host's SPN in the keytab.
    #[error("no aes256 key for {0} in the keytab")]
    NoServiceKey(String),
    /// A client token larger than [`MAX_TOKEN_LEN`].
    #[error("client token of {0} bytes exceeds the limit")]
    TokenTooLarge(usize),
    /// A token after the exchange completed.
    #[error("the exchange is already complete")]
    AlreadyComplete,
    /// Sealing or unsealing before the exchange completed.
    #[error("the security context is not established")]
    NotEstablished,
    /// A sealed block whose header is empty or absurdly long.
    #[error("sealed block header of {0} bytes")]
    BadHeader(usize),
}

/// A server-side Kerberos (or SPNEGO) context for one connection.
pub struct KerberosAcceptor {
    scheme: Scheme,
    inner: Inner,
    channel_bindings: Option<Vec<u8>>,
    complete: bool,
}

impl fmt::Debug for KerberosAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KerberosAcceptor")
            .field("scheme", &self.scheme)
            .field("channel_bound", &self.channel_bindings.is_some())
            .field("complete", &self.complete)
            .finish_non_exhaustive()
    }
}

enum Inner {
    Kerberos {
        context: Box<Kerberos>,
        handle: Option<sspi::CredentialsBuffers>,
    },
    Negotiate {
        context: Box<Negotiate>,
        handle: Option<sspi::CredentialsBuffers>,
    },
}

impl KerberosAcceptor {
    /// An acceptor for the WinRM service `HTTP/<host>` with its key from `keytab`.
    ///
    /// `accounts` are the `(user, password)` pairs NTLM checks when a Negotiate client
    /// offers no Kerberos (ignored for [`Scheme::Kerberos`]). `channel_bindings` is the
    /// TLS channel's application data over HTTPS (`tls-server-end-point:` + hash), given
    /// to sspi, which checks NTLM's binding against it.
    pub fn new(
        scheme: Scheme,
        keytab: &Keytab,
        host: &str,
        accounts: &[(&str, &str)],
        channel_bindings: Option<&[u8]>,
    ) -> Result<Self, AcceptError> {
        let spn = format!("HTTP/{host}");
        let key = keytab
            .key_for(&spn)
            .ok_or_else(|| AcceptError::NoServiceKey(spn.clone()))?;
        let sspi_err = |operation| move |source| AcceptError::Sspi { operation, source };
        let components: Vec<&str> = key.components.iter().map(String::as_str).collect();
        let properties =
            ServerProperties::new(&components, None, MAX_TIME_SKEW, Some(key.key.clone()))
                .map_err(sspi_err("configure"))?;
        // The KDC is never contacted by an acceptor (no user-to-user here).
        let config = KerberosConfig {
            kdc_resolution: sspi::KdcResolution::KdcUrl(None),
            client_computer_name: host.to_owned(),
        };
        let inner = match scheme {
            Scheme::Kerberos => {
                let mut context = Kerberos::new_server_from_config(config, properties)
                    .map_err(sspi_err("configure"))?;
                let handle = context
                    .acquire_credentials_handle()
                    .with_credential_use(CredentialUse::Inbound)
                    .execute(&mut context)
                    .map_err(sspi_err("acquire credentials"))?
                    .credentials_handle;
                Inner::Kerberos {
                    context: Box::new(context),
                    handle,
                }
            }
            Scheme::Negotiate => {
                let identities = accounts
                    .iter()
                    .map(|(user, password)| {
                        Ok(AuthIdentity {
                            username: Username::parse(user).map_err(|e| AcceptError::Sspi {
                                operation: "configure",
                                source: sspi::Error::new(
                                    sspi::ErrorKind::InvalidParameter,
                                    e.to_string(),
                                ),
                            })?,
                            password: (*password).to_owned().into(),
                        })
                    })
                    .collect::<Result<Vec<_>, AcceptError>>()?;
                let config = NegotiateConfig::new(
                    Box::new(KerberosServerConfig {
                        kerberos_config: config,
                        server_properties: properties,
                    }),
                    Some("kerberos,ntlm".to_owned()),
                    host.to_owned(),
                );
                let mut context =
                    Negotiate::new_server(config, identities).map_err(sspi_err("configure"))?;
                let handle = context
                    .acquire_credentials_handle()
                    .with_credential_use(CredentialUse::Inbound)
                    .execute(&mut context)
                    .map_err(sspi_err("acquire credentials"))?
                    .credentials_handle;
                Inner::Negotiate {
                    context: Box::new(context),
                    handle,
                }
            }
        };
        let channel_bindings = channel_bindings.map(sec_channel_bindings);
        Ok(Self {
            scheme,
            inner,
            channel_bindings,
            complete: false,
        })
    }

    /// The scheme served.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// True once the client is authenticated.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// True when the Negotiate exchange settled on Kerberos (always for the Kerberos
    /// scheme).
    pub fn is_kerberos(&self) -> bool {
        match &self.inner {
            Inner::Kerberos { .. } => true,
            Inner::Negotiate { context, .. } => context.negotiated_protocol().is_kerberos(),
        }
    }

    /// Takes one client token (from `Authorization: <scheme> <base64>`).
    pub fn accept(&mut self, token: &[u8]) -> Result<Accepted, AcceptError> {
        if self.complete {
            return Err(AcceptError::AlreadyComplete);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AcceptError::TokenTooLarge(token.len()));
        }
        let mut input = vec![SecurityBuffer::new(token.to_vec(), BufferType::Token)];
        if let Some(bindings) = &self.channel_bindings {
            input.push(SecurityBuffer::new(
                bindings.clone(),
                BufferType::ChannelBindings,
            ));
        }
        let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
        let status = match &mut self.inner {
            Inner::Kerberos { context, handle } => {
                accept(context.as_mut(), handle, &mut input, &mut output)
            }
            Inner::Negotiate { context, handle } => {
                accept(context.as_mut(), handle, &mut input, &mut output)
            }
        }
        .map_err(|source| AcceptError::Sspi {
            operation: "accept security context",
            source,
        })?;
        let token = output
            .into_iter()
            .next()
            .map(|b| b.buffer)
            .unwrap_or_default();
        match status {
            SecurityStatus::Ok => {
                self.complete = true;
                Ok(Accepted::Complete((!token.is_empty()).then_some(token)))
            }
            _ => Ok(Accepted::Continue(token)),
        }
    }

    /// The authenticated client (`fleetadmin@fleet.test` for Kerberos, the NTLM account
    /// name otherwise), once complete.
    pub fn user(&mut self) -> Option<String> {
        if !self.complete {
            return None;
        }
        let names = match &mut self.inner {
            Inner::Kerberos { context, .. } => context.query_context_names(),
            Inner::Negotiate { context, .. } => context.query_context_names(),
        };
        names.ok().map(|n| n.username.inner().to_owned())
    }
}

impl MessageSealer for KerberosAcceptor {
    type Error = AcceptError;

    /// Seals a reply: the SSPI token buffer (RFC 4121 wrap token header, or the NTLM
    /// signature after an NTLM fallback) and the sealed data (MS-WSMV 2.2.9.1.1.2.2).
    fn seal(&mut self, plaintext: &[u8]) -> Result<Sealed, AcceptError> {
        if !self.complete {
            return Err(AcceptError::NotEstablished);
        }
        let on_error = |source| AcceptError::Sspi {
            operation: "encrypt message",
            source,
        };
        let trailer = match &mut self.inner {
            Inner::Kerberos { context, .. } => context.query_context_sizes(),
            Inner::Negotiate { context, .. } => context.query_context_sizes(),
        }
        .map_err(on_error)?
        .security_trailer;
        let mut header = vec![0u8; usize::try_from(trailer).unwrap_or(0).min(1024)];
        let mut payload = plaintext.to_vec();
        let header_len = {
            let mut buffers = [
                SecurityBufferRef::token_buf(&mut header),
                SecurityBufferRef::data_buf(&mut payload),
            ];
            match &mut self.inner {
                Inner::Kerberos { context, .. } => {
                    context.encrypt_message(EncryptionFlags::empty(), &mut buffers)
                }
                Inner::Negotiate { context, .. } => {
                    context.encrypt_message(EncryptionFlags::empty(), &mut buffers)
                }
            }
            .map_err(on_error)?;
            buffers[0].data().len()
        };
        header.truncate(header_len);
        Ok(Sealed {
            header,
            payload,
            padding: 0,
        })
    }

    /// Verifies and decrypts a client block.
    fn unseal(&mut self, header: &[u8], payload: &[u8]) -> Result<Unsealed, AcceptError> {
        if !self.complete {
            return Err(AcceptError::NotEstablished);
        }
        if header.is_empty() || header.len() > 1024 {
            return Err(AcceptError::BadHeader(header.len()));
        }
        let mut signature = header.to_vec();
        let mut data = payload.to_vec();
        let plaintext = {
            let mut buffers = [
                SecurityBufferRef::token_buf(&mut signature),
                SecurityBufferRef::data_buf(&mut data),
            ];
            match &mut self.inner {
                Inner::Kerberos { context, .. } => context.decrypt_message(&mut buffers),
                Inner::Negotiate { context, .. } => context.decrypt_message(&mut buffers),
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

/// One `AcceptSecurityContext` call; `CompleteAuthToken` when sspi asks for it.
fn accept<S>(
    context: &mut S,
    handle: &mut S::CredentialsHandle,
    input: &mut [SecurityBuffer],
    output: &mut [SecurityBuffer],
) -> sspi::Result<SecurityStatus>
where
    S: Sspi + SspiImpl,
{
    let status = {
        let builder = context
            .accept_security_context()
            .with_credentials_handle(handle)
            .with_context_requirements(
                ServerRequestFlags::ALLOCATE_MEMORY
                    | ServerRequestFlags::CONFIDENTIALITY
                    | ServerRequestFlags::INTEGRITY
                    | ServerRequestFlags::MUTUAL_AUTH,
            )
            .with_target_data_representation(DataRepresentation::Native)
            .with_input(input)
            .with_output(output);
        context
            .accept_security_context_impl(builder)?
            .resolve_to_result()?
            .status
    };
    Ok(match status {
        SecurityStatus::CompleteNeeded => {
            context.complete_auth_token(output)?;
            SecurityStatus::Ok
        }
        SecurityStatus::CompleteAndContinue => {
            context.complete_auth_token(output)?;
            SecurityStatus::ContinueNeeded
        }
        other => other,
    })
}

/// The SEC_CHANNEL_BINDINGS structure around TLS application data (the layout the
/// engine's `sec_channel_bindings` writes; repeated here so the simulator does not depend
/// on the client it tests).
fn sec_channel_bindings(application_data: &[u8]) -> Vec<u8> {
    let len = u32::try_from(application_data.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(32 + application_data.len());
    for field in [0, 0, 0, 0, 0, 0, len, 32] {
        out.extend_from_slice(&u32::to_le_bytes(field));
    }
    out.extend_from_slice(application_data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keytab written by hand in the MIT layout: one aes256 entry with a 32-bit kvno,
    /// one deleted entry (negative size), one aes128 entry without the 32-bit kvno.
    fn keytab_bytes() -> Vec<u8> {
        fn counted(out: &mut Vec<u8>, s: &[u8]) {
            out.extend_from_slice(&(s.len() as u16).to_be_bytes());
            out.extend_from_slice(s);
        }
        fn entry(components: &[&str], enctype: u16, key: &[u8], kvno32: Option<u32>) -> Vec<u8> {
            let mut e = Vec::new();
            e.extend_from_slice(&(components.len() as u16).to_be_bytes());
            counted(&mut e, b"FLEET.TEST");
            for c in components {
                counted(&mut e, c.as_bytes());
            }
            e.extend_from_slice(&1u32.to_be_bytes()); // KRB5_NT_PRINCIPAL
            e.extend_from_slice(&0x6000_0000u32.to_be_bytes());
            e.push(3);
            e.extend_from_slice(&enctype.to_be_bytes());
            counted(&mut e, key);
            if let Some(v) = kvno32 {
                e.extend_from_slice(&v.to_be_bytes());
            }
            e
        }
        let mut out = vec![5, 2];
        for (size, body) in [
            (
                None,
                entry(&["HTTP", "web01.fleet.test"], 18, &[7; 32], Some(300)),
            ),
            (Some(-12i32), vec![0; 12]),
            (
                None,
                entry(&["HTTP", "web02.fleet.test"], 17, &[9; 16], None),
            ),
        ] {
            let size = size.unwrap_or(body.len() as i32);
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(&body);
        }
        out
    }

    #[test]
    fn keytab_entries_are_read() {
        let keytab = Keytab::parse(&keytab_bytes()).unwrap();
        assert_eq!(keytab.keys().len(), 2);
        let first = &keytab.keys()[0];
        assert_eq!(first.principal(), "HTTP/web01.fleet.test@FLEET.TEST");
        assert_eq!((first.kvno, first.enctype), (300, 18));
        let second = &keytab.keys()[1];
        assert_eq!((second.kvno, second.enctype), (3, 17));
        assert!(keytab.key_for("http/WEB01.fleet.test").is_some());
        // Only aes256 keys serve.
        assert!(keytab.key_for("HTTP/web02.fleet.test").is_none());
        assert!(!format!("{first:?}").contains("7, 7"));
    }

    #[test]
    fn damaged_keytabs_are_errors() {
        let good = keytab_bytes();
        assert!(matches!(
            Keytab::parse(&[5, 1]),
            Err(KeytabError::Malformed(_))
        ));
        for cut in 3..good.len() {
            // Every truncation inside an entry is refused, never a panic.
            if let Ok(k) = Keytab::parse(&good[..cut]) {
                assert!(k.keys().len() <= 2);
            }
        }
        let mut huge = vec![5, 2];
        huge.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(Keytab::parse(&huge).is_err());
    }

    #[test]
    fn acceptor_needs_the_host_key() {
        let keytab = Keytab::parse(&keytab_bytes()).unwrap();
        match KerberosAcceptor::new(Scheme::Kerberos, &keytab, "web09.fleet.test", &[], None) {
            Err(AcceptError::NoServiceKey(spn)) => assert_eq!(spn, "HTTP/web09.fleet.test"),
            other => panic!("{other:?}"),
        }
        let mut acceptor =
            KerberosAcceptor::new(Scheme::Kerberos, &keytab, "web01.fleet.test", &[], None)
                .unwrap();
        assert!(!acceptor.is_complete());
        assert!(acceptor.user().is_none());
        assert!(matches!(
            acceptor.seal(b"x"),
            Err(AcceptError::NotEstablished)
        ));
        // A token that is not an AP-REQ is refused.
        assert!(matches!(
            acceptor.accept(b"\x60\x03\x06\x01\x00"),
            Err(AcceptError::Sspi { .. })
        ));
    }
}
