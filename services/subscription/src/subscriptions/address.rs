//! Address rules: how an address is normalised per channel (for the duplicate and suppression
//! indexes) and the sealed field an address is bound to. Separate because the audience, the
//! bench and the handlers all apply the same rules.

use tutela_proto::subscription::Channel;

/// The sealed field of a subscription's address: bound to the row.
pub fn address_field(subscription_id: &str) -> String {
    format!("subscriptions.address/{subscription_id}")
}

/// The normalised form of an address for `channel`, or what is wrong with it (never repeating
/// the value).
pub fn normalise_address(
    channel: Channel,
    address: &str,
) -> std::result::Result<String, &'static str> {
    let address = address.trim();
    if address.is_empty() {
        return Err("required");
    }
    match channel {
        Channel::Email => {
            let email = address.to_lowercase();
            if email.len() <= 254 && tutela_policy::validate::is_email(&email) {
                Ok(email)
            } else {
                Err("not an email address")
            }
        }
        Channel::Sms | Channel::Phone => {
            let mut number = String::with_capacity(address.len());
            for (i, ch) in address.chars().enumerate() {
                match ch {
                    '0'..='9' => number.push(ch),
                    '+' if i == 0 => number.push(ch),
                    ' ' | '-' | '(' | ')' | '.' => {}
                    _ => return Err("a phone number: digits, spaces and + - ( ) . only"),
                }
            }
            let digits = number.trim_start_matches('+').len();
            if (5..=20).contains(&digits) {
                Ok(number)
            } else {
                Err("a phone number of 5 to 20 digits")
            }
        }
        Channel::Post => {
            let post = address.split_whitespace().collect::<Vec<_>>().join(" ");
            if post.chars().count() > 500 {
                Err("at most 500 characters")
            } else {
                Ok(post)
            }
        }
        Channel::Unspecified => Err("the channel is not set"),
    }
}
