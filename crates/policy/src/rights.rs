//! Data-subject rights across services: each service implements [`SubjectDataProvider`], and one
//! `tutela.privacy.v1.SubjectData` endpoint per process fans a request out to every provider it
//! hosts and answers with one bundle — so a new service joins rights handling by implementing one
//! trait (the way Moodle's privacy providers work).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tutela_proto::privacy::subject_data_server::SubjectData;
use tutela_proto::privacy::{
    DescribeSubjectRequest, DescribeSubjectResponse, EraseSubjectRequest, EraseSubjectResponse,
    ExportSubjectRequest, ExportSubjectResponse, ObjectToProcessingRequest,
    ObjectToProcessingResponse, RecordIdentityVerificationRequest,
    RecordIdentityVerificationResponse, RectifySubjectRequest, RectifySubjectResponse,
    RestrictSubjectRequest, RestrictSubjectResponse, ServiceErasure, ServiceExport,
    ServiceHoldings, ServiceRectification, VerificationMethod,
};

/// How long a recorded identity verification releases exports.
pub const VERIFICATION_VALIDITY: chrono::Duration = chrono::Duration::days(90);

use tutela_proto::common::Purpose;

use crate::authorized::{Authorized, SubjectAccess};
use crate::error::{Error, Result, Violation};
use crate::register::Register;
use crate::validate::{Checks, Field};

/// A time as every service's access export writes it: RFC 3339, whole seconds, UTC (`Z`).
pub fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// One service's part in rights handling. Implementations scope everything to
/// `access.tenant()` and include in exports only categories in `access.call().readable()`.
#[async_trait::async_trait]
pub trait SubjectDataProvider: Send + Sync + 'static {
    /// The service's short name (e.g. `enrolment`).
    fn service(&self) -> &'static str;
    /// Which categories the service holds for the subject.
    async fn describe(&self, access: &SubjectAccess) -> Result<ServiceHoldings>;
    /// Everything the service holds for the subject, as JSON.
    async fn export(&self, access: &SubjectAccess) -> Result<ServiceExport>;
    /// Erases the subject's data except what a legal hold keeps.
    async fn erase(&self, access: &SubjectAccess, reason: &str) -> Result<ServiceErasure>;
    /// Corrects the fields `correction` names where the service holds them. By default a
    /// service holds no copy of the profile's fields: it reports every one as not held.
    async fn rectify(
        &self,
        access: &SubjectAccess,
        correction: &Correction<'_>,
    ) -> Result<ServiceRectification> {
        let _ = access;
        Ok(ServiceRectification {
            service: self.service().to_owned(),
            rectified: Vec::new(),
            not_held: correction.paths.to_vec(),
            rectified_at: Some(crate::validate::timestamp(chrono::Utc::now())),
        })
    }
}

/// A correction of a subject's profile (`RectifySubject`): the fields named and their values,
/// and the idempotency of the request. Hand-written Debug: the values are personal data.
pub struct Correction<'a> {
    /// The corrected values (of the fields `paths` names).
    pub profile: Option<&'a tutela_proto::enrolment::LearnerProfile>,
    /// The fields, by their proto names.
    pub paths: &'a [String],
    /// The retry safety of the request, where it has a key.
    pub idempotency: Option<&'a crate::idempotency::Idempotency>,
}

impl std::fmt::Debug for Correction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Correction")
            .field("paths", &self.paths)
            .field("profile", &"[redacted]")
            .finish_non_exhaustive()
    }
}

const RECTIFY: &str = "tutela.privacy.v1.SubjectData/RectifySubject";

/// The purposes of an objection (GDPR Art. 21) as `field` of a request gives them: at least
/// one, each at most once, each one the register lets a person object to (a violation of
/// `field[i]` says why not). Sorted in enum order.
pub fn objection_purposes(
    c: &mut Checks,
    register: &Register,
    purposes: &[i32],
    field: &str,
) -> Field<Vec<Purpose>> {
    let before = c.len();
    c.ensure(
        !purposes.is_empty(),
        field,
        "required: the purposes objected to (tutela.common.v1.Purpose)",
    );
    let mut chosen = Vec::with_capacity(purposes.len());
    for (i, value) in purposes.iter().enumerate() {
        let at = format!("{field}[{i}]");
        match Purpose::try_from(*value) {
            Ok(Purpose::Unspecified) | Err(_) => {
                c.fail(at, "not a purpose of tutela.common.v1.Purpose");
            }
            Ok(purpose) if chosen.contains(&purpose) => c.fail(at, "named twice"),
            Ok(purpose) => match register.objection(purpose) {
                Ok(()) => chosen.push(purpose),
                Err(why) => c.fail(at, why),
            },
        }
    }
    chosen.sort_unstable();
    c.clean_since(before, || chosen)
}

