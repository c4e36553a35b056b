//! `tutela sharing export`: a file delivery made through the running suite's disclosure path
//! (the guard, the agreement in force, the disclosure log), then downloaded with a progress bar
//! and checked against the hash the delivery recorded. A gRPC client of the contract like any
//! other: it never touches the database, so what it writes is exactly what the log says left.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tutela_proto::common::IdempotencyKey;
use tutela_proto::sharing::disclosure_service_client::DisclosureServiceClient;
use tutela_proto::sharing::{DeliveryChannel, DiscloseRequest, DownloadExportRequest, FileLayout};

/// What to export, and where. Hand-written Debug: the token is a credential.
pub struct ExportRequest {
    /// `http://host:port` (or https with `ca_file`).
    pub endpoint: String,
    /// PEM of the CA of the server's certificate.
    pub ca_file: Option<PathBuf>,
    /// A bearer token of staff who may disclose for `purpose`.
    pub token: String,
    /// The register purpose (`exam_booking`, `funder_reporting`, ...).
    pub purpose: String,
    /// The partner.
    pub partner_id: String,
    /// A file with one learner id per line (blank lines and `#` comments skipped).
    pub learners: PathBuf,
    /// The file's layout.
    pub layout: FileLayout,
    /// Where to write the file (must not exist).
    pub out: PathBuf,
    /// Makes a retried export answer with the same delivery.
    pub idempotency_key: Option<String>,
    /// Only records of this course; empty for every course.
    pub course_id: String,
}

impl std::fmt::Debug for ExportRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportRequest")
            .field("endpoint", &self.endpoint)
            .field("token", &"[redacted]")
            .field("purpose", &self.purpose)
            .field("partner_id", &self.partner_id)
            .field("layout", &self.layout)
            .field("course_id", &self.course_id)
            .finish_non_exhaustive()
    }
}

/// What an export made.
#[derive(Debug)]
pub struct Exported {
    /// The delivery's id.
    pub delivery_id: String,
    /// Records in the file.
    pub records: u32,
    /// Learners not disclosed, by reason (`CONSENT_REQUIRED`: 3).
    pub withheld: Vec<(String, usize)>,
    /// The file's SHA-256, as recorded with the delivery.
    pub sha256: String,
}

fn learner_ids(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading --learners {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

/// A request carrying the token and the purpose.
fn authed<T>(token: &str, purpose: &str, body: T) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(body);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .map_err(|_| anyhow::anyhow!("--token is not valid ASCII"))?,
    );
    request.metadata_mut().insert(
        "x-tutela-purpose",
        purpose
            .parse()
            .map_err(|_| anyhow::anyhow!("--purpose is not valid ASCII"))?,
    );
    Ok(request)
}

/// Explains a refusal: the status and its ErrorInfo reason (never learners' data: the server's
/// messages carry none).
fn refused(what: &str, status: &tonic::Status) -> anyhow::Error {
    use tonic_types::StatusExt;
    let reason = status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default();
    let fields: Vec<String> = status
        .get_details_bad_request()
        .map(|b| {
            b.field_violations
                .into_iter()
                .map(|v| format!("{}: {}", v.field, v.description))
                .collect()
        })
        .unwrap_or_default();
    anyhow::anyhow!(
        "{what} refused: {:?} {reason}: {}{}",
        status.code(),
        status.message(),
        if fields.is_empty() {
            String::new()
        } else {
            format!(" ({})", fields.join("; "))
        }
    )
}

/// Makes the delivery and writes its file, showing progress.
pub async fn export(r: ExportRequest) -> anyhow::Result<Exported> {
    if r.out.exists() {
        anyhow::bail!("{} exists; choose another --out", r.out.display());
    }
    let ids = learner_ids(&r.learners)?;
    if ids.is_empty() {
        anyhow::bail!("--learners {} names no learner", r.learners.display());
    }
    let mut endpoint = Endpoint::from_shared(r.endpoint.clone())?;
    if let Some(ca) = &r.ca_file {
        let pem = std::fs::read(ca)?;
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("connecting to {}: {e}", r.endpoint))?;
    let mut client = DisclosureServiceClient::new(channel).max_decoding_message_size(8 << 20);

    let made = client
        .disclose(authed(
            &r.token,
            &r.purpose,
            DiscloseRequest {
                partner_id: r.partner_id.clone(),
                learner_ids: ids,
                idempotency_key: r.idempotency_key.clone().map(|key| IdempotencyKey { key }),
                channel: DeliveryChannel::File as i32,
                layout: r.layout as i32,
                course_id: r.course_id.clone(),
            },
        )?)
        .await
        .map_err(|s| refused("Disclose", &s))?
        .into_inner();
    let delivery = made
        .delivery
        .ok_or_else(|| anyhow::anyhow!("Disclose answered without a delivery"))?;
    let mut withheld: std::collections::BTreeMap<String, usize> = Default::default();
    for w in &made.withheld {
        *withheld.entry(w.reason.clone()).or_default() += 1;
    }

    let bar = indicatif::ProgressBar::new(u64::from(delivery.record_count));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} records")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message("exporting");
    let partial = r.out.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", partial.display()))?;
    let mut hash = Sha256::new();
    let mut stream = client
        .download_export(authed(
            &r.token,
            &r.purpose,
            DownloadExportRequest {
                delivery_id: delivery.delivery_id.clone(),
            },
        )?)
        .await
        .map_err(|s| refused("DownloadExport", &s))?
        .into_inner();
    let written = async {
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| refused("DownloadExport", &s))?
        {
            hash.update(&chunk.data);
            file.write_all(&chunk.data)?;
            bar.set_position(u64::from(chunk.records_done));
        }
        file.sync_all()?;
        anyhow::Ok(())
    }
    .await;
    bar.finish_and_clear();
    let sha256 = hex::encode(hash.finalize());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    if sha256 != delivery.file_sha256 {
        let _ = std::fs::remove_file(&partial);
        anyhow::bail!(
            "the file received does not match the hash recorded with delivery {}",
            delivery.delivery_id
        );
    }
    std::fs::rename(&partial, &r.out)?;
    Ok(Exported {
        delivery_id: delivery.delivery_id,
        records: delivery.record_count,
        withheld: withheld.into_iter().collect(),
        sha256,
    })
}
