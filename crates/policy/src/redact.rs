//! Responses redacted to what the caller may read, generically from the proto annotations: every
//! field whose data category is not readable is cleared on the wire, in every message of every
//! response stream, so no handler has redaction code of its own to forget.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::{Body, Frame};
use prost::Message as _;
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, ReflectMessage, Value};
use tutela_proto::common::DataCategory;

use crate::categories::CategorySet;

/// Clears, recursively, every field of `message` whose category is not in `readable`.
/// A field without an annotation (which the contract's tests rule out) is cleared too.
pub fn redact(message: &mut DynamicMessage, readable: CategorySet) {
    let descriptor = message.descriptor();
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
}
