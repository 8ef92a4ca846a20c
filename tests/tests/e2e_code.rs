//! Code mode (SPEC §2.4) over real processes: exec as JSON and as a
//! stream, in both modes, with stdin, timeouts and large output; the file
//! API with byte-exact round trips, chunked bodies and path confinement;
//! the terminal WebSocket on a real PTY; and the check order of each.

use std::io::Read as _;
use std::time::Duration;

use agenttier_tests::client::{finish, router_pair};
use agenttier_tests::process::{System, left_after, processes_with};
use agenttier_tests::wait_for;
use serde_json::{Value, json};

agenttier_tests::e2e_scenarios!(
    exec_runs_commands_in_both_modes,
    exec_check_order_and_process_trees,
    files_round_trip_and_stay_in_the_workspace,
    terminal_runs_a_shell_on_a_pty,
);

const MIB: usize = 1024 * 1024;

/// `n` random bytes from the kernel.
fn urandom(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    std::fs::File::open("/dev/urandom")
        .and_then(|f| f.take(n as u64).read_to_end(&mut out))
        .expect("read /dev/urandom");
    out
}

#[track_caller]
fn ok(v: &Value) -> (&str, &str, i64) {
    (
        v["stdout"]
            .as_str()
            .unwrap_or_else(|| panic!("no stdout in {v}")),
        v["stderr"]
            .as_str()
            .unwrap_or_else(|| panic!("no stderr in {v}")),
        v["exitCode"]
            .as_i64()
            .unwrap_or_else(|| panic!("no exitCode in {v}")),
    )
}

async fn exec_runs_commands_in_both_modes(sys: &mut dyn System) {
    let (a, b) = router_pair(sys);
    a.create_running("ex-code", "general-coding").await;
    a.create_running("ex-agent", "langgraph-agent").await;

    // A shell string runs under sh -c in /workspace; exit codes and both
    // streams come back exactly, a last line without newline included.
    let r = a
        .exec(
            "ex-code",
            &json!({"command": "echo out; echo err >&2; pwd; printf 'no newline'; exit 3"}),
        )
        .await
        .expect(200);
    assert_eq!(ok(&r.body), ("out\n/workspace\nno newline", "err\n", 3));
    assert_eq!(r.body["timedOut"], false);
    assert!(r.body["durationMs"].as_u64().is_some(), "{:?}", r.body);

    // argv runs as given (no shell), on either router, in an agent sandbox too.
    for (c, name) in [(&a, "ex-code"), (&b, "ex-agent")] {
        let r = c
            .exec(name, &json!({"command": ["printf", "%s|", "a b", "$HOME"]}))
            .await
            .expect(200);
        assert_eq!(ok(&r.body), ("a b|$HOME|", "", 0), "{name}");
    }

    // Stdin, small and past the 512 KiB chunk (it crosses the bus in pieces).
    let r = a
        .exec(
            "ex-code",
            &json!({"command": "cat; echo", "stdin": "hello"}),
        )
        .await
        .expect(200);
    assert_eq!(ok(&r.body), ("hello\n", "", 0));
    let big: String = "0123456789abcdef".repeat(3 * MIB / 16 / 2); // 1.5 MiB
    let r = a
        .exec("ex-code", &json!({"command": ["wc", "-c"], "stdin": big}))
        .await
        .expect(200);
    assert_eq!(r.body["stdout"].as_str().map(str::trim), Some("1572864"));

    // Output far over the 1 MiB message cap, still byte-exact: 3 MiB of
    // base64 lines (76 columns), counted and compared by shape.
    let r = a
        .exec(
            "ex-code",
            &json!({"command": "head -c 2359296 /dev/zero | base64"}),
        )
        .await
        .expect(200);
    let want = format!(
        "{}{}\n",
        format!("{}\n", "A".repeat(76)).repeat(41_391),
        "A".repeat(12)
    );
    let out = r.body["stdout"].as_str().unwrap_or_default();
    assert_eq!(out.len(), want.len());
    assert!(out == want, "3 MiB of output came back altered");
    assert_eq!(r.body["truncated"], false);

    // Streaming: start, log per line, exit, with ids, like an invoke.
    let f = finish(
        a.exec_stream(
            "ex-agent",
            &json!({"command": "echo one; echo two >&2; exit 4"}),
        )
        .await
        .stream(),
    )
    .await;
    assert_eq!(f.names(), ["start", "log", "log", "exit"], "{:?}", f.events);
    let ids: Vec<_> = f
        .events
        .iter()
        .map(|e| e.id.clone().unwrap_or_default())
        .collect();
    assert_eq!(ids, ["1", "2", "3", "4"]);
    assert_eq!(f.lines("stdout"), ["one"]);
    assert_eq!(f.lines("stderr"), ["two"]);
    assert_eq!(f.event("exit").data["exitCode"], 4);
    assert_eq!(f.event("exit").data["reason"], "completed");
    assert!(
        f.event("start").data["invokeId"]
            .as_str()
            .is_some_and(|i| i.starts_with("exec-"))
    );

    // Exec does not count against the invoke cap and leaves configure alone.
    let r = a.get_sandbox("ex-agent").await.expect(200);
    assert!(r.body.get("agentConfigure").is_none(), "{:?}", r.body);
}

