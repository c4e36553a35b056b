//! Benchmark of the sharing service's disclosure path over real gRPC on loopback, guard and audit
//! on (SQLite; PostgreSQL when `TEST_DATABASE_URL` is set):
//!
//! 1. disclose 100,000 learners to one partner (10 `Disclose` calls of 10,000 ids, each reading
//!    the learners through enrolment's `StreamLearners`, sealing each record and writing delivery,
//!    records and log entries in one transaction) and pull them all back in one `PullDeliveries`
//!    stream of batches of 1000: target <= 10 s end to end;
//! 2. the pull alone: target >= 50,000 records/s;
//! 3. a file export of the same learners: 10 `Disclose` calls as candidate-list CSV files (a
//!    delivery holds at most 10,000) and each file downloaded: target <= 5 s;
//!
//! each beside a bare batched insert of as many rows of the same shape (a text id, a 64-hex
//! pseudonym, ~300 bytes of blob, a 64-hex hash) into a scratch table of the same database, in
//! multi-row INSERTs of 1000 in one transaction, and a bare keyset read of them back.
//!
//! Creating the learners (CreateLearner, 16 in flight; then ANALYZE on PostgreSQL, as autovacuum
//! would) is setup and not measured. After the measured part it also times enrolment's
//! StreamLearners of one call's ids alone (the part of a Disclose call that is enrolment's).
//! `BENCH_LEARNERS=N` changes the 100,000; `BENCH_PERF_CTL=fifo` enables and disables
//! `perf record --control fifo:... -D -1` around the measured part only.
//!
//! Run: `cargo bench -p tutela-sharing --bench sharing`. Figures are printed, never asserted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use tutela_policy::PrincipalKind;
use tutela_policy::principal::TokenRequest;
use tutela_proto::common::LegalBasis;
use tutela_proto::enrolment::StreamLearnersRequest;
use tutela_proto::sharing::{
    AgreementPurpose, CreateAgreementRequest, CreatePartnerRequest, DeliveryChannel,
    DiscloseRequest, DownloadExportRequest, FileLayout, Partner, PartnerKind, PartnerRole,
    PullDeliveriesRequest, PurposeTerms, TransferSafeguard,
};
use tutela_testkit::{Credentials, TestSuite};

/// CreateLearner calls in flight during setup.
const IN_FLIGHT: usize = 16;

/// Learner ids per Disclose call (the service's maximum).
const PER_CALL: usize = 10_000;

/// Records per pull batch (the service's maximum).
const PULL_BATCH: u32 = 1_000;

/// Rows per multi-row INSERT of the bare baseline.
const BARE_CHUNK: usize = 1_000;

/// The targets.
const END_TO_END_TARGET_SECS: f64 = 10.0;
const PULL_TARGET_RATE: f64 = 50_000.0;
const FILE_TARGET_SECS: f64 = 5.0;

fn staff(suite: &TestSuite, role: &str, purpose: &str) -> Credentials {
    Credentials::new(&suite.token("acme", "staff-1", &[role]), purpose)
}

/// Creates `n` learners of `acme`, `IN_FLIGHT` at a time; their ids.
async fn create_learners(suite: &TestSuite, n: usize) -> Vec<String> {
    suite
        .create_learners(
            "acme",
            (0..n as u64).map(tutela_testkit::sample_profile),
            IN_FLIGHT,
        )
        .await
        .unwrap()
}

/// A partner of `acme` in GB with an exam-booking agreement in force (id, names, email, photo id
/// reference, as the tests use); the partner's id.
async fn partner_in_force(suite: &TestSuite) -> String {
    let dpo = Credentials::new(&suite.token("acme", "dpo-1", &["dpo"]), "legal_obligation");
    let partner_id = suite
        .partners(dpo)
        .create_partner(CreatePartnerRequest {
            partner: Some(Partner {
                legal_name: "Example Exam Board Ltd".into(),
                kind: PartnerKind::ExamBody as i32,
                role: PartnerRole::Controller as i32,
                country: "GB".into(),
                contact_email: "exams.officer@examboard.example.org".into(),
                ..Default::default()
            }),
            idempotency_key: None,
        })
        .await
        .unwrap()
        .into_inner()
        .partner
        .unwrap()
        .partner_id;
    let yesterday = chrono::Utc::now() - chrono::Duration::days(1);
    suite
        .agreement_in_force(
            "acme",
            CreateAgreementRequest {
                partner_id: partner_id.clone(),
                valid_from: Some(prost_types::Timestamp {
                    seconds: yesterday.timestamp(),
                    nanos: 0,
                }),
                valid_to: None,
                purposes: vec![PurposeTerms {
                    purpose: AgreementPurpose::ExamBooking as i32,
                    legal_basis: LegalBasis::Contract as i32,
                    fields: [
                        "learner_id",
                        "profile.given_name",
                        "profile.family_name",
                        "profile.email",
                        "profile.photo_id_reference",
                    ]
                    .iter()
                    .map(|f| (*f).to_owned())
                    .collect(),
                }],
                partner_retention: "P1Y".into(),
                access_period: "P12M".into(),
                transfer_safeguard: TransferSafeguard::Unspecified as i32,
                safeguard_reference: String::new(),
                idempotency_key: None,
            },
        )
        .await
        .unwrap();
    partner_id
}

