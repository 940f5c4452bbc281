//! The simulator's certificate authority and the HTTPS listeners' certificates.
//!
//! One CA per fleet (a fresh ECDSA P-256 key, a fixed subject), written to `ca.pem` for
//! clients to trust. Host certificates carry the host name and address as subject
//! alternative names and come in the four kinds a profile asks for (wire-facts 1.8):
//! valid, self-signed, issued for another name, and expired. They are made on the first
//! TLS connection to a host, so a large fleet starts without signing thousands of them.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, OtherNameValue, SanType, date_time_ymd,
};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::client_cert::client_verifier;
use crate::host::CertificateKind;
use crate::profile::DOMAIN;

/// The CA's subject common name.
pub const CA_COMMON_NAME: &str = "psfleet simulator CA";

/// The prefix of the RFC 5929 `tls-server-end-point` channel binding.
pub const TLS_SERVER_END_POINT: &[u8] = b"tls-server-end-point:";

/// Why a certificate or TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// rcgen failed (key generation, a name it cannot encode, signing).
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the certificate or key.
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The simulator CA.
pub struct SimCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
}

impl std::fmt::Debug for SimCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCa")
            .field("subject", &CA_COMMON_NAME)
            .finish_non_exhaustive()
    }
}

/// A host's TLS server configuration and the channel-binding data its certificate gives.
#[derive(Clone)]
pub struct HostTls {
    /// The rustls configuration for the host's HTTPS listener.
    pub config: Arc<ServerConfig>,
    /// `tls-server-end-point:` + SHA-256 of the leaf certificate (RFC 5929 4.1: the hash of
    /// the certificate's signature algorithm, SHA-256 for ECDSA P-256 with SHA-256).
    pub channel_binding: Vec<u8>,
    /// The leaf certificate (DER).
    pub certificate: CertificateDer<'static>,
}

impl std::fmt::Debug for HostTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostTls").finish_non_exhaustive()
    }
}

impl SimCa {
    /// A new CA with a fresh key.
    pub fn new() -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, CA_COMMON_NAME);
        dn.push(DnType::OrganizationName, "psfleet");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = date_time_ymd(2024, 1, 1);
        params.not_after = date_time_ymd(2045, 1, 1);
        let cert = params.self_signed(&key)?;
        let pem = cert.pem();
        let der = cert.der().clone();
        Ok(Self {
            issuer: Issuer::new(params, key),
            pem,
            der,
        })
    }

    /// The CA certificate in PEM (what `ca.pem` holds).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The CA certificate in DER.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// A client certificate for `account`, issued by this CA with the client
    /// authentication EKU and the UPN `account@fleet.test` (the subject a
    /// `WSMan:\localhost\ClientCertificate` mapping matches).
    pub fn client_certificate(&self, account: &str) -> Result<ClientCertificate, TlsError> {
        let key = KeyPair::generate()?;
        let upn = format!("{account}@{DOMAIN}");
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![SanType::OtherName((
            vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3],
            OtherNameValue::Utf8String(upn.clone()),
        ))];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, account);
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = date_time_ymd(2024, 1, 1);
        params.not_after = date_time_ymd(2045, 1, 1);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ClientCertificate {
            upn,
            certificate_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            certificate: cert.der().clone(),
        })
    }

    /// Makes the certificate of `kind` for a host and the TLS configuration presenting it.
    /// With `client_certificates`, the listener asks for a client certificate issued by
    /// this CA (and still serves clients without one, who use other schemes).
    pub fn host_tls(
        &self,
        name: &str,
        address: Ipv4Addr,
        kind: CertificateKind,
        client_certificates: bool,
    ) -> Result<HostTls, TlsError> {
        let key = KeyPair::generate()?;
        let wrong_name = format!("wrong-name.{DOMAIN}");
        let dns_name = match kind {
            CertificateKind::WrongName => wrong_name.as_str(),
            _ => name,
        };
        let mut params = CertificateParams::new(vec![dns_name.to_owned()])?;
        if kind != CertificateKind::WrongName {
            params
                .subject_alt_names
                .push(SanType::IpAddress(IpAddr::V4(address)));
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, dns_name);
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        if kind == CertificateKind::Expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        } else {
            params.not_before = date_time_ymd(2024, 1, 1);
            params.not_after = date_time_ymd(2045, 1, 1);
        }
        let (leaf, chain) = if kind == CertificateKind::SelfSigned {
            params.use_authority_key_identifier_extension = false;
            let cert = params.self_signed(&key)?;
            let der = cert.der().clone();
            (der.clone(), vec![der])
        } else {
            let cert = params.signed_by(&key, &self.issuer)?;
            let der = cert.der().clone();
            (der.clone(), vec![der, self.der.clone()])
        };
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder =
            ServerConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?;
        let builder = if client_certificates {
            builder.with_client_cert_verifier(client_verifier(std::slice::from_ref(&self.der))?)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_single_cert(chain, private)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut channel_binding = TLS_SERVER_END_POINT.to_vec();
        channel_binding
            .extend_from_slice(ring::digest::digest(&ring::digest::SHA256, leaf.as_ref()).as_ref());
        Ok(HostTls {
            config: Arc::new(config),
            channel_binding,
            certificate: leaf,
        })
    }
}

