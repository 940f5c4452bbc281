//! Kerberos ticket caches as a credential: the TGT `kinit` (or a Windows logon exported
//! with `klist`/a keytab tool) left in an MIT FILE cache, used instead of a password.
//!
//! sspi's Kerberos client can only start from a password, a keytab key or a smart card:
//! it always runs the AS exchange itself. A ticket cache holds what that exchange produces
//! (a TGT and its session key), so the client context is given a one-connection key of
//! the TGT's type (sspi's keytab credential) and its AS requests are answered here, in
//! process, by [`LocalAs`]: the pre-authentication request gets the KRB-ERROR every KDC
//! sends (RFC 4120 3.1.3), the second one an AS-REP that carries the cached TGT with its
//! session key sealed under that one-connection key. Everything after that is real: sspi
//! sends its TGS-REQ with the cached TGT to the realm's KDC, builds the AP-REQ and seals
//! messages, as after a password logon. No AS-REQ leaves the process, and no password or
//! user key exists anywhere.
//!
//! The cache is found as MIT tools find it: `$KRB5CCNAME` (`FILE:path` or a bare path),
//! else `/tmp/krb5cc_<uid>`. Only FILE caches (format versions 3 and 4, the ones MIT has
//! written since 1.0) are read; KEYRING, KCM, DIR and API caches are refused by name with
//! what to do. Format: MIT krb5 doc/formats/ccache_file_format.rst.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use picky_asn1::bit_string::BitString;
use picky_asn1::date::GeneralizedTime;
use picky_asn1::restricted_string::IA5String;
use picky_asn1::wrapper::{
    Asn1SequenceOf, ExplicitContextTag0, ExplicitContextTag1, ExplicitContextTag2,
    ExplicitContextTag3, ExplicitContextTag4, ExplicitContextTag5, ExplicitContextTag6,
    ExplicitContextTag7, ExplicitContextTag8, ExplicitContextTag9, ExplicitContextTag10,
    ExplicitContextTag12, IntegerAsn1, OctetStringAsn1, Optional,
};
use picky_krb::crypto::CipherSuite;
use picky_krb::data_types::{
    EncryptedData, EncryptionKey, EtypeInfo2Entry, KerberosFlags, KerberosStringAsn1, KerberosTime,
    LastReqInner, PaData, PrincipalName, Ticket,
};
use picky_krb::messages::{
    AsRep, AsReq, EncAsRepPart, EncKdcRepPart, KdcRep, KrbError, KrbErrorInner,
};
use sspi::Username;

/// The environment variable MIT Kerberos names the default cache by.
pub const KRB5CCNAME_ENV: &str = "KRB5CCNAME";

/// Largest cache file read. A TGT with a Windows PAC is a few KiB; a cache with many
/// service tickets stays well under this.
const MAX_CACHE_BYTES: u64 = 4 * 1024 * 1024;

/// Largest single field (a ticket, a name component) accepted.
const MAX_FIELD_BYTES: usize = 256 * 1024;

/// Most name components, addresses or authorization-data entries of one credential.
const MAX_ITEMS: u32 = 64;

/// Most credentials read from one cache.
const MAX_CREDENTIALS: usize = 4096;

/// The realm of configuration entries (not tickets) in a cache.
const CONFIG_REALM: &str = "X-CACHECONF:";

/// AS-REP enc-part key usage (RFC 4120 7.5.1: 3).
const KEY_USAGE_AS_REP_ENC_PART: i32 = 3;

/// KDC_ERR_PREAUTH_REQUIRED (RFC 4120 7.5.9).
const KDC_ERR_PREAUTH_REQUIRED: u32 = 25;

/// PA-ENC-TIMESTAMP and PA-ETYPE-INFO2 padata types (RFC 4120 7.5.2).
const PA_ENC_TIMESTAMP: u8 = 2;
const PA_ETYPE_INFO2: u8 = 19;

