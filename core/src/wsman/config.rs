//! The WinRM configuration (`cfg:Config`), returned by a WS-Transfer Get of
//! [`super::resources::CONFIG`] (wire-facts 2.3; MS-WSMV 2.2.4.10, 2.2.4.34, 2.2.4.42).
//!
//! Every field is optional: non-admin users and older hosts get less (or a fault), and the
//! simulator can describe any host. Elements are written in the order Windows uses
//! (R:test_wsman_update_envelope_size_150).

use std::str::FromStr;

use super::WsmanError;
use super::names::ns;
use super::util::{parse_bool, parse_number, xs_bool};
use crate::xml::{Element, XmlWriter};

/// `cfg:Config`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WinrmConfig {
    /// `cfg:MaxEnvelopeSizekb`: largest request the service accepts, in KiB.
    pub max_envelope_size_kb: Option<u32>,
    /// `cfg:MaxTimeoutms`.
    pub max_timeout_ms: Option<u32>,
    /// `cfg:MaxBatchItems`.
    pub max_batch_items: Option<u32>,
    /// `cfg:MaxProviderRequests`.
    pub max_provider_requests: Option<u32>,
    /// `cfg:Client`.
    pub client: Option<ClientConfig>,
    /// `cfg:Service`.
    pub service: Option<ServiceConfig>,
    /// `cfg:Winrs`: the remote shell quotas.
    pub winrs: Option<WinrsConfig>,
}

/// `cfg:Client`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientConfig {
    /// `cfg:NetworkDelayms`.
    pub network_delay_ms: Option<u32>,
    /// `cfg:URLPrefix`.
    pub url_prefix: Option<String>,
    /// `cfg:AllowUnencrypted`.
    pub allow_unencrypted: Option<bool>,
    /// `cfg:Auth`.
    pub auth: Option<ClientAuth>,
    /// `cfg:DefaultPorts`.
    pub default_ports: Option<DefaultPorts>,
    /// `cfg:TrustedHosts`.
    pub trusted_hosts: Option<String>,
}

/// `cfg:Client/cfg:Auth`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientAuth {
    /// `cfg:Basic`.
    pub basic: Option<bool>,
    /// `cfg:Digest`.
    pub digest: Option<bool>,
    /// `cfg:Kerberos`.
    pub kerberos: Option<bool>,
    /// `cfg:Negotiate`.
    pub negotiate: Option<bool>,
    /// `cfg:Certificate`.
    pub certificate: Option<bool>,
    /// `cfg:CredSSP`.
    pub credssp: Option<bool>,
}

/// `cfg:DefaultPorts`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DefaultPorts {
    /// `cfg:HTTP`.
    pub http: Option<u16>,
    /// `cfg:HTTPS`.
    pub https: Option<u16>,
}

/// `cfg:Service`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceConfig {
    /// `cfg:RootSDDL`.
    pub root_sddl: Option<String>,
    /// `cfg:MaxConcurrentOperations`.
    pub max_concurrent_operations: Option<u32>,
    /// `cfg:MaxConcurrentOperationsPerUser` (1500 on Server 2016; 15 on 2008 R2).
    pub max_concurrent_operations_per_user: Option<u32>,
    /// `cfg:EnumerationTimeoutms`.
    pub enumeration_timeout_ms: Option<u32>,
    /// `cfg:MaxConnections`.
    pub max_connections: Option<u32>,
    /// `cfg:MaxPacketRetrievalTimeSeconds`.
    pub max_packet_retrieval_time_seconds: Option<u32>,
    /// `cfg:AllowUnencrypted`.
    pub allow_unencrypted: Option<bool>,
    /// `cfg:Auth`.
    pub auth: Option<ServiceAuth>,
    /// `cfg:DefaultPorts`.
    pub default_ports: Option<DefaultPorts>,
    /// `cfg:IPv4Filter`.
    pub ipv4_filter: Option<String>,
    /// `cfg:IPv6Filter`.
    pub ipv6_filter: Option<String>,
    /// `cfg:EnableCompatibilityHttpListener`.
    pub enable_compatibility_http_listener: Option<bool>,
    /// `cfg:EnableCompatibilityHttpsListener`.
    pub enable_compatibility_https_listener: Option<bool>,
    /// `cfg:CertificateThumbprint`.
    pub certificate_thumbprint: Option<String>,
    /// `cfg:AllowRemoteAccess`.
    pub allow_remote_access: Option<bool>,
}

