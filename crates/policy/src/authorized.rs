//! What a handler gets from the guard: proof that this call was authenticated, named a
//! registered purpose and passed the access rules, with the tenant to scope every query by and
//! the categories the caller may read. Only the guard can make one; a handler reached without it
//! (a wiring mistake) fails closed.

use std::sync::{Arc, Mutex};

use tutela_proto::common::{DataCategory, Purpose};

use crate::audit::{AuditEvent, AuditLog, Caller, Outcome};
use crate::categories::CategorySet;
use crate::consent::ConsentGate;
use crate::error::{Error, Result};
use crate::principal::Principal;
use crate::register::PurposeRule;

#[derive(Debug)]
struct Inner {
    principal: Principal,
    tenant: crate::scope::Tenant,
    purpose: Purpose,
    rule: Arc<PurposeRule>,
    readable: CategorySet,
    /// The categories the RPC's response is annotated with, as far as the caller may read them:
    /// what a response of this call can disclose once the guard has redacted it.
    response: CategorySet,
    rpc: String,
    policies: Vec<String>,
    consent: Arc<ConsentGate>,
    audit: AuditLog,
    accesses: Mutex<Vec<Access>>,
    /// Outbox rows of the call's decision, staged by writes that touch no subject's data.
    decision_staged: Mutex<Vec<String>>,
    /// Every subject a check of this call refused, with the reason: a list call may be refused
    /// several, and each refusal is a decision of its own.
    refusals: Mutex<Vec<(String, &'static str)>>,
}

/// What a call did to one subject's data, for its audit record.
#[derive(Debug)]
pub(crate) struct Access {
    pub(crate) subject: String,
    pub(crate) categories: CategorySet,
    /// Outbox rows staged by the call's writes to the subject.
    pub(crate) staged: Vec<String>,
    /// Whether the call also noted an access that staged nothing (a read): then the record is
    /// owed whatever became of the staged rows.
    pub(crate) unstaged: bool,
}

/// An authorised call. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Authorized(Arc<Inner>);

impl Authorized {
    // Each argument is one part of the guard's decision, and only the guard calls this.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        principal: Principal,
        purpose: Purpose,
        rule: Arc<PurposeRule>,
        readable: CategorySet,
        response: CategorySet,
        rpc: String,
        policies: Vec<String>,
        consent: Arc<ConsentGate>,
        audit: AuditLog,
    ) -> Self {
        Self(Arc::new(Inner {
            tenant: crate::scope::Tenant::verified(principal.tenant.clone()),
            principal,
            purpose,
            rule,
            readable,
            response: response.intersect(readable),
            rpc,
            policies,
            consent,
            audit,
            accesses: Mutex::new(Vec::new()),
            decision_staged: Mutex::new(Vec::new()),
            refusals: Mutex::new(Vec::new()),
        }))
    }

    /// The guard's authorisation of `request`, or a failure if the request did not pass the guard.
    pub fn of<T>(request: &tonic::Request<T>) -> Result<Self> {
        request
            .extensions()
            .get::<Self>()
            .cloned()
            .ok_or_else(|| Error::internal("handler reached without the guard's authorisation"))
    }

    /// The tenant every query of this call is scoped to.
    pub fn tenant(&self) -> &str {
        &self.0.principal.tenant
    }

    /// The caller's tenant, as the capability every scoped query takes.
    pub fn scope(&self) -> &crate::scope::Tenant {
        &self.0.tenant
    }

    /// Who is calling.
    pub fn principal(&self) -> &Principal {
        &self.0.principal
    }

    /// The purpose of the call.
    pub fn purpose(&self) -> Purpose {
        self.0.purpose
    }

    /// What the register says about the purpose.
    pub fn rule(&self) -> &PurposeRule {
        &self.0.rule
    }

    /// The categories the caller may read: the access rules' grant within the register's limit
    /// for the purpose.
    pub fn readable(&self) -> CategorySet {
        self.0.readable
    }

    /// The RPC (`package.Service/Method`).
    pub fn rpc(&self) -> &str {
        &self.0.rpc
    }

