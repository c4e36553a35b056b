//! Consent, as the guard sees it: the current state of a subject's consents folded from the
//! append-only ledger, read through a short-lived cache.
//!
//! How a withdrawal takes effect: in the process that hosts the ledger, the ledger invalidates
//! the subject's cache entry after its append commits, so the next call sees it. Every other
//! process (another replica, or a service deployed on its own that reads the ledger remotely)
//! keeps a cached state for at most [`MAX_TTL`] (one second), so a withdrawal reaches it within
//! that time. A read that raced an invalidation never repopulates the cache with the state from
//! before it (see [`ConsentGate::invalidate`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tutela_proto::common::Purpose;
use tutela_proto::consent::ConsentEvidence;

use crate::error::{Error, Result};
use crate::scope::Tenant;

mod evidence;
mod remote;
pub use evidence::{check_evidence, parse_evidence};
pub use remote::{RemoteLedger, RemoteLedgerSettings, tenant_token};

/// The longest time a cached consent state is trusted. Cross-process withdrawals take effect
/// within this bound.
pub const MAX_TTL: Duration = Duration::from_secs(1);

/// Most cached subjects before the cache is emptied.
const CACHE_LIMIT: usize = 100_000;

/// The current consent of one purpose and recipient, with the ledger entry that decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsentFact {
    /// Whether consent is currently given.
    pub granted: bool,
    /// The sequence number of the deciding entry in the ledger (0 when read from a remote
    /// ledger, which names entries by their public id instead).
    pub entry: i64,
    /// Whether a parent or guardian made the deciding entry on the subject's behalf.
    pub by_guardian: bool,
}

/// A subject's current consents, folded from their ledger entries in order. The recipient `""`
/// stands for the purpose as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsentSnapshot {
    facts: BTreeMap<(i32, String), ConsentFact>,
    /// Whether the subject asked for processing of their data to be restricted (Art. 18).
    pub restricted: bool,
    /// When a staff member last recorded that a requester's identity was verified.
    pub identity_verified_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The purposes (enum values) the subject objected to, whose objection stands (Art. 21).
    objected: BTreeSet<i32>,
}

impl ConsentSnapshot {
    /// Applies the next entry of the history. A withdrawal for the purpose as a whole withdraws
    /// every recipient's grant of that purpose too.
    pub fn apply(&mut self, purpose: Purpose, recipient: &str, fact: ConsentFact) {
        let p = purpose as i32;
        if !fact.granted && recipient.is_empty() {
            for ((fp, _), other) in self.facts.iter_mut() {
                if *fp == p {
                    *other = fact;
                }
            }
        }
        self.facts.insert((p, recipient.to_owned()), fact);
    }

    /// Whether processing for `purpose` (and the named `recipient`) is consented to: granted for
    /// that recipient, or granted for the purpose as a whole and not withdrawn for the recipient.
    /// Without a recipient, only a grant for the purpose as a whole counts.
    pub fn permits(&self, purpose: Purpose, recipient: Option<&str>) -> bool {
        let p = purpose as i32;
        let whole = || {
            self.facts
                .get(&(p, String::new()))
                .is_some_and(|f| f.granted)
        };
        match recipient.filter(|r| !r.is_empty()) {
            None => whole(),
            Some(r) => match self.facts.get(&(p, r.to_owned())) {
                Some(fact) => fact.granted,
                None => whole(),
            },
        }
    }

    /// Whether a parent or guardian currently consents to processing for `purpose` as a whole on
    /// the subject's behalf: what collecting a minor's data needs (E4, C5).
    pub fn guardian_permits(&self, purpose: Purpose) -> bool {
        self.facts
            .get(&(purpose as i32, String::new()))
            .is_some_and(|f| f.granted && f.by_guardian)
    }