/// `cfg:Service/cfg:Auth` (defaults in MS-WSMV 2.2.4.34).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceAuth {
    /// `cfg:Basic`.
    pub basic: Option<bool>,
    /// `cfg:Kerberos`.
    pub kerberos: Option<bool>,
    /// `cfg:Negotiate`.
    pub negotiate: Option<bool>,
    /// `cfg:Certificate`.
    pub certificate: Option<bool>,
    /// `cfg:CredSSP`.
    pub credssp: Option<bool>,
    /// `cfg:CbtHardeningLevel`.
    pub cbt_hardening_level: Option<CbtHardeningLevel>,
}

/// `cfg:CbtHardeningLevel`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CbtHardeningLevel {
    /// `None`: channel binding not checked.
    None,
    /// `Relaxed` (default): checked when present.
    Relaxed,
    /// `Strict`: required.
    Strict,
    /// Any other text.
    Other(String),
}

impl CbtHardeningLevel {
    fn from_text(text: &str) -> Self {
        match text.trim() {
            "None" => CbtHardeningLevel::None,
            "Relaxed" => CbtHardeningLevel::Relaxed,
            "Strict" => CbtHardeningLevel::Strict,
            other => CbtHardeningLevel::Other(other.to_owned()),
        }
    }

    /// The text written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            CbtHardeningLevel::None => "None",
            CbtHardeningLevel::Relaxed => "Relaxed",
            CbtHardeningLevel::Strict => "Strict",
            CbtHardeningLevel::Other(text) => text,
        }
    }
}

/// `cfg:Winrs` (MS-WSMV 2.2.4.42).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WinrsConfig {
    /// `cfg:AllowRemoteShellAccess`.
    pub allow_remote_shell_access: Option<bool>,
    /// `cfg:IdleTimeout` in milliseconds.
    pub idle_timeout_ms: Option<u32>,
    /// `cfg:MaxConcurrentUsers`.
    pub max_concurrent_users: Option<u32>,
    /// `cfg:MaxShellRunTime` in milliseconds.
    pub max_shell_run_time_ms: Option<u32>,
    /// `cfg:MaxProcessesPerShell`.
    pub max_processes_per_shell: Option<u32>,
    /// `cfg:MaxMemoryPerShellMB`.
    pub max_memory_per_shell_mb: Option<u32>,
    /// `cfg:MaxShellsPerUser`: what the engine budgets shells by.
    pub max_shells_per_user: Option<u32>,
}

impl WinrmConfig {
    /// The values a Server 2016 host reported (R:test_wsman_update_envelope_size_500),
    /// a starting point for simulated hosts.
    pub fn server_2016() -> Self {
        Self {
            max_envelope_size_kb: Some(500),
            max_timeout_ms: Some(60_000),
            max_batch_items: Some(32_000),
            max_provider_requests: Some(u32::MAX),
            client: Some(ClientConfig {
                network_delay_ms: Some(5_000),
                url_prefix: Some("wsman".to_owned()),
                allow_unencrypted: Some(false),
                auth: Some(ClientAuth {
                    basic: Some(true),
                    digest: Some(true),
                    kerberos: Some(true),
                    negotiate: Some(true),
                    certificate: Some(true),
                    credssp: Some(false),
                }),
                default_ports: Some(DefaultPorts {
                    http: Some(5985),
                    https: Some(5986),
                }),
                trusted_hosts: Some(String::new()),
            }),
            service: Some(ServiceConfig {
                root_sddl: Some(
                    "O:NSG:BAD:P(A;;GA;;;BA)(A;;GR;;;IU)S:P(AU;FA;GA;;;WD)(AU;SA;GXGW;;;WD)"
                        .to_owned(),
                ),
                max_concurrent_operations: Some(u32::MAX),
                max_concurrent_operations_per_user: Some(1_500),
                enumeration_timeout_ms: Some(240_000),
                max_connections: Some(300),
                max_packet_retrieval_time_seconds: Some(120),
                allow_unencrypted: Some(false),
                auth: Some(ServiceAuth {
                    basic: Some(true),
                    kerberos: Some(true),
                    negotiate: Some(true),
                    certificate: Some(false),
                    credssp: Some(true),
                    cbt_hardening_level: Some(CbtHardeningLevel::Relaxed),
                }),
                default_ports: Some(DefaultPorts {
                    http: Some(5985),
                    https: Some(5986),
                }),
                ipv4_filter: Some("*".to_owned()),
                ipv6_filter: Some("*".to_owned()),
                enable_compatibility_http_listener: Some(false),
                enable_compatibility_https_listener: Some(false),
                certificate_thumbprint: Some(String::new()),
                allow_remote_access: Some(true),
            }),
            winrs: Some(WinrsConfig {
                allow_remote_shell_access: Some(true),
                idle_timeout_ms: Some(7_200_000),
                max_concurrent_users: Some(2_147_483_647),
                max_shell_run_time_ms: Some(2_147_483_647),
                max_processes_per_shell: Some(2_147_483_647),
                max_memory_per_shell_mb: Some(2_147_483_647),
                max_shells_per_user: Some(2_147_483_647),
            }),
        }
    }

