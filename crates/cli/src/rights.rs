//! `tutela rights status` and `tutela rights export`: the rights requests of the running suite
//! as an operator follows them, through `tutela.rights.v1.RightsRequestService` like any client
//! (the guard authorises and audits every call; nothing here reads the database). `status`
//! lists requests with their tasks and flags the overdue and stuck ones; `export` downloads a
//! subject's access bundle, optionally recording the request and the identity check first and
//! waiting for the services with a progress bar.

use std::path::Path;
use std::time::Duration;

use tonic::transport::Channel;
use tutela_proto::common::{PageRequest, SubjectRef};
use tutela_proto::privacy::VerificationMethod;
use tutela_proto::rights::rights_request_service_client::RightsRequestServiceClient;
use tutela_proto::rights::{
    DownloadAccessBundleRequest, GetRightsRequestRequest, ListRightsRequestsRequest, Requester,
    RightsRequest, RightsRequestKind, RightsRequestState, SubmitRightsRequestRequest, TaskState,
    VerifyRequesterIdentityRequest,
};

use crate::remote::{Remote, refused, save};

/// Every call's purpose.
const PURPOSE: &str = "subject_rights";

/// Most requests `status` lists.
const MAX_LISTED: usize = 10_000;

/// Which requests `status` lists.
#[derive(Debug, Default, Clone, Copy)]
pub struct Filter {
    /// Only unfinished requests past their deadline.
    pub overdue: bool,
    /// Only stuck requests.
    pub stuck: bool,
}

async fn client(remote: &Remote) -> anyhow::Result<RightsRequestServiceClient<Channel>> {
    Ok(RightsRequestServiceClient::new(remote.channel().await?))
}

fn state_name(state: i32) -> &'static str {
    match RightsRequestState::try_from(state) {
        Ok(RightsRequestState::Received) => "received",
        Ok(RightsRequestState::IdentityVerified) => "awaiting approval",
        Ok(RightsRequestState::InProgress) => "in progress",
        Ok(RightsRequestState::Completed) => "completed",
        Ok(RightsRequestState::PartiallyCompleted) => "partially completed",
        Ok(RightsRequestState::Refused) => "refused",
        _ => "unknown",
    }
}

fn kind_name(kind: i32) -> &'static str {
    RightsRequestKind::try_from(kind).map_or("unknown", RightsRequestKind::short_name)
}

fn date(ts: Option<&prost_types::Timestamp>) -> String {
    ts.and_then(tutela_policy::validate::time_of)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

fn done_tasks(r: &RightsRequest) -> usize {
    r.tasks
        .iter()
        .filter(|t| t.state == TaskState::Done as i32)
        .count()
}

/// The requests `filter` selects, newest first, as a table (or JSON lines with `json`).
pub async fn status(remote: &Remote, filter: Filter, json: bool) -> anyhow::Result<String> {
    let mut client = client(remote).await?;
    let mut requests = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_rights_requests(remote.authed(
                PURPOSE,
                ListRightsRequestsRequest {
                    overdue_only: filter.overdue,
                    stuck_only: filter.stuck,
                    page: Some(PageRequest {
                        page_size: 500,
                        page_token: page_token.clone(),
                    }),
                    ..Default::default()
                },
            )?)
            .await
            .map_err(|s| refused("ListRightsRequests", &s))?
            .into_inner();
        requests.extend(page.requests);
        page_token = page.page.map(|p| p.next_page_token).unwrap_or_default();
        if page_token.is_empty() || requests.len() >= MAX_LISTED {
            break;
        }
    }
    Ok(if json {
        render_json(&requests)
    } else {
        render_table(&requests)
    })
}

