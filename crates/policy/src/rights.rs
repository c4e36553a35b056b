//! Data-subject rights across services: each service implements [`SubjectDataProvider`], and one
//! `tutela.privacy.v1.SubjectData` endpoint per process fans a request out to every provider it
//! hosts and answers with one bundle — so a new service joins rights handling by implementing one
//! trait (the way Moodle's privacy providers work).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tutela_proto::privacy::subject_data_server::SubjectData;
use tutela_proto::privacy::{
    DescribeSubjectRequest, DescribeSubjectResponse, EraseSubjectRequest, EraseSubjectResponse,
    ExportSubjectRequest, ExportSubjectResponse, RestrictSubjectRequest, RestrictSubjectResponse,
    ServiceErasure, ServiceExport, ServiceHoldings,
};

use crate::authorized::Authorized;
use crate::error::{Error, Result, Violation};

/// One service's part in rights handling. Implementations scope everything to
/// `access.tenant()` and include in exports only categories in `access.readable()`.
#[async_trait::async_trait]
pub trait SubjectDataProvider: Send + Sync + 'static {
    /// The service's short name (e.g. `enrolment`).
    fn service(&self) -> &'static str;
    /// Which categories the service holds for the subject.
    async fn describe(&self, access: &Authorized, subject_id: &str) -> Result<ServiceHoldings>;
    /// Everything the service holds for the subject, as JSON.
    async fn export(&self, access: &Authorized, subject_id: &str) -> Result<ServiceExport>;
    /// Erases the subject's data except what a legal hold keeps.
    async fn erase(
        &self,
        access: &Authorized,
        subject_id: &str,
        reason: &str,
    ) -> Result<ServiceErasure>;
    /// Restricts (or lifts the restriction of) processing of the subject's data.
    async fn restrict(
        &self,
        access: &Authorized,
        subject_id: &str,
        restricted: bool,
        reason: &str,
    ) -> Result<ServiceHoldings>;
}

/// The `SubjectData` endpoint of a process, with the providers of the services it hosts.
#[derive(Clone, Default)]
pub struct SubjectDataDispatcher {
    providers: Vec<Arc<dyn SubjectDataProvider>>,
}

impl std::fmt::Debug for SubjectDataDispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.providers.iter().map(|p| p.service()).collect();
        f.debug_struct("SubjectDataDispatcher")
            .field("providers", &names)
            .finish()
    }
}

fn subject_id(subject: Option<&tutela_proto::common::SubjectRef>) -> Result<String> {
    let id = subject.map(|s| s.subject_id.trim()).unwrap_or_default();
    if id.is_empty() {
        return Err(Error::invalid("subject.subject_id", "required"));
    }
    uuid::Uuid::parse_str(id)
        .map_err(|_| Error::invalid("subject.subject_id", "must be a UUID"))?;
    Ok(id.to_owned())
}

impl SubjectDataDispatcher {
    /// A dispatcher over `providers`.
    pub fn new(providers: Vec<Arc<dyn SubjectDataProvider>>) -> Self {
        Self { providers }
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

    fn prepare<T>(
        request: &Request<T>,
        subject: Option<&tutela_proto::common::SubjectRef>,
    ) -> Result<(Authorized, String)> {
        let access = Authorized::of(request)?;
        let id = subject_id(subject)?;
        access.require_subject(&id)?;
        // Looking a subject up is itself an access, whatever the providers return.
        access.record_access(&id, crate::categories::CategorySet::EMPTY);
        Ok((access, id))
    }
}

#[tonic::async_trait]
impl SubjectData for SubjectDataDispatcher {
    async fn describe_subject(
        &self,
        request: Request<DescribeSubjectRequest>,
    ) -> std::result::Result<Response<DescribeSubjectResponse>, Status> {
        let (access, id) = Self::prepare(&request, request.get_ref().subject.as_ref())?;
        let mut services = Vec::new();
        for p in self.select(&request.get_ref().services)? {
            services.push(p.describe(&access, &id).await?);
        }
        Ok(Response::new(DescribeSubjectResponse { services }))
    }

    async fn export_subject(
        &self,
        request: Request<ExportSubjectRequest>,
    ) -> std::result::Result<Response<ExportSubjectResponse>, Status> {
        let (access, id) = Self::prepare(&request, request.get_ref().subject.as_ref())?;
        let mut exports = Vec::new();
        for p in self.select(&request.get_ref().services)? {
            let export = p.export(&access, &id).await?;
            let categories = export
                .categories
                .iter()
                .filter_map(|c| tutela_proto::common::DataCategory::try_from(*c).ok())
                .collect();
            access.record_access(&id, categories);
            exports.push(export);
        }
        Ok(Response::new(ExportSubjectResponse { exports }))
    }

    async fn erase_subject(
        &self,
        request: Request<EraseSubjectRequest>,
    ) -> std::result::Result<Response<EraseSubjectResponse>, Status> {
        let (access, id) = Self::prepare(&request, request.get_ref().subject.as_ref())?;
        let reason = request.get_ref().reason.trim();
        if reason.is_empty() {
            return Err(Error::invalid("reason", "required: why the data is erased").into());
        }
        let mut services = Vec::new();
        for p in self.select(&request.get_ref().services)? {
            services.push(p.erase(&access, &id, reason).await?);
        }
        Ok(Response::new(EraseSubjectResponse { services }))
    }

    async fn restrict_subject(
        &self,
        request: Request<RestrictSubjectRequest>,
    ) -> std::result::Result<Response<RestrictSubjectResponse>, Status> {
        let (access, id) = Self::prepare(&request, request.get_ref().subject.as_ref())?;
        let body = request.get_ref();
        if body.reason.trim().is_empty() {
            return Err(Error::invalid("reason", "required: why processing is restricted").into());
        }
        let mut services = Vec::new();
        for p in self.select(&body.services)? {
            services.push(
                p.restrict(&access, &id, body.restricted, body.reason.trim())
                    .await?,
            );
        }
        Ok(Response::new(RestrictSubjectResponse { services }))
    }
}