    /// MaxEnvelopeSizekb in bytes, the size to send as `wsman:MaxEnvelopeSize`.
    pub fn max_envelope_size_bytes(&self) -> Option<u32> {
        self.max_envelope_size_kb
            .and_then(|kb| kb.checked_mul(1024))
    }

    /// `Winrs/MaxShellsPerUser`.
    pub fn max_shells_per_user(&self) -> Option<u32> {
        self.winrs.as_ref().and_then(|w| w.max_shells_per_user)
    }

    /// Reads a `cfg:Config` element.
    pub(crate) fn parse(cfg: &Element) -> Result<Self, WsmanError> {
        let r = Reader(cfg);
        Ok(Self {
            max_envelope_size_kb: r.num("MaxEnvelopeSizekb", "cfg:MaxEnvelopeSizekb")?,
            max_timeout_ms: r.num("MaxTimeoutms", "cfg:MaxTimeoutms")?,
            max_batch_items: r.num("MaxBatchItems", "cfg:MaxBatchItems")?,
            max_provider_requests: r.num("MaxProviderRequests", "cfg:MaxProviderRequests")?,
            client: r.child("Client").map(parse_client).transpose()?,
            service: r.child("Service").map(parse_service).transpose()?,
            winrs: r.child("Winrs").map(parse_winrs).transpose()?,
        })
    }

    /// Writes `<cfg:Config xmlns:cfg=...>` as Windows does.
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        w.start("cfg:Config", &[("xmlns:cfg", ns::CONFIG)]);
        num(w, "cfg:MaxEnvelopeSizekb", self.max_envelope_size_kb);
        num(w, "cfg:MaxTimeoutms", self.max_timeout_ms);
        num(w, "cfg:MaxBatchItems", self.max_batch_items);
        num(w, "cfg:MaxProviderRequests", self.max_provider_requests);
        if let Some(c) = &self.client {
            w.start("cfg:Client", &[]);
            num(w, "cfg:NetworkDelayms", c.network_delay_ms);
            text(w, "cfg:URLPrefix", c.url_prefix.as_deref());
            boolean(w, "cfg:AllowUnencrypted", c.allow_unencrypted);
            if let Some(a) = &c.auth {
                w.start("cfg:Auth", &[]);
                boolean(w, "cfg:Basic", a.basic);
                boolean(w, "cfg:Digest", a.digest);
                boolean(w, "cfg:Kerberos", a.kerberos);
                boolean(w, "cfg:Negotiate", a.negotiate);
                boolean(w, "cfg:Certificate", a.certificate);
                boolean(w, "cfg:CredSSP", a.credssp);
                w.end("cfg:Auth");
            }
            ports(w, c.default_ports.as_ref());
            text(w, "cfg:TrustedHosts", c.trusted_hosts.as_deref());
            w.end("cfg:Client");
        }
        if let Some(s) = &self.service {
            w.start("cfg:Service", &[]);
            text(w, "cfg:RootSDDL", s.root_sddl.as_deref());
            num(
                w,
                "cfg:MaxConcurrentOperations",
                s.max_concurrent_operations,
            );
            num(
                w,
                "cfg:MaxConcurrentOperationsPerUser",
                s.max_concurrent_operations_per_user,
            );
            num(w, "cfg:EnumerationTimeoutms", s.enumeration_timeout_ms);
            num(w, "cfg:MaxConnections", s.max_connections);
            num(
                w,
                "cfg:MaxPacketRetrievalTimeSeconds",
                s.max_packet_retrieval_time_seconds,
            );
            boolean(w, "cfg:AllowUnencrypted", s.allow_unencrypted);
            if let Some(a) = &s.auth {
                w.start("cfg:Auth", &[]);
                boolean(w, "cfg:Basic", a.basic);
                boolean(w, "cfg:Kerberos", a.kerberos);
                boolean(w, "cfg:Negotiate", a.negotiate);
                boolean(w, "cfg:Certificate", a.certificate);
                boolean(w, "cfg:CredSSP", a.credssp);
                text(
                    w,
                    "cfg:CbtHardeningLevel",
                    a.cbt_hardening_level
                        .as_ref()
                        .map(CbtHardeningLevel::as_str),
                );
                w.end("cfg:Auth");
            }
            ports(w, s.default_ports.as_ref());
            text(w, "cfg:IPv4Filter", s.ipv4_filter.as_deref());
            text(w, "cfg:IPv6Filter", s.ipv6_filter.as_deref());
            boolean(
                w,
                "cfg:EnableCompatibilityHttpListener",
                s.enable_compatibility_http_listener,
            );
            boolean(
                w,
                "cfg:EnableCompatibilityHttpsListener",
                s.enable_compatibility_https_listener,
            );
            text(
                w,
                "cfg:CertificateThumbprint",
                s.certificate_thumbprint.as_deref(),
            );
            boolean(w, "cfg:AllowRemoteAccess", s.allow_remote_access);
            w.end("cfg:Service");
        }
        if let Some(r) = &self.winrs {
            w.start("cfg:Winrs", &[]);
            boolean(w, "cfg:AllowRemoteShellAccess", r.allow_remote_shell_access);
            num(w, "cfg:IdleTimeout", r.idle_timeout_ms);
            num(w, "cfg:MaxConcurrentUsers", r.max_concurrent_users);
            num(w, "cfg:MaxShellRunTime", r.max_shell_run_time_ms);
            num(w, "cfg:MaxProcessesPerShell", r.max_processes_per_shell);
            num(w, "cfg:MaxMemoryPerShellMB", r.max_memory_per_shell_mb);
            num(w, "cfg:MaxShellsPerUser", r.max_shells_per_user);
            w.end("cfg:Winrs");
        }
        w.end("cfg:Config");
    }
}

