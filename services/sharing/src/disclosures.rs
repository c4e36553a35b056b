//! `tutela.sharing.v1.DisclosureService`: the one disclosure path, the pull channel, and the
//! disclosure log (S1, S3, S6).
//!
//! A disclosure reads the learners through enrolment's API (see `tutela_enrolment_client`), keeps
//! only the fields the agreement in force names for the call's purpose, replaces the learner id
//! by the partner's pseudonym, seals each record under the partner's data key, and writes the
//! delivery, its records and one log entry per learner in one transaction with the call's audit
//! record: a delivery exists with its log entries or not at all, so nothing can be pulled that
//! the log does not show, and nothing is logged that could not be pulled.
//!
//! The log is a hash chain per partner (each entry hashes the previous entry's hash with its own
//! content), written under the partner's row lock so that the chain has one order; an entry
//! changed or removed afterwards breaks it ([`verify_chain`]).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use prost::Message;
use prost_reflect::{DynamicMessage, ReflectMessage, Value};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tutela_policy::idempotency::{self, Idempotency};
use tutela_policy::scope::found;
use tutela_policy::validate::{Checks, timestamp};
use tutela_policy::{Authorized, Error, Precondition, Result, Violation, fields};
use tutela_proto::common::{LegalBasis, PageResponse, Purpose, SubjectRef};
use tutela_proto::enrolment::{ConsentCheck, Learner, RecordKind};
use tutela_proto::sharing::disclosure_service_server::DisclosureService as DisclosureApi;
use tutela_proto::sharing::{
    DeliveredRecord, Delivery, DeliveryChannel, DiscloseExceptionallyRequest,
    DiscloseExceptionallyResponse, DiscloseRequest, DiscloseResponse, Disclosure,
    DownloadExportRequest, DownloadExportResponse, FileLayout, ListDisclosuresRequest,
    ListDisclosuresResponse, PullDeliveriesRequest, PullDeliveriesResponse,
    PullSharedReleasesRequest, PullSharedReleasesResponse, ShareReleaseRequest,
    ShareReleaseResponse, WithheldFromDelivery,
};

use crate::duration::IsoDuration;
use crate::entity::{agreement, agreement_purpose, delivery, delivery_record, disclosure, partner};
use crate::export::{self, LAYOUTS};
use crate::releases::{self, Surveys};
use crate::sharing::{Sharing, next_page, page_size, time_of};
use crate::terms::name;
use tutela_enrolment_client::{Asked, Enrolment};

const DISCLOSE: &str = "tutela.sharing.v1.DisclosureService/Disclose";

/// The message the fields of a delivered record are paths of.
const LEARNER: &str = "tutela.enrolment.v1.Learner";
/// The records a path with a record prefix starts from.
const ENROLMENT: &str = "tutela.enrolment.v1.Enrolment";
const RESULT: &str = "tutela.enrolment.v1.AssessmentResult";
const CERTIFICATE: &str = "tutela.enrolment.v1.Certificate";

// A delivery row remembers the idempotency key and request of the Disclose that made it.
tutela_policy::idempotent_rows!(delivery);

/// Most learners one disclosure may name (enrolment's bulk read takes as many).
const MAX_LEARNERS: usize = 10_000;

/// The partner pulls (PullDeliveries).
const PULL: &str = "pull";

/// Staff download a file (DownloadExport) and hand it over.
const FILE: &str = "file";

/// Bytes per DownloadExport message.
const CHUNK: usize = 64 * 1024;

/// The hash before a chain's first entry.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Rows per multi-row insert: well under SQLite's 32,766 bound variables at 17 columns.
const INSERT_CHUNK: usize = 1_000;

/// The chunks of a file download.
pub type ExportStream = Pin<
    Box<
        dyn tokio_stream::Stream<Item = std::result::Result<DownloadExportResponse, Status>> + Send,
    >,
>;

/// The records of a pull stream.
pub type PullStream = Pin<
    Box<
        dyn tokio_stream::Stream<Item = std::result::Result<PullDeliveriesResponse, Status>> + Send,
    >,
>;

/// `tutela.sharing.v1.DisclosureService`.
#[derive(Debug, Clone)]
pub struct DisclosureService {
    sharing: Sharing,
    enrolment: Option<Arc<Enrolment>>,
    surveys: Option<Surveys>,
}

impl DisclosureService {
    /// The service over `sharing`, reading learners through `enrolment` and survey releases
    /// through `surveys` (`None`: that service is not configured, and what needs it is
    /// UNAVAILABLE).
    pub fn new(
        sharing: Sharing,
        enrolment: Option<Arc<Enrolment>>,
        surveys: Option<Surveys>,
    ) -> Self {
        Self {
            sharing,
            enrolment,
            surveys,
        }
    }
}

/// A disclosure request, parsed.
struct NewDisclosure {
    partner_id: String,
    learner_ids: Vec<String>,
    /// `pull` or `file`.
    channel: &'static str,
    /// The file's layout, for a file.
    layout: Option<&'static str>,
    /// Only records of this course; empty for every course.
    course_id: String,
    idempotency: Option<Idempotency>,
}