    /// Ids of the policies that permitted the call.
    pub fn policies(&self) -> &[String] {
        &self.0.policies
    }

    /// Fails unless the caller may read `category` for this purpose.
    pub fn require_readable(&self, category: DataCategory) -> Result<()> {
        if self.0.readable.contains(category) {
            Ok(())
        } else {
            Err(self.category_denied(category, false))
        }
    }

    /// Fails unless the purpose may touch `category` at all (data minimisation on writes).
    pub fn require_purpose_allows(&self, category: DataCategory) -> Result<()> {
        if self.0.rule.categories.contains(category) {
            Ok(())
        } else {
            Err(self.category_denied(category, true))
        }
    }

    fn category_denied(&self, category: DataCategory, not_for_purpose: bool) -> Error {
        Error::CategoryDenied(Box::new(crate::error::CategoryDenial {
            category: category.short_name(),
            rpc: self.0.rpc.clone(),
            purpose: self.0.purpose.short_name(),
            not_for_purpose,
        }))
    }
}

impl Authorized {
    /// Access to one subject's personal data for this call: the only way to a [`SubjectAccess`],
    /// which every read or write of a subject's data takes. Fails unless the caller may act on the
    /// subject at all (a learner only on themselves, a guardian only on their wards: anyone else
    /// is NOT_FOUND, like a subject that does not exist) and, where the register says the purpose
    /// needs consent, the subject currently consents (else CONSENT_REQUIRED).
    pub async fn subject(&self, subject_id: &str) -> Result<SubjectAccess> {
        self.subject_for(subject_id, None).await
    }

    /// Like [`Authorized::subject`] for processing that discloses to `recipient` (e.g. a named
    /// employer): consent must cover that recipient.
    pub async fn subject_for(
        &self,
        subject_id: &str,
        recipient: Option<&str>,
    ) -> Result<SubjectAccess> {
        let checked = self.check_subject(subject_id, recipient).await;
        self.checked(subject_id.to_owned(), checked)
    }

    /// [`Authorized::subject_for`] for many subjects at once, for a bulk read: the consent
    /// states are read in one batch instead of one look-up per subject. Each subject gets its
    /// access or its refusal, in order. The refusals are not kept for the call's audit records:
    /// a bulk read streams after the guard wrote them, so the caller records its own summary.
    /// `need` may ask for more consent than the register does, never for less.
    pub async fn subjects_for(
        &self,
        subjects: &[String],
        recipient: Option<&str>,
        need: crate::consent::ConsentNeed,
    ) -> Result<Vec<Result<SubjectAccess>>> {
        use crate::consent::ConsentNeed;
        let reach = self.0.principal.reach();
        let in_reach: Vec<String> = subjects
            .iter()
            .filter(|s| reach.includes(s))
            .cloned()
            .collect();
        let mut snapshots = self
            .0
            .consent
            .snapshots(&self.0.tenant, &in_reach)
            .await?
            .into_iter();
        let purpose = self.0.purpose;
        Ok(subjects
            .iter()
            .map(|subject| {
                if !reach.includes(subject) {
                    return Err(Error::NotFound("subject"));
                }
                let snapshot = snapshots
                    .next()
                    .ok_or_else(|| Error::internal("consent gate answered too few subjects"))?;
                match need {
                    ConsentNeed::OfRecipient => crate::consent::consented_to_recipient(
                        &snapshot,
                        purpose,
                        recipient.unwrap_or_default(),
                    )?,
                    ConsentNeed::Always => {
                        crate::consent::consented(&snapshot, purpose, recipient)?
                    }
                    ConsentNeed::Register if self.0.rule.consent_required => {
                        crate::consent::consented(&snapshot, purpose, recipient)?
                    }
                    ConsentNeed::Register => {}
                }
                crate::consent::unrestricted(&snapshot, purpose)?;
                Ok(SubjectAccess {
                    call: self.clone(),
                    subject: subject.clone(),
                })
            })
            .collect())
    }

