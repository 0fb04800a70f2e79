//! A stream's place in a room's history: the epoch of the history it
//! belongs to and the last offset seen. Clients send it to recover; the
//! hub, the shared history and the streams all speak it.

/// A stream's place: its epoch and its last offset.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    pub epoch: String,
    pub offset: u64,
}

/// An epoch is what this node makes: 1-32 of `[0-9a-z]`.
pub fn check_position(p: &Position) -> crate::error::Result<()> {
    let e = &p.epoch;
    if e.is_empty()
        || e.len() > 32
        || !e
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    {
        return Err(crate::error::Error::bad_request(
            crate::error_codes::ErrorCode::InvalidRecover,
            "an epoch is 1-32 characters of 0-9 and a-z, as a message or joined answer gave it",
        ));
    }
    Ok(())
}
