//! Every request checked against the contract before its handler runs, so that no handler has to
//! remember a check. The guard buffers the unary request body (bounded by the configured message
//! size), reads its one gRPC frame, decodes the message against the RPC's input descriptor, and
//! checks every string field by the text rule the contract annotates it with
//! (`tutela.common.v1.text`: control characters, maximum length, UUIDs, idempotency keys, and a
//! scan of single-line and free text for the register's prohibited identifiers) and every
//! `google.protobuf.Timestamp` against the range that type allows. The handler then receives the
//! original bytes unchanged.
//!
//! Guarantees: bytes that are not one uncompressed, valid encoding of the input message never
//! reach a handler (INVALID_ARGUMENT `MALFORMED_REQUEST`, or UNIMPLEMENTED
//! `COMPRESSION_UNSUPPORTED` for a compressed frame, which is refused rather than decompressed);
//! a field that breaks its rule is named by its path (`profile.given_name`, `services[2]`),
//! never by its value.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value};
use tonic::body::Body;
use tutela_proto::common::TextKind;

use crate::error::{Error, Result, Violation};
use crate::register::ProhibitedIdentifiers;
use crate::validate::is_idempotency_key;

/// The earliest second a `google.protobuf.Timestamp` may hold: 0001-01-01T00:00:00Z.
pub const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
/// The latest second a `google.protobuf.Timestamp` may hold: 9999-12-31T23:59:59Z.
pub const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

/// The largest request message the guard buffers when no other limit is configured (tonic's own
/// default for decoding).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The most characters of a string field of a type outside the contract (the `paths` of a
/// `google.protobuf.FieldMask`), which has no text rule of its own.
pub const FOREIGN_TEXT_MAX: usize = 256;

/// The kind and maximum length a string field is checked by: its text rule; for a type outside
/// the contract, a code of at most [`FOREIGN_TEXT_MAX`] characters. A contract field without a
/// rule (which the contract's test rules out) is refused whenever it is not empty, rather than
/// left unchecked.
pub fn text_rule(field: &FieldDescriptor) -> (TextKind, usize) {
    match tutela_proto::field_text_rule(field) {
        Some(rule) => (
            TextKind::try_from(rule.kind).unwrap_or(TextKind::SingleLine),
            usize::try_from(rule.max_length).unwrap_or(usize::MAX),
        ),
        None if field.parent_message().package_name().starts_with("tutela.") => {
            (TextKind::SingleLine, 0)
        }
        None => (TextKind::Code, FOREIGN_TEXT_MAX),
    }
}

/// What to check of one field.
#[derive(Debug, Clone)]
enum Check {
    Text {
        kind: TextKind,
        max: usize,
    },
    Timestamp,
    /// A message field, checked by the plan at this index.
    Message(usize),
}

#[derive(Debug, Clone)]
struct FieldCheck {
    field: FieldDescriptor,
    check: Check,
}

/// The checks of one message type: only its fields that have something to check.
#[derive(Debug, Default)]
struct MessagePlan {
    fields: Vec<FieldCheck>,
}

/// The checks of every message type the contract's requests use, computed once at start-up.
#[derive(Debug, Default)]
pub struct Plans {
    messages: Vec<MessagePlan>,
    index: HashMap<String, usize>,
}

impl Plans {
    /// The plan of `message` (and of everything nested in it), built on first use.
    fn plan(&mut self, message: &MessageDescriptor) -> usize {
        if let Some(i) = self.index.get(message.full_name()) {
            return *i;
        }
        // Reserved before the fields are walked, so that a message that contains itself ends the
        // walk instead of recursing forever.
        let i = self.messages.len();
        self.messages.push(MessagePlan::default());
        self.index.insert(message.full_name().to_owned(), i);
        let mut fields = Vec::new();
        for field in message.fields() {
            // Map fields have no text rule of their own; the contract defines none.
            if field.is_map() {
                continue;
            }
            let check = match field.kind() {
                Kind::String => {
                    let (kind, max) = text_rule(&field);
                    Check::Text { kind, max }
                }
                Kind::Message(inner) if inner.full_name() == "google.protobuf.Timestamp" => {
                    Check::Timestamp
                }
                Kind::Message(inner) => Check::Message(self.plan(&inner)),
                _ => continue,
            };
            fields.push(FieldCheck { field, check });
        }
        self.messages[i].fields = fields;
        i
    }
}

/// Builds the request plans of many RPCs over one shared set of message plans.
#[derive(Debug, Default)]
pub struct PlanBuilder {
    plans: Plans,
    roots: Vec<(MessageDescriptor, usize)>,
}

impl PlanBuilder {
    /// A builder with no plans yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the input message of an RPC.
    pub fn add(&mut self, input: &MessageDescriptor) {
        let root = self.plans.plan(input);
        self.roots.push((input.clone(), root));
    }

