//! `tutela sharing export`: a file delivery made through the running suite's disclosure path
//! (the guard, the agreement in force, the disclosure log), then downloaded with a progress bar
//! and checked against the hash the delivery recorded. A gRPC client of the contract like any
//! other: it never touches the database, so what it writes is exactly what the log says left.

use std::path::{Path, PathBuf};

use tutela_proto::common::IdempotencyKey;
use tutela_proto::sharing::disclosure_service_client::DisclosureServiceClient;
use tutela_proto::sharing::{DeliveryChannel, DiscloseRequest, DownloadExportRequest, FileLayout};

use crate::remote::{Remote, refused, save};

/// What to export, and where. Hand-written Debug: the token is a credential.
pub struct ExportRequest {
    /// The suite, and a token of staff who may disclose for `purpose`.
    pub remote: Remote,
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
            .field("remote", &self.remote)
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

/// Makes the delivery and writes its file, showing progress.
pub async fn export(r: ExportRequest) -> anyhow::Result<Exported> {
    if r.out.exists() {
        anyhow::bail!("{} exists; choose another --out", r.out.display());
    }
    let ids = learner_ids(&r.learners)?;
    if ids.is_empty() {
        anyhow::bail!("--learners {} names no learner", r.learners.display());
    }
    let channel = r.remote.channel().await?;
    let mut client = DisclosureServiceClient::new(channel).max_decoding_message_size(8 << 20);

    let made = client
        .disclose(r.remote.authed(
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
    let stream = client
        .download_export(r.remote.authed(
            &r.purpose,
            DownloadExportRequest {
                delivery_id: delivery.delivery_id.clone(),
            },
        )?)
        .await
        .map_err(|s| refused("DownloadExport", &s))?
        .into_inner();
    let saved = save(
        stream,
        &r.out,
        "DownloadExport",
        |chunk| &chunk.data,
        |chunk| bar.set_position(u64::from(chunk.records_done)),
        || delivery.file_sha256.clone(),
    )
    .await;
    bar.finish_and_clear();
    let sha256 = saved?.sha256;
    Ok(Exported {
        delivery_id: delivery.delivery_id,
        records: delivery.record_count,
        withheld: withheld.into_iter().collect(),
        sha256,
    })
}
