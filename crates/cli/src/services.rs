//! Which services a process hosts. The names are the ones `--service` and `server.services`
//! accept; a service is available once its crate is built into this binary.

use anyhow::bail;

/// Every service of the suite, in the order they are hosted.
pub const KNOWN: [&str; 4] = ["enrolment", "sharing", "survey", "subscription"];

/// The services built into this binary.
pub const AVAILABLE: [&str; 2] = ["enrolment", "subscription"];

/// The services to host: `requested`, or every available one when empty. An unknown name, or a
/// known service that this build does not contain yet, is an error naming it.
pub fn resolve(requested: &[String]) -> anyhow::Result<Vec<&'static str>> {
    if requested.is_empty() {
        return Ok(AVAILABLE.to_vec());
    }
    let mut hosted = Vec::new();
    for name in requested {
        let Some(known) = KNOWN.iter().find(|k| *k == name) else {
            bail!(
                "unknown service {name:?}; the services are {}",
                KNOWN.join(", ")
            );
        };
        if !AVAILABLE.contains(known) {
            bail!("service {name:?} is not available in this build yet");
        }
        if !hosted.contains(known) {
            hosted.push(*known);
        }
    }
    Ok(hosted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_service_is_refused_with_the_list_of_services() {
        let err = resolve(&["enrollment".to_owned()]).unwrap_err().to_string();
        assert!(
            err.contains("enrolment, sharing, survey, subscription"),
            "{err}"
        );
    }

    #[test]
    fn no_request_means_every_available_service() {
        assert_eq!(resolve(&[]).unwrap(), AVAILABLE.to_vec());
    }
}