impl NewDisclosure {
    fn parse(r: &DiscloseRequest) -> Result<Self> {
        let mut c = Checks::new();
        let partner_id = c.uuid(&r.partner_id, "partner_id");
        c.ensure(
            !r.learner_ids.is_empty(),
            "learner_ids",
            "required: at least one learner",
        );
        c.ensure(
            r.learner_ids.len() <= MAX_LEARNERS,
            "learner_ids",
            "at most 10000 learners",
        );
        let mut learner_ids = Vec::with_capacity(r.learner_ids.len().min(MAX_LEARNERS));
        let mut seen = std::collections::HashSet::new();
        for (i, id) in r.learner_ids.iter().enumerate().take(MAX_LEARNERS) {
            if let Ok(id) = c.uuid(id, &format!("learner_ids[{i}]")) {
                if seen.insert(id.clone()) {
                    learner_ids.push(id);
                } else {
                    c.fail(format!("learner_ids[{i}]"), "named twice");
                }
            }
        }
        let key = c.key(r.idempotency_key.as_ref(), "idempotency_key");
        let channel = match DeliveryChannel::try_from(r.channel) {
            Ok(DeliveryChannel::Unspecified | DeliveryChannel::Pull) => Ok(PULL),
            Ok(DeliveryChannel::File) => Ok(FILE),
            Err(_) => Err(c.flag("channel", "not a delivery channel")),
        };
        let layout = match (FileLayout::try_from(r.layout), &channel) {
            (Ok(FileLayout::Unspecified), Ok(FILE)) => Err(c.flag(
                "layout",
                "required with DELIVERY_CHANNEL_FILE: FILE_LAYOUT_CANDIDATES_CSV or \
                 FILE_LAYOUT_FUNDER_RETURN_XML",
            )),
            (Ok(FileLayout::Unspecified), _) => Ok(None),
            (Ok(layout), Ok(FILE)) => Ok(name(&LAYOUTS, layout)),
            (Ok(_), _) => Err(c.flag("layout", "only with DELIVERY_CHANNEL_FILE")),
            (Err(_), _) => Err(c.flag("layout", "not a file layout")),
        };
        let course_id = match r.course_id.trim() {
            "" => Ok(String::new()),
            id => c.uuid(id, "course_id"),
        };
        let (partner_id, key, channel, layout, course_id) =
            c.parsed((partner_id, key, channel, layout, course_id))?;
        Ok(Self {
            partner_id: partner_id.clone(),
            channel,
            layout,
            idempotency: Idempotency::new(
                key,
                DISCLOSE,
                &DiscloseRequest {
                    partner_id: partner_id.clone(),
                    learner_ids: learner_ids.clone(),
                    idempotency_key: None,
                    channel: r.channel,
                    layout: r.layout,
                    course_id: course_id.clone(),
                },
            ),
            course_id,
            learner_ids,
        })
    }
}

/// What a delivery is made under: an agreement's terms for the purpose, or an exceptional
/// disclosure's (no agreement: its id empty, version 0).
struct Terms {
    agreement_id: String,
    agreement_version: i32,
    /// Short name of the legal basis.
    legal_basis: String,
    fields: Vec<String>,
    available_until: Option<DateTime<Utc>>,
    reference: String,
    requester: String,
    do_not_tell_until: Option<DateTime<Utc>>,
}

/// The partner kinds an exceptional disclosure may go to (S5).
const AUTHORITIES: [&str; 3] = ["regulator", "law_enforcement", "legal_adviser"];

/// How long the dpo may download an exceptional disclosure's file.
const EXCEPTIONAL_DOWNLOAD_DAYS: i64 = 30;

/// The agreement in force with `partner_id` at `now` that covers `purpose`, with its terms.
async fn agreement_in_force<C: ConnectionTrait>(
    conn: &C,
    call: &Authorized,
    partner_id: &str,
    purpose: &str,
    now: DateTime<Utc>,
) -> Result<Option<(agreement::Model, agreement_purpose::Model)>> {
    let active = call
        .find::<agreement::Entity>()
        .filter(agreement::Column::PartnerId.eq(partner_id))
        .filter(agreement::Column::State.eq("active"))
        .filter(agreement::Column::ValidFrom.lte(now))
        .all(conn)
        .await?;
    // Activation keeps active versions from overlapping, so at most one is in force.
    let Some(agreement) = active
        .into_iter()
        .find(|a| a.valid_to.is_none_or(|end| end > now))
    else {
        return Ok(None);
    };
    let terms = call
        .find::<agreement_purpose::Entity>()
        .filter(agreement_purpose::Column::AgreementId.eq(agreement.agreement_id.as_str()))
        .filter(agreement_purpose::Column::Purpose.eq(purpose))
        .one(conn)
        .await?;
    Ok(terms.map(|t| (agreement, t)))
}

/// The consent enrolment checks of each learner for a disclosure for `purpose` on `basis`: the
/// partner's own use needs consent naming the partner (S2); a disclosure on consent needs it
/// even where the register's purpose does not; otherwise the register decides.
fn consent_check(purpose: Purpose, basis: &str) -> ConsentCheck {
    if purpose == Purpose::ThirdPartyDisclosure {
        ConsentCheck::NamedRecipient
    } else if basis == "consent" {
        ConsentCheck::Always
    } else {
        ConsentCheck::Unspecified
    }
}

/// The kinds of a learner's records the agreement's fields reach into, by their path prefixes
/// (see [`crate::paths`]).
fn record_kinds(fields: &[String]) -> Vec<RecordKind> {
    [
        (RecordKind::Enrolments, "enrolment."),
        (RecordKind::Results, "result."),
        (RecordKind::Certificates, "certificate."),
    ]
    .into_iter()
    .filter(|(_, prefix)| fields.iter().any(|f| f.starts_with(prefix)))
    .map(|(kind, _)| kind)
    .collect()
}

/// The profile fields to ask enrolment for: the first segment under `profile.` of each path.
fn read_mask(fields: &[String]) -> Vec<String> {
    let mut mask: Vec<String> = fields
        .iter()
        .filter_map(|f| f.strip_prefix("profile."))
        .map(|rest| rest.split('.').next().unwrap_or(rest).to_owned())
        .collect();
    mask.sort();
    mask.dedup();
    mask
}