    /// Access to a subject this call brings into being under a fresh random id (a v4 UUID), with
    /// the checks of [`Authorized::subject`] decided without reading the consent ledger: no one
    /// can have recorded a consent or a restriction for an id that did not exist until now, so
    /// the ledger's answer is known (no consent, no restriction). A create spares the ledger
    /// look-up that a subject never seen before always misses the cache for.
    pub fn new_subject(&self) -> Result<SubjectAccess> {
        let subject_id = uuid::Uuid::new_v4().to_string();
        let checked = if !self.0.principal.reach().includes(&subject_id) {
            Err(Error::NotFound("subject"))
        } else if self.0.rule.consent_required {
            Err(Error::ConsentRequired {
                purpose: self.0.purpose.short_name(),
                recipient: None,
            })
        } else {
            Ok(())
        };
        self.checked(subject_id, checked)
    }

    /// The access `checked` allows to `subject_id`, or its refusal, noted for the audit record.
    fn checked(&self, subject_id: String, checked: Result<()>) -> Result<SubjectAccess> {
        if let Err(err) = &checked {
            self.0
                .refusals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((subject_id.clone(), err.reason()));
        }
        checked.map(|()| SubjectAccess {
            call: self.clone(),
            subject: subject_id,
        })
    }

    async fn check_subject(&self, subject_id: &str, recipient: Option<&str>) -> Result<()> {
        let p = &self.0.principal;
        // The reach follows from the kind alone, the fact the access rules' own-data grants
        // read; authentication refused any token whose roles say otherwise.
        if !p.reach().includes(subject_id) {
            return Err(Error::NotFound("subject"));
        }
        if self.0.rule.consent_required {
            self.0
                .consent
                .require(&self.0.tenant, subject_id, self.0.purpose, recipient)
                .await?;
        }
        // Art. 18: a restricted subject's data is only stored and handled for their rights.
        self.0
            .consent
            .require_unrestricted(&self.0.tenant, subject_id, self.0.purpose)
            .await
    }

