//! TLS on the gRPC port (X3): the certificate and key from files, reloaded when they change
//! (cert-manager renews them in place) without dropping a connection, and optionally client
//! certificates checked against a CA bundle (mTLS). TLS 1.2 and 1.3 only (rustls has nothing
//! older); ALPN offers `h2` for gRPC and `http/1.1` for the one-click unsubscribe route, which
//! share the port as they do in plaintext. A port with TLS speaks nothing else: a plaintext
//! client's first bytes are no ClientHello and the connection is closed.
//!
//! Reloading: every `reload_interval_secs` the files are read again and compared with what is in
//! use; when they differ and make a valid configuration, new connections get it, and open ones
//! carry on with the one they began with. A half-written renewal (a new certificate beside the
//! old key) does not load: the previous configuration stays until the next check finds a
//! consistent pair, with a warning naming the file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

/// Whether clients must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClientCerts {
    /// None is asked for.
    #[default]
    None,
    /// One is asked for and checked against `client_ca_file` when presented.
    Optional,
    /// A connection without one signed by `client_ca_file` is refused in the handshake.
    Required,
}

/// The `[tls]` settings (see `config.default.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first; empty for plaintext.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM of the CA that signed `cert_file`: the process calls its own services over the port
    /// (the rights coordinator; sharing and survey reading enrolment when hosted with it), as
    /// `https://localhost`, and trusts this CA for it.
    pub ca_file: PathBuf,
    /// PEM bundle of the CAs whose client certificates are accepted.
    pub client_ca_file: PathBuf,
    /// Whether clients must present a certificate.
    pub client_certs: ClientCerts,
    /// How often the files are checked for a renewal.
    pub reload_interval_secs: u64,
}

impl TlsConfig {
    /// Whether the port speaks TLS.
    pub fn enabled(&self) -> bool {
        !self.cert_file.as_os_str().is_empty()
    }

    /// What is wrong with the settings, if anything (checked when the configuration loads).
    pub fn problem(&self) -> Option<&'static str> {
        let key = !self.key_file.as_os_str().is_empty();
        let ca = !self.client_ca_file.as_os_str().is_empty();
        if self.enabled() != key {
            Some("tls.cert_file and tls.key_file go together")
        } else if !self.enabled() && (ca || self.client_certs != ClientCerts::None) {
            Some("client certificates need TLS: set tls.cert_file and tls.key_file")
        } else if (self.client_certs != ClientCerts::None) != ca {
            Some("tls.client_certs = optional or required goes with tls.client_ca_file")
        } else if self.enabled() && self.ca_file.as_os_str().is_empty() {
            Some(
                "tls.ca_file (the CA that signed tls.cert_file) is required with TLS: the process \
                 calls its own services over the port",
            )
        } else if self.enabled() && self.reload_interval_secs == 0 {
            Some("tls.reload_interval_secs must be positive")
        } else {
            None
        }
    }
}

/// The bytes of the files a configuration is made of, to tell a renewal from no change.
#[derive(PartialEq, Eq)]
struct Files(Vec<Vec<u8>>);

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server configuration the files of `tls` make, and those files' bytes.
fn load(tls: &TlsConfig) -> anyhow::Result<(ServerConfig, Files)> {
    let cert_pem = read(&tls.cert_file)?;
    let key_pem = read(&tls.key_file)?;
    let named = |path: &Path| format!("{}", path.display());
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| named(&tls.cert_file))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{}: no PEM certificate",
        tls.cert_file.display()
    );
    let key = PrivateKeyDer::from_pem_slice(&key_pem).with_context(|| named(&tls.key_file))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?;
    let mut files = vec![cert_pem, key_pem];
    let builder = if tls.client_certs == ClientCerts::None {
        builder.with_no_client_auth()
    } else {
        let ca_pem = read(&tls.client_ca_file)?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&ca_pem) {
            roots
                .add(cert.with_context(|| named(&tls.client_ca_file))?)
                .with_context(|| named(&tls.client_ca_file))?;
        }
        files.push(ca_pem);
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
        let verifier = match tls.client_certs {
            ClientCerts::Optional => verifier.allow_unauthenticated(),
            _ => verifier,
        };
        builder.with_client_cert_verifier(verifier.build().context("client CA bundle")?)
    };
    let mut config = builder.with_single_cert(certs, key).with_context(|| {
        format!(
            "{} and {} are not a certificate and its key",
            tls.cert_file.display(),
            tls.key_file.display()
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, Files(files)))
}

/// The TLS acceptor of the port, replaced when the files are renewed. Cheap to clone.
#[derive(Clone)]
pub struct Acceptor {
    current: Arc<RwLock<TlsAcceptor>>,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor").finish_non_exhaustive()
    }
}

impl Acceptor {
    /// Loads the files of `tls` (an error names the one that is wrong) and watches them for as
    /// long as the acceptor is in use.
    pub fn start(tls: &TlsConfig) -> anyhow::Result<Self> {
        let (config, files) = load(tls)?;
        let current = Arc::new(RwLock::new(TlsAcceptor::from(Arc::new(config))));
        tokio::spawn(watch(
            tls.clone(),
            files,
            Arc::downgrade(&current),
            Duration::from_secs(tls.reload_interval_secs),
        ));
        Ok(Self { current })
    }

    /// The acceptor for a new connection.
    pub fn current(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

async fn watch(
    tls: TlsConfig,
    mut files: Files,
    current: Weak<RwLock<TlsAcceptor>>,
    interval: Duration,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(current) = current.upgrade() else {
            return;
        };
        let unchanged = [&tls.cert_file, &tls.key_file]
            .into_iter()
            .chain((tls.client_certs != ClientCerts::None).then_some(&tls.client_ca_file))
            .zip(&files.0)
            .all(|(path, bytes)| std::fs::read(path).is_ok_and(|now| &now == bytes));
        if unchanged {
            continue;
        }
        match load(&tls) {
            Ok((config, now)) => {
                *current.write().unwrap_or_else(|p| p.into_inner()) =
                    TlsAcceptor::from(Arc::new(config));
                files = now;
                tracing::info!("TLS certificate reloaded");
            }
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "TLS files changed but do not load; the previous certificate stays in use");
            }
        }
    }
}
