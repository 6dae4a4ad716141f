//! The Files API (spec §11) over real HTTP: round trips in both upload forms, the path rules
//! (§11.1) against escapes of every kind — symbolic links swapped in while requests run
//! included — every error row of §11.3, and the `filesystem` events of §7.4 (guarantee 33).

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine;
use paddock_client::EventsQuery;
use reqwest::Method;
use serde_json::{Value, json};

use common::{TestServer, collect_until};

struct Files<'a> {
    t: &'a TestServer,
    dep: String,
}

impl Files<'_> {
    fn url(&self, suffix: &str) -> String {
        self.t
            .url(&format!("/v1/deployments/{}/files{suffix}", self.dep))
    }

    async fn send(&self, method: Method, suffix: &str, body: Option<Vec<u8>>) -> reqwest::Response {
        let mut req = self
            .t
            .http()
            .request(method, self.url(suffix))
            .bearer_auth(&self.t.admin_key);
        if let Some(b) = body {
            req = req.body(b);
        }
        req.send().await.unwrap()
    }

    async fn json(&self, method: Method, suffix: &str, body: Option<Vec<u8>>) -> (u16, Value) {
        let r = self.send(method, suffix, body).await;
        let status = r.status().as_u16();
        let bytes = r.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn put_raw(&self, path: &str, bytes: &[u8]) -> (u16, Value) {
        self.json(Method::PUT, &format!("?path={path}"), Some(bytes.to_vec()))
            .await
    }

    async fn put_json(&self, body: Value) -> (u16, Value) {
        self.json(Method::PUT, "", Some(body.to_string().into_bytes()))
            .await
    }

    async fn read(&self, path: &str) -> (u16, Vec<u8>, Option<String>) {
        let r = self
            .send(Method::GET, &format!("/content?path={path}"), None)
            .await;
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, r.bytes().await.unwrap().to_vec(), ct)
    }

    async fn list(&self, path: &str) -> (u16, Value) {
        self.json(Method::GET, &format!("?path={path}"), None).await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.json(Method::DELETE, &format!("?path={path}"), None)
            .await
    }

    fn root(&self) -> PathBuf {
        self.t.dir.path().join("workspaces").join(&self.dep)
    }
}

/// A ready deployment with `extra` merged in. The sandbox is off: these tests are about the
/// workspace on the host, which file tools and the Files API use either way (spec §3.3).
async fn files(t: &TestServer, extra: Value) -> Files<'_> {
    let mut body = json!({"sandbox": {"enabled": false}});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    let d = t.ready_deployment(body).await;
    Files {
        t,
        dep: d.deployment_id,
    }
}

#[track_caller]
fn assert_error(got: &(u16, Value), status: u16, code: &str, param: Option<&str>) {
    let (s, body) = got;
    assert_eq!(*s, status, "wrong status; body {body}");
    assert_eq!(body["error"]["code"], code, "wrong code; body {body}");
    let want = param.map_or(Value::Null, |p| json!(p));
    assert_eq!(body["error"]["param"], want, "wrong param; body {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error without a message: {body}"
    );
}

