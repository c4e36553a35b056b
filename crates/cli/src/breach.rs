//! `tutela audit accessed --endpoint ...` and `tutela audit who-accessed`: the breach question
//! (X2) asked of every process of a deployment over `tutela.audit.v1.AuditService`, since each
//! process keeps its own audit log with its own pseudonym key. Each process turns the subject
//! asked about into its own pseudonym and answers in subject ids; the answers are merged in time
//! order, reads and changes apart.

use std::path::PathBuf;

use tutela_proto::audit::audit_service_client::AuditServiceClient;
use tutela_proto::audit::{AccessKind, AccessRecord, ListAccessesRequest};
use tutela_proto::common::{DataCategory, PageRequest, SubjectRef};

use crate::remote::{Remote, refused};

/// The purpose of the questions: the duty to assess and notify a breach.
const PURPOSE: &str = "legal_obligation";

/// What is asked: of a principal, about a subject, or both, in a window.
#[derive(Debug, Clone)]
pub struct Question {
    /// Whose accesses.
    pub principal: Option<String>,
    /// To whose data.
    pub subject: Option<String>,
    /// Start of the window.
    pub from: chrono::DateTime<chrono::Utc>,
    /// End of the window.
    pub to: chrono::DateTime<chrono::Utc>,
}

/// One process's record.
#[derive(Debug, Clone)]
pub struct Found {
    /// The process that answered (its endpoint).
    pub process: String,
    /// Its record.
    pub record: AccessRecord,
}

fn ts(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    tutela_policy::validate::timestamp(at)
}

/// Every record of every process at `endpoints` answering `q`, oldest first.
pub async fn ask(
    endpoints: &[String],
    ca_file: Option<PathBuf>,
    token: &str,
    q: &Question,
) -> anyhow::Result<Vec<Found>> {
    let mut found = Vec::new();
    for endpoint in endpoints {
        let remote = Remote {
            endpoint: endpoint.clone(),
            ca_file: ca_file.clone(),
            token: token.to_owned(),
        };
        let mut client = AuditServiceClient::new(remote.channel().await?);
        let mut page_token = String::new();
        loop {
            let page = client
                .list_accesses(
                    remote.authed(
                        PURPOSE,
                        ListAccessesRequest {
                            principal_id: q.principal.clone().unwrap_or_default(),
                            subject: q
                                .subject
                                .clone()
                                .map(|subject_id| SubjectRef { subject_id }),
                            from: Some(ts(q.from)),
                            to: Some(ts(q.to)),
                            page: Some(PageRequest {
                                page_size: 500,
                                page_token: page_token.clone(),
                            }),
                        },
                    )?,
                )
                .await
                .map_err(|s| refused(&format!("ListAccesses at {endpoint}"), &s))?
                .into_inner();
            found.extend(page.records.into_iter().map(|record| Found {
                process: endpoint.clone(),
                record,
            }));
            page_token = page.page.map(|p| p.next_page_token).unwrap_or_default();
            if page_token.is_empty() {
                break;
            }
        }
    }
    found.sort_by_key(|f| f.record.at.map(|t| (t.seconds, t.nanos)));
    Ok(found)
}

fn categories(r: &AccessRecord) -> String {
    r.categories
        .iter()
        .filter_map(|c| DataCategory::try_from(*c).ok())
        .map(|c| c.short_name())
        .collect::<Vec<_>>()
        .join(",")
}

fn at(r: &AccessRecord) -> String {
    r.at.as_ref()
        .and_then(tutela_policy::validate::time_of)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn is_write(r: &AccessRecord) -> bool {
    r.kind == AccessKind::Write as i32
}

/// The records as JSON lines, or as two tables (changes, then reads).
pub fn render(found: &[Found], json: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if json {
        for f in found {
            let r = &f.record;
            let line = serde_json::json!({
                "at": at(r),
                "process": f.process,
                "principal": r.principal_id,
                "principal_kind": r.principal_kind,
                "rpc": r.rpc,
                "purpose": r.purpose,
                "subject": r.subject.as_ref().map(|s| s.subject_id.clone()),
                "subject_pseudonym": r.subject_pseudonym,
                "categories": categories(r),
                "kind": if is_write(r) { "write" } else { "read" },
                "allowed": r.allowed,
            });
            let _ = writeln!(out, "{line}");
        }
        return out;
    }
    for (title, writes) in [("changed", true), ("read", false)] {
        let rows: Vec<&Found> = found
            .iter()
            .filter(|f| is_write(&f.record) == writes)
            .collect();
        let _ = writeln!(out, "{title}: {} record(s)", rows.len());
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "at\tprocess\tprincipal\trpc\tpurpose\tsubject\tcategories\tallowed"
        );
        for f in rows {
            let r = &f.record;
            let _ = writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                at(r),
                f.process,
                r.principal_id,
                r.rpc,
                r.purpose,
                r.subject
                    .as_ref()
                    .map_or(r.subject_pseudonym.as_str(), |s| s.subject_id.as_str()),
                categories(r),
                if r.allowed { "yes" } else { "no" },
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_and_reads_are_listed_apart() {
        let record = |kind: AccessKind, rpc: &str| Found {
            process: "http://enrolment:50051".into(),
            record: AccessRecord {
                principal_id: "tutor-1".into(),
                rpc: rpc.into(),
                purpose: "course_administration".into(),
                subject_pseudonym: "p_1".into(),
                categories: vec![DataCategory::Assessment as i32],
                kind: kind as i32,
                allowed: true,
                ..Default::default()
            },
        };
        let found = [
            record(AccessKind::Read, "x/GetLearner"),
            record(AccessKind::Write, "x/RecordResult"),
        ];
        let table = render(&found, false);
        let changed = table.find("changed: 1 record(s)").unwrap();
        let read = table.find("read: 1 record(s)").unwrap();
        assert!(changed < table.find("x/RecordResult").unwrap());
        assert!(read < table.find("x/GetLearner").unwrap());
        assert!(table.contains("assessment"));
        let json = render(&found, true);
        assert!(json.lines().any(|l| l.contains("\"kind\":\"write\"")));
    }
}