    /// The subjects checks of this call refused, with the reasons, for the audit records;
    /// emptied.
    pub(crate) fn take_refusals(&self) -> Vec<(String, &'static str)> {
        std::mem::take(&mut *self.0.refusals.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn record_access(&self, subject_id: &str, categories: CategorySet, staged: Option<String>) {
        let mut accesses = self.0.accesses.lock().unwrap_or_else(|p| p.into_inner());
        let i = match accesses.iter().position(|a| a.subject == subject_id) {
            Some(i) => i,
            None => {
                accesses.push(Access {
                    subject: subject_id.to_owned(),
                    categories: CategorySet::EMPTY,
                    staged: Vec::new(),
                    unstaged: false,
                });
                accesses.len() - 1
            }
        };
        let access = &mut accesses[i];
        access.categories = access.categories.union(categories);
        match staged {
            Some(id) => access.staged.push(id),
            None => access.unstaged = true,
        }
    }

    /// Stages the call's decision record in the outbox within `txn`, for a write that touches
    /// no subject's data (a course, a topic): durable exactly when the write is, chained by the
    /// guard after the call or by recovery if the process dies first.
    pub async fn record_in(&self, txn: &sea_orm::DatabaseTransaction) -> Result<()> {
        let id = self.0.audit.stage(txn, self.decision()).await?;
        self.0
            .decision_staged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id);
        Ok(())
    }

    /// The decision's staged outbox rows, emptied.
    pub(crate) fn take_decision_staged(&self) -> Vec<String> {
        std::mem::take(
            &mut *self
                .0
                .decision_staged
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// The accesses recorded so far, emptied.
    pub(crate) fn take_accesses(&self) -> Vec<Access> {
        std::mem::take(&mut *self.0.accesses.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Who made this call and which call it is, as its audit records state it.
    pub(crate) fn caller(&self) -> Caller {
        Caller::new(
            self.0.audit.keys(),
            Some(&self.0.principal),
            &self.0.rpc,
            self.0.purpose.short_name(),
        )
    }

    /// The deciding policies, as an allowed call's records give its reason.
    fn policy_reason(&self) -> String {
        self.0.policies.join(",")
    }

    /// The guard's decision to allow this call.
    pub(crate) fn decision(&self) -> AuditEvent {
        AuditEvent::Decision {
            caller: self.caller(),
            outcome: Outcome::Allow,
            reason: self.policy_reason(),
        }
    }

    /// This call's read (or, with `write`, change) of `categories` of `subject_id`'s data.
    pub(crate) fn access(
        &self,
        subject_id: &str,
        categories: CategorySet,
        write: bool,
    ) -> AuditEvent {
        AuditEvent::SubjectAccess {
            caller: self.caller(),
            subject: self.0.audit.subject(self.tenant(), subject_id),
            categories,
            outcome: Outcome::Allow,
            reason: self.policy_reason(),
            write,
        }
    }

    /// The refusal, for `reason`, of this call's access to `subject_id`'s data.
    pub(crate) fn refusal(&self, subject_id: &str, reason: &str) -> AuditEvent {
        AuditEvent::SubjectAccess {
            caller: self.caller(),
            subject: self.0.audit.subject(self.tenant(), subject_id),
            categories: CategorySet::EMPTY,
            outcome: Outcome::Deny,
            reason: reason.to_owned(),
            write: false,
        }
    }

    /// Appends a summary of what this call did to `categories` of many subjects' data, in
    /// counts (`note`), and waits until it is durable: for work that outlives the guard's own
    /// records (a response stream).
    pub async fn summarise(&self, categories: CategorySet, note: String) -> Result<()> {
        self.0.audit.summarise(self, categories, note).await
    }

    /// This call's `change` to a record that decides whose data goes where.
    pub(crate) fn changed(&self, change: crate::audit::Change) -> AuditEvent {
        AuditEvent::Changed {
            caller: self.caller(),
            change,
        }
    }

    /// What this call did to `categories` of many subjects' data, in counts (`note`).
    pub(crate) fn summary(&self, categories: CategorySet, note: String) -> AuditEvent {
        AuditEvent::Summary {
            caller: self.caller(),
            categories,
            note,
        }
    }
}

/// Permission, within one authorised call, to process one subject's personal data: proof that
/// the subject is within the caller's reach and that consent was checked where the purpose needs
/// it. Only [`Authorized::subject`] makes one, so a data access that skips the check does not
/// compile. Its Debug output never shows the subject id.
#[derive(Clone)]
pub struct SubjectAccess {
    call: Authorized,
    subject: String,
}

impl std::fmt::Debug for SubjectAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubjectAccess")
            .field("subject", &"[redacted]")
            .field("rpc", &self.call.rpc())
            .finish()
    }
}

#[async_trait::async_trait]
impl crate::audit::StageAudit for SubjectAccess {
    async fn stage_in(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        categories: CategorySet,
    ) -> Result<()> {
        self.record_in(txn, categories).await
    }
}

impl SubjectAccess {
    /// The subject's id.
    pub fn subject_id(&self) -> &str {
        &self.subject
    }

    /// The tenant to scope every query by.
    pub fn tenant(&self) -> &str {
        self.call.tenant()
    }

    /// The call this access belongs to.
    pub fn call(&self) -> &Authorized {
        &self.call
    }

    /// Notes that the call's response carries the subject's data: of the categories its fields
    /// are annotated with in the contract, those the caller may read (the rest the guard
    /// redacts). Derived, so a handler cannot under-report what its response discloses.
    pub fn record_response(&self) {
        self.record(self.call.0.response);
    }

    /// Notes that the call read `categories` of the subject's data. The guard writes one audit
    /// record per subject before the response leaves, and fails the call if it cannot. A write
    /// takes [`SubjectAccess::record_in`] instead, so that its record cannot be lost.
    pub fn record(&self, categories: CategorySet) {
        self.call.record_access(&self.subject, categories, None);
    }

    /// Notes that the call changes `categories` of the subject's data within `txn`, and stages
    /// the audit record in the outbox within that same transaction: the record is durable
    /// exactly when the change is. The guard chains it after the call (one record per subject,
    /// as with [`SubjectAccess::record`]); if the process dies first, recovery chains it at the
    /// next start. Every write of a subject's data goes through this.
    pub async fn record_in(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        categories: CategorySet,
    ) -> Result<()> {
        let event = self.call.access(&self.subject, categories, true);
        let id = self.call.0.audit.stage(txn, event).await?;
        self.call.record_access(&self.subject, categories, Some(id));
        Ok(())
    }

    /// Whether processing of the subject's data is restricted (Art. 18).
    pub async fn is_restricted(&self) -> Result<bool> {
        let call = &self.call.0;
        Ok(call
            .consent
            .snapshot(&call.tenant, &self.subject)
            .await?
            .restricted)
    }

    /// When a requester's identity was last verified for this subject.
    pub async fn identity_verified_at(&self) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        let call = &self.call.0;
        Ok(call
            .consent
            .snapshot(&call.tenant, &self.subject)
            .await?
            .identity_verified_at)
    }

    /// Records that the caller verified the identity of someone asking for the subject's data.
    pub async fn record_identity_verification(
        &self,
        method: tutela_proto::privacy::VerificationMethod,
        evidence_reference: &str,
    ) -> Result<()> {
        let call = &self.call.0;
        call.consent
            .verify_identity(&crate::consent::IdentityVerification {
                tenant: &call.tenant,
                subject: &self.subject,
                method,
                evidence_reference,
                verified_by: &call.principal.id,
                audit: self,
            })
            .await
    }

    /// Whether a parent or guardian currently consents, on the subject's behalf, to processing
    /// for this call's purpose: what collecting a minor's data needs (E4, C5).
    pub async fn guardian_consents(&self) -> Result<bool> {
        let call = &self.call.0;
        Ok(call
            .consent
            .snapshot(&call.tenant, &self.subject)
            .await?
            .guardian_permits(call.purpose))
    }

    /// Records in the consent ledger a parent's or guardian's consent to processing the
    /// subject's data for this call's purpose. `evidence` must have passed
    /// [`check_evidence`](crate::consent::check_evidence) with a guardian as the actor.
    pub async fn record_guardian_consent(
        &self,
        evidence: &tutela_proto::consent::ConsentEvidence,
        idempotency_key: Option<&str>,
    ) -> Result<()> {
        let call = &self.call.0;
        call.consent
            .record_guardian_consent(&crate::consent::GuardianGrant {
                tenant: &call.tenant,
                subject: &self.subject,
                purpose: call.purpose,
                evidence,
                recorded_by: &call.principal.id,
                idempotency_key,
                audit: self,
            })
            .await
    }

    /// The purposes the subject objects to (Art. 21), in enum order.
    pub async fn objections(&self) -> Result<Vec<Purpose>> {
        let call = &self.call.0;
        Ok(call
            .consent
            .snapshot(&call.tenant, &self.subject)
            .await?
            .objections()
            .collect())
    }

    /// Records the subject's objection to processing for `purposes` (each one the register lets
    /// a person object to), or lifts it, in the ledger.
    pub async fn object(&self, purposes: &[Purpose], objected: bool, reason: &str) -> Result<()> {
        let call = &self.call.0;
        call.consent
            .object(&crate::consent::Objection {
                tenant: &call.tenant,
                subject: &self.subject,
                purposes,
                objected,
                reason,
                recorded_by: &call.principal.id,
                audit: self,
            })
            .await
    }

    /// Restricts processing of the subject's data (or lifts the restriction) in every service:
    /// recorded in the consent ledger, which every guard reads.
    pub async fn restrict(&self, restricted: bool, reason: &str) -> Result<()> {
        let call = &self.call.0;
        call.consent
            .restrict(&crate::consent::Restriction {
                tenant: &call.tenant,
                subject: &self.subject,
                restricted,
                reason,
                recorded_by: &call.principal.id,
                audit: self,
            })
            .await
    }
}
