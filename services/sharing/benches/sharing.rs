//! placeholder
#![allow(clippy::unwrap_used)]
#[tokio::main]
async fn main() {
    tutela_testkit::bench_logging();
    let suite = tutela_testkit::TestSuite::start().await.unwrap();
    let _ = futures::stream::iter(0..1);
    suite.stop().await.unwrap();
}
