//! Attachments of user messages (spec §4.3): fetched on the host, saved in the workspace, and
//! shown to the model natively when it takes the media type, else described by a note.
//!
//! Where and when: a run fetches the attachments of its queued messages just before the step
//! that first shows them to the model ([`fetch_pending`], called before every `begin_step`),
//! on the host through the guarded client of `paddock-net` (spec §1.13), never in the sandbox.
//! Each outcome is recorded on the message before the next fetch begins, and the store moves a
//! message into the conversation only once all its attachments have one; so a run resumed after
//! a crash fetches only what has no outcome yet, and an attachment whose fetch was interrupted
//! twice (a fetch that keeps killing the process) is given up as failed instead of forever.
//!
//! The stored user item keeps the outcomes, not the bytes; each step's request is built from the
//! saved files ([`to_items`]), so the conversation stays small and a thread switched to another
//! model gets what that model takes.

use std::io::Read;
use std::time::Duration;

use base64::Engine;
use paddock_model::{Item, Media, MediaKind};
use paddock_net::{FetchLimits, GuardedClient};
use paddock_store::{AttachmentOutcome, Lease, PendingAttachments, RunRecord};
use serde::Deserialize;
use serde_json::Value;

use crate::runner::{Signals, Stop};
use crate::runtime::Runtime;
use crate::workspace::Workspace;

/// Limits of one attachment fetch, from `[attachments]` in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachmentSettings {
    /// Largest attachment body, in bytes (spec §4.3: 50 MiB).
    pub max_bytes: u64,
    /// The whole fetch of one attachment, redirects and body included (spec §4.3: 60 s).
    pub timeout: Duration,
}

impl Default for AttachmentSettings {
    fn default() -> Self {
        Self {
            max_bytes: 50 * 1024 * 1024,
            timeout: Duration::from_secs(60),
        }
    }
}

/// How many times a fetch may be begun without reaching an outcome (the process stopped during
/// it) before the attachment is given up.
const MAX_ATTEMPTS: u32 = 2;

/// Connect timeout of one attempt (bounded by the fetch's total timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The directory of a message's attachments in the workspace.
pub fn directory(message_id: &str) -> String {
    format!(".paddock/attachments/{}", file_safe(message_id, 64))
}

/// Fetches every attachment of the run's queued messages that has no outcome yet, recording each
/// outcome as it is known. A failed fetch is an outcome (the model is told), never an error of
/// the run; only the store or a stop signal ends this early.
pub(crate) async fn fetch_pending(
    rt: &Runtime,
    lease: &Lease,
    run: &RunRecord,
    signals: &Signals,
) -> Result<(), Stop> {
    let pending = rt.store.pending_attachments(lease).await?;
    if pending.is_empty() {
        return Ok(());
    }
    let settings = rt.settings.attachments;
    let client = GuardedClient::new(
        rt.settings.outbound.clone(),
        CONNECT_TIMEOUT.min(settings.timeout),
    );
    let workspace = rt.workspace(&run.deployment_id);
    for message in pending {
        fetch_message(
            rt,
            lease,
            &workspace,
            client.as_ref(),
            settings,
            message,
            signals,
        )
        .await?;
    }
    Ok(())
}

async fn fetch_message(
    rt: &Runtime,
    lease: &Lease,
    workspace: &Workspace,
    client: Result<&GuardedClient, &paddock_net::FetchError>,
    settings: AttachmentSettings,
    message: PendingAttachments,
    signals: &Signals,
) -> Result<(), Stop> {
    let PendingAttachments {
        message_id,
        attachments,
        mut outcomes,
    } = message;
    outcomes.truncate(attachments.len());
    for (index, attachment) in attachments.iter().enumerate() {
        let attempts = match outcomes.get(index) {
            Some(o) if o.is_final() => continue,
            Some(AttachmentOutcome::Fetching { attempts }) => *attempts,
            _ => 0,
        };
        let outcome = if attempts >= MAX_ATTEMPTS {
            AttachmentOutcome::Failed {
                reason: format!(
                    "the fetch was interrupted {attempts} times (the server stopped during it)"
                ),
            }
        } else {
            let before = outcomes.clone();
            set(
                &mut outcomes,
                index,
                AttachmentOutcome::Fetching {
                    attempts: attempts + 1,
                },
            );
            rt.store
                .set_attachment_outcomes(lease, &message_id, &outcomes)
                .await?;
            let fetch = async {
                match client {
                    Ok(client) => {
                        let limits = FetchLimits {
                            max_bytes: settings.max_bytes,
                            total_timeout: settings.timeout,
                        };
                        fetch_one(
                            client,
                            workspace,
                            &message_id,
                            index,
                            &attachment.url,
                            limits,
                        )
                        .await
                    }
                    Err(e) => AttachmentOutcome::Failed {
                        reason: e.to_string(),
                    },
                }
            };
            tokio::select! {
                outcome = fetch => outcome,
                () = signals.stopped() => {
                    // Stopped by a cancel or a shutdown, not by the fetch: that attempt does not
                    // count (best effort; the run may already be over).
                    let _ = rt.store.set_attachment_outcomes(lease, &message_id, &before).await;
                    return Err(Stop::Quiet);
                }
            }
        };
        if let AttachmentOutcome::Failed { reason } = &outcome {
            tracing::info!(
                run_id = %lease.run_id, message_id, index, reason, "attachment not fetched"
            );
        }
        set(&mut outcomes, index, outcome);
        rt.store
            .set_attachment_outcomes(lease, &message_id, &outcomes)
            .await?;
    }
    Ok(())
}

