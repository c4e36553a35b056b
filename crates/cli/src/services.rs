//! Which services a process hosts. The names are the ones `--service` and `server.services`
//! accept; a service is available once its crate is built into this binary and listed in
//! [`all`], the one list that `serve`, `migrate`, `retention sweep` and `serve --check` iterate.

use anyhow::bail;
use tutela_host::HostedService;

/// Every service of the suite, in the order they are hosted.
pub const KNOWN: [&str; 5] = ["enrolment", "sharing", "survey", "subscription", "rights"];

/// The services built into this binary. Adding a service is its crate and one line here.
pub fn all() -> [&'static dyn HostedService; 5] {
    [
        tutela_enrolment::HOSTED,
        tutela_sharing::HOSTED,
        tutela_survey::HOSTED,
        tutela_subscription::HOSTED,
        tutela_rights::HOSTED,
    ]
}

/// The names of the services built into this binary.
pub fn available() -> Vec<&'static str> {
    all().iter().map(|s| s.name()).collect()
}

/// The services to host: `requested`, or every available one when empty. An unknown name is an
/// error naming the services.
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

/// The recipients in force of every hosted service (see [`HostedService::recipients`]), read from
/// the existing database: a database that does not exist yet is an error, never created.
pub async fn recipients_in_force(
    config: &crate::config::Config,
    register: &tutela_policy::Register,
) -> anyhow::Result<Vec<tutela_host::RecipientEntry>> {
    let db = tutela_store::connect(&config.existing_database_url()?, 1).await?;
    let now = chrono::Utc::now();
    let mut rows = Vec::new();
    for service in hosted(&config.server.services)? {
        rows.extend(
            service
                .recipients(&db, register, now)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", service.name()))?,
        );
    }
    Ok(rows)
}

/// The recipients in force as a section of the Markdown record of processing activities.
pub fn recipients_markdown(rows: &[tutela_host::RecipientEntry]) -> String {
    use std::fmt::Write;
    let mut md = String::from("\n## Recipients in force (from data-sharing agreements)\n\n");
    if rows.is_empty() {
        md.push_str("No data-sharing agreement is in force.\n");
        return md;
    }
    md.push_str(
        "| tenant | purpose | recipient | kind | role | country | legal basis | fields | valid | recipient keeps | transfer safeguard |\n",
    );
    md.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for r in rows {
        let valid = match r.valid_to {
            Some(to) => format!("{} to {}", r.valid_from.date_naive(), to.date_naive()),
            None => format!("from {}", r.valid_from.date_naive()),
        };
        let transfer = r.transfer.as_ref().map_or_else(
            || "not needed (EEA, UK or adequacy)".to_owned(),
            |t| format!("{} ({})", t.safeguard, t.reference),
        );
        let fields: Vec<String> = r.fields.iter().map(|f| format!("`{f}`")).collect();
        let _ = writeln!(
            md,
            "| {} | `{}` | {} (agreement v{}) | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.tenant,
            r.purpose,
            cell(&r.recipient),
            r.version,
            r.kind,
            r.role,
            r.country,
            r.legal_basis,
            fields.join(", "),
            valid,
            r.recipient_retention,
            cell(&transfer),
        );
    }
    md
}

/// Text for a Markdown table cell: a `|` or a line break in a name would split the row.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_service_is_refused_with_the_list_of_services() {
        let err = resolve(&["enrollment".to_owned()]).unwrap_err().to_string();
        assert!(
            err.contains("enrolment, sharing, survey, subscription, rights"),
            "{err}"
        );
    }

    #[test]
    fn no_request_means_every_service() {
        assert_eq!(
            resolve(&[]).unwrap(),
            ["enrolment", "sharing", "survey", "subscription", "rights"]
        );
        assert_eq!(resolve(&[]).unwrap(), available());
    }

    #[test]
    fn every_known_service_is_built_in_and_hosted_alone_on_request() {
        assert_eq!(available(), KNOWN);
        for name in KNOWN {
            let hosted = hosted(&[name.to_owned()]).unwrap();
            assert_eq!(hosted.len(), 1);
            assert_eq!(hosted[0].name(), name);
        }
    }
}