    /// Every purpose and recipient with an entry, ordered by purpose, then recipient.
    pub fn facts(&self) -> impl Iterator<Item = (Purpose, &str, ConsentFact)> {
        self.facts.iter().filter_map(|((p, r), fact)| {
            Purpose::try_from(*p)
                .ok()
                .map(|purpose| (purpose, r.as_str(), *fact))
        })
    }

    /// Sets the current state of one purpose and recipient as the ledger already folded it (a
    /// remote ledger's answer): unlike [`apply`](Self::apply), nothing cascades.
    pub fn set(&mut self, purpose: Purpose, recipient: &str, fact: ConsentFact) {
        self.facts
            .insert((purpose as i32, recipient.to_owned()), fact);
    }

    /// Whether the ledger holds no entry for the subject.
    pub fn is_empty(&self) -> bool {
        self.facts.is_empty()
    }

    /// Records that the subject's objection to `purpose` stands (or was lifted).
    pub fn set_objection(&mut self, purpose: Purpose, objected: bool) {
        if objected {
            self.objected.insert(purpose as i32);
        } else {
            self.objected.remove(&(purpose as i32));
        }
    }

    /// Whether the subject objected to processing for `purpose` and the objection stands.
    pub fn objects_to(&self, purpose: Purpose) -> bool {
        self.objected.contains(&(purpose as i32))
    }

    /// The purposes the subject objects to, in enum order.
    pub fn objections(&self) -> impl Iterator<Item = Purpose> + '_ {
        self.objected
            .iter()
            .filter_map(|p| Purpose::try_from(*p).ok())
    }

    /// Whether processing for `purpose` is allowed while the subject's processing is restricted:
    /// only handling their rights (their consents included) and what the law requires (keeping
    /// the data, legal claims).
    pub fn allows_while_restricted(purpose: Purpose) -> bool {
        matches!(
            purpose,
            Purpose::SubjectRights | Purpose::LegalObligation | Purpose::ConsentManagement
        )
    }
}

/// CONSENT_REQUIRED unless `snapshot` consents to `purpose` (for `recipient`, when the
/// processing discloses to one).
pub(crate) fn consented(
    snapshot: &ConsentSnapshot,
    purpose: Purpose,
    recipient: Option<&str>,
) -> Result<()> {
    if snapshot.permits(purpose, recipient) {
        Ok(())
    } else {
        Err(Error::ConsentRequired {
            purpose: purpose.short_name(),
            recipient: recipient.filter(|r| !r.is_empty()).map(str::to_owned),
        })
    }
}

/// Which consent a bulk read for a disclosure checks of each subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsentNeed {
    /// What the register says of the purpose (`consent_required`).
    #[default]
    Register,
    /// Consent to the purpose (and recipient) whatever the register says: the disclosure's own
    /// legal basis is consent.
    Always,
    /// Consent that names the recipient itself; consent to the purpose as a whole does not
    /// count (S2: a partner's own use, such as its marketing, needs the learner's specific
    /// consent for that partner).
    OfRecipient,
}

/// CONSENT_REQUIRED unless `snapshot` holds a grant for `purpose` that names `recipient` itself.
pub(crate) fn consented_to_recipient(
    snapshot: &ConsentSnapshot,
    purpose: Purpose,
    recipient: &str,
) -> Result<()> {
    let named = snapshot
        .facts
        .get(&(purpose as i32, recipient.to_owned()))
        .is_some_and(|fact| fact.granted);
    if named && !recipient.is_empty() {
        Ok(())
    } else {
        Err(Error::ConsentRequired {
            purpose: purpose.short_name(),
            recipient: Some(recipient.to_owned()).filter(|r| !r.is_empty()),
        })
    }
}