fn set(outcomes: &mut Vec<AttachmentOutcome>, index: usize, outcome: AttachmentOutcome) {
    while outcomes.len() <= index {
        outcomes.push(AttachmentOutcome::Fetching { attempts: 0 });
    }
    outcomes[index] = outcome;
}

/// Fetches one attachment and saves it; any failure is the outcome.
async fn fetch_one(
    client: &GuardedClient,
    workspace: &Workspace,
    message_id: &str,
    index: usize,
    url: &str,
    limits: FetchLimits,
) -> AttachmentOutcome {
    let fetched = match client.get(url, limits).await {
        Ok(f) => f,
        Err(e) => {
            return AttachmentOutcome::Failed {
                reason: e.to_string(),
            };
        }
    };
    let sniffed = sniff(&fetched.body);
    let path = format!(
        "{}/{}",
        directory(message_id),
        file_name(index, url, sniffed.map(|(_, t)| t))
    );
    let bytes = fetched.body.len() as u64;
    let written = {
        let workspace = workspace.clone();
        let path = path.clone();
        let body = fetched.body;
        tokio::task::spawn_blocking(move || workspace.write(&path, &body)).await
    };
    match written {
        Ok(Ok(_)) => AttachmentOutcome::Saved {
            path,
            media_type: sniffed.map(|(_, t)| t.to_owned()),
            bytes,
        },
        Ok(Err(e)) => AttachmentOutcome::Failed {
            reason: format!("it could not be saved in the workspace: {e}"),
        },
        Err(e) => AttachmentOutcome::Failed {
            reason: format!("it could not be saved in the workspace: {e}"),
        },
    }
}

/// `<n>-<name>`: the position in the message (from 1) and the URL's last path segment made
/// safe, with the sniffed type's extension when it has none.
fn file_name(index: usize, url: &str, media_type: Option<&str>) -> String {
    let segment = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.path_segments()
                .and_then(|mut s| s.next_back().map(str::to_owned))
        })
        .unwrap_or_default();
    let mut name = file_safe(&segment, 80);
    let name_trimmed = name.trim_start_matches('.').to_owned();
    name = if name_trimmed.is_empty() {
        "attachment".to_owned()
    } else {
        name_trimmed
    };
    if !name.contains('.')
        && let Some(ext) = media_type.and_then(extension)
    {
        name.push('.');
        name.push_str(ext);
    }
    format!("{}-{name}", index + 1)
}