/// The partner's own token, for exam booking.
fn as_partner(suite: &TestSuite, partner_id: &str) -> Credentials {
    let token = suite.token_for(TokenRequest {
        tenant: "acme".into(),
        subject: "partner-portal".into(),
        kind: Some(PrincipalKind::Partner),
        roles: vec!["partner".into()],
        partner: Some(partner_id.into()),
        wards: Vec::new(),
        ttl: chrono::Duration::hours(1),
    });
    Credentials::new(&token, "exam_booking")
}

/// Reads `ids` through enrolment's StreamLearners as the sharing service does (a service token of
/// `acme`, for exam booking, the agreement's profile fields, consent for `recipient`); how long
/// it took. The part of a Disclose call that is enrolment's.
async fn enrolment_read(suite: &TestSuite, ids: &[String], recipient: &str) -> Duration {
    let token = suite.token_for(TokenRequest {
        tenant: "acme".into(),
        subject: "tutela-service".into(),
        kind: Some(PrincipalKind::Service),
        roles: vec!["service".into()],
        partner: None,
        wards: Vec::new(),
        ttl: chrono::Duration::minutes(5),
    });
    let start = Instant::now();
    let mut stream = suite
        .learners(Credentials::new(&token, "exam_booking"))
        .stream_learners(StreamLearnersRequest {
            learner_ids: ids.to_vec(),
            read_mask: Some(prost_types::FieldMask {
                paths: ["email", "family_name", "given_name", "photo_id_reference"]
                    .iter()
                    .map(|p| (*p).to_owned())
                    .collect(),
            }),
            resume_token: String::new(),
            batch_size: 1000,
            recipient: recipient.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut read = 0;
    while let Some(batch) = stream.message().await.unwrap() {
        assert!(batch.withheld.is_empty());
        read += batch.learners.len();
    }
    assert_eq!(read, ids.len());
    start.elapsed()
}

/// With `BENCH_PERF_CTL=/path/to/fifo` (perf record's `--control fifo:...` with `-D -1`), turns
/// the profiler on (`enable`) or off (`disable`) around the measured part.
fn perf(command: &str) {
    if let Ok(path) = std::env::var("BENCH_PERF_CTL") {
        use std::io::Write;
        let mut fifo = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        writeln!(fifo, "{command}").unwrap();
    }
}

/// Lower-case hex of `n` bytes derived from `seed` (stand-ins for pseudonyms, hashes, blobs).
fn hex_of(seed: usize, bytes: usize) -> String {
    let mut out = String::with_capacity(bytes * 2);
    let mut x = (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(&format!("{:02x}", x as u8));
    }
    out
}

/// A blob literal of the backend's SQL.
fn blob(backend: DbBackend, hex: &str) -> String {
    match backend {
        DbBackend::Postgres => format!("'\\x{hex}'::bytea"),
        _ => format!("X'{hex}'"),
    }
}

/// The bare baseline: `n` rows of a delivered record's shape into a scratch table, in multi-row
/// INSERTs of `BARE_CHUNK` in one transaction; the time it took, and the time to read them back
/// by keyset in pages of `PULL_BATCH`.
async fn bare(db: &DatabaseConnection, n: usize) -> (Duration, Duration) {
    let backend = db.get_database_backend();
    let blob_type = match backend {
        DbBackend::Postgres => "BYTEA",
        _ => "BLOB",
    };
    db.execute_unprepared("DROP TABLE IF EXISTS bench_bare")
        .await
        .unwrap();
    db.execute_unprepared(&format!(
        "CREATE TABLE bench_bare (id TEXT PRIMARY KEY, pseudonym TEXT NOT NULL, \
         sealed {blob_type} NOT NULL, payload_sha256 TEXT NOT NULL)"
    ))
    .await
    .unwrap();
    // The values exist before the clock starts, as the learners do for a disclosure.
    let rows: Vec<(String, String, String, String)> = (0..n)
        .map(|i| {
            (
                format!("{i:012}-{}", uuid_like(i)),
                hex_of(i, 32),
                hex_of(i + n, 150),
                hex_of(i + 2 * n, 32),
            )
        })
        .collect();

    let start = Instant::now();
    let txn = tutela_store::begin(db).await.unwrap();
    for chunk in rows.chunks(BARE_CHUNK) {
        let mut sql = String::with_capacity(chunk.len() * 520);
        sql.push_str("INSERT INTO bench_bare (id, pseudonym, sealed, payload_sha256) VALUES ");
        for (j, (id, pseudonym, sealed, hash)) in chunk.iter().enumerate() {
            if j > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "('{id}', '{pseudonym}', {}, '{hash}')",
                blob(backend, sealed)
            ));
        }
        txn.execute_unprepared(&sql).await.unwrap();
    }
    txn.commit().await.unwrap();
    let inserted = start.elapsed();

    let start = Instant::now();
    let mut after = String::new();
    let mut read = 0usize;
    loop {
        let page = db
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                match backend {
                    DbBackend::Postgres => {
                        "SELECT id, pseudonym, sealed, payload_sha256 FROM bench_bare \
                         WHERE id > $1 ORDER BY id LIMIT 1000"
                    }
                    _ => {
                        "SELECT id, pseudonym, sealed, payload_sha256 FROM bench_bare \
                         WHERE id > ? ORDER BY id LIMIT 1000"
                    }
                },
                [after.clone().into()],
            ))
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        for row in &page {
            let _: String = row.try_get("", "pseudonym").unwrap();
            let _: Vec<u8> = row.try_get("", "sealed").unwrap();
            let _: String = row.try_get("", "payload_sha256").unwrap();
        }
        read += page.len();
        after = last.try_get("", "id").unwrap();
        if page.len() < 1000 {
            break;
        }
    }
    let selected = start.elapsed();
    assert_eq!(read, n);
    db.execute_unprepared("DROP TABLE bench_bare")
        .await
        .unwrap();
    (inserted, selected)
}