/// PROCESSING_RESTRICTED when `snapshot` is restricted and `purpose` is not one a restriction
/// allows; PROCESSING_OBJECTED when the subject objected to `purpose`. (No purpose a restriction
/// allows is open to objection: see [`crate::Register::objection`].)
pub(crate) fn unrestricted(snapshot: &ConsentSnapshot, purpose: Purpose) -> Result<()> {
    if snapshot.restricted && !ConsentSnapshot::allows_while_restricted(purpose) {
        Err(Error::Restricted)
    } else if snapshot.objects_to(purpose) {
        Err(Error::Objected {
            purpose: purpose.short_name(),
        })
    } else {
        Ok(())
    }
}

/// Where the guard reads the ledger from: the ledger's own store in the process that hosts it,
/// or the ledger service over gRPC.
#[async_trait::async_trait]
pub trait ConsentSource: Send + Sync + 'static {
    /// The current consents of `subject` in `tenant` (empty when the ledger has no entry).
    async fn snapshot(&self, tenant: &Tenant, subject: &str) -> Result<ConsentSnapshot>;

    /// The current consents of each of `subjects`, in their order: for a bulk read, which
    /// would otherwise wait for one look-up per subject. A source that can answer many at once
    /// (the ledger's own store) overrides this one-by-one default.
    async fn snapshots(
        &self,
        tenant: &Tenant,
        subjects: &[String],
    ) -> Result<Vec<ConsentSnapshot>> {
        let mut all = Vec::with_capacity(subjects.len());
        for subject in subjects {
            all.push(self.snapshot(tenant, subject).await?);
        }
        Ok(all)
    }

    /// Records that processing of the subject's data is restricted (or no longer), at the
    /// subject's request, with the reason and who recorded it.
    async fn restrict(&self, change: &Restriction<'_>) -> Result<()>;

    /// Records the subject's objection to processing for some purposes (or lifts it), with the
    /// reason and who recorded it. Purposes whose state already is the one asked for are left
    /// alone.
    async fn object(&self, change: &Objection<'_>) -> Result<()>;

    /// Records that a staff member verified the identity of someone asking for the subject's
    /// data.
    async fn verify_identity(&self, verification: &IdentityVerification<'_>) -> Result<()>;

    /// Appends a parent's or guardian's grant of consent on a minor's behalf, recorded by a
    /// service in the call that collects the minor's data.
    async fn record_guardian_consent(&self, grant: &GuardianGrant<'_>) -> Result<()>;
}

/// A parent's or guardian's consent to processing a minor's data for a purpose, with the
/// evidence as the ledger keeps it (already validated by [`check_evidence`]).
#[derive(Clone, Copy)]
pub struct GuardianGrant<'a> {
    /// The tenant.
    pub tenant: &'a Tenant,
    /// The minor.
    pub subject: &'a str,
    /// The purpose consented to.
    pub purpose: Purpose,
    /// How and by whom; the actor is the guardian.
    pub evidence: &'a ConsentEvidence,
    /// The principal who recorded it.
    pub recorded_by: &'a str,
    /// Makes the append safe to retry, when the call that records it has a key.
    pub idempotency_key: Option<&'a str>,
    /// Stages the write's audit record in the ledger's transaction (a remote ledger leaves it
    /// to the ledger service's own guard).
    pub audit: &'a dyn crate::audit::StageAudit,
}

impl std::fmt::Debug for GuardianGrant<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardianGrant")
            .field("tenant", &self.tenant)
            .field("subject", &"[redacted]")
            .field("purpose", &self.purpose.short_name())
            .finish_non_exhaustive()
    }
}

/// A staff member's check of a rights requester's identity.
#[derive(Clone, Copy)]
pub struct IdentityVerification<'a> {
    /// The tenant.
    pub tenant: &'a Tenant,
    /// The subject whose data was asked for.
    pub subject: &'a str,
    /// How.
    pub method: tutela_proto::privacy::VerificationMethod,
    /// A reference to the note of the check.
    pub evidence_reference: &'a str,
    /// Who checked.
    pub verified_by: &'a str,
    /// Stages the write's audit record in the ledger's transaction (a remote ledger leaves it
    /// to the ledger service's own guard).
    pub audit: &'a dyn crate::audit::StageAudit,
}

