//! Message and thread bodies (spec §4.1, §8.2).

use paddock_protocol::Attachment;
use paddock_store::ThreadTarget;
use serde_json::Value;

use super::{
    NewMessage, as_array, as_object, as_str, body_object, check_len, given, http_url, required,
};
use crate::error::ApiError;
use crate::settings::ServerSettings;

const MAX_ATTACHMENTS: usize = 10;
const ATTACHMENT_TYPES: [&str; 3] = ["image", "video", "audio"];
const MAX_TITLE: usize = 200;

/// Validates a message body (spec §4.1): `content` of 1 to `settings.limits.content_chars`
/// characters; `thread_id` absent/`null` (default thread), `"new"`, or a thread id; at most 10
/// `attachments`, each `{"type": "image"|"video"|"audio", "url": <http(s) URL ≤ 2,048 chars>}`.
pub(crate) fn message(body: &Value, settings: &ServerSettings) -> Result<NewMessage, ApiError> {
    let obj = body_object(body)?;
    let max = settings.limits.content_chars;

    let content = as_str(
        required(
            obj,
            "content",
            "content",
            &format!("a string of 1 to {max} characters"),
        )?,
        "content",
    )?;
    check_len(content, "content", 1, max)?;

    let thread = match given(obj, "thread_id") {
        None => ThreadTarget::Default,
        Some(v) => match as_str(v, "thread_id")? {
            "new" => ThreadTarget::New,
            id => ThreadTarget::Id(id.to_owned()),
        },
    };

    let mut attachments = Vec::new();
    if let Some(v) = given(obj, "attachments") {
        let arr = as_array(v, "attachments")?;
        if arr.len() > MAX_ATTACHMENTS {
            return Err(ApiError::validation(
                "attachments",
                format!(
                    "A message may have at most {MAX_ATTACHMENTS} attachments, got {}.",
                    arr.len()
                ),
            ));
        }
        for (i, entry) in arr.iter().enumerate() {
            let p = format!("attachments[{i}]");
            let a = as_object(entry, &p)?;

            let type_p = format!("{p}.type");
            let kind = as_str(
                required(a, "type", &type_p, "one of image, video, audio")?,
                &type_p,
            )?;
            if !ATTACHMENT_TYPES.contains(&kind) {
                return Err(ApiError::validation(
                    type_p.clone(),
                    format!(
                        "`{type_p}` must be one of image, video, audio; got `{}`.",
                        kind.chars().take(64).collect::<String>()
                    ),
                ));
            }

            let url_p = format!("{p}.url");
            let url = as_str(required(a, "url", &url_p, "an http or https URL")?, &url_p)?;
            http_url(url, &url_p)?;

            attachments.push(Attachment {
                kind: kind.to_owned(),
                url: url.to_owned(),
            });
        }
    }

    Ok(NewMessage {
        content: content.to_owned(),
        thread,
        attachments,
    })
}