/// `s` with every character outside `[A-Za-z0-9._-]` replaced by `_`, at most `max` characters.
fn file_safe(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// What the first bytes of a file say it is: a small table of magic numbers of the common
/// image, audio and video formats. The server's `Content-Type` is not trusted.
pub fn sniff(bytes: &[u8]) -> Option<(MediaKind, &'static str)> {
    use MediaKind::{Audio, Image, Video};
    let at = |offset: usize, magic: &[u8]| bytes.get(offset..offset + magic.len()) == Some(magic);
    if at(0, b"\x89PNG\r\n\x1a\n") {
        return Some((Image, "image/png"));
    }
    if at(0, b"\xff\xd8\xff") {
        return Some((Image, "image/jpeg"));
    }
    if at(0, b"GIF87a") || at(0, b"GIF89a") {
        return Some((Image, "image/gif"));
    }
    if at(0, b"RIFF") {
        if at(8, b"WEBP") {
            return Some((Image, "image/webp"));
        }
        if at(8, b"WAVE") {
            return Some((Audio, "audio/wav"));
        }
        if at(8, b"AVI ") {
            return Some((Video, "video/x-msvideo"));
        }
        return None;
    }
    if at(0, b"BM") && bytes.len() >= 26 && at(6, b"\0\0\0\0") {
        return Some((Image, "image/bmp"));
    }
    if at(4, b"ftyp") {
        let brand = bytes.get(8..12)?;
        return Some(match brand {
            b"heic" | b"heix" | b"mif1" | b"msf1" => (Image, "image/heic"),
            b"avif" | b"avis" => (Image, "image/avif"),
            b"M4A " | b"M4B " => (Audio, "audio/mp4"),
            b"qt  " => (Video, "video/quicktime"),
            b"3gp4" | b"3gp5" | b"3gp6" => (Video, "video/3gpp"),
            _ => (Video, "video/mp4"),
        });
    }
    if at(0, b"\x1a\x45\xdf\xa3") {
        return Some((Video, "video/webm"));
    }
    if at(0, b"ID3") {
        return Some((Audio, "audio/mpeg"));
    }
    if at(0, b"OggS") {
        return Some((Audio, "audio/ogg"));
    }
    if at(0, b"fLaC") {
        return Some((Audio, "audio/flac"));
    }
    // MPEG audio frame sync: 11 set bits. Layer bits 00 are ADTS (AAC), the rest MP3.
    if let [0xff, second, ..] = bytes
        && second & 0xe0 == 0xe0
    {
        return Some(if second & 0x06 == 0 {
            (Audio, "audio/aac")
        } else {
            (Audio, "audio/mpeg")
        });
    }
    None
}

/// The usual file extension of a media type [`sniff`] returns.
fn extension(media_type: &str) -> Option<&'static str> {
    Some(match media_type {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "image/bmp" => "bmp",
        "image/heic" => "heic",
        "image/avif" => "avif",
        "audio/wav" => "wav",
        "audio/mpeg" => "mp3",
        "audio/aac" => "aac",
        "audio/ogg" => "ogg",
        "audio/flac" => "flac",
        "audio/mp4" => "m4a",
        "video/mp4" => "mp4",
        "video/quicktime" => "mov",
        "video/3gpp" => "3gp",
        "video/webm" => "webm",
        "video/x-msvideo" => "avi",
        _ => return None,
    })
}

/// One entry of a stored user item's `attachments` (written by the store's `begin_step`).
#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(rename = "type")]
    kind: String,
    url: String,
    #[serde(flatten)]
    outcome: AttachmentOutcome,
}

/// Turns the stored conversation into the model's items: a user item with `attachments` gets
/// each saved attachment the model takes as a media part (read from the workspace), and a note
/// for every other one (saved path, or why it failed).
pub(crate) fn to_items(
    rt: &Runtime,
    run: &RunRecord,
    stored: Vec<Value>,
) -> Result<Vec<Item>, Stop> {
    let info = rt.models.model_info(&run.config.model);
    let workspace = rt.workspace(&run.deployment_id);
    stored
        .into_iter()
        .map(|mut value| {
            let entries = value
                .as_object_mut()
                .and_then(|o| o.remove("attachments"))
                .map(serde_json::from_value::<Vec<Entry>>)
                .transpose()
                .map_err(|e| Stop::Fail("server_error", format!("stored attachments: {e}")))?;
            let mut item: Item = serde_json::from_value(value)
                .map_err(|e| Stop::Fail("server_error", format!("stored conversation: {e}")))?;
            if let (Some(entries), Item::User { content, media }) = (entries, &mut item) {
                let mut notes = Vec::new();
                for (i, entry) in entries.iter().enumerate() {
                    let (part, note) = present(&workspace, i + 1, entry, |k| info.accepts(k));
                    media.extend(part);
                    notes.push(note);
                }
                if !notes.is_empty() {
                    content.push_str("\n\n");
                    content.push_str(&notes.join("\n"));
                }
            }
            Ok(item)
        })
        .collect()
}