async fn exec_check_order_and_process_trees(sys: &mut dyn System) {
    let (c, _) = router_pair(sys);
    for name in ["ord-run", "ord-stop"] {
        c.create_running(name, "general-coding").await;
    }
    let user_b = c.with_key(Some(&c.mint_user_key("user-b", "b@example.com").await));
    let good = json!({"command": "true"});

    // 401 first, even for a sandbox that does not exist, and for a bad body.
    let anon = c.with_key(None);
    for name in ["ord-run", "ord-nope"] {
        let r = anon.exec(name, &json!({"command": 1})).await;
        assert_eq!(r.status, 401, "{r:?}");
    }
    // 404: unknown, or another user's (whatever the body).
    assert_eq!(c.exec("ord-nope", &good).await.status, 404);
    assert_eq!(user_b.exec("ord-run", &good).await.status, 404);
    assert_eq!(user_b.exec("ord-run", &json!({})).await.status, 404);
    // 400: the body, named.
    for (body, field) in [
        (json!({}), "command"),
        (json!({"command": ""}), "command"),
        (json!({"command": [1, 2]}), "command"),
        (json!({"command": "true", "timeout": 3601}), "timeout"),
        (json!({"command": "true", "timeout": -5}), "timeout"),
    ] {
        let r = c.exec("ord-run", &body).await;
        assert_eq!(r.status, 400, "{body}: {r:?}");
        assert_eq!(r.error(), "invalid_request", "{r:?}");
        assert!(r.message().starts_with(field), "{body}: {r:?}");
    }
    // 413: stdin over 16 MiB.
    let r = c
        .exec(
            "ord-run",
            &json!({"command": "true", "stdin": "x".repeat(16 * MIB + 1)}),
        )
        .await;
    assert_eq!(r.status, 413, "{r:?}");

    // A timeout kills the whole tree: the reply says so, nothing is left.
    let marker = "987651";
    let r = c
        .exec(
            "ord-run",
            &json!({"command": format!("sleep {marker} & sleep {marker}; echo never"), "timeout": 1}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["timedOut"], true, "{:?}", r.body);
    assert_eq!(r.body["exitCode"], -1);
    assert_eq!(r.body["stdout"], "");
    let left = left_after(marker, Duration::from_secs(5)).await;
    assert!(left.is_empty(), "left behind: {left:?}");

    // Stop kills a running exec (its stream ends canceled), then 409 — before
    // the body is even looked at.
    let marker = "987652";
    let mut s = c
        .exec_stream(
            "ord-stop",
            &json!({"command": format!("echo up; sleep {marker}")}),
        )
        .await
        .stream();
    s.until("log").await;
    c.stop("ord-stop").await.expect(200);
    let exit = s.until("exit").await;
    assert_eq!(exit.data["reason"], "canceled", "{exit:?}");
    let left = left_after(marker, Duration::from_secs(15)).await;
    assert!(left.is_empty(), "left behind: {left:?}");
    c.wait_status("ord-stop", "Stopped").await;
    for body in [good.clone(), json!({"command": 7})] {
        let r = c.exec("ord-stop", &body).await;
        assert_eq!(r.status, 409, "{body}: {r:?}");
        assert_eq!(r.error(), "invalid_phase", "{r:?}");
    }
    let r = c.exec_stream("ord-stop", &good).await.refused();
    assert_eq!(r.status, 409, "{r:?}");

    // Delete kills a running exec too.
    let marker = "987653";
    let mut s = c
        .exec_stream(
            "ord-run",
            &json!({"command": format!("echo up; sleep {marker}")}),
        )
        .await
        .stream();
    s.until("log").await;
    c.delete("ord-run").await.expect(204);
    assert_eq!(s.until("exit").await.data["reason"], "canceled");
    let left = left_after(marker, Duration::from_secs(15)).await;
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// The names in a listing.
fn names(list: &Value) -> Vec<String> {
    list["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries in {list}"))
        .iter()
        .map(|e| e["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn files_round_trip_and_stay_in_the_workspace(sys: &mut dyn System) {
    let (a, b) = router_pair(sys);
    a.create_running("fs", "general-coding").await;

    // Write (parents made), list, read back byte for byte.
    let r = a
        .write_file("fs", "/workspace/src/app/main.py", "print('works!')\n")
        .await
        .expect(201);
    assert_eq!(
        r.body,
        json!({"path": "/workspace/src/app/main.py", "bytes": 16})
    );
    let (status, body) = a.read_file("fs", "/workspace/src/app/main.py").await;
    assert_eq!(
        (status.as_u16(), &body[..]),
        (200, &b"print('works!')\n"[..])
    );
    // The sandbox sees what the API wrote.
    let r = a
        .exec(
            "fs",
            &json!({"command": "python3 src/app/main.py || cat src/app/main.py"}),
        )
        .await
        .expect(200);
    assert!(
        r.body["stdout"]
            .as_str()
            .unwrap_or_default()
            .contains("works!"),
        "{r:?}"
    );

    // A 3 MiB binary file crosses the 512 KiB chunking both ways, on two routers.
    let blob = urandom(3 * MIB + 123);
    let r = a
        .write_file("fs", "/workspace/data/blob.bin", blob.clone())
        .await
        .expect(201);
    assert_eq!(r.body["bytes"], blob.len());
    let (status, got) = b.read_file("fs", "/workspace/data/blob.bin").await;
    assert_eq!(status, 200);
    assert!(
        got[..] == blob[..],
        "read back {} bytes, not the {} written",
        got.len(),
        blob.len()
    );
    let r = a
        .exec("fs", &json!({"command": "wc -c < data/blob.bin"}))
        .await
        .expect(200);
    assert_eq!(r.body["stdout"].as_str().map(str::trim), Some("3145851"));
    // An empty file is a file.
    a.write_file("fs", "/workspace/data/empty", "")
        .await
        .expect(201);
    let (status, got) = a.read_file("fs", "/workspace/data/empty").await;
    assert_eq!((status.as_u16(), got.len()), (200, 0));

    // Listing in the v0.8 shape, with and without the trailing slash.
    a.exec("fs", &json!({"command": "chmod 755 src/app/main.py"}))
        .await
        .expect(200);
    let list = a.list_files("fs", "/workspace/data").await.expect(200).body;
    assert_eq!(list["path"], "/workspace/data");
    assert_eq!(names(&list), ["blob.bin", "empty"]);
    let blob_entry = &list["entries"][0];
    assert_eq!(blob_entry["size"], blob.len());
    assert_eq!(blob_entry["isDir"], false);
    assert_eq!(blob_entry["mode"], "-rw-r--r--");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let mtime = blob_entry["modifiedAt"]
        .as_i64()
        .unwrap_or_else(|| panic!("{blob_entry}"));
    assert!(
        (now - mtime).abs() < 300,
        "modifiedAt {mtime} is Unix seconds"
    );
    let list = a
        .list_files("fs", "/workspace/src/app")
        .await
        .expect(200)
        .body;
    assert_eq!(list["entries"][0]["mode"], "-rwxr-xr-x");
    let r = a
        .get_json("/sandboxes/fs/files?path=/workspace")
        .await
        .expect(200);
    assert_eq!(names(&r.body), ["data", "src"]);
    assert_eq!(r.body["entries"][0]["isDir"], true);
    assert!(
        r.body["entries"][0]["mode"]
            .as_str()
            .is_some_and(|m| m.starts_with('d'))
    );
    // No path lists the workspace.
    let r = a.get_json("/sandboxes/fs/files/").await.expect(200);
    assert_eq!(names(&r.body), ["data", "src"]);

    // Delete: a file, an empty directory; 409 for a full one, 404 when gone.
    a.delete_file("fs", "/workspace/data/empty")
        .await
        .expect(204);
    let r = a.delete_file("fs", "/workspace/data").await;
    assert_eq!(
        (r.status.as_u16(), r.error()),
        (409, "directory_not_empty"),
        "{r:?}"
    );
    a.delete_file("fs", "/workspace/data/blob.bin")
        .await
        .expect(204);
    a.delete_file("fs", "/workspace/data").await.expect(204);
    let r = a.delete_file("fs", "/workspace/data").await;
    assert_eq!(
        (r.status.as_u16(), r.error()),
        (404, "file_not_found"),
        "{r:?}"
    );
    let (status, _) = a.read_file("fs", "/workspace/nope.txt").await;
    assert_eq!(status, 404);

    // Confinement: traversal in every spelling, absolute paths elsewhere,
    // and symlinks planted from inside, are 400 and write nothing outside.
    let host_tmp = tempfile::tempdir().expect("a temp dir");
    let outside = host_tmp.path().display().to_string();
    let planted = format!(
        "ln -s /etc etc-link && ln -s /etc/hostname hn && ln -s {outside} out-link && echo ok"
    );
    let r = a.exec("fs", &json!({"command": planted})).await.expect(200);
    assert_eq!(r.body["stdout"], "ok\n", "{r:?}");
    for (method, path) in [
        ("GET", "/api/v1/sandboxes/fs/files/workspace/../etc/passwd"),
        (
            "GET",
            "/api/v1/sandboxes/fs/files/workspace/%2e%2e/etc/passwd",
        ),
        (
            "GET",
            "/api/v1/sandboxes/fs/files/workspace/%2E%2E/%2E%2E/etc/passwd",
        ),
        ("PUT", "/api/v1/sandboxes/fs/files/workspace/../evil.txt"),
        (
            "PUT",
            "/api/v1/sandboxes/fs/files/workspace/%2e%2e/evil.txt",
        ),
        ("DELETE", "/api/v1/sandboxes/fs/files/workspace/%2e%2e/etc"),
        ("GET", "/api/v1/sandboxes/fs/files/?path=/workspace/../etc"),
        (
            "GET",
            "/api/v1/sandboxes/fs/files/?path=/workspace/%2e%2e/etc",
        ),
    ] {
        let (status, body) = a.raw_request(method, path, b"evil").await;
        assert_eq!(status, 400, "{method} {path}: {body}");
        assert!(body.contains("invalid_path"), "{method} {path}: {body}");
    }
    for path in ["/etc/passwd", "/tmp/x", "/workspacex/a"] {
        let (status, _) = a.read_file("fs", path).await;
        assert_eq!(status, 400, "read {path}");
        assert_eq!(
            a.write_file("fs", path, "x").await.status,
            400,
            "write {path}"
        );
    }
    let r = a.list_files("fs", "/etc").await;
    assert_eq!(
        (r.status.as_u16(), r.error()),
        (400, "invalid_path"),
        "{r:?}"
    );
    // Through the planted symlinks: nothing read, listed or written outside.
    for path in [
        "/workspace/etc-link/passwd",
        "/workspace/hn",
        "/workspace/out-link/secret",
    ] {
        let (status, body) = a.read_file("fs", path).await;
        assert_eq!(status, 400, "read {path}: {body:?}");
    }
    for dir in ["/workspace/etc-link", "/workspace/out-link"] {
        let r = a.list_files("fs", dir).await;
        assert_eq!(r.status, 400, "list {dir}: {r:?}");
    }
    let r = a
        .write_file("fs", "/workspace/out-link/planted.txt", "x")
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.message().contains("/workspace/out-link"), "{r:?}");
    assert!(!host_tmp.path().join("planted.txt").exists());
    let r = a.delete_file("fs", "/workspace/out-link/anything").await;
    assert_eq!(r.status, 400, "{r:?}");
    // A symlink in the last place is replaced, never written through.
    let before = std::fs::read("/etc/hostname").unwrap_or_default();
    a.write_file("fs", "/workspace/hn", "mine")
        .await
        .expect(201);
    assert_eq!(std::fs::read("/etc/hostname").unwrap_or_default(), before);
    let (_, got) = a.read_file("fs", "/workspace/hn").await;
    assert_eq!(&got[..], b"mine");
    // Deleting a symlink removes the link only.
    a.delete_file("fs", "/workspace/etc-link").await.expect(204);
    assert!(std::path::Path::new("/etc/passwd").exists());

    // 413 over 32 MiB; 404 for another user; 409 when stopped.
    let r = a
        .write_file("fs", "/workspace/huge.bin", vec![0u8; 32 * MIB + 1])
        .await;
    assert_eq!(r.status, 413, "{r:?}");
    let user_b = a.with_key(Some(&a.mint_user_key("user-b", "b@example.com").await));
    assert_eq!(user_b.list_files("fs", "/workspace").await.status, 404);
    assert_eq!(
        user_b.read_file("fs", "/workspace/src/app/main.py").await.0,
        404
    );
    assert_eq!(
        user_b.write_file("fs", "/workspace/x", "x").await.status,
        404
    );
    assert_eq!(user_b.delete_file("fs", "/workspace/src").await.status, 404);
    a.stop("fs").await.expect(200);
    a.wait_status("fs", "Stopped").await;
    let r = a.list_files("fs", "/workspace").await;
    assert_eq!(
        (r.status.as_u16(), r.error()),
        (409, "invalid_phase"),
        "{r:?}"
    );
    assert_eq!(a.read_file("fs", "/workspace/src/app/main.py").await.0, 409);
    assert_eq!(a.write_file("fs", "/workspace/y", "y").await.status, 409);
    // Resumed, the files are still there.
    a.resume("fs").await.expect(200);
    a.wait_running("fs").await;
    let (status, body) = a.read_file("fs", "/workspace/src/app/main.py").await;
    assert_eq!(
        (status.as_u16(), &body[..]),
        (200, &b"print('works!')\n"[..])
    );
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the terminal of `name` as `key`; the refusal's status otherwise.
async fn open_terminal(base: &str, key: &str, name: &str, query: &str) -> Result<Ws, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!(
        "{}/api/v1/sandboxes/{name}/terminal{query}",
        base.replacen("http://", "ws://", 1)
    );
    let mut req = url.into_client_request().expect("a websocket request");
    req.headers_mut()
        .insert("X-API-Key", key.parse().expect("a header value"));
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("terminal connection failed: {e}"),
    }
}

async fn send(ws: &mut Ws, frame: Value) {
    use futures::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        frame.to_string().into(),
    ))
    .await
    .expect("send a frame");
}