/// The `SubjectData` endpoint of a process, with the providers of the services it hosts.
#[derive(Clone)]
pub struct SubjectDataDispatcher {
    providers: Vec<Arc<dyn SubjectDataProvider>>,
    /// Says which purposes a person may object to.
    register: Arc<Register>,
}

impl std::fmt::Debug for SubjectDataDispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.providers.iter().map(|p| p.service()).collect();
        f.debug_struct("SubjectDataDispatcher")
            .field("providers", &names)
            .finish()
    }
}

/// The `method` of an identity verification request: one of the closed list, never unset.
pub fn verification_method(c: &mut Checks, method: i32) -> Option<VerificationMethod> {
    parse_verification_method(c, method).ok()
}

/// [`verification_method`], parsed.
pub fn parse_verification_method(c: &mut Checks, method: i32) -> Field<VerificationMethod> {
    let method = VerificationMethod::try_from(method)
        .ok()
        .filter(|m| *m != VerificationMethod::Unspecified);
    c.parse(
        method,
        "method",
        "required: how the identity was checked, a tutela.common.v1.VerificationMethod",
    )
}

fn subject_id(subject: Option<&tutela_proto::common::SubjectRef>) -> Result<String> {
    let mut checks = Checks::new();
    let id = checks.subject(subject, "subject");
    checks.parsed(id)
}

impl SubjectDataDispatcher {
    /// A dispatcher over `providers`, under `register`.
    pub fn new(providers: Vec<Arc<dyn SubjectDataProvider>>, register: Arc<Register>) -> Self {
        Self {
            providers,
            register,
        }
    }

    /// Each chosen provider's holdings, with the subject's restriction and objections as the
    /// ledger has them now.
    async fn holdings(
        access: &SubjectAccess,
        chosen: Vec<&Arc<dyn SubjectDataProvider>>,
    ) -> Result<Vec<ServiceHoldings>> {
        let restricted = access.is_restricted().await?;
        let objected: Vec<i32> = access
            .objections()
            .await?
            .into_iter()
            .map(|p| p as i32)
            .collect();
        let mut services = Vec::with_capacity(chosen.len());
        for p in chosen {
            let mut holdings = p.describe(access).await?;
            holdings.restricted = restricted;
            holdings.objected_to = objected.clone();
            services.push(holdings);
        }
        Ok(services)
    }

    /// The providers `services` selects (all when empty); an unknown name is an error.
    fn select(&self, services: &[String]) -> Result<Vec<&Arc<dyn SubjectDataProvider>>> {
        if services.is_empty() {
            return Ok(self.providers.iter().collect());
        }
        let mut violations = Vec::new();
        let mut chosen = Vec::new();
        for (i, name) in services.iter().enumerate() {
            match self.providers.iter().find(|p| p.service() == name) {
                Some(p) => chosen.push(p),
                None => violations.push(Violation::new(
                    format!("services[{i}]"),
                    "not a service hosted by this endpoint",
                )),
            }
        }
        if violations.is_empty() {
            Ok(chosen)
        } else {
            Err(Error::InvalidArgument(violations))
        }
    }

    async fn prepare<T>(
        request: &Request<T>,
        subject: Option<&tutela_proto::common::SubjectRef>,
    ) -> Result<SubjectAccess> {
        let call = Authorized::of(request)?;
        let id = subject_id(subject)?;
        let access = call.subject(&id).await?;
        // Looking a subject up is itself an access, whatever the providers return.
        access.record(crate::categories::CategorySet::EMPTY);
        Ok(access)
    }
}

#[tonic::async_trait]
impl SubjectData for SubjectDataDispatcher {
    async fn describe_subject(
        &self,
        request: Request<DescribeSubjectRequest>,
    ) -> std::result::Result<Response<DescribeSubjectResponse>, Status> {
        let access = Self::prepare(&request, request.get_ref().subject.as_ref()).await?;
        let chosen = self.select(&request.get_ref().services)?;
        let services = Self::holdings(&access, chosen).await?;
        Ok(Response::new(DescribeSubjectResponse { services }))
    }

    async fn record_identity_verification(
        &self,
        request: Request<RecordIdentityVerificationRequest>,
    ) -> std::result::Result<Response<RecordIdentityVerificationResponse>, Status> {
        let access = Self::prepare(&request, request.get_ref().subject.as_ref()).await?;
        let r = request.get_ref();
        let mut c = Checks::new();
        let reference = c.required(&r.evidence_reference, "evidence_reference", 200);
        let method = parse_verification_method(&mut c, r.method);
        let (reference, method) = c.parsed((reference, method))?;
        access
            .record_identity_verification(method, reference)
            .await?;
        let verified_at = chrono::Utc::now();
        Ok(Response::new(RecordIdentityVerificationResponse {
            verified_at: Some(crate::validate::timestamp(verified_at)),
            valid_until: Some(crate::validate::timestamp(
                verified_at + VERIFICATION_VALIDITY,
            )),
        }))
    }

