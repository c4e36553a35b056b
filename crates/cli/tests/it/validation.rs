//! Every request checked from the contract, walked from the descriptors: for every RPC with a
//! request message (guarded ones and those a token in the message authorises) and every string
//! field of its request, nested and repeated ones included, the real server refuses a NUL, a value
//! one over the field's documented maximum and, in single-line and free text, a US social
//! security number, naming exactly that field; it refuses random bytes and truncated messages,
//! out-of-range timestamps and malformed idempotency keys. Requests are built as dynamic messages
//! and sent as raw bytes, so a new RPC or field is covered without editing this test.

use bytes::{Buf, BufMut};
use prost::Message as _;
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, Value};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::service::interceptor::InterceptedService;
use tutela_policy::Register;
use tutela_policy::access::{AccessRules, DecisionKey};
use tutela_policy::methods::{Authorisation, MethodInfo, MethodTable};
use tutela_policy::principal::{Audience, Claims, Principal, PrincipalKind};
use tutela_proto::PURPOSE_NAMES;
use tutela_proto::common::TextKind;
use tutela_testkit::{Credentials, TestSuite, fields, reason};

/// Sends and receives message bytes as they are.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// One RPC of the contract and the credentials that get it past authorisation to validation.
struct Target {
    path: String,
    input: MessageDescriptor,
    token: Option<(String, &'static str)>,
}

/// Every RPC with a request message, each with a role and purpose that the default rules and
/// register allow (found from the rules themselves, so that new RPCs need no entry here).
fn targets(suite: &TestSuite) -> Vec<Target> {
    let pool = tutela_proto::descriptor_pool().unwrap();
    let methods = MethodTable::from_pool(pool);
    let rules = AccessRules::default_rules().unwrap();
    let register = Register::default_register().unwrap();
    let roles = [
        "dpo",
        "registrar",
        "tutor",
        "exam_officer",
        "marketing",
        "service",
        "partner",
    ];
    let mut targets: Vec<Target> = methods
        .iter()
        .filter(|m| m.input.is_some())
        .map(|m: &MethodInfo| {
            let input = m.input.as_ref().unwrap().input().clone();
            let token = (m.authorisation == Authorisation::Guarded).then(|| {
                let found = roles.iter().find_map(|role| {
                    let principal = Principal::from_claims(Claims {
                        iss: "tutela".into(),
                        aud: Audience::One("tutela".into()),
                        sub: "staff-1".into(),
                        exp: 0,
                        iat: 0,
                        tenant: "acme".into(),
                        kind: PrincipalKind::for_role(role),
                        roles: vec![(*role).to_owned()],
                        partner: (*role == "partner").then(|| "partner-1".to_owned()),
                        wards: Vec::new(),
                    })
                    .unwrap();
                    PURPOSE_NAMES.iter().find_map(|(purpose, name)| {
                        let key = DecisionKey::new(&principal, &m.rpc, &m.area, *purpose);
                        (register.rule(*purpose).is_some() && rules.decide(&key).allowed)
                            .then_some((*role, *name))
                    })
                });
                let (role, purpose) = found.unwrap_or_else(|| panic!("no role may call {}", m.rpc));
                // A partner's token names its partner, as the principal above does.
                let token = suite.token_for(tutela_policy::principal::TokenRequest {
                    tenant: "acme".into(),
                    subject: "staff-1".into(),
                    kind: None,
                    roles: vec![role.to_owned()],
                    partner: (role == "partner").then(|| "partner-1".to_owned()),
                    wards: Vec::new(),
                    ttl: chrono::Duration::hours(1),
                });
                (token, purpose)
            });
            Target {
                path: format!("/{}", m.rpc),
                input,
                token,
            }
        })
        .collect();
    targets.sort_by(|a, b| a.path.cmp(&b.path));
    targets
}

/// Sends `bytes` as the request message of `target` and reads the whole answer.
async fn send(suite: &TestSuite, target: &Target, bytes: Vec<u8>) -> Result<(), tonic::Status> {
    let credentials = match &target.token {
        Some((token, purpose)) => Credentials::new(token, purpose),
        None => Credentials::none(),
    };
    let mut grpc = tonic::client::Grpc::new(InterceptedService::new(suite.channel(), credentials));
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::try_from(target.path.as_str()).unwrap();
    let mut stream = grpc
        .server_streaming(tonic::Request::new(bytes), path, RawCodec)
        .await?
        .into_inner();
    while stream.message().await?.is_some() {}
    Ok(())
}

/// A string field reachable from a request message: its path of fields from the root.
struct Leaf {
    fields: Vec<prost_reflect::FieldDescriptor>,
    kind: TextKind,
    max: usize,
}

impl Leaf {
    /// How a violation names it: `a.b[0].c` (a repeated field at index 0).
    fn path(&self) -> String {
        self.fields
            .iter()
            .map(|f| {
                if f.is_list() {
                    format!("{}[0]", f.name())
                } else {
                    f.name().to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// Every string field (`Kind::String`) and timestamp (`Kind::Message(Timestamp)`) under
/// `message`, depth first.
fn leaves(
    message: &MessageDescriptor,
    stack: &mut Vec<prost_reflect::FieldDescriptor>,
    strings: &mut Vec<Leaf>,
    timestamps: &mut Vec<Vec<prost_reflect::FieldDescriptor>>,
) {
    for field in message.fields() {
        match field.kind() {
            Kind::String => {
                let (kind, max) = tutela_policy::request::text_rule(&field);
                let mut fields = stack.clone();
                fields.push(field.clone());
                strings.push(Leaf { fields, kind, max });
            }
            Kind::Message(inner) if inner.full_name() == "google.protobuf.Timestamp" => {
                let mut fields = stack.clone();
                fields.push(field.clone());
                timestamps.push(fields);
            }
            Kind::Message(inner) => {
                if stack.iter().any(|f| f == &field) {
                    continue;
                }
                stack.push(field.clone());
                leaves(&inner, stack, strings, timestamps);
                stack.pop();
            }
            _ => {}
        }
    }
}

/// The string fields and the timestamps of `input`.
fn walk(input: &MessageDescriptor) -> (Vec<Leaf>, Vec<Vec<prost_reflect::FieldDescriptor>>) {
    let (mut strings, mut timestamps) = (Vec::new(), Vec::new());
    leaves(input, &mut Vec::new(), &mut strings, &mut timestamps);
    (strings, timestamps)
}

/// A request of `input` with only the field at `fields` set to `value` (lists hold one item).
fn request_with(
    input: &MessageDescriptor,
    fields: &[prost_reflect::FieldDescriptor],
    value: Value,
) -> Vec<u8> {
    fn set(message: &mut DynamicMessage, fields: &[prost_reflect::FieldDescriptor], value: Value) {
        let (field, rest) = fields.split_first().unwrap();
        let value = if rest.is_empty() {
            value
        } else {
            let Kind::Message(inner) = field.kind() else {
                panic!("{} is no message", field.full_name())
            };
            let mut nested = DynamicMessage::new(inner);
            set(&mut nested, rest, value);
            Value::Message(nested)
        };
        let value = if field.is_list() {
            Value::List(vec![value])
        } else {
            value
        };
        message.set_field(field, value);
    }
    let mut message = DynamicMessage::new(input.clone());
    set(&mut message, fields, value);
    message.encode_to_vec()
}

/// Asserts that the call was refused before its handler, naming exactly `field`.
fn assert_refused(
    what: &str,
    target: &Target,
    field: &str,
    answer: Result<(), tonic::Status>,
    expected_reason: &str,
) {
    let status = answer.expect_err(&format!("{what} in {} {field} was accepted", target.path));
    assert_eq!(
        (status.code(), reason(&status), fields(&status)),
        (
            Code::InvalidArgument,
            expected_reason.to_owned(),
            vec![field.to_owned()]
        ),
        "{what} in {} {field}: {status:?}",
        target.path
    );
}

#[tokio::test]
async fn every_string_field_of_every_request_is_checked_by_its_text_rule() {
    let suite = TestSuite::start().await.unwrap();
    let mut checked = 0;
    for target in targets(&suite) {
        let (strings, _) = walk(&target.input);
        for leaf in &strings {
            let path = leaf.path();
            let send_text = |text: String| {
                let bytes = request_with(&target.input, &leaf.fields, Value::String(text));
                send(&suite, &target, bytes)
            };
            let answer = send_text("a\0b".into()).await;
            assert_refused("a NUL", &target, &path, answer, "INVALID_ARGUMENT");

            let too_long = "a".repeat(leaf.max + 1);
            let answer = send_text(too_long).await;
            assert_refused(
                "one over the max",
                &target,
                &path,
                answer,
                "INVALID_ARGUMENT",
            );

            match leaf.kind {
                TextKind::SingleLine | TextKind::MultiLine => {
                    let answer = send_text("ssn 123-45-6789".into()).await;
                    if let Err(status) = &answer {
                        assert!(!status.message().contains("6789"), "{status:?}");
                    }
                    assert_refused("an SSN", &target, &path, answer, "PROHIBITED_IDENTIFIER");
                    if leaf.kind == TextKind::SingleLine {
                        let answer = send_text("one\ntwo".into()).await;
                        assert_refused("a line break", &target, &path, answer, "INVALID_ARGUMENT");
                    }
                }
                TextKind::IdempotencyKey => {
                    for bad in ["short-7", "spaces are not allowed"] {
                        let answer = send_text(bad.into()).await;
                        assert_refused("a bad key", &target, &path, answer, "INVALID_ARGUMENT");
                    }
                }
                TextKind::Uuid => {
                    let answer = send_text("0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a7g".into()).await;
                    assert_refused("a non-UUID", &target, &path, answer, "INVALID_ARGUMENT");
                }
                _ => {}
            }
            // The longest value allowed gets past validation; whatever the handler makes of it
            // (a code of the wrong format, a missing required field), it is never INTERNAL,
            // on either database.
            if let Err(status) = send_text("a".repeat(leaf.max)).await {
                assert_ne!(
                    status.code(),
                    Code::Internal,
                    "{} {path}: {status:?}",
                    target.path
                );
            }
            checked += 1;
        }
    }
    // Every string field of the contract's requests, not a handful.
    assert!(checked > 60, "walked only {checked} fields");
}

#[tokio::test]
async fn a_request_that_is_no_valid_message_is_an_invalid_argument_never_internal() {
    let suite = TestSuite::start().await.unwrap();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed.to_le_bytes()[0]
            })
            .collect()
    };
    let mut malformed = 0;
    for target in targets(&suite) {
        // A valid message with its last length-delimited field cut short.
        let (strings, _) = walk(&target.input);
        let mut truncated = match strings.first() {
            Some(leaf) => request_with(&target.input, &leaf.fields, Value::String("abcdef".into())),
            // A message without fields: an unknown length-delimited field.
            None => vec![0x0a, 6, b'a', b'b', b'c', b'd', b'e', b'f'],
        };
        truncated.truncate(truncated.len() - 3);
        let status = send(&suite, &target, truncated).await.unwrap_err();
        assert_eq!(
            (status.code(), reason(&status).as_str()),
            (Code::InvalidArgument, "MALFORMED_REQUEST"),
            "truncated {}: {status:?}",
            target.path
        );
        for _ in 0..8 {
            let bytes = random(24);
            let decodes = DynamicMessage::decode(target.input.clone(), bytes.as_slice()).is_ok();
            match send(&suite, &target, bytes).await {
                Err(status) if !decodes => {
                    assert_eq!(
                        (status.code(), reason(&status).as_str()),
                        (Code::InvalidArgument, "MALFORMED_REQUEST"),
                        "random bytes to {}: {status:?}",
                        target.path
                    );
                    malformed += 1;
                }
                Ok(()) if !decodes => panic!("random bytes reached {}", target.path),
                // Bytes that happen to decode (unknown fields) are checked like any request.
                Err(status) => assert_ne!(status.code(), Code::Internal, "{}", target.path),
                Ok(()) => {}
            }
        }
    }
    assert!(
        malformed > 20,
        "only {malformed} random requests were malformed"
    );
}

#[tokio::test]
async fn timestamps_outside_0001_to_9999_are_refused_naming_the_field() {
    let suite = TestSuite::start().await.unwrap();
    let mut checked = 0;
    for target in targets(&suite) {
        let (_, timestamps) = walk(&target.input);
        for fields in timestamps {
            let leaf = Leaf {
                fields: fields.clone(),
                kind: TextKind::Unspecified,
                max: 0,
            };
            for (seconds, nanos) in [
                (tutela_policy::request::MAX_TIMESTAMP_SECONDS + 1, 0),
                (tutela_policy::request::MIN_TIMESTAMP_SECONDS - 1, 0),
                (0, -1),
            ] {
                let at = prost_types::Timestamp { seconds, nanos };
                let at = DynamicMessage::decode(
                    fields.last().unwrap().kind().as_message().unwrap().clone(),
                    at.encode_to_vec().as_slice(),
                )
                .unwrap();
                let bytes = request_with(&target.input, &fields, Value::Message(at));
                let answer = send(&suite, &target, bytes).await;
                assert_refused(
                    "a timestamp",
                    &target,
                    &leaf.path(),
                    answer,
                    "INVALID_ARGUMENT",
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 3, "walked only {checked} timestamps");
}

/// The guard refuses a request before the handler, so refusing one is never a write.
#[tokio::test]
async fn an_erasure_with_an_oversized_idempotency_key_is_refused_before_anything_is_erased() {
    let suite = TestSuite::start().await.unwrap();
    let token = suite.token("acme", "dpo-1", &["dpo"]);
    let err = suite
        .subject_data(Credentials::new(&token, "subject_rights"))
        .erase_subject(tutela_proto::privacy::EraseSubjectRequest {
            subject: Some(tutela_proto::common::SubjectRef {
                subject_id: "0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a77".into(),
            }),
            services: Vec::new(),
            reason: "art17 request".into(),
            idempotency_key: Some(tutela_proto::common::IdempotencyKey {
                key: "k".repeat(1 << 20),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fields(&err), ["idempotency_key.key"]);
}

#[test]
fn every_rpc_of_the_contract_takes_a_unary_request_and_so_has_a_plan() {
    let methods = MethodTable::from_pool(tutela_proto::descriptor_pool().unwrap());
    let without: Vec<&str> = methods
        .iter()
        .filter(|m| m.input.is_none())
        .map(|m| m.rpc.as_str())
        .collect();
    assert!(
        without.is_empty(),
        "RPCs whose requests are not validated: {without:?}"
    );
}

/// `PageRequest.page_size` above 500 is served as 500, as the contract says: a full page of 500
/// and a token for the rest.
#[tokio::test]
async fn a_page_size_above_the_cap_is_served_as_the_cap() {
    use tutela_proto::common::PageRequest;
    use tutela_proto::enrolment::{Course, CreateCourseRequest, ListCoursesRequest};
    // 501 writes and a 500-row page in a debug build beside the rest of the suite's tests: on a
    // loaded CI machine that outlasted the default 30 s call timeout, which is not under test.
    let suite = TestSuite::start_with(|c| c.server.request_timeout_secs = 300)
        .await
        .unwrap();
    let token = suite.token("acme", "registrar-1", &["registrar"]);
    let courses = suite.courses(Credentials::new(&token, "course_administration"));
    let cap = usize::try_from(tutela_policy::validate::MAX_PAGE_SIZE).unwrap();
    // Few at a time: the point is the page cap, and a loaded CI machine must not time creates out.
    for chunk in (0..=cap).collect::<Vec<_>>().chunks(8) {
        let creates = chunk.iter().map(|i| {
            let mut client = courses.clone();
            async move {
                client
                    .create_course(CreateCourseRequest {
                        course: Some(Course {
                            code: format!("C-{i}"),
                            title: "Course".into(),
                            start_date: "2027-01-01".into(),
                            end_date: "2027-06-30".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await
            }
        });
        for created in futures::future::join_all(creates).await {
            created.unwrap();
        }
    }
    let page = courses
        .clone()
        .list_courses(ListCoursesRequest {
            page: Some(PageRequest {
                page_size: u32::MAX,
                page_token: String::new(),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.courses.len(), cap);
    assert!(!page.page.unwrap().next_page_token.is_empty());
}