/// `learner` with only the fields at `paths` set, and no learner id (the pseudonym stands for
/// it).
fn minimised(learner: &Learner, paths: &[String]) -> Result<Learner> {
    let source = fields::to_dynamic(learner, LEARNER)?;
    let mut kept = DynamicMessage::new(source.descriptor());
    for path in paths {
        if path == "learner_id" {
            continue;
        }
        let segments: Vec<&str> = path.split('.').collect();
        copy_path(&source, &mut kept, &segments);
    }
    fields::from_dynamic(&kept)
}

/// `records` (messages `full_name`), each with only the fields at the paths of `fields` under
/// `prefix` (`result.score` keeps `score`). Never the record's `learner`: the pseudonym stands
/// for the learner, as for `learner_id`.
fn minimised_records<M: Message + Default>(
    records: &[M],
    full_name: &str,
    fields: &[String],
    prefix: &str,
) -> Result<Vec<M>> {
    let paths: Vec<Vec<&str>> = fields
        .iter()
        .filter_map(|f| f.strip_prefix(prefix))
        .map(|rest| rest.split('.').collect::<Vec<_>>())
        .filter(|segments| segments.first() != Some(&"learner"))
        .collect();
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    records
        .iter()
        .map(|record| {
            let source = fields::to_dynamic(record, full_name)?;
            let mut kept = DynamicMessage::new(source.descriptor());
            for segments in &paths {
                copy_path(&source, &mut kept, segments);
            }
            fields::from_dynamic(&kept)
        })
        .collect()
}

/// Copies the field at `segments` of `from` into `to`, creating the messages along the way.
fn copy_path(from: &DynamicMessage, to: &mut DynamicMessage, segments: &[&str]) {
    let Some((first, rest)) = segments.split_first() else {
        return;
    };
    let Some(field) = from.descriptor().get_field_by_name(first) else {
        return;
    };
    if !from.has_field(&field) {
        return;
    }
    if rest.is_empty() {
        fields::copy_field(from, to, &field);
        return;
    }
    let Value::Message(inner_from) = from.get_field(&field).into_owned() else {
        return;
    };
    if let Value::Message(inner_to) = to.get_field_mut(&field) {
        copy_path(&inner_from, inner_to, rest);
    }
}

/// The records of `rows`, opened with the partner's data key.
fn opened(
    data_key: &tutela_store::SubjectKey,
    rows: &[delivery_record::Model],
) -> Result<Vec<DeliveredRecord>> {
    rows.iter()
        .map(|row| {
            let plain = data_key
                .open(
                    &sealed_field(&row.delivery_id, row.position),
                    &row.sealed_record,
                )
                .map_err(Error::internal)?;
            DeliveredRecord::decode(plain.as_slice())
                .map_err(|e| Error::internal(format!("a sealed record: {e}")))
        })
        .collect()
}

/// Lower-case hex SHA-256 of the record as delivered (with an empty `payload_sha256`).
fn payload_hash(record: &DeliveredRecord) -> String {
    hex::encode(Sha256::digest(record.encode_to_vec()))
}

/// The field a record is sealed for: binds the ciphertext to its delivery and position.
fn sealed_field(delivery_id: &str, position: i32) -> String {
    format!("delivery.{delivery_id}.{position}")
}

