//! `tutela dev-certs`: a development CA and certificates signed by it, so that a newcomer can run
//! the suite with TLS and mTLS on one machine. Never for production: the CA's key sits beside the
//! certificates, unencrypted (cert-manager issues production certificates; see deploy/k8s).

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The files `tutela dev-certs` writes into its directory.
pub const FILES: [&str; 6] = [
    "ca.pem",
    "ca-key.pem",
    "server.pem",
    "server-key.pem",
    "client.pem",
    "client-key.pem",
];

/// Makes the CA, a server certificate for `hosts` (names or IP addresses; `localhost` and
/// `127.0.0.1` always) and a client certificate whose common name and URI SAN name `client`,
/// valid for `days`, in `dir`. Refuses to overwrite: an existing CA would stop verifying
/// certificates it signed.
pub fn write(
    dir: &Path,
    hosts: &[String],
    client: &str,
    days: u32,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let paths: Vec<PathBuf> = FILES.iter().map(|f| dir.join(f)).collect();
    if let Some(existing) = paths.iter().find(|p| p.exists()) {
        anyhow::bail!(
            "{} exists: dev-certs never overwrites (remove the directory's certificates first)",
            existing.display()
        );
    }
    use chrono::Datelike;
    let day = |d: chrono::NaiveDate| rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8);
    let today = chrono::Utc::now().date_naive();
    let now = day(today);
    let until = day(today + chrono::Days::new(u64::from(days)));

    let ca_key = KeyPair::generate().context("CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA")?;
    ca.distinguished_name
        .push(DnType::CommonName, "tutela development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now;
    ca.not_after = until;
    let ca_cert = ca.self_signed(&ca_key).context("signing the CA")?;
    let issuer = Issuer::new(ca, &ca_key);

    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into()];
    names.extend(
        hosts
            .iter()
            .filter(|h| !names.contains(h))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let server_key = KeyPair::generate().context("server key")?;
    let mut server = CertificateParams::new(Vec::<String>::new()).context("server")?;
    server.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => n
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .with_context(|| format!("{n} is not a host name")),
        })
        .collect::<anyhow::Result<_>>()?;
    server
        .distinguished_name
        .push(DnType::CommonName, names[0].clone());
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.not_before = now;
    server.not_after = until;
    let server_cert = server
        .signed_by(&server_key, &issuer)
        .context("signing the server certificate")?;

    let client_key = KeyPair::generate().context("client key")?;
    let mut client_params = CertificateParams::new(Vec::<String>::new()).context("client")?;
    client_params
        .distinguished_name
        .push(DnType::CommonName, client);
    client_params.subject_alt_names = vec![SanType::URI(
        format!("urn:tutela:principal:{client}")
            .try_into()
            .context("client name")?,
    )];
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    client_params.not_before = now;
    client_params.not_after = until;
    let client_cert = client_params
        .signed_by(&client_key, &issuer)
        .context("signing the client certificate")?;

    let contents = [
        ca_cert.pem(),
        ca_key.serialize_pem(),
        server_cert.pem(),
        server_key.serialize_pem(),
        client_cert.pem(),
        client_key.serialize_pem(),
    ];
    for (path, pem) in paths.iter().zip(contents) {
        write_private(path, pem.as_bytes())?;
    }
    Ok(paths)
}

/// Writes `bytes` to a new file only its owner can read (keys among them).
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}
