//! The running suite as operator commands reach it (`sharing export`, `rights status`, `rights
//! export`): a gRPC client of the contract like any other, with a bearer token and a purpose on
//! every call, so that the guard authorises and audits what the command does. None of them
//! touches the database.

use std::path::PathBuf;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Where the suite is and who the command acts as. Hand-written Debug: the token is a
/// credential.
pub struct Remote {
    /// `http://host:port` (or https with `ca_file`).
    pub endpoint: String,
    /// PEM of the CA of the server's certificate.
    pub ca_file: Option<PathBuf>,
    /// A bearer token of the staff member the command acts as.
    pub token: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("endpoint", &self.endpoint)
            .field("ca_file", &self.ca_file)
            .field("token", &"[redacted]")
            .finish()
    }
}

impl Remote {
    /// A connected channel to the suite.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        let mut endpoint = Endpoint::from_shared(self.endpoint.clone())?;
        if let Some(ca) = &self.ca_file {
            let pem = std::fs::read(ca)?;
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))?;
        }
        endpoint
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("connecting to {}: {e}", self.endpoint))
    }

    /// `body` as a request carrying the token and `purpose`.
    pub fn authed<T>(&self, purpose: &str, body: T) -> anyhow::Result<tonic::Request<T>> {
        let mut request = tonic::Request::new(body);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token)
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
}

/// Explains a refusal: the status and its ErrorInfo reason (never learners' data: the server's
/// messages carry none).
pub fn refused(what: &str, status: &tonic::Status) -> anyhow::Error {
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

/// What [`save`] wrote.
#[derive(Debug)]
pub struct Saved {
    /// SHA-256 (hex) of the bytes written.
    pub sha256: String,
    /// How many bytes.
    pub bytes: u64,
}

/// Writes the chunks of `stream` (the bytes `data` picks out of each; `each` sees every chunk,
/// for a progress bar) to `out`, through `<out>.partial` so that a failed or unverified download
/// never leaves a file that looks complete. `expected` names the SHA-256 the server recorded
/// (read once the stream is done, so that it may come with the first chunk); a mismatch leaves
/// nothing. `what` names the RPC in errors.
pub async fn save<M>(
    mut stream: tonic::Streaming<M>,
    out: &std::path::Path,
    what: &str,
    data: impl Fn(&M) -> &[u8],
    mut each: impl FnMut(&M),
    expected: impl FnOnce() -> String,
) -> anyhow::Result<Saved> {
    use sha2::Digest;
    use std::io::Write;
    let partial = out.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", partial.display()))?;
    let mut hash = sha2::Sha256::new();
    let mut bytes = 0u64;
    let written = async {
        while let Some(chunk) = stream.message().await.map_err(|s| refused(what, &s))? {
            let piece = data(&chunk);
            hash.update(piece);
            file.write_all(piece)?;
            bytes += piece.len() as u64;
            each(&chunk);
        }
        file.sync_all()?;
        anyhow::Ok(())
    }
    .await;
    let sha256 = hex::encode(hash.finalize());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    if sha256 != expected() {
        let _ = std::fs::remove_file(&partial);
        anyhow::bail!("what {what} sent does not match the SHA-256 the server recorded for it");
    }
    std::fs::rename(&partial, out)?;
    Ok(Saved { sha256, bytes })
}