/// A UUID-shaped text for row `i` (the ids of the real rows are UUIDs).
fn uuid_like(i: usize) -> String {
    let h = hex_of(i, 16);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[tokio::main]
async fn main() {
    tutela_testkit::bench_logging();
    let n: usize = std::env::var("BENCH_LEARNERS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(100_000);
    let suite = TestSuite::start().await.unwrap();
    let backend = suite.database().backend().name();

    let setup = Instant::now();
    let ids = create_learners(&suite, n).await;
    let partner_id = partner_in_force(&suite).await;
    if suite.database().backend() == tutela_store::Backend::Postgres {
        // What autovacuum does after a bulk load in a deployment (the test server may run without
        // it): without statistics, the planner joins enrolment's batch of ids to the key table by
        // a nested loop over every key, and a 10,000-learner read takes tens of seconds.
        let db = suite.database().connect().await.unwrap();
        db.execute_unprepared("ANALYZE").await.unwrap();
    }
    let setup = setup.elapsed();
    println!(
        "{backend}: setup: {n} learners created through CreateLearner ({IN_FLIGHT} in flight) and a partner with an agreement in force (then ANALYZE on PostgreSQL) in {:.1} s ({:.0} learners/s); not measured below",
        setup.as_secs_f64(),
        n as f64 / setup.as_secs_f64()
    );

    // Disclose: one call per 10,000 ids, one after another (the partner's lock orders them).
    let mut disclosures = suite.disclosures(staff(&suite, "exam_officer", "exam_booking"));
    let mut calls = Vec::new();
    let mut disclosed = 0u64;
    perf("enable");
    let start = Instant::now();
    for chunk in ids.chunks(PER_CALL) {
        let call = Instant::now();
        let response = disclosures
            .disclose(DiscloseRequest {
                partner_id: partner_id.clone(),
                learner_ids: chunk.to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        calls.push(call.elapsed());
        assert!(response.withheld.is_empty(), "{:?}", response.withheld);
        disclosed += u64::from(response.delivery.unwrap().record_count);
    }
    let disclose = start.elapsed();
    assert_eq!(disclosed, n as u64);

    // Pull: one stream of every delivery.
    let start = Instant::now();
    let mut stream = suite
        .disclosures(as_partner(&suite, &partner_id))
        .pull_deliveries(PullDeliveriesRequest {
            delivery_id: String::new(),
            batch_size: PULL_BATCH,
        })
        .await
        .unwrap()
        .into_inner();
    let mut pulled = 0usize;
    let mut bytes = 0usize;
    while let Some(batch) = stream.message().await.unwrap() {
        pulled += batch.records.len();
        bytes += batch
            .records
            .iter()
            .map(prost::Message::encoded_len)
            .sum::<usize>();
    }
    let pull = start.elapsed();
    perf("disable");
    assert_eq!(pulled, n);

    // File export: the same learners again, as candidate-list CSV files (one per 10,000: a
    // delivery's most), then each file downloaded.
    let start = Instant::now();
    let mut files = Vec::new();
    for chunk in ids.chunks(PER_CALL) {
        let response = disclosures
            .disclose(DiscloseRequest {
                partner_id: partner_id.clone(),
                learner_ids: chunk.to_vec(),
                channel: DeliveryChannel::File as i32,
                layout: FileLayout::CandidatesCsv as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        files.push(response.delivery.unwrap().delivery_id);
    }
    let file_disclose = start.elapsed();
    let start = Instant::now();
    let mut rows = 0u64;
    let mut file_bytes = 0usize;
    for delivery_id in &files {
        let mut stream = disclosures
            .download_export(DownloadExportRequest {
                delivery_id: delivery_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let mut done = 0;
        while let Some(chunk) = stream.message().await.unwrap() {
            file_bytes += chunk.data.len();
            done = chunk.records_done;
        }
        rows += u64::from(done);
    }
    let download = start.elapsed();
    assert_eq!(rows, n as u64);
    let read = enrolment_read(&suite, &ids[..n.min(PER_CALL)], &partner_id).await;

    let db = suite.database().connect().await.unwrap();
    let chain = tutela_sharing::disclosures::verify_chain(&db, &partner_id).await;
    assert_eq!(chain, Ok(n as u64), "the log holds one entry per learner");
    let (bare_insert, bare_select) = bare(&db, n).await;

    let end_to_end = disclose + pull;
    let secs = |d: Duration| d.as_secs_f64();
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let each: Vec<String> = calls
        .iter()
        .map(|d| format!("{:.2}", d.as_secs_f64()))
        .collect();
    calls.sort();
    println!(
        "{backend}, release, over loopback, guard and audit on: {} Disclose calls of up to {PER_CALL} ids (p50 {:.2} s, max {:.2} s each), one PullDeliveries stream in batches of {PULL_BATCH} ({:.0} bytes a record); log chain verified",
        calls.len(),
        secs(calls[calls.len() / 2]),
        secs(calls[calls.len() - 1]),
        bytes as f64 / n as f64,
    );
    println!("  the Disclose calls in order, s: {}", each.join(" "));
    println!(
        "  of one Disclose call, enrolment's StreamLearners of its {} ids alone takes {:.2} s (measured afterwards, as the service reads them)",
        n.min(PER_CALL),
        secs(read)
    );
    println!(
        "  {:<40} {:>8} {:>9} {:>10} {:>14} {:>4} {:>9}",
        "what", "count", "seconds", "records/s", "target", "met", "/ bare"
    );
    let line = |what: &str, d: Duration, target: &str, met: Option<bool>, base: Duration| {
        println!(
            "  {what:<40} {n:>8} {:>9.2} {:>10.0} {target:>14} {:>4} {:>8.1}x",
            secs(d),
            rate(d),
            met.map_or("-", |m| if m { "yes" } else { "no" }),
            secs(d) / secs(base),
        );
    };
    line(
        "disclose + pull, end to end",
        end_to_end,
        &format!("<= {END_TO_END_TARGET_SECS:.0} s"),
        Some(secs(end_to_end) <= END_TO_END_TARGET_SECS),
        bare_insert,
    );
    line("  of which disclose", disclose, "", None, bare_insert);
    line(
        "  of which pull (one stream)",
        pull,
        &format!(">= {PULL_TARGET_RATE:.0}/s"),
        Some(rate(pull) >= PULL_TARGET_RATE),
        bare_insert,
    );
    line(
        "file export: disclose as CSV + download",
        file_disclose + download,
        &format!("<= {FILE_TARGET_SECS:.0} s"),
        Some(secs(file_disclose + download) <= FILE_TARGET_SECS),
        bare_insert,
    );
    line("  of which download", download, "", None, bare_insert);
    line(
        "bare insert (1000-row INSERTs, one txn)",
        bare_insert,
        "",
        None,
        bare_insert,
    );
    line(
        "bare keyset read (pages of 1000)",
        bare_select,
        "",
        None,
        bare_insert,
    );
    println!(
        "  '/ bare' is seconds over the bare insert's; the pull is {:.1}x the bare read of as many rows; the CSV files are {:.1} MB in {} files",
        secs(pull) / secs(bare_select),
        file_bytes as f64 / 1e6,
        files.len()
    );
    drop(db);
    suite.stop().await.unwrap();
}