/// Why a ticket cache cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TicketCacheError {
    /// `$KRB5CCNAME` names a cache type psfleet cannot read.
    #[error(
        "{KRB5CCNAME_ENV}={value}: psfleet reads FILE ticket caches only, not {kind} caches; \
         run `KRB5CCNAME=FILE:/tmp/krb5cc_psfleet kinit user@REALM` (or copy the tickets \
         there with `kvno`/`kinit -c`) and set {KRB5CCNAME_ENV} to that file"
    )]
    UnsupportedType {
        /// The variable's value.
        value: String,
        /// The cache type (`KEYRING`, `KCM`, ...).
        kind: String,
    },
    /// The cache file cannot be read (missing: nobody ran `kinit`).
    #[error("{path}: cannot read the Kerberos ticket cache ({source}); run `kinit user@REALM` first", path = .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a ticket cache psfleet understands.
    #[error("{path}: not a usable Kerberos ticket cache: {what} (at byte {offset})", path = .path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Where the problem was found.
        offset: usize,
        /// What is wrong.
        what: String,
    },
    /// The cache holds no TGT of the client's realm.
    #[error(
        "{path}: the ticket cache of {principal} holds no ticket-granting ticket for realm \
         {realm}; run `kinit {principal}`",
        path = .path.display()
    )]
    NoTgt {
        /// The file.
        path: PathBuf,
        /// The cache's principal.
        principal: String,
        /// The realm.
        realm: String,
    },
    /// The TGT has expired (or is not valid yet).
    #[error(
        "{path}: the ticket-granting ticket of {principal} {when}; run `kinit {principal}` \
         (or `kinit -R` while it is renewable)",
        path = .path.display()
    )]
    Expired {
        /// The file.
        path: PathBuf,
        /// The cache's principal.
        principal: String,
        /// "expired at <unix time>" or "is not valid before <unix time>".
        when: String,
    },
    /// The TGT's session key is of a type sspi's Kerberos cannot use.
    #[error(
        "{path}: the ticket-granting ticket's session key is of encryption type {enctype}; \
         psfleet's Kerberos uses AES (17, 18): ask for AES tickets (krb5.conf \
         default_tkt_enctypes) and run kinit again",
        path = .path.display()
    )]
    Enctype {
        /// The file.
        path: PathBuf,
        /// The RFC 3961 encryption type number.
        enctype: u16,
    },
    /// The cache's principal is not a user principal psfleet can name to sspi.
    #[error("{path}: the ticket cache's principal {principal} cannot be used: {reason}", path = .path.display())]
    Principal {
        /// The file.
        path: PathBuf,
        /// The principal.
        principal: String,
        /// Why.
        reason: &'static str,
    },
}

/// A Kerberos principal as a cache stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The RFC 4120 6.2 name type (1 = NT-PRINCIPAL, 2 = NT-SRV-INST, ...).
    pub name_type: u32,
    /// The realm.
    pub realm: String,
    /// The name components (`["krbtgt", "REALM"]`, `["alice"]`).
    pub components: Vec<String>,
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.components.join("/"), self.realm)
    }
}

impl Principal {
    fn is_tgt_of(&self, realm: &str) -> bool {
        self.realm == realm
            && self.components.len() == 2
            && self.components[0] == "krbtgt"
            && self.components[1] == realm
    }
}

/// One credential of a cache: a ticket and what its holder needs to use it.
#[derive(Clone)]
pub struct CachedTicket {
    /// The client.
    pub client: Principal,
    /// The service the ticket is for (`krbtgt/REALM@REALM` for a TGT).
    pub server: Principal,
    /// The session key's encryption type.
    pub enctype: u16,
    key: sspi::Secret<Vec<u8>>,
    /// Unix times (seconds) of the ticket (RFC 4120 5.3).
    pub authtime: u32,
    /// Start of validity (0: authtime).
    pub starttime: u32,
    /// End of validity.
    pub endtime: u32,
    /// Renewable until (0: not renewable).
    pub renew_till: u32,
    /// The ticket flags, bit 0 (reserved) as the most significant bit, as MIT stores them
    /// and as the KerberosFlags BIT STRING carries them.
    pub flags: u32,
    /// The DER `Ticket` (opaque to the client: sealed with the service's key).
    pub ticket: Vec<u8>,
}

impl CachedTicket {
    /// The session key (a secret: its `Debug` is redacted; tests search logs for it).
    pub fn session_key(&self) -> &sspi::Secret<Vec<u8>> {
        &self.key
    }
}

impl fmt::Debug for CachedTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedTicket")
            .field("client", &self.client.to_string())
            .field("server", &self.server.to_string())
            .field("enctype", &self.enctype)
            .field("key", &"<redacted>")
            .field("endtime", &self.endtime)
            .finish_non_exhaustive()
    }
}

/// A parsed FILE ticket cache: its default principal and its tickets (configuration
/// entries skipped). `Debug` never shows a key.
#[derive(Debug, Clone)]
pub struct TicketCache {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    /// The default principal (whose tickets these are).
    pub principal: Principal,
    /// The tickets, in file order.
    pub tickets: Vec<CachedTicket>,
}

impl TicketCache {
    /// The cache MIT tools would use: `$KRB5CCNAME` (`FILE:path` or a path), else
    /// `/tmp/krb5cc_<uid>`.
    pub fn default_path(env: impl Fn(&str) -> Option<String>) -> Result<PathBuf, TicketCacheError> {
        match env(KRB5CCNAME_ENV).filter(|v| !v.is_empty()) {
            Some(value) => match value.split_once(':') {
                Some(("FILE", path)) => Ok(PathBuf::from(path)),
                // A residual with a colon but no known type prefix is a path (MIT treats a
                // name without a registered type as FILE).
                Some((kind, _)) if is_cache_type(kind) => Err(TicketCacheError::UnsupportedType {
                    kind: kind.to_owned(),
                    value,
                }),
                _ => Ok(PathBuf::from(value)),
            },
            None => Ok(PathBuf::from(format!("/tmp/krb5cc_{}", current_uid()))),
        }
    }