impl std::fmt::Debug for IdentityVerification<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityVerification")
            .field("tenant", &self.tenant)
            .field("method", &self.method.short_name())
            .finish_non_exhaustive()
    }
}

/// A restriction of processing (GDPR Art. 18) asked for, or lifted.
#[derive(Clone, Copy)]
pub struct Restriction<'a> {
    /// The tenant.
    pub tenant: &'a Tenant,
    /// The subject.
    pub subject: &'a str,
    /// Restricted from now on, or lifted.
    pub restricted: bool,
    /// Why (e.g. "accuracy contested, request of 2026-11-24").
    pub reason: &'a str,
    /// The principal who recorded it.
    pub recorded_by: &'a str,
    /// Stages the write's audit record in the ledger's transaction (a remote ledger leaves it
    /// to the ledger service's own guard).
    pub audit: &'a dyn crate::audit::StageAudit,
}

impl std::fmt::Debug for Restriction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restriction")
            .field("tenant", &self.tenant)
            .field("subject", &"[redacted]")
            .field("restricted", &self.restricted)
            .finish_non_exhaustive()
    }
}

/// An objection to processing (GDPR Art. 21) for some purposes, or its lifting.
#[derive(Clone, Copy)]
pub struct Objection<'a> {
    /// The tenant.
    pub tenant: &'a Tenant,
    /// The subject.
    pub subject: &'a str,
    /// The purposes, each one [`crate::Register::objection`] allows.
    pub purposes: &'a [Purpose],
    /// Objected from now on, or lifted.
    pub objected: bool,
    /// Why (e.g. "art21 request 2026-031").
    pub reason: &'a str,
    /// The principal who recorded it.
    pub recorded_by: &'a str,
    /// Stages the write's audit record in the ledger's transaction (a remote ledger leaves it
    /// to the ledger service's own guard).
    pub audit: &'a dyn crate::audit::StageAudit,
}

impl std::fmt::Debug for Objection<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let purposes: Vec<&str> = self.purposes.iter().map(|p| p.short_name()).collect();
        f.debug_struct("Objection")
            .field("tenant", &self.tenant)
            .field("subject", &"[redacted]")
            .field("purposes", &purposes)
            .field("objected", &self.objected)
            .finish_non_exhaustive()
    }
}

/// The source of a process that neither hosts the ledger nor knows where it is: every purpose
/// that needs consent fails closed.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLedger;

#[async_trait::async_trait]
impl ConsentSource for NoLedger {
    async fn snapshot(&self, _tenant: &Tenant, _subject: &str) -> Result<ConsentSnapshot> {
        Err(Error::Unavailable(
            "this process has no consent ledger to check consent against".into(),
        ))
    }

    async fn restrict(&self, _change: &Restriction<'_>) -> Result<()> {
        Err(Error::Unavailable(
            "this process has no consent ledger to record a restriction in".into(),
        ))
    }

    async fn object(&self, _change: &Objection<'_>) -> Result<()> {
        Err(Error::Unavailable(
            "this process has no consent ledger to record an objection in".into(),
        ))
    }

    async fn verify_identity(&self, _verification: &IdentityVerification<'_>) -> Result<()> {
        Err(Error::Unavailable(
            "this process has no consent ledger to record a verification in".into(),
        ))
    }

    async fn record_guardian_consent(&self, _grant: &GuardianGrant<'_>) -> Result<()> {
        Err(Error::Unavailable(
            "this process has no consent ledger to record a guardian's consent in".into(),
        ))
    }
}

type CacheKey = (String, String);

/// The consent check with its cache. Shared by the guard (which reads) and the ledger (which
/// invalidates).
pub struct ConsentGate {
    source: Arc<dyn ConsentSource>,
    ttl: Duration,
    cache: Mutex<HashMap<CacheKey, (Instant, Arc<ConsentSnapshot>)>>,
    /// Bumped by every invalidation; a read only fills the cache if none happened meanwhile.
    epoch: AtomicU64,
}