/// A client certificate issued by the simulator CA (written to the output directory as
/// `client-<account>.pem` and `client-<account>.key`).
#[derive(Clone)]
pub struct ClientCertificate {
    /// The UPN it carries (`account@fleet.test`).
    pub upn: String,
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// Its private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The certificate, DER.
    pub certificate: CertificateDer<'static>,
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("upn", &self.upn)
            .finish_non_exhaustive()
    }
}

/// Wraps RFC 5929 application data in the SEC_CHANNEL_BINDINGS structure sspi reads
/// (MS-NLMP 3.1.5.1.2; a 32-byte header of empty initiator and acceptor addresses, then
/// the application data at offset 32).
pub fn sec_channel_bindings(application_data: &[u8]) -> Vec<u8> {
    const HEADER: u32 = 32;
    let len = u32::try_from(application_data.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(32 + application_data.len());
    for field in [0u32, 0, 0, 0, 0, 0, len, HEADER] {
        out.extend_from_slice(&field.to_le_bytes());
    }
    out.extend_from_slice(application_data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_cert::certificate_upn;
    use rustls::RootCertStore;
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::{ServerName, UnixTime};

    fn verify(ca: &SimCa, tls: &HostTls, name: &str) -> Result<(), rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        let server_name = ServerName::try_from(name.to_owned()).unwrap();
        // The chain's intermediates: the CA itself is a root, so none.
        verifier
            .verify_server_cert(&tls.certificate, &[], &server_name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn certificate_kinds_verify_as_their_names_say() {
        let ca = SimCa::new().unwrap();
        assert!(ca.pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let name = "srv0001.fleet.test";
        let addr = Ipv4Addr::new(127, 20, 0, 1);
        let valid = ca
            .host_tls(name, addr, CertificateKind::Valid, false)
            .unwrap();
        verify(&ca, &valid, name).unwrap();
        verify(&ca, &valid, "127.20.0.1").unwrap();
        assert!(verify(&ca, &valid, "srv0002.fleet.test").is_err());

        let wrong = ca
            .host_tls(name, addr, CertificateKind::WrongName, false)
            .unwrap();
        let error = verify(&ca, &wrong, name).unwrap_err();
        assert!(
            format!("{error:?}").contains("NotValidForName"),
            "{error:?}"
        );

        let expired = ca
            .host_tls(name, addr, CertificateKind::Expired, false)
            .unwrap();
        let error = verify(&ca, &expired, name).unwrap_err();
        assert!(format!("{error:?}").contains("Expired"), "{error:?}");

        let selfsigned = ca
            .host_tls(name, addr, CertificateKind::SelfSigned, true)
            .unwrap();
        let error = verify(&ca, &selfsigned, name).unwrap_err();
        assert!(format!("{error:?}").contains("UnknownIssuer"), "{error:?}");
    }

    #[test]
    fn client_certificates_carry_the_upn() {
        let ca = SimCa::new().unwrap();
        let cert = ca.client_certificate("fleetadmin").unwrap();
        assert_eq!(cert.upn, "fleetadmin@fleet.test");
        assert_eq!(
            certificate_upn(cert.certificate.as_ref()).as_deref(),
            Some("fleetadmin@fleet.test")
        );
        assert!(
            cert.certificate_pem
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        assert!(cert.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(!format!("{cert:?}").contains("PRIVATE"));
        // The CA's client verifier accepts it.
        let verifier = client_verifier(std::slice::from_ref(ca.der())).unwrap();
        verifier
            .verify_client_cert(&cert.certificate, &[], UnixTime::now())
            .unwrap();
    }

    #[test]
    fn channel_binding_is_tls_server_end_point_sha256() {
        let ca = SimCa::new().unwrap();
        let tls = ca
            .host_tls(
                "srv0001.fleet.test",
                Ipv4Addr::new(127, 20, 0, 1),
                CertificateKind::Valid,
                true,
            )
            .unwrap();
        assert_eq!(tls.channel_binding.len(), TLS_SERVER_END_POINT.len() + 32);
        assert!(tls.channel_binding.starts_with(TLS_SERVER_END_POINT));
        let wrapped = sec_channel_bindings(&tls.channel_binding);
        assert_eq!(wrapped.len(), 32 + tls.channel_binding.len());
        assert_eq!(
            &wrapped[24..28],
            &(tls.channel_binding.len() as u32).to_le_bytes()
        );
        assert_eq!(&wrapped[28..32], &32u32.to_le_bytes());
    }
}
