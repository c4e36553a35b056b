//! Every log event and span of a test binary, captured and scanned for the fixtures' personal
//! values, so that "personal data never appears in logs or spans" is checked by the whole test
//! run rather than by one test.
//!
//! [`capture`] installs one global subscriber (debug level, span opening and closing with their
//! fields) that writes into memory; [`TestDatabase::create`](super::TestDatabase::create) calls
//! it, so every test that touches a database is captured. Fixtures declare their personal values
//! with [`personal`]. Each [`TestDatabase`](super::TestDatabase) scans, when dropped, what was
//! logged since the previous scan, and fails the test that drops it if a personal value is
//! there; the last database dropped thus covers the run up to that point.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// The captured output, and how far it has been scanned.
#[derive(Debug, Default)]
struct Buffer {
    bytes: Vec<u8>,
    scanned: usize,
}

/// The capture of this test binary.
#[derive(Debug, Clone, Default)]
pub struct LogCapture(Arc<Mutex<Buffer>>);

impl LogCapture {
    fn buffer(&self) -> MutexGuard<'_, Buffer> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Everything captured so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer().bytes).into_owned()
    }

    /// The first declared personal value found in what was captured since the last scan.
    pub fn scan(&self) -> Option<String> {
        let values = values().clone();
        let mut buffer = self.buffer();
        let longest = values.iter().map(String::len).max().unwrap_or(0);
        // Start a little before the last scan's end, so a value split across it is still seen.
        let from = buffer.scanned.saturating_sub(longest);
        let found = values.into_iter().find(|value| {
            !value.is_empty()
                && buffer.bytes[from..]
                    .windows(value.len())
                    .any(|w| w == value.as_bytes())
        });
        buffer.scanned = buffer.bytes.len();
        found
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer().bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn values() -> MutexGuard<'static, BTreeSet<String>> {
    static VALUES: OnceLock<Mutex<BTreeSet<String>>> = OnceLock::new();
    VALUES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

static CAPTURE: OnceLock<(LogCapture, bool)> = OnceLock::new();

/// Installs (once) and returns this binary's capture. If another global subscriber was set
/// first, the capture stays empty; [`capture_is_active`] tells.
pub fn capture() -> &'static LogCapture {
    &CAPTURE
        .get_or_init(|| {
            let capture = LogCapture::default();
            let writer = capture.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter("debug")
                .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            let active = tracing::subscriber::set_global_default(subscriber).is_ok();
            (capture, active)
        })
        .0
}

/// Declares fixture values that are personal data and must never be logged.
pub fn personal(declared: &[&str]) {
    let mut set = values();
    for value in declared {
        set.insert((*value).to_owned());
    }
}

/// Declares one personal fixture value and hands it back.
pub fn personal_value(value: &str) -> String {
    personal(&[value]);
    value.to_owned()
}

/// Whether this binary's events reach the capture.
pub fn capture_is_active() -> bool {
    capture();
    CAPTURE.get().is_some_and(|(_, active)| *active)
}

/// Fails the calling test if a declared personal value was logged since the last scan.
#[allow(clippy::panic)] // Test support: failing the test is the point.
pub fn scan_or_fail() {
    if let Some(value) = capture().scan()
        && !std::thread::panicking()
    {
        panic!(
            "a log event or span of this test binary carries the personal fixture value {value:?}"
        );
    }
}
