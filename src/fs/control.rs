//! A draft's control file, `.commit`: writing `commit` or a JSON object to it commits the
//! draft; reading it shows the draft's status. What a request came to (the version made, or
//! why it was refused) is read back through the descriptor that wrote it, and a refusal is
//! shown at the top of the status until the next request.

use serde_json::Value;

use super::*;
use crate::commit::{CommitOptions, parse_metadata};
use crate::names::{AliasName, TypeName};
use crate::query;
use crate::store::commit_draft;

/// An open control file: what was written so far, or the status text to read.
pub(super) struct ControlHandle {
    draft: DraftName,
    written: Vec<u8>,
    status: Vec<u8>,
    /// The run of the process that opened it, whose output a commit through it is.
    run: Option<std::sync::Arc<str>>,
    /// What the last request written through this handle came to, still to be read:
    /// `NAME:vN`, `NAME:vN (unchanged)` or `error: …`, each on a line. A read returns it
    /// wherever the file offset is, since writing the request moved it.
    answer: Vec<u8>,
}

impl Fs {
    /// Opens a draft's control file: for writing a commit request, or for reading the
    /// draft's status (computed now).
    pub(super) fn open_control(
        &self,
        artifact: &str,
        dist_id: &str,
        write: bool,
        run: Option<std::sync::Arc<str>>,
    ) -> Result<u64> {
        let draft = super::writes::draft_name(artifact, dist_id)?;
        let status = if write {
            Vec::new()
        } else {
            let mut catalog = self.pool.get()?;
            let mut text = String::new();
            if let Some(why) = lock(&self.refusals).get(&draft.to_string()) {
                text = format!("the last commit request was refused: {why}\n");
            }
            text.push_str(&query::draft_status(&mut catalog, &self.staging, &draft)?.text());
            text.push('\n');
            text.into_bytes()
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.controls).insert(
            fh,
            ControlHandle {
                draft,
                run,
                written: Vec::new(),
                status,
                answer: Vec::new(),
            },
        );
        Ok(fh)
    }

    /// What a read of an open control file returns, if `fh` is one: the answer to the last
    /// request written through it, or else the status text.
    pub(super) fn read_control(&self, fh: u64, offset: u64, size: u32) -> Option<Vec<u8>> {
        let mut controls = lock(&self.controls);
        let h = controls.get_mut(&fh)?;
        if !h.answer.is_empty() {
            let n = h.answer.len().min(size as usize);
            return Some(h.answer.drain(..n).collect());
        }
        let start = (offset as usize).min(h.status.len());
        let end = start.saturating_add(size as usize).min(h.status.len());
        Some(h.status[start..end].to_vec())
    }

    /// A write to a control file. Once what was written is a whole request, the draft is
    /// committed before the write returns; a request still being written is kept. What the
    /// request came to is kept for reading back.
    pub(super) fn write_control(&self, ino: Ino, fh: u64, data: &[u8]) -> Result<u32> {
        let result = self.commit_request(ino, fh, data);
        let answer = match &result {
            Ok(Some(answer)) => answer.clone(),
            Ok(None) => return result.map(|_| data.len() as u32),
            Err(e) => {
                self.refused(fh, e);
                format!("error: {e}\n")
            }
        };
        if let Some(h) = lock(&self.controls).get_mut(&fh) {
            h.answer = answer.into_bytes();
        }
        result.map(|_| data.len() as u32)
    }

    /// Remembers why the request written through `fh` was refused, for the draft's status.
    fn refused(&self, fh: u64, e: &Error) {
        let draft = lock(&self.controls).get(&fh).map(|h| h.draft.to_string());
        if let Some(draft) = draft {
            lock(&self.refusals).insert(draft, e.to_string());
        }
    }

    /// Takes what `data` adds to the request written through `fh`; once it is whole, commits
    /// the draft and returns the answer to read back.
    fn commit_request(&self, ino: Ino, fh: u64, data: &[u8]) -> Result<Option<String>> {
        let (draft, request) = {
            let mut controls = lock(&self.controls);
            let Some(h) = controls.get_mut(&fh) else {
                return Err(self.refuse_change(ino, None));
            };
            if h.written.len() + data.len() > MAX_REQUEST {
                h.written.clear();
                return Err(Error::TooLarge {
                    what: format!("the commit request in {}", self.describe(ino, None)),
                    limit: MAX_REQUEST,
                });
            }
            h.written.extend_from_slice(data);
            let parsed = parse_request(&h.written, &self.describe(ino, None));
            if !matches!(parsed, Ok(None)) {
                // A refused request is forgotten: close(2) must not report it again.
                h.written.clear();
            }
            let Some(mut request) = parsed? else {
                return Ok(None);
            };
            request.run = h.run.as_ref().map(|r| crate::commit::RunOutput {
                run: r.to_string(),
                via: ".commit",
            });
            (h.draft.clone(), request)
        };
        let mut catalog = self.pool.get()?;
        let outcome = commit_draft(
            &mut catalog,
            &self.blobs,
            &self.staging,
            &self.store_root,
            &draft,
            &request,
            &|draft, id| self.digests.take((draft, id)),
        )?;
        lock(&self.stale).push((DRAFTS, draft.to_string().into_bytes()));
        lock(&self.refusals).remove(&draft.to_string());
        self.drafts_changed
            .store(crate::catalog::now_ns(), Ordering::Relaxed);
        let answer = format!(
            "{}{}",
            outcome.version().reference(),
            if outcome.is_unchanged() {
                " (unchanged)"
            } else {
                ""
            }
        );
        log::info!("committed draft {draft} as {answer}");
        Ok(Some(answer + "\n"))
    }

