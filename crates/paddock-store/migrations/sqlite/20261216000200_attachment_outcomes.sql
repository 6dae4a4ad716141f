-- Attachments (spec §4.3): what fetching each attachment of a user message came to, in the
-- order of `attachments` (a JSON array of `AttachmentOutcome`). The run fetches them on the
-- host before the step that first shows the message to the model; recording each outcome
-- before moving on means a run resumed after a crash never fetches an attachment again once
-- its outcome is known, and gives up on one whose fetch was interrupted twice.
ALTER TABLE messages ADD COLUMN attachment_outcomes TEXT NOT NULL DEFAULT '[]';