/// Reads children of one `cfg:` element.
struct Reader<'a>(&'a Element);

impl<'a> Reader<'a> {
    fn child(&self, name: &str) -> Option<&'a Element> {
        self.0.child(ns::CONFIG, name)
    }

    fn text(&self, name: &str) -> Option<String> {
        self.child(name).map(|e| e.text().into_owned())
    }

    fn num<T: FromStr>(&self, name: &str, field: &'static str) -> Result<Option<T>, WsmanError> {
        self.child(name)
            .map(|e| parse_number(&e.text(), field))
            .transpose()
    }

    fn boolean(&self, name: &str, field: &'static str) -> Result<Option<bool>, WsmanError> {
        self.child(name)
            .map(|e| parse_bool(&e.text(), field))
            .transpose()
    }

    fn ports(&self) -> Result<Option<DefaultPorts>, WsmanError> {
        self.child("DefaultPorts")
            .map(|p| {
                let r = Reader(p);
                Ok(DefaultPorts {
                    http: r.num("HTTP", "cfg:DefaultPorts/cfg:HTTP")?,
                    https: r.num("HTTPS", "cfg:DefaultPorts/cfg:HTTPS")?,
                })
            })
            .transpose()
    }
}

fn parse_client(e: &Element) -> Result<ClientConfig, WsmanError> {
    let r = Reader(e);
    let auth = r
        .child("Auth")
        .map(|a| {
            let a = Reader(a);
            Ok::<_, WsmanError>(ClientAuth {
                basic: a.boolean("Basic", "cfg:Client/cfg:Auth/cfg:Basic")?,
                digest: a.boolean("Digest", "cfg:Client/cfg:Auth/cfg:Digest")?,
                kerberos: a.boolean("Kerberos", "cfg:Client/cfg:Auth/cfg:Kerberos")?,
                negotiate: a.boolean("Negotiate", "cfg:Client/cfg:Auth/cfg:Negotiate")?,
                certificate: a.boolean("Certificate", "cfg:Client/cfg:Auth/cfg:Certificate")?,
                credssp: a.boolean("CredSSP", "cfg:Client/cfg:Auth/cfg:CredSSP")?,
            })
        })
        .transpose()?;
    Ok(ClientConfig {
        network_delay_ms: r.num("NetworkDelayms", "cfg:Client/cfg:NetworkDelayms")?,
        url_prefix: r.text("URLPrefix"),
        allow_unencrypted: r.boolean("AllowUnencrypted", "cfg:Client/cfg:AllowUnencrypted")?,
        auth,
        default_ports: r.ports()?,
        trusted_hosts: r.text("TrustedHosts"),
    })
}

