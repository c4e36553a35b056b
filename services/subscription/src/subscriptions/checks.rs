//! Request field checks shared by several RPCs (channels, topic ids, opt-in evidence), so each
//! handler module parses these fields the same way.

use tutela_policy::validate::{Checks, Field};
use tutela_proto::subscription::{Channel, OptInEvidence};

pub(super) fn valid_topic_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Checks an opt-in's evidence at `field`.
pub(super) fn check_opt_in(
    c: &mut Checks,
    e: Option<&OptInEvidence>,
    field: &str,
) -> Field<OptInEvidence> {
    let Some(e) = e else {
        return Err(c.flag(
            field,
            "required: where and with which wording the person acted",
        ));
    };
    let before = c.len();
    c.required_text(&e.source, &format!("{field}.source"), 128);
    c.required_text(&e.wording_version, &format!("{field}.wording_version"), 64);
    let sha = e.wording_sha256.trim();
    c.wording_sha256(sha, &format!("{field}.wording_sha256"));
    c.clean_since(before, || OptInEvidence {
        source: e.source.trim().to_owned(),
        wording_version: e.wording_version.trim().to_owned(),
        wording_sha256: sha.to_owned(),
    })
}

/// A channel field that must be set.
pub(super) fn check_channel(c: &mut Checks, value: i32, field: &str) -> Field<Channel> {
    match Channel::try_from(value) {
        Ok(Channel::Unspecified) | Err(_) => Err(c.flag(
            field,
            "required: a channel of tutela.subscription.v1.Channel",
        )),
        Ok(ch) => Ok(ch),
    }
}
