//! What the console's Chromium tests share: finding Chromium, node and playwright-core (or
//! skipping, unless `JETQ_TEST_BROWSER_REQUIRED` is set), running a script of
//! `cli/tests/browser/` against a dashboard and reading what it saw, the pages' widths and the
//! screenshots.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::{Map, Value};

use super::{within, DashboardProcess};

/// The browser scripts' directory (`cli/tests/browser`, with its `node_modules`).
pub(crate) fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// `target/jetq-cli-artifacts/`, created if needed: where the scripts write their screenshots.
pub(crate) fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/jetq-cli-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact directory");
    dir
}

/// The Chromium binary and node a browser script runs with.
pub(crate) struct Browser {
    chromium: PathBuf,
    node: PathBuf,
}

impl Browser {
    /// Chromium (`JETQ_TEST_CHROMIUM`, default `/usr/bin/chromium`), node on `PATH` and
    /// playwright-core in `cli/tests/browser`, or why the test cannot run.
    fn find() -> Result<Self, String> {
        let chromium = std::env::var_os("JETQ_TEST_CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
        if !chromium.exists() {
            return Err(format!(
                "{} not found (apt-get install chromium)",
                chromium.display()
            ));
        }
        let node = std::env::var_os("PATH")
            .and_then(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join("node"))
                    .find(|candidate| candidate.exists())
            })
            .ok_or_else(|| "node not found on PATH".to_owned())?;
        if !browser_dir().join("node_modules/playwright-core").exists() {
            return Err(format!(
                "playwright-core is not installed: run `npm ci` in {}",
                browser_dir().display()
            ));
        }
        Ok(Self { chromium, node })
    }

    /// The browser, or `None` after printing why the `what` browser test is skipped; with
    /// `JETQ_TEST_BROWSER_REQUIRED` set a missing piece panics instead.
    pub(crate) fn or_skip(what: &str) -> Option<Self> {
        match Self::find() {
            Ok(found) => Some(found),
            Err(missing) if std::env::var_os("JETQ_TEST_BROWSER_REQUIRED").is_some() => {
                panic!("the browser test cannot run: {missing}")
            }
            Err(missing) => {
                eprintln!("SKIPPED the {what} browser test: {missing}");
                None
            }
        }
    }

    /// Runs `cli/tests/browser/<script>` with node against `dashboard` (`DASHBOARD_URL`), with
    /// `SCREENSHOT_DIR` = `shots`, `CHROMIUM` and `env`, bounded by `limit`, and returns the JSON
    /// object it printed; panics if it printed none, exited with an error or reports a
    /// `failure`.
    pub(crate) async fn run_script(
        &self,
        script: &str,
        dashboard: &DashboardProcess,
        shots: &Path,
        env: &[(&str, &str)],
        limit: Duration,
    ) -> Value {
        let mut command = tokio::process::Command::new(&self.node);
        command
            .arg(browser_dir().join(script))
            .current_dir(browser_dir())
            .env("DASHBOARD_URL", &dashboard.url)
            .envs(env.iter().copied())
            .env("SCREENSHOT_DIR", shots)
            .env("CHROMIUM", &self.chromium)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let output = within(limit, "the browser script", command.output())
            .await
            .expect("node runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let seen: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|err| {
            panic!(
                "the browser script printed no JSON ({err})\nstdout:\n{stdout}\nstderr:\n{stderr}"
            )
        });
        assert!(
            output.status.success() && seen.get("failure").is_none(),
            "the browser script failed: {seen:#}\nstderr:\n{stderr}"
        );
        seen
    }
}

/// The script's `widths` (page → its scroll width and the window's), after checking that no
/// page is wider than its window.
pub(crate) fn assert_pages_fit(seen: &Value) -> &Map<String, Value> {
    let widths = seen["widths"].as_object().unwrap();
    for (page, width) in widths {
        let (scroll, viewport) = (
            width["scroll"].as_u64().unwrap(),
            width["viewport"].as_u64().unwrap(),
        );
        assert!(
            scroll <= viewport,
            "{page} is {scroll} px wide in a {viewport} px window"
        );
    }
    widths
}

/// Checks that each page of `widths` named `phone …` was seen in a 390 px window, and every
/// other one in a 1,400 px window.
pub(crate) fn assert_desktop_and_phone_windows(widths: &Map<String, Value>) {
    for (page, width) in widths {
        let viewport = width["viewport"].as_u64().unwrap();
        let expected = if page.starts_with("phone") { 390 } else { 1400 };
        assert_eq!(viewport, expected, "{page}");
    }
}

/// The size of screenshot `shot` in `shots`; panics if the script did not write it.
pub(crate) fn screenshot_size(shots: &Path, shot: &str) -> u64 {
    std::fs::metadata(shots.join(shot))
        .unwrap_or_else(|err| panic!("screenshot {shot} missing: {err}"))
        .len()
}

/// With `JETQ_UPDATE_DOCS_SCREENSHOT` set, copies screenshot `shot` from `shots` to `docs/`.
pub(crate) fn keep_in_docs(shots: &Path, shot: &str) {
    if std::env::var_os("JETQ_UPDATE_DOCS_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
        std::fs::copy(shots.join(shot), docs.join(shot)).expect("screenshot copied to docs/");
    }
}
