//! Uploaded paths can never write outside `/workspace`: a corpus of well over
//! a hundred malicious paths (`..`, absolute escapes, prefixes that only look
//! like the workspace, NUL, symlinks planted inside the workspace), each
//! refused with 400 naming the entry, and legitimate odd names that must work.

use std::path::Path;

use agenttier_tests::client::Client;
use agenttier_tests::process::System;
use serde_json::json;

agenttier_tests::e2e_scenarios!(malicious_paths_are_refused_and_odd_names_work);

/// Every malicious path, with `{m}` standing for a unique marker.
fn corpus(m: &str) -> Vec<String> {
    let targets = [
        format!("/etc/{m}"),
        format!("/tmp/{m}"),
        format!("/{m}"),
        format!("/root/{m}"),
        format!("/proc/self/{m}"),
    ];
    let escapes = [
        format!("/workspace/../{m}"),
        format!("/workspace/../../{m}"),
        format!("/workspace/a/../../{m}"),
        format!("/workspace/a/b/../../../{m}"),
        format!("/workspace/./../{m}"),
        format!("/workspace//../{m}"),
        format!("/workspace/a/..//../{m}"),
        format!("/workspace/../workspace/../{m}"),
        format!("/workspace/../etc/{m}"),
        format!("/workspace/../../../../../../../../tmp/{m}"),
        "/workspace/..".to_string(),
        "/workspace/a/../..".to_string(),
    ];
    let lookalikes = [
        format!("/workspacex/{m}"),
        format!("/workspace.{m}"),
        format!("/workspace-{m}"),
        format!("/Workspace/{m}"),
        format!("/work/space/{m}"),
        format!("workspace/{m}"),
        format!("./workspace/{m}"),
        format!("../workspace/{m}"),
        m.to_string(),
        format!("./{m}"),
        format!("../{m}"),
        format!("~/{m}"),
        String::new(),
        "/".to_string(),
        "/workspace".to_string(),
        "/workspace/".to_string(),
        "/workspace/.".to_string(),
        "/workspace//".to_string(),
        format!("/workspace/a\0/{m}"),
        format!("/workspace/{m}\0"),
        format!("\0/workspace/{m}"),
    ];
    let mut all: Vec<String> = Vec::new();
    all.extend(targets.iter().cloned());
    all.extend(escapes.iter().cloned());
    all.extend(lookalikes.iter().cloned());
    // The same escapes through deeper and oddly spelled prefixes.
    for prefix in [
        "/workspace/sub",
        "/workspace/sub/deeper",
        "/workspace/.x",
        "/workspace/a b",
    ] {
        for up in ["..", "../..", "../../..", "./../..", "../../../.."] {
            all.push(format!("{prefix}/{up}/{m}"));
            all.push(format!("{prefix}/{up}/etc/{m}"));
            all.push(format!("{prefix}//{up}//{m}"));
        }
    }
    for t in &targets {
        all.push(format!("{t}/"));
        all.push(format!("/.{t}"));
        all.push(format!("//{}", t.trim_start_matches('/')));
    }
    all
}

/// Names that look odd but are plain files inside the workspace.
const ODD_NAMES: &[&str] = &[
    "/workspace/with space.txt",
    "/workspace/ünïcødé.py",
    "/workspace/.hidden",
    "/workspace/..hidden",
    "/workspace/x..y",
    "/workspace/%2e%2e",
    "/workspace/back\\slash",
    "/workspace/-dash",
    "/workspace/emoji🎉.txt",
    "/workspace/a/b/c/deep.txt",
    "/workspace/a/./dot-segment.txt",
    "/workspace//double-slash.txt",
];

fn marker_exists_on_host(m: &str, roots: &[&Path]) -> Vec<String> {
    fn walk(dir: &Path, m: &str, depth: usize, found: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().contains(m) {
                found.push(p.display().to_string());
            }
            if depth > 0 && e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&p, m, depth - 1, found);
            }
        }
    }
    let mut found = Vec::new();
    for r in roots {
        walk(r, m, 9, &mut found);
    }
    found
}

async fn malicious_paths_are_refused_and_odd_names_work(sys: &mut dyn System) {
    let c = Client::new(&sys.urls()[0], Some(sys.admin_key()));
    c.create_running("paths-a", "langgraph-agent").await;
    let m = format!("escape-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);

    // A symlink planted inside the workspace, pointing out of it.
    c.configure(
        "paths-a",
        &json!({"entrypoint": ["sh", "-c", "ln -sfn /etc /workspace/link && ln -sfn /tmp /workspace/tmplink && echo planted"]}),
    )
    .await;
    assert_eq!(
        c.invoke("paths-a", "", &[]).await.lines("stdout"),
        ["planted"]
    );
    let mut bad = corpus(&m);
    bad.push(format!("/workspace/link/{m}"));
    bad.push(format!("/workspace/tmplink/{m}"));
    bad.push(format!("/workspace/link/sub/{m}"));
    assert!(bad.len() >= 100, "the corpus has {} cases", bad.len());

    for (i, path) in bad.iter().enumerate() {
        // The bad entry second, after a good one, so the message must name it.
        let body = json!({"files": [
            {"path": format!("/workspace/ok-{i}.txt"), "content": "ok"},
            {"path": path, "content": m},
        ]});
        let r = c.configure_stream("paths-a", &body).await.refused();
        assert_eq!(r.status, 400, "{path:?} was not refused: {r:?}");
        assert!(
            r.message().contains("files[1]"),
            "{path:?}: the message names the entry: {r:?}"
        );
    }

    // Odd but legitimate names all land where they say.
    let files: Vec<_> = ODD_NAMES
        .iter()
        .map(|p| json!({"path": p, "content": format!("{p}\n")}))
        .collect();
    let done = c
        .configure(
            "paths-a",
            &json!({"files": files, "entrypoint": ["sh", "-c", "cd /workspace && find . -type f | sort"]}),
        )
        .await;
    assert_eq!(
        done.event("result").data["installExitCode"],
        0,
        "{:?}",
        done.events
    );
    let listed = c.invoke("paths-a", "", &[]).await.lines("stdout");
    for p in ODD_NAMES {
        let rel = format!(
            ".{}",
            p.trim_start_matches("/workspace")
                .replace("/./", "/")
                .replace("//", "/")
        );
        assert!(listed.contains(&rel), "{p} is missing from {listed:?}");
    }

    // Nothing anywhere outside carries the marker: no byte was written there.
    let leaked = marker_exists_on_host(
        &m,
        &[Path::new("/tmp"), Path::new("/etc"), Path::new("/var/tmp")],
    );
    assert!(
        leaked.is_empty(),
        "written outside the workspace: {leaked:?}"
    );
}