    /// Reads and parses the cache at `path`.
    pub fn read(path: &Path) -> Result<Self, TicketCacheError> {
        use std::io::Read as _;
        let read_error = |source| TicketCacheError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let mut bytes = Vec::new();
        file.take(MAX_CACHE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if bytes.len() as u64 > MAX_CACHE_BYTES {
            return Err(TicketCacheError::Malformed {
                path: path.to_owned(),
                offset: 0,
                what: format!("larger than {MAX_CACHE_BYTES} bytes"),
            });
        }
        Self::parse(path, &bytes)
    }

    /// Parses cache bytes; `path` only names the file in errors.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, TicketCacheError> {
        let mut reader = Reader {
            bytes,
            offset: 0,
            path,
        };
        let version = reader.u16()?;
        match version {
            0x0503 => {}
            0x0504 => {
                let header_len = usize::from(reader.u16()?);
                reader.take(header_len, "header")?;
            }
            0x0501 | 0x0502 => {
                return Err(reader.malformed(format!(
                    "format version {version:#06x} (native byte order, before MIT krb5 1.0); \
                     run kinit again with a current MIT or Heimdal"
                )));
            }
            other => {
                return Err(TicketCacheError::Malformed {
                    path: path.to_owned(),
                    offset: 0,
                    what: format!("format version {other:#06x} is not an MIT FILE cache"),
                });
            }
        }
        let principal = reader.principal()?;
        let mut tickets = Vec::new();
        while !reader.at_end() {
            if tickets.len() >= MAX_CREDENTIALS {
                return Err(reader.malformed(format!("more than {MAX_CREDENTIALS} credentials")));
            }
            let client = reader.principal()?;
            let server = reader.principal()?;
            let enctype = reader.u16()?;
            if version == 0x0503 {
                // Version 3 repeats the enctype (ccache_file_format.rst).
                reader.u16()?;
            }
            let key = reader.data("key")?.to_vec();
            let authtime = reader.u32()?;
            let starttime = reader.u32()?;
            let endtime = reader.u32()?;
            let renew_till = reader.u32()?;
            let _is_skey = reader.take(1, "is_skey")?;
            let flags = reader.u32()?;
            for what in ["addresses", "authdata"] {
                let count = reader.count(what)?;
                for _ in 0..count {
                    reader.u16()?;
                    reader.data(what)?;
                }
            }
            let ticket = reader.data("ticket")?.to_vec();
            reader.data("second ticket")?;
            if server.realm == CONFIG_REALM {
                continue;
            }
            tickets.push(CachedTicket {
                client,
                server,
                enctype,
                key: sspi::Secret::new(key),
                authtime,
                starttime,
                endtime,
                renew_till,
                flags,
                ticket,
            });
        }
        Ok(Self {
            path: path.to_owned(),
            principal,
            tickets,
        })
    }

    /// The user as sspi and MIT KDCs need it (`REALM\user`): a one-component principal.
    pub fn username(&self) -> Result<Username, TicketCacheError> {
        let refuse = |reason| TicketCacheError::Principal {
            path: self.path.clone(),
            principal: self.principal.to_string(),
            reason,
        };
        let [account] = self.principal.components.as_slice() else {
            return Err(refuse(
                "only user principals (one name component) log on to WinRM",
            ));
        };
        if self.principal.realm.is_empty() || account.is_empty() {
            return Err(refuse("its realm or name is empty"));
        }
        Username::new_down_level_logon_name(account, &self.principal.realm)
            .map_err(|_| refuse("it cannot be written as REALM\\user"))
    }

    /// Whether `user` names this cache's principal: the same account (case-insensitive,
    /// as Windows compares) and, when the user names a domain, the cache's realm or its
    /// first label (`FLEET\user` for `user@FLEET.TEST`).
    pub fn belongs_to(&self, user: &Username) -> bool {
        let [account] = self.principal.components.as_slice() else {
            return false;
        };
        if !user.account_name().eq_ignore_ascii_case(account) {
            return false;
        }
        let realm = &self.principal.realm;
        let domain = match user.parts() {
            sspi::UsernameParts::UserPrincipalName(parts) => Some(parts.suffix()),
            sspi::UsernameParts::DownLevelLogonName(parts) => parts.netbios_domain(),
        };
        domain.is_none_or(|domain| {
            domain.eq_ignore_ascii_case(realm)
                || realm
                    .split('.')
                    .next()
                    .is_some_and(|label| domain.eq_ignore_ascii_case(label))
        })
    }

