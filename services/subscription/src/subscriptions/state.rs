//! A subscription's stored state and the stored names of channels and delivery-event kinds:
//! the vocabulary every other module reads rows with, kept apart so none of them owns it.

use tutela_proto::subscription::{Channel, EventKind as DeliveryKind, SubscriptionState};

/// A subscription's state as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for confirmation.
    Pending,
    /// Opted in.
    Confirmed,
    /// Opted out.
    Unsubscribed,
    /// Hard bounce or complaint.
    Suppressed,
}

impl State {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Unsubscribed => "unsubscribed",
            Self::Suppressed => "suppressed",
        }
    }

    pub(super) fn of(name: &str) -> Self {
        match name {
            "confirmed" => Self::Confirmed,
            "unsubscribed" => Self::Unsubscribed,
            "suppressed" => Self::Suppressed,
            _ => Self::Pending,
        }
    }

    pub(super) fn proto(self) -> SubscriptionState {
        match self {
            Self::Pending => SubscriptionState::Pending,
            Self::Confirmed => SubscriptionState::Confirmed,
            Self::Unsubscribed => SubscriptionState::Unsubscribed,
            Self::Suppressed => SubscriptionState::Suppressed,
        }
    }
}

/// A channel's stored name.
pub fn channel_name(c: Channel) -> &'static str {
    match c {
        Channel::Email => "email",
        Channel::Sms => "sms",
        Channel::Phone => "phone",
        Channel::Post => "post",
        Channel::Unspecified => "unspecified",
    }
}

pub(super) fn channel_of(name: &str) -> Channel {
    match name {
        "email" => Channel::Email,
        "sms" => Channel::Sms,
        "phone" => Channel::Phone,
        "post" => Channel::Post,
        _ => Channel::Unspecified,
    }
}

pub(super) fn kind_name(k: DeliveryKind) -> &'static str {
    match k {
        DeliveryKind::Delivered => "delivered",
        DeliveryKind::Opened => "opened",
        DeliveryKind::Clicked => "clicked",
        DeliveryKind::Forwarded => "forwarded",
        DeliveryKind::SoftBounce => "soft_bounce",
        DeliveryKind::HardBounce => "hard_bounce",
        DeliveryKind::Complaint => "complaint",
        DeliveryKind::Unspecified => "unspecified",
    }
}