    /// close(2): of a file written through a shared store's mount, it publishes the file;
    /// of a control file, an incomplete request is an error then.
    pub fn flush(&self, ino: Ino, fh: u64) -> Result<()> {
        self.publish_written(ino, fh)?;
        let incomplete = lock(&self.controls)
            .get(&fh)
            .is_some_and(|h| !h.written.iter().all(u8::is_ascii_whitespace));
        if !incomplete {
            return Ok(());
        }
        let e = Error::invalid(
            self.describe(ino, None),
            "an incomplete commit request was written (expected `commit` or a JSON object)",
        );
        self.refused(fh, &e);
        Err(e)
    }

    pub(super) fn release_control(&self, fh: u64) {
        lock(&self.controls).remove(&fh);
    }
}

/// The largest commit request: metadata at its limit, with room for the other fields.
const MAX_REQUEST: usize = crate::commit::MAX_METADATA_BYTES + (64 << 10);

/// A commit request: `commit`, or a JSON object with `type`, `aliases`, `description` and
/// `metadata`. `None` while it may still be incomplete.
fn parse_request(written: &[u8], what: &str) -> Result<Option<CommitOptions>> {
    let bad = |why: String| Error::invalid(what.to_string(), why);
    let text = String::from_utf8_lossy(written);
    let text = text.trim();
    if text == "commit" {
        return Ok(Some(CommitOptions::default()));
    }
    if text.is_empty() || (!text.starts_with('{') && "commit".starts_with(text)) {
        return Ok(None);
    }
    if !text.starts_with('{') {
        return Err(bad(
            "write `commit` or a JSON object such as {\"aliases\": [\"best\"]}".into(),
        ));
    }
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) if e.is_eof() => return Ok(None),
        Err(e) => return Err(bad(format!("not valid JSON: {e}"))),
    };
    let Value::Object(fields) = value else {
        return Err(bad("expected a JSON object".into()));
    };
    let mut opts = CommitOptions::default();
    for (key, v) in fields {
        match (key.as_str(), v) {
            ("type", Value::String(t)) => opts.type_name = Some(TypeName::new(&t)?),
            ("description", Value::String(d)) => opts.description = Some(d),
            ("metadata", m @ Value::Object(_)) => {
                opts.metadata = Some(parse_metadata(&m.to_string())?)
            }
            ("aliases", Value::Array(list)) => {
                for a in list {
                    let Value::String(a) = a else {
                        return Err(bad("aliases must be strings".into()));
                    };
                    opts.aliases.push(AliasName::new(&a)?);
                }
            }
            (k @ ("type" | "description" | "metadata" | "aliases"), _) => {
                return Err(bad(format!("{k} has the wrong JSON type")));
            }
            (k, _) => return Err(bad(format!("unknown field {k:?}"))),
        }
    }
    Ok(Some(opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_incomplete_ones_wait() {
        assert!(parse_request(b"commit\n", "x").unwrap().is_some());
        assert!(parse_request(b"comm", "x").unwrap().is_none());
        assert!(
            parse_request(b"{\"aliases\": [\"be", "x")
                .unwrap()
                .is_none()
        );
        let o = parse_request(
            br#"{"type": "model", "aliases": ["best"], "metadata": {"a": 1}}"#,
            "x",
        )
        .unwrap()
        .unwrap();
        assert_eq!(o.type_name.unwrap().as_str(), "model");
        assert_eq!(o.aliases.len(), 1);
        assert_eq!(o.metadata.as_deref(), Some(r#"{"a":1}"#));
        for bad in [
            &b"nope"[..],
            b"[1]",
            br#"{"aliases": ["v3"]}"#,
            br#"{"colour": 1}"#,
            b"{]",
        ] {
            assert_eq!(
                parse_request(bad, "x").unwrap_err().errno(),
                libc::EINVAL,
                "{bad:?}"
            );
        }
    }
}