/// Reads frames until the output so far contains `want` (returning it) or
/// a frame of type `until` arrives (returning that frame's JSON instead).
async fn read_until(ws: &mut Ws, output: &mut String, want: &str, until: &str) -> Value {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if !want.is_empty() && output.contains(want) {
            return Value::Null;
        }
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| {
                panic!("no {want:?} / {until:?} in time; output so far: {output:?}")
            });
        let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) = m else {
            panic!("the socket ended ({m:?}) before {want:?} / {until:?}; output: {output:?}");
        };
        let v: Value = serde_json::from_str(t.as_str()).expect("a JSON frame");
        match v["type"].as_str() {
            Some("output") => output.push_str(v["data"].as_str().unwrap_or_default()),
            Some(t) if t == until => return v,
            _ => {}
        }
    }
}

async fn terminal_runs_a_shell_on_a_pty(sys: &mut dyn System) {
    let (a, b) = router_pair(sys);
    a.create_running("term", "general-coding").await;
    let key = sys.admin_key().to_string();

    // 401 → 404 → 400 (a plain GET is not a WebSocket).
    let r = a.with_key(None).get_json("/sandboxes/term/terminal").await;
    assert_eq!(r.status, 401);
    assert_eq!(a.get_json("/sandboxes/nope/terminal").await.status, 404);
    let user_b = a.mint_user_key("user-b", "b@example.com").await;
    assert_eq!(
        open_terminal(a.base(), &user_b, "term", "").await.err(),
        Some(404)
    );
    let r = a.get_json("/sandboxes/term/terminal").await;
    assert_eq!(
        (r.status.as_u16(), r.error()),
        (400, "invalid_request"),
        "{r:?}"
    );

    // A shell on a PTY of the asked size; resize; ping; exit with a code.
    let mut ws = open_terminal(b.base(), &key, "term", "?cols=100&rows=30")
        .await
        .expect("the terminal opens");
    let mut out = String::new();
    send(
        &mut ws,
        json!({"type": "input", "data": "stty size; test -t 0 && echo tty-$((40+2)); pwd\n"}),
    )
    .await;
    read_until(&mut ws, &mut out, "tty-42", "").await;
    assert!(out.contains("30 100"), "{out:?}");
    read_until(&mut ws, &mut out, "/workspace", "").await;
    send(&mut ws, json!({"type": "resize", "cols": 132, "rows": 50})).await;
    send(&mut ws, json!({"type": "input", "data": "stty size\n"})).await;
    read_until(&mut ws, &mut out, "50 132", "").await;
    send(&mut ws, json!({"type": "ping"})).await;
    read_until(&mut ws, &mut out, "", "pong").await;
    send(&mut ws, json!({"type": "input", "data": "exit 3\n"})).await;
    let exit = read_until(&mut ws, &mut out, "", "exit").await;
    assert_eq!(exit["exitCode"], 3, "{exit}");

    // A client that goes away takes its session (and its processes) along.
    let marker = "987661";
    let mut ws = open_terminal(a.base(), &key, "term", "")
        .await
        .expect("opens");
    let mut out = String::new();
    send(
        &mut ws,
        json!({"type": "input", "data": format!("echo sleep-start; sleep {marker}\n")}),
    )
    .await;
    read_until(&mut ws, &mut out, "sleep-start\r\n", "").await;
    // The echo comes first: the shell may not have started the sleep yet.
    assert!(
        wait_for(Duration::from_secs(5), || async {
            !processes_with(marker).is_empty()
        })
        .await,
        "the sleep runs"
    );
    drop(ws);
    let left = left_after(marker, Duration::from_secs(10)).await;
    assert!(left.is_empty(), "left behind: {left:?}");

    // Stop ends an open session; a stopped sandbox has no terminal.
    let mut ws = open_terminal(a.base(), &key, "term", "")
        .await
        .expect("opens");
    let mut out = String::new();
    send(
        &mut ws,
        json!({"type": "input", "data": "echo ready-$((1+1))\n"}),
    )
    .await;
    read_until(&mut ws, &mut out, "ready-2", "").await;
    a.stop("term").await.expect(200);
    let exit = read_until(&mut ws, &mut out, "", "exit").await;
    assert_eq!(exit["reason"], "canceled", "{exit}");
    a.wait_status("term", "Stopped").await;
    assert_eq!(
        open_terminal(a.base(), &key, "term", "").await.err(),
        Some(409)
    );
}