/// Every file under `dir` with its content, for "nothing changed" checks.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() {
                out.push((e.path(), std::fs::read(e.path()).unwrap()));
            } else {
                out.push((e.path(), b"<link>".to_vec()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn text_and_binary_round_trip_in_both_forms() {
    let t = TestServer::start().await;
    let f = files(&t, json!({})).await;
    let b64 = base64::engine::general_purpose::STANDARD;

    // Raw text, creating parents (guarantee 41).
    let (s, w) = f.put_raw("briefs/q3/brief.md", b"# Brief\nhello").await;
    assert_eq!(s, 200, "{w}");
    assert_eq!(w["path"], "briefs/q3/brief.md");
    assert_eq!(w["size"], 13);
    assert_eq!(w["created"], true);
    assert!(w["modified_at"].as_str().unwrap().ends_with('Z'));
    let (s, body, ct) = f.read("briefs/q3/brief.md").await;
    assert_eq!((s, body.as_slice()), (200, &b"# Brief\nhello"[..]));
    assert_eq!(ct.as_deref(), Some("text/markdown; charset=utf-8"));

    // Raw binary (every byte value), overwriting: `created: false`.
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let (s, w) = f.put_raw("briefs/q3/brief.md", &binary).await;
    assert_eq!((s, &w["created"]), (200, &json!(false)), "{w}");
    let r = f
        .send(Method::GET, "/content?path=briefs/q3/brief.md", None)
        .await;
    assert_eq!(
        r.headers()["content-length"].to_str().unwrap(),
        binary.len().to_string()
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), binary.as_slice());

    // Raw form stores a JSON body as-is.
    let (s, _) = f
        .put_raw("data.json", br#"{"path":"x","content":"y"}"#)
        .await;
    assert_eq!(s, 200);
    let (_, body, ct) = f.read("data.json").await;
    assert_eq!(body, br#"{"path":"x","content":"y"}"#);
    assert_eq!(ct.as_deref(), Some("application/json"));

    // JSON form, utf8 (the default) and base64.
    let (s, w) = f
        .put_json(json!({"path": "notes/ünï.txt", "content": "héllo ✓"}))
        .await;
    assert_eq!(s, 200, "{w}");
    assert_eq!(w["size"], "héllo ✓".len());
    assert_eq!(
        f.read("notes/%C3%BCn%C3%AF.txt").await.1,
        "héllo ✓".as_bytes()
    );
    let png = [0x89, b'P', b'N', b'G', 0, 0, 0xff, 0xfe, 0x00, 0x01];
    let (s, w) = f
        .put_json(json!({"path": "img/a.png", "content": b64.encode(png), "encoding": "base64"}))
        .await;
    assert_eq!((s, &w["created"]), (200, &json!(true)), "{w}");
    let (_, body, ct) = f.read("img/a.png").await;
    assert_eq!(
        (body.as_slice(), ct.as_deref()),
        (&png[..], Some("image/png"))
    );
    let (_, body, ct) = f.read("img/a.png").await;
    assert_eq!(body, png);
    assert_eq!(ct.as_deref(), Some("image/png"));

    // Listing: sorted by name bytewise, directories with `size: null`, trailing `/`.
    f.put_raw("img/B.txt", b"b").await;
    f.put_raw("img/sub/x", b"x").await;
    let (s, l) = f.list("img/").await;
    assert_eq!(s, 200, "{l}");
    assert_eq!(l["path"], "img/");
    assert_eq!(l["truncated"], false);
    let names: Vec<&str> = l["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["B.txt", "a.png", "sub"]);
    assert_eq!(l["entries"][1]["type"], "file");
    assert_eq!(l["entries"][1]["size"], png.len());
    assert_eq!(l["entries"][2]["type"], "directory");
    assert_eq!(l["entries"][2]["size"], Value::Null);
    let (_, root) = f.list("").await;
    assert_eq!(root["path"], "");
    let (_, root2) = f.json(Method::GET, "", None).await;
    assert_eq!(root, root2, "no `path` is the root");

    // `.paddock/` is readable and writable, except the memory mirror.
    let (s, _) = f.put_raw(".paddock/notes.txt", b"mine").await;
    assert_eq!(s, 200);
    assert_eq!(f.read(".paddock/notes.txt").await.1, b"mine");

    // Delete a directory and everything in it (guarantee 41).
    let (s, d) = f.delete("img").await;
    assert_eq!((s, d), (200, json!({"path": "img", "status": "deleted"})));
    assert!(!f.root().join("img").exists());
    let (s, d) = f.delete("data.json").await;
    assert_eq!((s, &d["status"]), (200, &json!("deleted")));
    assert_error(&f.list("img").await, 404, "not_found", Some("path"));
}

#[tokio::test]
async fn listing_stops_at_ten_thousand_entries() {
    let t = TestServer::start().await;
    let f = files(&t, json!({})).await;
    let dir = f.root().join("many");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..10_001 {
        std::fs::write(dir.join(format!("f{i:05}")), b"").unwrap();
    }
    let (s, l) = f.list("many").await;
    assert_eq!(s, 200);
    assert_eq!(l["truncated"], true);
    let entries = l["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 10_000);
    assert_eq!(entries[0]["name"], "f00000");
    assert_eq!(entries[9_999]["name"], "f09999");
}

#[tokio::test]
async fn no_path_reaches_outside_the_workspace() {
    let t = TestServer::start().await;
    let f = files(&t, json!({})).await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), b"SECRET").unwrap();
    let root = f.root();
    std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("out")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        root.join("secret-link.txt"),
    )
    .unwrap();
    std::os::unix::fs::symlink("loop-b", root.join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", root.join("loop-b")).unwrap();
    std::fs::create_dir(root.join("dir")).unwrap();
    std::os::unix::fs::symlink("../../", root.join("dir/up")).unwrap();
    let before = tree(outside.path());
    let etc_before = std::fs::read("/etc/hostname").ok();

    let bad = [
        "..",
        "../x",
        "a/../../x",
        "/etc/passwd",
        "%2e%2e/x",
        "%2E%2E%2Fsecret.txt",
        "a%2f..%2f..%2fx",
        "a\\..\\x",
        "a%5cb",
        "a%00b",
        "./a",
        "a//b",
        "etc/passwd",
        "etc/hostname",
        "etc/new-file",
        "out/secret.txt",
        "out/new.txt",
        "out",
        "secret-link.txt",
        "loop-a",
        "loop-a/x",
        "dir/up/x",
        "dir/up",
    ];
    let b64 = base64::engine::general_purpose::STANDARD;
    for path in bad {
        // `out`, `secret-link.txt`, `loop-a`, `dir/up` are links: deleting one removes the
        // link itself, inside the workspace, which is allowed; the rest must be refused.
        let is_link = matches!(path, "out" | "secret-link.txt" | "loop-a" | "dir/up");
        let got = f.list(path).await;
        assert_error(&got, 400, "validation_error", Some("path"));
        let (s, body, _) = f.read(path).await;
        assert_eq!(s, 400, "read {path}: {}", String::from_utf8_lossy(&body));
        assert!(!String::from_utf8_lossy(&body).contains("SECRET"));
        if path != "out" && path != "dir/up" {
            // (A link to a directory is a directory: writing to it is a 400 as well, checked
            // below through the same resolution.)
            let got = f.put_raw(path, b"pwned").await;
            assert_error(&got, 400, "validation_error", Some("path"));
        }
        let decoded = path
            .replace("%2e", ".")
            .replace("%2E", ".")
            .replace("%2F", "/")
            .replace("%2f", "/")
            .replace("%5c", "\\")
            .replace("%00", "\0");
        let got = f
            .put_json(
                json!({"path": decoded, "content": b64.encode(b"pwned"), "encoding": "base64"}),
            )
            .await;
        if path == "out" || path == "dir/up" {
            assert_eq!(got.0, 400, "{path}: {}", got.1);
        } else {
            assert_error(&got, 400, "validation_error", Some("path"));
        }
        if !is_link {
            let got = f.delete(path).await;
            assert_error(&got, 400, "validation_error", Some("path"));
        }
    }
    // Too long, segment too long.
    let long = "a/".repeat(600);
    assert_error(&f.list(&long).await, 400, "validation_error", Some("path"));
    let seg = "x".repeat(256);
    assert_error(
        &f.put_raw(&seg, b"x").await,
        400,
        "validation_error",
        Some("path"),
    );

    assert_eq!(tree(outside.path()), before, "nothing outside changed");
    assert_eq!(std::fs::read("/etc/hostname").ok(), etc_before);
    assert!(!Path::new("/etc/new-file").exists());
    assert!(!Path::new("/x").exists());

    // Deleting a link removes the link, never what it points to.
    let (s, _) = f.delete("out").await;
    assert_eq!(s, 200);
    assert!(!root.join("out").exists());
    assert_eq!(tree(outside.path()), before);
}

#[tokio::test]
async fn a_symlink_swapped_in_during_requests_never_lets_one_out() {
    let t = TestServer::start().await;
    let f = files(&t, json!({})).await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("f.txt"), b"SECRET").unwrap();
    let before = tree(outside.path());
    let root = f.root();
    let flip = root.join("flip");
    std::fs::create_dir(&flip).unwrap();
    std::fs::write(flip.join("f.txt"), b"inside").unwrap();

    // A thread flips `flip` between a real directory and a link to the outside directory as
    // fast as it can while the requests run.
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let stop = stop.clone();
        let flip = flip.clone();
        let target = outside.path().to_path_buf();
        std::thread::spawn(move || {
            let mut flips = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::remove_dir_all(&flip);
                let _ = std::os::unix::fs::symlink(&target, &flip);
                std::thread::yield_now();
                let _ = std::fs::remove_file(&flip);
                let _ = std::fs::create_dir(&flip);
                let _ = std::fs::write(flip.join("f.txt"), b"inside");
                flips += 1;
            }
            flips
        })
    };

    let mut outcomes = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..150 {
        let (s, body, _) = f.read("flip/f.txt").await;
        assert!(
            !String::from_utf8_lossy(&body).contains("SECRET"),
            "read outside the workspace"
        );
        *outcomes.entry(format!("read {s}")).or_default() += 1;
        let (s, _) = f.put_raw(&format!("flip/new-{i}.txt"), b"x").await;
        *outcomes.entry(format!("put {s}")).or_default() += 1;
        let (s, _) = f.put_raw("flip/f.txt", b"overwrite").await;
        *outcomes.entry(format!("overwrite {s}")).or_default() += 1;
        let (s, _) = f.delete("flip/f.txt").await;
        *outcomes.entry(format!("delete {s}")).or_default() += 1;
        let (s, l) = f.list("flip").await;
        assert!(
            !l.to_string().contains("\"new-") || s == 200,
            "listing {s}: {l}"
        );
        *outcomes.entry(format!("list {s}")).or_default() += 1;
        assert_eq!(
            tree(outside.path()),
            before,
            "outside changed after round {i}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let flips = flipper.join().unwrap();
    assert!(flips > 0);
    assert_eq!(tree(outside.path()), before, "nothing outside changed");
    // Every answer is a documented one: never a 5xx.
    for (outcome, n) in &outcomes {
        let status: u16 = outcome.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(
            [200, 400, 404, 409].contains(&status),
            "{outcome} × {n}: {outcomes:?}"
        );
    }
}

#[tokio::test]
async fn every_error_row_of_section_11_3() {
    let t = TestServer::start_with(|s| s.limits.file_upload_bytes = 1000).await;
    let f = files(&t, json!({})).await;
    let b64 = base64::engine::general_purpose::STANDARD;
    f.put_raw("dir/file.txt", b"x").await;

    // list, read, delete: 404 nothing at path.
    for got in [
        f.list("missing").await,
        f.json(Method::GET, "/content?path=missing.txt", None).await,
        f.delete("missing").await,
        f.list("dir/file.txt/below").await,
        f.json(Method::GET, "/content?path=dir/file.txt/below", None)
            .await,
    ] {
        assert_error(&got, 404, "not_found", Some("path"));
    }
    // list a file / read a directory: 400.
    assert_error(
        &f.list("dir/file.txt").await,
        400,
        "validation_error",
        Some("path"),
    );
    for p in ["dir", "", "dir/"] {
        let got = f
            .json(Method::GET, &format!("/content?path={p}"), None)
            .await;
        assert_error(&got, 400, "validation_error", Some("path"));
    }

    // write: JSON form without path or content, bad encoding, invalid base64, memory mirror.
    assert_error(
        &f.put_json(json!({"content": "x"})).await,
        400,
        "validation_error",
        Some("path"),
    );
    assert_error(
        &f.put_json(json!({"path": "a.txt"})).await,
        400,
        "validation_error",
        Some("content"),
    );
    assert_error(
        &f.put_json(json!({"path": "a.txt", "content": "x", "encoding": "latin1"}))
            .await,
        400,
        "validation_error",
        Some("encoding"),
    );
    assert_error(
        &f.put_json(json!({"path": "a.txt", "content": "not base64!", "encoding": "base64"}))
            .await,
        400,
        "validation_error",
        Some("content"),
    );
    assert_error(
        &f.put_json(json!({"path": 7, "content": "x"})).await,
        400,
        "validation_error",
        Some("path"),
    );
    let got = f.json(Method::PUT, "", Some(b"[1,2]".to_vec())).await;
    assert_error(&got, 400, "validation_error", None);
    for p in [".paddock/memory/mem_x.md", ".paddock/memory"] {
        assert_error(
            &f.put_raw(p, b"x").await,
            400,
            "validation_error",
            Some("path"),
        );
        assert_error(
            &f.put_json(json!({"path": p, "content": "x"})).await,
            400,
            "validation_error",
            Some("path"),
        );
    }
    assert!(!f.root().join(".paddock/memory/mem_x.md").exists());

    // write: 409 when the path is a directory or a parent is a file.
    assert_error(&f.put_raw("dir", b"x").await, 409, "conflict", Some("path"));
    assert_error(
        &f.put_raw("dir/", b"x").await,
        409,
        "conflict",
        Some("path"),
    );
    assert_error(
        &f.put_raw("dir/file.txt/child", b"x").await,
        409,
        "conflict",
        Some("path"),
    );
    assert_error(
        &f.put_json(json!({"path": "dir", "content": "x"})).await,
        409,
        "conflict",
        Some("path"),
    );

    // write: 413 over the size limit (1000 bytes here), in both forms.
    assert_error(
        &f.put_raw("big.bin", &[7u8; 1001]).await,
        413,
        "payload_too_large",
        None,
    );
    assert_eq!(f.put_raw("ok.bin", &[7u8; 1000]).await.0, 200);
    let too_much = b64.encode([7u8; 1001]);
    assert_error(
        &f.put_json(json!({"path": "big.bin", "content": too_much, "encoding": "base64"}))
            .await,
        413,
        "payload_too_large",
        None,
    );
    let just_right = b64.encode([7u8; 1000]);
    assert_eq!(
        f.put_json(json!({"path": "ok2.bin", "content": just_right, "encoding": "base64"}))
            .await
            .0,
        200
    );
    let huge = "x".repeat(1000 * 4 / 3 + 64 * 1024 + 10);
    assert_error(
        &f.put_json(json!({"path": "big.txt", "content": huge}))
            .await,
        413,
        "payload_too_large",
        None,
    );
    assert!(!f.root().join("big.bin").exists());

    // delete: the root and the memory mirror are refused.
    for p in ["", "/", ".paddock/memory", ".paddock/memory/x.md"] {
        let got = f.delete(p).await;
        assert_error(&got, 400, "validation_error", Some("path"));
    }
    let got = f.json(Method::DELETE, "", None).await;
    assert_error(&got, 400, "validation_error", Some("path"));

    // 404 for an unknown deployment comes before everything about the path.
    let other = Files {
        t: &t,
        dep: "dep_doesnotexist".to_owned(),
    };
    assert_error(&other.list("../x").await, 404, "not_found", None);
    assert_error(&other.put_raw("a", b"x").await, 404, "not_found", None);
}

#[tokio::test]
async fn files_need_a_ready_deployment() {
    let t = TestServer::start().await;
    // Make workspace creation impossible: the workspaces directory becomes a file.
    let workspaces = t.dir.path().join("workspaces");
    std::fs::rename(&workspaces, t.dir.path().join("workspaces.moved")).unwrap();
    std::fs::write(&workspaces, b"not a directory").unwrap();
    let created = t
        .admin
        .create_deployment(&common::deployment_body(json!({})))
        .await
        .unwrap();
    let f = Files {
        t: &t,
        dep: created.deployment_id.clone(),
    };
    // Provisioning or failed: both are refused the same way.
    for _ in 0..2 {
        for got in [
            f.list("").await,
            f.json(Method::GET, "/content?path=a.txt", None).await,
            f.put_raw("a.txt", b"x").await,
            f.put_json(json!({"path": "a.txt", "content": "x"})).await,
            f.delete("a.txt").await,
        ] {
            assert_error(&got, 409, "deployment_not_ready", None);
        }
        let deadline = tokio::time::Instant::now() + common::WAIT;
        while t.admin.get_deployment(&f.dep).await.unwrap().status == "provisioning" {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    // A bad path is a 400 before the 409 (spec §1.8 order).
    assert_error(&f.list("../x").await, 400, "validation_error", Some("path"));
}

/// Every event of the deployment from the start up to and including the first `message`
/// event (the marker a test sends last), read as a replay.
async fn events_until_marker(t: &TestServer, dep: &str) -> Vec<paddock_client::SseEvent> {
    let (s, _) = t
        .http()
        .post(t.url(&format!("/v1/deployments/{dep}/messages")))
        .bearer_auth(&t.admin_key)
        .json(&json!({"content": "marker"}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(s, 202);
    let mut stream = t
        .admin
        .events(
            dep,
            EventsQuery {
                after: Some("evt_0".to_owned()),
                ..EventsQuery::default()
            },
        )
        .await;
    collect_until(&mut stream, |e| {
        e.event == "message" && e.data["content"] == "marker"
    })
    .await
}

#[tokio::test]
async fn filesystem_events_follow_the_flag() {
    let t = TestServer::start().await;

    // Flag off (the default): no `filesystem` event at all (guarantee 33).
    let off = files(&t, json!({})).await;
    off.put_raw("a.txt", b"x").await;
    off.put_raw("a.txt", b"y").await;
    off.delete("a.txt").await;
    let seen = events_until_marker(&t, &off.dep).await;
    assert!(seen.iter().all(|e| e.event != "filesystem"), "{seen:#?}");

    // Flag on: one `created` without run_id for a new file; `modified` on overwrite; one
    // `deleted` per file of a deleted directory; nothing for `.paddock/`.
    let on = files(&t, json!({"features": {"filesystem_webhooks": true}})).await;
    on.put_raw("new.txt", b"x").await;
    on.put_json(json!({"path": "new.txt", "content": "y"}))
        .await;
    on.put_raw("d/one.txt", b"1").await;
    on.put_raw("d/sub/two.txt", b"2").await;
    on.put_raw(".paddock/own.txt", b"p").await;
    on.delete("d").await;
    on.delete(".paddock/own.txt").await;
    let seen = events_until_marker(&t, &on.dep).await;
    let fs: Vec<Value> = seen
        .iter()
        .filter(|e| e.event == "filesystem")
        .map(|e| e.data.clone())
        .collect();
    assert_eq!(
        fs,
        vec![
            json!({"change": "created", "path": "new.txt"}),
            json!({"change": "modified", "path": "new.txt"}),
            json!({"change": "created", "path": "d/one.txt"}),
            json!({"change": "created", "path": "d/sub/two.txt"}),
            json!({"change": "deleted", "path": "d/one.txt"}),
            json!({"change": "deleted", "path": "d/sub/two.txt"}),
        ]
    );
}

#[tokio::test]
async fn file_tools_report_changes_with_their_run() {
    use paddock_test_support::Script;
    let t = TestServer::start().await;
    for flag in [false, true] {
        let f = files(&t, json!({"features": {"filesystem_webhooks": flag}})).await;
        t.fake.push(
            Script::new()
                .tool_call(
                    format!("call_w1{flag}"),
                    "write_file",
                    json!({"path": "notes/a.txt", "content": "one"}),
                )
                .tool_call(
                    format!("call_w2{flag}"),
                    "write_file",
                    json!({"path": ".paddock/scratch.txt", "content": "mine"}),
                ),
        );
        t.fake.push(Script::new().tool_call(
            format!("call_e1{flag}"),
            "edit_file",
            json!({"path": "notes/a.txt", "old_string": "one", "new_string": "two"}),
        ));
        t.fake.push(Script::new().text("done"));
        let mut stream = common::open_events(&t.admin, &f.dep).await;
        let (s, accepted) =
            f.t.http()
                .post(t.url(&format!("/v1/deployments/{}/messages", f.dep)))
                .bearer_auth(&t.admin_key)
                .json(&json!({"content": "write"}))
                .send()
                .await
                .map(|r| (r.status().as_u16(), r))
                .unwrap();
        assert_eq!(s, 202);
        let accepted: Value = accepted.json().await.unwrap();
        let run_id = accepted["run_id"].as_str().unwrap().to_owned();
        let thread_id = accepted["thread_id"].as_str().unwrap().to_owned();
        let seen = collect_until(&mut stream, |e| common::is_terminal(e, &run_id)).await;
        assert_eq!(
            seen.last().unwrap().data["status"],
            "completed",
            "{seen:#?}"
        );
        let order: Vec<String> = seen
            .iter()
            .filter(|e| e.event == "filesystem" || e.event == "tool_result")
            .map(|e| match e.event.as_str() {
                "filesystem" => {
                    assert_eq!(e.data["run_id"], run_id.as_str());
                    assert_eq!(e.data["thread_id"], thread_id.as_str());
                    format!(
                        "{} {}",
                        e.data["change"].as_str().unwrap(),
                        e.data["path"].as_str().unwrap()
                    )
                }
                _ => format!("result {}", e.data["call_id"].as_str().unwrap()),
            })
            .collect();
        let expected: Vec<String> = if flag {
            vec![
                "created notes/a.txt".to_owned(),
                format!("result call_w1{flag}"),
                format!("result call_w2{flag}"),
                "modified notes/a.txt".to_owned(),
                format!("result call_e1{flag}"),
            ]
        } else {
            vec![
                format!("result call_w1{flag}"),
                format!("result call_w2{flag}"),
                format!("result call_e1{flag}"),
            ]
        };
        assert_eq!(order, expected, "flag {flag}");
    }
}
