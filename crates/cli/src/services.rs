//! Which services a process hosts. The names are the ones `--service` and `server.services`
//! accept; a service is available once its crate is built into this binary and listed in
//! [`all`], the one list that `serve`, `migrate`, `retention sweep` and `serve --check` iterate.

use anyhow::bail;
use tutela_host::HostedService;

/// Every service of the suite, in the order they are hosted.
pub const KNOWN: [&str; 4] = ["enrolment", "sharing", "survey", "subscription"];

/// The services built into this binary. Adding a service is its crate and one line here.
pub fn all() -> [&'static dyn HostedService; 3] {
    [
        tutela_enrolment::HOSTED,
        tutela_sharing::HOSTED,
        tutela_subscription::HOSTED,
    ]
}

/// The names of the services built into this binary.
pub fn available() -> Vec<&'static str> {
    all().iter().map(|s| s.name()).collect()
}

/// The services to host: `requested`, or every available one when empty. An unknown name, or a
/// known service that this build does not contain yet, is an error naming it.
pub fn resolve(requested: &[String]) -> anyhow::Result<Vec<&'static str>> {
    let available = available();
    if requested.is_empty() {
        return Ok(available);
    }
    let mut hosted = Vec::new();
    for name in requested {
        let Some(known) = KNOWN.iter().find(|k| *k == name) else {
            bail!(
                "unknown service {name:?}; the services are {}",
                KNOWN.join(", ")
            );
        };
        if !available.contains(known) {
            bail!("service {name:?} is not available in this build yet");
        }
        if !hosted.contains(known) {
            hosted.push(*known);
        }
    }
    Ok(hosted)
}

/// The services to host (see [`resolve`]), in that order.
pub fn hosted(requested: &[String]) -> anyhow::Result<Vec<&'static dyn HostedService>> {
    let all = all();
    Ok(resolve(requested)?
        .into_iter()
        .filter_map(|name| all.iter().copied().find(|s| s.name() == name))
        .collect())
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
        assert_eq!(
            resolve(&[]).unwrap(),
            ["enrolment", "sharing", "subscription"]
        );
        assert_eq!(resolve(&[]).unwrap(), available());
    }

    #[test]
    fn every_service_built_in_is_a_known_one_and_survey_is_not_yet() {
        for name in available() {
            assert!(KNOWN.contains(&name), "{name}");
        }
        let err = resolve(&["survey".to_owned()]).unwrap_err().to_string();
        assert!(err.contains("not available in this build yet"), "{err}");
        for name in ["subscription", "sharing"] {
            let hosted = hosted(&[name.to_owned()]).unwrap();
            assert_eq!(hosted.len(), 1);
            assert_eq!(hosted[0].name(), name);
        }
    }
}