fn parse_service(e: &Element) -> Result<ServiceConfig, WsmanError> {
    let r = Reader(e);
    let auth = r
        .child("Auth")
        .map(|a| {
            let a = Reader(a);
            Ok::<_, WsmanError>(ServiceAuth {
                basic: a.boolean("Basic", "cfg:Service/cfg:Auth/cfg:Basic")?,
                kerberos: a.boolean("Kerberos", "cfg:Service/cfg:Auth/cfg:Kerberos")?,
                negotiate: a.boolean("Negotiate", "cfg:Service/cfg:Auth/cfg:Negotiate")?,
                certificate: a.boolean("Certificate", "cfg:Service/cfg:Auth/cfg:Certificate")?,
                credssp: a.boolean("CredSSP", "cfg:Service/cfg:Auth/cfg:CredSSP")?,
                cbt_hardening_level: a
                    .text("CbtHardeningLevel")
                    .map(|t| CbtHardeningLevel::from_text(&t)),
            })
        })
        .transpose()?;
    Ok(ServiceConfig {
        root_sddl: r.text("RootSDDL"),
        max_concurrent_operations: r.num(
            "MaxConcurrentOperations",
            "cfg:Service/cfg:MaxConcurrentOperations",
        )?,
        max_concurrent_operations_per_user: r.num(
            "MaxConcurrentOperationsPerUser",
            "cfg:Service/cfg:MaxConcurrentOperationsPerUser",
        )?,
        enumeration_timeout_ms: r.num(
            "EnumerationTimeoutms",
            "cfg:Service/cfg:EnumerationTimeoutms",
        )?,
        max_connections: r.num("MaxConnections", "cfg:Service/cfg:MaxConnections")?,
        max_packet_retrieval_time_seconds: r.num(
            "MaxPacketRetrievalTimeSeconds",
            "cfg:Service/cfg:MaxPacketRetrievalTimeSeconds",
        )?,
        allow_unencrypted: r.boolean("AllowUnencrypted", "cfg:Service/cfg:AllowUnencrypted")?,
        auth,
        default_ports: r.ports()?,
        ipv4_filter: r.text("IPv4Filter"),
        ipv6_filter: r.text("IPv6Filter"),
        enable_compatibility_http_listener: r.boolean(
            "EnableCompatibilityHttpListener",
            "cfg:Service/cfg:EnableCompatibilityHttpListener",
        )?,
        enable_compatibility_https_listener: r.boolean(
            "EnableCompatibilityHttpsListener",
            "cfg:Service/cfg:EnableCompatibilityHttpsListener",
        )?,
        certificate_thumbprint: r.text("CertificateThumbprint"),
        allow_remote_access: r.boolean("AllowRemoteAccess", "cfg:Service/cfg:AllowRemoteAccess")?,
    })
}

fn parse_winrs(e: &Element) -> Result<WinrsConfig, WsmanError> {
    let r = Reader(e);
    Ok(WinrsConfig {
        allow_remote_shell_access: r.boolean(
            "AllowRemoteShellAccess",
            "cfg:Winrs/cfg:AllowRemoteShellAccess",
        )?,
        idle_timeout_ms: r.num("IdleTimeout", "cfg:Winrs/cfg:IdleTimeout")?,
        max_concurrent_users: r.num("MaxConcurrentUsers", "cfg:Winrs/cfg:MaxConcurrentUsers")?,
        max_shell_run_time_ms: r.num("MaxShellRunTime", "cfg:Winrs/cfg:MaxShellRunTime")?,
        max_processes_per_shell: r
            .num("MaxProcessesPerShell", "cfg:Winrs/cfg:MaxProcessesPerShell")?,
        max_memory_per_shell_mb: r
            .num("MaxMemoryPerShellMB", "cfg:Winrs/cfg:MaxMemoryPerShellMB")?,
        max_shells_per_user: r.num("MaxShellsPerUser", "cfg:Winrs/cfg:MaxShellsPerUser")?,
    })
}

