//! Attachments (spec §4.3, §1.13) through the public API: each URL is fetched on the host under
//! the outbound rules, saved under `.paddock/attachments/<message_id>/`, recognised by its bytes,
//! and sent to the model natively when the model takes it (checked in each vendor's recorded
//! request), otherwise described by a note with the saved path. A refused, oversize or slow
//! fetch fails neither the request nor the run: the model is told which attachment and why.
//!
//! Only loopback listeners are used: media is served from 127.0.0.2 (allowed by the test's
//! `[outbound]` exception), and every refused URL is refused before any connection is made.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use base64::Engine;
use futures::StreamExt;
use paddock_model::{ModelOverrides, ProviderConfig, ProviderKind};
use paddock_protocol::Attachment;
use paddock_server::{AppState, ServerSettings};
use paddock_test_support::{FakeGemini, FakeOpenAi, Script};
use serde_json::{Value, json};

use common::{TestServer, collect_until, is_terminal, open_events};

/// A PNG, WAV and MP4 header each: enough for the sniffer (and for the fakes).
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";
const WAV: &[u8] = b"RIFF\x24\0\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x40\x1f\0\0\x80\x3e\0\0";
const MP4: &[u8] = b"\0\0\0\x20ftypisom\0\0\x02\0isomiso2avc1mp41\0\0\0\x08free";

fn state(t: &TestServer) -> &AppState {
    t.server.as_ref().expect("server running").state()
}