/// The hash of a log entry: its content after the previous entry's hash, each value
/// length-prefixed so that no two entries can be spelled alike.
pub fn entry_hash(e: &disclosure::Model) -> String {
    let mut h = Sha256::new();
    let position = e.position.to_string();
    let version = e.agreement_version.to_string();
    let at = e
        .disclosed_at
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let tell = e
        .do_not_tell_until
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default();
    for part in [
        e.prev_hash.as_str(),
        &e.tenant,
        &e.partner_id,
        &position,
        &e.subject_id,
        &e.delivery_id,
        &e.agreement_id,
        &version,
        &e.purpose,
        &e.legal_basis,
        &e.fields,
        &e.channel,
        &at,
        &e.actor,
        &e.payload_sha256,
        &e.reference,
        &e.requester,
        &tell,
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Walks the disclosure log of `partner_id` in order: the number of entries when every entry
/// follows from the one before it, or the position of the first that does not.
pub async fn verify_chain<C: ConnectionTrait>(
    conn: &C,
    partner_id: &str,
) -> std::result::Result<u64, ChainBroken> {
    const PAGE: u64 = 1_000;
    let mut prev = GENESIS.to_owned();
    let mut expected = 1i64;
    loop {
        let rows = disclosure::Entity::find()
            .filter(disclosure::Column::PartnerId.eq(partner_id))
            .filter(disclosure::Column::Position.gte(expected))
            .order_by_asc(disclosure::Column::Position)
            .limit(PAGE)
            .all(conn)
            .await
            .map_err(|_| ChainBroken { position: expected })?;
        let last_page = (rows.len() as u64) < PAGE;
        for row in rows {
            if row.position != expected
                || row.prev_hash != prev
                || entry_hash(&row) != row.entry_hash
            {
                return Err(ChainBroken { position: expected });
            }
            prev = row.entry_hash;
            expected += 1;
        }
        if last_page {
            return Ok(u64::try_from(expected - 1).unwrap_or(0));
        }
    }
}

/// Where a partner's disclosure log stops following from itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainBroken {
    /// The first position that is missing or does not match.
    pub position: i64,
}

/// A delivery as the API shows it.
fn to_delivery(row: &delivery::Model) -> Delivery {
    Delivery {
        delivery_id: row.delivery_id.clone(),
        partner_id: row.partner_id.clone(),
        agreement_id: row.agreement_id.clone(),
        agreement_version: row.agreement_version,
        purpose: Purpose::from_short_name(&row.purpose).map_or(0, |p| p as i32),
        legal_basis: LegalBasis::from_short_name(&row.legal_basis).map_or(0, |b| b as i32),
        fields: serde_json::from_str(&row.fields).unwrap_or_default(),
        record_count: u32::try_from(row.record_count).unwrap_or(0),
        key_version: u32::try_from(row.key_version).unwrap_or(0),
        created_at: Some(timestamp(row.created_at)),
        available_until: row.available_until.map(timestamp),
        channel: match row.channel.as_str() {
            FILE => DeliveryChannel::File as i32,
            _ => DeliveryChannel::Pull as i32,
        },
        layout: crate::terms::number(&LAYOUTS, &row.layout),
        file_sha256: row.file_sha256.clone(),
    }
}

impl DisclosureService {
    async fn disclose(&self, call: &Authorized, new: NewDisclosure) -> Result<DiscloseResponse> {
        let s = &self.sharing;
        if let Some(row) =
            idempotency::replay::<delivery::Entity>(call, &s.db, new.idempotency.as_ref()).await?
        {
            return Ok(DiscloseResponse {
                delivery: Some(to_delivery(&row)),
                withheld: Vec::new(),
            });
        }
        let purpose = call.purpose().short_name();
        let now = s.now().trunc_subsecs(6);
        let partner = s.partner(&s.db, call, &new.partner_id).await?;
        let Some((agreement, terms)) =
            agreement_in_force(&s.db, call, &partner.partner_id, purpose, now).await?
        else {
            return Err(Error::FailedPrecondition {
                reason: Precondition::AgreementRequired,
                message: format!(
                    "no agreement with this partner in force covers the purpose {purpose}"
                ),
            });
        };
        if agreement.transfer_safeguard == "none"
            && s.register.transfers.needs_safeguard(&partner.country)
        {
            return Err(Error::TransferSafeguardRequired {
                country: partner.country.clone(),
            });
        }
        let fields: Vec<String> = serde_json::from_str(&terms.fields)
            .map_err(|_| Error::internal("an agreement's fields do not parse"))?;
        let available_until = match agreement.access_period.as_str() {
            "" => None,
            period => Some(
                IsoDuration::parse(period)
                    .map_err(|_| Error::internal("an agreement's access period does not parse"))?
                    .after(now),
            ),
        };
        let made = Terms {
            agreement_id: agreement.agreement_id,
            agreement_version: agreement.version,
            legal_basis: terms.legal_basis,
            fields,
            available_until,
            reference: String::new(),
            requester: String::new(),
            do_not_tell_until: None,
        };
        self.deliver(call, &partner, made, new, now).await
    }

    /// Makes a delivery of `new.learner_ids` to `partner` under `terms`: the one path every
    /// disclosure takes.
    async fn deliver(
        &self,
        call: &Authorized,
        partner: &partner::Model,
        terms: Terms,
        new: NewDisclosure,
        now: DateTime<Utc>,
    ) -> Result<DiscloseResponse> {
        let s = &self.sharing;
        let purpose = call.purpose().short_name();
        let fields = &terms.fields;
        let records = record_kinds(fields);
        if records.is_empty() && !new.course_id.is_empty() {
            return Err(Error::InvalidArgument(vec![Violation::new(
                "course_id",
                "the agreement names no fields of learners' records for this purpose, so there \
                 are no records to choose a course of",
            )]));
        }
        let Some(enrolment) = &self.enrolment else {
            return Err(Error::Unavailable(
                "no enrolment service is configured (sharing.enrolment_endpoint)".into(),
            ));
        };
        let read = enrolment
            .learners(
                call.tenant(),
                purpose,
                Asked {
                    ids: new.learner_ids,
                    mask: read_mask(fields),
                    records,
                    course_id: new.course_id,
                    consent: consent_check(call.purpose(), &terms.legal_basis),
                },
                &partner.partner_id,
            )
            .await?;

        let delivery_id = uuid::Uuid::now_v7().to_string();
        let actor = call.principal().id.clone();
        let fields_json = serde_json::Value::from(fields.clone()).to_string();

        let txn = tutela_store::begin(&s.db).await?;
        call.record_in(&txn).await?;
        // The partner's lock: its key version cannot change under this delivery, and its log
        // chain grows one delivery at a time.
        let locked = s
            .lock_partner(&txn, call, &partner.partner_id, false)
            .await?;
        let key_version = u32::try_from(locked.key_version).unwrap_or(0);
        let sealed_key = s
            .sealed_key(&txn, call, &partner.partner_id, key_version)
            .await?;
        let key = s
            .keys
            .open(call.tenant(), &partner.partner_id, key_version, &sealed_key)
            .await?;
        let data_key = s.keys.data_key(call.tenant(), &partner.partner_id).await?;
        let last = call
            .find::<disclosure::Entity>()
            .filter(disclosure::Column::PartnerId.eq(partner.partner_id.as_str()))
            .order_by_desc(disclosure::Column::Position)
            .one(&txn)
            .await?;
        let (mut position, mut prev) = match last {
            Some(e) => (e.position, e.entry_hash),
            None => (0, GENESIS.to_owned()),
        };

        let mut records = Vec::with_capacity(read.learners.len());
        let mut for_file = Vec::new();
        let mut entries = Vec::with_capacity(read.learners.len());
        for (i, learner) in read.learners.iter().enumerate() {
            let index = i32::try_from(i + 1).map_err(Error::internal)?;
            // Enrolment answers with one entry per learner, in order, when records are asked.
            let of_learner = read
                .records
                .get(i)
                .filter(|r| r.learner_id == learner.learner_id);
            let (enrolments, results, certificates) = match of_learner {
                Some(r) => (
                    minimised_records(&r.enrolments, ENROLMENT, fields, "enrolment.")?,
                    minimised_records(&r.results, RESULT, fields, "result.")?,
                    minimised_records(&r.certificates, CERTIFICATE, fields, "certificate.")?,
                ),
                None => Default::default(),
            };
            let mut record = DeliveredRecord {
                pseudonym: key.pseudonym(&learner.learner_id),
                learner: Some(minimised(learner, fields)?),
                payload_sha256: String::new(),
                enrolments,
                results,
                certificates,
            };
            let hash = payload_hash(&record);
            record.payload_sha256 = hash.clone();
            let sealed = data_key
                .seal(&sealed_field(&delivery_id, index), &record.encode_to_vec())
                .map_err(Error::internal)?;
            if new.layout.is_some() {
                for_file.push(record.clone());
            }
            records.push(delivery_record::ActiveModel {
                delivery_id: Set(delivery_id.clone()),
                position: Set(index),
                tenant: Set(call.tenant().to_owned()),
                pseudonym: Set(record.pseudonym),
                sealed_record: Set(sealed),
                payload_sha256: Set(hash.clone()),
            });
            position += 1;
            let mut entry = disclosure::Model {
                partner_id: partner.partner_id.clone(),
                position,
                tenant: call.tenant().to_owned(),
                subject_id: learner.learner_id.clone(),
                delivery_id: delivery_id.clone(),
                agreement_id: terms.agreement_id.clone(),
                agreement_version: terms.agreement_version,
                purpose: purpose.to_owned(),
                legal_basis: terms.legal_basis.clone(),
                fields: fields_json.clone(),
                channel: new.channel.to_owned(),
                disclosed_at: now,
                actor: actor.clone(),
                payload_sha256: hash,
                reference: terms.reference.clone(),
                requester: terms.requester.clone(),
                do_not_tell_until: terms.do_not_tell_until,
                prev_hash: prev.clone(),
                entry_hash: String::new(),
            };
            entry.entry_hash = entry_hash(&entry);
            prev = entry.entry_hash.clone();
            entries.push(disclosure::ActiveModel::from(entry));
        }
        let (key_column, request_hash) = Idempotency::columns(new.idempotency.as_ref());
        let mut row = delivery::Model {
            delivery_id: delivery_id.clone(),
            tenant: call.tenant().to_owned(),
            partner_id: partner.partner_id.clone(),
            agreement_id: terms.agreement_id.clone(),
            agreement_version: terms.agreement_version,
            purpose: purpose.to_owned(),
            legal_basis: terms.legal_basis.clone(),
            fields: fields_json,
            channel: new.channel.to_owned(),
            layout: new.layout.unwrap_or_default().to_owned(),
            file_sha256: String::new(),
            key_version: locked.key_version,
            record_count: i32::try_from(records.len()).map_err(Error::internal)?,
            actor,
            created_at: now,
            available_until: terms.available_until,
            deletion_requested_at: None,
            idempotency_key: key_column,
            request_hash,
        };
        if new.layout.is_some() {
            // The file's hash is recorded with the delivery: what is handed over can be shown
            // to be what was made (and logged).
            let file = export::render(&row, fields, &for_file)?;
            row.file_sha256 = hex::encode(Sha256::digest(&file.bytes));
        }
        let row = delivery::ActiveModel::from(row)
            .insert(&txn)
            .await
            .map_err(idempotency::key_taken)?;
        while !records.is_empty() {
            let chunk: Vec<_> = records.drain(..records.len().min(INSERT_CHUNK)).collect();
            delivery_record::Entity::insert_many(chunk)
                .exec_without_returning(&txn)
                .await?;
        }
        while !entries.is_empty() {
            let chunk: Vec<_> = entries.drain(..entries.len().min(INSERT_CHUNK)).collect();
            disclosure::Entity::insert_many(chunk)
                .exec_without_returning(&txn)
                .await?;
        }
        if row.channel == PULL {
            // "Ready, pull it" to the partner's webhook endpoint, if it has one: ids only, sent
            // if and only if the delivery commits.
            crate::webhooks::enqueue(
                &txn,
                call.scope(),
                &partner.partner_id,
                "delivery.ready",
                &serde_json::json!({ "delivery_id": row.delivery_id }),
                now,
            )
            .await?;
        }
        txn.commit().await?;
        tracing::info!(
            delivery_id = %delivery_id,
            records = row.record_count,
            withheld = read.withheld.len(),
            "disclosed"
        );
        Ok(DiscloseResponse {
            delivery: Some(to_delivery(&row)),
            withheld: read
                .withheld
                .into_iter()
                .map(|w| WithheldFromDelivery {
                    learner_id: w.learner_id,
                    reason: w.reason,
                })
                .collect(),
        })
    }

    /// Whether the partner may still pull `d` at `now`: within its access period, under an
    /// agreement still in force.
    /// The ids of `partner_id`'s agreements in force at `now`: one query for however many
    /// deliveries are checked against them.
    async fn agreements_in_force(
        &self,
        call: &Authorized,
        partner_id: &str,
        now: DateTime<Utc>,
    ) -> Result<std::collections::HashSet<String>> {
        Ok(call
            .find::<agreement::Entity>()
            .filter(agreement::Column::PartnerId.eq(partner_id))
            .filter(agreement::Column::State.eq("active"))
            .all(&self.sharing.db)
            .await?
            .into_iter()
            .filter(|a| a.valid_to.is_none_or(|end| end > now))
            .map(|a| a.agreement_id)
            .collect())
    }

    async fn deliveries_to_pull(
        &self,
        call: &Authorized,
        partner_id: &str,
        delivery_id: Option<String>,
    ) -> Result<Vec<delivery::Model>> {
        let s = &self.sharing;
        let now = s.now();
        let purpose = call.purpose().short_name();
        if let Some(id) = delivery_id {
            let d = found(
                call.find::<delivery::Entity>()
                    .filter(delivery::Column::DeliveryId.eq(id.as_str()))
                    .filter(delivery::Column::PartnerId.eq(partner_id))
                    .one(&s.db)
                    .await?,
                "delivery",
            )?;
            if d.channel != PULL {
                return Err(Error::NotFound("delivery"));
            }
            let in_force = self.agreements_in_force(call, partner_id, now).await?;
            if d.purpose != purpose || !pullable(&d, &in_force, now) {
                return Err(Error::FailedPrecondition {
                    reason: Precondition::AccessPeriodEnded,
                    message: "this delivery may no longer be pulled for this purpose".into(),
                });
            }
            return Ok(vec![d]);
        }
        let all = call
            .find::<delivery::Entity>()
            .filter(delivery::Column::PartnerId.eq(partner_id))
            .filter(delivery::Column::Channel.eq(PULL))
            .filter(delivery::Column::Purpose.eq(purpose))
            .order_by_asc(delivery::Column::DeliveryId)
            .all(&s.db)
            .await?;
        let in_force = self.agreements_in_force(call, partner_id, now).await?;
        Ok(all
            .into_iter()
            .filter(|d| pullable(d, &in_force, now))
            .collect())
    }
}

/// Whether a delivery may still be pulled or downloaded at `now`: within its access period, and
/// under an agreement still in force (`in_force`: its partner's), or an exceptional disclosure's
/// download period.
fn pullable(
    d: &delivery::Model,
    in_force: &std::collections::HashSet<String>,
    now: DateTime<Utc>,
) -> bool {
    d.available_until.is_none_or(|end| end > now)
        && (d.agreement_id.is_empty() || in_force.contains(&d.agreement_id))
}

/// Streams the records of `deliveries`, `batch` at a time, opening each sealed record.
async fn produce(
    sharing: &Sharing,
    call: &Authorized,
    deliveries: Vec<delivery::Model>,
    batch: u64,
    tx: &mpsc::Sender<std::result::Result<PullDeliveriesResponse, Status>>,
) -> Result<u64> {
    let mut sent = 0u64;
    for d in deliveries {
        let data_key = sharing.keys.data_key(call.tenant(), &d.partner_id).await?;
        let shown = to_delivery(&d);
        let mut after = 0i32;
        loop {
            let rows = call
                .find::<delivery_record::Entity>()
                .filter(delivery_record::Column::DeliveryId.eq(d.delivery_id.as_str()))
                .filter(delivery_record::Column::Position.gt(after))
                .order_by_asc(delivery_record::Column::Position)
                .limit(batch)
                .all(&sharing.db)
                .await?;
            let Some(last) = rows.last() else {
                break;
            };
            after = last.position;
            let full = rows.len() as u64 == batch;
            let records = opened(&data_key, &rows)?;
            sent += records.len() as u64;
            let message = PullDeliveriesResponse {
                delivery: Some(shown.clone()),
                records,
            };
            if tx.send(Ok(message)).await.is_err() {
                // The partner went away: nothing more to send.
                return Ok(sent);
            }
            if !full {
                break;
            }
        }
    }
    Ok(sent)
}

/// A log entry as the API shows it.
fn to_disclosure(row: &disclosure::Model, recipients: &HashMap<String, String>) -> Disclosure {
    Disclosure {
        subject: Some(SubjectRef {
            subject_id: row.subject_id.clone(),
        }),
        partner_id: row.partner_id.clone(),
        recipient: recipients.get(&row.partner_id).cloned().unwrap_or_default(),
        delivery_id: row.delivery_id.clone(),
        agreement_id: row.agreement_id.clone(),
        agreement_version: row.agreement_version,
        purpose: Purpose::from_short_name(&row.purpose).map_or(0, |p| p as i32),
        legal_basis: LegalBasis::from_short_name(&row.legal_basis).map_or(0, |b| b as i32),
        fields: serde_json::from_str(&row.fields).unwrap_or_default(),
        channel: row.channel.clone(),
        disclosed_at: Some(timestamp(row.disclosed_at)),
        actor: row.actor.clone(),
        payload_sha256: row.payload_sha256.clone(),
        entry_hash: row.entry_hash.clone(),
        reference: row.reference.clone(),
        requester: row.requester.clone(),
        do_not_tell_until: row.do_not_tell_until.map(timestamp),
    }
}

/// A page token of the log: the partner and position of the last entry shown.
fn log_token(row: &disclosure::Model) -> String {
    format!("{}:{}", row.partner_id, row.position)
}

#[tonic::async_trait]
impl DisclosureApi for DisclosureService {
    async fn share_release(
        &self,
        request: Request<ShareReleaseRequest>,
    ) -> std::result::Result<Response<ShareReleaseResponse>, Status> {
        let call = Authorized::of(&request)?;
        let shared = releases::share(
            &self.sharing,
            self.surveys.as_ref(),
            &call,
            request.get_ref(),
        )
        .await?;
        Ok(Response::new(ShareReleaseResponse {
            shared: Some(shared),
        }))
    }

    async fn pull_shared_releases(
        &self,
        request: Request<PullSharedReleasesRequest>,
    ) -> std::result::Result<Response<PullSharedReleasesResponse>, Status> {
        let call = Authorized::of(&request)?;
        Ok(Response::new(
            releases::pull(&self.sharing, &call, request.get_ref()).await?,
        ))
    }

    async fn disclose(
        &self,
        request: Request<DiscloseRequest>,
    ) -> std::result::Result<Response<DiscloseResponse>, Status> {
        let call = Authorized::of(&request)?;
        let new = NewDisclosure::parse(request.get_ref())?;
        Ok(Response::new(self.disclose(&call, new).await?))
    }

    type PullDeliveriesStream = PullStream;

    async fn pull_deliveries(
        &self,
        request: Request<PullDeliveriesRequest>,
    ) -> std::result::Result<Response<Self::PullDeliveriesStream>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let mut c = Checks::new();
        let delivery_id = match r.delivery_id.trim() {
            "" => None,
            id => c.uuid(id, "delivery_id").ok(),
        };
        c.ensure(r.batch_size <= 1000, "batch_size", "at most 1000");
        c.finish()?;
        // The rules let only partner tokens here; the partner is the token's, never the
        // request's.
        let Some(partner_id) = call.principal().partner.clone() else {
            return Err(Error::Denied.into());
        };
        let deliveries = self
            .deliveries_to_pull(&call, &partner_id, delivery_id)
            .await?;
        let batch = match r.batch_size {
            0 => 500,
            n => u64::from(n),
        };
        let (tx, rx) = mpsc::channel(2);
        let sharing = self.sharing.clone();
        tokio::spawn(async move {
            match produce(&sharing, &call, deliveries, batch, &tx).await {
                Ok(count) => tracing::info!(records = count, "deliveries pulled"),
                Err(err) => {
                    let _ = tx.send(Err(err.into())).await;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type DownloadExportStream = ExportStream;

    async fn download_export(
        &self,
        request: Request<DownloadExportRequest>,
    ) -> std::result::Result<Response<Self::DownloadExportStream>, Status> {
        let call = Authorized::of(&request)?;
        let mut c = Checks::new();
        let id = c.uuid(&request.get_ref().delivery_id, "delivery_id");
        let id = c.parsed(id)?;
        let s = &self.sharing;
        let d = found(
            call.find::<delivery::Entity>()
                .filter(delivery::Column::DeliveryId.eq(id.as_str()))
                .filter(delivery::Column::Channel.eq(FILE))
                .one(&s.db)
                .await
                .map_err(Error::from)?,
            "delivery",
        )?;
        let fields: Vec<String> = serde_json::from_str(&d.fields)
            .map_err(|_| Error::internal("a delivery's fields do not parse"))?;
        // The file carries every category of the fields: the caller must be able to read each.
        for path in &fields {
            if let Ok(categories) = crate::paths::categories(path) {
                for category in categories.iter() {
                    call.require_readable(category)?;
                }
            }
        }
        let in_force = self
            .agreements_in_force(&call, &d.partner_id, s.now())
            .await?;
        if d.purpose != call.purpose().short_name() || !pullable(&d, &in_force, s.now()) {
            return Err(Error::FailedPrecondition {
                reason: Precondition::AccessPeriodEnded,
                message: "this file may no longer be downloaded for this purpose".into(),
            }
            .into());
        }
        let data_key = s.keys.data_key(call.tenant(), &d.partner_id).await?;
        let rows = call
            .find::<delivery_record::Entity>()
            .filter(delivery_record::Column::DeliveryId.eq(d.delivery_id.as_str()))
            .order_by_asc(delivery_record::Column::Position)
            .all(&s.db)
            .await
            .map_err(Error::from)?;
        let records = opened(&data_key, &rows)?;
        let file = export::render(&d, &fields, &records)?;
        if hex::encode(Sha256::digest(&file.bytes)) != d.file_sha256 {
            // A record erased since (a learner's erasure) changes the file: say so rather than
            // hand over a file that is not the one logged.
            return Err(Error::FailedPrecondition {
                reason: Precondition::AccessPeriodEnded,
                message: "records of this file were erased since it was made; disclose again"
                    .into(),
            }
            .into());
        }
        let total = u32::try_from(records.len()).unwrap_or(u32::MAX);
        let mut chunks = Vec::new();
        let mut start = 0;
        while start < file.bytes.len() {
            let end = (start + CHUNK).min(file.bytes.len());
            let done = file.ends.iter().take_while(|e| **e <= end).count();
            chunks.push(Ok(DownloadExportResponse {
                data: file.bytes[start..end].to_vec(),
                records_done: u32::try_from(done).unwrap_or(u32::MAX),
                record_count: total,
            }));
            start = end;
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn disclose_exceptionally(
        &self,
        request: Request<DiscloseExceptionallyRequest>,
    ) -> std::result::Result<Response<DiscloseExceptionallyResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let mut c = Checks::new();
        let mut fields = Vec::new();
        c.ensure(
            (1..=50).contains(&r.fields.len()),
            "fields",
            "required: 1 to 50 field paths",
        );
        let mut categories = Vec::new();
        for (i, f) in r.fields.iter().enumerate().take(50) {
            let path = f.trim();
            match crate::paths::categories(path) {
                Ok(cats) => {
                    categories.push((format!("fields[{i}]"), cats));
                    fields.push(path.to_owned());
                }
                Err(why) => c.fail(format!("fields[{i}]"), why.describe()),
            }
        }
        let basis = match LegalBasis::try_from(r.legal_basis) {
            Ok(LegalBasis::Unspecified) | Err(_) => {
                Err(c.flag("legal_basis", "required: the legal basis of the disclosure"))
            }
            Ok(LegalBasis::Consent) => Err(c.flag(
                "legal_basis",
                "an exceptional disclosure does not rest on consent",
            )),
            Ok(b) => Ok(b.short_name()),
        };
        let reference = c.required(r.reference.trim(), "reference", 200);
        let requester = c.required(r.requester.trim(), "requester", 200);
        let do_not_tell_until = r.do_not_tell_until.as_ref().and_then(time_of);
        let base = DiscloseRequest {
            partner_id: r.partner_id.clone(),
            learner_ids: r.learner_ids.clone(),
            idempotency_key: r.idempotency_key.clone(),
            channel: DeliveryChannel::File as i32,
            layout: FileLayout::CandidatesCsv as i32,
            course_id: String::new(),
        };
        let (basis, reference, requester) = c.parsed((basis, reference, requester))?;
        let mut new = NewDisclosure::parse(&base)?;
        // A retry of this call, not of a Disclose: the whole request is its fingerprint.
        new.idempotency = Idempotency::of_request(
            new.idempotency.as_ref().map(|i| i.key().to_owned()),
            "tutela.sharing.v1.DisclosureService/DiscloseExceptionally",
            r,
            |m| m.idempotency_key = None,
        );
        let rule = self
            .sharing
            .register
            .rule(call.purpose())
            .ok_or(Error::PurposeNotRegistered(call.purpose().short_name()))?;
        let outside: Vec<Violation> = categories
            .iter()
            .filter(|(_, cats)| !cats.without(rule.categories).is_empty())
            .map(|(at, cats)| {
                Violation::new(
                    at.clone(),
                    format!(
                        "{} data is not allowed for the purpose {} (processing register)",
                        cats.without(rule.categories).names().join(", "),
                        call.purpose().short_name()
                    ),
                )
            })
            .collect();
        if !outside.is_empty() {
            return Err(Error::NotForPurpose(outside).into());
        }
        let s = &self.sharing;
        if let Some(row) =
            idempotency::replay::<delivery::Entity>(&call, &s.db, new.idempotency.as_ref()).await?
        {
            return Ok(Response::new(DiscloseExceptionallyResponse {
                delivery: Some(to_delivery(&row)),
                withheld: Vec::new(),
            }));
        }
        let partner = s.partner(&s.db, &call, &new.partner_id).await?;
        if !AUTHORITIES.contains(&partner.kind.as_str()) {
            return Err(Error::invalid(
                "partner_id",
                "an exceptional disclosure goes to a regulator, law enforcement or a legal adviser",
            )
            .into());
        }
        let now = s.now().trunc_subsecs(6);
        let terms = Terms {
            agreement_id: String::new(),
            agreement_version: 0,
            legal_basis: basis.to_owned(),
            fields,
            available_until: Some(now + chrono::Duration::days(EXCEPTIONAL_DOWNLOAD_DAYS)),
            reference: reference.to_owned(),
            requester: requester.to_owned(),
            do_not_tell_until: do_not_tell_until.map(|t| t.trunc_subsecs(6)),
        };
        let made = self.deliver(&call, &partner, terms, new, now).await?;
        Ok(Response::new(DiscloseExceptionallyResponse {
            delivery: made.delivery,
            withheld: made.withheld,
        }))
    }

    async fn list_disclosures(
        &self,
        request: Request<ListDisclosuresRequest>,
    ) -> std::result::Result<Response<ListDisclosuresResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let mut c = Checks::new();
        let subject = match r.subject.as_ref().map(|s| s.subject_id.trim()) {
            None | Some("") => None,
            Some(id) => c.uuid(id, "subject.subject_id").ok(),
        };
        let partner_id = match r.partner_id.trim() {
            "" => None,
            id => c.uuid(id, "partner_id").ok(),
        };
        let token = r.page.as_ref().map(|p| p.page_token.trim()).unwrap_or("");
        let after = match token {
            "" => None,
            t => match t.rsplit_once(':').and_then(|(p, n)| {
                Some((
                    uuid::Uuid::parse_str(p).ok()?.to_string(),
                    n.parse::<i64>().ok()?,
                ))
            }) {
                Some(after) => Some(after),
                None => {
                    c.fail("page.page_token", "not a page token of this list");
                    None
                }
            },
        };
        c.finish()?;
        let size = page_size(r.page.as_ref());
        let s = &self.sharing;
        let mut query = call.find::<disclosure::Entity>();
        if let Some(subject) = &subject {
            query = query.filter(disclosure::Column::SubjectId.eq(subject.as_str()));
        }
        if let Some(partner_id) = &partner_id {
            query = query.filter(disclosure::Column::PartnerId.eq(partner_id.as_str()));
        }
        if let Some((p, n)) = &after {
            use sea_orm::sea_query::Condition;
            query = query.filter(
                Condition::any()
                    .add(disclosure::Column::PartnerId.gt(p.as_str()))
                    .add(
                        Condition::all()
                            .add(disclosure::Column::PartnerId.eq(p.as_str()))
                            .add(disclosure::Column::Position.gt(*n)),
                    ),
            );
        }
        let mut rows = query
            .order_by_asc(disclosure::Column::PartnerId)
            .order_by_asc(disclosure::Column::Position)
            .limit(size + 1)
            .all(&s.db)
            .await
            .map_err(Error::from)?;
        let next = next_page(&mut rows, size, log_token);
        let mut ids: Vec<&str> = rows.iter().map(|r| r.partner_id.as_str()).collect();
        ids.dedup();
        let recipients: HashMap<String, String> = call
            .find::<partner::Entity>()
            .filter(partner::Column::PartnerId.is_in(ids))
            .all(&s.db)
            .await
            .map_err(Error::from)?
            .into_iter()
            .map(|p| (p.partner_id, p.legal_name))
            .collect();
        Ok(Response::new(ListDisclosuresResponse {
            disclosures: rows.iter().map(|r| to_disclosure(r, &recipients)).collect(),
            page: Some(PageResponse {
                next_page_token: next,
            }),
        }))
    }
}
