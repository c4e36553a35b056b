//! The consent ledger read over gRPC, for a process that does not host the subscription service
//! (a service deployed on its own). It asks `ConsentLedger/GetConsentState` with a service token
//! of the subject's tenant, under the purpose `consent_management`; the gate in front of it caches
//! the answer for at most a second, which bounds how late a withdrawal is seen here.
//!
//! Everything that is not a clear answer fails closed (UNAVAILABLE): an unreachable ledger, a
//! refused token, a missing token file, or an answer with the recipient withheld by the ledger's
//! redaction (an empty recipient would otherwise read as a grant for the whole purpose).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tutela_proto::common::{Purpose, SubjectRef};
use tutela_proto::consent::consent_ledger_client::ConsentLedgerClient;
use tutela_proto::consent::{
    ConsentActor, GetConsentStateRequest, RecordConsentRequest, RecordIdentityVerificationRequest,
    RecordObjectionRequest, RecordRestrictionRequest,
};

use super::{
    ConsentFact, ConsentSnapshot, ConsentSource, GuardianGrant, IdentityVerification, Objection,
    Restriction,
};
use crate::error::{Error, Result};
use crate::guard::WITHHELD_HEADER;
use crate::scope::Tenant;

/// How long to wait for the ledger, to connect and to answer. A consent check sits in front of a
/// caller's request, so a slow ledger must not hold it for the caller's whole deadline.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Where the ledger is and how to call it.
#[derive(Debug, Clone)]
pub struct RemoteLedgerSettings {
    /// `http://host:port`, or `https://host:port` with `ca_file`.
    pub endpoint: String,
    /// PEM file with the CA that signed the ledger's TLS certificate (https only).
    pub ca_file: Option<PathBuf>,
    /// Directory with one file per tenant, named after the tenant, holding a bearer token of a
    /// `service` principal of that tenant. Read on every call, so a rotated token (a Kubernetes
    /// secret update) is used without a restart.
    pub token_dir: PathBuf,
}

/// What a refused write to the ledger becomes here: UNAVAILABLE naming `what` and only the
/// ledger's status code (its message may be anything).
fn refused(status: &tonic::Status, what: &str) -> Error {
    Error::Unavailable(format!(
        "the consent ledger answered {:?} to {what}",
        status.code()
    ))
}

/// Mints a service token for a tenant: see [`RemoteLedger::with_minted_tokens`].
pub type MintToken = std::sync::Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The ledger service as a [`ConsentSource`].
pub struct RemoteLedger {
    client: ConsentLedgerClient<Channel>,
    token_dir: PathBuf,
    mint: Option<MintToken>,
}

impl std::fmt::Debug for RemoteLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteLedger")
            .field("token_dir", &self.token_dir)
            .finish_non_exhaustive()
    }
}

impl RemoteLedger {
    /// A source calling the ledger at `settings.endpoint`. The connection is made on first use,
    /// so this process starts (and reports its health) whether or not the ledger is up yet.
    pub fn new(settings: &RemoteLedgerSettings) -> Result<Self> {
        let invalid = |what: String| Error::Internal(format!("consent ledger endpoint: {what}"));
        let mut endpoint = Endpoint::from_shared(settings.endpoint.clone())
            .map_err(|e| invalid(e.to_string()))?
            .connect_timeout(TIMEOUT)
            .timeout(TIMEOUT);
        if let Some(ca) = &settings.ca_file {
            let pem =
                std::fs::read(ca).map_err(|e| invalid(format!("reading {}: {e}", ca.display())))?;
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
                .map_err(|e| invalid(e.to_string()))?;
        }
        Ok(Self {
            client: ConsentLedgerClient::new(endpoint.connect_lazy()),
            token_dir: settings.token_dir.clone(),
            mint: None,
        })
    }

    /// For a tenant whose token directory holds no token, a token from `mint`: in a development
    /// setup, whose processes share one development secret, each signs its own service tokens
    /// as it does for its other calls to services, so nobody has to write token files first.
    pub fn with_minted_tokens(mut self, mint: MintToken) -> Self {
        self.mint = Some(mint);
        self
    }

    fn token(&self, tenant: &str) -> Result<String> {
        tenant_token(&self.token_dir, tenant)
            .or_else(|| self.mint.as_ref().and_then(|mint| mint(tenant)))
            .ok_or_else(|| {
                Error::Unavailable(format!(
                    "no consent ledger token for this tenant in {}",
                    self.token_dir.display()
                ))
            })
    }
}

/// The bearer token of a `service` principal of `tenant`, from the file named after the tenant
/// in `dir` (read on every call, so a rotated Kubernetes secret is used without a restart);
/// `None` when there is none. Every call one service makes to another takes its token here.
pub fn tenant_token(dir: &Path, tenant: &str) -> Option<String> {
    // The tenant comes from a verified token, but it names a file: keep it to one plain path
    // component.
    let plain = !tenant.is_empty()
        && !tenant.starts_with('.')
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !plain {
        return None;
    }
    std::fs::read_to_string(dir.join(tenant))
        .ok()
        .map(|token| token.trim().to_owned())
        .filter(|token| !token.is_empty())
}