    /// The TGT of the principal's own realm, valid at `now` (Unix seconds).
    pub fn tgt(&self, now: u64) -> Result<&CachedTicket, TicketCacheError> {
        let realm = &self.principal.realm;
        let tgt = self
            .tickets
            .iter()
            .rev()
            .find(|t| t.client == self.principal && t.server.is_tgt_of(realm))
            .ok_or_else(|| TicketCacheError::NoTgt {
                path: self.path.clone(),
                principal: self.principal.to_string(),
                realm: realm.clone(),
            })?;
        let expired = |when| TicketCacheError::Expired {
            path: self.path.clone(),
            principal: self.principal.to_string(),
            when,
        };
        if u64::from(tgt.endtime) <= now {
            return Err(expired(format!("expired at {} (Unix time)", tgt.endtime)));
        }
        if u64::from(tgt.starttime) > now {
            return Err(expired(format!(
                "is not valid before {} (Unix time)",
                tgt.starttime
            )));
        }
        cipher_suite(tgt.enctype).ok_or_else(|| TicketCacheError::Enctype {
            path: self.path.clone(),
            enctype: tgt.enctype,
        })?;
        Ok(tgt)
    }
}

/// The cache types MIT knows besides FILE (krb5 ccselect/ccdefault).
fn is_cache_type(kind: &str) -> bool {
    matches!(
        kind,
        "KEYRING" | "KCM" | "DIR" | "API" | "MEMORY" | "MSLSA" | "KCMAPI"
    )
}

#[allow(unsafe_code)]
fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and always succeeds (POSIX.1-2017).
    unsafe { libc::getuid() }
}

/// The AES suites sspi's Kerberos implements (RFC 3962: 17 and 18).
fn cipher_suite(enctype: u16) -> Option<CipherSuite> {
    match enctype {
        17 => Some(CipherSuite::Aes128CtsHmacSha196),
        18 => Some(CipherSuite::Aes256CtsHmacSha196),
        _ => None,
    }
}

/// A bounded big-endian reader over the cache bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn malformed(&self, what: String) -> TicketCacheError {
        TicketCacheError::Malformed {
            path: self.path.to_owned(),
            offset: self.offset,
            what,
        }
    }

    fn at_end(&self) -> bool {
        self.offset >= self.bytes.len()
    }

    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], TicketCacheError> {
        let end = self
            .offset
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| self.malformed(format!("truncated {what}")))?;
        let slice = &self.bytes[self.offset..end];
        self.offset = end;
        Ok(slice)
    }

    fn u16(&mut self) -> Result<u16, TicketCacheError> {
        let b = self.take(2, "number")?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, TicketCacheError> {
        let b = self.take(4, "number")?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn count(&mut self, what: &str) -> Result<u32, TicketCacheError> {
        let count = self.u32()?;
        if count > MAX_ITEMS {
            return Err(self.malformed(format!("{count} {what} (at most {MAX_ITEMS})")));
        }
        Ok(count)
    }

    fn data(&mut self, what: &str) -> Result<&'a [u8], TicketCacheError> {
        let len = usize::try_from(self.u32()?).unwrap_or(usize::MAX);
        if len > MAX_FIELD_BYTES {
            return Err(self.malformed(format!("{what} of {len} bytes")));
        }
        self.take(len, what)
    }

    fn text(&mut self, what: &str) -> Result<String, TicketCacheError> {
        let bytes = self.data(what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| self.malformed(format!("{what} is not UTF-8")))
    }

    fn principal(&mut self) -> Result<Principal, TicketCacheError> {
        let name_type = self.u32()?;
        let count = self.count("name components")?;
        let realm = self.text("realm")?;
        let components = (0..count)
            .map(|_| self.text("name component"))
            .collect::<Result<_, _>>()?;
        Ok(Principal {
            name_type,
            realm,
            components,
        })
    }
}

/// The in-process AS of a ticket-cache credential (see the module documentation): it
/// answers sspi's AS requests with the cached TGT, sealed under a key made for one
/// connection. TGS and every other request go to the real KDC.
pub struct LocalAs {
    tgt: CachedTicket,
    suite: CipherSuite,
    /// The one-connection "long-term" key sspi was given as a keytab key.
    client_key: sspi::Secret<Vec<u8>>,
}

impl fmt::Debug for LocalAs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalAs")
            .field("tgt", &self.tgt)
            .finish_non_exhaustive()
    }
}

