//! Runs HubSpot's official Node SDK (`tests/sdk/conformance.test.js`, `@hubspot/api-client`
//! pinned in `tests/sdk/package.json`) against the real server. Needs Node.js 20+ and npm;
//! installs the pinned SDK with `npm ci` on first run.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const ALL_SCOPES: &str = "crm.objects.contacts.read,crm.objects.contacts.write,crm.objects.companies.read,crm.objects.companies.write,crm.objects.calls.read,crm.objects.calls.write,crm.objects.owners.read,crm.schemas.contacts.read,crm.schemas.contacts.write,crm.schemas.companies.read,crm.schemas.companies.write,settings.users.write";

#[test]
fn official_node_sdk_conformance() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk");
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "Node.js is needed for the SDK conformance suite (apt-get install nodejs npm)"
    );
    if !dir.join("node_modules/@hubspot/api-client").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("run npm ci");
        assert!(status.success(), "npm ci failed in tests/sdk");
    }
    let db = Db::new();
    db.portal(4242, "US");
    let token = db.token(4242, ALL_SCOPES);
    let server = Server::start(&db);
    let out = Command::new("node")
        .args(["--test", "--test-reporter=spec", "conformance.test.js"])
        .current_dir(&dir)
        .env("SWITCHBOARD_URL", &server.base)
        .env("SWITCHBOARD_TOKEN", &token)
        .output()
        .expect("run node --test");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    assert!(out.status.success(), "the SDK suite failed:\n{report}");
    assert!(report.contains("pass 8"), "all 8 SDK tests ran:\n{report}");
}
