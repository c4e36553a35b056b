//! Development keys, from the outside: only `serve` generates them, and the admin token it makes
//! goes to a private file, never to its output; every other command that needs a key and finds
//! none creates nothing, names the files it looked for and exits with the documented status; keys
//! are found beside a SQLite database named by URL; a command's own environment variables
//! (`TUTELA_CLI_TOKEN`) work next to the settings.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use tutela_proto::common::SubjectRef;
use tutela_proto::privacy::DescribeSubjectRequest;
use tutela_proto::privacy::subject_data_client::SubjectDataClient;
use tutela_testkit::Credentials;

use crate::binary::{BIN, serve_with_stdout};

/// The exit status of a command that needs a key and finds none (README, "Commands").
const MISSING_KEY: i32 = 3;

/// `tutela args…` in `cwd`, with none of the test's own database or secret settings.
fn tutela(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_remove("TEST_DATABASE_URL")
        .env_remove("TUTELA_AUTH_DEV_SECRET")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

const WINDOW: [&str; 4] = [
    "--from",
    "2000-01-01T00:00:00Z",
    "--to",
    "2100-01-01T00:00:00Z",
];

#[test]
fn a_command_that_needs_a_key_and_finds_none_creates_nothing_and_says_where_it_looked() {
    let cwd = tempfile::tempdir().unwrap();
    let needs_key: [(&[&str], &str); 4] = [
        (&["audit", "verify"], "data/audit-key"),
        (&["retention", "sweep"], "data/kek"),
        (
            &["token", "issue", "--tenant", "acme", "--role", "dpo"],
            "data/dev-secret",
        ),
        (
            &[
                "audit",
                "accessed",
                "--tenant",
                "acme",
                "--principal",
                "p",
                "--resolve",
            ],
            "data/dev-secret",
        ),
    ];
    for (args, file) in needs_key {
        let mut args = args.to_vec();
        if args[1] == "accessed" {
            args.extend(WINDOW);
        }
        let out = tutela(cwd.path(), &args, &[("TUTELA_CLI_TOKEN", "x.y.z")]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(MISSING_KEY), "{args:?}: {err}");
        assert!(err.contains(file), "{args:?}: {err}");
        assert!(err.contains("--data-dir"), "{args:?}: {err}");
        assert!(
            err.contains("only `tutela serve` generates"),
            "{args:?}: {err}"
        );
        assert!(
            entries(cwd.path()).is_empty(),
            "{args:?} created {:?}",
            entries(cwd.path())
        );
    }
    // Reading the audit log needs no key, but a database: a missing one is named, not created.
    let mut args = vec!["audit", "accessed", "--tenant", "acme", "--principal", "p"];
    args.extend(WINDOW);
    let out = tutela(cwd.path(), &args, &[]);
    assert!(
        stderr(&out).contains("no database at ./data/tutela.db"),
        "{}",
        stderr(&out)
    );
    assert!(entries(cwd.path()).is_empty(), "{:?}", entries(cwd.path()));

    // Migrating creates the database, and no key.
    let out = tutela(cwd.path(), &["migrate"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let created = entries(&cwd.path().join("data"));
    assert!(
        created.iter().all(|f| f.starts_with("tutela.db")),
        "{created:?}"
    );
}

#[tokio::test]
async fn serve_writes_its_admin_token_to_a_private_file_and_other_commands_find_its_keys() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token_file = data.join("admin-token");
    let mut tokens = Vec::new();
    for start in ["first", "second"] {
        let stdout_file = dir.path().join(format!("{start}.out"));
        let stdout = Stdio::from(std::fs::File::create(&stdout_file).unwrap());
        let served = serve_with_stdout(&data, &[], stdout);
        let token = std::fs::read_to_string(&token_file)
            .unwrap()
            .trim()
            .to_owned();
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{start} start: {mode:o}");

        // The token works: the admin is the default tenant's dpo.
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", served.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = SubjectDataClient::with_interceptor(
            channel,
            Credentials::new(&token, "subject_rights"),
        );
        client
            .describe_subject(DescribeSubjectRequest {
                subject: Some(SubjectRef {
                    subject_id: "0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a77".into(),
                }),
                services: Vec::new(),
            })
            .await
            .unwrap();

        let log = served.stop().await;
        let printed = std::fs::read_to_string(&stdout_file).unwrap();
        assert!(
            printed.contains(&token_file.display().to_string()),
            "{start}: {printed}"
        );
        for earlier in tokens.iter().chain([&token]) {
            assert!(
                !printed.contains(earlier.as_str()),
                "{start} start printed a token"
            );
            assert!(
                !log.contains(earlier.as_str()),
                "{start} start logged a token"
            );
        }
        tokens.push(token);
    }

    // From anywhere else, the database's URL is enough to find the keys beside it; nothing is
    // generated where the command runs.
    let elsewhere = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", data.join("tutela.db").display());
    let out = tutela(
        elsewhere.path(),
        &["audit", "verify", "--database-url", &url],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}{stdout}", stderr(&out));
    assert!(stdout.contains("audit log intact"), "{stdout}");

    // A command's variable stands in for its flag, beside the settings.
    let mut args = vec![
        "audit",
        "accessed",
        "--tenant",
        "default",
        "--principal",
        "dev-admin",
        "--resolve",
        "--database-url",
        &url,
    ];
    args.extend(WINDOW);
    let token = tokens.last().unwrap();
    let out = tutela(elsewhere.path(), &args, &[("TUTELA_CLI_TOKEN", token)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}{stdout}", stderr(&out));
    assert!(stdout.contains("subject(s)"), "{stdout}");
    assert!(
        entries(elsewhere.path()).is_empty(),
        "{:?}",
        entries(elsewhere.path())
    );
}