impl LocalAs {
    /// An AS for the cache's TGT valid at `now` (Unix seconds), and the keytab identity
    /// to give sspi with it.
    pub fn new(
        cache: &TicketCache,
        now: u64,
    ) -> Result<(Arc<Self>, sspi::KeytabIdentity), TicketCacheError> {
        let tgt = cache.tgt(now)?.clone();
        let principal = cache.username()?;
        let suite = cipher_suite(tgt.enctype).ok_or_else(|| TicketCacheError::Enctype {
            path: cache.path.clone(),
            enctype: tgt.enctype,
        })?;
        let mut key = vec![0u8; tgt.key.as_ref().len().max(16)];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key).map_err(
            |_| TicketCacheError::Malformed {
                path: cache.path.clone(),
                offset: 0,
                what: "the system random source failed".to_owned(),
            },
        )?;
        let identity = sspi::KeytabIdentity {
            principal,
            key: sspi::Secret::new(key.clone()),
            key_enctype: suite.clone(),
        };
        Ok((
            Arc::new(Self {
                tgt,
                suite,
                client_key: sspi::Secret::new(key),
            }),
            identity,
        ))
    }

    /// The framed answer (RFC 4120 7.2.2: 4-byte length, then DER) to a framed KDC
    /// request, when it is an AS-REQ; `None` for anything else (it goes to the KDC).
    pub fn answer(&self, framed: &[u8]) -> Option<sspi::Result<Vec<u8>>> {
        let der = framed.get(4..)?;
        // An AS-REQ is [APPLICATION 10]. picky-asn1-der adds lengths unchecked (a length
        // near 2^64 overflows it), so the whole tree is checked first.
        if der.first() != Some(&0x6a) || !psfleet_core::der::is_well_formed(der) {
            return None;
        }
        let request: AsReq = picky_asn1_der::from_bytes(der).ok()?;
        Some(self.reply(&request).map(frame))
    }

    fn reply(&self, request: &AsReq) -> sspi::Result<Vec<u8>> {
        let body = &request.0.req_body.0;
        let asked_for = body.cname.0.as_ref().map(|name| names(&name.0));
        if asked_for.as_deref() != Some(self.tgt.client.components.as_slice()) {
            return Err(internal(format!(
                "the AS request names {:?}, the ticket cache holds tickets for {}",
                asked_for.unwrap_or_default(),
                self.tgt.client
            )));
        }
        let preauthenticated = request.0.padata.0.as_ref().is_some_and(|padata| {
            padata
                .0
                .0
                .iter()
                .any(|pa| pa.padata_type.0.0.as_slice() == [PA_ENC_TIMESTAMP])
        });
        let encode = |what: &str, result: Result<Vec<u8>, picky_asn1_der::Asn1DerError>| {
            result.map_err(|e| internal(format!("encoding the {what}: {e}")))
        };
        if !preauthenticated {
            let error = self.preauth_required()?;
            return encode("KRB-ERROR", picky_asn1_der::to_vec(&error));
        }
        let part = EncAsRepPart::from(self.enc_part(body.nonce.0.clone())?);
        let plain = encode("AS-REP part", picky_asn1_der::to_vec(&part))?;
        let sealed = self
            .suite
            .cipher()
            .encrypt(self.client_key.as_ref(), KEY_USAGE_AS_REP_ENC_PART, &plain)
            .map_err(|e| internal(format!("sealing the AS-REP part: {e:?}")))?;
        let ticket: Ticket = picky_asn1_der::from_bytes(&self.tgt.ticket)
            .map_err(|e| internal(format!("the cached TGT is not a Ticket: {e}")))?;
        let reply = AsRep::from(KdcRep {
            pvno: ExplicitContextTag0::from(IntegerAsn1::from(vec![5])),
            msg_type: ExplicitContextTag1::from(IntegerAsn1::from(vec![11])),
            padata: Optional::from(Some(ExplicitContextTag2::from(Asn1SequenceOf::from(vec![
                self.etype_info2()?,
            ])))),
            crealm: ExplicitContextTag3::from(kerberos_string(&self.tgt.client.realm)?),
            cname: ExplicitContextTag4::from(principal_name(&self.tgt.client)?),
            ticket: ExplicitContextTag5::from(ticket),
            enc_part: ExplicitContextTag6::from(EncryptedData {
                etype: ExplicitContextTag0::from(int(u32::from(self.tgt.enctype))),
                kvno: Optional::from(None),
                cipher: ExplicitContextTag2::from(OctetStringAsn1::from(sealed)),
            }),
        });
        encode("AS-REP", picky_asn1_der::to_vec(&reply))
    }

    /// PA-ETYPE-INFO2 naming the TGT's encryption type (no salt: the key is not derived).
    fn etype_info2(&self) -> sspi::Result<PaData> {
        let info = Asn1SequenceOf::from(vec![EtypeInfo2Entry {
            etype: ExplicitContextTag0::from(int(u32::from(self.tgt.enctype))),
            salt: Optional::from(None),
            s2kparams: Optional::from(None),
        }]);
        let data = picky_asn1_der::to_vec(&info)
            .map_err(|e| internal(format!("encoding ETYPE-INFO2: {e}")))?;
        Ok(PaData {
            padata_type: ExplicitContextTag1::from(IntegerAsn1::from(vec![PA_ETYPE_INFO2])),
            padata_data: ExplicitContextTag2::from(OctetStringAsn1::from(data)),
        })
    }

    /// The KRB-ERROR a KDC answers an AS-REQ without pre-authentication with.
    fn preauth_required(&self) -> sspi::Result<KrbError> {
        let methods = picky_asn1_der::to_vec(&Asn1SequenceOf::from(vec![self.etype_info2()?]))
            .map_err(|e| internal(format!("encoding METHOD-DATA: {e}")))?;
        Ok(KrbError::from(KrbErrorInner {
            pvno: ExplicitContextTag0::from(IntegerAsn1::from(vec![5])),
            msg_type: ExplicitContextTag1::from(IntegerAsn1::from(vec![30])),
            ctime: Optional::from(None),
            cusec: Optional::from(None),
            stime: ExplicitContextTag4::from(time(self.tgt.authtime)?),
            susec: ExplicitContextTag5::from(IntegerAsn1::from(vec![0])),
            error_code: ExplicitContextTag6::from(KDC_ERR_PREAUTH_REQUIRED),
            crealm: Optional::from(None),
            cname: Optional::from(None),
            realm: ExplicitContextTag9::from(kerberos_string(&self.tgt.server.realm)?),
            sname: ExplicitContextTag10::from(principal_name(&self.tgt.server)?),
            e_text: Optional::from(None),
            e_data: Optional::from(Some(ExplicitContextTag12::from(OctetStringAsn1::from(
                methods,
            )))),
        }))
    }

    /// EncASRepPart (RFC 4120 5.4.2): the TGT's session key, times and flags as the KDC
    /// issued them to kinit, with this request's nonce.
    fn enc_part(&self, nonce: IntegerAsn1) -> sspi::Result<EncKdcRepPart> {
        let tgt = &self.tgt;
        let optional_time = |t: u32| -> sspi::Result<Option<KerberosTime>> {
            (t != 0).then(|| time(t)).transpose()
        };
        Ok(EncKdcRepPart {
            key: ExplicitContextTag0::from(EncryptionKey {
                key_type: ExplicitContextTag0::from(int(u32::from(tgt.enctype))),
                key_value: ExplicitContextTag1::from(OctetStringAsn1::from(
                    tgt.key.as_ref().clone(),
                )),
            }),
            last_req: ExplicitContextTag1::from(Asn1SequenceOf::from(vec![LastReqInner {
                lr_type: ExplicitContextTag0::from(IntegerAsn1::from(vec![0])),
                lr_value: ExplicitContextTag1::from(time(tgt.authtime)?),
            }])),
            nonce: ExplicitContextTag2::from(nonce),
            key_expiration: Optional::from(None),
            flags: ExplicitContextTag4::from(KerberosFlags::from(BitString::with_bytes(
                tgt.flags.to_be_bytes().to_vec(),
            ))),
            auth_time: ExplicitContextTag5::from(time(tgt.authtime)?),
            start_time: Optional::from(
                optional_time(tgt.starttime)?.map(ExplicitContextTag6::from),
            ),
            end_time: ExplicitContextTag7::from(time(tgt.endtime)?),
            renew_till: Optional::from(
                optional_time(tgt.renew_till)?.map(ExplicitContextTag8::from),
            ),
            srealm: ExplicitContextTag9::from(kerberos_string(&tgt.server.realm)?),
            sname: ExplicitContextTag10::from(principal_name(&tgt.server)?),
            caddr: Optional::from(None),
            encrypted_pa_data: Optional::from(None),
        })
    }
}