    /// The plans, one per call of [`PlanBuilder::add`], in order.
    pub fn finish(self) -> Vec<RequestPlan> {
        let plans = Arc::new(self.plans);
        self.roots
            .into_iter()
            .map(|(input, root)| RequestPlan {
                plans: plans.clone(),
                root,
                input,
            })
            .collect()
    }
}

/// How to check the request of one RPC; cheap to clone.
#[derive(Debug, Clone)]
pub struct RequestPlan {
    plans: Arc<Plans>,
    root: usize,
    input: MessageDescriptor,
}

impl RequestPlan {
    /// The plan of `input` alone (tests, tools).
    pub fn for_message(input: &MessageDescriptor) -> Self {
        let mut builder = PlanBuilder::new();
        builder.add(input);
        builder.finish().remove(0)
    }

    /// The RPC's input message.
    pub fn input(&self) -> &MessageDescriptor {
        &self.input
    }

    /// Decodes one encoded message and checks it; `Ok` with the message when it passes.
    pub fn check_encoded(
        &self,
        encoded: &[u8],
        prohibited: &ProhibitedIdentifiers,
    ) -> Result<DynamicMessage> {
        let message = DynamicMessage::decode(self.input.clone(), encoded)
            .map_err(|_| Error::MalformedRequest("not a valid encoding of the request message"))?;
        self.check(&message, prohibited)?;
        Ok(message)
    }

    /// Checks a decoded message: INVALID_ARGUMENT with every field that breaks its rule, or, when
    /// only prohibited identifiers were found, PROHIBITED_IDENTIFIER with every field holding one.
    pub fn check(
        &self,
        message: &DynamicMessage,
        prohibited: &ProhibitedIdentifiers,
    ) -> Result<()> {
        let mut found = Found::default();
        self.walk(self.root, message, "", prohibited, &mut found);
        if !found.invalid.is_empty() {
            Err(Error::InvalidArgument(found.invalid))
        } else if !found.prohibited.is_empty() {
            Err(Error::ProhibitedIdentifier(found.prohibited))
        } else {
            Ok(())
        }
    }

    fn walk(
        &self,
        plan: usize,
        message: &DynamicMessage,
        prefix: &str,
        prohibited: &ProhibitedIdentifiers,
        found: &mut Found,
    ) {
        let Some(plan) = self.plans.messages.get(plan) else {
            return;
        };
        for FieldCheck { field, check } in &plan.fields {
            if !message.has_field(field) {
                continue;
            }
            let path = if prefix.is_empty() {
                field.name().to_owned()
            } else {
                format!("{prefix}.{}", field.name())
            };
            match message.get_field(field).as_ref() {
                Value::List(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.value(check, item, format!("{path}[{i}]"), prohibited, found);
                    }
                }
                value => self.value(check, value, path, prohibited, found),
            }
        }
    }

    fn value(
        &self,
        check: &Check,
        value: &Value,
        path: String,
        prohibited: &ProhibitedIdentifiers,
        found: &mut Found,
    ) {
        match (check, value) {
            (Check::Text { kind, max }, Value::String(text)) => {
                if let Some(problem) = text_problem(*kind, *max, text) {
                    found.invalid.push(Violation::new(path, problem));
                } else if matches!(kind, TextKind::SingleLine | TextKind::MultiLine)
                    && let Some(rule) = prohibited.first_in(text)
                {
                    found.prohibited.push(Violation::new(
                        path,
                        format!(
                            "looks like {}, which is never collected; remove it",
                            rule.description
                        ),
                    ));
                }
            }
            (Check::Timestamp, Value::Message(at)) if !timestamp_in_range(at) => {
                found.invalid.push(Violation::new(
                    path,
                    "a time from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z, \
                     nanos from 0 to 999999999",
                ));
            }
            (Check::Message(plan), Value::Message(inner)) => {
                self.walk(*plan, inner, &path, prohibited, found);
            }
            _ => {}
        }
    }
}

#[derive(Default)]
struct Found {
    invalid: Vec<Violation>,
    prohibited: Vec<Violation>,
}

/// What is wrong with `text` under its rule, in words that never repeat the value.
fn text_problem(kind: TextKind, max: usize, text: &str) -> Option<String> {
    if text.is_empty() {
        return None;
    }
    let allowed_control = |c: char| kind == TextKind::MultiLine && matches!(c, '\n' | '\r' | '\t');
    if text.chars().any(|c| c.is_control() && !allowed_control(c)) {
        return Some(if kind == TextKind::MultiLine {
            "contains a control character (only line breaks and tabs are allowed)".into()
        } else {
            "contains a control character".into()
        });
    }
    match kind {
        TextKind::Uuid => {
            let id = text.trim();
            let ok = id.is_empty() || (id.len() == 36 && uuid::Uuid::try_parse(id).is_ok());
            return (!ok).then(|| "must be a UUID (36 characters, hyphenated)".into());
        }
        TextKind::IdempotencyKey => {
            return (!is_idempotency_key(text))
                .then(|| "8 to 128 characters of letters, digits, '_' and '-'".into());
        }
        _ => {}
    }
    // Bytes bound characters from above, so most texts are never counted.
    (text.len() > max && text.chars().count() > max).then(|| format!("at most {max} characters"))
}

