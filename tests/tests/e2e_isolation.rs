//! Escape and limit probes run inside a sandbox: the host network, host
//! files, another sandbox's files, other processes, a fork bomb, a memory
//! hog, file-descriptor exhaustion and disk fills (the workspace and the
//! private `/tmp`). None succeeds; the limits end the run with their cause.

use agenttier_tests::client::{Client, Finished};
use agenttier_tests::process::{System, left_after};
use serde_json::json;

agenttier_tests::e2e_scenarios!(probes_from_inside_a_sandbox_all_fail);

async fn run_script(c: &Client, name: &str, script: &str) -> Finished {
    c.configure(
        name,
        &json!({"files": [{"path": "/workspace/probe.py", "content": script}],
                "entrypoint": ["python", "/workspace/probe.py"]}),
    )
    .await;
    c.invoke(name, "", &[("timeout", "60s")]).await
}

fn exit_cause(run: &Finished) -> (String, String) {
    let e = run.event("exit");
    (
        e.data["reason"].as_str().unwrap_or_default().to_string(),
        e.data["cause"].as_str().unwrap_or_default().to_string(),
    )
}

async fn probes_from_inside_a_sandbox_all_fail(sys: &mut dyn System) {
    let url = sys.urls()[0].clone();
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let c = Client::new(&url, Some(sys.admin_key()));
    c.create_running("iso-a", "langgraph-agent").await;
    c.create_running("iso-b", "langgraph-agent").await;

    // Another sandbox's secret, and the test's own files, must stay invisible.
    let secret = format!("secret-{:016x}", rand::random::<u64>());
    c.configure(
        "iso-b",
        &json!({"files": [{"path": format!("/workspace/{secret}"), "content": secret}]}),
    )
    .await;
    let here = std::env::current_dir().expect("cwd").display().to_string();

    let probe = format!(
        r#"
import os, socket, subprocess
def attempt(name, f):
    try:
        r = f()
        print(name, "SUCCEEDED", r)
    except Exception as e:
        print(name, "blocked", type(e).__name__)
attempt("network", lambda: socket.create_connection(("127.0.0.1", {port}), timeout=2))
attempt("shadow", lambda: open("/etc/shadow").read().startswith("root:") or (_ for _ in ()).throw(PermissionError("masked")))
attempt("host-tree", lambda: os.listdir({here:?}))
hits = subprocess.run(["sh", "-c", "find / -xdev -name '{secret}' 2>/dev/null; find /tmp /root /var -name '{secret}' 2>/dev/null"], capture_output=True, text=True).stdout.split()
print("other-sandbox", "SUCCEEDED" if hits else "blocked", hits)
pids = [p for p in os.listdir("/proc") if p.isdigit()]
print("processes", "SUCCEEDED" if len(pids) > 10 else "blocked", len(pids))
"#
    );
    let run = run_script(&c, "iso-a", &probe).await;
    let out = run.lines("stdout");
    assert_eq!(out.len(), 5, "{out:?} {:?}", run.lines("stderr"));
    for line in &out {
        assert!(line.contains(" blocked"), "escaped: {line}");
    }

    // Fork bomb: stopped by the process cap, nothing left behind.
    let mark = format!("bomb{:08x}", rand::random::<u32>());
    let bomb = format!(
        "import os, time\nwhile True:\n    try:\n        if os.fork() == 0:\n            time.sleep(120)\n            os._exit(0)\n    except OSError:\n        time.sleep(0.01)\n# {mark}\n"
    );
    let run = run_script(&c, "iso-a", &bomb).await;
    assert_eq!(
        exit_cause(&run),
        ("error".into(), "pids_limit".into()),
        "{:?}",
        run.events.last()
    );
    let left = left_after(&mark, std::time::Duration::from_secs(5)).await;
    assert!(left.is_empty(), "fork bomb processes left: {}", left.len());

    // 2 GiB of memory: stopped by the memory cap (1 GiB by default).
    let run = run_script(&c, "iso-a", "x = b'x' * (2 << 30)\nprint('allocated')\n").await;
    assert_eq!(
        exit_cause(&run),
        ("error".into(), "memory_limit".into()),
        "{:?}",
        run.events.last()
    );
    assert!(run.lines("stdout").is_empty());

    // 10,000 open files: the descriptor limit holds.
    let fds = "import os\nfds = []\ntry:\n    for i in range(10000):\n        fds.append(os.open('/dev/null', os.O_RDONLY))\n    print('opened', len(fds))\nexcept OSError as e:\n    print('stopped at', len(fds), e.errno)\n";
    let run = run_script(&c, "iso-a", fds).await;
    let line = run.lines("stdout").join("");
    assert!(
        line.starts_with("stopped at") && line.ends_with(" 24"),
        "{line}"
    );

    // Every run starts under its resource limits (both soft and hard).
    let run = run_script(
        &c,
        "iso-a",
        "print(open('/proc/self/limits').read(), end='')\n",
    )
    .await;
    let limits = run.lines("stdout");
    let limit = |name: &str| {
        let line = limits
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {limits:?}"));
        let fields: Vec<&str> = line[name.len()..].split_whitespace().collect();
        (fields[0].to_string(), fields[1].to_string())
    };
    let both = |v: &str| (v.to_string(), v.to_string());
    assert_eq!(limit("Max open files"), both("4096"));
    assert_eq!(limit("Max core file size"), both("0"));
    assert_eq!(limit("Max file size"), both("4294967296"));
    let (soft, hard) = limit("Max processes");
    assert!(soft == hard && soft.parse::<u64>().is_ok(), "{soft} {hard}");

    // The private /tmp is a bounded tmpfs (512 MiB): filling it fails with
    // ENOSPC, and the run goes on.
    let tmp = "import os
n = 0
try:
    with open('/tmp/fill', 'wb') as f:
        while n < (2 << 30):
            f.write(b'x' * (4 << 20)); f.flush(); n += 4 << 20
    print('wrote', n)
except OSError as e:
    print('stopped', e.errno, n >> 20)
";
    let run = run_script(&c, "iso-a", tmp).await;
    let line = run.lines("stdout").join("");
    assert!(line.starts_with("stopped 28 "), "{line}");
    let mib: u64 = line
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!((256..=512).contains(&mib), "/tmp took {mib} MiB");
    assert_eq!(exit_cause(&run), ("completed".into(), "".into()));

    // Filling the workspace: stopped at the quota (256 MiB in the harness).
    let fill = "import os
os.makedirs('/workspace/fill', exist_ok=True)
i = 0
while True:
    with open(f'/workspace/fill/{i}', 'wb') as f:
        f.write(b'x' * (4 << 20))
    i += 1
";
    let run = run_script(&c, "iso-a", fill).await;
    assert_eq!(
        exit_cause(&run),
        ("error".into(), "disk_limit".into()),
        "{:?}",
        run.events.last()
    );
    assert!(
        run.lines("stderr")
            .iter()
            .any(|l| l.contains("the workspace holds more than")),
        "{:?}",
        run.lines("stderr")
    );
    // Past the quota, a run that only reads goes on...
    let measure = "import os, time
print(sum(os.path.getsize(f'/workspace/fill/{n}') for n in os.listdir('/workspace/fill')) >> 20, flush=True)
time.sleep(1)
";
    let full = run_script(&c, "iso-a", measure).await;
    assert_eq!(exit_cause(&full), ("completed".into(), "".into()));
    eprintln!(
        "the workspace held {:?} MiB when the fill was stopped (quota 256 MiB)",
        full.lines("stdout")
    );
    // ...one that adds to it is stopped...
    let more = "import time
with open('/workspace/more', 'wb') as f:
    f.write(b'x' * (1 << 20))
time.sleep(5)
";
    let grown = run_script(&c, "iso-a", more).await;
    assert_eq!(exit_cause(&grown), ("error".into(), "disk_limit".into()));
    // ...and one that frees space goes on however slowly it does it (one
    // file every 20 ms: several of the watchdog's looks).
    let clear = "import os, time
for n in sorted(os.listdir('/workspace/fill')):
    os.remove(f'/workspace/fill/{n}')
    time.sleep(0.02)
os.rmdir('/workspace/fill')
os.remove('/workspace/more')
print('cleared', flush=True)
";
    let cleared = run_script(&c, "iso-a", clear).await;
    assert_eq!(
        exit_cause(&cleared),
        ("completed".into(), "".into()),
        "{:?}",
        cleared.lines("stderr")
    );
    assert_eq!(cleared.lines("stdout"), ["cleared"]);
    let check = "import os\nprint(os.path.exists('/workspace/fill'))\n";
    let after = run_script(&c, "iso-a", check).await;
    assert_eq!(
        after.lines("stdout"),
        ["False"],
        "the workspace was not cleared"
    );
}
