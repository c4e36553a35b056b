//! Responses redacted to what the caller may read, generically from the proto annotations: every
//! field whose data category is not readable is cleared on the wire, in every message of every
//! response stream, so no handler has redaction code of its own to forget.
//!
//! Well-known types (`google.protobuf.Timestamp`, `Duration`, the wrappers, `Struct`, ...) are
//! values, not containers of categorised fields: a field of such a type is kept whole when its own
//! category is readable and cleared whole when it is not, never taken apart (their inner fields
//! carry no category annotation, so taking them apart would zero every timestamp). `Any` is the
//! exception: what it packs cannot be seen, so it is cleared whole.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::{Body, Frame};
use prost::Message as _;
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, ReflectMessage, Value};
use tutela_proto::common::DataCategory;

use crate::categories::CategorySet;

/// The package of the well-known types.
const WELL_KNOWN: &str = "google.protobuf";

/// Clears, recursively, every field of `message` whose category is not in `readable`.
/// A field without an annotation (which the contract's tests rule out) is cleared too.
pub fn redact(message: &mut DynamicMessage, readable: CategorySet) {
    let descriptor = message.descriptor();
    if descriptor.package_name() == WELL_KNOWN {
        // Reached only through a field whose category is readable: the value stays whole.
        if descriptor.full_name() == "google.protobuf.Any" {
            message.clear();
        }
        return;
    }
    for field in descriptor.fields() {
        let category = tutela_proto::field_category(&field);
        let allowed = match category {
            Some(DataCategory::None) => true,
            Some(c) => readable.contains(c),
            None => false,
        };
        if !allowed {
            message.clear_field(&field);
            continue;
        }
        if !matches!(field.kind(), Kind::Message(_)) || !message.has_field(&field) {
            continue;
        }
        match message.get_field_mut(&field) {
            Value::Message(inner) => redact(inner, readable),
            Value::List(items) => {
                for item in items {
                    if let Value::Message(inner) = item {
                        redact(inner, readable);
                    }
                }
            }
            Value::Map(entries) => {
                for value in entries.values_mut() {
                    if let Value::Message(inner) = value {
                        redact(inner, readable);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Redacts one encoded message.
pub fn redact_encoded(
    descriptor: &MessageDescriptor,
    encoded: &[u8],
    readable: CategorySet,
) -> Result<Vec<u8>, prost::DecodeError> {
    let mut message = DynamicMessage::decode(descriptor.clone(), encoded)?;
    redact(&mut message, readable);
    Ok(message.encode_to_vec())
}

/// A response body whose gRPC messages are redacted as they pass.
pub struct RedactBody {
    inner: tonic::body::Body,
    buffer: BytesMut,
    descriptor: MessageDescriptor,
    readable: CategorySet,
}

impl RedactBody {
    /// Wraps `inner`, whose messages are `descriptor`s.
    pub fn new(
        inner: tonic::body::Body,
        descriptor: MessageDescriptor,
        readable: CategorySet,
    ) -> Self {
        Self {
            inner,
            buffer: BytesMut::new(),
            descriptor,
            readable,
        }
    }

    /// The next complete gRPC frame in the buffer, redacted and re-framed.
    fn next_frame(&mut self) -> Option<Result<Bytes, tonic::Status>> {
        if self.buffer.len() < 5 {
            return None;
        }
        let compressed = self.buffer[0];
        let len = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if self.buffer.len() < 5 + len {
            return None;
        }
        if compressed != 0 {
            // tutela never compresses responses; a compressed one cannot be checked, so it fails.
            return Some(Err(tonic::Status::internal(
                "cannot redact a compressed response",
            )));
        }
        self.buffer.advance(5);
        let payload = self.buffer.split_to(len);
        Some(
            match redact_encoded(&self.descriptor, &payload, self.readable) {
                Ok(redacted) => {
                    let mut out = BytesMut::with_capacity(5 + redacted.len());
                    out.put_u8(0);
                    out.put_u32(redacted.len() as u32);
                    out.put_slice(&redacted);
                    Ok(out.freeze())
                }
                Err(_) => Err(tonic::Status::internal("response could not be redacted")),
            },
        )
    }
}

impl Body for RedactBody {
    type Data = Bytes;
    type Error = tonic::Status;

    // Without these, an empty body (a trailers-only error response) would look open-ended, and
    // the server would send the headers without END_STREAM and then an empty DATA frame that
    // ends the stream without trailers, which grpcio clients report as UNKNOWN "Stream removed".
    fn is_end_stream(&self) -> bool {
        self.buffer.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        if self.is_end_stream() {
            http_body::SizeHint::with_exact(0)
        } else {
            http_body::SizeHint::default()
        }
    }

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        loop {
            if let Some(frame) = self.next_frame() {
                return Poll::Ready(Some(frame.map(Frame::data)));
            }
            match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buffer.extend_from_slice(&data),
                    Err(trailers) => {
                        if !self.buffer.is_empty() {
                            return Poll::Ready(Some(Err(tonic::Status::internal(
                                "truncated response message",
                            ))));
                        }
                        return Poll::Ready(Some(Ok(trailers)));
                    }
                },
                Some(Err(status)) => return Poll::Ready(Some(Err(status))),
                None => {
                    if !self.buffer.is_empty() {
                        return Poll::Ready(Some(Err(tonic::Status::internal(
                            "truncated response message",
                        ))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_body_stays_visibly_empty_so_error_responses_stay_trailers_only() {
        let status = tonic::Status::not_found("x").into_http::<tonic::body::Body>();
        let descriptor = descriptor("tutela.privacy.v1.ExportSubjectResponse");
        let body = RedactBody::new(status.into_body(), descriptor, CategorySet::EMPTY);
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
    }
    use tutela_proto::privacy::{ExportSubjectResponse, ServiceExport};

    fn descriptor(name: &str) -> MessageDescriptor {
        tutela_proto::descriptor_pool()
            .unwrap()
            .get_message_by_name(name)
            .unwrap()
    }

    #[test]
    fn fields_of_unreadable_categories_are_cleared_at_every_depth() {
        let response = ExportSubjectResponse {
            exports: vec![ServiceExport {
                service: "enrolment".into(),
                media_type: "application/json".into(),
                document: b"{\"name\":\"Ada\"}".to_vec(),
                categories: vec![DataCategory::Identity as i32],
            }],
        };
        let d = descriptor("tutela.privacy.v1.ExportSubjectResponse");
        let encoded = response.encode_to_vec();

        let none = redact_encoded(&d, &encoded, CategorySet::EMPTY).unwrap();
        let redacted = ExportSubjectResponse::decode(none.as_slice()).unwrap();
        assert_eq!(redacted.exports[0].service, "enrolment");
        assert!(redacted.exports[0].document.is_empty());

        let identity: CategorySet = [DataCategory::Identity].into_iter().collect();
        let kept = redact_encoded(&d, &encoded, identity).unwrap();
        assert_eq!(
            ExportSubjectResponse::decode(kept.as_slice()).unwrap(),
            response
        );
    }

    /// A field path from a response type down to a field of a well-known type.
    type Path = Vec<prost_reflect::FieldDescriptor>;

    /// Every path from `message` to a field of a well-known type, at any depth (each message type
    /// entered once per path, so recursive types end).
    fn well_known_paths(message: &MessageDescriptor, path: &mut Path, out: &mut Vec<Path>) {
        for field in message.fields() {
            let Kind::Message(inner) = field.kind() else {
                continue;
            };
            path.push(field.clone());
            if inner.package_name() == WELL_KNOWN {
                out.push(path.clone());
            } else if !path[..path.len() - 1]
                .iter()
                .any(|f| matches!(f.kind(), Kind::Message(m) if m == inner))
            {
                well_known_paths(&inner, path, out);
            }
            path.pop();
        }
    }

    /// A value of the well-known type `d` that is not its default: every scalar field set.
    fn well_known_value(d: &MessageDescriptor) -> DynamicMessage {
        let mut m = DynamicMessage::new(d.clone());
        for f in d.fields() {
            let v = match f.kind() {
                Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(1_764_560_000),
                Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(123_000_000),
                Kind::Uint64 | Kind::Fixed64 => Value::U64(7),
                Kind::Uint32 | Kind::Fixed32 => Value::U32(7),
                Kind::Double => Value::F64(1.5),
                Kind::Float => Value::F32(1.5),
                Kind::Bool => Value::Bool(true),
                Kind::String => Value::String("kept".into()),
                Kind::Bytes => Value::Bytes(Bytes::from_static(b"kept")),
                _ => continue,
            };
            if !f.is_list() {
                m.set_field(&f, v);
            }
        }
        assert_ne!(
            m,
            DynamicMessage::new(d.clone()),
            "the test cannot fill {}: teach well_known_value this type",
            d.full_name()
        );
        m
    }

    /// A `response` with every message along `path` present and a value at its end.
    fn populated(
        response: &MessageDescriptor,
        path: &[prost_reflect::FieldDescriptor],
    ) -> DynamicMessage {
        let mut m = DynamicMessage::new(response.clone());
        let (field, rest) = path.split_first().unwrap();
        let Kind::Message(inner) = field.kind() else {
            unreachable!("paths hold message fields only")
        };
        let value = if rest.is_empty() {
            well_known_value(&inner)
        } else {
            populated(&inner, rest)
        };
        assert!(
            !field.is_map(),
            "{}: teach the test maps",
            field.full_name()
        );
        if field.is_list() {
            m.set_field(field, Value::List(vec![Value::Message(value)]));
        } else {
            m.set_field(field, Value::Message(value));
        }
        m
    }

    /// The value at the end of `path`, if it is there.
    fn at(
        message: &DynamicMessage,
        path: &[prost_reflect::FieldDescriptor],
    ) -> Option<DynamicMessage> {
        let (field, rest) = path.split_first()?;
        if !message.has_field(field) {
            return None;
        }
        let inner = match &*message.get_field(field) {
            Value::Message(m) => m.clone(),
            Value::List(items) => match items.first() {
                Some(Value::Message(m)) => m.clone(),
                _ => return None,
            },
            _ => return None,
        };
        if rest.is_empty() {
            Some(inner)
        } else {
            at(&inner, rest)
        }
    }

    fn category(field: &prost_reflect::FieldDescriptor) -> DataCategory {
        tutela_proto::field_category(field)
            .unwrap_or_else(|| panic!("{} has no category", field.full_name()))
    }

    #[test]
    fn well_known_values_in_every_response_survive_redaction_or_go_whole() {
        let pool = tutela_proto::descriptor_pool().unwrap();
        let mut checked = 0;
        for service in pool.services() {
            for method in service.methods() {
                let response = method.output();
                let mut paths = Vec::new();
                well_known_paths(&response, &mut Vec::new(), &mut paths);
                for path in paths {
                    let name = format!(
                        "{}: {}",
                        method.full_name(),
                        path.iter().map(|f| f.name()).collect::<Vec<_>>().join(".")
                    );
                    let message = populated(&response, &path);
                    let expected = at(&message, &path).unwrap();
                    let on_path: CategorySet = path.iter().map(category).collect();
                    // Withhold a category that is not on the path: the value must come through
                    // whole, with every category the path needs readable.
                    let other = CategorySet::personal()
                        .without(on_path)
                        .iter()
                        .next()
                        .unwrap();
                    let readable = CategorySet::personal().without(CategorySet::of(&[other]));
                    let mut redacted = message.clone();
                    redact(&mut redacted, readable);
                    assert_eq!(at(&redacted, &path).as_ref(), Some(&expected), "{name}");

                    // Withhold the field's own category: the value goes whole.
                    let own = category(path.last().unwrap());
                    if own != DataCategory::None {
                        let mut redacted = message.clone();
                        redact(
                            &mut redacted,
                            CategorySet::personal().without(CategorySet::of(&[own])),
                        );
                        assert_eq!(at(&redacted, &path), None, "{name}");
                    }
                    checked += 1;
                }
            }
        }
        // The contract's responses carry timestamps in dozens of places; finding none would
        // mean the walk is broken, not that every one is safe.
        assert!(checked > 20, "only {checked} well-known fields found");
    }

    #[test]
    fn an_any_is_cleared_whole_since_what_it_packs_cannot_be_seen() {
        // No contract message holds an Any today; the global pool has the well-known types.
        let any = prost_reflect::DescriptorPool::global()
            .get_message_by_name("google.protobuf.Any")
            .unwrap();
        let mut m = well_known_value(&any);
        redact(&mut m, CategorySet::personal());
        assert_eq!(m, DynamicMessage::new(any));
    }
}
