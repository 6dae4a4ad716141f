//! The canonical conversation format shared by every provider.

use serde::{Deserialize, Serialize};

/// One entry of a conversation as Paddock stores it, independent of any vendor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Item {
    /// Text a person (or an automation) sent, with any media attached to it.
    ///
    /// `media` is left out of the JSON when empty, and rows stored before it existed read as
    /// having none. Adapters send the media before the text, in order; media a vendor cannot
    /// take is replaced by a short text note naming it ([`Media::unsupported_note`]).
    User {
        content: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        media: Vec<Media>,
    },
    /// One model response: its text (possibly empty) and the tool calls it asked for.
    Assistant {
        text: String,
        #[serde(default)]
        tool_calls: Vec<ToolCall>,
    },
    /// The result of one tool call, as the model is shown it.
    ToolResult {
        call_id: String,
        name: String,
        content: String,
        is_error: bool,
    },
}

impl Item {
    /// A user item of plain text, without media.
    pub fn user(content: impl Into<String>) -> Item {
        Item::User {
            content: content.into(),
            media: Vec::new(),
        }
    }
}

/// What kind of media a [`Media`] part is; decides which vendors and models can take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Image,
    Audio,
    Video,
}

impl MediaKind {
    /// The lower-case name, as in the JSON (`image`, `audio`, `video`).
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

impl std::fmt::Display for MediaKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a media part's bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MediaSource {
    /// A URL the vendor fetches itself (`https://…`, or for Gemini a Files API / `gs://` URI).
    /// `media_type` is the IANA type (`image/png`) when known.
    Url {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_type: Option<String>,
    },
    /// The bytes themselves, base64-encoded (standard alphabet, padded), and their IANA type.
    Base64 { media_type: String, data: String },
}

/// One image, audio clip or video attached to a user item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    pub kind: MediaKind,
    pub source: MediaSource,
    /// A file name to show where the media itself cannot be sent (e.g. `clip.mp4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Media {
    /// `kind` media at `url`, of unknown media type.
    pub fn url(kind: MediaKind, url: impl Into<String>) -> Media {
        Media {
            kind,
            source: MediaSource::Url {
                url: url.into(),
                media_type: None,
            },
            name: None,
        }
    }

    /// `kind` media given inline: `data` is base64, `media_type` its IANA type.
    pub fn base64(
        kind: MediaKind,
        media_type: impl Into<String>,
        data: impl Into<String>,
    ) -> Media {
        Media {
            kind,
            source: MediaSource::Base64 {
                media_type: media_type.into(),
                data: data.into(),
            },
            name: None,
        }
    }

    /// The same media with a file name.
    pub fn with_name(mut self, name: impl Into<String>) -> Media {
        self.name = Some(name.into());
        self
    }

    /// The same media with its IANA type stated (only changes a URL source).
    pub fn with_media_type(mut self, media_type: impl Into<String>) -> Media {
        if let MediaSource::Url { media_type: t, .. } = &mut self.source {
            *t = Some(media_type.into());
        }
        self
    }

    /// The IANA media type, when known.
    pub fn media_type(&self) -> Option<&str> {
        match &self.source {
            MediaSource::Url { media_type, .. } => media_type.as_deref(),
            MediaSource::Base64 { media_type, .. } => Some(media_type),
        }
    }

    /// How the media is named to a model that is not sent it: its name, else its URL (inline
    /// media without a name has none).
    pub fn label(&self) -> Option<&str> {
        match (&self.name, &self.source) {
            (Some(name), _) if !name.is_empty() => Some(name),
            (_, MediaSource::Url { url, .. }) => Some(url),
            _ => None,
        }
    }

    /// The text sent in place of media a vendor cannot take, e.g.
    /// `[video attachment "clip.mp4" (video/mp4) not shown: this model cannot take video]`;
    /// `why` completes the sentence.
    pub fn unsupported_note(&self, why: &str) -> String {
        let mut note = format!("[{} attachment", self.kind);
        if let Some(label) = self.label() {
            note.push_str(&format!(" \"{label}\""));
        }
        if let Some(media_type) = self.media_type() {
            note.push_str(&format!(" ({media_type})"));
        }
        note.push_str(&format!(" not shown: {why}]"));
        note
    }
}

/// A tool call the model asked for. `arguments` is the parsed JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: serde_json::Value,
}

/// A tool offered to the model: its model-facing name, description and JSON Schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
}

/// Everything a provider needs for one model call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRequest {
    /// The model's name within its provider (the part after `provider/`).
    pub model: String,
    pub system: String,
    pub items: Vec<Item>,
    pub tools: Vec<ToolSpec>,
    /// Upper bound on generated tokens; `None` leaves it to the provider.
    pub max_output_tokens: Option<u32>,
}

/// Token counts of one model call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Every input token the model read, cached or not.
    pub input_tokens: u64,
    /// Generated tokens, including any hidden reasoning the vendor bills as output.
    pub output_tokens: u64,
    /// Of `input_tokens`, those read from the vendor's prompt cache.
    #[serde(default)]
    pub cache_read_tokens: u64,
    /// Of `input_tokens`, those written to the vendor's prompt cache.
    #[serde(default)]
    pub cache_write_tokens: u64,
}

/// What a provider's stream yields, already normalised.
///
/// A stream yields any number of `TextDelta`s and complete `ToolCall`s (fragments are assembled
/// inside the provider), at most one `Usage`, and ends with exactly one `Finished` when the
/// response is complete. A stream that ends without `Finished` was cut off.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelEvent {
    TextDelta(String),
    ToolCall(ToolCall),
    Usage(Usage),
    Finished,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn user_items_stored_before_media_existed_still_read() {
        let item: Item = serde_json::from_value(json!({"type": "user", "content": "hi"})).unwrap();
        assert_eq!(item, Item::user("hi"));
        // And a plain one is still written the same way.
        assert_eq!(
            serde_json::to_value(Item::user("hi")).unwrap(),
            json!({"type": "user", "content": "hi"})
        );
    }

    #[test]
    fn media_round_trips_in_a_stable_json_shape() {
        let item = Item::User {
            content: "look".to_owned(),
            media: vec![
                Media::url(MediaKind::Image, "https://example.com/a.png"),
                Media::base64(MediaKind::Audio, "audio/wav", "UklGRg==").with_name("a.wav"),
                Media::url(MediaKind::Video, "gs://b/c.mp4").with_media_type("video/mp4"),
            ],
        };
        let value = serde_json::to_value(&item).unwrap();
        assert_eq!(
            value,
            json!({"type": "user", "content": "look", "media": [
                {"kind": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                {"kind": "audio", "source": {"type": "base64", "media_type": "audio/wav", "data": "UklGRg=="}, "name": "a.wav"},
                {"kind": "video", "source": {"type": "url", "url": "gs://b/c.mp4", "media_type": "video/mp4"}},
            ]})
        );
        assert_eq!(serde_json::from_value::<Item>(value).unwrap(), item);
    }

    #[test]
    fn unsupported_notes_name_the_media() {
        let named = Media::base64(MediaKind::Video, "video/mp4", "AAAA").with_name("clip.mp4");
        assert_eq!(
            named.unsupported_note("no video here"),
            "[video attachment \"clip.mp4\" (video/mp4) not shown: no video here]"
        );
        let inline = Media::base64(MediaKind::Audio, "audio/ogg", "T2dn");
        assert_eq!(
            inline.unsupported_note("no"),
            "[audio attachment (audio/ogg) not shown: no]"
        );
    }
}