impl RemoteLedger {
    /// `body` as a request with the tenant's service token and the ledger's purpose.
    fn request<T>(&self, tenant: &str, body: T) -> Result<tonic::Request<T>> {
        let token = self.token(tenant)?;
        let mut request = tonic::Request::new(body);
        let metadata = request.metadata_mut();
        let bearer = format!("Bearer {token}").parse().map_err(|_| {
            Error::Unavailable("the consent ledger token is not valid ASCII".into())
        })?;
        metadata.insert("authorization", bearer);
        metadata.insert(
            "x-tutela-purpose",
            tonic::metadata::MetadataValue::from_static("consent_management"),
        );
        Ok(request)
    }
}

#[async_trait::async_trait]
impl ConsentSource for RemoteLedger {
    async fn restrict(&self, change: &Restriction<'_>) -> Result<()> {
        let request = self.request(
            change.tenant.as_str(),
            RecordRestrictionRequest {
                subject: Some(SubjectRef {
                    subject_id: change.subject.to_owned(),
                }),
                restricted: change.restricted,
                reason: change.reason.to_owned(),
                requested_by: change.recorded_by.to_owned(),
            },
        )?;
        self.client
            .clone()
            .record_restriction(request)
            .await
            .map(|_| ())
            .map_err(|status| refused(&status, "a restriction"))
    }

    async fn object(&self, change: &Objection<'_>) -> Result<()> {
        let request = self.request(
            change.tenant.as_str(),
            RecordObjectionRequest {
                subject: Some(SubjectRef {
                    subject_id: change.subject.to_owned(),
                }),
                purposes: change.purposes.iter().map(|p| *p as i32).collect(),
                objected: change.objected,
                reason: change.reason.to_owned(),
                requested_by: change.recorded_by.to_owned(),
            },
        )?;
        self.client
            .clone()
            .record_objection(request)
            .await
            .map(|_| ())
            .map_err(|status| refused(&status, "an objection"))
    }

    async fn verify_identity(&self, v: &IdentityVerification<'_>) -> Result<()> {
        let request = self.request(
            v.tenant.as_str(),
            RecordIdentityVerificationRequest {
                subject: Some(SubjectRef {
                    subject_id: v.subject.to_owned(),
                }),
                method: v.method as i32,
                evidence_reference: v.evidence_reference.to_owned(),
                verified_by: v.verified_by.to_owned(),
            },
        )?;
        self.client
            .clone()
            .record_identity_verification(request)
            .await
            .map(|_| ())
            .map_err(|status| refused(&status, "an identity verification"))
    }

    async fn record_guardian_consent(&self, grant: &GuardianGrant<'_>) -> Result<()> {
        let request = self.request(
            grant.tenant.as_str(),
            RecordConsentRequest {
                subject: Some(SubjectRef {
                    subject_id: grant.subject.to_owned(),
                }),
                purpose: grant.purpose as i32,
                recipient: String::new(),
                evidence: Some(grant.evidence.clone()),
                occurred_at: None,
                idempotency_key: grant.idempotency_key.map(|key| {
                    tutela_proto::common::IdempotencyKey {
                        key: key.to_owned(),
                    }
                }),
            },
        )?;
        self.client
            .clone()
            .record_consent(request)
            .await
            .map(|_| ())
            .map_err(|status| refused(&status, "a guardian's consent"))
    }

    async fn snapshot(&self, tenant: &Tenant, subject: &str) -> Result<ConsentSnapshot> {
        let request = self.request(
            tenant.as_str(),
            GetConsentStateRequest {
                subject: Some(SubjectRef {
                    subject_id: subject.to_owned(),
                }),
                purpose: Purpose::Unspecified as i32,
            },
        )?;
        let response = match self.client.clone().get_consent_state(request).await {
            Ok(response) => response,
            // The ledger has no entry for the subject (in this tenant): no consent.
            Err(status) if status.code() == tonic::Code::NotFound => {
                return Ok(ConsentSnapshot::default());
            }
            Err(status) => {
                // The status message is the ledger's and may be anything; only the code is kept.
                return Err(Error::Unavailable(format!(
                    "the consent ledger answered {:?}",
                    status.code()
                )));
            }
        };
        if response.metadata().contains_key(WITHHELD_HEADER) {
            return Err(Error::Unavailable(
                "the consent ledger withheld part of the state from this service's token".into(),
            ));
        }
        let response = response.into_inner();
        let mut snapshot = ConsentSnapshot {
            restricted: response.restricted,
            identity_verified_at: response
                .identity_verified_at
                .as_ref()
                .and_then(crate::validate::time_of),
            ..ConsentSnapshot::default()
        };
        for purpose in response.objected_to {
            // A purpose newer than this build is not one it processes for.
            if let Ok(purpose) = Purpose::try_from(purpose) {
                snapshot.set_objection(purpose, true);
            }
        }
        for state in response.states {
            let Ok(purpose) = Purpose::try_from(state.purpose) else {
                // A purpose newer than this build cannot be one this build checks.
                continue;
            };
            snapshot.set(
                purpose,
                &state.recipient,
                ConsentFact {
                    granted: state.granted,
                    entry: 0,
                    by_guardian: state.actor == ConsentActor::Guardian as i32,
                },
            );
        }
        Ok(snapshot)
    }
}