    async fn export_subject(
        &self,
        request: Request<ExportSubjectRequest>,
    ) -> std::result::Result<Response<ExportSubjectResponse>, Status> {
        let access = Self::prepare(&request, request.get_ref().subject.as_ref()).await?;
        // An access request is released only on a recent, recorded identity check (E8).
        let verified = access.identity_verified_at().await?;
        if verified.is_none_or(|at| at + VERIFICATION_VALIDITY < chrono::Utc::now()) {
            return Err(Error::FailedPrecondition {
                reason: crate::Precondition::IdentityNotVerified,
                message: "record a verification of the requester's identity first \
                          (RecordIdentityVerification)"
                    .into(),
            }
            .into());
        }
        let mut exports = Vec::new();
        for p in self.select(&request.get_ref().services)? {
            let export = p.export(&access).await?;
            let categories = export
                .categories
                .iter()
                .filter_map(|c| tutela_proto::common::DataCategory::try_from(*c).ok())
                .collect();
            access.record(categories);
            exports.push(export);
        }
        Ok(Response::new(ExportSubjectResponse { exports }))
    }

    async fn erase_subject(
        &self,
        request: Request<EraseSubjectRequest>,
    ) -> std::result::Result<Response<EraseSubjectResponse>, Status> {
        let access = Self::prepare(&request, request.get_ref().subject.as_ref()).await?;
        let reason = request.get_ref().reason.trim();
        if reason.is_empty() {
            return Err(Error::invalid("reason", "required: why the data is erased").into());
        }
        let mut services = Vec::new();
        for p in self.select(&request.get_ref().services)? {
            services.push(p.erase(&access, reason).await?);
        }
        Ok(Response::new(EraseSubjectResponse { services }))
    }

    async fn rectify_subject(
        &self,
        request: Request<RectifySubjectRequest>,
    ) -> std::result::Result<Response<RectifySubjectResponse>, Status> {
        let access = Self::prepare(&request, request.get_ref().subject.as_ref()).await?;
        let r = request.get_ref();
        let paths: Vec<String> = r
            .update_mask
            .as_ref()
            .map(|m| m.paths.clone())
            .unwrap_or_default();
        let mut c = Checks::new();
        let reason = c.required(&r.reason, "reason", 500);
        let key = c.key(r.idempotency_key.as_ref(), "idempotency_key");
        c.ensure(
            !paths.is_empty(),
            "update_mask",
            "required: the fields of profile to correct",
        );
        let (_, key) = c.parsed((reason, key))?;
        let idempotency = crate::idempotency::Idempotency::of_request(key, RECTIFY, r, |m| {
            m.idempotency_key = None;
        });
        let correction = Correction {
            profile: r.profile.as_ref(),
            paths: &paths,
            idempotency: idempotency.as_ref(),
        };
        let mut services = Vec::new();
        for p in self.select(&r.services)? {
            services.push(p.rectify(&access, &correction).await?);
        }
        Ok(Response::new(RectifySubjectResponse { services }))
    }

    async fn restrict_subject(
        &self,
        request: Request<RestrictSubjectRequest>,
    ) -> std::result::Result<Response<RestrictSubjectResponse>, Status> {
        let access = Self::prepare(&request, request.get_ref().subject.as_ref()).await?;
        let body = request.get_ref();
        let reason = body.reason.trim();
        if reason.is_empty() {
            return Err(Error::invalid("reason", "required: why processing is restricted").into());
        }
        if reason.chars().count() > 500 {
            return Err(Error::invalid("reason", "at most 500 characters").into());
        }
        let chosen = self.select(&body.services)?;
        // Restriction is the guard's to enforce, for every service at once: it is recorded
        // with the subject's consents, which every process's guard reads.
        access.restrict(body.restricted, reason).await?;
        let services = Self::holdings(&access, chosen).await?;
        Ok(Response::new(RestrictSubjectResponse { services }))
    }

    async fn object_to_processing(
        &self,
        request: Request<ObjectToProcessingRequest>,
    ) -> std::result::Result<Response<ObjectToProcessingResponse>, Status> {
        let body = request.get_ref();
        let mut c = Checks::new();
        let subject = c.subject(body.subject.as_ref(), "subject");
        let purposes = objection_purposes(&mut c, &self.register, &body.purposes, "purposes");
        let reason = c.required(&body.reason, "reason", 500);
        let (_, purposes, reason) = c.parsed((subject, purposes, reason))?;
        let chosen = self.select(&body.services)?;
        let access = Self::prepare(&request, body.subject.as_ref()).await?;
        // Like a restriction, an objection is the guard's to enforce in every service at once:
        // it is recorded with the subject's consents, which every process's guard reads.
        access.object(&purposes, body.objected, reason).await?;
        let services = Self::holdings(&access, chosen).await?;
        Ok(Response::new(ObjectToProcessingResponse { services }))
    }
}