/// The media part (if the model is sent the file) and the note of attachment `n`.
fn present(
    workspace: &Workspace,
    n: usize,
    entry: &Entry,
    accepts: impl Fn(MediaKind) -> bool,
) -> (Option<Media>, String) {
    let declared = match entry.kind.as_str() {
        "image" => MediaKind::Image,
        "audio" => MediaKind::Audio,
        _ => MediaKind::Video,
    };
    let head = format!("[{} attachment {n} ({})", entry.kind, entry.url);
    match &entry.outcome {
        AttachmentOutcome::Failed { reason } => {
            (None, format!("{head} could not be fetched: {reason}]"))
        }
        AttachmentOutcome::Fetching { .. } => (None, format!("{head} was not fetched]")),
        AttachmentOutcome::Saved {
            path,
            media_type,
            bytes,
        } => {
            let saved = format!(
                "{head} saved in the workspace at {path} ({}, {bytes} bytes)",
                media_type.as_deref().unwrap_or("unrecognised format")
            );
            let why_not = match media_type.as_deref().and_then(sniff_kind) {
                None => Some(format!(
                    "its content is not a recognised {} format",
                    entry.kind
                )),
                Some(actual) if actual != declared => {
                    Some(format!("its content is {actual}, not {}", entry.kind))
                }
                Some(kind) if !accepts(kind) => {
                    Some(format!("this model cannot take {kind} input"))
                }
                Some(_) => None,
            };
            if let Some(why) = why_not {
                return (
                    None,
                    format!("{saved}; not shown: {why}; work on the file with the tools]"),
                );
            }
            let media_type = media_type.clone().unwrap_or_default();
            match read(workspace, path) {
                Ok(data) => {
                    let name = path.rsplit('/').next().unwrap_or(path).to_owned();
                    let media = Media::base64(
                        declared,
                        media_type,
                        base64::engine::general_purpose::STANDARD.encode(data),
                    )
                    .with_name(name);
                    (Some(media), format!("{saved}; it is attached above]"))
                }
                Err(e) => (None, format!("{saved}; not shown: it cannot be read: {e}]")),
            }
        }
    }
}

/// The kind of a media type [`sniff`] returned.
fn sniff_kind(media_type: &str) -> Option<MediaKind> {
    match media_type.split('/').next()? {
        "image" => Some(MediaKind::Image),
        "audio" => Some(MediaKind::Audio),
        "video" => Some(MediaKind::Video),
        _ => None,
    }
}

fn read(workspace: &Workspace, path: &str) -> Result<Vec<u8>, String> {
    let (_, mut file, _) = workspace.read(path).map_err(|e| e.to_string())?;
    let mut data = Vec::new();
    file.read_to_end(&mut data).map_err(|e| e.to_string())?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_reads_magic_numbers_not_names() {
        let cases: [(&[u8], Option<&str>); 14] = [
            (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", Some("image/png")),
            (b"\xff\xd8\xff\xe0\0\x10JFIF", Some("image/jpeg")),
            (b"GIF89a\x01\0", Some("image/gif")),
            (b"RIFF\x24\0\0\0WEBPVP8 ", Some("image/webp")),
            (b"RIFF\x24\0\0\0WAVEfmt ", Some("audio/wav")),
            (b"ID3\x04\0\0\0\0\0\0", Some("audio/mpeg")),
            (b"\xff\xfb\x90\x64", Some("audio/mpeg")),
            (b"\xff\xf1\x50\x80", Some("audio/aac")),
            (b"OggS\0\x02", Some("audio/ogg")),
            (b"\0\0\0\x20ftypisom\0\0\x02\0", Some("video/mp4")),
            (b"\0\0\0\x20ftypM4A \0\0\0\0", Some("audio/mp4")),
            (b"\x1a\x45\xdf\xa3\x9f\x42", Some("video/webm")),
            (b"<html><body>", None),
            (b"", None),
        ];
        for (bytes, want) in cases {
            assert_eq!(sniff(bytes).map(|(_, t)| t), want, "{bytes:?}");
        }
        assert_eq!(
            sniff(b"\0\0\0\x18ftypmp42").map(|(k, _)| k),
            Some(MediaKind::Video)
        );
    }

    #[test]
    fn file_names_are_numbered_safe_and_get_an_extension() {
        assert_eq!(
            file_name(
                0,
                "https://cdn.example.com/a/cat.png?x=1",
                Some("image/png")
            ),
            "1-cat.png"
        );
        assert_eq!(
            file_name(2, "https://cdn.example.com/media/clip", Some("video/mp4")),
            "3-clip.mp4"
        );
        assert_eq!(
            file_name(1, "https://cdn.example.com/", Some("audio/wav")),
            "2-attachment.wav"
        );
        assert_eq!(
            file_name(0, "https://x.example/..%2F..%2Fetc", None),
            "1-_2F.._2Fetc"
        );
        assert_eq!(file_name(0, "https://x.example/.hidden", None), "1-hidden");
    }
}