impl std::fmt::Debug for ConsentGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsentGate")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl ConsentGate {
    /// A gate reading `source`, caching for `ttl` (capped at [`MAX_TTL`]; zero disables the
    /// cache).
    pub fn new(source: Arc<dyn ConsentSource>, ttl: Duration) -> Self {
        Self {
            source,
            ttl: ttl.min(MAX_TTL),
            cache: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
        }
    }

    /// A gate for a process without a ledger (see [`NoLedger`]).
    pub fn without_ledger() -> Self {
        Self::new(Arc::new(NoLedger), Duration::ZERO)
    }

    fn cache(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<CacheKey, (Instant, Arc<ConsentSnapshot>)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The subject's current consents, from the cache while fresh.
    pub async fn snapshot(&self, tenant: &Tenant, subject: &str) -> Result<Arc<ConsentSnapshot>> {
        let key = (tenant.as_str().to_owned(), subject.to_owned());
        if let Some((at, snapshot)) = self.cache().get(&key)
            && at.elapsed() < self.ttl
        {
            return Ok(snapshot.clone());
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let read_at = Instant::now();
        let snapshot = Arc::new(self.source.snapshot(tenant, subject).await?);
        if !self.ttl.is_zero() {
            let mut cache = self.cache();
            // Checked under the lock that `invalidate` also takes, so a state read before an
            // invalidation can never be stored after it.
            if self.epoch.load(Ordering::Acquire) == epoch {
                if cache.len() >= CACHE_LIMIT {
                    cache.clear();
                }
                cache.insert(key, (read_at, snapshot.clone()));
            }
        }
        Ok(snapshot)
    }

    /// The current consents of each of `subjects`, in their order: fresh cached states as they
    /// are, the others read from the source in one batch. The batch does not fill the cache: a
    /// bulk read meets each subject once, and would only push out the states that calls reuse.
    pub async fn snapshots(
        &self,
        tenant: &Tenant,
        subjects: &[String],
    ) -> Result<Vec<Arc<ConsentSnapshot>>> {
        let mut all: Vec<Option<Arc<ConsentSnapshot>>> = {
            let cache = self.cache();
            subjects
                .iter()
                .map(|subject| {
                    let key = (tenant.as_str().to_owned(), subject.clone());
                    cache
                        .get(&key)
                        .filter(|(at, _)| at.elapsed() < self.ttl)
                        .map(|(_, snapshot)| snapshot.clone())
                })
                .collect()
        };
        let missing: Vec<String> = subjects
            .iter()
            .zip(&all)
            .filter(|(_, cached)| cached.is_none())
            .map(|(subject, _)| subject.clone())
            .collect();
        if !missing.is_empty() {
            let mut read = self.source.snapshots(tenant, &missing).await?.into_iter();
            for slot in all.iter_mut().filter(|slot| slot.is_none()) {
                let snapshot = read
                    .next()
                    .ok_or_else(|| Error::internal("consent source answered too few subjects"))?;
                *slot = Some(Arc::new(snapshot));
            }
        }
        Ok(all.into_iter().flatten().collect())
    }

    /// Fails with CONSENT_REQUIRED unless the subject currently consents to `purpose` (for
    /// `recipient`, when the processing discloses to one).
    pub async fn require(
        &self,
        tenant: &Tenant,
        subject: &str,
        purpose: Purpose,
        recipient: Option<&str>,
    ) -> Result<()> {
        consented(&*self.snapshot(tenant, subject).await?, purpose, recipient)
    }

    /// Fails with PROCESSING_RESTRICTED when the subject restricted processing and `purpose` is
    /// not one a restriction allows.
    pub async fn require_unrestricted(
        &self,
        tenant: &Tenant,
        subject: &str,
        purpose: Purpose,
    ) -> Result<()> {
        if ConsentSnapshot::allows_while_restricted(purpose) {
            return Ok(());
        }
        unrestricted(&*self.snapshot(tenant, subject).await?, purpose)
    }

    /// Records a restriction (or its lifting) in the ledger; applies to the next call here.
    pub async fn restrict(&self, change: &Restriction<'_>) -> Result<()> {
        self.source.restrict(change).await?;
        self.invalidate(change.tenant, change.subject);
        Ok(())
    }

    /// Records an objection (or its lifting) in the ledger; applies to the next call here.
    pub async fn object(&self, change: &Objection<'_>) -> Result<()> {
        self.source.object(change).await?;
        self.invalidate(change.tenant, change.subject);
        Ok(())
    }

    /// Records a guardian's consent in the ledger; seen by the next call here.
    pub async fn record_guardian_consent(&self, grant: &GuardianGrant<'_>) -> Result<()> {
        self.source.record_guardian_consent(grant).await?;
        self.invalidate(grant.tenant, grant.subject);
        Ok(())
    }

    /// Records an identity verification in the ledger; seen by the next call here.
    pub async fn verify_identity(&self, verification: &IdentityVerification<'_>) -> Result<()> {
        self.source.verify_identity(verification).await?;
        self.invalidate(verification.tenant, verification.subject);
        Ok(())
    }

    /// Forgets the cached state of `subject`: called by the ledger after an entry for them
    /// commits, so the next check in this process reads the new state.
    pub fn invalidate(&self, tenant: &Tenant, subject: &str) {
        let mut cache = self.cache();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        cache.remove(&(tenant.as_str().to_owned(), subject.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(granted: bool, entry: i64) -> ConsentFact {
        ConsentFact {
            granted,
            entry,
            by_guardian: false,
        }
    }

    #[test]
    fn only_a_guardian_grant_for_the_whole_purpose_is_a_guardian_consent() {
        let mut s = ConsentSnapshot::default();
        s.apply(Purpose::CourseAdministration, "", fact(true, 1));
        assert!(!s.guardian_permits(Purpose::CourseAdministration));
        let by_guardian = ConsentFact {
            by_guardian: true,
            ..fact(true, 2)
        };
        s.apply(Purpose::CourseAdministration, "acme", by_guardian);
        assert!(!s.guardian_permits(Purpose::CourseAdministration));
        s.apply(Purpose::CourseAdministration, "", by_guardian);
        assert!(s.guardian_permits(Purpose::CourseAdministration));
        assert!(!s.guardian_permits(Purpose::Marketing));
        s.apply(Purpose::CourseAdministration, "", fact(false, 3));
        assert!(!s.guardian_permits(Purpose::CourseAdministration));
    }

    #[test]
    fn a_whole_purpose_withdrawal_withdraws_every_recipient() {
        let mut s = ConsentSnapshot::default();
        s.apply(Purpose::ThirdPartyDisclosure, "acme", fact(true, 1));
        s.apply(Purpose::ThirdPartyDisclosure, "", fact(true, 2));
        assert!(s.permits(Purpose::ThirdPartyDisclosure, Some("acme")));
        assert!(s.permits(Purpose::ThirdPartyDisclosure, Some("other")));
        s.apply(Purpose::ThirdPartyDisclosure, "", fact(false, 3));
        assert!(!s.permits(Purpose::ThirdPartyDisclosure, Some("acme")));
        assert!(!s.permits(Purpose::ThirdPartyDisclosure, None));
        s.apply(Purpose::ThirdPartyDisclosure, "acme", fact(true, 4));
        assert!(s.permits(Purpose::ThirdPartyDisclosure, Some("acme")));
        assert!(!s.permits(Purpose::ThirdPartyDisclosure, Some("other")));
    }

    #[test]
    fn an_objection_refuses_its_purpose_only_until_lifted() {
        let mut s = ConsentSnapshot::default();
        unrestricted(&s, Purpose::QualityAssurance).unwrap();
        s.set_objection(Purpose::QualityAssurance, true);
        let err = unrestricted(&s, Purpose::QualityAssurance).unwrap_err();
        assert_eq!(err.reason(), "PROCESSING_OBJECTED");
        unrestricted(&s, Purpose::CourseAdministration).unwrap();
        assert_eq!(
            s.objections().collect::<Vec<_>>(),
            [Purpose::QualityAssurance]
        );
        s.set_objection(Purpose::QualityAssurance, false);
        unrestricted(&s, Purpose::QualityAssurance).unwrap();
        assert!(!s.objects_to(Purpose::QualityAssurance));
    }

    #[test]
    fn a_recipient_withdrawal_leaves_the_others() {
        let mut s = ConsentSnapshot::default();
        s.apply(Purpose::Marketing, "", fact(true, 1));
        s.apply(Purpose::Marketing, "acme", fact(false, 2));
        assert!(!s.permits(Purpose::Marketing, Some("acme")));
        assert!(s.permits(Purpose::Marketing, Some("other")));
        assert!(s.permits(Purpose::Marketing, None));
        assert!(!s.permits(Purpose::FunderReporting, None));
    }

    #[test]
    fn a_recipient_grant_alone_does_not_permit_the_whole_purpose() {
        let mut s = ConsentSnapshot::default();
        s.apply(Purpose::Marketing, "acme", fact(true, 1));
        assert!(!s.permits(Purpose::Marketing, None));
        assert!(!s.permits(Purpose::Marketing, Some("")));
    }

    /// A source whose answer the test changes, counting reads.
    #[derive(Default)]
    struct Flip {
        granted: std::sync::atomic::AtomicBool,
        reads: AtomicU64,
    }

    #[async_trait::async_trait]
    impl ConsentSource for Flip {
        async fn snapshot(&self, _t: &Tenant, _s: &str) -> Result<ConsentSnapshot> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let mut s = ConsentSnapshot::default();
            s.apply(
                Purpose::Marketing,
                "",
                fact(self.granted.load(Ordering::SeqCst), 1),
            );
            Ok(s)
        }

        async fn restrict(&self, _change: &Restriction<'_>) -> Result<()> {
            Ok(())
        }

        async fn object(&self, _change: &Objection<'_>) -> Result<()> {
            Ok(())
        }

        async fn verify_identity(&self, _verification: &IdentityVerification<'_>) -> Result<()> {
            Ok(())
        }

        async fn record_guardian_consent(&self, _grant: &GuardianGrant<'_>) -> Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_cache_serves_until_invalidated_and_never_beyond_a_second() {
        let source = Arc::new(Flip::default());
        source.granted.store(true, Ordering::SeqCst);
        let gate = ConsentGate::new(source.clone(), Duration::from_secs(60));
        assert_eq!(gate.ttl, MAX_TTL, "a longer TTL is capped");
        gate.require(&Tenant::named("t"), "s", Purpose::Marketing, None)
            .await
            .unwrap();
        gate.require(&Tenant::named("t"), "s", Purpose::Marketing, None)
            .await
            .unwrap();
        assert_eq!(
            source.reads.load(Ordering::SeqCst),
            1,
            "second check is cached"
        );
        source.granted.store(false, Ordering::SeqCst);
        gate.invalidate(&Tenant::named("t"), "s");
        let err = gate
            .require(&Tenant::named("t"), "s", Purpose::Marketing, None)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "CONSENT_REQUIRED");
    }

    #[tokio::test]
    async fn without_a_ledger_consent_checks_fail_closed() {
        let gate = ConsentGate::without_ledger();
        let err = gate
            .require(&Tenant::named("t"), "s", Purpose::Marketing, None)
            .await
            .unwrap_err();
        assert_eq!(tonic::Status::from(err).code(), tonic::Code::Unavailable);
    }
}
