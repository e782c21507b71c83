//! Debian's Chromium, headless, for the tests that read the page as a browser does. As root
//! with apt-get and no Chromium, it is installed first (once per machine); otherwise the test
//! stops and says what to install.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"].iter().map(PathBuf::from).find(|p| p.exists())
}

/// The browser's path, installing Debian's `chromium` if it is missing and we may.
pub fn ensure_chromium() -> PathBuf {
    crate::common::dbserver::apt_install(&["chromium"], "the page's test", || chromium().is_some());
    chromium().expect("chromium installed")
}

/// Headless Chromium with a throw-away profile in `profile`. JavaScript stays on (Chromium's
/// --dump-dom needs it); the page's Content-Security-Policy forbids every script, so what it
/// renders is what a browser with JavaScript off renders.
fn headless(profile: &Path) -> Command {
    let mut c = Command::new(ensure_chromium());
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--window-size=1280,4000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .stderr(Stdio::null());
    c
}

/// The DOM of `url` as Chromium built it.
pub fn dump_dom(url: &str, profile: &Path) -> String {
    let out = headless(profile).args(["--dump-dom", url]).output().expect("run chromium");
    assert!(out.status.success(), "chromium --dump-dom failed: {:?}", out.status);
    String::from_utf8(out.stdout).expect("UTF-8 DOM")
}

/// A screenshot of `url` into `png`.
pub fn screenshot(url: &str, profile: &Path, png: &Path) {
    let status = headless(profile)
        .arg(format!("--screenshot={}", png.display()))
        .arg(url)
        .stdout(Stdio::null())
        .status()
        .expect("run chromium");
    assert!(status.success() && png.exists(), "chromium --screenshot failed");
}