fn num<T: ToString>(w: &mut XmlWriter, name: &str, value: Option<T>) {
    if let Some(v) = value {
        w.text_element(name, &[], &v.to_string());
    }
}

fn boolean(w: &mut XmlWriter, name: &str, value: Option<bool>) {
    if let Some(v) = value {
        w.text_element(name, &[], xs_bool(v));
    }
}

/// Windows writes empty values (`TrustedHosts`, `CertificateThumbprint`) as start/end pairs.
fn text(w: &mut XmlWriter, name: &str, value: Option<&str>) {
    if let Some(v) = value {
        w.start(name, &[]);
        if !v.is_empty() {
            w.text(v);
        }
        w.end(name);
    }
}

fn ports(w: &mut XmlWriter, ports: Option<&DefaultPorts>) {
    if let Some(p) = ports {
        w.start("cfg:DefaultPorts", &[]);
        num(w, "cfg:HTTP", p.http);
        num(w, "cfg:HTTPS", p.https);
        w.end("cfg:DefaultPorts");
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::wsman::{GetResponse, Response, ResponseBody};

    fn round_trip(cfg: WinrmConfig) -> WinrmConfig {
        let response = Response::reply(
            Uuid::from_u128(1),
            Uuid::from_u128(2),
            ResponseBody::GetResponse(GetResponse::Config(cfg)),
        );
        let parsed = Response::parse(&response.to_xml()).unwrap();
        assert_eq!(parsed, response);
        match parsed.body {
            ResponseBody::GetResponse(GetResponse::Config(c)) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn full_and_partial_configs_round_trip() {
        let full = round_trip(WinrmConfig::server_2016());
        assert_eq!(full.max_envelope_size_bytes(), Some(512_000));
        assert_eq!(full.max_shells_per_user(), Some(2_147_483_647));
        let service = full.service.unwrap();
        assert_eq!(service.max_concurrent_operations_per_user, Some(1500));
        let auth = service.auth.unwrap();
        assert_eq!(auth.cbt_hardening_level, Some(CbtHardeningLevel::Relaxed));
        assert_eq!(auth.basic, Some(true));
        assert_eq!(full.client.unwrap().trusted_hosts.as_deref(), Some(""));

        // A non-admin or older host may send only part of it.
        let partial = WinrmConfig {
            max_envelope_size_kb: Some(150),
            winrs: Some(WinrsConfig {
                max_shells_per_user: Some(30),
                ..WinrsConfig::default()
            }),
            ..WinrmConfig::default()
        };
        assert_eq!(round_trip(partial.clone()), partial);
        assert_eq!(partial.max_shells_per_user(), Some(30));
        assert_eq!(
            WinrmConfig {
                max_envelope_size_kb: Some(u32::MAX),
                ..WinrmConfig::default()
            }
            .max_envelope_size_bytes(),
            None
        );
        let strict = ServiceAuth {
            cbt_hardening_level: Some(CbtHardeningLevel::Other("Odd".into())),
            ..ServiceAuth::default()
        };
        let cfg = WinrmConfig {
            service: Some(ServiceConfig {
                auth: Some(strict),
                ..ServiceConfig::default()
            }),
            ..WinrmConfig::default()
        };
        assert_eq!(round_trip(cfg.clone()), cfg);
    }

    #[test]
    fn invalid_values_are_errors() {
        let doc = format!(
            r#"<cfg:Config xmlns:cfg="{}"><cfg:Winrs><cfg:MaxShellsPerUser>lots</cfg:MaxShellsPerUser></cfg:Winrs></cfg:Config>"#,
            ns::CONFIG
        );
        let root = crate::xml::parse(doc.as_bytes()).unwrap();
        assert_eq!(
            WinrmConfig::parse(&root),
            Err(WsmanError::InvalidValue {
                field: "cfg:Winrs/cfg:MaxShellsPerUser",
                value: "lots".into()
            })
        );
        let doc = format!(
            r#"<cfg:Config xmlns:cfg="{}"><cfg:Service><cfg:AllowUnencrypted>maybe</cfg:AllowUnencrypted></cfg:Service></cfg:Config>"#,
            ns::CONFIG
        );
        let root = crate::xml::parse(doc.as_bytes()).unwrap();
        assert!(matches!(
            WinrmConfig::parse(&root),
            Err(WsmanError::InvalidValue {
                field: "cfg:Service/cfg:AllowUnencrypted",
                ..
            })
        ));
    }
}