fn timestamp_in_range(at: &DynamicMessage) -> bool {
    let seconds = at
        .get_field_by_name("seconds")
        .and_then(|v| v.as_i64())
        .unwrap_or(0);
    let nanos = at
        .get_field_by_name("nanos")
        .and_then(|v| v.as_i32())
        .unwrap_or(0);
    (MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&seconds)
        && (0..1_000_000_000).contains(&nanos)
}

/// The one message of a unary gRPC request body: a 5-byte frame header (compression flag, length)
/// followed by exactly that many bytes, and nothing after.
pub fn unary_message(body: &[u8]) -> Result<&[u8]> {
    let Some((header, rest)) = body.split_first_chunk::<5>() else {
        return Err(Error::MalformedRequest(
            "the body holds no complete gRPC message",
        ));
    };
    match header[0] {
        0 => {}
        1 => return Err(Error::CompressionUnsupported),
        _ => return Err(Error::MalformedRequest("not a gRPC message frame")),
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    match rest.len().cmp(&len) {
        std::cmp::Ordering::Less => {
            Err(Error::MalformedRequest("the request message is truncated"))
        }
        std::cmp::Ordering::Greater => Err(Error::MalformedRequest(
            "a unary call carries exactly one request message",
        )),
        std::cmp::Ordering::Equal => Ok(rest),
    }
}

/// Reads the whole request body (at most `max_message_bytes` of message), checks its message by
/// `plan`, and hands back a request with the same bytes for the handler.
pub async fn checked(
    request: http::Request<Body>,
    plan: &RequestPlan,
    prohibited: &ProhibitedIdentifiers,
    max_message_bytes: usize,
) -> Result<http::Request<Body>> {
    let (parts, body) = request.into_parts();
    let limit = max_message_bytes.saturating_add(5);
    let bytes: Bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<LengthLimitError>() => {
            return Err(Error::MessageTooLarge(max_message_bytes));
        }
        Err(_) => {
            return Err(Error::MalformedRequest(
                "the request body could not be read",
            ));
        }
    };
    plan.check_encoded(unary_message(&bytes)?, prohibited)?;
    Ok(http::Request::from_parts(
        parts,
        Body::new(Full::new(bytes)),
    ))
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::register::Register;

    fn plan(name: &str) -> RequestPlan {
        let pool = tutela_proto::descriptor_pool().unwrap();
        RequestPlan::for_message(&pool.get_message_by_name(name).unwrap())
    }

    /// The built-in identifiers only: what the tests below check never holds one.
    fn built_in() -> ProhibitedIdentifiers {
        Register::default_register().unwrap().prohibited_identifiers
    }

    fn fields(err: &Error) -> Vec<&str> {
        match err {
            Error::InvalidArgument(v) | Error::ProhibitedIdentifier(v) => {
                v.iter().map(|v| v.field.as_str()).collect()
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_prohibited_identifier_is_found_in_nested_text_and_named_by_path() {
        let register = Register::default_register().unwrap();
        let request = tutela_proto::consent::RecordConsentRequest {
            evidence: Some(tutela_proto::consent::ConsentEvidence {
                evidence_reference: "ssn 123456789".into(),
                guardian: Some(tutela_proto::consent::Guardian {
                    name: "Ada 123-45-6789".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = plan("tutela.consent.v1.RecordConsentRequest")
            .check_encoded(&request.encode_to_vec(), &register.prohibited_identifiers)
            .unwrap_err();
        assert_eq!(err.reason(), "PROHIBITED_IDENTIFIER");
        assert_eq!(
            fields(&err),
            ["evidence.evidence_reference", "evidence.guardian.name"]
        );
        assert!(!format!("{err:?}").contains("123"));
    }

    #[test]
    fn codes_and_ids_are_not_scanned_but_free_text_is() {
        let register = Register::default_register().unwrap();
        let request = tutela_proto::consent::RecordConsentRequest {
            evidence: Some(tutela_proto::consent::ConsentEvidence {
                wording_version: "123-45-6789".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        plan("tutela.consent.v1.RecordConsentRequest")
            .check_encoded(&request.encode_to_vec(), &register.prohibited_identifiers)
            .unwrap();
    }

    #[test]
    fn control_characters_lengths_uuids_and_keys_are_named_by_path() {
        let request = tutela_proto::enrolment::UpdateLearnerRequest {
            learner: Some(tutela_proto::common::SubjectRef {
                subject_id: "not-a-uuid".into(),
            }),
            profile: Some(tutela_proto::enrolment::LearnerProfile {
                given_name: "Ada\0".into(),
                family_name: "x".repeat(201),
                address: "1 Road\nTown".into(),
                support_needed: "extra\0time".into(),
                disabilities: vec!["ok".into(), "tab\there".into()],
                ..Default::default()
            }),
            idempotency_key: Some(tutela_proto::common::IdempotencyKey {
                key: "k".repeat(129),
            }),
            ..Default::default()
        };
        let err = plan("tutela.enrolment.v1.UpdateLearnerRequest")
            .check_encoded(&request.encode_to_vec(), &built_in())
            .unwrap_err();
        assert_eq!(err.reason(), "INVALID_ARGUMENT");
        assert_eq!(
            fields(&err),
            [
                "learner.subject_id",
                "profile.given_name",
                "profile.family_name",
                "profile.disabilities[1]",
                "profile.support_needed",
                "idempotency_key.key",
            ]
        );
        let fine = tutela_proto::enrolment::UpdateLearnerRequest {
            learner: Some(tutela_proto::common::SubjectRef {
                subject_id: " 0192F1C2-7A3B-7C4D-8E5F-A0B1C2D3E4F5 ".into(),
            }),
            profile: Some(tutela_proto::enrolment::LearnerProfile {
                family_name: "é".repeat(200),
                ..Default::default()
            }),
            idempotency_key: Some(tutela_proto::common::IdempotencyKey {
                key: "k".repeat(128),
            }),
            ..Default::default()
        };
        plan("tutela.enrolment.v1.UpdateLearnerRequest")
            .check_encoded(&fine.encode_to_vec(), &built_in())
            .unwrap();
    }

    #[test]
    fn timestamps_outside_the_range_of_the_type_are_refused() {
        let at = |seconds, nanos| tutela_proto::consent::RecordConsentRequest {
            occurred_at: Some(prost_types::Timestamp { seconds, nanos }),
            ..Default::default()
        };
        let p = plan("tutela.consent.v1.RecordConsentRequest");
        for (seconds, nanos) in [
            (MIN_TIMESTAMP_SECONDS - 1, 0),
            (MAX_TIMESTAMP_SECONDS + 1, 0),
            (0, -1),
            (0, 1_000_000_000),
        ] {
            let err = p
                .check_encoded(&at(seconds, nanos).encode_to_vec(), &built_in())
                .unwrap_err();
            assert_eq!(fields(&err), ["occurred_at"], "{seconds} {nanos}");
        }
        for (seconds, nanos) in [
            (MIN_TIMESTAMP_SECONDS, 0),
            (MAX_TIMESTAMP_SECONDS, 999_999_999),
        ] {
            p.check_encoded(&at(seconds, nanos).encode_to_vec(), &built_in())
                .unwrap();
        }
    }

    #[test]
    fn frames_must_hold_exactly_one_uncompressed_message() {
        assert_eq!(unary_message(&[0, 0, 0, 0, 2, 8, 1]).unwrap(), [8, 1]);
        assert_eq!(unary_message(&[0, 0, 0, 0, 0]).unwrap(), [0u8; 0]);
        for (body, reason) in [
            (&[][..], "MALFORMED_REQUEST"),
            (&[0, 0, 0][..], "MALFORMED_REQUEST"),
            (&[0, 0, 0, 0, 3, 8, 1][..], "MALFORMED_REQUEST"),
            (&[0, 0, 0, 0, 1, 8, 1][..], "MALFORMED_REQUEST"),
            (&[7, 0, 0, 0, 0][..], "MALFORMED_REQUEST"),
            (&[1, 0, 0, 0, 2, 8, 1][..], "COMPRESSION_UNSUPPORTED"),
        ] {
            assert_eq!(
                unary_message(body).unwrap_err().reason(),
                reason,
                "{body:?}"
            );
        }
    }

    #[test]
    fn bytes_that_are_no_valid_message_are_malformed() {
        let p = plan("tutela.enrolment.v1.GetLearnerRequest");
        // Field 1 declared as a 10-byte message, with 2 bytes there; then a wrong wire type; then
        // invalid UTF-8 in a string.
        for bytes in [
            &[0x0a, 10, 1, 2][..],
            &[0x0d, 1, 2, 3, 4][..],
            &[0x0a, 3, 0x0a, 1, 0xff][..],
        ] {
            assert_eq!(
                p.check_encoded(bytes, &built_in()).unwrap_err().reason(),
                "MALFORMED_REQUEST",
                "{bytes:?}"
            );
        }
    }
}