/// The `title` of a thread create or patch body (spec §8.2): a string of 0 to 200 characters,
/// or `null`.
///
/// Returns `None` when `title` is absent (create: no title; patch: no change), `Some(None)`
/// for `null` (no title / clear it) and `Some(Some(title))` otherwise.
pub(crate) fn thread_title(body: &Value) -> Result<Option<Option<String>>, ApiError> {
    let obj = body_object(body)?;
    match obj.get("title") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(t)) => {
            check_len(t, "title", 0, MAX_TITLE)?;
            Ok(Some(Some(t.clone())))
        }
        Some(other) => Err(ApiError::validation(
            "title",
            format!(
                "`title` must be a string of at most {MAX_TITLE} characters, or null; got {}.",
                super::kind(other)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::test_util::assert_invalid;
    use super::*;

    fn settings() -> ServerSettings {
        let mut s = ServerSettings::new(std::env::temp_dir().join("paddock-validate-test"));
        s.limits.content_chars = 20;
        s
    }

    #[test]
    fn minimal_message_goes_to_the_default_thread() {
        let m = message(&json!({"content": "hi"}), &settings()).unwrap();
        assert_eq!(
            m,
            NewMessage {
                content: "hi".into(),
                thread: ThreadTarget::Default,
                attachments: vec![]
            }
        );
        let m = message(
            &json!({"content": "hi", "thread_id": null, "attachments": null, "extra": 1}),
            &settings(),
        )
        .unwrap();
        assert_eq!(m.thread, ThreadTarget::Default);
        assert!(m.attachments.is_empty());
    }

    #[test]
    fn content_rules() {
        let s = settings();
        assert_invalid(message(&json!({}), &s), "content");
        assert_invalid(message(&json!({"content": null}), &s), "content");
        assert_invalid(message(&json!({"content": 5}), &s), "content");
        assert_invalid(message(&json!({"content": ""}), &s), "content");
        let m = assert_invalid(message(&json!({"content": "x".repeat(21)}), &s), "content");
        assert!(m.contains("20"), "{m}");
        // The limit counts characters, not bytes.
        assert!(message(&json!({"content": "é".repeat(20)}), &s).is_ok());
        assert!(message(&json!({"content": " "}), &s).is_ok());
    }

    #[test]
    fn thread_targets() {
        let s = settings();
        let t = |v: Value| message(&json!({"content": "x", "thread_id": v}), &s).map(|m| m.thread);
        assert_eq!(t(json!("new")).unwrap(), ThreadTarget::New);
        assert_eq!(
            t(json!("thr_abc")).unwrap(),
            ThreadTarget::Id("thr_abc".into())
        );
        // Not id-shaped: passed through, the caller answers 404.
        assert_eq!(
            t(json!("../etc")).unwrap(),
            ThreadTarget::Id("../etc".into())
        );
        assert_eq!(t(json!("")).unwrap(), ThreadTarget::Id(String::new()));
        assert_invalid(t(json!(7)), "thread_id");
        assert_invalid(t(json!({"id": "x"})), "thread_id");
    }

    #[test]
    fn attachments() {
        let s = settings();
        let a = |v: Value| message(&json!({"content": "x", "attachments": v}), &s);
        let ok = a(json!([
            {"type": "image", "url": "https://cdn.example.com/a.png"},
            {"type": "video", "url": "http://cdn.example.com/b.mp4", "extra": true},
            {"type": "audio", "url": "https://cdn.example.com/c.mp3"},
        ]))
        .unwrap();
        assert_eq!(ok.attachments.len(), 3);
        assert_eq!(ok.attachments[1].kind, "video");
        assert_eq!(ok.attachments[1].url, "http://cdn.example.com/b.mp4");

        let one = json!({"type": "image", "url": "https://x.example/a.png"});
        assert!(a(Value::Array(vec![one.clone(); 10])).is_ok());
        assert_invalid(a(Value::Array(vec![one.clone(); 11])), "attachments");
        assert_invalid(a(json!({"type": "image"})), "attachments");
        assert_invalid(a(json!(["https://x.example/a.png"])), "attachments[0]");
        assert_invalid(
            a(json!([one, {"url": "https://x.example"}])),
            "attachments[1].type",
        );
        assert_invalid(
            a(json!([{"type": null, "url": "https://x.example"}])),
            "attachments[0].type",
        );
        assert_invalid(
            a(json!([{"type": "pdf", "url": "https://x.example"}])),
            "attachments[0].type",
        );
        assert_invalid(
            a(json!([{"type": "IMAGE", "url": "https://x.example"}])),
            "attachments[0].type",
        );
        assert_invalid(
            a(json!([{"type": 1, "url": "https://x.example"}])),
            "attachments[0].type",
        );
        assert_invalid(a(json!([{"type": "image"}])), "attachments[0].url");
        assert_invalid(
            a(json!([{"type": "image", "url": 3}])),
            "attachments[0].url",
        );
        assert_invalid(
            a(json!([{"type": "image", "url": "ftp://x.example/a"}])),
            "attachments[0].url",
        );
        assert_invalid(
            a(json!([{"type": "image", "url": "not a url"}])),
            "attachments[0].url",
        );
        assert_invalid(
            a(json!([{"type": "image", "url": "https://"}])),
            "attachments[0].url",
        );
        let long = format!("https://x.example/{}", "a".repeat(2040));
        assert_invalid(
            a(json!([{"type": "image", "url": long}])),
            "attachments[0].url",
        );
        // The first problem wins: type is checked before url.
        assert_invalid(
            a(json!([{"type": "doc", "url": "ftp://x"}])),
            "attachments[0].type",
        );
    }

    #[test]
    fn titles() {
        assert_eq!(thread_title(&json!({})).unwrap(), None);
        assert_eq!(thread_title(&json!({"title": null})).unwrap(), Some(None));
        assert_eq!(
            thread_title(&json!({"title": ""})).unwrap(),
            Some(Some(String::new()))
        );
        assert_eq!(
            thread_title(&json!({"title": "Holiday campaign"})).unwrap(),
            Some(Some("Holiday campaign".into()))
        );
        assert!(thread_title(&json!({"title": "é".repeat(200)})).is_ok());
        assert_invalid(thread_title(&json!({"title": "x".repeat(201)})), "title");
        assert_invalid(thread_title(&json!({"title": 1})), "title");
        assert_invalid(thread_title(&json!({"title": ["a"]})), "title");
    }
}
