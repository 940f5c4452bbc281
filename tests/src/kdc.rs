//! A private MIT Kerberos realm (FLEET.TEST) for the tests, from `scripts/kdc`: a real
//! `krb5kdc` on 127.0.0.1 with `HTTP/<name>` services in a keytab. Stopped, and its folder
//! removed, on drop.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use psfleet_engine::auth::ContextOptions;
use psfleet_engine::kerberos::KerberosOptions;

/// What to install when the KDC is missing.
const INSTALL: &str = "apt-get install krb5-kdc krb5-admin-server krb5-user";

/// A running realm.
#[derive(Debug)]
pub struct Kdc {
    /// The realm's folder (database, stash, logs).
    pub dir: PathBuf,
    /// A krb5.conf naming this KDC.
    pub krb5_conf: PathBuf,
    /// The keytab of the `HTTP/<name>` services.
    pub keytab: PathBuf,
    /// `127.0.0.1:<port>`.
    pub address: String,
    /// The password of `fleetadmin@FLEET.TEST`.
    pub password: String,
}

impl Kdc {
    /// Starts a realm with an `HTTP/<name>` service per name, or returns `None` after a
    /// printed line when the MIT KDC is not installed (a user's machine).
    ///
    /// # Panics
    /// Under `CI=true` when the KDC is not installed (`scripts/test` installs it), or
    /// whenever `scripts/kdc` fails.
    pub fn start(test: &str, names: &[impl AsRef<str>]) -> Option<Self> {
        if !installed() {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(
                !ci,
                "{test}: krb5kdc is not installed ({INSTALL}); under CI=true this fails the run"
            );
            println!("{test}: skipped, no MIT KDC ({INSTALL})");
            return None;
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "psfleet-kdc-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let started = Instant::now();
        let output = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(&dir)
            .args(names.iter().map(AsRef::as_ref))
            .env_remove("PSFLEET_KDC_PASSWORD")
            .env_remove("PSFLEET_KDC_PORT")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{test}: scripts/kdc start failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        println!("{test}: KDC started in {:?}", started.elapsed());
        let env: HashMap<String, String> = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let password = std::fs::read_to_string(&env["PSFLEET_KDC_PASSWORD_FILE"])
            .unwrap()
            .trim()
            .to_owned();
        Some(Self {
            krb5_conf: PathBuf::from(&env["KRB5_CONFIG"]),
            keytab: PathBuf::from(&env["PSFLEET_KDC_KEYTAB"]),
            address: env["PSFLEET_KDC"].clone(),
            dir,
            password,
        })
    }

    /// Context options that find this KDC through its krb5.conf (not the environment,
    /// which the tests of one process share).
    pub fn options(&self) -> ContextOptions {
        ContextOptions {
            kerberos: KerberosOptions {
                krb5_config: Some(self.krb5_conf.clone()),
                kdc_timeout: Some(Duration::from_secs(5)),
                ..KerberosOptions::default()
            },
            ..ContextOptions::default()
        }
    }
}

impl Kdc {
    /// Runs MIT `kinit` for `fleetadmin@FLEET.TEST` (password on stdin) into the FILE
    /// ticket cache `cache`.
    ///
    /// # Panics
    /// When kinit fails.
    pub fn kinit(&self, cache: &Path) {
        use std::io::Write as _;
        let mut child = Command::new("kinit")
            .arg("-c")
            .arg(format!("FILE:{}", cache.display()))
            .arg("fleetadmin@FLEET.TEST")
            .env("KRB5_CONFIG", &self.krb5_conf)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{}", self.password).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "kinit failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// How many requests of `kind` (`AS_REQ`, `TGS_REQ`) the KDC has logged, and the
    /// lines themselves.
    pub fn logged(&self, kind: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("kdc.log"))
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains(&format!("): {kind} ")))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Kdc {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn installed() -> bool {
    ["/usr/sbin/krb5kdc", "/usr/local/sbin/krb5kdc"]
        .iter()
        .any(|p| Path::new(p).exists())
        || Command::new("sh")
            .args(["-c", "command -v krb5kdc"])
            .output()
            .is_ok_and(|o| o.status.success())
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kdc")
}