fn workspace(t: &TestServer, dep: &str) -> std::path::PathBuf {
    state(t).settings.workspaces_dir().join(dep)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn attachment(kind: &str, url: impl Into<String>) -> Attachment {
    Attachment {
        kind: kind.to_owned(),
        url: url.into(),
    }
}

/// The media host on 127.0.0.2: media under misleading names and content types (the sniffer
/// decides, not the header), a redirect to a private address, an endless body and a body that
/// stalls after its first bytes. Returns its address and how many requests `/slow` got.
async fn media_host() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let slow_hits = Arc::new(AtomicUsize::new(0));
    let hits = slow_hits.clone();
    let media = |bytes: &'static [u8]| {
        move || async move { ([(header::CONTENT_TYPE, "text/plain")], bytes).into_response() }
    };
    let app = Router::new()
        .route("/cat.png", get(media(PNG)))
        .route("/voice", get(media(WAV)))
        .route("/clip.mp4", get(media(MP4)))
        .route("/page.png", get(media(b"<html>not an image</html>")))
        .route(
            "/to-private",
            get(|| async { Redirect::temporary("http://192.168.7.7/secret.png").into_response() }),
        )
        // No Content-Length: the cap must cut the body as it streams.
        .route(
            "/endless",
            get(|| async {
                let chunk = bytes::Bytes::from(vec![0u8; 512]);
                let stream = futures::stream::repeat(chunk).map(Ok::<_, std::convert::Infallible>);
                Response::new(Body::from_stream(stream))
            }),
        )
        // The first bytes, then nothing for as long as the test runs.
        .route(
            "/slow",
            get(move || {
                hits.fetch_add(1, Ordering::SeqCst);
                async {
                    let first = futures::stream::iter([Ok::<_, std::convert::Infallible>(
                        bytes::Bytes::from_static(PNG),
                    )]);
                    Response::new(Body::from_stream(first.chain(futures::stream::pending())))
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, slow_hits)
}

/// Allows the media host's address, nothing else private.
fn allow_media_host(s: &mut ServerSettings) {
    s.outbound.allowed_networks = vec!["127.0.0.2/32".parse().unwrap()];
}

/// Sends a message with `attachments` and waits for its run to end, which must be `completed`.
/// Returns the message id.
async fn send_to_end(t: &TestServer, dep: &str, attachments: &[Attachment]) -> String {
    let mut stream = open_events(&t.admin, dep).await;
    let accepted = t
        .admin
        .send_message(dep, "Look at these.", None, attachments)
        .await
        .expect("the message is accepted whatever its attachments");
    let events = collect_until(&mut stream, |e| is_terminal(e, &accepted.run_id)).await;
    assert_eq!(
        events.last().unwrap().data["status"],
        "completed",
        "{events:#?}"
    );
    accepted.message_id
}

/// The text of the last user message of a Chat Completions request (a string, or the text
/// parts of a content array).
fn openai_user_text(request: &Value) -> String {
    let user = request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .unwrap();
    match &user["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        other => panic!("unexpected content {other}"),
    }
}

#[tokio::test]
async fn image_audio_and_video_reach_each_vendor_in_its_format() {
    let (host, _) = media_host().await;
    let gemini = FakeGemini::start().await;
    let openai = FakeOpenAi::start().await;
    let t = TestServer::start_with(|s| {
        allow_media_host(s);
        // gpt-4o takes images; this server's operator says it takes audio too.
        // The fakes want a key, given as a header.
        let mut oai = ProviderConfig::new(ProviderKind::Openai, openai.base_url());
        oai.headers
            .insert("authorization".to_owned(), "Bearer test-key".to_owned());
        oai.models.insert(
            "gpt-4o".to_owned(),
            ModelOverrides {
                audio: Some(true),
                ..ModelOverrides::default()
            },
        );
        s.providers.insert("oai".to_owned(), oai);
        let mut gem = ProviderConfig::new(ProviderKind::Google, gemini.base_url());
        gem.headers
            .insert("x-goog-api-key".to_owned(), "test-key".to_owned());
        s.providers.insert("gem".to_owned(), gem);
    })
    .await;

    // OpenAI: the image and the audio inline in Chat Completions' parts; the video (which the
    // model cannot take) as a note naming the saved file.
    let d = t.ready_deployment(json!({"model": "oai/gpt-4o"})).await;
    let dep = d.deployment_id.as_str();
    openai.push(Script::new().text("Seen."));
    let message_id = send_to_end(
        &t,
        dep,
        &[
            attachment("image", format!("http://{host}/cat.png")),
            attachment("audio", format!("http://{host}/voice")),
            attachment("video", format!("http://{host}/clip.mp4")),
        ],
    )
    .await;
    let request = openai.requests().last().unwrap().clone();
    let user = request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .unwrap()
        .clone();
    let parts = user["content"].as_array().expect("content parts");
    assert_eq!(
        parts[0],
        json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", b64(PNG))}}),
        "sniffed as PNG despite text/plain"
    );
    assert_eq!(
        parts[1],
        json!({"type": "input_audio", "input_audio": {"data": b64(WAV), "format": "wav"}})
    );
    let text = openai_user_text(&request);
    let dir = format!(".paddock/attachments/{message_id}");
    assert!(text.starts_with("Look at these."), "{text}");
    assert!(
        text.contains(&format!(
            "[video attachment 3 (http://{host}/clip.mp4) saved in the workspace at {dir}/3-clip.mp4 (video/mp4, {} bytes); not shown: this model cannot take video input",
            MP4.len()
        )),
        "{text}"
    );
    let root = workspace(&t, dep);
    assert_eq!(
        std::fs::read(root.join(&dir).join("1-cat.png")).unwrap(),
        PNG
    );
    assert_eq!(
        std::fs::read(root.join(&dir).join("2-voice.wav")).unwrap(),
        WAV
    );
    assert_eq!(
        std::fs::read(root.join(&dir).join("3-clip.mp4")).unwrap(),
        MP4
    );

    // A later step of the same thread still shows them (built from the saved files), with no
    // second fetch: the outcome is recorded.
    let before = std::fs::metadata(root.join(&dir).join("1-cat.png"))
        .unwrap()
        .modified()
        .unwrap();
    openai.push(Script::new().text("Still seen."));
    send_to_end(&t, dep, &[]).await;
    let again = openai.requests().last().unwrap().clone();
    assert!(again.to_string().contains(&b64(PNG)));
    let after = std::fs::metadata(root.join(&dir).join("1-cat.png"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after, "not fetched again");

    // Gemini: the video as inlineData.
    let g = t
        .ready_deployment(json!({"model": "gem/gemini-2.5-flash"}))
        .await;
    gemini.push(Script::new().text("Watched."));
    let video_message = send_to_end(
        &t,
        &g.deployment_id,
        &[attachment("video", format!("http://{host}/clip.mp4"))],
    )
    .await;
    let request = gemini.requests().last().unwrap().clone();
    let parts = request["contents"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|c| c["role"] == "user")
        .unwrap()["parts"]
        .clone();
    assert!(
        parts
            .as_array()
            .unwrap()
            .contains(&json!({"inlineData": {"mimeType": "video/mp4", "data": b64(MP4)}})),
        "{parts}"
    );
    assert!(
        workspace(&t, &g.deployment_id)
            .join(format!(".paddock/attachments/{video_message}/1-clip.mp4"))
            .is_file()
    );

    // Bytes that are not the declared kind are saved but not sent, and the model is told.
    openai.push(Script::new().text("Hm."));
    let page = send_to_end(
        &t,
        dep,
        &[attachment("image", format!("http://{host}/page.png"))],
    )
    .await;
    let text = openai_user_text(openai.requests().last().unwrap());
    assert!(
        text.contains(&format!(
            "saved in the workspace at .paddock/attachments/{page}/1-page.png (unrecognised format, 25 bytes); not shown: its content is not a recognised image format"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn refused_addresses_are_reported_to_the_model_with_the_reason() {
    let (host, _) = media_host().await;
    let t = TestServer::start_with(allow_media_host).await;
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.as_str();

    // (URL, what the model must be told). None of these is ever connected to.
    let cases: Vec<(String, String)> = vec![
        (
            "http://127.0.0.1:9/a.png".into(),
            "refused 127.0.0.1: address 127.0.0.1 is loopback".into(),
        ),
        (
            "http://[::1]:9/a.png".into(),
            "refused [::1]: address ::1 is loopback".into(),
        ),
        (
            "http://10.0.0.5/a.png".into(),
            "refused 10.0.0.5: address 10.0.0.5 is private".into(),
        ),
        (
            "http://172.16.3.4/a.png".into(),
            "refused 172.16.3.4: address 172.16.3.4 is private".into(),
        ),
        (
            "http://192.168.1.20/a.png".into(),
            "refused 192.168.1.20: address 192.168.1.20 is private".into(),
        ),
        (
            "http://169.254.169.254/latest/meta-data".into(),
            "refused 169.254.169.254: address 169.254.169.254 is a cloud metadata address".into(),
        ),
        (
            "http://[fd12:3456::1]/a.png".into(),
            "address fd12:3456::1 is private".into(),
        ),
        (
            "http://[::ffff:127.0.0.1]:9/a.png".into(),
            "address ::ffff:127.0.0.1 is loopback".into(),
        ),
        // Decimal, octal and hex spellings of 127.0.0.1.
        (
            "http://2130706433:9/a.png".into(),
            "refused 127.0.0.1: address 127.0.0.1 is loopback".into(),
        ),
        (
            "http://0177.0.0.1:9/a.png".into(),
            "refused 127.0.0.1: address 127.0.0.1 is loopback".into(),
        ),
        (
            "http://0x7f.0.0.1:9/a.png".into(),
            "refused 127.0.0.1: address 127.0.0.1 is loopback".into(),
        ),
        // A name that resolves to loopback.
        (
            "http://localhost:9/a.png".into(),
            "refused localhost: address".into(),
        ),
        // An allowed host redirecting to a private address.
        (
            format!("http://{host}/to-private"),
            "refused 192.168.7.7: address 192.168.7.7 is private".into(),
        ),
    ];
    // At most 10 attachments per message: two messages.
    for chunk in cases.chunks(7) {
        let attachments: Vec<Attachment> = chunk
            .iter()
            .map(|(url, _)| attachment("image", url.clone()))
            .collect();
        let message_id = send_to_end(&t, dep, &attachments).await;
        let text = openai_user_text(t.fake.requests().last().unwrap());
        for (n, (url, reason)) in chunk.iter().enumerate() {
            let head = format!("[image attachment {} ({url}) could not be fetched: ", n + 1);
            let line = text
                .lines()
                .find(|l| l.starts_with(&head))
                .unwrap_or_else(|| panic!("no note for {url} in {text}"));
            assert!(line.contains(reason.as_str()), "{url}: {line}");
        }
        if chunk.iter().any(|(u, _)| u.contains("localhost")) {
            let line = text.lines().find(|l| l.contains("localhost")).unwrap();
            assert!(line.ends_with("is loopback]"), "{line}");
        }
        let dir = workspace(&t, dep).join(format!(".paddock/attachments/{message_id}"));
        assert!(!dir.exists(), "nothing saved for refused attachments");
    }
}

#[tokio::test]
async fn oversize_and_slow_downloads_are_cut_at_their_limits() {
    let (host, slow_hits) = media_host().await;
    let t = TestServer::start_with(|s| {
        allow_media_host(s);
        s.attachment_max_bytes = 4096;
        s.attachment_timeout = std::time::Duration::from_millis(500);
    })
    .await;
    let d = t.ready_deployment(json!({})).await;
    let dep = d.deployment_id.as_str();
    let message_id = send_to_end(
        &t,
        dep,
        &[
            attachment("image", format!("http://{host}/endless")),
            attachment("image", format!("http://{host}/slow")),
            attachment("image", format!("http://{host}/cat.png")),
        ],
    )
    .await;
    let text = openai_user_text(t.fake.requests().last().unwrap());
    assert!(
        text.contains(&format!(
            "[image attachment 1 (http://{host}/endless) could not be fetched: the response is larger than 4096 bytes]"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "[image attachment 2 (http://{host}/slow) could not be fetched: no complete response within 500ms]"
        )),
        "{text}"
    );
    assert_eq!(slow_hits.load(Ordering::SeqCst), 1, "fetched once");
    // The one within its limits is saved (the model here takes no images: a note).
    assert!(
        text.contains(&format!(
            "[image attachment 3 (http://{host}/cat.png) saved in the workspace at .paddock/attachments/{message_id}/3-cat.png"
        )),
        "{text}"
    );
    assert!(text.contains("not shown: this model cannot take image input"));
}