fn frame(der: Vec<u8>) -> Vec<u8> {
    let len = u32::try_from(der.len()).unwrap_or(u32::MAX);
    let mut framed = Vec::with_capacity(4 + der.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(&der);
    framed
}

fn internal(message: String) -> sspi::Error {
    sspi::Error::new(
        sspi::ErrorKind::InternalError,
        format!("ticket cache: {message}"),
    )
}

fn int(value: u32) -> IntegerAsn1 {
    IntegerAsn1::from_bytes_be_unsigned(value.to_be_bytes().to_vec())
}

fn kerberos_string(text: &str) -> sspi::Result<KerberosStringAsn1> {
    IA5String::from_string(text.to_owned())
        .map(KerberosStringAsn1::from)
        .map_err(|_| internal(format!("{text:?} is not an IA5 string")))
}

fn principal_name(principal: &Principal) -> sspi::Result<PrincipalName> {
    let names = principal
        .components
        .iter()
        .map(|c| kerberos_string(c))
        .collect::<sspi::Result<Vec<_>>>()?;
    Ok(PrincipalName {
        name_type: ExplicitContextTag0::from(int(principal.name_type)),
        name_string: ExplicitContextTag1::from(Asn1SequenceOf::from(names)),
    })
}

fn names(name: &PrincipalName) -> Vec<String> {
    name.name_string.0.0.iter().map(|s| s.to_string()).collect()
}

fn time(unix: u32) -> sspi::Result<KerberosTime> {
    let at = time::OffsetDateTime::from_unix_timestamp(i64::from(unix))
        .map_err(|e| internal(format!("time {unix}: {e}")))?;
    Ok(KerberosTime::from(GeneralizedTime::from(at)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes caches in the MIT FILE format (the reverse of [`TicketCache::parse`]).
    struct Writer {
        bytes: Vec<u8>,
        version: u16,
    }

    impl Writer {
        fn new(version: u16) -> Self {
            let mut bytes = version.to_be_bytes().to_vec();
            if version == 0x0504 {
                // One DeltaTime header field (tag 1, 8 bytes).
                bytes.extend_from_slice(&12u16.to_be_bytes());
                bytes.extend_from_slice(&1u16.to_be_bytes());
                bytes.extend_from_slice(&8u16.to_be_bytes());
                bytes.extend_from_slice(&[0; 8]);
            }
            Self { bytes, version }
        }

        fn u32(&mut self, v: u32) -> &mut Self {
            self.bytes.extend_from_slice(&v.to_be_bytes());
            self
        }

        fn data(&mut self, d: &[u8]) -> &mut Self {
            self.u32(d.len() as u32);
            self.bytes.extend_from_slice(d);
            self
        }

        fn principal(&mut self, name_type: u32, realm: &str, components: &[&str]) -> &mut Self {
            self.u32(name_type)
                .u32(components.len() as u32)
                .data(realm.as_bytes());
            for c in components {
                self.data(c.as_bytes());
            }
            self
        }

        #[allow(clippy::too_many_arguments)]
        fn credential(
            &mut self,
            client: &[&str],
            server_realm: &str,
            server: &[&str],
            enctype: u16,
            times: [u32; 4],
            ticket: &[u8],
        ) -> &mut Self {
            self.principal(1, "FLEET.TEST", client)
                .principal(2, server_realm, server);
            self.bytes.extend_from_slice(&enctype.to_be_bytes());
            if self.version == 0x0503 {
                self.bytes.extend_from_slice(&enctype.to_be_bytes());
            }
            self.data(&[7; 32]);
            for t in times {
                self.u32(t);
            }
            self.bytes.push(0);
            self.u32(0x5081_0000);
            // One address, no authorization data.
            self.u32(1);
            self.bytes.extend_from_slice(&2u16.to_be_bytes());
            self.data(&[127, 0, 0, 1]);
            self.u32(0).data(ticket).data(&[])
        }
    }

    const TIMES: [u32; 4] = [1_000, 1_000, 5_000, 9_000];

    fn cache(version: u16) -> Vec<u8> {
        let mut w = Writer::new(version);
        w.principal(1, "FLEET.TEST", &["alice"])
            // A configuration entry (MIT writes fast_avail and pa_type ones) is skipped.
            .credential(
                &["alice"],
                CONFIG_REALM,
                &[
                    "krb5_ccache_conf_data",
                    "fast_avail",
                    "krbtgt/FLEET.TEST@FLEET.TEST",
                ],
                0,
                [0; 4],
                b"yes",
            )
            .credential(
                &["alice"],
                "FLEET.TEST",
                &["krbtgt", "FLEET.TEST"],
                18,
                TIMES,
                b"tgt",
            )
            .credential(
                &["alice"],
                "FLEET.TEST",
                &["HTTP", "web01.fleet.test"],
                17,
                TIMES,
                b"svc",
            );
        w.bytes
    }

    fn parse(bytes: &[u8]) -> Result<TicketCache, TicketCacheError> {
        TicketCache::parse(Path::new("/tmp/cc"), bytes)
    }

    #[test]
    fn versions_3_and_4_parse_alike_and_skip_configuration_entries() {
        for version in [0x0503, 0x0504] {
            let cache = parse(&cache(version)).unwrap();
            assert_eq!(cache.principal.to_string(), "alice@FLEET.TEST");
            assert_eq!(cache.tickets.len(), 2, "{version:#x}");
            let tgt = cache.tgt(2_000).unwrap();
            assert_eq!(tgt.server.to_string(), "krbtgt/FLEET.TEST@FLEET.TEST");
            assert_eq!(tgt.server.name_type, 2);
            assert_eq!(
                (tgt.enctype, tgt.endtime, tgt.renew_till),
                (18, 5_000, 9_000)
            );
            assert_eq!(tgt.flags, 0x5081_0000);
            assert_eq!(tgt.ticket, b"tgt");
            assert_eq!(tgt.key.as_ref(), &vec![7u8; 32]);
            assert_eq!(cache.username().unwrap().inner(), "FLEET.TEST\\alice");
            assert!(
                !format!("{cache:?}").contains("7, 7"),
                "keys never in Debug"
            );
        }
    }

    #[test]
    fn the_tgt_must_be_current_of_the_realm_and_aes() {
        let cache = parse(&cache(0x0504)).unwrap();
        let err = cache.tgt(5_000).unwrap_err().to_string();
        assert!(
            err.contains("expired at 5000") && err.contains("kinit alice@FLEET.TEST"),
            "{err}"
        );
        let err = cache.tgt(999).unwrap_err().to_string();
        assert!(err.contains("not valid before 1000"), "{err}");

        let mut w = Writer::new(0x0504);
        w.principal(1, "FLEET.TEST", &["alice"]).credential(
            &["alice"],
            "FLEET.TEST",
            &["HTTP", "web01.fleet.test"],
            18,
            TIMES,
            b"svc",
        );
        let err = parse(&w.bytes).unwrap().tgt(2_000).unwrap_err();
        assert!(matches!(err, TicketCacheError::NoTgt { .. }), "{err:?}");

        let mut w = Writer::new(0x0504);
        w.principal(1, "FLEET.TEST", &["alice"]).credential(
            &["alice"],
            "FLEET.TEST",
            &["krbtgt", "FLEET.TEST"],
            23,
            TIMES,
            b"tgt",
        );
        let err = parse(&w.bytes).unwrap().tgt(2_000).unwrap_err();
        assert!(
            matches!(err, TicketCacheError::Enctype { enctype: 23, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn every_truncation_and_bad_header_is_an_error_naming_the_file() {
        let whole = cache(0x0504);
        for len in 0..whole.len() {
            match parse(&whole[..len]) {
                Err(TicketCacheError::Malformed { path, .. }) => {
                    assert_eq!(path, Path::new("/tmp/cc"))
                }
                Ok(cache) => {
                    // Cut exactly between credentials: fewer tickets, never garbage.
                    assert!(cache.tickets.len() < 2, "{len}");
                }
                Err(other) => panic!("{len}: {other:?}"),
            }
        }
        let err = parse(&[0x05, 0x01, 0, 0]).unwrap_err().to_string();
        assert!(err.contains("0x0501"), "{err}");
        let err = parse(b"\x7fELF").unwrap_err().to_string();
        assert!(err.contains("not an MIT FILE cache"), "{err}");
        // A count far beyond any real principal is refused before any allocation.
        let mut w = Writer::new(0x0504);
        w.u32(1).u32(u32::MAX);
        let err = parse(&w.bytes).unwrap_err().to_string();
        assert!(err.contains("name components"), "{err}");
    }

    #[test]
    fn user_names_match_the_principal_as_windows_spells_them() {
        let cache = parse(&cache(0x0504)).unwrap();
        for user in [
            "alice",
            "ALICE",
            "FLEET\\alice",
            "fleet.test\\Alice",
            "alice@FLEET.TEST",
        ] {
            assert!(cache.belongs_to(&Username::parse(user).unwrap()), "{user}");
        }
        for user in ["bob", "OTHER\\alice", "alice@other.test"] {
            assert!(!cache.belongs_to(&Username::parse(user).unwrap()), "{user}");
        }
    }

    #[test]
    fn service_principals_cannot_log_on() {
        let mut w = Writer::new(0x0504);
        w.principal(2, "FLEET.TEST", &["host", "web01"]);
        let err = parse(&w.bytes).unwrap().username().unwrap_err().to_string();
        assert!(
            err.contains("host/web01@FLEET.TEST") && err.contains("user principals"),
            "{err}"
        );
    }

    #[test]
    fn the_cache_is_found_as_mit_finds_it() {
        let env = |value: &'static str| {
            move |name: &str| (name == KRB5CCNAME_ENV).then(|| value.to_owned())
        };
        assert_eq!(
            TicketCache::default_path(env("FILE:/tmp/a")).unwrap(),
            Path::new("/tmp/a")
        );
        assert_eq!(
            TicketCache::default_path(env("/tmp/b")).unwrap(),
            Path::new("/tmp/b")
        );
        let err = TicketCache::default_path(env("KEYRING:persistent:1000")).unwrap_err();
        assert!(
            matches!(&err, TicketCacheError::UnsupportedType { kind, .. } if kind == "KEYRING"),
            "{err:?}"
        );
        assert!(err.to_string().contains("FILE:"), "{err}");
        let default = TicketCache::default_path(|_| None).unwrap();
        assert_eq!(
            default,
            PathBuf::from(format!("/tmp/krb5cc_{}", current_uid()))
        );
    }

    #[test]
    fn the_local_as_answers_only_as_requests_for_the_cached_client() {
        let cache = parse(&cache(0x0504)).unwrap();
        let (local, identity) = LocalAs::new(&cache, 2_000).unwrap();
        assert_eq!(identity.principal.inner(), "FLEET.TEST\\alice");
        assert_eq!(identity.key_enctype, CipherSuite::Aes256CtsHmacSha196);
        assert_eq!(identity.key.as_ref().len(), 32);
        // Not a Kerberos message, or a TGS-REQ-shaped blob: not ours to answer.
        assert!(local.answer(b"").is_none());
        assert!(local.answer(&frame(vec![0x6c, 0x00])).is_none());
        // Two contexts never share a key.
        let (_, other) = LocalAs::new(&cache, 2_000).unwrap();
        assert_ne!(identity.key.as_ref(), other.key.as_ref());
    }
}