fn render_json(requests: &[RightsRequest]) -> String {
    let mut out = String::new();
    for r in requests {
        let tasks: Vec<serde_json::Value> = r
            .tasks
            .iter()
            .map(|t| {
                serde_json::json!({
                    "service": t.service,
                    "state": match TaskState::try_from(t.state) {
                        Ok(TaskState::Pending) => "pending",
                        Ok(TaskState::Done) => "done",
                        Ok(TaskState::Failed) => "failed",
                        _ => "unknown",
                    },
                    "attempts": t.attempts,
                    "last_error": t.last_error,
                })
            })
            .collect();
        let line = serde_json::json!({
            "request_id": r.request_id,
            "kind": kind_name(r.kind),
            "state": state_name(r.state),
            "received": date(r.received_at.as_ref()),
            "deadline": date(r.deadline.as_ref()),
            "overdue": r.overdue,
            "stuck": r.stuck,
            "tasks": tasks,
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

fn render_table(requests: &[RightsRequest]) -> String {
    use std::fmt::Write as _;
    if requests.is_empty() {
        return "no rights requests\n".into();
    }
    let mut out = format!(
        "{:<36}  {:<11}  {:<19}  {:<10}  {:<10}  {:>5}  flags\n",
        "request", "kind", "state", "received", "deadline", "tasks"
    );
    for r in requests {
        let mut flags = Vec::new();
        if r.overdue {
            flags.push("OVERDUE");
        }
        if r.stuck {
            flags.push("STUCK");
        }
        let _ = writeln!(
            out,
            "{:<36}  {:<11}  {:<19}  {:<10}  {:<10}  {:>5}  {}",
            r.request_id,
            kind_name(r.kind),
            state_name(r.state),
            date(r.received_at.as_ref()),
            date(r.deadline.as_ref()),
            format!("{}/{}", done_tasks(r), r.tasks.len()),
            flags.join(" ")
        );
        // What holds a request up, where something does.
        for t in r.tasks.iter().filter(|t| !t.last_error.is_empty()) {
            let _ = writeln!(
                out,
                "    {}: {} attempt(s), last error: {}",
                t.service, t.attempts, t.last_error
            );
        }
    }
    out
}

/// How `export` records a new request when asked to (`--submit`).
#[derive(Debug)]
pub struct Submit {
    /// How the requester's identity was checked.
    pub method: VerificationMethod,
    /// A reference to the note of the check.
    pub evidence_reference: String,
}

/// What `export` wrote.
#[derive(Debug)]
pub struct Exported {
    /// The request the bundle is of.
    pub request_id: String,
    /// The archive's size.
    pub bytes: u64,
    /// Its SHA-256.
    pub sha256: String,
    /// Whether some services' parts are missing (a partially completed request).
    pub partial: bool,
}

/// Downloads the access bundle of `subject`'s newest access or portability request to `out`,
/// waiting up to `wait` for it to finish; with `submit`, records a new access request and the
/// identity check first.
pub async fn export(
    remote: &Remote,
    subject: &str,
    out: &Path,
    submit: Option<Submit>,
    wait: Duration,
) -> anyhow::Result<Exported> {
    if out.exists() {
        anyhow::bail!("{} exists; choose another --out", out.display());
    }
    let mut client = client(remote).await?;
    let subject_ref = || {
        Some(SubjectRef {
            subject_id: subject.to_owned(),
        })
    };
    let request_id = match submit {
        Some(s) => {
            let made = client
                .submit_rights_request(remote.authed(
                    PURPOSE,
                    SubmitRightsRequestRequest {
                        subject: subject_ref(),
                        kind: RightsRequestKind::Access as i32,
                        requester: Requester::Subject as i32,
                        reference: "tutela rights export".into(),
                        ..Default::default()
                    },
                )?)
                .await
                .map_err(|st| refused("SubmitRightsRequest", &st))?
                .into_inner()
                .request
                .ok_or_else(|| anyhow::anyhow!("SubmitRightsRequest answered no request"))?;
            client
                .verify_requester_identity(remote.authed(
                    PURPOSE,
                    VerifyRequesterIdentityRequest {
                        request_id: made.request_id.clone(),
                        method: s.method as i32,
                        evidence_reference: s.evidence_reference,
                    },
                )?)
                .await
                .map_err(|st| refused("VerifyRequesterIdentity", &st))?;
            made.request_id
        }
        None => {
            let listed = client
                .list_rights_requests(remote.authed(
                    PURPOSE,
                    ListRightsRequestsRequest {
                        subject: subject_ref(),
                        ..Default::default()
                    },
                )?)
                .await
                .map_err(|s| refused("ListRightsRequests", &s))?
                .into_inner();
            let access = [
                RightsRequestKind::Access as i32,
                RightsRequestKind::Portability as i32,
            ];
            listed
                .requests
                .into_iter()
                .find(|r| access.contains(&r.kind) && r.state != RightsRequestState::Refused as i32)
                .map(|r| r.request_id)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no access request for this subject; record one with --submit \
                         (and --method, --evidence-reference of the identity check)"
                    )
                })?
        }
    };
    let finished = wait_for(remote, &mut client, &request_id, wait).await?;
    download(remote, &mut client, &finished, out).await
}

/// Waits for the request to finish, with a bar of its services done.
async fn wait_for(
    remote: &Remote,
    client: &mut RightsRequestServiceClient<Channel>,
    request_id: &str,
    wait: Duration,
) -> anyhow::Result<RightsRequest> {
    let deadline = tokio::time::Instant::now() + wait;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>20} [{bar:40}] {pos}/{len} services")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let finished = loop {
        let r = client
            .get_rights_request(remote.authed(
                PURPOSE,
                GetRightsRequestRequest {
                    request_id: request_id.to_owned(),
                },
            )?)
            .await
            .map_err(|s| refused("GetRightsRequest", &s))?
            .into_inner()
            .request
            .ok_or_else(|| anyhow::anyhow!("GetRightsRequest answered no request"))?;
        bar.set_length(r.tasks.len() as u64);
        bar.set_position(done_tasks(&r) as u64);
        bar.set_message(state_name(r.state));
        let state = RightsRequestState::try_from(r.state).unwrap_or_default();
        match state {
            RightsRequestState::Completed | RightsRequestState::PartiallyCompleted => break r,
            RightsRequestState::Refused => {
                bar.finish_and_clear();
                anyhow::bail!("request {request_id} was refused: {}", r.refusal_reason);
            }
            RightsRequestState::IdentityVerified => {
                bar.finish_and_clear();
                anyhow::bail!("request {request_id} waits for a dpo's approval");
            }
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            bar.finish_and_clear();
            anyhow::bail!(
                "request {request_id} is still {} after {} s; `tutela rights status` shows what holds it up",
                state_name(r.state),
                wait.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    bar.finish_and_clear();
    Ok(finished)
}

/// Writes the bundle of `r` to `out` (through a `.partial` file), checked against its hash.
async fn download(
    remote: &Remote,
    client: &mut RightsRequestServiceClient<Channel>,
    r: &RightsRequest,
    out: &std::path::Path,
) -> anyhow::Result<Exported> {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} downloading {bytes}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let stream = client
        .download_access_bundle(remote.authed(
            PURPOSE,
            DownloadAccessBundleRequest {
                request_id: r.request_id.clone(),
            },
        )?)
        .await
        .map_err(|s| refused("DownloadAccessBundle", &s))?
        .into_inner();
    // The archive's hash comes with the first chunk.
    let expected = std::cell::RefCell::new(String::new());
    let saved = save(
        stream,
        out,
        "DownloadAccessBundle",
        |chunk| &chunk.data,
        |chunk| {
            if expected.borrow().is_empty() {
                expected.borrow_mut().clone_from(&chunk.archive_sha256);
            }
            bar.inc(chunk.data.len() as u64);
        },
        || expected.borrow().clone(),
    )
    .await;
    bar.finish_and_clear();
    let saved = saved?;
    Ok(Exported {
        request_id: r.request_id.clone(),
        bytes: saved.bytes,
        sha256: saved.sha256,
        partial: r.state == RightsRequestState::PartiallyCompleted as i32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tutela_proto::rights::RightsTask;

    #[test]
    fn the_table_flags_overdue_and_stuck_requests_and_shows_what_holds_them_up() {
        let r = RightsRequest {
            request_id: "0190f0e0-0000-7000-8000-000000000001".into(),
            kind: RightsRequestKind::Erasure as i32,
            state: RightsRequestState::InProgress as i32,
            overdue: true,
            stuck: true,
            tasks: vec![
                RightsTask {
                    service: "enrolment".into(),
                    state: TaskState::Done as i32,
                    attempts: 1,
                    ..Default::default()
                },
                RightsTask {
                    service: "survey".into(),
                    state: TaskState::Pending as i32,
                    attempts: 4,
                    last_error: "Unavailable: connection refused".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let table = render_table(std::slice::from_ref(&r));
        assert!(table.contains("erasure"), "{table}");
        assert!(table.contains("in progress"), "{table}");
        assert!(table.contains("1/2"), "{table}");
        assert!(table.contains("OVERDUE STUCK"), "{table}");
        assert!(
            table.contains("survey: 4 attempt(s), last error: Unavailable"),
            "{table}"
        );
        let json: serde_json::Value = serde_json::from_str(render_json(&[r]).trim()).unwrap();
        assert_eq!(json["tasks"][1]["state"], "pending");
        assert_eq!(render_table(&[]), "no rights requests\n");
    }
}
